"""The "Risk guards" section of report.md / report.html, from ``metrics.risk.guards``
(written by ``strategies.risk.supervisor.RiskSupervisor.report``)."""

from __future__ import annotations

from typing import Any

TRANSITION_HEADER = ("Time (UTC)", "Guard", "From", "To", "Reason")
STATE_HEADER = ("Guard", "Final state", "Transitions", "Time in each state (s)")


def _guards(metrics: dict[str, Any]) -> dict[str, Any] | None:
    risk = metrics.get("risk")
    g = risk.get("guards") if isinstance(risk, dict) else None
    return g if isinstance(g, dict) else None


def state_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    g = _guards(metrics) or {}
    rows = []
    for name, m in sorted((g.get("guards") or {}).items()):
        spent = m.get("time_in_state_s") or {}
        rows.append((name, str(m.get("state")), str(m.get("transitions")),
                     ", ".join(f"{s} {v:.3f}" for s, v in sorted(spent.items()))))
    return rows


def transition_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    g = _guards(metrics) or {}
    return [(t["time"], t["guard"], t["old_state"], t["new_state"], t["reason"]) for t in g.get("transitions") or []]


def summary(metrics: dict[str, Any]) -> str:
    g = _guards(metrics) or {}
    more = g.get("transitions_truncated") or 0
    return (f"{g.get('n_transitions', 0)} transition(s); final RiskEngine trading state "
            f"{g.get('final_trading_state', 'ACTIVE')}. Every transition, with the numbers that caused it, "
            f"is in audit.jsonl (check it with `mmbot audit verify`)."
            + (f" The table shows the first {len(g.get('transitions') or [])}; {more} more are in the audit log."
               if more else ""))


def markdown_parts(metrics: dict[str, Any], md_table) -> list[str]:
    """Lines of the Markdown section ([] when the run had no guards)."""
    if _guards(metrics) is None:
        return []
    parts = ["## Risk guards", "", summary(metrics), "", md_table(STATE_HEADER, state_rows(metrics), "llrl"), ""]
    rows = transition_rows(metrics)
    if rows:
        parts += [md_table(TRANSITION_HEADER, rows, "lllll"), ""]
    return parts


def html_part(metrics: dict[str, Any], html_table, escape) -> str:
    """HTML of the section ("" when the run had no guards)."""
    if _guards(metrics) is None:
        return ""
    out = f"<h2>Risk guards</h2><p class=\"note\">{escape(summary(metrics))}</p>"
    out += html_table(STATE_HEADER, state_rows(metrics), {2}, "meta")
    rows = transition_rows(metrics)
    if rows:
        out += html_table(TRANSITION_HEADER, rows, set(), "meta")
    return out
