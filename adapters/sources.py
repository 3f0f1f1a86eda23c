"""Reading Bybit files and mmbot recordings into batches of Nautilus data.

Four input formats (docs/data.md):
- Bybit historical order book ``YYYY-MM-DD_SYMBOL_ob{50,200,500}.data`` (plain or ``.zip``).
- Bybit historical trades ``SYMBOLYYYY-MM-DD.csv.gz`` (or plain ``.csv``).
- mmbot recordings ``*.jsonl`` / ``*.jsonl.gz``: raw public WebSocket frames plus ``local_ts_ns``.
- Bybit funding-rate history ``SYMBOL_funding[_ANY].json`` (adapters/bybit_funding.py).

``iter_batches`` yields ``(kind, instrument, items)`` with kind ``"deltas"``, ``"trades"`` or
``"funding"``; items are in ``ts_init`` order within a kind and instrument.
"""

from __future__ import annotations

import csv
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from adapters import problems as P
from adapters.bybit_book import NS_PER_MS, BookStream, json_int
from adapters.bybit_funding import FUNDING_FILE_RE, iter_funding_file
from adapters.bybit_trades import TRADE_CSV_COLUMNS, TradeStream, seconds_str_to_ns
from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
from adapters.problems import ProblemLog

OB_FILE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_([A-Z0-9]+)_ob(\d+)\.data(\.zip)?$")
TRADES_FILE_RE = re.compile(r"^([A-Z0-9]+?)(\d{4}-\d{2}-\d{2})\.csv(\.gz)?$")
RECORDING_RE = re.compile(r"\.jsonl(\.gz)?$")

_decoder = msgspec.json.Decoder()
NS_PER_DAY = 86_400_000_000_000
# A line may sit this far outside the day its file is named for before it is a date_mismatch
# (messages straddling midnight).
DATE_SLACK_NS = 60_000_000_000


