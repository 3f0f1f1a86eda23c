"""Hostile review 23: live/shadow sizing in USDT notional at the venue's mark price
(mmbot/live/sizing.py) and the soak's interrupt handling and balance re-reads (tools/soak).

A hostile or broken venue here is a loopback HTTP server whose handler each test writes: it answers
in Bybit v5's layout (instruments-info rows from the shipped definitions,
adapters/definitions/bybit_linear_instruments.json, a real answer) or not at all."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parent.parent
DEFS = json.loads((REPO / "adapters" / "definitions" / "bybit_linear_instruments.json").read_text())
# The sizing budget (live.timeout_connection_s) of the tests that are not about timing: the
# in-process stub answers at once, but under CI load (two pytest workers on two cores) a 1 s budget
# failed once ("no answer") on a broken-mark case that never reached the check it tests.
ANSWER_BUDGET_S = 10.0


def _row(symbol: str) -> dict:
    return copy.deepcopy(next(r for r in DEFS["result"]["list"] if r["symbol"] == symbol))


def _ok(rows: list) -> bytes:
    return json.dumps({"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows}}).encode()


class Hostile:
    """``answer(path, query) -> (status, body bytes, drip_s)``; drip_s > 0 sends the body one byte
    every drip_s seconds (a slow drip: each byte arrives well within any socket timeout)."""

    def __init__(self, answer) -> None:
        self.hits: list[str] = []
        owner = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                owner.hits.append(u.path)
                status, body, drip_s = answer(u.path, {k: v[0] for k, v in parse_qs(u.query).items()})
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if drip_s <= 0:
                        self.wfile.write(body)
                        return
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(drip_s)
                except OSError:  # the client gave up
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bybit(ticker_rows=None, instrument_rows=None, drip_s: float = 0.0):
    """A Bybit-like answer function: instruments-info from the shipped rows (or ``instrument_rows``),
    tickers = ``ticker_rows`` (a list, or a callable of the symbol)."""

    def answer(path, q):
        sym = q.get("symbol", "")
        if path == "/v5/market/instruments-info":
            rows = instrument_rows if instrument_rows is not None else [_row(sym)]
            return 200, _ok(rows), 0.0
        if path == "/v5/market/tickers":
            rows = ticker_rows(sym) if callable(ticker_rows) else ticker_rows
            return 200, _ok(rows), drip_s
        return 404, b"{}", 0.0

    return answer


@pytest.fixture
def hostile():
    made = []

    def make(answer):
        h = Hostile(answer)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _cfg(*sets: str, config: str = "config/testnet.toml"):
    from mmbot.live.node import load_live_config

    cfg, _ = load_live_config(REPO / config, list(sets))
    return cfg


# -- 1. the venue's answers ------------------------------------------------------------------------

def test_a_slow_drip_venue_is_cut_at_timeout_connection_s_in_total(hostile):
    """live.timeout_connection_s is the budget of the whole resolution: a ticker that arrives one
    byte every 0.2 s never trips a socket timeout (each recv gets a byte), so a per-request timeout
    does not bound it. Old code: the 2 s budget ran ~25 s (one drip of a ~120-byte body) or longer."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}], drip_s=0.2))
    t0 = time.monotonic()
    with pytest.raises(VenueNotReady, match="timeout_connection_s = 2 s"):
        resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, 2.0)
    took = time.monotonic() - t0
    assert took < 6.0, f"a 2 s budget took {took:.1f} s"  # generous: a bound, not a timing measurement


