"""The ``[risk]`` section of a run config: validated guard settings (docs/risk.md).

``[risk]`` holds ``enabled`` (default true when the section exists) and one sub-table per
guard (``position``, ``loss``, ``drawdown``, ``edge``, ``circuit_breaker``, ``stale_data``,
``kill_switch``) plus ``audit`` and ``engine`` (Nautilus' own RiskEngine). A guard runs when its
sub-table is present and its ``enabled`` key is not false. Each guard's keys are validated by
its own frozen config class (msgspec, ``forbid_unknown_fields``, range checks in
``__post_init__``); every problem is one ``ConfigError`` line naming ``risk.<guard>.<key>``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from mmbot.config.backtest import ConfigError

INTERNAL_KEYS = {"instrument_id", "topic", "component_id", "log_events", "log_commands"}
_RATE = re.compile(r"^\d+/\d{2}:\d{2}:\d{2}$")


class RiskAuditSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    file: str = ""  # live/shadow: the log path; backtests always write <run dir>/audit.jsonl
    fsync: bool = False


class RiskEngineSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_order_submit_rate: str = "100/00:00:01"
    max_order_modify_rate: str = "100/00:00:01"
    max_notional_per_order: float = 0.0  # quote currency; 0 = no limit


class RiskSettings(msgspec.Struct, frozen=True):
    """Validated ``[risk]``: ``guards`` maps each enabled guard to its parameters."""

    enabled: bool = False
    guards: dict[str, dict[str, Any]] = {}
    audit: RiskAuditSection = RiskAuditSection()
    engine: RiskEngineSection = RiskEngineSection()

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


def _guard_classes() -> dict[str, type]:
    import importlib

    from strategies.risk import GUARDS

    out = {}
    for name, (_actor, cfg_path) in GUARDS.items():
        module, _, cls = cfg_path.partition(":")
        out[name] = getattr(importlib.import_module(module), cls)
    return out


def _problem(e: Exception) -> tuple[str, str]:
    """(key or "", text) of a msgspec / __post_init__ error."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if " - at `$." in msg:
        text, _, where = msg.partition(" - at `$.")
        return where.rstrip("`"), text
    if "unknown field" in msg:
        return msg.split("`")[1], "unknown key"
    key, sep, text = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+", key):
        return key, text
    return "", msg


def parse_risk(raw: Any, source: str) -> RiskSettings:
    """Validate a ``[risk]`` table; raises ``ConfigError`` naming ``risk.<sub>.<key>``."""
    if raw is None or raw == {}:
        return RiskSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: risk: must be a table")
    classes = _guard_classes()
    known = set(classes) | {"audit", "engine", "enabled"}
    for key in sorted(raw):
        if key not in known:
            raise ConfigError(f"{source}: risk.{key}: unknown key (known: {', '.join(sorted(known))})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: risk.enabled: must be true or false, got {enabled!r}")
    guards: dict[str, dict] = {}
    for name, cls in classes.items():
        if name not in raw:
            continue
        table = raw[name]
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: risk.{name}: must be a table")
        params = dict(table)
        on = params.pop("enabled", True)
        if not isinstance(on, bool):
            raise ConfigError(f"{source}: risk.{name}.enabled: must be true or false, got {on!r}")
        for key in sorted(params):
            if key not in cls.__struct_fields__ or key in INTERNAL_KEYS:
                raise ConfigError(f"{source}: risk.{name}.{key}: unknown key")
        try:
            cls.parse(msgspec.json.encode(params).decode())
        except Exception as e:  # msgspec.ValidationError or the config's ValueError
            key, text = _problem(e)
            raise ConfigError(f"{source}: risk.{name}{'.' + key if key else ''}: {text}") from None
        if on:
            guards[name] = dict(sorted(params.items()))
    sub = {}
    for name, cls in (("audit", RiskAuditSection), ("engine", RiskEngineSection)):
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: risk.{name}: must be a table")
        try:
            sub[name] = msgspec.convert(table, cls)
        except msgspec.ValidationError as e:
            key, text = _problem(e)
            raise ConfigError(f"{source}: risk.{name}{'.' + key if key else ''}: {text}") from None
    eng = sub["engine"]
    for key in ("max_order_submit_rate", "max_order_modify_rate"):
        if not _RATE.match(getattr(eng, key)):
            raise ConfigError(f"{source}: risk.engine.{key}: must look like '100/00:00:01' (count/HH:MM:SS), "
                              f"got {getattr(eng, key)!r}")
    if eng.max_notional_per_order < 0:
        raise ConfigError(f"{source}: risk.engine.max_notional_per_order: must be >= 0, got {eng.max_notional_per_order}")
    return RiskSettings(enabled=enabled, guards=guards, audit=sub["audit"], engine=eng)
