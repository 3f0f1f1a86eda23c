"""A run stopped before it was ever ready is no success (hostile review of issue 13, finding 16):
SIGTERM (or the end of ``--duration``) during the start exits 4 with one line saying so, the
clients still down named (was: exit 0). Every endpoint here is a closed loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.test_hostile_issue13 import DEAD, REPO, _env, _live_args


def test_sigterm_before_readiness_exits_4_with_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mmbot.cli", *_live_args(tmp_path, *DEAD)], env=_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((tmp_path / "runs").glob("*/nautilus.jsonl")):
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, (proc.returncode, err[-1500:])
    assert '"event": "ready"' not in err
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: not ready: stopped (SIGTERM) after "), errors
    assert "before the run was ready (" in errors[0] and "client" in errors[0], errors
