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
  EQUAL ``ts_init`` the per-delta order is the one Nautilus' k-way merge of the files yields:
  :func:`tie_order` derives it from the stamps before the run (``book_first_ns``: the stamps where
  the message goes first; trade first elsewhere), except where the heap's layout decides (a later
  file's first row, files of one kind overlapping) or an edge of the per-delta feed's chunks
  splits the stamp: ``run.feed = "auto"`` replays per delta when there is such a tie. Ties
  replayed are counted (``FeedStats.trade_ties``).

The window's start is moved to a message boundary by :func:`snap_start` (a message that began
before ``start`` is not replayed half), for both feeds alike.

Decoding uses Nautilus' own Rust parquet decoder (``DataBackendSession``, the query Nautilus builds
for the same window) and Cython constructors; the only per-row Python work is reading each row's
flags while grouping (vectorised with numpy over one chunk at a time: memory stays flat with the
length of the range).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mmbot.config.backtest import ConfigError

F_LAST = 128  # nautilus_trader.model.enums.RecordFlag.F_LAST (an IntFlag: its & costs ~1 us per row)
F_SNAPSHOT = 32  # RecordFlag.F_SNAPSHOT
FEEDS = ("auto", "per_message", "per_delta")
DECODE_ROWS = 50_000  # rows per decoded Rust chunk (memory bound, not a semantic boundary; run.chunk_size)
TRADE_CHUNK_DIVISOR = 10  # trades are decoded chunk_size / 10 at a time (MessageFeed.trades)


class FeedError(ConfigError):
    """The window cannot be replayed as asked (one line, exit 2 in the CLI; a failed trial in wf)."""


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


def _window_files(files: list[tuple[int, int, str]], start_ns: int | None, end_ns: int | None) -> list:
    """``data_files`` entries whose interval overlaps the window."""
    return [f for f in files if (start_ns is None or f[1] >= start_ns) and (end_ns is None or f[0] <= end_ns)]


def _overlapping(files: list[tuple[int, int, str]], start_ns: int | None, end_ns: int | None) -> list[str]:
    """The paths of ``_window_files``."""
    return [p for _, _, p in _window_files(files, start_ns, end_ns)]


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


SCAN_ROWS = 65_536  # rows per record batch when a pass reads stamps over a window
SCAN_BUFFER_BYTES = 1 << 20  # read buffer of such a pass (no pre-buffering: see ``_stamp_batches``)


def _stamp_batches(paths: list[str], flags: bool, start_ns: int | None, end_ns: int | None):
    """``ts_init`` (int64) of the rows of ``paths`` in the window, one record batch at a time
    (``SCAN_ROWS``), only the publishing (``F_LAST``) rows if ``flags``: what the tie counts need,
    without the window's whole columns in memory at once (a 4-hour ob50 window read whole raised the
    run's peak by ~70 MB more than its first hour, docs/benchmarks.md "Session 30")."""
    import pyarrow.parquet as pq

    columns = ["ts_init", "flags"] if flags else ["ts_init"]
    for path in paths:
        # No pre-buffering and a small read buffer: pyarrow otherwise holds the file's whole
        # compressed columns (one row group: the whole column chunk) while it yields batches
        # (hostile review 36 F2: 153 MB for a 30M-row file, 10 MB so).
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=SCAN_BUFFER_BYTES) as pf:
            for batch in pf.iter_batches(batch_size=SCAN_ROWS, columns=columns):
                col = batch.column(0)
                keep = None
                if col.null_count:  # a row without a receive time is in no window and ties nothing
                    keep = col.is_valid().to_numpy(zero_copy_only=False)
                    col = col.fill_null(0)
                ts = col.to_numpy().astype(np.int64, copy=False)
                if keep is None:
                    keep = np.ones(len(ts), dtype=bool)
                if start_ns is not None:
                    keep &= ts >= start_ns
                if end_ns is not None:
                    keep &= ts <= end_ns
                if flags:  # a row without flags publishes nothing
                    keep &= (batch.column(1).fill_null(0).to_numpy() & F_LAST) != 0
                yield ts[keep]


def _publish_stamps(paths: list[str], start_ns: int | None, end_ns: int | None) -> np.ndarray:
    """Receive times (``ts_init``) of the book messages published in the window: their ``F_LAST``
    rows. 8 bytes per message, read a batch at a time."""
    parts = list(_stamp_batches(paths, True, start_ns, end_ns))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _ties_with(trade_paths: list[str], publish: np.ndarray, start_ns: int | None, end_ns: int | None) -> int:
    """Trades in the window received at one of the ``publish`` stamps (sorted here, in place), a
    batch of trades at a time: trade ``t`` ties iff ``publish[searchsorted(publish, t)] == t``
    (``np.isin`` would sort ``publish`` again with every batch, in ~5x its size)."""
    if not len(publish):
        return 0
    publish.sort()
    last = len(publish) - 1
    ties = 0
    for ts in _stamp_batches(trade_paths, False, start_ns, end_ns):
        at = np.searchsorted(publish, ts)
        np.minimum(at, last, out=at)
        ties += int(np.count_nonzero(publish[at] == ts))
    return ties


