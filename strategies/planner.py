"""Order-lifecycle planner of the mmbot market maker: plain data in, actions out.

The strategy (``strategies.market_maker``) computes the target ladder (prices in ticks per side
and level) and hands it to ``Planner.plan`` together with the position and the external
constraints. The planner compares the targets with *our* orders -- one record per order, in a
ladder slot or, once a cancel has been sent, in the side's list of cancelling orders -- and
returns the actions to take: ``SUBMIT``, ``AMEND`` or ``CANCEL``, each with a reason. The
strategy only applies them (creates the Nautilus order, calls ``modify_order`` /
``cancel_order``) and feeds order events back (``on_accepted``, ``on_filled``, ...).

No Nautilus objects, no clock, no I/O, no logging: every input is an int, a float or a record
of them, so the rules can be tested (and property-tested) without an engine. Order keys are
opaque (the strategy uses ``ClientOrderId``; tests use ints).

Units: prices in integer ticks, sizes in integer lots of the instrument's size step, times in
ns (the caller's clock / event timestamps), ``*_bps`` relative to a price.

Order record states:

- ``PENDING_SUBMIT``: sent, not yet accepted (it can still arrive at the venue and fill);
- ``WORKING``: accepted (or partly filled) at ``ticks``;
- ``PENDING_AMEND``: an amend to ``req_ticks`` / ``req_lots`` is in flight;
- ``PENDING_CANCEL``: removed from its slot, cancel sent (or to be re-sent); it may still fill
  until the venue confirms the cancel or reports it closed.

Inventory limit, worst case (issue 12 item 1.3). Every order that can still fill counts toward
its side's exposure until the venue reports it closed: pending submit (its full size), working
(leaves), pending amend (leaves at the larger of the old and the new size) and pending cancel
(leaves). A side may add an order of ``n`` lots only if::

    +position + exposure_bid + n <= max_lots      (bids)
    -position + exposure_ask + n <= max_lots      (asks)

so however the in-flight messages resolve, ``|position| <= max_lots``. A cancel does not free
room until it is confirmed: the replacement of a pulled order waits when the room is short --
or, when a deeper level of the same side is being pulled anyway (beyond the ladder's inventory
levels), that order is amended up to the empty level instead, which keeps the exposure unchanged.

The reducing side's residual (hostile review 26 F2). Levels are allowed while the whole of them
fits the room, so under a cap below one order (``max_lots`` < ``level_lots[0]``: an allocator's
budget, 0 when blacklisted) a position ``p`` with ``max_lots + |p| < level_lots[0]`` -- a partial
fill's residual -- would leave its reducing side without a level too: nothing quoted, the
position kept. There the reducing side (asks when long, bids when short) gets one level, its
first, sized to the position::

    lots_0 = |p|        when 0 < |p| and level_lots[0] > max_lots + |p|      (else level_lots[0])

so a fill of all of it ends flat: within any cap, never on the other side (and never larger than
the position, which the portfolio guard's REDUCING check denies: docs/portfolio.md). The worst-case
gate above applies unchanged (``|p| <= room``). At level 0, an order whose fillable lots exceed
``lots_0`` (the position shrank outside this order, or the cap fell under a full order) is pulled
(``RISK``), and a residual-sized order left when the level is full again is replaced (``RESIZE``).
A residual the venue refuses (below ``min_qty`` or ``min_notional``) is not sent: counted in
``skipped`` like any such order, on every message it is tried, and the position stays.

Cancel retries (issue 13 item 3). A cancel is never re-sent from the reject handler. The n-th
cancel of an order (n >= 1) may be followed by another only ``cancel_retry_delay_ns(n)`` later::

    delay(n) = min(CANCEL_RETRY_CAP_NS, CANCEL_RETRY_BASE_NS * CANCEL_RETRY_FACTOR ** (n - 1))
             = 250 ms, 500 ms, 1 s, 2 s, 4 s, 5 s, 5 s, ...

and only once the previous one is answered (``cancel_inflight`` False): at most 3 cancels of
one order in any 1 s, 6 in any 10 s, 16 in any 60 s. No jitter: our few orders do not
synchronise anyone's retries, and a backtest stays deterministic. A reject saying the order does
not exist (Bybit 110001, ``is_unknown_order``) also asks the caller to reconcile the order from
the venue (``on_cancel_rejected`` returns True): it was filled, cancelled, or has not arrived
yet; the next cancel, if the order is still open then, follows the same schedule. An amend
refused that way is not repeated on the next message: the order is pulled
(``on_modify_rejected`` returns the CANCEL) and the caller queries it as well.

Hot path: ``plan`` runs once per book message. It reuses one output list, allocates one small
tuple per action and one record per new order, and does a fixed amount of int/float work per
level. A *settled* side (every usable level holds an order at, or on its way to, its target;
none beyond; no soft block) skips its full pass: no rule can act there, whatever the fair price
and the clock (``_settled``; docs/strategy.md, "Settled sides").
"""

