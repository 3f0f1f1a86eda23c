"""`mmbot wf` on a [portfolio] config, without running a backtest (docs/tuning.md, "Portfolio"):
where each parameter lands (shared: every instrument; per_symbol: its own instrument's override
table) and every refusal (one line naming the file or option, the key and the problem)."""

from __future__ import annotations

import pickle
import shutil
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.config.backtest import ConfigError, layer_overrides, load_backtest_config
from mmbot.paths import REPO_ROOT
from mmbot.tuning.runner import portfolio_param_overrides, prepare

PORTFOLIO = REPO_ROOT / "config" / "portfolio.toml"
SPACE = REPO_ROOT / "config" / "wf_portfolio.toml"            # per_symbol
SHARED = REPO_ROOT / "tests" / "fixtures" / "wf_portfolio_shared.toml"
WF_SMALL = REPO_ROOT / "tests" / "fixtures" / "wf_small.toml"
XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"


def _space(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.toml"
    p.write_text(text)
    return p


def _members(plan, items) -> dict:
    cfg = load_backtest_config(plan.config_path, layer_overrides(plan.base_overrides, items))
    return {iid: m.strategy for iid, m in cfg.instrument_configs().items()}


def test_shared_params_reach_every_instrument():
    plan = prepare(PORTFOLIO, [], SHARED)
    assert plan.mode == "shared" and plan.instruments[:2] == (XRP, BTC)
    params = {"strategy.risk_aversion": 0.37, "strategy.levels_per_side": 1}
    got = _members(plan, portfolio_param_overrides(plan, params))
    assert set(got) == set(plan.instruments)
    for iid, strategy in got.items():
        assert strategy["risk_aversion"] == 0.37 and strategy["levels_per_side"] == 1, iid
    # the override tables' own keys stay with their instrument
    assert got[BTC]["min_half_spread_bps"] == 0.5 and got[XRP]["min_half_spread_bps"] == 0.1


def test_per_symbol_params_reach_their_instrument_only():
    plan = prepare(PORTFOLIO, [], SPACE)
    assert plan.mode == "per_symbol" and plan.units == plan.instruments
    params = {f"{XRP}:strategy.min_half_spread_bps": 0.33, f"{XRP}:strategy.risk_aversion": 0.21,
              f"{BTC}:strategy.min_half_spread_bps": 1.7, f"{BTC}:strategy.risk_aversion": 0.02}
    got = _members(plan, portfolio_param_overrides(plan, params))
    assert (got[XRP]["min_half_spread_bps"], got[XRP]["risk_aversion"]) == (0.33, 0.21)
    assert (got[BTC]["min_half_spread_bps"], got[BTC]["risk_aversion"]) == (1.7, 0.02)
    assert got[BTC]["level_spacing_bps"] == 0.2 and got[XRP]["level_spacing_bps"] == 0.5  # the file's tables kept
    base = _members(plan, [])
    for iid in plan.instruments[2:]:  # an instrument without parameters keeps the file's values
        assert got[iid] == base[iid]


def test_a_per_symbol_trial_runs_its_instrument_alone_with_its_parameters():
    plan = prepare(PORTFOLIO, [], SPACE)
    items = portfolio_param_overrides(plan, {"strategy.min_half_spread_bps": 1.25, "strategy.risk_aversion": 0.4}, BTC)
    cfg = load_backtest_config(plan.config_path, layer_overrides(plan.base_overrides, items))
    assert cfg.portfolio.instruments == (BTC,)
    s = cfg.instrument_configs()[BTC].strategy
    assert (s["min_half_spread_bps"], s["risk_aversion"], s["level_spacing_bps"]) == (1.25, 0.4, 0.2)
    # config/portfolio.toml's allocator: nothing to allocate between in a one-instrument study (its
    # weights' bounds are for three); the combined champion's out-of-sample run has it
    assert plan.cfg.portfolio.allocator_enabled and not cfg.portfolio.allocator_enabled


def test_single_instrument_plan_is_unchanged():
    plan = prepare(WF_SMALL, [])
    assert plan.instruments == () and plan.mode == "" and plan.units == ("",)
    assert any(o.startswith("run.instrument=") for o in plan.base_overrides)


def _one_line(*args: str) -> str:
    r = CliRunner().invoke(main, ["wf", *args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    return lines[0]


def test_shared_mode_refuses_a_key_an_override_table_pins(tmp_path):
    space = _space(tmp_path, '[wf]\nportfolio_params = "shared"\n[wf.space]\n'
                             '"strategy.min_half_spread_bps" = { low = 0.1, high = 1.0 }\n')
    line = _one_line("--config", str(PORTFOLIO), "--space", str(space))
    assert line.startswith(f"error: {space}: wf.space.strategy.min_half_spread_bps: also set for {BTC}"), line
    assert '"per_symbol" tunes it per instrument' in line


def test_per_symbol_refuses_a_node_wide_key(tmp_path):
    space = _space(tmp_path, '[wf]\nportfolio_params = "per_symbol"\n[wf.space]\n'
                             '"venue.queue_position" = { choices = [true, false] }\n')
    line = _one_line("--config", str(PORTFOLIO), "--space", str(space))
    assert line == (f"error: {space}: wf.space.venue.queue_position: venue is node-wide (one per node): "
                    'wf.portfolio_params = "per_symbol" tunes strategy.* and risk.<guard>.* keys (tune it with "shared")')
    space = _space(tmp_path, '[wf]\nportfolio_params = "per_symbol"\n[wf.space]\n'
                             '"risk.engine.max_notional_per_order" = { low = 1000.0, high = 5000.0 }\n')
    assert "wf.space.risk.engine.max_notional_per_order: risk.engine is node-wide" in _one_line(
        "--config", str(PORTFOLIO), "--space", str(space))


def test_per_symbol_needs_a_portfolio_config():
    line = _one_line("--config", str(WF_SMALL), "--set", "wf.portfolio_params=per_symbol")
    assert line == ("error: --set wf.portfolio_params=per_symbol: wf.portfolio_params: 'per_symbol' needs a "
                    f"[portfolio] config ({WF_SMALL} runs one instrument, XRPUSDT-LINEAR.BYBIT)")


def test_bad_portfolio_params_value_is_one_line():
    line = _one_line("--config", str(PORTFOLIO), "--space", str(SPACE), "--set", "wf.portfolio_params=each")
    assert line.startswith("error: --set wf.portfolio_params=each: wf.portfolio_params:"), line
    assert "shared" in line and "per_symbol" in line


def test_space_file_refusals(tmp_path):
    # the config has its own [wf]: two places for one table
    line = _one_line("--config", str(WF_SMALL), "--space", str(SPACE))
    assert line.startswith(f"error: {SPACE}: wf: {WF_SMALL} has its own [wf] table"), line
    other = _space(tmp_path, '[strategy]\nk_vol = 1.0\n[wf.space]\n"strategy.k_vol" = { low = 0.0, high = 1.0 }\n')
    assert _one_line("--config", str(PORTFOLIO), "--space", str(other)) == (
        f"error: {other}: strategy: a --space file holds only a [wf] table (the run config is {PORTFOLIO})")
    assert _one_line("--config", str(PORTFOLIO), "--space", str(tmp_path / "nope.toml")) == (
        f"error: --space {tmp_path / 'nope.toml'}: no such file")
    # without --space a portfolio config has no [wf.space]
    assert "wf.space: no parameters to search" in _one_line("--config", str(PORTFOLIO))


def test_promote_refuses_a_portfolio_section_of_the_wrong_shape(tmp_path):
    """A portfolio wf run is promoted (tests/test_wf_promote_portfolio.py); a report.json whose
    ``portfolio`` is not what mmbot writes is one line, never a traceback."""
    from mmbot.tuning.promote import PromoteError, write_live_config

    src = REPO_ROOT / "tests" / "fixtures" / "hostile21_wf_run"
    run = tmp_path / "run"
    shutil.copytree(src, run)
    import json

    report = json.loads((run / "report.json").read_text())
    report["portfolio"] = {"instruments": [XRP, BTC], "params": "each"}
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(PromoteError, match="report.json: portfolio: not an object with instruments and params"):
        write_live_config(run, "testnet", tmp_path / "live.toml")


def test_unknown_key_in_a_portfolio_space_is_one_line(tmp_path):
    for mode in ("shared", "per_symbol"):
        space = _space(tmp_path, f'[wf]\nportfolio_params = "{mode}"\n[wf.space]\n'
                                 '"strategy.no_such_knob" = { low = 0.1, high = 1.0 }\n')
        line = _one_line("--config", str(PORTFOLIO), "--space", str(space))
        assert line.startswith(f"error: {space}: wf.space.strategy.no_such_knob:"), line
        assert "unknown" in line


def test_ray_gets_the_config_once_by_reference_and_no_data_per_trial(monkeypatch):
    """The Ray executor puts the config text in the object store once and sends each trial a
    reference to it (Ray's anti-pattern: a large argument passed by value is serialised per task);
    the catalog is never shipped: the task names its path. A fake ``ray`` module records the calls."""
    from mmbot.tuning import worker as W
    from mmbot.tuning.runner import make_task, prepare

    puts, calls = [], []

    def remote(**_kw):
        def wrap(fn):
            assert fn is W.evaluate_text_ref

            def call(*args):
                calls.append(args)
                fut = Future()
                fut.set_result(None)
                return SimpleNamespace(future=lambda: fut)

            return SimpleNamespace(remote=call)
        return wrap

    fake = SimpleNamespace(init=lambda **kw: None, put=lambda v: puts.append(v) or f"ref{len(puts)}",
                           remote=remote, shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    plan = prepare(PORTFOLIO, [], SPACE)
    ex = W.RayExecutor("local", 1)
    split, iid = plan.splits[0], plan.instruments[0]
    for n in range(6):
        ex.submit(make_task(plan, "train", split, n, {"strategy.min_half_spread_bps": 0.5 + n, "strategy.risk_aversion": 0.1},
                            iid))
    ex.submit(make_task(plan, "test", split, -1, {}))
    assert puts == [plan.config_text]
    for task, ref in calls:
        assert ref == "ref1" and task.config_text == ""
        assert len(pickle.dumps(task)) < 4096  # window, parameters and the catalog's path: no data
        assert any(o.startswith("run.catalog=") for o in task.overrides)
    # the worker side: the text comes back from the reference into the task it runs
    seen = []
    monkeypatch.setattr(W, "evaluate", lambda t: seen.append(t) or W.Result(t))
    res = W.evaluate_text_ref(calls[0][0], plan.config_text)
    assert seen[0].config_text == plan.config_text and res.task.config_text == ""


def test_per_symbol_refuses_a_set_of_a_key_it_tunes():
    line = _one_line("--config", str(PORTFOLIO), "--space", str(SPACE), "--set", "strategy.risk_aversion=0.2")
    assert line == (f"error: {SPACE}: wf.space.strategy.risk_aversion: per_symbol writes it into every instrument's "
                    "portfolio.overrides table, which wins over --set strategy.risk_aversion=0.2: drop that --set")
