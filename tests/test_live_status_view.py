"""The status view (mmbot/live/status.py) and ``mmbot status`` without a node: label sets, several
bots on one exposition, the console's bound on guard-transition lines, ``live.status_interval_s``
values, and the command's one-line failures."""

from __future__ import annotations

import http.server
import threading

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.live.status import MAX_TRANSITION_LINES, StatusConsole, format_block, format_line, parse_views
from strategies.risk.base import RiskConstraint

# Labels deliberately out of the exposition's sorted order and interleaved between two bots.
EXPOSITION = """\
# TYPE mmbot_info gauge
mmbot_info{instrument="BTCUSDT-LINEAR.BYBIT",environment="shadow"} 1.0
mmbot_info{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT"} 1.0
mmbot_up{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 1.0
mmbot_ready{instrument="BTCUSDT-LINEAR.BYBIT",environment="shadow"} 1.0
mmbot_ready{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT"} 0.0
mmbot_position_base{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT"} -0.003
mmbot_position_base{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 0.002
mmbot_pnl_usdt{part="balance_change",instrument="BTCUSDT-LINEAR.BYBIT",environment="shadow"} -1.5
mmbot_pnl_usdt{environment="shadow",part="unrealized",instrument="BTCUSDT-LINEAR.BYBIT"} 0.25
mmbot_pnl_usdt{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",part="fees"} -0.5
mmbot_quote_price{side="bid",environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 100.5
mmbot_quote_price{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",side="ask"} NaN
mmbot_quote_size_base{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",side="bid"} 0.002
mmbot_open_orders{environment="shadow",side="bid",instrument="BTCUSDT-LINEAR.BYBIT"} 2.0
mmbot_open_orders{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",side="ask"} 0.0
# TYPE mmbot_fills counter
mmbot_fills_total{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",liquidity="maker"} 7.0
mmbot_fills_total{liquidity="taker",environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 1.0
mmbot_fills_total{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT",liquidity="maker"} 100.0
mmbot_book_age_seconds{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 0.25
mmbot_book_age_seconds{environment="testnet",instrument="BTCUSDT-LINEAR.BYBIT"} -1.0
mmbot_trading_state{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 2.0
mmbot_guard_state{guard="kill_switch",state="HALTED",environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT"} 1.0
mmbot_guard_state{environment="shadow",instrument="BTCUSDT-LINEAR.BYBIT",guard="kill_switch",state="ACTIVE"} 0.0
mmbot_guard_state{environment="shadow",guard="stale_data",instrument="BTCUSDT-LINEAR.BYBIT",state="ACTIVE"} 1.0
mmbot_guard_state{environment="testnet",guard="stale_data",instrument="BTCUSDT-LINEAR.BYBIT",state="STALE"} 1.0
"""


def test_views_match_labels_as_sets_and_keep_bots_apart():
    views = {v["environment"]: v for v in parse_views(EXPOSITION)}
    assert set(views) == {"shadow", "testnet"}
    sh, tn = views["shadow"], views["testnet"]
    assert sh["ready"] and not tn["ready"]
    assert sh["position_base"] == 0.002 and tn["position_base"] == -0.003
    assert sh["fills"] == 8 and sh["fills_maker"] == 7 and tn["fills"] == 100
    assert sh["pnl_usdt"]["session"] == pytest.approx(-1.25)  # balance change + unrealised
    assert sh["quotes"]["bid"] == {"price": 100.5, "size": 0.002, "orders": 2}
    assert sh["quotes"]["ask"]["price"] is None  # NaN: no quote
    assert sh["book_age_s"] == 0.25 and tn["book_age_s"] is None  # -1 = no book yet
    assert sh["trading_state"] == "HALTED" and sh["guards"] == {"kill_switch": "HALTED", "stale_data": "ACTIVE"}
    assert tn["guards"] == {"stale_data": "STALE"}
    line = format_line(sh)
    for part in ("shadow BTCUSDT ready", "pos 0.002", "pnl -1.25 USDT (fees 0.50)", "bid 0.002@100.5 (2 orders)",
                 "ask none", "fills 8", "book 0.2s", "HALTED kill_switch=HALTED"):
        assert part in line, (part, line)
    assert "NOT READY" in format_line(tn) and "book none" in format_line(tn)
    block = format_block(tn, "http://x", {"ready": False, "book_valid": False, "account_reconciled": True})
    assert "NO (failing: book_valid)" in block and "stale_data STALE" in block


