"""``mmbot live --env shadow`` on a ``[portfolio]``: several instruments in one live node
(docs/portfolio.md, "Modes").

The node is placed as a portfolio backtest's (``mmbot.builders.build_portfolio_run_config``): per
instrument, in the config's order, one market maker (order id tag ``000``, ``001``, ...), one run
ledger (``RunLedger-<label>``) and its guards (``Risk-<guard>-<label>``, the member config with its
override table); for the node one risk supervisor with a trading state per instrument, one kill
switch over every instrument and the ``[risk.portfolio]`` guard; one execution client for all
(shadow: ``adapters.sim.router.QueueSimRouter``, a queue simulator per instrument); one public data
client on one socket for every instrument (``RawPublicDataClient`` with ``instrument_ids``), whose
recorder writes one day file per symbol.

Start (``books_ready``): a backtest of the recording replays the instruments' common window, from
the first message at which every instrument has a book, each instrument warmed up on its own data
before it (mmbot/backtest/portfolio.py). The shadow strategies start at the same message: they are
built with ``quote_from_ns`` in the far future, and the raw client publishes the receive stamp of
the message that made every book valid before the node sees it; the run sets it as every
strategy's ``quote_from_ns`` (the backtest builder's rule), so the replay takes the same decisions.
"""

from __future__ import annotations

from pathlib import Path

from mmbot.config.backtest import ConfigError

BOOKS_READY_TOPIC = "mmbot.shadow.books_ready"
QUOTE_LATER_NS = 2**62  # quote_from_ns until every instrument has a book (module docstring)
NODE_WIDE = ("RiskSupervisor", "Risk-kill_switch", "Risk-portfolio")


def instruments_of(cfg) -> list[str]:
    """The node's instruments: ``[portfolio] instruments`` or ``[run.instrument]``."""
    return list(cfg.portfolio.instruments) if cfg.portfolio is not None else [cfg.run.instrument]


def run_label(cfg) -> str:
    """One name for the node's instruments (lock file, banner): ``XRPUSDT+BTCUSDT``."""
    return "+".join(i.split("-")[0] for i in instruments_of(cfg))


def check_instruments_listed(cfg) -> None:
    """Shadow runs on the shipped Bybit definitions (adapters/definitions): an instrument without
    one is refused in one line before anything connects (the simulator could not be built)."""
    from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry

    registry = InstrumentRegistry()
    for iid in instruments_of(cfg):
        if not iid.endswith("-LINEAR.BYBIT"):
            raise ConfigError(f"{cfg.origin('portfolio.instruments')}: portfolio.instruments: live modes support "
                              f"Bybit linear perpetuals (SYMBOL-LINEAR.BYBIT), got {iid}")
        try:
            registry.get_by_id(iid)
        except InstrumentDefinitionError as e:
            raise ConfigError(f"{cfg.origin('portfolio.instruments')}: portfolio.instruments: {iid} is not a "
                              f"listed Bybit linear instrument ({e})") from None


def portfolio_node_parts(cfg, *, env: str, account: str, audit_path: str, run_dir: Path | None,
                         exec_client_id: str | None, quote_from_ns: int = 0) -> tuple[list, list]:
    """(strategies, actors) of a several-instrument live node: the placement of
    ``build_portfolio_run_config`` (module docstring) with the live ledger (spilled to the run
    folder, no funding subscription)."""
    from nautilus_trader.config import ImportableActorConfig, ImportableStrategyConfig

    from mmbot.builders import (
        STRATEGY_CONFIG_PATH, STRATEGY_PATH, instrument_label, portfolio_allocator_configs, risk_actor_configs,
        strategy_config, strategy_tag,
    )
    from mmbot.live.node import live_ledger_config

    members = cfg.instrument_configs()
    instruments = list(members)
    strategies, actors, node_wide = [], [], set()
    for index, (iid, member) in enumerate(members.items()):
        params = {**strategy_config(member, iid).config, "order_id_tag": strategy_tag(index)}
        if exec_client_id:
            params["exec_client_id"] = exec_client_id
        if quote_from_ns:
            params["quote_from_ns"] = quote_from_ns
        strategies.append(ImportableStrategyConfig(strategy_path=STRATEGY_PATH, config_path=STRATEGY_CONFIG_PATH,
                                                   config=params))
        ledger = live_ledger_config(member, iid, None if run_dir is None else Path(run_dir) / instrument_label(iid))
        actors.append(ImportableActorConfig(actor_path=ledger.actor_path, config_path=ledger.config_path,
                                            config={**ledger.config, "component_id": f"RunLedger-{instrument_label(iid)}"}))
        for guard in risk_actor_configs(member, iid, audit_path, env=env, account=account, instruments=instruments):
            name = guard.config.get("component_id", "")
            if name in NODE_WIDE:
                if name in node_wide:
                    continue
                node_wide.add(name)  # one supervisor (audit chain), one kill switch, one portfolio guard
                extra = {}
                if name == "RiskSupervisor" and len(instruments) > 1:
                    extra = {"per_instrument": True}  # a trading state per instrument
                if name == "Risk-kill_switch":
                    extra = {"instrument_id": None}   # halts every instrument, cancels every order
                actors.append(ImportableActorConfig(actor_path=guard.actor_path, config_path=guard.config_path,
                                                    config={**guard.config, **extra}))
                continue
            actors.append(ImportableActorConfig(actor_path=guard.actor_path, config_path=guard.config_path,
                                                config={**guard.config, "component_id": f"{name}-{instrument_label(iid)}"}))
    # [portfolio.allocator]: the backtest's scoreboard and allocator (their timers run on the loop:
    # loop_dispatcher); their budgets follow the live clock, so a shadow with the allocator on is
    # not replayed order for order by a backtest (docs/portfolio.md, "Shadow")
    actors += portfolio_allocator_configs(cfg)
    return strategies, actors


