"""Bybit historical order-book files -> the catalog's ``OrderBookDelta`` Arrow columns directly.

The fast engine of ``mmbot catalog import`` (``--engine arrow``, the default). It writes exactly
the rows :class:`adapters.bybit_book.BookStream` would turn into ``OrderBookDelta`` objects and
``ParquetDataCatalog.write_data`` would serialise (tests/test_import_equality.py proves it on the
fixtures and a generated stream), without a Python object per level:

- each line is decoded by msgspec into a typed struct (a line of another shape fails the decode);
- prices and sizes are checked and converted by Arrow kernels: a decimal-string regex, a cast to
  ``decimal128`` at the instrument's precision (a value finer than the tick/step fails it), the
  Nautilus raw value (``value * 1e16`` as a little-endian 128-bit integer, the bytes of Nautilus'
  ``FixedSizeBinary(16)`` price/size columns) by a cast of the integer ticks to ``decimal128``;
- update ids, timestamps and the file-name checks are numpy comparisons over a chunk of lines;
- one loop over levels keeps the book (two dicts of integer ticks) for the crossed-book check and
  the catalog's book-invariant counts; it creates no objects.

**Only clean input takes this path.** Anything the object path would report as a problem (a
malformed line, bad number, update-id gap, delta before the first snapshot, crossed book,
timestamp going backwards, a line of another symbol or day, an empty or unreadable file), and
anything this code does not prove equivalent (a value with more decimals than the tick, an
update id at 2**64-1, a ``ts`` given as a string...), raises :class:`Fallback`: the importer
discards what this file added and imports it with the object path, which reports the problem
exactly as before; the import report names the engine and the reason per file.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from nautilus_trader.core import nautilus_pyo3
from nautilus_trader.model.data import OrderBookDelta
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.serialization.arrow.serializer import get_schema

from adapters.bybit_book import F_LAST, F_SNAPSHOT, MAX_TS_NS, NS_PER_MS, PRICE_RAW_MAX, QUANTITY_RAW_MAX

LINES_PER_CHUNK = 20_000  # lines decoded and converted at a time (bounded memory per file)
READ_BYTES = 1 << 22
# what decimal_str_to_raw accepts: ASCII digits, at most 16 decimals (Nautilus' raw precision; an
# Arrow decimal cast alone would read "1.95" + 17 zeros as 1.95 where the object path reports bad_number)
_DECIMAL = r"^[0-9]+(\.[0-9]{0,16})?$"
_ADD, _UPDATE, _DELETE, _CLEAR = 1, 2, 3, 4  # BookAction
_BUY, _SELL = 1, 2  # OrderSide
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1
_NO_ASK = _I64_MAX  # best ask of a book without asks (above every accepted tick)


class Fallback(Exception):
    """This file must be imported by the object path (the message says why)."""


class _Data(msgspec.Struct):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int


class _Msg(msgspec.Struct):
    type: str
    ts: int
    data: _Data


_decoder = msgspec.json.Decoder(_Msg)
_decode, _decode_lines = _decoder.decode, _decoder.decode_lines


@dataclass(frozen=True)
class BookSpec:
    """What the Arrow engine needs of an instrument (picklable, for ``--jobs`` workers)."""

    instrument_id: str
    price_precision: int
    size_precision: int

    @classmethod
    def of(cls, instrument: Instrument) -> BookSpec:
        return cls(instrument.id.value, instrument.price_precision, instrument.size_precision)


def delta_schema(spec: BookSpec) -> pa.Schema:
    """Nautilus' own ``OrderBookDelta`` Arrow schema with the metadata its Rust encoder writes."""
    meta = nautilus_pyo3.OrderBookDelta.get_metadata(
        nautilus_pyo3.InstrumentId.from_str(spec.instrument_id), spec.price_precision, spec.size_precision)
    return get_schema(OrderBookDelta).with_metadata(dict(sorted(meta.items())))


@dataclass
class Chunk:
    table: pa.Table | None  # None: the chunk's messages produced no rows
    batch_rows: np.ndarray  # rows of each message that produced rows, in order (the object path's batches)
    messages: int = 0
    nbytes: int = 0  # input bytes of the chunk's lines (progress)


