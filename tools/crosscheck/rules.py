"""The named rules in which hftbacktest 2.4.4 and mmbot's simulator differ, each with an
emulation: a patch that makes mmbot's simulator follow hftbacktest's rule instead of its own.

The cross-check classifies every fill that differs between the two engines by these rules
(``compare.attribute``): mmbot is re-run with the emulations switched on one after another, in
the order below; a difference is attributed to the first rule from which on it is gone. With every
rule switched on mmbot must reproduce hftbacktest fill for fill, otherwise what is left is
"unexplained" and the cross-check fails. Each rule was found by reading both sources (hftbacktest:
``backtest/proc/partialfillexchange.rs`` and ``backtest/models/queue.rs``, the versions built into
2.4.4, checked with the micro-streams in tests/test_crosscheck.py) and is stated as a formula
in docs/crosscheck.md. ``a`` is the queue ahead of our order (lots), ``T`` a trade's size,
``V -> V'`` a visible size change at our price, ``c`` its unexplained part, ``tr`` the lots traded
there since the previous change.

The patches replace methods of ``adapters.sim.queue.Level`` and of ``QueueSimExecutionClient``
for the duration of one in-process run (``emulate``) and restore them afterwards; nothing is
written to the simulator's files. The policy keeps at most one of our orders per price, so each
level holds one order and hftbacktest's per-order queue equals mmbot's FIFO level.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from nautilus_trader.model.enums import AggressorSide


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # "model": a modelling choice that differs; "defect": hftbacktest computes something wrong
    summary: str


RULES: tuple[Rule, ...] = (
    Rule("trade_through_needs_aggressor", "model",
         "a trade strictly through our price fills us in mmbot whatever its aggressor side; hftbacktest "
         "checks only the orders on the side the aggressor hits (a SELLER-aggressor print above our ask "
         "does not fill it there; the book moving through does, a few ms later)"),
    Rule("overshoot_rounded", "model",
         "queue fill of a trade T with a ahead: mmbot floor(T - a) lots, hftbacktest round(T - a) "
         "(half away from zero) and a leftover below half a lot stays as a negative queue"),
    Rule("behind_counts_traded", "model",
         "cancellation split: hftbacktest's volume behind us is b = V - a with V before the trades "
         "since the last change (the traded lots, which were ahead of us, count as behind); mmbot "
         "b = V - tr - a"),
    Rule("snapshot_is_an_increase", "model",
         "a snapshot (CLEAR + levels): hftbacktest clears the side silently and sees our level "
         "re-added, 0 -> V': a = min(a, V'); mmbot sees V -> V' and splits a decrease"),
    Rule("negative_queue_kept", "defect",
         "after a cancellation split hftbacktest does not floor a at 0 (est = a - (1-p)c + "
         "min(b - pc, 0) can be far below 0): the next trade fills round(T - a) > T lots, more "
         "than it printed; mmbot clamps a to [0, V']"),
    Rule("prob_of_negative_queue", "defect",
         "hftbacktest evaluates f on that negative a: prob_log ln(1 + a) of a < -1 is NaN, and "
         "Rust's min(NaN, V') = V' sends the order to the BACK of the queue (prob_power: "
         "a^3 < 0 tilts p)"),
)
RULE_NAMES = tuple(r.name for r in RULES)
UNEXPLAINED = "unexplained"


def _rust_round(x: float) -> int:
    """Rust ``f64::round``: half away from zero."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _f(model, x: float, raw: bool) -> float:
    """hftbacktest's weight function; ``raw``: on the unclamped estimate, as Rust computes it
    (``ln(1 + x)`` of x < -1 is NaN, ``powf`` of a negative base with a whole exponent keeps the
    sign rules, with a fractional one is NaN)."""
    if not raw:
        x = max(x, 0.0)
    if model.kind == "prob_log":
        if x > -1.0:
            return math.log1p(x)
        return -math.inf if x == -1.0 else math.nan
    n = model.n
    if x >= 0.0:
        return x ** n
    if float(n).is_integer():
        return (-1.0) ** int(n) * abs(x) ** n
    return math.nan


def _div(a: float, b: float) -> float:
    """IEEE division (0/0 = NaN, x/0 = +-inf), as Rust's f64."""
    with np.errstate(all="ignore"):
        return float(np.divide(np.float64(a), np.float64(b)))


class _Flags:
    def __init__(self, names):
        self.on = set(names)

    def __getattr__(self, name):  # flags.overshoot_rounded -> bool
        if name.startswith("_") or name == "on":
            raise AttributeError(name)
        return name in self.on


