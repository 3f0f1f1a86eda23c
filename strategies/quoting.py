"""Pure quoting maths for the mmbot market maker.

Everything here is a small typed function on Python floats/ints, without Nautilus
objects, ``Decimal``, logging or I/O, so it can run once per order-book message and be
property-tested in isolation. The strategy (``strategies.market_maker``) only wires these
functions to the engine.

Units used throughout (the names say which one applies):

- ``*_px``, ``fair``: prices in quote currency (USDT for Bybit linear perpetuals), floats.
- ``*_ticks``: prices as integer multiples of the instrument's ``tick`` (price increment).
  ``ticks * tick`` is the price. Bids and asks inside the hot path are tick integers.
- ``*_lots``: sizes as integer multiples of the instrument's size ``step``.
- ``*_sz``, ``qty``, ``position``: sizes in base units (BTC for BTCUSDT), floats.
- ``*_bps``: basis points, 1 bps = 1e-4 = 0.01 % of a price (relative, never absolute).
- ``*_ns``: nanoseconds (Nautilus clock / event timestamps); ``*_ms`` milliseconds,
  ``*_s`` seconds.
- Variances of log returns are in bps² (squared basis points); a *variance rate* is in
  bps² per second, so ``sigma_bps_over(T) = sqrt(rate * T)``.
- ``q``: normalised inventory, ``position / max_position`` clipped to [-1, 1].
"""

from __future__ import annotations

import math

BPS: float = 1e-4
"""One basis point as a fraction."""

NS_PER_S: float = 1e9
NS_PER_MS: int = 1_000_000

TICK_EPS: float = 1e-6
"""Tolerance, in ticks (or lots), for float noise when snapping to the grid.

``100000.3 / 0.1`` is ``1000002.9999999999`` in binary floating point; flooring that
would move a bid a whole tick too low. A value within ``TICK_EPS`` of a grid point is
treated as on it. The resulting error (at most 1e-6 tick) is far below any price
precision an exchange uses.
"""

_LN2: float = math.log(2.0)

# Decisions returned by ``should_requote``.
KEEP: int = 0
"""Leave the resting order alone (keeps queue priority)."""
MOVE: int = 1
"""Re-price the order to the new target (amend, or cancel and replace)."""
PULL_STALE: int = 2
"""Fair price drifted beyond the stale limit: cancel at once (overrides min time in book)."""

# Reasons returned by ``min_rule_violation`` (also the keys of ``skipped_orders``).
REASON_MIN_QTY: str = "min_qty"
REASON_MIN_NOTIONAL: str = "min_notional"
REASON_MAX_QTY: str = "max_qty"
REASON_MIN_PRICE: str = "min_price"
SKIP_REASONS: tuple[str, ...] = (REASON_MIN_QTY, REASON_MIN_NOTIONAL, REASON_MAX_QTY, REASON_MIN_PRICE)


# -- Fair price ---------------------------------------------------------------------------


def mid_price(bid_px: float, ask_px: float) -> float:
    """Arithmetic mid of the best bid and ask (price units)."""
    return 0.5 * (bid_px + ask_px)


def weighted_mid(bid_px: float, bid_sz: float, ask_px: float, ask_sz: float) -> float:
    """Size-weighted mid of the top of book (price units).

    ``(bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz)``: a large bid size
    (buying pressure) pulls the fair price towards the ask and vice versa. Sizes are in
    base units; only their ratio matters. Falls back to the mid when both sizes are zero.
    The result always lies in ``[bid_px, ask_px]``.

    This is often called "microprice"; Stoikov's micro-price (2018) is a different estimator
    (the expected mid at a horizon, from a fitted function of imbalance and spread).
    """
    total = bid_sz + ask_sz
    if total <= 0.0:
        return 0.5 * (bid_px + ask_px)
    return (bid_px * ask_sz + ask_px * bid_sz) / total


