"""Metrics server pieces without a node: HTTP endpoints, reason classes, metric families."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from mmbot.live.metrics_server import METRIC_NAMES, Metrics, MetricsHttpServer, reason_class


class _StubActor:
    def __init__(self) -> None:
        self.m = Metrics()
        self.ready = {"ready": False, "book_valid": False}
        self.kills: list[tuple[str, str]] = []

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.m.registry)

    def ready_state(self) -> dict:
        return self.ready

    def request_kill(self, action: str, reason: str) -> None:
        self.kills.append((action, reason))


def _req(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_live_metrics_http_endpoints_bind_loopback():
    actor = _StubActor()
    actor.m.orders_submitted.labels("buy").inc()
    actor.m.latency.labels("submit").observe(0.002)
    srv = MetricsHttpServer(actor, "127.0.0.1", 0, kill_token="tok-123")
    srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert srv.httpd.server_address[0] == "127.0.0.1"
        code, text = _req(base + "/metrics")
        assert code == 200 and 'mmbot_orders_submitted_total{side="buy"} 1.0' in text
        assert "mmbot_tick_to_order_latency_seconds_bucket" in text
        assert _req(base + "/health")[0] == 200
        code, body = _req(base + "/ready")
        assert code == 503 and json.loads(body)["book_valid"] is False
        actor.ready = {"ready": True}
        assert _req(base + "/ready")[0] == 200
        assert _req(base + "/kill", "POST")[0] == 403
        assert _req(base + "/kill", "POST", {"Authorization": "Bearer wrong"})[0] == 403
        assert _req(base + "/kill", "POST", {"Authorization": "Bearer tok-123"})[0] == 200
        assert _req(base + "/kill?action=reset", "POST", {"Authorization": "Bearer tok-123"})[0] == 200
        assert [a for a, _ in actor.kills] == ["kill", "reset"]
        assert _req(base + "/nope")[0] == 404
    finally:
        srv.stop()


def test_live_metrics_kill_endpoint_off_without_token():
    actor = _StubActor()
    srv = MetricsHttpServer(actor, "127.0.0.1", 0, kill_token="")
    srv.start()
    try:
        assert _req(f"http://127.0.0.1:{srv.port}/kill", "POST", {"Authorization": "Bearer "})[0] == 404
        assert actor.kills == []
    finally:
        srv.stop()


def test_live_metrics_reason_classes_and_names():
    assert reason_class("EC_PostOnlyWillTakeLiquidity") == "post_only"
    assert reason_class("retCode=10006 Too many visits") == "rate_limit"
    assert reason_class("110007: ab not enough for new order (insufficient balance)") == "insufficient_balance"
    assert reason_class("110001: order not exists or too late to cancel") == "unknown_order"
    assert reason_class("something else") == "other"
    from prometheus_client import generate_latest

    m = Metrics()
    m.orders_rejected.labels("submit", "post_only").inc()
    m.fills.labels("maker").inc()
    m.quote.labels("bid").set(1)
    m.pnl.labels("realized").set(0)
    m.guard_state.labels("stale_data", "ACTIVE").set(1)
    m.latency.labels("submit").observe(0.001)
    m.ws_reconnects.inc()
    text = generate_latest(m.registry).decode()
    for name in METRIC_NAMES:
        assert name in text, name
