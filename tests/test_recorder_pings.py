"""The raw public tap (adapters/recorder.py ``RawPublicDataClient``, `[live] record` and shadow's
feed) reads its WebSocket on the node's event loop. It used to call ``receive(timeout=ping
interval)`` for every frame: aiohttp arms and cancels a loop timer per call, i.e. per book message
(8.9 -> 6.0 us of CPU per frame in a loopback probe, docs/benchmarks.md). Pings now come from a
task of their own. These tests pin both halves: no timer per frame, and Bybit's ping every
``ping_interval_s`` whether frames flow or not. A fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.model.identifiers import ClientId, TraderId

from adapters.recorder import RAW_TOPIC, RawPublicDataClient, RawPublicDataClientConfig
from tests.loopback_http import serve


def _session(frames: int, silent_s: float, ping_interval_s: float) -> dict:
    out: dict = {"pings_while_flowing": 0, "pings": [], "timers": 0, "frames": []}

    async def main() -> None:
        async def ws_handler(request):
            ws = web.WebSocketResponse(autoping=True)
            await ws.prepare(request)
            await ws.receive()  # the subscription

            async def read() -> None:  # pings read as they come, frames flowing or not
                async for msg in ws:
                    if json.loads(msg.data).get("op") == "ping":
                        out["pings"].append(time.monotonic())

            reader = asyncio.create_task(read())
            for i in range(frames):
                await ws.send_str(json.dumps({"topic": "publicTrade.XRPUSDT", "i": i}))
                if i % 100 == 99:
                    await asyncio.sleep(0.06)  # 0.6 s per 1000 frames: pings meanwhile at a 0.2-s interval
            await reader
            return ws

        runner, port = await serve(ws_handler)
        loop = asyncio.get_running_loop()
        clock = LiveClock()
        bus = MessageBus(TraderId("TESTER-001"), clock)
        got = out["frames"]
        bus.subscribe(topic=RAW_TOPIC, handler=lambda m: got.append(m) if m[1] else None)
        cfg = RawPublicDataClientConfig(url=f"ws://127.0.0.1:{port}/ws", instrument_id="XRPUSDT-LINEAR.BYBIT",
                                        feed=False, ping_interval_s=ping_interval_s)
        client = RawPublicDataClient(loop, ClientId("RAW"), bus, Cache(), clock, cfg)
        real_call_at = loop.call_at

        def call_at(*a, **k):
            out["timers"] += 1
            return real_call_at(*a, **k)

        await client._connect()
        loop.call_at = call_at  # timers armed while the frames are read (sleeps included)
        try:
            deadline = time.monotonic() + 60
            while len(got) < frames and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            loop.call_at = real_call_at
        out["pings_while_flowing"] = len(out["pings"])
        await asyncio.sleep(silent_s)
        await client._disconnect()
        await runner.cleanup()

    asyncio.run(main())
    return out


def test_the_tap_arms_no_loop_timer_per_frame_and_keeps_every_frame_in_order():
    out = _session(frames=3000, silent_s=0.0, ping_interval_s=20.0)
    assert [json.loads(m[1])["i"] for m in out["frames"]] == list(range(3000))
    stamps = [m[0] for m in out["frames"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # The server's 30 pauses and the wait loop's sleeps arm timers; a frame does not.
    assert out["timers"] < 300, out["timers"]


def test_pings_every_interval_while_frames_flow_and_while_the_stream_is_silent():
    out = _session(frames=1000, silent_s=1.0, ping_interval_s=0.2)
    silent = len(out["pings"]) - out["pings_while_flowing"]
    assert out["pings_while_flowing"] >= 2, out
    assert 3 <= silent <= 6, out
    gaps = [b - a for a, b in zip(out["pings"], out["pings"][1:], strict=False)]
    assert all(g > 0.1 for g in gaps), gaps  # one ping per interval, not one per frame