def book_imbalance(bid_sz: float, ask_sz: float) -> float:
    """Top-of-book imbalance ``(bid_sz - ask_sz) / (bid_sz + ask_sz)``, in [-1, 1].

    Sign convention: positive = more size on the bid = buying pressure (price more likely
    to tick up); negative = selling pressure. 0.0 when both sizes are zero.
    """
    total = bid_sz + ask_sz
    if total <= 0.0:
        return 0.0
    return (bid_sz - ask_sz) / total


# -- Volatility ---------------------------------------------------------------------------


def ewma_vol_update(
    sum_sq_bps2: float,
    sum_dt_ns: float,
    log_ret_bps: float,
    dt_ns: float,
    halflife_ns: float,
) -> tuple[float, float]:
    """One step of the time-aware EWMA of squared mid log-returns.

    State is two decayed sums: ``S`` (squared log returns, bps²) and ``T`` (elapsed time,
    ns). A new observation -- the mid log return ``r`` (bps) over the last ``dt`` ns --
    first decays both sums by ``w = 2 ** (-dt / halflife)`` and then adds itself::

        S <- w * S + r**2
        T <- w * T + dt

    ``S / T`` is the exponentially time-weighted realised variance *rate* (bps² per ns),
    with weights halving every ``halflife_ns`` of elapsed time regardless of how many
    messages arrived (time-aware, unlike a per-sample EWMA). Zero-return messages count:
    they add elapsed time and so lower the rate. ``dt_ns <= 0`` (same timestamp) adds
    the squared return without decay or elapsed time.

    Returns the new ``(S, T)``.
    """
    if dt_ns > 0.0:
        w = math.exp(-_LN2 * dt_ns / halflife_ns)
        return w * sum_sq_bps2 + log_ret_bps * log_ret_bps, w * sum_dt_ns + dt_ns
    return sum_sq_bps2 + log_ret_bps * log_ret_bps, sum_dt_ns


def variance_rate_bps2_per_s(sum_sq_bps2: float, sum_dt_ns: float) -> float:
    """Variance rate of mid log returns in bps² per second from the EWMA state (0 if empty)."""
    if sum_dt_ns <= 0.0:
        return 0.0
    return sum_sq_bps2 / sum_dt_ns * NS_PER_S


def vol_bps(sum_sq_bps2: float, sum_dt_ns: float, horizon_ns: float) -> float:
    """Volatility in bps of mid log returns over ``horizon_ns``: ``sqrt(S / T * horizon)``.

    This is what the strategy reports as ``sigma_bps`` ("bps per sqrt(vol_horizon)").
    """
    if sum_dt_ns <= 0.0:
        return 0.0
    return math.sqrt(sum_sq_bps2 / sum_dt_ns * horizon_ns)


# -- Inventory skew -----------------------------------------------------------------------


def normalised_inventory(position: float, max_position: float) -> float:
    """``q = position / max_position`` clipped to [-1, 1] (both in base units)."""
    q = position / max_position
    if q > 1.0:
        return 1.0
    if q < -1.0:
        return -1.0
    return q


def reservation_shift_bps(q: float, gamma: float, var_rate_bps2_per_s: float, horizon_s: float) -> float:
    """Avellaneda–Stoikov inventory shift of the quote centre, in bps of fair.

    ``r = fair - q * gamma * sigma**2 * tau`` written relative to fair:
    ``shift_bps = -q * gamma * sigma_bps**2 * tau`` with ``q`` normalised inventory
    (dimensionless, [-1, 1]), ``gamma`` the risk aversion in 1/bps, ``sigma_bps**2`` the
    variance rate in bps²/s and ``tau`` the horizon in seconds. ``gamma * sigma² * tau``
    has units 1/bps * bps² = bps. Long inventory (q > 0) gives a negative shift (both
    quotes lower), short a positive one.
    """
    return -q * gamma * var_rate_bps2_per_s * horizon_s


def reservation_price(fair: float, q: float, gamma: float, var_rate_bps2_per_s: float, horizon_s: float) -> float:
    """Avellaneda–Stoikov reservation price in price units: ``fair * (1 + shift_bps * 1e-4)``."""
    return fair * (1.0 + reservation_shift_bps(q, gamma, var_rate_bps2_per_s, horizon_s) * BPS)


