"""Pure maths of the risk guards (strategies/risk/*), tested directly, and the audit chain."""

from __future__ import annotations

import json
import math

import pytest

from strategies.risk.audit import GENESIS, AuditLog, verify_chain
from strategies.risk.base import (
    NS_PER_DAY,
    NS_PER_S,
    ConstraintBoard,
    PnlLedger,
    RiskConstraint,
    SlidingCount,
    StateClock,
    most_restrictive,
    next_utc_midnight_ns,
)
from strategies.risk.circuit_breaker import CLOSED, HALF_OPEN, OPEN, BreakerStateMachine, classify_error
from strategies.risk.drawdown import DrawdownTracker
from strategies.risk.edge import PAUSED, WIDENED, EdgeStateMachine, MarkoutWindow, markout_bps
from strategies.risk.loss import loss_breach
from strategies.risk.position import exposure_level


def _c(guard, bid=True, ask=True, mult=1.0, ts="ACTIVE"):
    return RiskConstraint(guard=guard, ts_ns=0, old_state="A", new_state="B", reason="", allow_bid=bid,
                          allow_ask=ask, spread_multiplier=mult, trading_state=ts)


def test_constraint_board_is_most_restrictive_per_guard():
    b = ConstraintBoard()
    assert b.update(_c("position", bid=False)) == (False, True, 1.0)
    assert b.update(_c("edge", mult=2.0)) == (False, True, 2.0)
    assert b.update(_c("stale", bid=False, ask=False)) == (False, False, 2.0)
    assert b.update(_c("stale")) == (False, True, 2.0)  # a guard's new constraint replaces its old one
    assert b.update(_c("position")) == (True, True, 2.0)
    assert b.update(_c("edge")) == (True, True, 1.0)


def test_most_restrictive_and_utc_midnight():
    assert most_restrictive([]) == "ACTIVE"
    assert most_restrictive(["ACTIVE", "REDUCING"]) == "REDUCING"
    assert most_restrictive(["REDUCING", "HALTED", "ACTIVE"]) == "HALTED"
    t = 1_700_000_000 * NS_PER_S  # 2023-11-14T22:13:20Z
    assert next_utc_midnight_ns(t) == 1_700_006_400 * NS_PER_S
    assert next_utc_midnight_ns(next_utc_midnight_ns(t)) == 1_700_006_400 * NS_PER_S + NS_PER_DAY


def test_sliding_count_window_is_half_open():
    c = SlidingCount(10)
    assert [c.add(t) for t in (0, 5, 9)] == [1, 2, 3]
    assert c.count(10) == 2  # t=0 is exactly one window old: out
    assert c.count(18) == 1 and c.count(19) == 0


def test_pnl_ledger_linear_cash_and_marks():
    led = PnlLedger()
    led.on_fill("X", True, 100.0, 2.0, 0.04)   # buy 2 @ 100, fee 0.04
    led.on_fill("X", False, 101.0, 1.0, 0.02)  # sell 1 @ 101, fee 0.02
    assert led.position["X"] == 1.0
    assert led.turnover == pytest.approx(301.0)
    # cash = -200 - 0.04 + 101 - 0.02 = -99.06; at mark 102: -99.06 + 102 = 2.94
    assert led.pnl({"X": 102.0}) == pytest.approx(2.94)
    assert led.pnl({}) == pytest.approx(-99.06 + 101.0)  # no mark: last fill price
    assert led.pnl({"X": math.nan}) == pytest.approx(1.94)


def test_state_clock_time_in_state():
    s = StateClock("ACTIVE", 0)
    s.move("HALTED", 3 * NS_PER_S)
    s.move("ACTIVE", 5 * NS_PER_S)
    assert s.seconds(10 * NS_PER_S) == {"ACTIVE": 8.0, "HALTED": 2.0}
    assert s.transitions == 2


def test_exposure_levels():
    limits = {"position": (1.0, 2.0), "notional": (0.0, 0.0)}
    assert exposure_level({"position": 1.0, "notional": 5.0}, limits) == (0, "")  # at the limit: within
    assert exposure_level({"position": 1.5, "notional": 5.0}, limits) == (1, "position")
    assert exposure_level({"position": 2.5, "notional": 5.0}, limits) == (2, "position")
    assert exposure_level({"position": 0.5, "notional": 9e9}, limits) == (0, "")  # 0 = off


