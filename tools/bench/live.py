"""The ``live`` benchmark: `mmbot live --env testnet` against the loopback fake Bybit.

Reports the tick-to-order latency (book event received -> order command sent, from the
``mmbot_tick_to_order_latency_seconds`` histogram: p50 and p99 interpolated within buckets)
and the live process's CPU seconds per 10,000 book messages (``os.wait4`` rusage of the
process over ``mmbot_book_updates_total``). Everything binds 127.0.0.1.

    python -m tools.bench live --minutes 1          # also: python -m tools.bench.live
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parents[2]
# A key of this process: one mmbot instance per API key per host (mmbot/live/lock.py).
KEY, SECRET = process_api_key("bench-key-mmbot"), "bench-secret-0123456789-mmbot"
HIST = "mmbot_tick_to_order_latency_seconds"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out.append((key, float(value)))
    return out


def histogram_quantile(text: str, q: float) -> float:
    """Quantile (seconds) of a Prometheus histogram, linear within the bucket, as PromQL does."""
    by_le: dict[float, float] = {}
    for key, count in _samples(text, HIST + "_bucket"):  # summed over label sets (e.g. action)
        le = key.split('le="', 1)[1].split('"', 1)[0]
        edge = float("inf") if le == "+Inf" else float(le)
        by_le[edge] = by_le.get(edge, 0.0) + count
    buckets = sorted(by_le.items())
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a running process, from /proc (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int, proc: Path = Path("/proc")) -> dict[str, float]:
    """utime + stime (seconds) of a running process's threads, summed by thread name (``comm``:
    ``python`` for the Python threads, ``tokio-rt-worker`` for Nautilus' Rust runtime, ``logging``
    for its logger): which side of the Python/Rust boundary the CPU is on."""
    out: dict[str, float] = {}
    for task in (proc / str(pid) / "task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def bench_live(minutes: float, work: Path, profile: Path | None = None) -> dict:
    """``profile``: also record the live process with py-spy (``--native``, raw collapsed stacks,
    from the first book message for ``minutes`` minus 10 s) into that file, if py-spy exists."""
    from tools.gen_synthetic import generate, parse_start, write_recording

    rec = work / "live-bench.jsonl"
    write_recording(rec, generate("BTCUSDT", parse_start("2024-06-03T00:00:00Z"), max(minutes + 1, 2), 7))
    fake = subprocess.Popen([sys.executable, "-m", "tools.fake_bybit", "--recording", str(rec), "--port", "0", "--loop",
                             "--api-key", KEY, "--api-secret", SECRET],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        urls = json.loads(fake.stdout.readline())
        port = _free_port()
        duration_s = int(minutes * 60)
        args = [sys.executable, "-m", "mmbot.cli", "live", "--env", "testnet",
                "--config", str(REPO / "config/testnet.toml"), "--metrics-port", str(port),
                "--duration", f"{duration_s}s",
                "--set", f"live.base_url_http={urls['http']}", "--set", f"live.base_url_ws_public={urls['ws_public']}",
                "--set", f"live.base_url_ws_private={urls['ws_private']}",
                "--set", f"live.base_url_ws_trade={urls['ws_trade']}", "--set", "live.adapter_environment=mainnet",
                "--set", "live.test_exchange=true",
                "--set", f"live.lock_dir={work / 'locks'}", "--set", f"live.out_dir={work / 'runs'}",
                "--set", f"risk.audit.file={work / 'audit.jsonl'}", "--set", f"risk.kill_switch.file={work / 'KILL'}",
                "--set", "strategy.fee_floor_enabled=false", "--set", "strategy.min_half_spread_bps=0.2",
                "--set", "strategy.k_vol=0.0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
        env.update(BYBIT_TESTNET_API_KEY=KEY, BYBIT_TESTNET_API_SECRET=SECRET, MMBOT_KILL_TOKEN="")
        live = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, env=env)
        text, deadline = "", time.monotonic() + duration_s + 120
        first = last = None
        threads_first: dict[str, float] = {}
        threads_last: dict[str, float] = {}
        spy = None
        while True:  # reap with wait4 (not Popen.poll) to get the process's own rusage
            pid, status, usage = os.wait4(live.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                live.send_signal(signal.SIGTERM)
                _, status, usage = os.wait4(live.pid, 0)
                break
            try:
                scrape = _metrics(port)
                books_now = sum(v for _, v in _samples(scrape, "mmbot_book_updates_total"))
                cpu_now = _proc_cpu_s(live.pid)
                threads_now = thread_cpu_s(live.pid)
                text = scrape  # the last scrape before the process stops
                if first is None and books_now > 0:
                    first = (cpu_now, books_now)  # steady state starts: startup CPU excluded
                    threads_first = threads_now
                    exe = Path(sys.executable).parent / "py-spy"
                    if profile is not None and exe.exists():
                        spy = subprocess.Popen([str(exe), "record", "--pid", str(live.pid), "--native", "-r", "200",
                                                "-d", str(max(5, duration_s - 10)), "-f", "raw", "-o", str(profile)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                last = (cpu_now, books_now)
                threads_last = threads_now
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(1.0)
        live.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
        if spy is not None:
            spy.wait(timeout=60)
        cpu_s = usage.ru_utime + usage.ru_stime
        books = sum(v for _, v in _samples(text, "mmbot_book_updates_total"))
        count = sum(v for _, v in _samples(text, HIST + "_count"))
        return {
            "minutes": minutes, "exit_status": os.waitstatus_to_exitcode(status),
            "book_messages": int(books), "orders_timed": int(count),
            "tick_to_order_p50_ms": round(histogram_quantile(text, 0.50) * 1e3, 3),
            "tick_to_order_p99_ms": round(histogram_quantile(text, 0.99) * 1e3, 3),
            "cpu_s_total_incl_startup": round(cpu_s, 2),
            "cpu_s_per_10k_book_messages": (round((last[0] - first[0]) / (last[1] - first[1]) * 1e4, 2)
                                            if first and last and last[1] > first[1] else None),
            # the same figure per thread name (docs/benchmarks.md "Live on loopback": the floor)
            "cpu_s_per_10k_book_messages_by_thread": (
                {k: round((v - threads_first.get(k, 0.0)) / (last[1] - first[1]) * 1e4, 2)
                 for k, v in sorted(threads_last.items(), key=lambda kv: -(kv[1] - threads_first.get(kv[0], 0.0)))
                 if v - threads_first.get(k, 0.0) > 0}
                if first and last and last[1] > first[1] else None),
        }
    finally:
        fake.send_signal(signal.SIGTERM)
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tools.bench.live")
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--profile", type=Path, default=None, help="py-spy raw stacks of the live process (needs py-spy)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-live-") as tmp:
        print(json.dumps(bench_live(a.minutes, Path(tmp), a.profile)))
