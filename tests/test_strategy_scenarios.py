"""Scenario tests: ``MarketMaker`` on tiny hand-made books in a low-level ``BacktestEngine``.

Instrument: BTCUSDT-LINEAR.BYBIT from ``adapters.instruments`` (tick 0.10, step 0.001,
min qty 0.001, min notional 5 USDT, maker fee 0.0002 = 2 bps). The venue is L2_MBP with
trade execution, the DataEngine buffers deltas until ``F_LAST``. Each ``step`` feeds one
or more exchange messages through ``engine.run(streaming=True)``; afterwards the venue has
processed every command, so open orders in the cache are what the strategy quotes.

Expected prices are hand-computed in the comments: price = fair * (1 +- bps * 1e-4),
bids rounded down and asks up to the 0.1 tick.
"""

from __future__ import annotations

import math

import pytest
from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import DataEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import BookOrder
from nautilus_trader.model.data import OrderBookDelta
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.enums import BookAction
from nautilus_trader.model.enums import BookType
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import OrderStatus
from nautilus_trader.model.enums import RecordFlag
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity

from adapters.instruments import InstrumentRegistry
from strategies.market_maker import MarketMaker
from strategies.market_maker import MarketMakerConfig

INSTRUMENT = InstrumentRegistry().get("BTCUSDT")
IID = INSTRUMENT.id
T0 = 1_700_000_000_000_000_000  # ns
MS = 1_000_000
F_LAST = RecordFlag.F_LAST.value
F_SNAPSHOT = RecordFlag.F_SNAPSHOT.value

# Quiet, predictable defaults for the scenarios; each test overrides what it exercises.
BASE = dict(
    instrument_id=IID,
    level_size=0.001,
    max_position=0.01,
    fair_price_mode="mid",
    k_vol=0.0,
    min_half_spread_bps=2.5,
    log_events=False,
    log_commands=False,
)


def _px(x: float) -> Price:
    return Price(x, INSTRUMENT.price_precision)


def _qty(x: float) -> Quantity:
    return Quantity(x, INSTRUMENT.size_precision)


def _delta(action, side, px, sz, ts, flags) -> OrderBookDelta:
    return OrderBookDelta(IID, action, BookOrder(side, _px(px), _qty(sz), 0), flags, 0, ts, ts)


def snapshot(t_ms: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> list:
    """One snapshot message: CLEAR + ADDs flagged F_SNAPSHOT, F_LAST on the last delta."""
    ts = T0 + t_ms * MS
    deltas = [OrderBookDelta.clear(IID, 0, ts, ts)]
    levels = [(OrderSide.BUY, p, s) for p, s in bids] + [(OrderSide.SELL, p, s) for p, s in asks]
    for k, (side, p, s) in enumerate(levels):
        flags = F_SNAPSHOT | (F_LAST if k == len(levels) - 1 else 0)
        deltas.append(_delta(BookAction.ADD, side, p, s, ts, flags))
    return deltas


def update(t_ms: int, *changes: tuple[OrderSide, float, float]) -> list:
    """One delta message: UPDATE (size > 0) or DELETE (size 0) per level, F_LAST on the last."""
    ts = T0 + t_ms * MS
    out = []
    for k, (side, p, s) in enumerate(changes):
        flags = F_LAST if k == len(changes) - 1 else 0
        action = BookAction.UPDATE if s > 0 else BookAction.DELETE
        out.append(_delta(action, side, p, s, ts, flags))
    return out


def trade(t_ms: int, px: float, sz: float, aggressor: AggressorSide, trade_id: str = "1") -> list:
    ts = T0 + t_ms * MS
    return [TradeTick(IID, _px(px), _qty(sz), aggressor, TradeId(trade_id), ts, ts)]


class Harness:
    """A BacktestEngine with one BYBIT venue, the BTCUSDT instrument and one MarketMaker."""

    def __init__(self, **overrides) -> None:
        config = BacktestEngineConfig(
            data_engine=DataEngineConfig(buffer_deltas=True),
            logging=LoggingConfig(bypass_logging=True),
            run_analysis=False,
        )
        self.engine = BacktestEngine(config)
        self.engine.add_venue(
            venue=Venue("BYBIT"),
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            base_currency=USDT,
            starting_balances=[Money(100_000, USDT)],
            book_type=BookType.L2_MBP,
            trade_execution=True,
        )
        self.engine.add_instrument(INSTRUMENT)
        self.mm = MarketMaker(MarketMakerConfig(**{**BASE, **overrides}))
        self.engine.add_strategy(self.mm)
        self.ran = False
        self.ended = False

    def end(self) -> None:
        """Stop the kernel (strategies get on_stop) once."""
        if self.ran and not self.ended:
            self.engine.end()
            self.ended = True

    def step(self, *messages: list) -> None:
        """Feed messages (snapshot/update/trade lists) and let the venue process everything."""
        data = [d for m in messages for d in m]
        book = [d for d in data if isinstance(d, OrderBookDelta)]
        other = [d for d in data if not isinstance(d, OrderBookDelta)]
        # add_data only inspects the first element; trades alone must skip the
        # "no order book data for an L2 venue" check, hence validate=False.
        if book:
            self.engine.add_data(book)
        if other:
            self.engine.add_data(other, validate=False)
        self.engine.run(streaming=True)
        self.engine.clear_data()
        self.ran = True

    def open_orders(self, side: OrderSide) -> list:
        orders = [o for o in self.engine.cache.orders_open(instrument_id=IID) if o.side == side]
        key = (lambda o: -o.price.as_double()) if side == OrderSide.BUY else (lambda o: o.price.as_double())
        return sorted(orders, key=key)

    def quotes(self, side: OrderSide) -> list[tuple[float, float]]:
        """(price, qty) of open orders of a side, best first."""
        pp, sp = INSTRUMENT.price_precision, INSTRUMENT.size_precision
        return [(round(o.price.as_double(), pp), round(o.quantity.as_double(), sp)) for o in self.open_orders(side)]

    def bids(self) -> list[tuple[float, float]]:
        return self.quotes(OrderSide.BUY)

    def asks(self) -> list[tuple[float, float]]:
        return self.quotes(OrderSide.SELL)

    def ids(self, side: OrderSide) -> list[str]:
        return [o.client_order_id.value for o in self.open_orders(side)]

    def assert_never_rejected(self) -> None:
        c = self.mm.counters
        assert c["post_only_rejects"] == c["rejects"] == c["modify_rejects"] == c["denied"] == 0, c
        assert all(o.is_post_only for o in self.engine.cache.orders())

    def close(self) -> None:
        self.end()
        self.engine.dispose()


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(**overrides) -> Harness:
        h = Harness(**overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


BOOK = dict(bids=[(100000.0, 1.0), (99999.0, 2.0)], asks=[(100000.2, 1.0), (100001.0, 2.0)])
# mid = 100000.1


# -- Prices, rounding, ladder -----------------------------------------------------------


def test_mid_quotes_at_fee_floor(harness):
    # min half-spread 1 bps < maker fee 2 bps -> h = 2 bps.
    # bid = 100000.1 * (1 - 0.0002) = 99980.09998  -> down to 99980.0
    # ask = 100000.1 * (1 + 0.0002) = 100020.10002 -> up to   100020.2
    h = harness(min_half_spread_bps=1.0)
    h.step(snapshot(1000, **BOOK))
    assert h.mm.last_half_spread_bps == pytest.approx(2.0)
    assert h.bids() == [(99980.0, 0.001)]
    assert h.asks() == [(100020.2, 0.001)]
    assert all(o.status == OrderStatus.ACCEPTED for o in h.engine.cache.orders_open())
    h.assert_never_rejected()


def test_weighted_mid_fair(harness):
    # bid 100000.0 x 3, ask 100001.0 x 1 -> weighted mid = (100000*1 + 100001*3) / 4 = 100000.75
    # h = 2.5 bps: bid = 100000.75 * 0.99975 = 99975.7498125 -> 99975.7
    #              ask = 100000.75 * 1.00025 = 100025.7501875 -> 100025.8
    h = harness(fair_price_mode="weighted_mid")
    h.step(snapshot(1000, bids=[(100000.0, 3.0)], asks=[(100001.0, 1.0)]))
    assert h.mm.fair_price == pytest.approx(100000.75)
    assert h.bids() == [(99975.7, 0.001)]
    assert h.asks() == [(100025.8, 0.001)]


@pytest.mark.parametrize("spacing", [dict(level_spacing_bps=1.0), dict(level_spacing_mode="half_spread_coef", level_spacing_coef=0.4)])
def test_three_level_ladder_with_size_multiplier(harness, spacing):
    # h = 2.5 bps, spacing 1 bps (or 0.4 * 2.5): offsets 2.5, 3.5, 4.5 bps of 100000.1
    # = 25.000025, 35.000035, 45.000045 USD.
    # bids 99975.099975 / 99965.099965 / 99955.099955 -> 99975.0 / 99965.0 / 99955.0
    # asks 100025.100025 / 100035.100035 / 100045.100045 -> 100025.2 / 100035.2 / 100045.2
    # sizes 0.001 * 2**i = 0.001, 0.002, 0.004
    h = harness(levels_per_side=3, size_multiplier=2.0, max_position=0.1, **spacing)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99975.0, 0.001), (99965.0, 0.002), (99955.0, 0.004)]
    assert h.asks() == [(100025.2, 0.001), (100035.2, 0.002), (100045.2, 0.004)]
    h.assert_never_rejected()


