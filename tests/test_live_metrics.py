"""Metrics pieces without a live node: HTTP endpoints and their limits, reason classes, metric
families and labels (a ``MetricsActor`` in a small backtest with the queue simulator), the
combined trading state, and the Grafana dashboard's queries against the exported names."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mmbot.live.metrics_server import (
    BASE_LABELS, METRIC_NAMES, Metrics, MetricsActor, MetricsActorConfig, MetricsHttpServer, exported_names,
    reason_class,
)
from strategies.risk.base import RISK_TOPIC, RiskConstraint

REPO = Path(__file__).resolve().parent.parent
LAB = ("testnet", "BTCUSDT-LINEAR.BYBIT")


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


def _req(url: str, method: str = "GET", headers: dict | None = None, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_live_metrics_http_endpoints_bind_loopback():
    actor = _StubActor()
    actor.m.orders_submitted.labels(*LAB, "buy").inc()
    actor.m.latency.labels(*LAB, "submit").observe(0.002)
    srv = MetricsHttpServer(actor, "127.0.0.1", 0, kill_token="tok-123")
    srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert srv.server_address[0] == "127.0.0.1"
        code, text = _req(base + "/metrics")
        assert code == 200
        assert 'mmbot_orders_submitted_total{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT",side="buy"} 1.0' in text
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
        assert _req(base + "/metrics", "DELETE")[0] == 405
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


def _idle_clients(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionError:
        return True


def test_live_metrics_idle_clients_hold_no_threads_and_scrapes_still_answer():
    # Issue 13 item 9: 200 idle connections took 200 threads (23 -> 223) and were never closed.
    srv = MetricsHttpServer(_StubActor(), "127.0.0.1", 0)
    srv.start()
    socks = []
    try:
        threads_before = threading.active_count()
        socks = _idle_clients(srv.port, 200)
        time.sleep(0.5)  # let the server accept them all
        assert threading.active_count() <= threads_before + 2, (threads_before, threading.active_count())
        assert _req(f"http://127.0.0.1:{srv.port}/metrics")[0] == 200  # a scrape is still answered
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_live_metrics_idle_connections_time_out_and_are_capped():
    srv = MetricsHttpServer(_StubActor(), "127.0.0.1", 0, request_timeout_s=0.5, max_connections=8)
    srv.start()
    socks = []
    try:
        socks = _idle_clients(srv.port, 12)
        time.sleep(0.2)
        # Over the cap, each newcomer closes the oldest idle connection: the first 4 go at once.
        assert [_closed_by_server(s, 0.2) for s in socks[:4]] == [True] * 4
        assert srv.evicted_connections == 4 and srv.rejected_connections == 0
        # The others are closed by the server after request_timeout_s ...
        assert all(_closed_by_server(s, 3.0) for s in socks[4:])
        assert srv.timed_out_connections == 8 and srv.open_connections == 0
        assert _req(f"http://127.0.0.1:{srv.port}/metrics")[0] == 200
        # ... and so is a client that sends half a request and stalls.
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(slow, 3.0)
        slow.close()
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_live_metrics_busy_slots_answer_503():
    actor = _StubActor()
    actor.render = lambda: b"#" * (32 << 20)  # a client that does not read this keeps its slot busy
    srv = MetricsHttpServer(actor, "127.0.0.1", 0, request_timeout_s=2.0, max_connections=1)
    srv.start()
    hog = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        hog.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert _req(f"http://127.0.0.1:{srv.port}/health")[0] == 503
        assert srv.rejected_connections == 1
        time.sleep(2.5)  # the hog's answer times out: the slot is free again
        assert _req(f"http://127.0.0.1:{srv.port}/health")[0] == 200
    finally:
        hog.close()
        srv.stop()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(request_timeout_s=0), "request_timeout_s"), (dict(request_timeout_s=float("nan")), "request_timeout_s"),
    (dict(request_timeout_s=float("inf")), "request_timeout_s"), (dict(max_connections=0), "max_connections"),
])
def test_live_metrics_server_limits_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetricsHttpServer(_StubActor(), "127.0.0.1", 0, **kwargs)


def test_live_metrics_reason_classes_and_names():
    assert reason_class("EC_PostOnlyWillTakeLiquidity") == "post_only"
    assert reason_class("retCode=10006 Too many visits") == "rate_limit"
    assert reason_class("110007: ab not enough for new order (insufficient balance)") == "insufficient_balance"
    assert reason_class("110001: order not exists or too late to cancel") == "unknown_order"
    assert reason_class("something else") == "other"
    names = exported_names(Metrics().registry)
    for name in METRIC_NAMES:
        assert name in names or name + "_bucket" in names, name


# -- a MetricsActor in a backtest with the queue simulator (the shadow set-up) ---------------------


@pytest.fixture(scope="module")
def sim_run():
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.enums import AggressorSide

    from adapters.sim.exec_client import CLIENT_ID, SimParams
    from adapters.sim.latency import Latency, LatencyModel
    from adapters.sim.queue import QueueModel
    from tests.queue_harness import BUY, SELL, make_engine
    from tests.test_strategy_scenarios import IID, T0, snapshot, trade, update

    def constraint(st):
        st.msgbus.publish(topic=RISK_TOPIC, msg=RiskConstraint(
            guard="position", ts_ns=st.clock.timestamp_ns(), old_state="ACTIVE", new_state="REDUCE_ONLY",
            reason="test", allow_bid=False, instrument_id=str(IID)))

    params = SimParams(model=QueueModel("risk_averse", 3), latency=LatencyModel(
        order=Latency("constant", 1.0), amend=Latency("constant", 1.0), cancel=Latency("constant", 1.0)))
    engine, client, strat = make_engine([(0, lambda st: st.place("a", BUY, 100.0, 0.003)),
                                         (0, lambda st: st.place("b", SELL, 100.3, 0.002)),
                                         (25, constraint)], params)
    actor = MetricsActor(MetricsActorConfig(instrument_id=IID, port=-1, environment="shadow",
                                            account_id=f"{CLIENT_ID}-001", update_interval_ms=10,
                                            portfolio_limits_usdt={"gross.soft": 1500.0, "net.hard": 2000.0}))
    engine.add_actor(actor)
    data = [snapshot(0, [(100.0, 0.001), (99.9, 1.0)], [(100.4, 1.0)]), trade(20, 99.9, 0.010, AggressorSide.SELLER, "1"),
            update(30, (BUY, 99.9, 1.0)), update(40, (BUY, 99.8, 1.0))]
    flat = [d for m in data for d in m]
    engine.add_data([d for d in flat if type(d).__name__ == "OrderBookDelta"])
    engine.add_data([d for d in flat if type(d).__name__ == "TradeTick"], sort=True)
    engine.run()
    detail = actor.update()
    text = actor.render().decode()
    yield {"actor": actor, "client": client, "text": text, "detail": detail, "usdt": USDT, "t0": T0,
           "iid": IID}
    engine.dispose()


def test_live_metrics_every_series_has_environment_and_instrument(sim_run):
    families = list(text_string_to_metric_families(sim_run["text"]))
    samples = [s for f in families for s in f.samples]
    assert len(samples) > 50
    for s in samples:
        assert all(s.labels.get(k) for k in BASE_LABELS), s
        assert (s.labels["environment"], s.labels["instrument"]) == ("shadow", str(sim_run["iid"])), s
    # What the actor saw really is in there: one fill, the guard transition, the quoting permission.
    names = {s.name for s in samples}
    assert {"mmbot_fills_total", "mmbot_info", "mmbot_up", "mmbot_trading_state", "mmbot_quoting_allowed"} <= names


def test_live_metrics_equity_and_ready_from_the_simulator_account(sim_run):
    # Shadow has no BYBIT account: equity and /ready follow the account the node trades on (the
    # simulator's), instead of staying 0 / 503 for want of a venue account.
    text, actor = sim_run["text"], sim_run["actor"]
    account = sim_run["client"].get_account()
    fam = {f.name: f for f in text_string_to_metric_families(text)}
    equity = fam["mmbot_equity_usdt"].samples[0].value
    unrealized = next(s.value for s in fam["mmbot_pnl_usdt"].samples if s.labels["part"] == "unrealized")
    fills = sum(s.value for s in fam["mmbot_fills"].samples if s.name == "mmbot_fills_total")
    assert fills == 1
    assert equity != 0
    assert equity == pytest.approx(float(account.balance_total(sim_run["usdt"])) + unrealized, abs=1e-9)
    assert sim_run["detail"]["account_reconciled"] and sim_run["detail"]["instrument_known"]


def test_live_metrics_trading_state_combines_every_guard(sim_run):
    actor = sim_run["actor"]
    iid = str(sim_run["iid"])

    def state() -> tuple[float, float, float]:
        fam = {f.name: f for f in text_string_to_metric_families(actor.render().decode())}
        ts = fam["mmbot_trading_state"].samples[0].value
        q = {s.labels["side"]: s.value for s in fam["mmbot_quoting_allowed"].samples}
        return ts, q["bid"], q["ask"]

    def send(guard, new, trading="ACTIVE", bid=True, ask=True, instrument=iid):
        actor._on_constraint(RiskConstraint(guard=guard, ts_ns=0, old_state="?", new_state=new, reason="t",
                                            allow_bid=bid, allow_ask=ask, trading_state=trading,
                                            instrument_id=instrument))

    # After the run: the position guard's REDUCE_ONLY (bid blocked, trading state ACTIVE).
    assert state() == (0, 0, 1)
    send("position", "ACTIVE")
    assert state() == (0, 1, 1)
    # Each guard that wants a non-ACTIVE trading state shows, the most restrictive wins.
    send("position", "REDUCING", "REDUCING", bid=False)
    assert state() == (1, 0, 1)
    send("circuit_breaker", "OPEN", "HALTED", bid=False, ask=False)  # not read by the old panel
    assert state() == (2, 0, 0)
    send("circuit_breaker", "HALF_OPEN", "ACTIVE")
    assert state() == (1, 0, 1)
    send("position", "ACTIVE")
    # Guards that only pull quotes (stale data, edge pause) keep the trading state, show in quoting.
    send("stale_data", "INVALID", bid=False, ask=False)
    assert state() == (0, 0, 0)
    send("stale_data", "ACTIVE")
    send("edge", "PAUSED", bid=False, ask=False)
    assert state() == (0, 0, 0)
    send("edge", "ACTIVE")
    for guard in ("loss", "drawdown", "kill_switch"):
        send(guard, "HALTED", "HALTED", bid=False, ask=False)
        assert state() == (2, 0, 0), guard
        send(guard, "ACTIVE")
    assert state() == (0, 1, 1)
    # Another instrument's constraint is not ours.
    send("kill_switch", "HALTED", "HALTED", bid=False, ask=False, instrument="ETHUSDT-LINEAR.BYBIT")
    assert state() == (0, 1, 1)


# -- the Grafana dashboard ----------------------------------------------------------------------

_SELECTOR = re.compile(r"\b(mmbot_[a-z0-9_]+)(\{[^}]*\})?")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _dashboard_exprs() -> list[tuple[str, str]]:
    d = json.loads((REPO / "docs" / "grafana_dashboard.json").read_text())
    out = [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["definition"]) for v in d["templating"]["list"] if v.get("type") == "query"]
    return out


def test_live_metrics_dashboard_queries_use_exported_names_and_labels():
    names = exported_names(Metrics().registry)
    d = json.loads((REPO / "docs" / "grafana_dashboard.json").read_text())
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "environment", "instrument"} <= variables
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        selectors = _SELECTOR.findall(expr)
        assert selectors, (title, expr)
        for name, braces in selectors:
            assert name in names, (title, name)
            if title.startswith("variable"):
                continue  # the variables' own queries list the label values
            assert 'environment=~"$environment"' in braces and 'instrument=~"$instrument"' in braces, (title, expr)
        for by in _BY.findall(expr):  # aggregations keep the bots apart
            # the portfolio sums add the instruments up (one environment's node); every other keeps both
            keep = {"environment"} if title.startswith("Portfolio") else {"environment", "instrument"}
            assert keep <= {x.strip() for x in by.split(",")}, (title, expr)
    # The trading-state panel shows the state all guards together impose, not a subset of them.
    [(_, trading)] = [(t, e) for t, e in exprs if t.startswith("Trading state")]
    assert "mmbot_trading_state" in trading and "guard=~" not in trading


def test_live_metrics_dashboard_has_the_portfolio_row():
    """The "Portfolio" row (docs/portfolio.md "Metrics"): gross = Σ|pos·mid| and net = |Σ pos·mid| of
    the instruments against the [risk.portfolio] limits, the portfolio guard's state, the allocator's
    weights, budgets and blacklist per instrument."""
    d = json.loads((REPO / "docs" / "grafana_dashboard.json").read_text())
    titles = [p["title"] for p in d["panels"]]
    row = titles.index("Portfolio")
    assert d["panels"][row]["type"] == "row"
    below = {p["title"]: [t["expr"] for t in p["targets"]] for p in d["panels"][row + 1:]}
    [exposure] = [e for t, e in below.items() if t.startswith("Portfolio gross and net")]
    assert any(e.startswith("sum by (environment) (abs(mmbot_position_notional_usdt{") for e in exposure), "gross"
    assert any(e.startswith("abs(sum by (environment) (mmbot_position_notional_usdt{") for e in exposure), "net"
    assert any("mmbot_portfolio_limit_usdt{" in e and 'measure=~"gross|net"' in e for e in exposure), "limits"
    [guard] = [e for t, e in below.items() if t == "Portfolio guard state"]
    assert 'guard="portfolio"' in guard[0]
    flat = " ".join(e for es in below.values() for e in es)
    for name in ("mmbot_allocator_weight{", "mmbot_allocator_budget_usdt{", "mmbot_allocator_blacklisted{"):
        assert name in flat, name
    assert all(p["gridPos"]["y"] > d["panels"][row]["gridPos"]["y"] for p in d["panels"][row + 1:])


def _samples(actor) -> dict:
    out: dict = {}
    for f in text_string_to_metric_families(actor.render().decode()):
        for smp in f.samples:
            out.setdefault(smp.name, []).append(smp)
    return out


def test_live_metrics_position_notional_and_the_portfolio_limits(sim_run):
    actor = sim_run["actor"]
    actor.update()
    got = _samples(actor)
    pos = got["mmbot_position_base"][0].value
    mid = got["mmbot_mid_price"][0].value
    assert pos != 0
    assert got["mmbot_position_notional_usdt"][0].value == pytest.approx(pos * mid, rel=1e-12)
    limits = {(x.labels["measure"], x.labels["level"]): x.value for x in got["mmbot_portfolio_limit_usdt"]}
    assert limits == {("gross", "soft"): 1500.0, ("net", "hard"): 2000.0}


def test_live_metrics_allocator_budget_weight_and_blacklist_of_its_own_instrument(sim_run):
    actor = sim_run["actor"]
    iid = str(sim_run["iid"])

    def allocate(instrument, state, weight, budget, cap):
        actor._on_constraint(RiskConstraint(guard="allocator", ts_ns=0, old_state="ALLOCATED", new_state=state,
                                            reason="t", instrument_id=instrument, max_position_base=cap,
                                            numbers={"weight": weight, "budget_usdt": budget}))

    def allocator() -> tuple:
        got = _samples(actor)
        return tuple(got[n][0].value for n in ("mmbot_allocator_weight", "mmbot_allocator_budget_usdt",
                                              "mmbot_allocator_max_position_base", "mmbot_allocator_blacklisted"))

    allocate(iid, "ALLOCATED", 0.25, 750.0, 7.5)
    assert allocator() == (0.25, 750.0, 7.5, 0.0)
    allocate("ETHUSDT-LINEAR.BYBIT", "BLACKLISTED", 0.0, 0.0, 0.0)  # another instrument's budget
    assert allocator() == (0.25, 750.0, 7.5, 0.0)
    allocate(iid, "BLACKLISTED", 0.0, 0.0, 0.0)
    assert allocator() == (0.0, 0.0, 0.0, 1.0)
    allocate(iid, "ALLOCATED", 0.5, 1500.0, 15.0)  # back in after the cooldown
    assert allocator() == (0.5, 1500.0, 15.0, 0.0)


def test_node_portfolio_limits_from_the_portfolio_config():
    from mmbot.config.backtest import load_backtest_config
    from mmbot.live.node import metrics_actor_configs, node_portfolio_limits

    cfg = load_backtest_config(REPO / "config" / "portfolio.toml")
    limits = node_portfolio_limits(cfg)
    assert limits == {"gross.soft": 1500.0, "gross.hard": 3000.0, "net.soft": 1000.0, "net.hard": 2000.0}
    assert node_portfolio_limits(load_backtest_config(REPO / "config" / "portfolio.toml", [
        "risk.enabled=false", "portfolio.allocator.enabled=false"])) == {}

    class Live:
        metrics_host, ready_max_book_age_s = "127.0.0.1", 10.0
    configs = metrics_actor_configs(["XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"], Live(), 0, "", "shadow",
                                    group="g", portfolio_limits=limits)
    assert [c.config["portfolio_limits_usdt"] for c in configs] == [limits, limits]  # every instrument's actor
