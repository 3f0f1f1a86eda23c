"""Importing data files into a Nautilus ``ParquetDataCatalog``, safely, and listing it.

- Staged: everything is written to a staging catalog beside the target; only when the whole
  import succeeded are the files moved into place, so a failed import leaves the catalog as it
  was.
- Idempotent: a staged file whose name (its time interval) already exists with the same bytes
  is a duplicate and is skipped; an overlapping file with different content rejects the import.
- Versioned: ``mmbot_catalog.json`` at the root records the Nautilus version that wrote it.
  Nautilus has renamed data folders between versions, and a catalog from another version then
  reads as zero rows without an error, so a mismatch is refused with a clear message.
- One import at a time: an import holds an exclusive ``flock`` on ``<catalog>/.mmbot-import.lock``
  from before its staging directory exists until after it is gone; a second import waits for it
  (``on_wait`` says so). The kernel releases a flock when its holder dies, however it dies
  (SIGKILL, a Rust panic's abort), so a ``.staging-*`` directory found while holding the lock
  was left by a dead import: it is removed and reported (``ImportResult.stale_removed``).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import filecmp
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import nautilus_trader
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from nautilus_trader.model.data import FundingRateUpdate, OrderBookDelta, TradeTick
from nautilus_trader.persistence.catalog.parquet import (
    ParquetDataCatalog,
    _are_intervals_disjoint,
    _parse_filename_timestamps,
    _timestamps_to_filename,
)

from adapters.instruments import InstrumentRegistry
from adapters.problems import ImportRejected, ProblemLog
from adapters.sources import UnknownFormat, iter_batches

VERSION_FILE = "mmbot_catalog.json"
CATALOG_FORMAT = 1
CHUNK_ROWS = 500_000  # rows per parquet file while importing (bounded memory per import)
# Nautilus writes Snappy; zstd makes order-book catalogs ~2.5x smaller at similar read speed.
COMPRESSION, COMPRESSION_LEVEL = "zstd", 3
ROW_GROUP_ROWS = CHUNK_ROWS  # one group per file: zstd needs long runs
DELTA_COLUMNS = ("ts_event", "ts_init", "sequence")  # integer columns stored DELTA_BINARY_PACKED
_KIND_CLS = {"deltas": OrderBookDelta, "trades": TradeTick, "funding": FundingRateUpdate}
ENGINES = ("arrow", "objects")  # --engine: Arrow columns built directly (default) / Nautilus objects
LOCK_FILE = ".mmbot-import.lock"
STAGING_PREFIX = ".staging-"
# Not catalog content: ignored when deciding whether a folder is empty (the marker's temp file is
# what an import killed while writing the marker leaves).
_HOUSEKEEPING = (LOCK_FILE, Path(VERSION_FILE).with_suffix(".tmp").name)


class CatalogError(Exception):
    """The catalog cannot be used (missing, other Nautilus version, conflicting data)."""


def _version_record() -> dict:
    return {"format": CATALOG_FORMAT, "nautilus_trader": nautilus_trader.__version__}


_PLAIN_WARNED: set[str] = set()


def _plain_nautilus_catalog(path: Path) -> bool:
    """A ParquetDataCatalog without mmbot's marker that holds an instrument and order-book rows."""
    books = path / "data" / "order_book_deltas"
    if not (books.is_dir() and any(books.glob("*/*.parquet"))):
        return False
    try:
        return bool(ParquetDataCatalog(str(path)).instruments())
    except Exception:  # noqa: BLE001 - unreadable instrument files: not a usable catalog
        return False


def plain_catalog_warning(path: Path | str) -> str:
    return (f"warning: {path} is a plain Nautilus catalog (no {VERSION_FILE}): mmbot cannot check which "
            "nautilus_trader version wrote it or that its order-book rows passed mmbot's import validation; the "
            "book invariant is undeclared (the simulator walks every message's rows); there is no import report; "
            "funding is unknown unless it holds funding_rate_update rows")


def check_catalog(path: Path | str) -> str | None:
    """Raise ``CatalogError`` unless ``path`` is a catalog mmbot can replay: one written by
    ``mmbot catalog import`` with this Nautilus version (returns None), or a plain Nautilus
    ``ParquetDataCatalog`` holding an instrument and order-book deltas (returns the warning, also
    printed once per catalog and process on stderr: what mmbot cannot check there)."""
    path = Path(path)
    marker = path / VERSION_FILE
    if not path.is_dir():
        raise CatalogError(f"{path}: catalog directory does not exist")
    if not marker.exists():
        if _plain_nautilus_catalog(path):
            warning = plain_catalog_warning(path)
            if str(path.resolve()) not in _PLAIN_WARNED:
                _PLAIN_WARNED.add(str(path.resolve()))
                print(warning, file=sys.stderr, flush=True)
            return warning
        raise CatalogError(
            f"{path}: not an mmbot catalog ({VERSION_FILE} missing) nor a Nautilus ParquetDataCatalog holding an "
            "instrument and order-book deltas (data/order_book_deltas/...); create it with `mmbot catalog import`",
        )
    try:
        rec = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CatalogError(f"{marker}: unreadable: {e}") from e
    if rec.get("nautilus_trader") != nautilus_trader.__version__ or rec.get("format") != CATALOG_FORMAT:
        raise CatalogError(
            f"{path}: written by nautilus_trader {rec.get('nautilus_trader')} (format {rec.get('format')}), "
            f"this is {nautilus_trader.__version__} (format {CATALOG_FORMAT}); data folders differ between "
            "versions, so re-import the source files into a new catalog",
        )
    return None


