"""``RiskSupervisor``: the audit log, the transition record and the RiskEngine trading state.

It subscribes to the guards' constraint topic and, for every ``RiskConstraint``:

1. appends it to the hash-chained audit log (``audit_path``; empty = no file);
2. keeps it in ``transitions`` (for the report);
3. recomputes the most restrictive ``trading_state`` over all guards and, when it changes,
   records a ``risk_engine`` transition and applies it to Nautilus' ``RiskEngine`` if one was
   bound with ``bind_risk_engine``.

Nautilus 1.231 has no message-bus endpoint for the trading state: ``RiskEngine`` registers
only ``RiskEngine.execute`` / ``RiskEngine.process`` and exposes ``set_trading_state`` as a
method of the engine object, which actors cannot reach. So the *builder* (which owns the
kernel in every mode: ``BacktestEngine.kernel.risk_engine``, ``TradingNode.kernel.risk_engine``)
binds it here; unbound (e.g. a test), the supervisor still records the wanted state.
"""

from __future__ import annotations

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.enums import TradingState

from strategies.risk.audit import AuditLog
from strategies.risk.base import ACTIVE, RISK_TOPIC, RiskConstraint, most_restrictive, ns_to_iso

MAX_REPORTED_TRANSITIONS = 200  # the report lists the first ones; the audit log has all


class RiskSupervisorConfig(ActorConfig, frozen=True):
    """audit_path: JSONL audit log ("" = none); fsync: fsync every record (live);
    topic: the guards' constraint topic."""

    audit_path: str = ""
    fsync: bool = False
    topic: str = RISK_TOPIC


class RiskSupervisor(Actor):
    def __init__(self, config: RiskSupervisorConfig | None = None) -> None:
        super().__init__(config or RiskSupervisorConfig())
        self._risk_engine = None
        self._audit: AuditLog | None = None
        self.transitions: list[RiskConstraint] = []
        self._wanted: dict[tuple[str, str | None], str] = {}  # (guard, instrument id) -> state
        self.trading_state = ACTIVE

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
        if msg.guard == "risk_engine":
            return
        self._record(msg)
        # Per (guard, instrument): a portfolio node runs each guard once per instrument, and one
        # instrument's guard clearing must not clear another's (docs/portfolio.md).
        self._wanted[(msg.guard, msg.instrument_id)] = msg.trading_state
        wanted = most_restrictive(self._wanted.values())
        if wanted != self.trading_state:
            old, self.trading_state = self.trading_state, wanted
            several = len({i for _, i in self._wanted}) > 1
            holders = sorted(f"{g} ({i})" if several and i is not None else g
                             for (g, i), s in self._wanted.items() if s == wanted)
            self._record(RiskConstraint(
                guard="risk_engine", ts_ns=msg.ts_ns, old_state=old, new_state=wanted,
                reason=f"most restrictive guard state ({', '.join(holders) or 'none'}) after {msg.guard}",
            ))
            if self._risk_engine is not None:
                self._risk_engine.set_trading_state(getattr(TradingState, wanted))

    def _record(self, msg: RiskConstraint) -> None:
        self.transitions.append(msg)
        if self._audit is not None:
            self._audit.append({
                "ts_ns": msg.ts_ns, "time": ns_to_iso(msg.ts_ns), "guard": msg.guard,
                "old_state": msg.old_state, "new_state": msg.new_state, "reason": msg.reason,
                "numbers": dict(msg.numbers), "allow_bid": msg.allow_bid, "allow_ask": msg.allow_ask,
                "spread_multiplier": msg.spread_multiplier, "trading_state": msg.trading_state,
                "instrument_id": msg.instrument_id,
            })

    def report(self, guards, end_ns: int) -> dict:
        """The ``risk.guards`` part of report.json: transitions, time in each state, metrics."""
        shown = self.transitions[:MAX_REPORTED_TRANSITIONS]
        return {
            "n_transitions": len(self.transitions),
            "transitions_truncated": max(0, len(self.transitions) - len(shown)),
            "transitions": [
                {"time": ns_to_iso(t.ts_ns), "ts_ns": t.ts_ns, "guard": t.guard, "old_state": t.old_state,
                 "new_state": t.new_state, "reason": t.reason}
                for t in shown
            ],
            "final_trading_state": self.trading_state,
            "guards": {g.guard_name: {**g.guard_metrics(), "time_in_state_s": g.time_in_state_s(end_ns)}
                       for g in sorted(guards, key=lambda g: g.guard_name)},
        }
