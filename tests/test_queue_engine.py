"""QueueSimExecutionClient on a low-level BacktestEngine (tests/queue_harness.py): hand-computed
fill times and quantities per scenario and queue model, latency races, Nautilus accounting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.enums import AggressorSide

from adapters.sim.exec_client import SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from tests.queue_harness import BUY, SELL, run
from tests.test_strategy_scenarios import snapshot, trade, update

S, B = AggressorSide.SELLER, AggressorSide.BUYER
MODELS = ["risk_averse", "prob_power", "prob_log"]


def params(model="prob_power", order_ms=0.0, amend_ms=0.0, cancel_ms=0.0, **kw):
    return SimParams(model=QueueModel(model, 3), latency=LatencyModel(
        order=Latency("constant", order_ms), amend=Latency("constant", amend_ms),
        cancel=Latency("constant", cancel_ms)), **kw)


# 10 lots at our bid 100.0; the ask at 100.5 puts 100.2 inside the visible range (known size 0:
# docs/queue_model.md, "Unknown depth").
BOOK0 = snapshot(0, [(100.0, 0.010), (99.9, 1.0)], [(100.1, 1.0), (100.5, 1.0)])


@pytest.mark.parametrize("model", MODELS)
def test_place_at_10_then_4_traded_then_6_cancelled(model):
    # place 2 lots at 100.0 (ahead 10), arrives at t=5; trade 4 (ahead 6), book 10 -> 6 (the
    # trade), book 6 -> 0 (6 cancelled: ahead capped at 0, no fill); trade 3 at t=50 fills 2.
    data = [BOOK0, trade(30, 100.0, 0.004, S, "1"), update(31, (BUY, 100.0, 0.006)),
            update(40, (BUY, 100.0, 0.0)), trade(50, 100.0, 0.003, S, "2"), update(60, (BUY, 99.9, 1.0))]
    s, c, e = run([(0, lambda st: st.place("a", BUY, 100.0, 0.002))], data, params(model, order_ms=5))
    assert s.events[0][:2] == (5.0, "accepted")
    assert s.fills("a") == [(50.0, 0.002)]


@pytest.mark.parametrize("model", MODELS)
def test_trade_through_fills_at_most_the_print(model):
    """Table row Q3. A 1-lot sell at 99.9 below our 3-lot bid at 100.0 fills 1 lot (the print's
    size: each lot of it trades once, and it reached our better price first), a later 5-lot sell
    at 99.9 the 2 left (the old rule filled all 3 lots on the 1-lot print)."""
    data = [BOOK0, trade(20, 99.9, 0.001, S, "1"), trade(25, 99.9, 0.005, S, "2"), update(30, (BUY, 99.9, 1.0))]
    s, c, _ = run([(0, lambda st: st.place("a", BUY, 100.0, 0.003))], data, params(model))
    assert s.fills("a") == [(20.0, 0.001), (25.0, 0.002)]
    assert c.stats["fill_causes"]["trade_through"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_partial_fills_from_the_trade_remaining_size(model):
    # sell at 100.2: an empty level (ahead 0); buyer trades of 1 then 5 lots at 100.2
    data = [BOOK0, trade(20, 100.2, 0.001, B, "1"), trade(30, 100.2, 0.005, B, "2"), update(40, (BUY, 99.9, 1.0))]
    s, _, _ = run([(0, lambda st: st.place("a", SELL, 100.2, 0.003))], data, params(model))
    assert s.fills("a") == [(20.0, 0.001), (30.0, 0.002)]


@pytest.mark.parametrize("model", MODELS)
def test_own_orders_fifo(model):
    data = [BOOK0, trade(20, 100.2, 0.003, B, "1"), trade(30, 100.2, 0.003, B, "2"), update(40, (BUY, 99.9, 1.0))]
    acts = [(0, lambda st: (st.place("a", SELL, 100.2, 0.002), st.place("b", SELL, 100.2, 0.002)))]
    s, _, _ = run(acts, data, params(model))
    assert s.fills("a") == [(20.0, 0.002)]
    assert s.fills("b") == [(20.0, 0.001), (30.0, 0.001)]


@pytest.mark.parametrize(("amend", "ahead_after"), [
    (dict(qty=0.001), 10.0),         # size decrease keeps priority
    (dict(qty=0.003), 30.0),         # size increase: back of the queue (level now 30)
    (dict(px=99.9), 1000.0),         # new price: back of the 99.9 queue (1000 lots)
])
def test_amend_priority(amend, ahead_after):
    data = [BOOK0, update(10, (BUY, 100.0, 0.030)), update(20, (BUY, 99.9, 1.0)), update(30, (BUY, 99.9, 1.0))]
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.002)), (20, lambda st: st.amend("a", **amend))]
    s, c, e = run(acts, data, params("risk_averse"))
    assert [k for _, k, *_ in s.events] == ["accepted", "updated"]
    coid = s.orders["a"].client_order_id
    assert c.queue_ahead(coid) == pytest.approx(ahead_after)


def test_cancel_racing_a_fill_loses_under_latency():
    # cancel sent at t=20 takes 10 ms; a 2-lot trade-through at t=25 fills the 2-lot order first;
    # cancel rejected at 30
    data = [BOOK0, update(20, (BUY, 99.9, 1.0)), trade(25, 99.9, 0.002, S, "1"), update(40, (BUY, 99.9, 1.0))]
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.002)), (20, lambda st: st.cancel("a"))]
    s, c, _ = run(acts, data, params(cancel_ms=10))
    assert [(t, k) for t, k, *_ in s.events] == [(0.0, "accepted"), (25.0, "filled"), (30.0, "cancel_rejected")]
    # without the race (cancel instant) the order is canceled and never filled
    s, _, _ = run(acts, data, params(cancel_ms=0))
    assert [(t, k) for t, k, *_ in s.events] == [(0.0, "accepted"), (20.0, "canceled")]


def test_post_only_cross_under_latency():
    # buy at 100.0 sent at t=0 with 10 ms latency; at t=5 the ask drops to 100.0: rejected at 10
    data = [BOOK0, update(5, (SELL, 100.0, 0.5)), update(20, (BUY, 99.9, 1.0))]
    s, c, _ = run([(0, lambda st: st.place("a", BUY, 100.0, 0.002))], data, params(order_ms=10))
    assert [(t, k) for t, k, *_ in s.events] == [(10.0, "rejected_post_only")]
    s, _, _ = run([(0, lambda st: st.place("a", BUY, 100.0, 0.002))], data, params(order_ms=0))
    assert [k for _, k, *_ in s.events][0] == "accepted"


def test_fills_are_booked_by_nautilus_account_and_position():
    # buy 2 lots at 100.0 (trade-through at 20), sell 2 at 100.2 (buyer trade at 30)
    data = [BOOK0, trade(20, 99.9, 0.002, S, "1"), update(25, (BUY, 99.9, 1.0)), trade(30, 100.2, 0.005, B, "2"),
            update(40, (BUY, 99.9, 1.0))]
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.002)), (25, lambda st: st.place("b", SELL, 100.2, 0.002))]
    s, c, e = run(acts, data, params(extra_slippage_bps=1.0))
    assert s.fills() == [(20.0, 0.002), (30.0, 0.002)]
    acc = e.cache.account(c.account_id)
    pnl = 0.002 * 0.2
    fees = (0.002 * 100.0 + 0.002 * 100.2) * (0.0002 + 0.0001)
    assert acc.balance_total(USDT).as_double() == pytest.approx(100_000 + pnl - fees, abs=1e-8)
    assert all(p.is_closed for p in e.cache.positions())


@settings(max_examples=8, deadline=None)
@given(lat_ms=st.integers(0, 40), t_trade=st.integers(1, 50))
def test_no_fill_before_the_order_reaches_the_exchange(lat_ms, t_trade):
    data = [BOOK0, trade(t_trade, 99.8, 0.002, S, "1"), update(60, (BUY, 99.9, 1.0))]
    s, _, _ = run([(0, lambda st: st.place("a", BUY, 100.0, 0.002))], data, params(order_ms=lat_ms))
    fills = s.fills("a")
    # A trade stamped at the very nanosecond the order arrives is matched first (the
    # conservative tie rule, docs/queue_model.md): the order only sees later trades.
    if t_trade <= lat_ms:
        assert fills == []
    else:
        assert fills == [(float(t_trade), 0.002)]
