"""Hostile review 21 (issue 16 sections 3 and 4): ``mmbot promote`` / ``mmbot wf --export-config``
(a path to real money) and ``mmbot runs ls`` / ``mmbot runs diff``.

Every test here FAILED on branch ``integrate`` at 67fa0b9 (they are findings, not regressions).

The run folder ``tests/fixtures/hostile21_wf_run`` is the real output of
``mmbot wf --config tests/fixtures/wf_promote.toml --end 2024-12-01T07:42:00Z --workers 1``
(67fa0b9; ``report.json`` without its ``analysis`` block, ``champion.json`` without
``out_of_sample.metrics``, absolute paths replaced by ``/repo``: promote reads none of them).
Unmodified, ``mmbot promote`` writes it (``test_fixture_is_promotable`` checks that, so every
refusal below is caused by the one thing each test changes).
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
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import REPO_ROOT
from mmbot.tuning.promote import PromoteError, write_live_config

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hostile21_wf_run"
EVIL_WS = "wss://evil.example.com/v5/public/linear"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(r) -> str:
    """Exit 2, exactly one ``error:`` line on stderr, no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"traceback instead of one line: {type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (r.exit_code, r.output)
    return lines[0]


def run_folder(tmp_path: Path, name: str = "wf-run") -> Path:
    d = tmp_path / name
    shutil.copytree(FIXTURE, d)
    return d


def edit(d: Path, fname: str, fn) -> None:
    p = d / fname
    doc = json.loads(p.read_text())
    doc = fn(doc) or doc
    p.write_text(json.dumps(doc))


def set_champion_params(d: Path, params: dict, in_space: bool = False) -> None:
    """Change the champion consistently in all three places promote cross-checks (champion.json,
    report.json's champion and its newest used split), as a doctored folder would."""
    def rep(r):
        r["champion"]["parameters"].update(params)
        r["splits"][-1]["champion_params"].update(params)
        if in_space:  # as if the wf config had searched these keys (a legitimate-looking run)
            for k, v in params.items():
                r["wf"]["space"][k] = {"choices": [v, not v] if isinstance(v, bool) else [v], "high": None,
                                       "log": False, "low": None, "step": None, "type": ""}
    edit(d, "report.json", rep)
    edit(d, "champion.json", lambda c: c["parameters"].update(params))


def test_fixture_is_promotable(tmp_path):
    """Control: the unmodified fixture is promoted (so the refusals below come from the edits)."""
    d = run_folder(tmp_path)
    write_live_config(d, "testnet", tmp_path / "ok.toml")
    assert tomllib.loads((tmp_path / "ok.toml").read_text())["run"]["instrument"] == "XRPUSDT-LINEAR.BYBIT"


# -- HIGH: keys no wf run can tune are written into the live config ---------------------------------

@pytest.mark.parametrize(("key", "value", "env"), [
    ("live.base_url_ws_public", EVIL_WS, "mainnet"),
    ("live.api_key_file", "/root/.bybit-mainnet-keys.toml", "testnet"),
    ("live.kill_token_env", "", "mainnet"),
    ("live.foreign_orders", "ignore", "mainnet"),
    ("live.allow_mainnet", True, "testnet"),
    ("run.instrument", "ETHUSDT-LINEAR.BYBIT", "testnet"),
    ("risk.position.hard_position", 1e9, "mainnet"),
    ("risk.loss.daily_loss_stop", 1e12, "mainnet"),
])
def test_promote_refuses_a_champion_parameter_outside_the_runs_search_space(tmp_path, key, value, env):
    """HIGH. A champion.json/report.json whose ``parameters`` hold a key the run never searched.

    Expected: refused (PromoteError, nothing written): report.json records the run's search
    space (``wf.space``); a wf champion can only carry those keys, and ``check_space`` forbids
    ``run.*`` while ``live.*`` is not a backtest key at all, so such a champion is not a wf result.
    Actual: written, each marked ``# tuned by wf`` (which reads as legitimate to the reviewer):
    ``[live] base_url_ws_public`` pointing at any host (market data from an attacker's feed; the
    mainnet gate only classifies ORDER endpoints and accepts it once the operator sets
    allow_mainnet), ``api_key_file`` of another account, the kill endpoint off, foreign orders
    ignored, ``allow_mainnet = true`` in a testnet file, ``run.instrument`` ETHUSDT with the XRP
    position limits of the wf config (2000 ETH), loss/position limits of 1e9/1e12.
    Where: mmbot/tuning/promote.py:187-194 (every non-strategy, non-venue key of ``params`` is
    ``doc.set`` into its table; no check against ``report["wf"]["space"]`` or the section).
    """
    d = run_folder(tmp_path)
    set_champion_params(d, {key: value})
    out = tmp_path / "live.toml"
    with pytest.raises(PromoteError):
        write_live_config(d, env, out)
    assert not out.exists()


