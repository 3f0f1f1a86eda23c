"""Funding and market-data files given to one import in any order, and the same settlement in
several files (issue 12 hostile review, findings 16 and 17; mmbot/catalog_store.py,
adapters/bybit_funding.py)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from nautilus_trader.model.data import FundingRateUpdate
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from adapters.bybit_funding import DUPLICATE_TIMESTAMP
from adapters.instruments import InstrumentRegistry
from adapters.problems import ImportRejected
from mmbot.catalog_store import import_paths

H8 = 8 * 3_600_000
DEC1 = 1_733_011_200_000  # 2024-12-01T00:00Z in ms
IID = "XRPUSDT-LINEAR.BYBIT"


def funding_file(path: Path, rows: list[tuple[str, int]]) -> Path:
    body = {"retCode": 0, "retMsg": "OK", "time": 1,
            "result": {"category": "linear", "list": [{"symbol": "XRPUSDT", "fundingRate": r, "fundingRateTimestamp": str(t)}
                                                      for r, t in rows]}}
    path.write_text(json.dumps(body))
    return path


def catalog_rates(cat: Path) -> list[tuple[int, Decimal]]:
    rows = ParquetDataCatalog(str(cat)).query(FundingRateUpdate, identifiers=[IID])
    return [(r.ts_event // 1_000_000, Decimal(str(r.rate))) for r in rows]


def recording(path: Path, t0_ms: int) -> Path:
    """Two seconds of XRPUSDT: a snapshot and one trade."""
    lines = [{"topic": "orderbook.50.XRPUSDT", "type": "snapshot", "ts": t0_ms, "cts": t0_ms,
              "data": {"s": "XRPUSDT", "b": [["1.9500", "5000"]], "a": [["1.9501", "5000"]], "u": 1, "seq": 1},
              "local_ts_ns": t0_ms * 10**6 + 1},
             {"topic": "publicTrade.XRPUSDT", "type": "snapshot", "ts": t0_ms + 1000,
              "data": [{"T": t0_ms + 1000, "s": "XRPUSDT", "S": "Sell", "v": "100", "p": "1.9500", "L": "MinusTick",
                        "i": f"00000000-0000-4000-8000-{t0_ms % 10**12:012d}", "BT": False, "RPI": False, "seq": 2}],
              "local_ts_ns": (t0_ms + 1000) * 10**6 + 1}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


# -- finding 16: order of the files --------------------------------------------------------------

def test_funding_pages_in_any_order_are_imported_oldest_first(tmp_path):
    """Bybit pages funding backwards (newest first): page 1 holds the newest settlement. Every
    order of the pages gives the same catalog."""
    p1 = funding_file(tmp_path / "XRPUSDT_funding_p1.json", [("0.0002", DEC1 + 3 * H8)])
    p2 = funding_file(tmp_path / "XRPUSDT_funding_p2.json",
                      [("0.000133", DEC1 + 2 * H8), ("0.000146", DEC1 + H8), ("0.000126", DEC1)])
    expected = [(DEC1, Decimal("0.000126")), (DEC1 + H8, Decimal("0.000146")), (DEC1 + 2 * H8, Decimal("0.000133")),
                (DEC1 + 3 * H8, Decimal("0.0002"))]
    for name, order in (("a", [p1, p2]), ("b", [p2, p1])):
        result = import_paths(order, tmp_path / name, InstrumentRegistry())
        assert result.log.total() == {} and sum(w.rows for w in result.written.values()) == 4
        assert catalog_rates(tmp_path / name) == expected


def test_market_data_files_out_of_time_order_are_one_line_and_leave_no_catalog(tmp_path):
    """Book/trade files are not merged by time (two overlapping recordings would interleave into
    one nonsense stream): given newest first they are refused with one line naming both files,
    instead of Nautilus' "Data should be monotonically increasing" traceback."""
    t0 = 1_733_038_200_000
    early = recording(tmp_path / "early.jsonl", t0)
    late = recording(tmp_path / "late.jsonl", t0 + 60_000)
    with pytest.raises(ImportRejected) as e:
        import_paths([late, early], tmp_path / "cat", InstrumentRegistry())
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{early}: ") and f"come after {late}'s data" in line, line
    assert "oldest first" in line and not (tmp_path / "cat").exists()
    result = import_paths([early, late], tmp_path / "cat", InstrumentRegistry())
    assert result.log.total() == {}


# -- finding 17: the same settlement in several files and in the catalog ------------------------------

