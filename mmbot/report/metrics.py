"""Backtest metrics: PnL ledger and decomposition, equity grid, risk, inventory, markouts.

Units and conventions used by every function in this module:

- timestamps are int64 nanoseconds since the Unix epoch, UTC;
- prices are quote currency (USDT) per base unit; quantities are base units and > 0;
- money (cash, PnL, fees, notional) is USDT; a fill's ``fee`` > 0 is paid, < 0 is a rebate;
- the side sign is s = +1 for BUY and -1 for SELL;
- the mid "at" a time t is the last mid sample at or before t (as-of lookup); when a fill and
  a book change share a timestamp the mid after that book change is used.

Determinism: totals over fills use ``math.fsum`` (exactly rounded, so independent of order);
fills are stably sorted by (ts_event_ns, trade_id) before any path-dependent computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd

NS_PER_MS = 1_000_000
NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
MINUTES_PER_YEAR = 525_600  # 365 * 24 * 60: perpetuals trade around the clock
DEFAULT_GRID_STEP_NS = NS_PER_SECOND
DEFAULT_MARKOUT_HORIZONS_NS: tuple[int, ...] = (100 * NS_PER_MS, NS_PER_SECOND, 10 * NS_PER_SECOND)
DEFAULT_CURVE_HORIZONS_NS: tuple[int, ...] = (
    0, 100 * NS_PER_MS, 500 * NS_PER_MS, NS_PER_SECOND, 5 * NS_PER_SECOND,
    10 * NS_PER_SECOND, 30 * NS_PER_SECOND,
)
FILL_COLUMNS = ("ts_event_ns", "side", "price", "qty", "fee", "liquidity")
EQUITY_COLUMNS = ("ts_ns", "mid", "position", "cash", "gross_pnl", "fees_paid", "net_pnl",
                  "drawdown", "own_bid", "own_ask")
_DUST = 1e-9  # positions below this fraction of the largest fill qty are float noise, i.e. flat


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

def _fsum(values: np.ndarray | Sequence[float]) -> float:
    """Exactly rounded sum (order independent)."""
    return math.fsum(np.asarray(values, dtype=np.float64).tolist())


def _mean(values: np.ndarray) -> float:
    """Order-independent mean; NaN for an empty array."""
    return _fsum(values) / len(values) if len(values) else math.nan


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) with exact sums; NaN for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    mu = _mean(values)
    return math.sqrt(_fsum((np.asarray(values) - mu) ** 2) / (n - 1))


def _percentile(values: np.ndarray, q: float) -> float:
    """Percentile with numpy's default linear interpolation; NaN for an empty array."""
    return float(np.percentile(values, q)) if len(values) else math.nan


def horizon_label(horizon_ns: int) -> str:
    """Short label for a horizon in ns: ``0s``, ``100ms``, ``1s``, ``1500us``..."""
    h = int(horizon_ns)
    for unit, size in (("s", NS_PER_SECOND), ("ms", NS_PER_MS), ("us", 1_000)):
        if h % size == 0:
            return f"{h // size}{unit}"
    return f"{h}ns"


def side_sign(side: pd.Series | np.ndarray | Sequence[str]) -> np.ndarray:
    """+1.0 for BUY, -1.0 for SELL (case-insensitive); ValueError on anything else."""
    s = pd.Series(np.asarray(side, dtype=object)).astype(str).str.upper()
    sign = s.map({"BUY": 1.0, "SELL": -1.0})
    if sign.isna().any():
        bad = sorted(set(s[sign.isna()]))
        raise ValueError(f"unknown side value(s): {bad}")
    return sign.to_numpy(dtype=np.float64)


def sort_fills(fills: pd.DataFrame) -> pd.DataFrame:
    """Fills stably sorted by ``ts_event_ns`` then ``trade_id`` (if present), index reset."""
    missing = [c for c in FILL_COLUMNS if c not in fills.columns]
    if missing:
        raise ValueError(f"fills is missing column(s): {missing}")
    keys = ["ts_event_ns"] + (["trade_id"] if "trade_id" in fills.columns else [])
    return fills.sort_values(keys, kind="mergesort").reset_index(drop=True)