def test_volatility_widens_spread(harness):
    # t=1s mid 100000.1; t=2s mid 100010.1: one log return r = ln(100010.1/100000.1) = 0.99995 bps
    # over dt = 1 s -> variance rate r^2 per s, sigma over vol_horizon 1 s = 0.999949 bps.
    # h = max(0, 5 * 0.999949, fee 2) = 4.999745 bps around 100010.1:
    # bid = 100010.1 * (1 - 4.999745e-4) = 99960.0975 -> 99960.0
    # ask = 100010.1 * (1 + 4.999745e-4) = 100060.1025 -> 100060.2
    h = harness(k_vol=5.0, min_half_spread_bps=0.0, stale_price_drift_bps=50.0)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99980.0, 0.001)]  # sigma 0 -> fee floor 2 bps
    h.step(snapshot(2000, bids=[(100010.0, 1.0)], asks=[(100010.2, 1.0)]))
    assert h.mm.sigma_bps == pytest.approx(math.log(100010.1 / 100000.1) * 1e4)
    assert h.mm.last_half_spread_bps == pytest.approx(4.999745, abs=1e-6)
    assert h.bids() == [(99960.0, 0.001)]
    assert h.asks() == [(100060.2, 0.001)]
    assert h.mm.counters["amended"] == 2  # re-priced in place (use_amend)
    h.assert_never_rejected()


def test_glft_half_spread(harness):
    # spread_mode glft with sigma = 0 (first message): half-spread = c1 = ln(1 + gamma*Delta/kappa) / (gamma*Delta)
    # gamma 0.1, Delta = level_size / max_position = 0.001 / 0.01 = 0.1, kappa 0.2:
    # gamma*Delta = 0.01, gamma*Delta/kappa = 0.05 -> c1 = ln(1.05) / 0.01 = 4.879016 bps
    # (above the fee floor 2 and the minimum 0).
    # bid = 100000.1 * (1 - 4.879016e-4) = 99951.30979 -> 99951.3
    # ask = 100000.1 * (1 + 4.879016e-4) = 100048.89021 -> 100048.9
    h = harness(spread_mode="glft", glft_kappa=0.2, risk_aversion=0.1, min_half_spread_bps=0.0)
    h.step(snapshot(1000, **BOOK))
    assert h.mm.last_half_spread_bps == pytest.approx(math.log(1.05) / 0.01)
    assert h.bids() == [(99951.3, 0.001)]
    assert h.asks() == [(100048.9, 0.001)]


