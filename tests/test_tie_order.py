"""The per-delta order at receive times shared by trades and book rows (``tie_order``,
mmbot/backtest/feed.py) against Nautilus' own merge of the same files.

Each case writes a small catalog (book rows and trades with many equal ``ts_init``, in one or more
files of each kind), streams it the way ``BacktestNode`` does (``DataBackendSession`` with the
files ``filter_files`` picks, book files then trade files) and reads, at every stamp both kinds
hold, which kind Nautilus emits first. The rule must give that kind at every tie it resolves, the
items of each kind at a tie must come as one block (what the per-message feed relies on: a message
and the trades at its stamp are whole units), and the ties it leaves unresolved must be exactly
the ones the rule names (a file's first row, files of one kind overlapping). The end-to-end proof
on fills is tests/test_feed_identity.py::test_random_streams_with_ties.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbot.backtest import feed as feed_module
from mmbot.backtest.feed import MessageFeed, _merge, tie_order

REPO = Path(__file__).resolve().parents[1]
XRP = "XRPUSDT-LINEAR.BYBIT"
T0 = 1_733_040_000_000_000_000


def write_catalog(path: Path, book: list[tuple[int, bool]], trades: list[int], book_cuts: list[int],
                  trade_cuts: list[int]) -> Path:
    """``book``: (ts_init, publishing) per row in order; ``trades``: ts_init per trade; the cuts are
    row indices where a new file starts (one ``write_data`` per file)."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta, TradeTick
    from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    iid = InstrumentId.from_str(XRP)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    shutil.copytree(REPO / "catalog" / "data" / "crypto_perpetual", path / "data" / "crypto_perpetual")
    cat = ParquetDataCatalog(str(path))
    rows = [OrderBookDelta(iid, BookAction.UPDATE, BookOrder(OrderSide.BUY, Price(1.95, 4), Quantity(100 + i, 0), 0),
                           128 if last else 0, i, ts, ts) for i, (ts, last) in enumerate(book)]
    ticks = [TradeTick(iid, Price(1.95, 4), Quantity(1, 0), AggressorSide.BUYER, TradeId(f"T{i}"), ts, ts)
             for i, ts in enumerate(trades)]
    for objs, cuts in ((rows, book_cuts), (ticks, trade_cuts)):
        edges = [0, *sorted(set(c for c in cuts if 0 < c < len(objs))), len(objs)]
        for a, b in zip(edges, edges[1:]):
            if b > a:
                cat.write_data(objs[a:b])
    return path


CHUNK = 7  # the per-delta streaming chunk of these checks (items), so that chunk edges fall inside stamps


def nautilus_stream(path: Path, start_ns: int | None = None, end_ns: int | None = None,
                    published: bool = False, chunk_edges: set | None = None) -> list[tuple[int, int]]:
    """``(ts_init, kind)`` (0 book row, 1 trade) in the order ``BacktestNode._run_streaming`` feeds
    the engine: one session, the book's data config then the trades', each with the files
    ``filter_files`` picks for the window. ``published``: the book's publishing (``F_LAST``) rows
    only, i.e. what the DataEngine publishes (a message at its last row). ``chunk_edges`` gets the
    stamps whose items Nautilus' ``CHUNK``-item chunks split (the last of a chunk and the first of
    the next share it)."""
    from nautilus_trader.core.nautilus_pyo3 import DataBackendSession, drop_cvec_pycapsule
    from nautilus_trader.model.data import OrderBookDelta, TradeTick, capsule_to_list
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    cat = ParquetDataCatalog(str(path))
    session = DataBackendSession(chunk_size=CHUNK)
    for cls in (OrderBookDelta, TradeTick):
        files = cat.filter_files(data_cls=cls, file_paths=cat.get_file_list_from_data_cls(cls), identifiers=[XRP],
                                 start=start_ns, end=end_ns)
        session = cat.backend_session(data_cls=cls, identifiers=[XRP], start=start_ns, end=end_ns, session=session,
                                      files=files)
    out, last = [], None
    for capsule in session.to_query_result():
        objs = capsule_to_list(capsule)
        drop_cvec_pycapsule(capsule)
        if objs and chunk_edges is not None and last is not None and objs[0].ts_init == last:
            chunk_edges.add(last)
        if objs:
            last = objs[-1].ts_init
        out += [(o.ts_init, 1 if isinstance(o, TradeTick) else 0) for o in objs
                if not published or isinstance(o, TradeTick) or o.flags & 128]
    return out


