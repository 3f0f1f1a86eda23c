"""Hostile review of the held-report fix (``adapters.bybit_live.MmbotBybitExecutionClient``).

Same harness as ``tests/test_bybit_report_race.py``: the real client built through mmbot's factory
(not connected) and the real LiveExecutionEngine; the venue's report is handed to the client while
the order's OrderSubmitted is still on the engine's queue.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nautilus_trader.adapters.bybit.execution import BybitExecutionClient
from nautilus_trader.core import nautilus_pyo3 as p
from nautilus_trader.model.enums import OrderStatus

import adapters.bybit_live as bl
from tests.test_bybit_report_race import (IID, STRATEGY, _fill, _order, _report, _run,  # noqa: F401
                                          _submitted_but_queued, world)


def _events(order):
    return [type(e).__name__ for e in order.events]


def _big_order(cache, factory):
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.objects import Price, Quantity
    order = factory.limit(InstrumentId.from_str(IID), OrderSide.SELL, Quantity.from_str("0.002"),
                          Price.from_str("67000.0"))
    cache.add_order(order)
    return order


def _published(loop, client):
    """Order events as the strategy sees them (published by the engine)."""
    seen = []
    client._msgbus.subscribe(topic="events.order.*", handler=lambda e: seen.append(type(e).__name__))
    return seen


# -- reports that must not be held -------------------------------------------------------------

def test_report_without_client_order_id_is_not_held(world):
    loop, clock, cache, client, factory = world
    now = clock.timestamp_ns()
    report = p.OrderStatusReport(
        account_id=p.AccountId("BYBIT-UNIFIED"), instrument_id=p.InstrumentId.from_str(IID),
        venue_order_id=p.VenueOrderId("v-9"), order_side=p.OrderSide.SELL, order_type=p.OrderType.LIMIT,
        time_in_force=p.TimeInForce.GTC, order_status=p.OrderStatus.ACCEPTED, quantity=p.Quantity.from_str("0.001"),
        filled_qty=p.Quantity.from_str("0"), ts_accepted=now, ts_last=now, ts_init=now, client_order_id=None,
        price=p.Price.from_str("67000.0"))
    client._handle_order_status_report_pyo3(report)
    assert client._mmbot_deferred == {} and client.reports_deferred == 0


def test_report_of_an_order_unknown_to_the_cache_is_not_held(world):
    """A foreign order on the shared account (or an unknown id): straight to Nautilus' external path."""
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    foreign = factory.limit(order.instrument_id, order.side, order.quantity, order.price)  # never cached
    client._handle_order_status_report_pyo3(_report(clock, foreign, p.OrderStatus.ACCEPTED))
    client._handle_fill_report_pyo3(_fill(clock, foreign))
    assert client._mmbot_deferred == {} and client.reports_deferred == 0


# -- terminal reports first ---------------------------------------------------------------------

@pytest.mark.parametrize("status,last", [(p.OrderStatus.CANCELED, "OrderCanceled"),
                                         (p.OrderStatus.REJECTED, "OrderRejected")])
def test_terminal_report_before_any_acceptance(world, status, last):
    """Cancelled / expired / rejected with no "New" first: applied after OrderSubmitted, as before."""
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, status))
    _run(loop)
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", last], _events(order)
    assert client._mmbot_deferred == {}


def test_fill_before_any_status_report(world):
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_fill_report_pyo3(_fill(clock, order))
    _run(loop)
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", "OrderFilled"]
    assert order.status == OrderStatus.FILLED


def test_two_fills_after_acceptance_all_applied_in_order(world):
    loop, clock, cache, client, factory = world
    order = _big_order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED, quantity="0.002"))
    client._handle_fill_report_pyo3(_fill(clock, order, "t-1", "0.001"))
    client._handle_fill_report_pyo3(_fill(clock, order, "t-2", "0.001"))
    _run(loop)
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled", "OrderFilled"]
    assert [str(t) for t in order.trade_ids] == ["t-1", "t-2"]


