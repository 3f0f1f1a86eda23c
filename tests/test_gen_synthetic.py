"""Synthetic recording generator (tools.gen_synthetic) and data statistics (tools.data_stats).

Only a few minutes of data are generated so the module runs in seconds. The statistical
properties stated in docs/data.md ("The synthetic generator") are checked here within the
tolerances written next to each assertion.
"""

from __future__ import annotations

import bisect
import gzip
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import data_stats
from tools.gen_synthetic import (
    FEED_CADENCE_MS,
    INSTRUMENTS,
    MAX_SWEEP_LEVELS,
    generate,
    generate_funding,
    main,
    parse_start,
    write_recording,
)

START_NS = parse_start("2024-12-01T07:30:00Z")
MINUTES = 3.0
FIXTURES = Path(__file__).parent / "fixtures"
XRP = FIXTURES / "2024-12-01_XRPUSDT_ob500.data"
BINANCE = FIXTURES / "binance_btcusdt-trades.parquet"


@pytest.fixture(scope="module")
def messages() -> list[dict[str, Any]]:
    return list(generate("XRPUSDT", START_NS, MINUTES, seed=7))


@pytest.fixture(scope="module")
def btc_messages() -> list[dict[str, Any]]:
    return list(generate("BTCUSDT", parse_start("2024-06-03T00:00:00Z"), 1.0, seed=7))


class RefBook:
    """Independent reference book keyed by Decimal price (no tick arithmetic)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def apply(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
        for side, levels in ((self.bids, msg["data"]["b"]), (self.asks, msg["data"]["a"])):
            for p, s in levels:
                if Decimal(s) == 0:
                    assert Decimal(p) in side, f"delete of absent level {p}"
                    del side[Decimal(p)]
                else:
                    side[Decimal(p)] = Decimal(s)


def _is_book(m: dict[str, Any]) -> bool:
    return m["topic"].startswith("orderbook.")


def _book_msgs(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if _is_book(m)]


def _trade_msgs(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["topic"].startswith("publicTrade.")]


def exchange_order(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages in exchange time: a book push at its ``ts``, a trade message at its ``T``.

    No trade shares a millisecond with a push (test below), so the order is unambiguous.
    """
    return sorted(msgs, key=lambda m: m["ts"] if _is_book(m) else m["data"][0]["T"])


# ------------------------------------------------------------------------------------------
# Determinism and file format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path, suffix: str) -> None:
    paths = [tmp_path / f"{name}{suffix}" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (7, 7, 8)):
        write_recording(path, generate("XRPUSDT", START_NS, 0.5, seed))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_gzip_header_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    write_recording(path, generate("XRPUSDT", START_NS, 0.2, 1))
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert raw[3] & 0x08 == 0  # no FNAME field
    lines = gzip.decompress(raw).decode().splitlines()
    assert json.loads(lines[0])["type"] == "snapshot"


