"""Hostile review of issue 12: attacks the defences withstood (they pass on ``integrate``
07624f4). Kept because they are cheap (well under 1 s per case) and cover what the scenario
tables do not: random event orders and latencies against the worst-case inventory limit, amend /
cancel storms against the simulator's bookkeeping, and a burst of trades in one millisecond.
The failing attacks are in tests/test_hostile_issue12.py.

Each check was seen to catch a deliberately broken build (monkeypatched in a subprocess, then
reverted): planner exposure counting only the ladder slots -> the inventory test fails (seeds
2, 3, 5); one extra lot on every queue fill -> 10 of 12 storm seeds fail; ``Level.reduce`` a
no-op (an amend down keeps its old leaves in the queue) -> 6 of 12 storm seeds fail.
"""

from __future__ import annotations

import random

import pytest
from nautilus_trader.model.data import BookOrder, OrderBookDelta, TradeTick
from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide
from nautilus_trader.model.identifiers import TradeId

from adapters.sim.exec_client import SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from tests.queue_harness import BUY, SELL, _ns, book, run, snap, tr
from tests.test_strategy_scenarios import F_LAST, F_SNAPSHOT, IID, MS, T0, QsimHarness, _px, _qty

S, B = AggressorSide.SELLER, AggressorSide.BUYER


def params(model="risk_averse", order_ms=0.0, amend_ms=0.0, cancel_ms=0.0, resp_ms=10.0):
    return SimParams(model=QueueModel(model, 3), latency=LatencyModel(
        order=Latency("constant", order_ms), amend=Latency("constant", amend_ms),
        cancel=Latency("constant", cancel_ms), response=Latency("constant", resp_ms)))


def book0(bid_lots=11):
    return snap(0, 0, [(100.0, bid_lots / 1000), (99.9, 1.0)], [(100.1, 1.0), (100.5, 1.0)])


# -- worst-case inventory under random event orders ---------------------------------------------

def _snapshot(x: int, r: int, bids, asks) -> list:
    out = [OrderBookDelta.clear(IID, 0, x, r)]
    levels = [(OrderSide.BUY, p, s) for p, s in bids] + [(OrderSide.SELL, p, s) for p, s in asks]
    for k, (side, p, s) in enumerate(levels):
        flags = F_SNAPSHOT | (F_LAST if k == len(levels) - 1 else 0)
        out.append(OrderBookDelta(IID, BookAction.ADD, BookOrder(side, _px(p), _qty(s), 0), flags, 0, x, r + 1 + k))
    return out


def _jumpy_market(seed: int) -> list:
    """400 snapshots of a market jumping 0.1 to 20 USD, trades at and through the touch; feed
    latencies 0-25 ms (book) and 0-30 ms (trades), trades stamped up to 3 ms either side of the book."""
    rng = random.Random(seed)
    mid, t, msgs = 100000.05, 1000.0, []
    for k in range(400):
        t += rng.uniform(1, 30)
        if rng.random() < 0.3:
            mid += rng.choice([-1, 1]) * rng.choice([0.1, 0.2, 0.5, 1.0, 5.0, 20.0])
        bb = round(mid - 0.05, 1)
        ba = round(bb + 0.1, 1)
        bids = [(round(bb - 0.1 * j, 1), rng.choice([0.001, 0.002, 0.01, 0.5])) for j in range(5)]
        asks = [(round(ba + 0.1 * j, 1), rng.choice([0.001, 0.002, 0.01, 0.5])) for j in range(5)]
        x = T0 + int(t * MS)
        msgs.append(_snapshot(x, x + int(rng.choice([0, 1, 3, 8, 25]) * MS), bids, asks))
        if rng.random() < 0.5:
            side = rng.choice([S, B])
            px = bb - rng.choice([0, 0, 0.1, 1.0]) if side == S else ba + rng.choice([0, 0, 0.1, 1.0])
            xt = x + int(rng.uniform(-3, 3) * MS)
            msgs.append([TradeTick(IID, _px(round(px, 1)), _qty(rng.choice([0.001, 0.005, 0.05])), side,
                                   TradeId(str(k)), xt, xt + int(rng.choice([0, 1, 2, 12, 30]) * MS))])
    return msgs