def test_a_venue_that_accepts_and_never_answers_is_cut_in_total(hostile):
    """Two requests (instruments-info, then tickers) each with their own max(1, timeout) socket
    timeout: a venue that hangs on both doubled the budget. Here instruments-info answers at
    once and tickers hangs: the whole must stay near the budget, not budget + a full timeout."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    gate = threading.Event()

    def answer(path, q):
        if path == "/v5/market/tickers":
            gate.wait(30)
        return bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}])(path, q)

    h = hostile(answer)
    t0 = time.monotonic()
    try:
        with pytest.raises(VenueNotReady):
            resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, 3.0)
    finally:
        gate.set()
    took = time.monotonic() - t0
    assert took < 5.5, f"a 3 s budget took {took:.1f} s"


@pytest.mark.parametrize("name, status, body", [
    ("html", 200, b"<html><body>maintenance</body></html>"),
    ("500", 500, b"internal error"),
    ("10 MB body", 200, b'{"retCode":0,"result":{"list":[' + b" " * (10 << 20) + b"]}}"),
    ("retCode 10001", 200, json.dumps({"retCode": 10001, "retMsg": "params error"}).encode()),
    ("a ticker for another symbol", 200, _ok([{"symbol": "ETHUSDT", "markPrice": "3000"}])),
    ("a list that is a string", 200, json.dumps({"retCode": 0, "result": {"list": "BTCUSDT"}}).encode()),
    ("result null", 200, json.dumps({"retCode": 0, "result": None}).encode()),
    ("top-level list", 200, b"[1, 2]"),
])
def test_a_broken_ticker_answer_is_not_ready_exit_4_material(hostile, name, status, body):
    """Each is "not ready at start" (VenueNotReady: exit 4), never a traceback or a size."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    def answer(path, q):
        if path == "/v5/market/tickers":
            return status, body, 0.0
        return bybit()(path, q)

    h = hostile(answer)
    with pytest.raises(VenueNotReady) as e:
        resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, ANSWER_BUDGET_S)
    assert "\n" not in str(e.value) and len(str(e.value)) < 1000, str(e.value)[:300]


def test_the_venues_retmsg_cannot_make_the_error_line_many_lines_or_huge(hostile):
    """The refusal is one line (the project's rule for bad input, and the runbook greps it): the
    venue's retMsg went into it verbatim, newlines, escapes and 1 MiB of it.
    Old code: a 3-line, ~100 kB error line."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    msg = "line one\nline two\x1b[31m red\r\n" + "x" * 100_000

    def answer(path, q):
        if path == "/v5/market/tickers":
            return 200, json.dumps({"retCode": 10016, "retMsg": msg}).encode(), 0.0
        return bybit()(path, q)

    h = hostile(answer)
    with pytest.raises(VenueNotReady) as e:
        resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, ANSWER_BUDGET_S)
    text = str(e.value)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text, text[:300]
    assert len(text) < 1000 and "retCode 10016" in text


def test_two_ticker_rows_for_the_one_symbol_are_not_a_price(hostile):
    """An answer with two rows for BTCUSDT (marks 40000 and 80000) is ambiguous: old code took the
    first silently (level_size 0.002 BTC); the other would have given 0.001. Not ready, naming it."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}, {"symbol": "BTCUSDT", "markPrice": "80000"}]))
    with pytest.raises(VenueNotReady, match="2 rows for BTCUSDT"):
        resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, ANSWER_BUDGET_S)


@pytest.mark.parametrize("mark", ["1e-300", "1e-9", "5e9"])
def test_a_mark_outside_the_instruments_price_filter_is_not_used(hostile, mark):
    """A finite positive mark the venue itself would not accept as a price (outside the priceFilter
    minPrice..maxPrice of the instrument it just sent: BTCUSDT 0.10..199999.80) is broken data. Old
    code used it: with only a position limit in notional, 1e-300 made risk.position.hard_position
    5e11 BTC (under the 1e12 rule: the limit silently off); 1e-300 and 5e9 were exit 2 blaming the
    config ("must be <= 1e12", "rounds down to 0 BTC") for the venue's broken mark."""
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": mark}]))
    with pytest.raises(VenueNotReady, match="outside the price filter"):
        resolve_live_sizing(_cfg("risk.position.hard_position_notional_usdt=1000",
                                 "risk.position.soft_position_notional_usdt=500"), h.url, ANSWER_BUDGET_S)


