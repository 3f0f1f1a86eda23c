"""Download Bybit's public history for one symbol and a date range (``mmbot data fetch``).

What comes from where (references in docs/fetch.md):

=============  ===========================================================================
order book     ``{history}/orderbook/linear/{SYMBOL}/{YYYY-MM-DD}_{SYMBOL}_ob{500|200}.data.zip``
               (default history host for it: https://quote-saver.bycsi.com)
trades         ``{history}/trading/{SYMBOL}/{SYMBOL}{YYYY-MM-DD}.csv.gz``
               (default: https://public.bybit.com)
funding        ``{rest}/v5/market/funding/history?category=linear&symbol=S&startTime=ms&endTime=ms&limit=200``
               (default rest: https://api.bybit.com); rows newest first, at most 200 per page:
               paged backwards by moving ``endTime`` below the oldest row received
instruments    ``{rest}/v5/market/instruments-info?category=linear&symbol=S`` (only needed when
               the symbol is not among the definitions mmbot ships)
=============  ===========================================================================

``--base-url-history URL`` (``$MMBOT_BYBIT_HISTORY_URL``) replaces both history hosts (a mirror
or the loopback fake in tools/fake_bybit_history serves both paths); ``--base-url-rest``
(``$MMBOT_BYBIT_REST_URL``) the REST host.

A file is written as ``NAME.part`` and renamed into place only after its integrity check: the
zip's CRCs (``ZipFile.testzip``), the gzip trailer (CRC-32 and length, by decompressing the
whole stream), and the byte count against ``Content-Length`` / ``Content-Range``. A ``.part``
left by an interrupted run is resumed with ``Range: bytes=N-``; the answer must be a 206 whose
``Content-Range`` starts at N, anything else restarts the file from byte 0 (appending the wrong
bytes would corrupt it). Transient failures (connection errors, HTTP 408/425/429/5xx, short
bodies, failed checks) are retried with capped exponential backoff; a 404 means Bybit has not
published that file: it is reported and skipped, never silently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

DEFAULT_ORDERBOOK_URL = "https://quote-saver.bycsi.com"
DEFAULT_TRADES_URL = "https://public.bybit.com"
DEFAULT_REST_URL = "https://api.bybit.com"
HISTORY_URL_ENV = "MMBOT_BYBIT_HISTORY_URL"
REST_URL_ENV = "MMBOT_BYBIT_REST_URL"

FILE_KINDS = ("ob500", "ob200", "trades")
KINDS = (*FILE_KINDS, "funding", "instruments")
DEFAULT_KINDS = ("ob500", "trades", "funding")
FUNDING_PAGE_LIMIT = 200  # Bybit: limit in [1, 200]
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK_BYTES = 1 << 16
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,40}$")
FUNDING_FILE_RE = re.compile(r"^([A-Z0-9]+)_funding_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})\.json$")

# Exit codes of `mmbot data fetch` (docs/fetch.md)
EXIT_OK = 0          # every requested file is present and verified (and imported with --import)
EXIT_INTERNAL = 1    # a bug or an unexpected local error
EXIT_BAD_INPUT = 2   # bad flags, or the import rejected the data (catalog unchanged)
EXIT_MISSING = 3     # some files are not published (HTTP 404); everything else is complete
EXIT_FAILED = 4      # some downloads failed after all retries (rerun: .part files resume)


class FetchInputError(ValueError):
    """Bad request (flags); one line."""


# --------------------------------------------------------------------------------------------
# the request
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sources:
    orderbook_url: str = DEFAULT_ORDERBOOK_URL
    trades_url: str = DEFAULT_TRADES_URL
    rest_url: str = DEFAULT_REST_URL

    @classmethod
    def resolve(cls, history: str | None = None, rest: str | None = None, env: dict | None = None) -> Sources:
        """Flags first, then ``$MMBOT_BYBIT_HISTORY_URL`` / ``$MMBOT_BYBIT_REST_URL``, then Bybit."""
        env = os.environ if env is None else env
        history = history or env.get(HISTORY_URL_ENV) or None
        rest = rest or env.get(REST_URL_ENV) or None
        for flag, url in (("--base-url-history", history), ("--base-url-rest", rest)):
            if url is not None and not re.match(r"^https?://[^/\s]+", url):
                raise FetchInputError(f"{flag}: {url!r} is not an http(s) URL")
        return cls(orderbook_url=(history or DEFAULT_ORDERBOOK_URL).rstrip("/"),
                   trades_url=(history or DEFAULT_TRADES_URL).rstrip("/"),
                   rest_url=(rest or DEFAULT_REST_URL).rstrip("/"))


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per file or REST page; the wait before attempt k+1 is min(cap, base * 2**(k-1)) s."""

    attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 60.0  # between two reads of the body, not for the whole file

    def delay_s(self, attempt: int) -> float:
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class FetchRequest:
    symbol: str
    first_day: dt.date
    end_day: dt.date  # exclusive
    kinds: tuple[str, ...]
    out_dir: Path
    jobs: int = 4

    @property
    def days(self) -> list[dt.date]:
        return [self.first_day + dt.timedelta(days=i) for i in range((self.end_day - self.first_day).days)]


