"""Market-data statistics for Bybit-format recordings: the real samples and the synthetic data,
measured by the same code (docs/data.md, "Real vs generated").

Inputs are Bybit v5 public messages as dicts (``orderbook.N.SYM`` snapshot/delta and
``publicTrade.SYM``), either mmbot recordings (``.jsonl`` / ``.jsonl.gz`` with ``local_ts_ns``) or
Bybit's historical order-book files (``YYYY-MM-DD_SYM_obN.data``, one JSON per line, no
``local_ts_ns``). Binance trade parquet files (columns ``timestamp``, ``quantity``) are read for
trade statistics only.

Units: spreads and level distances in ticks, sizes in lots (the instrument's qty step) or in
multiples of a median as named, times in ms, rates per second, volatility in bps.

CLI::

    python -m tools.data_stats FILE [--tick 0.1] [--top-n 50]     # JSON statistics of one file
    python -m tools.data_stats --compare [--minutes 60 --seed 7]   # markdown table real vs generated
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import heapq
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_LEVELS = 10
BUCKET_MS = 100  # levels changed are counted per 100 ms of exchange time (Bybit's ob200/ob500 cadence)
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
XRP_SAMPLE = FIXTURES / "2024-12-01_XRPUSDT_ob500.data"
BINANCE_TRADES = FIXTURES / "binance_btcusdt-trades.parquet"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def iter_messages(path: str | Path) -> Iterator[dict[str, Any]]:
    """Messages of a ``.jsonl``, ``.jsonl.gz`` or Bybit ``.data`` file, in file order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_binance_trades(path: str | Path) -> tuple[list[int], list[float]]:
    """Trade times (ms since epoch) and sizes (base units) of a Binance trades parquet file."""
    import pandas as pd

    df = pd.read_parquet(path).sort_values(["timestamp", "trade_id"], kind="stable")
    times = (df["timestamp"].astype("datetime64[ms, UTC]").astype("int64")).tolist()
    return [int(t) for t in times], df["quantity"].astype(float).tolist()


def tick_for(symbol: str) -> float | None:
    """Tick size of a known symbol (from the generator's instrument table), else None."""
    from tools.gen_synthetic import INSTRUMENTS

    spec = INSTRUMENTS.get(symbol)
    return spec.tick_size if spec else None


def infer_tick(messages: Iterable[dict[str, Any]]) -> float:
    """Smallest positive price gap in the first order-book snapshot (a dense book shows the tick)."""
    for msg in messages:
        if msg.get("topic", "").startswith("orderbook.") and msg.get("type") == "snapshot":
            prices = sorted({float(p) for p, _ in msg["data"]["b"] + msg["data"]["a"]})
            gaps = [b - a for a, b in zip(prices, prices[1:]) if b - a > 0]
            if gaps:
                return float(f"{min(gaps):.10g}")
    raise ValueError("no order-book snapshot to infer the tick from; pass --tick")


# --------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), NaN for an empty sequence."""
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else math.nan


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _cv(values: Sequence[float]) -> float:
    """Coefficient of variation (population std / mean); 1 for a Poisson process."""
    if len(values) < 2:
        return math.nan
    arr = np.asarray(values, dtype=float)
    m = arr.mean()
    return float(arr.std() / m) if m > 0 else math.nan