def test_a_tiny_mark_with_a_large_notional_is_never_a_traceback(hostile):
    """1e12 USDT (the documented maximum) at a mark of 1e-300: old code raised OverflowError
    (math.floor(inf)) out of the CLI: a traceback, exit 1."""
    from mmbot.config.backtest import ConfigError
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "1e-300"}]))
    with pytest.raises((VenueNotReady, ConfigError)):
        resolve_live_sizing(_cfg("risk.position.hard_position_notional_usdt=1e12",
                                 "risk.position.soft_position_notional_usdt=1e12"), h.url, ANSWER_BUDGET_S)


# -- 2. proxies: the sizing request to a loopback venue ---------------------------------------------

class _Proxy:
    """A 'proxy' that records what it is asked and answers 502."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        owner = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                owner.asked.append(self.path)
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_sizing_request_to_a_loopback_venue_never_goes_through_a_proxy(hostile, monkeypatch):
    """``mmbot live`` puts 127.0.0.0/8 into NO_PROXY for Nautilus' clients (reqwest reads CIDR);
    Python's urllib does not understand CIDR entries, so with http_proxy set the sizing request to
    http://127.0.0.1:PORT (the loopback exchange) went through the proxy in plaintext and, through a
    real proxy that cannot reach this machine's loopback, the run was 'not ready' (exit 4)."""
    from mmbot.live.endpoints import bypass_proxies_for_loopback
    from mmbot.live.sizing import resolve_live_sizing

    proxy = _Proxy()
    try:
        h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}]))
        for v in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(v, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        env = dict(os.environ)
        bypass_proxies_for_loopback(env)  # what mmbot live does first
        for k in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(k, env[k])
        import urllib.request

        monkeypatch.setattr(urllib.request, "_opener", None)  # a fresh process: no opener built yet
        cfg, rec = resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, 2.0)
        assert proxy.asked == [] and rec["reference_price"] == 40000.0
    finally:
        proxy.close()


# -- 3. the venue's order rules vs the shipped ones --------------------------------------------------

def _live(tmp: Path, url: str, *sets: str, env_name: str = "testnet") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(BYBIT_TESTNET_API_KEY=process_api_key("K" * 18), BYBIT_TESTNET_API_SECRET="S" * 24, MMBOT_KILL_TOKEN="")
    base = ["live.base_url_http=" + url, "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
            "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
            "live.adapter_environment=mainnet", "live.test_exchange=true", f"live.lock_dir={tmp / 'locks'}",
            f"live.out_dir={tmp / 'runs'}", "live.timeout_connection_s=2"]
    args = [x for s in [*base, *sets] for x in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "mmbot.cli", "live", "--env", env_name, "--config",
                           "config/testnet.toml", "--duration", "1s", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_venue_rules_finer_than_the_shipped_ones_are_refused_before_anything_is_written(tmp_path, hostile):
    """The venue now trades BTCUSDT in 0.0001 lots (the shipped definition: 0.001). Live resolves
    20 USDT at 40000 with the venue's rules to 0.0005 BTC; build_live_node_config then checks the
    shipped definition (check_instrument_fit_shipped) and refuses, but only AFTER the lock, the run
    folder and its config.resolved.json exist (old code: exit 2 with a run folder left behind)."""
    row = _row("BTCUSDT")
    row["lotSizeFilter"].update(qtyStep="0.0001", minOrderQty="0.0001")
    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}], instrument_rows=[row]))
    r = _live(tmp_path, h.url, "strategy.level_notional_usdt=20", "strategy.max_position_notional_usdt=1000")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").rglob("*")) == [], \
        sorted(str(p) for p in (tmp_path / "runs").rglob("*"))
    assert not (tmp_path / "locks").exists() or list((tmp_path / "locks").iterdir()) == []



