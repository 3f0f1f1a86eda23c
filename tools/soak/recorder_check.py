"""Did the recorder lose anything? The recording, imported with ``mmbot catalog import --strict``,
against what the loopback exchange broadcast, second by second.

- Import: every ``*.jsonl.gz`` of the recording directory into a fresh catalog with ``--strict``
  (any problem in the recording - a gap in ``u``, a crossed book, a malformed or truncated line -
  rejects the import: the recording is not clean).
- Rows per second, from the catalog: order-book delta rows that are not part of a snapshot
  (``F_SNAPSHOT`` clear: a subscription snapshot is sent to one connection, not broadcast) and
  trade rows, each by the second of its ``ts_event`` (the exchange's ``ts`` / ``T``).
- Published per second: ``GET /__control/published`` of the exchange, same topics, same seconds.
- Compared over the whole seconds strictly inside [ready, stop signal], minus the declared windows
  of public-data faults (rounded outwards to whole seconds). **Lost** = published rows missing from
  the recording in a compared second; **extra** = recorded rows beyond what was published there.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

F_SNAPSHOT = 32  # nautilus_trader.model.enums.RecordFlag.F_SNAPSHOT (checked in tests)
REPO = Path(__file__).resolve().parents[2]


def import_recording(rec_dir: Path, catalog: Path, report: Path, timeout_s: float = 1800) -> dict:
    """Run ``mmbot catalog import --strict``; {"ok", "files", "exit_code", "error", "report"}."""
    files = sorted(rec_dir.glob("*.jsonl.gz"))
    if not files:
        return {"ok": False, "files": [], "exit_code": None, "error": f"no recording in {rec_dir}", "report": None}
    cmd = [sys.executable, "-m", "mmbot.cli", "catalog", "import", *map(str, files), "--catalog", str(catalog),
           "--strict", "--report", str(report)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    rep = json.loads(report.read_text()) if report.exists() else None
    err = "" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["(no message)"])[-1]
    return {"ok": p.returncode == 0, "files": [str(f) for f in files], "exit_code": p.returncode, "error": err,
            "report": rep, "command": " ".join(cmd)}


def catalog_rows_per_second(catalog: Path, instrument_id: str) -> dict[str, dict[int, int]]:
    """{"book": {second: delta rows without F_SNAPSHOT}, "book_snapshot_rows": {...}, "trades": {...}}."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: dict[str, dict[int, int]] = {"book": {}, "book_snapshot_rows": {}, "trades": {}}

    def add(bucket: dict[int, int], ts_ns) -> None:
        secs = pc.divide(ts_ns, 1_000_000_000)  # integer division on uint64
        counts = pc.value_counts(secs)
        for item in counts.to_pylist():
            bucket[int(item["values"])] = bucket.get(int(item["values"]), 0) + int(item["counts"])

    for path in sorted((catalog / "data" / "order_book_deltas" / instrument_id).glob("*.parquet")):
        t = pq.read_table(path, columns=["flags", "ts_event"])
        snap = pc.not_equal(pc.bit_wise_and(t["flags"], F_SNAPSHOT), 0)
        add(out["book"], pc.filter(t["ts_event"], pc.invert(snap)))
        add(out["book_snapshot_rows"], pc.filter(t["ts_event"], snap))
    for path in sorted((catalog / "data" / "trade_tick" / instrument_id).glob("*.parquet")):
        add(out["trades"], pq.read_table(path, columns=["ts_event"])["ts_event"])
    return out


def excused_seconds(windows: list[tuple[float, float]]) -> set[int]:
    """Whole seconds touched by any window [a, b] (epoch seconds), rounded outwards."""
    out: set[int] = set()
    for a, b in windows:
        out.update(range(math.floor(a), math.ceil(b) + 1))
    return out


def compare(published: dict[str, dict[int, int]], recorded: dict[int, int], t_from: float, t_to: float,
            windows: list[tuple[float, float]]) -> dict:
    """``published``/``recorded``: rows per second of one stream. Seconds compared: whole seconds
    s with t_from <= s and s + 1 <= t_to, not excused by ``windows``."""
    first, last = math.ceil(t_from), math.floor(t_to) - 1
    excused = excused_seconds(windows)
    lost = extra = pub_total = rec_total = 0
    lost_in_windows = 0
    worst: list[dict] = []
    compared = 0
    for s in range(first, last + 1):
        p, r = published.get(s, 0), recorded.get(s, 0)
        if s in excused:
            lost_in_windows += max(0, p - r)
            continue
        compared += 1
        pub_total += p
        rec_total += r
        if p != r:
            lost += max(0, p - r)
            extra += max(0, r - p)
            if len(worst) < 20:
                worst.append({"second": s, "published": p, "recorded": r})
    return {"seconds_compared": compared, "seconds_excused": len([s for s in range(first, last + 1) if s in excused]),
            "published_rows": pub_total, "recorded_rows": rec_total, "lost_rows": lost, "extra_rows": extra,
            "lost_rows_inside_windows": lost_in_windows, "differing_seconds": worst}
