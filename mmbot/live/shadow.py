"""``mmbot live --env shadow``: real Bybit public data, mmbot's queue simulator as the venue.

The node is the live ``TradingNode`` with the same strategy, risk actors and RiskEngine limits
as every other mode (``mmbot.builders``) and the same simulator as the backtest
(``install_queue_sim``: ``QueueSimExecutionClient``, ``[venue]`` keys, calibration file, seed).
There is no Bybit execution client at all and no API key: nothing is ever sent to the exchange.
Market data: ``adapters.recorder.RawPublicDataClient`` with ``feed = true`` (the public
WebSocket, parsed by the catalog importer's converters, ``ts_init`` = the recorded
``local_ts_ns``), so ``mmbot catalog import`` of the recording replays the rows the node saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nautilus_trader.model.identifiers import InstrumentId

from mmbot.config.backtest import ConfigError
from mmbot.live.node import (  # noqa: F401
    LiveRun, LiveSection, StartupOrderPolicy, TRADER_ID, cache_purge_settings, live_audit_path, live_ledger_config,
    log_json,
    metrics_actor_config, metrics_actor_configs, node_config_common, node_portfolio_limits,
)
from mmbot.live.recording import recorder_actor_config, recording_dir, recording_enabled

DATA_ENVS = ("mainnet", "testnet")


def build_shadow_node_config(cfg, live: LiveSection, data_env: str, *, run_dir: Path, metrics_port: int = -1,
                             kill_token: str = ""):
    from nautilus_trader.config import (
        ImportableStrategyConfig, LiveExecEngineConfig, LiveRiskEngineConfig, TradingNodeConfig,
    )

    from adapters.recorder import BYBIT_PUBLIC_LINEAR, RawPublicDataClientConfig
    from adapters.sim.exec_client import CLIENT_ID
    from mmbot.builders import VENUE, check_instrument_fit_shipped, risk_actor_configs, risk_engine_config, strategy_config

    instrument_id = cfg.run.instrument
    if cfg.portfolio is not None and cfg.venue.fill_model != "nautilus" and data_env in DATA_ENVS:
        return _build_shadow_portfolio_config(cfg, live, data_env, run_dir=run_dir, metrics_port=metrics_port,
                                              kill_token=kill_token)
    if cfg.venue.fill_model == "nautilus":
        raise ConfigError(f"{cfg.source}: venue.fill_model: shadow mode needs the queue simulator "
                          "(risk_averse, prob_power or prob_log), got 'nautilus'")
    if data_env not in DATA_ENVS:
        raise ConfigError(f"--data-env {data_env!r}: must be one of {', '.join(DATA_ENVS)}")
    check_instrument_fit_shipped(cfg, instrument_id)  # sizes vs the symbol's order rules, before connecting
    url = live.base_url_ws_public or BYBIT_PUBLIC_LINEAR[data_env]
    from strategies.risk.base import DATA_STATUS_TOPIC

    data_client = RawPublicDataClientConfig(url=url, instrument_id=instrument_id, feed=True,
                                            status_topic=DATA_STATUS_TOPIC)
    strategy = strategy_config(cfg, instrument_id)
    strategy = ImportableStrategyConfig(strategy_path=strategy.strategy_path, config_path=strategy.config_path,
                                        config={**strategy.config, "exec_client_id": CLIENT_ID})
    rec = risk_engine_config(cfg, instrument_id)
    actors = [
        live_ledger_config(cfg, instrument_id, run_dir),  # the end-of-session report (mmbot/live/session.py)
        *risk_actor_configs(cfg, instrument_id, live_audit_path(cfg, run_dir), env="shadow", account=live.account),
        # Shadow has no venue account: equity and /ready follow the simulator's account (the
        # QueueSimExecutionClient's id + "-001", see its _start).
        metrics_actor_config(instrument_id, live, metrics_port, kill_token, "shadow", account_id=f"{CLIENT_ID}-001"),
    ]
    if recording_enabled(live):
        actors.append(recorder_actor_config(instrument_id, live, recording_dir(cfg, live, run_dir)))
    return TradingNodeConfig(
        **node_config_common(live, run_dir, trader_id=TRADER_ID),
        risk_engine=LiveRiskEngineConfig(**{f: getattr(rec, f) for f in rec.__struct_fields__},
                                         graceful_shutdown_on_exception=True),
        exec_engine=LiveExecEngineConfig(reconciliation=False, graceful_shutdown_on_exception=True,
                                         **cache_purge_settings(live)),
        data_clients={VENUE: data_client},
        exec_clients={},
        strategies=[strategy],
        actors=actors,
    )


def _build_shadow_portfolio_config(cfg, live: LiveSection, data_env: str, *, run_dir: Path, metrics_port: int,
                                   kill_token: str):
    """A ``[portfolio]`` in shadow (mmbot/live/portfolio.py): every instrument on one public
    socket, a market maker, ledger and guards per instrument, one simulator router for all."""
    from nautilus_trader.config import LiveExecEngineConfig, LiveRiskEngineConfig, TradingNodeConfig

    from adapters.recorder import BYBIT_PUBLIC_LINEAR, RawPublicDataClientConfig
    from adapters.sim.exec_client import CLIENT_ID
    from mmbot.builders import VENUE, check_instrument_fit_shipped
    from mmbot.live.portfolio import (
        BOOKS_READY_TOPIC, QUOTE_LATER_NS, check_instruments_listed, instruments_of, portfolio_node_parts,
        risk_engine_limits,
    )
    from strategies.risk.base import DATA_STATUS_TOPIC

    check_instruments_listed(cfg)
    for iid, member in cfg.instrument_configs().items():
        check_instrument_fit_shipped(member, iid)  # sizes vs each symbol's order rules, before connecting
    instruments = instruments_of(cfg)
    several = len(instruments) > 1
    url = live.base_url_ws_public or BYBIT_PUBLIC_LINEAR[data_env]
    data_client = RawPublicDataClientConfig(url=url, instrument_id=instruments[0], instrument_ids=tuple(instruments),
                                            feed=True, status_topic=DATA_STATUS_TOPIC,
                                            books_ready_topic=BOOKS_READY_TOPIC if several else "")
    strategies, actors = portfolio_node_parts(cfg, env="shadow", account=live.account,
                                              audit_path=live_audit_path(cfg, run_dir), run_dir=run_dir,
                                              exec_client_id=CLIENT_ID, quote_from_ns=QUOTE_LATER_NS if several else 0)
    actors += metrics_actor_configs(instruments, live, metrics_port, kill_token, "shadow",
                                    account_id=f"{CLIENT_ID}-001", group=str(run_dir),
                                    portfolio_limits=node_portfolio_limits(cfg))
    if recording_enabled(live):
        actors.append(recorder_actor_config(instruments[0], live, recording_dir(cfg, live, run_dir),
                                            instrument_ids=instruments))
    return TradingNodeConfig(
        **node_config_common(live, run_dir, trader_id=TRADER_ID),
        risk_engine=LiveRiskEngineConfig(**risk_engine_limits(cfg), graceful_shutdown_on_exception=True),
        exec_engine=LiveExecEngineConfig(reconciliation=False, graceful_shutdown_on_exception=True,
                                         **cache_purge_settings(live)),
        data_clients={VENUE: data_client},
        exec_clients={},
        strategies=strategies,
        actors=actors,
    )


class ShadowRun(LiveRun):
    """``LiveRun`` with the raw public data client and the queue simulator as the venue (a
    ``[portfolio]``: one simulator per instrument behind one router, mmbot/live/portfolio.py)."""

    def __init__(self, node_config, cfg, duration_s=None, **kwargs) -> None:
        from mmbot.live.portfolio import instruments_of

        super().__init__(node_config, cfg.run.instrument if cfg.portfolio is None else instruments_of(cfg)[0],
                         duration_s, **kwargs)
        self.cfg = cfg
        self.instrument_ids = instruments_of(cfg)
        self.qsim = None

    def _readiness(self, elapsed_s: float) -> str:
        """Shadow's readiness (exit 4 when not reached, as live): the public data client connected
        and a two-sided book of the instrument, both within ``live.timeout_connection_s``, and the
        strategy running. "" = ready; "wait"; else the one line."""
        conn_s, _ = self.ready_timeouts
        if not self.node.kernel.data_engine.check_connected():
            if elapsed_s < conn_s:
                return "wait"
            return (f"not ready: public data client not connected within live.timeout_connection_s = {conn_s:g}s "
                    "(see nautilus.jsonl in the run directory); check live.base_url_ws_public and the network")
        if not self._book_valid():
            if elapsed_s < conn_s:
                return "wait"
            return (f"not ready: no two-sided order book of {', '.join(self._no_book())} within "
                    f"live.timeout_connection_s = {conn_s:g}s (the public stream sends no book data)")
        strategies = self.node.trader.strategies()
        if not self.node.trader.is_running or not strategies or not all(st.is_running for st in strategies):
            if elapsed_s < conn_s + 5.0:
                return "wait"
            return f"not ready: the strategy did not start on {self.instrument_id} (see nautilus.jsonl in the run directory)"
        return ""

    def _no_book(self) -> list[str]:
        """The instruments without a two-sided book yet."""
        out = []
        for iid in self.instrument_ids:
            book = self.node.cache.order_book(InstrumentId.from_str(iid))
            if book is None or book.best_bid_price() is None or book.best_ask_price() is None:
                out.append(iid)
        return out

    def _book_valid(self) -> bool:
        return not self._no_book()

    def _stopped_before_ready(self, elapsed_s: float) -> str:
        state = ("public data client not connected" if not self.node.kernel.data_engine.check_connected() else
                 "no two-sided book yet" if not self._book_valid() else "the strategy not started yet")
        return (f"not ready: stopped ({self.stop_reason or 'stop'}) after {elapsed_s:.0f}s, before the run was "
                f"ready ({state})")

    def _strategy_stop_instants(self) -> dict[str, int]:
        """The simulator's local time at the stop, per instrument, after it applied every item due
        by then (``QueueSimExecutionClient.catch_up_for_stop``): the strategies have handled every
        message and simulator event up to that instant and decide nothing after it, which is where
        the replay of the recording is comparable (``mmbot compare``)."""
        if self.qsim is None:
            return super()._strategy_stop_instants()
        if hasattr(self.qsim, "sims"):  # a [portfolio]: QueueSimRouter, one simulator per instrument
            stops = self.qsim.catch_up_for_stop()
            self.stop_received_through_ns = self.qsim.received_through_ns()
            return stops
        stop = self.qsim.catch_up_for_stop()
        self.stop_received_through_ns = {self.instrument_id: self.qsim.received_through_ns()}
        return {self.instrument_id: stop}

    def account(self):
        """The simulator's account books the session's fills."""
        return self.node.cache.account(self.qsim.account_id) if self.qsim is not None else None

    def build(self):
        import asyncio

        from nautilus_trader.live.node import TradingNode

        from adapters.recorder import RawPublicDataClientFactory
        from mmbot.builders import VENUE, install_queue_sim

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        node = TradingNode(config=self.node_config, loop=loop)
        node.add_data_client_factory(VENUE, RawPublicDataClientFactory)
        node.build()
        # The simulator reads the instrument on start (before the data client connects): the same
        # shipped definition the data client and `mmbot catalog import` use.
        from adapters.instruments import InstrumentRegistry

        for iid in self.instrument_ids:
            node.kernel.cache.add_instrument(InstrumentRegistry().get_by_id(iid))
        if self.cfg.portfolio is None:
            self.qsim = install_queue_sim(node, self.cfg, self.instrument_id, live_feed=True)
        else:  # one simulator per instrument behind one execution client
            from mmbot.live.portfolio import install_shadow_router, start_quoting_at_books_ready

            self.qsim = install_shadow_router(node, self.cfg)
            start_quoting_at_books_ready(node)
        handlers = _synchronous_engines(node.kernel)
        if self.cfg.portfolio is None:
            from mmbot.builders import install_pretrade_check

            install_pretrade_check(node.kernel, handlers["RiskEngine.execute"])  # max_notional_per_order
        else:  # per-instrument trading states, then max_notional_per_order
            from mmbot.live.portfolio import install_instrument_states

            install_instrument_states(node, handlers["RiskEngine.execute"])
        _synchronous_data(node.kernel, self.qsim)
        # The simulator's alerts do their work on the event loop's thread, between two handlers,
        # never inside one (Nautilus runs LiveClock callbacks on a timer thread).
        self.qsim.run_on_loop = _poster(loop)
        # The live ExecEngine connects/disconnects its clients; the simulator has nothing to connect.
        self.qsim.connect = lambda: None
        self.qsim.disconnect = lambda: self.qsim._set_connected(False)
        from strategies.risk.supervisor import RiskSupervisor

        for actor in node.trader.actors():
            if isinstance(actor, RiskSupervisor):
                actor.bind_risk_engine(node.kernel.risk_engine)
        self.node = node
        self.watch_shutdown(node)
        self._attach_console(node)
        return node


def _synchronous_engines(kernel) -> dict:
    """Commands and order events take the direct path, as in a backtest, instead of the live
    engines' asyncio queues: the strategy sees the simulator's acks and fills before the next
    market-data message and the simulator gets commands while their message is being handled, so
    a replay of the recording takes the same decisions (docs/shadow.md). Safe here: the only
    execution client is the in-process simulator."""
    from nautilus_trader.execution.engine import ExecutionEngine
    from nautilus_trader.risk.engine import RiskEngine

    bus = kernel.msgbus
    handlers = {}
    for endpoint, engine, base, name in (("RiskEngine.execute", kernel.risk_engine, RiskEngine, "execute"),
                                         ("ExecEngine.execute", kernel.exec_engine, ExecutionEngine, "execute"),
                                         ("ExecEngine.process", kernel.exec_engine, ExecutionEngine, "process")):
        bus.deregister(endpoint=endpoint, handler=getattr(engine, name))
        base_method = getattr(base, name)
        handlers[endpoint] = lambda msg, e=engine, m=base_method: m(e, msg)
        bus.register(endpoint=endpoint, handler=handlers[endpoint])
    return handlers


def _poster(loop):
    """``post(fn, *args)``: run ``fn(*args)`` on ``loop``'s thread (from any thread); nothing once
    the loop is closed (an alert firing after the session ended has nothing left to apply)."""

    def post(fn, *args) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            pass

    return post


def _synchronous_data(kernel, qsim) -> None:
    """Market data takes the DataEngine's direct (backtest) path instead of the live engine's
    asyncio queue, and after each item the simulator is told the message has been handled
    (``QueueSimExecutionClient.message_handled``). So a frame is stamped, applied to the book and
    handled by the strategy and the guards in one step: the commands sent meanwhile carry the
    frame's receive stamp however long the handlers take in wall time, and no timer or simulator
    alert can run between a frame's stamp and its handling (under load a queued frame let an alert
    apply an item before a message stamped earlier). The decisions then depend on the receive
    stamps only, as in the replay of the recording (docs/shadow.md)."""
    from nautilus_trader.data.engine import DataEngine

    engine = kernel.data_engine
    bus = kernel.msgbus
    bus.deregister(endpoint="DataEngine.process", handler=engine.process)
    process, handled = DataEngine.process, qsim.message_handled

    def process_now(data) -> None:
        try:
            process(engine, data)
        finally:
            handled()

    bus.register(endpoint="DataEngine.process", handler=process_now)


def _resolve_shadow_sizing(cfg, live, data_env: str):
    """Sizes in USDT notional for shadow: priced at the mark price of the venue whose public data
    it replays (``live.base_url_http`` or Nautilus' REST host for ``data_env``), on the shipped
    instrument definition its simulator runs on (mmbot/live/sizing.py). A ``[portfolio]``: every
    instrument at its own mark price, all before anything connects (record per instrument id)."""
    from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
    from mmbot.config.sizing import config_notional_items
    from mmbot.live.sizing import resolve_live_sizing

    if cfg.portfolio is not None:
        from mmbot.live.portfolio import resolve_members_sizing

        return resolve_members_sizing(cfg, lambda member: _resolve_shadow_sizing(member, live, data_env))
    if not config_notional_items(cfg):
        return cfg, None
    from nautilus_trader.core import nautilus_pyo3 as pyo3

    from mmbot.live.node import _bybit_env

    rest = live.base_url_http or pyo3.get_bybit_http_base_url(_bybit_env(data_env))
    try:
        instrument = InstrumentRegistry().get_by_id(cfg.run.instrument)
    except InstrumentDefinitionError:
        instrument = None  # not shipped: the venue's instruments-info
    return resolve_live_sizing(cfg, rest, live.timeout_connection_s, instrument=instrument)


def _sizing_text(cfg, sizing: dict) -> str:
    from mmbot.live.sizing import sizing_summary

    if cfg.portfolio is None:
        return sizing_summary(sizing)
    return "; ".join(f"{iid.split('-')[0]}: {sizing_summary(rec)}" for iid, rec in sizing.items())


def shadow_main(config_path: Path, duration: str | None, metrics_port: int | None, overrides: list[str],
                data_env: str) -> int:
    """The shadow run: exit 0 clean, 2 rejected, 1 internal error, 4 not ready (no data)."""
    import click

    from mmbot.builders import kill_file_path
    from mmbot.live.node import kill_token_from_env, load_live_config, parse_duration
    from mmbot.live.lock import LockHeld, LockUnusable, shadow_locks
    from mmbot.live.sizing import VenueNotReady, sizing_summary
    from mmbot.live.session import (
        halted_text, new_run_dir, started_halted, summary_line, write_session_config, write_session_report,
    )

    try:
        if not Path(config_path).exists():
            raise ConfigError(f"{config_path}: no such config file")
        cfg, live_cfg = load_live_config(Path(config_path), list(overrides), portfolio=True)
        duration_s = parse_duration(duration)
        if cfg.portfolio is not None:  # every instrument listed, before any request
            from mmbot.live.portfolio import check_instruments_listed

            check_instruments_listed(cfg)
        cfg, sizing = _resolve_shadow_sizing(cfg, live_cfg, data_env)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except VenueNotReady as e:  # not ready at start (exit 4), as a shadow run without data
        click.echo(f"error: {e}", err=True)
        return 4
    port = live_cfg.metrics_port if metrics_port is None else metrics_port
    from mmbot.live.portfolio import instruments_of, run_label, write_portfolio_session_report

    label = cfg.run.instrument if cfg.portfolio is None else run_label(cfg)
    instruments_text = ", ".join(instruments_of(cfg))
    # one lock per instrument: no other shadow on this account label may run any of them
    lock = shadow_locks(cfg.path(live_cfg.lock_dir), "shadow", live_cfg.account, instruments_of(cfg))
    try:
        lock.acquire()
    except LockHeld as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except LockUnusable as e:
        click.echo(f"error: live.lock_dir = {live_cfg.lock_dir!r}: {e}", err=True)
        return 2
    try:
        run_dir = new_run_dir(cfg.path(live_cfg.out_dir), "shadow")
        try:
            node_config = build_shadow_node_config(cfg, live_cfg, data_env, run_dir=run_dir, metrics_port=port,
                                                   kill_token=kill_token_from_env(live_cfg))
        except ConfigError as e:
            run_dir.rmdir()  # still empty: a refused session leaves nothing behind
            click.echo(f"error: {e}", err=True)
            return 2
        kill_file = kill_file_path(cfg, "shadow", live_cfg.account)
        write_session_config(run_dir, cfg, live_cfg, "shadow", kill_file=kill_file,
                             extra_paths={"run_dir": str(run_dir)}, sizing=sizing)
        halted = started_halted(cfg, "shadow", live_cfg.account)
        print(f"mmbot live  ENVIRONMENT: SHADOW (public {data_env} data, simulated fills: no orders leave this "
              f"process)   instrument: {instruments_text}   config: {cfg.source}\nrun folder: {run_dir}   "
              f"metrics port: {port}   duration: {duration_s or 'until SIGINT/SIGTERM'}"
              + (f"\nsizes from USDT notional: {_sizing_text(cfg, sizing)}" if sizing else "")
              + (f"\n{halted_text(halted)}: nothing is quoted until it is removed "
                 f"(mmbot kill --config {config_path} --env shadow --resume)" if halted else ""),
              file=sys.stderr, flush=True)
        log_json("banner", environment="shadow", data_env=data_env, instrument=instruments_text,
                 fill_model=cfg.venue.fill_model, calibration=cfg.venue.calibration, seed=cfg.run.seed,
                 run_dir=str(run_dir), duration_s=duration_s, started_halted=halted)
        reports = []
        write_report = write_session_report if cfg.portfolio is None else write_portfolio_session_report
        run = ShadowRun(node_config, cfg, duration_s, status_interval_s=live_cfg.status_interval_s,
                        ready_timeouts=(live_cfg.timeout_connection_s, 0.0),
                        after_stop=lambda r: reports.append(write_report(r, cfg, run_dir, env="shadow",
                                                                         halted=halted)))
        try:
            code = run.run()
        except Exception as e:  # noqa: BLE001
            log_json("internal_error", "ERROR", error=f"{type(e).__name__}: {e}")
            return 1
        stats = dict(run.qsim.stats) if run.qsim is not None else {}
        log_json("exit", code=code, reason=run.stop_reason, run_dir=str(run_dir), sim=stats, started_halted=halted)
        print(summary_line(code, run.stop_reason, run_dir, reports[0] if reports else None, halted), flush=True)
        if run.error:  # the one line, as the live run's (not ready, a handler exception, ...)
            click.echo(f"error: {run.error}", err=True)
        return code
    finally:
        lock.release()
        sys.stderr.flush()
