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


def test_progress_of_a_file_that_falls_back_is_counted_once(tmp_path, monkeypatch):
    """The Arrow engine shows chunks as it reads them; when the file falls back (a fault after
    the first chunks), what it showed is taken back and the object path's reading counts once."""
    from adapters import bybit_book_arrow
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths

    monkeypatch.setattr(bybit_book_arrow, "LINES_PER_CHUNK", 7)
    lines = XRP_OB.read_bytes().splitlines()
    bad = tmp_path / XRP_OB.name
    bad.write_bytes(b"\n".join([*lines[:40], b"{not json", *lines[40:]]) + b"\n")
    seen = []
    result = import_paths([bad], tmp_path / "cat", InstrumentRegistry(), progress=lambda b, m: seen.append((b, m)))
    assert result.engines[str(bad)][0] == "objects"
    assert any(b < 0 for b, _ in seen)  # the fast path's partial progress was taken back
    assert sum(b for b, _ in seen) == bad.stat().st_size
    assert sum(m for _, m in seen) == 50
