"""``mmbot live``: the live builder and run loop (Nautilus ``TradingNode`` + Bybit clients).

The builder here is the only live code that knows the mode. It takes the strategy, the risk
actors and the RiskEngine limits from ``mmbot.builders`` (the very configs the backtest
uses) and adds the Nautilus Bybit data and execution clients (linear perpetuals), the metrics
actor and the startup order policy.

Safety, in the order it is checked (every refusal exits 2 before any connection):

1. ``--env mainnet`` needs ``[live] allow_mainnet = true`` *and* ``--confirm-mainnet``.
2. Keys come from the environment or a 0600 key file (``mmbot.live.secrets``); they are masked in
   everything the process prints.
3. A second instance on the same environment, account and instrument is refused
   (``mmbot.live.lock``, an ``flock``).
4. After Nautilus' startup reconciliation (open orders, positions, fills), orders found open
   on the instrument are handled by ``StartupOrderPolicy``: ours (client order ids of this
   trader) are cancelled; foreign ones make the run stop with exit 2 unless
   ``[live] foreign_orders = "ignore"``.

SIGINT/SIGTERM or the end of ``--duration``: the node stops (the strategy cancels all its
orders with one batch cancel), waits for the venue to confirm, disconnects, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder
from nautilus_trader.model.identifiers import InstrumentId

from mmbot.config.backtest import BacktestConfig, ConfigError, _read_toml, _section, load_backtest_config, parse_override

ENVIRONMENTS = ("testnet", "demo", "mainnet")
FOREIGN_POLICIES = ("refuse", "ignore")
TRADER_ID = "MMBOT-001"
EXIT_REJECTED = 2


class LiveRefused(RuntimeError):
    """The live run must not start (or must stop): exit status 2, one line."""


class LiveSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[live]``: everything the live run needs beyond the backtest config (docs/runbook.md)."""

    environment: str = "testnet"         # default when --env is not given
    allow_mainnet: bool = False          # mainnet also needs --confirm-mainnet
    account: str = "default"             # label: banner, lock file name
    api_key_file: str = ""               # TOML file (mode 0600) with api_key, api_secret; else env vars
    # Endpoints: empty = Bybit's URLs for the environment (mirrors, regional hosts, a loopback fake).
    base_url_http: str = ""
    base_url_ws_public: str = ""
    base_url_ws_private: str = ""
    base_url_ws_trade: str = ""
    adapter_environment: str = ""        # Bybit environment flag given to the Nautilus clients; "" = the --env
    foreign_orders: str = "refuse"       # orders open at start that are not ours: refuse | ignore
    lock_dir: str = "../runs/locks"
    out_dir: str = "../runs/live"        # per-run directory: Nautilus JSON log, audit log default
    metrics_port: int = -1               # -1 = off, 0 = any free port; --metrics-port overrides
    metrics_host: str = "127.0.0.1"
    kill_token_env: str = "MMBOT_KILL_TOKEN"  # env var holding the token of POST /kill ("" = no endpoint)
    ready_max_book_age_s: float = 10.0
    log_level: str = "INFO"
    reconciliation_lookback_mins: int = 1440
    inflight_check_interval_ms: int = 2000
    inflight_check_threshold_ms: int = 5000
    open_check_interval_secs: float = 10.0  # periodic open-order check against the venue (0 = off)
    timeout_connection_s: float = 30.0
    timeout_reconciliation_s: float = 30.0
    timeout_disconnection_s: float = 10.0
    timeout_post_stop_s: float = 3.0
    instrument_status_poll_secs: int = 0    # 0 = off
    max_retries: int = 3
    ws_trade: bool = True                   # orders over the trade WebSocket (else HTTP)
    record: bool = True                     # recorder actor (adapters/recorder.py, docs/shadow.md)
    record_dir: str = ""                    # "" = <run dir>/recording
    record_required: bool = False           # a recorder write error halts quoting
    record_flush_ms: int = 1000             # flush interval = the most a crash can lose


