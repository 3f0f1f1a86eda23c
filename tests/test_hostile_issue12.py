"""Hostile review of issue 12 (fill fidelity): each test reproduces one defect found by attacking the
exchange-time simulator, the ledger/report, the funding import, the generator and the config
with bad days and bad inputs. Every test here FAILS on branch ``integrate`` (07624f4); its
docstring says what is expected and what happens instead. No production code was changed.

Scenario tests run the simulator on a low-level BacktestEngine (tests/queue_harness.py; times in
ms after T0, ``x`` exchange time = ts_event, ``r`` receive time = ts_init, BTCUSDT: 1 lot =
0.001 BTC, tick 0.1). CLI tests run ``mmbot backtest run`` on one minute of the embedded catalog.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from nautilus_trader.model.data import OrderBookDelta
from nautilus_trader.model.enums import AggressorSide

from adapters.sim.exec_client import SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from mmbot.backtest.ledger import RunLedger, RunLedgerConfig
from mmbot.cli.main import main
from mmbot.config.backtest import ConfigError, load_backtest_config
from mmbot.report import metrics as M
from tests.queue_harness import BUY, SELL, _ns, book, make_engine, run, snap, tr
from tests.test_strategy_scenarios import IID

S, B = AggressorSide.SELLER, AggressorSide.BUYER
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "backtest.toml"
ONE_MINUTE = ("--start", "2024-12-01T07:30:00Z", "--end", "2024-12-01T07:31:00Z")


def params(model="risk_averse", order_ms=0.0, amend_ms=0.0, cancel_ms=0.0, resp_ms=10.0, **kw):
    return SimParams(model=QueueModel(model, 3), latency=LatencyModel(
        order=Latency("constant", order_ms), amend=Latency("constant", amend_ms),
        cancel=Latency("constant", cancel_ms), response=Latency("constant", resp_ms)), **kw)


def book0(x=0, r=0, bid_lots=11):
    """Bid 100.0 with ``bid_lots`` lots, 99.9 deep; asks 100.1 and 100.5."""
    return snap(x, r, [(100.0, bid_lots / 1000), (99.9, 1.0)], [(100.1, 1.0), (100.5, 1.0)])


END = book(900, 900, (BUY, 99.9, 1.0))  # a last message so every alert before it fires


def run_with_ledger(actions, data, p):
    """``run`` plus the backtest's RunLedger actor on the same engine: (strategy, client, ledger)."""
    engine, client, strat = make_engine(actions, p)
    ledger = RunLedger(RunLedgerConfig(instrument_id=IID, purge_interval_s=0))
    engine.add_actor(ledger)
    flat = [d for m in data for d in m]
    engine.add_data([d for d in flat if isinstance(d, OrderBookDelta)])
    other = [d for d in flat if not isinstance(d, OrderBookDelta)]
    if other:
        engine.add_data(other, sort=True)
    engine.run()
    return strat, client, ledger


def cli(tmp_path, *args):
    return CliRunner().invoke(main, ["backtest", "run", *ONE_MINUTE, "--no-progress", "--out", str(tmp_path / "o"),
                                     "--set", "report.html=false", *args])


