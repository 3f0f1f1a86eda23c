"""The soak (tools/soak) and what it needs from the loopback exchange (tools/fake_bybit).

- The fake's seamless loop: a recording replayed for hours is one continuous market (times,
  prices, ids) instead of a jump back to the first price at every pass.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

try:
    from tools.fake_bybit import FakeBybit
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent

# Three messages, 10 ms apart: a snapshot at 100.0/100.1, a trade, a delta lifting the book to
# 100.3/100.4. A plain loop goes back to 100.0/100.1 at every pass; a seamless one continues at
# 100.3/100.4 and climbs 0.3 per pass.
SMALL = [
    {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1000,
     "data": {"s": "BTCUSDT", "b": [["100.0", "1"], ["99.9", "2"]], "a": [["100.1", "1"], ["100.2", "2"]],
              "u": 10, "seq": 5}, "cts": 1000, "local_ts_ns": 1_000_000_000},
    {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1010,
     "data": [{"T": 1010, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "100.1", "i": "t-1", "seq": 6}],
     "local_ts_ns": 1_010_000_000},
    {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1020,
     "data": {"s": "BTCUSDT", "b": [["100.0", "0"], ["100.3", "1"]],
              "a": [["100.1", "0"], ["100.2", "0"], ["100.4", "1"], ["100.5", "1"]], "u": 11, "seq": 7},
     "cts": 1020, "local_ts_ns": 1_020_000_000},
]


@pytest.fixture()
def small_recording(tmp_path) -> Path:
    p = tmp_path / "small.jsonl"
    p.write_text("".join(json.dumps(m) + "\n" for m in SMALL))
    return p


async def _replayed(fake: FakeBybit, gen, n: int) -> list[dict]:
    """Take ``n`` messages from the fake's replay iterator, each processed as the replay would."""
    out = []
    for _ in range(n):
        m = next(gen)
        await fake._process_public(m)
        out.append(m)
    return out


def test_fake_seamless_loop_continues_time_price_and_ids(small_recording):
    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", seamless=True, paused=True)
        msgs = await _replayed(fake, fake._seamless_messages(), 9)
        return fake, msgs

    fake, msgs = asyncio.run(run())
    # Time: strictly increasing; across the seam one mean gap (10 ms), not a jump back.
    t = [m["local_ts_ns"] for m in msgs]
    assert all(b - a == 10_000_000 for a, b in zip(t, t[1:])), t
    # Price: each pass starts where the previous one ended (+0.3 per pass).
    snaps = [m for m in msgs if m.get("type") == "snapshot" and m["topic"].startswith("orderbook")]
    assert [s["data"]["b"][0][0] for s in snaps] == ["100.0", "100.30", "100.60"]
    trades = [m["data"][0] for m in msgs if m["topic"].startswith("publicTrade")]
    assert [Decimal(x["p"]) for x in trades] == [Decimal("100.1"), Decimal("100.4"), Decimal("100.7")]
    # Ids and sequence numbers never repeat.
    assert len({x["i"] for x in trades}) == 3
    us = [m["data"]["u"] for m in msgs if m["topic"].startswith("orderbook")]
    assert us == sorted(us) and len(set(us)) == len(us)
    assert fake.engine.book.best_bid()[0] == Decimal("100.9") and fake.passes == 2  # the third is under way


def test_fake_plain_loop_jumps_back_to_the_first_price(small_recording):
    """The contrast that makes the seamless loop necessary: ``loop=True`` replays the same prices."""
    from tools.fake_bybit.server import _iter_recording

    def plain():
        while True:
            yield from _iter_recording(small_recording)

    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", loop=True, paused=True)
        return await _replayed(fake, plain(), 6)

    msgs = asyncio.run(run())
    assert msgs[3]["data"]["b"][0][0] == "100.0"  # back to the start: 0.3 below the last best bid
    assert msgs[1]["data"][0]["i"] == msgs[4]["data"][0]["i"]  # and the same trade id again


def test_fake_counts_what_it_broadcast_per_second_and_per_connection(small_recording):
    """``GET /__control/published`` and ``/stats``: the rows every public broadcast carried, by the
    second of the message's exchange time, equal what a subscriber received (subscription
    snapshots excluded: they are sent to one connection, not broadcast)."""
    import aiohttp

    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", seamless=True, paused=True)
        urls = await fake.start()
        got: list[dict] = []
        try:
            async with aiohttp.ClientSession() as s:
                await fake.step(1)  # the book exists before anyone subscribes
                ws = await s.ws_connect(urls["ws_public"])
                await ws.send_str(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]}))
                await asyncio.sleep(0.2)
                await fake.step(8)
                while True:
                    try:
                        m = await ws.receive(timeout=0.3)
                    except TimeoutError:
                        break
                    got.append(json.loads(m.data))
                await ws.close()
                await asyncio.sleep(0.1)
                async with s.get(urls["control"] + "/published") as r:
                    published = await r.json()
                async with s.get(urls["control"] + "/stats") as r:
                    stats = await r.json()
        finally:
            await fake.stop()
        return got, published, stats

    got, published, stats = asyncio.run(run())
    rows: dict[str, dict[str, int]] = {}
    for m in got:
        if m.get("type") == "snapshot" and m.get("topic", "").startswith("orderbook"):
            continue
        if m.get("topic", "").startswith("orderbook"):
            sec, n = str(m["ts"] // 1000), len(m["data"]["b"]) + len(m["data"]["a"])
            rows.setdefault(m["topic"], {})[sec] = rows.get(m["topic"], {}).get(sec, 0) + n
        elif m.get("topic", "").startswith("publicTrade"):
            for t in m["data"]:
                sec = str(t["T"] // 1000)
                rows.setdefault(m["topic"], {})[sec] = rows.get(m["topic"], {}).get(sec, 0) + 1
    assert rows and {t: {s: v[1] for s, v in by_s.items()} for t, by_s in published.items()} == rows
    (conn,) = stats["connections"]
    assert conn["closed_ms"] is not None and conn["user_agent"].startswith("Python")
    assert conn["sent_rows"] == {t: sum(v.values()) for t, v in rows.items()}
    assert stats["passes"] >= 2 and stats["open_orders"] == [] and stats["position_signed"] == "0"
