"""Shadow trading end to end against the loopback fake's public feed (docs/shadow.md):
``mmbot live --env shadow`` -> recording -> ``mmbot catalog import`` -> ``mmbot backtest run``
-> ``mmbot compare``; and SIGKILL of the shadow process loses at most the last second."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.recordings import generate_recording

try:
    import tools.fake_bybit  # noqa: F401
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--set", "venue.fill_model=risk_averse", "--set", "strategy.fee_floor_enabled=false",
          "--set", "strategy.min_half_spread_bps=0.2", "--set", "strategy.k_vol=0.0"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("rec") / "rec.jsonl", 1.5, 11)


@pytest.fixture()
def fake(tmp_path, recording):
    err = open(tmp_path / "fake.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tools.fake_bybit", "--recording", str(recording), "--port", "0",
                             "--speed", "2"], stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    urls = json.loads(proc.stdout.readline())
    yield urls
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    err.close()


def _shadow(tmp: Path, urls: dict, duration: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "mmbot.cli", "live", "--env", "shadow", "--config", str(REPO / "config/testnet.toml"),
            "--metrics-port", "-1", "--set", f"live.base_url_ws_public={urls['ws_public']}",
            "--set", f"live.lock_dir={tmp / 'locks'}", "--set", f"live.out_dir={tmp / 'runs'}",
            "--set", f"risk.audit.file={tmp / 'audit.jsonl'}", "--set", f"risk.kill_switch.file={tmp / 'KILL'}", *COMMON]
    if duration:
        args += ["--duration", duration]
    return subprocess.Popen(args, stdout=open(tmp / "shadow.out", "w"), stderr=open(tmp / "shadow.err", "w"),
                            cwd=REPO, env={**__import__("os").environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_shadow_import_backtest_compare(tmp_path, fake):
    proc = _shadow(tmp_path, fake, duration="30s")  # 60 s of recorded data at --speed 2
    assert proc.wait(timeout=120) == 0, (tmp_path / "shadow.err").read_text()[-3000:]
    err = (tmp_path / "shadow.err").read_text()
    exit_line = json.loads(next(line for line in err.splitlines() if '"event": "exit"' in line))
    assert exit_line["sim"]["fills"] >= 1  # the queue simulator filled shadow orders
    run_dir = Path(exit_line["run_dir"])
    recs = sorted((run_dir / "recording").glob("*.jsonl.gz"))
    assert recs and (run_dir / "recording" / "orders.jsonl").exists()
    # Raw frames exactly as received, plus local_ts_ns.
    first = json.loads(gzip.open(recs[0]).readline())
    assert "local_ts_ns" in first
    # No Bybit execution client and no keys: nothing but the public stream was used.
    assert "ExecClient-BYBIT" not in err
    _cli("catalog", "import", *map(str, recs), "--catalog", str(tmp_path / "cat"))
    _cli("backtest", "run", "--config", str(REPO / "config/testnet.toml"), "--catalog", str(tmp_path / "cat"),
         "--out", str(tmp_path / "bt"), "--set", f"risk.audit.file={tmp_path / 'bt-audit.jsonl'}",
         "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}", *COMMON)
    r = _cli("compare", str(run_dir), str(tmp_path / "bt"), "--json", check=False)
    assert r.returncode in (0, 3), r.stderr
    res = json.loads(r.stdout)
    print(_cli("compare", str(run_dir), str(tmp_path / "bt"), check=False).stdout)
    assert res["fills"]["shadow"] >= 10 and res["fills"]["backtest"] >= 10
    # The replay reproduces the shadow session: same orders, same fills at the same nanosecond
    # (decisions and simulator arrivals run on receive stamps, not on the wall clock; docs/shadow.md).
    assert res["identical_fills"], res["first_divergence"]
    assert r.returncode == 0
    assert res["fills"]["shadow"] == res["fills"]["backtest"] == res["fills"]["matched"], res["fills"]
    assert res["orders"]["shadow"] == res["orders"]["backtest"], res["orders"]
    assert res["fill_time_diff_ms"]["max_abs"] == 0.0, res["fill_time_diff_ms"]


def test_shadow_sigkill_loses_at_most_last_second_and_imports(tmp_path, fake):
    proc = _shadow(tmp_path, fake)
    deadline = time.monotonic() + 60
    rec_dir = None
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*-shadow/recording/*.jsonl.gz"))
        if found and found[0].stat().st_size > 0:
            rec_dir = found[0].parent
            break
        time.sleep(0.2)
    assert rec_dir is not None, (tmp_path / "shadow.err").read_text()[-3000:]
    time.sleep(4)
    kill_ns = time.time_ns()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    path = sorted(rec_dir.glob("*.jsonl.gz"))[-1]
    # Read every complete gzip member (the last one may be cut off mid-write).
    data, raw = b"", path.read_bytes()
    while raw:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data += d.decompress(raw)
        except zlib.error:
            break
        if not d.eof:
            break
        raw = d.unused_data
    last = [json.loads(x) for x in data.splitlines() if x.strip().endswith(b"}")][-1]
    lost_s = (kill_ns - last["local_ts_ns"]) / 1e9
    assert lost_s <= 1.0 + 0.25, f"lost {lost_s:.2f} s"  # flush interval 1 s (+ scheduling slack)
    r = _cli("catalog", "import", str(path), "--catalog", str(tmp_path / "cat"), "--report", str(tmp_path / "rep.json"))
    assert "OrderBookDelta" in r.stdout
