"""Problems found while loading market data, and the per-import report.

Nothing is dropped silently: every skipped line, message, delta or trade is counted here
with its file, line and kind, and ends up in the machine-readable import report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

# Problem kinds (stable strings: they appear in JSON reports and tests).
MALFORMED_LINE = "malformed_line"          # not JSON / truncated / missing fields
BAD_NUMBER = "bad_number"                  # negative or non-numeric price/size
UPDATE_ID_GAP = "update_id_gap"            # u did not step by one: book invalid until next snapshot
DROPPED_IN_GAP = "dropped_in_gap"          # delta message dropped while the book was invalid
DELTA_BEFORE_SNAPSHOT = "delta_before_snapshot"
TS_BACKWARDS = "ts_backwards"              # timestamp went backwards (kept; ts_init clamped)
CROSSED_BOOK = "crossed_book"              # book crossed after applying a message: invalidated
MIXED_SYMBOL = "mixed_symbol"              # a second symbol in a one-symbol file: dropped
UNKNOWN_TOPIC = "unknown_topic"            # a recording line of a topic mmbot does not import
EMPTY_FILE = "empty_file"
BAD_HEADER = "bad_header"
BAD_ARCHIVE = "bad_archive"                # unreadable zip/gzip: the file is rejected
UNREADABLE_FILE = "unreadable_file"
UNKNOWN_INSTRUMENT = "unknown_instrument"
DATE_MISMATCH = "date_mismatch"            # a line's exchange time outside the day in the file name (kept)
NAME_MISMATCH = "name_mismatch"            # the whole file contradicts its name (other symbol / other day)

# Kinds that reject the whole input even outside strict mode (exit status 2).
FATAL_KINDS = frozenset({BAD_ARCHIVE, UNREADABLE_FILE, UNKNOWN_INSTRUMENT, BAD_HEADER, NAME_MISMATCH})

MAX_LINES_PER_KIND = 1000  # line numbers kept per (file, kind); the count is always exact


class ImportRejected(Exception):
    """The input is rejected as a whole (strict mode, unreadable file, unknown instrument)."""


@dataclass
class FileStats:
    path: str
    lines: int = 0
    messages: int = 0
    problems: Counter = field(default_factory=Counter)
    problem_lines: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    first_problem: dict[str, str] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # expected non-data lines (e.g. subscribe acks)


class ProblemLog:
    """Collects problems for one import; in strict mode the first problem raises."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.files: dict[str, FileStats] = {}

    def file(self, path: str) -> FileStats:
        stats = self.files.get(path)
        if stats is None:
            stats = self.files[path] = FileStats(path)
        return stats

    def add(self, path: str, line: int, kind: str, detail: str = "", count: int = 1) -> None:
        """Record `count` problems of `kind` at `path:line` (line 0 = the file as a whole)."""
        stats = self.file(path)
        stats.problems[kind] += count
        lines = stats.problem_lines[kind]
        if len(lines) < MAX_LINES_PER_KIND:
            lines.append(line)
        if kind not in stats.first_problem:
            stats.first_problem[kind] = f"line {line}: {detail}" if detail else f"line {line}"
        if self.strict or kind in FATAL_KINDS:
            where = f"{path}:{line}" if line else path
            raise ImportRejected(f"{where}: {kind}: {detail}" if detail else f"{where}: {kind}")

    def skip(self, path: str, kind: str) -> None:
        """Count a line that is not market data by design (not a problem, never fatal)."""
        self.file(path).skipped[kind] += 1

    def total(self) -> Counter:
        out: Counter = Counter()
        for stats in self.files.values():
            out.update(stats.problems)
        return out

    def to_json(self) -> list[dict]:
        return [
            {
                "file": s.path,
                "lines": s.lines,
                "messages": s.messages,
                "skipped": dict(sorted(s.skipped.items())),
                "problems": {
                    kind: {
                        "count": s.problems[kind],
                        "lines": s.problem_lines[kind],
                        "first": s.first_problem[kind],
                    }
                    for kind in sorted(s.problems)
                },
            }
            for s in sorted(self.files.values(), key=lambda s: s.path)
        ]
