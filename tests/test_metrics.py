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
    compute_report_metrics,
    cvar,
    equity_curve,
    fill_markouts,
    fills_ledger_pnl,
    final_mid,
    markout_summary,
    max_drawdown,
    mid_at,
    order_fill_counts,
    per_minute_pnl,
    pnl_decomposition,
    sharpe_ratio,
    time_grid,
    time_weighted_abs_position,
)

S = 1_000_000_000  # ns per second
MS = 1_000_000


def make_fills(rows: list[tuple[int, str, float, float, float, str]]) -> pd.DataFrame:
    """rows of (ts_ns, side, price, qty, fee, liquidity) -> runner-shaped fills frame."""
    return pd.DataFrame({
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
    m2 = compute_report_metrics(ROUND_TRIP, orders_for(ROUND_TRIP), RT_MID_TS, RT_MID_PX, 0, 60 * S,
                                funding=0.5)
    assert m2["pnl"]["funding_available"] is True
    assert m2["pnl"]["net_pnl"] == pytest.approx(1.9596 + 0.5, abs=1e-12)


def test_report_net_pnl_equals_ledger_to_the_cent() -> None:
    m = compute_report_metrics(ROUND_TRIP, orders_for(ROUND_TRIP), RT_MID_TS, RT_MID_PX, 0, 60 * S,
                               starting_balance=1000.0, maker_fee=0.0002, taker_fee=0.0002)
    led = fills_ledger_pnl(ROUND_TRIP, final_mid(RT_MID_TS, RT_MID_PX, 60 * S))
    assert m["pnl"]["net_pnl"] == led["net_pnl"]
    assert m["pnl"]["final_mid"] == 101.0
    # expected fees = 0.0002*100 + 0.0002*102 = 0.0404
    assert m["pnl"]["expected_fees_from_rates"] == pytest.approx(0.0404, abs=1e-12)
    assert set(m) == {"pnl", "counts", "inventory", "risk", "markouts"}


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
MK_FILLS = make_fills([(1000 * MS, "BUY", 99.95, 1.0, 0.0, "MAKER"),    # mid at fill 100.0
                       (2000 * MS, "SELL", 100.6, 1.0, 0.0, "MAKER"),   # mid at fill 100.5
                       (5000 * MS, "BUY", 99.4, 3.0, 0.0, "MAKER")])    # mid at fill 99.5


def test_markouts_exact_with_exclusion() -> None:
    h100 = fill_markouts(MK_FILLS, MK_MID_TS, MK_MID_PX, 100 * MS, 12 * S)
    # A: mid(1.1 s) = 100.2 -> (100.2-99.95)/99.95*1e4 = 25.0125 bps; vs mid +0.2 = 20 bps
    # B: mid(2.1 s) = 100.5 -> -(100.5-100.6)/100.6*1e4 = 9.9404 bps; vs mid 0
    # C: mid(5.1 s) = 99.5  -> (99.5-99.4)/99.4*1e4 = 10.0604 bps; vs mid 0
    assert h100["markout_bps"].tolist() == pytest.approx(
        [0.25 / 99.95 * 1e4, 0.1 / 100.6 * 1e4, 0.1 / 99.4 * 1e4], rel=1e-9)
    assert h100["markout_bps"].tolist() == pytest.approx([25.0125, 9.9404, 10.0604], abs=1e-4)
    assert h100["vs_mid_px"].tolist() == pytest.approx([0.2, 0.0, 0.0], abs=1e-12)
    assert h100["vs_mid_bps"].tolist() == pytest.approx([20.0, 0.0, 0.0], abs=1e-9)

    h10 = fill_markouts(MK_FILLS, MK_MID_TS, MK_MID_PX, 10 * S, 12 * S)
    # A: mid(11 s) = 99.5 -> (99.5-99.95)/99.95*1e4 = -45.0225; vs mid -0.5
    # B: mid(12 s) = 101 (12 s is the last data point: included) -> -(101-100.6)/100.6*1e4 = -39.7614
    # C: 15 s is past the data end (12 s) -> excluded
    assert h10["valid"].tolist() == [True, True, False]
    assert h10["markout_bps"].tolist()[:2] == pytest.approx([-45.0225, -39.7614], abs=1e-4)
    assert h10["vs_mid_px"].tolist()[:2] == pytest.approx([-0.5, -0.5], abs=1e-12)
    assert math.isnan(h10["markout_bps"][2])


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
    assert s10["mean_vs_mid_px"] == pytest.approx(-0.5)
    # 1 s: A: mid(2 s)=100.5 -> 55.0275; B: mid(3 s)=100.5 -> 9.9404; C: mid(6 s)=99.5 -> 10.0604
    s1 = summary["1s"]
    vals = [0.55 / 99.95 * 1e4, 0.1 / 100.6 * 1e4, 0.1 / 99.4 * 1e4]
    assert s1["count"] == 3 and s1["mean_bps"] == pytest.approx(sum(vals) / 3)
    assert s1["median_bps"] == pytest.approx(0.1 / 99.4 * 1e4)
    # qty-weighted: (55.0275*1 + 9.9404*1 + 10.0604*3)/5
    assert s1["mean_bps_qty_weighted"] == pytest.approx((vals[0] + vals[1] + 3 * vals[2]) / 5)
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
