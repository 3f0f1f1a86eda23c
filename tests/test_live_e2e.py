"""`mmbot live --env testnet` end to end against the loopback fake Bybit (tools/fake_bybit).

The node is pointed at the fake only through configuration (``--set live.base_url_*``), the
same keys an operator uses for a mirror. Everything binds 127.0.0.1. Skipped only when
``tools.fake_bybit`` cannot be imported.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.recordings import generate_recording

try:
    from tools.fake_bybit import process_api_key
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
# This process' own key: mmbot allows one instance per API key per host, whatever the lock_dir, so
# another pytest process (an xdist worker, another checkout's suite) must use another key.
KEY, SECRET = process_api_key("fake-key-for-mmbot-e2e"), "fake-secret-0123456789-mmbot-e2e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` whose label set contains every ``k="v"`` pair of ``labels``
    (comma-separated; the exposition sorts labels, so the pairs need not be adjacent)."""
    pairs = [p for p in labels.split(",") if p]
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and all(p in line for p in pairs):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else float("nan")


class Fake:
    def __init__(self, tmp: Path, recording: Path, key: str = KEY) -> None:
        self.key = key  # the only API key it accepts; Live runs mmbot with it
        self.err = open(tmp / "fake.err", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.fake_bybit", "--recording", str(recording), "--port", "0", "--loop",
             "--api-key", key, "--api-secret", SECRET],
            stdout=subprocess.PIPE, stderr=self.err, text=True, cwd=REPO)
        line = self.proc.stdout.readline()
        assert line, f"fake exchange did not start: {(tmp / 'fake.err').read_text()}"
        self.urls = json.loads(line)

    def state(self) -> dict:
        return json.loads(_get(self.urls["control"] + "/state")[1])

    def fault(self, kind: str, **params) -> dict:
        return _post(self.urls["control"] + "/faults", {"kind": kind, **params})

    def clear_faults(self, kind: str) -> None:
        req = urllib.request.Request(self.urls["control"] + f"/faults?kind={kind}", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def replay(self, action: str, **params) -> dict:
        """pause | resume | step | speed (docs/fake_bybit.md, control API)."""
        return _post(self.urls["control"] + "/replay", {"action": action, **params})

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


class Live:
    """``mmbot live`` in a subprocess, all output captured to files (grepped for the secret)."""

    def __init__(self, tmp: Path, fake: Fake, extra: list[str] = (), duration: str | None = None,
                 secret: str | None = None, name: str = "live", config: Path | None = None) -> None:
        self.port = _free_port()
        u = fake.urls
        self.tmp = tmp
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        args = [sys.executable, "-m", "mmbot.cli", "live", "--env", "testnet", "--config", str(config or REPO / "config/testnet.toml"),
                "--metrics-port", str(self.port),
                "--set", f"live.base_url_http={u['http']}", "--set", f"live.base_url_ws_public={u['ws_public']}",
                "--set", f"live.base_url_ws_private={u['ws_private']}", "--set", f"live.base_url_ws_trade={u['ws_trade']}",
                "--set", "live.adapter_environment=mainnet", "--set", "live.test_exchange=true",
                "--set", f"live.lock_dir={tmp / 'locks'}", "--set", f"live.out_dir={tmp / 'runs'}",
                "--set", f"risk.audit.file={tmp / 'audit.jsonl'}", "--set", f"risk.kill_switch.file={tmp / 'KILL'}",
                # quote near the touch so the short run gets fills
                "--set", "strategy.fee_floor_enabled=false", "--set", "strategy.min_half_spread_bps=0.2",
                "--set", "strategy.k_vol=0.0", "--set", "strategy.min_time_in_book_ms=500",
                "--set", "risk.stale_data.max_book_age_ms=3000"]
        # A test's own --set of a key replaces the harness default (two values of one key are refused).
        own = {extra[i + 1].partition("=")[0] for i in range(len(extra) - 1) if extra[i] == "--set"}
        keep = [True] * len(args)
        for i in range(len(args) - 1):
            if args[i] == "--set" and args[i + 1].partition("=")[0] in own:
                keep[i] = keep[i + 1] = False
        args = [a for a, k in zip(args, keep) if k] + list(extra)
        if duration:
            args += ["--duration", duration]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
        env.update(BYBIT_TESTNET_API_KEY=fake.key, BYBIT_TESTNET_API_SECRET=secret or SECRET, MMBOT_KILL_TOKEN="")
        self.proc = subprocess.Popen(args, stdout=open(self.out, "w"), stderr=open(self.err, "w"), cwd=tmp, env=env)
        self.base = f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return _get(self.base + "/metrics")[1]

    def wait_for(self, cond, timeout: float, what: str):
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"mmbot live exited {self.proc.returncode} while waiting for {what}:\n{self.output()[-3000:]}")
            try:
                last = cond()
                if last:
                    return last
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timeout waiting for {what}; last={last!r}\n{self.output()[-3000:]}")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec.jsonl", 2, 7)


