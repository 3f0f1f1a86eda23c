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
