"""Run configuration: TOML files + ``--set key=value`` overrides, validated into frozen structs.

Every problem becomes one ``ConfigError`` line naming where the value came from (the file, or
the ``--set``/option item), the dotted key and the problem (unknown key with a did-you-mean,
wrong type, out-of-range value, NaN or infinity), e.g.
``--set venue.leverage=nan: venue.leverage: must be a finite number >= 1 and <= 1000, got nan``.
The rule of every key is in ``RULES`` (mmbot/config/rules.py). Relative paths resolve against
the config file's directory.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from adapters.sim.calibration import MAX_EXTRA_SLIPPAGE_BPS, MAX_LATENCY_MS
from mmbot.canonical_json import dumps_canonical
from mmbot.config.rules import (
    MAX_MS, MAX_USDT, SEED, Bool, ListOf, Num, OneOf, Origins, Pair, Rule, Text, check_table, origin_of, unknown,
)


class ConfigError(ValueError):
    """A configuration is invalid; the message is one line: origin, dotted key, problem."""


class RunSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    catalog: str = "../catalog"
    instrument: str = "BTCUSDT-LINEAR.BYBIT"
    start: str = ""  # ISO-8601 or ns; empty = catalog start
    end: str = ""    # empty = catalog end
    seed: int = 42
    chunk_size: int = 50_000  # rows per streamed catalog chunk (memory vs overhead; 250k peaked ~160-260 MB higher)
    out_dir: str = "../runs"
    purge_interval_s: int = 300  # closed orders/positions purged from the cache this often
    progress: bool = True
    # How the catalog reaches the engine (mmbot/backtest/feed.py): "per_message" (one
    # OrderBookDeltas per exchange message), "per_delta" (Nautilus' own row-by-row streaming) or
    # "auto" (per_message, except per_delta for fill_model = "nautilus" or a stream the message
    # feed cannot prove identical). Not part of the config hash or the report: both feeds give
    # byte-identical results (tests/test_feed_identity.py).
    feed: str = "auto"
    # A window that starts between two book snapshots (docs/config.md, "Windows between snapshots"):
    # "replay" replays every row since the last snapshot through the engine (strategy idle, risk
    # guards running); "snapshot" builds the book from those rows outside the engine and starts the
    # run at the window with a snapshot of it, as a recording with a snapshot there would (guards
    # start fresh at the window; per-message feed only; mmbot/backtest/feed.py SnapshotStartFeed).
    warmup: str = "replay"


class VenueSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    starting_balance_usdt: float = 100_000.0
    leverage: float = 10.0
    fill_model: str = "prob_power"     # docs/queue_model.md; "nautilus" = the matching engine's own queue_position
    queue_position: bool = True
    liquidity_consumption: bool = True
    # Queue simulator (fill_model != "nautilus"; docs/queue_model.md)
    queue_power: float = 3.0           # n of prob_power
    order_latency: str = "constant"    # constant | normal | histogram
    order_latency_ms: float = 0.0
    order_latency_std_ms: float = 0.0
    latency_histogram: list[list[float]] = msgspec.field(default_factory=list)  # [[ms, weight], ...]
    amend_latency_ms: float = 0.0
    cancel_latency_ms: float = 0.0
    # exchange -> local for acks, rejects and fills (constant); >= the feed latency of most
    # market events, so the simulated exchange sees them in exchange order (docs/queue_model.md)
    response_latency_ms: float = 10.0
    extra_slippage_bps: float = 0.0    # charged in each fill's commission, reported as slippage
    calibration: str = ""              # JSON file overriding latencies/slippage


# Keys that existed and were removed: a config that sets one is rejected with the reason.
REMOVED_VENUE_KEYS = {
    "toxic_sweep_prob": "removed: it filled our deeper orders at their own prices against a recorded book that "
                        "did not move, so it could only raise PnL (docs/queue_model.md, \"Removed keys\")",
    "md_latency_ms": "removed: feed latency comes from the data (ts_init - ts_event) and responses take "
                     "venue.response_latency_ms (docs/queue_model.md, \"Removed keys\")",
}


# Keys that only the queue simulator reads (fill_model != "nautilus"). Nautilus' matching engine
# never sees them, so an explicit one beside fill_model = "nautilus" would be dropped silently.
QUEUE_SIM_KEYS = ("queue_power", "order_latency", "order_latency_ms", "order_latency_std_ms", "latency_histogram",
                  "amend_latency_ms", "cancel_latency_ms", "response_latency_ms", "extra_slippage_bps", "calibration")


class ReportSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    equity_interval_ms: int = 1000
    markout_horizons_ms: list[int] = msgspec.field(default_factory=lambda: [100, 1000, 10000])
    html: bool = True


FILL_MODELS = ("nautilus", "risk_averse", "prob_power", "prob_log")
FEEDS = ("auto", "per_message", "per_delta")  # mmbot/backtest/feed.py
WARMUPS = ("replay", "snapshot")  # RunSection.warmup
LATENCY_KINDS = ("constant", "normal", "histogram")


def _time_problem(text: str) -> str | None:
    from mmbot.timeutil import parse_time_ns

    try:
        ns = parse_time_ns(text)
    except ValueError as e:
        return str(e)
    if not 0 <= ns < 2**63:
        return f"{text!r} is outside 1970..2262 (ns since epoch must fit in 63 bits)"
    return None


def _instrument_problem(text: str) -> str | None:
    from nautilus_trader.model.identifiers import InstrumentId

    try:
        InstrumentId.from_str(text)
    except ValueError as e:
        return f"not an instrument id like BTCUSDT-LINEAR.BYBIT ({str(e).splitlines()[0]})"
    return None


# One rule per key (mmbot/config/rules.py); a key added to a section struct needs its rule here
# (tests/test_config_values.py checks that every field has one).
# One minute: beyond it no order would ever be live. The calibration file's values obey the same
# bounds (adapters/sim/calibration.py holds the numbers, shared by both).
_LATENCY_MS = Num(ge=0, le=MAX_LATENCY_MS)
RULES: dict[str, dict[str, Rule]] = {
    "run": {
        "catalog": Text(nonempty=True),
        "instrument": Text(nonempty=True, check=_instrument_problem),
        "start": Text(check=_time_problem),
        "end": Text(check=_time_problem),
        "seed": SEED,
        "chunk_size": Num(ge=1, le=100_000_000, integer=True),
        "out_dir": Text(nonempty=True),
        "purge_interval_s": Num(ge=0, le=365 * 86_400, integer=True),
        "progress": Bool(),
        "feed": OneOf(FEEDS),
        "warmup": OneOf(WARMUPS),
    },
    "venue": {
        "starting_balance_usdt": Num(gt=0, le=MAX_USDT),
        "leverage": Num(ge=1, le=1000),  # Nautilus' account refuses leverage < 1
        "fill_model": OneOf(FILL_MODELS),
        "queue_position": Bool(),
        "liquidity_consumption": Bool(),
        "queue_power": Num(gt=0, le=100),
        "order_latency": OneOf(LATENCY_KINDS),
        "order_latency_ms": _LATENCY_MS,
        "order_latency_std_ms": _LATENCY_MS,
        "latency_histogram": ListOf(Pair(_LATENCY_MS, Num(ge=0, le=1e9), names=("ms", "weight")), max_len=10_000),
        "amend_latency_ms": _LATENCY_MS,
        "cancel_latency_ms": _LATENCY_MS,
        "response_latency_ms": _LATENCY_MS,
        "extra_slippage_bps": Num(ge=0, le=MAX_EXTRA_SLIPPAGE_BPS),
        "calibration": Text(),
    },
    "report": {
        "equity_interval_ms": Num(ge=1, le=MAX_MS, integer=True),
        "markout_horizons_ms": ListOf(Num(ge=1, le=MAX_MS, integer=True), max_len=100),
        "html": Bool(),
    },
}
SECTIONS = {"run": RunSection, "venue": VenueSection, "report": ReportSection}
# Every section a run config may hold. The backtest ignores [wf] (mmbot wf: mmbot/tuning/config.py)
# and [live] (mmbot live: mmbot/live/node.py).
KNOWN_SECTIONS = ("run", "venue", "strategy", "report", "risk", "wf", "live", "portfolio")
IGNORED_SECTIONS = {"wf", "live"}
# --set depth: section.key, or section.table.key for the sections that nest tables.
NESTED_SECTIONS = ("risk", "wf")  # ([portfolio] overrides are set in the file only)


class BacktestConfig(msgspec.Struct, frozen=True):
    run: RunSection
    venue: VenueSection
    report: ReportSection
    strategy: dict[str, Any]
    source: str  # the file it came from ("<defaults>" if none)
    base_dir: str
    risk: Any = None  # mmbot.config.risk.RiskSettings (the [risk] section; docs/risk.md)
    origins: dict[str, str] = {}  # dotted key -> the command-line item that set it (else: source)
    # mmbot.config.portfolio.PortfolioSettings ([portfolio]: several instruments, docs/portfolio.md);
    # None = one instrument, run.instrument
    portfolio: Any = None

    def instrument_configs(self) -> dict[str, "BacktestConfig"]:
        """Instrument id -> the config its strategy and guards run with: the portfolio's members,
        or this config alone under ``run.instrument``."""
        if self.portfolio is None:
            return {self.run.instrument: self}
        return dict(self.portfolio.members)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def origin(self, dotted_key: str) -> str:
        """Where a value came from: the ``--set``/option item that set it, else the file."""
        return Origins(self.source, self.origins).of(dotted_key)

    def to_dict(self) -> dict:
        """The config that determines a run's results. ``run.feed`` is left out: how the catalog
        reaches the engine does not change them (mmbot/backtest/feed.py)."""
        run = msgspec.to_builtins(self.run)
        run.pop("feed", None)
        if run.get("warmup") == "replay":
            run.pop("warmup")  # the default leaves the hash of every earlier config unchanged
        return {
            "run": run,
            "venue": msgspec.to_builtins(self.venue),
            "report": msgspec.to_builtins(self.report),
            "strategy": dict(sorted(self.strategy.items())),
            **({"risk": self.risk.to_dict()} if self.risk is not None and self.risk.enabled else {}),
            **({"portfolio": self.portfolio.to_dict()} if self.portfolio is not None else {}),
        }

    def config_hash(self) -> str:
        """SHA-256 (first 12 hex) of the canonical config, paths excluded from nothing."""
        return hashlib.sha256(dumps_canonical(self.to_dict())).hexdigest()[:12]


def parse_override(item: str, known_sections: tuple[str, ...] = KNOWN_SECTIONS) -> tuple[list[str], Any]:
    """``strategy.levels_per_side=3`` -> (["strategy", "levels_per_side"], 3); value as TOML.

    Problems are blamed on the item (``--set ...`` or the option it came from), with a
    did-you-mean for an unknown section."""
    where = origin_of(item)
    if "=" not in item:
        raise ConfigError(f"{where}: expected section.key=value, e.g. strategy.levels_per_side=3")
    key, _, raw = item.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if keys[0] not in known_sections:
        raise ConfigError(f"{where}: {keys[0]}: {unknown('section', keys[0], known_sections, list_known=True)}")
    depth_ok = (len(keys) == 2 or (len(keys) == 3 and keys[0] in NESTED_SECTIONS)
                or (len(keys) == 3 and keys[:2] == ["portfolio", "allocator"]))  # --set portfolio.allocator.X
    if not depth_ok or not all(keys):
        raise ConfigError(f"{where}: key must be section.name (or risk.<guard>.name), e.g. strategy.levels_per_side")
    return keys, parse_value(raw)


def parse_value(raw: str) -> Any:
    """A command-line value as TOML (``3``, ``0.5``, ``true``, ``nan``, ``"text"``, ``[1, 2]``);
    anything else, and TOML dates (mmbot keeps times as strings), is the bare string."""
    import datetime as _dt

    text = raw.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare strings need no quotes on the command line
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        return text
    return value


def apply_overrides(raw: dict, overrides, origins: Origins, known_sections: tuple[str, ...] = KNOWN_SECTIONS,
                    skip: tuple[str, ...] = ()) -> None:
    """Apply ``--set`` items to the raw TOML dict, recording each key's origin. Items whose
    section is in ``skip`` are left to another loader (e.g. ``wf.*`` for mmbot/tuning/config.py).

    One key set twice with different values is refused (naming both items): the last one would
    win silently, e.g. a wrapper script's safety cap overridden by a later ``--set`` of the same
    key. The same value twice is fine."""
    seen: dict[tuple[str, ...], tuple[Any, str]] = {}
    for item in overrides:
        if item.strip().split(".", 1)[0] in skip:
            continue
        keys, value = parse_override(item, known_sections)
        first = seen.setdefault(tuple(keys), (value, origin_of(item)))
        if not _same_value(first[0], value):
            raise ConfigError(f"{origin_of(item)}: {'.'.join(keys)}: conflicts with {first[1]} (one value per key: "
                              "drop one of them)")
        node = raw
        for depth, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{origin_of(item)}: {'.'.join(keys[:depth + 1])}: is a value, not a table")
            node = nxt
        node[keys[-1]] = value
        origins.record(".".join(keys), origin_of(item))


def override_key(item: str) -> str:
    """The dotted key an override item sets (``" strategy . k_vol =2"`` -> ``"strategy.k_vol"``)."""
    return ".".join(k.strip() for k in item.partition("=")[0].strip().split("."))


def layer_overrides(*layers) -> list[str]:
    """Overrides a program composes from layers (the user's ``--set`` items, then a walk-forward
    split's window, then a trial's parameters): an item of a later layer REPLACES every earlier
    layer's item of the same key, on purpose. Within one layer, two values of one key stay and are
    refused by ``apply_overrides`` (a conflict the user wrote)."""
    out: list[str] = []
    for layer in layers:
        keys = {override_key(item) for item in layer}
        out = [item for item in out if override_key(item) not in keys] + list(layer)
    return out


def _same_value(a: Any, b: Any) -> bool:
    """Two ``--set`` values are the same: equal numbers (``5`` and ``5.0``; NaN and NaN), else equal
    values of one type (``1`` and ``true`` differ)."""
    def real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if real(a) and real(b):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def msgspec_problem(e: Exception) -> tuple[str, str]:
    """(dotted key relative to the converted table or "", one-line text) of a msgspec error."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if " - at `$." in msg:
        text, _, where = msg.partition(" - at `$.")
        where = where.rstrip("`").replace("['", ".").replace("']", "")
        if text.startswith("Object contains unknown field"):
            return f"{where}.{text.split('`')[1]}", "unknown key"
        return where, text
    if "unknown field" in msg:
        return msg.split("`")[1], "unknown key"
    return "", msg