# -- MEDIUM ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["risk.enabled", "risk.audit.enabled"])
def test_promote_refuses_a_champion_that_switches_a_guard_off(tmp_path, key):
    """MEDIUM. A wf space that searches ``risk.enabled`` (or ``risk.audit.enabled``) choices
    [false, true]: allowed by ``check_space``/``check_keys`` (a backtest key), and a backtest
    without guards is never halted, so "off" tends to win in-sample.

    Expected: ``mmbot promote --env mainnet`` refuses a champion that turns the risk guards or the
    audit trail off (the live config's safety net is not a tuning result), or at least names it in
    the header for the reviewer. Actual: written silently, ``enabled = false  # tuned by wf``;
    the header still says "everything else is the template's".
    Where: mmbot/tuning/promote.py:187-194 (risk.* params copied without any check); header
    line at promote.py:219.
    """
    d = run_folder(tmp_path)
    set_champion_params(d, {key: False}, in_space=True)
    out = tmp_path / "live-mainnet.toml"
    try:
        write_live_config(d, "mainnet", out)
    except PromoteError:
        return
    head = out.read_text().split("\n[run]")[0]
    assert key in head, f"{key} = false promoted to a mainnet config with no refusal and no header warning"


def test_promote_refuses_a_report_instrument_that_is_not_the_tested_configs(tmp_path):
    """MEDIUM. report.json says BTCUSDT, the tested config (config.resolved.json) is XRPUSDT.

    Expected: refused: ``report["instrument"]`` must equal the tested config's ``run.instrument``
    (a wf run writes both from the same config). Actual: written as a BTCUSDT config with the XRP
    sizes: ``level_size = 200.0`` and ``max_position = 1000.0`` BTC (~20 M USDT per order), and the
    template's BTC limits kept, because only the report's instrument is compared with the template.
    Where: mmbot/tuning/promote.py:167 and :176 (``instrument = report["instrument"]``; the tested
    config's ``run.instrument`` is never read).
    """
    d = run_folder(tmp_path)
    edit(d, "report.json", lambda r: r.update(instrument="BTCUSDT-LINEAR.BYBIT"))
    out = tmp_path / "live.toml"
    with pytest.raises(PromoteError):
        write_live_config(d, "testnet", out)
    assert not out.exists()


def test_promote_refuses_a_config_resolved_json_edited_after_the_run(tmp_path):
    """MEDIUM. config.resolved.json hand-edited after the run (level_size 200 -> 900 XRP).

    Expected: refused: the module promises "live quotes exactly what was judged out-of-sample";
    report.json and mmbot_run.json record ``config_hash`` = SHA-256 of the canonical ``config``
    (``BacktestConfig.config_hash``), recomputable from config.resolved.json in one line.
    Actual: written with ``level_size = 900.0``; the header still names config hash ba53d7b2d36a.
    Where: mmbot/tuning/promote.py:81 (``config`` loaded, its hash never compared).
    """
    d = run_folder(tmp_path)
    edit(d, "config.resolved.json", lambda c: c["config"]["strategy"].update(level_size=900.0))
    out = tmp_path / "live.toml"
    with pytest.raises(PromoteError):
        write_live_config(d, "testnet", out)
    assert not out.exists()


def test_promote_header_cannot_be_spoofed_by_a_newline_in_report_json(tmp_path):
    """MEDIUM (review trust). ``report.json`` ``wf_hash`` = "abc\\n# gates: all passed ... reviewed".

    Expected: the header is what promote says, nothing else: a newline in a report field is
    refused or escaped. Actual: the value starts a line of its own in the header the operator
    reviews before setting allow_mainnet (any text as a comment; non-comment text only fails
    because the loader then rejects the TOML).
    Where: mmbot/tuning/promote.py:205-221 (report strings interpolated raw into the header).
    """
    d = run_folder(tmp_path)
    forged = "# REVIEWED by the risk desk 2026-12-03: OK to set allow_mainnet = true"
    edit(d, "report.json", lambda r: r.update(wf_hash="47c5cee5351b\n" + forged))
    out = tmp_path / "live-mainnet.toml"
    try:
        write_live_config(d, "mainnet", out)
    except PromoteError:
        return
    forged_lines = [ln for ln in out.read_text().splitlines() if ln.startswith(forged)]
    assert not forged_lines, f"a forged header line: {forged_lines}"


