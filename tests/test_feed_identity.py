"""THE PROOF that the fast replay changes no fill (docs/benchmarks.md, "Replay feeds").

Each case runs the same config twice, ``run.feed = "per_delta"`` (Nautilus' own row-by-row
streaming, the DataEngine building the messages) and ``"per_message"`` (mmbot/backtest/feed.py),
and requires ``fills.parquet``, ``orders.parquet``, ``equity.parquet`` and ``report.json`` to be
byte-identical (report.json holds no timing field; ``run.feed`` is not part of the config it
records). The queue simulator's touched-level fast path (``SimParams.sizes_from_book``, on where
the catalog declares the book invariant) is compared with the per-row walk the same way.

Cases: the default config, fee floor on, quoting at the touch with each queue fill model
(Nautilus' own model only runs per delta: checked), tightened risk guards, a window starting
inside a message (replayed from the last snapshot: warm-up), the catalog's whole range, a
shadow-style recording imported and replayed, and random streams (snapshots, CLEAR inside a
message, trades inside a message's receive span, invariant-breaking rows; orders large enough
that book-through fills are capped by the crossing size and meet lots taken earlier). Windows are short: the matrix stays within about a minute of CI.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import ConfigError, load_backtest_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "backtest.toml"
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")
# 4 minutes over the 08:00 funding settlement of the embedded XRPUSDT hour
WINDOW = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:02:00Z"']


def _run(out: Path, sets: list[str], feed: str, config: Path = CONFIG):
    cfg = load_backtest_config(config, [*sets, "report.html=false", "run.progress=false", f'run.feed="{feed}"'])
    return run_backtest(cfg, out_dir=out)


def _assert_same(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between {a.name} and {b.name}"


def _pair(tmp: Path, sets: list[str], config: Path = CONFIG):
    d = _run(tmp / "per_delta", sets, "per_delta", config)
    m = _run(tmp / "per_message", sets, "per_message", config)
    assert (d.feed, m.feed) == ("per_delta", "per_message")
    assert d.events == m.events  # stream rows: the same count in both feeds
    # the cached book at the end (rows applied, every level): what the feed delivered beyond the report
    assert d.extras["book_digest"] == m.extras["book_digest"] is not None
    _assert_same(tmp / "per_delta", tmp / "per_message")
    return d, m


MATRIX = {
    "default": [],
    # decoded chunks (and Nautilus' streamed chunks) of ~1k rows: messages cut by chunk ends
    "small_chunks": ["run.chunk_size=997"],
    "fee_floor": ["strategy.fee_floor_enabled=true"],
    "risk_averse": ['venue.fill_model="risk_averse"'],
    "prob_log": ['venue.fill_model="prob_log"'],
    "zero_latency": ["venue.order_latency_ms=0", "venue.cancel_latency_ms=0", "venue.amend_latency_ms=0",
                     "venue.response_latency_ms=0"],
    "tight_guards": ["risk.position.soft_position=200", "risk.position.hard_position=400",
                     "risk.drawdown.max_drawdown=2", "risk.edge.min_fills=3", "risk.edge.window_s=30",
                     "risk.edge.min_markout_bps=0.5"],
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_per_message_feed_is_identical(tmp_path, case):
    d, _ = _pair(tmp_path, [*WINDOW, *MATRIX[case]])
    report = d.report
    # (the fee floor keeps quotes 4 ticks off the touch: orders but no fills in 4 minutes)
    key = "n_orders" if case == "fee_floor" else "n_fills"
    assert report["metrics"]["counts"][key] > 0, "a case without fills proves little"
    if case == "tight_guards":
        assert report["metrics"]["risk"]["guards"]["n_transitions"] > 0


def test_sizes_from_book_is_the_row_walk(tmp_path, monkeypatch):
    """The simulator's fast path (the catalog declares the invariant) against the per-row walk."""
    import mmbot.catalog_store as cs

    fast = _run(tmp_path / "fast", WINDOW, "per_message")
    monkeypatch.setattr(cs, "book_invariant_declared", lambda *a: False)
    walk = _run(tmp_path / "walk", WINDOW, "per_message")
    assert fast.report["metrics"]["counts"]["n_fills"] > 0
    _assert_same(tmp_path / "fast", tmp_path / "walk")