def test_vol_warmup_delays_quoting(harness):
    h = harness(vol_warmup_ms=500.0)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [] and h.asks() == [] and not h.mm.warmed_up
    h.step(update(1600, (OrderSide.BUY, 100000.0, 2.0)))  # 600 ms of data seen
    assert h.mm.warmed_up
    assert h.bids() == [(99975.0, 0.001)] and h.asks() == [(100025.2, 0.001)]


def test_one_sided_book_pulls_quotes(harness):
    h = harness()
    h.step(snapshot(1000, bids=[(100000.0, 1.0)], asks=[(100000.2, 1.0)]))
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    h.step(update(2000, (OrderSide.SELL, 100000.2, 0.0)))  # the only ask level is deleted
    assert h.bids() == [] and h.asks() == []
    assert h.mm.counters["book_unusable"] == 1
    h.step(update(3000, (OrderSide.SELL, 100000.2, 1.0)))  # back to two-sided
    assert h.bids() == [(99975.0, 0.001)] and h.asks() == [(100025.2, 0.001)]


def test_trade_ticks_only_update_state(harness):
    h = harness()
    h.step(snapshot(1000, **BOOK))
    batches = h.mm.counters["batches"]
    h.step(trade(1500, 100000.2, 0.5, AggressorSide.BUYER))  # at the touch, through no quote
    assert h.mm.last_trade_price == pytest.approx(100000.2)
    assert h.mm.counters["batches"] == batches
    assert h.mm.counters["submitted"] == 2 and h.mm.position_base == 0.0


# -- Inventory skew ---------------------------------------------------------------------


def test_linear_skew_after_fill(harness):
    # Quote 0.002 a side at 99975.0 / 100025.2 (h = 2.5 bps). A seller hits 99975.0 for
    # 0.002 -> our bid fills, position +0.002 BTC. Linear skew 1000 bps/BTC -> shift -2 bps:
    # r   = 100000.1 * (1 - 0.0002) = 99980.08002
    # bid = r * (1 - 0.00025) = 99955.104955  -> 99955.1   (new order)
    # ask = r * (1 + 0.00025) = 100005.095005 -> 100005.1  (amended)
    h = harness(level_size=0.002, skew_mode="linear", skew_bps_per_unit=1000.0)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99975.0, 0.002)]
    ask_id = h.ids(OrderSide.SELL)
    h.step(trade(1500, 99975.0, 0.002, AggressorSide.SELLER))
    assert h.mm.position_base == pytest.approx(0.002)
    assert h.bids() == []
    h.step(update(2000, (OrderSide.BUY, 100000.0, 1.5)))
    assert h.mm.last_shift_bps == pytest.approx(-2.0)
    assert h.bids() == [(99955.1, 0.002)]
    assert h.asks() == [(100005.1, 0.002)]
    assert h.ids(OrderSide.SELL) == ask_id  # amended, same order
    h.assert_never_rejected()


def test_avellaneda_skew_with_position(harness):
    # Long 0.001 of max 0.002 -> q = 0.5. Mid path 100000.1 -> 100010.1 (1 s) gives a
    # variance rate r^2 = 0.999898 bps^2/s. shift = -q * gamma * var * tau
    # = -0.5 * 0.1 * 0.999898 * 60 = -2.999694 bps; h = 2.5 bps (k_vol = 0).
    # r   = 100010.1 * (1 - 2.999694e-4) = 99980.10003
    # bid = r * (1 - 0.00025) = 99955.105005 -> 99955.1
    # ask = r * (1 + 0.00025) = 100005.095055 -> 100005.1, which is below the best bid
    #       100010.0 -> clamped to 100010.0 + 0.1 = 100010.1
    h = harness(max_position=0.002, risk_aversion=0.1, horizon_s=60.0, stale_price_drift_bps=50.0)
    h.step(snapshot(1000, **BOOK))
    h.step(trade(1500, 99975.0, 0.001, AggressorSide.SELLER))
    assert h.mm.position_base == pytest.approx(0.001)
    h.step(snapshot(2000, bids=[(100010.0, 1.0)], asks=[(100010.2, 1.0)]))
    var = (math.log(100010.1 / 100000.1) * 1e4) ** 2
    assert h.mm.last_shift_bps == pytest.approx(-0.5 * 0.1 * var * 60.0)
    assert h.mm.last_shift_bps == pytest.approx(-2.999694, abs=1e-6)
    assert h.bids() == [(99955.1, 0.001)]
    assert h.asks() == [(100010.1, 0.001)]
    h.assert_never_rejected()


def test_short_skew_clamps_bid_below_best_ask(harness):
    # No fee floor, h = 0.5 bps: quotes 99995.0 / 100005.2. A buyer lifts our ask ->
    # position -0.001, linear skew 2000 bps/BTC -> shift +2 bps: r = 100000.1 * 1.0002 = 100020.12002
    # bid = r * (1 - 0.00005) = 100015.099015 -> 100015.0, which would cross the best ask
    #       100000.2 -> clamped to 100000.2 - 0.1 = 100000.1 (post-only safe)
    # ask = r * (1 + 0.00005) = 100025.101025 -> 100025.2
    # (requote threshold 0: the 5.1 USD = 0.51 bps move of the bid must be applied)
    h = harness(
        fee_floor_enabled=False,
        min_half_spread_bps=0.5,
        skew_mode="linear",
        skew_bps_per_unit=2000.0,
        requote_threshold_bps=0.0,
    )
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99995.0, 0.001)]
    assert h.asks() == [(100005.2, 0.001)]
    h.step(trade(1500, 100005.2, 0.001, AggressorSide.BUYER))
    assert h.mm.position_base == pytest.approx(-0.001)
    h.step(update(2000, (OrderSide.SELL, 100000.2, 1.5)))
    assert h.bids() == [(100000.1, 0.001)]
    assert h.asks() == [(100025.2, 0.001)]
    assert h.mm.position_base == pytest.approx(-0.001)  # the clamped bid rests, no fill
    h.assert_never_rejected()


