"""Walk-forward runner: one Optuna study per split, trials in batches, champions out-of-sample.

Determinism and resume (see docs/tuning.md):

- Trial n of split s is sampled by a sampler seeded with ``trial_seed(seed, s, n)`` and asked
  in batches of ``batch_size`` trials: every trial of batch k is asked (in number order) when
  all trials of the earlier batches are finished and before any of batch k runs. A trial's
  parameters therefore depend only on (seed, split, number, earlier batches), not on the number
  of workers, on completion order, or on where a run was interrupted.
- Only this (driver) process talks to the Optuna storage. A trial that was asked but not
  finished when a run died stays RUNNING with its parameters; the next run of the same command
  first finishes the current batch's asks, then evaluates those trials under their own numbers.
  A finished (COMPLETE/FAIL) trial is never run again.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmbot.backtest.run import resolve_window
from mmbot.builders import strategy_config_dict
from mmbot.canonical_json import dumps_canonical
from mmbot.config.backtest import BacktestConfig, ConfigError, layer_overrides, load_backtest_config
from mmbot.config.portfolio import NODE_WIDE_RISK
from mmbot.timeutil import parse_time_ns
from mmbot.tuning import objective as O
from mmbot.tuning import space as S
from mmbot.tuning.config import WfSection, load_wf_config
from mmbot.tuning.splits import Split, data_minutes, floor_minute, make_splits, skip_reason
from mmbot.tuning.worker import InlineExecutor, PoolExecutor, RayExecutor, Result, Task

KILL_ENV = "MMBOT_WF_KILL_AFTER_TRIALS"            # test hook: hard exit (like SIGKILL) after N trials
INTERRUPT_ENV = "MMBOT_WF_INTERRUPT_AFTER_TRIALS"  # test hook: behave as if Ctrl-C after N trials


@dataclass
class Plan:
    """Everything a walk-forward needs, validated before anything runs."""

    config_path: Path
    config_text: str
    cfg: BacktestConfig
    wf: WfSection
    base_overrides: tuple[str, ...]
    catalog_dir: Path
    instrument: str
    start_ns: int
    end_ns: int
    splits: list[Split]
    skipped: dict[int, str]
    wf_hash: str
    # [portfolio] configs (docs/tuning.md, "Portfolio"): the instruments in the config's order and
    # wf.portfolio_params ("shared" / "per_symbol"); () and "" for a single-instrument config
    instruments: tuple[str, ...] = ()
    mode: str = ""

    @property
    def units(self) -> tuple[str, ...]:
        """The studies of one split: one per instrument in per_symbol mode, else one ("")."""
        return self.instruments if self.mode == "per_symbol" else ("",)


@dataclass
class SplitOutcome:
    split: Split
    trials: list[dict] = field(default_factory=list)
    champion: dict | None = None
    oos: dict | None = None
    skip_reason: str | None = None
    # per_symbol mode: instrument id -> {"trials": [...], "champion": {...} or None} of its study
    units: dict[str, dict] = field(default_factory=dict)


@dataclass
class WfOutcome:
    plan: Plan
    splits: list[SplitOutcome]
    trials_run: int       # trials evaluated by this process
    trials_reused: int    # trials found finished in the storage
    executor: str         # "" when nothing ran (every result came from the storage, or every split was skipped)


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------

def trial_seed(seed: int, split: int, number: int, unit: str = "") -> int:
    """The sampler seed of trial ``number`` of split ``split`` (32-bit, from SHA-256); ``unit``:
    the instrument of a per_symbol study (each symbol's study draws its own sequence)."""
    text = f"{seed}:{split}:{unit}:{number}" if unit else f"{seed}:{split}:{number}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


# ---------------------------------------------------------------------------------------------
# portfolio parameters (docs/tuning.md, "Portfolio")
# ---------------------------------------------------------------------------------------------

SYMBOL_SEP = ":"  # a per-symbol parameter's name: "<instrument id>:<dotted key>"
# what a per-symbol key may set: the sections of a portfolio override table (mmbot/config/portfolio.py)
PER_SYMBOL_SECTIONS = ("strategy", "risk")


def symbol_param(iid: str, key: str) -> str:
    return f"{iid}{SYMBOL_SEP}{key}"


def split_symbol_params(params: dict) -> dict[str, dict]:
    """``{"<iid>:<key>": v}`` -> ``{iid: {key: v}}`` (the inverse of :func:`symbol_param`)."""
    out: dict[str, dict] = {}
    for name in sorted(params):
        iid, _, key = name.partition(SYMBOL_SEP)
        out.setdefault(iid, {})[key] = params[name]
    return out


def toml_inline(value: Any) -> str:
    """A value (tables and lists of scalars, nested) as one line of TOML for a ``--set`` item."""
    import json

    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_inline(value[k])}" for k in sorted(value)) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return S.toml_literal(value)