def test_a_base_unit_size_below_the_shipped_minimum_is_refused_before_anything_is_written(tmp_path):
    """The same late check without any notional key: strategy.level_size=0.0001 BTC (shipped minimum
    0.001). Old code: exit 2 from build_live_node_config, with the run folder, mmbot_run.json and
    config.resolved.json already written."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: nothing may connect anyway
    r = _live(tmp_path, f"http://127.0.0.1:{port}", "strategy.level_size=0.0001")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "strategy.level_size" in errors[0], (r.returncode,
                                                                                         r.stderr[-2000:])
    assert "below the minimum order quantity 0.001 of BTCUSDT-LINEAR.BYBIT" in errors[0]
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").rglob("*")) == []
    assert not (tmp_path / "locks").exists() or list((tmp_path / "locks").iterdir()) == []

# -- 4. tools/soak: interrupts and the balance re-read ----------------------------------------------

def test_a_real_drift_is_not_hidden_by_a_reread_without_a_number():
    """A real drift (node 100.5, exchange 100) then one re-read where the node's gauge is missing
    (NaN: metric_sum of an absent series, e.g. during a reconnect's re-reconciliation): old code
    kept that NaN pair as the sample's balance, and the gate counts a NaN difference as agreeing,
    so the drift vanished from the sample."""
    from tools.soak import probes as P

    reads = iter([(100.5, 100.0), (math.nan, 100.0), (100.5, 100.0)])
    got = P.settle_balance(lambda: next(reads), 1e-6, 6, 0.0, sleep=lambda s: None)
    assert got["node"] is not None and got["node"] - got["exchange"] == pytest.approx(0.5), got


def test_a_constant_drift_survives_every_reread():
    from tools.soak import probes as P

    got = P.settle_balance(lambda: (100.5, 100.0), 1e-6, 6, 0.0, sleep=lambda s: None)
    assert got["node"] - got["exchange"] == pytest.approx(0.5) and got["rechecks"] == 6


def _sleeper(ignore_term: bool = False) -> subprocess.Popen:
    code = ("import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "time.sleep(120)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def _soak(tmp_path):
    from tools.soak import run as R

    return R.Soak(R.Options(duration_s=60.0, faults=[], out=tmp_path), tmp_path / "rec.jsonl", "XRPUSDT", [], 5.0,
                  2.0)


def _gone(p: subprocess.Popen | None, within_s: float = 5.0) -> bool:
    if p is None:
        return True
    try:
        p.wait(timeout=within_s)
        return True
    except subprocess.TimeoutExpired:
        p.kill()  # never leave one behind after the test
        p.wait()
        return False


def test_soak_interrupted_while_the_exchange_starts_leaves_no_exchange_running(tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM while the loopback exchange loads its recording (start_fake waits for its
    first line): start_fake ran outside run()'s try/finally, so the exchange outlived the soak."""
    from tools.soak import run as R

    def start_fake(self):
        self.fake = _sleeper()
        raise KeyboardInterrupt

    monkeypatch.setattr(R.Soak, "start_fake", start_fake)
    soak = _soak(tmp_path)
    try:
        soak.run()
    except BaseException:  # noqa: BLE001 (what escapes is not the point: what is left running is)
        pass
    assert _gone(soak.fake), "the loopback exchange outlived the soak"


def test_soak_a_third_interrupt_while_stopping_the_exchange_still_stops_it(tmp_path, monkeypatch):
    """Interrupt in wait_ready, again during the node's stop, again during the exchange's stop:
    whatever escapes, neither process outlives run()."""
    from tools.soak import run as R

    def start_fake(self):
        self.fake = _sleeper()

    def start_node(self):
        self.node = _sleeper()

    def interrupt(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(R.Soak, "start_fake", start_fake)
    monkeypatch.setattr(R.Soak, "start_node", start_node)
    monkeypatch.setattr(R.Soak, "wait_ready", interrupt)
    monkeypatch.setattr(R.Soak, "stop_node", interrupt)
    monkeypatch.setattr(R.Soak, "stop_fake", interrupt)
    soak = _soak(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        soak.run()
    node_gone, fake_gone = _gone(soak.node), _gone(soak.fake)
    assert node_gone and fake_gone, (node_gone, fake_gone)


def test_soak_a_node_that_ignores_sigterm_is_killed_after_the_stop_budget(tmp_path):
    soak = _soak(tmp_path)
    soak.node = _sleeper(ignore_term=True)
    time.sleep(0.3)  # its handler is in place
    soak.stop_node()
    assert soak.node.poll() is not None and any("killed" in n for n in soak.notes), soak.notes


def test_resolve_sizing_at_a_tiny_reference_price_is_one_line_not_an_overflow():
    """The builder's own guard (backtests price at a window's first trade): a reference price so
    small the lot count is inf. Old code: OverflowError from math.floor."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.builders import resolve_sizing
    from mmbot.config.backtest import ConfigError

    inst = InstrumentRegistry().get_by_id("BTCUSDT-LINEAR.BYBIT")
    with pytest.raises(ConfigError, match="not a finite number of lots"):
        resolve_sizing(_cfg("risk.position.hard_position_notional_usdt=1e12",
                            "risk.position.soft_position_notional_usdt=1e12"), inst, 1e-300, "a test price")


# -- mutants of the checks added here -----------------------------------------------------------------

SIZING_MUTANTS = {
    "per-socket timeout only, no total deadline": ("    worker.join(timeout_s)\n", "    worker.join()\n"),
    "retMsg verbatim": ("    t = repr(str(text))[1:-1]\n", "    t = str(text)\n"),
    "first of two rows": ("    if len(rows) > 1:", "    if False:"),
    "price filter ignored": ("    if lo <= mark <= hi:\n", "    if True:\n"),
    "proxy for loopback too": ('    if classify_host(url_host(url)) == "loopback":', "    if False:"),
}


@pytest.mark.parametrize("name", list(SIZING_MUTANTS))
def test_mutants_of_the_sizing_checks_are_caught(name, monkeypatch):
    """Each broken version of mmbot/live/sizing.py fails one of the checks above (a check that runs
    past 8 s counts as failed: the deadline mutant would hold the slow drip ~25 s)."""
    import importlib.util
    import types

    old, new = SIZING_MUTANTS[name]
    spec = importlib.util.find_spec("mmbot.live.sizing")
    src = Path(spec.origin).read_text()
    assert src.count(old) == 1, name
    mod = types.ModuleType("mmbot.live.sizing")
    mod.__file__ = spec.origin
    exec(compile(src.replace(old, new), spec.origin, "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, "mmbot.live.sizing", mod)
    made: list[Hostile] = []

    def hostile(answer):
        made.append(Hostile(answer))
        return made[-1]

    checks = [  # the slow one last; the first failure ends the run
        lambda: test_the_venues_retmsg_cannot_make_the_error_line_many_lines_or_huge(hostile),
        lambda: test_two_ticker_rows_for_the_one_symbol_are_not_a_price(hostile),
        lambda: test_a_mark_outside_the_instruments_price_filter_is_not_used(hostile, "1e-9"),
        lambda: test_the_sizing_request_to_a_loopback_venue_never_goes_through_a_proxy(hostile, monkeypatch),
        lambda: test_a_slow_drip_venue_is_cut_at_timeout_connection_s_in_total(hostile),
    ]
    failures = 0
    try:
        for check in checks:
            box: dict = {}

            def run(check=check, box=box):
                try:
                    check()
                    box["ok"] = True
                except BaseException:  # noqa: BLE001 (an assertion, pytest.raises' Failed, a crash)
                    box["ok"] = False

            t = threading.Thread(target=run, daemon=True)
            t.start()
            t.join(8.0)
            failures += 0 if box.get("ok") else 1
            if failures:
                break
    finally:
        for h in made:
            h.close()
    assert failures, f"mutant {name!r} passes every check"


# -- 5. order of the checks: bad input before the network ---------------------------------------------

def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("extra, text", [
    (["--duration", "banana"], "duration"),
    (["--key-file", "/nonexistent/key.toml"], "/nonexistent/key.toml"),
])
def test_bad_local_input_is_exit_2_before_the_sizing_request(tmp_path, extra, text):
    """A bad --duration or key file is bad input (exit 2, at once): old code asked the venue for the
    mark first, so with the venue down the same typo was 'not ready' (exit 4) after
    live.timeout_connection_s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(BYBIT_TESTNET_API_KEY=process_api_key("K" * 18), BYBIT_TESTNET_API_SECRET="S" * 24, MMBOT_KILL_TOKEN="")
    sets = ["live.base_url_http=" + _dead_url(), "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
            "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
            "live.adapter_environment=mainnet", "live.test_exchange=true", f"live.lock_dir={tmp_path / 'locks'}",
            f"live.out_dir={tmp_path / 'runs'}", "live.timeout_connection_s=2", "strategy.level_notional_usdt=100"]
    args = [x for s in sets for x in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "live", "--env", "testnet", "--config", "config/testnet.toml",
                        *extra, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and text in errors[0], (r.returncode, r.stderr[-1500:])


def test_the_mainnet_gate_is_decided_before_the_sizing_request(tmp_path, hostile):
    """An undeclared loopback venue is real money (docs/runbook.md): without --confirm-mainnet the
    gate refuses (exit 2) and the venue is never asked."""
    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}]))
    r = _live(tmp_path, h.url, "strategy.level_notional_usdt=100", "live.test_exchange=false")
    assert r.returncode == 2 and h.hits == [], (r.returncode, h.hits, r.stderr[-1500:])