def day_range(start_ns: int, end_ns: int, today: dt.date) -> tuple[dt.date, dt.date]:
    """UTC days meeting [start, end): (first day, end day exclusive). Refuses days not yet over."""
    if end_ns <= start_ns:
        raise FetchInputError("--end must be after --start (the range is [start, end))")
    first = dt.datetime.fromtimestamp(start_ns // 1_000_000_000, dt.timezone.utc).date()
    end_dt = dt.datetime.fromtimestamp(end_ns // 1_000_000_000, dt.timezone.utc)
    end = end_dt.date() + dt.timedelta(days=0 if (end_ns % 86_400_000_000_000 == 0) else 1)
    if end > today:
        raise FetchInputError(f"--end {end.isoformat()}: Bybit publishes a day's files after the day is over "
                              f"(UTC); the last complete day is {(today - dt.timedelta(days=1)).isoformat()}, "
                              f"so --end can be at most {today.isoformat()}")
    return first, end


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise FetchInputError(f"--kinds: {', '.join(unknown) or '(empty)'} unknown; choose from {','.join(KINDS)}")
    return kinds


def parse_symbol(text: str) -> str:
    symbol = text.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise FetchInputError(f"--symbol: {text!r} is not a Bybit symbol (letters and digits, e.g. XRPUSDT)")
    return symbol


def funding_file_name(symbol: str, first_day: dt.date, end_day: dt.date) -> str:
    """``{SYMBOL}_funding_{START}_{END}.json``: UTC days, END exclusive (the importer's convention)."""
    return f"{symbol}_funding_{first_day.isoformat()}_{end_day.isoformat()}.json"


def instruments_file_name(symbol: str) -> str:
    return f"instruments-info_{symbol}.json"


# --------------------------------------------------------------------------------------------
# what to fetch and what happened
# --------------------------------------------------------------------------------------------
@dataclass
class Item:
    kind: str
    label: str  # the day, or the window for funding
    url: str
    dest: Path
    status: str = "pending"  # downloaded | resumed | present | missing | failed
    size: int | None = None  # bytes of the final file when known
    fetched_bytes: int = 0   # bytes transferred by this run
    resumed_from: int = 0    # size of the .part this run started from
    attempts: int = 0
    note: str = ""
    events: list[str] = field(default_factory=list)  # what was retried and why, in order
    announced: bool = False  # its size was added to the progress bar's total

    @property
    def ok(self) -> bool:
        return self.status in ("downloaded", "resumed", "present")

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")


def plan(req: FetchRequest, sources: Sources) -> list[Item]:
    """Every file of the request, in a stable order (day, then kind)."""
    items: list[Item] = []
    sym_dir = req.out_dir / req.symbol
    for day in req.days:
        d = day.isoformat()
        for kind in req.kinds:
            if kind in ("ob500", "ob200"):
                name = f"{d}_{req.symbol}_{kind}.data.zip"
                items.append(Item(kind, d, f"{sources.orderbook_url}/orderbook/linear/{req.symbol}/{name}", sym_dir / name))
            elif kind == "trades":
                name = f"{req.symbol}{d}.csv.gz"
                items.append(Item(kind, d, f"{sources.trades_url}/trading/{req.symbol}/{name}", sym_dir / name))
    if "funding" in req.kinds:
        label = f"{req.first_day.isoformat()}..{req.end_day.isoformat()}"
        items.append(Item("funding", label, f"{sources.rest_url}/v5/market/funding/history",
                          sym_dir / funding_file_name(req.symbol, req.first_day, req.end_day)))
    if "instruments" in req.kinds:
        items.append(Item("instruments", "-", f"{sources.rest_url}/v5/market/instruments-info",
                          req.out_dir / instruments_file_name(req.symbol)))
    return items


# --------------------------------------------------------------------------------------------
# integrity checks
# --------------------------------------------------------------------------------------------
def verify_file(path: Path, name: str | None = None) -> str | None:
    """None when the file is whole, else what is wrong (one phrase). ``name`` (default: the
    file's own) picks the check, so a ``X.zip.part`` is checked as the zip it will become."""
    name = name or path.name
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                if not zf.namelist():
                    return "zip holds no file"
                bad = zf.testzip()  # reads every member, checking its CRC-32
                return f"zip member {bad} fails its CRC check" if bad else None
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as gz:  # reading to the end checks each member's CRC-32 and length
                while gz.read(CHUNK_BYTES * 16):
                    pass
            return None
        if name.endswith(".json"):
            json.loads(path.read_bytes())
            return None
    except (zipfile.BadZipFile, zlib.error, EOFError, gzip.BadGzipFile, ValueError, NotImplementedError) as e:
        return f"{type(e).__name__}: {e}"
    return f"no integrity check for {name}"


_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/N`` -> (a, b, N or None); None when absent or malformed."""
    m = _CONTENT_RANGE_RE.match((value or "").strip())
    if not m:
        return None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def range_honoured(offset: int, content_range: tuple[int, int, int | None] | None) -> bool:
    """A 206 continues the .part only if its Content-Range starts exactly where the .part ends."""
    return content_range is not None and content_range[0] == offset


def body_complete(got: int, expected: int | None) -> bool:
    """The body carried every byte its headers announced (unknown length: cannot tell here)."""
    return expected is None or got == expected


def size_verdict(size: int, total: int | None) -> str:
    """The .part against the whole file's announced size: "ok", "short" (a server may answer a
    range with fewer bytes than asked: continue) or "long" (cannot be this file: start over)."""
    if total is None or size == total:
        return "ok"
    return "short" if size < total else "long"


# --------------------------------------------------------------------------------------------
# downloading
# --------------------------------------------------------------------------------------------
class _Retry(Exception):
    """A transient failure: try again after the backoff."""


class _GiveUp(Exception):
    """A failure that another attempt cannot fix (HTTP 403, a REST error code, local I/O)."""


class Progress:
    """Bytes-and-ETA bar over all files (tqdm on stderr), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="fetch",
                            dynamic_ncols=True, leave=True)

    def expect(self, n_bytes: int) -> None:
        if self.bar is not None and n_bytes > 0:
            self.bar.total += n_bytes
            self.bar.refresh()

    def update(self, n_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(n_bytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Fetcher:
    request: FetchRequest
    sources: Sources = field(default_factory=Sources)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    progress: Progress = field(default_factory=lambda: Progress(False))
    sleep: Callable = asyncio.sleep

    async def run(self, items: list[Item]) -> list[Item]:
        self.request.out_dir.mkdir(parents=True, exist_ok=True)
        (self.request.out_dir / self.request.symbol).mkdir(parents=True, exist_ok=True)
        sem = asyncio.Semaphore(self.request.jobs)  # the --jobs bound: downloads in flight at once
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.policy.connect_timeout_s,
                                        sock_read=self.policy.read_timeout_s)
        # auto_decompress off: the .gz files must arrive byte for byte, never transparently inflated
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                         headers={"User-Agent": "mmbot-data-fetch"}) as session:

            async def one(item: Item) -> None:
                async with sem:
                    if item.kind == "funding":
                        await self._funding(session, item)
                    elif item.kind == "instruments":
                        await self._instruments(session, item)
                    else:
                        await self._file(session, item)

            await asyncio.gather(*(one(i) for i in items))
        return items

    # --- daily files -----------------------------------------------------------------------
    async def _file(self, session: aiohttp.ClientSession, item: Item) -> None:
        if item.dest.exists():  # renamed into place only after its check: whole
            item.status, item.size = "present", item.dest.stat().st_size
            return
        item.resumed_from = item.part.stat().st_size if item.part.exists() else 0
        last = ""
        for attempt in range(1, self.policy.attempts + 1):
            item.attempts = attempt
            try:
                outcome = await self._attempt(session, item)
                if outcome == "missing":
                    item.part.unlink(missing_ok=True)
                    item.status, item.note = "missing", "HTTP 404: not published" + (
                        " (newer days are published as ob200: try --kinds ob200)" if item.kind == "ob500" else "")
                    return
                problem = await asyncio.to_thread(verify_file, item.part, item.dest.name)
                if problem is None:
                    _commit(item.part, item.dest)
                    item.size = item.dest.stat().st_size
                    item.status = "resumed" if item.resumed_from else "downloaded"
                    item.note = "; ".join(item.events)
                    return
                self._discard(item)
                raise _Retry(f"integrity check failed ({problem}); the file is fetched again from byte 0")
            except _GiveUp as e:
                item.status, item.note = "failed", str(e)
                return
            except _Retry as e:
                last = str(e)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                last = _describe(e)
            item.events.append(f"attempt {attempt}: {last}")
            if attempt < self.policy.attempts:
                await self.sleep(self.policy.delay_s(attempt))
        item.status = "failed"
        item.note = f"gave up after {self.policy.attempts} attempts; last: {last} (rerun to resume)"

    async def _attempt(self, session: aiohttp.ClientSession, item: Item) -> str:
        """One GET; appends to the .part. Returns "done" (body complete, unchecked) or "missing"."""
        offset = item.part.stat().st_size if item.part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with session.get(item.url, headers=headers) as r:
            if r.status == 404:
                return "missing"
            if r.status == 416 and offset:
                cr = r.headers.get("Content-Range", "")
                if cr == f"bytes */{offset}":
                    return "done"  # the .part is already whole (stopped between last byte and rename)
                self._discard(item)
                raise _Retry(f"HTTP 416 for bytes={offset}- ({cr or 'no Content-Range'}); restarting from byte 0")
            if r.status in RETRY_STATUS:
                raise _Retry(f"HTTP {r.status}")
            if r.status == 206:
                cr = parse_content_range(r.headers.get("Content-Range"))
                if not range_honoured(offset, cr):
                    self._discard(item)
                    raise _Retry(f"asked for bytes={offset}-, got Content-Range "
                                 f"{r.headers.get('Content-Range')!r}; restarting from byte 0")
                total, expected_body, mode = cr[2], cr[1] - cr[0] + 1, "ab"
            elif r.status == 200:
                if offset:
                    item.events.append(f"server ignored Range bytes={offset}-; restarted from byte 0")
                    self._discard(item, unlink=False)  # "wb" below truncates it
                    offset = 0
                total = expected_body = r.content_length
                mode = "wb"
            else:
                raise _GiveUp(f"HTTP {r.status} {r.reason or ''}".strip())
            if total is not None and not item.announced:
                self.progress.expect(total - offset)
                item.announced = True
            got = 0
            # unbuffered: every byte received is in the file even if this process is killed
            with _local_io(item.part):
                f = open(item.part, mode, buffering=0)
            with f:
                async for chunk in r.content.iter_chunked(CHUNK_BYTES):
                    with _local_io(item.part):
                        f.write(chunk)
                    got += len(chunk)
                    item.fetched_bytes += len(chunk)
                    self.progress.update(len(chunk))
                with _local_io(item.part):
                    os.fsync(f.fileno())
        size = offset + got
        if not body_complete(got, expected_body):
            raise _Retry(f"body ended after {got} of {expected_body} bytes; resuming")
        verdict = size_verdict(size, total)
        if verdict == "short":
            raise _Retry(f"have {size} of {total} bytes; resuming")
        if verdict == "long":
            self._discard(item)
            raise _Retry(f"file is {size} bytes, the server announced {total}; restarting from byte 0")
        return "done"

    def _discard(self, item: Item, unlink: bool = True) -> None:
        """Drop the .part: its bytes are fetched again (the bar's total grows by them) and the
        file no longer continues an earlier run."""
        size = item.part.stat().st_size if item.part.exists() else 0
        if unlink:
            item.part.unlink(missing_ok=True)
        if item.announced:
            self.progress.expect(size)
        item.resumed_from = 0

    # --- REST ------------------------------------------------------------------------------
    async def _get_json(self, session: aiohttp.ClientSession, url: str, params: dict, item: Item) -> dict:
        last = ""
        for attempt in range(1, self.policy.attempts + 1):
            item.attempts += 1
            try:
                async with session.get(url, params=params) as r:
                    if r.status in RETRY_STATUS:
                        raise _Retry(f"HTTP {r.status}")
                    if r.status != 200:
                        raise _GiveUp(f"HTTP {r.status} {r.reason or ''}".strip())
                    raw = await r.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _Retry("response is not JSON") from None
                code = body.get("retCode")
                if code == 10006:  # Bybit's rate limit answer
                    raise _Retry("retCode 10006 (rate limit)")
                if code != 0:
                    raise _GiveUp(f"Bybit retCode {code}: {body.get('retMsg')}")
                return body
            except _Retry as e:
                last = str(e)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                last = _describe(e)
            item.events.append(f"{url} attempt {attempt}: {last}")
            if attempt < self.policy.attempts:
                await self.sleep(self.policy.delay_s(attempt))
        raise _GiveUp(f"gave up after {self.policy.attempts} attempts; last: {last}")

    async def _funding(self, session: aiohttp.ClientSession, item: Item) -> None:
        """All funding rows of [first day, end day) by paging ``endTime`` backwards."""
        req = self.request
        start_ms = _day_ms(req.first_day)
        end_ms = _day_ms(req.end_day) - 1
        rows: dict[int, dict] = {}
        pages = 0
        try:
            while True:
                body = await self._get_json(session, item.url, {
                    "category": "linear", "symbol": req.symbol, "startTime": str(start_ms),
                    "endTime": str(end_ms), "limit": str(FUNDING_PAGE_LIMIT)}, item)
                page = (body.get("result") or {}).get("list")
                if not isinstance(page, list):
                    raise _GiveUp("funding response has no result.list")
                pages += 1
                stamps = []
                for i, row in enumerate(page):
                    ts = _funding_row_ts(row, req.symbol, start_ms, end_ms, pages, i)
                    rows[ts] = row
                    stamps.append(ts)
                if len(page) < FUNDING_PAGE_LIMIT:
                    break
                oldest = min(stamps)
                if oldest <= start_ms:
                    break
                end_ms = oldest - 1  # the next page: everything strictly older than this one
        except _GiveUp as e:
            item.status, item.note = "failed", str(e)
            return
        out = {"retCode": 0, "retMsg": "OK",
               "result": {"category": "linear", "list": [rows[t] for t in sorted(rows, reverse=True)]},
               "retExtInfo": {}}
        data = json.dumps(out, indent=1).encode() + b"\n"
        _write_atomic(item.dest, data)
        item.status, item.size, item.fetched_bytes = "downloaded", len(data), len(data)
        item.note = "; ".join([f"{len(rows)} rows in {pages} page(s)", *item.events])

    async def _instruments(self, session: aiohttp.ClientSession, item: Item) -> None:
        try:
            body = await self._get_json(session, item.url, {"category": "linear", "symbol": self.request.symbol}, item)
        except _GiveUp as e:
            item.status, item.note = "failed", str(e)
            return
        rows = (body.get("result") or {}).get("list") or []
        if not any(r.get("symbol") == self.request.symbol for r in rows):
            item.status, item.note = "missing", f"Bybit lists no linear instrument {self.request.symbol}"
            return
        data = json.dumps(body, indent=1).encode() + b"\n"
        _write_atomic(item.dest, data)
        item.status, item.size, item.fetched_bytes = "downloaded", len(data), len(data)


