"""Issue 12 item 1.6: a PostOnly amend to a crossing price ends the order in BOTH the loopback
exchange (tools/fake_bybit/matching.py) and the queue simulator (tests/test_queue_timeline.py::
test_post_only_amend_that_would_cross_cancels_the_order). Bybit's v5 Place Order documentation:
"PostOnly: If the order would be filled immediately when submitted, it will be cancelled ... If
the matching system cannot entrust the order to the order book due to price changes on the
market, it will be cancelled" (its Amend Order page: a PostOnly spot order that becomes a taker
after the modification is Rejected). The order update carries rejectReason
EC_PostOnlyWillTakeLiquidity, which Nautilus' Bybit adapter turns into OrderRejected(due_post_only)."""

from __future__ import annotations

from decimal import Decimal as D

from nautilus_trader.model.enums import AggressorSide

from adapters.sim.exec_client import SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from tests.queue_harness import BUY, SELL, book, run, snap, tr
from tools.fake_bybit.matching import Engine, Instrument

INST = Instrument("BTCUSDT", D("0.1"), D("0.001"), D("0.001"), D("100"), D("5"))


def engine() -> Engine:
    e = Engine(INST, maker_fee=D("0.0002"), taker_fee=D("0.00055"))
    e.on_book("snapshot", {"b": [["100.0", "1.0"], ["99.9", "1.0"]], "a": [["100.1", "1.0"]], "u": 1, "seq": 1})
    return e


def test_fake_post_only_amend_to_a_crossing_price_cancels_the_order():
    e = engine()
    o, ev = e.submit(side="Buy", order_type="Limit", qty=D("0.002"), price=D("100.0"), tif="PostOnly", link_id="a")
    assert o.is_open and [k for k, _ in ev] == ["order"]
    events = e.amend(o, None, D("100.1"))  # the ask is at 100.1: would take liquidity
    assert [k for k, _ in events] == ["order"]
    msg = events[0][1]
    assert (msg.status, msg.reject_reason, msg.leaves) == ("Cancelled", "EC_PostOnlyWillTakeLiquidity", D(0))
    assert (msg.price, msg.qty) == (D("100.0"), D("0.002"))  # the amend never took effect
    assert not o.is_open and e.open_orders() == []
    assert e.on_trade("Sell", D("99.9"), D("0.001")) == []  # a trade through 100.0 no longer fills it
    assert e.executions == []


def test_fake_post_only_amend_that_does_not_cross_moves_the_order():
    e = engine()
    o, _ = e.submit(side="Buy", order_type="Limit", qty=D("0.002"), price=D("100.0"), tif="PostOnly", link_id="a")
    [(kind, msg)] = e.amend(o, None, D("99.9"))
    assert kind == "order" and msg.status == "New" and msg.price == D("99.9") and o.is_open


def _market_100_0_100_3() -> Engine:
    e = Engine(INST, maker_fee=D("0.0002"), taker_fee=D("0.00055"))
    e.on_book("snapshot", {"b": [["100.0", "0.5"], ["99.9", "1.0"]], "a": [["100.3", "0.5"], ["100.4", "1.0"]],
                           "u": 1, "seq": 1})
    return e


