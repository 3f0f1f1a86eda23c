"""Sizes in USDT notional for ``mmbot live`` and shadow (issue 15 §1): resolved before anything
connects, from the venue's instruments-info and the ticker's mark price (mmbot/live/sizing.py).

The venue here is a loopback HTTP server answering in Bybit v5's layout: instruments-info rows
from the shipped definitions (adapters/definitions/bybit_linear_instruments.json, a real
``GET /v5/market/instruments-info?category=linear`` answer) and ticker rows with the field names
of Bybit's ticker (tools/fake_bybit/templates/ws_ticker_linear.json, a real payload; the REST
ticker carries the same ``markPrice`` / ``lastPrice`` strings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parent.parent
DEFS = json.loads((REPO / "adapters" / "definitions" / "bybit_linear_instruments.json").read_text())


def _instrument_row(symbol: str) -> dict:
    return next(r for r in DEFS["result"]["list"] if r["symbol"] == symbol)


class Venue:
    """``tickers``: a list of answers, one per request (the last repeats); each a dict of ticker
    fields or None for an empty list. ``instruments``: symbols instruments-info knows."""

    def __init__(self, tickers: list, instruments=("BTCUSDT", "XRPUSDT")) -> None:
        self.tickers, self.instruments, self.hits = list(tickers), set(instruments), []
        venue = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                venue.hits.append(u.path)
                sym = q.get("symbol", "")
                if u.path == "/v5/market/instruments-info":
                    rows = [_instrument_row(sym)] if sym in venue.instruments else []
                elif u.path == "/v5/market/tickers":
                    t = venue.tickers.pop(0) if len(venue.tickers) > 1 else venue.tickers[0]
                    rows = [{"symbol": sym, **t}] if t is not None else []
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({"retCode": 0, "retMsg": "OK",
                                   "result": {"category": "linear", "list": rows}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def venue_factory():
    made = []

    def make(*a, **kw):
        v = Venue(*a, **kw)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


def _cfg(*sets: str):
    from mmbot.live.node import load_live_config

    cfg, _ = load_live_config(REPO / "config" / "testnet.toml", list(sets))
    return cfg


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _resolve(cfg, url: str, timeout_s: float = 5.0, **kw):
    from mmbot.live.sizing import resolve_live_sizing

    c = FakeClock()
    return resolve_live_sizing(cfg, url, timeout_s, sleep=c.sleep, clock=c, **kw)


def test_notional_keys_resolve_at_the_mark_price_not_the_last_trade(venue_factory):
    """100 USDT at a mark of 40000 is 0.0025 BTC -> 0.002 (down to the lot step 0.001); the last
    trade (90000) would give 0.001."""
    v = venue_factory([{"markPrice": "40000.00", "lastPrice": "90000.00"}])
    cfg, rec = _resolve(_cfg("strategy.level_notional_usdt=100", "strategy.max_position_notional_usdt=1000"), v.url)
    assert cfg.strategy["level_size"] == 0.002 and cfg.strategy["max_position"] == 0.025
    assert "level_notional_usdt" not in cfg.strategy
    assert rec["reference_price"] == 40000.0 and rec["instrument"] == "BTCUSDT-LINEAR.BYBIT"
    assert rec["price_source"].startswith("the venue's mark price, GET /v5/market/tickers at ")
    assert rec["keys"]["strategy.level_notional_usdt"]["base"] == 0.002
    assert cfg.origin("strategy.level_size") == "--set strategy.level_notional_usdt=100"


def test_no_notional_key_no_request(venue_factory):
    v = venue_factory([{"markPrice": "40000"}])
    cfg = _cfg()
    out, rec = _resolve(cfg, v.url)
    assert out is cfg and rec is None and v.hits == []


def test_an_empty_ticker_is_retried_until_the_mark_comes(venue_factory):
    """Right after a venue opens (the loopback exchange before its first book) the ticker list is
    empty: retried every second within live.timeout_connection_s."""
    v = venue_factory([None, None, {"markPrice": "50000"}])
    cfg, rec = _resolve(_cfg("strategy.level_notional_usdt=100"), v.url)
    assert rec["reference_price"] == 50000.0 and v.hits.count("/v5/market/tickers") == 3
    assert v.hits.count("/v5/market/instruments-info") == 1  # the rules once


@pytest.mark.parametrize("mark", ["nan", "inf", "-inf", "0", "-1", "abc", "", None])
def test_a_mark_that_is_not_a_finite_positive_number_is_never_used(venue_factory, mark):
    from mmbot.live.sizing import VenueNotReady

    v = venue_factory([{"markPrice": mark, "lastPrice": "40000"}] if mark is not None else [{"lastPrice": "40000"}])
    with pytest.raises(VenueNotReady, match=r"no usable markPrice for BTCUSDT"):
        _resolve(_cfg("strategy.level_notional_usdt=100"), v.url, timeout_s=3.0)


def test_a_symbol_the_venue_does_not_list_is_not_ready(venue_factory):
    from mmbot.live.sizing import VenueNotReady

    v = venue_factory([{"markPrice": "40000"}], instruments=())
    with pytest.raises(VenueNotReady, match=r"instruments-info lists no BTCUSDT"):
        _resolve(_cfg("strategy.level_notional_usdt=100"), v.url, timeout_s=2.0)


def test_shadow_prices_the_shipped_definition_it_simulates(venue_factory):
    """Shadow passes the shipped definition: instruments-info is not asked."""
    from adapters.instruments import InstrumentRegistry

    v = venue_factory([{"markPrice": "40000"}], instruments=())
    inst = InstrumentRegistry().get_by_id("BTCUSDT-LINEAR.BYBIT")
    cfg, rec = _resolve(_cfg("strategy.level_notional_usdt=100"), v.url, instrument=inst)
    assert cfg.strategy["level_size"] == 0.002 and "/v5/market/instruments-info" not in v.hits


def test_a_notional_below_one_order_exits_2_naming_key_instrument_and_minimum(venue_factory):
    from mmbot.config.backtest import ConfigError

    v = venue_factory([{"markPrice": "67001"}])
    with pytest.raises(ConfigError) as e:
        _resolve(_cfg("strategy.level_notional_usdt=20"), v.url)
    line = str(e.value)
    assert line.startswith("--set strategy.level_notional_usdt=20: strategy.level_notional_usdt: 20 USDT at 67001 "
                           "USDT/BTC (the venue's mark price, GET /v5/market/tickers at "), line
    assert "below one order of BTCUSDT-LINEAR.BYBIT: the minimum is 67.001 USDT" in line
    assert "\n" not in line


# -- the CLI: before the lock, the run folder or any key is used -------------------------------------

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


def test_live_cli_unreachable_venue_exits_4_with_one_line_and_writes_nothing(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    r = _live(tmp_path, f"http://127.0.0.1:{port}", "strategy.level_notional_usdt=100")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    assert len(errors) == 1 and f"from http://127.0.0.1:{port} (public REST) within live.timeout_connection_s = 2 s" \
        in errors[0], r.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "locks").exists() or list((tmp_path / "locks").iterdir()) == []


def test_live_cli_a_notional_below_one_order_exits_2_before_anything_exists(tmp_path, venue_factory):
    v = venue_factory([{"markPrice": "67001"}])
    r = _live(tmp_path, v.url, "strategy.level_notional_usdt=20")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: --set strategy.level_notional_usdt=20: "
                                                   "strategy.level_notional_usdt: 20 USDT at 67001 USDT/BTC"), r.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "locks").exists() or list((tmp_path / "locks").iterdir()) == []


# -- mutants of the price check and the choice of price --------------------------------------------

MUTANTS = {
    "last trade instead of mark": ('mark = _finite_positive(row.get("markPrice"))',
                                   'mark = _finite_positive(row.get("lastPrice"))'),
    "inf accepted": ("return v if math.isfinite(v) and v > 0 else None", "return v if v > 0 else None"),
    "zero accepted": ("return v if math.isfinite(v) and v > 0 else None", "return v if math.isfinite(v) else None"),
    "no retry on an empty ticker": ("        sleep(1.0)\n", "        raise VenueNotReady(last)\n"),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mutants_of_the_live_price_are_caught(name, venue_factory, monkeypatch):
    """Each broken version of mmbot/live/sizing.py fails one of the checks above."""
    import importlib.util
    import types

    old, new = MUTANTS[name]
    spec = importlib.util.find_spec("mmbot.live.sizing")
    src = Path(spec.origin).read_text()
    assert src.count(old) == 1, name
    mod = types.ModuleType("mmbot.live.sizing")
    mod.__file__ = spec.origin
    exec(compile(src.replace(old, new), spec.origin, "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, "mmbot.live.sizing", mod)
    failures = 0
    for check in (lambda: test_notional_keys_resolve_at_the_mark_price_not_the_last_trade(venue_factory),
                  lambda: test_an_empty_ticker_is_retried_until_the_mark_comes(venue_factory),
                  *[(lambda m=m: test_a_mark_that_is_not_a_finite_positive_number_is_never_used(venue_factory, m))
                    for m in ("nan", "inf", "0")]):
        try:
            check()
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 (an assertion, pytest.raises' Failed, or a mutant's crash)
            failures += 1
    assert failures, f"mutant {name!r} passes every check"


@pytest.mark.parametrize("answer, code, text", [
    (None, 4, "(public REST) within live.timeout_connection_s = 2 s"),
    ({"markPrice": "67001"}, 2, "error: --set strategy.level_notional_usdt=20: strategy.level_notional_usdt: 20 USDT "
                                "at 67001 USDT/BTC (the venue's mark price"),
])
def test_shadow_cli_resolves_before_anything_exists(tmp_path, venue_factory, answer, code, text):
    """Shadow prices at the mark of the venue whose data it replays (live.base_url_http here):
    no answer -> exit 4, a size below one order -> exit 2; one line, no run folder."""
    v = venue_factory([answer])
    r = _live(tmp_path, v.url, "strategy.level_notional_usdt=20", env_name="shadow")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == code and len(errors) == 1 and text in errors[0], (r.returncode, r.stderr[-2000:])
    assert not (tmp_path / "runs").exists()
