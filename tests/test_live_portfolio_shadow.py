"""Shadow with two instruments against the loopback exchange's public feed (docs/portfolio.md,
"Modes"): ``mmbot live --env shadow`` on a ``[portfolio]`` -> one recording file per symbol ->
``mmbot catalog import`` -> ``mmbot backtest run`` (the portfolio backtest) -> ``mmbot compare``:
every instrument's orders and fills identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"
COMMON = ["--set", "venue.fill_model=risk_averse", "--set", "strategy.fee_floor_enabled=false",
          "--set", "strategy.min_half_spread_bps=0.2", "--set", "strategy.k_vol=0.0"]


def portfolio_config(tmp: Path) -> Path:
    """config/testnet.toml with [portfolio] XRPUSDT + BTCUSDT instead of run.instrument (XRP sized
    in XRP by its override table)."""
    text = (REPO / "config/testnet.toml").read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("instrument = "))
    text += f'''

[portfolio]
instruments = ["{XRP}", "{BTC}"]

[portfolio.overrides."{XRP}"]
strategy.level_size = 10.0
strategy.max_position = 100.0
risk.position.soft_position = 150.0
risk.position.hard_position = 200.0
'''
    path = tmp / "portfolio-shadow.toml"
    path.write_text(text)
    return path


def _recording(out: Path, symbol: str, seed: int) -> Path:
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", symbol, "--depth", "200",
                    "--orders-per-s", "1", "--minutes", "1.0", "--seed", str(seed), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    return out


@pytest.fixture()
def feed(tmp_path):
    recs = [_recording(tmp_path / "xrp.jsonl", "XRPUSDT", 7), _recording(tmp_path / "btc.jsonl", "BTCUSDT", 11)]
    err = open(tmp_path / "feed.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tools.fake_bybit.public_feed", *sum((["--recording", str(r)]
                                                                                        for r in recs), []),
                             "--port", "0", "--speed", "2"], stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    urls = json.loads(proc.stdout.readline())
    yield urls
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    err.close()


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_two_instruments_shadow_replays_identically(tmp_path, feed):
    config = portfolio_config(tmp_path)
    args = ["live", "--env", "shadow", "--config", str(config), "--metrics-port", "-1", "--duration", "40s",
            "--set", f"live.base_url_ws_public={feed['ws_public']}", "--set", f"live.lock_dir={tmp_path / 'locks'}",
            "--set", f"live.out_dir={tmp_path / 'runs'}", "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}",
            "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}", *COMMON]
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=180, env={**os.environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})
    assert r.returncode == 0, r.stderr[-4000:]
    exit_line = json.loads(next(ln for ln in r.stderr.splitlines() if '"event": "exit"' in ln))
    run_dir = Path(exit_line["run_dir"])
    # one day file per symbol (the importer reads one symbol per file)
    recs = sorted((run_dir / "recording").glob("*.jsonl.gz"))
    assert sorted(p.name.split("_")[0] for p in recs) == ["BTCUSDT", "XRPUSDT"], recs
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["metrics"]["instruments"]) == {XRP, BTC}
    for iid in (XRP, BTC):  # both quoted and filled
        assert report["metrics"]["instruments"][iid]["metrics"]["counts"]["n_fills"] >= 1, iid
    _cli("catalog", "import", *map(str, recs), "--catalog", str(tmp_path / "cat"))
    _cli("backtest", "run", "--config", str(config), "--catalog", str(tmp_path / "cat"), "--out", str(tmp_path / "bt"),
         "--set", f"risk.audit.file={tmp_path / 'bt-audit.jsonl'}", "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}",
         *COMMON)
    res = json.loads(_cli("compare", str(run_dir), str(tmp_path / "bt"), "--json", check=False).stdout)
    print(_cli("compare", str(run_dir), str(tmp_path / "bt"), check=False).stdout)
    assert set(res["instruments"]) == {XRP, BTC}
    for iid, r in res["instruments"].items():
        assert r["fills"]["shadow"] >= 1, (iid, r["fills"])
        assert r["identical_fills"], (iid, r["first_divergence"])
        assert r["fills"]["shadow"] == r["fills"]["backtest"] == r["fills"]["matched"], (iid, r["fills"])
        assert r["orders"]["shadow"] == r["orders"]["backtest"], (iid, r["orders"])
    assert res["identical_fills"] and res["fill_time_diff_ms"]["max_abs"] == 0.0, res


def test_kill_file_at_start_halts_every_instrument(tmp_path, feed):
    """One kill switch over the node: a kill file present at start keeps BOTH strategies from
    sending a single order (the file's HALTED is node scope), and the session says so."""
    config = portfolio_config(tmp_path)
    (tmp_path / "KILL").write_text(json.dumps({"reason": "test halt"}))
    args = ["live", "--env", "shadow", "--config", str(config), "--metrics-port", "-1", "--duration", "15s",
            "--set", f"live.base_url_ws_public={feed['ws_public']}", "--set", f"live.lock_dir={tmp_path / 'locks'}",
            "--set", f"live.out_dir={tmp_path / 'runs'}", "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}",
            "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}", *COMMON]
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STARTED HALTED" in r.stdout, r.stdout
    exit_line = json.loads(next(ln for ln in r.stderr.splitlines() if '"event": "exit"' in ln))
    run_dir = Path(exit_line["run_dir"])
    orders = (run_dir / "recording" / "orders.jsonl")
    events = [json.loads(ln) for ln in orders.read_text().splitlines()] if orders.exists() else []
    assert not [e for e in events if e["kind"] in ("OrderInitialized", "OrderSubmitted")], events[:5]
    report = json.loads((run_dir / "report.json").read_text())
    for iid in (XRP, BTC):  # both saw the market (the halt is not a data problem)
        assert report["metrics"]["instruments"][iid]["metrics"]["counts"]["n_orders"] == 0, iid
