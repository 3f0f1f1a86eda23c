"""``mmbot compare`` on hand-made shadow / backtest directories."""

from __future__ import annotations

import json

import pandas as pd

from mmbot.backtest.compare import compare, render


def _make(tmp, bt_fills):
    sh = tmp / "shadow" / "recording"
    sh.mkdir(parents=True)
    ev = [
        {"kind": "OrderInitialized", "client_order_id": "O-20260101-000000-001-000-1", "ts_event_ns": 1, "ts_init_ns": 1,
         "side": "BUY", "quantity": "0.001", "price": "100.0"},
        {"kind": "OrderFilled", "client_order_id": "O-20260101-000000-001-000-1", "ts_event_ns": 1_001_000, "ts_init_ns": 2,
         "side": "BUY", "price": 100.0, "qty": 0.001, "fee": 0.00002},
    ]
    (sh / "orders.jsonl").write_text("\n".join(json.dumps(e) for e in ev) + "\n{\"kind\": \"Order")  # truncated tail
    bt = tmp / "bt"
    bt.mkdir()
    pd.DataFrame([{"client_order_id": "O-20240101-120000-001-000-1", "side": "BUY", "price": 100.0, "qty": 0.001,
                   "ts_init_ns": 0, "ts_accepted_ns": 0, "ts_last_ns": 0, "status": "FILLED", "filled_qty": 0.001,
                   "n_amends": 0, "reason": ""}]).to_parquet(bt / "orders.parquet")
    pd.DataFrame(bt_fills, columns=["ts_event_ns", "client_order_id", "venue_order_id", "trade_id", "side", "price",
                                    "qty", "fee", "liquidity"]).to_parquet(bt / "fills.parquet")
    (bt / "report.json").write_text(json.dumps({"metrics": {"pnl": {"final_mid": 101.0}}}))
    for d in (tmp / "shadow", bt):  # the same resolved config: comparable (tests/test_shadow_compare_strict.py)
        (d / "config.resolved.json").write_text(json.dumps({"config_hash": "x", "config": {"strategy": {}}}))
    return tmp / "shadow", bt


def test_identical_fills_with_timing_difference(tmp_path):
    s, b = _make(tmp_path, [(1_000_000, "O-20240101-120000-001-000-1", "Q-1", "QT-1", "BUY", 100.0, 0.001, 0.00002, "MAKER")])
    res = compare(s, b)
    assert res["identical_fills"] and res["fills"] == {"shadow": 1, "backtest": 1, "matched": 1}
    assert abs(res["fill_time_diff_ms"]["max_abs"] - 0.001) < 1e-9
    assert res["pnl"]["shadow"] == res["pnl"]["backtest"]
    assert "identical fills" in render(res)


def test_divergence_reported_with_cause(tmp_path):
    s, b = _make(tmp_path, [(1_000_000, "O-20240101-120000-001-000-1", "Q-1", "QT-1", "BUY", 100.0, 0.002, 0.00004, "MAKER")])
    res = compare(s, b)
    assert not res["identical_fills"]
    assert res["first_divergence"]["fill"] == 0 and res["first_divergence"]["cause"]


# -- the cut at the shadow strategies' stop (docs/shadow.md, "The stop") ------------------------

def _order(coid, ts, price=100.0):
    return {"kind": "OrderInitialized", "client_order_id": coid, "ts_event_ns": ts, "ts_init_ns": ts,
            "side": "BUY", "quantity": "0.001", "price": str(price)}


def _fill(coid, ts, price=100.0):
    return {"kind": "OrderFilled", "client_order_id": coid, "ts_event_ns": ts, "ts_init_ns": ts,
            "side": "BUY", "price": price, "qty": 0.001, "fee": 0.00002}


def _bt_rows(rows, iid=None):
    """rows: (coid, ts_init_ns of the order, ts_event_ns of its fill or None)."""
    extra = {"instrument_id": iid} if iid else {}
    orders = [{"client_order_id": c, "side": "BUY", "price": 100.0, "qty": 0.001, "ts_init_ns": t,
               "ts_accepted_ns": t, "ts_last_ns": t, "status": "FILLED", "filled_qty": 0.001, "n_amends": 0,
               "reason": "", **extra} for c, t, _ in rows]
    fills = [{"ts_event_ns": f, "client_order_id": c, "venue_order_id": "Q", "trade_id": "T", "side": "BUY",
              "price": 100.0, "qty": 0.001, "fee": 0.00002, "liquidity": "MAKER", **extra}
             for c, _, f in rows if f is not None]
    return orders, fills


