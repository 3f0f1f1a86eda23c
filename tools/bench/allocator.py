"""The ``allocator`` benchmark: the portfolio backtest (config/portfolio.toml, the embedded 5 minutes)
with and without the scoreboard and allocator (docs/portfolio.md, "Scoreboard and allocator").

Each run is a fresh child process (``run_backtest``, ``report.html=false``); the figure is the replay
wall time (``BacktestOutcome.wall_s``). Two comparisons, runs alternating so machine noise hits both:

- ``neutral``: the actors run (every interval, every fill scored, every constraint published) but
  their budgets never bind (``total_budget_usdt`` 1e12, no blacklist), so both runs trade
  identically (checked: same fills) and the ratio is the actors' own cost;
- ``shipped``: the config as shipped against ``enabled=false``: this includes the trading the
  budgets change (fewer orders and fills), so it is not an overhead, only for information.

``overhead_ratio`` = median over pairs of wall_with / wall_without (the replay); ``cpu_ratio`` the
same of the child's CPU time over the whole ``run_backtest`` (build, replay, report: less sensitive
to other processes on a shared host than wall time); ``*_best`` compares the best run of each side.

    python -m tools.bench allocator --repeats 5        # also: python -m tools.bench.allocator
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, time
from pathlib import Path
from mmbot.config.backtest import load_backtest_config
from mmbot.backtest.run import run_backtest
cfg_path, out, *sets = sys.argv[1:]
cfg = load_backtest_config(Path(cfg_path), ["report.html=false", *sets])
cpu0 = time.process_time()
o = run_backtest(cfg, out_dir=Path(out))
cpu_s = time.process_time() - cpu0
p = o.report["metrics"]["portfolio"]
print(json.dumps({"events": o.events, "wall_s": o.wall_s, "cpu_s": cpu_s, "fills": p["counts"]["n_fills"],
                  "changes": p.get("allocator", {}).get("n_changes", 0)}))
"""

OFF = ["portfolio.allocator.enabled=false"]
NEUTRAL = ["portfolio.allocator.total_budget_usdt=1e12", "portfolio.allocator.blacklist_after_intervals=0",
           "portfolio.allocator.min_weight=0.0", "portfolio.allocator.max_weight=1.0"]


def _child(out: Path, sets: list[str]) -> dict:
    cfg = REPO / "config" / "portfolio.toml"
    res = subprocess.run([sys.executable, "-c", _CHILD, str(cfg), str(out), *sets], capture_output=True, text=True,
                         cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"allocator bench child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _pairs(work: Path, name: str, on: list[str], repeats: int) -> list[tuple[dict, dict]]:
    pairs = []
    for i in range(repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {with_: _child(work / f"{name}-{'on' if with_ else 'off'}-{i}", on if with_ else OFF) for with_ in order}
        pairs.append((got[False], got[True]))
    return pairs


def _figures(pairs: list[tuple[dict, dict]]) -> dict:
    off_best = min(off["wall_s"] for off, _ in pairs)
    on_best = min(on["wall_s"] for _, on in pairs)
    cpu_off = min(off["cpu_s"] for off, _ in pairs)
    cpu_on = min(on["cpu_s"] for _, on in pairs)
    return {"wall_s_without": round(off_best, 3), "wall_s_with": round(on_best, 3),
            "overhead_ratio": round(statistics.median(on["wall_s"] / off["wall_s"] for off, on in pairs), 4),
            "overhead_ratio_best": round(on_best / off_best, 4),
            "cpu_s_without": round(cpu_off, 3), "cpu_s_with": round(cpu_on, 3),
            "cpu_ratio": round(statistics.median(on["cpu_s"] / off["cpu_s"] for off, on in pairs), 4),
            "cpu_ratio_best": round(cpu_on / cpu_off, 4),
            "fills_without": pairs[0][0]["fills"], "fills_with": pairs[0][1]["fills"],
            "allocation_changes": pairs[0][1]["changes"]}


def bench_allocator(work: Path, repeats: int = 5) -> dict:
    neutral = _pairs(work, "neutral", NEUTRAL, repeats)
    if any(on["fills"] != off["fills"] for off, on in neutral):
        raise RuntimeError("the neutral allocator changed the run (fills differ)")
    shipped = _pairs(work, "shipped", [], repeats)
    return {"events": neutral[0][1]["events"], "repeats": repeats,
            **{f"neutral_{k}": v for k, v in _figures(neutral).items()},
            **{f"shipped_{k}": v for k, v in _figures(shipped).items()}}


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tools.bench.allocator")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-alloc-") as tmp:
        print(json.dumps(bench_allocator(Path(tmp), a.repeats)))