def override_tables(written: dict[str, dict], params_by_iid: dict[str, dict]) -> dict[str, dict]:
    """The ``[portfolio.overrides]`` tables with each instrument's parameters written into ITS table
    (``strategy.k`` -> ``{"strategy": {"k": v}}``, ``risk.g.k`` -> ``{"risk": {"g": {"k": v}}}``),
    on top of the tables the config file wrote (a tuned key replaces the file's value there)."""
    import copy

    tables = copy.deepcopy({iid: written[iid] for iid in sorted(written)})
    for iid in sorted(params_by_iid):
        table = tables.setdefault(iid, {})
        for key, value in sorted(params_by_iid[iid].items()):
            parts = key.split(".")
            node = table
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return tables


def portfolio_param_overrides(plan: "Plan", params: dict, unit: str = "") -> list[str]:
    """``--set`` items that apply a trial's or a champion's parameters to a portfolio config.

    shared: the keys as they are (every instrument's config takes them; a key an override table
    pins is refused when the config loads: mmbot/config/portfolio.py). per_symbol, a study's
    trial (``unit`` = its instrument): a portfolio of that instrument alone with the parameters in
    its override table; a champion (``unit`` ""): every instrument, each ``<iid>:<key>`` in its
    own table."""
    if plan.mode != "per_symbol":
        return S.overrides(params)
    written = plan.cfg.portfolio.overrides
    if unit:
        tables = override_tables({unit: written[unit]} if unit in written else {}, {unit: params})
        items = [f"portfolio.instruments=[{S.toml_literal(unit)}]", f"portfolio.overrides={toml_inline(tables)}"]
        beta = (plan.cfg.risk.guards.get("portfolio") or {}) if plan.cfg.risk is not None else {}
        if beta.get("beta_reference"):  # a one-instrument portfolio: its own reference
            items.append('risk.portfolio.beta_reference=""')
        if plan.cfg.portfolio.allocator_enabled:  # nothing to allocate between in a one-instrument
            items.append("portfolio.allocator.enabled=false")  # study; the combination's test run has it
        return items
    return [f"portfolio.overrides={toml_inline(override_tables(written, split_symbol_params(params)))}"]


def _values_to_check(spec) -> list:
    """Every choice (one of them may clash with the rest of the config, e.g. venue.fill_model =
    "nautilus" with run.warmup = "snapshot": hostile review 32 F6), else the range's low end."""
    if spec.choices is not None:
        return list(spec.choices)
    return [int(spec.low) if S.is_int(spec) else float(spec.low)]


