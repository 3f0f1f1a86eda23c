"""The soak's gates: each a pure function of the run's series and results, with a stated bound.

The bounds and why (docs/runbook.md "Soak" repeats them for the operator):

``rss_slope``       least-squares slope of the node's RSS over the samples in the last 75 % of the
                    run, in MB/h, must be below ``RSS_SLOPE_MAX_MB_PER_H``. The first 25 % is
                    warm-up (imports, caches, allocator arenas fill). Bound: a process that should
                    run for a week between restarts may grow by at most ~1 GB in that week
                    (168 h x 6 MB/h ~ 1 GB); the slope's noise over a 45-minute window, from
                    allocator jitter of a few MB, is ~2-3 MB/h, so 6 MB/h is also the smallest
                    bound a 1-hour soak can check without flagging noise.
``state_mismatch``  no order-state or position mismatch between the node and the exchange lasts
                    longer than one reconciliation interval: Nautilus' open-order check runs every
                    ``live.open_check_interval_secs`` and only then can the node learn what its
                    streams missed. Longest episode (s) <= that interval. Balance is sampled: a
                    difference seen at two consecutive samples also fails (it lasted at least one
                    sample interval).
``orders_left``     zero of our orders open on the exchange after the node stopped (asked from the
                    exchange itself), and the node did not exit 3 (orders may rest).
``p99_growth``      tick-to-order p99 over the last quarter / p99 over the first quarter (from the
                    node's histogram) below ``P99_RATIO_MAX``. The histogram's buckets step by
                    x2-x2.5, so a ratio of 2 is one whole bucket: below it the tail did not move
                    up a bucket; a slowdown that grows with run time (a list scanned per event
                    that keeps growing) crosses it.
                    The two performance gates above judge only with enough evidence
                    (``MIN_RSS_WINDOW_S``, ``MIN_LATENCY_OBSERVATIONS``: a 1-hour soak has it);
                    a shorter run reports them "not measurable" (values shown, not counted).
``recorder``        the recording imports with ``mmbot catalog import --strict`` and, over every
                    compared second (outside declared public-data fault windows), holds every row
                    the exchange broadcast: lost rows == 0.
``node``            the node ran until the soak stopped it and exited 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RSS_SLOPE_MAX_MB_PER_H = 6.0
P99_RATIO_MAX = 2.0
# Evidence a performance gate needs before it judges (below it: "not measurable in this run",
# reported, not counted). A p99 of fewer than 1,000 observations is the largest few: the worst
# scheduling hiccup of a shared machine, not a property of the node. A slope in MB/h over less
# than 30 minutes measures the warm-up (the first minutes climb ~5-10 MB), not a leak.
MIN_LATENCY_OBSERVATIONS = 1000   # timed orders in each compared quarter
MIN_RSS_WINDOW_S = 1800.0         # the last 75 % of the run must span this
MIN_RSS_SAMPLES = 10
BALANCE_TOLERANCE_USDT = 1e-6  # node balance (floats) vs exchange wallet (decimal)


@dataclass
class Gate:
    name: str
    holds: bool
    value: float | None
    bound: float | None
    unit: str
    rule: str
    detail: dict = field(default_factory=dict)
    applicable: bool = True

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

        return {"name": self.name, "holds": self.holds, "value": num(self.value), "bound": num(self.bound),
                "unit": self.unit, "rule": self.rule, "applicable": self.applicable, "detail": self.detail}


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def rss_slope_gate(t_s: list[float], rss_mb: list[float], duration_s: float,
                   bound_mb_per_h: float = RSS_SLOPE_MAX_MB_PER_H) -> Gate:
    start = 0.25 * duration_s
    pts = [(t, r) for t, r in zip(t_s, rss_mb) if t >= start - 1e-9 and r is not None and math.isfinite(r)]
    slope = least_squares_slope([t / 3600.0 for t, _ in pts], [r for _, r in pts])
    span = pts[-1][0] - pts[0][0] if pts else 0.0
    measurable = len(pts) >= MIN_RSS_SAMPLES and span >= MIN_RSS_WINDOW_S - 1e-6
    ok = measurable and math.isfinite(slope) and slope < bound_mb_per_h
    note = "" if measurable else (f"not measurable in this run: the last 75 % spans {span:.0f} s with {len(pts)} "
                                  f"samples; a slope needs >= {MIN_RSS_WINDOW_S:.0f} s and >= {MIN_RSS_SAMPLES}")
    return Gate("rss_slope", ok, slope, bound_mb_per_h, "MB/h",
                "least-squares slope of the node's RSS over the last 75 % of the run < bound",
                {"samples": len(pts), "from_s": start, "span_s": span,
                 "rss_first_mb": pts[0][1] if pts else None, "rss_last_mb": pts[-1][1] if pts else None,
                 "note": note}, applicable=measurable)


def _merged(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def held_seconds(start_ns: int, end_ns: int, hold_windows_ns: list[tuple[int, int]]) -> float:
    """Seconds of [start, end] inside the (merged) windows where the exchange held every query."""
    return sum(max(0, min(end_ns, b) - max(start_ns, a)) for a, b in _merged(hold_windows_ns)) / 1e9


def _longest_unheld(timeline: dict, what: str, hold_windows_ns: list[tuple[int, int]]) -> float:
    """The longest ``what`` episode minus its time inside a hold window. ``timeline["episodes"]``
    lists every episode of 0.5 s or more: a shorter one is below any bound that matters."""
    raw = timeline[f"max_{what}_mismatch_s"]
    eps = [e for e in timeline.get("episodes", []) if e["what"] == what]
    if not hold_windows_ns or not eps:
        return raw
    return max(max(e["seconds"] - held_seconds(e["start_ns"], e["end_ns"], hold_windows_ns) for e in eps),
               raw if raw < 0.5 else 0.0)


def _balance_check(balance_diffs: list[tuple[float, float | None]]) -> tuple[bool, int, list[tuple[float, float]]]:
    """(holds, most consecutive samples that differed, [(t_s, difference)] of every one that did)."""
    run = best = 0
    off: list[tuple[float, float]] = []  # (t_s, difference) of every sample that differed: the report shows them
    for t_s, d in balance_diffs:
        bad = d is not None and math.isfinite(d) and abs(d) > BALANCE_TOLERANCE_USDT
        run = run + 1 if bad else 0
        best = max(best, run)
        if bad:
            off.append((t_s, round(d, 9)))
    balance_ok = best < 2
    return balance_ok, best, off


def state_mismatch_gate(timeline: dict | None, balance_diffs: list[tuple[float, float | None]],
                        interval_s: float, bound_s: float | None = None,
                        hold_windows_ns: list[tuple[int, int]] = ()) -> Gate:
    """``timeline``: tools.soak.timeline.compare output (None: not applicable, e.g. shadow);
    ``balance_diffs``: (t_s, node - exchange USDT) per sample; ``hold_windows_ns``: wall-clock
    stretches in which the exchange held every order operation and authenticated query (a
    ``freeze``: from its start to its end plus its length, since a query sent at the window's
    last instant is answered one length later). No reconciliation can complete there, so an
    episode's time inside them does not count; the rest must stay within the bound."""
    bound = interval_s if bound_s is None else bound_s
    if timeline is None:
        return Gate("state_mismatch", True, None, bound, "s", "not applicable: no exchange account (shadow)",
                    applicable=False)
    windows = list(hold_windows_ns)
    order_s = _longest_unheld(timeline, "order", windows)
    position_s = _longest_unheld(timeline, "position", windows)
    longest = max(order_s, position_s)
    balance_ok, best, off = _balance_check(balance_diffs)
    ok = longest <= bound and balance_ok
    return Gate("state_mismatch", ok, longest, bound, "s",
                "longest order-state or position mismatch, less its time inside freeze (hold) windows, <= one "
                "reconciliation interval (live.open_check_interval_secs); balance never differs at two "
                "consecutive samples",
                {"max_order_mismatch_s": timeline["max_order_mismatch_s"],
                 "max_position_mismatch_s": timeline["max_position_mismatch_s"],
                 "max_order_mismatch_outside_holds_s": round(order_s, 6),
                 "max_position_mismatch_outside_holds_s": round(position_s, 6),
                 "hold_windows_ns": windows,
                 "reconciliation_interval_s": interval_s,
                 "balance_consecutive_mismatched_samples": best,
                 "balance_mismatched_samples": off[:20],
                 "longest": timeline["longest"][:5]})