def _stop_dirs(tmp, shadow_events, bt_orders, bt_fills, stop_ns, bt_meta=None, through=None):
    """A shadow run folder (recording/orders.jsonl; report.json with session.strategy_stop_ns when
    ``stop_ns`` is not None) and a backtest folder."""
    sh = tmp / "shadow"
    (sh / "recording").mkdir(parents=True)
    (sh / "recording" / "orders.jsonl").write_text("\n".join(json.dumps(e) for e in shadow_events) + "\n")
    session = {"kind": "shadow", "stop_reason": "duration"}
    if stop_ns is not None:
        session["strategy_stop_ns"] = stop_ns
        session["stop_received_through_ns"] = through
    (sh / "report.json").write_text(json.dumps({"metadata": {"session": session}, "metrics": {}}))
    bt = tmp / "bt"
    bt.mkdir()
    pd.DataFrame(bt_orders).to_parquet(bt / "orders.parquet")
    pd.DataFrame(bt_fills).to_parquet(bt / "fills.parquet")
    (bt / "report.json").write_text(json.dumps({"metadata": bt_meta or {}, "metrics": {"pnl": {"final_mid": 101.0}}}))
    for d in (sh, bt):
        (d / "config.resolved.json").write_text(json.dumps({"config_hash": "x", "config": {"strategy": {}}}))
    return sh, bt


def test_cut_at_the_strategies_stop_leaves_stop_window_fills_out_of_both_runs(tmp_path):
    """The shadow's strategies were asked to stop at T = 5_000 (report.json): order -2 then filled
    while the stop's cancel travelled (7_000, only in the shadow: the replay's strategy never stopped
    and amended it away), and the replay went on quoting (order -3 at 6_000, filled at 8_000).
    Before: the backtest was cut at the shadow's last order event (7_000): order -3 in the backtest
    only and fill #1 differing -> a divergence. Now both are cut at T: identical, the stop-window
    fill counted in ``after_cut``. Given its ``recording/``, the compare finds the report above it."""
    a, b2, b3 = "O-20260101-000000-001-000-1", "O-20260101-000000-001-000-2", "O-20260101-000000-001-000-3"
    events = [_order(a, 1_000), _fill(a, 2_000), _order(b2, 3_000), _fill(b2, 7_000)]
    orders, fills = _bt_rows([(a, 1_000, 2_000), (b2, 3_000, None), (b2.replace("-2", "-3"), 6_000, 8_000)])
    s, b = _stop_dirs(tmp_path, events, orders, fills, {"BTCUSDT-LINEAR.BYBIT": 5_000})
    for shadow, force in ((s, False), (s / "recording", True)):  # recording/: no resolved config there
        res = compare(shadow, b, force=force)
        assert res["identical_fills"], res["first_divergence"]
        assert res["fills"] == {"shadow": 1, "backtest": 1, "matched": 1}
        assert res["orders"] == {"shadow": 2, "backtest": 2}
        assert res["cut"] == {"by": "strategy_stop", "at_ns": 5_000, "fills_until_ns": 5_000, "fills_before_ns": None}
        assert res["window_end_ns"] == 5_000
        assert res["after_cut"] == {"shadow_fills": 1}
        assert "after it, not compared: 1 shadow fill(s)" in render(res)
        assert not [n for n in res["checks"]["notes"] if "strategy_stop_ns" in n]


def test_without_a_recorded_stop_the_cut_is_the_last_order_event_with_a_note(tmp_path):
    """An older session (no strategy_stop_ns): cut at the shadow's last order event, as before, and
    said so; here that includes the backtest's post-stop order: the divergence is reported."""
    a, b2 = "O-20260101-000000-001-000-1", "O-20260101-000000-001-000-2"
    events = [_order(a, 1_000), _fill(a, 2_000), _order(b2, 3_000), _fill(b2, 7_000)]
    orders, fills = _bt_rows([(a, 1_000, 2_000), (b2, 3_000, None), (b2.replace("-2", "-3"), 6_000, 6_500)])
    s, b = _stop_dirs(tmp_path, events, orders, fills, None)
    res = compare(s, b)
    assert res["cut"] == {"by": "last_order_event", "at_ns": 7_000, "fills_until_ns": 7_000, "fills_before_ns": None}
    assert not res["identical_fills"]
    assert any("no session.strategy_stop_ns" in n for n in res["checks"]["notes"])