def test_views_from_the_metrics_actor_registry():
    from prometheus_client import generate_latest

    from mmbot.live.metrics_server import Metrics

    m = Metrics()
    lab = ("demo", "ETHUSDT-LINEAR.BYBIT")
    m.info.labels(*lab).set(1)
    m.position.labels(*lab).set(1.5)
    m.fills.labels(*lab, "maker").inc(3)
    m.quote.labels(*lab, "ask").set(2000.5)
    m.quote_size.labels(*lab, "ask").set(0.01)
    m.open_orders.labels(*lab, "ask").set(1)
    [v] = parse_views(generate_latest(m.registry).decode())
    assert (v["environment"], v["instrument"], v["position_base"], v["fills"]) == ("demo", "ETHUSDT-LINEAR.BYBIT", 1.5, 3)
    assert v["quotes"]["ask"] == {"price": 2000.5, "size": 0.01, "orders": 1}


def _constraint(guard: str, old: str, new: str) -> RiskConstraint:
    return RiskConstraint(guard=guard, ts_ns=0, old_state=old, new_state=new, reason=f"{guard} went {new}")


def test_console_bounds_guard_transition_lines_per_interval():
    import io

    out, now = io.StringIO(), [0.0]
    console = StatusConsole(10.0, render=lambda: EXPOSITION, out=out, clock=lambda: now[0])
    console.on_constraint(_constraint("kill_switch", "HALTED", "HALTED"))  # a re-send: not a transition
    for i in range(MAX_TRANSITION_LINES + 7):
        console.on_constraint(_constraint("stale_data", "ACTIVE" if i % 2 == 0 else "STALE",
                                          "STALE" if i % 2 == 0 else "ACTIVE"))
    assert out.getvalue().count("guard stale_data:") == MAX_TRANSITION_LINES and console.lines == MAX_TRANSITION_LINES
    console.tick()  # the interval has not passed
    assert console.lines == MAX_TRANSITION_LINES
    now[0] = 10.0
    console.tick()
    last = out.getvalue().splitlines()[-1]
    assert " shadow BTCUSDT " in last and last.endswith("| +7 guard transition(s) not shown (audit log)"), last
    console.on_constraint(_constraint("edge", "ACTIVE", "WIDENED"))  # a new interval: printed again
    assert out.getvalue().splitlines()[-1].endswith("guard edge: ACTIVE -> WIDENED (edge went WIDENED)")


@pytest.mark.parametrize("value,problem", [("-1", "must be >= 0.0"), ("nan", "must be a finite number"),
                                           ("inf", "must be a finite number"), ("1e6", "<= 86400.0")])
def test_status_interval_values_are_checked(value, problem):
    from mmbot.config.backtest import ConfigError
    from mmbot.live.node import load_live_config
    from mmbot.paths import CONFIG_DIR

    with pytest.raises(ConfigError) as e:
        load_live_config(CONFIG_DIR / "testnet.toml", [f"live.status_interval_s={value}"])
    assert str(e.value).startswith(f"--set live.status_interval_s={value}: live.status_interval_s") and problem in str(e.value)
    _, live = load_live_config(CONFIG_DIR / "testnet.toml", ["live.status_interval_s=0"])  # 0 = no status lines
    assert live.status_interval_s == 0


