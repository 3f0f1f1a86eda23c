"""Mutation check for the data validators and the generator's stated properties.

``python -m tools.mutants_data [--only NAME]`` runs, for each mutant below, the named tests
against a deliberately broken copy of one module (the source is patched in memory in a child
process; no file changes) and reports whether the tests catch it. Every mutant must be caught;
the unmutated baseline must pass. Results: docs/data.md ("Mutation check").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUNDING_TESTS = ["tests/test_loaders.py", "-k", "funding or nan_literal or duplicate"]
GEN_TESTS = ["tests/test_gen_synthetic.py"]
MERGE_TESTS = ["tests/test_hostile_fix12b_import.py", "-k", "settlement or conflicting"]  # funding across files


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # dotted module name
    old: str  # exact source text replaced (must occur)
    new: str
    tests: tuple[str, ...]


F = "adapters.bybit_funding"
G = "tools.gen_synthetic"
MUTANTS = (
    # --- funding loader --------------------------------------------------------------------
    Mutant("rate: NaN/inf accepted", F, "    if not rate.is_finite():", "    if False:", tuple(FUNDING_TESTS)),
    Mutant("rate: no magnitude limit", F, "    if abs(rate) >= MAX_ABS_RATE:", "    if False:", tuple(FUNDING_TESTS)),
    Mutant("timestamp: seconds / µs accepted", F, "    if not MIN_TS_MS <= ts < MAX_TS_MS:", "    if ts < 0:",
           tuple(FUNDING_TESTS)),
    Mutant("symbol mismatch accepted", F, '        if row["symbol"] != symbol:', "        if False:", tuple(FUNDING_TESTS)),
    Mutant("conflicting duplicates: first kept", F, "        if len(rates) > 1:", "        if False:", tuple(FUNDING_TESTS)),
    Mutant("same-rate duplicates imported twice", F,
           "        out.append(FundingRateUpdate(instrument.id, entries[0][1], ts_ns, ts_ns))",
           "        out.extend(FundingRateUpdate(instrument.id, r, ts_ns, ts_ns) for _, r in entries)",
           tuple(FUNDING_TESTS)),
    Mutant("error response (retCode != 0) accepted", F, '    if body.get("retCode", 0) != 0:', "    if False:",
           tuple(FUNDING_TESTS)),
    Mutant("inverse category accepted", F, '    if category != "linear":', "    if False:", tuple(FUNDING_TESTS)),
    Mutant("rows kept newest first", F, "    for ts_ms in sorted(by_ts):", "    for ts_ms in by_ts:", tuple(FUNDING_TESTS)),
    Mutant("positions reported 0-based", F, "enumerate(rows, start=1)", "enumerate(rows, start=0)", tuple(FUNDING_TESTS)),
    Mutant("conflicting rates across files: both imported", F, "        if len({u.rate for _, _, u in entries}) > 1:",
           "        if False:", tuple(MERGE_TESTS)),
    Mutant("same settlement in two files imported twice", F, "        out.append(first)",
           "        out.extend(u for _, _, u in entries)", tuple(MERGE_TESTS)),
    Mutant("settlement already in the catalog imported again", F, "        if ts_ns in existing:", "        if False:",
           tuple(MERGE_TESTS)),
    # --- generator: the stated properties ---------------------------------------------------
    Mutant("ob50 pushed every 100 ms", G, "FEED_CADENCE_MS = {50: 20,", "FEED_CADENCE_MS = {50: 100,", tuple(GEN_TESTS)),
    Mutant("Poisson taker arrivals (no self-excitation)", G, "    alphas: tuple[float, ...] = (12.0, 0.2)",
           "    alphas: tuple[float, ...] = (0.0, 0.0)", tuple(GEN_TESTS)),
    Mutant("light-tailed trade sizes", G, "        order_sigma=2.0, orders_per_s=4.0,", "        order_sigma=0.3, orders_per_s=4.0,",
           tuple(GEN_TESTS)),
    Mutant("thin touch queue", G, 'touch_size=4_500.0, depth_size=3_800.0', 'touch_size=450.0, depth_size=3_800.0',
           tuple(GEN_TESTS)),
    Mutant("hollow large-tick book", G, "        occupancy_near=0.995, occupancy_far=0.995,",
           "        occupancy_near=0.6, occupancy_far=0.6,", tuple(GEN_TESTS)),
    Mutant("spread gaps not refilled quickly", G, "    refill_per_s: float = 300.0", "    refill_per_s: float = 3.0",
           tuple(GEN_TESTS)),
    Mutant("trades always received first (no jitter)", G, "    net_sigma: float = 0.5", "    net_sigma: float = 0.0",
           tuple(GEN_TESTS)),
    Mutant("a trade may share its ms with a push", G, "            while takers and self._ms(takers[-1]) == ts:",
           "            while False:", tuple(GEN_TESTS)),
    Mutant("lines in generation order, not receive order", G,
           "        self._queue(local, msg)\n        while self.pending and self.pending[0][0] < horizon:",
           "        self._queue(local, msg)\n        while self.pending:", tuple(GEN_TESTS)),
    Mutant("push reflects trades after its ts", G, "        return self.start_ms + min(int(t * 1e3), self.end_rel_ms - 1)",
           "        return self.start_ms + int(t * 1e3) + 2", tuple(GEN_TESTS)),
    Mutant("orders_per_s override not validated", G, "        if not (orders_per_s > 0 and math.isfinite(orders_per_s)):",
           "        if False:", tuple(GEN_TESTS)),
    Mutant("minutes not validated (inf, 0, negative)", G, "    if not (0 < minutes <= MAX_MINUTES):", "    if False:",
           tuple(GEN_TESTS)),
)

_CHILD = r"""
import sys, types
name, path, old, new = sys.argv[1:5]
src = open(path, encoding="utf-8").read()
if old not in src:
    print(f"mutant text not found in {path}: {old!r}", file=sys.stderr)
    sys.exit(3)
