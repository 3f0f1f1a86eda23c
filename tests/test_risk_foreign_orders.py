"""Guards cancel only this trader's own orders (hostile review of issue 13, finding 6).

With ``live.foreign_orders = "ignore"`` reconciliation puts a human's or another program's open
orders on the instrument into the cache; a guard's ``cancel_open_orders`` used to cancel every open
order of the instrument there, foreign ones included. Here an order whose client order id is not
ours (as a hand-placed one on Bybit) rests beside the strategy's bid when the position guard's hard
limit cancels the increasing side: ours go, the foreign one stays.
"""

from __future__ import annotations

from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ClientOrderId

from strategies.risk.position import PositionGuard, PositionGuardConfig
from tests.test_risk_scenarios import BOOK, IID, _px, _qty, rig  # noqa: F401  (fixture)


def test_hard_limit_cancels_our_bids_but_not_a_foreign_order(rig):  # noqa: F811
    g = PositionGuard(PositionGuardConfig(instrument_id=IID, soft_position=0.0015, hard_position=0.0025))
    h = rig(g, level_size=0.003)
    h.snap(0, BOOK)
    h.refresh(100)
    foreign = h.mm.order_factory.limit(IID, OrderSide.BUY, _qty(0.001), _px(99000.0), TimeInForce.GTC, post_only=True,
                                       client_order_id=ClientOrderId("hand-placed-hedge-1"))
    own = h.mm.order_factory.limit(IID, OrderSide.BUY, _qty(0.001), _px(98000.0), TimeInForce.GTC, post_only=True)
    h.mm.submit_order(foreign)
    h.mm.submit_order(own)
    h.refresh(200)
    assert len(h.bids()) == 3
    h.fill_bid(1000, qty=0.003)  # long 0.003 > hard 0.0025: cancel the increasing (bid) side
    assert g.guard_state == "REDUCING"
    h.refresh(1100)
    cache = h.engine.cache
    assert cache.order(own.client_order_id).is_closed, "our extra bid is cancelled"
    assert cache.order(foreign.client_order_id).is_open, "the foreign order must never be cancelled by a guard"
    assert g.orders_cancelled == 1