def open_catalog(path: Path | str) -> ParquetDataCatalog:
    check_catalog(path)
    return ParquetDataCatalog(str(path))


@dataclass
class _Written:
    rows: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    rpi_trades: int = 0


@dataclass
class ImportResult:
    written: dict[tuple[str, str], _Written] = field(default_factory=dict)
    files_added: int = 0
    files_duplicate: int = 0
    log: ProblemLog | None = None
    stale_removed: list[str] = field(default_factory=list)  # staging dirs of dead imports, removed
    engines: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # file -> (engine, fallback reason)

    def to_json(self, catalog: str, inputs: list[str], status: str, error: str | None) -> dict:
        rows = [
            {
                "data_type": kind,
                "instrument_id": iid,
                "rows": w.rows,
                "start_ns": w.start_ns,
                "end_ns": w.end_ns,
                **({"rpi_trades": w.rpi_trades} if kind == "TradeTick" else {}),
            }
            for (kind, iid), w in sorted(self.written.items())
        ]
        total = self.log.total() if self.log else {}
        files = self.log.to_json() if self.log else []
        for f in files:
            if f["file"] in self.engines:
                engine, why = self.engines[f["file"]]
                f["engine"] = engine
                if why:
                    f["fallback"] = why
        return {
            "catalog": catalog,
            "inputs": inputs,
            "status": status,
            "error": error,
            "strict": bool(self.log and self.log.strict),
            "written": rows,
            "files_added": self.files_added,
            "files_duplicate": self.files_duplicate,
            "problems_total": dict(sorted(total.items())),
            "files": files,
            "stale_staging_removed": list(self.stale_removed),
        }


INVARIANT_KEY = "book_invariants"
_F_LAST = 128  # RecordFlag.F_LAST
_CLEAR, _ADD, _UPDATE = 4, 1, 2  # BookAction values


class BookInvariant:
    """Checks, over one instrument's order-book rows in stream order, what the queue simulator's
    fast path relies on (adapters/sim/exec_client.py, ``SimParams.sizes_from_book``): outside
    snapshots, **no row leaves its level's size unchanged**, so "a row touched our level in this
    message" equals "the level's size differs after the message". Counted violations:

    - ``unchanged_size``: a row whose level (side, price) has the same size before and after it
      (a re-sent size, or deleting an absent level);
    - ``repeated_level``: a level changed twice in one message (it could return to its size);
    - ``clear_inside_message``: a CLEAR that is not a message's first row (the simulator treats
      a message that starts with CLEAR as touching every level).

    Rows of a message that starts with CLEAR (a snapshot) are not checked. ``declared`` = no
    violation in any import so far."""

    def __init__(self) -> None:
        self.book: dict[tuple[int, int], int] = {}
        self.rows = self.messages = self.snapshots = 0
        self.unchanged_size = self.repeated_level = self.clear_inside_message = 0
        self._in_message = False
        self._snapshot = False
        self._seen: set[tuple[int, int]] = set()

    def add(self, deltas: list) -> None:
        book, seen = self.book, self._seen
        for d in deltas:
            self.rows += 1
            action = int(d.action)
            if not self._in_message:
                self._in_message, self._snapshot = True, action == _CLEAR
                seen.clear()
                self.messages += 1
                self.snapshots += self._snapshot
            if action == _CLEAR:
                if seen:
                    self.clear_inside_message += 1
                book.clear()
            else:
                o = d.order
                key = (int(o.side), o.price.raw)
                new = o.size.raw if action in (_ADD, _UPDATE) else 0
                prev = book.get(key, 0)
                if not self._snapshot:
                    if new == prev:
                        self.unchanged_size += 1
                    if key in seen:
                        self.repeated_level += 1
                seen.add(key)
                if new:
                    book[key] = new
                else:
                    book.pop(key, None)
            if d.flags & _F_LAST:
                self._in_message = False

    def record(self) -> dict:
        violations = self.unchanged_size + self.repeated_level + self.clear_inside_message
        return {"rows": self.rows, "messages": self.messages, "snapshots": self.snapshots,
                "unchanged_size": self.unchanged_size, "repeated_level": self.repeated_level,
                "clear_inside_message": self.clear_inside_message, "declared": violations == 0}


def merge_invariant(old: dict | None, new: dict) -> dict:
    """Counts summed over imports; declared only while every import declared it."""
    if not old:
        return dict(new)
    out = {k: int(old.get(k, 0)) + int(new.get(k, 0)) for k in new if k != "declared"}
    out["declared"] = bool(old.get("declared")) and bool(new.get("declared"))
    return out


def book_invariant_declared(catalog_dir: Path | str, instrument_id: str) -> bool:
    """Whether the catalog's metadata declares :class:`BookInvariant` for the instrument (False
    for a catalog imported before it was recorded)."""
    try:
        rec = json.loads((Path(catalog_dir) / VERSION_FILE).read_text())
    except (OSError, ValueError):
        return False
    inv = (rec.get(INVARIANT_KEY) or {}).get(instrument_id) or {}
    return inv.get("declared") is True


