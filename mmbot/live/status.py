"""The operator's view of a running node, from its Prometheus metrics (docs/runbook.md "Console").

One view, two renderings, one source: the metrics the node exports (``mmbot.live.metrics_server``).

- ``StatusConsole`` (inside ``mmbot live``, every mode): the node's console shows ONE status line
  every ``[live] status_interval_s`` (``format_line``), built from the metrics actor's own registry,
  plus one line per risk-guard transition (at most ``MAX_TRANSITION_LINES`` per interval, the rest
  counted on the next status line). Nautilus' own log goes to the run folder's ``nautilus.jsonl``
  (DEBUG); only its lines at ``[live] log_level`` (default ERROR) and above reach the console.
- ``mmbot status`` (``mmbot/cli/status.py``) reads ``/metrics`` (and ``/ready``) of a running node
  over HTTP and prints the same view as a block (``format_block``) or JSON.

``parse_views`` matches series by label SETS: the exposition sorts labels, and every series carries
``environment`` and ``instrument`` (``BASE_LABELS``); one view per (environment, instrument) pair
found in ``mmbot_info``.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime
from typing import Any

GUARD_ORDER = ("kill_switch", "loss", "drawdown", "position", "circuit_breaker", "stale_data", "edge")
INITIAL_STATE = {"circuit_breaker": "CLOSED"}  # every other guard starts ACTIVE
TRADING_STATE_NAMES = {0: "ACTIVE", 1: "REDUCING", 2: "HALTED"}
MAX_TRANSITION_LINES = 5  # guard-transition lines per status interval; more are counted, not printed


class Samples:
    """The samples of one exposition, queried by metric name and a label subset: the text of
    ``/metrics``, or the registry it is rendered from (``from_registry``: the same samples without
    rendering and parsing the text)."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.rows: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]

    @classmethod
    def from_registry(cls, registry) -> Samples:
        """The samples ``/metrics`` would show (``generate_latest`` writes each collected sample's
        name, labels and value; a float's text round-trips exactly), read from the registry: the
        console's status line costs ~0.4 ms on the event loop instead of ~4 ms (render + parse)."""
        out = cls.__new__(cls)
        out.rows = [(s.name, dict(s.labels), float(s.value)) for fam in registry.collect() for s in fam.samples]
        return out

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.rows if n == name and all(lab.get(k) == x for k, x in labels.items())]

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over the matching samples; None when there is none (NaN samples are skipped)."""
        vals = [v for _, v in self.select(name, **labels) if not math.isnan(v)]
        return math.fsum(vals) if vals else None

    def identities(self) -> list[tuple[str, str]]:
        return sorted({(lab.get("environment", ""), lab.get("instrument", ""))
                       for lab, _ in self.select("mmbot_info")})


def parse_views(text) -> list[dict[str, Any]]:
    """One status view per (environment, instrument) in the exposition ``text`` (or a registry)."""
    s = Samples(text) if isinstance(text, str) else Samples.from_registry(text)
    return [_view(s, env, inst) for env, inst in s.identities()]


def _view(s: Samples, env: str, inst: str) -> dict[str, Any]:
    base = {"environment": env, "instrument": inst}

    def val(name: str, **labels: str) -> float | None:
        return s.total(name, **base, **labels)

    def count(name: str, **labels: str) -> int:
        return int(val(name, **labels) or 0)

    guards = {}
    for lab, v in s.select("mmbot_guard_state", **base):
        if v == 1.0:
            guards[lab["guard"]] = lab["state"]
    guards = dict(sorted(guards.items(), key=lambda kv: (GUARD_ORDER.index(kv[0]) if kv[0] in GUARD_ORDER
                                                          else len(GUARD_ORDER), kv[0])))
    quotes = {}
    for side in ("bid", "ask"):
        quotes[side] = {"price": val("mmbot_quote_price", side=side), "size": val("mmbot_quote_size_base", side=side),
                        "orders": count("mmbot_open_orders", side=side)}
    rejected: dict[str, int] = {}
    for lab, v in s.select("mmbot_orders_rejected_total", **base):
        rejected[lab.get("kind", "?")] = rejected.get(lab.get("kind", "?"), 0) + int(v)
    book_age = val("mmbot_book_age_seconds")
    trading = val("mmbot_trading_state")
    # Session PnL = the account's balance change (realised, net of fees) + unrealised at the mid. Not
    # mmbot_pnl_usdt{part="total"}: its realised part sums Nautilus positions, and a NETTING position
    # that goes flat and reopens starts its realised PnL again from 0.
    bal, unreal = val("mmbot_pnl_usdt", part="balance_change"), val("mmbot_pnl_usdt", part="unrealized")
    session_pnl = bal + (unreal or 0.0) if bal is not None else val("mmbot_pnl_usdt", part="total")
    return {
        **base,
        "up": val("mmbot_up") == 1.0,
        "ready": val("mmbot_ready") == 1.0,
        "position_base": val("mmbot_position_base"),
        "equity_usdt": val("mmbot_equity_usdt"),
        "pnl_usdt": {"session": session_pnl, **{p: val("mmbot_pnl_usdt", part=p)
                                                for p in ("balance_change", "unrealized", "fees")}},
        "quotes": quotes,
        "quote_spread_bps": val("mmbot_quote_spread_bps"),
        "mid_price": val("mmbot_mid_price"),
        "market_spread_bps": val("mmbot_market_spread_bps"),
        "fills": count("mmbot_fills_total"),
        "fills_maker": count("mmbot_fills_total", liquidity="maker"),
        "orders_submitted": count("mmbot_orders_submitted_total"),
        "orders_cancelled": count("mmbot_orders_cancelled_total"),
        "orders_rejected": dict(sorted(rejected.items())),
        "book_age_s": None if book_age is None or book_age < 0 else book_age,
        "book_gaps": count("mmbot_book_gaps_total"),
        "ws_reconnects": count("mmbot_ws_reconnects_total"),
        "trading_state": TRADING_STATE_NAMES.get(int(trading), str(trading)) if trading is not None else None,
        "quoting_allowed": {side: val("mmbot_quoting_allowed", side=side) == 1.0 for side in ("bid", "ask")},
        "guards": guards,
    }


# -- rendering ----------------------------------------------------------------------------------

def _num(x: float | None, fmt: str = "g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _paid(fees_part: float | None) -> float | None:
    """mmbot_pnl_usdt{part="fees"} is the fees' effect on PnL (paid = negative); shown as paid."""
    return None if fees_part is None else -fees_part


