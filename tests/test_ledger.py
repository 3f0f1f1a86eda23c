"""The run ledger on a real Nautilus message bus, fed synthetic messages: fill attribution from
the simulator's FillInfo (shared decision 3), exchange fee vs slippage (shared decision 4),
funding rates and mark prices, and the exchange-time order of the mid series."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import BookOrder, FundingRateUpdate, MarkPriceUpdate
from nautilus_trader.model.enums import BookType, LiquiditySide, OrderSide, OrderType
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import (
    AccountId,
    ClientOrderId,
    InstrumentId,
    StrategyId,
    TradeId,
    TraderId,
    VenueOrderId,
)
from nautilus_trader.model.objects import Currency, Money, Price, Quantity
from nautilus_trader.portfolio.portfolio import Portfolio

from adapters.sim.fill_info import FILL_INFO_TOPIC, FillInfo
from mmbot.backtest.ledger import FILL_FRAME_COLUMNS, RunLedger, RunLedgerConfig
from mmbot.report import metrics as M

IID = InstrumentId.from_str("BTCUSDT-LINEAR.BYBIT")
USDT = Currency.from_str("USDT")


@pytest.fixture
def bus_and_ledger():
    clock = TestClock()
    msgbus = MessageBus(trader_id=TraderId("TESTER-001"), clock=clock)
    cache = Cache(database=None)
    ledger = RunLedger(RunLedgerConfig(instrument_id=IID, purge_interval_s=0))
    ledger.register_base(portfolio=Portfolio(msgbus=msgbus, cache=cache, clock=clock), msgbus=msgbus,
                         cache=cache, clock=clock)
    ledger.start()  # subscribes (no data engine here: the subscribe commands go nowhere)
    yield msgbus, ledger
    ledger.stop()


def C(n: str) -> str:
    """A client order id of the fixture's trader (TESTER-001: tag 001), as Nautilus generates them."""
    return f"O-20240101-000000-001-000-{n}"


def filled(trade_id: str, coid: str, ts_event_ns: int, side: OrderSide, px: str, qty: str,
           commission: float) -> OrderFilled:
    return OrderFilled(
        TraderId("TESTER-001"), StrategyId("S-001"), IID, ClientOrderId(coid), VenueOrderId(f"V-{coid}"),
        AccountId("BYBIT-001"), TradeId(trade_id), None, side, OrderType.LIMIT, Quantity.from_str(qty),
        Price.from_str(px), USDT, Money(commission, USDT), LiquiditySide.MAKER, UUID4(),
        ts_event_ns, ts_event_ns + 7_000_000, False,  # received 7 ms after it happened
    )


def test_fills_get_their_cause_and_slippage_from_fill_info(bus_and_ledger) -> None:
    msgbus, ledger = bus_and_ledger
    # queue fill with 0.02 USDT of extra slippage inside its 0.05 commission
    msgbus.publish(FILL_INFO_TOPIC, FillInfo("T-1", C("1"), "queue", 0.02, 1_000))
    msgbus.publish("events.order.S-001", filled("T-1", C("1"), 1_000, OrderSide.BUY, "100.0", "0.010", 0.05))
    # book-through fill, no slippage
    msgbus.publish(FILL_INFO_TOPIC, FillInfo("T-2", C("2"), "book_through", 0.0, 1_900))
    msgbus.publish("events.order.S-001", filled("T-2", C("2"), 2_000, OrderSide.SELL, "101.0", "0.010", 0.01))
    # a fill with no FillInfo (Nautilus' own fill model, a real venue)
    msgbus.publish("events.order.S-001", filled("T-3", C("3"), 3_000, OrderSide.BUY, "99.0", "0.020", 0.004))
    # a FillInfo naming another order than its fill, and one whose fill never comes
    msgbus.publish(FILL_INFO_TOPIC, FillInfo("T-4", C("X"), "trade_through", 0.0, 4_000))
    msgbus.publish("events.order.S-001", filled("T-4", C("4"), 4_000, OrderSide.BUY, "99.0", "0.010", 0.0))
    msgbus.publish(FILL_INFO_TOPIC, FillInfo("T-9", C("9"), "queue", 0.0, 9_000))

    # a fill of an order without our id (live: a liquidation/ADL order, or another program's on a
    # shared account): booked too, the report is the account's position on the instrument
    msgbus.publish("events.order.EXTERNAL", filled("T-5", "6f1c2a7e-0b7d-4f0e-9a55-0d8a3c1e2f44", 5_000,
                                                   OrderSide.SELL, "99.0", "0.010", 0.0))

    df = ledger.fills_frame()
    assert list(df.columns) == list(FILL_FRAME_COLUMNS)
    assert df["cause"].tolist() == ["queue", "book_through", "venue", "trade_through", "venue"]
    assert df["slippage"].tolist() == pytest.approx([0.02, 0.0, 0.0, 0.0, 0.0])
    # fee = exchange fee = commission - slippage; commission = fee + slippage stays Nautilus' figure
    assert df["fee"].tolist() == pytest.approx([0.03, 0.01, 0.004, 0.0, 0.0])
    assert df["ts_trigger_ns"].tolist() == [1_000, 1_900, -1, 4_000, -1]
    assert df["ts_event_ns"].tolist() == [1_000, 2_000, 3_000, 4_000, 5_000]  # exchange time, not ts_init
    assert (ledger.fill_info_matched, ledger.fill_info_order_mismatch, ledger.fill_info_unmatched()) == (3, 1, 1)


