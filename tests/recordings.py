"""Seeded synthetic recordings for the tests that replay them through the loopback exchange."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def generate_recording(out: Path, minutes: float, seed: int) -> Path:
    """Write ``minutes`` of ``tools.gen_synthetic`` BTCUSDT (seed ``seed``) to ``out``.

    ob200 (Bybit pushes it every 100 ms): the live tests replay in real time and were sized for
    10 book messages a second; the generator's default ob50 pushes every 20 ms.
    """
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", "BTCUSDT", "--depth", "200",
                    "--minutes", str(minutes), "--seed", str(seed),
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True, timeout=120)
    return out
