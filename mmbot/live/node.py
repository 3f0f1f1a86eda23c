"""``mmbot live``: the live builder and run loop (Nautilus ``TradingNode`` + Bybit clients).

The builder here is the only live code that knows the mode. It takes the strategy, the risk
actors and the RiskEngine limits from ``mmbot.builders`` (the very configs the backtest
uses) and adds the Nautilus Bybit data and execution clients (linear perpetuals), the metrics
actor and the startup order policy.

Safety, in the order it is checked (every refusal exits 2 before any connection):

1. Every ``[live]`` value is range-checked (``load_live_config``); ``live.allow_mainnet`` is never
   taken from ``--set``.
2. The mainnet gate is decided by where orders would go (``mmbot.live.endpoints``): the endpoints
   are resolved as Nautilus' Bybit clients resolve them and classified; real-money destinations
   need ``--env mainnet``, a mainnet config file with ``[live] allow_mainnet = true`` and
   ``--confirm-mainnet``; a label that disagrees with the destinations is refused.
3. Keys come from the environment or a 0600 key file (``mmbot.live.secrets``); they are masked in
   everything the process prints and in every file of the run directory.
4. A second instance on the same API key is refused, whatever its account label or the
   spelling of its endpoints (``mmbot.live.lock``, an ``flock`` keyed by a hash of the key alone).
5. Before the node starts, ``LiveRun`` runs the stop's ``VenueSweep`` once (``startup_sweep``
   line): our own orders left open by a killed run are cancelled and confirmed closed over REST
   BEFORE Nautilus' startup reconciliation reads the venue (a leftover filling while it reads
   made the node's position wrong; exit 4 when one cannot be confirmed closed).
   After Nautilus' startup reconciliation (open orders, positions, fills), orders found open
   on the instrument are handled by ``StartupOrderPolicy``: ours (client order ids of this
   trader) are cancelled; foreign ones make the run stop with exit 2 unless
   ``[live] foreign_orders = "ignore"``. Quoting waits for readiness (``StartupGate``).

Readiness (``LiveRun``): data and execution clients connected within ``timeout_connection_s``,
account reconciled and the trader started within ``timeout_reconciliation_s`` (+ the portfolio's
10 s) after that, the instrument known and the strategy running; otherwise exit 4 with one line.
After a drop Nautilus' Rust clients reconnect with backoff on their own; if the private or trade
WebSocket stays down longer than ``reconnect_timeout_s`` the run stops (exit 5).

SIGINT/SIGTERM or the end of ``--duration``: the trader stops (the strategy cancels all its
orders), then ``mmbot.live.stop.VenueSweep`` asks the venue, cancels what is left and retries
until nothing is left or ``stop_deadline_s`` passes (exit 3 and the ids when something may rest);
the clients stay connected meanwhile (a fill before the last cancel reaches the cache), then the
node disconnects.

Console: one status line every ``[live] status_interval_s`` and one line per guard transition
(``mmbot.live.status``); Nautilus' own lines from ``[live] log_level`` (default ERROR) up, its full
DEBUG log in the run folder. Run folder (``mmbot.live.session``): marker and resolved config at
start, the backtest's report from the ``RunLedger`` at the end (``LiveRun.after_stop``).

Exit codes: 0 clean, 1 internal error, 2 refused, 3 orders may rest on the venue after stop,
4 not ready at start, 5 connection lost (see docs/runbook.md).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import math
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
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId

from mmbot.config.backtest import BacktestConfig, ConfigError, _read_toml, load_backtest_config, parse_override
from mmbot.live.endpoints import ENVIRONMENTS, URL_KEYS, EndpointError, check_url

FOREIGN_POLICIES = ("refuse", "ignore")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "OFF")
# Shadow's trader id: its orders never leave the process, so no other program's ids can collide.
TRADER_ID = "MMBOT-001"
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REJECTED = 2
EXIT_ORDERS_LEFT = 3
EXIT_NOT_READY = 4
EXIT_CONNECTION_LOST = 5
PORTFOLIO_TIMEOUT_S = 10.0  # node_config_common's timeout_portfolio
# Readiness: the node's position after Nautilus' startup reconciliation must equal the venue's.
# Compared every POSITION_CHECK_INTERVAL_S (a fill whose private message is still on its way makes
# one sample differ) until equal, at most POSITION_CHECK_S.
POSITION_CHECK_S = 5.0
POSITION_CHECK_INTERVAL_S = 0.5
RECONCILE_AT_STOP_S = 5.0   # stop: orders the venue closed unseen are reconciled from it this long at most
NAUTILUS_LOG = "nautilus"              # <run dir>/nautilus.jsonl: Nautilus' JSON log (DEBUG)
NAUTILUS_LOG_FIFO = "nautilus-masking-fifo"  # live modes with keys: Nautilus writes this FIFO, the masker the log


class LiveRefused(RuntimeError):
    """The live run must not start (or must stop): exit status 2, one line."""


class LiveSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[live]``: everything the live run needs beyond the backtest config (docs/runbook.md)."""

    environment: str = "testnet"         # default when --env is not given
    allow_mainnet: bool = False          # mainnet also needs --confirm-mainnet; never from --set
    account: str = "default"             # label for the banner (the lock is keyed by the API key)
    api_key_file: str = ""               # TOML file (mode 0600) with api_key, api_secret; else env vars
    # Endpoints: empty = Bybit's URLs for the environment (mirrors, regional hosts, a loopback fake).
    base_url_http: str = ""
    base_url_ws_public: str = ""
    base_url_ws_private: str = ""
    base_url_ws_trade: str = ""
    adapter_environment: str = ""        # Bybit environment flag given to the Nautilus clients; "" = the --env
    # The loopback endpoints are the local test exchange (tools/fake_bybit): without it a loopback
    # endpoint counts as real money (it can forward or redirect anywhere). Refused with mainnet.
    test_exchange: bool = False
    foreign_orders: str = "refuse"       # orders open at start that are not ours: refuse | ignore
    lock_dir: str = "../runs/locks"
    out_dir: str = "../runs/live"        # per-run directory: Nautilus JSON log, audit log default
    metrics_port: int = -1               # -1 = off, 0 = any free port; --metrics-port overrides
    metrics_host: str = "127.0.0.1"
    kill_token_env: str = "MMBOT_KILL_TOKEN"  # env var holding the token of POST /kill ("" = no endpoint)
    ready_max_book_age_s: float = 10.0
    # Console (docs/runbook.md "Console"): Nautilus' own lines at log_level and above reach the console
    # (its JSON file log in the run folder is always DEBUG); one status line every status_interval_s.
    log_level: str = "ERROR"
    status_interval_s: float = 10.0         # 0 = no status lines
    reconciliation_lookback_mins: int = 1440
    inflight_check_interval_ms: int = 2000
    inflight_check_threshold_ms: int = 5000
    open_check_interval_secs: float = 10.0  # periodic open-order check against the venue (0 = off)
    # Closed orders and account events older than this leave the node's in-memory cache (checked
    # every PURGE_INTERVAL_MINS): without it the cache grows with every order of the session (the
    # 1-hour soak: ~44 MB/h). 0 = keep everything (a short session you want to inspect whole).
    purge_closed_after_mins: int = 15
    timeout_connection_s: float = 30.0      # readiness: clients connected within this
    timeout_reconciliation_s: float = 30.0  # readiness: account reconciled within this after connecting
    timeout_disconnection_s: float = 10.0
    timeout_post_stop_s: float = 3.0
    stop_deadline_s: float = 15.0           # stop: venue checked / cancels retried this long (exit 3 after)
    reconnect_timeout_s: float = 30.0       # private/trade WebSocket down this long -> stop (exit 5)
    instrument_status_poll_secs: int = 0    # 0 = off
    max_retries: int = 3
    ws_trade: bool = True                   # orders over the trade WebSocket (else HTTP)
    record: bool = True                     # recorder actor (adapters/recorder.py, docs/shadow.md)
    record_dir: str = ""                    # "" = <run dir>/recording
    record_required: bool = False           # a recorder write error halts quoting
    record_flush_ms: int = 1000             # flush interval = the most a crash can lose


# Range of every [live] number: (low, high, low inclusive). NaN and inf are refused for all.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "metrics_port": (-1, 65535, True),
    "status_interval_s": (0.0, 86400.0, True),
    "ready_max_book_age_s": (0.0, 86400.0, False),
    "reconciliation_lookback_mins": (0, 525600, True),
    # Lower bounds against flooding the venue's REST API (each check queries orders): see
    # _MIN_OPEN_CHECK_S for open_check_interval_secs.
    "inflight_check_interval_ms": (100, 3_600_000, True),
    "inflight_check_threshold_ms": (500, 3_600_000, True),
    "open_check_interval_secs": (0.0, 86400.0, True),
    "purge_closed_after_mins": (0, 10080, True),
    "timeout_connection_s": (0.0, 3600.0, False),
    "timeout_reconciliation_s": (0.0, 3600.0, False),
    "timeout_disconnection_s": (0.0, 3600.0, False),
    "timeout_post_stop_s": (0.0, 3600.0, True),
    "stop_deadline_s": (0.0, 3600.0, False),
    "reconnect_timeout_s": (0.0, 86400.0, False),
    "instrument_status_poll_secs": (0, 86400, True),
    "max_retries": (1, 100, True),   # Nautilus' PositiveInt
    "record_flush_ms": (1, 3_600_000, True),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "environment": ENVIRONMENTS, "adapter_environment": ("",) + ENVIRONMENTS, "foreign_orders": FOREIGN_POLICIES,
}
_NON_EMPTY = ("account", "lock_dir", "out_dir", "metrics_host")
_MIN_OPEN_CHECK_S = 1.0  # open_check_interval_secs: 0 (off) or at least this (one REST query per check)
PURGE_INTERVAL_MINS = 5  # how often the cache drops closed orders / old account events (purge_closed_after_mins)


