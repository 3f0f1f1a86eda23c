"""Seeded synthetic recordings for the tests that replay them through the loopback exchange."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def generate_recording(out: Path, minutes: float, seed: int) -> Path:
    """Write ``minutes`` of ``tools.gen_synthetic`` BTCUSDT (seed ``seed``) to ``out``."""
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--minutes", str(minutes), "--seed", str(seed),
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True, timeout=120)
    return out
