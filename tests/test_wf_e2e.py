"""End-to-end `mmbot wf` on the embedded catalog: 3 splits (train 6m, test 3m, step 3m over
07:30-07:45 of the XRPUSDT hour) x 2 trials (tests/fixtures/wf_small.toml).

Run A is uninterrupted (2 pool workers, sqlite storage). Run B runs inline (1 worker), is killed
hard after 3 trials by the ``MMBOT_WF_KILL_AFTER_TRIALS`` hook (``os._exit``, like SIGKILL: no
cleanup, asked trials stay RUNNING) and is then started again with the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import REPO_ROOT
from mmbot.timeutil import parse_time_ns
from tests.notebooks import execute_notebook, n_images, outputs_text

pytestmark = pytest.mark.slow
WF_SMALL = REPO_ROOT / "tests" / "fixtures" / "wf_small.toml"
MIN = 60_000_000_000
T0 = parse_time_ns("2024-12-01T07:30:00Z")


def wf(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli", "wf", "--config", str(WF_SMALL), "--no-progress", *args],
                          capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


def trials_in(db: Path) -> dict[str, list[tuple[int, str, object]]]:
    """Every study's trials as (number, state, datetime_complete)."""
    import optuna

    url = f"sqlite:///{db}"
    return {s.study_name: [(t.number, t.state.name, t.datetime_complete)
                           for t in optuna.load_study(study_name=s.study_name, storage=url).trials]
            for s in optuna.get_all_study_summaries(url)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("wf")
    a = wf("--workers", "2", "--storage", f"sqlite:///{base / 'a.db'}", "--out", str(base / "A"))
    assert a.returncode == 0, a.stderr
    killed = wf("--workers", "1", "--storage", f"sqlite:///{base / 'b.db'}", "--out", str(base / "B"),
                env={"MMBOT_WF_KILL_AFTER_TRIALS": "3"})
    after_kill = trials_in(base / "b.db")
    resumed = wf("--workers", "1", "--storage", f"sqlite:///{base / 'b.db'}", "--out", str(base / "B"))
    return {"base": base, "A": base / "A", "B": base / "B", "a": a, "killed": killed, "after_kill": after_kill,
            "resumed": resumed, "after_resume": trials_in(base / "b.db")}


def test_splits_boundaries_are_exact(runs):
    report = json.loads((runs["A"] / "report.json").read_text())
    got = [(s["train"]["start_ns"], s["train"]["end_ns"], s["test"]["start_ns"], s["test"]["end_ns"])
           for s in report["splits"]]
    assert got == [(T0 + k * 3 * MIN, T0 + (6 + k * 3) * MIN, T0 + (6 + k * 3) * MIN, T0 + (9 + k * 3) * MIN)
                   for k in range(3)]
    assert [s["status"] for s in report["splits"]] == ["ok"] * 3
    assert [s["n_trials"] for s in report["splits"]] == [2, 2, 2]
    assert report["gates"]["passed"] is True
    for name in ("report.json", "champion.json", "REPORT.md", "report.html", "trials.csv", "oos_equity.parquet",
                 "splits/000.json", "splits/002.json"):
        assert (runs["A"] / name).exists(), name
    text = (runs["A"] / "report.json").read_text() + (runs["A"] / "champion.json").read_text()
    assert str(runs["base"]) not in text and "/tmp" not in text, "no absolute temp paths in the deterministic outputs"


def test_champion_oos_metrics_equal_a_fresh_backtest(runs, tmp_path):
    """Every split champion's reported out-of-sample metrics are those of `mmbot backtest run`
    with its parameters on its test window; champion.json carries the last one."""
    champion = json.loads((runs["A"] / "champion.json").read_text())
    for path in sorted((runs["A"] / "splits").glob("*.json")):
        split = json.loads(path.read_text())
        sets = [x for k, v in split["champion"]["params"].items() for x in ("--set", f"{k}={json.dumps(v)}")]
        out = tmp_path / path.stem
        r = CliRunner().invoke(main, ["backtest", "run", "--config", str(WF_SMALL), "--start", split["test"]["start"],
                                      "--end", split["test"]["end"], "--out", str(out), "--no-progress", *sets],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        fresh = json.loads((out / "report.json").read_text())["metrics"]
        assert fresh == split["out_of_sample"]["metrics"], path.name
        if split["index"] == champion["selected"]["split"]:
            assert fresh == champion["out_of_sample"]["metrics"]
            assert champion["parameters"] == split["champion"]["params"]


def test_killed_run_resumes_without_rerunning_trials_and_same_champion(runs):
    assert runs["killed"].returncode == 137, runs["killed"].stderr
    before = runs["after_kill"]
    done_before = {(s, n): when for s, ts in before.items() for n, state, when in ts if state == "COMPLETE"}
    running_before = sum(state == "RUNNING" for ts in before.values() for _, state, _ in ts)
    assert len(done_before) == 3 and running_before >= 1, before
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr
    assert "trials: 3 run now, 3 reused from storage" in runs["resumed"].stdout
    after = runs["after_resume"]
    assert sorted(len(ts) for ts in after.values()) == [2, 2, 2]
    assert all(state == "COMPLETE" for ts in after.values() for _, state, _ in ts)
    for (s, n), when in done_before.items():  # finished trials were not run again
        assert dict((num, w) for num, _, w in after[s])[n] == when
    # same seed -> byte-identical champion.json and report.json (1 inline worker + resume vs 2 pool workers)
    for name in ("champion.json", "report.json", "trials.csv"):
        assert (runs["A"] / name).read_bytes() == (runs["B"] / name).read_bytes(), name


def test_failed_gate_exits_2_and_names_the_gate(runs):
    """Reusing run A's storage: no trial runs again, only the verdict changes."""
    out = runs["base"] / "gate"
    r = wf("--storage", f"sqlite:///{runs['base'] / 'a.db'}", "--out", str(out), "--set", "wf.gates.min_net_pnl_usdt=1e6")
    assert r.returncode == 2, r.stderr
    assert "gate failed: min_net_pnl_usdt" in r.stderr
    assert "trials: 0 run now, 6 reused from storage" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["gates"]["failed"] == ["min_net_pnl_usdt"] and report["gates"]["passed"] is False
    assert "gate(s) failed: min_net_pnl_usdt" in (out / "REPORT.md").read_text()


def test_ray_local_instance_runs_the_same_trials(runs):
    pytest.importorskip("ray")
    out = runs["base"] / "ray"
    r = wf("--ray-address", "local", "--workers", "2", "--end", "2024-12-01T07:39:00Z", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "executor: ray" in r.stderr
    assert (out / "splits" / "000.json").read_bytes() == (runs["A"] / "splits" / "000.json").read_bytes()


def test_walk_forward_notebook(runs):
    nb = execute_notebook("walk_forward.ipynb", {"MMBOT_WF_DIR": str(runs["A"])})
    text = outputs_text(nb)
    assert "splits: 3 used: 3 gates passed: True" in text
    assert "champion parameters:" in text
    assert n_images(nb) >= 2


def test_walk_forward_notebook_without_a_wf_run_runs_the_smallest_one(tmp_path, monkeypatch):
    """Before: `raise SystemExit("no runs/wf-* directory ...")` on a fresh clone (issue 16 §5)."""
    monkeypatch.delenv("MMBOT_WF_DIR", raising=False)
    nb = execute_notebook("walk_forward.ipynb", {"MMBOT_RUNS_DIR": str(tmp_path)})
    text = outputs_text(nb)
    assert f"no wf-* run under {tmp_path}: running mmbot wf --start 2024-12-01T07:30Z" in text
    assert (tmp_path / "wf-notebook-example" / "report.json").exists()
    assert "splits: 1 used: 1" in text and n_images(nb) >= 2


def test_ctrl_c_leaves_the_study_consistent(tmp_path):
    """The Ctrl-C path (``MMBOT_WF_INTERRUPT_AFTER_TRIALS``): exit 130 with a resume hint, the
    finished trial COMPLETE with its value, the other asked trial RUNNING (run on resume)."""
    db = tmp_path / "c.db"
    r = wf("--workers", "1", "--end", "2024-12-01T07:39:00Z", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "o"),
           env={"MMBOT_WF_INTERRUPT_AFTER_TRIALS": "1"})
    assert r.returncode == 130, r.stderr
    assert "run the same command again to resume" in r.stderr
    (trials,) = trials_in(db).values()
    assert [(n, state) for n, state, _ in trials] == [(0, "COMPLETE"), (1, "RUNNING")]
    assert not (tmp_path / "o").exists()
