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


# -- the CI soak ---------------------------------------------------------------------------------------

CI_FAULTS = "ws_drop@30s,freeze@70s:10s"


@pytest.fixture(scope="module")
def xrp_minute(tmp_path_factory) -> Path:
    """One generated minute of the default XRPUSDT feed (ob50 every 20 ms): a 2-minute soak crosses
    the seamless loop's seam twice."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("soakrec") / "XRPUSDT-1m.jsonl.gz"
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", "XRPUSDT", "--start",
                    "2024-12-01T07:30:00Z", "--minutes", "1", "--seed", "7", "--depth", "50", "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    return out


def test_soak_two_minutes_two_faults_passes_every_gate(tmp_path, xrp_minute):
    """`python -m tools.soak` end to end: 2 minutes of `mmbot live --env testnet` against the
    loopback exchange at real-time rate, a WebSocket drop and a 10-second frozen exchange, samples
    every 10 s; exit 0 and every gate in the report holds."""
    import subprocess
    import sys

    out = tmp_path / "soak"
    r = subprocess.run([sys.executable, "-m", "tools.soak", "--duration", "2m", "--sample-every", "10s",
                        "--faults", CI_FAULTS, "--recording", str(xrp_minute), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    rep = json.loads((out / "soak_report.json").read_text())
    failed = [g for g in rep["gates"] if g["applicable"] and not g["holds"]]
    assert r.returncode == 0 and rep["ok"], (r.returncode, failed, rep["notes"], r.stderr[-3000:])
    gates = {g["name"]: g for g in rep["gates"]}
    # The correctness gates judge this run and hold.
    for name in ("node", "state_mismatch", "orders_left", "recorder"):
        assert gates[name]["applicable"] and gates[name]["holds"], gates[name]
    # The performance gates need a long run (a p99 of ~100 orders per 30-second quarter is the
    # machine's worst hiccup; a 90-second RSS slope is the warm-up): computed, reported, not counted.
    # (No timing assertion here: their bounds are proven on synthetic series below and by `make soak`.)
    for name in ("rss_slope", "p99_growth"):
        assert not gates[name]["applicable"] and "not measurable" in gates[name]["detail"]["note"], gates[name]
        assert gates[name]["value"] is not None
    for ext in ("json", "md", "html", "png"):
        assert (out / f"soak_report.{ext}").stat().st_size > 0
    assert "data:image/png;base64," in (out / "soak_report.html").read_text()
    assert {g["name"] for g in rep["gates"]} == {"node", "rss_slope", "state_mismatch", "orders_left", "p99_growth",
                                                  "recorder"}
    # The faults happened: both applied by the exchange, the drop made every client reconnect.
    assert [f["text"] for f in rep["faults"]] == CI_FAULTS.split(",")
    assert all(a["answer"]["ok"] for f in rep["faults"] for a in f["applied"])
    opened = {}
    for c in rep["exchange_after_stop"]["connections"]:
        opened[c["stream"]] = opened.get(c["stream"], 0) + 1
    assert opened["public"] >= 4 and opened["private"] >= 2 and opened["trade"] >= 2, opened
    # Samples every 10 s (13, t = 0..120) with the series the issue asks for.
    assert len(rep["samples"]) == 13
    last = rep["samples"][-1]
    for key in ("rss_mb", "cpu_ms_per_book_msg", "tick_to_order_p50_ms", "tick_to_order_p99_ms", "open_orders_node",
                "open_orders_exchange", "position_node", "position_exchange", "balance_node", "balance_exchange",
                "guards", "recorder", "ws_reconnects", "connections_opened"):
        assert last.get(key) is not None, key
    # The checks compared real things: the node and the exchange saw the same fills, the recorder
    # held every broadcast row over most of the run, the seam was crossed.
    tl = rep["timeline"]
    assert tl["fills_node"] == tl["fills_exchange"] > 0
    comp = rep["recorder"]["comparison"]
    assert comp["book"]["seconds_compared"] >= 60 and comp["book"]["lost_rows"] == 0
    assert comp["trades"]["published_rows"] > 0 and comp["trades"]["lost_rows"] == 0
    assert rep["exchange_after_stop"]["passes"] >= 2 and rep["exchange_after_stop"]["open_orders"] == []
