"""Metrics against hand-computed values (the arithmetic is written out in the comments)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.canonical_json import dumps_canonical, write_json_atomic
from mmbot.report.metrics import (
    MIN_DAYS_FOR_ANNUALISED_SHARPE,
    NS_PER_DAY,
    attribution_by_cause,
    compute_report_metrics,
    cvar,
    daily_figures,
    equity_curve,
    fill_markouts,
    fills_ledger_pnl,
    final_mid,
    funding_payments,
    markout_summary,
    max_drawdown,
    mid_at,
    mid_before,
    order_fill_counts,
    per_minute_pnl,
    pnl_decomposition,
    risk_metrics,
    sharpe_ratio,
    time_grid,
    time_weighted_abs_position,
)

S = 1_000_000_000  # ns per second
MS = 1_000_000


def make_fills(rows: list[tuple[int, str, float, float, float, str]], slippage: list[float] | None = None,
               cause: list[str] | None = None) -> pd.DataFrame:
    """rows of (ts_ns, side, price, qty, fee, liquidity) -> runner-shaped fills frame; the
    optional ``slippage`` (USDT) and ``cause`` columns are added when given."""
    df = pd.DataFrame({
        "ts_event_ns": np.array([r[0] for r in rows], dtype=np.int64),
        "client_order_id": [f"C{i}" for i in range(len(rows))],
        "venue_order_id": [f"V{i}" for i in range(len(rows))],
        "trade_id": [f"T{i:04d}" for i in range(len(rows))],
        "side": [r[1] for r in rows],
        "price": [float(r[2]) for r in rows],
        "qty": [float(r[3]) for r in rows],
        "fee": [float(r[4]) for r in rows],
        "liquidity": [r[5] for r in rows],
    })
    if slippage is not None:
        df["slippage"] = np.asarray(slippage, dtype=np.float64)
    if cause is not None:
        df["cause"] = cause
    return df


def orders_for(fills: pd.DataFrame, extra_canceled: int = 0) -> pd.DataFrame:
    rows = [{"client_order_id": r.client_order_id, "side": r.side, "price": r.price, "qty": r.qty,
             "ts_init_ns": r.ts_event_ns, "ts_last_ns": r.ts_event_ns, "status": "FILLED",
             "filled_qty": r.qty, "n_amends": 0} for r in fills.itertuples()]
    rows += [{"client_order_id": f"X{i}", "side": "BUY", "price": 1.0, "qty": 1.0, "ts_init_ns": 0,
              "ts_last_ns": 0, "status": "CANCELED", "filled_qty": 0.0, "n_amends": 1}
             for i in range(extra_canceled)]
    return pd.DataFrame(rows)


# Round trip from the brief: buy 1 @ 100 (mid 100.5, fee 0.02) at 10 s, sell 1 @ 102
# (mid 101.5, fee 0.0204) at 20 s, final mid 101.
ROUND_TRIP = make_fills([(10 * S, "BUY", 100.0, 1.0, 0.02, "MAKER"),
                         (20 * S, "SELL", 102.0, 1.0, 0.0204, "TAKER")])
RT_MID_TS = np.array([0, 10 * S, 20 * S, 30 * S], dtype=np.int64)
RT_MID_PX = np.array([100.2, 100.5, 101.5, 101.0])


# --------------------------------------------------------------------------------------------
# mid lookup
# --------------------------------------------------------------------------------------------

def test_mid_at_is_as_of_at_or_before() -> None:
    ts = np.array([-1, 0, 5 * S, 10 * S, 10 * S + 1, 99 * S], dtype=np.int64)
    got = mid_at(ts, RT_MID_TS, RT_MID_PX)
    # before the first sample: unknown; equal timestamps take that sample; otherwise the last one.
    assert np.isnan(got[0])
    assert got[1:].tolist() == [100.2, 100.2, 100.5, 100.5, 101.0]
    strict = mid_at(ts, RT_MID_TS, RT_MID_PX, strict=True)
    assert np.isnan(strict[1]) and strict[3] == 100.2  # strictly before 10 s -> the 0 s mid
    assert final_mid(RT_MID_TS, RT_MID_PX, 25 * S) == 101.5


# --------------------------------------------------------------------------------------------
# PnL
# --------------------------------------------------------------------------------------------

def test_round_trip_pnl_by_hand() -> None:
    led = fills_ledger_pnl(ROUND_TRIP, final_mid=101.0)
    # cash = -100*1 + 102*1 = 2.0; position = 1 - 1 = 0 -> gross = 2.0
    assert led["cash"] == pytest.approx(2.0, abs=1e-12)
    assert led["position"] == 0.0
    assert led["gross_pnl"] == pytest.approx(2.0, abs=1e-12)
    # fees = 0.02 + 0.0204 = 0.0404; net = 2.0 - 0.0404 = 1.9596
    assert led["fees_paid"] == pytest.approx(0.0404, abs=1e-12)
    assert led["net_pnl"] == pytest.approx(1.9596, abs=1e-12)
    split = pnl_decomposition(ROUND_TRIP, np.array([100.5, 101.5]), 101.0)
    # spread = (+1)(100.5-100)(1) + (-1)(101.5-102)(1) = 0.5 + 0.5 = 1.0
    assert split["spread_capture"] == pytest.approx(1.0, abs=1e-12)
    # inventory = (+1)(1)(101-100.5) + (-1)(1)(101-101.5) = 0.5 + 0.5 = 1.0
    assert split["inventory_pnl"] == pytest.approx(1.0, abs=1e-12)
    # identity: 1.0 + 1.0 - 0.0404 = 1.9596 = net
    assert split["spread_capture"] + split["inventory_pnl"] - split["fees_paid"] == pytest.approx(
        led["net_pnl"], abs=1e-12)


def test_open_inventory_is_marked_at_final_mid() -> None:
    fills = make_fills([(1 * S, "BUY", 100.0, 2.0, 0.04, "TAKER"),
                        (2 * S, "SELL", 101.0, 0.5, -0.0101, "MAKER")])  # maker rebate
    led = fills_ledger_pnl(fills, final_mid=99.0)
    # cash = -100*2 + 101*0.5 = -149.5; position = 2 - 0.5 = 1.5; mark = 1.5*99 = 148.5
    assert led["cash"] == pytest.approx(-149.5, abs=1e-12)
    assert led["position"] == pytest.approx(1.5, abs=1e-12)
    # gross = -149.5 + 148.5 = -1.0; fees = 0.04 - 0.0101 = 0.0299; net = -1.0299
    assert led["gross_pnl"] == pytest.approx(-1.0, abs=1e-12)
    assert led["fees_paid"] == pytest.approx(0.0299, abs=1e-12)
    assert led["net_pnl"] == pytest.approx(-1.0299, abs=1e-12)
    split = pnl_decomposition(fills, np.array([100.1, 100.9]), 99.0)
    # spread = 2*(100.1-100) + (-1)*0.5*(100.9-101) = 0.2 + 0.05 = 0.25
    assert split["spread_capture"] == pytest.approx(0.25, abs=1e-12)
    # inventory = 2*(99-100.1) + (-1)*0.5*(99-100.9) = -2.2 + 0.95 = -1.25
    assert split["inventory_pnl"] == pytest.approx(-1.25, abs=1e-12)


def test_flat_book_needs_no_final_mark() -> None:
    led = fills_ledger_pnl(ROUND_TRIP, final_mid=math.nan)
    assert led["net_pnl"] == pytest.approx(1.9596, abs=1e-12)
    # 0.1 + 0.2 - 0.3 leaves 2.8e-17 of float dust; it must count as flat.
    dust = make_fills([(1, "BUY", 10.0, 0.1, 0.0, "MAKER"), (2, "BUY", 10.0, 0.2, 0.0, "MAKER"),
                       (3, "SELL", 10.0, 0.3, 0.0, "MAKER")])
    assert fills_ledger_pnl(dust, math.nan)["position"] == 0.0


def test_funding_is_reported_as_unavailable() -> None:
    m = compute_report_metrics(ROUND_TRIP, orders_for(ROUND_TRIP), RT_MID_TS, RT_MID_PX, 0, 60 * S)
    assert m["pnl"]["funding"] == 0.0 and m["pnl"]["funding_available"] is False
    assert m["funding"]["available"] is False and m["funding"]["settlements"] == []
    # funding data present but no settlement in the window: available, zero
    none = funding_payments(ROUND_TRIP, [], [], RT_MID_TS, RT_MID_PX)
    m2 = compute_report_metrics(ROUND_TRIP, orders_for(ROUND_TRIP), RT_MID_TS, RT_MID_PX, 0, 60 * S, funding=none)
    assert m2["pnl"]["funding_available"] is True and m2["pnl"]["funding"] == 0.0
    assert m2["pnl"]["net_pnl"] == pytest.approx(1.9596, abs=1e-12)


def test_report_net_pnl_equals_ledger_to_the_cent() -> None:
    m = compute_report_metrics(ROUND_TRIP, orders_for(ROUND_TRIP), RT_MID_TS, RT_MID_PX, 0, 60 * S,
                               starting_balance=1000.0, maker_fee=0.0002, taker_fee=0.0002)
    led = fills_ledger_pnl(ROUND_TRIP, final_mid(RT_MID_TS, RT_MID_PX, 60 * S))
    assert m["pnl"]["net_pnl"] == led["net_pnl"]
    assert m["pnl"]["final_mid"] == 101.0
    # expected fees = 0.0002*100 + 0.0002*102 = 0.0404
    assert m["pnl"]["expected_fees_from_rates"] == pytest.approx(0.0404, abs=1e-12)
    assert set(m) == {"pnl", "counts", "inventory", "risk", "markouts", "attribution", "funding", "daily"}


fill_rows = st.lists(
    st.tuples(
        st.integers(0, 600),                       # seconds into the run
        st.sampled_from(["BUY", "SELL"]),
        st.floats(1.0, 100_000.0),                 # price
        st.floats(0.001, 100.0),                   # qty
        st.floats(-5.0, 5.0),                      # fee (rebates negative)
        st.sampled_from(["MAKER", "TAKER"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(rows=fill_rows, mids=st.lists(st.floats(1.0, 100_000.0), min_size=1, max_size=30),
       final=st.floats(1.0, 100_000.0))
def test_pnl_identity_holds_for_random_fills(rows, mids, final) -> None:
    fills = make_fills([(t * S, side, p, q, f, liq) for t, side, p, q, f, liq in sorted(rows, key=lambda r: r[0])])
    mid_ts = np.linspace(0, 600 * S, len(mids)).astype(np.int64)
    m_fill = mid_at(fills["ts_event_ns"].to_numpy(), mid_ts, np.array(mids))
    led = fills_ledger_pnl(fills, final)
    split = pnl_decomposition(fills, m_fill, final)
    scale = 1.0 + float((fills["price"] * fills["qty"]).sum())
    # net == spread + inventory - fees (up to float rounding relative to traded notional)
    assert led["net_pnl"] == pytest.approx(
        split["spread_capture"] + split["inventory_pnl"] - split["fees_paid"], abs=1e-9 * scale)
    # and the equity grid ends at the ledger's net PnL when marked at the same mid
    eq = equity_curve(fills, np.append(mid_ts, 601 * S), np.append(mids, final), 0, 601 * S, step_ns=60 * S)
    assert eq["net_pnl"].iloc[-1] == pytest.approx(led["net_pnl"], abs=1e-9 * scale)


# --------------------------------------------------------------------------------------------
# equity grid and risk
# --------------------------------------------------------------------------------------------

def test_time_grid_appends_end() -> None:
    assert time_grid(0, 25, 10).tolist() == [0, 10, 20, 25]
    assert time_grid(0, 20, 10).tolist() == [0, 10, 20]


def test_equity_curve_by_hand() -> None:
    eq = equity_curve(ROUND_TRIP, RT_MID_TS, RT_MID_PX, 0, 40 * S, step_ns=10 * S,
                      quote_ts_ns=np.array([5 * S, 15 * S], dtype=np.int64),
                      own_bid_px=np.array([99.9, np.nan]), own_ask_px=np.array([100.9, 101.9]))
    assert eq["ts_ns"].tolist() == [0, 10 * S, 20 * S, 30 * S, 40 * S]
    assert eq["position"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    # t=10 s: cash -100, mid 100.5 -> gross 0.5, fees 0.02 -> net 0.48
    # t=20 s: cash 2, flat -> gross 2.0, fees 0.0404 -> net 1.9596
    assert eq["cash"].tolist() == pytest.approx([0.0, -100.0, 2.0, 2.0, 2.0])
    assert eq["gross_pnl"].tolist() == pytest.approx([0.0, 0.5, 2.0, 2.0, 2.0])
    assert eq["net_pnl"].tolist() == pytest.approx([0.0, 0.48, 1.9596, 1.9596, 1.9596])
    assert eq["drawdown"].tolist() == pytest.approx([0.0] * 5)
    # quotes as of each grid time: none at 0 s, the 5 s sample at 10 s, then the 15 s sample
    assert np.isnan(eq["own_bid"][0]) and eq["own_bid"][1] == 99.9 and np.isnan(eq["own_bid"][2])
    assert eq["own_ask"].tolist()[1:] == [100.9, 101.9, 101.9, 101.9]


def test_equity_drawdown_by_hand() -> None:
    fills = make_fills([(10 * S, "BUY", 100.0, 1.0, 0.0, "MAKER")])
    mid_ts = np.array([0, 10 * S, 20 * S, 30 * S, 40 * S], dtype=np.int64)
    eq = equity_curve(fills, mid_ts, np.array([100.0, 100.0, 103.0, 98.0, 101.0]), 0, 40 * S, step_ns=10 * S)
    # net = pos*(mid - 100): 0, 0, 3, -2, 1; running peak 0, 0, 3, 3, 3 -> drawdown 0, 0, 0, -5, -2
    assert eq["net_pnl"].tolist() == pytest.approx([0, 0, 3, -2, 1])
    assert eq["drawdown"].tolist() == pytest.approx([0, 0, 0, -5, -2])
    dd = max_drawdown(eq["net_pnl"].to_numpy(), starting_balance=100.0)
    # 5 USDT from a peak equity of 100 + 3 = 103 -> 5/103
    assert dd["max_drawdown_usdt"] == pytest.approx(5.0)
    assert dd["max_drawdown_frac"] == pytest.approx(5 / 103)


def test_max_drawdown_known_series() -> None:
    # peak 0,2,5,5,5,5,5 ; fall 0,0,0,4,2,7,1 -> 7 USDT; peak equity 95 + 5 = 100 -> 7 %
    dd = max_drawdown(np.array([0, 2, 5, 1, 3, -2, 4.0]), starting_balance=95.0)
    assert dd["max_drawdown_usdt"] == pytest.approx(7.0)
    assert dd["max_drawdown_frac"] == pytest.approx(0.07)
    # the run starts at PnL 0, so an immediate loss is a drawdown from 0: 3 USDT of 10
    dd = max_drawdown(np.array([-1.0, -3.0, -2.0]), starting_balance=10.0)
    assert dd["max_drawdown_usdt"] == pytest.approx(3.0) and dd["max_drawdown_frac"] == pytest.approx(0.3)
    assert math.isnan(max_drawdown(np.array([1.0, 0.0]))["max_drawdown_frac"])  # no balance given


@pytest.mark.parametrize("step_s", [7, 45, 90, 3_600])
def test_minute_figures_do_not_depend_on_the_equity_grid_step(step_s: int) -> None:
    """A fee of 1 USDT at 59 s into each of 10 minutes (constant mid): every minute loses exactly
    1 on the default 1 s grid and on any other step (7 s and 45 s do not divide 60 s, 90 s and
    1 h are coarser): the grid carries each minute boundary. The reported step is the configured one."""
    fills = make_fills([(k * 60 * S + 59 * S, "BUY" if k % 2 == 0 else "SELL", 100.0, 1.0, 1.0, "MAKER")
                        for k in range(10)])
    mid_ts, mid_px = np.array([0], dtype=np.int64), np.array([100.0])
    end = 600 * S + 5 * S
    eq = equity_curve(fills, mid_ts, mid_px, 0, end, step_ns=step_s * S)
    assert set(np.arange(0, 601, 60) * S) <= set(eq["ts_ns"].tolist())
    assert per_minute_pnl(eq, 0, end)["pnl"].tolist() == pytest.approx([-1.0] * 10)
    r = risk_metrics(eq, 0, end, None, grid_step_ns=step_s * S)
    assert (r["worst_minute_pnl"], r["best_minute_pnl"], r["equity_grid_step_ns"]) == (-1.0, -1.0, step_s * S)
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, mid_px, 0, end, grid_step_ns=step_s * S)
    assert m["risk"]["worst_minute_pnl"] == -1.0 and m["risk"]["equity_grid_step_ns"] == step_s * S


def test_per_minute_pnl_drops_partial_minute() -> None:
    eq = pd.DataFrame({"ts_ns": np.arange(0, 211, 30, dtype=np.int64) * S,
                       "net_pnl": [0, 1, 2, 1, -1, 0, 3, 5.0]})
    pm = per_minute_pnl(eq, 0, 210 * S)
    # boundaries 60/120/180 s -> net 2, -1, 3 -> minute PnL 2-0, -1-2, 3-(-1); 180-210 s dropped
    assert pm["pnl"].tolist() == pytest.approx([2.0, -3.0, 4.0])
    assert pm["minute_start_ns"].tolist() == [0, 60 * S, 120 * S]


def test_sharpe_known_series() -> None:
    raw, ann = sharpe_ratio(np.array([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5; sample var = (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2)/3 = 5/3; raw = 2.5/sqrt(5/3) = 1.93649
    assert raw == pytest.approx(2.5 / math.sqrt(5 / 3), rel=1e-12)
    assert raw == pytest.approx(1.936492, abs=1e-6)
    # annualised with sqrt(525600) = 724.983: 1.93649 * 724.983 = 1403.92
    assert ann == pytest.approx(raw * math.sqrt(525_600), rel=1e-12)
    assert ann == pytest.approx(1403.92, abs=0.01)
    assert all(math.isnan(v) for v in sharpe_ratio(np.array([1.0, 1.0, 1.0])))
    assert all(math.isnan(v) for v in sharpe_ratio(np.array([1.0])))


def test_cvar_known_series() -> None:
    # n=40: k = ceil(0.05*40) = 2 worst values {-10, -6} -> -8
    assert cvar(np.array([-10.0, -6.0] + [1.0] * 38)) == pytest.approx(-8.0)
    # n=100 of -49..50: k = 5 (0.05*100 must not round up to 6) -> mean(-49..-45) = -47
    assert cvar(np.arange(-49.0, 51.0)) == pytest.approx(-47.0)
    # small sample n=10: k = ceil(0.5) = 1 -> the single worst minute
    assert cvar(np.array([3, -1, 2, -4, 5, 0, 1, 1, 2, 2.0])) == -4.0
    assert math.isnan(cvar(np.array([])))


# --------------------------------------------------------------------------------------------
# counts and inventory
# --------------------------------------------------------------------------------------------

def test_counts_by_hand() -> None:
    fills = make_fills([(1, "BUY", 100.0, 1.0, 0.01, "MAKER"), (2, "SELL", 100.0, 3.0, 0.1, "TAKER")])
    orders = orders_for(fills, extra_canceled=3)
    orders.loc[len(orders)] = {"client_order_id": "P", "side": "BUY", "price": 1.0, "qty": 2.0,
                               "ts_init_ns": 0, "ts_last_ns": 0, "status": "REJECTED",
                               "filled_qty": 0.0, "n_amends": 0}
    c = order_fill_counts(fills, orders)
    assert (c["n_orders"], c["n_fills"], c["n_filled_orders"], c["n_canceled_orders"]) == (6, 2, 2, 3)
    assert c["fill_ratio"] == pytest.approx(2 / 6)          # 2 orders with fills of 6
    assert c["maker_share"] == pytest.approx(0.25)          # maker qty 1 of 1 + 3
    assert c["cancels_per_fill"] == pytest.approx(1.5)      # 3 cancels / 2 fills
    assert c["n_amends"] == 3 and c["n_rejected_orders"] == 1
    assert c["traded_notional"] == pytest.approx(400.0)     # 100*1 + 100*3
    assert c["fees_bps_of_notional"] == pytest.approx(0.11 / 400 * 1e4)
    assert c["status_counts"] == {"CANCELED": 3, "FILLED": 2, "REJECTED": 1}


def test_time_weighted_inventory_exact() -> None:
    fills = make_fills([(10 * S, "BUY", 1.0, 2.0, 0.0, "MAKER"), (40 * S, "SELL", 1.0, 1.0, 0.0, "MAKER"),
                        (70 * S, "SELL", 1.0, 3.0, 0.0, "MAKER")])
    # |pos|: 0 on [0,10), 2 on [10,40), 1 on [40,70), 2 on [70,100] -> (0 + 60 + 30 + 60)/100 = 1.5
    assert time_weighted_abs_position(fills, 0, 100 * S) == pytest.approx(1.5, rel=1e-15)
    # a fill before the window counts from its start; one after the end is ignored: 1 on [0,10]
    edge = make_fills([(-5 * S, "BUY", 1.0, 1.0, 0.0, "MAKER"), (20 * S, "BUY", 1.0, 5.0, 0.0, "MAKER")])
    assert time_weighted_abs_position(edge, 0, 10 * S) == pytest.approx(1.0)


def test_inventory_stats_by_hand() -> None:
    fills = make_fills([(10 * S, "BUY", 100.0, 2.0, 0.0, "MAKER"), (40 * S, "SELL", 100.0, 1.0, 0.0, "MAKER"),
                        (70 * S, "SELL", 100.0, 3.0, 0.0, "MAKER")])
    mid_ts = np.array([0], dtype=np.int64)
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, np.array([100.0]), 0, 100 * S)
    inv = m["inventory"]
    # post-fill positions 2, 1, -2 -> avg |pos| = 5/3, max 2, final -2 (notional -200 at mid 100)
    assert inv["avg_abs_position_base"] == pytest.approx(5 / 3)
    assert inv["max_abs_position_base"] == 2.0 and inv["max_abs_notional"] == pytest.approx(200.0)
    assert inv["final_position_base"] == -2.0 and inv["final_position_notional"] == pytest.approx(-200.0)
    assert inv["twa_abs_position_base"] == pytest.approx(1.5)
    assert inv["twa_abs_notional"] == pytest.approx(150.0)  # 1 s grid, constant mid 100


# --------------------------------------------------------------------------------------------
# markouts
# --------------------------------------------------------------------------------------------

MK_MID_TS = np.array([0, 1000, 1050, 1100, 2000, 5000, 12000], dtype=np.int64) * MS
MK_MID_PX = np.array([100.0, 100.0, 100.1, 100.2, 100.5, 99.5, 101.0])
# The mid strictly before each fill (the book the order rested in) and, for B and C, the book
# update at the fill's own timestamp that moved through the order:
MK_FILLS = make_fills([(1000 * MS, "BUY", 99.95, 1.0, 0.0, "MAKER"),    # mid before 100.0 (0 s sample)
                       (2000 * MS, "SELL", 100.6, 1.0, 0.0, "MAKER"),   # mid before 100.2 (then 100.5 at 2 s)
                       (5000 * MS, "BUY", 99.4, 3.0, 0.0, "MAKER")])    # mid before 100.5 (then 99.5 at 5 s)


def test_markouts_exact_with_exclusion() -> None:
    h100 = fill_markouts(MK_FILLS, MK_MID_TS, MK_MID_PX, 100 * MS, 12 * S)
    # A: mid(1.1 s) = 100.2 -> (100.2-99.95)/99.95*1e4 = 25.0125 bps; vs mid before +0.2
    # B: mid(2.1 s) = 100.5 -> -(100.5-100.6)/100.6*1e4 = 9.9404 bps; vs mid before -(100.5-100.2) = -0.3
    # C: mid(5.1 s) = 99.5  -> (99.5-99.4)/99.4*1e4 = 10.0604 bps; vs mid before 99.5-100.5 = -1.0
    assert h100["markout_bps"].tolist() == pytest.approx(
        [0.25 / 99.95 * 1e4, 0.1 / 100.6 * 1e4, 0.1 / 99.4 * 1e4], rel=1e-9)
    assert h100["markout_bps"].tolist() == pytest.approx([25.0125, 9.9404, 10.0604], abs=1e-4)
    assert h100["vs_mid_px"].tolist() == pytest.approx([0.2, -0.3, -1.0], abs=1e-12)
    # vs mid (bps of the fill price): 0.2/99.95, -0.3/100.6, -1/99.4 (x 1e4)
    assert h100["vs_mid_bps"].tolist() == pytest.approx([20.0100, -29.8211, -100.6036], abs=1e-4)
    # spread (bps): (100-99.95)/99.95 = 5.0025; -(100.2-100.6)/100.6 = 39.7614; (100.5-99.4)/99.4 = 110.6640
    assert h100["spread_bps"].tolist() == pytest.approx([5.0025, 39.7614, 110.6640], abs=1e-4)
    # markout = spread + vs mid, fill by fill
    assert h100["markout_bps"].tolist() == pytest.approx((h100["spread_bps"] + h100["vs_mid_bps"]).tolist(), rel=1e-12)

    h10 = fill_markouts(MK_FILLS, MK_MID_TS, MK_MID_PX, 10 * S, 12 * S)
    # A: mid(11 s) = 99.5 -> (99.5-99.95)/99.95*1e4 = -45.0225; vs mid before 99.5-100 = -0.5
    # B: mid(12 s) = 101 (12 s is the last data point: included) -> -(101-100.6)/100.6*1e4 = -39.7614;
    #    vs mid before -(101-100.2) = -0.8
    # C: 15 s is past the data end (12 s) -> excluded
    assert h10["valid"].tolist() == [True, True, False]
    assert h10["markout_bps"].tolist()[:2] == pytest.approx([-45.0225, -39.7614], abs=1e-4)
    assert h10["vs_mid_px"].tolist()[:2] == pytest.approx([-0.5, -0.8], abs=1e-12)
    assert math.isnan(h10["markout_bps"][2])


def test_zero_second_markout_is_the_spread_capture() -> None:
    """Item 1.5: the 0 s markout uses the mid strictly before the fill, not the book update
    that filled it; so it is the spread capture in bps and 'vs mid' is 0 there."""
    h0 = fill_markouts(MK_FILLS, MK_MID_TS, MK_MID_PX, 0, 12 * S)
    # C bought at 99.4 with the mid at 100.5 just before; the same-timestamp update to 99.5 is
    # the fill's own trigger. Spread: (100.5-99.4)/99.4*1e4 = 110.664 bps, not (99.5-99.4)/99.4 = 10.06
    assert h0["markout_bps"].tolist() == pytest.approx([5.0025, 39.7614, 110.6640], abs=1e-4)
    assert h0["vs_mid_px"].tolist() == [0.0, 0.0, 0.0]


def test_markout_summary_stats() -> None:
    summary = markout_summary(MK_FILLS, MK_MID_TS, MK_MID_PX, 12 * S)
    assert list(summary) == ["100ms", "1s", "10s"]
    a, b = (99.5 - 99.95) / 99.95 * 1e4, -(101.0 - 100.6) / 100.6 * 1e4
    s10 = summary["10s"]
    assert (s10["count"], s10["n_excluded"]) == (2, 1)
    assert s10["mean_bps"] == pytest.approx((a + b) / 2)         # -42.392
    assert s10["median_bps"] == pytest.approx((a + b) / 2)
    # linear percentiles of 2 sorted values a < b: p10 = a + 0.1*(b-a), p90 = a + 0.9*(b-a)
    assert s10["p10_bps"] == pytest.approx(a + 0.1 * (b - a))
    assert s10["p90_bps"] == pytest.approx(a + 0.9 * (b - a))
    assert s10["mean_vs_mid_px"] == pytest.approx((-0.5 - 0.8) / 2)
    # adverse selection at 10 s: -0.5*1 + -0.8*1 = -1.3 USDT (C excluded)
    assert s10["adverse_selection_usdt"] == pytest.approx(-1.3)
    # 1 s: A: mid(2 s)=100.5 -> 55.0275; B: mid(3 s)=100.5 -> 9.9404; C: mid(6 s)=99.5 -> 10.0604
    s1 = summary["1s"]
    vals = [0.55 / 99.95 * 1e4, 0.1 / 100.6 * 1e4, 0.1 / 99.4 * 1e4]
    assert s1["count"] == 3 and s1["mean_bps"] == pytest.approx(sum(vals) / 3)
    assert s1["median_bps"] == pytest.approx(0.1 / 99.4 * 1e4)
    # qty-weighted: (55.0275*1 + 9.9404*1 + 10.0604*3)/5
    assert s1["mean_bps_qty_weighted"] == pytest.approx((vals[0] + vals[1] + 3 * vals[2]) / 5)
    # adverse at 1 s: A +(100.5-100)*1 = 0.5; B -(100.5-100.2)*1 = -0.3; C (99.5-100.5)*3 = -3.0 -> -2.8
    assert s1["adverse_selection_usdt"] == pytest.approx(-2.8)
    assert sum(s1["histogram_bps"]["counts"]) == 3 and len(s1["histogram_bps"]["edges"]) == 21


def test_markouts_use_the_earlier_of_end_and_last_mid() -> None:
    # the run ends at 11 s, before the last mid sample: B's 10 s horizon (12 s) is now excluded
    m = compute_report_metrics(MK_FILLS, orders_for(MK_FILLS), MK_MID_TS, MK_MID_PX, 0, 11 * S)
    assert m["markouts"]["data_end_ns"] == 11 * S
    assert (m["markouts"]["horizons"]["10s"]["count"], m["markouts"]["horizons"]["10s"]["n_excluded"]) == (1, 2)
    assert [r["label"] for r in m["markouts"]["curve"]] == ["0s", "100ms", "500ms", "1s", "5s", "10s", "30s"]
    assert m["markouts"]["curve"][-1]["count"] == 0 and math.isnan(m["markouts"]["curve"][-1]["mean_bps"])


# --------------------------------------------------------------------------------------------
# determinism and canonical JSON
# --------------------------------------------------------------------------------------------

def test_metrics_do_not_depend_on_fill_row_order() -> None:
    rng = np.random.default_rng(3)
    n = 200
    ts = np.sort(rng.integers(0, 300, n)) * S  # many fills share a timestamp
    fills = make_fills([(int(t), "BUY" if rng.random() < 0.5 else "SELL", float(100 + rng.normal()),
                         float(rng.uniform(0.1, 2)), float(rng.normal(0, 0.01)), "MAKER") for t in ts])
    mid_ts = np.arange(0, 301, dtype=np.int64) * S
    mids = 100 + np.cumsum(rng.normal(0, 0.05, len(mid_ts)))
    args = (mid_ts, mids, 0, 300 * S)
    a = compute_report_metrics(fills, orders_for(fills), *args, starting_balance=1e4)
    shuffled = fills.sample(frac=1.0, random_state=11)
    b = compute_report_metrics(shuffled, orders_for(fills), *args, starting_balance=1e4)
    assert dumps_canonical(a) == dumps_canonical(b)


def test_canonical_json_is_byte_stable() -> None:
    a = {"b": 1, "a": {"y": 0.1 + 0.2, "x": [1.0, float("nan")]}, "c": np.float64(1 / 3)}
    b = {"c": 1 / 3, "a": {"x": [np.float32(1.0), float("nan")], "y": 0.3}, "b": np.int64(1)}
    assert dumps_canonical(a) == dumps_canonical(b)
    text = dumps_canonical(a).decode()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert json.loads(text) == {"a": {"x": [1.0, None], "y": 0.3}, "b": 1, "c": 0.3333333333}
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')


def test_canonical_json_values() -> None:
    doc = {"inf": float("inf"), "ninf": -math.inf, "negzero": -0.0, "big": 2**62 + 1,
           "tiny": 1.234567890123e-9, "round": 2.00000000004, "flag": np.bool_(True),
           "tuple": (1, 2), "set": {3, 1, 2}, "arr": np.array([1.5, 2.5])}
    out = json.loads(dumps_canonical(doc))
    assert out["inf"] is None and out["ninf"] is None
    assert out["negzero"] == 0.0 and '"negzero": 0.0' in dumps_canonical(doc).decode()
    assert out["big"] == 2**62 + 1                      # ints are never rounded
    assert out["tiny"] == 1.23456789e-09                # 10 significant digits
    assert out["round"] == 2.0
    assert out["flag"] is True and out["tuple"] == [1, 2] and out["set"] == [1, 2, 3]
    assert out["arr"] == [1.5, 2.5]


def test_write_json_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    write_json_atomic(target, {"b": 2, "a": 1})
    write_json_atomic(target, {"a": 1, "b": 2})
    assert target.read_bytes() == b'{\n  "a": 1,\n  "b": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp file left behind


def test_no_fills_gives_zeros_and_nulls() -> None:
    empty = ROUND_TRIP.iloc[0:0]
    m = compute_report_metrics(empty, orders_for(empty), RT_MID_TS, RT_MID_PX, 0, 120 * S,
                               starting_balance=100.0)
    assert m["pnl"]["net_pnl"] == 0.0 and m["counts"]["n_fills"] == 0
    assert m["risk"]["n_minutes"] == 2 and m["risk"]["max_drawdown_usdt"] == 0.0
    doc = json.loads(dumps_canonical(m))
    assert doc["risk"]["sharpe_annualised"] is None and doc["markouts"]["horizons"]["1s"]["mean_bps"] is None


# --------------------------------------------------------------------------------------------
# item 1.5: spread capture against the mid strictly before the fill (one clock: exchange time)
# --------------------------------------------------------------------------------------------

def test_spread_capture_uses_the_mid_strictly_before_the_fill() -> None:
    """The book moves through our 99.9 bid at 10 s (mid 100.5 -> 99.5) and fills it at that
    same exchange time. The edge we captured is against the book we rested in (100.5), not the
    book after the move (99.5); the move itself is adverse selection, in inventory PnL."""
    mid_ts = np.array([0, 10 * S, 20 * S], dtype=np.int64)
    mid_px = np.array([100.5, 99.5, 99.5])
    fills = make_fills([(10 * S, "BUY", 99.9, 1.0, 0.0, "MAKER")])
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, mid_px, 0, 20 * S)
    # spread = (+1)(100.5 - 99.9)(1) = 0.6 (the mid after the fill's own update would give -0.4)
    assert m["pnl"]["spread_capture"] == pytest.approx(0.6, abs=1e-12)
    assert mid_before(fills["ts_event_ns"], mid_ts, mid_px).tolist() == [100.5]
    # inventory = (+1)(1)(99.5 - 100.5) = -1.0; gross = cash -99.9 + 99.5 = -0.4 = 0.6 - 1.0
    assert m["pnl"]["inventory_pnl"] == pytest.approx(-1.0, abs=1e-12)
    assert m["pnl"]["gross_pnl"] == pytest.approx(-0.4, abs=1e-12)
    # adverse selection at 100 ms: (+1)(99.5 - 100.5)(1) = -1.0 USDT, its own line
    assert m["pnl"]["adverse_selection"]["100ms"] == pytest.approx(-1.0, abs=1e-12)
    curve = {r["label"]: r for r in m["markouts"]["curve"]}
    assert curve["0s"]["mean_bps"] == pytest.approx(0.6 / 99.9 * 1e4, rel=1e-12)  # +60.06 bps
    assert curve["0s"]["mean_vs_mid_bps"] == 0.0
    assert m["attribution"]["by_cause"]["venue"]["spread_capture"] == pytest.approx(0.6, abs=1e-12)


# --------------------------------------------------------------------------------------------
# shared decision 4: exchange fee and extra slippage apart
# --------------------------------------------------------------------------------------------

def test_slippage_is_its_own_line() -> None:
    # the round trip again, with 0.005 and 0.003 USDT of extra slippage on top of the fees
    fills = make_fills([(10 * S, "BUY", 100.0, 1.0, 0.02, "MAKER"), (20 * S, "SELL", 102.0, 1.0, 0.0204, "TAKER")],
                       slippage=[0.005, 0.003])
    led = fills_ledger_pnl(fills, final_mid=101.0)
    # net = gross 2.0 - fees 0.0404 - slippage 0.008 = 1.9516
    assert led["fees_paid"] == pytest.approx(0.0404, abs=1e-12)
    assert led["slippage"] == pytest.approx(0.008, abs=1e-12)
    assert led["net_pnl"] == pytest.approx(1.9516, abs=1e-12)
    m = compute_report_metrics(fills, orders_for(fills), RT_MID_TS, RT_MID_PX, 0, 40 * S,
                               maker_fee=0.0002, taker_fee=0.0002, grid_step_ns=10 * S)
    assert m["pnl"]["slippage"] == pytest.approx(0.008, abs=1e-12)
    # the fee-rate cross-check compares exchange fees only: 0.0002*(100 + 102) = 0.0404
    assert m["pnl"]["expected_fees_from_rates"] == pytest.approx(m["pnl"]["fees_paid"], abs=1e-12)
    eq = equity_curve(fills, RT_MID_TS, RT_MID_PX, 0, 40 * S, step_ns=10 * S)
    assert eq["slippage"].tolist() == pytest.approx([0.0, 0.005, 0.008, 0.008, 0.008])
    assert eq["net_pnl"].iloc[-1] == pytest.approx(1.9516, abs=1e-12)


# --------------------------------------------------------------------------------------------
# item 1.8: Sharpe only annualised from >= 30 complete UTC days; daily figures
# --------------------------------------------------------------------------------------------

def _daily_equity(day_pnls: list[float]) -> pd.DataFrame:
    """An equity grid with one point per UTC midnight (day 0 = 2024-06-03)."""
    day0 = 1_717_372_800 * S
    net = np.concatenate(([0.0], np.cumsum(day_pnls)))
    return pd.DataFrame({"ts_ns": day0 + NS_PER_DAY * np.arange(len(net), dtype=np.int64), "net_pnl": net})


def test_annualised_sharpe_needs_30_complete_days() -> None:
    assert MIN_DAYS_FOR_ANNUALISED_SHARPE == 30
    pnl = [1.0, 3.0] * 15  # 30 days: mean 2, sample var 30/29
    eq = _daily_equity(pnl)
    r = risk_metrics(eq, int(eq["ts_ns"].iloc[0]), int(eq["ts_ns"].iloc[-1]), None)
    per_day = 2.0 / math.sqrt(30 / 29)  # 1.96638
    assert r["n_days_complete"] == 30
    assert r["sharpe_per_day"] == pytest.approx(per_day, rel=1e-12)
    assert r["sharpe_annualised"] == pytest.approx(per_day * math.sqrt(365), rel=1e-12)  # 37.568
    assert r["sharpe_annualised"] == pytest.approx(37.568, abs=1e-3)
    # s.e. = sqrt(365) * sqrt((1 + 1.96638^2/2) / 30) = 5.974
    assert r["sharpe_annualised_se"] == pytest.approx(math.sqrt(365) * math.sqrt((1 + per_day**2 / 2) / 30), rel=1e-12)
    assert r["sharpe_annualised_se"] == pytest.approx(5.974, abs=1e-3)
    assert r["sharpe_annualised_note"] == ""
    # 29 days: not annualised, and the report says why
    eq29 = _daily_equity(pnl[:29])
    r29 = risk_metrics(eq29, int(eq29["ts_ns"].iloc[0]), int(eq29["ts_ns"].iloc[-1]), None)
    assert r29["n_days_complete"] == 29 and math.isfinite(r29["sharpe_per_day"])
    assert math.isnan(r29["sharpe_annualised"]) and math.isnan(r29["sharpe_annualised_se"])
    assert r29["sharpe_annualised_note"] == "n/a: needs >= 30 complete UTC days, run has 29"


def test_short_run_shows_no_annualised_sharpe() -> None:
    """The audit's case: 59 one-minute samples gave 'Sharpe (annualised) -1992.62'."""
    rng = np.random.default_rng(5)
    fills = make_fills([(int(t) * S, "BUY" if rng.random() < 0.5 else "SELL", float(100 + rng.normal()), 1.0, 0.01,
                         "MAKER") for t in np.sort(rng.integers(0, 3600, 100))])
    mid_ts = np.arange(0, 3601, dtype=np.int64) * S
    mids = 100 + np.cumsum(rng.normal(0, 0.05, len(mid_ts)))
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, mids, 0, 3600 * S)
    r = m["risk"]
    assert math.isnan(r["sharpe_annualised"])
    assert r["n_minutes"] == 60 and math.isfinite(r["sharpe_per_minute"])
    assert r["n_days_complete"] == 0
    doc = json.loads(dumps_canonical(m))
    assert doc["risk"]["sharpe_annualised"] is None
    assert doc["risk"]["sharpe_annualised_note"] == "n/a: needs >= 30 complete UTC days, run has 0"


