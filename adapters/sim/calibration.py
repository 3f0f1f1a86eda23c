"""The calibration file (``--calibration FILE.json`` / ``venue.calibration``).

Keys (all required, numbers): ``latency_ms_mean`` and ``latency_ms_std`` (order entry, normal
distribution), ``amend_latency_ms``, ``cancel_latency_ms`` (constant), ``toxic_sweep_prob``
(probability in [0, 1] that a fill is followed by an adverse sweep through our other orders on
the same side), ``extra_slippage_bps`` (extra cost per fill, bps of notional, charged as fee).
Optional: ``md_latency_ms`` (market-data latency when the data carries none). Unknown keys are
errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("latency_ms_mean", "latency_ms_std", "amend_latency_ms", "cancel_latency_ms",
            "toxic_sweep_prob", "extra_slippage_bps")
OPTIONAL = ("md_latency_ms",)


class CalibrationError(ValueError):
    """One line naming the file and the key."""


@dataclass(frozen=True)
class Calibration:
    latency_ms_mean: float
    latency_ms_std: float
    amend_latency_ms: float
    cancel_latency_ms: float
    toxic_sweep_prob: float
    extra_slippage_bps: float
    md_latency_ms: float | None = None


def parse_calibration(data: object, source: str = "<calibration>") -> Calibration:
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: must be a JSON object")
    for key in sorted(data):
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
    if data["toxic_sweep_prob"] > 1:
        raise CalibrationError(f"{source}: toxic_sweep_prob: must be <= 1, got {data['toxic_sweep_prob']!r}")
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
