"""Order-book update-id gaps (issue 13 item 11) in every mode.

- Live: Nautilus' Bybit parser puts Bybit's ``seq`` into ``sequence`` and the update id ``u`` into
  each level's order id; ``adapters.bybit_live_book.BookUpdateIds`` (inside mmbot's live data
  client) hands the data engine batches in the catalog importer's shape (``sequence`` = ``u``,
  snapshots flagged) and replaces a gap by the importer's marker until the next snapshot.
- Backtests of recordings: ``adapters.bybit_book.BookStream`` (``mmbot catalog import``) does the same
  from the raw frames.

Both directions against the stale-data guard with ``check_sequence`` on and off: a gap pulls the
quotes until a fresh snapshot; a clean stream never trips it. The end-to-end test runs ``mmbot live``
against the loopback fake with its ``gap_book`` fault.
"""

from __future__ import annotations

import time

import pytest
from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas
from nautilus_trader.model.enums import BookAction, OrderSide, RecordFlag

from adapters.bybit_live_book import BookUpdateIds
from strategies.risk.stale_data import StaleDataConfig, StaleDataGuard
from tests.test_risk_scenarios import RiskHarness
from tests.test_strategy_scenarios import IID, INSTRUMENT, MS, T0, _px, _qty

F_LAST, F_SNAPSHOT, F_MBP = int(RecordFlag.F_LAST), int(RecordFlag.F_SNAPSHOT), int(RecordFlag.F_MBP)
BUY, SELL = OrderSide.BUY, OrderSide.SELL
BIDS = [(100000.0, 1.0), (99999.0, 2.0)]
ASKS = [(100000.2, 1.0), (100001.0, 2.0)]


def nautilus_msg(t_ms: int, u: int, seq: int, snapshot: bool, levels: list[tuple]) -> OrderBookDeltas:
    """One Bybit book message as Nautilus 1.231's Rust parser builds it (parse_orderbook_deltas):
    ``sequence`` = seq on every delta, ``u`` in each level's order id, F_MBP on the levels, F_LAST on
    the last, a snapshot led by ``OrderBookDelta.clear`` (the only delta flagged F_SNAPSHOT)."""
    ts = T0 + t_ms * MS
    out = [OrderBookDelta.clear(IID, seq, ts, ts)] if snapshot else []
    for k, (side, px, sz) in enumerate(levels):
        action = BookAction.DELETE if sz == 0 else BookAction.ADD if snapshot else BookAction.UPDATE
        flags = F_MBP | (F_LAST if k == len(levels) - 1 else 0)
        out.append(OrderBookDelta(IID, action, BookOrder(side, _px(px), _qty(sz), u), flags, seq, ts, ts))
    return OrderBookDeltas(IID, out)


def _snap_levels(bid_size: float = 1.0) -> list[tuple]:
    return [(BUY, BIDS[0][0], bid_size), (BUY, *BIDS[1]), (SELL, *ASKS[0]), (SELL, *ASKS[1])]


def live_stream(n: int, u0: int = 5_000_000, skip: set[int] = frozenset(), resnap: dict | None = None):
    """A snapshot then ``n`` deltas (each changes the best bid size) every 100 ms; ``u`` steps by
    one except the indices in ``skip``; ``seq`` jumps by a few hundred (Bybit's cross sequence);
    ``resnap`` {index: u}: a fresh snapshot (the re-subscription) instead of that delta."""
    msgs, u, seq = [nautilus_msg(0, u0, 170_000_000_000, True, _snap_levels())], u0, 170_000_000_000
    for i in range(1, n + 1):
        u += 2 if i in skip else 1
        seq += 137 + 31 * (i % 7)
        if resnap and i in resnap:
            u = resnap[i]
            msgs.append(nautilus_msg(100 * i, u, seq, True, _snap_levels(1.0 + i / 1000)))
        else:
            msgs.append(nautilus_msg(100 * i, u, seq, False, [(BUY, BIDS[0][0], 1.0 + i / 1000)]))
    return msgs


def _as_lists(batch: OrderBookDeltas) -> list[OrderBookDelta]:
    return list(batch.deltas)


# -- BookUpdateIds: the live client's normalisation -------------------------------------------------


