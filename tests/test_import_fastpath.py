"""The Arrow import engine's fast path (adapters/bybit_book_arrow.py) against the general path it
replaces on clean input: level text parsed by numpy vs msgspec + Arrow's decimal cast, the
vectorised book pass vs the per-message dict walk it replaced, chunks cut from read blocks vs
lines split one by one, int128 raw values vs Arrow's decimal cast. Random and hostile inputs;
whatever the fast path accepts must read to exactly the general path's values, whatever the
general path refuses the fast path must not accept (it hands the chunk to the general path)."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from adapters import bybit_book_arrow as A

_NO_ASK = A._NO_ASK


def _general_ticks(strings: list[str], precision: int):
    try:
        return A._ticks(pa.array(strings, pa.string()), precision, "x")
    except A.Fallback:
        return None


def _fast_ticks(strings: list[str], precision: int):
    text = b",".join(b'"' + s.encode() + b'"' for s in strings)
    buf = np.frombuffer(A._PAD + text, dtype=np.uint8)
    q = np.flatnonzero(buf == 34)
    if len(q) != 2 * len(strings):
        return "quotes"
    return A._decimal_ticks(buf, q[0::2] + 1, q[1::2], precision)


def _random_decimal(rng: random.Random) -> str:
    kind = rng.random()
    alphabet = "0123456789"
    if kind < 0.6:  # plain, maybe with decimals / trailing zeros / leading zeros
        whole = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        if rng.random() < 0.6:
            return whole + "." + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        return whole
    if kind < 0.8:  # long ones around the 8/16-character words and the 18-digit int64 edge
        n = rng.choice([7, 8, 9, 15, 16, 17, 18, 19, 20])
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if rng.random() < 0.5:
            i = rng.randint(0, n)
            s = s[:i] + "." + s[i:]
        return s
    # hostile characters
    pool = "0123456789.-+eE ,[]\\x\u0661\u00b9"
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 9)))


@pytest.mark.parametrize("precision", [0, 1, 2, 4, 8, 12, 16])
def test_decimal_ticks_reads_what_the_general_path_reads(precision):
    rng = random.Random(precision)
    accepted = 0
    for _ in range(400):
        strings = [_random_decimal(rng) for _ in range(rng.randint(1, 6))]
        if any('"' in s or "\\" in s for s in strings):
            continue
        fast = _fast_ticks(strings, precision)
        if isinstance(fast, str):
            continue
        general = _general_ticks(strings, precision)
        if fast is not None:
            accepted += 1
            assert general is not None, strings
            assert fast.tolist() == general.tolist(), strings
    assert accepted > 10  # not vacuous


@pytest.mark.parametrize("precision", [0, 4, 8, 16])
def test_decimal_ticks_same_decimals_path_reads_as_the_mixed_path(precision):
    """A batch whose strings all have the same decimals (or none) takes the scalar path (the
    usual chunk: every price with the tick's decimals, sizes whole); the same strings with one of
    other decimals appended take the per-string path: both read every string alike, and as the
    general path does."""
    rng = random.Random(100 + precision)
    checked = 0
    for _ in range(300):
        decimals = rng.choice([None, 0, 1, 2, 4, 7, 12, 15])
        width = rng.randint(1, 12)
        strings = []
        for _ in range(rng.randint(1, 8)):
            whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, width)))
            strings.append(whole if decimals is None else
                           whole + "." + "".join(rng.choice("0123456789") for _ in range(decimals)))
        other = "7" if decimals is not None else "7.5"  # other decimals: the batch is mixed
        same, mixed = _fast_ticks(strings, precision), _fast_ticks([*strings, other], precision)
        general = _general_ticks(strings, precision)
        if same is None:
            assert mixed is None or general is None, strings
            continue
        checked += 1
        assert general is not None and same.tolist() == general.tolist(), strings
        if mixed is not None:
            assert mixed.tolist()[:-1] == same.tolist(), strings
    assert checked > 50  # not vacuous


@pytest.mark.parametrize("s", ["5.", "05", "00.10", "0", "0.0000", "1.9531", "12345678", "1234567.8",
                               "123456789012345.6", "9223372036854775807", "0.0000000000000001"])
def test_decimal_ticks_edge_values(s):
    for precision in (0, 4, 16):
        fast, general = _fast_ticks([s, "1"], precision), _general_ticks([s, "1"], precision)
        if fast is not None:
            assert general is not None and fast.tolist() == general.tolist(), (s, precision)


@pytest.mark.parametrize("s", [".5", "1..2", "1.2.3", "", "-1", "+1", "1e3", " 1", "1 ", "\u0661", "1,5",
                               "12345678901234567", "1.00000000000000000"])
def test_decimal_ticks_refuses_what_it_does_not_read(s):
    assert _fast_ticks([s], 16) is None


def _line(b: str, a: str, u: int = 5) -> bytes:
    return (f'{{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1733038200000,'
            f'"data":{{"s":"XRPUSDT","b":{b},"a":{a},"u":{u},"seq":1}},"cts":1}}').encode()


_LEVEL_TEXTS = [
    '[]', '[["1.9531","535"]]', '[["1.9531","535"],["1.9530","0"]]', '[ ]', '[["1.9531", "535"]]',
    '[["1.9531","535"] ]', '[["1.9531","535","7"]]', '[["1.9531"]]', '[[1.9531,"535"]]', '[["1.9531",535]]',
    '[[]]', '[["1.9531","535"],[]]', '[["1.95\\u0033","535"]]', '[["1.9531","5\\"35"]]', '[{"p":"1"}]',
    '[["1,2","3"]]', '[["[1]","3"]]', '[["1.9531","535"],["1.9530","1"],["1.9529","2"]]', '"x"', '{}',
    '[["\u0661","1"]]', '[["1.9531","535"]\n]', '[["1.9531","535"],\t["1","2"]]', '[["","1"]]',
]


@pytest.mark.parametrize("seed", range(30))
def test_parse_levels_agrees_with_the_typed_decode(seed):
    rng = random.Random(seed)
    lines = [_line(rng.choice(_LEVEL_TEXTS), rng.choice(_LEVEL_TEXTS), u) for u in range(rng.randint(1, 8))]
    text = b"\n".join(lines)
    raw = A._decode_raw(text, len(lines))
    try:
        typed = [A._decode(line) for line in lines]
    except msgspec.DecodeError:
        typed = None
    if raw is None:
        return  # the general path decodes and decides
    parsed = A._parse_levels(raw, 4, 0)
    if parsed is None:
        return  # the general path decides
    assert typed is not None
    k, px, sz = parsed
    levels = [lv for m in typed for side in (m.data.b, m.data.a) for lv in side]
    assert k.tolist() == [len(x) for m in typed for x in (m.data.b, m.data.a)]
    pairs = pa.array(levels, pa.list_(pa.string(), 2)) if levels else None
    if pairs is not None:
        assert px.tolist() == A._ticks(pc.list_element(pairs, 0), 4, "p").tolist()
        assert sz.tolist() == A._ticks(pc.list_element(pairs, 1), 0, "s").tolist()


@pytest.mark.parametrize("seed", range(40))
def test_decode_raw_line_boundaries_at_the_newline_offsets(seed):
    """``_decode_raw`` given the newline offsets ``_iter_chunks`` found decides as counting
    ``}\\n{`` does: a message over two lines, two on one line, blank and stray lines."""
    rng = random.Random(seed)
    pieces = [rng.choice([_line("[]", "[]", 1), _line('[["1.9531","535"]]', "[]", 2), b"", b" ", b"{}",
                          b'{"topic":', b'"x"}', b"} {"]) for _ in range(rng.randint(1, 12))]
    text = b"\n".join(pieces)
    newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    by_count = A._decode_raw(text, len(pieces))
    by_offsets = A._decode_raw(text, len(pieces), newlines)
    assert (by_count is None) == (by_offsets is None), pieces
    if by_count is not None:
        assert by_count == by_offsets


def test_decode_raw_refuses_a_message_over_two_lines():
    """Three lines holding three values, but one value spans two lines and the next shares a
    line (what the object path reports line by line): msgspec alone would count three messages."""
    one = _line('[["1.9531","535"]]', "[]", 2)
    cut = one.index(b'"data"')
    text = one[:cut] + b"\n" + one[cut:] + b" " + _line("[]", "[]", 3) + b"\n" + _line("[]", "[]", 4)
    assert len(A._raw_decode_lines(text)) == 3
    newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    assert A._decode_raw(text, 3, newlines) is None
    assert A._decode_raw(text, 3) is None


def test_parse_levels_refuses_every_non_plain_list():
    plain = {'[]', '[["1.9531","535"]]', '[["1.9531","535"],["1.9530","0"]]',
             '[["1.9531","535"],["1.9530","1"],["1.9529","2"]]'}
    for t in _LEVEL_TEXTS:
        line = _line(t, "[]")
        raw = A._decode_raw(line, 1)
        got = None if raw is None else A._parse_levels(raw, 4, 0)
        assert (got is not None) == (t in plain), t


# -- the book pass against the per-message dict walk it replaced (adapters/bybit_book_arrow.py at 37689af)


def _reference_walk(bids, asks, snap, side, lvl_msg, px, sz):
    """Returns (first crossed message or None, unchanged_size, repeated_level, bids, asks)."""
    unchanged = repeated = 0
    bids, asks = dict(bids), dict(asks)
    n_msg = len(snap)
    for m in range(n_msg):
        rows = [(int(s), int(t), int(z)) for s, t, z, mm in zip(side, px, sz, lvl_msg, strict=True) if mm == m]
        if snap[m]:
            bids = {t: z for s, t, z in rows if s == A._BUY}
            asks = {t: z for s, t, z in rows if s == A._SELL}
        else:
            seen = set()
            for s, t, z in rows:
                book = bids if s == A._BUY else asks
                unchanged += book.get(t, 0) == z
                repeated += (s, t) in seen
                seen.add((s, t))
                book[t] = z
        bb = max((t for t, z in bids.items() if z), default=-1)
        ba = min((t for t, z in asks.items() if z), default=_NO_ASK)
        if bb >= ba:
            return m, None, None, None, None
    return None, unchanged, repeated, {t: z for t, z in bids.items() if z}, {t: z for t, z in asks.items() if z}


def _random_chunk(rng: random.Random, n_msg: int, first: bool):
    snap = np.array([first and m == 0 or rng.random() < 0.05 for m in range(n_msg)])
    side, lvl_msg, px, sz = [], [], [], []
    for m in range(n_msg):
        for _ in range(rng.randint(0, 12 if snap[m] else 4)):
            s = rng.choice((A._BUY, A._SELL))
            # bids mostly below 100, asks above: crosses happen but not always
            t = rng.randint(85, 101) if s == A._BUY else rng.randint(100, 116)
            side.append(s)
            lvl_msg.append(m)
            px.append(t)
            sz.append(0 if (not snap[m] and rng.random() < 0.3) else rng.randint(1, 3))
    return (snap, np.array(side, dtype=np.uint8), np.array(lvl_msg, dtype=np.int64), np.array(px, dtype=np.int64),
            np.array(sz, dtype=np.int64))


@pytest.mark.parametrize("seed", range(300))
def test_book_pass_agrees_with_the_dict_walk(seed):
    rng = random.Random(seed)
    f = A.ArrowBookFile.__new__(A.ArrowBookFile)
    f.bids, f.asks, f.unchanged_size, f.repeated_level = {}, {}, 0, 0
    for c in range(3):
        snap, side, lvl_msg, px, sz = _random_chunk(rng, rng.randint(1, 25), first=c == 0)
        want = _reference_walk(f.bids, f.asks, snap, side, lvl_msg, px, sz)
        counts = f.unchanged_size, f.repeated_level
        if want[0] is not None:
            with pytest.raises(A.Fallback, match=rf"crossed book \(message {want[0] + 1} of the chunk at line 7\)"):
                f._book_pass(snap, side, lvl_msg, px, sz, 7)
            return
        f._book_pass(snap, side, lvl_msg, px, sz, 7)
        assert (f.unchanged_size - counts[0], f.repeated_level - counts[1]) == want[1:3]
        assert ({t: z for t, z in f.bids.items() if z}, {t: z for t, z in f.asks.items() if z}) == want[3:]


def test_cover_max_is_the_max_over_covering_spans():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 17, 64, 100):
        k = int(rng.integers(0, 40))
        begin = rng.integers(0, n, k)
        stop = np.minimum(begin + rng.integers(1, n + 1, k), n)
        value = rng.integers(-50, 50, k)
        want = [max([int(v) for b, s, v in zip(begin, stop, value, strict=True) if b <= i < s], default=-99)
                for i in range(n)]
        assert A._cover_max(begin, stop, value, n, -99).tolist() == want


@pytest.mark.parametrize("seed", range(40))
def test_chunk_text_numbers_lines_as_before(seed, tmp_path, monkeypatch):
    rng = random.Random(seed)
    pieces = [rng.choice([b"", b"{}", b"{\"a\":1}", b" ", b"\r", b"x" * rng.randint(1, 30)])
              for _ in range(rng.randint(0, 40))]
    data = b"\n".join(pieces) + rng.choice([b"", b"\n", b"\n\n"])
    path = tmp_path / "f.data"
    path.write_bytes(data)
    per = rng.choice([1, 2, 3, 7, 20_000])
    monkeypatch.setattr(A, "LINES_PER_CHUNK", per)
    monkeypatch.setattr(A, "READ_BYTES", rng.choice([1, 5, 64, 1 << 22]))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # adapters.sources.iter_lines: a last empty piece is no line
    want = [(b"\n".join(lines[i:i + per]), len(lines[i:i + per])) for i in range(0, len(lines), per)]
    assert list(A._iter_chunk_text(path)) == want
    for (text, n, newlines), (want_text, want_n) in zip(A._iter_chunks(path), want, strict=True):
        assert (text, n) == (want_text, want_n)
        assert newlines.tolist() == [i for i, c in enumerate(text) if c == 10]


def test_raw_bytes_is_the_decimal_cast():
    rng = np.random.default_rng(5)
    for precision in range(17):
        ticks = np.concatenate((rng.integers(0, 2**63 - 1, 2000, dtype=np.int64),
                                np.array([0, 1, 2**32 - 1, 2**32, 2**63 - 1], dtype=np.int64)))
        dec = pc.cast(pa.array(ticks, pa.int64()), pa.decimal128(38, 16 - precision))
        want = np.frombuffer(dec.buffers()[1], dtype="<i8").reshape(-1, 2)
        assert (A._raw_bytes(ticks, precision) == want).all(), precision


def test_arrow_writer_refuses_a_file_overlapping_a_staged_one(tmp_path):
    """The Arrow writer's disjointness check (what ParquetDataCatalog._write_chunk checks) sees
    the files already staged in the folder: a chunk overlapping one is refused, not written."""
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from adapters.instruments import InstrumentRegistry
    from mmbot import catalog_store as C
    from mmbot.catalog_store import _fast_plan

    fixtures = Path(__file__).parent / "fixtures"
    ob = next(fixtures.rglob("2024-12-01_XRPUSDT_ob500.data"))
    instrument, plan = _fast_plan(ob, InstrumentRegistry())
    stage = ParquetDataCatalog(str(tmp_path / "stage"))
    result = C.ImportResult(log=C.ProblemLog(strict=False))
    writer = C._ArrowStagedWriter(stage, result)
    chunks = list(A.ArrowBookFile(ob, *plan).chunks())
    for ch in chunks:
        writer.add_table(instrument.id.value, ch.table, ch.batch_rows, str(ob))
    ts = pa.concat_tables([ch.table for ch in chunks]).column("ts_init")
    first, last = int(ts[0].as_py()), int(ts[-1].as_py())
    folder = Path(stage._make_path(data_cls=C._KIND_CLS["deltas"], identifier=instrument.id.value))
    folder.mkdir(parents=True)
    other = folder / C._timestamps_to_filename(first - 10, first)  # shares the first row's ns
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="non-disjoint"):
        writer.close()
    assert sorted(p.name for p in folder.iterdir()) == [other.name]