def assert_exit_2_one_line(r, needle: str) -> None:
    """The project's rule for bad input: exit 2, one line naming the key/file, no traceback."""
    text = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code == 2, (r.exit_code, repr(r.exception), text[-600:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text[-600:]
    assert needle in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# Simulator (adapters/sim/exec_client.py)
# ---------------------------------------------------------------------------------------------

def test_receive_clock_behind_exchange_clock_lets_our_order_jump_the_queue():
    """Data whose ts_init < ts_event (the recorder's clock a few ms behind Bybit's: NTP skew; the
    loaders keep such rows as they are). 50 lots join the 11 at our price at x=50; the strategy
    receives that message at r=40 and only then sends its 1-lot bid (entry latency 0). The order
    is stamped x = 40 + 0 and is applied BEFORE the x=50 message it reacted to: it queues behind
    11 lots instead of 61, and a 12-lot sell at x=70 fills it.

    Expected: an order sent after the strategy saw an event reaches the exchange after that event
    (ahead 61, no fill), as with r >= x. Actual: accepted with ts_event 40 < 50, filled 1 lot
    (a queue jump). Fix: arrival x = max(send + L_entry, latest ts_event received), or clamp
    ts_init >= ts_event on import (hftbacktest corrects negative feed latency the same way)."""
    place_on_receipt = [(40, lambda st: st.place("a", BUY, 100.0, 0.001))]
    data = [book0(), book(50, 40, (BUY, 100.0, 0.061)), tr(70, 70, 100.0, 0.012, S), END]
    s, c, _ = run(place_on_receipt, data, params())
    accepted = [e for e in s.events if e[1] == "accepted"]
    assert accepted and accepted[0][5] >= 50.0, s.events  # arrives after the message it reacted to
    assert s.fills("a") == [], (s.events, c.stats["fill_causes"])


def test_book_through_fills_more_than_the_liquidity_that_crossed():
    """Our 500-lot bid rests at 100.0. The bids at 100.0 are cancelled and ONE lot is offered at
    100.0 (book message at x=50): the book moved through our price with 1 lot. The loopback
    exchange (tools/fake_bybit/matching.py, ``_cross_fills``) fills min(crossing size, leaves) =
    1 lot and keeps 499 resting; the simulator fills all 500 lots ("filled in full at our
    price"), so backtest and loopback disagree, and an order of any size is filled by any touch
    (the XRP default config run on BTCUSDT: one 200 BTC = 13.4 M USDT bid filled at once).

    Expected: fill <= the opposite size at or through our price (1 lot), the rest rests.
    Actual: 500 lots filled by one 1-lot ask."""
    from tools.fake_bybit.matching import Engine, Instrument

    fake = Engine(Instrument("BTCUSDT", D("0.1"), D("0.001"), D("0.001"), D("1000"), D("5")),
                  maker_fee=D("0.0002"), taker_fee=D("0.00055"), balance=D("10000000"))
    fake.on_book("snapshot", {"b": [["100.0", "0.011"], ["99.9", "1.0"]], "a": [["100.1", "1.0"], ["100.5", "1.0"]],
                              "u": 1, "seq": 1})
    order, _ = fake.submit(side="Buy", order_type="Limit", qty=D("0.5"), price=D("100.0"), tif="PostOnly")
    fake.on_book("delta", {"b": [["100.0", "0"]], "a": [["100.0", "0.001"]], "u": 2, "seq": 2})
    assert order.leaves == D("0.499")  # the loopback exchange: 1 lot

    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.5))]
    data = [book0(), book(50, 50, (BUY, 100.0, 0.0), (SELL, 100.0, 0.001)), END]
    s, _, _ = run(acts, data, params())
    filled = sum(q for _, q in s.fills("a"))
    assert filled <= 0.001 + 1e-12, s.events


def test_post_only_order_crossing_our_own_resting_order_is_accepted():
    """Market 100.0 / 100.3. Our ask rests at 100.1 (inside the spread). Our post-only bid at 100.1
    arrives at x=20: on Bybit it would trade with our own resting ask (no self-match prevention
    by default), so PostOnly cancels it (EC_PostOnlyWillTakeLiquidity). The simulator checks only
    the market book, which never contains our orders: the bid is accepted, the two own orders
    rest locked at 100.1, and a sell at 100.1 (x=40) fills the bid while a buy at 100.1 (x=50)
    fills the ask: a wash trade that pays two maker fees and could never happen. With latency
    this arises from the strategy itself (a bid submit overtaking the amend that moves the ask).

    Expected: the bid is rejected post-only. Actual: accepted, then filled."""
    acts = [(0, lambda st: st.place("ask", SELL, 100.1, 0.001)), (20, lambda st: st.place("bid", BUY, 100.1, 0.001))]
    data = [snap(0, 0, [(100.0, 0.5), (99.9, 1.0)], [(100.3, 0.5), (100.4, 1.0)]), book(20, 20, (BUY, 99.9, 1.1)),
            tr(40, 40, 100.1, 0.001, S), tr(50, 50, 100.1, 0.001, B), END]
    s, _, _ = run(acts, data, params(resp_ms=0.0))
    assert ("rejected_post_only", "bid") in s.kinds(False), s.events
    assert s.fills("bid") == [], s.events


