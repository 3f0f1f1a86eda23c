"""Sizes and limits in USDT notional (issue 15, item 1; docs/config.md, "Sizes in notional").

Before: every size was in base units, and config/backtest.toml is XRP-sized (200 XRP per order), so
``mmbot backtest run --instrument BTCUSDT-LINEAR.BYBIT`` quoted 200 BTC (13 M USDT per order, every
one refused by the notional limit) and printed 0 fills with exit 0. Now the shipped config sizes in
USDT and the backtest builder turns each notional key into base units of the instrument at the
window's first trade, rounded DOWN to the lot step.

Hand-computed conversions (shipped definitions, as in the embedded catalog):
  XRPUSDT: lot step 1, min qty 1, min order value 5 USDT; first trade of the default hour 1.9532.
    391 / 1.9532 = 200.18 -> 200 XRP; 1954 -> 1000.4 -> 1000; 2930 -> 1500.1 -> 1500; 3907 -> 2000.3 -> 2000
  BTCUSDT: lot step 0.001, min qty 0.001, min order value 5 USDT, tick 0.1; first trade 67001.0.
    391 / 67001 = 0.005836 -> 0.005 BTC; 1954 -> 0.02916 -> 0.029; 2930 -> 0.04373 -> 0.043;
    3907 -> 0.05831 -> 0.058; one order needs 1 lot = 0.001 x 67001 = 67.001 USDT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.instruments import InstrumentRegistry
from mmbot.cli.main import main
from mmbot.config.backtest import ConfigError, load_backtest_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "config" / "backtest.toml"
XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"
XRP_REF, BTC_REF = 1.9532, 67001.0  # first trades of the embedded catalog's windows
SHORT = ("--start", "2024-12-01T07:30:00Z", "--end", "2024-12-01T07:35:00Z")  # five minutes of the XRP hour
BASE_UNITS = ("strategy.level_size=200.0", "strategy.max_position=1000.0", "risk.position.soft_position=1500.0",
              "risk.position.hard_position=2000.0")  # what the default's notional keys resolve to on XRP


def resolve_sizing(cfg, instrument, ref_price, price_source):
    from mmbot.builders import resolve_sizing as resolve  # imported here: the e2e tests run on any version

    return resolve(cfg, instrument, ref_price, price_source)


@pytest.fixture(scope="module")
def reg():
    return InstrumentRegistry()


def _run(out: Path, *args: str):
    return CliRunner().invoke(main, ["backtest", "run", "--no-progress", "--out", str(out), *args])


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# the conversion, by hand
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("iid", "ref", "expected"), [
    (XRP, XRP_REF, {"strategy.level_size": 200.0, "strategy.max_position": 1000.0,
                    "risk.position.soft_position": 1500.0, "risk.position.hard_position": 2000.0}),
    (BTC, BTC_REF, {"strategy.level_size": 0.005, "strategy.max_position": 0.029,
                    "risk.position.soft_position": 0.043, "risk.position.hard_position": 0.058}),
])
def test_the_default_notionals_resolve_by_hand(reg, iid, ref, expected):
    """Rounded DOWN to each instrument's own lot step (BTC 0.001, XRP 1), price in USDT per base unit."""
    cfg, record = resolve_sizing(load_backtest_config(DEFAULT), reg.get_by_id(iid), ref, "test price")
    got = {"strategy.level_size": cfg.strategy["level_size"], "strategy.max_position": cfg.strategy["max_position"],
           "risk.position.soft_position": cfg.risk.guards["position"]["soft_position"],
           "risk.position.hard_position": cfg.risk.guards["position"]["hard_position"]}
    assert got == expected  # exact: the values are rounded to the lot step's decimals
    assert "level_notional_usdt" not in cfg.strategy and "soft_position_notional_usdt" not in cfg.risk.guards["position"]
    assert record["reference_price"] == ref and record["price_source"] == "test price"
    assert record["instrument"] == iid
    assert {k: v["base"] for k, v in record["keys"].items()} == {
        "strategy.level_notional_usdt": expected["strategy.level_size"],
        "strategy.max_position_notional_usdt": expected["strategy.max_position"],
        "risk.position.soft_position_notional_usdt": expected["risk.position.soft_position"],
        "risk.position.hard_position_notional_usdt": expected["risk.position.hard_position"]}