@pytest.fixture()
def fake(tmp_path, recording):
    f = Fake(tmp_path, recording)
    yield f
    f.stop()


def _signed_position(state: dict) -> float:
    p = state["position"]
    size = float(p.get("size") or 0)
    return size if p.get("side") == "Buy" else -size if p.get("side") == "Sell" else 0.0


def test_live_e2e_quotes_fills_matches_exchange_and_sigterm_leaves_no_orders(tmp_path, fake):
    live = Live(tmp_path, fake)
    try:
        # /health while the process is alive; /ready once connected, book valid, account reconciled.
        live.wait_for(lambda: _get(live.base + "/health")[0] == 200, 60, "/health")
        live.wait_for(lambda: _get(live.base + "/ready")[0] == 200, 60, "/ready")
        ready = json.loads(_get(live.base + "/ready")[1])
        assert ready["book_valid"] and ready["account_reconciled"]
        # Quotes on the exchange, post-only.
        live.wait_for(lambda: fake.state()["open_orders"], 30, "open orders on the exchange")
        # Fills.
        live.wait_for(lambda: fake.state()["executions"], 90, "a fill")
        text = live.wait_for(lambda: (lambda t: t if metric(t, "mmbot_fills_total") >= 1 else None)(live.metrics()),
                             20, "fills in the metrics")
        for name in ("mmbot_orders_submitted_total", "mmbot_fills_total", "mmbot_maker_share", "mmbot_position_base",
                     "mmbot_equity_usdt", "mmbot_pnl_usdt", "mmbot_quote_price", "mmbot_quote_spread_bps",
                     "mmbot_guard_state", "mmbot_circuit_breaker_state", "mmbot_ws_reconnects_total",
                     "mmbot_book_age_seconds", "mmbot_tick_to_order_latency_seconds_bucket", "mmbot_ready"):
            assert name in text, name
        # The histogram observed at least one order (a count, not a speed: figures are in tools/bench/live.py).
        orders_timed = metric(text, "mmbot_tick_to_order_latency_seconds_count")
        assert orders_timed >= 1
        # The recorder (on by default) flushes the raw tap's book and trade frames while running.
        live.wait_for(lambda: RAW_TOPICS <= {f.get("topic") for f in _recorded_frames(tmp_path)}, 60,
                      "book and trade frames in the recording")
        # Position: ours equals the exchange's (after the private stream settles).
        def same_position():
            t = live.metrics()
            ours, theirs = metric(t, "mmbot_position_base"), _signed_position(fake.state())
            return (ours, theirs) if abs(ours - theirs) < 1e-9 else None
        live.wait_for(same_position, 20, "position to match the exchange")
        # PnL: the exchange's wallet change (realised PnL net of fees) equals ours, from the same fills.
        def same_pnl():
            t, st = live.metrics(), fake.state()
            ours = metric(t, "mmbot_pnl_usdt", 'part="balance_change"')
            theirs = float(st["wallet"]["totalWalletBalance"]) - 100000.0
            return (ours, theirs) if abs(ours - theirs) < 1e-6 else None
        live.wait_for(same_pnl, 20, "wallet PnL to match the exchange")
        # The book stands still from here: no fill during the stop, so the comparison below is of
        # the fills made while quoting. (A fill in the stop window is recorded too since the node
        # stops its strategies before the recorder and the run ledger: test_live_stop.py's
        # ..._fill_while_the_stop_cancels_travel_...; docs/runbook.md "Stop".)
        fake.replay("pause")
        code = live.terminate()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    out = live.output()
    assert code == 0, out[-3000:]
    st = fake.state()
    assert len(st["open_orders"]) == 0, st["open_orders"]
    # Wallet balance change on the exchange = realised PnL net of fees there; the run logged its own.
    assert SECRET not in out and KEY not in out
    for p in (tmp_path / "runs").rglob("*"):
        if p.is_file():
            assert SECRET not in p.read_text(errors="replace"), p
    assert '"event": "stopped"' in out and '"open_orders_in_cache": 0' in out
    _assert_recording(tmp_path, st)
    _assert_cheap_per_order_path(tmp_path, out)


