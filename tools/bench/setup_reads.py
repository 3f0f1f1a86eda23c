"""A wf trial's setup reads with and without the worker's memo (``mmbot.backtest.feed.catalog_memo``):
CPU ms of ``resolve_window``, ``resolve_backtest_sizing``, ``_check_catalog_instrument_fit`` and
``_catalog_funding`` for one window, the median of ``--repeats`` calls after a first one.

``python -m tools.bench.setup_reads [CATALOG [START END]]`` (default: the embedded catalog, a
6-minute window of its XRP hour). Report only (docs/benchmarks.md, "Session 34")."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
XRP = "XRPUSDT-LINEAR.BYBIT"


def main(argv: list[str] | None = None) -> int:
    from mmbot.backtest import feed
    from mmbot.backtest.run import _catalog_funding, resolve_window
    from mmbot.builders import _check_catalog_instrument_fit, resolve_backtest_sizing
    from mmbot.config.backtest import load_backtest_config

    ap = argparse.ArgumentParser(prog="python -m tools.bench.setup_reads")
    ap.add_argument("catalog", nargs="?", default=str(REPO / "catalog"))
    ap.add_argument("start", nargs="?", default="2024-12-01T07:30:00Z")
    ap.add_argument("end", nargs="?", default="2024-12-01T07:36:00Z")
    ap.add_argument("--instrument", default=XRP)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args(argv)
    cfg = load_backtest_config(REPO / "config" / "backtest.toml", ["report.html=false"])

    def setup() -> None:
        w = resolve_window(a.catalog, a.instrument, a.start, a.end)
        sized, _ = resolve_backtest_sizing(cfg, a.catalog, a.instrument, w)
        _check_catalog_instrument_fit(sized, a.catalog, a.instrument, w)
        _catalog_funding(a.catalog, a.instrument, w)

    out = {}
    for on in (False, True):
        feed.enable_cache(on)
        setup()
        cpu = []
        for _ in range(a.repeats):
            t = time.process_time()
            setup()
            cpu.append(time.process_time() - t)
        out["memo" if on else "no_memo"] = round(statistics.median(cpu) * 1e3, 2)
    feed.enable_cache(False)
    print(json.dumps({"catalog": a.catalog, "start": a.start, "end": a.end, "setup_cpu_ms": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
