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
         "tests/test_instrument_state.py", "tests/test_portfolio_guard.py", "tests/test_allocator.py"]

CONFIG_TESTS = ["tests/test_portfolio_config.py"]
STATE_TESTS = ["tests/test_instrument_state.py"]  # the per-instrument trading state, against Nautilus' RiskEngine
GUARD_TESTS = ["tests/test_portfolio_guard.py"]  # [risk.portfolio]
REVIEW25 = ["tests/test_hostile_review25.py"]  # hostile review 25's fixes
REVIEW26 = ["tests/test_hostile_review26.py"]  # hostile review 26's fixes
ALLOC_TESTS = ["tests/test_allocator.py"]  # scoreboard and allocator (strategies/portfolio/)
RESIDUAL = ["tests/test_planner_residual.py", "tests/test_hostile_review26.py"]  # the reducing side's residual (F2)
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
     "        sims[i] = QueueSimExecutionClient(i, params, k.msgbus, k.cache, k.clock, client_id=client_id)",
     "        sims[i] = next(iter(sims.values()), None) or QueueSimExecutionClient(i, params, k.msgbus, k.cache, "
     "k.clock, client_id=client_id)"),
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
     "(state == REDUCING and command.quantity and command.quantity > order.quantity",
     "(state == REDUCING and command.quantity", STATE_TESTS),
    ("state denial before Nautilus' validations", "strategies/risk/instrument_state.py",
     "        if not self._engine._check_order(instrument, order) or", "        if False and", STATE_TESTS),
    ("check not bound (the per-instrument states never enforced)", "mmbot/builders.py",
     "    supervisor.bind_instrument_check(check)\n", "",
     ["tests/test_portfolio_backtest.py::test_the_symbol_restriction_is_enforced_before_the_risk_engine"]),
    ("loss/drawdown guards judge every instrument's fills", "strategies/risk/loss.py",
     "        if self._iid is not None and iid != self._iid:\n", "        if False:\n",
     ["tests/test_portfolio_backtest.py::test_each_instruments_pnl_guards_count_its_own_fills"]),
    # -- [risk.portfolio] (strategies/risk/portfolio.py) --
    ("portfolio breach scoped to one instrument (the guard's constraint names the first)", "mmbot/builders.py",
     'scope = {"instrument_id": None, **portfolio_guard_scope(',
     'scope = {"instrument_id": (instruments or [instrument_id])[0], **portfolio_guard_scope(', GUARD_TESTS),
    ("portfolio sides published for the first instrument only", "strategies/risk/portfolio.py",
     "        for iid in self._instruments:\n            q = nets.get(iid, 0.0)",
     "        for iid in self._instruments[:1]:\n            q = nets.get(iid, 0.0)", GUARD_TESTS),
    ("gross notional computed as net", "strategies/risk/portfolio.py",
     "gross = math.fsum(abs(n) for n in notionals.values())", "gross = abs(math.fsum(notionals.values()))",
     GUARD_TESTS),
    ("beta-weighted net ignores beta", "strategies/risk/portfolio.py",
     "math.fsum(self.beta.betas.get(i, 1.0) * n for", "math.fsum(1.0 * n for", GUARD_TESTS),
    ("soft/hard swapped (soft breach sets the RiskEngine REDUCING)", "strategies/risk/portfolio.py",
     "trading_state=REDUCING if level == 2 else ACTIVE", "trading_state=ACTIVE if level == 2 else REDUCING",
     GUARD_TESTS),
    ("beta before the window is full", "strategies/risk/portfolio.py",
     "if len(pairs) >= self.window else None", "if len(pairs) >= 2 else None", GUARD_TESTS),
    ("portfolio loss on the first instrument's PnL only", "strategies/risk/portfolio.py",
     "        pnl = self.pnl_now() if self._iids else 0.0\n        pnl_today",
     "        pnl = self.ledger.pnl({}) - sum(self.ledger.cash.get(i, 0.0) + self.ledger.position.get(i, 0.0) * "
     "self.ledger.last_px.get(i, 0.0) for i in self._instruments[1:]) if self._iids else 0.0\n        pnl_today",
     GUARD_TESTS),
    ("portfolio drawdown limit ignored", "strategies/risk/portfolio.py",
     "        elif c.max_drawdown_usdt > 0 and dd > c.max_drawdown_usdt:\n", "        elif False:\n",
     ["tests/test_portfolio_guard.py::test_portfolio_loss_on_the_sum_halts_every_symbol"]),
    ("strategy board keyed by guard only (the node constraint overwrites the per-instrument sides)",
     "strategies/risk/base.py", "self._by_guard[(msg.guard, msg.instrument_id)] =",
     "self._by_guard[(msg.guard, None)] =", GUARD_TESTS),
    ("validator: soft gross above hard passes", "strategies/risk/portfolio.py",
     '        check_order(self, "soft_gross_notional_usdt", "hard_gross_notional_usdt")\n', "", GUARD_TESTS),
    ("validator: beta window below 2 passes", "strategies/risk/portfolio.py",
     'check_number(self, "beta_window_minutes", low=2,', 'check_number(self, "beta_window_minutes", low=0,',
     GUARD_TESTS),
    ("validator: [risk.portfolio] in an override passes", "mmbot/config/portfolio.py",
     '"kill_switch", "portfolio")', '"kill_switch")', GUARD_TESTS),
    ("validator: a beta reference outside the run's instruments passes the builder", "mmbot/builders.py",
     "    if ref not in instruments:\n", "    if False:\n", GUARD_TESTS + REVIEW25),
    # -- hostile review 25 (tests/test_hostile_review25.py) --
    ("validator: a beta reference outside the run's instruments passes the config loader (wf, live)",
     "mmbot/config/backtest.py", "    if ref and ref not in instruments:\n", "    if False:\n", REVIEW25),
    ("portfolio guard: a position open at the start has no fallback mark (0 USDT until a book)",
     "strategies/risk/portfolio.py", "            self._last_px[pos.instrument_id.value] = pos.avg_px_open\n",
     "            pass\n", REVIEW25),
    ("portfolio guard: a net breach opens every instrument's own reducing side (hedge leg unwinds)",
     "strategies/risk/portfolio.py",
     "                    if contribution * total < 0:  # 0 (beta 0): the sum unchanged (review 26 F9)\n",
     "                    if False:\n", REVIEW25),
    ("portfolio guard: the beta-net side rule ignores beta", "strategies/risk/portfolio.py",
     '(self.beta.betas.get(iid, 1.0) if key == "beta_net_notional" else 1.0)', "1.0", REVIEW25),
    ("portfolio guard: a hard breach cancels only the own-position increasing side", "strategies/risk/portfolio.py",
     '                    side = "all" if not (bid or ask) else ("bid" if not bid else "ask" if not ask else None)\n',
     '                    side = "all" if q == 0 else ("bid" if q > 0 else "ask")\n', REVIEW25),
    ("position guard: a position open at the start has no fallback mark (0 USDT until a book)",
     "strategies/risk/position.py", "            self._last_px[pos.instrument_id.value] = pos.avg_px_open\n",
     "            pass\n", REVIEW25),
    ("portfolio guard: beta not clamped to beta_max", "strategies/risk/portfolio.py",
     "max(-self.beta_max, min(self.beta_max, beta))", "beta", REVIEW25),
    # -- scoreboard and allocator (strategies/portfolio/) --
    ("allocator: softmax with the wrong sign", "strategies/portfolio/allocator.py",
     "e = [math.exp((s - top) / temperature) for s in scores]", "e = [math.exp((top - s) / temperature) for s in scores]",
     ALLOC_TESTS),
    ("allocator: min/max weight swapped in the clip", "strategies/portfolio/allocator.py",
     "new = clip_weights(raw, self.min_weight, self.max_weight)", "new = clip_weights(raw, self.max_weight, self.min_weight)",
     ALLOC_TESTS),
    ("allocator: clipped weights not renormalised", "strategies/portfolio/allocator.py",
     "w[k] = rest * weights[k] / total if total > 0 else rest / len(free)", "w[k] = weights[k]", ALLOC_TESTS),
    ("allocator: hysteresis ignored", "strategies/portfolio/allocator.py",
     "changed = old is None or out != self._out or moved > self.hysteresis",
     "changed = old is None or out != self._out or moved > 0.0", ALLOC_TESTS),
    ("allocator: inverse_vol proportional to vol", "strategies/portfolio/allocator.py",
     '    elif method == "inverse_vol":\n        inv = [1.0 / vols[k] for k in have]',
     '    elif method == "inverse_vol":\n        inv = [vols[k] for k in have]', ALLOC_TESTS),
    ("allocator: risk_parity ignores the correlation (inverse vol)", "strategies/portfolio/allocator.py",
     "            sub = erc_weights(cov)\n", "            sub = None\n", ALLOC_TESTS),
    ("allocator: a missing volatility taken as is (NaN weights)", "strategies/portfolio/allocator.py",
     "        have = [k for k in names if _finite(vols.get(k, math.nan)) and vols[k] > 0]",
     "        have = list(names)", ALLOC_TESTS),
    ("allocator: blacklist never re-enters", "strategies/portfolio/allocator.py",
     "                if now_ns < self.until_ns[k]:\n", "                if True:\n", ALLOC_TESTS),
    ("allocator: blacklist ignores the interval count (out at the first bad interval)", "strategies/portfolio/allocator.py",
     "if self.after > 0 and self.below[k] >= self.after:", "if self.after > 0 and self.below[k] >= 1:", ALLOC_TESTS),
    ("allocator: budget sent to the wrong instrument", "strategies/portfolio/allocator.py",
     "trading_state=ACTIVE, instrument_id=k, max_position_base=cap,",
     "trading_state=ACTIVE, instrument_id=self.allocator.names[(self.allocator.names.index(k) + 1) % "
     "len(self.allocator.names)], max_position_base=cap,", ALLOC_TESTS),
    ("strategy ignores the budget (position cap)", "strategies/market_maker.py",
     "            if cap != self._position_cap:\n", "            if False:\n", ALLOC_TESTS),
    ("builder: the allocator never placed", "mmbot/builders.py",
     "    if p is None or not p.allocator_enabled:\n", "    if True:\n", ALLOC_TESTS),
    ("scoreboard: EMA never decays", "strategies/portfolio/scoreboard.py",
     "a = 0.5 ** (dt_s / halflife_s) if dt_s > 0 else 1.0", "a = 1.0", ALLOC_TESTS),
    ("scoreboard: markout with the wrong sign", "strategies/portfolio/scoreboard.py",
     "self._raw_mk[k] += (1.0 if is_buy else -1.0)", "self._raw_mk[k] += (-1.0 if is_buy else 1.0)", ALLOC_TESTS),
    ("validator: min_weight x n > 1 passes", "strategies/portfolio/allocator.py",
     "            if self.min_weight * n > 1.0 + 1e-12:\n", "            if False:\n", ALLOC_TESTS),
    ("validator: the temperature check removed (0, NaN, inf pass)", "strategies/portfolio/allocator.py",
     'check_number(self, "temperature", strict=True, high=1e6)', "pass", ALLOC_TESTS),
    ("validator: the allocator without [risk] passes", "mmbot/config/backtest.py",
     '        if allocator["enabled"] and (base.risk is None or not base.risk.enabled):\n',
     "        if False:\n", ALLOC_TESTS),
    # -- F5: a hard portfolio breach denies what Nautilus' REDUCING passes (strategies/risk/instrument_state.py) --
    ("portfolio REDUCING check skipped for flat instruments", "strategies/risk/portfolio.py",
     "        if q == 0.0:\n            return f\"{side} when portfolio REDUCING", "        if False:\n            return f\"{side} when portfolio REDUCING",
     REVIEW25),
    ("portfolio REDUCING check: the hedge-leg rule on the wrong side", "strategies/risk/portfolio.py",
     "            if contribution * total < 0.0:", "            if contribution * total > 0.0:", REVIEW25),
    ("portfolio REDUCING check: the increasing side denied by mmbot (not Nautilus' reason)", "strategies/risk/portfolio.py",
     "        if (q > 0.0) == is_buy:\n            return \"\"\n", "        if False:\n            return \"\"\n", REVIEW25),
    ("instrument check ignores the portfolio guard's state", "strategies/risk/instrument_state.py",
     "        if self._states or (self._portfolio_guard is not None and self._portfolio_guard.guard_state == REDUCING):\n",
     "        if self._states:\n", REVIEW25),
    ("portfolio REDUCING check lets a flat instrument's amend raise its quantity", "strategies/risk/instrument_state.py",
     "        elif command.quantity and command.quantity > order.quantity and self._portfolio_reason(order, command.quantity):\n",
     "        elif False:\n", REVIEW25),
    ("builder: the portfolio guard not bound to the instrument check", "mmbot/builders.py",
     "        check.bind_portfolio_guard(guard)\n", "        pass\n",
     ["tests/test_portfolio_guard.py::test_hard_breach_denies_a_flat_instruments_orders_even_if_the_strategies_ignore_it"]),
    ("validator: beta_max of 0 or below passes", "strategies/risk/portfolio.py",
     'check_number(self, "beta_max", strict=True, high=MAX_BETA)', 'check_number(self, "beta_max", low=-1e9, high=MAX_BETA)',
     GUARD_TESTS),
    ("portfolio guard: REDUCING publishes the sides without the 0 cap (H27 F4: a full level above a smaller "
     "position, denied and re-sent on every book message)", "strategies/risk/portfolio.py",
     "            cap = 0.0 if state == REDUCING else math.inf\n", "            cap = math.inf\n",
     ["tests/test_hostile_review27.py"]),
    # -- hostile review 26 --
    ("validator: allocator interval_s below 1 s passes (F1)", "strategies/portfolio/allocator.py",
     'check_number(self, "interval_s", low=1.0, high=86_400.0)', 'check_number(self, "interval_s", strict=True, high=86_400.0)',
     REVIEW26),
    ("allocator: a budget skipped for want of a mid waits for a weight change (F4)", "strategies/portfolio/allocator.py",
     "        elif any(self._published.get(k) != alloc.budgets_usdt[k] for k in self.allocator.names):\n",
     "        elif False:\n", REVIEW26),
    ("validator: total_budget_usdt of 0 passes (F5)", "strategies/portfolio/allocator.py",
     'check_number(self, "total_budget_usdt", strict=True, high=1e12)', 'check_number(self, "total_budget_usdt", high=1e12)',
     REVIEW26),
    ("portfolio REDUCING check: a zero-beta leg's reduction denied (F9)", "strategies/risk/portfolio.py",
     "            if contribution * total < 0.0:", "            if contribution * total <= 0.0:", REVIEW26),
    ("portfolio sides: a zero-beta leg quotes neither side (F9)", "strategies/risk/portfolio.py",
     "                    if contribution * total < 0:", "                    if contribution * total <= 0:", REVIEW26),
    ("allocator: the clip's water-filling result kept when off the target (F10)", "strategies/portfolio/allocator.py",
     "    if (abs(math.fsum(w.values()) - target) <= 1e-12\n", "    if True or (abs(math.fsum(w.values()) - target) <= 1e-12\n",
     REVIEW26),
    ("shadow: one lock for the whole instrument list (F12)", "mmbot/live/lock.py",
     "for iid in dict.fromkeys(instrument_ids)])", 'for iid in ["+".join(instrument_ids)]])', REVIEW26),
    ("live: a key lock's socket named by its lock_dir again, one key twice from two lock_dirs (F7)",
     "mmbot/live/lock.py", "        real = path.name\n",
     "        real = os.path.join(os.path.realpath(path.parent), path.name)\n", REVIEW26),
    ("validator: a total budget below one order passes (F6)", "mmbot/config/backtest.py",
     "                if order > top:\n", "                if False:\n", REVIEW26),
    ("validator: risk_parity with no more returns than instruments passes (F11)", "strategies/portfolio/allocator.py",
     '            if self.method == "risk_parity" and returns <= n:\n', '            if False:\n', REVIEW26),
    ("wf: an allocator interval as long as the test window passes (F8)", "mmbot/tuning/runner.py",
     '        if cfg.portfolio.allocator_enabled and cfg.portfolio.allocator["interval_s"] * 1e9 >= wf.test_ns:\n',
     '        if False:\n', REVIEW26),
    ("portfolio REDUCING check: a reducing order larger than the position passes (F3)", "strategies/risk/portfolio.py",
     "        if qty > abs(q) * (1.0 + 1e-9):\n", "        if False:\n", REVIEW26),
    ("portfolio REDUCING check: a flip up to twice the position passes (F3)", "strategies/risk/portfolio.py",
     "        if qty > abs(q) * (1.0 + 1e-9):\n", "        if qty > abs(q) * 3.0:\n", REVIEW26),
    # -- the reducing side's residual under a cap below one order (hostile review 26 F2) --
    ("planner residual: no reducing level below one order (the old behaviour, F2)", "strategies/planner.py",
     "        if 0 < reducible and full > self.max_lots + reducible:\n",
     "        if False:\n", RESIDUAL),
    ("planner residual: the reducing order sized to the full level (F2)", "strategies/planner.py",
     "        lots = self._lots0[s] if i == 0 else self.level_lots[i]\n",
     "        lots = self.level_lots[i]\n", RESIDUAL),
    ("planner residual: the position not rounded to the lot step (`int()` of 28.999999999999996, F2)", "strategies/quoting.py",
     "    n = math.floor(abs(position) * inv_step + TICK_EPS)\n",
     "    n = int(abs(position) * inv_step)\n", RESIDUAL),
    ("planner residual: the position rounded to the nearest lot (above the position, F2)", "strategies/quoting.py",
     "    n = math.floor(abs(position) * inv_step + TICK_EPS)\n",
     "    n = round(abs(position) * inv_step)\n", RESIDUAL),
    ("planner residual: the reducing side overshoots beyond the cap (a full level past the gate, F2)",
     "strategies/planner.py",
     "        lots = self._lots0[s] if i == 0 else self.level_lots[i]\n        if lots <= free:\n",
     "        lots = self.level_lots[i]\n        if lots <= free or (i == 0 and self._lots0[s] != lots):\n",
     RESIDUAL),
    ("planner residual: sign error (the increasing side gets the residual, F2)", "strategies/planner.py",
     "        reducible = position_lots if side == ASK else -position_lots",
     "        reducible = position_lots if side == BID else -position_lots", RESIDUAL),
    ("planner residual: a level-0 order larger than the residual kept (F2)", "strategies/planner.py",
     "        if rec.fillable_lots() > lots0:\n", "        if False:\n", RESIDUAL),
    ("planner residual: a residual-sized order kept at a full level (F2)", "strategies/planner.py",
     "        if rec.lots != lots0 and lots0 == self.level_lots[0]:\n", "        if False:\n", RESIDUAL),
    ("planner residual: the settled shortcut ignores a misfit level-0 order (F2)", "strategies/planner.py",
     "                if (rec.lots != lots0 or rec.req_lots != lots0) and self._misfit(rec, lots0) is not None:\n",
     "                if False:\n", RESIDUAL),
    ("strategy: a residual order sent at the level's full size (F2)", "strategies/market_maker.py",
     "self._qty_objs[rec.level] if lots == self._lots[rec.level] else",
     "self._qty_objs[rec.level] if True else", ["tests/test_allocator.py::test_each_strategy_holds_its_budget"]),
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