def test_live_book_ids_clean_stream_has_importer_shape_and_no_gap():
    ids = BookUpdateIds()
    outs = [ids.on_deltas(m) for m in live_stream(30)]
    assert all(gap is None for _, gap in outs) and ids.gaps == 0 and ids.dropped == 0
    batches = [o for o, _ in outs]
    assert [b.sequence for b in batches] == list(range(5_000_000, 5_000_031))  # u, consecutive
    snap = _as_lists(batches[0])
    assert snap[0].action == BookAction.CLEAR and all(d.flags & F_SNAPSHOT for d in snap)
    assert all(d.sequence == 5_000_000 for d in snap) and snap[-1].flags & F_LAST
    assert not any(d.flags & F_SNAPSHOT for b in batches[1:] for d in b.deltas)
    # Levels, prices, sizes and timestamps are untouched.
    raw = live_stream(30)[7].deltas[0]
    out = batches[7].deltas[0]
    assert (out.action, out.order.side, out.order.price, out.order.size, out.ts_event, out.ts_init) == \
        (raw.action, raw.order.side, raw.order.price, raw.order.size, raw.ts_event, raw.ts_init)


def test_live_book_ids_update_keeps_every_row_and_carries_u_where_it_is_read():
    """An update of several rows: only its last delta is rebuilt (``sequence`` = u, read as the
    batch's sequence and by the cached book); every row keeps its action, level, size, flags and
    times, and the book built from the output is the book built from the input."""
    from nautilus_trader.model.book import OrderBook
    from nautilus_trader.model.enums import BookType

    ids = BookUpdateIds()
    ids.on_deltas(live_stream(0)[0])
    raw = nautilus_msg(100, 5_000_001, 170_000_000_137, False,
                       [(BUY, BIDS[0][0], 1.5), (BUY, 99998.0, 3.0), (SELL, ASKS[1][0], 0), (SELL, 100001.5, 4.0)])
    out, gap = ids.on_deltas(raw)
    assert gap is None and out.sequence == 5_000_001 and out.flags & F_LAST and not out.flags & F_SNAPSHOT
    rd, od = raw.deltas, out.deltas
    assert len(od) == len(rd) == 4 and od[-1].sequence == 5_000_001
    for a, b in zip(rd, od, strict=True):
        assert (a.action, a.order.side, a.order.price, a.order.size, a.order.order_id, a.flags, a.ts_event,
                a.ts_init) == (b.action, b.order.side, b.order.price, b.order.size, b.order.order_id, b.flags,
                               b.ts_event, b.ts_init)
    books = []
    for msg in (raw, out):
        book = OrderBook(IID, BookType.L2_MBP)
        book.apply_deltas(live_stream(0)[0])
        book.apply_deltas(msg)
        books.append((book.bids()[0].price, book.bids()[0].size(), [(lv.price, lv.size()) for lv in book.asks()]))
    assert books[0] == books[1]


@pytest.mark.parametrize("how", ["skip", "repeat", "older"])
def test_live_book_ids_gap_becomes_the_importer_marker_until_a_snapshot(how):
    msgs = live_stream(10, resnap={8: 6_000_000})
    if how == "skip":
        msgs = live_stream(10, skip={4}, resnap={8: 6_000_000})
    elif how == "repeat":
        msgs[4] = nautilus_msg(400, 5_000_003, 1, False, [(BUY, BIDS[0][0], 1.5)])
    else:
        msgs[4] = nautilus_msg(400, 4_999_000, 1, False, [(BUY, BIDS[0][0], 1.5)])
    ids = BookUpdateIds()
    outs = [ids.on_deltas(m) for m in msgs]
    assert [gap is not None for _, gap in outs] == [i == 4 for i in range(11)]
    marker = _as_lists(outs[4][0])
    assert len(marker) == 1 and marker[0].action == BookAction.CLEAR and marker[0].flags == F_LAST
    assert outs[4][1][1] == 5_000_003  # the last good u
    assert [o is None for o, _ in outs[5:8]] == [True] * 3 and ids.dropped == 3  # until the snapshot
    assert outs[8][0].sequence == 6_000_000 and outs[8][0].flags & F_SNAPSHOT
    assert [o.sequence for o, _ in outs[9:]] == [6_000_001, 6_000_002]


def _split(msg: OrderBookDeltas) -> OrderBookDeltas:
    """``msg`` without F_LAST on its last delta: the first part of a message split over batches."""
    dl = list(msg.deltas)
    d = dl[-1]
    dl[-1] = OrderBookDelta(d.instrument_id, d.action, d.order, d.flags & ~F_LAST, d.sequence, d.ts_event, d.ts_init)
    return OrderBookDeltas(msg.instrument_id, dl)