def test_fake_post_only_order_crossing_our_own_resting_order_is_cancelled():
    """Hostile review of issue 12, finding 4, on the loopback exchange (the simulator's side:
    tests/test_hostile_issue12.py::test_post_only_order_crossing_our_own_resting_order_is_accepted
    and tests/test_queue_timeline.py::test_post_only_amend_onto_our_own_resting_order_cancels_it).
    Our ask rests at 100.1 inside the 100.0 / 100.3 market: a PostOnly bid at 100.1 (submit) and a
    bid amended to 100.1 would trade with it, so both are cancelled EC_PostOnlyWillTakeLiquidity;
    a bid at 100.0 (below our ask) rests."""
    e = _market_100_0_100_3()
    ask, _ = e.submit(side="Sell", order_type="Limit", qty=D("0.001"), price=D("100.1"), tif="PostOnly", link_id="ask")
    bid, ev = e.submit(side="Buy", order_type="Limit", qty=D("0.001"), price=D("100.1"), tif="PostOnly", link_id="bid")
    assert (bid.status, bid.reject_reason) == ("Cancelled", "EC_PostOnlyWillTakeLiquidity") and ask.is_open
    low, _ = e.submit(side="Buy", order_type="Limit", qty=D("0.001"), price=D("100.0"), tif="PostOnly", link_id="low")
    assert low.is_open
    [(kind, msg)] = e.amend(low, None, D("100.1"))
    assert (kind, msg.status, msg.reject_reason, msg.price) == ("order", "Cancelled", "EC_PostOnlyWillTakeLiquidity",
                                                                D("100.0"))
    assert e.on_trade("Sell", D("100.1"), D("0.001")) == [] and e.executions == []  # nothing left to wash-trade


# -- fill size when the book or a print goes through our price (hostile review of issue 12, #3) --
# Each scenario runs on both exchanges: the queue simulator (tests/queue_harness.py, zero
# latencies) and the loopback matching engine, fed the same messages. Both must give the same
# fills, each bounded by the opposite size that crossed (docs/queue_model.md, table rows "book-
# through size" and Q3).

def _sim_params() -> SimParams:
    z = Latency("constant", 0.0)
    return SimParams(model=QueueModel("risk_averse", 3), latency=LatencyModel(order=z, amend=z, cancel=z, response=z))


def _sim_fills(acts, data) -> tuple[list[tuple[str, float, float]], list]:
    s, c, _ = run(acts, data, _sim_params())
    return [(n, t, q) for t, k, n, q, *_ in s.events if k == "filled"], s.kinds(False)


def _fake_fill_list(e: Engine, times: dict[int, float]) -> list[tuple[str, float, float]]:
    return [(x.order.link_id, times[x.seq], float(x.qty)) for x in e.executions]


SNAP = {"b": [["100.0", "0.011"], ["99.9", "1.0"]], "a": [["100.1", "1.0"], ["100.5", "1.0"]], "u": 1, "seq": 1}
SNAP_LEVELS = ([(100.0, 0.011), (99.9, 1.0)], [(100.1, 1.0), (100.5, 1.0)])
X50 = [(BUY, 100.0, 0.0), (BUY, 99.9, 0.0), (BUY, 99.8, 1.0), (SELL, 99.9, 0.004), (SELL, 100.0, 0.002)]


def _delta(changes) -> dict:
    return {"b": [[f"{p}", f"{q}"] for side, p, q in changes if side == BUY],
            "a": [[f"{p}", f"{q}"] for side, p, q in changes if side == SELL]}


