"""The C heap of a replay (mmbot/backtest/heap.py): glibc's mmap threshold fixed before the replay,
its free pages given back after every replayed chunk (before the next is decoded) and after the
replay, in both feeds and in portfolio runs; no-ops where the C library has no such calls; no
output changes. The effect on the peak is measured, not tested (tools/bench speed --parts memory,
docs/benchmarks.md "Session 31 — the C heap")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import mmbot.backtest.heap as heap
import mmbot.backtest.run as run_mod
from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import load_backtest_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "backtest.toml"
WINDOW = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:02:00Z"']
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")


def _python(code: str, *args: str, env: dict | None = None) -> str:
    """stdout of ``code`` run in a fresh interpreter (glibc's settings are per process)."""
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})})
    return r.stdout


def _cfg(*sets: str, window: list[str] = WINDOW):
    return load_backtest_config(CONFIG, [*window, "report.html=false", "run.progress=false", *sets])


class _Journaled:
    """The real engine, every call run_engine makes on it written to ``seen`` first."""

    def __init__(self, engine, seen: list[str]) -> None:
        self._engine, self._seen = engine, seen

    def __getattr__(self, name):
        target = getattr(self._engine, name)
        if name not in ("add_data", "run", "clear_data", "end"):
            return target

        def call(*args, **kwargs):
            self._seen.append(name)
            return target(*args, **kwargs)

        return call


@pytest.fixture
def journal(monkeypatch):
    """Every heap call, and every call the replay makes on the engine, in order; ``items`` the
    messages and trades of each chunk."""
    seen: list[str] = []
    seen_items: list[int] = []

    def release():
        seen.append("release")
        return True

    def fix():
        seen.append("fix")
        return True

    def arrow():
        seen.append("arrow")
        return True

    real_sizing = run_mod.resolve_backtest_sizing

    def sizing(*args, **kwargs):  # the first pass that reads the catalog through Arrow
        seen.append("sizing")
        return real_sizing(*args, **kwargs)

    chunks = run_mod.cached_chunks
    real_run_engine = run_mod.run_engine

    def counted(feed):
        for chunk in chunks(feed):
            if chunk:
                seen_items.append(len(chunk))
            yield chunk

    monkeypatch.setattr(heap, "release_free_heap", release)  # run_engine reads it from the module
    monkeypatch.setattr(run_mod, "release_free_heap", release)
    monkeypatch.setattr(run_mod, "fix_mmap_threshold", fix)
    monkeypatch.setattr(run_mod, "arrow_pool_to_glibc", arrow)
    monkeypatch.setattr(run_mod, "resolve_backtest_sizing", sizing)
    monkeypatch.setattr(run_mod, "cached_chunks", counted)
    monkeypatch.setattr(run_mod, "run_engine", lambda engine, *a, **k: real_run_engine(_Journaled(engine, seen), *a, **k))
    return SimpleNamespace(seen=seen, items=seen_items)


def _expected(items: list[int]) -> list[str]:
    """The journal the rule gives: the threshold fixed and Arrow's pool switched before the first
    catalog pass; each chunk added, replayed and cleared; then a release once RELEASE_EVERY_ITEMS
    messages and trades were replayed since the last one; one after the end."""
    out, since = ["fix", "arrow", "sizing"], 0
    for n in items:
        out += ["add_data", "run", "clear_data"]
        since += n
        if since >= heap.RELEASE_EVERY_ITEMS:
            out.append("release")
            since = 0
    return out + ["end", "clear_data", "release"]


def test_per_message_feed_releases_after_replayed_chunks_and_after_the_replay(journal, tmp_path):
    """Default chunks (50,000 rows: thousands of items each): every chunk is added, replayed and
    cleared, THEN its memory is given back, before the next chunk is handed over."""
    out = run_backtest(_cfg('run.feed="per_message"', window=[WINDOW[0], 'run.end="2024-12-01T08:10:00Z"']),
                       out_dir=tmp_path / "run")
    assert out.feed == "per_message"
    items = journal.items
    assert len(items) >= 3 and sorted(items)[1] >= heap.RELEASE_EVERY_ITEMS, items
    assert journal.seen == _expected(items)
    assert journal.seen.count("release") >= len(items)  # every full chunk, and the end


def test_small_chunks_release_by_items_replayed_not_per_chunk(journal, tmp_path):
    """``run.chunk_size`` of 100 rows: a release every RELEASE_EVERY_ITEMS messages and trades,
    right after a replayed chunk is cleared (review 37 F6: one trim per chunk cost +24 % wall at
    chunk_size 1)."""
    run_backtest(_cfg('run.feed="per_message"', "run.chunk_size=100"), out_dir=tmp_path / "run")
    items = journal.items
    assert len(items) > 100
    assert journal.seen == _expected(items)
    assert 2 <= journal.seen.count("release") < len(items) / 5


def test_per_delta_feed_releases_after_the_replay(journal, tmp_path):
    out = run_backtest(_cfg('run.feed="per_delta"'), out_dir=tmp_path / "run")
    assert out.feed == "per_delta"
    assert journal.seen == ["fix", "arrow", "sizing", "release"]


