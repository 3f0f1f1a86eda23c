"""``mmbot calibrate``: fit the queue simulator to a recorded live/testnet/shadow session.

The loop (docs/calibration.md): a session directory holds ``recording/`` (raw public frames,
``{SYMBOL}_{YYYY-MM-DD}.jsonl.gz``, and our order events, ``orders.jsonl``, both written by
``adapters.recorder.RecorderActor``). From the order events and the mid of the recorded book we
compute the distributions a simulator must reproduce; backtests of the same period (same
strategy config, the recording imported once into a temporary catalog) are run over candidate
simulator parameters, each backtest records its own order events in the same format (the same
``RecorderActor``), the same distributions are computed from them, and the parameters that
minimise the weighted sum of two-sample Kolmogorov–Smirnov distances are written as a
calibration file plus a fit report.

Units: times are ns since the epoch (``*_ns``) on the *local* clock (an event's ``ts_init_ns``,
a book message's ``local_ts_ns``); durations in the distributions are ms; prices are quote
currency (USDT); distances and markouts are bps (1e-4) of the mid.

Nothing here runs per market-data event at trading time: this is offline analysis (pandas and
numpy are fine); the backtests themselves are the normal engine.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MARKOUT_HORIZONS_S = (1, 5)
DISTRIBUTIONS = ("queue_wait_ms", "fill_distance_bps", "markout_1s_bps", "markout_5s_bps", "ack_latency_ms")
# Weights of the KS distances in the objective (docs/calibration.md, "The search").
DEFAULT_WEIGHTS: dict[str, float] = {"queue_wait_ms": 1.0, "fill_distance_bps": 1.0, "markout_1s_bps": 0.5,
                                     "markout_5s_bps": 0.5, "ack_latency_ms": 1.0}
UNFILLED = math.inf  # the atom of an unfilled quote in the fill-distance variable
_SIDE_SIGN = {"BUY": 1.0, "SELL": -1.0}
_CLOSING = ("OrderCanceled", "OrderExpired", "OrderRejected", "OrderDenied")


class CalibrationInputError(ValueError):
    """The session directory, its recording or the config cannot be used (one line, names the file)."""


# ---------------------------------------------------------------------------------------------
# Session: order events -> quote segments, fills, acknowledgement delays
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """Per-order records of one session (live or backtest), all on the local clock.

    ``segments``: one row per *quote*, i.e. a period in which one order rests at one price on
    the exchange: ``client_order_id``, ``side`` (BUY/SELL), ``price`` (USDT), ``qty`` (base
    units), ``start_ns`` (accept, or the acknowledgement of an amend to a new price),
    ``end_ns`` (next re-price, cancel, full fill or the session end), ``first_fill_ns`` (-1 when
    the quote did not fill).
    ``fills``: ``ts_event_ns`` (local receipt: the event's ts_init_ns), ``client_order_id``,
    ``side``, ``price``, ``qty``, ``fee`` — the columns of ``mmbot.report.metrics``.
    ``ack_ms`` / ``amend_ack_ms`` / ``cancel_ack_ms``: submit -> accepted, pending update ->
    updated, pending cancel -> canceled delays (ms).
    ``first_ns`` / ``last_ns``: first and last order event.
    """

    segments: pd.DataFrame
    fills: pd.DataFrame
    ack_ms: np.ndarray
    amend_ack_ms: np.ndarray
    cancel_ack_ms: np.ndarray
    first_ns: int
    last_ns: int
    source: str = ""


def orders_file(session_dir: Path | str) -> Path:
    """``<dir>/recording/orders.jsonl`` or ``<dir>/orders.jsonl`` (the layout ``mmbot compare``
    reads); ``CalibrationInputError`` when neither exists."""
    d = Path(session_dir)
    for f in (d / "recording" / "orders.jsonl", d / "orders.jsonl"):
        if f.exists():
            return f
    raise CalibrationInputError(f"{d}: no orders.jsonl (expected {d / 'recording' / 'orders.jsonl'})")


def read_order_events(path: Path | str) -> list[dict]:
    """The recorder's order events in file (= arrival) order. A line that is not JSON (the cut-off
    last line after a crash) is skipped; an event lacking ``kind``/``client_order_id``/
    ``ts_init_ns`` raises ``CalibrationInputError`` naming the line."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not isinstance(e, dict) or not all(k in e for k in ("kind", "client_order_id", "ts_init_ns")):
            raise CalibrationInputError(f"{path}: line {i}: not an order event (kind, client_order_id, ts_init_ns)")
        out.append(e)
    return out


