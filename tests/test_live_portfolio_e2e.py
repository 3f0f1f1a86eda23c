"""``mmbot live --env testnet`` on a ``[portfolio]`` of two instruments against the loopback
exchange serving both symbols (tools/fake_bybit, several symbols; docs/portfolio.md "Modes"): one
market maker per instrument on ONE Bybit execution client; quotes on both symbols, fills, each
instrument's position equal to the exchange's, and after SIGTERM zero open orders on every symbol
(the stop's venue check runs per instrument)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_live_e2e import KEY, SECRET, REPO, Live, _get, metric
from tests.test_live_portfolio_shadow import BTC, XRP, portfolio_config

SYMBOLS = ("XRPUSDT", "BTCUSDT")


def _recording(out: Path, symbol: str, seed: int, minutes: float = 2.0) -> Path:
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", symbol, "--depth", "200",
                    "--orders-per-s", "1", "--minutes", str(minutes), "--seed", str(seed), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    return out


class FakeMulti:
    """tools.fake_bybit serving XRPUSDT and BTCUSDT (one recording each) on one account."""

    def __init__(self, tmp: Path, recordings: list[Path]) -> None:
        self.key = KEY  # the only API key it accepts; Live runs mmbot with it
        self.err = open(tmp / "fake.err", "w")
        args = [sys.executable, "-m", "tools.fake_bybit", "--port", "0", "--loop", "--api-key", KEY,
                "--api-secret", SECRET]
        for sym, rec in zip(SYMBOLS, recordings):
            args += ["--symbol", sym, "--recording", str(rec)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True, cwd=REPO)
        line = self.proc.stdout.readline()
        assert line, f"fake exchange did not start: {(tmp / 'fake.err').read_text()}"
        self.urls = json.loads(line)

    def state(self) -> dict:
        return json.loads(_get(self.urls["control"] + "/state")[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("rec2")
    return [_recording(d / "xrp.jsonl", "XRPUSDT", 7), _recording(d / "btc.jsonl", "BTCUSDT", 11)]


@pytest.fixture()
def fake(tmp_path, recordings):
    f = FakeMulti(tmp_path, recordings)
    yield f
    f.stop()


def _signed(row: dict) -> float:
    size = float(row.get("size") or 0)
    return size if row.get("side") == "Buy" else -size if row.get("side") == "Sell" else 0.0


def test_live_portfolio_two_instruments_quotes_fills_positions_match_and_stop_leaves_no_orders(tmp_path, fake):
    live = Live(tmp_path, fake, config=portfolio_config(tmp_path))
    try:
        live.wait_for(lambda: _get(live.base + "/ready")[0] == 200, 90, "/ready")
        # quotes on BOTH symbols, on the one account
        live.wait_for(lambda: {o["symbol"] for o in fake.state()["open_orders"]} >= set(SYMBOLS), 60,
                      "open orders on both symbols")
        # fills on both symbols
        live.wait_for(lambda: {e["symbol"] for e in fake.state()["executions"]} >= set(SYMBOLS), 150,
                      "fills on both symbols")

        # each instrument's position (ours, per instrument label) equals the exchange's
        def same_positions():
            t, st = live.metrics(), fake.state()
            pairs = {iid: (metric(t, "mmbot_position_base", f'instrument="{iid}"'),
                           _signed(st["positions"][iid.split("-")[0]])) for iid in (XRP, BTC)}
            return pairs if all(abs(a - b) < 1e-9 for a, b in pairs.values()) else None

        live.wait_for(same_positions, 30, "each instrument's position to match the exchange")
        code = live.terminate()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    out = live.output()
    assert code == 0, out[-4000:]
    st = fake.state()
    assert st["open_orders"] == [], st["open_orders"]  # every symbol's
    stop_checks = [json.loads(ln) for ln in out.splitlines() if '"event": "stop_check"' in ln]
    assert sorted(c.get("instrument") for c in stop_checks) == sorted([XRP, BTC]), stop_checks
    assert all(c["ok"] for c in stop_checks)
    assert '"open_orders_in_cache": 0' in out
    assert SECRET not in out and KEY not in out
    # the session report: one section per instrument, each instrument's fills those of the exchange
    run_dir = next((tmp_path / "runs").glob("*-testnet"))
    report = json.loads((run_dir / "report.json").read_text())
    assert '"event": "report"' in out, out[-3000:]
    fills_by_symbol = {}
    for e in st["executions"]:
        fills_by_symbol[e["symbol"]] = fills_by_symbol.get(e["symbol"], 0) + 1
    import pandas as pd

    fills = pd.read_parquet(run_dir / "fills.parquet")
    assert {iid.split("-")[0]: int((fills.instrument_id == iid).sum()) for iid in (XRP, BTC)} == fills_by_symbol
    assert report["metadata"]["session"]["environment"] == "testnet"


def test_live_portfolio_exports_the_grafana_portfolio_series(tmp_path, fake):
    """The Portfolio row's series on the one /metrics page of a live portfolio (docs/portfolio.md
    "Metrics"): each instrument's position notional = its position x its mid (one scrape), the
    [risk.portfolio] limits on every instrument's series, and the allocator's equal weights and
    budgets per instrument (limits and budget wide: nothing triggers)."""
    path = portfolio_config(tmp_path)
    path.write_text(path.read_text() + '''
[risk.portfolio]
soft_gross_notional_usdt = 900000.0
hard_gross_notional_usdt = 1000000.0
soft_net_notional_usdt = 800000.0
hard_net_notional_usdt = 900000.0

[portfolio.allocator]
enabled = true
method = "equal"
interval_s = 1.0
total_budget_usdt = 1000000.0
min_weight = 0.1
max_weight = 0.9
''')
    live = Live(tmp_path, fake, config=path)
    try:
        live.wait_for(lambda: _get(live.base + "/ready")[0] == 200, 90, "/ready")
        live.wait_for(lambda: all(metric(live.metrics(), "mmbot_allocator_weight", f'instrument="{i}"') == 0.5
                                  for i in (XRP, BTC)), 30, "an equal allocation to both instruments")
        live.wait_for(lambda: {e["symbol"] for e in fake.state()["executions"]} >= set(SYMBOLS), 150,
                      "fills on both symbols")
        t = live.metrics()
        for iid in (XRP, BTC):
            sel = f'instrument="{iid}"'
            pos, mid = metric(t, "mmbot_position_base", sel), metric(t, "mmbot_mid_price", sel)
            assert metric(t, "mmbot_position_notional_usdt", sel) == pytest.approx(pos * mid, rel=1e-9, abs=1e-9), iid
            assert metric(t, "mmbot_portfolio_limit_usdt", f'{sel},measure="gross",level="hard"') == 1e6, iid
            assert metric(t, "mmbot_portfolio_limit_usdt", f'{sel},measure="net",level="soft"') == 8e5, iid
            assert metric(t, "mmbot_allocator_budget_usdt", sel) == 5e5, iid
            assert metric(t, "mmbot_allocator_blacklisted", sel) == 0, iid
            assert metric(t, "mmbot_allocator_max_position_base", sel) > 0, iid
        code = live.terminate()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    assert code == 0, live.output()[-4000:]