class NameCheck:
    """What a Bybit daily file's name promises (symbol, UTC day) against what its lines hold.

    Lines of another day are counted (``date_mismatch``, kept: the exchange time is what the
    catalog uses); a file none of whose lines is of the named symbol, or of the named day, is
    mislabelled as a whole and rejected (``name_mismatch``): importing it would leave a silent
    gap where the name promised data."""

    def __init__(self, path: Path, log: ProblemLog, symbol: str, day: str) -> None:
        import datetime as _dt

        self.spath, self.log, self.symbol, self.day = str(path), log, symbol, day
        start = _dt.datetime.fromisoformat(day).replace(tzinfo=_dt.UTC)
        self.lo_ns = int(start.timestamp()) * 1_000_000_000 - DATE_SLACK_NS
        self.hi_ns = self.lo_ns + NS_PER_DAY + 2 * DATE_SLACK_NS
        self.in_day = self.other_day = self.other_symbol = 0
        self.first_other_symbol = ""

    def time(self, ts_ns: int, line: int) -> None:
        if self.lo_ns <= ts_ns < self.hi_ns:
            self.in_day += 1
            return
        self.other_day += 1
        import datetime as _dt

        when = _dt.datetime.fromtimestamp(ts_ns // 1_000_000 / 1e3, tz=_dt.UTC).isoformat(timespec="milliseconds")
        self.log.add(self.spath, line, P.DATE_MISMATCH, f"exchange time {when} is not on {self.day}")

    def symbol_seen(self, symbol: str) -> None:
        if symbol != self.symbol:
            self.other_symbol += 1
            self.first_other_symbol = self.first_other_symbol or symbol

    def finish(self, kept: int) -> None:
        """After the file: reject it when nothing in it matches its name (``kept`` = lines of the
        named symbol that were used)."""
        if kept == 0 and self.other_symbol:
            self.log.add(self.spath, 0, P.NAME_MISMATCH, f"the file name says {self.symbol} but its lines are "
                                                         f"{self.first_other_symbol} ({self.other_symbol} line(s))")
        if self.other_day and not self.in_day:
            self.log.add(self.spath, 0, P.NAME_MISMATCH, f"the file name says {self.day} but none of its "
                                                         f"{self.other_day} line(s) is on that day")


class UnknownFormat(ValueError):
    pass


def classify(path: Path) -> tuple[str, str | None]:
    """``("orderbook"|"trades"|"recording"|"funding", symbol or None)`` from the file name."""
    name = path.name
    if m := OB_FILE_RE.match(name):
        return "orderbook", m.group(2)
    if m := TRADES_FILE_RE.match(name):
        return "trades", m.group(1)
    if RECORDING_RE.search(name):
        return "recording", None
    if m := FUNDING_FILE_RE.match(name):
        return "funding", m.group(1)
    raise UnknownFormat(
        f"{path}: unknown file name; expected YYYY-MM-DD_SYMBOL_obN.data[.zip], "
        "SYMBOLYYYY-MM-DD.csv[.gz], *.jsonl[.gz] or SYMBOL_funding[_ANY].json",
    )


def iter_lines(path: Path, log: ProblemLog) -> Iterator[tuple[int, bytes]]:
    """``(line_no, raw_line)`` from a plain, ``.gz`` or single-member ``.zip`` file.

    A truncated gzip stream (a recorder killed mid-write) ends the file with a reported
    ``malformed_line`` instead of failing the import.
    """
    spath = str(path)
    stats = log.file(spath)
    try:
        if path.suffix == ".zip":
            try:
                zf = zipfile.ZipFile(path)
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    log.add(spath, 0, P.BAD_ARCHIVE, f"zip holds {len(names)} files, expected exactly one")
                raw = zf.open(names[0])
            # RuntimeError: an encrypted member; NotImplementedError (a RuntimeError): a compression
            # method zipfile lacks (deflate64...)
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as e:
                log.add(spath, 0, P.BAD_ARCHIVE, f"not a readable zip file: {e}")
                return
        elif path.suffix == ".gz":
            yield from _iter_gzip_lines(path, log)
            return
        else:
            raw = open(path, "rb")
    except OSError as e:
        log.add(spath, 0, P.UNREADABLE_FILE, e.strerror or str(e))
        return
    line_no = 0
    with raw:
        stream = io.BufferedReader(raw, 1 << 20) if not isinstance(raw, io.BufferedReader) else raw
        try:
            for line in stream:
                line_no += 1
                stats.lines = line_no
                yield line_no, line
        except (EOFError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile, lzma.LZMAError) as e:  # LZMA: a zip member
            if line_no == 0 and not isinstance(e, EOFError):
                log.add(spath, 0, P.BAD_ARCHIVE, f"not a readable compressed file: {e}")
            else:
                log.add(spath, line_no + 1, P.MALFORMED_LINE, f"compressed stream truncated: {e}")
        except OSError as e:
            log.add(spath, line_no + 1, P.UNREADABLE_FILE, e.strerror or str(e))
    if line_no == 0:
        log.add(spath, 0, P.EMPTY_FILE, "no lines")


def _iter_gzip_lines(path: Path, log: ProblemLog) -> Iterator[tuple[int, bytes]]:
    """Lines of a (multi-member) gzip file, keeping everything before a truncation.

    ``gzip.GzipFile`` discards the data decoded in the read that hits a truncated end, so a
    recorder killed mid-write would lose its last buffer; a streaming ``zlib`` decoder keeps it.
    """
    spath = str(path)
    stats = log.file(spath)
    line_no = 0
    pending = b""
    fed = False
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        fh = open(path, "rb")
    except OSError as e:
        log.add(spath, 0, P.UNREADABLE_FILE, e.strerror or str(e))
        return
    with fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            while chunk:
                fed = True
                try:
                    text = dec.decompress(chunk)
                except zlib.error as e:
                    if line_no == 0 and not pending:
                        log.add(spath, 0, P.BAD_ARCHIVE, f"not a readable gzip file: {e}")
                    log.add(spath, line_no + 1, P.MALFORMED_LINE, f"corrupt gzip data: {e}")
                    return
                chunk = b""
                if dec.eof:  # next gzip member (the recorder writes one per flush)
                    chunk = dec.unused_data
                    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    fed = False
                pending += text
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    line_no += 1
                    stats.lines = line_no
                    yield line_no, line
    incomplete = fed  # bytes went into a gzip member that never reached its end
    if pending:
        if incomplete and not _is_complete_json(pending):
            log.add(spath, line_no + 1, P.MALFORMED_LINE, "truncated last line (compressed stream cut off)")
        else:
            line_no += 1
            stats.lines = line_no
            yield line_no, pending
    elif incomplete:
        log.add(spath, line_no + 1, P.MALFORMED_LINE, "compressed stream cut off after the last complete line")
    if line_no == 0 and not pending and not incomplete:
        log.add(spath, 0, P.EMPTY_FILE, "no lines")


def _is_complete_json(line: bytes) -> bool:
    try:
        _decoder.decode(line)
        return True
    except msgspec.DecodeError:
        return False


def _instrument(registry: InstrumentRegistry, symbol: str, log: ProblemLog, path: str, line: int):
    try:
        return registry.get(symbol)
    except InstrumentDefinitionError as e:
        log.add(path, line, P.UNKNOWN_INSTRUMENT, str(e))
        raise  # unreachable: UNKNOWN_INSTRUMENT is fatal


def iter_json_messages(path: Path, log: ProblemLog) -> Iterator[tuple[int, dict]]:
    spath = str(path)
    for line_no, line in iter_lines(path, log):
        if not line.strip():
            continue
        try:
            msg = _decoder.decode(line)
        except msgspec.DecodeError as e:
            log.add(spath, line_no, P.MALFORMED_LINE, f"invalid JSON: {e}")
            continue
        if not isinstance(msg, dict):
            log.add(spath, line_no, P.MALFORMED_LINE, "a line must be a JSON object")
            continue
        yield line_no, msg


class _OneSymbolFile:
    """Streams of one file; a second symbol in the file is a problem (its lines are dropped)."""

    def __init__(self, path: Path, registry: InstrumentRegistry, log: ProblemLog, symbol: str | None) -> None:
        self.path, self.spath, self.registry, self.log = path, str(path), registry, log
        self.symbol = symbol
        self.instrument = None
        self.book: BookStream | None = None
        self.trades: TradeStream | None = None

    def accept(self, symbol: str, line: int) -> bool:
        if self.symbol is None:
            self.symbol = symbol
        if symbol != self.symbol:
            self.log.add(self.spath, line, P.MIXED_SYMBOL, f"{symbol} in a file of {self.symbol}")
            return False
        if self.instrument is None:
            self.instrument = _instrument(self.registry, symbol, self.log, self.spath, line)
            self.book = BookStream(self.instrument, self.log, self.spath)
            self.trades = TradeStream(self.instrument, self.log, self.spath)
        return True


def _book_message(f: _OneSymbolFile, msg: dict, line: int, local_ts_ns: int | None, name: NameCheck | None = None):
    try:
        kind = msg["type"]
        ts_ms = json_int(msg["ts"], "ts")
        data = msg["data"]
        symbol = data["s"]
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        f.log.add(f.spath, line, P.MALFORMED_LINE, f"order-book message: a field missing or not of its type: {e}")
        return None
    if kind not in ("snapshot", "delta"):
        f.log.add(f.spath, line, P.MALFORMED_LINE, f"unknown order-book message type {kind!r}")
        return None
    if name is not None:
        name.symbol_seen(symbol)
    if not f.accept(symbol, line):
        return None
    if name is not None and 0 <= ts_ms < 2**63 // NS_PER_MS:  # an absurd time is the stream's bad_number
        name.time(ts_ms * NS_PER_MS, line)
    return f.book.on_message(kind == "snapshot", ts_ms, data, local_ts_ns, line)


def iter_orderbook_file(path: Path, registry: InstrumentRegistry, log: ProblemLog, symbol: str,
                        day: str | None = None) -> Iterator[tuple[str, object, list]]:
    f = _OneSymbolFile(path, registry, log, symbol)
    stats = log.file(f.spath)
    name = NameCheck(path, log, symbol, day) if day else None
    for line_no, msg in iter_json_messages(path, log):
        deltas = _book_message(f, msg, line_no, None, name)
        if deltas is not None:
            stats.messages += 1
        if deltas:
            yield "deltas", f.instrument, deltas
    if name is not None:
        name.finish(stats.messages)


def iter_recording_file(path: Path, registry: InstrumentRegistry, log: ProblemLog) -> Iterator[tuple[str, object, list]]:
    f = _OneSymbolFile(path, registry, log, None)
    stats = log.file(f.spath)
    for line_no, msg in iter_json_messages(path, log):
        topic = msg.get("topic")
        local_ts = msg.get("local_ts_ns")
        if topic is None:
            log.skip(f.spath, "control_message")  # subscribe acks, pongs: not market data
            continue
        if not isinstance(local_ts, int):
            log.add(f.spath, line_no, P.MALFORMED_LINE, "recording line lacks an integer local_ts_ns")
            continue
        if topic.startswith("orderbook."):
            deltas = _book_message(f, msg, line_no, local_ts)
            if deltas is not None:
                stats.messages += 1
            if deltas:
                yield "deltas", f.instrument, deltas
        elif topic.startswith("publicTrade."):
            data = msg.get("data")
            if not isinstance(data, list) or not data:
                log.add(f.spath, line_no, P.MALFORMED_LINE, "publicTrade message without a data list")
                continue
            if not f.accept(topic.partition(".")[2], line_no):
                continue
            stats.messages += 1
            trades = f.trades.on_ws_message(data, local_ts, line_no)
            if trades:
                yield "trades", f.instrument, trades
        else:
            log.add(f.spath, line_no, P.UNKNOWN_TOPIC, topic)


def iter_trades_csv(path: Path, registry: InstrumentRegistry, log: ProblemLog, symbol: str,
                    day: str | None = None) -> Iterator[tuple[str, object, list]]:
    """Bybit's daily trade CSV; rows are sorted by time (stable) since files may be newest-first.
    A file with a header and no rows is reported (``empty_file``)."""
    spath = str(path)
    stats = log.file(spath)
    name = NameCheck(path, log, symbol, day) if day else None
    data_lines = 0
    lines = iter_lines(path, log)
    first = next(lines, None)
    if first is None:
        return
    header = first[1].decode("utf-8", "replace").strip().split(",")
    if tuple(header[: len(TRADE_CSV_COLUMNS)]) != TRADE_CSV_COLUMNS or header[len(TRADE_CSV_COLUMNS):] not in ([], ["RPI"]):
        log.add(spath, 1, P.BAD_HEADER, f"expected {','.join(TRADE_CSV_COLUMNS)}[,RPI], got {','.join(header)}")
        return
    has_rpi = len(header) > len(TRADE_CSV_COLUMNS)
    instrument = _instrument(registry, symbol, log, spath, 1)
    stream = TradeStream(instrument, log, spath)
    rows: list[tuple[int, int, list[str]]] = []
    for line_no, raw in lines:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        data_lines += 1
        cells = next(csv.reader([text]))
        if len(cells) != len(header):
            log.add(spath, line_no, P.MALFORMED_LINE, f"{len(cells)} columns, expected {len(header)}")
            continue
        if name is not None:
            name.symbol_seen(cells[1])
        if cells[1] != symbol:
            log.add(spath, line_no, P.MIXED_SYMBOL, f"{cells[1]} in a file of {symbol}")
            continue
        try:
            ts = seconds_str_to_ns(cells[0])
        except ValueError as e:
            log.add(spath, line_no, P.BAD_NUMBER, str(e))
            continue
        if name is not None:
            name.time(ts, line_no)
        rows.append((ts, line_no, cells))
    if data_lines == 0:
        log.add(spath, 0, P.EMPTY_FILE, "a header and no trades")
    if name is not None:
        name.finish(len(rows))
    if len(rows) > 1 and rows[0][0] > rows[-1][0]:
        rows.reverse()  # Bybit publishes some days newest-first; that is a format variant, not a defect.
    rows.sort(key=lambda r: r[0])
    out = []
    for ts, line_no, c in rows:
        rpi = has_rpi and c[10].strip().lower() in ("1", "true")
        tick = stream.make(ts, ts, c[2], c[3], c[4], c[6], rpi, line_no)
        if tick is not None:
            out.append(tick)
    stats.messages = len(rows)
    if out:
        yield "trades", instrument, out


def iter_batches(path: Path, registry: InstrumentRegistry, log: ProblemLog) -> Iterator[tuple[str, object, list]]:
    """Batches of Nautilus data from any supported file (see module docstring)."""
    kind, symbol = classify(path)
    if kind == "orderbook":
        yield from iter_orderbook_file(path, registry, log, symbol, OB_FILE_RE.match(path.name).group(1))
    elif kind == "trades":
        yield from iter_trades_csv(path, registry, log, symbol, TRADES_FILE_RE.match(path.name).group(2))
    elif kind == "funding":
        yield from iter_funding_file(path, registry, log, symbol)
    else:
        yield from iter_recording_file(path, registry, log)


__all__ = ["NS_PER_MS", "UnknownFormat", "classify", "iter_batches", "iter_lines"]
