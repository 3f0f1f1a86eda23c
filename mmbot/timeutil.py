"""Time parsing and formatting at the CLI edge (ns since epoch, UTC)."""

from __future__ import annotations

import re

import pandas as pd

_DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|min|h|d)$")
_DUR_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
           "min": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}


def ns_to_iso(ts_ns: int | None) -> str:
    """ISO-8601 UTC with ms, or '-' for None."""
    if ts_ns is None:
        return "-"
    return pd.Timestamp(ts_ns, unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time_ns(text: str | int) -> int:
    """ns since epoch from an ISO-8601 string (naive = UTC) or an integer of ns."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if s.isdigit():
        return int(s)
    try:
        ts = pd.Timestamp(s)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a time: {text!r} (use ISO-8601, e.g. 2024-06-03T00:30:00Z)") from e
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value)


def parse_duration_ns(text: str) -> int:
    """ns of a duration such as ``30m``, ``2h``, ``1d``, ``500ms``."""
    m = _DUR_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 15m, 2h, 1d)")
    return int(float(m.group(1)) * _DUR_NS[m.group(2)])
