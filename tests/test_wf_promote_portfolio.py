"""Promote the champion of a portfolio wf run to a live config (issue 15, docs/tuning.md "Portfolio",
Promote): two small runs of config/portfolio.toml (one split, train 07:58-08:00, test 08:00-08:01,
one trial per study), per_symbol through `mmbot wf --export-config`, shared through `mmbot promote`.
The written file is loaded as `mmbot live --env testnet` loads it, up to the first network request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmbot.paths import REPO_ROOT

pytestmark = pytest.mark.slow
PORTFOLIO = REPO_ROOT / "config" / "portfolio.toml"
PER_SYMBOL = REPO_ROOT / "config" / "wf_portfolio.toml"
SHARED = REPO_ROOT / "tests" / "fixtures" / "wf_portfolio_shared.toml"
RANGE = ("--start", "2024-12-01T07:58:00Z", "--end", "2024-12-01T08:01:00Z", "--trials", "1", "--workers", "1")


def mmbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli", *args], capture_output=True, text=True, check=False,
                          cwd=REPO_ROOT, env=dict(os.environ), timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("wfpp")
    ps = mmbot("wf", "--config", str(PORTFOLIO), "--space", str(PER_SYMBOL), "--no-progress", *RANGE,
               "--out", str(base / "ps"), "--export-config", str(base / "ps-live.toml"))
    assert ps.returncode == 0, ps.stderr
    sh = mmbot("wf", "--config", str(PORTFOLIO), "--space", str(SHARED), "--no-progress", *RANGE, "--out", str(base / "sh"))
    assert sh.returncode == 0, sh.stderr
    return base, ps


def live_load(path: Path):
    """What `mmbot live --env testnet --config PATH` does before its first request (mmbot/cli/live.py):
    the loader, the listed-instrument check, the environment gate, the sizing (no notional key left
    in any instrument: no request) and the node builder's input checks."""
    from mmbot.live.node import check_environment, check_node_inputs, load_live_config
    from mmbot.live.portfolio import check_instruments_listed, resolve_members_sizing

    cfg, live, file_cfg = load_live_config(path, [], with_file=True, portfolio=True)
    check_instruments_listed(cfg)
    check_environment("testnet", live, False, file_cfg=file_cfg)

    def no_request(member):
        from mmbot.config.sizing import config_notional_items

        assert not config_notional_items(member), "a notional size left: live would price it at the mark"
        return member, None

    cfg, sizing = resolve_members_sizing(cfg, no_request)
    assert sizing is None
    check_node_inputs(cfg)
    return cfg, live