def test_funding_rates_and_mark_prices_are_recorded_at_exchange_time(bus_and_ledger) -> None:
    msgbus, ledger = bus_and_ledger
    topic_f = f"data.funding_rates.{IID.venue}.{IID.symbol}"
    topic_m = f"data.mark_prices.{IID.venue}.{IID.symbol}"
    msgbus.publish(topic_f, FundingRateUpdate(IID, Decimal("0.0001"), ts_event=8 * 3600 * 10**9,
                                              ts_init=8 * 3600 * 10**9 + 5))
    msgbus.publish(topic_m, MarkPriceUpdate(IID, Price.from_str("100.5"), 20, 25))
    msgbus.publish(topic_m, MarkPriceUpdate(IID, Price.from_str("100.4"), 10, 30))  # arrived late
    ts, rates = ledger.funding_rates()
    assert ts.tolist() == [8 * 3600 * 10**9] and rates.tolist() == [0.0001]
    mts, mpx = ledger.mark_prices()
    assert mts.tolist() == [10, 20] and mpx.tolist() == [100.4, 100.5]


def test_mids_keep_the_book_stream_order_when_ts_event_goes_back() -> None:
    """A book message stamped earlier than its predecessor keeps its place in the stream, at the
    predecessor's exchange time (the simulator's rule), and is counted as a regression."""
    ledger = RunLedger(RunLedgerConfig(instrument_id=IID))
    book = OrderBook(IID, BookType.L2_MBP)
    ledger._book = book
    # (ts_event, ts_init, best bid, best ask): received in ts_init order, one message out of exchange order
    for ts, ts_init, bid, ask in ((10, 13, 99.9, 100.1), (20, 24, 100.4, 100.6), (15, 25, 100.1, 100.3),
                                  (30, 33, 100.9, 101.1)):
        book.clear(0, ts)
        book.add(BookOrder(OrderSide.BUY, Price.from_str(f"{bid:.1f}"), Quantity.from_str("1"), 0), 0, ts)
        book.add(BookOrder(OrderSide.SELL, Price.from_str(f"{ask:.1f}"), Quantity.from_str("1"), 0), 0, ts)
        ledger.on_order_book_deltas(SimpleNamespace(ts_event=ts, ts_init=ts_init))
    ts, px = ledger.mids()
    # the regressed message is at the stream's time 20, its predecessor's sample 1 ns before it
    assert ts.tolist() == [10, 19, 20, 30] and px.tolist() == pytest.approx([100.0, 100.5, 100.2, 101.0])
    assert ledger.mid_ts_regressions() == 1
    # a fill the regressed message caused (exchange time 20): the mid before it is its predecessor's
    assert M.mid_before(np.array([20]), ts, px).tolist() == pytest.approx([100.5])
    # the receive clock (fill_model = "nautilus": its matching engine fills on ts_init)
    ts, px = ledger.mids("receive")
    assert ts.tolist() == [13, 24, 25, 33] and px.tolist() == pytest.approx([100.0, 100.5, 100.2, 101.0])
    with pytest.raises(ValueError):
        ledger.mids("wall")
