"""The reducing side's residual under a position cap below one order (hostile review 26 F2).

``Planner.allowed_levels`` allows a level only while the whole of it fits the room, so under a
cap below one order (an allocator's budget; 0 when blacklisted) a partial fill's residual left
the reducing side without a level: nothing quoted, the position kept. The reducing side's first
level is now sized to the position when a full order would end beyond the cap on the other side
(``Planner.first_level_lots``); at level 0 an order larger than that is pulled, a residual-sized
order at a full-sized level is replaced. The strategy converts its position to lots towards zero
(``quoting.position_lots``), so the residual never exceeds the position.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from strategies import planner as pl
from strategies import quoting as qm
from tests.test_planner import HALF_SPREAD_TICKS, MS, OPS, QUIET_OPS, SETTINGS, Client, TracingClient, planner_args

FAIR = 10_000.0
BIDS = [9_997, 9_996, 9_995]
ASKS = [10_003, 10_004, 10_005]


def _planner(max_lots: int, level_lots: list[int], min_qty: float = 0.0, min_notional: float = 0.0,
             step: float = 1.0) -> pl.Planner:
    return pl.Planner(levels=len(level_lots), level_lots=level_lots, max_lots=max_lots, tick=1.0, step=step,
                      min_qty=min_qty, min_notional=min_notional, max_qty=1e9, requote_threshold_bps=0.0,
                      min_time_in_book_ns=0, max_order_age_ns=6e10, stale_price_drift_bps=5.0, use_amend=True)


def _plan(p: pl.Planner, pos: int, now: int = 0) -> list[tuple]:
    n = p.levels
    return [(a[0], a[1].side, a[3], a[4]) for a in p.plan(now, FAIR, pos, BIDS[:n], ASKS[:n], True, True, False, False)]


def _accept_all(p: pl.Planner) -> None:
    key = 0
    for rec in list(p.records()):
        if rec.key is None:
            key += 1
            p.bind(rec, ("k", rec.side, rec.level, key))
        p.on_accepted(rec.key, 0)


# -- Residual at a cap of 0 (blacklisted) ----------------------------------------------------------

def test_long_residual_under_a_cap_of_zero_is_sold_whole_and_ends_flat():
    p = _planner(0, [200, 200])
    assert _plan(p, 150) == [(pl.SUBMIT, pl.ASK, 150, pl.NEW)]  # the residual, not the level's 200
    rec = p.slots[pl.ASK][0]
    p.bind(rec, 1)
    p.on_accepted(1, 0)
    p.on_filled(1, 100, False)  # partly: the rest of the same order is the rest of the position
    assert _plan(p, 50) == []
    p.on_filled(1, 50, True)
    assert _plan(p, 0) == []  # flat under a cap of 0: neither side


def test_short_residual_under_a_cap_of_zero_is_bought_whole():
    p = _planner(0, [200, 200])
    assert _plan(p, -150) == [(pl.SUBMIT, pl.BID, 150, pl.NEW)]
    assert p.allowed_levels(-150, pl.ASK) == 0 and p.first_level_lots(-150, pl.ASK) == 200


def test_a_position_of_at_least_one_order_keeps_full_orders_under_a_cap_of_zero():
    p = _planner(0, [200, 200])
    assert _plan(p, 450) == [(pl.SUBMIT, pl.ASK, 200, pl.NEW), (pl.SUBMIT, pl.ASK, 200, pl.NEW)]
    assert p.first_level_lots(200, pl.ASK) == 200 and p.allowed_levels(200, pl.ASK) == 1


# -- Residual below the venue's minimum --------------------------------------------------------------

def test_a_residual_below_min_qty_is_not_sent_and_the_position_stays():
    """A post-only order below the venue's minimum is refused: the planner does not send it (counted
    in ``skipped`` on every message it is tried, like any such order) and the position stays."""
    p = _planner(0, [200, 200], min_qty=10.0)
    assert p.allowed_levels(5, pl.ASK) == 1 and p.first_level_lots(5, pl.ASK) == 5
    assert _plan(p, 5) == [] and _plan(p, 5, now=1) == []
    assert p.skipped[qm.REASON_MIN_QTY] == 2
    assert _plan(p, 10) == [(pl.SUBMIT, pl.ASK, 10, pl.NEW)]  # at the minimum: sent


def test_a_residual_below_min_notional_is_not_sent():
    p = _planner(0, [200, 200], min_notional=5.0, step=0.0001)  # 4 lots x 0.0001 x 10,003 = 4.0 USDT
    assert _plan(p, 4) == [] and p.skipped[qm.REASON_MIN_NOTIONAL] == 1
    assert _plan(p, 5) == [(pl.SUBMIT, pl.ASK, 5, pl.NEW)]


# -- A cap above 0 ----------------------------------------------------------------------------------

def test_cap_above_zero_with_a_residual_between_the_cap_and_the_cap_plus_one_order():
    """Cap 50, orders of 200. Long 120 (over the cap; a full ask would end at -80, beyond it): the
    residual 120, ends flat. Long 160: a full ask ends at -40, within the cap: one full order, then
    short 40 (within the cap) is bought back whole. Short 120: the mirror."""
    p = _planner(50, [200, 200])
    assert _plan(p, 120) == [(pl.SUBMIT, pl.ASK, 120, pl.NEW)]
    q = _planner(50, [200, 200])
    assert _plan(q, 160) == [(pl.SUBMIT, pl.ASK, 200, pl.NEW)]
    assert q.first_level_lots(-40, pl.BID) == 40 and q.first_level_lots(-40, pl.ASK) == 200
    r = _planner(50, [200, 200])
    assert _plan(r, -120) == [(pl.SUBMIT, pl.BID, 120, pl.NEW)]


def test_a_cap_of_at_least_one_order_is_unchanged():
    p = _planner(200, [200, 200])
    for pos in range(-400, 401, 10):
        for side in (pl.BID, pl.ASK):
            assert p.first_level_lots(pos, side) == 200


# -- Orders that no longer fit level 0 ---------------------------------------------------------------

def test_a_full_order_is_pulled_when_the_cap_falls_under_it_and_the_residual_waits_for_the_cancel():
    p = _planner(1000, [200, 200])
    assert len(_plan(p, 150)) == 4  # both sides, both levels
    _accept_all(p)
    full = p.slots[pl.ASK][0]
    p.set_max_lots(0)  # blacklisted: the 200 ask could end at -50
    acts = _plan(p, 150, now=1)
    assert (pl.CANCEL, pl.ASK, 0, pl.RISK) in acts and full.state == pl.PENDING_CANCEL
    assert not [a for a in acts if a[0] == pl.SUBMIT]  # 150 > room 150 - exposure 400: waits
    assert p.counters["limit_waits"] >= 1
    for rec in list(p.cancelling[pl.ASK]) + list(p.cancelling[pl.BID]):
        p.on_closed(rec.key)
    assert _plan(p, 150, now=2) == [(pl.SUBMIT, pl.ASK, 150, pl.NEW)]


def test_a_residual_order_is_replaced_by_a_full_one_when_the_cap_rises():
    p = _planner(0, [200, 200])
    _plan(p, 150)
    _accept_all(p)
    res = p.slots[pl.ASK][0]
    p.set_max_lots(1000)
    acts = [a for a in _plan(p, 150, now=1) if a[1] == pl.ASK]
    assert acts[:2] == [(pl.CANCEL, pl.ASK, 0, pl.RESIZE), (pl.SUBMIT, pl.ASK, 200, pl.RESIZE)]
    assert res.state == pl.PENDING_CANCEL


def test_a_partly_filled_residual_order_stays():
    p = _planner(0, [200, 200])
    _plan(p, 150)
    _accept_all(p)
    rec = p.slots[pl.ASK][0]
    p.on_filled(rec.key, 60, False)
    assert _plan(p, 90, now=1) == [] and p.slots[pl.ASK][0] is rec


@pytest.mark.parametrize("shortcut", [True, False])
def test_one_level_ladder_misfits_are_acted_on_with_the_settled_shortcut(shortcut):
    """One level: the side's only order at its target is "settled" unless the residual rule says
    otherwise, so the shortcut must look at the order's size too (same actions as the full pass)."""
    p = _planner(0, [200])
    p.settled_shortcut = shortcut
    _plan(p, 150)
    _accept_all(p)
    p.set_max_lots(1000)  # back from the blacklist: the residual order is replaced by a full one
    assert [a for a in _plan(p, 150, now=1) if a[1] == pl.ASK] == [
        (pl.CANCEL, pl.ASK, 0, pl.RESIZE), (pl.SUBMIT, pl.ASK, 200, pl.RESIZE)]
    q = _planner(1000, [200])
    q.settled_shortcut = shortcut
    _plan(q, 250)
    _accept_all(q)
    q.set_max_lots(0)
    _plan(q, 250, now=1)  # a full ask fits (250 - 200 = 50 >= 0): kept
    assert q.slots[pl.ASK][0] is not None and q.slots[pl.ASK][0].state == pl.WORKING
    assert [a for a in _plan(q, 150, now=2) if a[1] == pl.ASK] == [(pl.CANCEL, pl.ASK, 0, pl.RISK)]  # 200 > 150


