"""Where a process' resident memory sits, sampled from /proc/PID/smaps without stopping it.

``python -m tools.soak.smaps PID OUT.jsonl [--every 60]`` appends one line per sample until the
process ends; ``python -m tools.soak.smaps --summary OUT.jsonl [--from-min 15]`` prints each class's
growth in MB/h from the first sample at or after ``--from-min`` to the last.

Classes (x86-64 glibc, CPython 3.12): ``heap`` = the main malloc arena (brk: the main thread's
malloc: Python objects above 512 bytes, Nautilus' Rust core called from the event loop);
``thread_arenas`` = 64 MiB-aligned anonymous regions (glibc arenas of other threads: Nautilus' Rust
tokio workers and logger, Python's helper threads); ``pymalloc`` = isolated 1 MiB anonymous
regions (CPython's small-object arenas; the kernel merges adjacent anonymous maps, so most of them
are counted in ``anon_other``); ``anon_other`` = other anonymous maps (CPython's merged arenas, large
mallocs, thread stacks, numpy buffers); ``files`` = mapped libraries and files.
"""

from __future__ import annotations

import argparse
import json
import re
import time

_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
ARENA_ALIGN = 64 << 20


def classify(start: int, size_kb: int, name: str) -> str:
    if name == "[heap]":
        return "heap"
    if name.startswith("/"):
        return "files"
    if name:
        return "other"  # [stack], [vdso], ...
    if start % ARENA_ALIGN == 0 and size_kb <= 65536:
        return "thread_arenas"
    if size_kb == 1024:
        return "pymalloc"
    return "anon_other"


def sample(pid: int) -> dict:
    out: dict[str, int] = {}
    cls = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _MAP.match(line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                cls = classify(start, (end - start) >> 10, m.group(3).strip())
            elif line.startswith("Rss:") and cls is not None:
                out[cls] = out.get(cls, 0) + int(line.split()[1])
    return {"t": time.time(), "rss_kb": out, "total_kb": sum(out.values())}


def summary(path: str, from_min: float) -> list[tuple[str, float, float, float]]:
    rows = [json.loads(x) for x in open(path) if x.strip()]
    t0 = rows[0]["t"]
    a = next(r for r in rows if r["t"] - t0 >= from_min * 60)
    b = rows[-1]
    h = (b["t"] - a["t"]) / 3600.0
    out = []
    for k in sorted(set(a["rss_kb"]) | set(b["rss_kb"]) | {"total"}):
        x = a["total_kb"] if k == "total" else a["rss_kb"].get(k, 0)
        y = b["total_kb"] if k == "total" else b["rss_kb"].get(k, 0)
        out.append((k, x / 1024, y / 1024, (y - x) / 1024 / h if h > 0 else float("nan")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.soak.smaps")
    ap.add_argument("pid", nargs="?", type=int)
    ap.add_argument("out")
    ap.add_argument("--every", type=float, default=60.0)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--from-min", type=float, default=15.0)
    a = ap.parse_args(argv)
    if a.summary:
        for k, x, y, r in summary(a.out, a.from_min):
            print(f"{k:14s} {x:8.1f} -> {y:8.1f} MB  {r:+7.1f} MB/h")
        return 0
    while True:
        try:
            s = sample(a.pid)
        except (FileNotFoundError, ProcessLookupError):
            return 0
        with open(a.out, "a") as f:
            f.write(json.dumps(s) + "\n")
        time.sleep(a.every)


if __name__ == "__main__":
    raise SystemExit(main())