class _StagedWriter:
    """Buffers items per (kind, instrument) and writes chunked parquet files to the stage."""

    def __init__(self, stage: ParquetDataCatalog, result: ImportResult, catalog_dir: Path | None = None) -> None:
        self.stage = stage
        self.result = result
        self.catalog_dir = catalog_dir
        self.buffers: dict[tuple[str, str], list] = defaultdict(list)
        self.funding: dict[str, list] = defaultdict(list)  # instrument -> one batch per file, import order
        self.last: dict[tuple[str, str], tuple[int, str]] = {}  # (kind, instrument) -> (last ts_init, its file)
        self.invariants: dict[str, BookInvariant] = {}

    def add(self, kind: str, instrument_id: str, items: list, source: str = "") -> None:
        if kind == "funding":  # a few rows a day: merged across files at close (merge_funding)
            self.funding[instrument_id].append(items)
            return
        # Book and trade files are not sorted together: two recordings overlapping in time would
        # interleave into one nonsense stream. Files given out of time order are refused instead
        # (Nautilus would raise "Data should be monotonically increasing" with a traceback).
        key = (kind, instrument_id)
        prev = self.last.get(key)
        if prev is not None and items[0].ts_init < prev[0]:
            from mmbot.timeutil import ns_to_iso

            raise ImportRejected(
                f"{source}: {kind} of {instrument_id} from {ns_to_iso(items[0].ts_init)} come after {prev[1]}'s data up "
                f"to {ns_to_iso(prev[0])}: give the files of one kind oldest first (overlapping recordings go into "
                "separate catalogs)")
        self.last[key] = (items[-1].ts_init, source)
        if kind == "deltas":
            inv = self.invariants.get(instrument_id)
            if inv is None:
                inv = self.invariants[instrument_id] = BookInvariant()
            inv.add(items)
        buf = self.buffers[key]
        # Split only between distinct ts_init values: Nautilus requires disjoint file intervals.
        if len(buf) >= CHUNK_ROWS and items[0].ts_init > buf[-1].ts_init:
            self._flush(kind, instrument_id)
            buf = self.buffers[(kind, instrument_id)]
        buf.extend(items)

    def _flush(self, kind: str, instrument_id: str) -> None:
        buf = self.buffers.pop((kind, instrument_id), [])
        if not buf:
            return
        self.stage.write_data(buf)
        w = self.result.written.setdefault((_KIND_CLS[kind].__name__, instrument_id), _Written())
        w.rows += len(buf)
        w.start_ns = buf[0].ts_init if w.start_ns is None else min(w.start_ns, buf[0].ts_init)
        w.end_ns = buf[-1].ts_init if w.end_ns is None else max(w.end_ns, buf[-1].ts_init)
        if kind == "trades":
            w.rpi_trades += sum(1 for t in buf if t.trade_id.value.startswith("RPI-"))

    def close(self) -> None:
        from adapters.bybit_funding import merge_funding

        for iid in sorted(self.funding):
            # Pages in any order (Bybit's own is newest first) come out oldest first, each
            # settlement once: the duplicate rule across files and against the catalog.
            merged = merge_funding(self.funding.pop(iid), _catalog_funding_rates(self.catalog_dir, iid),
                                   self.result.log)
            if merged:
                self.buffers[("funding", iid)] = merged
        for key in list(self.buffers):
            self._flush(*key)


