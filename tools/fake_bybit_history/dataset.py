"""Tiny, deterministic files in Bybit's download layout for the fake history server.

``write_dataset(root, "XRPUSDT", days)`` writes, per day, an order-book ``.data.zip`` made from a
real Bybit sample (tests/fixtures/2024-12-01_XRPUSDT_ob500.data: 1 snapshot + 49 deltas, shifted
to each day), a trade ``.csv.gz`` with a few rows in Bybit's columns, funding rows at 00/08/16 UTC,
and the instruments-info body of the symbol (from adapters/definitions). Byte-for-byte repeatable
(fixed zip and gzip timestamps), so tests can compare downloads with the source.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OB_SAMPLE = REPO / "tests" / "fixtures" / "2024-12-01_XRPUSDT_ob500.data"
SAMPLE_DAY = dt.date(2024, 12, 1)
DAY_MS = 86_400_000
TRADE_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def ob_name(symbol: str, day: dt.date, depth: int = 500) -> str:
    return f"{day.isoformat()}_{symbol}_ob{depth}.data.zip"


def trades_name(symbol: str, day: dt.date) -> str:
    return f"{symbol}{day.isoformat()}.csv.gz"


def orderbook_zip(symbol: str, day: dt.date, depth: int = 500, sample: Path = OB_SAMPLE) -> bytes:
    """The sample's messages shifted to ``day`` (``ts`` and ``cts``), zipped like Bybit's files.
    Another ``symbol`` gets the sample's (XRPUSDT's) prices: pair it with XRPUSDT's definition."""
    shift_ms = (day - SAMPLE_DAY).days * DAY_MS
    lines = []
    for raw in sample.read_text().splitlines():
        msg = json.loads(raw)
        msg["data"]["s"] = symbol
        msg["ts"] += shift_ms
        if "cts" in msg:
            msg["cts"] += shift_ms
        msg["topic"] = f"orderbook.{depth}.{symbol}"
        lines.append(json.dumps(msg, separators=(",", ":")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(ob_name(symbol, day, depth)[: -len(".zip")], date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, "\n".join(lines) + "\n")
    return buf.getvalue()


def trades_gz(symbol: str, day: dt.date, n: int = 40, price: float = 1.9530) -> bytes:
    """``n`` trades spread over the first minutes of ``day`` (prices on XRPUSDT's 0.0001 tick)."""
    t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp()
    rows = [TRADE_HEADER]
    for i in range(n):
        side = "Buy" if i % 3 else "Sell"
        p = round(price + ((i * 7) % 11 - 5) * 0.0001, 4)
        size = 10 + (i * 13) % 90
        ts = f"{t0 + 1 + i * 2.5:.4f}"
        match_id = f"{day.strftime('%Y%m%d')}-0000-4000-8000-{i:012d}"
        rows.append(f"{ts},{symbol},{side},{size},{p:.4f},PlusTick,{match_id},{int(size * p * 1e8)},{size},{size * p:.4f}")
    return gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0)


def funding_rows(symbol: str, days: list[dt.date]) -> list[dict]:
    """Bybit funding rows (newest first) at 00:00, 08:00 and 16:00 UTC of each day."""
    out = []
    for d in days:
        base = int(dt.datetime.combine(d, dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000)
        for k, hour in enumerate((0, 8, 16)):
            rate = f"{0.0001 + 0.00001 * ((d.toordinal() + k) % 5):.6f}"
            out.append({"symbol": symbol, "fundingRate": rate, "fundingRateTimestamp": str(base + hour * 3_600_000)})
    return sorted(out, key=lambda r: int(r["fundingRateTimestamp"]), reverse=True)


def write_dataset(root: Path | str, symbol: str, days: list[dt.date], *, depth: int = 500,
                  funding_days: list[dt.date] | None = None) -> dict[str, Path]:
    """Write the files under ``root`` in the server's layout; returns ``{label: path}``."""
    root = Path(root)
    out: dict[str, Path] = {}
    for d in days:
        p = root / "orderbook" / "linear" / symbol / ob_name(symbol, d, depth)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(orderbook_zip(symbol, d, depth))
        out[f"ob{depth} {d}"] = p
        p = root / "trading" / symbol / trades_name(symbol, d)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(trades_gz(symbol, d))
        out[f"trades {d}"] = p
    p = root / "funding" / f"{symbol}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(funding_rows(symbol, funding_days if funding_days is not None else days), indent=1))
    out["funding"] = p
    shipped = json.loads((REPO / "adapters" / "definitions" / "bybit_linear_instruments.json").read_text())
    rows = [r for r in shipped["result"]["list"] if r["symbol"] == symbol]
    if not rows:  # a symbol mmbot does not ship: XRPUSDT's filters (the sample's prices) under its name
        rows = [dict(r, symbol=symbol, baseCoin=symbol.removesuffix("USDT"))
                for r in shipped["result"]["list"] if r["symbol"] == "XRPUSDT"]
    shipped["result"]["list"] = rows
    shipped.pop("_comment", None)
    p = root / "instruments-info.json"
    p.write_text(json.dumps(shipped, indent=1))
    out["instruments"] = p
    return out
