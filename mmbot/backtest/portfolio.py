"""``mmbot backtest run`` on a ``[portfolio]``: several instruments in one node (docs/portfolio.md).

One Nautilus engine replays every instrument's catalog rows on one clock; the builders place one
market maker, one run ledger and the risk guards per instrument, one queue simulator (router) and
one account for all. The report (report.json/md) has one section per instrument, each computed
exactly as a single-instrument run's report from that instrument's ledger (fills, PnL, fees,
inventory, causes, markouts), and a portfolio section whose figures are the sums of the
instrument sections (``math.fsum``), with Nautilus' cross-check summed likewise.

The window is the intersection of the instruments' order-book data (narrowed by run.start/end);
an empty intersection is one line (exit 2). Every instrument reports the same range; each is
replayed from its own last snapshot before it (a warm-up that is not counted).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import msgspec
from nautilus_trader.backtest.node import BacktestNode

from mmbot.backtest.heap import release_free_heap
from mmbot.builders import (
    BACKTEST_ENV, DataWindow, build_portfolio_run_config, install_instrument_state_check, install_portfolio_queue_sim,
    kill_file_path, resolve_backtest_sizing, skip_unread_statistics, strategy_config_dict,
)
from mmbot.catalog_store import list_catalog
from mmbot.config.backtest import BacktestConfig, ConfigError
from mmbot.report import portfolio as P
from mmbot.report import render as R
from mmbot.run_folder import (
    check_out_dir, publish_run_folder, run_tmp_dir, write_marker, write_resolved_config,
)
from mmbot.timeutil import ns_to_iso

MAX_WINDOW_ROUNDS = 5  # start snapping rounds until every instrument's window starts at one instant


def _ranges(catalog_dir: Path, instruments) -> dict[str, tuple[int, int]]:
    listing = list_catalog(catalog_dir, check=instruments)
    ids = {i["instrument_id"] for i in listing["instruments"]}
    out = {}
    for iid in instruments:
        if iid not in ids:
            raise ConfigError(f"portfolio.instruments: {iid} is not in catalog {catalog_dir} "
                              f"(has: {', '.join(sorted(ids)) or 'none'})")
        rows = [d for d in listing["data"] if d["instrument_id"] == iid and d["data_type"] == "order_book_deltas"]
        if not rows or rows[0]["rows"] == 0:
            raise ConfigError(f"portfolio.instruments: catalog {catalog_dir} has no order-book deltas for {iid}")
        out[iid] = (rows[0]["start_ns"], rows[0]["end_ns"])
    return out


def resolve_portfolio_windows(cfg: BacktestConfig, catalog_dir: Path) -> dict[str, DataWindow]:
    """One reported range for every instrument: the intersection of their order-book data, narrowed
    by run.start/end, its start moved forward until it is a message boundary of every instrument
    (``resolve_window``'s rule per instrument). An empty intersection: one ``ConfigError`` naming
    each instrument's range (the node replays one clock)."""
    from mmbot.backtest.run import resolve_window
    from mmbot.timeutil import parse_time_ns

    instruments = cfg.portfolio.instruments
    ranges = _ranges(catalog_dir, instruments)
    lo, hi = max(r[0] for r in ranges.values()), min(r[1] for r in ranges.values())
    if hi <= lo:
        spans = "; ".join(f"{iid} {ns_to_iso(a)} .. {ns_to_iso(b)}" for iid, (a, b) in ranges.items())
        raise ConfigError(f"{cfg.origin('portfolio.instruments')}: portfolio.instruments: the instruments' data do "
                          f"not overlap in catalog {catalog_dir} ({spans}); one node replays one clock: use a catalog "
                          "where they overlap (the embedded catalog-portfolio/, docs/portfolio.md)")
    start = max(lo, parse_time_ns(cfg.run.start)) if cfg.run.start else lo
    end = min(hi, parse_time_ns(cfg.run.end)) if cfg.run.end else hi
    if end <= start:
        raise ConfigError(f"{cfg.origin('run.start')}: run.start/end: empty date range {ns_to_iso(start)} .. "
                          f"{ns_to_iso(end)} (the instruments' data overlap from {ns_to_iso(lo)} to {ns_to_iso(hi)})")
    for _ in range(MAX_WINDOW_ROUNDS):
        windows = {iid: resolve_window(catalog_dir, iid, f"{start}ns", f"{end}ns") for iid in instruments}
        starts = {w.start_ns for w in windows.values()}
        if starts == {start}:
            break
        start = max(starts)
    # each instrument's own warm-up; always time-filtered (one instrument's whole range is rarely
    # the node's window)
    return {iid: DataWindow(w.start_ns, w.end_ns, full=False, warmup_from_ns=w.warmup_from_ns,
                            from_snapshot=w.from_snapshot) for iid, w in windows.items()}


def run_portfolio_backtest(cfg: BacktestConfig, out_dir: Path | None = None, progress: bool = False):
    """Run a ``[portfolio]`` backtest from a validated config; raises ``ConfigError``/
    ``CatalogError``/``RunFolderError`` on bad input. Returns a ``BacktestOutcome``."""
    from mmbot.backtest.run import default_out_dir, started_halted

    catalog_dir = cfg.path(cfg.run.catalog)
    windows = resolve_portfolio_windows(cfg, catalog_dir)
    members, sizing = {}, {}
    for iid, member in cfg.instrument_configs().items():  # notional sizes -> base units of each instrument
        members[iid], record = resolve_backtest_sizing(member, str(catalog_dir), iid, windows[iid])
        if record is not None:
            sizing[iid] = record
    cfg = msgspec.structs.replace(cfg, portfolio=msgspec.structs.replace(cfg.portfolio, members=members))
    out_dir = check_out_dir(out_dir if out_dir else default_out_dir(cfg), "backtest")
    params = {iid: strategy_config_dict(m, iid) for iid, m in members.items()}
    halted = started_halted(cfg)
    # The risk audit log is written in a folder of the run's own beside the run folder, then moved
    # in; not a fixed name beside it: a second run aimed at the same --out deleted and took over
    # the first one's log (tests/test_hostile_review30.py F5). A killed run's folder is removed by
    # the next run at that --out (mmbot/run_folder.py ``run_tmp_dir``).
    with run_tmp_dir(out_dir) as tmp_dir:
        return _run_node(cfg, catalog_dir, windows, members, sizing, out_dir, params, halted,
                         tmp_dir / "audit.jsonl")


def _run_node(cfg, catalog_dir, windows, members, sizing, out_dir, params, halted, audit_tmp: Path):
    """``run_portfolio_backtest`` once its temporary folder exists (the caller removes it)."""
    from mmbot.backtest.ledger import RunLedger
    from mmbot.backtest.run import BacktestOutcome, _catalog_funding, _collect, risk_components, simulator_section
    from strategies.portfolio.allocator import AllocatorActor
    from strategies.portfolio.scoreboard import ScoreboardActor

    node = None
    try:
        # The ledgers spill their rows at each purge, as a single-instrument backtest's do (memory
        # about flat with the run's length; the outputs are the same bytes).
        run_config = build_portfolio_run_config(cfg, str(catalog_dir), windows, audit_path=str(audit_tmp),
                                                ledger_spill_dir=str(audit_tmp.parent / "ledger"))
        node = BacktestNode(configs=[run_config])
        node.build()
        engine = node.get_engine(run_config.id)
        skip_unread_statistics(engine)
        supervisor, guards = risk_components(engine)
        install_instrument_state_check(engine.kernel, supervisor)  # and max_notional_per_order before it
        router = install_portfolio_queue_sim(engine, cfg, windows)
        ledgers = {str(a.instrument_id): a for a in engine.trader.actors() if isinstance(a, RunLedger)}
        strategies = {str(s.config.instrument_id): s for s in engine.trader.strategies()}
        t0 = time.perf_counter()
        node.run()
        wall_s = time.perf_counter() - t0
        release_free_heap()  # before the report: mmbot/backtest/heap.py
        events = int(engine.iteration)
        if events == 0:
            raise ConfigError(f"{cfg.origin('run.start')}: run.start/end: no data in the window")
        sections = {}
        for iid, member in members.items():
            w = windows[iid]
            instrument = next(i for i in engine.cache.instruments() if str(i.id) == iid)
            positions = engine.cache.positions_open(instrument_id=instrument.id)
            res = _collect(member, ledgers[iid], strategies[iid], instrument, None, positions, w, params[iid],
                           events, _catalog_funding(catalog_dir, iid, w))
            res["metrics"].pop("replay", None)  # node-wide: in the portfolio section
            # the strategy's own inventory (position events of its instrument only), beside the
            # ledger's final position: another instrument's fill must move neither
            res["metrics"]["strategy"]["position_base_at_end"] = float(strategies[iid].position_base)
            if router is not None:
                res["metrics"]["simulator"] = simulator_section(router.sims[instrument.id].stats)
            if supervisor is not None:
                # its guards, its transitions (and the node's) and the state its orders end under
                res["metrics"]["risk"]["guards"] = supervisor.report([g for g in guards if g._iid_str == iid],
                                                                     w.end_ns, instrument_id=iid)
            if w.warmup_from_ns:
                res["metadata"]["warmup"] = {"replay_from_ns": w.warmup_from_ns,
                                             "replay_from": ns_to_iso(w.warmup_from_ns),
                                             "from_snapshot": w.from_snapshot}
            sections[iid] = res
        metadata, metrics = P.portfolio_report(cfg, sections, windows)
        metrics["replay"] = {"stream_rows": events, "cache_orders_at_end": len(engine.cache.orders())}
        if router is not None:
            metrics["simulator"] = {**simulator_section(router.stats), "unrouted_commands": router.unrouted_commands}
        allocator = next((a for a in engine.trader.actors() if isinstance(a, AllocatorActor)), None)
        if allocator is not None:  # budgets over time and the final scoreboard (docs/portfolio.md)
            board = next((a for a in engine.trader.actors() if isinstance(a, ScoreboardActor)), None)
            metrics["portfolio"]["allocator"] = allocator.report(board.report() if board is not None else None)
        if supervisor is not None:
            # node-scope guards (kill switch, portfolio); the others are in each instrument's section
            rep = supervisor.report([g for g in guards if g._iid_str is None], max(w.end_ns for w in windows.values()))
            metrics["risk"] = rep
        if halted is not None:
            metadata["started_halted"] = halted
    finally:
        if node is not None:
            node.dispose()
    _write_portfolio_outputs(out_dir, cfg, metadata, metrics, sections, audit_tmp, sizing)
    report = R.build_report(metadata, metrics)
    extras = {"started_halted": halted} if halted else {}
    return BacktestOutcome(out_dir=out_dir, report=report, events=events, wall_s=wall_s, extras=extras)


def _write_portfolio_outputs(out_dir: Path, cfg: BacktestConfig, metadata: dict, metrics: dict, sections: dict,
                             audit: Path, sizing: dict) -> None:
    """The run folder, staged then renamed (like a single-instrument run): report.json/md,
    report.html (the portfolio tables) and ``report.<label>.html`` per instrument (its own plots),
    fills/orders/equity parquet with an ``instrument_id`` column."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        P.write_portfolio_files(stage, cfg, metadata, metrics, sections)
        if audit.exists():
            os.replace(audit, stage / "audit.jsonl")
        kill_file = kill_file_path(cfg, BACKTEST_ENV)
        write_resolved_config(stage, cfg, {"risk.kill_switch.file": str(kill_file)} if kill_file else None,
                              replay={"feed": "per_delta"}, sizing=sizing or None)
        write_marker(stage, "backtest", cfg.config_hash())
        publish_run_folder(stage, out_dir, "backtest")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