class _ArrowStagedWriter(_StagedWriter):
    """The writer of ``--engine arrow``: a buffer holds segments, each an Arrow table of
    ``OrderBookDelta`` rows built by :mod:`adapters.bybit_book_arrow` or a list of Nautilus objects
    (trades, funding, files the object path read). Files are cut at exactly the rows the object
    writer cuts them at (same ``CHUNK_ROWS`` rule, evaluated per message), the same Nautilus file
    name and disjointness check, and written once, directly in the recompressed form
    ``_recompress`` would give them. ``checkpoint``/``rollback`` undo a file the fast path gave up
    on, so the object path can import it from the same state."""

    def __init__(self, stage: ParquetDataCatalog, result: ImportResult, catalog_dir: Path | None = None) -> None:
        super().__init__(stage, result, catalog_dir)
        self.segs: dict[tuple[str, str], list] = defaultdict(list)
        self.nrows: dict[tuple[str, str], int] = defaultdict(int)
        self.tail_ts: dict[tuple[str, str], int] = {}  # ts_init of the buffer's last row
        self.files: list[Path] = []  # staged files in write order
        self.final: set[Path] = set()  # staged files already in their final (zstd) form

    def checkpoint(self) -> tuple:
        return ({k: list(v) for k, v in self.segs.items()}, dict(self.nrows), dict(self.tail_ts), dict(self.last),
                copy.deepcopy(self.result.written), len(self.files), copy.deepcopy(self.invariants))

    def rollback(self, cp: tuple) -> None:
        segs, nrows, tail, last, written, n_files, invariants = cp
        for f in self.files[n_files:]:
            f.unlink(missing_ok=True)
            self.final.discard(f)
        del self.files[n_files:]
        self.segs, self.nrows, self.tail_ts, self.last = defaultdict(list, segs), defaultdict(int, nrows), tail, last
        self.result.written, self.invariants = written, invariants

    def _order_check(self, kind: str, instrument_id: str, first_ts: int, last_ts: int, source: str) -> None:
        key = (kind, instrument_id)
        prev = self.last.get(key)
        if prev is not None and first_ts < prev[0]:
            from mmbot.timeutil import ns_to_iso

            raise ImportRejected(
                f"{source}: {kind} of {instrument_id} from {ns_to_iso(first_ts)} come after {prev[1]}'s data up "
                f"to {ns_to_iso(prev[0])}: give the files of one kind oldest first (overlapping recordings go into "
                "separate catalogs)")
        self.last[key] = (last_ts, source)

    def add(self, kind: str, instrument_id: str, items: list, source: str = "") -> None:
        if kind == "funding":
            self.funding[instrument_id].append(items)
            return
        key = (kind, instrument_id)
        self._order_check(kind, instrument_id, items[0].ts_init, items[-1].ts_init, source)
        if kind == "deltas":
            inv = self.invariants.get(instrument_id)
            if inv is None:
                inv = self.invariants[instrument_id] = BookInvariant()
            inv.add(items)
        if self.nrows[key] >= CHUNK_ROWS and items[0].ts_init > self.tail_ts[key]:
            self._flush(kind, instrument_id)
        self._append(key, items, len(items), items[-1].ts_init)

    def _append(self, key: tuple[str, str], seg, n: int, tail_ts: int) -> None:
        segs = self.segs[key]
        if isinstance(seg, list) and segs and isinstance(segs[-1], list):
            segs[-1].extend(seg)
        else:
            segs.append(list(seg) if isinstance(seg, list) else seg)
        self.nrows[key] += n
        self.tail_ts[key] = tail_ts

    def add_table(self, instrument_id: str, table: pa.Table, batch_rows: np.ndarray, source: str) -> None:
        """Order-book rows of several messages (``batch_rows`` = rows per message, in order)."""
        key = ("deltas", instrument_id)
        ts_init = table.column("ts_init").to_numpy()
        self._order_check("deltas", instrument_id, int(ts_init[0]), int(ts_init[-1]), source)
        offs = np.concatenate(([0], np.cumsum(batch_rows)))
        nb = len(batch_rows)
        pos = 0
        while pos < nb:
            need = CHUNK_ROWS - self.nrows[key]
            j = min(max(int(np.searchsorted(offs, offs[pos] + need, "left")), pos), nb)
            # the object writer flushes before the first message after the threshold whose first
            # row is later than the buffer's last row
            while j < nb:
                prev_ts = int(ts_init[offs[j] - 1]) if j > pos else self.tail_ts.get(key, -1)
                if self.nrows[key] + int(offs[j] - offs[pos]) >= CHUNK_ROWS and int(ts_init[offs[j]]) > prev_ts:
                    break
                j += 1
            if j > pos:
                self._append(key, table.slice(int(offs[pos]), int(offs[j] - offs[pos])), int(offs[j] - offs[pos]),
                             int(ts_init[offs[j] - 1]))
            if j >= nb:
                break
            self._flush("deltas", instrument_id)
            pos = j

    def _flush(self, kind: str, instrument_id: str) -> None:
        key = (kind, instrument_id)
        segs = self.segs.pop(key, [])
        n = self.nrows.pop(key, 0)
        self.tail_ts.pop(key, None)
        if not n:
            return
        cls = _KIND_CLS[kind]
        directory = Path(self.stage._make_path(data_cls=cls, identifier=instrument_id))
        if all(isinstance(s, list) for s in segs):  # exactly the object writer's call
            buf = [x for s in segs for x in s]
            start, end = buf[0].ts_init, buf[-1].ts_init
            self.stage.write_data(buf)
            path = directory / _timestamps_to_filename(start, end)
        else:
            tables = [s if isinstance(s, pa.Table) else self.stage._objects_to_table(s, data_cls=cls) for s in segs]
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            ts = table.column("ts_init")
            start, end = int(ts[0].as_py()), int(ts[-1].as_py())
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / _timestamps_to_filename(start, end)
            if path.exists():  # what ParquetDataCatalog._write_chunk does
                print(f"File {path} already exists, skipping write")
                return
            # ParquetDataCatalog._get_directory_intervals' listing, on the local staging folder
            # (its fsspec glob compiles a regex for every new folder path: ~2 ms a file)
            intervals = sorted(i for i in map(_parse_filename_timestamps, map(str, directory.glob("*.parquet"))) if i)
            if not _are_intervals_disjoint([*intervals, (start, end)]):
                raise ValueError(f"Writing file {path.name} with interval ({start}, {end}) would create "
                                 f"non-disjoint intervals. Existing intervals: {intervals}")
            _write_final(table, path)
            self.final.add(path)
        self.files.append(path)
        w = self.result.written.setdefault((cls.__name__, instrument_id), _Written())
        w.rows += n
        w.start_ns = start if w.start_ns is None else min(w.start_ns, start)
        w.end_ns = end if w.end_ns is None else max(w.end_ns, end)
        if kind == "trades":
            w.rpi_trades += sum(1 for s in segs for t in s if t.trade_id.value.startswith("RPI-"))

    def close(self) -> None:
        from adapters.bybit_funding import merge_funding

        for iid in sorted(self.funding):
            merged = merge_funding(self.funding.pop(iid), _catalog_funding_rates(self.catalog_dir, iid),
                                   self.result.log)
            if merged:
                self._append(("funding", iid), merged, len(merged), merged[-1].ts_init)
        for key in list(self.segs):
            self._flush(*key)