H = 3600 * S
DAY0 = 1_717_372_800 * S  # 2024-06-03T00:00:00Z


def test_daily_figures_by_hand() -> None:
    # run 2024-06-03 12:00 -> 2024-06-05 06:00: a partial day, a complete day, a partial day
    start, end = DAY0 + 12 * H, DAY0 + 2 * NS_PER_DAY + 6 * H
    mid_ts = np.array([start, DAY0 + NS_PER_DAY + 6 * H, DAY0 + NS_PER_DAY + 12 * H, DAY0 + 2 * NS_PER_DAY + 3 * H],
                      dtype=np.int64)
    mid_px = np.array([100.0, 102.0, 99.0, 101.0])
    fills = make_fills([(DAY0 + 18 * H, "BUY", 100.0, 1.0, 0.01, "MAKER"),
                        (DAY0 + 2 * NS_PER_DAY + 4 * H, "SELL", 101.0, 1.0, 0.01, "MAKER")])
    # one settlement at day 1 08:00, long 1, mid before = 102 -> -1*102*0.0001 = -0.0102
    funding = funding_payments(fills, [DAY0 + NS_PER_DAY + 8 * H], [0.0001], mid_ts, mid_px)
    assert funding["payment_usdt"].tolist() == pytest.approx([-0.0102])
    eq = equity_curve(fills, mid_ts, mid_px, start, end, step_ns=H, funding=funding)
    days = daily_figures(fills, eq, mid_ts, mid_px, start, end, funding)
    assert [d["day"] for d in days] == ["2024-06-03", "2024-06-04", "2024-06-05"]
    assert [d["complete"] for d in days] == [False, True, False]
    # day 0 closes at net -0.01 (bought at the mid 100, fee 0.01)
    # day 1 closes at mid 99: gross -1, fees 0.01, funding -0.0102 -> -1.0202; day PnL -1.0102
    # day 2: sold at 101: cash +1, flat, fees 0.02, funding -0.0102 -> 0.9698; day PnL 1.99
    assert [d["net_pnl"] for d in days] == pytest.approx([-0.01, -1.0102, 1.99], abs=1e-12)
    assert sum(d["net_pnl"] for d in days) == pytest.approx(eq["net_pnl"].iloc[-1], abs=1e-12)
    assert [d["funding"] for d in days] == pytest.approx([0.0, -0.0102, 0.0], abs=1e-12)
    assert [d["fees_paid"] for d in days] == pytest.approx([0.01, 0.0, 0.01], abs=1e-12)
    assert [d["n_fills"] for d in days] == [1, 0, 1]
    assert [d["traded_notional"] for d in days] == pytest.approx([100.0, 0.0, 101.0])
    # drawdowns: day 0 from 0 to -0.01; day 1 from the 06:00 peak 1.99 down to -1.0202 = 3.0102;
    # day 2 from the 03:00 peak 0.9798 (mid 101) to 0.9698 after the sell's fee = 0.01
    assert [d["max_drawdown_usdt"] for d in days] == pytest.approx([0.01, 3.0102, 0.01], abs=1e-9)
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, mid_px, start, end, grid_step_ns=H,
                               funding=funding)
    assert m["daily"] == days and m["risk"]["n_days_complete"] == 1
    assert math.isnan(m["risk"]["sharpe_per_day"])  # one day: no dispersion to measure


