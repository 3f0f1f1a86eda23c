"""A wf worker keeps the setup reads of a window (``mmbot.backtest.feed.catalog_memo``): the replay
window, the sizing's instrument and first-trade price, the instrument-fit check's, the funding rows.

Before, every trial read them again: a dozen catalog queries (Nautilus' ``instruments()`` queries each
of its instrument classes), ~25 ms a trial. What must hold: outside a wf worker nothing is kept; a
kept result is the computed one; a catalog file added, removed or rewritten (same name) is read
again; another window is another result; the memo stays bounded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from mmbot.backtest import feed
from mmbot.backtest.run import _catalog_funding, resolve_window
from mmbot.builders import _check_catalog_instrument_fit, resolve_backtest_sizing
from mmbot.config.backtest import ConfigError, load_backtest_config

ROOT = Path(__file__).resolve().parent.parent
XRP = "XRPUSDT-LINEAR.BYBIT"
START, END = "2024-12-01T07:30:00Z", "2024-12-01T07:40:00Z"


@pytest.fixture()
def cat(tmp_path):
    dst = tmp_path / "catalog"
    shutil.copytree(ROOT / "catalog", dst)
    return dst


@pytest.fixture()
def reads(monkeypatch):
    """Counts Nautilus' catalog reads (``instruments`` and ``query``)."""
    n = {"instruments": 0, "query": 0}
    for name in n:
        orig = getattr(ParquetDataCatalog, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            n[_name] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(ParquetDataCatalog, name, counted)
    return n


@pytest.fixture()
def worker():
    feed.enable_cache(True)
    try:
        yield
    finally:
        feed.enable_cache(False)  # off and emptied, as the other tests of this process expect


def _setup(cat, start=START, end=END):
    """What ``run_backtest`` reads before and after the replay, in its order."""
    cfg = load_backtest_config(ROOT / "config" / "backtest.toml", ["report.html=false"])
    window = resolve_window(cat, XRP, start, end)
    sized, record = resolve_backtest_sizing(cfg, str(cat), XRP, window)
    _check_catalog_instrument_fit(sized, str(cat), XRP, window)
    funding = _catalog_funding(cat, XRP, window)
    return window, sized.strategy["level_size"], record, funding


def _same(a, b):
    wa, la, ra, (fa, ma) = a
    wb, lb, rb, (fb, mb) = b
    assert (wa, la, ra) == (wb, lb, rb)
    for x, y in zip((*fa, *ma), (*fb, *mb)):
        assert x.tolist() == y.tolist()


def test_outside_a_wf_worker_every_call_reads_the_catalog(cat, reads):
    feed.enable_cache(False)
    first = _setup(cat)
    n = dict(reads)
    _same(_setup(cat), first)
    assert reads == {k: 2 * v for k, v in n.items()} and n["instruments"] > 0


def test_a_wf_worker_reads_a_window_once(cat, reads, worker):
    first = _setup(cat)
    n = dict(reads)
    assert n["instruments"] >= 3 and n["query"] >= 3
    _same(_setup(cat), first)
    assert reads == n  # the second trial read nothing
    feed.enable_cache(False)
    _same(_setup(cat), first)  # and what it kept is what the catalog gives


def test_another_window_is_another_result(cat, worker):
    early = _setup(cat)
    late = _setup(cat, "2024-12-01T08:10:00Z", "2024-12-01T08:20:00Z")
    assert early[0] != late[0] and early[2]["reference_price"] != late[2]["reference_price"]


def test_another_instrument_is_another_result(cat, worker):
    xrp, btc = resolve_window(cat, XRP, "", ""), resolve_window(cat, "BTCUSDT-LINEAR.BYBIT", "", "")
    assert xrp != btc and btc.start_ns < xrp.start_ns


def _rewrite(path: Path, table: pa.Table) -> None:
    """Same name, new contents (the way a user re-imports a day into the catalog)."""
    pq.write_table(table, path)


def test_a_catalog_file_rewritten_under_the_same_name_is_read_again(cat, worker):
    before = _setup(cat)
    trades = next((cat / "data" / "trade_tick" / XRP).glob("*.parquet"))
    t = pq.read_table(trades)
    meta = t.schema.metadata
    # every trade at twice its price: the sizing's first-trade price doubles, the level size halves.
    # Nautilus' prices are 16-byte little-endian fixed-point integers (high word 0 at these prices)
    raw = np.frombuffer(t["price"].combine_chunks().buffers()[1], dtype=np.uint64)[:2 * len(t)].reshape(-1, 2).copy()
    assert not raw[:, 1].any() and raw[:, 0].max() < 2 ** 62
    raw[:, 0] *= 2
    doubled = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(t), [None, pa.py_buffer(raw.tobytes())])
    t = t.set_column(t.schema.get_field_index("price"), t.schema.field("price"), doubled).replace_schema_metadata(meta)
    _rewrite(trades, t)
    after = _setup(cat)
    assert after[2]["reference_price"] == pytest.approx(2 * before[2]["reference_price"])
    assert after[1] < before[1]
    feed.enable_cache(False)
    _same(_setup(cat), after)