def linear_skew_bps(position: float, skew_bps_per_unit: float) -> float:
    """Linear inventory shift in bps of fair: ``-position * skew_bps_per_unit``.

    ``position`` in base units (signed), ``skew_bps_per_unit`` in bps per base unit.
    """
    return -position * skew_bps_per_unit


# -- Half-spread --------------------------------------------------------------------------


def fee_floor_bps(maker_fee_rate: float) -> float:
    """Smallest half-spread (bps) that keeps a maker round trip non-negative.

    Buying at ``r(1-h)`` and selling at ``r(1+h)`` with maker fee ``f`` on both legs
    earns ``r(1+h)(1-f) - r(1-h)(1+f) = 2r(h - f)``, so ``h >= f``. ``maker_fee_rate`` is a fraction (0.0002 = 2 bps).
    A rebate (negative fee) gives a floor of 0.
    """
    return maker_fee_rate / BPS if maker_fee_rate > 0.0 else 0.0


def half_spread_bps(min_half_spread_bps: float, k_vol: float, sigma_bps: float, fee_floor: float) -> float:
    """Volatility half-spread: ``max(min_half_spread_bps, k_vol * sigma_bps, fee_floor)`` (bps)."""
    h = k_vol * sigma_bps
    if h < min_half_spread_bps:
        h = min_half_spread_bps
    if h < fee_floor:
        h = fee_floor
    return h


def glft_half_spread_and_skew(
    gamma: float,
    kappa: float,
    a: float,
    sigma_bps: float,
    delta: float,
    q: float,
) -> tuple[float, float]:
    """Guéant (2017) asymptotic closed-form quotes (GLFT), in bps.

    Model: fills arrive at distance ``d`` bps from the reference price with intensity
    ``A * exp(-kappa * d)``; orders have size ``delta`` (in the same inventory units as
    ``q``, here fractions of ``max_position``); risk aversion ``gamma`` (= xi) in
    1/(bps * inventory unit); ``sigma_bps`` is the volatility in bps per sqrt(second);
    ``A`` in 1/s, ``kappa`` in 1/bps. Guéant's approximations (with xi = gamma)::

        c1 = 1 / (gamma * delta) * ln(1 + gamma * delta / kappa)
        c2 = sigma * sqrt(gamma / (2 * A * delta * kappa)
                          * (1 + gamma * delta / kappa) ** (kappa / (gamma * delta) + 1))
        delta_bid(q) = c1 + (2q + delta) / 2 * c2
        delta_ask(q) = c1 - (2q - delta) / 2 * c2

    so the half-spread is ``(delta_bid + delta_ask) / 2 = c1 + delta / 2 * c2`` and the
    quote centre moves by ``(delta_ask - delta_bid) / 2 = -q * c2``.

    Returns ``(half_spread_bps, skew_bps)`` where ``skew_bps = q * c2`` is the amount the
    centre is moved *down* (the strategy shifts by ``-skew_bps``). ``gamma``, ``kappa``,
    ``a`` and ``delta`` must be > 0.
    """
    gd = gamma * delta
    x = gd / kappa
    c1 = math.log1p(x) / gd
    c2 = sigma_bps * math.sqrt(gamma / (2.0 * a * delta * kappa) * (1.0 + x) ** (1.0 / x + 1.0))
    return c1 + 0.5 * delta * c2, q * c2


# -- Tick / lot rounding ------------------------------------------------------------------


def round_bid_ticks(price: float, tick: float) -> int:
    """Bid price rounded *down* to the tick grid, as an integer number of ticks."""
    return math.floor(price / tick + TICK_EPS)


def round_ask_ticks(price: float, tick: float) -> int:
    """Ask price rounded *up* to the tick grid, as an integer number of ticks."""
    return math.ceil(price / tick - TICK_EPS)


def price_to_ticks(price: float, tick: float) -> int:
    """Nearest tick integer of a price already on the grid (e.g. a book level)."""
    return round(price / tick)


