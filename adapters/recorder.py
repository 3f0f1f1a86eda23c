"""The live recorder and the raw public WebSocket tap (docs/shadow.md).

Raw frames in NautilusTrader 1.231: the Bybit data client's WebSocket is a Rust client
(``nautilus_pyo3.BybitWebSocketClient``) that parses every public frame in Rust and hands the
Python callback only parsed Nautilus data (PyCapsules, pyo3 objects); frames it does not parse
reach ``BybitDataClient._handle_msg`` as bytes and are only logged at DEBUG. There is no raw-frame
hook, message-bus topic or Rust callback exposing the original text. mmbot therefore reads the
public stream itself:

- ``RawPublicDataClient`` (a Nautilus ``LiveMarketDataClient``) opens its own public WebSocket
  (aiohttp), subscribes ``orderbook.{depth}.{SYMBOL}`` / ``publicTrade.{SYMBOL}``, stamps every
  frame with ``local_ts_ns`` on receipt and publishes ``(local_ts_ns, text)`` on the message-bus
  topic ``RAW_TOPIC`` (the recorder writes it). With ``feed = true`` (shadow mode) it is *the*
  data client: it parses the same frames with the catalog importer's own converters
  (``adapters.bybit_book.BookStream``, ``adapters.bybit_trades.TradeStream``), ``ts_init`` =
  ``local_ts_ns``, so the node sees exactly the rows ``mmbot catalog import`` will produce from
  the recording (replay consistency by construction). When the book goes invalid (an update-id
  gap, a crossed book or a bad number: the importer's converter emits its lone ``CLEAR`` marker),
  the client re-subscribes the book topic (unsubscribe + subscribe: Bybit answers with a fresh
  snapshot), again every ``resync_retry_s`` until a snapshot arrives, as Nautilus-side live data
  does (``adapters/bybit_live_book.py``); before, shadow stayed ``INVALID`` until a reconnect. Each
  invalidation is published on ``status_topic`` (``{"book_gap": True, ...}``, given by the builder)
  for ``mmbot_book_gaps_total``. With ``feed = false`` (testnet/demo/mainnet)
  it is a parallel tap beside Nautilus' own data client: the recording then holds the same
  exchange messages, but its receive stamps come from a second socket, so a replay may differ from
  what the live node saw by the two sockets' arrival jitter.
- ``RecorderActor`` writes the raw lines to daily-rotated ``{SYMBOL}_{YYYY-MM-DD}.jsonl.gz``
  files (the mmbot recording format, docs/data.md) and our order events and fills to
  ``orders.jsonl``. Every day file starts with a book snapshot, so each imports on its own
  (``mmbot catalog import --strict``): at the first frame after UTC midnight the raw client
  re-subscribes its book topics (Bybit answers with a snapshot) and publishes a rotation marker
  ``(local_ts_ns, None)`` on ``RAW_TOPIC`` just before that snapshot; the writer switches files at
  the marker, so the few book deltas between midnight and the snapshot (and any trade) end the
  previous day's file. Without a marker (no book topic, a snapshot that never comes) the writer
  switches anyway once a line is ``ROTATE_WAIT_S`` past midnight. Lines are buffered in memory (hot path: one list append) and written by a
  background thread every ``flush_interval_ms``, each flush as its own gzip member: a crash loses
  at most the last interval and leaves a file ``adapters/sources.py`` imports (a truncated last
  member / line is reported, not fatal). On an OS error (disk full, permission) it reports once,
  stops writing, keeps the node alive, and, when ``required``, halts quoting via the kill switch
  (``kill_endpoint``, given by the builder) or, when no kill switch listens there, stops the node.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import ActorConfig, LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.enums import BookAction, RecordFlag
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue

from adapters.order_ids import own_order_prefix

def _on_loop(callback):
    """``callback`` run on the event loop's thread when a loop runs (live: Nautilus 1.231's LiveClock
    calls timers on its own thread; the health check may halt quoting through the msgbus, which
    belongs to the loop). As ``strategies.risk.base.loop_dispatcher``: adapters do not import
    strategies."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return callback
    tid = threading.get_ident()

    def run(event) -> None:
        if threading.get_ident() == tid:
            callback(event)
            return
        try:
            loop.call_soon_threadsafe(callback, event)
        except RuntimeError:
            pass  # loop closed: stopping

    return run