def test_a_book_file_removed_is_another_window(cat, worker):
    whole = resolve_window(cat, XRP, "", "")
    later = sorted((cat / "data" / "order_book_deltas" / XRP).glob("*.parquet"))[-1]
    later.unlink()
    shorter = resolve_window(cat, XRP, "", "")
    assert shorter.end_ns < whole.end_ns


def test_an_error_is_raised_every_time(cat, worker):
    for _ in range(2):
        with pytest.raises(ConfigError, match="is not in catalog"):
            resolve_window(cat, "DOGEUSDT-LINEAR.BYBIT", "", "")


def test_the_memo_is_bounded_and_keeps_what_was_used_last(cat, worker):
    calls = []

    def get(k):
        return feed.catalog_memo("probe", cat, XRP, (k,), lambda: calls.append(k) or k)

    n = feed.MEMO_ENTRIES
    for k in range(n + 10):
        get(k)
    assert len(feed._memo) == n and calls == list(range(n + 10))
    assert get(10) == 10 and calls[-1] == n + 9  # the oldest kept: a hit, now the latest used
    get(-1)  # one more: the least recently used (11) goes, not 10
    assert get(10) == 10 and calls[-1] == -1
    get(11)
    assert calls[-1] == 11 and len(feed._memo) == n


def test_the_arrays_kept_are_bounded_in_bytes(cat, worker, monkeypatch):
    monkeypatch.setattr(feed, "MEMO_ARRAY_BYTES", 10_000)
    for k in range(5):
        feed.catalog_memo("probe", cat, XRP, (k,), lambda: (np.zeros(500), np.zeros(100)))  # 4,800 bytes each
    assert len(feed._memo) == 2
    feed.catalog_memo("probe", cat, XRP, ("big",), lambda: (np.zeros(5_000),))  # alone over the bound: kept alone
    assert len(feed._memo) == 1


def test_a_symlinked_data_folder_is_in_the_key(cat, worker, tmp_path):
    """Nautilus' and mmbot's readers follow a symlinked instrument folder; so does the key (hostile
    review 41 F2: ``Path.rglob`` did not, and a book file removed behind the link kept the old window)."""
    books = cat / "data" / "order_book_deltas" / XRP
    elsewhere = tmp_path / "books"
    shutil.move(books, elsewhere)
    books.symlink_to(elsewhere, target_is_directory=True)
    whole = resolve_window(cat, XRP, "", "")
    sorted(elsewhere.glob("*.parquet"))[-1].unlink()
    assert resolve_window(cat, XRP, "", "").end_ns < whole.end_ns


def test_other_instruments_files_are_not_in_the_key(cat, worker, reads):
    """The kept reads read only this instrument's files: another instrument's new file is no reason
    to read again (and is not walked: a catalog of many instruments' files made each key cost more
    than the reads it saves, hostile review 41 F1)."""
    first = _setup(cat)
    n = dict(reads)
    other = next((cat / "data" / "trade_tick" / "BTCUSDT-LINEAR.BYBIT").glob("*.parquet"))
    shutil.copy(other, other.with_name("2024-06-04T00-00-00-000000000Z_2024-06-04T00-09-59-900722000Z.parquet"))
    _same(_setup(cat), first)
    assert reads == n


def test_the_catalog_version_file_is_in_the_key(cat, worker, reads):
    resolve_window(cat, XRP, START, END)
    n = dict(reads)
    version = cat / "mmbot_catalog.json"
    assert version.exists()
    version.write_text(version.read_text() + " ")
    resolve_window(cat, XRP, START, END)
    assert reads["instruments"] > n["instruments"]


def test_kept_funding_arrays_are_read_only(cat, worker):
    (settle, rates), (marks, px) = _catalog_funding(cat, XRP, resolve_window(cat, XRP, START, END))
    assert len(settle) > 0
    for a in (settle, rates, marks, px):
        with pytest.raises(ValueError):
            a[:1] = 0


def test_the_setup_reads_bench_runs(capsys):
    """``python -m tools.bench.setup_reads`` (docs/benchmarks.md, "Session 34"): both figures, the
    memo left off for the rest of the process."""
    import json

    from tools.bench.setup_reads import main

    assert main(["--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["setup_cpu_ms"]) == {"no_memo", "memo"} and not feed._cache_on
