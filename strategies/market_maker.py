"""Order-book driven market maker for one Bybit linear perpetual (NautilusTrader 1.231).

``MarketMakerConfig`` (frozen, validated in ``__post_init__``) sits beside the
``MarketMaker`` strategy, in the style of Nautilus' example strategies. The strategy

- subscribes to L2_MBP order-book deltas and trade ticks for ``instrument_id``;
- acts once per ``OrderBookDeltas`` batch whose last delta carries ``F_LAST`` (one
  exchange message; run the DataEngine with ``buffer_deltas=True`` so whole messages
  arrive as one batch), reading the top of book from ``self.cache.order_book``;
- computes fair price, volatility, inventory skew, half-spread and a price/size ladder
  with the pure functions of ``strategies.quoting`` (floats, tick and lot integers);
- hands the ladder to the order-lifecycle planner (``strategies.planner``: plain data in,
  submit/amend/cancel actions out, the inventory limit held in the worst case, cancel retries on
  a capped backoff) and applies its actions (see ``docs/strategy.md`` for every rule and formula).

Public surface for other components (risk actor, backtest builder):

- ``set_quoting_constraints(allow_bid, allow_ask, spread_multiplier=1.0)`` and the
  ``quoting_constraints`` property;
- read-only state: ``fair_price``, ``mid_price``, ``sigma_bps``, ``position_base``,
  ``last_half_spread_bps``, ``last_shift_bps``, ``last_trade_price``, ``warmed_up``;
- counters: ``skipped_orders`` (exchange-rule skips by reason) and ``counters``;
- ``working_quotes()`` for inspection and ``unresolved_orders()`` (orders not known closed, for
  the run loop's final check after stop); neither for the hot path.
"""

from __future__ import annotations

import math

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import OrderBookDeltas
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import BookType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import RecordFlag
from nautilus_trader.model.enums import TimeInForce
from nautilus_trader.model.events import OrderAccepted
from nautilus_trader.model.events import OrderCanceled
from nautilus_trader.model.events import OrderDenied
from nautilus_trader.model.events import OrderCancelRejected
from nautilus_trader.model.events import OrderExpired
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.events import OrderModifyRejected
from nautilus_trader.model.events import OrderRejected
from nautilus_trader.model.events import OrderUpdated
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.trading.strategy import Strategy

from strategies import planner as pl
from strategies import quoting as qm
from strategies.risk.base import RISK_TOPIC, ConstraintBoard, RiskConstraint

FAIR_PRICE_MODES = ("mid", "weighted_mid")
# Former names of fair_price_mode values: refused with one line naming the new one (no alias).
RENAMED_FAIR_PRICE_MODES = {"microprice": "weighted_mid"}
SKEW_MODES = ("avellaneda", "linear", "glft")
SPREAD_MODES = ("vol", "glft")
LEVEL_SPACING_MODES = ("bps", "half_spread_coef")


# Upper bounds of the config's numbers (docs/strategy.md, "Bounds"). Sizes: 1e9 base units keeps
# every order, and the ladder's worst-case exposure (capped by max_position), far below
# Nautilus' QUANTITY_MAX (~3.4e13). Distances: 10,000 bps = 100 % of the price puts a bid at 0;
# with at most MAX_LEVELS levels an ask stays within ~100x the fair price, far below PRICE_MAX
# (~1.7e13) for any listed price. Times: one day.
MAX_SIZE = 1e9              # [base units] level_size, max_position
MAX_BPS = 10_000.0          # [bps] half-spread, spacing, requote threshold; [bps per base unit] linear skew
MAX_MS = 86_400_000.0       # [ms] volatility half-life / horizon / warm-up, min time in book
MAX_K_VOL = 1_000.0         # [-] half-spread multiple of sigma_bps
MAX_GLFT = 1e6              # [1/bps] glft_kappa, [1/s] glft_A
MAX_RISK_AVERSION = 1_000.0  # [1/bps per max_position] (default 0.1)
MAX_HORIZON_S = 86_400.0    # [s] one day
MAX_LEVELS = 100            # orders per side (Bybit allows 500 open orders per symbol)
MAX_SPACING_COEF = 100.0    # [-] level spacing as a multiple of the half-spread
MAX_SIZE_MULTIPLIER = 10.0  # [-] level i = level_size * size_multiplier**i


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


