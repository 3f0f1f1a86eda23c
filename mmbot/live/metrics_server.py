"""Prometheus metrics for a running node: a Nautilus ``Actor`` plus an HTTP server thread.

``MetricsActor`` reads only the message bus and the cache (order events, fills, positions, the
order book, the risk guards' constraints), so it is mode-agnostic: the same actor can run in a
backtest, shadow or live node. Every series carries the labels ``environment`` and ``instrument``
(``BASE_LABELS``), so several bots, and the instruments of a ``[portfolio]`` node (one actor per
instrument on one registry, ``registry_group``; docs/portfolio.md "Shadow"), never mix on one
dashboard. ``MetricsHttpServer`` serves, on one daemon thread
running its own asyncio loop (an idle or slow client costs a coroutine, not a thread; each
connection must deliver its request within ``request_timeout_s`` and at most ``max_connections``
are open at once):

- ``GET /metrics``: the Prometheus text format (prometheus-client, a per-actor registry);
- ``GET /health``: 200 while the process is alive;
- ``GET /ready``: 200 when the instrument is known, connected (a book update within
  ``ready_max_book_age_s``), the book is valid (bid < ask) and the trading account is in the cache
  (live: reconciled by Nautilus; shadow: the simulator's account, ``account_id``); 503 otherwise,
  with a JSON body saying which check fails;
- ``POST /kill`` (only when a token is configured; ``Authorization: Bearer <token>``): sends
  ``{"action": "kill", ...}`` to the kill switch's bus endpoint ``mmbot.risk.kill``
  (``{"action": "reset"}`` with ``?action=reset``).

Metric names are in ``METRIC_NAMES`` and docs/runbook.md; the Grafana dashboard
(docs/grafana_dashboard.json) uses them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import socket
import threading
import time
from urllib.parse import parse_qs

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import OrderBookDeltas
from nautilus_trader.model.enums import BookType, LiquiditySide, OrderSide, RecordFlag
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderFilled,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderSubmitted,
    OrderUpdated,
)
from nautilus_trader.model.identifiers import AccountId, InstrumentId
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from adapters.order_ids import own_order_prefix
from strategies.risk.base import loop_dispatcher
from strategies.risk.base import (
    DATA_STATUS_TOPIC, KILL_ENDPOINT, RISK_TOPIC, TRADING_STATES, ConstraintBoard, RiskConstraint, most_restrictive,
)

P = "mmbot_"
ALLOCATOR_GUARD, ALLOCATOR_BLACKLISTED = "allocator", "BLACKLISTED"  # strategies/portfolio/allocator.py
BASE_LABELS = ("environment", "instrument")  # on every series (docs/runbook.md, the Grafana variables)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GUARD_STATES = {
    "position": ("ACTIVE", "REDUCE_ONLY", "REDUCING"), "loss": ("ACTIVE", "HALTED"),
    "drawdown": ("ACTIVE", "HALTED"), "edge": ("ACTIVE", "WIDENED", "PAUSED"),
    "circuit_breaker": ("CLOSED", "OPEN", "HALF_OPEN"), "stale_data": ("ACTIVE", "STALE", "INVALID"),
    "kill_switch": ("ACTIVE", "HALTED"), "portfolio": ("ACTIVE", "REDUCE_ONLY", "REDUCING", "HALTED"),
}
CB_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
TRADING_STATE_VALUE = {state: i for i, state in enumerate(TRADING_STATES)}  # ACTIVE 0, REDUCING 1, HALTED 2
_F_SNAPSHOT = int(RecordFlag.F_SNAPSHOT)

# HTTP server limits (MetricsHttpServer): a Prometheus scrape sends its request at once and takes
# milliseconds; anything slower is a stuck or hostile client, dropped without a thread.
REQUEST_TIMEOUT_S = 5.0      # the request head must arrive (and the answer drain) within this
MAX_CONNECTIONS = 64         # open at once; a newcomer closes the oldest idle one (else 503)
MAX_REQUEST_HEAD_BYTES = 8192

_REASONS = (
    ("post_only", re.compile(r"post.?only|would (take|cross)|170218|EC_PostOnlyWillTakeLiquidity", re.I)),
    ("rate_limit", re.compile(r"10006|\b429\b|\b403\b|rate.?limit|too many", re.I)),
    ("insufficient_balance", re.compile(r"insufficient|110007|110004|balance", re.I)),
    ("unknown_order", re.compile(r"not exist|unknown order|110001|order.*not found", re.I)),
    ("timeout", re.compile(r"time.?out|timed out", re.I)),
    ("denied", re.compile(r"denied|trading state|HALTED|REDUCING", re.I)),
)


def reason_class(reason: str) -> str:
    """A bounded label for a reject reason (free text would explode the label set)."""
    for name, rx in _REASONS:
        if rx.search(reason or ""):
            return name
    return "other"


class MetricsActorConfig(ActorConfig, frozen=True):
    """instrument_id: the quoted instrument. port: HTTP port (0 = pick a free one, -1 = no
    server). host: bind address. ready_max_book_age_s: /ready fails beyond this book age.
    kill_token: enables POST /kill with this bearer token ("" = no endpoint). environment: the
    ``environment`` label (testnet, demo, mainnet, shadow). account_id: the trading account whose
    balances make ``mmbot_equity_usdt`` and whose presence /ready requires ("" = the account of
    the instrument's venue, e.g. BYBIT-UNIFIED; shadow: the simulator's account)."""

    instrument_id: InstrumentId
    port: int = -1
    host: str = "127.0.0.1"
    ready_max_book_age_s: float = 10.0
    kill_token: str = ""
    environment: str = ""
    account_id: str = ""
    update_interval_ms: int = 1000
    # Several instruments in one node: one actor per instrument, all of a group on ONE registry
    # (one /metrics page, each series with its instrument label); the group's actor with a port
    # serves it, /ready over every instrument of the group. "" = an own registry.
    registry_group: str = ""
    # A [portfolio] node: its [risk.portfolio] limits [USDT] as "<measure>.<level>" (gross.soft,
    # net.hard, beta_net.soft, ...), exported by every instrument's actor (mmbot_portfolio_limit_usdt)
    # so the Grafana portfolio panels draw them beside the summed exposure; {} = none.
    portfolio_limits_usdt: dict[str, float] = {}


PORTFOLIO_MEASURES = ("gross", "net", "beta_net")  # [risk.portfolio] <level>_<measure>_notional_usdt


def portfolio_limits_usdt(guard: dict | None) -> dict[str, float]:
    """``MetricsActorConfig.portfolio_limits_usdt`` from a ``[risk.portfolio]`` table (the
    resolved ``risk.guards["portfolio"]``): each ``soft/hard_<measure>_notional_usdt`` it sets."""
    out = {}
    for measure in PORTFOLIO_MEASURES:
        for level in ("soft", "hard"):
            value = (guard or {}).get(f"{level}_{measure}_notional_usdt")
            if value is not None:
                out[f"{measure}.{level}"] = float(value)
    return out


class Metrics:
    """The metric families in one registry; every family is labelled ``BASE_LABELS`` first."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(P + name, doc, [*BASE_LABELS, *labels], registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(P + name, doc, [*BASE_LABELS, *labels], registry=r)

        self.info = gauge("info", "Run identity (value 1)")
        self.up = gauge("up", "1 while the node runs")
        self.ready = gauge("ready", "1 when instrument known, connected, book valid and account present")
        self.orders_submitted = counter("orders_submitted", "Orders submitted", ("side",))
        self.orders_accepted = counter("orders_accepted", "Orders accepted by the venue")
        self.orders_amended = counter("orders_amended", "Orders amended (venue confirmed)")
        self.amend_requests = counter("amend_requests", "Amend requests sent")
        self.orders_cancelled = counter("orders_cancelled", "Orders cancelled (venue confirmed)")
        self.orders_rejected = counter("orders_rejected", "Order rejections by kind and reason class",
                                       ("kind", "reason"))
        self.fills = counter("fills", "Fills by liquidity side", ("liquidity",))
        self.filled_qty = counter("filled_qty", "Filled quantity [base]", ("side",))
        self.maker_share = gauge("maker_share", "Share of fills that were maker")
        self.position = gauge("position_base", "Net position [base units]")
        self.position_notional = gauge("position_notional_usdt", "Net position x book mid [USDT], signed (long > 0): "
                                       "a portfolio's gross = sum of |this|, net = |sum| ([risk.portfolio])")
        self.portfolio_limit = gauge("portfolio_limit_usdt", "[risk.portfolio] limit of the node [USDT] (0 = off)",
                                     ("measure", "level"))
        self.allocator_weight = gauge("allocator_weight", "Allocator weight of the instrument (fraction of "
                                      "total_budget_usdt; 0 while blacklisted)")
        self.allocator_budget = gauge("allocator_budget_usdt", "Allocator notional budget of the instrument [USDT]")
        self.allocator_cap = gauge("allocator_max_position_base", "Allocator budget as the strategy's position cap "
                                   "[base units] (budget / mid at the allocation)")
        self.allocator_blacklisted = gauge("allocator_blacklisted", "1 while the allocator has the instrument "
                                           "blacklisted (reducing side only), else 0")
        self.equity = gauge("equity_usdt", "Account equity [USDT] (balance total + unrealised)")
        self.pnl = gauge("pnl_usdt", "PnL parts since start [USDT]", ("part",))
        self.quote = gauge("quote_price", "Best own resting quote price", ("side",))
        self.quote_size = gauge("quote_size_base", "Open size of own orders at the best own quote price [base]",
                                ("side",))
        self.quote_spread = gauge("quote_spread_bps", "Own best ask - best bid [bps of mid]")
        self.open_orders = gauge("open_orders", "Open orders", ("side",))
        self.mid = gauge("mid_price", "Book mid")
        self.market_spread = gauge("market_spread_bps", "Book best ask - best bid [bps of mid]")
        self.guard_state = gauge("guard_state", "1 for each guard's current state", ("guard", "state"))
        self.cb_state = gauge("circuit_breaker_state", "Circuit breaker: 0 CLOSED, 1 HALF_OPEN, 2 OPEN")
        self.trading_state = gauge("trading_state", "Most restrictive trading state any guard wants (the "
                                   "RiskEngine's): 0 ACTIVE, 1 REDUCING, 2 HALTED")
        self.quoting_allowed = gauge("quoting_allowed", "1 when every guard allows quoting this side", ("side",))
        self.guard_transitions = counter("guard_transitions", "Guard transitions", ("guard", "new_state"))
        self.ws_reconnects = counter("ws_reconnects", "Public data stream re-subscriptions (snapshot after "
                                     "the first) and reported reconnects")
        self.data_disconnects = counter("data_disconnects", "Data-client disconnects reported on the bus")
        self.book_gaps = counter("book_gaps", "Order-book update-id gaps found by the data client (book "
                                 "invalidated until a fresh snapshot)")
        self.book_snapshots = counter("book_snapshots", "Order-book snapshots received")
        self.book_updates = counter("book_updates", "Order-book batches received")
        self.book_age = gauge("book_age_seconds", "Seconds since the last order-book batch")
        self.latency = Histogram(P + "tick_to_order_latency_seconds",
                                 "Book batch received -> order command sent (submit, amend, cancel)",
                                 [*BASE_LABELS, "action"], buckets=LATENCY_BUCKETS, registry=r)


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",)}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can export (families with their type suffixes), whether or
    not a labelled child exists yet: what dashboards and alerts may reference."""
    return {fam.name + sfx for fam in registry.collect() for sfx in _SUFFIXES.get(fam.type, ("",))}


METRIC_NAMES = (
    "mmbot_info", "mmbot_orders_submitted_total", "mmbot_orders_amended_total", "mmbot_orders_cancelled_total",
    "mmbot_orders_rejected_total", "mmbot_fills_total", "mmbot_maker_share", "mmbot_position_base",
    "mmbot_equity_usdt", "mmbot_pnl_usdt", "mmbot_quote_price", "mmbot_quote_size_base", "mmbot_quote_spread_bps",
    "mmbot_guard_state",
    "mmbot_circuit_breaker_state", "mmbot_trading_state", "mmbot_quoting_allowed", "mmbot_ws_reconnects_total",
    "mmbot_book_gaps_total", "mmbot_book_age_seconds", "mmbot_tick_to_order_latency_seconds", "mmbot_ready",
    "mmbot_up",
    # [portfolio] nodes (docs/portfolio.md "Metrics"; a single instrument exports the notional only)
    "mmbot_position_notional_usdt", "mmbot_portfolio_limit_usdt", "mmbot_allocator_weight",
    "mmbot_allocator_budget_usdt", "mmbot_allocator_max_position_base", "mmbot_allocator_blacklisted",
)


_GROUPS: dict[str, dict] = {}  # registry_group -> {"metrics": Metrics, "actors": [MetricsActor, ...]}


class MetricsActor(Actor):
    """Keeps ``Metrics`` up to date from bus events and the cache; serves them over HTTP."""

    def __init__(self, config: MetricsActorConfig) -> None:
        super().__init__(config)
        if config.registry_group:
            group = _GROUPS.setdefault(config.registry_group, {"metrics": Metrics(), "actors": []})
            group["actors"].append(self)
            self.m = m = group["metrics"]
        else:
            self.m = m = Metrics()
        self._iid = config.instrument_id
        self._iid_str = str(config.instrument_id)
        self._account_id = AccountId(config.account_id) if config.account_id else None
        lab = self._labels = (config.environment or "unknown", self._iid_str)
        # Children bound once: the per-event handlers do no label lookups.
        self._c_submitted = {True: m.orders_submitted.labels(*lab, "buy"), False: m.orders_submitted.labels(*lab, "sell")}
        self._c_accepted = m.orders_accepted.labels(*lab)
        self._c_amended = m.orders_amended.labels(*lab)
        self._c_amend_requests = m.amend_requests.labels(*lab)
        self._c_cancelled = m.orders_cancelled.labels(*lab)
        self._c_fills = {True: m.fills.labels(*lab, "maker"), False: m.fills.labels(*lab, "taker")}
        self._c_filled_qty = {True: m.filled_qty.labels(*lab, "buy"), False: m.filled_qty.labels(*lab, "sell")}
        self._c_latency = {a: m.latency.labels(*lab, a) for a in ("submit", "amend", "cancel")}
        self._c_book_updates = m.book_updates.labels(*lab)
        self._c_book_snapshots = m.book_snapshots.labels(*lab)
        self._c_ws_reconnects = m.ws_reconnects.labels(*lab)
        self._last_book_ns = 0        # clock time the last book batch was handled
        self._last_book_ts_init = 0   # its ts_init (received by the data engine)
        self._snapshots = 0
        self._maker = 0
        self._fills = 0
        self._start_balance: float | None = None
        self._fees = 0.0
        # The mark of mmbot_position_notional_usdt without a usable book: the last own fill's price,
        # else the last valid mid (the portfolio guard marks at the mid, else the last fill price).
        self._fill_px = math.nan
        self._valid_mid = math.nan
        self._wanted: dict[tuple, str] = {}  # (guard, instrument id) -> the trading state it wants
        self._board = ConstraintBoard()
        self._ready_detail: dict = {"ready": False, "started": False}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server: MetricsHttpServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        c, m, lab = self.config, self.m, self._labels
        self._own_ids = own_order_prefix(self.trader_id.get_tag())
        m.info.labels(*lab).set(1)
        m.up.labels(*lab).set(1)
        for guard, states in GUARD_STATES.items():
            for st in states:
                m.guard_state.labels(*lab, guard, st).set(1 if st == states[0] else 0)
        m.cb_state.labels(*lab).set(0)
        m.trading_state.labels(*lab).set(0)
        for side in ("bid", "ask"):
            m.quoting_allowed.labels(*lab, side).set(1)
        m.book_gaps.labels(*lab)
        m.data_disconnects.labels(*lab)
        for key, value in sorted(c.portfolio_limits_usdt.items()):
            measure, _, level = key.partition(".")
            m.portfolio_limit.labels(*lab, measure, level).set(value)
        self.subscribe_order_book_deltas(self._iid, BookType.L2_MBP)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)
        self.msgbus.subscribe(topic=RISK_TOPIC, handler=self._on_constraint)
        self.msgbus.subscribe(topic=DATA_STATUS_TOPIC, handler=self._on_data_status)
        # On the loop's thread: the update reads the cache the loop's handlers are changing.
        self.clock.set_timer(f"{self.id}-update", interval=_ns_interval(c.update_interval_ms),
                             callback=loop_dispatcher()(self._on_timer))
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if c.port >= 0 and self.server is None:
            self.server = MetricsHttpServer(self, c.host, c.port, kill_token=c.kill_token)
            self.server.start()
            self.log.info(f"metrics on http://{c.host}:{self.server.port}/metrics (/health, /ready)")
        self.update()

    def on_stop(self) -> None:
        self.m.ready.labels(*self._labels).set(0)
        self.m.up.labels(*self._labels).set(0)
        try:
            self.clock.cancel_timer(f"{self.id}-update")
        except Exception:  # noqa: BLE001 (timer already gone)
            pass
        self.msgbus.unsubscribe(topic="events.order.*", handler=self._on_order_event)
        self.msgbus.unsubscribe(topic=RISK_TOPIC, handler=self._on_constraint)
        self.msgbus.unsubscribe(topic=DATA_STATUS_TOPIC, handler=self._on_data_status)

    def on_dispose(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        group = _GROUPS.get(self.config.registry_group) if self.config.registry_group else None
        if group is not None:
            if self in group["actors"]:
                group["actors"].remove(self)
            if not group["actors"]:
                _GROUPS.pop(self.config.registry_group, None)

    # -- events -------------------------------------------------------------------------------

    def on_order_book_deltas(self, deltas: OrderBookDeltas) -> None:
        self._last_book_ns = self.clock.timestamp_ns()
        self._last_book_ts_init = deltas.ts_init
        self._c_book_updates.inc()
        # Snapshots carry F_SNAPSHOT on their last delta in every mmbot source (catalog importer,
        # shadow's raw client, live: adapters.bybit_live_book normalises Nautilus' Bybit batches).
        if deltas.flags & _F_SNAPSHOT:
            self._snapshots += 1
            self._c_book_snapshots.inc()
            if self._snapshots > 1:  # a snapshot after the first: the stream was re-subscribed
                self._c_ws_reconnects.inc()

    def _on_order_event(self, event) -> None:
        if self._own_ids.match(event.client_order_id.value) is None:
            return  # another program's order on the shared account (adapters/order_ids.py)
        if event.instrument_id != self._iid:
            return  # a portfolio node: every instrument's actor gets every order event; another one counts it
        m, lab = self.m, self._labels
        if isinstance(event, OrderSubmitted):
            order = self.cache.order(event.client_order_id)
            self._c_submitted[order is not None and order.side == OrderSide.BUY].inc()
            self._latency("submit", event.ts_init)
        elif isinstance(event, OrderPendingUpdate):
            self._c_amend_requests.inc()
            self._latency("amend", event.ts_init)
        elif isinstance(event, OrderPendingCancel):
            self._latency("cancel", event.ts_init)
        elif isinstance(event, OrderAccepted):
            self._c_accepted.inc()
        elif isinstance(event, OrderUpdated):
            self._c_amended.inc()
        elif isinstance(event, OrderCanceled):
            self._c_cancelled.inc()
        elif isinstance(event, OrderRejected):
            m.orders_rejected.labels(*lab, "submit", "post_only" if getattr(event, "due_post_only", False)
                                     else reason_class(event.reason)).inc()
        elif isinstance(event, OrderModifyRejected):
            m.orders_rejected.labels(*lab, "amend", reason_class(event.reason)).inc()
        elif isinstance(event, OrderCancelRejected):
            m.orders_rejected.labels(*lab, "cancel", reason_class(event.reason)).inc()
        elif isinstance(event, OrderDenied):
            m.orders_rejected.labels(*lab, "denied", reason_class(event.reason)).inc()
        elif isinstance(event, OrderFilled):
            maker = event.liquidity_side == LiquiditySide.MAKER
            self._fill_px = event.last_px.as_double()
            self._c_fills[maker].inc()
            self._c_filled_qty[event.order_side == OrderSide.BUY].inc(float(event.last_qty))
            self._fills += 1
            self._maker += maker
            m.maker_share.labels(*lab).set(self._maker / self._fills)
            if event.commission is not None:
                self._fees += float(event.commission)
            self.update()

    def _latency(self, action: str, ts_ns: int) -> None:
        if self._last_book_ts_init and 0 <= ts_ns - self._last_book_ts_init < 5_000_000_000:
            self._c_latency[action].observe((ts_ns - self._last_book_ts_init) / 1e9)

    def _on_constraint(self, msg: RiskConstraint) -> None:
        if msg.instrument_id is not None and msg.instrument_id != self._iid_str:
            return  # another instrument's guard (None = every instrument)
        m, lab = self.m, self._labels
        states = GUARD_STATES.get(msg.guard, (msg.old_state, msg.new_state))
        for st in set(states) | {msg.old_state, msg.new_state}:
            m.guard_state.labels(*lab, msg.guard, st).set(1 if st == msg.new_state else 0)
        m.guard_transitions.labels(*lab, msg.guard, msg.new_state).inc()
        if msg.guard == "circuit_breaker":
            m.cb_state.labels(*lab).set(CB_VALUE.get(msg.new_state, 0))
        elif msg.guard == ALLOCATOR_GUARD:  # this instrument's budget (another's returned above)
            n = msg.numbers
            m.allocator_weight.labels(*lab).set(n.get("weight", math.nan))
            m.allocator_budget.labels(*lab).set(n.get("budget_usdt", math.nan))
            m.allocator_cap.labels(*lab).set(msg.max_position_base)
            m.allocator_blacklisted.labels(*lab).set(1 if msg.new_state == ALLOCATOR_BLACKLISTED else 0)
        # Every guard's wanted trading state and side permissions, combined as the RiskSupervisor and
        # the strategy combine them: one series shows the state all guards together impose.
        self._wanted[(msg.guard, msg.instrument_id)] = msg.trading_state
        m.trading_state.labels(*lab).set(TRADING_STATE_VALUE.get(most_restrictive(self._wanted.values()), 0))
        bid, ask, _ = self._board.update(msg)
        m.quoting_allowed.labels(*lab, "bid").set(1 if bid else 0)
        m.quoting_allowed.labels(*lab, "ask").set(1 if ask else 0)

    def _on_data_status(self, msg) -> None:
        if not isinstance(msg, dict):
            return
        iid = msg.get("instrument_id")
        if iid is not None and iid != self._iid_str:
            return
        if msg.get("book_gap"):
            self.m.book_gaps.labels(*self._labels).inc()
        elif msg.get("connected") is False:
            self.m.data_disconnects.labels(*self._labels).inc()
        elif msg.get("reconnected"):
            self._c_ws_reconnects.inc()

    def _on_timer(self, _event) -> None:
        self.update()

    # -- state from the cache (timer, fills, /ready) -----------------------------------------------

    def _account(self):
        if self._account_id is not None:
            return self.cache.account(self._account_id)
        return self.cache.account_for_venue(self._iid.venue)

    def update(self) -> dict:
        m, lab = self.m, self._labels
        now = self.clock.timestamp_ns()
        age = (now - self._last_book_ns) / 1e9 if self._last_book_ns else math.inf
        m.book_age.labels(*lab).set(age if math.isfinite(age) else -1)
        book = self.cache.order_book(self._iid)
        bid = book.best_bid_price() if book is not None else None
        ask = book.best_ask_price() if book is not None else None
        book_valid = bid is not None and ask is not None and float(bid) < float(ask)
        mid = (float(bid) + float(ask)) / 2 if book_valid else math.nan
        if book_valid:
            m.mid.labels(*lab).set(mid)
            m.market_spread.labels(*lab).set((float(ask) - float(bid)) / mid * 1e4)
        # Own quotes.
        bids, asks = [], []  # (price, open size)
        for o in self.cache.orders_open(instrument_id=self._iid):
            px = getattr(o, "price", None)
            if px is None or self._own_ids.match(o.client_order_id.value) is None:
                continue
            (bids if o.side == OrderSide.BUY else asks).append((float(px), float(o.leaves_qty)))
        m.open_orders.labels(*lab, "bid").set(len(bids))
        m.open_orders.labels(*lab, "ask").set(len(asks))
        best_bid = max(p for p, _ in bids) if bids else math.nan
        best_ask = min(p for p, _ in asks) if asks else math.nan
        m.quote.labels(*lab, "bid").set(best_bid)
        m.quote.labels(*lab, "ask").set(best_ask)
        m.quote_size.labels(*lab, "bid").set(sum(q for p, q in bids if p == best_bid) if bids else math.nan)
        m.quote_size.labels(*lab, "ask").set(sum(q for p, q in asks if p == best_ask) if asks else math.nan)
        m.quote_spread.labels(*lab).set((best_ask - best_bid) / mid * 1e4 if bids and asks and book_valid
                                        else math.nan)
        # Position and PnL.
        pos, realized, unrealized = 0.0, 0.0, 0.0
        for p in self.cache.positions_open(instrument_id=self._iid):
            pos += float(p.signed_qty)
        for p in self.cache.positions(instrument_id=self._iid):
            if p.realized_pnl is not None:
                realized += float(p.realized_pnl)
            if p.is_open and book_valid:
                unrealized += (mid - float(p.avg_px_open)) * float(p.signed_qty) * float(p.multiplier)
        m.position.labels(*lab).set(pos)
        # Marked as the portfolio guard marks: the mid, else the last fill price (else the last valid mid).
        # Before (hostile review 27 F3): without a usable book the last valued product stayed, so a fill
        # during a one-sided book left the series at the old position (0.003 BTC long showed 0 USDT).
        if book_valid:
            self._valid_mid = mid
        mark = mid if book_valid else self._fill_px if math.isfinite(self._fill_px) else self._valid_mid
        if pos == 0.0 or math.isfinite(mark):
            m.position_notional.labels(*lab).set(pos * mark if pos != 0.0 else 0.0)
        m.pnl.labels(*lab, "realized").set(realized)
        m.pnl.labels(*lab, "unrealized").set(unrealized)
        m.pnl.labels(*lab, "fees").set(-self._fees)
        m.pnl.labels(*lab, "total").set(realized + unrealized)
        account = self._account()
        if account is not None:
            total = sum(float(b.total) for b in account.balances().values())
            if self._start_balance is None:
                self._start_balance = total
            m.equity.labels(*lab).set(total + unrealized)
            m.pnl.labels(*lab, "balance_change").set(total - self._start_balance)
        instrument_known = self.cache.instrument(self._iid) is not None
        ready = bool(self.is_running and instrument_known and book_valid and age <= self.config.ready_max_book_age_s
                     and account is not None)
        m.ready.labels(*lab).set(1 if ready else 0)
        self._ready_detail = {
            "ready": ready, "started": bool(self.is_running), "instrument_known": instrument_known,
            "book_valid": book_valid, "book_age_s": round(age, 3) if math.isfinite(age) else None,
            "account_reconciled": account is not None,
        }
        return self._ready_detail

    def ready_state(self) -> dict:
        """/ready: this instrument's checks; a group's: every instrument's (ready when all are, each
        check true when it holds for all, the oldest book age) and ``instruments`` with each one's."""
        group = _GROUPS.get(self.config.registry_group) if self.config.registry_group else None
        if group is None or len(group["actors"]) < 2:
            return dict(self._ready_detail)
        each = {a._iid_str: dict(a._ready_detail) for a in group["actors"]}  # noqa: SLF001
        out: dict = {}
        for key in ("ready", "started", "instrument_known", "book_valid", "account_reconciled"):
            out[key] = all(bool(d.get(key)) for d in each.values())
        ages = [d.get("book_age_s") for d in each.values()]
        out["book_age_s"] = None if any(a is None for a in ages) else max(ages)
        out["instruments"] = each
        return out

    def render(self) -> bytes:
        return generate_latest(self.m.registry)

    def request_kill(self, action: str, reason: str) -> None:
        msg = {"action": action, "reason": reason, "source": "http"}
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(lambda: self.msgbus.send(endpoint=KILL_ENDPOINT, msg=msg))
        else:
            self.msgbus.send(endpoint=KILL_ENDPOINT, msg=msg)