def clamp_no_cross(bid_ticks: int, ask_ticks: int, best_bid_ticks: int, best_ask_ticks: int) -> tuple[int, int]:
    """Clamp a bid/ask pair so neither crosses the book (all in ticks).

    The bid becomes at most ``best_ask - 1`` and the ask at least ``best_bid + 1``: a
    post-only order priced there rests passively instead of being rejected (or filling
    as taker). Clamping only ever lowers the bid and raises the ask.
    """
    if bid_ticks >= best_ask_ticks:
        bid_ticks = best_ask_ticks - 1
    if ask_ticks <= best_bid_ticks:
        ask_ticks = best_bid_ticks + 1
    return bid_ticks, ask_ticks


def ladder_prices(
    fair: float,
    shift_bps: float,
    half_spread: float,
    spacing_bps: float,
    levels: int,
    tick: float,
    best_bid_ticks: int,
    best_ask_ticks: int,
) -> tuple[list[int], list[int]]:
    """Bid and ask ladders in integer ticks, best level first.

    Level ``i`` (0-based) sits ``d_i = half_spread + i * spacing_bps`` bps either side of the
    reservation price ``r = fair * (1 + shift_bps * 1e-4)`` (so the half-spread is in bps of
    ``r``, which makes the fee-floor argument exact)::

        bid_i = r * (1 - d_i * 1e-4)   (rounded down to the tick)
        ask_i = r * (1 + d_i * 1e-4)   (rounded up to the tick)

    Guarantees, whatever the inputs:

    - no cross with the book: every bid < ``best_ask_ticks``, every ask > ``best_bid_ticks``
      (the first level is clamped to ``best_ask - 1`` / ``best_bid + 1``);
    - strictly monotonic: ``bid_0 > bid_1 > ...`` and ``ask_0 < ask_1 < ...`` (levels that
      would round onto the same tick are pushed one tick further out);
    - ``bid_0 < ask_0`` (with a zero half-spread the ask is put one tick above the bid);
    - bids are never above their unrounded price and asks never below (only outward moves).
    """
    bids: list[int] = []
    asks: list[int] = []
    r = fair * (1.0 + shift_bps * BPS) / tick  # reservation price in (fractional) ticks
    prev_b = best_ask_ticks
    prev_a = best_bid_ticks
    for i in range(levels):
        off = (half_spread + i * spacing_bps) * BPS
        b = math.floor(r * (1.0 - off) + TICK_EPS)
        a = math.ceil(r * (1.0 + off) - TICK_EPS)
        if b >= prev_b:
            b = prev_b - 1
        if a <= prev_a:
            a = prev_a + 1
        if i == 0 and a <= b:
            a = b + 1
        bids.append(b)
        asks.append(a)
        prev_b = b
        prev_a = a
    return bids, asks


def position_lots(position: float, inv_step: float) -> int:
    """Signed position in whole lots of the size step, rounded towards zero (``TICK_EPS`` absorbs
    float noise: 0.15 BTC at a step of 0.001 is 150 lots, not int(149.99999999999997) = 149).

    Towards zero, not to the nearest: the reducing side's residual order is sized to it
    (``planner.Planner.first_level_lots``), and an order larger than the position would flip it
    (and is denied under a hard portfolio breach). A venue position is a whole number of lots,
    where both roundings agree."""
    n = math.floor(abs(position) * inv_step + TICK_EPS)
    return n if position >= 0.0 else -n


def size_ladder(level_size: float, size_multiplier: float, levels: int, step: float) -> list[int]:
    """Order size per level in integer lots of ``step``, best level first.

    Level ``i`` wants ``level_size * size_multiplier ** i`` base units, rounded *down* to
    the size step (an order is never larger than configured). A level may round to 0 lots;
    the exchange-rule check then skips it.
    """
    inv_step = 1.0 / step
    return [math.floor(level_size * size_multiplier**i * inv_step + TICK_EPS) for i in range(levels)]


