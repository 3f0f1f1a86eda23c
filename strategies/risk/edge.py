"""Edge / adverse-selection guard: rolling markout of our own fills.

Markout of a fill at horizon h [bps] = side · (mid(t + h) − fill price) / fill price · 1e4,
side +1 for a buy, −1 for a sell; positive = the fill was good. ``t`` is when the guard saw
the fill (engine clock), ``mid(t + h)`` the cached book's mid when the alert at ``t + h`` fires.
The window keeps the markouts of fills made in the last ``window_s``; its statistic is the
plain mean over fills.

States (``EdgeStateMachine``):

- ``ACTIVE`` → ``WIDENED`` when ≥ ``min_fills`` markouts in the window average below
  ``min_markout_bps``: the half-spread is multiplied by ``widen_factor``; the window restarts
  so the wider quotes are judged on their own fills;
- ``WIDENED`` → ``PAUSED`` when the widened quotes are again bad (same test): no quotes on
  either side (open orders cancelled) for ``cooldown_s``, then ``ACTIVE`` with an empty window;
- ``WIDENED`` → ``ACTIVE`` when the widened quotes are good (same count, mean ≥ threshold), or
  after ``widen_s`` without enough fills to judge.
"""

from __future__ import annotations

import math
from collections import deque

from nautilus_trader.common.events import TimeEvent
from nautilus_trader.model.enums import OrderSide

from strategies.risk.base import (
    ACTIVE, MAX_COUNT, MAX_INTERVAL_MS, MAX_WINDOW_S, NS_PER_MS, NS_PER_S, RiskGuard, RiskGuardConfig, check_number,
)

WIDENED, PAUSED = "WIDENED", "PAUSED"


def markout_bps(is_buy: bool, fill_px: float, mid_later: float) -> float:
    """[bps] side · (mid_later − fill_px) / fill_px · 1e4; prices in quote per base."""
    sign = 1.0 if is_buy else -1.0
    return sign * (mid_later - fill_px) / fill_px * 1e4


