"""Position and exposure guard.

Limits on |position| [base units] and |notional| [quote, position · mark] for the guard's
instrument, and on the total |notional| over all instruments. 0 disables a limit.

- beyond any soft limit: ``REDUCE_ONLY``, only the reducing side may be quoted (long: asks);
- beyond any hard limit: ``REDUCING``, additionally cancels the increasing side's open orders
  and asks for the RiskEngine trading state ``REDUCING``;
- back within every soft limit: ``ACTIVE``.

Position events update it at once; a timer (``check_interval_ms``) re-marks the notional when
only the price moves. The mark is the cached book's mid (last fill price without a book;
a position open at the start: its average open price).
"""

from __future__ import annotations

import math

import pandas as pd
from nautilus_trader.model.events import PositionClosed
from nautilus_trader.model.identifiers import InstrumentId

from strategies.risk.base import (
    ACTIVE, MAX_BASE, MAX_INTERVAL_MS, MAX_QUOTE, REDUCING, RiskGuard, RiskGuardConfig, check_number, check_order,
)

REDUCE_ONLY = "REDUCE_ONLY"


def exposure_level(values: dict[str, float], limits: dict[str, tuple[float, float]]) -> tuple[int, str]:
    """(0 within, 1 beyond soft, 2 beyond hard) and the first key beyond its limit.

    ``values[key]`` and ``limits[key] = (soft, hard)`` in the same unit; a limit of 0 is off;
    "beyond" means strictly greater.
    """
    level, which = 0, ""
    for key, v in values.items():
        soft, hard = limits[key]
        if hard > 0 and v > hard:
            return 2, key
        if soft > 0 and v > soft and level == 0:
            level, which = 1, key
    return level, which


class PositionGuardConfig(RiskGuardConfig, frozen=True):
    """Limits: ``*_position`` [base units], ``*_notional`` [quote currency]; 0 = off.
    ``check_interval_ms`` [ms]: re-mark period."""

    soft_position: float = 0.0
    hard_position: float = 0.0
    soft_notional: float = 0.0
    hard_notional: float = 0.0
    soft_total_notional: float = 0.0
    hard_total_notional: float = 0.0
    check_interval_ms: int = 1000

    def __post_init__(self) -> None:
        for key in ("soft_position", "hard_position", "soft_notional", "hard_notional",
                    "soft_total_notional", "hard_total_notional"):
            check_number(self, key, high=MAX_BASE if key.endswith("_position") else MAX_QUOTE)
        check_number(self, "check_interval_ms", strict=True, high=MAX_INTERVAL_MS)
        check_order(self, "soft_position", "hard_position")
        check_order(self, "soft_notional", "hard_notional")
        check_order(self, "soft_total_notional", "hard_total_notional")


class PositionGuard(RiskGuard):
    GUARD = "position"

    def __init__(self, config: PositionGuardConfig) -> None:
        super().__init__(config)
        c = config
        self._limits = {
            "position": (c.soft_position, c.hard_position),
            "notional": (c.soft_notional, c.hard_notional),
            "total_notional": (c.soft_total_notional, c.hard_total_notional),
        }
        self._positions: dict[tuple[str, str], float] = {}  # (instrument, strategy) -> signed qty
        self._last_px: dict[str, float] = {}
        self._ids: dict[str, InstrumentId] = {}
        self.max_abs_position = 0.0
        self.max_abs_notional = 0.0

    def on_start(self) -> None:
        super().on_start()
        for pos in self.cache.positions_open():
            self._positions[(pos.instrument_id.value, pos.strategy_id.value)] = pos.signed_qty
            # the fallback mark until a book or a fill (a Position keeps no last price; without one: 0 USDT)
            self._last_px[pos.instrument_id.value] = pos.avg_px_open
        self.msgbus.subscribe(topic="events.position.*", handler=self._on_position)
        self.clock.set_timer(f"{self.id}-check", pd.Timedelta(milliseconds=self.config.check_interval_ms),
                             callback=self.on_loop(lambda e: self.evaluate()))

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.position.*", handler=self._on_position)
        super().on_stop()

    def _on_position(self, event) -> None:
        key = (event.instrument_id.value, event.strategy_id.value)
        self._positions[key] = 0.0 if isinstance(event, PositionClosed) else event.signed_qty
        self._last_px[key[0]] = event.last_px.as_double()
        self.evaluate()

    def net_position(self, instrument: str) -> float:
        return sum(q for (iid, _), q in self._positions.items() if iid == instrument)

    def _mark(self, instrument: str) -> float:
        iid = self._ids.get(instrument)
        if iid is None:
            iid = self._ids[instrument] = InstrumentId.from_str(instrument)
        px = self.mark_price(iid)
        return px if math.isfinite(px) else self._last_px.get(instrument, 0.0)

    def evaluate(self) -> None:
        """Compare the exposure with the limits and move state; O(#positions)."""
        if self._iid_str is None:
            return
        nets: dict[str, float] = {}
        for (iid, _), q in self._positions.items():
            nets[iid] = nets.get(iid, 0.0) + q
        pos = nets.get(self._iid_str, 0.0)
        notional = abs(pos) * self._mark(self._iid_str) if pos else 0.0
        total = notional + sum(abs(q) * self._mark(iid) for iid, q in nets.items() if q and iid != self._iid_str)
        self.max_abs_position = max(self.max_abs_position, abs(pos))
        self.max_abs_notional = max(self.max_abs_notional, notional)
        values = {"position": abs(pos), "notional": notional, "total_notional": total}
        level, which = exposure_level(values, self._limits)
        numbers = {"position_base": pos, "notional_quote": notional, "total_notional_quote": total,
                   "limit": self._limits[which][level - 1] if level else 0.0}
        # Only the reducing side may trade; flat (others over the total): neither side.
        allow_bid, allow_ask = pos < 0, pos > 0
        if level == 2:
            self.transition(REDUCING, f"{which} beyond hard limit {self._limits[which][1]:g}", numbers,
                            allow_bid=allow_bid, allow_ask=allow_ask, trading_state=REDUCING,
                            cancel="all" if pos == 0 else ("bid" if pos > 0 else "ask"))
        elif level == 1:
            self.transition(REDUCE_ONLY, f"{which} beyond soft limit {self._limits[which][0]:g}", numbers,
                            allow_bid=allow_bid, allow_ask=allow_ask)
        else:
            self.transition(ACTIVE, "exposure within soft limits", numbers)

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "max_abs_position_base": self.max_abs_position,
                "max_abs_notional_quote": self.max_abs_notional}