def _catalog_funding_rates(catalog_dir: Path | None, instrument_id: str) -> dict:
    """Settlement ts (ns) -> rate (Decimal) of the funding rows the catalog already holds."""
    if catalog_dir is None or not (Path(catalog_dir) / VERSION_FILE).exists():
        return {}
    folder = Path(catalog_dir) / "data" / "funding_rate_update" / instrument_id
    if not (folder.is_dir() and any(folder.glob("*.parquet"))):
        return {}
    for f in sorted(folder.glob("*.parquet")):  # one line, not the decoder's TypeError (review 34 F2)
        _check_decode_metadata(f, pq.ParquetFile(f).schema_arrow.metadata, "funding_rate_update", instrument_id,
                               None)
    rows = ParquetDataCatalog(str(catalog_dir)).query(FundingRateUpdate, identifiers=[instrument_id])
    return {r.ts_event: Decimal(str(r.rate)) for r in rows}  # Nautilus 1.231 reads the rate back as text


def _staged_files(stage_root: Path) -> list[Path]:
    return sorted(p for p in stage_root.rglob("*.parquet"))


def _recompress(path: Path) -> None:
    """Rewrite a staged parquet file with zstd (schema metadata kept) in larger row groups:
    Nautilus' 5,000-row groups halve what zstd can save on order-book columns. Timestamps and
    sequence numbers are delta-encoded: they step by a few ns / one update within a message,
    which plain encoding stores as 8 random-looking bytes (a 20 ms order-book feed ~40 % smaller;
    Nautilus reads the encoding back unchanged, tests/test_cli_catalog.py)."""
    _write_final(pq.read_table(path), path)


def _write_final(table: pa.Table, path: Path) -> None:
    """``table`` as a catalog file in its final form (see ``_recompress``), via a temp name."""
    tmp = path.with_suffix(".zstd.tmp")
    delta = {c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in table.column_names}
    pq.write_table(table, tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                   row_group_size=ROW_GROUP_ROWS,
                   use_dictionary=[c for c in table.column_names if c not in delta], column_encoding=delta or None)
    os.replace(tmp, path)


def _plan_moves(stage_root: Path, target_root: Path, result: ImportResult) -> list[tuple[Path, Path]]:
    """Check every staged file against the target; raise on a conflict, before touching it."""
    moves: list[tuple[Path, Path]] = []
    for src in _staged_files(stage_root):
        rel = src.relative_to(stage_root)
        dst = target_root / rel
        is_instrument = rel.parts[:2] == ("data", "crypto_perpetual")
        if dst.exists():
            if filecmp.cmp(src, dst, shallow=False):
                result.files_duplicate += 1
                continue
            if not is_instrument:
                raise CatalogError(f"{dst}: already holds different data for the same time range")
        elif not is_instrument and dst.parent.exists():
            new = _parse_filename_timestamps(src.name)
            for other in dst.parent.glob("*.parquet"):
                old = _parse_filename_timestamps(other.name)
                if new and old and new[0] <= old[1] and old[0] <= new[1]:
                    raise CatalogError(
                        f"{src.name}: time range overlaps existing {other} with different data; "
                        "import overlapping sources into separate catalogs",
                    )
        moves.append((src, dst))
    return moves


