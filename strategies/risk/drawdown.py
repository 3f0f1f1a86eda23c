"""Drawdown from the high-water mark of equity.

Equity here is the PnL of the fills since the guard started (``PnlLedger``: cash + position ·
mark, net of fees) [quote currency]; the high-water mark (HWM) is its running maximum, starting
at 0. Checked on every fill and every ``check_interval_ms``.

- ``HWM − equity > max_drawdown``: cancel all orders, ``HALTED`` (RiskEngine too);
- at the next UTC midnight (``reset_at_utc_midnight``) or on ``manual_reset``: the HWM is
  rebased to the current equity and the guard returns to ``ACTIVE``.
"""

from __future__ import annotations

from strategies.risk.base import ACTIVE, HALTED, MAX_INTERVAL_MS, MAX_QUOTE, RiskGuardConfig, check_number
from strategies.risk.loss import PnlGuard


class DrawdownTracker:
    """High-water mark and drawdown of an equity series [quote currency]."""

    def __init__(self, hwm: float = 0.0) -> None:
        self.hwm = hwm
        self.max_drawdown = 0.0

    def update(self, equity: float) -> float:
        """Feed the current equity; returns the drawdown ``hwm - equity`` (>= 0)."""
        if equity > self.hwm:
            self.hwm = equity
        dd = self.hwm - equity
        if dd > self.max_drawdown:
            self.max_drawdown = dd
        return dd

    def rebase(self, equity: float) -> None:
        self.hwm = equity


class DrawdownGuardConfig(RiskGuardConfig, frozen=True):
    """``max_drawdown`` [quote, > 0], ``check_interval_ms`` [ms], ``reset_at_utc_midnight``."""

    max_drawdown: float = 1000.0
    check_interval_ms: int = 1000
    reset_at_utc_midnight: bool = True

    def __post_init__(self) -> None:
        check_number(self, "max_drawdown", strict=True, high=MAX_QUOTE)
        check_number(self, "check_interval_ms", strict=True, high=MAX_INTERVAL_MS)


class DrawdownGuard(PnlGuard):
    GUARD = "drawdown"

    def __init__(self, config: DrawdownGuardConfig) -> None:
        super().__init__(config)
        self.tracker = DrawdownTracker()

    def evaluate(self) -> None:
        if not self._iids:
            return
        equity = self.pnl_now()
        dd = self.tracker.update(equity)
        if self.guard_state != HALTED and dd > self.config.max_drawdown:
            self.transition(HALTED, f"drawdown beyond {self.config.max_drawdown:g}",
                            {"drawdown_quote": dd, "hwm_quote": self.tracker.hwm, "equity_quote": equity,
                             "limit": self.config.max_drawdown},
                            allow_bid=False, allow_ask=False, trading_state=HALTED, cancel="all")

    def _rebase(self) -> None:
        self.tracker.rebase(self.pnl_now() if self._iids else 0.0)

    def new_day(self) -> None:
        if self.config.reset_at_utc_midnight and self.guard_state == HALTED:
            self._rebase()
            self.transition(ACTIVE, "new UTC day")

    def manual_reset(self, reason: str = "manual reset") -> None:
        self._rebase()
        self.transition(ACTIVE, reason)

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "fills": self.fills, "max_drawdown_quote": self.tracker.max_drawdown,
                "hwm_quote": self.tracker.hwm}
