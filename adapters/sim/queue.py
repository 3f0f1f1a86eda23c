"""Pure queue-position model for resting limit orders (docs/queue_model.md).

Units: prices are integer ticks, sizes are float lots (1 lot = the instrument's size increment;
the queue estimate may be fractional, fills are whole lots). No Nautilus objects, no clock:
callers pass event data in and get fills out, so the same model serves backtests and shadow
trading.

A ``Level`` holds our resting orders at one price of one side, FIFO. Each order's ``ahead`` is
the estimated market (not own) volume ahead of it; it is non-decreasing along the FIFO list.
The visible level size never includes our own orders (simulated orders are not in the feed).

Unknown depth: a level beyond the deepest level the feed shows (or on an empty side) has an
unknown size. While ``known`` is False the queue ahead is ``inf`` for an order that joined there
(frozen for one that was already queued when the level left the visible depth) and no trade at
the price fills us from the queue; when the level becomes visible with size ``S`` (0 if our price
is inside the visible range but absent), ``ahead = min(ahead, S)``: we are behind everything shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MODELS = ("risk_averse", "prob_power", "prob_log")
_EPS = 1e-9


@dataclass(frozen=True)
class QueueModel:
    """``kind``: "risk_averse", "prob_power" or "prob_log"; ``n``: the power of ``prob_power``."""

    kind: str = "prob_power"
    n: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in MODELS:
            raise ValueError(f"queue model {self.kind!r} is not one of {', '.join(MODELS)}")
        if not (self.n > 0 and math.isfinite(self.n)):
            raise ValueError(f"queue model power n must be a finite number > 0, was {self.n!r}")

    def f(self, x: float) -> float:
        """The weight function: ``x**n`` (prob_power) or ``ln(1 + x)`` (prob_log); x in lots."""
        if self.kind == "prob_log":
            return math.log1p(x)
        return x ** self.n

    def behind_share(self, ahead: float, behind: float) -> float:
        """Share of an unexplained decrease taken from behind us:
        ``p = f(behind) / (f(behind) + f(ahead))`` (0 for risk_averse: all from ahead)."""
        if self.kind == "risk_averse":
            return 0.0
        fb, fa = self.f(max(behind, 0.0)), self.f(max(ahead, 0.0))
        if fb + fa <= 0.0:
            return 0.0
        return fb / (fb + fa)

    def on_decrease(self, ahead: float, prev_size: float, new_size: float) -> float:
        """New ``ahead`` after the visible level shrank from ``prev_size`` to ``new_size`` lots
        with no trade to explain it (cancellations). risk_averse: only the cap
        ``ahead <= new_size``; prob models: ``ahead -= (1 - p) * chg`` plus whatever ``p * chg``
        exceeds the volume behind, then the cap."""
        chg = prev_size - new_size
        if chg <= 0.0:
            return min(ahead, new_size) if ahead > new_size else ahead
        if self.kind == "risk_averse":
            return min(ahead, new_size)
        behind = max(prev_size - ahead, 0.0)
        p = self.behind_share(ahead, behind)
        from_behind = p * chg
        est = ahead - (1.0 - p) * chg
        if from_behind > behind:
            est -= from_behind - behind
        return max(0.0, min(est, new_size))


@dataclass
class QOrder:
    """One own resting order in a level's queue. ``leaves``: unfilled lots (int)."""

    key: object
    leaves: int
    ahead: float


@dataclass
class Level:
    """Our orders at one (side, price) and the last visible market size there (lots)."""

    size: float
    known: bool = True  # False: beyond the visible depth (size unknown, no queue fills)
    orders: list[QOrder] = field(default_factory=list)
    traded: float = 0.0  # traded lots at this price not yet seen as a book decrease

    def join(self, key: object, lots: int) -> QOrder:
        """An order reaches the exchange: it queues behind the visible size (``inf`` when the
        size is unknown) and behind our own earlier orders (FIFO)."""
        ahead = self.size if self.known else math.inf
        if self.orders and self.orders[-1].ahead > ahead:
            ahead = self.orders[-1].ahead
        o = QOrder(key, lots, ahead)
        self.orders.append(o)
        return o

    def remove(self, key: object) -> QOrder | None:
        for k, o in enumerate(self.orders):
            if o.key == key:
                return self.orders.pop(k)
        return None

    def reduce(self, key: object, lots: int) -> None:
        """Size decrease keeping priority (Bybit amend rule)."""
        for o in self.orders:
            if o.key == key:
                o.leaves = lots
                return

    def reveal(self, size: float) -> None:
        """The level became visible with ``size`` lots (0: inside the visible range but absent):
        ``ahead = min(ahead, size)`` for every order (joined at unknown depth: ``size``)."""
        self.known = True
        self.size = size
        self.traded = 0.0
        for o in self.orders:
            if o.ahead > size:
                o.ahead = size

    def hide(self) -> None:
        """The level left the visible depth (deleted from the feed while our price is beyond the
        deepest level shown): no information until it is visible again, ``ahead`` frozen."""
        self.known = False
        self.traded = 0.0

    def on_book(self, model: QueueModel, new_size: float) -> None:
        """The visible size at this price is now ``new_size`` lots (0 = level deleted: caps
        ``ahead`` at 0 but fills nothing). A decrease up to the traded volume since the last
        book update is explained by trades (already applied); the rest is cancellations."""
        prev = self.size
        self.size = new_size
        chg = prev - new_size
        if chg > 0.0 and self.traded > 0.0:
            explained = min(chg, self.traded)
            prev -= explained
            chg -= explained
        self.traded = 0.0
        prev_ahead = 0.0
        for o in self.orders:
            a = model.on_decrease(o.ahead, prev, new_size) if chg > 0.0 else min(o.ahead, new_size)
            if a < prev_ahead:
                a = prev_ahead
            o.ahead = a
            prev_ahead = a

    def on_trade(self, lots: float) -> list[tuple[QOrder, int]]:
        """A trade of ``lots`` at this price against this side: consume the queue front to back
        (market volume ahead, then our order, ...). Returns ``(order, filled_lots)`` for each
        own order filled (whole lots, at most the trade's remaining size); ``leaves`` is reduced and
        fully filled orders leave the level. At unknown depth nothing happens (no queue fill)."""
        if not self.known:
            return []
        self.traded += lots
        rem = lots
        consumed = 0.0
        prev_ahead = 0.0
        fills: list[tuple[QOrder, int]] = []
        for o in self.orders:
            chunk = o.ahead - prev_ahead
            take = chunk if chunk < rem else rem
            rem -= take
            consumed += take
            prev_ahead = o.ahead
            if rem <= _EPS:
                break
            q = min(o.leaves, int(math.floor(rem + _EPS)))
            if q > 0:
                fills.append((o, q))
                o.leaves -= q
                rem -= q
        for o in self.orders:
            o.ahead = max(0.0, o.ahead - consumed)
        if fills:
            self.orders = [o for o in self.orders if o.leaves > 0]
        return fills
