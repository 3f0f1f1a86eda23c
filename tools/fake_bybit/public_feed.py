"""The loopback exchange's public feed of several symbols: ``python -m tools.fake_bybit.public_feed
--recording A.jsonl --recording B.jsonl [--port 0] [--speed 1.0]``.

``tools.fake_bybit`` is one symbol's exchange (its matching engine re-publishes the book it keeps).
A ``[portfolio]`` in shadow reads the public streams of every instrument on one socket
(docs/portfolio.md, "Modes"); this serves them: the recordings' frames merged in time order,
paced at ``--speed`` (1 = real time), each sent as recorded (the levels and update ids of the
recording; ``ts``, ``cts`` and trade ``T`` shifted to the wall clock by one offset for all) to the
connections subscribed to its topic (a book frame to every ``orderbook.<depth>.<SYMBOL>`` topic of
that symbol, under the subscribed name). The replay starts once one connection has subscribed a
book and a trade topic of every symbol (or after ``--start-timeout`` seconds), so every stream
begins with its recorded snapshot. Answers ``ping`` and acknowledges subscriptions like Bybit.

Prints one JSON line ``{"ws_public": URL}`` when ready; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import heapq
import json
import signal
import sys
import time
from pathlib import Path

from aiohttp import WSMsgType, web


def _frames(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "topic" in msg:
                msg.pop("local_ts_ns", None)
                yield int(msg.get("ts", 0)), msg


class PublicFeed:
    def __init__(self, recordings: list[Path], speed: float = 1.0, start_timeout_s: float = 10.0) -> None:
        self.recordings = [Path(p) for p in recordings]
        self.speed = speed
        self.start_timeout_s = start_timeout_s
        self.symbols = set()
        for p in self.recordings:
            for _ts, msg in _frames(p):
                self.symbols.add(msg["topic"].rpartition(".")[2])
                break
        self.conns: dict[web.WebSocketResponse, set[str]] = {}
        self._subscribed = asyncio.Event()
        self.sent = 0
        self.done = asyncio.Event()

    def _covered(self, topics: set[str]) -> bool:
        return all(any(t.startswith("orderbook.") and t.endswith(f".{s}") for t in topics)
                   and f"publicTrade.{s}" in topics for s in self.symbols)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        topics: set[str] = set()
        self.conns[ws] = topics
        try:
            async for m in ws:
                if m.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(m.data)
                except ValueError:
                    continue
                op = req.get("op")
                if op == "ping":
                    await ws.send_str(json.dumps({"success": True, "ret_msg": "pong", "op": "ping"}))
                elif op in ("subscribe", "unsubscribe"):
                    args = set(req.get("args") or [])
                    if op == "subscribe":
                        topics |= args
                    else:
                        topics -= args
                    await ws.send_str(json.dumps({"success": True, "ret_msg": "", "op": op,
                                                  "conn_id": "public-feed"}))
                    if self._covered(topics):
                        self._subscribed.set()
        finally:
            self.conns.pop(ws, None)
        return ws

    async def _send(self, msg: dict) -> None:
        topic = msg["topic"]
        sym = topic.rpartition(".")[2]
        book = topic.startswith("orderbook.")
        for ws, topics in list(self.conns.items()):
            names = [t for t in topics if t.startswith("orderbook.") and t.endswith(f".{sym}")] if book else \
                [topic] if topic in topics else []
            for name in names:
                if not ws.closed:
                    await ws.send_str(json.dumps({**msg, "topic": name}, separators=(",", ":")))
                    self.sent += 1

    async def _replay(self) -> None:
        try:
            await asyncio.wait_for(self._subscribed.wait(), self.start_timeout_s)
        except TimeoutError:
            pass
        merged = heapq.merge(*(_frames(p) for p in self.recordings), key=lambda x: x[0])
        t0 = w0 = None
        offset_ms = 0
        for ts, msg in merged:
            if t0 is None:
                t0, w0 = ts, time.monotonic()
                offset_ms = int(time.time() * 1000) - ts
            elif self.speed > 0:
                delay = w0 + (ts - t0) / 1000.0 / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            msg["ts"] = ts + offset_ms
            if "cts" in msg:
                msg["cts"] = int(msg["cts"]) + offset_ms
            if isinstance(msg.get("data"), list):
                msg["data"] = [{**t, "T": int(t["T"]) + offset_ms} if "T" in t else t for t in msg["data"]]
            await self._send(msg)
        self.done.set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> dict:
        app = web.Application()
        app.router.add_get("/v5/public/linear", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        self._task = asyncio.create_task(self._replay())
        return {"ws_public": f"ws://{host}:{bound}/v5/public/linear"}

    async def stop(self) -> None:
        self._task.cancel()
        for ws in list(self.conns):
            await ws.close()
        await self._runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fake_bybit.public_feed", description=__doc__.split("\n")[0])
    ap.add_argument("--recording", action="append", required=True, help="one symbol's recording (repeat)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--start-timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("--host must be a loopback address")

    async def run() -> None:
        feed = PublicFeed([Path(p) for p in args.recording], args.speed, args.start_timeout)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sys.stdout.write(json.dumps(await feed.start(args.host, args.port)) + "\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await feed.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
