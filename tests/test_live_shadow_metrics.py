"""``mmbot live --env shadow`` metrics end to end against the loopback fake's public feed: /ready
reaches 200 (shadow has no venue account to reconcile; the simulator's account counts), equity
follows the simulator's fills, and every series is labelled ``environment="shadow"``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.recordings import generate_recording
from tests.test_live_e2e import _free_port, _get

try:
    import tools.fake_bybit  # noqa: F401
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec.jsonl", 1.5, 11)


def test_live_shadow_ready_equity_and_labels(tmp_path, recording):
    err = open(tmp_path / "fake.err", "w")
    fake = subprocess.Popen([sys.executable, "-m", "tools.fake_bybit", "--recording", str(recording), "--port", "0",
                             "--speed", "2"], stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    port = _free_port()
    shadow = None
    try:
        urls = json.loads(fake.stdout.readline())
        shadow = subprocess.Popen(
            [sys.executable, "-m", "mmbot.cli", "live", "--env", "shadow", "--config", str(REPO / "config/testnet.toml"),
             "--metrics-port", str(port), "--set", f"live.base_url_ws_public={urls['ws_public']}",
             "--set", f"live.lock_dir={tmp_path / 'locks'}", "--set", f"live.out_dir={tmp_path / 'runs'}",
             "--set", "live.record=false", "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}",
             "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}", "--set", "venue.fill_model=risk_averse",
             "--set", "strategy.fee_floor_enabled=false", "--set", "strategy.min_half_spread_bps=0.2",
             "--set", "strategy.k_vol=0.0"],
            stdout=open(tmp_path / "shadow.out", "w"), stderr=open(tmp_path / "shadow.err", "w"), cwd=REPO,
            env={**os.environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})
        base = f"http://127.0.0.1:{port}"

        def wait_for(cond, timeout, what):
            t0, last = time.monotonic(), None
            while time.monotonic() - t0 < timeout:
                assert shadow.poll() is None, (tmp_path / "shadow.err").read_text()[-3000:]
                try:
                    last = cond()
                    if last:
                        return last
                except OSError:
                    pass
                time.sleep(0.25)
            raise AssertionError(f"timeout waiting for {what}; last={last!r}\n"
                                 f"{(tmp_path / 'shadow.err').read_text()[-2000:]}")

        code, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(_get(base + "/ready")), 45, "/ready 200")
        detail = json.loads(body)
        assert detail["account_reconciled"] and detail["book_valid"] and detail["instrument_known"]

        def families():
            return {f.name: f for f in text_string_to_metric_families(_get(base + "/metrics")[1])}

        def filled():
            fam = families()
            fills = sum(s.value for s in fam["mmbot_fills"].samples if s.name == "mmbot_fills_total")
            return fam if fills >= 1 else None

        fam = wait_for(filled, 45, "a simulated fill in the metrics")
        equity = fam["mmbot_equity_usdt"].samples[0].value
        parts = {s.labels["part"]: s.value for s in fam["mmbot_pnl_usdt"].samples}
        # Equity = the simulator account's balance (start + realised - fees) + unrealised, not 0.
        assert equity == pytest.approx(100_000.0 + parts["balance_change"] + parts["unrealized"], abs=1e-6)
        for f in fam.values():
            for s in f.samples:
                assert s.labels.get("environment") == "shadow" and s.labels.get("instrument") == "BTCUSDT-LINEAR.BYBIT", s
        shadow.send_signal(signal.SIGTERM)
        assert shadow.wait(timeout=60) == 0, (tmp_path / "shadow.err").read_text()[-3000:]
    finally:
        if shadow is not None and shadow.poll() is None:
            shadow.kill()
        fake.send_signal(signal.SIGTERM)
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()
        err.close()