def check_keys(cfg: BacktestConfig, wf: WfSection, path: Path, base: list[str], space_path: Path | None = None) -> None:
    """Every searched key must exist in the backtest config: apply its low end / each choice and validate
    (a portfolio: every instrument's config; per_symbol: in each instrument's override table).
    Problems name the file the space came from (``space_path``, ``--space``, else the config)."""
    where = space_path or path
    mode = "" if cfg.portfolio is None else wf.portfolio_params
    for key, value in ((k, v) for k in sorted(wf.space) for v in _values_to_check(wf.space[k])):
        section = key.split(".")[0]
        if mode == "per_symbol" and (section not in PER_SYMBOL_SECTIONS
                                      or (section == "risk" and key.split(".")[1] in NODE_WIDE_RISK)):
            raise ConfigError(f"{where}: wf.space.{key}: {key.rsplit('.', 1)[0]} is node-wide (one per node): "
                              "wf.portfolio_params = \"per_symbol\" tunes strategy.* and risk.<guard>.* keys "
                              "(tune it with \"shared\")")
        if mode == "per_symbol":
            sets = [f"portfolio.overrides={toml_inline(override_tables(cfg.portfolio.overrides, {iid: {key: value}}))}"
                    for iid in cfg.portfolio.instruments]
        else:
            sets = [f"{key}={S.toml_literal(value)}"]
        for item in sets:
            try:
                c = load_backtest_config(path, layer_overrides(base, [item]))
                for iid, member in c.instrument_configs().items():
                    strategy_config_dict(member, iid)
            except ConfigError as e:
                msg = str(e)
                problem = msg.split(f"{key}: ", 1)[1] if f"{key}: " in msg else msg.split(": ", 1)[-1]
                if mode == "per_symbol" and "also set for" in problem:  # the user's --set of a tuned key
                    problem = (f"per_symbol writes it into every instrument's portfolio.overrides table, which wins "
                               f"over {msg.split(': ', 1)[0]}: drop that --set")
                if mode == "shared" and "also set for" in problem:
                    problem += " (wf.portfolio_params = \"shared\" gives every instrument one value; " \
                               "\"per_symbol\" tunes it per instrument)"
                raise ConfigError(f"{where}: wf.space.{key}: {problem}") from None


def _identity(cfg: BacktestConfig, wf: WfSection, catalog_dir: Path) -> str:
    """Hash of what fixes a split's trials (not the range, workers, storage or gates)."""
    conf = cfg.to_dict()
    for k in ("start", "end", "out_dir", "progress", "catalog"):
        conf["run"].pop(k, None)
    import msgspec

    wfd = msgspec.to_builtins(wf)
    ident = {"config": conf, "catalog": str(catalog_dir), "space": wfd["space"], "method": wf.method,
             "seed": wf.seed, "batch_size": wf.batch_size, "objective": wfd["objective"], "min_fills": wf.min_fills}
    if cfg.portfolio is not None:  # (left out for one instrument: its studies keep their names)
        ident["portfolio_params"] = wf.portfolio_params
    if wf.method == "tpe":  # the sampler's settings fix the trials too (a study sampled without it is not resumed)
        ident["sampler"] = "tpe(constant_liar)"
    return hashlib.sha256(dumps_canonical(ident)).hexdigest()[:12]