def session_from_events(events: Iterable[dict], end_ns: int | None = None, source: str = "") -> Session:
    """Quote segments, fills and acknowledgement delays from order events (recorder format).

    Event times are ``ts_init_ns`` (local clock: in live trading ``ts_event_ns`` of a venue event
    is the exchange's clock). A segment starts at ``OrderAccepted`` or at an ``OrderUpdated``
    that changes the price or raises the size (Bybit: both lose queue priority); an amend that
    only lowers the size keeps the segment. It ends at the next such amend, at a cancel / expiry /
    reject, at the fill that completes the order, or at ``end_ns`` (default: the last event),
    and records its first fill. Events after ``end_ns`` are ignored.
    """
    segs: list[dict] = []
    open_seg: dict[str, dict] = {}
    orders: dict[str, dict] = {}
    pending: dict[tuple[str, str], int] = {}
    fills: list[tuple] = []
    ack, amend_ack, cancel_ack = [], [], []
    first = last = None
    for e in events:
        t = int(e["ts_init_ns"])
        if end_ns is not None and t > end_ns:
            break
        first = t if first is None else first
        last = t
        kind, coid = e["kind"], e["client_order_id"]
        o = orders.get(coid)
        if kind == "OrderInitialized":
            orders[coid] = {"side": e.get("side", ""), "price": _num(e.get("price")), "qty": _num(e.get("quantity")),
                            "filled": 0.0}
            continue
        if o is None:
            continue  # an order of another component, or initialised before the recording started
        if kind == "OrderSubmitted":
            pending[(coid, "submit")] = t
        elif kind == "OrderAccepted":
            if (coid, "submit") in pending:
                ack.append((t - pending.pop((coid, "submit"))) / NS_PER_MS)
            _close(open_seg, segs, coid, t)
            open_seg[coid] = _segment(coid, o, t)
        elif kind == "OrderPendingUpdate":
            pending[(coid, "amend")] = t
        elif kind == "OrderUpdated":
            if (coid, "amend") in pending:
                amend_ack.append((t - pending.pop((coid, "amend"))) / NS_PER_MS)
            new_px = _num(e.get("price"), o["price"])
            new_qty = _num(e.get("quantity"), o["qty"])
            requeue = new_px != o["price"] or new_qty > o["qty"]
            o["price"], o["qty"] = new_px, new_qty
            if coid in open_seg:
                if requeue:
                    _close(open_seg, segs, coid, t)
                    open_seg[coid] = _segment(coid, o, t)
                else:
                    open_seg[coid]["qty"] = new_qty
        elif kind == "OrderPendingCancel":
            pending[(coid, "cancel")] = t
        elif kind == "OrderFilled":
            qty = float(e["qty"])
            fills.append((t, coid, e["side"], float(e["price"]), qty, float(e.get("fee", 0.0))))
            o["filled"] += qty
            s = open_seg.get(coid)
            if s is not None and s["first_fill_ns"] < 0:
                s["first_fill_ns"] = t
            if o["filled"] >= o["qty"] - 1e-9:
                _close(open_seg, segs, coid, t)
        elif kind in _CLOSING:
            if kind == "OrderCanceled" and (coid, "cancel") in pending:
                cancel_ack.append((t - pending.pop((coid, "cancel"))) / NS_PER_MS)
            _close(open_seg, segs, coid, t)
        elif kind in ("OrderModifyRejected", "OrderCancelRejected"):
            pending.pop((coid, "amend" if kind == "OrderModifyRejected" else "cancel"), None)
    stop = end_ns if end_ns is not None else (last or 0)
    for coid in list(open_seg):
        _close(open_seg, segs, coid, stop)
    seg_cols = ["client_order_id", "side", "price", "qty", "start_ns", "end_ns", "first_fill_ns"]
    seg_df = pd.DataFrame(segs, columns=seg_cols).astype({"start_ns": "int64", "end_ns": "int64",
                                                          "first_fill_ns": "int64", "price": "float64"})
    fill_df = pd.DataFrame(fills, columns=["ts_event_ns", "client_order_id", "side", "price", "qty", "fee"])
    fill_df = fill_df.astype({"ts_event_ns": "int64", "price": "float64", "qty": "float64", "fee": "float64"})
    return Session(segments=seg_df.sort_values("start_ns", kind="mergesort").reset_index(drop=True), fills=fill_df,
                   ack_ms=np.asarray(ack, dtype=np.float64), amend_ack_ms=np.asarray(amend_ack, dtype=np.float64),
                   cancel_ack_ms=np.asarray(cancel_ack, dtype=np.float64),
                   first_ns=first or 0, last_ns=last or 0, source=source)


def _num(v: Any, default: float = math.nan) -> float:
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def _segment(coid: str, o: dict, t: int) -> dict:
    return {"client_order_id": coid, "side": o["side"], "price": o["price"], "qty": o["qty"], "start_ns": t,
            "end_ns": -1, "first_fill_ns": -1}


def _close(open_seg: dict, segs: list, coid: str, t: int) -> None:
    s = open_seg.pop(coid, None)
    if s is not None:
        s["end_ns"] = t
        segs.append(s)


def load_session(session_dir: Path | str, end_ns: int | None = None) -> Session:
    """``session_from_events`` of a session directory's ``orders.jsonl`` (live, shadow, or a
    backtest run by :func:`run_trial`, which writes the same layout)."""
    f = orders_file(session_dir)
    return session_from_events(read_order_events(f), end_ns=end_ns, source=str(f))


# ---------------------------------------------------------------------------------------------
# The recorded book: mid and market-data latency on the local clock
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BookSeries:
    """After each recorded book message: ``ts_ns`` (local receive time of its last row), ``mid``
    (USDT; NaN when a side is empty) and ``md_latency_ms`` (``local_ts_ns - ts``, receive minus
    exchange time, ms). Sorted by ``ts_ns``."""

    ts_ns: np.ndarray
    mid: np.ndarray
    md_latency_ms: np.ndarray
    instrument_id: str

    @property
    def end_ns(self) -> int:
        return int(self.ts_ns[-1]) if len(self.ts_ns) else 0

    @property
    def start_ns(self) -> int:
        return int(self.ts_ns[0]) if len(self.ts_ns) else 0


def recording_files(session_dir: Path | str) -> list[Path]:
    """The raw public-stream files of a session: ``recording/*.jsonl[.gz]`` (or the directory
    itself), ``orders.jsonl`` excluded, sorted by name (= by UTC day)."""
    d = Path(session_dir)
    rec = d / "recording" if (d / "recording").is_dir() else d
    files = [p for p in sorted(rec.iterdir()) if p.is_file() and p.name != "orders.jsonl"
             and (p.name.endswith(".jsonl.gz") or p.name.endswith(".jsonl"))]
    if not files:
        raise CalibrationInputError(f"{rec}: no recording (*.jsonl.gz raw public frames) in the session directory")
    return files