def _describe(e: BaseException) -> str:
    """One short line for a network exception (aiohttp's messages can quote kilobytes of body)."""
    text = " ".join(f"{type(e).__name__}: {e}".split()).rstrip(": ")
    return text if len(text) <= 160 else text[:157] + "..."


class _local_io:
    """Turns a local file error (disk full, permissions) into a non-retried failure; network
    errors raised inside the block are not OSErrors of the file and pass through unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, et, e, tb) -> bool:
        if e is not None and isinstance(e, OSError):
            raise _GiveUp(f"cannot write {self.path}: {e.strerror or e}") from None
        return False


def _funding_row_ts(row, symbol: str, start_ms: int, end_ms: int, page: int, i: int) -> int:
    where = f"funding page {page} row {i}"
    if not isinstance(row, dict) or row.get("symbol") != symbol:
        raise _GiveUp(f"{where}: symbol {row.get('symbol') if isinstance(row, dict) else row!r}, expected {symbol}")
    ts = str(row.get("fundingRateTimestamp", ""))
    if not ts.isdigit() or not start_ms <= int(ts) <= end_ms:
        raise _GiveUp(f"{where}: fundingRateTimestamp {ts!r} outside the requested window")
    return int(ts)


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp()) * 1000


def _commit(part: Path, dest: Path) -> None:
    os.replace(part, dest)
    _fsync_dir(dest.parent)


def _write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _commit(tmp, dest)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fetch(request: FetchRequest, sources: Sources | None = None, policy: RetryPolicy | None = None,
          progress: bool = False) -> list[Item]:
    """Download everything ``request`` names; returns the items with their outcome."""
    items = plan(request, sources or Sources())
    bar = Progress(progress)
    try:
        asyncio.run(Fetcher(request, sources or Sources(), policy or RetryPolicy(), bar).run(items))
    finally:
        bar.close()
    return items


def exit_code(items: list[Item]) -> int:
    if any(i.status == "failed" for i in items):
        return EXIT_FAILED
    if any(i.status == "missing" for i in items):
        return EXIT_MISSING
    return EXIT_OK


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def summary_lines(items: list[Item]) -> list[str]:
    """The final table: one row per file, then one line of totals."""
    rows = [("kind", "day", "status", "size", "fetched", "tries", "note")]
    for i in items:
        rows.append((i.kind, i.label, i.status, human_bytes(i.size), human_bytes(i.fetched_bytes),
                     str(i.attempts), i.note))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    lines = [("  ".join(r[c].ljust(widths[c]) for c in range(6)) + "  " + r[6]).rstrip() for r in rows]
    count = {s: sum(i.status == s for i in items) for s in ("downloaded", "resumed", "present", "missing", "failed")}
    lines.append(f"{sum(i.ok for i in items)} of {len(items)} file(s) complete: " +
                 ", ".join(f"{n} {s}" for s, n in count.items() if n) +
                 f"; {human_bytes(sum(i.fetched_bytes for i in items))} transferred")
    for i in items:
        if i.status in ("missing", "failed"):
            lines.append(f"{i.status.upper()}: {i.kind} {i.label}: {i.note} ({i.url})")
    return lines