from __future__ import annotations

from strategies import quoting as qm

# -- Record states ---------------------------------------------------------------------------
PENDING_SUBMIT: int = 1
WORKING: int = 2
PENDING_AMEND: int = 3
PENDING_CANCEL: int = 4
STATE_NAMES: dict[int, str] = {
    PENDING_SUBMIT: "PENDING_SUBMIT", WORKING: "WORKING", PENDING_AMEND: "PENDING_AMEND",
    PENDING_CANCEL: "PENDING_CANCEL",
}

# -- Action kinds ------------------------------------------------------------------------------
SUBMIT: int = 1
AMEND: int = 2
CANCEL: int = 3
KIND_NAMES: dict[int, str] = {SUBMIT: "SUBMIT", AMEND: "AMEND", CANCEL: "CANCEL"}

# -- Reasons -----------------------------------------------------------------------------------
NEW: str = "new"  # an empty level is (re)filled
REQUOTE: str = "requote"  # target moved beyond the threshold (or the order is too old)
STALE: str = "stale"  # fair drifted beyond stale_price_drift_bps: pull now
RISK: str = "risk"  # side not allowed, or level beyond the inventory limit
IMBALANCE: str = "imbalance"  # top-of-book imbalance guard blocks the side
RULE: str = "exchange_rule"  # an amend would break an exchange rule: cancel instead
UNUSABLE: str = "book_unusable"  # one-sided or crossed book
RETRY: str = "retry"  # a cancel re-sent (not answered, rejected, or the order came back)
UNKNOWN: str = "unknown_order"  # the venue refused an amend as "order not exists": pull it
RESIZE: str = "resize"  # a residual-sized order at a level that is full-sized again

BID: int = 0
ASK: int = 1

SETTLED_SHORTCUT: bool = True
"""Default of ``Planner.settled_shortcut``: a side whose orders all rest at (or are on their way
to) their targets skips its full pass (``Planner._settled``); same actions and state."""

CANCEL_RETRY_BASE_NS: int = 250_000_000
"""Wait after an order's first cancel before another may be sent [ns]."""
CANCEL_RETRY_FACTOR: float = 2.0
"""Growth of the wait with every further cancel of the same order [-]."""
CANCEL_RETRY_CAP_NS: int = 5_000_000_000
"""Longest wait between two cancels of one order [ns]."""
UNKNOWN_ORDER_MARKERS: tuple[str, ...] = ("110001", "order not exists", "too late to cancel")
"""Lower-case fragments of a cancel reject saying the venue does not know the order as open:
the simulator's "110001: order not exists or too late to cancel"; Nautilus 1.231's Bybit adapter
passes Bybit's retMsg only, "order not exists or too late to cancel"."""