RAW_TOPIC = "mmbot.raw.public"
_F_SNAPSHOT = int(RecordFlag.F_SNAPSHOT)
_CLEAR = BookAction.CLEAR
HOLD_MAX_FRAMES = 20_000  # tap frames held until the recorder subscribes (RawPublicDataClient._on_frame)
DAY_NS = 86_400_000_000_000
ROTATE_WAIT_S = 30.0  # writer: a new day's file starts this long after midnight at the latest (no marker)
_ROTATE_WAIT_NS = int(ROTATE_WAIT_S * 1e9)
BYBIT_PUBLIC_LINEAR = {"mainnet": "wss://stream.bybit.com/v5/public/linear",
                       "testnet": "wss://stream-testnet.bybit.com/v5/public/linear",
                       "demo": "wss://stream.bybit.com/v5/public/linear"}  # demo has no own public stream


def with_local_ts(text: str, local_ts_ns: int) -> str:
    """The raw frame exactly as received plus one top-level ``local_ts_ns`` key."""
    body = text.rstrip()
    if body.endswith("}"):
        inner = body[:-1].rstrip()
        sep = "" if inner.endswith("{") else ","
        return f'{inner}{sep}"local_ts_ns":{local_ts_ns}}}'
    return json.dumps({"raw": text, "local_ts_ns": local_ts_ns})


# -- the writer ---------------------------------------------------------------------------------