def inventory_allowed_levels(position: float, max_position: float, level_qty: list[float], buy: bool) -> int:
    """How many levels of one side may rest without breaching the inventory limit.

    Level ``i`` is allowed while ``position + sum(level_qty[:i+1]) <= max_position`` for
    bids (``position - ... >= -max_position`` for asks), i.e. even if every resting order
    of the side filled, ``|position|`` would stay within ``max_position``. All in base
    units; a relative tolerance of 1e-9 absorbs float noise.
    """
    eps = max_position * 1e-9
    n = 0
    if buy:
        room = max_position - position + eps
    else:
        room = max_position + position + eps
    cum = 0.0
    for qty in level_qty:
        cum += qty
        if cum > room:
            break
        n += 1
    return n


# -- Exchange rules -----------------------------------------------------------------------


def min_rule_violation(
    lots: int,
    step: float,
    price: float,
    min_qty: float,
    min_notional: float,
    max_qty: float = math.inf,
) -> str | None:
    """Which exchange rule an order of ``lots`` lots at ``price`` breaks, or ``None``.

    Checked in order: price > 0 (``"min_price"``), ``qty >= min_qty`` (``"min_qty"``),
    ``qty <= max_qty`` (``"max_qty"``), ``qty * price >= min_notional``
    (``"min_notional"``, quote currency). ``qty = lots * step`` base units. Pass
    ``min_notional = 0`` / ``max_qty = inf`` when the instrument has no such rule.
    """
    if price <= 0.0:
        return REASON_MIN_PRICE
    qty = lots * step
    tol = step * TICK_EPS
    if qty < min_qty - tol or lots <= 0:
        return REASON_MIN_QTY
    if qty > max_qty + tol:
        return REASON_MAX_QTY
    if qty * price < min_notional * (1.0 - 1e-12):
        return REASON_MIN_NOTIONAL
    return None


def passes_min_rules(
    lots: int,
    step: float,
    price: float,
    min_qty: float,
    min_notional: float,
    max_qty: float = math.inf,
) -> bool:
    """``True`` when ``min_rule_violation`` finds nothing (see there for the rules)."""
    return min_rule_violation(lots, step, price, min_qty, min_notional, max_qty) is None


# -- Order lifecycle ----------------------------------------------------------------------


def drift_bps(reference: float, now: float) -> float:
    """Absolute relative move from ``reference`` to ``now`` in bps."""
    return abs(now - reference) / reference / BPS


def should_requote(
    now_ns: int,
    live_since_ns: int,
    order_ticks: int,
    target_ticks: int,
    tick: float,
    fair: float,
    placed_fair: float,
    requote_threshold_bps: float,
    min_time_in_book_ns: int,
    max_order_age_ns: float,
    stale_price_drift_bps: float,
) -> int:
    """Decide what to do with a resting (accepted) quote. Returns KEEP, MOVE or PULL_STALE.

    Rules, first match wins:

    1. target price == order price (same tick) -> KEEP (nothing to change).
    2. fair moved more than ``stale_price_drift_bps`` since the quote's price was chosen
       (``placed_fair``) -> PULL_STALE: cancel now, *even before* the minimum time in book.
    3. order live for less than ``min_time_in_book_ns`` (since accepted / last amended)
       -> KEEP.
    4. ``|target - order| * tick / fair`` within ``requote_threshold_bps`` and the order
       younger than ``max_order_age_ns`` -> KEEP (queue priority is worth more).
    5. otherwise -> MOVE (amend, or cancel and replace).

    Times in ns (engine clock), prices in ticks, thresholds in bps.
    """
    if target_ticks == order_ticks:
        return KEEP
    if abs(fair - placed_fair) > stale_price_drift_bps * BPS * placed_fair:
        return PULL_STALE
    age = now_ns - live_since_ns
    if age < min_time_in_book_ns:
        return KEEP
    if abs(target_ticks - order_ticks) * tick <= requote_threshold_bps * BPS * fair and age < max_order_age_ns:
        return KEEP
    return MOVE
