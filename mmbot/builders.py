"""Builders: the only place that knows which mode is running.

``build_backtest_run_config`` wires the catalog, the simulated Bybit venue, the strategy and
the run ledger into one Nautilus ``BacktestRunConfig`` for a ``BacktestNode``. The strategy
and actors it configures are the same classes the live builders use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nautilus_trader.backtest.config import BacktestDataConfig, BacktestRunConfig, BacktestVenueConfig
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.config import (
    BacktestEngineConfig,
    CacheConfig,
    DataEngineConfig,
    ImportableActorConfig,
    ImportableStrategyConfig,
    LoggingConfig,
    RiskEngineConfig,
)

from mmbot.config.backtest import BacktestConfig, ConfigError

STRATEGY_PATH = "strategies.market_maker:MarketMaker"
STRATEGY_CONFIG_PATH = "strategies.market_maker:MarketMakerConfig"
LEDGER_PATH = "mmbot.backtest.ledger:RunLedger"
LEDGER_CONFIG_PATH = "mmbot.backtest.ledger:RunLedgerConfig"
VENUE = "BYBIT"


@dataclass(frozen=True)
class DataWindow:
    """The reported range: [start_ns, end_ns] inclusive, in ns since epoch. ``full`` when it is
    the catalog's whole range, which is then replayed with no time filter at all.

    ``warmup_from_ns`` (0 = none): a window that starts between two book snapshots is replayed
    from the last snapshot at or before ``start_ns`` (or the catalog's start when there is none),
    so the books (the strategy's and the simulated exchange's) hold every level at the start;
    nothing before ``start_ns`` is quoted or counted (docs/config.md, "Windows between
    snapshots"). ``from_snapshot``: whether that earlier start is a snapshot."""

    start_ns: int
    end_ns: int
    full: bool = False
    warmup_from_ns: int = 0
    from_snapshot: bool = True

    @property
    def replay_start_ns(self) -> int:
        """Where the replay starts: the warm-up's start, else the window's."""
        return self.warmup_from_ns if self.warmup_from_ns else self.start_ns


BUILDER_KEYS = frozenset({"quote_from_ns"})  # MarketMakerConfig fields only builders set
PLACEHOLDER_MIN_SIZE = 1e-12  # a level_size stand-in below every lot step (validation only)


def strategy_config_dict(cfg: BacktestConfig, instrument_id: str) -> dict:
    """The strategy section validated by ``MarketMakerConfig`` (unknown keys with a did-you-mean,
    types, ranges, NaN/inf), each problem one ``ConfigError`` naming ``strategy.<key>`` and where
    the value came from. Returns the params for Nautilus, whose configs travel as JSON: an
    infinity the strategy allows ("no limit") is passed as the largest float, which JSON can carry
    (it would become null)."""
    import math
    import sys

    import msgspec
    from nautilus_trader.common.config import msgspec_decoding_hook

    from mmbot.config.rules import unknown
    from mmbot.config.sizing import STRATEGY_NOTIONAL_KEYS
    from strategies.market_maker import MAX_SIZE, MarketMakerConfig

    known = (set(MarketMakerConfig.__struct_fields__) - {"instrument_id", "strategy_id", "order_id_tag"} - BUILDER_KEYS
             | STRATEGY_NOTIONAL_KEYS)
    for key in sorted(cfg.strategy):
        if key not in known:
            raise ConfigError(f"{cfg.origin(f'strategy.{key}')}: strategy.{key}: {unknown('key', key, known)}")
    params = {**cfg.strategy, "instrument_id": instrument_id}
    # A notional key not resolved yet (resolve_sizing): the other keys are checked with stand-ins of
    # its base twin that pass every rule (level_size <= max_position included); the returned params
    # keep the notional key, which MarketMakerConfig refuses, so they cannot reach a node unresolved.
    check = {k: v for k, v in params.items() if k not in STRATEGY_NOTIONAL_KEYS}
    level_n, max_n = params.get("level_notional_usdt"), params.get("max_position_notional_usdt")
    if isinstance(level_n, (int, float)) and isinstance(max_n, (int, float)) and level_n > max_n:  # rules: sizing.py
        raise ConfigError(f"{cfg.origin('strategy.level_notional_usdt')}: strategy.level_notional_usdt: must be <= "
                          f"max_position_notional_usdt ({max_n!r}) or nothing is ever quoted, was {level_n!r}")
    if "level_notional_usdt" in params:
        check["level_size"] = PLACEHOLDER_MIN_SIZE
    if "max_position_notional_usdt" in params:
        check["max_position"] = MAX_SIZE
    try:
        # convert, not a JSON round trip: JSON turns NaN and inf into null ("Expected float, got null")
        msgspec.convert(check, MarketMakerConfig, dec_hook=msgspec_decoding_hook)
    except Exception as e:  # msgspec.ValidationError, or the config's own ValueError from __post_init__
        key, text = _strategy_problem(e)
        dotted = f"strategy.{key}" if key else "strategy"
        raise ConfigError(f"{cfg.origin(dotted)}: {dotted}: {text}") from None
    return {k: math.copysign(sys.float_info.max, v) if isinstance(v, float) and math.isinf(v) else v
            for k, v in params.items()}


def _strategy_problem(e: Exception) -> tuple[str, str]:
    """(key, text) of a MarketMakerConfig error: msgspec's "... - at `$.key`" or the config's
    "MarketMakerConfig.key: rule, was value"."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if " - at `$." in msg:
        text, _, where = msg.partition(" - at `$.")
        return where.rstrip("`"), text
    head, sep, text = msg.partition(": ")
    if sep and head.startswith("MarketMakerConfig."):
        return head.removeprefix("MarketMakerConfig."), text
    return "", msg


def check_instrument_fit(cfg: BacktestConfig, instrument, ref_price: float | None = None,
                         price_source: str = "") -> None:
    """The strategy's order sizes against the instrument's order rules, before anything runs
    (every mode calls it from its builder): ``ConfigError``, one line naming where the value came
    from, the key, the instrument and its limit. The strategy keeps its own check in ``on_start``.

    Level 0 orders ``q0 = floor(level_size / step) * step`` base units (the strategy's rounding):
    ``strategy.level_size`` when ``q0`` is 0 or below the minimum order quantity, or above the
    maximum (``max_position >= level_size >= q0`` is the config's own rule); with a reference
    price (backtest: the window's first trade), ``strategy.level_size`` when ``q0 * ref_price``
    is below the minimum order value (every order would be skipped)."""
    import math

    import msgspec
    from nautilus_trader.common.config import msgspec_decoding_hook

    from strategies import quoting as qm
    from strategies.market_maker import MarketMakerConfig

    iid = str(instrument.id)
    # sizes in USDT notional first become base units at the reference price (a no-op without them)
    cfg, _ = resolve_sizing(cfg, instrument, ref_price, price_source or "the reference price")
    # validated first: a bad value is its own one-line error
    c = msgspec.convert(strategy_config_dict(cfg, iid), MarketMakerConfig, dec_hook=msgspec_decoding_hook)
    step = instrument.size_increment.as_double()
    min_qty = instrument.min_quantity.as_double() if instrument.min_quantity is not None else 0.0
    max_qty = instrument.max_quantity.as_double() if instrument.max_quantity is not None else math.inf
    min_notional = instrument.min_notional.as_double() if instrument.min_notional is not None else 0.0
    lots0 = qm.size_ladder(c.level_size, c.size_multiplier, 1, step)[0]
    q0 = lots0 * step
    tol = step * qm.TICK_EPS

    def fail(key: str, text: str) -> ConfigError:
        return ConfigError(f"{cfg.origin(f'strategy.{key}')}: strategy.{key}: {text}")

    if lots0 == 0 or q0 < min_qty - tol:
        raise fail("level_size", f"{c.level_size:g} is below the minimum order quantity {min_qty:g} of {iid} "
                                 f"(size step {step:g})")
    if q0 > max_qty + tol:
        raise fail("level_size", f"{c.level_size:g} is above the maximum order quantity {max_qty:g} of {iid}")
    if ref_price is not None and q0 * ref_price < min_notional * (1.0 - 1e-12):
        raise fail("level_size", f"{c.level_size:g} x {ref_price:g} ({price_source or 'reference price'}) = "
                                 f"{q0 * ref_price:g} is below the minimum order value {min_notional:g} of {iid}: "
                                 "every order would be skipped")


def refuse_portfolio(cfg: BacktestConfig, mode: str) -> None:
    """One line when a ``[portfolio]`` config reaches a mode that runs one instrument so far
    (docs/portfolio.md, "Modes"): running only its first instrument would drop the others
    silently."""
    if cfg.portfolio is not None:
        raise ConfigError(f"{cfg.origin('portfolio.instruments')}: portfolio: {mode} runs one instrument so far "
                          "(`mmbot backtest run` runs a [portfolio]; docs/portfolio.md, \"Modes\"): use a config "
                          "without [portfolio], with run.instrument")


def check_instrument_fit_shipped(cfg: BacktestConfig, instrument_id: str) -> None:
    """Live and shadow: :func:`check_instrument_fit` against the shipped Bybit definition
    (adapters/definitions; what shadow runs on, and what Bybit returns for a listed symbol)
    before connecting. A symbol without one is left to the strategy's own check on start.

    Sizes in USDT notional must be resolved before (mmbot/live/sizing.py): one left is refused."""
    from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry

    refuse_unresolved_sizing(cfg)
    try:
        instrument = InstrumentRegistry().get_by_id(instrument_id)
    except InstrumentDefinitionError:
        return
    check_instrument_fit(cfg, instrument)


def refuse_unresolved_sizing(cfg: BacktestConfig, section: str = "") -> None:
    """One line when the config still holds a USDT-notional size when a node config is built:
    every entry point resolves them first (backtest/wf at the window's first trade; ``mmbot live``
    and shadow at the venue's mark price, mmbot/live/sizing.py), so one left here is a caller that
    skipped that step; refused rather than guessed (docs/config.md, "Sizes in notional").
    ``section``: only the keys of ``strategy`` or ``risk`` (what the caller configures)."""
    from mmbot.config.sizing import config_notional_items

    items = [i for i in config_notional_items(cfg) if not section or i[0].section.startswith(section)]
    if items:
        t = items[0][0]
        raise ConfigError(f"{cfg.origin(t.notional_key)}: {t.notional_key}: a size in USDT notional reached the node "
                          f"builder unresolved: backtests and wf price it at the window's first trade, mmbot live at "
                          f"the venue's mark price before the node is built (mmbot/live/sizing.py); a node config built "
                          f"any other way takes base units: give {t.base_key} (docs/config.md, \"Sizes in notional\")")


def _size_fail(cfg: BacktestConfig, dotted: str, text: str) -> ConfigError:
    return ConfigError(f"{cfg.origin(dotted)}: {dotted}: {text}")


def resolve_sizing(cfg: BacktestConfig, instrument, ref_price: float | None,
                   price_source: str) -> tuple[BacktestConfig, dict | None]:
    """The config with every USDT-notional size/limit key (mmbot/config/sizing.py ``TWINS``)
    replaced by its base-unit twin for ``instrument``, and the record of the conversion (None when
    the config has no notional key: it is returned unchanged).

    ``base = floor(notional_usdt / ref_price / lot_step) * lot_step`` (rounded DOWN to the lot
    step, for order sizes and for limits alike: a resolved size or limit never exceeds the notional
    the config allows at the reference price). ``ref_price`` [USDT per base unit] is stated by the
    caller (``price_source``). Each failure is one ``ConfigError`` naming where the notional key
    came from, the key, the instrument and the minimum:

    * an order size (``level_notional_usdt``) below one order of the instrument: the minimum is
      ``ceil(max(min_qty, lot_step, min_notional / ref_price) / lot_step) * lot_step * ref_price``;
      above the maximum order quantity;
    * a limit that rounds to 0 lots (not "off": only 0 itself turns a risk limit off): the minimum
      is one lot, ``lot_step * ref_price``;
    * then the resolved config passes every rule of the base keys (``level_size <= max_position``,
      ``soft_position <= hard_position``), blamed on the notional key when it came from one."""
    import math

    import msgspec

    from mmbot.config.sizing import config_notional_items
    from strategies import quoting as qm

    items = config_notional_items(cfg)
    if not items:
        return cfg, None
    iid = str(instrument.id)
    if ref_price is None or not math.isfinite(ref_price) or ref_price <= 0:
        t = items[0][0]
        raise _size_fail(cfg, t.notional_key, f"cannot be converted to {iid} base units without a reference price "
                                              f"(got {ref_price!r}): {price_source}")
    step = instrument.size_increment.as_double()
    precision = instrument.size_increment.precision
    unit = instrument.base_currency.code if instrument.base_currency is not None else "base units"
    min_qty = instrument.min_quantity.as_double() if instrument.min_quantity is not None else 0.0
    max_qty = instrument.max_quantity.as_double() if instrument.max_quantity is not None else math.inf
    min_notional = instrument.min_notional.as_double() if instrument.min_notional is not None else 0.0
    strategy = dict(cfg.strategy)
    guards = {k: dict(v) for k, v in cfg.risk.guards.items()} if cfg.risk is not None else {}
    origins = dict(cfg.origins)
    record_keys: dict[str, dict] = {}
    at = f"at {ref_price:g} USDT/{unit} ({price_source})"
    for t, notional in items:
        table = strategy if t.section == "strategy" else guards["position"]
        if notional == 0.0 and t.zero_off:
            base = 0.0  # the limit is off
        else:
            if not math.isfinite(notional / ref_price / step):  # a price near 0: math.floor(inf) raises
                raise _size_fail(cfg, t.notional_key, f"{notional:g} USDT {at} is not a finite number of lots "
                                                      f"(lot step {step:g}): the reference price is not usable")
            lots = math.floor(notional / ref_price / step + qm.TICK_EPS)
            base = round(lots * step, precision)
            if t.kind == "size":
                min_lots = max(1, math.ceil(min_qty / step - qm.TICK_EPS),
                               math.ceil(min_notional / ref_price / step - qm.TICK_EPS))
                if lots < min_lots:
                    need = min_lots * step * ref_price
                    raise _size_fail(cfg, t.notional_key, (
                        f"{notional:g} USDT {at} is {base:g} {unit} after rounding down to the lot step {step:g}, "
                        f"below one order of {iid}: the minimum is {need:.6g} USDT (minimum order quantity "
                        f"{min_qty:g} {unit}, minimum order value {min_notional:g} USDT)"))
                if base > max_qty * (1.0 + 1e-12):
                    raise _size_fail(cfg, t.notional_key, (
                        f"{notional:g} USDT {at} is {base:g} {unit}, above the maximum order quantity "
                        f"{max_qty:g} {unit} of {iid}: the maximum is {max_qty * ref_price:.6g} USDT"))
            elif lots < 1:
                raise _size_fail(cfg, t.notional_key, (
                    f"{notional:g} USDT {at} rounds down to 0 {unit} (lot step {step:g}) on {iid}: the minimum is "
                    f"{step * ref_price:.6g} USDT (one lot){'; 0 turns the limit off' if t.zero_off else ''}"))
        table.pop(t.notional)
        table[t.base] = base
        if t.notional_key in origins:  # a --set of the notional key: the base key now comes from it
            origins[t.base_key] = origins.pop(t.notional_key)
        record_keys[t.notional_key] = {"notional_usdt": notional, "base_key": t.base_key, "base": base,
                                       "rounding": "down to the lot step"}
    # A position limit left in base units beside an order size resolved from USDT: the trap of a
    # config written for another instrument (BTC limits 0.02 on XRP, where one order is 200 XRP).
    # A nonzero limit below one order trips the guard at the first fill: refused, one line.
    level_note = next((n for t, n in items if t.notional == "level_notional_usdt"), None)
    if level_note is not None and cfg.risk is not None and cfg.risk.enabled and "position" in guards:
        resolved_here = {t.base for t, _ in items if t.section == "risk.position"}
        for name in ("soft_position", "hard_position"):
            limit = guards["position"].get(name)
            if name in resolved_here or not isinstance(limit, (int, float)) or not 0 < limit < strategy["level_size"]:
                continue
            dotted = f"risk.position.{name}"
            raise ConfigError(
                f"{cfg.origin(dotted)}: {dotted}: {limit:g} {unit} (base units) is below one order of "
                f"{strategy['level_size']:g} {unit} (strategy.level_notional_usdt {level_note:g} USDT {at}): the "
                f"guard would trip at the first fill; a limit written for another instrument? give "
                f"{dotted}_notional_usdt, or the limit in {unit}")
    risk = cfg.risk
    position_resolved = any(t.section == "risk.position" for t, _ in items)  # not with [risk] off
    if position_resolved:
        guards["position"] = dict(sorted(guards["position"].items()))
        risk = msgspec.structs.replace(cfg.risk, guards=guards)
    resolved = msgspec.structs.replace(cfg, strategy=strategy, risk=risk, origins=origins)
    noted = {t.base_key: t.notional_key for t, _ in items}

    def blame(text: str) -> ConfigError:  # a base-key rule broken by a resolved value: name the notional key
        origin, _, rest = text.partition(": ")
        key, _, problem = rest.partition(": ")
        if key in noted:
            return ConfigError(f"{origin}: {noted[key]}: resolved to {key}, which {problem} ({at})")
        named = {k: v for k, v in noted.items() if k.rpartition(".")[2] in problem} or noted
        return ConfigError(f"{text} ({', '.join(f'{v} -> {k}' for k, v in named.items())} resolved {at})")

    try:
        strategy_config_dict(resolved, iid)
        if position_resolved:
            from strategies.risk.position import PositionGuardConfig

            try:
                msgspec.convert(guards["position"], PositionGuardConfig)
            except Exception as e:  # the config's ValueError from __post_init__
                key, _, text = str(e).strip().splitlines()[0].partition(": ")
                dotted = f"risk.position.{key}"
                raise ConfigError(f"{resolved.origin(dotted)}: {dotted}: {text}") from None
    except ConfigError as e:
        raise blame(str(e)) from None
    record = {"instrument": iid, "reference_price": ref_price, "price_source": price_source,
              "lot_step": str(instrument.size_increment), "keys": record_keys}
    return resolved, record


def catalog_reference_price(catalog, instrument_id: str, window: DataWindow) -> tuple[float | None, str]:
    """The backtest's reference price [USDT per base unit]: the price of the first trade at or
    after the window's start (searched in its first minute, then in the whole window; a window
    without a trade: the last trade in the hour before it), and a text saying which one; (None,
    text) when there is none."""
    from nautilus_trader.model.data import TradeTick

    from mmbot.timeutil import ns_to_iso

    minute = 60_000_000_000
    ticks = catalog.query(TradeTick, identifiers=[instrument_id], start=window.start_ns,
                          end=min(window.end_ns, window.start_ns + minute))
    if not ticks and window.end_ns > window.start_ns + minute:
        ticks = catalog.query(TradeTick, identifiers=[instrument_id], start=window.start_ns, end=window.end_ns)
    if ticks:
        return ticks[0].price.as_double(), f"the window's first trade, {ns_to_iso(ticks[0].ts_init)}"
    # A window without a trade (a short one, or a gap): the last trade of the hour before it.
    before = catalog.query(TradeTick, identifiers=[instrument_id], start=max(0, window.start_ns - 60 * minute),
                           end=window.start_ns)
    before = [t for t in before if t.ts_init < window.start_ns]
    if before:
        return before[-1].price.as_double(), f"the last trade before the window, {ns_to_iso(before[-1].ts_init)}"
    return None, (f"no trade in the window {ns_to_iso(window.start_ns)} .. {ns_to_iso(window.end_ns)} or the hour "
                  "before it (run.start/end)")


def resolve_backtest_sizing(cfg: BacktestConfig, catalog_path: str, instrument_id: str,
                            window: DataWindow) -> tuple[BacktestConfig, dict | None]:
    """Backtest and wf: :func:`resolve_sizing` against the catalog's instrument, priced at
    :func:`catalog_reference_price`. A config without notional keys is returned unchanged, without
    reading the catalog; a missing instrument is left to the replay's own message."""
    from mmbot.backtest.feed import catalog_memo
    from mmbot.config.sizing import config_notional_items
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    if not config_notional_items(cfg):
        return cfg, None

    def read():
        catalog = ParquetDataCatalog(catalog_path)
        found = catalog.instruments(instrument_ids=[instrument_id])
        return (found[0], *catalog_reference_price(catalog, instrument_id, window)) if found else None

    # the same instrument and price every trial of a wf worker (``catalog_memo``)
    got = catalog_memo("sizing", catalog_path, instrument_id, (window.start_ns, window.end_ns), read)
    if got is None:
        return cfg, None
    return resolve_sizing(cfg, *got)


def _check_catalog_instrument_fit(cfg: BacktestConfig, catalog_path: str, instrument_id: str,
                                  window: DataWindow) -> None:
    """Backtest: :func:`check_instrument_fit` against the catalog's instrument, priced at the
    first trade of the window's first minute (none: no minimum-value check)."""
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from mmbot.backtest.feed import catalog_memo

    def read():
        catalog = ParquetDataCatalog(catalog_path)
        found = catalog.instruments(instrument_ids=[instrument_id])
        if not found:
            return None
        ticks = catalog.query(TradeTick, identifiers=[instrument_id], start=window.start_ns,
                              end=min(window.end_ns, window.start_ns + 60_000_000_000))
        return found[0], (ticks[0].price.as_double() if ticks else None)

    # the same instrument and price every trial of a wf worker (``catalog_memo``)
    got = catalog_memo("fit", catalog_path, instrument_id, (window.start_ns, window.end_ns), read)
    if got is None:
        return  # the replay reports a missing instrument itself
    check_instrument_fit(cfg, got[0], got[1], "the window's first trade price")


def strategy_config(cfg: BacktestConfig, instrument_id: str) -> ImportableStrategyConfig:
    """The market maker, configured identically in every mode (backtest, live), from a config
    whose sizes are base units (``resolve_sizing``; one line otherwise)."""
    refuse_unresolved_sizing(cfg, "strategy")
    return ImportableStrategyConfig(
        strategy_path=STRATEGY_PATH,
        config_path=STRATEGY_CONFIG_PATH,
        config=strategy_config_dict(cfg, instrument_id),
    )


def ledger_config(cfg: BacktestConfig, instrument_id: str, count_from_ns: int = 0,
                  spill_dir: str = "") -> ImportableActorConfig:
    """The run ledger actor (results, cache purge); ``count_from_ns``: a warmed-up window's start;
    ``spill_dir``: where the ledger moves its rows at each purge (a backtest's memory then stays
    about flat with the run's length; the outputs are the same bytes, tests/test_ledger_spill.py).
    It spills on the purge's interval, so its timer adds no instant the run did not have."""
    config = {"instrument_id": instrument_id, "purge_interval_s": cfg.run.purge_interval_s}
    if count_from_ns:
        config["count_from_ns"] = count_from_ns
    if spill_dir and cfg.run.purge_interval_s > 0:
        config["spill_dir"] = spill_dir
        config["spill_interval_s"] = cfg.run.purge_interval_s
    return ImportableActorConfig(actor_path=LEDGER_PATH, config_path=LEDGER_CONFIG_PATH, config=config)


BACKTEST_ENV = "backtest"  # {env} of the kill-switch file in backtests (and wf trials, calibrate)
DEFAULT_ACCOUNT = "default"


def kill_file_path(cfg: BacktestConfig, env: str, account: str = DEFAULT_ACCOUNT) -> Path | None:
    """The kill switch's signal file for this mode and account: ``risk.kill_switch.file`` with
    ``{env}`` (``backtest``, ``shadow``, ``testnet``, ``demo``, ``mainnet``) and ``{account}``
    (the ``[live] account`` label) filled in, relative to the config file; None without one."""
    from mmbot.config.risk import resolve_kill_file

    risk = cfg.risk
    ks = risk.guards.get("kill_switch") if risk is not None and risk.enabled else None
    if not ks or not ks.get("file"):
        return None
    return cfg.path(resolve_kill_file(ks["file"], env, account))


def risk_actor_configs(cfg: BacktestConfig, instrument_id: str, audit_path: str = "", *, env: str,
                       account: str = DEFAULT_ACCOUNT, instruments: list[str] | None = None) -> list[ImportableActorConfig]:
    """The risk supervisor and the enabled guards (docs/risk.md); empty when ``[risk]`` is off.
    The same actor configs serve every mode; only ``audit_path`` and the kill switch's file
    differ: ``env`` (the mode) and ``account`` fill its ``{env}``/``{account}`` placeholders, so
    a kill for a backtest or testnet never halts a mainnet bot. ``instruments``: the node's (the
    ``[risk.portfolio]`` guard's scope; default ``[instrument_id]``)."""
    from strategies.risk import GUARDS, SUPERVISOR

    risk = cfg.risk
    if risk is None or not risk.enabled or not risk.guards:
        return []
    refuse_unresolved_sizing(cfg, "risk")
    sup_path, sup_cfg = SUPERVISOR
    out = [ImportableActorConfig(actor_path=sup_path, config_path=sup_cfg, config={
        "component_id": "RiskSupervisor", "audit_path": audit_path if risk.audit.enabled else "",
        "fsync": risk.audit.fsync,
    })]
    for name, params in risk.guards.items():
        actor_path, config_path = GUARDS[name]
        params = dict(params)
        if params.get("file"):  # kill switch signal file: relative to the config file, per env/account
            params["file"] = str(kill_file_path(cfg, env, account))
        scope = {"instrument_id": instrument_id}
        if name == "portfolio":  # node scope; its instruments: this one (a portfolio builder: all)
            scope = {"instrument_id": None, **portfolio_guard_scope(cfg, instruments or [instrument_id])}
        out.append(ImportableActorConfig(actor_path=actor_path, config_path=config_path, config={
            **params, **scope, "component_id": f"Risk-{name}",
        }))
    return out


def portfolio_guard_scope(cfg: BacktestConfig, instruments: list[str]) -> dict:
    """The ``[risk.portfolio]`` guard's ``instruments`` and ``beta_reference`` (default: the first
    instrument); a reference outside them is one ``ConfigError``."""
    ref = (cfg.risk.guards.get("portfolio") or {}).get("beta_reference") or instruments[0]
    if ref not in instruments:
        dotted = "risk.portfolio.beta_reference"
        raise ConfigError(f"{cfg.origin(dotted)}: {dotted}: must be one of the run's instruments "
                          f"({', '.join(instruments)}), was {ref!r}")
    return {"instruments": list(instruments), "beta_reference": ref}


def risk_engine_config(cfg: BacktestConfig, instrument_id: str) -> RiskEngineConfig:
    """Nautilus' RiskEngine: rate limits and max notional per order from ``[risk.engine]``."""
    risk = cfg.risk
    if risk is None or not risk.enabled:
        return RiskEngineConfig(bypass=False)
    e = risk.engine
    return RiskEngineConfig(
        bypass=False, max_order_submit_rate=e.max_order_submit_rate, max_order_modify_rate=e.max_order_modify_rate,
        max_notional_per_order={instrument_id: str(e.max_notional_per_order)} if e.max_notional_per_order > 0 else {},
    )


def install_pretrade_check(kernel, current=None):
    """``[risk.engine] max_notional_per_order`` in front of the kernel's RiskEngine
    (strategies/risk/pretrade.py: Nautilus skips it for margin accounts), with the limits the
    RiskEngine was configured with (``risk_engine_config``). Every mode calls this after building
    its kernel; ``current``: the handler now on ``RiskEngine.execute`` when a builder replaced
    the RiskEngine's own. Returns the check, or None without a limit."""
    from strategies.risk.pretrade import NotionalLimit

    limits = {iid: float(v) for iid, v in kernel.risk_engine.max_notionals_per_order().items() if float(v) > 0}
    if not limits:
        return None
    check = NotionalLimit(kernel.risk_engine, kernel.msgbus, kernel.cache, limits)
    check.install(current)
    return check


def install_instrument_state_check(kernel, supervisor):
    """Several instruments in one node: the per-instrument trading states of ``supervisor`` (a
    ``per_instrument`` ``RiskSupervisor``; strategies/risk/instrument_state.py) enforced in front of
    the kernel's RiskEngine, and ``max_notional_per_order`` in front of that (Nautilus checks the
    notional before its trading state): NotionalLimit -> InstrumentStateCheck -> RiskEngine. Binds
    the check to the supervisor, as ``bind_risk_engine`` binds the RiskEngine, and the node's
    ``PortfolioGuard`` (if any) to the check (hostile review 25, F5). Returns the check
    (None when the supervisor is absent or not ``per_instrument``: then only the notional check)."""
    from strategies.risk.instrument_state import InstrumentStateCheck

    if supervisor is None or not supervisor.config.per_instrument:
        install_pretrade_check(kernel)
        return None
    from strategies.risk.portfolio import PortfolioGuard

    check = InstrumentStateCheck(kernel.risk_engine, kernel.msgbus, kernel.cache, kernel.portfolio)
    check.install()
    supervisor.bind_instrument_check(check)
    # a hard portfolio breach: deny what Nautilus' node-wide REDUCING passes (a flat instrument's orders)
    guard = next((a for a in kernel.trader.actors() if isinstance(a, PortfolioGuard)), None)
    if guard is not None:
        check.bind_portfolio_guard(guard)
    install_pretrade_check(kernel, check.execute)
    return check


def venue_book_type(cfg: BacktestConfig) -> str:
    """The simulated venue's book: ``L2_MBP`` when Nautilus' matching engine fills our orders
    (``venue.fill_model = "nautilus"``); otherwise ``L1_MBP``. With the queue simulator every
    order goes to it (client ``QSIMBT``, venue routing), the venue's matching engine never holds
    one, and nothing reads its book: at ``L1_MBP`` Nautilus skips applying every book row to that
    unread third copy (the data engine's cache book and the simulator's own exchange book are the
    two that are read). Its trades still move the venue's L1 book and core prices, read by nobody
    either. Outputs byte-identical (tests/test_feed_identity.py, docs/benchmarks.md)."""
    return "L2_MBP" if cfg.venue.fill_model == "nautilus" else "L1_MBP"


def build_backtest_run_config(
    cfg: BacktestConfig,
    catalog_path: str,
    instrument_id: str,
    window: DataWindow,
    with_components: bool = True,
    audit_path: str = "",
    feed: str = "per_delta",
    ledger_spill_dir: str = "",
) -> BacktestRunConfig:
    """The run config; ``with_components=False`` leaves out strategy and actors (the bare-replay
    baseline of the benchmarks). ``audit_path``: where the risk supervisor writes its log.
    ``feed``: "per_delta" (Nautilus streams the catalog's rows and its DataEngine buffers them
    into messages) or "per_message" (the caller feeds whole messages, mmbot/backtest/feed.py: the
    DataEngine publishes them as they come). The data configs serve both: the per-message feed
    uses them only for the instruments. Raises ``ConfigError`` when the strategy's sizes do not
    fit the catalog's instrument."""
    if with_components:
        cfg, _ = resolve_backtest_sizing(cfg, catalog_path, instrument_id, window)  # a no-op once resolved
        _check_catalog_instrument_fit(cfg, catalog_path, instrument_id, window)
    venue = BacktestVenueConfig(
        name=VENUE,
        oms_type="NETTING",
        account_type="MARGIN",
        base_currency="USDT",
        starting_balances=[f"{cfg.venue.starting_balance_usdt} USDT"],
        default_leverage=cfg.venue.leverage,
        book_type=venue_book_type(cfg),
        bar_execution=False,
        trade_execution=True,
        queue_position=cfg.venue.queue_position,
        liquidity_consumption=cfg.venue.liquidity_consumption,
        use_random_ids=False,
    )
    data = [
        BacktestDataConfig(
            catalog_path=catalog_path,
            data_cls=cls,
            instrument_id=InstrumentId.from_str(instrument_id),
            start_time=None if window.full else window.replay_start_ns,
            end_time=None if window.full else window.end_ns,
        )
        for cls in ("nautilus_trader.model.data:OrderBookDelta", "nautilus_trader.model.data:TradeTick")
    ]
    strategy = strategy_config(cfg, instrument_id)
    if cfg.venue.fill_model != "nautilus":  # our orders go to the queue simulator (docs/queue_model.md)
        from adapters.sim.exec_client import BACKTEST_CLIENT_ID

        strategy = ImportableStrategyConfig(strategy_path=strategy.strategy_path, config_path=strategy.config_path,
                                            config={**strategy.config, "exec_client_id": BACKTEST_CLIENT_ID})
    if window.warmup_from_ns:  # the book is built from the earlier snapshot; quoting starts at the window
        strategy = ImportableStrategyConfig(strategy_path=strategy.strategy_path, config_path=strategy.config_path,
                                            config={**strategy.config, "quote_from_ns": window.start_ns})
    ledger = ledger_config(cfg, instrument_id, count_from_ns=window.start_ns if window.warmup_from_ns else 0,
                           spill_dir=ledger_spill_dir)
    engine = BacktestEngineConfig(
        trader_id="MMBOT-001",
        logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
        # Whole exchange messages reach the strategy as one OrderBookDeltas batch (F_LAST): built
        # by the DataEngine from rows (per_delta), or before the engine (per_message).
        data_engine=DataEngineConfig(buffer_deltas=(feed == "per_delta")),
        risk_engine=risk_engine_config(cfg, instrument_id),
        cache=CacheConfig(drop_instruments_on_reset=False),
        strategies=[strategy] if with_components else [],
        actors=[ledger, *risk_actor_configs(cfg, instrument_id, audit_path, env=BACKTEST_ENV)]
        if with_components else [],
        run_analysis=False,
    )
    return BacktestRunConfig(
        venues=[venue],
        data=data,
        engine=engine,
        chunk_size=cfg.run.chunk_size,
        dispose_on_completion=False,
        raise_exception=True,
        start=None if window.full else window.replay_start_ns,
        end=None if window.full else window.end_ns,
    )


def queue_sim_params(cfg: BacktestConfig):
    """``SimParams`` of the queue simulator from ``[venue]`` and the calibration file (which
    overrides the latencies and the slippage it sets)."""
    from adapters.sim.calibration import load_calibration
    from adapters.sim.exec_client import SimParams
    from adapters.sim.latency import Latency, LatencyModel
    from adapters.sim.queue import QueueModel
    from mmbot.config.backtest import calibration_path

    v = cfg.venue
    order = Latency(v.order_latency, v.order_latency_ms, v.order_latency_std_ms,
                    tuple(tuple(b) for b in v.latency_histogram))
    amend, cancel = Latency("constant", v.amend_latency_ms), Latency("constant", v.cancel_latency_ms)
    response = Latency("constant", v.response_latency_ms)
    slip = v.extra_slippage_bps
    if v.calibration:
        c = load_calibration(calibration_path(v, cfg.base_dir))
        order = Latency("normal", c.latency_ms_mean, c.latency_ms_std)
        amend, cancel = Latency("constant", c.amend_latency_ms), Latency("constant", c.cancel_latency_ms)
        if c.response_latency_ms is not None:
            response = Latency("constant", c.response_latency_ms)
        slip = c.extra_slippage_bps
    return SimParams(
        model=QueueModel(v.fill_model, v.queue_power),
        latency=LatencyModel(order=order, amend=amend, cancel=cancel, response=response, seed=cfg.run.seed),
        extra_slippage_bps=slip, starting_balance=v.starting_balance_usdt, leverage=v.leverage, seed=cfg.run.seed,
    )


def _no_record(*args, **kwargs) -> None:
    return None


def skip_unread_statistics(engine) -> None:
    """Backtests only: Nautilus' ``PortfolioAnalyzer`` records the realized PnL of every closed
    position in a pandas Series grown by ``concat`` (a copy of the whole history, ~1 ms per close
    and more as the run gets longer) for statistics only Nautilus' own result summary reads (the
    runs set ``run_analysis=False``; mmbot's report computes its own from the ledger). This
    engine's analyzer records nothing; positions, accounts and events are untouched."""
    engine.portfolio.analyzer.record_trade = _no_record


LIVE_RELEASE_GRACE_NS = 50_000_000  # shadow: > the node's processing lag (1-4 ms measured)


def install_queue_sim(engine, cfg: BacktestConfig, instrument_id: str, live_feed: bool = False, end_ns: int = 0,
                      count_from_ns: int = 0):
    """Register ``QueueSimExecutionClient`` on a built engine and route the venue's orders to it
    (None for ``fill_model = "nautilus"``). The same client wraps a live data feed in shadow mode
    (``live_feed``: the exchange is woken by each received message and, failing one, by a
    wall-clock alert ``LIVE_RELEASE_GRACE_NS`` after an item's due time, see
    ``SimParams.release_grace_ns``). ``end_ns``: a replay's last instant (the window's end), where
    the simulator applies what the exchange reached in the last response latency
    (``SimParams.end_ns``); 0 for live feeds. ``count_from_ns``: a warmed-up window's start
    (``SimParams.count_from_ns``)."""
    if cfg.venue.fill_model == "nautilus":
        return None
    from nautilus_trader.model.identifiers import InstrumentId

    from adapters.sim.exec_client import BACKTEST_CLIENT_ID, CLIENT_ID, QueueSimExecutionClient

    k = engine.kernel
    iid = InstrumentId.from_str(instrument_id)
    params = queue_sim_params(cfg)
    from dataclasses import replace

    if live_feed:
        params = replace(params, release_grace_ns=LIVE_RELEASE_GRACE_NS)
    else:  # backtest: no per-order-event account bookkeeping (SimParams.calculated_account),
        # touched levels read from the book where the catalog declares the book invariant, the
        # replay's end and a warmed-up window's start
        from mmbot.catalog_store import book_invariant_declared

        params = replace(params, calculated_account=False,
                         sizes_from_book=book_invariant_declared(cfg.path(cfg.run.catalog), instrument_id),
                         end_ns=end_ns, count_from_ns=count_from_ns)
    client = QueueSimExecutionClient(iid, params, k.msgbus, k.cache, k.clock,
                                     client_id=CLIENT_ID if live_feed else BACKTEST_CLIENT_ID)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, iid.venue)  # risk guards' commands too
    return client


# -- Several instruments in one node (docs/portfolio.md) -------------------------------------------

def strategy_tag(index: int) -> str:
    """The order id tag of the portfolio's ``index``-th strategy (its StrategyId is
    ``MarketMaker-<tag>``, its client order ids ``O-...-<trader tag>-<tag>-<n>``): the config's
    order, so ids do not depend on anything else. Tag ``000`` is what Nautilus gives a lone
    strategy."""
    return f"{index:03d}"


def instrument_label(instrument_id: str) -> str:
    """A component-id-safe label of an instrument (``XRPUSDT-LINEAR.BYBIT`` -> ``XRPUSDT-LINEAR``)."""
    return instrument_id.rpartition(".")[0] or instrument_id


def build_portfolio_run_config(
    cfg: BacktestConfig,
    catalog_path: str,
    windows: dict[str, DataWindow],
    audit_path: str = "",
    ledger_spill_dir: str = "",
) -> BacktestRunConfig:
    """The run config of a ``[portfolio]``: one venue and account; per instrument (in the config's
    order) its data, one market maker (order id tag ``strategy_tag(i)``: ids never mix), one run
    ledger (``RunLedger-<label>``) and its risk guards (``Risk-<guard>-<label>``, the member's
    ``[risk]`` with its overrides); one risk supervisor and one kill switch for the node (both
    node-wide: docs/portfolio.md). ``windows``: each instrument's replay window (one reported
    range, each with its own warm-up). ``cfg``'s members must have their sizes resolved
    (``resolve_backtest_sizing`` per member). Nautilus streams the catalog's rows of every
    instrument in one clock (the per-delta feed)."""
    members = cfg.instrument_configs()
    for iid, member in members.items():
        _check_catalog_instrument_fit(member, catalog_path, iid, windows[iid])
    venue = BacktestVenueConfig(
        name=VENUE, oms_type="NETTING", account_type="MARGIN", base_currency="USDT",
        starting_balances=[f"{cfg.venue.starting_balance_usdt} USDT"], default_leverage=cfg.venue.leverage,
        book_type=venue_book_type(cfg), bar_execution=False, trade_execution=True, queue_position=cfg.venue.queue_position,
        liquidity_consumption=cfg.venue.liquidity_consumption, use_random_ids=False,
    )
    replay_start = min(w.replay_start_ns for w in windows.values())
    end = max(w.end_ns for w in windows.values())
    full = all(w.full for w in windows.values())
    data, strategies, actors = [], [], []
    node_wide: set[str] = set()
    for index, (iid, member) in enumerate(members.items()):
        w = windows[iid]
        data += [BacktestDataConfig(catalog_path=catalog_path, data_cls=cls, instrument_id=InstrumentId.from_str(iid),
                                    start_time=None if full else w.replay_start_ns, end_time=None if full else w.end_ns)
                 for cls in ("nautilus_trader.model.data:OrderBookDelta", "nautilus_trader.model.data:TradeTick")]
        params = {**strategy_config(member, iid).config, "order_id_tag": strategy_tag(index)}
        if cfg.venue.fill_model != "nautilus":
            from adapters.sim.exec_client import BACKTEST_CLIENT_ID

            params["exec_client_id"] = BACKTEST_CLIENT_ID
        warm = replay_start < w.start_ns  # the node replays from before this window: quote from its start
        if warm:
            params["quote_from_ns"] = w.start_ns
        strategies.append(ImportableStrategyConfig(strategy_path=STRATEGY_PATH, config_path=STRATEGY_CONFIG_PATH,
                                                   config=params))
        # Each instrument's ledger spills to a folder of its own (the run's temporary folder).
        ledger = ledger_config(member, iid, count_from_ns=w.start_ns if warm else 0,
                               spill_dir=str(Path(ledger_spill_dir) / instrument_label(iid)) if ledger_spill_dir else "")
        actors.append(ImportableActorConfig(actor_path=ledger.actor_path, config_path=ledger.config_path,
                                            config={**ledger.config, "component_id": f"RunLedger-{instrument_label(iid)}"}))
        for guard in risk_actor_configs(member, iid, audit_path, env=BACKTEST_ENV, instruments=list(members)):
            name = guard.config.get("component_id", "")
            if name in ("RiskSupervisor", "Risk-kill_switch", "Risk-portfolio"):
                if name not in node_wide:  # one supervisor (audit chain, RiskEngine state), one kill switch,
                    node_wide.add(name)    # one portfolio guard
                    if name == "RiskSupervisor" and len(members) > 1:  # a trading state per instrument
                        guard = ImportableActorConfig(actor_path=guard.actor_path, config_path=guard.config_path,
                                                      config={**guard.config, "per_instrument": True})
                    if name == "Risk-kill_switch":  # every instrument: its HALTED and its cancels
                        guard = ImportableActorConfig(actor_path=guard.actor_path, config_path=guard.config_path,
                                                      config={**guard.config, "instrument_id": None})
                    actors.append(guard)
                continue
            actors.append(ImportableActorConfig(actor_path=guard.actor_path, config_path=guard.config_path,
                                                config={**guard.config, "component_id": f"{name}-{instrument_label(iid)}"}))
    actors += portfolio_allocator_configs(cfg)
    risk = cfg.risk
    if risk is None or not risk.enabled:
        risk_engine = RiskEngineConfig(bypass=False)
    else:
        e = risk.engine
        risk_engine = RiskEngineConfig(
            bypass=False, max_order_submit_rate=e.max_order_submit_rate, max_order_modify_rate=e.max_order_modify_rate,
            max_notional_per_order={iid: str(e.max_notional_per_order) for iid in members}
            if e.max_notional_per_order > 0 else {},
        )
    engine = BacktestEngineConfig(
        trader_id="MMBOT-001",
        logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
        data_engine=DataEngineConfig(buffer_deltas=True),
        risk_engine=risk_engine,
        cache=CacheConfig(drop_instruments_on_reset=False),
        strategies=strategies,
        actors=actors,
        run_analysis=False,
    )
    return BacktestRunConfig(
        venues=[venue], data=data, engine=engine, chunk_size=cfg.run.chunk_size, dispose_on_completion=False,
        raise_exception=True, start=None if full else replay_start, end=None if full else end,
    )


SCOREBOARD_KEYS = ("ema_halflife_s", "vol_sample_s", "vol_window_minutes")


def portfolio_allocator_configs(cfg: BacktestConfig) -> list[ImportableActorConfig]:
    """``[portfolio.allocator]`` enabled: the node's scoreboard (``Portfolio-scoreboard``: every
    instrument's fills, markouts at the report's ``markout_horizons_ms``) and allocator
    (``Portfolio-allocator``), after every strategy and guard (docs/portfolio.md, "Scoreboard and
    allocator"); none otherwise (nothing else changes)."""
    from strategies.portfolio import ALLOCATOR_PATH, SCOREBOARD_PATH

    p = cfg.portfolio
    if p is None or not p.allocator_enabled:
        return []
    instruments = list(p.instruments)
    a = dict(p.allocator)
    board = {k: a[k] for k in SCOREBOARD_KEYS}
    return [
        ImportableActorConfig(actor_path=SCOREBOARD_PATH[0], config_path=SCOREBOARD_PATH[1], config={
            **board, "instruments": instruments, "markout_horizons_ms": list(cfg.report.markout_horizons_ms),
            "component_id": "Portfolio-scoreboard"}),
        ImportableActorConfig(actor_path=ALLOCATOR_PATH[0], config_path=ALLOCATOR_PATH[1], config={
            **a, "instruments": instruments, "component_id": "Portfolio-allocator"}),
    ]


def install_portfolio_queue_sim(engine, cfg: BacktestConfig, windows: dict[str, DataWindow]):
    """ONE execution client for every instrument of a ``[portfolio]`` backtest
    (adapters/sim/router.py): a queue simulator per instrument (its own exchange book, queues and
    timeline; venue order ids, trade ids and alerts prefixed with the instrument's label), the
    first one opening the shared account; None for ``fill_model = "nautilus"``."""
    if cfg.venue.fill_model == "nautilus":
        return None
    from dataclasses import replace

    from adapters.sim.exec_client import BACKTEST_CLIENT_ID
    from mmbot.catalog_store import book_invariant_declared

    replay_start = min(w.replay_start_ns for w in windows.values())
    params = {iid: replace(queue_sim_params(cfg), calculated_account=False,
                           sizes_from_book=book_invariant_declared(cfg.path(cfg.run.catalog), iid), end_ns=w.end_ns,
                           count_from_ns=w.start_ns if replay_start < w.start_ns else 0)
              for iid, w in windows.items()}
    return register_queue_sim_router(engine.kernel, params, BACKTEST_CLIENT_ID)


def register_queue_sim_router(kernel, params_by_instrument: dict, client_id: str):
    """A queue simulator per instrument of ``params_by_instrument`` (instrument id string ->
    ``QueueSimParams``; venue order ids, trade ids and alerts prefixed with the instrument's label,
    the first in order opening the shared account) behind ONE router registered as the venue's
    execution client: the backtest's and shadow's portfolio placement share it. Returns the router."""
    from dataclasses import replace

    from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue

    from adapters.sim.exec_client import QueueSimExecutionClient
    from adapters.sim.router import QueueSimRouter

    k = kernel
    sims = {}
    for index, (iid, params) in enumerate(params_by_instrument.items()):
        params = replace(params, id_prefix=f"{instrument_label(iid)}-", account_state=index == 0)
        i = InstrumentId.from_str(iid)
        sims[i] = QueueSimExecutionClient(i, params, k.msgbus, k.cache, k.clock, client_id=client_id)
    router = QueueSimRouter(sims, k.msgbus, k.cache, k.clock, ClientId(client_id))
    k.exec_engine.register_client(router)
    k.exec_engine.register_venue_routing(router, Venue(VENUE))  # risk guards' commands too
    return router
