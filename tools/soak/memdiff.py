"""Compare two tracemalloc snapshots of a traced session (mmbot/live/memtrace.py).

``python -m tools.soak.memdiff RUN_DIR/tracemalloc [--from N] [--to M] [--top 25] [--group lineno|traceback|filename]``

Prints, per allocation site, the growth between snapshot N (default: the second, past start-up)
and M (default: the last) in MB and in MB/h (wall time from memtrace.jsonl), with the block-count
growth, then the RSS and traced totals of both (RSS growth minus traced growth = what Python's
allocator does not see: Nautilus' Rust core, allocator arenas).
"""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path

_SKIP = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
         tracemalloc.Filter(False, "*/mmbot/live/memtrace.py"))


def load(dir_: Path) -> list[dict]:
    return [json.loads(line) for line in (dir_ / "memtrace.jsonl").read_text().splitlines() if line.strip()]


def diff(dir_: Path, a: int, b: int, group: str = "lineno", top: int = 25) -> tuple[list[dict], dict]:
    lines = load(dir_)
    la, lb = lines[a], lines[b]
    hours = (lb["wall_s"] - la["wall_s"]) / 3600.0
    sa = tracemalloc.Snapshot.load(str(dir_ / la["snapshot"])).filter_traces(_SKIP)
    sb = tracemalloc.Snapshot.load(str(dir_ / lb["snapshot"])).filter_traces(_SKIP)
    rows = []
    for st in sb.compare_to(sa, group)[:top]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in list(st.traceback)[::-1][:8]]
        rows.append({"site": " < ".join(frames), "mb": st.size_diff / 2**20,
                     "mb_per_h": st.size_diff / 2**20 / hours if hours > 0 else float("nan"),
                     "blocks": st.count_diff, "size_mb": st.size / 2**20})
    totals = {"from": a, "to": b, "hours": hours, "rss_mb": (la["rss_mb"], lb["rss_mb"]),
              "traced_mb": (la["traced_mb"], lb["traced_mb"]),
              "overhead_mb": (la["tracemalloc_overhead_mb"], lb["tracemalloc_overhead_mb"]),
              "rss_mb_per_h": (lb["rss_mb"] - la["rss_mb"]) / hours if hours > 0 else float("nan"),
              "traced_mb_per_h": (lb["traced_mb"] - la["traced_mb"]) / hours if hours > 0 else float("nan")}
    ta, tb_ = dict(map(tuple, la["types"])), dict(map(tuple, lb["types"]))
    totals["types_growth"] = sorted(((k, tb_.get(k, 0) - ta.get(k, 0)) for k in set(ta) | set(tb_)),
                                    key=lambda kv: -abs(kv[1]))[:15]
    return rows, totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.soak.memdiff")
    ap.add_argument("dir", type=Path, help="the run folder's tracemalloc/ directory")
    ap.add_argument("--from", dest="a", type=int, default=1)
    ap.add_argument("--to", dest="b", type=int, default=-1)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--group", choices=("lineno", "traceback", "filename"), default="lineno")
    a = ap.parse_args(argv)
    rows, t = diff(a.dir, a.a, a.b, a.group, a.top)
    print(f"snapshots {t['from']} -> {t['to']} over {t['hours'] * 60:.1f} min: RSS {t['rss_mb'][0]:.1f} -> "
          f"{t['rss_mb'][1]:.1f} MB ({t['rss_mb_per_h']:+.1f} MB/h), traced {t['traced_mb'][0]:.1f} -> "
          f"{t['traced_mb'][1]:.1f} MB ({t['traced_mb_per_h']:+.1f} MB/h); tracemalloc's own "
          f"{t['overhead_mb'][0]:.1f} -> {t['overhead_mb'][1]:.1f} MB; untraced (RSS - traced - tracemalloc's own) "
          f"{t['rss_mb_per_h'] - t['traced_mb_per_h'] - (t['overhead_mb'][1] - t['overhead_mb'][0]) / t['hours']:+.1f} MB/h")
    print(f"{'MB/h':>8} {'MB':>7} {'blocks':>9} {'now MB':>7}  site")
    for r in rows:
        print(f"{r['mb_per_h']:8.2f} {r['mb']:7.2f} {r['blocks']:9d} {r['size_mb']:7.2f}  {r['site']}")
    print("gc-tracked object types, count growth:", ", ".join(f"{k} {v:+d}" for k, v in t["types_growth"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