def _iter_raw_lines(path: Path) -> Iterator[list[bytes]]:
    """Lists of lines, in order, exactly as ``adapters.sources.iter_lines`` numbers them, or ``Fallback``."""
    try:
        if path.suffix == ".zip":
            zf = zipfile.ZipFile(path)
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise Fallback("zip does not hold exactly one file")
            raw: io.RawIOBase = zf.open(names[0])
        else:
            raw = open(path, "rb")
        pending = b""
        with raw:
            while True:
                block = raw.read(READ_BYTES)
                if not block:
                    break
                lines = (pending + block).split(b"\n")
                pending = lines.pop()
                yield lines
        if pending:
            yield [pending]
    except Fallback:
        raise
    except Exception as e:  # noqa: BLE001 - any read problem is the object path's to report
        raise Fallback(f"unreadable: {e}") from None


def _ticks(strings: pa.Array, precision: int, what: str) -> np.ndarray:
    """Integer ticks (value * 10**precision) of decimal strings, or ``Fallback``."""
    if not pc.all(pc.match_substring_regex(strings, _DECIMAL)).as_py():
        raise Fallback(f"a {what} is not a plain decimal string")
    try:
        dec = pc.cast(strings, pa.decimal128(38, precision))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise Fallback(f"a {what} is finer than the instrument's precision or too large") from None
    limbs = np.frombuffer(dec.buffers()[1], dtype="<i8")[2 * dec.offset: 2 * (dec.offset + len(dec))].reshape(-1, 2)
    if len(limbs) and (limbs[:, 1].any() or (limbs[:, 0] < 0).any()):
        raise Fallback(f"a {what} exceeds 2**63 ticks")
    return limbs[:, 0].copy()


def _raw_bytes(ticks: np.ndarray, precision: int) -> np.ndarray:
    """Nautilus raw values (ticks * 10**(16 - precision)) as little-endian int128 bytes, (n, 16)."""
    dec = pc.cast(pa.array(ticks, pa.int64()), pa.decimal128(38, 16 - precision))
    return np.frombuffer(dec.buffers()[1], dtype=np.uint8)[16 * dec.offset: 16 * (dec.offset + len(dec))].reshape(-1, 16)


