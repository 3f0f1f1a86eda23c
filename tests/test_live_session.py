"""``mmbot live --env testnet`` against the loopback fake, as an operator sees it (liveops): a bounded
console with status lines, ``mmbot status``, the end-of-session report, the run folder (marker and
resolved config, never a key), and a session that starts under a leftover kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recordings import generate_recording
from tests.test_live_e2e import KEY, SECRET, Fake, Live, metric
from tests.test_live_masking import leaks

try:
    import tools.fake_bybit  # noqa: F401
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
MAX_CONSOLE_LINES = 45  # the banner (~22 lines) + lifecycle JSON lines + status lines + the summary, 12 s


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec.jsonl", 2, 7)


@pytest.fixture(scope="module")
def session(tmp_path_factory, recording):
    tmp = tmp_path_factory.mktemp("live-session")
    fake = Fake(tmp, recording)
    # sized in USDT: resolved at the loopback venue's mark price before the node starts (issue 15 §1)
    live = Live(tmp, fake, duration="12s", extra=["--set", "strategy.level_notional_usdt=100"])
    try:
        live.wait_for(lambda: metric(live.metrics(), "mmbot_fills_total") >= 1, 60, "a fill")
        status = subprocess.run([sys.executable, "-m", "mmbot.cli", "status", "--url", live.base, "--json"],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
        code = live.proc.wait(timeout=120)
        state = fake.state()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        fake.stop()
    [run_dir] = list((tmp / "runs").glob("*-testnet"))
    return {"code": code, "out": live.out.read_text(), "err": live.err.read_text(), "run_dir": run_dir,
            "status": status, "state": state, "tmp": tmp}


def test_live_console_is_bounded(session):
    assert session["code"] == 0, session["err"][-3000:]
    lines = (session["out"] + session["err"]).splitlines()
    assert len(lines) <= MAX_CONSOLE_LINES, f"{len(lines)} console lines:\n" + "\n".join(lines[:60])
    assert not any("[INFO]" in ln for ln in lines)
    status = [ln for ln in session["out"].splitlines() if " testnet BTCUSDT " in ln]
    assert 1 <= len(status) <= 3 and "ready" in status[-1] and "fills " in status[-1], session["out"]
    assert '"event": "ready"' in session["err"] and '"event": "stop_check"' in session["err"]


def test_live_mmbot_status_reads_the_running_node(session):
    st = session["status"]
    assert st.returncode == 0, st.stderr
    [view] = json.loads(st.stdout)["nodes"]
    assert view["environment"] == "testnet" and view["instrument"] == "BTCUSDT-LINEAR.BYBIT"
    assert view["ready"] and view["fills"] >= 1 and view["trading_state"] == "ACTIVE"


def test_live_session_writes_the_backtest_report(session):
    import pandas as pd

    run_dir = session["run_dir"]
    for name in ("report.json", "report.md", "report.html", "fills.parquet", "orders.parquet", "equity.parquet"):
        assert (run_dir / name).exists(), name
    report = json.loads((run_dir / "report.json").read_text())
    meta, pnl = report["metadata"], report["metrics"]["pnl"]
    assert meta["session"]["kind"] == "live" and meta["session"]["venue"] == "bybit-testnet"
    assert meta["fill_model"] == "venue" and meta["report_clock"] == "exchange"
    assert meta["session"]["start_balance_usdt"] == pytest.approx(100_000.0)
    fills = pd.read_parquet(run_dir / "fills.parquet")
    exec_ids = {e["execId"] for e in session["state"]["executions"]}
    assert len(fills) >= 1 and set(fills["trade_id"]) <= exec_ids  # Bybit's own execution ids
    assert set(fills["cause"]) == {"venue"}
    # The report's PnL and Nautilus' account (the venue's wallet) agree — when the ledger saw every
    # execution. A fill landing after the ledger stopped (the stop's cancels racing a fill: docs/
    # report.md "Not in it") is in the wallet only; then exactly those executions are missing.
    missing = exec_ids - set(fills["trade_id"])
    if not missing:
        assert pnl["nautilus_account_net_pnl"] == pytest.approx(pnl["net_pnl_ex_funding"], abs=1e-6)
    else:
        late = [e for e in session["state"]["executions"] if e["execId"] in missing]
        assert len(late) <= 2, f"{len(late)} executions missing from the report: {late}"
    assert (run_dir / "report.md").read_text().startswith("# mmbot live session report")
    last = session["out"].strip().splitlines()[-1]
    assert last.startswith("session ended: exit 0 (duration); ") and str(run_dir / "report.md") in last, last


def test_live_run_folder_marker_resolved_config_and_no_secret(session):
    run_dir = session["run_dir"]
    marker = json.loads((run_dir / "mmbot_run.json").read_text())
    doc = json.loads((run_dir / "config.resolved.json").read_text())
    assert marker["kind"] == "live" and marker["venue"] == "bybit-testnet" and marker["orders_to"] == "loopback"
    assert marker["config_hash"] == doc["config_hash"] == json.loads((run_dir / "report.json").read_text())[
        "metadata"]["config_hash"]
    assert doc["endpoints"]["rest"]["url"].startswith("http://127.0.0.1:")
    assert doc["live"]["adapter_environment"] == "mainnet" and doc["environment"] == "testnet"
    # the notional order size, resolved at the venue's mark price: recorded, and on the banner
    sizing = doc["sizing"]
    assert sizing["price_source"].startswith("the venue's mark price, GET /v5/market/tickers at ")
    assert sizing["keys"]["strategy.level_notional_usdt"]["base"] == doc["config"]["strategy"]["level_size"] == 0.001
    assert "sizes from USDT notional: strategy.level_notional_usdt 100 -> strategy.level_size 0.001 at " in (
        session["out"] + session["err"])
    for name in ("mmbot_run.json", "config.resolved.json"):
        text = (run_dir / name).read_text()
        assert KEY not in text and SECRET not in text and "fake-key" not in text, name
    assert leaks([run_dir], [session["out"], session["err"]]) == []
    assert '"event": "secret_scrubbed"' not in session["err"]  # nothing had to be masked after the fact


def test_live_started_halted_sends_nothing_and_says_so(tmp_path, recording):
    # Before: the kill switch read its file one poll interval after start and the bot quoted
    # meanwhile; the banner and the last line did not say the run was halted.
    kill = tmp_path / "KILL"  # Live sets risk.kill_switch.file to it (testnet, account default)
    kill.write_text('{"reason": "left over from yesterday"}')
    fake = Fake(tmp_path, recording)
    live = Live(tmp_path, fake, duration="8s")
    try:
        live.wait_for(lambda: metric(live.metrics(), "mmbot_ready") == 1, 60, "ready")
        code = live.proc.wait(timeout=120)  # 8 s: market data flowing all along
        state = fake.state()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        fake.stop()
    err, out = live.err.read_text(), live.out.read_text()
    assert code == 0, err[-3000:]
    assert state["orders"] == [], state["orders"][:3]  # not one order reached the exchange
    halted = f"STARTED HALTED (kill switch file {kill}: left over from yesterday)"
    assert halted in err.split("=" * 72)[1], err[:3000]  # in the banner
    assert out.strip().splitlines()[-1].startswith(halted + ": session ended: exit 0"), out
    assert "guard kill_switch: ACTIVE -> HALTED" in out  # the transition line on the console
    [run_dir] = list((tmp_path / "runs").glob("*-testnet"))
    assert json.loads((run_dir / "report.json").read_text())["metadata"]["started_halted"]["file"] == str(kill)
