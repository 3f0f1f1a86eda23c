"""Walk-forward building blocks (no backtests): splits, space, objectives, gates, config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import REPO_ROOT
from mmbot.timeutil import parse_time_ns
from mmbot.tuning import objective as O
from mmbot.tuning import space as S
from mmbot.tuning.config import GatesSection, ParamSpec
from mmbot.tuning.gates import evaluate_gates, failed
from mmbot.tuning.runner import _sampler, trial_seed
from mmbot.tuning.splits import Split, make_splits, minutes_with_data, skip_reason

MIN = 60_000_000_000
T0 = parse_time_ns("2024-06-03T00:00:00Z")
WF_SMALL = REPO_ROOT / "tests" / "fixtures" / "wf_small.toml"


def test_rolling_splits_have_exact_boundaries():
    splits = make_splits(T0, T0 + 15 * MIN, 6 * MIN, 3 * MIN, 3 * MIN)
    assert [(s.train_start_ns, s.train_end_ns, s.test_start_ns, s.test_end_ns) for s in splits] == [
        (T0, T0 + 6 * MIN, T0 + 6 * MIN, T0 + 9 * MIN),
        (T0 + 3 * MIN, T0 + 9 * MIN, T0 + 9 * MIN, T0 + 12 * MIN),
        (T0 + 6 * MIN, T0 + 12 * MIN, T0 + 12 * MIN, T0 + 15 * MIN),
    ]


def test_anchored_splits_grow_the_train_window():
    splits = make_splits(T0, T0 + 15 * MIN, 6 * MIN, 3 * MIN, 3 * MIN, anchored=True)
    assert [s.train_start_ns for s in splits] == [T0] * 3
    assert [s.train_end_ns for s in splits] == [T0 + 6 * MIN, T0 + 9 * MIN, T0 + 12 * MIN]
    assert make_splits(T0, T0 + 8 * MIN, 6 * MIN, 3 * MIN, 3 * MIN) == []  # a test window may not run past the end


def test_windows_with_too_little_data_are_skipped_with_a_reason():
    minutes = np.array([T0 + i * MIN for i in range(10)], dtype=np.int64)  # data in 00:00-00:10 only
    assert minutes_with_data(minutes, T0 + 8 * MIN, T0 + 12 * MIN) == 2
    ok = Split(0, T0, T0 + 6 * MIN, T0 + 6 * MIN, T0 + 9 * MIN)
    thin = Split(1, T0 + 3 * MIN, T0 + 9 * MIN, T0 + 9 * MIN, T0 + 12 * MIN)
    empty = Split(2, T0 + 20 * MIN, T0 + 26 * MIN, T0 + 26 * MIN, T0 + 29 * MIN)
    assert skip_reason(ok, minutes, 3) is None
    assert skip_reason(thin, minutes, 3) == "test window has 1 minute(s) with data < min_test_minutes 3"
    assert skip_reason(empty, minutes, 3) == "train window has no order-book data"


def _summary(minute_pnl, **kw):
    x = np.asarray(minute_pnl, dtype=np.float64)
    base = {"minutes": len(x), "minute_pnl_mean": float(x.mean()), "cvar95_minute_pnl": float(x.min()),
            "sharpe_per_minute": float(x.mean() / x.std(ddof=1)), "net_pnl": float(x.sum()), "traded_notional": 1000.0,
            "traded_qty": 1.0, "twa_abs_notional": 500.0, "max_drawdown_usdt": 0.0, "n_fills": 10, "n_orders": 40,
            "n_filled_orders": 10, "hit_rate": 0.25, "maker_share": 1.0, "_minute_pnl": x}
    return base | kw


def test_objectives_and_their_units():
    s = _summary([1.0, -2.0, 4.0])
    assert O.objective_value(s, "mean_minus_cvar", 0.5) == pytest.approx(1.0 - 0.5 * 2.0)  # USDT/minute
    assert O.objective_value(s, "sharpe") == pytest.approx(1.0 / np.std([1, -2, 4], ddof=1))
    assert O.objective_value(s, "net_bps_turnover") == pytest.approx(3.0 / 1000.0 * 1e4)
    assert O.objective_value(s, "pnl_per_inventory") == pytest.approx(3.0 / 500.0)
    assert math.isnan(O.objective_value(s | {"traded_notional": 0.0}, "net_bps_turnover"))


def test_stitching_test_windows():
    a = _summary([1.0, -1.0], maker_share=1.0, traded_qty=1.0, n_orders=10, n_filled_orders=5)
    b = _summary([-3.0, 2.0], maker_share=0.5, traded_qty=3.0, n_orders=30, n_filled_orders=5)
    st = O.stitch([a, b], [np.array([0.0, 1.0, 0.0]), np.array([0.0, -3.0, -1.0])])
    assert st["minutes"] == 4 and st["net_pnl"] == pytest.approx(-1.0)
    assert st["minute_pnl_mean"] == pytest.approx(-0.25) and st["cvar95_minute_pnl"] == -3.0
    assert st["max_drawdown_usdt"] == pytest.approx(4.0)  # peak 1 after window a, trough -3 in window b
    assert st["maker_share"] == pytest.approx((1.0 * 1 + 0.5 * 3) / 4)
    assert st["hit_rate"] == pytest.approx(10 / 40)


def test_gates_name_what_failed():
    gates = GatesSection(min_hit_rate=0.3, min_maker_share=0.9, max_cvar_loss_usdt=2.0, min_net_pnl_usdt=0.0,
                         max_drawdown_usdt=5.0)
    s = _summary([1.0, -2.5, 4.0], max_drawdown_usdt=3.0)
    verdicts = evaluate_gates(gates, O.public(s))
    assert failed(verdicts) == ["min_hit_rate", "max_cvar_loss_usdt"]
    assert evaluate_gates(GatesSection(), s) == []
    nan = evaluate_gates(GatesSection(min_maker_share=0.1), s | {"maker_share": math.nan})
    assert failed(nan) == ["min_maker_share"], "an undefined metric fails its gate"


def test_space_sampling_grid_and_overrides():
    import optuna

    space = {"strategy.min_half_spread_bps": ParamSpec(low=0.5, high=1.5, step=0.25),
             "strategy.levels_per_side": ParamSpec(low=1, high=3), "strategy.use_amend": ParamSpec(choices=[True, False])}
    assert S.grid_size(space) == 5 * 3 * 2
    assert S.grid_values(space["strategy.min_half_spread_bps"]) == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert S.overrides({"strategy.use_amend": False, "strategy.min_half_spread_bps": 0.1 + 0.2, "venue.x": "a"}) == [
        "strategy.min_half_spread_bps=0.30000000000000004", "strategy.use_amend=false", 'venue.x="a"']

    def draws(seed: int) -> list[dict]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize")
        out = []
        for n in range(6):
            study.sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, 0, n))
            t = study.ask()
            out.append(S.suggest(t, space))
            study.tell(t, float(n))
        return out

    assert draws(1) == draws(1) and draws(1) != draws(2)


def test_grid_method_visits_distinct_points():
    import optuna

    from mmbot.tuning.config import WfSection

    wf = WfSection(method="grid", space={"strategy.levels_per_side": ParamSpec(low=1, high=3),
                                         "strategy.use_amend": ParamSpec(choices=[True, False])})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    seen = []
    for n in range(6):
        study.sampler = _sampler(wf, 0, n)
        seen.append(tuple(sorted(S.suggest(study.ask(), wf.space).items())))
    assert len(set(seen)) == 6


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "wf.method=bogus"], "wf.method: 'bogus' is not one of tpe, random, grid"),
        (["--set", "wf.trials=0"], "--set wf.trials=0: wf.trials: must be an integer >= 1"),
        (["--set", "wf.gates.bogus=1"], "--set wf.gates.bogus=1: wf.gates.bogus: unknown key"),
        (["--set", "wf.gates.min_hit_rate=\"x\""], "wf.gates.min_hit_rate"),
        (["--set", "wf.objective.kind=alpha"], "wf.objective.kind: 'alpha' is not one of"),
        (["--train", "6 minutes"], "wf.train: not a duration"),
        (["--set", "strategy.bogus=1"], "strategy.bogus: unknown key"),
        (["--start", "2024-12-01T07:30:00Z", "--end", "2024-12-01T07:35:00Z"], "no split fits"),
        # was: every split skipped, then "gate failed: out_of_sample_result" (docs/tuning.md's example)
        (["--min-test-minutes", "5"], "--min-test-minutes 5.0: wf.min_test_minutes: 5 is more than the test window "
                                      "holds (wf.test = '3m' from "),
        (["--method", "grid"], "wf.space.strategy.min_half_spread_bps: grid search needs a step (or choices) for a "
                               "float range (wf.method = grid from --method grid; or use method tpe/random)"),
    ],
)
def test_bad_wf_config_exits_2_with_one_line(tmp_path, args, needle):
    r = CliRunner().invoke(main, ["wf", "--config", str(WF_SMALL), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_space_key_is_named(tmp_path):
    cfg = tmp_path / "wf.toml"
    cfg.write_text(WF_SMALL.read_text().replace('catalog = "../../catalog"', f'catalog = "{REPO_ROOT / "catalog"}"')
                   + '"strategy.no_such_knob" = { low = 1, high = 2 }\n')
    r = CliRunner().invoke(main, ["wf", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "wf.space.strategy.no_such_knob: unknown key" in r.stderr
    cfg.write_text(WF_SMALL.read_text().replace('{ low = 1, high = 2 }', '{ low = 2, high = 1 }'))
    r = CliRunner().invoke(main, ["wf", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "wf.space.strategy.levels_per_side: low 2 must be <= high 1" in r.stderr


def test_tpe_asks_a_batch_with_constant_liar():
    """docs/tuning.md: the trials of a batch are asked together, and TPE's constant liar makes each
    later ask see the batch's earlier trials as running. Set explicitly: Optuna 5 defaults to it,
    Optuna 4 (which pyproject.toml allows) did not."""
    from mmbot.tuning.config import WfSection
    from mmbot.tuning.runner import _sampler

    assert _sampler(WfSection(method="tpe"), 0, 3)._constant_liar is True


def test_grid_with_the_shipped_config_fails_with_the_documented_line(tmp_path):
    """`mmbot wf --method grid` with config/wf.toml (a log-scale float range): exit 2, one line,
    the line docs/tuning.md quotes."""
    r = CliRunner().invoke(main, ["wf", "--method", "grid", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.strip()]
    doc = (REPO_ROOT / "docs" / "tuning.md").read_text()
    quoted = line.removeprefix("error: ").replace(str(REPO_ROOT) + "/", "")
    import re

    (documented,) = re.findall(r"`(config/wf\.toml: wf\.space\.[^`]*)`", doc)
    assert quoted == documented
    assert not (tmp_path / "o").exists()


def test_importance_is_deterministic_and_says_why_not():
    from mmbot.tuning.analysis import split_importance

    space = {"strategy.min_half_spread_bps": ParamSpec(low=0.05, high=2.0, log=True),
             "strategy.levels_per_side": ParamSpec(low=1, high=3), "strategy.use_amend": ParamSpec(choices=[True, False])}
    rng = np.random.default_rng(3)
    trials = [{"number": n, "state": "COMPLETE",
               "params": {"strategy.min_half_spread_bps": float(h), "strategy.levels_per_side": int(rng.integers(1, 4)),
                          "strategy.use_amend": bool(rng.integers(0, 2))},
               "in_sample_objective": -abs(float(np.log(h)))}  # depends on the half spread only
              for n, h in enumerate(np.exp(rng.uniform(np.log(0.05), np.log(2.0), 30)))]
    imp, why = split_importance(trials, space)
    assert why is None and sum(imp.values()) == pytest.approx(1.0)
    assert max(imp, key=imp.get) == "strategy.min_half_spread_bps"
    assert split_importance(list(reversed(trials)), space)[0] == imp, "same trials, same importances"
    assert split_importance(trials[:1], space) == (None, "1 scored trial(s) (needs 2)")
    flat = [t | {"in_sample_objective": 0.0} for t in trials[:3]]
    assert split_importance(flat, space) == (None, "every scored trial has the same objective")
    failed = [t | {"state": "FAIL"} for t in trials]
    assert split_importance(failed, space)[0] is None
