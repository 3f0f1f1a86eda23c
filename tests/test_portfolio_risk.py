"""Per-instrument guards in one node (docs/portfolio.md): the supervisor keeps each guard's wanted
trading state per (guard, instrument), so one instrument's guard clearing does not clear another
instrument's guard of the same kind."""

from __future__ import annotations

from strategies.risk.base import RiskConstraint
from strategies.risk.supervisor import RiskSupervisor

XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"


def _c(state: str, iid: str, ts: int) -> RiskConstraint:
    return RiskConstraint(guard="position", ts_ns=ts, old_state="", new_state=state, reason="test",
                          trading_state=state, instrument_id=iid)


def test_same_guard_of_two_instruments_is_two_wanted_states():
    sup = RiskSupervisor()
    sup._on_constraint(_c("ACTIVE", XRP, 0))
    sup._on_constraint(_c("REDUCING", BTC, 1))
    assert sup.trading_state == "REDUCING"
    sup._on_constraint(_c("ACTIVE", XRP, 2))  # XRP's position guard is fine: BTC's still holds
    assert sup.trading_state == "REDUCING"
    sup._on_constraint(_c("ACTIVE", BTC, 3))
    assert sup.trading_state == "ACTIVE"
    reasons = [t.reason for t in sup.transitions if t.guard == "risk_engine"]
    assert reasons[0] == f"most restrictive guard state (position ({BTC})) after position"


def test_one_instrument_keeps_the_reason_text():
    sup = RiskSupervisor()
    sup._on_constraint(_c("REDUCING", XRP, 1))
    assert [t.reason for t in sup.transitions if t.guard == "risk_engine"] == [
        "most restrictive guard state (position) after position"]
