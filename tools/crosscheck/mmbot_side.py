"""mmbot side: ``QueueSimExecutionClient`` in a low-level BacktestEngine (as tests/queue_harness.py)
driven by the same fixed quoting policy on a clock timer, with a per-fill trace (exchange time,
price, quantity, the simulator's ``FillInfo`` cause)."""

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
from adapters.sim.fill_info import FILL_INFO_TOPIC
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel

QSIM = ClientId(CLIENT_ID)


class FixedQuoter(Strategy):
    """Decision k at ``t0 + k * step_ns`` (k < ``n_steps``), per side: keep the open order if it
    rests at most ``keep_ticks`` behind the current touch, else cancel it (if open) and submit a
    post-only limit of ``qty`` at the touch. Order id of step k: 2k+1 (bid), 2k+2 (ask), as in the
    hftbacktest loop."""

    def __init__(self, inst, t0: int, n_steps: int, step_ns: int, qty: float, keep_ticks: int):
        super().__init__(StrategyConfig(strategy_id="X-001"))
        self.inst, self.t0, self.n_steps, self.step_ns = inst, t0, n_steps, step_ns
        self.qty = inst.make_qty(qty)
        self.keep_raw = keep_ticks * inst.price_increment.raw
        self.lot_raw = inst.size_increment.raw
        self.cur = {OrderSide.BUY: None, OrderSide.SELL: None}
        self.ids: dict[str, int] = {}  # ClientOrderId value -> policy order id
        self.k = 0
        self.submitted = 0
        self.fills: list[dict] = []
        self.causes: dict[str, str] = {}

    def on_start(self):
        self.subscribe_order_book_deltas(self.inst.id)
        self.subscribe_trade_ticks(self.inst.id)
        self.msgbus.subscribe(FILL_INFO_TOPIC, self._on_fill_info)
        if self.n_steps > 0:
            # A Nautilus timer first fires one interval after its start: start one step early.
            self.clock.set_timer_ns("quote", self.step_ns, self.t0 - self.step_ns,
                                    self.t0 + (self.n_steps - 1) * self.step_ns, self._on_timer)

    def _on_fill_info(self, info):
        self.causes[info.trade_id] = info.cause

    def on_order_filled(self, e):
        self.fills.append({"order": self.ids[e.client_order_id.value], "x_ns": e.ts_event,
                           "price": float(e.last_px), "qty": e.last_qty.raw // self.lot_raw, "local_ns": e.ts_init,
                           "cause": self.causes.get(e.trade_id.value, "venue")})

    def _on_timer(self, _event):
        k = self.k
        self.k += 1
        if k >= self.n_steps:
            return
        book = self.cache.order_book(self.inst.id)
        if book is None:
            return
        bb, ba = book.best_bid_price(), book.best_ask_price()
        for side, px, oid in ((OrderSide.BUY, bb, 2 * k + 1), (OrderSide.SELL, ba, 2 * k + 2)):
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
            self.ids[n.client_order_id.value] = oid
            self.submitted += 1
            self.submit_order(n, client_id=QSIM)


def run_mmbot(stream, model: str, n: float, entry_ms: float, resp_ms: float, qty_lots: int, keep_ticks: int) -> dict:
    """Fills in lots."""
    inst = stream.inst
    qty = qty_lots * float(inst.size_increment)
    engine = BacktestEngine(BacktestEngineConfig(data_engine=DataEngineConfig(buffer_deltas=True),
                                                 logging=LoggingConfig(bypass_logging=True), run_analysis=False))
    engine.add_venue(venue=Venue("BYBIT"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                     base_currency=USDT, starting_balances=[Money(1_000_000, USDT)], book_type=BookType.L2_MBP,
                     trade_execution=True)
    engine.add_instrument(inst)
    lat, resp = Latency("constant", entry_ms), Latency("constant", resp_ms)
    params = SimParams(model=QueueModel(model, n), starting_balance=1_000_000,
                       latency=LatencyModel(order=lat, amend=lat, cancel=lat, response=resp))
    k = engine.kernel
    client = QueueSimExecutionClient(inst.id, params, k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    strat = FixedQuoter(inst, stream.quote_start_ns, stream.n_steps, stream.step_ns, qty, keep_ticks)
    engine.add_strategy(strat)
    engine.add_data(stream.deltas)
    engine.add_data(stream.trades, sort=True)
    engine.run()
    st = dict(client.stats)
    out = {"fills": strat.fills, "orders_submitted": strat.submitted, "post_only_rejects": st["post_only_rejects"],
           "late_events": st["late_events"], "fill_causes": dict(st["fill_causes"]), "stats_fills": st["fills"]}
    engine.dispose()
    return out
