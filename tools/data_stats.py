"""Market-data statistics for Bybit-format recordings, used to calibrate the synthetic generator.

Inputs are Bybit v5 public messages as dicts (``orderbook.N.SYM`` snapshot/delta and
``publicTrade.SYM``), either mmbot recordings (``.jsonl`` / ``.jsonl.gz`` with ``local_ts_ns``) or
Bybit's historical order-book files (``YYYY-MM-DD_SYM_obN.data``, one JSON per line, no
``local_ts_ns``). Binance trade parquet files (columns ``timestamp``, ``quantity``) are read for
trade statistics only.

Units: spreads and level distances in ticks, depth in multiples of the mean level-1 size,
times in ms, rates per second, volatility in bps, trade sizes in multiples of the median print.

CLI::

    python -m tools.data_stats FILE [--tick 0.1] [--top-n 50]     # JSON statistics of one file
    python -m tools.data_stats --compare [--minutes 60 --seed 7]   # markdown table real vs synthetic
"""

from __future__ import annotations

import argparse
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


def _r(x: float, nd: int = 4) -> float | None:
    """Round for JSON output; NaN becomes null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


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


def levels_changed(msg: dict[str, Any]) -> int:
    """Number of price levels listed in a delta (both sides)."""
    return len(msg["data"]["b"]) + len(msg["data"]["a"])


def _changed_in_window(book: DictBook, msg: dict[str, Any], top_n: int) -> int:
    """Levels of a delta that are within the top ``top_n`` of their side before or after it.

    Makes an ob500 stream comparable with an ob50 one: changes deep in the book are invisible
    to a depth-50 subscriber.
    """
    before_b, before_a = book.top(top_n)
    after = DictBook(book.tick, dict(book.bids), dict(book.asks))
    after.apply(msg)
    after_b, after_a = after.top(top_n)
    window_b, window_a = set(before_b) | set(after_b), set(before_a) | set(after_a)
    n = sum(book.to_ticks(p) in window_b for p, _ in msg["data"]["b"])
    return n + sum(book.to_ticks(p) in window_a for p, _ in msg["data"]["a"])


@dataclass(slots=True)
class _BookAccumulator:
    tick: float
    top_n: int | None
    book: DictBook = field(init=False)
    n_snapshots: int = 0
    n_deltas: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    snapshot_levels: list[tuple[int, int]] = field(default_factory=list)
    spreads: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    changed_window: list[int] = field(default_factory=list)
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
        if msg["type"] == "snapshot":
            self.n_snapshots += 1
            self.snapshot_levels.append((len(msg["data"]["b"]), len(msg["data"]["a"])))
        else:
            self.n_deltas += 1
            self.changed.append(levels_changed(msg))
            if self.top_n:
                self.changed_window.append(_changed_in_window(self.book, msg, self.top_n))
        self.book.apply(msg)
        self._sample(ts)

    def _sample(self, ts: int) -> None:
        bb, ba = self.book.best_bid(), self.book.best_ask()
        if bb is None or ba is None:
            return
        self.spreads.append(ba - bb)
        self.crossed += ba <= bb
        self.mids.append((ts, (ba + bb) / 2))
        bids, asks = self.book.top(PROFILE_LEVELS)
        for s, (prices, levels, touch) in enumerate(((bids, self.book.bids, bb), (asks, self.book.asks, ba))):
            for k, px in enumerate(prices):
                self.size_sum[s, k] += levels[px]
                self.dist_sum[s, k] += abs(px - touch)
                self.counts[s, k] += 1

    def result(self) -> dict[str, Any]:
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
            "crossed_samples": self.crossed,
            "spread_ticks": _spread_stats(self.spreads),
            "level1_size_mean": _r(unit, 6),
            "depth_profile": [_r(x, 3) for x in profile],
            "level_distance_ticks": [_r(x, 2) for x in np.nanmean(mean_dist, axis=0)],
            "levels_changed": _dist_stats(self.changed),
            "mid_vol_bps_per_min": _r(_mid_vol_bps_per_min(self.mids, self.tick), 3),
            "mid_vol_1min_bps": _r(_mid_vol_1min_bps(self.mids), 3),
            "mid_range_bps": _r(_mid_range_bps(self.mids), 2),
        }
        if self.top_n:
            out[f"levels_changed_top{self.top_n}"] = _dist_stats(self.changed_window)
        return out


def _spread_stats(spreads: Sequence[int]) -> dict[str, float | None]:
    """Spread in ticks: share of samples at exactly 1 tick, mean, 90th percentile."""
    if not spreads:
        return {"share_1tick": None, "mean": None, "p90": None}
    arr = np.asarray(spreads)
    return {"share_1tick": _r(float((arr == 1).mean())), "mean": _r(arr.mean()), "p90": _r(_quantile(arr, 0.9))}


def _dist_stats(values: Sequence[int]) -> dict[str, float | None]:
    return {
        "mean": _r(_mean(values), 3),
        "median": _r(_quantile(values, 0.5), 3),
        "p90": _r(_quantile(values, 0.9), 3),
        "max": max(values) if values else None,
    }


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

    Spread samples and the depth profile are taken after applying every book message
    (Bybit pushes at a fixed cadence, so message-weighted is close to time-weighted).
    ``top_n`` adds levels changed per delta restricted to the best ``top_n`` levels per side.
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
    share a millisecond count as 0 ms gaps, as they do in Binance's trade feed.
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
        "interarrival_ms": {
            "mean": _r(_mean(gaps), 3),
            "median": _r(_quantile(gaps, 0.5), 3),
            "cv": _r(_cv(gaps), 3),
            "share_zero": _r(float((gaps == 0).mean()) if len(gaps) else math.nan, 4),
        },
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
    out["sweep_share"] = _r(multi_price / n_msgs if n_msgs else math.nan, 4)
    out["buy_share"] = _r(buys / len(sizes) if sizes else math.nan, 4)
    return out


# --------------------------------------------------------------------------------------------
# Whole file
# --------------------------------------------------------------------------------------------


def compute_stats(
    messages: Iterable[dict[str, Any]], tick: float | None = None, top_n: int | None = None
) -> dict[str, Any]:
    """Book and trade statistics of a message sequence; ``tick`` defaults to the symbol's."""
    msgs = list(messages)
    if tick is None:
        symbols = [m["data"]["s"] for m in msgs if m.get("topic", "").startswith("orderbook.")]
        tick = (tick_for(symbols[0]) if symbols else None) or infer_tick(msgs)
    out: dict[str, Any] = {"messages": len(msgs), "tick": tick}
    if any(m.get("topic", "").startswith("orderbook.") for m in msgs):
        out["book"] = book_stats(msgs, tick, top_n)
    if any(m.get("topic", "").startswith("publicTrade.") for m in msgs):
        out["trades"] = trade_stats_from_messages(msgs)
    return out