def test_window_inside_a_message(tmp_path):
    """A start 1 ns into a message: both feeds move it past that message. (The catalog's whole
    range, with no time filter, is the random streams' case.)"""
    from mmbot.backtest.feed import data_files

    import pyarrow.parquet as pq
    import numpy as np

    path = data_files(REPO / "catalog", "order_book_deltas", "XRPUSDT-LINEAR.BYBIT")[0][2]
    t = pq.read_table(path, columns=["ts_init", "flags"])
    ts, flags = t.column("ts_init").to_numpy(), t.column("flags").to_numpy()
    first = int(np.searchsorted(ts, 1733039880_000_000_000))  # 07:58:00
    i = first + int(np.flatnonzero((flags[first:-1] & 128) == 0)[0]) + 1  # the 2nd row of a multi-row message
    last = int(np.searchsorted(ts, 1733040000_000_000_000))  # 08:00:00
    j = last + int(np.flatnonzero((flags[last:-1] & 128) == 0)[0])  # the 1st row of a multi-row message
    sets = [f'run.start="{int(ts[i])}"', f'run.end="{int(ts[j])}"']  # ... and an end inside another one
    d, _ = _pair(tmp_path / "inside", sets)
    assert d.report["metadata"]["data_range"]["start_ns"] > int(ts[i])  # snapped past the message
    assert d.report["metrics"]["counts"]["n_fills"] > 0


def test_nautilus_fill_model_runs_per_delta(tmp_path):
    with pytest.raises(ConfigError, match="run.feed"):
        load_backtest_config(CONFIG, ['venue.fill_model="nautilus"', 'run.feed="per_message"'])
    cfg = load_backtest_config(CONFIG, [*WINDOW[:1], 'run.end="2024-12-01T07:58:20Z"', 'venue.fill_model="nautilus"',
                                        "report.html=false"])
    assert run_backtest(cfg, out_dir=tmp_path / "n").feed == "per_delta"