# -- LOW: doctored/odd folders -----------------------------------------------------------------------

def test_promote_refuses_gates_whose_verdicts_failed(tmp_path):
    """LOW. ``gates.passed = true`` and ``failed = []`` but a verdict says ``passed: false``.

    Expected: refused (the verdicts are the evidence; ``passed`` is their summary).
    Actual: written, header "gates: all passed ... min_maker_share".
    Where: mmbot/tuning/promote.py:66 (only ``passed``/``failed`` are read).
    """
    d = run_folder(tmp_path)
    edit(d, "report.json", lambda r: r["gates"]["verdicts"][0].update(passed=False, value=0.1))
    with pytest.raises(PromoteError):
        write_live_config(d, "testnet", tmp_path / "live.toml")


def test_promote_refuses_a_folder_whose_marker_is_not_a_wf_run(tmp_path):
    """LOW. The folder's mmbot_run.json says ``kind = "backtest"`` (wf files copied in).

    Expected: refused ("not a wf run folder"), as ``check_out_dir`` does for run kinds.
    Actual: written. Where: mmbot/tuning/promote.py:59-62 (only report.json's presence is checked).
    """
    d = run_folder(tmp_path)
    edit(d, "mmbot_run.json", lambda m: m.update(kind="backtest"))
    with pytest.raises(PromoteError):
        write_live_config(d, "testnet", tmp_path / "live.toml")


def _report_list(d):
    (d / "report.json").write_text("[1, 2]")


def _champion_list(d):
    (d / "champion.json").write_text("[]")


def _resolved_str(d):
    (d / "config.resolved.json").write_text('"x"')


def _params_list(d):
    edit(d, "report.json", lambda r: (r["champion"].update(parameters=["a"]), r["splits"][-1].update(champion_params=["a"])))
    edit(d, "champion.json", lambda c: c.update(parameters=["a"]))


def _no_instrument(d):
    edit(d, "report.json", lambda r: r.pop("instrument"))


def _no_verdicts(d):
    edit(d, "report.json", lambda r: r.update(gates={"passed": True}))


def _gates_str(d):
    edit(d, "report.json", lambda r: r.update(gates="passed"))


def _splits_dict(d):
    edit(d, "report.json", lambda r: r.update(splits={"a": 1}))


def _split_without_index(d):
    edit(d, "report.json", lambda r: r["splits"][-1].pop("index"))


@pytest.mark.parametrize("damage", [_report_list, _champion_list, _resolved_str, _params_list, _no_instrument,
                                    _no_verdicts, _gates_str, _splits_dict, _split_without_index],
                         ids=lambda f: f.__name__.strip("_"))
def test_promote_malformed_run_files_give_one_line_and_exit_2(tmp_path, damage):
    """LOW. report.json / champion.json / config.resolved.json valid JSON of the wrong shape
    (non-dict document, a list of parameters, a missing key as from an older mmbot).

    Expected (BRIEF: bad input): one ``error:`` line naming the file, exit 2.
    Actual: a traceback (AttributeError 'list'/'str' object has no attribute 'get'/'items',
    KeyError 'instrument'/'verdicts'/'index').
    Where: mmbot/tuning/promote.py:49-53 (``_load_json`` never checks for a dict), :65-81, :166-167,
    :216 (``report["gates"]["verdicts"]``).
    """
    d = run_folder(tmp_path)
    damage(d)
    one_error_line(cli("promote", str(d), "--out", str(tmp_path / "live.toml")))
    assert not (tmp_path / "live.toml").exists()


def test_promote_out_is_a_directory_with_force_gives_one_line(tmp_path):
    """LOW. ``mmbot promote RUN --out SOME_DIR --force``.

    Expected: one line ("SOME_DIR: is a directory"), exit 2. Actual: traceback IsADirectoryError
    from ``os.replace``. Where: mmbot/tuning/promote.py:252.
    """
    d = run_folder(tmp_path)
    (tmp_path / "adir").mkdir()
    one_error_line(cli("promote", str(d), "--out", str(tmp_path / "adir"), "--force"))


def test_promote_out_below_a_file_gives_one_line(tmp_path):
    """LOW. ``--out A_FILE/live.toml`` (a path component is a regular file).

    Expected: one line, exit 2. Actual: traceback FileExistsError from ``out.parent.mkdir``.
    Where: mmbot/tuning/promote.py:235.
    """
    d = run_folder(tmp_path)
    (tmp_path / "afile").write_text("x")
    one_error_line(cli("promote", str(d), "--out", str(tmp_path / "afile" / "live.toml")))


