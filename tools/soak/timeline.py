"""Order state and position, node vs exchange, over the whole run (after it, from two histories).

The node's view: the recorder's ``orders.jsonl`` (every Nautilus order event the node processed,
stamped with the node's wall clock ``wall_ts_ns``: the cache changes when the event is processed).
The exchange's view: the loopback exchange's order history (``createdTime``, and for a closed
order ``updatedTime`` = when it closed) and its executions (``execTime``), in ms.

- An order is **open on the node** from its ``OrderAccepted`` (or its first ``OrderFilled`` when
  the acceptance never came: Nautilus then moves it SUBMITTED -> PARTIALLY_FILLED) until ``OrderCanceled``,
  ``OrderExpired``, ``OrderRejected``, ``OrderDenied`` or the fill that completes its quantity
  (``OrderInitialized`` / ``OrderUpdated`` quantity); SUBMITTED (in flight) is not open.
- An order is **open on the exchange** from ``createdTime`` until it is Filled / Cancelled /
  Rejected / Deactivated (``updatedTime``).
- The **mismatch of an order** is the symmetric difference of the two intervals; each maximal
  piece is one episode, labelled ``node_only`` / ``exchange_only`` (who had it open) and ``@open``
  (before the other side had it open) / ``@close`` (after the other side closed it) (normally a few ms: the ack and the cancel confirmation in flight). Per
  order, so that a busy quoter's overlapping few-ms differences never chain into one long one.
- The **position mismatch** is where the node's signed filled quantity (its ``OrderFilled``
  events) differs from the exchange's (its executions).

Everything is clipped to [t0, t_end] (the stop signal: the recorder stops with the node's actors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

NODE_TERMINAL = {"OrderCanceled", "OrderExpired", "OrderRejected", "OrderDenied"}
EXCH_OPEN = {"New", "PartiallyFilled", "Untriggered"}
QTY_EPS = 1e-9


@dataclass
class Episode:
    what: str          # "order" | "position"
    key: str           # client order id | "position"
    start_ns: int
    end_ns: int
    detail: str        # node_only | exchange_only | node=X exchange=Y
    open_at_end: bool = False

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_json(self) -> dict:
        return {"what": self.what, "key": self.key, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "seconds": round(self.seconds, 6), "detail": self.detail, "open_at_end": self.open_at_end}


def read_node_events(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a crash
    return out


def node_view(events: list[dict]) -> tuple[dict[str, tuple[int | None, int | None]], list[tuple[int, float]]]:
    """({client order id: (open_ns, close_ns)}, [(fill time ns, signed qty)]) from orders.jsonl."""
    qty: dict[str, float] = {}
    filled: dict[str, float] = {}
    opened: dict[str, int | None] = {}
    closed: dict[str, int | None] = {}
    fills: list[tuple[int, float]] = []
    for e in sorted(events, key=lambda e: e.get("wall_ts_ns", 0)):
        coid, kind, t = e.get("client_order_id", ""), e.get("kind", ""), int(e.get("wall_ts_ns", 0))
        if kind in ("OrderInitialized", "OrderUpdated") and e.get("quantity") is not None:
            qty[coid] = float(e["quantity"])
        if kind == "OrderAccepted" and opened.get(coid) is None and closed.get(coid) is None:
            opened[coid] = t
        elif kind in NODE_TERMINAL and closed.get(coid) is None:
            closed[coid] = t
        elif kind == "OrderFilled":
            if opened.get(coid) is None and closed.get(coid) is None:
                # A fill of an order whose OrderAccepted never came (the private stream's acceptance
                # lost: docs/benchmarks.md "Soak"): Nautilus moves it SUBMITTED -> (PARTIALLY_)FILLED,
                # so the node has it open from here.
                opened[coid] = t
            q = float(e.get("qty", 0.0))
            fills.append((t, q if e.get("side") == "BUY" else -q))
            filled[coid] = filled.get(coid, 0.0) + q
            if coid in qty and filled[coid] >= qty[coid] - QTY_EPS and closed.get(coid) is None:
                closed[coid] = t
    keys = set(opened) | set(closed)
    return {k: (opened.get(k), closed.get(k)) for k in keys}, fills


def exchange_view(state: dict) -> tuple[dict[str, tuple[int | None, int | None]], list[tuple[int, float]]]:
    """The same from the exchange's ``state()`` (orders and executions, ms -> ns)."""
    orders = {}
    for o in state.get("orders", []):
        key = o.get("orderLinkId") or o.get("orderId")
        t0 = int(o["createdTime"]) * 1_000_000
        t1 = None if o.get("orderStatus") in EXCH_OPEN else int(o["updatedTime"]) * 1_000_000
        orders[key] = (t0, t1)
    fills = []
    for x in state.get("executions", []):
        q = float(x["execQty"])
        fills.append((int(x["execTime"]) * 1_000_000, q if x.get("side") == "Buy" else -q))
    return orders, fills


def _pieces(node: tuple[int | None, int | None], exch: tuple[int | None, int | None], t0: int, t_end: int):
    """Maximal [a, b) pieces of [t0, t_end] where exactly one side has the order open."""
    def iv(x):
        a, b = x
        if a is None:
            return None
        return (max(a, t0), min(b if b is not None else t_end, t_end))

    n, e = iv(node), iv(exch)
    points = sorted({t0, t_end} | {p for x in (n, e) if x for p in x if t0 <= p <= t_end})
    out = []
    for a, b in zip(points, points[1:]):
        if b <= a:
            continue
        in_n = n is not None and n[0] <= a and b <= n[1]
        in_e = e is not None and e[0] <= a and b <= e[1]
        if in_n != in_e:
            # "@open": before the other side had it open (e.g. the node learned of an accepted
            # order late); "@close": after the other side closed it (a cancel or fill not seen yet).
            other = e if in_n else n
            when = "open" if other is None or a < other[0] else "close"
            what = f"{'node_only' if in_n else 'exchange_only'}@{when}"
            if out and out[-1][1] == a and out[-1][2] == what:
                out[-1] = (out[-1][0], b, what)
            else:
                out.append((a, b, what))
    return out


