"""The "Simulator" section of report.md / report.html, from ``metrics.simulator``: the queue
simulator's own counters (``QueueSimExecutionClient.stats``, adapters/sim/exec_client.py), so a
reader can tell how the fills were produced: how many market events were matched out of exchange
order, how many orders joined at unknown depth, how many commands raced, what filled. Absent for
``fill_model = "nautilus"`` (Nautilus' own matching engine keeps no such counters)."""

from __future__ import annotations

from typing import Any

HEADER = ("Counter", "Value", "Meaning")

# (key, meaning) in display order; every counter of the simulator not listed here is still shown
# (after these, alphabetically) so a new counter can never be dropped from the report.
MEANINGS: tuple[tuple[str, str], ...] = (
    ("market_events", "book messages and trades the simulated exchange applied"),
    ("late_events", "market events received after x + response latency: applied on receipt, in receive order"),
    ("late_reordered", "late events applied after an item with a later exchange key"),
    ("negative_feed_latency_events", "market events with ts_init < ts_event (receive clock behind the exchange's)"),
    ("arrivals_after_seen_event", "commands moved to the latest exchange time the strategy had seen"),
    ("unknown_depth_joins", "orders that joined a level beyond the visible depth (queue unknown)"),
    ("post_only_rejects", "new orders rejected post-only (would take liquidity)"),
    ("post_only_amend_rejects", "orders cancelled post-only by an amend to a crossing price"),
    ("post_only_own_cross_rejects", "of those, crossing only one of our own resting orders"),
    ("cancel_before_order", "cancels that reached the exchange before their order (rejected 110001)"),
    ("cancel_lost_race", "cancels that arrived after the order was filled or gone (rejected 110001)"),
    ("amend_lost_priority", "amends (new price or larger size) that sent the order to the back of the queue"),
    ("order_queries", "order status queries (answered by the events themselves)"),
    ("fills", "fills generated"),
    ("filled_lots", "lots filled"),
    ("applied_at_end", "items the exchange reached in the last response latency, applied at the run's end"),
    ("unapplied_at_end", "items left at the end (exchange time after it, e.g. commands in flight)"),
)
CAUSE_MEANING = "fills with this cause (docs/queue_model.md, Fill attribution)"
NOTE = ("The queue simulator's counters (docs/queue_model.md). Late events are matched in receive "
        "order, not exchange order; unknown-depth joins queue behind whatever becomes visible.")


def _section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    sim = metrics.get("simulator")
    return sim if isinstance(sim, dict) else None


def rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    sim = _section(metrics) or {}
    known = dict(MEANINGS)
    out = [(k, str(sim[k]), m) for k, m in MEANINGS if k in sim]
    for cause, n in sorted((sim.get("fill_causes") or {}).items()):
        out.append((f"fill_causes.{cause}", str(n), CAUSE_MEANING))
    out += [(k, str(v), "") for k, v in sorted(sim.items()) if k not in known and k != "fill_causes"]
    return out


def markdown_parts(metrics: dict[str, Any], md_table) -> list[str]:
    """Lines of the Markdown section ([] without a simulator section)."""
    if _section(metrics) is None:
        return []
    return ["## Simulator", "", NOTE, "", md_table(HEADER, rows(metrics), "lrl"), ""]


def html_part(metrics: dict[str, Any], html_table, escape) -> str:
    """HTML of the section ("" without a simulator section)."""
    if _section(metrics) is None:
        return ""
    return f"<h2>Simulator</h2><p class=\"note\">{escape(NOTE)}</p>" + html_table(HEADER, rows(metrics), {1}, "meta")
