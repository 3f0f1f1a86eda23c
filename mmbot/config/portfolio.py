"""The ``[portfolio]`` section: several instruments in one node (docs/portfolio.md).

```toml
[portfolio]
instruments = ["XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"]

[portfolio.overrides."BTCUSDT-LINEAR.BYBIT"]
strategy.level_notional_usdt = 2000.0
risk.position.hard_position_notional_usdt = 20000.0
```

Each instrument runs the config's ``[strategy]`` and ``[risk]`` guards, with its override table
(if any) on top: a key of the table replaces the same key of the base (a notional key replaces
its base-unit twin and the other way round: mmbot/config/sizing.py). The result is one member
``BacktestConfig`` per instrument, validated by the same loader as a single-instrument config, so
every rule holds per instrument; a problem names the override table it came from.

Node-wide (one per node, never per instrument): ``[run]``, ``[venue]``, ``[report]``,
``risk.enabled``, ``risk.audit``, ``risk.engine`` and ``risk.kill_switch``. The instruments are
named either by ``[portfolio] instruments`` or by ``run.instrument`` / ``--instrument``, never
both (one line: which instrument would run is otherwise a guess).
"""

from __future__ import annotations

from typing import Any

import msgspec

from mmbot.config.rules import Origins, did_you_mean, unknown

PORTFOLIO_KEYS = ("instruments", "overrides", "allocator")
OVERRIDE_SECTIONS = ("strategy", "risk")
# [risk] parts that belong to the node, not to one instrument: one audit chain, one RiskEngine,
# one kill switch file per environment and account.
NODE_WIDE_RISK = ("enabled", "audit", "engine", "kill_switch", "portfolio")
MAX_INSTRUMENTS = 64


class PortfolioSettings(msgspec.Struct, frozen=True):
    """``instruments``: in the config's order (strategy ``i`` gets order id tag ``i:03d``);
    ``overrides``: instrument id -> its override table as written; ``members``: instrument id ->
    its validated ``BacktestConfig`` (``run.instrument`` = that id)."""

    instruments: tuple[str, ...]
    overrides: dict[str, dict]
    members: dict[str, Any]
    # ``[portfolio.allocator]`` as validated (every key, defaults filled in); None without the table
    allocator: dict | None = None

    def to_dict(self) -> dict:
        out = {"instruments": list(self.instruments),
               "overrides": {k: _sorted(self.overrides[k]) for k in sorted(self.overrides)}}
        if self.allocator is not None:  # absent: the hash of a config without it is unchanged
            out["allocator"] = _sorted(self.allocator)
        return out

    @property
    def allocator_enabled(self) -> bool:
        return self.allocator is not None and bool(self.allocator.get("enabled"))


ALLOCATOR_INTERNAL = ("instruments", "topic", "component_id", "log_events", "log_commands")


