"""The fault schedule of a soak: syntax, defaults, and what each fault does to the loopback exchange.

Syntax (``--faults``)::

    SCHEDULE := "default" | "none" | ITEM ("," ITEM)*
    ITEM     := KIND "@" WHEN (":" PARAM)*
    WHEN     := DURATION | NUMBER "%"        time after the node is ready; "%" = share of --duration
    DURATION := NUMBER ("ms" | "s" | "m" | "h")    a bare number is seconds
    PARAM    := DURATION                      the fault's window (see the table)
              | NAME "=" VALUE

    e.g.  ws_drop@10m,rate_limit@20m:n=20,freeze@30m:45s,lost_ack@40m:n=5,ws_drop@50m:stream=private

Kinds (each becomes faults of tools/fake_bybit, armed through its control API at WHEN):

==========  ===========================  ========================================================
kind        params (default)             what the exchange does
==========  ===========================  ========================================================
ws_drop     stream=all|public|private|   closes the streams' connections abruptly (TCP abort);
            trade (all); window (15s)    the clients reconnect on their own. The window is how
                                         long the soak allows for the recovery.
rate_limit  n (10), status=200|429|403   the next n REST requests AND the next n trade-WebSocket
            (200); window (30s)          operations answer retCode 10006 (a burst); what is not
                                         used up is cleared when the window ends.
freeze      window = length (30s)        a frozen exchange: every order operation and every
                                         authenticated query is held ``length`` before it is
                                         processed (``hold what=all``, armed for ``length``),
                                         and the public book and tickers stop (``stale_book``).
lost_ack    n (3); window (15s)          the next n trade-WebSocket acks are never sent (the
                                         orders are processed; the private stream reports them);
                                         cleared when the window ends.
fake.KIND   any params of that fake      the raw fault (docs/fake_bybit.md), e.g.
            fault; window (10s)          ``fake.drop_private@5m:n=2``; ``n`` = the fake's count.
==========  ===========================  ========================================================

A fault's **declared window** is [WHEN, WHEN + window]. Public-data faults (ws_drop of the public
stream, freeze, and the fake's stale_book / gap_book / refuse_ws / drop_ws of the public stream)
are excused from the recorder gate inside their window (the recording may miss what was broadcast
while the socket was down); nothing else is excused anywhere.

Shadow mode (``--mode shadow``) has no orders at the exchange: only ``ws_drop`` (public stream)
and ``freeze`` (its public half) apply; other kinds are refused with one line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

KINDS = ("ws_drop", "rate_limit", "freeze", "lost_ack")
# Windows (seconds) when the item gives none.
DEFAULT_WINDOW_S = {"ws_drop": 15.0, "rate_limit": 30.0, "freeze": 30.0, "lost_ack": 15.0, "fake": 10.0}
STREAMS = ("all", "public", "private", "trade")
RATE_LIMIT_STATUSES = (200, 429, 403)
# Spread over the run: one fault per fifth, each kind at least once, two drops.
DEFAULT_SCHEDULE = "ws_drop@10%,rate_limit@30%,freeze@50%:30s,lost_ack@70%,ws_drop@85%:stream=private"
DEFAULT_SCHEDULE_SHADOW = "ws_drop@15%:stream=public,freeze@50%:30s,ws_drop@85%:stream=public"
FAKE_PUBLIC_KINDS = ("stale_book", "gap_book")  # always public; drop_ws / refuse_ws depend on stream

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ScheduleError(ValueError):
    """A bad --faults value: the message names the item and the problem (one line)."""


def parse_duration_s(text: str, what: str) -> float:
    """``90``, ``90s``, ``250ms``, ``15m``, ``1h`` -> seconds (finite, > 0)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ScheduleError(f"{what} {text!r}: expected a duration such as 90s, 250ms, 15m, 1h")
    value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise ScheduleError(f"{what} {text!r}: must be > 0")
    return value


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. ``at_s``: seconds after ready; ``window_s``: declared window."""

    kind: str                # ws_drop | rate_limit | freeze | lost_ack | fake.<kind>
    at_s: float
    window_s: float
    params: dict = field(default_factory=dict)
    text: str = ""           # the item as written

    @property
    def end_s(self) -> float:
        return self.at_s + self.window_s

    @property
    def affects_public(self) -> bool:
        """May the recording legitimately miss broadcast rows inside the window?"""
        if self.kind == "freeze":
            return True
        if self.kind == "ws_drop":
            return self.params.get("stream", "all") in ("all", "public")
        if self.kind.startswith("fake."):
            k = self.kind[5:]
            if k in FAKE_PUBLIC_KINDS:
                return True
            if k in ("drop_ws", "refuse_ws"):
                return str(self.params.get("stream", "all")) in ("all", "public")
        return False

    @property
    def holds_exchange(self) -> bool:
        """Does the exchange hold every order operation and authenticated query in the window
        (each for ``window_s`` from its arrival)? Then no reconciliation can complete there."""
        return self.kind == "freeze"  # (fake.hold holds a count of requests, not a window: not excused)

    def steps(self) -> list[tuple[float, str, dict]]:
        """(seconds after ready, action, body) for the runner: ``inject`` posts a fault,
        ``clear`` removes every fault of a kind (``{"kind": K}``)."""
        p, t = self.params, self.at_s
        if self.kind == "ws_drop":
            return [(t, "inject", {"kind": "drop_ws", "stream": p.get("stream", "all")})]
        if self.kind == "rate_limit":
            n, status = int(p.get("n", 10)), int(p.get("status", 200))
            return [(t, "inject", {"kind": "rate_limit", "count": n, "http_status": status}),
                    (t, "inject", {"kind": "rate_limit", "count": n, "ws": True}),
                    (self.end_s, "clear", {"kind": "rate_limit"})]
        if self.kind == "freeze":
            return [(t, "inject", {"kind": "hold", "what": "all", "count": -1, "seconds": self.window_s}),
                    (t, "inject", {"kind": "stale_book", "seconds": self.window_s}),
                    (t + self.window_s, "clear", {"kind": "hold"})]
        if self.kind == "lost_ack":
            return [(t, "inject", {"kind": "lose_ack", "count": int(p.get("n", 3))}),
                    (self.end_s, "clear", {"kind": "lose_ack"})]
        body = {"kind": self.kind[5:], **{("count" if k == "n" else k): v for k, v in p.items()}}
        return [(t, "inject", body)]

    def to_json(self) -> dict:
        return {"kind": self.kind, "at_s": self.at_s, "window_s": self.window_s, "end_s": self.end_s,
                "params": dict(self.params), "affects_public": self.affects_public, "text": self.text}


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        v = float(text)
    except ValueError:
        return text
    if not math.isfinite(v):
        raise ValueError("not a finite number")
    return int(v) if v.is_integer() and "." not in text else v


def parse_schedule(text: str, duration_s: float, *, mode: str = "live") -> list[Fault]:
    """Parse ``--faults`` for a run of ``duration_s`` seconds; raises ``ScheduleError`` (one line)."""
    text = (text or "").strip()
    if text in ("", "none"):
        return []
    if text == "default":
        text = DEFAULT_SCHEDULE_SHADOW if mode == "shadow" else DEFAULT_SCHEDULE
    faults = []
    for raw in text.split(","):
        item = raw.strip()
        where = f"--faults item {item!r}"
        if not item:
            raise ScheduleError(f"--faults {text!r}: empty item (two commas, or a trailing comma)")
        head, *params = item.split(":")
        kind, sep, when = head.partition("@")
        kind = kind.strip()
        if not sep or not when.strip():
            raise ScheduleError(f"{where}: expected KIND@WHEN (e.g. ws_drop@10m or freeze@50%)")
        if kind not in KINDS and not (kind.startswith("fake.") and len(kind) > 5):
            raise ScheduleError(f"{where}: unknown kind {kind!r}; known: {', '.join(KINDS)}, fake.KIND")
        when = when.strip()
        if when.endswith("%"):
            try:
                pct = float(when[:-1])
            except ValueError:
                raise ScheduleError(f"{where}: {when!r} is not a percentage") from None
            if not (math.isfinite(pct) and 0 <= pct < 100):
                raise ScheduleError(f"{where}: {when!r} must be >= 0% and < 100%")
            at_s = duration_s * pct / 100.0
        elif when in ("0", "0s"):
            at_s = 0.0
        else:
            at_s = parse_duration_s(when, where + ": time")
        window = None
        values: dict = {}
        for prm in params:
            prm = prm.strip()
            if "=" in prm:
                name, _, val = prm.partition("=")
                name, val = name.strip(), val.strip()
                if not name or not val:
                    raise ScheduleError(f"{where}: parameter {prm!r}: expected NAME=VALUE")
                try:
                    values[name] = _value(val)
                except ValueError as e:
                    raise ScheduleError(f"{where}: parameter {prm!r}: {e}") from None
            else:
                window = parse_duration_s(prm, where + ": window")
        _check_params(kind, values, where)
        if mode == "shadow":
            _check_shadow(kind, values, where)
        window_s = window if window is not None else DEFAULT_WINDOW_S["fake" if kind.startswith("fake.") else kind]
        f = Fault(kind=kind, at_s=at_s, window_s=window_s, params=values, text=item)
        if f.end_s > duration_s:
            raise ScheduleError(f"{where}: its window ends at {f.end_s:g}s, after the run ({duration_s:g}s); "
                                "move it earlier or shorten the window")
        faults.append(f)
    return sorted(faults, key=lambda f: f.at_s)


_ALLOWED = {"ws_drop": {"stream"}, "rate_limit": {"n", "status"}, "freeze": set(), "lost_ack": {"n"}}


def _check_params(kind: str, values: dict, where: str) -> None:
    if kind.startswith("fake."):
        if "on" in values:
            raise ScheduleError(f"{where}: 'on' triggers are not scheduled faults; use a time")
        if "n" in values and (not isinstance(values["n"], int) or values["n"] == 0 or values["n"] < -1):
            raise ScheduleError(f"{where}: n must be a whole number >= 1 (or -1: until the window ends)")
        return
    extra = set(values) - _ALLOWED[kind]
    if extra:
        raise ScheduleError(f"{where}: unknown parameter(s) {', '.join(sorted(extra))} for {kind}; "
                            f"known: {', '.join(sorted(_ALLOWED[kind])) or 'a window only'}")
    if "stream" in values and values["stream"] not in STREAMS:
        raise ScheduleError(f"{where}: stream={values['stream']!r}: must be one of {', '.join(STREAMS)}")
    if "n" in values and (not isinstance(values["n"], int) or values["n"] < 1 or values["n"] > 10_000):
        raise ScheduleError(f"{where}: n={values['n']!r}: must be a whole number from 1 to 10000")
    if "status" in values and values["status"] not in RATE_LIMIT_STATUSES:
        raise ScheduleError(f"{where}: status={values['status']!r}: must be one of 200, 429, 403")


def _check_shadow(kind: str, values: dict, where: str) -> None:
    if kind == "freeze":
        return
    if kind == "ws_drop" and values.get("stream", "all") in ("all", "public"):
        return
    if kind.startswith("fake.") and kind[5:] in FAKE_PUBLIC_KINDS + ("drop_ws", "refuse_ws") \
            and str(values.get("stream", "all")) in ("all", "public"):
        return
    raise ScheduleError(f"{where}: does not apply in --mode shadow (no orders or private streams at the "
                        "exchange: only public-data faults do)")
