"""What the queue simulator says about each of its fills, beyond Nautilus' ``OrderFilled``.

The simulator publishes one ``FillInfo`` on ``FILL_INFO_TOPIC`` (message bus) immediately before
it generates the ``OrderFilled`` it describes; consumers (the run ledger) match it by
``trade_id``. A fill with no ``FillInfo`` (Nautilus' own matching engine, a real venue) has the
cause ``"venue"``.

Causes (docs/queue_model.md states each as a condition):

- ``queue``: a trade at our price consumed the market volume queued ahead of us, then our order
  (the only cause that depends on the queue model);
- ``trade_through``: a trade printed at a price strictly through ours (a sell below our bid, a
  buy above our ask): every queue position fills;
- ``book_through``: the exchange book moved through our price (best ask <= our bid, best bid >=
  our ask) with no trade at or through it;
- ``other``: anything else (reserved; counted so that nothing is silently unattributed).
"""

from __future__ import annotations

from typing import NamedTuple

FILL_INFO_TOPIC = "mmbot.sim.fill_info"
CAUSES = ("queue", "trade_through", "book_through", "other")
VENUE_CAUSE = "venue"


class FillInfo(NamedTuple):
    """``trade_id``: the fill's TradeId value; ``cause``: one of ``CAUSES``;
    ``slippage_quote``: extra slippage charged inside the fill's commission (quote currency, >= 0);
    ``ts_trigger_ns``: exchange time of the market event (or our arrival) that caused the fill."""

    trade_id: str
    client_order_id: str
    cause: str
    slippage_quote: float
    ts_trigger_ns: int
