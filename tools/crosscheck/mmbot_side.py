"""mmbot side: QueueSimExecutionClient in a low-level BacktestEngine (as tests/queue_harness.py)
driven by the fixed quoting policy on a 1 s clock timer."""

from __future__ import annotations

from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import DataEngineConfig, LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.enums import AccountType, BookType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ClientId, Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.trading.strategy import Strategy

from adapters.sim.exec_client import CLIENT_ID, QueueSimExecutionClient, SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel

QSIM = ClientId(CLIENT_ID)


class FixedQuoter(Strategy):
    """Every ``step_ns`` from ``t0``: per side, keep the open order if it rests at most
    ``keep_ticks`` behind the current touch (0 = only at the touch), else cancel it (if open) and
    submit a post-only order of ``qty`` at the touch."""

    def __init__(self, inst, t0: int, t_end: int, step_ns: int, qty: float, keep_ticks: int = 0):
        super().__init__(StrategyConfig(strategy_id="X-001"))
        self.inst, self.t0, self.t_end, self.step_ns = inst, t0, t_end, step_ns
        self.qty = inst.make_qty(qty)
        self.keep_raw = keep_ticks * inst.price_increment.raw
        self.cur = {OrderSide.BUY: None, OrderSide.SELL: None}
        self.submitted = 0

    def on_start(self):
        self.subscribe_order_book_deltas(self.inst.id)
        self.subscribe_trade_ticks(self.inst.id)
        # A Nautilus timer first fires one interval after its start: start one step early so the
        # first quote goes out at t0, as in the hftbacktest loop.
        self.clock.set_timer_ns("quote", self.step_ns, self.t0 - self.step_ns, self.t_end, self._on_timer)

    def _on_timer(self, _event):
        book = self.cache.order_book(self.inst.id)
        if book is None:
            return
        bb, ba = book.best_bid_price(), book.best_ask_price()
        for side, px in ((OrderSide.BUY, bb), (OrderSide.SELL, ba)):
            if px is None:
                continue
            o = self.cur[side]
            if o is not None:
                o = self.cache.order(o.client_order_id)
                if not o.is_closed:
                    behind = (px.raw - o.price.raw) if side == OrderSide.BUY else (o.price.raw - px.raw)
                    if behind <= self.keep_raw:
                        continue
                    self.cancel_order(o, client_id=QSIM)
            n = self.order_factory.limit(self.inst.id, side, self.qty, px, TimeInForce.GTC, post_only=True)
            self.cur[side] = n
            self.submitted += 1
            self.submit_order(n, client_id=QSIM)


def run_mmbot(inst, deltas, trades, model: str, n: float, latency_ms: float, t0: int, t_end: int,
              step_ns: int, qty: float, keep_ticks: int = 0, response_ms: float = 0.0) -> dict:
    engine = BacktestEngine(BacktestEngineConfig(data_engine=DataEngineConfig(buffer_deltas=True),
                                                 logging=LoggingConfig(bypass_logging=True), run_analysis=False))
    engine.add_venue(venue=Venue("BYBIT"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                     base_currency=USDT, starting_balances=[Money(1_000_000, USDT)], book_type=BookType.L2_MBP,
                     trade_execution=True)
    engine.add_instrument(inst)
    lat, resp = Latency("constant", latency_ms), Latency("constant", response_ms)
    params = SimParams(model=QueueModel(model, n), starting_balance=1_000_000,
                       latency=LatencyModel(order=lat, amend=lat, cancel=lat, response=resp))
    k = engine.kernel
    client = QueueSimExecutionClient(inst.id, params, k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    strat = FixedQuoter(inst, t0, t_end, step_ns, qty, keep_ticks)
    engine.add_strategy(strat)
    engine.add_data(deltas)
    engine.add_data(trades, sort=True)
    engine.run()
    st = dict(client.stats)
    out = {"fills": st["fills"], "filled_qty": round(st["filled_lots"] * float(inst.size_increment), 9),
           "orders_submitted": strat.submitted, "post_only_rejects": st["post_only_rejects"],
           "late_events": st["late_events"], "fill_causes": st["fill_causes"]}
    engine.dispose()
    return out
