"""The search space: dotted backtest-config keys (``strategy.min_half_spread_bps``,
``venue.queue_position``...) mapped to ranges or choices, sampled with Optuna.

Values keep the unit of the config key they set (see docs/config.md, docs/strategy.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from mmbot.tuning.config import ParamSpec

Value = str | int | float | bool


def is_int(spec: ParamSpec) -> bool:
    """Whether a range is sampled as integers: ``type = "int"``, or unset and low/high/step ints."""
    if spec.type:
        return spec.type == "int"
    nums = [v for v in (spec.low, spec.high, spec.step) if v is not None]
    return all(isinstance(v, int) and not isinstance(v, bool) for v in nums)


def check_space(space: Mapping[str, ParamSpec], method: str, bad: Callable[[str, str], None]) -> None:
    """Shape checks of every entry; ``bad(key, problem)`` raises. The keys themselves are checked
    against the backtest config by :func:`mmbot.tuning.runner.check_keys`."""
    for key, spec in space.items():
        if key.count(".") not in (1, 2) or not all(key.split(".")):
            bad(key, "must be a dotted backtest-config key section.name (or section.table.name), "
                     "e.g. strategy.min_half_spread_bps")
        if key.split(".")[0] in ("run", "report"):
            bad(key, "run and report keys cannot be searched")
        if spec.type not in ("", "int", "float"):
            bad(f"{key}.type", f"{spec.type!r} is not one of int, float")
        if spec.choices is not None:
            if not spec.choices:
                bad(f"{key}.choices", "must not be empty")
            if any(v is not None for v in (spec.low, spec.high, spec.step)) or spec.log:
                bad(key, "give either choices or low/high (with optional step, log), not both")
            continue
        if spec.low is None or spec.high is None:
            bad(key, "needs low and high, or choices")
        if isinstance(spec.low, bool) or isinstance(spec.high, bool):
            bad(key, "low/high must be numbers")
        if not spec.low <= spec.high:
            bad(key, f"low {spec.low} must be <= high {spec.high}")
        if spec.log and spec.low <= 0:
            bad(f"{key}.low", f"must be > 0 with log = true, was {spec.low}")
        if spec.step is not None and spec.step <= 0:
            bad(f"{key}.step", f"must be > 0, was {spec.step}")
        if spec.log and spec.step is not None and not is_int(spec):
            bad(key, "a float range takes log or step, not both")
        if is_int(spec) and any(isinstance(v, float) and not float(v).is_integer()
                                for v in (spec.low, spec.high, spec.step) if v is not None):
            bad(key, "an int range needs integer low/high/step")
        if method == "grid" and not is_int(spec) and spec.step is None:
            bad(key, "grid search needs a step (or choices) for a float range")


def suggest(trial: Any, space: Mapping[str, ParamSpec]) -> dict[str, Value]:
    """Parameters for an Optuna trial, in sorted key order (the order fixes the sampler's draws)."""
    params: dict[str, Value] = {}
    for key in sorted(space):
        spec = space[key]
        if spec.choices is not None:
            params[key] = trial.suggest_categorical(key, list(spec.choices))
        elif is_int(spec):
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
        else:
            params[key] = trial.suggest_float(key, float(spec.low), float(spec.high),
                                              step=None if spec.step is None else float(spec.step), log=spec.log)
    return params


def grid_values(spec: ParamSpec) -> list[Value]:
    """Every value of one parameter for grid search (ranges need a step; ints step 1 by default)."""
    if spec.choices is not None:
        return list(spec.choices)
    if is_int(spec):
        return list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    n = int(math.floor((spec.high - spec.low) / spec.step + 1e-9))
    return [round(spec.low + i * spec.step, 12) for i in range(n + 1)]


def grid_space(space: Mapping[str, ParamSpec]) -> dict[str, list[Value]]:
    """The search space as Optuna's ``GridSampler`` wants it."""
    return {key: grid_values(space[key]) for key in sorted(space)}


def grid_size(space: Mapping[str, ParamSpec]) -> int:
    """Number of grid points (product of the per-parameter value counts)."""
    return math.prod(len(v) for v in grid_space(space).values())


def toml_literal(value: Value) -> str:
    """A value as TOML text for ``--set key=value`` (floats by shortest round-trip repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def overrides(params: Mapping[str, Value]) -> list[str]:
    """``--set`` items that apply ``params`` to a backtest config, sorted by key."""
    return [f"{key}={toml_literal(params[key])}" for key in sorted(params)]