# --------------------------------------------------------------------------------------------
# section 5: funding
# --------------------------------------------------------------------------------------------

# mids 100 (10 s), 101 (100 s), 99 (200 s), 100 (300 s); marks 100.5 (390 s), 100.2 (500 s)
FD_MID_TS = np.array([10, 100, 200, 300], dtype=np.int64) * S
FD_MID_PX = np.array([100.0, 101.0, 99.0, 100.0])
FD_MARK_TS = np.array([390, 500], dtype=np.int64) * S
FD_MARK_PX = np.array([100.5, 100.2])
FD_FILLS = make_fills([(50 * S, "BUY", 100.0, 2.0, 0.0, "MAKER"),    # +2
                       (150 * S, "SELL", 101.0, 4.0, 0.0, "MAKER"),  # -2
                       (250 * S, "BUY", 99.0, 2.0, 0.0, "MAKER"),    # flat
                       (350 * S, "BUY", 100.0, 1.0, 0.0, "MAKER"),   # +1
                       (450 * S, "SELL", 100.0, 3.0, 0.0, "MAKER")])  # -2
FD_SETTLE = np.array([5, 120, 180, 300, 400, 450, 500], dtype=np.int64) * S
FD_RATES = np.array([0.0001, 0.0001, -0.0003, -0.0002, -0.0002, 0.0001, 0.0001])


