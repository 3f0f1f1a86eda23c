"""Seeded synthetic Bybit v5 public-feed recordings (order book + trades) for backtests and tests.

Output is an mmbot recording: one raw Bybit public WebSocket message per line plus a
``local_ts_ns`` receive time (``.jsonl``, or ``.jsonl.gz`` written byte-deterministically).

Model, per 100 ms book step (Bybit's ob200/ob500 push cadence):

* taker orders arrive as a two-kernel Hawkes process (bursty, inter-arrival CV > 1) with a
  baseline that follows a slow activity regime; sizes are lognormal (heavy tail);
* each taker order walks the book from the touch, printing one trade per maker order it meets,
  up to an IOC limit price at the ``MAX_SWEEP_LEVELS``-th level of the last *published* book
  (the taker prices off what the feed showed, not off a book that earlier orders of the same
  100 ms step have already eaten into); the next book delta shows the consumed sizes, so a
  trade only ever prints at one of the best ``MAX_SWEEP_LEVELS`` levels the book last showed;
* the mid follows a jump process in ticks whose scale is set in bps per minute and modulated
  by the activity regime and recent order flow; after each step the touch is re-centred
  (spread mostly 1 tick) and gaps are refilled with an occupancy that falls away from the touch;
* sizes grow away from the touch, and a few random levels per step are resized, cancelled or
  added, biased towards the touch;
* the published book always holds exactly ``depth`` levels per side, so levels leaving or
  entering the window show up as deletes/inserts, as in Bybit's fixed-depth streams.

Deltas are the exact diff between the previously published book and the current one.
One extra snapshot (a simulated resubscribe) is emitted half way through.

CLI::

    python -m tools.gen_synthetic --symbol BTCUSDT --start 2024-06-03T00:00:00Z \\
        --minutes 60 --seed 7 --depth 50 --out data/BTCUSDT.jsonl.gz
"""

from __future__ import annotations

import argparse
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

