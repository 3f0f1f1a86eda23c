"""``RiskSupervisor``: the audit log, the transition record and the RiskEngine trading state.

It subscribes to the guards' constraint topic and, for every ``RiskConstraint``:

1. appends it to the hash-chained audit log (``audit_path``; empty = no file);
2. keeps it in ``transitions`` (for the report);
3. recomputes the most restrictive ``trading_state`` over all guards and, when it changes,
   records a ``risk_engine`` transition and applies it to Nautilus' ``RiskEngine`` if one was
   bound with ``bind_risk_engine``.

Several instruments in one node (``per_instrument``, set by the portfolio builder): Nautilus'
trading state is node-global, so the RiskEngine gets the most restrictive state of the node-scope
constraints only (``instrument_id`` None: the kill switch, the portfolio guards), and each
instrument's most restrictive guard state is handed to the ``InstrumentStateCheck`` in front of
the RiskEngine (strategies/risk/instrument_state.py, bound with ``bind_instrument_check``), which
applies Nautilus' REDUCING/HALTED rules to that instrument's orders only. Each per-instrument change
is recorded like the RiskEngine's (guard ``instrument_state``, its ``instrument_id`` set). A node
with one instrument (the default) keeps the RiskEngine path exactly.

Nautilus 1.231 has no message-bus endpoint for the trading state: ``RiskEngine`` registers
only ``RiskEngine.execute`` / ``RiskEngine.process`` and exposes ``set_trading_state`` as a
method of the engine object, which actors cannot reach. So the *builder* (which owns the
kernel in every mode: ``BacktestEngine.kernel.risk_engine``, ``TradingNode.kernel.risk_engine``)
binds it here; unbound (e.g. a test), the supervisor still records the wanted state.
"""

from __future__ import annotations

import math

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.enums import TradingState

from strategies.risk.audit import AuditLog
from strategies.risk.base import ACTIVE, RISK_TOPIC, RiskConstraint, most_restrictive, ns_to_iso

INSTRUMENT_STATE = "instrument_state"  # the record of a per-instrument state change
OWN_RECORDS = ("risk_engine", INSTRUMENT_STATE)
MAX_REPORTED_TRANSITIONS = 200  # the report lists the first ones; the audit log has all


class RiskSupervisorConfig(ActorConfig, frozen=True):
    """audit_path: JSONL audit log ("" = none); fsync: fsync every record (live);
    topic: the guards' constraint topic."""

    audit_path: str = ""
    fsync: bool = False
    topic: str = RISK_TOPIC
    per_instrument: bool = False  # several instruments: a trading state per instrument (module doc)