def test_portfolio_run_fixes_and_releases(monkeypatch, tmp_path):
    import mmbot.backtest.portfolio as portfolio

    seen: list[str] = []
    monkeypatch.setattr(run_mod, "fix_mmap_threshold", lambda: seen.append("fix") or True)
    monkeypatch.setattr(run_mod, "arrow_pool_to_glibc", lambda: seen.append("arrow") or True)
    monkeypatch.setattr(portfolio, "release_free_heap", lambda: seen.append("release") or True)
    cfg = load_backtest_config(REPO / "config" / "portfolio.toml",
                               ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:00:00Z"',
                                "report.html=false", "run.progress=false"])
    run_backtest(cfg, out_dir=tmp_path / "run")
    assert seen == ["fix", "arrow", "release"]


_RUN = r"""
import sys
from pathlib import Path
import mmbot.backtest.heap as heap
from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import load_backtest_config
if sys.argv[2] == "off":  # no glibc: neither the threshold nor a trim
    heap._libc = False
cfg = load_backtest_config(Path("config/backtest.toml"), ['run.start="2024-12-01T07:58:00Z"',
    'run.end="2024-12-01T08:02:00Z"', "report.html=false", "run.progress=false", "run.chunk_size=2000"])
run_backtest(cfg, out_dir=Path(sys.argv[1]))
assert heap._threshold_fixed is (sys.argv[2] == "on")
import pyarrow as pa
assert pa.default_memory_pool().backend_name == ("system" if sys.argv[2] == "on" else "mimalloc")
"""


def test_outputs_do_not_depend_on_the_heap_calls(tmp_path):
    """Each run in a process of its own (the threshold is process-wide): with the threshold and
    the trims, and with neither; the outputs are the same bytes."""
    for mode in ("on", "off"):
        _python(_RUN, str(tmp_path / mode), mode)
    for name in OUTPUTS:
        assert (tmp_path / "on" / name).read_bytes() == (tmp_path / "off" / name).read_bytes(), name


@pytest.mark.skipif(not heap._c_library(), reason="not glibc: the no-op path is tested below")
def test_glibc_calls_answer_true():
    assert heap.fix_mmap_threshold() is True
    assert heap.fix_mmap_threshold() is True  # once per process, then remembered
    assert heap.release_free_heap() is True


def test_without_glibc_both_are_no_ops(monkeypatch):
    class NoSuchCalls:  # a C library without mallopt/malloc_trim (musl, macOS)
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: NoSuchCalls())
    monkeypatch.setattr(heap, "_libc", None)
    monkeypatch.setattr(heap, "_threshold_fixed", False)
    monkeypatch.setattr(heap, "_arrow_pool_set", False)
    assert heap.release_free_heap() is False
    assert heap.fix_mmap_threshold() is False
    assert heap.arrow_pool_to_glibc() is False
    assert heap._libc is False  # looked up once


def test_no_dlopen_null_is_a_no_op(monkeypatch):
    def refuse(name):
        raise TypeError("dlopen(NULL) unsupported")  # Windows' ctypes.CDLL(None)

    monkeypatch.setattr(heap.ctypes, "CDLL", refuse)
    monkeypatch.setattr(heap, "_libc", None)
    monkeypatch.setattr(heap, "_threshold_fixed", False)
    assert heap.fix_mmap_threshold() is False
    assert heap.release_free_heap() is False


_FRAGMENTED = r"""
from mmbot.backtest import heap
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
pins = []

def fragment_and_release():
    big = []
    for _ in range(800):
        big.append(bytearray(64 * 1024))  # from the heap: under glibc's mmap threshold
        pins.append(bytearray(600))       # outlives its neighbour: the freed pages sit mid-heap
    del big
    before = rss_mb()
    assert heap.release_free_heap() is True
    return before - rss_mb()

print(fragment_and_release(), fragment_and_release(), pins[0] is not None)  # every call trims, not the first only
"""


@pytest.mark.skipif(not heap._c_library() or not Path("/proc/self/status").exists(), reason="glibc on Linux only")
def test_release_gives_freed_mid_heap_pages_back():
    """The call itself, in a fresh process: 50 MB freed between live blocks stays resident after
    free() (glibc only trims its heap's top) and leaves with ``release_free_heap``."""
    first, second, _ = _python(_FRAGMENTED).split()
    assert float(first) > 30.0 and float(second) > 30.0  # MB returned (of ~50), each time


_THRESHOLD = r"""
import ctypes
from mmbot.backtest import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped(size):  # 1 when a block of this size gets its own mapping
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after - before

fixed = heap.fix_mmap_threshold()
print(fixed, mapped(2 << 20), mapped(6 << 20), mapped(6 << 20))
"""


