"""Seeded synthetic Bybit v5 public-feed recordings (order book + trades) for backtests and tests.

Output is an mmbot recording: one raw Bybit public WebSocket message per line plus the
``local_ts_ns`` receive time, lines in receive order (``.jsonl``, or ``.jsonl.gz`` written
byte-deterministically). The model and where each parameter comes from: docs/data.md
("The synthetic generator"). In short, in continuous time (seconds), prices in integer ticks,
sizes in integer lots:

* **Efficient price** ``p`` (ticks, float): a random walk with ``vol_bps_per_min`` (scaled by a
  slow activity regime) plus a permanent impact of every taker order. The book follows it.
* **Taker orders**: a two-kernel Hawkes process (bursty: inter-arrival CV > 1, Fano factor > 1);
  side persists within bursts and leans towards ``p`` (``P(buy) = 1 / (1 + exp(-side_lean * z))``,
  ``z = p - mid`` in ticks); sizes lognormal (heavy tail). Each order walks the book from the
  touch up to an IOC limit at the ``MAX_SWEEP_LEVELS``-th level of the last *published* book and
  prints one trade per maker order it meets.
* **Touch queues** (queue-reactive, large tick): per side, limit adds at ``touch_adds_per_s`` and
  cancels at ``touch_cancels_per_s * q / touch_size`` (``q`` the queue in lots), both tilted by
  ``exp(+-queue_lean * z)`` so that the side ``p`` moves towards thins out. A queue that empties
  moves the touch; a spread wider than one tick is refilled at ``refill_per_s`` per missing tick,
  by the side ``p`` favours. Queue position therefore decides fills at the touch.
* **Quote repositioning** (small tick): when ``|z|`` exceeds ``catch_up_ticks`` the whole book
  re-centres on ``p`` (levels that would cross are cancelled, the gap is refilled).
* **Deeper levels**: ``deep_events_per_s`` resizes / cancels / inserts, biased towards the touch.
* **Feed**: the book is published every ``FEED_CADENCE_MS[depth]`` ms (Bybit's push interval for
  that depth) as the exact diff against the previously published ``depth`` levels per side
  (none when nothing changed, as on Bybit); a push at exchange time ``ts`` reflects every matching event up to and including ``ts`` (``cts``
  = the last one, ``seq`` = its sequence number), and no trade shares a millisecond with a push.
  Trades carry their match time ``T`` and the same ``seq`` counter.
* **Receive times**: each stream has its own feed latency (book: publication delay + network;
  trades: push delay + network), FIFO within a stream, so a trade is received sometimes before
  and sometimes after the book push that reflects it. Lines are written in receive order.

One extra snapshot (a simulated resubscribe) is emitted half way through.

CLI::

    python -m tools.gen_synthetic --symbol XRPUSDT --start 2024-12-01T07:30:00Z \\
        --minutes 60 --seed 7 --depth 50 --out data/XRPUSDT.jsonl.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import heapq
import math
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

DEFAULT_START = "2024-12-01T07:30:00Z"
# Bybit v5 push interval per order-book depth for linear perpetuals (docs: "Orderbook", Depths).
FEED_CADENCE_MS = {50: 20, 200: 100, 500: 100, 1000: 200}
MAX_SWEEP_LEVELS = 3  # deepest level of the last published book a taker order reaches (IOC limit price)
EXTRA_LEVELS = 10  # levels kept beyond the published window, so levels can enter it
NS_PER_MS = 1_000_000
NS_PER_US = 1_000


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Instrument filters and the generator's calibration for one symbol.

    Sizes in base units (XRP, BTC), rates per second, price scales in bps or ticks as named.
    The tick regime follows from ``tick_size / start_mid`` and the flow parameters: a large-tick
    instrument has a touch that persists (queues matter), a small-tick one re-centres often.
    """

    symbol: str
    tick_size: float
    price_scale: int  # decimals Bybit prints prices with (priceScale)
    qty_step: float
    min_qty: float
    start_mid: float
    touch_size: float  # median size of a fresh touch level; also the cancel-rate reference queue
    depth_size: float  # median size of a level one tick behind the touch (deeper: x d^0.43)
    order_size: float  # median taker order size
    order_sigma: float = 1.6  # lognormal sigma of taker order sizes (heavy tail)
    orders_per_s: float = 4.0  # long-run mean taker order rate
    vol_bps_per_min: float = 2.5  # efficient price, std of 1-minute returns
    impact_ticks: float = 0.05  # permanent efficient-price move per median taker order (sqrt law)
    side_lean: float = 1.5  # logit slope of P(taker buy) in z = p - mid (ticks)
    queue_lean: float = 1.0  # log-slope of touch add/cancel rates in z
    touch_adds_per_s: float = 6.0  # per side
    touch_cancels_per_s: float = 5.0  # per side, at a queue of touch_size
    churn_size: float = 0.0  # median add/cancel size at the touch (0 = touch_size / 6)
    refill_per_s: float = 300.0  # per missing tick while the spread is wider than one tick
    refill_lean: float = 4.0  # logit slope of P(the refill is a bid) in z = p - mid (ticks)
    deep_events_per_s: float = 160.0  # both sides, levels behind the touch
    deep_mean_ticks: float = 8.0  # mean distance (ticks) of a deep event behind the touch, minus one
    catch_up_ticks: float = 1.5  # |p - mid| (ticks) beyond which the book re-centres on p
    occupancy_near: float = 0.95  # share of ticks just behind the touch that hold a level
    occupancy_far: float = 0.3  # ... far behind it
    occupancy_scale_ticks: float = 12.0  # e-folding distance between the two

    def occupancy(self, d: int) -> float:
        """Probability that the tick ``d`` ticks behind the touch holds a level (the deep-book
        events keep this stationary)."""
        return self.occupancy_far + (self.occupancy_near - self.occupancy_far) * math.exp(-d / self.occupancy_scale_ticks)

    def level_median(self, d: int) -> float:
        """Median size (base units) of a level ``d`` ticks behind the touch: ``touch_size`` at
        the touch, ``depth_size * d**0.43`` behind it (the real XRPUSDT book: levels 2-5 ~1x,
        6-10 ~2x, 21-50 ~3x the level-1 size)."""
        return self.touch_size if d == 0 else self.depth_size * d**0.43

    @property
    def qty_decimals(self) -> int:
        return max(0, -int(math.floor(math.log10(self.qty_step) + 1e-9)))

    @property
    def tick_units(self) -> int:
        """Tick size in units of 10**-price_scale (BTCUSDT: 0.10 -> 10)."""
        return round(self.tick_size * 10**self.price_scale)

    @property
    def step_units(self) -> int:
        """Qty step in units of 10**-qty_decimals (BTCUSDT: 0.001 -> 1)."""
        return round(self.qty_step * 10**self.qty_decimals)

    @property
    def tick_bps(self) -> float:
        return self.tick_size / self.start_mid * 1e4

    def lots(self, size: float) -> int:
        return max(1, round(size / self.qty_step))