def test_book_moves_and_target_would_cross_is_clamped(harness):
    # h = 0.5 bps, no fee floor: quotes 99995.0 / 100005.2. A seller hits our bid ->
    # position +0.001, linear skew 2000 bps/BTC -> shift -2 bps (requote threshold 0):
    # r   = 100000.1 * (1 - 0.0002) = 99980.08002
    # bid = r * (1 - 0.00005) = 99975.100975 -> 99975.1 (new order)
    # ask = r * (1 + 0.00005) = 99985.098985 -> 99985.1 <= best bid 100000.0
    #       -> clamped to best bid + tick = 100000.1 (amended there, still passive)
    # Then the book moves down one tick (bid 99999.9 / ask 100000.0, mid 99999.95):
    # r = 99979.95001; ask = r * 1.00005 = 99984.949008 -> 99985.0 -> clamped to
    # 99999.9 + 0.1 = 100000.0; bid = r * 0.99995 = 99974.951012 -> 99974.9
    h = harness(
        fee_floor_enabled=False,
        min_half_spread_bps=0.5,
        skew_mode="linear",
        skew_bps_per_unit=2000.0,
        requote_threshold_bps=0.0,
    )
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99995.0, 0.001)] and h.asks() == [(100005.2, 0.001)]
    h.step(trade(1500, 99995.0, 0.001, AggressorSide.SELLER))
    assert h.mm.position_base == pytest.approx(0.001)
    h.step(update(2000, (OrderSide.BUY, 100000.0, 1.5)))
    assert h.bids() == [(99975.1, 0.001)]
    assert h.asks() == [(100000.1, 0.001)]
    h.step(snapshot(3000, bids=[(99999.9, 1.0)], asks=[(100000.0, 1.0)]))
    assert h.asks() == [(100000.0, 0.001)]
    assert h.bids() == [(99974.9, 0.001)]
    assert h.mm.position_base == pytest.approx(0.001)  # nothing crossed, nothing filled
    h.assert_never_rejected()


# -- Book guards, exchange rules, inventory limits ----------------------------------------


def test_imbalance_cutoff(harness):
    # imbalance = (9 - 1) / (9 + 1) = +0.8 > 0.5: buying pressure -> no ask, bid only.
    h = harness(imbalance_cutoff=0.5, min_time_in_book_ms=0.0)
    h.step(snapshot(1000, bids=[(100000.0, 9.0)], asks=[(100000.2, 1.0)]))
    assert len(h.bids()) == 1 and h.asks() == []
    # imbalance = (1 - 9) / 10 = -0.8: selling pressure -> the bid goes, the ask comes.
    h.step(update(2000, (OrderSide.BUY, 100000.0, 1.0), (OrderSide.SELL, 100000.2, 9.0)))
    assert h.bids() == [] and len(h.asks()) == 1
    # balanced again -> both sides
    h.step(update(3000, (OrderSide.SELL, 100000.2, 1.0)))
    assert len(h.bids()) == 1 and len(h.asks()) == 1


def test_min_notional_and_min_qty_skips_are_counted(harness):
    # At ~1000 USDT a 0.001 BTC order is 1 USDT < 5 USDT min notional -> nothing sent.
    h = harness()
    h.step(snapshot(1000, bids=[(1000.0, 1.0)], asks=[(1000.2, 1.0)]))
    assert h.bids() == [] and h.asks() == []
    assert h.mm.skipped_orders["min_notional"] == 2
    # Level 1 of a 0.5x ladder is 0.0005 BTC -> 0 lots < min qty 0.001: skipped per attempt.
    h2 = harness(levels_per_side=2, size_multiplier=0.5)
    h2.step(snapshot(1000, **BOOK))
    assert h2.bids() == [(99975.0, 0.001)] and h2.asks() == [(100025.2, 0.001)]
    assert h2.mm.skipped_orders["min_qty"] == 2
    assert h2.mm.skipped_orders["min_notional"] == 0


def test_inventory_limit_truncates_ladder(harness):
    # max 0.002, 3 levels of 0.001: each side may only hold 2 levels (0 + 0.002 <= 0.002).
    h = harness(levels_per_side=3, max_position=0.002, min_time_in_book_ms=10_000.0)
    h.step(snapshot(1000, **BOOK))
    assert len(h.bids()) == 2 and len(h.asks()) == 2
    # Bid level 0 fills -> long 0.001: bids may only hold 1 level (the level-1 bid is pulled
    # at once despite min_time_in_book, the filled level 0 is re-placed); asks may hold 3.
    h.step(trade(1500, 99975.0, 0.001, AggressorSide.SELLER))
    h.step(update(1600, (OrderSide.BUY, 100000.0, 1.5)))
    assert h.mm.position_base == pytest.approx(0.001)
    assert h.bids() == [(99975.0, 0.001)]
    assert len(h.asks()) == 3
    # Worst case: the pulled level-1 bid counts until its cancel is confirmed, so a new level-0
    # bid would allow 0.003; the level-1 bid is amended up to level 0 instead (same size).
    assert h.mm.counters["limit_moves"] == 1 and h.mm.counters["risk_pulls"] == 0


def test_set_quoting_constraints(harness):
    h = harness(min_time_in_book_ms=10_000.0)
    h.step(snapshot(1000, **BOOK))
    assert len(h.bids()) == 1 and len(h.asks()) == 1
    # "reduce only" for a flat book side: no bids; pulled at once, not re-placed.
    h.mm.set_quoting_constraints(allow_bid=False, allow_ask=True, spread_multiplier=2.0)
    assert h.mm.quoting_constraints == (False, True, 2.0)
    h.step(update(1100, (OrderSide.BUY, 100000.0, 1.5)))
    assert h.bids() == []
    # Wider spread applies from the next update; the resting ask is young (min time in
    # book 10 s) so it keeps its price; a fresh ask would use h = 5 bps.
    assert h.mm.last_half_spread_bps == pytest.approx(5.0)
    assert h.asks() == [(100025.2, 0.001)]
    h.mm.set_quoting_constraints(True, True)
    h.step(update(1200, (OrderSide.BUY, 100000.0, 1.0)))
    # bid with h = 2.5 again: 99975.0
    assert h.bids() == [(99975.0, 0.001)]
    with pytest.raises(ValueError, match="spread_multiplier"):
        h.mm.set_quoting_constraints(True, True, 0.5)


