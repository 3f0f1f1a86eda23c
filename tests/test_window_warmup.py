"""Windows that start between two book snapshots (hostile review of issue 12, finding 2;
docs/config.md, "Windows between snapshots"). The replay starts at the last snapshot at or before
the window's start so the books hold every level; the strategy ignores what it receives before the
start and the report counts nothing before it. Proof: a window starting on a delta message gives
the same fills, orders, equity and PnL as the same window of a recording where that message is
replaced by a snapshot of the book it produced (a window that starts on a snapshot needs no
warm-up). Without the warm-up the window's book holds only the levels updated since its start:
prices absent from it count as size 0, the front of the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mmbot.backtest.run import resolve_window, snapshot_before
from mmbot.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
XRP = "XRPUSDT-LINEAR.BYBIT"
T0_MS = 1_733_038_200_000  # 2024-12-01T07:30:00Z
K_START = 50  # the delta message the window starts on (t0 + 1 s)


def test_embedded_catalog_windows_warm_up_from_the_last_snapshot():
    """The embedded XRPUSDT hour has snapshots at 07:30:00.006848 and 08:00:00.006031 (the
    resubscribe). 07:45 and 08:20 start between them: the replay starts at the earlier one.
    08:00:00.000 needs none: the first book row of the window is the 08:00 snapshot. The catalog's
    own start needs none."""
    cat = ROOT / "catalog"
    snap_0730, snap_0800 = 1_733_038_200_006_848_000, 1_733_040_000_006_031_000
    assert resolve_window(cat, XRP, "2024-12-01T07:45:00Z", "2024-12-01T07:46:00Z").warmup_from_ns == snap_0730
    assert resolve_window(cat, XRP, "2024-12-01T08:20:00Z", "2024-12-01T08:21:00Z").warmup_from_ns == snap_0800
    w = resolve_window(cat, XRP, "2024-12-01T08:00:00Z", "2024-12-01T08:01:00Z")
    assert (w.warmup_from_ns, w.replay_start_ns) == (0, w.start_ns)
    assert snapshot_before(cat, XRP, w.start_ns) == (snap_0730, True)
    assert resolve_window(cat, XRP, "", "2024-12-01T07:31:00Z").warmup_from_ns == 0
    w = resolve_window(cat, XRP, "2024-12-01T08:00:00.007Z", "2024-12-01T08:01:00Z")
    assert (w.warmup_from_ns, w.from_snapshot) == (snap_0800, True)


def _book_lines(with_snapshot_at: int | None, deltas_before_first_snapshot: bool = False) -> list[dict]:
    """XRPUSDT ob50 recording: a snapshot at t0 (bids 1.9500 ... 1.9490, asks 1.9501 ... 1.9511,
    5,000 XRP each), then a delta every 20 ms for 6 s resizing only the DEEPEST level of each side
    (so a book built from the deltas alone lacks the touch), 100 XRP sold at 1.9500 at t0 + 2 s
    and bought at 1.9501 at t0 + 2.2 s (a quote at the touch behind 5,000 is not reached; one at
    the front of the queue is), then 5,300 XRP sold at 1.9500 at t0 + 3.5 s and bought at 1.9501
    at t0 + 4.5 s (each takes what is ahead and a 200 XRP quote at the touch). ``with_snapshot_at``: delta message k replaced by a snapshot of the book
    after it (same stamps, ``u``). ``deltas_before_first_snapshot``: no snapshot at t0 at all."""
    bids = {f"{1.9500 - k * 0.0001:.4f}": "5000" for k in range(11)}
    asks = {f"{1.9501 + k * 0.0001:.4f}": "5000" for k in range(11)}
    local = 3_000_000  # 3 ms feed latency

    def snap(ts: int, u: int) -> dict:
        return {"topic": "orderbook.50.XRPUSDT", "type": "snapshot", "ts": ts, "cts": ts,
                "data": {"s": "XRPUSDT", "b": [[p, q] for p, q in bids.items()], "a": [[p, q] for p, q in asks.items()],
                         "u": u, "seq": u}, "local_ts_ns": ts * 10**6 + local}

    lines = [] if deltas_before_first_snapshot else [snap(T0_MS, 1000)]
    for k in range(1, 301):
        ts = T0_MS + 20 * k
        size = "5001" if k % 2 else "5000"
        bids["1.9490"], asks["1.9511"] = size, size
        if k == with_snapshot_at:
            lines.append(snap(ts, 1000 + k))
        else:
            lines.append({"topic": "orderbook.50.XRPUSDT", "type": "delta", "ts": ts, "cts": ts,
                          "data": {"s": "XRPUSDT", "b": [["1.9490", size]], "a": [["1.9511", size]], "u": 1000 + k,
                                   "seq": 1000 + k}, "local_ts_ns": ts * 10**6 + local})
        for at_k, side, px, qty in ((100, "Sell", "1.9500", "100"), (110, "Buy", "1.9501", "100"),
                                    (175, "Sell", "1.9500", "5300"), (225, "Buy", "1.9501", "5300")):
            if k == at_k:
                lines.append({"topic": "publicTrade.XRPUSDT", "type": "snapshot", "ts": ts + 5,
                              "data": [{"T": ts + 5, "s": "XRPUSDT", "S": side, "v": qty, "p": px, "L": "ZeroPlusTick",
                                        "i": f"00000000-0000-4000-8000-{at_k:012d}", "BT": False, "RPI": False,
                                        "seq": 9000 + at_k}], "local_ts_ns": (ts + 5) * 10**6 + 2_000_000})
    return lines


def _catalog(tmp_path: Path, name: str, lines: list[dict]) -> Path:
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths

    rec = tmp_path / name / "XRPUSDT.jsonl"
    rec.parent.mkdir(parents=True)
    rec.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    import_paths([rec], tmp_path / name / "cat", InstrumentRegistry())
    return tmp_path / name / "cat"


def _run(tmp_path: Path, catalog: Path, name: str, start_ns: int, end_ns: int) -> Path:
    out = tmp_path / name / "run"
    r = CliRunner().invoke(main, ["backtest", "run", "--catalog", str(catalog), "--start", str(start_ns),
                                  "--end", str(end_ns), "--no-progress", "--out", str(out),
                                  "--set", "report.html=false", "--set", "risk.enabled=false",
                                  "--set", "strategy.levels_per_side=1", "--set", "strategy.imbalance_cutoff=1.0",
                                  "--set", "venue.order_latency_ms=0"])
    assert r.exit_code == 0, (name, r.output, repr(r.exception))
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame, drop: tuple[str, ...] = ()) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=list(drop)), b.drop(columns=list(drop)))


@pytest.mark.slow
def test_a_window_starting_on_a_delta_equals_the_same_window_starting_on_a_snapshot(tmp_path):
    """Window [t0 + 1 s, t0 + 6 s] of the recording above, starting on delta message 50 (A: warm-up
    from the t0 snapshot), against the same window of the recording where message 50 is a snapshot
    of the book it produced (C: no warm-up needed). Same fills (two queue fills at the touch),
    orders, equity grid and PnL; report.json says where A's replay started. The only differences
    allowed: the simulator's venue order ids (a counter over every message, warm-up included) and
    order times within a few ns (a snapshot message has more rows: ts_init + row index)."""
    cat_a = _catalog(tmp_path, "deltas", _book_lines(None))
    cat_c = _catalog(tmp_path, "snapshot", _book_lines(K_START))
    start = (T0_MS + 20 * K_START) * 10**6 + 3_000_000  # message 50's receive time (its first row)
    end = (T0_MS + 6000) * 10**6
    assert resolve_window(cat_a, XRP, str(start), str(end)).warmup_from_ns == T0_MS * 10**6 + 3_000_000
    assert resolve_window(cat_c, XRP, str(start), str(end)).warmup_from_ns == 0
    a, c = _run(tmp_path, cat_a, "deltas", start, end), _run(tmp_path, cat_c, "snapshot", start, end)
    fills_a, fills_c = pd.read_parquet(a / "fills.parquet"), pd.read_parquet(c / "fills.parquet")
    assert len(fills_a) == 2 and set(fills_a["cause"]) == {"queue"}, fills_a
    _same(fills_a, fills_c, drop=("venue_order_id",))
    orders_a, orders_c = pd.read_parquet(a / "orders.parquet"), pd.read_parquet(c / "orders.parquet")
    times = ["ts_init_ns", "ts_accepted_ns", "ts_last_ns"]
    _same(orders_a, orders_c, drop=tuple(times))
    assert ((orders_a[times] - orders_c[times]).abs() <= 100).all().all()
    assert (orders_a["ts_init_ns"] >= start).all()  # nothing quoted during the warm-up
    _same(pd.read_parquet(a / "equity.parquet"), pd.read_parquet(c / "equity.parquet"))
    rep_a, rep_c = (json.loads((d / "report.json").read_text()) for d in (a, c))
    for section in ("pnl", "counts", "attribution", "simulator", "strategy"):
        assert rep_a["metrics"][section] == rep_c["metrics"][section], section
    assert rep_a["metadata"]["data_range"] == rep_c["metadata"]["data_range"]
    assert rep_a["metadata"]["warmup"] == {"replay_from_ns": T0_MS * 10**6 + 3_000_000,
                                           "replay_from": "2024-12-01T07:30:00.003Z", "from_snapshot": True}
    assert "warmup" not in rep_c["metadata"]


def test_a_recording_that_starts_mid_stream_warms_up_from_its_first_snapshot(tmp_path):
    """A recording that starts mid-stream (deltas first: the importer drops them until its first
    snapshot, message 50 here): a window after that snapshot warms up from it; the catalog's own
    range starts at it (no warm-up)."""
    cat = _catalog(tmp_path, "mid", _book_lines(K_START, deltas_before_first_snapshot=True))
    snap_ns = (T0_MS + 20 * K_START) * 10**6 + 3_000_000
    w = resolve_window(cat, XRP, str(snap_ns + 500_000_000), str(snap_ns + 1_000_000_000))
    assert (w.warmup_from_ns, w.from_snapshot) == (snap_ns, True)
    w = resolve_window(cat, XRP, "", str(snap_ns + 1_000_000_000))
    assert (w.start_ns, w.warmup_from_ns) == (snap_ns, 0)


def test_a_catalog_without_any_snapshot_warms_up_from_its_first_row(tmp_path):
    """Deltas written by another tool with no CLEAR at all: the book at any start is only what the
    catalog's rows since its first one built, so the replay starts there (``from_snapshot`` False
    in report.json's ``warmup``)."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta
    from nautilus_trader.model.enums import BookAction, OrderSide, RecordFlag
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    from tests.test_strategy_scenarios import IID, INSTRUMENT, _px, _qty

    t0 = T0_MS * 10**6
    rows = [OrderBookDelta(IID, BookAction.UPDATE, BookOrder(OrderSide.BUY, _px(100.0 - k * 0.1), _qty(1.0), 0),
                           RecordFlag.F_LAST.value, k, t0 + k * 10**9, t0 + k * 10**9) for k in range(10)]
    from mmbot.catalog_store import VERSION_FILE, _version_record

    catalog = ParquetDataCatalog(str(tmp_path / "cat"))
    catalog.write_data([INSTRUMENT])
    catalog.write_data(rows)
    (tmp_path / "cat" / VERSION_FILE).write_text(json.dumps(_version_record()))
    w = resolve_window(tmp_path / "cat", IID.value, str(t0 + 5 * 10**9), str(t0 + 8 * 10**9))
    assert (w.warmup_from_ns, w.from_snapshot) == (t0, False)
    assert snapshot_before(tmp_path / "cat", IID.value, t0 + 5 * 10**9) == (None, False)