def cache_purge_settings(live: LiveSection) -> dict:
    """``LiveExecEngineConfig`` purge fields for ``live.purge_closed_after_mins`` (0 = no purge).

    Closed orders only (an open or in-flight order is never purged) and account events outside the
    window (the account's current balances stay); positions are not purged: Bybit is one netting
    position per instrument, reopened under the same id."""
    after = int(live.purge_closed_after_mins)
    if after <= 0:
        return {}
    every = min(PURGE_INTERVAL_MINS, after)
    return {"purge_closed_orders_interval_mins": every, "purge_closed_orders_buffer_mins": after,
            "purge_account_events_interval_mins": every, "purge_account_events_lookback_mins": after}


def _is_loopback_host(host: str) -> bool:
    import ipaddress

    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _check_live_values(live: LiveSection, where) -> None:
    """One line naming the key, its value and where it came from; ``where(key)`` says which."""
    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where(key)}: live.{key} = {getattr(live, key)!r}: {problem}")

    for key, (lo, hi, lo_incl) in _RANGES.items():
        v = getattr(live, key)
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(key, "must be a finite number")
        if v < lo or (v == lo and not lo_incl) or v > hi:
            raise bad(key, f"must be {'>=' if lo_incl else '>'} {lo} and <= {hi}")
    for key, choices in _CHOICES.items():
        if getattr(live, key) not in choices:
            raise bad(key, f"must be one of {', '.join(repr(c) for c in choices)}")
    if live.log_level.upper() not in LOG_LEVELS:
        raise bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    for key in _NON_EMPTY:
        if not getattr(live, key).strip():
            raise bad(key, "must not be empty")
    if 0 < live.open_check_interval_secs < _MIN_OPEN_CHECK_S:
        raise bad("open_check_interval_secs", f"must be 0 (off) or >= {_MIN_OPEN_CHECK_S:g} (each check is a REST "
                  "query of the venue's open orders)")
    if live.kill_token_env and not _is_loopback_host(live.metrics_host):
        # The metrics server is plain HTTP: POST /kill and its token would travel in clear to any
        # host that can reach the interface. Serving metrics beyond loopback needs the kill endpoint off.
        raise bad("metrics_host", "a non-loopback host serves POST /kill in plain HTTP: use 127.0.0.1 (e.g. behind "
                  "an SSH tunnel or a TLS proxy), or set live.kill_token_env = \"\" to turn the kill endpoint off")
    if live.kill_token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", live.kill_token_env):
        raise bad("kill_token_env", "must be an environment variable name (or empty)")
    for key in URL_KEYS:
        if getattr(live, key):
            try:
                check_url(key, getattr(live, key))
            except EndpointError as e:
                raise ConfigError(f"{where(key)}: {e}") from None


def _kill_switch_configured(cfg: BacktestConfig) -> bool:
    risk = cfg.risk
    return risk is not None and risk.enabled and "kill_switch" in risk.guards


class LiveConfigFile(msgspec.Struct, frozen=True):
    """What the config FILE itself says about the environment (the mainnet gate reads these,
    never ``--set``)."""

    environment: str = "testnet"
    allow_mainnet: bool = False
    # The --set items that change [risk] (``risk.enabled=false``, ``risk.kill_switch.file=``, ...):
    # refused on a real-money run, whose limits come from the reviewed file only (check_environment).
    risk_from_set: tuple[str, ...] = ()


def load_live_config(path: Path | None, overrides: list[str] = (), *, with_file: bool = False,
                     portfolio: bool = False) -> tuple:
    """The shared config (strategy, risk, run.instrument) and the ``[live]`` section, every value
    checked; ``with_file`` adds ``LiveConfigFile`` (the file's own environment / allow_mainnet).
    ``portfolio``: the mode runs a ``[portfolio]`` (shadow, docs/portfolio.md "Modes"); the others
    refuse it in one line."""
    cfg = load_backtest_config(path, list(overrides))
    from mmbot.builders import refuse_portfolio

    if not portfolio:
        refuse_portfolio(cfg, "mmbot live")
    source = str(path) if path else "<defaults>"
    raw = _read_toml(path) if path else {}
    if not isinstance(raw.get("live", {}), dict):
        raise ConfigError(f"{source}: live: must be a table")
    data = dict(raw.get("live", {}))
    from_set: dict[str, str] = {}
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] == "live" and len(keys) == 2:
            if keys[1] == "allow_mainnet":
                raise ConfigError(f"--set {item}: live.allow_mainnet cannot come from --set (mainnet refused): "
                                  "put [live] allow_mainnet = true in the mainnet config file itself")
            data[keys[1]] = value
            from_set[keys[1]] = item

    def where(key: str) -> str:
        return f"--set {from_set[key]}" if key in from_set else source

    try:
        live = msgspec.convert(data, LiveSection)
    except msgspec.ValidationError as e:
        msg = str(e)
        key = ""
        if " - at `$." in msg:
            msg, _, key = msg.partition(" - at `$.")
            key = key.rstrip("`")
            raise ConfigError(f"{where(key)}: live.{key}: {msg}") from None
        if "unknown field" in msg:
            key = msg.split("`")[1]
            raise ConfigError(f"{where(key)}: live.{key}: unknown key") from None
        raise ConfigError(f"{source}: live: {msg}") from None
    _check_live_values(live, where)
    if live.record and live.record_required and not _kill_switch_configured(cfg):
        raise ConfigError(f"{where('record_required')}: live.record_required = true needs the kill switch "
                          "([risk] enabled = true with a [risk.kill_switch] table): a failed recorder halts "
                          "quoting through it")
    if not with_file:
        return cfg, live
    file_live = raw.get("live", {})  # the file alone, before any --set
    file_env = file_live.get("environment", "testnet")
    risk_from_set = tuple(item for item in overrides if parse_override(item)[0][0] == "risk")
    file_cfg = LiveConfigFile(environment=file_env if isinstance(file_env, str) else "",
                              allow_mainnet=file_live.get("allow_mainnet") is True, risk_from_set=risk_from_set)
    return cfg, live, file_cfg


def check_environment(env: str, live: LiveSection, confirm_mainnet: bool, *, file_cfg: LiveConfigFile | None = None,
                      record: bool | None = None):
    """The mainnet gate (``mmbot.live.endpoints.check_gate``): resolve where orders would go and
    refuse (``LiveRefused``) unless label, config file and command agree. Returns the endpoints."""
    from mmbot.live.endpoints import check_gate, resolve_endpoints

    if env not in ENVIRONMENTS:
        raise LiveRefused(f"--env {env!r}: must be one of {', '.join(ENVIRONMENTS)}")
    file_cfg = file_cfg if file_cfg is not None else LiveConfigFile()
    try:
        eps = resolve_endpoints(live, env, record)
        check_gate(env, eps, file_environment=file_cfg.environment, file_allow_mainnet=file_cfg.allow_mainnet,
                   confirm_mainnet=confirm_mainnet)
    except EndpointError as e:
        raise LiveRefused(str(e)) from None
    if eps.real_money and file_cfg.risk_from_set:
        # Every [risk] key, not only the ones that "loosen": which direction weakens is not obvious
        # per key (a kill-switch or audit path elsewhere, a longer interval, a wider limit, a guard
        # off), and --confirm-mainnet confirms the venue, not the guards. Edit the file instead.
        raise LiveRefused(f"--set {file_cfg.risk_from_set[0]}: [risk] cannot come from --set on a real-money run "
                          f"(orders to {eps.order_class}): put the limits in the config file itself, where they "
                          "are reviewed")
    return eps


# -- startup order policy ---------------------------------------------------------------------

class StartupOrderPolicyConfig(ActorConfig, frozen=True):
    instrument_id: InstrumentId
    trader_tag: str  # required: a default would own some other program's ids (e.g. Nautilus' 001)
    foreign_orders: str = "refuse"


def is_own_order_id(client_order_id: str, trader_tag: str) -> bool:
    """Nautilus client order ids are ``O-YYYYMMDD-HHMMSS-<trader tag>-<strategy tag>-<n>``
    (adapters/order_ids.py: the one rule every part of mmbot uses)."""
    from adapters.order_ids import is_own_order_id as rule

    return rule(client_order_id, trader_tag)