def test_exchange_events_in_the_last_response_latency_are_silently_dropped():
    """A sell trades through our bid at x=100; the data ends at 200 (so does the backtest: Nautilus
    fires no alert after the run's end). With response_latency_ms = 150 (the config allows up to
    60,000) the simulator applies an item only at x + L_resp = 250: never. The fill that happened
    at the exchange inside the window is not in the fills, not in the position, and no counter
    says anything was left unapplied (``_heap`` still holds it). With 60 s, the last minute of
    every run is dropped this way.

    Expected: items with x <= the run's end are applied at the end (or counted and reported).
    Actual: stats["fills"] == 0 and nothing counts the dropped items."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001))]
    data = [book0(), tr(100, 100, 99.9, 0.001, S), book(200, 200, (BUY, 99.9, 1.0))]
    _, c, _ = run(acts, data, params(resp_ms=150.0))
    dropped = {k: v for k, v in c.stats.items() if "pending" in k or "unapplied" in k or "dropped" in k}
    assert c.stats["fills"] == 1 or any(dropped.values()), (c.stats, len(c._heap))


# ---------------------------------------------------------------------------------------------
# Ledger and report (mmbot/backtest/ledger.py, mmbot/report/metrics.py)
# ---------------------------------------------------------------------------------------------

def test_order_closed_by_post_only_amend_reject_stays_in_the_own_quote_timeline():
    """An accepted bid at 100.0 is amended to 100.1 (= the best ask): the exchange cancels it
    (OrderRejected, due_post_only, issue 12 item 1.6). The ledger's quote timeline records OPEN at
    the accept but no CLOSE for OrderRejected, so ``own_quotes_at`` (equity.parquet's own_bid /
    own_ask and the report's price chart) shows the dead bid for the rest of the run. On the
    default hour 26 of the 43 rejected orders had been accepted: own_bid is above the mid in 3,519
    of 3,600 equity rows and own_ask below it in 2,367.

    Expected: no own bid after the reject (NaN at 20 ms and 800 ms). Actual: 100.0 forever."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001)), (10, lambda st: st.amend("a", px=100.1))]
    data = [book0(), book(10, 10, (BUY, 99.9, 1.0)), tr(30, 30, 99.9, 0.001, S), END]
    s, _, ledger = run_with_ledger(acts, data, params(resp_ms=0.0))
    assert s.kinds(False) == [("accepted", "a"), ("rejected_post_only", "a")]
    bids, _ = ledger.own_quotes_at(np.array([_ns(5), _ns(20), _ns(800)], dtype=np.int64))
    assert bids[0] == 100.0
    assert np.isnan(bids[1]) and np.isnan(bids[2]), bids


def test_book_stream_going_back_in_time_measures_spread_capture_after_the_fill():
    """Book message M1 (x=100) lifts the ask to 100.2 (mid 100.1); M2 is stamped x=90 (the book
    stream went back in time) and brings the ask down to our 100.0 bid. The simulator keeps the
    stream's order (x = max(90, 100) = 100) and fills us at ts_event 100 by M2. The ledger instead
    SORTS the mids by ts_event, so M2's mid (99.95, the book after our fill) lands before 100 and
    becomes the "mid strictly before the fill": issue 12 item 1.5 (spread capture from the book
    update that filled us) comes back whenever the stream regresses (counted in
    ``mid_ts_regressions``, but the figures are computed anyway).

    Expected: mid before the fill = M1's 100.1 (the book the bid rested in). Actual: 99.95."""
    acts = [(0, lambda st: st.place("a", BUY, 100.0, 0.001))]
    data = [book0(), book(100, 100, (SELL, 100.1, 0.0), (SELL, 100.2, 1.0)),
            book(90, 101, (SELL, 100.0, 0.5), (BUY, 100.0, 0.0)), END]
    _, _, ledger = run_with_ledger(acts, data, params())
    fills = ledger.fills_frame()
    assert fills["cause"].tolist() == ["book_through"] and fills["ts_event_ns"].tolist() == [_ns(100)]
    ts, px = ledger.mids("exchange")
    assert M.mid_before(fills["ts_event_ns"].to_numpy(), ts, px).tolist() == [pytest.approx(100.1)]


def test_coarse_equity_grid_reports_a_whole_hour_as_one_minute():
    """``report.equity_interval_ms`` is accepted up to 86,400,000 (one day), but the per-minute
    risk figures (worst/best minute, CVaR95, Sharpe per minute) are as-of lookups on that grid
    ("exact when the grid step divides 60 s"). A run that loses 1 USDT in fees every minute for
    an hour (constant mid) with a 1-hour grid reports a worst minute of -60 and 59 minutes of 0.
    On the default hour: worst minute -183.6 USDT with a 1 h grid against -6.05 with 1 s.

    Expected: minute figures independent of the grid (or steps that do not divide 60 s refused,
    or the figures NaN). Actual: worst minute -60 instead of -1."""
    t0 = 1_733_038_200_000_000_000
    minute = M.NS_PER_MINUTE
    ts = np.array([t0 + k * minute + 30 * M.NS_PER_SECOND for k in range(60)], dtype=np.int64)
    fills = pd.DataFrame({"ts_event_ns": ts, "side": ["BUY", "SELL"] * 30, "price": 100.0, "qty": 1.0, "fee": 1.0,
                          "liquidity": "MAKER", "trade_id": [f"T{k:03d}" for k in range(60)]})
    mid_ts, mid_px = np.array([t0 - 1], dtype=np.int64), np.array([100.0])
    end = t0 + 60 * minute
    worst = {}
    for step in (M.NS_PER_SECOND, 3_600 * M.NS_PER_SECOND):
        eq = M.equity_curve(fills, mid_ts, mid_px, t0, end, step_ns=step)
        worst[step] = M.risk_metrics(eq, t0, end, 100_000.0)["worst_minute_pnl"]
    assert worst[M.NS_PER_SECOND] == pytest.approx(-1.0)
    assert worst[3_600 * M.NS_PER_SECOND] == pytest.approx(-1.0) or np.isnan(worst[3_600 * M.NS_PER_SECOND]), worst


@pytest.mark.slow
def test_report_json_does_not_say_how_many_events_were_matched_out_of_exchange_order(tmp_path):
    """docs/queue_model.md: a market event received later than x + L_resp is applied in receive
    order and "counted in stats['late_events']"; with response_latency_ms = 0 EVERY event is
    (the receive-order matching issue 12 item 1.4 removed). None of the simulator's own counters
    (late_events, late_reordered, unknown_depth_joins, cancel_before_order, cancel_lost_race,
    amend_lost_priority) reaches report.json/md, so a user cannot tell an exchange-order run from
    a receive-order one, nor how many orders joined at unknown depth.

    Expected: report.json carries the late-event count (here > 0). Actual: no such key."""
    r = cli(tmp_path, "--set", "venue.response_latency_ms=0")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())

    def late_counts(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if "late" in k and isinstance(v, int) and not isinstance(v, bool):
                    yield v
                yield from late_counts(v)

    assert any(v > 0 for v in late_counts(rep["metrics"])), sorted(rep["metrics"])


# ---------------------------------------------------------------------------------------------
# Config, calibration and instrument fit (bad input -> one line, exit 2)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [("latency_ms_mean", 1e20), ("response_latency_ms", 1e300),
                                            ("extra_slippage_bps", 1e300)])