def _one_error(r, code: int) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == code and len(lines) == 1, (r.exit_code, r.output)
    return lines[0]


def test_mmbot_status_one_line_failures():
    run = lambda *a: CliRunner().invoke(main, ["status", *a])  # noqa: E731
    assert "give one of them" in _one_error(run("--url", "http://127.0.0.1:9", "--port", "9"), 2)
    assert "expected http://HOST:PORT" in _one_error(run("--url", "ftp://127.0.0.1:9"), 2)
    assert "must be 1..65535" in _one_error(run("--port", "70000"), 2)

    class NotMmbot(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"# TYPE other_metric gauge\nother_metric 1.0\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), NotMmbot)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        line = _one_error(run("--port", str(port)), 3)
        assert "without mmbot metrics" in line
        r = run("--url", f"http://127.0.0.1:{port}/metrics")  # a /metrics suffix is accepted
        assert r.exit_code == 3
    finally:
        srv.shutdown()
        srv.server_close()
    line = _one_error(run("--port", str(port)), 3)  # closed now: nothing answers
    assert line.startswith(f"error: nothing answers at http://127.0.0.1:{port}/metrics")


def test_the_console_reads_the_registry_as_status_reads_its_text():
    """The console reads the metrics actor's registry directly (no text rendered and parsed on the
    event loop every status interval); ``mmbot status`` parses ``/metrics``. Both give the same
    views and the same line, for every family the node exports, odd values included (NaN, inf,
    negative zero, values with many digits, two instruments, a histogram)."""
    import io
    import json
    import math

    from prometheus_client import generate_latest

    from mmbot.live.metrics_server import Metrics

    m = Metrics()
    for k, inst in enumerate(("XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT")):
        b = {"environment": "testnet", "instrument": inst}
        m.info.labels(**b).set(1)
        m.up.labels(**b).set(1)
        m.ready.labels(**b).set(k)
        for side, px in (("bid", 2.123456789012345), ("ask", 2.1234567890123457e-7)):
            m.quote.labels(**b, side=side).set(px)
            m.quote_size.labels(**b, side=side).set(30 + k)
            m.open_orders.labels(**b, side=side).set(3)
            m.quoting_allowed.labels(**b, side=side).set(1)
        for side in ("BUY", "SELL"):
            m.orders_submitted.labels(**b, side=side).inc(101)
            m.filled_qty.labels(**b, side=side).inc(0.1 + 0.2)
        for g in ("kill_switch", "loss", "drawdown", "position", "circuit_breaker", "stale_data", "edge"):
            for st in ("ACTIVE", "REDUCING", "HALTED"):
                m.guard_state.labels(**b, guard=g, state=st).set(st == "HALTED" and g == "loss")
        for part, v in (("realized", math.nan), ("unrealized", -0.0), ("fees", -1e-12), ("funding", math.inf),
                        ("balance_change", -math.inf)):
            m.pnl.labels(**b, part=part).set(v)
        m.position.labels(**b).set(-0.003)
        m.equity.labels(**b).set(1e15 / 3)
        m.mid.labels(**b).set(2.5)
        m.book_age.labels(**b).set(math.nan)
        m.fills.labels(**b, liquidity="MAKER").inc(3)
        for i in range(50):
            m.latency.labels(**b, action="submit").observe(0.0001 * i)
    text = generate_latest(m.registry).decode()
    assert json.dumps(parse_views(m.registry), sort_keys=True) == json.dumps(parse_views(text), sort_keys=True)
    assert len(parse_views(m.registry)) == 2
    lines = []
    for source in (m.registry, text):
        out = io.StringIO()
        StatusConsole(1.0, render=lambda s=source: s, out=out, clock=lambda: 5.0).tick(force=True)
        lines.append([ln.split(" ", 1)[1] for ln in out.getvalue().splitlines()])  # the clock time left out
    assert lines[0] == lines[1] and len(lines[0]) == 2, lines
