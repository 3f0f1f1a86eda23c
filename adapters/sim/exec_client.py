"""``QueueSimExecutionClient``: a Nautilus execution client that simulates the venue for our
orders with a queue-position model, an exchange timeline and latencies (docs/queue_model.md).

It owns every order routed to it (``client_id`` = ``QSIM``, and the builder also routes the
venue's orders to it), never forwards anything, and emits OrderSubmitted/Accepted/Rejected/
Updated/ModifyRejected/Canceled/CancelRejected/Filled through the ``generate_*`` methods, each
fill preceded by a ``FillInfo`` on ``FILL_INFO_TOPIC`` (adapters/sim/fill_info.py). Market data
comes only from the message bus (the DataEngine's order-book-deltas and trades topics); time only
from the component clock. Nothing here knows whether the data is replayed or live.

Two clocks (hftbacktest's model, docs/queue_model.md "Exchange timeline"):

- exchange time ``x``: a market event's ``ts_event``; a command sent at local time ``t`` reaches
  the exchange at ``x = t + L_entry`` (order / amend / cancel latency);
- local time: the Nautilus clock (``ts_init`` of market data, the strategy's decisions).

The simulated exchange applies market events and command arrivals in EXCHANGE order, key
``(x, rank, seq)`` (rank: trade 0, book 1, command 2; seq: receipt / send order), to its OWN
L2 book (a Nautilus ``OrderBook`` fed with the same deltas), and it applies an item at local time
``max(x + L_resp, r)`` (``r``: when the item was received; a command is known when sent). So every
response (ack, reject, fill) reaches the strategy ``L_resp`` after the exchange event that caused
it, unless the feed was slower than ``L_resp`` (a "late" event, applied on receipt and counted).

Mechanics: a pre-hook on the data topics (bus priority 20: before the DataEngine updates the
cache book at 10 and before the strategy at 0) buffers each market event (one tuple in a heap)
and applies everything due; clock alerts wake the exchange at ``x + L_resp`` for the items that
can fill or answer us (command arrivals, trades at/through our prices, book messages after which
the opposite best is at/through our prices - read from the cache book by a second hook at
priority 5). Other items are applied on the next wake-up, in the same key order, so the result is
identical to applying every item at its exact time (they generate no event). Per-event cost: one
tuple, one heap push/pop, one ``OrderBook.apply_deltas``, two book queries per price where we
have orders; no per-delta Python loop.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal

from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.common.data_topics import TopicCache
from nautilus_trader.execution.client import ExecutionClient
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.enums import (
    AccountType, AggressorSide, BookAction, BookType, LiquiditySide, OmsType, OrderSide,
)
from nautilus_trader.model.identifiers import AccountId, ClientId, InstrumentId, TradeId, VenueOrderId
from nautilus_trader.model.objects import AccountBalance, Money, Price, Quantity

from adapters.sim.fill_info import CAUSES, FILL_INFO_TOPIC, FillInfo
from adapters.sim.latency import LatencyModel
from adapters.sim.queue import Level, QueueModel

CLIENT_ID = "QSIM"
BACKTEST_CLIENT_ID = "QSIMBT"  # backtests: an account Nautilus does not recalculate (SimParams)
# Reasons, as Bybit words them (the strategy classifies sim and live rejects alike).
POST_ONLY_REJECT = "EC_PostOnlyWillTakeLiquidity"
CANCEL_NOT_FOUND = "110001: order not exists or too late to cancel"
AMEND_NOT_FOUND = "110001: order not exists or too late to replace"
AMEND_QTY_FILLED = "110003: Order qty must be greater than the filled qty"
_BUY, _SELL = 0, 1
_ACTION_CLEAR = BookAction.CLEAR
_ACTION_DELETE = BookAction.DELETE
_NS_SELL, _NS_BUY = OrderSide.SELL, OrderSide.BUY
# ``OrderBook.get_quantity_at_level`` / ``get_worst_px_for_quantity`` take the side of an order
# that would TAKE the level: a SELL reads the bids, a BUY the asks.
_READ_SIDE = (OrderSide.SELL, OrderSide.BUY)
_RANK_TRADE, _RANK_BOOK, _RANK_CMD = 0, 1, 2


@dataclass
class SimParams:
    """Everything the client needs besides Nautilus plumbing."""

    model: QueueModel = field(default_factory=QueueModel)
    latency: LatencyModel = field(default_factory=LatencyModel)
    extra_slippage_bps: float = 0.0
    starting_balance: float = 100_000.0
    leverage: float = 10.0
    seed: int = 42
    # Live feeds (shadow): the exchange is woken by each received message (pre-hook) and, when no
    # message comes, by a wall-clock alert this long after an item's due time (> the node's
    # processing lag). 0 = backtest: the engine's clock is the data's time already.
    release_grace_ns: int = 0
    # True: the Portfolio keeps the account (balances on fills, margins of every open order and
    # an AccountState on every order event), as shadow's equity metric needs. False (backtests):
    # nobody reads that per-event bookkeeping, so the account stays as it started (use a client
    # id never registered as calculated in the process, ``BACKTEST_CLIENT_ID``: Nautilus'
    # registry is per issuer and global) and the run's cross-check sums Nautilus' positions
    # instead (mmbot/backtest/run.py, ``_nautilus_account_check``).
    calculated_account: bool = True
    # How a book message tells which of our levels it touched (docs/benchmarks.md, "Replay
    # feeds"). True: a level is touched when its size in the book after the message differs from
    # the size we last saw - exact only where no row leaves its level's size unchanged (outside
    # snapshots), which the catalog's importer checks and declares (mmbot/catalog_store.py,
    # ``BookInvariant``); the builder sets it from the catalog. False: the message's own rows at
    # our prices (one Python object per row: slower, exact on any feed, e.g. live in shadow).
    sizes_from_book: bool = False
    # The run's end (ns, local = exchange clock of a replay); 0 = none known (live/shadow). At that
    # instant every buffered item the exchange reached by then (x <= end_ns) is applied: the
    # response latency would deliver its events after the run (``_on_end``).
    end_ns: int = 0
    # A window's start when the replay starts earlier, at the last book snapshot, to build the
    # book (set by the backtest builder): market events received before it are applied but not
    # counted in the report's counters. 0 = count everything.
    count_from_ns: int = 0
    # Several instruments on one venue (adapters/sim/router.py, docs/portfolio.md): one simulator
    # per instrument behind one execution client. ``id_prefix`` makes the venue order ids, trade
    # ids and clock alert names of each unique on the shared cache and clock ("" = one instrument:
    # the ids stay as they were); ``account_state``: only one of them opens the shared account.
    id_prefix: str = ""
    account_state: bool = True


class _Order:
    __slots__ = ("order", "side", "ticks", "lots", "filled", "voi", "live", "gone", "amend_targets")

    def __init__(self, order, side: int, ticks: int, lots: int, voi: VenueOrderId) -> None:
        self.order = order
        self.side = side
        self.ticks = ticks
        self.lots = lots  # total quantity in lots
        self.filled = 0
        self.voi = voi
        self.live = False  # reached the exchange and rests in a level
        self.gone = False  # filled, canceled or rejected at the exchange
        self.amend_targets: list[int] = []  # prices (ticks) of amends in flight


class QueueSimExecutionClient(ExecutionClient):
    """Simulated venue for one instrument. ``instrument_id``: the quoted instrument."""

    def __init__(self, instrument_id: InstrumentId, params: SimParams, msgbus, cache, clock,
                 client_id: str = CLIENT_ID) -> None:
        super().__init__(ClientId(client_id), None, OmsType.NETTING, AccountType.MARGIN, None,
                         msgbus, cache, clock)
        self._iid = instrument_id
        self.params = params
        self._prefix = params.id_prefix
        self._model = params.model
        self._lat = params.latency
        self._resp_ns = self._lat.response_ns()
        self._sizes_from_book = params.sizes_from_book
        self._grace_ns = params.release_grace_ns
        self._count_from_ns = params.count_from_ns
        self._live = params.release_grace_ns > 0
        self._levels: dict[tuple[int, int], Level] = {}
        # (book side, ticks) -> [shown lots, lots our book-through fills took]: opposite liquidity
        # already used by our fills while its level is unchanged (``_book_through``).
        self._taken: dict[tuple[int, int], list[int]] = {}
        self._orders: dict = {}  # ClientOrderId -> _Order (until gone at the exchange)
        self._prices: dict[int, Price] = {}  # ticks -> Price (book queries)
        self._heap: list = []  # (x, rank, seq, r, a, b): buffered items in exchange order
        self._seq = 0
        self._trade_seq = 0
        self._armed: dict[int, str] = {}  # local time -> name of the alert set for it
        self._alerts: dict[str, int] = {}  # alert name -> local time it stands for
        # Names of alerts that have fired, for reuse. Why: Nautilus 1.231's clocks (TestClock and
        # LiveClock) keep each alert name's callback after the alert fired; with a new name per
        # alert (one per pending ack or fill, ~14,000 an hour on the default data) the run grew by
        # every callback and interned name. Reusing fired names bounds them by the most alerts
        # pending at once. The alert times and their order are unchanged.
        self._alert_names_free: list[str] = []
        self._alert_names_made = 0
        self._on_alert_cb = self._on_alert  # one bound method for every alert
        self._applying = False
        self._apply_local = 0  # local time of the item being applied
        self._horizon = 0  # the running _advance applies items due by this local time
        self._last_key = (0, 0, 0)  # key of the last applied item (late-reorder count)
        self._last_x = [0, 0]  # per stream (trade, book): exchange time of its last event
        self._x_seen = 0  # latest exchange time of a market event delivered to the strategy
        self._ended = False  # the run's end was applied (SimParams.end_ns)
        self._watch = None  # (max bid ticks, min ask ticks) of orders that may still rest; None = stale
        self._check_due = 0  # due time of the book message whose relevance _after_book_msg decides
        self._msg_ts = 0  # live: receive stamp of the last message
        self._in_msg = False  # live: that message is being handled (until ``message_handled``)
        self._lag_ns = 0  # live: clock - ts_init of the last message (0 in a backtest)
        self.alert_all = False  # tests: an exact alert for every buffered item (equivalence check)
        # Live feeds: ``run_on_loop(fn, *args)`` runs an alert's work on the thread that handles the
        # market data (set by mmbot.live.shadow to the event loop's ``call_soon_threadsafe``):
        # NautilusTrader 1.231's LiveClock calls alert callbacks on its own timer thread, which
        # the GIL interleaves with the event loop's handlers. None: in the callback (a backtest).
        self.run_on_loop = None
        self.stats = {"fills": 0, "filled_lots": 0, "post_only_rejects": 0, "post_only_amend_rejects": 0,
                      "cancel_lost_race": 0, "cancel_before_order": 0, "amend_lost_priority": 0,
                      "market_events": 0, "late_events": 0, "late_reordered": 0, "unknown_depth_joins": 0,
                      "order_queries": 0, "post_only_own_cross_rejects": 0,
                      "negative_feed_latency_events": 0, "arrivals_after_seen_event": 0,
                      "applied_at_end": 0, "unapplied_at_end": 0,
                      "fill_causes": {c: 0 for c in CAUSES}}
        if params.calculated_account:
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
        self._price_prec = inst.price_precision
        self._size_prec = inst.size_precision
        self._all_qty = Quantity(1e12, inst.size_precision)  # more than any book side: its deepest price
        self._quote = inst.quote_currency
        self._maker_fee = float(inst.maker_fee)
        self._book = OrderBook(self._iid, BookType.L2_MBP)  # the exchange's book (exchange order)
        self._set_account_id(AccountId(f"{self.id.value}-001"))
        if self.params.account_state:
            bal = Money(self.params.starting_balance, self._quote)
            self.generate_account_state([AccountBalance(bal, Money(0, self._quote), bal)], [], False,
                                        self._clock.timestamp_ns())
            self.get_account().set_default_leverage(Decimal(str(self.params.leverage)))
        topics = TopicCache()
        # Priority 20: before the DataEngine applies the message to the cache book (10) and before
        # the strategy (0) - the exchange catches up to the message's receive time first.
        self._msgbus.subscribe(topic=topics.get_deltas_topic(self._iid), handler=self._on_book_msg, priority=20)
        self._msgbus.subscribe(topic=topics.get_trades_topic(self._iid), handler=self._on_trade_msg, priority=20)
        # Priority 5: after the DataEngine applied the message to the cache book, before the
        # strategy - the relevance check of a buffered book message reads the book after it.
        self._msgbus.subscribe(topic=topics.get_deltas_topic(self._iid), handler=self._after_book_msg, priority=5)
        if self.params.end_ns > 0:
            self._clock.set_time_alert_ns(f"{self._prefix}QSIM-END", self.params.end_ns, self._on_end)
        self._set_connected(True)

    def _stop(self) -> None:
        if not self._ended:  # no known end: what the exchange never applied, counted
            self.stats["unapplied_at_end"] = len(self._heap)
        self._set_connected(False)

    def _on_end(self, event) -> None:
        """The run's last instant (``SimParams.end_ns``). An item is normally applied at local time
        ``x + L_resp``, which for the items the exchange reached in the last ``L_resp`` of the run
        is after its end: Nautilus fires no alert there, so their fills would be silently lost
        although they happened inside the window. Rule: every buffered item with ``x <= end`` is
        applied now, in exchange order; its events carry ``ts_event = x`` and reach the strategy at
        the end (local ``min(x + L_resp, end)``, or its receive time if later) instead of
        ``x + L_resp``; whatever the strategy sends in reaction arrives after the end. Counted:
        ``applied_at_end`` (items whose ``x + L_resp`` was after the end), ``unapplied_at_end``
        (items left: ``x > end``, e.g. commands still in flight)."""
        end, heap, resp = self.params.end_ns, self._heap, self._resp_ns
        self._ended = True
        self._applying = True
        self._horizon = end
        try:
            while heap and heap[0][0] <= end:
                x, rank, seq, r, a, b = heapq.heappop(heap)
                due = x + resp
                if due > end:
                    self.stats["applied_at_end"] += 1
                    due = end
                self._apply_local = due if due > r else r
                key = (x, rank, seq)
                if key < self._last_key:
                    self.stats["late_reordered"] += 1
                else:
                    self._last_key = key
                if rank == _RANK_BOOK:
                    self._apply_book(x, a)
                elif rank == _RANK_TRADE:
                    self._apply_trade(x, a)
                else:
                    a(x, *b)
        finally:
            self._applying = False
        self.stats["unapplied_at_end"] = len(heap)

    # -- Sizes and prices (one conversion: raw integers) -------------------------------------

    def lots(self, qty: Quantity) -> int:
        """Whole lots of a quantity: ``qty.raw // size_increment.raw`` (exact integer arithmetic;
        every size the simulator compares - book levels, deltas, trades, orders - goes through it)."""
        return qty.raw // self._lot_raw

    def _price(self, ticks: int) -> Price:
        p = self._prices.get(ticks)
        if p is None:
            p = self._prices[ticks] = Price.from_raw(ticks * self._tick_raw, self._price_prec)
        return p

    def _visibility(self, side: int, ticks: int) -> tuple[bool, int]:
        """``(known, lots)`` of our side's level at ``ticks`` in the exchange book: known with its
        size if shown; known with 0 if inside the visible range (at or before the deepest shown
        level) but absent; unknown (False, 0) beyond the deepest shown level or on an empty side."""
        q = self._book.get_quantity_at_level(self._price(ticks), _READ_SIDE[side], self._size_prec)
        lots = q.raw // self._lot_raw
        if lots > 0:
            return True, lots
        deepest = self._book.get_worst_px_for_quantity(self._all_qty, _READ_SIDE[side])
        if deepest is None:
            return False, 0
        d = deepest.raw // self._tick_raw
        return (ticks >= d if side == _BUY else ticks <= d), 0

    def _best(self) -> tuple[int | None, int | None]:
        bp, ap = self._book.best_bid_price(), self._book.best_ask_price()
        return (bp.raw // self._tick_raw if bp is not None else None,
                ap.raw // self._tick_raw if ap is not None else None)

    def _best_available(self) -> tuple[int | None, int | None]:
        """``_best`` skipping levels whose shown lots our book-through fills took entirely (only
        while ``_taken`` holds something: the loopback exchange's ``_best_avail``)."""
        taken, tick_raw, out = self._taken, self._tick_raw, []
        for book_side, book_levels in ((_BUY, self._book.bids()), (_SELL, self._book.asks())):
            best = None
            for lv in book_levels:
                t = lv.price.raw // tick_raw
                tk = taken.get((book_side, t))
                if tk is None or tk[1] < tk[0]:
                    best = t
                    break
            out.append(best)
        return out[0], out[1]

    def _crosses(self, side: int, ticks: int) -> int:
        """Would a post-only order at ``ticks`` take liquidity? 0: no; 1: from the market (buy:
        ``ticks >= best ask``, sell: ``ticks <= best bid``); 2: only from one of our own resting
        orders on the other side (buy: ``ticks >= lowest own resting ask``). Bybit matches an
        incoming order against our own resting orders like any other (self-match prevention is
        off unless the order sets ``smpType``, and it acts on takers only), so a PostOnly order
        that would trade with our own order is cancelled (EC_PostOnlyWillTakeLiquidity) instead of
        resting locked against it (docs/queue_model.md, "Commands at the exchange")."""
        bid, ask = self._best() if not self._taken else self._best_available()
        if side == _BUY:
            if ask is not None and ticks >= ask:
                return 1
            for s, t in self._levels:  # our live (resting) orders, one key per (side, price)
                if s == _SELL and ticks >= t:
                    return 2
            return 0
        if bid is not None and ticks <= bid:
            return 1
        for s, t in self._levels:
            if s == _BUY and ticks <= t:
                return 2
        return 0

    # -- Timeline -----------------------------------------------------------------------------

    def _send_stamp(self) -> int:
        """Local time a command is sent at: the local time of the item being applied (the
        strategy reacts to our event inside it), else in a live feed the receive stamp of the
        message being handled (from its pre-hook until ``message_handled``, however long that takes
        in wall time), else the clock minus the handling lag (0 in a backtest). The same numbers
        whether the clock is simulated or the wall clock."""
        if self._applying:
            return self._apply_local
        if self._in_msg:
            return self._msg_ts
        return self._clock.timestamp_ns() - self._lag_ns

    def message_handled(self) -> None:
        """Live feeds: the market-data message of the last pre-hook has been handled by every
        subscriber (the strategy's and the guards' commands on it are sent). Called by the shadow
        node after each data item (``mmbot.live.shadow``); a command sent after it (a timer's) is
        no longer stamped with that message's receive time. A wall-clock window here made the
        stamp depend on how fast the handlers ran (a loaded host stamped a message's later
        commands with the wall clock, and the replay diverged)."""
        self._in_msg = False

    def catch_up_for_stop(self) -> int:
        """Live feeds, at the node's stop, just before the strategies are asked to stop: apply every
        buffered item due by the local time now (``_send_stamp``, the stamp the stop's cancels get)
        and return that time. Without it an ack or fill due in the last ``grace`` before the stop
        waited for the next message or alert and reached a stopped strategy, while the replay's
        strategy (no stop) reacts to it at its due time: an order only in the replay before the
        stop instant. With it, every item due by the returned instant reached the running strategy,
        as in the replay; ``mmbot compare`` cuts both runs there (docs/shadow.md, "The stop")."""
        stamp = self._send_stamp()
        self._advance(stamp)
        return stamp

    def received_through_ns(self) -> int | None:
        """Live feeds, at the stop: the exchange time below which every market event of the
        instrument has reached the simulator. Each stream (book, trades) delivers in exchange order
        (``_push_market``), so it is the earliest of the streams' last exchange times; None before
        any event. A market event at an earlier exchange time received after the stop (feed latency
        under load) met the stopped strategy's cancels in the shadow and the replay's later
        commands in the replay: its fills are not comparable (``mmbot compare``)."""
        seen = [x for x in self._last_x if x > 0]
        return min(seen) if seen else None

    def _arm(self, due: int) -> None:
        """A wake-up at local time ``due`` (live: ``+ grace``, the fallback when no message comes)."""
        if due in self._armed:
            return
        self._seq += 1  # as before: the sequence also numbers buffered items and venue order ids
        free = self._alert_names_free
        name = free.pop() if free else self._new_alert_name()
        try:
            self._clock.set_time_alert_ns(name, due + self._grace_ns, self._on_alert_cb)
        except KeyError:
            # LiveClock lists a fired alert until its callback has returned on the clock's thread,
            # and the shadow simulator handles the alert on the event loop (``run_on_loop``): the
            # name may still be taken. Leave it; take a new one.
            name = self._new_alert_name()
            self._clock.set_time_alert_ns(name, due + self._grace_ns, self._on_alert_cb)
        self._armed[due] = name
        self._alerts[name] = due

    def _new_alert_name(self) -> str:
        self._alert_names_made += 1
        return f"{self._prefix}QSIM-{self._alert_names_made}"

    def _on_alert(self, event) -> None:
        if self.run_on_loop is not None:
            self.run_on_loop(self._alert_due, event.name)
        else:
            self._alert_due(event.name)

    def _alert_due(self, name: str) -> None:
        due = self._alerts.pop(name)
        del self._armed[due]
        try:
            self._advance(due)
        finally:
            # free only now: an alert armed while this one is handled never takes its name
            self._alert_names_free.append(name)

    def _advance(self, now: int) -> None:
        """Apply every buffered item due by local time ``now`` (``x + L_resp <= now``; all buffered
        items were received by then), in exchange order. Re-entrant calls (the strategy reacting to
        an event we emit) return at once: the running loop picks up what they pushed."""
        if self._applying:
            return
        heap, resp = self._heap, self._resp_ns
        if not heap or heap[0][0] + resp > now:
            return
        self._applying = True
        self._horizon = now
        try:
            while heap and heap[0][0] + resp <= now:
                item = heapq.heappop(heap)
                x, rank, seq, r, a, b = item
                due = x + resp
                self._apply_local = due if due > r else r
                key = (x, rank, seq)
                if key < self._last_key:
                    if r >= self._count_from_ns:
                        self.stats["late_reordered"] += 1
                else:
                    self._last_key = key
                if rank == _RANK_BOOK:
                    self._apply_book(x, a)
                elif rank == _RANK_TRADE:
                    self._apply_trade(x, a)
                else:
                    a(x, *b)
        finally:
            self._applying = False

    def _push_market(self, x: int, rank: int, data) -> None:
        r = data.ts_init
        last = self._last_x[rank]
        if x < last:
            x = last  # a stream's own order wins over a timestamp going backwards
        else:
            self._last_x[rank] = x
        counted = r >= self._count_from_ns  # not a window's warm-up (SimParams.count_from_ns)
        if counted:
            self.stats["market_events"] += 1
            if r < x:
                self.stats["negative_feed_latency_events"] += 1  # receive clock behind the exchange's
        due = x + self._resp_ns
        if due < r:
            # Late: the exchange passed x before we received it. It is applied now, at r: after
            # every item due before r (as if each had been applied at its exact time), then in
            # key order with the items due at r.
            if counted:
                self.stats["late_events"] += 1
            self._advance(r - 1)
        self._seq += 1
        heapq.heappush(self._heap, (x, rank, self._seq, r, data, None))
        self._advance(r)
        # The message reaches the strategy after this hook (and its commands): from now on a
        # command cannot arrive before x. Set after the catch-up: commands sent while earlier
        # items were applied came before the strategy saw this message.
        if x > self._x_seen:
            self._x_seen = x
        if self._live:
            # After the catch-up: from here until ``message_handled`` the commands sent are this
            # message's (stamped r). The lag (wall - r) stamps commands sent outside any message.
            self._msg_ts, self._in_msg, self._lag_ns = r, True, self._clock.timestamp_ns() - r
        if due > r and (self.alert_all or self._orders):
            if self.alert_all:
                self._arm(due)
            elif rank == _RANK_TRADE:
                t = data.price.raw // self._tick_raw
                hi_bid, lo_ask = self._thresholds()
                if t <= hi_bid or t >= lo_ask:  # a trade at or through one of our prices
                    self._arm(due)
            else:
                self._check_due = due  # decided by _after_book_msg, on the book after the message

    def _on_book_msg(self, deltas) -> None:
        self._push_market(deltas.ts_event, _RANK_BOOK, deltas)

    def _on_trade_msg(self, tick) -> None:
        self._push_market(tick.ts_event, _RANK_TRADE, tick)

    def _after_book_msg(self, deltas) -> None:
        """Can the buffered book message fill one of our orders when the exchange applies it? Only
        if the book AFTER it has the opposite best at or through one of our prices (a crossing
        order is rejected and a crossing book fills at once, so the book never rests crossed with
        a live order). Book messages form one stream, so the book after this message is the same
        in receive order (the cache book, just updated by the DataEngine) as in exchange order.
        Without a cache book: the message's own opposite-side levels (``_relevant``)."""
        due = self._check_due
        if not due:
            return
        self._check_due = 0
        book = self._cache.order_book(self._iid)
        if book is None:
            if self._relevant(deltas):
                self._arm(due)
            return
        hi_bid, lo_ask = self._thresholds()
        tick_raw = self._tick_raw
        ask, bid = book.best_ask_price(), book.best_bid_price()
        if (ask is not None and ask.raw // tick_raw <= hi_bid) or (bid is not None and bid.raw // tick_raw >= lo_ask):
            self._arm(due)

    def _thresholds(self) -> tuple[int, int]:
        """(highest bid, lowest ask) in ticks over every order that may rest at the exchange
        (live or in flight, amends in flight included); -1 / 2**62 when a side has none."""
        w = self._watch
        if w is None:
            hi_bid, lo_ask = -1, 1 << 62
            for o in self._orders.values():
                for t in (o.ticks, *o.amend_targets):
                    if o.side == _BUY:
                        hi_bid = t if t > hi_bid else hi_bid
                    else:
                        lo_ask = t if t < lo_ask else lo_ask
            w = self._watch = (hi_bid, lo_ask)
        return w

    def _relevant(self, data) -> bool:
        """Can this book message fill one of our orders? Only if it adds/updates an opposite-side
        level at or through one of our prices (only such a level can move the opposite best
        through a resting order). Errs towards True. Per delta: used only without a cache book."""
        hi_bid, lo_ask = self._thresholds()
        tick_raw = self._tick_raw
        bid_raw, ask_raw = hi_bid * tick_raw, lo_ask * tick_raw
        for d in data.deltas:
            if d.action == _ACTION_CLEAR or d.action == _ACTION_DELETE:
                continue
            bo = d.order
            if bo.side == _NS_SELL:
                if bo.price.raw <= bid_raw:
                    return True
            elif bo.price.raw >= ask_raw:
                return True
        return False

    # -- Commands (local side) ----------------------------------------------------------------

    def _command(self, latency_ns: int, fn, *args) -> None:
        """``fn(x, *args)`` at exchange time ``x = max(send + latency_ns, x_seen)``, applied at
        local ``x + L_resp``. ``x_seen``: the latest exchange time of a market event delivered to
        the strategy; a command cannot reach the exchange before an event its sender has already
        seen (it only binds when the data's receive clock runs behind the exchange's,
        ``ts_init < ts_event``: docs/queue_model.md, "Exchange timeline")."""
        send = self._send_stamp()
        x = send + latency_ns
        if x < self._x_seen:
            x = self._x_seen
            self.stats["arrivals_after_seen_event"] += 1
        self._seq += 1
        heapq.heappush(self._heap, (x, _RANK_CMD, self._seq, send, fn, args))
        due = x + self._resp_ns
        if self._applying:
            if due > self._horizon:  # else the running loop applies it
                self._arm(due)
        elif due <= send:
            self._advance(due)  # zero latencies: now
        else:
            self._arm(due)

    def submit_order(self, command) -> None:
        order = command.order
        now = self._clock.timestamp_ns()
        self.generate_order_submitted(order.strategy_id, order.instrument_id, order.client_order_id, now)
        self._seq += 1
        o = _Order(order, _BUY if order.side == OrderSide.BUY else _SELL, order.price.raw // self._tick_raw,
                   self.lots(order.quantity), VenueOrderId(f"{self._prefix}Q-{self._seq}"))
        self._orders[order.client_order_id] = o
        self._watch = None
        self._command(self._lat.order_ns(), self._arrive, o)

    def modify_order(self, command) -> None:
        o = self._orders.get(command.client_order_id)
        if o is not None and command.price is not None:
            o.amend_targets.append(command.price.raw // self._tick_raw)
            self._watch = None
        self._command(self._lat.amend_ns(), self._amend_arrive, command, o)

    def cancel_order(self, command) -> None:
        self._command(self._lat.cancel_ns(), self._cancel_arrive, command, self._orders.get(command.client_order_id))

    def cancel_all_orders(self, command) -> None:
        for o in list(self._orders.values()):
            if command.order_side in (OrderSide.NO_ORDER_SIDE, o.order.side):
                self._command(self._lat.cancel_ns(), self._cancel_arrive, None, o)

    def batch_cancel_orders(self, command) -> None:
        for c in command.cancels:
            self.cancel_order(c)

    def query_order(self, command) -> None:
        """Counted, answered by no report. The simulator never loses an event: every change of an
        order's state at the exchange reaches the strategy as an event ``L_resp`` after it
        happened, so the cache already holds the venue's state as of the events delivered and a
        status report could only repeat it (or, sent early, announce fills still in flight)."""
        self.stats["order_queries"] += 1

    # -- Exchange side: command arrivals ------------------------------------------------------

    def _gone(self, o: _Order) -> None:
        o.gone = True
        self._orders.pop(o.order.client_order_id, None)
        self._watch = None

    def _join(self, o: _Order) -> None:
        key = (o.side, o.ticks)
        level = self._levels.get(key)
        if level is None:
            known, lots = self._visibility(o.side, o.ticks)
            level = self._levels[key] = Level(lots, known)
        if not level.known:
            self.stats["unknown_depth_joins"] += 1
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

    def _arrive(self, x: int, o: _Order) -> None:
        if o.gone:
            return
        order = o.order
        cross = self._crosses(o.side, o.ticks)
        if cross:
            self._gone(o)
            self.stats["post_only_rejects"] += 1
            if cross == 2:
                self.stats["post_only_own_cross_rejects"] += 1
            self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id,
                                         POST_ONLY_REJECT, x, True)
            return
        self.generate_order_accepted(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, x)
        self._join(o)

    def _amend_arrive(self, x: int, command, o: _Order | None) -> None:
        if o is not None and command.price is not None and o.amend_targets:
            o.amend_targets.pop(0)
            self._watch = None
        if o is None or o.gone or not o.live:
            self.generate_order_modify_rejected(command.strategy_id, command.instrument_id, command.client_order_id,
                                                o.voi if o else None, AMEND_NOT_FOUND, x)
            return
        order = o.order
        new_ticks = command.price.raw // self._tick_raw if command.price is not None else o.ticks
        new_lots = self.lots(command.quantity) if command.quantity is not None else o.lots
        if new_lots <= o.filled:
            self.generate_order_modify_rejected(order.strategy_id, order.instrument_id, order.client_order_id, o.voi,
                                                AMEND_QTY_FILLED, x)
            return
        cross = self._crosses(o.side, new_ticks) if new_ticks != o.ticks else 0
        if cross:
            # Bybit: a PostOnly order that would take liquidity after an amend is cancelled by the
            # matching engine (rejectReason EC_PostOnlyWillTakeLiquidity), which Nautilus' Bybit
            # adapter reports as OrderRejected(due_post_only). The order is gone, not resting.
            self._leave(o)
            self._gone(o)
            self.stats["post_only_amend_rejects"] += 1
            if cross == 2:
                self.stats["post_only_own_cross_rejects"] += 1
            self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id,
                                         POST_ONLY_REJECT, x, True)
            return
        if new_ticks != o.ticks or new_lots > o.lots:  # loses priority: back of the (new) queue
            self._leave(o)
            o.ticks, o.lots = new_ticks, new_lots
            self._watch = None
            self._join(o)
            self.stats["amend_lost_priority"] += 1
        elif new_lots < o.lots:  # keeps priority
            o.lots = new_lots
            self._levels[(o.side, o.ticks)].reduce(order.client_order_id, new_lots - o.filled)
        price = command.price if command.price is not None else order.price
        qty = command.quantity if command.quantity is not None else order.quantity
        self.generate_order_updated(order.strategy_id, order.instrument_id, order.client_order_id, o.voi,
                                    qty, price, None, x)

    def _cancel_arrive(self, x: int, command, o: _Order | None) -> None:
        if o is None or o.gone or not o.live:
            # Filled / cancelled already, or the cancel overtook its own order: Bybit rejects the
            # cancel (110001) and an order still in flight rests when it arrives.
            if o is not None and o.gone:
                self.stats["cancel_lost_race"] += 1
            elif o is not None:
                self.stats["cancel_before_order"] += 1
            if command is not None:
                self.generate_order_cancel_rejected(command.strategy_id, command.instrument_id,
                                                    command.client_order_id, o.voi if o else None,
                                                    CANCEL_NOT_FOUND, x)
            return
        order = o.order
        self._leave(o)
        self._gone(o)
        self.generate_order_canceled(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, x)

    # -- Exchange side: market events ---------------------------------------------------------

    def _apply_book(self, x: int, deltas) -> None:
        self._book.apply_deltas(deltas)
        if self._taken:
            self._expire_taken(deltas.is_snapshot)
        levels = self._levels
        if not levels:
            return
        snapshot = deltas.is_snapshot  # Nautilus: the message starts with a CLEAR
        touched = None if (snapshot or self._sizes_from_book) else self._touched(deltas)
        if touched is True:  # a CLEAR inside the message: every level, as for a snapshot
            snapshot, touched = True, None
        model = self._model
        # ``_visibility`` inlined for the common case (our level shown with lots > 0): one book
        # read per level, no call or tuple per level and message; the rest goes through it.
        book, prices, size_prec, lot_raw = self._book, self._prices, self._size_prec, self._lot_raw
        for key, level in levels.items():
            side, ticks = key
            px = prices.get(ticks)
            lots = book.get_quantity_at_level(px if px is not None else self._price(ticks), _READ_SIDE[side],
                                              size_prec).raw // lot_raw
            if lots > 0:
                known = True
            else:
                known, lots = self._visibility(side, ticks)
            if level.known:
                # The message touched our level if it starts with a CLEAR (snapshot, invalidated
                # book) or has a row at our price: read from the book (the size there changed,
                # catalog-declared invariant) or from the rows themselves.
                if snapshot or (lots != level.size if touched is None else key in touched):
                    if known:
                        level.on_book(model, lots)
                    else:
                        level.hide()  # left the visible depth: no information until it returns
            elif known:
                level.reveal(lots)
        # The exchange book moved through our price: filled at our price from the opposite lots
        # at or through it (``_book_through``).
        bp, ap = book.best_bid_price(), book.best_ask_price()
        tick_raw = self._tick_raw
        bid = bp.raw // tick_raw if bp is not None else None
        ask = ap.raw // tick_raw if ap is not None else None
        through_bid = through_ask = False
        for side, t in levels:
            if side == _BUY:
                if ask is not None and t >= ask:
                    through_bid = True
            elif bid is not None and t <= bid:
                through_ask = True
        if through_bid:
            self._book_through(_BUY, x)
        if through_ask:
            self._book_through(_SELL, x)

    def _book_through(self, side: int, x: int) -> None:
        """The opposite side of the book reaches our orders on ``side``: they trade with the
        opposite lots at or through their price, each lot once. In price priority (our best price
        first), FIFO within a price, order ``k`` at price ``p_k`` fills

            q_k = min(leaves_k, A(p_k) - used_k)

        where ``A(p)`` = available opposite lots at prices at or through ``p`` (shown minus what
        earlier fills took, see ``_taken``) and ``used_k`` = lots taken by the orders before it,
        taken from the best (lowest ask / highest bid) level first. Fills at our price (maker).
        The lots taken stay unavailable while their level is unchanged (``_expire_taken``): the
        recorded book, a world without us, still shows them."""
        levels, taken, opp = self._levels, self._taken, 1 - side
        keys = sorted((k for k in levels if k[0] == side), reverse=(side == _BUY))  # best price first
        tick_raw, lot_raw = self._tick_raw, self._lot_raw
        avail = []  # [ticks, available lots, shown lots] of the opposite levels, best first
        for px, q in self._book.get_all_crossed_levels(_NS_BUY if side == _BUY else _NS_SELL,
                                                       self._price(keys[0][1]), self._size_prec):
            t, shown = px.raw // tick_raw, q.raw // lot_raw
            tk = taken.get((opp, t))
            avail.append([t, shown - tk[1] if tk is not None else shown, shown])
        for key in keys:
            p = key[1]
            level = levels.get(key)
            if level is None:
                continue
            for qo in list(level.orders):
                o = self._orders.get(qo.key)
                if o is None or o.gone:
                    continue
                want, got = o.lots - o.filled, 0
                for a in avail:
                    if (a[0] > p) if side == _BUY else (a[0] < p):
                        break  # this and every later opposite level is beyond our price
                    if a[1] <= 0:
                        continue
                    q = want - got if want - got < a[1] else a[1]
                    a[1] -= q
                    got += q
                    tk = taken.get((opp, a[0]))
                    if tk is None:
                        taken[(opp, a[0])] = [a[2], q]
                    else:
                        tk[1] += q
                    if got == want:
                        break
                if got:
                    self._fill(o, got, "book_through", x)

    def _expire_taken(self, snapshot: bool) -> None:
        """Opposite lots our book-through fills took become available again only when their level
        changes (its shown size differs after a message: new information; the loopback exchange
        resets on any row at the price, which Bybit sends only when the size changes) or the book
        is rebuilt (a message starting with a CLEAR)."""
        taken = self._taken
        if snapshot:
            taken.clear()
            return
        for key in list(taken):
            side, t = key
            q = self._book.get_quantity_at_level(self._price(t), _READ_SIDE[side], self._size_prec)
            if q.raw // self._lot_raw != taken[key][0]:
                del taken[key]

    def _touched(self, deltas):
        """``{(side, ticks)}`` of the message's rows, or True when it holds a CLEAR."""
        tick_raw = self._tick_raw
        out = set()
        for d in deltas.deltas:
            if d.action == _ACTION_CLEAR:
                return True
            o = d.order
            out.add((_BUY if o.side == _NS_BUY else _SELL, o.price.raw // tick_raw))
        return out

    def _apply_trade(self, x: int, tick) -> None:
        """A trade of ``T`` lots at price ``t`` fills our orders on the side it hits, at most
        ``T`` lots in all (each lot of the print trades once), in price priority: first the orders
        strictly better than ``t`` (a sell below our bid, a buy above our ask: "trade through"),
        best price first, FIFO within a price, ``min(leaves, remaining)`` each; then the queue at
        ``t`` (known level, aggressor on the other side, docs/queue_model.md) with what remains.
        A print of ``T`` lots at ``t`` means an aggressor took ``T`` lots there after everything
        at better prices was gone: with our orders at a better price, those ``T`` lots would have
        reached them first, and nothing more."""
        levels = self._levels
        if not levels:
            return
        ticks = tick.price.raw // self._tick_raw
        lots = self.lots(tick.size)
        aggr = tick.aggressor_side
        through_bids = through_asks = None
        at_bid = at_ask = None
        for key in levels:
            side, lt = key
            if side == _BUY:
                if lt > ticks:
                    if through_bids is None:
                        through_bids = []
                    through_bids.append(key)
                elif lt == ticks and aggr != AggressorSide.BUYER:
                    at_bid = key
            elif lt < ticks:
                if through_asks is None:
                    through_asks = []
                through_asks.append(key)
            elif lt == ticks and aggr != AggressorSide.SELLER:
                at_ask = key
        if through_bids is not None or at_bid is not None:
            rem = lots
            if through_bids is not None:
                for key in sorted(through_bids, reverse=True):  # highest bid first
                    rem = self._fill_through(key, rem, x)
            if at_bid is not None and rem > 0:
                self._fill_fifo(at_bid, rem, x)
        if through_asks is not None or at_ask is not None:
            rem = lots
            if through_asks is not None:
                for key in sorted(through_asks):  # lowest ask first
                    rem = self._fill_through(key, rem, x)
            if at_ask is not None and rem > 0:
                self._fill_fifo(at_ask, rem, x)

    def _fill_through(self, key, rem: int, x: int) -> int:
        """A print through our price: the level's orders FIFO, ``min(leaves, rem)`` each.
        Returns the lots of the print left."""
        level = self._levels.get(key)
        if level is None:
            return rem
        for qo in list(level.orders):
            if rem <= 0:
                break
            o = self._orders.get(qo.key)
            if o is None or o.gone:
                continue
            q = o.lots - o.filled
            if q > rem:
                q = rem
            self._fill(o, q, "trade_through", x)
            rem -= q
        return rem

    def _fill_fifo(self, key, lots: int, x: int) -> None:
        level = self._levels[key]
        for qo, q in level.on_trade(lots):
            o = self._orders.get(qo.key)
            if o is not None:
                self._fill(o, q, "queue", x)

    def _fill(self, o: _Order, lots: int, cause: str, x: int) -> None:
        if lots <= 0 or o.gone:
            return
        order = o.order
        o.filled += lots
        key = (o.side, o.ticks)
        level = self._levels.get(key)
        if o.filled >= o.lots:
            self._gone(o)
            o.live = False
            if level is not None:
                level.remove(order.client_order_id)
                if not level.orders:
                    del self._levels[key]
        elif level is not None:
            level.reduce(order.client_order_id, o.lots - o.filled)
        self._trade_seq += 1
        qty = Quantity.from_raw(lots * self._lot_raw, self._size_prec)
        px = order.price
        notional = float(qty) * float(px) * float(self._inst.multiplier)
        slippage = notional * self.params.extra_slippage_bps * 1e-4
        fee = notional * self._maker_fee + slippage  # extra slippage is charged in the commission
        st = self.stats
        st["fills"] += 1
        st["filled_lots"] += lots
        st["fill_causes"][cause] += 1
        trade_id = TradeId(f"{self._prefix}QT-{self._trade_seq}")
        self._msgbus.publish(FILL_INFO_TOPIC, FillInfo(trade_id.value, order.client_order_id.value, cause,
                                                       slippage, x))
        self.generate_order_filled(order.strategy_id, order.instrument_id, order.client_order_id, o.voi, None,
                                   trade_id, order.side, order.order_type, qty, px,
                                   self._quote, Money(fee, self._quote), LiquiditySide.MAKER, x)

    # -- Inspection (tests) -------------------------------------------------------------------

    def queue_ahead(self, client_order_id) -> float | None:
        """Estimated market lots ahead of a live order (``inf`` while its level is beyond the
        visible depth; None if not resting)."""
        o = self._orders.get(client_order_id)
        if o is None or not o.live:
            return None
        for qo in self._levels[(o.side, o.ticks)].orders:
            if qo.key == client_order_id:
                return qo.ahead
        return None

    def exchange_book(self) -> OrderBook:
        """The exchange's own L2 book (exchange order), for inspection."""
        return self._book


