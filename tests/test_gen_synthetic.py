"""Synthetic recording generator (tools.gen_synthetic) and data statistics (tools.data_stats).

Only a few minutes of data are generated so the module runs in a few seconds.
"""

from __future__ import annotations

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
from tools.gen_synthetic import INSTRUMENTS, MAX_SWEEP_LEVELS, generate, main, parse_start, write_recording

START_NS = parse_start("2024-06-03T00:00:00Z")
MINUTES = 3.0
FIXTURES = Path(__file__).parent / "fixtures"
XRP = FIXTURES / "2024-12-01_XRPUSDT_ob500.data"
BINANCE = FIXTURES / "binance_btcusdt-trades.parquet"


@pytest.fixture(scope="module")
def messages() -> list[dict[str, Any]]:
    return list(generate("BTCUSDT", START_NS, MINUTES, seed=7))


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


def _book_msgs(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["topic"].startswith("orderbook.")]


def _trade_msgs(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["topic"].startswith("publicTrade.")]


# ------------------------------------------------------------------------------------------
# Determinism and file format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path, suffix: str) -> None:
    paths = [tmp_path / f"{name}{suffix}" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (7, 7, 8)):
        write_recording(path, generate("BTCUSDT", START_NS, 0.5, seed))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_gzip_header_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    write_recording(path, generate("BTCUSDT", START_NS, 0.2, 1))
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert raw[3] & 0x08 == 0  # no FNAME field
    lines = gzip.decompress(raw).decode().splitlines()
    assert json.loads(lines[0])["type"] == "snapshot"


def test_lines_are_compact_json_with_bybit_key_order(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    n = write_recording(path, generate("BTCUSDT", START_NS, 0.5, 3))
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
            assert all(list(t) == ["T", "s", "S", "v", "p", "L", "i", "BT", "RPI"] for t in msg["data"])


def test_local_ts_non_decreasing_and_after_exchange_ts(messages: list[dict[str, Any]]) -> None:
    local = [m["local_ts_ns"] for m in messages]
    assert local == sorted(local)
    assert all(m["local_ts_ns"] > m["ts"] * 1_000_000 for m in messages)
    assert [m["ts"] for m in messages] == sorted(m["ts"] for m in messages)


def test_sequence_ids(messages: list[dict[str, Any]]) -> None:
    book = _book_msgs(messages)
    assert messages[0]["type"] == "snapshot"
    snaps = [i for i, m in enumerate(book) if m["type"] == "snapshot"]
    assert len(snaps) == 2 and snaps[0] == 0
    assert 0.45 < snaps[1] / len(book) < 0.55  # resubscribe half way
    for prev, cur in zip(book, book[1:]):
        assert cur["data"]["seq"] > prev["data"]["seq"]
        if cur["type"] == "delta":
            assert cur["data"]["u"] == prev["data"]["u"] + 1
        assert cur["cts"] <= cur["ts"]
    assert book[snaps[1]]["data"]["u"] != book[snaps[1] - 1]["data"]["u"] + 1


def test_cadence_and_volume(messages: list[dict[str, Any]]) -> None:
    book, trades = _book_msgs(messages), _trade_msgs(messages)
    assert len(book) == int(MINUTES * 600) + 1  # one per 100 ms plus the first snapshot
    gaps = [b["ts"] - a["ts"] for a, b in zip(book, book[1:])]
    assert 97 <= min(gaps) and max(gaps) <= 103
    assert 100 * MINUTES < len(trades) < 200 * MINUTES  # "a few thousand per hour"


def test_price_and_size_formatting(messages: list[dict[str, Any]]) -> None:
    spec = INSTRUMENTS["BTCUSDT"]
    for m in messages:
        levels = m["data"]["b"] + m["data"]["a"] if m["topic"].startswith("orderbook.") else [
            [t["p"], t["v"]] for t in m["data"]
        ]
        for p, s in levels:
            assert len(p.split(".")[1]) == 2 and Decimal(p) % Decimal("0.10") == 0
            assert s == "0" or (len(s.split(".")[1]) == 3 and Decimal(s) >= Decimal(str(spec.min_qty)))


# ------------------------------------------------------------------------------------------
# Book / trade consistency
# ------------------------------------------------------------------------------------------


def _check_consistency(msgs: list[dict[str, Any]], depth: int = 50) -> int:
    """Replays ``msgs``; returns the number of multi-price (trade-through) trade messages."""
    book = RefBook()
    consumed: dict[Decimal, Decimal] = defaultdict(Decimal)
    sweeps = 0
    for m in msgs:
        if m["topic"].startswith("orderbook."):
            book.apply(m)
            consumed.clear()
            assert len(book.bids) == depth and len(book.asks) == depth
            assert max(book.bids) < min(book.asks), f"crossed at ts {m['ts']}"
            continue
        prices = [Decimal(t["p"]) for t in m["data"]]
        is_buy = m["data"][0]["S"] == "Buy"
        assert all(t["S"] == m["data"][0]["S"] and t["T"] == m["data"][0]["T"] for t in m["data"])
        side = book.asks if is_buy else book.bids
        visible = sorted(side, reverse=not is_buy)[:MAX_SWEEP_LEVELS]
        # At the touch, or through it in book order for a sweep; never a level the book did not show.
        assert prices == sorted(prices, reverse=not is_buy)
        assert all(p in visible for p in prices)
        for t in m["data"]:
            consumed[Decimal(t["p"])] += Decimal(t["v"])
            assert consumed[Decimal(t["p"])] <= side[Decimal(t["p"])]
        sweeps += len(set(prices)) > 1
    return sweeps


def test_book_never_crossed_and_trades_consistent(messages: list[dict[str, Any]]) -> None:
    assert _check_consistency(messages) >= 1  # at least one trade-through in 3 minutes


def test_next_delta_shows_consumed_levels(messages: list[dict[str, Any]]) -> None:
    """Every level a trade consumed is updated (reduced, deleted or re-quoted) by the next delta."""
    pending: set[tuple[str, str]] = set()  # (book side "a"/"b", price)
    checked = 0
    for m in messages:
        if m["topic"].startswith("orderbook."):
            changed = {(k, p) for k in ("a", "b") for p, _ in m["data"][k]}
            if m["type"] == "delta":
                assert pending <= changed
                checked += len(pending)
            pending.clear()
        else:
            pending |= {("a" if t["S"] == "Buy" else "b", t["p"]) for t in m["data"]}
    assert checked > 100


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), depth=st.sampled_from([25, 50, 200]))
def test_invariants_hold_for_any_seed(seed: int, depth: int) -> None:
    msgs = list(generate("BTCUSDT", START_NS, 0.3, seed, depth))
    _check_consistency(msgs, depth)
    assert msgs[0]["topic"] == f"orderbook.{depth}.BTCUSDT"


