"""A session refused for a config value leaves no run folder behind (liveops item 4: run folders are
mmbot's record of sessions that ran). Before, ``strategy.*`` values and shadow's fill model were
checked by the node builder after the run folder (live: with the banner, the masking FIFO and the
log) had been created."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import CONFIG_DIR
from tools.fake_bybit.auth import process_api_key


@pytest.mark.parametrize("env,item,problem", [
    ("testnet", "strategy.k_vol=nan", "--set strategy.k_vol=nan: strategy.k_vol"),
    ("testnet", "run.instrument=BTCUSDT.BYBIT", "--set run.instrument=BTCUSDT.BYBIT: run.instrument: live trading supports"),
    ("shadow", "venue.fill_model=nautilus", "shadow mode needs the queue simulator"),
])
def test_refused_session_leaves_no_run_folder(tmp_path, monkeypatch, env, item, problem):
    monkeypatch.setenv("BYBIT_TESTNET_API_KEY", process_api_key("k" * 18))
    monkeypatch.setenv("BYBIT_TESTNET_API_SECRET", "s" * 36)
    r = CliRunner().invoke(main, ["live", "--env", env, "--config", str(CONFIG_DIR / "testnet.toml"),
                                  "--set", f"live.out_dir={tmp_path / 'runs'}", "--set", f"live.lock_dir={tmp_path}",
                                  "--metrics-port", "-1", "--duration", "1s", "--set", item])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and problem in lines[0], (r.exit_code, r.output)
    assert not list((tmp_path / "runs").glob("*")), list((tmp_path / "runs").glob("*"))
