"""Validation rules of config values, and where each value came from.

Every config value is checked against one ``Rule`` (a table ``key -> rule`` per section, see
``mmbot/config/backtest.py`` and ``mmbot/tuning/config.py``). A problem is one line::

    <origin>: <section.key>: <problem>

where ``<origin>`` is the config file, or the command-line item that set the value
(``--set venue.leverage=nan``, ``--start 03/06/2024``). NaN and infinity are rejected by every
numeric rule unless it says ``allow_inf`` (NaN never passes).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class Override(str):
    """A ``key=value`` override that knows which command-line item it came from.

    A plain ``str`` everywhere (filters, pickling to worker processes); ``origin`` is what an
    error blames, e.g. ``--start 03/06/2024`` for ``run.start="03/06/2024"``. Plain strings are
    blamed as ``--set <item>``.
    """

    origin: str

    def __new__(cls, item: str, origin: str | None = None) -> Override:
        self = super().__new__(cls, item)
        self.origin = origin or f"--set {item}"
        return self

    def __reduce__(self):  # keep the origin across process pools
        return (Override, (str(self), self.origin))


def origin_of(item: str) -> str:
    return getattr(item, "origin", None) or f"--set {item}"


class Origins:
    """Where each value came from: ``source`` (the file, or ``<defaults>``) unless a command-line
    override set the key or one of its parent tables."""

    def __init__(self, source: str, sets: dict[str, str] | None = None) -> None:
        self.source = source
        self.sets: dict[str, str] = dict(sets or {})

    def record(self, dotted_key: str, origin: str) -> None:
        self.sets[dotted_key] = origin

    def of(self, dotted_key: str) -> str:
        parts = dotted_key.split(".")
        for n in range(len(parts), 0, -1):  # the key itself, or a table set as a whole
            hit = self.sets.get(".".join(parts[:n]))
            if hit is not None:
                return hit
        for key, hit in self.sets.items():  # a table that exists only because an override set a key in it
            if key.startswith(dotted_key + "."):
                return hit
        return self.source


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest known name (difflib), or ``""``."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def unknown(kind: str, name: str, known: Iterable[str], list_known: bool = False) -> str:
    """The problem text of an unknown key or section."""
    known = sorted(known)
    text = f"unknown {kind}"
    if list_known:
        text += f" (known: {', '.join(known)})"
    return text + did_you_mean(name, known)


def _fmt(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


class Rule:
    """One key's check: ``problem(value)`` is None when the value is valid."""

    def problem(self, value: Any) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Rule):
    """A number in a range. ``gt``/``ge`` and ``lt``/``le`` bound it (None = open); ``integer``
    requires an int (TOML ``1.0`` is not an int); ``allow_inf`` lets +/-inf through (a key that
    documents infinity as "no limit"). NaN and bools never pass."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    integer: bool = False
    allow_inf: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else ("a number" if self.allow_inf else "a finite number")
        lo = f">= {_fmt(self.ge)}" if self.ge is not None else (f"> {_fmt(self.gt)}" if self.gt is not None else "")
        hi = f"<= {_fmt(self.le)}" if self.le is not None else (f"< {_fmt(self.lt)}" if self.lt is not None else "")
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"{what} {bounds}".strip()

    def problem(self, value: Any) -> str | None:
        bad = f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return bad
        if self.integer and not isinstance(value, int):
            return bad
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not self.allow_inf)):
            return bad
        if isinstance(value, float) and math.isinf(value):
            return None  # allow_inf: infinity is "no limit" on either side the key allows
        if self.ge is not None and not value >= self.ge:
            return bad
        if self.gt is not None and not value > self.gt:
            return bad
        if self.le is not None and not value <= self.le:
            return bad
        if self.lt is not None and not value < self.lt:
            return bad
        return None


@dataclass(frozen=True)
class OneOf(Rule):
    options: tuple

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str) and value in self.options:
            return None
        return f"{value!r} is not one of {', '.join(map(str, self.options))}{did_you_mean(str(value), self.options)}"


@dataclass(frozen=True)
class Bool(Rule):
    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


@dataclass(frozen=True)
class Text(Rule):
    """A string; ``nonempty`` requires at least one character; ``check`` (optional) returns a
    problem text for a string it rejects."""

    nonempty: bool = False
    check: Callable[[str], str | None] | None = None

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if self.nonempty and not value.strip():
            return "must not be empty"
        if "\n" in value or "\x00" in value:
            return "must be one line"
        return self.check(value) if self.check is not None and value else None


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items each pass ``item``; ``min_len``/``max_len`` bound its length."""

    item: Rule
    min_len: int = 0
    max_len: int = 1000

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, got {value!r}"
        if not self.min_len <= len(value) <= self.max_len:
            return f"must have {self.min_len} to {self.max_len} items, got {len(value)}"
        for i, v in enumerate(value):
            p = self.item.problem(v)
            if p is not None:
                return f"item {i}: {p}"
        return None


@dataclass(frozen=True)
class Pair(Rule):
    """A two-item list ``[a, b]`` checked by ``first`` and ``second`` (histogram bins)."""

    first: Rule
    second: Rule
    names: tuple[str, str] = ("first", "second")

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list) or len(value) != 2:
            return f"must be [{self.names[0]}, {self.names[1]}], got {value!r}"
        for name, rule, v in zip(self.names, (self.first, self.second), value, strict=True):
            p = rule.problem(v)
            if p is not None:
                return f"{name} {p}"
        return None


class Maybe(Rule):
    """``None`` (key left out) or a value passing ``rule``."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def problem(self, value: Any) -> str | None:
        return None if value is None else self.rule.problem(value)


def check_table(table: dict, rules: dict[str, Rule], section: str, origins: Origins,
                error: Callable[[str], Exception]) -> None:
    """Unknown keys (with a did-you-mean) and every rule of one table; raises ``error(line)``."""
    for key in table:
        if key not in rules:
            dotted = f"{section}.{key}"
            raise error(f"{origins.of(dotted)}: {dotted}: {unknown('key', key, rules)}")
    for key, rule in rules.items():
        if key in table:
            p = rule.problem(table[key])
            if p is not None:
                dotted = f"{section}.{key}"
                raise error(f"{origins.of(dotted)}: {dotted}: {p}")


# Bounds shared by several sections (values beyond them are typos, and some overflow Nautilus'
# integer nanoseconds or fixed-point money).
MAX_MS = 86_400_000            # one day in ms: latencies, intervals, horizons
MAX_S = 7 * 86_400             # one week in s: windows, cool-downs
MAX_USDT = 1e12                # money amounts (Nautilus' Money holds up to ~1.7e13)
MAX_COUNT = 1_000_000_000      # counts of events/fills/rejects
MAX_BPS = 10_000.0             # 100 %
SEED = Num(ge=0, le=2**32 - 1, integer=True)  # numpy/optuna seeds are 32-bit
