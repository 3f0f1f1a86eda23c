"""A failed start is reported as a failure, and a lost connection stops the run (mmbot/live/node.py
``LiveRun``; docs/runbook.md "Start"): exit 4 with one line when readiness (data + execution
connected, account reconciled, instrument known, strategy running) is not reached in time; Nautilus'
own reconnection after a drop of the private/trade WebSocket; exit 5 when the outage outlasts
``live.reconnect_timeout_s``, with our orders cancelled over REST."""

from __future__ import annotations

import time

import pytest

from tests.test_live_e2e import KEY, SECRET, Live, fake, recording  # noqa: F401  (fixtures)
from tests.test_live_masking import leaks

FAST = ["--set", "live.timeout_connection_s=2", "--set", "live.timeout_reconciliation_s=2",
        "--set", "live.timeout_post_stop_s=0.5"]


def _error_lines(live: Live) -> list[str]:
    return [x for x in live.err.read_text(errors="replace").splitlines() if x.startswith("error: ")]


@pytest.mark.parametrize("case", ["wrong secret", "unknown instrument", "exchange unreachable"])
def test_live_start_failure_exits_4_with_one_line(tmp_path, fake, case):
    extra, secret = list(FAST), None
    if case == "wrong secret":
        secret = "a-wrong-secret-0123456789-mmbot"  # every private request answers 10004 (signed-string echo)
    elif case == "unknown instrument":  # a symbol without a shipped definition: the sizes' fit check
        extra += ["--set", "run.instrument=ADAUSDT-LINEAR.BYBIT"]  # (exit 2) is left to the strategy
    else:  # nothing listens on port 9 of the loopback: connection refused, as offline / a DNS failure
        fake.urls = {k: (v.replace(v.split("//")[1].split("/")[0], "127.0.0.1:9") if k != "control" else v)
                     for k, v in fake.urls.items()}
    live = Live(tmp_path, fake, extra=extra, duration="60s", secret=secret)
    try:
        code = live.proc.wait(timeout=60)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    out = live.output()
    assert code == 4, out[-3000:]
    lines = _error_lines(live)
    assert len(lines) == 1 and lines[0].startswith("error: not ready: "), lines
    want = {"wrong secret": "Bybit error 10004", "unknown instrument": "instrument ADAUSDT-LINEAR.BYBIT (run.instrument) "
            "not found", "exchange unreachable": "not connected within live.timeout_connection_s = 2s"}[case]
    assert want in lines[0], lines[0]
    assert leaks([tmp_path / "runs"], [out]) == []
    # A substring, not a JSON parse per line: Nautilus' Rust logger writes to the same stderr and can
    # land on the tail of a JSON line (seen in CI: the exit line followed by "[ERROR] ... _connect").
    assert '"event": "running"' not in live.err.read_text() or case == "unknown instrument"


def test_live_ws_drop_reconnects_then_outage_stops_exit_5_and_cancels(tmp_path, fake):
    """Dropping the private and trade sockets: Nautilus reconnects (re-auth, re-subscribe) and
    quoting goes on. Then an outage (reconnects refused) longer than reconnect_timeout_s: the
    run stops with exit 5 and its orders are cancelled over REST."""
    live = Live(tmp_path, fake, extra=["--set", "live.reconnect_timeout_s=3", "--set", "live.timeout_post_stop_s=0.5"])
    try:
        live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes")
        n_orders = len(fake.state()["orders"])
        fake.fault("drop_ws", stream="private")
        fake.fault("drop_ws", stream="trade")

        def reconnected():
            st = fake.state()
            conns = {(c["stream"], c["authed"]) for c in st["connections"]}
            return {("private", True), ("trade", True)} <= conns and len(st["orders"]) > n_orders + 2
        live.wait_for(reconnected, 30, "private+trade re-authenticated and new orders")
        assert live.proc.poll() is None
        fake.fault("refuse_ws", stream="private")
        code = live.proc.wait(timeout=60)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    out = live.output()
    assert code == 5, out[-3000:]
    lines = _error_lines(live)
    assert len(lines) == 1 and lines[0].startswith("error: connection lost: ws_private down for"), lines
    assert fake.state()["open_orders"] == []
    assert out.count('"event": "connection_lost"') == 1  # the first drop was survived
