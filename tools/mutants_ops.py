"""Deliberately broken versions of the live-observability checks, and the tests that catch them.

    python -m tools.mutants_ops            # every mutant; exit 1 if one survives
    python -m tools.mutants_ops -k book    # those whose name contains "book"

Each mutant replaces one exact piece of source text (it must occur exactly once), runs the listed
fast tests (no end-to-end ones) and restores the file. A mutant is *caught* when a test fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = "mmbot/live/metrics_server.py"
BOOK = "adapters/bybit_live_book.py"
EXEC = "adapters/bybit_live_exec.py"
GUARD = "strategies/risk/stale_data.py"
T_METRICS = "tests/test_live_metrics.py"
T_BOOK = "tests/test_live_book_gaps.py -k 'not e2e'"
T_EXEC = "tests/test_live_reconciled_fills.py -k selection"
TAP = "adapters/recorder.py"
T_TAP = "tests/test_recorder_pings.py"

# name, file, original text, mutated text, tests
MUTANTS = [
    ("http: no request timeout", METRICS,
     'head = await asyncio.wait_for(reader.readuntil(b"\\r\\n\\r\\n"), self.request_timeout_s)',
     'head = await reader.readuntil(b"\\r\\n\\r\\n")', T_METRICS),
    ("http: no eviction of idle connections at the cap", METRICS,
     "            if not self._waiting:  # every slot is busy answering: refuse the newcomer",
     "            if True:", T_METRICS),
    ("http: no cap at all", METRICS,
     "        if self.open_connections >= self.max_connections:",
     "        if False:", T_METRICS),
    ("http: NaN timeout accepted", METRICS,
     "if not (request_timeout_s > 0 and math.isfinite(request_timeout_s)):",
     "if not (request_timeout_s > 0):", T_METRICS),
    ("http: max_connections 0 accepted", METRICS,
     "        if max_connections < 1:", "        if max_connections < 0:", T_METRICS),
    ("metrics: trading state = last guard's, not the most restrictive", METRICS,
     "TRADING_STATE_VALUE.get(most_restrictive(self._wanted.values()), 0)",
     "TRADING_STATE_VALUE.get(msg.trading_state, 0)", T_METRICS),
    ("metrics: other instruments' constraints counted", METRICS,
     "        if msg.instrument_id is not None and msg.instrument_id != self._iid_str:\n            return",
     "        if False:\n            return", T_METRICS),
    ("metrics: equity from the venue account only (shadow: none)", METRICS,
     "        if self._account_id is not None:\n            return self.cache.account(self._account_id)",
     "        if False:\n            return None", T_METRICS),
    ("book: only forward jumps are gaps", BOOK,
     "        if u != self.last_u + 1 or not whole:", "        if u > self.last_u + 1 or not whole:", T_BOOK),
    ("book: a split update (no F_LAST) handed on", BOOK,
     "        if u != self.last_u + 1 or not whole:", "        if u != self.last_u + 1:", T_BOOK),
    ("book: a split snapshot (no F_LAST) taken as one", BOOK,
     "        if whole and dl[0].action == _CLEAR:", "        if dl[0].action == _CLEAR:", T_BOOK),
    ("book: a snapshot does not reset the update id", BOOK,
     "            self.last_u = u\n            self.valid = True",
     "            self.last_u = u if self.last_u is None else self.last_u\n            self.valid = True", T_BOOK),
    ("book: deltas inside a gap handed on", BOOK,
     "        if not self.valid:\n            self.dropped += 1\n            return None, None",
     "        if self.last_u is None:\n            self.dropped += 1\n            return None, None", T_BOOK),
    ("book: snapshots not flagged", BOOK,
     "            return _rebuild(deltas, dl, u, F_SNAPSHOT), None",
     "            return _rebuild(deltas, dl, u, 0), None", T_BOOK),
    ("book: sequence left as Bybit's seq", BOOK,
     "OrderBookDelta(iid, d.action, d.order, d.flags | flags, u, d.ts_event, d.ts_init)",
     "OrderBookDelta(iid, d.action, d.order, d.flags | flags, d.sequence, d.ts_event, d.ts_init)", T_BOOK),
    ("guard: sequence checked across snapshots", GUARD,
     "seq_gap = not snapshot and self._last_seq >= 0 and seq != self._last_seq + 1",
     "seq_gap = self._last_seq >= 0 and seq != self._last_seq + 1", T_BOOK),
    ("exec: orders equal to the venue fetched too", EXEC,
     "if order is None or order.is_closed or filled <= order.filled_qty:",
     "if order is None or order.is_closed or filled < order.filled_qty:", T_EXEC),
    ("exec: closed orders fetched", EXEC,
     "if order is None or order.is_closed or filled <= order.filled_qty:",
     "if order is None or filled <= order.filled_qty:", T_EXEC),
    ("exec: applied trade ids sent again", EXEC,
     "if f.venue_order_id == report.venue_order_id and f.trade_id not in known",
     "if f.venue_order_id == report.venue_order_id", T_EXEC),
    ("exec: other orders' executions sent", EXEC,
     "if f.venue_order_id == report.venue_order_id and f.trade_id not in known",
     "if f.trade_id not in known", T_EXEC),
    ("exec: an incomplete execution list taken as complete", EXEC,
     "return mine, total >= report.filled_qty.as_decimal()", "return mine, True", T_EXEC),
    ("tap: a loop timer per frame again", TAP, "                msg = await self._ws.receive()\n",
     "                msg = await self._ws.receive(timeout=self._cfg.ping_interval_s)\n", T_TAP),
    ("tap: no ping task", TAP, "        ping = self._loop.create_task(self._ping_loop())",
     "        ping = self._loop.create_task(asyncio.sleep(0))", T_TAP),
    ("tap: no ping while frames flow (only after a silence)", TAP,
     "            await asyncio.sleep(self._cfg.ping_interval_s)\n            ws = self._ws",
     "            seen = self.frames\n            await asyncio.sleep(self._cfg.ping_interval_s)\n"
     "            ws = self._ws if self.frames == seen else None", T_TAP),
    ("tap: any ping interval accepted (0 is a busy loop)", TAP,
     "            if not (isinstance(v, int | float) and math.isfinite(v) and 0.1 <= v <= 3600):",
     "            if not isinstance(v, int | float):", "tests/test_hostile_review35.py -k D2"),
]


def run(mutant) -> bool:
    name, rel, old, new, tests = mutant
    path = REPO / rel
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: the original text occurs {text.count(old)} times in {rel}")
    path.write_text(text.replace(old, new))
    try:
        r = subprocess.run(f"{sys.executable} -m pytest -q -x -p no:cacheprovider {tests}", shell=True, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    finally:
        path.write_text(text)
    return r.returncode != 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only mutants whose name contains this")
    args = ap.parse_args()
    survived = 0
    for m in MUTANTS:
        if args.k and args.k not in m[0]:
            continue
        caught = run(m)
        survived += not caught
        print(f"{'caught  ' if caught else 'SURVIVED'}  {m[0]}  ({m[1]}; {m[4]})", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
