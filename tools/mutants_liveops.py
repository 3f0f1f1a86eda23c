"""Deliberately broken versions of the operator-facing checks of the liveops work, and the tests that
catch them (docs/runbook.md "Console", "Run folders and the session report"; docs/portfolio.md
"Modes" for the [portfolio] ones).

    python -m tools.mutants_liveops            # every mutant; exit 1 if one survives
    python -m tools.mutants_liveops -k kill    # those whose name contains "kill"
    python -m tools.mutants_liveops --fast     # skip the mutants whose test is an end-to-end session

Each mutant replaces one exact piece of source text (it must occur exactly once), runs the listed
tests and restores the file. A mutant is *caught* when a test fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILL = "strategies/risk/kill_switch.py"
REC = "adapters/recorder.py"
NODE = "mmbot/live/node.py"
STATUS = "mmbot/live/status.py"
COMPARE = "mmbot/backtest/compare.py"
T_KILL = "tests/test_live_kill_start.py"
T_REC = "tests/test_live_recorder_required.py"
T_VIEW = "tests/test_live_status_view.py"
T_STRICT = "tests/test_shadow_compare_strict.py"
T_GAP = "tests/test_shadow_session.py -k gap"  # end to end (~15 s)
LPORT = "mmbot/live/portfolio.py"
METRICS = "mmbot/live/metrics_server.py"
T_LPORT = "tests/test_live_portfolio_units.py"
T_LCHECK = "tests/test_live_portfolio_checks.py"
T_LE2E = "tests/test_live_portfolio_e2e.py"  # end to end (~25 s)
T_FAKE2 = "tests/test_fake_bybit_multi.py"
T_METRICS = "tests/test_live_metrics.py"
LIVECLI = "mmbot/cli/live.py"
FAKE = "tools/fake_bybit/server.py"
SIM = "adapters/sim/exec_client.py"
T_LSTOP = "tests/test_live_stop.py -k cancels_travel"  # end to end (~25 s)
T_DET = "tests/test_shadow_determinism.py"
T_CMP = "tests/test_compare.py"
BYEXEC = "adapters/bybit_live.py"
T_RACE = "tests/test_bybit_report_race.py"
T_HOSTILE = "tests/test_hostile_ack_race.py"

# name, file, original text, mutated text, tests, end-to-end?
MUTANTS = [
    ("exec client: report that overtakes OrderSubmitted handled at once (acceptance dropped)", BYEXEC,
     "        if order is None or order.status != OrderStatus.INITIALIZED:\n            return False",
     "        if True:\n            return False", T_RACE, False),
    ("exec client: later reports of a held order not held behind it (fill before acceptance)", BYEXEC,
     "            pending.append((handler, pyo3_report))\n            return True",
     "            return False", T_RACE, False),
    ("exec client: held report never released after the deadline", BYEXEC,
     "            if self._clock.timestamp_ns() < deadline_ns:", "            if True:", T_RACE, False),
    ("exec client: held reports released in arrival order (acceptance applied after a fill)", BYEXEC,
     "        held = sorted(self._mmbot_deferred.pop(key, ()), key=_not_new)",
     "        held = self._mmbot_deferred.pop(key, ())", T_HOSTILE, False),
    ("exec client: a raising held report loses the later ones (its fill)", BYEXEC,
     "            except Exception as e:\n                # Unheld",
     "            except ZeroDivisionError as e:\n                # Unheld", T_HOSTILE, False),
    ("kill: no read of the file at start (first poll one interval later)", KILL,
     "            self.poll()  # now, before any strategy starts", "            pass  # no first read", T_KILL, False),
    ("kill: halt not re-sent to a strategy starting while halted", KILL,
     "        if (self.guard_state != HALTED or event.state != ComponentState.RUNNING",
     "        if True or (self.guard_state != HALTED or event.state != ComponentState.RUNNING", T_KILL, False),
    ("recorder: record_required accepted without a kill switch", NODE,
     "    if live.record and live.record_required and not _kill_switch_configured(cfg):",
     "    if False:", T_REC, False),
    ("recorder: no kill switch -> the old no-op (node keeps quoting)", REC,
     "            self.shutdown_system(", "            (lambda *a: None)(", T_REC, False),
    ("recorder: sends to a missing endpoint (only logged by Nautilus)", REC,
     "        if self.config.kill_endpoint and self.config.kill_endpoint in self.msgbus.endpoints():",
     "        if self.config.kill_endpoint:", T_REC, False),
    ("console: no bound on guard-transition lines", STATUS,
     "        if self._transition_lines >= MAX_TRANSITION_LINES:", "        if False:", T_VIEW, False),
    ("console: re-sends printed as transitions", STATUS,
     "        if msg.old_state == msg.new_state:\n            return", "        if False:\n            return",
     T_VIEW, False),
    ("status: labels matched as an exact ordered string", STATUS,
     "all(lab.get(k) == x for k, x in labels.items())",
     "list(lab.items())[:len(labels)] == list(labels.items())", T_VIEW, False),
    ("status interval: negative accepted", NODE,
     '    "status_interval_s": (0.0, 86400.0, True),', '    "status_interval_s": (-1e9, 86400.0, True),',
     T_VIEW, False),
    ("compare: a folder without resolved config compared with a note again", COMPARE,
     '        checks["differences"].append(f"config not checked:', '        checks["notes"].append(f"config not checked:',
     T_STRICT, False),
    ("shadow: no re-subscription after a book gap", REC,
     "            self._resync_tasks[topic] = self._resync_task = self._loop.create_task(self._resync_book(topic))",
     "            pass", T_GAP, True),
    # A [portfolio] in shadow (docs/portfolio.md "Modes"; tests/test_live_portfolio_*.py)
    ("portfolio shadow: kill switch scoped to the first instrument", LPORT,
     '                    extra = {"instrument_id": None}   # halts every instrument, cancels every order',
     "                    extra = {}", T_LPORT, False),
    ("portfolio shadow: one node-wide trading state (supervisor not per instrument)", LPORT,
     '                    extra = {"per_instrument": True}  # a trading state per instrument',
     "                    extra = {}", T_LPORT, False),
    ("portfolio shadow: per-instrument check not installed", LPORT,
     "    check.install(execute)\n    supervisor.bind_instrument_check(check)",
     "    pass", T_LPORT, False),
    ("portfolio shadow: strategies never told the books-ready stamp", LPORT,
     "            strategy._quote_from_ns = int(ts_init)", "            pass", T_LPORT, False),
    ("portfolio shadow: books-ready published after the message reached the node", REC,
     "                        self._msgbus.publish(topic=self._cfg.books_ready_topic, msg=deltas[0].ts_init)\n"
     "                for d in deltas:\n                    self._handle_data(d)",
     "                        self._loop.call_soon(self._msgbus.publish, self._cfg.books_ready_topic, deltas[0].ts_init)\n"
     "                for d in deltas:\n                    self._handle_data(d)", T_LPORT, False),
    ("portfolio shadow: an unlisted instrument reaches the builder", LPORT,
     "            registry.get_by_id(iid)\n", "            pass\n", T_LPORT + " -k unlisted", False),
    ("portfolio recorder: every symbol in the first symbol's file", REC,
     "                if len(self.symbols) > 1:", "                if False:", T_LPORT, False),
    ("portfolio recorder: a symbol's new day starts at the marker, not at its own snapshot", REC,
     """or (st[2] and '"snapshot"' in line and '"orderbook.' in line)):""", "or st[2]):", T_LPORT, False),
    ("portfolio metrics: /ready of the first instrument only", METRICS,
     "        if group is None or len(group[\"actors\"]) < 2:\n            return dict(self._ready_detail)",
     "        if True:\n            return dict(self._ready_detail)", T_LPORT, False),
    ("portfolio metrics: every instrument's order events counted by each instrument", METRICS,
     "        if event.instrument_id != self._iid:\n            return  # a portfolio node",
     "        if False:\n            return  # a portfolio node", T_LPORT, False),
    ("portfolio compare: strategies' orders mixed (compared as one instrument)", COMPARE,
     "    instruments = _portfolio_instruments(backtest_dir)\n", "    instruments = None\n",
     "tests/test_live_portfolio_shadow.py", True),
    # A [portfolio] in testnet/demo/mainnet (docs/portfolio.md "Modes"; tests/test_live_portfolio_*.py)
    ("portfolio live: stop venue check of the first instrument only", NODE,
     "        for one in self.instrument_ids:\n            local = self._local_open_orders(one)",
     "        for one in self.instrument_ids[:1]:\n            local = self._local_open_orders(one)", T_LCHECK, False),
    ("portfolio live: orders left on a later instrument do not fail the stop", NODE,
     "            if not r.ok:\n                failed.append(",
     "            if not r.ok and one == self.instrument_ids[0]:\n                failed.append(", T_LCHECK, False),
    ("portfolio live: startup sweep of the first instrument only", NODE,
     "        for iid in self.instrument_ids:\n            try:\n                instrument = InstrumentRegistry()",
     "        for iid in self.instrument_ids[:1]:\n            try:\n                instrument = InstrumentRegistry()",
     T_LCHECK, False),
    ("portfolio live: position check at readiness of the first instrument only", NODE,
     "        for one in self.instrument_ids:\n            why = await self._check_start_position(",
     "        for one in self.instrument_ids[:1]:\n            why = await self._check_start_position(", T_LCHECK, False),
    ("portfolio live: every venue check queries the first instrument", NODE,
     "        if self.sweep is None or len(self.instrument_ids) == 1 or getattr(self.sweep, \"instrument_id\", iid) == iid:\n",
     "        if True:\n", T_LCHECK, False),
    ("portfolio live: startup gate released for the first instrument only", NODE,
     "        for gate in self._actors(StartupGate):  # one per instrument",
     "        for gate in self._actors(StartupGate)[:1]:", T_LCHECK, False),
    ("portfolio live: venue clients load the first instrument only", NODE,
     "    provider = InstrumentProviderConfig(load_all=False, load_ids=frozenset(instruments))",
     "    provider = InstrumentProviderConfig(load_all=False, load_ids=frozenset([instrument_id]))", T_LE2E, True),
    ("portfolio live: the run loop told of the first instrument only (no instrument_ids)", LIVECLI,
     "        run = LiveRun(node_config, instruments[0], duration_s, instrument_ids=instruments,",
     "        run = LiveRun(node_config, instruments[0], duration_s,", T_LE2E, True),
    ("portfolio live: testnet/demo refuse a [portfolio] again", LIVECLI,
     "        cfg, live_cfg, file_cfg = load_live_config(Path(config_path), list(overrides), with_file=True,\n"
     "                                                   portfolio=True)",
     "        cfg, live_cfg, file_cfg = load_live_config(Path(config_path), list(overrides), with_file=True)",
     T_LPORT + " -k venue_modes", False),
    # The stop window (docs/runbook.md "Stop"; docs/shadow.md "The stop")
    ("stop: the trader (recorder, run ledger) stopped before the strategies again", NODE,
     "            for strategy in node.trader.strategies():\n                if strategy.is_running:\n"
     "                    strategy.stop()\n",
     "            node.trader.stop()\n", T_LSTOP, True),
    ("stop: the trader (recorder, run ledger) stopped before the venue check again", NODE,
     "            await self._stop_check()\n            node.trader.stop()\n",
     "            node.trader.stop()\n            await self._stop_check()\n", T_LSTOP, True),
    ("stop: the shadow simulators not caught up before the strategies stop", SIM,
     "        stamp = self._send_stamp()\n        self._advance(stamp)\n", "        stamp = self._send_stamp()\n",
     T_DET + " -k catch_up", False),
    ("compare: the recorded stop instant ignored (cut at the last order event)", COMPARE,
     "    stops = shadow_stop_instants(shadow_dir)\n", "    stops = None\n", T_CMP, False),
    ("compare: shadow fills after the stop compared", COMPARE,
     '    fills = [f for f in s["fills"] if fill_cut(f, until_ns, through_ns)]', '    fills = list(s["fills"])', T_CMP, False),
    ("compare: fills of events received after the stop compared (received-through ignored)", COMPARE,
     "    return f[\"ts_ns\"] <= until_ns and (through_ns is None or f[\"ts_ns\"] < through_ns)",
     "    return f[\"ts_ns\"] <= until_ns", T_CMP, False),
    ("compare: fills after the replay's end compared (replay end ignored)", COMPARE,
     "        fills_until = stop_ns if bt_end_ns is None else min(stop_ns, bt_end_ns)",
     "        fills_until = stop_ns", T_CMP, False),
    ("compare: every instrument cut at the earliest stop", COMPARE,
     "        s, until, fills_until, through = _cut(s, *((stops or {}).get(iid) or (None, None)), bt_end, checks)",
     "        s, until, fills_until, through = _cut(s, *(min(stops.values()) if stops else (None, None)), bt_end, checks)",
     T_CMP, False),
    ("compare: every instrument cut at the latest stop", COMPARE,
     "        s, until, fills_until, through = _cut(s, *((stops or {}).get(iid) or (None, None)), bt_end, checks)",
     "        s, until, fills_until, through = _cut(s, *(max(stops.values()) if stops else (None, None)), bt_end, checks)",
     T_CMP, False),
    # tools/fake_bybit with several symbols (docs/fake_bybit.md "Several symbols")
    ("fake_bybit: position update sent under the first symbol", FAKE,
     "            await self._send_private(\"position\", [P.position_row(self.syms[sym].engine, sym, http=False)])",
     "            await self._send_private(\"position\", [P.position_row(self.engine, self.symbol, http=False)])",
     T_FAKE2, False),
    ("fake_bybit: cancel-all cancels every symbol's orders", FAKE,
     "        for sym in self._selected(params):\n            eng = self.syms[sym].engine\n            for o in eng.open_orders():",
     "        for sym in self.syms:\n            eng = self.syms[sym].engine\n            for o in eng.open_orders():",
     T_FAKE2, False),
    # the Grafana Portfolio row's series (docs/portfolio.md "Metrics")
    ("portfolio metrics: another instrument's allocation shown as this one's", METRICS,
     "        if msg.instrument_id is not None and msg.instrument_id != self._iid_str:\n            return",
     "        if False:\n            return", T_METRICS + " -k allocator", False),
    ("portfolio metrics: blacklist flag from the wrong state", METRICS,
     "            m.allocator_blacklisted.labels(*lab).set(1 if msg.new_state == ALLOCATOR_BLACKLISTED else 0)",
     "            m.allocator_blacklisted.labels(*lab).set(0)", T_METRICS + " -k allocator", False),
    ("portfolio metrics: position notional without the mid (base units)", METRICS,
     "            m.position_notional.labels(*lab).set(pos * mark if pos != 0.0 else 0.0)",
     "            m.position_notional.labels(*lab).set(pos)", T_METRICS + " -k notional", False),
    ("portfolio metrics: position notional frozen without a usable book (hostile review 27 F3)", METRICS,
     "        mark = mid if book_valid else self._fill_px if math.isfinite(self._fill_px) else self._valid_mid",
     "        mark = mid if book_valid else math.nan", "tests/test_hostile_review27.py -k f3", False),
    ("portfolio metrics: [risk.portfolio] limits not exported", METRICS,
     "            m.portfolio_limit.labels(*lab, measure, level).set(value)", "            pass",
     T_METRICS + " -k notional", False),
    ("portfolio metrics: the node's limits not handed to the metrics actors", NODE,
     "        **({\"portfolio_limits_usdt\": dict(portfolio_limits)} if portfolio_limits else {})})",
     "        })", T_METRICS + " -k portfolio_limits_from", False),
]


def run(mutant) -> bool:
    name, rel, old, new, tests, _e2e = mutant
    path = REPO / rel
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: the original text occurs {text.count(old)} times in {rel}")
    path.write_text(text.replace(old, new))
    try:
        r = subprocess.run(f"{sys.executable} -m pytest -q -x -p no:cacheprovider {tests}", shell=True, cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    finally:
        path.write_text(text)
    return r.returncode != 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only mutants whose name contains this")
    ap.add_argument("--fast", action="store_true", help="skip mutants whose test is an end-to-end session")
    args = ap.parse_args()
    survived = 0
    for m in MUTANTS:
        if (args.k and args.k not in m[0]) or (args.fast and m[5]):
            continue
        caught = run(m)
        survived += not caught
        print(f"{'caught  ' if caught else 'SURVIVED'}  {m[0]}  ({m[1]}; {m[4]})", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
