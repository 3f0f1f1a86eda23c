"""CLI: python -m tools.fake_bybit_history --root DIR [--port 0] [--demo SYMBOL --days 2024-12-01,2024-12-02]

Serves DIR (Bybit's download layout) on 127.0.0.1; ``--demo`` first writes a tiny dataset there.
Prints the base URL, then serves until interrupted. Try:
  mmbot data fetch --symbol XRPUSDT --start 2024-12-01 --end 2024-12-03 \
      --base-url-history URL --base-url-rest URL --out /tmp/dl
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import threading

from .dataset import write_dataset
from .server import FakeBybitHistory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fake_bybit_history", description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--demo", metavar="SYMBOL", help="write a tiny dataset for SYMBOL first (XRPUSDT)")
    ap.add_argument("--days", default="2024-12-01,2024-12-02", help="days of the demo dataset")
    args = ap.parse_args(argv)
    if args.demo:
        write_dataset(args.root, args.demo, [dt.date.fromisoformat(d) for d in args.days.split(",")])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeBybitHistory(args.root, port=args.port) as srv:
        print(srv.url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
