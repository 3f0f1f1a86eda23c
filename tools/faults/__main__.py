"""python -m tools.faults [--only KIND,...] [--json OUT] [--jobs N] [--list] [--markdown] [--keep] [--work DIR]

Runs the fault matrix (tools/faults/matrix.py, docs/runbook.md "Fault matrix"): every row its own
loopback exchange on its own port and its own ``mmbot live --env testnet`` process. Prints one line
per finished row on stderr, then the table; exit 0 when every row passes, 1 otherwise, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.faults", description=__doc__.split("\n\n")[1])
    ap.add_argument("--only", default=None, help="comma-separated fault kinds, row names (drop_ws/public) or phases "
                                                  "(during, 'at stop', 'on stop cancel', 'at start', kill-restart, clean)")
    ap.add_argument("--json", dest="json_out", type=Path, default=None, help="write every row's measurements here")
    ap.add_argument("--jobs", type=int, default=1, help="rows run at once (each: one fake + one mmbot process)")
    ap.add_argument("--list", action="store_true", help="print the rows and exit")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--keep", action="store_true", help="keep every row's directory (failing rows' are always kept)")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a new temporary one)")
    args = ap.parse_args(argv)
    if args.jobs < 1 or args.jobs > 16:
        ap.error(f"--jobs {args.jobs}: must be 1..16")

    from tools.faults.matrix import coverage_gaps, run_row, select, table, to_json

    try:
        rows = select(args.only)
    except ValueError as e:
        ap.error(str(e))
    gaps = coverage_gaps()
    if gaps:  # the fake grew a fault the matrix does not run
        print(f"error: the matrix misses {', '.join(gaps)} (tools/faults/matrix.py)", file=sys.stderr)
        return 1
    if args.list:
        for r in rows:
            print(f"{r.name:<24} {r.phase:<14} expect exit {r.expect_exit}  {json.dumps(r.params)}"
                  + (f"  {' '.join(r.extra)}" if r.extra else ""))
        return 0
    if args.json_out is not None and not args.json_out.parent.is_dir():
        ap.error(f"--json {args.json_out}: no such directory {args.json_out.parent}")

    from tests.recordings import generate_recording

    work = args.work or Path(tempfile.mkdtemp(prefix="mmbot-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    recording = generate_recording(work / "rec.jsonl", 2, 7)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    print(f"fault matrix: {len(rows)} row(s), --jobs {args.jobs}, work {work}", file=sys.stderr, flush=True)
    results: dict[int, dict] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {pool.submit(run_row, r, work, recording, args.keep): i for i, r in enumerate(rows)}
        for fut in as_completed(futs):
            res = fut.result()
            results[futs[fut]] = res
            verdict = "PASS" if res["pass"] else "FAIL: " + "; ".join(res["why"])
            print(f"[{len(results)}/{len(rows)}] {res['row']} {res['phase']}: {verdict} ({res['seconds']}s)"
                  + (f" {res['dir']}" if res["dir"] else ""), file=sys.stderr, flush=True)
    ordered = [results[i] for i in range(len(rows))]
    seconds = time.monotonic() - t0
    print(table(ordered, markdown=args.markdown))
    failed = [r for r in ordered if not r["pass"]]
    print(f"\n{len(ordered) - len(failed)}/{len(ordered)} rows passed in {seconds:.0f}s (--jobs {args.jobs}, "
          f"{started:%Y-%m-%d %H:%M} UTC)")
    if args.json_out is not None:
        tmp = args.json_out.with_name(args.json_out.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                                   "jobs": args.jobs, "rows": to_json(ordered)}, indent=1, default=str) + "\n")
        tmp.replace(args.json_out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