def check_allocator(raw_allocator: Any, instruments: tuple[str, ...], origins: Origins,
                    error: type[Exception]) -> dict:
    """``[portfolio.allocator]`` (docs/portfolio.md, "Scoreboard and allocator"): every key checked
    by ``AllocatorConfig`` (types, ranges, NaN/inf refused, min_weight x n <= 1 <= max_weight x n
    with n the number of instruments). Returns the keys with their defaults; one line naming the
    key and where it came from otherwise."""
    from strategies.portfolio.allocator import AllocatorConfig

    def fail(dotted: str, text: str) -> Exception:
        return error(f"{origins.of(dotted)}: {dotted}: {text}")

    if not isinstance(raw_allocator, dict):
        raise fail("portfolio.allocator", "must be a table")
    fields = [f for f in AllocatorConfig.__struct_fields__ if f not in ALLOCATOR_INTERNAL]
    for key in sorted(raw_allocator):
        if key not in fields:
            raise fail(f"portfolio.allocator.{key}", unknown("key", key, fields))
    for key, value in raw_allocator.items():  # msgspec would take 1 for true and 1.5 for an int silently
        default = getattr(AllocatorConfig(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise fail(f"portfolio.allocator.{key}", f"must be true or false, was {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise fail(f"portfolio.allocator.{key}", f"must be a string, was {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise fail(f"portfolio.allocator.{key}", f"must be a number, was {value!r}")
    try:
        cfg = msgspec.convert({**raw_allocator, "instruments": list(instruments)}, AllocatorConfig)
    except (msgspec.ValidationError, ValueError) as e:
        text = str(e).strip().splitlines()[0]
        key, sep, problem = text.partition(": ")
        if " - at `$." in text:
            problem, _, where = text.partition(" - at `$.")
            key = where.rstrip("`")
        elif not sep:
            key, problem = "", text
        dotted = f"portfolio.allocator.{key}" if key else "portfolio.allocator"
        raise fail(dotted, problem) from None
    return {f: getattr(cfg, f) for f in fields}


def _sorted(d: Any) -> Any:
    return {k: _sorted(d[k]) for k in sorted(d)} if isinstance(d, dict) else d


def override_origin(source: str, iid: str) -> str:
    """Where an override key came from: the file and its table."""
    return f'{source} [portfolio.overrides."{iid}"]'


def check_portfolio(raw_portfolio: Any, raw: dict, origins: Origins, error: type[Exception],
                    instrument_problem) -> tuple[tuple[str, ...], dict[str, dict]]:  # (and check_allocator)
    """The ``[portfolio]`` table's own rules (before any member is built): keys, the instrument
    list (non-empty, each an instrument id, none twice), no ``run.instrument`` beside it, and
    each override table's shape. Returns (instruments, overrides)."""
    def fail(dotted: str, text: str) -> Exception:
        return error(f"{origins.of(dotted)}: {dotted}: {text}")

    if not isinstance(raw_portfolio, dict):
        raise fail("portfolio", "must be a table")
    for key in sorted(raw_portfolio):
        if key not in PORTFOLIO_KEYS:
            raise fail(f"portfolio.{key}", unknown("key", key, PORTFOLIO_KEYS))
    ins = raw_portfolio.get("instruments")
    if ins is None:
        raise fail("portfolio.instruments", "missing: list the instruments, e.g. [\"XRPUSDT-LINEAR.BYBIT\"]")
    if not isinstance(ins, list) or not ins:
        raise fail("portfolio.instruments", f"must be a non-empty list of instrument ids, got {ins!r}")
    if len(ins) > MAX_INSTRUMENTS:
        raise fail("portfolio.instruments", f"at most {MAX_INSTRUMENTS} instruments, got {len(ins)}")
    seen: set[str] = set()
    for k, iid in enumerate(ins):
        if not isinstance(iid, str) or not iid:
            raise fail("portfolio.instruments", f"item {k}: must be an instrument id string, got {iid!r}")
        problem = instrument_problem(iid)
        if problem:
            raise fail("portfolio.instruments", f"item {k} {iid!r}: {problem}")
        if iid in seen:
            raise fail("portfolio.instruments", f"{iid} is listed twice (one strategy per instrument)")
        seen.add(iid)
    run = raw.get("run")
    if isinstance(run, dict) and "instrument" in run:
        where = origins.of("run.instrument")
        raise error(f"{where}: run.instrument: cannot be combined with [portfolio] instruments "
                    f"({origins.of('portfolio.instruments')}): name the instruments in one place "
                    "(drop run.instrument / --instrument, or the [portfolio] section)")
    overrides = raw_portfolio.get("overrides", {})
    if not isinstance(overrides, dict):
        raise fail("portfolio.overrides", "must be a table of instrument id -> table")
    for iid in sorted(overrides):
        table = overrides[iid]
        dotted = f'portfolio.overrides."{iid}"'
        if iid not in seen:
            raise fail(dotted, f"{iid} is not in portfolio.instruments "
                               f"({', '.join(ins)}){did_you_mean(iid, ins)}")
        if not isinstance(table, dict):
            raise fail(dotted, "must be a table with strategy.* and risk.<guard>.* keys")
        for section in sorted(table):
            if section not in OVERRIDE_SECTIONS:
                raise fail(f"{dotted}.{section}", unknown("section", section, OVERRIDE_SECTIONS, list_known=True)
                           + " (the other sections are node-wide)")
            if not isinstance(table[section], dict):
                raise fail(f"{dotted}.{section}", "must be a table")
        for key in sorted(table.get("risk", {})):
            if key in NODE_WIDE_RISK:
                raise fail(f"{dotted}.risk.{key}", f"risk.{key} is node-wide (one per node): set it in [risk]")
            if not isinstance(table["risk"][key], dict):
                raise fail(f"{dotted}.risk.{key}", "must be a table (risk.<guard>.<key> = value)")
    return tuple(ins), overrides


def member_raw(raw: dict, iid: str, table: dict, origins: Origins,
               error: type[Exception] = ValueError) -> tuple[dict, Origins]:
    """The raw config of one instrument: the base (``[portfolio]`` removed) with
    ``run.instrument = iid`` and the override table on top, and its origins (each override key
    comes from the override table, so a key of a size pair replaces the file's other key of the
    pair: it is the later layer, mmbot/config/sizing.py ``settle_twins``)."""
    import copy

    out = copy.deepcopy(raw)
    out.setdefault("run", {})["instrument"] = iid
    o = Origins(origins.source, origins.sets)
    where = override_origin(origins.source, iid)

    def set_by_override(dotted: str) -> None:
        cli = origins.sets.get(dotted)
        if cli is not None:
            raise error(f"{cli}: {dotted}: also set for {iid} by {where}, which wins for that instrument: "
                        "drop one of them (docs/portfolio.md)")
        o.record(dotted, where)

    for key, value in table.get("strategy", {}).items():
        out.setdefault("strategy", {})[key] = copy.deepcopy(value)
        set_by_override(f"strategy.{key}")
    for guard, params in table.get("risk", {}).items():
        dst = out.setdefault("risk", {}).setdefault(guard, {})
        if not isinstance(dst, dict):
            continue  # the base's own problem: its loader says so
        for key, value in params.items():
            dst[key] = copy.deepcopy(value)
            set_by_override(f"risk.{guard}.{key}")
    return out, o
