"""Append-only, hash-chained audit log of guard transitions (JSONL).

Each line is one JSON object with sorted keys and no spaces. ``sha256`` is the SHA-256 (hex)
of the record's canonical bytes without the ``sha256`` key; ``prev_sha256`` is the previous
record's ``sha256`` (64 zeros on the first line). Editing a record breaks its own hash;
deleting, inserting or reordering lines breaks the chain; ``verify_chain`` reports the first
line where either happens.

Records: ``seq`` (0-based line number), ``ts_ns`` and ``time`` (engine clock: simulated time
in backtests, wall time live), ``guard``, ``old_state``, ``new_state``, ``reason``,
``numbers`` (the values that caused it), and the constraint (``allow_bid``, ``allow_ask``,
``spread_multiplier``, ``trading_state``, ``instrument_id``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

GENESIS = "0" * 64


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def encode_record(record: dict) -> bytes:
    """Canonical line bytes of a record (sorted keys, compact, NaN/inf as null)."""
    return json.dumps(_clean(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


class AuditLog:
    """Appends chained records to ``path``; continues the chain of an existing file.

    ``fsync`` forces each record to disk (live); off in backtests. A torn last line (a crash
    mid-write) is left for ``verify_chain`` to report rather than silently repaired.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prev = GENESIS
        self.seq = 0
        if self.path.exists():
            lines = [ln for ln in self.path.read_bytes().split(b"\n") if ln]
            if lines:
                last = json.loads(lines[-1])
                self.prev = str(last.get("sha256", GENESIS))
                self.seq = len(lines)
        self._f = open(self.path, "ab")  # noqa: SIM115 (kept open for the run)

    def append(self, record: dict) -> str:
        """Write one record (``seq`` and ``prev_sha256`` are added); returns its SHA-256."""
        body = {**record, "seq": self.seq, "prev_sha256": self.prev}
        body.pop("sha256", None)
        digest = sha256_hex(encode_record(body))
        self._f.write(encode_record({**body, "sha256": digest}) + b"\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.prev = digest
        self.seq += 1
        return digest

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def verify_chain(path: str | os.PathLike[str]) -> tuple[bool, int, str]:
    """Check a log: ``(True, n_records, "ok")`` or ``(False, line_number, problem)``, the line
    number 1-based, pointing at the first record that does not verify."""
    prev = GENESIS
    n = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\n")
            try:
                rec = json.loads(line)
            except ValueError:
                return False, n, "not valid JSON"
            if not isinstance(rec, dict):
                return False, n, "not a JSON object"
            body = {k: v for k, v in rec.items() if k != "sha256"}
            if rec.get("sha256") != sha256_hex(encode_record(body)):
                return False, n, "sha256 does not match the record's content (edited)"
            if rec.get("prev_sha256") != prev:
                return False, n, "prev_sha256 does not match the previous record (line removed, inserted or moved)"
            if rec.get("seq") != n - 1:
                return False, n, f"seq is {rec.get('seq')!r}, expected {n - 1}"
            prev = rec["sha256"]
    return True, n, "ok"
