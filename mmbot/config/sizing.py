"""Sizes and limits in quote notional: each base-unit size/limit key has a ``*_notional_usdt`` twin
(docs/config.md, "Sizes in notional").

A config gives one key of each pair. The builder (mmbot/builders.py ``resolve_sizing``, the only
place that knows the instrument and the mode) turns a notional key into its base-unit twin at a
stated reference price, rounded DOWN to the instrument's lot step, and checks the fit; the
strategy and the guards keep receiving base units. This module holds the table of twins and the
load-time checks (value rules, one key per pair).

One key per pair: both keys in one layer (both in the file, or both on the command line) are
refused with one line. A command-line item of one key replaces the file's other key of its pair
(the project's layering rule, ``layer_overrides``: a later layer replaces an earlier one), so
``--set strategy.level_size=300`` still works on a config file that sizes in notional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmbot.config.rules import MAX_USDT, Num, Origins


@dataclass(frozen=True)
class Twin:
    """One base-unit key and its notional twin. ``section``: dotted table (``strategy`` or
    ``risk.position``); ``kind``: "size" (an order size) or "limit" (a position limit); ``zero_off``:
    0 means "limit off" (risk limits), kept as 0 by the resolution."""

    section: str
    base: str
    notional: str
    kind: str
    zero_off: bool

    @property
    def base_key(self) -> str:
        return f"{self.section}.{self.base}"

    @property
    def notional_key(self) -> str:
        return f"{self.section}.{self.notional}"

    @property
    def rule(self) -> Num:
        return Num(ge=0, le=MAX_USDT) if self.zero_off else Num(gt=0, le=MAX_USDT)


TWINS: tuple[Twin, ...] = (
    Twin("strategy", "level_size", "level_notional_usdt", "size", False),
    Twin("strategy", "max_position", "max_position_notional_usdt", "limit", False),
    Twin("risk.position", "soft_position", "soft_position_notional_usdt", "limit", True),
    Twin("risk.position", "hard_position", "hard_position_notional_usdt", "limit", True),
)
STRATEGY_NOTIONAL_KEYS = frozenset(t.notional for t in TWINS if t.section == "strategy")
POSITION_NOTIONAL_KEYS = frozenset(t.notional for t in TWINS if t.section == "risk.position")


def _table(raw: dict, section: str) -> dict | None:
    node: Any = raw
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def settle_twins(raw: dict, origins: Origins, error: type[Exception]) -> None:
    """Load time, on the raw TOML dict after the ``--set`` items: each notional value passes its
    rule (finite, >= 0 or > 0, <= 1e12 USDT; NaN and inf refused), and each pair holds at most one
    key: a command-line key replaces the file's twin, both from one layer is ``error`` (one line
    naming both keys and where each came from)."""
    for t in TWINS:
        table = _table(raw, t.section)
        if table is None:
            continue
        if t.notional in table:
            problem = t.rule.problem(table[t.notional])
            if problem is not None:
                raise error(f"{origins.of(t.notional_key)}: {t.notional_key}: {problem} (USDT)")
        if t.base in table and t.notional in table:
            o_base, o_notional = origins.of(t.base_key), origins.of(t.notional_key)
            base_cli, notional_cli = o_base != origins.source, o_notional != origins.source
            if base_cli and not notional_cli:
                del table[t.notional]  # the command line sizes in base units: the file's twin is replaced
            elif notional_cli and not base_cli:
                del table[t.base]
            else:
                where = o_notional if notional_cli else origins.source
                raise error(f"{where}: {t.notional_key}: {t.base_key} ({o_base}) and {t.notional_key} ({o_notional}) "
                            f"are one size in two units: give one of them (docs/config.md, \"Sizes in notional\")")


def notional_items(strategy: dict, position: dict | None) -> list[tuple[Twin, float]]:
    """The notional keys a (validated) config gives, in ``TWINS`` order."""
    out = []
    for t in TWINS:
        table = strategy if t.section == "strategy" else (position or {})
        if t.notional in table:
            out.append((t, float(table[t.notional])))
    return out


def config_notional_items(cfg) -> list[tuple[Twin, float]]:
    """``notional_items`` of a ``BacktestConfig``."""
    risk = cfg.risk
    position = risk.guards.get("position") if risk is not None and risk.enabled else None
    return notional_items(cfg.strategy, position)
