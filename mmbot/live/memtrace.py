"""Opt-in memory tracing of a live or shadow session, to attribute RSS growth (docs/runbook.md, "Soak").

Off unless the environment sets ``MMBOT_TRACEMALLOC=<seconds>``: nothing is imported, started or
allocated in the default path. When set (a positive number of seconds), ``maybe_start(run_dir)``
starts ``tracemalloc`` with ``MMBOT_TRACEMALLOC_FRAMES`` frames (default 6) and a daemon thread
that, every ``<seconds>`` and on SIGUSR1, writes into ``<run_dir>/tracemalloc/``:

- ``snap-NNNN.tracemalloc``: ``tracemalloc.take_snapshot().dump()`` (compare two with
  ``python -m tools.soak.memdiff A B``);
- one line of ``memtrace.jsonl``: wall time, the process' RSS, the traced Python heap (current,
  peak) and the 40 most numerous gc-tracked object types. RSS minus traced is what Python's
  allocator does not see (Nautilus' Rust core, arenas, fragmentation).

Tracing slows the node (every allocation records its traceback) and snapshots stop it for a
moment: a diagnostic run only, never a gated soak.
"""

from __future__ import annotations

import os

ENV_EVERY = "MMBOT_TRACEMALLOC"
ENV_FRAMES = "MMBOT_TRACEMALLOC_FRAMES"


def maybe_start(run_dir, environ=None):
    """Start tracing when ``MMBOT_TRACEMALLOC`` is set; returns the tracer or None (the default)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_EVERY, "")
    if not raw:
        return None
    try:
        every_s = float(raw)
        frames = int(environ.get(ENV_FRAMES, "6"))
    except ValueError:
        every_s, frames = -1.0, 0
    if not (every_s > 0 and every_s < 1e7) or frames < 1:
        raise ValueError(f"environment variable {ENV_EVERY}={raw!r} / {ENV_FRAMES}: expected seconds > 0 "
                         "and frames >= 1")
    tracer = _Tracer(run_dir, every_s, frames)
    tracer.start()
    return tracer


class _Tracer:
    def __init__(self, run_dir, every_s: float, frames: int) -> None:
        from pathlib import Path

        self.dir = Path(run_dir) / "tracemalloc"
        self.every_s = every_s
        self.frames = frames
        self.n = 0

    def start(self) -> None:
        import signal
        import threading
        import tracemalloc

        self.dir.mkdir(parents=True, exist_ok=True)
        tracemalloc.start(self.frames)
        self._wake = threading.Event()
        try:
            signal.signal(signal.SIGUSR1, lambda *_: self._wake.set())
        except ValueError:  # not the main thread: interval only
            pass
        threading.Thread(target=self._loop, name="mmbot-memtrace", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.every_s)
            self._wake.clear()
            try:
                self.dump()
            except Exception as e:  # noqa: BLE001  (diagnostics never stop the node)
                with open(self.dir / "memtrace.err", "a") as f:
                    f.write(f"{type(e).__name__}: {e}\n")

    def dump(self) -> None:
        import collections
        import gc
        import json
        import time
        import tracemalloc

        t = time.time()
        snap = tracemalloc.take_snapshot()
        path = self.dir / f"snap-{self.n:04d}.tracemalloc"
        snap.dump(str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        del snap
        cur, peak = tracemalloc.get_traced_memory()
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(f"/proc/{os.getpid()}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        line = {"n": self.n, "wall_s": round(t, 3), "took_s": round(time.time() - t, 3), "snapshot": path.name,
                "rss_mb": rss_kb / 1024, "traced_mb": cur / 2**20, "traced_peak_mb": peak / 2**20,
                "tracemalloc_overhead_mb": tracemalloc.get_tracemalloc_memory() / 2**20,
                "types": types.most_common(40)}
        with open(self.dir / "memtrace.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        self.n += 1