def test_report_arriving_after_release_scheduled_keeps_its_place(world, monkeypatch):
    """The order left INITIALIZED but the held reports are not out yet: a newer report of it
    must not overtake them (it queues behind).

    The retry timer is set far out and fired by hand: with the real 1 ms retry, a loaded machine
    (CI) could fire it in the same loop pass that applies OrderSubmitted, and the acceptance was
    already out before the fill came (stop 33's CI failed on that, not on the client)."""
    loop, clock, cache, client, factory = world
    monkeypatch.setattr(bl, "REPORT_DEFER_RETRY_S", 3600.0)
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    # let the engine apply OrderSubmitted; the release scheduled right after the report (call_soon)
    # found the order INITIALIZED and re-armed its (now far) retry
    while order.status == OrderStatus.INITIALIZED:
        loop.run_until_complete(asyncio.sleep(0))
    assert client._mmbot_deferred  # the acceptance is still held (its release comes later)
    client._handle_fill_report_pyo3(_fill(clock, order))
    assert len(client._mmbot_deferred[order.client_order_id.value]) == 2  # queued behind it
    client._mmbot_release(order.client_order_id.value, clock.timestamp_ns() + bl.REPORT_DEFER_MAX_NS)  # the retry
    _run(loop)
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"]
    assert client._mmbot_deferred == {} and client.reports_defer_expired == 0


def test_order_denied_while_its_report_is_held(world):
    """INITIALIZED then DENIED (never to be submitted): released at once, Nautilus' handling."""
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    client.generate_order_denied(strategy_id=STRATEGY, instrument_id=order.instrument_id,
                                 client_order_id=order.client_order_id, reason="test",
                                 ts_event=clock.timestamp_ns())
    _run(loop)
    assert order.status == OrderStatus.DENIED and client._mmbot_deferred == {}
    assert client.reports_defer_expired == 0


# -- defects ------------------------------------------------------------------------------------

def test_exception_in_a_released_report_does_not_lose_the_later_ones(world, monkeypatch):
    """Before the hold, every venue message was its own event-loop callback: one that raised in
    Nautilus' handler (logged by the loop) did not affect the next. Held reports were released in
    one loop: the first raising lost every later report of the order (here its fill)."""
    loop, clock, cache, client, factory = world
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))
    original = BybitExecutionClient._handle_order_status_report_pyo3

    def broken(self, report):
        if report.order_status == p.OrderStatus.ACCEPTED:
            raise RuntimeError("a report Nautilus cannot handle")
        return original(self, report)

    monkeypatch.setattr(BybitExecutionClient, "_handle_order_status_report_pyo3", broken)
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    client._handle_fill_report_pyo3(_fill(clock, order))
    _run(loop)
    assert [type(e).__name__ for e in errors] == ["RuntimeError"]
    assert order.status == OrderStatus.FILLED, _events(order)  # the fill is not lost
    assert client._mmbot_deferred == {}


def test_fill_then_acceptance_held_together_gives_the_true_history(world):
    """Bybit's execution and order topics are separate streams: a quick fill's execution may come
    before the order's "New". Released together, both handlers saw the same stale SUBMITTED: the
    OrderAccepted came after the fill (InvalidStateTrigger warning, yet published to the
    strategy). Now the held "New" goes first: submitted, accepted, filled, as at the venue."""
    loop, clock, cache, client, factory = world
    published = _published(loop, client)
    order = _big_order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_fill_report_pyo3(_fill(clock, order, "t-1", "0.001"))
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED, quantity="0.002"))
    _run(loop)
    assert order.status == OrderStatus.PARTIALLY_FILLED
    assert published == ["OrderSubmitted", "OrderAccepted", "OrderFilled"], published
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"]


# -- stop, flood, cost ------------------------------------------------------------------------