def prepare(config_path: Path, overrides: list[str] = (), space_path: Path | None = None) -> Plan:
    """Load and check the config, find the data range and make the splits; raises ConfigError."""
    config_path = Path(config_path)
    if not config_path.exists():
        raise ConfigError(f"{config_path}: no such config file")
    if space_path is not None and not Path(space_path).exists():
        raise ConfigError(f"--space {space_path}: no such file")
    cfg, wf = load_wf_config(config_path, list(overrides), space_path)
    catalog_dir = cfg.path(cfg.run.catalog)
    base = [o for o in overrides if not o.strip().startswith("wf.")]
    check_keys(cfg, wf, config_path, base, space_path)
    if cfg.portfolio is None:
        instruments, mode = (), ""
        instrument = cfg.run.instrument
        full = resolve_window(catalog_dir, instrument, "", "")  # validates catalog and instrument
        full_start, full_end = full.start_ns, full.end_ns
    else:
        import msgspec

        from mmbot.backtest.portfolio import resolve_portfolio_windows

        instruments, mode = tuple(cfg.portfolio.instruments), wf.portfolio_params
        instrument = "+".join(instruments)
        if cfg.portfolio.allocator_enabled and cfg.portfolio.allocator["interval_s"] * 1e9 >= wf.test_ns:
            # the first allocation comes interval_s after a window's start: a test window no longer
            # than that judges the champion without a budget, and the promoted config runs with one
            raise ConfigError(f"{cfg.origin('portfolio.allocator.interval_s')}: portfolio.allocator.interval_s: "
                              f"{cfg.portfolio.allocator['interval_s']:g} s is not shorter than the test window "
                              f"(wf.test = {wf.test!r}): no test run would allocate once")
        # validates the catalog, each instrument and their overlap (one node replays one clock)
        whole = msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, start="", end=""))
        w0 = next(iter(resolve_portfolio_windows(whole, catalog_dir).values()))
        full_start, full_end = w0.start_ns, w0.end_ns
    try:
        start_ns = parse_time_ns(cfg.run.start) if cfg.run.start else floor_minute(full_start)
        end_ns = parse_time_ns(cfg.run.end) if cfg.run.end else full_end
    except ValueError as e:
        raise ConfigError(f"run.start/end: {e}") from None
    splits = make_splits(start_ns, end_ns, wf.train_ns, wf.test_ns, wf.step_ns, wf.anchored)
    if not splits:
        raise ConfigError(f"{config_path}: wf: no split fits: train {wf.train} + test {wf.test} is longer than "
                          f"the range {cfg.run.start or 'catalog start'} .. {cfg.run.end or 'catalog end'}")
    if instruments:  # a minute counts when every instrument has data in it (the node's window)
        minutes = data_minutes(catalog_dir, instruments[0])
        for iid in instruments[1:]:
            minutes = np.intersect1d(minutes, data_minutes(catalog_dir, iid))
    else:
        minutes = data_minutes(catalog_dir, instrument)
    skipped = {s.index: r for s in splits if (r := skip_reason(s, minutes, wf.min_test_minutes)) is not None}
    fixed = [f"run.catalog={S.toml_literal(str(catalog_dir))}", "report.html=false"]
    if not instruments:  # (beside [portfolio], run.instrument is refused)
        fixed.insert(1, f"run.instrument={S.toml_literal(instrument)}")
    kill = (cfg.risk.guards.get("kill_switch") or {}).get("file") if cfg.risk is not None and cfg.risk.enabled else None
    if kill and not Path(kill).is_absolute():
        # trials run from a scratch copy of the config: keep the kill switch's signal file where
        # `mmbot kill --config <this file> --env backtest` writes it (placeholders kept)
        fixed.append(f"risk.kill_switch.file={S.toml_literal(str(cfg.path(kill)))}")
    base_overrides = tuple(layer_overrides(base, fixed))
    return Plan(config_path=config_path, config_text=config_path.read_text(), cfg=cfg, wf=wf,
                base_overrides=base_overrides, catalog_dir=catalog_dir, instrument=instrument,
                start_ns=start_ns, end_ns=end_ns, splits=splits, skipped=skipped,
                wf_hash=_identity(cfg, wf, catalog_dir), instruments=instruments, mode=mode)


def risk_guards(cfg: BacktestConfig) -> list[str]:
    """The risk guards every trial and test window runs (the same actors as live; docs/risk.md)."""
    return sorted(cfg.risk.guards) if cfg.risk is not None and cfg.risk.enabled else []


def window_overrides(start_ns: int, end_ns: int) -> list[str]:
    return [f'run.start="{start_ns}"', f'run.end="{end_ns}"']


def make_task(plan: Plan, kind: str, split: Split, number: int, params: dict, unit: str = "") -> Task:
    lo, hi = ((split.train_start_ns, split.train_end_ns) if kind == "train" else (split.test_start_ns, split.test_end_ns))
    sets = portfolio_param_overrides(plan, params, unit) if plan.instruments else S.overrides(params)
    return Task(kind=kind, split=split.index, trial=number, config_name=plan.config_path.name,
                config_text=plan.config_text,
                overrides=tuple(layer_overrides(plan.base_overrides, window_overrides(lo, hi), sets)),
                keep_equity=(kind == "test"), unit=unit)


# ---------------------------------------------------------------------------------------------
# studies
# ---------------------------------------------------------------------------------------------