def test_ethusdt_uses_its_own_filters() -> None:
    msgs = list(generate("ETHUSDT", START_NS, 0.2, 5))
    snap = msgs[0]["data"]
    p, s = snap["b"][0]
    assert snap["s"] == "ETHUSDT" and len(p.split(".")[1]) == 2 and len(s.split(".")[1]) == 2
    assert 3000 < float(p) < 4500
    _check_consistency(msgs)


def test_unknown_symbol_rejected() -> None:
    with pytest.raises(ValueError, match="unknown symbol"):
        next(generate("FOOUSDT", START_NS, 1, 1))


def test_cli_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "rec.jsonl.gz"
    assert main(["--symbol", "BTCUSDT", "--start", "2024-06-03T00:00:00Z", "--minutes", "0.2", "--seed", "7",
                 "--depth", "50", "--out", str(out)]) == 0
    first = json.loads(gzip.decompress(out.read_bytes()).splitlines()[0])
    assert first["ts"] == START_NS // 1_000_000 and first["data"]["s"] == "BTCUSDT"


# ------------------------------------------------------------------------------------------
# Statistics
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
    # Snapshot touch 1.9531 / 1.9532 and the spread stays at one tick in all 50 samples.
    assert book["spread_ticks"] == {"share_1tick": 1.0, "mean": 1.0, "p90": 1.0}
    assert book["crossed_samples"] == 0
    # Line 2 (first delta) lists 13 bid and 22 ask levels; the largest delta has 355 levels.
    assert data_stats.levels_changed(json.loads(XRP.read_text().splitlines()[1])) == 35
    assert book["levels_changed"]["max"] == 355
    assert book["levels_changed_top50"]["max"] <= 100
    assert book["depth_profile"][0] == 1.0
    assert book["level_distance_ticks"][:3] == [0.0, 1.02, 2.02]


def test_infer_tick_from_dense_snapshot() -> None:
    assert data_stats.infer_tick(data_stats.iter_messages(XRP)) == 0.0001


def test_stats_on_binance_trades() -> None:
    trades = data_stats.file_stats(BINANCE)["trades"]
    assert trades["prints"] == 2001
    assert trades["size_median"] == 0.005309
    assert trades["span_s"] == 46.077  # 00:00:00.278 -> 00:00:46.355
    assert trades["interarrival_ms"]["cv"] > 1.5  # bursty, far from Poisson


def test_synthetic_stats_are_in_calibrated_ranges(messages: list[dict[str, Any]]) -> None:
    stats = data_stats.compute_stats(messages, top_n=50)
    book, trades = stats["book"], stats["trades"]
    assert stats["tick"] == 0.1
    assert 9.9 < book["update_rate_per_s"] < 10.1
    assert book["spread_ticks"]["share_1tick"] > 0.8
    assert book["depth_profile"][9] > book["depth_profile"][0]  # depth grows away from the touch
    assert 8 < book["levels_changed"]["mean"] < 40
    assert 1.0 < book["mid_vol_bps_per_min"] < 8.0
    assert trades["size_rel"]["p99"] > 20  # heavy tail
    assert trades["interarrival_ms"]["cv"] > 1.3  # bursty
    assert 0.3 < trades["buy_share"] < 0.7


def test_compare_table_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert data_stats.main(["--compare", "--minutes", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| statistic | real source | real | synthetic BTCUSDT ob50 |")
    assert "spread: share at 1 tick" in out
