"""``mmbot backtest run``: replay a catalog slice through Nautilus and write the run directory.

Outputs (written into a staging directory, renamed into place when complete):
``report.json`` (deterministic), ``report.md``, ``report.html``, ``fills.parquet``,
``orders.parquet``, ``equity.parquet``, ``audit.jsonl`` (with ``[risk]``), and the run-folder
files of mmbot/run_folder.py: ``mmbot_run.json`` (the marker) and ``config.resolved.json``.
The output folder must be new, empty or a backtest run folder (``check_out_dir``); it is checked
before the replay starts.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nautilus_trader
import numpy as np
from nautilus_trader.backtest.node import BacktestNode

from mmbot.report import metrics as M
from mmbot.report import render as R
from mmbot.builders import (
    DataWindow, build_backtest_run_config, install_queue_sim, resolve_backtest_sizing, strategy_config_dict,
)
from mmbot.catalog_store import CatalogError, list_catalog
from mmbot.config.backtest import BacktestConfig, ConfigError
from mmbot.backtest.feed import cached_chunks, run_engine
from mmbot.backtest.heap import arrow_pool_to_glibc, fix_mmap_threshold, release_free_heap
from mmbot.backtest.ledger import RunLedger
from mmbot.builders import BACKTEST_ENV, install_pretrade_check, kill_file_path, skip_unread_statistics
from mmbot.run_folder import (
    RunFolderError,
    check_out_dir,
    publish_run_folder,
    run_tmp_dir,
    write_marker,
    write_resolved_config,
)
from mmbot.timeutil import ns_to_iso, parse_time_ns

MMBOT_VERSION = "0.1.0"


@dataclass
class BacktestOutcome:
    """``events``: stream rows replayed (order-book rows + trades read in the window), the unit of
    events/s; ``feed``: the feed that replayed them (mmbot/backtest/feed.py)."""

    out_dir: Path
    report: dict
    events: int
    wall_s: float
    extras: dict = field(default_factory=dict)
    feed: str = "per_delta"


def resolve_window(catalog_dir: Path, instrument_id: str, start: str, end: str) -> DataWindow:
    """The replay window: the catalog's range for the instrument, narrowed by start/end (kept for
    the next trial in a wf worker: ``catalog_memo``)."""
    from mmbot.backtest.feed import catalog_memo

    return catalog_memo("window", catalog_dir, instrument_id, (start, end),
                        lambda: _resolve_window(catalog_dir, instrument_id, start, end))


def _resolve_window(catalog_dir: Path, instrument_id: str, start: str, end: str) -> DataWindow:
    listing = list_catalog(catalog_dir, check=[instrument_id])
    ids = {i["instrument_id"] for i in listing["instruments"]}
    if instrument_id not in ids:
        raise ConfigError(f"run.instrument: {instrument_id} is not in catalog {catalog_dir} (has: {', '.join(sorted(ids)) or 'none'})")
    rows = [d for d in listing["data"] if d["instrument_id"] == instrument_id and d["data_type"] == "order_book_deltas"]
    if not rows or rows[0]["rows"] == 0:
        raise ConfigError(f"run.instrument: catalog {catalog_dir} has no order-book deltas for {instrument_id}")
    lo, hi = rows[0]["start_ns"], rows[0]["end_ns"]
    try:
        start_ns = parse_time_ns(start) if start else lo
        end_ns = parse_time_ns(end) if end else hi
    except ValueError as e:
        raise ConfigError(f"run.start/end: {e}") from None
    start_ns, end_ns = max(start_ns, lo), min(end_ns, hi)
    if start_ns > lo:  # a message that began before the start is not replayed half (both feeds)
        from mmbot.backtest.feed import snap_start

        start_ns = snap_start(catalog_dir, instrument_id, start_ns)
    if end_ns <= start_ns:
        raise ConfigError(
            f"run.start/end: empty date range {ns_to_iso(start_ns)} .. {ns_to_iso(end_ns)} "
            f"(catalog has {instrument_id} from {ns_to_iso(lo)} to {ns_to_iso(hi)})",
        )
    warmup_from, from_snapshot = 0, True
    if start_ns > lo:
        # The book at start_ns is the last snapshot before it plus every delta since: replay from
        # there (docs/config.md, "Windows between snapshots"), unless the first book message of
        # the window is itself a snapshot. No snapshot before it: from the catalog's first row,
        # the most the catalog knows.
        snap, starts_with_snapshot = snapshot_before(catalog_dir, instrument_id, start_ns)
        if snap is None and not starts_with_snapshot:
            warmup_from, from_snapshot = lo, False
        elif snap is not None and snap < start_ns and not starts_with_snapshot:
            warmup_from = snap
    return DataWindow(start_ns, end_ns, full=(start_ns == lo and end_ns == hi), warmup_from_ns=warmup_from,
                      from_snapshot=from_snapshot)


def snapshot_before(catalog_dir: Path, instrument_id: str, at_ns: int) -> tuple[int | None, bool]:
    """``(ts_init of the last order-book snapshot at or before at_ns or None, whether the first
    order-book row at or after at_ns starts a snapshot)``. A snapshot is a message starting with a
    CLEAR row (a Bybit snapshot, or a book the importer invalidated). Reads only the ``action`` and
    ``ts_init`` columns: the file holding ``at_ns`` and, newest first, the earlier ones until one
    has a CLEAR (row-group statistics give each file's first ``ts_init``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from nautilus_trader.model.enums import BookAction

    clear = int(BookAction.CLEAR)
    folder = Path(catalog_dir) / "data" / "order_book_deltas" / instrument_id
    files = []
    for path in folder.glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        col = meta.schema.to_arrow_schema().get_field_index("ts_init")
        stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
        first = min((st.min for st in stats if st is not None and st.has_min_max), default=-1)
        files.append((first, str(path)))
    files.sort()
    later = [f for f in files if f[0] > at_ns]
    earlier = [f for f in files if f[0] <= at_ns]
    starts_with_snapshot, last = False, None
    for k, (_first, path) in enumerate(reversed(earlier)):
        t = pq.read_table(path, columns=["action", "ts_init"])
        ts, action = t["ts_init"], t["action"]
        if k == 0:  # the file holding at_ns (or the last one before it): its first row >= at_ns
            after = pc.filter(action, pc.greater_equal(ts, at_ns))
            if len(after):
                starts_with_snapshot = after[0].as_py() == clear
            elif later:
                starts_with_snapshot = pq.read_table(later[0][1], columns=["action"])["action"][0].as_py() == clear
        before = pc.filter(ts, pc.and_(pc.equal(action, clear), pc.less_equal(ts, at_ns)))
        if len(before):
            last = int(pc.max(before).as_py())
            break
    return last, starts_with_snapshot


def default_out_dir(cfg: BacktestConfig) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return cfg.path(cfg.run.out_dir) / f"{stamp}-{cfg.config_hash()}"


def run_backtest(
    cfg: BacktestConfig,
    out_dir: Path | None = None,
    progress: bool = False,
) -> BacktestOutcome:
    """Run one backtest from a validated config; raises ``ConfigError``/``CatalogError``/
    ``RunFolderError`` on bad input."""
    fix_mmap_threshold()  # before the replay allocates: mmbot/backtest/heap.py
    arrow_pool_to_glibc()  # before the catalog passes below read through Arrow (same module)
    if cfg.portfolio is not None:  # several instruments in one node (docs/portfolio.md)
        from mmbot.backtest.portfolio import run_portfolio_backtest

        return run_portfolio_backtest(cfg, out_dir, progress)
    catalog_dir = cfg.path(cfg.run.catalog)
    instrument_id = cfg.run.instrument
    window = resolve_window(catalog_dir, instrument_id, cfg.run.start, cfg.run.end)
    window, book_from_ns, warmup_note = snapshot_start(cfg, window, catalog_dir, instrument_id)
    # Sizes in USDT notional become base units of this instrument here, before anything else reads
    # the config (its hash, the report, config.resolved.json): docs/config.md, "Sizes in notional".
    cfg, sizing = resolve_backtest_sizing(cfg, str(catalog_dir), instrument_id, window)
    out_dir = check_out_dir(out_dir if out_dir else default_out_dir(cfg), "backtest")
    strategy_params = strategy_config_dict(cfg, instrument_id)
    halted = started_halted(cfg)
    feed, msg_feed = choose_feed(cfg, catalog_dir, instrument_id, window, book_from_ns)
    # The ledger's rows go here at each purge and come back for the outputs (removed below). A
    # folder of its own: two runs aimed at the same --out at once must not share one; the folders
    # of killed runs for this --out are removed here (mmbot/run_folder.py ``run_tmp_dir``).
    with run_tmp_dir(out_dir) as spill_tmp:
        return _run_in(cfg, catalog_dir, instrument_id, window, sizing, out_dir, strategy_params, halted, feed,
                       msg_feed, spill_tmp, progress, book_from_ns, warmup_note)


def snapshot_start(cfg: BacktestConfig, window: DataWindow, catalog_dir: Path | None = None,
                   instrument_id: str = "") -> tuple[DataWindow, int, str]:
    """``run.warmup = "snapshot"``: a window with a warm-up becomes a window that starts on a
    snapshot (no warm-up replayed; ``SnapshotStartFeed`` builds the book from ``book_from_ns``):
    ``(window, book_from_ns, "")``. ``(window, 0, "")`` otherwise, and ``(window, 0, why)`` when
    ``run.feed = "auto"`` finds trades sharing their receive time with book rows of the stream the
    snapshot start would publish (given ``catalog_dir``; its own stamps: ``snapshot_tie_order``)
    where the per-delta order is not derived: "auto" replays those per delta, which cannot start on
    a built snapshot, so the warm-up is replayed and report.json says why (hostile reviews 32 F7,
    33 H2). Ties whose order is derived are replayed in it, from the snapshot."""
    if cfg.run.warmup != "snapshot" or not window.warmup_from_ns:
        return window, 0, ""
    if catalog_dir is not None and cfg.run.feed == "auto":
        from mmbot.backtest.feed import snapshot_tie_order

        order = snapshot_tie_order(catalog_dir, instrument_id, window.warmup_from_ns, window.start_ns, window.end_ns,
                                   cfg.run.chunk_size)
        if order.unresolved:
            return window, 0, (f"not used: {order.trades_tied} trade(s) share their receive time with a book "
                               f"message in the window, {order.unresolved} receive time(s) shared by trades and "
                               "book rows where the per-message feed is not proven to replay what the per-delta "
                               "feed does (a file's first row, files of one kind overlapping, a stamp an edge of "
                               "run.chunk_size splits); run.feed = \"auto\" replays the warm-up instead, per "
                               "delta where such a tie remains (run.feed = \"per_message\" starts on the snapshot)")
    from dataclasses import replace

    return replace(window, warmup_from_ns=0), window.warmup_from_ns, ""


def _run_in(cfg, catalog_dir, instrument_id, window, sizing, out_dir, strategy_params, halted, feed, msg_feed,
            spill_tmp: Path, progress: bool, book_from_ns: int = 0, warmup_note: str = "") -> BacktestOutcome:
    """``run_backtest`` inside its spill folder (removed by the caller once the outputs are written)."""
    # The risk audit log is written during the run in the run's own spill folder, then moved into
    # the run folder. Not a fixed name beside it: a second run aimed at the same --out deleted and
    # took over the first one's log (tests/test_hostile_review30.py F5).
    audit_tmp = spill_tmp / "audit.jsonl"
    node = None
    bar = None
    try:
        # Inside the try: the builder refuses a config (ConfigError) after the spill folder exists,
        # which must not stay behind (tests/test_hostile_review30.py F1).
        run_config = build_backtest_run_config(cfg, str(catalog_dir), instrument_id, window,
                                               audit_path=str(audit_tmp), feed=feed, ledger_spill_dir=str(spill_tmp))
        node = BacktestNode(configs=[run_config])
        node.build()
        engine = node.get_engine(run_config.id)
        skip_unread_statistics(engine)
        install_pretrade_check(engine.kernel)
        qsim = install_queue_sim(engine, cfg, instrument_id, end_ns=window.end_ns,
                                 count_from_ns=window.start_ns if window.warmup_from_ns else 0)
        ledger = next(a for a in engine.trader.actors() if isinstance(a, RunLedger))
        supervisor, guards = risk_components(engine)
        if progress:
            bar = _progress_bar(window)
            ledger.progress = lambda ts_ns: bar.update(max(0, ts_ns - window.start_ns) / 1e9 - bar.n)
        t0 = time.perf_counter()
        if msg_feed is None:
            node.run()
            release_free_heap()  # before the report (run_engine does it per chunk)
        else:
            start, end = feed_bounds(catalog_dir, instrument_id, window)
            run_engine(engine, cached_chunks(msg_feed), start, end, run_config.id)
        wall_s = time.perf_counter() - t0
        # Stream rows (order-book rows + trades), the same count in both feeds; the per-delta
        # engine iterates once per row.
        events = msg_feed.stats.rows if msg_feed is not None else int(engine.iteration)
        if events == 0:  # nothing replayed: no report to make (docs/report.md, "Empty window")
            raise ConfigError(no_data_message(cfg, instrument_id, window))
        strategy = engine.trader.strategies()[0]
        instrument = engine.cache.instrument(engine.cache.instrument_ids()[0])
        positions = engine.cache.positions_open(instrument_id=instrument.id)
        book_digest = _book_digest(engine.cache.order_book(instrument.id))
        catalog_funding = _catalog_funding(catalog_dir, instrument_id, window)
        result = _collect(cfg, ledger, strategy, instrument, None, positions, window, strategy_params, events,
                          catalog_funding)
        # Closed orders left in the cache: small when the ledger's periodic purge works.
        result["metrics"]["replay"]["cache_orders_at_end"] = len(engine.cache.orders())
        if qsim is not None:  # how the fills were produced (docs/report.md, "Simulator")
            result["metrics"]["simulator"] = simulator_section(qsim.stats)
        if supervisor is not None:
            result["metrics"]["risk"]["guards"] = supervisor.report(guards, window.end_ns)
            result["_audit"] = audit_tmp
        if halted is not None:  # only then: other reports stay byte-identical
            result["metadata"]["started_halted"] = halted
        if window.warmup_from_ns:  # only then, likewise
            result["metadata"]["warmup"] = {"replay_from_ns": window.warmup_from_ns,
                                            "replay_from": ns_to_iso(window.warmup_from_ns),
                                            "from_snapshot": window.from_snapshot,
                                            **({"snapshot_start": warmup_note} if warmup_note else {})}
        if book_from_ns:  # run.warmup = "snapshot"
            result["metadata"]["warmup"] = {"mode": "snapshot", "book_from_ns": book_from_ns,
                                            "book_from": ns_to_iso(book_from_ns),
                                            "from_snapshot": window.from_snapshot,
                                            "book_rows": msg_feed.stats.warmup_rows}
        result["report"] = R.build_report(result["metadata"], result["metrics"])
    finally:
        if bar is not None:
            bar.close()
        if node is not None:
            node.dispose()
    _write_outputs(out_dir, cfg, result, ledger_data=result.pop("_frames"), feed=feed, sizing=sizing)
    return BacktestOutcome(out_dir=out_dir, report=result["report"], events=events, wall_s=wall_s,
                           extras={"nautilus_check": result["nautilus_check"], "started_halted": halted,
                                   "sizes_from_book": qsim.params.sizes_from_book if qsim is not None else None,
                                   "book_digest": book_digest,
                                   **({"feed_stats": msg_feed.stats} if msg_feed is not None else {})},
                           feed=feed)


def _book_digest(book) -> str | None:
    """SHA-256 of the cached book at the end (rows applied, last sequence and time, every level):
    what the feeds delivered beyond what the report shows (tests/test_feed_identity.py)."""
    import hashlib

    if book is None:
        return None
    levels = [(lv.price.raw, lv.size()) for lv in book.bids()] + [(lv.price.raw, lv.size()) for lv in book.asks()]
    return hashlib.sha256(repr((book.update_count, book.sequence, book.ts_last, levels)).encode()).hexdigest()


def choose_feed(cfg: BacktestConfig, catalog_dir: Path, instrument_id: str, window: DataWindow,
                book_from_ns: int = 0):
    """``(feed, MessageFeed or None)`` for ``run.feed`` (mmbot/backtest/feed.py): "auto" is the
    per-message feed unless the fill model is Nautilus' own (it matches per row) or a trade shares
    its receive time with a book row where the per-delta order (Nautilus' k-way merge of the files)
    cannot be derived (``tie_order``, a dry pass over ts_init: a tie at a file's first row, files of
    one kind overlapping); every other tie is replayed per message in the per-delta order.
    A window between snapshots is read from its warm-up start (``DataWindow.replay_start_ns``), as
    the per-delta feed's data configs read it; with ``book_from_ns`` (``run.warmup = "snapshot"``,
    per-message only: the config refuses the others) it starts on a snapshot built from there."""
    from mmbot.backtest.feed import MessageFeed, SnapshotStartFeed, snapshot_tie_order, tie_order

    if book_from_ns:
        order = snapshot_tie_order(catalog_dir, instrument_id, book_from_ns, window.start_ns, window.end_ns,
                                   cfg.run.chunk_size)
        return "per_message", SnapshotStartFeed(catalog_dir, instrument_id, book_from_ns, window.start_ns,
                                                window.end_ns, chunk_rows=cfg.run.chunk_size,
                                                book_first_ns=order.book_first_ns)

    want = cfg.run.feed
    if want == "per_delta" or cfg.venue.fill_model == "nautilus":
        return "per_delta", None
    start, end = (None, None) if window.full else (window.replay_start_ns, window.end_ns)
    order = tie_order(catalog_dir, instrument_id, start, end, cfg.run.chunk_size)
    if want == "auto" and order.unresolved > 0:
        return "per_delta", None
    return "per_message", MessageFeed(catalog_dir, instrument_id, start, end, chunk_rows=cfg.run.chunk_size,
                                      book_first_ns=order.book_first_ns)


def feed_bounds(catalog_dir: Path, instrument_id: str, window: DataWindow) -> tuple[int, int]:
    """The engine's start and end for the per-message feed, as the per-delta feed has them: the
    window's (from its warm-up start, ``DataWindow.replay_start_ns``), or for the catalog's whole
    range the first and last row's ts_init (order-book rows and trades), which is where Nautilus'
    streaming starts and ends the clocks."""
    from mmbot.backtest.feed import data_files

    if not window.full:
        return window.replay_start_ns, window.end_ns
    files = (data_files(catalog_dir, "order_book_deltas", instrument_id)
             + data_files(catalog_dir, "trade_tick", instrument_id))
    return min(f[0] for f in files), max(f[1] for f in files)


def no_data_message(cfg: BacktestConfig, instrument_id: str, window: DataWindow) -> str:
    """The one line for a window inside the catalog's range that holds no row (a recording gap,
    or a window shorter than the feed's interval): Nautilus replays nothing, so nothing starts."""
    return (f"{cfg.origin('run.start')}: run.start/end: no data in window {ns_to_iso(window.start_ns)} .. "
            f"{ns_to_iso(window.end_ns)}: the catalog has no {instrument_id} book or trade row in it (a gap in the "
            "recording, or a window shorter than the feed interval); widen the window")


def started_halted(cfg: BacktestConfig) -> dict | None:
    """``{"guard", "file", "reason"}`` when the run starts under a kill (its signal file for
    this mode exists), else None: the summary line and report.json say so, since a halted run
    quotes nothing and its "0 fills" would otherwise look like a result."""
    from strategies.risk.kill_switch import read_signal

    path = kill_file_path(cfg, BACKTEST_ENV)
    signal = read_signal(str(path)) if path is not None else None
    if signal is None:
        return None
    return {"guard": "kill_switch", "file": str(path), "reason": str(signal.get("reason") or "kill file present")}


def risk_components(engine):
    """The risk supervisor (bound to the kernel's RiskEngine: the builder's job, see
    strategies/risk/supervisor.py) and the guards of a built engine; (None, []) without [risk]."""
    from strategies.risk.base import RiskGuard
    from strategies.risk.supervisor import RiskSupervisor

    actors = engine.trader.actors()
    supervisor = next((a for a in actors if isinstance(a, RiskSupervisor)), None)
    if supervisor is not None:
        supervisor.bind_risk_engine(engine.kernel.risk_engine)
    return supervisor, [a for a in actors if isinstance(a, RiskGuard)]


def _progress_bar(window: DataWindow):
    from tqdm import tqdm

    total_s = (window.end_ns - window.start_ns) / 1e9
    return tqdm(total=total_s, unit="s", unit_scale=False, desc="replay (data seconds)", file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")


MARK_LOOKBACK_NS = 3_600_000_000_000  # mark prices read from 1 h before the window (as-of at a settlement)


def _catalog_funding(catalog_dir: Path, instrument_id: str, window: DataWindow):
    """Funding rates and mark prices of the instrument from the catalog, or None when the
    catalog has no funding rates for it: ((settlement ts_event ns, rate), (mark ts_event ns, USDT)).

    Read here, after the run, rather than replayed through the engine: Nautilus 1.231's
    streaming catalog backend (DataFusion) cannot read FundingRateUpdate ("custom data type
    'FundingRateUpdate' is not registered with an Arrow schema"), and nothing in the run
    trades on funding; the report applies it to the position at each settlement
    (docs/report.md, "Funding")."""
    from mmbot.backtest.feed import catalog_memo

    folder = Path(catalog_dir) / "data" / "funding_rate_update" / instrument_id
    if not (folder.is_dir() and any(folder.glob("*.parquet"))):
        return None

    return catalog_memo("funding", catalog_dir, instrument_id, (window.start_ns, window.end_ns),
                        lambda: _read_funding(catalog_dir, instrument_id, window))


def _read_funding(catalog_dir: Path, instrument_id: str, window: DataWindow):
    from nautilus_trader.model.data import FundingRateUpdate, MarkPriceUpdate
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    catalog = ParquetDataCatalog(str(catalog_dir))
    rates = catalog.query(FundingRateUpdate, identifiers=[instrument_id])  # a few rows a day: all of them
    marks = []
    if (Path(catalog_dir) / "data" / "mark_price_update" / instrument_id).is_dir():
        marks = catalog.query(MarkPriceUpdate, identifiers=[instrument_id],
                              start=window.start_ns - MARK_LOOKBACK_NS, end=window.end_ns)
    arrays = (np.array([r.ts_event for r in rates], dtype=np.int64), np.array([float(r.rate) for r in rates]),
              np.array([m.ts_event for m in marks], dtype=np.int64), np.array([m.value.as_double() for m in marks]))
    for a in arrays:
        a.setflags(write=False)  # shared by the trials of a wf worker (``catalog_memo``)
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def simulator_section(stats: dict) -> dict:
    """report.json's ``simulator`` section: every counter of the queue simulator
    (``QueueSimExecutionClient.stats``, integers; ``fill_causes`` per cause), copied whole so no
    counter can be left out (mmbot/report/simulator.py says what each means)."""
    return {k: dict(v) if isinstance(v, dict) else int(v) for k, v in stats.items()}


def report_clock(cfg: BacktestConfig) -> str:
    """"exchange" (queue simulator: events at exchange time) or "receive" (fill_model =
    "nautilus": the matching engine runs on the data's ts_init)."""
    return "receive" if cfg.venue.fill_model == "nautilus" else "exchange"


def _collect(cfg, ledger: RunLedger, strategy, instrument, account, positions, window: DataWindow, strategy_params: dict,
             events: int, catalog_funding=None, *, clock: str | None = None,
             starting_balance: float | None = None) -> dict:
    """The report of a finished run from its ledger and Nautilus' cache. A backtest passes neither
    ``clock`` nor ``starting_balance`` (they follow from ``[venue]``) and ``account=None`` (its
    queue-simulator account is not recalculated per event: the cross-check sums Nautilus'
    positions); a live session (mmbot/live/report.py) passes the exchange clock, the account and
    its balance at the session's start."""
    # One clock for the whole report (docs/report.md, "Clocks"): the clock our fills were
    # matched on. The queue simulator stamps its events with exchange time, so mids are taken at
    # the book's ts_event; Nautilus' own matching engine fills on the data's ts_init, so its runs
    # take mids at ts_init. Mixing them would put a fill after the very book update that caused it.
    clock = clock or report_clock(cfg)
    if starting_balance is None:
        starting_balance = cfg.venue.starting_balance_usdt
    fills = ledger.fills_frame()
    orders = ledger.orders_frame()
    mid_ts, mid_px = ledger.mids(clock)
    # Funding: the catalog's rows when it has them, else whatever reached the ledger on the bus.
    if catalog_funding is not None:
        (settle_ts, rates), (mark_ts, mark_px) = catalog_funding
    else:
        (settle_ts, rates), (mark_ts, mark_px) = ledger.funding_rates(), ledger.mark_prices()
    funding_available = catalog_funding is not None or len(settle_ts) > 0
    funding = None
    if funding_available:
        order = np.argsort(mark_ts, kind="stable")
        funding = M.funding_payments(fills, settle_ts, rates, mid_ts, mid_px, mark_ts_ns=mark_ts[order],
                                     mark_px=mark_px[order], start_ns=window.start_ns, end_ns=window.end_ns)
    step_ns = cfg.report.equity_interval_ms * 1_000_000
    grid = M.time_grid(window.start_ns, window.end_ns, step_ns)
    own_bid, own_ask = ledger.own_quotes_at(grid)
    equity = M.equity_curve(fills, mid_ts, mid_px, window.start_ns, window.end_ns, step_ns=step_ns,
                            quote_ts_ns=grid, own_bid_px=own_bid, own_ask_px=own_ask, funding=funding)
    metrics = M.compute_report_metrics(
        fills, orders, mid_ts, mid_px, window.start_ns, window.end_ns,
        starting_balance=starting_balance,
        maker_fee=float(instrument.maker_fee), taker_fee=float(instrument.taker_fee),
        equity=equity, grid_step_ns=step_ns,
        markout_horizons_ns=[h * 1_000_000 for h in cfg.report.markout_horizons_ms],
        funding=funding, funding_available=funding_available,
    )
    metrics["strategy"] = {
        "skipped_orders": dict(sorted(getattr(strategy, "skipped_orders", {}).items())),
        "modify_rejects": ledger.modify_rejects,
        "cancel_rejects": ledger.cancel_rejects,
        "book_batches": ledger.book_batches,
    }
    metrics["replay"] = {"stream_rows": events, "mid_ts_regressions": ledger.mid_ts_regressions()}
    # FillInfo bookkeeping: unmatched or mismatched messages mean the simulator and the ledger
    # disagree about a fill; shown, never dropped.
    attributed = fills["ts_trigger_ns"].to_numpy() >= 0
    metrics["attribution"]["fill_info"] = {
        "matched": ledger.fill_info_matched,
        "unmatched": ledger.fill_info_unmatched(),
        "order_mismatch": ledger.fill_info_order_mismatch,
        # an exchange-time simulator fills at its trigger's exchange time: anything else means
        # the fills are not on the report's clock
        "ts_event_not_trigger": int((fills["ts_event_ns"].to_numpy()[attributed]
                                     != fills["ts_trigger_ns"].to_numpy()[attributed]).sum()),
    }
    # Nautilus' books (the account's balance in a live/shadow session, the positions in a
    # backtest) hold fills and commissions (fee + slippage) but no funding: compared with the
    # ledger's net PnL excluding funding, exactly.
    if account is None:
        nautilus_check = _nautilus_positions_check(ledger, positions, metrics["pnl"]["final_mid"])
    else:
        nautilus_check = _nautilus_account_check(account, positions, instrument, starting_balance,
                                                 metrics["pnl"]["final_mid"])
    metrics["pnl"]["nautilus_account_net_pnl"] = nautilus_check
    metadata = {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "config_source": Path(cfg.source).name if cfg.source != "<defaults>" else cfg.source,
        "strategy_params": dict(sorted(strategy_params.items())),
        "instrument": {
            "id": instrument.id.value, "price_increment": str(instrument.price_increment),
            "size_increment": str(instrument.size_increment), "maker_fee": str(instrument.maker_fee),
            "taker_fee": str(instrument.taker_fee),
        },
        "data_range": {"start_ns": window.start_ns, "end_ns": window.end_ns,
                       "start": ns_to_iso(window.start_ns), "end": ns_to_iso(window.end_ns)},
        "fill_model": cfg.venue.fill_model,
        "report_clock": clock,
        "fill_model_params": _fill_model_params(cfg),
        "seed": cfg.run.seed,
        "versions": {"mmbot": MMBOT_VERSION, "nautilus_trader": nautilus_trader.__version__,
                     "python": platform.python_version()},
    }
    return {
        "report": R.build_report(metadata, metrics),
        "metadata": metadata, "metrics": metrics, "nautilus_check": nautilus_check,
        "_frames": (fills, orders, equity, mid_ts, mid_px, grid, own_bid, own_ask),
    }


def _fill_model_params(cfg) -> dict:
    v = cfg.venue
    if v.fill_model == "nautilus":
        return {"queue_position": v.queue_position, "liquidity_consumption": v.liquidity_consumption}
    from mmbot.builders import queue_sim_params

    p = queue_sim_params(cfg)
    lat = {name: {"kind": d.kind, "mean_ms": d.mean_ms, "std_ms": d.std_ms, "bins": [list(b) for b in d.bins]}
           for name, d in (("order", p.latency.order), ("amend", p.latency.amend), ("cancel", p.latency.cancel),
                           ("response", p.latency.response))}
    return {"queue_model": p.model.kind, "n": p.model.n if p.model.kind == "prob_power" else None,
            "latency": lat, "extra_slippage_bps": p.extra_slippage_bps,
            "calibration": Path(v.calibration).name if v.calibration else ""}


def _nautilus_positions_check(ledger: RunLedger, positions, final_mid: float) -> float | None:
    """Net PnL by Nautilus' own books: the realized PnL (net of commissions, i.e. exchange fee +
    extra slippage) of every position Nautilus closed (``PositionClosed`` events, summed by the
    ledger: closed positions may be purged from the cache), plus each open position's realized
    PnL so far and its unrealized PnL at the same final mid the ledger uses. Neither Nautilus'
    matching engine nor the queue simulator books funding, so this equals the ledger's
    ``net_pnl_ex_funding``; reported beside it as an independent cross-check. (The account's
    balance is not used: a backtest's queue-simulator account is not recalculated per event,
    ``SimParams.calculated_account``.)"""
    import math

    parts = list(ledger.closed_realized_pnls)
    for pos in positions:
        parts.append(pos.realized_pnl.as_double() if pos.realized_pnl is not None else 0.0)
        parts.append(float(pos.signed_qty) * float(pos.multiplier) * (final_mid - pos.avg_px_open))
    return math.fsum(parts)


def _nautilus_account_check(account, positions, instrument, starting_balance: float, final_mid: float) -> float | None:
    """Net PnL by Nautilus' own books: the account balance change (realised PnL net of
    commissions, i.e. exchange fee + extra slippage) plus the open position marked at the same
    final mid the ledger uses. Neither Nautilus' matching engine nor the queue simulator books
    funding, so this equals the ledger's ``net_pnl_ex_funding``; reported beside it as an
    independent cross-check."""
    if account is None:
        return None
    balance = account.balance_total(instrument.quote_currency)
    if balance is None:
        return None
    pnl = balance.as_double() - starting_balance
    for pos in positions:
        pnl += pos.signed_qty * (final_mid - pos.avg_px_open)
    return pnl


def _write_outputs(out_dir: Path, cfg: BacktestConfig, result: dict, ledger_data, feed: str = "per_delta",
                   sizing: dict | None = None) -> None:
    fills, orders, equity, mid_ts, mid_px, grid, own_bid, own_ask = ledger_data
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        R.write_parquet_atomic(stage / "fills.parquet", fills)
        R.write_parquet_atomic(stage / "orders.parquet", orders)
        R.write_parquet_atomic(stage / "equity.parquet", equity)
        R.write_report_json(stage, result["metadata"], result["metrics"])
        audit = result.pop("_audit", None)
        if audit is not None and Path(audit).exists():
            os.replace(audit, stage / "audit.jsonl")
        R.write_report_md(stage, result["report"])
        if cfg.report.html:
            R.write_report_html(stage, result["report"], equity, fills, mid_ts, mid_px, grid, own_bid, own_ask)
        kill_file = kill_file_path(cfg, BACKTEST_ENV)
        write_resolved_config(stage, cfg, {"risk.kill_switch.file": str(kill_file)} if kill_file else None,
                              replay={"feed": feed}, sizing=sizing)
        write_marker(stage, "backtest", cfg.config_hash())
        publish_run_folder(stage, out_dir, "backtest")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


__all__ = ["BacktestOutcome", "CatalogError", "ConfigError", "RunFolderError", "resolve_window", "run_backtest"]
