"""[live] values that would flood the venue's REST API or expose POST /kill (hostile review of
issue 13, notes): refused at load with one line naming the key; sane values still load.

- ``open_check_interval_secs = 0.001`` queried the venue's open orders 1000 times a second (and
  ``inflight_check_threshold_ms = 1`` / ``inflight_check_interval_ms = 1`` queried every order in
  flight every millisecond): Bybit answers with rate limits and then an IP ban.
- ``metrics_host = "0.0.0.0"`` served ``POST /kill`` (and its token) in plain HTTP on every
  interface: a non-loopback host needs the kill endpoint off (``kill_token_env = ""``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbot.config.backtest import ConfigError
from mmbot.live.node import load_live_config

TESTNET = Path(__file__).resolve().parent.parent / "config/testnet.toml"


@pytest.mark.parametrize("item,problem", [
    ("live.open_check_interval_secs=0.001", "must be 0 (off) or >= 1"),
    ("live.open_check_interval_secs=0.5", "must be 0 (off) or >= 1"),
    ("live.inflight_check_threshold_ms=1", "must be >= 500"),
    ("live.inflight_check_interval_ms=1", "must be >= 100"),
    ("live.metrics_host=0.0.0.0", "plain HTTP"),
    ("live.metrics_host=192.168.1.5", "plain HTTP"),
    ("live.metrics_host=::", "plain HTTP"),
])
def test_rest_flood_and_public_kill_endpoint_refused(item, problem):
    with pytest.raises(ConfigError) as e:
        load_live_config(TESTNET, [item])
    msg = str(e.value)
    key = item.split("=")[0]
    assert msg.startswith(f"--set {item}: {key} = "), msg
    assert problem in msg and "\n" not in msg, msg


@pytest.mark.parametrize("items", [
    ["live.open_check_interval_secs=0"],        # off
    ["live.open_check_interval_secs=1"],
    ["live.inflight_check_threshold_ms=500", "live.inflight_check_interval_ms=100"],
    ["live.metrics_host=127.0.0.1"], ["live.metrics_host=localhost"], ["live.metrics_host=::1"],
    ["live.metrics_host=0.0.0.0", 'live.kill_token_env=""'],  # metrics for a remote scraper, no /kill
])
def test_sane_values_load(items):
    load_live_config(TESTNET, items)
