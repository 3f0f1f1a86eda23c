"""Every ``[live]`` value is range-checked, NaN and inf included: one line naming the key, its value
and where it came from (the config file or ``--set``), exit 2 (mmbot/live/node.py ``load_live_config``).
Mutants of the check are in ``test_live_config_mutants_are_caught``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmbot.live.node as N
from mmbot.config.backtest import ConfigError
from mmbot.live.node import load_live_config
from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parent.parent
TESTNET = REPO / "config" / "testnet.toml"

# key, value as written after "=" (TOML, as --set parses it), text the message must contain
BAD = [
    ("log_level", "NOPE", "must be one of"),
    ("max_retries", "-1", "must be >= 1"),
    ("max_retries", "0", "must be >= 1"),
    ("max_retries", "1.5", "Expected `int`"),
    ("ready_max_book_age_s", "nan", "finite"),
    ("ready_max_book_age_s", "inf", "finite"),
    ("ready_max_book_age_s", "0", "must be > 0"),
    ("timeout_connection_s", "-1", "must be > 0"),
    ("timeout_connection_s", "0", "must be > 0"),
    ("timeout_connection_s", "nan", "finite"),
    ("timeout_reconciliation_s", "-inf", "finite"),
    ("timeout_disconnection_s", "0", "must be > 0"),
    ("timeout_post_stop_s", "-0.5", "must be >= 0"),
    ("stop_deadline_s", "nan", "finite"),
    ("stop_deadline_s", "0", "must be > 0"),
    ("reconnect_timeout_s", "inf", "finite"),
    ("open_check_interval_secs", "-1", "must be >= 0"),
    ("inflight_check_interval_ms", "0", "must be >= 100"),
    ("inflight_check_threshold_ms", "-5", "must be >= 500"),
    ("reconciliation_lookback_mins", "-1", "must be >= 0"),
    ("instrument_status_poll_secs", "-1", "must be >= 0"),
    ("record_flush_ms", "0", "must be >= 1"),
    ("metrics_port", "70000", "<= 65535"),
    ("metrics_port", "-2", "must be >= -1"),
    ("account", '""', "must not be empty"),
    ("lock_dir", '" "', "must not be empty"),
    ("kill_token_env", '"A B"', "environment variable name"),
    ("environment", "prod", "must be one of"),
    ("adapter_environment", "prod", "must be one of"),
    ("foreign_orders", "cancel", "must be one of"),
    ("record", "yes", "Expected `bool`"),
    ("base_url_http", "http://127.0.0.1@api.bybit.com", "user info"),
    ("base_url_ws_private", "http://127.0.0.1:1/v5/private", "must start with ws:// or wss://"),
    ("nope", "1", "unknown key"),
]


@pytest.mark.parametrize("key,value,text", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_live_config_bad_value_from_set_names_key_and_origin(key, value, text):
    with pytest.raises(ConfigError) as e:
        load_live_config(TESTNET, [f"live.{key}={value}"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--set live.{key}={value}: live.{key}"), msg
    assert text in msg, msg


def _toml_value(text: str) -> str:
    import json
    import tomllib

    try:
        tomllib.loads(f"v = {text}")
        return text
    except tomllib.TOMLDecodeError:
        return json.dumps(text)  # a bare word on the command line is a string


@pytest.mark.parametrize("key,value,text", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_live_config_bad_value_in_file_names_the_file(tmp_path, key, value, text):
    cfg = tmp_path / "live.toml"
    cfg.write_text(f"[live]\n{key} = {_toml_value(value)}\n")
    with pytest.raises(ConfigError) as e:
        load_live_config(cfg, [])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{cfg}: live.{key}") and text in msg, msg


def test_live_config_defaults_and_shipped_configs_are_valid():
    for name in ("testnet.toml", "demo.toml", "mainnet.toml"):
        _, live = load_live_config(REPO / "config" / name, [])
        assert live.stop_deadline_s == 15.0 and live.reconnect_timeout_s == 30.0
    _, live = load_live_config(TESTNET, ["live.log_level=debug", "live.timeout_post_stop_s=0"])
    assert live.timeout_post_stop_s == 0.0


def test_live_config_cli_log_level_nope_exit_2_one_line(tmp_path):
    """Used to abort in Rust (exit 134) with the panic text swallowed by the masking pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(BYBIT_TESTNET_API_KEY=process_api_key("K" * 18), BYBIT_TESTNET_API_SECRET="S" * 24)
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "live", "--config", "config/testnet.toml", "--duration", "1s",
                        "--set", f"live.lock_dir={tmp_path}", "--set", "live.log_level=NOPE",
                        "--set", "live.base_url_http=http://127.0.0.1:9"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines == ["error: --set live.log_level=NOPE: live.log_level = 'NOPE': must be one of TRACE, DEBUG, INFO, "
                     "WARNING, WARN, ERROR, OFF"], r.stderr


# -- mutants of the range check ------------------------------------------------------------------

def _caught(monkeypatch_apply) -> list[str]:
    failing = []
    for key, value, text in BAD:
        try:
            test_live_config_bad_value_from_set_names_key_and_origin(key, value, text)
        except BaseException as e:  # noqa: BLE001  (pytest.fail / AssertionError / anything)
            failing.append(f"{key}={value}: {type(e).__name__}")
    return failing


@pytest.mark.parametrize("mutant", ["no finiteness check", "all lower bounds inclusive", "origin always the file",
                                    "log_level not checked"])
def test_live_config_mutants_are_caught(monkeypatch, mutant):
    if mutant == "no finiteness check":
        monkeypatch.setattr(N.math, "isfinite", lambda v: True)
    elif mutant == "all lower bounds inclusive":
        monkeypatch.setattr(N, "_RANGES", {k: (lo, hi, True) for k, (lo, hi, _) in N._RANGES.items()})
    elif mutant == "origin always the file":
        real = N.load_live_config

        def load(path, overrides=(), **kw):
            try:
                return real(path, overrides, **kw)
            except ConfigError as e:
                msg = str(e)
                raise ConfigError(str(path) + msg[msg.index(": live."):] if ": live." in msg else msg) from None

        monkeypatch.setattr(sys.modules[__name__], "load_live_config", load)
    elif mutant == "log_level not checked":
        monkeypatch.setattr(N, "LOG_LEVELS", ("NOPE",) + N.LOG_LEVELS)
    assert _caught(monkeypatch), f"mutant {mutant!r} passes every bad value"