def _file_version(path) -> tuple:
    """What the caches below key a catalog file by: its absolute path, inode, size, mtime and ctime.
    A rewrite in place with the same size and the mtime put back (``cp -p``, ``rsync -t``, ``touch
    -r``) still changes the ctime, which no user can set (hostile review 34 F6)."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def trade_ties(catalog_dir: Path | str, instrument_id: str, start_ns: int | None, end_ns: int | None) -> int:
    """Trades in the window whose ts_init equals the ts_init of a book message's publishing
    (``F_LAST``) row: where the per-message feed's order (trade first) is not proven to be the
    per-delta feed's. Reads two columns a batch at a time (~50 ms an hour)."""
    delta_files = _overlapping(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
    trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
    key = None
    if _cache_on:  # a wf worker asks this for the same window every trial (see ``enable_cache``)
        key = ("ties", str(catalog_dir), instrument_id, start_ns, end_ns,
               tuple(_file_version(p) for p in delta_files + trade_files))
        if key in _ties_cache:
            return _ties_cache[key]
    ties = _ties_with(trade_files, _publish_stamps(delta_files, start_ns, end_ns), start_ns, end_ns)
    if key is not None:
        _ties_cache[key] = ties
    return ties


@dataclass(frozen=True)
class TieOrder:
    """Where the per-delta feed puts trades that share their receive time (``ts_init``) with book
    rows, as Nautilus' k-way merge of the window's files yields it (:func:`tie_order`).

    ``book_first_ns``: the tie stamps (sorted) at which the book rows come before the trades
    (trades first at every other tie); ``stamps``: tie stamps seen (a trade and any book row);
    ``unresolved``: tie stamps where the per-message feed is not proven to replay what the
    per-delta feed does (see :func:`tie_order`), so ``run.feed = "auto"`` replays per delta when
    there are any."""

    book_first_ns: np.ndarray
    stamps: int = 0
    unresolved: int = 0
    trades_tied: int = 0  # trades at a message's publishing row (``trade_ties``): 0 -> nothing to order
    split_by_chunk: int = 0  # tie stamps a per-delta chunk edge splits (counted in ``unresolved`` too)


NO_TIES = TieOrder(np.empty(0, dtype=np.int64))


def tie_order(catalog_dir: Path | str, instrument_id: str, start_ns: int | None, end_ns: int | None,
              chunk_rows: int = DECODE_ROWS) -> TieOrder:
    """The per-delta order at every receive time shared by a trade and a book row in the window.

    Nautilus' streaming (``DataBackendSession``) merges one stream per catalog file, book files
    first, with a binary heap keyed on ``ts_init`` alone. The item at the heap's root is emitted and
    replaced by its stream's next item, which stays at the root unless a child is strictly earlier
    (``sift_down`` stops on equal keys). So while one book stream and one trade stream are active,
    at a stamp ``t`` both hold, the stream that emitted the last item before ``t`` emits all its
    items at ``t`` first, then the other stream its items at ``t``. Which stream emitted last:

    - the one whose last item before ``t`` is later;
    - if both end at the same stamp ``t'`` (the previous tie), the one that went second at ``t'``:
      consecutive ties alternate;
    - no item before ``t`` at all (the window's first stamp): the book, pushed onto the heap first
      (a pushed item equal to its parent stays below it).

    Not derived (``unresolved``), because the heap's layout then decides: a tie at the first stamp
    of a file that starts after its kind's earlier rows in the window (the previous file's stream
    was popped, and ``pop`` re-seats the heap's last element, ties broken by position), any tie
    after an unresolved one that depends on it, and every tie when the files of one kind overlap in
    time (their names' intervals, or their rows) or a file is not in ``ts_init`` order. Also counted
    unresolved, with the order known: a tie whose items an edge of the per-delta feed's streaming
    chunks (every ``chunk_rows`` items of the merged stream, ``run.chunk_size``) would split, where
    Nautilus fires the timers due at that stamp between them (hostile review 40 F1). A few such
    ties in a recording send ``auto`` to the per-delta feed; every other tie is replayed per message
    in the per-delta order (tests/test_feed_identity.py compares both feeds, tests/test_tie_order.py this
    rule with Nautilus' own merge).

    Every tie is checked, not only those at a message's publishing row (whose order alone changes
    what the per-message feed publishes): a chunk edge inside a tie with a non-publishing row splits
    the stamp too (hostile review 40b F1: the run's end alert at such a stamp). Reads the ``ts_init``
    column a record batch at a time (``_stamp_batches``): the window's trade stamps are held (8 bytes
    a trade), the book's streamed. ``trades_tied``: ``trade_ties``."""
    ties = trade_ties(catalog_dir, instrument_id, start_ns, end_ns)
    books = _window_files(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
    trades = _window_files(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
    key = None
    if _cache_on:  # a wf worker asks this for the same window every trial (see ``enable_cache``)
        key = ("tie-order", str(catalog_dir), instrument_id, start_ns, end_ns, chunk_rows,
               tuple(_file_version(f[2]) for f in books + trades))
        if key in _ties_cache:
            return _ties_cache[key]
    order = replace(_tie_order(_file_batches(books, start_ns, end_ns), trades, start_ns, end_ns,
                               _intervals_overlap(books), max(1, int(chunk_rows))), trades_tied=ties)
    if key is not None:
        _ties_cache[key] = order
    return order


def _intervals_overlap(files: list[tuple[int, int, str]]) -> bool:
    """Two files of one kind share receive times (their names' intervals, in time order, touch or
    cross: Nautilus' catalog refuses such a write, a copied-in file can still make them)."""
    return any(b[0] <= a[1] for a, b in zip(files, files[1:]))


def _file_batches(files: list[tuple[int, int, str]], start_ns: int | None, end_ns: int | None,
                  after_ns: int | None = None) -> Iterator[tuple[np.ndarray, int | None]]:
    """``(ts_init, join)`` per record batch of the files' rows in the window (empty batches left
    out). ``join``: the stamp of a file's first row, in the batch holding it, when rows of the files
    before it came first (or a stream ending at ``after_ns`` was given before them): the file's
    stream takes over in Nautilus' merge when the one before is popped. Taken from the rows, not the
    file's name (a copied-in file's name can claim another range: hostile review 40 F2); a first row
    not after the rows before it is out of order, which the rule's own checks find. With
    ``after_ns``, the first file continues that stream when its name starts at or before it."""
    last = after_ns
    for k, (lo, _, path) in enumerate(files):
        first = True
        for ts in _stamp_batches([path], False, start_ns, end_ns):
            if not len(ts):
                continue
            join = None
            if first and last is not None and not (k == 0 and after_ns is not None and lo <= after_ns):
                join = int(ts[0])
            yield ts, join
            first = False
            last = int(ts[-1])


def _whole_stamps(batches: Iterator[tuple[np.ndarray, int | None]]) -> Iterator[tuple[np.ndarray, list]]:
    """The batches re-cut so that each ends at a stamp's last row (the rows at a batch's last stamp
    go with the next batch): ``(ts_init, joins)``, ``joins`` the join stamps inside."""
    carry = np.empty(0, dtype=np.int64)
    joins: list[int] = []
    for ts, join in batches:
        if join is not None:
            joins.append(join)
        if len(carry):
            ts = np.concatenate([carry, ts])
        cut = int(np.searchsorted(ts, ts[-1], "left"))  # the rows at the last stamp stay
        if cut == 0:
            carry = ts
            continue
        yield ts[:cut], joins
        carry, joins = ts[cut:], []
    if len(carry):
        yield carry, joins


def _tie_order(book_batches: Iterator[tuple[np.ndarray, int | None]], trade_files: list[tuple[int, int, str]],
               start_ns: int | None, end_ns: int | None, overlap: bool, chunk_rows: int) -> TieOrder:
    """:func:`tie_order`'s rule over a book stream given as ``_file_batches`` and the trade files.
    ``chunk_rows``: the per-delta feed's streaming chunk (``run.chunk_size``), whose edges fall
    every ``chunk_rows`` items of the merged stream."""
    ambiguous: set[int] = set()  # the first stamps of the files whose streams take over after a pop
    parts = []
    for ts, join in _file_batches(trade_files, start_ns, end_ns):
        if join is not None:
            ambiguous.add(join)
        parts.append(ts)
    trades = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    parts = None
    overlap = overlap or _intervals_overlap(trade_files)
    if len(trades) > 1 and bool(np.any(trades[1:] < trades[:-1])):
        overlap = True  # a file out of order
        trades.sort()  # still counted
    book_first: list[int] = []
    stamps = unresolved = split_by_chunk = 0
    last_row: int | None = None  # the book's last row before the current batch
    rows_before = 0  # the book's rows before the current batch
    last_tie: int | None = None
    last_tie_book_first: bool | None = None  # None: that tie's order is unresolved
    for ts, joins in _whole_stamps(book_batches):
        ambiguous.update(joins)
        if (last_row is not None and ts[0] <= last_row) or (len(ts) > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            overlap = True  # book rows out of order
        cand = trades[np.searchsorted(trades, ts[0], "left"):np.searchsorted(trades, ts[-1], "right")]
        if len(cand):
            at = np.minimum(np.searchsorted(ts, cand), len(ts) - 1)
            for t in np.unique(cand[ts[at] == cand]).tolist():
                i, i_end = int(np.searchsorted(ts, t, "left")), int(np.searchsorted(ts, t, "right"))
                book_prev = int(ts[i - 1]) if i else last_row
                j, j_end = int(np.searchsorted(trades, t, "left")), int(np.searchsorted(trades, t, "right"))
                trade_prev = int(trades[j - 1]) if j else None
                if book_prev is None and trade_prev is None:
                    first_book = True  # the window's first stamp: the book streams were pushed first
                elif trade_prev is None or (book_prev is not None and book_prev > trade_prev):
                    first_book = True  # the book emitted last
                elif book_prev is None or trade_prev > book_prev:
                    first_book = False  # the trades emitted last
                elif book_prev == last_tie and last_tie_book_first is not None:
                    first_book = not last_tie_book_first  # the second at the previous tie emitted last
                else:
                    first_book = None
                if overlap or t in ambiguous:
                    first_book = None
                # The per-delta feed's chunk edges fall every chunk_rows items of the merged stream;
                # one inside this stamp's items ends a chunk there, where Nautilus fires the timers
                # due at the stamp (the run's end, for one): between its items, where the message
                # feed (one stamp, one chunk) fires them after all. Order known, run not the same.
                first_item = rows_before + i + j
                split = first_item // chunk_rows != (first_item + (i_end - i) + (j_end - j) - 1) // chunk_rows
                stamps += 1
                split_by_chunk += split
                if first_book is None or split:
                    unresolved += 1
                if first_book:
                    book_first.append(t)
                last_tie, last_tie_book_first = t, first_book
        last_row = int(ts[-1])
        rows_before += len(ts)
    if overlap:
        unresolved = stamps
        book_first = []
    return TieOrder(np.array(book_first, dtype=np.int64), stamps, unresolved, split_by_chunk=split_by_chunk)



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
    merged by ``ts_init`` as lists of about ``chunk_rows`` rows. At a receive time shared by a trade
    and a message's publishing row, the trade first, unless the stamp is in ``book_first_ns`` (sorted;
    :func:`tie_order` gives the per-delta feed's order)."""

    def __init__(self, catalog_dir: Path | str, instrument_id: str, start_ns: int | None, end_ns: int | None,
                 chunk_rows: int = DECODE_ROWS, book_first_ns: np.ndarray | None = None) -> None:
        from nautilus_trader.model.identifiers import InstrumentId

        self.catalog_dir = str(catalog_dir)
        self.instrument_id = instrument_id
        self._iid = InstrumentId.from_str(instrument_id)
        self.start_ns, self.end_ns = start_ns, end_ns
        self.chunk_rows = max(1, int(chunk_rows))
        self._delta_files = _overlapping(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
        self._trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
        self.book_first_ns = np.empty(0, dtype=np.int64) if book_first_ns is None else \
            np.asarray(book_first_ns, dtype=np.int64)
        self.stats = FeedStats()

    def cache_identity(self) -> tuple:
        """What the decoded chunks depend on (``cached_chunks``' key): the window, the chunk size,
        the versions of the files read and the tie order."""
        return (self.catalog_dir, self.instrument_id, self.start_ns, self.end_ns, self.chunk_rows,
                tuple(_file_version(p) for p in self._delta_files + self._trade_files),
                self.book_first_ns.tobytes())

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
            for rows in _decode(catalog, TradeTick, self.instrument_id, path, self.start_ns, self.end_ns,
                                trade_rows):
                st.trade_rows += len(rows)
                st._seen(rows[0].ts_init, rows[-1].ts_init)
                yield rows, np.fromiter([t.ts_init for t in rows], dtype=np.int64, count=len(rows))

    def chunks(self) -> Iterator[list]:
        """Merged lists of messages and trades sorted by ts_init, trade first at equal times except
        at ``book_first_ns``; each chunk holds every trade up to its last message's time. When that
        time is in ``book_first_ns``, the chunk ends before it: its messages at that time go to the
        next chunk with the trades at it (a message of the next decoded chunk may publish at the
        same time, and all of them go before those trades; and one stamp's items are never split
        between two chunks, where the engine fires the timers due at that stamp: Nautilus'
        streaming flushes them at each chunk's end)."""
        st, book_first = self.stats, self.book_first_ns
        trades = self.trades()
        t_objs: list = []
        t_ts = np.empty(0, dtype=np.int64)
        t_done = False
        held: list = []  # messages at the last chunk's book-first stamp, carried into the next chunk
        held_ts = np.empty(0, dtype=np.int64)

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
            if held:
                msgs, m_ts = held + msgs, np.concatenate([held_ts, m_ts])
                held, held_ts = [], held_ts[:0]
            horizon = int(m_ts[-1])
            while (len(t_ts) == 0 or t_ts[-1] <= horizon) and more_trades():
                pass
            if _in_sorted(book_first, horizon):
                cut = int(np.searchsorted(m_ts, horizon, side="left"))
                held, held_ts = msgs[cut:], m_ts[cut:]
                msgs, m_ts = msgs[:cut], m_ts[:cut]
                k = int(np.searchsorted(t_ts, horizon, side="left"))  # trades before the held messages
            else:
                k = int(np.searchsorted(t_ts, horizon, side="right"))  # trades at or before the last message
            take_objs, take_ts = t_objs[:k], t_ts[:k]
            t_objs, t_ts = t_objs[k:], t_ts[k:]
            st.trade_ties += int(np.isin(take_ts, m_ts, assume_unique=False).sum())
            out = _merge(msgs, m_ts, take_objs, take_ts, book_first)
            msgs = m_ts = take_objs = take_ts = None  # only the merged list lives on
            if out:
                yield out
            out = None  # dropped before the next chunk is decoded (the engine has its own copy)
        if held:  # the last messages, at a book-first stamp: then the trades at it
            horizon = int(held_ts[-1])
            while (len(t_ts) == 0 or t_ts[-1] <= horizon) and more_trades():
                pass
            k = int(np.searchsorted(t_ts, horizon, side="right"))
            st.trade_ties += int(np.count_nonzero(t_ts[:k] == horizon))
            out = _merge(held, held_ts, t_objs[:k], t_ts[:k], book_first)
            held, t_objs, t_ts = None, t_objs[k:], t_ts[k:]
            yield out
            out = None
        # Trades after the last book message: each decoded piece as a chunk of its own (joining
        # them into one list copied the growing list once per piece: quadratic in the pieces).
        if t_objs:
            yield t_objs
        t_objs = []
        if not t_done:
            for objs, _ in trades:
                yield objs


def _in_sorted(values: np.ndarray, x: int) -> bool:
    """``x`` is one of ``values`` (sorted)."""
    if not len(values):
        return False
    return bool(values[min(int(np.searchsorted(values, x)), len(values) - 1)] == x)


def _last_row_of_each_level(t):
    """The rows of ``t`` (order-book rows, in their order) that are the last of their (side, price),
    in their order; zero-size ADDs left out (no-ops in Nautilus' L2 book: ``SnapshotStartFeed._warm_book``)."""
    import pyarrow as pa

    t = t.combine_chunks()
    n = t.num_rows

    def raw16(name: str) -> np.ndarray:  # the 16-byte little-endian raw values as (low, high) words
        col = t.column(name).chunk(0)
        buf = np.frombuffer(col.buffers()[1], dtype=np.uint8)[col.offset * 16:(col.offset + n) * 16]
        return buf.view("<u8").reshape(n, 2)

    action, side, price, size = t.column("action").to_numpy(), t.column("side").to_numpy(), raw16("price"), \
        raw16("size")
    live = np.flatnonzero(~((action == 1) & (size[:, 0] == 0) & (size[:, 1] == 0)))  # ADD of 0: no-op
    order = live[np.lexsort((live, price[live, 0], price[live, 1], side[live]))]  # by level, then row
    key = np.stack([side[order], price[order, 1], price[order, 0]], axis=1)
    last_of_level = np.ones(len(order), dtype=bool)
    last_of_level[:-1] = np.any(key[1:] != key[:-1], axis=1)
    rows = np.sort(order[last_of_level])
    return t.take(pa.array(rows, type=pa.int64()))


class SnapshotStartFeed(MessageFeed):
    """``run.warmup = "snapshot"`` (docs/config.md, "Windows between snapshots"): a window that
    starts between two book snapshots is replayed as if the exchange had sent a snapshot at its
    first message. The book at the window's first message ``m0`` (its first row at ``start_ns``, a
    message boundary: ``snap_start``) is built outside the engine with Nautilus' ``OrderBook``
    from the rows since the last snapshot (``book_from_ns``, :meth:`_warm_book`), then ``m0``; ``m0``
    is replaced by a snapshot of that book, written as ``mmbot catalog import`` writes one
    (adapters/bybit_book.py ``_build``): a ``CLEAR`` then one ``ADD`` per level, bids best first then
    asks best first, each flagged ``F_SNAPSHOT``, the last also ``F_LAST``, ``m0``'s ``sequence`` and
    ``ts_event``, row ``k`` received at ``m0``'s first row + ``k`` ns. Nothing before ``start_ns`` is
    decoded into the stream (no warm-up trade either). The run is then the run of the same window on
    a recording with that snapshot, which starts on a snapshot and needs no warm-up
    (tests/test_window_warmup.py proves it byte-for-byte). Stats count what is replayed;
    ``stats.warmup_rows``: rows read to build the book (``m0``'s included)."""

    def __init__(self, catalog_dir: Path | str, instrument_id: str, book_from_ns: int, start_ns: int,
                 end_ns: int | None, chunk_rows: int = DECODE_ROWS, book_first_ns: np.ndarray | None = None) -> None:
        if not book_from_ns < start_ns:
            raise FeedError(f"snapshot start: the book is built from {book_from_ns}, not before the window's "
                            f"start {start_ns}")
        super().__init__(catalog_dir, instrument_id, start_ns, end_ns, chunk_rows, book_first_ns)
        self.book_from_ns = int(book_from_ns)
        # Set by ``messages``: the stamps from here on are the recording's (shifting is over), and
        # whether the window's end cut the stream while shifting (nothing after is published).
        self.stamps_settled = False
        self.stamps_cut = False
        self._warm_files = _overlapping(data_files(catalog_dir, "order_book_deltas", instrument_id),
                                        book_from_ns, start_ns - 1)
        # ``(key, (last rows of each level, rows read, schema metadata))`` once the book was built.
        self.warm_rows_read: tuple | None = None

    def cache_identity(self) -> tuple:
        return (*super().cache_identity(), "snapshot-start", self.book_from_ns,
                tuple(_file_version(p) for p in self._warm_files))

    def _warm_key(self) -> tuple:
        """What the warm-up book depends on: the catalog's warm-up files as they are now
        (``_file_version``), and the rows' range."""
        return (self._iid.value, self.book_from_ns, self.start_ns, tuple(_file_version(p) for p in self._warm_files))

    def _warm_book(self):
        """The book the rows in ``[book_from_ns, start_ns)`` leave, built with Nautilus' ``OrderBook``
        from only the last row of each (side, price), applied in their order. Nautilus' L2 book
        (1.231, tests/test_window_warmup.py ``test_the_l2_rules_the_warm_up_book_relies_on``): an
        ``ADD`` or ``UPDATE`` of size > 0 sets the level whatever was there, an ``UPDATE`` of size 0
        and a ``DELETE`` remove it, an ``ADD`` of size 0 changes nothing (so it is left out), a
        ``CLEAR`` (its own key: no side, price 0) empties both sides, its last one removing, at its
        place, every level whose last row came before it. So a level's earlier rows change nothing
        its last one leaves (the full application, every row in order, is the proof's reference).
        The columns are read with pyarrow and only the selected rows are decoded, by Nautilus' own
        Arrow decoder (the catalog's: it takes every row the catalog holds)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from nautilus_trader.model.book import OrderBook
        from nautilus_trader.model.data import OrderBookDelta
        from nautilus_trader.model.enums import BookType
        from nautilus_trader.serialization.arrow.serializer import ArrowSerializer

        global _warm_handover
        key = self._warm_key()
        if _warm_handover is not None and _warm_handover[0] == key:  # reduced by the dry tie pass
            (_, (kept, n_rows, meta)), _warm_handover = _warm_handover, None
        else:
            # Streamed ``chunk_rows`` at a time (a day of an ob500 stream does not fit in memory):
            # the last row of each level so far is kept and reduced again with each new piece.
            kept, n_rows, meta = None, 0, None
            for path in self._warm_files:
                pf = pq.ParquetFile(path)
                meta = meta or pf.schema_arrow.metadata
                for batch in pf.iter_batches(batch_size=self.chunk_rows):
                    ts = batch.column("ts_init").to_numpy().astype(np.int64, copy=False)
                    keep = np.flatnonzero((ts >= self.book_from_ns) & (ts < self.start_ns))
                    if not len(keep):
                        continue
                    part = pa.Table.from_batches([batch]).take(pa.array(keep))
                    n_rows += part.num_rows
                    kept = _last_row_of_each_level(part if kept is None else pa.concat_tables([kept, part]))
        self.warm_rows_read = (key, (kept, n_rows, meta))
        book = OrderBook(self._iid, BookType.L2_MBP)
        if kept is None:
            return book, 0
        if not meta or b"price_precision" not in meta or b"size_precision" not in meta:
            raise FeedError("snapshot start: the catalog's order-book files carry no price/size precision "
                            "(Nautilus' schema metadata); use run.warmup = \"replay\"")
        if kept.num_rows:
            batch = kept.replace_schema_metadata(meta).combine_chunks().to_batches()[0]
            for d in OrderBookDelta.from_pyo3_list(ArrowSerializer.deserialize(OrderBookDelta, batch)):
                book.apply_delta(d)
        return book, n_rows

    def messages(self) -> Iterator[tuple[list, np.ndarray]]:
        """The base feed's messages from ``start_ns``, the first replaced by the snapshot. Then, as the
        importer stamps a recording: a message is received no earlier than 1 ns after the previous
        one's last row (adapters/bybit_book.py ``_check_ts``), so the messages that followed ``m0``
        closer than the snapshot's rows (a burst read together, 1 ns apart) are shifted after it,
        their rows keeping their offsets; a message whose last row is then past ``end_ns`` is cut by
        the window's end like any message there (not published; its rows up to the end are read,
        the later messages' are not) — hostile review 32, F1-F3."""
        from nautilus_trader.model.data import OrderBookDelta, OrderBookDeltas

        st, end, iid = self.stats, self.end_ns, self._iid
        first_chunk = True
        restamp_from = None  # the earliest receive time the next message may have while shifting
        cut = False  # a shifted message reached the window's end: nothing more is published
        cut_tail_rows = 0  # that message's rows up to the end (read, not published)
        for msgs, m_ts in super().messages():
            if cut:
                st.delta_rows -= sum(len(m.deltas) for m in msgs)
                st.messages -= len(msgs)
                continue
            i = 0
            if first_chunk:  # its first message is m0: the snapshot start
                first_chunk = False
                book, warm_rows = self._warm_book()
                m0 = msgs[0]
                book.apply_deltas(m0)
                snap = self._snapshot(book, m0)
                book = None
                st.warmup_rows = warm_rows + len(m0.deltas)
                st.delta_rows += len(snap.deltas) - len(m0.deltas)  # what is replayed: the snapshot, not m0
                m_ts = m_ts.copy()
                msgs[0], m_ts[0] = snap, snap.ts_init
                restamp_from = snap.ts_init  # the snapshot itself is only checked against the end
            while restamp_from is not None and i < len(msgs):
                m = msgs[i]
                if m is not snap:
                    lo = m.deltas[0].ts_init
                    if lo >= restamp_from:
                        restamp_from = None  # received after the previous one: the stream is as recorded
                        self.stamps_settled = True
                        break
                    shift = restamp_from - lo
                    m = OrderBookDeltas(iid, [OrderBookDelta(d.instrument_id, d.action, d.order, d.flags, d.sequence,
                                                             d.ts_event, d.ts_init + shift) for d in m.deltas])
                    msgs[i], m_ts[i] = m, m.ts_init
                if end is not None and m.ts_init > end:  # cut by the window's end
                    beyond = sum(1 for d in m.deltas if d.ts_init > end)
                    cut_tail_rows = len(m.deltas) - beyond
                    st.delta_rows -= beyond + sum(len(x.deltas) for x in msgs[i + 1:])
                    st.messages -= len(msgs) - i
                    msgs, m_ts = msgs[:i], m_ts[:i]
                    cut = self.stamps_settled = self.stamps_cut = True
                    break
                restamp_from = m.ts_init + 1
                i += 1
            if msgs:
                yield msgs, m_ts
        if cut:  # the recorded tail (a message the window's end cut) is past the end as well now
            st.delta_rows -= st.dropped_tail_rows
            st.dropped_tail_rows = cut_tail_rows

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


def snapshot_trade_ties(catalog_dir: Path | str, instrument_id: str, book_from_ns: int, start_ns: int,
                        end_ns: int | None, chunk_rows: int = DECODE_ROWS) -> int:
    """``trade_ties`` of the stream a snapshot start replays (:func:`snapshot_tie_order`)."""
    return snapshot_tie_order(catalog_dir, instrument_id, book_from_ns, start_ns, end_ns, chunk_rows).trades_tied


def snapshot_tie_order(catalog_dir: Path | str, instrument_id: str, book_from_ns: int, start_ns: int,
                       end_ns: int | None, chunk_rows: int = DECODE_ROWS) -> TieOrder:
    """:func:`tie_order` of the stream a snapshot start replays, with its own stamps (the
    snapshot's and the shifted burst's, hostile review 33 H2): the order of the recording with that
    snapshot written, which the snapshot start's run is (tests/test_window_warmup.py). A dry pass
    over its first messages (no engine), while their stamps differ from the recording's, then the
    recording's rows: ``trades_tied`` counts the trades in the window received at the receive time
    of a message it publishes; only if there are any, the rule runs over the dry pass's rows, then
    the recording's. The last result is kept (a run asks twice: ``snapshot_start`` decides,
    ``choose_feed`` builds the feed), and cached like ``trade_ties`` in a wf worker."""
    global _snapshot_order_kept, _warm_handover
    feed = SnapshotStartFeed(catalog_dir, instrument_id, book_from_ns, start_ns, end_ns, chunk_rows)
    trade_files = _overlapping(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
    key = ("snapshot-ties", feed.cache_identity())
    if _cache_on and key in _ties_cache:
        return _ties_cache[key]
    if _snapshot_order_kept is not None and _snapshot_order_kept[0] == key:
        return _snapshot_order_kept[1]
    ties, order = 0, NO_TIES
    if any(len(ts) for ts in _stamp_batches(trade_files, False, start_ns, end_ns)):  # a trade in the window
        publish, head = [], []
        for msgs, m_ts in feed.messages():  # the snapshot start's own stamps, until the shifting is over
            publish.append(m_ts)
            head.append(msgs)  # their rows' stamps are read only if a trade ties
            if feed.stamps_settled:
                break
        if publish:
            publish = np.concatenate(publish).astype(np.int64, copy=False)
            if not feed.stamps_cut:  # then every message as recorded: its F_LAST row's receive time
                publish = np.concatenate([publish, _publish_stamps(feed._delta_files, int(publish[-1]) + 1, end_ns)])
            ties = _ties_with(trade_files, publish, start_ns, end_ns)
        if head:  # every tie, publishing row or not (``tie_order``)
            order = replace(_snapshot_rule(catalog_dir, instrument_id, head, feed.stamps_cut, start_ns, end_ns,
                                           feed.chunk_rows), trades_tied=ties)
        head = None
    if _cache_on:
        _ties_cache[key] = order
    _snapshot_order_kept = (key, order)
    _warm_handover = feed.warm_rows_read  # the run's own feed of this window takes it (``_warm_book``)
    return order


def _snapshot_rule(catalog_dir, instrument_id: str, head: list, cut: bool, start_ns: int, end_ns: int | None,
                   chunk_rows: int) -> TieOrder:
    """``_tie_order`` over a snapshot start's book stream: the rows of the dry pass's messages
    (``head``, its own stamps), then, unless the window's end cut it while shifting, the recording's
    rows after them (their files' first rows join as in the recording)."""
    rows = np.fromiter((d.ts_init for msgs in head for m in msgs for d in m.deltas), dtype=np.int64)
    after = int(rows[-1])  # the dry pass's last message's publishing row
    books = _window_files(data_files(catalog_dir, "order_book_deltas", instrument_id), start_ns, end_ns)
    rest = [] if cut else _window_files(books, after + 1, end_ns)

    def book_batches():
        yield rows, None
        yield from _file_batches(rest, after + 1, end_ns, after_ns=after)

    trades = _window_files(data_files(catalog_dir, "trade_tick", instrument_id), start_ns, end_ns)
    return _tie_order(book_batches(), trades, start_ns, end_ns, _intervals_overlap(books), chunk_rows)


_snapshot_order_kept: tuple | None = None  # the last ``snapshot_tie_order``: (its key, its result)


# A single backtest with run.feed = "auto" builds its snapshot start's warm-up twice otherwise: in
# ``snapshot_trade_ties``'s dry pass, then in the run. The dry pass's reduced rows (a few rows per
# book level) are handed over here, taken (and dropped) by the next ``_warm_book`` of the same
# files and range; any other key reads the files itself.
_warm_handover: tuple | None = None


# Walk-forward workers replay the same train window for every trial of a split: the decoded
# chunks of the last windows are kept (per process, at most CACHE_ROWS stream rows in all) when
# ``enable_cache`` was called (mmbot/tuning/worker.py). The objects are immutable data: a replay
# from the cache is the replay from the catalog (tests/test_wf.py compares them).
CACHE_ROWS = 2_000_000
_cache: dict[tuple, tuple[list, FeedStats]] = {}
_cache_on = False


_ties_cache: dict[tuple, int] = {}  # trade_ties per window and file versions, while the cache is on


# The same worker also resolves the same window, instrument, sizing price and funding every trial:
# ~60 catalog queries (Nautilus' ``instruments()`` alone queries each of its instrument classes),
# ~25 ms a trial. Kept per state of the instrument's files: a digest of the path, inode, size, mtime
# and ctime of every parquet file below data/<kind>/<instrument>/ (symlinked folders followed, as
# the readers do) and of the catalog's version file; a file added, removed or rewritten is another
# key. Other instruments' files are not walked: what is kept reads only this instrument's (a
# catalog of 20,000 files cost 380 ms a key walked whole, hostile review 41). At most MEMO_ENTRIES
# results and MEMO_ARRAY_BYTES of arrays (the funding rows), least recently used first out.
MEMO_ENTRIES = 256
MEMO_ARRAY_BYTES = 64 << 20
_memo: dict[tuple, object] = {}


def _instrument_files_digest(root: Path, instrument_id: str) -> bytes:
    import hashlib
    import os

    from nautilus_trader.persistence.funcs import urisafe_identifier

    h = hashlib.blake2b(digest_size=16)
    folder = urisafe_identifier(instrument_id)
    data = root / "data"
    kinds = sorted(e.name for e in os.scandir(data) if e.is_dir()) if data.is_dir() else []
    for kind in kinds:
        for top, dirs, names in os.walk(data / kind / folder, followlinks=True):
            dirs.sort()
            for name in sorted(names):
                if name.endswith(".parquet"):
                    # ``_file_version``'s tuple without its per-file ``resolve`` (the root is resolved)
                    st = os.stat(os.path.join(top, name))
                    h.update(f"{top}/{name}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}\n".encode())
    from mmbot.catalog_store import VERSION_FILE

    try:
        st = os.stat(root / VERSION_FILE)
        h.update(f"{VERSION_FILE}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}".encode())
    except FileNotFoundError:
        pass
    return h.digest()


def _array_bytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_array_bytes(v) for v in value)
    return 0


def catalog_memo(name: str, catalog_dir: Path | str, instrument_id: str, args: tuple, compute):
    """``compute()``, or its result for the same ``name``, instrument, state of its files and
    ``args`` while the cache is on (a wf worker). ``compute`` must read nothing of the catalog but
    ``instrument_id``'s files (and the instruments' definitions, which are among them). Results are
    shared, not copied: only immutable ones (Nautilus instruments, numbers, frozen dataclasses,
    read-only arrays). An exception is not kept."""
    if not _cache_on:
        return compute()
    root = Path(catalog_dir).resolve()
    key = (name, str(root), instrument_id, args, _instrument_files_digest(root, instrument_id))
    if key in _memo:
        _memo[key] = _memo.pop(key)  # most recently used last
        return _memo[key]
    value = compute()
    _memo[key] = value
    while len(_memo) > MEMO_ENTRIES or (len(_memo) > 1 and sum(map(_array_bytes, _memo.values())) > MEMO_ARRAY_BYTES):
        _memo.pop(next(iter(_memo)))
    return value


def enable_cache(on: bool = True) -> None:
    global _cache_on
    _cache_on = on
    if not on:
        _cache.clear()
        _ties_cache.clear()
        _memo.clear()


def cached_chunks(feed: "MessageFeed") -> Iterator[list]:
    """``feed.chunks()``, from this process's cache when the same window was decoded before."""
    if not _cache_on:
        yield from feed.chunks()
        return
    key = feed.cache_identity()
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


def _merge(msgs: list, m_ts: np.ndarray, trades: list, t_ts: np.ndarray,
           book_first_ns: np.ndarray | None = None) -> list:
    """Messages and trades (each sorted by ts_init) in one list by ts_init, trades first at ties
    except at the stamps of ``book_first_ns`` (sorted): messages first there."""
    if not trades:
        return msgs
    ts = np.concatenate([t_ts, m_ts])
    t_kind = np.zeros(len(t_ts), np.int8)
    if book_first_ns is not None and len(book_first_ns):
        at = np.minimum(np.searchsorted(book_first_ns, t_ts), len(book_first_ns) - 1)
        t_kind[book_first_ns[at] == t_ts] = 2  # after the messages (kind 1) at the same stamp
    kind = np.concatenate([t_kind, np.ones(len(m_ts), np.int8)])
    order = np.lexsort((np.arange(len(ts)), kind, ts)).tolist()
    objs = trades + msgs
    return [objs[i] for i in order]


def run_engine(engine, chunks: Iterator[list], start_ns: int | None, end_ns: int | None,
               run_config_id: str | None = None) -> None:
    """Stream ``chunks`` through a built ``BacktestEngine`` as ``BacktestNode`` streams catalog
    chunks (add, run in streaming mode, clear; then ``end()``), so clocks, timers and the kernel
    start behave the same way as in the per-delta feed. glibc's free pages are given back after a
    replayed chunk once ``RELEASE_EVERY_ITEMS`` items were replayed since the last time, before the
    next chunk is decoded, and after the replay (mmbot/backtest/heap.py: the peak stays flat with
    the run's length)."""
    from nautilus_trader.common.component import is_backtest_force_stop

    from mmbot.backtest import heap

    since_release = 0
    for chunk in chunks:
        if not chunk:
            continue
        since_release += len(chunk)
        engine.add_data(data=chunk, validate=False, sort=True)
        engine.run(start=start_ns, end=end_ns, run_config_id=run_config_id, streaming=True)
        engine.clear_data()
        del chunk  # replayed: not kept alive while the next one is decoded
        if since_release >= heap.RELEASE_EVERY_ITEMS:
            heap.release_free_heap()
            since_release = 0
        if is_backtest_force_stop():
            if since_release:  # the replay ends here: its pages back before the report (review 38 F2)
                heap.release_free_heap()
            return
    engine.end()
    engine.clear_data()
    heap.release_free_heap()
