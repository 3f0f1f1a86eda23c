"""The simulator's exchange timeline (docs/queue_model.md, "Exchange timeline") and the defects of
issue 12 it fixes, each a hand-computed scenario on a low-level BacktestEngine
(tests/queue_harness.py). Times are ms after T0: ``x`` exchange time (``ts_event``), ``r`` local
receive time (``ts_init``). Each row of the scenario table in docs/queue_model.md is one test here.
"""

from __future__ import annotations

import random

import pytest
from nautilus_trader.model.enums import AggressorSide

from adapters.sim.exec_client import AMEND_NOT_FOUND, CANCEL_NOT_FOUND, POST_ONLY_REJECT, SimParams
from adapters.sim.fill_info import CAUSES
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from tests.queue_harness import BUY, SELL, _ns, book, run, snap, tr

S, B = AggressorSide.SELLER, AggressorSide.BUYER
MODELS = ["risk_averse", "prob_power", "prob_log"]


def params(model="risk_averse", order_ms=0.0, amend_ms=0.0, cancel_ms=0.0, resp_ms=10.0, **kw):
    return SimParams(model=QueueModel(model, 3), latency=LatencyModel(
        order=Latency("constant", order_ms), amend=Latency("constant", amend_ms),
        cancel=Latency("constant", cancel_ms), response=Latency("constant", resp_ms)), **kw)


def book0(x=0, r=0, bid_lots=11):
    """Bid 100.0 with ``bid_lots`` lots, 99.9 deep; asks 100.1 and 100.5 (BTCUSDT: 1 lot = 0.001)."""
    return snap(x, r, [(100.0, bid_lots / 1000), (99.9, 1.0)], [(100.1, 1.0), (100.5, 1.0)])


END = book(500, 500, (BUY, 99.9, 1.0))  # a last message so every alert before it fires
PLACE_BID = [(0, lambda st: st.place("a", BUY, 100.0, 0.001))]


# -- 1.4 exchange order ------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_book_update_received_before_its_trade_fills_nothing(model):
    """Table row 1.4a. Our 1-lot bid has 11 lots ahead. The exchange: a 10-lot sell at 100.0
    (x=50), then the book shows 11 -> 1 (x=50): the decrease is that trade, ahead 11 -> 1, no
    fill. The book message is received first (r=52) and the trade later (r=56). In receive order
    (old simulator) the decrease looked like 10 cancellations (ahead -> 1) and the trade then
    filled us: 1 lot that the exchange never filled. L_resp = 10 ms >= both feed latencies."""
    data = [book0(), book(50, 52, (BUY, 100.0, 0.001)), tr(50, 56, 100.0, 0.010, S), END]
    s, c, _ = run(PLACE_BID, data, params(model))
    assert s.fills("a") == []
    assert c.queue_ahead(s.orders["a"].client_order_id) == 1
    assert c.stats["late_events"] == 0 and c.stats["market_events"] == 4


def test_equal_timestamps_trade_before_book():
    """Table row 1.4b. Trade and book message with the same exchange AND receive time, the book
    row first in the data: the exchange order is trade (rank 0) then book (rank 1)."""
    data = [book0(), book(50, 50, (BUY, 100.0, 0.001)), tr(50, 50, 100.0, 0.010, S), END]
    s, _, _ = run(PLACE_BID, data, params(resp_ms=10.0))
    assert s.fills("a") == []
    # L_resp = 0 with no feed latency degenerates to receive order: each item is applied when
    # received (max(x + 0, r) = r), and the book row came first.
    s, _, _ = run(PLACE_BID, data, params(resp_ms=0.0))
    assert s.fills("a") == [(50.0, 0.001)]


def test_book_received_late_is_exchange_order_already():
    """Table row 1.4c: the trade is received first (r=52), the book late (r=70): receive order
    is exchange order, no fill either way."""
    data = [book0(), tr(50, 52, 100.0, 0.010, S), book(50, 70, (BUY, 100.0, 0.001)), END]
    s, c, _ = run(PLACE_BID, data, params(resp_ms=10.0))
    assert s.fills("a") == []
    assert c.stats["late_events"] == 1  # 70 > 50 + 10