def load_live_config(path: Path | None, overrides: list[str] = ()) -> tuple[BacktestConfig, LiveSection]:
    """The shared config (strategy, risk, run.instrument) and the ``[live]`` section."""
    cfg = load_backtest_config(path, list(overrides))
    source = str(path) if path else "<defaults>"
    raw = _read_toml(path) if path else {}
    data = dict(raw.get("live", {}))
    if not isinstance(raw.get("live", {}), dict):
        raise ConfigError(f"{source}: live: must be a table")
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] == "live" and len(keys) == 2:
            data[keys[1]] = value
    live = _section(LiveSection, data, "live", source)
    if live.environment not in ENVIRONMENTS:
        raise ConfigError(f"{source}: live.environment: {live.environment!r} is not one of {', '.join(ENVIRONMENTS)}")
    if live.adapter_environment and live.adapter_environment not in ENVIRONMENTS:
        raise ConfigError(f"{source}: live.adapter_environment: {live.adapter_environment!r} is not one of "
                          f"{', '.join(ENVIRONMENTS)}")
    if live.foreign_orders not in FOREIGN_POLICIES:
        raise ConfigError(f"{source}: live.foreign_orders: {live.foreign_orders!r} is not one of "
                          f"{', '.join(FOREIGN_POLICIES)}")
    for key in ("base_url_http", "base_url_ws_public", "base_url_ws_private", "base_url_ws_trade"):
        url = getattr(live, key)
        want = ("http://", "https://") if key == "base_url_http" else ("ws://", "wss://")
        if url and not url.startswith(want):
            raise ConfigError(f"{source}: live.{key}: must start with {' or '.join(want)}, got {url!r}")
    return cfg, live


def check_environment(env: str, live: LiveSection, confirm_mainnet: bool) -> None:
    """Mainnet needs both the config's ``allow_mainnet`` and the command's ``--confirm-mainnet``."""
    if env not in ENVIRONMENTS:
        raise LiveRefused(f"--env {env!r}: must be one of {', '.join(ENVIRONMENTS)}")
    if env == "mainnet":
        missing = [what for what, ok in (("[live] allow_mainnet = true in the config", live.allow_mainnet),
                                         ("--confirm-mainnet on the command line", confirm_mainnet)) if not ok]
        if missing:
            raise LiveRefused("mainnet refused: real money needs " + " and ".join(missing))


# -- startup order policy ---------------------------------------------------------------------

class StartupOrderPolicyConfig(ActorConfig, frozen=True):
    instrument_id: InstrumentId
    trader_tag: str = "001"
    foreign_orders: str = "refuse"


def is_own_order_id(client_order_id: str, trader_tag: str) -> bool:
    """Nautilus client order ids are ``O-YYYYMMDD-HHMMSS-<trader tag>-<strategy tag>-<n>``."""
    return re.match(rf"^O-\d{{8}}-\d{{6}}-{re.escape(trader_tag)}-", client_order_id) is not None


class StartupOrderPolicy(Actor):
    """Runs once after Nautilus' startup reconciliation (actors start after it, before the
    strategy): cancels our own orders left open on the instrument; foreign orders either make
    the run refuse (kill switch halt + ``refused`` for the run loop) or are left alone."""

    def __init__(self, config: StartupOrderPolicyConfig) -> None:
        super().__init__(config)
        self.own_cancelled: list[str] = []
        self.foreign: list[str] = []
        self.refused: str = ""

    def on_start(self) -> None:
        c = self.config
        now = self.clock.timestamp_ns()
        for order in self.cache.orders_open(instrument_id=c.instrument_id):
            coid = order.client_order_id.value
            if is_own_order_id(coid, c.trader_tag):
                if not order.is_pending_cancel:
                    self.msgbus.send(endpoint="ExecEngine.execute", msg=CancelOrder(
                        trader_id=self.trader_id, strategy_id=order.strategy_id, instrument_id=order.instrument_id,
                        client_order_id=order.client_order_id, venue_order_id=order.venue_order_id,
                        command_id=UUID4(), ts_init=now))
                self.own_cancelled.append(coid)
            else:
                self.foreign.append(coid)
        if self.own_cancelled:
            self.log.warning(f"startup: cancelling {len(self.own_cancelled)} own order(s) left open: {self.own_cancelled}")
        if self.foreign:
            msg = (f"startup: {len(self.foreign)} foreign open order(s) on {c.instrument_id} "
                   f"(venue ids / client ids {self.foreign[:5]})")
            if c.foreign_orders == "refuse":
                self.refused = msg + "; refusing to run (set [live] foreign_orders = \"ignore\" to quote beside them)"
                self.log.error(self.refused)
                from strategies.risk.base import KILL_ENDPOINT

                try:  # halt before the strategy can quote; the run loop then stops the node
                    self.msgbus.send(endpoint=KILL_ENDPOINT, msg={"action": "kill", "reason": "foreign orders at start",
                                                                  "source": "startup"})
                except Exception:  # noqa: BLE001 (no kill switch configured)
                    pass
            else:
                self.log.warning(msg + "; left alone (foreign_orders = \"ignore\")")


