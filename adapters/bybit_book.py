"""Bybit v5 order-book messages -> Nautilus ``OrderBookDelta`` rows, validated.

One ``BookStream`` per symbol and file. It turns each ``orderbook.{depth}.{SYMBOL}`` message
(historical ``obN.data`` line or recorded WebSocket frame, same shape) into the deltas of one
exchange message: a snapshot is a CLEAR plus adds, all flagged ``F_SNAPSHOT``; the last delta
of every message carries ``F_LAST``, so a consumer can apply a message as one batch.

Validation policy (see docs/data.md):
- ``u`` must step by one within a stream; a snapshot, or a message with ``u == 1`` (Bybit's
  service-restart signal), resets it.
- A gap, a crossed book or a bad number invalidates the book: a CLEAR (``F_LAST``) is emitted so
  a replay never trades against a book known to be wrong, and deltas are dropped (counted) until
  the next snapshot rebuilds it.
- Deltas before the first snapshot are dropped and counted.
- Numbers are checked before Nautilus sees them (a Rust panic would abort the whole import):
  prices and sizes must be decimal strings within Nautilus' limits (``PRICE_RAW_MAX``,
  ``QUANTITY_RAW_MAX``, read from the installed Nautilus), timestamps within 0 .. 2**63 - 1 ns,
  ``u`` within Nautilus' unsigned 64-bit sequence. Anything else is a ``bad_number``.
- ``ts_event`` is the exchange's ``ts``. ``ts_init`` is the receive time (or ``ts`` when the
  file has none), made strictly increasing row by row: delta k of a message gets
  ``ts_init + k`` ns (and never less than the previous row + 1 ns). Nautilus' catalog queries
  sort by ``ts_init`` without a stable tie-break, and a time-filtered query was measured to
  reorder deltas sharing a timestamp (fills that never existed); unique keys make any query
  return the message order. A receive time going backwards is counted (``ts_backwards``).
"""

from __future__ import annotations

from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import OrderBookDelta, OrderBookDeltas
from nautilus_trader.model.enums import BookAction, BookType, OrderSide, RecordFlag
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import FIXED_PRECISION, PRICE_MAX, QUANTITY_MAX

from adapters import problems as P
from adapters.problems import ProblemLog

F_LAST = int(RecordFlag.F_LAST)
F_SNAPSHOT = int(RecordFlag.F_SNAPSHOT)
_RAW_DIGITS = 16  # Nautilus high-precision fixed scalar: raw = value * 10**16
assert FIXED_PRECISION == _RAW_DIGITS, "mmbot needs Nautilus' high-precision (128-bit) build"
_POW10 = [10**i for i in range(_RAW_DIGITS + 1)]
NS_PER_MS = 1_000_000
# Nautilus' limits: a larger raw value makes Price/Quantity panic (the process aborts).
PRICE_RAW_MAX = int(PRICE_MAX) * 10**_RAW_DIGITS
QUANTITY_RAW_MAX = int(QUANTITY_MAX) * 10**_RAW_DIGITS
MAX_TS_NS = 2**63 - 1  # timestamps: Nautilus' u64, Arrow/pandas int64
MAX_SEQUENCE = 2**64 - 1  # OrderBookDelta.sequence (u64)


def decimal_str_to_raw(text: str) -> int:
    """Exact Nautilus raw integer (value * 1e16) of a non-negative decimal string.

    Raises ``ValueError`` for anything else (not a string, negative, exponent, empty, more than
    16 decimals).
    """
    if not isinstance(text, str):
        raise ValueError(f"not a decimal string: {text!r} ({type(text).__name__})")
    whole, _, frac = text.partition(".")
    # isascii: str.isdigit() and int() also take other scripts' digits ('1.95' in Arabic-Indic)
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > _RAW_DIGITS or not text.isascii():
        raise ValueError(f"not a non-negative decimal: {text!r}")
    return int(whole + frac) * _POW10[_RAW_DIGITS - len(frac)]


def price_raw(text: str) -> int:
    """``decimal_str_to_raw`` of a price within Nautilus' ``PRICE_MAX``."""
    raw = decimal_str_to_raw(text)
    if raw > PRICE_RAW_MAX:
        raise ValueError(f"price {text} above Nautilus' limit {int(PRICE_MAX)}")
    return raw