DEFAULT_START = "2024-06-03T00:00:00Z"
STEP_MS = 100  # book push cadence
MAX_SWEEP_LEVELS = 3  # deepest level of the last published book a taker order reaches (IOC limit price)
NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Instrument filters and the generator's calibration for one symbol.

    Sizes are in base units (BTC, ETH); ``vol_bps_per_min`` is the mid's target std per minute.
    """

    symbol: str
    tick_size: float
    price_scale: int  # decimals Bybit prints prices with (priceScale)
    qty_step: float
    min_qty: float
    start_mid: float
    touch_size: float  # median size of a fresh level at the touch
    order_size: float  # median taker order size
    order_sigma: float = 2.05  # lognormal sigma of taker order sizes (heavy tail)
    vol_bps_per_min: float = 3.0
    orders_per_s: float = 1.1  # long-run mean taker order rate

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

    def lots(self, size: float) -> int:
        return max(1, round(size / self.qty_step))


INSTRUMENTS: dict[str, InstrumentSpec] = {
    "BTCUSDT": InstrumentSpec("BTCUSDT", 0.10, 2, 0.001, 0.001, 67_000.0, touch_size=1.2, order_size=0.012),
    "ETHUSDT": InstrumentSpec("ETHUSDT", 0.01, 2, 0.01, 0.01, 3_800.0, touch_size=20.0, order_size=0.25),
    # Large-tick instrument (1 tick = 0.5 bps): the touch persists for seconds and queues at it
    # matter. Touch/spread from the real XRPUSDT ob500 sample (level-1 mean ~7,500 XRP, spread
    # always 1 tick; tests/fixtures/2024-12-01_XRPUSDT_ob500.data), taker sizes ~$500 like BTCUSDT.
    "XRPUSDT": InstrumentSpec("XRPUSDT", 0.0001, 4, 1.0, 1.0, 1.9531, touch_size=5_000.0, order_size=250.0,
                              vol_bps_per_min=1.0),
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


def _uuid_like(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# --------------------------------------------------------------------------------------------
# Book model (prices in integer ticks, sizes in integer lots)
# --------------------------------------------------------------------------------------------


def _occupancy(d: int) -> float:
    """Probability that a tick ``d`` ticks behind the touch holds a level.

    Dense near the touch, sparser further out (a 0.10 tick is ~0.015 bps on BTC, so deep
    liquidity clusters rather than filling every tick).
    """
    return 0.3 + 0.65 * math.exp(-d / 12.0)


def _depth_factor(d: int) -> float:
    """Median level size at ``d`` ticks from the touch relative to ``touch_size``.

    The touch is a little heavier than the next tick (queue-priority liquidity sits there),
    then sizes grow roughly like d**0.8; calibrated against the XRPUSDT ob500 sample, whose
    level-10 size is ~2x level 1.
    """
    return 1.2 if d == 0 else 0.7 + 0.16 * d**0.8


@dataclass(slots=True)
class _Book:
    spec: InstrumentSpec
    rng: random.Random
    depth: int
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)

    # -- queries -----------------------------------------------------------------------------
    def best_bid(self) -> int:
        return max(self.bids)

    def best_ask(self) -> int:
        return min(self.asks)

    def sorted_side(self, is_bid: bool) -> list[int]:
        """Prices from the touch outwards."""
        side = self.bids if is_bid else self.asks
        return sorted(side, reverse=is_bid)

    # -- sizes -------------------------------------------------------------------------------
    def level_size(self, d: int) -> int:
        """Random size (lots) for a new level ``d`` ticks from the touch; lognormal, sigma 0.9."""
        median = self.spec.touch_size * _depth_factor(d)
        return self.spec.lots(median * math.exp(self.rng.gauss(0.0, 0.9)))

    # -- construction ------------------------------------------------------------------------
    def build(self, best_bid: int, spread: int) -> None:
        """Fresh book with the given touch, ``depth`` levels per side."""
        self.bids = {best_bid: self.level_size(0)}
        self.asks = {best_bid + spread: self.level_size(0)}
        self.fill_to_depth()

    def fill_to_depth(self) -> None:
        """Trim or extend each side at its far end so it holds exactly ``depth`` levels."""
        for is_bid in (True, False):
            side = self.bids if is_bid else self.asks
            step = -1 if is_bid else 1
            touch = self.best_bid() if is_bid else self.best_ask()
            if len(side) > self.depth:
                for px in self.sorted_side(is_bid)[self.depth :]:
                    del side[px]
            px = min(side) if is_bid else max(side)
            while len(side) < self.depth:
                px += step
                d = abs(px - touch)
                if self.rng.random() < _occupancy(d):
                    side[px] = self.level_size(d)

    # -- dynamics ----------------------------------------------------------------------------
    def recentre(self, new_bid: int, spread: int) -> None:
        """Move the touch to ``new_bid`` / ``new_bid + spread``.

        Levels that would cross are cancelled; the gap left behind the new touch is filled
        with the usual occupancy so the side stays realistic.
        """
        new_ask = new_bid + spread
        for px in [p for p in self.bids if p > new_bid]:
            del self.bids[px]
        for px in [p for p in self.asks if p < new_ask]:
            del self.asks[px]
        self._refill(True, new_bid)
        self._refill(False, new_ask)

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
        # Walk from the old inner level towards the new touch, placing levels by occupancy.
        for px in range(inner + step, touch, step):
            d = abs(touch - px)
            if self.rng.random() < _occupancy(d):
                side[px] = self.level_size(d)

    def perturb(self, n_events: int) -> None:
        """Random resizes / cancels / inserts, mostly near the touch (queue churn)."""
        rng = self.rng
        cache: dict[bool, list[int]] = {}
        for _ in range(n_events):
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            prices = cache.get(is_bid) or cache.setdefault(is_bid, self.sorted_side(is_bid))
            rank = min(int(rng.expovariate(1 / 8.0)), len(prices) - 1)
            px = prices[rank]
            d = abs(px - prices[0])
            u = rng.random()
            if u < 0.62:
                # Mean-reverting multiplicative resize keeps the profile stationary.
                target = self.spec.touch_size * _depth_factor(d) / self.spec.qty_step
                log_ratio = math.log(target / side[px])
                side[px] = max(1, round(side[px] * math.exp(0.15 * log_ratio + rng.gauss(0.0, 0.5))))
            elif u < 0.81 and rank > 0:
                del side[px]
                cache.pop(is_bid)
            else:
                gap = px + (-1 if is_bid else 1) * (1 + int(rng.expovariate(1 / 3.0)))
                if gap not in side:
                    side[gap] = self.level_size(abs(gap - prices[0]))
                    cache.pop(is_bid)

    def execute(self, is_buy: bool, lots: int, limit: int) -> list[tuple[int, int]]:
        """Match a taker order against the touch outwards; returns (price ticks, lots) per print.

        Each level is split into a few maker orders, so one level can print several trades.
        ``limit`` is the taker's IOC limit price: the ``MAX_SWEEP_LEVELS``-th level of the last
        published book on the side it takes. Orders earlier in the same step may already have
        consumed levels, so the walk must not simply take the current best ``MAX_SWEEP_LEVELS``
        levels: that would reach levels the consumer never saw within sweep range. The current
        book is a subset of the published one between pushes, so the levels inside ``limit`` are
        among the current best ``MAX_SWEEP_LEVELS``. Never empties a side.
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
                del side[px]
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