def test_funding_payments_by_hand() -> None:
    f = funding_payments(FD_FILLS, FD_SETTLE, FD_RATES, FD_MID_TS, FD_MID_PX, mark_ts_ns=FD_MARK_TS,
                         mark_px=FD_MARK_PX, start_ns=0, end_ns=600 * S)
    assert f["position_base"].tolist() == [0.0, 2.0, -2.0, 0.0, 1.0, -2.0, -2.0]
    assert f["price_source"].tolist() == ["none", "mid", "mid", "mid", "mark", "mark", "mark"]
    # 5 s: before the first mid, flat -> 0 (no price needed)
    # 120 s: long 2, positive rate, mid before 101 -> -2*101*0.0001 = -0.0202 (longs pay)
    # 180 s: short 2, negative rate -> -(-2)*101*(-0.0003) = -0.0606 (shorts pay negative rates)
    # 300 s: flat -> 0; the price is the mid strictly before 300 s (99), not the 300 s update (100)
    # 400 s: long 1, negative rate, mark 100.5 (390 s) -> -1*100.5*(-0.0002) = +0.0201 (received)
    # 450 s: the sell of 3 at 450 s counts (fills at ts <= T): short 2, mark 100.5 -> -(-2)*100.5*0.0001 = +0.0201
    # 500 s: short 2, positive rate, mark 100.2 at 500 s itself -> -(-2)*100.2*0.0001 = +0.02004
    assert f["price"].tolist()[1:] == [101.0, 101.0, 99.0, 100.5, 100.5, 100.2]
    assert f["payment_usdt"].tolist() == pytest.approx([0.0, -0.0202, -0.0606, 0.0, 0.0201, 0.0201, 0.02004],
                                                       abs=1e-15)
    m = compute_report_metrics(FD_FILLS, orders_for(FD_FILLS), FD_MID_TS, FD_MID_PX, 0, 600 * S, funding=f)
    total = -0.0202 - 0.0606 + 0.0201 + 0.0201 + 0.02004  # -0.02056
    assert m["pnl"]["funding"] == pytest.approx(total, abs=1e-15)
    # cash = -200 + 404 - 198 - 100 + 300 = 206; position -2 at the final mid 100 -> gross 6
    assert m["pnl"]["gross_pnl"] == pytest.approx(6.0, abs=1e-12)
    assert m["pnl"]["net_pnl"] == pytest.approx(6.0 + total, abs=1e-12)
    assert m["pnl"]["net_pnl_ex_funding"] == pytest.approx(6.0, abs=1e-12)
    fs = m["funding"]
    assert (fs["n_settlements"], fs["n_with_position"], fs["n_unpriced"], fs["n_priced_by_mark"],
            fs["n_priced_by_mid"]) == (7, 5, 0, 3, 2)
    assert fs["received_usdt"] == pytest.approx(0.06024) and fs["paid_usdt"] == pytest.approx(-0.0808)
    # the equity grid books each payment at its settlement time
    eq = equity_curve(FD_FILLS, FD_MID_TS, FD_MID_PX, 0, 600 * S, step_ns=60 * S, funding=f)
    assert eq["funding"].tolist() == pytest.approx(
        [0, 0, -0.0202, -0.0808, -0.0808, -0.0808, -0.0808, -0.0607, -0.0406, -0.02056, -0.02056], abs=1e-12)
    assert eq["net_pnl"].iloc[-1] == pytest.approx(m["pnl"]["net_pnl"], abs=1e-12)


