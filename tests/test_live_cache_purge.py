"""The live and shadow nodes purge closed orders and old account events from their cache.

The 1-hour soak (docs/benchmarks.md "Soak") measured RSS growing ~44 MB/h: Nautilus keeps every
order and account event of the session in memory unless ``LiveExecEngineConfig.purge_*`` is set,
and mmbot set none. ``[live] purge_closed_after_mins`` (default 15, 0 = keep everything) now sets
them; open/in-flight orders and positions are never purged (Nautilus purges closed orders only;
positions are not configured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbot.config.backtest import ConfigError
from mmbot.live.node import build_live_node_config, load_live_config
from mmbot.live.secrets import Credentials

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = ["live.base_url_http=http://127.0.0.1:1", "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
            "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
            "live.adapter_environment=mainnet", "live.test_exchange=true"]


def _exec_engine(tmp_path, items):
    cfg, live = load_live_config(REPO / "config" / "testnet.toml", LOOPBACK + items)
    nc = build_live_node_config(cfg, live, "testnet", Credentials("k" * 18, "s" * 36, "test"), run_dir=tmp_path,
                                metrics_port=0)
    return nc.exec_engine


def test_live_node_purges_closed_orders_and_account_events_by_default(tmp_path):
    e = _exec_engine(tmp_path, [])
    assert e.purge_closed_orders_buffer_mins == 15 and e.purge_closed_orders_interval_mins == 5
    assert e.purge_account_events_lookback_mins == 15 and e.purge_account_events_interval_mins == 5
    assert e.purge_closed_positions_interval_mins is None  # one netting position, reopened under its id
    assert e.purge_from_database is False


def test_purge_window_follows_the_key_and_zero_keeps_everything(tmp_path):
    e = _exec_engine(tmp_path, ["live.purge_closed_after_mins=2"])
    assert (e.purge_closed_orders_buffer_mins, e.purge_closed_orders_interval_mins) == (2, 2)
    e = _exec_engine(tmp_path, ["live.purge_closed_after_mins=0"])
    assert e.purge_closed_orders_interval_mins is None and e.purge_account_events_interval_mins is None


def test_shadow_node_purges_too(tmp_path):
    from mmbot.live.shadow import build_shadow_node_config

    cfg, live = load_live_config(REPO / "config" / "testnet.toml", [])
    nc = build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path, metrics_port=0)
    assert nc.exec_engine.purge_closed_orders_buffer_mins == 15


@pytest.mark.parametrize("value,problem", [("-1", "must be >= 0"), ("nan", "Expected `int`"), ("10081", "<= 10080")])
def test_purge_window_out_of_range_is_refused(value, problem):
    with pytest.raises(ConfigError) as e:
        load_live_config(REPO / "config" / "testnet.toml", [f"live.purge_closed_after_mins={value}"])
    assert "purge_closed_after_mins" in str(e.value) and problem in str(e.value), str(e.value)
