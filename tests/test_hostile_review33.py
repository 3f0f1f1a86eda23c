"""Hostile review 33 of run.warmup = "snapshot" (commit ff79953, the review-32 fixes). Each test
fails on that commit for a real defect; the report gives the reproduction commands. Fixed: H1 the
warm-up book decodes its rows with Nautilus' own Arrow decoder (a size-0 UPDATE was a traceback
from ``OrderBookDelta.from_raw``) and leaves out zero-size ADDs (no-ops in Nautilus' L2 book); H2
"auto" counts ties on the stream the snapshot start publishes (``snapshot_trade_ties``; since
session 33 ``snapshot_tie_order`` orders them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_window_warmup import cli_backtest as _run

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "catalog"
XRP = "XRPUSDT-LINEAR.BYBIT"
T_0740, T_0741 = 1_733_038_800_000_000_000, 1_733_038_860_000_000_000


def _set_column(path: Path, name: str, values: np.ndarray) -> None:
    t = pq.read_table(path)
    k = t.column_names.index(name)
    pq.write_table(t.set_column(k, t.schema.field(k), pa.array(values, type=t.schema.field(k).type)), path)


def _move_trade_to(catalog: Path, near_ns: int, to_ns: int) -> None:
    """The first trade received at or after ``near_ns`` is received at ``to_ns`` instead (which
    must stay between its neighbours)."""
    tf = next((catalog / "data" / "trade_tick" / XRP).glob("*.parquet"))
    ts = pq.read_table(tf, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64).copy()
    i = int(np.searchsorted(ts, near_ns))
    assert ts[i - 1] < to_ns < ts[i + 1]
    ts[i] = to_ns
    _set_column(tf, "ts_init", ts.astype(np.uint64))


def test_H1_update_to_size_zero_in_the_warm_up_is_a_traceback(tmp_path):
    """A catalog whose level removals are UPDATE rows of size 0 (what some writers send instead of
    DELETE): Nautilus' decoder and OrderBook take them (run.warmup = "replay" runs the same window,
    exit 0), but ``_warm_book`` rebuilds each row with ``OrderBookDelta.from_raw``, which refuses a
    size of 0: ValueError traceback, exit 1, from inside the engine loop."""
    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    f = sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0]
    t = pq.read_table(f, columns=["ts_init", "action"])
    ts, action = t["ts_init"].to_numpy().astype(np.int64), t["action"].to_numpy().copy()
    action[(ts > T_0740) & (ts < T_0741) & (action == 3)] = 2  # DELETE (size 0) -> UPDATE (size 0)
    _set_column(f, "action", action)
    replay = _run(cat, tmp_path / "replay", "2024-12-01T07:41:00Z", "2024-12-01T07:41:20Z")
    assert replay.exit_code == 0, replay.output
    snap = _run(cat, tmp_path / "snap", "2024-12-01T07:41:00Z", "2024-12-01T07:41:20Z", 'run.warmup="snapshot"')
    assert snap.exception is None or isinstance(snap.exception, SystemExit), repr(snap.exception)
    assert snap.exit_code == 0, snap.output


def _tie_catalog(tmp_path: Path) -> tuple[Path, Path, int, int]:
    """A copy of the embedded catalog where one trade is received at the ns the window's snapshot
    is published (its F_LAST row: m0's first row + levels), and the importer-style recording of it
    (tests/test_window_warmup.py ``_with_snapshot_at``)."""
    from mmbot.backtest.feed import snap_start

    from tests.test_window_warmup import _with_snapshot_at

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    start = snap_start(cat, XRP, T_0741)
    n = _with_snapshot_at(cat, tmp_path / "probe", XRP, start)
    f = pq.read_table(sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0],
                      columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64)
    first = int(f[np.searchsorted(f, start)])
    _move_trade_to(cat, first, first + n - 1)  # onto the snapshot's publishing row
    _with_snapshot_at(cat, tmp_path / "ref", XRP, start)
    return cat, tmp_path / "ref", start, start + 60 * 10**9


@pytest.mark.slow
def test_H2_auto_decides_on_the_recorded_stamps_not_on_the_stream_it_publishes(tmp_path):
    """run.feed = "auto" (the default): ``snapshot_start`` counted trade ties on the catalog's own
    stamps, but the stream replayed has new ones (the snapshot's F_LAST at m0's first row + levels,
    the shifted burst). A trade received at the snapshot's publishing ns: no tie in the catalog, so
    the snapshot start replayed per message, while "auto" replays the recording with that snapshot
    per delta (it has the tie): 4 of 43 fills differed. Now the ties are found on the stream the
    snapshot start would publish (``snapshot_tie_order``), with the order Nautilus' merge gives them
    on the recording with that snapshot (session 33; before it, "auto" replayed the warm-up there):
    the snapshot start ("auto") is the recording with that snapshot replayed per delta, and per
    message on both sides the two runs are byte-identical too."""
    import json

    from mmbot.backtest.feed import snapshot_tie_order, snapshot_trade_ties, tie_order, trade_ties
    from mmbot.backtest.run import snapshot_before

    from tests.test_window_warmup import same_run

    cat, ref, start, end = _tie_catalog(tmp_path)
    assert trade_ties(cat, XRP, start, end) == 0 and trade_ties(ref, XRP, start, end) == 1
    book_from = snapshot_before(cat, XRP, start)[0]
    assert snapshot_trade_ties(cat, XRP, book_from, start, end) == 1
    order, want = snapshot_tie_order(cat, XRP, book_from, start, end), tie_order(ref, XRP, start, end)
    assert order.unresolved == want.unresolved == 0
    assert order.book_first_ns.tolist() == want.book_first_ns.tolist() and len(want.book_first_ns) == 1
    b = _run(cat, tmp_path / "b", start, end, 'run.warmup="snapshot"')
    assert b.exit_code == 0, b.output
    warm = json.loads((tmp_path / "b" / "report.json").read_text())["metadata"]["warmup"]
    assert warm["mode"] == "snapshot" and warm["book_from_ns"] == book_from, warm
    c = _run(ref, tmp_path / "c", start, end, 'run.feed="per_delta"')
    assert c.exit_code == 0, c.output
    same_run(tmp_path / "b", tmp_path / "c")
    b = _run(cat, tmp_path / "b-pm", start, end, 'run.warmup="snapshot"', 'run.feed="per_message"')
    c = _run(ref, tmp_path / "c-pm", start, end, 'run.feed="per_message"')
    assert b.exit_code == 0 and c.exit_code == 0, (b.output, c.output)
    same_run(tmp_path / "b-pm", tmp_path / "c-pm")


def test_H2b_a_tie_with_m0_alone_makes_auto_give_up_the_snapshot_start(tmp_path):
    """The other direction: the only tie in the window is a trade received with m0's F_LAST row,
    which the snapshot start never publishes (m0 is replaced by the snapshot, published later).
    The recording with that snapshot has no tie; the snapshot start still falls back to replaying
    the warm-up ("not used: 1 trade(s) share their receive time ...")."""
    from mmbot.backtest.feed import F_LAST, snap_start, trade_ties
    from mmbot.backtest.run import resolve_window, snapshot_start
    from mmbot.config.backtest import load_backtest_config

    from tests.test_window_warmup import _with_snapshot_at

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    start = snap_start(cat, XRP, T_0741)
    b = pq.read_table(sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[0],
                      columns=["ts_init", "flags"])
    bts, flags = b["ts_init"].to_numpy().astype(np.int64), b["flags"].to_numpy()
    i = int(np.searchsorted(bts, start))
    m0_last = int(bts[i + int(np.flatnonzero(flags[i:] & F_LAST)[0])])
    _move_trade_to(cat, m0_last, m0_last)
    end = start + 60 * 10**9
    _with_snapshot_at(cat, tmp_path / "ref", XRP, start)
    assert trade_ties(cat, XRP, start, end) == 1 and trade_ties(tmp_path / "ref", XRP, start, end) == 0
    cfg = load_backtest_config(ROOT / "config" / "backtest.toml", ['run.warmup="snapshot"'])
    _, book_from, note = snapshot_start(cfg, resolve_window(cat, XRP, str(start), str(end)), cat, XRP)
    assert book_from > 0, note


def test_H2c_ties_are_counted_on_the_shifted_burst_and_on_the_recorded_rest(tmp_path):
    """``snapshot_trade_ties`` reads the snapshot start's own stamps only while they differ from
    the recording's (the snapshot and the burst shifted after it), then the recording's publishing
    rows: a trade moved onto a shifted burst message's new receive time and one onto a later
    message's are both counted, as in the full stream the feed publishes."""
    from mmbot.backtest.feed import SnapshotStartFeed, snap_start, snapshot_trade_ties
    from mmbot.backtest.run import snapshot_before
    from mmbot.timeutil import parse_time_ns

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    start = snap_start(cat, XRP, parse_time_ns("2024-12-01T08:20:48Z"))
    end = start + 30 * 10**9
    book_from = snapshot_before(cat, XRP, start)[0]
    feed = SnapshotStartFeed(cat, XRP, book_from, start, end)
    publish = np.concatenate([m_ts for _, m_ts in feed.messages()])
    shifted, later = int(publish[1]), int(publish[500])  # a burst message moved after the snapshot; one as recorded
    tf = next((cat / "data" / "trade_tick" / XRP).glob("*.parquet"))
    ts = pq.read_table(tf, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64).copy()
    for target in (shifted, later):
        j = int(np.searchsorted(ts, target))
        assert ts[j - 1] < target < ts[j + 1]
        ts[j] = target
    _set_column(tf, "ts_init", ts.astype(np.uint64))
    full = np.concatenate([m_ts for _, m_ts in SnapshotStartFeed(cat, XRP, book_from, start, end).messages()])
    trades = ts[(ts >= start) & (ts <= end)]
    assert int(np.isin(trades, full).sum()) == 2
    for chunk_rows in (100, 50_000):  # 100: the later message is past the dry pass's first chunk
        assert snapshot_trade_ties(cat, XRP, book_from, start, end, chunk_rows) == 2
    # session 33: their order is the recording with that snapshot written's (a tie in the shifted
    # burst, one in the recorded rest), whatever the dry pass's chunk; a shorter window is its own
    from mmbot.backtest.feed import snapshot_tie_order, tie_order

    from tests.test_window_warmup import _with_snapshot_at

    _with_snapshot_at(cat, tmp_path / "ref", XRP, start)
    want = tie_order(tmp_path / "ref", XRP, start, end)
    assert want.trades_tied == 2 and want.unresolved == 0 and want.stamps >= 2, want
    for chunk_rows in (100, 50_000):
        got = snapshot_tie_order(cat, XRP, book_from, start, end, chunk_rows)
        assert (got.book_first_ns.tolist(), got.stamps, got.unresolved) == \
            (want.book_first_ns.tolist(), want.stamps, want.unresolved)
    short = snapshot_tie_order(cat, XRP, book_from, start, later - 1)
    assert short.trades_tied == 1 and short.book_first_ns.tolist() == [t for t in want.book_first_ns if t < later]


def test_snapshot_tie_order_reads_every_row_of_the_shifted_burst(tmp_path):
    """Session 33: a snapshot start's ties are ordered on every row of its own stream, not only its
    publishing rows. A burst message shifted after the snapshot (rows 1 ns apart) gets one trade on
    its second row and one on its publishing row: on every row, the book emitted last before the
    publishing row (its rows after the second), so the book goes first there; on publishing rows
    alone the trade on the second row would look last. Same order as the recording with that
    snapshot written."""
    from mmbot.backtest.feed import SnapshotStartFeed, snap_start, snapshot_tie_order, tie_order
    from mmbot.backtest.run import snapshot_before
    from mmbot.timeutil import parse_time_ns

    from tests.test_window_warmup import _with_snapshot_at

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    start = snap_start(cat, XRP, parse_time_ns("2024-12-01T08:20:48Z"))
    end = start + 30 * 10**9
    book_from = snapshot_before(cat, XRP, start)[0]
    msgs = [m for chunk, _ in SnapshotStartFeed(cat, XRP, book_from, start, end).messages() for m in chunk]
    rows = next([d.ts_init for d in m.deltas] for m in msgs[1:6] if len(m.deltas) >= 4
                and m.deltas[-1].ts_init - m.deltas[0].ts_init == len(m.deltas) - 1)
    second, publishing = rows[1], rows[-1]
    tf = next((cat / "data" / "trade_tick" / XRP).glob("*.parquet"))
    ts = pq.read_table(tf, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64).copy()
    j = int(np.searchsorted(ts, second))
    assert ts[j - 1] < second and publishing < ts[j + 2]
    ts[j], ts[j + 1] = second, publishing
    _set_column(tf, "ts_init", ts.astype(np.uint64))
    _with_snapshot_at(cat, tmp_path / "ref", XRP, start)
    want = tie_order(tmp_path / "ref", XRP, start, end)
    assert want.unresolved == 0 and publishing in want.book_first_ns.tolist()
    got = snapshot_tie_order(cat, XRP, book_from, start, end)
    assert (got.book_first_ns.tolist(), got.stamps, got.trades_tied) == \
        (want.book_first_ns.tolist(), want.stamps, want.trades_tied)
