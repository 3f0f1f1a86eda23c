"""Circuit breaker on venue errors.

Order events on ``events.order.*`` are classified (``classify_error``):

- ``rate_limit``: a reject / modify-reject / cancel-reject whose reason looks like a rate limit
  (Bybit retCode 10006, HTTP 403 or 429, "rate limit", "too many");
- ``reject``: any other ``OrderRejected`` (post-only rejects only if ``count_post_only``);
- ``order_error``: any other ``OrderModifyRejected`` / ``OrderCancelRejected``, and
  ``OrderDenied`` (Nautilus' pre-trade checks) if ``count_denied``.

States (``BreakerStateMachine``), counts over the last ``window_s``:

- ``CLOSED`` → ``OPEN`` when rejects > ``max_rejects``, rate limits > ``max_rate_limits`` or
  all counted errors > ``max_errors``: no new orders (both sides blocked, RiskEngine
  ``HALTED``, which still lets cancels through) and the open orders are cancelled;
- ``OPEN`` → ``HALF_OPEN`` after ``cooldown_s``: quoting is allowed again and the next orders
  are probes;
- ``HALF_OPEN`` → ``CLOSED`` after ``probe_orders`` orders are accepted without a counted
  error; any counted error in ``HALF_OPEN`` → ``OPEN`` again (new cool-down).
"""

from __future__ import annotations

import re

from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCancelRejected,
    OrderDenied,
    OrderModifyRejected,
    OrderRejected,
)

from strategies.risk.base import (
    ACTIVE, HALTED, MAX_COUNT, MAX_WINDOW_S, NS_PER_S, RiskGuard, RiskGuardConfig, SlidingCount, check_number,
)

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
_RATE_LIMIT = re.compile(r"10006|\b429\b|\b403\b|rate.?limit|too many", re.IGNORECASE)


def classify_error(kind: str, reason: str, due_post_only: bool = False, count_post_only: bool = False,
                   count_denied: bool = False) -> str | None:
    """Error class of an order event ``kind`` ("rejected", "modify_rejected", "cancel_rejected",
    "denied"): "rate_limit", "reject", "order_error" or None (not counted)."""
    if kind == "denied":
        return "order_error" if count_denied else None
    if _RATE_LIMIT.search(reason or ""):
        return "rate_limit"
    if kind == "rejected":
        return "reject" if (count_post_only or not due_post_only) else None
    return "order_error"


class BreakerStateMachine:
    """Pure breaker: thresholds are the largest counts allowed in ``window_ns`` [ns]."""

    def __init__(self, window_ns: int, max_rejects: int, max_rate_limits: int, max_errors: int,
                 probe_orders: int) -> None:
        self.state = CLOSED
        self.limits = {"reject": max_rejects, "rate_limit": max_rate_limits}
        self.max_errors = max_errors
        self.probe_orders = probe_orders
        self.counts = {k: SlidingCount(window_ns) for k in ("reject", "rate_limit", "order_error")}
        self.probes_ok = 0

    def numbers(self, now_ns: int) -> dict[str, float]:
        c = {k: v.count(now_ns) for k, v in self.counts.items()}
        return {"rejects": c["reject"], "rate_limits": c["rate_limit"], "order_errors": c["order_error"],
                "errors": sum(c.values())}

    def on_error(self, now_ns: int, kind: str) -> str | None:
        self.counts[kind].add(now_ns)
        if self.state == HALF_OPEN:
            self.state = OPEN
            return OPEN
        if self.state == CLOSED:
            n = self.numbers(now_ns)
            if (n["rejects"] > self.limits["reject"] or n["rate_limits"] > self.limits["rate_limit"]
                    or n["errors"] > self.max_errors):
                self.state = OPEN
                return OPEN
        return None

    def on_success(self) -> str | None:
        if self.state == HALF_OPEN:
            self.probes_ok += 1
            if self.probes_ok >= self.probe_orders:
                self.state = CLOSED
                for c in self.counts.values():
                    c.clear()
                return CLOSED
        return None

    def on_cooldown(self) -> str | None:
        if self.state == OPEN:
            self.state = HALF_OPEN
            self.probes_ok = 0
            return HALF_OPEN
        return None


