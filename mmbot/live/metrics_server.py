"""Prometheus metrics for a running node: a Nautilus ``Actor`` plus an HTTP server thread.

``MetricsActor`` reads only the message bus and the cache (order events, fills, positions, the
order book, the risk guards' constraints), so it is mode-agnostic: the same actor can run in a
backtest, shadow or live node. ``MetricsHttpServer`` serves, on a daemon thread:

- ``GET /metrics``: the Prometheus text format (prometheus-client, a per-actor registry);
- ``GET /health``: 200 while the process is alive;
- ``GET /ready``: 200 when connected (a book update within ``ready_max_book_age_s``), the
  book is valid (bid < ask) and the account is reconciled (in the cache); 503 otherwise, with
  a JSON body saying which check fails;
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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
from nautilus_trader.model.identifiers import InstrumentId
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from strategies.risk.base import DATA_STATUS_TOPIC, KILL_ENDPOINT, RISK_TOPIC, RiskConstraint

P = "mmbot_"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GUARD_STATES = {
    "position": ("ACTIVE", "REDUCE_ONLY", "REDUCING"), "loss": ("ACTIVE", "HALTED"),
    "drawdown": ("ACTIVE", "HALTED"), "edge": ("ACTIVE", "WIDENED", "PAUSED"),
    "circuit_breaker": ("CLOSED", "OPEN", "HALF_OPEN"), "stale_data": ("ACTIVE", "STALE", "INVALID"),
    "kill_switch": ("ACTIVE", "HALTED"),
}
CB_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
TRADING_STATE_VALUE = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}

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
    kill_token: enables POST /kill with this bearer token ("" = no endpoint)."""

    instrument_id: InstrumentId
    port: int = -1
    host: str = "127.0.0.1"
    ready_max_book_age_s: float = 10.0
    kill_token: str = ""
    environment: str = ""
    update_interval_ms: int = 1000