INSTRUMENTS: dict[str, InstrumentSpec] = {
    # Large tick (1 tick = 0.51 bps): the spread is one tick and the touch persists for seconds,
    # so queue position decides passive fills. Where each number comes from (docs/data.md):
    # - filters: the shipped instrument definition (adapters/definitions);
    # - start mid, book shape: the real XRPUSDT ob500 sample (touch 1.9531/1.9532, level-1 mean
    #   7,492 XRP, a level at every tick for 500 ticks, levels 6-10 ~2x level 1); touch_size,
    #   depth_size, churn_size and the touch rates are tuned until the generated stream shows
    #   those statistics (tools/data_stats.py --compare);
    # - taker flow (4 orders/s, median 250 XRP): an assumption, no real XRP trades in the
    #   fixtures; sigma 2.0 gives the Binance sample's heavy tail (p99 ~100x the median print);
    # - vol 2.5 bps/min: an assumption near the real sample's 3.0 (1-s returns over 5 s).
    "XRPUSDT": InstrumentSpec(
        "XRPUSDT", 0.0001, 4, 1.0, 1.0, 1.95315, touch_size=4_500.0, depth_size=3_800.0, order_size=250.0,
        order_sigma=2.0, orders_per_s=4.0, vol_bps_per_min=2.5, churn_size=1_000.0, catch_up_ticks=1.5,
        deep_events_per_s=160.0, deep_mean_ticks=6.0,
        occupancy_near=0.995, occupancy_far=0.995,
    ),
    # Small tick (1 tick = 0.015 bps): the book re-centres on the efficient price many times a
    # second and has holes between levels. Sizes as in the earlier calibration (touch ~1.2 BTC,
    # median order 0.012 BTC); ~20 orders/s (~22 prints/s) is an assumption for "tens of prints
    # per second" on Bybit's BTCUSDT perp (the Binance spot sample prints 43/s).
    "BTCUSDT": InstrumentSpec(
        "BTCUSDT", 0.10, 2, 0.001, 0.001, 67_000.05, touch_size=1.2, depth_size=0.9, order_size=0.012,
        order_sigma=2.0, orders_per_s=20.0, vol_bps_per_min=3.0, impact_ticks=0.5, churn_size=0.3,
        catch_up_ticks=4.0, deep_events_per_s=100.0,
    ),
    # Mid tick (1 tick = 0.23 bps at 0.43 USDT, DOGE on 2024-12-01): the spread is 1-3 ticks, the
    # touch lives for a fraction of a second (the book re-centres once p is 2.5 ticks away) and
    # ~1 in 10 ticks just behind the touch is empty. Filters from the shipped definition
    # (tick 0.00001, qty step 1 DOGE, min notional 5 USDT); the rest is an assumption (no real
    # DOGE data in the fixtures): touch ~60,000 DOGE (~26,000 USDT, between XRP's ~9,000 and
    # BTC's ~80,000), median taker order 1,500 DOGE (~650 USDT), 6 orders/s, 4 bps/min (DOGE
    # moves more than BTC or XRP).
    "DOGEUSDT": InstrumentSpec(
        "DOGEUSDT", 0.00001, 5, 1.0, 1.0, 0.430005, touch_size=40_000.0, depth_size=40_000.0, order_size=1_500.0,
        order_sigma=1.8, orders_per_s=6.0, vol_bps_per_min=4.0, impact_ticks=0.2, churn_size=12_000.0,
        catch_up_ticks=2.5, deep_events_per_s=120.0, deep_mean_ticks=7.0, refill_per_s=4.0,
        occupancy_near=0.9, occupancy_far=0.5,
    ),
    # ETHUSDT (0.026 bps tick) is another small-tick example.
    "ETHUSDT": InstrumentSpec(
        "ETHUSDT", 0.01, 2, 0.01, 0.01, 3_800.005, touch_size=20.0, depth_size=15.0, order_size=0.25,
        order_sigma=1.8, orders_per_s=6.0, vol_bps_per_min=3.5, impact_ticks=0.5, churn_size=5.0,
        catch_up_ticks=2.0, deep_events_per_s=120.0,
    ),
}


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def format_price(ticks: int, spec: InstrumentSpec) -> str:
    """Price string at Bybit's priceScale from an integer tick count (exact, no float)."""
    return _fixed(ticks * spec.tick_units, spec.price_scale)