def test_calibration_file_numbers_have_no_upper_bound(tmp_path, key, value):
    """The [venue] keys are capped (latencies <= 60,000 ms, extra_slippage_bps <= 1000) but the
    calibration file that overrides them only checks finite >= 0. ``latency_ms_mean: 1e20``
    passes validation and the run dies with ``OverflowError: Python int too large to convert to
    C unsigned long`` in TestClock.set_time_alert_ns; ``extra_slippage_bps: 1e300`` dies with
    ``Money ... greater than MONEY_MAX`` at the first fill (exit 1, 50-80 line tracebacks).

    Expected: ConfigError naming the file and key when the config is loaded. Actual: accepted."""
    cal = {"latency_ms_mean": 1.0, "latency_ms_std": 0.0, "amend_latency_ms": 0.0, "cancel_latency_ms": 0.0,
           "extra_slippage_bps": 0.0, key: value}
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(cal))
    with pytest.raises(ConfigError, match=key):
        load_backtest_config(DEFAULT_CONFIG, [f"venue.calibration={json.dumps(str(f))}"])


def test_config_hash_ignores_the_calibration_file_content(tmp_path):
    """The calibration file overrides the [venue] latencies and slippage, but config_hash (the
    run folder's name, report.json's and mmbot_run.json's identity of the config) and
    config.resolved.json only hold its PATH: change the numbers in the file and the "same"
    config (same hash; config.resolved.json still shows the [venue] values it overrode) gives
    another result. Determinism is claimed per config hash.

    Expected: different calibration numbers -> different config_hash. Actual: equal."""
    f = tmp_path / "cal.json"
    cal = {"latency_ms_mean": 1.0, "latency_ms_std": 0.0, "amend_latency_ms": 0.0, "cancel_latency_ms": 0.0,
           "extra_slippage_bps": 0.0}
    item = f"venue.calibration={json.dumps(str(f))}"
    f.write_text(json.dumps(cal))
    h1 = load_backtest_config(DEFAULT_CONFIG, [item]).config_hash()
    f.write_text(json.dumps({**cal, "latency_ms_mean": 50.0, "extra_slippage_bps": 5.0}))
    h2 = load_backtest_config(DEFAULT_CONFIG, [item]).config_hash()
    assert h1 != h2


