"""The C heap of a replay (mmbot/backtest/heap.py): glibc's mmap threshold fixed before the replay,
its free pages given back after every replayed chunk (before the next is decoded) and after the
replay, in both feeds and in portfolio runs; no-ops where the C library has no such calls; no
output changes. The effect on the peak is measured, not tested (tools/bench speed --parts memory,
docs/benchmarks.md "Session 31 — the C heap")."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmbot.backtest.heap as heap
import mmbot.backtest.run as run_mod
from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import load_backtest_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "backtest.toml"
WINDOW = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:02:00Z"']
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")


def _cfg(*sets: str, config: Path = CONFIG):
    return load_backtest_config(config, [*WINDOW, "report.html=false", "run.progress=false", *sets])


@pytest.fixture
def journal(monkeypatch):
    """Every heap call and every chunk handed to the engine, in order."""
    seen: list[str] = []

    def release():
        seen.append("release")
        return True

    def fix():
        seen.append("fix")
        return True

    chunks = run_mod.cached_chunks

    def counted(feed):
        for chunk in chunks(feed):
            if chunk:
                seen.append("chunk")
            yield chunk

    monkeypatch.setattr(heap, "release_free_heap", release)  # run_engine imports it at call time
    monkeypatch.setattr(run_mod, "release_free_heap", release)
    monkeypatch.setattr(run_mod, "fix_mmap_threshold", fix)
    monkeypatch.setattr(run_mod, "cached_chunks", counted)
    return seen


def test_per_message_feed_releases_after_every_chunk_and_after_the_replay(journal, tmp_path):
    out = run_backtest(_cfg('run.feed="per_message"', "run.chunk_size=2000"), out_dir=tmp_path / "run")
    assert out.feed == "per_message"
    n = journal.count("chunk")
    assert n >= 5  # the window is cut into several chunks
    # fixed first; then each chunk is replayed and its memory given back before the next is decoded
    assert journal == ["fix"] + ["chunk", "release"] * n + ["release"]


def test_per_delta_feed_releases_after_the_replay(journal, tmp_path):
    out = run_backtest(_cfg('run.feed="per_delta"'), out_dir=tmp_path / "run")
    assert out.feed == "per_delta"
    assert journal == ["fix", "release"]


def test_portfolio_run_fixes_and_releases(monkeypatch, tmp_path):
    import mmbot.backtest.portfolio as portfolio

    seen: list[str] = []
    monkeypatch.setattr(run_mod, "fix_mmap_threshold", lambda: seen.append("fix") or True)
    monkeypatch.setattr(portfolio, "release_free_heap", lambda: seen.append("release") or True)
    cfg = load_backtest_config(REPO / "config" / "portfolio.toml",
                               ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:00:00Z"',
                                "report.html=false", "run.progress=false"])
    run_backtest(cfg, out_dir=tmp_path / "run")
    assert seen == ["fix", "release"]


def test_outputs_do_not_depend_on_the_heap_calls(monkeypatch, tmp_path):
    run_backtest(_cfg("run.chunk_size=2000"), out_dir=tmp_path / "with")
    monkeypatch.setattr(heap, "release_free_heap", lambda: False)
    monkeypatch.setattr(run_mod, "release_free_heap", lambda: False)
    run_backtest(_cfg("run.chunk_size=2000"), out_dir=tmp_path / "without")
    for name in OUTPUTS:
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes(), name


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
    assert heap.release_free_heap() is False
    assert heap.fix_mmap_threshold() is False
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
big, pins = [], []
for _ in range(800):
    big.append(bytearray(64 * 1024))  # from the heap: under glibc's mmap threshold
    pins.append(bytearray(600))       # outlives its neighbour: the freed pages sit mid-heap
del big
before = rss_mb()
assert heap.release_free_heap() is True
print(before - rss_mb())
"""


@pytest.mark.skipif(not heap._c_library() or not Path("/proc/self/status").exists(), reason="glibc on Linux only")
def test_release_gives_freed_mid_heap_pages_back():
    """The call itself, in a fresh process: 50 MB freed between live blocks stays resident after
    free() (glibc only trims its heap's top) and leaves with ``release_free_heap``."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FRAGMENTED], cwd=REPO, capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert float(r.stdout.strip()) > 30.0  # MB returned (of ~50)