def test_lines_are_compact_json_with_bybit_key_order(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    n = write_recording(path, generate("XRPUSDT", START_NS, 0.5, 3))
    lines = path.read_text().splitlines()
    assert len(lines) == n
    for line in lines:
        msg = json.loads(line)
        assert line == json.dumps(msg, separators=(",", ":"))
        if msg["topic"].startswith("orderbook."):
            assert list(msg) == ["topic", "type", "ts", "data", "cts", "local_ts_ns"]
            assert list(msg["data"]) == ["s", "b", "a", "u", "seq"]
        else:
            assert list(msg) == ["topic", "type", "ts", "data", "local_ts_ns"]
            assert all(list(t) == ["T", "s", "S", "v", "p", "L", "i", "BT", "RPI", "seq"] for t in msg["data"])


def test_file_is_in_receive_order_and_each_stream_in_exchange_order(messages: list[dict[str, Any]]) -> None:
    """Lines are written as a recorder receives them: ``local_ts_ns`` non-decreasing over the
    file; within one stream (one TCP stream) exchange times and receive times both increase."""
    local = [m["local_ts_ns"] for m in messages]
    assert local == sorted(local)
    book, trades = _book_msgs(messages), _trade_msgs(messages)
    assert all(m["local_ts_ns"] > m["ts"] * 1_000_000 for m in messages)
    assert [m["ts"] for m in book] == sorted(m["ts"] for m in book)
    assert [m["data"][0]["T"] for m in trades] == sorted(m["data"][0]["T"] for m in trades)
    assert all(m["ts"] >= m["data"][-1]["T"] for m in trades)  # a trade push follows its matches
    # ... but the file is NOT in exchange order: the streams interleave by receive time.
    exch = [m["ts"] if _is_book(m) else m["data"][0]["T"] for m in messages]
    assert exch != sorted(exch)


def test_sequence_ids(messages: list[dict[str, Any]]) -> None:
    book = _book_msgs(messages)
    assert messages[0]["type"] == "snapshot"
    snaps = [i for i, m in enumerate(book) if m["type"] == "snapshot"]
    assert len(snaps) == 2 and snaps[0] == 0
    assert 0.45 < snaps[1] / len(book) < 0.55  # resubscribe half way
    for prev, cur in zip(book, book[1:]):
        assert cur["data"]["seq"] >= prev["data"]["seq"]
        if cur["type"] == "delta":
            assert cur["data"]["u"] == prev["data"]["u"] + 1
        assert cur["cts"] <= cur["ts"]
    assert book[snaps[1]]["data"]["u"] != book[snaps[1] - 1]["data"]["u"] + 1


def test_no_trade_shares_a_millisecond_with_a_book_push(messages: list[dict[str, Any]]) -> None:
    """Exchange order between the two streams is then decided by the timestamps alone."""
    push_ms = {m["ts"] for m in _book_msgs(messages)}
    assert not {t["T"] for m in _trade_msgs(messages) for t in m["data"]} & push_ms


def test_seq_orders_trades_against_book_pushes(messages: list[dict[str, Any]]) -> None:
    """Bybit's matching sequence on both streams: a trade's ``seq`` is above the seq of every
    push before its ``T`` and at most the seq of the first push at or after it."""
    book = _book_msgs(messages)
    ts = [m["ts"] for m in book]
    for m in _trade_msgs(messages):
        for t in m["data"]:
            i = bisect.bisect_left(ts, t["T"])
            assert book[i - 1]["data"]["seq"] < t["seq"] <= book[i]["data"]["seq"]


@pytest.mark.parametrize("depth", sorted(FEED_CADENCE_MS))
def test_push_interval_is_bybits_for_the_depth(depth: int) -> None:
    """Bybit v5 linear: ob50 every 20 ms, ob200 and ob500 every 100 ms, ob1000 every 200 ms.
    Tolerance: pushes jitter by up to 2 ms and move later by 1 ms per trade in their ms; a push
    with no change is not sent (Bybit pushes deltas only on change), so a gap may span two."""
    cadence = FEED_CADENCE_MS[depth]
    book = _book_msgs(list(generate("XRPUSDT", START_NS, 0.5, 5, depth)))
    gaps = sorted(b["ts"] - a["ts"] for a, b in zip(book, book[1:]))
    assert 0.9 * 30_000 / cadence < len(book) <= 30_000 / cadence + 1
    assert gaps[len(gaps) // 2] == cadence
    assert cadence - 4 <= gaps[0] and gaps[-1] <= 4 * cadence + 12
    assert all(m["data"]["b"] or m["data"]["a"] for m in book)  # no empty delta
    assert book[0]["topic"] == f"orderbook.{depth}.XRPUSDT" and len(book[0]["data"]["b"]) == depth


def test_price_and_size_formatting(messages: list[dict[str, Any]], btc_messages: list[dict[str, Any]]) -> None:
    for msgs, symbol, pdec, qdec in ((messages, "XRPUSDT", 4, 0), (btc_messages, "BTCUSDT", 2, 3)):
        spec = INSTRUMENTS[symbol]
        for m in msgs:
            levels = m["data"]["b"] + m["data"]["a"] if _is_book(m) else [[t["p"], t["v"]] for t in m["data"]]
            for p, s in levels:
                assert len(p.split(".")[1]) == pdec and Decimal(p) % Decimal(str(spec.tick_size)) == 0
                if s != "0":
                    assert (len(s.split(".")[1]) if "." in s else 0) == qdec
                    assert Decimal(s) >= Decimal(str(spec.min_qty))


# ------------------------------------------------------------------------------------------
# Book / trade consistency (in exchange order)
# ------------------------------------------------------------------------------------------


def _check_consistency(msgs: list[dict[str, Any]], depth: int = 50) -> int:
    """Replays ``msgs`` in exchange order; returns the number of multi-price trade messages.

    A push at ``ts`` shows the book after every trade with ``T <= ts``. A taker prices off the
    last push: a buy prints at most at its ``MAX_SWEEP_LEVELS``-th ask (a sell at least at its
    ``MAX_SWEEP_LEVELS``-th bid), prices in sweep order. The book moves between pushes (orders
    join, queues empty, the touch steps), so a print may exceed the size the last push showed
    or hit a level placed since, as on the real venue. Every push has ``depth`` levels per side
    and is never crossed.
    """
    book = RefBook()
    sweeps = 0
    for m in exchange_order(msgs):
        if _is_book(m):
            book.apply(m)
            assert len(book.bids) == depth and len(book.asks) == depth
            assert max(book.bids) < min(book.asks), f"crossed at ts {m['ts']}"
            continue
        prices = [Decimal(t["p"]) for t in m["data"]]
        is_buy = m["data"][0]["S"] == "Buy"
        assert all(t["S"] == m["data"][0]["S"] and t["T"] == m["data"][0]["T"] for t in m["data"])
        assert prices == sorted(prices, reverse=not is_buy)
        if is_buy:
            limit = sorted(book.asks)[MAX_SWEEP_LEVELS - 1]
            assert all(p <= limit for p in prices), (m, limit)
        else:
            limit = sorted(book.bids, reverse=True)[MAX_SWEEP_LEVELS - 1]
            assert all(p >= limit for p in prices), (m, limit)
        sweeps += len(set(prices)) > 1
    return sweeps


def test_book_never_crossed_and_trades_consistent(messages: list[dict[str, Any]], btc_messages) -> None:
    assert _check_consistency(messages) >= 1  # at least one trade-through in 3 minutes
    _check_consistency(btc_messages)


def test_next_push_shows_consumed_levels(messages: list[dict[str, Any]]) -> None:
    """Every published level a trade consumed is updated (reduced, deleted or re-quoted) by the
    next push. (A level placed and taken out between two pushes is never published at all.)"""
    book = RefBook()
    pending: set[tuple[str, str]] = set()  # (book side "a"/"b", price)
    checked = 0
    for m in exchange_order(messages):
        if _is_book(m):
            changed = {(k, p) for k in ("a", "b") for p, _ in m["data"][k]}
            if m["type"] == "delta":
                assert pending <= changed
                checked += len(pending)
            pending.clear()
            book.apply(m)
        else:
            side = "a" if m["data"][0]["S"] == "Buy" else "b"
            levels = book.asks if side == "a" else book.bids
            pending |= {(side, t["p"]) for t in m["data"] if Decimal(t["p"]) in levels}
    assert checked > 100


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), depth=st.sampled_from([50, 200, 500]),
       symbol=st.sampled_from(["XRPUSDT", "BTCUSDT"]))
