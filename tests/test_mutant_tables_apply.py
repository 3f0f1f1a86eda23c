"""Every mutant in the mutant runners still applies to today's code.

A runner (tools/mutants_*.py, tools/config_mutants.py, tools/feed_mutants.py,
tests/mutants_wf_promote.py) replaces an exact original text with a broken one and expects a test
to fail. When the code under it changes, the original text is no longer there: the runner reports
a SETUP ERROR (or applies nothing) and the validator it was meant to prove is unproven while the
docs' mutation tables still say "caught" — two portfolio mutants were in that state for a whole
stop. The runners themselves take minutes to hours and live outside CI; this test only checks,
in milliseconds, that each original text occurs exactly once in its file, so a refactor that moves
a guarded line fails here and the mutant is updated in the same change.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ["tools.mutants_portfolio", "tools.mutants_import", "tools.mutants_data", "tools.mutants_liveops",
           "tools.mutants_ops", "tools.config_mutants", "tools.feed_mutants", "tests.mutants_wf_promote"]


def _source(name: str) -> Path:
    """A file path ("mmbot/x.py") or a dotted module name ("adapters.bybit_funding")."""
    return ROOT / (name if name.endswith(".py") else name.replace(".", "/") + ".py")


def _edits(entry) -> tuple[str, str, list[str]]:
    """(mutant name, file, original texts) of one table entry, whatever the runner's format."""
    if dataclasses.is_dataclass(entry):
        d = dataclasses.asdict(entry)
        return d["name"], d.get("file") or d.get("path") or d["module"], [d["old"]]
    name, rest = entry[0], entry[1:]
    file, spec = rest[0], rest[1]
    if isinstance(spec, list):  # [(old, new), ...]
        return name, file, [old for old, _new in spec]
    return name, file, [spec]


def _entries(runner: str):
    table = importlib.import_module(runner).MUTANTS
    if isinstance(table, dict):  # name -> (file, old, new, ...) or (file, [(old, new)], ...)
        return [(name, *value) for name, value in table.items()]
    return list(table)


def _cases():
    for runner in RUNNERS:
        for entry in _entries(runner):
            name, file, olds = _edits(entry)
            yield pytest.param(file, olds, id=f"{runner.rsplit('.', 1)[1]}: {name}"[:120])


@pytest.mark.parametrize(("file", "olds"), list(_cases()))
def test_each_mutants_original_text_occurs_once(file, olds):
    text = _source(file).read_text()
    for old in olds:
        assert text.count(old) == 1, f"{file}: the mutant's original text occurs {text.count(old)} times: {old[:80]!r}"


def test_every_runner_has_mutants():
    """A runner whose table this test cannot read would silently check nothing."""
    for runner in RUNNERS:
        assert len(_entries(runner)) >= 3, runner