@pytest.mark.parametrize("item", ["venue.extra_slippage_bps=5", "venue.order_latency_ms=50",
                                  "venue.calibration=\"calibration.example.json\""])
def test_queue_simulator_keys_are_silently_ignored_with_the_nautilus_fill_model(item):
    """``--set venue.fill_model=nautilus --set venue.extra_slippage_bps=5`` runs and reports
    slippage 0.00 (Nautilus' matching engine never sees the key); an order latency of 50 ms or a
    calibration file are dropped the same way, and report.json's fill_model_params lists only
    queue_position and liquidity_consumption, so nothing says the explicit setting had no effect
    (the rule: nothing dropped silently).

    Expected: ConfigError naming the key (it applies only to the queue simulator).
    Actual: accepted and ignored."""
    with pytest.raises(ConfigError, match=item.split("=")[0]):
        load_backtest_config(DEFAULT_CONFIG, ["venue.fill_model=\"nautilus\"", item])


def test_leverage_below_one_passes_validation_and_crashes_the_run():
    """``venue.leverage`` is checked as > 0 and <= 1000, but Nautilus' account needs >= 1:
    ``--set venue.leverage=0.5`` is accepted and the run dies in ``set_default_leverage`` with
    ``ValueError: leverage was not >= 1`` (traceback, exit 1).

    Expected: ConfigError for venue.leverage. Actual: accepted."""
    with pytest.raises(ConfigError, match="venue.leverage"):
        load_backtest_config(DEFAULT_CONFIG, ["venue.leverage=0.5"])


@pytest.mark.slow
@pytest.mark.parametrize("item", ["strategy.min_half_spread_bps=1e300", "strategy.risk_aversion=1e300",
                                  "strategy.level_size=1e15"])
def test_strategy_numbers_without_upper_bound_crash_the_run(tmp_path, item):
    """[strategy] numbers are checked >= 0 / finite only. ``min_half_spread_bps`` (also k_vol,
    risk_aversion, horizon_s, level_spacing_bps) = 1e300 passes and the first book message dies
    in Price(): ``invalid value greater than PRICE_MAX``; level_size = max_position = 1e15 dies in
    Quantity() (QUANTITY_MAX). Exit 1 with a 60-line traceback from the hot path.

    Expected: exit 2, one line naming the key. Actual: traceback."""
    extra = ["--set", "strategy.max_position=1e15"] if "level_size" in item else []
    r = cli(tmp_path, "--set", item, *extra)
    assert_exit_2_one_line(r, item.split("=")[0])