def _quote(q: dict) -> str:
    if not q["orders"] or q["price"] is None:
        return "none"
    return f"{_num(q['size'])}@{_num(q['price'])} ({q['orders']} order{'s' if q['orders'] != 1 else ''})"


def _abnormal_guards(view: dict) -> list[str]:
    return [f"{g}={st}" for g, st in view["guards"].items() if st != INITIAL_STATE.get(g, "ACTIVE")]


def format_line(view: dict, now: datetime | None = None) -> str:
    """The console's one status line."""
    now = now or datetime.now(UTC)
    pnl = view["pnl_usdt"]
    odd = _abnormal_guards(view)
    age = view["book_age_s"]
    parts = [
        f"{now.strftime('%H:%M:%S')} {view['environment']} {view['instrument'].split('-')[0]}"
        f" {'ready' if view['ready'] else 'NOT READY'}",
        f"pos {_num(view['position_base'])}",
        f"pnl {_num(pnl['session'], '.2f')} USDT (fees {_num(_paid(pnl['fees']), '.2f')})",
        f"bid {_quote(view['quotes']['bid'])} ask {_quote(view['quotes']['ask'])}",
        f"fills {view['fills']}",
        f"book {_num(age, '.1f')}s" if age is not None else "book none",
        f"{view['trading_state'] or '?'}" + (f" {' '.join(odd)}" if odd else ""),
    ]
    return " | ".join(parts)


