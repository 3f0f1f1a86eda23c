"""Loopback HTTP server for Bybit's public history, with fault injection.

Serves a directory laid out like Bybit's download hosts (``root/<URL path>``):

- ``/orderbook/linear/{SYMBOL}/{YYYY-MM-DD}_{SYMBOL}_ob{500|200}.data.zip`` (quote-saver.bycsi.com)
- ``/trading/{SYMBOL}/{SYMBOL}{YYYY-MM-DD}.csv.gz`` (public.bybit.com)

with ``Range: bytes=N-`` / ``bytes=N-M`` answered 206 + ``Content-Range`` (416 past the end), and
two REST v5 endpoints:

- ``GET /v5/market/funding/history`` from ``root/funding/{SYMBOL}.json`` (a list of
  ``{symbol, fundingRate, fundingRateTimestamp}``), paged the way Bybit documents it: rows newest
  first, ``limit`` in [1, 200] (default 200), ``startTime`` alone is an error, ``endTime`` alone
  gives the ``limit`` rows up to it, both give the newest ``limit`` rows inside [startTime, endTime];
- ``GET /v5/market/instruments-info?category=linear&symbol=S`` from ``root/instruments-info.json``
  (a Bybit response body; rows filtered by symbol).

Faults (``server.add_fault(kind, match=..., times=1, **params)``; ``match`` is a substring of the
request path, ``times=None`` = until cleared), applied in the order added, one per request:

``status``        answer HTTP ``code`` (default 500) with a short body
``missing``       answer 404 although the file exists
``truncate``      correct headers, then only ``after`` body bytes, then a clean close (FIN)
``reset``         correct headers, then ``after`` body bytes, then a TCP reset (RST)
``wrong_length``  ``Content-Length`` off by ``delta`` bytes (+: the body ends early; -: extra
                  bytes follow what the header announced, or with ``cut=True`` the body stops
                  where the header says although ``Content-Range`` promised more), then close
``ignore_range``  answer 200 with the whole file although a Range was asked for
``bad_range``     answer 206 with a ``Content-Range`` starting at byte 0 whatever was asked
``short_range``   answer a Range with at most ``max_bytes`` bytes (a valid, shorter 206)
``corrupt``       flip the bits of body byte ``at`` (default: the middle of the file)
``slow``          sleep ``delay_s`` after each ``chunk`` bytes (default 1024)
``gate``          hold the response until ``server.gate`` is set (``--jobs`` tests)
``ignore_window`` the funding endpoint answers the newest rows, ignoring startTime/endTime

Every request is logged (``server.requests``); ``server.max_in_flight`` is the largest number of
file downloads served at once. Loopback only.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FAULT_KINDS = ("status", "missing", "truncate", "reset", "wrong_length", "ignore_range", "bad_range",
               "short_range", "corrupt", "slow", "gate", "ignore_window")
FUNDING_PATH = "/v5/market/funding/history"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
FUNDING_MAX_LIMIT = 200  # Bybit: limit [1, 200], default 200


@dataclass
class Fault:
    kind: str
    match: str
    times: int | None
    params: dict
    fired: int = 0

    def armed(self) -> bool:
        return self.times is None or self.fired < self.times


@dataclass
class Request:
    path: str
    query: dict
    range: str | None
    status: int = 0
    body_bytes: int = 0  # bytes of body actually written
    fault: str | None = None
    t_start: float = field(default_factory=time.monotonic)
    t_end: float | None = None


class FakeBybitHistory:
    """``with FakeBybitHistory(root) as srv: srv.url`` — a threaded loopback server."""

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0, chunk_bytes: int = 16384) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake history server binds loopback addresses only")
        self.root = Path(root).resolve()
        self.chunk_bytes = chunk_bytes
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.gate = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeBybitHistory:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-bybit-history", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()  # never leave a handler blocked
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeBybitHistory:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- faults and bookkeeping ------------------------------------------------------------
    def add_fault(self, kind: str, match: str = "", times: int | None = 1, **params) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        f = Fault(kind, match, times, params)
        with self._lock:
            self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests_for(self, match: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if match in r.path]

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.armed() and f.match in path:
                    f.fired += 1
                    return f
        return None

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # --- HTTP ------------------------------------------------------------------------------
    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args) -> None:  # quiet: the request log is server.requests
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                rec = Request(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                              self.headers.get("Range"))
                with server._lock:
                    server.requests.append(rec)
                try:
                    server._serve(self, rec)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a killed fetch): nothing to answer
                finally:
                    rec.t_end = time.monotonic()

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, rec: Request) -> None:
        fault = self._take_fault(rec.path)
        rec.fault = fault.kind if fault else None
        if fault and fault.kind == "status":
            return self._send_simple(h, rec, int(fault.params.get("code", 500)), b"injected error\n")
        if rec.path == FUNDING_PATH:
            q = rec.query
            if fault and fault.kind == "ignore_window":
                q = {k: v for k, v in q.items() if k not in ("startTime", "endTime")}
            return self._send_json(h, rec, self._funding(q))
        if rec.path == INSTRUMENTS_PATH:
            return self._send_json(h, rec, self._instruments(rec.query))
        target = (self.root / rec.path.lstrip("/")).resolve()
        if (fault and fault.kind == "missing") or self.root not in target.parents or not target.is_file():
            return self._send_simple(h, rec, 404, b"not found\n")
        self._enter()
        try:
            self._send_file(h, rec, target.read_bytes(), fault)
        finally:
            self._leave()

    def _send_simple(self, h, rec: Request, status: int, body: bytes, ctype: str = "text/plain") -> None:
        rec.status = status
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        rec.body_bytes = len(body)

    def _send_json(self, h, rec: Request, body: dict) -> None:
        self._send_simple(h, rec, 200, json.dumps(body).encode(), "application/json")

    def _send_file(self, h, rec: Request, data: bytes, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        size = len(data)
        start, end = 0, size - 1
        status = 200
        if rec.range and kind != "ignore_range":
            spec = rec.range.strip()
            if not spec.startswith("bytes=") or "," in spec:
                return self._send_simple(h, rec, 400, b"unsupported Range\n")
            lo, _, hi = spec[6:].partition("-")
            start = int(lo)
            end = min(int(hi), size - 1) if hi else size - 1
            if start >= size:
                rec.status = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
            if kind == "short_range":
                end = min(end, start + int(fault.params.get("max_bytes", 4096)) - 1)
        body = data[start:end + 1]
        if kind == "bad_range" and status == 206:
            body, start, end = data, 0, size - 1  # announces (and sends) the whole file as if it were the range
        if kind == "corrupt":
            at = int(fault.params.get("at", size // 2)) - start
            if 0 <= at < len(body):
                body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
        length = len(body) + (int(fault.params.get("delta", 1)) if kind == "wrong_length" else 0)
        rec.status = status
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(max(length, 0)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if kind in ("truncate", "reset", "wrong_length"):
            h.send_header("Connection", "close")
        h.end_headers()
        if kind == "gate":
            self.gate.wait(timeout=float(fault.params.get("timeout_s", 30)))
        stop_after = int(fault.params.get("after", len(body) // 2)) if kind in ("truncate", "reset") else len(body)
        if kind == "wrong_length" and fault.params.get("cut"):
            stop_after = min(len(body), max(length, 0))
        chunk = int(fault.params.get("chunk", 1024)) if kind == "slow" else self.chunk_bytes
        sent = 0
        while sent < stop_after:
            piece = body[sent:min(sent + chunk, stop_after)]
            h.wfile.write(piece)
            h.wfile.flush()
            sent += len(piece)
            rec.body_bytes = sent
            if kind == "slow":
                time.sleep(float(fault.params.get("delay_s", 0.05)))
        if kind == "reset":
            # SO_LINGER with a zero timeout turns close() into a TCP RST: the client sees
            # "connection reset by peer" mid-body, not a clean end of stream.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
        elif kind in ("truncate", "wrong_length"):
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_WR)

    # --- REST v5 ---------------------------------------------------------------------------
    @staticmethod
    def _error(code: int, msg: str) -> dict:
        return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": int(time.time() * 1000)}

    def _funding(self, q: dict) -> dict:
        if q.get("category") not in ("linear", "inverse"):
            return self._error(10001, "category only support linear or inverse")
        symbol = q.get("symbol", "")
        if not symbol:
            return self._error(10001, "symbol is required")
        try:
            limit = int(q.get("limit", FUNDING_MAX_LIMIT))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(10001, "params error")
        if not 1 <= limit <= FUNDING_MAX_LIMIT:
            return self._error(10001, "limit must be in [1, 200]")
        if start is not None and end is None:
            return self._error(10001, "endTime is required when startTime is given")
        path = self.root / "funding" / f"{symbol}.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        rows = sorted(rows, key=lambda r: int(r["fundingRateTimestamp"]), reverse=True)
        if end is not None:
            rows = [r for r in rows if int(r["fundingRateTimestamp"]) <= end]
        if start is not None:
            rows = [r for r in rows if int(r["fundingRateTimestamp"]) >= start]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": q["category"], "list": rows[:limit]},
                "retExtInfo": {}, "time": int(time.time() * 1000)}

    def _instruments(self, q: dict) -> dict:
        path = self.root / "instruments-info.json"
        if q.get("category") != "linear" or not path.is_file():
            return self._error(10001, "params error")
        body = json.loads(path.read_text())
        rows = [r for r in body["result"]["list"] if not q.get("symbol") or r["symbol"] == q["symbol"]]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows, "nextPageCursor": ""},
                "retExtInfo": {}, "time": int(time.time() * 1000)}
