"""Bybit funding-rate history -> Nautilus ``FundingRateUpdate``, validated.

Input: one response body of Bybit's REST ``GET /v5/market/funding/history?category=linear&
symbol=SYMBOL`` saved as it came, in a file named ``SYMBOL_funding[_ANYTHING].json``
(``XRPUSDT_funding_2024-12.json``). Several pages are several files.

Each ``result.list`` row is one settlement: ``fundingRate`` (a fraction of the position's
notional per settlement: ``"0.0001"`` = 0.01 %; positive = longs pay shorts) charged at
``fundingRateTimestamp`` (ms since the epoch, UTC). One row becomes one ``FundingRateUpdate``:

- ``rate`` = ``Decimal(fundingRate)`` exactly as printed;
- ``ts_event`` = ``ts_init`` = the settlement time in ns (REST history has no receive time);
- ``interval`` = ``next_funding_ns`` = None, as Nautilus' own funding-history loaders do: a
  history row states a settlement that happened, not a forecast of the next one.

Rows are replayed oldest first (Bybit returns newest first: a format variant, not a problem).

Validation (every problem names the file and the row's 1-based position in ``result.list``, the
"line" of the import report; nothing is dropped silently):

- ``bad_header`` (rejects the file): not a JSON object, ``retCode`` != 0, ``category`` other
  than ``linear``, no ``result.list`` array;
- ``malformed_line``: a row that is not an object or lacks ``symbol``, ``fundingRate`` or
  ``fundingRateTimestamp`` -> dropped;
- ``mixed_symbol``: a row of another symbol than the file name's -> dropped;
- ``bad_number``: a rate that is not a finite decimal (``"abc"``, ``"NaN"``, ``"inf"``) or whose
  magnitude is 1 (100 %) or more, or a timestamp that is not an integer count of ms between
  2015-01-01 and 2100-01-01 (seconds or µs by mistake fall outside) -> dropped;
- ``duplicate_timestamp``: two rows for one settlement. Same rate: kept once, every extra row
  reported. Different rates: the settlement's rate is unknown, so every row of it is dropped
  and reported (a guessed funding rate would be silent fiction).

The same rule holds across every file of one import and against the rows already in the catalog
(:func:`merge_funding`, called by the importer once all files are read): a settlement repeated
in another page with the same rate is imported once, with other rates none of its rows is; a
settlement the catalog already holds is not imported again (a different rate is reported as a
conflict and the catalog keeps its row). The merged rows are written oldest first, whatever the
order of the pages (Bybit pages backwards in time, so newest-first page files are the norm).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

from nautilus_trader.model.data import FundingRateUpdate

from adapters import problems as P
from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
from adapters.problems import ProblemLog

FUNDING_FILE_RE = re.compile(r"^([A-Z0-9]+)_funding(?:_[A-Za-z0-9._-]+)?\.json$")
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
MIN_TS_MS = 1_420_070_400_000  # 2015-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_ABS_RATE = Decimal(1)  # 100 % of notional per settlement: certainly not a real rate
NS_PER_MS = 1_000_000


def parse_rate(value: object) -> Decimal:
    """The funding rate as an exact ``Decimal``; ``ValueError`` unless a finite decimal with
    magnitude below ``MAX_ABS_RATE``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"fundingRate {value!r} is not a decimal number")
    try:
        rate = Decimal(value.strip() if isinstance(value, str) else repr(value))
    except InvalidOperation:
        raise ValueError(f"fundingRate {value!r} is not a decimal number") from None
    if not rate.is_finite():
        raise ValueError(f"fundingRate {value!r} is not finite")
    if abs(rate) >= MAX_ABS_RATE:
        raise ValueError(f"fundingRate {value!r} is {abs(rate) * 100}% of notional per settlement (limit < 100%)")
    return rate


def parse_timestamp_ms(value: object) -> int:
    """The settlement time in ms; ``ValueError`` unless an integer (or digit string) of ms
    between 2015-01-01 and 2100-01-01."""
    if isinstance(value, bool):
        raise ValueError(f"fundingRateTimestamp {value!r} is not an integer count of ms")
    if isinstance(value, str) and value.strip().isdigit() and value.isascii():  # not other scripts' digits
        ts = int(value.strip())
    elif isinstance(value, int):
        ts = value
    else:
        raise ValueError(f"fundingRateTimestamp {value!r} is not an integer count of ms")
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        raise ValueError(f"fundingRateTimestamp {value!r} is not a time in ms between 2015 and 2100 (seconds or µs?)")
    return ts


def _rows(path: Path, log: ProblemLog) -> list | None:
    """``result.list`` of the response body, or None (logged) when the file is unusable."""
    spath = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        log.add(spath, 0, P.UNREADABLE_FILE, e.strerror or str(e))
        return None
    if not raw.strip():
        log.add(spath, 0, P.EMPTY_FILE, "no content")
        return None
    try:
        body = json.loads(raw, parse_constant=lambda c: c)  # NaN/Infinity literals stay text: bad rates
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        log.add(spath, 0, P.BAD_HEADER, f"not a JSON document: {e}")
        return None
    if not isinstance(body, dict):
        log.add(spath, 0, P.BAD_HEADER, "not a Bybit v5 response object")
        return None
    if body.get("retCode", 0) != 0:
        log.add(spath, 0, P.BAD_HEADER, f"Bybit error response: retCode {body.get('retCode')!r} {body.get('retMsg', '')!r}")
        return None
    result = body.get("result")
    rows = result.get("list") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        log.add(spath, 0, P.BAD_HEADER, "no result.list array: not a /v5/market/funding/history response")
        return None
    category = result.get("category", "linear")
    if category != "linear":
        log.add(spath, 0, P.BAD_HEADER, f"category {category!r}: mmbot imports linear perpetuals only")
        return None
    return rows


