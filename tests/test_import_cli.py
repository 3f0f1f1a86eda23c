"""`mmbot catalog import --engine/--jobs/--progress` (issue 16, section 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

from mmbot.cli import main as cli_main
from mmbot.cli.main import main

FIX = Path(__file__).parent / "fixtures"
XRP_OB = FIX / "2024-12-01_XRPUSDT_ob500.data"


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def _engines(report: Path) -> dict:
    return {Path(f["file"]).name: (f.get("engine"), f.get("fallback")) for f in json.loads(report.read_text())["files"]}


def test_engine_per_file_in_the_report(tmp_path):
    bad = tmp_path / "2024-12-01_XRPUSDT_ob500.data"
    lines = XRP_OB.read_bytes().splitlines()
    bad.write_bytes(b"\n".join([*lines[:10], b"{not json", *lines[10:]]) + b"\n")
    for engine, src, expected in (("arrow", XRP_OB, ("arrow", None)), ("objects", XRP_OB, ("objects", None)),
                                  ("arrow", bad, ("objects", "line 11: not a plain order-book message"))):
        rep = tmp_path / f"{engine}-{src.parent.name}.json"
        r = run("catalog", "import", str(src), "--catalog", str(tmp_path / rep.stem), "--engine", engine,
                "--report", str(rep), "--no-progress")
        assert r.exit_code == 0, r.output
        assert _engines(rep) == {src.name: expected}
    # the fallback reports the problem exactly as the object engine does
    assert json.loads((tmp_path / f"arrow-{bad.parent.name}.json").read_text())["problems_total"] == {"malformed_line": 1}


def test_progress_bar_on_request_with_messages_per_second(tmp_path):
    r = run("catalog", "import", str(XRP_OB), "--catalog", str(tmp_path / "cat"), "--progress")
    assert r.exit_code == 0, r.output
    assert "msgs/s" in r.stderr and "50 msgs" in r.stderr


def test_progress_default_follows_terminal_and_ci(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("CI", "true")
    assert cli_main._import_progress([XRP_OB], None) is None
    monkeypatch.delenv("CI")
    bar = cli_main._import_progress([XRP_OB], None)
    assert bar is not None
    bar.close()
    assert cli_main._import_progress([XRP_OB], False) is None


def test_jobs_must_be_positive(tmp_path):
    r = run("catalog", "import", str(XRP_OB), "--catalog", str(tmp_path / "cat"), "--jobs", "0")
    assert r.exit_code == 2 and "--jobs" in r.output
    assert not (tmp_path / "cat").exists()