@pytest.mark.parametrize("sets, text", [
    (["strategy.level_notional_usdt=nan"], "strategy.level_notional_usdt"),
    (["strategy.level_notional_usdt=inf"], "strategy.level_notional_usdt"),
    (["strategy.level_notional_usdt=1e308"], "strategy.level_notional_usdt"),
    (["strategy.level_notional_usdt=-5"], "strategy.level_notional_usdt"),
    (["risk.position.hard_position_notional_usdt=-1"], "risk.position.hard_position_notional_usdt"),
    (["strategy.level_notional_usdt=100", "strategy.level_size=0.001"], "one size in two units"),
])
def test_bad_notional_values_are_one_line_before_any_request(sets, text):
    from mmbot.config.backtest import ConfigError

    with pytest.raises(ConfigError) as e:
        _cfg(*sets)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_a_position_notional_with_risk_disabled_asks_nothing(hostile):
    from mmbot.live.sizing import resolve_live_sizing

    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}]))
    cfg = _cfg("risk.enabled=false", "risk.position.hard_position_notional_usdt=1000")
    out, rec = resolve_live_sizing(cfg, h.url, ANSWER_BUDGET_S)
    assert rec is None and h.hits == []


@pytest.mark.parametrize("field, value", [
    ("qtyStep", "0"), ("qtyStep", "-0.001"), ("qtyStep", "nan"), ("minOrderQty", "1e308"),
    ("minNotionalValue", "nan"), ("maxOrderQty", "0"),
])
def test_broken_instrument_rules_are_never_a_size(hostile, field, value):
    """instruments-info rules the venue got wrong: not ready (exit 4) or one line (exit 2), never a
    traceback and never a size."""
    from mmbot.config.backtest import ConfigError
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing

    row = _row("BTCUSDT")
    row["lotSizeFilter"][field] = value
    h = hostile(bybit([{"symbol": "BTCUSDT", "markPrice": "40000"}], instrument_rows=[row]))
    with pytest.raises((VenueNotReady, ConfigError)):
        resolve_live_sizing(_cfg("strategy.level_notional_usdt=100"), h.url, ANSWER_BUDGET_S)


