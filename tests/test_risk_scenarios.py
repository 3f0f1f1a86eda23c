"""Scenario tests of the risk guards: ``MarketMaker`` + guards + ``RiskSupervisor`` in a
low-level ``BacktestEngine`` fed hand-made books and trades (helpers of
``tests/test_strategy_scenarios``). Each test triggers one guard and asserts the exact effect:
state, constraint, orders cancelled, no new orders on the blocked side, RiskEngine trading
state, and recovery when the condition clears. The audit log is verified at the end.

Book: bids 100000.0 / 99999.0, asks 100000.2 / 100001.0 (mid 100000.1). The strategy quotes
one level of 0.001 BTC 2.5 bps from mid: bid 99975.0, ask 100025.2. A SELLER trade at 99975.0
fills our bid; a BUYER trade at 100025.2 fills our ask.
"""

from __future__ import annotations

import json
import os

import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.data import BookOrder, OrderBookDelta
from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide, TimeInForce, TradingState
from nautilus_trader.model.events import OrderRejected
from nautilus_trader.model.identifiers import AccountId, ClientOrderId, StrategyId, TraderId

from strategies.risk.audit import verify_chain
from strategies.risk.base import DATA_STATUS_TOPIC, KILL_ENDPOINT
from strategies.risk.circuit_breaker import CircuitBreakerConfig, CircuitBreakerGuard
from strategies.risk.drawdown import DrawdownGuard, DrawdownGuardConfig
from strategies.risk.edge import EdgeGuard, EdgeGuardConfig
from strategies.risk.kill_switch import KillSwitch, KillSwitchConfig, write_signal
from strategies.risk.loss import LossGuard, LossGuardConfig
from strategies.risk.position import PositionGuard, PositionGuardConfig
from strategies.risk.stale_data import StaleDataConfig, StaleDataGuard
from strategies.risk.supervisor import RiskSupervisor, RiskSupervisorConfig
from tests.test_strategy_scenarios import BOOK, F_LAST, IID, MS, T0, Harness, _px, _qty, snapshot, trade, update

BUY, SELL = OrderSide.BUY, OrderSide.SELL
BID_PX, ASK_PX = 99975.0, 100025.2
MIDNIGHT_MS = 6_400_000  # T0 = 2023-11-14T22:13:20Z; the next UTC day starts 6400 s later


class RiskHarness(Harness):
    """The scenario harness plus a risk supervisor (bound to the kernel's RiskEngine) and guards."""

    def __init__(self, audit_path, guards, **overrides) -> None:
        super().__init__(**overrides)
        self.sup = RiskSupervisor(RiskSupervisorConfig(audit_path=str(audit_path)))
        self.engine.add_actor(self.sup)
        for g in guards:
            self.engine.add_actor(g)
        self.sup.bind_risk_engine(self.engine.kernel.risk_engine)
        self.n_trades = 0
        self.best_bid = 100000.0  # of the last snapshot sent with ``snap``

    @property
    def trading_state(self) -> TradingState:
        return self.engine.kernel.risk_engine.trading_state

    def snap(self, t_ms: int, book: dict) -> None:
        self.best_bid = book["bids"][0][0]
        self.step(snapshot(t_ms, **book))

    def refresh(self, t_ms: int, size: float = 1.0) -> None:
        """A book message that only changes the best bid's size: the strategy requotes."""
        self.step(update(t_ms, (BUY, self.best_bid, size)))

    def fill_bid(self, t_ms: int, px: float = BID_PX, qty: float = 0.001) -> None:
        self.n_trades += 1
        self.step(trade(t_ms, px, qty, AggressorSide.SELLER, f"s{self.n_trades}"))

    def fill_ask(self, t_ms: int, px: float = ASK_PX, qty: float = 0.001) -> None:
        self.n_trades += 1
        self.step(trade(t_ms, px, qty, AggressorSide.BUYER, f"b{self.n_trades}"))

    def transitions(self) -> list[tuple[str, str, str]]:
        return [(t.guard, t.old_state, t.new_state) for t in self.sup.transitions]