def _assert_cheap_per_order_path(tmp_path: Path, out: str) -> None:
    """docs/benchmarks.md "Live on loopback": the startup heap is frozen at ready (the cyclic GC no
    longer re-scans it), and the strategy writes no INFO line per order command or event into
    nautilus.jsonl (QUIET_ORDER_LOGS; the recording's orders.jsonl keeps every event, asserted by
    _assert_recording). Old code: no ``gc_frozen_objects`` on the ready line, and a
    ``[CMD]--> SubmitOrder(`` and ``<--[EVT] OrderAccepted(`` line per order."""
    [ready] = [json.loads(x) for x in out.splitlines() if x.startswith("{") and '"event": "ready"' in x]
    assert ready["gc_frozen_objects"] > 10_000, ready  # modules, configs, engines: the startup heap
    [log] = (tmp_path / "runs").glob("*-testnet/nautilus.jsonl")
    records = [json.loads(x) for x in log.read_text(errors="replace").splitlines() if x.startswith("{")]
    strategy = [r for r in records if str(r.get("component", "")).startswith("MarketMaker")]
    assert any("Quoting " in str(r.get("message")) for r in strategy), strategy[:5]  # its own lines stay
    per_order = [r["message"] for r in strategy
                 if any(k in str(r.get("message")) for k in ("SubmitOrder(", "OrderAccepted(", "OrderCanceled("))]
    assert per_order == [], per_order[:3]


RAW_TOPICS = {"orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"}  # what shadow mode's raw client subscribes


def _recorded_frames(tmp_path: Path, strict: bool = False) -> list[dict]:
    frames = []
    for p in sorted((tmp_path / "runs").glob("*-testnet/recording/*.jsonl.gz")):
        try:
            with gzip.open(p, "rt") as f:
                frames += [json.loads(line) for line in f]
        except (EOFError, OSError, ValueError):  # a gzip member being written while the run goes on
            if strict:
                raise
    return frames


