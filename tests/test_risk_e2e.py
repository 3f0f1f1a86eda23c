"""Risk guards through ``mmbot backtest run`` on 5 minutes of the embedded catalog, the report's
risk section, the audit log and its CLI, ``mmbot kill``, and config validation (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.config.backtest import layer_overrides

pytestmark = pytest.mark.slow
START, END = "2024-12-01T07:30:00Z", "2024-12-01T07:35:00Z"
GUARDS = {"position", "loss", "drawdown", "edge", "circuit_breaker", "stale_data", "kill_switch"}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def backtest(out: Path, *sets: str):
    args = ["backtest", "run", "--start", START, "--end", END, "--out", str(out), "--no-progress"]
    # a test's own value of a key replaces the default (two values of one key are refused)
    for s in layer_overrides(["report.html=false", f'risk.kill_switch.file="{out.parent / "NO-KILL"}"'], sets):
        args += ["--set", s]
    r = run(*args)
    assert r.exit_code == 0, r.output
    return json.loads((out / "report.json").read_text())


def test_default_guards_do_not_trigger_and_report_time_in_state(tmp_path):
    rep = backtest(tmp_path / "d")
    g = rep["metrics"]["risk"]["guards"]
    assert g["n_transitions"] == 0 and g["final_trading_state"] == "ACTIVE"
    assert set(g["guards"]) == GUARDS
    for name, m in g["guards"].items():
        assert sum(m["time_in_state_s"].values()) == pytest.approx(300.0, abs=0.01), name
    assert rep["metrics"]["counts"]["n_fills"] > 0
    assert (tmp_path / "d" / "audit.jsonl").read_text() == ""
    md = (tmp_path / "d" / "report.md").read_text()
    assert "## Risk guards" in md and "| stale_data | ACTIVE | 0 |" in md
    assert rep["metadata"]["config"]["risk"]["guards"]["loss"]["daily_loss_stop"] == 1000.0


def test_turnover_cap_halts_the_backtest_and_the_audit_chain_verifies(tmp_path):
    out = tmp_path / "t"
    rep = backtest(out, "risk.loss.daily_turnover_cap=20000.0", "report.html=true")
    g = rep["metrics"]["risk"]["guards"]
    trans = g["transitions"]
    assert [(t["guard"], t["old_state"], t["new_state"]) for t in trans] == [
        ("loss", "ACTIVE", "HALTED"), ("risk_engine", "ACTIVE", "HALTED")]
    assert trans[0]["reason"] == "daily_turnover beyond 20000"
    t_halt = trans[0]["ts_ns"]
    orders = pd.read_parquet(out / "orders.parquet")
    fills = pd.read_parquet(out / "fills.parquet")
    assert (orders["ts_init_ns"] <= t_halt).all(), "no order after the halt"
    assert (orders["status"] != "ACCEPTED").all(), "every resting order was cancelled"
    traded = float((fills["price"] * fills["qty"]).sum())
    assert 20000.0 < traded < 20000.0 + 2 * 200 * 2.0, "stopped on the fill that crossed the cap"  # 200 XRP at < 2 USDT
    assert g["final_trading_state"] == "HALTED"
    spent = g["guards"]["loss"]["time_in_state_s"]
    assert spent["ACTIVE"] + spent["HALTED"] == pytest.approx(300.0, abs=0.01)
    assert spent["ACTIVE"] == pytest.approx((t_halt - rep["metadata"]["data_range"]["start_ns"]) / 1e9, abs=0.01)
    html = (out / "report.html").read_text()
    assert "Risk guards" in html and "daily_turnover beyond 20000" in html
    assert "daily_turnover beyond 20000" in (out / "report.md").read_text()

    audit = out / "audit.jsonl"
    recs = [json.loads(x) for x in audit.read_text().splitlines()]
    assert recs[0]["guard"] == "loss" and recs[0]["numbers"]["turnover_today_quote"] > 20000.0
    r = run("audit", "verify", str(audit))
    assert r.exit_code == 0 and "2 record(s)" in r.output
    lines = audit.read_text().splitlines()
    audit.write_text(lines[0].replace("HALTED", "ACTIVE") + "\n" + lines[1] + "\n")
    r = run("audit", "verify", str(audit))
    assert r.exit_code == 2 and "line 1" in r.output


def test_kill_file_halts_a_backtest_from_its_first_poll(tmp_path):
    kill = tmp_path / "KILL"
    r = run("kill", "--reason", "desk says stop", "--file", str(kill))
    assert r.exit_code == 0 and json.loads(kill.read_text())["reason"] == "desk says stop"
    assert not list(tmp_path.glob(".KILL*")), "written atomically via a temp file"
    out = tmp_path / "k"
    rep = backtest(out, f'risk.kill_switch.file="{kill}"')
    trans = rep["metrics"]["risk"]["guards"]["transitions"]
    assert trans[0]["guard"] == "kill_switch" and trans[0]["reason"] == "kill switch (file): desk says stop"
    assert trans[0]["ts_ns"] - rep["metadata"]["data_range"]["start_ns"] <= 1_000_000_000
    orders = pd.read_parquet(out / "orders.parquet")
    assert (orders["ts_init_ns"] <= trans[0]["ts_ns"]).all()
    r = run("kill", "--resume", "--file", str(kill))
    assert r.exit_code == 0 and not kill.exists()


def test_kill_without_reason_or_file_exits_2(tmp_path):
    r = run("kill", "--file", str(tmp_path / "K"))
    assert r.exit_code == 2 and "--reason" in r.output
    cfg = tmp_path / "c.toml"
    cfg.write_text("[run]\nseed = 1\n")
    r = run("kill", "--reason", "x", "--config", str(cfg))
    assert r.exit_code == 2 and "risk.kill_switch.file" in r.output


@pytest.mark.parametrize(("sets", "needle"), [
    (["risk.position.soft_position=-1"], "risk.position.soft_position: must be >= 0, was -1"),
    (["risk.position.soft_position=2500.0"], "risk.position.soft_position: must be <= hard_position (2000.0), was 2500.0"),
    (["risk.position.bogus=1"], "risk.position.bogus: unknown key"),
    (["risk.bogus.x=1"], "risk.bogus: unknown key"),
    (["risk.loss.daily_loss_stop=-5"], "risk.loss.daily_loss_stop: must be >= 0"),
    (["risk.drawdown.max_drawdown=0"], "risk.drawdown.max_drawdown: must be > 0"),
    (["risk.edge.widen_factor=0.5"], "risk.edge.widen_factor: must be >= 1"),
    (["risk.circuit_breaker.max_rejects=\"many\""], "risk.circuit_breaker.max_rejects: Expected `int`, got `str`"),
    (["risk.stale_data.max_book_age_ms=0"], "risk.stale_data.max_book_age_ms: must be > 0"),
    (["risk.engine.max_order_submit_rate=\"fast\""], "risk.engine.max_order_submit_rate: must look like"),
    (["risk.audit.bogus=1"], "risk.audit.bogus: unknown key"),
    (["risk.enabled=1"], "risk.enabled: must be true or false"),
])
def test_bad_risk_config_exits_2_naming_the_key(tmp_path, sets, needle):
    args = ["backtest", "run", "--out", str(tmp_path / "o")]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not (tmp_path / "o").exists()
