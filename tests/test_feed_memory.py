"""What the per-message feed keeps alive between chunks (mmbot/backtest/feed.py).

Trades are ~3 % of a stream's rows: decoded ``run.chunk_size`` at a time, one trade chunk spanned
hours of book messages and stayed in memory all that time (the embedded hour's 23,398 trades in
one 50,000-row chunk from the first message on). They are now decoded a tenth of the chunk size at
a time. The merged order of messages and trades does not depend on it (tests/test_feed_identity.py
runs ~1k-row chunks; the outputs of the default run are byte-identical)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmbot.backtest.feed import MessageFeed

REPO = Path(__file__).resolve().parents[1]
IID = "XRPUSDT-LINEAR.BYBIT"


def test_trades_are_decoded_in_a_tenth_of_the_chunk_size():
    feed = MessageFeed(REPO / "catalog", IID, None, None, chunk_rows=50_000)
    sizes = [len(objs) for objs, _ in feed.trades()]
    assert sum(sizes) == feed.stats.trade_rows > 20_000
    assert max(sizes) <= 5_000  # 50,000 // feed.TRADE_CHUNK_DIVISOR
    assert len(sizes) >= 5


def test_trade_chunking_changes_neither_the_merge_nor_the_counts():
    """The merged stream (every object's receive time, in order, and its kind) and the tie count
    are the same whatever the trade chunk: compared against trades decoded in one piece."""
    import mmbot.backtest.feed as F

    def merged(divisor: int):
        old = F.TRADE_CHUNK_DIVISOR
        F.TRADE_CHUNK_DIVISOR = divisor
        try:
            feed = MessageFeed(REPO / "catalog", IID, None, None, chunk_rows=50_000)
            ts, kinds = [], []
            for chunk in feed.chunks():
                ts.extend(o.ts_init for o in chunk)
                kinds.extend(type(o).__name__ for o in chunk)
            return np.array(ts), kinds, feed.stats.trade_ties, feed.stats.rows
        finally:
            F.TRADE_CHUNK_DIVISOR = old

    a, b = merged(10), merged(1)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2:] == b[2:]


def test_trades_after_the_last_book_message_come_piece_by_piece(monkeypatch):
    """Trades after the last book message were joined into one list, copying the growing list
    once per decoded piece (quadratic; hostile review 31): each piece is now a chunk of its own,
    in order, none lost. Here every trade is "after the last message" (no book rows)."""
    feed = MessageFeed(REPO / "catalog", IID, None, None, chunk_rows=50_000)
    expected = [t.ts_init for objs, _ in MessageFeed(REPO / "catalog", IID, None, None, chunk_rows=50_000).trades()
                for t in objs]
    monkeypatch.setattr(feed, "messages", lambda: iter(()))
    chunks = list(feed.chunks())
    assert [t.ts_init for c in chunks for t in c] == expected and len(expected) > 20_000
    assert max(len(c) for c in chunks) <= 5_000 and feed.stats.trade_rows == len(expected)


# -- the tie count's pass over the window (``trade_ties``, ``snapshot_trade_ties``) -------------
# It read the window's ts_init and flags columns whole, every file at once: ~9 bytes per book row
# plus Arrow's read buffers, in a run's setup, so a 4-hour run peaked ~70 MB above a 1-hour one
# (docs/benchmarks.md "Session 30"). It now reads a record batch at a time and keeps 8 bytes per
# book message (the publishing stamps).


def _stamp_file(path: Path, ts, flags=None, row_group_size: int = 1_000) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"ts_init": pa.array(ts, pa.uint64())}
    if flags is not None:
        cols["flags"] = pa.array(flags, pa.uint8())
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return str(path)


def _whole_column_ties(delta_paths, trade_paths, start_ns, end_ns) -> int:
    """The count as it was computed before (every column read whole, then ``np.isin``)."""
    import pyarrow.parquet as pq

    from mmbot.backtest.feed import F_LAST

    def window(paths, columns):
        out = {c: [] for c in columns}
        for p in paths:
            t = pq.read_table(p, columns=columns)
            ts = t.column("ts_init").to_numpy().astype(np.int64)
            keep = np.ones(len(ts), dtype=bool)
            if start_ns is not None:
                keep &= ts >= start_ns
            if end_ns is not None:
                keep &= ts <= end_ns
            for c in columns:
                out[c].append(t.column(c).to_numpy()[keep])
        return {c: np.concatenate(v) if v else np.empty(0) for c, v in out.items()}

    d, t = window(delta_paths, ["ts_init", "flags"]), window(trade_paths, ["ts_init"])
    if not len(d["ts_init"]) or not len(t["ts_init"]):
        return 0
    return int(np.isin(t["ts_init"], d["ts_init"][(d["flags"] & F_LAST) != 0]).sum())


@pytest.mark.parametrize("seed", range(40))
def test_the_tie_count_read_by_batches_is_the_whole_column_count(tmp_path, seed, monkeypatch):
    """Random stamp files (several per kind, unsorted, repeated stamps, every flag value, trades on
    publishing rows, on other rows and on neither, windows cutting through files) and batch sizes
    from 1 row to more than a file: the same count as the whole-column read."""
    import random

    from mmbot.backtest import feed

    rng = random.Random(seed)
    monkeypatch.setattr(feed, "SCAN_ROWS", rng.choice([1, 3, 64, 10_000]))
    span = rng.choice([50, 400, 5_000])
    deltas, stamps = [], []
    for i in range(rng.randint(0, 3)):
        n = rng.randint(0, 600)
        ts = [rng.randrange(span) for _ in range(n)]
        if rng.random() < 0.5:
            ts.sort()
        flags = [rng.choice([0, 128, 130, 32, 160, 255, 64, 16, 80, 2]) for _ in range(n)]
        stamps += ts
        deltas.append(_stamp_file(tmp_path / f"d{i}.parquet", ts, flags, rng.choice([7, 1_000])))
    trades = []
    for i in range(rng.randint(0, 3)):
        n = rng.randint(0, 300)
        ts = [rng.choice(stamps) if stamps and rng.random() < 0.5 else rng.randrange(span) for _ in range(n)]
        trades.append(_stamp_file(tmp_path / f"t{i}.parquet", ts, row_group_size=rng.choice([5, 1_000])))
    start = rng.choice([None, 0, rng.randrange(span)])
    end = rng.choice([None, span, rng.randrange(span)])
    want = _whole_column_ties(deltas, trades, start, end)
    got = feed._ties_with(trades, feed._publish_stamps(deltas, start, end), start, end)
    assert got == want


def test_the_tie_count_of_a_recording_with_ties_is_the_whole_column_count(tmp_path):
    """The embedded hour with every 40th trade moved onto the receive time of the book row before
    it (a publishing row or not, whichever it is): ``trade_ties`` over the hour and over a window
    counts what the whole-column read counts, and there are ties to count."""
    import shutil

    import pyarrow.parquet as pq

    from mmbot.backtest import feed

    cat = tmp_path / "cat"
    shutil.copytree(REPO / "catalog", cat)
    delta_paths = [p for *_, p in feed.data_files(cat, "order_book_deltas", IID)]
    trade_paths = [p for *_, p in feed.data_files(cat, "trade_tick", IID)]
    rows = np.concatenate([pq.read_table(p, columns=["ts_init"])["ts_init"].to_numpy().astype(np.int64)
                           for p in delta_paths])
    for tp in trade_paths:
        t = pq.read_table(tp)
        ts = t["ts_init"].to_numpy().astype(np.int64).copy()
        for i in range(1, len(ts), 40):
            before = rows[max(int(np.searchsorted(rows, ts[i])) - 1, 0)]
            if ts[i - 1] <= before:  # stays in order
                ts[i] = before
        import pyarrow as pa

        pq.write_table(t.set_column(t.schema.get_field_index("ts_init"), "ts_init", pa.array(ts.astype(np.uint64))),
                       tp, row_group_size=t.num_rows)
    mid = int(rows[len(rows) // 2])
    for start, end in ((None, None), (mid, None), (None, mid), (mid - 600 * 10**9, mid)):
        want = _whole_column_ties(delta_paths, trade_paths, start, end)
        assert feed.trade_ties(cat, IID, start, end) == want
    assert _whole_column_ties(delta_paths, trade_paths, None, None) > 100


def test_the_tie_count_holds_a_batch_and_the_publishing_stamps_not_the_window():
    """Memory of the tie pass over the embedded hour (tracemalloc: every NumPy buffer, 665k book
    rows in 174k messages): at most 16 bytes per message (the stamps, and their concatenation)
    plus a few batches. The whole-column read peaked at 14.7 MB here (2.8 MB now)."""
    import tracemalloc

    from mmbot.backtest import feed

    import pyarrow.parquet as pq

    messages = sum(int(np.count_nonzero(pq.read_table(p, columns=["flags"])["flags"].to_numpy() & feed.F_LAST))
                   for *_, p in feed.data_files(REPO / "catalog", "order_book_deltas", IID))
    tracemalloc.start()
    try:
        feed.trade_ties(REPO / "catalog", IID, None, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert messages > 150_000
    assert peak < 16 * messages + 2_000_000  # ~30 batches of 65,536 rows


def _arrow_peak_of_publish_stamps(path: Path, rows: int) -> int:
    """Arrow's own peak (its default memory pool, where NumPy's tracemalloc cannot see) while a
    fresh process reads the publishing stamps of one ``rows``-row file of a single row group."""
    import subprocess
    import sys

    rng = np.random.default_rng(rows)
    ts = (1_733_000_000_000_000_000 + np.cumsum(rng.integers(1, 5_000_000, rows))).astype(np.uint64)
    _stamp_file(path, ts, np.where(np.arange(rows) % 4 == 3, 128, 0).astype(np.uint8), row_group_size=rows)
    code = ("import pyarrow as pa\nfrom mmbot.backtest import feed\n"
            f"assert len(feed._publish_stamps([{str(path)!r}], None, None)) == {rows // 4}\n"
            "print(pa.default_memory_pool().max_memory())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return int(r.stdout.strip().splitlines()[-1])


def test_arrow_holds_a_read_buffer_not_the_file_while_the_stamps_are_read(tmp_path):
    """pyarrow pre-buffers a file's whole compressed columns by default (one row group: the whole
    column chunk) while it yields batches: its peak then doubles with the file (hostile review 36
    F2). Read unbuffered with a 1 MB buffer, twice the rows take about the same Arrow memory."""
    small = _arrow_peak_of_publish_stamps(tmp_path / "small.parquet", 1_500_000)
    large = _arrow_peak_of_publish_stamps(tmp_path / "large.parquet", 3_000_000)
    assert large < 1.25 * small + 1_000_000, (small, large)
