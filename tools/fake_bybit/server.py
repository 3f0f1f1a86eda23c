"""Loopback Bybit v5 exchange (linear perpetuals): REST + public/private/trade WebSockets.

See docs/fake_bybit.md. Entry points: ``FakeBybit`` (in-process) and ``python -m tools.fake_bybit``.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
import logging
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads as P
from .auth import DEFAULT_API_KEY, DEFAULT_API_SECRET, AuthError, check_rest, check_ws
from .faults import Faults
from .matching import Engine, Order, RejectError, now_ms

log = logging.getLogger("fake_bybit")

PUBLIC_PATH = "/v5/public/linear"
PRIVATE_PATH = "/v5/private"
TRADE_PATH = "/v5/trade"
BOOK_DEPTHS = (1, 25, 50, 200, 500, 1000)
PRIVATE_TOPICS = {"order", "execution", "execution.fast", "position", "wallet", "greeks", "dcp"}
MAX_LOG = 5000


def _iter_recording(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue  # truncated last line
            if "topic" in msg:
                yield msg


def _msg_time_ns(msg: dict) -> int:
    if "local_ts_ns" in msg:
        return int(msg["local_ts_ns"])
    return int(msg.get("ts", 0)) * 1_000_000


def _dec(v: Any, name: str) -> Decimal:
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        raise RejectError(10001, f"params error: {name} invalid ({v!r})") from None


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, stream: str, request: web.Request):
        self.ws = ws
        self.stream = stream
        self.request = request
        self.conn_id = f"fake{uuid.uuid4().hex[:16]}-{stream[:3]}"
        self.authed = stream == "public"
        self.topics: set[str] = set()
        # accounting (GET /__control/stats): who connected when, what was broadcast to it
        self.user_agent = request.headers.get("User-Agent", "")
        self.opened_ms = now_ms()
        self.closed_ms: int | None = None
        self.sent_rows: dict[str, int] = {}

    async def send(self, obj: dict) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(json.dumps(obj, separators=(",", ":")))
        except (ConnectionResetError, RuntimeError):
            pass


class _Sym:
    """One symbol's exchange state: its matching engine (book, orders, position) and what its
    public streams last published. The wallet is the account's (``FakeBybit._wallet_row``)."""

    def __init__(self, symbol: str, engine: Engine) -> None:
        self.symbol = symbol
        self.engine = engine
        self.inst = engine.inst
        self.published: dict[int, tuple[dict, dict]] = {}  # depth -> (bids, asks) as last published
        self.u: dict[int, int] = {}
        self.ticker_sent_top: tuple | None = None
        self.ticker_snapshot_sent: set[str] = set()