def _assert_recording(tmp_path: Path, st: dict) -> None:
    """The recorder ran beside the Nautilus data client ([live] record defaults to true): raw public
    frames from the tap, our order events, and exactly the fills the exchange made."""
    rec_dirs = list((tmp_path / "runs").glob("*-testnet/recording"))
    assert len(rec_dirs) == 1, rec_dirs
    rec = rec_dirs[0]
    raw = sorted(rec.glob("*.jsonl.gz"))
    assert raw and all(re.fullmatch(r"BTCUSDT_\d{4}-\d{2}-\d{2}\.jsonl\.gz", p.name) for p in raw), raw
    frames = _recorded_frames(tmp_path, strict=True)
    assert all(isinstance(f.pop("local_ts_ns"), int) for f in frames)
    market = [f for f in frames if "topic" in f]  # as Bybit sent them (the rest: subscribe acks, pongs)
    assert all({"topic", "ts", "data"} <= set(f) for f in market)
    assert RAW_TOPICS <= {f["topic"] for f in market}, {f["topic"] for f in market}
    # Importable: the book starts with the subscription snapshot (sent before the recorder started).
    assert next(f["type"] for f in market if f["topic"].startswith("orderbook.")) == "snapshot"
    events = [json.loads(line) for line in (rec / "orders.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "OrderAccepted" for e in events)
    fills = [e["trade_id"] for e in events if e["kind"] == "OrderFilled"]
    assert len(fills) == len(st["executions"]) >= 1, (fills, st["executions"])
    assert sorted(fills) == sorted(x["execId"] for x in st["executions"])


def _live_cfg(*overrides: str):
    from mmbot.live.node import load_live_config

    return load_live_config(REPO / "config" / "testnet.toml", [
        "live.base_url_http=http://127.0.0.1:1", "live.base_url_ws_private=ws://127.0.0.1:1/v5/private",
        "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade", *overrides])


def test_live_recorder_wiring_and_record_false(tmp_path):
    from adapters.recorder import BYBIT_PUBLIC_LINEAR
    from mmbot.live.node import build_live_node_config
    from mmbot.live.recording import RAW_TAP_CLIENT
    from mmbot.live.secrets import Credentials

    creds = Credentials(KEY, SECRET, "test")
    recorders = lambda nc: [a for a in nc.actors if a.actor_path == "adapters.recorder:RecorderActor"]  # noqa: E731
    # Default: the recorder plus a raw public tap under its own client name, feeding nothing.
    cfg, live = _live_cfg("live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear")
    nc = build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path)
    assert set(nc.data_clients) == {"BYBIT", RAW_TAP_CLIENT} and "-" not in RAW_TAP_CLIENT
    tap = nc.data_clients[RAW_TAP_CLIENT]
    assert not tap.feed and tap.depth == 50 and tap.instrument_id == "BTCUSDT-LINEAR.BYBIT"
    assert tap.url == "ws://127.0.0.1:1/v5/public/linear"  # follows base_url_ws_public
    [r] = recorders(nc)
    assert r.config["out_dir"] == str(tmp_path / "recording") and r.config["flush_interval_ms"] == 1000
    # No base_url_ws_public: Bybit's public stream of the environment; record_* keys are passed on.
    cfg, live = _live_cfg("live.record_dir=/x/rec", "live.record_required=true", "live.record_flush_ms=250")
    nc = build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path)
    assert nc.data_clients[RAW_TAP_CLIENT].url == BYBIT_PUBLIC_LINEAR["testnet"]
    [r] = recorders(nc)
    assert (r.config["out_dir"], r.config["required"], r.config["flush_interval_ms"]) == ("/x/rec", True, 250)
    # record = false: no tap, no recorder, so nothing creates a recording directory.
    cfg, live = _live_cfg("live.record=false")
    nc = build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path)
    assert set(nc.data_clients) == {"BYBIT"} and not recorders(nc)
    assert not (tmp_path / "recording").exists()


def test_live_e2e_duration_stops_cleanly_and_second_instance_on_same_key_refused(tmp_path, fake):
    live = Live(tmp_path, fake, duration="20s")
    second = third = None
    try:
        live.wait_for(lambda: fake.state()["open_orders"], 45, "open orders on the exchange")
        # A second instance on the same API key and exchange refuses (lock), exit 2, even under
        # another account label: the lock is keyed by the key, not by the free-text label. A third
        # with a lock_dir of its own (a copy of the config elsewhere) is refused too: the key's lock
        # is one per host, whatever the lock_dir (hostile review 26 F7). Both start at once, well
        # inside the first one's 20 s.
        (tmp_path / "second").mkdir()
        (tmp_path / "third").mkdir()
        second = Live(tmp_path / "second", fake, name="second",
                      extra=["--set", f"live.lock_dir={tmp_path / 'locks'}", "--set", "live.account=another-label"])
        third = Live(tmp_path / "third", fake, name="third")  # its lock_dir: third/locks
        assert second.proc.wait(timeout=60) == 2
        out2 = second.output()
        assert "another mmbot live instance" in out2 and "one instance per API key" in out2, out2[-2000:]
        assert KEY not in out2 and SECRET not in out2
        assert third.proc.wait(timeout=60) == 2, third.output()[-2000:]
        out3 = third.output()
        assert "holds the same lock in another lock_dir" in out3 and "one instance per API key" in out3, out3[-2000:]
        assert KEY not in out3 and SECRET not in out3
        locks = [p.name for p in (tmp_path / "locks").iterdir()]
        assert len(locks) == 1 and re.fullmatch(r"mmbot-key-[0-9a-f]{16}\.lock", locks[0]), locks
        assert KEY not in (tmp_path / "locks" / locks[0]).read_text()
        assert live.proc.wait(timeout=90) == 0
    finally:
        for proc in (live.proc, *(x.proc for x in (second, third) if x is not None)):
            if proc.poll() is None:
                proc.kill()
    assert len(fake.state()["open_orders"]) == 0


