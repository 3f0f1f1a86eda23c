"""``InstrumentStateCheck``: a trading state per instrument, enforced before Nautilus' RiskEngine.

Nautilus 1.231's ``RiskEngine`` has ONE trading state for the whole node
(``RiskEngine.set_trading_state``). In a node with several instruments (a ``[portfolio]``), an
instrument's guard going REDUCING or HALTED must restrict that instrument only (issue 15, "a
symbol breach restricts that symbol only"), so there the ``RiskSupervisor`` sets the RiskEngine's
state from node-scope constraints only (``instrument_id`` None: the kill switch, the portfolio
guards) and hands each instrument's wanted state to this check. A single-instrument node does not
install it: the RiskEngine's own state does the job there, unchanged.

Like ``NotionalLimit`` (strategies/risk/pretrade.py) it sits on the RiskEngine's own endpoint
(``RiskEngine.execute``: every ``SubmitOrder``, ``SubmitOrderList`` and ``ModifyOrder`` goes there;
cancels go to ``ExecEngine.execute`` and never pass here, so cancels always pass) and denies through
the RiskEngine's own methods (``_deny_order`` / ``_deny_order_list`` / ``_reject_modify_order``), so
a denied order gets exactly the ``OrderDenied`` (an amend the ``OrderModifyRejected``), with the
reason text, that Nautilus gives when its own trading state is the instrument's.

The rule, as Nautilus 1.231 applies its trading state (risk/engine.pyx, ``_execution_gateway`` for
submits, ``_handle_modify_order`` for amends), with the instrument's state in place of the node's:

- HALTED: every submit denied (``"TradingState.HALTED"``; an order list: every order of it), every
  amend rejected (``"TradingState is HALTED"``);
- REDUCING: a BUY denied when the portfolio is net long the order's instrument (``"BUY when
  TradingState.REDUCING and LONG <id>"``), a SELL when net short (``"SELL when ... SHORT <id>"``);
  flat, both pass (Nautilus' rule: nothing to reduce). An order list is denied when any of its
  orders is (``"OrderList contains BUY when ..."``). An amend is rejected (``"TradingState is
  REDUCING and update will increase exposure"``) only when it raises the quantity of a BUY while net
  long or of a SELL while net short;
- ACTIVE: passed on untouched (the common case costs one dict lookup).

A hard portfolio breach (``[risk.portfolio]``, node scope) puts the RiskEngine itself in REDUCING,
whose rule passes every order of a FLAT instrument (nothing to reduce) and a hedge leg's reduction
that raises a breached net. With the portfolio guard bound (``bind_portfolio_guard``, by the
builder), while that guard is REDUCING each submit (order list, quantity-raising amend) also goes
through ``PortfolioGuard.denied_reason``: an order that would raise the exposure the breached
limit measures (flat: any order; a hedge leg: its reducing side) is denied here, through the same
``_deny_order`` (``_reject_modify_order``: ``"TradingState is REDUCING and update will increase
exposure"``), with the guard's reason (``"BUY when portfolio REDUCING and <id> FLAT (would open a
position)"``). The side that increases the position is left to Nautilus' own rule and reason.

Nautilus checks its trading state after its validations (reduce-only against the position,
instrument, price, quantity, expiry, the account's risk). So that a command failing one of those is
refused for that reason, as Nautilus would refuse it, the check runs them first with the
RiskEngine's own methods (``_check_order``, ``_check_orders_risk``, ``_check_price``,
``_check_quantity``) whenever the instrument is restricted; a command they refuse is either denied
by them (same event as Nautilus) or passed on for the RiskEngine to refuse itself.
"""

from __future__ import annotations

from nautilus_trader.execution.messages import ModifyOrder, SubmitOrder, SubmitOrderList
from nautilus_trader.model.enums import OrderSide

from strategies.risk.base import ACTIVE, HALTED, REDUCING

ENDPOINT = "RiskEngine.execute"


