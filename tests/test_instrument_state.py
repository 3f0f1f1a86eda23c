"""The per-instrument trading state (strategies/risk/instrument_state.py) against Nautilus 1.231's own
RiskEngine: for every command, a RiskEngine whose node-wide trading state is S and a RiskEngine
that is ACTIVE with the check holding S for the command's instrument emit the same events (the
same ``OrderDenied`` / ``OrderModifyRejected`` reason, or the same command sent on to the
ExecEngine); an instrument the check does not restrict is passed on untouched. And the supervisor
of a several-instrument node: instrument constraints go to the check, node-scope ones to the
RiskEngine, every change recorded."""

from __future__ import annotations

import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder, ModifyOrder, SubmitOrder, SubmitOrderList
from nautilus_trader.model.enums import OrderSide, TimeInForce, TradingState
from nautilus_trader.model.identifiers import StrategyId, TraderId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.portfolio.base import PortfolioFacade
from nautilus_trader.risk.engine import RiskEngine
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from strategies.risk.base import RiskConstraint
from strategies.risk.instrument_state import ENDPOINT, InstrumentStateCheck
from strategies.risk.supervisor import RiskSupervisor, RiskSupervisorConfig

ETH = TestInstrumentProvider.ethusdt_perp_binance()
BTC = TestInstrumentProvider.btcusdt_perp_binance()


class _Portfolio(PortfolioFacade):
    """Net position per instrument: the only thing Nautilus' REDUCING rule asks the portfolio."""

    def __init__(self, net: dict) -> None:
        self.net = net

    def is_net_long(self, instrument_id, account_id=None) -> bool:
        return self.net.get(instrument_id, 0) > 0

    def is_net_short(self, instrument_id, account_id=None) -> bool:
        return self.net.get(instrument_id, 0) < 0


class _Node:
    """A RiskEngine on its own bus; what it sends to the ExecEngine is recorded."""

    def __init__(self, net: dict, node_state: str = "ACTIVE", check_states: dict | None = None) -> None:
        self.clock = TestClock()
        self.bus = MessageBus(TraderId("T-001"), self.clock)
        self.cache = Cache()
        for i in (ETH, BTC):
            self.cache.add_instrument(i)
        self.engine = RiskEngine(_Portfolio(net), self.bus, self.cache, self.clock)
        self.engine.set_trading_state(getattr(TradingState, node_state))
        self.out: list[tuple] = []
        self.bus.register("ExecEngine.process", lambda e: self.out.append((type(e).__name__, e.reason)))
        self.bus.register("ExecEngine.execute", lambda c: self.out.append((type(c).__name__, str(c.instrument_id))))
        self.check = None
        if check_states is not None:
            self.check = InstrumentStateCheck(self.engine, self.bus, self.cache, _Portfolio(net))
            self.check.install()
            for iid, s in check_states.items():
                self.check.set_state(iid, s)
        self.factory = OrderFactory(trader_id=TraderId("T-001"), strategy_id=StrategyId("S-001"), clock=self.clock)

    def order(self, instrument, side, qty="1.000", px="100.00", reduce_only=False):
        return self.factory.limit(instrument.id, side, Quantity.from_str(qty), Price.from_str(px), TimeInForce.GTC,
                                  reduce_only=reduce_only)

    def submit(self, instrument, side, **kw):
        order = self.order(instrument, side, **kw)
        self.bus.send(ENDPOINT, SubmitOrder(trader_id=order.trader_id, strategy_id=order.strategy_id, order=order,
                                            command_id=UUID4(), ts_init=0))

    def submit_list(self, orders):
        lst = self.factory.create_list(orders)
        self.bus.send(ENDPOINT, SubmitOrderList(trader_id=lst.orders[0].trader_id, strategy_id=lst.strategy_id,
                                                order_list=lst, command_id=UUID4(), ts_init=0))

    def modify(self, instrument, side, qty: str, new_qty: str | None, px: str | None = None):
        order = self.order(instrument, side, qty=qty)
        self.cache.add_order(order)
        self.bus.send(ENDPOINT, ModifyOrder(
            trader_id=order.trader_id, strategy_id=order.strategy_id, instrument_id=order.instrument_id,
            client_order_id=order.client_order_id, venue_order_id=None,
            quantity=Quantity.from_str(new_qty) if new_qty else None, price=Price.from_str(px) if px else None,
            trigger_price=None, command_id=UUID4(), ts_init=0))


