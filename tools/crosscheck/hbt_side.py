"""hftbacktest side: the same stream as an hftbacktest event array, the same policy in numba."""

from __future__ import annotations

import numpy as np
from numba import njit

from hftbacktest import (BUY_EVENT, DEPTH_CLEAR_EVENT, DEPTH_EVENT, DEPTH_SNAPSHOT_EVENT, EXCH_EVENT, GTX, LIMIT,
                         LOCAL_EVENT, SELL_EVENT, TRADE_EVENT, BacktestAsset, HashMapMarketDepthBacktest)
from hftbacktest.data.validation import correct_event_order
from hftbacktest.types import event_dtype
from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide

_F = EXCH_EVENT | LOCAL_EVENT


def to_events(deltas, trades, qty_scale: float = 1.0) -> np.ndarray:
    """Nautilus OrderBookDelta/TradeTick -> hftbacktest events (exch_ts = ts_event, local_ts =
    ts_init). A snapshot (CLEAR + ADDs) becomes a per-side DEPTH_CLEAR_EVENT up to the snapshot's
    worst price and DEPTH_EVENT rows (the exchange processor must see them). ``qty_scale`` multiplies sizes (1000 = lots)."""
    rows = []
    i, nd = 0, len(deltas)
    while i < nd:
        d = deltas[i]
        if d.action == BookAction.CLEAR:
            j = i + 1
            snap = []
            while j < nd and deltas[j].action == BookAction.ADD and deltas[j].ts_event == d.ts_event:
                snap.append(deltas[j])
                j += 1
            bids = [float(x.order.price) for x in snap if x.order.side == OrderSide.BUY]
            asks = [float(x.order.price) for x in snap if x.order.side == OrderSide.SELL]
            rows.append((_F | DEPTH_CLEAR_EVENT | BUY_EVENT, d.ts_event, d.ts_init, min(bids) if bids else 0.0, 0.0))
            rows.append((_F | DEPTH_CLEAR_EVENT | SELL_EVENT, d.ts_event, d.ts_init, max(asks) if asks else 1e12, 0.0))
            for x in snap:
                side = BUY_EVENT if x.order.side == OrderSide.BUY else SELL_EVENT
                rows.append((_F | DEPTH_EVENT | side, x.ts_event, x.ts_init, float(x.order.price),
                             float(x.order.size) * qty_scale))
            i = j
            continue
        side = BUY_EVENT if d.order.side == OrderSide.BUY else SELL_EVENT
        q = 0.0 if d.action == BookAction.DELETE else float(d.order.size) * qty_scale
        rows.append((_F | DEPTH_EVENT | side, d.ts_event, d.ts_init, float(d.order.price), q))
        i += 1
    for t in trades:
        side = BUY_EVENT if t.aggressor_side == AggressorSide.BUYER else SELL_EVENT
        rows.append((_F | TRADE_EVENT | side, t.ts_event, t.ts_init, float(t.price), float(t.size) * qty_scale))
    arr = np.zeros(len(rows), event_dtype)
    for k, (ev, ex, lo, px, q) in enumerate(rows):
        arr[k] = (ev, ex, lo, px, q, 0, 0, 0.0)
    # exchange order by exch_ts (trades and book rows interleave by their own stamps), local order
    # by local_ts; rows whose two orders disagree are split into EXCH-only and LOCAL-only copies.
    ex_idx = np.lexsort((arr["local_ts"], arr["exch_ts"]))
    lo_idx = np.argsort(arr["local_ts"], kind="stable")
    return correct_event_order(arr, ex_idx, lo_idx)


@njit
def _policy(hbt, t0, t_end, step, qty, keep_ticks):
    bid_id = 0
    ask_id = 0
    next_id = 0
    submitted = 0
    t = t0
    hbt.elapse(1)  # current_timestamp is undefined (i64 max) before the first elapse
    while t <= t_end:
        now = hbt.current_timestamp
        if t > now:
            if hbt.elapse(t - now) != 0:
                break
        hbt.clear_inactive_orders(0)
        depth = hbt.depth(0)
        orders = hbt.orders(0)
        tick = depth.tick_size
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        # bid
        keep = False
        if bid_id > 0 and bid_id in orders:
            o = orders.get(bid_id)
            if o.price_tick >= bb - keep_ticks:
                keep = True
            else:
                hbt.cancel(0, bid_id, False)
        if not keep and bb > -1000000000:
            next_id += 1
            bid_id = next_id
            submitted += 1
            hbt.submit_buy_order(0, bid_id, bb * tick, qty, GTX, LIMIT, False)
        keep = False
        if ask_id > 0 and ask_id in orders:
            o = orders.get(ask_id)
            if o.price_tick <= ba + keep_ticks:
                keep = True
            else:
                hbt.cancel(0, ask_id, False)
        if not keep and ba < 1000000000:
            next_id += 1
            ask_id = next_id
            submitted += 1
            hbt.submit_sell_order(0, ask_id, ba * tick, qty, GTX, LIMIT, False)
        t += step
    now = hbt.current_timestamp
    if t_end + step > now:
        hbt.elapse(t_end + step - now)
    sv = hbt.state_values(0)
    return sv.num_trades, sv.trading_volume, submitted


def run_hbt(events: np.ndarray, model: str, n: float, latency_ms: float, resp_ms: float, tick: float, lot: float,
            t0: int, t_end: int, step_ns: int, qty: float, keep_ticks: int = 0) -> dict:
    a = (BacktestAsset().data([events]).linear_asset(1.0)
         .constant_order_latency(int(latency_ms * 1e6), int(resp_ms * 1e6))
         .tick_size(tick).lot_size(lot).trading_value_fee_model(0.0, 0.0).partial_fill_exchange())
    if model == "risk_averse":
        a = a.risk_adverse_queue_model()
    elif model == "prob_power":
        a = a.power_prob_queue_model(float(n))
    else:
        a = a.log_prob_queue_model()
    hbt = HashMapMarketDepthBacktest([a])
    fills, vol, submitted = _policy(hbt, t0, t_end, step_ns, qty, keep_ticks)
    hbt.close()
    return {"fills": int(fills), "filled_qty": round(float(vol), 9), "orders_submitted": int(submitted)}
