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