class MarketMakerConfig(StrategyConfig, frozen=True):
    """
    Configuration for ``MarketMaker`` instances. Units in brackets; see ``docs/strategy.md``.

    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to quote (e.g. ``BTCUSDT-LINEAR.BYBIT``).
    level_size : float
        [base units] Size of the best level on each side (rounded down to the size step).
    max_position : float
        [base units] Inventory limit, held in the worst case: a side adds an order only while
        every order of that side that can still fill (pending submit, working, pending amend,
        pending cancel) filling would keep ``|position| <= max_position``. Also normalises
        ``q = position / max_position`` for the Avellaneda–Stoikov / GLFT skew.
    fair_price_mode : str, default "weighted_mid"
        "mid" or "weighted_mid" (the top-of-book size-weighted mid; it was called "microprice",
        which is not Stoikov's micro-price: a config still saying so is refused).
    vol_halflife_ms : float, default 30_000
        [ms] Half-life of the time-aware EWMA of squared mid log returns.
    vol_horizon_ms : float, default 1_000
        [ms] Horizon of the reported volatility ``sigma_bps`` (bps per sqrt(horizon)).
    vol_warmup_ms : float, default 0
        [ms] No quotes until the volatility estimator has seen this much elapsed time.
    fee_floor_enabled : bool, default True
        Keep the half-spread at least the instrument's maker fee (0 when it is a rebate).
    min_half_spread_bps : float, default 2.5
        [bps] Lower bound of the half-spread.
    k_vol : float, default 2.0
        [-] Half-spread multiple of ``sigma_bps`` (``spread_mode="vol"``).
    spread_mode : str, default "vol"
        "vol": ``max(min_half_spread_bps, k_vol * sigma_bps, fee floor)``;
        "glft": ``max(min_half_spread_bps, GLFT half-spread, fee floor)``.
    glft_kappa : float, default 0.5
        [1/bps] Decay of the fill intensity with distance (GLFT).
    glft_A : float, default 1.0
        [1/s] Fill intensity at zero distance (GLFT).
    skew_mode : str, default "avellaneda"
        "avellaneda": shift ``-q * risk_aversion * sigma² * horizon_s`` bps;
        "linear": shift ``-position * skew_bps_per_unit`` bps;
        "glft": shift ``-q * c2`` bps (Guéant 2017).
    risk_aversion : float, default 0.1
        [1/bps per max_position] gamma of Avellaneda–Stoikov and GLFT.
    horizon_s : float, default 60
        [s] tau of Avellaneda–Stoikov.
    skew_bps_per_unit : float, default 0
        [bps per base unit] Linear skew slope.
    levels_per_side : int, default 1
        Number of orders per side.
    level_spacing_mode : str, default "bps"
        "bps": levels ``level_spacing_bps`` apart; "half_spread_coef": levels
        ``level_spacing_coef * half_spread`` apart.
    level_spacing_bps : float, default 1.0
        [bps] Distance between consecutive levels.
    level_spacing_coef : float, default 0.5
        [-] Level distance as a fraction of the half-spread.
    size_multiplier : float, default 1.0
        [-] Level ``i`` size is ``level_size * size_multiplier ** i``.
    imbalance_cutoff : float, default 1.0
        [-] No ask while ``(bid_sz - ask_sz) / (bid_sz + ask_sz) > cutoff`` (buying
        pressure), no bid while it is ``< -cutoff``. 1.0 disables the guard.
    requote_threshold_bps : float, default 1.0
        [bps] A resting order whose target moved at most this much is left alone.
    max_order_age_ms : float, default 60_000
        [ms] ... unless it has been live this long (then it is re-priced to the target).
    min_time_in_book_ms : float, default 250
        [ms] An order is not re-priced (nor cancelled for a soft reason) before this much
        time since it was accepted / last amended.
    use_amend : bool, default True
        Re-price with ``modify_order`` (Bybit amend) instead of cancel + new order.
    stale_price_drift_bps : float, default 5.0
        [bps] If fair moved more than this since a quote's price was chosen, cancel it at
        once, ignoring ``min_time_in_book_ms``.
    close_positions_on_stop : bool, default False
        Flatten the position with a market order on stop.
    exec_client_id : str, optional
        Route orders to this execution client (set only by the builders, e.g. ``QSIM`` for the
        queue simulator, docs/queue_model.md); None = Nautilus' default routing.
    quote_from_ns : int, default 0
        [ns, receive clock] Market data received before this time is ignored (no quotes, no
        estimator updates): set only by the backtest builder when a window starts between two
        book snapshots and the replay starts at the earlier snapshot to build the book
        (docs/config.md, "Windows between snapshots"); 0 = from the first message.

    """

    instrument_id: InstrumentId
    level_size: float
    max_position: float
    fair_price_mode: str = "weighted_mid"
    vol_halflife_ms: float = 30_000.0
    vol_horizon_ms: float = 1_000.0
    vol_warmup_ms: float = 0.0
    fee_floor_enabled: bool = True
    min_half_spread_bps: float = 2.5
    k_vol: float = 2.0
    spread_mode: str = "vol"
    glft_kappa: float = 0.5
    glft_A: float = 1.0
    skew_mode: str = "avellaneda"
    risk_aversion: float = 0.1
    horizon_s: float = 60.0
    skew_bps_per_unit: float = 0.0
    levels_per_side: int = 1
    level_spacing_mode: str = "bps"
    level_spacing_bps: float = 1.0
    level_spacing_coef: float = 0.5
    size_multiplier: float = 1.0
    imbalance_cutoff: float = 1.0
    requote_threshold_bps: float = 1.0
    max_order_age_ms: float = 60_000.0
    min_time_in_book_ms: float = 250.0
    use_amend: bool = True
    stale_price_drift_bps: float = 5.0
    close_positions_on_stop: bool = False
    exec_client_id: str | None = None
    quote_from_ns: int = 0

    def __post_init__(self) -> None:  # noqa: C901 (a flat list of checks)
        def bad(key: str, rule: str) -> ValueError:
            return ValueError(f"MarketMakerConfig.{key}: {rule}, was {getattr(self, key)!r}")

        def choice(key: str, options: tuple[str, ...]) -> None:
            if getattr(self, key) not in options:
                raise bad(key, f"must be one of {', '.join(repr(o) for o in options)}")

        def number(key: str, *, low: float, strict: bool, high: float | None = None, allow_inf: bool = False) -> None:
            v = getattr(self, key)
            if not _is_real(v) or (math.isinf(v) and not allow_inf):
                raise bad(key, "must be a finite number" if not allow_inf else "must be a number")
            if v < low or (strict and v == low):
                raise bad(key, f"must be {'>' if strict else '>='} {low:g}")
            if high is not None and v > high:
                raise bad(key, f"must be <= {high:g}")

        if not isinstance(self.instrument_id, InstrumentId):
            raise bad("instrument_id", "must be an InstrumentId (e.g. InstrumentId.from_str('BTCUSDT-LINEAR.BYBIT'))")
        renamed = RENAMED_FAIR_PRICE_MODES.get(self.fair_price_mode) if isinstance(self.fair_price_mode, str) else None
        if renamed is not None:
            raise bad("fair_price_mode", f"{self.fair_price_mode!r} is now called {renamed!r} (the size-weighted mid "
                      "of the best levels, not Stoikov's micro-price; docs/strategy.md)")
        choice("fair_price_mode", FAIR_PRICE_MODES)
        choice("skew_mode", SKEW_MODES)
        choice("spread_mode", SPREAD_MODES)
        choice("level_spacing_mode", LEVEL_SPACING_MODES)
        # Upper bounds (MAX_* above): beyond them a value is a typo, and unbounded ones crash the
        # hot path in Price()/Quantity() (PRICE_MAX, QUANTITY_MAX) or overflow a ns timer.
        number("level_size", low=0.0, strict=True, high=MAX_SIZE)
        number("max_position", low=0.0, strict=True, high=MAX_SIZE)
        number("vol_halflife_ms", low=0.0, strict=True, high=MAX_MS)
        number("vol_horizon_ms", low=0.0, strict=True, high=MAX_MS)
        number("vol_warmup_ms", low=0.0, strict=False, high=MAX_MS)
        number("min_half_spread_bps", low=0.0, strict=False, high=MAX_BPS)
        number("k_vol", low=0.0, strict=False, high=MAX_K_VOL)
        number("glft_kappa", low=0.0, strict=True, high=MAX_GLFT)
        number("glft_A", low=0.0, strict=True, high=MAX_GLFT)
        number("risk_aversion", low=0.0, strict=False, high=MAX_RISK_AVERSION)
        number("horizon_s", low=0.0, strict=False, high=MAX_HORIZON_S)
        number("skew_bps_per_unit", low=0.0, strict=False, high=MAX_BPS)
        if isinstance(self.levels_per_side, bool) or not isinstance(self.levels_per_side, int):
            raise bad("levels_per_side", "must be an integer")
        if self.levels_per_side < 1:
            raise bad("levels_per_side", "must be >= 1")
        if self.levels_per_side > MAX_LEVELS:
            raise bad("levels_per_side", f"must be <= {MAX_LEVELS}")
        number("level_spacing_bps", low=0.0, strict=False, high=MAX_BPS)
        number("level_spacing_coef", low=0.0, strict=False, high=MAX_SPACING_COEF)
        number("size_multiplier", low=0.0, strict=True, high=MAX_SIZE_MULTIPLIER)
        number("imbalance_cutoff", low=0.0, strict=True)
        if self.imbalance_cutoff > 1.0:
            raise bad("imbalance_cutoff", "must be <= 1 (imbalance lies in [-1, 1]; 1 disables the guard)")
        number("requote_threshold_bps", low=0.0, strict=False, high=MAX_BPS)
        number("max_order_age_ms", low=0.0, strict=True, allow_inf=True)  # any larger value = inf (no limit)
        number("min_time_in_book_ms", low=0.0, strict=False, high=MAX_MS)
        number("stale_price_drift_bps", low=0.0, strict=True, allow_inf=True)
        if (self.spread_mode == "glft" or self.skew_mode == "glft") and self.risk_aversion <= 0.0:
            raise bad("risk_aversion", "must be > 0 when spread_mode or skew_mode is 'glft'")
        if self.level_size > self.max_position:
            raise bad("level_size", f"must be <= max_position ({self.max_position!r}) or nothing is ever quoted")
        if isinstance(self.quote_from_ns, bool) or not isinstance(self.quote_from_ns, int) or self.quote_from_ns < 0:
            raise bad("quote_from_ns", "must be an integer >= 0 (ns)")


