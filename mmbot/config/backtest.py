"""Run configuration: TOML files + ``--set key=value`` overrides, validated into frozen structs.

Every problem becomes one ``ConfigError`` line naming the file, the dotted key and the problem
(unknown key, wrong type, out-of-range value). Relative paths resolve against the config
file's directory.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from mmbot.canonical_json import dumps_canonical


class ConfigError(ValueError):
    """A configuration is invalid; the message is one line naming the key."""


class RunSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    catalog: str = "../catalog"
    instrument: str = "BTCUSDT-LINEAR.BYBIT"
    start: str = ""  # ISO-8601 or ns; empty = catalog start
    end: str = ""    # empty = catalog end
    seed: int = 42
    chunk_size: int = 250_000  # rows per streamed catalog chunk (memory vs overhead)
    out_dir: str = "../runs"
    purge_interval_s: int = 300  # closed orders/positions purged from the cache this often
    progress: bool = True


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


class ReportSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    equity_interval_ms: int = 1000
    markout_horizons_ms: list[int] = msgspec.field(default_factory=lambda: [100, 1000, 10000])
    html: bool = True


FILL_MODELS = ("nautilus", "risk_averse", "prob_power", "prob_log")
SECTIONS = {"run": RunSection, "venue": VenueSection, "report": ReportSection}
IGNORED_SECTIONS = {"wf", "live"}  # read by other commands (mmbot wf: mmbot/tuning/config.py; mmbot live: mmbot/live/node.py); the backtest ignores them


class BacktestConfig(msgspec.Struct, frozen=True):
    run: RunSection
    venue: VenueSection
    report: ReportSection
    strategy: dict[str, Any]
    source: str  # the file it came from ("<defaults>" if none)
    base_dir: str
    risk: Any = None  # mmbot.config.risk.RiskSettings (the [risk] section; docs/risk.md)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def to_dict(self) -> dict:
        return {
            "run": msgspec.to_builtins(self.run),
            "venue": msgspec.to_builtins(self.venue),
            "report": msgspec.to_builtins(self.report),
            "strategy": dict(sorted(self.strategy.items())),
            **({"risk": self.risk.to_dict()} if self.risk is not None and self.risk.enabled else {}),
        }

    def config_hash(self) -> str:
        """SHA-256 (first 12 hex) of the canonical config, paths excluded from nothing."""
        return hashlib.sha256(dumps_canonical(self.to_dict())).hexdigest()[:12]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``strategy.levels_per_side=3`` -> (["strategy", "levels_per_side"], 3); value as TOML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, _, raw = item.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if not (len(keys) == 2 or (len(keys) == 3 and keys[0] == "risk")) or not all(keys):
        raise ConfigError(f"--set {item!r}: key must be section.name, e.g. strategy.levels_per_side")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare strings need no quotes on the command line
    return keys, value


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _section(cls: type, data: dict, name: str, source: str):
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as e:
        msg = str(e)
        # msgspec says e.g. "Expected `int`, got `str` - at `$.seed`"; name the dotted key instead.
        if " - at `$." in msg:
            text, _, where = msg.partition(" - at `$.")
            raise ConfigError(f"{source}: {name}.{where.rstrip('`')}: {text}") from None
        if "unknown field" in msg:
            field = msg.split("`")[1]
            raise ConfigError(f"{source}: {name}.{field}: unknown key") from None
        raise ConfigError(f"{source}: {name}: {msg}") from None


def load_backtest_config(path: Path | None, overrides: list[str] = ()) -> BacktestConfig:
    """Load and validate a backtest config. The strategy section is validated by the builder
    (it knows the strategy's config class)."""
    source = str(path) if path else "<defaults>"
    raw = _read_toml(path) if path else {}
    set_keys: set[tuple[str, ...]] = set()
    for item in overrides:
        keys, value = parse_override(item)
        set_keys.add(tuple(keys))
        node = raw
        for k in keys[:-1]:  # risk.<guard>.<key> is three levels deep
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {k}: must be a table")
        node[keys[-1]] = value
    unknown = sorted(set(raw) - set(SECTIONS) - {"strategy", "risk"} - IGNORED_SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown section (known: run, venue, strategy, report)")
    venue_raw = raw.get("venue")
    if isinstance(venue_raw, dict):
        for key in sorted(REMOVED_VENUE_KEYS):
            if key in venue_raw:
                origin = "--set" if ("venue", key) in set_keys else source
                raise ConfigError(f"{origin}: venue.{key}: {REMOVED_VENUE_KEYS[key]}")
    sections = {}
    for name, cls in SECTIONS.items():
        data = raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {name}: must be a table")
        sections[name] = _section(cls, data, name, source)
    run, venue, report = sections["run"], sections["venue"], sections["report"]
    if venue.fill_model not in FILL_MODELS:
        raise ConfigError(f"{source}: venue.fill_model: {venue.fill_model!r} is not one of {', '.join(FILL_MODELS)}")
    for key, value in (("venue.starting_balance_usdt", venue.starting_balance_usdt), ("venue.leverage", venue.leverage),
                       ("run.chunk_size", run.chunk_size), ("report.equity_interval_ms", report.equity_interval_ms)):
        if value <= 0:
            raise ConfigError(f"{source}: {key}: must be > 0, got {value}")
    _check_queue_sim(venue, source, base_dir=str(path.resolve().parent) if path else None)
    if any(h <= 0 for h in report.markout_horizons_ms):
        raise ConfigError(f"{source}: report.markout_horizons_ms: horizons must be > 0")
    strategy = raw.get("strategy", {})
    if not isinstance(strategy, dict):
        raise ConfigError(f"{source}: strategy: must be a table")
    base_dir = str(path.resolve().parent) if path else str(Path(__file__).resolve().parent.parent / "config")
    from mmbot.config.risk import parse_risk

    risk = parse_risk(raw.get("risk"), source)
    return BacktestConfig(run=run, venue=venue, report=report, strategy=strategy, source=source, base_dir=base_dir,
                          risk=risk)


def _check_queue_sim(venue: VenueSection, source: str, base_dir: str | None) -> None:
    """[venue] queue-simulator keys and the calibration file, one ConfigError line each."""
    from adapters.sim.calibration import CalibrationError, load_calibration
    from adapters.sim.latency import Latency

    if not venue.queue_power > 0:
        raise ConfigError(f"{source}: venue.queue_power: must be > 0, got {venue.queue_power}")
    for key in ("order_latency_ms", "order_latency_std_ms", "amend_latency_ms", "cancel_latency_ms",
                "response_latency_ms", "extra_slippage_bps"):
        v = getattr(venue, key)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{source}: venue.{key}: must be a finite number >= 0, got {v}")
    try:
        Latency(venue.order_latency, venue.order_latency_ms, venue.order_latency_std_ms,
                tuple(tuple(b) for b in venue.latency_histogram))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: venue.order_latency: {e}") from None
    if venue.calibration:
        try:
            load_calibration(calibration_path(venue, base_dir))
        except CalibrationError as e:
            raise ConfigError(f"venue.calibration: {e}") from None


def calibration_path(venue: VenueSection, base_dir: str | None) -> Path:
    p = Path(venue.calibration)
    return p if p.is_absolute() or not base_dir else (Path(base_dir) / p).resolve()