def state_mismatch_per_instrument_gate(timelines: dict[str, dict] | None,
                                      balance_diffs: list[tuple[float, float | None]], interval_s: float,
                                      bound_s: float | None = None,
                                      hold_windows_ns: list[tuple[int, int]] = ()) -> Gate:
    """``state_mismatch`` of a portfolio run (``--symbols N``): ``timelines`` holds one
    tools.soak.timeline.compare result per symbol (``compare_per_symbol``: each symbol's orders and
    fills against the exchange's of that symbol; key "" = node orders no symbol claims). Every
    instrument's longest order-state or position episode (less its time in hold windows) must be
    within the bound: the gate's value is the worst instrument's. The balance is the account's,
    one series for the node (as ``state_mismatch_gate``)."""
    bound = interval_s if bound_s is None else bound_s
    if timelines is None:
        return Gate("state_mismatch", True, None, bound, "s", "not applicable: no exchange account (shadow)",
                    applicable=False)
    windows = list(hold_windows_ns)
    per: dict[str, dict] = {}
    for sym, tl in timelines.items():
        o_s, p_s = _longest_unheld(tl, "order", windows), _longest_unheld(tl, "position", windows)
        per[sym] = {"max_order_mismatch_s": tl["max_order_mismatch_s"],
                    "max_position_mismatch_s": tl["max_position_mismatch_s"],
                    "max_order_mismatch_outside_holds_s": round(o_s, 6),
                    "max_position_mismatch_outside_holds_s": round(p_s, 6),
                    "worst_s": max(o_s, p_s),
                    "fills_node": tl.get("fills_node"), "fills_exchange": tl.get("fills_exchange"),
                    "orders_node": tl.get("orders_node"), "orders_exchange": tl.get("orders_exchange"),
                    "longest": tl["longest"][:3]}
    worst = max(per, key=lambda k: per[k]["worst_s"]) if per else None
    worst_s = per[worst]["worst_s"] if worst is not None else math.nan
    balance_holds, balance_run, balance_off = _balance_check(balance_diffs)
    # An instrument without an order at the exchange compared nothing: its 0 s says nothing (a symbol
    # whose book never came, or whose every order was denied before the venue, passed the gate:
    # hostile review 27 F7). Key "" (orders no symbol claims) is not an instrument.
    silent = sorted(sym for sym, tl in timelines.items() if sym and tl.get("orders_exchange") == 0)
    ok = bool(per) and worst_s <= bound and balance_holds and not silent
    return Gate("state_mismatch", ok, worst_s, bound, "s",
                "per instrument: longest order-state or position mismatch (that instrument's orders and fills "
                "against the exchange's of that symbol), less its time inside freeze (hold) windows, <= one "
                "reconciliation interval, and every instrument has orders at the exchange (else nothing was compared); the account's "
                "balance never differs at two consecutive samples",
                {"worst_instrument": worst, "per_instrument": per, "instruments_without_orders": silent,
                 "hold_windows_ns": windows, "reconciliation_interval_s": interval_s,
                 "balance_consecutive_mismatched_samples": balance_run,
                 "balance_mismatched_samples": balance_off[:20]})