def _load(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def test_per_symbol_export_is_a_ready_portfolio_live_config(runs):
    base, r = runs
    path, run = base / "ps-live.toml", base / "ps"
    assert f"wrote {path}" in r.stdout
    cfg, live = live_load(path)
    assert live.environment == "testnet" and live.allow_mainnet is False
    report, champion = _load(run, "report.json"), _load(run, "champion.json")
    tested = _load(run, "config.resolved.json")["config"]
    ids = report["portfolio"]["instruments"]
    assert list(cfg.portfolio.instruments) == ids
    members = cfg.instrument_configs()
    sizing = report["splits"][-1]["out_of_sample"]["sizing"]
    for iid in ids:  # each symbol's champion reached ITS instrument, each size in ITS base units
        m = members[iid]
        for key, value in champion["selected"]["by_instrument"][iid]["params"].items():
            assert m.strategy[key.split(".", 1)[1]] == value, (iid, key)
        for nkey, rec in sizing[iid]["keys"].items():
            section, bkey = rec["base_key"].rsplit(".", 1)
            got = m.strategy[bkey] if section == "strategy" else m.risk.guards["position"][bkey]
            assert got == rec["base"], (iid, nkey)
    # node-wide tables as tested: the allocator and the portfolio guard
    assert cfg.portfolio.allocator == tested["portfolio"]["allocator"]
    assert cfg.risk.guards["portfolio"] == tested["risk"]["guards"]["portfolio"]
    doc = tomllib.loads(path.read_text())
    assert "instrument" not in doc["run"], "refused beside [portfolio]"
    head = path.read_text().split("\n[run]")[0]
    assert "walk-forward run ps" in head and report["wf_hash"] in head and "per_symbol parameters" in head
    assert report["data_range"]["start"] in head and report["data_range"]["end"] in head
    assert f"objective: {champion['objective']['kind']}" in head
    for iid in ids:
        assert f"sizes of {iid} in USDT as base units" in head
        assert f"{iid} trial {champion['selected']['trials'][iid]}" in head


def test_shared_promote_sets_the_shared_values_for_every_instrument(runs, tmp_path):
    base, _ = runs
    run, path = base / "sh", tmp_path / "live.toml"
    r = mmbot("promote", str(run), "--env", "testnet", "--out", str(path))
    assert r.returncode == 0, r.stderr
    cfg, _ = live_load(path)
    champion = _load(run, "champion.json")
    doc = tomllib.loads(path.read_text())
    for key, value in champion["parameters"].items():
        assert doc["strategy"][key.split(".", 1)[1]] == value, key
        for iid, m in cfg.instrument_configs().items():
            assert m.strategy[key.split(".", 1)[1]] == value, (iid, key)
    assert "shared parameters" in path.read_text().split("\n[run]")[0]


def test_the_override_tables_of_the_file_stay_with_their_instrument(runs):
    base, _ = runs
    cfg, _ = live_load(base / "ps-live.toml")
    tested = _load(base / "ps", "config.resolved.json")["config"]["portfolio"]["overrides"]
    members = cfg.instrument_configs()
    for iid, table in tested.items():
        for key, value in table.get("strategy", {}).items():
            if key in ("min_half_spread_bps", "risk_aversion"):  # tuned: the champion's (test above)
                continue
            assert members[iid].strategy[key] == value, (iid, key)


def _copy(runs, tmp_path, mode="ps") -> Path:
    base, _ = runs
    run = tmp_path / "run"
    shutil.copytree(base / mode, run)
    return run


def _edit(run: Path, name: str, fn) -> None:
    doc = json.loads((run / name).read_text())
    fn(doc)
    (run / name).write_text(json.dumps(doc))


def _refusal(run: Path, tmp_path: Path) -> str:
    r = mmbot("promote", str(run), "--env", "testnet", "--out", str(tmp_path / "out.toml"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert not (tmp_path / "out.toml").exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_a_failed_portfolio_gate_is_never_promoted(runs, tmp_path):
    run = _copy(runs, tmp_path)

    def fail(report):
        report["gates"] = {"failed": ["min_net_pnl_usdt"], "passed": False, "scope": "walk_forward",
                           "verdicts": [{"gate": "min_net_pnl_usdt", "metric": "net_pnl", "op": ">=", "threshold": 0.0,
                                         "value": -1.0, "passed": False}]}
    _edit(run, "report.json", fail)
    assert "not promoted: gate(s) failed: min_net_pnl_usdt" in _refusal(run, tmp_path)


def test_a_per_symbol_champion_of_another_instrument_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)

    def rename(doc):
        params = doc["parameters"] if "parameters" in doc else doc["champion"]["parameters"]
        for k in list(params):
            if k.startswith("XRPUSDT"):
                params[k.replace("XRPUSDT", "SOLUSDT")] = params.pop(k)
        for s in doc.get("splits", []):
            s["champion_params"] = params
    _edit(run, "champion.json", rename)
    _edit(run, "report.json", rename)
    line = _refusal(run, tmp_path)
    assert "champion parameter SOLUSDT-LINEAR.BYBIT:strategy." in line and "one of the run's instruments" in line


def test_a_per_symbol_champion_trial_not_the_splits_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    _edit(run, "champion.json", lambda c: c["selected"]["trials"].update({"BTCUSDT-LINEAR.BYBIT": 7}))
    assert "is not the champion of the most recent used split" in _refusal(run, tmp_path)


def test_report_instruments_not_the_tested_configs_are_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    _edit(run, "report.json", lambda r: r["portfolio"].update(instruments=r["portfolio"]["instruments"][::-1]))
    assert "report.json portfolio.instruments" in _refusal(run, tmp_path)


def test_an_instrument_without_its_sizing_record_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    _edit(run, "report.json", lambda r: r["splits"][-1]["out_of_sample"]["sizing"].pop("DOGEUSDT-LINEAR.BYBIT"))
    line = _refusal(run, tmp_path)
    assert "report.json does not record the price split 0's test run" in line, line


def test_a_sizing_record_of_another_instrument_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)

    def swap(r):
        s = r["splits"][-1]["out_of_sample"]["sizing"]
        s["DOGEUSDT-LINEAR.BYBIT"] = s["XRPUSDT-LINEAR.BYBIT"]
    _edit(run, "report.json", swap)
    assert "sizing record is for XRPUSDT-LINEAR.BYBIT, not DOGEUSDT-LINEAR.BYBIT" in _refusal(run, tmp_path)
