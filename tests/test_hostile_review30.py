"""Hostile review 30: the queue simulator's reused alert names (c95ad1d), the backtest ledger's
spill folder beside the run folder (53bb646, df856f1) and run.chunk_size 50,000 (cb6df28), attacked
as a hostile user or a bad day would. Each test failed on 7edbd4d (fixed here; H30-Fn)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmbot.backtest.run as R
from mmbot.config.backtest import ConfigError, load_backtest_config

REPO = Path(__file__).resolve().parent.parent
SHORT = ['run.end="2024-12-01T07:32:00Z"', "report.html=false"]


def _cfg(*sets: str):
    return load_backtest_config(REPO / "config" / "backtest.toml", [*SHORT, *sets])


def _spills(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".ledger-" in p.name)


# -- F1: a config refused after the spill folder was made left it beside --out -----------------


def test_h30_f1_a_refused_config_leaves_no_spill_folder(tmp_path):
    """level_size 2 XRP is below the instrument's minimum order value: refused with one line
    (exit 2) by the run config's builder, which ran after the spill folder was made and outside
    the try that removes it: ``.bt.ledger-XXXX`` stayed beside --out, one more per refused run."""
    with pytest.raises(ConfigError, match="minimum order value"):
        R.run_backtest(_cfg("strategy.level_size=2"), out_dir=tmp_path / "bt")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- F2: an --out name that ran before the spill was a traceback --------------------------------


def test_h30_f2_a_long_out_name_that_ran_before_still_runs(tmp_path):
    """A 240-character run folder name: its audit log (``.<name>.audit.jsonl``, 253) and staging
    folder (``.<name>.XXXXXXXX``, 250) fit the file system's 255 bytes, the spill folder
    ``.<name>.ledger-XXXXXXXX`` (256) did not: OSError ENAMETOOLONG, a traceback and exit 1 where
    the run worked before 53bb646. Non-ASCII counts in bytes (2 each here)."""
    for name in ("a" * 240, "é" * 120):
        out = R.run_backtest(_cfg(), out_dir=tmp_path / name)
        assert out.report["metrics"]["counts"]["n_fills"] > 0
        assert _spills(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a" * 240, "é" * 120])


# -- F3: a killed run's spill folder stayed forever; the next runs did not clean it -------------


def _start_run(out: Path) -> subprocess.Popen:
    """A full-hour backtest in its own process, spilling every simulated second."""
    return subprocess.Popen([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--out", str(out), "--no-progress",
                             "--set", "report.html=false", "--set", "run.purge_interval_s=1"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_spill(parent: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it spilled"
        for name in _spills(parent):
            if (parent / name / "fills.pkl").exists():
                return name
        time.sleep(0.1)
    raise AssertionError("no spill folder appeared")


def test_h30_f3_a_killed_run_s_spill_folder_is_removed_by_the_next_run_but_a_running_one_s_is_kept(tmp_path):
    """SIGKILL (or SIGTERM: Python's default handler runs no ``finally``) mid-run left
    ``.bt.ledger-XXXX`` with the rows spilled so far, and every later run made a new one beside it:
    they piled up, hidden, however often the same --out was run again. Now the next run aimed at
    the same --out removes the folders of runs that are gone; a run still going keeps its own (two
    runs at the same --out at once are allowed, df856f1)."""
    out = tmp_path / "bt"
    running = _start_run(out)
    try:
        live = _wait_for_spill(tmp_path, running)
        R.run_backtest(_cfg(), out_dir=out)  # while the other run spills beside it
        assert _spills(tmp_path) == [live], "a running run's spill folder was removed"
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
    assert _spills(tmp_path) == [live]  # what the kill left
    R.run_backtest(_cfg(), out_dir=out)
    assert _spills(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bt"]
    assert os.listdir(out)  # the run folder itself was published


# -- F4: a parent folder the spill cannot be made in was a traceback ---------------------------


def test_h30_f4_a_spill_folder_that_cannot_be_made_is_one_line_exit_2(tmp_path, monkeypatch):
    """A read-only or full parent of --out (as root the permission bits do not stop us: the
    file system's refusal is simulated): the spill folder is the first thing made there, and
    mkdtemp's OSError was a traceback (exit 1). Now one line naming --out, exit 2, nothing left."""
    import tempfile

    from click.testing import CliRunner

    from mmbot.cli.main import main

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    out = tmp_path / "bt"
    r = CliRunner().invoke(main, ["backtest", "run", "--out", str(out), "--no-progress", "--set", SHORT[0]])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "Read-only file system" in lines[0], r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- F5: two runs at one --out shared the risk audit log's temporary name ----------------------


def test_h30_f5_a_second_run_at_the_same_out_leaves_the_first_run_s_audit_log(tmp_path):
    """The audit log was written to ``.<out>.audit.jsonl`` beside the run folder, and each run
    deleted that name at its start: a second run aimed at the same --out (allowed: df856f1) took
    the first one's log, so the first run published no audit.jsonl at all (its guards' records
    went to a deleted file). Now each run writes it in its own locked folder."""
    import json

    out = tmp_path / "bt"
    first = _start_run(out)  # the full hour, in another process
    try:
        _wait_for_spill(tmp_path, first)
        R.run_backtest(_cfg(), out_dir=out)  # two minutes, done while the first one runs
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    rep = json.loads((out / "report.json").read_text())
    assert rep["metadata"]["data_range"]["end"] > "2024-12-01T08:00"  # the first (full-hour) run's folder
    assert (out / "audit.jsonl").exists(), "the first run's audit log was taken by the second run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bt"]


def test_h30_f5_a_portfolio_run_leaves_another_run_s_audit_log_alone(tmp_path):
    """The portfolio backtest used the same fixed name and deleted it at its start: the log of a
    run in progress at that --out (written under that name by the old code) was lost."""
    other = tmp_path / ".bt.audit.jsonl"
    other.write_text('{"run": "another, in progress"}\\n')
    cfg = load_backtest_config(REPO / "config" / "portfolio.toml", ['run.end="2024-12-01T07:59:00Z"', "report.html=false"])
    R.run_backtest(cfg, out_dir=tmp_path / "bt")
    assert other.read_text() == '{"run": "another, in progress"}\\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bt.audit.jsonl", "bt"]
