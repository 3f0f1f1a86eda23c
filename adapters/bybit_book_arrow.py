"""Bybit historical order-book files -> the catalog's ``OrderBookDelta`` Arrow columns directly.

The fast engine of ``mmbot catalog import`` (``--engine arrow``, the default). It writes exactly
the rows :class:`adapters.bybit_book.BookStream` would turn into ``OrderBookDelta`` objects and
``ParquetDataCatalog.write_data`` would serialise (tests/test_import_equality.py proves it on the
fixtures and a generated stream), without a Python object per level. Per chunk of lines:

- the fast path (``_decode_raw``, ``_parse_levels``, ``_decimal_ticks``): msgspec decodes each line
  with its level lists left as JSON text (``msgspec.Raw``); numpy proves every byte of those texts
  to be ``[["<p>","<s>"],...]`` and reads the decimal strings as 8-byte words into integer ticks;
  a chunk it cannot prove clean goes to the general path: a typed msgspec decode, a decimal-string
  regex and a cast to ``decimal128`` at the instrument's precision (a value finer than the
  tick/step fails it), exactly as before, with the same refusals in the same order;
- the Nautilus raw value (``value * 1e16`` as a little-endian 128-bit integer, the bytes of
  Nautilus' ``FixedSizeBinary(16)`` price/size columns) by integer arithmetic on the ticks;
- update ids, timestamps and the file-name checks are numpy comparisons over the chunk;
- the book (``_book_pass``): the carried book and the chunk's rows sorted by level give the
  catalog's book-invariant counts, the spans each level holds its size, and from them the best bid
  and ask after every message for the crossed-book check (``_cover_max``); no loop per message.

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
from itertools import chain
from operator import attrgetter
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


def _iter_blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks, or ``Fallback`` (a read problem is the object path's to report)."""
    try:
        if path.suffix == ".zip":
            zf = zipfile.ZipFile(path)
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise Fallback("zip does not hold exactly one file")
            raw: io.RawIOBase = zf.open(names[0])
        else:
            raw = open(path, "rb")
        with raw:
            while True:
                block = raw.read(READ_BYTES)
                if not block:
                    break
                yield block
    except Fallback:
        raise
    except Exception as e:  # noqa: BLE001 - any read problem is the object path's to report
        raise Fallback(f"unreadable: {e}") from None


def _iter_chunk_text(path: Path) -> Iterator[tuple[bytes, int]]:
    """``(text, lines)``: the file's lines ``LINES_PER_CHUNK`` at a time (the last chunk shorter),
    each chunk as its lines joined by newlines, numbered exactly as ``adapters.sources.iter_lines``
    numbers them (the pieces between newlines; a last empty piece is no line). The text is cut
    out of the read blocks, never split into one object per line."""
    for text, n_lines, _newlines in _iter_chunks(path):
        yield text, n_lines


