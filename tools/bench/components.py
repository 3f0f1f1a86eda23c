"""Where a backtest message's time goes, per mmbot component: ``python -m tools.bench.components``.

Wraps the per-message handlers (strategy, planner, queue simulator, run ledger, stale-data guard)
with ``time.perf_counter_ns`` from outside the code (nothing in the hot path changes; the wrapper
adds ~0.2 us per call) and runs the default backtest on a window. Prints wall-clock time, calls,
us per call and the share of the run per component. Calls nest (the simulator's ``_apply_book``
and ``_fill`` run inside its pre-hook or its timer alerts; the planner and ``_apply`` inside the
strategy's handler): shares do not add up. On a shared machine read the shares, not the times.
A measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _wrap(acc: dict, cls, name: str, label: str) -> None:
    f = getattr(cls, name)
    pc = time.perf_counter_ns

    def timed(self, *a):
        t = pc()
        try:
            return f(self, *a)
        finally:
            r = acc[label]
            r[0] += pc() - t
            r[1] += 1

    setattr(cls, name, timed)


def measure(start: str, end: str, sets: list[str]) -> dict:
    from adapters.sim.exec_client import QueueSimExecutionClient
    from mmbot.backtest.ledger import RunLedger
    from mmbot.backtest.run import run_backtest
    from mmbot.config.backtest import load_backtest_config
    from strategies import planner as pl
    from strategies.market_maker import MarketMaker
    from strategies.risk.stale_data import StaleDataGuard

    acc: dict = defaultdict(lambda: [0, 0])
    for cls, name, label in (
        (MarketMaker, "on_order_book_deltas", "strategy book handler (all)"),
        (MarketMaker, "_apply", "strategy _apply (order commands through Nautilus)"),
        (pl.Planner, "plan", "planner plan"),
        (QueueSimExecutionClient, "_on_book_msg", "simulator pre-hook (buffer, apply due items)"),
        (QueueSimExecutionClient, "_after_book_msg", "simulator post-hook"),
        (QueueSimExecutionClient, "_apply_book", "simulator _apply_book"),
        (QueueSimExecutionClient, "_fill", "simulator _fill (Nautilus fill events)"),
        (RunLedger, "on_order_book_deltas", "run ledger"),
        (StaleDataGuard, "on_order_book_deltas", "stale-data guard"),
    ):
        _wrap(acc, cls, name, label)
    cfg = load_backtest_config(REPO / "config" / "backtest.toml", [
        f'run.start="{start}"', f'run.end="{end}"', "report.html=false", "run.progress=false", *sets])
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-components-") as tmp:
        c0, w0 = time.process_time(), time.perf_counter_ns()
        out = run_backtest(cfg, out_dir=Path(tmp))
        wall_ns, cpu_s = time.perf_counter_ns() - w0, time.process_time() - c0
    rows = {k: {"ms": round(ns / 1e6, 1), "calls": n, "us_per_call": round(ns / max(n, 1) / 1e3, 2),
                "share_pct": round(ns / wall_ns * 100, 1)} for k, (ns, n) in acc.items()}
    return {"wall_s": round(wall_ns / 1e9, 2), "cpu_s": round(cpu_s, 2), "rows": out.events,
            "fills": out.report["metrics"]["counts"]["n_fills"], "components": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.components")
    ap.add_argument("--start", default="2024-12-01T07:30:00Z")
    ap.add_argument("--end", default="2024-12-01T07:45:00Z")
    ap.add_argument("--set", action="append", default=[], help="config override (as mmbot --set)")
    a = ap.parse_args(argv)
    r = measure(a.start, a.end, a.set)
    print(f"wall {r['wall_s']} s, CPU {r['cpu_s']} s, {r['rows']} rows, {r['fills']} fills")
    for k, v in sorted(r["components"].items(), key=lambda kv: -kv[1]["ms"]):
        print(f"{k:52s} {v['ms']:9.1f} ms {v['calls']:8d} calls {v['us_per_call']:8.2f} us/call {v['share_pct']:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