def test_invariants_hold_for_any_seed(seed: int, depth: int, symbol: str) -> None:
    msgs = list(generate(symbol, START_NS, 0.3, seed, depth))
    _check_consistency(msgs, depth)
    assert msgs[0]["topic"] == f"orderbook.{depth}.{symbol}"
    local = [m["local_ts_ns"] for m in msgs]
    assert local == sorted(local)


def test_ethusdt_uses_its_own_filters() -> None:
    msgs = list(generate("ETHUSDT", START_NS, 0.2, 5))
    snap = msgs[0]["data"]
    p, s = snap["b"][0]
    assert snap["s"] == "ETHUSDT" and len(p.split(".")[1]) == 2 and len(s.split(".")[1]) == 2
    assert 3000 < float(p) < 4500
    _check_consistency(msgs)


def test_unknown_symbol_or_depth_rejected() -> None:
    with pytest.raises(ValueError, match="unknown symbol"):
        next(generate("FOOUSDT", START_NS, 1, 1))
    with pytest.raises(ValueError, match="Bybit's linear order-book depths"):
        next(generate("XRPUSDT", START_NS, 1, 1, depth=25))


@pytest.mark.parametrize("minutes", ["-5", "0", "inf", "nan", "1e307", "527041"])
def test_minutes_must_be_finite_positive_and_at_most_a_year(minutes: str, tmp_path: Path, capsys) -> None:
    """Hostile review of issue 12, finding 20: --minutes -5 / 0 wrote a one-message recording and
    exited 0, inf (and 1e307) were an OverflowError traceback. Now one line, exit 2, no file."""
    with pytest.raises(ValueError, match=r"minutes must be a finite number > 0 and at most 527040 \(366 days\)"):
        generate("XRPUSDT", START_NS, float(minutes), 7)
    out = tmp_path / "rec.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["--minutes", minutes, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "error: minutes must be a finite number > 0" in err[-1] and not out.exists()
    assert "Traceback" not in "\n".join(err)