NETS = {"long": {ETH.id: 1}, "short": {ETH.id: -1}, "flat": {}}
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def _both(state: str, net: str, action) -> tuple[list, list]:
    """(events of Nautilus with its node state = ``state``, events of the check with ETH = ``state``)."""
    nautilus = _Node(NETS[net], node_state=state)
    mmbot = _Node(NETS[net], check_states={ETH.id: state})
    action(nautilus)
    action(mmbot)
    return nautilus.out, mmbot.out


@pytest.mark.parametrize("state", ["REDUCING", "HALTED"])
@pytest.mark.parametrize("net", ["long", "short", "flat"])
@pytest.mark.parametrize("side", [BUY, SELL])
def test_submit_is_refused_exactly_as_nautilus_refuses_it(state, net, side):
    nautilus, mmbot = _both(state, net, lambda n: n.submit(ETH, side))
    assert mmbot == nautilus
    denied = state == "HALTED" or (net == "long" and side == BUY) or (net == "short" and side == SELL)
    assert (nautilus[0][0] == "OrderDenied") is denied, nautilus


def test_reasons_are_nautilus_texts():
    out = _both("REDUCING", "long", lambda n: n.submit(ETH, BUY))[1]
    assert out == [("OrderDenied", f"BUY when TradingState.REDUCING and LONG {ETH.id}")]
    out = _both("REDUCING", "short", lambda n: n.submit(ETH, SELL))[1]
    assert out == [("OrderDenied", f"SELL when TradingState.REDUCING and SHORT {ETH.id}")]
    out = _both("HALTED", "flat", lambda n: n.submit(ETH, SELL, reduce_only=True))[1]
    assert out == [("OrderDenied", "TradingState.HALTED")]


@pytest.mark.parametrize("state", ["REDUCING", "HALTED"])
@pytest.mark.parametrize(("qty", "new_qty", "px"), [("1.000", "2.000", None), ("2.000", "1.000", None),
                                                    ("1.000", None, "101.00")])
@pytest.mark.parametrize("side", [BUY, SELL])
def test_amend_is_rejected_exactly_as_nautilus_rejects_it(state, qty, new_qty, px, side):
    nautilus, mmbot = _both(state, "long", lambda n: n.modify(ETH, side, qty, new_qty, px))
    assert mmbot == nautilus
    rejected = state == "HALTED" or (side == BUY and new_qty == "2.000")
    assert (nautilus[0][0] == "OrderModifyRejected") is rejected, nautilus


@pytest.mark.parametrize("state", ["REDUCING", "HALTED"])
def test_order_list_is_denied_exactly_as_nautilus_denies_it(state):
    def action(n):
        n.submit_list([n.order(ETH, SELL), n.order(ETH, BUY)])

    nautilus, mmbot = _both(state, "long", action)
    assert mmbot == nautilus and all(kind == "OrderDenied" for kind, _ in nautilus) and len(nautilus) == 2


def test_a_validation_failure_keeps_nautilus_reason():
    """An order Nautilus refuses before its trading state (price precision) gets that reason."""
    nautilus, mmbot = _both("HALTED", "flat", lambda n: n.submit(ETH, BUY, px="100.001"))
    assert mmbot == nautilus and "TradingState" not in nautilus[0][1]


def test_another_instrument_is_not_restricted():
    """ETH HALTED in the check: BTC orders and amends reach the ExecEngine as on an ACTIVE engine."""
    node = _Node(NETS["long"], check_states={ETH.id: "HALTED"})
    node.submit(BTC, BUY, qty="0.010", px="100.0")
    node.modify(BTC, BUY, "0.010", "0.020")
    assert node.out == [("SubmitOrder", str(BTC.id)), ("ModifyOrder", str(BTC.id))]
    node.submit(ETH, BUY)
    assert node.out[-1] == ("OrderDenied", "TradingState.HALTED") and node.check.denied == 1


