"""Micro-benchmark of the order-lifecycle planner: ``python -m tools.bench.planner [--levels N]``.

Times ``Planner.plan`` per book message (both sides) on three paths: targets unchanged (KEEP, the
common case), targets one tick away (``should_requote`` runs for every level) and one side moving
past the requote threshold (one AMEND per level). Prints microseconds per message; figures are
for comparing revisions on one machine, not absolute (docs/strategy.md, Performance notes).
"""

from __future__ import annotations

import argparse
import timeit

from strategies import planner as pl

MS = 1_000_000


def bench(levels: int, n: int) -> dict[str, float]:
    p = pl.Planner(levels=levels, level_lots=[10] * levels, max_lots=100 * levels, tick=0.1, step=0.001,
                   min_qty=0.001, min_notional=5.0, max_qty=1e9, requote_threshold_bps=1.0,
                   min_time_in_book_ns=250 * MS, max_order_age_ns=60_000 * MS, stale_price_drift_bps=5.0,
                   use_amend=True)
    bids = [999_750 - 10 * i for i in range(levels)]
    asks = [1_000_250 + 10 * i for i in range(levels)]
    for k, a in enumerate(p.plan(0, 100_000.0, 0, bids, asks, True, True, False, False)):
        p.bind(a[1], k)
        p.on_accepted(k, 0)
    now = 1_000 * MS
    keep = timeit.timeit(lambda: p.plan(now, 100_000.0, 0, bids, asks, True, True, False, False), number=n)
    b1, a1 = [b + 1 for b in bids], [a + 1 for a in asks]
    near = timeit.timeit(lambda: p.plan(now, 100_000.0, 0, b1, a1, True, True, False, False), number=n)

    moved = [b + 20 for b in bids]  # 2 bps: every bid is amended, then confirmed

    def amend() -> None:
        for _, rec, ticks, lots, _ in list(p.plan(now, 100_000.0, 0, moved, asks, True, True, False, False)):
            p.on_updated(rec.key, ticks, lots, 0)
        for _, rec, ticks, lots, _ in list(p.plan(now, 100_000.0, 0, bids, asks, True, True, False, False)):
            p.on_updated(rec.key, ticks, lots, 0)

    amends = timeit.timeit(amend, number=n // 10) / 2 * 10
    return {"keep_us": keep / n * 1e6, "within_threshold_us": near / n * 1e6, "amend_side_us": amends / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=2, help="levels per side")
    ap.add_argument("--n", type=int, default=200_000, help="messages per path")
    a = ap.parse_args()
    best: dict[str, float] = {}
    for _ in range(3):
        for k, v in bench(a.levels, a.n).items():
            best[k] = min(best.get(k, v), v)
    print(f"planner, {a.levels} levels per side: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