def test_rounding_is_down_at_the_lot_boundary(reg):
    """201.003 USDT at 67001 is exactly three BTC lots, though 201.003 / 67001 / 0.001 is
    2.9999999999999996 in floating point (the noise must not drop a lot); 134.0019 USDT is 1.99997
    lots: still 1 lot (floor, not nearest)."""
    btc = reg.get_by_id(BTC)
    cfg, _ = resolve_sizing(load_backtest_config(DEFAULT, ["strategy.level_notional_usdt=67.001",
                                                           "strategy.max_position_notional_usdt=134.0019"]),
                            btc, BTC_REF, "p")
    assert cfg.strategy["level_size"] == 0.001 and cfg.strategy["max_position"] == 0.001
    cfg, _ = resolve_sizing(load_backtest_config(DEFAULT, ["strategy.level_notional_usdt=201.003"]), btc, BTC_REF, "p")
    assert cfg.strategy["level_size"] == 0.003


def test_a_config_without_notional_keys_is_returned_unchanged(reg):
    cfg = load_backtest_config(DEFAULT, list(BASE_UNITS))
    out, record = resolve_sizing(cfg, reg.get_by_id(BTC), None, "no price needed")
    assert out is cfg and record is None


def test_a_risk_limit_of_zero_stays_off(reg):
    cfg, record = resolve_sizing(load_backtest_config(DEFAULT, ["risk.position.soft_position_notional_usdt=0"]),
                                 reg.get_by_id(BTC), BTC_REF, "p")
    assert cfg.risk.guards["position"]["soft_position"] == 0.0
    assert record["keys"]["risk.position.soft_position_notional_usdt"]["base"] == 0.0


@pytest.mark.parametrize(("sets", "iid", "needle"), [
    # below one order: 60 USDT is 0 BTC; the minimum is one lot at the price, 67.001 USDT
    (("strategy.level_notional_usdt=60",), BTC,
     "--set strategy.level_notional_usdt=60: strategy.level_notional_usdt: 60 USDT at 67001 USDT/BTC (p) is 0 BTC "
     "after rounding down to the lot step 0.001, below one order of BTCUSDT-LINEAR.BYBIT: the minimum is 67.001 USDT"),
    # below the minimum order value: 4 USDT is 2 XRP = 3.9 USDT < 5; the minimum is 3 XRP = 5.8596 USDT
    (("strategy.level_notional_usdt=4",), XRP,
     "--set strategy.level_notional_usdt=4: strategy.level_notional_usdt: 4 USDT at 1.9532 USDT/XRP (p) is 2 XRP "
     "after rounding down to the lot step 1, below one order of XRPUSDT-LINEAR.BYBIT: the minimum is 5.8596 USDT"),
    # a limit that rounds to 0 lots is refused (only 0 itself turns it off)
    (("risk.position.hard_position_notional_usdt=50", "risk.position.soft_position_notional_usdt=0"), BTC,
     "--set risk.position.hard_position_notional_usdt=50: risk.position.hard_position_notional_usdt: 50 USDT at "
     "67001 USDT/BTC (p) rounds down to 0 BTC (lot step 0.001) on BTCUSDT-LINEAR.BYBIT: the minimum is 67.001 USDT"),
    # above the maximum order quantity (1190 BTC)
    (("strategy.level_notional_usdt=1e8", "strategy.max_position_notional_usdt=2e8"), BTC,
     "--set strategy.level_notional_usdt=1e8: strategy.level_notional_usdt: 1e+08 USDT at 67001 USDT/BTC (p) is "
     "1492.52 BTC, above the maximum order quantity 1190 BTC of BTCUSDT-LINEAR.BYBIT: the maximum is 7.97312e+07 USDT"),
    # both in USDT: level <= max position is checked at load time already
    (("strategy.level_notional_usdt=1950", "strategy.max_position_notional_usdt=1900"), None, None),
])
def test_what_cannot_fit_is_one_line_naming_key_instrument_and_minimum(reg, sets, iid, needle):
    if iid is None:
        with pytest.raises(ConfigError, match=r"^--set strategy.level_notional_usdt=1950: strategy.level_notional_usdt: "
                                              r"must be <= max_position_notional_usdt \(1900\)"):
            load_backtest_config(DEFAULT, list(sets))
        return
    cfg = load_backtest_config(DEFAULT, list(sets))
    with pytest.raises(ConfigError) as e:
        resolve_sizing(cfg, reg.get_by_id(iid), XRP_REF if iid == XRP else BTC_REF, "p")
    assert str(e.value).startswith(needle) and "\n" not in str(e.value), str(e.value)