def _fill_arrays(fills: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(ts_ns int64, sign, price, qty, fee) as numpy arrays, fills already sorted."""
    return (
        fills["ts_event_ns"].to_numpy(dtype=np.int64),
        side_sign(fills["side"]),
        fills["price"].to_numpy(dtype=np.float64),
        fills["qty"].to_numpy(dtype=np.float64),
        fills["fee"].to_numpy(dtype=np.float64),
    )


def _snap_flat(position: np.ndarray | float, qty: np.ndarray) -> Any:
    """Positions within float noise of zero set to exactly 0.0 (base units)."""
    tol = _DUST * (float(np.max(qty)) if len(qty) else 1.0)
    return np.where(np.abs(position) <= tol, 0.0, position)


# ---------------------------------------------------------------------------------------------
# mid lookup
# ---------------------------------------------------------------------------------------------

def mid_at(
    ts_ns: np.ndarray | Sequence[int],
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    *,
    strict: bool = False,
) -> np.ndarray:
    """Mid price (USDT) as of each timestamp in ``ts_ns`` (int64 ns).

    Returns the last ``mid_px`` whose ``mid_ts_ns`` is at or before each ts (strictly before if
    ``strict``); NaN where no mid precedes the ts. ``mid_ts_ns`` must be non-decreasing; with
    duplicate timestamps the last sample wins.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    mts = np.asarray(mid_ts_ns, dtype=np.int64)
    mpx = np.asarray(mid_px, dtype=np.float64)
    idx = np.searchsorted(mts, ts, side="left" if strict else "right") - 1
    out = np.full(ts.shape, np.nan)
    ok = idx >= 0
    out[ok] = mpx[idx[ok]]
    return out


def final_mid(mid_ts_ns: np.ndarray, mid_px: np.ndarray, end_ns: int) -> float:
    """Mid (USDT) used to mark open inventory at the end of the run: the mid as of ``end_ns``.

    NaN if there is no mid at or before ``end_ns``.
    """
    return float(mid_at(np.array([end_ns], dtype=np.int64), mid_ts_ns, mid_px)[0])


# ---------------------------------------------------------------------------------------------
# PnL
# ---------------------------------------------------------------------------------------------

class LedgerPnl(TypedDict):
    """Result of :func:`fills_ledger_pnl`; money in USDT, position in base units."""

    cash: float
    position: float
    final_mid: float
    gross_pnl: float
    fees_paid: float
    funding: float
    net_pnl: float


def fills_ledger_pnl(fills: pd.DataFrame, final_mid: float, funding: float = 0.0) -> LedgerPnl:
    """PnL from the fill ledger alone, marked at ``final_mid`` (USDT per base unit).

    cash = -sum(s*price*qty) (trade cash flows, fees excluded, USDT);
    position = sum(s*qty) (base units); gross_pnl = cash + position*final_mid;
    fees_paid = sum(fee); net_pnl = gross_pnl - fees_paid + funding (funding received > 0).
    The report's ``pnl.net_pnl`` is exactly this function's ``net_pnl``. A flat book has
    gross_pnl = cash even when ``final_mid`` is NaN.
    """
    _, sign, px, qty, fee = _fill_arrays(fills)
    cash = -_fsum(sign * px * qty)
    position = float(_snap_flat(_fsum(sign * qty), qty))
    mark = 0.0 if position == 0.0 else position * float(final_mid)
    gross = cash + mark
    fees_paid = _fsum(fee)
    return LedgerPnl(
        cash=cash, position=position, final_mid=float(final_mid), gross_pnl=gross,
        fees_paid=fees_paid, funding=float(funding), net_pnl=gross - fees_paid + float(funding),
    )


def pnl_decomposition(
    fills: pd.DataFrame, mid_at_fill: np.ndarray, final_mid: float
) -> dict[str, float | int]:
    """Split gross PnL into spread capture and inventory PnL (USDT).

    spread_capture = sum(s*(m_i - p_i)*q_i): edge versus the mid at each fill;
    inventory_pnl  = sum(s*q_i*(m_final - m_i)): mark-to-market of inventory after each fill;
    fees_paid      = sum(fee).
    Identity (up to float rounding): gross = spread_capture + inventory_pnl and
    net = spread_capture + inventory_pnl - fees_paid (+ funding).
    Fills with no known mid (before the first book sample) use their own price as the mid, so
    they add nothing to spread capture; they are counted in ``n_fills_without_mid``.
    """
    _, sign, px, qty, fee = _fill_arrays(fills)
    m = np.asarray(mid_at_fill, dtype=np.float64)
    no_mid = ~np.isfinite(m)
    m = np.where(no_mid, px, m)
    spread = _fsum(sign * (m - px) * qty)
    # sum(s*q*(mf - m)) = mf*position - sum(s*q*m); written this way a flat book needs no
    # final mark (which may be NaN) and float dust in the position is not marked.
    position = float(_snap_flat(_fsum(sign * qty), qty))
    mark = 0.0 if position == 0.0 else position * float(final_mid)
    inventory = mark - _fsum(sign * qty * m)
    return {
        "spread_capture": spread,
        "inventory_pnl": inventory,
        "fees_paid": _fsum(fee),
        "n_fills_without_mid": int(no_mid.sum()),
    }


# ---------------------------------------------------------------------------------------------
# equity grid
# ---------------------------------------------------------------------------------------------

def time_grid(start_ns: int, end_ns: int, step_ns: int = DEFAULT_GRID_STEP_NS) -> np.ndarray:
    """Regular grid start_ns, start_ns+step, ... (int64 ns), with end_ns appended as last point.

    The appended end point makes the last equity row equal the end-of-run mark.
    """
    if step_ns <= 0:
        raise ValueError("step_ns must be positive")
    if end_ns < start_ns:
        raise ValueError("end_ns must be >= start_ns")
    grid = np.arange(start_ns, end_ns + 1, step_ns, dtype=np.int64)
    if grid[-1] != end_ns:
        grid = np.append(grid, np.int64(end_ns))
    return grid


def equity_curve(
    fills: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    start_ns: int,
    end_ns: int,
    *,
    step_ns: int = DEFAULT_GRID_STEP_NS,
    quote_ts_ns: np.ndarray | None = None,
    own_bid_px: np.ndarray | None = None,
    own_ask_px: np.ndarray | None = None,
) -> pd.DataFrame:
    """Equity on a regular time grid (the content of ``equity.parquet``).

    One row per :func:`time_grid` point t, state after all fills with ts <= t:
    ``ts_ns`` int64 ns; ``mid`` USDT (as of t, NaN before the first book sample);
    ``position`` base units; ``cash`` USDT = -sum(s*p*q) (fees excluded);
    ``gross_pnl`` = cash + position*mid; ``fees_paid`` USDT = sum(fee);
    ``net_pnl`` = gross_pnl - fees_paid; ``drawdown`` USDT = net_pnl - running peak of
    max(0, net_pnl) (<= 0; the run starts at 0 PnL); ``own_bid``/``own_ask`` USDT = own quotes
    as of t from the quote samples (NaN when no own order on that side or no samples).
    """
    f = sort_fills(fills)
    f_ts, sign, px, qty, fee = _fill_arrays(f)
    grid = time_grid(start_ns, end_ns, step_ns)
    k = np.searchsorted(f_ts, grid, side="right")  # number of fills at or before each grid point

    def cum_at(x: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0.0], np.cumsum(x)))
        return c[k]

    position = _snap_flat(cum_at(sign * qty), qty)
    cash = cum_at(-sign * px * qty)
    fees_paid = cum_at(fee)
    mid = mid_at(grid, mid_ts_ns, mid_px)
    gross = cash + np.where(position == 0.0, 0.0, position * mid)
    net = gross - fees_paid
    peak = np.maximum.accumulate(np.maximum(np.nan_to_num(net, nan=0.0), 0.0))
    drawdown = net - peak

    if quote_ts_ns is not None and len(quote_ts_ns):
        own_bid = mid_at(grid, quote_ts_ns, own_bid_px) if own_bid_px is not None else np.full(len(grid), np.nan)
        own_ask = mid_at(grid, quote_ts_ns, own_ask_px) if own_ask_px is not None else np.full(len(grid), np.nan)
    else:
        own_bid = own_ask = np.full(len(grid), np.nan)
    return pd.DataFrame({
        "ts_ns": grid, "mid": mid, "position": position, "cash": cash, "gross_pnl": gross,
        "fees_paid": fees_paid, "net_pnl": net, "drawdown": drawdown,
        "own_bid": own_bid, "own_ask": own_ask,
    })