# -- Order lifecycle ----------------------------------------------------------------------


@pytest.mark.parametrize("use_amend", [True, False])
def test_requote_threshold_keeps_queue_priority(harness, use_amend):
    # h = 10 bps (wide, so the moving book never trades through our quotes), threshold 3 bps.
    # Start (mid 100000.1): bid 100000.1 * 0.999 = 99900.0999 -> 99900.0
    #                       ask 100000.1 * 1.001 = 100100.1001 -> 100100.2
    # Book +2 bps (mid 100020.1): targets 99920.0799 -> 99920.0 and 100120.1201 -> 100120.2,
    # each 20 USD = 2.0 bps from the resting price -> both kept, same order ids.
    # Book +4 bps (mid 100040.1): targets 99940.0599 -> 99940.0 and 100140.1401 -> 100140.2,
    # 4.0 bps away -> both moved.
    h = harness(min_half_spread_bps=10.0, requote_threshold_bps=3.0, stale_price_drift_bps=50.0, use_amend=use_amend)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99900.0, 0.001)] and h.asks() == [(100100.2, 0.001)]
    bid_ids = h.ids(OrderSide.BUY)
    h.step(snapshot(2000, bids=[(100020.0, 1.0)], asks=[(100020.2, 1.0)]))
    assert h.bids() == [(99900.0, 0.001)] and h.asks() == [(100100.2, 0.001)]
    assert h.ids(OrderSide.BUY) == bid_ids
    h.step(snapshot(3000, bids=[(100040.0, 1.0)], asks=[(100040.2, 1.0)]))
    assert h.bids() == [(99940.0, 0.001)]
    assert h.asks() == [(100140.2, 0.001)]
    if use_amend:
        assert h.ids(OrderSide.BUY) == bid_ids
        assert h.mm.counters["amended"] == 2
    else:
        assert h.ids(OrderSide.BUY) != bid_ids
        assert h.engine.cache.order(ClientOrderId(bid_ids[0])).status == OrderStatus.CANCELED
        assert h.mm.counters["amended"] == 0
    assert h.mm.position_base == 0.0
    h.assert_never_rejected()


def test_max_order_age_reprices_within_threshold(harness):
    # threshold 3 bps, max age 2 s: the +2 bps move is ignored at 2 s (age 1 s) but applied
    # at 3.5 s (age 2.5 s): bid 99995.0, ask 100020.1 * 1.00025 = 100045.105025 -> 100045.2.
    h = harness(requote_threshold_bps=3.0, max_order_age_ms=2000.0, stale_price_drift_bps=50.0)
    h.step(snapshot(1000, **BOOK))
    h.step(snapshot(2000, bids=[(100020.0, 1.0)], asks=[(100020.2, 1.0)]))
    assert h.bids() == [(99975.0, 0.001)]
    h.step(update(3500, (OrderSide.BUY, 100020.0, 2.0)))
    assert h.bids() == [(99995.0, 0.001)]
    assert h.asks() == [(100045.2, 0.001)]


def test_min_time_in_book(harness):
    # threshold 0, min time in book 500 ms. A +2 bps move 100 ms after acceptance is
    # ignored (prices unchanged); the next message at +600 ms re-prices to the targets
    # 99995.0 / 100045.2 (mid 100020.1, h = 2.5 bps).
    h = harness(requote_threshold_bps=0.0, min_time_in_book_ms=500.0)
    h.step(snapshot(1000, **BOOK))
    h.step(snapshot(1100, bids=[(100020.0, 1.0)], asks=[(100020.2, 1.0)]))
    assert h.bids() == [(99975.0, 0.001)] and h.asks() == [(100025.2, 0.001)]
    h.step(update(1600, (OrderSide.BUY, 100020.0, 2.0)))
    assert h.bids() == [(99995.0, 0.001)] and h.asks() == [(100045.2, 0.001)]
    assert h.mm.counters["stale_pulls"] == 0
    h.assert_never_rejected()


def test_stale_guard_overrides_min_time_in_book(harness):
    # h = 20 bps, min time in book 10 s, stale drift 5 bps.
    # Start: bid 100000.1 * 0.998 = 99800.0998 -> 99800.0, ask 100000.1 * 1.002 = 100200.1002 -> 100200.2
    # 100 ms later fair jumps to 100100.1 (+10 bps > 5): both quotes are cancelled at once,
    # even though they are young and use_amend is on, and replaced by new orders at
    # bid 100100.1 * 0.998 = 99899.8998 -> 99899.8, ask 100100.1 * 1.002 = 100300.3002 -> 100300.4
    h = harness(min_half_spread_bps=20.0, min_time_in_book_ms=10_000.0, stale_price_drift_bps=5.0)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99800.0, 0.001)] and h.asks() == [(100200.2, 0.001)]
    old = set(h.ids(OrderSide.BUY) + h.ids(OrderSide.SELL))
    h.step(snapshot(1100, bids=[(100100.0, 1.0)], asks=[(100100.2, 1.0)]))
    assert h.bids() == [(99899.8, 0.001)] and h.asks() == [(100300.4, 0.001)]
    assert not old & set(h.ids(OrderSide.BUY) + h.ids(OrderSide.SELL))
    assert h.mm.counters["stale_pulls"] == 2
    assert h.mm.counters["amended"] == 0
    assert all(h.engine.cache.order(ClientOrderId(i)).status == OrderStatus.CANCELED for i in old)
    # A +2 bps move (below the stale limit) 100 ms later leaves the young quotes alone.
    h.step(snapshot(1200, bids=[(100120.0, 1.0)], asks=[(100120.2, 1.0)]))
    assert h.bids() == [(99899.8, 0.001)] and h.asks() == [(100300.4, 0.001)]


