"""The ``[risk]`` section of a run config: validated guard settings (docs/risk.md).

``[risk]`` holds ``enabled`` (default true when the section exists) and one sub-table per
guard (``position``, ``loss``, ``drawdown``, ``edge``, ``circuit_breaker``, ``stale_data``,
``kill_switch``, ``portfolio``) plus ``audit`` and ``engine`` (Nautilus' own RiskEngine). A guard runs when its
sub-table is present and its ``enabled`` key is not false. Each guard's keys are validated by
its own frozen config class (msgspec, ``forbid_unknown_fields``, range checks in
``__post_init__``); every problem is one ``ConfigError`` line naming ``risk.<guard>.<key>``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from mmbot.config.backtest import ConfigError
from mmbot.config.rules import MAX_USDT, Bool, Num, Origins, Rule, Text, check_table, did_you_mean, unknown
from mmbot.config.sizing import POSITION_NOTIONAL_KEYS

INTERNAL_KEYS = {"instrument_id", "topic", "component_id", "log_events", "log_commands", "instruments"}
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


KILL_FILE_FIELDS = ("env", "account")  # placeholders of risk.kill_switch.file, resolved by the builder
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def kill_file_problem(template: str) -> str | None:
    """Why a ``risk.kill_switch.file`` template is invalid (unknown or malformed placeholder)."""
    for name in _PLACEHOLDER.findall(template):
        if name not in KILL_FILE_FIELDS:
            return (f"unknown placeholder {{{name}}} (known: {', '.join('{' + f + '}' for f in KILL_FILE_FIELDS)})"
                    + did_you_mean(name, KILL_FILE_FIELDS))
    if _PLACEHOLDER.sub("", template).count("{") or _PLACEHOLDER.sub("", template).count("}"):
        return f"unbalanced braces in {template!r}"
    return None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip(".") or "default"


def resolve_kill_file(template: str, env: str, account: str) -> str:
    """The kill-switch signal file of one environment and account: ``{env}`` and ``{account}``
    replaced by file-name-safe forms of the mode the builder runs (``backtest``, ``shadow``,
    ``testnet``, ``demo``, ``mainnet``) and the ``[live] account`` label."""
    values = {"env": _safe_name(env), "account": _safe_name(account)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _rate_problem(text: str) -> str | None:
    """``count/HH:MM:SS`` with 1 <= count <= 1e6 and an interval of 1 s .. 24 h."""
    if not _RATE.match(text):
        return f"must look like '100/00:00:01' (count/HH:MM:SS), got {text!r}"
    count, _, hms = text.partition("/")
    h, m, sec = (int(x) for x in hms.split(":"))
    if not 1 <= int(count) <= 1_000_000:
        return f"count must be 1..1000000, got {text!r}"
    if m >= 60 or sec >= 60 or not 1 <= h * 3600 + m * 60 + sec <= 86_400:
        return f"interval must be a valid HH:MM:SS of 1 s .. 24 h, got {text!r}"
    return None


AUDIT_RULES: dict[str, Rule] = {"enabled": Bool(), "file": Text(), "fsync": Bool()}
ENGINE_RULES: dict[str, Rule] = {
    "max_order_submit_rate": Text(nonempty=True, check=_rate_problem),
    "max_order_modify_rate": Text(nonempty=True, check=_rate_problem),
    "max_notional_per_order": Num(ge=0, le=MAX_USDT),  # quote currency; 0 = no limit
}


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


def parse_risk(raw: Any, source: str, origins: Origins | None = None) -> RiskSettings:
    """Validate a ``[risk]`` table; raises ``ConfigError`` naming ``risk.<sub>.<key>`` and where
    the value came from (the file or a ``--set`` item)."""
    origins = origins or Origins(source)

    def fail(dotted: str, text: str) -> ConfigError:
        return ConfigError(f"{origins.of(dotted)}: {dotted}: {text}")

    if raw is None or raw == {}:
        return RiskSettings()
    if not isinstance(raw, dict):
        raise fail("risk", "must be a table")
    classes = _guard_classes()
    known = set(classes) | {"audit", "engine", "enabled"}
    for key in sorted(raw):
        if key not in known:
            raise fail(f"risk.{key}", unknown("key", key, known, list_known=True))
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("risk.enabled", f"must be true or false, got {enabled!r}")
    guards: dict[str, dict] = {}
    for name, cls in classes.items():
        if name not in raw:
            continue
        table = raw[name]
        if not isinstance(table, dict):
            raise fail(f"risk.{name}", "must be a table")
        params = dict(table)
        on = params.pop("enabled", True)
        if not isinstance(on, bool):
            raise fail(f"risk.{name}.enabled", f"must be true or false, got {on!r}")
        fields = [f for f in cls.__struct_fields__ if f not in INTERNAL_KEYS]
        twins = {}
        if name == "position":  # notional twins of the base-unit limits (mmbot/config/sizing.py)
            fields += sorted(POSITION_NOTIONAL_KEYS)
            twins = {k: params.pop(k) for k in sorted(POSITION_NOTIONAL_KEYS) if k in params}
            for key, value in twins.items():
                problem = Num(ge=0, le=MAX_USDT).problem(value)
                if problem is not None:
                    raise fail(f"risk.position.{key}", f"{problem} (USDT)")
            soft, hard = twins.get("soft_position_notional_usdt", 0), twins.get("hard_position_notional_usdt", 0)
            if soft > 0 and hard > 0 and soft > hard:
                raise fail("risk.position.soft_position_notional_usdt",
                           f"must be <= hard_position_notional_usdt ({hard!r}), was {soft!r}")
        for key in sorted(params):
            if key not in fields:
                raise fail(f"risk.{name}.{key}", unknown("key", key, [*fields, "enabled"]))
        try:
            # convert, not a JSON round trip: JSON would turn NaN and inf into null
            msgspec.convert(params, cls)
        except Exception as e:  # msgspec.ValidationError, or the config's ValueError from __post_init__
            key, text = _problem(e)
            raise fail(f"risk.{name}{'.' + key if key else ''}", text) from None
        if name == "kill_switch" and params.get("file"):
            problem = kill_file_problem(params["file"])
            if problem:
                raise fail("risk.kill_switch.file", problem)
        if on:
            guards[name] = dict(sorted({**params, **twins}.items()))
    sub = {}
    for name, cls, rules in (("audit", RiskAuditSection, AUDIT_RULES), ("engine", RiskEngineSection, ENGINE_RULES)):
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise fail(f"risk.{name}", "must be a table")
        check_table(table, rules, f"risk.{name}", origins, ConfigError)
        try:
            sub[name] = msgspec.convert(table, cls)
        except msgspec.ValidationError as e:
            key, text = _problem(e)
            raise fail(f"risk.{name}{'.' + key if key else ''}", text) from None
    return RiskSettings(enabled=enabled, guards=guards, audit=sub["audit"], engine=sub["engine"])