class ArrowBookFile:
    """One Bybit ``obN.data[.zip]`` file of one symbol (see the module docstring)."""

    def __init__(self, path: Path, spec: BookSpec, symbol: str, day_lo_ns: int, day_hi_ns: int) -> None:
        self.path, self.spec, self.symbol = path, spec, symbol
        self.day_lo_ns, self.day_hi_ns = day_lo_ns, day_hi_ns
        self.pp, self.sp = spec.price_precision, spec.size_precision
        self.schema = delta_schema(spec)
        self.price_max_ticks = min(PRICE_RAW_MAX // 10 ** (16 - self.pp), _I64_MAX - 1)
        self.size_max_ticks = min(QUANTITY_RAW_MAX // 10 ** (16 - self.sp), _I64_MAX)
        # stream state carried across chunks
        self.lines = self.messages = 0
        self.last_u: int | None = None
        self.last_ts_ms = 0
        self.last_ts_init = -1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid: int | None = None
        self.best_ask: int | None = None
        # book-invariant counts (catalog_store.BookInvariant) of this file
        self.rows = self.batches = self.snapshots = self.unchanged_size = self.repeated_level = 0

    def chunks(self) -> Iterator[Chunk]:
        buf: list[bytes] = []
        first_line = 1
        for lines in _iter_raw_lines(self.path):
            buf += lines
            while len(buf) >= LINES_PER_CHUNK:
                part, buf = buf[:LINES_PER_CHUNK], buf[LINES_PER_CHUNK:]
                yield self._chunk(part, first_line)
                first_line += len(part)
        if buf:
            yield self._chunk(buf, first_line)
            first_line += len(buf)
        self.lines = first_line - 1
        if self.lines == 0 or self.messages == 0:
            raise Fallback("no order-book messages")

    def summary(self) -> dict:
        """The per-file results the importer records (picklable)."""
        return {"lines": self.lines, "messages": self.messages, "rows": self.rows, "batches": self.batches,
                "snapshots": self.snapshots, "unchanged_size": self.unchanged_size,
                "repeated_level": self.repeated_level, "book": self.invariant_book()}

    def invariant_book(self) -> dict[tuple[int, int], int]:
        """The book at the end of the file keyed as ``BookInvariant.book`` is."""
        pu, su = 10 ** (16 - self.pp), 10 ** (16 - self.sp)
        out = {(_BUY, t * pu): s * su for t, s in self.bids.items() if s}
        out.update({(_SELL, t * pu): s * su for t, s in self.asks.items() if s})
        return out

    # -- one chunk ------------------------------------------------------------------------------

    def _decode_chunk(self, lines: list[bytes], first_line: int) -> list[_Msg]:
        """One message per non-blank line, or ``Fallback``. When every line boundary is ``}\\n{``
        no JSON value can span or share a line (a value cannot continue with ``{`` after a
        closing brace), so msgspec's newline-delimited decoder, checked to return one value per
        line, decodes line by line in one call; anything else goes line by line here."""
        chunk = b"\n".join(lines)
        if chunk[:1] == b"{" and chunk[-1:] == b"}" and chunk.count(b"}\n{") == len(lines) - 1:
            try:
                msgs = _decode_lines(chunk)
            except msgspec.DecodeError:
                msgs = None
            if msgs is not None and len(msgs) == len(lines):
                return msgs
        msgs = []
        for i, line in enumerate(lines):
            try:
                msgs.append(_decode(line))
            except msgspec.DecodeError:
                if not line.strip():
                    continue  # blank lines are skipped by the object path too
                raise Fallback(f"line {first_line + i}: not a plain order-book message") from None
        return msgs

    def _chunk(self, lines: list[bytes], first_line: int) -> Chunk:
        nbytes = sum(map(len, lines)) + len(lines)
        msgs = self._decode_chunk(lines, first_line)
        datas = [m.data for m in msgs]
        types = [m.type for m in msgs]
        ts_ms = [m.ts for m in msgs]
        us = [d.u for d in datas]
        symbols = {d.s for d in datas}
        nb = [len(d.b) for d in datas]
        na = [len(d.a) for d in datas]
        levels = [lv for d in datas for side in (d.b, d.a) for lv in side]
        n_msg = len(types)
        if n_msg == 0:
            return Chunk(None, np.zeros(0, dtype=np.int64), 0, nbytes)
        if symbols != {self.symbol}:
            raise Fallback(f"lines of another symbol than {self.symbol}")
        if not set(types) <= {"snapshot", "delta"}:
            raise Fallback("an unknown message type")
        try:
            ts_ms_a = np.array(ts_ms, dtype=np.int64)
            u_a = np.array(us, dtype=np.uint64)
        except OverflowError:
            raise Fallback("a ts or update id out of range") from None
        if ts_ms_a.min() < 0 or ts_ms_a.max() > MAX_TS_NS // NS_PER_MS:
            raise Fallback("a ts out of range")
        ts_ns = ts_ms_a * NS_PER_MS
        if ts_ns.min() < self.day_lo_ns or ts_ns.max() >= self.day_hi_ns:
            raise Fallback("a line outside the day in the file name")
        prev_ts = np.concatenate(([self.last_ts_ms], ts_ms_a[:-1]))
        if (ts_ms_a < prev_ts).any():
            raise Fallback("ts going backwards")
        snap = (np.array(types) == "snapshot") | (u_a == 1)
        if self.last_u is None and not snap[0]:
            raise Fallback("a delta before the first snapshot")
        prev_u = np.concatenate(([0 if self.last_u is None else self.last_u], u_a[:-1])).astype(np.uint64)
        delta = ~snap
        if self.last_u is None:
            delta[0] = False  # the file's first message: no previous update id (checked above)
        if ((prev_u[delta] == _U64_MAX) | (u_a[delta] != prev_u[delta] + np.uint64(1))).any():
            raise Fallback("an update-id gap")

        nb_a, na_a = np.array(nb, dtype=np.int64), np.array(na, dtype=np.int64)
        n_lvl = len(levels)
        if n_lvl:
            pairs = pa.array(levels, pa.list_(pa.string(), 2))
            px = _ticks(pc.list_element(pairs, 0), self.pp, "price")
            sz = _ticks(pc.list_element(pairs, 1), self.sp, "size")
            if (px == 0).any():
                raise Fallback("a zero price")
            if px.max() > self.price_max_ticks or sz.max() > self.size_max_ticks:
                raise Fallback("a price or size above Nautilus' limit")
        else:
            px = sz = np.zeros(0, dtype=np.int64)
        side = np.repeat(np.tile(np.array([_BUY, _SELL], dtype=np.uint8), n_msg), np.column_stack((nb_a, na_a)).ravel())
        lvl_msg = np.repeat(np.arange(n_msg), nb_a + na_a)
        keep = ~(snap[lvl_msg] & (sz == 0))  # a zero level in a snapshot carries no information
        if not keep.all():
            side, lvl_msg, px, sz = side[keep], lvl_msg[keep], px[keep], sz[keep]
        kb = np.bincount(lvl_msg[side == _BUY], minlength=n_msg)
        ka = np.bincount(lvl_msg[side == _SELL], minlength=n_msg)

        self._count_invariant(snap, side, lvl_msg, px, sz)
        self._walk_book(snap, kb, ka, side, lvl_msg, px, sz, first_line)

        # rows: per message [CLEAR if snapshot] + kept bids + kept asks
        n_rows_msg = snap.astype(np.int64) + kb + ka
        row0 = np.concatenate(([0], np.cumsum(n_rows_msg)))
        n = int(row0[-1])
        msg_of_row = np.repeat(np.arange(n_msg), n_rows_msg)
        kept0 = np.concatenate(([0], np.cumsum(kb + ka)))
        lvl_pos = row0[lvl_msg] + snap[lvl_msg] + (np.arange(len(px)) - kept0[lvl_msg])
        clear_pos = row0[:-1][snap]

        action = np.full(n, _CLEAR, dtype=np.uint8)
        action[lvl_pos] = np.where(snap[lvl_msg], _ADD, np.where(sz > 0, _UPDATE, _DELETE))
        side_col = np.zeros(n, dtype=np.uint8)
        side_col[lvl_pos] = side
        price = np.zeros((n, 16), dtype=np.uint8)
        size = np.zeros((n, 16), dtype=np.uint8)
        if len(px):
            price[lvl_pos] = _raw_bytes(px, self.pp)
            size[lvl_pos] = _raw_bytes(sz, self.sp)
        flags = np.where(snap[msg_of_row], F_SNAPSHOT, 0).astype(np.uint8)
        has_rows = n_rows_msg > 0
        flags[row0[1:][has_rows] - 1] |= F_LAST
        # ts_init: a message's rows get base, base+1, ... with base = max(ts, previous row + 1):
        # base_m - row0_m is a running maximum of (ts_m - row0_m), starting from the carried row.
        c = np.maximum.accumulate(np.maximum(ts_ns - row0[:-1], self.last_ts_init + 1))
        ts_init = c[msg_of_row] + np.arange(n)
        if n and ts_init[-1] > MAX_TS_NS:
            raise Fallback("a ts_init beyond 2**63-1 ns")
        del clear_pos
        columns = [
            pa.array(action, pa.uint8()),
            pa.array(side_col, pa.uint8()),
            pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(price)]),
            pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(size)]),
            pa.array(np.zeros(n, dtype=np.uint64), pa.uint64()),
            pa.array(flags, pa.uint8()),
            pa.array(u_a[msg_of_row], pa.uint64()),
            pa.array(ts_ns[msg_of_row].astype(np.uint64), pa.uint64()),
            pa.array(ts_init.astype(np.uint64), pa.uint64()),
        ]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        # carried state
        self.last_u = int(u_a[-1])
        self.last_ts_ms = int(ts_ms_a[-1])
        if n:
            self.last_ts_init = int(ts_init[-1])
        self.messages += n_msg
        self.rows += n
        self.batches += int(has_rows.sum())
        self.snapshots += int(snap.sum())
        return Chunk(table if n else None, n_rows_msg[has_rows], n_msg, nbytes)

    def _count_invariant(self, snap: np.ndarray, side: np.ndarray, lvl_msg: np.ndarray, px: np.ndarray,
                         sz: np.ndarray) -> None:
        """``BookInvariant``'s counts over the chunk's non-snapshot rows, vectorised: a row's
        previous size is that of the previous row of its level (side, price) since the last
        snapshot, or the carried book's; ``repeated_level`` = a level twice in one message."""
        n = len(px)
        if n == 0:
            return
        epoch = np.cumsum(snap)[lvl_msg]  # 0 = before this chunk's first snapshot (carried book)
        order = np.lexsort((np.arange(n), px, side, epoch))
        e, sd, t, z, mm = epoch[order], side[order], px[order], sz[order], lvl_msg[order]
        same = np.zeros(n, dtype=bool)
        same[1:] = (e[1:] == e[:-1]) & (sd[1:] == sd[:-1]) & (t[1:] == t[:-1])
        prev = np.zeros(n, dtype=np.int64)
        prev[1:] = z[:-1]
        prev[~same] = 0
        carried = np.flatnonzero(~same & (e == 0))
        if len(carried):
            bids, asks = self.bids, self.asks
            prev[carried] = [(bids if s_ == _BUY else asks).get(t_, 0)
                             for s_, t_ in zip(sd[carried].tolist(), t[carried].tolist(), strict=True)]
        checked = ~snap[mm]
        self.unchanged_size += int((checked & (z == prev)).sum())
        self.repeated_level += int((checked & same & np.concatenate(([False], mm[1:] == mm[:-1]))).sum())

    def _walk_book(self, snap: np.ndarray, kb: np.ndarray, ka: np.ndarray, side: np.ndarray, lvl_msg: np.ndarray,
                   px: np.ndarray, sz: np.ndarray, first_line: int) -> None:
        """Apply the chunk's levels to the book message by message (``dict.update`` in row
        order: the last row of a level wins, as in the object path) and check after every
        message that best bid < best ask. Deleted levels stay in the dicts with size 0 until the
        best level is deleted, which recomputes the best over the live levels."""
        n_msg = len(snap)
        live = sz > 0
        mxb = np.full(n_msg, -1, dtype=np.int64)
        mna = np.full(n_msg, _NO_ASK, dtype=np.int64)
        sel = live & (side == _BUY)
        np.maximum.at(mxb, lvl_msg[sel], px[sel])
        sel = live & (side == _SELL)
        np.minimum.at(mna, lvl_msg[sel], px[sel])
        k0 = np.concatenate(([0], np.cumsum(kb + ka)))
        tk, lt = px.tolist(), sz.tolist()
        bids, asks = self.bids, self.asks
        bb = self.best_bid if self.best_bid is not None else -1
        ba = self.best_ask if self.best_ask is not None else _NO_ASK
        for m, is_snap, b0, b1, a1, hi_bid, lo_ask in zip(range(n_msg), snap.tolist(), k0[:-1].tolist(),
                                                          (k0[:-1] + kb).tolist(), k0[1:].tolist(), mxb.tolist(),
                                                          mna.tolist(), strict=True):
            if is_snap:
                bids = dict(zip(tk[b0:b1], lt[b0:b1], strict=True))
                asks = dict(zip(tk[b1:a1], lt[b1:a1], strict=True))
                bb = max(bids, default=-1)
                ba = min(asks, default=_NO_ASK)
            else:
                if b1 > b0:
                    bids.update(zip(tk[b0:b1], lt[b0:b1], strict=True))
                    if hi_bid > bb:
                        bb = hi_bid
                    if bb >= 0 and not bids[bb]:
                        bids = {t: s for t, s in bids.items() if s}
                        bb = max(bids, default=-1)
                if a1 > b1:
                    asks.update(zip(tk[b1:a1], lt[b1:a1], strict=True))
                    if lo_ask < ba:
                        ba = lo_ask
                    if ba != _NO_ASK and not asks[ba]:
                        asks = {t: s for t, s in asks.items() if s}
                        ba = min(asks, default=_NO_ASK)
            if bb >= ba:
                raise Fallback(f"crossed book (message {m + 1} of the chunk at line {first_line})")
        self.bids, self.asks = bids, asks
        self.best_bid = bb if bb >= 0 else None
        self.best_ask = ba if ba != _NO_ASK else None


