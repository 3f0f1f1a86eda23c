"""Bybit public trades -> Nautilus ``TradeTick``.

Two sources share one converter: items of a ``publicTrade.{SYMBOL}`` WebSocket message
(``T`` ms, ``S`` taker side, ``v`` size, ``p`` price, ``i`` id, optional ``RPI``) and rows of
Bybit's historical ``SYMBOLYYYY-MM-DD.csv.gz`` files (timestamp in seconds with a fraction).

RPI (retail price improvement) trades keep their flag in the trade id: Nautilus trade ids
hold at most 36 characters, so an RPI trade's id is ``RPI-`` + its match id without hyphens
(32 hex characters). ``is_rpi_trade_id`` recognises them.
"""

from __future__ import annotations

from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.instruments import Instrument

from adapters import problems as P
from adapters.bybit_book import NS_PER_MS, _POW10, _RAW_DIGITS, check_ts_ns, price_raw, size_raw
from adapters.problems import ProblemLog

RPI_PREFIX = "RPI-"
_SIDES = {"Buy": AggressorSide.BUYER, "Sell": AggressorSide.SELLER}
TRADE_CSV_COLUMNS = (
    "timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID",
    "grossValue", "homeNotional", "foreignNotional",
)


def rpi_trade_id(match_id: str) -> str:
    """Trade id that marks an RPI trade while fitting Nautilus' 36-character limit."""
    return RPI_PREFIX + match_id.replace("-", "")[:32]


def is_rpi_trade_id(trade_id: str) -> bool:
    return trade_id.startswith(RPI_PREFIX)


def seconds_str_to_ns(text: str) -> int:
    """Exact ns since epoch of a seconds string such as ``1733011200.1234``."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or not text.isascii():
        raise ValueError(f"not a timestamp in seconds: {text!r}")
    frac = (frac + "000000000")[:9]
    return check_ts_ns(int(whole) * 1_000_000_000 + int(frac))


class TradeStream:
    """Stateful converter for one symbol's trades in one file (monotonic ``ts_init``)."""

    __slots__ = ("_iid", "_last_ts_event", "_last_ts_init", "_log", "_path", "_pp", "_sp", "trades_out", "rpi_out")

    def __init__(self, instrument: Instrument, log: ProblemLog, path: str) -> None:
        self._iid = instrument.id
        self._pp = instrument.price_precision
        self._sp = instrument.size_precision
        self._log = log
        self._path = path
        self._last_ts_event = 0
        self._last_ts_init = -1
        self.trades_out = 0
        self.rpi_out = 0

    def make(self, ts_event: int, ts_init: int, side: str, size: str, price: str, match_id: str, rpi: bool, line: int) -> TradeTick | None:
        """One trade, or ``None`` (logged) when a field is invalid."""
        try:
            aggressor = _SIDES[side]
            check_ts_ns(ts_event, "trade time")
            check_ts_ns(ts_init, "receive time")
            px_raw = price_raw(price)
            sz_raw = size_raw(size)
            if px_raw == 0 or sz_raw == 0:
                raise ValueError(f"zero price or size ({price!r}, {size!r})")
            if px_raw % _POW10[_RAW_DIGITS - self._pp] or sz_raw % _POW10[_RAW_DIGITS - self._sp]:
                raise ValueError(f"trade {price}/{size} finer than the instrument's tick/step")
            trade_id = TradeId(rpi_trade_id(match_id) if rpi else match_id)
        except (KeyError, TypeError):  # TypeError: an unhashable side (a list, a dict)
            self._log.add(self._path, line, P.BAD_NUMBER, f"unknown side {side!r}")
            return None
        except ValueError as e:
            self._log.add(self._path, line, P.BAD_NUMBER, str(e))
            return None
        if ts_event < self._last_ts_event:
            self._log.add(self._path, line, P.TS_BACKWARDS, f"trade time {ts_event} < previous {self._last_ts_event}")
        else:
            self._last_ts_event = ts_event
        # Strictly increasing ts_init: catalog queries have no stable tie-break (see bybit_book).
        if ts_init <= self._last_ts_init:
            ts_init = self._last_ts_init + 1
        self._last_ts_init = ts_init
        self.trades_out += 1
        self.rpi_out += rpi
        return TradeTick.from_raw(self._iid, px_raw, self._pp, sz_raw, self._sp, aggressor, trade_id, ts_event, ts_init)

    def on_ws_message(self, data: list, local_ts_ns: int | None, line: int) -> list[TradeTick]:
        """Trades of one ``publicTrade`` message; ``ts_init`` is the receive time when known."""
        out: list[TradeTick] = []
        for item in data:
            try:
                ts_event = int(item["T"]) * NS_PER_MS
                fields = (item["S"], item["v"], item["p"], str(item["i"]), bool(item.get("RPI", False)))
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                self._log.add(self._path, line, P.MALFORMED_LINE, f"trade item lacks a field: {e}")
                continue
            tick = self.make(ts_event, local_ts_ns if local_ts_ns is not None else ts_event, *fields, line)
            if tick is not None:
                out.append(tick)
        return out