@pytest.mark.slow
@pytest.mark.parametrize(("level_size", "max_position"), [("0.001", "0.01"), ("0.5", "10")])
def test_a_btc_sized_config_on_xrp_crashes_instead_of_one_line(tmp_path, level_size, max_position):
    """A config that fits BTCUSDT (level_size 0.001, max_position 0.01) run on the XRPUSDT catalog
    (size step 1 XRP; 0.5 XRP likewise rounds to 0 lots): MarketMaker.on_start raises ``ValueError: MarketMakerConfig does not fit
    XRPUSDT-LINEAR.BYBIT: level_size 0.001 is below the minimum order quantity 1.0`` inside the
    engine: exit 1 with a 56-line traceback, after the node was built.

    Expected: exit 2 and one line naming strategy.level_size and the instrument (the instrument
    is known before the replay: strategy_config_dict could check it). Actual: traceback."""
    r = cli(tmp_path, "--set", f"strategy.level_size={level_size}", "--set", f"strategy.max_position={max_position}")
    assert_exit_2_one_line(r, "level_size")


def _midstream_recording(path: Path) -> tuple[int, int]:
    """XRPUSDT ob50 recording: a snapshot at t0 (bids 1.9500 ... 1.9490 and asks 1.9501 ... 1.9511,
    5,000 XRP each), then a delta every 20 ms for 3 s that only resizes the DEEPEST level of each
    side, and one 100 XRP sell at 1.9500 at t0 + 2.5 s. Returns (t0, t0 + 3 s) in ns."""
    t0_ms = 1_733_038_200_000
    bids = [[f"{1.9500 - k * 0.0001:.4f}", "5000"] for k in range(11)]
    asks = [[f"{1.9501 + k * 0.0001:.4f}", "5000"] for k in range(11)]
    lines = [{"topic": "orderbook.50.XRPUSDT", "type": "snapshot", "ts": t0_ms, "cts": t0_ms,
              "data": {"s": "XRPUSDT", "b": bids, "a": asks, "u": 1000, "seq": 1}, "local_ts_ns": t0_ms * 10**6 + 1}]
    for k in range(1, 151):
        ts = t0_ms + 20 * k
        size = "5001" if k % 2 else "5000"
        lines.append({"topic": "orderbook.50.XRPUSDT", "type": "delta", "ts": ts, "cts": ts,
                      "data": {"s": "XRPUSDT", "b": [["1.9490", size]], "a": [["1.9511", size]], "u": 1000 + k, "seq": 1 + k},
                      "local_ts_ns": ts * 10**6 + 3_000_000})
        if k == 125:
            lines.append({"topic": "publicTrade.XRPUSDT", "type": "snapshot", "ts": ts + 5,
                          "data": [{"T": ts + 5, "s": "XRPUSDT", "S": "Sell", "v": "100", "p": "1.9500", "L": "MinusTick",
                                    "i": "00000000-0000-4000-8000-000000000001", "BT": False, "RPI": False, "seq": 9999}],
                          "local_ts_ns": (ts + 5) * 10**6 + 2_000_000})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return t0_ms * 10**6, (t0_ms + 3000) * 10**6


