"""Time parsing and formatting at the CLI edge (ns since epoch, UTC).

Accepted time points (``parse_time_ns``), and nothing else, so that a typo cannot silently move
a backtest or a download by months or decades:

- ISO-8601 in extended format: a date ``2024-06-03`` (midnight UTC), or a date and time
  ``2024-06-03T00:30``, ``2024-06-03T00:30:00``, ``2024-06-03T00:30:00.123456789`` (``T`` or one
  space), optionally followed by ``Z`` or an offset ``+02:00`` / ``+0200`` / ``+02``. No offset
  means UTC.
- An epoch number with an explicit unit: ``1717372800s``, ``1717372800000ms``,
  ``1717372800000000us``, ``1717372800000000000ns`` (a fraction is allowed where it stays a whole
  number of ns: ``1717372800.5s``).
- A bare integer of exactly 19 digits: ns since the epoch (what mmbot writes into configs it
  generates). Any shorter bare integer is refused: ``1717372800`` could be seconds, ms, us or ns.

Everything else (``03/06/2024``, ``20240603``, ``June 3 2024``, ``now``) is refused with one line
saying what is accepted.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd

_DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|min|h|d)$")
_DUR_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
           "min": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}

# ISO-8601 extended format only: the basic format (20240603) is a bare integer to a reader.
_ISO_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<hh>\d{2}):(?P<mm>\d{2})(?::(?P<ss>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|z|[+-]\d{2}(?::?\d{2})?)?)?$",
)
_EPOCH_UNIT_RE = re.compile(r"^(?P<whole>\d+)(?:\.(?P<frac>\d+))?(?P<unit>ns|us|ms|s)$")
_EPOCH_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_NS_DIGITS = 19  # 10**18 ns = 2001-09-09; every 19-digit count of ns is a date in 2001..2262
_MAX_NS = 2**63 - 1  # int64 ns (Nautilus' UnixNanos, pandas' Timestamp)
ACCEPTED = ("use ISO-8601 (2024-06-03, 2024-06-03T00:30:00Z, 2024-06-03T02:30:00+02:00) "
            "or an epoch number with its unit (1717372800s, 1717372800000ms, 1717372800000000us, "
            "1717372800000000000ns)")


def ns_to_iso(ts_ns: int | None) -> str:
    """ISO-8601 UTC with ms, or '-' for None."""
    if ts_ns is None:
        return "-"
    return pd.Timestamp(ts_ns, unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time_ns(text: str | int) -> int:
    """ns since epoch (UTC) of a time point; ``ValueError`` (one line) for anything else.

    A Python ``int`` is taken as ns (callers inside mmbot); strings follow the module rules.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a time: {text!r}; {ACCEPTED}")
    if isinstance(text, int):
        return _check_range(text, text)
    s = str(text).strip()
    if m := _ISO_RE.match(s):
        return _iso_ns(s, m)
    if m := _EPOCH_UNIT_RE.match(s):
        scale = _EPOCH_UNIT_NS[m["unit"]]
        frac = m["frac"] or "0"
        frac_ns = int(frac) * scale
        if frac_ns % 10 ** len(frac):
            raise ValueError(f"not a time: {text!r}: finer than 1 ns; {ACCEPTED}")
        return _check_range(int(m["whole"]) * scale + frac_ns // 10 ** len(frac), text)
    if s.isdigit() and len(s) == _NS_DIGITS:
        return _check_range(int(s), text)
    if s.isdigit():
        raise ValueError(f"ambiguous time {text!r}: a bare number could be seconds, ms, us or ns; add the "
                         f"unit ({s}s, {s}ms, {s}us, {s}ns) or use ISO-8601 (e.g. 2024-06-03T00:30:00Z)")
    raise ValueError(f"not a time: {text!r}; {ACCEPTED}")


def _iso_ns(text: str, m: re.Match) -> int:
    try:
        day = datetime.strptime(m["date"], "%Y-%m-%d").replace(tzinfo=timezone.utc)
        hh, mm, ss = int(m["hh"] or 0), int(m["mm"] or 0), int(m["ss"] or 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise ValueError("hour, minute or second out of range")
        offset_s = _offset_s(m["tz"]) if m["tz"] else 0
    except ValueError as e:
        raise ValueError(f"not a time: {text!r} ({e}); {ACCEPTED}") from None
    frac = m["frac"] or ""
    frac_ns = int((frac + "000000000")[:9]) if frac else 0
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    whole_s = (day - epoch) // timedelta(seconds=1) + hh * 3600 + mm * 60 + ss - offset_s
    return _check_range(whole_s * 1_000_000_000 + frac_ns, text)


def _offset_s(tz: str) -> int:
    if tz in ("Z", "z"):
        return 0
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"UTC offset {tz} out of range")
    return sign * (hours * 3600 + minutes * 60)


def _check_range(ns: int, text) -> int:
    if not 0 <= ns <= _MAX_NS:
        raise ValueError(f"time {text!r} is outside 1970-01-01 .. 2262-04-11 (int64 ns since the epoch)")
    return ns


def parse_duration_ns(text: str) -> int:
    """ns of a duration such as ``30m``, ``2h``, ``1d``, ``500ms``."""
    m = _DUR_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 15m, 2h, 1d)")
    return int(float(m.group(1)) * _DUR_NS[m.group(2)])