def test_trade_received_after_the_exchange_passed_it_is_late_and_counted():
    """Table row 1.4d: L_resp = 5 ms < the trade's feed latency (56 - 50): the book message
    (due 55) is applied before the trade is received, the trade on receipt (late, counted): the
    receive-order fill of row 1.4a, the documented cost of a response latency below the feed's."""
    data = [book0(), book(50, 52, (BUY, 100.0, 0.001)), tr(50, 56, 100.0, 0.010, S), END]
    s, c, _ = run(PLACE_BID, data, params(resp_ms=5.0))
    assert s.fills("a") == [(56.0, 0.001)]
    assert c.stats["late_events"] == 1 and c.stats["late_reordered"] == 1


def test_responses_reach_the_strategy_after_the_response_latency_stamped_with_exchange_time():
    """Table row 1.4e. Order sent at 0 with entry 5 ms reaches the exchange at x=5 (ts_event),
    the ack arrives at 5 + 10 = 15 (local). A trade through our bid at x=20 (received r=23)
    fills at x=20, reported at 30."""
    data = [book0(), tr(20, 23, 99.9, 0.001, S), END]
    s, _, _ = run(PLACE_BID, data, params(order_ms=5.0, resp_ms=10.0))
    assert [(t, k, te) for t, k, _n, _q, _p, te in s.events] == [(15.0, "accepted", 5.0), (30.0, "filled", 20.0)]


def test_a_slow_feed_delivers_the_fill_on_receipt():
    """Table row 1.4f: the trade's feed latency (40 ms) exceeds L_resp (10): applied on receipt
    at 40, still stamped with its exchange time 0 + ... = x."""
    data = [book0(), tr(20, 60, 99.9, 0.001, S), END]
    s, c, _ = run(PLACE_BID, data, params(resp_ms=10.0))
    assert [(t, k, te) for t, k, _n, _q, _p, te in s.events] == [(10.0, "accepted", 0.0), (60.0, "filled", 20.0)]
    assert c.stats["late_events"] == 1


def test_command_arrivals_are_ordered_with_market_events_on_the_exchange_clock():
    """Table row 1.4g. The ask drops to 100.0 at x=8 (received r=30: slow feed). Our bid at
    100.0 sent at 0 with entry 10 ms arrives at x=10, after the ask moved: post-only reject,
    although the strategy's own book did not show the cross when it sent the order."""
    data = [book0(), book(8, 30, (SELL, 100.0, 0.5)), END]
    s, _, _ = run(PLACE_BID, data, params(order_ms=10.0, resp_ms=25.0))
    assert [(t, k, te) for t, k, _n, _q, _p, te in s.events] == [(35.0, "rejected_post_only", 10.0)]


def test_equal_exchange_time_market_event_before_our_arrival():
    """Conservative tie: a trade at the very exchange time our order arrives is matched first."""
    data = [book0(), tr(5, 5, 99.9, 0.001, S), tr(6, 6, 99.9, 0.001, S), END]
    s, _, _ = run(PLACE_BID, data, params(order_ms=5.0, resp_ms=0.0))
    assert s.fills("a") == [(6.0, 0.001)]


def test_a_stream_going_back_in_time_keeps_its_own_order():
    """Within one stream the stream's order wins: a book message stamped before the previous one
    (x 40 after 50) is applied after it (at x 50), so the level ends at the later message's size."""
    data = [book0(), book(50, 51, (BUY, 100.0, 0.005)), book(40, 52, (BUY, 100.0, 0.003)),
            tr(60, 61, 100.0, 0.004, S), END]
    s, c, _ = run(PLACE_BID, data, params(model="risk_averse", resp_ms=5.0))
    # ahead: 11 -> min(11, 5) = 5 -> min(5, 3) = 3; the 4-lot trade (x=60) fills our 1 lot at 65.
    assert s.fills("a") == [(65.0, 0.001)]


# -- receive clock behind the exchange clock (hostile review of issue 12, finding 1) ----------