def risk_engine_limits(cfg) -> dict:
    """``LiveRiskEngineConfig`` fields: ``[risk.engine]`` for every instrument of the node."""
    risk = cfg.risk
    if risk is None or not risk.enabled:
        return {"bypass": False}
    e = risk.engine
    return {"bypass": False, "max_order_submit_rate": e.max_order_submit_rate,
            "max_order_modify_rate": e.max_order_modify_rate,
            "max_notional_per_order": {iid: str(e.max_notional_per_order) for iid in instruments_of(cfg)}
            if e.max_notional_per_order > 0 else {}}


def resolve_members_sizing(cfg, resolve_one):
    """Sizes in USDT notional of every instrument, each at its own venue mark price, before
    anything connects: ``resolve_one(member) -> (member, record | None)``. Returns (cfg with the
    resolved members, {instrument id: record} or None)."""
    import msgspec

    if cfg.portfolio is None:
        return resolve_one(cfg)
    members, records = {}, {}
    for iid, member in cfg.instrument_configs().items():
        members[iid], record = resolve_one(member)
        if record is not None:
            records[iid] = record
    cfg = msgspec.structs.replace(cfg, portfolio=msgspec.structs.replace(cfg.portfolio, members=members))
    return cfg, records or None


def install_shadow_router(node, cfg):
    """Shadow's ONE execution client for every instrument (adapters/sim/router.py): a live-feed
    queue simulator per instrument (``install_queue_sim(live_feed=True)``'s parameters, venue order
    ids, trade ids and alerts prefixed with the instrument's label, the first opening the shared
    account), registered for the venue. Returns the router."""
    from dataclasses import replace

    from adapters.sim.exec_client import CLIENT_ID
    from mmbot.builders import LIVE_RELEASE_GRACE_NS, queue_sim_params, register_queue_sim_router

    params = replace(queue_sim_params(cfg), release_grace_ns=LIVE_RELEASE_GRACE_NS)
    return register_queue_sim_router(node.kernel, {iid: params for iid in instruments_of(cfg)}, CLIENT_ID)


def install_instrument_states(node, execute):
    """A trading state per instrument (strategies/risk/instrument_state.py) in front of
    ``execute`` (the handler on ``RiskEngine.execute``), bound to the ``per_instrument`` supervisor,
    and ``max_notional_per_order`` in front of that: NotionalLimit -> InstrumentStateCheck ->
    RiskEngine, the backtest's chain (``install_instrument_state_check``). Returns the check, None
    without a per-instrument supervisor (then the notional check alone)."""
    from mmbot.builders import install_pretrade_check
    from strategies.risk.instrument_state import InstrumentStateCheck
    from strategies.risk.supervisor import RiskSupervisor

    k = node.kernel
    supervisor = next((a for a in node.trader.actors() if isinstance(a, RiskSupervisor)), None)
    if supervisor is None or not supervisor.config.per_instrument:
        install_pretrade_check(k, execute)
        return None
    check = InstrumentStateCheck(k.risk_engine, k.msgbus, k.cache, k.portfolio)
    check.install(execute)
    supervisor.bind_instrument_check(check)
    install_pretrade_check(k, check.execute)
    return check


def start_quoting_at_books_ready(node) -> None:
    """Every strategy's ``quote_from_ns`` = the receive stamp the raw client publishes on
    ``BOOKS_READY_TOPIC`` (module docstring), set before that message reaches the node."""
    def on_ready(ts_init: int) -> None:
        for strategy in node.trader.strategies():
            strategy._quote_from_ns = int(ts_init)  # noqa: SLF001 (the builder's key, set late)

    node.kernel.msgbus.subscribe(topic=BOOKS_READY_TOPIC, handler=on_ready)


