"""Walk-forward splits: rolling (or anchored) train windows, each followed by its test window.

All times are int64 ns since the epoch (UTC); durations are ns. A window [start, end] is passed
to the backtest as ``run.start``/``run.end`` (Nautilus replays both ends inclusive).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mmbot.report.metrics import NS_PER_MINUTE
from mmbot.timeutil import ns_to_iso


@dataclass(frozen=True)
class Split:
    """Split ``index``: train [train_start_ns, train_end_ns], test [test_start_ns, test_end_ns];
    test_start_ns == train_end_ns."""

    index: int
    train_start_ns: int
    train_end_ns: int
    test_start_ns: int
    test_end_ns: int

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "train": {"start_ns": self.train_start_ns, "end_ns": self.train_end_ns,
                      "start": ns_to_iso(self.train_start_ns), "end": ns_to_iso(self.train_end_ns)},
            "test": {"start_ns": self.test_start_ns, "end_ns": self.test_end_ns,
                     "start": ns_to_iso(self.test_start_ns), "end": ns_to_iso(self.test_end_ns)},
        }


def make_splits(start_ns: int, end_ns: int, train_ns: int, test_ns: int, step_ns: int,
                anchored: bool = False) -> list[Split]:
    """Splits over [start_ns, end_ns] (ns): split k trains on
    [start + k*step, start + k*step + train] (anchored: [start, start + k*step + train]) and tests
    on the following ``test_ns``. Splits whose test window would end after ``end_ns`` are not made.
    """
    if min(train_ns, test_ns, step_ns) <= 0:
        raise ValueError("train, test and step must be > 0")
    out: list[Split] = []
    k = 0
    while True:
        train_end = start_ns + k * step_ns + train_ns
        test_end = train_end + test_ns
        if test_end > end_ns:
            return out
        train_start = start_ns if anchored else start_ns + k * step_ns
        out.append(Split(k, train_start, train_end, train_end, test_end))
        k += 1


def floor_minute(ts_ns: int) -> int:
    """``ts_ns`` rounded down to a whole UTC minute (ns)."""
    return ts_ns - ts_ns % NS_PER_MINUTE


def data_minutes(catalog_dir: Path, instrument_id: str) -> np.ndarray:
    """Sorted unique minute starts (int64 ns, UTC-aligned) that hold at least one order-book
    delta of ``instrument_id`` in the catalog. Reads only the ``ts_init`` column, file by file."""
    folder = Path(catalog_dir) / "data" / "order_book_deltas" / instrument_id
    minutes = [np.empty(0, dtype=np.int64)]
    for f in sorted(folder.glob("*.parquet")):
        ts = pq.read_table(f, columns=["ts_init"]).column("ts_init").to_numpy().astype(np.int64)
        minutes.append(np.unique(ts - ts % NS_PER_MINUTE))
    return np.unique(np.concatenate(minutes))


def minutes_with_data(minutes: np.ndarray, start_ns: int, end_ns: int) -> int:
    """How many of the data ``minutes`` (see :func:`data_minutes`) start in [floor(start), end)."""
    lo = np.searchsorted(minutes, floor_minute(start_ns), side="left")
    hi = np.searchsorted(minutes, end_ns, side="left")
    return int(hi - lo)


def skip_reason(split: Split, minutes: np.ndarray, min_test_minutes: float) -> str | None:
    """Why a split cannot be used before running anything, or None: no data in its train window,
    or fewer data minutes than ``min_test_minutes`` in its test window."""
    if minutes_with_data(minutes, split.train_start_ns, split.train_end_ns) == 0:
        return "train window has no order-book data"
    n_test = minutes_with_data(minutes, split.test_start_ns, split.test_end_ns)
    if n_test < min_test_minutes:
        return f"test window has {n_test} minute(s) with data < min_test_minutes {min_test_minutes:g}"
    return None