def test_funding_without_a_price_and_duplicates_are_counted_not_guessed() -> None:
    fills = make_fills([(1 * S, "BUY", 100.0, 1.0, 0.0, "TAKER")])  # a position before the first mid
    f = funding_payments(fills, [5 * S, 20 * S, 20 * S], [0.0001, 0.0001, 0.0002], FD_MID_TS, FD_MID_PX)
    assert f["price_source"].tolist() == ["none", "mid", "mid"]
    assert math.isnan(f["payment_usdt"][0])  # long 1 with no price at 5 s: not computable
    # two settlements at 20 s: only the last (0.0002) applies: -1*100*0.0002 = -0.02
    assert f["duplicate"].tolist() == [False, True, False]
    assert f["payment_usdt"].tolist()[1:] == pytest.approx([0.0, -0.02])
    m = compute_report_metrics(fills, orders_for(fills), FD_MID_TS, FD_MID_PX, 0, 60 * S, funding=f)
    assert m["pnl"]["funding"] == pytest.approx(-0.02)
    assert (m["funding"]["n_unpriced"], m["funding"]["n_duplicate"], m["funding"]["n_settlements"]) == (1, 1, 2)


def test_funding_outside_the_window_is_ignored() -> None:
    f = funding_payments(FD_FILLS, FD_SETTLE, FD_RATES, FD_MID_TS, FD_MID_PX, start_ns=100 * S, end_ns=400 * S)
    assert f["ts_ns"].tolist() == [120 * S, 180 * S, 300 * S, 400 * S]  # both ends included


