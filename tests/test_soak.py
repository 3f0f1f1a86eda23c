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