def cancel_retry_delay_ns(n: int) -> int:
    """Wait [ns] after the ``n``-th cancel of an order (n >= 1) before the next may be sent."""
    if n > 40:  # 2**40 * base is far beyond the cap (and keeps the float finite)
        return CANCEL_RETRY_CAP_NS
    d = CANCEL_RETRY_BASE_NS * CANCEL_RETRY_FACTOR ** (n - 1)
    return CANCEL_RETRY_CAP_NS if d >= CANCEL_RETRY_CAP_NS else int(d)


def is_unknown_order(reason: str) -> bool:
    """Whether a cancel reject says the order is not open at the venue (Bybit 110001)."""
    r = (reason or "").lower()
    for marker in UNKNOWN_ORDER_MARKERS:
        if marker in r:
            return True
    return False


class OrderRec:
    """One of our orders, as the planner sees it (plain data, mutated in place).

    ``lots``: the order's quantity [lots]; ``filled``: lots filled so far; ``req_ticks`` /
    ``req_lots``: the price/size an in-flight amend asks for (equal to ``ticks`` / ``lots``
    otherwise); ``since_ns``: accepted / last amended (venue time); ``fair_at``: fair when the
    current price was chosen, ``req_fair``: fair when the amend was sent; ``level``: ladder slot,
    -1 once cancelled. Cancel bookkeeping: ``cancels`` sent, ``cancel_inflight`` (a cancel is
    outstanding at the venue), ``cancel_sent_ns`` (last one sent), ``next_cancel_ns`` (earliest
    time another may be sent).
    """

    __slots__ = (
        "key", "side", "level", "state", "ticks", "lots", "filled", "req_ticks", "req_lots",
        "since_ns", "fair_at", "req_fair", "cancels", "cancel_inflight", "cancel_sent_ns", "next_cancel_ns",
    )

    def __init__(self, side: int, level: int, ticks: int, lots: int, fair: float) -> None:
        self.key = None
        self.side = side
        self.level = level
        self.state = PENDING_SUBMIT
        self.ticks = ticks
        self.lots = lots
        self.filled = 0
        self.req_ticks = ticks
        self.req_lots = lots
        self.since_ns = 0
        self.fair_at = fair
        self.req_fair = fair
        self.cancels = 0
        self.cancel_inflight = False
        self.cancel_sent_ns = 0
        self.next_cancel_ns = 0

    def fillable_lots(self) -> int:
        """Most lots this order can still fill: leaves at the larger of the current size and an
        in-flight amend's size."""
        lots = self.lots if self.lots >= self.req_lots else self.req_lots
        return lots - self.filled

    def __repr__(self) -> str:
        return (f"OrderRec(key={self.key!r}, side={'BID' if self.side == BID else 'ASK'}, level={self.level}, "
                f"state={STATE_NAMES.get(self.state, self.state)}, ticks={self.ticks}, lots={self.lots}, "
                f"filled={self.filled})")


