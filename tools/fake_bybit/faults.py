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
* ``hold``              a frozen exchange: the next matching request(s) are held ``seconds`` (default 5)
                        BEFORE the exchange processes them, then processed and answered (also when the
                        client has gone meanwhile: the request had reached the exchange). ``what``:
                        ``orders`` (default: order create/amend/cancel/cancel-all/batches, REST and
                        trade WS) or ``all`` (also every authenticated REST query); ``op`` narrows to
                        one of create, amend, cancel, cancel_all, query; ``path`` (a prefix) to REST
                        requests of that path (e.g. ``/v5/execution/list``).
* ``sign_error``        next authenticated REST request(s) (optional ``path`` prefix) answer retCode 10004
                        echoing the signed string, as Bybit does (``error sign! origin_string[...]``:
                        timestamp + API key + recv_window + payload).
* ``refuse_ws``         WebSocket upgrades of ``stream`` (public|private|trade|all) answer HTTP 503 for
                        ``seconds`` (default: until cleared); open connections of that stream are
                        dropped when it is armed (an outage).

Any fault can wait for a trigger: ``on="cancel_all"`` (the next REST cancel-all), ``on="stop_cancel"``
(the next batch cancel, REST or trade WS, or the next REST cancel: mmbot's stop sends the former for
its acknowledged orders, its venue check the latter, while quoting cancels one order at a time over
the trade WS) or ``on="cancel"`` (the next cancel of any kind) arms it at that moment; the triggering request
itself is already affected. This arms a fault at a precise point of a stop sequence.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

KINDS = {
    "rate_limit", "drop_ws", "post_only_reject", "cancel_unknown", "insufficient_balance",
    "delay_ack", "lose_ack", "stale_book", "gap_book", "drop_private", "delay_cancel", "hold", "sign_error",
    "refuse_ws",
}
TRIGGERS = {"cancel_all", "stop_cancel", "cancel"}
WINDOW_KINDS = {"stale_book", "refuse_ws"}  # active for ``seconds`` (default until cleared), any count


@dataclass
class Fault:
    id: int
    kind: str
    params: dict
    count: int = 1
    expires_at: float | None = None  # monotonic
    fired: int = 0
    on: str | None = None      # trigger that arms the fault (None = armed now)
    triggered: bool = True

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "params": self.params, "count": self.count,
                "fired": self.fired, "on": self.on, "triggered": self.triggered,
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
        on = params.pop("on", None)
        if on is not None and on not in TRIGGERS:
            raise ValueError(f"unknown trigger on={on!r}; known: {sorted(TRIGGERS)}")
        seconds = params.get("seconds")
        expires = None
        if kind in WINDOW_KINDS:
            count = -1
            if seconds is not None:
                expires = time.monotonic() + float(seconds)
        f = Fault(id=next(self._ids), kind=kind, params=params, count=count, expires_at=expires, on=on,
                  triggered=on is None)
        self.active.append(f)
        return f

    def trigger(self, event: str) -> None:
        """``event`` happened (e.g. a cancel-all arrived): arm the faults waiting for it. A window
        fault's ``seconds`` start now."""
        for f in self.active:
            if f.on == event and not f.triggered:
                f.triggered = True
                if f.kind in WINDOW_KINDS and f.params.get("seconds") is not None:
                    f.expires_at = time.monotonic() + float(f.params["seconds"])
                self.fired.append({"id": f.id, "kind": f.kind, "time_ms": int(time.time() * 1000), "armed_by": event})

    def clear(self, kind: str | None = None) -> None:
        self.active = [f for f in self.active if kind is not None and f.kind != kind]

    def _alive(self, f: Fault) -> bool:
        if f.expires_at is not None and time.monotonic() >= f.expires_at:
            return False
        return f.count < 0 or f.fired < f.count

    def peek(self, kind: str, pred=None) -> Fault | None:
        self.active = [f for f in self.active if self._alive(f)]
        for f in self.active:
            if f.kind == kind and f.triggered and (pred is None or pred(f.params)):
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
