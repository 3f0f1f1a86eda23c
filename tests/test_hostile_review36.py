"""Hostile review 36 of the tie count read a batch at a time (commit 813fb2c) and of
tools/bench/floor.py. Each test fails on that commit; the report gave the reproductions. Fixed: F1
a trade file with a null ``ts_init`` made the tie pass raise a pyarrow traceback (the whole-column
read before it ran); F2 pyarrow pre-buffered each file's whole columns (tests/test_feed_memory.py,
``test_arrow_holds_a_read_buffer_not_the_file_while_the_stamps_are_read``); F3 rules no test
pinned (the window's end is inside it, the snapshot start's trades are looked for past the first
batch, only publishing rows count after the stamps settle); F4/F5 the floor tool's refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_feed_memory import _stamp_file
from tests.test_hostile_review33 import _set_column

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "catalog"
XRP = "XRPUSDT-LINEAR.BYBIT"


def _trade_file(cat: Path) -> Path:
    return next((cat / "data" / "trade_tick" / XRP).glob("*.parquet"))


def _silent_row_stamp(cat: Path, after_ns: int, before_ns: int) -> int:
    """Give the first row of a book message received after ``after_ns`` (a message of several
    rows, whose previous message came more than 1 ns earlier) its own receive time, 1 ns before
    the message's publishing row: a stamp at which no message is published. Returns it."""
    from mmbot.backtest.feed import F_LAST

    f = next(p for p in sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))
             if pq.read_metadata(p).num_rows and
             pq.read_table(p, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64)[-1] > before_ns)
    t = pq.read_table(f, columns=["ts_init", "flags"])
    ts, flags = t["ts_init"].to_numpy().astype(np.int64).copy(), t["flags"].to_numpy()
    last = np.flatnonzero(flags & F_LAST)
    for a, b in zip(last[:-1], last[1:], strict=True):  # message = rows a+1 .. b
        if ts[b] > after_ns and b - a >= 2 and ts[b] < before_ns and ts[b] - 1 > ts[a]:
            ts[a + 1] = ts[b] - 1
            _set_column(f, "ts_init", ts.astype(np.uint64))
            return int(ts[b] - 1)
    raise AssertionError("no message of several rows in the range")


def test_F1_a_trade_without_a_receive_time_is_in_no_window_not_a_traceback(tmp_path):
    """One null ``ts_init`` in the trade file (outside the window): the tie pass raised
    ``ArrowInvalid`` (zero-copy conversion of a batch with a null), where the whole-column read ran
    and the replay exits 0. A row without a receive time is in no window and ties nothing; a book
    row without flags publishes nothing."""
    from mmbot.backtest import feed

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    tf = _trade_file(cat)
    t = pq.read_table(tf)
    ts = t["ts_init"].to_pylist()
    start, end = ts[8000], ts[9000]
    want = feed.trade_ties(cat, XRP, start, end)
    ts[5000] = None  # before the window
    k = t.schema.get_field_index("ts_init")
    pq.write_table(t.set_column(k, pa.field("ts_init", pa.uint64(), nullable=True), pa.array(ts, pa.uint64())), tf)
    assert feed.trade_ties(cat, XRP, start, end) == want
    assert feed.trade_ties(cat, XRP, None, None) == feed.trade_ties(CAT, XRP, None, None)  # the row ties nothing
    d = _stamp_file(tmp_path / "d.parquet", [10, 20, 30, 40], [None, 128, 0, 128])
    assert feed._publish_stamps([d], None, None).tolist() == [20, 40]


def test_F3a_trades_at_the_window_edges_tie_and_one_ns_outside_do_not(tmp_path):
    """The window is closed at both ends, as the replay's: publishing rows and trades exactly at
    ``start`` and at ``end`` count, one ns outside do not."""
    from mmbot.backtest import feed

    s, e = 1_000, 2_000
    stamps = [s - 1, s, 1_500, e, e + 1]
    d = _stamp_file(tmp_path / "d.parquet", stamps, [128] * 5)
    t = _stamp_file(tmp_path / "t.parquet", stamps)
    assert feed._ties_with([t], feed._publish_stamps([d], s, e), s, e) == 3
    assert feed._ties_with([t], feed._publish_stamps([d], None, None), None, None) == 5