# -- Batching and lifecycle ---------------------------------------------------------------


def test_acts_once_per_message(harness):
    h = harness()
    h.step(snapshot(1000, **BOOK))  # 1 CLEAR + 4 ADDs, one message
    assert h.mm.counters["batches"] == 1
    h.step(update(2000, (OrderSide.BUY, 100000.0, 2.0), (OrderSide.BUY, 99999.0, 3.0), (OrderSide.SELL, 100001.0, 1.0)))
    assert h.mm.counters["batches"] == 2
    assert h.mm.counters["submitted"] == 2


def test_stop_cancels_orders_keeps_position(harness):
    h = harness()
    h.step(snapshot(1000, **BOOK))
    h.step(trade(1500, 99975.0, 0.001, AggressorSide.SELLER))
    assert h.mm.position_base == pytest.approx(0.001)
    h.end()  # stops the trader -> MarketMaker.on_stop
    assert h.engine.cache.orders_open(instrument_id=IID) == []
    positions = h.engine.cache.positions_open(instrument_id=IID)
    assert len(positions) == 1 and positions[0].signed_qty == pytest.approx(0.001)


def test_reset_clears_state(harness):
    h = harness()
    h.step(snapshot(1000, bids=[(1000.0, 1.0)], asks=[(1000.2, 1.0)]))
    assert h.mm.skipped_orders["min_notional"] == 2
    h.end()
    h.mm.reset()
    assert h.mm.skipped_orders["min_notional"] == 0
    assert math.isnan(h.mm.fair_price)
    assert h.mm.counters["batches"] == 0


# -- Config validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_half_spread_bps", -1.0),
        ("levels_per_side", 0),
        ("level_size", 0.0),
        ("max_position", -1.0),
        ("fair_price_mode", "last"),
        ("skew_mode", "quadratic"),
        ("spread_mode", "fixed"),
        ("imbalance_cutoff", 1.5),
        ("vol_halflife_ms", 0.0),
        ("stale_price_drift_bps", float("nan")),
        ("level_size", 1.0),  # > max_position
    ],
)
def test_config_rejects_nonsense(key, value):
    with pytest.raises(ValueError, match=f"MarketMakerConfig.{key}"):
        MarketMakerConfig(**{**BASE, key: value})


def test_config_names_the_renamed_fair_price_mode():
    # "microprice" was the size-weighted mid; it is refused (no silent alias) with the new name.
    with pytest.raises(ValueError) as e:
        MarketMakerConfig(**{**BASE, "fair_price_mode": "microprice"})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("MarketMakerConfig.fair_price_mode: 'microprice' is now called 'weighted_mid'")
    assert MarketMakerConfig(**{**BASE, "fair_price_mode": "weighted_mid"}).fair_price_mode == "weighted_mid"
    assert MarketMakerConfig(instrument_id=IID, level_size=0.001, max_position=0.01).fair_price_mode == "weighted_mid"


def test_on_start_rejects_level_size_below_min_qty(harness):
    # 0.0004 BTC is a valid config on its own but below BTCUSDT's 0.001 minimum quantity.
    h = harness(level_size=0.0004)
    errors, _ = h.mm.check_instrument(INSTRUMENT)
    assert errors and "minimum order quantity" in errors[0]
    with pytest.raises(ValueError, match="below the minimum order quantity"):
        h.step(snapshot(1000, **BOOK))


# -- Inventory limit in the worst case (issue 12 item 1.3) --------------------------------


class QsimHarness(Harness):
    """``Harness`` with orders routed to mmbot's queue simulator (``QSIM``) and its latencies;
    records the largest |position| seen after each step."""

    def __init__(self, latency, **overrides) -> None:
        from adapters.sim.exec_client import CLIENT_ID, QueueSimExecutionClient, SimParams

        super().__init__(exec_client_id=CLIENT_ID, **overrides)
        k = self.engine.kernel
        self.client = QueueSimExecutionClient(IID, SimParams(latency=latency), k.msgbus, k.cache, k.clock)
        k.exec_engine.register_client(self.client)
        k.exec_engine.register_venue_routing(self.client, Venue("BYBIT"))
        self.max_abs_position = 0.0

    def step(self, *messages: list) -> None:
        super().step(*messages)
        pos = sum(p.signed_qty for p in self.engine.cache.positions_open(instrument_id=IID))
        self.max_abs_position = max(self.max_abs_position, abs(pos))


def test_inventory_limit_holds_with_cancel_latency():
    # Queue simulator, 50 ms cancel latency, orders and market data without latency.
    # max_position = level_size = 0.001: one order per side at a time. h = 20 bps:
    # t=1000: bid 100000.1 * 0.998 = 99800.0998 -> 99800.0, ask 100200.1002 -> 100200.2.
    # t=1100: fair 100100.1 (+10 bps > stale 5 bps): the stale guard pulls both quotes; their
    #         cancels reach the exchange only at t=1150. A new bid at 100100.1 * 0.998 =
    #         99899.8998 -> 99899.8 would make two bids that can fill: 0.002 > max_position.
    # t=1120: the market sells 0.005 down to 99790.0, through both bid prices.
    # Worst case honoured: the replacement waits for the cancel confirmation, so only the old
    # bid fills and the position ends at 0.001 (main: 0.002).
    from adapters.sim.latency import Latency, LatencyModel

    h = QsimHarness(LatencyModel(cancel=Latency("constant", 50.0)), max_position=0.001, level_size=0.001,
                    min_half_spread_bps=20.0)
    try:
        h.step(snapshot(1000, **BOOK))
        assert h.bids() == [(99800.0, 0.001)] and h.asks() == [(100200.2, 0.001)]
        h.step(snapshot(1100, bids=[(100100.0, 1.0)], asks=[(100100.2, 1.0)]))
        assert h.mm.counters["stale_pulls"] == 2
        h.step(trade(1120, 99790.0, 0.005, AggressorSide.SELLER))
        h.step(update(1200, (OrderSide.BUY, 100100.0, 2.0)))
        h.step(update(1300, (OrderSide.BUY, 100100.0, 3.0)))
        assert h.mm.position_base == pytest.approx(0.001)
        assert h.max_abs_position <= 0.001 + 1e-12
        # At the limit once the cancel is confirmed: no bid; the ask side quotes (replaced once
        # its cancel was confirmed).
        assert h.bids() == []
        assert len(h.asks()) == 1
        assert h.mm.counters["limit_waits"] >= 2  # both replacements waited for their cancel
    finally:
        h.close()


