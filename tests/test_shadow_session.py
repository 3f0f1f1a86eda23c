"""Shadow sessions against the loopback fake's public feed, as an operator sees them (liveops):
book gaps re-subscribed, bounded console, ``mmbot status``, the end-of-session report and the run
folder. One module-scoped 12 s session serves the console / status / report / run-folder tests;
the gap test has its own session (it injects a fault)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.recordings import generate_recording
from tests.test_live_e2e import Fake, _free_port, _get, metric

try:
    import tools.fake_bybit  # noqa: F401
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
QUOTE_NEAR = ["--set", "venue.fill_model=risk_averse", "--set", "strategy.fee_floor_enabled=false",
              "--set", "strategy.min_half_spread_bps=0.2", "--set", "strategy.k_vol=0.0"]


class Shadow:
    """``mmbot live --env shadow`` in a subprocess, stdout and stderr captured to files."""

    def __init__(self, tmp: Path, fake: Fake, extra: list[str] = (), duration: str | None = None,
                 metrics: bool = True) -> None:
        self.port = _free_port() if metrics else -1
        self.tmp = tmp
        self.out, self.err = tmp / "shadow.out", tmp / "shadow.err"
        args = [sys.executable, "-m", "mmbot.cli", "live", "--env", "shadow", "--config", str(REPO / "config/testnet.toml"),
                "--metrics-port", str(self.port), "--set", f"live.base_url_ws_public={fake.urls['ws_public']}",
                "--set", f"live.lock_dir={tmp / 'locks'}", "--set", f"live.out_dir={tmp / 'runs'}",
                "--set", f"risk.audit.file={tmp / 'audit.jsonl'}",
                "--set", f"risk.kill_switch.file={tmp / 'KILL.{env}.{account}'}", *QUOTE_NEAR, *extra]
        if duration:
            args += ["--duration", duration]
        self.proc = subprocess.Popen(args, stdout=open(self.out, "w"), stderr=open(self.err, "w"), cwd=REPO,
                                     env={**os.environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})
        self.base = f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return _get(self.base + "/metrics")[1]

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for(self, cond, timeout: float, what: str):
        t0, last = time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"shadow exited {self.proc.returncode} waiting for {what}:\n{self.output()[-3000:]}")
            try:
                last = cond()
                if last:
                    return last
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timeout waiting for {what}; last={last!r}\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec.jsonl", 2, 7)


def test_shadow_book_gap_resubscribes_and_quoting_resumes(tmp_path, recording):
    # Before: shadow's raw data client cleared the book on an update-id gap and never asked for a
    # fresh snapshot: stale_data stayed INVALID (no quotes) until the socket happened to reconnect.
    fake = Fake(tmp_path, recording)
    sh = Shadow(tmp_path, fake, extra=["--set", "live.record=false"])
    invalid = 'guard="stale_data",new_state="INVALID"'
    try:
        sh.wait_for(lambda: metric(sh.metrics(), "mmbot_open_orders") >= 1, 60, "shadow quotes")
        snapshots = metric(sh.metrics(), "mmbot_book_snapshots_total")
        fake.fault("gap_book")
        sh.wait_for(lambda: metric(sh.metrics(), "mmbot_guard_transitions_total", invalid) >= 1, 30,
                    "stale_data INVALID after the gap")
        sh.wait_for(lambda: metric(sh.metrics(), "mmbot_book_snapshots_total") > snapshots, 15,
                    "the re-subscription snapshot")
        sh.wait_for(lambda: metric(sh.metrics(), "mmbot_guard_state", 'guard="stale_data",state="ACTIVE"') == 1, 15,
                    "stale_data ACTIVE again")
        assert metric(sh.metrics(), "mmbot_book_gaps_total") >= 1  # the gap is counted in shadow too
        submitted = metric(sh.metrics(), "mmbot_orders_submitted_total")
        sh.wait_for(lambda: metric(sh.metrics(), "mmbot_orders_submitted_total") > submitted, 30, "quoting resumed")
        assert sh.stop() == 0, sh.output()[-3000:]
        assert [f["kind"] for f in fake.state()["faults"]["fired"]] == ["gap_book"]
    finally:
        if sh.proc.poll() is None:
            sh.proc.kill()
        fake.stop()
