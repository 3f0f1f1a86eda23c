"""Seeded latency draws, in ns (docs/queue_model.md).

A ``Latency`` is one distribution: ``constant`` (``mean_ms``), ``normal`` (``mean_ms``,
``std_ms``, truncated at 0) or ``histogram`` (``bins``: ``[[ms, weight], ...]``, a bin's value
is drawn with probability weight / sum). ``LatencyModel`` holds the order-entry, amend and
cancel distributions (local send -> exchange), the constant response latency (exchange ->
local: acks, rejects, fills) and one ``random.Random(seed)``. Market-data (feed) latency is not a
parameter: it is in the data, ``ts_init - ts_event`` (docs/queue_model.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

KINDS = ("constant", "normal", "histogram")
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Latency:
    kind: str = "constant"
    mean_ms: float = 0.0
    std_ms: float = 0.0
    bins: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"latency kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for name in ("mean_ms", "std_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"latency {name} must be a finite number >= 0, was {v!r}")
        if self.kind == "histogram":
            if not self.bins or any(len(b) != 2 or b[0] < 0 or b[1] < 0 for b in self.bins) \
                    or sum(b[1] for b in self.bins) <= 0:
                raise ValueError("latency histogram bins must be [[ms >= 0, weight >= 0], ...] with positive total weight")

    def draw_ns(self, rng: random.Random) -> int:
        if self.kind == "constant":
            return int(round(self.mean_ms * NS_PER_MS))
        if self.kind == "normal":
            return int(round(max(0.0, rng.gauss(self.mean_ms, self.std_ms)) * NS_PER_MS))
        values = [b[0] for b in self.bins]
        weights = [b[1] for b in self.bins]
        return int(round(rng.choices(values, weights)[0] * NS_PER_MS))


@dataclass
class LatencyModel:
    """``order``: entry, ``amend``, ``cancel``: command latencies (send -> exchange);
    ``response``: exchange -> local for every response, ``constant`` only (one number keeps a
    response from overtaking an earlier one, as on a single WebSocket)."""

    order: Latency = field(default_factory=Latency)
    amend: Latency = field(default_factory=Latency)
    cancel: Latency = field(default_factory=Latency)
    response: Latency = field(default_factory=Latency)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.response.kind != "constant":
            raise ValueError(f"response latency must be constant, got {self.response.kind!r}")
        self.rng = random.Random(self.seed)

    def order_ns(self) -> int:
        return self.order.draw_ns(self.rng)

    def amend_ns(self) -> int:
        return self.amend.draw_ns(self.rng)

    def cancel_ns(self) -> int:
        return self.cancel.draw_ns(self.rng)

    def response_ns(self) -> int:
        return int(round(self.response.mean_ms * NS_PER_MS))