def format_qty(lots: int, spec: InstrumentSpec) -> str:
    """Quantity string at the qty step's decimals from an integer lot count; 0 -> "0" (delete)."""
    return _fixed(lots * spec.step_units, spec.qty_decimals) if lots else "0"


def _fixed(value: int, decimals: int) -> str:
    """``value`` * 10**-decimals as a fixed-point string (integer arithmetic, so exact)."""
    if decimals == 0:
        return str(value)
    whole, frac = divmod(value, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


class _Formatter:
    """Cached price/qty formatting for one instrument (formatting dominates run time)."""

    def __init__(self, spec: InstrumentSpec) -> None:
        self._tick_units, self._pd = spec.tick_units, spec.price_scale
        self._step_units, self._qd = spec.step_units, spec.qty_decimals
        self._prices: dict[int, str] = {}

    def price(self, ticks: int) -> str:
        text = self._prices.get(ticks)
        if text is None:
            text = self._prices[ticks] = _fixed(ticks * self._tick_units, self._pd)
        return text

    def qty(self, lots: int) -> str:
        # Bybit marks a deleted level with a bare "0".
        return _fixed(lots * self._step_units, self._qd) if lots else "0"

    def levels(self, levels: Iterable[tuple[int, int]]) -> list[list[str]]:
        return [[self.price(px), self.qty(sz)] for px, sz in levels]


def parse_start(text: str) -> int:
    """ISO-8601 UTC time (``2024-06-03T00:00:00Z``) to ns since epoch."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


# --------------------------------------------------------------------------------------------
# Book model (prices in integer ticks, sizes in integer lots)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Book:
    spec: InstrumentSpec
    rng: random.Random
    keep: int  # levels kept per side (published depth + EXTRA_LEVELS)
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    best_bid: int = 0
    best_ask: int = 0

    def level_size(self, d: int) -> int:
        """Random size (lots) for a new level ``d`` ticks from the touch; lognormal, sigma 0.9."""
        return self.spec.lots(self.spec.level_median(d) * math.exp(self.rng.gauss(0.0, 0.9)))

    def build(self, best_bid: int, spread: int) -> None:
        self.bids = {best_bid: self.level_size(0)}
        self.asks = {best_bid + spread: self.level_size(0)}
        self.best_bid, self.best_ask = best_bid, best_bid + spread
        self.fill_to_depth()

    def fill_to_depth(self) -> None:
        """Trim or extend each side at its far end so it holds exactly ``keep`` levels."""
        for is_bid in (True, False):
            side = self.bids if is_bid else self.asks
            touch = self.best_bid if is_bid else self.best_ask
            if len(side) > self.keep:
                far = heapq.nsmallest(len(side) - self.keep, side) if is_bid else heapq.nlargest(len(side) - self.keep, side)
                for px in far:
                    del side[px]
            step = -1 if is_bid else 1
            px = min(side) if is_bid else max(side)
            while len(side) < self.keep:
                px += step
                if self.rng.random() < self.spec.occupancy(abs(px - touch)):
                    side[px] = self.level_size(abs(px - touch))

    def remove(self, is_bid: bool, px: int) -> None:
        """Delete a level; if it was the touch, the next level becomes the touch."""
        side = self.bids if is_bid else self.asks
        del side[px]
        if is_bid and px == self.best_bid:
            self.best_bid = max(side)
        elif not is_bid and px == self.best_ask:
            self.best_ask = min(side)

    def insert(self, is_bid: bool, px: int, lots: int) -> None:
        side = self.bids if is_bid else self.asks
        side[px] = side.get(px, 0) + lots
        if is_bid and px > self.best_bid:
            self.best_bid = px
        elif not is_bid and px < self.best_ask:
            self.best_ask = px

    def recentre(self, new_bid: int, spread: int) -> None:
        """Move the touch to ``new_bid`` / ``new_bid + spread`` (quote repositioning).

        Levels that would cross are cancelled; the gap left behind the new touch is filled with
        the usual occupancy so the side stays realistic.
        """
        new_ask = new_bid + spread
        for px in [p for p in self.bids if p > new_bid]:
            del self.bids[px]
        for px in [p for p in self.asks if p < new_ask]:
            del self.asks[px]
        self._refill(True, new_bid)
        self._refill(False, new_ask)
        self.best_bid, self.best_ask = max(self.bids), min(self.asks)

    def _refill(self, is_bid: bool, touch: int) -> None:
        side = self.bids if is_bid else self.asks
        if not side:
            side[touch] = self.level_size(0)
            return
        inner = max(side) if is_bid else min(side)
        if inner == touch:
            return
        side[touch] = self.level_size(0)
        step = 1 if is_bid else -1
        for px in range(inner + step, touch, step):
            if self.rng.random() < self.spec.occupancy(abs(touch - px)):
                side[px] = self.level_size(abs(touch - px))

    def execute(self, is_buy: bool, lots: int, limit: int) -> list[tuple[int, int]]:
        """Match a taker order from the touch outwards; returns (price ticks, lots) per print.

        ``limit`` is the taker's IOC limit price: the ``MAX_SWEEP_LEVELS``-th level of the last
        published book on the side it takes (the taker prices off what the feed showed). Each
        level is split into a few maker orders, so one level can print several trades. Never
        empties a side.
        """
        side = self.asks if is_buy else self.bids
        if is_buy:
            prices = [px for px in heapq.nsmallest(MAX_SWEEP_LEVELS, side) if px <= limit]
        else:
            prices = [px for px in heapq.nlargest(MAX_SWEEP_LEVELS, side) if px >= limit]
        prints: list[tuple[int, int]] = []
        for px in prices:
            if lots <= 0 or len(side) <= 1:
                break
            take = min(lots, side[px])
            prints.extend((px, piece) for piece in self._maker_pieces(take))
            lots -= take
            if take == side[px]:
                self.remove(not is_buy, px)
            else:
                side[px] -= take
        return prints

    def _maker_pieces(self, lots: int) -> list[int]:
        """Split a fill into 1..n maker orders (geometric count), sizes by random cuts."""
        n = 1
        while n < lots and n < 6 and self.rng.random() < 0.3:
            n += 1
        if n == 1:
            return [lots]
        cuts = sorted(self.rng.sample(range(1, lots), n - 1))
        bounds = [0, *cuts, lots]
        return [b - a for a, b in zip(bounds, bounds[1:])]


# --------------------------------------------------------------------------------------------
# Order flow, price and feed timing
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Hawkes:
    """Self-exciting taker-order arrivals with a fast (burst) and a slow (cluster) kernel.

    Intensity ``mu + sum_k alpha_k exp(-beta_k (t - t_i))`` over past events ``t_i``; rates in
    events/s, decays in 1/s, branching ratio ``sum alpha_k / beta_k``. Simulated exactly by Ogata
    thinning, with the baseline held constant within a push interval.
    """

    rng: random.Random
    alphas: tuple[float, ...] = (12.0, 0.2)
    betas: tuple[float, ...] = (40.0, 0.6)
    excitation: list[float] = field(default_factory=lambda: [0.0, 0.0])

    @property
    def branching(self) -> float:
        return sum(a / b for a, b in zip(self.alphas, self.betas))

    def _decay(self, dt: float) -> None:
        for k, beta in enumerate(self.betas):
            self.excitation[k] *= math.exp(-beta * dt)

    def events(self, t0: float, t1: float, mu: float) -> list[float]:
        """Event times (s) in [t0, t1) for baseline ``mu``."""
        out: list[float] = []
        t = t0
        while True:
            bound = mu + sum(self.excitation)
            wait = self.rng.expovariate(bound)
            if t + wait >= t1:
                self._decay(t1 - t)
                return out
            self._decay(wait)
            t += wait
            if self.rng.random() * bound <= mu + sum(self.excitation):
                out.append(t)
                for k, alpha in enumerate(self.alphas):
                    self.excitation[k] += alpha


@dataclass(slots=True)
class _Regime:
    """Slow log-normal activity factor (Ornstein-Uhlenbeck in log space, ~10 min memory)."""

    rng: random.Random
    log_act: float = 0.0
    tau_s: float = 600.0
    sd: float = 0.35

    def step(self, dt_s: float) -> float:
        a = math.exp(-dt_s / self.tau_s)
        self.log_act = a * self.log_act + self.sd * math.sqrt(1 - a * a) * self.rng.gauss(0.0, 1.0)
        # Divide by the lognormal mean so the long-run average activity is 1.
        return math.exp(self.log_act - self.sd**2 / 2)


@dataclass(frozen=True, slots=True)
class FeedLatency:
    """Receive-time model per stream, in ms: ``local = exchange time + delay``.

    Book pushes: publication delay ``2 + LogNormal(ln 3, 0.7)`` (the real ob500 sample's push
    ``ts`` trails its matching-engine ``cts`` by 2-17 ms, median 5) plus network. Trades: push
    delay uniform 0-3 ms (Bybit's documented examples show ``ts - T`` of 2-3 ms) plus network.
    Network: ``LogNormal(ln net_median_ms, net_sigma)`` per message, independent per stream
    (an assumption: a client a few ms from Bybit's gateway). Within a stream messages stay in
    order (one TCP stream), so a late message delays the ones behind it.
    """

    book_pub_min_ms: float = 2.0
    book_pub_median_ms: float = 3.0
    book_pub_sigma: float = 0.7
    book_pub_max_ms: float = 30.0
    trade_pub_max_ms: int = 3
    net_median_ms: float = 3.0
    net_sigma: float = 0.5


@dataclass(slots=True)
class _Stream:
    """FIFO receive clock of one stream (ns, 1 µs resolution)."""

    last_ns: int = 0

    def receive(self, sent_ns: int) -> int:
        ns = max(self.last_ns, sent_ns - sent_ns % NS_PER_US)
        self.last_ns = ns
        return ns


def _tick_direction(px: int, last_px: int | None, last_dir: str) -> str:
    if last_px is None or px == last_px:
        return "ZeroPlusTick" if last_dir.endswith("PlusTick") else "ZeroMinusTick"
    return "PlusTick" if px > last_px else "MinusTick"


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------

_ADD, _CANCEL, _REFILL, _DEEP, _TAKER = range(5)


@dataclass(slots=True)
class _Session:
    """Mutable state of one generated recording; ``run`` yields its messages in receive order."""

    spec: InstrumentSpec
    start_ms: int
    depth: int
    rng: random.Random
    latency: FeedLatency = field(default_factory=FeedLatency)
    cadence_ms: int = field(init=False)
    book: _Book = field(init=False)
    hawkes: _Hawkes = field(init=False)
    regime: _Regime = field(init=False)
    fmt: _Formatter = field(init=False)
    flow_rng: random.Random = field(init=False)
    lat_rng: random.Random = field(init=False)
    book_stream: _Stream = field(default_factory=_Stream)
    trade_stream: _Stream = field(default_factory=_Stream)
    p: float = 0.0  # efficient price, ticks
    u: int = 0
    seq: int = 0  # matching-engine sequence: +1 per add, cancel and print
    last_event_ms: int = 0  # exchange time of the last matching event (a push's cts)
    last_buy: bool = True
    trade_ts: int = 0  # last trade message ts (ms), non-decreasing
    trade_no: int = 0
    id_prefix: str = ""
    last_px: int | None = None
    last_dir: str = "ZeroPlusTick"
    published: tuple[dict[int, int], dict[int, int]] = field(default_factory=lambda: ({}, {}))
    sweep_limits: tuple[int, int] = (0, 0)  # (sell limit on bids, buy limit on asks)
    touched: tuple[set[int], set[int]] = field(default_factory=lambda: (set(), set()))
    pending: list = field(default_factory=list)  # heap of (local ns, order, message)
    n_out: int = 0
    end_rel_ms: int = 0  # the current push's ms + 1, relative to start_ms (events are before it)
    events: list = field(default_factory=list)  # heap of (t s, kind, is_bid) of the current interval
    t_end: float = 0.0  # end of the current interval (s since start)
    act: float = 1.0  # activity factor of the current interval
    refill_pending: bool = False

    def __post_init__(self) -> None:
        self.cadence_ms = FEED_CADENCE_MS[self.depth]
        # Independent sub-streams, so a change in one component does not reshuffle the others.
        sub = [random.Random(self.rng.getrandbits(64)) for _ in range(6)]
        self.book = _Book(self.spec, sub[0], self.depth + EXTRA_LEVELS)
        self.hawkes, self.regime = _Hawkes(sub[1]), _Regime(sub[2])
        self.lat_rng, self.flow_rng = sub[3], sub[4]
        self.id_prefix = f"{sub[5].getrandbits(32):08x}"
        self.fmt = _Formatter(self.spec)

    # -- driver ------------------------------------------------------------------------------
    def run(self, n_pushes: int) -> Iterator[dict[str, Any]]:
        spec, rng = self.spec, self.rng
        cadence = self.cadence_ms
        tick_bps = spec.tick_bps
        # Efficient-price std per sqrt(second), in ticks: vol_bps_per_min / sqrt(60 s) / tick.
        sigma_ticks = spec.vol_bps_per_min / tick_bps / math.sqrt(60.0)
        mu = spec.orders_per_s * (1 - self.hawkes.branching)  # long-run rate = mu / (1 - n)
        resubscribe = n_pushes // 2 if n_pushes >= 2 else -1

        start_bid = math.floor(spec.start_mid / spec.tick_size)
        self.book.build(start_bid, 1)
        self.p = start_bid + 0.5
        self.u = rng.randrange(10_000_000, 90_000_000)
        self.seq = rng.randrange(100_000_000_000, 200_000_000_000)
        ts = self.start_ms
        self.last_event_ms = ts - rng.randrange(1, 4)
        yield from self._publish("snapshot", ts)
        t_prev = (ts + 1 - self.start_ms) / 1e3  # events after the end of ms ts
        for k in range(1, n_pushes + 1):
            act = self.regime.step(cadence / 1e3)
            nominal = self.start_ms + k * cadence + rng.randrange(-2, 3)  # pushes jitter a few ms
            ts = max(nominal, ts + 1)
            t_end = (ts + 1 - self.start_ms) / 1e3
            self.p += sigma_ticks * math.sqrt(act * (t_end - t_prev)) * rng.gauss(0.0, 1.0)
            self._catch_up(self.start_ms + int(t_prev * 1e3))
            events = self._book_events(t_prev, t_end, act)
            takers = self.hawkes.events(t_prev, t_end, mu * act)
            # No trade may share a millisecond with the push: exchange order is then unambiguous.
            self.end_rel_ms = ts + 1 - self.start_ms
            while takers and self._ms(takers[-1]) == ts:
                ts += 1
                self.end_rel_ms += 1
                t_next = (ts + 1 - self.start_ms) / 1e3
                events += self._book_events(t_end, t_next, act)
                takers += self.hawkes.events(t_end, t_next, mu * act)
                t_end = t_next
            events += [(t, _TAKER, False) for t in takers]
            heapq.heapify(events)
            self.events, self.t_end, self.act, self.refill_pending = events, t_end, act, False
            self._schedule_refill(t_prev)
            while events:
                self._apply(*heapq.heappop(events))
            self.book.fill_to_depth()
            if k == resubscribe:
                self.u += rng.randrange(20, 200)  # updates missed while resubscribing
                yield from self._publish("snapshot", ts)
            else:
                yield from self._publish("delta", ts)
            t_prev = t_end
        while self.pending:
            yield heapq.heappop(self.pending)[2]

    # -- dynamics ----------------------------------------------------------------------------
    def _z(self) -> float:
        return self.p - (self.book.best_bid + self.book.best_ask) / 2

    def _catch_up(self, ms: int) -> None:
        """Quote repositioning: re-centre the book on ``p`` when it has drifted too far."""
        z = self._z()
        if abs(z) <= self.spec.catch_up_ticks:
            return
        self.last_event_ms = max(self.last_event_ms, ms)
        spread = self.book.best_ask - self.book.best_bid
        old = (dict(self.book.bids), dict(self.book.asks))
        self.book.recentre(math.floor(self.p - spread / 2 + 0.5), spread)
        for is_bid, before in ((True, old[0]), (False, old[1])):
            now = self.book.bids if is_bid else self.book.asks
            changed = {px for px in before.keys() ^ now.keys()}
            self.touched[0 if is_bid else 1].update(changed)
            self.seq += len(changed)

    def _book_events(self, t0: float, t1: float, act: float) -> list[tuple[float, int, bool]]:
        """Adds, cancels, spread refills and deep-book events in [t0, t1), rates fixed at t0."""
        spec, rng, book = self.spec, self.rng, self.book
        dt = (t1 - t0) * act
        z = max(-3.0, min(3.0, self._z()))
        out: list[tuple[float, int, bool]] = []
        for is_bid in (True, False):
            lean = math.exp((1 if is_bid else -1) * spec.queue_lean * z)
            q = book.bids[book.best_bid] if is_bid else book.asks[book.best_ask]
            n_add = _poisson(rng, spec.touch_adds_per_s * lean * dt)
            n_cancel = _poisson(rng, spec.touch_cancels_per_s / lean * dt * q / spec.lots(spec.touch_size))
            out += [(rng.uniform(t0, t1), _ADD, is_bid) for _ in range(n_add)]
            out += [(rng.uniform(t0, t1), _CANCEL, is_bid) for _ in range(n_cancel)]
        out += [(rng.uniform(t0, t1), _DEEP, False) for _ in range(_poisson(rng, spec.deep_events_per_s * dt))]
        return out

    def _ms(self, t: float) -> int:
        """Exchange ms of an event at ``t`` s (clamped into the current push interval, so float
        rounding at the boundary cannot move an event past the push that reflects it)."""
        return self.start_ms + min(int(t * 1e3), self.end_rel_ms - 1)

    def _schedule_refill(self, t: float) -> None:
        """While the spread is wider than one tick, the next refill comes after an exponential
        wait at ``refill_per_s`` per missing tick (one pending refill at a time)."""
        gap = self.book.best_ask - self.book.best_bid - 1
        if gap > 0 and not self.refill_pending:
            t_refill = t + self.rng.expovariate(self.spec.refill_per_s * gap * self.act)
            if t_refill < self.t_end:
                self.refill_pending = True
                heapq.heappush(self.events, (t_refill, _REFILL, False))

    def _apply(self, t: float, kind: int, is_bid: bool) -> None:
        self._apply_one(t, kind, is_bid)
        self._schedule_refill(t)

    def _apply_one(self, t: float, kind: int, is_bid: bool) -> None:
        spec, rng, book = self.spec, self.rng, self.book
        ms = self._ms(t)
        if kind == _TAKER:
            self._taker(ms)
            return
        self.seq += 1
        self.last_event_ms = max(self.last_event_ms, ms)
        churn = spec.churn_size or spec.touch_size / 6
        if kind == _ADD:
            px = book.best_bid if is_bid else book.best_ask
            book.insert(is_bid, px, spec.lots(churn * math.exp(rng.gauss(0.0, 1.0))))
            self.touched[0 if is_bid else 1].add(px)
        elif kind == _CANCEL:
            side = book.bids if is_bid else book.asks
            px = book.best_bid if is_bid else book.best_ask
            size = spec.lots(churn * math.exp(rng.gauss(0.0, 1.0)))
            if size >= side[px] and len(side) > 1:
                book.remove(is_bid, px)
            else:
                side[px] = max(1, side[px] - size)
            self.touched[0 if is_bid else 1].add(px)
        elif kind == _REFILL:
            self.refill_pending = False
            if book.best_ask - book.best_bid > 1:
                z = max(-5.0, min(5.0, self._z()))
                bid = rng.random() < 1 / (1 + math.exp(-spec.refill_lean * z))
                px = book.best_bid + 1 if bid else book.best_ask - 1
                book.insert(bid, px, book.level_size(0))
                self.touched[0 if bid else 1].add(px)
        else:
            self._deep_event()

    def _deep_event(self) -> None:
        """One event at the tick ``d = 1 + floor(Exp(mean deep_mean_ticks))`` behind a random side's touch.

        An occupied tick is cancelled with probability ``(1 - occupancy(d)) / 2``, else resized
        towards its median (multiplicative, mean-reverting); an empty one receives a new level
        with probability ``occupancy(d) / 2``. The occupancy is then stationary at
        ``occupancy(d)`` and the size profile at ``level_median(d)``.
        """
        rng, book, spec = self.rng, self.book, self.spec
        is_bid = rng.random() < 0.5
        side = book.bids if is_bid else book.asks
        touch = book.best_bid if is_bid else book.best_ask
        far = min(side) if is_bid else max(side)
        d = 1 + int(rng.expovariate(1 / spec.deep_mean_ticks))
        if d >= abs(far - touch):
            return  # beyond the kept levels
        px = touch - d if is_bid else touch + d
        occ = spec.occupancy(d)
        size = side.get(px)
        if size is None:
            if rng.random() < occ / 2:
                side[px] = book.level_size(d)
            else:
                return
        elif rng.random() < (1 - occ) / 2:
            del side[px]
        else:
            target = spec.level_median(d) / spec.qty_step
            log_ratio = math.log(target / size)
            side[px] = max(1, round(size * math.exp(0.15 * log_ratio + rng.gauss(0.0, 0.5))))
        self.touched[0 if is_bid else 1].add(px)
        self.seq += 1

    def _taker(self, ms: int) -> None:
        spec, rng = self.spec, self.flow_rng
        # Side persists within a burst (one trader slicing an order), otherwise leans towards p.
        if rng.random() < 0.6:
            is_buy = self.last_buy
        else:
            is_buy = rng.random() < 1 / (1 + math.exp(-spec.side_lean * max(-5.0, min(5.0, self._z()))))
        self.last_buy = is_buy
        size_rel = math.exp(rng.gauss(0.0, spec.order_sigma))
        lots = spec.lots(spec.order_size * size_rel)
        prints = self.book.execute(is_buy, lots, self.sweep_limits[is_buy])
        if not prints:
            return
        self.touched[1 if is_buy else 0].update(px for px, _ in prints)
        self.p += (1 if is_buy else -1) * spec.impact_ticks * math.sqrt(min(size_rel, 100.0))
        self.last_event_ms = max(self.last_event_ms, ms)
        lat = self.latency
        self.trade_ts = max(self.trade_ts, ms + self.lat_rng.randint(0, lat.trade_pub_max_ms))
        net_ms = lat.net_median_ms * math.exp(self.lat_rng.gauss(0.0, lat.net_sigma))
        local = self.trade_stream.receive(self.trade_ts * NS_PER_MS + int(net_ms * NS_PER_MS))
        data = []
        for px, piece in prints:
            self.seq += 1
            self.trade_no += 1
            self.last_dir = _tick_direction(px, self.last_px, self.last_dir)
            self.last_px = px
            data.append({
                "T": ms, "s": spec.symbol, "S": "Buy" if is_buy else "Sell",
                "v": self.fmt.qty(piece), "p": self.fmt.price(px), "L": self.last_dir,
                # uuid-shaped and unique per file; a counter keeps the column compressible.
                "i": f"{self.id_prefix}-0000-4000-8000-{self.trade_no:012x}",
                "BT": False, "RPI": False, "seq": self.seq,
            })
        msg = {"topic": f"publicTrade.{spec.symbol}", "type": "snapshot", "ts": self.trade_ts, "data": data,
               "local_ts_ns": local}
        self._queue(local, msg)

    # -- feed --------------------------------------------------------------------------------
    def _publish(self, kind: str, ts: int) -> Iterator[dict[str, Any]]:
        """Queue the book push at exchange time ``ts``; yield every message received by then."""
        book, depth = self.book, self.depth
        top_b = heapq.nlargest(depth, book.bids)
        top_a = heapq.nsmallest(depth, book.asks)
        new_b = {px: book.bids[px] for px in top_b}
        new_a = {px: book.asks[px] for px in top_a}
        if kind == "snapshot":
            bids, asks = sorted(new_b.items(), reverse=True), sorted(new_a.items())
        else:
            bids = _diff(self.published[0], new_b, self.touched[0], True)
            asks = _diff(self.published[1], new_a, self.touched[1], False)
        self.touched[0].clear()
        self.touched[1].clear()
        horizon = (ts + 1) * NS_PER_MS  # every later message has an exchange, hence a receive, time after ts
        if kind == "delta" and not bids and not asks:
            # Bybit pushes a delta only when the published levels changed.
            while self.pending and self.pending[0][0] < horizon:
                yield heapq.heappop(self.pending)[2]
            return
        if kind == "delta":
            self.u += 1
        self.published = (new_b, new_a)
        self.sweep_limits = (top_b[MAX_SWEEP_LEVELS - 1], top_a[MAX_SWEEP_LEVELS - 1])
        lat, lr = self.latency, self.lat_rng
        pub_ms = min(lat.book_pub_max_ms, lat.book_pub_min_ms + lat.book_pub_median_ms * math.exp(lr.gauss(0.0, lat.book_pub_sigma)))
        net_ms = lat.net_median_ms * math.exp(lr.gauss(0.0, lat.net_sigma))
        local = self.book_stream.receive(ts * NS_PER_MS + int((pub_ms + net_ms) * NS_PER_MS))
        cts = min(ts, self.last_event_ms)
        msg = {
            "topic": f"orderbook.{depth}.{self.spec.symbol}",
            "type": kind,
            "ts": ts,
            "data": {"s": self.spec.symbol, "b": self.fmt.levels(bids), "a": self.fmt.levels(asks),
                     "u": self.u, "seq": self.seq},
            "cts": cts,
            "local_ts_ns": local,
        }
        self._queue(local, msg)
        while self.pending and self.pending[0][0] < horizon:
            yield heapq.heappop(self.pending)[2]

    def _queue(self, local: int, msg: dict[str, Any]) -> None:
        self.n_out += 1
        heapq.heappush(self.pending, (local, self.n_out, msg))


def _diff(old: dict[int, int], new: dict[int, int], touched: set[int], is_bid: bool) -> list[tuple[int, int]]:
    """Changed levels of the published window (price, lots; 0 = delete), Bybit's side order.

    Candidates are the prices touched since the last push plus every price entering or leaving
    the window; an unchanged size is not sent.
    """
    changes = []
    for px in touched | (old.keys() ^ new.keys()):
        sz = new.get(px, 0)
        if old.get(px, 0) != sz:
            changes.append((px, sz))
    changes.sort(reverse=is_bid)
    return changes


MAX_MINUTES = 366 * 24 * 60  # a year of minutes: --minutes is checked before anything is generated


def generate(symbol: str, start_ns: int, minutes: float, seed: int, depth: int = 50,
             latency: FeedLatency | None = None, orders_per_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Messages of a synthetic recording in receive order (``local_ts_ns`` non-decreasing).

    One snapshot at ``start_ns``, a delta every ``FEED_CADENCE_MS[depth]`` ms (Bybit's push
    interval for that depth) when the book changed, trade messages in between, and one
    resubscribe snapshot half way. ``orders_per_s`` overrides the symbol's taker-order rate.
    Deterministic in (symbol, start_ns, minutes, seed, depth, latency, orders_per_s).
    """
    spec = INSTRUMENTS.get(symbol)
    if spec is None:
        raise ValueError(f"unknown symbol {symbol!r}; known: {', '.join(INSTRUMENTS)}")
    if not (0 < minutes <= MAX_MINUTES):  # also false for NaN; inf and 1e307 overflowed int()
        raise ValueError(f"minutes must be a finite number > 0 and at most {MAX_MINUTES} (366 days), got {minutes!r}")
    if orders_per_s is not None:
        if not (orders_per_s > 0 and math.isfinite(orders_per_s)):
            raise ValueError(f"orders_per_s must be a finite number > 0, got {orders_per_s!r}")
        spec = dataclasses.replace(spec, orders_per_s=orders_per_s)
    if depth not in FEED_CADENCE_MS:
        raise ValueError(f"depth must be one of Bybit's linear order-book depths {sorted(FEED_CADENCE_MS)}, got {depth}")
    session = _Session(spec, start_ns // NS_PER_MS, depth, random.Random(seed), latency or FeedLatency())
    return session.run(int(round(minutes * 60_000 / session.cadence_ms)))


FUNDING_INTERVAL_MS = 8 * 3_600_000  # Bybit: every 8 h at 00:00/08:00/16:00 UTC (fundingInterval 480 min)
FUNDING_BASE_RATE = 0.0001  # Bybit's interest-rate component per 8 h (0.01 %); the premium adds noise


def generate_funding(symbol: str, start_ns: int, end_ns: int, seed: int) -> dict[str, Any]:
    """A ``GET /v5/market/funding/history`` response body for ``symbol``: one row per 8-hour
    settlement from the one at or before ``start_ns`` to the first after ``end_ns``, newest
    first as Bybit returns them. Rate = ``0.0001 + 0.00005 N(0, 1)`` rounded to 6 decimals
    (an assumption: calm-market rates near the interest component). Deterministic in
    (symbol, start_ns, end_ns, seed).
    """
    rng = random.Random(f"funding-{symbol}-{seed}")
    first = start_ns // NS_PER_MS // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
    last = (end_ns // NS_PER_MS // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    rows = []
    for ts in range(first, last + 1, FUNDING_INTERVAL_MS):
        rate = round(FUNDING_BASE_RATE + 0.00005 * rng.gauss(0.0, 1.0), 6)
        rows.append({"symbol": symbol, "fundingRate": f"{rate:.6f}".rstrip("0").rstrip(".") if rate else "0",
                     "fundingRateTimestamp": str(ts)})
    rows.reverse()
    return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows},
            "retExtInfo": {}, "time": last + 3_600_000}


def _poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw by inversion (small lam), deterministic under ``rng``."""
    if lam <= 0.0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def write_recording(path: str | Path, messages: Iterable[dict[str, Any]]) -> int:
    """Write messages as compact JSON lines; ``.gz`` suffix -> gzip with mtime=0, no filename.

    Returns the number of lines written. Same messages -> same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    n = 0
    with open(path, "wb") as raw:
        # mtime=0 and an empty name keep the gzip header, hence the file, byte-identical per input.
        gz = path.suffix == ".gz"
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if gz else raw
        try:
            buf: list[bytes] = []
            for msg in messages:
                buf.append(encoder.encode(msg))
                n += 1
                if len(buf) >= 2000:
                    out.write(b"\n".join(buf) + b"\n")
                    buf.clear()
            if buf:
                out.write(b"\n".join(buf) + b"\n")
        finally:
            if out is not raw:
                out.close()
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbol", default="XRPUSDT", choices=sorted(INSTRUMENTS))
    parser.add_argument("--start", default=DEFAULT_START, help="UTC start, ISO-8601 (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help=f"length, 0 < minutes <= {MAX_MINUTES} (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--depth", type=int, default=50, choices=sorted(FEED_CADENCE_MS),
                        help="levels per side (topic orderbook.DEPTH.SYMBOL; sets Bybit's push interval)")
    parser.add_argument("--orders-per-s", type=float, default=None,
                        help="taker orders per second (default: the symbol's calibration)")
    parser.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        messages = generate(args.symbol, parse_start(args.start), args.minutes, args.seed, args.depth,
                            orders_per_s=args.orders_per_s)
    except ValueError as e:
        parser.error(str(e))
    n = write_recording(args.out, messages)
    size = Path(args.out).stat().st_size
    print(f"wrote {n} messages, {size / 1e6:.2f} MB to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0



def write_bybit_orderbook(path: str | Path, messages: Iterable[dict[str, Any]]) -> int:
    """Write the order-book messages of a generated recording as Bybit's historical ``obN.data``
    file holds them (one JSON message per line, no ``local_ts_ns``; trade messages left out), so
    the order-book file importer can be exercised on a generated stream (tests/test_import_equality.py,
    ``python -m tools.bench import``). Returns the number of lines written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    n = 0
    with open(path, "wb") as out:
        buf: list[bytes] = []
        for msg in messages:
            if not str(msg.get("topic", "")).startswith("orderbook."):
                continue
            buf.append(encoder.encode({k: v for k, v in msg.items() if k != "local_ts_ns"}))
            n += 1
            if len(buf) >= 2000:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            out.write(b"\n".join(buf) + b"\n")
    return n


if __name__ == "__main__":
    sys.exit(main())
