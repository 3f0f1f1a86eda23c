"""The benchmarks' baseline: Nautilus replaying the same catalog slice with no strategy."""

from __future__ import annotations

import time

from nautilus_trader.backtest.node import BacktestNode

from mmbot.backtest import resolve_window
from mmbot.builders import build_backtest_run_config
from mmbot.config import BacktestConfig


def run_bare_replay(cfg: BacktestConfig) -> tuple[int, float]:
    """(engine events, wall seconds) of a replay with the same venue and data, no components."""
    catalog = cfg.path(cfg.run.catalog)
    window = resolve_window(catalog, cfg.run.instrument, cfg.run.start, cfg.run.end)
    run_config = build_backtest_run_config(cfg, str(catalog), cfg.run.instrument, window, with_components=False)
    node = BacktestNode(configs=[run_config])
    try:
        node.build()
        engine = node.get_engine(run_config.id)
        t0 = time.perf_counter()
        node.run()
        return int(engine.iteration), time.perf_counter() - t0
    finally:
        node.dispose()
