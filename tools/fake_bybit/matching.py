"""Price-time matching of our orders against a replayed Bybit L2 book and replayed public trades.

Model (documented in docs/fake_bybit.md):

* The replayed book (``Book``) is the recording's order book, exactly. Our orders never appear in
  the published book; they live in ``Engine.orders``.
* A resting order joins its price level *behind* the replayed size there (``queue_ahead``).
  When a delta shrinks that level, ``queue_ahead = min(queue_ahead, new size)`` (cancels are
  assumed to come from ahead of us - optimistic but simple and monotone).
* A replayed trade (taker side ``S``) of size ``T`` at price ``p`` fills our opposite-side orders
  with at most ``T`` in all, in price priority: orders priced strictly better than ``p`` (the
  print went through them) first, ``min(leaves, remaining)`` each; then orders at ``p`` burn
  ``queue_ahead`` with what remains and fill with the rest (time priority among our own orders at
  one price). Fills are maker fills at our price.
* If the replayed book itself moves through a resting order (best ask <= our bid), the order is
  filled as maker at its own price with at most the crossing replayed size (``book_cross_fills``;
  price priority, then time, among our orders; the size used is hidden until its level changes).
* Our own crossing orders (Market, or Limit without PostOnly) take liquidity: they walk the
  replayed opposite side level by level (taker fills at level prices). Liquidity we took is
  hidden from later matching at that level until the next delta for the level arrives.
* PostOnly orders that would cross (the replayed book, or one of our own resting orders on the
  other side: Bybit's self-match prevention is off by default) are cancelled with
  ``EC_PostOnlyWillTakeLiquidity``, on submit and on an amend to a crossing price (the cancelled
  order keeps its resting price and size; mmbot's queue simulator does the same,
  docs/queue_model.md).

Account model: one-way mode (positionIdx 0), USDT linear, fixed leverage; wallet balance moves by
realised PnL minus fees. Everything is Decimal.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


def now_ms() -> int:
    return int(time.time() * 1000)


class Book:
    """Full replayed L2 book (price -> size) from snapshot/delta messages."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.u: int = 0
        self.seq: int = 0
        self.ready = False

    def apply(self, typ: str, data: dict) -> tuple[set[Decimal], set[Decimal]]:
        """Apply one message; return the bid and ask prices whose size changed."""
        changed_b: set[Decimal] = set()
        changed_a: set[Decimal] = set()
        if typ == "snapshot":
            changed_b = set(self.bids)
            changed_a = set(self.asks)
            self.bids.clear()
            self.asks.clear()
        for side_key, book, changed in (("b", self.bids, changed_b), ("a", self.asks, changed_a)):
            for p, s in data.get(side_key, []):
                price = Decimal(p)
                size = Decimal(s)
                changed.add(price)
                if size == 0:
                    book.pop(price, None)
                else:
                    book[price] = size
        self.u = int(data.get("u", self.u))
        self.seq = int(data.get("seq", self.seq))
        self.ready = True
        return changed_b, changed_a

    def best_bid(self) -> tuple[Decimal, Decimal] | None:
        if not self.bids:
            return None
        p = max(self.bids)
        return p, self.bids[p]

    def best_ask(self) -> tuple[Decimal, Decimal] | None:
        if not self.asks:
            return None
        p = min(self.asks)
        return p, self.asks[p]

    def top(self, depth: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids = sorted(self.bids.items(), key=lambda kv: -kv[0])[:depth]
        asks = sorted(self.asks.items(), key=lambda kv: kv[0])[:depth]
        return bids, asks


@dataclass
class Order:
    order_id: str
    link_id: str
    symbol: str
    side: str  # "Buy" | "Sell"
    order_type: str  # "Limit" | "Market"
    price: Decimal | None
    qty: Decimal
    tif: str  # GTC | IOC | FOK | PostOnly
    reduce_only: bool = False
    status: str = "New"
    leaves: Decimal = ZERO
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"
    queue_ahead: Decimal = ZERO
    created_ms: int = 0
    updated_ms: int = 0
    last_price_on_created: str = ""
    seq: int = 0  # time priority

    @property
    def is_open(self) -> bool:
        return self.status in ("New", "PartiallyFilled")

    @property
    def avg_price(self) -> Decimal:
        return self.cum_value / self.cum_qty if self.cum_qty else ZERO


@dataclass
class Execution:
    exec_id: str
    order: Order
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_rate: Decimal
    is_maker: bool
    closed_size: Decimal
    time_ms: int
    seq: int
    # snapshots of the order at fill time (the order object keeps changing)
    leaves_after: Decimal = ZERO


@dataclass
class Account:
    wallet_balance: Decimal = Decimal("100000")
    pos_size: Decimal = ZERO  # signed
    entry_price: Decimal = ZERO
    leverage: Decimal = Decimal("10")
    cum_realised: Decimal = ZERO
    cur_realised: Decimal = ZERO
    pos_created_ms: int = 0
    pos_updated_ms: int = 0
    seq: int = 0


class RejectError(Exception):
    """Synchronous order-entry error, answered with retCode/retMsg and no order created."""

    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code
        self.msg = msg


Event = tuple[str, object]  # ("order", Order) | ("execution", Execution) | ("position", None) | ("wallet", None)


@dataclass
class Instrument:
    symbol: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal


class Engine:
    def __init__(self, instrument: Instrument, maker_fee: Decimal, taker_fee: Decimal,
                 balance: Decimal = Decimal("100000"), book_cross_fills: bool = True) -> None:
        self.inst = instrument
        self.book = Book()
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.account = Account(wallet_balance=balance)
        self.orders: dict[str, Order] = {}  # all orders by orderId (open and closed)
        self.executions: list[Execution] = []
        self.taken: dict[tuple[str, Decimal], Decimal] = {}  # (book side 'b'/'a', price) -> qty we took
        self.book_cross_fills = book_cross_fills
        self.last_price: Decimal | None = None
        self._seq = 0

    # ---------------------------------------------------------------- helpers
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def open_orders(self) -> list[Order]:
        return sorted((o for o in self.orders.values() if o.is_open), key=lambda o: o.seq)

    def find(self, order_id: str | None, link_id: str | None) -> Order | None:
        if order_id:
            o = self.orders.get(order_id)
            if o is not None:
                return o
        if link_id:
            # the newest order with this link id
            for o in sorted(self.orders.values(), key=lambda o: -o.seq):
                if o.link_id == link_id:
                    return o
        return None

    def _avail(self, book_side: str, price: Decimal) -> Decimal:
        book = self.book.bids if book_side == "b" else self.book.asks
        return max(ZERO, book.get(price, ZERO) - self.taken.get((book_side, price), ZERO))

    def mark_price(self) -> Decimal:
        bb, ba = self.book.best_bid(), self.book.best_ask()
        if bb and ba:
            return (bb[0] + ba[0]) / 2
        return self.last_price or self.account.entry_price or ZERO

    def crosses(self, side: str, price: Decimal) -> bool:
        if side == "Buy":
            ba = self._best_avail("a")
            return ba is not None and price >= ba
        bb = self._best_avail("b")
        return bb is not None and price <= bb

    def post_only_crosses(self, side: str, price: Decimal, exclude: Order | None = None) -> bool:
        """Would a PostOnly order at ``price`` take liquidity: from the replayed book (``crosses``)
        or from one of our own resting orders on the other side? Bybit matches an incoming order
        against the account's own resting orders like any other (self-match prevention is off
        unless the order sets ``smpType``, and it acts on takers only), so PostOnly cancels it.
        Same rule as mmbot's queue simulator (docs/queue_model.md)."""
        if self.crosses(side, price):
            return True
        for o in self.orders.values():
            if o is exclude or not o.is_open or o.side == side or o.price is None:
                continue
            if (price >= o.price) if side == "Buy" else (price <= o.price):
                return True
        return False

    def _best_avail(self, book_side: str) -> Decimal | None:
        book = self.book.bids if book_side == "b" else self.book.asks
        prices = sorted(book, reverse=(book_side == "b"))
        for p in prices:
            if self._avail(book_side, p) > 0:
                return p
        return None

    def used_margin(self) -> Decimal:
        lev = self.account.leverage
        im = abs(self.account.pos_size) * self.account.entry_price / lev
        for o in self.open_orders():
            px = o.price if o.price is not None else self.mark_price()
            im += o.leaves * px / lev
        return im

    def unrealised(self) -> Decimal:
        a = self.account
        if a.pos_size == 0:
            return ZERO
        return (self.mark_price() - a.entry_price) * a.pos_size

    def available(self) -> Decimal:
        return self.account.wallet_balance + min(ZERO, self.unrealised()) - self.used_margin()

    # ---------------------------------------------------------------- order entry
    def _validate(self, side: str, order_type: str, qty: Decimal, price: Decimal | None) -> None:
        if side not in ("Buy", "Sell"):
            raise RejectError(10001, f"params error: side invalid ({side})")
        if order_type not in ("Limit", "Market"):
            raise RejectError(10001, f"params error: orderType not supported by fake_bybit ({order_type})")
        if qty <= 0 or qty % self.inst.step != 0:
            raise RejectError(10001, f"Qty invalid: {qty} (qtyStep {self.inst.step})")
        if qty < self.inst.min_qty:
            raise RejectError(110094, f"Order does not meet minimum order quantity {self.inst.min_qty}")
        if qty > self.inst.max_qty:
            raise RejectError(10001, f"The number of contracts exceeds maximum limit allowed: {qty}")
        if order_type == "Limit":
            if price is None or price <= 0:
                raise RejectError(10001, "params error: price is required for Limit orders")
            if price % self.inst.tick != 0:
                raise RejectError(10001, f"Price invalid: {price} (tickSize {self.inst.tick})")

    def submit(self, *, side: str, order_type: str, qty: Decimal, price: Decimal | None, tif: str,
               link_id: str = "", reduce_only: bool = False, post_only: bool = False,
               force_post_only_reject: bool = False) -> tuple[Order, list[Event]]:
        self._validate(side, order_type, qty, price)
        if link_id and any(o.link_id == link_id for o in self.open_orders()):
            raise RejectError(110072, "OrderLinkedID is duplicate")
        if post_only or tif == "PostOnly":
            tif = "PostOnly"
            if order_type != "Limit":
                raise RejectError(10001, "params error: PostOnly requires a Limit order")
        a = self.account
        if reduce_only:
            closing = (a.pos_size > 0 and side == "Sell") or (a.pos_size < 0 and side == "Buy")
            if not closing:
                raise RejectError(110017, "current position is zero, cannot fix reduce-only order qty")
        else:
            px = price if price is not None else self.mark_price()
            need = qty * px / a.leverage + qty * px * self.taker_fee
            if need > self.available():
                raise RejectError(110007, "ab not enough for new order")
        t = now_ms()
        lp = self.last_price if self.last_price is not None else self.mark_price()
        o = Order(order_id=str(uuid.uuid4()), link_id=link_id, symbol=self.inst.symbol, side=side,
                  order_type=order_type, price=price, qty=qty, tif=tif or "GTC", reduce_only=reduce_only,
                  leaves=qty, created_ms=t, updated_ms=t, last_price_on_created=str(lp),
                  seq=self._next_seq())
        if order_type == "Market" and o.tif in ("GTC", "PostOnly"):
            o.tif = "IOC"
        self.orders[o.order_id] = o
        events: list[Event] = []
        if tif == "PostOnly" and (force_post_only_reject or self.post_only_crosses(side, price)):
            o.status = "Cancelled"
            o.leaves = ZERO
            o.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            o.cancel_type = "UNKNOWN"
            events.append(("order", copy.copy(o)))
            return o, events
        if reduce_only:
            o.leaves = min(o.leaves, abs(a.pos_size))
        events += self._take(o)
        if o.is_open:
            if o.tif in ("IOC", "FOK") or o.order_type == "Market":
                o.status = "Cancelled" if o.cum_qty == 0 else "PartiallyFilledCanceled"
                o.cancel_type = "UNKNOWN"
                o.reject_reason = "EC_CancelForNoFullFill" if o.tif == "FOK" else "EC_NoError"
                o.leaves = ZERO
                o.updated_ms = now_ms()
                events.append(("order", copy.copy(o)))
            else:
                self._join_queue(o)
                if not events:
                    events.append(("order", copy.copy(o)))
        return o, events

    def _join_queue(self, o: Order) -> None:
        side_key = "b" if o.side == "Buy" else "a"
        o.queue_ahead = self._avail(side_key, o.price)

    def _take(self, o: Order) -> list[Event]:
        """Our order takes replayed liquidity at prices up to its limit."""
        events: list[Event] = []
        opp = "a" if o.side == "Buy" else "b"
        book = self.book.asks if opp == "a" else self.book.bids
        prices = sorted(book, reverse=(opp == "b"))
        if o.tif == "FOK":
            total = ZERO
            for p in prices:
                if o.price is not None and ((o.side == "Buy" and p > o.price) or (o.side == "Sell" and p < o.price)):
                    break
                total += self._avail(opp, p)
            if total < o.leaves:
                return events
        for p in prices:
            if o.leaves <= 0:
                break
            if o.price is not None and ((o.side == "Buy" and p > o.price) or (o.side == "Sell" and p < o.price)):
                break
            avail = self._avail(opp, p)
            if avail <= 0:
                continue
            q = min(avail, o.leaves)
            self.taken[(opp, p)] = self.taken.get((opp, p), ZERO) + q
            events += self._fill(o, q, p, is_maker=False)
        return events

    def amend(self, o: Order, qty: Decimal | None, price: Decimal | None) -> list[Event]:
        if not o.is_open:
            raise RejectError(110001, "order not exists or too late to replace")
        new_qty = qty if qty is not None else o.qty
        new_price = price if price is not None else o.price
        if new_qty == o.qty and new_price == o.price:
            raise RejectError(10001, "order not modified")
        self._validate(o.side, o.order_type, new_qty, new_price)
        if new_qty <= o.cum_qty:
            raise RejectError(110003, "Order qty must be greater than the filled qty")
        events: list[Event] = []
        price_changed = new_price != o.price
        if price_changed and o.tif == "PostOnly" and self.post_only_crosses(o.side, new_price, exclude=o):
            # Bybit (v5 Place Order, PostOnly): an order the matching engine cannot put on the book
            # without taking liquidity is cancelled, rejectReason EC_PostOnlyWillTakeLiquidity
            # (Nautilus' Bybit adapter reports OrderRejected, due_post_only). The amend never took
            # effect: the cancelled order keeps the price and size it rested with.
            o.status = "Cancelled"
            o.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            o.cancel_type = "UNKNOWN"
            o.leaves = ZERO
            o.updated_ms = now_ms()
            return [("order", copy.copy(o))]
        o.qty = new_qty
        o.leaves = new_qty - o.cum_qty
        o.price = new_price
        o.updated_ms = now_ms()
        if price_changed:
            o.seq = self._next_seq()  # loses time priority
            if self.crosses(o.side, new_price):
                events += self._take(o)
            if o.is_open:
                self._join_queue(o)
        else:
            side_key = "b" if o.side == "Buy" else "a"
            o.queue_ahead = min(o.queue_ahead, self._avail(side_key, o.price))
        if o.is_open or not events:
            events.append(("order", copy.copy(o)))
        return events

    def cancel(self, o: Order) -> list[Event]:
        if not o.is_open:
            raise RejectError(110001, "order not exists or too late to cancel")
        o.status = "Cancelled" if o.cum_qty == 0 else "PartiallyFilledCanceled"
        o.cancel_type = "CancelByUser"
        o.leaves = ZERO
        o.updated_ms = now_ms()
        return [("order", copy.copy(o))]

    # ---------------------------------------------------------------- fills
    def _fill(self, o: Order, q: Decimal, price: Decimal, is_maker: bool) -> list[Event]:
        a = self.account
        rate = self.maker_fee if is_maker else self.taker_fee
        value = q * price
        fee = value * rate
        signed = q if o.side == "Buy" else -q
        closed = ZERO
        pnl = ZERO
        t = now_ms()
        if a.pos_size == 0 or (a.pos_size > 0) == (signed > 0):
            new_size = a.pos_size + signed
            a.entry_price = (abs(a.pos_size) * a.entry_price + q * price) / abs(new_size)
            if a.pos_size == 0:
                a.pos_created_ms = t
            a.pos_size = new_size
        else:
            closed = min(q, abs(a.pos_size))
            direction = 1 if a.pos_size > 0 else -1
            pnl = closed * (price - a.entry_price) * direction
            a.pos_size += signed
            if a.pos_size == 0:
                a.entry_price = ZERO
            elif (a.pos_size > 0) != (direction > 0):  # flipped
                a.entry_price = price
        a.cum_realised += pnl - fee
        a.cur_realised += pnl - fee
        a.wallet_balance += pnl - fee
        a.pos_updated_ms = t
        a.seq += 1
        o.cum_qty += q
        o.cum_value += value
        o.cum_fee += fee
        o.leaves -= q
        o.updated_ms = t
        o.status = "Filled" if o.leaves <= 0 else "PartiallyFilled"
        ex = Execution(exec_id=str(uuid.uuid4()), order=o, price=price, qty=q, fee=fee, fee_rate=rate,
                       is_maker=is_maker, closed_size=closed, time_ms=t, seq=self._next_seq(),
                       leaves_after=o.leaves)
        self.executions.append(ex)
        return [("order", copy.copy(o)), ("execution", ex), ("position", None), ("wallet", None)]

    # ---------------------------------------------------------------- replay input
    def on_book(self, typ: str, data: dict) -> list[Event]:
        changed_b, changed_a = self.book.apply(typ, data)
        for p in changed_b:
            self.taken.pop(("b", p), None)
        for p in changed_a:
            self.taken.pop(("a", p), None)
        events: list[Event] = []
        for o in self.open_orders():
            if o.order_type != "Limit":
                continue
            side_key = "b" if o.side == "Buy" else "a"
            if o.price in (changed_b if side_key == "b" else changed_a):
                o.queue_ahead = min(o.queue_ahead, self._avail(side_key, o.price))
        if self.book_cross_fills:
            events += self._cross_fills()
        return events

    def _cross_fills(self) -> list[Event]:
        """The replayed book reaches our resting orders: each fills ``min(leaves, crossing
        available size)`` at its own price, in price priority (best bid / lowest ask first) then
        time, the crossing size taken from the best opposite level first and hidden until that
        level changes (mmbot's queue simulator: the same rule, docs/queue_model.md)."""
        events: list[Event] = []
        limits = [o for o in self.open_orders() if o.order_type == "Limit"]
        limits.sort(key=lambda o: (o.side, -o.price if o.side == "Buy" else o.price, o.seq))
        for o in limits:
            if not o.is_open:
                continue
            opp = "a" if o.side == "Buy" else "b"
            book = self.book.asks if opp == "a" else self.book.bids
            crossing = [p for p in book if (p <= o.price if o.side == "Buy" else p >= o.price)]
            if not crossing:
                continue
            liq = sum((self._avail(opp, p) for p in crossing), ZERO)
            q = min(liq, o.leaves)
            if q <= 0:
                continue
            # consume crossing liquidity so it is not reused
            left = q
            for p in sorted(crossing, reverse=(opp == "b")):
                take = min(left, self._avail(opp, p))
                if take > 0:
                    self.taken[(opp, p)] = self.taken.get((opp, p), ZERO) + take
                    left -= take
            events += self._fill(o, q, o.price, is_maker=True)
        return events

    def on_trade(self, taker_side: str, price: Decimal, size: Decimal) -> list[Event]:
        self.last_price = price
        events: list[Event] = []
        maker_side = "Buy" if taker_side == "Sell" else "Sell"
        cands = [o for o in self.open_orders() if o.side == maker_side and o.order_type == "Limit"]
        if maker_side == "Buy":
            cands = [o for o in cands if o.price >= price]
            cands.sort(key=lambda o: (-o.price, o.seq))
        else:
            cands = [o for o in cands if o.price <= price]
            cands.sort(key=lambda o: (o.price, o.seq))
        remaining = size
        for o in cands:
            if remaining <= 0:
                break
            if o.price != price:
                # Printed through us: the print's size reached our better-priced order first; it
                # fills at most what is left of the print (each lot once, price priority).
                q = min(remaining, o.leaves)
                remaining -= q
                events += self._fill(o, q, o.price, is_maker=True)
                continue
            burn = min(o.queue_ahead, remaining)
            o.queue_ahead -= burn
            remaining -= burn
            if remaining <= 0:
                break
            q = min(remaining, o.leaves)
            remaining -= q
            events += self._fill(o, q, o.price, is_maker=True)
        return events