class FundingBatch(list):
    """The updates of one funding file, oldest first, and where each came from: ``source`` (the
    file) and ``positions`` (the 1-based ``result.list`` position of the row each update was made
    from), so that :func:`merge_funding` can report a cross-file duplicate at its row."""

    def __init__(self, updates: list[FundingRateUpdate], source: str, positions: list[int]) -> None:
        super().__init__(updates)
        self.source = source
        self.positions = positions


def iter_funding_file(path: Path, registry: InstrumentRegistry, log: ProblemLog,
                      symbol: str) -> Iterator[tuple[str, object, list[FundingRateUpdate]]]:
    """``("funding", instrument, updates)`` for one funding-history file (updates oldest first,
    a :class:`FundingBatch`)."""
    spath = str(path)
    stats = log.file(spath)
    rows = _rows(path, log)
    if rows is None:
        return
    try:
        instrument = registry.get(symbol)
    except InstrumentDefinitionError as e:
        log.add(spath, 0, P.UNKNOWN_INSTRUMENT, str(e))
        return
    stats.lines = len(rows)
    by_ts: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    for pos, row in enumerate(rows, start=1):
        where = f"result.list[{pos - 1}]"
        if not isinstance(row, dict):
            log.add(spath, pos, P.MALFORMED_LINE, f"{where} is not an object")
            continue
        missing = [k for k in ("symbol", "fundingRate", "fundingRateTimestamp") if k not in row]
        if missing:
            log.add(spath, pos, P.MALFORMED_LINE, f"{where} lacks {', '.join(missing)}")
            continue
        if row["symbol"] != symbol:
            log.add(spath, pos, P.MIXED_SYMBOL, f"{where}: {row['symbol']!r} in a funding file of {symbol}")
            continue
        try:
            rate = parse_rate(row["fundingRate"])
            ts_ms = parse_timestamp_ms(row["fundingRateTimestamp"])
        except ValueError as e:
            log.add(spath, pos, P.BAD_NUMBER, f"{where}: {e}")
            continue
        by_ts[ts_ms].append((pos, rate))
    out: list[FundingRateUpdate] = []
    positions: list[int] = []
    for ts_ms in sorted(by_ts):
        entries = by_ts[ts_ms]
        rates = {rate for _, rate in entries}
        if len(rates) > 1:
            shown = ", ".join(f"result.list[{p - 1}]={r}" for p, r in entries)
            for pos, _ in entries:
                log.add(spath, pos, DUPLICATE_TIMESTAMP,
                        f"settlement {ts_ms} has conflicting rates ({shown}); none imported")
            continue
        for pos, _ in entries[1:]:
            log.add(spath, pos, DUPLICATE_TIMESTAMP,
                    f"settlement {ts_ms} repeats result.list[{entries[0][0] - 1}] (same rate); imported once")
        ts_ns = ts_ms * NS_PER_MS
        out.append(FundingRateUpdate(instrument.id, entries[0][1], ts_ns, ts_ns))
        positions.append(entries[0][0])
    stats.messages = len(out)
    if out:
        yield "funding", instrument, FundingBatch(out, spath, positions)


def merge_funding(batches: list[list[FundingRateUpdate]], existing: dict[int, Decimal],
                  log: ProblemLog) -> list[FundingRateUpdate]:
    """One instrument's funding updates from every file of an import, oldest first, with the
    duplicate rule applied across the files and against ``existing`` (the catalog's rows:
    settlement ts ns -> rate). Each dropped row is a ``duplicate_timestamp`` problem at its file
    and row, and no longer counts as a message of its file. ``batches`` in import order (the
    first file's row is the one kept of a same-rate repeat)."""
    by_ts: dict[int, list[tuple[str, int, FundingRateUpdate]]] = defaultdict(list)
    for batch in batches:
        source = getattr(batch, "source", "<input>")
        positions = getattr(batch, "positions", [0] * len(batch))
        for pos, update in zip(positions, batch, strict=True):
            by_ts[update.ts_event].append((source, pos, update))

    def drop(source: str, pos: int, detail: str) -> None:
        log.file(source).messages -= 1
        log.add(source, pos, DUPLICATE_TIMESTAMP, detail)

    out: list[FundingRateUpdate] = []
    for ts_ns in sorted(by_ts):
        entries = by_ts[ts_ns]
        ts_ms = ts_ns // NS_PER_MS
        if ts_ns in existing:
            old = existing[ts_ns]
            for source, pos, u in entries:
                if u.rate == old:
                    drop(source, pos, f"settlement {ts_ms} is already in the catalog (same rate {old}); not imported again")
                else:
                    drop(source, pos, f"settlement {ts_ms}: rate {u.rate} conflicts with the catalog's {old}; not "
                                      "imported (the catalog keeps its row)")
            continue
        if len({u.rate for _, _, u in entries}) > 1:
            shown = ", ".join(f"{Path(s).name}:result.list[{p - 1}]={u.rate}" for s, p, u in entries)
            for source, pos, _ in entries:
                drop(source, pos, f"settlement {ts_ms} has conflicting rates across files ({shown}); none imported")
            continue
        first_source, first_pos, first = entries[0]
        for source, pos, _ in entries[1:]:
            drop(source, pos, f"settlement {ts_ms} repeats {Path(first_source).name}:result.list[{first_pos - 1}] "
                              "(same rate); imported once")
        out.append(first)
    return out


__all__ = ["DUPLICATE_TIMESTAMP", "FUNDING_FILE_RE", "FundingBatch", "iter_funding_file", "merge_funding", "parse_rate",
           "parse_timestamp_ms"]