def book_series(paths: Sequence[Path]) -> BookSeries:
    """Mid and market-data latency after every book message of mmbot recordings, rebuilt with the
    importer's own parser (``adapters.sources.iter_batches``: the rows a replay sees)."""
    from nautilus_trader.model.book import OrderBook
    from nautilus_trader.model.enums import BookType

    from adapters.instruments import InstrumentRegistry
    from adapters.problems import ProblemLog
    from adapters.sources import iter_batches

    registry, log = InstrumentRegistry(), ProblemLog()
    ts, mid, lat = [], [], []
    book, iid = None, ""
    for path in paths:
        for kind, instrument, items in iter_batches(Path(path), registry, log):
            if kind != "deltas":
                continue
            if book is None:
                iid = instrument.id.value
                book = OrderBook(instrument.id, BookType.L2_MBP)
            for d in items:
                book.apply_delta(d)
            bb, ba = book.best_bid_price(), book.best_ask_price()
            last = items[-1]
            ts.append(last.ts_init)
            mid.append((bb.as_double() + ba.as_double()) / 2 if bb is not None and ba is not None else math.nan)
            lat.append((items[0].ts_init - items[0].ts_event) / NS_PER_MS)
    order = np.argsort(np.asarray(ts, dtype=np.int64), kind="stable")
    return BookSeries(ts_ns=np.asarray(ts, dtype=np.int64)[order], mid=np.asarray(mid, dtype=np.float64)[order],
                      md_latency_ms=np.asarray(lat, dtype=np.float64)[order], instrument_id=iid)


