"""``mmbot runs ls`` and ``mmbot runs diff`` (mmbot/report/runs.py, docs/report.md "Listing and
comparing runs"). Run folders are built with the writers the commands use (``write_marker``,
``write_resolved_config`` from a real loaded config) plus a minimal report.json, so no backtest
has to run here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.config.backtest import load_backtest_config
from mmbot.run_folder import write_marker, write_resolved_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "config" / "backtest.toml"


def _run(folder: Path, sets: list[str], net: float, fills: int, kind: str = "backtest",
         window=("2024-12-01T07:30:00.006Z", "2024-12-01T08:30:00.007Z")) -> Path:
    cfg = load_backtest_config(DEFAULT, sets)
    folder.mkdir(parents=True)
    write_marker(folder, kind, cfg.config_hash())
    write_resolved_config(folder, cfg)
    (folder / "report.json").write_text(json.dumps({
        "metadata": {"instrument": {"id": cfg.run.instrument}, "data_range": {"start": window[0], "end": window[1]}},
        "metrics": {"pnl": {"net_pnl": net, "fees_paid": 1.5}, "counts": {"n_fills": fills, "n_orders": 10},
                    "risk": {"guards": {"final_trading_state": "ACTIVE"}}}}))
    return folder


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    a = _run(root / "20261203T080000Z-a", [], -189.5, 3011)
    b = _run(root / "20261203T081000Z-b", ["strategy.levels_per_side=1", "venue.order_latency_ms=20"], -151.8, 2381)
    nested = _run(root / "wf-1" / "trial-0", ["strategy.risk_aversion=0.2"], -10.0, 5)
    (root / "notes").mkdir()
    (root / "notes" / "x.txt").write_text("not a run")
    return root, a, b, nested


def test_ls_lists_every_run_folder_under_the_root_and_nothing_else(runs):
    root, a, b, nested = runs
    r = _cli("runs", "ls", str(root), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [x["run"] for x in doc["runs"]] == [a.name, b.name, "wf-1/trial-0"]
    row = doc["runs"][0]
    assert (row["kind"], row["fills"], row["net_pnl_usdt"], row["instrument"]) == (
        "backtest", 3011, -189.5, "XRPUSDT-LINEAR.BYBIT")
    assert row["config_hash"] == json.loads((a / "mmbot_run.json").read_text())["config_hash"]
    text = _cli("runs", "ls", str(root)).output
    assert a.name in text and "3,011" in text and "notes" not in text


def test_ls_reports_an_unreadable_report_instead_of_dropping_the_run(runs):
    root, a, *_ = runs
    (a / "report.json").write_text("{truncated")
    doc = json.loads(_cli("runs", "ls", str(root), "--json").output)
    row = next(x for x in doc["runs"] if x["run"] == a.name)
    assert row["fills"] is None and row["problems"] == ["report.json: unreadable (JSONDecodeError)"]


def test_ls_follows_a_symlinked_run_once_and_survives_a_symlink_loop(runs, tmp_path):
    root, a, *_ = runs
    (root / "link-to-a").symlink_to(a)
    (root / "loop").symlink_to(root)
    doc = json.loads(_cli("runs", "ls", str(root), "--json").output)
    assert sum(1 for x in doc["runs"] if x["config_hash"] == json.loads((a / "mmbot_run.json").read_text())["config_hash"]
               and x["fills"] == 3011) == 1


def test_ls_kind_filter(runs):
    root, *_ = runs
    doc = json.loads(_cli("runs", "ls", str(root), "--json", "--kind", "wf").output)
    assert doc["runs"] == []


@pytest.mark.parametrize("args", [["runs", "ls", "/nonexistent-mmbot-runs"],
                                  ["runs", "diff", "/nonexistent-a", "/nonexistent-b"]])
def test_a_missing_path_is_one_line_and_exit_2(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    err = r.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: runs ") and "nonexistent" in err[0]


def test_diff_refuses_a_folder_that_is_not_a_run(runs):
    root, a, *_ = runs
    r = CliRunner().invoke(main, ["runs", "diff", str(a), str(root / "notes")])
    assert r.exit_code == 2 and "not an mmbot run folder" in r.output


def test_diff_lists_exactly_the_config_keys_that_differ_and_the_metric_deltas(runs):
    _, a, b, _ = runs
    d = json.loads(_cli("runs", "diff", str(a), str(b), "--json").output)
    assert not d["same_config"]
    assert [(r["key"], r["a"], r["b"]) for r in d["config"]] == [
        ("strategy.levels_per_side", 2, 1), ("venue.order_latency_ms", 10.0, 20.0)]
    m = {r["path"]: r for r in d["metrics"]}
    assert m["pnl.net_pnl"]["b_minus_a"] == pytest.approx(-151.8 - -189.5)
    assert m["counts.n_fills"]["b_minus_a"] == 2381 - 3011
    assert m["pnl.slippage"]["a"] is None and m["pnl.slippage"]["b_minus_a"] is None  # absent: "-", never 0
    assert m["risk.guards.final_trading_state"]["b_minus_a"] is None
    text = _cli("runs", "diff", str(a), str(b)).output
    assert "config: 2 key(s) differ" in text and "-630" in text


def test_diff_of_a_run_with_itself_says_identical(runs):
    _, a, *_ = runs
    d = json.loads(_cli("runs", "diff", str(a), str(a), "--json").output)
    assert d["same_config"] and d["config"] == []
    assert "config: identical" in _cli("runs", "diff", str(a), str(a)).output
    assert len(json.loads(_cli("runs", "diff", str(a), str(a), "--json", "--all").output)["config"]) > 20


def test_diff_compares_values_exactly(tmp_path):
    """A tolerance or a loose equality would hide that two runs did not use the same numbers:
    0.1 vs 0.1000000000000001, 1 vs True (a flag vs a count), and a key only in one run."""
    from mmbot.report.runs import RunInfo, diff

    def info(cfg):
        return RunInfo(path=tmp_path, marker={"config_hash": "x"}, config=cfg, report=None)

    d = diff(info({"s": {"x": 0.1, "f": 1}}), info({"s": {"x": 0.1000000000000001, "f": True, "new": 3}}))
    assert [(r["key"], r["only_in"]) for r in d["config"]] == [("s.f", None), ("s.new", "b"), ("s.x", None)]
    assert not d["same_config"]


def test_diff_warns_when_instruments_or_windows_differ(runs, tmp_path):
    _, a, *_ = runs
    c = _run(tmp_path / "btc", ["run.instrument=BTCUSDT-LINEAR.BYBIT"], 0.0, 0,
             window=("2024-06-03T00:00:00.006Z", "2024-06-03T00:10:00.009Z"))
    text = _cli("runs", "diff", str(a), str(c)).output
    assert "different instruments" in text and "different data windows" in text


def _raw_run(root: Path, name: str, report: str, resolved: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "mmbot_run.json").write_text(json.dumps({"format": 1, "kind": "backtest", "venue": "simulated",
                                                  "config_hash": "x", "mmbot": "0.1.0"}))
    (d / "report.json").write_text(report)
    if resolved is not None:
        (d / "config.resolved.json").write_text(resolved)
    return d


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-JSON token {c}")))


def test_diff_json_is_strict_when_a_config_value_is_nan(tmp_path):
    """config.resolved.json values are printed as they are: a NaN there is null in --json."""
    a = _raw_run(tmp_path, "a", "{}", '{"config": {"strategy": {"k_vol": 1.0}}}')
    b = _raw_run(tmp_path, "b", "{}", '{"config": {"strategy": {"k_vol": NaN}}}')
    r = _cli("runs", "diff", str(a), str(b), "--json")
    assert r.exit_code == 0, r.output
    rows = {row["key"]: row for row in _strict(r.stdout)["config"]}
    assert rows["strategy.k_vol"]["b"] is None


def test_a_non_finite_metric_is_named_in_the_runs_problems(tmp_path):
    _raw_run(tmp_path, "b", '{"metrics": {"pnl": {"net_pnl": NaN}}}')
    doc = _strict(_cli("runs", "ls", str(tmp_path), "--json").stdout)
    (run,) = doc["runs"]
    assert run["net_pnl_usdt"] is None and "report.json: metrics.pnl.net_pnl is nan (not a finite number)" in run["problems"]
