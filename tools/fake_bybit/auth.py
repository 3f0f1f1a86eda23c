"""Bybit v5 authentication: REST HMAC-SHA256 header signatures and WebSocket ``auth`` op."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

DEFAULT_API_KEY = "fake-key"
DEFAULT_API_SECRET = "fake-secret-0123456789"

# This process' pid and 8 random hex digits (the pid alone can repeat across pid namespaces that
# share a network namespace, which is the abstract lock socket's scope).
_PROCESS_TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"


def process_api_key(name: str) -> str:
    """A fake API key ``<name>-<pid>-<8 hex>``: the same for every call with ``name`` in this
    process, different in every other process.

    ``mmbot live`` takes one lock per API key per host, whatever its ``live.lock_dir``
    (mmbot/live/lock.py; hostile review 26 F7). Whatever starts ``mmbot live`` against a loopback
    fake (a test, the fault matrix, the soak, the bench) uses a key from here, so two of them at
    once on one host (two pytest-xdist workers, two checkouts' test suites, a soak beside the
    tests) never share a key and never refuse each other. The product has no way to switch the
    lock off, and needs none. Use a ``name`` per key that must differ inside one process (two
    ``mmbot live`` running at once each against its own fake: the fault matrix' rows)."""
    return f"{name}-{_PROCESS_TOKEN}"


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def rest_signature(secret: str, timestamp: str, api_key: str, recv_window: str, payload: str) -> str:
    """payload = query string (GET) or raw body (POST)."""
    return sign(secret, f"{timestamp}{api_key}{recv_window}{payload}")


def ws_signature(secret: str, expires_ms: int | str) -> str:
    return sign(secret, f"GET/realtime{expires_ms}")


def rest_headers(api_key: str, secret: str, payload: str, recv_window: int = 5000,
                 timestamp_ms: int | None = None) -> dict[str, str]:
    """Client-side helper (tests): the four X-BAPI-* headers for a request."""
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    rw = str(recv_window)
    return {
        "X-BAPI-API-KEY": api_key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": rw,
        "X-BAPI-SIGN": rest_signature(secret, ts, api_key, rw, payload),
        "X-BAPI-SIGN-TYPE": "2",
    }


class AuthError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def check_rest(headers, payload: str, api_key: str, secret: str, now_ms: int | None = None) -> None:
    """Raise AuthError(retCode, retMsg) the way Bybit answers; return None when accepted."""
    key = headers.get("X-BAPI-API-KEY")
    ts = headers.get("X-BAPI-TIMESTAMP")
    sig = headers.get("X-BAPI-SIGN")
    rw = headers.get("X-BAPI-RECV-WINDOW", "5000")
    if not key or not ts or not sig:
        raise AuthError(10003, "API key is invalid. (missing X-BAPI-API-KEY/TIMESTAMP/SIGN)")
    if key != api_key:
        raise AuthError(10003, "API key is invalid.")
    try:
        ts_i = int(ts)
        rw_i = int(rw)
    except ValueError:
        raise AuthError(10001, "invalid timestamp or recv_window") from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    # Bybit rule: server_time - recv_window <= timestamp < server_time + 1000
    if not (now - rw_i <= ts_i < now + 1000):
        raise AuthError(
            10002,
            f"invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{ts_i}],server_timestamp[{now}],recv_window[{rw_i}]",
        )
    expected = rest_signature(secret, ts, key, rw, payload)
    if not hmac.compare_digest(expected, sig.lower()):
        raise AuthError(10004, "error sign! origin_string[" + f"{ts}{key}{rw}{payload}" + "]")


def check_ws(args, api_key: str, secret: str, now_ms: int | None = None) -> None:
    if not isinstance(args, list) or len(args) < 3:
        raise AuthError(10001, "Params Error")
    key, expires, sig = str(args[0]), args[1], str(args[2])
    if key != api_key:
        raise AuthError(10003, "Invalid apikey")
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        raise AuthError(10001, "Params Error") from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if exp <= now:
        raise AuthError(10002, "Request expired")
    if not hmac.compare_digest(ws_signature(secret, expires), sig.lower()):
        raise AuthError(10004, "Invalid sign")
