"""``[risk.engine] max_notional_per_order``: enforced by mmbot's pre-trade check
(strategies/risk/pretrade.py), since Nautilus 1.231's RiskEngine skips the check for margin
accounts (Bybit linear perpetuals)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from nautilus_trader.execution.messages import ModifyOrder, SubmitOrder
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ClientId, InstrumentId, StrategyId, TraderId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4

from strategies.risk.pretrade import ENDPOINT, NotionalLimit

REPO = Path(__file__).resolve().parents[1]
IID = InstrumentId.from_str("XRPUSDT-LINEAR.BYBIT")


class _Engine:
    def __init__(self):
        self.passed, self.denied, self.rejected = [], [], []

    def execute(self, command):
        self.passed.append(command)

    def _deny_order(self, order, reason):
        self.denied.append((order.client_order_id.value, reason))

    def _deny_order_list(self, order_list, reason):
        self.denied.append(("list", reason))

    def _reject_modify_order(self, order, reason):
        self.rejected.append((order.client_order_id.value, reason))


class _Bus:
    def __init__(self, engine):
        self.endpoints = {ENDPOINT: engine.execute}

    def deregister(self, endpoint, handler):
        assert self.endpoints[endpoint] == handler
        del self.endpoints[endpoint]

    def register(self, endpoint, handler):
        assert endpoint not in self.endpoints
        self.endpoints[endpoint] = handler


class _Price:
    def __init__(self, v):
        self.v = v

    def as_double(self):
        return self.v


class _Book:
    def best_bid_price(self):
        return _Price(1.9)

    def best_ask_price(self):
        return _Price(2.1)


class _Instrument:
    multiplier = Quantity.from_int(1)


class _Instrument10:
    multiplier = Quantity.from_int(10)


class _Cache:
    def __init__(self, orders=(), book=True):
        self._orders = {o.client_order_id: o for o in orders}
        self._book = _Book() if book else None
        self.instrument_obj = _Instrument()

    def order(self, coid):
        return self._orders.get(coid)

    def order_book(self, iid):
        return self._book

    def trade_tick(self, iid):
        return None

    def instrument(self, iid):
        return self.instrument_obj


def _factory():
    return OrderFactory(trader_id=TraderId("T-001"), strategy_id=StrategyId("S-001"), clock=TestClock())


def _submit(order):
    return SubmitOrder(trader_id=order.trader_id, strategy_id=order.strategy_id, order=order,
                       command_id=UUID4(), ts_init=0, client_id=ClientId("QSIMBT"))


def _check(limit=1000.0, orders=(), book=True):
    engine = _Engine()
    bus = _Bus(engine)
    check = NotionalLimit(engine, bus, _Cache(orders, book), {IID: limit})
    check.install()
    return check, engine, bus


def test_installs_in_front_of_the_risk_engine():
    check, engine, bus = _check()
    assert bus.endpoints[ENDPOINT] == check.execute


@pytest.mark.parametrize(("qty", "px", "denied"), [
    (499, "2.0000", False),   # 998 USDT
    (500, "2.0000", False),   # 1000 USDT: at the limit is allowed (denied only above it)
    (501, "2.0000", True),    # 1002 USDT
])
def test_limit_orders_valued_at_their_price(qty, px, denied):
    check, engine, bus = _check(1000.0)
    order = _factory().limit(IID, OrderSide.BUY, Quantity.from_int(qty), Price.from_str(px), TimeInForce.GTC,
                             post_only=True)
    bus.endpoints[ENDPOINT](_submit(order))
    assert bool(engine.denied) is denied and bool(engine.passed) is not denied
    if denied:
        assert engine.denied[0][1].startswith("NOTIONAL_EXCEEDS_MAX_PER_ORDER: max_notional_per_order=1000")


@pytest.mark.parametrize(("side", "qty", "denied"), [
    (OrderSide.BUY, 480, True),    # at the best ask 2.1: 1008 USDT
    (OrderSide.SELL, 520, False),  # at the best bid 1.9: 988 USDT
])
def test_market_orders_valued_at_the_opposite_best(side, qty, denied):
    check, engine, bus = _check(1000.0)
    bus.endpoints[ENDPOINT](_submit(_factory().market(IID, side, Quantity.from_int(qty))))
    assert bool(engine.denied) is denied


def test_notional_includes_the_multiplier():
    check, engine, bus = _check(1000.0)
    check._cache.instrument_obj = _Instrument10()  # 60 x 2.0 x 10 = 1200 USDT
    order = _factory().limit(IID, OrderSide.BUY, Quantity.from_int(60), Price.from_str("2.0000"), TimeInForce.GTC)
    bus.endpoints[ENDPOINT](_submit(order))
    assert engine.denied and not engine.passed


def test_no_price_known_is_denied():
    check, engine, bus = _check(1000.0, book=False)
    bus.endpoints[ENDPOINT](_submit(_factory().market(IID, OrderSide.BUY, Quantity.from_int(1))))
    assert engine.denied and engine.denied[0][1].startswith("NOTIONAL_UNKNOWN")


def test_reduce_only_passes():
    check, engine, bus = _check(1000.0)
    order = _factory().market(IID, OrderSide.SELL, Quantity.from_int(5000), reduce_only=True)
    bus.endpoints[ENDPOINT](_submit(order))
    assert engine.passed and not engine.denied


def test_amend_checked_at_new_price_and_quantity():
    order = _factory().limit(IID, OrderSide.BUY, Quantity.from_int(400), Price.from_str("2.0000"), TimeInForce.GTC)
    check, engine, bus = _check(1000.0, orders=[order])

    def modify(qty=None, px=None):
        return ModifyOrder(trader_id=order.trader_id, strategy_id=order.strategy_id, instrument_id=IID,
                           client_order_id=order.client_order_id, venue_order_id=None, quantity=qty, price=px,
                           trigger_price=None, command_id=UUID4(), ts_init=0)

    bus.endpoints[ENDPOINT](modify(px=Price.from_str("2.4000")))  # 960: passes
    bus.endpoints[ENDPOINT](modify(qty=Quantity.from_int(600)))  # 1200 at 2.0: rejected
    assert len(engine.passed) == 1 and len(engine.rejected) == 1
    assert engine.rejected[0][1].startswith("NOTIONAL_EXCEEDS_MAX_PER_ORDER")


def test_backtest_enforces_the_limit_on_the_margin_account(tmp_path):
    """The default run's orders are ~390 USDT: a 300 USDT limit denies every one (before the fix
    Nautilus' RiskEngine let them through: margin account), 500 lets them through."""
    from mmbot.backtest.run import run_backtest
    from mmbot.config.backtest import load_backtest_config

    window = ['run.start="2024-12-01T07:30:00Z"', 'run.end="2024-12-01T07:31:00Z"', "report.html=false"]
    out = {}
    for limit in (300.0, 500.0):
        cfg = load_backtest_config(REPO / "config" / "backtest.toml",
                                   [*window, f"risk.engine.max_notional_per_order={limit}"])
        run_backtest(cfg, out_dir=tmp_path / f"l{limit:g}")
        out[limit] = pd.read_parquet(tmp_path / f"l{limit:g}" / "orders.parquet")
    assert len(out[300.0]) > 0 and (out[300.0]["status"] == "DENIED").all()
    assert out[300.0]["reason"].str.startswith("NOTIONAL_EXCEEDS_MAX_PER_ORDER").all()
    assert not (out[500.0]["status"] == "DENIED").any()
