"""``[live] record_required``: a required recorder that fails must halt quoting (liveops item 7).

Before: with no kill switch the recorder's fallback was ``for s in orders: pass`` (and
``MessageBus.send`` to a missing endpoint raises nothing, so even that never ran): the bot went on
quoting unrecorded. Now the config combination is refused before anything starts, and should the
actor still find no kill switch at run time, it stops the node (whose stop cancels our orders).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import CONFIG_DIR
from tools.fake_bybit.auth import process_api_key

NO_KILL = ["--set", "live.record_required=true", "--set", "risk.kill_switch.enabled=false"]


@pytest.mark.parametrize("env", ["shadow", "testnet"])
def test_record_required_without_kill_switch_is_refused(tmp_path, env, monkeypatch):
    monkeypatch.setenv("BYBIT_TESTNET_API_KEY", process_api_key("k" * 18))
    monkeypatch.setenv("BYBIT_TESTNET_API_SECRET", "s" * 36)
    r = CliRunner().invoke(main, ["live", "--env", env, "--config", str(CONFIG_DIR / "testnet.toml"),
                                  "--set", f"live.out_dir={tmp_path / 'runs'}", "--set", f"live.lock_dir={tmp_path}",
                                  "--metrics-port", "-1", "--duration", "1s", *NO_KILL])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output)
    assert lines[0].startswith("error: --set live.record_required=true: live.record_required = true needs the kill "
                               "switch"), lines
    assert not (tmp_path / "runs").exists()  # refused before any run folder or connection


def test_record_required_accepted_with_kill_switch_or_without_recorder():
    from mmbot.live.node import load_live_config

    load_live_config(CONFIG_DIR / "testnet.toml", ["live.record_required=true"])
    load_live_config(CONFIG_DIR / "testnet.toml", ["live.record_required=true", "risk.kill_switch.enabled=false",
                                                   "live.record=false"])


def _started_recorder(tmp_path, kill_endpoint: str):
    from nautilus_trader.cache.cache import Cache
    from nautilus_trader.common.component import MessageBus, TestClock
    from nautilus_trader.model.identifiers import InstrumentId, TraderId
    from nautilus_trader.portfolio.portfolio import Portfolio

    from adapters.recorder import RecorderActor, RecorderConfig

    clock = TestClock()
    msgbus = MessageBus(TraderId("TESTER-001"), clock)
    cache = Cache()
    shutdowns, kills = [], []
    msgbus.subscribe("commands.system.shutdown", shutdowns.append)
    if kill_endpoint:
        msgbus.register(kill_endpoint, kills.append)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")  # the recording directory cannot be created: the writer fails at start
    actor = RecorderActor(RecorderConfig(instrument_id=InstrumentId.from_str("BTCUSDT-LINEAR.BYBIT"),
                                         out_dir=str(blocker), required=True,
                                         kill_endpoint="mmbot.risk.kill"))
    actor.register_base(Portfolio(msgbus, cache, clock), msgbus, cache, clock)
    actor.start()
    for handler in clock.advance_time(2_000_000_000):  # the recorder's 1 s health timer
        handler.handle()
    return shutdowns, kills


def test_required_recorder_failure_with_no_kill_switch_stops_the_node(tmp_path, capsys):
    shutdowns, kills = _started_recorder(tmp_path, kill_endpoint="")
    assert len(shutdowns) == 1 and "live.record_required" in shutdowns[0].reason, shutdowns
    err = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    assert any(e["event"] == "recorder_failed" and e["required"] for e in err)


def test_required_recorder_failure_halts_through_the_kill_switch(tmp_path):
    shutdowns, kills = _started_recorder(tmp_path, kill_endpoint="mmbot.risk.kill")
    assert shutdowns == [] and len(kills) == 1 and kills[0]["source"] == "recorder"