# -- the builder ------------------------------------------------------------------------------

def _bybit_env(name: str):
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment

    return {"mainnet": BybitEnvironment.MAINNET, "testnet": BybitEnvironment.TESTNET,
            "demo": BybitEnvironment.DEMO}[name]


def build_live_node_config(cfg: BacktestConfig, live: LiveSection, env: str, creds, *, run_dir: Path,
                           metrics_port: int = -1, kill_token: str = ""):
    """The ``TradingNodeConfig``: same strategy, risk actors and RiskEngine limits as the backtest
    (``mmbot.builders``), plus the Bybit clients, the metrics actor and the startup policy, and
    with ``[live] record`` the recorder and its raw public tap (``mmbot.live.recording``)."""
    from nautilus_trader.adapters.bybit.config import BybitExecClientConfig
    from nautilus_trader.config import (
        ImportableActorConfig,
        InstrumentProviderConfig,
        LiveExecEngineConfig,
        LiveRiskEngineConfig,
        TradingNodeConfig,
    )
    from nautilus_trader.core.nautilus_pyo3 import BybitProductType

    from adapters.bybit_live import MmbotBybitDataClientConfig
    from mmbot.builders import VENUE, risk_actor_configs, risk_engine_config, strategy_config
    from mmbot.live.recording import (
        RAW_TAP_CLIENT, raw_tap_client_config, recorder_actor_config, recording_dir, recording_enabled,
    )

    instrument_id = cfg.run.instrument
    if not instrument_id.endswith("-LINEAR.BYBIT"):
        raise ConfigError(f"{cfg.source}: run.instrument: live trading supports Bybit linear perpetuals "
                          f"(SYMBOL-LINEAR.BYBIT), got {instrument_id}")
    adapter_env = _bybit_env(live.adapter_environment or env)
    products = (BybitProductType.LINEAR,)
    provider = InstrumentProviderConfig(load_all=False, load_ids=frozenset([instrument_id]))
    url = lambda v: v or None  # noqa: E731
    data_client = MmbotBybitDataClientConfig(
        api_key=creds.api_key, api_secret=creds.api_secret, product_types=products, environment=adapter_env,
        base_url_http=url(live.base_url_http), base_url_ws_public=url(live.base_url_ws_public),
        instrument_provider=provider, max_retries=live.max_retries,
        instrument_status_poll_secs=live.instrument_status_poll_secs or None,
    )
    exec_client = BybitExecClientConfig(
        api_key=creds.api_key, api_secret=creds.api_secret, product_types=products, environment=adapter_env,
        base_url_http=url(live.base_url_http), base_url_ws_private=url(live.base_url_ws_private),
        base_url_ws_trade=url(live.base_url_ws_trade), instrument_provider=provider, max_retries=live.max_retries,
        use_http_batch_api=not live.ws_trade,
    )
    rec = risk_engine_config(cfg, instrument_id)
    risk_engine = LiveRiskEngineConfig(**{f: getattr(rec, f) for f in rec.__struct_fields__})
    trader_tag = TRADER_ID.split("-")[-1]
    actors = [
        *risk_actor_configs(cfg, instrument_id, live_audit_path(cfg, run_dir)),
        metrics_actor_config(instrument_id, live, metrics_port, kill_token, env),
        ImportableActorConfig(actor_path="mmbot.live.node:StartupOrderPolicy",
                              config_path="mmbot.live.node:StartupOrderPolicyConfig",
                              config={"instrument_id": instrument_id, "trader_tag": trader_tag,
                                      "foreign_orders": live.foreign_orders, "component_id": "StartupOrderPolicy"}),
    ]
    data_clients = {VENUE: data_client}
    if recording_enabled(live):
        # Nautilus' Rust Bybit client exposes no raw frames: a second public socket (feed = false)
        # taps them for the recorder, beside the data client that feeds the node (adapters/recorder.py).
        data_clients[RAW_TAP_CLIENT] = raw_tap_client_config(instrument_id, live, live.adapter_environment or env)
        actors.append(recorder_actor_config(instrument_id, live, recording_dir(cfg, live, run_dir)))
    return TradingNodeConfig(
        **node_config_common(live, run_dir),
        risk_engine=risk_engine,
        exec_engine=LiveExecEngineConfig(
            reconciliation=True, reconciliation_lookback_mins=live.reconciliation_lookback_mins or None,
            reconciliation_instrument_ids=[InstrumentId.from_str(instrument_id)],
            inflight_check_interval_ms=live.inflight_check_interval_ms,
            inflight_check_threshold_ms=live.inflight_check_threshold_ms,
            open_check_interval_secs=live.open_check_interval_secs or None,
            reconciliation_startup_delay_secs=1.0,
            graceful_shutdown_on_exception=True,
        ),
        data_clients=data_clients,
        exec_clients={VENUE: exec_client},
        strategies=[strategy_config(cfg, instrument_id)],
        actors=actors,
    )


