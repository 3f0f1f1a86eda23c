"""What a soak sample reads: the node process (/proc), its Prometheus metrics, the recorder's files.

Units: RSS in MB (2**20 bytes), CPU in seconds (user + system), latencies in seconds as exported.
"""

from __future__ import annotations

import math
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HIST = "mmbot_tick_to_order_latency_seconds"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def proc_sample(pid: int) -> dict | None:
    """RSS (MB), CPU seconds (utime + stime) and thread count of a live process; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    f = stat.rsplit(")", 1)[1].split()
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) ... num_threads(17)
    return {"rss_mb": int(statm[1]) * _PAGE_MB, "cpu_s": (int(f[11]) + int(f[12])) / _CLK_TCK,
            "threads": int(f[17])}


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (e.g. mmbot live's masking pump)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out += [int(x) for x in text]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return sorted(set(out))


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, ""


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    """Every sample of a Prometheus text exposition as (sample name, labels, value)."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def metric_sum(samples: list[tuple[str, dict, float]], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``; NaN when none."""
    vals = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    return sum(vals) if vals else math.nan


def histogram_buckets(samples: list[tuple[str, dict, float]], name: str = HIST) -> dict[float, float]:
    """Cumulative bucket counts by upper edge (``le``), summed over the other labels (action)."""
    out: dict[float, float] = {}
    for n, lab, v in samples:
        if n == name + "_bucket":
            le = math.inf if lab["le"] in ("+Inf", "inf") else float(lab["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def bucket_delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    """Observations between two scrapes of one cumulative histogram."""
    return {le: now[le] - before.get(le, 0.0) for le in now}


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Quantile of a cumulative histogram, linear within the bucket (PromQL's histogram_quantile):
    seconds; NaN without observations; the last finite edge when the rank falls in +Inf."""
    edges = sorted(buckets)
    total = buckets[edges[-1]] if edges else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in edges:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def guard_states(samples: list[tuple[str, dict, float]]) -> dict[str, str]:
    """guard -> its current state (the ``mmbot_guard_state`` series whose value is 1)."""
    out = {}
    for n, lab, v in samples:
        if n == "mmbot_guard_state" and v == 1.0:
            out[lab["guard"]] = lab["state"]
    return out


def guard_transitions(samples: list[tuple[str, dict, float]]) -> dict[str, float]:
    """"guard:new_state" -> transitions so far (``mmbot_guard_transitions_total``)."""
    out = {}
    for n, lab, v in samples:
        if n == "mmbot_guard_transitions_total":
            out[f"{lab['guard']}:{lab['new_state']}"] = v
    return out


class GzLineCounter:
    """Counts the lines of a growing multi-member gzip file (the recorder appends one member per
    flush) reading only the bytes added since the last call. A member still being written is read
    again next time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0       # bytes consumed (complete members)
        self.lines = 0

    def update(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.lines
        pos = 0
        while pos < len(data):
            d = zlib.decompressobj(wbits=31)
            try:
                out = d.decompress(data[pos:])
            except zlib.error:
                break  # a torn member: wait for the writer
            if not d.eof:
                break  # incomplete member
            self.lines += out.count(b"\n")
            consumed = len(data) - pos - len(d.unused_data)
            pos += consumed
        self.offset += pos
        return self.lines


class RecordingProbe:
    """Bytes and rows of the recorder's directory: raw lines per ``*.jsonl.gz`` (daily files) and
    order-event lines of ``orders.jsonl``."""

    def __init__(self, rec_dir: Path) -> None:
        self.rec_dir = rec_dir
        self._gz: dict[Path, GzLineCounter] = {}
        self._orders_offset = 0
        self._orders_lines = 0

    def sample(self) -> dict:
        total_bytes = 0
        raw_lines = 0
        if self.rec_dir.exists():
            for p in sorted(self.rec_dir.glob("*.jsonl.gz")):
                total_bytes += p.stat().st_size
                raw_lines += self._gz.setdefault(p, GzLineCounter(p)).update()
            orders = self.rec_dir / "orders.jsonl"
            if orders.exists():
                total_bytes += orders.stat().st_size
                with open(orders, "rb") as f:
                    f.seek(self._orders_offset)
                    data = f.read()
                cut = data.rfind(b"\n") + 1  # whole lines only
                self._orders_lines += data[:cut].count(b"\n")
                self._orders_offset += cut
        return {"bytes": total_bytes, "raw_lines": raw_lines, "order_event_lines": self._orders_lines}


def settle_balance(read_pair, tolerance_usdt: float, attempts: int, interval_s: float, sleep=None) -> dict:
    """Compare the node's balance with the exchange's wallet until they agree or ``attempts``
    re-reads are spent; ``read_pair()`` returns (node_usdt, exchange_usdt) or None.

    Why re-read: one sample reads the node's metrics and then the exchange's /stats, while the
    node keeps trading. A fill between the two reads, or one the node's metrics have not taken in
    yet (its gauges refresh every ``update_interval_ms`` = 1 s, after the wallet message arrives
    over the private WebSocket), shows a difference that is gone a second later. A real drift (a
    missed wallet update, a fee booked twice) does not go away, so it survives every re-read and
    the gate still sees it; a re-read without a number (the node's gauge missing: NaN) ends the
    re-reads and keeps the last difference seen, since the gate counts a NaN difference as agreeing.
    Returns the last pair with numbers, the first difference and the re-reads used."""
    import time as _time

    sleep = sleep or _time.sleep
    pair = read_pair()
    first = None if pair is None else pair[0] - pair[1]
    used = 0
    while pair is not None and used < attempts and not (math.isfinite(pair[0] - pair[1])
                                                       and abs(pair[0] - pair[1]) <= tolerance_usdt):
        if not (math.isfinite(pair[0]) and math.isfinite(pair[1])):
            break  # no number to compare (node not reconciled yet): nothing a re-read settles
        sleep(interval_s)
        used += 1
        nxt = read_pair()
        if nxt is None or not (math.isfinite(nxt[0]) and math.isfinite(nxt[1])):
            break  # no number this time: the difference seen stands (a NaN pair would read as agreeing)
        pair = nxt
    return {"node": None if pair is None else pair[0], "exchange": None if pair is None else pair[1],
            "first_diff": first, "rechecks": used}