class InstrumentStateCheck:
    """``states``: instrument id (``InstrumentId``) -> ``REDUCING`` or ``HALTED`` (absent: ACTIVE)."""

    def __init__(self, risk_engine, msgbus, cache, portfolio) -> None:
        self._engine = risk_engine
        self._msgbus = msgbus
        self._cache = cache
        self._portfolio = portfolio
        self._forward = risk_engine.execute
        self._states: dict = {}
        self._portfolio_guard = None
        self.denied = 0

    def bind_portfolio_guard(self, guard) -> None:
        """The node's ``PortfolioGuard`` (builders): its hard breach denies what Nautilus' REDUCING passes."""
        self._portfolio_guard = guard

    def install(self, current=None) -> None:
        """Take over ``RiskEngine.execute``; ``current`` (the handler registered there now, by
        default the RiskEngine's ``execute``) receives every command that passes."""
        current = current if current is not None else self._engine.execute
        self._msgbus.deregister(ENDPOINT, current)
        self._forward = current
        self._msgbus.register(ENDPOINT, self.execute)

    def set_state(self, instrument_id, state: str) -> None:
        """The instrument's trading state from now on (``InstrumentId``; ACTIVE clears it)."""
        if state == ACTIVE:
            self._states.pop(instrument_id, None)
        else:
            self._states[instrument_id] = state

    def state(self, instrument_id) -> str:
        return self._states.get(instrument_id, ACTIVE)

    def execute(self, command) -> None:
        if self._states or (self._portfolio_guard is not None and self._portfolio_guard.guard_state == REDUCING):
            kind = type(command)
            if kind is SubmitOrder:
                if self._submit_denied(command):
                    return
            elif kind is SubmitOrderList:
                if self._list_denied(command):
                    return
            elif kind is ModifyOrder:
                if self._modify_rejected(command):
                    return
        self._forward(command)

    # -- the rules ----------------------------------------------------------------------------

    def _increases(self, order) -> bool:
        """Nautilus' REDUCING test: a BUY while net long, a SELL while net short the instrument."""
        if order.side == OrderSide.BUY:
            return self._portfolio.is_net_long(order.instrument_id)
        return self._portfolio.is_net_short(order.instrument_id)

    def _portfolio_reason(self, order, qty=None) -> str:
        """The portfolio guard's reason to deny ``order`` ("" = none; module doc); ``qty``: the
        quantity it would have (an amend's), else its own."""
        guard = self._portfolio_guard
        if guard is None or guard.guard_state != REDUCING:
            return ""
        return guard.denied_reason(order.instrument_id.value, order.side == OrderSide.BUY,
                                   float(order.quantity if qty is None else qty))

    def _submit_denied(self, command) -> bool:
        order = command.order
        state = self._states.get(order.instrument_id)
        portfolio = self._portfolio_reason(order)
        if state is None and not portfolio:
            return False
        instrument = self._cache.instrument(order.instrument_id)
        if instrument is None or self._reduce_only_refused(command):
            return False  # the RiskEngine denies it itself, for that reason
        # Nautilus' validations and account check before its trading state; each denies itself
        if not self._engine._check_order(instrument, order) or not self._engine._check_orders_risk(instrument, [order]):
            return True
        if state == HALTED:
            reason = "TradingState.HALTED"
        elif state == REDUCING and self._increases(order):
            side = "BUY" if order.side == OrderSide.BUY else "SELL"
            reason = f"{side} when TradingState.REDUCING and {'LONG' if side == 'BUY' else 'SHORT'} {instrument.id}"
        elif portfolio:
            reason = portfolio
        else:
            return False
        self.denied += 1
        self._engine._deny_order(order, reason)
        return True

    def _reduce_only_refused(self, command) -> bool:
        """Nautilus' first check: a reduce-only order with a position id that would not reduce it."""
        order = command.order
        if command.position_id is None or not order.is_reduce_only:
            return False
        position = self._cache.position(command.position_id)
        return position is None or not order.would_reduce_only(position.side, position.quantity)

    def _list_denied(self, command) -> bool:
        orders = command.order_list.orders
        states = [self._states.get(o.instrument_id) for o in orders]
        portfolio = [self._portfolio_reason(o) for o in orders]
        if not any(states) and not any(portfolio):
            return False
        instruments = {}
        for order in orders:
            instrument = self._cache.instrument(order.instrument_id)
            if instrument is None:
                return False  # the RiskEngine denies it itself
            instruments[order.instrument_id] = instrument
        for order in orders:
            if not self._engine._check_order(instruments[order.instrument_id], order):
                return True
        representative = instruments.get(command.instrument_id)
        if representative is None:
            return False
        if not self._engine._check_orders_risk(representative, orders):
            self._engine._deny_order_list(command.order_list, f"OrderList {command.order_list.id.to_str()} DENIED")
            return True
        reason = ""
        if HALTED in states:
            reason = "TradingState.HALTED"
        else:
            for order, state in zip(orders, states):
                if state == REDUCING and self._increases(order):
                    side = "BUY" if order.side == OrderSide.BUY else "SELL"
                    reason = (f"OrderList contains {side} when TradingState.REDUCING and "
                              f"{'LONG' if side == 'BUY' else 'SHORT'} {order.instrument_id}")
                    break
            if not reason:
                reason = next((f"OrderList contains {r}" for r in portfolio if r), "")
        if not reason:
            return False
        self.denied += 1
        self._engine._deny_order_list(command.order_list, reason)
        return True

    def _modify_rejected(self, command) -> bool:
        state = self._states.get(command.instrument_id)
        guard = self._portfolio_guard
        if state is None and (guard is None or guard.guard_state != REDUCING):
            return False
        order = self._cache.order(command.client_order_id)
        if order is None or order.is_closed or order.is_pending_cancel:
            return False  # the RiskEngine rejects it itself
        instrument = self._cache.instrument(command.instrument_id)
        if instrument is None:
            return False
        e = self._engine
        if (e._check_price(instrument, command.price) or e._check_price(instrument, command.trigger_price)
                or e._check_quantity(instrument, command.quantity, order.is_quote_quantity)):
            return False  # the RiskEngine rejects it for that reason
        if state == HALTED:
            reason = "TradingState is HALTED"
        elif (state == REDUCING and command.quantity and command.quantity > order.quantity
              and self._increases(order)):
            reason = "TradingState is REDUCING and update will increase exposure"
        elif command.quantity and command.quantity > order.quantity and self._portfolio_reason(order, command.quantity):
            reason = "TradingState is REDUCING and update will increase exposure"
        else:
            return False
        self.denied += 1
        e._reject_modify_order(order, reason)
        return True