def _iter_chunks(path: Path) -> Iterator[tuple[bytes, int, np.ndarray]]:
    """``_iter_chunk_text``'s chunks with the offsets of the newlines inside each text (its
    ``lines - 1`` line boundaries, which ``_decode_raw`` checks). Each read block is scanned for
    newlines once, by numpy: no second pass over the joined text, no ``bytes.count``."""
    per = LINES_PER_CHUNK
    blocks: list[bytes] = []  # joined once a chunk is complete: each byte copied a bounded number of times
    ends: list[np.ndarray] = []  # newline offsets of each pending block, from the start of the pending text
    size = newlines = 0
    for block in _iter_blocks(path):
        nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
        blocks.append(block)
        ends.append(nl + size)
        size += len(block)
        newlines += len(nl)
        if newlines >= per:
            buf = b"".join(blocks)
            at = np.concatenate(ends)
            begin = 0
            for j in range(newlines // per):
                cut = int(at[(j + 1) * per - 1])
                yield buf[begin:cut], per, at[j * per:(j + 1) * per - 1] - begin
                begin = cut + 1
            blocks, ends = [buf[begin:]], [at[newlines // per * per:] - begin]
            size, newlines = len(buf) - begin, newlines % per
    buf = b"".join(blocks)
    at = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if buf:
        if buf.endswith(b"\n"):
            yield buf[:-1], newlines, at[:-1]
        else:
            yield buf, newlines + 1, at


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
    """Nautilus raw values (ticks * 10**(16 - precision)) as little-endian int128 limbs, (n, 2)
    int64, for 0 <= ticks < 2**63: the product of 32-bit halves (scale < 2**54), exact in uint64."""
    scale = 10 ** (16 - precision)
    if len(ticks) == 0 or int(ticks.max()) <= _I64_MAX // scale:  # the usual price: one multiplication
        out = np.zeros((len(ticks), 2), dtype="<i8")
        out[:, 0] = ticks * scale
        return out
    out = np.empty((len(ticks), 2), dtype="<u8")
    t = ticks.astype(np.uint64)
    t_hi, t_lo = t >> np.uint64(32), t & np.uint64(0xFFFFFFFF)
    c_hi, c_lo = np.uint64(scale >> 32), np.uint64(scale & 0xFFFFFFFF)
    low = t_lo * c_lo  # < 2**64
    mid = t_hi * c_lo + t_lo * c_hi  # < 2**63 + 2**54
    lo = low + (mid << np.uint64(32))  # mod 2**64
    out[:, 0] = lo
    out[:, 1] = t_hi * c_hi + (mid >> np.uint64(32)) + (lo < low)  # carry of the low limb
    return out.view("<i8")


# ---------------------------------------------------------------------------------------------
# Fast path of a chunk: levels as raw JSON spans, parsed by numpy (no Python object per level)
# ---------------------------------------------------------------------------------------------


class _RawData(msgspec.Struct, gc=False):  # gc=False: no cycles possible, keeps the collector idle
    s: str
    b: msgspec.Raw  # the JSON text of the list of levels, validated as JSON by msgspec
    a: msgspec.Raw
    u: int


class _RawMsg(msgspec.Struct, gc=False):
    type: str
    ts: int
    data: _RawData


_raw_decode_lines = msgspec.json.Decoder(_RawMsg).decode_lines
_PAD = b" " * 32  # in front of the joined spans: the right-aligned digit windows never index below 0
_MAX_DIGITS = 18  # a string of at most 18 characters is < 10**18: its digits fit an int64
_POW10 = np.array([10**i for i in range(19)], dtype=np.int64)
_Q, _COMMA, _OPEN, _CLOSE, _DOT, _ZERO = 34, 44, 91, 93, 46, 48  # " , [ ] . 0
_OPEN_BRACE, _CLOSE_BRACE = 123, 125  # { }


def _decode_raw(text: bytes, n_lines: int, newlines: np.ndarray | None = None) -> list[_RawMsg] | None:
    """The chunk's messages with their levels left as JSON text, or None (the chunk then takes the
    general path, which decodes and reports exactly as before). One value per line as in
    ``ArrowBookFile._decode_chunk``: every line boundary is ``}\\n{`` (checked at ``newlines``, the
    offsets of the text's ``n_lines - 1`` newlines, when given; else by counting)."""
    if not (text[:1] == b"{" and text[-1:] == b"}"):
        return None
    if newlines is None:
        if text.count(b"}\n{") != n_lines - 1:
            return None
    else:  # the text starts with '{' and ends with '}': every newline has a byte on either side
        buf = np.frombuffer(text, dtype=np.uint8)
        if not (len(newlines) == n_lines - 1 and (buf[newlines - 1] == _CLOSE_BRACE).all()
                and (buf[newlines + 1] == _OPEN_BRACE).all()):
            return None
    try:
        msgs = _raw_decode_lines(text)
    except msgspec.DecodeError:
        return None
    return msgs if len(msgs) == n_lines else None


def _u64(byte: int) -> np.uint64:
    return np.uint64(int.from_bytes(bytes([byte]) * 8, "little"))


_ASCII_0, _ASCII_DOT, _LOW7, _HIGH_NIBBLES, _SIX = _u64(_ZERO), _u64(_DOT), _u64(0x7F), _u64(0xF0), _u64(6)
_PAD_KEEP = np.array([(2**64 - 1) ^ ((1 << (8 * k)) - 1) for k in range(9)], dtype=np.uint64)  # bytes >= k


def _eight_digits(v: np.ndarray) -> np.ndarray:
    """The values of eight ASCII digits per uint64 (little-endian load, first digit most
    significant) by pairwise multiply-shift (D. Lemire, "fast parsing of 8 digits")."""
    v = ((v & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
    v = ((v & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return (((v & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32)).astype(np.int64)


def _decimal_ticks(buf: np.ndarray, start: np.ndarray, end: np.ndarray, precision: int) -> np.ndarray | None:
    """Integer ticks (value * 10**precision) of the strings ``buf[start:end]``, or None unless every
    one is ASCII digits with at most one '.', a digit first, at most ``precision`` decimals and at
    most 16 characters: exactly what ``_ticks`` reads to the same value (its regex and decimal
    cast accept these; a string outside this subset takes the general path).

    Each string is read as one or two 8-byte words ending at its last character (the bytes in
    front of it replaced by '0'); the '.' found by an exact zero-byte test is read as a '0', so
    the digits give ``a`` = the number with the '.' as a zero digit: with ``f`` decimals the whole
    part is ``a // 10**(f+1)`` and the decimals ``a % 10**f``."""
    n = len(start)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    length = end - start
    width = int(length.max())
    if int(length.min()) < 1 or width > 16:
        return None
    words = 1 if width <= 8 else 2
    lead = 8 * words - length  # bytes in front of the string in its window
    # every 8 bytes of buf as a little-endian uint64 (unaligned, overlapping: stride 1 byte)
    at = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    a = np.zeros(n, dtype=np.int64) if words == 2 else None
    dot_at = None if words == 1 else np.full(n, 16, dtype=np.int64)  # byte of the '.' in the window (16: none)
    for w in range(words):
        v = at[end - 8 * (words - w)]
        keep = _PAD_KEEP[lead if words == 1 else np.clip(lead - 8 * w, 0, 8)]
        v = (v & keep) | (_ASCII_0 & ~keep)
        t = v ^ _ASCII_DOT  # a zero byte where the '.' is
        dots = ~(((t & _LOW7) + _LOW7) | t | _LOW7) >> np.uint64(7)  # 0x01 in each '.' byte, exactly
        low = dots - np.uint64(1)  # 0xff in the bytes before the first '.' (all of them: no '.')
        if (dots & low).any():
            return None  # two '.'
        v = v + (dots << np.uint64(1))  # '.' (0x2E) + 2 = '0'
        if not (((v & _HIGH_NIBBLES) == (_ASCII_0 & _HIGH_NIBBLES)).all()
                and (((v + _SIX) & _HIGH_NIBBLES) == (_ASCII_0 & _HIGH_NIBBLES)).all()):
            return None  # a byte other than a digit or '.'
        j = np.bitwise_count(low).astype(np.int64) >> 3  # the '.' byte, 8: none
        if words == 1:
            dot_at = j
        else:
            found = j < 8
            if (found & (dot_at < 16)).any():
                return None  # a '.' in both words
            dot_at = np.where(found, 8 * w + j, dot_at)
        a = _eight_digits(v) if a is None else a * 10**8 + _eight_digits(v)
    if (dot_at == lead).any():
        return None  # a '.' first
    first_dot, last_dot = int(dot_at.min()), int(dot_at.max())
    # the usual: every string has the same decimals (or none), which scalar arithmetic drops
    same_decimals = first_dot == last_dot
    if same_decimals:
        decimals = np.int64(0 if first_dot == 8 * words else 8 * words - 1 - first_dot)
    else:
        # no '.': as if the string ended with one ("5" reads as "5."): a gets its zero digit
        no_dot = dot_at == 8 * words
        a[no_dot] *= 10
        decimals = np.where(no_dot, 0, 8 * words - 1 - dot_at)
    if int(decimals.max()) > precision:
        return None
    if not same_decimals:
        frac = a % _POW10[decimals]
        digits = (a - frac) // 10 + frac  # the number without its '.' (a - frac ends in the '.' zero)
    elif first_dot == 8 * words:
        digits = a
    else:  # the '.' is a zero digit d places from the end: a - 9 * 10**d * (a // 10**(d + 1)) drops it
        digits = a - 9 * _POW10[decimals] * (a // _POW10[decimals + 1])
    if int(digits.max()) > _I64_MAX // 10**precision and (digits > _I64_MAX // _POW10[precision - decimals]).any():
        return None  # beyond 2**63 - 1 ticks: the general path says which
    return digits * _POW10[precision - decimals]


def _parse_levels(msgs: list[_RawMsg], pp: int, sp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(levels per list, price ticks, size ticks)`` of the chunk's level lists (bids then asks
    of each message, levels in order), or None unless every list is exactly
    ``[["<p>","<s>"],...]`` or ``[]`` without whitespace, each string within ``_decimal_ticks``.

    Every byte of a list is proven: the quotes (all of them, so none inside a string) and the
    bytes between them are checked to be the skeleton above, the strings' contents are digits."""
    raws = list(chain.from_iterable(map(_B_A, map(_DATA, msgs))))
    lens = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    joined = b"".join([_PAD, *raws])
    buf = np.frombuffer(joined, dtype=np.uint8)
    end = np.cumsum(lens) + len(_PAD)
    start = end - lens
    q = np.flatnonzero(buf == _Q)
    if len(q) % 4:
        return None
    q0, q1, q2, q3 = q.reshape(-1, 4).T  # '"price","size"' of each level
    last = np.searchsorted(q, end) // 4  # levels before each list's end (4 quotes a level)
    k = np.diff(last, prepend=0)  # levels per list
    first = last - k
    # lists: '[' ... ']', an empty one exactly '[]'
    if not ((buf[start] == _OPEN).all() and (buf[end - 1] == _CLOSE).all() and (lens[k == 0] == 2).all()):
        return None
    # each level '["p","s"]' and a ',' between the levels of a list
    if not ((buf[q0 - 1] == _OPEN).all() and (q2 == q1 + 2).all() and (buf[q1 + 1] == _COMMA).all()
            and (buf[q3 + 1] == _CLOSE).all()):
        return None
    nonempty = k > 0
    if not ((q0[first[nonempty]] == start[nonempty] + 2).all() and (q3[last[nonempty] - 1] == end[nonempty] - 3).all()):
        return None
    is_last = np.zeros(len(q0), dtype=bool)
    is_last[last[nonempty] - 1] = True
    inner = np.flatnonzero(~is_last)
    if not ((q0[inner + 1] == q3[inner] + 4).all() and (buf[q3[inner] + 2] == _COMMA).all()):
        return None
    px = _decimal_ticks(buf, q0 + 1, q1, pp)
    if px is None:
        return None
    sz = _decimal_ticks(buf, q2 + 1, q3, sp)
    if sz is None:
        return None
    return k, px, sz


_DATA, _TYPE, _TS = attrgetter("data"), attrgetter("type"), attrgetter("ts")
_U, _S, _B_A = attrgetter("u"), attrgetter("s"), attrgetter("b", "a")


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
        # book-invariant counts (catalog_store.BookInvariant) of this file
        self.rows = self.batches = self.snapshots = self.unchanged_size = self.repeated_level = 0

    def chunks(self) -> Iterator[Chunk]:
        first_line = 1
        for text, n_lines, newlines in _iter_chunks(self.path):
            yield self._chunk(text, n_lines, first_line, newlines)
            first_line += n_lines
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

    def _chunk(self, text: bytes, n_lines: int, first_line: int, newlines: np.ndarray | None = None) -> Chunk:
        nbytes = len(text) + 1  # the lines and their newlines
        # the fast path proves the levels' text clean without a Python object per level; anything
        # else (or a problem to report) takes the general path, which decodes the chunk again
        raw_msgs = _decode_raw(text, n_lines, newlines)
        parsed = None if raw_msgs is None else _parse_levels(raw_msgs, self.pp, self.sp)
        msgs = raw_msgs if parsed is not None else self._decode_chunk(text.split(b"\n"), first_line)
        datas = list(map(_DATA, msgs))  # attribute getters: the per-message loops run in C
        types = list(map(_TYPE, msgs))
        ts_ms = list(map(_TS, msgs))
        us = list(map(_U, datas))
        symbols = set(map(_S, datas))
        n_msg = len(types)
        if n_msg == 0:
            return Chunk(None, np.zeros(0, dtype=np.int64), 0, nbytes)
        if symbols != {self.symbol}:
            raise Fallback(f"lines of another symbol than {self.symbol}")
        n_snapshot = types.count("snapshot")
        if n_snapshot + types.count("delta") != n_msg:
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
        snap = u_a == 1
        if n_snapshot:
            snap |= np.fromiter(map("snapshot".__eq__, types), dtype=bool, count=n_msg)
        if self.last_u is None and not snap[0]:
            raise Fallback("a delta before the first snapshot")
        prev_u = np.concatenate(([0 if self.last_u is None else self.last_u], u_a[:-1])).astype(np.uint64)
        delta = ~snap
        if self.last_u is None:
            delta[0] = False  # the file's first message: no previous update id (checked above)
        if ((prev_u[delta] == _U64_MAX) | (u_a[delta] != prev_u[delta] + np.uint64(1))).any():
            raise Fallback("an update-id gap")

        if parsed is not None:
            k, px, sz = parsed
            nb_a, na_a = k[0::2], k[1::2]
        else:
            nb_a = np.fromiter((len(d.b) for d in datas), dtype=np.int64, count=n_msg)
            na_a = np.fromiter((len(d.a) for d in datas), dtype=np.int64, count=n_msg)
            levels = [lv for d in datas for side in (d.b, d.a) for lv in side]
            if levels:
                pairs = pa.array(levels, pa.list_(pa.string(), 2))
                px = _ticks(pc.list_element(pairs, 0), self.pp, "price")
                sz = _ticks(pc.list_element(pairs, 1), self.sp, "size")
            else:
                px = sz = np.zeros(0, dtype=np.int64)
        if len(px):
            if (px == 0).any():
                raise Fallback("a zero price")
            if px.max() > self.price_max_ticks or sz.max() > self.size_max_ticks:
                raise Fallback("a price or size above Nautilus' limit")
        side = np.repeat(np.tile(np.array([_BUY, _SELL], dtype=np.uint8), n_msg), np.column_stack((nb_a, na_a)).ravel())
        lvl_msg = np.repeat(np.arange(n_msg), nb_a + na_a)
        keep = ~(snap[lvl_msg] & (sz == 0))  # a zero level in a snapshot carries no information
        if not keep.all():
            side, lvl_msg, px, sz = side[keep], lvl_msg[keep], px[keep], sz[keep]
        kb = np.bincount(lvl_msg[side == _BUY], minlength=n_msg)
        ka = np.bincount(lvl_msg[side == _SELL], minlength=n_msg)

        self._book_pass(snap, side, lvl_msg, px, sz, first_line)

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
        price = np.zeros((n, 2), dtype="<i8")  # int128 limbs: Nautilus' FixedSizeBinary(16) bytes
        size = np.zeros((n, 2), dtype="<i8")
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

    def _book_pass(self, snap: np.ndarray, side: np.ndarray, lvl_msg: np.ndarray, px: np.ndarray, sz: np.ndarray,
                   first_line: int) -> None:
        """The chunk's book, vectorised: ``BookInvariant``'s counts, the crossed-book check after
        every message and the book carried to the next chunk.

        The carried book enters as rows before the chunk's first message. Rows sorted by (epoch =
        snapshots so far, side, price), stably (row order within a level): a row's previous size is
        the previous sorted row's of the same level, else 0 (``unchanged_size``; ``repeated_level``
        = a level twice in one message). A row of size > 0 is the level's size from its message
        until the level's next row (last row of a message wins: an empty span) or the next
        snapshot; the best bid after each message is the highest price over the spans covering
        it (``_cover_max``), the best ask the lowest; best bid >= best ask is a crossed book."""
        n_msg = len(snap)
        bids, asks = self.bids, self.asks
        n_carried = len(bids) + len(asks)
        t = np.concatenate((np.fromiter(bids, np.int64, len(bids)), np.fromiter(asks, np.int64, len(asks)), px))
        z = np.concatenate((np.fromiter(bids.values(), np.int64, len(bids)),
                            np.fromiter(asks.values(), np.int64, len(asks)), sz))
        sd = np.concatenate((np.full(len(bids), _BUY, np.uint8), np.full(len(asks), _SELL, np.uint8), side))
        epoch_of_msg = np.cumsum(snap)
        e = np.concatenate((np.zeros(n_carried, np.int64), epoch_of_msg[lvl_msg]))
        mm = np.concatenate((np.full(n_carried, -1, np.int64), lvl_msg))  # message of the row, -1: carried
        n = len(t)
        if n == 0:
            return
        # one sort key (e is non-decreasing): 16 bits sort by radix, the usual case (a book spans
        # fewer than 2**15 ticks); all sorts are stable: a level's rows stay in row order
        t_lo = int(t.min())
        span = int(t.max()) - t_lo + 1
        n_keys = (int(e[-1]) + 1) * 2 * span
        if n_keys <= 1 << 16:
            order = np.argsort(((e * 2 + (sd - 1)) * span + (t - t_lo)).astype(np.uint16), kind="stable")
        elif n_keys < 1 << 62:
            order = np.argsort((e * 2 + (sd - 1)) * span + (t - t_lo), kind="stable")
        else:
            order = np.lexsort((t, sd, e))
        e, sd, t, z, mm = e[order], sd[order], t[order], z[order], mm[order]
        same = np.zeros(n, dtype=bool)  # the previous sorted row is of the same level
        same[1:] = (e[1:] == e[:-1]) & (sd[1:] == sd[:-1]) & (t[1:] == t[:-1])

        prev = np.zeros(n, dtype=np.int64)
        prev[1:] = z[:-1]
        prev[~same] = 0
        checked = ~np.concatenate(([True], snap))[mm + 1]  # rows of delta messages
        self.unchanged_size += int((checked & (z == prev)).sum())
        self.repeated_level += int((checked & same & np.concatenate(([False], mm[1:] == mm[:-1]))).sum())

        epoch_end = np.append(np.flatnonzero(snap), n_msg)  # epoch k lasts until snapshot k+1
        stop = epoch_end[e]
        stop[:-1] = np.where(same[1:], mm[1:], stop[:-1])
        begin = np.maximum(mm, 0)
        live = (z > 0) & (stop > begin)
        b, a = live & (sd == _BUY), live & (sd == _SELL)
        best_bid = _cover_max(begin[b], stop[b], t[b], n_msg, -1)
        best_ask = -_cover_max(begin[a], stop[a], -t[a], n_msg, -_NO_ASK)
        crossed = np.flatnonzero(best_bid >= best_ask)
        if len(crossed):
            raise Fallback(f"crossed book (message {int(crossed[0]) + 1} of the chunk at line {first_line})")

        final = np.ones(n, dtype=bool)  # the last row of each level in the last epoch, live
        final[:-1] = ~same[1:]
        final &= (e == epoch_of_msg[-1]) & (z > 0)
        fb, fa = final & (sd == _BUY), final & (sd == _SELL)
        self.bids = dict(zip(t[fb].tolist(), z[fb].tolist(), strict=True))
        self.asks = dict(zip(t[fa].tolist(), z[fa].tolist(), strict=True))


def _cover_max(begin: np.ndarray, stop: np.ndarray, value: np.ndarray, n: int, empty: int) -> np.ndarray:
    """For each of ``n`` positions the largest ``value`` of the spans ``[begin, stop)`` (non-empty)
    covering it, else ``empty``: a span of length L is the union of its two aligned-length windows
    of 2**floor(log2 L) (at its start and at its end), recorded in level floor(log2 L) of a table;
    a window of level j is then pushed down into its two halves of level j - 1 (a reversed
    sparse table: O(spans + n log n), no per-span loop)."""
    if len(begin) == 0:
        return np.full(n, empty, dtype=np.int64)
    level = np.frexp((stop - begin).astype(np.float64))[1] - 1  # floor(log2 L), exact for L < 2**53
    levels = int(level.max()) + 1
    table = np.full(levels * n, empty, dtype=np.int64)
    np.maximum.at(table, level * n + begin, value)
    np.maximum.at(table, level * n + stop - np.left_shift(1, level), value)
    table = table.reshape(levels, n)
    for j in range(levels - 1, 0, -1):
        half = 1 << (j - 1)
        np.maximum(table[j - 1], table[j], out=table[j - 1])
        np.maximum(table[j - 1, half:], table[j, :n - half], out=table[j - 1, half:])
    return table[0]


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
