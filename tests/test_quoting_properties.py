"""Property tests (hypothesis) for the pure quoting maths in ``strategies.quoting``.

Every property is written once as a ``check_*`` function taking the implementation under
test. The real implementation must pass it for all generated inputs; a deliberately
broken implementation must make it fail (``test_property_catches_*``), which proves the
property can actually fail and is not vacuous.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from strategies import quoting as qm

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# The sanity runs only need to find one counterexample; shrinking it is wasted time.
SANITY = settings(SETTINGS, max_examples=500, report_multiple_bugs=False, phases=("explicit", "generate"))

TICKS = [1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]
REL_TOL = 1e-9  # relative float tolerance when comparing tick prices with raw prices


# -- Input generators ---------------------------------------------------------------------


@st.composite
def ladder_inputs(draw) -> dict:
    """A fair price, a skew, a spread, a ladder shape and a book near (or crossing) it."""
    tick = draw(st.sampled_from(TICKS))
    fair_ticks = draw(st.floats(20.0, 2e6))
    fair = fair_ticks * tick
    # Book centred within +-1 % of fair so big skews (up to +-1 %) regularly cross it.
    centre = draw(st.integers(int(fair_ticks * 0.99), int(fair_ticks * 1.01) + 1))
    width = draw(st.integers(1, 30))
    return dict(
        fair=fair,
        shift_bps=draw(st.floats(-100.0, 100.0)),
        half_spread=draw(st.floats(0.0, 50.0)),
        spacing_bps=draw(st.floats(0.0, 20.0)),
        levels=draw(st.integers(1, 6)),
        tick=tick,
        best_bid_ticks=centre,
        best_ask_ticks=centre + width,
    )


prices_and_ticks = st.tuples(st.floats(1e-3, 1e6), st.sampled_from(TICKS)).filter(lambda pt: pt[0] / pt[1] < 1e9)


# -- Deliberately broken implementations (for the sanity tests) ----------------------------


def broken_round_bid_nearest(price: float, tick: float) -> int:
    return round(price / tick)  # nearest, not down


def broken_round_ask_nearest(price: float, tick: float) -> int:
    return round(price / tick)  # nearest, not up


def broken_ladder_nearest(fair, shift_bps, half_spread, spacing_bps, levels, tick, best_bid_ticks, best_ask_ticks):
    """Rounds to nearest and trusts the book: no clamp, no monotonic or bid<ask guard."""
    r = fair * (1 + shift_bps * 1e-4)
    bids = [round(r * (1 - (half_spread + i * spacing_bps) * 1e-4) / tick) for i in range(levels)]
    asks = [round(r * (1 + (half_spread + i * spacing_bps) * 1e-4) / tick) for i in range(levels)]
    return bids, asks


def broken_ladder_no_clamp(fair, shift_bps, half_spread, spacing_bps, levels, tick, best_bid_ticks, best_ask_ticks):
    """Correct rounding and spacing, but ignores the book."""
    return qm.ladder_prices(fair, shift_bps, half_spread, spacing_bps, levels, tick, -(10**12), 10**12)


def broken_ladder_no_monotonic(fair, shift_bps, half_spread, spacing_bps, levels, tick, best_bid_ticks, best_ask_ticks):
    """Rounds and clamps each level independently: equal ticks when spacing < 1 tick."""
    bids, asks = [], []
    for i in range(levels):
        off = (half_spread + i * spacing_bps) * 1e-4
        r = fair * (1 + shift_bps * 1e-4)
        b, a = qm.clamp_no_cross(
            qm.round_bid_ticks(r * (1 - off), tick),
            qm.round_ask_ticks(r * (1 + off), tick),
            best_bid_ticks,
            best_ask_ticks,
        )
        bids.append(b)
        asks.append(a)
    return bids, asks


def broken_shift_sign(q, gamma, var_rate, horizon_s):
    return q * gamma * var_rate * horizon_s


def broken_half_spread_no_fee(min_half_spread_bps, k_vol, sigma_bps, fee_floor):
    return max(min_half_spread_bps, k_vol * sigma_bps)


def broken_size_ladder_round_nearest(level_size, size_multiplier, levels, step):
    return [round(level_size * size_multiplier**i / step) for i in range(levels)]


def broken_size_ladder_no_multiplier(level_size, size_multiplier, levels, step):
    return [math.floor(level_size / step + 1e-6)] * levels


# -- Property checks ----------------------------------------------------------------------


def check_bid_below_ask(ladder, a: dict) -> None:
    bids, asks = ladder(**a)
    assert max(bids) < min(asks), (bids, asks)


def check_rounding_directions(round_bid, round_ask, price: float, tick: float) -> None:
    b = round_bid(price, tick)
    k = round_ask(price, tick)
    assert isinstance(b, int) and isinstance(k, int)
    tol = tick * 1e-6 + price * REL_TOL
    assert b * tick <= price + tol, f"bid {b * tick} above {price}"
    assert b * tick > price - tick - tol, f"bid {b * tick} more than a tick below {price}"
    assert k * tick >= price - tol, f"ask {k * tick} below {price}"
    assert k * tick < price + tick + tol, f"ask {k * tick} more than a tick above {price}"


def check_ladder_rounding_outward(ladder, a: dict) -> None:
    """Bids never above their unrounded price, asks never below (rounding/clamps go outward)."""
    bids, asks = ladder(**a)
    r = a["fair"] * (1.0 + a["shift_bps"] * 1e-4)
    for i, (b, k) in enumerate(zip(bids, asks)):
        off = (a["half_spread"] + i * a["spacing_bps"]) * 1e-4
        raw_b = r * (1.0 - off)
        raw_a = r * (1.0 + off)
        tol = a["tick"] * 1e-6 + a["fair"] * REL_TOL
        assert b * a["tick"] <= raw_b + tol, (i, b * a["tick"], raw_b)
        assert k * a["tick"] >= raw_a - tol, (i, k * a["tick"], raw_a)


def check_no_cross(ladder, a: dict) -> None:
    bids, asks = ladder(**a)
    assert all(b < a["best_ask_ticks"] for b in bids), (bids, a["best_ask_ticks"])
    assert all(k > a["best_bid_ticks"] for k in asks), (asks, a["best_bid_ticks"])


def check_ladder_monotonic(ladder, a: dict) -> None:
    bids, asks = ladder(**a)
    assert len(bids) == len(asks) == a["levels"]
    assert all(x > y for x, y in zip(bids, bids[1:])), f"bids not strictly decreasing: {bids}"
    assert all(x < y for x, y in zip(asks, asks[1:])), f"asks not strictly increasing: {asks}"


def check_sizes_follow_multiplier(size_ladder, level_size: float, mult: float, levels: int, step: float) -> None:
    lots = size_ladder(level_size, mult, levels, step)
    assert len(lots) == levels
    for i, n in enumerate(lots):
        want = level_size * mult**i
        tol = step * 1e-6
        assert isinstance(n, int)
        assert n * step <= want + tol, f"level {i}: {n * step} > wanted {want}"
        assert n * step > want - step - tol, f"level {i}: {n * step} more than a step below {want}"
    pairs = list(zip(lots, lots[1:]))
    if mult >= 1.0:
        assert all(x <= y for x, y in pairs), lots
    else:
        assert all(x >= y for x, y in pairs), lots


def check_skew_sign(shift_fn, q: float, gamma: float, var_rate: float, horizon_s: float, a: dict) -> None:
    """Long inventory lowers both quotes, short raises them (raw strictly, ticks weakly)."""
    s_long = shift_fn(q, gamma, var_rate, horizon_s)
    s_short = shift_fn(-q, gamma, var_rate, horizon_s)
    assert s_long < 0.0 < s_short, (s_long, s_short)
    flat = qm.ladder_prices(**{**a, "shift_bps": 0.0})
    longq = qm.ladder_prices(**{**a, "shift_bps": s_long})
    shortq = qm.ladder_prices(**{**a, "shift_bps": s_short})
    for side in (0, 1):
        assert all(lo <= fl <= sh for lo, fl, sh in zip(longq[side], flat[side], shortq[side])), (longq, flat, shortq)


def check_fee_floor(half_spread_fn, min_half: float, k_vol: float, sigma: float, fee_rate: float, a: dict) -> None:
    """Half-spread >= maker fee, and the rounded quotes make a maker round trip non-negative."""
    floor = qm.fee_floor_bps(fee_rate)
    h = half_spread_fn(min_half, k_vol, sigma, floor)
    assert h >= floor, (h, floor)
    bids, asks = qm.ladder_prices(**{**a, "half_spread": h})
    bid_px = bids[0] * a["tick"]
    ask_px = asks[0] * a["tick"]
    f = max(fee_rate, 0.0)
    assert ask_px * (1.0 - f) >= bid_px * (1.0 + f) - a["fair"] * REL_TOL, (bid_px, ask_px, f)


# -- Properties on the real implementation ----------------------------------------------


@SETTINGS
@given(ladder_inputs())
def test_bid_always_below_ask(a):
    check_bid_below_ask(qm.ladder_prices, a)


@SETTINGS
@given(prices_and_ticks)
def test_rounding_directions(pt):
    check_rounding_directions(qm.round_bid_ticks, qm.round_ask_ticks, *pt)


@SETTINGS
@given(ladder_inputs())
def test_ladder_rounds_outward(a):
    check_ladder_rounding_outward(qm.ladder_prices, a)


@SETTINGS
@given(ladder_inputs())
def test_ladder_never_crosses_book(a):
    check_no_cross(qm.ladder_prices, a)


@SETTINGS
@given(ladder_inputs())
def test_ladder_monotonic(a):
    check_ladder_monotonic(qm.ladder_prices, a)


sizes_args = st.tuples(
    st.floats(1e-3, 100.0),
    st.floats(0.25, 4.0),
    st.integers(1, 6),
    st.sampled_from([1e-3, 0.01, 0.1, 1.0]),
)


@SETTINGS
@given(sizes_args)
def test_sizes_follow_multiplier(args):
    check_sizes_follow_multiplier(qm.size_ladder, *args)


skew_args = st.tuples(
    st.floats(0.01, 1.0),  # q
    st.floats(1e-3, 10.0),  # gamma [1/bps]
    st.floats(1e-3, 100.0),  # variance rate [bps^2/s]
    st.floats(0.1, 600.0),  # horizon [s]
)


@SETTINGS
@given(skew_args, ladder_inputs())
def test_skew_sign_avellaneda(args, a):
    check_skew_sign(qm.reservation_shift_bps, *args, a)


@SETTINGS
@given(st.floats(1e-3, 10.0), st.floats(0.1, 1e4), ladder_inputs())
def test_skew_sign_linear(position, slope, a):
    check_skew_sign(lambda q, *_: qm.linear_skew_bps(q, slope), position, 0.0, 0.0, 0.0, a)


@SETTINGS
@given(
    st.floats(0.01, 1.0),
    st.floats(1e-3, 5.0),
    st.floats(0.05, 5.0),
    st.floats(0.05, 10.0),
    st.floats(0.01, 20.0),
    st.floats(0.01, 1.0),
    ladder_inputs(),
)
def test_skew_sign_glft(q, gamma, kappa, a_int, sigma, delta, a):
    def shift(qq, *_):
        return -qm.glft_half_spread_and_skew(gamma, kappa, a_int, sigma, delta, qq)[1]

    check_skew_sign(shift, q, 0.0, 0.0, 0.0, a)


fee_args = st.tuples(
    st.floats(0.0, 10.0),  # min half-spread [bps]
    st.floats(0.0, 5.0),  # k_vol
    st.floats(0.0, 5.0),  # sigma [bps]
    st.floats(-0.0005, 0.002),  # maker fee rate (negative = rebate)
)


@SETTINGS
@given(fee_args, ladder_inputs())
def test_fee_floor_respected(args, a):
    check_fee_floor(qm.half_spread_bps, *args, a)


@SETTINGS
@given(
    st.floats(1e-3, 5.0),
    st.floats(0.05, 5.0),
    st.floats(0.05, 10.0),
    st.floats(0.0, 20.0),
    st.floats(0.01, 1.0),
)
def test_glft_half_spread_positive_and_symmetric_at_zero_inventory(gamma, kappa, a_int, sigma, delta):
    h, skew = qm.glft_half_spread_and_skew(gamma, kappa, a_int, sigma, delta, 0.0)
    assert h > 0.0 and skew == 0.0
    # The first term alone is (1/(gamma*delta)) ln(1 + gamma*delta/kappa) <= 1/kappa.
    assert h >= math.log1p(gamma * delta / kappa) / (gamma * delta) - 1e-12


@SETTINGS
@given(st.floats(1e-3, 1e6), st.floats(1e-6, 1e6), st.floats(1e-3, 1e6), st.floats(1e-6, 1e6))
def test_weighted_mid_within_touch_and_leans_to_thin_side(bid_px, bid_sz, spread, ask_sz):
    ask_px = bid_px + spread
    m = qm.weighted_mid(bid_px, bid_sz, ask_px, ask_sz)
    assert bid_px - 1e-9 * ask_px <= m <= ask_px + 1e-9 * ask_px
    mid = qm.mid_price(bid_px, ask_px)
    imb = qm.book_imbalance(bid_sz, ask_sz)
    if imb > 1e-6:
        assert m >= mid - 1e-9 * ask_px  # more bid size: fair leans to the ask
    elif imb < -1e-6:
        assert m <= mid + 1e-9 * ask_px


@SETTINGS
@given(st.lists(st.tuples(st.floats(-50.0, 50.0), st.floats(0.0, 5e9)), min_size=1, max_size=30), st.floats(1e8, 1e11))
def test_ewma_vol_is_a_weighted_mean_of_return_rates(obs, halflife_ns):
    """S/T lies between the smallest and largest per-observation rate r^2/dt (dt > 0)."""
    s = t = 0.0
    for r, dt in obs:
        s, t = qm.ewma_vol_update(s, t, r, dt, halflife_ns)
    rates = [r * r / dt for r, dt in obs if dt > 0]
    if t > 0 and all(dt > 0 for _, dt in obs):
        rate = s / t
        assert min(rates) * (1 - 1e-9) - 1e-300 <= rate <= max(rates) * (1 + 1e-9) + 1e-300


# -- Sanity: each property fails for a deliberately broken function ------------------------


def _expect_failure(prop) -> None:
    with pytest.raises(AssertionError):
        prop()


def test_property_catches_bid_not_below_ask():
    _expect_failure(SANITY(given(ladder_inputs())(lambda a: check_bid_below_ask(broken_ladder_nearest, a))))


def test_property_catches_wrong_bid_rounding():
    _expect_failure(
        SANITY(given(prices_and_ticks)(lambda pt: check_rounding_directions(broken_round_bid_nearest, qm.round_ask_ticks, *pt))),
    )


def test_property_catches_wrong_ask_rounding():
    _expect_failure(
        SANITY(given(prices_and_ticks)(lambda pt: check_rounding_directions(qm.round_bid_ticks, broken_round_ask_nearest, *pt))),
    )


def test_property_catches_ladder_rounding_inward():
    _expect_failure(SANITY(given(ladder_inputs())(lambda a: check_ladder_rounding_outward(broken_ladder_nearest, a))))


def test_property_catches_crossing_ladder():
    _expect_failure(SANITY(given(ladder_inputs())(lambda a: check_no_cross(broken_ladder_no_clamp, a))))


def test_property_catches_non_monotonic_ladder():
    _expect_failure(SANITY(given(ladder_inputs())(lambda a: check_ladder_monotonic(broken_ladder_no_monotonic, a))))


def test_property_catches_sizes_rounded_up():
    _expect_failure(SANITY(given(sizes_args)(lambda x: check_sizes_follow_multiplier(broken_size_ladder_round_nearest, *x))))


def test_property_catches_sizes_ignoring_multiplier():
    _expect_failure(SANITY(given(sizes_args)(lambda x: check_sizes_follow_multiplier(broken_size_ladder_no_multiplier, *x))))


def test_property_catches_flipped_skew():
    _expect_failure(SANITY(given(skew_args, ladder_inputs())(lambda x, a: check_skew_sign(broken_shift_sign, *x, a))))


def test_property_catches_missing_fee_floor():
    _expect_failure(SANITY(given(fee_args, ladder_inputs())(lambda x, a: check_fee_floor(broken_half_spread_no_fee, *x, a))))


# -- A few exact values -------------------------------------------------------------------


def test_exact_values():
    assert qm.weighted_mid(100.0, 3.0, 101.0, 1.0) == pytest.approx(100.75)
    assert qm.book_imbalance(9.0, 1.0) == pytest.approx(0.8)
    assert qm.fee_floor_bps(0.0002) == pytest.approx(2.0)
    assert qm.fee_floor_bps(-0.0001) == 0.0
    assert qm.half_spread_bps(1.0, 2.0, 3.0, 2.0) == pytest.approx(6.0)
    assert qm.round_bid_ticks(100000.3, 0.1) == 1000003  # 100000.3 / 0.1 = 1000002.99999...
    assert qm.round_ask_ticks(100000.3, 0.1) == 1000003
    assert qm.reservation_shift_bps(0.5, 0.1, 0.72, 60.0) == pytest.approx(-2.16)
    assert qm.linear_skew_bps(-0.002, 1000.0) == pytest.approx(2.0)
    # One return of 1 bps over 1 s: variance rate 1 bps^2/s, sigma over 4 s = 2 bps.
    s, t = qm.ewma_vol_update(0.0, 0.0, 1.0, 1e9, 3e10)
    assert qm.variance_rate_bps2_per_s(s, t) == pytest.approx(1.0)
    assert qm.vol_bps(s, t, 4e9) == pytest.approx(2.0)
    # After one half-life without movement, old observations weigh half: S/T = (1/2) / (1/2 + 1) per s.
    s2, t2 = qm.ewma_vol_update(s, t, 0.0, 3e10, 3e10)
    assert qm.variance_rate_bps2_per_s(s2, t2) == pytest.approx(0.5 / (0.5 + 30.0))
    # GLFT: gamma=0.1, kappa=0.5, A=1, sigma=1, delta=0.1, q=1
    h, sk = qm.glft_half_spread_and_skew(0.1, 0.5, 1.0, 1.0, 0.1, 1.0)
    c1 = math.log(1.02) / 0.01
    c2 = math.sqrt(0.1 / (2 * 1.0 * 0.1 * 0.5) * 1.02 ** (51.0))
    assert h == pytest.approx(c1 + 0.05 * c2)
    assert sk == pytest.approx(c2)
    assert qm.min_rule_violation(1, 0.001, 1000.0, 0.001, 5.0) == "min_notional"
    assert qm.min_rule_violation(0, 0.001, 100000.0, 0.001, 5.0) == "min_qty"
    assert qm.passes_min_rules(1, 0.001, 100000.0, 0.001, 5.0)
    assert qm.inventory_allowed_levels(0.0, 0.002, [0.001, 0.001, 0.001], True) == 2
    assert qm.inventory_allowed_levels(0.001, 0.002, [0.001, 0.001, 0.001], True) == 1
    assert qm.inventory_allowed_levels(0.001, 0.002, [0.001, 0.001, 0.001], False) == 3


def test_should_requote_rules():
    ms = 1_000_000
    base = dict(
        tick=0.1,
        fair=100000.0,
        placed_fair=100000.0,
        requote_threshold_bps=1.0,
        min_time_in_book_ns=250 * ms,
        max_order_age_ns=60_000 * ms,
        stale_price_drift_bps=5.0,
    )
    # same price -> keep, whatever the age
    assert qm.should_requote(10**12, 0, 100, 100, **base) == qm.KEEP
    # 5 ticks = 0.5 USD = 0.05 bps move, within threshold, young -> keep
    assert qm.should_requote(1000 * ms, 0, 100, 105, **base) == qm.KEEP
    # same, but older than max age -> move
    assert qm.should_requote(61_000 * ms, 0, 100, 105, **base) == qm.MOVE
    # 200 ticks = 20 USD = 2 bps > threshold -> move, but not before min time in book
    assert qm.should_requote(100 * ms, 0, 100, 300, **base) == qm.KEEP
    assert qm.should_requote(300 * ms, 0, 100, 300, **base) == qm.MOVE
    # fair drifted 6 bps since placement -> pull even inside min time in book
    assert qm.should_requote(1 * ms, 0, 100, 700, **{**base, "fair": 100060.0}) == qm.PULL_STALE