def test_promote_does_not_hang_on_a_fifo_in_the_run_folder(tmp_path):
    """LOW. config.resolved.json is a FIFO (or any non-regular file: /dev/zero symlink...).

    Expected: refused at once ("not a regular file"), exit 2. Actual: blocks forever in
    ``read_text`` (killed by the timeout here). Where: mmbot/tuning/promote.py:81 (report.json and
    champion.json are checked with ``is_file``, config.resolved.json is not).
    """
    d = run_folder(tmp_path)
    (d / "config.resolved.json").unlink()
    os.mkfifo(d / "config.resolved.json")
    try:
        r = subprocess.run([sys.executable, "-m", "mmbot.cli", "promote", str(d), "--out", str(tmp_path / "x.toml")],
                           capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("mmbot promote hangs on a FIFO config.resolved.json")
    assert r.returncode == 2


def test_wf_export_config_refuses_a_dangling_symlink_before_any_trial(tmp_path):
    """LOW. ``mmbot wf --export-config LINK`` where LINK is a dangling symlink.

    Expected: "LINK: exists (use --force ...)" before the config is even loaded (docs/tuning.md:
    "checks that FILE does not exist before any trial runs"), as ``mmbot promote`` says for it.
    Actual: the pre-check uses ``Path.exists()`` (follows the link: False), so the trials run
    (here: stopped by a bad --set, which the check should have preceded) and only the final
    ``os.link`` refuses, hours later. Where: mmbot/cli/wf.py:75.
    """
    link = tmp_path / "live.toml"
    link.symlink_to(tmp_path / "nowhere.toml")
    r = cli("wf", "--config", str(REPO_ROOT / "tests" / "fixtures" / "wf_promote.toml"), "--set", "wf.no_such_key=1",
            "--export-config", str(link), "--no-progress")
    assert "exists (use --force" in one_error_line(r)


# -- runs ls / runs diff -----------------------------------------------------------------------------

def _run(root: Path, name: str, report) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "mmbot_run.json").write_text(json.dumps({"format": 1, "kind": "backtest", "venue": "simulated",
                                                  "config_hash": "x", "mmbot": "0.1.0"}))
    (d / "report.json").write_text(report if isinstance(report, str) else json.dumps(report))
    return d


@pytest.mark.parametrize("report", [{"metadata": "oops", "metrics": {}},
                                    {"metadata": {"data_range": ["a", "b"]}, "metrics": {}},
                                    {"metadata": ["x"], "metrics": {}}], ids=["metadata-str", "range-list", "metadata-list"])
def test_runs_ls_lists_the_other_runs_when_one_report_is_malformed(tmp_path, report):
    """MEDIUM. One run folder under ROOT whose report.json has ``metadata`` of the wrong shape.

    Expected: ``runs ls`` lists every run and shows the problem in that run's "problems" column
    (as it does for unreadable JSON). Actual: a traceback (AttributeError: 'str'/'list' object has
    no attribute 'get'); nothing at all is listed, so one odd folder in a shared runs/ breaks the
    command for everyone. Same for ``runs diff``.
    Where: mmbot/report/runs.py:78 and :86-87 (``.get`` chained on whatever the JSON holds).
    """
    _run(tmp_path, "good", {"metrics": {"pnl": {"net_pnl": 1.0}}})
    _run(tmp_path, "bad", report)
    r = cli("runs", "ls", str(tmp_path))
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 0 and "good" in r.stdout and "bad" in r.stdout


def test_runs_diff_malformed_report_gives_one_line_or_a_note(tmp_path):
    """LOW. ``runs diff A B`` with B's report.json ``metadata`` a string.

    Expected: the diff with a note (or one error line, exit 2). Actual: traceback AttributeError.
    Where: mmbot/report/runs.py:86.
    """
    a = _run(tmp_path, "a", {"metrics": {}})
    b = _run(tmp_path, "b", {"metadata": "oops", "metrics": {}})
    r = cli("runs", "diff", str(a), str(b))
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"