class FakeBybit:
    """In-process fake Bybit. ``urls = await fake.start()``; ``await fake.stop()``.

    ``symbols=[...]`` serves several linear perpetuals on one account (``recording`` may then be a
    list of recordings, merged in time order, each message routed to its symbol's book). Each symbol
    has its own book, orders and position; the wallet is one (its balance moves by every symbol's
    fees and realised PnL). ``symbol`` alone (the default) is the single-symbol exchange of before;
    ``engine``/``inst``/``symbol`` are the first symbol's.
    """

    def __init__(
        self,
        recording: str | Path | list[str | Path] | None = None,
        symbol: str = "BTCUSDT",
        symbols: list[str] | None = None,
        speed: float = 1.0,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: bool = False,
        maker_fee: str | Decimal = "0.0002",
        taker_fee: str | Decimal = "0.00055",
        balance: str | Decimal = "100000",
        paused: bool = False,
        book_cross_fills: bool = True,
        seamless: bool = False,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake_bybit binds to loopback only")
        recs = [Path(r) for r in recording] if isinstance(recording, (list, tuple)) else \
            ([Path(recording)] if recording else [])
        self.recordings = recs
        self.recording = recs[0] if recs else None
        symbols = list(symbols) if symbols else [symbol]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"fake_bybit: symbols repeated: {symbols}")
        if seamless and (len(symbols) > 1 or len(recs) > 1):
            raise ValueError("fake_bybit: seamless replays one symbol's recording")
        self.symbol = symbols[0]
        self.speed = float(speed)
        self.api_key = api_key
        self.api_secret = api_secret
        self.host = host
        self.port = port
        self.loop_replay = loop or seamless
        self.seamless = seamless  # loop without a seam: see _seamless_messages
        self.passes = 0           # completed replays of the recording (seamless mode)
        self.balance0 = Decimal(str(balance))
        # every symbol's engine starts from the account's balance; the wallet served is the
        # account's: that balance plus each engine's balance change (fees, realised PnL)
        self.syms: dict[str, _Sym] = {
            sym: _Sym(sym, Engine(P.instrument_of(sym), Decimal(str(maker_fee)), Decimal(str(taker_fee)),
                                  self.balance0, book_cross_fills=book_cross_fills))
            for sym in symbols}
        self.inst = self.syms[self.symbol].inst
        self.engine = self.syms[self.symbol].engine
        self.faults = Faults()
        self.conns: list[_Conn] = []
        self.request_log: list[dict] = []
        self.ws_log: list[dict] = []
        self.unknown: dict[str, int] = {}
        self.urls: dict[str, str] = {}
        self._replay_task: asyncio.Task | None = None
        self._resume = asyncio.Event()
        if not paused:
            self._resume.set()
        self._step_budget = 0
        self._runner: web.AppRunner | None = None
        self.replayed = 0
        self.replay_done = asyncio.Event()
        self._bg: set[asyncio.Task] = set()
        self._started_ms = now_ms()
        # What the public streams broadcast (GET /__control/published): topic -> second of the
        # message's exchange time (``ts`` for book/tickers, each trade's ``T``) -> [messages, rows].
        # Snapshots sent to one new subscriber are not broadcasts and not counted here.
        self.published: dict[str, dict[int, list[int]]] = {}
        self.conn_log: list[_Conn] = []  # every WebSocket connection accepted (last MAX_LOG)

    # ================================================================ lifecycle
    async def start(self) -> dict[str, str]:
        app = web.Application(middlewares=[self._log_middleware])
        r = app.router
        r.add_get(PUBLIC_PATH, self._ws_public)
        r.add_get(PRIVATE_PATH, self._ws_private)
        r.add_get(TRADE_PATH, self._ws_trade)
        r.add_get("/v5/market/time", self._h_time)
        r.add_get("/v5/market/instruments-info", self._h_instruments)
        r.add_get("/v5/market/tickers", self._h_tickers)
        r.add_get("/v5/market/orderbook", self._h_orderbook)
        r.add_get("/v5/market/recent-trade", self._h_recent_trade)
        r.add_get("/v5/market/kline", self._h_empty_list)
        r.add_get("/v5/market/funding/history", self._h_empty_list)
        r.add_get("/v5/account/fee-rate", self._auth(self._h_fee_rate))
        r.add_get("/v5/account/wallet-balance", self._auth(self._h_wallet))
        r.add_get("/v5/account/info", self._auth(self._h_account_info))
        r.add_get("/v5/user/query-api", self._auth(self._h_query_api))
        r.add_get("/v5/position/list", self._auth(self._h_positions))
        r.add_get("/v5/order/realtime", self._auth(self._h_orders_realtime))
        r.add_get("/v5/order/history", self._auth(self._h_orders_history))
        r.add_get("/v5/execution/list", self._auth(self._h_executions))
        r.add_post("/v5/order/create", self._auth(self._h_create, order_op=True))
        r.add_post("/v5/order/amend", self._auth(self._h_amend, order_op=True))
        r.add_post("/v5/order/cancel", self._auth(self._h_cancel, order_op=True))
        r.add_post("/v5/order/cancel-all", self._auth(self._h_cancel_all, order_op=True))
        r.add_post("/v5/order/create-batch", self._auth(self._h_batch("create"), order_op=True))
        r.add_post("/v5/order/amend-batch", self._auth(self._h_batch("amend"), order_op=True))
        r.add_post("/v5/order/cancel-batch", self._auth(self._h_batch("cancel"), order_op=True))
        r.add_post("/v5/position/set-leverage", self._auth(self._h_set_leverage))
        r.add_post("/v5/position/switch-mode", self._auth(self._h_ok_empty))
        r.add_post("/v5/account/set-margin-mode", self._auth(self._h_set_margin_mode))
        r.add_get("/__control/state", self._c_state)
        r.add_get("/__control/faults", self._c_faults_get)
        r.add_get("/__control/stats", self._c_stats)
        r.add_get("/__control/published", self._c_published)
        r.add_post("/__control/faults", self._c_faults_post)
        r.add_delete("/__control/faults", self._c_faults_delete)
        r.add_post("/__control/feed", self._c_feed)
        r.add_post("/__control/replay", self._c_replay)
        r.add_route("*", "/{tail:.*}", self._h_unknown)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port
        base = f"{self.host}:{port}"
        self.urls = {
            "http": f"http://{base}",
            "ws_public": f"ws://{base}{PUBLIC_PATH}",
            "ws_private": f"ws://{base}{PRIVATE_PATH}",
            "ws_trade": f"ws://{base}{TRADE_PATH}",
            "control": f"http://{base}/__control",
        }
        if self.recording is not None:
            self._replay_task = asyncio.create_task(self._replay(), name="fake_bybit_replay")
        return dict(self.urls)

    async def stop(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            try:
                await self._replay_task
            except (asyncio.CancelledError, Exception):
                pass
        for t in list(self._bg):
            t.cancel()
        for c in list(self.conns):
            try:
                await c.ws.close()
            except Exception:
                pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ================================================================ public API
    def inject(self, kind: str, **params) -> dict:
        """Arm a fault (see faults.py). ``drop_ws`` acts immediately."""
        if kind == "drop_ws":
            if "on" in params:
                raise ValueError("drop_ws acts at once; it takes no trigger (use refuse_ws with on=...)")
            stream = params.get("stream", "all")
            f = self.faults.add(kind, **params)
            f.fired = f.count
            n = self._drop_ws(stream, clean=bool(params.get("clean", False)))
            self.faults.fired.append({"id": f.id, "kind": kind, "time_ms": now_ms(), "stream": stream, "closed": n})
            return {**f.to_json(), "closed": n}
        f = self.faults.add(kind, **params)
        if kind == "refuse_ws" and f.triggered:  # an outage: what is open drops, reconnects are refused
            n = self._drop_ws(params.get("stream", "all"))
            return {**f.to_json(), "closed": n}
        return f.to_json()

    def clear_faults(self, kind: str | None = None) -> None:
        self.faults.clear(kind)

    def state(self) -> dict:
        eng = self.engine
        bb, ba = eng.book.best_bid(), eng.book.best_ask()
        return {
            "symbol": self.symbol,
            # every symbol's (one after the other); "position" and "book" are the first symbol's,
            # "positions" and "books" each symbol's
            "open_orders": [P.order_row(o, y.inst) for y in self.syms.values() for o in y.engine.open_orders()],
            "orders": [P.order_row(o, y.inst) for y in self.syms.values()
                       for o in sorted(y.engine.orders.values(), key=lambda o: o.seq)],
            "queue_ahead": {o.order_id: P.fqty(o.queue_ahead, y.inst)
                            for y in self.syms.values() for o in y.engine.open_orders()},
            "position": P.position_row(eng, self.symbol, http=True),
            "positions": {sym: P.position_row(y.engine, sym, http=True) for sym, y in self.syms.items()},
            "wallet": self._wallet_row(http=True),
            "executions": [P.execution_row(e, y.engine.mark_price(), y.inst)
                           for y in self.syms.values() for e in y.engine.executions],
            "book": {
                "best_bid": [P.fpx(bb[0], self.inst), P.fqty(bb[1], self.inst)] if bb else None,
                "best_ask": [P.fpx(ba[0], self.inst), P.fqty(ba[1], self.inst)] if ba else None,
                "u": eng.book.u,
                "replayed_messages": self.replayed,
            },
            "books": {sym: {"best_bid": P.fpx(y.engine.book.best_bid()[0], y.inst) if y.engine.book.best_bid() else None,
                            "best_ask": P.fpx(y.engine.book.best_ask()[0], y.inst) if y.engine.book.best_ask() else None}
                      for sym, y in self.syms.items()},
            "fees": {"maker": str(eng.maker_fee), "taker": str(eng.taker_fee)},
            "faults": self.faults.to_json(),
            "connections": [{"stream": c.stream, "conn_id": c.conn_id, "authed": c.authed,
                             "topics": sorted(c.topics)} for c in self.conns],
            "request_log": list(self.request_log),
            "ws_log": list(self.ws_log),
            "unknown_requests": dict(self.unknown),
        }

    def stats(self) -> dict:
        """A light ``state()`` for frequent polling (soaks): no order history, no logs."""
        eng = self.engine
        bb, ba = eng.book.best_bid(), eng.book.best_ask()
        a = eng.account
        return {
            "time_ms": now_ms(),
            "replayed_messages": self.replayed,
            "passes": self.passes,
            "book": {"best_bid": P.fpx(bb[0], self.inst) if bb else None,
                     "best_ask": P.fpx(ba[0], self.inst) if ba else None},
            "open_orders": [{"orderId": o.order_id, "orderLinkId": o.link_id, "symbol": o.symbol, "side": o.side,
                             "price": P.fpx(o.price, y.inst) if o.price is not None else None,
                             "leavesQty": P.fqty(o.leaves, y.inst)}
                            for y in self.syms.values() for o in y.engine.open_orders()],
            "position_signed": P.fmt(a.pos_size),
            "positions_signed": {sym: P.fmt(y.engine.account.pos_size) for sym, y in self.syms.items()},
            "wallet_balance": self._wallet_row(http=True)["totalWalletBalance"],
            "orders_total": sum(len(y.engine.orders) for y in self.syms.values()),
            "executions_total": sum(len(y.engine.executions) for y in self.syms.values()),
            "connections": [{"stream": c.stream, "conn_id": c.conn_id, "user_agent": c.user_agent,
                             "opened_ms": c.opened_ms, "closed_ms": c.closed_ms, "topics": sorted(c.topics),
                             "sent_rows": dict(c.sent_rows)} for c in self.conn_log],
            "published_total": {t: {"messages": sum(v[0] for v in by_s.values()),
                                    "rows": sum(v[1] for v in by_s.values())} for t, by_s in self.published.items()},
            "faults_fired": len(self.faults.fired),
            "unknown_requests": dict(self.unknown),
        }

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    async def step(self, n: int = 1) -> None:
        """While paused: replay exactly ``n`` more recording messages, then return."""
        target = self.replayed + n
        self._step_budget += n
        self._resume.set()
        while self.replayed < target and not self.replay_done.is_set():
            await asyncio.sleep(0.001)

    async def feed(self, msg: dict) -> None:
        """Inject one raw Bybit public message (orderbook.* or publicTrade.*) as if replayed."""
        await self._process_public(msg)

    # ================================================================ replay
    async def _replay(self) -> None:
        assert self.recording is not None
        try:
            while True:
                t0_ns: int | None = None
                w0 = 0.0
                for msg in (self._seamless_messages() if self.seamless else self._recorded_messages()):
                    if not self._resume.is_set():
                        await self._resume.wait()
                        t0_ns = None  # re-anchor timing after a pause
                    ts = _msg_time_ns(msg)
                    if t0_ns is None:
                        t0_ns, w0 = ts, time.monotonic()
                    elif self.speed > 0 and self._step_budget == 0:
                        due = w0 + (ts - t0_ns) / 1e9 / self.speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    try:
                        await self._process_public(msg)
                    except Exception:
                        log.exception("fake_bybit: failed to process replayed message %s", msg.get("topic"))
                    self.replayed += 1
                    if self._step_budget > 0:
                        self._step_budget -= 1
                        if self._step_budget == 0:
                            self._resume.clear()
                    await asyncio.sleep(0)
                if not self.loop_replay:
                    break
            self.replay_done.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay failed")
            self.replay_done.set()

    def _recorded_messages(self) -> Iterator[dict]:
        """The recording's messages; several recordings (one per symbol) merged in time order."""
        if len(self.recordings) == 1:
            return _iter_recording(self.recordings[0])
        return heapq.merge(*(_iter_recording(r) for r in self.recordings), key=_msg_time_ns)

    def _seamless_messages(self) -> Iterator[dict]:
        """The recording replayed forever as one continuous market (``seamless=True``).

        Pass k (k >= 1) is the recording with
        - its times shifted by k periods, period = the recording's span + its mean message gap, so
          the pacing carries on at the recording's rate with no pause or burst at the seam;
        - every price shifted by a whole number of ticks, the internal book's best bid at the end of
          the previous pass minus the recording's first best bid, so the price path is continuous
          (a plain loop jumps back to the first price: resting orders would fill through the book);
        - trade ids replaced by a UUID5 of (k, id) (a real exchange never repeats a trade id);
        - book ``u``/``seq`` and trade ``seq`` shifted past the previous pass (kept increasing).
        """
        assert self.recording is not None
        first: dict | None = None  # pass 0 facts: first/last time, count, first best bid, u/seq span
        k = 0
        while True:
            if k == 0:
                t_first = t_last = None
                n = 0
                u_min = seq_min = None
                u_max = seq_max = 0
                bid0: Decimal | None = None
                for msg in _iter_recording(self.recording):
                    ts = _msg_time_ns(msg)
                    t_first = ts if t_first is None else t_first
                    t_last = ts
                    n += 1
                    data = msg.get("data")
                    if isinstance(data, dict):
                        if bid0 is None and data.get("b"):
                            bid0 = max(Decimal(p) for p, _ in data["b"])
                        if "u" in data:
                            u = int(data["u"])
                            u_min, u_max = (u if u_min is None else min(u_min, u)), max(u_max, u)
                        if "seq" in data:
                            q = int(data["seq"])
                            seq_min, seq_max = (q if seq_min is None else min(seq_min, q)), max(seq_max, q)
                    elif isinstance(data, list):
                        for t in data:
                            if "seq" in t:
                                q = int(t["seq"])
                                seq_min, seq_max = (q if seq_min is None else min(seq_min, q)), max(seq_max, q)
                    yield msg
                if n == 0:
                    self.loop_replay = False  # nothing to loop over
                    return
                gap = (t_last - t_first) // max(n - 1, 1) if n > 1 else 20_000_000
                first = {"period_ns": t_last - t_first + gap, "bid0": bid0,
                         "u_span": (u_max - u_min + 1) if u_min is not None else 0,
                         "seq_span": (seq_max - seq_min + 1) if seq_min is not None else 0}
            else:
                assert first is not None
                best = self.engine.book.best_bid()
                px_off = (best[0] - first["bid0"]) if best is not None and first["bid0"] is not None else Decimal(0)
                for msg in _iter_recording(self.recording):
                    yield self._shift_message(msg, k, first, px_off)
            k += 1
            self.passes = k

    def _shift_message(self, msg: dict, k: int, first: dict, px_off: Decimal) -> dict:
        dt_ns = k * first["period_ns"]
        tick = self.inst.tick

        def px(p: str) -> str:
            return format((Decimal(p) + px_off).quantize(tick), "f") if px_off else p

        out = dict(msg)
        if "local_ts_ns" in out:
            out["local_ts_ns"] = int(out["local_ts_ns"]) + dt_ns
        for key in ("ts", "cts"):
            if key in out:
                out[key] = int(out[key]) + dt_ns // 1_000_000
        data = out.get("data")
        if isinstance(data, dict):
            d = dict(data)
            for side in ("b", "a"):
                if side in d:
                    d[side] = [[px(p), s] for p, s in d[side]]
            if "u" in d:
                d["u"] = int(d["u"]) + k * first["u_span"]
            if "seq" in d:
                d["seq"] = int(d["seq"]) + k * first["seq_span"]
            out["data"] = d
        elif isinstance(data, list):
            items = []
            for t in data:
                t = dict(t)
                if "p" in t:
                    t["p"] = px(t["p"])
                if "i" in t:
                    t["i"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake_bybit-pass-{k}:{t['i']}"))
                if "T" in t:
                    t["T"] = int(t["T"]) + dt_ns // 1_000_000
                if "seq" in t:
                    t["seq"] = int(t["seq"]) + k * first["seq_span"]
                items.append(t)
            out["data"] = items
        return out

    def _sym_of_msg(self, topic: str, data: dict) -> _Sym | None:
        """The symbol a public message is for (``data.s``, else the topic's last part; one symbol's
        exchange takes a message without ``s`` as its own, as before); None when not served."""
        if len(self.syms) == 1:
            sym = data.get("s", self.symbol)
        else:
            sym = data.get("s") or topic.rpartition(".")[2]
        return self.syms.get(sym)

    async def _process_public(self, msg: dict) -> None:
        topic = msg.get("topic", "")
        if topic.startswith("orderbook."):
            data = msg.get("data", {})
            s = self._sym_of_msg(topic, data)
            if s is None:
                return
            events = s.engine.on_book(msg.get("type", "delta"), data)
            await self._publish_book(s)
            await self._publish_private(events)
        elif topic.startswith("publicTrade."):
            out: dict[str, list] = {}
            events = []
            for t in msg.get("data", []):
                s = self._sym_of_msg(topic, t)
                if s is None:
                    continue
                price, size = Decimal(t["p"]), Decimal(t["v"])
                events += s.engine.on_trade(t["S"], price, size)
                t2 = dict(t)
                t2["T"] = now_ms()
                out.setdefault(s.symbol, []).append(t2)
            for sym, trades in out.items():
                await self._broadcast_public(f"publicTrade.{sym}",
                                             {"topic": f"publicTrade.{sym}", "type": "snapshot",
                                              "ts": now_ms(), "data": trades})
                await self._publish_ticker(self.syms[sym], trade=True)
            await self._publish_private(events)

    # ================================================================ public publishing
    def _public_subs(self, topic: str) -> list[_Conn]:
        return [c for c in self.conns if c.stream == "public" and topic in c.topics and not c.ws.closed]

    async def _broadcast_public(self, topic: str, msg: dict) -> None:
        subs = self._public_subs(topic)
        if subs:
            rows = self._count_published(topic, msg)
            for c in subs:
                c.sent_rows[topic] = c.sent_rows.get(topic, 0) + rows
        for c in subs:
            await c.send(msg)

    def _count_published(self, topic: str, msg: dict) -> int:
        """Count one broadcast in ``self.published``; returns its rows (book levels, trades, 1)."""
        by_s = self.published.setdefault(topic, {})
        data = msg.get("data")
        if isinstance(data, list):  # trades: one row per trade, at its own T
            for t in data:
                b = by_s.setdefault(int(t.get("T", msg.get("ts", 0))) // 1000, [0, 0])
                b[1] += 1
            b = by_s.setdefault(int(msg.get("ts", 0)) // 1000, [0, 0])
            b[0] += 1
            return len(data)
        rows = len(data.get("b", [])) + len(data.get("a", [])) if topic.startswith("orderbook.") else 1
        b = by_s.setdefault(int(msg.get("ts", 0)) // 1000, [0, 0])
        b[0] += 1
        b[1] += rows
        return rows

    def _book_depths(self, s: _Sym) -> set[int]:
        depths = set()
        for c in self.conns:
            if c.stream != "public":
                continue
            for t in c.topics:
                parts = t.split(".")
                if parts[0] == "orderbook" and len(parts) == 3 and parts[2] == s.symbol:
                    depths.add(int(parts[1]))
        return depths

    def _stale(self) -> bool:
        return self.faults.peek("stale_book") is not None

    def _book_msg(self, s: _Sym, depth: int, typ: str, bids, asks) -> dict:
        t = now_ms()
        return {"topic": f"orderbook.{depth}.{s.symbol}", "type": typ, "ts": t,
                "data": {"s": s.symbol, "b": P.book_levels(bids, s.inst), "a": P.book_levels(asks, s.inst),
                         "u": s.u.get(depth, 0), "seq": s.engine.book.seq}, "cts": t}

    async def _publish_book(self, s: _Sym) -> None:
        if not s.engine.book.ready:
            return
        if self._stale():
            return
        for depth in sorted(self._book_depths(s)):
            topic = f"orderbook.{depth}.{s.symbol}"
            bids, asks = s.engine.book.top(depth)
            new_b, new_a = dict(bids), dict(asks)
            old = s.published.get(depth)
            if old is None:
                continue  # first subscriber gets a snapshot in _subscribe
            old_b, old_a = old
            d_b = [(p, z) for p, z in new_b.items() if old_b.get(p) != z] + [(p, Decimal(0)) for p in old_b if p not in new_b]
            d_a = [(p, z) for p, z in new_a.items() if old_a.get(p) != z] + [(p, Decimal(0)) for p in old_a if p not in new_a]
            if not d_b and not d_a:
                continue
            gap = self.faults.take("gap_book", topic=topic) if depth != 1 else None
            s.u[depth] = s.u.get(depth, 0) + (2 if gap else 1)
            if gap and gap.params.get("drop"):
                continue  # withheld: the next delta carries on from the old published state
            s.published[depth] = (new_b, new_a)
            if depth == 1:
                msg = self._book_msg(s, depth, "snapshot", bids, asks)
            else:
                d_b.sort(key=lambda kv: -kv[0])
                d_a.sort(key=lambda kv: kv[0])
                # The Nautilus 1.231 adapter derives a quote from the first bid/ask level of every
                # orderbook message, so each delta leads with the current best level of each side
                # (re-sending an unchanged level is a no-op for any book consumer).
                if bids:
                    d_b = [bids[0]] + [kv for kv in d_b if kv[0] != bids[0][0]]
                if asks:
                    d_a = [asks[0]] + [kv for kv in d_a if kv[0] != asks[0][0]]
                msg = self._book_msg(s, depth, "delta", d_b, d_a)
            await self._broadcast_public(topic, msg)
        await self._publish_ticker(s)

    def _ticker_data(self, s: _Sym) -> dict:
        eng = s.engine
        bb, ba = eng.book.best_bid(), eng.book.best_ask()
        mark = eng.mark_price()
        last = eng.last_price if eng.last_price is not None else mark
        body = P.template("ws_ticker_linear.json")["data"]
        body.update({
            "symbol": s.symbol,
            "lastPrice": P.fpx(last, s.inst),
            "markPrice": P.fpx(mark, s.inst),
            "indexPrice": P.fpx(mark, s.inst),
            "bid1Price": P.fpx(bb[0], s.inst) if bb else "",
            "bid1Size": P.fqty(bb[1], s.inst) if bb else "",
            "ask1Price": P.fpx(ba[0], s.inst) if ba else "",
            "ask1Size": P.fqty(ba[1], s.inst) if ba else "",
            "fundingRate": "0.0001",
            "nextFundingTime": str((now_ms() // 28_800_000 + 1) * 28_800_000),
        })
        return body

    async def _publish_ticker(self, s: _Sym, trade: bool = False) -> None:
        topic = f"tickers.{s.symbol}"
        subs = self._public_subs(topic)
        if not subs or not s.engine.book.ready or self._stale():
            return
        eng = s.engine
        top = (eng.book.best_bid(), eng.book.best_ask())
        if not trade and top == s.ticker_sent_top:
            return
        s.ticker_sent_top = top
        data = self._ticker_data(s)
        for c in subs:
            typ = "delta" if c.conn_id in s.ticker_snapshot_sent else "snapshot"
            s.ticker_snapshot_sent.add(c.conn_id)
            await c.send({"topic": topic, "type": typ, "data": data, "cs": eng.book.seq, "ts": now_ms()})

    async def _subscribe_public(self, c: _Conn, topic: str) -> None:
        parts = topic.split(".")
        s = self.syms.get(parts[-1])
        if s is None:
            return
        if parts[0] == "orderbook" and len(parts) == 3:
            depth = int(parts[1])
            if not s.engine.book.ready:
                return  # the first published message will be a snapshot
            if depth not in s.published:
                bids, asks = s.engine.book.top(depth)
                s.published[depth] = (dict(bids), dict(asks))
                s.u.setdefault(depth, s.engine.book.u or 1)
            pb, pa = s.published[depth]
            bids = sorted(pb.items(), key=lambda kv: -kv[0])
            asks = sorted(pa.items(), key=lambda kv: kv[0])
            await c.send(self._book_msg(s, depth, "snapshot", bids, asks))
        elif parts[0] == "tickers" and s.engine.book.ready:
            s.ticker_snapshot_sent.add(c.conn_id)
            await c.send({"topic": topic, "type": "snapshot", "data": self._ticker_data(s),
                          "cs": s.engine.book.seq, "ts": now_ms()})

    # ================================================================ private publishing
    def _wallet_row(self, http: bool) -> dict:
        """The account's wallet: one symbol's as before; several symbols' summed on one balance."""
        if len(self.syms) == 1:
            return P.wallet_row(self.engine, http=http)
        others = tuple(s.engine for s in self.syms.values() if s.symbol != self.symbol)
        return P.wallet_row(self.engine, http=http, others=others, balance0=self.balance0)

    async def _publish_private(self, events) -> None:
        """Send the engines' events; each order/execution under its own symbol, a position update
        for the symbol of the order that filled (events of several symbols may come in one batch)."""
        if not events:
            return
        pos_syms: list[str] = []
        send_wallet = False
        sym = self.symbol
        for kind, obj in events:
            if kind == "order":
                sym = obj.symbol
                await self._send_private("order", [P.order_row(obj, self.syms[sym].inst)])
            elif kind == "execution":
                sym = obj.order.symbol
                s = self.syms[sym]
                row = P.execution_row(obj, s.engine.mark_price(), s.inst)
                await self._send_private("execution", [row])
                fast = {k: row[k] for k in ("category", "symbol", "execId", "execPrice", "execQty", "orderId",
                                            "isMaker", "orderLinkId", "side", "execTime", "seq")}
                await self._send_private("execution.fast", [fast])
            elif kind == "position":
                if sym not in pos_syms:
                    pos_syms.append(sym)
            elif kind == "wallet":
                send_wallet = True
        for sym in pos_syms:
            await self._send_private("position", [P.position_row(self.syms[sym].engine, sym, http=False)])
        if send_wallet:
            await self._send_private("wallet", [self._wallet_row(http=False)])

    @staticmethod
    def _topic_base(t: str) -> str:
        # "order.linear" / "order.all" / "execution.fast.linear" -> base topic
        for suffix in (".linear", ".all", ".spot", ".inverse", ".option"):
            if t.endswith(suffix):
                return t[: -len(suffix)]
        return t

    async def _send_private(self, topic: str, data: list[dict]) -> None:
        if self.faults.take("drop_private", lambda p: p.get("topic") in (None, topic), topic=topic):
            return
        for c in list(self.conns):
            if c.stream != "private" or not c.authed or c.ws.closed:
                continue
            subs = {self._topic_base(t) for t in c.topics}
            if topic in subs:
                out = P.private_msg(topic, data)
                await c.send(out)

    # ================================================================ websockets
    def _drop_ws(self, stream: str, clean: bool = False) -> int:
        n = 0
        for c in list(self.conns):
            if stream not in ("all", c.stream):
                continue
            n += 1
            if clean:
                t = asyncio.ensure_future(c.ws.close(code=1001, message=b"fake_bybit drop"))
                self._bg.add(t)
                t.add_done_callback(self._bg.discard)
            else:
                tr = c.request.transport
                if tr is not None:
                    tr.abort() if hasattr(tr, "abort") else tr.close()
        return n

    def _wslog(self, c: _Conn, msg: Any) -> None:
        self.ws_log.append({"time_ms": now_ms(), "stream": c.stream, "conn_id": c.conn_id, "msg": msg})
        if len(self.ws_log) > MAX_LOG:
            del self.ws_log[: len(self.ws_log) - MAX_LOG]

    async def _ws_loop(self, request: web.Request, stream: str, handler) -> web.WebSocketResponse:
        if self.faults.take("refuse_ws", lambda p: p.get("stream", "all") in ("all", stream), stream=stream):
            return web.Response(status=503, text="fake_bybit: refuse_ws")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        c = _Conn(ws, stream, request)
        self.conns.append(c)
        self.conn_log.append(c)
        if len(self.conn_log) > MAX_LOG:
            del self.conn_log[: len(self.conn_log) - MAX_LOG]
        try:
            async for m in ws:
                if m.type == WSMsgType.TEXT:
                    try:
                        obj = json.loads(m.data)
                    except json.JSONDecodeError:
                        await c.send({"success": False, "ret_msg": "invalid json", "conn_id": c.conn_id})
                        continue
                    self._wslog(c, obj)
                    try:
                        await handler(c, obj)
                    except Exception as e:  # never kill the connection on a handler bug
                        log.exception("ws handler error")
                        await c.send({"success": False, "ret_msg": f"fake_bybit error: {e}", "conn_id": c.conn_id})
                elif m.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            c.closed_ms = now_ms()
            if c in self.conns:
                self.conns.remove(c)
            for sy in self.syms.values():
                sy.ticker_snapshot_sent.discard(c.conn_id)
        return ws

    async def _ws_public(self, request: web.Request):
        return await self._ws_loop(request, "public", self._on_public)

    async def _ws_private(self, request: web.Request):
        return await self._ws_loop(request, "private", self._on_private)

    async def _ws_trade(self, request: web.Request):
        return await self._ws_loop(request, "trade", self._on_trade)

    async def _common_op(self, c: _Conn, obj: dict) -> bool:
        op = obj.get("op")
        req_id = obj.get("req_id", obj.get("reqId", ""))
        if op == "ping":
            if c.stream == "public":
                await c.send({"success": True, "ret_msg": "pong", "conn_id": c.conn_id, "req_id": req_id, "op": "ping"})
            elif c.stream == "private":
                await c.send({"req_id": req_id, "op": "pong", "args": [str(now_ms())], "conn_id": c.conn_id})
            else:
                await c.send({"reqId": req_id, "retCode": 0, "retMsg": "OK", "op": "pong",
                              "data": [str(now_ms())], "connId": c.conn_id})
            return True
        if op == "auth" and c.stream != "public":
            try:
                check_ws(obj.get("args"), self.api_key, self.api_secret)
                c.authed = True
                if c.stream == "private":
                    await c.send({"success": True, "ret_msg": "", "op": "auth", "conn_id": c.conn_id, "req_id": req_id})
                else:
                    await c.send({"retCode": 0, "retMsg": "OK", "op": "auth", "connId": c.conn_id, "reqId": req_id})
            except AuthError as e:
                if c.stream == "private":
                    await c.send({"success": False, "ret_msg": e.msg, "retCode": e.code, "op": "auth",
                                  "conn_id": c.conn_id, "req_id": req_id})
                else:
                    await c.send({"retCode": e.code, "retMsg": e.msg, "op": "auth", "connId": c.conn_id,
                                  "reqId": req_id})
            return True
        return False

    def _valid_public_topic(self, t: str) -> bool:
        parts = t.split(".")
        if parts[0] == "orderbook":
            return len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in BOOK_DEPTHS
        return parts[0] in ("publicTrade", "tickers", "kline", "liquidation", "allLiquidation", "tickers_lt",
                            "insurance", "priceLimit", "adl")

    async def _on_public(self, c: _Conn, obj: dict) -> None:
        if await self._common_op(c, obj):
            return
        op = obj.get("op")
        req_id = obj.get("req_id", "")
        args = obj.get("args") or []
        if op in ("subscribe", "unsubscribe"):
            bad = [t for t in args if not self._valid_public_topic(str(t))]
            if bad:
                await c.send({"success": False, "ret_msg": f"error:handler not found,topic:{bad[0]}",
                              "conn_id": c.conn_id, "req_id": req_id, "op": op})
                args = [t for t in args if t not in bad]
            else:
                await c.send({"success": True, "ret_msg": "", "conn_id": c.conn_id, "req_id": req_id, "op": op})
            for t in args:
                if op == "subscribe":
                    c.topics.add(t)
                    await self._subscribe_public(c, t)
                else:
                    c.topics.discard(t)
            return
        await c.send({"success": False, "ret_msg": f"fake_bybit: unsupported op {op!r}", "conn_id": c.conn_id,
                      "req_id": req_id, "op": op})

    async def _on_private(self, c: _Conn, obj: dict) -> None:
        if await self._common_op(c, obj):
            return
        op = obj.get("op")
        req_id = obj.get("req_id", "")
        args = obj.get("args") or []
        if op in ("subscribe", "unsubscribe"):
            bad = [t for t in args if self._topic_base(str(t)) not in PRIVATE_TOPICS]
            for t in args:
                if t in bad:
                    continue
                (c.topics.add if op == "subscribe" else c.topics.discard)(t)
            await c.send({"success": not bad, "ret_msg": "" if not bad else f"error:handler not found,topic:{bad[0]}",
                          "conn_id": c.conn_id, "req_id": req_id, "op": op})
            return
        await c.send({"success": False, "ret_msg": f"fake_bybit: unsupported op {op!r}", "conn_id": c.conn_id,
                      "req_id": req_id, "op": op})

    def _limit_header(self, limited: bool = False) -> dict[str, str]:
        return {"X-Bapi-Limit": "20", "X-Bapi-Limit-Status": "0" if limited else "19",
                "X-Bapi-Limit-Reset-Timestamp": str(now_ms() + (1000 if limited else 0))}

    async def _on_trade(self, c: _Conn, obj: dict) -> None:
        if await self._common_op(c, obj):
            return
        op = obj.get("op", "")
        req_id = obj.get("reqId", obj.get("req_id", ""))
        args = obj.get("args") or []

        def reply(code: int, msg: str, data: Any = None, ext: Any = None, limited: bool = False) -> dict:
            hdr = self._limit_header(limited)
            hdr.update({"Traceid": uuid.uuid4().hex, "Timenow": str(now_ms())})
            return {"reqId": req_id, "retCode": code, "retMsg": msg, "op": op,
                    "data": data if data is not None else {}, "retExtInfo": ext if ext is not None else {},
                    "header": hdr, "connId": c.conn_id}

        if not c.authed:
            await c.send(reply(10003, "Please make sure you are authenticated"))
            return
        rl = self.faults.take("rate_limit", lambda p: p.get("ws"), op=op)
        if rl:
            await c.send(reply(10006, "Too many visits. Exceeded the API Rate Limit.", limited=True))
            return
        kind = op.split(".")[1].split("-")[0] if op.startswith("order.") else ""
        self._trigger_for(kind, batch=op.endswith("-batch"))
        hold = self.faults.take("hold", lambda p: self._hold_matches(p, kind, True) and "path" not in p, op=op,
                                where="ws")
        if hold:  # processed when the exchange resumes; the connection itself stays up
            async def later():
                await asyncio.sleep(float(hold.params.get("seconds", 5.0)))
                await self._trade_op(c, op, args, reply)

            t = asyncio.ensure_future(later())
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)
            return
        await self._trade_op(c, op, args, reply)

    async def _trade_op(self, c: _Conn, op: str, args: list, reply) -> None:
        events: list = []
        if op == "order.cancel" and (dc := self.faults.take("delay_cancel", op=op)):
            # The cancel reaches the matching engine late: the order rests (and can fill) meanwhile.
            params = args[0] if args else {}

            async def later(secs: float = float(dc.params.get("seconds", 1.0))) -> None:
                await asyncio.sleep(secs)
                code, msg, data, evs = self._order_op("cancel", params)
                await self._publish_private(evs)
                await self._send_ack(c, reply(code, msg, data), op)

            t = asyncio.create_task(later())
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)
            return
        if op in ("order.create", "order.amend", "order.cancel"):
            kind = op.split(".")[1]
            params = args[0] if args else {}
            code, msg, data, events = self._order_op(kind, params)
            resp = reply(code, msg, data)
        elif op in ("order.create-batch", "order.amend-batch", "order.cancel-batch"):
            kind = op.split(".")[1].split("-")[0]
            a0 = args[0] if args else {}
            reqs = a0.get("request", []) if isinstance(a0, dict) else []
            code, msg, result, ext, events = self._batch_op(kind, reqs, a0.get("category", "linear"))
            resp = reply(code, msg, result, ext)
        else:
            await c.send(reply(10001, f"fake_bybit: unsupported trade op {op!r}"))
            self.unknown[f"WS trade {op}"] = self.unknown.get(f"WS trade {op}", 0) + 1
            return
        await self._publish_private(events)
        await self._send_ack(c, resp, op)

    async def _send_ack(self, c: _Conn, resp: dict, op: str) -> None:
        if self.faults.take("lose_ack", op=op, where="ws"):
            return
        d = self.faults.take("delay_ack", op=op, where="ws")
        if d:
            secs = float(d.params.get("seconds", 1.0))

            async def later():
                await asyncio.sleep(secs)
                await c.send(resp)

            t = asyncio.create_task(later())
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)
            return
        await c.send(resp)

    # ================================================================ order operations (REST + WS)
    def _check_symbol(self, params: dict) -> _Sym:
        cat = params.get("category", "linear")
        if cat != "linear":
            raise RejectError(10001, f"fake_bybit supports category=linear only (got {cat})")
        sym = params.get("symbol")
        if sym not in self.syms:
            raise RejectError(10001, f"params error: symbol invalid ({sym})")
        return self.syms[sym]

    def _order_op(self, kind: str, p: dict) -> tuple[int, str, dict, list]:
        """Returns (retCode, retMsg, result/data, private events)."""
        try:
            eng = self._check_symbol(p).engine
            if kind == "create":
                if self.faults.take("insufficient_balance", op="create"):
                    raise RejectError(110007, "ab not enough for new order")
                tif = p.get("timeInForce", "GTC")
                post_only = tif == "PostOnly"
                force = bool(post_only and self.faults.take("post_only_reject", op="create"))
                price = _dec(p["price"], "price") if p.get("price") not in (None, "", "0") else None
                o, events = eng.submit(
                    side=p.get("side", ""), order_type=p.get("orderType", "Limit"),
                    qty=_dec(p.get("qty"), "qty"), price=price, tif=tif, link_id=p.get("orderLinkId", ""),
                    reduce_only=str(p.get("reduceOnly", "false")).lower() == "true", post_only=post_only,
                    force_post_only_reject=force)
                return 0, "OK", {"orderId": o.order_id, "orderLinkId": o.link_id}, events
            o = eng.find(p.get("orderId"), p.get("orderLinkId"))
            if kind == "cancel":
                if self.faults.take("cancel_unknown", op="cancel") or o is None:
                    raise RejectError(110001, "order not exists or too late to cancel")
                events = eng.cancel(o)
                return 0, "OK", {"orderId": o.order_id, "orderLinkId": o.link_id}, events
            if kind == "amend":
                if o is None:
                    raise RejectError(110001, "order not exists or too late to replace")
                qty = _dec(p["qty"], "qty") if p.get("qty") not in (None, "") else None
                price = _dec(p["price"], "price") if p.get("price") not in (None, "") else None
                events = eng.amend(o, qty, price)
                return 0, "OK", {"orderId": o.order_id, "orderLinkId": o.link_id}, events
            raise RejectError(10001, f"unknown op {kind}")
        except RejectError as e:
            return e.code, e.msg, {}, []
        except KeyError as e:
            return 10001, f"params error: missing {e.args[0]}", {}, []

    def _batch_op(self, kind: str, reqs: list, category: str):
        results, exts, events = [], [], []
        for r in reqs:
            r = {"category": category, **r}
            code, msg, data, ev = self._order_op(kind, r)
            events += ev
            row = {"category": category, "symbol": r.get("symbol", ""),
                   "orderId": data.get("orderId", ""), "orderLinkId": data.get("orderLinkId", r.get("orderLinkId", ""))}
            if kind == "create":
                row["createAt"] = str(now_ms())
            results.append(row)
            exts.append({"code": code, "msg": msg})
        return 0, "OK", {"list": results}, {"list": exts}, events

    # ================================================================ REST plumbing
    @web.middleware
    async def _log_middleware(self, request: web.Request, handler):
        t = now_ms()
        entry = {"time_ms": t, "method": request.method, "path": request.path, "query": request.query_string}
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            entry["status"] = e.status
            raise
        entry["status"] = resp.status
        entry["retCode"] = getattr(resp, "_fake_ret_code", None)
        if not request.path.startswith("/__control") and request.path not in (PUBLIC_PATH, PRIVATE_PATH, TRADE_PATH):
            self.request_log.append(entry)
            if len(self.request_log) > MAX_LOG:
                del self.request_log[: len(self.request_log) - MAX_LOG]
        return resp

    def _json(self, body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
        resp = web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, separators=(",", ":")))
        resp._fake_ret_code = body.get("retCode")  # type: ignore[attr-defined]
        return resp

    # REST order paths -> the op name the ``hold`` fault's ``op`` filter uses
    _REST_OPS = {"/v5/order/create": "create", "/v5/order/create-batch": "create", "/v5/order/amend": "amend",
                 "/v5/order/amend-batch": "amend", "/v5/order/cancel": "cancel", "/v5/order/cancel-batch": "cancel",
                 "/v5/order/cancel-all": "cancel_all"}

    @staticmethod
    def _hold_matches(params: dict, op: str, order_op: bool) -> bool:
        """``hold`` applies to order ops (``what="orders"``) or to everything (``what="all"``)."""
        if not order_op and params.get("what", "orders") != "all":
            return False
        return params.get("op") in (None, op)

    def _trigger_for(self, op: str, batch: bool = False, rest: bool = False) -> None:
        if op in ("cancel", "cancel_all"):
            if op == "cancel_all":
                self.faults.trigger("cancel_all")
            if batch or rest:  # mmbot's stop: batch cancels, then the venue check's REST cancels
                self.faults.trigger("stop_cancel")
            self.faults.trigger("cancel")

    async def _held(self, seconds: float, work):
        """Run ``work()`` after ``seconds`` as a task of its own: a request that reached a frozen
        exchange is processed when the exchange resumes, whether or not its client still waits."""
        async def later():
            await asyncio.sleep(seconds)
            return await work()

        t = asyncio.ensure_future(later())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
        return await asyncio.shield(t)

    def _auth(self, fn, order_op: bool = False):
        async def wrapped(request: web.Request):
            op = self._REST_OPS.get(request.path, "query")
            self._trigger_for(op, batch=request.path.endswith("-batch"), rest=True)
            payload = request.query_string if request.method == "GET" else await request.text()
            rl = self.faults.take("rate_limit", lambda p: not p.get("ws") and request.path.startswith(p.get("path", "/")),
                                  path=request.path)
            if rl:
                status = int(rl.params.get("http_status", 200))
                body = P.err(10006, "Too many visits. Exceeded the API Rate Limit.")
                if status == 403:
                    body = P.err(10006, "access too frequent (IP rate limit)")
                return self._json(body, status=status, headers=self._limit_header(limited=True))
            if self.faults.take("sign_error", lambda p: request.path.startswith(p.get("path", "/")), path=request.path):
                # Bybit's answer to a bad signature quotes the string it expected to be signed,
                # API key included: a log of this reply leaks the key unless every sink masks it.
                h = request.headers
                signed = f"{h.get('X-BAPI-TIMESTAMP', '')}{h.get('X-BAPI-API-KEY', '')}" \
                         f"{h.get('X-BAPI-RECV-WINDOW', '5000')}{payload}"
                return self._json(P.err(10004, f"error sign! origin_string[{signed}]"), headers=self._limit_header())
            try:
                check_rest(request.headers, payload, self.api_key, self.api_secret)
            except AuthError as e:
                return self._json(P.err(e.code, e.msg), headers=self._limit_header())
            params: dict = dict(request.query)
            if request.method == "POST":
                try:
                    params = json.loads(payload) if payload else {}
                except json.JSONDecodeError:
                    return self._json(P.err(10001, "params error: body is not JSON"))

            async def process():
                if order_op:
                    lost = self.faults.take("lose_ack", path=request.path, where="rest")
                    if lost:
                        await fn(params)  # processed; the answer is lost
                        await asyncio.sleep(float(lost.params.get("seconds", 30.0)))
                        return web.Response(status=504, text="")
                    d = self.faults.take("delay_ack", path=request.path, where="rest")
                    if d:
                        body = await fn(params)
                        await asyncio.sleep(float(d.params.get("seconds", 1.0)))
                        return self._json(body, headers=self._limit_header())
                body = await fn(params)
                return self._json(body, headers=self._limit_header())

            hold = self.faults.take("hold", lambda p: self._hold_matches(p, op, order_op)
                                    and request.path.startswith(p.get("path", "/")), path=request.path, op=op)
            if hold:
                return await self._held(float(hold.params.get("seconds", 5.0)), process)
            return await process()

        return wrapped

    async def _h_unknown(self, request: web.Request):
        key = f"{request.method} {request.path}"
        self.unknown[key] = self.unknown.get(key, 0) + 1
        log.warning("fake_bybit: unknown request %s?%s", key, request.query_string)
        return self._json({"retCode": 10404, "retMsg": f"fake_bybit: unsupported endpoint {key}",
                           "result": {}, "retExtInfo": {}, "time": now_ms()}, status=404)

    # ================================================================ REST handlers (public)
    async def _h_time(self, request):
        t = time.time()
        return self._json(P.ok({"timeSecond": str(int(t)), "timeNano": str(int(t * 1e9))}))

    async def _h_instruments(self, request):
        q = request.query
        if q.get("category", "linear") != "linear":
            return self._json(P.ok({"category": q.get("category"), "list": [], "nextPageCursor": ""}))
        rows = [r for sym in self._selected(q) for r in P.instrument_rows(sym)]
        return self._json(P.ok({"category": "linear", "list": rows, "nextPageCursor": ""}))

    async def _h_tickers(self, request):
        q = request.query
        rows = []
        for sym in (self._selected(q) if q.get("category", "linear") == "linear" else []):
            s = self.syms[sym]
            if s.engine.book.ready:
                d = self._ticker_data(s)
                d.pop("tickDirection", None)
                rows.append(d)
        return self._json(P.ok({"category": "linear", "list": rows}))

    async def _h_orderbook(self, request):
        depth = int(request.query.get("limit", "25"))
        s = self.syms.get(request.query.get("symbol", self.symbol), self.syms[self.symbol])
        bids, asks = s.engine.book.top(depth)
        return self._json(P.ok({"s": s.symbol, "b": P.book_levels(bids, s.inst), "a": P.book_levels(asks, s.inst),
                                "ts": now_ms(), "u": s.engine.book.u, "seq": s.engine.book.seq,
                                "cts": now_ms()}))

    async def _h_recent_trade(self, request):
        return self._json(P.ok({"category": "linear", "list": []}))

    async def _h_empty_list(self, request):
        return self._json(P.ok({"category": "linear", "symbol": request.query.get("symbol", ""), "list": []}))

    # ================================================================ REST handlers (private)
    def _selected(self, params) -> list[str]:
        """The symbols a request asks about: its ``symbol`` (none when not served), else all."""
        sym = params.get("symbol")
        if sym in (None, ""):
            return list(self.syms)
        return [sym] if sym in self.syms else []

    async def _h_fee_rate(self, params):
        syms = self._selected(params) or [self.symbol]
        body = P.fee_rate_body(syms[0], self.engine.maker_fee, self.engine.taker_fee)
        for sym in syms[1:]:
            body["result"]["list"] += P.fee_rate_body(sym, self.engine.maker_fee, self.engine.taker_fee)["result"]["list"]
        return body

    async def _h_wallet(self, params):
        return P.ok({"list": [self._wallet_row(http=True)]})

    async def _h_account_info(self, params):
        body = P.template("http_get_account_info.json")
        body["result"]["unifiedMarginStatus"] = 5
        body["result"]["updatedTime"] = str(now_ms())
        body["retExtInfo"] = {}
        body["time"] = now_ms()
        return body

    async def _h_query_api(self, params):
        body = P.template("http_get_user_query_api.json")
        body["result"].update({"apiKey": self.api_key, "readOnly": 0, "note": "fake_bybit", "ips": ["*"],
                               "unified": 1, "uta": 1})
        body["result"].setdefault("mktMakerLevel", "0")
        body.setdefault("retExtInfo", {})
        body["time"] = now_ms()
        return body

    async def _h_positions(self, params):
        rows = [P.position_row(self.syms[sym].engine, sym, http=True) for sym in self._selected(params)]
        return P.ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    def _filter_orders(self, orders: list[Order], params: dict) -> list[Order]:
        if params.get("orderId"):
            orders = [o for o in orders if o.order_id == params["orderId"]]
        if params.get("orderLinkId"):
            orders = [o for o in orders if o.link_id == params["orderLinkId"]]
        return orders

    async def _h_orders_realtime(self, params):
        open_only = str(params.get("openOnly", "0")) == "0"
        rows = []
        for sym in self._selected(params):
            eng = self.syms[sym].engine
            # Bybit: openOnly=0 -> active orders (plus recent closed when orderId/orderLinkId given)
            orders = eng.open_orders()
            if params.get("orderId") or params.get("orderLinkId") or not open_only:
                orders = sorted(eng.orders.values(), key=lambda o: o.seq)
            orders = self._filter_orders(list(reversed(orders)), params)
            rows += [P.order_row(o, eng.inst, category=False) for o in orders]
        return P.ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    async def _h_orders_history(self, params):
        rows = []
        for sym in self._selected(params):
            eng = self.syms[sym].engine
            orders = self._filter_orders(sorted(eng.orders.values(), key=lambda o: -o.seq), params)
            rows += [P.order_row(o, eng.inst, category=False) for o in orders]
        return P.ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    async def _h_executions(self, params):
        rows = []
        for sym in self._selected(params):
            eng = self.syms[sym].engine
            ex = list(reversed(eng.executions))
            if params.get("orderId"):
                ex = [e for e in ex if e.order.order_id == params["orderId"]]
            for e in ex:
                r = P.execution_row(e, eng.mark_price(), eng.inst)
                r.pop("category", None)
                rows.append(r)
        return P.ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    async def _h_create(self, params):
        code, msg, data, events = self._order_op("create", params)
        await self._publish_private(events)
        return P.ok(data) if code == 0 else P.err(code, msg)

    async def _h_amend(self, params):
        code, msg, data, events = self._order_op("amend", params)
        await self._publish_private(events)
        return P.ok(data) if code == 0 else P.err(code, msg)

    async def _h_cancel(self, params):
        code, msg, data, events = self._order_op("cancel", params)
        await self._publish_private(events)
        return P.ok(data) if code == 0 else P.err(code, msg)

    async def _h_cancel_all(self, params):
        try:
            if params.get("category", "linear") != "linear":
                raise RejectError(10001, "fake_bybit supports category=linear only")
        except RejectError as e:
            return P.err(e.code, e.msg)
        rows, events = [], []
        for sym in self._selected(params):
            eng = self.syms[sym].engine
            for o in eng.open_orders():
                events += eng.cancel(o)
                rows.append({"orderId": o.order_id, "orderLinkId": o.link_id})
        await self._publish_private(events)
        return P.ok({"list": rows, "success": "1"})

    def _h_batch(self, kind: str):
        async def h(params):
            reqs = params.get("request", [])
            code, msg, result, ext, events = self._batch_op(kind, reqs, params.get("category", "linear"))
            await self._publish_private(events)
            body = P.ok(result)
            body["retExtInfo"] = ext
            return body

        return h

    async def _h_set_leverage(self, params):
        try:
            lev = Decimal(str(params.get("buyLeverage", "10")))
        except InvalidOperation:
            return P.err(10001, "params error: buyLeverage")
        engines = [self.syms[sym].engine for sym in self._selected(params)] or [self.engine]
        if all(lev == e.account.leverage for e in engines):
            return P.err(110043, "Set leverage not modified")
        for e in engines:
            e.account.leverage = lev
        return P.ok({})

    async def _h_set_margin_mode(self, params):
        return P.ok({"reasons": []})

    async def _h_ok_empty(self, params):
        return P.ok({})

    # ================================================================ control API
    async def _c_state(self, request):
        return self._json(self.state())

    async def _c_stats(self, request):
        return self._json(self.stats())

    async def _c_published(self, request):
        return self._json({t: {str(sec): v for sec, v in sorted(by_s.items())} for t, by_s in self.published.items()})

    async def _c_faults_get(self, request):
        return self._json(self.faults.to_json())

    async def _c_faults_post(self, request):
        try:
            body = await request.json()
            kind = body.pop("kind")
            return self._json({"ok": True, "fault": self.inject(kind, **body)})
        except (KeyError, ValueError, TypeError) as e:
            return self._json({"ok": False, "error": str(e)}, status=400)

    async def _c_faults_delete(self, request):
        self.clear_faults(request.query.get("kind"))
        return self._json({"ok": True})

    async def _c_feed(self, request):
        body = await request.json()
        for m in body if isinstance(body, list) else [body]:
            await self.feed(m)
        return self._json({"ok": True})

    async def _c_replay(self, request):
        body = await request.json()
        action = body.get("action")
        if action == "pause":
            self.pause()
        elif action == "resume":
            self.resume()
        elif action == "step":
            await self.step(int(body.get("n", 1)))
        elif action == "speed":
            self.speed = float(body["speed"])
        else:
            return self._json({"ok": False, "error": f"unknown action {action!r}"}, status=400)
        return self._json({"ok": True, "replayed": self.replayed})