def _day(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d")  # int: 1e9 floats round up to midnight


def _topic_symbol(line: str) -> str:
    """The symbol of a Bybit public frame's topic (``orderbook.50.BTCUSDT`` -> ``BTCUSDT``), ""
    for a frame without one (flush thread only)."""
    i = line.find('"topic":"')
    if i < 0:
        return ""
    j = line.find('"', i + 9)
    return line[i + 9:j].rpartition(".")[2] if j > 0 else ""


def _drain(buf: deque) -> list:
    """What ``buf`` holds now, removed from it (``popleft`` is atomic: lines appended meanwhile
    stay for the next flush)."""
    return [buf.popleft() for _ in range(len(buf))]


class RecordWriter:
    """Buffered, thread-flushed writer of raw lines (gzip member per flush, daily files) and of
    order-event lines (plain JSONL). Thread-safe; ``add_*`` never blocks on I/O."""

    def __init__(self, out_dir: Path | str, symbol: str, flush_interval_ms: int = 1000,
                 on_error=None, symbols: tuple[str, ...] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.symbol = symbol
        # Several instruments on one public socket (a [portfolio], docs/portfolio.md "Modes"): each
        # line goes to its own symbol's day file (the importer reads one symbol per file), found
        # from the frame's topic on the flush thread (nothing on the node's thread).
        self.symbols = tuple(symbols) if symbols else (symbol,)
        self._days: dict[str, list] = {}  # several symbols: symbol -> [day, day_end_ns, rotate_pending]
        self.interval_s = max(flush_interval_ms, 10) / 1000.0
        self.on_error = on_error
        # Appended by the node's thread, drained by the flush thread. One deque each, never
        # replaced: a swap (``buf, self._raw = self._raw, []``) between the append's lookup of the
        # buffer and the append itself lost the appended line.
        self._raw: deque[tuple[int, str | None]] = deque()  # (local_ts_ns, line); line None = rotation marker
        self._events: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str = ""
        self.lines_written = 0
        self.events_written = 0
        self.flushes = 0
        self.files: set[str] = set()
        # The day file raw lines go to, and the UTC midnight that ends it (module docstring: the
        # switch happens at a rotation marker, or ROTATE_WAIT_S after midnight without one).
        self._file_day = ""
        self._file_day_end_ns = 0
        self.rotations = 0

    def start(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fail(e)
        self._thread = threading.Thread(target=self._run, name="mmbot-recorder", daemon=True)
        self._thread.start()

    def add_raw(self, local_ts_ns: int, line: str | None) -> None:
        """A raw line, or ``None``: the rotation marker (the next line starts the day file of
        ``local_ts_ns``, if that is a later day)."""
        if not self.error:
            self._raw.append((local_ts_ns, line))  # deque.append is atomic under the GIL

    def add_event(self, rec: dict) -> None:
        if not self.error:
            self._events.append(json.dumps(rec, separators=(",", ":"), default=str))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            raw, events = _drain(self._raw), _drain(self._events)
            if self.error or (not raw and not events):
                return
            try:
                if len(self.symbols) > 1:
                    self._write_symbols(raw)
                    raw = []
                by_day: dict[str, list[str]] = {}
                for ts, line in raw:
                    if ts >= self._file_day_end_ns and (line is None or ts >= self._file_day_end_ns + _ROTATE_WAIT_NS
                                                        or not self._file_day):
                        self.rotations += bool(self._file_day)
                        self._file_day = _day(ts)
                        self._file_day_end_ns = (ts // DAY_NS + 1) * DAY_NS
                    if line is not None:
                        by_day.setdefault(self._file_day, []).append(line)
                for day, lines in by_day.items():
                    path = self.out_dir / f"{self.symbol}_{day}.jsonl.gz"
                    member = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=5, mtime=0)
                    with open(path, "ab") as f:
                        f.write(member)
                    self.files.add(str(path))
                    self.lines_written += len(lines)
                if events:
                    with open(self.out_dir / "orders.jsonl", "a") as f:
                        f.write("\n".join(events) + "\n")
                    self.events_written += len(events)
                self.flushes += 1
            except OSError as e:
                self._fail(e)

    def _write_symbols(self, raw: list) -> None:
        """Several symbols: each line to ``{SYMBOL}_{day}.jsonl.gz`` of its topic's symbol (a line
        without a topic, e.g. a subscription answer, to the first symbol's). A rotation marker
        starts a new day for every symbol at that symbol's next book snapshot (the raw client
        re-subscribed every book topic; Bybit answers each with a snapshot), so every day file of
        every symbol starts with one; or ``ROTATE_WAIT_S`` after midnight without one."""
        by_file: dict[tuple[str, str], list[str]] = {}
        for ts, line in raw:
            if line is None:
                for sym in self.symbols:
                    st = self._days.get(sym)
                    if st is not None and ts >= st[1]:
                        st[2] = True
                continue
            sym = _topic_symbol(line) or self.symbols[0]
            st = self._days.get(sym)
            if st is None:
                st = self._days[sym] = ["", 0, False]
            if ts >= st[1] and (not st[0] or ts >= st[1] + _ROTATE_WAIT_NS
                                or (st[2] and '"snapshot"' in line and '"orderbook.' in line)):
                self.rotations += bool(st[0])
                st[0], st[1], st[2] = _day(ts), (ts // DAY_NS + 1) * DAY_NS, False
            by_file.setdefault((sym, st[0]), []).append(line)
        for (sym, day), lines in by_file.items():
            path = self.out_dir / f"{sym}_{day}.jsonl.gz"
            member = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=5, mtime=0)
            with open(path, "ab") as f:
                f.write(member)
            self.files.add(str(path))
            self.lines_written += len(lines)

    def _fail(self, e: OSError) -> None:
        if self.error:
            return
        self.error = f"recorder: cannot write {self.out_dir}: {type(e).__name__}: {e}; recording stopped"
        self._raw.clear()
        self._events.clear()
        if self.on_error is not None:
            try:
                self.on_error(self.error)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


# -- the actor ----------------------------------------------------------------------------------

class RecorderConfig(ActorConfig, frozen=True):
    """out_dir: recording directory; required: a write error halts quoting by a message to
    ``kill_endpoint`` (the kill switch's msgbus endpoint, given by the builder: adapters do not
    import strategies), or stops the node when nothing is registered there."""

    instrument_id: InstrumentId
    out_dir: str
    # A [portfolio]: every instrument's symbol (one day file each); () = instrument_id's alone.
    instrument_ids: tuple[str, ...] = ()
    flush_interval_ms: int = 1000
    required: bool = False
    kill_endpoint: str = ""


class RecorderActor(Actor):
    def __init__(self, config: RecorderConfig) -> None:
        super().__init__(config)
        symbol = config.instrument_id.symbol.value.split("-")[0]
        symbols = tuple(InstrumentId.from_str(i).symbol.value.split("-")[0] for i in config.instrument_ids)
        self.writer = RecordWriter(config.out_dir, symbol, config.flush_interval_ms, on_error=self._on_error,
                                   symbols=symbols)
        self._error_pending = ""

    def on_start(self) -> None:
        self._own_ids = own_order_prefix(self.trader_id.get_tag())
        self.writer.start()
        self.msgbus.subscribe(topic=RAW_TOPIC, handler=self._on_raw)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)
        self.clock.set_timer("recorder-health", interval=__import__("pandas").Timedelta(seconds=1),
                             callback=_on_loop(self._check))

    def on_stop(self) -> None:
        self.writer.close()
        self._check(None)
        self.log.info(f"recorder: {self.writer.lines_written} raw lines, {self.writer.events_written} order events, "
                      f"{self.writer.flushes} flushes -> {self.writer.out_dir}")

    def _on_raw(self, msg) -> None:
        self.writer.add_raw(msg[0], msg[1])

    def _on_order_event(self, event) -> None:
        if self._own_ids.match(event.client_order_id.value) is None:
            return  # another program's order on the shared account: not ours to record (calibrate reads this)
        rec = {"kind": type(event).__name__, "ts_event_ns": event.ts_event, "ts_init_ns": event.ts_init,
               "client_order_id": event.client_order_id.value, "wall_ts_ns": self.clock.timestamp_ns()}
        if isinstance(event, OrderFilled):
            rec.update(side=event.order_side.name, price=event.last_px.as_double(), qty=event.last_qty.as_double(),
                       fee=event.commission.as_double(), liquidity=event.liquidity_side.name,
                       trade_id=event.trade_id.value)
        else:
            for attr in ("price", "quantity", "reason", "side"):
                v = getattr(event, attr, None)
                if v is not None:
                    rec[attr] = v.name if hasattr(v, "name") else str(v)
            if "price" not in rec and type(event).__name__ == "OrderInitialized":
                px = (getattr(event, "options", None) or {}).get("price")
                if px is not None:
                    rec["price"] = str(px)
        self.writer.add_event(rec)

    def _on_error(self, message: str) -> None:
        self._error_pending = message  # from the writer thread: reported on the node's thread

    def _check(self, _event) -> None:
        if not self._error_pending:
            return
        msg, self._error_pending = self._error_pending, ""
        self.log.error(msg + (" (recording required: quoting halted)" if self.config.required else
                              " (trading continues unrecorded)"))
        import sys

        print(json.dumps({"level": "ERROR", "logger": "mmbot.recorder", "event": "recorder_failed",
                          "error": msg, "required": self.config.required}), file=sys.stderr, flush=True)
        if not self.config.required:
            return
        if self.config.kill_endpoint and self.config.kill_endpoint in self.msgbus.endpoints():
            self.msgbus.send(endpoint=self.config.kill_endpoint, msg={"action": "kill", "reason": "recorder failed",
                                                                      "source": "recorder"})
        else:
            # No kill switch to halt quoting (the live builders refuse record_required without one;
            # this is the last line of defence): stop the whole node, whose stop cancels our orders.
            # MessageBus.send to a missing endpoint only logs, it raises nothing.
            self.shutdown_system("recorder failed and recording is required (live.record_required), "
                                 "with no kill switch to halt quoting")


# -- the raw public WebSocket data client -------------------------------------------------------

class RawPublicDataClientConfig(LiveDataClientConfig, frozen=True):
    """url: public linear WebSocket; instrument_id: the one symbol; depth: orderbook depth;
    feed: parse and feed the node (shadow) or only publish raw frames (tap); status_topic: where
    book invalidations are published ("" = nowhere; the builder gives mmbot's data-status topic);
    resync_retry_s: how long to wait for the snapshot of a re-subscription before trying again."""

    url: str = ""
    instrument_id: str = ""
    # A [portfolio] on one socket: every instrument id (instrument_id is the first); () = that one.
    instrument_ids: tuple[str, ...] = ()
    # Several instruments (feed): published once, with the ts_init of the message that made every
    # instrument's book valid for the first time, before that message reaches the node ("" = off).
    books_ready_topic: str = ""
    depth: int = 50
    feed: bool = True
    ping_interval_s: float = 20.0
    status_topic: str = ""
    resync_retry_s: float = 5.0

    def __post_init__(self) -> None:
        # The ping task sleeps this long between pings: 0, a negative or a NaN interval made it a
        # busy loop on the node's event loop, ~50,000 pings a second (hostile review 35 D2).
        for name in ("ping_interval_s", "resync_retry_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.1 <= v <= 3600):
                raise ValueError(f"RawPublicDataClientConfig.{name} must be a number of seconds in [0.1, 3600], "
                                 f"got {v!r}")


class RawPublicDataClient(LiveMarketDataClient):
    def __init__(self, loop, client_id, msgbus, cache, clock, config: RawPublicDataClientConfig) -> None:
        from adapters.instruments import InstrumentRegistry

        self._iids = [InstrumentId.from_str(i) for i in (tuple(config.instrument_ids) or (config.instrument_id,))]
        self._iid = self._iids[0]
        self._symbol = self._iid.symbol.value.split("-")[0]
        self._by_symbol = {i.symbol.value.split("-")[0]: i for i in self._iids}
        # The tap (feed = false) parses nothing and leaves the instrument to the venue's data client.
        registry = InstrumentRegistry() if config.feed else None
        self._instruments = {sym: registry.get_by_id(i) if registry is not None else None
                             for sym, i in self._by_symbol.items()}
        self._instrument = self._instruments[self._symbol]
        provider = InstrumentProvider()
        for instrument in self._instruments.values():
            if instrument is not None:
                provider.add(instrument)
        super().__init__(loop=loop, client_id=client_id, venue=Venue("BYBIT") if config.feed else None,
                         msgbus=msgbus, cache=cache, clock=clock, instrument_provider=provider, config=config)
        self._cfg = config
        self._topics: set[str] = set()
        self._session = None
        self._ws = None
        self._task = None
        self._next_ts = 0
        self._book = None
        self._trades = None
        self._books: dict = {}    # symbol -> BookStream (feed)
        self._trade_streams: dict = {}
        self._valid = dict.fromkeys(self._by_symbol, False)  # symbol -> its parsed book is valid
        self._books_ready_sent = False
        self.frames = 0
        self.reconnects = 0
        self.book_invalidations = 0
        self.resubscriptions = 0
        self._resync_task = None
        self._resync_tasks: dict = {}  # book topic -> its re-subscription task (one per instrument)
        # Day files (module docstring): the first frame at or after _day_end_ns re-subscribes the
        # book; the next book snapshot is preceded by a rotation marker on RAW_TOPIC.
        self._day_end_ns = 0
        self._rotate_pending = False
        self._rotate_task = None
        self.day_resubscriptions = 0
        # The tap subscribes on connect, before the node starts its actors: hold the frames (the
        # subscription snapshot first) until the recorder listens on RAW_TOPIC, then release them.
        self._held: list[tuple[int, str]] | None = None if config.feed else []

    @property
    def book_valid(self) -> bool:
        """feed: every instrument's parsed book is valid (a snapshot since its last invalidation)."""
        return all(self._valid.values())

    def _new_streams(self) -> None:
        if not self._cfg.feed:
            return
        from adapters.bybit_book import BookStream
        from adapters.bybit_trades import TradeStream
        from adapters.problems import ProblemLog

        log = ProblemLog()
        self._books = {sym: BookStream(inst, log, "<live>") for sym, inst in self._instruments.items()}
        self._trade_streams = {sym: TradeStream(inst, log, "<live>") for sym, inst in self._instruments.items()}
        self._book, self._trades = self._books[self._symbol], self._trade_streams[self._symbol]
        self._valid = dict.fromkeys(self._by_symbol, False)

    async def _connect(self) -> None:
        import aiohttp

        if self._cfg.feed:  # the tap publishes nothing into the data engine
            for instrument in self._instruments.values():
                self._cache.add_instrument(instrument)
                self._handle_data(instrument)
        self._new_streams()
        self._session = aiohttp.ClientSession()
        if not self._cfg.feed:  # tap: record the strategies' topics from the start
            for sym in self._by_symbol:
                self._topics |= {f"orderbook.{self._cfg.depth}.{sym}", f"publicTrade.{sym}"}
        await self._open()
        self._task = self._loop.create_task(self._read_loop())

    async def _open(self) -> None:
        self._ws = await self._session.ws_connect(self._cfg.url, heartbeat=None, autoping=True)
        if self._topics:
            await self._ws.send_str(json.dumps({"op": "subscribe", "args": sorted(self._topics)}))

    async def _disconnect(self) -> None:
        for task in (self._rotate_task, *self._resync_tasks.values()):
            if task is not None:
                task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _subscribe_topic(self, topic: str) -> None:  # not `_subscribe`: that is Nautilus' generic hook
        if topic in self._topics:
            return
        self._topics.add(topic)
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(json.dumps({"op": "subscribe", "args": [topic]}))

    def _command_symbol(self, command) -> str:
        iid = getattr(command, "instrument_id", None)
        return iid.symbol.value.split("-")[0] if iid is not None else self._symbol

    async def _subscribe_order_book_deltas(self, command) -> None:
        depth = command.depth or self._cfg.depth
        await self._subscribe_topic(f"orderbook.{depth}.{self._command_symbol(command)}")

    async def _subscribe_trade_ticks(self, command) -> None:
        await self._subscribe_topic(f"publicTrade.{self._command_symbol(command)}")

    async def _subscribe_instrument(self, command) -> None:
        pass

    async def _subscribe_funding_rates(self, command) -> None:
        pass  # not on the public book/trade stream (the run ledger asks; nothing arrives)

    async def _subscribe_mark_prices(self, command) -> None:
        pass

    async def _unsubscribe_order_book_deltas(self, command) -> None:
        pass

    async def _unsubscribe_trade_ticks(self, command) -> None:
        pass

    async def _read_loop(self) -> None:
        import aiohttp

        # Pings from a task of their own: ``receive(timeout=...)`` armed (and cancelled) a loop timer
        # for every frame, i.e. for every book message on the event loop the node trades on.
        ping = self._loop.create_task(self._ping_loop())
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR,
                                  aiohttp.WSMsgType.CLOSING):
                    self._log.warning("raw public WebSocket closed; reconnecting")
                    await asyncio.sleep(1.0)
                    try:
                        self._new_streams()  # the resubscribe snapshot starts a fresh book
                        self.reconnects += 1
                        await self._open()
                    except Exception as e:  # noqa: BLE001
                        self._log.error(f"raw public WebSocket reconnect failed: {e}")
        finally:
            ping.cancel()

    async def _ping_loop(self) -> None:
        """Bybit's application-level ping every ``ping_interval_s``, frames flowing or not (Bybit
        drops a public connection that sends nothing for 10 minutes)."""
        while True:
            await asyncio.sleep(self._cfg.ping_interval_s)
            ws = self._ws
            if ws is not None and not ws.closed:
                try:
                    await ws.send_str('{"op":"ping"}')
                except Exception:  # noqa: BLE001 (closing: the read loop reconnects)
                    pass

    def _on_frame(self, text: str) -> None:
        # Receive stamp, strictly after every row of the previous message (book rows get ts_init + k),
        # so a replay orders messages exactly as they arrived here.
        now = self._clock.timestamp_ns()
        local = now if now >= self._next_ts else self._next_ts
        self._next_ts = local + 1
        self.frames += 1
        if local >= self._day_end_ns:
            self._day_rolled(local)
        if self._rotate_pending and '"snapshot"' in text and '"orderbook.' in text:
            self._rotate_pending = False
            self._publish_raw((local, None))  # this snapshot starts the new day's file
        self._publish_raw((local, with_local_ts(text, local)))
        if self._cfg.feed and '"topic"' in text:
            self._parse(text, local)

    def _publish_raw(self, msg: tuple) -> None:
        if self._held is not None:
            if not self._msgbus.has_subscribers(RAW_TOPIC):
                if len(self._held) < HOLD_MAX_FRAMES:
                    self._held.append(msg)
                elif len(self._held) == HOLD_MAX_FRAMES:
                    self._held.append((0, ""))  # marker: warn once
                    self._log.warning(f"raw public tap: nobody subscribed to {RAW_TOPIC}; dropping frames")
                return
            held, self._held = self._held, None
            for m in held:
                if m[1] != "":
                    self._msgbus.publish(topic=RAW_TOPIC, msg=m)
        self._msgbus.publish(topic=RAW_TOPIC, msg=msg)

    def _day_rolled(self, local: int) -> None:
        """The first frame of a new UTC day (or of the session): from the second day on, ask for a
        fresh book snapshot so the new day's file starts with one (module docstring)."""
        first = self._day_end_ns == 0
        self._day_end_ns = (local // DAY_NS + 1) * DAY_NS
        if first:
            return
        books = sorted(t for t in self._topics if t.startswith("orderbook."))
        if not books or self._ws is None or self._ws.closed:
            self._publish_raw((local, None))  # nothing to wait for (a reconnect brings its own snapshot)
            return
        self._rotate_pending = True
        if self._rotate_task is None or self._rotate_task.done():
            self._rotate_task = self._loop.create_task(self._resubscribe(books))

    async def _resubscribe(self, topics: list[str]) -> None:
        try:
            await self._ws.send_str(json.dumps({"op": "unsubscribe", "args": topics}))
            await self._ws.send_str(json.dumps({"op": "subscribe", "args": topics}))
            self.day_resubscriptions += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (socket closing: the reconnect re-subscribes)
            self._log.warning(f"day-file book re-subscription failed: {e}")

    def _parse(self, text: str, local: int) -> None:
        """Shadow's feed: the frame through the catalog importer's converters into the node."""
        try:
            msg = json.loads(text)
        except ValueError:
            return
        topic = msg.get("topic", "")
        sym = topic.rpartition(".")[2]
        if topic.startswith("orderbook."):
            book = self._books.get(sym)
            if book is None:
                return  # not one of ours
            data = msg.get("data") or {}
            deltas = book.on_message(msg.get("type") == "snapshot", int(msg["ts"]), data, local, self.frames)
            if deltas:
                self._next_ts = max(self._next_ts, deltas[-1].ts_init + 1)
                snapshot = bool(deltas[-1].flags & _F_SNAPSHOT)
                if snapshot:
                    self._valid[sym] = True
                    if not self._books_ready_sent and self._cfg.books_ready_topic and all(self._valid.values()):
                        # before the node sees this message: it is the first every strategy may act on
                        self._books_ready_sent = True
                        self._msgbus.publish(topic=self._cfg.books_ready_topic, msg=deltas[0].ts_init)
                for d in deltas:
                    self._handle_data(d)
                if not snapshot and len(deltas) == 1 and deltas[0].action == _CLEAR:  # BookStream's invalidation
                    self._on_book_invalid(topic, data.get("u") if isinstance(data, dict) else None)
        elif topic.startswith("publicTrade."):
            trades = self._trade_streams.get(sym)
            if trades is None:
                return
            for t in trades.on_ws_message(msg.get("data") or [], local, self.frames):
                self._handle_data(t)


    def _on_book_invalid(self, topic: str, u) -> None:
        """The book was cleared (gap, crossed book, bad number): say so and re-subscribe for a snapshot."""
        sym = topic.rpartition(".")[2]
        iid = self._by_symbol.get(sym, self._iid)
        self._valid[sym] = False
        self.book_invalidations += 1
        self._log.warning(f"{iid}: order book invalid at u={u} (update-id gap or bad message); "
                          "re-subscribing for a fresh snapshot")
        if self._cfg.status_topic:
            self._msgbus.publish(topic=self._cfg.status_topic, msg={
                "instrument_id": str(iid), "connected": True, "book_gap": True, "u": u})
        task = self._resync_tasks.get(topic)
        if task is None or task.done():
            self._resync_tasks[topic] = self._resync_task = self._loop.create_task(self._resync_book(topic))

    async def _resync_book(self, topic: str) -> None:
        """Unsubscribe and subscribe ``topic`` (Bybit answers a subscribe with a snapshot) until a
        snapshot has made the book valid again, the topic is no longer wanted or the socket is gone
        (a reconnect re-subscribes everything anyway)."""
        sym = topic.rpartition(".")[2]
        try:
            while not self._valid.get(sym, True) and topic in self._topics and self._ws is not None \
                    and not self._ws.closed:
                await self._ws.send_str(json.dumps({"op": "unsubscribe", "args": [topic]}))
                await self._ws.send_str(json.dumps({"op": "subscribe", "args": [topic]}))
                self.resubscriptions += 1
                deadline = self._loop.time() + self._cfg.resync_retry_s
                while not self._valid.get(sym, True) and self._loop.time() < deadline:
                    await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (socket closing: the reconnect re-subscribes)
            self._log.warning(f"book re-subscription failed: {e}")


class RawPublicDataClientFactory(LiveDataClientFactory):
    @staticmethod
    def create(loop, name, config, msgbus, cache, clock):  # type: ignore[override]
        return RawPublicDataClient(loop, ClientId(name), msgbus, cache, clock, config)
