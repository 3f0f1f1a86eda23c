"""Every command in a ```bash block of docs/tuning.md runs (issue 16, section 3).

The commands are parsed from the page, so an edited example cannot escape the test. Each runs in
a scratch directory (``config`` linked to the repository's, so relative paths in the commands
work and nothing lands in the repository) with a shorter range appended: one split of 6 + 3
minutes, 2 trials, ``--min-test-minutes 2`` (later options win in click); a command without
``--out`` gets one. A run must end with 0, or with 2 and only real gate verdicts (no skipped
split, no ``out_of_sample_result``, no ``error:``). README's synopsis of ``mmbot wf`` may only
name options ``mmbot wf --help`` knows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from mmbot.paths import REPO_ROOT

pytestmark = pytest.mark.slow
DOC = REPO_ROOT / "docs" / "tuning.md"
SHRINK = ["--start", "2024-12-01T07:30:00Z", "--end", "2024-12-01T07:39:00Z", "--train", "6m", "--test", "3m",
          "--step", "3m", "--trials", "2", "--min-test-minutes", "2", "--workers", "2", "--no-progress"]


def doc_commands(text: str) -> list[str]:
    """The ``mmbot`` lines of every ```bash block (comments stripped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("mmbot "):
                out.append(line)
    return out


def run(cmd: str, cwd) -> subprocess.CompletedProcess:
    args = shlex.split(cmd)
    if args[1] == "wf":
        args += SHRINK
        if "--out" not in args:
            args += ["--out", f"out-{abs(hash(cmd)) % 10**8}"]
    return subprocess.run([sys.executable, "-m", "mmbot.cli", *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_the_page_has_the_examples():
    cmds = doc_commands(DOC.read_text())
    assert any(c.startswith("mmbot wf --config config/wf.toml") for c in cmds)
    assert any("--storage" in c for c in cmds) and any("--export-config" in c for c in cmds)
    assert any(c.startswith("mmbot promote") for c in cmds)


def test_every_documented_command_runs(tmp_path):
    (tmp_path / "config").symlink_to(REPO_ROOT / "config")
    for cmd in doc_commands(DOC.read_text()):
        r = run(cmd, tmp_path)
        where = f"{cmd}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        if cmd.startswith("mmbot promote"):
            assert r.returncode == 0, where
            out = shlex.split(cmd)[shlex.split(cmd).index("--out") + 1]
            from mmbot.live.node import load_live_config

            load_live_config(tmp_path / out)
            continue
        assert r.returncode in (0, 2), where
        assert "error:" not in r.stderr and "skipped split" not in r.stdout, where
        assert "out_of_sample_result" not in r.stderr, where
        if r.returncode == 2:
            assert [ln for ln in r.stderr.splitlines() if ln.startswith("gate failed:")], where
        if "--storage" in cmd:
            assert "reused from storage" in r.stdout, where
            again = run(cmd, tmp_path)  # "run the same command again": everything comes from the storage
            assert "trials: 0 run now, 2 reused from storage; nothing ran: every result was in the storage" \
                in again.stdout, again.stdout + again.stderr
        else:
            assert "reused from storage" not in r.stdout and "none (all results in storage)" not in r.stdout, where
        if "--export-config" in cmd:
            assert r.returncode == 0, where
            args = shlex.split(cmd)
            assert (tmp_path / args[args.index("--export-config") + 1]).is_file(), where


def test_readme_wf_synopsis_names_known_options():
    from click.testing import CliRunner

    from mmbot.cli.main import main

    help_text = CliRunner().invoke(main, ["wf", "--help"]).output
    readme = (REPO_ROOT / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| `mmbot wf") or ln.startswith("| `mmbot promote")]
    assert len(rows) == 2
    for opt in re.findall(r"\[(--[a-z-]+)", rows[0]):
        assert opt in help_text, opt
    promote_help = CliRunner().invoke(main, ["promote", "--help"]).output
    for opt in re.findall(r"(--[a-z-]+)", rows[1].split("|")[1]):
        assert opt in promote_help, opt
