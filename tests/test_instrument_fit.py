"""The strategy's order sizes against the instrument's order rules, checked by every mode's builder
before anything runs (mmbot/builders.py ``check_instrument_fit``): one line naming where the value
came from, the key, the instrument and its limit; exit 2 instead of a traceback from on_start.

XRPUSDT (shipped definition, as in the embedded catalog): size step 1, minimum quantity 1, maximum
1,154,000, minimum order value 5 USDT.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.instruments import InstrumentRegistry
from mmbot.builders import check_instrument_fit, check_instrument_fit_shipped
from mmbot.cli.main import main
from mmbot.config.backtest import ConfigError, load_backtest_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "config" / "backtest.toml"
XRP = "XRPUSDT-LINEAR.BYBIT"


# The shipped file sizes in USDT notional (resolved at a reference price); these checks are of the
# base-unit keys, so every size starts in base units (the default's resolved values) and a test's
# items replace them (tests/test_sizing_notional.py covers the notional keys).
BASE_UNITS = ("strategy.level_size=200", "strategy.max_position=1000", "risk.position.soft_position=1500",
              "risk.position.hard_position=2000")


def _cfg(*sets: str):
    from mmbot.config.backtest import layer_overrides

    return load_backtest_config(DEFAULT, layer_overrides(BASE_UNITS, sets))


@pytest.fixture(scope="module")
def xrp():
    return InstrumentRegistry().get_by_id(XRP)


@pytest.mark.parametrize(("sets", "needle"), [
    (("strategy.level_size=0.001", "strategy.max_position=0.01"),
     "--set strategy.level_size=0.001: strategy.level_size: 0.001 is below the minimum order quantity 1 of "
     f"{XRP} (size step 1)"),
    (("strategy.level_size=0.999", "strategy.max_position=10"),
     "--set strategy.level_size=0.999: strategy.level_size: 0.999 is below the minimum order quantity 1"),
    (("strategy.level_size=2000000", "strategy.max_position=3000000"),
     f"--set strategy.level_size=2000000: strategy.level_size: 2e+06 is above the maximum order quantity 1.154e+06 of {XRP}"),
])
def test_sizes_outside_the_instruments_quantity_limits_are_one_line(xrp, sets, needle):
    with pytest.raises(ConfigError) as e:
        check_instrument_fit(_cfg(*sets), xrp)
    assert str(e.value).startswith(needle) and "\n" not in str(e.value), str(e.value)


def test_the_limits_themselves_fit(xrp):
    check_instrument_fit(_cfg("strategy.level_size=1", "strategy.max_position=10"), xrp)  # min qty, no price
    check_instrument_fit(_cfg("strategy.level_size=1.5", "strategy.max_position=10"), xrp)  # rounds down to 1
    check_instrument_fit(_cfg("strategy.level_size=1154000", "strategy.max_position=2000000"), xrp)  # max qty
    check_instrument_fit(_cfg(), xrp, 1.95)  # the default: 200 XRP ~ 390 USDT


def test_minimum_order_value_at_the_reference_price(xrp):
    cfg = _cfg("strategy.level_size=2", "strategy.max_position=10")
    check_instrument_fit(cfg, xrp)  # no price: not checked
    check_instrument_fit(cfg, xrp, 2.5)  # 2 x 2.5 = 5 USDT: the minimum itself
    with pytest.raises(ConfigError, match=r"^--set strategy.level_size=2: strategy.level_size: 2 x 1.95 \(first trade\) "
                                          rf"= 3.9 is below the minimum order value 5 of {XRP}"):
        check_instrument_fit(cfg, xrp, 1.95, "first trade")
    # rounding down to the size step counts: 2.9 XRP is a 2 XRP order
    with pytest.raises(ConfigError, match="2.9 x 2.4"):
        check_instrument_fit(_cfg("strategy.level_size=2.9", "strategy.max_position=10"), xrp, 2.4)


def test_a_value_from_the_config_file_is_blamed_on_the_file(tmp_path, xrp):
    f = tmp_path / "c.toml"
    f.write_text(DEFAULT.read_text().replace("level_notional_usdt = 391.0", "level_size = 0.5")
                 .replace("max_position_notional_usdt = 1954.0", "max_position = 1000.0")
                 .replace("soft_position_notional_usdt = 2930.0", "soft_position = 1500.0")
                 .replace("hard_position_notional_usdt = 3907.0", "hard_position = 2000.0"))
    with pytest.raises(ConfigError, match=rf"^{f}: strategy.level_size: 0.5 is below the minimum order quantity 1"):
        check_instrument_fit(load_backtest_config(f), xrp)


def test_backtest_refuses_a_size_below_the_minimum_order_value_before_the_replay(tmp_path):
    """The default XRP hour with 2 XRP orders (~3.9 USDT < 5 USDT): every order would be skipped,
    a run of zero fills that looks like a result. Refused before the node is built."""
    r = CliRunner().invoke(main, ["backtest", "run", "--start", "2024-12-01T07:30:00Z", "--end", "2024-12-01T07:31:00Z",
                                  "--no-progress", "--out", str(tmp_path / "o"), "--set", "strategy.level_size=2"])
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith("error: --set strategy.level_size=2: strategy.level_size: 2 x 1.9") and \
        "(the window's first trade price)" in lines[0] and f"minimum order value 5 of {XRP}" in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


def _live_cfg(*sets: str):
    from mmbot.live.node import load_live_config

    return load_live_config(REPO / "config" / "testnet.toml", [
        "live.base_url_http=http://127.0.0.1:1", "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
        "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
        *sets])


def test_live_and_shadow_builders_check_the_fit_before_connecting(tmp_path):
    """config/testnet.toml is BTC-sized (0.001); on XRPUSDT both builders refuse with the line
    (before: the node connected, the strategy raised in on_start, "not ready: the strategy did not
    start"). The BTC config itself builds."""
    from mmbot.live.node import build_live_node_config
    from mmbot.live.secrets import Credentials
    from mmbot.live.shadow import build_shadow_node_config

    creds = Credentials("k" * 18, "s" * 36, "test")
    cfg, live = _live_cfg()
    build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path)
    build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path)
    cfg, live = _live_cfg(f"run.instrument={XRP}")
    needle = f"strategy.level_size: 0.001 is below the minimum order quantity 1 of {XRP}"
    with pytest.raises(ConfigError, match=needle):
        build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=needle):
        build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path)
    check_instrument_fit_shipped(cfg, "NOSUCHUSDT-LINEAR.BYBIT")  # no shipped definition: left to on_start
