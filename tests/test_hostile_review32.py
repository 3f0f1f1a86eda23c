"""Hostile review of run.warmup = "snapshot" (commit 7369922, SnapshotStartFeed). Each test fails on
that commit for a real defect; the report (review 32) gives the reproduction commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmbot.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "catalog"
XRP = "XRPUSDT-LINEAR.BYBIT"
# 08:20:48.000 snaps to a 4-row message at 08:20:48.008829009 whose next message is received 5 ns
# later (the importer stamps a burst of messages read together 1 ns apart): a ~100-row snapshot
# stamped at m0's first row + k ns cannot end before it. 15 of the hour's 3,600 whole seconds do this.
BURST_START = "2024-12-01T08:20:48Z"


def _one_line_exit_2(r, *names):
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.output


@pytest.mark.slow
def test_F1_a_snapshot_whose_rows_reach_the_next_message_shifts_it_as_the_importer_would(tmp_path):
    """Was: FeedError raised inside the engine loop and caught by nothing (a traceback, exit 1) on an
    ordinary whole-second start. The importer receives a message no earlier than 1 ns after the
    previous one's last row, so in a recording with the snapshot there the burst that followed m0
    is shifted after it: the snapshot start now does the same and equals that recording's run."""
    from mmbot.backtest.feed import snap_start
    from mmbot.timeutil import parse_time_ns

    from tests.test_window_warmup import _with_snapshot_at, cli_backtest_ok, same_run

    start = snap_start(CAT, XRP, parse_time_ns(BURST_START))
    end = parse_time_ns("2024-12-01T08:21:30Z")
    _with_snapshot_at(CAT, tmp_path / "cat-c", XRP, start)

    def run(catalog, name, *sets):
        return cli_backtest_ok(catalog, tmp_path / name, start, end, *sets)

    same_run(run(CAT, "b", 'run.warmup="snapshot"'), run(tmp_path / "cat-c", "c"))


@pytest.mark.slow
def test_F1b_default_wf_config_does_not_crash_on_a_split_starting_on_a_burst(tmp_path):
    """config/wf.toml now uses run.warmup = "snapshot": a wf whose split starts at such an instant
    dies with the FeedError traceback (all splits lost), instead of skipping / failing that trial."""
    r = CliRunner().invoke(main, ["wf", "--start", "2024-12-01T07:32:37Z", "--end", "2024-12-01T07:50:00Z",
                                  "--train", "10m", "--test", "5m", "--trials", "1", "--workers", "1",
                                  "--out", str(tmp_path / "wf")])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


def _snapshot_feed(start_iso_or_ns, end_ns, chunk_rows):
    from mmbot.backtest.feed import SnapshotStartFeed, snap_start
    from mmbot.backtest.run import snapshot_before
    from mmbot.timeutil import parse_time_ns

    start = snap_start(CAT, XRP, parse_time_ns(str(start_iso_or_ns)))
    book_from, _ = snapshot_before(CAT, XRP, start)
    return SnapshotStartFeed(CAT, XRP, book_from, start, end_ns, chunk_rows=chunk_rows), start


def test_F2_small_chunks_publish_the_snapshot_after_the_next_message():
    """The stamp check compares the snapshot only with the next message OF THE SAME decoded chunk.
    With run.chunk_size 1 or 7 m0 ends its chunk: no FeedError, the snapshot (…829100) is fed
    before a message received earlier (…829014): data backwards in time, and the same config runs
    with chunk_size 7 but dies with 50000 (chunk_size is documented as a memory bound only)."""
    from mmbot.timeutil import parse_time_ns

    end = parse_time_ns("2024-12-01T08:20:49Z")
    feed, _ = _snapshot_feed(BURST_START, end, 7)
    ts = [x.ts_init for chunk in feed.chunks() for x in chunk]
    assert all(a <= b for a, b in zip(ts, ts[1:])), "stream goes backwards in time"


def test_F3_snapshot_received_after_the_window_end_is_not_published():
    """Window [t, t+1] on the 2-row message at 08:20:00.003114000: the importer-written snapshot at
    m0 (101 rows, F_LAST at t+100) is never published in that window (stream_rows 2), the
    synthetic one is (stream_rows 101, guards' time_in_state differ): the claimed byte identity breaks."""
    from nautilus_trader.model.data import OrderBookDeltas

    t = 1_733_041_200_003_114_000
    feed, start = _snapshot_feed(t, t + 1, 50_000)
    assert start == t
    published = [x for chunk in feed.chunks() for x in chunk if isinstance(x, OrderBookDeltas)]
    assert all(m.ts_init <= t + 1 for m in published), [m.ts_init for m in published]


def test_F4_feed_stats_count_the_snapshot_message():
    """stats.messages subtracts m0 but never adds the snapshot that replaces it (1449 vs 1450)."""
    from nautilus_trader.model.data import OrderBookDeltas

    from mmbot.timeutil import parse_time_ns

    feed, _ = _snapshot_feed("2024-12-01T08:20:00Z", parse_time_ns("2024-12-01T08:20:30Z"), 50_000)
    n = sum(isinstance(x, OrderBookDeltas) for chunk in feed.chunks() for x in chunk)
    assert feed.stats.messages == n


