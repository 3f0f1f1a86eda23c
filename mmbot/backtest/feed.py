"""The replay feed: one ``OrderBookDeltas`` per exchange message, read straight from the catalog.

Two feeds replay a catalog slice (``run.feed``, docs/benchmarks.md "Replay feeds"):

- ``per_delta``: Nautilus' own streaming (``BacktestNode`` reads every ``OrderBookDelta`` row and
  the DataEngine buffers them until the row flagged ``F_LAST``, ``buffer_deltas``): the engine
  loop, the venue's book and the data engine run once per ROW. Required by
  ``venue.fill_model = "nautilus"``: Nautilus' matching engine matches on each row it sees, so fed
  whole messages it fills differently.
- ``per_message`` (this module): the rows of one exchange message (up to and including the row
  flagged ``F_LAST``) become one ``OrderBookDeltas`` before they reach the engine, which then runs
  once per MESSAGE. Every mmbot component (strategy, queue simulator, ledger, guards) acts on the
  published ``OrderBookDeltas`` only, and those are the same objects in both feeds, published in
  the same order relative to trades and timers (tests/test_feed_identity.py proves it on fills,
  orders, equity and report.json).

What the per-delta path publishes, and so what this feed reproduces:

- rows with ``start <= ts_init <= end``, in Nautilus' query order (its own SQL, per file);
- a message is published when its ``F_LAST`` row is processed, with ``ts_init`` / ``ts_event`` of
  that row: here ``OrderBookDeltas(rows)`` carries the same (Nautilus takes them from the last row);
- rows after the window's last ``F_LAST`` are never published (the data engine keeps waiting for
  the end of their message): dropped here;
- a trade whose ``ts_init`` is below a message's publishing row comes before the message; at an
  EQUAL ``ts_init`` the per-delta order is whatever Nautilus' k-way merge of the files yields, so
  this feed (trade first) is only proven identical on streams without such ties: they are counted
  (``FeedStats.trade_ties``) and ``run.feed = "auto"`` replays per delta when there are any.

The window's start is moved to a message boundary by :func:`snap_start` (a message that began
before ``start`` is not replayed half), for both feeds alike.

Decoding uses Nautilus' own Rust parquet decoder (``DataBackendSession``, the query Nautilus builds
for the same window) and Cython constructors; the only per-row Python work is reading each row's
flags while grouping (vectorised with numpy over one chunk at a time: memory stays flat with the
length of the range).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

F_LAST = 128  # nautilus_trader.model.enums.RecordFlag.F_LAST (an IntFlag: its & costs ~1 us per row)
F_SNAPSHOT = 32  # RecordFlag.F_SNAPSHOT
FEEDS = ("auto", "per_message", "per_delta")
DECODE_ROWS = 50_000  # rows per decoded Rust chunk (memory bound, not a semantic boundary; run.chunk_size)
TRADE_CHUNK_DIVISOR = 10  # trades are decoded chunk_size / 10 at a time (MessageFeed.trades)


class FeedError(ValueError):
    """The catalog cannot be replayed per message (e.g. no order-book rows in the window)."""


def data_files(catalog_dir: Path | str, folder: str, instrument_id: str) -> list[tuple[int, int, str]]:
    """``(first ts_init, last ts_init, path)`` of a data folder's parquet files, in time order
    (Nautilus names each file by the ts_init interval it holds)."""
    from nautilus_trader.persistence.catalog.parquet import _parse_filename_timestamps

    out = []
    d = Path(catalog_dir) / "data" / folder / instrument_id
    for f in sorted(d.glob("*.parquet")) if d.is_dir() else []:
        interval = _parse_filename_timestamps(f.name)
        if interval:
            out.append((int(interval[0]), int(interval[1]), str(f)))
    return sorted(out)


def _overlapping(files: list[tuple[int, int, str]], start_ns: int | None, end_ns: int | None) -> list[str]:
    return [p for lo, hi, p in files
            if (start_ns is None or hi >= start_ns) and (end_ns is None or lo <= end_ns)]


def snap_start(catalog_dir: Path | str, instrument_id: str, start_ns: int) -> int:
    """The window start moved forward past a message that began before it: the ``ts_init`` of the
    first row of the first message that starts at or after ``start_ns`` (``start_ns`` itself when
    it already falls on a boundary, i.e. the row before it is the last of its message)."""
    import pyarrow.parquet as pq

    files = data_files(catalog_dir, "order_book_deltas", instrument_id)
    for lo, hi, path in files:
        if hi < start_ns:
            continue
        t = pq.read_table(path, columns=["ts_init", "flags"])
        ts = t.column("ts_init").to_numpy().astype(np.int64, copy=False)
        flags = t.column("flags").to_numpy()
        i = int(np.searchsorted(ts, start_ns, side="left"))
        if i == 0:
            # First row of the file: a boundary if the previous file ends with F_LAST (or none).
            prev = [p for lo2, hi2, p in files if hi2 < lo]
            if not prev:
                return start_ns
            pt = pq.read_table(prev[-1], columns=["flags"]).column("flags").to_numpy()
            if len(pt) == 0 or pt[-1] & F_LAST:
                return start_ns
        elif i >= len(ts) or flags[i - 1] & F_LAST:
            return start_ns
        ends = np.flatnonzero(flags[i:] & F_LAST)
        if len(ends) == 0:
            continue  # the message goes on in the next file
        j = i + int(ends[0]) + 1
        if j < len(ts):
            return int(ts[j])
        nxt = [lo2 for lo2, _, _ in files if lo2 > hi]
        return int(nxt[0]) if nxt else int(ts[-1]) + 1
    return start_ns


def _column_window(paths: list[str], columns: list[str], start_ns: int | None, end_ns: int | None) -> dict:
    import pyarrow.parquet as pq

    out = {c: [] for c in columns}
    for path in paths:
        t = pq.read_table(path, columns=columns)
        ts = t.column("ts_init").to_numpy().astype(np.int64, copy=False)
        keep = np.ones(len(ts), dtype=bool)
        if start_ns is not None:
            keep &= ts >= start_ns
        if end_ns is not None:
            keep &= ts <= end_ns
        for c in columns:
            out[c].append(t.column(c).to_numpy()[keep])
    return {c: np.concatenate(v) if v else np.empty(0) for c, v in out.items()}


def trade_ties(catalog_dir: Path | str, instrument_id: str, start_ns: int | None, end_ns: int | None) -> int:
    """Trades in the window whose ts_init equals the ts_init of a book message's publishing
    (``F_LAST``) row: where the per-message feed's order (trade first) is not proven to be the
    per-delta feed's. Reads two columns (~50 ms an hour)."""
    delta_files = _overlapping(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
    trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
    key = None
    if _cache_on:  # a wf worker asks this for the same window every trial (see ``enable_cache``)
        key = ("ties", str(catalog_dir), instrument_id, start_ns, end_ns,
               tuple((p, Path(p).stat().st_mtime_ns) for p in delta_files + trade_files))
        if key in _ties_cache:
            return _ties_cache[key]
    deltas = _column_window(delta_files, ["ts_init", "flags"], start_ns, end_ns)
    trades = _column_window(trade_files, ["ts_init"], start_ns, end_ns)
    if not len(deltas["ts_init"]) or not len(trades["ts_init"]):
        ties = 0
    else:
        publish = deltas["ts_init"][(deltas["flags"] & F_LAST) != 0]
        ties = int(np.isin(trades["ts_init"], publish).sum())
    if key is not None:
        _ties_cache[key] = ties
    return ties


@dataclass
class FeedStats:
    """Counts of one replay: ``rows`` = order-book rows + trades read in the window (what
    events/s counts), ``messages`` = OrderBookDeltas published, ``trade_ties`` = trades sharing
    their ts_init with a message's publishing row, ``dropped_tail_rows`` = rows after the
    window's last ``F_LAST``."""

    delta_rows: int = 0
    trade_rows: int = 0
    messages: int = 0
    trade_ties: int = 0
    dropped_tail_rows: int = 0
    warmup_rows: int = 0  # rows read only to build a snapshot start's book (SnapshotStartFeed)
    first_ts_init: int | None = None
    last_ts_init: int | None = None

    @property
    def rows(self) -> int:
        return self.delta_rows + self.trade_rows

    def _seen(self, lo: int, hi: int) -> None:
        self.first_ts_init = lo if self.first_ts_init is None else min(self.first_ts_init, lo)
        self.last_ts_init = hi if self.last_ts_init is None else max(self.last_ts_init, hi)


def _decode(catalog, cls, instrument_id: str, path: str, start_ns: int | None, end_ns: int | None,
            chunk_rows: int) -> Iterator[list]:
    """Rows of one file in the window as Cython objects, ``chunk_rows`` at a time, in the order
    Nautilus' own streaming reads them (the catalog's query for that file)."""
    from nautilus_trader.core.nautilus_pyo3 import DataBackendSession, drop_cvec_pycapsule
    from nautilus_trader.model.data import capsule_to_list

    session = catalog.backend_session(data_cls=cls, identifiers=[instrument_id], start=start_ns, end=end_ns,
                                      session=DataBackendSession(chunk_size=chunk_rows), files=[path])
    for capsule in session.to_query_result():
        rows = capsule_to_list(capsule)
        drop_cvec_pycapsule(capsule)
        if rows:
            yield rows
        rows = None  # not alive while the next chunk is decoded (peak memory: two chunks, not three)


class MessageFeed:
    """Book messages and trades of one instrument in ``[start_ns, end_ns]`` (None: unbounded),
    merged by ``ts_init`` (trade first at equal times), as lists of about ``chunk_rows`` rows."""

    def __init__(self, catalog_dir: Path | str, instrument_id: str, start_ns: int | None, end_ns: int | None,
                 chunk_rows: int = DECODE_ROWS) -> None:
        from nautilus_trader.model.identifiers import InstrumentId

        self.catalog_dir = str(catalog_dir)
        self.instrument_id = instrument_id
        self._iid = InstrumentId.from_str(instrument_id)
        self.start_ns, self.end_ns = start_ns, end_ns
        self.chunk_rows = max(1, int(chunk_rows))
        self._delta_files = _overlapping(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
        self._trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
        self._trades_from_ns = start_ns
        self.stats = FeedStats()

    def _catalog(self):
        from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

        return ParquetDataCatalog(self.catalog_dir)

    def messages(self) -> Iterator[tuple[list, np.ndarray]]:
        """``(OrderBookDeltas list, their ts_init as int64)`` per decoded chunk; the rows of a
        message cut by a chunk end are carried into the next chunk."""
        from nautilus_trader.model.data import OrderBookDelta, OrderBookDeltas

        catalog, iid, st = self._catalog(), self._iid, self.stats
        carry: list = []
        for path in self._delta_files:
            for rows in _decode(catalog, OrderBookDelta, self.instrument_id, path, self.start_ns, self.end_ns,
                                self.chunk_rows):
                st.delta_rows += len(rows)
                st._seen(rows[0].ts_init, rows[-1].ts_init)
                if carry:
                    rows = carry + rows
                flags = np.fromiter([d.flags for d in rows], dtype=np.uint8, count=len(rows))
                ends = (np.flatnonzero(flags & F_LAST) + 1).tolist()
                if not ends:
                    carry = rows
                    continue
                msgs, a = [], 0
                for b in ends:
                    msgs.append(OrderBookDeltas(iid, rows[a:b]))
                    a = b
                carry = rows[a:]
                # The row objects are garbage once grouped (each OrderBookDeltas holds a copy of
                # its rows' structs): not kept alive through the yield into the next decode.
                rows = flags = ends = None
                st.messages += len(msgs)
                yield msgs, np.fromiter([m.ts_init for m in msgs], dtype=np.int64, count=len(msgs))
                msgs = None
        st.dropped_tail_rows = len(carry)

    def trades(self) -> Iterator[tuple[list, np.ndarray]]:
        """Trades in chunks of ``chunk_rows / TRADE_CHUNK_DIVISOR`` rows: a stream has ~30 book rows
        per trade, so a chunk of ``chunk_rows`` trades spanned hours of book messages and stayed in
        memory all that time (50,000 trades ~7 MB; the whole file on an hour)."""
        from nautilus_trader.model.data import TradeTick

        catalog, st = self._catalog(), self.stats
        trade_rows = max(1, self.chunk_rows // TRADE_CHUNK_DIVISOR)
        for path in self._trade_files:
            for rows in _decode(catalog, TradeTick, self.instrument_id, path, self._trades_from_ns, self.end_ns,
                                trade_rows):
                st.trade_rows += len(rows)
                st._seen(rows[0].ts_init, rows[-1].ts_init)
                yield rows, np.fromiter([t.ts_init for t in rows], dtype=np.int64, count=len(rows))

    def chunks(self) -> Iterator[list]:
        """Merged lists of messages and trades sorted by ts_init, trade first at equal times;
        each chunk holds every trade up to its last message's time."""
        st = self.stats
        trades = self.trades()
        t_objs: list = []
        t_ts = np.empty(0, dtype=np.int64)
        t_done = False

        def more_trades() -> bool:
            nonlocal t_objs, t_ts, t_done
            if t_done:
                return False
            nxt = next(trades, None)
            if nxt is None:
                t_done = True
                return False
            t_objs = t_objs + nxt[0]
            t_ts = np.concatenate([t_ts, nxt[1]])
            return True

        for msgs, m_ts in self.messages():
            horizon = int(m_ts[-1])
            while (len(t_ts) == 0 or t_ts[-1] <= horizon) and more_trades():
                pass
            k = int(np.searchsorted(t_ts, horizon, side="right"))  # trades at or before the last message
            take_objs, take_ts = t_objs[:k], t_ts[:k]
            t_objs, t_ts = t_objs[k:], t_ts[k:]
            st.trade_ties += int(np.isin(take_ts, m_ts, assume_unique=False).sum())
            out = _merge(msgs, m_ts, take_objs, take_ts)
            msgs = m_ts = take_objs = take_ts = None  # only the merged list lives on
            yield out
            out = None  # dropped before the next chunk is decoded (the engine has its own copy)
        # Trades after the last book message: each decoded piece as a chunk of its own (joining
        # them into one list copied the growing list once per piece: quadratic in the pieces).
        if t_objs:
            yield t_objs
        t_objs = []
        if not t_done:
            for objs, _ in trades:
                yield objs


class SnapshotStartFeed(MessageFeed):
    """``run.warmup = "snapshot"`` (docs/config.md, "Windows between snapshots"): a window that
    starts between two book snapshots is replayed as if the exchange had sent a snapshot at its
    first message. The rows from the last snapshot (``book_from_ns``) up to the window's first
    message ``m0`` (its first row at ``start_ns``, a message boundary: ``snap_start``) are applied to
    a Nautilus ``OrderBook`` outside the engine; ``m0`` is replaced by a snapshot of the book it
    leaves, written as ``mmbot catalog import`` writes one (adapters/bybit_book.py ``_build``): a
    ``CLEAR`` then one ``ADD`` per level, bids best first then asks best first, each flagged
    ``F_SNAPSHOT``, the last also ``F_LAST``, ``m0``'s ``sequence`` and ``ts_event``, row ``k`` received
    at ``m0``'s first row + ``k`` ns. Nothing before ``start_ns`` reaches the engine (no warm-up
    trade either). The run is then the run of the same window on a recording with that snapshot,
    which starts on a snapshot and needs no warm-up (tests/test_window_warmup.py proves it
    byte-for-byte). Stats count what is replayed; ``stats.warmup_rows``: rows read to build the book."""

    def __init__(self, catalog_dir: Path | str, instrument_id: str, book_from_ns: int, start_ns: int,
                 end_ns: int | None, chunk_rows: int = DECODE_ROWS) -> None:
        if not book_from_ns < start_ns:
            raise FeedError(f"snapshot start: the book is built from {book_from_ns}, not before the window's "
                            f"start {start_ns}")
        super().__init__(catalog_dir, instrument_id, book_from_ns, end_ns, chunk_rows)
        self.window_start_ns = int(start_ns)
        self._trades_from_ns = self.window_start_ns  # no warm-up trade
        self._trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
        self.warmup_messages = 0

    def messages(self) -> Iterator[tuple[list, np.ndarray]]:
        from nautilus_trader.model.book import OrderBook
        from nautilus_trader.model.enums import BookType

        st, w0 = self.stats, self.window_start_ns
        book = OrderBook(self._iid, BookType.L2_MBP)
        started = False
        for msgs, m_ts in super().messages():
            if started:
                yield msgs, m_ts
                continue
            k = int(np.searchsorted(m_ts, w0, side="left"))  # messages published before the window
            for m in msgs[:k]:
                book.apply_deltas(m)
                st.warmup_rows += len(m.deltas)
            self.warmup_messages += k
            if k == len(msgs):
                continue
            m0 = msgs[k]
            book.apply_deltas(m0)
            snap = self._snapshot(book, m0)
            st.warmup_rows += len(m0.deltas)
            self.warmup_messages += 1
            # What is replayed is counted: the snapshot's rows instead of the warm-up and m0.
            st.delta_rows += len(snap.deltas) - st.warmup_rows
            st.messages -= self.warmup_messages
            st.first_ts_init = w0
            out, out_ts = [snap] + msgs[k + 1:], m_ts[k:].copy()
            out_ts[0] = snap.ts_init
            if len(out_ts) > 1 and out_ts[0] >= out_ts[1]:
                raise FeedError(f"snapshot start: the book snapshot replacing the message at {m0.ts_init} would be "
                                f"received at {snap.ts_init}, not before the next message ({int(out_ts[1])}); "
                                "use run.warmup = \"replay\"")
            started = True
            msgs = m_ts = book = None
            yield out, out_ts
        if not started:
            st.delta_rows -= st.warmup_rows
            st.messages -= self.warmup_messages

    def _snapshot(self, book, m0):
        """The book after ``m0`` as one snapshot message (class docstring)."""
        from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas
        from nautilus_trader.model.enums import BookAction, OrderSide
        from nautilus_trader.model.objects import Price, Quantity

        iid, seq, ts_event = self._iid, m0.sequence, m0.ts_event
        ts = m0.deltas[0].ts_init
        snap_flag = F_SNAPSHOT
        # The CLEAR row as the catalog decodes the importer's: no side, price and size 0 at the
        # instrument's precisions (taken from m0's rows, decoded from the same catalog).
        ref = m0.deltas[0].order
        clear = None if ref is None else BookOrder(OrderSide.NO_ORDER_SIDE, Price(0, ref.price.precision),
                                                   Quantity(0, ref.size.precision), 0)
        rows = [OrderBookDelta(iid, BookAction.CLEAR, clear, snap_flag, seq, ts_event, ts)]
        for side, levels in ((OrderSide.BUY, book.bids()), (OrderSide.SELL, book.asks())):
            for lv in levels:
                o = lv.orders()[0]
                ts += 1
                rows.append(OrderBookDelta(iid, BookAction.ADD, BookOrder(side, o.price, o.size, 0), snap_flag, seq,
                                           ts_event, ts))
        last = rows[-1]
        rows[-1] = OrderBookDelta(iid, last.action, last.order, snap_flag | F_LAST, seq, ts_event, last.ts_init)
        return OrderBookDeltas(iid, rows)


# Walk-forward workers replay the same train window for every trial of a split: the decoded
# chunks of the last windows are kept (per process, at most CACHE_ROWS stream rows in all) when
# ``enable_cache`` was called (mmbot/tuning/worker.py). The objects are immutable data: a replay
# from the cache is the replay from the catalog (tests/test_wf.py compares them).
CACHE_ROWS = 2_000_000
_cache: dict[tuple, tuple[list, FeedStats]] = {}
_cache_on = False


_ties_cache: dict[tuple, int] = {}  # trade_ties per window and file versions, while the cache is on


def enable_cache(on: bool = True) -> None:
    global _cache_on
    _cache_on = on
    if not on:
        _cache.clear()
        _ties_cache.clear()


def cached_chunks(feed: "MessageFeed") -> Iterator[list]:
    """``feed.chunks()``, from this process's cache when the same window was decoded before."""
    if not _cache_on:
        yield from feed.chunks()
        return
    key = (feed.catalog_dir, feed.instrument_id, feed.start_ns, getattr(feed, "window_start_ns", None), feed.end_ns,
           feed.chunk_rows,
           tuple(Path(p).stat().st_mtime_ns for p in feed._delta_files + feed._trade_files))
    hit = _cache.get(key)
    if hit is not None:
        _cache[key] = _cache.pop(key)  # most recently used last
        chunks, stats = hit
        feed.stats = FeedStats(**{k: getattr(stats, k) for k in stats.__dataclass_fields__})
        yield from chunks
        return
    chunks = []
    for chunk in feed.chunks():
        if chunks is not None:
            chunks.append(chunk)
            if feed.stats.rows > CACHE_ROWS:
                chunks = None  # too long to keep
        yield chunk
    if chunks is not None:
        _cache[key] = (chunks, feed.stats)
        while sum(st.rows for _, st in _cache.values()) > CACHE_ROWS:
            _cache.pop(next(iter(_cache)))


def _merge(msgs: list, m_ts: np.ndarray, trades: list, t_ts: np.ndarray) -> list:
    """Messages and trades (each sorted by ts_init) in one list by ts_init, trades first at ties."""
    if not trades:
        return msgs
    ts = np.concatenate([t_ts, m_ts])
    kind = np.concatenate([np.zeros(len(t_ts), np.int8), np.ones(len(m_ts), np.int8)])
    order = np.lexsort((np.arange(len(ts)), kind, ts)).tolist()
    objs = trades + msgs
    return [objs[i] for i in order]


def run_engine(engine, chunks: Iterator[list], start_ns: int | None, end_ns: int | None,
               run_config_id: str | None = None) -> None:
    """Stream ``chunks`` through a built ``BacktestEngine`` as ``BacktestNode`` streams catalog
    chunks (add, run in streaming mode, clear; then ``end()``), so clocks, timers and the kernel
    start behave the same way as in the per-delta feed."""
    from nautilus_trader.common.component import is_backtest_force_stop

    for chunk in chunks:
        if not chunk:
            continue
        engine.add_data(data=chunk, validate=False, sort=True)
        engine.run(start=start_ns, end=end_ns, run_config_id=run_config_id, streaming=True)
        engine.clear_data()
        del chunk  # replayed: not kept alive while the next one is decoded
        if is_backtest_force_stop():
            return
    engine.end()
    engine.clear_data()