class Planner:
    """Targets + our orders -> submit / amend / cancel actions (see the module docstring).

    Parameters (units in brackets): ``levels`` per side; ``level_lots`` [lots] per level;
    ``max_lots`` [lots] inventory limit; ``tick`` [price] and ``step`` [base units] of the
    instrument with ``min_qty`` / ``max_qty`` [base units] and ``min_notional`` [quote] (the
    exchange-rule check, ``quoting.min_rule_violation``); the requote rules of
    ``quoting.should_requote``: ``requote_threshold_bps``, ``min_time_in_book_ns``,
    ``max_order_age_ns``, ``stale_price_drift_bps``; ``use_amend``; ``skipped``: the dict whose
    counters (by rule) are incremented when an order is not sent because it breaks a rule.
    """

    def __init__(
        self,
        levels: int,
        level_lots: list[int],
        max_lots: int,
        tick: float,
        step: float,
        min_qty: float,
        min_notional: float,
        max_qty: float,
        requote_threshold_bps: float,
        min_time_in_book_ns: int,
        max_order_age_ns: float,
        stale_price_drift_bps: float,
        use_amend: bool,
        skipped: dict[str, int] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        if len(level_lots) != levels:
            raise ValueError(f"level_lots has {len(level_lots)} entries for {levels} levels")
        self.levels = levels
        self.level_lots = list(level_lots)
        self.max_lots = max_lots
        self.tick = tick
        self.step = step
        self.min_qty = min_qty
        self.min_notional = min_notional
        self.max_qty = max_qty
        self.threshold_bps = requote_threshold_bps
        self.min_tib_ns = min_time_in_book_ns
        self.max_age_ns = max_order_age_ns
        self.stale_bps = stale_price_drift_bps
        self.use_amend = use_amend
        self.skipped = skipped if skipped is not None else dict.fromkeys(qm.SKIP_REASONS, 0)
        # limit_waits: a level left empty because the room (counting in-flight orders) is short;
        # limit_moves: a pulled deeper order amended up to an empty level instead.
        self.counters = counters if counters is not None else {}
        self.counters.setdefault("limit_waits", 0)
        self.counters.setdefault("limit_moves", 0)
        self.slots: list[list[OrderRec | None]] = [[None] * levels, [None] * levels]
        self.cancelling: list[list[OrderRec]] = [[], []]
        self._by_key: dict = {}
        self._out: list[tuple] = []
        # Levels each side may quote at the last position seen by ``plan`` (a pure function of
        # the position, ``level_lots`` and ``max_lots``, fixed after construction but by ``set_max_lots``).
        self._n_pos: int | None = None
        self._n_bid: int = 0
        self._n_ask: int = 0
        # Size [lots] of each side's first level at that position: level_lots[0], or the
        # reducing side's residual (``first_level_lots``).
        self._lots0: list[int] = [level_lots[0] if levels else 0] * 2
        # The settled-side shortcut (docs/strategy.md, "Settled sides"); False runs every side's
        # full pass (the identity tests compare both).
        self.settled_shortcut: bool = SETTLED_SHORTCUT
        self.settled_sides: int = 0  # sides whose pass the shortcut replaced (diagnostics)

    def set_max_lots(self, max_lots: int) -> None:
        """A new inventory limit [lots] (a position cap from outside: docs/portfolio.md); the
        allowed levels are recomputed at the next ``plan``."""
        self.max_lots = max_lots
        self._n_pos = None

    # -- Planning ------------------------------------------------------------------------------

    def plan(
        self,
        now_ns: int,
        fair: float,
        position_lots: int,
        bid_targets: list[int],
        ask_targets: list[int],
        allow_bid: bool,
        allow_ask: bool,
        block_bid: bool,
        block_ask: bool,
    ) -> list[tuple]:
        """Actions for one book message: ``[(kind, rec, ticks, lots, reason), ...]``.

        ``bid_targets`` / ``ask_targets``: target price per level [ticks], best first;
        ``position_lots``: signed position [lots]; ``allow_*``: the side may hold orders at all
        (external constraint: cancel at once when False); ``block_*``: soft guard (imbalance)
        -- no new orders, resting ones go once they have had their minimum time in book.
        The returned list is reused by the next call: apply it first.
        """
        out = self._out
        out.clear()
        if position_lots != self._n_pos:
            self._n_pos = position_lots
            self._n_bid = self.allowed_levels(position_lots, BID)
            self._n_ask = self.allowed_levels(position_lots, ASK)
            self._lots0[BID] = self.first_level_lots(position_lots, BID)
            self._lots0[ASK] = self.first_level_lots(position_lots, ASK)
        n_bid = self._n_bid if allow_bid else 0
        n_ask = self._n_ask if allow_ask else 0
        shortcut = self.settled_shortcut
        if shortcut and not block_bid and self._settled(self.slots[BID], bid_targets, n_bid, fair):
            self.settled_sides += 1
        else:
            self._plan_side(BID, bid_targets, n_bid, block_bid, now_ns, fair, self.max_lots - position_lots, out)
        if shortcut and not block_ask and self._settled(self.slots[ASK], ask_targets, n_ask, fair):
            self.settled_sides += 1
        else:
            self._plan_side(ASK, ask_targets, n_ask, block_ask, now_ns, fair, self.max_lots + position_lots, out)
        return out

    def _settled(self, slots: list, targets: list[int], n_hard: int, fair: float) -> bool:
        """Whether ``_plan_side`` (without a soft block) would return no action for this side,
        decided from the slots alone; if so, do the one thing that pass would still do.

        The rule (docs/strategy.md, "Settled sides"): every level the ladder may use holds an
        order whose price -- the requested one for an amend in flight -- equals its target, in
        state PENDING_SUBMIT, WORKING or PENDING_AMEND, and every level beyond holds none. Then
        each of the pass's rules is silent whatever the fair price and the clock: rule 1 needs an
        empty slot; the in-flight stale pull and the stale/requote rules of ``should_requote``
        need the price to differ from the target; the risk pull needs an order beyond
        ``n_hard``, the residual rule a level-0 order of another size than ``_lots0`` that does
        not fit it (``_misfit``). What the pass still does is ``fair_at = fair`` for each WORKING order at its
        target (the quote is confirmed at this fair): done here, in the same order. Levels are
        independent of each other in this case (nothing is submitted, moved or cancelled), so
        refreshing level i before finding that a later level is not settled is what the full
        pass does to level i anyway."""
        levels = self.levels
        n = n_hard if n_hard < levels else levels
        for i in range(n, levels):
            if slots[i] is not None:
                return False
        for i in range(n):
            rec = slots[i]
            if rec is None:
                return False
            if i == 0:  # the residual rule (``_misfit``): the full pass would pull this order
                lots0 = self._lots0[rec.side]
                if (rec.lots != lots0 or rec.req_lots != lots0) and self._misfit(rec, lots0) is not None:
                    return False
            st = rec.state
            if st == WORKING:
                if rec.ticks != targets[i]:
                    return False
                rec.fair_at = fair
            elif st == PENDING_AMEND:
                if rec.req_ticks != targets[i]:
                    return False
            elif st != PENDING_SUBMIT or rec.ticks != targets[i]:
                return False
        return True

    def allowed_levels(self, position_lots: int, side: int) -> int:
        """Ladder levels a side may quote: level ``i`` while ``±position + Σ_{j<=i} lots_j <=
        max_lots`` (+position for bids, -position for asks); when that allows none, the reducing
        side still gets its first level, sized to the position (``first_level_lots``)."""
        room = self.max_lots - position_lots if side == BID else self.max_lots + position_lots
        n = 0
        cum = 0
        for lots in self.level_lots:
            cum += lots
            if cum > room:
                break
            n += 1
        if n == 0 and self.levels and self.first_level_lots(position_lots, side) != self.level_lots[0]:
            return 1
        return n

    def first_level_lots(self, position_lots: int, side: int) -> int:
        """Size [lots] of the side's first order at this position: ``level_lots[0]``, or, on the
        reducing side (asks when long, bids when short) when a full order would end beyond
        ``max_lots`` on the other side, the position's size (the fill ends flat)."""
        full = self.level_lots[0] if self.levels else 0
        reducible = position_lots if side == ASK else -position_lots  # > 0: this side reduces |position|
        if 0 < reducible and full > self.max_lots + reducible:
            return reducible
        return full

    def level_size(self, side: int, i: int) -> int:
        """Size [lots] of a new order at level ``i`` at the last position ``plan`` saw."""
        return self._lots0[side] if i == 0 else self.level_lots[i]

    def _misfit(self, rec: OrderRec, lots0: int) -> str | None:
        """Why a level-0 order must go although its price may be right: it can fill more than
        the residual the level now allows (``RISK``), or it is a residual-sized order at a
        full-sized level (``RESIZE``); ``None``: it fits. The callers ask only when the order's
        size differs from ``lots0`` (an order of that size always fits)."""
        if rec.fillable_lots() > lots0:
            return RISK
        if rec.lots != lots0 and lots0 == self.level_lots[0]:
            return RESIZE
        return None

    def _plan_side(self, s: int, targets: list[int], n_hard: int, soft_block: bool, now: int, fair: float,
                   room: int, out: list) -> None:
        """One side. ``n_hard``: levels the ladder may use at this position (beyond: pulled);
        ``room``: ``max_lots -/+ position`` [lots], the most the side's orders may add up to."""
        slots = self.slots[s]
        lots0 = self._lots0[s]
        stale = self.stale_bps * qm.BPS
        # Lots the side may still add: room minus every order that can still fill; cancels do
        # not change it (a cancelled order counts until the venue confirms it). Computed by
        # ``_fill`` when a level needs an order (most messages need none).
        free = None
        for i in range(n_hard if n_hard < self.levels else self.levels):
            rec = slots[i]
            tgt = targets[i]
            if rec is None:
                if not soft_block:
                    free = self._fill(s, i, tgt, fair, n_hard, room, free, now, NEW, out)
                continue
            if i == 0 and (rec.lots != lots0 or rec.req_lots != lots0):
                misfit = self._misfit(rec, lots0)
                if misfit is not None:
                    self._cancel(rec, misfit, now, out)
                    if not soft_block:
                        free = self._fill(s, i, tgt, fair, n_hard, room, free, now, misfit, out)
                    continue
            st = rec.state
            if st != WORKING:
                # In flight: only the stale guard may act.
                if st == PENDING_AMEND:
                    cur, ref = rec.req_ticks, rec.req_fair
                else:
                    cur, ref = rec.ticks, rec.fair_at
                if cur != tgt and abs(fair - ref) > stale * ref:
                    self._cancel(rec, STALE, now, out)
                    if not soft_block:
                        free = self._fill(s, i, tgt, fair, n_hard, room, free, now, STALE, out)
                continue
            cur = rec.ticks
            if cur == tgt:
                rec.fair_at = fair  # quote confirmed at this fair
            if soft_block:
                ref = rec.fair_at
                if cur != tgt and abs(fair - ref) > stale * ref:
                    self._cancel(rec, STALE, now, out)
                elif now - rec.since_ns >= self.min_tib_ns:
                    self._cancel(rec, IMBALANCE, now, out)
                continue
            decision = qm.should_requote(
                now, rec.since_ns, cur, tgt, self.tick, fair, rec.fair_at, self.threshold_bps,
                self.min_tib_ns, self.max_age_ns, self.stale_bps,
            )
            if decision == qm.KEEP:
                continue
            if decision == qm.PULL_STALE:
                self._cancel(rec, STALE, now, out)
                free = self._fill(s, i, tgt, fair, n_hard, room, free, now, STALE, out)
            elif self.use_amend:
                self._amend(rec, tgt, fair, now, REQUOTE, out)  # same size: exposure unchanged
            else:
                self._cancel(rec, REQUOTE, now, out)
                free = self._fill(s, i, tgt, fair, n_hard, room, free, now, REQUOTE, out)
        # Levels beyond the inventory limit (or the whole side when it is not allowed): pull now,
        # ignoring min_time_in_book (unless moved up to an empty level above).
        for i in range(n_hard, self.levels):
            rec = slots[i]
            if rec is not None:
                self._cancel(rec, RISK, now, out)

    def _fill(self, s: int, i: int, ticks: int, fair: float, n_hard: int, room: int, free: int | None, now: int,
              reason: str, out: list) -> int:
        """Put an order at the empty level ``i`` if the worst case allows it; returns the new
        ``free`` [lots] (``None``: not computed yet in this pass). With too little room, amend a
        working order of a level beyond ``n_hard`` (about to be pulled, same size, nothing
        filled) up to level ``i`` instead; else wait."""
        if free is None:
            free = room - self.exposure_lots(s)
        lots = self._lots0[s] if i == 0 else self.level_lots[i]
        if lots <= free:
            if self._submit(s, i, ticks, lots, fair, reason, out):
                free -= lots
            return free
        if self.use_amend:
            slots = self.slots[s]
            for j in range(self.levels - 1, n_hard - 1, -1):  # the deepest first
                rec = slots[j]
                if rec is not None and rec.state == WORKING and rec.filled == 0 and rec.lots == lots:
                    slots[j] = None
                    slots[i] = rec
                    rec.level = i
                    self.counters["limit_moves"] += 1
                    if rec.ticks == ticks:  # it already rests at this level's price: re-slot, no request
                        rec.fair_at = fair
                        return free
                    self._amend(rec, ticks, fair, now, RISK, out)
                    return free
        self.counters["limit_waits"] += 1
        return free

    def _rule_violation(self, lots: int, ticks: int) -> str | None:
        return qm.min_rule_violation(lots, self.step, ticks * self.tick, self.min_qty, self.min_notional, self.max_qty)

    def _submit(self, s: int, i: int, ticks: int, lots: int, fair: float, reason: str, out: list) -> bool:
        bad = self._rule_violation(lots, ticks)
        if bad is not None:
            self.skipped[bad] += 1
            return False
        rec = OrderRec(s, i, ticks, lots, fair)
        self.slots[s][i] = rec
        out.append((SUBMIT, rec, ticks, lots, reason))
        return True

    def _amend(self, rec: OrderRec, ticks: int, fair: float, now: int, reason: str, out: list) -> None:
        """Re-price (same size, so the exposure does not change)."""
        bad = self._rule_violation(rec.lots, ticks)
        if bad is not None:
            self.skipped[bad] += 1
            self._cancel(rec, RULE, now, out)
            return
        rec.state = PENDING_AMEND
        rec.req_ticks = ticks
        rec.req_fair = fair
        out.append((AMEND, rec, ticks, rec.lots, reason))

    def _cancel(self, rec: OrderRec, reason: str, now: int, out: list) -> None:
        """Take the order out of its slot (the slot is free at once) and cancel it. It stays in
        ``cancelling`` until the venue reports it closed."""
        if rec.level >= 0:
            self.slots[rec.side][rec.level] = None
            rec.level = -1
            self.cancelling[rec.side].append(rec)
        rec.state = PENDING_CANCEL
        rec.cancels += 1
        rec.cancel_inflight = True
        rec.cancel_sent_ns = now
        rec.next_cancel_ns = now + cancel_retry_delay_ns(rec.cancels)
        out.append((CANCEL, rec, 0, 0, reason))

    def pull(self, side: int, reason: str, now_ns: int) -> list[tuple]:
        """Cancel every order in the side's slots (risk constraint, unusable book)."""
        out = self._out
        out.clear()
        for rec in self.slots[side]:
            if rec is not None:
                self._cancel(rec, reason, now_ns, out)
        return out

    def retry_cancels(self, now_ns: int) -> list[tuple]:
        """Re-send the cancel of cancelling orders whose last cancel is answered (rejected, or
        reconciliation put the order back) once the backoff allows (``next_cancel_ns``). The
        caller first drops the closed ones and refreshes ``cancel_inflight`` from its order
        state (Nautilus: ``is_pending_cancel``)."""
        out = self._out
        out.clear()
        for s in (BID, ASK):
            for rec in self.cancelling[s]:
                if not rec.cancel_inflight and now_ns >= rec.next_cancel_ns:
                    self._cancel(rec, RETRY, now_ns, out)
        return out

    # -- Bookkeeping ---------------------------------------------------------------------------

    def bind(self, rec: OrderRec, key) -> None:
        """Attach the order's key (client order id) to a record created by a SUBMIT action."""
        rec.key = key
        self._by_key[key] = rec

    def get(self, key) -> OrderRec | None:
        return self._by_key.get(key)

    def forget(self, rec: OrderRec) -> None:
        """Drop a record (the order is closed)."""
        if rec.key is not None:
            self._by_key.pop(rec.key, None)
        if rec.level >= 0:
            if self.slots[rec.side][rec.level] is rec:
                self.slots[rec.side][rec.level] = None
            rec.level = -1
        else:
            lst = self.cancelling[rec.side]
            if rec in lst:
                lst.remove(rec)

    def clear(self) -> None:
        """Forget every record (the strategy stopped: no more events will arrive)."""
        for s in (BID, ASK):
            self.slots[s] = [None] * self.levels
            self.cancelling[s].clear()
        self._by_key.clear()

    def has_cancelling(self) -> bool:
        return bool(self.cancelling[BID] or self.cancelling[ASK])

    def records(self):
        """Every tracked record: slots (best level first) then cancelling, bids then asks."""
        for s in (BID, ASK):
            for rec in self.slots[s]:
                if rec is not None:
                    yield rec
            yield from self.cancelling[s]

    def exposure_lots(self, side: int) -> int:
        """Σ fillable lots of every order of a side that can still fill (slots + cancelling)."""
        total = 0
        for rec in self.slots[side]:
            if rec is not None:
                total += rec.fillable_lots()
        for rec in self.cancelling[side]:
            total += rec.fillable_lots()
        return total

    # -- Order events (venue -> planner) -------------------------------------------------------

    def on_accepted(self, key, ts_ns: int) -> None:
        rec = self._by_key.get(key)
        if rec is not None and rec.level >= 0 and rec.state == PENDING_SUBMIT:
            rec.state = WORKING
            rec.since_ns = ts_ns  # the venue's ack time

    def on_updated(self, key, ticks: int, lots: int, ts_ns: int) -> None:
        rec = self._by_key.get(key)
        if rec is None:
            return
        rec.ticks = rec.req_ticks = ticks
        rec.lots = rec.req_lots = lots
        if rec.level >= 0:
            rec.state = WORKING
            rec.fair_at = rec.req_fair
            rec.since_ns = ts_ns  # an amend loses queue priority: time in book starts again

    def on_modify_rejected(self, key, closed: bool, reason: str, now_ns: int) -> list[tuple]:
        """An amend was refused: the order rests at its old price and the next message may try
        again -- unless the venue says the order does not exist (``is_unknown_order``: e.g. it
        filled and we missed it), where re-amending on every message would be a storm: the order
        is pulled (returned CANCEL, retried on the backoff schedule) and counts until closed;
        the caller also asks the venue for its state."""
        out = self._out
        out.clear()
        rec = self._by_key.get(key)
        if rec is None:
            return out
        if closed:
            self.forget(rec)
            return out
        rec.req_ticks = rec.ticks
        rec.req_lots = rec.lots
        if rec.level >= 0:
            rec.state = WORKING  # still resting at its old price
            if is_unknown_order(reason):
                self._cancel(rec, UNKNOWN, now_ns, out)
        return out

    def on_filled(self, key, lots: int, closed: bool) -> None:
        rec = self._by_key.get(key)
        if rec is None:
            return
        rec.filled += lots
        if closed:
            self.forget(rec)

    def on_closed(self, key) -> None:
        """Canceled, rejected, denied or expired."""
        rec = self._by_key.get(key)
        if rec is not None:
            self.forget(rec)

    def on_cancel_rejected(self, key, reason: str) -> bool:
        """A cancel was refused. Never re-sent from here (``retry_cancels`` does, on the backoff
        schedule). Returns True when the caller should reconcile the order from the venue (query
        its state): the reject says the venue does not know it as open (``is_unknown_order``)."""
        rec = self._by_key.get(key)
        if rec is None:
            return False
        rec.cancel_inflight = False
        return is_unknown_order(reason)
