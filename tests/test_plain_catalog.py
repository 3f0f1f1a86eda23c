"""A catalog written by plain Nautilus calls (no mmbot_catalog.json) is usable, with one warning.

Issue 16, section 5: `mmbot` refused any ParquetDataCatalog it had not imported itself ("not an
mmbot catalog"). Now a catalog holding an instrument and order-book deltas is accepted; what
mmbot cannot check there (writer version, import validation, book invariant, import report,
funding) is said in one warning line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from adapters.instruments import InstrumentRegistry
from adapters.problems import ProblemLog
from adapters.sources import iter_batches
from mmbot import catalog_store

FIX = Path(__file__).parent / "fixtures"
XRP = "XRPUSDT-LINEAR.BYBIT"


def plain_catalog(root: Path, with_book: bool = True) -> Path:
    """Instrument + order-book deltas written with ParquetDataCatalog.write_data only."""
    registry = InstrumentRegistry()
    cat = ParquetDataCatalog(str(root))
    cat.write_data([registry.get("XRPUSDT")])
    if with_book:
        deltas = [d for kind, _i, items in iter_batches(FIX / "2024-12-01_XRPUSDT_ob500.data", registry, ProblemLog())
                  if kind == "deltas" for d in items]
        cat.write_data(deltas)
    return root


def test_plain_nautilus_catalog_is_listed_and_replayable_with_one_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(catalog_store, "_PLAIN_WARNED", set(), raising=False)
    root = plain_catalog(tmp_path / "plain")
    listing = catalog_store.list_catalog(root)
    rows = {d["data_type"]: d["rows"] for d in listing["data"] if d["instrument_id"] == XRP}
    assert rows == {"order_book_deltas": 3967}
    assert [i["instrument_id"] for i in listing["instruments"]] == [XRP]
    from mmbot.backtest.run import resolve_window

    window = resolve_window(root, XRP, "", "")  # what `mmbot backtest run` resolves first
    assert window is not None
    assert not catalog_store.book_invariant_declared(root, XRP)  # the simulator walks rows
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "plain Nautilus catalog" in err[0]
    assert "book invariant is undeclared" in err[0] and "no import report" in err[0] and "funding" in err[0]


def test_a_folder_without_book_data_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_store, "_PLAIN_WARNED", set(), raising=False)
    root = plain_catalog(tmp_path / "instruments_only", with_book=False)
    with pytest.raises(catalog_store.CatalogError, match="not an mmbot catalog .* nor a Nautilus ParquetDataCatalog"):
        catalog_store.check_catalog(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(catalog_store.CatalogError, match="not an mmbot catalog"):
        catalog_store.check_catalog(tmp_path / "empty")


def test_import_into_a_plain_catalog_is_still_refused(tmp_path):
    """mmbot does not add files to a catalog it did not write (its marker would vouch for them)."""
    root = plain_catalog(tmp_path / "plain")
    with pytest.raises(catalog_store.CatalogError, match="not an mmbot catalog"):
        catalog_store.import_paths([FIX / "2024-12-01_XRPUSDT_ob500.data"], root, InstrumentRegistry())


def test_backtest_runs_on_a_plain_nautilus_catalog(tmp_path):
    """`mmbot backtest run` end to end on book + trades written with ParquetDataCatalog.write_data
    (a generated recording's rows): exit 0, a report, and the warning once on stderr."""
    import json
    import subprocess
    import sys

    from tools.gen_synthetic import generate, parse_start, write_recording

    rec = tmp_path / "gen.jsonl"
    write_recording(rec, generate("XRPUSDT", parse_start("2024-12-01T07:30:00Z"), 2, 7))
    registry = InstrumentRegistry()
    cat = ParquetDataCatalog(str(tmp_path / "plain"))
    cat.write_data([registry.get("XRPUSDT")])
    rows: dict[str, list] = {"deltas": [], "trades": []}
    for kind, _i, items in iter_batches(rec, registry, ProblemLog()):
        rows[kind].extend(items)
    cat.write_data(rows["deltas"])
    cat.write_data(rows["trades"])
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--set",
                        f"run.catalog={tmp_path / 'plain'}", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")] == [
        catalog_store.plain_catalog_warning(tmp_path / "plain")]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report  # the run completed and reported
