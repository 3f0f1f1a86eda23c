"""Loopback fake Bybit v5 exchange for tests: ``from tools.fake_bybit import FakeBybit``."""

from .auth import DEFAULT_API_KEY, DEFAULT_API_SECRET, process_api_key, rest_headers, ws_signature
from .server import FakeBybit

__all__ = ["FakeBybit", "DEFAULT_API_KEY", "DEFAULT_API_SECRET", "process_api_key", "rest_headers", "ws_signature"]