@pytest.mark.parametrize("seed", range(6))
def test_inventory_limit_holds_under_random_latencies_and_event_orders(seed):
    """The real MarketMaker on the queue simulator, random order/amend/cancel/response latencies
    (cancel up to 200 ms), 1-3 ladder levels, sizes 1 or 1.5x, stale pulls on every jump, amend or
    cancel/replace: the position never exceeds max_position (0.005) after any fill (checked on
    every position event, not only between steps). Seeds 1-5 reach the largest position the ladder
    allows (0.004 with 2-lot levels, 0.005 with 1.5x sizes); with the planner's exposure counting
    only the ladder slots (cancelling orders ignored, the defect of issue 12 item 1.3) seeds 2, 3
    and 5 reach 0.006, 0.01 and 0.016 and fail."""
    rng = random.Random(1000 + seed)
    lat = LatencyModel(order=Latency("constant", rng.choice([0.0, 5.0, 20.0])),
                       amend=Latency("constant", rng.choice([0.0, 5.0, 40.0])),
                       cancel=Latency("constant", rng.choice([0.0, 10.0, 50.0, 200.0])),
                       response=Latency("constant", rng.choice([0.0, 1.0, 10.0])))
    h = QsimHarness(lat, max_position=0.005, level_size=0.002, size_multiplier=rng.choice([1.0, 1.5]),
                    levels_per_side=rng.choice([1, 2, 3]), min_half_spread_bps=rng.choice([0.0, 0.01, 0.1]),
                    stale_price_drift_bps=rng.choice([0.01, 0.5, 5.0]), requote_threshold_bps=0.0,
                    min_time_in_book_ms=rng.choice([0.0, 50.0]), use_amend=rng.choice([True, False]))
    positions: list[float] = []
    h.engine.kernel.msgbus.subscribe("events.position.*", lambda e: positions.append(float(e.signed_qty)))
    try:
        flat = [d for m in _jumpy_market(seed) for d in m]
        h.engine.add_data(sorted((d for d in flat if isinstance(d, OrderBookDelta)), key=lambda d: d.ts_init))
        h.engine.add_data(sorted((d for d in flat if not isinstance(d, OrderBookDelta)), key=lambda d: d.ts_init),
                          validate=False)
        h.engine.run(streaming=True)
        h.engine.clear_data()
        h.ran = True
        assert h.client.stats["fills"] > 0
        assert max(abs(p) for p in positions) <= 0.005 + 1e-12
    finally:
        h.close()


# -- amend / cancel storms --------------------------------------------------------------------

def _storm(seed: int):
    rng = random.Random(seed)
    data, t = [book0(bid_lots=5)], 0.0
    for k in range(150):
        t += rng.uniform(0.5, 6.0)
        lat = rng.choice([0.0, 1.0, 3.0, 8.0, 15.0])
        if rng.random() < 0.4:
            px = rng.choice([99.8, 99.9, 100.0, 100.0, 100.1, 100.2])
            data.append(tr(t, t + lat, px, rng.randint(1, 6) / 1000, S if px <= 100.0 else B, str(k)))
        else:
            side, px = rng.choice([(BUY, 100.0), (BUY, 99.9), (SELL, 100.1), (SELL, 100.2), (BUY, 99.8),
                                   (SELL, 100.0), (BUY, 100.1)])
            data.append(book(t, t + lat, (side, px, rng.choice([0, 1, 3, 8, 12]) / 1000)))
    data.append(book(t + 500, t + 500, (BUY, 99.5, 1.0)))

    def can_change(o) -> bool:
        return not (o.is_closed or o.is_pending_update or o.is_pending_cancel)

    acts = []
    for k in range(40):
        at, side, name = rng.uniform(0, t), rng.choice([BUY, SELL]), f"o{k}"
        px = rng.choice([99.8, 99.9, 100.0]) if side == BUY else rng.choice([100.1, 100.2, 100.3])
        acts.append((at, lambda st, n=name, s=side, p=px: st.place(n, s, p, 0.003)))
        for _ in range(rng.randint(0, 6)):
            a2 = at + rng.uniform(0, 30)
            if rng.random() < 0.5:
                p2 = round(px + rng.choice([-0.2, -0.1, 0.1, 0.2]), 1)
                acts.append((a2, lambda st, n=name, p=p2: st.amend(n, px=p) if can_change(st.orders[n]) else None))
            else:
                q2 = rng.choice([0.001, 0.002, 0.004, 0.005])
                acts.append((a2, lambda st, n=name, q=q2: st.amend(n, qty=q) if can_change(st.orders[n]) else None))
        acts.append((at + rng.uniform(0, 60),
                     lambda st, n=name: st.cancel(n) if not (st.orders[n].is_closed or st.orders[n].is_pending_cancel)
                     else None))
    return data, acts


