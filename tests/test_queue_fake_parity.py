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