# -- The strategy's position in lots -------------------------------------------------------------------

def test_position_lots_rounds_towards_zero_within_float_noise():
    assert qm.position_lots(0.29, 1.0 / 0.01) == 29  # 0.29 * 100 = 28.999999999999996
    assert qm.position_lots(-0.29, 1.0 / 0.01) == -29
    assert qm.position_lots(149.6, 1.0) == 149  # never more than the position (rounding: 150)
    assert qm.position_lots(-149.6, 1.0) == -149
    assert qm.position_lots(0.0, 1.0) == 0


# -- Property: filling the reducing orders reaches the cap, never beyond it on the other side ----------

@SETTINGS
@given(levels=st.integers(1, 3), data=st.data())
def test_filling_the_reducing_orders_reaches_the_cap_and_never_flips_beyond_it(levels, data):
    level_lots = data.draw(st.lists(st.integers(1, 300), min_size=levels, max_size=levels))
    cap = data.draw(st.integers(0, 2 * sum(level_lots)))
    pos = data.draw(st.integers(-3 * sum(level_lots) - 5, 3 * sum(level_lots) + 5))
    p = _planner(cap, level_lots)
    now = 0
    while abs(pos) > cap:
        now += 1
        acts = p.plan(now, FAIR, pos, BIDS[:levels], ASKS[:levels], True, True, False, False)
        subs = [a for a in acts if a[0] == pl.SUBMIT]
        reducing = pl.ASK if pos > 0 else pl.BID
        assert subs and all(a[1].side == reducing for a in subs), (pos, cap, level_lots, acts)
        for kind, rec, _ticks, lots, _reason in subs:
            p.bind(rec, now * 10 + rec.level)
            p.on_accepted(rec.key, now)
            before = pos
            pos += lots if rec.side == pl.BID else -lots
            p.on_filled(rec.key, lots, True)
            assert before * pos >= 0 or abs(pos) <= cap, (before, pos, cap, level_lots)  # a flip ends within it
        assert now < 10_000
    assert abs(pos) <= cap


