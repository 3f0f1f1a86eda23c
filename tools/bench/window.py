"""Where a benchmark's window starts: the first book row of the config's instrument in its catalog.

The guards, queue and wf benchmarks used to name a fixed date (2024-06-03, the BTCUSDT sample);
when config/backtest.toml and config/wf.toml moved to the XRPUSDT hour (2024-12-01) every one of
them failed on an empty window while nothing ran them (tests/test_bench_windows.py now does).
Reading the start from the catalog keeps them on whatever the shipped configs replay.

A window the catalog cannot hold is refused (``BenchInputError``, one line): ``--minutes`` 0,
negative or not finite made a backtest child fail with a traceback, and more minutes than the
catalog holds were clipped to its end without a word while results.json recorded the minutes
asked for (tests/test_hostile_review31.py F1).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


class BenchInputError(ValueError):
    """A benchmark's input (an option, its config or catalog) cannot make a window (one line)."""


def check_minutes(minutes: float, option: str = "--minutes") -> float:
    """``minutes`` when it is a finite number > 0, else ``BenchInputError`` naming ``option``."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise BenchInputError(f"{option} {minutes}: must be a finite number of minutes > 0")
    return float(minutes)


def catalog_range_ns(config_path: Path) -> tuple[int, int]:
    """First and last order-book row [ns] of ``run.instrument`` in ``run.catalog`` of ``config_path``."""
    from mmbot.catalog_store import CatalogError, list_catalog
    from mmbot.config.backtest import ConfigError, load_backtest_config

    try:
        cfg = load_backtest_config(config_path)
        iid = cfg.run.instrument
        listing = list_catalog(cfg.path(cfg.run.catalog))
    except (ConfigError, CatalogError, OSError) as e:
        # Their messages name the file and the key already; a traceback here was the bench's exit 1.
        raise BenchInputError(f"{config_path}: {e}") from None
    rows = [d for d in listing["data"]
            if d["instrument_id"] == iid and d["data_type"] == "order_book_deltas" and d["rows"]]
    if not rows:
        raise BenchInputError(f"{config_path}: run.catalog {cfg.run.catalog} has no order-book rows for "
                              f"run.instrument {iid}")
    return int(rows[0]["start_ns"]), int(rows[0]["end_ns"])


def catalog_start_ns(config_path: Path) -> int:
    """First order-book row [ns] of ``run.instrument`` in ``run.catalog`` of ``config_path``."""
    return catalog_range_ns(config_path)[0]


def window(config_path: Path, minutes: float, offset_minutes: float = 0.0) -> tuple[str, str]:
    """``(start, end)`` ISO-8601 UTC: ``minutes`` from the catalog's first row plus ``offset_minutes``
    (whole seconds, rounded down: the window then starts at the catalog's first row).
    ``BenchInputError`` when ``minutes`` is not > 0 or the window ends after the catalog's last
    book row (the run would be clipped there and its figures labelled with the minutes asked for)."""
    minutes = check_minutes(minutes)
    lo, hi = catalog_range_ns(config_path)
    t0 = pd.Timestamp(lo, tz="UTC").floor("s") + pd.Timedelta(minutes=offset_minutes)
    held = (hi - t0.value) / 60e9
    if minutes > held:
        raise BenchInputError(f"--minutes {minutes:g}: {config_path}: its catalog holds {held:.2f} minutes of book rows "
                              f"from {t0.isoformat().replace('+00:00', 'Z')}; give at most that")
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    return iso(t0), iso(t0 + pd.Timedelta(minutes=minutes))