def _section(cls: type, data: dict, name: str, source: str, origins: Origins | None = None):
    """``data`` converted to ``cls``; unknown keys (with a did-you-mean) and type errors are one
    ``ConfigError`` naming ``name.key`` and where the value came from."""
    origins = origins or Origins(source)
    fields = getattr(cls, "__struct_fields__", ())
    for key in data:
        if key not in fields:
            raise ConfigError(f"{origins.of(f'{name}.{key}')}: {name}.{key}: {unknown('key', key, fields)}")
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as e:
        key, text = msgspec_problem(e)
        dotted = f"{name}.{key}" if key else name
        raise ConfigError(f"{origins.of(dotted)}: {dotted}: {text}") from None


def load_backtest_config(path: Path | None, overrides: list[str] = ()) -> BacktestConfig:
    """Load and validate a backtest config: every key of [run], [venue], [report], [strategy]
    (by the strategy's config class) and [risk]. Each problem is one ``ConfigError`` line naming
    the key and where its value came from (the file or the ``--set`` item)."""
    source = str(path) if path else "<defaults>"
    raw = _read_toml(path) if path else {}
    origins = Origins(source)
    apply_overrides(raw, overrides, origins)
    if "portfolio" not in raw:
        cfg = _load_raw(raw, source, origins, path)
        check_beta_reference(cfg, [cfg.run.instrument])
        return cfg
    # Several instruments (docs/portfolio.md): one member config per instrument, each validated
    # by this loader with its override table on top; the node-wide config is the first member's
    # with the [portfolio] section.
    from mmbot.config.portfolio import PortfolioSettings, check_portfolio, member_raw

    portfolio_raw = raw.pop("portfolio")
    instruments, tables = check_portfolio(portfolio_raw, raw, origins, ConfigError, _instrument_problem)
    members = {}
    for iid in instruments:
        m_raw, m_origins = member_raw(raw, iid, tables.get(iid, {}), origins, ConfigError)
        members[iid] = _load_raw(m_raw, source, m_origins, path)
    # the node-wide config: [run], [venue], [report], and the base [strategy]/[risk] (no override)
    base = _load_raw(member_raw(raw, instruments[0], {}, origins)[0], source, Origins(source, origins.sets), path)
    if base.run.warmup == "snapshot":  # each instrument replays its own warm-up (mmbot/backtest/portfolio.py)
        raise ConfigError(f"{origins.of('run.warmup')}: run.warmup: \"snapshot\" is for single-instrument "
                          "backtests; a [portfolio] backtest replays each instrument's warm-up: use \"replay\"")
    allocator = None
    if "allocator" in portfolio_raw:
        from mmbot.config.portfolio import check_allocator

        allocator = check_allocator(portfolio_raw["allocator"], instruments, origins, ConfigError)
        if allocator["enabled"] and (base.risk is None or not base.risk.enabled):
            raise ConfigError(f"{origins.of('portfolio.allocator.enabled')}: portfolio.allocator.enabled: needs [risk] "
                              "enabled (the risk supervisor's audit log records every allocation, and the budgets "
                              "reach the strategies on the risk topic)")
        if allocator["enabled"]:
            # the largest budget an instrument can get must hold one order of it where the order is
            # sized in USDT (base-unit sizes are checked when the run resolves its sizes): below it
            # no instrument may place an order after the first allocation (hostile review 26, F6)
            top = allocator["max_weight"] * allocator["total_budget_usdt"]
            for iid, member in members.items():
                order = float(member.strategy.get("level_notional_usdt") or 0.0)
                if order > top:
                    raise ConfigError(
                        f"{origins.of('portfolio.allocator.total_budget_usdt')}: portfolio.allocator.total_budget_usdt: "
                        f"max_weight x total_budget_usdt = {top:g} USDT is below one order of {iid} "
                        f"(strategy.level_notional_usdt = {order:g}): no instrument could quote after the first "
                        "allocation")
    portfolio = PortfolioSettings(instruments=instruments, overrides=tables, members=members, allocator=allocator)
    check_beta_reference(base, list(instruments))
    return msgspec.structs.replace(base, portfolio=portfolio)