def test_F5_wf_portfolio_with_snapshot_is_refused_before_any_trial():
    """`mmbot wf --config config/portfolio.toml --space config/wf_portfolio.toml --set
    run.warmup="snapshot"` runs every trial (each rejected), writes a whole wf folder and exits 2
    on "gate failed: no split produced an out-of-sample result": the refusal is only in
    run_portfolio_backtest, not in the config checks wf.prepare runs."""
    from mmbot.config.backtest import ConfigError
    from mmbot.tuning.runner import prepare

    with pytest.raises(ConfigError, match="run.warmup"):
        prepare(ROOT / "config" / "portfolio.toml", ['run.warmup="snapshot"'],
                space_path=ROOT / "config" / "wf_portfolio.toml")


def test_F6_wf_space_tuning_the_fill_model_is_refused_at_prepare(tmp_path):
    """config/wf.toml says fill-model keys are tunable; with its new warmup = "snapshot" a space
    `venue.fill_model = {choices = ["prob_power", "nautilus"]}` is accepted and every "nautilus"
    trial comes back FAIL ("rejected: ... run.warmup ...") in trials.csv: half the search space
    silently lost (with run.warmup = "replay" those trials complete)."""
    from mmbot.config.backtest import ConfigError
    from mmbot.tuning.runner import prepare

    text = (ROOT / "config" / "wf.toml").read_text()
    text = text.replace('"strategy.use_amend" = { choices = [true, false] }',
                        '"venue.fill_model" = { choices = ["prob_power", "nautilus"] }')
    text = text.replace('catalog = "../catalog"', f'catalog = "{CAT}"')
    cfg = tmp_path / "wf.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="run.warmup"):
        prepare(cfg, [])


def test_F7_auto_feed_with_trade_ties_is_not_silently_per_message(tmp_path):
    """run.feed = "auto" replays per delta when a trade shares its ts_init with a book message's
    publishing row (per-message not proven identical there). choose_feed returns per_message for
    every snapshot start without that check: on a copy of the catalog with 26 such ties in
    08:20-08:21 the snapshot start's fills differ (venue_order_id) from the same window of the
    catalog with that snapshot written (which auto replays per delta). Then "auto" with ties replayed
    the warm-up per delta and report.json's metadata.warmup.snapshot_start said why. Since session
    33 the per-delta order at such ties is derived (``snapshot_tie_order``): "auto" starts on the
    snapshot and orders them so (tests/test_hostile_review33.py H2 compares with the recording with
    that snapshot replayed per delta); only a tie whose order is not derived (here: a copied-in trade
    file overlapping the recording's) still replays the warm-up, per delta, and says why."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmbot.backtest.feed import trade_ties
    from mmbot.backtest.run import choose_feed, resolve_window, snapshot_start
    from mmbot.config.backtest import load_backtest_config

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    bf = sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[1]
    b = pq.read_table(bf, columns=["ts_init", "flags"])
    pub = b["ts_init"].to_numpy()[(b["flags"].to_numpy() & 128) != 0]
    tf = next((cat / "data" / "trade_tick" / XRP).glob("*.parquet"))
    t = pq.read_table(tf)
    ts = t["ts_init"].to_numpy().copy()
    lo = 1_733_041_205_000_000_000
    for i in np.flatnonzero(ts > lo)[:40]:
        cand = pub[np.searchsorted(pub, ts[i]) - 1]
        if cand > ts[i - 1] and cand < ts[i]:
            ts[i] = cand
    k = t.column_names.index("ts_init")
    pq.write_table(t.set_column(k, t.schema.field(k), pa.array(ts, type=t.schema.field(k).type)), tf)
    start, end = 1_733_041_200_000_000_000, 1_733_041_260_000_000_000
    assert trade_ties(cat, XRP, start, end) > 0
    cfg = load_backtest_config(ROOT / "config" / "backtest.toml", ['run.warmup="snapshot"', 'run.feed="auto"'])
    window, book_from, note = snapshot_start(cfg, resolve_window(cat, XRP, str(start), str(end)), cat, XRP)
    assert book_from > 0 and note == ""  # every tie's order derived: the snapshot start
    feed, msg_feed = choose_feed(cfg, cat, XRP, window, book_from)
    assert feed == "per_message" and len(msg_feed.book_first_ns) > 0
    # a trade file copied in, overlapping the recording's: no order derived, the warm-up per delta
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    tie = int(pub[np.searchsorted(pub, start + 30 * 10**9)])
    extra = tmp_path / "extra"
    ParquetDataCatalog(str(extra)).write_data([TradeTick(InstrumentId.from_str(XRP), Price(1.95, 4), Quantity(5, 0),
                                                         AggressorSide.BUYER, TradeId("TIE"), tie, tie)])
    for f in (extra / "data" / "trade_tick" / XRP).glob("*.parquet"):
        shutil.copy(f, cat / "data" / "trade_tick" / XRP / f.name)
    window, book_from, note = snapshot_start(cfg, resolve_window(cat, XRP, str(start), str(end)), cat, XRP)
    assert book_from == 0 and window.warmup_from_ns and "trade(s) share their receive time" in note, note
    feed, _ = choose_feed(cfg, cat, XRP, window, book_from)
    assert feed == "per_delta"  # the warm-up is replayed, per delta, as "auto" does with such ties
    # run.feed = "per_message" asks for the message feed: the snapshot start is made
    cfg = load_backtest_config(ROOT / "config" / "backtest.toml", ['run.warmup="snapshot"', 'run.feed="per_message"'])
    assert snapshot_start(cfg, resolve_window(cat, XRP, str(start), str(end)), cat, XRP)[1] > 0