class _FixedSampler:
    """Grid search: returns one given grid point (Optuna's GridSampler repeats points that are
    asked together in a batch; this one is told its point)."""

    def __new__(cls, point: dict):
        import optuna

        class Fixed(optuna.samplers.BaseSampler):
            def infer_relative_search_space(self, study, trial):
                return {}

            def sample_relative(self, study, trial, search_space):
                return {}

            def sample_independent(self, study, trial, param_name, param_distribution):
                return point[param_name]

        return Fixed()


def _sampler(wf: WfSection, split: int, number: int, unit: str = ""):
    import optuna

    seed = trial_seed(wf.seed, split, number, unit)
    if wf.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if wf.method == "grid":
        grid = S.grid_space(wf.space)
        order = np.random.default_rng(trial_seed(wf.seed, split, -1, unit)).permutation(S.grid_size(wf.space))
        idx = int(order[number])
        point = {}
        for key in reversed(sorted(grid)):
            idx, j = divmod(idx, len(grid[key]))
            point[key] = grid[key][j]
        return _FixedSampler(point)
    # constant_liar: the trials of a batch are asked together (before any is told), so each
    # later ask treats the batch's earlier trials as running with a bad value and looks
    # elsewhere instead of proposing the same region again (Optuna's remedy for parallel TPE).
    # Deterministic: a batch is asked in number order on the same history whatever the workers.
    # Explicit: Optuna 5 defaults to it, Optuna 4 (allowed by pyproject.toml) did not.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def n_trials(wf: WfSection) -> int:
    """Trials per split (grid search: at most the grid size)."""
    return min(wf.trials, S.grid_size(wf.space)) if wf.method == "grid" else wf.trials


def _open_study(plan: Plan, split: Split, storage, unit: str = ""):
    import optuna

    name = f"wf-{plan.wf_hash}-split{split.index:03d}-{split.train_start_ns}-{split.test_end_ns}"
    if unit:  # per_symbol: one study per (symbol x split)
        name += f"-{unit}"
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)


def _set_trial_attr(study, number: int, key: str, value: Any) -> None:
    """A user attribute on a RUNNING trial by number (Optuna's storage API)."""
    storage = study._storage
    storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study._study_id, number), key, value)


def trial_record(t) -> dict:
    """A finished trial as plain data (number, state, params, in-sample value and summary)."""
    value = t.value if t.value is not None and math.isfinite(t.value) else None
    return {"number": t.number, "state": t.state.name, "params": dict(sorted(t.params.items())),
            "in_sample_objective": value, "in_sample": t.user_attrs.get("summary"),
            "note": t.user_attrs.get("note")}


def pick_champion(trials: list[dict]) -> dict | None:
    """Highest finite in-sample objective; ties go to the lowest trial number."""
    ok = [t for t in trials if t["state"] == "COMPLETE" and t["in_sample_objective"] is not None]
    return max(ok, key=lambda t: (t["in_sample_objective"], -t["number"])) if ok else None


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def make_executor(workers: int, ray_address: str):
    if ray_address:
        return RayExecutor(ray_address, workers)
    return InlineExecutor() if workers <= 1 else PoolExecutor(workers)


