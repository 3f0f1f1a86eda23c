"""Gates: pass/fail checks of the champion's out-of-sample summary (see objective.py for units).

Each configured gate gives a verdict ``{"gate", "metric", "op", "threshold", "value", "passed"}``;
a metric that is undefined (NaN, e.g. no fills) fails its gate.
"""

from __future__ import annotations

import math
from typing import Any

from mmbot.tuning.config import GatesSection

# gate key -> (summary metric, comparison, how the metric is turned into the compared value)
GATES: dict[str, tuple[str, str]] = {
    "min_hit_rate": ("hit_rate", ">="),
    "min_maker_share": ("maker_share", ">="),
    "max_cvar_loss_usdt": ("cvar95_minute_pnl", "<="),  # compared as |CVaR95| (USDT/minute)
    "min_net_pnl_usdt": ("net_pnl", ">="),
    "max_drawdown_usdt": ("max_drawdown_usdt", "<="),
}


def evaluate_gates(gates: GatesSection, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Verdicts of the configured gates on an out-of-sample summary, in ``GATES`` order."""
    verdicts = []
    for gate, (metric, op) in GATES.items():
        threshold = getattr(gates, gate)
        if threshold is None:
            continue
        value = summary.get(metric, math.nan)
        value = math.nan if value is None else float(value)
        if gate == "max_cvar_loss_usdt":
            value = abs(value)
        ok = math.isfinite(value) and (value >= threshold if op == ">=" else value <= threshold)
        verdicts.append({"gate": gate, "metric": metric if gate != "max_cvar_loss_usdt" else "|cvar95_minute_pnl|",
                         "op": op, "threshold": float(threshold), "value": value, "passed": bool(ok)})
    return verdicts


def failed(verdicts: list[dict[str, Any]]) -> list[str]:
    """Names of the failed gates."""
    return [v["gate"] for v in verdicts if not v["passed"]]
