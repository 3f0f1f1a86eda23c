"""Fault injection registry.

``inject(kind, **params)`` arms a fault; most faults fire ``count`` times (default 1) and then
disarm. ``count=-1`` means "until cleared". Every firing is recorded in ``fired``.

Kinds (see docs/fake_bybit.md for parameters):

* ``rate_limit``        next REST request(s) (optional ``path`` prefix) answer retCode 10006 with
                        X-Bapi-Limit* headers; ``http_status`` 200 (default, Bybit's usual), 429 or 403.
                        ``ws=True`` applies it to trade-WS ops instead.
* ``drop_ws``           close WebSocket connections now: ``stream`` public|private|trade|all.
* ``post_only_reject``  next PostOnly create(s) are cancelled with EC_PostOnlyWillTakeLiquidity.
* ``cancel_unknown``    next cancel(s) answer 110001 (order not exists or too late to cancel).
* ``insufficient_balance`` next create(s) answer 110007 (ab not enough for new order).
* ``delay_ack``         next ack(s) (REST order endpoints and trade-WS ops) are delayed ``seconds``.
* ``delay_cancel``      next trade-WS ``order.cancel``(s) take effect ``seconds`` (default 1.0) later: the
                        order keeps resting (and can fill) until then; then the cancel is processed
                        (110001 if the order is gone by then) and acknowledged.
* ``lose_ack``          next trade-WS ack(s) are not sent (the order IS processed); on REST order
                        endpoints the response is held ``seconds`` (default 30) then answered HTTP 504.
* ``stale_book``        public book/ticker publishing pauses for ``seconds`` (default: until cleared);
                        the internal book (and matching) keeps replaying.
* ``gap_book``          next public book delta(s) skip one ``u`` (``drop=True`` also withholds the
                        message's content until the next one).
* ``drop_private``      next private-stream message(s) (optional ``topic``) are not sent.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

KINDS = {
    "rate_limit", "drop_ws", "post_only_reject", "cancel_unknown", "insufficient_balance",
    "delay_ack", "lose_ack", "stale_book", "gap_book", "drop_private", "delay_cancel",
}


@dataclass
class Fault:
    id: int
    kind: str
    params: dict
    count: int = 1
    expires_at: float | None = None  # monotonic
    fired: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "params": self.params, "count": self.count,
                "fired": self.fired,
                "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - time.monotonic())}


class Faults:
    def __init__(self) -> None:
        self.active: list[Fault] = []
        self.fired: list[dict] = []
        self._ids = itertools.count(1)

    def add(self, kind: str, **params) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
        count = int(params.pop("count", 1))
        seconds = params.get("seconds")
        expires = None
        if kind == "stale_book":
            count = -1
            if seconds is not None:
                expires = time.monotonic() + float(seconds)
        f = Fault(id=next(self._ids), kind=kind, params=params, count=count, expires_at=expires)
        self.active.append(f)
        return f

    def clear(self, kind: str | None = None) -> None:
        self.active = [f for f in self.active if kind is not None and f.kind != kind]

    def _alive(self, f: Fault) -> bool:
        if f.expires_at is not None and time.monotonic() >= f.expires_at:
            return False
        return f.count < 0 or f.fired < f.count

    def peek(self, kind: str, pred=None) -> Fault | None:
        self.active = [f for f in self.active if self._alive(f)]
        for f in self.active:
            if f.kind == kind and (pred is None or pred(f.params)):
                return f
        return None

    def take(self, kind: str, pred=None, **info) -> Fault | None:
        """Return an armed fault of ``kind`` and count one firing."""
        f = self.peek(kind, pred)
        if f is not None:
            f.fired += 1
            self.fired.append({"id": f.id, "kind": kind, "time_ms": int(time.time() * 1000), **info})
        return f

    def to_json(self) -> dict:
        self.active = [f for f in self.active if self._alive(f)]
        return {"active": [f.to_json() for f in self.active], "fired": list(self.fired)}