class Metrics:
    """The metric families in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.info = Gauge(P + "info", "Run identity (value 1)", ["environment", "instrument"], registry=r)
        self.up = Gauge(P + "up", "1 while the node runs", registry=r)
        self.ready = Gauge(P + "ready", "1 when connected, book valid and account reconciled", registry=r)
        self.orders_submitted = Counter(P + "orders_submitted", "Orders submitted", ["side"], registry=r)
        self.orders_accepted = Counter(P + "orders_accepted", "Orders accepted by the venue", registry=r)
        self.orders_amended = Counter(P + "orders_amended", "Orders amended (venue confirmed)", registry=r)
        self.amend_requests = Counter(P + "amend_requests", "Amend requests sent", registry=r)
        self.orders_cancelled = Counter(P + "orders_cancelled", "Orders cancelled (venue confirmed)", registry=r)
        self.orders_rejected = Counter(P + "orders_rejected", "Order rejections by kind and reason class",
                                       ["kind", "reason"], registry=r)
        self.fills = Counter(P + "fills", "Fills by liquidity side", ["liquidity"], registry=r)
        self.filled_qty = Counter(P + "filled_qty", "Filled quantity [base]", ["side"], registry=r)
        self.maker_share = Gauge(P + "maker_share", "Share of fills that were maker", registry=r)
        self.position = Gauge(P + "position_base", "Net position [base units]", registry=r)
        self.equity = Gauge(P + "equity_usdt", "Account equity [USDT] (balance total + unrealised)", registry=r)
        self.pnl = Gauge(P + "pnl_usdt", "PnL parts since start [USDT]", ["part"], registry=r)
        self.quote = Gauge(P + "quote_price", "Best own resting quote price", ["side"], registry=r)
        self.quote_spread = Gauge(P + "quote_spread_bps", "Own best ask - best bid [bps of mid]", registry=r)
        self.open_orders = Gauge(P + "open_orders", "Open orders", ["side"], registry=r)
        self.mid = Gauge(P + "mid_price", "Book mid", registry=r)
        self.market_spread = Gauge(P + "market_spread_bps", "Book best ask - best bid [bps of mid]", registry=r)
        self.guard_state = Gauge(P + "guard_state", "1 for each guard's current state", ["guard", "state"], registry=r)
        self.cb_state = Gauge(P + "circuit_breaker_state", "Circuit breaker: 0 CLOSED, 1 HALF_OPEN, 2 OPEN",
                              registry=r)
        self.trading_state = Gauge(P + "trading_state", "Wanted trading state: 0 ACTIVE, 1 REDUCING, 2 HALTED",
                                   registry=r)
        self.guard_transitions = Counter(P + "guard_transitions", "Guard transitions", ["guard", "new_state"],
                                         registry=r)
        self.ws_reconnects = Counter(P + "ws_reconnects", "Public data stream re-subscriptions (snapshot after "
                                     "the first) and reported reconnects", registry=r)
        self.data_disconnects = Counter(P + "data_disconnects", "Data-client disconnects reported on the bus",
                                        registry=r)
        self.book_snapshots = Counter(P + "book_snapshots", "Order-book snapshots received", registry=r)
        self.book_updates = Counter(P + "book_updates", "Order-book batches received", registry=r)
        self.book_age = Gauge(P + "book_age_seconds", "Seconds since the last order-book batch", registry=r)
        self.latency = Histogram(P + "tick_to_order_latency_seconds",
                                 "Book batch received -> order command sent (submit, amend, cancel)",
                                 ["action"], buckets=LATENCY_BUCKETS, registry=r)


METRIC_NAMES = (
    "mmbot_orders_submitted_total", "mmbot_orders_amended_total", "mmbot_orders_cancelled_total",
    "mmbot_orders_rejected_total", "mmbot_fills_total", "mmbot_maker_share", "mmbot_position_base",
    "mmbot_equity_usdt", "mmbot_pnl_usdt", "mmbot_quote_price", "mmbot_quote_spread_bps", "mmbot_guard_state",
    "mmbot_circuit_breaker_state", "mmbot_ws_reconnects_total", "mmbot_book_age_seconds",
    "mmbot_tick_to_order_latency_seconds", "mmbot_ready", "mmbot_up",
)


class MetricsActor(Actor):
    """Keeps ``Metrics`` up to date from bus events and the cache; serves them over HTTP."""

    def __init__(self, config: MetricsActorConfig) -> None:
        super().__init__(config)
        self.m = Metrics()
        self._iid = config.instrument_id
        self._last_book_ns = 0        # clock time the last book batch was handled
        self._last_book_ts_init = 0   # its ts_init (received by the data engine)
        self._snapshots = 0
        self._maker = 0
        self._fills = 0
        self._start_balance: float | None = None
        self._fees = 0.0
        self._ready_detail: dict = {"started": False}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server: MetricsHttpServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        c = self.config
        self.m.info.labels(c.environment or "unknown", str(self._iid)).set(1)
        self.m.up.set(1)
        for guard, states in GUARD_STATES.items():
            for st in states:
                self.m.guard_state.labels(guard, st).set(1 if st == states[0] else 0)
        self.subscribe_order_book_deltas(self._iid, BookType.L2_MBP)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)
        self.msgbus.subscribe(topic=RISK_TOPIC, handler=self._on_constraint)
        self.msgbus.subscribe(topic=DATA_STATUS_TOPIC, handler=self._on_data_status)
        self.clock.set_timer(f"{self.id}-update", interval=_ns_interval(c.update_interval_ms), callback=self._on_timer)
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
        self.m.ready.set(0)
        self.m.up.set(0)
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

    # -- events -------------------------------------------------------------------------------

    def on_order_book_deltas(self, deltas: OrderBookDeltas) -> None:
        self._last_book_ns = self.clock.timestamp_ns()
        self._last_book_ts_init = deltas.ts_init
        self.m.book_updates.inc()
        if deltas.flags & RecordFlag.F_SNAPSHOT or any(d.flags & RecordFlag.F_SNAPSHOT for d in deltas.deltas[:1]):
            self._snapshots += 1
            self.m.book_snapshots.inc()
            if self._snapshots > 1:  # a snapshot after the first: the stream was re-subscribed
                self.m.ws_reconnects.inc()

    def _on_order_event(self, event) -> None:
        m = self.m
        if isinstance(event, OrderSubmitted):
            order = self.cache.order(event.client_order_id)
            m.orders_submitted.labels("buy" if order is not None and order.side == OrderSide.BUY else "sell").inc()
            self._latency("submit", event.ts_init)
        elif isinstance(event, OrderPendingUpdate):
            m.amend_requests.inc()
            self._latency("amend", event.ts_init)
        elif isinstance(event, OrderPendingCancel):
            self._latency("cancel", event.ts_init)
        elif isinstance(event, OrderAccepted):
            m.orders_accepted.inc()
        elif isinstance(event, OrderUpdated):
            m.orders_amended.inc()
        elif isinstance(event, OrderCanceled):
            m.orders_cancelled.inc()
        elif isinstance(event, OrderRejected):
            m.orders_rejected.labels("submit", "post_only" if getattr(event, "due_post_only", False)
                                     else reason_class(event.reason)).inc()
        elif isinstance(event, OrderModifyRejected):
            m.orders_rejected.labels("amend", reason_class(event.reason)).inc()
        elif isinstance(event, OrderCancelRejected):
            m.orders_rejected.labels("cancel", reason_class(event.reason)).inc()
        elif isinstance(event, OrderDenied):
            m.orders_rejected.labels("denied", reason_class(event.reason)).inc()
        elif isinstance(event, OrderFilled):
            maker = event.liquidity_side == LiquiditySide.MAKER
            m.fills.labels("maker" if maker else "taker").inc()
            m.filled_qty.labels("buy" if event.order_side == OrderSide.BUY else "sell").inc(float(event.last_qty))
            self._fills += 1
            self._maker += maker
            m.maker_share.set(self._maker / self._fills)
            if event.commission is not None:
                self._fees += float(event.commission)
            self.update()

    def _latency(self, action: str, ts_ns: int) -> None:
        if self._last_book_ts_init and 0 <= ts_ns - self._last_book_ts_init < 5_000_000_000:
            self.m.latency.labels(action).observe((ts_ns - self._last_book_ts_init) / 1e9)

    def _on_constraint(self, msg: RiskConstraint) -> None:
        states = GUARD_STATES.get(msg.guard, (msg.old_state, msg.new_state))
        for st in set(states) | {msg.old_state, msg.new_state}:
            self.m.guard_state.labels(msg.guard, st).set(1 if st == msg.new_state else 0)
        self.m.guard_transitions.labels(msg.guard, msg.new_state).inc()
        if msg.guard == "circuit_breaker":
            self.m.cb_state.set(CB_VALUE.get(msg.new_state, 0))

    def _on_data_status(self, msg) -> None:
        if isinstance(msg, dict):
            if msg.get("connected") is False:
                self.m.data_disconnects.inc()
            elif msg.get("reconnected"):
                self.m.ws_reconnects.inc()

    def _on_timer(self, _event) -> None:
        self.update()

    # -- state from the cache (timer, fills, /ready) -----------------------------------------------

    def update(self) -> dict:
        m = self.m
        now = self.clock.timestamp_ns()
        age = (now - self._last_book_ns) / 1e9 if self._last_book_ns else math.inf
        m.book_age.set(age if math.isfinite(age) else -1)
        book = self.cache.order_book(self._iid)
        bid = book.best_bid_price() if book is not None else None
        ask = book.best_ask_price() if book is not None else None
        book_valid = bid is not None and ask is not None and float(bid) < float(ask)
        mid = (float(bid) + float(ask)) / 2 if book_valid else math.nan
        if book_valid:
            m.mid.set(mid)
            m.market_spread.set((float(ask) - float(bid)) / mid * 1e4)
        # Own quotes.
        bids, asks = [], []
        for o in self.cache.orders_open(instrument_id=self._iid):
            px = getattr(o, "price", None)
            if px is None:
                continue
            (bids if o.side == OrderSide.BUY else asks).append(float(px))
        m.open_orders.labels("bid").set(len(bids))
        m.open_orders.labels("ask").set(len(asks))
        m.quote.labels("bid").set(max(bids) if bids else math.nan)
        m.quote.labels("ask").set(min(asks) if asks else math.nan)
        m.quote_spread.set((min(asks) - max(bids)) / mid * 1e4 if bids and asks and book_valid else math.nan)
        # Position and PnL.
        pos, realized, unrealized = 0.0, 0.0, 0.0
        for p in self.cache.positions_open(instrument_id=self._iid):
            pos += float(p.signed_qty)
        for p in self.cache.positions(instrument_id=self._iid):
            if p.realized_pnl is not None:
                realized += float(p.realized_pnl)
            if p.is_open and book_valid:
                unrealized += (mid - float(p.avg_px_open)) * float(p.signed_qty) * float(p.multiplier)
        m.position.set(pos)
        m.pnl.labels("realized").set(realized)
        m.pnl.labels("unrealized").set(unrealized)
        m.pnl.labels("fees").set(-self._fees)
        m.pnl.labels("total").set(realized + unrealized)
        account = self.cache.account_for_venue(self._iid.venue)
        if account is not None:
            total = sum(float(b.total) for b in account.balances().values())
            if self._start_balance is None:
                self._start_balance = total
            m.equity.set(total + unrealized)
            m.pnl.labels("balance_change").set(total - self._start_balance)
        ready = bool(self.is_running and book_valid and age <= self.config.ready_max_book_age_s and account is not None)
        m.ready.set(1 if ready else 0)
        self._ready_detail = {
            "ready": ready, "started": bool(self.is_running), "book_valid": book_valid,
            "book_age_s": round(age, 3) if math.isfinite(age) else None,
            "account_reconciled": account is not None,
        }
        return self._ready_detail

    def ready_state(self) -> dict:
        return dict(self._ready_detail)

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


class MetricsHttpServer:
    """prometheus-client exposition plus /health, /ready and /kill, on a daemon thread."""

    def __init__(self, actor: MetricsActor, host: str = "127.0.0.1", port: int = 0, kill_token: str = "") -> None:
        self.actor = actor
        self.kill_token = kill_token
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mmbot-metrics", daemon=True)
        self.started_at = time.time()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # no access log on stderr
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, server.actor.render(), CONTENT_TYPE_LATEST)
                elif path == "/health":
                    self._send(200, json.dumps({"status": "alive", "uptime_s": round(time.time() - server.started_at, 1)}).encode())
                elif path == "/ready":
                    st = server.actor.ready_state()
                    self._send(200 if st.get("ready") else 503, json.dumps(st).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                if path != "/kill" or not server.kill_token:
                    self._send(404, b'{"error": "not found"}')
                    return
                auth = self.headers.get("Authorization", "")
                if not hmac.compare_digest(auth.encode(), f"Bearer {server.kill_token}".encode()):
                    self._send(403, b'{"error": "forbidden"}')
                    return
                action = "reset" if "action=reset" in query else "kill"
                server.actor.request_kill(action, "HTTP /kill")
                self._send(200, json.dumps({"action": action}).encode())

        return Handler