_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def live_trader_tag(api_key: str) -> str:
    """The trader tag of a run with orders on a venue: ``M`` + 4 base-36 characters of sha256 over a
    domain tag and the API key.

    Ownership of an order on the venue is read from its client order id (``is_own_order_id``): the
    startup sweep, ``StartupOrderPolicy`` and the stop check cancel "our" leftovers and leave
    everything else alone. A fixed tag such as ``001`` is exactly what every Nautilus node running
    with Nautilus' default ``TraderId("TRADER-001")`` puts in its ids, so mmbot would cancel such a
    program's orders on a shared account. Derived from the key, the tag is the same across restarts
    of one key (leftovers of a killed run are still recognised), differs between two keys on one
    account except by chance (1.7 M values: two keys share one with probability 6e-7, k keys about
    k^2 / 3.4 M; the banner shows it, docs/runbook.md "Start"), always contains a letter (never a Nautilus-style number tag), and is
    short enough that ``O-YYYYMMDD-HHMMSS-MXXXX-000-<n>`` fits Bybit's 36-character ``orderLinkId``
    with an 8-digit order count. Not reversible to the key (20 bits of a hash)."""
    h = int.from_bytes(hashlib.sha256(b"mmbot-trader-tag\0" + api_key.encode()).digest()[:8], "big")
    chars = []
    for _ in range(4):
        h, r = divmod(h, 36)
        chars.append(_BASE36[r])
    return "M" + "".join(chars)


def live_trader_id(api_key: str) -> str:
    """``MMBOT-<live_trader_tag>``: the TraderId of a run whose orders reach a venue."""
    return f"MMBOT-{live_trader_tag(api_key)}"


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
                self.refused = msg + (f"; refusing to run (ours carry trader tag {c.trader_tag}; mmbot orders with "
                                      "another tag, left by a run on another API key or by a version before "
                                      "2026-12-03 (tag 001), are foreign too: cancel them on the exchange; or set "
                                      "[live] foreign_orders = \"ignore\" to quote beside them)")
                self.log.error(self.refused)
                from strategies.risk.base import KILL_ENDPOINT

                try:  # halt before the strategy can quote; the run loop then stops the node
                    self.msgbus.send(endpoint=KILL_ENDPOINT, msg={"action": "kill", "reason": "foreign orders at start",
                                                                  "source": "startup"})
                except Exception:  # noqa: BLE001 (no kill switch configured)
                    pass
            else:
                self.log.warning(msg + "; left alone (foreign_orders = \"ignore\")")


# -- startup gate ------------------------------------------------------------------------------

class StartupGateConfig(ActorConfig, frozen=True):
    instrument_id: str


