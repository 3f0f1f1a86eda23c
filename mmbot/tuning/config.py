"""The ``[wf]`` section of a run config, validated into frozen msgspec structs.

A wf config file is a backtest config (``[run]``, ``[venue]``, ``[strategy]``, ``[report]``)
plus a ``[wf]`` table; ``mmbot backtest run`` ignores ``[wf]``. Every problem is one
``ConfigError`` line naming the dotted key, e.g. ``config/wf.toml: wf.gates.min_hit_rate: ...``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from mmbot.config.backtest import BacktestConfig, ConfigError, load_backtest_config
from mmbot.timeutil import parse_duration_ns

METHODS = ("tpe", "random", "grid")
OBJECTIVES = ("mean_minus_cvar", "sharpe", "net_bps_turnover", "pnl_per_inventory")
GATE_SCOPES = ("walk_forward", "champion")


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


def _convert(data: dict, source: str) -> WfSection:
    try:
        return msgspec.convert(data, WfSection)
    except msgspec.ValidationError as e:
        msg = str(e)
        if " - at `$." in msg:
            text, _, where = msg.partition(" - at `$.")
            where = where.rstrip("`").replace("['", ".").replace("']", "")
            if text.startswith("Object contains unknown field"):
                text = f"unknown key {text.split('`')[1]}"
            raise ConfigError(f"{source}: wf.{where}: {text}") from None
        if "unknown field" in msg:
            raise ConfigError(f"{source}: wf.{msg.split('`')[1]}: unknown key") from None
        raise ConfigError(f"{source}: wf: {msg}") from None


def _apply_wf_override(raw: dict, item: str) -> None:
    """``wf.trials=5`` or ``wf.gates.min_net_pnl_usdt=0`` applied to the raw ``[wf]`` dict."""
    key, _, value_text = item.partition("=")
    keys = [k.strip() for k in key.strip().split(".")][1:]
    if not keys or len(keys) > 2 or not all(keys):
        raise ConfigError(f"--set {item!r}: wf keys are wf.name or wf.table.name (the space is set in the file)")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: wf.{k} is not a table")
    node[keys[-1]] = value


def validate_wf(wf: WfSection, source: str) -> None:
    """Range and name checks the types cannot express."""
    def bad(key: str, problem: str) -> None:
        raise ConfigError(f"{source}: wf.{key}: {problem}")

    for key in ("train", "test", "step"):
        text = getattr(wf, key)
        if key == "step" and not text:
            continue
        try:
            if parse_duration_ns(text) <= 0:
                bad(key, "must be > 0")
        except ValueError as e:
            bad(key, str(e))
    if wf.method not in METHODS:
        bad("method", f"{wf.method!r} is not one of {', '.join(METHODS)}")
    if wf.objective.kind not in OBJECTIVES:
        bad("objective.kind", f"{wf.objective.kind!r} is not one of {', '.join(OBJECTIVES)}")
    if wf.objective.cvar_lambda < 0:
        bad("objective.cvar_lambda", f"must be >= 0, was {wf.objective.cvar_lambda}")
    if wf.gates.scope not in GATE_SCOPES:
        bad("gates.scope", f"{wf.gates.scope!r} is not one of {', '.join(GATE_SCOPES)}")
    for key, value, lo in (("trials", wf.trials, 1), ("batch_size", wf.batch_size, 1), ("workers", wf.workers, 0),
                           ("min_fills", wf.min_fills, 0), ("min_test_minutes", wf.min_test_minutes, 0)):
        if value < lo:
            bad(key, f"must be >= {lo}, was {value}")
    if not wf.space:
        bad("space", "no parameters to search (add e.g. \"strategy.min_half_spread_bps\" = { low = 0.25, high = 4.0 })")
    from mmbot.tuning.space import check_space

    check_space(wf.space, wf.method, lambda key, problem: bad(f"space.{key}", problem))


def load_wf_config(path: Path, overrides: list[str] = ()) -> tuple[BacktestConfig, WfSection]:
    """The backtest config (``[wf]`` ignored) and the validated ``[wf]`` section of ``path``.

    Overrides starting with ``wf.`` go to the ``[wf]`` section, the rest to the backtest config.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    wf_raw: Any = raw.get("wf", {})
    if not isinstance(wf_raw, dict):
        raise ConfigError(f"{source}: wf: must be a table")
    bt_sets = []
    for item in overrides:
        if item.strip().startswith("wf."):
            _apply_wf_override(wf_raw, item)
        else:
            bt_sets.append(item)
    cfg = load_backtest_config(Path(path), bt_sets)
    wf = _convert(wf_raw, source)
    validate_wf(wf, source)
    return cfg, wf
