"""``NotionalLimit``: ``[risk.engine] max_notional_per_order`` enforced before Nautilus' RiskEngine.

Nautilus 1.231's ``RiskEngine`` has the setting (``RiskEngineConfig.max_notional_per_order``) but
returns early for margin accounts before any notional check (risk/engine.pyx,
``_check_orders_risk_for_account``: ``if account.is_margin_account: return True``), and Bybit
linear perpetuals are margin accounts: configured, the limit was never enforced. This check sits
in front of the RiskEngine on its own endpoint (``RiskEngine.execute``: the strategy's and the
guards' trading commands all go there) and uses the RiskEngine's own denial methods, so a denied
order gets the same ``OrderDenied`` (a rejected amend the same ``OrderModifyRejected``) it would
get from Nautilus; everything else is passed on unchanged. The builder installs it in every mode
(``mmbot.builders.install_pretrade_check``).

Rule (one per order, quote currency): ``notional = quantity x price x multiplier``, with the
order's limit price, or for an order without one the opposite best of the cached book (a buy at
the best ask, a sell at the best bid; no book: the last trade). Denied when ``notional >
max_notional`` (a zero or absent limit checks nothing). An amend is checked at its new quantity
and price (unchanged fields: the order's). Reduce-only orders pass: they can only shrink the
position, and a flatten must not be blocked by a per-order cap.
"""

from __future__ import annotations

from nautilus_trader.execution.messages import ModifyOrder, SubmitOrder, SubmitOrderList
from nautilus_trader.model.enums import OrderSide

ENDPOINT = "RiskEngine.execute"


class NotionalLimit:
    """``limits``: instrument id -> max notional per order (quote currency, > 0)."""

    def __init__(self, risk_engine, msgbus, cache, limits: dict) -> None:
        self._engine = risk_engine
        self._msgbus = msgbus
        self._cache = cache
        self._limits = dict(limits)
        self._forward = risk_engine.execute
        self.denied = 0

    def install(self, current=None) -> None:
        """Take over ``RiskEngine.execute``: ``current`` is the handler registered there now (the
        RiskEngine's ``execute`` unless a builder replaced it), which receives every command
        that passes."""
        current = current if current is not None else self._engine.execute
        self._msgbus.deregister(ENDPOINT, current)
        self._forward = current
        self._msgbus.register(ENDPOINT, self.execute)

    def execute(self, command) -> None:
        if type(command) is SubmitOrder:
            reason = self._exceeds(command.order, command.order.quantity, None)
            if reason:
                self.denied += 1
                self._engine._deny_order(command.order, reason)
                return
        elif type(command) is SubmitOrderList:
            for order in command.order_list.orders:
                reason = self._exceeds(order, order.quantity, None)
                if reason:
                    self.denied += 1
                    self._engine._deny_order_list(command.order_list, reason)
                    return
        elif type(command) is ModifyOrder:
            order = self._cache.order(command.client_order_id)
            if order is not None:
                reason = self._exceeds(order, command.quantity or order.quantity, command.price)
                if reason:
                    self.denied += 1
                    self._engine._reject_modify_order(order, reason)
                    return
        self._forward(command)

    def _exceeds(self, order, quantity, new_price) -> str:
        """The denial reason, or "" when the order is within the limit."""
        limit = self._limits.get(order.instrument_id)
        if not limit or order.is_reduce_only:
            return ""
        price = new_price if new_price is not None else (order.price if order.has_price else None)
        px = price.as_double() if price is not None else self._market_price(order)
        if px is None:
            return f"NOTIONAL_UNKNOWN: no price to value {order.instrument_id} against max_notional_per_order={limit:g}"
        instrument = self._cache.instrument(order.instrument_id)
        multiplier = instrument.multiplier.as_double() if instrument is not None else 1.0
        notional = quantity.as_double() * px * multiplier
        if notional > limit:
            return (f"NOTIONAL_EXCEEDS_MAX_PER_ORDER: max_notional_per_order={limit:g}, "
                    f"notional={notional:.2f} (mmbot pre-trade check)")
        return ""

    def _market_price(self, order) -> float | None:
        book = self._cache.order_book(order.instrument_id)
        if book is not None:
            p = book.best_ask_price() if order.side == OrderSide.BUY else book.best_bid_price()
            if p is not None:
                return p.as_double()
        trade = self._cache.trade_tick(order.instrument_id)
        return trade.price.as_double() if trade is not None else None
