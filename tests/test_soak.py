"""The soak (tools/soak) and what it needs from the loopback exchange (tools/fake_bybit).

- The fake's seamless loop: a recording replayed for hours is one continuous market (times,
  prices, ids) instead of a jump back to the first price at every pass.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

try:
    from tools.fake_bybit import FakeBybit
except Exception:  # noqa: BLE001
    pytest.skip("tools.fake_bybit cannot be imported", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent

# Three messages, 10 ms apart: a snapshot at 100.0/100.1, a trade, a delta lifting the book to
# 100.3/100.4. A plain loop goes back to 100.0/100.1 at every pass; a seamless one continues at
# 100.3/100.4 and climbs 0.3 per pass.
SMALL = [
    {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1000,
     "data": {"s": "BTCUSDT", "b": [["100.0", "1"], ["99.9", "2"]], "a": [["100.1", "1"], ["100.2", "2"]],
              "u": 10, "seq": 5}, "cts": 1000, "local_ts_ns": 1_000_000_000},
    {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1010,
     "data": [{"T": 1010, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "100.1", "i": "t-1", "seq": 6}],
     "local_ts_ns": 1_010_000_000},
    {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1020,
     "data": {"s": "BTCUSDT", "b": [["100.0", "0"], ["100.3", "1"]],
              "a": [["100.1", "0"], ["100.2", "0"], ["100.4", "1"], ["100.5", "1"]], "u": 11, "seq": 7},
     "cts": 1020, "local_ts_ns": 1_020_000_000},
]


@pytest.fixture()
def small_recording(tmp_path) -> Path:
    p = tmp_path / "small.jsonl"
    p.write_text("".join(json.dumps(m) + "\n" for m in SMALL))
    return p


async def _replayed(fake: FakeBybit, gen, n: int) -> list[dict]:
    """Take ``n`` messages from the fake's replay iterator, each processed as the replay would."""
    out = []
    for _ in range(n):
        m = next(gen)
        await fake._process_public(m)
        out.append(m)
    return out


def test_fake_seamless_loop_continues_time_price_and_ids(small_recording):
    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", seamless=True, paused=True)
        msgs = await _replayed(fake, fake._seamless_messages(), 9)
        return fake, msgs

    fake, msgs = asyncio.run(run())
    # Time: strictly increasing; across the seam one mean gap (10 ms), not a jump back.
    t = [m["local_ts_ns"] for m in msgs]
    assert all(b - a == 10_000_000 for a, b in zip(t, t[1:])), t
    # Price: each pass starts where the previous one ended (+0.3 per pass).
    snaps = [m for m in msgs if m.get("type") == "snapshot" and m["topic"].startswith("orderbook")]
    assert [s["data"]["b"][0][0] for s in snaps] == ["100.0", "100.30", "100.60"]
    trades = [m["data"][0] for m in msgs if m["topic"].startswith("publicTrade")]
    assert [Decimal(x["p"]) for x in trades] == [Decimal("100.1"), Decimal("100.4"), Decimal("100.7")]
    # Ids and sequence numbers never repeat.
    assert len({x["i"] for x in trades}) == 3
    us = [m["data"]["u"] for m in msgs if m["topic"].startswith("orderbook")]
    assert us == sorted(us) and len(set(us)) == len(us)
    assert fake.engine.book.best_bid()[0] == Decimal("100.9") and fake.passes == 2  # the third is under way


def test_fake_plain_loop_jumps_back_to_the_first_price(small_recording):
    """The contrast that makes the seamless loop necessary: ``loop=True`` replays the same prices."""
    from tools.fake_bybit.server import _iter_recording

    def plain():
        while True:
            yield from _iter_recording(small_recording)

    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", loop=True, paused=True)
        return await _replayed(fake, plain(), 6)

    msgs = asyncio.run(run())
    assert msgs[3]["data"]["b"][0][0] == "100.0"  # back to the start: 0.3 below the last best bid
    assert msgs[1]["data"][0]["i"] == msgs[4]["data"][0]["i"]  # and the same trade id again