@pytest.mark.skipif(not heap._c_library() or not hasattr(heap._c_library(), "mallinfo2"), reason="glibc >= 2.33")
@pytest.mark.parametrize("env, want", [
    ({}, "True 0 1 1"),  # 4 MiB, fixed: 2 MiB from the heap; 6 MiB mapped every time
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False 1 1 1"),  # the user's 64 KiB kept
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "False 1 1 1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.mmap_threshold=65536"}, "False 1 1 1"),
    # misspelt tunables glibc ignores: the threshold is still fixed (review 38 F3)
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold = 65536"}, "True 0 1 1"),
    ({"GLIBC_TUNABLES": "x.glibc.malloc.mmap_threshold=65536"}, "True 0 1 1"),
])
def test_the_threshold_is_glibcs_mmap_threshold_fixed_at_4_mib(env, want):
    """In a fresh process, from glibc's own count of mapped blocks: after ``fix_mmap_threshold`` a
    2 MiB block comes from the heap and a 6 MiB block is mapped, and still after one was freed
    (glibc's dynamic rule would then have raised the threshold to 6 MiB: "True 1 1 0" unfixed);
    a threshold the user set is left alone."""
    assert _python(_THRESHOLD, env=env).strip() == want


_ARROW_POOL = r"""
import pyarrow as pa
from mmbot.backtest import heap
print(pa.default_memory_pool().backend_name, heap.arrow_pool_to_glibc(), heap.arrow_pool_to_glibc(),
      pa.default_memory_pool().backend_name)
"""


@pytest.mark.skipif(not heap._c_library(), reason="not glibc: Arrow's pool is left as it is")
@pytest.mark.parametrize("env, want", [
    ({}, "mimalloc True True system"),
    # the user's choice when the process started is left alone
    ({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}, "mimalloc False False mimalloc"),
    ({"ARROW_DEFAULT_MEMORY_POOL": "system"}, "system False False system"),
    ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "jemalloc False False jemalloc"),
    # a value Arrow refuses (it falls back to mimalloc): still the user's to fix, not replaced
    ({"ARROW_DEFAULT_MEMORY_POOL": "bogus"}, "mimalloc False False mimalloc"),
])
def test_arrow_buffers_come_from_glibc_unless_the_user_chose_a_pool(env, want):
    """In a fresh process: pyarrow's default pool (its bundled mimalloc) becomes the system pool
    (glibc), once; a pool named in ``ARROW_DEFAULT_MEMORY_POOL`` at the start is kept."""
    assert _python(_ARROW_POOL, env=env).strip() == want


_ARROW_POOL_CHOSEN = r"""
import os, sys
from mmbot.backtest import heap
if sys.argv[1].startswith("environment"):  # set after the start, before Arrow's first use (read then)
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = sys.argv[1].partition(" ")[2]
import pyarrow as pa
if sys.argv[1] == "set_memory_pool":
    pa.set_memory_pool(pa.jemalloc_memory_pool())
print(heap.arrow_pool_to_glibc(), pa.default_memory_pool().backend_name)
"""


@pytest.mark.skipif(not heap._c_library(), reason="not glibc: Arrow's pool is left as it is")
@pytest.mark.parametrize("how, want", [("set_memory_pool", "jemalloc"), ("environment jemalloc", "jemalloc"),
                                       ("environment mimalloc", "mimalloc")])
def test_a_pool_the_user_chose_in_the_process_is_kept(how, want):
    """A notebook's ``pa.set_memory_pool``, or the variable set in the process before Arrow's first
    use, is the user's choice too (hostile review 39 F4: both became the system pool), mimalloc
    named there included."""
    assert _python(_ARROW_POOL_CHOSEN, how).strip() == f"False {want}"


def test_a_variable_set_after_the_start_does_not_count(monkeypatch):
    """glibc read its environment when the process started; one set later (for child processes)
    does not stop this process fixing its own threshold (review 38 F3)."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert heap.user_set_threshold() is ("MALLOC_MMAP_THRESHOLD_" in heap._START_ENVIRON)
    assert heap.user_set_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) is True
    assert heap.user_set_threshold({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold"}) is False  # no value


def test_a_forced_stop_still_gives_the_replays_pages_back(monkeypatch):
    """``run_engine`` ending on a force stop before RELEASE_EVERY_ITEMS items trims before it
    returns (review 38 F2: it returned with nothing given back)."""
    import nautilus_trader.common.component as component

    from mmbot.backtest.feed import run_engine

    seen: list[str] = []

    class Engine:  # the four calls run_engine makes; the stop comes after the second chunk
        def add_data(self, data, validate, sort):
            seen.append(f"add {len(data)}")

        def run(self, **kwargs):
            seen.append("run")

        def clear_data(self):
            seen.append("clear")

        def end(self):
            seen.append("end")

    stops = iter([False, True])
    monkeypatch.setattr(component, "is_backtest_force_stop", lambda: next(stops))
    monkeypatch.setattr(heap, "release_free_heap", lambda: seen.append("release") or True)
    run_engine(Engine(), iter([[0] * 600, [0] * 300]), None, None)
    assert seen == ["add 600", "run", "clear", "add 300", "run", "clear", "release"]