def file_stats(path: str | Path, tick: float | None = None, top_n: int | None = None) -> dict[str, Any]:
    """Statistics of a recording, Bybit ``.data`` file, or Binance trades ``.parquet``."""
    path = Path(path)
    if path.suffix == ".parquet":
        times, sizes = read_binance_trades(path)
        return {"trades": trade_stats(times, sizes)}
    return compute_stats(iter_messages(path), tick, top_n)


# --------------------------------------------------------------------------------------------
# Real vs synthetic table
# --------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _profile_str(profile: Sequence[float | None], idx: Sequence[int] = (0, 1, 2, 4, 9)) -> str:
    return " / ".join(_fmt(profile[i]) for i in idx if i < len(profile))


def comparison_rows(real_book: dict, real_trades: dict, syn: dict) -> list[tuple[str, str, str, str]]:
    """(statistic, real source, real, synthetic) rows.

    Real book statistics come from the XRPUSDT ob500 sample, real trade statistics from the
    Binance BTCUSDT trades; rows without a real counterpart show "n/a".
    """
    rb, sb = real_book["book"], syn["book"]
    rt, st = real_trades["trades"], syn["trades"]
    ob, bn = "XRP ob500", "Binance"

    def book(label: str, fmt: Any) -> tuple[str, str, str, str]:
        return (label, ob, fmt(rb), fmt(sb))

    def trades(label: str, fmt: Any) -> tuple[str, str, str, str]:
        return (label, bn, fmt(rt), fmt(st))

    def spread(key: str) -> Any:
        return lambda b: _fmt(b["spread_ticks"][key])

    def interarrival(*keys: str) -> Any:
        return lambda t: " / ".join(_fmt(t["interarrival_ms"][k]) for k in keys)

    orders_per_s = st["messages"] / st["span_s"] if st["span_s"] else None
    return [
        book("book messages / span (s)", lambda b: f"{b['book_messages']} / {_fmt(b['span_s'])}"),
        book("book update rate (msg/s)", lambda b: _fmt(b["update_rate_per_s"])),
        book("spread: share at 1 tick", spread("share_1tick")),
        book("spread: mean (ticks)", spread("mean")),
        book("spread: p90 (ticks)", spread("p90")),
        book("depth profile, levels 1/2/3/5/10 (x mean L1 size)", lambda b: _profile_str(b["depth_profile"])),
        book("distance of levels 2/3/5/10 from touch (ticks)",
             lambda b: _profile_str(b["level_distance_ticks"], (1, 2, 4, 9))),
        book("levels changed / delta, whole stream: mean / median / p90 / max",
             lambda b: _dist_str(b["levels_changed"])),
        book("levels changed / delta, best 50 per side: mean / median / p90 / max",
             lambda b: _dist_str(b["levels_changed_top50"])),
        book("mid vol, 1 s returns x sqrt(60) (bps / min)", lambda b: _fmt(b["mid_vol_bps_per_min"])),
        book("mid vol, 1 min returns (bps / min)", lambda b: _fmt(b["mid_vol_1min_bps"])),
        book("mid range over the file (bps)", lambda b: _fmt(b["mid_range_bps"])),
        trades("trade prints / span (s)", lambda t: f"{t['prints']} / {_fmt(t['span_s'])}"),
        trades("trade prints / s", lambda t: _fmt(t["prints_per_s"])),
        trades("trade size: mean / p90 / p99 (x median)", lambda t: _rel_str(t["size_rel"])),
        trades("inter-arrival: mean / median (ms)", interarrival("mean", "median")),
        trades("inter-arrival: CV", interarrival("cv")),
        trades("inter-arrival: share of 0 ms gaps", interarrival("share_zero")),
        ("trade messages (taker orders) / s", "-", "n/a", _fmt(orders_per_s)),
        ("trade-through share of trade messages", "-", "n/a", _fmt(st["sweep_share"])),
    ]


