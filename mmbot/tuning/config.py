"""The ``[wf]`` section of a run config, validated into frozen msgspec structs.

A wf config file is a backtest config (``[run]``, ``[venue]``, ``[strategy]``, ``[report]``)
plus a ``[wf]`` table; ``mmbot backtest run`` ignores ``[wf]``. Every problem is one
``ConfigError`` line naming where the value came from and the dotted key, e.g.
``config/wf.toml: wf.gates.min_hit_rate: ...`` or ``--trials 0: wf.trials: must be ...``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec

from mmbot.config.backtest import (
    BacktestConfig, ConfigError, _read_toml, apply_overrides, load_backtest_config, msgspec_problem,
)
from mmbot.config.rules import (
    MAX_COUNT, MAX_USDT, SEED, Bool, Num, OneOf, Origins, Rule, Text, check_table, origin_of, unknown,
)
from mmbot.timeutil import parse_duration_ns

METHODS = ("tpe", "random", "grid")
OBJECTIVES = ("mean_minus_cvar", "sharpe", "net_bps_turnover", "pnl_per_inventory")
GATE_SCOPES = ("walk_forward", "champion")
PORTFOLIO_PARAMS = ("shared", "per_symbol")
SYMBOL_SEP = ":"  # a per-symbol parameter's name: "<instrument id>:<dotted key>"


class ParamSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One searched parameter: a range (``low``..``high``, optional ``step``, ``log``) or ``choices``.

    ``type`` is ``"int"`` or ``"float"``; empty = int when low, high (and step) are TOML integers.
    """

    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: list[str | int | float | bool] | None = None
    type: str = ""


class ObjectiveSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: str = "mean_minus_cvar"
    cvar_lambda: float = 0.5  # dimensionless weight of |CVaR95| (USDT/minute)


class GatesSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Gates on the out-of-sample result; a key left out is not checked."""

    scope: str = "walk_forward"  # "walk_forward": all test windows stitched; "champion": its own test window
    min_hit_rate: float | None = None       # filled orders / orders sent (fraction)
    min_maker_share: float | None = None    # maker qty / traded qty (fraction)
    max_cvar_loss_usdt: float | None = None  # |CVaR95 of per-minute net PnL| <= this (USDT/minute)
    min_net_pnl_usdt: float | None = None   # total out-of-sample net PnL >= this (USDT)
    max_drawdown_usdt: float | None = None  # max drawdown of the out-of-sample equity <= this (USDT)


class WfSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    train: str = "30m"
    test: str = "10m"
    step: str = ""              # empty = test (adjacent, non-overlapping test windows)
    anchored: bool = False      # train windows all start at the range start
    method: str = "tpe"
    trials: int = 20            # per split
    seed: int = 42
    batch_size: int = 4         # trials asked together per split; fixes the trial sequence
    workers: int = 0            # 0 = all cores
    storage: str = ""           # e.g. sqlite:///runs/wf.db; empty = in memory
    ray_address: str = ""       # "local" starts a local Ray instance; "auto" or ray://host:port
    min_fills: int = 1
    min_test_minutes: float = 1.0
    # [portfolio] configs only (docs/tuning.md, "Portfolio"): "shared" = one value of each searched
    # key for every instrument; "per_symbol" = one value per instrument, tuned per (symbol x split)
    portfolio_params: str = "shared"
    objective: ObjectiveSection = msgspec.field(default_factory=ObjectiveSection)
    gates: GatesSection = msgspec.field(default_factory=GatesSection)
    space: dict[str, ParamSpec] = msgspec.field(default_factory=dict)

    @property
    def train_ns(self) -> int:
        return parse_duration_ns(self.train)

    @property
    def test_ns(self) -> int:
        return parse_duration_ns(self.test)

    @property
    def step_ns(self) -> int:
        return parse_duration_ns(self.step) if self.step else self.test_ns


def _duration_problem(text: str) -> str | None:
    try:
        ns = parse_duration_ns(text)
    except ValueError as e:
        return str(e)
    if not 0 < ns <= 3650 * 86_400 * 10**9:
        return f"must be > 0 and at most 3650d, got {text!r}"
    return None


def _choices_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list, got {value!r}"
    for v in value:
        if isinstance(v, float) and not math.isfinite(v):
            return f"must hold finite numbers, strings or booleans, got {v!r}"
        if not isinstance(v, (str, int, float, bool)):
            return f"must hold numbers, strings or booleans, got {v!r}"
    return None


class _Choices(Rule):
    def problem(self, value: Any) -> str | None:
        return _choices_problem(value)


_BOUND = Num(ge=-1e12, le=1e12)  # a searched value: finite and not absurd
# One rule per key of [wf] (mmbot/config/rules.py); "objective", "gates" and "space" are tables.
WF_RULES: dict[str, Rule] = {
    "train": Text(nonempty=True, check=_duration_problem),
    "test": Text(nonempty=True, check=_duration_problem),
    "step": Text(check=_duration_problem),
    "anchored": Bool(),
    "method": OneOf(METHODS),
    "trials": Num(ge=1, le=1_000_000, integer=True),
    "seed": SEED,
    "batch_size": Num(ge=1, le=10_000, integer=True),
    "workers": Num(ge=0, le=4096, integer=True),
    "storage": Text(),
    "ray_address": Text(),
    "min_fills": Num(ge=0, le=MAX_COUNT, integer=True),
    "min_test_minutes": Num(ge=0, le=525_600),  # a year of minutes
    "portfolio_params": OneOf(PORTFOLIO_PARAMS),
}
WF_TABLES = ("objective", "gates", "space")
OBJECTIVE_RULES: dict[str, Rule] = {"kind": OneOf(OBJECTIVES), "cvar_lambda": Num(ge=0, le=1e6)}
GATES_RULES: dict[str, Rule] = {
    "scope": OneOf(GATE_SCOPES),
    "min_hit_rate": Num(ge=0, le=1),
    "min_maker_share": Num(ge=0, le=1),
    "max_cvar_loss_usdt": Num(ge=0, le=MAX_USDT),
    "min_net_pnl_usdt": Num(ge=-MAX_USDT, le=MAX_USDT),
    "max_drawdown_usdt": Num(ge=0, le=MAX_USDT),
}
SPACE_RULES: dict[str, Rule] = {
    "low": _BOUND, "high": _BOUND, "step": Num(gt=0, le=1e12), "log": Bool(), "choices": _Choices(),
    "type": OneOf(("", "int", "float")),
}


def check_wf_values(wf_raw: dict, origins: Origins) -> None:
    """Unknown keys (with a did-you-mean) and every value rule of ``[wf]``."""
    for key in wf_raw:
        if key not in WF_RULES and key not in WF_TABLES:
            dotted = f"wf.{key}"
            raise ConfigError(f"{origins.of(dotted)}: {dotted}: {unknown('key', key, [*WF_RULES, *WF_TABLES])}")
    check_table({k: v for k, v in wf_raw.items() if k not in WF_TABLES}, WF_RULES, "wf", origins, ConfigError)
    for name, rules in (("objective", OBJECTIVE_RULES), ("gates", GATES_RULES)):
        table = wf_raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{origins.of(f'wf.{name}')}: wf.{name}: must be a table")
        check_table(table, rules, f"wf.{name}", origins, ConfigError)
    space = wf_raw.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"{origins.of('wf.space')}: wf.space: must be a table")
    for key, spec in space.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{origins.source}: wf.space.{key}: must be a table like {{ low = 0.25, high = 4.0 }}")
        check_table(spec, SPACE_RULES, f"wf.space.{key}", Origins(origins.source), ConfigError)


def _convert(data: dict, source: str, origins: Origins | None = None) -> WfSection:
    origins = origins or Origins(source)
    try:
        return msgspec.convert(data, WfSection)
    except msgspec.ValidationError as e:
        key, text = msgspec_problem(e)
        dotted = f"wf.{key}" if key else "wf"
        raise ConfigError(f"{origins.of(dotted)}: {dotted}: {text}") from None


def validate_wf(wf: WfSection, source: str, origins: Origins | None = None) -> None:
    """Checks across keys and of the space's shape (the values passed ``check_wf_values``)."""
    origins = origins or Origins(source)

    def bad(key: str, problem: str) -> None:
        raise ConfigError(f"{origins.of(f'wf.{key}')}: wf.{key}: {problem}")

    if not wf.space:
        bad("space", "no parameters to search (add e.g. \"strategy.min_half_spread_bps\" = { low = 0.25, high = 4.0 })")
    test_minutes = wf.test_ns / 60e9
    if wf.min_test_minutes > test_minutes:
        bad("min_test_minutes", f"{wf.min_test_minutes:g} is more than the test window holds (wf.test = {wf.test!r} "
            f"from {origins.of('wf.test')}: {test_minutes:g} minute(s)): every split would be skipped")
    from mmbot.tuning.space import check_space

    if wf.method == "grid":  # say where "grid" came from: the space is fine for tpe/random
        def bad_grid(key: str, problem: str) -> None:
            if "grid search" in problem:
                problem += f" (wf.method = grid from {origins.of('wf.method')}; or use method tpe/random)"
            bad(f"space.{key}", problem)

        check_space(wf.space, wf.method, bad_grid)
        return

    check_space(wf.space, wf.method, lambda key, problem: bad(f"space.{key}", problem))