def write_portfolio_session_report(run, cfg, run_dir: Path, *, env: str, halted: dict | None = None) -> dict | None:
    """The end-of-session report of a ``[portfolio]`` (shadow): the backtest's portfolio report
    (mmbot/backtest/portfolio.py), a section per instrument from its own ledger, over one window
    for all (from the instant every instrument had a book to the session's last event, exchange
    clock), with ``metadata.session``; fills/orders/equity parquet with an ``instrument_id``
    column. None (and a log line) when an instrument saw no market data."""
    from mmbot.backtest.ledger import RunLedger
    from mmbot.backtest.run import _collect, risk_components, simulator_section
    from mmbot.builders import DataWindow, strategy_config_dict
    from mmbot.live.node import log_json
    from mmbot.live.session import _iso, venue_label
    from mmbot.report import portfolio as P
    from nautilus_trader.model.identifiers import InstrumentId

    node = run.node
    members = cfg.instrument_configs()
    ledgers = {str(a.instrument_id): a for a in node.trader.actors() if isinstance(a, RunLedger)}
    strategies = {str(s.config.instrument_id): s for s in node.trader.strategies()}
    firsts, lasts = [], []
    for iid in members:
        ledger = ledgers.get(iid)
        if ledger is None or iid not in strategies or node.cache.instrument(InstrumentId.from_str(iid)) is None:
            log_json("report_skipped", "WARNING", reason=f"no ledger, strategy or instrument for {iid}")
            return None
        mid_ts, _ = ledger.mids("exchange")
        if len(mid_ts) == 0:
            log_json("report_skipped", "WARNING", reason=f"no market data of {iid} reached the node: nothing to report")
            return None
        fill_ts = ledger.fills_frame()["ts_event_ns"].to_numpy()
        firsts.append(int(mid_ts[0]))
        lasts.append(int(max(mid_ts[-1], fill_ts.max())) if len(fill_ts) else int(mid_ts[-1]))
    start_ns = max(firsts)
    end_ns = max(max(lasts), start_ns + 1)
    window = DataWindow(start_ns, end_ns)
    events = int(getattr(node.kernel.data_engine, "data_count", 0))
    supervisor, guards = risk_components(node)
    sections = {}
    for iid, member in members.items():
        instrument = node.cache.instrument(InstrumentId.from_str(iid))
        res = _collect(member, ledgers[iid], strategies[iid], instrument, None,
                       node.cache.positions_open(instrument_id=instrument.id), window,
                       strategy_config_dict(member, iid), events, None, clock="exchange",
                       starting_balance=cfg.venue.starting_balance_usdt)
        res["metrics"].pop("replay", None)
        res["metrics"]["strategy"]["position_base_at_end"] = float(strategies[iid].position_base)
        sims = getattr(run.qsim, "sims", None)
        if sims is not None and instrument.id in sims:
            res["metrics"]["simulator"] = simulator_section(sims[instrument.id].stats)
        if supervisor is not None:
            res["metrics"]["risk"]["guards"] = supervisor.report([g for g in guards if g._iid_str == iid], end_ns,
                                                                 instrument_id=iid)
        sections[iid] = res
    metadata, metrics = P.portfolio_report(cfg, sections, {iid: window for iid in members})
    metrics["replay"] = {"stream_rows": events, "cache_orders_at_end": len(node.cache.orders())}
    if run.qsim is not None and hasattr(run.qsim, "unrouted_commands"):
        metrics["simulator"] = {**simulator_section(run.qsim.stats), "unrouted_commands": run.qsim.unrouted_commands}
    from strategies.portfolio.allocator import AllocatorActor
    from strategies.portfolio.scoreboard import ScoreboardActor

    allocator = next((a for a in node.trader.actors() if isinstance(a, AllocatorActor)), None)
    if allocator is not None:  # budgets over time and the final scoreboard, as in the backtest
        board = next((a for a in node.trader.actors() if isinstance(a, ScoreboardActor)), None)
        metrics["portfolio"]["allocator"] = allocator.report(board.report() if board is not None else None)
    if supervisor is not None:
        metrics["risk"] = supervisor.report([g for g in guards if g._iid_str is None], end_ns)
    metadata["session"] = {
        "kind": "shadow" if env == "shadow" else "live", "environment": env, "venue": venue_label(env),
        "started": _iso(run.started_ns), "stopped": _iso(run.stopped_ns or run.started_ns),
        "stop_reason": run.stop_reason, "exit_code": run.exit_code,
        # instrument id -> local time the strategies were asked to stop (mmbot compare's cut)
        "strategy_stop_ns": getattr(run, "strategy_stop_ns", None),
        # shadow: instrument id -> exchange time below which every market event was received then
        "stop_received_through_ns": getattr(run, "stop_received_through_ns", None),
    }
    if halted is not None:
        metadata["started_halted"] = halted
    report = P.write_portfolio_files(run_dir, cfg, metadata, metrics, sections)
    log_json("report", run_dir=str(run_dir), fills=int(sum(len(s["_frames"][0]) for s in sections.values())),
             net_pnl=metrics["portfolio"]["pnl"].get("net_pnl"))
    # the summary line reads metrics.pnl / metrics.counts: the portfolio's sums
    return {"metadata": report["metadata"], "metrics": {**report["metrics"], "pnl": metrics["portfolio"]["pnl"],
                                                        "counts": metrics["portfolio"]["counts"]}}