def live_audit_path(cfg: BacktestConfig, run_dir: Path) -> str:
    """The risk audit log: ``[risk.audit] file`` or ``<run dir>/audit.jsonl``; "" when off."""
    if cfg.risk is None or not cfg.risk.enabled or not cfg.risk.audit.enabled:
        return ""
    return str(cfg.path(cfg.risk.audit.file)) if cfg.risk.audit.file else str(run_dir / "audit.jsonl")


def metrics_actor_config(instrument_id: str, live: LiveSection, port: int, kill_token: str, environment: str,
                         account_id: str = ""):
    """The metrics actor; ``account_id`` = the account equity and /ready follow ("" = the venue's)."""
    from nautilus_trader.config import ImportableActorConfig

    return ImportableActorConfig(
        actor_path="mmbot.live.metrics_server:MetricsActor", config_path="mmbot.live.metrics_server:MetricsActorConfig",
        config={"instrument_id": instrument_id, "port": port, "host": live.metrics_host,
                "ready_max_book_age_s": live.ready_max_book_age_s, "kill_token": kill_token,
                "environment": environment, "account_id": account_id, "component_id": "Metrics"})


def node_config_common(live: LiveSection, run_dir: Path) -> dict:
    """``TradingNodeConfig`` fields every live mode shares: trader id, JSON file logging in the run
    directory, buffered deltas, cache and the ``[live]`` timeouts."""
    from nautilus_trader.config import CacheConfig, LiveDataEngineConfig, LoggingConfig

    return dict(
        trader_id=TRADER_ID,
        logging=LoggingConfig(log_level=live.log_level, log_colors=False, log_directory=str(run_dir),
                              log_file_name="nautilus", log_file_format="json", log_level_file="DEBUG"),
        data_engine=LiveDataEngineConfig(buffer_deltas=True),
        cache=CacheConfig(),
        timeout_connection=live.timeout_connection_s,
        timeout_reconciliation=live.timeout_reconciliation_s,
        timeout_portfolio=10.0,
        timeout_disconnection=live.timeout_disconnection_s,
        timeout_post_stop=live.timeout_post_stop_s,
    )


# -- banner and structured log lines -----------------------------------------------------------

def log_json(event: str, level: str = "INFO", **fields: Any) -> None:
    """One structured JSON line on stderr (mmbot's own lifecycle events)."""
    rec = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level, "logger": "mmbot.live",
           "event": event, **fields}
    print(json.dumps(rec, default=str, sort_keys=False), file=sys.stderr, flush=True)


def banner(cfg: BacktestConfig, live: LiveSection, env: str, creds, lock_file: Path, metrics_port: int,
           duration_s: float | None) -> dict:
    """What is about to run: environment, account, instrument, limits, guard thresholds."""
    s = cfg.strategy
    guards = {}
    if cfg.risk is not None and cfg.risk.enabled:
        guards = {name: {k: v for k, v in params.items()} for name, params in cfg.risk.guards.items()}
        guards["engine"] = msgspec.to_builtins(cfg.risk.engine)
    return {
        "environment": env, "account": live.account, "api_key": creds.masked_key, "key_source": creds.source,
        "instrument": cfg.run.instrument, "config": cfg.source,
        "endpoints": {k: getattr(live, k) or "bybit default" for k in
                      ("base_url_http", "base_url_ws_public", "base_url_ws_private", "base_url_ws_trade")},
        "limits": {k: s.get(k) for k in ("level_size", "max_position", "levels_per_side", "min_half_spread_bps",
                                         "fee_floor_enabled", "use_amend") if k in s},
        "guards": guards, "foreign_orders": live.foreign_orders, "lock": str(lock_file),
        "metrics_port": metrics_port, "duration_s": duration_s,
    }


