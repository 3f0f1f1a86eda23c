"""A run that starts under a leftover kill never quotes (issue 13 section 2, liveops item 5).

The kill switch used to read its signal file only after its first ``poll_interval_ms``: a bot
started under a kill quoted (and could fill) for about a second. Now it reads the file in
``on_start`` (Nautilus starts every actor before any strategy) and publishes its constraint again
when the strategy reaches RUNNING. Backtest here; live against the loopback fake in
``tests/test_live_session.py``.
"""

from __future__ import annotations

import json

import pandas as pd

from tests.test_config_run_folder import START, backtest, config_copy


def test_backtest_started_halted_sends_no_order(tmp_path):
    cfg = config_copy(tmp_path, "backtest.toml", str(tmp_path / "KILL.{env}.{account}"))
    (tmp_path / "KILL.backtest.default").write_text('{"reason": "left over"}')
    r = backtest(tmp_path / "o", "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}", config=cfg)
    assert r.exit_code == 0, r.output
    orders = pd.read_parquet(tmp_path / "o" / "orders.parquet")
    assert len(orders) == 0, orders.head()  # not even one denied by the RiskEngine: the strategy knew
    audit = [json.loads(line) for line in (tmp_path / "o" / "audit.jsonl").read_text().splitlines()]
    first = audit[0]
    assert first["guard"] == "kill_switch" and first["new_state"] == "HALTED" and "left over" in first["reason"]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert first["ts_ns"] <= report["metadata"]["data_range"]["start_ns"]  # at start, not one poll later
    assert START.startswith(report["metadata"]["data_range"]["start"][:16])