def order_episodes(node: dict, exch: dict, t0: int, t_end: int) -> list[Episode]:
    out = []
    for key in sorted(set(node) | set(exch)):
        for a, b, what in _pieces(node.get(key, (None, None)), exch.get(key, (None, None)), t0, t_end):
            out.append(Episode("order", key, a, b, what, open_at_end=b >= t_end))
    return out


def position_episodes(node_fills: list[tuple[int, float]], exch_fills: list[tuple[int, float]], t0: int,
                      t_end: int) -> list[Episode]:
    """Pieces of [t0, t_end] where the cumulative signed fills differ (position mismatch)."""
    events = [(t, q, 0) for t, q in node_fills] + [(t, q, 1) for t, q in exch_fills]
    events.sort()
    pos = [0.0, 0.0]
    out: list[Episode] = []
    start: int | None = None
    i = 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] == t:  # every fill of this instant, both sides
            pos[events[i][2]] += events[i][1]
            i += 1
        differ = abs(pos[0] - pos[1]) > QTY_EPS
        if differ and start is None:
            start = t
        elif not differ and start is not None:
            a, b = max(start, t0), min(t, t_end)
            if b > a:
                out.append(Episode("position", "position", a, b, "differ"))
            start = None
    if start is not None and t_end > max(start, t0):
        out.append(Episode("position", "position", max(start, t0), t_end,
                           f"node={pos[0]:g} exchange={pos[1]:g}", open_at_end=True))
    return out


def compare(orders_jsonl: Path, exchange_state: dict, t0_ns: int, t_end_ns: int) -> dict:
    """Every mismatch episode and the longest of each kind (seconds)."""
    return compare_views(read_node_events(orders_jsonl), exchange_state, t0_ns, t_end_ns)


def symbol_of_orders(events: list[dict], exchange_state: dict, symbols: list[str]) -> dict[str, str]:
    """{client order id: symbol} for the node's events of a portfolio run (orders.jsonl has no
    instrument): the exchange's order with that ``orderLinkId`` names it; an order that never
    reached the exchange (denied, rejected before it) by its strategy tag, the id's next-to-last
    part (``O-<date>-<time>-<trader>-<strategy tag>-<n>``: strategy i of ``[portfolio]`` is tag i)."""
    out = {o["orderLinkId"]: o.get("symbol", "") for o in exchange_state.get("orders", []) if o.get("orderLinkId")}
    for e in events:
        coid = e.get("client_order_id", "")
        if coid and coid not in out:
            parts = coid.rsplit("-", 2)
            tag = parts[1] if len(parts) == 3 else ""
            out[coid] = symbols[int(tag)] if tag.isdigit() and int(tag) < len(symbols) else ""
    return out


def compare_per_symbol(orders_jsonl: Path, exchange_state: dict, t0_ns: int, t_end_ns: int,
                       symbols: list[str]) -> dict[str, dict]:
    """``compare`` for each symbol of a portfolio run on its own: the node's events of that
    symbol's orders against the exchange's orders and executions of that symbol (a mismatch on
    one symbol must not be offset by another's: positions are never summed across symbols).
    Key ``""``: the node's events no symbol claims (normally none)."""
    events = read_node_events(orders_jsonl)
    sym_of = symbol_of_orders(events, exchange_state, symbols)
    out = {}
    for sym in symbols:
        state = {"orders": [o for o in exchange_state.get("orders", []) if o.get("symbol") == sym],
                 "executions": [x for x in exchange_state.get("executions", []) if x.get("symbol") == sym]}
        out[sym] = compare_views([e for e in events if sym_of.get(e.get("client_order_id", "")) == sym], state,
                                 t0_ns, t_end_ns)
    orphans = [e for e in events if sym_of.get(e.get("client_order_id", "")) not in symbols]
    if orphans:
        out[""] = compare_views(orphans, {"orders": [], "executions": []}, t0_ns, t_end_ns)
    return out


def compare_views(node_events: list[dict], exchange_state: dict, t0_ns: int, t_end_ns: int) -> dict:
    """``compare`` on the node's events already read."""
    node_orders, node_fills = node_view(node_events)
    exch_orders, exch_fills = exchange_view(exchange_state)
    oe = order_episodes(node_orders, exch_orders, t0_ns, t_end_ns)
    pe = position_episodes(node_fills, exch_fills, t0_ns, t_end_ns)
    longest = sorted(oe + pe, key=lambda e: -e.seconds)
    return {
        "orders_node": len(node_orders), "orders_exchange": len(exch_orders),
        "fills_node": len(node_fills), "fills_exchange": len(exch_fills),
        "order_episodes": len(oe), "position_episodes": len(pe),
        "max_order_mismatch_s": max((e.seconds for e in oe), default=0.0),
        "max_position_mismatch_s": max((e.seconds for e in pe), default=0.0),
        "longest": [e.to_json() for e in longest[:20]],
        "episodes": [e.to_json() for e in sorted(oe + pe, key=lambda e: e.start_ns) if e.seconds >= 0.5],
    }