def load_wf_config(path: Path, overrides: list[str] = (), space_path: Path | None = None
                   ) -> tuple[BacktestConfig, WfSection]:
    """The backtest config (``[wf]`` ignored) and the validated ``[wf]`` section of ``path``.

    Overrides starting with ``wf.`` go to the ``[wf]`` section, the rest to the backtest config;
    every problem names the key and where its value came from (the file or the ``--set``/option).
    ``space_path`` (``--space FILE``): a file holding only a ``[wf]`` table, for a run config
    without one (``config/portfolio.toml``); a config with its own ``[wf]`` is refused beside it.
    """
    source = str(path)
    raw = _read_toml(Path(path))
    wf_raw: Any = raw.get("wf", {})
    if space_path is not None:
        space_raw = _read_toml(Path(space_path))
        for key in sorted(space_raw):
            if key != "wf":
                raise ConfigError(f"{space_path}: {key}: a --space file holds only a [wf] table (the run config "
                                  f"is {path})")
        if "wf" in raw:
            raise ConfigError(f"{space_path}: wf: {path} has its own [wf] table: use one of them (drop --space, "
                              "or the config's [wf])")
        if "wf" not in space_raw:
            raise ConfigError(f"{space_path}: wf: missing: a --space file holds a [wf] table with [wf.space]")
        source, wf_raw = str(space_path), space_raw["wf"]
    if not isinstance(wf_raw, dict):
        raise ConfigError(f"{source}: wf: must be a table")
    origins = Origins(source)
    wf_sets, bt_sets = [], []
    for item in overrides:
        (wf_sets if item.strip().startswith("wf.") else bt_sets).append(item)
    for item in wf_sets:
        if item.strip().startswith("wf.space."):
            raise ConfigError(f"{origin_of(item)}: wf.space: the search space is set in the config file")
    apply_overrides({"wf": wf_raw}, wf_sets, origins)
    cfg = load_backtest_config(Path(path), bt_sets)
    check_wf_values(wf_raw, origins)
    wf = _convert(wf_raw, source, origins)
    validate_wf(wf, source, origins)
    if cfg.portfolio is None and wf.portfolio_params != "shared":
        raise ConfigError(f"{origins.of('wf.portfolio_params')}: wf.portfolio_params: {wf.portfolio_params!r} needs "
                          f"a [portfolio] config ({path} runs one instrument, {cfg.run.instrument})")
    return cfg, wf