def test_loss_breach_and_drawdown():
    assert loss_breach(-10.0, 0.0, 10.0, 0.0) == ""
    assert loss_breach(-10.01, 0.0, 10.0, 0.0) == "daily_loss"
    assert loss_breach(0.0, 101.0, 10.0, 100.0) == "daily_turnover"
    assert loss_breach(-1e9, 1e9, 0.0, 0.0) == ""
    d = DrawdownTracker()
    assert [d.update(x) for x in (1.0, 3.0, 2.0, -1.0, 4.0)] == [0.0, 0.0, 1.0, 4.0, 0.0]
    assert d.hwm == 4.0 and d.max_drawdown == 4.0
    d.rebase(-2.0)
    assert d.update(-2.5) == pytest.approx(0.5)


def test_markout_window_and_edge_machine():
    assert markout_bps(True, 100.0, 99.9) == pytest.approx(-10.0)
    assert markout_bps(False, 100.0, 99.9) == pytest.approx(10.0)
    w = MarkoutWindow(10)
    w.add(0, -4.0)
    w.add(5, -2.0)
    assert w.stats(9) == (2, -3.0)
    assert w.stats(10) == (1, -2.0)
    n, mean = w.stats(100)
    assert n == 0 and math.isnan(mean)
    m = EdgeStateMachine(min_fills=2, min_markout_bps=-1.0)
    assert m.on_stats(1, -50.0) is None  # too few fills to judge
    assert m.on_stats(2, -1.5) == WIDENED
    assert m.on_stats(2, -1.5) == PAUSED
    assert m.on_stats(5, 9.0) is None  # paused: markouts do not matter
    assert m.on_timeout(WIDENED) is None and m.on_timeout(PAUSED) == "ACTIVE"
    assert m.on_stats(2, -1.5) == WIDENED and m.on_stats(3, -1.0) == "ACTIVE"  # at the threshold: good


@pytest.mark.parametrize(("kind", "reason", "post_only", "expected"), [
    ("rejected", "retCode=10006: Too many visits!", False, "rate_limit"),
    ("cancel_rejected", "HTTP 429", False, "rate_limit"),
    ("modify_rejected", "HTTP 403 Forbidden", False, "rate_limit"),
    ("rejected", "insufficient margin", False, "reject"),
    ("rejected", "POST_ONLY would take", True, None),
    ("modify_rejected", "order not found", False, "order_error"),
    ("denied", "REJECTED BY THROTTLER", False, None),
])
def test_classify_error(kind, reason, post_only, expected):
    assert classify_error(kind, reason, post_only) == expected


def test_breaker_state_machine():
    b = BreakerStateMachine(window_ns=100, max_rejects=1, max_rate_limits=0, max_errors=10, probe_orders=2)
    assert b.on_error(0, "reject") is None  # 1 reject allowed
    assert b.on_error(150, "reject") is None  # the first left the window
    assert b.on_error(160, "reject") == OPEN
    assert b.on_success() is None  # open: successes do not count
    assert b.on_cooldown() == HALF_OPEN and b.on_cooldown() is None
    assert b.on_success() is None and b.on_success() == CLOSED
    assert b.numbers(160)["errors"] == 0  # counts cleared on close
    assert b.on_error(200, "rate_limit") == OPEN  # max_rate_limits = 0: the first one trips
    b.on_cooldown()
    assert b.on_error(300, "order_error") == OPEN  # any error while half-open re-opens


def test_audit_chain_append_verify_continue_and_tamper(tmp_path):
    p = tmp_path / "audit.jsonl"
    log = AuditLog(p)
    for i in range(3):
        log.append({"guard": "g", "new_state": f"S{i}", "numbers": {"x": float(i), "nan": math.nan}})
    log.close()
    assert verify_chain(p) == (True, 3, "ok")
    log = AuditLog(p)  # a second writer continues the chain
    log.append({"guard": "g", "new_state": "S3"})
    log.close()
    lines = p.read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert recs[0]["prev_sha256"] == GENESIS and [r["seq"] for r in recs] == [0, 1, 2, 3]
    assert all(recs[i]["prev_sha256"] == recs[i - 1]["sha256"] for i in range(1, 4))
    assert recs[0]["numbers"]["nan"] is None
    assert verify_chain(p) == (True, 4, "ok")

    edited = list(lines)
    edited[1] = edited[1].replace('"S1"', '"S9"')
    p.write_text("\n".join(edited) + "\n")
    ok, line, why = verify_chain(p)
    assert (ok, line) == (False, 2) and "edited" in why
    p.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # a record removed
    ok, line, why = verify_chain(p)
    assert (ok, line) == (False, 2) and "prev_sha256" in why
    p.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20] + "\n")  # torn last line
    assert verify_chain(p)[:2] == (False, 4)
