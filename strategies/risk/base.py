"""Shared pieces of the risk guards: the constraint message, pure helpers and the guard base actor.

A guard is a Nautilus ``Actor``. It reads only the message bus, the cache and ``self.clock``, so
the same object runs in backtests, shadow and live trading. On every state transition it
publishes one ``RiskConstraint`` on the topic ``mmbot.risk.constraints``:

- the strategy combines the latest constraint of every guard (``ConstraintBoard``: a side is
  allowed only if every guard allows it; the widest spread multiplier wins) and applies it
  with ``MarketMaker.set_quoting_constraints``;
- the ``RiskSupervisor`` writes it to the hash-chained audit log and sets Nautilus' own
  ``RiskEngine`` trading state to the most restrictive ``trading_state`` of all guards.

A guard that blocks a side also cancels the open orders of that side itself (``CancelOrder``
commands to ``ExecEngine.execute``), as defence in depth should a strategy ignore the
constraint. Pure maths (windows, PnL, time in state) lives here and in each guard's module as
plain typed classes and functions, tested directly.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections import deque
from datetime import UTC, datetime

import msgspec
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId

RISK_TOPIC = "mmbot.risk.constraints"
KILL_ENDPOINT = "mmbot.risk.kill"  # msgbus endpoint of the kill switch (any trigger may send)
DATA_STATUS_TOPIC = "mmbot.data.status"  # data-client connection status (live adapters publish)

# Trading states, as Nautilus names them (``TradingState``), most restrictive last.
ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"
TRADING_STATES = (ACTIVE, REDUCING, HALTED)

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_DAY = 86_400 * NS_PER_S



def own_order_prefix(trader_tag: str) -> re.Pattern:
    """Matches the client order ids this trader's strategies generate (Nautilus:
    ``O-YYYYMMDD-HHMMSS-<trader tag>-<strategy tag>-<n>``; as ``mmbot.live.node.is_own_order_id``)."""
    return re.compile(rf"O-\d{{8}}-\d{{6}}-{re.escape(trader_tag)}-")


def loop_dispatcher():
    """A wrapper for clock callbacks that makes them run on the event loop's thread.

    NautilusTrader 1.231's ``LiveClock`` calls timer and time-alert callbacks on its own timer
    thread; the GIL then interleaves them with the handlers the event loop runs (book deltas, order
    events), so a guard's check could run half-way through another handler's update of the same
    state, and its cancels and constraints could land inside a strategy handler. Called in
    ``on_start`` (which live runs on the loop), it returns ``wrap(callback)``: live, the wrapped
    callback posts ``callback(event)`` to the loop (``call_soon_threadsafe``, FIFO, so timers keep
    their order) unless it is already on the loop's thread; with no running loop (a backtest, whose
    TestClock calls back synchronously) ``wrap`` returns the callback unchanged, so backtests are
    byte-identical. A callback posted after the loop closed (the node is stopping) is dropped."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return lambda callback: callback
    loop_tid = threading.get_ident()

    def wrap(callback):
        def on_loop(event) -> None:
            if threading.get_ident() == loop_tid:
                callback(event)
                return
            try:
                loop.call_soon_threadsafe(callback, event)
            except RuntimeError:
                pass  # loop closed: the node is stopping, nothing of this timer matters any more

        return on_loop

    return wrap


class RiskConstraint(msgspec.Struct, frozen=True):
    """One guard's transition and the quoting constraint it imposes from now on.

    ``instrument_id`` None means every instrument. ``spread_multiplier`` >= 1 multiplies the
    strategy's half-spread. ``trading_state`` is what the guard wants Nautilus' RiskEngine in.
    ``numbers`` are the values that caused the transition (units in the key names).
    """

    guard: str
    ts_ns: int
    old_state: str
    new_state: str
    reason: str
    allow_bid: bool = True
    allow_ask: bool = True
    spread_multiplier: float = 1.0
    trading_state: str = ACTIVE
    instrument_id: str | None = None
    numbers: dict[str, float] = {}
    # [base units] the most |position| the strategy may hold (the allocator's budget turned into
    # base units, docs/portfolio.md "Scoreboard and allocator"); inf = no cap (every guard)
    max_position_base: float = math.inf


