"""What the per-message feed keeps alive between chunks (mmbot/backtest/feed.py).

Trades are ~3 % of a stream's rows: decoded ``run.chunk_size`` at a time, one trade chunk spanned
hours of book messages and stayed in memory all that time (the embedded hour's 23,398 trades in
one 50,000-row chunk from the first message on). They are now decoded a tenth of the chunk size at
a time. The merged order of messages and trades does not depend on it (tests/test_feed_identity.py
runs ~1k-row chunks; the outputs of the default run are byte-identical)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