def _dist_str(d: dict) -> str:
    return " / ".join(_fmt(d[k]) for k in ("mean", "median", "p90", "max"))


def _rel_str(d: dict) -> str:
    return " / ".join(_fmt(d[k]) for k in ("mean", "p90", "p99"))


def comparison_table(minutes: float = 60.0, seed: int = 7, synthetic: str | Path | None = None) -> str:
    """Markdown table: XRP ob500 sample + Binance trades vs a synthetic BTCUSDT recording.

    The synthetic side is generated in memory (``minutes``, ``seed``) unless a file is given.
    """
    from tools.gen_synthetic import DEFAULT_START, generate, parse_start

    real_book = file_stats(XRP_SAMPLE, top_n=50)
    real_trades = file_stats(BINANCE_TRADES)
    if synthetic is not None:
        syn = file_stats(synthetic, top_n=50)
    else:
        syn = compute_stats(generate("BTCUSDT", parse_start(DEFAULT_START), minutes, seed, 50), top_n=50)
    rows = comparison_rows(real_book, real_trades, syn)
    lines = ["| statistic | real source | real | synthetic BTCUSDT ob50 |", "|---|---|---|---|"]
    lines += [f"| {name} | {src} | {real} | {synth} |" for name, src, real, synth in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.data_stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help=".jsonl / .jsonl.gz recording, Bybit .data file, or Binance .parquet")
    parser.add_argument("--tick", type=float, default=None, help="tick size (default: symbol table, else inferred)")
    parser.add_argument("--top-n", type=int, default=None, help="also count levels changed within the best N levels")
    parser.add_argument("--compare", action="store_true", help="print the real-vs-synthetic markdown table")
    parser.add_argument("--minutes", type=float, default=60.0, help="--compare: synthetic minutes to generate")
    parser.add_argument("--seed", type=int, default=7, help="--compare: generator seed")
    parser.add_argument("--synthetic", default=None, help="--compare: use this recording instead of generating")
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