def test_fake_counts_what_it_broadcast_per_second_and_per_connection(small_recording):
    """``GET /__control/published`` and ``/stats``: the rows every public broadcast carried, by the
    second of the message's exchange time, equal what a subscriber received (subscription
    snapshots excluded: they are sent to one connection, not broadcast)."""
    import aiohttp

    async def run():
        fake = FakeBybit(recording=small_recording, symbol="BTCUSDT", seamless=True, paused=True)
        urls = await fake.start()
        got: list[dict] = []
        try:
            async with aiohttp.ClientSession() as s:
                await fake.step(1)  # the book exists before anyone subscribes
                ws = await s.ws_connect(urls["ws_public"])
                await ws.send_str(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]}))
                await asyncio.sleep(0.2)
                await fake.step(8)
                while True:
                    try:
                        m = await ws.receive(timeout=0.3)
                    except TimeoutError:
                        break
                    got.append(json.loads(m.data))
                await ws.close()
                await asyncio.sleep(0.1)
                async with s.get(urls["control"] + "/published") as r:
                    published = await r.json()
                async with s.get(urls["control"] + "/stats") as r:
                    stats = await r.json()
        finally:
            await fake.stop()
        return got, published, stats

    got, published, stats = asyncio.run(run())
    rows: dict[str, dict[str, int]] = {}
    for m in got:
        if m.get("type") == "snapshot" and m.get("topic", "").startswith("orderbook"):
            continue
        if m.get("topic", "").startswith("orderbook"):
            sec, n = str(m["ts"] // 1000), len(m["data"]["b"]) + len(m["data"]["a"])
            rows.setdefault(m["topic"], {})[sec] = rows.get(m["topic"], {}).get(sec, 0) + n
        elif m.get("topic", "").startswith("publicTrade"):
            for t in m["data"]:
                sec = str(t["T"] // 1000)
                rows.setdefault(m["topic"], {})[sec] = rows.get(m["topic"], {}).get(sec, 0) + 1
    assert rows and {t: {s: v[1] for s, v in by_s.items()} for t, by_s in published.items()} == rows
    (conn,) = stats["connections"]
    assert conn["closed_ms"] is not None and conn["user_agent"].startswith("Python")
    assert conn["sent_rows"] == {t: sum(v.values()) for t, v in rows.items()}
    assert stats["passes"] >= 2 and stats["open_orders"] == [] and stats["position_signed"] == "0"


# -- the CI soak ---------------------------------------------------------------------------------------

CI_FAULTS = "ws_drop@30s,freeze@70s:10s"


@pytest.fixture(scope="module")
def xrp_minute(tmp_path_factory) -> Path:
    """One generated minute of the default XRPUSDT feed (ob50 every 20 ms): a 2-minute soak crosses
    the seamless loop's seam twice."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("soakrec") / "XRPUSDT-1m.jsonl.gz"
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", "XRPUSDT", "--start",
                    "2024-12-01T07:30:00Z", "--minutes", "1", "--seed", "7", "--depth", "50", "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    return out


def test_soak_two_minutes_two_faults_passes_every_gate(tmp_path, xrp_minute):
    """`python -m tools.soak` end to end: 2 minutes of `mmbot live --env testnet` against the
    loopback exchange at real-time rate, a WebSocket drop and a 10-second frozen exchange, samples
    every 10 s; exit 0 and every gate in the report holds."""
    import subprocess
    import sys

    out = tmp_path / "soak"
    r = subprocess.run([sys.executable, "-m", "tools.soak", "--duration", "2m", "--sample-every", "10s",
                        "--faults", CI_FAULTS, "--recording", str(xrp_minute), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    rep = json.loads((out / "soak_report.json").read_text())
    failed = [g for g in rep["gates"] if g["applicable"] and not g["holds"]]
    # the failed gates in full (their detail names the samples or episodes): a CI log is all there is
    assert r.returncode == 0 and rep["ok"], f"exit {r.returncode}\n{json.dumps(failed, indent=1)[:6000]}\n" \
        f"notes: {rep['notes']}\n{r.stderr[-2000:]}"
    gates = {g["name"]: g for g in rep["gates"]}
    # The correctness gates judge this run and hold.
    for name in ("node", "state_mismatch", "orders_left", "recorder"):
        assert gates[name]["applicable"] and gates[name]["holds"], gates[name]
    # The performance gates need a long run (a p99 of ~100 orders per 30-second quarter is the
    # machine's worst hiccup; a 90-second RSS slope is the warm-up): computed, reported, not counted.
    # (No timing assertion here: their bounds are proven on synthetic series below and by `make soak`.)
    for name in ("rss_slope", "p99_growth"):
        assert not gates[name]["applicable"] and "not measurable" in gates[name]["detail"]["note"], gates[name]
        assert gates[name]["value"] is not None
    for ext in ("json", "md", "html", "png"):
        assert (out / f"soak_report.{ext}").stat().st_size > 0
    assert "data:image/png;base64," in (out / "soak_report.html").read_text()
    assert {g["name"] for g in rep["gates"]} == {"node", "rss_slope", "state_mismatch", "orders_left", "p99_growth",
                                                  "recorder"}
    # The faults happened: both applied by the exchange, the drop made every client reconnect.
    assert [f["text"] for f in rep["faults"]] == CI_FAULTS.split(",")
    assert all(a["answer"]["ok"] for f in rep["faults"] for a in f["applied"])
    opened = {}
    for c in rep["exchange_after_stop"]["connections"]:
        opened[c["stream"]] = opened.get(c["stream"], 0) + 1
    assert opened["public"] >= 4 and opened["private"] >= 2 and opened["trade"] >= 2, opened
    # Samples every 10 s (13, t = 0..120) with the series the issue asks for.
    assert len(rep["samples"]) == 13
    last = rep["samples"][-1]
    for key in ("rss_mb", "cpu_ms_per_book_msg", "tick_to_order_p50_ms", "tick_to_order_p99_ms", "open_orders_node",
                "open_orders_exchange", "position_node", "position_exchange", "balance_node", "balance_exchange",
                "guards", "recorder", "ws_reconnects", "connections_opened"):
        assert last.get(key) is not None, key
    # The checks compared real things: the node and the exchange saw the same fills, the recorder
    # held every broadcast row over most of the run, the seam was crossed.
    tl = rep["timeline"]
    if tl["fills_node"] != tl["fills_exchange"]:
        # Known, open (issue 17 note): an acceptance the private stream did not deliver reaches the
        # node only by Nautilus' periodic open-order check (open_check_interval_secs = 10 s); an
        # order sent in the last such interval before SIGTERM is settled by the stop's
        # reconciliation, after the recorder has stopped, so orders.jsonl lacks its fill. Only such
        # orders may be missing, and the position gates above hold.
        node_orders, _ = TL.node_view(TL.read_node_events(out / "recording" / "orders.jsonl"))
        exch_orders, _ = TL.exchange_view(json.loads((out / "exchange_state.json").read_text()))
        missing = set(exch_orders) - set(node_orders)
        sent = {json.loads(x)["client_order_id"]: json.loads(x)["ts_event_ns"]
                for x in (out / "recording" / "orders.jsonl").read_text().splitlines()
                if '"OrderSubmitted"' in x}
        stop_ns = int(rep["stop_wall_s"] * 1e9)
        assert missing and all(k in sent and stop_ns - sent[k] <= 10e9 for k in missing), (missing, tl)
        assert tl["fills_exchange"] - tl["fills_node"] <= len(missing)
    assert tl["fills_node"] > 0
    comp = rep["recorder"]["comparison"]
    compared = comp["book"]["seconds_compared"]  # a count of per-second buckets, not a timing
    assert compared >= 60 and comp["book"]["lost_rows"] == 0
    assert comp["trades"]["published_rows"] > 0 and comp["trades"]["lost_rows"] == 0
    assert rep["exchange_after_stop"]["passes"] >= 2 and rep["exchange_after_stop"]["open_orders"] == []


# -- the parts, on synthetic inputs (fast), and their mutants -------------------------------------------

import importlib.util  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

from tools.soak import gates as G  # noqa: E402
from tools.soak import recorder_check as RC  # noqa: E402
from tools.soak import schedule as SCH  # noqa: E402
from tools.soak import timeline as TL  # noqa: E402
from tools.soak.probes import GzLineCounter, histogram_quantile  # noqa: E402


def _mutant(module: str, old: str, new: str) -> types.ModuleType:
    """``module`` with one text replacement (which must match exactly once), as a fresh module."""
    spec = importlib.util.find_spec(module)
    src = Path(spec.origin).read_text()
    assert src.count(old) == 1, f"mutant text not found once in {module}: {old!r}"
    mod = types.ModuleType(module + "_mutant")
    mod.__file__ = spec.origin
    sys.modules[mod.__name__] = mod  # dataclasses look the module up
    try:
        exec(compile(src.replace(old, new), spec.origin, "exec"), mod.__dict__)
    finally:
        sys.modules.pop(mod.__name__, None)
    return mod


def _failing_rows(rows, mod) -> list[str]:
    out = []
    for name, fn, expected in rows:
        try:
            got = fn(mod)
        except Exception as e:  # noqa: BLE001 (a mutant may also crash)
            got = f"crash: {type(e).__name__}: {e}"
        if got != expected:
            out.append(name)
    return out


# Gates ------------------------------------------------------------------------------------------------

_T = [60.0 * k for k in range(61)]                     # 1 hour, a sample a minute
_FLAT = [400.0 + (0.5 if k % 2 else 0.0) for k in range(61)]   # allocator jitter, no trend
_LEAK = [400.0 + 10.0 * t / 3600 for t in _T]          # 10 MB/h
_WARM = [360.0 + min(t, 900.0) / 900 * 40 for t in _T]  # +40 MB in the first quarter, then flat
_SHRINK = [450.0 - 20.0 * t / 3600 for t in _T]
_TLINE = {"max_order_mismatch_s": 0.01, "max_position_mismatch_s": 0.005, "longest": []}


def _tl(order_s: float, pos_s: float) -> dict:
    return {**_TLINE, "max_order_mismatch_s": order_s, "max_position_mismatch_s": pos_s}


def _ns(t_s: float) -> int:
    return int(t_s * 1e9)


def _tl_eps(*eps: tuple[str, float, float]) -> dict:
    """A timeline whose episodes (what, start s, end s) are all listed (as compare lists those >= 0.5 s)."""
    rows = [{"what": w, "key": "O-1" if w == "order" else "position", "start_ns": _ns(a), "end_ns": _ns(b),
             "seconds": b - a, "detail": "exchange_only@open", "open_at_end": False} for w, a, b in eps]
    return {**_TLINE, "max_order_mismatch_s": max([b - a for w, a, b in eps if w == "order"], default=0.0),
            "max_position_mismatch_s": max([b - a for w, a, b in eps if w == "position"], default=0.0),
            "episodes": rows}


# A 10-second freeze at t = 78.5 s: queries sent up to its end are answered up to 10 s later.
_FREEZE = [(_ns(78.5), _ns(98.5))]


def _hist(values_ms: list[float]) -> dict[float, float]:
    edges = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf]
    return {e: float(sum(1 for v in values_ms if v / 1e3 <= e)) for e in edges}


# tick-to-order samples (ms): p99 (interpolated in the histogram's buckets) 3.75, 5.0, 17.5 ms
_LAT_1 = [0.8] * 1960 + [3.0] * 40
_LAT_15 = [0.8] * 1960 + [3.0] * 20 + [7.0] * 20
_LAT_3 = [0.8] * 1960 + [20.0] * 40
_CMP_CLEAN = {"book": {"lost_rows": 0, "seconds_compared": 3000, "differing_seconds": []}}
_CMP_LOST = {"book": {"lost_rows": 3, "seconds_compared": 3000, "differing_seconds": [{"second": 1}]}}
_CMP_NONE = {"book": {"lost_rows": 0, "seconds_compared": 0, "differing_seconds": []}}

GATE_ROWS = [
    ("RSS flat holds", lambda M: M.rss_slope_gate(_T, _FLAT, 3600).holds, True),
    ("RSS leaking 10 MB/h fails", lambda M: M.rss_slope_gate(_T, _LEAK, 3600).holds, False),
    ("RSS warm-up then flat holds", lambda M: M.rss_slope_gate(_T, _WARM, 3600).holds, True),
    ("RSS shrinking holds", lambda M: M.rss_slope_gate(_T, _SHRINK, 3600).holds, True),
    ("RSS 2-minute run not measurable", lambda M: M.rss_slope_gate([10.0 * k for k in range(13)], [300.0] * 13,
                                                                   120).applicable, False),
    ("order mismatch 9 s holds", lambda M: M.state_mismatch_gate(_tl(9.0, 0.0), [], 10.0).holds, True),
    ("order mismatch 11 s fails", lambda M: M.state_mismatch_gate(_tl(11.0, 0.0), [], 10.0).holds, False),
    ("position mismatch 11 s fails", lambda M: M.state_mismatch_gate(_tl(0.0, 11.0), [], 10.0).holds, False),
    # The 2-minute CI soak's case: an acceptance the node learns by the periodic check, which the
    # freeze held for 10 s (76.8 -> 89.4 s): 12.6 s, of which 10.9 s inside the freeze.
    ("order mismatch 12.6 s across a freeze holds",
     lambda M: M.state_mismatch_gate(_tl_eps(("order", 76.8, 89.4)), [], 10.0, None, _FREEZE).holds, True),
    ("order mismatch 12.6 s without a freeze fails",
     lambda M: M.state_mismatch_gate(_tl_eps(("order", 76.8, 89.4)), [], 10.0).holds, False),
    ("order mismatch 12 s after the freeze fails",
     lambda M: M.state_mismatch_gate(_tl_eps(("order", 100.0, 112.0)), [], 10.0, None, _FREEZE).holds, False),
    ("mismatch 35 s over a freeze: 15 s outside fails",
     lambda M: M.state_mismatch_gate(_tl_eps(("position", 63.5, 98.5)), [], 10.0, None, _FREEZE).holds, False),
    ("two overlapping freezes excuse their union once",
     lambda M: M.state_mismatch_gate(_tl_eps(("order", 70.0, 110.0)), [], 10.0, None,
                                     [(_ns(78.5), _ns(98.5)), (_ns(80.0), _ns(95.0))]).holds, False),
    ("balance off at one sample holds", lambda M: M.state_mismatch_gate(_tl(0, 0), [(0, 0.0), (60, 0.3), (120, 0.0)],
                                                                        10.0).holds, True),
    ("balance off at two samples fails", lambda M: M.state_mismatch_gate(_tl(0, 0), [(0, 0.0), (60, 0.3), (120, 0.3)],
                                                                         10.0).holds, False),
    ("balance rounding holds", lambda M: M.state_mismatch_gate(_tl(0, 0), [(0, 1e-9), (60, -1e-9)], 10.0).holds,
     True),
    ("shadow: mismatch not applicable", lambda M: M.state_mismatch_gate(None, [], 10.0).applicable, False),
    ("no order left holds", lambda M: M.orders_left_gate([], 0).holds, True),
    ("one order left fails", lambda M: M.orders_left_gate([{"orderLinkId": "O-1"}], 0).holds, False),
    ("exit 3 fails", lambda M: M.orders_left_gate([], 3).holds, False),
    ("shadow: open in cache fails", lambda M: M.orders_left_gate(None, 0, 2).holds, False),
    ("p99 x1.33 holds", lambda M: M.p99_growth_gate(_hist(_LAT_1), _hist(_LAT_15), histogram_quantile).holds, True),
    ("p99 x4.7 fails", lambda M: M.p99_growth_gate(_hist(_LAT_1), _hist(_LAT_3), histogram_quantile).holds, False),
    ("p99 of 100 orders not measurable", lambda M: M.p99_growth_gate(_hist(_LAT_1[:100]), _hist(_LAT_3[:100]),
                                                                     histogram_quantile).applicable, False),
    ("recorder clean holds", lambda M: M.recorder_gate({"ok": True}, _CMP_CLEAN).holds, True),
    ("recorder lost rows fails", lambda M: M.recorder_gate({"ok": True}, _CMP_LOST).holds, False),
    ("recorder nothing compared fails", lambda M: M.recorder_gate({"ok": True}, _CMP_NONE).holds, False),
    ("recorder strict import failed", lambda M: M.recorder_gate({"ok": False, "error": "gap"}, _CMP_CLEAN).holds,
     False),
    ("node clean holds", lambda M: M.node_gate(True, 0).holds, True),
    ("node died fails", lambda M: M.node_gate(False, 0).holds, False),
    ("node exit 5 fails", lambda M: M.node_gate(True, 5).holds, False),
]

GATE_MUTANTS = {
    "RSS bound ignored": ("slope < bound_mb_per_h", "slope < bound_mb_per_h * 100"),
    "RSS warm-up included": ("start = 0.25 * duration_s", "start = 0.0"),
    "RSS judged on any run": ("measurable = len(pts) >= MIN_RSS_SAMPLES and span >= MIN_RSS_WINDOW_S - 1e-6",
                              "measurable = len(pts) >= 2"),
    "RSS sign dropped": ("ok = measurable and math.isfinite(slope) and slope < bound_mb_per_h",
                         "ok = measurable and math.isfinite(slope) and abs(slope) < bound_mb_per_h"),
    "position mismatch ignored": ("longest = max(order_s, position_s)", "longest = order_s"),
    "mismatch bound x10": ("ok = longest <= bound and balance_ok", "ok = longest <= bound * 10 and balance_ok"),
    "freeze not excused": ("if not hold_windows_ns or not eps:", "if True:"),
    "whole episode excused": ("max(0, min(end_ns, b) - max(start_ns, a))", "end_ns - start_ns"),
    "windows not merged": ("for a, b in _merged(hold_windows_ns)", "for a, b in hold_windows_ns"),
    "balance ignored": ("balance_ok = best < 2", "balance_ok = True"),
    "balance on one sample": ("balance_ok = best < 2", "balance_ok = best < 1"),
    "balance tolerance 1 USDT": ("BALANCE_TOLERANCE_USDT = 1e-6", "BALANCE_TOLERANCE_USDT = 1.0"),
    "orders left ignored": ("ok = n == 0 and node_exit_code != 3", "ok = node_exit_code != 3"),
    "exit 3 ignored": ("ok = n == 0 and node_exit_code != 3", "ok = n == 0"),
    "p99 bound x10": ("ok = enough and math.isfinite(ratio) and ratio < bound",
                      "ok = enough and math.isfinite(ratio) and ratio < bound * 10"),
    "p99 judged on few orders": ("enough = n1 >= MIN_LATENCY_OBSERVATIONS and n4 >= MIN_LATENCY_OBSERVATIONS",
                                 "enough = True"),
    "recorder loss ignored": ("ok = lost == 0 and compared > 0", "ok = compared > 0"),
    "recorder empty comparison passes": ("ok = lost == 0 and compared > 0", "ok = lost == 0"),
    "recorder import failure ignored": ('if import_result is None or not import_result.get("ok"):',
                                        "if import_result is None:"),
    "node death ignored": ("ok = survived and exit_code == 0", "ok = exit_code == 0"),
}


def test_gates_on_synthetic_series():
    assert _failing_rows(GATE_ROWS, G) == []


@pytest.mark.parametrize("name", list(GATE_MUTANTS))
def test_gate_mutants_are_caught(name):
    old, new = GATE_MUTANTS[name]
    assert _failing_rows(GATE_ROWS, _mutant("tools.soak.gates", old, new)), f"mutant {name!r} passes every row"


# The order-state / position timeline ------------------------------------------------------------------

_S = 1_000_000_000  # ns


def _ev(kind: str, coid: str, t_s: float, **kw) -> dict:
    return {"kind": kind, "client_order_id": coid, "wall_ts_ns": int(t_s * _S), **kw}


def _order(link: str, created_s: float, status: str, updated_s: float) -> dict:
    return {"orderLinkId": link, "orderId": "x" + link, "createdTime": str(int(created_s * 1000)),
            "updatedTime": str(int(updated_s * 1000)), "orderStatus": status}


def _timeline(node_events: list[dict], orders: list[dict], execs: list[tuple[float, str, float]], tmp: Path,
              t_end: float = 100.0) -> dict:
    p = tmp / "orders.jsonl"
    p.write_text("".join(json.dumps(e) + "\n" for e in node_events))
    state = {"orders": orders, "executions": [{"execTime": str(int(t * 1000)), "side": side, "execQty": str(q)}
                                              for t, side, q in execs]}
    return TL.compare(p, state, 0, int(t_end * _S))


def _clean_run(tmp: Path) -> dict:
    ev = [_ev("OrderInitialized", "A", 10.0, quantity="200"), _ev("OrderSubmitted", "A", 10.001),
          _ev("OrderAccepted", "A", 10.003), _ev("OrderCanceled", "A", 20.002),
          _ev("OrderInitialized", "B", 30.0, quantity="200"), _ev("OrderAccepted", "B", 30.002),
          _ev("OrderFilled", "B", 40.003, side="BUY", qty=200.0)]
    return _timeline(ev, [_order("A", 10.002, "Cancelled", 20.0), _order("B", 30.001, "Filled", 40.0)],
                     [(40.0, "Buy", 200.0)], tmp)


def _late_accept(tmp: Path) -> dict:  # the private stream's New beat OrderSubmitted: the in-flight check found it
    ev = [_ev("OrderInitialized", "A", 10.0, quantity="200"), _ev("OrderSubmitted", "A", 10.001),
          _ev("OrderAccepted", "A", 17.0),
          _ev("OrderCanceled", "A", 20.002)]
    return _timeline(ev, [_order("A", 10.002, "Cancelled", 20.0)], [], tmp)


def _missed_cancel(tmp: Path) -> dict:  # the exchange cancelled at 20 s, the node learned at 32 s
    ev = [_ev("OrderInitialized", "A", 10.0, quantity="200"), _ev("OrderAccepted", "A", 10.003),
          _ev("OrderCanceled", "A", 32.0)]
    return _timeline(ev, [_order("A", 10.002, "Cancelled", 20.0)], [], tmp)


def _late_fill(tmp: Path) -> dict:  # a fill missed on the private stream, applied 11 s later
    ev = [_ev("OrderInitialized", "B", 30.0, quantity="200"), _ev("OrderAccepted", "B", 30.002),
          _ev("OrderFilled", "B", 51.0, side="BUY", qty=200.0)]
    return _timeline(ev, [_order("B", 30.001, "Filled", 40.0)], [(40.0, "Buy", 200.0)], tmp)


def _unseen_fill(tmp: Path) -> dict:  # never seen by the node before the end
    ev = [_ev("OrderInitialized", "B", 30.0, quantity="200"), _ev("OrderAccepted", "B", 30.002)]
    return _timeline(ev, [_order("B", 30.001, "Filled", 90.0)], [(90.0, "Sell", 200.0)], tmp)


def _fill_without_accept(tmp: Path) -> dict:  # the acceptance never came; a partial fill at 12 s opens it
    ev = [_ev("OrderInitialized", "C", 10.0, quantity="200"), _ev("OrderSubmitted", "C", 10.001),
          _ev("OrderFilled", "C", 12.0, side="BUY", qty=100.0), _ev("OrderFilled", "C", 92.0, side="BUY", qty=100.0)]
    return _timeline(ev, [_order("C", 10.002, "Filled", 92.0)], [(12.0, "Buy", 100.0), (92.0, "Buy", 100.0)], tmp)


def _timeline_rows(tmp: Path):
    def longest(f):
        return lambda M: (lambda r: (round(r["max_order_mismatch_s"], 3), round(r["max_position_mismatch_s"], 3)))(
            _with(M, f, tmp))
    return [
        ("clean run: only ms differences", longest(_clean_run), (0.003, 0.003)),
        ("late accept: 7 s exchange_only@open", lambda M: (lambda r: (round(r["max_order_mismatch_s"], 3),
                                                                     r["longest"][0]["detail"]))(_with(M, _late_accept, tmp)),
         (6.998, "exchange_only@open")),
        ("missed cancel: 12 s node_only@close", lambda M: (lambda r: (round(r["max_order_mismatch_s"], 3),
                                                                     r["longest"][0]["detail"]))(_with(M, _missed_cancel, tmp)),
         (12.0, "node_only@close")),
        ("late fill: 11 s position mismatch", longest(_late_fill), (11.0, 11.0)),
        ("fill without OrderAccepted opens the order (1-hour soak 2026-12-03: 82 s counted)",
         longest(_fill_without_accept), (1.998, 0.0)),
        ("unseen fill open at the end", lambda M: (lambda r: (round(r["max_position_mismatch_s"], 3),
                                                             [e["open_at_end"] for e in r["longest"]
                                                              if e["what"] == "position"]))(_with(M, _unseen_fill, tmp)),
         (10.0, [True])),
    ]


def _with(M, scenario, tmp):
    saved = TL.compare
    try:
        globals()["TL"] = M
        return scenario(tmp)
    finally:
        globals()["TL"] = sys.modules["tools.soak.timeline"]
        assert TL.compare is saved


TIMELINE_MUTANTS = {
    "SUBMITTED counted as open": ('if kind == "OrderAccepted" and opened.get(coid) is None',
                                  'if kind in ("OrderAccepted", "OrderSubmitted") and opened.get(coid) is None'),
    "a completing fill does not close": ("if coid in qty and filled[coid] >= qty[coid] - QTY_EPS",
                                         "if False and coid in qty"),
    "a fill never opens an order": ("            if opened.get(coid) is None and closed.get(coid) is None:\n                # A fill",
                                    "            if False:\n                # A fill"),
    "position never differs": ("differ = abs(pos[0] - pos[1]) > QTY_EPS", "differ = False"),
    "only node-side mismatches": ("if in_n != in_e:", "if in_n and not in_e:"),
    "exchange close time ignored": ('t1 = None if o.get("orderStatus") in EXCH_OPEN else int(o["updatedTime"]) * 1_000_000',
                                    "t1 = None"),
}


def test_timeline_on_synthetic_histories(tmp_path):
    assert _failing_rows(_timeline_rows(tmp_path), TL) == []


@pytest.mark.parametrize("name", list(TIMELINE_MUTANTS))
def test_timeline_mutants_are_caught(tmp_path, name):
    old, new = TIMELINE_MUTANTS[name]
    assert _failing_rows(_timeline_rows(tmp_path), _mutant("tools.soak.timeline", old, new)), name


# The recorder comparison ------------------------------------------------------------------------------

_PUB = {s: 50 for s in range(100, 111)}


def _rec(**changes) -> dict:
    return {**_PUB, **changes}


RECORDER_ROWS = [
    ("identical: nothing lost", lambda M: M.compare(_PUB, _rec(), 100.0, 111.0, [])["lost_rows"], 0),
    ("a second short outside windows", lambda M: M.compare(_PUB, _rec(**{"105": 0}) | {105: 47}, 100.0, 111.0,
                                                           [])["lost_rows"], 3),
    ("a loss inside a window is excused", lambda M: (lambda c: (c["lost_rows"], c["lost_rows_inside_windows"]))(
        M.compare(_PUB, _rec() | {104: 10, 106: 0}, 100.0, 111.0, [(104.4, 105.6)])), (0, 90)),
    ("partial first and last seconds not compared", lambda M: M.compare(
        _PUB, _rec() | {100: 20, 110: 5}, 100.5, 110.7, [])["lost_rows"], 0),
    ("extra rows are not losses", lambda M: (lambda c: (c["lost_rows"], c["extra_rows"]))(
        M.compare(_PUB, _rec() | {103: 52}, 100.0, 111.0, [])), (0, 2)),
    ("seconds compared", lambda M: M.compare(_PUB, _rec(), 100.0, 111.0, [(104.4, 105.6)])["seconds_compared"], 8),
]

RECORDER_MUTANTS = {
    "windows rounded inwards": ("out.update(range(math.floor(a), math.ceil(b) + 1))",
                                "out.update(range(math.ceil(a), math.floor(b)))"),
    "partial seconds compared": ("first, last = math.ceil(t_from), math.floor(t_to) - 1",
                                 "first, last = math.floor(t_from), math.floor(t_to)"),
    "losses not counted": ("lost += max(0, p - r)", "lost += 0"),
    "extra rows offset losses": ("lost += max(0, p - r)", "lost += p - r"),
}


def test_recorder_comparison_on_synthetic_counts():
    assert _failing_rows(RECORDER_ROWS, RC) == []


@pytest.mark.parametrize("name", list(RECORDER_MUTANTS))
def test_recorder_comparison_mutants_are_caught(name):
    old, new = RECORDER_MUTANTS[name]
    assert _failing_rows(RECORDER_ROWS, _mutant("tools.soak.recorder_check", old, new)), name


def test_recorder_snapshot_flag_is_nautilus():
    from nautilus_trader.model.enums import RecordFlag

    assert RC.F_SNAPSHOT == int(RecordFlag.F_SNAPSHOT)


# The schedule ------------------------------------------------------------------------------------------

def _sched(text: str, duration: float = 3600.0, mode: str = "live"):
    """The parsed faults, or ``"error: <message>"``."""
    def run(M):
        try:
            return [(f.kind, f.at_s, f.window_s, f.affects_public) for f in M.parse_schedule(text, duration, mode=mode)]
        except M.ScheduleError as e:
            return f"error: {e}"
    return run


def _err(text: str, part: str, **kw):
    """True when ``text`` is refused with a message containing ``part``."""
    run = _sched(text, **kw)
    return lambda M: (lambda got: True if isinstance(got, str) and part in got else got)(run(M))


SCHEDULE_ROWS = [
    ("default spreads five faults", _sched("default"),
     [("ws_drop", 360.0, 15.0, True), ("rate_limit", 1080.0, 30.0, False), ("freeze", 1800.0, 30.0, True),
      ("lost_ack", 2520.0, 15.0, False), ("ws_drop", 3060.0, 15.0, False)]),
    ("times, windows, params", _sched("ws_drop@10m:stream=public,freeze@50%:45s,rate_limit@20m:n=20:status=429"),
     [("ws_drop", 600.0, 15.0, True), ("rate_limit", 1200.0, 30.0, False), ("freeze", 1800.0, 45.0, True)]),
    ("none", _sched("none"), []),
    ("fake kinds", _sched("fake.gap_book@1m,fake.drop_private@2m:n=2"),
     [("fake.gap_book", 60.0, 10.0, True), ("fake.drop_private", 120.0, 10.0, False)]),
    ("window past the end", _err("ws_drop@59m:2m", "its window ends at 3660s, after the run (3600s)"), True),
    ("100 %", _err("ws_drop@100%", "'100%' must be >= 0% and < 100%"), True),
    ("negative time", _err("ws_drop@-5m", "'-5m': expected a duration such as 9"), True),
    ("unknown kind", _err("nonsense@1m", "unknown kind 'nonsense'"), True),
    ("no time", _err("ws_drop", "expected KIND@WHEN (e.g. ws_drop@10m or"), True),
    ("bad stream", _err("ws_drop@1m:stream=bogus", "stream='bogus': must be one of all, pub"), True),
    ("n = 0", _err("rate_limit@1m:n=0", "n=0: must be a whole number from 1 to 1"), True),
    ("bad status", _err("rate_limit@1m:status=500", "status=500: must be one of 200, 429, 403"), True),
    ("param of another kind", _err("ws_drop@1m:n=3", "unknown parameter(s) n for ws_drop"), True),
    ("nan window", _err("freeze@1m:nan", "'nan': expected a duration such as 90s, 2"), True),
    ("trigger", _err("fake.gap_book@1m:on=cancel", "'on' triggers are not scheduled faults"), True),
    ("empty item", _err("ws_drop@1m,,freeze@2m", "empty item (two commas, or a trailing comma)"), True),
    ("shadow: rate limit refused", _err("rate_limit@1m", "does not apply in --mode shadow (no or", mode="shadow"), True),
    ("shadow: private drop refused", _err("ws_drop@1m:stream=private", "does not apply in --mode shadow (no or", mode="shadow"), True),
    ("shadow: public faults", _sched("ws_drop@1m,freeze@2m", mode="shadow"),
     [("ws_drop", 60.0, 15.0, True), ("freeze", 120.0, 30.0, True)]),
]

SCHEDULE_MUTANTS = {
    "window end unchecked": ("if f.end_s > duration_s:", "if False:"),
    "shadow unchecked": ('if mode == "shadow":', "if False:"),
    "percent unbounded": ("if not (math.isfinite(pct) and 0 <= pct < 100):", "if not math.isfinite(pct):"),
    "stream unchecked": ('if "stream" in values and values["stream"] not in STREAMS:', "if False:"),
    "n unbounded": ('values["n"] < 1 or values["n"] > 10_000', 'values["n"] > 10_000'),
    "status unchecked": ('if "status" in values and values["status"] not in RATE_LIMIT_STATUSES:', "if False:"),
    "params of other kinds accepted": ("extra = set(values) - _ALLOWED[kind]", "extra = set()"),
    "private drop counted as public": ('return self.params.get("stream", "all") in ("all", "public")', "return True"),
    "freeze not public": ('if self.kind == "freeze":\n            return True', 'if self.kind == "freeze":\n            return False'),
    "triggers accepted": ('if "on" in values:', "if False:"),
}


def test_schedule_parsing():
    assert _failing_rows(SCHEDULE_ROWS, SCH) == []


@pytest.mark.parametrize("name", list(SCHEDULE_MUTANTS))
def test_schedule_mutants_are_caught(name):
    old, new = SCHEDULE_MUTANTS[name]
    assert _failing_rows(SCHEDULE_ROWS, _mutant("tools.soak.schedule", old, new)), name


def test_only_a_freeze_excuses_reconciliation_time():
    faults = SCH.parse_schedule("freeze@5m:30s,ws_drop@10m,lost_ack@15m,rate_limit@20m,fake.hold@25m:what=all",
                                3600.0)
    assert [f.holds_exchange for f in faults] == [True, False, False, False, False]


def test_schedule_steps_arm_and_clear_the_exchange_faults():
    (freeze,) = SCH.parse_schedule("freeze@60s:20s", 600)
    assert freeze.steps() == [(60.0, "inject", {"kind": "hold", "what": "all", "count": -1, "seconds": 20.0}),
                              (60.0, "inject", {"kind": "stale_book", "seconds": 20.0}),
                              (80.0, "clear", {"kind": "hold"})]
    (rl,) = SCH.parse_schedule("rate_limit@60s:n=5", 600)
    assert [s[1:] for s in rl.steps()] == [("inject", {"kind": "rate_limit", "count": 5, "http_status": 200}),
                                           ("inject", {"kind": "rate_limit", "count": 5, "ws": True}),
                                           ("clear", {"kind": "rate_limit"})]
    (fk,) = SCH.parse_schedule("fake.delay_cancel@60s:n=2:seconds=1.5", 600)
    assert fk.steps() == [(60.0, "inject", {"kind": "delay_cancel", "count": 2, "seconds": 1.5})]
    from tools.fake_bybit.faults import KINDS

    for f in SCH.parse_schedule("default", 3600):  # every fault the soak arms is one the exchange knows
        assert {b["kind"] for _, a, b in f.steps() if a == "inject"} <= KINDS


# Probes -------------------------------------------------------------------------------------------------

def test_histogram_quantile_interpolates_like_promql():
    h = {0.001: 50.0, 0.0025: 90.0, 0.005: 100.0, math.inf: 100.0}
    assert histogram_quantile(h, 0.5) == pytest.approx(0.001)
    assert histogram_quantile(h, 0.7) == pytest.approx(0.001 + 0.0015 * 20 / 40)
    assert histogram_quantile(h, 0.99) == pytest.approx(0.0025 + 0.0025 * 9 / 10)
    assert math.isnan(histogram_quantile({0.001: 0.0, math.inf: 0.0}, 0.99))
    assert histogram_quantile({0.001: 0.0, math.inf: 5.0}, 0.99) == 0.001  # in +Inf: the last finite edge


def test_gz_line_counter_reads_only_complete_members(tmp_path):
    import gzip

    p = tmp_path / "X.jsonl.gz"
    c = GzLineCounter(p)
    assert c.update() == 0
    m1, m2 = gzip.compress(b"a\nb\n"), gzip.compress(b"c\n")
    p.write_bytes(m1 + m2[:5])  # the second member is being written
    assert c.update() == 2
    p.write_bytes(m1 + m2)
    assert c.update() == 3 and c.update() == 3


# The CLI refuses bad input: one line, exit 2, nothing created ------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--duration", "1h", "--symbols", "4"], "--symbols 4: expected 1..3"),
    (["--duration", "1h", "--symbols", "0"], "--symbols 0: expected 1..3"),
    (["--duration", "1h", "--symbols", "XRPUSDT,ETHUSDT"], "unknown symbol 'ETHUSDT'"),
    (["--duration", "1h", "--symbols", "XRPUSDT,xrpusdt"], "a symbol is listed twice"),
    (["--duration", "1h", "--symbols", "BTCUSDT"], "a list needs 2 or more symbols"),
    (["--duration", "1h", "--symbols", "2", "--recording", "config/testnet.toml"], "--recording with --symbols 2"),
    (["--duration", "1h", "--symbols", "2", "--config", "config/portfolio.toml"], "has a [portfolio]"),
    (["--duration", "1h", "--symbols", "2", "--set", "strategy.level_size=-1"], "--set strategy.level_size=-1"),
    (["--duration", "1h", "--faults", "ws_drop@70m"], "after the run"),
    (["--duration", "1h", "--set", "strategy.level_size=-1"], "--set strategy.level_size=-1"),
    (["--duration", "1m", "--sample-every", "30s"], "fewer than 4 samples"),
    (["--duration", "1h", "--gate", "bogus=1"], "--gate 'bogus=1'"),
    (["--duration", "1h", "--gate", "p99_ratio=nan"], "must be a finite number > 0"),
    (["--duration", "nan"], "--duration 'nan'"),
    (["--duration", "1h", "--recording", "/nonexistent.jsonl.gz"], "no such file"),
    (["--duration", "1h", "--mode", "shadow", "--faults", "lost_ack@5m"], "does not apply in --mode shadow"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, message):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tools.soak", *args, "--out", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


def test_cli_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    r = subprocess.run([sys.executable, "-m", "tools.soak", "--duration", "1h", "--out", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not an empty directory" in r.stderr and sorted(p.name for p in tmp_path.iterdir()) == [
        "old.txt"]


def test_default_recording_is_cached_as_a_readable_gzip(tmp_path, monkeypatch):
    """The cached default feed is written under a temporary name and renamed: the temporary name must
    keep the ``.jsonl.gz`` suffix, or ``write_recording`` writes plain text that the exchange cannot
    read (it happened: the first 1-hour soak replayed nothing)."""
    import gzip

    from tools.soak import run as R

    monkeypatch.setattr(R, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(R, "DEFAULT_FEED", {**R.DEFAULT_FEED, "minutes": 0.05})
    path = R.default_recording()
    with gzip.open(path, "rt") as fh:
        assert json.loads(fh.readline())["topic"] == "orderbook.50.XRPUSDT"
    assert R.recording_symbol(path) == "XRPUSDT"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temporary left


def test_regate_judges_a_finished_report_with_the_current_state_mismatch_gate():
    """`python -m tools.soak.regate DIR` (a run made before the freeze fix): the acceptance episode
    across the freeze is re-judged on the report's own timeline and fault list; as-run kept."""
    from tools.soak.regate import regate

    t0 = 1000.0
    ok_gate = {"name": "node", "holds": True, "applicable": True, "value": 0, "bound": 0, "unit": "", "rule": ""}
    old = {"name": "state_mismatch", "holds": False, "applicable": True, "value": 12.6, "bound": 10.0, "unit": "s",
           "rule": "", "detail": {}}
    freeze = SCH.parse_schedule("freeze@70s:10s", 120.0)[0].to_json()
    rep = {"ok": False, "mode": "live", "ready_wall_s": t0, "reconciliation_interval_s": 10.0, "faults": [freeze],
           "samples": [{"t_s": 0.0, "balance_node": 5.0, "balance_exchange": 5.0}],
           "timeline": _tl_eps(("order", t0 + 68.3, t0 + 80.9)), "gates": [ok_gate, old]}
    out = regate(rep)
    g = {x["name"]: x for x in out["gates"]}["state_mismatch"]
    assert out["ok"] and g["holds"] and abs(g["value"] - 1.7) < 1e-6, g
    assert out["regated"]["as_run"] == {"ok": False, "state_mismatch": {"holds": False, "value": 12.6, "bound": 10.0}}
    # The same episode 12 s after the freeze's held time still fails.
    rep["timeline"] = _tl_eps(("order", t0 + 100.0, t0 + 112.0))
    assert not regate(rep)["ok"]
    # A portfolio soak (--symbols N > 1: "timelines", "timeline" None) is re-judged per instrument.
    multi = {**rep, "timeline": None, "timelines": {"XRPUSDT": _tl(0.0, 0.0),
                                                    "BTCUSDT": _tl_eps(("order", t0 + 68.3, t0 + 80.9))}}
    g = {x["name"]: x for x in regate(multi)["gates"]}["state_mismatch"]
    assert g["holds"] and g["applicable"] and g["detail"]["worst_instrument"] == "BTCUSDT", g
    multi["timelines"]["BTCUSDT"] = _tl_eps(("order", t0 + 100.0, t0 + 112.0))
    assert not regate(multi)["ok"]


# The balance re-read (probes.settle_balance) -----------------------------------------------------------

def _reads(*pairs):
    it = iter(pairs)
    return lambda: next(it, pairs[-1])


SETTLE_ROWS = [
    # A fill between the metrics scrape and /stats: gone at the next read.
    ("race settles", lambda P: P.settle_balance(_reads((10.0, 9.9), (9.9, 9.9)), 1e-6, 6, 0.0, sleep=lambda s: None)
     ["node"] - 9.9, 0.0),
    ("race: first diff kept", lambda P: round(P.settle_balance(_reads((10.0, 9.9), (9.9, 9.9)), 1e-6, 6, 0.0,
                                                               sleep=lambda s: None)["first_diff"], 9), 0.1),
    # A real drift never settles: the last read still differs, after every re-read.
    ("drift stays", lambda P: P.settle_balance(_reads((10.0, 9.9)), 1e-6, 6, 0.0, sleep=lambda s: None)["rechecks"],
     6),
    ("drift diff", lambda P: round((lambda r: r["node"] - r["exchange"])(
        P.settle_balance(_reads((10.0, 9.9)), 1e-6, 6, 0.0, sleep=lambda s: None)), 9), 0.1),
    ("agreeing: no re-read", lambda P: P.settle_balance(_reads((5.0, 5.0), (6.0, 5.0)), 1e-6, 6, 0.0,
                                                        sleep=lambda s: None)["rechecks"], 0),
    ("node not reconciled: no re-read", lambda P: P.settle_balance(_reads((math.nan, 5.0)), 1e-6, 6, 0.0,
                                                                   sleep=lambda s: None)["rechecks"], 0),
    ("unreadable: None", lambda P: P.settle_balance(lambda: None, 1e-6, 6, 0.0, sleep=lambda s: None)["node"], None),
    ("a NaN re-read keeps the drift seen", lambda P: (lambda r: r["node"] - r["exchange"])(P.settle_balance(
        _reads((5.5, 5.0), (math.nan, 5.0), (5.5, 5.0)), 1e-6, 6, 0.0, sleep=lambda s: None)), 0.5),
    ("sleeps between reads", lambda P: (lambda n: (P.settle_balance(_reads((1.0, 2.0)), 1e-6, 3, 0.5,
                                                                    sleep=n.append), n)[1])([]), [0.5, 0.5, 0.5]),
]

SETTLE_MUTANTS = {
    "never re-read": ("while pair is not None and used < attempts and", "while False and"),
    "one re-read fewer": ("used < attempts and", "used < attempts - 1 and"),
    "keep the first pair": ("        pair = nxt\n", "        pass\n"),
    "a NaN re-read replaces the drift": ("        if nxt is None or not (math.isfinite(nxt[0]) and math.isfinite(nxt[1])):\n",
                                         "        if nxt is None:\n"),
    "tolerance ignored": ("and abs(pair[0] - pair[1]) <= tolerance_usdt", "and abs(pair[0] - pair[1]) <= 1.0"),
}


def test_balance_reread_on_synthetic_reads():
    from tools.soak import probes as P

    assert _failing_rows(SETTLE_ROWS, P) == []


@pytest.mark.parametrize("name", list(SETTLE_MUTANTS))
def test_balance_reread_mutants_are_caught(name):
    old, new = SETTLE_MUTANTS[name]
    assert _failing_rows(SETTLE_ROWS, _mutant("tools.soak.probes", old, new)), f"mutant {name!r} passes every row"


def test_soak_interrupted_stops_the_node_and_the_exchange(tmp_path, xrp_minute):
    """SIGTERM (or Ctrl-C) to `python -m tools.soak` mid-run: the node gets its normal stop, the
    exchange is stopped, a report is written that does not pass, exit 1. Before, the interrupt
    escaped the sampling loop and left `mmbot live` quoting, orphaned, with no report."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "soak"
    p = subprocess.Popen([sys.executable, "-m", "tools.soak", "--duration", "2m", "--sample-every", "10s",
                          "--faults", "none", "--recording", str(xrp_minute), "--out", str(out)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:  # the first sample: the node is up and quoting
            if line.startswith("soak: t=0s"):
                break
        p.send_signal(signal.SIGTERM)
        rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    deadline = time.time() + 10
    while time.time() < deadline and _procs_under(out):
        time.sleep(0.5)
    left = _procs_under(out)
    for pid in left:  # never leave an orphan quoting after the test
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a process of the soak outlived it"
    rep = json.loads((out / "soak_report.json").read_text())
    assert p.returncode == 1 and not rep["ok"] and rep["interrupted_at_s"] is not None, (p.returncode, rest[1][-2000:])
    assert any("interrupted" in n for n in rep["notes"])


def _procs_under(out: Path) -> list[int]:
    """pids whose command line names ``out`` (the node's --set paths, the exchange's files)."""
    import os

    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(out) in cmd and int(d.name) != os.getpid():
                pids.append(int(d.name))
    return pids


# Several symbols (--symbols N > 1): per-instrument state_mismatch, per-symbol timelines ----------------

_XRP_TAG, _BTC_TAG, _DOGE_TAG = "O-20261203-200000-001-000-", "O-20261203-200000-001-001-", "O-20261203-200000-001-002-"

PER_INSTRUMENT_ROWS = [
    ("three clean instruments hold",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0.01, 0.0), "BTCUSDT": _tl(0.02, 0.0),
                                                     "DOGEUSDT": _tl(0.0, 0.003)}, [], 10.0).holds, True),
    ("the SECOND instrument's order mismatch 11 s fails (value and name the worst)",
     lambda M: (lambda g: (g.holds, g.value, g.detail["worst_instrument"]))(M.state_mismatch_per_instrument_gate(
         {"XRPUSDT": _tl(0.01, 0.0), "BTCUSDT": _tl(11.0, 0.0)}, [], 10.0)), (False, 11.0, "BTCUSDT")),
    ("the THIRD instrument's position mismatch 11 s fails",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0.0, 0.0), "BTCUSDT": _tl(0.0, 0.0),
                                                     "DOGEUSDT": _tl(0.0, 11.0)}, [], 10.0).holds, False),
    ("an order no symbol claims, node-only 12 s, fails",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0.0, 0.0), "": _tl(12.0, 0.0)}, [],
                                                    10.0).holds, False),
    ("a freeze excuses the second instrument's episode",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0.0, 0.0), "BTCUSDT": _tl_eps(("order", 76.8, 89.4))},
                                                    [], 10.0, None, _FREEZE).holds, True),
    ("... and without the freeze it fails",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0.0, 0.0), "BTCUSDT": _tl_eps(("order", 76.8, 89.4))},
                                                    [], 10.0).holds, False),
    ("the account's balance off at two samples fails",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0, 0), "BTCUSDT": _tl(0, 0)},
                                                    [(0, 0.0), (60, 0.3), (120, 0.3)], 10.0).holds, False),
    ("the account's balance off at one sample holds",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0, 0), "BTCUSDT": _tl(0, 0)},
                                                    [(0, 0.0), (60, 0.3), (120, 0.0)], 10.0).holds, True),
    ("--gate state_mismatch_s=15 bounds every instrument",
     lambda M: M.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(0, 0), "BTCUSDT": _tl(12.0, 0)}, [], 10.0,
                                                    15.0).holds, True),
    ("shadow: not applicable", lambda M: M.state_mismatch_per_instrument_gate(None, [], 10.0).applicable, False),
    ("an instrument without any order (nothing compared) fails (hostile review 27 F7)",
     lambda M: M.state_mismatch_per_instrument_gate(
         {"XRPUSDT": {**_tl(0, 0), "orders_node": 9, "orders_exchange": 9},
          "BTCUSDT": {**_tl(0, 0), "orders_node": 0, "orders_exchange": 0}}, [], 10.0).holds, False),
]

PER_INSTRUMENT_MUTANTS = {
    "a gate reading only the first symbol": ("    for sym, tl in timelines.items():",
                                             "    for sym, tl in list(timelines.items())[:1]:"),
    "per instrument: position ignored": ('"worst_s": max(o_s, p_s),', '"worst_s": o_s,'),
    "per instrument: balance ignored": ("ok = bool(per) and worst_s <= bound and balance_holds",
                                        "ok = bool(per) and worst_s <= bound"),
    "per instrument: bound x10": ("ok = bool(per) and worst_s <= bound and balance_holds",
                                  "ok = bool(per) and worst_s <= bound * 10 and balance_holds"),
    "per instrument: the value is the first instrument's": (
        'worst_s = per[worst]["worst_s"] if worst is not None else math.nan',
        'worst_s = next(iter(per.values()))["worst_s"] if worst is not None else math.nan'),
    "per instrument: an instrument without orders passes": ("    ok = bool(per) and worst_s <= bound and balance_holds and not silent",
                                                            "    ok = bool(per) and worst_s <= bound and balance_holds"),
    "per instrument: freeze windows dropped": ("    windows = list(hold_windows_ns)\n    per: dict",
                                               "    windows = []\n    per: dict"),
}


def test_per_instrument_state_mismatch_gate_on_synthetic_timelines():
    assert _failing_rows(PER_INSTRUMENT_ROWS, G) == []


@pytest.mark.parametrize("name", list(PER_INSTRUMENT_MUTANTS))
def test_per_instrument_gate_mutants_are_caught(name):
    old, new = PER_INSTRUMENT_MUTANTS[name]
    assert _failing_rows(PER_INSTRUMENT_ROWS, _mutant("tools.soak.gates", old, new)), f"mutant {name!r} passes every row"


def _sym_order(link: str, sym: str, created_s: float, status: str, updated_s: float) -> dict:
    return {**_order(link, created_s, status, updated_s), "symbol": sym}


def _per_symbol(M, tmp: Path, node_events: list[dict], orders: list[dict], execs: list[tuple[str, float, str, float]],
                symbols=("XRPUSDT", "BTCUSDT", "DOGEUSDT"), t_end: float = 100.0) -> dict:
    p = tmp / "orders-multi.jsonl"
    p.write_text("".join(json.dumps(e) + "\n" for e in node_events))
    state = {"orders": orders, "executions": [{"symbol": sym, "execTime": str(int(t * 1000)), "side": side,
                                               "execQty": str(q)} for sym, t, side, q in execs]}
    return M.compare_per_symbol(p, state, 0, int(t_end * _S), list(symbols))


def _hidden_by_sum(M, tmp):
    """The node booked BTC +1 and XRP -1 that the exchange never executed (it cancelled both
    orders at the same instants): summed across symbols node 0 = exchange 0; per symbol 90 s each."""
    b, x = _BTC_TAG + "1", _XRP_TAG + "1"
    ev = [_ev("OrderInitialized", b, 5.0, quantity="1"), _ev("OrderAccepted", b, 5.0),
          _ev("OrderFilled", b, 10.0, side="BUY", qty=1.0),
          _ev("OrderInitialized", x, 5.0, quantity="1"), _ev("OrderAccepted", x, 5.0),
          _ev("OrderFilled", x, 10.0, side="SELL", qty=1.0)]
    r = _per_symbol(M, tmp, ev, [_sym_order(b, "BTCUSDT", 5.0, "Cancelled", 10.0),
                                 _sym_order(x, "XRPUSDT", 5.0, "Cancelled", 10.0)], [])
    return {k: round(v["max_position_mismatch_s"], 3) for k, v in r.items()}


def _two_symbols_clean(M, tmp):
    """BTC bought 1 and XRP sold 1 on both sides: per symbol nothing differs (summing the
    exchange's executions of every symbol into each would make both differ)."""
    b, x = _BTC_TAG + "2", _XRP_TAG + "2"
    ev = [_ev("OrderInitialized", b, 5.0, quantity="1"), _ev("OrderAccepted", b, 5.002),
          _ev("OrderFilled", b, 10.002, side="BUY", qty=1.0),
          _ev("OrderInitialized", x, 5.0, quantity="1"), _ev("OrderAccepted", x, 5.002),
          _ev("OrderFilled", x, 20.002, side="SELL", qty=1.0)]
    r = _per_symbol(M, tmp, ev, [_sym_order(b, "BTCUSDT", 5.0, "Filled", 10.0),
                                 _sym_order(x, "XRPUSDT", 5.0, "Filled", 20.0)],
                    [("BTCUSDT", 10.0, "Buy", 1.0), ("XRPUSDT", 20.0, "Sell", 1.0)])
    return {k: (round(v["max_order_mismatch_s"], 3), round(v["max_position_mismatch_s"], 3), v["fills_node"],
                v["fills_exchange"]) for k, v in r.items()}


def _never_reached_exchange(M, tmp):
    """A DOGE order the exchange never saw (the node had it open 10 s): its symbol from the
    strategy tag (002 = the third instrument), counted on DOGEUSDT."""
    d = _DOGE_TAG + "3"
    ev = [_ev("OrderInitialized", d, 10.0, quantity="500"), _ev("OrderAccepted", d, 10.0),
          _ev("OrderCanceled", d, 20.0)]
    r = _per_symbol(M, tmp, ev, [], [])
    return {k: round(v["max_order_mismatch_s"], 3) for k, v in r.items()}


def _per_symbol_rows(tmp: Path):
    return [
        ("BTC +1 and XRP -1 not hidden by a sum", lambda M: _hidden_by_sum(M, tmp),
         {"XRPUSDT": 90.0, "BTCUSDT": 90.0, "DOGEUSDT": 0.0}),
        ("each symbol's fills against that symbol's executions", lambda M: _two_symbols_clean(M, tmp),
         {"XRPUSDT": (0.002, 0.002, 1, 1), "BTCUSDT": (0.002, 0.002, 1, 1), "DOGEUSDT": (0.0, 0.0, 0, 0)}),
        ("an order never at the exchange: symbol from its strategy tag", lambda M: _never_reached_exchange(M, tmp),
         {"XRPUSDT": 0.0, "BTCUSDT": 0.0, "DOGEUSDT": 10.0}),
    ]


TIMELINE_PER_SYMBOL_MUTANTS = {
    "positions summed across symbols (the whole account per symbol)": (
        'out[sym] = compare_views([e for e in events if sym_of.get(e.get("client_order_id", "")) == sym], state,',
        "out[sym] = compare_views(events, {**state, \"executions\": exchange_state.get(\"executions\", [])},"),
    "every symbol's executions in each": (
        '"executions": [x for x in exchange_state.get("executions", []) if x.get("symbol") == sym]}',
        '"executions": list(exchange_state.get("executions", []))}'),
    "no strategy-tag fallback": (
        'out[coid] = symbols[int(tag)] if tag.isdigit() and int(tag) < len(symbols) else ""', 'out[coid] = ""'),
}


def test_timeline_per_symbol_on_synthetic_histories(tmp_path):
    assert _failing_rows(_per_symbol_rows(tmp_path), TL) == []


@pytest.mark.parametrize("name", list(TIMELINE_PER_SYMBOL_MUTANTS))
def test_timeline_per_symbol_mutants_are_caught(tmp_path, name):
    old, new = TIMELINE_PER_SYMBOL_MUTANTS[name]
    assert _failing_rows(_per_symbol_rows(tmp_path), _mutant("tools.soak.timeline", old, new)), name


def _metrics(rows: list[tuple[str, str, float]]) -> list:
    return [(name, {"environment": "testnet", "instrument": f"{sym}-LINEAR.BYBIT", **({"part": "unrealized"}
             if name == "mmbot_pnl_usdt" else {})}, v) for name, sym, v in rows]


def _balance_of(M, multi: bool, rows) -> float:
    s = types.SimpleNamespace(multi=multi, instrument_id="XRPUSDT-LINEAR.BYBIT")
    return M.Soak._account_balance_node(s, _metrics(rows))


# A portfolio node: each instrument's equity gauge = the account's balance 100,000 + its own unrealised.
_THREE = [("mmbot_equity_usdt", "XRPUSDT", 100_003.0), ("mmbot_pnl_usdt", "XRPUSDT", 3.0),
          ("mmbot_equity_usdt", "BTCUSDT", 99_999.0), ("mmbot_pnl_usdt", "BTCUSDT", -1.0),
          ("mmbot_equity_usdt", "DOGEUSDT", 100_000.5), ("mmbot_pnl_usdt", "DOGEUSDT", 0.5)]
NODE_BALANCE_ROWS = [
    ("portfolio: the account's balance once", lambda M: _balance_of(M, True, _THREE), 100_000.0),
    ("one instrument: as before", lambda M: _balance_of(M, False, _THREE[:2]), 100_000.0),
]
NODE_BALANCE_MUTANTS = {
    "equity summed over the instruments": ("        if not self.multi:\n            return _node_balance(",
                                           "        if True:\n            return _node_balance("),
}


def test_node_balance_of_a_portfolio_is_the_accounts_once():
    from tools.soak import run as R

    assert _failing_rows(NODE_BALANCE_ROWS, R) == []


@pytest.mark.parametrize("name", list(NODE_BALANCE_MUTANTS))
def test_node_balance_mutants_are_caught(name):
    old, new = NODE_BALANCE_MUTANTS[name]
    assert _failing_rows(NODE_BALANCE_ROWS, _mutant("tools.soak.run", old, new)), name


def test_portfolio_config_is_a_valid_portfolio_with_the_allocator_and_guard_on(tmp_path):
    """--symbols 3: the generated node config loads as a [portfolio] live config with each
    symbol's soak sizes and config/portfolio.toml's allocator and portfolio guard."""
    import tomllib

    from mmbot.live.node import load_live_config
    from tools.soak import run as R

    p = tmp_path / R.PORTFOLIO_CONFIG_NAME
    p.write_text(R.portfolio_config_text((REPO / "config/testnet.toml").read_text(), list(R.MULTI_SYMBOLS)))
    cfg, live = load_live_config(p, [], portfolio=True)
    assert cfg.portfolio.instruments == tuple(f"{s}-LINEAR.BYBIT" for s in R.MULTI_SYMBOLS)
    raw = tomllib.loads(p.read_text())
    ref = tomllib.loads((REPO / "config/portfolio.toml").read_text())
    assert raw["portfolio"]["allocator"] == ref["portfolio"]["allocator"] and raw["portfolio"]["allocator"]["enabled"]
    assert raw["risk"]["portfolio"] == ref["risk"]["portfolio"]
    ov = raw["portfolio"]["overrides"]
    assert ov["XRPUSDT-LINEAR.BYBIT"]["strategy"]["level_size"] == 200
    assert ov["DOGEUSDT-LINEAR.BYBIT"]["strategy"]["level_size"] == 500
    assert "instrument" not in raw["run"] and "run" not in ov["XRPUSDT-LINEAR.BYBIT"]
    assert live.open_check_interval_secs > 0


@pytest.mark.long
@pytest.mark.skipif(__import__("os").environ.get("MMBOT_LONG_TESTS") != "1",
                    reason="a 90-second 3-symbol soak (137 s in all, measured at load ~7): MMBOT_LONG_TESTS=1 runs it; "
                           "CI runs the 2-minute single-symbol soak above")
def test_soak_three_symbols_per_instrument_gates_and_report(tmp_path):
    """`python -m tools.soak --symbols 3` end to end: a [portfolio] node on XRPUSDT, BTCUSDT,
    DOGEUSDT against the loopback exchange serving all three on one account, a WebSocket drop and
    a frozen exchange; every gate holds, state_mismatch is judged per instrument, the samples and
    the report have per-instrument rows, the recorder is compared per symbol."""
    out = tmp_path / "soak"
    # CI_FAULTS: the drop at a 10-s sample whose next sample is 10 s later (a drop at 20 s is
    # followed by the 22.5-s quarter sample: a balance the dropped private stream delays by ~3 s
    # then counts at two consecutive samples 2.5 s apart)
    r = subprocess.run([sys.executable, "-m", "tools.soak", "--duration", "90s", "--symbols", "3", "--sample-every",
                        "10s", "--faults", CI_FAULTS, "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    rep = json.loads((out / "soak_report.json").read_text())
    failed = [g for g in rep["gates"] if g["applicable"] and not g["holds"]]
    assert r.returncode == 0 and rep["ok"], f"exit {r.returncode}\n{json.dumps(failed, indent=1)[:6000]}\n" \
        f"notes: {rep['notes']}\n{r.stderr[-2000:]}"
    syms = ["XRPUSDT", "BTCUSDT", "DOGEUSDT"]
    assert rep["symbols"] == 3 and [x["symbol"] for x in rep["instruments"]] == syms
    gates = {g["name"]: g for g in rep["gates"]}
    assert set(gates) == {"node", "rss_slope", "state_mismatch", "orders_left", "p99_growth", "recorder"}
    per = gates["state_mismatch"]["detail"]["per_instrument"]
    assert set(per) <= {*syms, ""} and set(syms) <= set(per) and "" not in per, per.keys()
    for sym in syms:  # every instrument traded, and its fills are the exchange's of that symbol
        row = next(x for x in rep["instruments"] if x["symbol"] == sym)
        assert row["fills_exchange"] > 0 and 0 <= row["fills_exchange"] - row["fills_node"] <= 2, row
        assert row["position_exchange_after_stop"] is not None
    # each instrument's metrics count its own fills only (before the fix each counted all of them)
    last = rep["samples"][-1]
    for row in rep["instruments"]:  # (the last sample is before the stop: at most the exchange's)
        assert 0 < last["instruments"][row["symbol"]]["fills"] <= row["fills_exchange"], (row, last["instruments"])
    assert all(last["instruments"][s].get("open_orders_exchange") is not None for s in syms)
    comp = rep["recorder"]["comparison"]
    assert set(comp) == {f"{k} {s}" for k in ("book", "trades") for s in syms}
    # every symbol's book rows were compared (how many depends on the machine's pace: not asserted) and none lost
    assert all(c["lost_rows"] == 0 for c in comp.values()) and all(comp[f"book {s}"]["published_rows"] > 0
                                                                  for s in syms)
    assert rep["exchange_after_stop"]["open_orders"] == []
    md = (out / "soak_report.md").read_text()
    assert "## Instruments" in md and all(f"| {s}-LINEAR.BYBIT |" in md for s in syms)
    assert (out / "node-config.toml").is_file()
