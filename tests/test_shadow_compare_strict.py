"""``mmbot compare`` is strict about configs (liveops item 4): a shadow folder without a resolved
config used to be compared with a note ("config not checked"); now every shadow/live session writes
``config.resolved.json`` at its start, so a folder without one is refused (exit 2, one line) unless
``--force``."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mmbot.cli.main import main
from tests.test_compare import _make


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_compare_refuses_a_folder_without_resolved_config_unless_forced(tmp_path):
    s, b = _make(tmp_path, [(1_000_000, "O-20240101-120000-001-000-1", "Q-1", "QT-1", "BUY", 100.0, 0.001, 0.00002,
                             "MAKER")])
    (s / "config.resolved.json").unlink()
    r = _run("compare", str(s), str(b))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output)
    assert f"config not checked: {s} has no config.resolved.json" in lines[0] and "--force" in lines[0], lines
    r = _run("compare", str(s), str(b), "--force", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["checks"]["config"] == "unchecked" and res["identical_fills"]
    assert "compared despite: config not checked" in _run("compare", str(s), str(b), "--force").stdout