def run_walk_forward(
    plan: Plan,
    workers: int,
    storage: str = "",
    ray_address: str = "",
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> WfOutcome:
    """Run every split's study (per_symbol: every (symbol x split) study) and out-of-sample test;
    returns the outcome (nothing written)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    wf = plan.wf
    T, B = n_trials(wf), wf.batch_size
    store: Any = storage or optuna.storages.InMemoryStorage()
    outcomes = {s.index: SplitOutcome(s, skip_reason=plan.skipped.get(s.index)) for s in plan.splits}
    active = [s for s in plan.splits if s.index not in plan.skipped]
    studies = {(s.index, u): _open_study(plan, s, store, u) for s in active for u in plan.units}
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    interrupt_after = int(os.environ.get(INTERRUPT_ENV, "0") or 0)

    reused = sum(1 for st in studies.values() for t in st.get_trials(deepcopy=False) if t.state.is_finished())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(active) * (T * len(plan.units) + 1), initial=reused, desc="wf trials + tests",
                   unit="run", file=sys.stderr)

    executor = None
    futures: dict[Future, tuple[int, str, str, int]] = {}
    done_splits: set[int] = set()
    done_units: dict[tuple[int, str], dict] = {}  # (split, unit) -> {"trials", "champion"}
    testing: set[int] = set()
    ran = 0

    def submit(task: Task) -> None:
        nonlocal executor
        if executor is None:
            executor = make_executor(workers, ray_address)
            log(f"executor: {executor.name} ({workers} worker(s))")
        futures[executor.submit(task)] = (task.split, task.unit, task.kind, task.trial)

    def advance_unit(split: Split, unit: str) -> bool:
        """Queue the next batch of a study; True when its trials are all finished."""
        study = studies[(split.index, unit)]
        trials = study.get_trials(deepcopy=False)
        n = len(trials)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if n < T and (n % B or not running):
            for number in range(n, min((n // B + 1) * B, T)):
                study.sampler = _sampler(wf, split.index, number, unit)
                trial = study.ask()
                assert trial.number == number, (trial.number, number)
                S.suggest(trial, wf.space)
            running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        if running:
            for t in running:
                submit(make_task(plan, "train", split, t.number, t.params, unit))
            return False
        recs = [trial_record(t) for t in study.get_trials(deepcopy=False)]
        done_units[(split.index, unit)] = {"trials": recs, "champion": pick_champion(recs)}
        return True

    def advance(split: Split, busy: set) -> None:
        """Queue the next work of a split: its studies' batches, then its out-of-sample test."""
        pending = False
        for unit in plan.units:
            if (split.index, unit) in done_units:
                continue
            if (split.index, unit) in busy or not advance_unit(split, unit):
                pending = True
        if pending or split.index in testing:
            return
        out = outcomes[split.index]
        if plan.mode == "per_symbol":
            out.units = {u: done_units[(split.index, u)] for u in plan.units}
            out.trials = [dict(t, instrument=u) for u in plan.units for t in out.units[u]["trials"]]
            missing = [u for u in plan.units if out.units[u]["champion"] is None]
            out.champion = None if missing else combined_champion(out.units)
        else:
            out.trials = done_units[(split.index, "")]["trials"]
            out.champion = done_units[(split.index, "")]["champion"]
        if out.champion is None:
            who = f" for {', '.join(missing)}" if plan.mode == "per_symbol" else ""
            out.skip_reason = f"no trial scored in-sample{who} (each had < min_fills {wf.min_fills} fills or failed)"
            done_splits.add(split.index)
            return
        oos_study = studies[(split.index, plan.units[0])]  # the test result is kept on the split's first study
        cached = oos_study.user_attrs.get("oos")
        if cached and cached.get("champion_trial") == champion_key(out.champion):
            _finish_oos(out, cached, wf)
            done_splits.add(split.index)
            if bar:
                bar.update(1)
            return
        testing.add(split.index)
        number = out.champion["number"] if out.champion["number"] is not None else -1
        submit(make_task(plan, "test", split, number, out.champion["params"]))

    def on_result(res: Result) -> None:
        nonlocal ran
        split = next(s for s in active if s.index == res.task.split)
        if res.task.kind == "train":
            study = studies[(split.index, res.task.unit)]
            if res.error is not None:
                _set_trial_attr(study, res.task.trial, "note", f"rejected: {res.error}")
                study.tell(res.task.trial, state=optuna.trial.TrialState.FAIL)
            else:
                summ = O.public(O.summary_from_metrics(res.metrics))
                value = O.objective_value(summ, wf.objective.kind, wf.objective.cvar_lambda)
                note = None
                if summ["n_fills"] < wf.min_fills:
                    value, note = -math.inf, f"{summ['n_fills']} fills < min_fills {wf.min_fills}"
                elif not math.isfinite(value):
                    value, note = -math.inf, "objective undefined"
                if plan.mode == "shared":  # each instrument's share of a shared trial (per_symbol: one alone)
                    summ["by_instrument"] = O.by_instrument(res.metrics, wf.objective.kind, wf.objective.cvar_lambda)
                _set_trial_attr(study, res.task.trial, "summary", summ)
                if note:
                    _set_trial_attr(study, res.task.trial, "note", note)
                study.tell(res.task.trial, value)
            ran += 1
            if kill_after and ran >= kill_after:
                sys.stderr.write(f"{KILL_ENV}: exiting hard after {ran} trials\n")
                sys.stderr.flush()
                os._exit(137)
            if interrupt_after and ran >= interrupt_after:
                raise KeyboardInterrupt
        else:
            out = outcomes[split.index]
            cached = _oos_record(res)
            cached["champion_trial"] = champion_key(out.champion)
            studies[(split.index, plan.units[0])].set_user_attr("oos", cached)
            _finish_oos(out, cached, wf)
            done_splits.add(split.index)
        if bar:
            bar.update(1)

    interrupted = False
    try:
        while True:
            busy = {(v[0], v[1]) for v in futures.values()}
            for s in active:
                if s.index not in done_splits:
                    advance(s, busy)
            if not futures:
                break
            finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: futures[f]):
                futures.pop(f)
                on_result(f.result())
    except BaseException:  # Ctrl-C or an error: stop the workers now, keep the storage as it is
        interrupted = True
        raise
    finally:
        if bar:
            bar.close()
        if executor is not None:
            executor.shutdown(interrupted=interrupted)
    return WfOutcome(plan=plan, splits=[outcomes[s.index] for s in plan.splits], trials_run=ran,
                     trials_reused=reused, executor=executor.name if executor else "")