def test_a_resolved_value_breaking_a_base_rule_names_the_notional_key(reg):
    """Mixed units: level 200 XRP from the command line, max position 300 USDT = 153 XRP."""
    cfg = load_backtest_config(DEFAULT, ["strategy.max_position_notional_usdt=300", "strategy.level_size=200"])
    with pytest.raises(ConfigError) as e:
        resolve_sizing(cfg, reg.get_by_id(XRP), XRP_REF, "p")
    line = str(e.value)
    assert line.startswith("--set strategy.level_size=200: strategy.level_size: must be <= max_position (153.0)"), line
    assert line.endswith("(strategy.max_position_notional_usdt -> strategy.max_position resolved at 1.9532 USDT/XRP (p))")


def test_no_reference_price_is_one_line(reg):
    with pytest.raises(ConfigError, match=r"strategy.level_notional_usdt: cannot be converted to BTCUSDT-LINEAR.BYBIT "
                                          r"base units without a reference price \(got None\): no trade"):
        resolve_sizing(load_backtest_config(DEFAULT), reg.get_by_id(BTC), None, "no trade")


# ---------------------------------------------------------------------------------------------
# one key per pair
# ---------------------------------------------------------------------------------------------

def test_both_keys_of_a_pair_in_the_file_is_one_line(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(DEFAULT.read_text().replace("level_notional_usdt = 391.0", "level_notional_usdt = 391.0\nlevel_size = 200.0"))
    r = _run(tmp_path / "o", "--config", str(f))
    line = _one_error_line(r)
    assert line == (f"error: {f}: strategy.level_notional_usdt: strategy.level_size ({f}) and "
                    f"strategy.level_notional_usdt ({f}) are one size in two units: give one of them "
                    "(docs/config.md, \"Sizes in notional\")"), line
    assert not (tmp_path / "o").exists()


def test_both_keys_of_a_pair_on_the_command_line_is_one_line_naming_the_items(tmp_path):
    r = _run(tmp_path / "o", "--set", "risk.position.hard_position=2000",
             "--set", "risk.position.hard_position_notional_usdt=3907")
    line = _one_error_line(r)
    assert line.startswith("error: --set risk.position.hard_position_notional_usdt=3907: "
                           "risk.position.hard_position_notional_usdt: risk.position.hard_position (--set "
                           "risk.position.hard_position=2000) and risk.position.hard_position_notional_usdt (--set "
                           "risk.position.hard_position_notional_usdt=3907) are one size in two units"), line


def test_a_command_line_key_replaces_the_files_twin(tmp_path):
    """The layering rule (a later layer replaces an earlier one): --set in base units over a file
    in notional, and the other way round."""
    cfg = load_backtest_config(DEFAULT, ["strategy.level_size=300"])
    assert cfg.strategy["level_size"] == 300 and "level_notional_usdt" not in cfg.strategy
    assert cfg.origin("strategy.level_size") == "--set strategy.level_size=300"
    f = tmp_path / "base.toml"
    f.write_text(DEFAULT.read_text().replace("level_notional_usdt = 391.0", "level_size = 200.0"))
    cfg = load_backtest_config(f, ["strategy.level_notional_usdt=500"])
    assert cfg.strategy["level_notional_usdt"] == 500 and "level_size" not in cfg.strategy


def test_live_and_shadow_node_builders_refuse_an_unresolved_notional_key_with_one_line(tmp_path):
    """`mmbot live` resolves notional keys at the venue's mark price before it builds the node
    (tests/test_live_sizing.py); a node config built from a config that skipped that step is
    refused, naming the key and its origin, never guessed."""
    from mmbot.live.node import build_live_node_config, load_live_config
    from mmbot.live.secrets import Credentials
    from mmbot.live.shadow import build_shadow_node_config

    cfg, live = load_live_config(REPO / "config" / "testnet.toml", [
        "live.base_url_http=http://127.0.0.1:1", "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
        "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
        "strategy.level_notional_usdt=100"])
    needle = (r"^--set strategy.level_notional_usdt=100: strategy.level_notional_usdt: a size in USDT notional "
              r"reached the node builder unresolved: .* give strategy.level_size")
    with pytest.raises(ConfigError, match=needle):
        build_live_node_config(cfg, live, "testnet", Credentials("k" * 18, "s" * 36, "test"), run_dir=tmp_path)
    with pytest.raises(ConfigError, match=needle):
        build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# end to end on the embedded catalog
# ---------------------------------------------------------------------------------------------

def _fills(out: Path) -> int:
    return json.loads((out / "report.json").read_text())["metrics"]["counts"]["n_fills"]


def test_btc_runs_out_of_the_box_with_fills_and_records_the_conversion(tmp_path):
    """Before: 200 BTC per order, 0 fills, exit 0."""
    out = tmp_path / "btc"
    r = _run(out, "--instrument", BTC)
    assert r.exit_code == 0, (r.output, repr(r.exception))
    assert _fills(out) > 0
    doc = json.loads((out / "config.resolved.json").read_text())
    assert doc["config"]["strategy"]["level_size"] == 0.005 and doc["config"]["strategy"]["max_position"] == 0.029
    assert doc["sizing"]["reference_price"] == BTC_REF and doc["sizing"]["lot_step"] == "0.001"
    assert doc["sizing"]["price_source"].startswith("the window's first trade, 2024-06-03T00:00:00")
    assert doc["sizing"]["keys"]["strategy.level_notional_usdt"] == {
        "notional_usdt": 391.0, "base_key": "strategy.level_size", "base": 0.005, "rounding": "down to the lot step"}


def test_xrp_default_in_notional_is_byte_identical_to_its_base_units(tmp_path):
    """The shipped notional keys resolve to the documented 200 / 1000 / 1500 / 2000 XRP: the
    report (config, its hash, every number) is byte for byte the one of the base-unit config,
    and it trades."""
    a, b = tmp_path / "notional", tmp_path / "base"
    r = _run(a, *SHORT)
    assert r.exit_code == 0, (r.output, repr(r.exception))
    r = _run(b, *SHORT, *[x for item in BASE_UNITS for x in ("--set", item)])
    assert r.exit_code == 0, (r.output, repr(r.exception))
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert _fills(a) > 0
    assert json.loads((a / "config.resolved.json").read_text())["sizing"]["reference_price"] == XRP_REF


def test_a_notional_below_the_minimum_exits_2_before_the_replay(tmp_path):
    r = _run(tmp_path / "o", "--instrument", BTC, "--set", "strategy.level_notional_usdt=20")
    line = _one_error_line(r)
    assert line.startswith("error: --set strategy.level_notional_usdt=20: strategy.level_notional_usdt: 20 USDT at "
                           "67001 USDT/BTC (the window's first trade, 2024-06-03T00:00:00"), line
    assert "below one order of BTCUSDT-LINEAR.BYBIT: the minimum is 67.001 USDT" in line, line
    assert not (tmp_path / "o").exists()


def test_wf_resolves_notional_sizes_per_run_on_btc(tmp_path):
    """``mmbot wf`` runs each trial through the backtest builder: the XRP-sized walk-forward fixture,
    sized in USDT, tunes on BTCUSDT and trades (one split of train 6m / test 3m, one trial)."""
    from mmbot.paths import REPO_ROOT

    text = (REPO_ROOT / "tests" / "fixtures" / "wf_small.toml").read_text()
    text = (text.replace('catalog = "../../catalog"', f'catalog = "{REPO_ROOT / "catalog"}"')
            .replace('out_dir = "../../runs"', f'out_dir = "{tmp_path / "runs"}"'))
    lines = [("level_notional_usdt = 391.0" if ln.startswith("level_size =") else
              "max_position_notional_usdt = 1954.0" if ln.startswith("max_position =") else ln)
             for ln in text.splitlines()]
    cfg = tmp_path / "wf.toml"
    cfg.write_text("\n".join(lines) + "\n")
    out = tmp_path / "wf"
    from mmbot.backtest import feed

    try:  # one worker runs inline: it turns this process's replay cache on (mmbot/tuning/worker.py)
        r = CliRunner().invoke(main, ["wf", "--config", str(cfg), "--no-progress", "--workers", "1", "--out", str(out),
                                      "--set", f"run.instrument={BTC}", "--set", "run.start=2024-06-03T00:00:00Z",
                                      "--set", "run.end=2024-06-03T00:09:00Z", "--set", "wf.trials=1"])
    finally:
        feed.enable_cache(False)  # off and emptied, as the other tests of this process expect
    assert r.exit_code == 0, (r.output, repr(r.exception))
    fills = int(r.output.split(" fills")[0].rsplit(" ", 1)[1])
    assert fills > 0, r.output


def test_risk_off_leaves_the_position_twins_alone(reg):
    """With ``risk.enabled = false`` the guards do not run: their USDT limits are neither resolved nor
    checked (before the fix: 'risk.position.Object contains unknown field hard_position_notional_usdt')."""
    cfg, record = resolve_sizing(load_backtest_config(DEFAULT, ["risk.enabled=false"]), reg.get_by_id(XRP), XRP_REF,
                                 "p")
    assert cfg.strategy["level_size"] == 200.0 and set(record["keys"]) == {
        "strategy.level_notional_usdt", "strategy.max_position_notional_usdt"}
    assert "risk" not in cfg.to_dict()


def test_a_window_without_a_trade_is_priced_at_the_last_trade_before_it(tmp_path):
    """1 ms between two book pushes: no trade in the window; the last trade of the hour before it
    prices the sizes and the run goes on as it did with base units (warm-up from the last
    snapshot, an empty report; before: exit 2 on the sizing line)."""
    from mmbot.builders import DataWindow, catalog_reference_price
    from mmbot.timeutil import parse_time_ns
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    start = parse_time_ns("2024-12-01T07:45:00Z")
    price, source = catalog_reference_price(ParquetDataCatalog(str(REPO / "catalog")), XRP,
                                            DataWindow(start, start + 1_000_000))
    assert price is not None and source.startswith("the last trade before the window, 2024-12-01T07:4"), source
    r = _run(tmp_path / "o", "--start", "2024-12-01T07:45:00Z", "--end", "2024-12-01T07:45:00.001Z")
    assert r.exit_code == 0, (r.output, repr(r.exception))
    sizing = json.loads((tmp_path / "o" / "config.resolved.json").read_text())["sizing"]
    assert sizing["price_source"] == source and sizing["reference_price"] == price