def orders_left_gate(exchange_open_after_stop: list[dict] | None, node_exit_code: int | None,
                     node_open_in_cache: int | None = None) -> Gate:
    if exchange_open_after_stop is None:  # shadow: the simulator is the venue
        n = node_open_in_cache if node_open_in_cache is not None else math.nan
        ok = node_open_in_cache == 0 and node_exit_code != 3
        return Gate("orders_left", ok, n, 0, "orders", "orders open in the node's cache (simulated venue) after stop "
                    "== 0", {"node_exit_code": node_exit_code})
    n = len(exchange_open_after_stop)
    ok = n == 0 and node_exit_code != 3
    return Gate("orders_left", ok, n, 0, "orders",
                "our orders open on the exchange after the node stopped == 0, and the node did not exit 3",
                {"open": exchange_open_after_stop[:20], "node_exit_code": node_exit_code})


def p99_growth_gate(first_q: dict[float, float], last_q: dict[float, float], quantile,
                    bound: float = P99_RATIO_MAX) -> Gate:
    """``first_q`` / ``last_q``: bucket counts observed in the first / last quarter."""
    n1 = max(first_q.values(), default=0.0)
    n4 = max(last_q.values(), default=0.0)
    p1, p4 = quantile(first_q, 0.99), quantile(last_q, 0.99)
    enough = n1 >= MIN_LATENCY_OBSERVATIONS and n4 >= MIN_LATENCY_OBSERVATIONS
    ratio = p4 / p1 if p1 and math.isfinite(p1) and math.isfinite(p4) else math.nan
    ok = enough and math.isfinite(ratio) and ratio < bound
    return Gate("p99_growth", ok, ratio, bound, "ratio",
                "tick-to-order p99 in the last quarter / p99 in the first quarter < bound",
                {"p99_first_quarter_ms": p1 * 1e3 if math.isfinite(p1) else None,
                 "p99_last_quarter_ms": p4 * 1e3 if math.isfinite(p4) else None,
                 "observations_first": n1, "observations_last": n4,
                 "note": "" if enough else f"not measurable in this run: {n1:.0f} and {n4:.0f} orders timed in the "
                                           f"first and last quarter; a p99 needs >= {MIN_LATENCY_OBSERVATIONS} in each"},
                applicable=enough)


def recorder_gate(import_result: dict | None, comparisons: dict[str, dict] | None) -> Gate:
    if import_result is None or not import_result.get("ok"):
        err = (import_result or {}).get("error", "no recording")
        return Gate("recorder", False, None, 0, "rows lost",
                    "the recording imports with --strict and holds every broadcast row outside fault windows",
                    {"import_error": err})
    lost = sum(c["lost_rows"] for c in comparisons.values())
    compared = sum(c["seconds_compared"] for c in comparisons.values())
    ok = lost == 0 and compared > 0
    return Gate("recorder", ok, lost, 0, "rows lost",
                "the recording imports with --strict and holds every broadcast row outside fault windows",
                {k: {kk: vv for kk, vv in c.items() if kk != "differing_seconds"} | {"differing_seconds":
                 c["differing_seconds"][:5]} for k, c in comparisons.items()})


def node_gate(survived: bool, exit_code: int | None, reason: str = "") -> Gate:
    ok = survived and exit_code == 0
    return Gate("node", ok, exit_code, 0, "exit code",
                "the node ran until the soak stopped it and exited 0",
                {"survived": survived, "reason": reason})