def test_cli_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "rec.jsonl.gz"
    assert main(["--symbol", "XRPUSDT", "--start", "2024-12-01T07:30:00Z", "--minutes", "0.2", "--seed", "7",
                 "--depth", "50", "--out", str(out)]) == 0
    first = json.loads(gzip.decompress(out.read_bytes()).splitlines()[0])
    assert first["ts"] == START_NS // 1_000_000 and first["data"]["s"] == "XRPUSDT"


def test_generated_funding_history() -> None:
    """One row per 8-hour settlement (00/08/16 UTC) around the data, newest first, rates near
    Bybit's 0.01 % interest component; deterministic; loads without problems."""
    from adapters.bybit_funding import parse_rate, parse_timestamp_ms

    end = START_NS + 3600 * 10**9
    body = generate_funding("XRPUSDT", START_NS, end, 7)
    assert body == generate_funding("XRPUSDT", START_NS, end, 7) != generate_funding("XRPUSDT", START_NS, end, 8)
    rows = body["result"]["list"]
    ts = [parse_timestamp_ms(r["fundingRateTimestamp"]) for r in rows]
    assert ts == [1733068800000, 1733040000000, 1733011200000]  # 16:00, 08:00, 00:00 on 2024-12-01
    assert all(Decimal("-0.0002") < parse_rate(r["fundingRate"]) < Decimal("0.0004") for r in rows)


# ------------------------------------------------------------------------------------------
# Statistics: the real samples (exact values) and the generated stream (stated tolerances)
# ------------------------------------------------------------------------------------------


def test_stats_on_real_xrp_sample() -> None:
    stats = data_stats.file_stats(XRP, tick=0.0001, top_n=50)
    book = stats["book"]
    assert stats["messages"] == 50
    assert (book["snapshots"], book["deltas"]) == (1, 49)
    assert book["snapshot_levels"] == [(500, 500)]
    # Hand-checked in the file: first ts 1733011200691, last 1733011205490 -> 4.799 s, 49 gaps.
    assert book["span_s"] == 4.799
    assert book["update_rate_per_s"] == round(49 / 4.799, 3)
    assert book["push_interval_ms"]["median"] == 100.0
    # ts - cts of the 50 lines: 102 on the snapshot, 2..17 on the deltas (line 2: 2, line 3: 8).
    assert book["ts_minus_cts_ms"]["max"] == 102.0 and book["ts_minus_cts_ms"]["median"] == 5.0
    # Snapshot touch 1.9531 / 1.9532 and the spread stays at one tick in all 50 samples.
    assert book["spread_ticks"] == {"share_1tick": 1.0, "mean": 1.0, "p90": 1.0, "p99": 1.0}
    assert book["crossed_samples"] == 0
    # Line 2 (first delta) lists 13 bid and 22 ask levels; the largest delta has 355 levels.
    assert data_stats.levels_changed(json.loads(XRP.read_text().splitlines()[1])) == 35
    assert book["levels_changed"]["max"] == 355
    assert book["levels_changed_top50_per_100ms"]["max"] <= 100
    assert book["levels_changed_top5_per_100ms"]["max"] <= 10 + 10  # best 5 per side, before or after
    assert book["depth_profile"][0] == 1.0
    assert book["level_distance_ticks"][:3] == [0.0, 1.02, 2.02]
    assert "receive" not in stats  # a Bybit history file has no receive times


def test_infer_tick_from_dense_snapshot() -> None:
    assert data_stats.infer_tick(data_stats.iter_messages(XRP)) == 0.0001


def test_stats_on_binance_trades() -> None:
    trades = data_stats.file_stats(BINANCE)["trades"]
    assert trades["prints"] == 2001
    assert trades["size_median"] == 0.005309
    assert trades["span_s"] == 46.077  # 00:00:00.278 -> 00:00:46.355
    assert trades["interarrival_ms"]["cv"] > 1.5  # bursty, far from Poisson
    assert trades["fano_1s"] > 5  # clustered counts
    assert 1.0 < trades["size_tail_index"] < 2.5  # heavy (power-law-like) tail


def test_fano_and_hill_on_known_inputs() -> None:
    assert data_stats.fano_factor([0, 1000, 2000, 3000, 4000]) == 0.0  # one event per second
    # Pareto(alpha = 2) sizes by inversion on an even grid: the Hill estimate is close to 2.
    sizes = [(1 - (i + 0.5) / 20_000) ** -0.5 for i in range(20_000)]
    assert abs(data_stats.hill_tail_index(sizes) - 2.0) < 0.1


