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
_DECIMAL = r"^[0-9]+(\.[0-9]*)?$"  # what decimal_str_to_raw accepts, ASCII digits only
_ADD, _UPDATE, _DELETE, _CLEAR = 1, 2, 3, 4  # BookAction
_BUY, _SELL = 1, 2  # OrderSide
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1


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


_decode = msgspec.json.Decoder(_Msg).decode


def delta_schema(instrument: Instrument) -> pa.Schema:
    """Nautilus' own ``OrderBookDelta`` Arrow schema with the metadata its Rust encoder writes."""
    meta = nautilus_pyo3.OrderBookDelta.get_metadata(
        nautilus_pyo3.InstrumentId.from_str(instrument.id.value), instrument.price_precision,
        instrument.size_precision)
    return get_schema(OrderBookDelta).with_metadata(dict(sorted(meta.items())))


@dataclass
class Chunk:
    table: pa.Table
    batch_rows: np.ndarray  # rows of each message that produced rows, in order (the object path's batches)


def _iter_raw_lines(path: Path) -> Iterator[bytes]:
    """Lines exactly as ``adapters.sources.iter_lines`` numbers them, or ``Fallback``."""
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
                yield from lines
        if pending:
            yield pending
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

    def __init__(self, path: Path, instrument: Instrument, symbol: str, day_lo_ns: int, day_hi_ns: int) -> None:
        self.path, self.instrument, self.symbol = path, instrument, symbol
        self.day_lo_ns, self.day_hi_ns = day_lo_ns, day_hi_ns
        self.pp, self.sp = instrument.price_precision, instrument.size_precision
        self.schema = delta_schema(instrument)
        self.price_max_ticks = min(PRICE_RAW_MAX // 10 ** (16 - self.pp), _I64_MAX)
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
        for line in _iter_raw_lines(self.path):
            buf.append(line)
            if len(buf) >= LINES_PER_CHUNK:
                chunk = self._chunk(buf, first_line)
                first_line += len(buf)
                buf = []
                if chunk is not None:
                    yield chunk
        if buf:
            chunk = self._chunk(buf, first_line)
            first_line += len(buf)
            if chunk is not None:
                yield chunk
        self.lines = first_line - 1
        if self.lines == 0 or self.messages == 0:
            raise Fallback("no order-book messages")

    def invariant_book(self) -> dict[tuple[int, int], int]:
        """The book at the end of the file keyed as ``BookInvariant.book`` is."""
        pu, su = 10 ** (16 - self.pp), 10 ** (16 - self.sp)
        out = {(_BUY, t * pu): s * su for t, s in self.bids.items()}
        out.update({(_SELL, t * pu): s * su for t, s in self.asks.items()})
        return out

    # -- one chunk ------------------------------------------------------------------------------

    def _chunk(self, lines: list[bytes], first_line: int) -> Chunk | None:
        types: list[str] = []
        ts_ms: list[int] = []
        us: list[int] = []
        nb: list[int] = []
        na: list[int] = []
        symbols: set[str] = set()
        levels: list[tuple[str, str]] = []
        for i, line in enumerate(lines):
            try:
                m = _decode(line)
            except msgspec.DecodeError:
                if not line.strip():
                    continue  # blank lines are skipped by the object path too
                raise Fallback(f"line {first_line + i}: not a plain order-book message") from None
            d = m.data
            types.append(m.type)
            ts_ms.append(m.ts)
            us.append(d.u)
            symbols.add(d.s)
            nb.append(len(d.b))
            na.append(len(d.a))
            levels += d.b
            levels += d.a
        n_msg = len(types)
        if n_msg == 0:
            return None
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
        if ((prev_u[delta] == _U64_MAX) | (u_a[delta] != prev_u[delta] + np.uint64(1))).any():
            raise Fallback("an update-id gap")

        nb_a, na_a = np.array(nb, dtype=np.int64), np.array(na, dtype=np.int64)
        n_lvl = len(levels)
        if n_lvl:
            px_s, sz_s = zip(*levels)
            px = _ticks(pa.array(px_s, pa.string()), self.pp, "price")
            sz = _ticks(pa.array(sz_s, pa.string()), self.sp, "size")
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

        self._walk_book(snap, kb, ka, px, sz, first_line)
        # repeated_level: a level changed twice in one (non-snapshot) message
        dsel = ~snap[lvl_msg]
        if dsel.any():
            km, ks, kt = lvl_msg[dsel], side[dsel], px[dsel]
            order = np.lexsort((kt, ks, km))
            km, ks, kt = km[order], ks[order], kt[order]
            self.repeated_level += int(((km[1:] == km[:-1]) & (ks[1:] == ks[:-1]) & (kt[1:] == kt[:-1])).sum())

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
        return Chunk(table, n_rows_msg[has_rows]) if n else None

    def _walk_book(self, snap: np.ndarray, kb: np.ndarray, ka: np.ndarray, px: np.ndarray, sz: np.ndarray,
                   first_line: int) -> None:
        """Apply the chunk's levels to the book in stream order: crossed-book check after every
        message, ``unchanged_size`` counted on non-snapshot rows."""
        tk, lt = px.tolist(), sz.tolist()
        bids, asks = self.bids, self.asks
        bb, ba = self.best_bid, self.best_ask
        unchanged = 0
        i = 0
        for m, (is_snap, nbm, nam) in enumerate(zip(snap.tolist(), kb.tolist(), ka.tolist(), strict=True)):
            if is_snap:
                bids.clear()
                asks.clear()
                for j in range(i, i + nbm):
                    bids[tk[j]] = lt[j]
                i += nbm
                for j in range(i, i + nam):
                    asks[tk[j]] = lt[j]
                i += nam
                bb = max(bids) if bids else None
                ba = min(asks) if asks else None
            else:
                redo = False
                for j in range(i, i + nbm):
                    t, s = tk[j], lt[j]
                    if s:
                        if bids.get(t, 0) == s:
                            unchanged += 1
                        bids[t] = s
                        if bb is None or t > bb:
                            bb = t
                    else:
                        if bids.pop(t, 0) == 0:
                            unchanged += 1
                        if t == bb:
                            redo = True
                i += nbm
                if redo:
                    bb = max(bids) if bids else None
                redo = False
                for j in range(i, i + nam):
                    t, s = tk[j], lt[j]
                    if s:
                        if asks.get(t, 0) == s:
                            unchanged += 1
                        asks[t] = s
                        if ba is None or t < ba:
                            ba = t
                    else:
                        if asks.pop(t, 0) == 0:
                            unchanged += 1
                        if t == ba:
                            redo = True
                i += nam
                if redo:
                    ba = min(asks) if asks else None
            if bb is not None and ba is not None and bb >= ba:
                raise Fallback(f"crossed book (message {m + 1} of the chunk at line {first_line})")
        self.best_bid, self.best_ask = bb, ba
        self.unchanged_size += unchanged
