"""Which orders are this trader's: Nautilus client order ids are
``O-YYYYMMDD-HHMMSS-<trader tag>-<strategy tag>-<n>``; ours carry this trader's tag.

Live, the cache and the order/fill topics also carry another program's orders on the shared
account (reconciliation, ``live.foreign_orders = "ignore"``). Everything that books, records or
shows "our" orders filters with this rule: the stop check, the startup sweep and policy
(mmbot/live), the run ledger, the recorder's orders.jsonl, the metrics' own quotes and fills. The
risk guards use the same rule (``strategies.risk.base.own_order_prefix``: strategies do not import
adapters; tests/test_hostile_review20.py checks the two agree). In a backtest every order is ours.
"""

from __future__ import annotations

import re


def own_order_prefix(trader_tag: str) -> re.Pattern:
    """Matches the client order ids this trader's strategies generate."""
    return re.compile(rf"O-\d{{8}}-\d{{6}}-{re.escape(trader_tag)}-")


def is_own_order_id(client_order_id: str, trader_tag: str) -> bool:
    return own_order_prefix(trader_tag).match(client_order_id) is not None