class ConstraintBoard:
    """The latest constraint of each guard (per instrument) and their most restrictive combination.

    ``update`` returns ``(allow_bid, allow_ask, spread_multiplier)``: a side is allowed when
    every guard allows it, the multiplier is the largest one asked for (>= 1).
    """

    def __init__(self) -> None:
        # per (guard, instrument): a node-scope guard (the portfolio guard) also sends one
        # constraint per instrument (its sides), which must not replace its node-wide one
        self._by_guard: dict[tuple[str, str | None], tuple[bool, bool, float]] = {}
        self._caps: dict[tuple[str, str | None], float] = {}  # only constraints that carry a cap

    def update(self, msg: RiskConstraint) -> tuple[bool, bool, float]:
        self._by_guard[(msg.guard, msg.instrument_id)] = (msg.allow_bid, msg.allow_ask, max(1.0, msg.spread_multiplier))
        if msg.max_position_base != math.inf or (msg.guard, msg.instrument_id) in self._caps:
            self._caps[(msg.guard, msg.instrument_id)] = msg.max_position_base
        return self.combined()

    def max_position_base(self) -> float:
        """[base units] The smallest position cap asked for (inf: none)."""
        return min(self._caps.values(), default=math.inf)

    def combined(self) -> tuple[bool, bool, float]:
        bid = ask = True
        mult = 1.0
        for b, a, m in self._by_guard.values():
            bid = bid and b
            ask = ask and a
            mult = max(mult, m)
        return bid, ask, mult

    def clear(self) -> None:
        self._by_guard.clear()
        self._caps.clear()


def most_restrictive(states) -> str:
    """The most restrictive of trading states (HALTED > REDUCING > ACTIVE); ACTIVE if none."""
    return max(states, key=TRADING_STATES.index, default=ACTIVE)


