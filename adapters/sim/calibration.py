"""The calibration file (``--calibration FILE.json`` / ``venue.calibration``).

Keys (finite numbers, >= 0, at most the bound of the ``[venue]`` key each overrides:
``MAX_LATENCY_MS`` for every latency, ``MAX_EXTRA_SLIPPAGE_BPS`` for the slippage): required
``latency_ms_mean`` and ``latency_ms_std`` (order entry, normal distribution),
``amend_latency_ms``, ``cancel_latency_ms`` (constant), ``extra_slippage_bps`` (extra cost per
fill, bps of notional, charged in the commission and reported as slippage); optional
``response_latency_ms`` (exchange -> local, constant; the ``[venue]`` value when absent).
Unknown keys are errors; the removed keys ``toxic_sweep_prob`` and ``md_latency_ms`` are errors
that say why (docs/queue_model.md, "Removed keys").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

# The [venue] bounds (mmbot/config/backtest.py RULES uses these same numbers): beyond one minute
# no order would ever be live and Nautilus' clock alerts overflow; beyond 1000 bps (10 %) a
# fill's commission is a typo and soon exceeds Nautilus' Money range.
MAX_LATENCY_MS = 60_000.0
MAX_EXTRA_SLIPPAGE_BPS = 1_000.0
# calibration key -> the [venue] key it overrides (docs/queue_model.md, "Calibration file")
OVERRIDES = {"latency_ms_mean": "order_latency_ms", "latency_ms_std": "order_latency_std_ms",
             "amend_latency_ms": "amend_latency_ms", "cancel_latency_ms": "cancel_latency_ms",
             "response_latency_ms": "response_latency_ms", "extra_slippage_bps": "extra_slippage_bps"}
UPPER = {key: MAX_EXTRA_SLIPPAGE_BPS if key == "extra_slippage_bps" else MAX_LATENCY_MS for key in OVERRIDES}

REQUIRED = ("latency_ms_mean", "latency_ms_std", "amend_latency_ms", "cancel_latency_ms", "extra_slippage_bps")
OPTIONAL = ("response_latency_ms",)
REMOVED = {
    "toxic_sweep_prob": "removed: it filled our deeper orders against a book that did not move, so it could only "
                        "raise PnL (docs/queue_model.md, \"Removed keys\")",
    "md_latency_ms": "removed: feed latency comes from the data and responses take response_latency_ms "
                     "(docs/queue_model.md, \"Removed keys\")",
}


class CalibrationError(ValueError):
    """One line naming the file and the key."""


@dataclass(frozen=True)
class Calibration:
    latency_ms_mean: float
    latency_ms_std: float
    amend_latency_ms: float
    cancel_latency_ms: float
    extra_slippage_bps: float
    response_latency_ms: float | None = None


def parse_calibration(data: object, source: str = "<calibration>") -> Calibration:
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: must be a JSON object")
    for key in sorted(data):
        if key in REMOVED:
            raise CalibrationError(f"{source}: {key}: {REMOVED[key]}")
        if key not in REQUIRED and key not in OPTIONAL:
            raise CalibrationError(f"{source}: {key}: unknown key (known: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in data:
            raise CalibrationError(f"{source}: {key}: missing")
    for key, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CalibrationError(f"{source}: {key}: must be a finite number, got {v!r}")
        if v < 0:
            raise CalibrationError(f"{source}: {key}: must be >= 0, got {v!r}")
        if v > UPPER[key]:
            raise CalibrationError(f"{source}: {key}: must be <= {UPPER[key]:g} (the bound of venue.{OVERRIDES[key]}), "
                                   f"got {v!r}")
    return Calibration(**{k: float(v) for k, v in data.items()})


def load_calibration(path: str | Path) -> Calibration:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: invalid JSON: {e}") from None
    return parse_calibration(data, str(path))
