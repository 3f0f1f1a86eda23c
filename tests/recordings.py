"""Seeded synthetic recordings for the tests that replay them through the loopback exchange."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def generate_recording(out: Path, minutes: float, seed: int) -> Path:
    """Write ``minutes`` of ``tools.gen_synthetic`` BTCUSDT (seed ``seed``) to ``out``.

    ob200 (Bybit pushes it every 100 ms) and ~1 taker order a second: the live tests replay in
    real time and were sized for that rate (the generator's BTCUSDT default is ob50 every 20 ms
    and ~20 orders a second).
    """
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", "BTCUSDT", "--depth", "200",
                    "--orders-per-s", "1", "--minutes", str(minutes), "--seed", str(seed),
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True, timeout=120)
    return out
