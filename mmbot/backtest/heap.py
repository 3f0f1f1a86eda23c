"""Keep a long replay's C heap from growing with the run's length (issue 14, "peak memory flat
from 1 h to 4 h"; measured in docs/benchmarks.md, "Session 31 — the C heap").

What grows. Over a backtest, the objects alive stay nearly flat: Python's own allocations grow
~1.9 MB an hour (Nautilus' position snapshots, tracemalloc), and glibc's bytes in use stay at
~135 MB. What grows is glibc's *free* space, 27 -> 66 MB over a 4-hour replay of the generated
ob50 catalog (``mallinfo2().fordblks``): each 50,000-row chunk decodes into buffers of hundreds of
KB that glibc serves from its heaps, freed, then fragmented by the small objects that outlive them.
glibc keeps those pages; the resident size, and with it the peak, grows with the run.

Three calls, the first two glibc's own (``mallopt(3)``, ``malloc_trim(3)``):

1. ``fix_mmap_threshold``, once per process before a replay: allocations of at least
   ``MMAP_THRESHOLD_BYTES`` get their own mapping, returned to the system when freed. glibc's
   default starts at 128 KiB but raises it (up to 32 MiB) each time such a block is freed, so after
   the first chunk every chunk's buffers land in the heap. Setting it fixes it.
2. ``release_free_heap`` after the replayed chunks that bring at least ``RELEASE_EVERY_ITEMS``
   book messages and trades since the last call (with the default ``run.chunk_size`` every chunk),
   and after the replay (mmbot/backtest/feed.py ``run_engine``; the per-delta and portfolio paths
   after ``node.run``): glibc gives its free pages back (``malloc_trim(0)``: every arena, whole
   free pages). ~0.5 ms a call, ~60 calls a 4-hour run. Counted by items, not chunks: a trim walks
   every free block whether or not anything was freed, and ``run.chunk_size = 1`` made 100,943
   calls (+24 % wall) in a 10-minute window (hostile review 37 F6).

3. ``arrow_pool_to_glibc``, once per process before a replay: Arrow's buffers (the catalog passes
   before the replay, the report's frames and parquet files) come from glibc, under the same
   threshold and trims, not from pyarrow's bundled mimalloc, which kept what it freed.

The per-delta and portfolio replays are Nautilus' own streaming: they get the fixed threshold (most
of the effect) and one trim, before the report. The threshold is process-wide and stays set for the
process's life (a notebook or test session that runs a backtest keeps it). A threshold the user
set for glibc (``MALLOC_MMAP_THRESHOLD_``, or ``glibc.malloc.mmap_threshold`` in
``GLIBC_TUNABLES``) is left alone (review 37 F7).

Measured on the generated ob50 catalogs (1 h / 4 h, default backtest, peak RSS, ``python -m
tools.bench speed --parts memory``, three sittings): 508-518 / 553-566 MB (x1.075-1.094) before,
496-500 / 523-528 MB (x1.049-1.064) with both calls; CPU the same (docs/benchmarks.md).

Elsewhere (musl, macOS, Windows: no ``mallopt``/``malloc_trim`` in the C library) all three are
no-ops that answer False: the run is the same, only its memory is not trimmed. None changes a
result: they decide where freed memory goes, not what is computed. Live and shadow sessions do not
call them (a trim holds glibc's arena locks while it walks them, on a loop that quotes)."""

from __future__ import annotations

import ctypes
import os

# 4 MiB: the decoded chunk's large buffers are mapped and unmapped; at 1 MiB the many 1-4 MiB blocks
# cost ~2-4 % CPU in page faults for no less peak (docs/benchmarks.md, "Session 31")
MMAP_THRESHOLD_BYTES = 4 << 20
RELEASE_EVERY_ITEMS = 1_000  # book messages + trades between two trims (a default chunk of the embedded hour: 14-19k)
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h

_libc = None
_threshold_fixed = False
_arrow_pool_set = False
_START_ENVIRON = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL")
                  if k in os.environ}


def _c_library():
    """The process's C library when it has glibc's ``mallopt`` and ``malloc_trim``, else False."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None)  # the symbols already loaded into this process: its C library
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.mallopt.restype = ctypes.c_int
            lib.malloc_trim.argtypes = [ctypes.c_size_t]
            lib.malloc_trim.restype = ctypes.c_int
            _libc = lib
        except (OSError, AttributeError, TypeError):  # no such function (not glibc), or no dlopen(NULL)
            _libc = False
    return _libc


def user_set_threshold(environ=None) -> bool:
    """True when the process was started with its own glibc mmap threshold: the environment glibc
    read at the process's start (``_START_ENVIRON``, taken at import, so a variable set later for
    child processes does not count), in glibc's spelling: ``MALLOC_MMAP_THRESHOLD_``, or the tunable
    ``glibc.malloc.mmap_threshold=N`` among ``GLIBC_TUNABLES``' colon-separated ``name=value``
    pairs (a misspelt one, which glibc ignores, does not count: review 38 F3)."""
    env = _START_ENVIRON if environ is None else environ
    if "MALLOC_MMAP_THRESHOLD_" in env:
        return True
    return any(pair.partition("=")[0] == "glibc.malloc.mmap_threshold" and "=" in pair
               for pair in env.get("GLIBC_TUNABLES", "").split(":"))


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES`` (once per process); True when set,
    False without glibc or when the user set one (``user_set_threshold``)."""
    global _threshold_fixed
    if _threshold_fixed:
        return True
    if user_set_threshold():
        return False
    lib = _c_library()
    _threshold_fixed = bool(lib) and lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return _threshold_fixed


def arrow_pool_to_glibc() -> bool:
    """Arrow's buffers from glibc (pyarrow's "system" pool) instead of the mimalloc pyarrow bundles,
    once per process; True when set (or already), False without glibc or when the user chose a
    pool, which is left alone: ``ARROW_DEFAULT_MEMORY_POOL`` set (when the process started or
    since: Arrow reads it when first used; any value, even one Arrow refuses), or a default pool
    other than mimalloc (``pa.set_memory_pool`` in a notebook; hostile review 39 F4).

    Why: mimalloc keeps the pages of the buffers a pass freed for its own reuse, out of reach of
    ``release_free_heap``. The passes before the replay read whole files through Arrow (the tie
    count's stamps, the sizing's and the instrument check's first trades: the 4-hour catalog's
    trade file is 4x the hour's), so what mimalloc kept grew with the catalog, and stayed for the
    replay (peak RSS of the generated ob50 catalogs, three runs each: 496-498 / 520-525 MB, x1.049-
    1.057, with mimalloc; 491-493 / 504-510 MB, x1.027-1.034, from glibc; the same CPU within the
    sitting's noise, docs/benchmarks.md "Session 32"). From glibc, Arrow's blocks follow the fixed
    mmap threshold (the large ones mapped and unmapped) and the trims give the rest back. A buffer
    allocated before the switch is freed to the pool it came from. Most, not all: pyarrow's
    parquet reader keeps a few MB of its own in mimalloc (review 39 F5). The switch is
    process-wide, for the process's life (a notebook, a test session, a wf worker)."""
    global _arrow_pool_set
    if _arrow_pool_set:
        return True
    if "ARROW_DEFAULT_MEMORY_POOL" in _START_ENVIRON or "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return False
    if not _c_library():
        return False
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "mimalloc":
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    _arrow_pool_set = True
    return True


def release_free_heap() -> bool:
    """Return glibc's free heap pages to the system; True when the C library could be asked."""
    lib = _c_library()
    if not lib:
        return False
    lib.malloc_trim(0)
    return True