class MarkoutWindow:
    """Markouts [bps] keyed by fill time [ns]; statistics over fills in the last ``window_ns``."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._q: deque[tuple[int, float]] = deque()
        self._sum = 0.0

    def add(self, fill_ts_ns: int, bps: float) -> None:
        self._q.append((fill_ts_ns, bps))
        self._sum += bps

    def stats(self, now_ns: int) -> tuple[int, float]:
        """(count, mean bps) of fills with ``now_ns − ts < window_ns`` (mean NaN when empty)."""
        q, cutoff = self._q, now_ns - self.window_ns
        while q and q[0][0] <= cutoff:
            self._sum -= q.popleft()[1]
        n = len(q)
        return n, (self._sum / n if n else math.nan)

    def clear(self) -> None:
        self._q.clear()
        self._sum = 0.0


class EdgeStateMachine:
    """Pure transitions of the edge guard; ``on_stats`` returns the new state or None."""

    def __init__(self, min_fills: int, min_markout_bps: float) -> None:
        self.min_fills = min_fills
        self.min_markout_bps = min_markout_bps
        self.state = ACTIVE

    def verdict(self, n: int, mean_bps: float) -> str:
        """"bad", "good" or "unknown" (fewer than ``min_fills``)."""
        if n < self.min_fills:
            return "unknown"
        return "bad" if mean_bps < self.min_markout_bps else "good"

    def on_stats(self, n: int, mean_bps: float) -> str | None:
        v = self.verdict(n, mean_bps)
        new = None
        if self.state == ACTIVE and v == "bad":
            new = WIDENED
        elif self.state == WIDENED and v == "bad":
            new = PAUSED
        elif self.state == WIDENED and v == "good":
            new = ACTIVE
        if new is not None:
            self.state = new
        return new

    def on_timeout(self, expected: str) -> str | None:
        """End of ``widen_s`` (expected WIDENED) or of the cool-down (expected PAUSED)."""
        if self.state == expected:
            self.state = ACTIVE
            return ACTIVE
        return None


class EdgeGuardConfig(RiskGuardConfig, frozen=True):
    """``horizon_ms`` [ms], ``window_s`` [s], ``min_fills``, ``min_markout_bps`` [bps, any sign],
    ``widen_factor`` [>= 1], ``widen_s`` [s], ``cooldown_s`` [s]."""

    horizon_ms: int = 1000
    window_s: float = 300.0
    min_fills: int = 20
    min_markout_bps: float = -5.0
    widen_factor: float = 2.0
    widen_s: float = 120.0
    cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        check_number(self, "horizon_ms", strict=True, high=MAX_INTERVAL_MS)
        check_number(self, "window_s", strict=True, high=MAX_WINDOW_S)
        check_number(self, "min_fills", low=1, high=MAX_COUNT)
        check_number(self, "min_markout_bps", low=-10_000.0, high=10_000.0)
        check_number(self, "widen_factor", low=1.0, high=1000.0)
        check_number(self, "widen_s", strict=True, high=MAX_WINDOW_S)
        check_number(self, "cooldown_s", strict=True, high=MAX_WINDOW_S)


class EdgeGuard(RiskGuard):
    GUARD = "edge"

    def __init__(self, config: EdgeGuardConfig) -> None:
        super().__init__(config)
        c = config
        self._horizon_ns = c.horizon_ms * NS_PER_MS
        self.window = MarkoutWindow(int(c.window_s * NS_PER_S))
        self.machine = EdgeStateMachine(c.min_fills, c.min_markout_bps)
        self._pending: deque[tuple[int, int, bool, float]] = deque()  # (due_ns, fill_ns, is_buy, px)
        self._n_alerts = 0
        self._gen = 0  # episode number: a timeout of an earlier episode does nothing
        self.markouts = 0
        self.markouts_no_mid = 0
        self.last_mean_bps = math.nan

    def on_start(self) -> None:
        super().on_start()
        self._mk_prefix = f"{self.id}-mk-"
        self._due_on_loop = self.on_loop(self._on_due)  # live: the default handler runs on the timer thread too
        self.machine.state = ACTIVE
        self._topic = f"events.fills.{self._iid_str}" if self._iid_str else "events.fills.*"
        self.msgbus.subscribe(topic=self._topic, handler=self._on_fill)

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic=self._topic, handler=self._on_fill)
        super().on_stop()

    def _on_fill(self, event) -> None:
        if not self.is_own(event.client_order_id):
            return  # another program's fill on the shared account: not this bot's edge
        now = self.clock.timestamp_ns()
        due = now + self._horizon_ns
        self._pending.append((due, now, event.order_side == OrderSide.BUY, event.last_px.as_double()))
        self._n_alerts += 1
        # No callback: the alert goes to the actor's default handler (on_event below). Nautilus 1.231's
        # LiveClock keeps every callback it was given, fired or not (one closure per fill: a live
        # session's memory grew with its fills; tests/test_live_memory.py); the default handler is
        # registered once.
        self.clock.set_time_alert_ns(f"{self._mk_prefix}{self._n_alerts}", due)

    def on_event(self, event) -> None:
        if isinstance(event, TimeEvent) and event.name.startswith(self._mk_prefix):
            self._due_on_loop(event)

    def _on_due(self, _event) -> None:
        now = self.clock.timestamp_ns()
        q = self._pending
        if not q or q[0][0] > now:
            return
        mid = self.mark_price(self._iid) if self._iid is not None else math.nan
        while q and q[0][0] <= now:
            _due, fill_ns, is_buy, px = q.popleft()
            if math.isfinite(mid):
                self.window.add(fill_ns, markout_bps(is_buy, px, mid))
                self.markouts += 1
            else:
                self.markouts_no_mid += 1
        n, mean = self.window.stats(now)
        self.last_mean_bps = mean
        new = self.machine.on_stats(n, mean)
        if new is not None:
            self._enter(new, {"markout_mean_bps": mean, "fills_in_window": n,
                              "min_markout_bps": self.config.min_markout_bps})

    def _enter(self, new: str, numbers: dict, reason: str | None = None) -> None:
        c = self.config
        now = self.clock.timestamp_ns()
        self._gen += 1
        gen = self._gen
        if new == WIDENED:
            self.window.clear()
            self.transition(WIDENED, reason or f"markout below {c.min_markout_bps:g} bps: widen x{c.widen_factor:g}",
                            numbers, spread_multiplier=c.widen_factor)
            self.clock.set_time_alert_ns(f"{self.id}-widen-{now}", now + int(c.widen_s * NS_PER_S),
                                         callback=self.on_loop(lambda e: self._timeout(WIDENED, gen)))
        elif new == PAUSED:
            self.window.clear()
            self.transition(PAUSED, reason or f"markout still below {c.min_markout_bps:g} bps when widened: "
                            f"pause {c.cooldown_s:g} s", numbers, allow_bid=False, allow_ask=False, cancel="all")
            self.clock.set_time_alert_ns(f"{self.id}-cool-{now}", now + int(c.cooldown_s * NS_PER_S),
                                         callback=self.on_loop(lambda e: self._timeout(PAUSED, gen)))
        else:
            self.transition(ACTIVE, reason or "markout back above the threshold", numbers)

    def _timeout(self, expected: str, gen: int) -> None:
        if gen == self._gen and self.machine.on_timeout(expected) is not None:
            self.window.clear()
            why = "cool-down over" if expected == PAUSED else "widen period over without adverse evidence"
            self._enter(ACTIVE, {}, why)

    def manual_reset(self, reason: str = "manual reset") -> None:
        self._gen += 1
        self.machine.state = ACTIVE
        self.window.clear()
        self.transition(ACTIVE, reason)

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "markouts": self.markouts, "markouts_without_mid": self.markouts_no_mid}
