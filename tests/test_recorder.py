"""The recorder's writer (adapters/recorder.py): raw lines exactly as received plus local_ts_ns,
one gzip member per flush, daily files, order events, and write errors reported once."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from adapters.problems import ProblemLog
from adapters.recorder import RecordWriter, with_local_ts
from adapters.sources import iter_lines

DAY1 = 1717372800_000_000_000  # 2024-06-03T00:00:00Z
FRAME = '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1717372800201,"data":[{"T":1717372800201,"s":"BTCUSDT","S":"Sell","v":"0.500","p":"67000.00","L":"MinusTick","i":"a-1","BT":false,"RPI":false}]}'


def test_with_local_ts_keeps_the_frame_bytes():
    line = with_local_ts(FRAME, 123)
    assert line == FRAME[:-1] + ',"local_ts_ns":123}'
    assert json.loads(line)["local_ts_ns"] == 123
    assert with_local_ts("{}", 5) == '{"local_ts_ns":5}'


def test_members_per_flush_daily_rotation_and_events(tmp_path):
    w = RecordWriter(tmp_path, "BTCUSDT", flush_interval_ms=60_000)
    w.start()
    w.add_raw(DAY1 + 1, with_local_ts(FRAME, DAY1 + 1))
    w.add_event({"kind": "OrderFilled", "client_order_id": "O-1"})
    w.flush()
    w.add_raw(DAY1 + 2, with_local_ts(FRAME, DAY1 + 2))
    w.add_raw(DAY1 + 86_400 * 10**9, None)  # rotation marker: the next line starts the next UTC day's file
    w.add_raw(DAY1 + 86_400 * 10**9, with_local_ts(FRAME, DAY1 + 86_400 * 10**9))
    w.close()
    f1, f2 = tmp_path / "BTCUSDT_2024-06-03.jsonl.gz", tmp_path / "BTCUSDT_2024-06-04.jsonl.gz"
    assert f1.exists() and f2.exists()
    assert f1.read_bytes().count(b"\x1f\x8b\x08") == 2  # two flushes, two gzip members
    lines = gzip.open(f1).read().decode().splitlines()
    assert [json.loads(x)["local_ts_ns"] for x in lines] == [DAY1 + 1, DAY1 + 2]
    assert json.loads((tmp_path / "orders.jsonl").read_text())["kind"] == "OrderFilled"
    # the importer's reader takes the multi-member file and a truncated tail without failing
    (tmp_path / "cut.jsonl.gz").write_bytes(f1.read_bytes()[:-7])
    log = ProblemLog()
    got = list(iter_lines(tmp_path / "cut.jsonl.gz", log))
    assert len(got) >= 1


def test_an_event_added_while_a_flush_runs_is_kept(tmp_path):
    """The flush thread can run between any two bytecodes of ``add_event``: after it took the
    buffer and before the append. The old writer swapped in a new list there, the append went to
    the old one (already written) and the event was lost (CI, shadow under load: a fill missing
    from orders.jsonl, so ``mmbot compare`` reported a divergence the simulator never made).
    Deterministic here: the event's serialization (``default=str``) runs a flush at that point."""
    w = RecordWriter(tmp_path, "BTCUSDT", flush_interval_ms=60_000)

    class FlushWhenSerialized:
        def __str__(self) -> str:
            w.flush()
            return "T-1"

    w.add_event({"kind": "OrderInitialized"})
    w.add_event({"kind": "OrderFilled", "trade_id": FlushWhenSerialized()})
    w.add_event({"kind": "OrderCanceled"})
    w.close()
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert kinds == ["OrderInitialized", "OrderFilled", "OrderCanceled"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_permission_error_reported_once(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    errors = []
    w = RecordWriter(d / "sub", "BTCUSDT", on_error=errors.append)
    w.start()
    for i in range(3):
        w.add_raw(DAY1 + i, "{}")
        w.flush()
    w.close()
    assert len(errors) == 1 and "cannot write" in errors[0]


def test_disk_error_reported_once_and_writer_keeps_going(tmp_path, monkeypatch):
    errors = []
    w = RecordWriter(tmp_path, "BTCUSDT", on_error=errors.append)
    w.start()
    import builtins

    real_open = builtins.open

    def full(path, *a, **k):
        if str(path).startswith(str(tmp_path)):
            raise OSError(28, "No space left on device")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", full)
    for i in range(3):
        w.add_raw(DAY1 + i, "{}")
        w.flush()
    monkeypatch.setattr(builtins, "open", real_open)
    w.close()
    assert len(errors) == 1 and "No space left" in errors[0]
    assert w.error  # stops recording; add_* keep returning at once
    w.add_raw(DAY1, "{}")


# -- day files start with a snapshot (the 1-hour soak, docs/benchmarks.md "Soak") --------------------

DAY2 = DAY1 + 86_400 * 10**9


def test_without_a_marker_the_writer_switches_files_rotate_wait_after_midnight(tmp_path):
    """No marker (no book topic, or the re-subscription's snapshot never came): lines up to
    ROTATE_WAIT_S after midnight end the previous day's file, the first one after starts the next."""
    from adapters.recorder import ROTATE_WAIT_S

    w = RecordWriter(tmp_path, "BTCUSDT", flush_interval_ms=60_000)
    w.start()
    wait_ns = int(ROTATE_WAIT_S * 1e9)
    stamps = [DAY2 - 1, DAY2, DAY2 + wait_ns - 1, DAY2 + wait_ns, DAY2 + wait_ns + 1]
    for ts in stamps:
        w.add_raw(ts, with_local_ts(FRAME, ts))
    w.add_raw(DAY2 - 5, None)  # a marker of the old day changes nothing
    w.close()
    got = {p.name: [json.loads(x)["local_ts_ns"] for x in gzip.open(p).read().decode().splitlines()]
           for p in tmp_path.glob("*.jsonl.gz")}
    assert got == {"BTCUSDT_2024-06-03.jsonl.gz": stamps[:3], "BTCUSDT_2024-06-04.jsonl.gz": stamps[3:]}
    assert w.rotations == 1


def _book(kind: str, u: int, ts_ms: int, bid: str = "67000.0", size: str = "1.000") -> str:
    return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": ts_ms,
                       "data": {"s": "BTCUSDT", "b": [[bid, size]], "a": [["67000.5", "1.000"]], "u": u, "seq": u},
                       "cts": ts_ms}, separators=(",", ":"))