@contextlib.contextmanager
def import_lock(catalog_dir: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the catalog's import lock (created with the folder if needed); blocks while another
    import holds it, calling ``on_wait(holder pid)`` once. The holder unlinks the lock file
    before releasing it (a catalog carries no lock file at rest, and a failed first import
    removes the folder): a waiter then finds the file it locked unlinked (another inode than the
    path's, or none) and starts over on a fresh one."""
    lock = Path(catalog_dir) / LOCK_FILE
    waited = False
    while True:
        Path(catalog_dir).mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None and not waited:
                on_wait(os.pread(fd, 32, 0).decode(errors="replace").strip() or "?")
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)  # until the holder finishes or dies
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_stale_staging(catalog_dir: Path) -> list[str]:
    """Staging directories of dead imports (call only while holding the import lock: every live
    import holds it for as long as its staging directory exists)."""
    removed = []
    for d in sorted(Path(catalog_dir).glob(STAGING_PREFIX + "*")):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    (Path(catalog_dir) / _HOUSEKEEPING[1]).unlink(missing_ok=True)
    return removed


def _content(catalog_dir: Path) -> list[Path]:
    return [p for p in catalog_dir.iterdir() if p.name not in _HOUSEKEEPING and not p.name.startswith(STAGING_PREFIX)]


def import_paths(
    paths: list[Path],
    catalog_dir: Path,
    registry: InstrumentRegistry,
    strict: bool = False,
    on_wait: Callable[[str], None] | None = None,
    engine: str = "arrow",
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import files into ``catalog_dir`` (created if absent) under its import lock. Raises
    ``ImportRejected`` or ``CatalogError`` with the catalog untouched. ``engine``: ``"arrow"``
    builds order-book files' Arrow columns directly (adapters/bybit_book_arrow.py; a file it cannot
    prove clean falls back to the object path, reported per file), ``"objects"`` reads everything
    into Nautilus objects first; both write the same catalog (tests/test_import_equality.py).
    ``jobs`` > 1 converts order-book files in that many worker processes (Arrow engine); the
    catalog is the same for any ``jobs``. ``progress(bytes, messages)`` is called as input is read."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    catalog_dir = Path(catalog_dir)
    fresh = True  # no catalog yet: a failed import removes the folder again
    try:
        with import_lock(catalog_dir, on_wait):
            stale = _remove_stale_staging(catalog_dir)
            fresh = not (catalog_dir / VERSION_FILE).exists() and not _content(catalog_dir)
            result = _import_locked(paths, catalog_dir, registry, strict, engine, jobs, progress)
            result.stale_removed = stale
            return result
    finally:
        if fresh and not (catalog_dir / VERSION_FILE).exists():
            # after the lock file is gone; fails harmlessly when another import has begun meanwhile
            with contextlib.suppress(OSError):
                catalog_dir.rmdir()


def _fast_plan(path: Path, registry: InstrumentRegistry):
    """``(instrument, (spec, symbol, day_lo_ns, day_hi_ns))`` when the Arrow engine may read
    ``path``, else ``(None, reason)``."""
    import datetime as _dt

    from adapters.bybit_book_arrow import BookSpec
    from adapters.sources import DATE_SLACK_NS, NS_PER_DAY, OB_FILE_RE, classify

    try:
        kind, symbol = classify(path)
    except UnknownFormat:
        return None, "unknown file name"
    if kind != "orderbook":
        return None, "only Bybit order-book files have the Arrow engine"
    try:
        instrument = registry.get(symbol)
    except Exception:  # noqa: BLE001 - the object path reports it
        return None, "unknown instrument"
    day = OB_FILE_RE.match(path.name).group(1)
    lo = int(_dt.datetime.fromisoformat(day).replace(tzinfo=_dt.UTC).timestamp()) * 1_000_000_000 - DATE_SLACK_NS
    return instrument, (BookSpec.of(instrument), symbol, lo, lo + NS_PER_DAY + 2 * DATE_SLACK_NS)


def _apply_fast(path: Path, writer: _ArrowStagedWriter, log: ProblemLog, iid: str, chunks, summary,
                progress: Callable[[int, int], None] | None = None) -> str | None:
    """Feed an Arrow-engine file's chunks to the writer and record its results; on ``Fallback``
    undo what it added and return the reason (the caller imports it with the object path)."""
    from adapters.bybit_book_arrow import Fallback

    cp = writer.checkpoint()
    shown = [0, 0]  # bytes, messages shown on the progress bar for this file
    try:
        for chunk in chunks:
            if chunk.table is not None:
                writer.add_table(iid, chunk.table, chunk.batch_rows, str(path))
            if progress is not None and (chunk.nbytes or chunk.messages):
                progress(chunk.nbytes, chunk.messages)
                shown[0] += chunk.nbytes
                shown[1] += chunk.messages
        state = summary()
    except Fallback as e:
        writer.rollback(cp)
        if progress is not None and any(shown):  # the object path reads the file again, counted then
            progress(-shown[0], -shown[1])
        return str(e)
    inv = writer.invariants.get(iid)
    if inv is None:
        inv = writer.invariants[iid] = BookInvariant()
    # the file starts with a snapshot (else Fallback), whose CLEAR resets the invariant's book
    inv.book = dict(state["book"])
    inv.rows += state["rows"]
    inv.messages += state["batches"]
    inv.snapshots += state["snapshots"]
    inv.unchanged_size += state["unchanged_size"]
    inv.repeated_level += state["repeated_level"]
    stats = log.file(str(path))
    stats.lines, stats.messages = state["lines"], state["messages"]
    return None


def _input_size(path: Path) -> int:
    """Bytes of lines a file holds (a zip's member uncompressed; a gzip's compressed size)."""
    try:
        if path.suffix == ".zip":
            import zipfile

            with zipfile.ZipFile(path) as zf:
                return sum(i.file_size for i in zf.infolist())
        return path.stat().st_size
    except (OSError, ValueError):
        return 0


def input_bytes(paths: list[Path]) -> int:
    """Total of ``_input_size`` (the progress bar's 100 %)."""
    return sum(_input_size(Path(p)) for p in paths)


def _start_workers(paths: list[Path], registry: InstrumentRegistry, jobs: int, stage_root: Path):
    """``--jobs``: the Arrow-engine files converted in worker processes, each into an Arrow IPC
    file in the staging directory; the importer applies them in input order (same catalog for
    any N)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from adapters.bybit_book_arrow import file_to_ipc

    plans = {}
    for index, path in enumerate(paths):
        if Path(path).exists():
            instrument, plan = _fast_plan(Path(path), registry)
            if instrument is not None:
                plans[index] = (Path(path), plan)
    if len(plans) < 2:  # one file gains nothing from a worker (spawning one costs seconds)
        return None, {}
    # spawn, not fork: the parent holds Nautilus' Rust runtime and Arrow's thread pools
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(plans)), mp_context=multiprocessing.get_context("spawn"))
    futures = {index: pool.submit(file_to_ipc, path, *plan, stage_root / f".arrow-{index}.ipc")
               for index, (path, plan) in plans.items()}
    return pool, futures


def _run_fast(path: Path, index: int, plan: tuple, futures: dict, writer: _ArrowStagedWriter, log: ProblemLog,
              iid: str, progress) -> str | None:
    from adapters.bybit_book_arrow import ArrowBookFile, ipc_chunks

    if index not in futures:
        fast = ArrowBookFile(path, *plan)
        return _apply_fast(path, writer, log, iid, fast.chunks(), fast.summary, progress)
    from concurrent.futures.process import BrokenProcessPool

    try:
        done = futures.pop(index).result()
    except BrokenProcessPool:
        # A worker died (SIGKILL, the OOM killer, a crash in native code): this file and every one
        # the pool still held go to the object path, in this process, as any file the Arrow
        # engine cannot vouch for (reported per file). Retrying the Arrow path here could crash
        # the importer the same way.
        return "the --jobs worker process died"
    if done["fallback"] is not None:
        return done["fallback"]
    ipc = writer.stage_root / f".arrow-{index}.ipc"
    try:
        why = _apply_fast(path, writer, log, iid, ipc_chunks(ipc, done["batch_rows"]), lambda: done["state"])
    finally:
        ipc.unlink(missing_ok=True)
    if progress is not None and why is None:
        progress(done["nbytes"], done["state"]["messages"])
    return why


def _import_locked(paths: list[Path], catalog_dir: Path, registry: InstrumentRegistry, strict: bool,
                   engine: str = "objects", jobs: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> ImportResult:
    if (catalog_dir / VERSION_FILE).exists():
        check_catalog(catalog_dir)
    elif _content(catalog_dir):
        raise CatalogError(f"{catalog_dir}: exists, is not empty and is not an mmbot catalog")
    log = ProblemLog(strict=strict)
    result = ImportResult(log=log)
    stage_root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=catalog_dir))
    try:
        stage = ParquetDataCatalog(str(stage_root))
        writer = _ArrowStagedWriter(stage, result, catalog_dir) if engine == "arrow" else _StagedWriter(
            stage, result, catalog_dir)
        writer.stage_root = stage_root
        instruments = {}
        pool, futures = None, {}
        try:
            if engine == "arrow" and jobs > 1:
                pool, futures = _start_workers(paths, registry, jobs, stage_root)
            for index, path in enumerate(paths):
                if not path.exists():
                    raise ImportRejected(f"{path}: no such file")
                if engine == "arrow":
                    instrument, plan = _fast_plan(path, registry)
                    why = plan if instrument is None else None
                    if instrument is not None:
                        why = _run_fast(path, index, plan, futures, writer, log, instrument.id.value, progress)
                    if why is None:
                        instruments[instrument.id.value] = instrument
                        result.engines[str(path)] = ("arrow", None)
                        continue
                    result.engines[str(path)] = ("objects", why)
                else:
                    result.engines[str(path)] = ("objects", None)
                try:
                    batches = iter_batches(path, registry, log)
                    for kind, instrument, items in batches:
                        instruments[instrument.id.value] = instrument
                        writer.add(kind, instrument.id.value, items, str(path))
                except UnknownFormat as e:
                    raise ImportRejected(str(e)) from None
                if progress is not None:
                    stats = log.files.get(str(path))
                    progress(_input_size(path), stats.messages if stats else 0)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
        if instruments:
            stage.write_data([instruments[k] for k in sorted(instruments)])
        for staged in _staged_files(stage_root):
            if staged not in getattr(writer, "final", ()):
                _recompress(staged)
        moves = _plan_moves(stage_root, catalog_dir, result)
        # The marker first: an import killed while moving leaves a valid catalog holding part of
        # the input, which the same import run again completes (moved files are duplicates).
        # It records the book invariant of each instrument this import adds order-book files to
        # (an import of duplicates only changes nothing).
        marker = catalog_dir / VERSION_FILE
        rec = json.loads(marker.read_text()) if marker.exists() else _version_record()
        added = {dst.parent.name for _, dst in moves if dst.parent.parent.name == "order_book_deltas"}
        invariants = dict(rec.get(INVARIANT_KEY) or {})
        for iid in sorted(added & set(writer.invariants)):
            invariants[iid] = merge_invariant(invariants.get(iid), writer.invariants[iid].record())
        if invariants:
            rec[INVARIANT_KEY] = dict(sorted(invariants.items()))
        if not marker.exists() or invariants != (json.loads(marker.read_text()).get(INVARIANT_KEY) or {}):
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, sort_keys=True) + "\n")
            os.replace(tmp, marker)
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        result.files_added = len(moves)
        return result
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)


# Market data whose rows Nautilus' decoders build with the file's parquet schema metadata, by data
# folder (Nautilus' ``class_to_filename``): the keys each needs. Without one of them Nautilus panics
# in Rust (an abort, exit 134, no message of ours; mark prices: after the whole replay, when the
# report reads them) or raises a TypeError (funding); with another instrument's precisions the
# venue raises inside the engine loop (hostile review 34 F2, F4).
_PRICE_SIZE = ("instrument_id", "price_precision", "size_precision")
_DECODE_KEYS = {
    "order_book_deltas": _PRICE_SIZE, "order_book_depths": _PRICE_SIZE, "quote_tick": _PRICE_SIZE,
    "trade_tick": _PRICE_SIZE, "mark_price_update": ("instrument_id", "price_precision"),
    "index_price_update": ("instrument_id", "price_precision"), "funding_rate_update": ("instrument_id",),
}


def _check_decode_metadata(path: Path, meta: dict | None, kind: str, folder: str,
                           instrument_precisions: tuple[int, int] | None) -> None:
    """One line (``CatalogError``) unless ``path`` (a ``kind`` file in the folder ``folder``) has
    the schema metadata Nautilus' decoder needs for ``kind``: an ``instrument_id`` whose folder
    (Nautilus' ``urisafe_identifier``: "EUR/USD.SIM" is in "EURUSD.SIM") is ``folder``, and the
    precisions, integers 0..16 equal to the catalog instrument's when it has one."""
    from nautilus_trader.persistence.funcs import urisafe_identifier

    def shown(v: str) -> str:  # a hostile value is named, not printed whole
        return repr(v if len(v) <= 24 else v[:20] + "...")

    meta = meta or {}
    keys = _DECODE_KEYS[kind]
    missing = [k for k in keys if k.encode() not in meta]
    if missing:
        raise CatalogError(f"{path}: the parquet schema metadata has no {', '.join(missing)} (Nautilus' decoder "
                           "needs them): delete the file and import its source again, or import into a new catalog")
    iid = meta[b"instrument_id"].decode(errors="replace")
    if urisafe_identifier(iid) != folder:
        raise CatalogError(f"{path}: the parquet schema metadata says instrument_id {shown(iid)}, the file is in "
                           f"the folder of {folder}")
    got = {}
    for k in keys[1:]:
        v = meta[k.encode()].decode(errors="replace")
        if not (len(v) <= 2 and v.isascii() and v.isdigit() and int(v) <= 16):
            raise CatalogError(f"{path}: the parquet schema metadata's {k} is {shown(v)}, not an integer 0..16")
        got[k] = int(v)
    if instrument_precisions is not None:
        want = dict(zip(("price_precision", "size_precision"), instrument_precisions, strict=True))
        wrong = [k for k in got if got[k] != want[k]]
        if wrong:
            raise CatalogError(f"{path}: the parquet schema metadata gives "
                               + ", ".join(f"{k} {got[k]}" for k in wrong) + f", the catalog's instrument {iid} has "
                               + ", ".join(f"{want[k]}" for k in wrong))


def list_catalog(catalog_dir: Path | str, check: Iterable[str] | None = None) -> dict:
    """Instruments, data types, row counts and time ranges (from parquet metadata). The market-data
    files of the instruments in ``check`` (None: every instrument) must carry what Nautilus' decoder
    needs (``_check_decode_metadata``): a replay of another instrument is not refused over them."""
    catalog = open_catalog(catalog_dir)
    root = Path(catalog_dir) / "data"
    data: list[dict] = []
    known = sorted(catalog.instruments(), key=lambda i: i.id.value)
    from nautilus_trader.persistence.funcs import urisafe_identifier

    # by data folder: Nautilus names an instrument's folder by its URI-safe id
    precisions = {urisafe_identifier(i.id.value): (i.price_precision, i.size_precision) for i in known}
    check = None if check is None else {urisafe_identifier(c) for c in check}
    for type_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        if type_dir.name == "crypto_perpetual":
            continue
        # Nautilus reads every parquet file below data/<kind>/, at any depth, as the instrument its
        # folder is named after (``get_file_list_from_data_cls``, ``filter_files``): a copy one folder
        # deeper (data/<kind>/old/<id>/...) is replayed too, the book twice by the per-delta feed,
        # and never reached by the checks below (hostile review 35 D1). Neither mmbot nor Nautilus
        # writes such a layout.
        for f in sorted(type_dir.glob("*/*/**/*.parquet")):
            if check is None or f.parent.name in check:
                raise CatalogError(f"{f}: a parquet file below {type_dir}/<instrument>/: Nautilus would replay it "
                                   f"as {f.parent.name}'s data (twice, or unchecked); move it out of the catalog")
        for id_dir in sorted(p for p in type_dir.iterdir() if p.is_dir()):
            files = sorted(id_dir.glob("*.parquet"))
            rows, start, end = 0, None, None
            for f in files:
                try:
                    pf = pq.ParquetFile(f)
                    rows += pf.metadata.num_rows
                except (OSError, pa.ArrowException) as e:  # truncated, not parquet: one line, not a traceback
                    raise CatalogError(f"{f}: not a readable parquet file ({e})") from None
                if type_dir.name in _DECODE_KEYS and (check is None or id_dir.name in check):
                    _check_decode_metadata(f, pf.schema_arrow.metadata, type_dir.name, id_dir.name,
                                           precisions.get(id_dir.name))
                interval = _parse_filename_timestamps(f.name)
                if interval:
                    start = interval[0] if start is None else min(start, interval[0])
                    end = interval[1] if end is None else max(end, interval[1])
            data.append({
                "data_type": type_dir.name, "instrument_id": id_dir.name, "files": len(files),
                "rows": rows, "start_ns": start, "end_ns": end,
            })
    instruments = [
        {
            "instrument_id": i.id.value, "price_increment": str(i.price_increment),
            "size_increment": str(i.size_increment), "min_quantity": str(i.min_quantity),
            "min_notional": str(i.min_notional), "maker_fee": str(i.maker_fee), "taker_fee": str(i.taker_fee),
        }
        for i in known
    ]
    return {"catalog": str(catalog_dir), "nautilus_trader": nautilus_trader.__version__, "instruments": instruments, "data": data}