def first_kind_at_ties(stream: list[tuple[int, int]]) -> dict[int, int]:
    """The kind emitted first at each stamp both kinds hold; asserts each kind comes as one block."""
    at: dict[int, list[int]] = {}
    for ts, kind in stream:
        at.setdefault(ts, []).append(kind)
    out = {}
    for ts, kinds in at.items():
        if len(set(kinds)) == 2:
            switches = sum(1 for a, b in zip(kinds, kinds[1:]) if a != b)
            assert switches == 1, f"kinds interleaved at {ts}: {kinds}"
            out[ts] = kinds[0]
    return out


def message_feed(path: Path, order, start_ns: int | None = None, end_ns: int | None = None,
                 chunk_rows: int = 3) -> list[tuple[int, int]]:
    """``(ts_init, kind)`` (0 message, 1 trade) in the order the per-message feed gives them."""
    from nautilus_trader.model.data import TradeTick

    feed = MessageFeed(path, XRP, start_ns, end_ns, chunk_rows=chunk_rows, book_first_ns=order.book_first_ns)
    return [(o.ts_init, 1 if isinstance(o, TradeTick) else 0) for chunk in feed.chunks() for o in chunk]


def check(path: Path, start_ns: int | None = None, end_ns: int | None = None) -> tuple[int, int]:
    """The rule against Nautilus' merge at every tie; with no tie unresolved, the per-message feed
    (3-row decode chunks: messages cut at chunk ends) publishes what the per-delta feed does, in
    its order. ``(book-first ties, unresolved ties)``."""
    edges: set[int] = set()
    truth = first_kind_at_ties(nautilus_stream(path, start_ns, end_ns, chunk_edges=edges))
    order = tie_order(path, XRP, start_ns, end_ns, CHUNK)
    assert order.stamps == len(truth)
    assert order.split_by_chunk == len(edges & set(truth))  # ties a per-delta chunk edge splits
    book_first = set(order.book_first_ns.tolist())
    assert book_first <= set(truth)
    resolved = 0
    for ts, kind in truth.items():
        if ts in book_first:
            assert kind == 0, f"book first at {ts} by the rule, trades first in Nautilus' merge"
            resolved += 1
    whole = tie_order(path, XRP, start_ns, end_ns, 10**9)  # one chunk: no tie split by a chunk edge
    assert whole.book_first_ns.tolist() == order.book_first_ns.tolist() and whole.split_by_chunk == 0
    if not whole.unresolved:
        assert message_feed(path, whole, start_ns, end_ns) == nautilus_stream(path, start_ns, end_ns, published=True)
    return resolved, order.unresolved