def combined_champion(units: dict[str, dict]) -> dict:
    """per_symbol: the split's champion = each symbol's champion, its parameters named
    ``<iid>:<key>``. There is no single trial and no in-sample objective of the combination (each
    symbol was scored alone): ``number`` and ``in_sample_objective`` are None, ``trials`` names
    each symbol's trial."""
    params = {symbol_param(u, k): v for u in sorted(units) for k, v in units[u]["champion"]["params"].items()}
    return {"number": None, "state": "COMPLETE", "params": dict(sorted(params.items())),
            "in_sample_objective": None, "in_sample": None, "note": None,
            "trials": {u: units[u]["champion"]["number"] for u in sorted(units)}}


def champion_key(champion: dict) -> Any:
    """What identifies a split's champion for the stored test result (a trial number, or per_symbol
    each symbol's trial number)."""
    return champion["number"] if champion.get("trials") is None else champion["trials"]


def _oos_record(res: Result) -> dict:
    """What is kept of a test-window run (also stored on the study for resumes)."""
    return {"champion_trial": res.task.trial, "error": res.error, "metrics": res.metrics,
            "data_range": res.data_range, "minute_pnl": res.minute_pnl,
            "equity_ts_ns": res.equity_ts_ns, "equity_net": res.equity_net, "sizing": res.sizing,
            **({"instruments": res.instruments} if res.instruments is not None else {})}


def _finish_oos(out: SplitOutcome, rec: dict, wf: WfSection) -> None:
    rec = dict(rec)
    out.oos = rec
    if rec["error"] is not None:
        out.skip_reason = f"test run rejected: {rec['error']}"
        return
    summ = O.summary_from_metrics(rec["metrics"], np.asarray(rec["minute_pnl"], dtype=np.float64))
    rec["summary"] = summ
    rec["objective"] = O.objective_value(summ, wf.objective.kind, wf.objective.cvar_lambda)
    if rec.get("instruments") is not None:  # a portfolio: each instrument's own out-of-sample figures
        rec["by_instrument"] = {}
        for iid, series in sorted(rec["instruments"].items()):
            s = O.summary_from_metrics(rec["metrics"]["instruments"][iid]["metrics"],
                                       np.asarray(series["minute_pnl"], dtype=np.float64))
            rec["by_instrument"][iid] = {"objective": O.objective_value(s, wf.objective.kind, wf.objective.cvar_lambda),
                                         "summary": s}
    if summ["n_fills"] < wf.min_fills:
        out.skip_reason = f"test window: {summ['n_fills']} fills < min_fills {wf.min_fills}"


__all__ = ["Plan", "WfOutcome", "prepare", "run_walk_forward", "trial_seed", "make_splits"]