def size_raw(text: str) -> int:
    """``decimal_str_to_raw`` of a size within Nautilus' ``QUANTITY_MAX``."""
    raw = decimal_str_to_raw(text)
    if raw > QUANTITY_RAW_MAX:
        raise ValueError(f"size {text} above Nautilus' limit {int(QUANTITY_MAX)}")
    return raw


def json_int(value: object, what: str) -> int:
    """An integer field of a message (``ts``, ``u``): a JSON integer, an integral float or a string of
    ASCII digits; ``ValueError`` otherwise. ``int()`` alone truncates 1234.7, reads ``true`` as 1 (a
    ``u`` of 1 is Bybit's restart signal) and takes '1_234' or other scripts' digits."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()) or (
            isinstance(value, str) and not (value.isdigit() and value.isascii())):
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def check_ts_ns(ts_ns: int, what: str = "timestamp") -> int:
    """``ts_ns`` if it is an int within 0 .. 2**63 - 1 ns, else ``ValueError``."""
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int) or not 0 <= ts_ns <= MAX_TS_NS:
        raise ValueError(f"{what} {ts_ns!r} out of range (ns since epoch, 0 .. 2**63-1)")
    return ts_ns


class BookStream:
    """Stateful converter for one symbol's order-book stream in one file."""

    __slots__ = (
        "_book", "_iid", "_last_raw_ts_init", "_last_ts_event", "_last_ts_init", "_last_u", "_log", "_path",
        "_price_prec", "_size_prec", "_valid", "_seen_snapshot", "deltas_out", "messages_ok",
    )

    def __init__(self, instrument: Instrument, log: ProblemLog, path: str) -> None:
        self._iid = instrument.id
        self._price_prec = instrument.price_precision
        self._size_prec = instrument.size_precision
        self._log = log
        self._path = path
        self._book = OrderBook(instrument.id, BookType.L2_MBP)
        self._valid = False
        self._seen_snapshot = False
        self._last_u: int | None = None
        self._last_ts_event = 0
        self._last_ts_init = -1  # last ts_init emitted (rows are strictly increasing)
        self._last_raw_ts_init = 0
        self.deltas_out = 0
        self.messages_ok = 0

    def on_message(self, is_snapshot: bool, ts_ms: int, data: dict, local_ts_ns: int | None, line: int) -> list[OrderBookDelta]:
        """Deltas for one message (possibly empty). Problems are logged, never raised, unless strict."""
        try:
            ts_event = check_ts_ns(ts_ms * NS_PER_MS, "ts")
            if local_ts_ns is not None:
                check_ts_ns(local_ts_ns, "local_ts_ns")
        except ValueError as e:  # before _check_ts: an absurd time must not become the stream's clock
            self._log.add(self._path, line, P.BAD_NUMBER, str(e))
            return self._invalidate(self._last_ts_event, self._last_ts_init + 1, u=self._last_u)
        ts_init = self._check_ts(ts_event, local_ts_ns if local_ts_ns is not None else ts_event, line)
        try:
            u = json_int(data["u"], "u")
            bids, asks = data["b"], data["a"]
        except (KeyError, TypeError, ValueError) as e:
            self._log.add(self._path, line, P.MALFORMED_LINE, f"order-book data: u/b/a missing or not of their type: {e}")
            return self._invalidate(ts_event, ts_init, u=None)
        if not 0 <= u <= MAX_SEQUENCE:
            self._log.add(self._path, line, P.BAD_NUMBER, f"update id u={u} out of range (0 .. 2**64-1)")
            return self._invalidate(ts_event, ts_init, u=None)
        if u == 1:
            is_snapshot = True  # Bybit: u == 1 means the service restarted; treat as a snapshot.
        if not is_snapshot:
            if not self._seen_snapshot:
                self._log.add(self._path, line, P.DELTA_BEFORE_SNAPSHOT, f"u={u}")
                return []
            if not self._valid:
                self._log.add(self._path, line, P.DROPPED_IN_GAP, f"u={u}")
                self._last_u = u
                return []
            if self._last_u is not None and u != self._last_u + 1:
                self._log.add(self._path, line, P.UPDATE_ID_GAP, f"u={u} after u={self._last_u}")
                return self._invalidate(ts_event, ts_init, u)
        try:
            deltas = self._build(is_snapshot, bids, asks, u, ts_event, ts_init)
        except (ValueError, TypeError, IndexError) as e:
            self._log.add(self._path, line, P.BAD_NUMBER, str(e))
            return self._invalidate(ts_event, ts_init, u)
        self._last_u = u
        if not deltas:
            return deltas
        self._book.apply_deltas(OrderBookDeltas(self._iid, deltas))
        bid, ask = self._book.best_bid_price(), self._book.best_ask_price()
        if bid is not None and ask is not None and bid >= ask:
            self._log.add(self._path, line, P.CROSSED_BOOK, f"best bid {bid} >= best ask {ask} after u={u}")
            return self._invalidate(ts_event, ts_init, u)
        if is_snapshot:
            self._seen_snapshot = True
            self._valid = True
        self.messages_ok += 1
        self.deltas_out += len(deltas)
        return deltas

    def _check_ts(self, ts_event: int, ts_init: int, line: int) -> int:
        if ts_event < self._last_ts_event:
            self._log.add(self._path, line, P.TS_BACKWARDS, f"ts {ts_event} < previous {self._last_ts_event}")
        else:
            self._last_ts_event = ts_event
        if ts_init < self._last_raw_ts_init:
            if ts_event >= self._last_ts_event and ts_init != ts_event:
                self._log.add(self._path, line, P.TS_BACKWARDS, f"local_ts_ns {ts_init} < previous {self._last_raw_ts_init}")
        else:
            self._last_raw_ts_init = ts_init
        return max(ts_init, self._last_ts_init + 1)

    def _invalidate(self, ts_event: int, ts_init: int, u: int | None) -> list[OrderBookDelta]:
        self._last_u = u
        was_valid = self._valid
        self._valid = False
        self._book.clear(u or 0, ts_event)
        if not was_valid:
            return []
        self.deltas_out += 1
        self._last_ts_init = ts_init
        return [OrderBookDelta(self._iid, BookAction.CLEAR, None, F_LAST, u or 0, ts_event, ts_init)]

    def _build(self, is_snapshot: bool, bids: list, asks: list, u: int, ts_event: int, ts_init: int) -> list[OrderBookDelta]:
        iid, pp, sp = self._iid, self._price_prec, self._size_prec
        out: list[OrderBookDelta] = []
        flags = F_SNAPSHOT if is_snapshot else 0
        px_unit, sz_unit = _POW10[_RAW_DIGITS - pp], _POW10[_RAW_DIGITS - sp]
        if is_snapshot:
            out.append(OrderBookDelta(iid, BookAction.CLEAR, None, flags, u, ts_event, ts_init))
            ts_init += 1
        for side, levels in ((OrderSide.BUY, bids), (OrderSide.SELL, asks)):
            for px_text, sz_text in levels:
                px_raw = price_raw(px_text)
                sz_raw = size_raw(sz_text)
                if px_raw == 0:
                    raise ValueError(f"zero price {px_text!r}")
                if px_raw % px_unit or sz_raw % sz_unit:
                    raise ValueError(f"level {px_text}/{sz_text} finer than the instrument's tick/step")
                if sz_raw == 0:
                    if is_snapshot:
                        continue  # a zero level in a snapshot carries no information
                    action = BookAction.DELETE
                else:
                    action = BookAction.ADD if is_snapshot else BookAction.UPDATE
                out.append(
                    OrderBookDelta.from_raw(iid, action, side, px_raw, pp, sz_raw, sp, 0, flags, u, ts_event, ts_init),
                )
                ts_init += 1
        if out:
            last = out[-1]
            out[-1] = _with_flags(last, last.flags | F_LAST)
            self._last_ts_init = last.ts_init
        return out


def _with_flags(d: OrderBookDelta, flags: int) -> OrderBookDelta:
    order = d.order
    if order is None:
        return OrderBookDelta(d.instrument_id, d.action, None, flags, d.sequence, d.ts_event, d.ts_init)
    return OrderBookDelta(d.instrument_id, d.action, order, flags, d.sequence, d.ts_event, d.ts_init)