mod = types.ModuleType(name)
mod.__file__ = path
sys.modules[name] = mod
exec(compile(src.replace(old, new, 1), path, "exec"), mod.__dict__)
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--no-header", *sys.argv[5:]]))
"""


def run_one(m: Mutant | None) -> tuple[int, float, str]:
    """pytest's exit status for the mutant (or the unmutated baseline of all tests), seconds,
    and the first failing test."""
    t0 = time.perf_counter()
    if m is None:  # two runs: the merge tests carry their own -k
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header"]
        res = subprocess.run([*base, *GEN_TESTS, *FUNDING_TESTS], cwd=REPO, capture_output=True, text=True)
        if res.returncode == 0:
            res = subprocess.run([*base, *MERGE_TESTS], cwd=REPO, capture_output=True, text=True)
    else:
        path = REPO / (m.module.replace(".", "/") + ".py")
        cmd = [sys.executable, "-c", _CHILD, m.module, str(path), m.old, m.new, *m.tests]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    failed = next((ln.split(" ", 1)[1].split(" - ")[0] for ln in res.stdout.splitlines() if ln.startswith("FAILED ")), "")
    return res.returncode, time.perf_counter() - t0, failed.replace("tests/", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.mutants_data")
    ap.add_argument("--only", default=None, help="run the mutants whose name contains this text")
    args = ap.parse_args(argv)
    rc, dt, _ = run_one(None)
    print("| module: mutant | verdict | first failing test |\n|---|---|---|")
    print(f"| baseline (no mutant) | {'pass' if rc == 0 else 'FAIL'} | - |")
    missed = int(rc != 0)
    for m in MUTANTS:
        if args.only and args.only not in m.name:
            continue
        rc, dt, failed = run_one(m)
        verdict = "caught" if rc == 1 else ("ERROR (mutant not applied)" if rc == 3 else ("MISSED" if rc == 0 else f"rc {rc}"))
        missed += verdict != "caught"
        print(f"| {m.module}: {m.name} | {verdict} | `{failed}` |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