class StartupGate(Actor):
    """No quote before the run is ready (live modes only; the builder adds it).

    The strategy starts as soon as Nautilus' startup reconciliation is done, but the run is ready
    only when ``LiveRun._readiness`` has also seen the node's position equal to the venue's (a
    leftover of a killed run can fill while Nautilus reconciles and leave the node's inventory
    wrong). Until then this actor holds a ``startup`` constraint on both sides, published when the
    strategy starts (it subscribes to the constraint topic in its own ``on_start``, so an earlier
    message would be lost: the same hand-over as the kill switch's); ``release()`` (the run loop,
    once ready) lifts it (ACTIVE, like every other guard at rest). Both transitions go through the
    risk supervisor's audit log."""

    GUARD = "startup"

    def __init__(self, config: StartupGateConfig) -> None:
        super().__init__(config)
        self.released = False
        self.held_for: list[str] = []  # strategies told to wait

    def on_start(self) -> None:
        self.msgbus.subscribe(topic="events.system.*", handler=self._on_component_state)

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.system.*", handler=self._on_component_state)

    def _publish(self, released: bool, reason: str) -> None:
        from strategies.risk.base import RISK_TOPIC, RiskConstraint

        self.msgbus.publish(topic=RISK_TOPIC, msg=RiskConstraint(
            guard=self.GUARD, ts_ns=self.clock.timestamp_ns(), old_state="WAITING" if released else "STARTING",
            new_state="ACTIVE" if released else "WAITING", reason=reason, allow_bid=released, allow_ask=released,
            instrument_id=self.config.instrument_id))

    def _on_component_state(self, event) -> None:
        from nautilus_trader.common.enums import ComponentState
        from nautilus_trader.model.identifiers import StrategyId

        if self.released or event.state != ComponentState.RUNNING or not isinstance(event.component_id, StrategyId):
            return
        self.held_for.append(event.component_id.value)
        self._publish(False, "start not verified: no quotes until the node's position matches the venue's")

    def release(self) -> None:
        """The run is ready: quoting may begin (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        self._publish(True, "run ready: position verified against the venue")


# -- the builder ------------------------------------------------------------------------------

def _bybit_env(name: str):
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment

    return {"mainnet": BybitEnvironment.MAINNET, "testnet": BybitEnvironment.TESTNET,
            "demo": BybitEnvironment.DEMO}[name]


def check_node_inputs(cfg: BacktestConfig) -> None:
    """``ConfigError`` for what ``build_live_node_config`` would refuse (a non-linear instrument, a
    strategy value, a size in USDT notional left unresolved, sizes that do not fit the shipped
    definition): checked before the lock, the run folder and the masking pump exist. Before, the
    fit check ran only in the builder, so a refusal there (e.g. sizes resolved on the venue's finer
    lot step) exited 2 with a run folder and its config.resolved.json left behind."""
    from mmbot.builders import check_instrument_fit_shipped, strategy_config_dict

    if cfg.portfolio is not None:  # every instrument of a [portfolio] (mmbot/live/portfolio.py)
        from mmbot.live.portfolio import check_instruments_listed

        check_instruments_listed(cfg)
        for iid, member in cfg.instrument_configs().items():
            check_instrument_fit_shipped(member, iid)
            strategy_config_dict(member, iid)
        return
    check_instrument_fit_shipped(cfg, cfg.run.instrument)  # refuses an unresolved notional key first

    if not cfg.run.instrument.endswith("-LINEAR.BYBIT"):
        raise ConfigError(f"{cfg.origin('run.instrument')}: run.instrument: live trading supports Bybit linear "
                          f"perpetuals (SYMBOL-LINEAR.BYBIT), got {cfg.run.instrument}")
    strategy_config_dict(cfg, cfg.run.instrument)


def build_live_node_config(cfg: BacktestConfig, live: LiveSection, env: str, creds, *, run_dir: Path,
                           metrics_port: int = -1, kill_token: str = "", log_file_name: str = NAUTILUS_LOG):
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
    from mmbot.builders import VENUE, check_instrument_fit_shipped, risk_actor_configs, risk_engine_config, strategy_config
    from strategies.risk.base import DATA_STATUS_TOPIC
    from mmbot.live.recording import (
        RAW_TAP_CLIENT, raw_tap_client_config, recorder_actor_config, recording_dir, recording_enabled,
    )

    from mmbot.live.portfolio import instruments_of

    instrument_id = cfg.run.instrument if cfg.portfolio is None else instruments_of(cfg)[0]
    instruments = instruments_of(cfg)
    if cfg.portfolio is not None:
        check_node_inputs(cfg)  # every instrument listed, each member's sizes vs its symbol's rules
    elif not instrument_id.endswith("-LINEAR.BYBIT"):
        raise ConfigError(f"{cfg.source}: run.instrument: live trading supports Bybit linear perpetuals "
                          f"(SYMBOL-LINEAR.BYBIT), got {instrument_id}")
    else:
        check_instrument_fit_shipped(cfg, instrument_id)  # sizes vs the symbol's order rules, before connecting
    adapter_env = _bybit_env(live.adapter_environment or env)
    products = (BybitProductType.LINEAR,)
    provider = InstrumentProviderConfig(load_all=False, load_ids=frozenset(instruments))
    url = lambda v: v or None  # noqa: E731
    data_client = MmbotBybitDataClientConfig(
        api_key=creds.api_key, api_secret=creds.api_secret, product_types=products, environment=adapter_env,
        base_url_http=url(live.base_url_http), base_url_ws_public=url(live.base_url_ws_public),
        instrument_provider=provider, max_retries=live.max_retries,
        instrument_status_poll_secs=live.instrument_status_poll_secs or None,
        status_topic=DATA_STATUS_TOPIC,
    )
    exec_client = BybitExecClientConfig(
        api_key=creds.api_key, api_secret=creds.api_secret, product_types=products, environment=adapter_env,
        base_url_http=url(live.base_url_http), base_url_ws_private=url(live.base_url_ws_private),
        base_url_ws_trade=url(live.base_url_ws_trade), instrument_provider=provider, max_retries=live.max_retries,
        use_http_batch_api=not live.ws_trade,
    )
    trader_tag = live_trader_tag(creds.api_key)
    if cfg.portfolio is None:
        rec = risk_engine_config(cfg, instrument_id)
        risk_engine = LiveRiskEngineConfig(**{f: getattr(rec, f) for f in rec.__struct_fields__},
                                           graceful_shutdown_on_exception=True)  # as the data engine's
        strategies = [strategy_config(cfg, instrument_id)]
        actors = [
            live_ledger_config(cfg, instrument_id, run_dir),
            *risk_actor_configs(cfg, instrument_id, live_audit_path(cfg, run_dir), env=env, account=live.account),
            metrics_actor_config(instrument_id, live, metrics_port, kill_token, env),
        ]
    else:
        # A [portfolio] (mmbot/live/portfolio.py): a market maker, ledger and guards per instrument,
        # placed as shadow's, on the ONE Bybit execution client (the venue's, no exec_client_id).
        from mmbot.live.portfolio import portfolio_node_parts, risk_engine_limits

        risk_engine = LiveRiskEngineConfig(**risk_engine_limits(cfg), graceful_shutdown_on_exception=True)
        strategies, actors = portfolio_node_parts(cfg, env=env, account=live.account,
                                                  audit_path=live_audit_path(cfg, run_dir), run_dir=run_dir,
                                                  exec_client_id=None)
        actors += metrics_actor_configs(instruments, live, metrics_port, kill_token, env, group=str(run_dir),
                                        portfolio_limits=node_portfolio_limits(cfg))
    strategies = [quiet_order_logs(s) for s in strategies]
    from mmbot.builders import instrument_label

    for iid in instruments:  # per instrument: the startup gate and the leftover-order policy
        suffix = "" if len(instruments) == 1 else f"-{instrument_label(iid)}"
        actors += [
            ImportableActorConfig(actor_path="mmbot.live.node:StartupGate",
                                  config_path="mmbot.live.node:StartupGateConfig",
                                  config={"instrument_id": iid, "component_id": f"StartupGate{suffix}"}),
            ImportableActorConfig(actor_path="mmbot.live.node:StartupOrderPolicy",
                                  config_path="mmbot.live.node:StartupOrderPolicyConfig",
                                  config={"instrument_id": iid, "trader_tag": trader_tag,
                                          "foreign_orders": live.foreign_orders,
                                          "component_id": f"StartupOrderPolicy{suffix}"}),
        ]
    data_clients = {VENUE: data_client}
    if recording_enabled(live):
        # Nautilus' Rust Bybit client exposes no raw frames: a second public socket (feed = false)
        # taps them for the recorder, beside the data client that feeds the node (adapters/recorder.py).
        tap = raw_tap_client_config(instrument_id, live, live.adapter_environment or env)
        if len(instruments) > 1:
            import msgspec

            tap = msgspec.structs.replace(tap, instrument_ids=tuple(instruments))
        data_clients[RAW_TAP_CLIENT] = tap
        actors.append(recorder_actor_config(instrument_id, live, recording_dir(cfg, live, run_dir),
                                            instrument_ids=instruments))
    return TradingNodeConfig(
        # Each Bybit message reaches the data engine as one batch ending in F_LAST (Nautilus' parser;
        # BookUpdateIds turns a split one into a gap): re-buffering it row by row was ~3.5 % of the
        # loop's samples (a Python IntFlag test per row, docs/benchmarks.md "Live on loopback").
        **node_config_common(live, run_dir, log_file_name, trader_id=live_trader_id(creds.api_key),
                             buffer_deltas=False),
        risk_engine=risk_engine,
        exec_engine=LiveExecEngineConfig(
            reconciliation=True, reconciliation_lookback_mins=live.reconciliation_lookback_mins or None,
            reconciliation_instrument_ids=[InstrumentId.from_str(i) for i in instruments],
            inflight_check_interval_ms=live.inflight_check_interval_ms,
            inflight_check_threshold_ms=live.inflight_check_threshold_ms,
            open_check_interval_secs=live.open_check_interval_secs or None,
            reconciliation_startup_delay_secs=1.0,
            graceful_shutdown_on_exception=True,
            **cache_purge_settings(live),
        ),
        data_clients=data_clients,
        exec_clients={VENUE: exec_client},
        strategies=strategies,
        actors=actors,
    )


# Nautilus' per-order INFO lines a live strategy does not write (docs/benchmarks.md "Live on
# loopback"): with the defaults (True) every command it sends and every order event it receives is
# formatted (the event's repr, in Python) and logged at INFO, i.e. JSON-encoded by the Rust logger,
# written into the masking FIFO and re-written by the masking pump: several lines per order, the
# largest share of the per-order cost that is ours to drop. What the operator keeps: the recording's
# ``orders.jsonl`` (every order event, [live] record), the audit log, the session report's fills,
# /metrics and Nautilus' WARNING lines for denied and rejected orders (Strategy logs those whatever
# log_events says). Shadow keeps the defaults (its tests read the strategy's fills from the log).
QUIET_ORDER_LOGS = {"log_events": False, "log_commands": False}


def quiet_order_logs(strategy):
    """``strategy`` (an ``ImportableStrategyConfig``) with ``QUIET_ORDER_LOGS``."""
    from nautilus_trader.config import ImportableStrategyConfig

    return ImportableStrategyConfig(strategy_path=strategy.strategy_path, config_path=strategy.config_path,
                                    config={**strategy.config, **QUIET_ORDER_LOGS})


LEDGER_SPILL_DIR = "ledger"  # in the run folder: the ledger's rows, spilled every minute


def live_ledger_config(cfg: BacktestConfig, instrument_id: str, run_dir: Path | None = None):
    """The backtest's run ledger (the end-of-session report, mmbot/live/session.py), without funding
    subscriptions (a live feed's funding updates are predictions, not settlements); with a run
    folder, spilling its rows to ``<run_dir>/ledger/`` every minute so that its memory stays bounded
    however long the session runs (mmbot/backtest/ledger.py); and without its cache purge: live and
    shadow purge with Nautilus' own (``[live] purge_closed_after_mins``), which the ledger's
    duplicated. (Both run on Nautilus' LiveClock timer thread: Nautilus' purge is its own engine's
    timer, not ours to move; tests/test_hostile_review22.py measures it.)"""
    from nautilus_trader.config import ImportableActorConfig

    from mmbot.builders import ledger_config

    c = ledger_config(cfg, instrument_id)
    extra = {"spill_dir": str(Path(run_dir) / LEDGER_SPILL_DIR)} if run_dir is not None else {}
    return ImportableActorConfig(actor_path=c.actor_path, config_path=c.config_path,
                                 config={**c.config, "funding": False, "purge_interval_s": 0, **extra})


def live_audit_path(cfg: BacktestConfig, run_dir: Path) -> str:
    """The risk audit log: ``[risk.audit] file`` or ``<run dir>/audit.jsonl``; "" when off."""
    if cfg.risk is None or not cfg.risk.enabled or not cfg.risk.audit.enabled:
        return ""
    return str(cfg.path(cfg.risk.audit.file)) if cfg.risk.audit.file else str(run_dir / "audit.jsonl")


def node_portfolio_limits(cfg: BacktestConfig) -> dict[str, float]:
    """A [portfolio] node's ``[risk.portfolio]`` limits for the metrics actors ({} without one)."""
    from mmbot.live.metrics_server import portfolio_limits_usdt

    if cfg.risk is None or not cfg.risk.enabled:
        return {}
    return portfolio_limits_usdt(cfg.risk.guards.get("portfolio"))


def metrics_actor_config(instrument_id: str, live: LiveSection, port: int, kill_token: str, environment: str,
                         account_id: str = "", portfolio_limits: dict | None = None):
    """The metrics actor; ``account_id`` = the account equity and /ready follow ("" = the venue's);
    ``portfolio_limits``: a [portfolio] node's [risk.portfolio] limits (``portfolio_limits_usdt``)."""
    from nautilus_trader.config import ImportableActorConfig

    return ImportableActorConfig(
        actor_path="mmbot.live.metrics_server:MetricsActor", config_path="mmbot.live.metrics_server:MetricsActorConfig",
        config={"instrument_id": instrument_id, "port": port, "host": live.metrics_host,
                "ready_max_book_age_s": live.ready_max_book_age_s, "kill_token": kill_token,
                "environment": environment, "account_id": account_id, "component_id": "Metrics",
                **({"portfolio_limits_usdt": dict(portfolio_limits)} if portfolio_limits else {})})


def metrics_actor_configs(instrument_ids: list[str], live: LiveSection, port: int, kill_token: str, environment: str,
                          account_id: str = "", group: str = "", portfolio_limits: dict | None = None) -> list:
    """Several instruments: one metrics actor per instrument (``Metrics-<label>``) on ONE registry
    (``group``), the first serving it (/metrics, /ready over every instrument, /kill); each
    series carries its ``instrument`` label. One instrument: ``metrics_actor_config``."""
    from nautilus_trader.config import ImportableActorConfig

    from mmbot.builders import instrument_label

    if len(instrument_ids) == 1:
        return [metrics_actor_config(instrument_ids[0], live, port, kill_token, environment, account_id,
                                     portfolio_limits)]
    out = []
    for index, iid in enumerate(instrument_ids):
        c = metrics_actor_config(iid, live, port if index == 0 else -1, kill_token if index == 0 else "", environment,
                                 account_id, portfolio_limits)
        out.append(ImportableActorConfig(actor_path=c.actor_path, config_path=c.config_path,
                                         config={**c.config, "component_id": f"Metrics-{instrument_label(iid)}",
                                                 "registry_group": group}))
    return out


def nautilus_log_paths(run_dir: Path) -> tuple[Path, Path]:
    """(FIFO Nautilus writes, masked file the masking pump writes) for a run with API keys.
    Nautilus names its JSON file log ``<log_directory>/<log_file_name>.jsonl``."""
    return Path(run_dir) / f"{NAUTILUS_LOG_FIFO}.jsonl", Path(run_dir) / f"{NAUTILUS_LOG}.jsonl"


def node_config_common(live: LiveSection, run_dir: Path, log_file_name: str = NAUTILUS_LOG, *,
                       trader_id: str, buffer_deltas: bool = True) -> dict:
    """``TradingNodeConfig`` fields every live mode shares: trader id, JSON file logging in the run
    directory, buffered deltas, cache and the ``[live]`` timeouts. ``log_file_name``: the live run
    with keys passes ``NAUTILUS_LOG_FIFO`` so that the file log passes through the masker.
    ``buffer_deltas``: the data engine collects rows until ``F_LAST`` (shadow's raw client; live
    hands whole messages and turns it off)."""
    from nautilus_trader.config import CacheConfig, LiveDataEngineConfig, LoggingConfig

    return dict(
        trader_id=trader_id,
        logging=LoggingConfig(log_level=live.log_level.upper(), log_colors=False, log_directory=str(run_dir),
                              log_file_name=log_file_name, log_file_format="json", log_level_file="DEBUG"),
        # An exception in a data handler (strategy, guard, metrics, recorder) stops the node the
        # normal way (cancel, venue check, one error line) instead of Nautilus' default os._exit(1),
        # which left our orders resting unchecked.
        data_engine=LiveDataEngineConfig(buffer_deltas=buffer_deltas, graceful_shutdown_on_exception=True),
        cache=CacheConfig(),
        timeout_connection=live.timeout_connection_s,
        timeout_reconciliation=live.timeout_reconciliation_s,
        timeout_portfolio=PORTFOLIO_TIMEOUT_S,
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
           duration_s: float | None, endpoints=None) -> dict:
    """What is about to run: environment, where orders go (resolved endpoints and their class),
    account, instrument, limits, guard thresholds."""
    s = cfg.strategy
    guards = {}
    if cfg.risk is not None and cfg.risk.enabled:
        guards = {name: {k: v for k, v in params.items()} for name, params in cfg.risk.guards.items()}
        guards["engine"] = msgspec.to_builtins(cfg.risk.engine)
    return {
        "environment": env, "account": live.account, "api_key": creds.masked_key, "key_source": creds.source,
        "instrument": cfg.run.instrument, "config": cfg.source,
        "adapter_environment": endpoints.adapter_environment if endpoints is not None else (live.adapter_environment or env),
        "orders_to": endpoints.order_class if endpoints is not None else "",
        "real_money": bool(endpoints is not None and endpoints.real_money),
        "endpoints": endpoints.to_json() if endpoints is not None else
        {k: getattr(live, k) or "bybit default" for k in ("base_url_http", "base_url_ws_public", "base_url_ws_private",
                                                           "base_url_ws_trade")},
        "limits": {k: s.get(k) for k in ("level_size", "max_position", "levels_per_side", "min_half_spread_bps",
                                         "fee_floor_enabled", "use_amend") if k in s},
        "guards": guards, "foreign_orders": live.foreign_orders, "lock": str(lock_file),
        "metrics_port": metrics_port, "duration_s": duration_s,
        "trader_id": live_trader_id(creds.api_key) if getattr(creds, "api_key", "") else TRADER_ID,
    }


def print_banner(info: dict) -> None:
    from mmbot.live.endpoints import CLASS_NAMES

    money = "REAL MONEY" if info.get("real_money") else "no real money"
    lines = [
        "=" * 72,
        f"mmbot live  ENVIRONMENT: {info['environment'].upper()}   orders go to: {info.get('orders_to', '?').upper()}"
        f" ({money})",
        f"account: {info['account']}   key: {info['api_key']} ({info['key_source'].split(':')[0]})   "
        f"Bybit client environment: {info.get('adapter_environment', '?')}",
        f"instrument: {info['instrument']}   config: {info['config']}   trader id: {info.get('trader_id', '?')}"
        " (our client order ids: O-…-<its tag>-…)",
        f"limits: {json.dumps(info['limits'])}",
    ]
    if info.get("sizing"):
        lines.append(f"sizes from USDT notional: {info['sizing']}")
    for name, params in info["guards"].items():
        lines.append(f"guard {name}: {json.dumps(params, default=str)}")
    for role, e in info["endpoints"].items():
        if isinstance(e, dict):
            used = "" if e["used"] else "   (not used: orders go over REST in demo)"
            lines.append(f"endpoint {role:<10} {e['url']}   [{CLASS_NAMES.get(e['class'], e['class'])}]"
                         f"   from {e['source']}{used}")
        else:
            lines.append(f"endpoint {role}: {e}")
    lines += [f"foreign orders at start: {info['foreign_orders']}   lock: {info['lock']}   "
              f"metrics port: {info['metrics_port']}   duration: {info['duration_s'] or 'until SIGINT/SIGTERM'}"]
    if info.get("run_dir"):
        lines.append(f"run folder: {info['run_dir']}")
    if info.get("started_halted"):
        from mmbot.live.session import halted_text

        lines.append(f"{halted_text(info['started_halted'])}: nothing is quoted until it is removed "
                     f"(mmbot kill --config {info.get('config_path', info['config'])} --env {info['environment']} "
                     "--resume)")
    lines.append("=" * 72)
    print("\n".join(lines), file=sys.stderr, flush=True)
    log_json("banner", **info)


# -- run loop ---------------------------------------------------------------------------------

class LiveRun:
    """Build the node, run it until a signal / the duration / a startup refusal or failure, stop,
    and (live modes) check the venue for orders left.

    ``ready_timeouts`` = (connection_s, reconciliation_s) turns on the readiness check (exit 4);
    ``reconnect_timeout_s`` the connection watchdog (exit 5); ``sweep`` (``mmbot.live.stop.VenueSweep``)
    the stop-time venue check (exit 3). Shadow mode (``mmbot.live.shadow.ShadowRun``) uses none.
    ``status_interval_s`` > 0: one console status line per interval and a line per guard transition
    (``mmbot.live.status.StatusConsole``). ``after_stop(run)``: called once the node has stopped (and
    the venue was checked), before it is disposed: the end-of-session report (mmbot/live/report.py)."""

    def __init__(self, node_config, instrument_id: str, duration_s: float | None = None, *,
                 ready_timeouts: tuple[float, float] | None = None, reconnect_timeout_s: float | None = None,
                 sweep=None, exec_client_factory=None, status_interval_s: float = 0.0, after_stop=None,
                 instrument_ids: list[str] | None = None) -> None:
        self.node_config = node_config
        self.instrument_id = instrument_id
        # every instrument of the node (a [portfolio]: mmbot/live/portfolio.py); the startup sweep,
        # the position check at readiness and the stop's venue check run for each
        self.instrument_ids = list(instrument_ids or [instrument_id])
        self.qsim = None  # shadow's simulator (ShadowRun); the portfolio report reads it
        self.duration_s = duration_s
        self.ready_timeouts = ready_timeouts
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sweep = sweep
        self.exec_client_factory = exec_client_factory
        self.status_interval_s = status_interval_s
        self.after_stop = after_stop
        self.console = None
        self.node = None
        self.stop_reason = ""
        self.exit_code = 0
        self.ready = False
        self._frozen = False       # freeze_startup_heap() ran at ready: run() unfreezes at the end
        self.error = ""            # the one line for the operator when the exit code is not 0
        self.sweep_result = None   # the venue check at stop (several instruments: merged)
        self.sweep_results: dict[str, object] = {}  # instrument id -> its SweepResult
        self.started_ns = 0        # wall clock: the run loop started / the node stopped
        self.stopped_ns = 0
        # instrument id -> the local time (ns) the strategies were asked to stop at (live: the
        # node's clock; shadow: the simulator's receive-stamp timeline); None when the node stopped
        # itself (ShutdownSystem). The session report records it (metadata.session.strategy_stop_ns)
        # and `mmbot compare` cuts a shadow session and its replay there.
        self.strategy_stop_ns: dict[str, int] | None = None
        # shadow: instrument id -> the exchange time below which every market event had reached the
        # simulator at the stop (QueueSimExecutionClient.received_through_ns); None elsewhere
        self.stop_received_through_ns: dict[str, int | None] | None = None
        self.start_balance: float | None = None   # the trading account's balance total when the trader started
        self.start_position: float | None = None  # our net position on the instrument then
        self.shutdown_reason = ""  # an engine's ShutdownSystem (graceful shutdown on an exception)
        self._position_check = None  # asyncio task of _check_start_position ("" = equal, else the line)

    def build(self):
        from nautilus_trader.live.node import TradingNode

        from adapters.bybit_live import MmbotBybitDataClientFactory, MmbotBybitExecClientFactory
        from mmbot.builders import VENUE
        from mmbot.live.recording import RAW_TAP_CLIENT

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        node = TradingNode(config=self.node_config, loop=loop)
        node.add_data_client_factory(VENUE, MmbotBybitDataClientFactory)
        # Nautilus' Bybit execution client, plus masked reasons, stream state and fills found by
        # reconciliation applied from Bybit's execution list (adapters/bybit_live.py).
        node.add_exec_client_factory(VENUE, self.exec_client_factory or MmbotBybitExecClientFactory)
        if RAW_TAP_CLIENT in (self.node_config.data_clients or {}):  # the recorder's raw public tap
            from adapters.recorder import RawPublicDataClientFactory

            node.add_data_client_factory(RAW_TAP_CLIENT, RawPublicDataClientFactory)
        node.build()
        from strategies.risk.supervisor import RiskSupervisor

        for actor in node.trader.actors():
            if isinstance(actor, RiskSupervisor):
                actor.bind_risk_engine(node.kernel.risk_engine)
        from mmbot.builders import install_pretrade_check

        install_pretrade_check(node.kernel)  # [risk.engine] max_notional_per_order (margin accounts)
        self.node = node
        self.watch_shutdown(node)
        self._attach_console(node)
        return node

    def watch_shutdown(self, node) -> None:
        """Keep the reason of an engine's ShutdownSystem (an exception in a handler): the run loop
        then stops the run the normal way and names it on the one error line."""
        def on_shutdown(command) -> None:
            self.shutdown_reason = self.shutdown_reason or (getattr(command, "reason", None) or "shutdown requested")

        node.kernel.msgbus.subscribe(topic="commands.system.shutdown", handler=on_shutdown)

    def _attach_console(self, node) -> None:
        """Status lines and guard transitions on the console (before the trader starts, so a halt
        at start is shown too)."""
        if self.status_interval_s <= 0:
            return
        from mmbot.live.metrics_server import MetricsActor
        from mmbot.live.status import StatusConsole
        from strategies.risk.base import RISK_TOPIC

        def render():
            actor = self._actor(MetricsActor)
            return actor.m.registry if actor is not None and actor.is_running else None

        self.console = StatusConsole(self.status_interval_s, render)
        node.kernel.msgbus.subscribe(topic=RISK_TOPIC, handler=self.console.on_constraint)

    def account(self):
        """The trading account the session's PnL is booked in (live: the venue's)."""
        from nautilus_trader.model.identifiers import Venue

        return self.node.cache.account_for_venue(Venue(InstrumentId.from_str(self.instrument_id).venue.value))

    def _note_start(self) -> None:
        """Balance and position when the trader started: the session report's starting point."""
        iid = InstrumentId.from_str(self.instrument_id)
        if self.start_position is None:
            self.start_position = sum(float(p.signed_qty) for p in self.node.cache.positions_open(instrument_id=iid))
        if self.start_balance is None:
            account = self.account()
            instrument = self.node.cache.instrument(iid)
            if account is not None and instrument is not None:
                bal = account.balance_total(instrument.quote_currency)
                if bal is not None:
                    self.start_balance = bal.as_double()

    async def _sweep_leftovers_or_stop(self, stop: asyncio.Event) -> str:
        """``_sweep_leftovers``, given up at once on SIGINT/SIGTERM (it may wait for a frozen venue up
        to ``stop_deadline_s``): "" to go on, else the one line (exit 4)."""
        t0 = time.monotonic()
        sweep = asyncio.ensure_future(self._sweep_leftovers())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sweep, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if sweep.done():
            stopped.cancel()
            return sweep.result()
        sweep.cancel()
        try:
            await sweep
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 (given up on purpose)
            pass
        log_json("startup_sweep", "WARNING", interrupted=self.stop_reason or "stop")
        return (f"not ready: stopped ({self.stop_reason or 'stop'}) after {time.monotonic() - t0:.0f}s, before the run "
                "was ready (during the startup sweep, before any client connected: our own orders left by an earlier "
                "run may still rest; check "
                "the exchange)")

    async def _sweep_leftovers(self) -> str:
        """Before Nautilus' startup reconciliation: cancel our own orders left open on the venue
        (a killed run's) and confirm them closed, so that none can fill while Nautilus reads the
        venue's orders, executions and position as one snapshot. "" to go on, else the one line.

        A venue that never answers is not judged here (readiness names that failure, e.g. a wrong
        secret); a leftover the sweep could not confirm closed before ``stop_deadline_s`` is."""
        if self.sweep is None:
            return ""
        from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry

        several = len(self.instrument_ids) > 1
        for iid in self.instrument_ids:
            try:
                instrument = InstrumentRegistry().get_by_id(iid)
            except InstrumentDefinitionError:  # no shipped definition: the venue's is checked at readiness
                log_json("startup_sweep", "WARNING", skipped="no shipped instrument definition",
                         **({"instrument": iid} if several else {}))
                continue
            r = await self.sweep_for(iid).run(instrument, [])
            log_json("startup_sweep", "INFO" if r.ok else "WARNING" if not r.verified else "ERROR",
                     **({"instrument": iid} if several else {}), **r.to_json())
            if r.ok or not r.verified:
                continue
            return (f"not ready: {len(r.left)} own order(s) of an earlier run still rest on the venue"
                    + (f" on {iid}" if several else "") + f" after "
                    f"{r.seconds:.1f}s of cancelling ({', '.join(r.left)}; last venue error: {r.last_error or 'none'}); "
                    "refusing to start on them: cancel them on the exchange")
        return ""

    def sweep_for(self, iid: str):
        """The venue check (``VenueSweep``) of one instrument of the node."""
        import copy

        if self.sweep is None or len(self.instrument_ids) == 1 or getattr(self.sweep, "instrument_id", iid) == iid:
            return self.sweep  # one instrument: the sweep as given (a test's stand-in may name none)
        sweep = copy.copy(self.sweep)
        sweep.instrument_id = iid
        return sweep

    def _release_gate(self) -> None:
        for gate in self._actors(StartupGate):  # one per instrument
            gate.release()

    def _actor(self, cls):
        return next((a for a in self.node.trader.actors() if isinstance(a, cls)), None)

    def _actors(self, cls) -> list:
        return [a for a in self.node.trader.actors() if isinstance(a, cls)]

    def _venue_clients(self):
        """(data client, exec client) of the venue, None when absent (shadow)."""
        from nautilus_trader.model.identifiers import ClientId

        from mmbot.builders import VENUE

        k = self.node.kernel
        cid = ClientId(VENUE)
        return k.data_engine._clients.get(cid), k.exec_engine._clients.get(cid)

    def _fail(self, code: int, event: str, line: str, **fields) -> None:
        if not self.exit_code:
            self.exit_code = code
            self.error = line
        log_json(event, "ERROR", reason=line, **fields)

    def _readiness(self, elapsed_s: float) -> str:
        """"" = ready; "wait"; anything else = why the start failed (the one line)."""
        conn_s, recon_s = self.ready_timeouts
        k = self.node.kernel
        data, exe = self._venue_clients()
        if not (k.data_engine.check_connected() and k.exec_engine.check_connected()):
            if elapsed_s < conn_s:
                return "wait"
            down = [(name, getattr(c, "connect_error", "") if c is not None else "")
                    for name, c, ok in (("data", data, k.data_engine.check_connected()),
                                        ("execution", exe, k.exec_engine.check_connected())) if not ok]
            why = "; ".join(f"{n} client: {e or 'still connecting'}" for n, e in down)
            return (f"not ready: {' and '.join(n for n, _ in down)} client(s) not connected within "
                    f"live.timeout_connection_s = {conn_s:g}s ({why}); check the API key and secret, their "
                    "permissions and IP whitelist, and that the endpoints are reachable")
        if not self.node.trader.is_running:
            if elapsed_s < conn_s + recon_s + PORTFOLIO_TIMEOUT_S + 2.0:
                return "wait"
            return (f"not ready: account not reconciled within live.timeout_reconciliation_s = {recon_s:g}s "
                    "after connecting (see nautilus.jsonl in the run directory)")
        for one in self.instrument_ids:
            if self.node.cache.instrument(InstrumentId.from_str(one)) is None:
                return f"not ready: instrument {one} ({'run.instrument' if len(self.instrument_ids) == 1 else 'portfolio.instruments'}) not found on the venue"
        iid = InstrumentId.from_str(self.instrument_id)
        strategies = self.node.trader.strategies()
        if not strategies or not all(st.is_running for st in strategies):
            return f"not ready: the strategy did not start on {self.instrument_id} (see nautilus.jsonl in the run directory)"
        from nautilus_trader.model.identifiers import Venue

        if self.node.cache.account_for_venue(Venue(iid.venue.value)) is None:
            return "wait" if elapsed_s < conn_s + recon_s + PORTFOLIO_TIMEOUT_S + 2.0 else \
                "not ready: no account state from the venue"
        if exe is not None and hasattr(exe, "generate_position_status_reports"):
            if self._position_check is None:
                self._position_check = asyncio.ensure_future(self._check_start_positions(exe))
            if not self._position_check.done():
                return "wait"
            return self._position_check.result()
        return ""

    def _stopped_before_ready(self, elapsed_s: float) -> str:
        """The one line of a run stopped (``--duration``, SIGINT/SIGTERM) before it was ever ready."""
        k = self.node.kernel
        data, exe = self._venue_clients()
        down = [f"{name} client: {getattr(c, 'connect_error', '') or 'still connecting'}"
                for name, c, ok in (("data", data, k.data_engine.check_connected()),
                                    ("execution", exe, k.exec_engine.check_connected())) if not ok]
        state = "; ".join(down) if down else "connected, start not complete"
        return (f"not ready: stopped ({self.stop_reason or 'stop'}) after {elapsed_s:.0f}s, before the run was "
                f"ready ({state})")

    async def _check_start_positions(self, exe) -> str:
        """``_check_start_position`` of every instrument of the node: "" when each is equal, else
        the line of the first that is not."""
        for one in self.instrument_ids:
            why = await self._check_start_position(exe, InstrumentId.from_str(one))
            if why:
                return why
        return ""

    async def _check_start_position(self, exe, iid) -> str:
        """"" when the node's net position on ``iid`` (every open position in its cache: the killed
        run's, reconciled as EXTERNAL, and the strategy's) equals the venue's, else the one line.

        Nautilus' startup reconciliation asks the venue for orders, executions and the position at
        once and trusts the answers as one snapshot. A leftover order of a killed run that fills
        while they are answered breaks that: e.g. the position answered before the fill, the
        execution list after it, and Nautilus adds a made-up fill (tag VENUE, ids ``S-…``) that
        cancels the real one to match the old position; or the fill's private message creates the
        order before the snapshot lands and the position check then "corrects" it away. The node
        would quote on a wrong inventory for the whole session. Nothing here can tell which fill is
        made up, so the start fails (exit 4) and the stop cancels what the strategy placed; the next
        start finds the leftovers closed and a quiet snapshot."""
        from decimal import Decimal

        from nautilus_trader.execution.messages import GeneratePositionStatusReports

        end = time.monotonic() + POSITION_CHECK_S
        node_qty = venue_qty = None
        error = ""
        while True:
            try:
                reports = await asyncio.wait_for(exe.generate_position_status_reports(GeneratePositionStatusReports(
                    instrument_id=iid, start=None, end=None, command_id=UUID4(),
                    ts_init=self.node.kernel.clock.timestamp_ns())), timeout=POSITION_CHECK_S)
                # one report per venue position id (one-way mode: one, the client may list it twice)
                by_id = {r.venue_position_id: r.signed_decimal_qty for r in reports or [] if r.instrument_id == iid}
                venue_qty = sum(by_id.values(), Decimal(0))
                node_qty = sum((p.signed_decimal_qty() for p in self.node.cache.positions_open(instrument_id=iid)),
                               Decimal(0))
                if node_qty == venue_qty:
                    log_json("start_position", instrument=str(iid), position=str(node_qty))
                    return ""
            except Exception as e:  # noqa: BLE001 (a failed query is retried until the end)
                error = f"{type(e).__name__}: {e}"
            if time.monotonic() >= end:
                break
            await asyncio.sleep(POSITION_CHECK_INTERVAL_S)
        if node_qty is None:
            return (f"not ready: the venue's position on {iid} could not be read within "
                    f"{POSITION_CHECK_S:g}s ({error}): the node's inventory is unverified")
        return (f"not ready: the node's position on {iid} after Nautilus' startup reconciliation is "
                f"{node_qty}, the exchange's {venue_qty} (a fill landed while it reconciled, e.g. an order left by "
                f"a killed run); refusing to quote on a wrong inventory: start again")

    def _streams_down(self) -> list[str]:
        _, exe = self._venue_clients()
        if exe is None or not hasattr(exe, "streams_active"):
            return []
        return [name for name, up in exe.streams_active().items() if not up]

    def _local_open_orders(self, instrument_id: str | None = None) -> list[str]:
        """Our orders the node had not seen closed: open, or sent and not yet acknowledged (on
        ``instrument_id``; None: on every instrument of the node)."""
        tag = str(self.node_config.trader_id).split("-")[-1]
        out = []
        for one in ([instrument_id] if instrument_id else self.instrument_ids):
            out += [o.client_order_id.value for o in self.node.cache.orders(instrument_id=InstrumentId.from_str(one))
                    if not o.is_closed and is_own_order_id(o.client_order_id.value, tag)]
        return sorted(out)

    async def _reconcile_closed_on_venue(self, timeout_s: float = RECONCILE_AT_STOP_S) -> None:
        """After a venue check that found none of our orders open: those the cache still has open
        were closed on the venue while their messages were lost (a private-stream outage: a fill,
        a cancel). Nautilus reconciles each from the venue (``QueryOrder``: the order's status and,
        through ``adapters.bybit_live_exec``, its fills from the execution list) before the node
        disconnects, so the node's final position is the exchange's."""
        from nautilus_trader.execution.messages import QueryOrder

        node = self.node
        ids = self._local_open_orders()
        for coid in ids:
            o = node.cache.order(ClientOrderId(coid))
            node.kernel.exec_engine.execute(QueryOrder(
                trader_id=o.trader_id, strategy_id=o.strategy_id, instrument_id=o.instrument_id,
                client_order_id=o.client_order_id, venue_order_id=o.venue_order_id, command_id=UUID4(),
                ts_init=node.kernel.clock.timestamp_ns()))
        end = time.monotonic() + timeout_s
        while self._local_open_orders() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        left = self._local_open_orders()
        log_json("stop_reconcile", "INFO" if not left else "WARNING", queried=ids, still_open_in_cache=left)

    async def _stop_check(self) -> None:
        """The stop's venue check, instrument by instrument (every one's orders cancelled and
        confirmed closed on the venue): any order left on any instrument is exit 3, its line naming
        the instrument. ``sweep_result``: the merged result (None when no instrument was checked)."""
        from mmbot.live.stop import SweepResult

        node = self.node
        if self.sweep is None:
            return
        several = len(self.instrument_ids) > 1
        failed: list[str] = []
        for one in self.instrument_ids:
            local = self._local_open_orders(one)
            if not (self.ready or local):
                continue
            instrument = node.cache.instrument(InstrumentId.from_str(one))
            if instrument is None:
                log_json("stop_check", "ERROR", error="instrument unknown: cannot query the venue", orders=local,
                         **({"instrument": one} if several else {}))
                continue
            r = await self.sweep_for(one).run(instrument, local)
            self.sweep_results[one] = r
            log_json("stop_check", "INFO" if r.ok else "ERROR", **({"instrument": one} if several else {}),
                     **r.to_json())
            if not r.ok:
                failed.append(f"{one}: {r.summary()}" if several else r.summary())
        results = list(self.sweep_results.values())
        if len(results) == 1:
            self.sweep_result = results[0]
        elif results:
            merged = SweepResult(ok=all(r.ok for r in results), verified=all(r.verified for r in results))
            for r in results:
                merged.remaining += r.remaining
                merged.unconfirmed += r.unconfirmed
                merged.cancels_sent += r.cancels_sent
                merged.foreign += r.foreign
                merged.rounds += r.rounds
                merged.seconds += r.seconds
                merged.last_error = merged.last_error or r.last_error
            self.sweep_result = merged
        if failed:
            self.exit_code = EXIT_ORDERS_LEFT  # overrides: the most urgent thing to act on
            self.error = "; ".join(failed)
        elif results and self._local_open_orders():
            await self._reconcile_closed_on_venue()

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
        refused = await self._sweep_leftovers_or_stop(stop)
        if refused:
            self.stop_reason = self.stop_reason or "not ready"
            self._fail(EXIT_NOT_READY, "not_ready", refused)
            return
        run_task = asyncio.create_task(node.run_async())
        t0 = time.monotonic()
        self.started_ns = time.time_ns()
        policy = None
        started_logged = False
        down_since: float | None = None
        while not stop.is_set():
            now = time.monotonic()
            if run_task.done():  # nobody asked: an error, or Nautilus' graceful shutdown on an exception
                self.stop_reason = self.stop_reason or "node stopped"
                if run_task.exception() is not None:
                    self._fail(EXIT_INTERNAL, "node_error", f"the node stopped on an error: {run_task.exception()}")
                elif self.ready_timeouts is not None and not self.ready:
                    self._fail(EXIT_NOT_READY, "not_ready", "not ready: the node stopped during its start")
                elif self.ready_timeouts is not None:
                    self._fail(EXIT_INTERNAL, "node_error", "the node stopped by itself (see nautilus.jsonl in the "
                               "run directory)")
                break
            if self.shutdown_reason:  # an engine caught an exception in a handler: Nautilus is stopping
                self.stop_reason = self.stop_reason or "error"
                self._fail(EXIT_INTERNAL, "node_error", f"the node shut down on an error: {self.shutdown_reason} "
                           "(see nautilus.jsonl in the run directory)")
                break
            if self.duration_s is not None and now - t0 >= self.duration_s:
                self.stop_reason = self.stop_reason or "duration"
                break
            if node.trader.is_running:
                if not started_logged:
                    started_logged = True
                    log_json("running", instrument=self.instrument_id)
                self._note_start()
                if self.console is not None:
                    self.console.tick()
                if policy is None:
                    policy = self._actors(StartupOrderPolicy)  # one per instrument
                    for p in policy:
                        if p.own_cancelled or p.foreign:
                            # On the console whatever live.log_level is: what the restart found and did
                            # (the policy's own warning goes to Nautilus' log only from WARNING up).
                            log_json("startup_orders", "WARNING", own_cancelled=p.own_cancelled,
                                     foreign=p.foreign, foreign_orders=p.config.foreign_orders,
                                     **({"instrument": p.config.instrument_id} if len(policy) > 1 else {}))
                refused = next((p.refused for p in policy or [] if p.refused), "")
                if refused:
                    self.stop_reason = "refused"
                    self._fail(EXIT_REJECTED, "refused", refused)
                    break
            if self.ready_timeouts is not None and not self.ready:
                why = self._readiness(now - t0)
                if why == "":
                    self.ready = True
                    # Before the gate opens: its one full collection delays no quote.
                    self._frozen = freeze_startup_heap()
                    self._release_gate()
                    log_json("ready", instrument=self.instrument_id, seconds=round(now - t0, 3),
                             gc_frozen_objects=gc.get_freeze_count())
                elif why != "wait":
                    self.stop_reason = "not ready"
                    self._fail(EXIT_NOT_READY, "not_ready", why)
                    break
            elif self.ready:
                strategies = node.trader.strategies()
                if strategies and not all(st.is_running for st in strategies):
                    self.stop_reason = "strategy stopped"
                    self._fail(EXIT_INTERNAL, "strategy_stopped", "the strategy stopped by itself (see nautilus.jsonl "
                               "in the run directory)")
                    break
                if self.reconnect_timeout_s is not None:
                    down = self._streams_down()
                    if down and down_since is None:
                        down_since = now
                        log_json("stream_down", "WARNING", streams=down)
                    elif not down and down_since is not None:
                        log_json("stream_up", seconds_down=round(now - down_since, 3))
                        down_since = None
                    elif down and now - down_since >= self.reconnect_timeout_s:
                        self.stop_reason = "connection lost"
                        self._fail(EXIT_CONNECTION_LOST, "connection_lost",
                                   f"connection lost: {', '.join(down)} down for {now - down_since:.0f}s "
                                   f"(live.reconnect_timeout_s = {self.reconnect_timeout_s:g}); Nautilus kept "
                                   "reconnecting; stopped and cancelled over REST")
                        break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass
        if self.ready_timeouts is not None and not self.ready and not self.exit_code:
            if self._readiness(0.0) == "":  # ready since the last poll (stopping now: the gate stays shut)
                self.ready = True
                log_json("ready", instrument=self.instrument_id, seconds=round(time.monotonic() - t0, 3))
            else:  # --duration or a signal before readiness: the session never ran, which is no success
                self._fail(EXIT_NOT_READY, "not_ready", self._stopped_before_ready(time.monotonic() - t0))
        log_json("stopping", reason=self.stop_reason)
        if self.console is not None and node.trader.is_running:
            self.console.tick(force=True)  # the state the session ends in
        if self.shutdown_reason:  # the kernel is stopping itself (ShutdownSystem): wait for it, no second stop
            await asyncio.sleep(0.2)  # the kernel's stop task (created by the command) has begun
            limit = time.monotonic() + self.node_config.timeout_disconnection + self.node_config.timeout_post_stop + 5.0
            while getattr(node.kernel, "_is_stopping", False) and time.monotonic() < limit:
                await asyncio.sleep(0.1)
        waited = False
        if node.trader.is_running and not getattr(node.kernel, "_is_stopping", False):
            # The strategies first, then the trader: Nautilus 1.231's Trader stops every actor before
            # the strategies, so the run ledger and the recorder (actors) were stopped while the
            # strategy's stop-time cancels travelled, and a quote filling in that window reached the
            # venue and the cache but not the session report nor the recording (found by CI under
            # load, docs/runbook.md "Stop"). Stopped first, the strategies cancel while every actor
            # still listens; the trader's stop then stops the actors (it skips stopped strategies).
            self.strategy_stop_ns = self._strategy_stop_instants()
            for strategy in node.trader.strategies():
                if strategy.is_running:
                    strategy.stop()
            # the cancels' answers and any last fill land while the actors run (shadow: simulated
            # latencies of milliseconds; live: the venue's round trip)
            await asyncio.sleep(self.node_config.timeout_post_stop if self.sweep is not None
                                else min(self.node_config.timeout_post_stop, 1.0))
            waited = True
        if self.sweep is not None and node.trader.is_running and not getattr(node.kernel, "_is_stopping", False):
            # The venue check with the clients connected AND the actors running: an order resting
            # until the check cancels it (its strategy's cancel did not land in time) can still
            # fill, and that fill must reach the cache over the private stream (the node's final
            # position) and the recorder and run ledger (the recording and the session report).
            # Then the trader's stop stops the actors; the kernel's stop_async below only
            # disconnects (it stops a running trader itself otherwise).
            if not waited:
                await asyncio.sleep(self.node_config.timeout_post_stop)
            await self._stop_check()
            node.trader.stop()
        else:
            await self._stop_check()
        if node.kernel.is_running and not getattr(node.kernel, "_is_stopping", False) or node.trader.is_running:
            await node.stop_async()
        self.stopped_ns = time.time_ns()
        open_orders = [o for one in self.instrument_ids
                       for o in node.cache.orders_open(instrument_id=InstrumentId.from_str(one))]
        _, exe = self._venue_clients()
        log_json("stopped", open_orders_in_cache=len(open_orders),
                 positions=[str(p.signed_qty) for p in node.cache.positions_open()],
                 # venue reports that overtook their order's OrderSubmitted (adapters/bybit_live.py)
                 reports_deferred=getattr(exe, "reports_deferred", None),
                 reports_defer_expired=getattr(exe, "reports_defer_expired", None),
                 venue_checked=self.sweep_result is not None,
                 orders_left_on_venue=(len(self.sweep_result.left) if self.sweep_result is not None else None))
        if open_orders and self.sweep_result is None:
            log_json("open_orders_left", "WARNING", client_order_ids=[o.client_order_id.value for o in open_orders])
        if self.after_stop is not None:
            try:
                self.after_stop(self)
            except Exception as e:  # noqa: BLE001 (the session's outcome stands; the report is extra)
                log_json("report_error", "ERROR", error=f"{type(e).__name__}: {e}")
        if not run_task.done():
            run_task.cancel()
            try:
                await run_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _strategy_stop_instants(self) -> dict[str, int]:
        """Instrument id -> the instant the strategies are asked to stop, on the clock their
        decisions are stamped with (live: the node's wall clock; ShadowRun: the simulator's)."""
        now = self.node.kernel.clock.timestamp_ns()
        return {iid: now for iid in self.instrument_ids}

    def run(self) -> int:
        node = self.node or self.build()
        try:
            node.get_event_loop().run_until_complete(self._main())
        finally:
            try:
                node.dispose()
            except Exception as e:  # noqa: BLE001
                log_json("dispose_error", "WARNING", error=str(e))
            if self._frozen:  # the caller's heap as it was (tests run nodes in-process)
                gc.unfreeze()
                self._frozen = False
        return self.exit_code


KILL_TOKEN_MIN_CHARS = 16  # a bearer token shorter than this is guessable on POST /kill


def freeze_startup_heap() -> bool:
    """Once the node is ready: one full collection, then ``gc.freeze()``: every object alive now
    (imported modules, configs, instruments, engines, caches as started) moves to the permanent
    generation, which the cyclic collector never scans again. Before, each full collection re-walked
    that whole startup heap while the node quoted: ~100 ms with the loop stopped (one in a 90-s
    loopback run, docs/benchmarks.md "Live on loopback"). Reference counting still frees a frozen
    object; only a cycle among them would outlive the session (the startup heap is the session's).
    Not under ``MMBOT_TRACEMALLOC`` (memtrace counts ``gc.get_objects()``, which skips frozen
    objects). Returns whether it froze."""
    import tracemalloc

    if tracemalloc.is_tracing():
        return False
    gc.collect()
    gc.freeze()
    return True


def kill_token_from_env(live: LiveSection, environ=None) -> str:
    """The POST /kill bearer token, or "" (no endpoint). A set token shorter than
    ``KILL_TOKEN_MIN_CHARS`` is refused (``ConfigError``): it is guessed in a few tries, and as a
    masked secret it would rewrite every occurrence of its characters in banner, logs and
    recordings (``MMBOT_KILL_TOKEN=0`` masked every ``0``). The token itself is never printed."""
    import os

    environ = os.environ if environ is None else environ
    token = environ.get(live.kill_token_env, "") if live.kill_token_env else ""
    if token and len(token) < KILL_TOKEN_MIN_CHARS:
        raise ConfigError(f"environment variable {live.kill_token_env} (live.kill_token_env): the /kill token has "
                          f"{len(token)} characters, at least {KILL_TOKEN_MIN_CHARS} are needed (e.g. "
                          "`openssl rand -hex 16`); unset it to run without POST /kill")
    return token


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
