"""`mmbot calibrate` (mmbot/backtest/calibrate.py, docs/calibration.md).

Unit tests: the KS statistic, the order-event reader (quote segments, fills, acknowledgement
delays), the distributions and the measured latencies against hand-computed values; the
grid-then-refine search; the recorded book's mid. Recovery: a synthetic "live" session is a
backtest of generated XRPUSDT data with KNOWN simulator parameters whose order events are written
by the live recorder (adapters.recorder.RecorderActor, the layout of a live run directory); then
`mmbot calibrate` must find those parameters within the tolerance docs/calibration.md states and
justifies (latency_ms_mean +-3 ms, |log2(n_fit / n)| <= 0.4), and must follow when the session is
generated with other parameters (so the old answer is rejected)."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmbot.backtest import calibrate as C
from mmbot.cli.main import main

T0 = 1_717_372_800_000_000_000
MS = 1_000_000
S = 1_000_000_000


# -- KS ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "d"), [
    ([1, 2, 3], [2, 3, 4], 1 / 3),        # F_a - F_b = 1/3 at 1, 2 and 3
    ([1, 2], [3, 4], 1.0),                # disjoint
    ([1, 1, 2], [1, 2, 2], 1 / 3),        # ties: at 1, 2/3 vs 1/3
    ([1, math.inf], [1, 1], 0.5),         # the +inf atom (an unfilled quote): at 1, 1/2 vs 1
    ([0.5, 1.5, 2.5, 3.5], [1.0], 0.75),  # unequal sizes: at 1.0, 1/4 vs 1
    ([3, 1, 2], [2, 1, 3], 0.0),          # order does not matter
])
def test_ks_statistic_hand_computed(a, b, d):
    assert C.ks_statistic(a, b) == pytest.approx(d)
    assert C.ks_statistic(b, a) == pytest.approx(d)


def test_ks_statistic_empty_and_nan():
    assert C.ks_statistic([], []) == 0.0
    assert C.ks_statistic([1.0], []) == 1.0
    assert C.ks_statistic([1.0, math.nan], [1.0]) == 0.0  # NaN dropped


def test_ks_statistic_matches_a_brute_force_sup():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, rng.integers(1, 9)).astype(float)
        b = rng.integers(0, 6, rng.integers(1, 9)).astype(float)
        grid = np.arange(-1, 7)
        brute = max(abs(np.mean(a <= x) - np.mean(b <= x)) for x in grid)
        assert C.ks_statistic(a, b) == pytest.approx(brute)


# -- order events -> quotes, fills, acknowledgement delays --------------------------------------

def ev(kind, coid, t_ms, **kw):
    return {"kind": kind, "client_order_id": coid, "ts_event_ns": T0 + t_ms * MS, "ts_init_ns": T0 + t_ms * MS, **kw}


EVENTS = [
    ev("OrderInitialized", "A", 0, side="BUY", price="1.0000", quantity="10"),
    ev("OrderSubmitted", "A", 0),
    ev("OrderAccepted", "A", 10),
    ev("OrderInitialized", "B", 20, side="SELL", price="1.0003", quantity="10"),
    ev("OrderSubmitted", "B", 20),
    ev("OrderAccepted", "B", 32),
    ev("OrderFilled", "B", 62, side="SELL", price=1.0003, qty=4.0, fee=0.001, liquidity="MAKER", trade_id="t1"),
    ev("OrderPendingUpdate", "A", 100),
    ev("OrderUpdated", "A", 105, price="1.0001", quantity="10"),   # new price: a new quote
    ev("OrderFilled", "A", 305, side="BUY", price=1.0001, qty=10.0, fee=0.002, liquidity="MAKER", trade_id="t2"),
    ev("OrderPendingCancel", "B", 400),
    ev("OrderCanceled", "B", 402),
    ev("OrderInitialized", "C", 500, side="BUY", price="0.9999", quantity="10"),
    ev("OrderSubmitted", "C", 500),
    ev("OrderAccepted", "C", 510),
    ev("OrderPendingUpdate", "C", 590),
    ev("OrderUpdated", "C", 600, price="0.9999", quantity="5"),    # smaller size: keeps its queue place
]


def test_session_from_events_segments_fills_and_acks():
    s = C.session_from_events(EVENTS)
    seg = s.segments
    assert list(seg["client_order_id"]) == ["A", "B", "A", "C"]  # by start time
    assert list(seg["price"]) == [1.0, 1.0003, 1.0001, 0.9999]
    assert list((seg["start_ns"] - T0) // MS) == [10, 32, 105, 510]
    assert list((seg["end_ns"] - T0) // MS) == [105, 402, 305, 600]  # C: censored at the last event
    assert list(seg["first_fill_ns"] >= 0) == [False, True, True, False]
    assert seg["qty"].iloc[3] == 5.0
    assert list(C.queue_wait_ms(seg)) == [30.0, 200.0]
    assert list(s.ack_ms) == [10.0, 12.0, 10.0]
    assert list(s.amend_ack_ms) == [5.0, 10.0]
    assert list(s.cancel_ack_ms) == [2.0]
    assert list(s.fills["side"]) == ["SELL", "BUY"] and list(s.fills["qty"]) == [4.0, 10.0]
    assert (s.first_ns, s.last_ns) == (T0, T0 + 600 * MS)


def test_session_end_cuts_events():
    s = C.session_from_events(EVENTS, end_ns=T0 + 200 * MS)
    assert list((s.segments["end_ns"] - T0) // MS) == [105, 200, 200]  # A, B open at the cut, A's 2nd quote
    assert list(s.fills["client_order_id"]) == ["B"]


def test_read_order_events_skips_cut_off_line_and_names_bad_lines(tmp_path):
    f = tmp_path / "orders.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in EVENTS[:3]) + '\n{"kind": "OrderAcc')
    assert len(C.read_order_events(f)) == 3
    f.write_text('{"kind": "OrderAccepted"}\n')
    with pytest.raises(C.CalibrationInputError, match="line 1"):
        C.read_order_events(f)


# -- distributions ----------------------------------------------------------------------------

def book(ts_s, mids, md=None):
    return C.BookSeries(ts_ns=np.array([T0 + int(t * S) for t in ts_s], dtype=np.int64),
                        mid=np.array(mids, dtype=float),
                        md_latency_ms=np.array(md if md is not None else [0.0] * len(mids), dtype=float),
                        instrument_id="XRPUSDT-LINEAR.BYBIT")


def segments(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["client_order_id", "side", "price", "qty", "start_ns", "end_ns", "first_fill_ns"])


def test_fill_distance_and_probability_table():
    b = book([0, 1], [2.0, 2.0002])
    seg = segments([
        ("a", "BUY", 1.9998, 1, T0 + 10, T0 + 20, T0 + 15),           # 1 bps below the mid 2.0, filled
        ("b", "SELL", 2.0004, 1, T0 + 20, T0 + 30, -1),               # 2 bps above, not filled
        ("c", "BUY", 2.0001, 1, T0 + int(1.5 * S), T0 + 2 * S, T0 + 2 * S),  # (2.0002-2.0001)/2.0002 bps
        ("d", "BUY", 1.9990, 1, T0 - 1, T0 + 5, -1),                  # before the first mid: left out
    ])
    d = C.quote_distance_bps(seg, b)
    assert d[:3] == pytest.approx([1.0, 2.0, 1e4 * 0.0001 / 2.0002])
    assert math.isnan(d[3])
    fd = C.fill_distance_bps(seg, b)
    assert len(fd) == 3 and fd[0] == pytest.approx(1.0) and fd[1] == math.inf
    tab = C.fill_probability_table(seg, b, bucket_bps=1.0)
    assert tab.to_dict("list") == {"bucket_lo_bps": [0.0, 1.0, 2.0], "placed": [1, 1, 1], "filled": [1, 1, 0],
                                   "fill_prob": [1.0, 1.0, 0.0]}


def test_markouts_signed_and_cut_at_the_end_of_the_book():
    import pandas as pd

    b = book([0, 1, 5], [2.0, 2.0002, 1.9998])
    fills = pd.DataFrame({"ts_event_ns": [T0, T0 + S // 2], "client_order_id": ["a", "b"], "side": ["BUY", "SELL"],
                          "price": [2.0, 2.0], "qty": [1.0, 1.0], "fee": [0.0, 0.0]})
    assert list(C.markouts_bps(fills, b, 1)) == pytest.approx([1.0, -1.0])  # the mid rose 1 bps: good buy, bad sell
    assert list(C.markouts_bps(fills, b, 5)) == pytest.approx([-1.0])       # the sell's t+5 s is past the book


def test_measured_latencies_subtract_the_response_latency():
    s = C.session_from_events(EVENTS)  # acks 10, 12, 10 ms; amends 5, 10; cancel 2
    m = C.measured_latencies(s, book([0, 1], [2.0, 2.0], md=[3.0, 5.0]), 4.0)  # L_resp 4 ms; md mean 4, std 1
    assert m["latency_ms_mean"] == pytest.approx(32 / 3 - 4)
    assert m["latency_ms_std"] == pytest.approx(math.sqrt(8 / 9))  # a constant L_resp adds no variance
    assert m["amend_latency_ms"] == pytest.approx(3.5)
    assert m["cancel_latency_ms"] == 0.0  # 2 - 4 clipped at 0
    assert m["response_latency_ms"] == 4.0
    assert (m["md_latency_ms_mean"], m["md_latency_ms_std"]) == pytest.approx((4.0, 1.0))  # for information


def write_tiny_recording(rec: Path) -> None:
    """Two XRPUSDT book messages: mid 1.95305, then 1.9531; market-data latency 3 ms, then 4 ms."""
    ts = T0 // MS
    lines = [
        {"topic": "orderbook.50.XRPUSDT", "type": "snapshot", "ts": ts,
         "data": {"s": "XRPUSDT", "b": [["1.9530", "100"]], "a": [["1.9531", "100"]], "u": 1, "seq": 1},
         "local_ts_ns": T0 + 3 * MS},
        {"topic": "orderbook.50.XRPUSDT", "type": "delta", "ts": ts + 100,
         "data": {"s": "XRPUSDT", "b": [], "a": [["1.9531", "0"], ["1.9532", "50"]], "u": 2, "seq": 2},
         "local_ts_ns": T0 + 104 * MS},
    ]
    rec.write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_book_series_from_a_recording(tmp_path):
    rec = tmp_path / "XRPUSDT_2024-06-03.jsonl"
    write_tiny_recording(rec)
    b = C.book_series([rec])
    assert b.instrument_id == "XRPUSDT-LINEAR.BYBIT"
    assert list(b.mid) == pytest.approx([1.95305, 1.9531])
    assert list(b.md_latency_ms) == pytest.approx([3.0, 4.0])
    # the receive time of each message's last row (rows get ts_init + k)
    assert T0 + 3 * MS <= b.ts_ns[0] < T0 + 3 * MS + 10 and T0 + 104 * MS <= b.ts_ns[1] < T0 + 104 * MS + 10


def test_grid_refine_is_deterministic_and_refines():
    calls = []

    def f(x):
        calls.append(x)
        return (abs(x - 3.3),)

    res = C.grid_refine(f, 0.0, 10.0, points=6, halvings=2)
    # grid 0,2,...,10 -> best 4; step 1: 3, 5 -> best 3; step 0.5: 2.5, 3.5 -> best 3.5
    assert [round(x, 9) for x in calls] == [0, 2, 4, 6, 8, 10, 3, 5, 2.5, 3.5]
    assert C.best_of(res) == pytest.approx(3.5)
    # a plateau: the middle of the tied points, not its first end
    flat = C.grid_refine(lambda x: (0.0 if 2 <= x <= 6 else 1.0,), 0.0, 10.0, points=6, halvings=0)
    assert C.best_of(flat) == pytest.approx(4.0)
    logres = C.grid_refine(lambda n: (abs(math.log2(n) - 1.0),), 0.25, 8.0, points=6, halvings=0, log=True)
    assert [round(x, 6) for x, _ in logres] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]


# -- command line: bad input ------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, ["calibrate", *args])


def one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    out = str(tmp_path / "cal.json")
    assert "not a directory" in one_error_line(invoke("--live", str(tmp_path / "nope"), "--out", out))
    live = tmp_path / "live"
    (live / "recording").mkdir(parents=True)
    line = one_error_line(invoke("--live", str(live), "--out", out))
    assert "no orders.jsonl" in line and str(live) in line
    orders = live / "recording" / "orders.jsonl"
    orders.write_text("\n".join(json.dumps(e) for e in EVENTS if e["kind"] != "OrderFilled") + "\n")
    line = one_error_line(invoke("--live", str(live), "--out", out))
    assert "no fills" in line and str(orders) in line
    orders.write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n")
    line = one_error_line(invoke("--live", str(live), "--out", out))
    assert "no recording" in line and str(live / "recording") in line
    # A config whose strategy does not fit the recording's instrument: rejected before any backtest.
    write_tiny_recording(live / "recording" / "XRPUSDT_2024-06-03.jsonl")
    # (The default config is XRP-sized since the embedded default became XRPUSDT: a BTC-sized
    # level_size of 0.01 is set on the command line instead.)
    line = one_error_line(invoke("--live", str(live), "--out", out, "--set", "strategy.level_size=0.01"))
    assert "strategy: level_size 0.01" in line and "XRPUSDT-LINEAR.BYBIT" in line
    assert not (tmp_path / "cal.json").exists()


# -- recovery of known parameters -------------------------------------------------------------

CONFIG = """
[run]
instrument = "XRPUSDT-LINEAR.BYBIT"
seed = 42

