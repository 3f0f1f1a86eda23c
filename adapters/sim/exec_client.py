"""``QueueSimExecutionClient``: a Nautilus execution client that simulates the venue for our
orders with a queue-position model and latencies (docs/queue_model.md).

It owns every order routed to it (``client_id`` = ``QSIM``, and the builder also routes the
venue's orders to it), never forwards anything, and emits OrderSubmitted/Accepted/Rejected/
Updated/ModifyRejected/Canceled/CancelRejected/Filled through the ``generate_*`` methods.
Market data comes only from the message bus (the DataEngine's order-book-deltas and trades
topics) and the cache's order book; time only from the component clock (time alerts for
latencies). Nothing here knows whether the data is replayed or live.

Time model: the clock is local receive time. An order / amend / cancel sent at ``t`` takes
effect at local time ``t + L_cmd + L_md`` where ``L_cmd`` is drawn from the command's latency
distribution and ``L_md`` is the current market-data latency (``ts_init - ts_event`` of the
last book message, or a draw when the data carries none): by then the local book shows the
exchange as it was when the command arrived there. The acknowledgement is emitted at that
moment, fills at the local time of the trade / book message that causes them.

Per-event cost: with no orders (or none in flight) the handlers return after one check; with
orders, only deltas/trades at prices in ``_levels`` (dict by (side, ticks)) touch queue state.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from decimal import Decimal

from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.common.data_topics import TopicCache
from nautilus_trader.execution.client import ExecutionClient
from nautilus_trader.model.enums import AccountType, AggressorSide, BookAction, LiquiditySide, OmsType, OrderSide
from nautilus_trader.model.identifiers import AccountId, ClientId, InstrumentId, TradeId, VenueOrderId
from nautilus_trader.model.objects import AccountBalance, Money, Quantity

from adapters.sim.latency import LatencyModel
from adapters.sim.queue import Level, QueueModel

CLIENT_ID = "QSIM"
POST_ONLY_REJECT = "EC_PostOnlyWillTakeLiquidity"
_BUY, _SELL = 0, 1
_ACTION_CLEAR = BookAction.CLEAR
_ACTION_DELETE = BookAction.DELETE
DISPATCH_WINDOW_NS = 5_000_000  # live feeds: a command sent this soon after a message belongs to it


@dataclass
class SimParams:
    """Everything the client needs besides Nautilus plumbing."""

    model: QueueModel = field(default_factory=QueueModel)
    latency: LatencyModel = field(default_factory=LatencyModel)
    toxic_sweep_prob: float = 0.0
    extra_slippage_bps: float = 0.0
    starting_balance: float = 100_000.0
    leverage: float = 10.0
    seed: int = 42
    # Live feeds (shadow): command arrivals are applied in receive-stamp order against the data,
    # and at the latest this long after their due time if no later message arrives (> the
    # node's processing lag). 0 = backtest: the engine's clock is the data's time already.
    release_grace_ns: int = 0


class _Order:
    __slots__ = ("order", "side", "ticks", "lots", "filled", "voi", "live", "gone", "cancel_sent")

    def __init__(self, order, side: int, ticks: int, lots: int, voi: VenueOrderId) -> None:
        self.order = order
        self.side = side
        self.ticks = ticks
        self.lots = lots  # total quantity in lots
        self.filled = 0
        self.voi = voi
        self.live = False  # reached the exchange and rests in a level
        self.gone = False  # filled, canceled or rejected
        self.cancel_sent = False


class QueueSimExecutionClient(ExecutionClient):
    """Simulated venue for one instrument. ``instrument_id``: the quoted instrument."""

    def __init__(self, instrument_id: InstrumentId, params: SimParams, msgbus, cache, clock,
                 client_id: str = CLIENT_ID) -> None:
        super().__init__(ClientId(client_id), None, OmsType.NETTING, AccountType.MARGIN, None,
                         msgbus, cache, clock)
        self._iid = instrument_id
        self.params = params
        self._model = params.model
        self._lat = params.latency
        self._rng = random.Random(params.seed + 1)
        self._levels: dict[tuple[int, int], Level] = {}
        self._orders: dict = {}  # ClientOrderId -> _Order (until gone)
        self._seq = 0
        self._trade_seq = 0
        self._md_ns = -1  # last observed market-data latency (ns); -1 = none yet
        self._lag_ns = 0  # live feeds: clock - ts_init of the last message (0 in a backtest)
        self._now_ns = 0  # exchange-side "now" (receive-stamp time) of the event being applied
        self._pending: list = []  # (due ns, seq, fn, args): commands in flight, by due time
        self._send_ts = 0  # receive-stamp time of the dispatch in progress (0 = none: use the clock)
        self._send_wall = 0
        self._grace_ns = params.release_grace_ns
        self.stats = {"fills": 0, "filled_lots": 0, "post_only_rejects": 0, "cancel_lost_race": 0,
                      "toxic_sweeps": 0, "amend_lost_priority": 0}
        try:
            AccountFactory.register_calculated_account(client_id)  # the Portfolio books our fills
        except (KeyError, ValueError):
            pass  # already registered in this process

    # -- Lifecycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        inst = self._cache.instrument(self._iid)
        self._inst = inst
        self._tick_raw = inst.price_increment.raw
        self._lot_raw = inst.size_increment.raw
        self._quote = inst.quote_currency
        self._maker_fee = float(inst.maker_fee)
        self._set_account_id(AccountId(f"{self.id.value}-001"))
        bal = Money(self.params.starting_balance, self._quote)
        self.generate_account_state([AccountBalance(bal, Money(0, self._quote), bal)], [], False,
                                    self._clock.timestamp_ns())
        self.get_account().set_default_leverage(Decimal(str(self.params.leverage)))
        topics = TopicCache()
        self._msgbus.subscribe(topic=topics.get_deltas_topic(self._iid), handler=self._on_deltas, priority=1)
        self._msgbus.subscribe(topic=topics.get_trades_topic(self._iid), handler=self._on_trade, priority=1)
        if self._grace_ns > 0:
            # Before the DataEngine applies a message to the cache book (priority 10): commands due
            # before the message's receive stamp reach the exchange first, as in a backtest.
            for topic in (topics.get_deltas_topic(self._iid), topics.get_trades_topic(self._iid)):
                self._msgbus.subscribe(topic=topic, handler=self._release_before, priority=20)
        self._set_connected(True)

    def _stop(self) -> None:
        self._set_connected(False)

    # -- Commands -----------------------------------------------------------------------------

    def _delay(self, cmd_ns: int) -> int:
        md = self._md_ns if self._md_ns >= 0 else self._lat.md.draw_ns(self._lat.rng)
        return cmd_ns + md

    def _later(self, delay_ns: int, fn, *args) -> None:
        """Apply ``fn(*args)`` at exchange time ``send + delay_ns``, where ``send`` is the receive
        stamp of the message the strategy was handling (clock minus the handling lag, which is 0
        in a backtest): the same due time whether the clock is simulated or the wall clock."""
        now = self._clock.timestamp_ns()
        if self._send_ts and now - self._send_wall <= DISPATCH_WINDOW_NS:
            send = self._send_ts  # sent while handling a message (or an arrival): its time
        else:
            send = now - self._lag_ns
        if delay_ns <= 0:
            self._now_ns = send
            fn(*args)
            return
        due = send + delay_ns
        self._seq += 1
        heapq.heappush(self._pending, (due, self._seq, fn, args))
        self._clock.set_time_alert_ns(f"QSIM-{self._seq}", due + self._grace_ns, self._on_alert)

    def _on_alert(self, event) -> None:
        self._release(event.ts_event - self._grace_ns + 1)

    def _release(self, before_ns: int) -> None:
        """Apply the commands due before ``before_ns``, in due-time order."""
        pending = self._pending
        while pending and pending[0][0] < before_ns:
            due, _seq, fn, args = heapq.heappop(pending)
            self._now_ns = self._send_ts = due
            self._send_wall = self._clock.timestamp_ns()
            fn(*args)
        self._send_ts = 0

    def _release_before(self, data) -> None:
        """Live feeds, before the message reaches the book and the strategy: apply the commands
        due before its receive stamp, then stamp what the handlers send with that receive stamp
        (msgbus priorities cannot run a hook after the strategy, hence the wall-clock window)."""
        if self._pending and self._pending[0][0] < data.ts_init:
            self._release(data.ts_init)
        self._send_ts = data.ts_init
        self._send_wall = self._clock.timestamp_ns()
        self._lag_ns = self._send_wall - data.ts_init

    def submit_order(self, command) -> None:
        order = command.order
        now = self._clock.timestamp_ns()
        self.generate_order_submitted(order.strategy_id, order.instrument_id, order.client_order_id, now)
        self._seq += 1
        o = _Order(order, _BUY if order.side == OrderSide.BUY else _SELL, order.price.raw // self._tick_raw,
                   order.quantity.raw // self._lot_raw, VenueOrderId(f"Q-{self._seq}"))
        self._orders[order.client_order_id] = o
        self._later(self._delay(self._lat.order_ns()), self._arrive, o)

    def modify_order(self, command) -> None:
        o = self._orders.get(command.client_order_id)
        self._later(self._delay(self._lat.amend_ns()), self._amend_arrive, command, o)

    def cancel_order(self, command) -> None:
        o = self._orders.get(command.client_order_id)
        if o is not None:
            o.cancel_sent = True
        self._later(self._delay(self._lat.cancel_ns()), self._cancel_arrive, command, o)

    def cancel_all_orders(self, command) -> None:
        for o in list(self._orders.values()):
            if command.order_side in (OrderSide.NO_ORDER_SIDE, o.order.side):
                o.cancel_sent = True
                self._later(self._delay(self._lat.cancel_ns()), self._cancel_arrive, None, o)

    def batch_cancel_orders(self, command) -> None:
        for c in command.cancels:
            self.cancel_order(c)

    # -- Exchange side: command arrivals ------------------------------------------------------

    def _book_best(self) -> tuple[int | None, int | None]:
        book = self._cache.order_book(self._iid)
        if book is None:
            return None, None
        bp, ap = book.best_bid_price(), book.best_ask_price()
        return (bp.raw // self._tick_raw if bp is not None else None,
                ap.raw // self._tick_raw if ap is not None else None)

    def _crosses(self, side: int, ticks: int) -> bool:
        bid, ask = self._book_best()
        if side == _BUY:
            return ask is not None and ticks >= ask
        return bid is not None and ticks <= bid

    def _visible_lots(self, side: int, ticks: int) -> float:
        book = self._cache.order_book(self._iid)
        if book is None:
            return 0.0
        raw = ticks * self._tick_raw
        for lvl in (book.bids() if side == _BUY else book.asks()):
            praw = lvl.price.raw
            if praw == raw:
                return lvl.size() / float(self._inst.size_increment)
            if (side == _BUY and praw < raw) or (side == _SELL and praw > raw):
                break
        return 0.0

    def _join(self, o: _Order) -> None:
        key = (o.side, o.ticks)
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = Level(self._visible_lots(o.side, o.ticks))
        level.join(o.order.client_order_id, o.lots - o.filled)
        o.live = True

    def _leave(self, o: _Order) -> None:
        key = (o.side, o.ticks)
        level = self._levels.get(key)
        if level is not None:
            level.remove(o.order.client_order_id)
            if not level.orders:
                del self._levels[key]
        o.live = False

    def _arrive(self, o: _Order) -> None:
        if o.gone:
            return
        order = o.order
        now = self._now_ns
        if self._crosses(o.side, o.ticks):
            o.gone = True
            self._orders.pop(order.client_order_id, None)
            self.stats["post_only_rejects"] += 1
            self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id,
                                         POST_ONLY_REJECT, now, True)
            return
        self.generate_order_accepted(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, now)
        self._join(o)

    def _amend_arrive(self, command, o: _Order | None) -> None:
        now = self._now_ns
        if o is None or o.gone or not o.live:
            self.generate_order_modify_rejected(command.strategy_id, command.instrument_id, command.client_order_id,
                                                o.voi if o else None, "order not found (filled or canceled)", now)
            return
        order = o.order
        new_ticks = command.price.raw // self._tick_raw if command.price is not None else o.ticks
        new_lots = command.quantity.raw // self._lot_raw if command.quantity is not None else o.lots
        if new_lots <= o.filled:
            self.generate_order_modify_rejected(order.strategy_id, order.instrument_id, order.client_order_id, o.voi,
                                                "quantity not above filled quantity", now)
            return
        if new_ticks != o.ticks and self._crosses(o.side, new_ticks):
            self.stats["post_only_rejects"] += 1
            self.generate_order_modify_rejected(order.strategy_id, order.instrument_id, order.client_order_id, o.voi,
                                                POST_ONLY_REJECT, now)
            return
        if new_ticks != o.ticks or new_lots > o.lots:  # loses priority: back of the (new) queue
            self._leave(o)
            o.ticks, o.lots = new_ticks, new_lots
            self._join(o)
            self.stats["amend_lost_priority"] += 1
        elif new_lots < o.lots:  # keeps priority
            o.lots = new_lots
            self._levels[(o.side, o.ticks)].reduce(order.client_order_id, new_lots - o.filled)
        price = command.price if command.price is not None else order.price
        qty = command.quantity if command.quantity is not None else order.quantity
        self.generate_order_updated(order.strategy_id, order.instrument_id, order.client_order_id, o.voi,
                                    qty, price, None, now)

    def _cancel_arrive(self, command, o: _Order | None) -> None:
        now = self._now_ns
        if o is None or o.gone:
            if o is not None:
                self.stats["cancel_lost_race"] += 1
            if command is not None:
                self.generate_order_cancel_rejected(command.strategy_id, command.instrument_id,
                                                    command.client_order_id, o.voi if o else None,
                                                    "order not found (already filled or canceled)", now)
            return
        order = o.order
        if o.live:
            self._leave(o)
        o.gone = True
        self._orders.pop(order.client_order_id, None)
        self.generate_order_canceled(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, now)

    # -- Exchange side: market data -----------------------------------------------------------

    def _on_deltas(self, deltas) -> None:
        if deltas.ts_init > deltas.ts_event:
            self._md_ns = deltas.ts_init - deltas.ts_event
        levels = self._levels
        if not levels:
            return
        self._now_ns = deltas.ts_init
        final: dict = {}
        tick_raw, lot_raw = self._tick_raw, self._lot_raw
        for d in deltas.deltas:
            action = d.action
            if action == _ACTION_CLEAR:
                for key in levels:
                    final[key] = 0.0
                continue
            bo = d.order
            key = (_BUY if bo.side == OrderSide.BUY else _SELL, bo.price.raw // tick_raw)
            if key in levels:
                final[key] = 0.0 if action == _ACTION_DELETE else bo.size.raw / lot_raw
        model = self._model
        for key, size in final.items():
            levels[key].on_book(model, size)
        # The book moved through our price: we are filled in full (trade-through by the book).
        bid, ask = self._book_best()
        for key in [k for k in levels if (k[0] == _BUY and ask is not None and k[1] >= ask)
                    or (k[0] == _SELL and bid is not None and k[1] <= bid)]:
            self._fill_level_full(key)

    def _on_trade(self, tick) -> None:
        levels = self._levels
        if not levels:
            return
        self._now_ns = tick.ts_init
        ticks = tick.price.raw // self._tick_raw
        lots = tick.size.raw / self._lot_raw
        aggr = tick.aggressor_side
        for key in list(levels):
            side, lt = key
            if side == _BUY:
                if lt > ticks:
                    self._fill_level_full(key)
                elif lt == ticks and aggr != AggressorSide.BUYER:
                    self._fill_fifo(key, lots)
            else:
                if lt < ticks:
                    self._fill_level_full(key)
                elif lt == ticks and aggr != AggressorSide.SELLER:
                    self._fill_fifo(key, lots)

    def _fill_fifo(self, key, lots: float) -> None:
        level = self._levels.get(key)
        if level is None:  # emptied earlier in the same trade's loop (a toxic sweep filled it)
            return
        for qo, q in level.on_trade(lots):
            o = self._orders.get(qo.key)
            if o is not None:
                self._fill(o, q)

    def _fill_level_full(self, key) -> None:
        level = self._levels.get(key)
        if level is None:
            return
        for qo in list(level.orders):
            o = self._orders.get(qo.key)
            if o is not None and not o.gone:
                self._fill(o, o.lots - o.filled)

    def _fill(self, o: _Order, lots: int, sweep: bool = True) -> None:
        if lots <= 0 or o.gone:
            return
        order = o.order
        o.filled += lots
        key = (o.side, o.ticks)
        level = self._levels.get(key)
        if o.filled >= o.lots:
            o.gone = True
            self._orders.pop(order.client_order_id, None)
            if level is not None:
                level.remove(order.client_order_id)
                if not level.orders:
                    del self._levels[key]
        elif level is not None:
            level.reduce(order.client_order_id, o.lots - o.filled)
        self._trade_seq += 1
        qty = Quantity.from_raw(lots * self._lot_raw, self._inst.size_precision)
        px = order.price
        notional = float(qty) * float(px) * float(self._inst.multiplier)
        fee = notional * (self._maker_fee + self.params.extra_slippage_bps * 1e-4)
        now = self._now_ns
        self.stats["fills"] += 1
        self.stats["filled_lots"] += lots
        self.generate_order_filled(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, None,
                                   TradeId(f"QT-{self._trade_seq}"), order.side, order.order_type, qty, px,
                                   self._quote, Money(fee, self._quote), LiquiditySide.MAKER, now)
        if sweep and self.params.toxic_sweep_prob > 0.0 and self._rng.random() < self.params.toxic_sweep_prob:
            # Adverse move: the market sweeps through our other orders on the same side.
            self.stats["toxic_sweeps"] += 1
            for other in [x for x in self._orders.values() if x.side == o.side and x.live and not x.gone]:
                self._fill(other, other.lots - other.filled, sweep=False)

    # -- Inspection (tests) -------------------------------------------------------------------

    def queue_ahead(self, client_order_id) -> float | None:
        """Estimated market lots ahead of a live order (None if not resting)."""
        o = self._orders.get(client_order_id)
        if o is None or not o.live:
            return None
        for qo in self._levels[(o.side, o.ticks)].orders:
            if qo.key == client_order_id:
                return qo.ahead
        return None