def _diff_side(old: dict[int, int], new: dict[int, int], is_bid: bool) -> list[tuple[int, int]]:
    """Changed levels (price, lots; 0 = delete), bids descending / asks ascending like Bybit."""
    changes = [(px, sz) for px, sz in new.items() if old.get(px) != sz]
    changes += [(px, 0) for px in old if px not in new]
    changes.sort(reverse=is_bid)
    return changes


# --------------------------------------------------------------------------------------------
# Order flow and price process
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Hawkes:
    """Self-exciting taker-order arrivals with a fast (burst) and a slow (cluster) kernel.

    Rates in events/s, decays in 1/s. Simulated exactly by Ogata thinning, with the baseline
    held constant within a book step.
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


def _mid_move(rng: random.Random, scale_ticks: float, flow_bias: float) -> int:
    """Signed mid move in ticks for one step: often 0, else Laplace-like, rare large jumps.

    ``scale_ticks`` is the step std in ticks; ``flow_bias`` in [-1, 1] tilts the sign towards
    recent taker flow so prices drift with aggression.
    """
    if scale_ticks < 1.0:
        # Large tick: a step's std is below one tick, so the mid moves by single ticks with
        # probability scale^2 (same variance); the touch then persists for many steps.
        if rng.random() >= scale_ticks * scale_ticks:
            return 0
        return 1 if rng.random() < 0.5 + 0.1 * flow_bias else -1
    p_move = 0.65
    if rng.random() > p_move:
        return 0
    if rng.random() < 0.004:
        size = scale_ticks * (4 + 6 * rng.random())  # news-like jump
    else:
        # Exponential magnitude with E[x^2] = 2 m^2; m chosen so total variance ~ scale^2.
        size = rng.expovariate(1.0) * scale_ticks / math.sqrt(2 * p_move)
    up = rng.random() < 0.5 + 0.1 * flow_bias
    return (1 if up else -1) * max(1, round(size))


def _next_spread(rng: random.Random, current: int) -> int:
    """Markov spread in ticks: mostly 1, occasional short-lived wider spreads."""
    if current > 1 and rng.random() < 0.45:
        return current
    if rng.random() < 0.94:
        return 1
    return 2 + min(int(rng.expovariate(1 / 1.5)), 10)


# --------------------------------------------------------------------------------------------
# Message assembly
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Clock:
    """Receive-time model: exchange ts + lognormal feed latency, never decreasing."""

    rng: random.Random
    last_local: int = 0

    def local(self, ts_ms: int) -> int:
        latency_ns = int(3.0e6 * math.exp(self.rng.gauss(0.0, 0.5)))
        self.last_local = max(self.last_local, ts_ms * NS_PER_MS + latency_ns)
        return self.last_local


def _book_message(
    fmt: _Formatter, spec: InstrumentSpec, depth: int, kind: str, ts: int, cts: int,
    bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]], u: int, seq: int, local: int,
) -> dict[str, Any]:
    return {
        "topic": f"orderbook.{depth}.{spec.symbol}",
        "type": kind,
        "ts": ts,
        "data": {"s": spec.symbol, "b": fmt.levels(bids), "a": fmt.levels(asks), "u": u, "seq": seq},
        "cts": cts,
        "local_ts_ns": local,
    }


def _tick_direction(px: int, last_px: int | None, last_dir: str) -> str:
    if last_px is None or px == last_px:
        return "ZeroPlusTick" if last_dir.endswith("PlusTick") else "ZeroMinusTick"
    return "PlusTick" if px > last_px else "MinusTick"


@dataclass(slots=True)
class _TradeTape:
    spec: InstrumentSpec
    rng: random.Random
    last_px: int | None = None
    last_dir: str = "ZeroPlusTick"

    def message(self, T: int, ts: int, is_buy: bool, prints: list[tuple[int, int]], local: int) -> dict[str, Any]:
        data = []
        for px, lots in prints:
            self.last_dir = _tick_direction(px, self.last_px, self.last_dir)
            self.last_px = px
            data.append({
                "T": T,
                "s": self.spec.symbol,
                "S": "Buy" if is_buy else "Sell",
                "v": format_qty(lots, self.spec),
                "p": format_price(px, self.spec),
                "L": self.last_dir,
                "i": _uuid_like(self.rng),
                "BT": False,
                "RPI": False,
            })
        topic = f"publicTrade.{self.spec.symbol}"
        return {"topic": topic, "type": "snapshot", "ts": ts, "data": data, "local_ts_ns": local}


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    """Mutable state of one generated recording; ``run`` yields its messages in file order."""

    spec: InstrumentSpec
    start_ms: int
    depth: int
    rng: random.Random
    book: _Book = field(init=False)
    hawkes: _Hawkes = field(init=False)
    regime: _Regime = field(init=False)
    clock: _Clock = field(init=False)
    tape: _TradeTape = field(init=False)
    flow_rng: random.Random = field(init=False)
    fmt: _Formatter = field(init=False)
    u: int = 0
    seq: int = 0
    ts: int = 0  # exchange ts (ms) of the last book message
    spread: int = 1  # ticks
    flow: float = 0.0  # decaying signed count of recent taker orders
    last_buy: bool = True
    last_trade_ts: int = 0
    published: tuple[dict[int, int], dict[int, int]] = field(default_factory=lambda: ({}, {}))
    # Takers' IOC limit prices from the last published book: (sell limit on bids, buy limit on asks).
    sweep_limits: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        # Independent sub-streams, so a change in one component does not reshuffle the others.
        sub = [random.Random(self.rng.getrandbits(64)) for _ in range(6)]
        self.book = _Book(self.spec, sub[0], self.depth)
        self.hawkes, self.regime, self.clock = _Hawkes(sub[1]), _Regime(sub[2]), _Clock(sub[3])
        self.tape, self.flow_rng = _TradeTape(self.spec, sub[4]), sub[5]
        self.fmt = _Formatter(self.spec)

    def run(self, n_steps: int) -> Iterator[dict[str, Any]]:
        spec = self.spec
        tick_bps = spec.tick_size / spec.start_mid * 1e4
        # Per-step std in ticks so that sqrt(steps per minute) steps give vol_bps_per_min.
        step_scale = spec.vol_bps_per_min / tick_bps / math.sqrt(60_000 / STEP_MS)
        mu = spec.orders_per_s * (1 - self.hawkes.branching)  # long-run rate = mu / (1 - n)
        resubscribe_step = n_steps // 2 if n_steps >= 2 else -1

        self.book.build(round(spec.start_mid / spec.tick_size), 1)
        self.u = self.rng.randrange(10_000_000, 90_000_000)
        self.seq = self.rng.randrange(100_000_000_000, 200_000_000_000)
        self.ts = self.last_trade_ts = self.start_ms
        yield self._book_message("snapshot", self.ts - self.rng.randrange(1, 4))
        for step in range(1, n_steps + 1):
            prev_ts = self.ts
            self.ts = self.start_ms + step * STEP_MS + self.rng.randrange(0, 3)  # pushes jitter a few ms
            act = self.regime.step(STEP_MS / 1e3)
            swept, last_T = False, prev_ts
            for msg in self._trades(prev_ts, mu * act):
                swept |= len({t["p"] for t in msg["data"]}) > 1
                last_T = msg["data"][0]["T"]
                yield msg
            self.flow *= 0.97  # order-flow memory of a few seconds
            self._evolve_book(swept, step_scale, act)
            self.seq += self.rng.randrange(50, 600)
            cts = min(self.ts, max(last_T, self.ts - self.rng.randrange(0, 4)))
            if step == resubscribe_step:
                self.u += self.rng.randrange(20, 200)  # updates missed while resubscribing
                yield self._book_message("snapshot", cts)
            else:
                self.u += 1
                yield self._book_message("delta", cts)

    def _trades(self, prev_ts: int, mu: float) -> Iterator[dict[str, Any]]:
        """Trade messages between the previous book message and ``self.ts`` (exclusive)."""
        spec, rng = self.spec, self.flow_rng
        t0, t1 = (prev_ts - self.start_ms) / 1e3, (self.ts - self.start_ms) / 1e3
        for t_s in self.hawkes.events(t0, t1, mu):
            T = min(max(self.start_ms + int(t_s * 1e3 + 1e-6), prev_ts), self.ts - 1)
            # Side persists within a burst (one trader slicing an order), no long-run drift.
            is_buy = self.last_buy if rng.random() < 0.6 else rng.random() < 0.5
            self.last_buy = is_buy
            lots = spec.lots(spec.order_size * math.exp(rng.gauss(0.0, spec.order_sigma)))
            prints = self.book.execute(is_buy, lots, self.sweep_limits[is_buy])
            if not prints:
                continue
            self.flow += 0.6 if is_buy else -0.6
            # Bybit's push ts trails the match time T by a few ms but precedes the next book push.
            self.last_trade_ts = max(self.last_trade_ts, min(T + rng.randrange(0, 3), self.ts - 1))
            yield self.tape.message(T, self.last_trade_ts, is_buy, prints, self.clock.local(self.last_trade_ts))

    def _evolve_book(self, swept: bool, step_scale: float, act: float) -> None:
        """Mid move, touch re-centring and queue churn for one step."""
        rng = self.rng
        # After a sweep, publish the widened spread for a step before liquidity refills.
        if not (swept and rng.random() < 0.7):
            self.spread = _next_spread(rng, self.spread)
            centre = (self.book.best_bid() + self.book.best_ask()) / 2
            centre += _mid_move(rng, step_scale * math.sqrt(act), math.tanh(self.flow))
            self.book.recentre(math.floor(centre - self.spread / 2 + 1e-9), self.spread)
        self.book.perturb(_poisson(rng, 9.0 * act))
        self.book.fill_to_depth()

    def _book_message(self, kind: str, cts: int) -> dict[str, Any]:
        """Snapshot of the book, or the diff against the last published book; then publish."""
        book = self.book
        if kind == "snapshot":
            bids, asks = sorted(book.bids.items(), reverse=True), sorted(book.asks.items())
        else:
            bids, asks = _diff_side(self.published[0], book.bids, True), _diff_side(self.published[1], book.asks, False)
        self.published = (dict(book.bids), dict(book.asks))
        self.sweep_limits = (heapq.nlargest(MAX_SWEEP_LEVELS, book.bids)[-1],
                             heapq.nsmallest(MAX_SWEEP_LEVELS, book.asks)[-1])
        return _book_message(self.fmt, self.spec, self.depth, kind, self.ts, cts, bids, asks, self.u, self.seq,
                             self.clock.local(self.ts))


def generate(symbol: str, start_ns: int, minutes: float, seed: int, depth: int = 50) -> Iterator[dict[str, Any]]:
    """Messages of a synthetic recording, in file order (``local_ts_ns`` non-decreasing).

    One snapshot at ``start_ns``, a delta every 100 ms, trade messages in between, and one
    resubscribe snapshot half way. Deterministic in (symbol, start_ns, minutes, seed, depth).
    """
    spec = INSTRUMENTS.get(symbol)
    if spec is None:
        raise ValueError(f"unknown symbol {symbol!r}; known: {', '.join(INSTRUMENTS)}")
    if depth < 5:
        raise ValueError("depth must be >= 5")
    session = _Session(spec, start_ns // NS_PER_MS, depth, random.Random(seed))
    return session.run(int(round(minutes * 60_000 / STEP_MS)))


def _poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw by inversion (small lam), deterministic under ``rng``."""
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
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) if gz else raw
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
    parser.add_argument("--symbol", default="BTCUSDT", choices=sorted(INSTRUMENTS))
    parser.add_argument("--start", default=DEFAULT_START, help="UTC start, ISO-8601 (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--depth", type=int, default=50, help="levels per side (topic orderbook.DEPTH.SYMBOL)")
    parser.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    n = write_recording(args.out, generate(args.symbol, parse_start(args.start), args.minutes, args.seed, args.depth))
    size = Path(args.out).stat().st_size
    print(f"wrote {n} messages, {size / 1e6:.2f} MB to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
