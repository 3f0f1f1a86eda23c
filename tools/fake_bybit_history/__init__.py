"""Loopback fake of Bybit's public history downloads and funding REST, with fault injection:
``from tools.fake_bybit_history import FakeBybitHistory, write_dataset`` (docs/fetch.md)."""

from .dataset import write_dataset
from .server import FAULT_KINDS, FakeBybitHistory

__all__ = ["FAULT_KINDS", "FakeBybitHistory", "write_dataset"]
