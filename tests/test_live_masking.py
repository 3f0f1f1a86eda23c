"""The API key and secret never reach a sink: stdout/stderr, Nautilus' JSON file log, the recorder's
orders.jsonl, the audit log, anything in the run folder (mmbot/live/secrets.py,
adapters/bybit_live.py). Bybit answers a bad signature with 10004 quoting the signed string, API key
included; the fake exchange's ``sign_error`` fault does the same."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

from mmbot.live.secrets import mask
from tests.test_live_e2e import KEY, SECRET, Live, fake, recording  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent


def leaks(paths: list[Path], texts: list[str]) -> list[str]:
    """Every place (file, or "output") holding the key or the secret, gzip members decompressed."""
    hits = []
    for s in (KEY, SECRET):
        for t in texts:
            if s in t:
                hits.append(f"output has {s[:6]}…")
        for root in paths:
            for p in ([root] if root.is_file() else sorted(root.rglob("*"))):
                if not p.is_file():
                    continue
                data = p.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                if s.encode() in data:
                    hits.append(f"{p} has {s[:6]}…")
    return hits


def test_live_e2e_signature_errors_never_leak_the_key(tmp_path, fake):
    """Orders over REST (Bybit demo client flag), so a 10004 on cancel / amend / the open-order check
    becomes an OrderCancelRejected / OrderModifyRejected reason and a log line: the key must be
    masked in all of them, in every file of the run and in all output, with no scrub needed."""
    live = Live(tmp_path, fake, extra=["--set", "live.adapter_environment=demo", "--set", "live.open_check_interval_secs=1",
                                       "--set", "live.timeout_post_stop_s=1"])
    try:
        live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes")
        for path in ("/v5/order/cancel", "/v5/order/amend", "/v5/order/realtime"):
            fake.fault("sign_error", path=path, count=2)
        live.wait_for(lambda: {f.get("path") for f in fake.state()["faults"]["fired"]} >= {"/v5/order/realtime"} and
                      sum(f["kind"] == "sign_error" for f in fake.state()["faults"]["fired"]) >= 4, 40, "signature errors")
        time.sleep(1.0)
        code = live.terminate(timeout=90)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    out = live.output()
    run_dirs = list((tmp_path / "runs").glob("*-testnet"))
    assert len(run_dirs) == 1
    run = run_dirs[0]
    # The signed-string echo did reach the sinks, masked: the test exercises the leak path.
    orders = (run / "recording" / "orders.jsonl").read_text()
    assert "error sign! origin_string[" in orders and mask(KEY) in orders.encode().decode("unicode_escape")
    nautilus_log = (run / "nautilus.jsonl").read_text()
    assert "error sign!" in nautilus_log
    assert not list(run.glob("*fifo*")), "the masking FIFO is removed at exit"
    assert leaks([tmp_path / "runs", tmp_path / "audit.jsonl", tmp_path / "locks"], [out]) == []
    assert '"event": "secret_scrubbed"' not in out  # nothing had to be scrubbed after the fact
    assert code == 0, out[-3000:]


def test_live_masker_output_survives_an_abort():
    """A Rust panic prints, then aborts the process: the pump is a separate process, so the text
    (masked) still arrives, even a last line without its newline."""
    code = f"""
import os, sys
from mmbot.live.secrets import mask_process_output
m = mask_process_output([{SECRET!r}])
print("before the panic {SECRET}", flush=True)
os.write(2, b"thread 'main' panicked: secret={SECRET}\\n")
os.write(2, b"partial line {SECRET}")
os.abort()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == -6, (r.returncode, out)
    assert SECRET not in out
    assert f"before the panic {mask(SECRET)}" in r.stdout
    assert f"panicked: secret={mask(SECRET)}" in r.stderr and f"partial line {mask(SECRET)}" in r.stderr


def test_live_masker_file_sink_masks_what_a_native_writer_puts_in_the_fifo(tmp_path):
    """Nautilus' Rust logger opens its JSON log by path and writes to it: that path is a FIFO the
    pump reads, masks and appends to the real log file."""
    fifo, log = tmp_path / "n-fifo.jsonl", tmp_path / "nautilus.jsonl"
    code = f"""
import json, os
from mmbot.live.secrets import mask_process_output
m = mask_process_output([{KEY!r}, {SECRET!r}], file_sinks=[({str(fifo)!r}, {str(log)!r})])
fd = os.open({str(fifo)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # as Rust's File::options().append(true).create(true)
for i in range(2000):
    os.write(fd, (json.dumps({{"i": i, "message": "error sign! origin_string[123{KEY}5000]"}}) + "\\n").encode())
os.close(fd)
m.stop()
print("exists after stop:", os.path.exists({str(fifo)!r}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "exists after stop: False" in r.stdout
    lines = log.read_text().splitlines()
    assert len(lines) == 2000 and [json.loads(x)["i"] for x in lines] == list(range(2000))
    assert KEY not in log.read_text() and mask(KEY) in lines[-1]


def test_live_scrub_files_masks_plain_and_gzip_and_reports_them(tmp_path):
    from mmbot.live.secrets import scrub_files

    (tmp_path / "a.jsonl").write_text(f"x {KEY} y\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(f"z {SECRET}\n".encode()))
    (tmp_path / "clean.txt").write_text("nothing\n")
    hit = scrub_files(tmp_path, [KEY, SECRET])
    assert sorted(p.name for p in hit) == ["a.jsonl", "b.jsonl.gz"]
    assert leaks([tmp_path], []) == []
    assert gzip.decompress((tmp_path / "sub" / "b.jsonl.gz").read_bytes()).decode() == f"z {mask(SECRET)}\n"
    assert scrub_files(tmp_path, [KEY, SECRET]) == []


def test_live_scrub_files_only_touches_the_named_files_and_keeps_their_mode(tmp_path):
    """Hostile finding 14: a record_dir shared with the key file. ``only`` = the recorder's files:
    the key file is neither rewritten nor re-moded; a scrubbed file keeps its mode."""
    from mmbot.live.secrets import scrub_files

    key_file = tmp_path / "bybit.toml"
    key_file.write_text(f'api_key = "{KEY}"\n')
    key_file.chmod(0o600)
    orders = tmp_path / "orders.jsonl"
    orders.write_text(f"x {KEY}\n")
    orders.chmod(0o640)
    hit = scrub_files(tmp_path, [KEY, SECRET], only=[orders, tmp_path / "BTCUSDT_2026-01-01.jsonl.gz"])
    assert hit == [orders] and orders.read_text() == f"x {mask(KEY)}\n"
    assert (orders.stat().st_mode & 0o777) == 0o640
    assert key_file.read_text() == f'api_key = "{KEY}"\n' and (key_file.stat().st_mode & 0o777) == 0o600