def _ns_interval(ms: int):
    import pandas as pd

    return pd.Timedelta(milliseconds=max(1, ms))


_STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                503: "Service Unavailable"}


class MetricsHttpServer:
    """/metrics, /health, /ready and /kill on one daemon thread with its own asyncio loop.

    The previous ``ThreadingHTTPServer`` held one thread per open connection and never timed one
    out (threads 23 -> 223 under 200 idle clients). Here an open connection is a coroutine: it must
    deliver its request head (at most ``MAX_REQUEST_HEAD_BYTES``) within ``request_timeout_s`` or it
    is closed; at most ``max_connections`` are open at once: a newcomer beyond that closes the
    oldest connection that has not sent a request yet (so idle clients cannot lock a scrape out), or
    is answered 503 when every slot is busy answering. Every answer closes the connection (no
    keep-alive), so nothing lingers.
    """

    def __init__(self, actor, host: str = "127.0.0.1", port: int = 0, kill_token: str = "", *,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> None:
        if not (request_timeout_s > 0 and math.isfinite(request_timeout_s)):
            raise ValueError(f"request_timeout_s must be a finite number > 0, got {request_timeout_s!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        self.actor = actor
        self.kill_token = kill_token
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        # Bind here, so a port in use fails the caller at once and the port is known before start.
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.server_address = self._sock.getsockname()[:2]
        self.port = self.server_address[1]
        self.open_connections = 0
        self.rejected_connections = 0   # over max_connections
        self.timed_out_connections = 0  # no complete request within request_timeout_s
        self.evicted_connections = 0    # idle ones closed to make room for a newcomer
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # open, no request yet, oldest first
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmbot-metrics", daemon=True)
        self.started_at = time.time()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=10)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        else:
            self._sock.close()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, sock=self._sock, limit=MAX_REQUEST_HEAD_BYTES))
            self._started.set()
            loop.run_forever()
        finally:
            self._started.set()
            if self._server is not None:
                self._server.close()
            for writer in list(self._waiting):  # their handlers end on the closed socket
                writer.transport.abort()
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=self.request_timeout_s))
            self._sock.close()
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            if not self._waiting:  # every slot is busy answering: refuse the newcomer
                self.rejected_connections += 1
                writer.write(_response(503, b'{"error": "too many connections"}'))
                writer.close()  # sends the 503 if the socket takes it, never waits for the client
                return
            # Every slot taken, some by clients that have not sent a request: the oldest of those
            # makes room, so idle connections can never lock a scrape out.
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self.evicted_connections += 1
            oldest.transport.abort()
        self.open_connections += 1
        self._waiting[writer] = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.request_timeout_s)
            except TimeoutError:
                self.timed_out_connections += 1
                return
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # closed early (or evicted), or a head beyond MAX_REQUEST_HEAD_BYTES
            finally:
                self._waiting.pop(writer, None)
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.open_connections -= 1
            writer.transport.abort()  # answered (Connection: close) or given up: free the socket now

    def _answer(self, head: bytes) -> bytes:
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
        except ValueError:
            return _response(400, b'{"error": "bad request"}')
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        if method == "GET":
            if path == "/metrics":
                return _response(200, self.actor.render(), CONTENT_TYPE_LATEST)
            if path == "/health":
                return _response(200, json.dumps({"status": "alive",
                                                  "uptime_s": round(time.time() - self.started_at, 1)}).encode())
            if path == "/ready":
                st = self.actor.ready_state()
                return _response(200 if st.get("ready") else 503, json.dumps(st).encode())
            return _response(404, b'{"error": "not found"}')
        if method == "POST":
            if path != "/kill" or not self.kill_token:
                return _response(404, b'{"error": "not found"}')
            auth = headers.get("authorization", "")
            if not hmac.compare_digest(auth.encode(), f"Bearer {self.kill_token}".encode()):
                return _response(403, b'{"error": "forbidden"}')
            action = "reset" if parse_qs(query).get("action") == ["reset"] else "kill"
            self.actor.request_kill(action, "HTTP /kill")
            return _response(200, json.dumps({"action": action}).encode())
        return _response(405, b'{"error": "method not allowed"}')


def _response(code: int, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {code} {_STATUS_TEXT.get(code, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1") + body
