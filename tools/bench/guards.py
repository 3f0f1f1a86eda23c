"""The ``guards`` benchmark: the same backtest of the embedded catalog with and without ``[risk]``.

Each run is a fresh child process (``mmbot.backtest.run.run_backtest`` on ``config/backtest.toml``,
``report.html=false``); the figure is the replay wall time (``BacktestOutcome.wall_s``: the
Nautilus run, without report writing). Runs alternate with/without so machine noise hits
both alike: ``overhead_pct`` is the median over pairs of (with / without − 1) · 100, and
``overhead_pct_best`` compares the best run of each side. The acceptance bound is 10 %.

    python -m tools.bench guards --minutes 60          # also: python -m tools.bench.guards
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys
from pathlib import Path
from mmbot.config.backtest import load_backtest_config
from mmbot.backtest.run import run_backtest
cfg_path, out, end, risk = sys.argv[1:5]
sets = ["report.html=false", f'run.start="{sys.argv[5]}"', f'run.end="{end}"', f"risk.enabled={risk}"]
o = run_backtest(load_backtest_config(Path(cfg_path), sets), out_dir=Path(out))
g = o.report["metrics"]["risk"].get("guards", {})
print(json.dumps({"events": o.events, "wall_s": o.wall_s, "transitions": g.get("n_transitions", 0),
                  "fills": o.report["metrics"]["counts"]["n_fills"]}))
"""


CONFIG = REPO / "config" / "backtest.toml"


def _child(out: Path, start: str, end: str, risk: bool) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(CONFIG), str(out), end, "true" if risk else "false", start],
                         capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"guards bench child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_guards(minutes: float, work: Path, repeats: int = 3) -> dict:
    """Backtest time of the embedded catalog's first ``minutes`` with and without the guards.

    ``repeats`` pairs of runs, the order inside a pair alternating (off/on, on/off, ...) so a
    drift in machine load hits both sides. ``overhead_pct`` is the median over pairs of
    (with / without − 1) · 100; ``overhead_pct_best`` compares the best run of each side."""
    import statistics

    from tools.bench.window import window

    start, end = window(CONFIG, minutes)
    pairs = []
    for i in range(repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {risk: _child(work / f"g-{'on' if risk else 'off'}-{i}", start, end, risk) for risk in order}
        pairs.append((got[False], got[True]))
    if any(on["fills"] != off["fills"] for off, on in pairs):
        raise RuntimeError("guards changed the run (fills differ with and without [risk])")
    off_best = min(off["wall_s"] for off, _ in pairs)
    on_best = min(on["wall_s"] for _, on in pairs)
    return {
        "minutes": minutes, "start": start, "events": pairs[0][1]["events"], "repeats": repeats,
        "wall_s_without_guards": round(off_best, 3), "wall_s_with_guards": round(on_best, 3),
        "overhead_pct": round(statistics.median((on["wall_s"] / off["wall_s"] - 1.0) * 100.0 for off, on in pairs), 2),
        "overhead_pct_best": round((on_best / off_best - 1.0) * 100.0, 2),
        "guard_transitions": pairs[0][1]["transitions"],
    }


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tools.bench.guards")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-guards-") as tmp:
        print(json.dumps(bench_guards(a.minutes, Path(tmp), a.repeats)))