def test_shadow_recording_replay(tmp_path):
    """A shadow-style recording (the recorder's format, ob200 BTCUSDT) imported and replayed."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tests.recordings import generate_recording

    rec = generate_recording(tmp_path / "rec.jsonl", 1.0, 11)
    import_paths([rec], tmp_path / "cat", InstrumentRegistry())
    sets = [f'run.catalog="{tmp_path / "cat"}"', 'venue.fill_model="risk_averse"', "strategy.fee_floor_enabled=false",
            "strategy.min_half_spread_bps=0.2", "strategy.k_vol=0.0", f'risk.audit.file="{tmp_path / "a.jsonl"}"',
            f'risk.kill_switch.file="{tmp_path / "KILL"}"']
    d, _ = _pair(tmp_path, sets, REPO / "config" / "testnet.toml")
    assert d.report["metrics"]["counts"]["n_fills"] > 0


# -- random streams -----------------------------------------------------------------------------

XRP = "XRPUSDT-LINEAR.BYBIT"


def random_catalog(path: Path, seed: int, seconds: float = 60.0, break_invariant: bool = False,
                   ties: bool = False) -> Path:
    """A random XRPUSDT-like stream written straight to a catalog: 20 ms messages of level
    changes around a one-tick spread that walks, snapshots (CLEAR + levels), trades at the touch
    whose receive times fall between and inside messages' row spans (never on a publishing
    row's ts_init unless ``ties``: then about a third of them land on one, the message's own or an
    earlier one's), and with ``break_invariant`` rows that
    re-send a level's size and CLEARs inside messages (the catalog then declares no invariant)."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta, TradeTick
    from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from mmbot.catalog_store import INVARIANT_KEY, VERSION_FILE, BookInvariant, _version_record

    rng = random.Random(seed)
    iid = InstrumentId.from_str(XRP)
    path.mkdir(parents=True)
    shutil.copytree(REPO / "catalog" / "data" / "crypto_perpetual", path / "data" / "crypto_perpetual")
    t0 = 1_733_040_000_000_000_000
    bid = 19500  # ticks of 0.0001
    book = {OrderSide.BUY: {}, OrderSide.SELL: {}}

    def px(t):
        return Price(t / 10_000, 4)

    def level(side, t, size, action, flags, seq, x, r):
        return OrderBookDelta(iid, action, BookOrder(side, px(t), Quantity(size, 0), 0), flags, seq, x, r)

    deltas, trades, publish, pub_list = [], [], set(), []
    x = t0
    seq = 0
    for m in range(int(seconds * 50)):
        x += 20_000_000
        r = x + rng.randint(1_000_000, 6_000_000)
        rows = []
        snapshot = m == 0 or rng.random() < 0.01
        if rng.random() < 0.05:  # the touch moves one tick
            bid += rng.choice((-1, 1))
        lo_ask = bid + 1
        if snapshot:
            for s in book:
                book[s].clear()
            rows.append((OrderSide.NO_ORDER_SIDE, 0, 0, BookAction.CLEAR))
            for k in range(10):
                for s, t in ((OrderSide.BUY, bid - k), (OrderSide.SELL, lo_ask + k)):
                    book[s][t] = rng.randint(100, 8000)
                    rows.append((s, t, book[s][t], BookAction.ADD))
        else:
            # drop crossed levels, then change a few
            for t in [t for t in book[OrderSide.BUY] if t >= lo_ask]:
                del book[OrderSide.BUY][t]
                rows.append((OrderSide.BUY, t, 0, BookAction.DELETE))
            for t in [t for t in book[OrderSide.SELL] if t <= bid]:
                del book[OrderSide.SELL][t]
                rows.append((OrderSide.SELL, t, 0, BookAction.DELETE))
            done = {(s, t) for s, t, *_ in rows}
            for _ in range(rng.randint(1, 5)):
                s = rng.choice((OrderSide.BUY, OrderSide.SELL))
                t = (bid - rng.randint(0, 9)) if s == OrderSide.BUY else (lo_ask + rng.randint(0, 9))
                if (s, t) in done:
                    continue
                done.add((s, t))
                old = book[s].get(t, 0)
                new = 0 if (old and rng.random() < 0.15) else rng.randint(100, 8000)
                if new == old:
                    new += 1
                if break_invariant and old and rng.random() < 0.3:
                    new = old  # re-sent size: the row changes nothing
                if new:
                    book[s][t] = new
                else:
                    book[s].pop(t, None)
                rows.append((s, t, new, BookAction.UPDATE if old and new else BookAction.ADD if new else BookAction.DELETE))
            if break_invariant and rng.random() < 0.01:  # a CLEAR inside the message, then the book again
                rows.append((OrderSide.NO_ORDER_SIDE, 0, 0, BookAction.CLEAR))
                for s in book:
                    for t, size in sorted(book[s].items()):
                        rows.append((s, t, size, BookAction.ADD))
        if not rows:
            continue
        for k, (s, t, size, action) in enumerate(rows):
            seq += 1
            flags = 128 if k == len(rows) - 1 else 0
            if action == BookAction.CLEAR:
                deltas.append(OrderBookDelta.clear(iid, seq, x, r + k))
            else:
                deltas.append(level(s, t, size, action, flags, seq, x, r + k))
        publish.add(r + len(rows) - 1)
        pub_list.append(r + len(rows) - 1)
        span = (r, r + len(rows) - 1)
        for _ in range(rng.choice((0, 0, 1, 2))):  # trades at the touch
            buyer = rng.random() < 0.5
            tpx = lo_ask if buyer else bid
            tr = rng.choice((span[0] + rng.randint(0, max(0, span[1] - span[0])), r - rng.randint(1, 900_000)))
            if ties and rng.random() < 0.35:
                tr = rng.choice((span[1], pub_list[-2] if len(pub_list) > 1 else span[1]))  # this one's or the last
            while tr in publish and not ties:
                tr += 1
            trades.append(TradeTick(iid, px(tpx), Quantity(rng.randint(1, 3000), 0),
                                    AggressorSide.BUYER if buyer else AggressorSide.SELLER,
                                    TradeId(f"R{seed}-{len(trades)}"), x - rng.randint(0, 5_000_000), tr))
    deltas.sort(key=lambda d: d.ts_init)
    trades.sort(key=lambda t: t.ts_init)
    assert ties or not {t.ts_init for t in trades} & publish
    cat = ParquetDataCatalog(str(path))
    cat.write_data(deltas)
    cat.write_data(trades)
    inv = BookInvariant()
    inv.add(deltas)
    rec = {**_version_record(), INVARIANT_KEY: {XRP: inv.record()}}
    (path / VERSION_FILE).write_text(json.dumps(rec, sort_keys=True) + "\n")
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_streams(tmp_path, seed, monkeypatch):
    """Streams that keep the book invariant give identical fills per delta, per message and with
    the simulator's per-row walk; streams that break it are not declared by the catalog and give
    identical fills per delta and per message (both walk the rows)."""
    import mmbot.catalog_store as cs

    sets = ['run.catalog="{}"', "strategy.level_size=300", "strategy.max_position=1500"]
    good = random_catalog(tmp_path / "good", seed)
    assert cs.book_invariant_declared(good, XRP)
    s = [sets[0].format(good), *sets[1:]]
    d, m = _pair(tmp_path / "g", s)
    assert d.report["metrics"]["counts"]["n_fills"] > 0
    assert d.extras["sizes_from_book"] is True and m.extras["sizes_from_book"] is True
    with monkeypatch.context() as mp:
        mp.setattr(cs, "book_invariant_declared", lambda *a: False)
        _run(tmp_path / "g-walk", s, "per_message")
    _assert_same(tmp_path / "g" / "per_message", tmp_path / "g-walk")

    bad = random_catalog(tmp_path / "bad", seed, break_invariant=True)
    rec = json.loads((bad / cs.VERSION_FILE).read_text())[cs.INVARIANT_KEY][XRP]
    assert rec["unchanged_size"] > 0 and rec["declared"] is False
    d, m = _pair(tmp_path / "b", [sets[0].format(bad), *sets[1:]])
    assert d.extras["sizes_from_book"] is False and m.extras["sizes_from_book"] is False