def next_utc_midnight_ns(ts_ns: int) -> int:
    """[ns] The first UTC day boundary strictly after ``ts_ns`` [ns since epoch]."""
    return (ts_ns // NS_PER_DAY + 1) * NS_PER_DAY


def ns_to_iso(ts_ns: int) -> str:
    """ISO-8601 UTC text of ``ts_ns`` [ns since epoch], microsecond precision."""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


class SlidingCount:
    """Number of events in the last ``window_ns`` [ns]; ``add``/``count`` are amortised O(1)."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._ts: deque[int] = deque()

    def add(self, ts_ns: int) -> int:
        self._ts.append(ts_ns)
        return self.count(ts_ns)

    def count(self, now_ns: int) -> int:
        """Events with ``now_ns - ts < window_ns``."""
        q, cutoff = self._ts, now_ns - self.window_ns
        while q and q[0] <= cutoff:
            q.popleft()
        return len(q)

    def clear(self) -> None:
        self._ts.clear()


class PnlLedger:
    """Cash and position per instrument from fills, for linear (quote-settled) contracts.

    ``pnl(marks)`` = Σ cash + position · mark [quote currency, e.g. USDT], realised and
    unrealised together, net of fees. ``turnover`` is Σ price · qty of fills [quote currency].
    """

    def __init__(self) -> None:
        self.cash: dict[str, float] = {}
        self.position: dict[str, float] = {}
        self.last_px: dict[str, float] = {}
        self.turnover = 0.0

    def on_fill(self, instrument: str, is_buy: bool, price: float, qty: float, fee: float) -> None:
        """``price`` [quote per base], ``qty`` [base units, > 0], ``fee`` [quote; rebate < 0]."""
        sign = 1.0 if is_buy else -1.0
        self.cash[instrument] = self.cash.get(instrument, 0.0) - sign * price * qty - fee
        self.position[instrument] = self.position.get(instrument, 0.0) + sign * qty
        self.last_px[instrument] = price
        self.turnover += price * qty

    def pnl(self, marks: dict[str, float]) -> float:
        """Total PnL [quote]; an instrument without a mark is valued at its last fill price."""
        total = 0.0
        for iid, cash in self.cash.items():
            mark = marks.get(iid)
            if mark is None or not math.isfinite(mark):
                mark = self.last_px[iid]
            total += cash + self.position[iid] * mark
        return total


class StateClock:
    """Time spent in each state [ns] and the number of transitions of one guard."""

    def __init__(self, initial: str, start_ns: int) -> None:
        self.state = initial
        self.since_ns = start_ns
        self.start_ns = start_ns
        self.spent_ns: dict[str, int] = {}
        self.transitions = 0

    def move(self, state: str, now_ns: int) -> None:
        self.spent_ns[self.state] = self.spent_ns.get(self.state, 0) + max(0, now_ns - self.since_ns)
        self.state = state
        self.since_ns = now_ns
        self.transitions += 1

    def seconds(self, now_ns: int) -> dict[str, float]:
        """Seconds per state up to ``now_ns``, including the current one."""
        out = dict(self.spent_ns)
        out[self.state] = out.get(self.state, 0) + max(0, now_ns - self.since_ns)
        return {k: v / NS_PER_S for k, v in sorted(out.items())}


# -- Config validation helpers ------------------------------------------------------------------


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def check_number(cfg: object, key: str, *, low: float = 0.0, strict: bool = False, allow_inf: bool = False,
                 high: float = math.inf) -> None:
    """Raise ``ValueError("<key>: <rule>, was <value>")`` unless ``cfg.<key>`` is in range:
    a real number (not NaN, not a bool; not +/-inf unless ``allow_inf``), ``>= low`` (``> low``
    when ``strict``) and ``<= high``. ``high`` keeps typos such as 1e30 out of the timers and
    money amounts (Nautilus timers overflow int64 nanoseconds)."""
    v = getattr(cfg, key)
    if not _is_real(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{key}: must be a finite number, was {v!r}")
    if v < low or (strict and v == low):
        raise ValueError(f"{key}: must be {'>' if strict else '>='} {low:g}, was {v!r}")
    if v > high:
        raise ValueError(f"{key}: must be <= {int(high) if float(high).is_integer() else high}, was {v!r}")


# Upper bounds of guard settings (config validation; values beyond them are typos).
MAX_INTERVAL_MS = 86_400_000  # one day
MAX_WINDOW_S = 7 * 86_400.0   # one week
MAX_QUOTE = 1e12              # money amounts in the quote currency (USDT)
MAX_BASE = 1e12               # positions in base units (Nautilus' Quantity holds up to ~3.4e13)
MAX_COUNT = 1_000_000_000


def check_order(cfg: object, soft: str, hard: str) -> None:
    """Raise unless ``soft <= hard`` (0 = that limit disabled)."""
    s, h = getattr(cfg, soft), getattr(cfg, hard)
    if s > 0 and h > 0 and s > h:
        raise ValueError(f"{soft}: must be <= {hard} ({h!r}), was {s!r}")


class RiskGuardConfig(ActorConfig, frozen=True):
    """Keys every guard has.

    instrument_id : the instrument the guard protects (None: every instrument; the builder
        sets it from ``run.instrument``).
    topic : message-bus topic of the constraints.
    cancel_orders : the guard itself cancels open orders of a blocked side.
    """

    instrument_id: InstrumentId | None = None
    topic: str = RISK_TOPIC
    cancel_orders: bool = True


class RiskGuard(Actor):
    """Base class of the guards: state, transitions, constraint publication, order cancels.

    Subclasses set ``GUARD`` (the short name in reports and the audit log) and call
    ``transition``. ``manual_reset(reason)`` returns a guard to its initial state (live: a CLI
    or HTTP trigger; tests). ``guard_metrics()`` gives the guard's numbers for the report.
    """

    GUARD = "guard"
    INITIAL = ACTIVE

    def __init__(self, config: RiskGuardConfig) -> None:
        super().__init__(config)
        self._iid = config.instrument_id
        self._iid_str = config.instrument_id.value if config.instrument_id is not None else None
        self.guard_state = self.INITIAL
        self.reason = ""
        self._published: tuple = (self.INITIAL, True, True, 1.0, ACTIVE)
        self.state_clock: StateClock | None = None
        self.orders_cancelled = 0

    @property
    def guard_name(self) -> str:
        return self.GUARD

    # -- lifecycle (subclasses call super()) -------------------------------------------------

    def on_start(self) -> None:
        self.guard_state = self.INITIAL
        self._published = (self.INITIAL, True, True, 1.0, ACTIVE)
        self.state_clock = StateClock(self.INITIAL, self.clock.timestamp_ns())
        # Ours = this trader's client order ids. Live, reconciliation brings another program's
        # orders and fills on the shared account into the cache and onto the event topics
        # (``foreign_orders = "ignore"``): they are not this bot's PnL, volume or probes.
        self._own_ids = own_order_prefix(self.trader_id.get_tag())
        self.on_loop = loop_dispatcher()  # every clock callback of a guard goes through this

    def on_loop(self, callback):
        """Until ``on_start`` (unit tests drive guards without a kernel): the callback as is."""
        return callback

    def is_own(self, client_order_id) -> bool:
        """Whether an order (``ClientOrderId`` or its string) is one of this trader's."""
        return self._own_ids.match(getattr(client_order_id, "value", client_order_id)) is not None

    def on_stop(self) -> None:
        self.clock.cancel_timers()

    def on_reset(self) -> None:
        self.guard_state = self.INITIAL
        self._published = (self.INITIAL, True, True, 1.0, ACTIVE)
        self.reason = ""
        self.orders_cancelled = 0

    # -- transitions -------------------------------------------------------------------------

    def transition(
        self,
        new_state: str,
        reason: str,
        numbers: dict[str, float] | None = None,
        *,
        allow_bid: bool = True,
        allow_ask: bool = True,
        spread_multiplier: float = 1.0,
        trading_state: str = ACTIVE,
        cancel: str | None = None,
    ) -> RiskConstraint | None:
        """Move to ``new_state`` and publish the constraint. A no-op when neither the state
        nor the constraint changes (a changed constraint in the same state is published).

        ``cancel``: None, ``"all"``, ``"bid"`` or ``"ask"``: open orders to cancel afterwards.
        """
        key = (new_state, allow_bid, allow_ask, spread_multiplier, trading_state)
        if key == self._published:
            return None
        self._published = key
        now = self.clock.timestamp_ns()
        msg = RiskConstraint(
            guard=self.GUARD, ts_ns=now, old_state=self.guard_state, new_state=new_state, reason=reason,
            allow_bid=allow_bid, allow_ask=allow_ask, spread_multiplier=spread_multiplier,
            trading_state=trading_state, instrument_id=self._iid_str,
            numbers={k: float(v) for k, v in (numbers or {}).items()},
        )
        self.guard_state = new_state
        self.reason = reason
        if self.state_clock is not None and msg.old_state != new_state:
            self.state_clock.move(new_state, now)
        self.msgbus.publish(topic=self.config.topic, msg=msg)
        if cancel is not None and self.config.cancel_orders:
            self.cancel_open_orders(cancel)
        return msg

    def manual_reset(self, reason: str = "manual reset") -> None:
        """Back to the initial state (all sides allowed), whatever the current one."""
        self.transition(self.INITIAL, reason)

    def cancel_open_orders(self, side: str = "all", instrument_id: InstrumentId | None = None) -> int:
        """Cancel our open orders of the guard's instrument (``instrument_id``: that one) on a side;
        returns how many.

        Only orders of this trader's strategies: reconciliation puts a human's or another
        program's open orders in the cache too (``live.foreign_orders = "ignore"``), and a guard
        must never cancel those. Orders already pending cancel are skipped (the strategy cancelled
        them first).
        """
        want = None if side == "all" else (OrderSide.BUY if side == "bid" else OrderSide.SELL)
        n = 0
        now = self.clock.timestamp_ns()
        own = own_order_prefix(self.trader_id.get_tag())
        for order in self.cache.orders_open(instrument_id=instrument_id or self._iid):
            if (want is not None and order.side != want) or order.is_pending_cancel or not own.match(
                    order.client_order_id.value):
                continue
            cmd = CancelOrder(
                trader_id=self.trader_id, strategy_id=order.strategy_id, instrument_id=order.instrument_id,
                client_order_id=order.client_order_id, venue_order_id=order.venue_order_id,
                command_id=UUID4(), ts_init=now,
            )
            self.msgbus.send(endpoint="ExecEngine.execute", msg=cmd)
            n += 1
        self.orders_cancelled += n
        return n

    # -- helpers ------------------------------------------------------------------------------

    def mark_price(self, instrument_id: InstrumentId) -> float:
        """Mid of the cached book (NaN without a two-sided book)."""
        book = self.cache.order_book(instrument_id)
        if book is None:
            return math.nan
        mid = book.midpoint()
        return math.nan if mid is None else float(mid)

    def time_in_state_s(self, now_ns: int | None = None) -> dict[str, float]:
        if self.state_clock is None:
            return {}
        return self.state_clock.seconds(self.clock.timestamp_ns() if now_ns is None else now_ns)

    def guard_metrics(self) -> dict:
        """Numbers for the report (subclasses extend)."""
        return {"state": self.guard_state, "orders_cancelled": self.orders_cancelled,
                "transitions": self.state_clock.transitions if self.state_clock else 0}