@st.composite
def streams(draw):
    """Book rows and trades on a coarse clock (so that many stamps are shared), in 1-3 files each."""
    n_book = draw(st.integers(1, 60))
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 1, 2]), min_size=n_book, max_size=n_book))
    book_ts = (T0 + np.cumsum(steps)).tolist()
    publishing = draw(st.lists(st.booleans(), min_size=n_book, max_size=n_book))
    publishing[-1] = True
    n_trades = draw(st.integers(0, 40))
    trades = sorted(draw(st.lists(st.integers(T0 - 1, book_ts[-1] + 1), min_size=n_trades, max_size=n_trades)))
    # files of one kind hold disjoint ts_init intervals (the catalog refuses others): cut where it grows
    book_cuts = draw(st.lists(st.sampled_from([0] + [i for i in range(1, n_book) if book_ts[i] > book_ts[i - 1]]),
                              max_size=2))
    trade_cuts = draw(st.lists(st.sampled_from([0] + [i for i in range(1, n_trades) if trades[i] > trades[i - 1]]),
                               max_size=2))
    return list(zip(book_ts, publishing)), trades, book_cuts, trade_cuts


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(streams())
def test_the_rule_is_nautilus_merge_at_every_tie_it_resolves(tmp_path, case):
    """Record batches of 4 stamps in the tie pass: ties on both sides of a batch edge."""
    from unittest import mock

    book, trades, book_cuts, trade_cuts = case
    cat = write_catalog(tmp_path / "c", book, trades, book_cuts, trade_cuts)
    with mock.patch.object(feed_module, "SCAN_ROWS", 4):
        check(cat)
        if len(book) > 3:  # a window inside the stream
            check(cat, book[len(book) // 3][0], book[2 * len(book) // 3][0])


def test_ties_alternate_and_follow_the_last_emitter(tmp_path):
    """One file of each kind: every tie resolved, both orders present, consecutive ties alternate."""
    book = [(T0 + 1, True), (T0 + 2, True), (T0 + 3, True), (T0 + 5, False), (T0 + 6, True), (T0 + 8, True)]
    trades = [T0, T0 + 2, T0 + 3, T0 + 4, T0 + 6, T0 + 8]
    cat = write_catalog(tmp_path / "c", book, trades, [], [])
    truth = first_kind_at_ties(nautilus_stream(cat))
    # T0+2: the book emitted last (T0+1) -> book first; T0+3: the trades went second at T0+2 ->
    # trades first; T0+6: the book's T0+5 is later than the trades' T0+4 -> book first; T0+8: the
    # trades went second at T0+6 but the book's T0+6 and the trades' T0+6 are the last: alternate.
    assert truth == {T0 + 2: 0, T0 + 3: 1, T0 + 6: 0, T0 + 8: 1}
    order = tie_order(cat, XRP, None, None)
    assert (order.stamps, order.unresolved) == (4, 0)
    assert order.book_first_ns.tolist() == [T0 + 2, T0 + 6]


def test_a_tie_at_the_window_start_puts_the_book_first(tmp_path):
    cat = write_catalog(tmp_path / "c", [(T0, True), (T0 + 1, True)], [T0, T0 + 1], [], [])
    assert first_kind_at_ties(nautilus_stream(cat)) == {T0: 0, T0 + 1: 1}
    assert tie_order(cat, XRP, None, None).book_first_ns.tolist() == [T0]
    # the window starts at the second stamp: it is the window's first, the book goes first there
    assert first_kind_at_ties(nautilus_stream(cat, T0 + 1)) == {T0 + 1: 0}
    assert tie_order(cat, XRP, T0 + 1, None).book_first_ns.tolist() == [T0 + 1]


def test_a_tie_at_a_later_file_s_first_row_is_unresolved(tmp_path):
    """The book's second file starts at a trade's stamp: the heap's layout after the first file's
    stream is popped decides, so the rule does not claim an order there."""
    cat = write_catalog(tmp_path / "c", [(T0, True), (T0 + 2, True), (T0 + 4, True)],
                        [T0 + 1, T0 + 2, T0 + 3, T0 + 4], [1], [])
    order = tie_order(cat, XRP, None, None)
    # T0+2: the first row of the book's second file; T0+4: the trades' T0+3 was last, trades first
    assert (order.stamps, order.unresolved, order.book_first_ns.tolist()) == (2, 1, [])
    assert check(cat) == (0, 1)
    # a tie right after an unresolved one, with nothing between, depends on it: unresolved too
    cat = write_catalog(tmp_path / "d", [(T0, True), (T0 + 2, True), (T0 + 3, True)], [T0 + 1, T0 + 2, T0 + 3],
                        [1], [])
    assert tie_order(cat, XRP, None, None).unresolved == 2


def test_overlapping_files_leave_every_tie_unresolved(tmp_path):
    """A second trade file inside the first one's time range (as a copied-in file makes): three
    streams active at once, no rule claimed."""
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    cat = write_catalog(tmp_path / "c", [(T0 + 1, True), (T0 + 3, True), (T0 + 5, True)], [T0, T0 + 3, T0 + 6], [], [])
    assert tie_order(cat, XRP, None, None).unresolved == 0
    extra = tmp_path / "extra"
    ParquetDataCatalog(str(extra)).write_data([TradeTick(InstrumentId.from_str(XRP), Price(1.95, 4), Quantity(5, 0),
                                                         AggressorSide.BUYER, TradeId("X"), T0 + 5, T0 + 5)])
    for f in (extra / "data" / "trade_tick" / XRP).glob("*.parquet"):
        shutil.copy(f, cat / "data" / "trade_tick" / XRP / f.name)
    order = tie_order(cat, XRP, None, None)
    assert (order.stamps, order.unresolved, len(order.book_first_ns)) == (2, 2, 0)


@pytest.mark.parametrize("book_first", [False, True])
def test_merge_puts_the_named_stamps_book_first(book_first):
    msgs, trades = ["m1", "m2", "m3"], ["t1", "t2", "t3"]
    m_ts, t_ts = np.array([1, 2, 3]), np.array([0, 2, 3])
    named = np.array([2] if book_first else [], dtype=np.int64)
    out = _merge(msgs, m_ts, trades, t_ts, named)
    assert out == (["t1", "m1", "m2", "t2", "t3", "m3"] if book_first else ["t1", "m1", "t2", "m2", "t3", "m3"])


def test_auto_takes_the_message_feed_unless_a_tie_is_unresolved(tmp_path):
    """``choose_feed``: resolved ties -> per message, with the book-first stamps handed to the
    feed; one unresolved tie -> per delta (``run.feed = "per_message"`` keeps the message feed)."""
    from mmbot.backtest.run import choose_feed, resolve_window
    from mmbot.config.backtest import load_backtest_config

    def feed_of(cat, want="auto"):
        cfg = load_backtest_config(REPO / "config" / "backtest.toml", [f'run.catalog="{cat}"', f'run.feed="{want}"'])
        return choose_feed(cfg, cat, XRP, resolve_window(cat, XRP, cfg.run.start, cfg.run.end))

    good = write_catalog(tmp_path / "good", [(T0, True), (T0 + 2, True), (T0 + 4, True)], [T0 + 1, T0 + 2, T0 + 4],
                         [], [])
    feed, msg_feed = feed_of(good)
    assert feed == "per_message" and msg_feed.book_first_ns.tolist() == [T0 + 4]  # T0+2: trades first
    bad = write_catalog(tmp_path / "bad", [(T0, True), (T0 + 2, True), (T0 + 4, True)],
                        [T0 + 1, T0 + 2, T0 + 3, T0 + 4], [1], [])
    assert tie_order(bad, XRP, None, None).unresolved == 1  # one is enough
    assert feed_of(bad) == ("per_delta", None)
    feed, msg_feed = feed_of(bad, "per_message")
    assert feed == "per_message" and msg_feed.book_first_ns.tolist() == []


def test_messages_sharing_a_book_first_stamp_across_a_chunk_end_go_before_its_trades(tmp_path):
    """Two messages published at the same stamp, one in each decoded chunk (2 rows a chunk), and a
    trade at that stamp with the book first: the first chunk carries its message at that stamp
    into the next, so both messages go before the trade (as in Nautilus' merge)."""
    cat = write_catalog(tmp_path / "c", [(T0, True), (T0 + 1, True), (T0 + 1, True)], [T0 + 1], [], [])
    order = tie_order(cat, XRP, None, None)
    assert order.book_first_ns.tolist() == [T0 + 1]
    want = nautilus_stream(cat, published=True)
    assert want == [(T0, 0), (T0 + 1, 0), (T0 + 1, 0), (T0 + 1, 1)]
    assert message_feed(cat, order, chunk_rows=2) == want


def test_files_whose_rows_touch_are_overlapping_whatever_their_names(tmp_path):
    """Hostile review 40 F2: trade file A (rows +2, +6, +10) renamed to claim [+2, +4], trade file B
    (rows +10, +11) copied in beside it: the names do not touch, the rows do. At +10 Nautilus
    interleaves trade (A), book, trade (B): three streams at once. The rows decide: unresolved."""
    def name(ns: int) -> str:
        day, time = str(np.datetime64(ns, "ns")).split("T")
        hms, frac = time.split(".")
        return f"{day}T{hms.replace(':', '-')}-{frac.ljust(9, '0')}Z"

    cat = write_catalog(tmp_path / "c", [(T0 + x, True) for x in (1, 5, 10, 12)], [T0 + 2, T0 + 6, T0 + 10], [], [])
    other = write_catalog(tmp_path / "o", [(T0, True)], [T0 + 10, T0 + 11], [], [])
    d = cat / "data" / "trade_tick" / XRP
    (a,) = d.glob("*.parquet")
    a.rename(d / f"{name(T0 + 2)}_{name(T0 + 4)}.parquet")
    (b,) = (other / "data" / "trade_tick" / XRP).glob("*.parquet")
    shutil.copy(b, d / f"{name(T0 + 10)}_{name(T0 + 11)}.parquet")
    stream = nautilus_stream(cat)
    assert [k for t, k in stream if t == T0 + 10] == [1, 0, 1]  # interleaved: no block order exists
    order = tie_order(cat, XRP, None, None)
    assert (order.stamps, order.unresolved, order.book_first_ns.tolist()) == (1, 1, [])
