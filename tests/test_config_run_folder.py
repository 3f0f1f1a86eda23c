"""Run folders (issue 13 section 2): ``--out`` never deletes what mmbot did not write, every run
folder holds its resolved config and hash, ``mmbot compare`` refuses runs that are not comparable,
one kill-switch file per mode and account, a run that starts halted says so, and ``mmbot
calibrate`` refuses a session that had no real venue."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.canonical_json import dumps_canonical
from mmbot.cli.main import main
from mmbot.paths import CONFIG_DIR, REPO_ROOT

START, END = "2024-12-01T07:30:00Z", "2024-12-01T07:32:00Z"  # two minutes of the embedded hour
WF_SMALL = REPO_ROOT / "tests" / "fixtures" / "wf_small.toml"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output, r.exception)
    return lines[0]


def backtest(out: Path, *args: str, config: Path = CONFIG_DIR / "backtest.toml"):
    return run("backtest", "run", "--config", str(config), "--end", END, "--out", str(out), "--no-progress",
               "--set", "report.html=false", *args)


def config_copy(tmp: Path, name: str, kill_file: str) -> Path:
    """``config/<name>`` with absolute paths and its kill switch file moved into ``tmp``."""
    text = (CONFIG_DIR / name).read_text()
    text = text.replace('"../catalog"', json.dumps(str(REPO_ROOT / "catalog")))
    text = text.replace('"../runs"', json.dumps(str(tmp / "runs")))
    text = text.replace('file = "../runs/KILL.{env}.{account}"', f"file = {json.dumps(kill_file)}")
    assert kill_file in text
    p = tmp / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rf") / "bt"
    r = backtest(out, "--set", "strategy.k_vol=1.5")
    assert r.exit_code == 0, r.output
    return out


# -- --out ------------------------------------------------------------------------------------------

def test_backtest_out_refuses_a_foreign_folder_and_keeps_it(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("not mmbot's")
    line = one_error(backtest(out))
    assert f"--out {out}: not empty and not an mmbot run folder" in line
    assert (out / "precious.txt").read_text() == "not mmbot's" and len(list(out.iterdir())) == 1
    f = tmp_path / "file"
    f.write_text("x")
    assert "exists and is not a directory" in one_error(backtest(f))


def test_backtest_out_replaces_its_own_run_folder(run_dir, tmp_path):
    import shutil

    again = tmp_path / "again"
    shutil.copytree(run_dir, again)
    r = backtest(again, "--set", "strategy.k_vol=1.5")
    assert r.exit_code == 0, r.output
    assert json.loads((again / "mmbot_run.json").read_text())["kind"] == "backtest"


def test_wf_out_refuses_a_foreign_folder_before_running(tmp_path, run_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("x")
    r = run("wf", "--config", str(WF_SMALL), "--out", str(out), "--trials", "1", "--no-progress")
    assert "not an mmbot run folder" in one_error(r)
    assert [p.name for p in out.iterdir()] == ["notes.md"]
    r = run("wf", "--config", str(WF_SMALL), "--out", str(run_dir), "--trials", "1", "--no-progress")
    assert "is an mmbot backtest run folder" in one_error(r)


def test_calibrate_out_must_be_a_file_calibrate_wrote(tmp_path):
    assert "is a directory" in one_error(run("calibrate", "--live", str(tmp_path / "nope"), "--out", str(tmp_path)))
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    line = one_error(run("calibrate", "--live", str(tmp_path / "nope"), "--out", str(other)))
    assert "exists and is not a calibration file" in line and other.read_text() == '{"mine": 1}'


# -- resolved config --------------------------------------------------------------------------------

def test_run_folder_holds_the_resolved_config_and_its_hash(run_dir):
    marker = json.loads((run_dir / "mmbot_run.json").read_text())
    doc = json.loads((run_dir / "config.resolved.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert marker["kind"] == "backtest" and marker["venue"] == "simulated"
    assert doc["config_hash"] == report["metadata"]["config_hash"] == marker["config_hash"]
    assert doc["config_hash"] == hashlib.sha256(dumps_canonical(doc["config"])).hexdigest()[:12]
    assert doc["config"]["strategy"]["k_vol"] == 1.5 and doc["config"]["report"]["html"] is False
    assert doc["overrides"]["strategy.k_vol"] == "--set strategy.k_vol=1.5"
    assert doc["overrides"]["run.end"] == f"--end {END}"
    assert doc["resolved_paths"]["run.catalog"] == str(REPO_ROOT / "catalog")
    assert doc["resolved_paths"]["risk.kill_switch.file"] == str(REPO_ROOT / "runs" / "KILL.backtest.default")


# -- mmbot compare ----------------------------------------------------------------------------------

def fake_shadow(tmp: Path, run_dir: Path, ts_ns: int, **config_changes) -> Path:
    """A shadow folder with one order event at ``ts_ns`` and the backtest's resolved config,
    changed by ``config_changes`` ({"strategy.k_vol": 2.0})."""
    sh = tmp / "shadow"
    (sh / "recording").mkdir(parents=True)
    ev = {"kind": "OrderInitialized", "client_order_id": "O-1-001-000-1", "ts_event_ns": ts_ns, "ts_init_ns": ts_ns,
          "side": "BUY", "quantity": "0.01", "price": "67000.0"}
    (sh / "recording" / "orders.jsonl").write_text(json.dumps(ev) + "\n")
    doc = json.loads((run_dir / "config.resolved.json").read_text())
    for key, value in config_changes.items():
        section, name = key.split(".")
        doc["config"][section][name] = value
    (sh / "config.resolved.json").write_text(json.dumps(doc))
    return sh


def test_compare_refuses_different_configs_unless_forced(tmp_path, run_dir):
    start_ns = json.loads((run_dir / "report.json").read_text())["metadata"]["data_range"]["start_ns"]
    same = fake_shadow(tmp_path / "a", run_dir, start_ns + 10**9)
    r = run("compare", str(same), str(run_dir))
    assert r.exit_code in (0, 3), r.output  # comparable: compared
    differs = fake_shadow(tmp_path / "b", run_dir, start_ns + 10**9, **{"strategy.k_vol": 2.0,
                                                                          "run.catalog": "/elsewhere"})
    line = one_error(run("compare", str(differs), str(run_dir)))
    assert "not comparable" in line and "strategy.k_vol: 2.0 -> 1.5" in line and "--force" in line
    assert "run.catalog" not in line  # paths cannot change a decision
    r = run("compare", str(differs), str(run_dir), "--force")
    assert r.exit_code in (0, 3) and "compared despite: config strategy.k_vol" in r.output, r.output


def test_compare_refuses_disjoint_windows(tmp_path, run_dir):
    later = fake_shadow(tmp_path, run_dir, 1_900_000_000 * 10**9)  # 2030
    line = one_error(run("compare", str(later), str(run_dir)))
    assert "windows do not overlap" in line


# -- kill switch: one file per mode and account ----------------------------------------------------

def test_kill_file_is_per_environment_and_account(tmp_path):
    from mmbot.builders import risk_actor_configs
    from mmbot.config.backtest import load_backtest_config

    template = str(tmp_path / "KILL.{env}.{account}")
    testnet = config_copy(tmp_path, "testnet.toml", template)
    bt = config_copy(tmp_path, "backtest.toml", template)
    r = run("kill", "--config", str(bt), "--reason", "stop the experiment")
    assert r.exit_code == 0 and "KILL.backtest.default (env backtest, account default)" in r.output, r.output
    assert sorted(p.name for p in tmp_path.glob("KILL*")) == ["KILL.backtest.default"]
    r = run("kill", "--config", str(testnet), "--reason", "testnet only")
    assert r.exit_code == 0 and (tmp_path / "KILL.testnet.default").exists(), r.output
    r = run("kill", "--config", str(bt), "--env", "mainnet", "--account", "main acct", "--reason", "x")
    assert r.exit_code == 0 and (tmp_path / "KILL.mainnet.main_acct").exists(), r.output
    # The builders hand each mode its own file: a mainnet bot of account "other" is not halted.
    cfg = load_backtest_config(testnet)
    files = {env: next(a.config["file"] for a in risk_actor_configs(cfg, cfg.run.instrument, env=env, account="other")
                        if "file" in a.config) for env in ("backtest", "testnet", "mainnet")}
    assert {k: Path(v).name for k, v in files.items()} == {
        "backtest": "KILL.backtest.other", "testnet": "KILL.testnet.other", "mainnet": "KILL.mainnet.other"}
    assert not Path(files["mainnet"]).exists()
    r = run("kill", "--config", str(bt), "--resume")
    assert r.exit_code == 0 and not (tmp_path / "KILL.backtest.default").exists()
    assert (tmp_path / "KILL.testnet.default").exists()  # resuming the experiment leaves testnet halted


def test_kill_refuses_to_replace_or_remove_anything_but_a_file(tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    assert "not a regular file" in one_error(run("kill", "--file", str(d), "--reason", "x"))
    assert "not a regular file" in one_error(run("kill", "--file", str(d), "--resume"))
    assert d.is_dir()


def test_backtest_that_starts_halted_says_so(tmp_path):
    template = str(tmp_path / "KILL.{env}.{account}")
    cfg = config_copy(tmp_path, "backtest.toml", template)
    (tmp_path / "KILL.backtest.default").write_text('{"reason": "left over from yesterday"}')
    (tmp_path / "KILL.mainnet.default").write_text('{"reason": "another bot"}')
    r = backtest(tmp_path / "o", config=cfg)
    assert r.exit_code == 0, r.output
    summary = r.output.splitlines()[0]
    assert summary.startswith(f"STARTED HALTED (kill switch file {tmp_path / 'KILL.backtest.default'}: "
                              "left over from yesterday"), summary
    meta = json.loads((tmp_path / "o" / "report.json").read_text())["metadata"]
    assert meta["started_halted"]["guard"] == "kill_switch"
    (tmp_path / "KILL.backtest.default").unlink()
    r = backtest(tmp_path / "o", config=cfg)  # another environment's kill does not halt a backtest
    assert r.exit_code == 0 and "HALTED" not in r.output, r.output
    assert "started_halted" not in json.loads((tmp_path / "o" / "report.json").read_text())["metadata"]


# -- calibrate: no latency from a session without a real venue --------------------------------------

def session_dir(path: Path) -> Path:
    (path / "recording").mkdir(parents=True)
    ev = [{"kind": "OrderSubmitted", "client_order_id": "O-1-001-000-1", "ts_event_ns": 1, "ts_init_ns": 1},
          {"kind": "OrderAccepted", "client_order_id": "O-1-001-000-1", "ts_event_ns": 2, "ts_init_ns": 2}]
    (path / "recording" / "orders.jsonl").write_text("\n".join(json.dumps(e) for e in ev) + "\n")
    return path


def test_calibrate_refuses_a_shadow_session(tmp_path):
    from mmbot.run_folder import write_marker

    marked = session_dir(tmp_path / "20260101T000000Z-live")
    write_marker(marked, "shadow", "abc", venue="simulated")
    line = one_error(run("calibrate", "--live", str(marked), "--out", str(tmp_path / "cal.json")))
    assert "venue 'simulated'" in line and "never reached an exchange" in line
    legacy = session_dir(tmp_path / "20260101T000000Z-shadow")  # shadow folders from before the marker
    line = one_error(run("calibrate", "--live", str(legacy), "--out", str(tmp_path / "cal.json")))
    assert "a shadow run folder" in line and "never reached an exchange" in line
    assert not (tmp_path / "cal.json").exists()


def test_backtest_folder_with_a_foreign_file_or_a_bare_marker_is_not_replaced(tmp_path):
    """A backtest --out folder is replaced as a whole: only when it holds nothing but a backtest's
    own files under a marker mmbot wrote (hostile review of issue 13: notes saved into a run folder,
    or a copied ``{"kind": "backtest"}``, were deleted)."""
    from mmbot.run_folder import RunFolderError, check_out_dir, write_marker

    ours = tmp_path / "ours"
    ours.mkdir()
    write_marker(ours, "backtest", "0123456789ab")
    (ours / "report.json").write_text("{}")
    assert check_out_dir(ours, "backtest") == ours.absolute()
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"notes\.txt.*delete them"):
        check_out_dir(ours, "backtest")
    (ours / "notes.txt").unlink()
    (ours / "plots").mkdir()  # a folder, even one named like nothing we write
    with pytest.raises(RunFolderError, match="plots"):
        check_out_dir(ours, "backtest")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "mmbot_run.json").write_text('{"kind": "backtest"}')
    with pytest.raises(RunFolderError, match="not one mmbot wrote"):
        check_out_dir(bare, "backtest")