[venue]
fill_model = "risk_averse"      # the configured simulator the fit is compared with
order_latency = "normal"
order_latency_ms = 10.0
order_latency_std_ms = 5.0

[strategy]
level_size = 10                 # XRP (qty step 1, min notional 5 USDT)
max_position = 500
fee_floor_enabled = false
min_half_spread_bps = 0.25      # half a tick from the mid: quote at the touch
k_vol = 0.0
levels_per_side = 3
level_spacing_bps = 0.5         # one tick
requote_threshold_bps = 1.0
min_time_in_book_ms = 250.0

[report]
html = false

[risk]
enabled = false
"""
MINUTES, DATA_SEED, LIVE_SEED = 5, 11, 7
LAT_TOL_MS, N_TOL_LOG2 = 3.0, 0.4  # docs/calibration.md, "Tolerance"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated XRPUSDT data (recording + catalog) and the test config."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools.gen_synthetic import generate, parse_start, write_recording

    root = tmp_path_factory.mktemp("calib")
    rec = root / "XRPUSDT_2024-06-03.jsonl.gz"
    write_recording(rec, generate("XRPUSDT", parse_start("2024-06-03T00:00:00Z"), MINUTES, DATA_SEED, 50))
    import_paths([rec], root / "catalog", InstrumentRegistry(), strict=True)
    cfg = root / "xrp.toml"
    cfg.write_text(CONFIG)
    return {"root": root, "recording": rec, "catalog": root / "catalog", "config": cfg}


def make_live_session(world, name: str, latency_ms: float, n: float) -> Path:
    """A 'live' run directory: recording/{SYMBOL}_{date}.jsonl.gz (the raw stream) and
    recording/orders.jsonl written by the live recorder's actor during a backtest with known
    prob_power n and order latency (normal, std 5 ms, simulator seed LIVE_SEED != the fit's)."""
    from mmbot.config.backtest import load_backtest_config

    live = world["root"] / name
    (live / "recording").mkdir(parents=True)
    shutil.copy(world["recording"], live / "recording")
    cfg = load_backtest_config(world["config"], [
        f'run.catalog="{world["catalog"]}"', 'venue.fill_model="prob_power"', f"venue.queue_power={n}",
        f"venue.order_latency_ms={latency_ms}", "venue.order_latency_std_ms=5.0", f"run.seed={LIVE_SEED}"])
    C.run_trial(cfg, live)
    return live


def calibrate(world, live: Path, name: str) -> dict:
    out = world["root"] / name / "calibration.json"
    r = CliRunner().invoke(main, ["calibrate", "--live", str(live), "--out", str(out),
                                  "--config", str(world["config"]), "--seed", "42"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    print(r.output)
    return json.loads(C.fit_report_path(out).read_text())


def close(rep: dict, latency_ms: float, n: float) -> bool:
    return (abs(rep["best"]["latency_ms_mean"] - latency_ms) <= LAT_TOL_MS
            and abs(math.log2(rep["best"]["queue_power"] / n)) <= N_TOL_LOG2)


@pytest.mark.slow
def test_calibrate_recovers_known_parameters_and_follows_a_shift(world):
    from adapters.sim.calibration import load_calibration

    live = make_live_session(world, "live-35ms-n2", 35.0, 2.0)
    with gzip.open(live / "recording" / "XRPUSDT_2024-06-03.jsonl.gz", "rt") as f:
        assert "local_ts_ns" in f.readline()
    first = json.loads((live / "recording" / "orders.jsonl").read_text().splitlines()[0])
    assert {"kind", "ts_event_ns", "ts_init_ns", "client_order_id", "wall_ts_ns"} <= set(first)

    rep = calibrate(world, live, "fit-a")
    assert close(rep, 35.0, 2.0), (rep["best"]["latency_ms_mean"], rep["best"]["queue_power"])
    assert rep["venue"] == {"fill_model": "prob_power", "queue_power": round(rep["best"]["queue_power"], 4)}
    cal = load_calibration(world["root"] / "fit-a" / "calibration.json")  # a valid calibration file
    assert cal.latency_ms_mean == pytest.approx(rep["best"]["latency_ms_mean"], abs=1e-3)
    assert abs(cal.latency_ms_std - 5.0) < 1.5  # measured from the acknowledgement delays
    assert rep["best"]["objective"] < rep["baseline"]["objective"]  # better than the configured simulator
    lo, hi = rep["identified"]["queue_power"]
    assert lo <= 2.0 <= hi
    objs = [r["objective_fills"] for r in rep["stage_queue"]]  # the fills do carry information about n
    assert max(objs) - min(objs) > 2 * rep["noise_floor"]["objective_fills"]
    assert not [p for p in (world["root"] / "fit-a").iterdir() if p.name.startswith(".")]  # atomic writes

    # The fit follows the truth: a session generated with other parameters gives another answer,
    # and the first answer is rejected by the tolerance.
    # A search that learnt nothing about n answers the middle of its range, sqrt(2): outside the
    # tolerance of both truths (log2 distance 0.5 and 0.82).
    shifted = make_live_session(world, "live-80ms-n0.8", 80.0, 0.8)
    rep2 = calibrate(world, shifted, "fit-b")
    assert close(rep2, 80.0, 0.8), (rep2["best"]["latency_ms_mean"], rep2["best"]["queue_power"])
    assert not close(rep2, 35.0, 2.0) and not close(rep, 80.0, 0.8)