def test_active_clears_the_state_and_cancels_never_pass_here():
    node = _Node(NETS["long"], check_states={ETH.id: "HALTED"})
    node.check.set_state(ETH.id, "ACTIVE")
    node.submit(ETH, BUY)
    assert node.out == [("SubmitOrder", str(ETH.id))]
    # Nautilus routes cancels to the ExecEngine; one sent here anyway is passed on, never refused
    node.check.set_state(ETH.id, "HALTED")
    passed = []
    node.check._forward = passed.append
    order = node.order(ETH, BUY)
    cancel = CancelOrder(trader_id=order.trader_id, strategy_id=order.strategy_id, instrument_id=ETH.id,
                         client_order_id=order.client_order_id, venue_order_id=None, command_id=UUID4(), ts_init=0)
    node.check.execute(cancel)
    assert passed == [cancel]


# -- the supervisor of a several-instrument node ------------------------------------------------

XRP_S, BTC_S = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"


class _Recorder:
    def __init__(self):
        self.calls = []

    def set_state(self, iid, state):
        self.calls.append((str(iid), state))

    def set_trading_state(self, state):
        self.calls.append(("engine", state.name))


def _c(guard, state, iid, ts):
    return RiskConstraint(guard=guard, ts_ns=ts, old_state="", new_state=state, reason="t", trading_state=state,
                          instrument_id=iid)


def test_supervisor_sends_instrument_states_to_the_check_and_node_states_to_the_engine():
    sup = RiskSupervisor(RiskSupervisorConfig(per_instrument=True))
    check, engine = _Recorder(), _Recorder()
    sup.bind_instrument_check(check)
    sup.bind_risk_engine(engine)
    sup._on_constraint(_c("position", "REDUCING", BTC_S, 1))
    sup._on_constraint(_c("loss", "HALTED", BTC_S, 2))
    sup._on_constraint(_c("loss", "ACTIVE", BTC_S, 3))
    sup._on_constraint(_c("position", "ACTIVE", XRP_S, 4))  # XRP fine: no change anywhere
    assert check.calls == [(BTC_S, "REDUCING"), (BTC_S, "HALTED"), (BTC_S, "REDUCING")]
    assert engine.calls == [] and sup.trading_state == "ACTIVE"
    sup._on_constraint(_c("kill_switch", "HALTED", None, 5))
    assert engine.calls == [("engine", "HALTED")] and len(check.calls) == 3
    own = [(t.guard, t.instrument_id, t.old_state, t.new_state) for t in sup.transitions
           if t.guard in ("risk_engine", "instrument_state")]
    assert own == [("instrument_state", BTC_S, "ACTIVE", "REDUCING"), ("instrument_state", BTC_S, "REDUCING", "HALTED"),
                   ("instrument_state", BTC_S, "HALTED", "REDUCING"), ("risk_engine", None, "ACTIVE", "HALTED")]
    rep = sup.report([], 10, instrument_id=BTC_S)
    assert rep["final_trading_state"] == "HALTED" and rep["instrument_trading_state"] == "REDUCING"
    rep = sup.report([], 10, instrument_id=XRP_S)
    assert rep["instrument_trading_state"] == "ACTIVE"
    assert all(t["instrument_id"] in (XRP_S, None) for t in rep["transitions"])


def test_supervisor_of_one_instrument_keeps_the_risk_engine_path():
    sup = RiskSupervisor()
    check, engine = _Recorder(), _Recorder()
    sup.bind_instrument_check(check)
    sup.bind_risk_engine(engine)
    sup._on_constraint(_c("position", "REDUCING", BTC_S, 1))
    assert engine.calls == [("engine", "REDUCING")] and check.calls == []
    assert "instrument_id" not in sup.report([], 10)["transitions"][0]
