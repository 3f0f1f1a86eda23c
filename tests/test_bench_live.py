"""tools/bench/live.py's per-thread CPU split (docs/benchmarks.md "Live on loopback")."""

from __future__ import annotations

import os

from tools.bench.live import thread_cpu_s


def test_thread_cpu_s_sums_by_thread_name_and_skips_vanished_threads(tmp_path):
    tck = os.sysconf("SC_CLK_TCK")
    task = tmp_path / "42" / "task"
    rows = {"1": ("python", 3 * tck, tck), "2": ("tokio-rt-worker", tck, 0), "3": ("tokio-rt-worker", 2 * tck, tck),
            "4": ("a (b) c", 0, tck)}  # a name with parentheses: comm is read up to the last ")"
    for tid, (comm, utime, stime) in rows.items():
        (task / tid).mkdir(parents=True)
        rest = " ".join(["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 5)
        (task / tid / "stat").write_text(f"{tid} ({comm}) {rest}\n")
    (task / "5").mkdir()  # no stat: the thread ended between listing and reading
    assert thread_cpu_s(42, tmp_path) == {"python": 4.0, "tokio-rt-worker": 4.0, "a (b) c": 1.0}


def test_thread_cpu_s_of_this_process():
    threads = thread_cpu_s(os.getpid())
    assert threads and all(v >= 0 for v in threads.values())