@contextlib.contextmanager
def emulate(names):
    """Run mmbot's simulator with the named hftbacktest rules (``RULE_NAMES``) in place of its
    own. An empty list installs the emulation harness with every rule off: it must give mmbot's
    own fills exactly (tests/test_crosscheck.py checks that)."""
    from adapters.sim import exec_client as ec
    from adapters.sim.queue import Level

    unknown = set(names) - set(RULE_NAMES)
    if unknown:
        raise ValueError(f"unknown rule(s): {sorted(unknown)}")
    fl = _Flags(names)
    state = {"snapshot": False}
    saved = {(Level, "on_book"): Level.on_book, (Level, "on_trade"): Level.on_trade,
             (ec.QueueSimExecutionClient, "_apply_book"): ec.QueueSimExecutionClient._apply_book,
             (ec.QueueSimExecutionClient, "_apply_trade"): ec.QueueSimExecutionClient._apply_trade}
    orig_apply_book = saved[(ec.QueueSimExecutionClient, "_apply_book")]

    def on_book(self, model, new_size):
        if len(self.orders) > 1:
            raise RuntimeError("emulation assumes one own order per price level")
        prev = 0.0 if (fl.snapshot_is_an_increase and state["snapshot"]) else self.size
        self.size = new_size
        traded, self.traded = self.traded, 0.0
        chg = prev - new_size
        for o in self.orders:
            a = o.ahead
            if fl.behind_counts_traded:
                c, back = chg - traded, prev - a  # hftbacktest: raw V
            else:
                explained = min(chg, traded) if (chg > 0.0 and traded > 0.0) else 0.0
                c, back = chg - explained, prev - explained - a
            if c <= 0.0 or model.kind == "risk_averse":
                o.ahead = min(a, new_size)
                continue
            raw = fl.prob_of_negative_queue
            if not raw:
                back = max(back, 0.0)
            fb, fa = _f(model, back, raw), _f(model, a, raw)
            if raw:
                p = _div(fb, fb + fa)
                p = 1.0 if math.isinf(p) else p
            else:
                p = fb / (fb + fa) if fb + fa > 0.0 else 0.0  # mmbot's QueueModel.behind_share
            est = a - (1.0 - p) * c + min(back - p * c, 0.0)
            if math.isnan(est):
                est = new_size  # Rust f64::min(NaN, V') = V'
            est = min(est, new_size)
            o.ahead = est if fl.negative_queue_kept else max(0.0, est)

    def on_trade(self, lots):
        if not self.known:
            return []
        if len(self.orders) > 1:
            raise RuntimeError("emulation assumes one own order per price level")
        self.traded += lots
        fills = []
        for o in self.orders:
            over = lots - o.ahead  # what the trade leaves after the queue ahead (may exceed lots)
            q = _rust_round(over) if fl.overshoot_rounded else int(math.floor(over + 1e-9))
            if q > 0:
                q = min(q, o.leaves)
                fills.append((o, q))
                o.leaves -= q
                o.ahead = 0.0
            elif fl.overshoot_rounded:
                o.ahead = o.ahead - lots  # hftbacktest keeps the sub-half-lot remainder (negative)
            else:
                o.ahead = max(0.0, o.ahead - lots)
        if fills:
            self.orders = [o for o in self.orders if o.leaves > 0]
        return fills

    def _apply_book(self, x, deltas):
        state["snapshot"] = deltas.is_snapshot
        try:
            orig_apply_book(self, x, deltas)
        finally:
            state["snapshot"] = False

    def _apply_trade(self, x, tick):
        levels = self._levels
        if not levels:
            return
        ticks = tick.price.raw // self._tick_raw
        lots = self.lots(tick.size)
        aggr = tick.aggressor_side
        for key in list(levels):
            side, lt = key
            if side == ec._BUY:
                if lt > ticks and (aggr != AggressorSide.BUYER or not fl.trade_through_needs_aggressor):
                    self._fill_level_full(key, "trade_through", x)
                elif lt == ticks and aggr != AggressorSide.BUYER:
                    self._fill_fifo(key, lots, x)
            else:
                if lt < ticks and (aggr != AggressorSide.SELLER or not fl.trade_through_needs_aggressor):
                    self._fill_level_full(key, "trade_through", x)
                elif lt == ticks and aggr != AggressorSide.SELLER:
                    self._fill_fifo(key, lots, x)

    Level.on_book, Level.on_trade = on_book, on_trade
    ec.QueueSimExecutionClient._apply_book = _apply_book
    ec.QueueSimExecutionClient._apply_trade = _apply_trade
    try:
        yield
    finally:
        for (cls, attr), fn in saved.items():
            setattr(cls, attr, fn)
