"""A low-level BacktestEngine with ``QueueSimExecutionClient`` and a scripted strategy, for the
queue scenario tests (tests/test_queue_engine.py)."""

from __future__ import annotations

from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import DataEngineConfig, LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import OrderBookDelta
from nautilus_trader.model.enums import AccountType, BookType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ClientId, Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.trading.strategy import Strategy

from adapters.sim.exec_client import CLIENT_ID, QueueSimExecutionClient, SimParams
from tests.test_strategy_scenarios import INSTRUMENT, IID, MS, T0, _px, _qty

QSIM = ClientId(CLIENT_ID)


class Scripted(Strategy):
    """Runs ``actions`` [(t_ms, fn(strategy))] on the first book message at or after t_ms;
    records every order event as (t_ms, kind, client_order_id, qty, price)."""

    def __init__(self, actions):
        super().__init__(StrategyConfig(strategy_id="S-001"))
        self.actions = sorted(actions, key=lambda a: a[0])
        self.events: list[tuple] = []
        self.orders: dict[str, object] = {}

    def on_start(self):
        self.subscribe_order_book_deltas(IID)
        self.subscribe_trade_ticks(IID)

    def _run_due(self):
        now_ms = (self.clock.timestamp_ns() - T0) / MS
        while self.actions and self.actions[0][0] <= now_ms:
            self.actions.pop(0)[1](self)

    def on_order_book_deltas(self, deltas):
        self._run_due()

    def on_trade_tick(self, tick):
        self._run_due()

    # helpers used by actions
    def place(self, name, side, px, qty):
        o = self.order_factory.limit(IID, side, _qty(qty), _px(px), TimeInForce.GTC, post_only=True)
        self.orders[name] = o
        self.submit_order(o, client_id=QSIM)

    def amend(self, name, px=None, qty=None):
        o = self.orders[name]
        self.modify_order(o, quantity=_qty(qty) if qty is not None else None,
                          price=_px(px) if px is not None else None, client_id=QSIM)

    def cancel(self, name):
        self.cancel_order(self.orders[name], client_id=QSIM)

    def _rec(self, kind, e, qty=None, px=None):
        name = next((n for n, o in self.orders.items() if o.client_order_id == e.client_order_id), "?")
        self.events.append((round((self.clock.timestamp_ns() - T0) / MS, 3), kind, name, qty, px))

    def on_order_accepted(self, e):
        self._rec("accepted", e)

    def on_order_rejected(self, e):
        self._rec("rejected_post_only" if e.due_post_only else "rejected", e)

    def on_order_filled(self, e):
        self._rec("filled", e, float(e.last_qty), float(e.last_px))

    def on_order_canceled(self, e):
        self._rec("canceled", e)

    def on_order_cancel_rejected(self, e):
        self._rec("cancel_rejected", e)

    def on_order_updated(self, e):
        self._rec("updated", e)

    def on_order_modify_rejected(self, e):
        self._rec("modify_rejected", e)

    def fills(self, name=None):
        return [(t, q) for t, k, n, q, _ in self.events if k == "filled" and (name is None or n == name)]


def make_engine(actions, params: SimParams):
    engine = BacktestEngine(BacktestEngineConfig(data_engine=DataEngineConfig(buffer_deltas=True),
                                                 logging=LoggingConfig(bypass_logging=True), run_analysis=False))
    engine.add_venue(venue=Venue("BYBIT"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                     base_currency=USDT, starting_balances=[Money(100_000, USDT)], book_type=BookType.L2_MBP,
                     trade_execution=True)
    engine.add_instrument(INSTRUMENT)
    k = engine.kernel
    client = QueueSimExecutionClient(IID, params, k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    strat = Scripted(actions)
    engine.add_strategy(strat)
    return engine, client, strat


def run(actions, data, params: SimParams):
    """data: list of messages (lists of deltas / trades). Returns (strategy, client, engine)."""
    engine, client, strat = make_engine(actions, params)
    flat = [d for m in data for d in m]
    book = [d for d in flat if isinstance(d, OrderBookDelta)]
    other = [d for d in flat if not isinstance(d, OrderBookDelta)]
    if book:
        engine.add_data(book)
    if other:
        engine.add_data(other, sort=True)
    engine.run()
    return strat, client, engine


BUY, SELL = OrderSide.BUY, OrderSide.SELL