# --------------------------------------------------------------------------------------------
# section 3: fill attribution
# --------------------------------------------------------------------------------------------

def test_attribution_by_cause_by_hand() -> None:
    fills = make_fills([(1000 * MS, "BUY", 99.95, 1.0, 0.001, "MAKER"),
                        (2000 * MS, "SELL", 100.6, 1.0, 0.002, "MAKER"),
                        (5000 * MS, "BUY", 99.4, 3.0, 0.003, "MAKER")],
                       slippage=[0.01, 0.0, 0.02], cause=["queue", "book_through", "book_through"])
    by = attribution_by_cause(fills, MK_MID_TS, MK_MID_PX, 101.0, 12 * S)
    assert list(by) == ["queue", "trade_through", "book_through", "other", "venue"]
    q, b = by["queue"], by["book_through"]
    assert (q["n_fills"], b["n_fills"], by["trade_through"]["n_fills"], by["venue"]["n_fills"]) == (1, 2, 0, 0)
    assert b["qty"] == 4.0 and b["notional"] == pytest.approx(100.6 + 3 * 99.4)
    # spread vs the mid before: queue A (100-99.95)*1 = 0.05; book_through B -(100.2-100.6) = 0.4, C (100.5-99.4)*3 = 3.3
    assert q["spread_capture"] == pytest.approx(0.05) and b["spread_capture"] == pytest.approx(3.7)
    # inventory at the final mid 101: A (101-100)*1 = 1.0; B -(101-100.2) = -0.8, C 3*(101-100.5) = 1.5 -> 0.7
    assert q["inventory_pnl"] == pytest.approx(1.0) and b["inventory_pnl"] == pytest.approx(0.7)
    assert q["slippage"] == pytest.approx(0.01) and b["fees_paid"] == pytest.approx(0.005)
    assert q["net_contribution"] == pytest.approx(0.05 + 1.0 - 0.001 - 0.01)
    # adverse selection at 1 s: A +0.5 (queue); B -0.3, C -3.0 (book_through)
    assert q["markouts"]["1s"]["adverse_selection_usdt"] == pytest.approx(0.5)
    assert b["markouts"]["1s"]["adverse_selection_usdt"] == pytest.approx(-3.3)
    assert b["markouts"]["10s"]["count"] == 1  # C's 10 s horizon is past the data
    # the causes add up to net PnL excluding funding
    m = compute_report_metrics(fills, orders_for(fills), MK_MID_TS, MK_MID_PX, 0, 12 * S)
    assert sum(e["net_contribution"] for e in m["attribution"]["by_cause"].values()) == pytest.approx(
        m["pnl"]["net_pnl_ex_funding"], abs=1e-12)