@pytest.mark.parametrize(("order_ms", "arrive_ms", "clamped"), [(0.0, 50.0, 1), (15.0, 55.0, 0)])
def test_an_order_never_reaches_the_exchange_before_a_market_event_its_sender_saw(order_ms, arrive_ms, clamped):
    """Table row 1.4i. 50 lots join the 11 at our price at x=50, a message the strategy receives at
    r=40 (receive clock 10 ms behind the exchange's: ts_init < ts_event). Reacting to it, it sends
    a 1-lot bid. With entry latency 0 the order would be stamped x = 40 and queue behind 11 lots,
    before the message it reacted to; it arrives at max(40 + 0, 50) = 50 (after the message at
    an equal x: rank order), behind 61, and the 12-lot sell at x=70 fills nothing. With 15 ms
    entry latency 40 + 15 = 55 > 50: the rule does not bind. Both counters name what happened."""
    acts = [(40, lambda st: st.place("a", BUY, 100.0, 0.001))]
    data = [book0(), book(50, 40, (BUY, 100.0, 0.061)), tr(70, 70, 100.0, 0.012, S), END]
    s, c, _ = run(acts, data, params(order_ms=order_ms))
    assert [(k, te) for _t, k, _n, _q, _p, te in s.events] == [("accepted", arrive_ms)]
    assert c.queue_ahead(s.orders["a"].client_order_id) == 61 - 12
    assert c.stats["negative_feed_latency_events"] == 1 and c.stats["arrivals_after_seen_event"] == clamped


def test_a_command_sent_during_the_catch_up_does_not_wait_for_the_message_being_received(monkeypatch):
    """Table row 1.4j. ``x_seen`` counts a message only once the strategy can have seen it: the
    exchange first catches up to the message's receive time, and a command sent in reaction to an
    event of that catch-up was sent before the message reached the strategy. Bid a rests; a sell
    through it at x=20 fills it at local 30 (L_resp 10), during the catch-up of a message received
    at r=30 but stamped x=45 (clock behind). The strategy answers the fill with bid b (entry 0):
    b arrives at x=30, not 45."""
    import tests.queue_harness as H

    class OnFill(H.Scripted):
        def on_order_filled(self, e):
            super().on_order_filled(e)
            if "b" not in self.orders:
                self.place("b", BUY, 99.5, 0.001)

    monkeypatch.setattr(H, "Scripted", OnFill)
    data = [book0(), tr(20, 20, 99.9, 0.001, S), book(45, 30, (BUY, 99.8, 1.0)), END]
    s, c, _ = run(PLACE_BID, data, params())
    assert [(t, k, n, te) for t, k, n, _q, _p, te in s.events] == [
        (10.0, "accepted", "a", 0.0), (30.0, "filled", "a", 20.0), (40.0, "accepted", "b", 30.0)]
    assert c.stats["arrivals_after_seen_event"] == 0


# -- the run's end (hostile review of issue 12, finding 5) ---------------------------------------

