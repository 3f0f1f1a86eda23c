"""hftbacktest side: the fixed quoting policy in numba on hftbacktest's own exchange, with a
per-fill trace.

Fills are read where hftbacktest's local side receives them: the loop waits for the next feed row
or order response (``wait_next_feed(include_order_resp=True)``) and compares every local order's
filled quantity (``qty - leaves_qty``) with what it had seen. A response carries the exchange's
copy of the order, so ``exch_timestamp`` is the exchange time of the fill and ``local_timestamp``
of the row the time it reached us. Two fills of one order that reach the local side at the same
time (the same exchange time: the response latency is constant) are seen as one; the comparison
adds mmbot's fills up per (order, exchange time) the same way.

Sizes are in lots (``lot_size`` 1): ``ln(1 + x)`` is not scale-free and mmbot's queue model works
in lots. Orders are submitted ``HBT_QTY_EPS`` lot below their size: hftbacktest 2.4.4 keeps an
order whose queue fill equals its remaining quantity EXACTLY in its book (marked filled: only a
fill larger than the remainder removes it), and the next trade at that price aborts the backtest
with InvalidOrderStatus (error 14; on the embedded hour after 23 minutes). With the remainder
a hair below a whole number of lots, an exact fill takes the "fills everything" branch; fills are
compared to 1e-6 lot (docs/crosscheck.md, rule ``hbt_exact_fill_abort``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from hftbacktest import GTX, LIMIT, BacktestAsset, HashMapMarketDepthBacktest

# trace columns
F_ID, F_X, F_PX_TICK, F_QTY, F_LOCAL, N_F = 0, 1, 2, 3, 4, 5
HBT_QTY_EPS = 1e-7  # lots


@njit
def _scan(hbt, seen, out, nfill):
    orders = hbt.orders(0)
    values = orders.values()
    while values.has_next():
        o = values.get()
        filled = o.qty - o.leaves_qty
        oid = o.order_id
        if filled > seen[oid] + 1e-9:
            if nfill < out.shape[0]:
                out[nfill, F_ID] = oid
                out[nfill, F_X] = o.exch_timestamp
                out[nfill, F_PX_TICK] = o.price_tick
                out[nfill, F_QTY] = int(round((filled - seen[oid]) * 1e9))  # nano-units: exact ints
                out[nfill, F_LOCAL] = hbt.current_timestamp
            nfill += 1
            seen[oid] = filled
    return nfill


@njit
def _advance_to(hbt, t, seen, out, nfill):
    """Run hftbacktest until local time ``t``, recording every fill response on the way."""
    while True:
        now = hbt.current_timestamp
        if now >= t:
            return nfill, 0
        r = hbt.wait_next_feed(True, t - now)
        nfill = _scan(hbt, seen, out, nfill)
        if r == 1:
            return nfill, 1
        if r != 0 and r != 2 and r != 3:
            return nfill, r


@njit
def _policy(hbt, t0, n_steps, step, t_end, qty, keep_ticks, out, submitted):
    """Every ``step`` from ``t0`` (``n_steps`` decisions), per side: keep the open order if it
    rests at most ``keep_ticks`` behind the local touch, else cancel it (if open) and submit a
    post-only limit of ``qty`` at the touch. Order id of step k: 2k+1 (bid), 2k+2 (ask): the same
    ids as mmbot's side, so an order means the same decision in both engines."""
    seen = np.zeros(2 * n_steps + 3)
    nfill = 0
    bid_id = 0
    ask_id = 0
    hbt.elapse(1)  # current_timestamp is undefined (i64 max) before the first elapse
    for k in range(n_steps):
        nfill, rc = _advance_to(hbt, t0 + k * step, seen, out, nfill)
        if rc != 0:
            return nfill, rc
        hbt.clear_inactive_orders(0)
        depth = hbt.depth(0)
        orders = hbt.orders(0)
        tick = depth.tick_size
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        keep = False
        if bid_id > 0 and bid_id in orders:
            o = orders.get(bid_id)
            if o.price_tick >= bb - keep_ticks:
                keep = True
            else:
                hbt.cancel(0, bid_id, False)
        if not keep and bb > -1000000000:
            bid_id = 2 * k + 1
            submitted[0] += 1
            hbt.submit_buy_order(0, bid_id, bb * tick, qty, GTX, LIMIT, False)
        keep = False
        if ask_id > 0 and ask_id in orders:
            o = orders.get(ask_id)
            if o.price_tick <= ba + keep_ticks:
                keep = True
            else:
                hbt.cancel(0, ask_id, False)
        if not keep and ba < 1000000000:
            ask_id = 2 * k + 2
            submitted[0] += 1
            hbt.submit_sell_order(0, ask_id, ba * tick, qty, GTX, LIMIT, False)
    nfill, rc = _advance_to(hbt, t_end, seen, out, nfill)
    return nfill, rc


def run_hbt(events: np.ndarray, model: str, n: float, entry_ms: float, resp_ms: float, tick: float,
            t0: int, n_steps: int, step_ns: int, t_end: int, qty_lots: int, keep_ticks: int) -> dict:
    """``events`` in lots (``stream.hbt_events(s, 1 / lot)``); fills returned in lots."""
    a = (BacktestAsset().data([events]).linear_asset(1.0)
         .constant_order_latency(int(round(entry_ms * 1e6)), int(round(resp_ms * 1e6)))
         .tick_size(tick).lot_size(1.0).trading_value_fee_model(0.0, 0.0).partial_fill_exchange())
    if model == "risk_averse":
        a = a.risk_adverse_queue_model()
    elif model == "prob_power":
        a = a.power_prob_queue_model(float(n))
    elif model == "prob_log":
        a = a.log_prob_queue_model()
    else:
        raise ValueError(model)
    hbt = HashMapMarketDepthBacktest([a])
    out = np.zeros((max(1000, 4 * n_steps), N_F), dtype=np.int64)
    submitted = np.zeros(1, dtype=np.int64)
    nfill, rc = _policy(hbt, t0, n_steps, step_ns, t_end, qty_lots - HBT_QTY_EPS, keep_ticks, out, submitted)
    sv = hbt.state_values(0)
    num_trades, volume = int(sv.num_trades), float(sv.trading_volume)
    hbt.close()
    if nfill > out.shape[0]:
        raise RuntimeError(f"hftbacktest trace overflow: {nfill} fills")
    fills = [{"order": int(r[F_ID]), "x_ns": int(r[F_X]), "price": round(int(r[F_PX_TICK]) * tick, 10),
              "qty": round(int(r[F_QTY]) * 1e-9, 6), "local_ns": int(r[F_LOCAL])} for r in out[:nfill]]
    return {"fills": fills, "num_trades": num_trades, "volume": round(volume, 6), "orders_submitted": int(submitted[0]),
            "end_rc": int(rc)}