def test_book_through_fills_at_most_the_crossing_size_in_price_then_time_priority_on_both_exchanges():
    """Bids a (3 lots) and b (2 lots) at 100.0, c (2 lots) at 99.9. At x=50 the bids go and asks of
    4 lots at 99.9 and 2 lots at 100.0 appear: 6 lots at or below 100.0, 4 at or below 99.9.
    Price then time priority, each opposite lot once, the best (lowest) ask first: a 3 (from 99.9),
    b 2 (1 from 99.9, 1 from 100.0), c 0 (99.9 used up). A message at x=60 elsewhere changes
    nothing (the lots we took stay taken while their level is unchanged). At x=65 a new bid at
    100.0 is refused post-only (1 lot left at 100.0) while one at 99.9 rests (99.9 is used up: the
    best AVAILABLE ask is 100.0). At x=70 the 99.9 ask changes to 6 lots: available again, c 2 and
    d 1. The old rule filled every crossed order in full (a, b and c at x=50: 7 lots from 6)."""
    acts = [(0, lambda st: (st.place("a", BUY, 100.0, 0.003), st.place("b", BUY, 100.0, 0.002),
                            st.place("c", BUY, 99.9, 0.002))),
            (65, lambda st: (st.place("e", BUY, 100.0, 0.001), st.place("d", BUY, 99.9, 0.001)))]
    msgs = [(50, X50), (60, [(SELL, 100.5, 2.0)]), (65, [(BUY, 99.7, 1.0)]), (70, [(SELL, 99.9, 0.006)])]
    data = [snap(0, 0, *SNAP_LEVELS)] + [book(t, t, *ch) for t, ch in msgs] + [book(500, 500, (BUY, 99.6, 1.0))]
    expected = [("a", 50.0, 0.003), ("b", 50.0, 0.002), ("c", 70.0, 0.002), ("d", 70.0, 0.001)]
    sim, kinds = _sim_fills(acts, data)
    assert sim == expected
    assert ("rejected_post_only", "e") in kinds and ("accepted", "d") in kinds

    e = Engine(INST, maker_fee=D("0.0002"), taker_fee=D("0.00055"))
    e.on_book("snapshot", SNAP)
    times: dict[int, float] = {}
    for name, px, qty in (("a", "100.0", "0.003"), ("b", "100.0", "0.002"), ("c", "99.9", "0.002")):
        assert e.submit(side="Buy", order_type="Limit", qty=D(qty), price=D(px), tif="PostOnly", link_id=name)[0].is_open
    for t, changes in msgs:
        e.on_book("delta", _delta(changes))
        if t == 65:
            rej, _ = e.submit(side="Buy", order_type="Limit", qty=D("0.001"), price=D("100.0"), tif="PostOnly", link_id="e")
            ok, _ = e.submit(side="Buy", order_type="Limit", qty=D("0.001"), price=D("99.9"), tif="PostOnly", link_id="d")
            assert (rej.status, rej.reject_reason) == ("Cancelled", "EC_PostOnlyWillTakeLiquidity") and ok.is_open
        times.update({x.seq: float(t) for x in e.executions if x.seq not in times})
    assert _fake_fill_list(e, times) == expected


def test_trade_through_fills_at_most_the_print_in_price_priority_on_both_exchanges():
    """Bid a (2 lots) at 100.0; bid b (2 lots) at 99.9 behind 1 lot. A 3-lot sell at 99.9 (x=20)
    reaches a first (better price): a 2; the 1 lot left consumes the lot ahead of b, b 0. A 2-lot
    sell at 99.9 (x=30) then fills b. The old rules filled a in full without using the print, and
    b 2 from the same print (4 lots from a 3-lot print), on both exchanges."""
    acts = [(0, lambda st: (st.place("a", BUY, 100.0, 0.002), st.place("b", BUY, 99.9, 0.002)))]
    levels = ([(100.0, 0.011), (99.9, 0.001)], SNAP_LEVELS[1])
    data = [snap(0, 0, *levels), tr(20, 20, 99.9, 0.003, AggressorSide.SELLER, "1"),
            tr(30, 30, 99.9, 0.002, AggressorSide.SELLER, "2"), book(500, 500, (BUY, 99.6, 1.0))]
    expected = [("a", 20.0, 0.002), ("b", 30.0, 0.002)]
    assert _sim_fills(acts, data)[0] == expected

    e = Engine(INST, maker_fee=D("0.0002"), taker_fee=D("0.00055"))
    e.on_book("snapshot", {**SNAP, "b": [["100.0", "0.011"], ["99.9", "0.001"]]})
    for name, px in (("a", "100.0"), ("b", "99.9")):
        e.submit(side="Buy", order_type="Limit", qty=D("0.002"), price=D(px), tif="PostOnly", link_id=name)
    times: dict[int, float] = {}
    for t, size in ((20, "0.003"), (30, "0.002")):
        e.on_trade("Sell", D("99.9"), D(size))
        times.update({x.seq: float(t) for x in e.executions if x.seq not in times})
    assert _fake_fill_list(e, times) == expected