# -- Cancel rejects: no storm (issue 13 item 3) -------------------------------------------


def _cancel_deaf_client(reason: str):
    """A queue simulator whose venue answers every cancel with ``reason`` while the order keeps
    resting (Bybit's 110001 after a missed event, or a cancel that overtook its order), until
    ``deaf`` is set False."""
    from adapters.sim.exec_client import QueueSimExecutionClient

    class CancelDeaf(QueueSimExecutionClient):
        deaf = True
        cancels: list = []

        def _cancel_arrive(self, x, command, o):
            if command is not None:
                self.cancels.append((x, command.client_order_id.value))
            if self.deaf and command is not None and o is not None and not o.gone:
                self.generate_order_cancel_rejected(command.strategy_id, command.instrument_id,
                                                    command.client_order_id, o.voi, reason, x)
                return
            super()._cancel_arrive(x, command, o)

    return CancelDeaf


@pytest.mark.parametrize("reason", ["110001: order not exists or too late to cancel",  # the simulator
                                    "order not exists or too late to cancel",  # Nautilus' Bybit adapter
                                    "Too many visits. Exceeded the API Rate Limit."])  # other: backoff only
def test_rejected_cancels_back_off_no_storm(reason):
    # The stale guard pulls both quotes at t=1100 (fair +10 bps); the venue refuses every cancel
    # (5 ms each way) for 20 s while book messages arrive every 50 ms. The strategy must not re-send
    # a cancel on each reject: capped exponential backoff (planner.CANCEL_RETRY_*: 250 ms, x2, cap
    # 5 s) allows at most 3 cancels of one order in any 1 s and 6 in any 10 s. (main: one cancel per
    # round trip, ~100 per second per order.) When the venue answers again, the orders go within
    # one cap interval.
    from adapters.sim.exec_client import SimParams
    from adapters.sim.latency import Latency, LatencyModel
    from strategies.planner import CANCEL_RETRY_CAP_NS

    cls = _cancel_deaf_client(reason)
    h = Harness(exec_client_id="QSIM", min_half_spread_bps=20.0)
    k = h.engine.kernel
    client = cls(IID, SimParams(latency=LatencyModel(cancel=Latency("constant", 5.0))), k.msgbus, k.cache, k.clock)
    client.cancels = []
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    try:
        h.step(snapshot(1000, **BOOK))
        old = set(h.ids(OrderSide.BUY) + h.ids(OrderSide.SELL))
        h.step(snapshot(1100, bids=[(100100.0, 1.0)], asks=[(100100.2, 1.0)]))
        book = [snapshot(1100 + 50 * j, bids=[(100100.0, 1.0 + j % 7)], asks=[(100100.2, 1.0)]) for j in range(1, 400)]
        h.step(*book)  # 20 s of messages
        per_order: dict[str, list[int]] = {}
        for ts, coid in client.cancels:
            per_order.setdefault(coid, []).append(ts)
        assert set(per_order) == old  # only the two pulled orders, the rest waited (max_position 0.01)
        for times in per_order.values():
            for window_ns, k_max in ((1_000 * MS, 3), (10_000 * MS, 6)):
                assert max(sum(1 for t in times if t0 <= t < t0 + window_ns) for t0 in times) <= k_max, times
            assert len(times) <= 8  # 0, .25, .75, 1.75, 3.75, 7.75, 12.75, 17.75 s after the first
        # The venue answers again: both cancelled within one cap interval (+ one message).
        client.deaf = False
        t_end = 1100 + 50 * 400
        h.step(*[snapshot(t_end + 50 * j, bids=[(100100.0, 2.0)], asks=[(100100.2, 1.0)])
                 for j in range(1, CANCEL_RETRY_CAP_NS // (50 * MS) + 2)])
        assert all(h.engine.cache.order(ClientOrderId(c)).status == OrderStatus.CANCELED for c in old)
        assert h.mm.counters["cancel_rejects"] >= 2 * 7
    finally:
        h.close()


def test_amend_refused_as_unknown_order_is_not_repeated_every_message():
    # The venue refuses every amend with 110001 "order not exists or too late to replace" (e.g.
    # the order filled and we missed it) while the order rests. main re-sent the amend on every
    # book message (each a counted error for the circuit breaker); now the order is pulled (its
    # cancel follows the backoff) and its state is asked from the venue.
    from adapters.sim.exec_client import QueueSimExecutionClient, SimParams

    class AmendDeaf(QueueSimExecutionClient):
        amends: list = []

        def _amend_arrive(self, x, command, o):
            self.amends.append((x, command.client_order_id.value))
            self.generate_order_modify_rejected(command.strategy_id, command.instrument_id, command.client_order_id,
                                                o.voi if o else None, "110001: order not exists or too late to replace",
                                                x)

    h = Harness(exec_client_id="QSIM", requote_threshold_bps=0.0, min_time_in_book_ms=0.0)
    k = h.engine.kernel
    client = AmendDeaf(IID, SimParams(), k.msgbus, k.cache, k.clock)
    client.amends = []
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    try:
        h.step(snapshot(1000, **BOOK))
        first = set(h.ids(OrderSide.BUY) + h.ids(OrderSide.SELL))
        # +2 bps, then 100 messages alternating +-0.1 bps: the targets move every message.
        h.step(*[snapshot(1100 + 50 * j, bids=[(100020.0 + (j % 2), 1.0)], asks=[(100020.2 + (j % 2), 1.0)])
                 for j in range(100)])
        per_order: dict[str, int] = {}
        for _, coid in client.amends:
            per_order[coid] = per_order.get(coid, 0) + 1
        assert per_order and max(per_order.values()) == 1, per_order  # main: ~100 per order
        assert first <= set(per_order)
        assert all(h.engine.cache.order(ClientOrderId(c)).status == OrderStatus.CANCELED for c in first)
    finally:
        h.close()


def test_pull_inside_an_event_while_actions_are_applied():
    # A zero-latency venue answers the first order at once (a post-only reject) and the handler
    # pulls both sides (as the circuit breaker does on rejects) while the strategy is still sending
    # the rest of the ladder: the orders not sent yet must not go out, nothing may crash.
    from adapters.sim.exec_client import QueueSimExecutionClient, SimParams

    class RejectFirst(QueueSimExecutionClient):
        def _arrive(self, x, o):
            if not getattr(self, "done", False):
                self.done = True
                o.gone = True
                self._orders.pop(o.order.client_order_id, None)
                self.generate_order_rejected(o.order.strategy_id, o.order.instrument_id, o.order.client_order_id,
                                             "EC_PostOnlyWillTakeLiquidity", x, True)
                return
            super()._arrive(x, o)

    h = Harness(exec_client_id="QSIM", levels_per_side=2)
    k = h.engine.kernel
    client = RejectFirst(IID, SimParams(), k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    mm = h.mm
    original = mm.on_order_rejected

    def on_rejected(event):
        original(event)
        mm.set_quoting_constraints(False, False)

    mm.on_order_rejected = on_rejected
    try:
        h.step(snapshot(1000, **BOOK))
        assert h.bids() == [] and h.asks() == []
        assert len(h.engine.cache.orders()) == 1  # only the rejected one was ever sent
        assert not list(mm._planner.records())
        h.step(update(1100, (OrderSide.BUY, 100000.0, 2.0)))
        assert h.bids() == [] and h.asks() == []  # still not allowed
    finally:
        h.close()


# -- Stop (issue 13 item 2, the strategy's part) -------------------------------------------


def test_stop_cancels_orders_still_in_flight_once_acknowledged():
    # Orders take 50 ms to reach the venue; the strategy stops 10 ms after quoting. Like Bybit's,
    # the venue's cancel-all only sees orders that have arrived, so on its own it leaves both
    # quotes resting (main). The stopped strategy cancels each such order once it is acknowledged,
    # and reports what is unresolved until then.
    from adapters.sim.exec_client import QueueSimExecutionClient, SimParams
    from adapters.sim.latency import Latency, LatencyModel

    class ArrivedOnlyCancelAll(QueueSimExecutionClient):
        def cancel_all_orders(self, command):
            for o in list(self._orders.values()):
                if o.live and command.order_side in (OrderSide.NO_ORDER_SIDE, o.order.side):
                    o.cancel_sent = True
                    self._later(self._delay(self._lat.cancel_ns()), self._cancel_arrive, None, o)

    h = Harness(exec_client_id="QSIM")
    k = h.engine.kernel
    client = ArrivedOnlyCancelAll(IID, SimParams(latency=LatencyModel(order=Latency("constant", 50.0))),
                                  k.msgbus, k.cache, k.clock)
    k.exec_engine.register_client(client)
    k.exec_engine.register_venue_routing(client, Venue("BYBIT"))
    try:
        h.step(snapshot(1000, **BOOK))
        assert len(h.engine.cache.orders_inflight(instrument_id=IID)) == 2
        h.step(update(1010, (OrderSide.BUY, 100000.0, 2.0)))
        h.mm.stop()
        unresolved = h.mm.unresolved_orders()
        assert sorted(o.side for o in unresolved) == [OrderSide.BUY, OrderSide.SELL]
        assert all(o.status == OrderStatus.SUBMITTED for o in unresolved)
        h.step(*[update(1010 + 20 * j, (OrderSide.BUY, 100000.0, 2.0 + j)) for j in range(1, 10)])
        assert h.engine.cache.orders_open(instrument_id=IID) == []
        assert all(o.status == OrderStatus.CANCELED for o in h.engine.cache.orders())
        assert h.mm.unresolved_orders() == []
        assert not client._orders  # nothing rests at the venue
    finally:
        h.close()


def test_amend_to_the_price_the_order_already_has_does_not_leave_the_slot_waiting(harness):
    """1-hour soak (docs/benchmarks.md, "Soak"): 17 `Cannot create command ModifyOrder ... the same as
    existing values`. The planner's record of an order's price can lag the order (an OrderUpdated
    the node learned late, by Nautilus' periodic open-order check); it then asks to amend the order
    to the price it already rests at. Nautilus refuses to create that command, so no event ever
    answers it: the slot stayed PENDING_AMEND and the level was never re-quoted until the stale
    guard cancelled it. Now the strategy compares with the order itself: already there means done
    (the planner takes it as updated, with the order's last event time)."""
    import strategies.planner as pl

    h = harness(min_half_spread_bps=10.0, requote_threshold_bps=3.0, stale_price_drift_bps=50.0, use_amend=True)
    h.step(snapshot(1000, **BOOK))
    assert h.bids() == [(99900.0, 0.001)]
    rec = h.mm._planner.slots[pl.BID][0]
    assert rec.state == pl.WORKING
    lagging = round(99800.0 / 0.1)  # the planner believes the bid rests 10 bps lower than it does
    rec.ticks = rec.req_ticks = lagging
    h.step(snapshot(2000, **BOOK))  # same book: target 99900.0 = where the order already is
    assert rec.state == pl.WORKING and rec.ticks == round(99900.0 / 0.1), pl.STATE_NAMES[rec.state]
    # The level still follows the book (old code: stuck at 99900.0, PENDING_AMEND, no amend sent).
    h.step(snapshot(3000, bids=[(100040.0, 1.0)], asks=[(100040.2, 1.0)]))
    assert h.bids() == [(99940.0, 0.001)]
    h.assert_never_rejected()