def _h2c_catalog(tmp_path: Path):
    """tests/test_hostile_review33.py H2c's window (08:20:48, 30 s) with a trade on a shifted burst
    message's new receive time, one on a later message's, and (new) one on the receive time of a
    later book row that publishes nothing."""
    from mmbot.backtest.feed import SnapshotStartFeed, snap_start
    from mmbot.backtest.run import snapshot_before
    from mmbot.timeutil import parse_time_ns

    cat = tmp_path / "cat"
    shutil.copytree(CAT, cat)
    start = snap_start(cat, XRP, parse_time_ns("2024-12-01T08:20:48Z"))
    end = start + 30 * 10**9
    book_from = snapshot_before(cat, XRP, start)[0]
    publish = np.concatenate([m for _, m in SnapshotStartFeed(cat, XRP, book_from, start, end).messages()])
    silent = _silent_row_stamp(cat, int(publish[600]), end)
    assert silent not in set(publish.tolist())
    tf = _trade_file(cat)
    ts = pq.read_table(tf, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64).copy()
    for target in (int(publish[1]), int(publish[500]), silent):
        j = int(np.searchsorted(ts, target))
        assert ts[j - 1] < target < ts[j + 1]
        ts[j] = target
    _set_column(tf, "ts_init", ts.astype(np.uint64))
    return cat, book_from, start, end


@pytest.mark.parametrize("scan_rows", [64, 65_536])
def test_F3b_the_snapshot_start_counts_only_publishing_stamps_whatever_the_batch(tmp_path, monkeypatch, scan_rows):
    """With batches of 64 rows the window's trades are many batches into the trade file (the
    recording starts 50 minutes earlier): the pass still finds them (a check of the first batch
    only found none: no tie, so "auto" would replay per message). After the stamps settle only
    publishing rows count: the trade on a silent book row is no tie, whether the dry pass or the
    recording's rest reaches it. Two ties, as H2c's."""
    from mmbot.backtest import feed

    cat, book_from, start, end = _h2c_catalog(tmp_path)
    monkeypatch.setattr(feed, "SCAN_ROWS", scan_rows)
    for chunk_rows in (100, 50_000):  # 100: the dry pass settles in its first chunk, the rest is read
        assert feed.snapshot_trade_ties(cat, XRP, book_from, start, end, chunk_rows) == 2


def _floor(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.bench.floor", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("parts", ["", ",", "backtest,backtest", "nope"])
def test_F4_the_floor_tool_refuses_an_empty_or_repeated_part_list_in_one_line(parts):
    """``--parts ""`` ran nothing, exited 0 and overwrote the stored record with an empty one."""
    r = _floor("--parts", parts, "--no-save")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--parts" in r.stderr


def test_F5_a_profile_without_nautilus_samples_is_one_line_not_a_traceback():
    """A profile with no sample under the run's own function (py-spy's ``--full-filenames``)
    gave a share of None and a TypeError after every measuring run; a share of 0 divided by zero."""
    from tools.bench import floor

    empty = floor.split(["<module> (<string>:1);run_backtest (/abs/mmbot/backtest/run.py:1) 5"], floor.ROOTS["backtest"])
    assert empty["samples"] == 0 and empty["nautilus_share"] is None
    for share in (None, 0.0):
        with pytest.raises(floor.FloorError, match="no Nautilus sample"):
            floor._bound("backtest", [10.0], [5.0], [share], [empty])


def test_F4b_one_part_keeps_the_other_parts_stored_record(tmp_path, monkeypatch):
    """A run of one part replaced the whole stored record (the other part's figures were lost)."""
    from tools.bench import floor

    results = tmp_path / "tools" / "bench" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"benchmarks": {"floor": {"wf": {"bound_if_mmbot_code_took_no_time": 2.7}}}}))
    monkeypatch.setattr(floor, "__file__", str(results.parent / "floor.py"))
    monkeypatch.setattr(floor, "_py_spy", lambda: "py-spy")
    monkeypatch.setattr(floor, "baseline_tree", lambda ref, work: (work, "0" * 40))
    monkeypatch.setattr(floor, "floor_backtest", lambda *a: {"bound_if_mmbot_code_took_no_time": 2.9})
    assert floor.main(["--parts", "backtest"]) == 0
    got = json.loads(results.read_text())["benchmarks"]["floor"]
    assert got["wf"] == {"bound_if_mmbot_code_took_no_time": 2.7}
    assert got["backtest"]["bound_if_mmbot_code_took_no_time"] == 2.9 and "sitting" in got["backtest"]
