"""End-to-end `mmbot wf` on a [portfolio] (config/portfolio.toml on the embedded portfolio
catalog; docs/tuning.md, "Portfolio"): shared and per_symbol parameters over two minute splits
(train 2m, test 1m, step 1m over 07:58-08:02), 2 trials each.

The catalog's content may change (instruments are added): the tests assert structure, sums,
reproduction and determinism, never objective values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mmbot.paths import REPO_ROOT

pytestmark = pytest.mark.slow
PORTFOLIO = REPO_ROOT / "config" / "portfolio.toml"
PER_SYMBOL = REPO_ROOT / "config" / "wf_portfolio.toml"
SHARED = REPO_ROOT / "tests" / "fixtures" / "wf_portfolio_shared.toml"
RANGE = ("--start", "2024-12-01T07:58:00Z", "--end", "2024-12-01T08:02:00Z")


def wf(space, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli", "wf", "--config", str(PORTFOLIO), "--space", str(space),
                           "--no-progress", *RANGE, *args], capture_output=True, text=True, check=False,
                          cwd=REPO_ROOT, env=dict(os.environ), timeout=900)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("wfp")
    out = {}
    for name, space, args in (("shared", SHARED, ("--workers", "1")),
                              ("per_symbol", PER_SYMBOL, ("--trials", "2", "--workers", "2")),
                              ("per_symbol_1", PER_SYMBOL, ("--trials", "2", "--workers", "1"))):
        r = wf(space, *args, "--out", str(base / name))
        assert r.returncode == 0, r.stderr
        out[name] = (base / name, r)
    return out


def _load(run, name):
    return json.loads((run / name).read_text())


def _instruments():
    from mmbot.config.backtest import load_backtest_config

    return list(load_backtest_config(PORTFOLIO).portfolio.instruments)


@pytest.mark.parametrize("mode", ["shared", "per_symbol"])
def test_report_has_per_symbol_and_portfolio_objectives(runs, mode):
    run, r = runs[mode]
    ids = _instruments()
    report, champion = _load(run, "report.json"), _load(run, "champion.json")
    assert report["portfolio"]["instruments"] == ids and report["portfolio"]["params"] == mode
    assert report["wf"]["portfolio_params"] == mode and report["instrument"] == "+".join(ids)
    used = [s for s in report["splits"] if s["out_of_sample"] is not None]
    assert len(used) == report["n_splits"] == 2
    for s in used:
        by = s["out_of_sample"]["by_instrument"]
        assert list(by) == sorted(ids)
        for iid in ids:
            assert math.isfinite(by[iid]["objective"]) and by[iid]["summary"]["minutes"] == 1
        is_by = s["in_sample_by_instrument"] if mode == "shared" else {
            iid: c["in_sample_objective"] for iid, c in s["champion_by_instrument"].items()}
        assert sorted(is_by) == sorted(ids) and all(v is not None for v in is_by.values())
    assert sorted(report["portfolio"]["out_of_sample_by_instrument"]) == sorted(ids)
    assert sorted(champion["out_of_sample"]["by_instrument"]) == sorted(ids)
    assert sorted(champion["walk_forward_out_of_sample"]["by_instrument"]) == sorted(ids)
    md = (run / "REPORT.md").read_text()
    section = md.split("## Per symbol and portfolio", 1)[1].split("## Out-of-sample", 1)[0]
    for iid in ids:
        assert section.count(f"| {iid} |") == 3  # 2 splits + walk-forward
    assert section.count("| portfolio |") == 3
    assert "<h2>Per symbol and portfolio</h2>" in (run / "report.html").read_text()
    for iid in ids:  # stdout: one line per instrument under the portfolio's
        assert f"  {iid}: net PnL" in r.stdout


@pytest.mark.parametrize("mode", ["shared", "per_symbol"])
def test_portfolio_figures_are_the_sums_of_the_instruments(runs, mode):
    run, _ = runs[mode]
    report = _load(run, "report.json")
    for s in report["splits"]:
        oos = s["out_of_sample"]
        split = _load(run, f"splits/{s['index']:03d}.json")
        sections = split["out_of_sample"]["metrics"]["instruments"]
        for iid, r in oos["by_instrument"].items():  # each row is ITS instrument's section of the test run
            assert r["summary"]["n_fills"] == sections[iid]["metrics"]["counts"]["n_fills"]
            assert r["summary"]["net_pnl"] == pytest.approx(sections[iid]["metrics"]["pnl"]["net_pnl"], abs=1e-6)
        assert oos["summary"]["net_pnl"] == pytest.approx(
            math.fsum(r["summary"]["net_pnl"] for r in oos["by_instrument"].values()), abs=1e-6)
        assert oos["summary"]["n_fills"] == sum(r["summary"]["n_fills"] for r in oos["by_instrument"].values())
    wf_by = report["portfolio"]["out_of_sample_by_instrument"]
    assert report["out_of_sample"]["summary"]["net_pnl"] == pytest.approx(
        math.fsum(r["summary"]["net_pnl"] for r in wf_by.values()), abs=1e-6)
    assert report["out_of_sample"]["summary"]["n_fills"] == sum(r["summary"]["n_fills"] for r in wf_by.values())


def test_every_trial_of_a_shared_run_runs_every_instrument(runs):
    run, _ = runs["shared"]
    ids = sorted(_instruments())
    for s in _load(run, "report.json")["splits"]:
        trials = _load(run, f"splits/{s['index']:03d}.json")["trials"]
        assert len(trials) == 2
        for t in trials:
            assert sorted(t["in_sample"]["by_instrument"]) == ids
            assert t["in_sample"]["n_fills"] == sum(r["summary"]["n_fills"] for r in t["in_sample"]["by_instrument"].values())
            assert all(r["summary"]["n_orders"] > 0 for r in t["in_sample"]["by_instrument"].values())


def test_per_symbol_studies_are_per_symbol_and_split(runs):
    import csv

    run, _ = runs["per_symbol"]
    ids = _instruments()
    report, champion = _load(run, "report.json"), _load(run, "champion.json")
    space = sorted(report["wf"]["space"])
    rows = list(csv.DictReader((run / "trials.csv").open()))
    for s in report["splits"]:
        for iid in ids:
            assert sum(1 for r in rows if r["split"] == str(s["index"]) and r["instrument"] == iid) == 2
        # the split's champion combines each symbol's own champion, under its instrument's name
        assert s["champion_params"] == {f"{iid}:{k}": s["champion_by_instrument"][iid]["params"][k]
                                        for iid in ids for k in space}
    assert champion["parameters"] == report["splits"][-1]["champion_params"]
    assert champion["selected"]["trials"] == {iid: c["trial"] for iid, c in
                                              report["splits"][-1]["champion_by_instrument"].items()}
    assert len(champion["overrides"]) == 1 and champion["overrides"][0].startswith("portfolio.overrides={")


@pytest.mark.parametrize("mode", ["shared", "per_symbol"])
def test_champion_overrides_reproduce_its_test_run(runs, mode, tmp_path):
    """`mmbot backtest run --config config/portfolio.toml --set <champion.json overrides>` on the test
    window gives every instrument the figures the wf reported for it: each parameter reached the
    instrument it was tuned for (and in shared mode, every instrument)."""
    from mmbot.backtest.run import run_backtest
    from mmbot.config.backtest import load_backtest_config

    run, _ = runs[mode]
    champion = _load(run, "champion.json")
    test = champion["out_of_sample"]["test"]
    cfg = load_backtest_config(PORTFOLIO, [f'run.start="{test["start_ns"]}"', f'run.end="{test["end_ns"]}"',
                                           "report.html=false", *champion["overrides"]])
    rep = run_backtest(cfg, out_dir=tmp_path / "bt").report
    for iid, r in champion["out_of_sample"]["by_instrument"].items():
        m = rep["metrics"]["instruments"][iid]["metrics"]
        assert m["counts"]["n_fills"] == r["summary"]["n_fills"], iid
        assert m["pnl"]["net_pnl"] == pytest.approx(r["summary"]["net_pnl"], abs=1e-6), iid


def test_per_symbol_run_is_byte_identical_with_1_and_2_workers(runs):
    a, _ = runs["per_symbol"]
    b, _ = runs["per_symbol_1"]
    for name in ("report.json", "champion.json", "trials.csv", "splits/000.json", "splits/001.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_per_symbol_split_without_a_scored_study_is_skipped_naming_the_instruments(tmp_path):
    """No trial of some symbol's study reaches min_fills: the split has no champion (the other
    symbols' champions are not tested without it), and the skip reason names the instrument(s)."""
    r = wf(PER_SYMBOL, "--start", "2024-12-01T07:58:00Z", "--end", "2024-12-01T08:01:00Z", "--trials", "1",
           "--workers", "1", "--min-fills", "100000000", "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    report = _load(tmp_path / "run", "report.json")
    assert report["n_splits"] == 1 and report["n_splits_used"] == 0 and report["champion"] is None
    reason = report["skipped"][0]["reason"]
    assert reason.startswith("no trial scored in-sample for ") and reason.endswith("fills or failed)")
    for iid in _instruments():
        assert iid in reason
    assert "gate failed: out_of_sample_result" in r.stderr


def test_per_symbol_resume_reuses_every_study_and_test(tmp_path):
    """With --storage, each (symbol x split) study and the split's stored test result are found
    again: the second run runs nothing and writes the same report."""
    args = ("--start", "2024-12-01T07:58:00Z", "--end", "2024-12-01T08:01:00Z", "--trials", "1", "--workers", "1",
            "--storage", f"sqlite:///{tmp_path / 'wf.db'}")
    a = wf(PER_SYMBOL, *args, "--out", str(tmp_path / "a"))
    assert a.returncode == 0, a.stderr
    assert f"trials: {len(_instruments())} run now, 0 reused from storage" in a.stdout
    b = wf(PER_SYMBOL, *args, "--out", str(tmp_path / "b"))
    assert b.returncode == 0, b.stderr
    assert "nothing ran: every result was in the storage" in b.stdout
    for name in ("report.json", "champion.json", "trials.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