def test_engine_gone_while_reports_held_no_exception_no_task(world, monkeypatch):
    """The engine's event queue stopped (node stopping, kill) before OrderSubmitted was applied:
    the order stays INITIALIZED, its reports wait out the deadline and go to Nautilus' handler
    (their events land on the dead queue, as unheld they would have). Nothing raises, and the
    hold leaves no asyncio task behind (only timer handles: no "Task was destroyed" at close)."""
    loop, clock, cache, client, factory = world
    monkeypatch.setattr(bl, "REPORT_DEFER_MAX_NS", 20_000_000)
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    tasks_before = set(asyncio.all_tasks(loop))
    order = _order(cache, factory)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    client._handle_fill_report_pyo3(_fill(clock, order))
    assert set(asyncio.all_tasks(loop)) == tasks_before  # the hold creates no task
    _run(loop, 0.1)
    assert errors == [] and client._mmbot_deferred == {} and client.reports_defer_expired == 1


def test_flood_of_held_orders_all_released(world):
    """2,000 orders each overtaken by its venue report: all accepted, nothing left held."""
    loop, clock, cache, client, factory = world
    orders = [_order(cache, factory) for _ in range(2000)]
    t0 = time.perf_counter()
    for order in orders:
        _submitted_but_queued(client, clock, order)
        client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    for _ in range(500):
        if not client._mmbot_deferred:
            break
        _run(loop, 0.01)
    assert client._mmbot_deferred == {}
    assert all(o.status == OrderStatus.ACCEPTED for o in orders)
    assert client.reports_deferred == 2000 and client.reports_defer_expired == 0
    assert time.perf_counter() - t0 < 20.0


# -- through Nautilus' own submit paths (the venue answering at once) -------------------------

class _InstantVenue:
    """Stands in for the trade WebSocket: the venue's "New" is scheduled on the loop before the
    send returns, as the private stream's callback (call_soon_threadsafe) can be."""

    def __init__(self, loop, clock, client, real):
        self.loop, self.clock, self.client, self.real = loop, clock, client, real

    def _new(self, coid: str):
        order = self.client._cache.order(__import__("nautilus_trader.model.identifiers",
                                                     fromlist=["ClientOrderId"]).ClientOrderId(coid))
        self.loop.call_soon(self.client._handle_msg, _report(self.clock, order, p.OrderStatus.ACCEPTED))

    async def submit_order(self, **kw):
        self._new(kw["client_order_id"].value)

    def build_place_order_params(self, **kw):
        return kw["client_order_id"].value

    async def batch_place_orders(self, trader_id, strategy_id, params):
        for coid in params:
            self._new(coid)


def _submit_cmd(order):
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.execution.messages import SubmitOrder
    return SubmitOrder(trader_id=order.trader_id, strategy_id=order.strategy_id, order=order,
                       command_id=UUID4(), ts_init=0)


def test_submit_order_answered_at_once_is_accepted(world):
    """Nautilus' ``_submit_order``: OrderSubmitted goes on the engine's queue, the venue's "New"
    is handled before the queue ran (the race), and the order ends ACCEPTED."""
    loop, clock, cache, client, factory = world
    client._ws_trade_client = _InstantVenue(loop, clock, client, client._ws_trade_client)
    order = _order(cache, factory)
    loop.run_until_complete(client._submit_order(_submit_cmd(order)))
    _run(loop)
    assert _events(order) == ["OrderInitialized", "OrderSubmitted", "OrderAccepted"], _events(order)
    assert client.reports_deferred == 1  # the race did happen


def test_batch_submit_answered_at_once_every_order_accepted(world):
    """``_submit_order_list_ws`` generates every OrderSubmitted before the one batch send: holding
    works per order."""
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.execution.messages import SubmitOrderList
    from nautilus_trader.model.identifiers import OrderListId
    from nautilus_trader.model.orders.list import OrderList
    loop, clock, cache, client, factory = world
    client._ws_trade_client = _InstantVenue(loop, clock, client, client._ws_trade_client)
    orders = [_order(cache, factory) for _ in range(3)]
    order_list = OrderList(OrderListId("OL-1"), orders)
    cmd = SubmitOrderList(trader_id=orders[0].trader_id, strategy_id=orders[0].strategy_id,
                          order_list=order_list, command_id=UUID4(), ts_init=0)
    loop.run_until_complete(client._submit_order_list(cmd))
    _run(loop)
    assert [o.status for o in orders] == [OrderStatus.ACCEPTED] * 3, [_events(o) for o in orders]
    assert client.reports_deferred == 3