def test_live_book_ids_split_message_is_a_gap_never_a_half_applied_book():
    """The live data engine publishes each batch as it comes (``buffer_deltas`` off since the
    live CPU work, docs/benchmarks.md "Live on loopback"): a batch whose last delta lacks F_LAST
    would reach the strategy as half a message. It is a gap (the importer's marker, quotes pulled,
    fresh snapshot); a split snapshot is not taken as one. Old code: the split update was handed on
    (``gap`` None, its rows published) and a split snapshot made the book valid."""
    msgs = live_stream(6, resnap={5: 6_000_000})
    ids = BookUpdateIds()
    outs = [ids.on_deltas(m) for m in msgs[:3]]
    out, gap = ids.on_deltas(_split(msgs[3]))
    assert gap == (5_000_003, 5_000_002) and ids.gaps == 1 and not ids.valid
    assert [(d.action, d.flags) for d in out.deltas] == [(BookAction.CLEAR, F_LAST)]  # the marker
    assert ids.on_deltas(msgs[4]) == (None, None)  # until the snapshot
    assert ids.on_deltas(_split(msgs[5])) == (None, None) and not ids.valid  # half a snapshot: no book
    out, gap = ids.on_deltas(msgs[5])
    assert gap is None and ids.valid and out.sequence == 6_000_000 and out.flags & F_SNAPSHOT
    assert all(g is None for _, g in outs) and ids.on_deltas(msgs[6])[0].sequence == 6_000_001


def test_live_book_ids_drop_deltas_before_the_first_snapshot():
    ids = BookUpdateIds()
    msgs = live_stream(3)
    assert ids.on_deltas(msgs[1]) == (None, None) and ids.on_deltas(msgs[2]) == (None, None)
    out, gap = ids.on_deltas(msgs[0])
    assert gap is None and out.sequence == 5_000_000
    assert ids.on_deltas(msgs[1])[0].sequence == 5_000_001


# -- the stale-data guard on live-shaped and imported streams ---------------------------------------


def _guard_run(batches, check_sequence: bool, tmp_path):
    g = StaleDataGuard(StaleDataConfig(instrument_id=IID, max_book_age_ms=60_000, check_sequence=check_sequence))
    h = RiskHarness(tmp_path / f"audit-{check_sequence}.jsonl", [g])
    states, quoting = [], []
    try:
        for b in batches:
            if b is None:
                continue
            h.step(list(b.deltas))
            states.append(g.guard_state)
            quoting.append(bool(h.bids()) and bool(h.asks()))
        reasons = [t.reason for t in h.sup.transitions if t.guard == "stale_data"]
    finally:
        h.close()
    return states, quoting, reasons


def _via_live_client(msgs):
    ids = BookUpdateIds()
    return [ids.on_deltas(m)[0] for m in msgs]


@pytest.mark.parametrize("check_sequence", [True, False])
def test_live_guard_clean_stream_never_invalid(tmp_path, check_sequence):
    # On main the live client handed Nautilus' batches as they come (sequence = Bybit's seq): with
    # check_sequence = true the second batch already counted as a gap and the bot never quoted.
    # A reconnect's snapshot (u jumps, Bybit's u == 1 restart too) is no gap.
    for resnap in ({}, {10: 8_000_000}, {10: 1}):
        states, quoting, reasons = _guard_run(_via_live_client(live_stream(20, resnap=resnap)), check_sequence,
                                              tmp_path)
        assert set(states) == {"ACTIVE"} and reasons == [], (resnap, reasons)
        assert all(quoting[1:])


@pytest.mark.parametrize("check_sequence", [True, False])
def test_live_guard_gap_pulls_quotes_until_the_resubscription_snapshot(tmp_path, check_sequence):
    # On main a skipped u went unnoticed with check_sequence = false (the book silently wrong).
    msgs = live_stream(14, skip={5}, resnap={9: 7_000_000})
    states, quoting, reasons = _guard_run(_via_live_client(msgs), check_sequence, tmp_path)
    # batches handed on: 0-4 normal, 5 = the marker, 6-8 dropped, 9 = the snapshot, 10-14 normal
    assert states == ["ACTIVE"] * 5 + ["INVALID"] + ["ACTIVE"] * 6, states
    assert quoting[5] is False and all(quoting[7:])
    assert len(reasons) == 2 and reasons[1] == "fresh snapshot"


