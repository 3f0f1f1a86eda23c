"""A low-level BacktestEngine with ``QueueSimExecutionClient`` and a scripted strategy, for the
queue scenario tests (tests/test_queue_engine.py, tests/test_queue_timeline.py).

Market data builders with separate exchange and receive times (``x_ms``, ``r_ms``, ms after
``T0``): ``snap``, ``book``, ``tr``; ``snapshot``/``update``/``trade`` (tests/test_strategy_scenarios)
stamp both with one time."""

from __future__ import annotations

from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import DataEngineConfig, LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import BookOrder, OrderBookDelta, TradeTick
from nautilus_trader.model.enums import AccountType, BookAction, BookType, OmsType, OrderSide, RecordFlag, TimeInForce
from nautilus_trader.model.identifiers import ClientId, TradeId, Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.trading.strategy import Strategy

from adapters.sim.exec_client import CLIENT_ID, QueueSimExecutionClient, SimParams
from adapters.sim.fill_info import FILL_INFO_TOPIC
from tests.test_strategy_scenarios import INSTRUMENT, IID, MS, T0, _px, _qty

F_LAST, F_SNAPSHOT = RecordFlag.F_LAST.value, RecordFlag.F_SNAPSHOT.value


def _ns(t_ms: float) -> int:
    return T0 + int(round(t_ms * MS))


def snap(x_ms: float, r_ms: float, bids: list, asks: list) -> list:
    """A snapshot message (CLEAR + ADDs) at exchange time ``x_ms``, received at ``r_ms``."""
    x, r = _ns(x_ms), _ns(r_ms)
    levels = [(OrderSide.BUY, p, q) for p, q in bids] + [(OrderSide.SELL, p, q) for p, q in asks]
    out = [OrderBookDelta(IID, BookAction.CLEAR, None, 0 if levels else F_LAST, 0, x, r)]  # empty: CLEAR is the message
    for k, (side, p, q) in enumerate(levels):
        flags = F_SNAPSHOT | (F_LAST if k == len(levels) - 1 else 0)
        out.append(OrderBookDelta(IID, BookAction.ADD, BookOrder(side, _px(p), _qty(q), 0), flags, 0, x, r))
    return out


def book(x_ms: float, r_ms: float, *changes) -> list:
    """A delta message: (side, price, size) each, size 0 = DELETE."""
    x, r = _ns(x_ms), _ns(r_ms)
    out = []
    for k, (side, p, q) in enumerate(changes):
        action = BookAction.UPDATE if q > 0 else BookAction.DELETE
        out.append(OrderBookDelta(IID, action, BookOrder(side, _px(p), _qty(q), 0),
                                  F_LAST if k == len(changes) - 1 else 0, 0, x, r))
    return out


def tr(x_ms: float, r_ms: float, px: float, sz: float, aggressor, trade_id: str = "1") -> list:
    return [TradeTick(IID, _px(px), _qty(sz), aggressor, TradeId(trade_id), _ns(x_ms), _ns(r_ms))]

QSIM = ClientId(CLIENT_ID)


class Scripted(Strategy):
    """Runs ``actions`` [(t_ms, fn(strategy))] on the first book message at or after t_ms;
    records every order event as (t_ms local, kind, name, qty, price, ts_event ms) and every
    ``FillInfo`` in ``fill_infos`` (and as ("fill_info", trade id) in ``sequence``)."""

    def __init__(self, actions, managed_book: bool = True):
        super().__init__(StrategyConfig(strategy_id="S-001"))
        self.managed_book = managed_book
        self.actions = sorted(actions, key=lambda a: a[0])
        self.events: list[tuple] = []
        self.orders: dict[str, object] = {}
        self.fill_infos: list = []
        self.sequence: list[tuple] = []

    def on_start(self):
        self.subscribe_order_book_deltas(IID, managed=self.managed_book)  # False: no cache book
        self.subscribe_trade_ticks(IID)
        self.msgbus.subscribe(FILL_INFO_TOPIC, self._on_fill_info)

    def _on_fill_info(self, info):
        self.fill_infos.append(info)
        self.sequence.append(("fill_info", info.trade_id))

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

    def query(self, order):
        self.query_order(order, client_id=QSIM)

    def _rec(self, kind, e, qty=None, px=None):
        name = next((n for n, o in self.orders.items() if o.client_order_id == e.client_order_id), "?")
        self.events.append((round((self.clock.timestamp_ns() - T0) / MS, 3), kind, name, qty, px,
                            round((e.ts_event - T0) / MS, 3)))
        if kind == "filled":
            self.sequence.append(("filled", e.trade_id.value))

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
        self.cancel_reject_reasons = [*getattr(self, "cancel_reject_reasons", []), e.reason]

    def on_order_updated(self, e):
        self._rec("updated", e)

    def on_order_modify_rejected(self, e):
        self._rec("modify_rejected", e)

    def fills(self, name=None):
        return [(t, q) for t, k, n, q, *_ in self.events if k == "filled" and (name is None or n == name)]

    def kinds(self, with_time: bool = True):
        """[(local ms, kind, name)] or [(kind, name)]."""
        return [(t, k, n) if with_time else (k, n) for t, k, n, *_ in self.events]


def make_engine(actions, params: SimParams, managed_book: bool = True):
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
    strat = Scripted(actions, managed_book)
    engine.add_strategy(strat)
    return engine, client, strat


def run(actions, data, params: SimParams, alert_all: bool = False, managed_book: bool = True):
    """data: list of messages (lists of deltas / trades), replayed in receive (``ts_init``) order,
    book rows before trades at an equal stamp. ``alert_all``: the simulator's exact-alert-for-every-
    item mode (the lazy-application equivalence check); ``managed_book=False``: no cache book (the
    simulator's per-delta relevance fallback). Returns (strategy, client, engine)."""
    engine, client, strat = make_engine(actions, params, managed_book)
    client.alert_all = alert_all
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
