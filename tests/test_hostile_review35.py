"""Hostile review 35 (commit 2f673fd). Each test fails there for a real defect:

- D1: Nautilus reads every parquet file below ``data/<kind>/``, at any depth, as the data of the
  instrument its folder is named after (``get_file_list_from_data_cls``, ``filter_files``), while
  ``list_catalog`` looked one level deep. A copy at ``data/<kind>/old/<id>/`` was never checked: a
  broken one aborted the per-delta replay in Rust (exit 134) or the report's funding read (a
  TypeError, exit 1), and a valid one made the per-delta feed replay the book twice (24,536
  stream rows instead of 12,499) while the per-message feed did not. Such files are now refused
  in one line, exit 2, for the instruments a run replays.
- D2: ``RawPublicDataClientConfig.ping_interval_s`` of 0 or less made the tap's ping task (80adf29)
  a busy loop on the node's event loop (~50,000 pings a second); the config now refuses an
  interval outside [0.1, 3600] s (and ``resync_retry_s`` likewise).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.test_catalog_decode_metadata import _mmbot

ROOT = Path(__file__).resolve().parents[1]
XRP = "XRPUSDT-LINEAR.BYBIT"


def _nested_copy(cat: Path, kind: str, drop: str | None) -> Path:
    """The instrument's first ``kind`` file copied (under another name, else Nautilus' table names
    collide and it is skipped) to ``data/<kind>/0ld/<id>/``, without the metadata key ``drop``."""
    src = sorted((cat / "data" / kind / XRP).glob("*.parquet"))[0]
    t = pq.read_table(src)
    meta = {k: v for k, v in t.schema.metadata.items() if drop is None or k != drop.encode()}
    dst = cat / "data" / kind / "0ld" / XRP / src.name.replace("Z.parquet", "1Z.parquet")
    dst.parent.mkdir(parents=True)
    pq.write_table(t.replace_schema_metadata(meta), dst)
    return dst


def _backtest(cat: Path, out: Path, *sets: str) -> subprocess.CompletedProcess:
    return _mmbot("backtest", "run", "--catalog", str(cat), "--start", "2024-12-01T07:30:00Z",
                  "--end", "2024-12-01T07:31:00Z", "--no-progress", "--out", str(out),
                  *[x for kv in sets for x in ("--set", kv)])


@pytest.mark.parametrize("kind,drop,sets", [
    ("order_book_deltas", "price_precision", ('run.feed="per_delta"',)),  # was: SIGABRT
    ("funding_rate_update", "instrument_id", ()),  # was: a TypeError after the replay, exit 1
    ("order_book_deltas", None, ('run.feed="per_delta"',)),  # valid: was the book replayed twice
])
def test_D1_a_file_one_folder_deeper_is_refused_in_one_line(tmp_path, kind, drop, sets):
    cat = tmp_path / "cat"
    shutil.copytree(ROOT / "catalog", cat)
    bad = _nested_copy(cat, kind, drop)
    r = _backtest(cat, tmp_path / "out", *sets)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-800:])
    assert lines[0] == (f"error: {bad}: a parquet file below {cat / 'data' / kind}/<instrument>/: Nautilus would "
                        f"replay it as {XRP}'s data (twice, or unchecked); move it out of the catalog")
    assert not (tmp_path / "out").exists()


def test_D1_a_nested_file_of_another_instrument_does_not_refuse_this_replay(tmp_path):
    from mmbot.catalog_store import CatalogError, list_catalog

    cat = tmp_path / "cat"
    shutil.copytree(ROOT / "catalog", cat)
    _nested_copy(cat, "order_book_deltas", "price_precision")
    list_catalog(cat, check=["BTCUSDT-LINEAR.BYBIT"])
    with pytest.raises(CatalogError):
        list_catalog(cat, check=[XRP])
    with pytest.raises(CatalogError):
        list_catalog(cat)  # mmbot catalog ls: every instrument


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, 0.01, 1e9])
def test_D2_the_tap_refuses_a_ping_interval_that_would_flood_or_never_ping(value):
    from adapters.recorder import RawPublicDataClientConfig

    with pytest.raises(ValueError, match="ping_interval_s must be a number of seconds in"):
        RawPublicDataClientConfig(url="ws://127.0.0.1:1/ws", instrument_id=XRP, feed=False, ping_interval_s=value)
    assert RawPublicDataClientConfig(url="ws://127.0.0.1:1/ws", instrument_id=XRP).ping_interval_s == 20.0