def test_live_e2e_dropped_public_ws_pulls_quotes_resubscribes_and_resumes(tmp_path, fake):
    live = Live(tmp_path, fake)
    try:
        live.wait_for(lambda: _get(live.base + "/ready")[0] == 200, 60, "/ready")
        live.wait_for(lambda: fake.state()["open_orders"], 30, "quotes")
        before = metric(live.metrics(), "mmbot_ws_reconnects_total")
        # Pause the public stream (quotes must be pulled by the stale-data guard), then drop it.
        fake.fault("stale_book", seconds=6)
        live.wait_for(lambda: metric(live.metrics(), "mmbot_guard_state", 'guard="stale_data",state="STALE"') == 1,
                      20, "stale_data STALE")
        live.wait_for(lambda: len(fake.state()["open_orders"]) == 0, 10, "quotes pulled")
        fake.fault("drop_ws", stream="public")
        live.wait_for(lambda: metric(live.metrics(), "mmbot_ws_reconnects_total") > before, 40, "reconnect in metrics")
        live.wait_for(lambda: fake.state()["open_orders"], 40, "quoting resumed")
        assert live.terminate() == 0
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    assert len(fake.state()["open_orders"]) == 0


def test_live_e2e_rate_limit_burst_opens_circuit_breaker(tmp_path, fake):
    live = Live(tmp_path, fake)
    try:
        live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes")
        fake.fault("rate_limit", ws=True, count=5)
        fake.fault("rate_limit", count=5)
        live.wait_for(lambda: metric(live.metrics(), "mmbot_circuit_breaker_state") == 2, 40, "breaker OPEN")
        text = live.metrics()
        assert metric(text, "mmbot_orders_rejected_total", 'reason="rate_limit"') >= 1
        live.wait_for(lambda: len(fake.state()["open_orders"]) == 0, 45, "orders cancelled while OPEN")
        # Quoting goes over the trade WebSocket: the REST burst is usually still armed here (0 of 5
        # fired), and the stop's venue check then meets all five (6 rounds, ~5 s quiet; past
        # stop_deadline_s on a loaded CI machine: exit 3, the safe answer, CI 2026-12-04). The stop
        # under a REST rate limit has its own tests (tests/test_live_stop.py); this one stops clean.
        fake.clear_faults("rate_limit")
        assert live.terminate() == 0
    finally:
        if live.proc.poll() is None:
            live.proc.kill()


@pytest.mark.parametrize("kind", ["post_only_reject", "cancel_unknown", "lose_ack"])
def test_live_e2e_order_faults_leave_consistent_state(tmp_path, fake, kind):
    live = Live(tmp_path, fake)
    try:
        live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes")
        fake.fault(kind, count=2)
        time.sleep(12)  # the fault fires; in-flight and open-order checks reconcile
        assert live.terminate() == 0
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    st = fake.state()
    assert any(f["kind"] == kind for f in st["faults"]["fired"]), st["faults"]  # the fault did fire
    assert len(st["open_orders"]) == 0
    # Nothing submitted twice: every orderLinkId was created once on the exchange.
    creates = [m["msg"]["args"][0].get("orderLinkId") for m in st.get("ws_log", [])
               if isinstance(m.get("msg"), dict) and m["msg"].get("op") == "order.create"]
    assert len(creates) == len(set(creates)), "an order was submitted twice"
    out = live.output()
    assert SECRET not in out
    assert re.search(r'"event": "stopped", "open_orders_in_cache": 0', out)