def check_beta_reference(cfg: BacktestConfig, instruments: list[str]) -> None:
    """``risk.portfolio.beta_reference`` must name one of the run's instruments ("" = the first).
    Checked here, where every mode loads its config (backtest, wf and its workers, live, shadow),
    not only by the backtest builder: before, ``mmbot wf`` ran every split with a bad reference,
    each trial failing inside the worker (hostile review 25, F1)."""
    ref = ((cfg.risk.guards.get("portfolio") if cfg.risk is not None else None) or {}).get("beta_reference") or ""
    if ref and ref not in instruments:
        dotted = "risk.portfolio.beta_reference"
        raise ConfigError(f"{cfg.origin(dotted)}: {dotted}: must be one of the run's instruments "
                          f"({', '.join(instruments)}), was {ref!r}")


def _load_raw(raw: dict, source: str, origins: Origins, path: Path | None) -> BacktestConfig:
    """``load_backtest_config`` of a raw TOML dict with its ``--set`` items applied."""
    from mmbot.config.sizing import settle_twins

    settle_twins(raw, origins, ConfigError)  # one key per size/limit pair (base units or USDT notional)
    for name in raw:
        if name not in KNOWN_SECTIONS:
            raise ConfigError(f"{origins.of(name)}: {name}: {unknown('section', name, KNOWN_SECTIONS, list_known=True)}")
    venue_raw = raw.get("venue")
    if isinstance(venue_raw, dict):
        for key in sorted(REMOVED_VENUE_KEYS):
            if key in venue_raw:
                raise ConfigError(f"{origins.of('venue.' + key)}: venue.{key}: {REMOVED_VENUE_KEYS[key]}")
    sections = {}
    for name, cls in SECTIONS.items():
        data = raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{origins.of(name)}: {name}: must be a table")
        check_table(data, RULES[name], name, origins, ConfigError)
        sections[name] = _section(cls, data, name, source, origins)
    run, venue, report = sections["run"], sections["venue"], sections["report"]
    if run.start and run.end:
        from mmbot.timeutil import parse_time_ns

        if parse_time_ns(run.end) <= parse_time_ns(run.start):
            raise ConfigError(f"{origins.of('run.end')}: run.end: must be after run.start ({run.start!r}), got {run.end!r}")
    from mmbot.paths import CONFIG_DIR

    if run.feed == "per_message" and venue.fill_model == "nautilus":
        where = origins.of("run.feed") if origins.of("run.feed") != origins.source else origins.of("venue.fill_model")
        raise ConfigError(f"{where}: run.feed: \"per_message\" cannot drive venue.fill_model = \"nautilus\" "
                          "(Nautilus' matching engine matches on every row it is fed, so whole messages fill "
                          "differently); use \"auto\" or \"per_delta\"")
    if run.warmup == "snapshot" and (run.feed == "per_delta" or venue.fill_model == "nautilus"):
        bad = "run.feed" if run.feed == "per_delta" else "venue.fill_model"
        where = origins.of("run.warmup") if origins.of("run.warmup") != origins.source else origins.of(bad)
        raise ConfigError(f"{where}: run.warmup: \"snapshot\" needs the per-message feed, but {bad} = "
                          f"{getattr(run if bad == 'run.feed' else venue, bad.split('.')[1])!r} replays per row; "
                          "use run.warmup = \"replay\"")
    base_dir = str(path.resolve().parent) if path else str(CONFIG_DIR)
    _check_nautilus_fill_model(venue, raw.get("venue", {}), origins)
    venue = _check_queue_sim(venue, origins, base_dir=str(path.resolve().parent) if path else None)
    strategy = raw.get("strategy", {})
    if not isinstance(strategy, dict):
        raise ConfigError(f"{origins.of('strategy')}: strategy: must be a table")
    from mmbot.config.risk import parse_risk

    risk = parse_risk(raw.get("risk"), source, origins)
    cfg = BacktestConfig(run=run, venue=venue, report=report, strategy=strategy, source=source, base_dir=base_dir,
                         risk=risk, origins=dict(origins.sets))
    if strategy:  # checked by the strategy's own config class now (no section: the run says what is missing)
        from mmbot.builders import strategy_config_dict

        strategy_config_dict(cfg, run.instrument)
    return cfg