class RiskSupervisor(Actor):
    def __init__(self, config: RiskSupervisorConfig | None = None) -> None:
        super().__init__(config or RiskSupervisorConfig())
        self._risk_engine = None
        self._audit: AuditLog | None = None
        self.transitions: list[RiskConstraint] = []
        self._wanted: dict[tuple[str, str | None], str] = {}  # (guard, instrument id) -> state
        self.trading_state = ACTIVE  # the RiskEngine's
        self.instrument_states: dict[str, str] = {}  # per_instrument: instrument id -> its own state
        self._instrument_check = None

    def bind_instrument_check(self, check) -> None:
        """Give the supervisor the per-instrument check (builders only; ``per_instrument``)."""
        self._instrument_check = check

    def bind_risk_engine(self, risk_engine) -> None:
        """Give the supervisor Nautilus' RiskEngine (builders only; see the module doc)."""
        self._risk_engine = risk_engine

    def on_start(self) -> None:
        if self.config.audit_path and self._audit is None:
            self._audit = AuditLog(self.config.audit_path, fsync=self.config.fsync)
        self.msgbus.subscribe(topic=self.config.topic, handler=self._on_constraint)

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic=self.config.topic, handler=self._on_constraint)
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    def on_dispose(self) -> None:
        if self._audit is not None:
            self._audit.close()

    def _on_constraint(self, msg: RiskConstraint) -> None:
        if msg.guard in OWN_RECORDS:
            return
        self._record(msg)
        # Per (guard, instrument): a portfolio node runs each guard once per instrument, and one
        # instrument's guard clearing must not clear another's (docs/portfolio.md).
        self._wanted[(msg.guard, msg.instrument_id)] = msg.trading_state
        if self.config.per_instrument:
            if msg.instrument_id is None:
                self._set_engine_state(msg, [(g, i) for g, i in self._wanted if i is None])
            else:
                self._set_instrument_state(msg)
            return
        self._set_engine_state(msg, list(self._wanted))

    def _set_engine_state(self, msg: RiskConstraint, keys: list) -> None:
        """The most restrictive state of ``keys`` (guard, instrument) onto the RiskEngine."""
        wanted = most_restrictive(self._wanted[k] for k in keys)
        if wanted != self.trading_state:
            old, self.trading_state = self.trading_state, wanted
            several = len({i for _, i in self._wanted}) > 1
            holders = sorted(f"{g} ({i})" if several and i is not None else g
                             for (g, i) in keys if self._wanted[(g, i)] == wanted)
            self._record(RiskConstraint(
                guard="risk_engine", ts_ns=msg.ts_ns, old_state=old, new_state=wanted,
                reason=f"most restrictive guard state ({', '.join(holders) or 'none'}) after {msg.guard}",
            ))
            if self._risk_engine is not None:
                self._risk_engine.set_trading_state(getattr(TradingState, wanted))

    def _set_instrument_state(self, msg: RiskConstraint) -> None:
        """The most restrictive state of the guards of ``msg.instrument_id`` onto the per-instrument check."""
        iid = msg.instrument_id
        wanted = most_restrictive(s for (g, i), s in self._wanted.items() if i == iid)
        old = self.instrument_states.get(iid, ACTIVE)
        if wanted == old:
            return
        self.instrument_states[iid] = wanted
        holders = sorted(g for (g, i), s in self._wanted.items() if i == iid and s == wanted)
        self._record(RiskConstraint(
            guard=INSTRUMENT_STATE, ts_ns=msg.ts_ns, old_state=old, new_state=wanted, instrument_id=iid,
            reason=f"{iid}: most restrictive guard state ({', '.join(holders) or 'none'}) after {msg.guard}; "
                   "enforced on this instrument only",
        ))
        if self._instrument_check is not None:
            from nautilus_trader.model.identifiers import InstrumentId

            self._instrument_check.set_state(InstrumentId.from_str(iid), wanted)

    def _record(self, msg: RiskConstraint) -> None:
        self.transitions.append(msg)
        if self._audit is not None:
            self._audit.append({
                "ts_ns": msg.ts_ns, "time": ns_to_iso(msg.ts_ns), "guard": msg.guard,
                "old_state": msg.old_state, "new_state": msg.new_state, "reason": msg.reason,
                "numbers": dict(msg.numbers), "allow_bid": msg.allow_bid, "allow_ask": msg.allow_ask,
                "spread_multiplier": msg.spread_multiplier, "trading_state": msg.trading_state,
                "instrument_id": msg.instrument_id,
                # the allocator's position cap; absent from the guards' records (unchanged bytes)
                **({"max_position_base": msg.max_position_base} if msg.max_position_base != math.inf else {}),
            })

    def report(self, guards, end_ns: int, instrument_id: str | None = None) -> dict:
        """The ``risk.guards`` part of report.json: transitions, time in each state, metrics.

        ``per_instrument``: every transition names its ``instrument_id`` (None: node scope) and
        ``instrument_trading_states`` lists each instrument's own state; with ``instrument_id``
        (a portfolio's per-instrument section) only that instrument's and the node-scope ones, and
        ``final_trading_state`` is the state its orders are under at the end: the most
        restrictive of the RiskEngine's (node scope) and its own (``instrument_trading_state``)."""
        transitions = self.transitions
        if instrument_id is not None:
            transitions = [t for t in transitions if t.instrument_id in (instrument_id, None)]
        shown = transitions[:MAX_REPORTED_TRANSITIONS]
        per = self.config.per_instrument
        out = {
            "n_transitions": len(transitions),
            "transitions_truncated": max(0, len(transitions) - len(shown)),
            "transitions": [
                {"time": ns_to_iso(t.ts_ns), "ts_ns": t.ts_ns, "guard": t.guard, "old_state": t.old_state,
                 "new_state": t.new_state, "reason": t.reason, **({"instrument_id": t.instrument_id} if per else {})}
                for t in shown
            ],
            "final_trading_state": self.trading_state,
        }
        if per and instrument_id is not None:
            own = self.instrument_states.get(instrument_id, ACTIVE)
            out["final_trading_state"] = most_restrictive((self.trading_state, own))
            out["instrument_trading_state"] = own
        elif per:
            out["instrument_trading_states"] = dict(sorted(self.instrument_states.items()))
        out["guards"] = {g.guard_name: {**g.guard_metrics(), "time_in_state_s": g.time_in_state_s(end_ns)}
                         for g in sorted(guards, key=lambda g: g.guard_name)}
        return out