@pytest.mark.slow
def test_a_window_starting_between_snapshots_replays_against_a_partial_book(tmp_path):
    """``--start`` anywhere but at a snapshot: Nautilus replays the deltas from the start time
    only, so the book (the strategy's cache book AND the simulator's exchange book) holds only the
    levels updated since the start. Here the top levels never change after the snapshot, so from
    t0 + 1 s the book is 1.9490 / 1.9511 instead of 1.9500 / 1.9501: the strategy's 1.9500 bid
    is at a price "inside the visible range but absent" -> known size 0 -> FRONT of the queue,
    where 5,000 XRP really rest, and the 100 XRP sell at 1.9500 fills it. Replayed from t0 (same
    data, same trade) the bid queues behind the 5,000 and nothing fills. On the embedded hour a
    --start of 07:45 replays 15 minutes (until the 08:00 resubscribe snapshot) on such a book:
    30 of 50 levels per side after 10 s, 41 after 60 s, a wrong touch in the first messages.

    Expected: the window starts from the book as of its start (last snapshot + deltas before the
    start replayed, or the run refused/warned): the same 0 fills as from t0. Actual: a fill."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths

    rec = tmp_path / "XRPUSDT.jsonl"
    t0, t1 = _midstream_recording(rec)
    import_paths([rec], tmp_path / "cat", InstrumentRegistry())
    fills = {}
    for name, start in (("from_snapshot", t0), ("midstream", t0 + 1_000_000_000)):
        r = CliRunner().invoke(main, ["backtest", "run", "--catalog", str(tmp_path / "cat"), "--start", str(start),
                                      "--end", str(t1), "--no-progress", "--out", str(tmp_path / name),
                                      "--set", "report.html=false", "--set", "risk.enabled=false",
                                      "--set", "strategy.levels_per_side=1", "--set", "strategy.imbalance_cutoff=1.0",
                                      "--set", "venue.order_latency_ms=0"])
        assert r.exit_code == 0, (name, r.output, repr(r.exception))
        fills[name] = json.loads((tmp_path / name / "report.json").read_text())["metrics"]["counts"]["n_fills"]
    assert fills["from_snapshot"] == 0
    assert fills["midstream"] == fills["from_snapshot"], fills


@pytest.mark.slow
def test_a_window_without_any_data_crashes(tmp_path):
    """A window inside the catalog's range that holds no row (1 ms between two 20 ms book pushes;
    likewise a recording gap): the engine never starts the queue simulator, its account_id stays
    None, and run_backtest dies in ``engine.cache.account(qsim.account_id)`` with ``TypeError:
    'account_id' argument was None`` (exit 1, traceback).

    Expected: exit 0 with an empty report (0 fills), or exit 2 and one line saying the window has
    no data. Actual: traceback."""
    r = CliRunner().invoke(main, ["backtest", "run", "--start", "2024-12-01T07:45:00Z", "--end",
                                  "2024-12-01T07:45:00.001Z", "--no-progress", "--out", str(tmp_path / "o"),
                                  "--set", "report.html=false"])
    if r.exit_code == 2:
        assert_exit_2_one_line(r, "run.")
    else:
        assert r.exit_code == 0, (r.exit_code, repr(r.exception))


@pytest.mark.slow
def test_max_notional_per_order_is_not_enforced(tmp_path):
    """docs/risk.md: Nautilus' RiskEngine "already checks every order: ... maximum notional per
    order (max_notional_per_order)". In Nautilus 1.231 ``_check_orders_risk_for_account`` returns
    True for every margin account ("TODO: Determine risk controls for margin") before that
    check, and both the queue simulator's account and Bybit's are margin accounts: the limit is a
    no-op in backtest, shadow and live. Found by running the XRP default on BTCUSDT: a 200 BTC
    (13.4 M USDT) order filled under max_notional_per_order = 50,000.

    Expected with a 1 USDT cap: every ~390 USDT order denied, no fill. Actual: orders fill."""
    r = cli(tmp_path, "--set", "risk.engine.max_notional_per_order=1.0")
    assert r.exit_code == 0, r.output
    counts = json.loads((tmp_path / "o" / "report.json").read_text())["metrics"]["counts"]
    assert counts["n_fills"] == 0, counts


# ---------------------------------------------------------------------------------------------
# Funding import (adapters/bybit_funding.py, mmbot/catalog_store.py)
# ---------------------------------------------------------------------------------------------

def _funding_file(path: Path, rows: list[tuple[str, int]]) -> Path:
    body = {"retCode": 0, "retMsg": "OK", "time": 1,
            "result": {"category": "linear", "list": [{"symbol": "XRPUSDT", "fundingRate": r, "fundingRateTimestamp": str(t)}
                                                      for r, t in rows]}}
    path.write_text(json.dumps(body))
    return path


H8 = 8 * 3_600_000
DEC1 = 1_733_011_200_000  # 2024-12-01T00:00Z in ms


def test_funding_pages_given_newest_first_crash_the_import(tmp_path):
    """Bybit returns funding history newest first and is paged backwards (endTime), so the pages
    of a month are naturally named/ordered newest first. ``mmbot catalog import`` concatenates the
    rows of all files per instrument in argument order and hands them to Nautilus, which raises
    ``ValueError: Data should be monotonically increasing ... based on ts_init`` (exit 1, a
    traceback; the same for any two files of one kind given out of time order).

    Expected: both pages imported (sorted), or one line and exit 2. Actual: ValueError."""
    from adapters.instruments import InstrumentRegistry
    from adapters.problems import ImportRejected
    from mmbot.catalog_store import CatalogError, import_paths

    newer = _funding_file(tmp_path / "XRPUSDT_funding_p1.json", [("0.0002", DEC1 + 3 * H8)])
    older = _funding_file(tmp_path / "XRPUSDT_funding_p2.json",
                          [("0.000133", DEC1 + 2 * H8), ("0.000146", DEC1 + H8), ("0.000126", DEC1)])
    try:
        result = import_paths([newer, older], tmp_path / "cat", InstrumentRegistry())
    except (ImportRejected, CatalogError):
        return  # a one-line refusal is acceptable
    assert sum(w.rows for w in result.written.values()) == 4


def test_conflicting_funding_rate_for_one_settlement_in_two_files_is_imported_silently(tmp_path):
    """The funding importer's own rule: two rows for one settlement with different rates -> "the
    settlement's rate is unknown, so every row of it is dropped and reported (a guessed funding
    rate would be silent fiction)". It is applied per file only: page 1 says 16:00 = 0.000133,
    page 2 says 16:00 = 0.009 (68x). Both rows are imported, the import reports "problems: none",
    and the report later applies whichever comes last (``funding_payments``: "only the last is
    applied"). Same-rate overlaps of two pages are likewise stored twice without a word.

    Expected: a duplicate_timestamp problem for the 16:00 settlement (and it is not imported).
    Actual: 5 rows written, no problem."""
    from adapters.bybit_funding import DUPLICATE_TIMESTAMP
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths

    p1 = _funding_file(tmp_path / "XRPUSDT_funding_a.json",
                       [("0.000133", DEC1 + 2 * H8), ("0.000146", DEC1 + H8), ("0.000126", DEC1)])
    p2 = _funding_file(tmp_path / "XRPUSDT_funding_b.json", [("0.0002", DEC1 + 3 * H8), ("0.009", DEC1 + 2 * H8)])
    result = import_paths([p1, p2], tmp_path / "cat", InstrumentRegistry())
    kinds = {k for k, n in result.log.total().items() if n}
    assert DUPLICATE_TIMESTAMP in kinds, (result.log.total(), sum(w.rows for w in result.written.values()))


# ---------------------------------------------------------------------------------------------
# Generator (tools/gen_synthetic.py)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes", [-5.0, 0.0, float("inf")])
def test_generator_accepts_a_negative_zero_or_infinite_length(minutes):
    """``python -m tools.gen_synthetic --minutes -5`` (or 0) writes a one-message recording (the
    start snapshot) and exits 0; ``--minutes inf`` dies with ``OverflowError: cannot convert float
    infinity to integer`` (traceback, exit 1). ``--minutes nan`` and a bad --orders-per-s are
    already one-line errors.

    Expected: ValueError (argparse: one line, exit 2) for minutes <= 0 or not finite.
    Actual: -5 and 0 are accepted, inf raises OverflowError."""
    from tools.gen_synthetic import generate, parse_start

    with pytest.raises(ValueError, match="minutes"):
        list(generate("XRPUSDT", parse_start("2024-12-01T07:30:00Z"), minutes, 7))