def test_same_settlement_in_two_files_same_rate_is_imported_once_and_reported(tmp_path):
    a = funding_file(tmp_path / "XRPUSDT_funding_a.json", [("0.000133", DEC1 + 2 * H8), ("0.000146", DEC1 + H8)])
    b = funding_file(tmp_path / "XRPUSDT_funding_b.json", [("0.0002", DEC1 + 3 * H8), ("0.000133", DEC1 + 2 * H8)])
    result = import_paths([a, b], tmp_path / "cat", InstrumentRegistry())
    assert catalog_rates(tmp_path / "cat") == [(DEC1 + H8, Decimal("0.000146")), (DEC1 + 2 * H8, Decimal("0.000133")),
                                               (DEC1 + 3 * H8, Decimal("0.0002"))]
    fb = result.log.files[str(b)]
    assert dict(fb.problems) == {DUPLICATE_TIMESTAMP: 1} and fb.problem_lines[DUPLICATE_TIMESTAMP] == [2]
    assert "repeats XRPUSDT_funding_a.json:result.list[0] (same rate); imported once" in fb.first_problem[DUPLICATE_TIMESTAMP]
    assert (result.log.files[str(a)].messages, fb.messages) == (2, 1)
    assert not result.log.files[str(a)].problems


def test_conflicting_rates_across_files_import_neither_and_report_both(tmp_path):
    a = funding_file(tmp_path / "XRPUSDT_funding_a.json",
                     [("0.000133", DEC1 + 2 * H8), ("0.000146", DEC1 + H8), ("0.000126", DEC1)])
    b = funding_file(tmp_path / "XRPUSDT_funding_b.json", [("0.0002", DEC1 + 3 * H8), ("0.009", DEC1 + 2 * H8)])
    result = import_paths([a, b], tmp_path / "cat", InstrumentRegistry())
    assert [t for t, _ in catalog_rates(tmp_path / "cat")] == [DEC1, DEC1 + H8, DEC1 + 3 * H8]
    for f, line in ((a, 1), (b, 2)):
        stats = result.log.files[str(f)]
        assert dict(stats.problems) == {DUPLICATE_TIMESTAMP: 1} and stats.problem_lines[DUPLICATE_TIMESTAMP] == [line]
        assert "conflicting rates across files (XRPUSDT_funding_a.json:result.list[0]=0.000133, " \
               "XRPUSDT_funding_b.json:result.list[1]=0.009); none imported" in stats.first_problem[DUPLICATE_TIMESTAMP]
    with pytest.raises(ImportRejected, match=rf"{a.name}:1: {DUPLICATE_TIMESTAMP}: settlement .* conflicting rates across files .*{b.name}"):
        import_paths([a, b], tmp_path / "strict", InstrumentRegistry(), strict=True)
    assert not (tmp_path / "strict").exists()


def test_settlements_already_in_the_catalog_are_not_imported_again(tmp_path):
    """A second import overlapping the first: the same rate is reported and skipped (the new
    settlement after it is imported), another rate is a conflict and the catalog keeps its row."""
    cat = tmp_path / "cat"
    import_paths([funding_file(tmp_path / "XRPUSDT_funding_1.json", [("0.000146", DEC1 + H8), ("0.000126", DEC1)])],
                 cat, InstrumentRegistry())
    again = funding_file(tmp_path / "XRPUSDT_funding_2.json", [("0.0002", DEC1 + 2 * H8), ("0.000146", DEC1 + H8)])
    result = import_paths([again], cat, InstrumentRegistry())
    stats = result.log.files[str(again)]
    assert stats.problem_lines[DUPLICATE_TIMESTAMP] == [2] and stats.messages == 1
    assert "already in the catalog (same rate 0.000146); not imported again" in stats.first_problem[DUPLICATE_TIMESTAMP]
    assert catalog_rates(cat) == [(DEC1, Decimal("0.000126")), (DEC1 + H8, Decimal("0.000146")),
                                  (DEC1 + 2 * H8, Decimal("0.0002"))]
    clash = funding_file(tmp_path / "XRPUSDT_funding_3.json", [("0.0003", DEC1 + 3 * H8), ("0.05", DEC1)])
    result = import_paths([clash], cat, InstrumentRegistry())
    stats = result.log.files[str(clash)]
    assert stats.problem_lines[DUPLICATE_TIMESTAMP] == [2]
    assert "rate 0.05 conflicts with the catalog's 0.000126; not imported (the catalog keeps its row)" in \
        stats.first_problem[DUPLICATE_TIMESTAMP]
    assert catalog_rates(cat)[0] == (DEC1, Decimal("0.000126")) and catalog_rates(cat)[-1] == (DEC1 + 3 * H8, Decimal("0.0003"))