def test_portfolio_cut_per_instrument_at_its_own_stop_instant(tmp_path):
    """Three instruments, each simulator with its own local stop instant: each compared up to its
    own (a fill 20 ns before it compared, one 50 ns after it left out of both sides). Cutting every
    instrument at the earliest stop loses XRP's and BTC's late fills; at the latest, ETH's replay
    order after its stop counts."""
    iids = ["XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT", "ETHUSDT-LINEAR.BYBIT"]
    stops = {iids[0]: 5_000, iids[1]: 5_100, iids[2]: 4_900}
    events, bt_orders, bt_fills = [], [], []
    for k, iid in enumerate(iids):
        tag = f"{k:03d}"
        a, b2, b3, c4 = (f"O-20260101-000000-001-{tag}-{n}" for n in (1, 2, 3, 4))
        t = stops[iid]
        events += [_order(a, 1_000), _fill(a, 2_000), _order(b2, 3_000), _order(c4, 3_500), _fill(c4, t - 20),
                   _fill(b2, t + 50)]
        o, f = _bt_rows([(a, 1_000, 2_000), (b2, 3_000, None), (b3, t + 10, t + 40), (c4, 3_500, t - 20)], iid)
        bt_orders += o
        bt_fills += f
    s, b = _stop_dirs(tmp_path, events, bt_orders, bt_fills, stops, {"portfolio": {"instruments": iids}})
    res = compare(s, b)
    assert res["identical_fills"], res["first_divergence"]
    assert res["after_cut"] == {"shadow_fills": 3}
    assert res["cut"] == {"by": "strategy_stop", "at_ns": stops}
    for iid in iids:
        r = res["instruments"][iid]
        assert r["cut"]["at_ns"] == stops[iid] and r["identical_fills"], (iid, r)
        assert r["fills"] == {"shadow": 2, "backtest": 2, "matched": 2} and r["orders"] == {"shadow": 3, "backtest": 3}


def test_fills_of_market_events_received_after_the_stop_are_not_compared(tmp_path):
    """Under load a market event at exchange time 4_500 (before the stop T = 5_000) reached the
    shadow only after the stop: every event before 4_000 had been received then
    (``stop_received_through_ns``). In the shadow it filled order -2 (the stopped strategy's
    cancel was behind it); in the replay the strategy's amend after T was applied before that late
    event arrived: no fill. Such fills are left out of both sides; with the stop instant alone they
    were compared and diverged. (Derived from the simulator's exchange timeline; the CI failure
    first blamed on it was the replay's end: the next test.)"""
    a, b2 = "O-20260101-000000-001-000-1", "O-20260101-000000-001-000-2"
    events = [_order(a, 1_000), _fill(a, 2_000), _order(b2, 3_000), _fill(b2, 4_500)]
    orders, fills = _bt_rows([(a, 1_000, 2_000), (b2, 3_000, None)])
    s, b = _stop_dirs(tmp_path, events, orders, fills, {"BTCUSDT-LINEAR.BYBIT": 5_000},
                      through={"BTCUSDT-LINEAR.BYBIT": 4_000})
    res = compare(s, b)
    assert res["identical_fills"], res["first_divergence"]
    assert res["cut"] == {"by": "strategy_stop", "at_ns": 5_000, "fills_until_ns": 5_000, "fills_before_ns": 4_000}
    assert res["fills"] == {"shadow": 1, "backtest": 1, "matched": 1} and res["after_cut"] == {"shadow_fills": 1}


def test_fills_after_the_replays_end_are_not_compared(tmp_path):
    """The replay ended at 4_000 (its data_range: the recording's last message; the loopback feed
    of tests/test_live_portfolio_shadow.py runs out ~10 s before the session stops) while the
    shadow went on to its stop at T = 5_000: a fill the shadow's simulator applied at 4_500 has no
    counterpart (the replay's exchange never reached it: SimParams.end_ns). CI under load: a
    BTCUSDT fill in the shadow only, before the stop. Fills are compared up to min(T, the replay's
    end); with the stop instant alone this diverged."""
    a, b2 = "O-20260101-000000-001-000-1", "O-20260101-000000-001-000-2"
    events = [_order(a, 1_000), _fill(a, 2_000), _order(b2, 3_000), _fill(b2, 4_500)]
    orders, fills = _bt_rows([(a, 1_000, 2_000), (b2, 3_000, None)])
    s, b = _stop_dirs(tmp_path, events, orders, fills, {"BTCUSDT-LINEAR.BYBIT": 5_000},
                      bt_meta={"data_range": {"start_ns": 0, "end_ns": 4_000}})
    res = compare(s, b)
    assert res["identical_fills"], res["first_divergence"]
    assert res["cut"] == {"by": "strategy_stop", "at_ns": 5_000, "fills_until_ns": 4_000, "fills_before_ns": None}
    assert res["fills"] == {"shadow": 1, "backtest": 1, "matched": 1} and res["after_cut"] == {"shadow_fills": 1}