# ---------------------------------------------------------------------------------------------
# risk
# ---------------------------------------------------------------------------------------------

def per_minute_pnl(
    equity: pd.DataFrame, start_ns: int, end_ns: int | None = None
) -> pd.DataFrame:
    """Net PnL (USDT) of each complete minute of the run, from the equity grid.

    Minutes are [start_ns + i*60 s, start_ns + (i+1)*60 s), aligned to the run start, not to
    the wall clock. A trailing partial minute is dropped so every sample covers the same time.
    The PnL at a minute boundary is the grid's ``net_pnl`` as of that boundary (exact when the
    grid step divides 60 s, as the default 1 s does); the run starts at 0 PnL.
    Columns: ``minute_start_ns``, ``minute_end_ns`` (int64 ns), ``pnl`` (USDT).
    """
    ts = equity["ts_ns"].to_numpy(dtype=np.int64)
    end = int(ts[-1]) if end_ns is None else int(end_ns)
    n_minutes = max(0, (end - int(start_ns)) // NS_PER_MINUTE)
    bounds = int(start_ns) + NS_PER_MINUTE * np.arange(n_minutes + 1, dtype=np.int64)
    net = mid_at(bounds[1:], ts, np.nan_to_num(equity["net_pnl"].to_numpy(dtype=np.float64)))
    levels = np.concatenate(([0.0], net))
    return pd.DataFrame({
        "minute_start_ns": bounds[:-1], "minute_end_ns": bounds[1:], "pnl": np.diff(levels),
    })


def sharpe_ratio(pnl: np.ndarray, periods_per_year: float = MINUTES_PER_YEAR) -> tuple[float, float]:
    """(per-period Sharpe, annualised Sharpe) of a PnL series; dimensionless.

    per-period = mean(pnl) / std(pnl, ddof=1); annualised = per-period * sqrt(periods_per_year).
    No risk-free rate (PnL, not excess return). Dividing PnL by a constant balance does not
    change the ratio, so this equals the Sharpe of per-period returns. NaN when fewer than 2
    periods or zero dispersion.
    """
    x = np.asarray(pnl, dtype=np.float64)
    sd = _std(x)
    if not math.isfinite(sd) or sd == 0.0:
        return math.nan, math.nan
    raw = _mean(x) / sd
    return raw, raw * math.sqrt(periods_per_year)


def cvar(pnl: np.ndarray, level: float = 0.95) -> float:
    """Conditional value at risk (expected shortfall) of a PnL series, same unit as ``pnl``.

    Mean of the worst k = ceil((1 - level) * n) values (k >= 1), so at level 0.95 it is the
    single worst value for n <= 20 samples. Losses are negative: a CVaR95 of -3.2 means the
    worst 5 % of periods lost 3.2 on average. NaN for an empty series.
    """
    x = np.sort(np.asarray(pnl, dtype=np.float64))
    if len(x) == 0:
        return math.nan
    k = max(1, math.ceil(round((1.0 - level) * len(x), 9)))  # round: 0.05*100 is 5.000000000000001
    return _mean(x[:k])


def max_drawdown(net_pnl: np.ndarray, starting_balance: float | None = None) -> dict[str, float]:
    """Largest peak-to-trough fall of a net PnL path (USDT), starting from PnL 0.

    ``max_drawdown_usdt`` >= 0 is max over t of (peak(t) - pnl(t)) with peak(t) the running max
    of max(0, pnl). ``max_drawdown_frac`` is max over t of that fall divided by peak equity
    (starting_balance + peak(t)), computed where peak equity > 0; NaN without a balance.
    """
    x = np.nan_to_num(np.asarray(net_pnl, dtype=np.float64), nan=0.0)
    if len(x) == 0:
        return {"max_drawdown_usdt": 0.0, "max_drawdown_frac": math.nan, "peak_net_pnl": 0.0}
    peak = np.maximum.accumulate(np.maximum(x, 0.0))
    dd = peak - x
    frac = math.nan
    if starting_balance is not None and math.isfinite(starting_balance):
        peak_eq = float(starting_balance) + peak
        ok = peak_eq > 0
        if ok.any():
            frac = float(np.max(dd[ok] / peak_eq[ok]))
    return {"max_drawdown_usdt": float(np.max(dd)), "max_drawdown_frac": frac,
            "peak_net_pnl": float(peak[-1])}


def risk_metrics(
    equity: pd.DataFrame, start_ns: int, end_ns: int, starting_balance: float | None
) -> dict[str, Any]:
    """Sharpe, drawdown and CVaR95 from the equity grid (see the individual functions)."""
    minute = per_minute_pnl(equity, start_ns, end_ns)["pnl"].to_numpy()
    raw, ann = sharpe_ratio(minute)
    dd = max_drawdown(equity["net_pnl"].to_numpy(), starting_balance)
    step = int(np.diff(equity["ts_ns"].to_numpy()[:2])[0]) if len(equity) > 1 else 0
    return {
        "n_minutes": int(len(minute)),
        "minute_pnl_mean": _mean(minute),
        "minute_pnl_std": _std(minute),
        "sharpe_per_minute": raw,
        "sharpe_annualised": ann,
        "cvar95_minute_pnl": cvar(minute, 0.95),
        "worst_minute_pnl": float(minute.min()) if len(minute) else math.nan,
        "best_minute_pnl": float(minute.max()) if len(minute) else math.nan,
        "max_drawdown_usdt": dd["max_drawdown_usdt"],
        "max_drawdown_frac": dd["max_drawdown_frac"],
        "peak_net_pnl": dd["peak_net_pnl"],
        "equity_grid_step_ns": step,
    }


# ---------------------------------------------------------------------------------------------
# counts and inventory
# ---------------------------------------------------------------------------------------------

def order_fill_counts(fills: pd.DataFrame, orders: pd.DataFrame) -> dict[str, Any]:
    """Order and fill counts and ratios (dimensionless unless stated).

    fill_ratio = orders with filled_qty > 0 / orders (``filled_qty`` from ``orders`` if present,
    else summed from ``fills`` per client_order_id); maker_share = maker fill qty / total fill
    qty (base units); cancels_per_fill = orders whose final status is CANCELED / fills.
    ``traded_notional`` is sum(price*qty) in USDT; ``fees_bps_of_notional`` = fees / notional * 1e4.
    """
    _, _, px, qty, fee = _fill_arrays(fills)
    n_fills = len(fills)
    n_orders = len(orders)
    if "filled_qty" in orders.columns:
        filled = orders["filled_qty"].fillna(0.0).to_numpy(dtype=np.float64) > 0
    elif "client_order_id" in orders.columns and "client_order_id" in fills.columns:
        filled = orders["client_order_id"].astype(str).isin(set(fills["client_order_id"].astype(str))).to_numpy()
    else:
        filled = np.zeros(n_orders, dtype=bool)
    status = orders["status"].astype(str).str.upper() if "status" in orders else pd.Series(dtype=str)
    n_canceled = int((status == "CANCELED").sum())
    liq = fills["liquidity"].astype(str).str.upper().to_numpy()
    maker_qty = _fsum(qty[liq == "MAKER"])
    total_qty = _fsum(qty)
    notional = _fsum(px * qty)
    fees = _fsum(fee)

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    out: dict[str, Any] = {
        "n_orders": n_orders,
        "n_fills": n_fills,
        "n_filled_orders": int(filled.sum()),
        "n_orders_fully_filled": int((status == "FILLED").sum()),
        "n_canceled_orders": n_canceled,
        "n_rejected_orders": int(status.isin(["REJECTED", "DENIED"]).sum()),
        "n_maker_fills": int((liq == "MAKER").sum()),
        "n_taker_fills": int((liq == "TAKER").sum()),
        "fill_ratio": ratio(float(filled.sum()), n_orders),
        "maker_share": ratio(maker_qty, total_qty),
        "cancels_per_fill": ratio(n_canceled, n_fills),
        "traded_qty": total_qty,
        "traded_notional": notional,
        "fees_bps_of_notional": ratio(fees, notional) * 1e4 if notional else math.nan,
        "status_counts": {k: int(v) for k, v in sorted(status.value_counts().items())},
    }
    if "n_amends" in orders.columns:
        out["n_amends"] = int(orders["n_amends"].fillna(0).astype(np.int64).sum())
    if "n_cancels" in orders.columns:
        out["n_cancel_requests"] = int(orders["n_cancels"].fillna(0).astype(np.int64).sum())
    return out


def position_path(fills: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(fill ts int64 ns, position after each fill in base units), fills sorted."""
    f = sort_fills(fills)
    ts, sign, _, qty, _ = _fill_arrays(f)
    return ts, _snap_flat(np.cumsum(sign * qty), qty)


def time_weighted_abs_position(fills: pd.DataFrame, start_ns: int, end_ns: int) -> float:
    """Exact time average of |position| (base units) over [start_ns, end_ns].

    The position is piecewise constant, starting flat and changing only at fills; fills before
    start_ns count as at start_ns, fills after end_ns are ignored. 0.0 for an empty window.
    """
    if end_ns <= start_ns:
        return 0.0
    ts, pos = position_path(fills)
    keep = ts <= end_ns
    ts, pos = np.clip(ts[keep], start_ns, end_ns), pos[keep]
    # Segment i runs from fill i to fill i+1 (or end) at position pos[i]; before fill 0 flat.
    seg_end = np.append(ts[1:], np.int64(end_ns))
    durations = (seg_end - ts).astype(np.float64)
    return _fsum(np.abs(pos) * durations) / float(end_ns - start_ns)


def inventory_stats(
    fills: pd.DataFrame,
    mid_at_fill: np.ndarray,
    equity: pd.DataFrame,
    start_ns: int,
    end_ns: int,
    final_mid: float,
) -> dict[str, float]:
    """Inventory statistics; ``*_base`` in base units, ``*_notional`` in USDT (|pos| * mid;
    ``final_position_*`` are signed, long > 0).

    avg_* are event-weighted means over the position right after each fill; max_* are maxima
    over post-fill positions and the equity grid; twa_abs_position_base is the exact
    time-weighted mean |position|; twa_abs_notional uses the equity grid, each row's value held
    until the next row.
    """
    f = sort_fills(fills)
    _, pos = position_path(f)
    m = np.asarray(mid_at_fill, dtype=np.float64)
    abs_pos = np.abs(pos)
    notional_fill = abs_pos * np.nan_to_num(m, nan=0.0)
    grid_notional = np.abs(equity["position"].to_numpy() * np.nan_to_num(equity["mid"].to_numpy(), nan=0.0))
    ts = equity["ts_ns"].to_numpy(dtype=np.int64)
    dt = np.diff(ts).astype(np.float64)
    span = float(ts[-1] - ts[0]) if len(ts) > 1 else 0.0
    twa_notional = _fsum(grid_notional[:-1] * dt) / span if span > 0 else math.nan
    final_pos = float(pos[-1]) if len(pos) else 0.0
    return {
        "final_position_base": final_pos,
        "final_position_notional": final_pos * final_mid if final_pos else 0.0,
        "avg_abs_position_base": _mean(abs_pos) if len(abs_pos) else 0.0,
        "avg_abs_notional": _mean(notional_fill) if len(abs_pos) else 0.0,
        "max_abs_position_base": float(abs_pos.max()) if len(abs_pos) else 0.0,
        "max_abs_notional": float(max(notional_fill.max() if len(abs_pos) else 0.0,
                                      grid_notional.max() if len(grid_notional) else 0.0)),
        "twa_abs_position_base": time_weighted_abs_position(f, start_ns, end_ns),
        "twa_abs_notional": twa_notional,
    }


# ---------------------------------------------------------------------------------------------
# markouts
# ---------------------------------------------------------------------------------------------

def fill_markouts(
    fills: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    horizon_ns: int,
    data_end_ns: int,
) -> pd.DataFrame:
    """Per-fill markouts at one horizon (fills sorted; one row per fill).

    ``markout_bps`` = s*(m(t+h) - p)/p*1e4 (edge vs the fill price, bps);
    ``vs_mid_px`` = s*(m(t+h) - m(t)) (USDT per base unit, the adverse/favourable mid move);
    ``vs_mid_bps`` = vs_mid_px / m(t) * 1e4. ``valid`` is False (values NaN) when t+h is after
    ``data_end_ns`` (the mid there is unknown) or a needed mid is missing.
    """
    f = sort_fills(fills)
    ts, sign, px, _, _ = _fill_arrays(f)
    m0 = mid_at(ts, mid_ts_ns, mid_px)
    mh = mid_at(ts + np.int64(horizon_ns), mid_ts_ns, mid_px)
    valid = (ts + np.int64(horizon_ns) <= np.int64(data_end_ns)) & np.isfinite(mh) & np.isfinite(m0)
    mh = np.where(valid, mh, np.nan)
    vs_mid = sign * (mh - m0)
    return pd.DataFrame({
        "ts_event_ns": ts,
        "valid": valid,
        "markout_bps": sign * (mh - px) / px * 1e4,
        "vs_mid_px": vs_mid,
        "vs_mid_bps": vs_mid / m0 * 1e4,
    })


def _stats(x: np.ndarray, suffix: str) -> dict[str, float]:
    x = x[np.isfinite(x)]
    return {
        f"mean_{suffix}": _mean(x), f"median_{suffix}": _percentile(x, 50),
        f"p10_{suffix}": _percentile(x, 10), f"p90_{suffix}": _percentile(x, 90),
    }


def histogram(x: np.ndarray, n_bins: int = 20) -> dict[str, list[float] | list[int]]:
    """Histogram over [p1, p99] of the finite values; values outside go to the end bins.

    Clipping to the 1st-99th percentiles keeps a few outliers from flattening the picture.
    Returns ``edges`` (n_bins + 1 values, same unit as x) and ``counts``.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"edges": [], "counts": []}
    lo, hi = float(np.percentile(x, 1)), float(np.percentile(x, 99))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, n_bins + 1)
    counts, _ = np.histogram(np.clip(x, lo, hi), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def markout_summary(
    fills: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    data_end_ns: int,
    horizons_ns: Sequence[int] = DEFAULT_MARKOUT_HORIZONS_NS,
    n_bins: int = 20,
) -> dict[str, dict[str, Any]]:
    """Markout statistics keyed by :func:`horizon_label` (see :func:`fill_markouts`).

    Each entry: ``horizon_ns``, ``count`` (fills used), ``n_excluded`` (horizon past the data),
    mean/median/p10/p90 of ``*_bps`` (vs fill price) and ``*_vs_mid_bps``, ``mean_vs_mid_px``
    (USDT per base unit), ``mean_bps_qty_weighted`` and ``histogram_bps``.
    Percentiles use linear interpolation; statistics are NaN (null in JSON) with no fills.
    """
    f = sort_fills(fills)
    qty = f["qty"].to_numpy(dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for h in sorted(int(h) for h in horizons_ns):
        mk = fill_markouts(f, mid_ts_ns, mid_px, h, data_end_ns)
        ok = mk["valid"].to_numpy()
        bps = mk["markout_bps"].to_numpy()[ok]
        q = qty[ok]
        entry: dict[str, Any] = {"horizon_ns": h, "count": int(ok.sum()), "n_excluded": int((~ok).sum())}
        entry |= _stats(bps, "bps")
        entry |= _stats(mk["vs_mid_bps"].to_numpy()[ok], "vs_mid_bps")
        entry["mean_vs_mid_px"] = _mean(mk["vs_mid_px"].to_numpy()[ok])
        entry["mean_bps_qty_weighted"] = _fsum(bps * q) / _fsum(q) if len(q) else math.nan
        entry["histogram_bps"] = histogram(bps, n_bins)
        out[horizon_label(h)] = entry
    return out


def markout_curve(
    fills: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    data_end_ns: int,
    horizons_ns: Sequence[int] = DEFAULT_CURVE_HORIZONS_NS,
) -> list[dict[str, Any]]:
    """Mean/median/p10/p90 markout (bps vs fill price) and mean vs-mid bps at each horizon,
    as a list sorted by horizon (for the markout curve plot)."""
    f = sort_fills(fills)
    rows = []
    for h in sorted(int(h) for h in horizons_ns):
        mk = fill_markouts(f, mid_ts_ns, mid_px, h, data_end_ns)
        ok = mk["valid"].to_numpy()
        row: dict[str, Any] = {"horizon_ns": h, "label": horizon_label(h), "count": int(ok.sum())}
        row |= _stats(mk["markout_bps"].to_numpy()[ok], "bps")
        row["mean_vs_mid_bps"] = _mean(mk["vs_mid_bps"].to_numpy()[ok])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------------------------

def compute_report_metrics(
    fills: pd.DataFrame,
    orders: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    start_ns: int,
    end_ns: int,
    *,
    starting_balance: float | None = None,
    maker_fee: float | None = None,
    taker_fee: float | None = None,
    equity: pd.DataFrame | None = None,
    grid_step_ns: int = DEFAULT_GRID_STEP_NS,
    quote_ts_ns: np.ndarray | None = None,
    own_bid_px: np.ndarray | None = None,
    own_ask_px: np.ndarray | None = None,
    markout_horizons_ns: Sequence[int] = DEFAULT_MARKOUT_HORIZONS_NS,
    curve_horizons_ns: Sequence[int] = DEFAULT_CURVE_HORIZONS_NS,
    funding: float | None = None,
) -> dict[str, Any]:
    """All report metrics as a nested dict: ``pnl``, ``counts``, ``inventory``, ``risk``, ``markouts``.

    ``maker_fee``/``taker_fee`` are fee rates (fraction of notional, negative = rebate) used only
    for the ``expected_fees_from_rates`` cross-check. ``equity`` may be passed when already
    computed by :func:`equity_curve` (it must be on the same window). ``funding`` is net funding
    received in USDT, or None when the data has none (then 0.0 and funding_available false).
    Markouts treat the data as ending at min(end_ns, last mid timestamp).
    """
    f = sort_fills(fills)
    fmid = final_mid(mid_ts_ns, mid_px, end_ns)
    if equity is None:
        equity = equity_curve(f, mid_ts_ns, mid_px, start_ns, end_ns, step_ns=grid_step_ns,
                              quote_ts_ns=quote_ts_ns, own_bid_px=own_bid_px, own_ask_px=own_ask_px)
    ts = f["ts_event_ns"].to_numpy(dtype=np.int64)
    m_fill = mid_at(ts, mid_ts_ns, mid_px)

    ledger = fills_ledger_pnl(f, fmid, funding=funding or 0.0)
    split = pnl_decomposition(f, m_fill, fmid)
    notional = f["price"].to_numpy(dtype=np.float64) * f["qty"].to_numpy(dtype=np.float64)
    liq = f["liquidity"].astype(str).str.upper().to_numpy()
    expected_fees = math.nan
    if maker_fee is not None and taker_fee is not None:
        rates = np.where(liq == "MAKER", float(maker_fee), float(taker_fee))
        expected_fees = _fsum(notional * rates)
    pnl = {
        "net_pnl": ledger["net_pnl"],
        "gross_pnl": ledger["gross_pnl"],
        "fees_paid": ledger["fees_paid"],
        "fees_maker": _fsum(f["fee"].to_numpy(dtype=np.float64)[liq == "MAKER"]),
        "fees_taker": _fsum(f["fee"].to_numpy(dtype=np.float64)[liq == "TAKER"]),
        "expected_fees_from_rates": expected_fees,
        "maker_fee_rate": math.nan if maker_fee is None else float(maker_fee),
        "taker_fee_rate": math.nan if taker_fee is None else float(taker_fee),
        "spread_capture": split["spread_capture"],
        "inventory_pnl": split["inventory_pnl"],
        "funding": ledger["funding"],
        "funding_available": funding is not None,
        "cash": ledger["cash"],
        "final_position": ledger["position"],
        "final_mid": fmid,
        "n_fills_without_mid": split["n_fills_without_mid"],
        "n_fills_outside_window": int(((ts < start_ns) | (ts > end_ns)).sum()),
        "starting_balance": math.nan if starting_balance is None else float(starting_balance),
        "return_on_balance": (ledger["net_pnl"] / starting_balance) if starting_balance else math.nan,
    }
    data_end = min(int(end_ns), int(mid_ts_ns[-1])) if len(mid_ts_ns) else int(start_ns)
    return {
        "pnl": pnl,
        "counts": order_fill_counts(f, orders),
        "inventory": inventory_stats(f, m_fill, equity, start_ns, end_ns, fmid),
        "risk": risk_metrics(equity, start_ns, end_ns, starting_balance),
        "markouts": {
            "data_end_ns": data_end,
            "horizons": markout_summary(f, mid_ts_ns, mid_px, data_end, markout_horizons_ns),
            "curve": markout_curve(f, mid_ts_ns, mid_px, data_end, curve_horizons_ns),
        },
    }
