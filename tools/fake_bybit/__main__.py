"""CLI: python -m tools.fake_bybit --recording PATH [--symbol BTCUSDT] (several symbols: repeat
--recording and --symbol, one recording per symbol, merged in time order) [--host 127.0.0.1] [--port 0]
[--speed 1.0] [--api-key K --api-secret S] [--loop] [--seamless]

Prints one JSON line with the URLs when ready; SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .auth import DEFAULT_API_KEY, DEFAULT_API_SECRET
from .server import FakeBybit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fake_bybit", description="Loopback fake Bybit v5 exchange")
    ap.add_argument("--recording", required=True, action="append",
                    help="mmbot recording (.jsonl or .jsonl.gz); repeat for several symbols")
    ap.add_argument("--symbol", action="append", help="symbol served (default BTCUSDT); repeat for several")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed (1.0 = real time, 0 = as fast as possible)")
    ap.add_argument("--api-key", default=DEFAULT_API_KEY)
    ap.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    ap.add_argument("--loop", action="store_true", help="restart the recording at its end")
    ap.add_argument("--seamless", action="store_true",
                    help="loop with no seam: each pass continues the previous one's time, price and ids")
    ap.add_argument("--maker-fee", default="0.0002")
    ap.add_argument("--taker-fee", default="0.00055")
    ap.add_argument("--balance", default="100000", help="initial USDT wallet balance")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("--host must be a loopback address")
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        symbols = args.symbol or ["BTCUSDT"]
        recording = args.recording[0] if len(args.recording) == 1 else args.recording
        fake = FakeBybit(recording=recording, symbols=symbols, speed=args.speed, api_key=args.api_key,
                         api_secret=args.api_secret, host=args.host, port=args.port, loop=args.loop,
                         seamless=args.seamless,
                         maker_fee=args.maker_fee, taker_fee=args.taker_fee, balance=args.balance)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        urls = await fake.start()
        sys.stdout.write(json.dumps(urls) + "\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await fake.stop()
            unknown = fake.state()["unknown_requests"]
            if unknown:
                sys.stderr.write("fake_bybit: unknown requests seen: " + json.dumps(unknown) + "\n")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
