"""Mutants of the portfolio code (docs/portfolio.md, "Mutants"): each deliberately broken version is
applied to a copy of the file, the portfolio tests run against it, and the mutant must be caught
(a test fails). The file is restored afterwards, whatever happens.

``python -m tools.mutants_portfolio [WORD ...]`` (about 30 s per mutant; WORDs select mutants by
name); exit 1 if a mutant survives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_portfolio_backtest.py", "tests/test_portfolio_config.py", "tests/test_portfolio_risk.py",
         "tests/test_instrument_state.py"]

CONFIG_TESTS = ["tests/test_portfolio_config.py"]
STATE_TESTS = ["tests/test_instrument_state.py"]  # the per-instrument trading state, against Nautilus' RiskEngine
SYMBOL_BREACH = ["tests/test_instrument_state.py",
                 "tests/test_portfolio_backtest.py::test_a_symbol_breach_restricts_that_symbol_only"]
# (name, file, original text, mutated text[, the tests to run: default TESTS])
MUTANTS = [
    ("validator: an instrument listed twice passes", "mmbot/config/portfolio.py",
     "        if iid in seen:\n", "        if False:\n", CONFIG_TESTS),
    ("validator: run.instrument / --instrument beside [portfolio] passes", "mmbot/config/portfolio.py",
     '    if isinstance(run, dict) and "instrument" in run:\n', "    if False:\n", CONFIG_TESTS),
    ("validator: an override of an unlisted instrument passes", "mmbot/config/portfolio.py",
     "        if iid not in seen:\n", "        if False:\n", CONFIG_TESTS),
    ("validator: a node-wide section in an override passes", "mmbot/config/portfolio.py",
     "            if section not in OVERRIDE_SECTIONS:\n", "            if False:\n", CONFIG_TESTS),
    ("validator: a node-wide risk table in an override passes", "mmbot/config/portfolio.py",
     "            if key in NODE_WIDE_RISK:\n", "            if False:\n", CONFIG_TESTS),
    ("validator: a --set the override beats passes", "mmbot/config/portfolio.py",
     "        if cli is not None:\n", "        if False:\n", CONFIG_TESTS),
    ("validator: wf/live run a portfolio config's first instrument", "mmbot/builders.py",
     "    if cfg.portfolio is not None:\n        raise", "    if False:\n        raise", CONFIG_TESTS),
    ("guard: instruments without a common instant run anyway", "mmbot/backtest/portfolio.py",
     "    if hi <= lo:\n", "    if False:\n", ["tests/test_portfolio_backtest.py::"
                                                   "test_instruments_that_do_not_overlap_are_refused_in_one_line"]),
    ("override applied to the wrong instrument", "mmbot/config/backtest.py",
     "member_raw(raw, iid, tables.get(iid, {}), origins, ConfigError)",
     "member_raw(raw, iid, tables.get(instruments[(instruments.index(iid) + 1) % len(instruments)], {}), "
     "origins, ConfigError)"),
    ("one simulator (book, queues) shared by every instrument", "mmbot/builders.py",
     "        sims[i] = QueueSimExecutionClient(i, params, k.msgbus, k.cache, k.clock, client_id=BACKTEST_CLIENT_ID)",
     "        sims[i] = next(iter(sims.values()), None) or QueueSimExecutionClient(i, params, k.msgbus, k.cache, "
     "k.clock, client_id=BACKTEST_CLIENT_ID)"),
    ("router sends every command to the first simulator", "adapters/sim/router.py",
     "        sim = self.sims.get(instrument_id)\n",
     "        sim = next(iter(self.sims.values()))\n"),
    ("per-instrument section from the wrong instrument's ledger", "mmbot/backtest/portfolio.py",
     "res = _collect(member, ledgers[iid],",
     "res = _collect(member, ledgers[next(iter(ledgers))],"),
    ("portfolio table row of the wrong instrument", "mmbot/report/portfolio.py",
     "    } for iid, m in per.items()}",
     "    } for iid, m in zip(per, reversed(list(per.values())))}"),
    ("portfolio sum leaves an instrument out", "mmbot/report/portfolio.py",
     "summed_pnl = {k: _fsum(m[\"pnl\"].get(k) for m in per.values()) for k in SUMMED_PNL}",
     "summed_pnl = {k: _fsum(m[\"pnl\"].get(k) for m in list(per.values())[:1]) for k in SUMMED_PNL}"),
    ("portfolio equity leaves an instrument out", "mmbot/report/portfolio.py",
     "    for f in frames:  # in the config's order", "    for f in frames[:1]:  # in the config's order"),
    ("ledger books every instrument's fills (no instrument filter)", "mmbot/backtest/ledger.py",
     "        if event.instrument_id != self.instrument_id:\n",
     "        if False:\n"),
    ("simulator ids not prefixed per instrument", "adapters/sim/exec_client.py",
     "        self._prefix = params.id_prefix\n",
     "        self._prefix = \"\"\n"),
    ("kill switch scoped to the first instrument", "mmbot/builders.py",
     'config={**guard.config, "instrument_id": None})',
     'config={**guard.config})'),
    ("supervisor keeps one wanted state per guard name", "strategies/risk/supervisor.py",
     "self._wanted[(msg.guard, msg.instrument_id)] = msg.trading_state",
     "self._wanted[(msg.guard, None)] = msg.trading_state"),
    # -- a symbol breach restricts that symbol only (strategies/risk/instrument_state.py) --
    ("per-instrument check keyed to the wrong instrument (any restricted one restricts all)",
     "strategies/risk/instrument_state.py",
     "        state = self._states.get(order.instrument_id)\n",
     "        state = next(iter(self._states.values()), None)\n", STATE_TESTS),
    ("supervisor: an instrument's state computed over every instrument's guards", "strategies/risk/supervisor.py",
     "wanted = most_restrictive(s for (g, i), s in self._wanted.items() if i == iid)",
     "wanted = most_restrictive(s for (g, i), s in self._wanted.items() if i is not None)", STATE_TESTS),
    ("supervisor: instrument constraints set the node-wide RiskEngine (per_instrument ignored)",
     "strategies/risk/supervisor.py", "        if self.config.per_instrument:\n", "        if False:\n", SYMBOL_BREACH),
    ("builder: a several-instrument node without per-instrument states", "mmbot/builders.py",
     'if name == "RiskSupervisor" and len(members) > 1:', 'if name == "RiskSupervisor" and False:',
     ["tests/test_portfolio_backtest.py::test_a_symbol_breach_restricts_that_symbol_only"]),
    ("single-instrument path changed (per_instrument on by default)", "strategies/risk/supervisor.py",
     "    per_instrument: bool = False", "    per_instrument: bool = True", STATE_TESTS),
    ("REDUCING rule: a BUY denied when net short", "strategies/risk/instrument_state.py",
     "            return self._portfolio.is_net_long(order.instrument_id)",
     "            return self._portfolio.is_net_short(order.instrument_id)", STATE_TESTS),
    ("HALTED lets amends through", "strategies/risk/instrument_state.py",
     '        if state == HALTED:\n            reason = "TradingState is HALTED"',
     '        if False:\n            reason = "TradingState is HALTED"', STATE_TESTS),
    ("REDUCING rejects an amend that lowers the quantity", "strategies/risk/instrument_state.py",
     "command.quantity and command.quantity > order.quantity", "command.quantity", STATE_TESTS),
    ("state denial before Nautilus' validations", "strategies/risk/instrument_state.py",
     "        if not self._engine._check_order(instrument, order) or", "        if False and", STATE_TESTS),
    ("check not bound (the per-instrument states never enforced)", "mmbot/builders.py",
     "    supervisor.bind_instrument_check(check)\n", "",
     ["tests/test_portfolio_backtest.py::test_the_symbol_restriction_is_enforced_before_the_risk_engine"]),
]


def run_one(name: str, rel: str, old: str, new: str, tests: list[str] = TESTS) -> bool:
    path = ROOT / rel
    text = path.read_text()
    if text.count(old) != 1:
        print(f"SETUP ERROR {name}: the original text is not in {rel} exactly once")
        return False
    try:
        path.write_text(text.replace(old, new))
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        path.write_text(text)
    caught = p.returncode != 0
    failed = [ln for ln in p.stdout.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]
    print(f"{'caught  ' if caught else 'SURVIVED'} {name}: {failed[0] if failed else p.stdout.strip().splitlines()[-1]}")
    return caught


def main(argv: list[str] | None = None) -> int:
    """``[WORDS]``: only the mutants whose name contains one of them."""
    words = sys.argv[1:] if argv is None else argv
    results = [run_one(*m) for m in MUTANTS if not words or any(w in m[0] for w in words)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