@pytest.fixture
def rig(tmp_path):
    made: list[RiskHarness] = []

    def make(*guards, **overrides) -> RiskHarness:
        h = RiskHarness(tmp_path / "audit.jsonl", list(guards), **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
        if (tmp_path / "audit.jsonl").exists():
            assert verify_chain(tmp_path / "audit.jsonl")[0]


def _start(h: RiskHarness) -> None:
    h.snap(0, BOOK)
    h.refresh(100)
    assert h.bids() == [(BID_PX, 0.001)] and h.asks() == [(ASK_PX, 0.001)]


# -- Position and exposure -------------------------------------------------------------------


def test_position_soft_limit_quotes_only_the_reducing_side(rig):
    g = PositionGuard(PositionGuardConfig(instrument_id=IID, soft_position=0.0015, hard_position=0.01))
    h = rig(g)
    _start(h)
    h.fill_bid(1000)
    h.refresh(1010)
    assert g.guard_state == "ACTIVE" and h.bids() == [(BID_PX, 0.001)]
    h.fill_bid(1100)  # long 0.002 > soft 0.0015
    assert g.guard_state == "REDUCE_ONLY"
    assert h.mm.quoting_constraints == (False, True, 1.0)
    for t in (1200, 1300, 1400):
        h.refresh(t, 1.0 + t / 1e5)
        assert h.bids() == [] and len(h.asks()) == 1, "only the reducing (ask) side is quoted"
    assert h.trading_state == TradingState.ACTIVE  # soft limit: the RiskEngine is not involved
    ask = h.asks()[0][0]
    h.fill_ask(1500, ask)  # long 0.001: within the soft limit again
    assert g.guard_state == "ACTIVE" and h.mm.quoting_constraints == (True, True, 1.0)
    h.refresh(1600)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    assert h.transitions() == [("position", "ACTIVE", "REDUCE_ONLY"), ("position", "REDUCE_ONLY", "ACTIVE")]


def test_position_hard_limit_cancels_increasing_side_and_sets_reducing(rig):
    g = PositionGuard(PositionGuardConfig(instrument_id=IID, soft_position=0.0015, hard_position=0.0025))
    h = rig(g, level_size=0.003)
    h.snap(0, BOOK)
    h.refresh(100)
    # A bid the strategy does not manage (another component's order): only the guard cancels it.
    rogue = h.mm.order_factory.limit(IID, BUY, _qty(0.001), _px(99000.0), TimeInForce.GTC, post_only=True)
    h.mm.submit_order(rogue)
    h.refresh(200)
    assert len(h.bids()) == 2
    h.fill_bid(1000, qty=0.003)  # long 0.003 > hard 0.0025
    assert g.guard_state == "REDUCING"
    assert h.trading_state == TradingState.REDUCING  # Nautilus' own RiskEngine, defence in depth
    h.refresh(1100)
    assert h.bids() == [], "increasing side cancelled, the rogue order too"
    assert g.orders_cancelled == 1 and h.engine.cache.order(rogue.client_order_id).is_closed
    h.refresh(1200, 1.1)
    assert h.bids() == [] and len(h.asks()) == 1
    h.fill_ask(1300, h.asks()[0][0], qty=0.003)  # flat again
    assert g.guard_state == "ACTIVE" and h.trading_state == TradingState.ACTIVE
    h.refresh(1400)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    rec = h.sup.transitions[0]
    assert rec.numbers["position_base"] == pytest.approx(0.003) and rec.numbers["limit"] == 0.0025
    assert ("risk_engine", "ACTIVE", "REDUCING") in h.transitions()


# -- Intraday loss, turnover and drawdown -----------------------------------------------------

DROP = dict(bids=[(99800.0, 1.0), (99799.0, 2.0)], asks=[(99800.2, 1.0), (99801.0, 2.0)])  # mid 99800.1


def test_daily_loss_halts_until_next_utc_day(rig):
    g = LossGuard(LossGuardConfig(instrument_id=IID, daily_loss_stop=0.05, check_interval_ms=1000))
    h = rig(g)
    _start(h)
    h.fill_bid(1000)  # long 0.001 @ 99975.0, fee 0.02
    h.snap(1500, DROP)  # PnL = 0.001 * (99800.1 - 99975.0) - 0.02 = -0.195
    assert g.guard_state == "ACTIVE"  # not yet re-marked
    h.refresh(2500)  # the 1 s check at 2000 marks it
    assert g.guard_state == "HALTED"
    assert h.trading_state == TradingState.HALTED
    assert h.bids() == [] and h.asks() == []
    submitted = h.mm.counters["submitted"]
    for t in (3000, 4000, 60_000):
        h.refresh(t, 1.0 + t / 1e6)
    assert h.mm.counters["submitted"] == submitted and h.bids() == [] and h.asks() == []
    rec = h.sup.transitions[0]
    assert rec.reason.startswith("daily_loss") and rec.numbers["pnl_today_quote"] == pytest.approx(-0.1949, abs=1e-3)
    h.refresh(MIDNIGHT_MS + 500)  # the UTC day boundary passed
    assert g.guard_state == "ACTIVE" and h.trading_state == TradingState.ACTIVE
    h.refresh(MIDNIGHT_MS + 600, 1.2)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    assert g.day_figures()[0] == pytest.approx(0.0, abs=1e-9)  # the new day starts from zero
    spent = g.time_in_state_s()
    assert spent["HALTED"] == pytest.approx(MIDNIGHT_MS / 1000 - 2.0, abs=1e-6)


def test_daily_turnover_cap_halts_and_manual_reset_resumes(rig):
    g = LossGuard(LossGuardConfig(instrument_id=IID, daily_turnover_cap=150.0))
    h = rig(g)
    _start(h)
    h.fill_bid(1000)  # ~100 USDT traded
    h.refresh(1010)
    assert g.guard_state == "ACTIVE"
    h.fill_bid(1100)  # ~200 USDT > 150: halts on the fill itself
    assert g.guard_state == "HALTED" and h.trading_state == TradingState.HALTED
    h.refresh(1200)
    assert h.bids() == [] and h.asks() == []
    assert h.sup.transitions[0].reason.startswith("daily_turnover")
    g.manual_reset("operator checked the fills")
    assert g.guard_state == "ACTIVE" and h.trading_state == TradingState.ACTIVE
    h.refresh(1300)
    assert len(h.bids()) == 1 and len(h.asks()) == 1


def test_drawdown_from_high_water_mark_halts(rig):
    g = DrawdownGuard(DrawdownGuardConfig(instrument_id=IID, max_drawdown=0.05, check_interval_ms=500))
    h = rig(g)
    _start(h)
    h.fill_bid(1000)  # equity +0.0051 (0.0251 spread - 0.02 fee): the HWM; no bid re-placed yet
    h.snap(1500, DROP)
    h.refresh(2100)
    assert g.guard_state == "HALTED" and h.trading_state == TradingState.HALTED
    assert h.bids() == [] and h.asks() == []
    rec = h.sup.transitions[0]
    assert rec.numbers["drawdown_quote"] == pytest.approx(0.0051 + 0.1949, abs=1e-3)
    h.refresh(3000, 1.1)
    assert h.bids() == [] and h.asks() == []
    g.manual_reset()
    assert g.tracker.hwm == pytest.approx(-0.1949, abs=1e-3)  # rebased: no immediate re-trigger
    h.refresh(4000)
    assert g.guard_state == "ACTIVE" and len(h.bids()) == 1 and len(h.asks()) == 1


# -- Edge / adverse selection ------------------------------------------------------------------

DOWN5 = dict(bids=[(99950.0, 1.0), (99949.0, 2.0)], asks=[(99950.2, 1.0), (99951.0, 2.0)])  # mid 99950.1
DOWN15 = dict(bids=[(99800.0, 1.0), (99799.0, 2.0)], asks=[(99800.2, 1.0), (99801.0, 2.0)])  # mid 99800.1


def test_edge_widens_then_pauses_then_recovers(rig):
    g = EdgeGuard(EdgeGuardConfig(instrument_id=IID, horizon_ms=1000, window_s=60, min_fills=2,
                                  min_markout_bps=-1.0, widen_factor=2.0, widen_s=60, cooldown_s=30))
    h = rig(g, skew_mode="linear")  # no inventory skew: prices depend on the spread only
    _start(h)
    h.fill_bid(1000)
    h.refresh(1010)
    h.fill_bid(1100)  # two buys at 99975.0, then the mid falls 5 bps
    h.snap(1200, DOWN5)
    h.refresh(2050)  # first markout due at 2000: one fill, too few to judge
    assert g.guard_state == "ACTIVE"
    h.refresh(2150, 1.1)  # second at 2100: mean (99950.1 - 99975) / 99975 * 1e4 = -2.49 bps
    assert g.guard_state == "WIDENED" and h.mm.quoting_constraints == (True, True, 2.0)
    assert h.sup.transitions[0].numbers["markout_mean_bps"] == pytest.approx(-2.4906, abs=1e-3)
    h.refresh(2200, 1.2)
    assert h.mm.last_half_spread_bps == pytest.approx(5.0)  # 2.5 bps x 2
    bid = h.bids()[0][0]
    assert bid == 99900.1  # floor(99950.1 * (1 - 5e-4) = 99900.125 to the 0.1 tick)
    h.fill_bid(3000, bid)
    h.refresh(3010, 1.3)
    h.fill_bid(3100, h.bids()[0][0])  # two fills at the widened quotes, then another fall
    h.snap(3200, DOWN15)
    h.refresh(4200, 1.1)
    assert g.guard_state == "PAUSED" and h.mm.quoting_constraints == (False, False, 1.0)
    assert h.bids() == [] and h.asks() == []
    submitted = h.mm.counters["submitted"]
    h.refresh(20_000, 1.2)
    assert h.mm.counters["submitted"] == submitted and h.bids() == [] and h.asks() == []
    assert h.trading_state == TradingState.ACTIVE  # a quoting pause, not a trading halt
    h.refresh(34_300, 1.3)  # the 30 s cool-down from 4100 is over
    assert g.guard_state == "ACTIVE" and h.mm.quoting_constraints == (True, True, 1.0)
    h.refresh(34_400, 1.4)
    assert len(h.bids()) == 1 and len(h.asks()) == 1 and h.mm.last_half_spread_bps == pytest.approx(2.5)
    assert [t[2] for t in h.transitions()] == ["WIDENED", "PAUSED", "ACTIVE"]


# -- Circuit breaker -----------------------------------------------------------------------------


def _reject(h: RiskHarness, reason: str) -> None:
    """A venue reject of another strategy's order, published where Nautilus publishes it."""
    now = h.engine.kernel.clock.timestamp_ns()
    ev = OrderRejected(TraderId("MMBOT-001"), StrategyId("Other-001"), IID, ClientOrderId(f"X-{now}"),
                       AccountId("BYBIT-001"), reason, UUID4(), now, now)
    h.engine.kernel.msgbus.publish("events.order.Other-001", ev)


def test_circuit_breaker_opens_on_rate_limit_then_half_opens_and_closes(rig):
    g = CircuitBreakerGuard(CircuitBreakerConfig(instrument_id=IID, max_rate_limits=0, cooldown_s=5.0,
                                                 probe_orders=2))
    h = rig(g)
    _start(h)
    _reject(h, "retCode=10006: Too many visits!")
    assert g.guard_state == "OPEN" and h.trading_state == TradingState.HALTED
    h.refresh(200)
    assert h.bids() == [] and h.asks() == []
    submitted = h.mm.counters["submitted"]
    h.refresh(3000, 1.1)
    assert h.mm.counters["submitted"] == submitted, "no new orders while open"
    h.refresh(5300, 1.2)  # cool-down over at 5100: half-open, the strategy sends its quotes as probes
    assert h.trading_state == TradingState.ACTIVE
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    assert g.guard_state == "CLOSED", "two probe orders accepted"
    assert [t[2] for t in h.transitions() if t[0] == "circuit_breaker"] == ["OPEN", "HALF_OPEN", "CLOSED"]
    assert h.sup.transitions[0].numbers["rate_limits"] == 1
    _reject(h, "insufficient balance")  # one ordinary reject is within max_rejects
    assert g.guard_state == "CLOSED"


# -- Stale data and disconnects ---------------------------------------------------------------


def _add(t_ms: int, *levels) -> list:
    """ADD deltas without F_SNAPSHOT (an incremental message rebuilding a book)."""
    ts = T0 + t_ms * MS
    return [OrderBookDelta(IID, BookAction.ADD, BookOrder(side, _px(p), _qty(s), 0),
                           F_LAST if k == len(levels) - 1 else 0, 0, ts, ts)
            for k, (side, p, s) in enumerate(levels)]


def test_stale_book_pulls_quotes_until_fresh_data(rig):
    g = StaleDataGuard(StaleDataConfig(instrument_id=IID, max_book_age_ms=1000, check_interval_ms=100))
    h = rig(g)
    _start(h)
    h.step(trade(2000, 100000.1, 0.5, AggressorSide.BUYER, "t1"))  # time passes, no book update
    assert g.guard_state == "STALE" and h.bids() == [] and h.asks() == []
    assert h.trading_state == TradingState.ACTIVE
    h.refresh(2100)  # fresh data
    assert g.guard_state == "ACTIVE"
    h.refresh(2200, 1.1)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    assert h.sup.transitions[0].numbers["book_age_ms"] == pytest.approx(1100.0)


def test_gap_clear_invalidates_book_until_snapshot(rig):
    g = StaleDataGuard(StaleDataConfig(instrument_id=IID, max_book_age_ms=60_000))
    h = rig(g)
    _start(h)
    ts = T0 + 1000 * MS
    h.step([OrderBookDelta(IID, BookAction.CLEAR, None, F_LAST, 0, ts, ts)])  # the loaders' gap marker
    assert g.guard_state == "INVALID" and h.bids() == [] and h.asks() == []
    h.step(_add(1100, (BUY, 100000.0, 1.0), (SELL, 100000.2, 1.0)))  # a valid book, but no snapshot
    h.refresh(1200)
    assert g.guard_state == "INVALID" and h.bids() == [] and h.asks() == [], "invalid until a snapshot"
    h.snap(1300, BOOK)
    assert g.guard_state == "ACTIVE"
    h.refresh(1400)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    # A data-client disconnect (live adapters publish it on mmbot.data.status).
    h.engine.kernel.msgbus.publish(DATA_STATUS_TOPIC, {"connected": False, "reason": "ws closed"})
    assert g.guard_state == "INVALID"
    h.refresh(1500, 1.1)
    assert h.bids() == [] and h.asks() == []
    h.snap(1600, BOOK)
    h.refresh(1700)
    assert g.guard_state == "ACTIVE" and len(h.bids()) == 1 and len(h.asks()) == 1
    reasons = [t.reason for t in h.sup.transitions if t.guard == "stale_data"]
    assert reasons[0].startswith("book empty") and reasons[2] == "disconnect: ws closed"


# -- Kill switch and audit -------------------------------------------------------------------


def test_kill_switch_file_and_endpoint(rig, tmp_path):
    kill_file = tmp_path / "KILL"
    g = KillSwitch(KillSwitchConfig(instrument_id=IID, file=str(kill_file), poll_interval_ms=100))
    h = rig(g)
    _start(h)
    write_signal(kill_file, "fat finger on the ETH book")
    h.refresh(1000)
    assert g.guard_state == "HALTED" and h.trading_state == TradingState.HALTED
    assert h.bids() == [] and h.asks() == []
    submitted = h.mm.counters["submitted"]
    h.refresh(2000, 1.1)
    assert h.mm.counters["submitted"] == submitted
    os.remove(kill_file)
    h.refresh(3000)
    assert g.guard_state == "ACTIVE" and h.trading_state == TradingState.ACTIVE
    h.refresh(3100, 1.2)
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    # Another trigger (a future HTTP endpoint) calls the same method through the message bus.
    h.engine.kernel.msgbus.send(KILL_ENDPOINT, {"action": "kill", "reason": "ops", "source": "http"})
    h.refresh(3200)
    assert g.guard_state == "HALTED" and h.bids() == [] and h.asks() == []
    h.refresh(3300, 1.3)  # no file: the file poll does not undo an endpoint kill
    assert g.guard_state == "HALTED"
    h.engine.kernel.msgbus.send(KILL_ENDPOINT, {"action": "reset", "reason": "ok", "source": "http"})
    h.refresh(3400)
    assert g.guard_state == "ACTIVE" and len(h.bids()) == 1
    h.close()
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert verify_chain(tmp_path / "audit.jsonl") == (True, len(audit), "ok")
    ks = [r for r in audit if r["guard"] == "kill_switch"]
    assert [(r["old_state"], r["new_state"]) for r in ks] == [("ACTIVE", "HALTED"), ("HALTED", "ACTIVE")] * 2
    assert ks[0]["reason"] == "kill switch (file): fat finger on the ETH book"
    assert ks[0]["time"] == "2023-11-14T22:13:20.200000Z"  # the first poll after the file appeared
    assert [r["new_state"] for r in audit if r["guard"] == "risk_engine"] == ["HALTED", "ACTIVE"] * 2
    spent = g.time_in_state_s()
    assert sum(spent.values()) == pytest.approx(3.4 - 0.0, abs=0.01)