# -- 6. sizes from USDT beside position limits in base units ------------------------------------------

def test_a_base_unit_position_limit_below_one_resolved_order_is_refused():
    """testnet.toml's limits are BTC (soft 0.015, hard 0.02); run on XRP with the order size in
    USDT (100 USDT at 0.5 = 200 XRP) they are 0.02 XRP: the hard guard trips at the first fill
    and the session quotes one side for good. Old code accepted it. The mix of units is the
    trap: a limit in base units beside a size resolved from USDT is checked against one order."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.builders import resolve_sizing
    from mmbot.config.backtest import ConfigError

    inst = InstrumentRegistry().get_by_id("XRPUSDT-LINEAR.BYBIT")
    cfg = _cfg("run.instrument=XRPUSDT-LINEAR.BYBIT", "strategy.level_notional_usdt=100",
               "strategy.max_position_notional_usdt=1000")
    with pytest.raises(ConfigError) as e:
        resolve_sizing(cfg, inst, 0.5, "a test price")
    line = str(e.value)
    assert "risk.position.soft_position" in line and "below one order" in line and "\n" not in line, line


@pytest.mark.parametrize("old, new", [
    ("not 0 < limit < strategy[\"level_size\"]", "not 0 < limit < 0"),
    ("cfg.risk.enabled and \"position\" in guards", "cfg.risk.enabled and False"),
    ("if name in resolved_here or", "if True or"),
])
def test_mutants_of_the_limit_below_one_order_check_are_caught(old, new, monkeypatch):
    import importlib.util
    import types

    spec = importlib.util.find_spec("mmbot.builders")
    src = Path(spec.origin).read_text()
    assert src.count(old) == 1, old
    mod = types.ModuleType("mmbot.builders")
    mod.__file__ = spec.origin
    monkeypatch.setitem(sys.modules, "mmbot.builders", mod)  # before exec: its classes look their module up
    exec(compile(src.replace(old, new), spec.origin, "exec"), mod.__dict__)
    with pytest.raises(BaseException):  # noqa: B017 (the check's assertion or pytest.raises' Failed)
        test_a_base_unit_position_limit_below_one_resolved_order_is_refused()


def test_soak_interrupted_in_a_fault_window_clears_the_faults_before_the_nodes_stop(tmp_path, monkeypatch):
    """Interrupted inside a freeze (every order operation held) or a rate_limit window: the node's
    venue-checked stop met the faulty exchange (held cancels, 10006 answers) and ran its whole stop
    budget or left orders. The faults are cleared first, so the stop meets a healthy exchange.
    Old code: no DELETE /faults before the node's stop."""
    from tools.soak import run as R

    seen: list[str] = []

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self):
            seen.append(f"{self.command} {urlparse(self.path).path}")
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def start_fake(self):
            self.fake = _sleeper()
            self.urls = {"control": f"http://127.0.0.1:{server.server_address[1]}/__control"}

        def start_node(self):
            self.node = _sleeper()

        def wait_ready(self):
            raise KeyboardInterrupt  # as if inside a fault window

        def stop_node(self):
            seen.append("stop_node")
            self.node.kill()
            self.node.wait()

        for name, f in (("start_fake", start_fake), ("start_node", start_node), ("wait_ready", wait_ready),
                        ("stop_node", stop_node)):
            monkeypatch.setattr(R.Soak, name, f)
        soak = _soak(tmp_path)
        try:
            soak.run()
        except BaseException:  # noqa: BLE001 (the report of a stubbed run may not build: not the point)
            pass
        _gone(soak.fake)
    finally:
        server.shutdown()
        server.server_close()
    assert "stop_node" in seen and "DELETE /__control/faults" in seen[:seen.index("stop_node")], seen


def test_shadow_bypasses_proxies_for_loopback_as_live_does(tmp_path):
    """``mmbot live --env shadow`` dispatched to shadow_main before bypass_proxies_for_loopback ran:
    with a proxy variable set, Nautilus' REST client (reqwest) in shadow sent its loopback requests
    (tools/fake_bybit, a soak in shadow mode) to the proxy. Seen here by the proxy_env log line live
    prints (a bad --duration ends the run at once, exit 2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", MMBOT_KILL_TOKEN="")
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "live", "--env", "shadow", "--config", "config/testnet.toml",
                        "--duration", "banana", "--set", f"live.out_dir={tmp_path / 'runs'}"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr[-1500:]
    assert '"event": "proxy_env"' in r.stderr and "HTTP_PROXY" in r.stderr, r.stderr[-1500:]
