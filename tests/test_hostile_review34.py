"""Hostile review 34 of the catalog decode-metadata check (70a622a) and the warm-up hand-over
(d81f289). Each test fails on 70a622a for a real defect:

- F1 a precision of thousands of digits passed ``str.isdigit`` and made ``int`` raise (a
  traceback), and the refusal printed any value whole;
- F2 mark-price and funding files were not checked: the run replayed its whole window, then
  aborted in Rust (exit 134, mark prices without metadata; a whole ``mmbot wf`` with it) or raised
  a TypeError (funding without ``instrument_id``) when the report read them;
- F3 a valid Nautilus catalog was refused by ``mmbot catalog ls``: Nautilus files "EUR/USD.SIM"
  under the folder "EURUSD.SIM" (``urisafe_identifier``), and the precision check looked
  instruments up by folder name;
- F4 depth files were looked for in "order_book_depth10"; Nautilus writes "order_book_depths";
- F5 the refusal advised a re-import that the importer refuses (same time range, other data);
- F6 the hand-over key (path, mtime, size) took a file rewritten in place with the same size and
  its mtime put back (``cp -p``, ``rsync -t``) for the old one: the run started on a stale book.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_catalog_decode_metadata import _mmbot

ROOT = Path(__file__).resolve().parents[1]
XRP = "XRPUSDT-LINEAR.BYBIT"
FIX = ROOT / "tests" / "fixtures"


def _set_meta(f: Path, change: dict | None) -> None:
    """``f``'s schema metadata updated by ``change`` (a value None: the key removed; ``change``
    None: no metadata at all)."""
    t = pq.read_table(f)
    meta = None
    if change is not None:
        meta = {**(t.schema.metadata or {}), **{k.encode(): v for k, v in change.items()}}
        meta = {k: v for k, v in meta.items() if v is not None}
    pq.write_table(t.replace_schema_metadata(meta), f)


def _backtest(cat: Path, out: Path) -> subprocess.CompletedProcess:
    return _mmbot("backtest", "run", "--catalog", str(cat), "--start", "2024-12-01T07:30:00Z",
                  "--end", "2024-12-01T07:31:00Z", "--no-progress", "--out", str(out))


def _one_line_exit_2(r, *parts: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-1500:])
    assert all(p in lines[0] for p in parts), lines[0]


def _copy(tmp_path: Path) -> Path:
    cat = tmp_path / "cat"
    shutil.copytree(ROOT / "catalog", cat)
    return cat


def test_F1_a_precision_of_thousands_of_digits_is_one_short_line(tmp_path):
    cat = _copy(tmp_path)
    _set_meta(sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0],
              {"price_precision": b"9" * 5000})
    r = _backtest(cat, tmp_path / "out")
    _one_line_exit_2(r, "price_precision is '99999999999999999999...', not an integer 0..16")
    assert len(r.stderr) < 500 and not (tmp_path / "out").exists()


def _marks(cat: Path) -> Path:
    from nautilus_trader.model.data import MarkPriceUpdate
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    t0 = 1_733_038_200_000_000_000  # 2024-12-01T07:30Z
    iid = InstrumentId.from_str(XRP)
    ParquetDataCatalog(str(cat)).write_data(
        [MarkPriceUpdate(iid, Price.from_str("1.9530"), t0 + i * 10**9, t0 + i * 10**9) for i in range(120)])
    return next((cat / "data" / "mark_price_update" / XRP).glob("*.parquet"))


@pytest.mark.parametrize("change,says", [(None, "has no instrument_id, price_precision"),
                                         ({"price_precision": b"2"}, "gives price_precision 2")])
def test_F2a_mark_prices_nautilus_cannot_decode_are_refused_before_the_run(tmp_path, change, says):
    cat = _copy(tmp_path)
    f = _marks(cat)
    assert _backtest(cat, tmp_path / "ok").returncode == 0  # as Nautilus writes them: read by the report
    _set_meta(f, change)
    r = _backtest(cat, tmp_path / "out")  # was: the whole replay, then a Rust panic, exit 134
    _one_line_exit_2(r, "mark_price_update", says)
    assert not (tmp_path / "out").exists()


def test_F2b_funding_without_instrument_id_is_refused_before_the_run(tmp_path):
    cat = _copy(tmp_path)
    _set_meta(next((cat / "data" / "funding_rate_update" / XRP).glob("*.parquet")), None)
    r = _backtest(cat, tmp_path / "out")  # was: a TypeError traceback after the replay, exit 1
    _one_line_exit_2(r, "funding_rate_update", "has no instrument_id")


def test_F2c_importing_funding_over_a_funding_file_nautilus_cannot_decode_is_one_line(tmp_path):
    """The importer merges new funding with the catalog's (``_catalog_funding_rates``): a funding
    file there without ``instrument_id`` was a TypeError traceback, exit 1."""
    cat = _copy(tmp_path)
    f = next((cat / "data" / "funding_rate_update" / XRP).glob("*.parquet"))
    _set_meta(f, None)
    before = sorted((p.relative_to(cat), p.read_bytes()) for p in cat.rglob("*") if p.is_file())
    src = tmp_path / "XRPUSDT_funding.json"  # the real response's shape (tests/fixtures), for XRPUSDT
    src.write_text((FIX / "http_get_funding_history.json").read_text().replace("BTCUSDT", "XRPUSDT")
                   .replace('"1709884800000"', '"1733083200000"').replace('"1709856000000"', '"1733054400000"'))
    r = _mmbot("catalog", "import", "--catalog", str(cat), "--no-progress", str(src))
    _one_line_exit_2(r, str(f), "has no instrument_id")
    assert sorted((p.relative_to(cat), p.read_bytes()) for p in cat.rglob("*") if p.is_file()) == before


def test_F3_a_nautilus_catalog_with_an_instrument_id_holding_a_slash_is_listed_and_checked(tmp_path):
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.test_kit.stubs.data import TestDataStubs

    from tests.test_plain_catalog import plain_catalog

    root = plain_catalog(tmp_path / "plain")
    cat = ParquetDataCatalog(str(root))
    eur = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    cat.write_data([eur])
    cat.write_data([TestDataStubs.quote_tick(eur, 1.1, 1.1001, ts_event=i, ts_init=i) for i in range(1, 100)])
    assert len(cat.quote_ticks(instrument_ids=["EUR/USD.SIM"])) == 99  # Nautilus decodes its own files
    r = _mmbot("catalog", "ls", "--catalog", str(root))
    assert r.returncode == 0 and "EUR/USD.SIM" in r.stdout, r.stderr[-1500:]
    # and the precision check finds the instrument by its folder
    f = next((root / "data" / "quote_tick" / "EURUSD.SIM").glob("*.parquet"))
    _set_meta(f, {"price_precision": b"3"})
    r = _mmbot("catalog", "ls", "--catalog", str(root))
    last = r.stderr.strip().splitlines()[-1]  # after the plain catalog's own warning line
    assert r.returncode == 2 and last.startswith(f"error: {f}: ") and \
        last.endswith("gives price_precision 3, the catalog's instrument EUR/USD.SIM has 5"), r.stderr


def test_F4_depth_files_are_checked_in_the_folder_nautilus_writes_them_to():
    from nautilus_trader.model.data import FundingRateUpdate, MarkPriceUpdate, OrderBookDepth10
    from nautilus_trader.persistence.funcs import class_to_filename

    from mmbot.catalog_store import _DECODE_KEYS

    for cls in (OrderBookDepth10, MarkPriceUpdate, FundingRateUpdate):
        assert class_to_filename(cls) in _DECODE_KEYS


def test_F5_the_advised_remedy_makes_the_catalog_usable(tmp_path):
    cat = tmp_path / "cat"
    src = FIX / "2024-12-01_XRPUSDT_ob500.data"
    assert _mmbot("catalog", "import", "--catalog", str(cat), "--no-progress", str(src)).returncode == 0
    bad = sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0]
    _set_meta(bad, {"price_precision": None})
    r = _mmbot("catalog", "ls", "--catalog", str(cat))
    _one_line_exit_2(r, "delete the file and import its source again, or import into a new catalog")
    bad.unlink()
    assert _mmbot("catalog", "import", "--catalog", str(cat), "--no-progress", str(src)).returncode == 0
    assert _mmbot("catalog", "ls", "--catalog", str(cat)).returncode == 0
    fresh = tmp_path / "fresh"
    assert _mmbot("catalog", "import", "--catalog", str(fresh), "--no-progress", str(src)).returncode == 0
    assert sorted(p.read_bytes() for p in (cat / "data").rglob("*.parquet")) == \
        sorted(p.read_bytes() for p in (fresh / "data").rglob("*.parquet"))


def _levels(book):
    return [(str(lv.price), lv.size()) for lv in book.bids()] + [(str(lv.price), lv.size()) for lv in book.asks()]


def test_F6_a_same_size_same_mtime_rewrite_is_not_handed_stale_rows(tmp_path):
    from mmbot.backtest import feed as F
    from mmbot.backtest.run import resolve_window

    cat = _copy(tmp_path)
    f0 = sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0]
    t = pq.read_table(f0)
    plain = dict(compression="NONE", use_dictionary=False, write_statistics=False)
    pq.write_table(t, f0, **plain)  # fixed-width columns, plain encoding: the size does not depend on values
    w = resolve_window(cat, XRP, "2024-12-01T07:50:00Z", "2024-12-01T07:51:00Z")
    assert w.warmup_from_ns
    F._warm_handover = None
    try:
        F.snapshot_trade_ties(cat, XRP, w.warmup_from_ns, w.start_ns, w.end_ns)
        st = f0.stat()
        # The same rows with the size column rotated by one row, written in place, mtime put back.
        size = t.column("size").combine_chunks()
        rotated = pa.concat_arrays([size.slice(1), size.slice(0, 1)])
        pq.write_table(pa.Table.from_arrays([rotated if n == "size" else t.column(n) for n in t.column_names],
                                            schema=t.schema), f0, **plain)
        os.utime(f0, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f0.stat().st_size == st.st_size and f0.stat().st_mtime_ns == st.st_mtime_ns
        got, _ = F.SnapshotStartFeed(cat, XRP, w.warmup_from_ns, w.start_ns, w.end_ns)._warm_book()
        F._warm_handover = None
        want, _ = F.SnapshotStartFeed(cat, XRP, w.warmup_from_ns, w.start_ns, w.end_ns)._warm_book()
    finally:
        F._warm_handover = None
    assert _levels(got) == _levels(want), "the run's warm-up book came from the file's previous content"