class _Capped(Client):
    """The model venue and strategy stand-in of tests/test_planner.py, starting from a position that
    may exceed the cap: the side that would raise |position| gets nothing while over it."""

    def book(self, move_ticks, dt_ms, allow=(True, True), block=(False, False)):
        p = self.planner
        self._book(move_ticks, dt_ms, allow, block)  # Client.book's check (position within max_lots) becomes:
        assert p.exposure_lots(pl.BID) <= max(0, p.max_lots - self.position)
        assert p.exposure_lots(pl.ASK) <= max(0, p.max_lots + self.position)

    def _book(self, move_ticks, dt_ms, allow, block):
        self.now += dt_ms * MS
        self.fair += move_ticks
        p = self.planner
        for s in (pl.BID, pl.ASK):
            for rec in list(p.cancelling[s]):
                if self.status.get(rec.key) == "closed":
                    p.forget(rec)
                else:
                    rec.cancel_inflight = rec.key in self.pending_cancel
        self.apply(p.retry_cancels(self.now))
        sp = HALF_SPREAD_TICKS
        bids = [self.fair - sp - i for i in range(p.levels)]
        asks = [self.fair + sp + i for i in range(p.levels)]
        self.apply(p.plan(self.now, float(self.fair), self.position, bids, asks, allow[0], allow[1], block[0], block[1]))


