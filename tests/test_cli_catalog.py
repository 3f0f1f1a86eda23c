"""`mmbot catalog import` / `mmbot catalog ls`: exit codes, reports, idempotence, atomicity."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import DEFAULT_CATALOG

FIX = Path(__file__).parent / "fixtures"
XRP_OB = FIX / "2024-12-01_XRPUSDT_ob500.data"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def defective_file(tmp: Path) -> Path:
    lines = XRP_OB.read_text().splitlines()
    msg = json.loads(lines[5])
    msg["data"]["u"] += 7  # an update-id gap at line 6
    lines[5] = json.dumps(msg)
    p = tmp / "2024-12-01_XRPUSDT_ob500.data"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_import_writes_report_and_is_idempotent(tmp_path):
    cat, rep = tmp_path / "cat", tmp_path / "report.json"
    r = run("catalog", "import", str(XRP_OB), "--catalog", str(cat), "--report", str(rep))
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert report["status"] == "ok" and report["problems_total"] == {}
    assert report["written"] == [{
        "data_type": "OrderBookDelta", "instrument_id": "XRPUSDT-LINEAR.BYBIT", "rows": 3967,
        "start_ns": 1733011200691000000, "end_ns": report["written"][0]["end_ns"],
    }]
    before = json.loads(run("catalog", "ls", "--catalog", str(cat), "--json").output)
    r2 = run("catalog", "import", str(XRP_OB), "--catalog", str(cat))
    assert r2.exit_code == 0 and "2 duplicate(s) skipped" in r2.output
    after = json.loads(run("catalog", "ls", "--catalog", str(cat), "--json").output)
    assert before == after and after["data"][0]["rows"] == 3967


def test_problems_are_reported_with_line_numbers_exit_0(tmp_path):
    bad = defective_file(tmp_path)
    rep = tmp_path / "r.json"
    r = run("catalog", "import", str(bad), "--catalog", str(tmp_path / "cat"), "--report", str(rep))
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    probs = report["files"][0]["problems"]
    assert probs["update_id_gap"]["lines"] == [6]
    assert probs["dropped_in_gap"]["count"] == 44  # lines 7..50 wait for a snapshot that never comes
    assert "update_id_gap=1" in r.output


def test_strict_rejects_and_leaves_catalog_untouched(tmp_path):
    cat = tmp_path / "cat"
    assert run("catalog", "import", str(XRP_OB), "--catalog", str(cat)).exit_code == 0
    digest = tree_digest(cat)
    other = tmp_path / "other"
    other.mkdir()
    bad = defective_file(other)  # same name and day as the imported file, another folder
    rep = tmp_path / "strict.json"
    r = run("catalog", "import", str(bad), "--catalog", str(cat), "--strict", "--report", str(rep))
    assert r.exit_code == 2
    assert "update_id_gap" in r.output and ":6:" in r.output and "catalog unchanged" in r.output
    assert tree_digest(cat) == digest
    assert json.loads(rep.read_text())["status"] == "rejected"


def test_failed_first_import_leaves_no_catalog(tmp_path):
    bad = tmp_path / "2024-06-03_BTCUSDT_ob50.data.zip"
    bad.write_bytes(b"not a zip")
    cat = tmp_path / "new"
    r = run("catalog", "import", str(bad), "--catalog", str(cat))
    assert r.exit_code == 2 and "bad_archive" in r.output
    assert not cat.exists()


def test_unknown_instrument_and_unreadable_inputs_exit_2(tmp_path):
    lines = XRP_OB.read_text().replace("XRPUSDT", "PEPEUSDT")
    p = tmp_path / "2024-12-01_PEPEUSDT_ob500.data"
    p.write_text(lines)
    r = run("catalog", "import", str(p), "--catalog", str(tmp_path / "c"))
    assert r.exit_code == 2 and "--instruments FILE" in r.output
    r = run("catalog", "import", str(tmp_path / "missing.jsonl"), "--catalog", str(tmp_path / "c"))
    assert r.exit_code == 2 and "no such file" in r.output
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    r = run("catalog", "import", str(odd), "--catalog", str(tmp_path / "c"))
    assert r.exit_code == 2 and "unknown file name" in r.output


def test_catalog_from_another_nautilus_version_is_refused(tmp_path):
    cat = tmp_path / "cat"
    assert run("catalog", "import", str(XRP_OB), "--catalog", str(cat)).exit_code == 0
    marker = cat / "mmbot_catalog.json"
    marker.write_text(json.dumps({"format": 1, "nautilus_trader": "1.220.0"}))
    r = run("catalog", "ls", "--catalog", str(cat))
    assert r.exit_code == 2 and "1.220.0" in r.output and "re-import" in r.output
    r = run("catalog", "import", str(XRP_OB), "--catalog", str(cat))
    assert r.exit_code == 2


def test_embedded_catalog_holds_the_default_hour_and_funding():
    """The default instrument is one contiguous hour of a large-tick book over the 08:00 UTC
    funding settlement; BTCUSDT is a small-tick sample; both have funding rows; the real
    5-second XRPUSDT sample is not in it (it would add a second date to XRPUSDT's range)."""
    r = run("catalog", "ls", "--json")
    assert r.exit_code == 0, r.output
    listing = json.loads(r.output)
    data = {(d["data_type"], d["instrument_id"]): d for d in listing["data"]}
    xrp = data[("order_book_deltas", "XRPUSDT-LINEAR.BYBIT")]
    start = 1_733_038_200_000_000_000  # 2024-12-01T07:30:00Z
    assert start <= xrp["start_ns"] < start + 10**9
    assert 60 * 60 * 10**9 <= xrp["end_ns"] - start < 61 * 60 * 10**9  # one hour, nothing on other dates
    assert xrp["rows"] > 300_000
    assert data[("trade_tick", "XRPUSDT-LINEAR.BYBIT")]["rows"] > 10_000
    btc = data[("order_book_deltas", "BTCUSDT-LINEAR.BYBIT")]
    assert btc["rows"] > 100_000 and btc["end_ns"] - btc["start_ns"] >= 9 * 60 * 10**9
    funding = data[("funding_rate_update", "XRPUSDT-LINEAR.BYBIT")]
    assert funding["rows"] == 3 and ("funding_rate_update", "BTCUSDT-LINEAR.BYBIT") in data
    text = run("catalog", "ls").output
    assert "XRPUSDT-LINEAR.BYBIT" in text and "2024-12-01T07:30" in text and "funding_rate_update" in text

    from nautilus_trader.model.data import FundingRateUpdate
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    rates = ParquetDataCatalog(str(DEFAULT_CATALOG)).query(FundingRateUpdate, identifiers=["XRPUSDT-LINEAR.BYBIT"])
    settle_0800 = 1_733_040_000_000_000_000
    assert settle_0800 in [u.ts_event for u in rates] and xrp["start_ns"] < settle_0800 < xrp["end_ns"]


def _row_key(x) -> tuple:
    """Every stored field of a delta or trade, as raw integers (a CLEAR's empty order prints its
    price at different precisions, so objects are compared by value, not by repr)."""
    if hasattr(x, "action"):
        o = x.order
        return (int(x.action), int(o.side), o.price.raw, o.size.raw, o.order_id, x.flags, x.sequence, x.ts_event, x.ts_init)
    return (x.price.raw, x.size.raw, int(x.aggressor_side), x.trade_id.value, x.ts_event, x.ts_init)


def test_delta_encoded_columns_read_back_exactly(tmp_path):
    """catalog_store writes ts_event / ts_init / sequence DELTA_BINARY_PACKED; Nautilus' queries
    return exactly what the loader produced."""
    import pyarrow.parquet as pq
    from nautilus_trader.model.data import OrderBookDelta, TradeTick
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from adapters.instruments import InstrumentRegistry
    from adapters.problems import ProblemLog
    from adapters.sources import iter_batches
    from tools.gen_synthetic import generate, parse_start, write_recording

    rec = tmp_path / "XRPUSDT_2024-12-01.jsonl"
    write_recording(rec, generate("XRPUSDT", parse_start("2024-12-01T07:30:00Z"), 0.5, 3))
    r = run("catalog", "import", str(rec), "--catalog", str(tmp_path / "cat"))
    assert r.exit_code == 0, r.output
    f = next((tmp_path / "cat" / "data" / "order_book_deltas").rglob("*.parquet"))
    meta = pq.ParquetFile(f).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert all("DELTA_BINARY_PACKED" in encodings[c] for c in ("ts_event", "ts_init", "sequence"))
    loaded: dict[str, list] = {"deltas": [], "trades": []}
    for kind, _, items in iter_batches(rec, InstrumentRegistry(), ProblemLog()):
        loaded[kind] += items
    cat = ParquetDataCatalog(str(tmp_path / "cat"))
    for cls, kind in ((OrderBookDelta, "deltas"), (TradeTick, "trades")):
        got = cat.query(cls, identifiers=["XRPUSDT-LINEAR.BYBIT"])
        assert len(got) == len(loaded[kind]) > 100
        assert [_row_key(a) for a in got] == [_row_key(b) for b in loaded[kind]]


def test_time_filtered_query_keeps_message_order(tmp_path):
    """Pitfall guard: a start/end query must return exactly the rows of the unfiltered one."""
    from nautilus_trader.model.data import OrderBookDelta
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    cat = ParquetDataCatalog(str(DEFAULT_CATALOG))
    iid = ["XRPUSDT-LINEAR.BYBIT"]
    full = cat.query(OrderBookDelta, identifiers=iid, end=1733038500_000_000_000)  # first 5 minutes

    def key(d):
        return (d.ts_init, int(d.action), d.flags, d.sequence, d.order.price.raw if d.order else 0, d.order.size.raw if d.order else 0)

    keys = [key(d) for d in full]
    lo, hi = keys[len(keys) // 3][0], keys[2 * len(keys) // 3][0]
    want = [k for k in keys if lo <= k[0] <= hi]
    got = [key(d) for d in cat.query(OrderBookDelta, identifiers=iid, start=lo, end=hi)]
    assert got == want
    ts = [k[0] for k in keys]
    assert all(a < b for a, b in zip(ts, ts[1:])), "ts_init must be strictly increasing"


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "mmbot"
    cmd = [str(exe)] if exe.exists() else [shutil.which("mmbot") or "mmbot"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert "catalog" in out and "backtest" in out


@pytest.mark.slow
def test_embedded_catalog_is_a_deterministic_build():
    from tools.build_catalog import check

    assert check(DEFAULT_CATALOG) == []
