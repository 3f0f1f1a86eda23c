"""The benchmarks' baseline: Nautilus replaying the same catalog slice with no strategy."""

from __future__ import annotations

import time

from nautilus_trader.backtest.node import BacktestNode

from mmbot.backtest.run import resolve_window
from mmbot.builders import build_backtest_run_config, resolve_backtest_sizing
from mmbot.config.backtest import BacktestConfig


def run_bare_replay(cfg: BacktestConfig, subscriber: bool = False) -> tuple[int, float]:
    """(engine events, wall seconds) of a replay with the same venue and data and no strategy.

    ``subscriber=True`` adds a do-nothing actor subscribed to the book and trades, so the data
    engine maintains the cached book and batches deltas as it must for any real consumer.
    """
    import msgspec
    from nautilus_trader.config import ImportableActorConfig

    catalog = cfg.path(cfg.run.catalog)
    window = resolve_window(catalog, cfg.run.instrument, cfg.run.start, cfg.run.end)
    # Notional sizes priced as the real run prices them (the builder refuses unresolved ones).
    cfg, _ = resolve_backtest_sizing(cfg, str(catalog), cfg.run.instrument, window)
    run_config = build_backtest_run_config(cfg, str(catalog), cfg.run.instrument, window, with_components=False)
    if subscriber:
        actor = ImportableActorConfig(actor_path="tools.bench.noop:BookSubscriber",
                                      config_path="tools.bench.noop:BookSubscriberConfig",
                                      config={"instrument_id": cfg.run.instrument})
        engine_cfg = msgspec.structs.replace(run_config.engine, actors=[actor])
        run_config = msgspec.structs.replace(run_config, engine=engine_cfg)
    node = BacktestNode(configs=[run_config])
    try:
        node.build()
        engine = node.get_engine(run_config.id)
        t0 = time.perf_counter()
        node.run()
        return int(engine.iteration), time.perf_counter() - t0
    finally:
        node.dispose()