_BID = pl.BID
_ASK = pl.ASK
_SIDES = (OrderSide.BUY, OrderSide.SELL)
_F_LAST = RecordFlag.F_LAST.value
_SUBMIT, _AMEND, _CANCEL = pl.SUBMIT, pl.AMEND, pl.CANCEL
STOP_CANCELS_MAX = 3  # cancels per order sent by the stopped strategy as acknowledgements arrive
STOP_CANCEL_BATCH = 10  # own orders per batch cancel at stop (Bybit takes up to 20 per linear batch request)
# Names of the planner's record states in ``working_quotes()``.
_STATE_NAMES = {pl.PENDING_SUBMIT: "PENDING", pl.WORKING: "LIVE", pl.PENDING_AMEND: "UPDATING"}


class MarketMaker(Strategy):
    """
    Avellaneda–Stoikov / GLFT style market maker quoting a post-only ladder on one instrument.

    Cancels its orders on stop; flattens the position only when
    ``close_positions_on_stop`` is set.

    Parameters
    ----------
    config : MarketMakerConfig
        The configuration for the instance.

    """

    def __init__(self, config: MarketMakerConfig) -> None:
        super().__init__(config)
        c = config
        self.instrument: Instrument | None = None  # set in on_start
        self._iid: InstrumentId = c.instrument_id
        self._levels: int = c.levels_per_side
        self._weighted_mid: bool = c.fair_price_mode == "weighted_mid"
        self._skew_mode: int = SKEW_MODES.index(c.skew_mode)
        self._glft_spread: bool = c.spread_mode == "glft"
        self._spacing_coef_mode: bool = c.level_spacing_mode == "half_spread_coef"
        self._halflife_ns: float = c.vol_halflife_ms * qm.NS_PER_MS
        self._horizon_ns: float = c.vol_horizon_ms * qm.NS_PER_MS
        self._warmup_ns: float = c.vol_warmup_ms * qm.NS_PER_MS
        self._min_tib_ns: int = int(c.min_time_in_book_ms * qm.NS_PER_MS)
        self._max_age_ns: float = c.max_order_age_ms * qm.NS_PER_MS
        self._glft_delta: float = c.level_size / c.max_position
        self._client_id: ClientId | None = ClientId(c.exec_client_id) if c.exec_client_id else None
        self._quote_from_ns: int = c.quote_from_ns
        # Exchange rules, filled from the instrument in on_start.
        self._tick: float = 0.0
        self._inv_tick: float = 0.0
        self._step: float = 0.0
        self._min_qty: float = 0.0
        self._max_qty: float = math.inf
        self._min_notional: float = 0.0
        self._fee_floor_bps: float = 0.0
        self._lots: list[int] = []
        self._qty_objs: list = []
        # External constraints (risk actor).
        self._allow = [True, True]
        self._spread_mult: float = 1.0
        self._risk_board = ConstraintBoard()  # latest constraint of each risk guard (docs/risk.md)
        self._position_cap: float = math.inf  # [base units] the allocator's budget (docs/portfolio.md)
        # Public counters.
        self.skipped_orders: dict[str, int] = dict.fromkeys(qm.SKIP_REASONS, 0)
        self.counters: dict[str, int] = {}
        self._reset_state()

    # -- State --------------------------------------------------------------------------

    def _reset_state(self) -> None:
        # Our orders and their lifecycle decisions live in the planner (strategies/planner.py),
        # built in on_start from the instrument's rules.
        self._planner: pl.Planner | None = None
        self._stop_watch: dict[ClientOrderId, int] = {}  # after stop: orders to cancel once acknowledged
        self._query_supported: bool = True  # False once the execution client refused a QueryOrder
        self._position: float = 0.0
        self._inv_step: float = 0.0
        self._fair: float = math.nan
        self._mid: float = math.nan
        self._last_ts: int = -1
        self._vol_s: float = 0.0
        self._vol_t: float = 0.0
        self._elapsed_ns: float = 0.0
        self._sigma_bps: float = 0.0
        self._var_rate: float = 0.0
        self._half_spread: float = math.nan
        self._shift: float = math.nan
        self._last_trade_px: float = math.nan
        self._trade_count: int = 0
        for k in self.skipped_orders:
            self.skipped_orders[k] = 0
        self.counters.clear()
        self.counters.update(
            batches=0,
            submitted=0,
            amended=0,
            amend_noop=0,  # amends settled without a request: the order already rested at the price
            canceled=0,
            stale_pulls=0,
            risk_pulls=0,
            post_only_rejects=0,
            rejects=0,
            denied=0,
            modify_rejects=0,
            book_unusable=0,
            limit_waits=0,
            limit_moves=0,
            cancel_rejects=0,
            cancel_retries=0,
            cancel_queries=0,
            stop_cancels=0,
        )

    # -- Lifecycle ----------------------------------------------------------------------

    def on_start(self) -> None:
        """Resolve and validate the instrument, load the position, subscribe."""
        if self._stop_watch:  # restarted: the strategy handles its orders' events again
            self._stop_watching()
        self.instrument = self.cache.instrument(self._iid)
        if self.instrument is None:
            self.log.error(f"Could not find instrument for {self._iid}")
            self.stop()
            return
        errors, warnings = self.check_instrument(self.instrument)
        for w in warnings:
            self.log.warning(w)
        if errors:
            raise ValueError(f"MarketMakerConfig does not fit {self._iid}: " + "; ".join(errors))
        inst = self.instrument
        self._tick = inst.price_increment.as_double()
        self._inv_tick = 1.0 / self._tick
        self._step = inst.size_increment.as_double()
        self._min_qty = inst.min_quantity.as_double() if inst.min_quantity is not None else 0.0
        self._max_qty = inst.max_quantity.as_double() if inst.max_quantity is not None else math.inf
        self._min_notional = inst.min_notional.as_double() if inst.min_notional is not None else 0.0
        fee = float(inst.maker_fee)
        self._fee_floor_bps = qm.fee_floor_bps(fee) if self.config.fee_floor_enabled else 0.0
        c = self.config
        self._inv_step = 1.0 / self._step
        self._lots = qm.size_ladder(c.level_size, c.size_multiplier, self._levels, self._step)
        self._qty_objs = [inst.make_qty(n * self._step) if n > 0 else None for n in self._lots]
        self._planner = pl.Planner(
            levels=self._levels,
            level_lots=self._lots,
            max_lots=self._max_lots(),
            tick=self._tick,
            step=self._step,
            min_qty=self._min_qty,
            min_notional=self._min_notional,
            max_qty=self._max_qty,
            requote_threshold_bps=c.requote_threshold_bps,
            min_time_in_book_ns=self._min_tib_ns,
            max_order_age_ns=self._max_age_ns,
            stale_price_drift_bps=c.stale_price_drift_bps,
            use_amend=c.use_amend,
            skipped=self.skipped_orders,
            counters=self.counters,
        )
        self._position = self._account_position()
        # Every position of the instrument, not only this strategy's (see _account_position).
        self.msgbus.subscribe(topic="events.position.*", handler=self._on_position_event)
        self.subscribe_order_book_deltas(self._iid, BookType.L2_MBP)
        self.subscribe_trade_ticks(self._iid)
        self.msgbus.subscribe(topic=RISK_TOPIC, handler=self._on_risk_constraint)
        self.log.info(
            f"Quoting {self._iid}: tick={self._tick} step={self._step} lots={self._lots} "
            f"fee_floor={self._fee_floor_bps:g}bps position={self._position}",
        )

    def check_instrument(self, instrument: Instrument) -> tuple[list[str], list[str]]:
        """Config checks against an instrument's rules: ``(errors, warnings)`` as messages."""
        c = self.config
        errors: list[str] = []
        warnings: list[str] = []
        step = instrument.size_increment.as_double()
        min_qty = instrument.min_quantity.as_double() if instrument.min_quantity is not None else 0.0
        lots = qm.size_ladder(c.level_size, c.size_multiplier, c.levels_per_side, step)
        if lots[0] * step < min_qty - step * qm.TICK_EPS or lots[0] == 0:
            errors.append(f"level_size {c.level_size} is below the minimum order quantity {min_qty} (step {step})")
        elif abs(c.level_size / step - lots[0]) > 1e-6:
            warnings.append(
                f"level_size {c.level_size} is not a multiple of the size step {step}; "
                f"rounded down to {lots[0] * step:g}",
            )
        small = [i for i, n in enumerate(lots) if n * step < min_qty - step * qm.TICK_EPS or n == 0]
        if small and not errors:
            warnings.append(f"ladder levels {small} are below the minimum quantity {min_qty} and will be skipped")
        if c.max_position < lots[0] * step:
            errors.append(f"max_position {c.max_position} is below one order of {lots[0] * step:g}")
        if instrument.maker_fee < 0 and c.fee_floor_enabled:
            warnings.append(f"maker fee {instrument.maker_fee} is a rebate: fee floor is 0")
        return errors, warnings

    def on_stop(self) -> None:
        """Cancel this strategy's own orders of the instrument, by id; flatten only if configured.

        Never the instrument-wide cancel-all: Bybit's ``/v5/order/cancel-all`` cancels EVERY order
        of the account on the symbol, a human's or another program's (``live.foreign_orders =
        "ignore"``) included. The open ones are cancelled in batches of ``STOP_CANCEL_BATCH``; an
        order still pending submit (or whose cancel may have overtaken it) is cancelled by itself
        once the venue acknowledges it (a stopped strategy gets no ``on_order_*`` calls, so a bus
        subscription watches them, at most ``STOP_CANCELS_MAX`` cancels per order).
        ``unresolved_orders()`` lists what is not known closed, for the caller's final check
        against the venue.
        """
        if self.instrument is None:
            return
        own = [o for o in self.cache.orders_open(instrument_id=self._iid, strategy_id=self.id)
               if not o.is_pending_cancel and not o.is_emulated]
        for i in range(0, len(own), STOP_CANCEL_BATCH):
            self.cancel_orders(own[i:i + STOP_CANCEL_BATCH], client_id=self._client_id)
        self._stop_watch = {o.client_order_id: 0 for o in self.unresolved_orders()}
        if self._stop_watch:
            self.msgbus.subscribe(topic=f"events.order.{self.id.value}", handler=self._on_order_event_after_stop)
        if self.config.close_positions_on_stop:
            self.close_all_positions(self._iid, reduce_only=True)
        self.unsubscribe_order_book_deltas(self._iid)
        self.unsubscribe_trade_ticks(self._iid)
        self.msgbus.unsubscribe(topic=RISK_TOPIC, handler=self._on_risk_constraint)
        self.msgbus.unsubscribe(topic="events.position.*", handler=self._on_position_event)
        # Events are not delivered to a stopped strategy: forget the slots now.
        if self._planner is not None:
            self._planner.clear()

    def unresolved_orders(self) -> list:
        """This strategy's orders on the instrument that are not known to be closed: open,
        pending submit, pending amend or pending cancel (from the cache; allocates)."""
        cache = self.cache
        iid, sid = self._iid, self.id
        return cache.orders_open(instrument_id=iid, strategy_id=sid) + [
            o for o in cache.orders_inflight(instrument_id=iid, strategy_id=sid) if not o.is_open
        ]

    def _on_order_event_after_stop(self, event) -> None:
        """After stop: cancel a watched order once the venue has acknowledged it (open and no
        cancel pending); forget it once closed."""
        watch = self._stop_watch
        n = watch.get(event.client_order_id)
        if n is None:
            return
        order = self.cache.order(event.client_order_id)
        if order is None or order.is_closed:
            del watch[event.client_order_id]
        elif order.is_open and not order.is_pending_cancel and n < STOP_CANCELS_MAX:
            watch[event.client_order_id] = n + 1
            self.counters["stop_cancels"] += 1
            self.cancel_order(order, client_id=self._client_id)
        if not watch:
            self._stop_watching()

    def _stop_watching(self) -> None:
        if self.id is not None:
            self.msgbus.unsubscribe(topic=f"events.order.{self.id.value}", handler=self._on_order_event_after_stop)
        self._stop_watch = {}

    def on_reset(self) -> None:
        """Forget all market, order and counter state (constraints are kept)."""
        self.instrument = None
        if self._stop_watch:
            self._stop_watching()
        self._reset_state()

    # -- External constraints (risk actor) ----------------------------------------------

    def set_quoting_constraints(self, allow_bid: bool, allow_ask: bool, spread_multiplier: float = 1.0) -> None:
        """Restrict the quoted sides and widen the half-spread, from outside the strategy.

        ``allow_bid`` / ``allow_ask`` False removes that side: its resting orders are
        cancelled immediately (ignoring ``min_time_in_book_ms``) and nothing is quoted
        there until allowed again. ``spread_multiplier`` (>= 1) multiplies the final
        half-spread (after the floors) from the next book update on. The strategy does
        not interpret why (reduce-only, halt, volatility regime...): callers decide.
        Cheap and idempotent, safe to call on every event.
        """
        if not _is_real(spread_multiplier) or math.isinf(spread_multiplier) or spread_multiplier < 1.0:
            raise ValueError(f"spread_multiplier must be a finite number >= 1.0, was {spread_multiplier!r}")
        allow = (bool(allow_bid), bool(allow_ask))
        self._spread_mult = float(spread_multiplier)
        for s in (_BID, _ASK):
            if self._allow[s] != allow[s]:
                self._allow[s] = allow[s]
                if not allow[s] and self.is_running and self._planner is not None:
                    self._apply(self._planner.pull(s, pl.RISK, self.clock.timestamp_ns()))

    def _on_risk_constraint(self, msg: RiskConstraint) -> None:
        """A risk guard's transition (topic ``mmbot.risk.constraints``): apply the most
        restrictive combination of every guard's latest constraint. Runs only on transitions."""
        if msg.instrument_id is None or msg.instrument_id == self._iid.value:
            self.set_quoting_constraints(*self._risk_board.update(msg))
            cap = self._risk_board.max_position_base()
            if cap != self._position_cap:
                self.set_position_cap(cap)

    def set_position_cap(self, max_position_base: float) -> None:
        """Cap |position| at ``max_position_base`` [base units] below ``max_position`` (inf: no cap),
        from outside the strategy (the allocator's budget: docs/portfolio.md). The planner's
        inventory limit becomes min(max_position, cap) in lots from the next book update: a side
        whose orders would pass it gets no new orders and its orders beyond the allowed levels are
        pulled, so a cap of 0 leaves only the reducing side (flat: neither). The skew still
        normalises by ``max_position``."""
        if not (_is_real(max_position_base) and max_position_base >= 0.0):
            raise ValueError(f"max_position_base must be a number >= 0, was {max_position_base!r}")
        self._position_cap = float(max_position_base)
        if self._planner is not None:
            self._planner.set_max_lots(self._max_lots())

    def _max_lots(self) -> int:
        """The planner's inventory limit [lots]: max_position, or the position cap when lower."""
        limit = min(self.config.max_position, self._position_cap)
        return math.floor(limit * self._inv_step + qm.TICK_EPS)

    @property
    def quoting_constraints(self) -> tuple[bool, bool, float]:
        """Current ``(allow_bid, allow_ask, spread_multiplier)``."""
        return self._allow[_BID], self._allow[_ASK], self._spread_mult

    # -- Read-only state ----------------------------------------------------------------

    @property
    def fair_price(self) -> float:
        """Last fair price (quote currency), NaN before the first usable book."""
        return self._fair

    @property
    def mid_price(self) -> float:
        """Last mid price (quote currency), NaN before the first usable book."""
        return self._mid

    @property
    def sigma_bps(self) -> float:
        """EWMA volatility of mid log returns in bps per sqrt(``vol_horizon_ms``)."""
        return self._sigma_bps

    @property
    def position_base(self) -> float:
        """Signed position of this strategy in base units (from position events)."""
        return self._position

    @property
    def last_half_spread_bps(self) -> float:
        """Half-spread used for the last quote update (bps, after floors and multiplier)."""
        return self._half_spread

    @property
    def last_shift_bps(self) -> float:
        """Inventory shift of the quote centre used for the last update (bps of fair)."""
        return self._shift

    @property
    def last_trade_price(self) -> float:
        """Price of the last trade tick (quote currency), NaN before the first trade."""
        return self._last_trade_px

    @property
    def warmed_up(self) -> bool:
        """Whether the volatility estimator has seen ``vol_warmup_ms`` of data."""
        return self._elapsed_ns >= self._warmup_ns

    def working_quotes(self) -> list[tuple[str, int, float, float, str]]:
        """Tracked quotes as ``(side, level, price, qty, state)`` (allocates; not for hot paths)."""
        out = []
        if self._planner is None:
            return out
        for s in (_BID, _ASK):
            for i, rec in enumerate(self._planner.slots[s]):
                if rec is not None:
                    order = self.cache.order(rec.key)
                    side = "BUY" if s == _BID else "SELL"
                    out.append((side, i, order.price.as_double(), order.quantity.as_double(), _STATE_NAMES[rec.state]))
        return out

    # -- Market data --------------------------------------------------------------------

    def on_order_book_deltas(self, deltas: OrderBookDeltas) -> None:
        """One exchange message applied to the cached book: requote once."""
        if not (deltas.flags & _F_LAST):
            return  # mid-message (DataEngine not buffering): book may be half-updated
        if deltas.ts_init < self._quote_from_ns:
            return  # a window's warm-up: the cache book is being built, the strategy starts later
        planner = self._planner
        if planner is None:
            return
        if planner.has_cancelling():
            self._retry_cancels(planner)
        book = self.cache.order_book(self._iid)
        if book is not None:
            self._on_book(book, deltas.ts_event, deltas.ts_init)

    def _retry_cancels(self, planner: pl.Planner) -> None:
        """Orders we cancelled that may still be working: forget the closed ones, mark whose
        cancel is still in flight (from the cache), and let the planner re-send the others."""
        cache = self.cache
        for s in (_BID, _ASK):
            for rec in list(planner.cancelling[s]):
                order = cache.order(rec.key)
                if order is None or order.is_closed:
                    planner.forget(rec)
                else:
                    rec.cancel_inflight = order.is_pending_cancel
        self._apply(planner.retry_cancels(self.clock.timestamp_ns()))

    def on_trade_tick(self, tick: TradeTick) -> None:
        """Trades only update state; quoting decisions are taken on book messages."""
        if tick.ts_init < self._quote_from_ns:
            return  # a window's warm-up
        self._last_trade_px = tick.price.as_double()
        self._trade_count += 1

    def _on_book(self, book: OrderBook, ts_event: int, ts_init: int) -> None:
        self.counters["batches"] += 1
        bp = book.best_bid_price()
        ap = book.best_ask_price()
        if bp is None or ap is None:
            self._book_unusable()
            return
        bid_px = bp.as_double()
        ask_px = ap.as_double()
        if bid_px >= ask_px:
            self._book_unusable()
            return
        bid_sz = book.best_bid_size().as_double()
        ask_sz = book.best_ask_size().as_double()

        # Volatility on mid log returns, exchange time.
        mid = 0.5 * (bid_px + ask_px)
        if self._last_ts >= 0:
            dt = ts_event - self._last_ts
            if dt < 0:
                dt = 0
            self._vol_s, self._vol_t = qm.ewma_vol_update(
                self._vol_s, self._vol_t, math.log(mid / self._mid) / qm.BPS, dt, self._halflife_ns,
            )
            self._elapsed_ns += dt
            self._sigma_bps = qm.vol_bps(self._vol_s, self._vol_t, self._horizon_ns)
            self._var_rate = qm.variance_rate_bps2_per_s(self._vol_s, self._vol_t)
        self._last_ts = ts_event
        self._mid = mid
        fair = qm.weighted_mid(bid_px, bid_sz, ask_px, ask_sz) if self._weighted_mid else mid
        self._fair = fair
        if self._elapsed_ns < self._warmup_ns:
            return
        inv = self._inv_tick
        # Decision time = the message's receive stamp (== the clock in a backtest; in live/shadow the
        # clock runs 1-4 ms later), so a replay of the recording takes the same decisions.
        self._quote(
            ts_init,
            fair,
            round(bid_px * inv),
            round(ask_px * inv),
            qm.book_imbalance(bid_sz, ask_sz),
        )

    def _book_unusable(self) -> None:
        self.counters["book_unusable"] += 1
        now = self.clock.timestamp_ns()
        for s in (_BID, _ASK):
            self._apply(self._planner.pull(s, pl.UNUSABLE, now))

    # -- Quoting ------------------------------------------------------------------------

    def _quote(self, now: int, fair: float, best_bid_t: int, best_ask_t: int, imbalance: float) -> None:
        c = self.config
        pos = self._position
        q = qm.normalised_inventory(pos, c.max_position)
        sigma_s = math.sqrt(self._var_rate)  # bps per sqrt(second)

        glft_skew = 0.0
        if self._glft_spread or self._skew_mode == 2:
            h_glft, glft_skew = qm.glft_half_spread_and_skew(
                c.risk_aversion, c.glft_kappa, c.glft_A, sigma_s, self._glft_delta, q,
            )
        if self._glft_spread:
            h = h_glft
            if h < c.min_half_spread_bps:
                h = c.min_half_spread_bps
            if h < self._fee_floor_bps:
                h = self._fee_floor_bps
        else:
            h = qm.half_spread_bps(c.min_half_spread_bps, c.k_vol, self._sigma_bps, self._fee_floor_bps)
        h *= self._spread_mult
        if self._skew_mode == 0:
            shift = qm.reservation_shift_bps(q, c.risk_aversion, self._var_rate, c.horizon_s)
        elif self._skew_mode == 1:
            shift = qm.linear_skew_bps(pos, c.skew_bps_per_unit)
        else:
            shift = -glft_skew
        self._half_spread = h
        self._shift = shift
        spacing = c.level_spacing_coef * h if self._spacing_coef_mode else c.level_spacing_bps
        bids, asks = qm.ladder_prices(fair, shift, h, spacing, self._levels, self._tick, best_bid_t, best_ask_t)

        # Hard limits (side restriction, inventory) and the soft imbalance guard are applied
        # by the planner, which returns the order actions.
        cutoff = c.imbalance_cutoff
        self._apply(self._planner.plan(
            now, fair, qm.position_lots(pos, self._inv_step), bids, asks, self._allow[_BID], self._allow[_ASK],
            imbalance < -cutoff, imbalance > cutoff,
        ))

    # -- Orders -------------------------------------------------------------------------

    def _apply(self, actions: list) -> None:
        """Carry out the planner's actions (the only place orders are sent).

        Sending can deliver events at once (a zero-latency backtest venue, a risk guard acting
        on a reject) that call back into the planner before the rest of the list is applied:
        iterate over a copy (the planner reuses its list) and skip actions whose order was
        pulled meanwhile."""
        if not actions:
            return
        counters = self.counters
        planner = self._planner
        for kind, rec, ticks, lots, reason in tuple(actions):
            if kind == _SUBMIT:
                if rec.state != pl.PENDING_SUBMIT or rec.key is not None:
                    continue  # pulled (and forgotten) before it was sent
                order = self.order_factory.limit(
                    self._iid,
                    _SIDES[rec.side],
                    # The level's size, or a smaller residual on the reducing side (planner).
                    self._qty_objs[rec.level] if lots == self._lots[rec.level] else self.instrument.make_qty(
                        lots * self._step),
                    self.instrument.make_price(ticks * self._tick),
                    TimeInForce.GTC,
                    post_only=True,
                )
                planner.bind(rec, order.client_order_id)
                counters["submitted"] += 1
                self.submit_order(order, client_id=self._client_id)
            elif kind == _AMEND:
                if rec.state != pl.PENDING_AMEND or rec.req_ticks != ticks:
                    continue  # pulled or re-planned meanwhile
                order = self.cache.order(rec.key)
                price = self.instrument.make_price(ticks * self._tick)
                if order is not None and order.price == price:
                    # The planner's record lagged the order (an update learned late): it already
                    # rests there. Nautilus refuses an amend to the same values and no event would
                    # ever answer it, leaving the slot PENDING_AMEND: settle it here instead.
                    planner.on_updated(rec.key, ticks, rec.lots, order.ts_last)
                    counters["amend_noop"] += 1
                    continue
                counters["amended"] += 1
                self.modify_order(order, price=price, client_id=self._client_id)
            else:
                if reason == pl.RETRY:
                    counters["cancel_retries"] += 1
                else:
                    counters["canceled"] += 1
                    if reason == pl.RISK:
                        counters["risk_pulls"] += 1
                    elif reason == pl.STALE:
                        counters["stale_pulls"] += 1
                self._send_cancel(rec)

    def _send_cancel(self, rec: pl.OrderRec) -> None:
        if rec.key is None:  # pulled before it was sent: it cannot fill
            self._planner.forget(rec)
            return
        order = self.cache.order(rec.key)
        if order is None or order.is_closed:
            self._planner.forget(rec)  # nothing left to cancel
        elif not order.is_pending_cancel:
            self.cancel_order(order, client_id=self._client_id)

    # -- Order events -------------------------------------------------------------------

    def on_order_accepted(self, event: OrderAccepted) -> None:
        if self._planner is not None:
            self._planner.on_accepted(event.client_order_id, event.ts_event)  # the venue's ack time

    def on_order_updated(self, event: OrderUpdated) -> None:
        if self._planner is not None:
            self._planner.on_updated(
                event.client_order_id,
                round(event.price.as_double() * self._inv_tick),
                round(event.quantity.as_double() * self._inv_step),
                event.ts_event,
            )

    def on_order_modify_rejected(self, event: OrderModifyRejected) -> None:
        """The order rests at its old price; "order not exists" (Bybit 110001, e.g. a fill we
        missed): the planner pulls it instead of re-amending on every message, and the venue is
        asked for its state."""
        self.counters["modify_rejects"] += 1
        planner = self._planner
        if planner is None:
            return
        order = self.cache.order(event.client_order_id)
        closed = order is None or order.is_closed
        reason = str(event.reason)
        self._apply(planner.on_modify_rejected(event.client_order_id, closed, reason, self.clock.timestamp_ns()))
        if not closed and pl.is_unknown_order(reason):
            self._query(order)

    def on_order_rejected(self, event: OrderRejected) -> None:
        self.counters["rejects"] += 1
        if event.due_post_only:
            self.counters["post_only_rejects"] += 1
        self._closed(event.client_order_id)

    def on_order_denied(self, event: OrderDenied) -> None:
        # Pre-trade risk check refused the order (e.g. RiskEngine submit rate): free the slot.
        self.counters["denied"] += 1
        self._closed(event.client_order_id)

    def on_order_canceled(self, event: OrderCanceled) -> None:
        self._closed(event.client_order_id)

    def on_order_expired(self, event: OrderExpired) -> None:
        self._closed(event.client_order_id)

    def _closed(self, client_order_id: ClientOrderId) -> None:
        if self._planner is not None:
            self._planner.on_closed(client_order_id)

    def on_order_cancel_rejected(self, event: OrderCancelRejected) -> None:
        """Never re-send from here (a reject storm opens the circuit breaker): the planner
        retries on its backoff schedule from the next book message. "Order not exists" (Bybit
        110001): ask the venue for the order's state -- it was filled, cancelled, or has not
        arrived -- and Nautilus' reconciliation brings the cache up to date."""
        self.counters["cancel_rejects"] += 1
        planner = self._planner
        if planner is None:
            return
        order = self.cache.order(event.client_order_id)
        if order is None or order.is_closed:
            planner.on_closed(event.client_order_id)
        elif planner.on_cancel_rejected(event.client_order_id, str(event.reason)):
            self._query(order)

    def _query(self, order) -> None:
        """Reconcile one order from the venue (``query_order``). Backtest execution clients do not
        implement it (their state is the cache's by construction): remember that and rely on
        the cancel retries alone."""
        if not self._query_supported:
            return
        self.counters["cancel_queries"] += 1
        try:
            self.query_order(order, client_id=self._client_id)
        except NotImplementedError:
            self._query_supported = False

    def on_order_filled(self, event: OrderFilled) -> None:
        if self._planner is not None:
            order = self.cache.order(event.client_order_id)
            self._planner.on_filled(
                event.client_order_id,
                round(event.last_qty.as_double() * self._inv_step),
                order is None or order.is_closed,
            )

    # -- Position events ----------------------------------------------------------------

    def _account_position(self) -> float:
        """[base units] Net position on the instrument over every open position in the cache.

        Not only this strategy's: a position inherited from an earlier (killed) run, or built by
        a hand-placed order under ``foreign_orders = "ignore"``, is reconciled by Nautilus as a
        position of strategy EXTERNAL (NETTING keeps one position per instrument and strategy),
        while Bybit's one-way account holds ONE position per symbol. The skew and the worst-case
        inventory limit must see that one (before: a restart with 0.001 inherited quoted as if
        flat, and could add max_position on top). In a backtest this strategy's is the only one."""
        return sum(p.signed_qty for p in self.cache.positions_open(instrument_id=self._iid))

    def _on_position_event(self, event) -> None:
        """Any strategy's PositionOpened/Changed/Closed (topic ``events.position.*``): the cache is
        updated before the event is published."""
        if event.instrument_id == self._iid:
            self._position = self._account_position()