def test_random_stream_crossing_cap_taken_lots_and_warmup(tmp_path, monkeypatch):
    """The simulator's book-through rules (a book move through our price fills at most the
    crossing size, price priority then FIFO; lots taken stay unavailable until their level
    changes) give the same fills per delta, per message and with the per-row walk; orders large
    against the levels make the cap bind. The window starts inside a message between two
    snapshots: both feeds snap it past the message and replay from the last snapshot before it
    (warm-up), the strategy quoting and the ledger counting from the snapped start only."""
    import numpy as np
    import pyarrow.parquet as pq

    import adapters.sim.exec_client as ec
    import mmbot.catalog_store as cs
    from mmbot.backtest.feed import data_files

    cat = random_catalog(tmp_path / "c", 2)
    t = pq.read_table(data_files(cat, "order_book_deltas", XRP)[0][2], columns=["ts_init", "flags", "action"])
    ts, flags, action = (t.column(c).to_numpy() for c in ("ts_init", "flags", "action"))
    clear = 4  # BookAction.CLEAR
    i = int(np.searchsorted(ts, ts[0] + 25_000_000_000))
    while True:  # the 2nd row of a multi-row message that is no snapshot, after a 1st snapshot
        first = i == 0 or flags[i - 1] & 128
        if first and not flags[i] & 128 and action[i] != clear and (action[:i] == clear).sum() >= 2:
            break
        i += 1
    start = int(ts[i + 1])
    sets = [f'run.catalog="{cat}"', "strategy.level_size=3000", "strategy.max_position=18000",
            f'run.start="{start}"', f'run.end="{int(ts[0]) + 55_000_000_000}"']
    seen = {"partial": 0, "while_taken": 0}
    fill, through = ec.QueueSimExecutionClient._fill, ec.QueueSimExecutionClient._book_through

    def counting_fill(self, o, q, cause, x):
        if cause == "book_through" and q < o.lots - o.filled:
            seen["partial"] += 1  # the crossing size, not our order, bounded the fill
        return fill(self, o, q, cause, x)

    def counting_through(self, side, x):
        if self._taken:
            seen["while_taken"] += 1  # earlier fills' lots still unavailable
        return through(self, side, x)

    monkeypatch.setattr(ec.QueueSimExecutionClient, "_fill", counting_fill)
    monkeypatch.setattr(ec.QueueSimExecutionClient, "_book_through", counting_through)
    d, m = _pair(tmp_path / "p", sets)
    assert d.extras["sizes_from_book"] is True
    warm = d.report["metadata"]["warmup"]
    assert warm["from_snapshot"] and warm["replay_from_ns"] < start < d.report["metadata"]["data_range"]["start_ns"]
    assert d.report["metrics"]["simulator"]["fill_causes"]["book_through"] > 0
    assert seen["partial"] > 0 and seen["while_taken"] > 0, seen
    with monkeypatch.context() as mp:
        mp.setattr(cs, "book_invariant_declared", lambda *a: False)
        _run(tmp_path / "walk", sets, "per_message")
    _assert_same(tmp_path / "p" / "per_message", tmp_path / "walk")


