"""Every numeric config value is range-checked (NaN and inf included) and a bad one exits 2 with ONE
line naming the key and where the value came from: the config file, or the ``--set`` item.

The table below states, independently of mmbot's rule tables, which of NaN, inf, -inf, -1, 0, a
huge value and a wrong type each key must refuse; each is fed from a config file and from
``--set`` to ``mmbot backtest run`` (``mmbot wf`` for ``[wf]``). Values a key must accept are
loaded too, so an over-eager rule fails as well.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.config.backtest import ConfigError, load_backtest_config
from mmbot.paths import CONFIG_DIR, REPO_ROOT

NAN, INF = math.nan, math.inf
BAD_TYPE = "abc"

# Kinds: which probe values a key must refuse (True) or accept (False).
#   pos     > 0, bounded            nonneg  >= 0, bounded
#   finite  any sign, bounded       unit    in [0, 1]
#   pos_inf > 0, inf allowed ("no limit"), no upper bound
#   (strategy keys are bounded above by MarketMakerConfig itself, strategies/market_maker.py MAX_*)
PROBES = ("nan", "inf", "-inf", "neg", "zero", "huge", "type")
KINDS = {
    "pos":       dict(nan=1, inf=1, **{"-inf": 1}, neg=1, zero=1, huge=1, type=1),
    "nonneg":    dict(nan=1, inf=1, **{"-inf": 1}, neg=1, zero=0, huge=1, type=1),
    "finite":    dict(nan=1, inf=1, **{"-inf": 1}, neg=0, zero=0, huge=1, type=1),
    "unit":      dict(nan=1, inf=1, **{"-inf": 1}, neg=1, zero=0, huge=1, type=1),
    "pos_inf":   dict(nan=1, inf=0, **{"-inf": 1}, neg=1, zero=1, huge=0, type=1),
    "at_least1": dict(nan=1, inf=1, **{"-inf": 1}, neg=1, zero=1, huge=1, type=1),
}

# (dotted key, kind, integer?)
BACKTEST_KEYS = [
    ("run.seed", "nonneg", True), ("run.chunk_size", "pos", True), ("run.purge_interval_s", "nonneg", True),
    ("venue.starting_balance_usdt", "pos", False), ("venue.leverage", "at_least1", False),
    ("venue.queue_power", "pos", False), ("venue.order_latency_ms", "nonneg", False),
    ("venue.order_latency_std_ms", "nonneg", False), ("venue.amend_latency_ms", "nonneg", False),
    ("venue.cancel_latency_ms", "nonneg", False), ("venue.extra_slippage_bps", "nonneg", False),
    ("report.equity_interval_ms", "pos", True),
    ("strategy.level_size", "pos", False), ("strategy.max_position", "pos", False),
    ("strategy.vol_halflife_ms", "pos", False), ("strategy.vol_horizon_ms", "pos", False),
    ("strategy.vol_warmup_ms", "nonneg", False), ("strategy.min_half_spread_bps", "nonneg", False),
    ("strategy.k_vol", "nonneg", False), ("strategy.glft_kappa", "pos", False),
    ("strategy.glft_A", "pos", False), ("strategy.risk_aversion", "nonneg", False),
    ("strategy.horizon_s", "nonneg", False), ("strategy.skew_bps_per_unit", "nonneg", False),
    ("strategy.levels_per_side", "pos", True), ("strategy.level_spacing_bps", "nonneg", False),
    ("strategy.level_spacing_coef", "nonneg", False), ("strategy.size_multiplier", "pos", False),
    ("strategy.imbalance_cutoff", "pos", False), ("strategy.requote_threshold_bps", "nonneg", False),
    ("strategy.max_order_age_ms", "pos_inf", False), ("strategy.min_time_in_book_ms", "nonneg", False),
    ("strategy.stale_price_drift_bps", "pos_inf", False),
    ("risk.position.soft_position", "nonneg", False), ("risk.position.hard_position", "nonneg", False),
    ("risk.position.soft_notional", "nonneg", False), ("risk.position.hard_notional", "nonneg", False),
    ("risk.position.soft_total_notional", "nonneg", False), ("risk.position.hard_total_notional", "nonneg", False),
    ("risk.position.check_interval_ms", "pos", True),
    ("risk.loss.daily_loss_stop", "nonneg", False), ("risk.loss.daily_turnover_cap", "nonneg", False),
    ("risk.loss.check_interval_ms", "pos", True),
    ("risk.drawdown.max_drawdown", "pos", False), ("risk.drawdown.check_interval_ms", "pos", True),
    ("risk.edge.horizon_ms", "pos", True), ("risk.edge.window_s", "pos", False),
    ("risk.edge.min_fills", "at_least1", True), ("risk.edge.min_markout_bps", "finite", False),
    ("risk.edge.widen_factor", "at_least1", False), ("risk.edge.widen_s", "pos", False),
    ("risk.edge.cooldown_s", "pos", False),
    ("risk.circuit_breaker.window_s", "pos", False), ("risk.circuit_breaker.max_rejects", "nonneg", True),
    ("risk.circuit_breaker.max_rate_limits", "nonneg", True), ("risk.circuit_breaker.max_errors", "nonneg", True),
    ("risk.circuit_breaker.cooldown_s", "pos", False), ("risk.circuit_breaker.probe_orders", "at_least1", True),
    ("risk.stale_data.max_book_age_ms", "pos", True), ("risk.stale_data.check_interval_ms", "pos", True),
    ("risk.kill_switch.poll_interval_ms", "pos", True),
    ("risk.engine.max_notional_per_order", "nonneg", False),
    # USDT twins of the base-unit sizes (mmbot/config/sizing.py; the shipped file sizes in them)
    ("strategy.level_notional_usdt", "pos", False), ("strategy.max_position_notional_usdt", "pos", False),
    ("risk.position.soft_position_notional_usdt", "nonneg", False),
    ("risk.position.hard_position_notional_usdt", "nonneg", False),
]
WF_KEYS = [
    ("wf.trials", "at_least1", True), ("wf.seed", "nonneg", True), ("wf.batch_size", "at_least1", True),
    ("wf.workers", "nonneg", True), ("wf.min_fills", "nonneg", True), ("wf.min_test_minutes", "nonneg", False),
    ("wf.objective.cvar_lambda", "nonneg", False), ("wf.gates.min_hit_rate", "unit", False),
    ("wf.gates.min_maker_share", "unit", False), ("wf.gates.max_cvar_loss_usdt", "nonneg", False),
    ("wf.gates.min_net_pnl_usdt", "finite", False), ("wf.gates.max_drawdown_usdt", "nonneg", False),
]


def probe_value(probe: str, integer: bool):
    return {"nan": NAN, "inf": INF, "-inf": -INF, "neg": -1 if integer else -1.0, "zero": 0 if integer else 0.0,
            "huge": 10**30 if integer else 1e300, "type": 1.5 if integer else BAD_TYPE}[probe]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == INF else "-inf" if v == -INF else repr(v))
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(d: dict, prefix: str = "") -> str:
    """A config dict as TOML (tables after plain keys; dotted space keys quoted)."""
    plain = [f'{k if k.isidentifier() else repr(k).replace(chr(39), chr(34))} = {toml_value(v)}'
             for k, v in d.items() if not isinstance(v, dict) or prefix.endswith("space")]
    out = ""
    if plain:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(plain) + "\n\n"
    for k, v in d.items():
        if isinstance(v, dict) and not prefix.endswith("space"):
            out += to_toml(v, f"{prefix}.{k}" if prefix else k)
    return out


def base_raw(name: str) -> dict:
    raw = tomllib.loads((CONFIG_DIR / name).read_text())
    for section in ("run",):
        raw[section]["catalog"] = str(REPO_ROOT / "catalog")
        raw[section]["out_dir"] = str(REPO_ROOT / "runs")
    return raw


def with_value(raw: dict, dotted: str, value) -> dict:
    import copy

    out = copy.deepcopy(raw)
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    from mmbot.config.sizing import TWINS

    for t in TWINS:  # one key of each size pair: the probed key replaces its twin in the file
        if dotted in (t.base_key, t.notional_key):
            node.pop(t.notional if dotted == t.base_key else t.base, None)
    return out


def invoke(args: list[str]):
    """The command on a catalog that does not exist: a value that passes validation then fails
    fast on the catalog (not on the key), so an accepted bad value never runs a replay."""
    if args[0] in ("backtest", "wf"):
        args = [*args, "--catalog", "/nonexistent/mmbot-test-catalog"]
    return CliRunner().invoke(main, args)


def assert_one_line(r, key: str, origin: str) -> None:
    assert r.exit_code == 2, (key, origin, r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    assert lines[0].startswith(f"error: {origin}: {key}: "), (lines[0], origin, key)


def _case_ids(keys):
    return [k for k, _, _ in keys]


@pytest.mark.parametrize(("key", "kind", "integer"), BACKTEST_KEYS, ids=_case_ids(BACKTEST_KEYS))
def test_backtest_value_from_file_and_set(tmp_path, key, kind, integer):
    raw = base_raw("backtest.toml")
    out = tmp_path / "o"
    for probe in PROBES:
        value = probe_value(probe, integer)
        cfg = tmp_path / f"{probe}.toml"
        cfg.write_text(to_toml(with_value(raw, key, value)))
        if KINDS[kind][probe]:
            item = f"{key}={toml_value(value)}"
            assert_one_line(invoke(["backtest", "run", "--config", str(cfg), "--out", str(out)]), key, str(cfg))
            plain = tmp_path / "plain.toml"
            plain.write_text(to_toml(raw))
            assert_one_line(invoke(["backtest", "run", "--config", str(plain), "--out", str(out), "--set", item]),
                            key, f"--set {item}")
        else:
            load_backtest_config(cfg)  # must be accepted
    assert not out.exists()


@pytest.mark.parametrize(("key", "kind", "integer"), WF_KEYS, ids=_case_ids(WF_KEYS))
def test_wf_value_from_file_and_set(tmp_path, key, kind, integer):
    from mmbot.tuning.config import load_wf_config

    raw = base_raw("wf.toml")
    out = tmp_path / "o"
    for probe in PROBES:
        value = probe_value(probe, integer)
        cfg = tmp_path / f"{probe}.toml"
        cfg.write_text(to_toml(with_value(raw, key, value)))
        if KINDS[kind][probe]:
            item = f"{key}={toml_value(value)}"
            assert_one_line(invoke(["wf", "--config", str(cfg), "--out", str(out)]), key, str(cfg))
            plain = tmp_path / "plain.toml"
            plain.write_text(to_toml(raw))
            assert_one_line(invoke(["wf", "--config", str(plain), "--out", str(out), "--set", item]), key,
                            f"--set {item}")
        else:
            load_wf_config(cfg)
    assert not out.exists()


@pytest.mark.parametrize("field", ["low", "high", "step"])
@pytest.mark.parametrize("value", [NAN, INF, -INF, 1e300])
def test_wf_space_bounds_must_be_finite(tmp_path, field, value):
    raw = base_raw("wf.toml")
    space = {"low": 0.25, "high": 4.0, "step": 0.25}
    space[field] = value
    raw["wf"]["space"] = {"strategy.min_half_spread_bps": space}
    cfg = tmp_path / "wf.toml"
    cfg.write_text(to_toml(raw))
    assert_one_line(invoke(["wf", "--config", str(cfg), "--out", str(tmp_path / "o")]),
                    f"wf.space.strategy.min_half_spread_bps.{field}", str(cfg))


@pytest.mark.parametrize(("key", "value"), [
    ("venue.latency_histogram", [[1.0, NAN]]), ("venue.latency_histogram", [[INF, 1.0]]),
    ("venue.latency_histogram", [[-1.0, 1.0]]), ("venue.latency_histogram", [[1.0, 0.0]]),
    ("report.markout_horizons_ms", [100, 0]), ("report.markout_horizons_ms", [10**30]),
    ("report.markout_horizons_ms", [1.5]), ("run.start", "03/13/2024x"), ("run.end", "99999999999999999999"),
    ("run.instrument", "BTCUSDT"), ("risk.engine.max_order_submit_rate", "0/00:00:01"),
    ("risk.engine.max_order_submit_rate", "100/00:00:00"), ("risk.engine.max_order_modify_rate", "100/00:99:00"),
    ("risk.kill_switch.file", "runs/KILL.{environment}"), ("venue.fill_model", "prob_pwer"),
])
def test_other_values_name_key_and_origin(tmp_path, key, value):
    raw = base_raw("backtest.toml")
    if key == "venue.latency_histogram":
        raw["venue"]["order_latency"] = "histogram"
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(with_value(raw, key, value)))
    assert_one_line(invoke(["backtest", "run", "--config", str(cfg), "--out", str(tmp_path / "o")]), key, str(cfg))
    plain = tmp_path / "plain.toml"
    plain.write_text(to_toml(raw))
    item = f"{key}={toml_value(value)}"
    assert_one_line(invoke(["backtest", "run", "--config", str(plain), "--out", str(tmp_path / "o"), "--set", item]),
                    key, f"--set {item}")


def test_every_section_key_has_a_rule():
    """A key added to a section struct without a rule would go unchecked (merge guard)."""
    from mmbot.config.backtest import RULES, SECTIONS
    from mmbot.tuning.config import GATES_RULES, OBJECTIVE_RULES, WF_RULES, WF_TABLES, GatesSection, \
        ObjectiveSection, WfSection

    for name, cls in SECTIONS.items():
        assert set(cls.__struct_fields__) == set(RULES[name]), name
    assert set(WfSection.__struct_fields__) == set(WF_RULES) | set(WF_TABLES)
    assert set(ObjectiveSection.__struct_fields__) == set(OBJECTIVE_RULES)
    assert set(GatesSection.__struct_fields__) == set(GATES_RULES)


# -- --set typos: blamed on --set, with a did-you-mean; risk is a known section --------------------

@pytest.mark.parametrize(("item", "needle"), [
    ("rsik.loss.daily_loss_stop=5", "rsik: unknown section (known: live, portfolio, report, risk, run, strategy, venue, wf); "
                                    "did you mean risk?"),
    ("venu.leverage=5", "venu: unknown section (known: live, portfolio, report, risk, run, strategy, venue, wf); "
                        "did you mean venue?"),
    ("venue.levrage=5", "venue.levrage: unknown key; did you mean leverage?"),
    ("strategy.level_siz=0.01", "strategy.level_siz: unknown key; did you mean level_size?"),
    ("risk.los.daily_loss_stop=5", "risk.los: unknown key (known: audit, circuit_breaker, drawdown, edge, enabled, "
                                   "engine, kill_switch, loss, portfolio, position, stale_data); did you mean loss?"),
    ("risk.loss.daily_los_stop=5", "risk.loss.daily_los_stop: unknown key; did you mean daily_loss_stop?"),
    ("report.htm=false", "report.htm: unknown key; did you mean html?"),
])
def test_set_typo_is_blamed_on_set_with_suggestion(tmp_path, item, needle):
    r = invoke(["backtest", "run", "--out", str(tmp_path / "o"), "--set", item])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: --set {item}: {needle}"]


def test_file_typo_is_blamed_on_the_file(tmp_path):
    raw = base_raw("backtest.toml")
    raw["venue"]["levrage"] = raw["venue"].pop("leverage")
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(raw))
    r = invoke(["backtest", "run", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert r.stderr.strip() == f"error: {cfg}: venue.levrage: unknown key; did you mean leverage?"


def test_option_values_are_blamed_on_the_option(tmp_path):
    r = invoke(["backtest", "run", "--out", str(tmp_path / "o"), "--start", "2024-13-45"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --start 2024-13-45: run.start: not a time"), r.stderr
    r = invoke(["wf", "--out", str(tmp_path / "o"), "--trials", "0"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --trials 0: wf.trials: must be an integer >= 1"), r.stderr


def test_strategy_infinity_documented_as_no_limit_reaches_nautilus():
    """``max_order_age_ms = inf`` is documented; Nautilus passes configs as JSON (inf -> null), so
    the builder must hand it a number JSON can carry."""
    from nautilus_trader.trading.config import StrategyFactory

    from mmbot.builders import strategy_config

    cfg = load_backtest_config(CONFIG_DIR / "backtest.toml", ["strategy.max_order_age_ms=inf",
                                                              "strategy.stale_price_drift_bps=inf",
                                                              "strategy.level_size=200", "strategy.max_position=1000"])
    strategy = StrategyFactory.create(strategy_config(cfg, cfg.run.instrument))
    assert strategy.config.max_order_age_ms > 1e300 and strategy.config.stale_price_drift_bps > 1e300


@pytest.mark.parametrize("args", [
    ["--set", "venue.leverage=nan"],
    ["--set", "venue.starting_balance_usdt=1e20"],
    ["--set", "risk.kill_switch.poll_interval_ms=100000000000000000000"],
])
def test_no_traceback_in_a_real_process(tmp_path, args):
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--out", str(tmp_path / "o"), *args],
                       capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: --set {args[1]}: {args[1].split('=')[0]}: "), r.stderr


def test_config_error_is_raised_not_printed():
    with pytest.raises(ConfigError, match=r"^--set venue.leverage=-inf: venue.leverage: must be a finite number >= 1"):
        load_backtest_config(CONFIG_DIR / "backtest.toml", ["venue.leverage=-inf"])


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("1.0", True), ("0.999", False), ("0.5", False)])
def test_leverage_below_one_is_rejected_at_load(value, ok):
    """Nautilus' margin account refuses leverage < 1 (ValueError in set_default_leverage, after
    the node was built): the config rule is >= 1, so the run never starts with it."""
    item = f"venue.leverage={value}"
    if ok:
        assert load_backtest_config(CONFIG_DIR / "backtest.toml", [item]).venue.leverage == 1.0
    else:
        with pytest.raises(ConfigError, match=rf"^--set {item}: venue.leverage: must be a finite number >= 1 and <= 1000"):
            load_backtest_config(CONFIG_DIR / "backtest.toml", [item])


# -- queue-simulator keys beside fill_model = "nautilus" (nothing dropped silently) ------------

def test_switching_the_default_config_to_nautilus_on_the_command_line_still_loads():
    """config/backtest.toml sets order/amend/cancel latencies for the queue simulator; switching
    the model with --set leaves those file values alone (the benchmarks do this)."""
    cfg = load_backtest_config(CONFIG_DIR / "backtest.toml", ['venue.fill_model="nautilus"'])
    assert cfg.venue.fill_model == "nautilus" and cfg.venue.order_latency_ms == 10.0
    # and "no calibration file" is not a setting
    load_backtest_config(CONFIG_DIR / "backtest.toml", ['venue.fill_model="nautilus"', 'venue.calibration=""'])


@pytest.mark.parametrize("item", ["venue.queue_power=2", 'venue.order_latency="normal"', "venue.order_latency_ms=50",
                                  "venue.order_latency_std_ms=1", "venue.latency_histogram=[[1, 1]]",
                                  "venue.amend_latency_ms=1", "venue.cancel_latency_ms=1", "venue.response_latency_ms=0",
                                  "venue.extra_slippage_bps=5", 'venue.calibration="calibration.example.json"'])
def test_a_queue_simulator_key_on_the_command_line_is_rejected_with_nautilus(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as e:
        load_backtest_config(CONFIG_DIR / "backtest.toml", ['venue.fill_model="nautilus"', item])
    line = str(e.value)
    assert line.startswith(f"--set {item}: {key}: applies only to the queue simulator"), line
    assert '(--set venue.fill_model="nautilus")' in line and "\n" not in line


def test_a_file_that_chooses_nautilus_may_not_set_queue_simulator_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[venue]\nfill_model = "nautilus"\nextra_slippage_bps = 5.0\n')
    with pytest.raises(ConfigError, match=rf"^{f}: venue.extra_slippage_bps: applies only to the queue simulator, "
                                          rf'but venue.fill_model is "nautilus" \({f}\)'):
        load_backtest_config(f)
    f.write_text('[venue]\nfill_model = "nautilus"\n')
    with pytest.raises(ConfigError, match=r"^--set venue.cancel_latency_ms=3: venue.cancel_latency_ms: applies only"):
        load_backtest_config(f, ["venue.cancel_latency_ms=3"])
    assert load_backtest_config(f).venue.fill_model == "nautilus"  # defaults never count
    # with a queue model the same keys are what the simulator runs on
    f.write_text('[venue]\nfill_model = "prob_log"\nextra_slippage_bps = 5.0\n')
    assert load_backtest_config(f).venue.extra_slippage_bps == 5.0


STRATEGY_BOUNDS = [("level_size", 1e9), ("max_position", 1e9), ("vol_halflife_ms", 86_400_000.0),
                   ("vol_horizon_ms", 86_400_000.0), ("vol_warmup_ms", 86_400_000.0), ("min_half_spread_bps", 10_000.0),
                   ("k_vol", 1_000.0), ("glft_kappa", 1e6), ("glft_A", 1e6), ("risk_aversion", 1_000.0),
                   ("horizon_s", 86_400.0), ("skew_bps_per_unit", 10_000.0), ("levels_per_side", 100),
                   ("level_spacing_bps", 10_000.0), ("level_spacing_coef", 100.0), ("size_multiplier", 10.0),
                   ("requote_threshold_bps", 10_000.0), ("min_time_in_book_ms", 86_400_000.0)]


@pytest.mark.parametrize(("key", "bound"), STRATEGY_BOUNDS, ids=[k for k, _ in STRATEGY_BOUNDS])
def test_strategy_upper_bound_is_inclusive_and_beyond_it_is_one_line(key, bound):
    """Each [strategy] number's upper bound (strategies/market_maker.py MAX_*, docs/strategy.md):
    the bound itself loads, the next value above it is one line naming the key and the bound."""
    base = ["strategy.max_position=1e9"] if key == "level_size" else []
    at = f"strategy.{key}={bound!r}"
    load_backtest_config(CONFIG_DIR / "backtest.toml", [*base, at])
    above = bound + 1 if isinstance(bound, int) else bound * (1 + 1e-9)
    item = f"strategy.{key}={above!r}"
    with pytest.raises(ConfigError) as e:
        load_backtest_config(CONFIG_DIR / "backtest.toml", [*base, item])
    assert str(e.value).startswith(f"--set {item}: strategy.{key}: must be <= {bound:g}, was "), str(e.value)