def fano_factor(times_ms: Sequence[int], window_ms: int = 1000) -> float:
    """Variance / mean of event counts in consecutive ``window_ms`` windows (1 for Poisson,
    > 1 for clustered arrivals); NaN with fewer than 3 windows."""
    if len(times_ms) < 2:
        return math.nan
    t = np.asarray(times_ms, dtype=np.int64)
    counts = np.bincount((t - t.min()) // window_ms)
    if len(counts) < 3 or counts.mean() == 0:
        return math.nan
    return float(counts.var() / counts.mean())


def hill_tail_index(values: Sequence[float], top_share: float = 0.05) -> float:
    """Hill estimator of the tail exponent alpha from the largest ``top_share`` of ``values``
    (``P(X > x) ~ x^-alpha``; smaller = heavier tail). NaN with fewer than 20 tail points."""
    arr = np.sort(np.asarray(values, dtype=float))[::-1]
    k = int(len(arr) * top_share)
    if k < 20 or arr[k] <= 0:
        return math.nan
    return float(1.0 / np.mean(np.log(arr[:k] / arr[k])))


def _r(x: float | None, nd: int = 4) -> float | None:
    """Round for JSON output; NaN becomes null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def _dist_stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": _r(_mean(values), 3),
        "median": _r(_quantile(values, 0.5), 3),
        "p90": _r(_quantile(values, 0.9), 3),
        "max": _r(float(max(values)), 3) if len(values) else None,
    }


# --------------------------------------------------------------------------------------------
# Order book
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DictBook:
    """Price-level book keyed by integer ticks; sizes in base units."""

    tick: float
    bids: dict[int, float] = field(default_factory=dict)
    asks: dict[int, float] = field(default_factory=dict)

    def to_ticks(self, price: str) -> int:
        return round(float(price) / self.tick)

    def apply(self, msg: dict[str, Any]) -> None:
        """Apply a snapshot (reset) or delta (size 0 deletes) message."""
        data = msg["data"]
        if msg["type"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for price, size in levels:
                px, sz = self.to_ticks(price), float(size)
                if sz == 0.0:
                    side.pop(px, None)
                else:
                    side[px] = sz

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def top(self, n: int) -> tuple[list[int], list[int]]:
        """Best n bid prices (descending) and best n ask prices (ascending), in ticks."""
        return heapq.nlargest(n, self.bids), heapq.nsmallest(n, self.asks)

    def nth(self, n: int) -> tuple[int | None, int | None]:
        """The n-th best bid and ask price (ticks; None if the side has fewer levels)."""
        b, a = self.top(n)
        return (b[-1] if len(b) == n else None), (a[-1] if len(a) == n else None)


def levels_changed(msg: dict[str, Any]) -> int:
    """Number of price levels listed in a delta (both sides)."""
    return len(msg["data"]["b"]) + len(msg["data"]["a"])


@dataclass(slots=True)
class _BookAccumulator:
    tick: float
    top_n: int | None
    book: DictBook = field(init=False)
    n_snapshots: int = 0
    n_deltas: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    last_push_ts: int | None = None
    push_gaps: list[int] = field(default_factory=list)
    ts_minus_cts: list[int] = field(default_factory=list)
    snapshot_levels: list[tuple[int, int]] = field(default_factory=list)
    spreads: list[int] = field(default_factory=list)
    level1: list[float] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    # 100 ms buckets of exchange time: distinct (side, price) changed within the best N / best 5.
    bucket: int | None = None
    bucket_top: set = field(default_factory=set)
    bucket_top5: set = field(default_factory=set)
    changed_topn_100ms: list[int] = field(default_factory=list)
    changed_top5_100ms: list[int] = field(default_factory=list)
    touch_moves: int = 0
    last_touch: tuple[int, int] | None = None
    crossed: int = 0
    size_sum: np.ndarray = field(default_factory=lambda: np.zeros((2, PROFILE_LEVELS)))
    dist_sum: np.ndarray = field(default_factory=lambda: np.zeros((2, PROFILE_LEVELS)))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((2, PROFILE_LEVELS)))
    mids: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = DictBook(self.tick)

    def add(self, msg: dict[str, Any]) -> None:
        ts = int(msg["ts"])
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.last_ts = ts
        if self.last_push_ts is not None:
            self.push_gaps.append(ts - self.last_push_ts)
        self.last_push_ts = ts
        if "cts" in msg:
            self.ts_minus_cts.append(ts - int(msg["cts"]))
        if msg["type"] == "snapshot":
            self.n_snapshots += 1
            self.snapshot_levels.append((len(msg["data"]["b"]), len(msg["data"]["a"])))
            self.book.apply(msg)
        else:
            self.n_deltas += 1
            self.changed.append(levels_changed(msg))
            self._window_changes(ts, msg)
        self._sample(ts)

    def _window_changes(self, ts: int, msg: dict[str, Any]) -> None:
        """Apply a delta, collecting the changed levels that are within the best ``top_n`` (and
        best 5) of their side before or after it: an ob500 stream then compares with an ob50 one."""
        book = self.book
        n = self.top_n or 10**9
        before = (book.nth(n), book.nth(5))
        book.apply(msg)
        after = (book.nth(n), book.nth(5))
        key = ts // BUCKET_MS
        if key != self.bucket:
            self._close_bucket()
            self.bucket = key
        for window, out in ((0, self.bucket_top), (1, self.bucket_top5)):
            (b0, a0), (b1, a1) = before[window], after[window]
            # A side with fewer than N levels (before or after) has every level in its window.
            bid_floor = None if b0 is None or b1 is None else min(b0, b1)
            ask_cap = None if a0 is None or a1 is None else max(a0, a1)
            for price, _ in msg["data"]["b"]:
                px = book.to_ticks(price)
                if bid_floor is None or px >= bid_floor:
                    out.add((0, px))
            for price, _ in msg["data"]["a"]:
                px = book.to_ticks(price)
                if ask_cap is None or px <= ask_cap:
                    out.add((1, px))

    def _close_bucket(self) -> None:
        if self.bucket is not None:
            self.changed_topn_100ms.append(len(self.bucket_top))
            self.changed_top5_100ms.append(len(self.bucket_top5))
        self.bucket_top = set()
        self.bucket_top5 = set()

    def _sample(self, ts: int) -> None:
        bb, ba = self.book.best_bid(), self.book.best_ask()
        if bb is None or ba is None:
            return
        self.spreads.append(ba - bb)
        self.crossed += ba <= bb
        self.level1.append((self.book.bids[bb] + self.book.asks[ba]) / 2)
        if self.last_touch is not None and self.last_touch != (bb, ba):
            self.touch_moves += 1
        self.last_touch = (bb, ba)
        self.mids.append((ts, (ba + bb) / 2))
        bids, asks = self.book.top(PROFILE_LEVELS)
        for s, (prices, levels, touch) in enumerate(((bids, self.book.bids, bb), (asks, self.book.asks, ba))):
            for k, px in enumerate(prices):
                self.size_sum[s, k] += levels[px]
                self.dist_sum[s, k] += abs(px - touch)
                self.counts[s, k] += 1

    def result(self) -> dict[str, Any]:
        self._close_bucket()
        n_msgs = self.n_snapshots + self.n_deltas
        span_s = ((self.last_ts or 0) - (self.first_ts or 0)) / 1e3
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_size = self.size_sum / self.counts
            mean_dist = self.dist_sum / self.counts
        unit = float(np.nanmean(mean_size[:, 0])) if self.counts[:, 0].any() else math.nan
        profile = np.nanmean(mean_size, axis=0) / unit
        out: dict[str, Any] = {
            "book_messages": n_msgs,
            "snapshots": self.n_snapshots,
            "deltas": self.n_deltas,
            "snapshot_levels": self.snapshot_levels,
            "span_s": _r(span_s, 3),
            "update_rate_per_s": _r((n_msgs - 1) / span_s if span_s > 0 else math.nan, 3),
            "push_interval_ms": _dist_stats(self.push_gaps),
            "ts_minus_cts_ms": _dist_stats(self.ts_minus_cts),
            "crossed_samples": self.crossed,
            "spread_ticks": _spread_stats(self.spreads),
            "level1_size_mean": _r(unit, 6),
            "level1_size": _dist_stats(self.level1),
            "depth_profile": [_r(x, 3) for x in profile],
            "level_distance_ticks": [_r(x, 2) for x in np.nanmean(mean_dist, axis=0)],
            "levels_changed": _dist_stats(self.changed),
            "touch_moves_per_s": _r(self.touch_moves / span_s if span_s > 0 else math.nan, 3),
            "mid_vol_bps_per_min": _r(_mid_vol_bps_per_min(self.mids, self.tick), 3),
            "mid_vol_1min_bps": _r(_mid_vol_1min_bps(self.mids), 3),
            "mid_range_bps": _r(_mid_range_bps(self.mids), 2),
        }
        if self.top_n:
            out[f"levels_changed_top{self.top_n}_per_100ms"] = _dist_stats(self.changed_topn_100ms)
        out["levels_changed_top5_per_100ms"] = _dist_stats(self.changed_top5_100ms)
        return out


def _spread_stats(spreads: Sequence[int]) -> dict[str, float | None]:
    """Spread in ticks: share of samples at exactly 1 tick, mean, 90th and 99th percentile."""
    if not spreads:
        return {"share_1tick": None, "mean": None, "p90": None, "p99": None}
    arr = np.asarray(spreads)
    return {"share_1tick": _r(float((arr == 1).mean())), "mean": _r(arr.mean()),
            "p90": _r(_quantile(arr, 0.9)), "p99": _r(_quantile(arr, 0.99))}


def _mid_vol_bps_per_min(mids: Sequence[tuple[int, float]], tick: float) -> float:
    """Std of 1-second mid log-returns scaled by sqrt(60), in bps (last mid of each second)."""
    by_second: dict[int, float] = {}
    for ts, mid in mids:
        by_second[ts // 1000] = mid
    if len(by_second) < 3:
        return math.nan
    secs = sorted(by_second)
    series = np.array([by_second[s] for s in range(secs[0], secs[-1] + 1) if s in by_second])
    rets = np.diff(np.log(series * tick))
    return float(rets.std() * math.sqrt(60) * 1e4)


def _mid_vol_1min_bps(mids: Sequence[tuple[int, float]]) -> float:
    """Std of 1-minute mid log-returns in bps (last mid of each minute); NaN under 3 minutes."""
    by_minute: dict[int, float] = {}
    for ts, mid in mids:
        by_minute[ts // 60_000] = mid
    if len(by_minute) < 4:
        return math.nan
    series = np.array([by_minute[m] for m in sorted(by_minute)])
    return float(np.diff(np.log(series)).std() * 1e4)


def _mid_range_bps(mids: Sequence[tuple[int, float]]) -> float:
    if not mids:
        return math.nan
    arr = np.array([m for _, m in mids])
    return float((arr.max() - arr.min()) / arr.mean() * 1e4)


def book_stats(messages: Iterable[dict[str, Any]], tick: float, top_n: int | None = None) -> dict[str, Any]:
    """Order-book statistics of the ``orderbook.*`` messages in ``messages``.

    Spread, level-1 size and the depth profile are sampled after every book message (Bybit
    pushes at a fixed cadence, so message-weighted is close to time-weighted). ``top_n`` adds
    the distinct levels changed per 100 ms of exchange time within the best ``top_n`` per side.
    """
    acc = _BookAccumulator(tick, top_n)
    for msg in messages:
        if msg.get("topic", "").startswith("orderbook."):
            acc.add(msg)
    return acc.result()


# --------------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------------


def trade_stats(times_ms: Sequence[int], sizes: Sequence[float]) -> dict[str, Any]:
    """Trade-print statistics: sizes in multiples of the median, inter-arrival in ms.

    Inter-arrival is between consecutive prints (fills), so prints of one taker order that
    share a millisecond count as 0 ms gaps, as they do in Binance's trade feed. The Fano factor
    is over 1-second windows.
    """
    sizes_arr = np.asarray(sizes, dtype=float)
    med = float(np.median(sizes_arr)) if len(sizes_arr) else math.nan
    gaps = np.diff(np.sort(np.asarray(times_ms, dtype=np.int64))).astype(float)
    span_s = (max(times_ms) - min(times_ms)) / 1e3 if len(times_ms) > 1 else math.nan
    return {
        "prints": len(sizes_arr),
        "span_s": _r(span_s, 3),
        "prints_per_s": _r(len(sizes_arr) / span_s if span_s and span_s > 0 else math.nan, 3),
        "size_median": _r(med, 6),
        "size_rel": {
            "mean": _r(sizes_arr.mean() / med if len(sizes_arr) else math.nan, 3),
            "median": 1.0 if len(sizes_arr) else None,
            "p90": _r(_quantile(sizes_arr, 0.9) / med, 3),
            "p99": _r(_quantile(sizes_arr, 0.99) / med, 3),
        },
        "size_tail_index": _r(hill_tail_index(sizes_arr), 3),
        "interarrival_ms": {
            "mean": _r(_mean(gaps), 3),
            "median": _r(_quantile(gaps, 0.5), 3),
            "cv": _r(_cv(gaps), 3),
            "share_zero": _r(float((gaps == 0).mean()) if len(gaps) else math.nan, 4),
        },
        "fano_1s": _r(fano_factor(times_ms), 3),
    }


def trade_stats_from_messages(messages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Print and message statistics of the ``publicTrade.*`` messages in ``messages``."""
    times: list[int] = []
    sizes: list[float] = []
    n_msgs = 0
    multi_price = 0
    buys = 0
    for msg in messages:
        if not msg.get("topic", "").startswith("publicTrade."):
            continue
        n_msgs += 1
        multi_price += len({t["p"] for t in msg["data"]}) > 1
        for t in msg["data"]:
            times.append(int(t["T"]))
            sizes.append(float(t["v"]))
            buys += t["S"] == "Buy"
    out = trade_stats(times, sizes)
    out["messages"] = n_msgs
    out["messages_per_s"] = _r(n_msgs / out["span_s"] if out["span_s"] else math.nan, 3)
    out["sweep_share"] = _r(multi_price / n_msgs if n_msgs else math.nan, 4)
    out["buy_share"] = _r(buys / len(sizes) if sizes else math.nan, 4)
    return out


# --------------------------------------------------------------------------------------------
# Receive times (recordings)
# --------------------------------------------------------------------------------------------


def receive_stats(messages: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Feed latency per stream and the receive order of trades vs the book push reflecting them.

    Feed latency = ``local_ts_ns`` - exchange time (book: the push's ``ts``; trades: the match
    time ``T`` of the message's first print), in ms. The push that reflects a trade is the first
    book message whose ``ts`` >= the trade's ``T`` (with Bybit's ``seq`` on both streams, the
    first with ``seq`` >= the trade's). None when the messages carry no receive times.
    """
    book_ts: list[int] = []
    book_seq: list[int] = []
    book_local: list[int] = []
    trades: list[tuple[int, int | None, int]] = []
    for m in messages:
        local = m.get("local_ts_ns")
        if not isinstance(local, int):
            return None
        topic = m.get("topic", "")
        if topic.startswith("orderbook."):
            book_ts.append(int(m["ts"]))
            book_seq.append(int(m["data"].get("seq", -1)))
            book_local.append(local)
        elif topic.startswith("publicTrade."):
            first = m["data"][0]
            trades.append((int(first["T"]), first.get("seq"), local))
    if not book_ts or not trades:
        return None
    use_seq = all(s is not None for _, s, _ in trades) and all(s >= 0 for s in book_seq)
    before = after = 0
    for T, seq, local in trades:
        i = bisect.bisect_left(book_seq, seq) if use_seq else bisect.bisect_left(book_ts, T)
        if i >= len(book_ts):
            continue
        if local < book_local[i]:
            before += 1
        else:
            after += 1
    book_lat = (np.asarray(book_local) - np.asarray(book_ts) * 1_000_000) / 1e6
    trade_lat = np.asarray([local - T * 1_000_000 for T, _, local in trades]) / 1e6
    n = before + after
    return {
        "book_latency_ms": _dist_stats(book_lat.tolist()) | {"p99": _r(_quantile(book_lat, 0.99), 3)},
        "trade_latency_ms": _dist_stats(trade_lat.tolist()) | {"p99": _r(_quantile(trade_lat, 0.99), 3)},
        "trades_matched": n,
        "matched_by": "seq" if use_seq else "ts",
        "share_trade_received_first": _r(before / n if n else math.nan, 4),
        "share_book_received_first": _r(after / n if n else math.nan, 4),
    }


# --------------------------------------------------------------------------------------------
# Whole file
# --------------------------------------------------------------------------------------------


def compute_stats(
    messages: Iterable[dict[str, Any]], tick: float | None = None, top_n: int | None = None
) -> dict[str, Any]:
    """Book, trade and receive-time statistics of a message sequence; ``tick`` defaults to the symbol's."""
    msgs = list(messages)
    if tick is None:
        symbols = [m["data"]["s"] for m in msgs if m.get("topic", "").startswith("orderbook.")]
        tick = (tick_for(symbols[0]) if symbols else None) or infer_tick(msgs)
    out: dict[str, Any] = {"messages": len(msgs), "tick": tick}
    if any(m.get("topic", "").startswith("orderbook.") for m in msgs):
        out["book"] = book_stats(msgs, tick, top_n)
    if any(m.get("topic", "").startswith("publicTrade.") for m in msgs):
        out["trades"] = trade_stats_from_messages(msgs)
    recv = receive_stats(msgs)
    if recv is not None:
        out["receive"] = recv
    return out


def file_stats(path: str | Path, tick: float | None = None, top_n: int | None = None) -> dict[str, Any]:
    """Statistics of a recording, Bybit ``.data`` file, or Binance trades ``.parquet``."""
    path = Path(path)
    if path.suffix == ".parquet":
        times, sizes = read_binance_trades(path)
        return {"trades": trade_stats(times, sizes)}
    return compute_stats(iter_messages(path), tick, top_n)


# --------------------------------------------------------------------------------------------
# Real vs generated table
# --------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _get(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _dist_str(d: dict | None, keys: Sequence[str] = ("mean", "median", "p90", "max")) -> str:
    return "n/a" if d is None else " / ".join(_fmt(d.get(k)) for k in keys)


def comparison_rows(real_book: dict, real_trades: dict, generated: Sequence[dict]) -> list[tuple[str, str, list[str]]]:
    """(statistic, real source, [real, generated...]) rows.

    Real book statistics come from the XRPUSDT ob500 sample, real trade statistics from the
    Binance BTCUSDT trades; "n/a" where a source has no such quantity.
    """
    ob, bn = "XRP ob500 (4.8 s)", "Binance BTC spot (46 s)"

    def row(label: str, src: str, real: dict, fn: Any) -> tuple[str, str, list[str]]:
        vals = []
        for d in (real, *generated):
            try:
                vals.append(fn(d))
            except (KeyError, TypeError):
                vals.append("n/a")
        return (label, src, vals)

    def b(*keys: str) -> Any:
        return lambda d: _fmt(_get(d, "book", *keys))

    def t(*keys: str) -> Any:
        return lambda d: _fmt(_get(d, "trades", *keys))

    def profile(d: dict) -> str:
        p = _get(d, "book", "depth_profile")
        return " / ".join(_fmt(p[i]) for i in (0, 1, 2, 4, 9))

    return [
        row("book push interval: median / p90 (ms)", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "push_interval_ms"), ("median", "p90"))),
        row("book ts - cts: median / p90 / max (ms)", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "ts_minus_cts_ms"), ("median", "p90", "max"))),
        row("spread: share at 1 tick", ob, real_book, b("spread_ticks", "share_1tick")),
        row("spread: mean / p99 (ticks)", ob, real_book,
            lambda d: f"{_fmt(_get(d, 'book', 'spread_ticks', 'mean'))} / {_fmt(_get(d, 'book', 'spread_ticks', 'p99'))}"),
        row("level-1 size: mean / median / p90 (lots)", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "level1_size"), ("mean", "median", "p90"))),
        row("depth profile, levels 1/2/3/5/10 (x mean L1 size)", ob, real_book, profile),
        row("touch moves (best bid or ask price changes) / s", ob, real_book, b("touch_moves_per_s")),
        row("levels changed per 100 ms, best 5 per side: mean / median / p90 / max", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "levels_changed_top5_per_100ms"))),
        row("levels changed per 100 ms, best 50 per side: mean / median / p90 / max", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "levels_changed_top50_per_100ms"))),
        row("levels per delta message: mean / median / p90 / max", ob, real_book,
            lambda d: _dist_str(_get(d, "book", "levels_changed"))),
        row("mid vol, 1 s returns x sqrt(60) (bps / min)", ob, real_book, b("mid_vol_bps_per_min")),
        row("mid vol, 1 min returns (bps / min)", ob, real_book, b("mid_vol_1min_bps")),
        row("trade prints / s", bn, real_trades, t("prints_per_s")),
        row("taker orders (trade messages) / s", bn, real_trades, t("messages_per_s")),
        row("trade size: mean / p90 / p99 (x median)", bn, real_trades,
            lambda d: _dist_str(_get(d, "trades", "size_rel"), ("mean", "p90", "p99"))),
        row("trade size: Hill tail index of the top 5 %", bn, real_trades, t("size_tail_index")),
        row("inter-arrival of prints: CV", bn, real_trades, t("interarrival_ms", "cv")),
        row("inter-arrival: share of 0 ms gaps", bn, real_trades, t("interarrival_ms", "share_zero")),
        row("print counts per 1 s: Fano factor", bn, real_trades, t("fano_1s")),
        row("feed latency, book: median / p99 (ms)", "-", {},
            lambda d: _dist_str(_get(d, "receive", "book_latency_ms"), ("median", "p99"))),
        row("feed latency, trades: median / p99 (ms)", "-", {},
            lambda d: _dist_str(_get(d, "receive", "trade_latency_ms"), ("median", "p99"))),
        row("trades received after the book push that reflects them", "-", {},
            lambda d: _fmt(_get(d, "receive", "share_book_received_first"))),
    ]