def test_runs_json_output_is_strict_json_when_a_report_holds_nan(tmp_path):
    """LOW. report.json with ``"net_pnl": NaN`` and ``"n_fills": Infinity`` (Python's json accepts them).

    Expected: ``runs ls --json`` / ``runs diff --json`` print RFC 8259 JSON (NaN/inf as null, and
    the run's problems naming the non-finite value: BRIEF "NaN and inf are bad input").
    Actual: the output contains bare ``NaN`` / ``Infinity`` tokens that jq and every strict parser
    reject; the value is not flagged. Where: mmbot/cli/runs.py:44 and :69 (``json.dumps`` with the
    default ``allow_nan=True``); mmbot/report/runs.py:116-127 (no finiteness check).
    """
    a = _run(tmp_path, "a", {"metrics": {"pnl": {"net_pnl": 1.0}}})
    b = _run(tmp_path, "b", '{"metrics": {"pnl": {"net_pnl": NaN}, "counts": {"n_fills": Infinity}}}')

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-JSON token {c}")))

    for args in (("runs", "ls", str(tmp_path), "--json"), ("runs", "diff", str(a), str(b), "--json")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
        strict(r.stdout)


def test_runs_ls_does_not_hang_on_a_fifo_report(tmp_path):
    """LOW. A run folder whose report.json is a FIFO (or a symlink to /dev/zero: unbounded read).

    Expected: listed with a problem ("report.json: not a regular file"), at once. Actual: ``runs
    ls`` blocks forever reading it (killed by the timeout here). Where: mmbot/report/runs.py:117-120
    (``path.exists()`` then ``read_text()``; no ``is_file``).
    """
    d = tmp_path / "r"
    d.mkdir()
    (d / "mmbot_run.json").write_text(json.dumps({"format": 1, "kind": "backtest"}))
    os.mkfifo(d / "report.json")
    try:
        r = subprocess.run([sys.executable, "-m", "mmbot.cli", "runs", "ls", str(tmp_path)],
                           capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("mmbot runs ls hangs on a FIFO report.json")
    assert r.returncode == 0 and "r" in r.stdout


def test_runs_ls_shows_a_wf_runs_data_window(tmp_path):
    """LOW. ``runs ls`` of a wf run folder (the fixture: a real ``mmbot wf`` output).

    Expected: the data window of the run (report.json ``data_range``: 07:30 .. 07:42), so that
    ``runs diff`` of two wf runs over different windows says "different data windows".
    Actual: "-" .. "-": only a backtest report's ``metadata.data_range`` is read, and ``runs diff``
    of two wf runs over different data prints no note. Where: mmbot/report/runs.py:86.
    """
    a = run_folder(tmp_path, "wf-a")
    b = run_folder(tmp_path, "wf-b")
    edit(b, "report.json", lambda r: r["data_range"].update(end="2024-12-01T08:30:00.000Z"))
    doc = json.loads(cli("runs", "ls", str(tmp_path), "--json").stdout)
    starts = {r["run"]: (r["start"], r["end"]) for r in doc["runs"]}
    assert starts["wf-a"] == ("2024-12-01T07:30:00.000Z", "2024-12-01T07:42:00.000Z"), starts
    assert "different data windows" in cli("runs", "diff", str(a), str(b)).stdout


def test_promote_template_comment_names_the_templates_value_for_a_tuned_limit(tmp_path):
    """LOW (review trust). A wf on XRP that searched ``risk.position.hard_position`` (in its
    space; champion 2500 XRP), promoted onto the BTC testnet template.

    Expected: the line's comment shows the TEMPLATE's value (``template: 0.02``), as for every other
    changed key, so the reviewer sees how far from the template the limit moved.
    Actual: ``hard_position = 2500.0  # tuned by wf; template: 2000.0``: 2000.0 is the wf config's
    value written by the first ``doc.set`` (limits copied for the other instrument); the second
    ``set`` calls the current line's value "template". Where: mmbot/tuning/promote.py:122-126
    (``_TomlText.set``) with :182-183 then :194 setting the same key twice.
    """
    d = run_folder(tmp_path)
    set_champion_params(d, {"risk.position.hard_position": 2500.0}, in_space=True)
    out = tmp_path / "live.toml"
    write_live_config(d, "testnet", out)
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("hard_position"))
    assert "template: 0.02" in line, line


def test_promote_refuses_an_empty_verdict_list_when_the_wf_config_has_gates(tmp_path):
    """LOW. report.json ``gates`` = passed, no verdicts, while ``report["wf"]["gates"]`` configures
    ``min_maker_share`` and ``max_drawdown_usdt`` (the gate list removed from the evidence).

    Expected: refused: every configured gate must have a passing verdict. Actual: written, with
    the header "gates: none configured in the wf config: nothing was checked out-of-sample",
    which contradicts the same report. Where: mmbot/tuning/promote.py:65-68 and :215-217.
    """
    d = run_folder(tmp_path)
    edit(d, "report.json", lambda r: r["gates"].update(verdicts=[], failed=[], passed=True))
    with pytest.raises(PromoteError):
        write_live_config(d, "mainnet", tmp_path / "live.toml")