@st.composite
def capped_args(draw) -> tuple[dict, int]:
    args = draw(planner_args())
    total, first = sum(args["level_lots"]), args["level_lots"][0]
    args["max_lots"] = draw(st.one_of(st.just(0), st.integers(0, total)))  # below one order too (0: blacklisted)
    # Often within one order of flat: where the residual rule acts.
    return args, draw(st.one_of(st.integers(-first - 1, first + 1), st.integers(-2 * total - 2, 2 * total + 2)))


_B = ("book", 0, 10, True, True, False, False)
_RESIDUAL_ARGS = dict(levels=2, level_lots=[2, 2], max_lots=0, tick=1.0, step=1.0, min_qty=0.0, min_notional=0.0,
                      max_qty=1e9, requote_threshold_bps=0.0, min_time_in_book_ns=0, max_order_age_ns=6e10,
                      stale_price_drift_bps=5.0, use_amend=True)


@SETTINGS
@given(capped_args(), OPS)
@example((_RESIDUAL_ARGS, 1), [_B])
@example((_RESIDUAL_ARGS, -1), [_B, ("arrive", 0), ("fill", 0, 3), _B])
def test_worst_case_position_from_any_start_under_any_cap(capped, ops):
    """The worst-case property of tests/test_planner.py (hostile arrival and delivery orders, fills
    at any time) from a start position that may exceed a cap below one order: the worst-case
    |position| on each side stays within max(cap, that side's start)."""
    args, p0 = capped
    c = _Capped(pl.Planner(**args))
    c.position = c.venue.position = p0
    for op in ops:
        kind = op[0]
        if kind == "book":
            c.book(op[1], op[2], (op[3], op[4]), (op[5], op[6]))
        elif kind == "arrive":
            c.venue.arrive(op[1])
        elif kind == "deliver":
            c.deliver(op[1], op[2])
        elif kind == "fill":
            c.venue.fill(op[1], op[2])
        else:
            c.pull(op[1])
        for side, sign in ((pl.BID, 1), (pl.ASK, -1)):
            wc = c.venue.worst_case(side)
            assert wc <= max(args["max_lots"], sign * p0), (side, wc, args["max_lots"], p0)


# -- The settled shortcut under caps that move (residual, pull, resize) -------------------------------

def _run_twin_capped(args: dict, p0: int, ops: list, shortcut: bool) -> TracingClient:
    p = pl.Planner(**args)
    p.settled_shortcut = shortcut
    c = TracingClient(p)
    c.position = c.venue.position = p0
    for op in ops:
        if op[0] == "cap":
            p.set_max_lots(op[1])
        elif op[0] == "book":
            c.book(op[1], op[2], (op[3], op[4]), (op[5], op[6]), op[7])
        elif op[0] == "settle":
            c.settle()
        elif op[0] == "arrive":
            c.venue.arrive(op[1])
        elif op[0] == "deliver":
            c.deliver(op[1], op[2])
        elif op[0] == "fill":
            c.venue.fill(op[1], op[2])
        else:
            c.pull(op[1])
    c.trace.append((p.counters, p.skipped))
    return c


CAPPED_OPS = st.lists(st.one_of(QUIET_OPS.map(lambda o: o[0]), st.tuples(st.just("cap"), st.integers(0, 9))),
                      min_size=10, max_size=80)


@SETTINGS
@given(capped_args(), CAPPED_OPS)
@example(({**_RESIDUAL_ARGS, "levels": 1, "level_lots": [2]}, 1),  # residual 1, then the cap rises: resize
         [(*_B, 0.0), ("settle",), (*_B, 0.0), ("cap", 9), (*_B, 0.0)])
@example(({**_RESIDUAL_ARGS, "levels": 1, "level_lots": [2], "max_lots": 9}, 1),  # full ask 2, then cap 0: pulled
         [(*_B, 0.0), ("settle",), ("cap", 0), (*_B, 0.0), ("settle",), (*_B, 0.0)])
def test_settled_shortcut_is_the_full_pass_under_moving_caps(capped, ops):
    """As tests/test_planner.py's shortcut property, from any start position, the cap changed at
    any time (to 0 and below one order too): same actions, records and counters with and
    without the shortcut."""
    args, p0 = capped
    fast = _run_twin_capped(args, p0, ops, True)
    full = _run_twin_capped(args, p0, ops, False)
    assert fast.trace == full.trace
