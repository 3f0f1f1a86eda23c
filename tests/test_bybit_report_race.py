"""An order's acceptance is not lost when the venue answers before the engine applied OrderSubmitted.

``adapters.bybit_live.MmbotBybitExecutionClient``: Nautilus 1.231's Bybit execution client generates
OrderSubmitted onto the LiveExecutionEngine's event queue, sends the order, and generates
OrderAccepted from the private stream's report only if the cached order is SUBMITTED at that
instant. These tests build the real client (through mmbot's factory, not connected) and the real
LiveExecutionEngine, and hand the client the venue's report while OrderSubmitted is still queued,
as a fast venue or a busy loop does. Seen failing on the code before the fix: the order stayed
SUBMITTED (acceptance dropped) and the fill was applied before it.
"""

from __future__ import annotations

import asyncio

import pytest
from nautilus_trader.adapters.bybit.config import BybitExecClientConfig
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core import nautilus_pyo3 as p
from nautilus_trader.live.config import LiveExecEngineConfig
from nautilus_trader.live.execution_engine import LiveExecutionEngine
from nautilus_trader.model.enums import OrderSide, OrderStatus
from nautilus_trader.model.identifiers import InstrumentId, StrategyId, TraderId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider

import adapters.bybit_live as bl

IID = "BTCUSDT-LINEAR.BYBIT"
TRADER = TraderId("TESTER-001")
STRATEGY = StrategyId("MarketMaker-000")


@pytest.fixture()
def world():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    clock = LiveClock()
    msgbus = MessageBus(trader_id=TRADER, clock=clock)
    cache = Cache()
    instrument = TestInstrumentProvider.btcusdt_perp_binance()
    # the same instrument under Bybit's id (the client only needs its id and quote currency)
    from nautilus_trader.model.instruments import CryptoPerpetual
    d = CryptoPerpetual.to_dict(instrument)
    d.update(id=IID, raw_symbol="BTCUSDT")
    instrument = CryptoPerpetual.from_dict(d)
    cache.add_instrument(instrument)
    engine = LiveExecutionEngine(loop=loop, msgbus=msgbus, cache=cache, clock=clock,
                                 config=LiveExecEngineConfig(reconciliation=False, inflight_check_interval_ms=0,
                                                             open_check_interval_secs=None))
    config = BybitExecClientConfig(api_key="k" * 18, api_secret="s" * 36, base_url_http="http://127.0.0.1:9",
                                   base_url_ws_private="ws://127.0.0.1:9/v5/private",
                                   base_url_ws_trade="ws://127.0.0.1:9/v5/trade", product_types=None)
    client = bl.MmbotBybitExecClientFactory.create(loop=loop, name="BYBIT", config=config, msgbus=msgbus,
                                                   cache=cache, clock=clock)
    engine.register_client(client)
    engine.start()
    factory = OrderFactory(trader_id=TRADER, strategy_id=STRATEGY, clock=clock)
    yield loop, clock, cache, client, factory
    engine.stop()
    loop.run_until_complete(asyncio.sleep(0.05))
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def _order(cache, factory):
    order = factory.limit(InstrumentId.from_str(IID), OrderSide.SELL, Quantity.from_str("0.001"),
                          Price.from_str("67000.0"))
    cache.add_order(order)
    return order


def _report(clock, order, status, filled="0", quantity="0.001"):
    now = clock.timestamp_ns()
    return p.OrderStatusReport(
        account_id=p.AccountId("BYBIT-UNIFIED"), instrument_id=p.InstrumentId.from_str(IID),
        venue_order_id=p.VenueOrderId("v-1"), order_side=p.OrderSide.SELL, order_type=p.OrderType.LIMIT,
        time_in_force=p.TimeInForce.GTC, order_status=status, quantity=p.Quantity.from_str(quantity),
        filled_qty=p.Quantity.from_str(filled), ts_accepted=now, ts_last=now, ts_init=now,
        client_order_id=p.ClientOrderId(order.client_order_id.value), price=p.Price.from_str("67000.0"))


def _fill(clock, order, trade_id="t-1", qty="0.001"):
    now = clock.timestamp_ns()
    return p.FillReport(
        account_id=p.AccountId("BYBIT-UNIFIED"), instrument_id=p.InstrumentId.from_str(IID),
        venue_order_id=p.VenueOrderId("v-1"), trade_id=p.TradeId(trade_id), order_side=p.OrderSide.SELL,
        last_qty=p.Quantity.from_str(qty), last_px=p.Price.from_str("67000.0"),
        commission=p.Money.from_str("0.01 USDT"), liquidity_side=p.LiquiditySide.MAKER, ts_event=now,
        ts_init=now, client_order_id=p.ClientOrderId(order.client_order_id.value))


def _submitted_but_queued(client, clock, order):
    """What ``_submit_order`` does before it sends: OrderSubmitted goes onto the engine's queue."""
    client.generate_order_submitted(strategy_id=STRATEGY, instrument_id=order.instrument_id,
                                    client_order_id=order.client_order_id, ts_event=clock.timestamp_ns())
    assert order.status == OrderStatus.INITIALIZED  # still on the queue


def _run(loop, seconds=0.1):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_acceptance_that_overtakes_order_submitted_is_applied(world):
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    _run(loop)
    assert order.status == OrderStatus.ACCEPTED, order
    assert order.venue_order_id is not None and order.venue_order_id.value == "v-1"
    assert client.reports_deferred == 1 and client.reports_defer_expired == 0


def test_reports_of_a_held_order_keep_their_order_accept_then_fill(world):
    """The fill that follows the acceptance waits behind it: ACCEPTED then FILLED, not FILLED on
    SUBMITTED with the acceptance lost."""
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    client._handle_fill_report_pyo3(_fill(clock, order))
    _run(loop)
    kinds = [type(e).__name__ for e in order.events]
    assert kinds == ["OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"], kinds
    assert order.status == OrderStatus.FILLED


def test_report_of_an_order_already_submitted_is_handled_at_once(world):
    """The common case takes no detour: handled synchronously, nothing counted."""
    loop, clock, cache, client, factory = world
    order = _order(cache, factory)
    _submitted_but_queued(client, clock, order)
    _run(loop, 0.02)
    assert order.status == OrderStatus.SUBMITTED
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    assert client._mmbot_deferred == {} and client.reports_deferred == 0
    _run(loop, 0.02)
    assert order.status == OrderStatus.ACCEPTED


def test_report_held_past_the_deadline_is_handled_as_nautilus_would(world, monkeypatch):
    """An order whose OrderSubmitted never comes (it never will: nothing queued it) is not held
    forever: at the deadline its reports go to Nautilus' handler, counted as expired."""
    loop, clock, cache, client, factory = world
    monkeypatch.setattr(bl, "REPORT_DEFER_MAX_NS", 30_000_000)
    order = _order(cache, factory)
    client._handle_order_status_report_pyo3(_report(clock, order, p.OrderStatus.ACCEPTED))
    assert client._mmbot_deferred
    _run(loop, 0.2)
    assert client._mmbot_deferred == {} and client.reports_defer_expired == 1
    assert order.status == OrderStatus.INITIALIZED  # Nautilus' own handling: nothing to accept from
