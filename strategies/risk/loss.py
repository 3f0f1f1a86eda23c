"""Intraday loss and turnover caps.

From the fills on ``events.fills.*`` the guard keeps cash and position per instrument
(``PnlLedger``). PnL since the UTC day start = (cash + position · mark) now minus the same at
the day start [quote currency, realised + unrealised, net of fees]; the mark is the cached
book's mid. It is checked on every fill and every ``check_interval_ms``.

- PnL today < ``-daily_loss_stop``, or turnover today (Σ price · qty of fills) >
  ``daily_turnover_cap``: cancel all orders, ``HALTED`` (RiskEngine too);
- at every UTC midnight the day's figures restart from zero; the guard then returns to
  ``ACTIVE`` if ``reset_at_utc_midnight`` (otherwise only ``manual_reset`` resumes).
"""

from __future__ import annotations

import math

import pandas as pd
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId

from strategies.risk.base import (
    ACTIVE,
    HALTED,
    PnlLedger,
    RiskGuard,
    RiskGuardConfig,
    MAX_INTERVAL_MS,
    MAX_QUOTE,
    check_number,
    next_utc_midnight_ns,
)


class PnlGuard(RiskGuard):
    """A guard fed by fills, with a ``PnlLedger``, a check timer and the UTC day boundary."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.ledger = PnlLedger()
        self._iids: dict[str, InstrumentId] = {}
        self.fills = 0

    def on_start(self) -> None:
        super().on_start()
        self.msgbus.subscribe(topic="events.fills.*", handler=self._on_fill)
        self.clock.set_timer(f"{self.id}-check", pd.Timedelta(milliseconds=self.config.check_interval_ms),
                             callback=self.on_loop(lambda e: self.evaluate()))
        self._arm_day()

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.fills.*", handler=self._on_fill)
        super().on_stop()

    def _arm_day(self) -> None:
        at = next_utc_midnight_ns(self.clock.timestamp_ns())
        self.clock.set_time_alert_ns(f"{self.id}-day-{at}", at, callback=self.on_loop(lambda e: self._day_boundary()))

    def _day_boundary(self) -> None:
        self.new_day()
        self._arm_day()

    def _on_fill(self, event) -> None:
        # Every fill on the guard's instrument (every instrument: a guard without one), ours or not: the guard judges the account's position, the
        # one the strategy trades and skews (its inventory is the account's). Filtering by our ids
        # hid real losses (a liquidation or ADL fill carries a venue-made id) and judged a position
        # the account did not have (hostile review 22). On a shared account another program's
        # fills therefore count too: the conservative direction.
        iid = event.instrument_id
        if self._iid is not None and iid != self._iid:
            return  # another instrument's fill (a portfolio node): its own guards judge it
        key = iid.value
        if key not in self._iids:
            self._iids[key] = iid
        self.ledger.on_fill(key, event.order_side == OrderSide.BUY, event.last_px.as_double(),
                            event.last_qty.as_double(), event.commission.as_double())
        self.fills += 1
        self.evaluate()

    def pnl_now(self) -> float:
        """[quote] Total PnL of the fills so far at current marks."""
        marks = {k: self.mark_price(iid) for k, iid in self._iids.items()}
        return self.ledger.pnl(marks)

    def new_day(self) -> None:  # pragma: no cover - overridden
        pass

    def evaluate(self) -> None:  # pragma: no cover - overridden
        pass


class LossGuardConfig(RiskGuardConfig, frozen=True):
    """``daily_loss_stop`` [quote, > 0 = a loss of that size stops; 0 = off],
    ``daily_turnover_cap`` [quote; 0 = off], ``check_interval_ms`` [ms],
    ``reset_at_utc_midnight``: resume at the next UTC day."""

    daily_loss_stop: float = 0.0
    daily_turnover_cap: float = 0.0
    check_interval_ms: int = 1000
    reset_at_utc_midnight: bool = True

    def __post_init__(self) -> None:
        check_number(self, "daily_loss_stop", high=MAX_QUOTE)
        check_number(self, "daily_turnover_cap", high=MAX_QUOTE)
        check_number(self, "check_interval_ms", strict=True, high=MAX_INTERVAL_MS)


def loss_breach(pnl_today: float, turnover_today: float, loss_stop: float, turnover_cap: float) -> str:
    """"daily_loss", "daily_turnover" or "" (no breach). Amounts in quote currency; 0 = off."""
    if loss_stop > 0 and pnl_today < -loss_stop:
        return "daily_loss"
    if turnover_cap > 0 and turnover_today > turnover_cap:
        return "daily_turnover"
    return ""


class LossGuard(PnlGuard):
    GUARD = "loss"

    def __init__(self, config: LossGuardConfig) -> None:
        super().__init__(config)
        self._day_pnl0 = 0.0
        self._day_turnover0 = 0.0
        self.worst_pnl_today = 0.0
        self.max_turnover_today = 0.0

    def day_figures(self) -> tuple[float, float]:
        """(PnL today, turnover today) [quote]."""
        return self.pnl_now() - self._day_pnl0, self.ledger.turnover - self._day_turnover0

    def evaluate(self) -> None:
        if not self._iids:
            return
        pnl, turnover = self.day_figures()
        self.worst_pnl_today = min(self.worst_pnl_today, pnl)
        self.max_turnover_today = max(self.max_turnover_today, turnover)
        if self.guard_state == HALTED:
            return
        c = self.config
        which = loss_breach(pnl, turnover, c.daily_loss_stop, c.daily_turnover_cap)
        if which:
            limit = c.daily_loss_stop if which == "daily_loss" else c.daily_turnover_cap
            self.transition(HALTED, f"{which} beyond {limit:g}",
                            {"pnl_today_quote": pnl, "turnover_today_quote": turnover, "limit": limit},
                            allow_bid=False, allow_ask=False, trading_state=HALTED, cancel="all")

    def _restart_day(self) -> None:
        pnl = self.pnl_now() if self._iids else 0.0
        self._day_pnl0 = pnl if math.isfinite(pnl) else self._day_pnl0
        self._day_turnover0 = self.ledger.turnover

    def new_day(self) -> None:
        self._restart_day()
        if self.config.reset_at_utc_midnight:
            self.transition(ACTIVE, "new UTC day")

    def manual_reset(self, reason: str = "manual reset") -> None:
        self._restart_day()
        self.transition(ACTIVE, reason)

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "fills": self.fills, "worst_pnl_today_quote": self.worst_pnl_today,
                "max_turnover_today_quote": self.max_turnover_today}
