"""Builders: the only place that knows which mode is running.

``build_backtest_run_config`` wires the catalog, the simulated Bybit venue, the strategy and
the run ledger into one Nautilus ``BacktestRunConfig`` for a ``BacktestNode``. The strategy
and actors it configures are the same classes the live builders use.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """The replayed range: [start_ns, end_ns] inclusive, in ns since epoch. ``full`` when it is
    the catalog's whole range, which is then replayed with no time filter at all."""

    start_ns: int
    end_ns: int
    full: bool = False


def strategy_config_dict(cfg: BacktestConfig, instrument_id: str) -> dict:
    """The strategy section validated against ``MarketMakerConfig`` (unknown keys, types, ranges)."""
    from strategies.market_maker import MarketMakerConfig

    known = set(MarketMakerConfig.__struct_fields__)
    for key in sorted(cfg.strategy):
        if key not in known or key in ("instrument_id", "strategy_id", "order_id_tag"):
            raise ConfigError(f"{cfg.source}: strategy.{key}: unknown key")
    params = {**cfg.strategy, "instrument_id": instrument_id}
    try:
        MarketMakerConfig.parse(_json(params))
    except Exception as e:  # msgspec.ValidationError or the config's own ValueError
        raise ConfigError(f"{cfg.source}: strategy: {_one_line(e)}") from None
    return params


def _json(obj: dict) -> str:
    import msgspec

    return msgspec.json.encode(obj).decode()


def _one_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if " - at `$." in msg:
        text, _, where = msg.partition(" - at `$.")
        return f"{where.rstrip('`')}: {text}"
    return msg


def strategy_config(cfg: BacktestConfig, instrument_id: str) -> ImportableStrategyConfig:
    """The market maker, configured identically in every mode (backtest, live)."""
    return ImportableStrategyConfig(
        strategy_path=STRATEGY_PATH,
        config_path=STRATEGY_CONFIG_PATH,
        config=strategy_config_dict(cfg, instrument_id),
    )


def ledger_config(cfg: BacktestConfig, instrument_id: str) -> ImportableActorConfig:
    """The run ledger actor (results, cache purge)."""
    return ImportableActorConfig(
        actor_path=LEDGER_PATH,
        config_path=LEDGER_CONFIG_PATH,
        config={"instrument_id": instrument_id, "purge_interval_s": cfg.run.purge_interval_s},
    )


def risk_actor_configs(cfg: BacktestConfig, instrument_id: str, audit_path: str = "") -> list[ImportableActorConfig]:
    """The risk supervisor and the enabled guards (docs/risk.md); empty when ``[risk]`` is off.
    The same actor configs serve every mode; only ``audit_path`` differs (backtest: run dir)."""
    from strategies.risk import GUARDS, SUPERVISOR

    risk = cfg.risk
    if risk is None or not risk.enabled or not risk.guards:
        return []
    sup_path, sup_cfg = SUPERVISOR
    out = [ImportableActorConfig(actor_path=sup_path, config_path=sup_cfg, config={
        "component_id": "RiskSupervisor", "audit_path": audit_path if risk.audit.enabled else "",
        "fsync": risk.audit.fsync,
    })]
    for name, params in risk.guards.items():
        actor_path, config_path = GUARDS[name]
        params = dict(params)
        if params.get("file"):  # kill switch signal file: relative to the config file
            params["file"] = str(cfg.path(params["file"]))
        out.append(ImportableActorConfig(actor_path=actor_path, config_path=config_path, config={
            **params, "instrument_id": instrument_id, "component_id": f"Risk-{name}",
        }))
    return out


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


def build_backtest_run_config(
    cfg: BacktestConfig,
    catalog_path: str,
    instrument_id: str,
    window: DataWindow,
    with_components: bool = True,
    audit_path: str = "",
) -> BacktestRunConfig:
    """The run config; ``with_components=False`` leaves out strategy and actors (the bare-replay
    baseline of the benchmarks). ``audit_path``: where the risk supervisor writes its log."""
    venue = BacktestVenueConfig(
        name=VENUE,
        oms_type="NETTING",
        account_type="MARGIN",
        base_currency="USDT",
        starting_balances=[f"{cfg.venue.starting_balance_usdt} USDT"],
        default_leverage=cfg.venue.leverage,
        book_type="L2_MBP",
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
            start_time=None if window.full else window.start_ns,
            end_time=None if window.full else window.end_ns,
        )
        for cls in ("nautilus_trader.model.data:OrderBookDelta", "nautilus_trader.model.data:TradeTick")
    ]
    strategy = strategy_config(cfg, instrument_id)
    if cfg.venue.fill_model != "nautilus":  # our orders go to the queue simulator (docs/queue_model.md)
        from adapters.sim.exec_client import CLIENT_ID

        strategy = ImportableStrategyConfig(strategy_path=strategy.strategy_path, config_path=strategy.config_path,
                                            config={**strategy.config, "exec_client_id": CLIENT_ID})
    ledger = ledger_config(cfg, instrument_id)
    engine = BacktestEngineConfig(
        trader_id="MMBOT-001",
        logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
        # Whole exchange messages reach the strategy as one OrderBookDeltas batch (F_LAST).
        data_engine=DataEngineConfig(buffer_deltas=True),
        risk_engine=risk_engine_config(cfg, instrument_id),
        cache=CacheConfig(drop_instruments_on_reset=False),
        strategies=[strategy] if with_components else [],
        actors=[ledger, *risk_actor_configs(cfg, instrument_id, audit_path)] if with_components else [],
        run_analysis=False,
    )
    return BacktestRunConfig(
        venues=[venue],
        data=data,
        engine=engine,
        chunk_size=cfg.run.chunk_size,
        dispose_on_completion=False,
        raise_exception=True,
        start=None if window.full else window.start_ns,
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


LIVE_RELEASE_GRACE_NS = 50_000_000  # shadow: > the node's processing lag (1-4 ms measured)


def install_queue_sim(engine, cfg: BacktestConfig, instrument_id: str, live_feed: bool = False):
    """Register ``QueueSimExecutionClient`` on a built engine and route the venue's orders to it
    (None for ``fill_model = "nautilus"``). The same client wraps a live data feed in shadow mode
    (``live_feed``: the exchange is woken by each received message and, failing one, by a
    wall-clock alert ``LIVE_RELEASE_GRACE_NS`` after an item's due time, see
    ``SimParams.release_grace_ns``)."""
    if cfg.venue.fill_model == "nautilus":
        return None
    from nautilus_trader.model.identifiers import InstrumentId, Venue

    from adapters.sim.exec_client import QueueSimExecutionClient

    k = engine.kernel
    iid = InstrumentId.from_str(instrument_id)
    params = queue_sim_params(cfg)
    if live_feed:
        from dataclasses import replace

        params = replace(params, release_grace_ns=LIVE_RELEASE_GRACE_NS)
    client = QueueSimExecutionClient(iid, params, k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, iid.venue)  # risk guards' commands too
    return client
