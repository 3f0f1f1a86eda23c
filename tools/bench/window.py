"""Where a benchmark's window starts: the first book row of the config's instrument in its catalog.

The guards, queue and wf benchmarks used to name a fixed date (2024-06-03, the BTCUSDT sample);
when config/backtest.toml and config/wf.toml moved to the XRPUSDT hour (2024-12-01) every one of
them failed on an empty window while nothing ran them (tests/test_bench_windows.py now does).
Reading the start from the catalog keeps them on whatever the shipped configs replay.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def catalog_start_ns(config_path: Path) -> int:
    """First order-book row [ns] of ``run.instrument`` in ``run.catalog`` of ``config_path``."""
    from mmbot.catalog_store import list_catalog
    from mmbot.config.backtest import load_backtest_config

    cfg = load_backtest_config(config_path)
    iid = cfg.run.instrument
    rows = [d for d in list_catalog(cfg.path(cfg.run.catalog))["data"]
            if d["instrument_id"] == iid and d["data_type"] == "order_book_deltas" and d["rows"]]
    if not rows:
        raise RuntimeError(f"{config_path}: catalog {cfg.run.catalog} has no order-book rows for {iid}")
    return int(rows[0]["start_ns"])


def window(config_path: Path, minutes: float, offset_minutes: float = 0.0) -> tuple[str, str]:
    """``(start, end)`` ISO-8601 UTC: ``minutes`` from the catalog's first row plus ``offset_minutes``
    (whole seconds, rounded down: the window then starts at the catalog's first row)."""
    t0 = pd.Timestamp(catalog_start_ns(config_path), tz="UTC").floor("s") + pd.Timedelta(minutes=offset_minutes)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    return iso(t0), iso(t0 + pd.Timedelta(minutes=minutes))
