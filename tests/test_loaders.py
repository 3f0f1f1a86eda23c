"""Loaders: real Bybit fixtures with exact values, and one crafted file per defect kind."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import OrderBookDeltas
from nautilus_trader.model.enums import AggressorSide, BookAction, BookType, RecordFlag

from adapters.bybit_trades import is_rpi_trade_id
from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
from adapters.problems import ImportRejected, ProblemLog
from adapters.sources import iter_batches

FIX = Path(__file__).parent / "fixtures"
XRP_OB = FIX / "2024-12-01_XRPUSDT_ob500.data"
F_LAST, F_SNAPSHOT = int(RecordFlag.F_LAST), int(RecordFlag.F_SNAPSHOT)


def load(path: Path, strict: bool = False, registry: InstrumentRegistry | None = None):
    log = ProblemLog(strict=strict)
    deltas, trades = [], []
    for kind, _inst, items in iter_batches(path, registry or InstrumentRegistry(), log):
        (deltas if kind == "deltas" else trades).append(items)
    return deltas, trades, log


def problems(log: ProblemLog, path: Path) -> dict[str, list[int]]:
    f = log.files[str(path)]
    return {k: list(f.problem_lines[k]) for k in f.problems}


def book_lines(symbol: str = "BTCUSDT"):
    """A small valid BTCUSDT ob50 stream: snapshot u=100, then deltas u=101.."""
    snap = {"topic": f"orderbook.50.{symbol}", "type": "snapshot", "ts": 1_717_372_800_000,
            "data": {"s": symbol, "b": [["67000.00", "1.000"], ["66999.90", "2.000"]],
                     "a": [["67000.10", "1.500"], ["67000.20", "3.000"]], "u": 100, "seq": 1}, "cts": 1_717_372_799_999}
    out = [snap]
    for i in range(1, 6):
        out.append({"topic": f"orderbook.50.{symbol}", "type": "delta", "ts": 1_717_372_800_000 + 100 * i,
                    "data": {"s": symbol, "b": [["67000.00", f"{1 + i}.000"]], "a": [], "u": 100 + i, "seq": 1 + i},
                    "cts": 1_717_372_800_000 + 100 * i - 1})
    return out


def write_ob(tmp: Path, msgs: list, name: str = "2024-06-03_BTCUSDT_ob50.data", raw_lines: dict | None = None) -> Path:
    lines = [json.dumps(m, separators=(",", ":")) for m in msgs]
    for idx, text in (raw_lines or {}).items():
        lines[idx] = text
    p = tmp / name
    p.write_text("\n".join(lines) + "\n")
    return p


def replay_never_crossed(batches: list[list]) -> int:
    """Applies every batch as one message; returns how many times the book was crossed."""
    crossed = 0
    iid = batches[0][0].instrument_id
    book = OrderBook(iid, BookType.L2_MBP)
    for batch in batches:
        book.apply_deltas(OrderBookDeltas(iid, batch))
        b, a = book.best_bid_price(), book.best_ask_price()
        if b is not None and a is not None and b >= a:
            crossed += 1
    return crossed


# --- real data ---------------------------------------------------------------------------------

def test_real_xrp_ob500_exact_values():
    deltas, trades, log = load(XRP_OB)
    assert trades == [] and log.total() == {}
    assert len(deltas) == 50  # one batch per exchange message
    first = deltas[0]
    assert len(first) == 1 + 500 + 500
    assert first[0].action == BookAction.CLEAR and first[0].flags == F_SNAPSHOT
    assert all(d.flags & F_SNAPSHOT for d in first)
    assert first[-1].flags == F_SNAPSHOT | F_LAST
    assert str(first[1].order.price) == "1.9531" and str(first[1].order.size) == "6203"
    assert first[0].ts_event == 1_733_011_200_691_000_000 == first[0].ts_init
    assert first[0].sequence == 20254869
    # every message ends with exactly one F_LAST, on its last delta
    for batch in deltas:
        assert [bool(d.flags & F_LAST) for d in batch] == [False] * (len(batch) - 1) + [True]
    assert sum(len(b) for b in deltas) == 3967  # 1001 + 2966 changed levels over 49 deltas
    book = OrderBook(first[0].instrument_id, BookType.L2_MBP)
    book.apply_deltas(OrderBookDeltas(first[0].instrument_id, first))
    assert str(book.best_bid_price()) == "1.9531" and str(book.best_ask_price()) == "1.9532"
    assert str(book.best_bid_size()) == "6203" and str(book.best_ask_size()) == "10480"
    assert replay_never_crossed(deltas) == 0
    deletes = sum(1 for b in deltas[1:] for d in b if d.action == BookAction.DELETE)
    assert deletes == 18


def test_real_instruments_and_fee_rates():
    reg = InstrumentRegistry([FIX / "http_get_instruments_linear.json"], FIX / "http_get_fee_rate.json")
    btc = reg.get("BTCUSDT")
    assert str(btc.id) == "BTCUSDT-LINEAR.BYBIT"
    assert str(btc.price_increment) == "0.5" and str(btc.size_increment) == "0.001"
    assert str(btc.min_quantity) == "0.001" and str(btc.max_quantity) == "100.000"
    assert str(btc.min_notional) == "5.00000000 USDT"
    assert str(btc.maker_fee) == "0.0001" and str(btc.taker_fee) == "0.0006"
    eth = reg.get("ETHUSDT")
    assert str(eth.price_increment) == "0.05" and str(eth.min_quantity) == "0.01"
    sol = reg.get("SOLUSDT")  # shipped definition, fee from the fee-rate file
    assert str(sol.maker_fee) == "0.00025" and str(sol.taker_fee) == "0.00075"
    default = InstrumentRegistry().get("XRPUSDT")  # documented defaults without a fee file
    assert str(default.maker_fee) == "0.0002" and str(default.taker_fee) == "0.00055"
    assert str(default.price_increment) == "0.0001"
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"):
        assert InstrumentRegistry().get(sym).id.value == f"{sym}-LINEAR.BYBIT"


def test_unknown_symbol_says_how_to_add_it():
    with pytest.raises(InstrumentDefinitionError, match="--instruments FILE"):
        InstrumentRegistry().get("TSLAUSDT")
    reg = InstrumentRegistry([FIX / "http_get_instruments_linear_symbol_type.json"])
    assert str(reg.get("TSLAUSDT").price_increment) == "0.01"


# --- crafted defects: kind and line ------------------------------------------------------------

def test_valid_stream_has_no_problems(tmp_path):
    deltas, _, log = load(write_ob(tmp_path, book_lines()))
    assert log.total() == {} and len(deltas) == 6


def test_gap_invalidates_book_until_next_snapshot(tmp_path):
    msgs = book_lines()
    msgs[3]["data"]["u"] = 200  # line 4: 102 -> 200
    msgs[4]["data"]["u"] = 201
    msgs[5]["data"]["u"] = 202
    snap2 = json.loads(json.dumps(msgs[0]))
    snap2["ts"] += 1000
    snap2["data"]["u"] = 500
    after = json.loads(json.dumps(msgs[1]))
    after["ts"] += 1000
    after["data"]["u"] = 501
    p = write_ob(tmp_path, msgs + [snap2, after])
    deltas, _, log = load(p)
    assert problems(log, p) == {"update_id_gap": [4], "dropped_in_gap": [5, 6]}
    # messages: snap, d101, d102, CLEAR (gap), snap2, d501
    assert [len(b) for b in deltas] == [5, 1, 1, 1, 5, 1]
    clear = deltas[3][0]
    assert clear.action == BookAction.CLEAR and clear.flags == F_LAST
    assert replay_never_crossed(deltas) == 0


def test_u_equal_one_is_a_snapshot(tmp_path):
    msgs = book_lines()
    msgs[3]["data"]["u"] = 1  # service restart: a full book with u=1
    msgs[4]["data"]["u"] = 2
    msgs[5]["data"]["u"] = 3
    deltas, _, log = load(write_ob(tmp_path, msgs))
    assert log.total() == {}
    assert deltas[3][0].action == BookAction.CLEAR and deltas[3][-1].flags == F_SNAPSHOT | F_LAST


def test_timestamp_backwards_is_reported_and_clamped(tmp_path):
    msgs = book_lines()
    msgs[2]["ts"] = msgs[1]["ts"] - 50
    p = write_ob(tmp_path, msgs)
    deltas, _, log = load(p)
    assert problems(log, p) == {"ts_backwards": [3]}
    ts_init = [b[0].ts_init for b in deltas]
    assert ts_init == sorted(ts_init)


def test_crossed_book_is_reported_and_never_imported(tmp_path):
    msgs = book_lines()
    msgs[2]["data"]["b"] = [["67000.50", "1.000"]]  # bid above best ask 67000.10
    p = write_ob(tmp_path, msgs)
    deltas, _, log = load(p)
    assert problems(log, p) == {"crossed_book": [3], "dropped_in_gap": [4, 5, 6]}
    assert replay_never_crossed(deltas) == 0


@pytest.mark.parametrize("bad", ["-1.000", "abc", "1e3"])
def test_negative_or_non_numeric_size(tmp_path, bad):
    msgs = book_lines()
    msgs[2]["data"]["b"] = [["67000.00", bad]]
    p = write_ob(tmp_path, msgs)
    _, _, log = load(p)
    assert problems(log, p) == {"bad_number": [3], "dropped_in_gap": [4, 5, 6]}


def test_delta_before_first_snapshot(tmp_path):
    msgs = book_lines()
    p = write_ob(tmp_path, msgs[1:3] + msgs[:1] + msgs[3:])
    deltas, _, log = load(p)
    # the snapshot (line 3) is older than the deltas before it, which is reported too
    assert problems(log, p) == {"delta_before_snapshot": [1, 2], "ts_backwards": [3], "update_id_gap": [4], "dropped_in_gap": [5, 6]}


def test_mixed_symbols(tmp_path):
    msgs = book_lines()
    eth = book_lines("ETHUSDT")[1]
    p = write_ob(tmp_path, msgs[:3] + [eth] + msgs[3:])
    deltas, _, log = load(p)
    assert problems(log, p) == {"mixed_symbol": [4]}
    assert len(deltas) == 6


def test_malformed_and_truncated_lines(tmp_path):
    msgs = book_lines()
    p = write_ob(tmp_path, msgs, raw_lines={2: '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":17'})
    _, _, log = load(p)
    # the truncated line is lost, so the next delta exposes the gap it leaves
    assert problems(log, p) == {"malformed_line": [3], "update_id_gap": [4], "dropped_in_gap": [5, 6]}


def test_bad_zip_is_rejected(tmp_path):
    p = tmp_path / "2024-06-03_BTCUSDT_ob50.data.zip"
    p.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImportRejected, match="bad_archive"):
        load(p)


def test_zip_member_is_read(tmp_path):
    src = write_ob(tmp_path, book_lines())
    z = tmp_path / "zipped" / (src.name + ".zip")
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(src, src.name)
    deltas, _, log = load(z)
    assert log.total() == {} and len(deltas) == 6


def test_empty_file_is_reported(tmp_path):
    p = tmp_path / "2024-06-03_BTCUSDT_ob50.data"
    p.write_text("")
    deltas, _, log = load(p)
    assert deltas == [] and problems(log, p) == {"empty_file": [0]}


def test_strict_mode_raises_on_first_problem(tmp_path):
    msgs = book_lines()
    msgs[3]["data"]["u"] = 999
    with pytest.raises(ImportRejected, match=r":4: update_id_gap"):
        load(write_ob(tmp_path, msgs), strict=True)


# --- recordings and trade files ----------------------------------------------------------------

def recording_lines():
    out = []
    for i, m in enumerate(book_lines()):
        m = dict(m)
        m["local_ts_ns"] = m["ts"] * 1_000_000 + 7_000_000
        out.append(m)
        if i == 2:
            out.append({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": m["ts"] + 1,
                        "data": [{"T": m["ts"] + 1, "s": "BTCUSDT", "S": "Sell", "v": "0.500", "p": "67000.00",
                                  "L": "MinusTick", "i": "9dc75fca-4bdd-4773-9f78-6f5d7ab2a110", "BT": False, "RPI": False},
                                 {"T": m["ts"] + 1, "s": "BTCUSDT", "S": "Buy", "v": "0.100", "p": "67000.10",
                                  "L": "PlusTick", "i": "0aa75fca-4bdd-4773-9f78-6f5d7ab2a111", "BT": False, "RPI": True}],
                        "local_ts_ns": (m["ts"] + 1) * 1_000_000 + 7_000_000})
    out.insert(0, {"success": True, "ret_msg": "subscribe", "conn_id": "x", "op": "subscribe"})
    return out


def test_recording_gz_with_trades_rpi_and_receive_times(tmp_path):
    p = tmp_path / "BTCUSDT_2024-06-03.jsonl.gz"
    with gzip.open(p, "wt") as f:
        for m in recording_lines():
            f.write(json.dumps(m) + "\n")
    deltas, trades, log = load(p)
    assert log.total() == {}
    assert log.files[str(p)].skipped == {"control_message": 1}
    assert len(deltas) == 6 and len(trades) == 1 and len(trades[0]) == 2
    sell, buy = trades[0]
    assert sell.aggressor_side == AggressorSide.SELLER and str(sell.price) == "67000.00" and str(sell.size) == "0.500"
    assert sell.ts_event == 1_717_372_800_201_000_000 and sell.ts_init == sell.ts_event + 7_000_000
    assert not is_rpi_trade_id(sell.trade_id.value) and is_rpi_trade_id(buy.trade_id.value)
    assert deltas[0][0].ts_init == deltas[0][0].ts_event + 7_000_000


def test_truncated_gzip_recording_imports_what_it_has(tmp_path):
    p = tmp_path / "rec.jsonl.gz"
    data = gzip.compress("".join(json.dumps(m) + "\n" for m in recording_lines()).encode())
    p.write_bytes(data[: len(data) * 2 // 3])  # a recorder killed mid-write
    deltas, _, log = load(p)
    assert "malformed_line" in log.files[str(p)].problems
    assert len(deltas) >= 1


TRADE_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"


def test_trade_csv_newest_first_with_rpi(tmp_path):
    rows = [
        "1717372801.5,BTCUSDT,Buy,0.010,67000.10,PlusTick,c3a1a0b8-0000-4000-8000-000000000002,6.7e+10,0.01,670.001,1",
        "1717372800.25,BTCUSDT,Sell,0.002,67000.00,MinusTick,c3a1a0b8-0000-4000-8000-000000000001,1.34e+10,0.002,134.0,0",
    ]
    p = tmp_path / "BTCUSDT2024-06-03.csv.gz"
    p.write_bytes(gzip.compress((TRADE_HEADER + ",RPI\n" + "\n".join(rows) + "\n").encode()))
    _, trades, log = load(p)
    assert log.total() == {}
    first, second = trades[0]
    assert first.ts_event == 1_717_372_800_250_000_000 and first.aggressor_side == AggressorSide.SELLER
    assert first.trade_id.value == "c3a1a0b8-0000-4000-8000-000000000001"
    assert second.trade_id.value == "RPI-c3a1a0b800004000800000000000" + "0002"
    assert str(second.size) == "0.010"


def test_trade_csv_bad_header_is_rejected(tmp_path):
    p = tmp_path / "BTCUSDT2024-06-03.csv"
    p.write_text("time,sym\n1,2\n")
    with pytest.raises(ImportRejected, match="bad_header"):
        load(p)


def test_unknown_instrument_is_rejected(tmp_path):
    p = write_ob(tmp_path, book_lines("PEPEUSDT"), name="2024-06-03_PEPEUSDT_ob50.data")
    with pytest.raises(ImportRejected, match="--instruments FILE"):
        load(p)


# --- funding history (GET /v5/market/funding/history) -------------------------------------------

FUNDING_FIXTURE = FIX / "http_get_funding_history.json"  # real response (see tests/fixtures/README.md)


def funding_body(rows: list, **envelope) -> dict:
    body = {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows}, "retExtInfo": {},
            "time": 1709891679050}
    body.update(envelope)
    return body


def funding_row(ts_ms: int | str = 1709884800000, rate: object = "0.0001", symbol: str = "BTCUSDT") -> dict:
    return {"symbol": symbol, "fundingRate": rate, "fundingRateTimestamp": str(ts_ms)}


def write_funding(tmp: Path, body: object, name: str = "BTCUSDT_funding_2024-03.json") -> Path:
    p = tmp / name
    p.write_text(body if isinstance(body, str) else json.dumps(body))
    return p


def load_funding(path: Path, strict: bool = False):
    log = ProblemLog(strict=strict)
    batches = list(iter_batches(path, InstrumentRegistry(), log))
    assert all(kind == "funding" for kind, _, _ in batches)
    return [u for _, _, items in batches for u in items], log


def test_real_funding_history_response(tmp_path):
    """The real Bybit body (newest first) -> two FundingRateUpdates, oldest first, exact rates."""
    p = tmp_path / "BTCUSDT_funding.json"
    shutil.copy(FUNDING_FIXTURE, p)
    updates, log = load_funding(p)
    assert log.total() == {}
    assert [(str(u.instrument_id), u.rate, u.ts_event, u.ts_init, u.next_funding_ns) for u in updates] == [
        ("BTCUSDT-LINEAR.BYBIT", Decimal("0.00015"), 1_709_856_000_000_000_000, 1_709_856_000_000_000_000, None),
        ("BTCUSDT-LINEAR.BYBIT", Decimal("0.0001"), 1_709_884_800_000_000_000, 1_709_884_800_000_000_000, None),
    ]
    assert log.files[str(p)].messages == 2 and log.files[str(p)].lines == 2


@pytest.mark.parametrize("name", ["BTCUSDT_funding.json", "BTCUSDT_funding_2024-03.json", "BTCUSDT_funding_page-2.json"])
def test_funding_file_names(name):
    from adapters.sources import classify

    assert classify(Path(name)) == ("funding", "BTCUSDT")


@pytest.mark.parametrize("name", ["funding.json", "http_get_funding_history.json", "BTCUSDT_funding.json.gz",
                                  "btcusdt_funding.json"])
def test_other_json_names_are_not_funding_files(name):
    from adapters.sources import UnknownFormat, classify

    with pytest.raises(UnknownFormat, match="SYMBOL_funding"):
        classify(Path(name))


@pytest.mark.parametrize(
    ("row", "kind", "needle"),
    [
        (funding_row(rate="abc"), "bad_number", "not a decimal"),
        (funding_row(rate="NaN"), "bad_number", "not finite"),
        (funding_row(rate="inf"), "bad_number", "not finite"),
        (funding_row(rate="-Infinity"), "bad_number", "not finite"),
        (funding_row(rate=None), "bad_number", "not a decimal"),
        (funding_row(rate=True), "bad_number", "not a decimal"),
        (funding_row(rate="1.5"), "bad_number", "limit < 100%"),
        (funding_row(rate="-1"), "bad_number", "limit < 100%"),
        (funding_row(ts_ms="17098848000"), "bad_number", "seconds or"),  # seconds, not ms... x10
        (funding_row(ts_ms="1709884800"), "bad_number", "seconds or"),  # seconds
        (funding_row(ts_ms="1709884800000000"), "bad_number", "seconds or"),  # µs
        (funding_row(ts_ms="2024-03-08T08:00:00Z"), "bad_number", "not an integer count of ms"),
        (funding_row(ts_ms="-1709884800000"), "bad_number", "not an integer count of ms"),
        (funding_row(symbol="ETHUSDT"), "mixed_symbol", "'ETHUSDT' in a funding file of BTCUSDT"),
        ({"symbol": "BTCUSDT", "fundingRate": "0.0001"}, "malformed_line", "lacks fundingRateTimestamp"),
        ("0.0001", "malformed_line", "is not an object"),
    ],
)
def test_bad_funding_row_is_reported_with_file_and_position_and_dropped(tmp_path, row, kind, needle):
    good = [funding_row(1709856000000, "0.00015"), funding_row(1709827200000, "-0.0002")]
    p = write_funding(tmp_path, funding_body([good[0], row, good[1]]))
    updates, log = load_funding(p)
    assert [u.ts_event // 1_000_000 for u in updates] == [1709827200000, 1709856000000]  # the good rows, oldest first
    f = log.files[str(p)]
    assert dict(f.problems) == {kind: 1}
    assert f.problem_lines[kind] == [2]  # 1-based position in result.list
    assert "result.list[1]" in f.first_problem[kind] and needle in f.first_problem[kind]
    with pytest.raises(ImportRejected, match=rf"BTCUSDT_funding_2024-03.json:2: {kind}"):
        load_funding(p, strict=True)


def test_nan_literal_in_the_json_is_a_bad_rate(tmp_path):
    p = write_funding(tmp_path, '{"retCode":0,"result":{"category":"linear","list":['
                                '{"symbol":"BTCUSDT","fundingRate":NaN,"fundingRateTimestamp":"1709884800000"}]}}')
    updates, log = load_funding(p)
    assert updates == [] and log.files[str(p)].problem_lines["bad_number"] == [1]


def test_duplicate_settlement_same_rate_is_kept_once(tmp_path):
    rows = [funding_row(1709884800000, "0.0001"), funding_row(1709856000000, "0.00015"),
            funding_row(1709884800000, "0.0001")]
    p = write_funding(tmp_path, funding_body(rows))
    updates, log = load_funding(p)
    assert [(u.ts_event // 1_000_000, u.rate) for u in updates] == [(1709856000000, Decimal("0.00015")),
                                                                    (1709884800000, Decimal("0.0001"))]
    f = log.files[str(p)]
    assert dict(f.problems) == {"duplicate_timestamp": 1} and f.problem_lines["duplicate_timestamp"] == [3]
    assert "imported once" in f.first_problem["duplicate_timestamp"]


def test_duplicate_settlement_with_conflicting_rates_imports_neither(tmp_path):
    rows = [funding_row(1709884800000, "0.0001"), funding_row(1709856000000, "0.00015"),
            funding_row(1709884800000, "0.0003")]
    p = write_funding(tmp_path, funding_body(rows))
    updates, log = load_funding(p)
    assert [u.ts_event // 1_000_000 for u in updates] == [1709856000000]
    f = log.files[str(p)]
    assert f.problems["duplicate_timestamp"] == 2 and f.problem_lines["duplicate_timestamp"] == [1, 3]
    assert "conflicting rates" in f.first_problem["duplicate_timestamp"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not json", "not a JSON document"),
        ("[1, 2]", "not a Bybit v5 response object"),
        (funding_body([], retCode=10001, retMsg="params error"), "retCode 10001"),
        ({"retCode": 0, "result": {}}, "no result.list array"),
        ({"retCode": 0, "result": {"category": "inverse", "list": [funding_row()]}}, "category 'inverse'"),
    ],
)
def test_unusable_funding_response_rejects_the_file(tmp_path, body, needle):
    p = write_funding(tmp_path, body)
    with pytest.raises(ImportRejected, match=f"bad_header: .*{needle}"):
        load_funding(p)


def test_empty_funding_file_and_unknown_symbol(tmp_path):
    p = write_funding(tmp_path, "")
    updates, log = load_funding(p)
    assert updates == [] and "empty_file" in log.files[str(p)].problems
    p = write_funding(tmp_path, funding_body([funding_row(symbol="PEPEUSDT")]), name="PEPEUSDT_funding.json")
    with pytest.raises(ImportRejected, match="--instruments FILE"):
        load_funding(p)