def comparison_table(minutes: float = 60.0, seed: int = 7, synthetic: Sequence[str | Path] | None = None) -> str:
    """Markdown table: the real fixtures vs generated XRPUSDT and BTCUSDT (ob50, 20 ms pushes).

    The generated columns are produced in memory (``minutes``, ``seed``, the embedded catalog's
    start times) unless recording files are given.
    """
    from tools.build_catalog import DATASETS
    from tools.gen_synthetic import generate, parse_start

    real_book = file_stats(XRP_SAMPLE, top_n=50)
    real_trades = file_stats(BINANCE_TRADES)
    gens, names = [], []
    if synthetic:
        for path in synthetic:
            gens.append(file_stats(path, top_n=50))
            names.append(Path(path).name)
    else:
        for ds in DATASETS:
            gens.append(compute_stats(generate(ds.symbol, parse_start(ds.start), min(minutes, ds.minutes), seed,
                                               ds.depth), top_n=50))
            names.append(f"generated {ds.symbol} ob{ds.depth}")
    lines = ["| statistic | real source | real | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for name, src, vals in comparison_rows(real_book, real_trades, gens):
        lines.append(f"| {name} | {src} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.data_stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help=".jsonl / .jsonl.gz recording, Bybit .data file, or Binance .parquet")
    parser.add_argument("--tick", type=float, default=None, help="tick size (default: symbol table, else inferred)")
    parser.add_argument("--top-n", type=int, default=None, help="also count levels changed within the best N levels")
    parser.add_argument("--compare", action="store_true", help="print the real-vs-generated markdown table")
    parser.add_argument("--minutes", type=float, default=60.0, help="--compare: generated minutes (at most each dataset's)")
    parser.add_argument("--seed", type=int, default=7, help="--compare: generator seed")
    parser.add_argument("--synthetic", nargs="*", default=None, help="--compare: use these recordings instead of generating")
    args = parser.parse_args(argv)
    if args.compare:
        print(comparison_table(args.minutes, args.seed, args.synthetic))
        return 0
    if not args.file:
        parser.error("FILE is required unless --compare is given")
    print(json.dumps(file_stats(args.file, args.tick, args.top_n), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