def file_to_ipc(path: Path, spec: BookSpec, symbol: str, day_lo_ns: int, day_hi_ns: int, out: Path) -> dict:
    """``--jobs`` worker: convert one file, its chunks into an Arrow IPC stream at ``out``; returns
    what the importer applies afterwards in input order (or ``{"fallback": reason}``)."""
    fast = ArrowBookFile(path, spec, symbol, day_lo_ns, day_hi_ns)
    batch_rows: list[np.ndarray] = []
    nbytes = 0
    try:
        with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, fast.schema) as writer:
            for chunk in fast.chunks():
                nbytes += chunk.nbytes
                if chunk.table is not None:
                    (batch,) = chunk.table.to_batches()  # built from single-chunk columns: one batch
                    writer.write_batch(batch)
                    batch_rows.append(chunk.batch_rows)
    except Fallback as e:
        Path(out).unlink(missing_ok=True)
        return {"fallback": str(e), "nbytes": nbytes}
    return {"fallback": None, "batch_rows": batch_rows, "nbytes": nbytes, "state": fast.summary()}


def ipc_chunks(out: Path, batch_rows: list[np.ndarray]) -> Iterator[Chunk]:
    """The chunks ``file_to_ipc`` wrote, in order."""
    with pa.memory_map(str(out)) as source:
        reader = pa.ipc.open_stream(source)
        for rows in batch_rows:
            table = pa.Table.from_batches([reader.read_next_batch()])
            yield Chunk(table, rows, 0, 0)