def _bybit_frames(n: int, skip: set[int] = frozenset(), snapshot_at: dict | None = None):
    """Raw Bybit frames (the recording's ``data``) for ``adapters.bybit_book.BookStream``."""
    fmt = lambda levels: [[f"{p:.1f}", f"{s:.3f}"] for p, s in levels]  # noqa: E731
    frames, u = [(True, 0, {"u": 9_000_000, "b": fmt(BIDS), "a": fmt(ASKS)})], 9_000_000
    for i in range(1, n + 1):
        u += 2 if i in skip else 1
        if snapshot_at and i in snapshot_at:
            u = snapshot_at[i]
            frames.append((True, 100 * i, {"u": u, "b": fmt([(BIDS[0][0], 1.0 + i / 1000), BIDS[1]]), "a": fmt(ASKS)}))
        else:
            frames.append((False, 100 * i, {"u": u, "b": fmt([(BIDS[0][0], 1.0 + i / 1000)]), "a": []}))
    return frames


def _imported(frames) -> list[OrderBookDeltas | None]:
    from adapters.bybit_book import BookStream
    from adapters.problems import ProblemLog

    stream = BookStream(INSTRUMENT, ProblemLog(), "<test>")
    out = []
    for k, (snap, t_ms, data) in enumerate(frames):
        rows = stream.on_message(snap, (T0 // MS) + t_ms, data, T0 + t_ms * MS, k + 1)
        out.append(OrderBookDeltas(IID, rows) if rows else None)
    return out


@pytest.mark.parametrize("check_sequence", [True, False])
def test_recording_replay_guard_both_directions(tmp_path, check_sequence):
    # The importer's sequence is Bybit's u: a clean recording passes check_sequence ...
    for snapshot_at in ({}, {10: 9_700_000}):  # a reconnect's snapshot in the recording is no gap
        states, quoting, reasons = _guard_run(_imported(_bybit_frames(20, snapshot_at=snapshot_at)), check_sequence,
                                              tmp_path)
        assert set(states) == {"ACTIVE"} and reasons == [] and all(quoting[1:]), (snapshot_at, reasons)
    # ... and a gap in it pulls the quotes until the next snapshot, as live does.
    states, quoting, reasons = _guard_run(_imported(_bybit_frames(14, skip={5}, snapshot_at={9: 9_500_000})),
                                          check_sequence, tmp_path)
    assert states == ["ACTIVE"] * 5 + ["INVALID"] + ["ACTIVE"] * 6, states
    assert reasons[-1] == "fresh snapshot"


# -- end to end: mmbot live against the fake's gap_book fault --------------------------------------


def test_live_e2e_book_gap_pulls_quotes_resubscribes_and_resumes(tmp_path):
    from tests.recordings import generate_recording
    from tests.test_live_e2e import Fake, Live, metric

    fake = Fake(tmp_path, generate_recording(tmp_path / "rec.jsonl", 2, 7))
    live = Live(tmp_path, fake, extra=["--set", "risk.stale_data.check_sequence=true", "--set", "live.record=false"])
    invalid = 'guard="stale_data",new_state="INVALID"'
    try:
        # check_sequence = true on a clean stream: the bot quotes (on main it never did) ...
        live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes with check_sequence = true")
        time.sleep(3)
        text = live.metrics()
        assert not metric(text, "mmbot_guard_transitions_total", invalid) >= 1, "false gap on a clean stream"
        assert metric(text, "mmbot_book_gaps_total") == 0
        snapshots = metric(text, "mmbot_book_snapshots_total")
        # ... a skipped update id pulls the quotes, re-subscribes, and quoting resumes.
        fake.fault("gap_book")
        live.wait_for(lambda: metric(live.metrics(), "mmbot_book_gaps_total") >= 1, 30, "the gap in the metrics")
        live.wait_for(lambda: metric(live.metrics(), "mmbot_guard_transitions_total", invalid) >= 1, 10,
                      "stale_data INVALID")
        live.wait_for(lambda: metric(live.metrics(), "mmbot_book_snapshots_total") > snapshots, 15,
                      "the re-subscription snapshot")
        live.wait_for(lambda: metric(live.metrics(), "mmbot_guard_state", 'guard="stale_data",state="ACTIVE"') == 1,
                      15, "stale_data ACTIVE again")
        before = len(fake.state()["orders"])
        live.wait_for(lambda: len(fake.state()["orders"]) > before and fake.state()["open_orders"], 30,
                      "quoting resumed")
        assert live.terminate() == 0
        assert [f["kind"] for f in fake.state()["faults"]["fired"]] == ["gap_book"]
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        fake.stop()
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"new_state":"INVALID"' in audit and "sequence gap" in audit