def test_auto_replays_per_delta_on_a_trade_tie(tmp_path):
    """A trade received at the very nanosecond of a message's publishing row, in a trade file of
    its own inside the recording's trade file (copied in): three streams are active at once in
    Nautilus' k-way merge and ``tie_order`` derives no order, so "auto" replays per delta."""
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from mmbot.backtest.feed import data_files, trade_ties

    cat = random_catalog(tmp_path / "c", 5, seconds=5)
    assert trade_ties(cat, XRP, None, None) == 0
    import pyarrow.parquet as pq

    t = pq.read_table(data_files(cat, "order_book_deltas", XRP)[0][2], columns=["ts_init", "flags"])
    ts = [v for v, f in zip(t.column("ts_init").to_pylist(), t.column("flags").to_pylist()) if f & 128][10]
    extra = tmp_path / "extra"
    ParquetDataCatalog(str(extra)).write_data([TradeTick(InstrumentId.from_str(XRP), Price(1.95, 4), Quantity(5, 0),
                                                         AggressorSide.BUYER, TradeId("TIE"), ts, ts)])
    for f in (extra / "data" / "trade_tick" / XRP).glob("*.parquet"):
        shutil.copy(f, cat / "data" / "trade_tick" / XRP / f.name)
    assert trade_ties(cat, XRP, None, None) == 1
    o = _run(tmp_path / "o", [f'run.catalog="{cat}"'], "auto")
    assert o.feed == "per_delta"


def test_cached_replay_is_the_catalog_replay(tmp_path):
    """Walk-forward workers replay a window from their cache (mmbot/backtest/feed.py): the second
    run of a window comes from memory and gives the same bytes as the first from the catalog."""
    from mmbot.backtest import feed

    sets = WINDOW
    feed.enable_cache()
    try:
        a = _run(tmp_path / "a", sets, "per_message")
        assert len(feed._cache) == 1
        b = _run(tmp_path / "b", sets, "per_message")
    finally:
        feed.enable_cache(False)
    assert a.events == b.events and a.report["metrics"]["counts"]["n_fills"] > 0
    _assert_same(tmp_path / "a", tmp_path / "b")


def test_trade_ties_cached_per_window_and_file_version(tmp_path, monkeypatch):
    """With the wf cache on, ``trade_ties`` reads the window once per file version: the same
    count as the uncached read, and read again when a file of the window changes."""
    import os

    from mmbot.backtest import feed

    cat = random_catalog(tmp_path / "cat", 5, seconds=20.0)
    files = feed.data_files(cat, "trade_tick", XRP)
    reads = []
    real = feed._stamp_batches
    monkeypatch.setattr(feed, "_stamp_batches", lambda *a: reads.append(1) or real(*a))
    want = feed.trade_ties(cat, XRP, None, None)
    feed.enable_cache()
    try:
        assert feed.trade_ties(cat, XRP, None, None) == want
        n = len(reads)
        assert feed.trade_ties(cat, XRP, None, None) == want and len(reads) == n  # from memory
        os.utime(files[0][2], ns=(1, 1))  # a new version of a file of the window
        assert feed.trade_ties(cat, XRP, None, None) == want and len(reads) == n + 2
    finally:
        feed.enable_cache(False)
    assert not feed._ties_cache