def test_attribution_keeps_unknown_causes_and_defaults_to_venue() -> None:
    fills = make_fills([(1 * S, "BUY", 100.0, 1.0, 0.0, "MAKER"), (2 * S, "SELL", 100.0, 1.0, 0.0, "MAKER")],
                       cause=["queue", "mystery"])
    by = attribution_by_cause(fills, FD_MID_TS, FD_MID_PX, 100.0, 60 * S)
    assert list(by)[-1] == "mystery" and by["mystery"]["n_fills"] == 1  # never dropped
    plain = attribution_by_cause(ROUND_TRIP, RT_MID_TS, RT_MID_PX, 101.0, 30 * S)  # no cause column
    assert plain["venue"]["n_fills"] == 2


@settings(max_examples=100, deadline=None)
@given(rows=fill_rows, slips=st.lists(st.floats(0.0, 1.0), min_size=40, max_size=40),
       rates=st.lists(st.floats(-0.001, 0.001), max_size=5), mids=st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=30))
def test_identity_with_slippage_funding_and_causes(rows, slips, rates, mids) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    fills = make_fills([(t * S, side, p, q, f, liq) for t, side, p, q, f, liq in rows], slippage=slips[:len(rows)],
                       cause=[("queue", "trade_through", "book_through", "venue")[i % 4] for i in range(len(rows))])
    mid_ts = np.linspace(0, 600 * S, len(mids)).astype(np.int64)
    funding = funding_payments(fills, np.linspace(60 * S, 540 * S, len(rates)).astype(np.int64), rates,
                               mid_ts, np.array(mids))
    m = compute_report_metrics(fills, orders_for(fills), mid_ts, np.array(mids), 0, 600 * S, grid_step_ns=60 * S,
                               funding=funding)
    p = m["pnl"]
    scale = 1.0 + float((fills["price"] * fills["qty"]).sum())
    assert p["net_pnl"] == pytest.approx(p["spread_capture"] + p["inventory_pnl"] - p["fees_paid"] - p["slippage"]
                                         + p["funding"], abs=1e-9 * scale)
    assert sum(e["net_contribution"] for e in m["attribution"]["by_cause"].values()) == pytest.approx(
        p["net_pnl_ex_funding"], abs=1e-9 * scale)
    assert sum(d["net_pnl"] for d in m["daily"]) == pytest.approx(p["net_pnl"], abs=1e-9 * scale)