def test_generated_xrp_has_the_stated_properties(messages: list[dict[str, Any]]) -> None:
    """docs/data.md states these for the generated large-tick stream; tolerances are wide
    enough for 3 minutes of one seed and tight enough to fail the model's failure modes
    (100 ms pushes, Poisson arrivals, light tails, a thin or hollow touch, one arrival order)."""
    stats = data_stats.compute_stats(messages, top_n=50)
    book, trades, recv = stats["book"], stats["trades"], stats["receive"]
    assert stats["tick"] == 0.0001
    assert book["push_interval_ms"]["median"] == 20.0  # Bybit's ob50 cadence
    assert book["spread_ticks"]["share_1tick"] > 0.97  # large tick: the spread is one tick
    assert book["crossed_samples"] == 0
    assert 0.6 < book["level1_size"]["mean"] / 7_492 < 1.6  # real sample's level-1 mean: 7,492 XRP
    assert book["level_distance_ticks"][9] < 10  # a dense book: level 10 within 10 ticks
    assert 1.2 < book["depth_profile"][9] < 3.5  # deeper levels heavier (real: 2.0)
    assert 0.2 < book["touch_moves_per_s"] < 4  # the touch persists for seconds (real: 1.5 / s)
    assert 3 < book["levels_changed_top5_per_100ms"]["mean"] < 10  # real: 6.5
    assert 1.5 < book["mid_vol_bps_per_min"] < 6.0  # efficient price 2.5 bps / min, plus flicker
    assert 3 < trades["prints_per_s"] < 10  # stated assumption: ~5.5 prints / s
    assert trades["interarrival_ms"]["cv"] > 1.5  # bursty (Poisson: 1)
    assert trades["fano_1s"] > 2  # clustered counts (Poisson: 1)
    assert trades["size_rel"]["p99"] > 20 and trades["size_tail_index"] < 3  # heavy tail
    assert 0.3 < trades["buy_share"] < 0.7
    # Receive-time jitter: most trades arrive before the push that reflects them, some after.
    assert recv["matched_by"] == "seq" and recv["trades_matched"] > 300
    assert 0.0 < recv["share_book_received_first"] < 0.1
    assert 2 < recv["book_latency_ms"]["median"] < 20 and 1 < recv["trade_latency_ms"]["median"] < 15


def test_both_arrival_orders_occur_with_examples(messages: list[dict[str, Any]]) -> None:
    """A concrete pair each way: a trade received before the push that reflects it, and one
    received after it (the case a receive-order simulator gets wrong, issue 12 item 1.4)."""
    book = _book_msgs(messages)
    seqs = [m["data"]["seq"] for m in book]
    before = after = 0
    for m in _trade_msgs(messages):
        push = book[bisect.bisect_left(seqs, m["data"][0]["seq"])]
        assert push["ts"] >= m["data"][0]["T"]
        if m["local_ts_ns"] < push["local_ts_ns"]:
            before += 1
        else:
            after += 1
    assert before > 10 * after > 0


def test_generated_btc_is_small_tick(btc_messages: list[dict[str, Any]]) -> None:
    stats = data_stats.compute_stats(btc_messages, top_n=50)
    book, trades = stats["book"], stats["trades"]
    assert book["push_interval_ms"]["median"] == 20.0
    assert book["touch_moves_per_s"] > 5  # the touch re-centres many times a second
    assert book["level_distance_ticks"][9] > 10  # holes between levels
    assert trades["prints_per_s"] > 5 and trades["interarrival_ms"]["cv"] > 1.3


def test_compare_table_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert data_stats.main(["--compare", "--minutes", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| statistic | real source | real | generated XRPUSDT ob50 | generated BTCUSDT ob50 |")
    assert "spread: share at 1 tick" in out and "trades received after the book push" in out


def test_orders_per_s_override() -> None:
    """The taker-order rate can be set per call (the live tests replay ~1 order/s of BTCUSDT)."""
    slow = _trade_msgs(list(generate("BTCUSDT", START_NS, 1.0, 7, 200, orders_per_s=1.0)))
    fast = _trade_msgs(list(generate("BTCUSDT", START_NS, 1.0, 7, 200)))
    assert 10 < len(slow) < 150 < len(fast)  # ~1 vs ~20 orders / s for 60 s
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="orders_per_s must be a finite number > 0"):
            generate("BTCUSDT", START_NS, 1.0, 7, orders_per_s=bad)