def test_items_the_exchange_reached_before_the_end_are_applied_at_the_end():
    """Table row end. L_resp = 150 ms, the data (and the run) ends at 200. Bid a arrives at x=30
    (accepted at 180); a sell through it at x=100 would be applied at 250, after the end, where
    Nautilus fires no alert: the fill happened inside the window and was silently lost. With the
    run's end known (SimParams.end_ns, set by the backtest builder) every item with x <= 200 is
    applied at 200: the fill reaches the strategy at 200 stamped ts_event 100; the two book
    messages too (3 items applied at the end). Bid b sent at 180 arrives at 210 > 200: left,
    counted. Without a known end (live feeds) nothing is applied and the items left are counted
    when the client stops."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001)), (180, lambda st: st.place("b", BUY, 99.0, 0.001))]
    data = [book0(), tr(100, 100, 99.9, 0.001, S), book(180, 180, (BUY, 99.8, 1.0)), book(200, 200, (BUY, 99.7, 1.0))]
    s, c, _ = run(acts, data, params(order_ms=30.0, resp_ms=150.0, end_ns=_ns(200)))
    assert [(t, k, n, te) for t, k, n, _q, _p, te in s.events] == [(180.0, "accepted", "a", 30.0),
                                                                  (200.0, "filled", "a", 100.0)]
    assert (c.stats["applied_at_end"], c.stats["unapplied_at_end"]) == (3, 1)
    s, c, _ = run(acts, data, params(order_ms=30.0, resp_ms=150.0))
    assert s.fills() == [] and (c.stats["applied_at_end"], c.stats["unapplied_at_end"]) == (0, 4)


# -- lazy application == exact application ------------------------------------------------------

def _random_world(seed: int):
    rng = random.Random(seed)
    data = [book0(bid_lots=5)]
    t = 0.0
    for k in range(60):
        t += rng.uniform(0.5, 6.0)
        lat = rng.choice([0.0, 1.0, 3.0, 8.0, 15.0])
        if rng.random() < 0.4:
            px = rng.choice([99.9, 100.0, 100.0, 100.1])
            data.append(tr(t, t + lat, px, rng.randint(1, 6) / 1000, S if px <= 100.0 else B, str(k)))
        else:
            side, px = rng.choice([(BUY, 100.0), (BUY, 99.9), (SELL, 100.1), (SELL, 100.0), (BUY, 100.1)])
            q = rng.choice([0, 1, 3, 8, 12]) / 1000
            if side == SELL and px <= 100.0 and q == 0:
                q = 0.002
            data.append(book(t, t + lat, (side, px, q)))
    data.append(book(t + 100, t + 100, (BUY, 99.8, 1.0)))
    acts = []
    for k in range(12):
        at = rng.uniform(0, t)
        side, px = rng.choice([(BUY, 100.0), (BUY, 99.9), (SELL, 100.1), (SELL, 100.2)])
        name = f"o{k}"
        acts.append((at, lambda st, n=name, s=side, p=px: st.place(n, s, p, 0.002)))
        acts.append((at + rng.uniform(0, 40), lambda st, n=name: st.cancel(n)))
    return data, acts


@pytest.mark.parametrize("managed_book", [True, False])
def test_lazy_application_equals_an_alert_for_every_item(managed_book):
    """Items that cannot fill us are applied on the next wake-up instead of at their own due time;
    the events (local time, kind, exchange time, quantity) must be identical to waking the
    exchange for every item (``alert_all``), on random streams with late events (feed latency up
    to 15 ms > L_resp = 4 ms), post-only rejects, cancel races and fills of every cause. With and
    without a cache book (the two ways a book message's relevance is decided)."""
    total = {"fills": 0, "late_events": 0, "late_reordered": 0, "cancel_before_order": 0}
    causes = set()
    for seed in range(8):
        data, acts = _random_world(seed)
        p = dict(model="prob_power", order_ms=3.0, cancel_ms=2.0, resp_ms=4.0)
        lazy, cl, _ = run(acts, data, params(**p), managed_book=managed_book)
        exact, ce, _ = run(acts, data, params(**p), alert_all=True, managed_book=managed_book)
        assert lazy.events == exact.events, seed
        assert cl.stats == ce.stats, seed
        for k in total:
            total[k] += cl.stats[k]
        causes |= {c for c, n in cl.stats["fill_causes"].items() if n}
    assert min(total.values()) > 0, total
    assert causes == {"queue", "trade_through", "book_through"}


# -- 1.7a cancel before its own order -----------------------------------------------------------

def test_cancel_that_overtakes_its_order_is_rejected_and_the_order_rests():
    """Table row 1.7a. Order sent at 0 (entry 20 ms), cancel sent at 0 too (cancel latency 5):
    the cancel reaches the exchange at x=5, before the order (x=20): Bybit rejects it with 110001
    and the order rests when it arrives; a trade through it at x=40 fills it."""
    acts = [(0, lambda st: (st.place("a", BUY, 100.0, 0.001), st.cancel("a")))]
    data = [book0(), tr(40, 40, 99.9, 0.001, S), END]
    s, c, _ = run(acts, data, params(order_ms=20.0, cancel_ms=5.0, resp_ms=1.0))
    assert s.kinds() == [(6.0, "cancel_rejected", "a"), (21.0, "accepted", "a"), (41.0, "filled", "a")]
    assert s.cancel_reject_reasons == [CANCEL_NOT_FOUND]
    assert c.stats["cancel_before_order"] == 1


def test_cancel_after_a_fill_is_rejected_with_110001():
    """The fill (x=25) is still on its way (L_resp 10) when the strategy cancels at 30; the cancel
    reaches the exchange at 32, after the fill: rejected with 110001, reported at 42."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001)), (30, lambda st: st.cancel("a"))]
    data = [book0(), tr(25, 25, 99.9, 0.001, S), book(30, 30, (BUY, 99.9, 1.0)), END]
    s, c, _ = run(acts, data, params(cancel_ms=2.0, resp_ms=10.0))
    assert s.kinds() == [(10.0, "accepted", "a"), (35.0, "filled", "a"), (42.0, "cancel_rejected", "a")]
    assert s.cancel_reject_reasons == [CANCEL_NOT_FOUND] and c.stats["cancel_lost_race"] == 1


def test_query_order_is_answered_without_a_report():
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001)), (20, lambda st: st.query(st.orders["a"]))]
    s, c, _ = run(acts, [book0(), book(20, 20, (BUY, 99.9, 1.0)), END], params(resp_ms=0.0))
    assert c.stats["order_queries"] == 1 and s.kinds(False) == [("accepted", "a")]


# -- 1.6 post-only amend that would cross ------------------------------------------------------

def test_post_only_amend_that_would_cross_cancels_the_order():
    """Table row 1.6. Bybit: a PostOnly order that would take liquidity is cancelled by the
    matching engine (rejectReason EC_PostOnlyWillTakeLiquidity; Nautilus' Bybit adapter reports it
    as OrderRejected with due_post_only). Amending our bid to the ask (100.1) therefore ends the
    order: the later trade through 100.0 does not fill it (the old simulator rejected the amend
    and left the order resting, then filled it)."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001)), (10, lambda st: st.amend("a", px=100.1))]
    data = [book0(), book(10, 10, (BUY, 99.9, 1.0)), tr(30, 30, 99.9, 0.001, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.kinds() == [(0.0, "accepted", "a"), (10.0, "rejected_post_only", "a")]
    assert s.orders["a"].is_closed and c.stats["post_only_amend_rejects"] == 1


# -- own orders in the post-only check (hostile review of issue 12, finding 4) -----------------

def test_post_only_amend_onto_our_own_resting_order_cancels_it():
    """Table row own-cross. Market 100.0 / 100.3; our ask rests at 100.1 (inside the spread) and
    our bid at 100.0. The bid is amended to 100.1: on Bybit it would trade with our own ask (no
    self-match prevention by default, and SMP acts on takers only), so PostOnly cancels it
    (EC_PostOnlyWillTakeLiquidity). A control bid amended from 99.8 to 99.9 (below our ask) is
    moved. The old check read only the market book (which never holds our orders): the bid was
    moved to 100.1 and the two sells/buys at 100.1 then filled both own orders (a wash trade
    paying two maker fees)."""
    acts = [(0, lambda st: (st.place("ask", SELL, 100.1, 0.001), st.place("bid", BUY, 100.0, 0.001),
                            st.place("low", BUY, 99.8, 0.001))),
            (20, lambda st: (st.amend("bid", px=100.1), st.amend("low", px=99.9)))]
    data = [snap(0, 0, [(100.0, 0.5), (99.9, 1.0)], [(100.3, 0.5), (100.4, 1.0)]), book(20, 20, (BUY, 99.9, 1.1)),
            tr(40, 40, 100.1, 0.001, S), tr(50, 50, 100.1, 0.001, B), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert ("rejected_post_only", "bid") in s.kinds(False) and ("updated", "low") in s.kinds(False), s.events
    assert s.fills("bid") == [] and s.fills("ask") == [(50.0, 0.001)], s.events
    assert c.stats["post_only_own_cross_rejects"] == 1 and c.stats["post_only_amend_rejects"] == 1


def test_amend_of_an_order_not_yet_at_the_exchange_is_rejected_with_110001():
    acts = [(0, lambda st: (st.place("a", BUY, 100.0, 0.001), st.amend("a", qty=0.002)))]
    s, _, _ = run(acts, [book0(), END], params(order_ms=10.0, amend_ms=1.0, resp_ms=0.0))
    assert s.kinds(False) == [("modify_rejected", "a"), ("accepted", "a")]
    reasons = [e for e in s.events if e[1] == "modify_rejected"]
    assert reasons and AMEND_NOT_FOUND.startswith("110001")


# -- 1.2 unknown depth -------------------------------------------------------------------------

def test_order_beyond_the_visible_depth_queues_behind_what_appears():
    """Table row 1.2a. Our 2-lot bid at 99.5 is beyond the deepest visible bid (99.9): unknown
    queue. 50 lots become visible at 99.5 later: queue ahead = 50, and a 1-lot sell at 99.5 must
    not fill us (the old simulator kept the front of the queue and filled 1 lot)."""
    acts = [(0, lambda st: st.place("a", BUY, 99.5, 0.002))]
    data = [book0(), book(10, 10, (BUY, 99.5, 0.050)), tr(20, 20, 99.5, 0.001, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == []
    assert c.queue_ahead(s.orders["a"].client_order_id) == 49  # 50 shown, 1 traded
    assert c.stats["unknown_depth_joins"] == 1


def test_unknown_depth_no_queue_fill_but_trade_through_fills():
    """Table row 1.2b: while the level is not visible a trade AT our price fills nothing; a trade
    THROUGH it fills (up to the print's size: 2 lots of a 2-lot print)."""
    acts = [(0, lambda st: st.place("a", BUY, 99.5, 0.002))]
    data = [book0(), tr(10, 10, 99.5, 0.005, S), tr(20, 20, 99.4, 0.002, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == [(20.0, 0.002)]
    assert c.stats["fill_causes"]["trade_through"] == 1


def test_price_inside_the_visible_range_but_absent_has_known_size_zero():
    """Table row 1.2c: 99.8 lies between the best bid 100.0 and the deepest 99.7 with no level:
    queue ahead 0 (known), so a 1-lot sell there fills 1 lot."""
    acts = [(0, lambda st: st.place("a", BUY, 99.8, 0.002))]
    data = [snap(0, 0, [(100.0, 0.011), (99.7, 1.0)], [(100.1, 1.0)]), tr(10, 10, 99.8, 0.001, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == [(10.0, 0.001)]
    assert c.stats["unknown_depth_joins"] == 0


def test_level_deleted_beyond_the_visible_depth_keeps_its_queue():
    """Table row 1.2d: our bid at 99.9 (the deepest level, 1000 lots ahead). The feed deletes
    99.9 and shows nothing deeper: the level left the visible depth (not emptied), so the queue
    is frozen at 1000 instead of 0; a 5-lot sell at 99.9 fills nothing."""
    acts = [(0, lambda st: st.place("a", BUY, 99.9, 0.002))]
    data = [book0(), book(10, 10, (BUY, 99.9, 0.0)), tr(20, 20, 99.9, 0.005, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == []
    assert c.queue_ahead(s.orders["a"].client_order_id) == 1000


def test_book_clear_does_not_put_us_at_the_front():
    """A CLEAR (the loaders invalidate a book on a gap) empties the exchange book: our level is
    unknown until the next snapshot shows it, not 'size 0, front of the queue'."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001))]
    data = [book0(bid_lots=11), snap(10, 10, [], []), snap(20, 20, [(100.0, 0.011), (99.9, 1.0)], [(100.1, 1.0)]),
            tr(30, 30, 100.0, 0.002, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == []
    assert c.queue_ahead(s.orders["a"].client_order_id) == 9


def test_clear_makes_a_known_empty_level_unknown():
    """Table row 1.2f: bid at 99.8 inside the visible range, absent (known 0). A CLEAR empties the
    book: until a snapshot shows the price again it is unknown, so a sell at 99.8 fills nothing
    from the queue (at known size 0 it would have filled 1 lot)."""
    acts = [(0, lambda st: st.place("a", BUY, 99.8, 0.002))]
    data = [snap(0, 0, [(100.0, 0.011), (99.7, 1.0)], [(100.1, 1.0)]), snap(10, 10, [], []),
            tr(20, 20, 99.8, 0.001, S), END]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    assert s.fills("a") == []
    assert c.queue_ahead(s.orders["a"].client_order_id) == 0  # frozen at the known 0


# -- sizes: one conversion ---------------------------------------------------------------------

def test_visible_sizes_convert_to_lots_one_way():
    """Table row "sizes". 100 bid levels of random sizes; an order joins each: its queue ahead is
    the level's size in whole lots EXACTLY (raw integer arithmetic), and after a delta to another
    random (smaller) size, risk_averse caps it at exactly that size in lots. The old join path
    divided floats (``size() / float(size_increment)``) and differed from the delta path for ~16 %
    of sizes (e.g. 0.123 BTC -> 122.99999999999999 lots)."""
    rng = random.Random(5)
    n = 100  # Nautilus' RiskEngine allows 100 submits per second
    prices = [round(99.0 - 0.1 * k, 1) for k in range(n)]
    sizes = [rng.randint(1, 999_999) for _ in range(n)]  # lots (0.001 BTC)
    smaller = [rng.randint(0, sz) for sz in sizes]
    bids = [(p, q / 1000) for p, q in zip(prices, sizes, strict=True)] + [(80.0, 1.0)]
    acts = [(0, lambda st: [st.place(f"o{k}", BUY, p, 0.001) for k, p in enumerate(prices)])]
    changes = [(BUY, p, q / 1000) for p, q in zip(prices, smaller, strict=True) if q > 0]
    data = [snap(0, 0, bids, [(100.1, 1.0)])]
    s, c, _ = run(acts, data, params(resp_ms=0.0))
    got = [c.queue_ahead(s.orders[f"o{k}"].client_order_id) for k in range(n)]
    assert got == sizes
    assert all(type(a) is int for a in got)
    s, c, _ = run(acts, [*data, book(10, 10, *changes)], params(resp_ms=0.0))
    got = [c.queue_ahead(s.orders[f"o{k}"].client_order_id) for k in range(n) if smaller[k] > 0]
    assert got == [q for q in smaller if q > 0]


# -- 3 fill attribution ------------------------------------------------------------------------

def test_fill_info_precedes_each_fill_with_its_cause():
    """Table rows "attribution". Three orders, one fill per cause:
    - a: bid 100.0 behind 2 lots; 3-lot sell at 100.0 (x=20): queue (ahead consumed, then us);
    - b: bid 99.9 (1000 ahead): a sell at 99.8 (x=30) prints through it: trade_through;
    - c: ask 100.5 (1000 ahead): with no trade the asks move up to 100.7 and a bid appears at
      100.5 (x=40): the best bid reaches our ask, book_through, triggered by that book message.
    Each FillInfo arrives on the bus immediately before its OrderFilled, with the same trade id,
    the exchange time of the triggering event and the extra slippage (1 bps of notional)."""
    acts = [(0, lambda st: (st.place("a", BUY, 100.0, 0.001), st.place("b", BUY, 99.9, 0.001),
                            st.place("c", SELL, 100.5, 0.001)))]
    data = [book0(bid_lots=2), tr(20, 21, 100.0, 0.003, S), tr(30, 31, 99.8, 0.001, S),
            book(40, 41, (SELL, 100.1, 0.0), (SELL, 100.5, 0.0), (SELL, 100.7, 0.5), (BUY, 100.5, 0.2)), END]
    s, c, _ = run(acts, data, params(resp_ms=2.0, extra_slippage_bps=1.0))
    fills = [(n, te, q) for _t, k, n, q, _p, te in s.events if k == "filled"]
    assert fills == [("a", 20.0, 0.001), ("b", 30.0, 0.001), ("c", 40.0, 0.001)]
    infos = s.fill_infos
    assert [i.cause for i in infos] == ["queue", "trade_through", "book_through"]
    assert [(i.ts_trigger_ns - infos[0].ts_trigger_ns) // 1_000_000 for i in infos] == [0, 10, 20]
    assert [i.slippage_quote for i in infos] == pytest.approx([0.001 * p * 1e-4 for p in (100.0, 99.9, 100.5)])
    assert s.sequence == [x for i in infos for x in (("fill_info", i.trade_id), ("filled", i.trade_id))]
    assert c.stats["fill_causes"] == {"queue": 1, "trade_through": 1, "book_through": 1, "other": 0}
    assert set(c.stats["fill_causes"]) == set(CAUSES)


def test_post_only_reject_reason_is_bybits():
    data = [book0(), END]
    s, _, _ = run([(0, lambda st: st.place("a", BUY, 100.1, 0.001))], data, params(resp_ms=0.0))
    assert s.kinds(False) == [("rejected_post_only", "a")] and POST_ONLY_REJECT == "EC_PostOnlyWillTakeLiquidity"
