"""The most mmbot's own code could still give issue 14's ratios: ``python -m tools.bench.floor``.

Issue 14 asks for ratios against the old path (3x rows per CPU s for the default backtest, 2.5x
trials per minute for wf). Part of every run is Nautilus' own code: its engine loop, data engine
and cache book, and the RiskEngine -> ExecEngine -> Cache -> Portfolio chains of every order
command and order event. Those are the same work for the same messages, orders and fills, and the
ground rules keep them (Nautilus is the engine; mmbot does not write a second copy of it). So the
highest ratio any change to mmbot's own code can reach is

    bound = old CPU s / Nautilus CPU s of the new run

i.e. the ratio the new run would have if every line of mmbot's own code (strategy, simulator,
ledger, guards, feed, report) took no time at all. Measured in one sitting:

1. the old code (``--baseline-ref``, as ``tools.bench speed``) and this checkout, alternating,
   ``--repeats`` times each: CPU s of the full run (tools/bench/speed.py's children: the default
   backtest of the embedded hour with HTML off; a wf of 12 random trials on one split, 1 worker);
2. this checkout's run again under ``py-spy record --native`` (``--repeats`` times): every sample
   under the run's own function (``run_backtest`` / ``run_walk_forward``) is owned by Nautilus or by
   mmbot by the rule of ``owner`` below;
3. Nautilus CPU s = Nautilus' share of the samples x the new run's median CPU s (the unprofiled
   runs of step 1: py-spy slows the process it samples, its shares are what it gives).

Attribution rule (``owner``), self time: walk a sample's stack from the leaf towards the root; the
first frame in Nautilus (a path containing ``nautilus_trader/``: its Cython modules, its Rust
library ``nautilus_pyo3`` and its Python files) makes it Nautilus' sample, the first frame in
mmbot's own code (``mmbot/``, ``strategies/``, ``adapters/``) makes it mmbot's. Other frames
(CPython itself, the garbage collector, libc, numpy, pyarrow, optuna, ...) belong to whoever called
them. So a strategy handler called by Nautilus' message bus is mmbot's time, and a pickle Nautilus
makes of a position is Nautilus' time.

Needs py-spy (``pip install py-spy``; ptrace must be allowed). Prints one JSON line per part and
writes ``benchmarks.floor`` into tools/bench/results.json; the table lives in docs/benchmarks.md
("Session 30 — how far mmbot's own code can still move the ratios"). Report only: nothing here is a
pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tools.bench.speed import _CHILD, _WF_CHILD, REPO, _child, _spread, _wf_child, baseline_tree

_NAUTILUS = "nautilus_trader/"
_MMBOT = re.compile(r"\((?:mmbot|strategies|adapters)/")
_LINE = re.compile(r":\d+\)$")
TARGETS = {"backtest": 3.0, "wf": 2.5}
ROOTS = {"backtest": "run_backtest (mmbot/backtest/run.py", "wf": "run_walk_forward (mmbot/tuning/runner.py"}


def owner(frames: list[str]) -> tuple[str, str]:
    """``("nautilus" | "mmbot", nearest mmbot frame above a Nautilus leaf or "")`` of one sample's
    stack (root first), by the rule in the module docstring."""
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        if _NAUTILUS in frame:
            caller = next((_LINE.sub(")", f) for f in reversed(frames[:i]) if _MMBOT.search(f)), "")
            return "nautilus", caller
        if _MMBOT.search(frame):
            return "mmbot", ""
    return "mmbot", ""  # only reached for a stack without mmbot's root frame: not counted (split)


def split(raw_lines, root: str) -> dict:
    """Samples of py-spy's raw (collapsed) format under the frame starting with ``root``:
    counts per owner, and Nautilus' samples by the mmbot frame that called into it."""
    counts: Counter = Counter()
    callers: Counter = Counter()
    outside = 0
    for line in raw_lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            raise ValueError(f"not a py-spy raw line: {line[:80]!r}")
        frames = stack.split(";")
        at = next((i for i, f in enumerate(frames) if f.startswith(root)), None)
        if at is None:
            outside += int(n)
            continue
        who, caller = owner(frames[at:])
        counts[who] += int(n)
        if who == "nautilus":
            callers[caller or "(the run itself)"] += int(n)
    total = counts["nautilus"] + counts["mmbot"]
    return {"samples": total, "samples_outside": outside,
            "nautilus_share": round(counts["nautilus"] / total, 4) if total else None,
            "nautilus_by_caller": {k: round(v / total, 4) for k, v in callers.most_common(12)} if total else {}}


def _py_spy() -> str:
    exe = Path(sys.executable).parent / "py-spy"
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if not found:
        print("tools.bench.floor: needs py-spy (pip install py-spy)", file=sys.stderr)
        raise SystemExit(2)
    return found