def _check_nautilus_fill_model(venue: VenueSection, venue_raw: dict, origins: Origins) -> None:
    """With ``fill_model = "nautilus"``, a queue-simulator key set explicitly is an error (it would
    have no effect). "Explicitly" is at the level that chose the model or later: a command-line
    ``--set venue.fill_model=nautilus`` leaves the config file's queue-simulator keys alone (the
    file describes the simulator it normally runs; the switch is the user's), but rejects
    queue-simulator keys given on the command line; a file that chooses "nautilus" itself may set
    none. ``calibration = ""`` (no file) is not a setting. Defaults never count."""
    if venue.fill_model != "nautilus":
        return
    model_origin = origins.of("venue.fill_model")
    model_from_file = model_origin == origins.source
    for key in QUEUE_SIM_KEYS:
        if key not in venue_raw or (key == "calibration" and venue_raw[key] == ""):
            continue
        where = origins.of(f"venue.{key}")
        if model_from_file or where != origins.source:
            raise ConfigError(
                f"{where}: venue.{key}: applies only to the queue simulator, but venue.fill_model is \"nautilus\" "
                f"({model_origin}): remove it or choose risk_averse, prob_power or prob_log (docs/queue_model.md)")


def _check_queue_sim(venue: VenueSection, origins: Origins, base_dir: str | None) -> VenueSection:
    """[venue] checks across keys (the latency distribution) and the calibration file; returns
    the EFFECTIVE [venue]: the calibration file's numbers in place of the keys they override
    (``calibration`` keeps the path). So ``config_hash`` and ``config.resolved.json`` hold what
    the simulator runs on: two calibration files with other numbers are two configs, and the
    resolved config never shows a [venue] value the file overrode. Each replaced key's origin is
    the calibration file."""
    from adapters.sim.calibration import CalibrationError, load_calibration
    from adapters.sim.latency import Latency

    try:
        Latency(venue.order_latency, venue.order_latency_ms, venue.order_latency_std_ms,
                tuple(tuple(b) for b in venue.latency_histogram))
    except (ValueError, TypeError) as e:
        key = "venue.latency_histogram" if venue.order_latency == "histogram" else "venue.order_latency"
        keys = (key, "venue.order_latency", "venue.latency_histogram", "venue.order_latency_ms",
                "venue.order_latency_std_ms")
        where = next((origins.of(k) for k in keys if origins.of(k) != origins.source), origins.source)
        raise ConfigError(f"{where}: {key}: {e}") from None
    if not venue.calibration:
        return venue
    path = calibration_path(venue, base_dir)
    try:
        cal = load_calibration(path)
    except CalibrationError as e:
        raise ConfigError(f"{origins.of('venue.calibration')}: venue.calibration: {e}") from None
    # The builder's rule (mmbot/builders.py queue_sim_params): order entry becomes normal(mean, std).
    effective = {"order_latency": "normal", "order_latency_ms": cal.latency_ms_mean,
                 "order_latency_std_ms": cal.latency_ms_std, "latency_histogram": [],
                 "amend_latency_ms": cal.amend_latency_ms, "cancel_latency_ms": cal.cancel_latency_ms,
                 "extra_slippage_bps": cal.extra_slippage_bps}
    if cal.response_latency_ms is not None:
        effective["response_latency_ms"] = cal.response_latency_ms
    for key in effective:
        origins.record(f"venue.{key}", f"{path} (venue.calibration)")
    return msgspec.structs.replace(venue, **effective)


def calibration_path(venue: VenueSection, base_dir: str | None) -> Path:
    p = Path(venue.calibration)
    return p if p.is_absolute() or not base_dir else (Path(base_dir) / p).resolve()
