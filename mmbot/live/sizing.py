"""Sizes in USDT notional for live and shadow: resolved before the node starts, from the venue.

A backtest prices notional keys at its window's first trade (mmbot/builders.py
``catalog_reference_price``); a live or shadow run has no window, so it asks the venue it is
about to trade on, over public REST (no key), before anything else connects:

* the instrument's order rules: ``GET {rest}/v5/market/instruments-info?category=linear&symbol=S``
  (lot step, minimum and maximum order quantity, minimum order value) — the venue's own, not the
  shipped definition, which can be stale;
* the reference price: the **mark price** of ``GET {rest}/v5/market/tickers?category=linear&symbol=S``
  [USDT per base unit]. Why the mark and not the last trade: Bybit values positions, margin and
  liquidation at the mark price, and one stray print can move the last trade price; the position
  limits resolved here are about exactly that valuation.

Then ``mmbot.builders.resolve_sizing`` converts as in a backtest (``base = floor(notional /
mark / lot_step) * lot_step``) with the same fit checks (exit 2, one line). The resolved base values
and the price, with the time it was read, go to the run folder's ``config.resolved.json``
(``sizing``) and the banner. The sizes stay fixed for the session: a mark that moves 10 % moves
the notional of an order by 10 %; restart to resize (docs/config.md, "Sizes in notional").

A venue that does not answer within ``timeout_s`` (or answers without the symbol, or with a mark
that is not a finite positive number) is "not ready at start": exit 4, one line, nothing written.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime


class VenueNotReady(Exception):
    """The venue did not give the instrument or its mark price in time (exit 4)."""


MAX_BODY_BYTES = 1 << 20  # a public answer for one symbol is far below 1 MiB


def _get_json(url: str, timeout_s: float) -> dict:
    """GET ``url`` and decode its JSON body, all of it (connect, headers, body) within ``timeout_s``.

    Why a thread: urllib's timeout bounds each socket operation, not the exchange; a venue that
    sends one byte every half second never trips it and held the start for minutes. The request
    runs in a daemon thread that is abandoned at the deadline (the caller then exits 4)."""
    box: dict = {}

    def fetch() -> None:
        try:
            req = urllib.request.Request(url, headers={"Accept": "application/json"})
            with _opener(url).open(req, timeout=timeout_s) as r:
                box["body"] = r.read(MAX_BODY_BYTES + 1)
        except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
            box["error"] = e

    worker = threading.Thread(target=fetch, name="mmbot-sizing-get", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within {timeout_s:.3g} s")
    if "error" in box:
        raise box["error"]
    if len(box["body"]) > MAX_BODY_BYTES:
        raise ValueError(f"an answer larger than {MAX_BODY_BYTES} bytes")
    return json.loads(box["body"])


def _opener(url: str):
    """No proxy for a loopback venue (the loopback exchange, tools/fake_bybit): ``mmbot live``
    writes ``127.0.0.0/8`` into NO_PROXY for Nautilus' clients, but urllib matches NO_PROXY by name
    and ignores CIDR entries, so ``http_proxy`` carried http://127.0.0.1 requests (plaintext) to
    the proxy, which cannot reach this machine's loopback: the run was "not ready" (exit 4).
    Any other host: urllib's own proxy handling (the environment's variables)."""
    from mmbot.live.endpoints import classify_host, url_host

    if classify_host(url_host(url)) == "loopback":
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _one_line(text: object, limit: int = 300) -> str:
    """What the venue sent, made fit for the one-line refusal: control characters escaped (a
    retMsg with newlines or terminal escapes), at most ``limit`` characters."""
    t = repr(str(text))[1:-1]
    return t if len(t) <= limit else t[:limit] + "..."


def _only_row(body: dict, symbol: str, what: str) -> dict | None:
    if not isinstance(body, dict) or body.get("retCode") != 0:
        raise ValueError(f"{what}: retCode {_one_line(body.get('retCode')) if isinstance(body, dict) else '?'} "
                         f"{_one_line((body.get('retMsg') if isinstance(body, dict) else '') or '')}".strip())
    result = body.get("result")
    listed = result.get("list") if isinstance(result, dict) else None
    rows = [r for r in listed or [] if isinstance(r, dict) and r.get("symbol") == symbol] \
        if isinstance(listed, list) else []
    if len(rows) > 1:  # which one is the venue's? neither is taken
        raise ValueError(f"{what}: {len(rows)} rows for {symbol} in one answer")
    return rows[0] if rows else None


def venue_reference(rest_url: str, symbol: str, timeout_s: float, *, instrument=None, sleep=time.sleep,
                    clock=time.monotonic):
    """(instrument, mark price [USDT per base unit], text saying where and when) from the venue.
    ``instrument``: given (shadow: the shipped definition its simulator runs on) or read from
    instruments-info. Retries every second until ``timeout_s``: a venue that has just opened (or
    the loopback exchange before its first book) answers the ticker with an empty list at first."""
    from adapters.instruments import parse_instrument

    base = rest_url.rstrip("/")
    q = urllib.parse.urlencode({"category": "linear", "symbol": symbol})
    deadline = clock() + timeout_s
    last = "no answer"
    while True:
        try:
            if instrument is None:
                row = _only_row(_get_json(f"{base}/v5/market/instruments-info?{q}", _left(deadline, clock)), symbol,
                                "instruments-info")
                if row is None:
                    last = f"instruments-info lists no {symbol}"
                else:
                    instrument = parse_instrument(row)
            if instrument is not None:
                row = _only_row(_get_json(f"{base}/v5/market/tickers?{q}", _left(deadline, clock)), symbol, "tickers")
                mark = _finite_positive(row.get("markPrice")) if row is not None else None
                outside = _outside_price_filter(mark, instrument) if mark is not None else None
                if mark is not None and outside is None:
                    at = datetime.now(UTC).isoformat(timespec="seconds")
                    return instrument, mark, f"the venue's mark price, GET /v5/market/tickers at {at}"
                last = outside or f"tickers gives no usable markPrice for {symbol}" + (
                    f" (got {_one_line(repr(row.get('markPrice')), 60)})" if row is not None else " (empty list)")
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
            last = f"{type(e).__name__}: {_one_line(e)}"
        except Exception as e:  # noqa: BLE001 (a malformed row: parse_instrument's own errors)
            last = f"{type(e).__name__}: {_one_line(e)}"
        if clock() >= deadline:
            raise VenueNotReady(f"sizes in USDT notional need {symbol}'s order rules and mark price from {base} "
                                f"(public REST) within live.timeout_connection_s = {timeout_s:g} s: {last}")
        sleep(1.0)


def _left(deadline: float, clock) -> float:
    """The budget left for one request: the whole resolution keeps within timeout_connection_s
    (at least 0.2 s, so the last attempt can still be answered by a venue that is up)."""
    return max(0.2, deadline - clock())


def _outside_price_filter(mark: float, instrument) -> str | None:
    """Why ``mark`` is not a price of ``instrument`` (None: it is). A mark outside the priceFilter
    (minPrice..maxPrice) of the rules the venue itself states is broken data, not a market: at
    1e-9 USDT/BTC a 1000 USDT position limit became 1e12 BTC, the limit silently off."""
    lo = instrument.min_price.as_double() if instrument.min_price is not None else 0.0
    hi = instrument.max_price.as_double() if instrument.max_price is not None else math.inf
    if lo <= mark <= hi:
        return None
    return (f"tickers markPrice {mark:g} is outside the price filter {lo:g}..{hi:g} of {instrument.id} "
            f"(minPrice..maxPrice): not a price of it")


def _finite_positive(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def resolve_live_sizing(cfg, rest_url: str, timeout_s: float, **kw):
    # kw: instrument=, sleep=, clock= (venue_reference)
    """(cfg with base-unit sizes, the conversion record or None). No notional key: no request."""
    from mmbot.builders import resolve_sizing
    from mmbot.config.sizing import config_notional_items

    if not config_notional_items(cfg):
        return cfg, None
    symbol = cfg.run.instrument.split("-")[0]
    instrument, mark, source = venue_reference(rest_url, symbol, timeout_s, **kw)
    return resolve_sizing(cfg, instrument, mark, source)


def sizing_summary(record: dict) -> str:
    """One line for the banner: each notional key, what it became, and the price."""
    keys = ", ".join(f"{k} {v['notional_usdt']:g} -> {v['base_key']} {v['base']:g}"
                     for k, v in record["keys"].items())
    return f"{keys} at {record['reference_price']:g} USDT ({record['price_source']})"