def value_at(ts_ns: np.ndarray | Sequence[int], series_ts_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The last value at or before each ts (NaN before the first sample)."""
    from mmbot.report.metrics import mid_at

    return mid_at(ts_ns, series_ts_ns, values)


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------

def queue_wait_ms(segments: pd.DataFrame) -> np.ndarray:
    """ms from a quote's start (accept or re-price acknowledgement) to its first fill, one value
    per filled quote."""
    f = segments[segments["first_fill_ns"] >= 0]
    return ((f["first_fill_ns"] - f["start_ns"]).to_numpy(dtype=np.float64)) / NS_PER_MS


def quote_distance_bps(segments: pd.DataFrame, book: BookSeries) -> np.ndarray:
    """Distance of each quote from the mid at its start, bps of the mid, positive on the passive
    side: BUY ``(mid - price) / mid * 1e4``, SELL ``(price - mid) / mid * 1e4``. NaN without a mid."""
    m = value_at(segments["start_ns"].to_numpy(dtype=np.int64), book.ts_ns, book.mid)
    sign = segments["side"].map(_SIDE_SIGN).to_numpy(dtype=np.float64)
    return sign * (m - segments["price"].to_numpy(dtype=np.float64)) / m * 1e4


def fill_distance_bps(segments: pd.DataFrame, book: BookSeries) -> np.ndarray:
    """The fill-probability-by-distance variable, one value per quote with a known mid: its
    distance from the mid (bps, :func:`quote_distance_bps`) if it filled, ``+inf`` if not.

    Its CDF is ``F(x) = P(a quote fills and its distance <= x)``: the cumulative fill probability
    by distance, whose limit is the overall fill rate. The KS distance between two sessions'
    variables is therefore the largest gap between their cumulative fill-probability curves, and
    it sees both the level (how often quotes fill) and the shape (where)."""
    d = quote_distance_bps(segments, book)
    filled = segments["first_fill_ns"].to_numpy() >= 0
    ok = np.isfinite(d)
    return np.where(filled, d, UNFILLED)[ok]


def fill_probability_table(segments: pd.DataFrame, book: BookSeries, bucket_bps: float = 0.5) -> pd.DataFrame:
    """Per distance bucket ``[lo, lo + bucket_bps)`` (bps): quotes placed, quotes filled, fill
    probability. For reading; the objective uses :func:`fill_distance_bps`."""
    d = quote_distance_bps(segments, book)
    filled = segments["first_fill_ns"].to_numpy() >= 0
    ok = np.isfinite(d)
    lo = np.floor(d[ok] / bucket_bps + 1e-9) * bucket_bps
    df = pd.DataFrame({"bucket_lo_bps": lo, "filled": filled[ok]})
    g = df.groupby("bucket_lo_bps")["filled"].agg(["size", "sum"]).reset_index()
    g.columns = ["bucket_lo_bps", "placed", "filled"]
    g["fill_prob"] = g["filled"] / g["placed"]
    return g


def markouts_bps(fills: pd.DataFrame, book: BookSeries, horizon_s: float) -> np.ndarray:
    """Signed mid move after each fill, bps of the mid at the fill: ``s * (mid(t + h) - mid(t)) /
    mid(t) * 1e4`` with s = +1 for a buy, -1 for a sell (positive = the mid moved our way).
    Fills whose ``t + h`` is after the recorded book's end are left out."""
    if fills.empty:
        return np.zeros(0)
    t = fills["ts_event_ns"].to_numpy(dtype=np.int64)
    h = np.int64(round(horizon_s * NS_PER_S))
    m0 = value_at(t, book.ts_ns, book.mid)
    mh = value_at(t + h, book.ts_ns, book.mid)
    sign = fills["side"].map(_SIDE_SIGN).to_numpy(dtype=np.float64)
    x = sign * (mh - m0) / m0 * 1e4
    ok = (t + h <= book.end_ns) & np.isfinite(x)
    return x[ok]


def distributions(session: Session, book: BookSeries) -> dict[str, np.ndarray]:
    """Every distribution of the objective (``DISTRIBUTIONS``), as 1-d float arrays."""
    out = {
        "queue_wait_ms": queue_wait_ms(session.segments),
        "fill_distance_bps": fill_distance_bps(session.segments, book),
        "ack_latency_ms": session.ack_ms,
    }
    for h in MARKOUT_HORIZONS_S:
        out[f"markout_{h}s_bps"] = markouts_bps(session.fills, book, h)
    return {k: out[k] for k in DISTRIBUTIONS}


def ks_statistic(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic ``sup_x |F_a(x) - F_b(x)|`` of the empirical CDFs
    (``F(x)`` = share of the sample ``<= x``), exact with ties and ``+inf`` values. 0.0 when both
    samples are empty, 1.0 when exactly one is (nothing to match is a total mismatch). NaNs are
    dropped."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return 0.0 if len(a) == len(b) else 1.0
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_table(live: dict[str, np.ndarray], sim: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per distribution: KS distance, sample sizes and medians (finite values) of both sides."""
    out = {}
    for k in DISTRIBUTIONS:
        a, b = live[k], sim[k]
        out[k] = {"ks": ks_statistic(a, b), "n_live": int(len(a)), "n_sim": int(len(b)),
                  "median_live": _median(a), "median_sim": _median(b)}
        if k == "fill_distance_bps":  # the level: share of quotes that filled
            out[k]["fill_rate_live"] = float(np.mean(np.isfinite(a))) if len(a) else math.nan
            out[k]["fill_rate_sim"] = float(np.mean(np.isfinite(b))) if len(b) else math.nan
    return out


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else math.nan


def objective(table: dict[str, dict], weights: dict[str, float]) -> float:
    """Weighted sum of the KS distances (``weights`` by distribution name; missing = 0)."""
    return float(sum(weights.get(k, 0.0) * row["ks"] for k, row in table.items()))


# ---------------------------------------------------------------------------------------------
# Directly measured parameters
# ---------------------------------------------------------------------------------------------

def measured_latencies(session: Session, book: BookSeries, response_latency_ms: float) -> dict[str, float | None]:
    """Method-of-moments estimates of the command latencies (ms) from acknowledgement delays.

    The simulator acknowledges a command ``L_cmd + L_resp`` after it was sent (entry latency to
    the exchange, then the constant response latency back; docs/queue_model.md), so with the
    configured ``response_latency_ms``: ``mean(L_cmd) = mean(ack) - L_resp`` (clipped at 0) and
    ``std(L_cmd) = std(ack)`` (a constant adds no variance). Returns ``latency_ms_mean``,
    ``latency_ms_std`` (order entry), ``amend_latency_ms``, ``cancel_latency_ms`` (None where the
    session has no such command), the ``response_latency_ms`` used, and ``md_latency_ms_mean`` /
    ``md_latency_ms_std`` (recorded receive minus exchange time of the book messages: the
    recording's feed latency, for information; a live return path is usually of that order)."""
    md = book.md_latency_ms[np.isfinite(book.md_latency_ms)]

    def mean_of(x: np.ndarray) -> float | None:
        return max(float(np.mean(x)) - response_latency_ms, 0.0) if len(x) else None

    return {"latency_ms_mean": mean_of(session.ack_ms),
            "latency_ms_std": float(np.std(session.ack_ms)) if len(session.ack_ms) else None,
            "amend_latency_ms": mean_of(session.amend_ack_ms), "cancel_latency_ms": mean_of(session.cancel_ack_ms),
            "response_latency_ms": float(response_latency_ms),
            "md_latency_ms_mean": float(np.mean(md)) if len(md) else 0.0,
            "md_latency_ms_std": float(np.std(md)) if len(md) else 0.0}


# ---------------------------------------------------------------------------------------------
# Backtests of the session's period
# ---------------------------------------------------------------------------------------------

def run_trial(cfg, out_dir: Path | str) -> Path:
    """One backtest of ``cfg`` (``mmbot.backtest.run.run_backtest``'s engine: same builders, queue
    simulator and risk wiring) with ``adapters.recorder.RecorderActor`` attached, so its order
    events land in ``<out_dir>/recording/orders.jsonl`` in the live recorder's format. No report
    is written (a calibration trial needs only the events). Returns ``out_dir``."""
    import msgspec
    from nautilus_trader.backtest.node import BacktestNode
    from nautilus_trader.config import ImportableActorConfig

    from mmbot.backtest.run import resolve_window, risk_components, snapshot_start
    from mmbot.builders import build_backtest_run_config, install_queue_sim

    out_dir = Path(out_dir)
    rec_dir = out_dir / "recording"
    rec_dir.mkdir(parents=True, exist_ok=True)
    (rec_dir / "orders.jsonl").unlink(missing_ok=True)
    catalog_dir = cfg.path(cfg.run.catalog)
    iid = cfg.run.instrument
    window = resolve_window(catalog_dir, iid, cfg.run.start, cfg.run.end)
    if snapshot_start(cfg, window, catalog_dir, iid)[1]:  # the node below replays per delta: it cannot start on a built snapshot
        from mmbot.config.backtest import ConfigError

        raise ConfigError(f"{cfg.origin('run.warmup')}: run.warmup: \"snapshot\" cannot start this window "
                          "(calibration trials replay per delta through Nautilus' node); use \"replay\"")
    rc = build_backtest_run_config(cfg, str(catalog_dir), iid, window)
    recorder = ImportableActorConfig(
        actor_path="adapters.recorder:RecorderActor", config_path="adapters.recorder:RecorderConfig",
        config={"instrument_id": iid, "out_dir": str(rec_dir), "component_id": "Recorder",
                "flush_interval_ms": 3_600_000})  # written once, at stop
    rc = msgspec.structs.replace(rc, engine=msgspec.structs.replace(rc.engine, actors=[*rc.engine.actors, recorder]))
    node = BacktestNode(configs=[rc])
    try:
        node.build()
        engine = node.get_engine(rc.id)
        install_queue_sim(engine, cfg, iid)
        risk_components(engine)  # binds the risk supervisor to the RiskEngine, as run_backtest does
        node.run()
    finally:
        node.dispose()
    return out_dir


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------

N_RANGE = (0.25, 8.0)  # prob_power n, searched on a log scale (docs/calibration.md)
FIT_MODEL = "prob_power"


@dataclass(frozen=True)
class Prepared:
    """Everything the trials share: the live session and its distributions, the recorded book,
    the temporary catalog, the base config (strategy, risk, seed; catalog/instrument/window set
    to the recording) and the simulator keys that are not fitted."""

    live: Session
    live_dist: dict[str, np.ndarray]
    book: BookSeries
    base_overrides: list[str]
    config_path: Path | None
    fixed: dict[str, float]
    measured: dict[str, float | None]
    baseline_venue: dict[str, Any]
    files: list[str] = field(default_factory=list)


def _load_config(config_path: Path | None, overrides: Sequence[str]):
    from mmbot.config.backtest import load_backtest_config

    if config_path is not None and not Path(config_path).exists():
        raise CalibrationInputError(f"{config_path}: no such config file")
    cfg = load_backtest_config(Path(config_path) if config_path else None, list(overrides))
    from mmbot.builders import refuse_portfolio

    refuse_portfolio(cfg, "mmbot calibrate")
    return cfg


def prepare(live_dir: Path | str, work_dir: Path | str, config_path: Path | str | None = None,
            overrides: Sequence[str] = ()) -> Prepared:
    """Read and check the session, import its recording into ``<work_dir>/catalog`` and build
    the base config. Raises ``CalibrationInputError`` (one line naming the file) on bad input and
    ``mmbot.config.backtest.ConfigError`` on a bad config."""
    from adapters.instruments import InstrumentRegistry
    from adapters.problems import ImportRejected
    from mmbot.builders import queue_sim_params
    from mmbot.catalog_store import CatalogError, import_paths

    live_dir = Path(live_dir)
    if not live_dir.is_dir():
        raise CalibrationInputError(f"{live_dir}: not a directory (a live run directory with recording/)")
    check_real_venue(live_dir)
    of = orders_file(live_dir)
    live = session_from_events(read_order_events(of), source=str(of))
    if live.segments.empty:
        raise CalibrationInputError(f"{of}: no accepted orders")
    if live.fills.empty:
        raise CalibrationInputError(f"{of}: no fills (nothing to calibrate the queue against)")
    if len(live.ack_ms) == 0:
        raise CalibrationInputError(f"{of}: no OrderSubmitted -> OrderAccepted pairs (order latency unknown)")
    files = recording_files(live_dir)
    catalog = Path(work_dir) / "catalog"
    try:
        result = import_paths(files, catalog, InstrumentRegistry())
    except (ImportRejected, CatalogError) as e:
        raise CalibrationInputError(f"recording import rejected: {e}") from None
    books = [w for w in result.to_json(str(catalog), [str(f) for f in files], "ok", None)["written"]
             if w["data_type"] == "OrderBookDelta"]
    if not books:
        raise CalibrationInputError(f"{files[0].parent}: the recording holds no order-book messages")
    book = book_series(files)
    if not np.isfinite(book.mid).any():
        raise CalibrationInputError(f"{files[0].parent}: the recording never has a two-sided book")
    iid = books[0]["instrument_id"]
    from mmbot.config.backtest import layer_overrides

    base = layer_overrides(overrides, [f'run.catalog="{catalog.resolve()}"', f'run.instrument="{iid}"', 'run.start=""',
                                       f'run.end="{live.last_ns}"', "report.html=false"])
    cfg = _load_config(Path(config_path) if config_path else None, base)
    _check_strategy(cfg, iid)
    if cfg.venue.fill_model == "nautilus":
        baseline_venue = {"fill_model": "nautilus"}
        fixed = {"latency_ms_std": 0.0, "amend_latency_ms": 0.0, "cancel_latency_ms": 0.0,
                 "response_latency_ms": cfg.venue.response_latency_ms, "extra_slippage_bps": 0.0}
    else:
        p = queue_sim_params(cfg)
        baseline_venue = {"fill_model": cfg.venue.fill_model, "queue_power": cfg.venue.queue_power,
                          "latency_ms_mean": p.latency.order.mean_ms}
        fixed = {"latency_ms_std": p.latency.order.std_ms, "amend_latency_ms": p.latency.amend.mean_ms,
                 "cancel_latency_ms": p.latency.cancel.mean_ms, "response_latency_ms": p.latency.response.mean_ms,
                 "extra_slippage_bps": p.extra_slippage_bps}
    measured = measured_latencies(live, book, fixed["response_latency_ms"])
    for key in ("latency_ms_std", "amend_latency_ms", "cancel_latency_ms"):
        if measured[key] is not None:  # measured beats configured; absent commands keep the config's value
            fixed[key] = measured[key]
    return Prepared(live=live, live_dist=distributions(live, book), book=book, base_overrides=base,
                    config_path=Path(config_path) if config_path else None, fixed=fixed, measured=measured,
                    baseline_venue=baseline_venue, files=[str(f) for f in files])


SHADOW_DIR_SUFFIX = "-shadow"  # `mmbot live --env shadow` names its run directories <UTC time>-shadow


def check_real_venue(session_dir: Path) -> None:
    """Refuse a session whose orders never reached an exchange: its acknowledgement delays and
    fills come from mmbot's own queue simulator (shadow mode adds only the node's processing
    time), so fitting the simulator's latency or queue model to them fits the simulator to
    itself (a shadow session "fitted" 42.6 ms from ack delays that are not a venue latency).
    Recognised by the run folder's marker (``mmbot_run.json``, ``"venue": "simulated"``,
    mmbot/run_folder.py) or, for shadow folders from before the marker, by the
    ``<time>-shadow`` name that ``mmbot live --env shadow`` gives them."""
    from mmbot.run_folder import MARKER, SIMULATED, read_marker

    rec = read_marker(session_dir)
    if rec is not None and rec.get("venue") == SIMULATED:
        why = f"{MARKER} says kind {rec['kind']!r}, venue 'simulated'"
    elif rec is None and session_dir.name.endswith(SHADOW_DIR_SUFFIX):
        why = f"a shadow run folder (named *{SHADOW_DIR_SUFFIX})"
    else:
        return
    raise CalibrationInputError(
        f"{session_dir}: {why}: its orders never reached an exchange, so its ack delays and fills come from "
        "mmbot's own simulator and no venue latency or queue can be fitted from them; calibrate on a "
        "testnet/demo/mainnet session")


def _check_strategy(cfg, instrument_id: str) -> None:
    """The strategy section against the recording's instrument (order size, step), before any
    backtest: ``ConfigError`` naming the config file, as ``mmbot backtest run``'s strategy would
    refuse to start."""
    import msgspec

    from adapters.instruments import InstrumentRegistry
    from mmbot.builders import strategy_config_dict
    from mmbot.config.backtest import ConfigError
    from strategies.market_maker import MarketMaker, MarketMakerConfig

    from mmbot.config.sizing import config_notional_items

    params = strategy_config_dict(cfg, instrument_id)
    notional = {t.notional for t, _ in config_notional_items(cfg) if t.section == "strategy"}
    if "level_notional_usdt" in notional:  # an order size in USDT: each trial's builder resolves and checks it
        return
    if notional:  # max_position in USDT: only level_size is checked here (against the instrument)
        from strategies.market_maker import MAX_SIZE

        params = {k: v for k, v in params.items() if k not in notional} | {"max_position": MAX_SIZE}
    strategy = MarketMaker(MarketMakerConfig.parse(msgspec.json.encode(params).decode()))
    errors, _ = strategy.check_instrument(InstrumentRegistry().get_by_id(instrument_id))
    if errors:
        raise ConfigError(f"{cfg.source}: strategy: {errors[0]} (the recording's instrument is {instrument_id})")


def trial_overrides(prep: Prepared, latency_ms_mean: float, queue_power: float, seed: int | None = None) -> list[str]:
    """``--set`` overrides of one candidate: the fitted keys, the fixed ones, no calibration file
    (it would override the candidate's latencies), and the simulator seed if given."""
    from mmbot.config.backtest import layer_overrides

    f = prep.fixed
    sets = [f'venue.fill_model="{FIT_MODEL}"', f"venue.queue_power={float(queue_power)!r}",
            'venue.order_latency="normal"', f"venue.order_latency_ms={float(latency_ms_mean)!r}",
            f"venue.order_latency_std_ms={f['latency_ms_std']!r}", f"venue.amend_latency_ms={f['amend_latency_ms']!r}",
            f"venue.cancel_latency_ms={f['cancel_latency_ms']!r}",
            f"venue.response_latency_ms={f['response_latency_ms']!r}",
            f"venue.extra_slippage_bps={f['extra_slippage_bps']!r}", 'venue.calibration=""']
    if seed is not None:
        sets.append(f"run.seed={int(seed)}")
    return layer_overrides(prep.base_overrides, sets)


def simulate(prep: Prepared, overrides: Sequence[str], out_dir: Path | str) -> dict[str, np.ndarray]:
    """Run one trial backtest (:func:`run_trial`, then its directory is removed) and return its
    distributions over the live session's window."""
    run_trial(_load_config(prep.config_path, overrides), out_dir)
    sim = load_session(out_dir, end_ns=prep.live.last_ns)
    shutil.rmtree(out_dir, ignore_errors=True)
    return distributions(sim, prep.book)


def mean_table(tables: Sequence[dict[str, dict]]) -> dict[str, dict]:
    """Replicates' KS tables averaged entry by entry (finite numbers only)."""
    out: dict[str, dict] = {}
    for k in tables[0]:
        out[k] = {}
        for f in tables[0][k]:
            vals = [t[k][f] for t in tables if isinstance(t[k][f], (int, float)) and math.isfinite(t[k][f])]
            out[k][f] = float(np.mean(vals)) if vals else math.nan
    return out


def grid_refine(f: Callable[[float], tuple], lo: float, hi: float, points: int, halvings: int,
                log: bool = False) -> list[tuple[float, tuple]]:
    """Deterministic 1-d search: ``f`` at ``points`` evenly spaced values over ``[lo, hi]`` (evenly
    in log2 when ``log``), then ``halvings`` times: halve the spacing and evaluate the best point's
    two neighbours at that spacing (inside the range, skipping points already done). ``f`` returns
    a sort key, smaller is better; among exact ties the middle point is "best" (:func:`_best`).
    Returns ``[(x, key)]`` in evaluation order; :func:`best_of` gives the answer."""
    if points < 2:
        raise ValueError("grid_refine: points must be >= 2")
    to = math.log2 if log else float
    a, b = to(lo), to(hi)
    step = (b - a) / (points - 1)
    keys: dict[float, tuple] = {}
    order: list[float] = []

    def ev(u: float) -> None:
        u = round(u, 12)
        if u in keys or u < a - 1e-9 or u > b + 1e-9:
            return
        keys[u] = f(2.0 ** u if log else u)
        order.append(u)

    for i in range(points):
        ev(a + i * step)
    for _ in range(halvings):
        step /= 2
        best = _best(keys)
        ev(best - step)
        ev(best + step)
    return [((2.0 ** u) if log else u, keys[u]) for u in order]


def _best(keys: dict[float, tuple]) -> float:
    """The point with the smallest key; among exact ties (a plateau of a step-valued KS) the
    middle one (lower median by position), not an end of the plateau."""
    low = min(keys.values())
    tied = sorted(u for u, k in keys.items() if k == low)
    return tied[(len(tied) - 1) // 2]


def best_of(results: Sequence[tuple[float, tuple]], log: bool = False) -> float:
    """:func:`grid_refine`'s answer: the plateau-middle minimum of its evaluations."""
    keys = {round(math.log2(x) if log else x, 12): k for x, k in results}
    u = _best(keys)
    return 2.0 ** u if log else u


def latency_range(prep: Prepared) -> tuple[float, float]:
    """Search range of ``latency_ms_mean`` (ms): 0 to twice the mean acknowledgement delay, at
    least 50 ms."""
    return 0.0, max(50.0, 2.0 * float(np.mean(prep.live.ack_ms)))


FILL_WEIGHTS = {k: v for k, v in DEFAULT_WEIGHTS.items() if k != "ack_latency_ms"}


def fit(prep: Prepared, work_dir: Path | str, points: int = 8, halvings: int = 3, replicates: int = 2,
        seed: int | None = None, progress: Callable[[str, dict], None] | None = None) -> dict:
    """Two 1-d searches (docs/calibration.md, "The search"), each a grid of ``points`` candidates
    then ``halvings`` refinements (:func:`grid_refine`):

    1. ``latency_ms_mean`` over :func:`latency_range` minimising the KS distance of the
       acknowledgement delay (which depends on the latency only), ties broken by the gap of the
       medians; one backtest per candidate.
    2. the prob_power ``n`` over ``N_RANGE`` (log2 grid) at that latency, minimising the weighted
       KS sum of queue wait, fill distance and markouts (``FILL_WEIGHTS``) averaged over
       ``replicates`` simulator seeds ``seed, seed + 1, ...`` (default seed: the config's
       ``run.seed``).

    Also: the configured simulator as the baseline, and the noise floor: the KS distances between
    two replicates of the best candidate (a perfect model differs from the live session by about
    this much). Candidates within best + floor form the identified set."""
    work = Path(work_dir)
    seed0 = _load_config(prep.config_path, prep.base_overrides).run.seed if seed is None else int(seed)
    replicates = max(1, int(replicates))
    n0 = float(prep.baseline_venue.get("queue_power") or 2.0)
    n0 = min(max(n0, N_RANGE[0]), N_RANGE[1])
    lo, hi = latency_range(prep)
    live_ack_med = _median(prep.live_dist["ack_latency_ms"])
    stage1: list[dict] = []

    def f_latency(lat: float) -> tuple:
        d = simulate(prep, trial_overrides(prep, lat, n0, seed0), work / f"lat-{len(stage1)}")
        ks = ks_statistic(prep.live_dist["ack_latency_ms"], d["ack_latency_ms"])
        row = {"latency_ms_mean": lat, "ks_ack_latency": ks, "median_ack_sim_ms": _median(d["ack_latency_ms"])}
        stage1.append(row)
        if progress is not None:
            progress("latency", row)
        return (round(ks, 12), abs(row["median_ack_sim_ms"] - live_ack_med))

    res1 = grid_refine(f_latency, lo, hi, points, halvings)
    lat_best = best_of(res1)

    stage2: list[dict] = []
    dists: dict[float, list[dict[str, np.ndarray]]] = {}

    def f_queue(n: float) -> tuple:
        reps = [simulate(prep, trial_overrides(prep, lat_best, n, seed0 + r), work / f"n-{len(stage2)}-{r}")
                for r in range(replicates)]
        dists[n] = reps
        table = mean_table([ks_table(prep.live_dist, d) for d in reps])
        row = {"queue_power": n, "objective_fills": objective(table, FILL_WEIGHTS),
               "objective": objective(table, DEFAULT_WEIGHTS), "ks": table}
        stage2.append(row)
        if progress is not None:
            progress("queue", row)
        return (round(row["objective_fills"], 12),)

    res2 = grid_refine(f_queue, *N_RANGE, points, halvings, log=True)
    n_best = best_of(res2, log=True)
    best = min(stage2, key=lambda r: abs(math.log2(r["queue_power"]) - math.log2(n_best)))
    n_best = best["queue_power"]
    reps = dists[n_best]
    if len(reps) < 2:
        reps = [*reps, simulate(prep, trial_overrides(prep, lat_best, n_best, seed0 + 1), work / "noise")]
    noise_table = ks_table(reps[0], reps[1])
    noise_fills = objective(noise_table, FILL_WEIGHTS)
    noise_ack = noise_table["ack_latency_ms"]["ks"]
    best_ack = min(r["ks_ack_latency"] for r in stage1)
    lat_ok = [r["latency_ms_mean"] for r in stage1 if r["ks_ack_latency"] <= best_ack + noise_ack]
    n_ok = [r["queue_power"] for r in stage2 if r["objective_fills"] <= best["objective_fills"] + noise_fills]
    baseline: dict[str, Any] = {"venue": prep.baseline_venue}
    from mmbot.config.backtest import layer_overrides

    d = simulate(prep, layer_overrides(prep.base_overrides, [f"run.seed={seed0}"]), work / "baseline")
    table = ks_table(prep.live_dist, d)
    baseline.update(ks=table, objective=objective(table, DEFAULT_WEIGHTS), objective_fills=objective(table, FILL_WEIGHTS))
    return {
        "best": {"latency_ms_mean": lat_best, "queue_power": n_best, "objective": best["objective"],
                 "objective_fills": best["objective_fills"], "ks": best["ks"]},
        "baseline": baseline,
        "noise_floor": {"objective_fills": noise_fills, "ks_ack_latency": noise_ack,
                        "ks": {k: v["ks"] for k, v in noise_table.items()}},
        "identified": {"latency_ms_mean": [min(lat_ok), max(lat_ok)], "queue_power": [min(n_ok), max(n_ok)]},
        "search": {"method": "grid then refine, latency first (ack delay), then queue power (fills)",
                   "points": points, "halvings": halvings, "replicates": replicates, "seed": seed0,
                   "latency_ms_mean_range": [lo, hi], "queue_power_range": list(N_RANGE),
                   "queue_power_during_latency_search": n0, "fill_model": FIT_MODEL,
                   "weights": dict(DEFAULT_WEIGHTS)},
        "stage_latency": stage1,
        "stage_queue": [{k: r[k] for k in ("queue_power", "objective_fills", "objective")} for r in stage2],
    }


def calibration_from_fit(prep: Prepared, fit_report: dict) -> dict:
    """The calibration file's keys (validated by ``adapters.sim.calibration.parse_calibration``):
    fitted ``latency_ms_mean``; measured (or configured) ``latency_ms_std``, ``amend_latency_ms``,
    ``cancel_latency_ms``; configured ``response_latency_ms`` (the fit holds it fixed: entry and
    response latency are one pair) and ``extra_slippage_bps``."""
    from adapters.sim.calibration import parse_calibration

    cal = {"latency_ms_mean": round(float(fit_report["best"]["latency_ms_mean"]), 3),
           **{k: round(float(v), 6) for k, v in prep.fixed.items()}}
    parse_calibration(cal, "<fitted calibration>")
    return cal


def session_summary(prep: Prepared) -> dict:
    s = prep.live
    return {"orders_file": s.source, "recording": prep.files, "instrument_id": prep.book.instrument_id,
            "first_event_ns": s.first_ns, "last_event_ns": s.last_ns, "quotes": int(len(s.segments)),
            "fills": int(len(s.fills)), "acks": int(len(s.ack_ms)),
            "fill_probability": fill_probability_table(s.segments, prep.book).to_dict("records")}


def run_calibration(live_dir: Path | str, out: Path | str, config_path: Path | str | None = None,
                    overrides: Sequence[str] = (), trials: int = 8, seed: int | None = None,
                    replicates: int = 2, progress: Callable[[str, dict], None] | None = None) -> dict:
    """The whole command: prepare (temporary catalog), fit, write ``out`` (calibration file) and
    ``<out stem>_fit.json`` (fit report), both atomically (temp file + rename). Returns the report."""
    from mmbot.canonical_json import write_json_atomic

    if trials < 3:
        raise CalibrationInputError(f"--trials: must be >= 3 (grid points per parameter), got {trials}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="mmbot-calibrate-") as tmp:
        prep = prepare(live_dir, tmp, config_path, overrides)
        rep = fit(prep, tmp, points=trials, seed=seed, replicates=replicates, progress=progress)
    cal = calibration_from_fit(prep, rep)
    report = {
        "calibration": cal,
        "calibration_file": str(out),
        "venue": {"fill_model": FIT_MODEL, "queue_power": round(float(rep["best"]["queue_power"]), 4)},
        "measured": prep.measured,
        "session": session_summary(prep),
        "config": str(config_path) if config_path else "<defaults>",
        "overrides": list(overrides),
        **rep,
    }
    write_json_atomic(out, cal)
    write_json_atomic(fit_report_path(out), report)
    return report


def fit_report_path(out: Path | str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}_fit.json")


def render(report: dict) -> str:
    """A short text table: KS per distribution for the configured simulator and the fitted one,
    the noise floor, the fitted values and the identified ranges."""
    best, base, noise = report["best"], report["baseline"], report["noise_floor"]["ks"]
    lines = [f"{'distribution':18}{'n live':>7}{'KS config':>11}{'KS fitted':>11}{'KS noise':>10}"
             f"{'median live':>13}{'median fit':>12}"]
    for k in DISTRIBUTIONS:
        row = best["ks"][k]
        b = base.get("ks", {}).get(k, {}).get("ks")
        lines.append(f"{k:18}{int(row['n_live']):>7}{(f'{b:.3f}' if b is not None else '-'):>11}{row['ks']:>11.3f}"
                     f"{noise[k]:>10.3f}{row['median_live']:>13.2f}{row['median_sim']:>12.2f}")
    bo = base.get("objective")
    lines.append(f"{'objective':18}{'':>7}{(f'{bo:.3f}' if bo is not None else '-'):>11}{best['objective']:>11.3f}")
    ident = report["identified"]
    lines.append(f"fitted: latency_ms_mean {best['latency_ms_mean']:.1f} ms (within noise "
                 f"{ident['latency_ms_mean'][0]:.1f}..{ident['latency_ms_mean'][1]:.1f}), {FIT_MODEL} n "
                 f"{best['queue_power']:.2f} (within noise {ident['queue_power'][0]:.2f}..{ident['queue_power'][1]:.2f})")
    lines.append(f"wrote {report['calibration_file']} and {fit_report_path(report['calibration_file'])}")
    return "\n".join(lines)
