"""Installing and running mmbot the ways a user does: `make run` (runtime dependencies only), a
non-editable `pip install .` run from another directory, the `notebooks` extra and the docs'
`jupyter nbconvert` command, and where `mmbot catalog import` writes by default.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import DEFAULT_CATALOG, REPO_ROOT, SHARE_ROOT, user_catalog_dir, user_data_dir

ROOT = Path(__file__).resolve().parents[1]
XRP_OB = ROOT / "tests" / "fixtures" / "2024-12-01_XRPUSDT_ob500.data"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _make_n(target: str, venv: Path) -> str:
    r = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout


def test_make_run_installs_runtime_dependencies_only(tmp_path):
    run = _make_n("run", tmp_path / "venv")  # a venv that does not exist yet: make prints every step
    installs = [ln for ln in run.splitlines() if "pip install" in ln and "--upgrade pip" not in ln]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e ."], run
    assert f"{tmp_path / 'venv'}/bin/mmbot backtest run" in run
    test = _make_n("test", tmp_path / "venv")
    assert "pip install --quiet -e '.[test]'" in test and "-m pytest" in test
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI still runs the test target


def test_notebooks_extra_has_nbconvert_and_jupyterlab():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in extras["notebooks"]}
    assert {"nbconvert", "jupyterlab", "ipykernel"} <= names
    assert not any(re.split(r"[<>=\[ ]", d)[0].lower() in {"ray", "hftbacktest", "pytest"} for d in extras["notebooks"])
    runtime = {re.split(r"[<>=\[ ]", d)[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert not runtime & {"pytest", "ray", "hftbacktest", "hypothesis", "jupyterlab", "nbconvert"}


def test_catalog_import_defaults_to_the_user_data_folder_not_the_shipped_catalog(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    shipped = digest(DEFAULT_CATALOG)
    r = CliRunner().invoke(main, ["catalog", "import", str(XRP_OB)], env={"MMBOT_DATA_DIR": str(tmp_path / "data")})
    assert r.exit_code == 0, r.output
    assert f"into {tmp_path / 'data' / 'catalog'}" in r.output
    assert (tmp_path / "data" / "catalog" / "mmbot_catalog.json").exists()
    assert digest(DEFAULT_CATALOG) == shipped
    help_text = CliRunner().invoke(main, ["catalog", "import", "--help"]).output
    assert "$MMBOT_DATA_DIR" in " ".join(help_text.split()) and "~/.local/share/mmbot" in help_text


def test_user_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MMBOT_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_data_dir() == tmp_path / "a" and user_catalog_dir() == tmp_path / "a" / "catalog"
    monkeypatch.delenv("MMBOT_DATA_DIR")
    assert user_data_dir() == tmp_path / "xdg" / "mmbot"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir() == tmp_path / "home" / ".local" / "share" / "mmbot"
    assert SHARE_ROOT == REPO_ROOT  # a source checkout reads config/ and catalog/ beside the package


@pytest.mark.slow
@pytest.mark.packaging
def test_non_editable_install_runs_a_backtest_from_another_directory(tmp_path):
    """`pip install .` (no deps: this venv's site-packages stand in for them), then `mmbot
    backtest run` from an unrelated working directory with the shipped config and catalog."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_mmbot_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # appended after site
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--quiet", str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMBOT_DATA_DIR")}
    probe = subprocess.run([str(vpy), "-c", "import mmbot.paths as p; print(p.__file__); print(p.DEFAULT_BACKTEST_CONFIG)"],
                           cwd=where, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(x.startswith(str(site)) for x in probe), probe  # the installed copy, not this checkout
    r = subprocess.run([str(venv / "bin" / "mmbot"), "backtest", "run", "--set", 'run.end="2024-12-01T07:32:00Z"',
                        "--no-progress"], cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1].removeprefix("wrote "))
    assert (run_dir / "report.json").exists()
    r = subprocess.run([str(venv / "bin" / "mmbot"), "catalog", "ls", "--json"], cwd=where, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "BTCUSDT-LINEAR.BYBIT" in r.stdout, r.stderr
    # the portfolio config and its catalog ship too (docs/portfolio.md)
    portfolio = site / "mmbot" / "_bundled" / "config" / "portfolio.toml"
    r = subprocess.run([str(venv / "bin" / "mmbot"), "backtest", "run", "--config", str(portfolio), "--set",
                        'run.end="2024-12-01T07:58:30Z"', "--no-progress", "--out", str(tmp_path / "portfolio-run")],
                       cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "portfolio-run" / "report.XRPUSDT-LINEAR.html").exists()


@pytest.mark.slow
def test_docs_nbconvert_command_runs(tmp_path):
    """The command in docs/report.md, verbatim but for the run folder and the output path."""
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.fail("jupyter is not installed: pip install -e '.[notebooks]' (or '.[test]')")
    doc = (ROOT / "docs" / "report.md").read_text()
    line = next(ln for ln in doc.splitlines() if "jupyter nbconvert" in ln)
    run = CliRunner().invoke(main, ["backtest", "run", "--end", "2024-12-01T07:32:00Z", "--out", str(tmp_path / "run"),
                                    "--no-progress"])
    assert run.exit_code == 0, run.output
    words = shlex.split(line)
    env_words = [w for w in words if re.match(r"^[A-Z_]+=", w)]
    cmd = [w for w in words if w not in env_words]
    assert cmd[:2] == ["jupyter", "nbconvert"] and "MMBOT_RUN_DIR=runs/<run>" in env_words
    out_nb = tmp_path / "analysis.ipynb"
    cmd = [str(jupyter), *cmd[1:]]
    cmd[cmd.index("--output") + 1] = str(out_nb)
    env = {**os.environ, "MMBOT_RUN_DIR": str(tmp_path / "run"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MPLBACKEND", None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out_nb.exists() and '"output_type"' in out_nb.read_text()