def test_merge_puts_trades_first_at_equal_receive_times():
    """The per-message feed's documented tie rule (a trade received at the very nanosecond of a
    message's publishing row goes first); "auto" avoids relying on it (test above)."""
    import numpy as np

    from mmbot.backtest.feed import _merge

    msgs, trades = ["m1", "m2", "m3"], ["t1", "t2", "t3"]
    out = _merge(msgs, np.array([10, 20, 30]), trades, np.array([5, 20, 30]))
    assert out == ["t1", "m1", "t2", "m2", "t3", "m3"]


def test_book_invariant_counts_each_violation():
    """mmbot/catalog_store.py's check, row by row: a re-sent size, deleting an absent level, a
    level twice in a message and a CLEAR inside a message are counted; snapshot rows are not."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta
    from nautilus_trader.model.enums import BookAction, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price, Quantity

    from mmbot.catalog_store import BookInvariant

    iid = InstrumentId.from_str(XRP)

    def row(action, px, size, last=False, side=OrderSide.BUY):
        return OrderBookDelta(iid, action, BookOrder(side, Price.from_str(px), Quantity(size, 0), 0),
                              128 if last else 0, 0, 0, 0)

    def clear(last=False):
        d = OrderBookDelta.clear(iid, 0, 0, 0)
        return OrderBookDelta(iid, BookAction.CLEAR, d.order, 128 if last else 0, 0, 0, 0)

    def count(rows):
        inv = BookInvariant()
        inv.add(rows)
        r = inv.record()
        return r["unchanged_size"], r["repeated_level"], r["clear_inside_message"], r["declared"]

    snapshot = [clear(), row(BookAction.ADD, "1.0000", 5), row(BookAction.ADD, "1.0000", 5, last=True)]
    assert count(snapshot) == (0, 0, 0, True)  # a snapshot's rows are not checked
    assert count([*snapshot, row(BookAction.UPDATE, "1.0000", 5, last=True)]) == (1, 0, 0, False)
    assert count([*snapshot, row(BookAction.DELETE, "1.0001", 0, last=True)]) == (1, 0, 0, False)
    assert count([*snapshot, row(BookAction.UPDATE, "1.0000", 6), row(BookAction.UPDATE, "1.0000", 7, last=True)]) \
        == (0, 1, 0, False)
    assert count([*snapshot, row(BookAction.UPDATE, "1.0000", 6), clear(), row(BookAction.ADD, "1.0001", 6, last=True)]) \
        == (0, 0, 1, False)
    assert count([*snapshot, row(BookAction.UPDATE, "1.0000", 6, last=True)]) == (0, 0, 0, True)


def test_row_walk_treats_a_clear_inside_a_message_as_touching_every_level():
    """The simulator's per-row walk (catalogs without the invariant, live feeds): the levels a
    message touched are its rows' (side, price); a CLEAR anywhere in it touches every level."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas
    from nautilus_trader.model.enums import BookAction, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price, Quantity

    from adapters.sim.exec_client import QueueSimExecutionClient

    iid = InstrumentId.from_str(XRP)
    sim = QueueSimExecutionClient.__new__(QueueSimExecutionClient)
    sim._tick_raw = Price.from_str("0.0001").raw

    def row(side, px, last=False):
        return OrderBookDelta(iid, BookAction.UPDATE, BookOrder(side, Price.from_str(px), Quantity(5, 0), 0),
                              128 if last else 0, 0, 0, 0)

    msg = OrderBookDeltas(iid, [row(OrderSide.BUY, "1.9500"), row(OrderSide.SELL, "1.9501", last=True)])
    assert sim._touched(msg) == {(0, 19500), (1, 19501)}
    clear = OrderBookDelta.clear(iid, 0, 0, 0)
    msg = OrderBookDeltas(iid, [row(OrderSide.BUY, "1.9500"), clear, row(OrderSide.SELL, "1.9501", last=True)])
    assert sim._touched(msg) is True