class CircuitBreakerConfig(RiskGuardConfig, frozen=True):
    """Largest counts allowed over ``window_s`` [s]: ``max_rejects``, ``max_rate_limits``,
    ``max_errors`` (all kinds); ``cooldown_s`` [s]; ``probe_orders`` accepted to close;
    ``count_post_only`` / ``count_denied``: also count those."""

    window_s: float = 60.0
    max_rejects: int = 20
    max_rate_limits: int = 0
    max_errors: int = 50
    cooldown_s: float = 30.0
    probe_orders: int = 2
    count_post_only: bool = False
    count_denied: bool = False

    def __post_init__(self) -> None:
        check_number(self, "window_s", strict=True, high=MAX_WINDOW_S)
        check_number(self, "max_rejects", high=MAX_COUNT)
        check_number(self, "max_rate_limits", high=MAX_COUNT)
        check_number(self, "max_errors", high=MAX_COUNT)
        check_number(self, "cooldown_s", strict=True, high=MAX_WINDOW_S)
        check_number(self, "probe_orders", low=1, high=1_000_000)


_KINDS = {OrderRejected: "rejected", OrderModifyRejected: "modify_rejected",
          OrderCancelRejected: "cancel_rejected", OrderDenied: "denied"}


class CircuitBreakerGuard(RiskGuard):
    GUARD = "circuit_breaker"
    INITIAL = CLOSED

    def __init__(self, config: CircuitBreakerConfig) -> None:
        super().__init__(config)
        c = config
        self.machine = BreakerStateMachine(int(c.window_s * NS_PER_S), c.max_rejects, c.max_rate_limits,
                                           c.max_errors, c.probe_orders)
        self.errors: dict[str, int] = {"reject": 0, "rate_limit": 0, "order_error": 0}
        self._opened = 0

    def on_start(self) -> None:
        super().on_start()
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.order.*", handler=self._on_order_event)
        super().on_stop()

    def _on_order_event(self, event) -> None:
        cls = type(event)
        if cls is OrderAccepted:
            # A probe is one of OUR orders accepted: another program's acceptance on the shared
            # account says nothing about whether ours get through. (Errors of any order count:
            # rate limits and venue errors are the account's, whoever triggered them.)
            if not self.is_own(event.client_order_id):
                return
            if self.machine.on_success() == CLOSED:
                self.transition(CLOSED, f"{self.config.probe_orders} probe orders accepted",
                                {"probes_ok": self.machine.probes_ok})
            return
        kind = _KINDS.get(cls)
        if kind is None:
            return
        c = self.config
        err = classify_error(kind, str(event.reason), getattr(event, "due_post_only", False),
                             c.count_post_only, c.count_denied)
        if err is None:
            return
        self.errors[err] += 1
        now = self.clock.timestamp_ns()
        was = self.machine.state
        if self.machine.on_error(now, err) == OPEN:
            numbers = self.machine.numbers(now)
            why = "error while half-open" if was == HALF_OPEN else "venue errors over the thresholds"
            self._open(f"{why} (last: {err}: {str(event.reason)[:120]})", numbers)

    def _open(self, reason: str, numbers: dict) -> None:
        self._opened += 1
        gen = self._opened
        self.transition(OPEN, reason, numbers, allow_bid=False, allow_ask=False, trading_state=HALTED, cancel="all")
        now = self.clock.timestamp_ns()
        self.clock.set_time_alert_ns(f"{self.id}-cool-{gen}", now + int(self.config.cooldown_s * NS_PER_S),
                                     callback=self.on_loop(lambda e: self._cooldown(gen)))

    def _cooldown(self, gen: int) -> None:
        if gen == self._opened and self.machine.on_cooldown() == HALF_OPEN:
            self.transition(HALF_OPEN, f"cool-down of {self.config.cooldown_s:g} s over: probing",
                            {"probe_orders": self.config.probe_orders}, trading_state=ACTIVE)

    def manual_reset(self, reason: str = "manual reset") -> None:
        self._opened += 1
        self.machine.state = CLOSED
        for cnt in self.machine.counts.values():
            cnt.clear()
        self.transition(CLOSED, reason)

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), **{f"{k}s_seen": v for k, v in self.errors.items()}}