def print_banner(info: dict) -> None:
    lines = [
        "=" * 72,
        f"mmbot live  ENVIRONMENT: {info['environment'].upper()}   account: {info['account']}   key: {info['api_key']}"
        f" ({info['key_source'].split(':')[0]})",
        f"instrument: {info['instrument']}   config: {info['config']}",
        f"limits: {json.dumps(info['limits'])}",
    ]
    for name, params in info["guards"].items():
        lines.append(f"guard {name}: {json.dumps(params, default=str)}")
    lines += [f"endpoints: {json.dumps(info['endpoints'])}",
              f"foreign orders at start: {info['foreign_orders']}   lock: {info['lock']}   "
              f"metrics port: {info['metrics_port']}   duration: {info['duration_s'] or 'until SIGINT/SIGTERM'}",
              "=" * 72]
    print("\n".join(lines), file=sys.stderr, flush=True)
    log_json("banner", **info)


# -- run loop ---------------------------------------------------------------------------------

class LiveRun:
    """Build the node, run it until a signal / the duration / a startup refusal, stop cleanly."""

    def __init__(self, node_config, instrument_id: str, duration_s: float | None = None) -> None:
        self.node_config = node_config
        self.instrument_id = instrument_id
        self.duration_s = duration_s
        self.node = None
        self.stop_reason = ""
        self.exit_code = 0

    def build(self):
        from nautilus_trader.live.node import TradingNode

        from adapters.bybit_live import MmbotBybitDataClientFactory
        from adapters.bybit_live_exec import make_exec_client_factory
        from mmbot.builders import VENUE
        from mmbot.live.recording import RAW_TAP_CLIENT

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        node = TradingNode(config=self.node_config, loop=loop)
        node.add_data_client_factory(VENUE, MmbotBybitDataClientFactory)
        # Nautilus' Bybit execution client, plus: fills found by reconciliation are applied from
        # Bybit's execution list (real trade ids and fees) instead of being inferred.
        node.add_exec_client_factory(VENUE, make_exec_client_factory())
        if RAW_TAP_CLIENT in (self.node_config.data_clients or {}):  # the recorder's raw public tap
            from adapters.recorder import RawPublicDataClientFactory

            node.add_data_client_factory(RAW_TAP_CLIENT, RawPublicDataClientFactory)
        node.build()
        from strategies.risk.supervisor import RiskSupervisor

        for actor in node.trader.actors():
            if isinstance(actor, RiskSupervisor):
                actor.bind_risk_engine(node.kernel.risk_engine)
        self.node = node
        return node

    def _actor(self, cls):
        return next((a for a in self.node.trader.actors() if isinstance(a, cls)), None)

    async def _main(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if not self.stop_reason:
                self.stop_reason = sig.name
                log_json("signal", signal=sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        run_task = asyncio.create_task(node.run_async())
        t0 = time.monotonic()
        policy = None
        started_logged = False
        while not stop.is_set():
            if run_task.done():
                self.stop_reason = self.stop_reason or "node stopped"
                if run_task.exception() is not None:
                    log_json("node_error", "ERROR", error=str(run_task.exception()))
                    self.exit_code = 1
                break
            if self.duration_s is not None and time.monotonic() - t0 >= self.duration_s:
                self.stop_reason = "duration"
                break
            if node.trader.is_running:
                if not started_logged:
                    started_logged = True
                    log_json("running", instrument=self.instrument_id)
                policy = policy or self._actor(StartupOrderPolicy)
                if policy is not None and policy.refused:
                    self.stop_reason = "refused"
                    self.exit_code = EXIT_REJECTED
                    log_json("refused", "ERROR", reason=policy.refused)
                    break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass
        log_json("stopping", reason=self.stop_reason)
        if node.kernel.is_running or node.trader.is_running:
            await node.stop_async()
        open_orders = node.cache.orders_open(instrument_id=InstrumentId.from_str(self.instrument_id))
        log_json("stopped", open_orders_in_cache=len(open_orders),
                 positions=[str(p.signed_qty) for p in node.cache.positions_open()])
        if open_orders:
            log_json("open_orders_left", "WARNING", client_order_ids=[o.client_order_id.value for o in open_orders])
        if not run_task.done():
            run_task.cancel()
            try:
                await run_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def run(self) -> int:
        node = self.node or self.build()
        try:
            node.get_event_loop().run_until_complete(self._main())
        finally:
            try:
                node.dispose()
            except Exception as e:  # noqa: BLE001
                log_json("dispose_error", "WARNING", error=str(e))
        return self.exit_code


def kill_token_from_env(live: LiveSection, environ=None) -> str:
    import os

    environ = os.environ if environ is None else environ
    return environ.get(live.kill_token_env, "") if live.kill_token_env else ""


def parse_duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h`` -> seconds."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ConfigError(f"--duration {text!r}: expected e.g. 90s, 15m, 2h")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value <= 0:
        raise ConfigError(f"--duration {text!r}: must be > 0")
    return value