@pytest.mark.parametrize("seed", [4, 6])
def test_random_streams_with_ties(tmp_path, seed):
    """Trades received at the very nanosecond of a message's publishing row (this message's, or
    the one before, whose trades may already be past it): both feeds give the same fills, with the
    per-message feed putting each tie in the order Nautilus' k-way merge gives it (``tie_order``;
    tests/test_tie_order.py checks the rule against the merge itself), both orders present, and
    "auto" takes the per-message feed."""
    from mmbot.backtest.feed import tie_order

    cat = random_catalog(tmp_path / "c", seed, ties=True)
    order = tie_order(cat, XRP, None, None)
    assert order.unresolved == 0 and order.stamps > 20 and 0 < len(order.book_first_ns) < order.stamps
    sets = [f'run.catalog="{cat}"', "strategy.level_size=300", "strategy.max_position=1500"]
    d, m = _pair(tmp_path, sets)
    assert d.report["metrics"]["counts"]["n_fills"] > 0
    assert m.extras["feed_stats"].trade_ties > 20
    o = _run(tmp_path / "auto", sets, "auto")
    assert o.feed == "per_message"
    _assert_same(tmp_path / "per_delta", tmp_path / "auto")
    # small decoded chunks: book-first stamps at chunk ends carry their messages into the next chunk
    _, small = _pair(tmp_path / "small", [*sets, "run.chunk_size=97"])
    assert small.extras["feed_stats"].trade_ties == m.extras["feed_stats"].trade_ties


def test_a_tie_split_by_a_per_delta_chunk_edge_replays_per_delta(tmp_path):
    """Hostile review 40 F1: the window ends on a stamp a trade shares with a message's publishing
    row, and an edge of the per-delta feed's streaming chunks (every ``run.chunk_size`` items; 1
    here) falls between them. Nautilus fires the timers due at a stamp at each chunk's end, so the
    run's end alert fires between the message and the trade per delta, after both per message:
    one more fill per message. ``tie_order`` counts such a tie unresolved (``split_by_chunk``), and
    "auto" replays per delta."""
    from mmbot.backtest.feed import tie_order

    cat = random_catalog(tmp_path / "c", 177, ties=True)
    start, end = 1733040030365608438, 1733040053201617055
    assert end in tie_order(cat, XRP, start, end).book_first_ns.tolist()
    split = tie_order(cat, XRP, start, end, 1)
    assert split.split_by_chunk > 0 and split.unresolved >= split.split_by_chunk
    sets = [f'run.catalog="{cat}"', "strategy.level_size=300", "strategy.max_position=1500", f'run.start="{start}"',
            f'run.end="{end}"', "run.chunk_size=1"]
    d = _run(tmp_path / "per_delta", sets, "per_delta")
    m = _run(tmp_path / "per_message", sets, "per_message")
    assert m.report["metrics"]["counts"]["n_fills"] == d.report["metrics"]["counts"]["n_fills"] + 1  # the hazard
    a = _run(tmp_path / "auto", sets, "auto")
    assert a.feed == "per_delta"
    _assert_same(tmp_path / "per_delta", tmp_path / "auto")


def test_a_trade_tied_with_a_non_publishing_row_split_by_a_chunk_edge_replays_per_delta(tmp_path):
    """Hostile review 40b F1: as above, with the trade at the window's end tied to a book row that
    publishes nothing (a message's inner row). Its order changes nothing the feeds publish, but a
    chunk edge between the two items fires the end alert between them per delta: every tie is
    checked, and "auto" replays per delta (per message: fills differ)."""
    import pyarrow.parquet as pq

    from mmbot.backtest.feed import data_files, tie_order

    cat = random_catalog(tmp_path / "c", 177)
    ts = pq.read_table(data_files(cat, "order_book_deltas", XRP)[0][2], columns=["ts_init"]).column(0).to_numpy()
    start, end = int(ts[len(ts) // 4]), 1733040033084487101
    order = tie_order(cat, XRP, start, end, 1)
    assert order.trades_tied == 0 and order.split_by_chunk > 0  # no trade on a publishing row
    sets = [f'run.catalog="{cat}"', "strategy.level_size=300", "strategy.max_position=1500", f'run.start="{start}"',
            f'run.end="{end}"', "run.chunk_size=1"]
    _run(tmp_path / "per_delta", sets, "per_delta")
    _run(tmp_path / "per_message", sets, "per_message")
    assert (tmp_path / "per_delta" / "fills.parquet").read_bytes() != (tmp_path / "per_message" / "fills.parquet").read_bytes()
    a = _run(tmp_path / "auto", sets, "auto")
    assert a.feed == "per_delta"
    _assert_same(tmp_path / "per_delta", tmp_path / "auto")
