"""Canonical, byte-stable JSON and atomic file writes.

Canonical form (what makes two equal inputs give identical bytes):

- object keys are converted to ``str`` and sorted; indentation is 2 spaces, separators
  ``", "``/``": "`` and the document ends with a single ``"\\n"``; non-ASCII is kept as UTF-8;
- floats are rounded to ``FLOAT_SIG_DIGITS`` = 10 significant digits and then printed with
  Python's shortest round-trip ``repr`` (so ``0.1 + 0.2`` is written ``0.3``). Ten significant
  digits keep USDT amounts below 1e8 exact to the cent and tiny values (fees, bps) readable,
  while hiding float summation noise in the last bits. ``-0.0`` is written ``0.0``;
- NaN and +/-inf become ``null``; ints (Python or numpy) are written exactly, never rounded;
- numpy scalars/arrays, pandas scalars, tuples, sets (sorted), ``Path``, ``datetime`` and
  ``Enum`` values are converted to plain JSON types.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_SIG_DIGITS = 10


def round_float(x: float, sig_digits: int = FLOAT_SIG_DIGITS) -> float | None:
    """``x`` rounded to ``sig_digits`` significant digits; ``None`` for NaN/inf."""
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0  # also folds -0.0, whose bytes would differ
    return float(f"{x:.{sig_digits}g}")


def to_canonical(obj: Any, sig_digits: int = FLOAT_SIG_DIGITS) -> Any:
    """``obj`` converted to plain JSON types (dict/list/str/int/float/bool/None), floats rounded."""
    # bool before int: bool is an int subclass and must stay true/false.
    if obj is None or isinstance(obj, (bool, np.bool_)):
        return None if obj is None else bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round_float(float(obj), sig_digits)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_canonical(v, sig_digits) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_canonical(v, sig_digits) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [to_canonical(v, sig_digits) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_canonical(v, sig_digits) for v in obj]
        # Sets have no order; sort by their canonical text so the output never depends on hashing.
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, enum.Enum):
        return to_canonical(obj.value if not isinstance(obj.value, enum.Enum) else obj.name, sig_digits)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if hasattr(obj, "isoformat"):  # pandas.Timestamp and friends
        return obj.isoformat()
    if hasattr(obj, "item"):  # other numpy/pandas scalars
        return to_canonical(obj.item(), sig_digits)
    raise TypeError(f"cannot convert {type(obj).__name__} to canonical JSON")


def dumps_canonical(obj: Any, sig_digits: int = FLOAT_SIG_DIGITS) -> bytes:
    """Canonical JSON of ``obj`` as UTF-8 bytes ending in a newline (see module docstring)."""
    text = json.dumps(
        to_canonical(obj, sig_digits),
        sort_keys=True,
        indent=2,
        separators=(",", ": "),
        ensure_ascii=False,
        allow_nan=False,
    )
    return (text + "\n").encode("utf-8")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write.
    The parent directory is created if missing. Returns the final path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``dumps_canonical(obj)`` to ``path`` atomically. Returns the final path."""
    return write_bytes_atomic(path, dumps_canonical(obj))