@pytest.mark.parametrize("seed", range(12))
def test_amend_and_cancel_storms_keep_exchange_cache_and_fills_consistent(seed):
    """40 orders, each amended up to 6 times (price both ways, size up and down) and cancelled,
    random latencies (amend up to 30 ms, cancel up to 40 ms, response 0-10 ms) on a stream with
    late events: no fill after a cancel/reject, fills per order add up to Nautilus' filled_qty and
    never exceed the quantity, every live order at the exchange has the cache's price, quantity and
    filled quantity, every queue entry belongs to a live order with the right leaves, and the
    Nautilus position is the sum of the fills."""
    rng = random.Random(seed + 77)
    data, acts = _storm(seed)
    p = params(model=rng.choice(["risk_averse", "prob_power", "prob_log"]), order_ms=rng.choice([0, 3, 20]),
               amend_ms=rng.choice([0, 2, 30]), cancel_ms=rng.choice([0, 1, 40]), resp_ms=rng.choice([0, 4, 10]))
    s, c, engine = run(acts, data, p)
    fills: dict[str, float] = {}
    closed: set[str] = set()
    for _t, kind, name, qty, _px_, _te in s.events:
        if kind == "filled":
            assert name not in closed, (name, s.events)
            fills[name] = fills.get(name, 0.0) + qty
        elif kind in ("canceled", "rejected_post_only", "rejected"):
            closed.add(name)
    for name, o in s.orders.items():
        assert round(fills.get(name, 0.0), 6) == round(float(o.filled_qty), 6) <= float(o.quantity) + 1e-9
    for coid, so in c._orders.items():
        o = engine.cache.order(coid)
        assert not o.is_closed
        if so.live:
            assert (round(o.price.as_double() * 10), round(o.quantity.as_double() * 1000),
                    round(o.filled_qty.as_double() * 1000)) == (so.ticks, so.lots, so.filled)
    for key, level in c._levels.items():
        for qo in level.orders:
            so = c._orders[qo.key]
            assert (so.side, so.ticks) == key and qo.leaves == so.lots - so.filled
    position = sum(float(p.signed_qty) for p in engine.cache.positions_open())
    signed = sum(q if s.orders[n].side == BUY else -q for _t, k, n, q, *_ in s.events if k == "filled")
    assert position == pytest.approx(signed, abs=1e-9)
    assert c.stats["fills"] == sum(1 for e in s.events if e[1] == "filled")


# -- a burst of trades in one millisecond --------------------------------------------------------

def test_twenty_thousand_trades_in_one_millisecond_fill_exactly_the_queue_math():
    """20,000 one-lot sells at our price with the same exchange time (x = 50 ms), received over
    20 µs: the 11 lots ahead go first, then our 3 lots fill one by one, then nothing; one alert,
    no recursion, the fills carry the burst's exchange time."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.003))]
    x = _ns(50)
    trades = [[TradeTick(IID, _px(100.0), _qty(0.001), S, TradeId(str(k)), x, x + k)] for k in range(20_000)]
    s, c, _ = run(acts, [book0()] + trades + [book(900, 900, (BUY, 99.9, 1.0))], params("prob_power"))
    assert s.fills("a") == [(60.0, 0.001)] * 3
    assert [e[5] for e in s.events if e[1] == "filled"] == [50.0] * 3
    assert c.stats["market_events"] == 20_002 and c.stats["fill_causes"]["queue"] == 3
