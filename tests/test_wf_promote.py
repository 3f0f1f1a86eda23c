"""Promote a wf champion to a live config, the wf report's analysis, risk guards in trials
(issue 16, section 3). One small run (tests/fixtures/wf_promote.toml: wf_small.toml + the risk
guards of config/wf.toml; 2 splits x 2 trials over 07:30-07:42) with a sqlite storage; the other
runs re-use its trials (nothing is run again).
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

from mmbot.paths import CONFIG_DIR, REPO_ROOT

pytestmark = pytest.mark.slow
WF = REPO_ROOT / "tests" / "fixtures" / "wf_promote.toml"


def mmbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli", *args], capture_output=True, text=True, check=False,
                          cwd=REPO_ROOT, timeout=300, env={**os.environ})


def wf(base: Path, out: str, *args: str) -> subprocess.CompletedProcess:
    return mmbot("wf", "--config", str(WF), "--end", "2024-12-01T07:42:00Z", "--no-progress", "--workers", "2",
                 "--storage", f"sqlite:///{base / 'wf.db'}", "--out", str(base / out), *args)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("promote")
    r = wf(base, "A", "--export-config", str(base / "live.toml"))
    assert r.returncode == 0, r.stderr
    return base, r


def _keys(doc: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in doc.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def test_export_config_is_a_ready_live_config(run):
    from mmbot.live.node import load_live_config

    base, r = run
    path = base / "live.toml"
    cfg, live = load_live_config(path)  # the live loader accepts it
    assert live.environment == "testnet" and live.allow_mainnet is False
    doc = tomllib.loads(path.read_text())
    template = tomllib.loads((CONFIG_DIR / "testnet.toml").read_text())
    champion = json.loads((base / "A" / "champion.json").read_text())
    tested = json.loads((base / "A" / "config.resolved.json").read_text())["config"]["strategy"]
    assert _keys(template) <= _keys(doc), "every key of config/testnet.toml"
    assert _keys(doc) - _keys(template) <= {f"strategy.{k}" for k in tested}, \
        "beyond them only [strategy] keys the tested config sets (copied by name, whatever they are)"
    report = json.loads((base / "A" / "report.json").read_text())
    for key, value in champion["parameters"].items():
        section, name = key.split(".", 1)
        assert doc[section][name] == value, key
        assert cfg.strategy[name] == value, key
    assert doc["run"]["instrument"] == report["instrument"] == "XRPUSDT-LINEAR.BYBIT"
    assert doc["risk"]["position"]["hard_position"] == 2000.0, "XRP limits of the wf config, not the BTC template's"
    head = path.read_text().split("\n[run]")[0]
    assert "walk-forward run A" in head and report["wf_hash"] in head
    assert report["data_range"]["start"] in head and report["data_range"]["end"] in head
    assert f"objective: {champion['objective']['kind']}" in head
    assert f"{champion['out_of_sample']['objective']:.6g}" in head
    assert [p.name for p in base.iterdir() if p.name.startswith(".live.toml")] == [], "no temp file left"
    assert f"wrote {path}" in r.stdout


def test_export_is_the_most_recent_used_splits_champion(run):
    base, _ = run
    doc = tomllib.loads((base / "live.toml").read_text())
    splits = [json.loads(p.read_text()) for p in sorted((base / "A" / "splits").glob("*.json"))]
    used = [s for s in splits if s["status"] == "ok"]
    assert len(used) == 2 and used[0]["champion"]["params"] != used[-1]["champion"]["params"], \
        "the splits must disagree for this test to tell them apart"
    for key, value in used[-1]["champion"]["params"].items():
        assert doc["strategy"][key.split(".", 1)[1]] == value, key


def test_promote_refuses_a_champion_from_another_split(run, tmp_path):
    base, _ = run
    bad = tmp_path / "bad"
    shutil.copytree(base / "A", bad)
    first = json.loads((bad / "splits" / "000.json").read_text())
    champ = json.loads((bad / "champion.json").read_text())
    champ["selected"]["split"], champ["selected"]["trial"] = 0, first["champion"]["number"]
    champ["parameters"] = first["champion"]["params"]
    (bad / "champion.json").write_text(json.dumps(champ))
    r = mmbot("promote", str(bad), "--out", str(tmp_path / "x.toml"))
    assert r.returncode == 2 and not (tmp_path / "x.toml").exists()
    assert "is not the champion of the most recent used split" in r.stderr and len(r.stderr.splitlines()) == 1


def test_failed_gate_is_never_exported(run, tmp_path):
    base, _ = run
    target = tmp_path / "gate.toml"
    r = wf(base, "G", "--set", "wf.gates.min_net_pnl_usdt=1e6", "--export-config", str(target))
    assert r.returncode == 2, r.stderr
    assert "trials: 0 run now, 4 reused from storage; nothing ran: every result was in the storage" in r.stdout
    assert "gate failed: min_net_pnl_usdt" in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "not promoted: gate(s) failed: min_net_pnl_usdt" in errors[0], r.stderr
    assert not target.exists()
    p = mmbot("promote", str(base / "G"), "--out", str(target))
    assert p.returncode == 2 and not target.exists()
    assert p.stderr.strip().startswith("error:") and "gate(s) failed: min_net_pnl_usdt" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_promote_refuses_a_run_without_champion(run, tmp_path):
    base, _ = run
    bad = tmp_path / "none"
    shutil.copytree(base / "A", bad)
    (bad / "champion.json").unlink()
    r = mmbot("promote", str(bad), "--out", str(tmp_path / "x.toml"))
    assert r.returncode == 2 and "the run has no champion" in r.stderr and not (tmp_path / "x.toml").exists()


def test_no_overwrite_without_force_and_mainnet_stays_locked(run, tmp_path):
    from mmbot.live.node import load_live_config

    base, _ = run
    target = tmp_path / "live.toml"
    target.write_text("# mine\n")
    r = mmbot("promote", str(base / "A"), "--env", "mainnet", "--out", str(target))
    assert r.returncode == 2 and "exists (use --force" in r.stderr and target.read_text() == "# mine\n"
    early = wf(base, "E", "--export-config", str(target))  # refused before any trial runs
    assert early.returncode == 2 and "exists" in early.stderr and not (base / "E").exists()
    r = mmbot("promote", str(base / "A"), "--env", "mainnet", "--out", str(target), "--force")
    assert r.returncode == 0, r.stderr
    assert "review the file and set [live] allow_mainnet = true yourself" in r.stdout
    doc = tomllib.loads(target.read_text())
    assert doc["live"]["allow_mainnet"] is False and doc["live"]["environment"] == "mainnet"
    _, live, file_cfg = load_live_config(target, with_file=True)
    assert file_cfg.allow_mainnet is False
    assert "REVIEW: allow_mainnet is false" in target.read_text()


def test_report_has_the_analysis_plots_and_guards(run):
    base, r = run
    report = json.loads((base / "A" / "report.json").read_text())
    a = report["analysis"]
    assert [x["split"] for x in a["in_vs_out_of_sample"]] == [0, 1]
    for x in a["in_vs_out_of_sample"]:
        assert x["out_minus_in"] == pytest.approx(x["out_of_sample_objective"] - x["in_sample_objective"])
    assert len(a["sensitivity"]["points"]) == 4 and len(a["sensitivity"]["top_pair"]) == 2
    imp = a["importance"]
    assert imp["evaluator"] == "optuna.importance.PedAnovaImportanceEvaluator()"
    for per in imp["by_split"].values():
        assert set(per) == set(report["wf"]["space"]) and sum(per.values()) == pytest.approx(1.0)
    assert [c["split"] for c in a["champion_by_split"]] == [0, 1]
    assert a["champion_by_split"][-1]["params"] == report["champion"]["parameters"]
    assert report["risk_guards"] == ["circuit_breaker", "drawdown", "edge", "kill_switch", "loss", "position",
                                     "stale_data"]
    assert "risk guards in every trial: circuit_breaker" in r.stderr
    page = (base / "A" / "report.html").read_text()
    for title in ("In-sample vs out-of-sample by split", "Parameter sensitivity", "Parameter importance",
                  "Champion stability across splits"):
        assert title in page, title
    assert page.count('src="data:image/png;base64,') >= 4 and "http://" not in page and "https://" not in page
    # deterministic: the same trials (from the storage) give the same report.json, analysis included
    again = wf(base, "A2")
    assert again.returncode == 0, again.stderr
    assert (base / "A2" / "report.json").read_bytes() == (base / "A" / "report.json").read_bytes()


def test_wf_without_risk_section_says_so(tmp_path):
    from mmbot.tuning.runner import prepare, risk_guards

    plan = prepare(REPO_ROOT / "tests" / "fixtures" / "wf_small.toml")
    assert risk_guards(plan.cfg) == []
    plan = prepare(REPO_ROOT / "config" / "wf.toml")
    assert "position" in risk_guards(plan.cfg) and "kill_switch" in risk_guards(plan.cfg)
    kill = [o for o in plan.base_overrides if o.startswith("risk.kill_switch.file=")]
    assert kill == [f'risk.kill_switch.file="{REPO_ROOT / "runs"}/KILL.{{env}}.{{account}}"'], plan.base_overrides


def test_tuned_risk_and_fill_model_keys(run, tmp_path):
    """A tuned ``risk.position`` key wins over the limits copied from the wf config (was: the copy
    overwrote it); a fill-model key is only named in the header."""
    from mmbot.tuning.promote import build_live_config

    base, _ = run
    d = tmp_path / "tuned"
    shutil.copytree(base / "A", d)
    extra = {"risk.position.soft_position": 1234.0, "venue.queue_position": False}
    report = json.loads((d / "report.json").read_text())
    champ = json.loads((d / "champion.json").read_text())
    last = [s for s in report["splits"] if s["status"] == "ok"][-1]
    for doc in (last["champion_params"], report["champion"]["parameters"], champ["parameters"]):
        doc.update(extra)
    for key, value in extra.items():  # as a run that searched them (promote takes only searched keys)
        report["wf"]["space"][key] = {"choices": [value], "high": None, "log": False, "low": None, "step": None,
                                      "type": ""}
    (d / "report.json").write_text(json.dumps(report))
    (d / "champion.json").write_text(json.dumps(champ))
    text, _ = build_live_config(d, "testnet")
    doc = tomllib.loads(text)
    assert doc["risk"]["position"]["soft_position"] == 1234.0
    assert doc["risk"]["position"]["hard_position"] == 2000.0
    assert "venue" not in doc and "venue.queue_position = false" in text.split("\n[run]")[0]