def _profiled(script: str, args: list[str], root: Path, raw: Path, rate: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([_py_spy(), "record", "--native", "--rate", str(rate), "--format", "raw", "-o", str(raw),
                        "--", sys.executable, "-c", script, *args], cwd=root, env=env, capture_output=True,
                       text=True, check=False)
    if r.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy run failed:\n{r.stderr[-3000:]}")


class FloorError(Exception):
    """A measurement that cannot give a bound (one line, exit 1)."""


def _bound(part: str, old_cpu: list[float], new_cpu: list[float], shares: list[float], profiles: list[dict]) -> dict:
    if any(s is None or s <= 0 for s in shares):
        # no sample under the run's own function (py-spy's --full-filenames, a renamed function) or
        # none in Nautilus: nothing to divide by
        raise FloorError(f"{part}: a profile has no Nautilus sample under {ROOTS[part]!r} "
                         f"(samples: {[p['samples'] for p in profiles]}); nothing to bound")
    new_med = statistics.median(new_cpu)
    naut_cpu = [s * new_med for s in shares]
    old_med = statistics.median(old_cpu)
    return {"old_cpu_s": _spread(old_cpu, 2), "new_cpu_s": _spread(new_cpu, 2),
            "new_vs_old_cpu": round(old_med / new_med, 2),
            "nautilus_share": _spread(shares, 3), "nautilus_cpu_s": _spread(naut_cpu, 2),
            "target": TARGETS[part], "target_cpu_s": round(old_med / TARGETS[part], 2),
            # the ratio with every line of mmbot's own code at zero cost
            "bound_if_mmbot_code_took_no_time": _spread([old_med / c for c in naut_cpu], 2),
            "profiles": profiles}


def floor_backtest(base: Path, work: Path, repeats: int, rate: int) -> dict:
    config = "config/backtest.toml"
    old, new = [], []
    for _ in range(repeats):
        old.append(_child(base, base / config, work / "o", [])["cpu_s"])
        new.append(_child(REPO, REPO / config, work / "n", [])["cpu_s"])
    shares, profiles = [], []
    for i in range(repeats):
        raw = work / f"backtest-{i}.txt"
        _profiled(_CHILD, [str(REPO / config), str(work / f"p{i}"), "[]"], REPO, raw, rate)
        prof = split(raw.read_text().splitlines(), ROOTS["backtest"])
        shares.append(prof["nautilus_share"])
        profiles.append(prof)
    return _bound("backtest", old, new, shares, profiles)


def floor_wf(base: Path, work: Path, repeats: int, rate: int, trials: int = 12) -> dict:
    old, new = [], []
    for _ in range(repeats):
        old.append(_wf_child(base, trials)["cpu_s"] / trials)
        new.append(_wf_child(REPO, trials)["cpu_s"] / trials)
    shares, profiles = [], []
    for i in range(repeats):
        raw = work / f"wf-{i}.txt"
        _profiled(_WF_CHILD, [str(REPO), str(REPO / "catalog"), str(trials), "", "2024-12-01T07:30:00Z",
                              "2024-12-01T07:39:00Z", "6m", "3m"], REPO, raw, rate)
        prof = split(raw.read_text().splitlines(), ROOTS["wf"])
        shares.append(prof["nautilus_share"])
        profiles.append(prof)
    out = _bound("wf", old, new, shares, profiles)
    out["per"] = f"CPU s per trial ({trials} random trials, 1 worker)"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="backtest,wf", help="comma-separated, each once: backtest, wf")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second (--native is costly: 50)")
    ap.add_argument("--baseline-ref", default="5c48980", help="the old code (git ref), as tools.bench speed")
    ap.add_argument("--no-save", action="store_true", help="print only; leave tools/bench/results.json alone")
    a = ap.parse_args(argv)
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in TARGETS]
    if bad or not parts or len(set(parts)) != len(parts) or a.repeats < 1 or a.rate < 1:
        print(f"tools.bench.floor: --parts {a.parts!r} / --repeats {a.repeats} / --rate {a.rate}: parts must be "
              f"one or more of {', '.join(TARGETS)}, each once; repeats and rate >= 1", file=sys.stderr)
        return 2
    _py_spy()
    out: dict = {"baseline_ref": a.baseline_ref, "repeats": a.repeats, "rate_hz": a.rate,
                 "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-floor-") as tmp:
        work = Path(tmp)
        base, commit = baseline_tree(a.baseline_ref, work)
        out["baseline_commit"] = commit[:12]
        for part in parts:
            try:
                out[part] = (floor_backtest if part == "backtest" else floor_wf)(base, work, a.repeats, a.rate)
            except FloorError as e:
                print(f"tools.bench.floor: {e}", file=sys.stderr)
                return 1
            print(json.dumps({part: out[part]}), flush=True)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["utc"] = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    if not a.no_save:
        results = Path(__file__).resolve().parent / "results.json"
        data = json.loads(results.read_text()) if results.exists() else {}
        # per part: a run of one part keeps the other part's last record (and its sitting)
        sitting = {k: v for k, v in out.items() if k not in TARGETS}
        floor = data.setdefault("benchmarks", {}).setdefault("floor", {})
        for part in parts:
            floor[part] = {**out[part], "sitting": sitting}
        data.setdefault("commands", {})["floor"] = "python -m tools.bench.floor " + " ".join(
            argv if argv is not None else sys.argv[1:])
        tmp_path = results.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_path, results)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