def format_block(view: dict, source: str = "", ready_detail: dict | None = None) -> str:
    """``mmbot status``: the same view, one topic a line (Hummingbot's ``status`` layout)."""
    pnl = view["pnl_usdt"]
    q = view["quotes"]
    rej = ", ".join(f"{k} {v}" for k, v in view["orders_rejected"].items()) or "none"
    not_ready = ""
    if not view["ready"] and ready_detail:
        failing = [k for k, v in ready_detail.items() if v is False and k != "ready"]
        not_ready = f" (failing: {', '.join(failing)})" if failing else ""
    maker = f", {view['fills_maker']} maker" if view["fills"] else ""
    lines = [
        f"mmbot status   environment {view['environment']}   instrument {view['instrument']}"
        + (f"   ({source})" if source else ""),
        f"  ready      {'yes' if view['ready'] else 'NO' + not_ready}   node {'up' if view['up'] else 'DOWN'}",
        f"  position   {_num(view['position_base'])} base   equity {_num(view['equity_usdt'], '.2f')} USDT",
        f"  PnL        session {_num(pnl['session'], '.4f')} = balance change {_num(pnl['balance_change'], '.4f')}"
        f" + unrealized {_num(pnl['unrealized'], '.4f')} USDT (fees paid {_num(_paid(pnl['fees']), '.4f')}, included)",
        f"  quotes     bid {_quote(q['bid'])}   ask {_quote(q['ask'])}   own spread "
        f"{_num(view['quote_spread_bps'], '.2f')} bps",
        f"  market     mid {_num(view['mid_price'])}   spread {_num(view['market_spread_bps'], '.2f')} bps   "
        f"book age {_num(view['book_age_s'], '.1f')} s   gaps {view['book_gaps']}   "
        f"re-subscriptions {view['ws_reconnects']}",
        f"  orders     submitted {view['orders_submitted']}   cancelled {view['orders_cancelled']}   "
        f"rejected: {rej}",
        f"  fills      {view['fills']} since start{maker}",
        f"  risk       trading state {view['trading_state'] or '?'}   quoting bid "
        f"{'yes' if view['quoting_allowed']['bid'] else 'NO'} ask {'yes' if view['quoting_allowed']['ask'] else 'NO'}",
        "  guards     " + (", ".join(f"{g} {st}" for g, st in view["guards"].items()) or "none"),
    ]
    return "\n".join(lines)


# -- the console inside mmbot live ----------------------------------------------------------------

class StatusConsole:
    """Status lines every ``interval_s`` and guard-transition lines on the node's console.

    ``on_constraint`` is subscribed to the risk topic by the run loop (``LiveRun.build``): only
    transitions reach it, never per-order events. ``tick`` is called by the run loop (every 0.2 s);
    it reads the metrics actor's registry, i.e. exactly what ``/metrics`` and ``mmbot status`` show
    (read directly: no text rendered and parsed on the event loop).
    """

    def __init__(self, interval_s: float, render, out=None, clock=time.monotonic) -> None:
        self.interval_s = interval_s
        self.render = render        # () -> the metrics registry (or its text), None while there is no actor yet
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self._last = clock()
        self._transition_lines = 0
        self._suppressed = 0
        self.lines = 0

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)
        self.lines += 1

    def on_constraint(self, msg) -> None:
        if msg.old_state == msg.new_state:
            return  # a re-send (kill switch to a late starter) or a changed constraint in the same state
        if self._transition_lines >= MAX_TRANSITION_LINES:
            self._suppressed += 1
            return
        self._transition_lines += 1
        reason = msg.reason if len(msg.reason) <= 160 else msg.reason[:157] + "..."
        self._print(f"{datetime.now(UTC).strftime('%H:%M:%S')} guard {msg.guard}: {msg.old_state} -> "
                    f"{msg.new_state} ({reason})")

    def tick(self, force: bool = False) -> None:
        now = self.clock()
        if self.interval_s <= 0 or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        source = self.render()
        if source is None or source == "":
            return
        views = parse_views(source)
        if not views:
            return
        # one line per instrument of the node's environment (a [portfolio]: every instrument's
        # series are on one registry)
        lines = [format_line(v) for v in views if v["environment"] == views[0]["environment"]]
        if self._suppressed:
            lines[-1] += f" | +{self._suppressed} guard transition(s) not shown (audit log)"
        self._transition_lines = self._suppressed = 0
        for line in lines:
            self._print(line)