def _trade(ts_ms: int, i: int) -> str:
    return json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ts_ms,
                       "data": [{"T": ts_ms, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "67000.5",
                                 "L": "PlusTick", "i": f"t-{i}", "BT": False}]}, separators=(",", ":"))


class _SentFrames:
    """Stands in for the aiohttp WebSocket: records what the client sends."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(json.loads(text))


def test_each_day_file_starts_with_a_book_snapshot_and_imports_strictly(tmp_path):
    """The 1-hour soak crossed UTC midnight: the new day's file began with book deltas (Bybit sends
    a snapshot only on subscribe) and ``mmbot catalog import --strict`` refused it
    (``delta_before_snapshot``): the recorder gate failed. Now the raw client re-subscribes the
    book at the first frame after midnight and the writer starts the new file at its snapshot;
    the deltas before it end the old file. Each day file imports strictly on its own."""
    import asyncio

    from click.testing import CliRunner
    from nautilus_trader.cache.cache import Cache
    from nautilus_trader.common.component import MessageBus, TestClock
    from nautilus_trader.model.identifiers import ClientId, TraderId

    from adapters.recorder import RAW_TOPIC, RawPublicDataClient, RawPublicDataClientConfig
    from mmbot.cli.main import main

    loop = asyncio.new_event_loop()
    clock = TestClock()
    bus = MessageBus(TraderId("T-001"), clock)
    client = RawPublicDataClient(loop, ClientId("RAW"), bus, Cache(), clock, RawPublicDataClientConfig(
        url="ws://127.0.0.1:1", instrument_id="BTCUSDT-LINEAR.BYBIT", depth=50, feed=False))
    client._topics = {"orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"}
    client._ws = ws = _SentFrames()
    rec = tmp_path / "rec"
    w = RecordWriter(rec, "BTCUSDT", flush_interval_ms=60_000)
    w.start()
    bus.subscribe(topic=RAW_TOPIC, handler=lambda m: w.add_raw(m[0], m[1]))
    day2_ms = DAY2 // 10**6

    def frame(ts_ms: int, text: str) -> None:
        clock.set_time(ts_ms * 10**6 + 500_000)  # received 0.5 ms after the exchange stamp
        client._on_frame(text)
        loop.run_until_complete(asyncio.sleep(0))  # let a re-subscription task send

    frame(day2_ms - 3000, _book("snapshot", 100, day2_ms - 3000))
    frame(day2_ms - 2000, _book("delta", 101, day2_ms - 2000, size="2.000"))
    frame(day2_ms - 1000, _trade(day2_ms - 1000, 1))
    assert ws.sent == []  # the session's first day: nothing to re-subscribe
    frame(day2_ms + 5, _book("delta", 102, day2_ms + 5, size="3.000"))  # first frame of the new day
    assert ws.sent == [{"op": "unsubscribe", "args": ["orderbook.50.BTCUSDT"]},
                       {"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}]
    frame(day2_ms + 8, _trade(day2_ms + 8, 2))
    frame(day2_ms + 20, _book("snapshot", 103, day2_ms + 20, size="3.000"))  # the re-subscription's answer
    frame(day2_ms + 40, _book("delta", 104, day2_ms + 40, size="4.000"))
    frame(day2_ms + 50, _trade(day2_ms + 50, 3))
    w.close()
    loop.close()
    assert client.day_resubscriptions == 1 and len(ws.sent) == 2
    files = sorted(rec.glob("*.jsonl.gz"))
    assert [p.name for p in files] == ["BTCUSDT_2024-06-03.jsonl.gz", "BTCUSDT_2024-06-04.jsonl.gz"]
    day2_lines = [json.loads(x) for x in gzip.open(files[1]).read().decode().splitlines()]
    assert day2_lines[0]["type"] == "snapshot" and day2_lines[0]["topic"].startswith("orderbook.")
    assert sum(len(gzip.open(p).read().decode().splitlines()) for p in files) == 8  # every frame, once
    for p in files:
        r = CliRunner().invoke(main, ["catalog", "import", str(p), "--catalog", str(tmp_path / f"cat-{p.stem}"),
                                      "--strict"])
        assert r.exit_code == 0, (p.name, r.output)
