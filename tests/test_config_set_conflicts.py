"""Two values for one key on the command line are refused (BRIEF: nothing dropped silently).

A wrapper script's safety cap ``--set strategy.max_position=0.01`` followed by the user's
``--set strategy.max_position=5`` used to keep the last one without a word. Programs that compose
overrides in layers (walk-forward windows and trial parameters, calibration candidates) replace
earlier layers on purpose through ``layer_overrides``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmbot.config.backtest import ConfigError, layer_overrides, load_backtest_config
from mmbot.config.rules import Override

REPO = Path(__file__).resolve().parent.parent
TESTNET = REPO / "config/testnet.toml"


@pytest.mark.parametrize("items,key", [
    (["strategy.max_position=0.01", "strategy.max_position=5"], "strategy.max_position"),
    (["live.base_url_http=http://127.0.0.1:1", "live.base_url_http=http://127.0.0.1:2"], "live.base_url_http"),
    (["risk.kill_switch.file=a", "risk.kill_switch.file=b"], "risk.kill_switch.file"),
    (["strategy.use_amend=true", "strategy.use_amend=1"], "strategy.use_amend"),  # a bool is not the number 1
    ([" strategy . k_vol =1", "strategy.k_vol=2"], "strategy.k_vol"),           # spelt differently, one key
])
def test_conflicting_values_of_one_key_are_refused_naming_both(items, key):
    with pytest.raises(ConfigError) as e:
        load_backtest_config(TESTNET, items)
    msg = str(e.value)
    assert msg.startswith(f"--set {items[1]}: {key}: conflicts with --set {items[0]}"), msg
    assert "\n" not in msg


def test_an_option_and_a_set_of_one_key_conflict_blaming_the_option():
    items = [Override('run.start="2024-12-01T07:30:00Z"', "--start 2024-12-01T07:30:00Z"),
             'run.start="2024-12-01T07:40:00Z"']
    with pytest.raises(ConfigError, match=r'^--set run.start="2024-12-01T07:40:00Z": run.start: conflicts with '
                                          r"--start 2024-12-01T07:30:00Z"):
        load_backtest_config(TESTNET, items)


@pytest.mark.parametrize("items", [
    ["strategy.max_position=5", "strategy.max_position=5"],
    ["strategy.max_position=5", "strategy.max_position=5.0"],  # the same number
    ["live.ws_trade=true", "live.ws_trade=true"],
    ["strategy.levels_per_side=2", "strategy.k_vol=1", "strategy.levels_per_side=2"],
])
def test_the_same_value_twice_is_fine(items):
    load_backtest_config(TESTNET, items)  # no ConfigError


def test_layers_replace_earlier_layers_but_a_conflict_inside_one_layer_stays():
    user = ["strategy.k_vol=1", 'run.start="a"', "report.html=true"]
    window = ['run.start="b"', 'run.end="c"']
    trial = ["strategy.k_vol=3"]
    assert layer_overrides(user, window, trial) == ["report.html=true", 'run.start="b"', 'run.end="c"', "strategy.k_vol=3"]
    assert layer_overrides(["strategy.k_vol=1", "strategy.k_vol=2"], []) == ["strategy.k_vol=1", "strategy.k_vol=2"]
    keep = Override("strategy.k_vol=1", "--k-vol 1")
    assert layer_overrides([keep], ["report.html=false"])[0].origin == "--k-vol 1"  # origins survive


def test_cli_refuses_a_conflict_with_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--out", str(tmp_path / "o"),
                        "--set", "strategy.max_position=0.01", "--set", "strategy.max_position=5"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr[-1500:]
    assert r.stderr.strip().splitlines() == [
        "error: --set strategy.max_position=5: strategy.max_position: conflicts with --set strategy.max_position=0.01 "
        "(one value per key: drop one of them)"], r.stderr
    assert not (tmp_path / "o").exists()