def test_side_sign_fast_path_is_the_general_rule():
    """``side_sign``'s shortcut for exact "BUY"/"SELL" (no string copies) gives what the
    case-insensitive rule gives, on any mix; other spellings take the general rule; anything else
    is refused."""
    import random

    import numpy as np
    import pandas as pd
    import pytest

    from mmbot.report.metrics import side_sign

    rng = random.Random(7)
    for n in (0, 1, 2, 17, 500):
        sides = [rng.choice(["BUY", "SELL"]) for _ in range(n)]
        want = np.array([1.0 if s == "BUY" else -1.0 for s in sides], dtype=np.float64)
        for form in (sides, np.array(sides, dtype=object), pd.Series(sides, dtype=object),
                     pd.Series(sides, dtype="category")):
            got = side_sign(form)
            assert got.dtype == np.float64 and got.tolist() == want.tolist()
        mixed = [s.lower() if rng.random() < 0.5 else s for s in sides]
        assert side_sign(mixed).tolist() == want.tolist()
    for bad in (["BUY", "HOLD"], [None], ["BUY", float("nan")], [1], pd.Series(["BUY", pd.NA], dtype="string"),
                pd.Series([pd.NA, "SELL"], dtype=object)):
        with pytest.raises(ValueError, match="unknown side"):
            side_sign(bad)
