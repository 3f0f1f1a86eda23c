"""Pure queue model (adapters/sim/queue.py), latency draws and the calibration file: a table of
hand-computed scenarios per queue model, and hypothesis invariants."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim.calibration import CalibrationError, load_calibration, parse_calibration
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import Level, QueueModel

RA, P3, LOG = QueueModel("risk_averse"), QueueModel("prob_power", 3), QueueModel("prob_log")


def test_behind_share_formulas():
    # p = f(behind) / (f(behind) + f(ahead))
    assert P3.behind_share(6, 10) == pytest.approx(1000 / (1000 + 216))
    assert LOG.behind_share(6, 10) == pytest.approx(math.log(11) / (math.log(11) + math.log(7)))
    assert RA.behind_share(6, 10) == 0.0
    assert P3.behind_share(0, 0) == 0.0


# Level of 10 lots; we join with 2 lots (ahead 10); 10 more join behind (level 20); a trade of
# 4 at our price (ahead 6); the book shows 20 -> 16 (explained by the trade); 6 cancelled
# (16 -> 10); then trades of 5 and of 3 at our price.
#   risk_averse: ahead = min(6, 10) = 6;  trade 5: 6 > 5, no fill (ahead 1); trade 3: fill 2.
#   prob_power 3: p = 10^3/(10^3+6^3) = 0.822368, ahead = 6 - (1-p)*6 = 4.934211; trade 5:
#     0.066 lot left over, floor 0, no fill (ahead 0); trade 3: fill 2.
#   prob_log: p = ln 11/(ln 11 + ln 7) = 0.552025, ahead = 6 - 0.447975*6 = 3.312148;
#     trade 5: 1.688 left, fill 1; trade 3: fill the remaining 1.
@pytest.mark.parametrize(("model", "ahead_after_cancel", "fills"), [
    (RA, 6.0, [0, 2]),
    (P3, 6 - (1 - 1000 / 1216) * 6, [0, 2]),
    (LOG, 6 - (1 - math.log(11) / (math.log(11) + math.log(7))) * 6, [1, 1]),
])
def test_traded_then_cancelled_table(model, ahead_after_cancel, fills):
    lvl = Level(10.0)
    o = lvl.join("a", 2)
    assert o.ahead == 10.0
    lvl.on_book(model, 20.0)
    assert lvl.on_trade(4.0) == [] and o.ahead == 6.0
    lvl.on_book(model, 16.0)
    assert o.ahead == 6.0  # the decrease is the trade, already counted
    lvl.on_book(model, 10.0)
    assert o.ahead == pytest.approx(ahead_after_cancel)
    got = []
    for size in (5.0, 3.0):
        got.append(sum(q for _, q in lvl.on_trade(size)))
    assert got == fills


def test_level_deletion_caps_but_does_not_fill():
    lvl = Level(10.0)
    o = lvl.join("a", 2)
    lvl.on_book(P3, 0.0)
    assert o.ahead == 0.0 and o.leaves == 2  # no fill from a deletion
    assert [(x.key, q) for x, q in lvl.on_trade(1.0)] == [("a", 1)]  # partial fill


def test_own_orders_fifo_and_priority():
    lvl = Level(4.0)
    a = lvl.join("a", 2)
    b = lvl.join("b", 2)
    assert (a.ahead, b.ahead) == (4.0, 4.0)
    # trade 7: 4 market ahead, then a (2), then b gets 1
    assert [(x.key, q) for x, q in lvl.on_trade(7.0)] == [("a", 2), ("b", 1)]


def test_unknown_depth_level_reveal_and_hide():
    """docs/queue_model.md, "Unknown depth": joined while unknown, ahead = inf and no queue fill;
    revealed with S: ahead = min(ahead, S); hidden again: frozen, no queue fill; revealed: capped."""
    lvl = Level(0, known=False)
    a = lvl.join("a", 2)
    assert a.ahead == math.inf
    assert lvl.on_trade(5.0) == [] and a.ahead == math.inf and lvl.traded == 0.0
    lvl.reveal(50)
    assert a.ahead == 50 and lvl.known
    assert lvl.on_trade(10.0) == [] and a.ahead == 40
    lvl.hide()
    assert lvl.on_trade(100.0) == [] and a.ahead == 40
    lvl.reveal(60)
    assert a.ahead == 40  # min(40, 60): a level can only have shrunk ahead of us
    lvl.hide()
    lvl.reveal(0)
    assert a.ahead == 0 and [(o.key, q) for o, q in lvl.on_trade(1.0)] == [("a", 1)]


def test_size_increase_behind_does_not_move_us():
    lvl = Level(5.0)
    o = lvl.join("a", 1)
    lvl.on_book(P3, 50.0)
    assert o.ahead == 5.0


def test_latency_draws_are_seeded_and_non_negative():
    m1 = LatencyModel(order=Latency("normal", 10, 5), seed=7)
    m2 = LatencyModel(order=Latency("normal", 10, 5), seed=7)
    d1 = [m1.order_ns() for _ in range(50)]
    assert d1 == [m2.order_ns() for _ in range(50)] and min(d1) >= 0
    h = LatencyModel(order=Latency("histogram", bins=((1.0, 1.0), (3.0, 0.0))))
    assert {h.order_ns() for _ in range(20)} == {1_000_000}
    assert LatencyModel(order=Latency("constant", 2.5)).order_ns() == 2_500_000
    assert LatencyModel(response=Latency("constant", 7.5)).response_ns() == 7_500_000
    with pytest.raises(ValueError, match="response latency must be constant"):
        LatencyModel(response=Latency("normal", 5, 1))
    with pytest.raises(ValueError):
        Latency("gamma")
    with pytest.raises(ValueError):
        Latency("normal", -1)


GOOD = {"latency_ms_mean": 12.0, "latency_ms_std": 3.0, "amend_latency_ms": 10, "cancel_latency_ms": 8,
        "extra_slippage_bps": 0.2}


def test_calibration_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(GOOD))
    c = load_calibration(p)
    assert c.latency_ms_mean == 12.0 and c.response_latency_ms is None
    p.write_text(json.dumps({**GOOD, "response_latency_ms": 4}))
    assert load_calibration(p).response_latency_ms == 4.0


@pytest.mark.parametrize(("patch", "needle"), [
    ({"latency_ms_mean": -1}, "latency_ms_mean: must be >= 0"),
    ({"toxic_sweep_prob": 0.3}, "toxic_sweep_prob: removed: .*docs/queue_model.md"),
    ({"md_latency_ms": 3}, "md_latency_ms: removed: .*docs/queue_model.md"),
    ({"response_latency_ms": float("nan")}, "response_latency_ms: must be a finite number"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"amend_latency_ms": "x"}, "amend_latency_ms: must be a finite number"),
    ({"cancel_latency_ms": None}, "cancel_latency_ms"),
    # the [venue] bounds of the key each value overrides (inf and beyond the bound)
    ({"latency_ms_mean": 1e20}, r"latency_ms_mean: must be <= 60000 \(the bound of venue.order_latency_ms\)"),
    ({"latency_ms_mean": 60_000.001}, "latency_ms_mean: must be <= 60000"),
    ({"latency_ms_std": float("inf")}, "latency_ms_std: must be a finite number"),
    ({"amend_latency_ms": 1e300}, "amend_latency_ms: must be <= 60000"),
    ({"cancel_latency_ms": 60_001}, "cancel_latency_ms: must be <= 60000"),
    ({"response_latency_ms": float("inf")}, "response_latency_ms: must be a finite number"),
    ({"response_latency_ms": 1e300}, "response_latency_ms: must be <= 60000"),
    ({"extra_slippage_bps": 1000.5}, r"extra_slippage_bps: must be <= 1000 \(the bound of venue.extra_slippage_bps\)"),
    ({"extra_slippage_bps": float("-inf")}, "extra_slippage_bps: must be a finite number"),
])
def test_calibration_errors_name_the_key(patch, needle):
    with pytest.raises(CalibrationError, match=needle):
        parse_calibration({**GOOD, **patch})
    missing = dict(GOOD)
    del missing["extra_slippage_bps"]
    with pytest.raises(CalibrationError, match="extra_slippage_bps: missing"):
        parse_calibration(missing)


@pytest.mark.parametrize(("sets", "needle"), [
    (["venue.toxic_sweep_prob=0.3"], "--set venue.toxic_sweep_prob=0.3: venue.toxic_sweep_prob: removed: it filled our deeper orders"),
    (["venue.md_latency_ms=2"], "--set venue.md_latency_ms=2: venue.md_latency_ms: removed: feed latency comes from the data"),
    (["venue.response_latency_ms=-1"], "venue.response_latency_ms: must be a finite number >= 0"),
    (["venue.response_latency_ms=nan"], "venue.response_latency_ms: must be a finite number >= 0"),
])
def test_removed_and_bad_venue_keys_are_rejected_with_one_line(sets, needle):
    """Issue 12 item 1.1 (toxic sweeps removed; shared decision 5) and the md_latency_ms key
    (replaced by the data's own feed latency and venue.response_latency_ms): a config that sets
    one fails with one line that says why and points to docs/queue_model.md."""
    from mmbot.config.backtest import ConfigError, load_backtest_config

    with pytest.raises(ConfigError) as e:
        load_backtest_config(None, sets)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    if "removed" in needle:
        assert "docs/queue_model.md" in msg


def test_removed_key_in_a_config_file_names_the_file(tmp_path):
    from mmbot.config.backtest import ConfigError, load_backtest_config

    f = tmp_path / "c.toml"
    f.write_text("[venue]\ntoxic_sweep_prob = 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/c.toml: venue.toxic_sweep_prob: removed"):
        load_backtest_config(f)


def test_the_simulator_has_no_toxic_sweep_parameter():
    from dataclasses import fields

    from adapters.sim.exec_client import SimParams

    assert "toxic_sweep_prob" not in {f.name for f in fields(SimParams)}


# -- Invariants --------------------------------------------------------------------------------

events = st.lists(st.one_of(
    st.tuples(st.just("book"), st.integers(0, 40)),
    st.tuples(st.just("trade"), st.integers(1, 15)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 30), lots=st.integers(1, 10), evs=events)
def test_risk_averse_never_fills_more_than_traded_after_arrival(start, lots, evs):
    lvl = Level(float(start))
    lvl.join("a", lots)
    traded = filled = 0
    for kind, x in evs:
        if kind == "book":
            lvl.on_book(RA, float(x))
        else:
            traded += x
            f = sum(q for _, q in lvl.on_trade(float(x)))
            filled += f
            lvl.reduce("a", lots - filled)
            if filled >= lots:
                break
        assert filled <= traded
    assert filled <= lots


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from([RA]), a=st.integers(0, 30), extra=st.integers(0, 30),
       lots=st.integers(1, 10), evs=events)
def test_fills_are_monotone_in_queue_position(model, a, extra, lots, evs):
    """risk_averse, the same stream in two worlds: an order that joined further back never has
    more cumulative fill. (The prob models are not monotone across worlds: hypothesis found
    a=1, extra=3, book 6 then 1, trade 1, where the p-split empties the back order's queue but
    not the front one's; docs/queue_model.md. Within one level they are: next test.)"""
    front, back = Level(float(a)), Level(float(a + extra))
    front.join("a", lots)
    back.join("a", lots)
    ff = fb = 0
    for kind, x in evs:
        for lvl, which in ((front, 0), (back, 1)):
            if kind == "book":
                lvl.on_book(model, float(x))
            else:
                got = sum(q for _, q in lvl.on_trade(float(x)))
                if which == 0:
                    ff += got
                    if lvl.orders:
                        lvl.reduce("a", lots - ff)
                else:
                    fb += got
                    if lvl.orders:
                        lvl.reduce("a", lots - fb)
        assert fb <= ff
        if ff >= lots:
            front.orders.clear()
        if fb >= lots:
            back.orders.clear()


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from([RA, P3, LOG]), a=st.integers(0, 30), grow=st.integers(0, 30), evs=events)
def test_fifo_queue_positions_stay_ordered_and_earlier_fills_first(model, a, grow, evs):
    lvl = Level(float(a))
    lvl.join("a", 3)
    lvl.on_book(model, float(a + grow))
    lvl.join("b", 3)
    filled = {"a": 0, "b": 0}
    for kind, x in evs:
        if kind == "book":
            lvl.on_book(model, float(x))
        else:
            for o, q in lvl.on_trade(float(x)):
                filled[o.key] += q
        aheads = [o.ahead for o in lvl.orders]
        assert aheads == sorted(aheads)
        assert filled["b"] == 0 or filled["a"] == 3


def test_calibration_bounds_are_the_venue_bounds():
    """One set of numbers for both: a calibration value is accepted exactly when the [venue] key
    it overrides would accept it (at the bound and just beyond)."""
    from adapters.sim.calibration import OVERRIDES, UPPER
    from mmbot.config.backtest import RULES

    for key, venue_key in OVERRIDES.items():
        rule = RULES["venue"][venue_key]
        assert rule.le == UPPER[key], key
        for value in (0.0, UPPER[key], UPPER[key] * (1 + 1e-9), 1e300):
            in_venue = rule.problem(value) is None
            try:
                parse_calibration({**GOOD, key: value})
                in_file = True
            except CalibrationError:
                in_file = False
            assert in_venue == in_file, (key, value)


@pytest.mark.parametrize(("how", "blamed"), [("--set", "--set venue.calibration="), ("--calibration", "--calibration "),
                                             ("file", "c.toml")])
def test_calibration_value_beyond_its_bound_names_the_setting_the_file_and_the_key(tmp_path, how, blamed):
    """The line blames where venue.calibration was set (the --set item, the --calibration option
    or the config file), then names the calibration file and its key, at load time (before the
    run: a 1e20 ms latency used to overflow Nautilus' clock mid-replay)."""
    from mmbot.config.backtest import ConfigError, load_backtest_config
    from mmbot.config.rules import Override

    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({**GOOD, "latency_ms_mean": 1e20}))
    cfg = tmp_path / "c.toml"
    if how == "file":
        cfg.write_text(f'[venue]\ncalibration = "{cal}"\n')
        sets = []
    else:
        cfg.write_text("[venue]\n")
        item = f'venue.calibration="{cal}"'
        sets = [item if how == "--set" else Override(item, f"--calibration {cal}")]
    with pytest.raises(ConfigError) as e:
        load_backtest_config(cfg, sets)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(str(cfg) if how == "file" else blamed), line
    assert f"venue.calibration: {cal}: latency_ms_mean: must be <= 60000" in line, line


def test_config_hash_and_resolved_config_hold_the_calibration_numbers(tmp_path):
    """The calibration file overrides [venue] latencies and slippage: the loaded config carries
    the effective values, so config_hash changes with the file's numbers (not with its
    formatting), config.resolved.json shows what the simulator runs on (and that the values came
    from the file), and the simulator's parameters are exactly those values."""
    from mmbot.builders import queue_sim_params
    from mmbot.config.backtest import load_backtest_config
    from mmbot.paths import CONFIG_DIR
    from mmbot.run_folder import resolved_config

    f = tmp_path / "cal.json"
    item = f'venue.calibration="{f}"'
    base = CONFIG_DIR / "backtest.toml"
    f.write_text(json.dumps(GOOD))
    a = load_backtest_config(base, [item])
    f.write_text(json.dumps(GOOD, indent=4, sort_keys=True))  # same numbers, other bytes
    assert load_backtest_config(base, [item]).config_hash() == a.config_hash()
    for patch in ({"latency_ms_mean": 50.0}, {"latency_ms_std": 1.0}, {"amend_latency_ms": 1.0},
                  {"cancel_latency_ms": 1.0}, {"extra_slippage_bps": 5.0}, {"response_latency_ms": 3.0}):
        f.write_text(json.dumps({**GOOD, **patch}))
        assert load_backtest_config(base, [item]).config_hash() != a.config_hash(), patch

    f.write_text(json.dumps({**GOOD, "response_latency_ms": 4.0}))
    cfg = load_backtest_config(base, [item])
    doc = resolved_config(cfg)
    venue = doc["config"]["venue"]
    assert (venue["order_latency"], venue["order_latency_ms"], venue["order_latency_std_ms"], venue["amend_latency_ms"],
            venue["cancel_latency_ms"], venue["response_latency_ms"], venue["extra_slippage_bps"]) == \
        ("normal", 12.0, 3.0, 10.0, 8.0, 4.0, 0.2)
    assert venue["calibration"] == str(f) and doc["config_hash"] == cfg.config_hash()
    assert doc["overrides"]["venue.order_latency_ms"] == f"{f} (venue.calibration)"
    assert doc["overrides"]["venue.calibration"] == f"--set {item}"
    p = queue_sim_params(cfg)
    assert (p.latency.order.kind, p.latency.order.mean_ms, p.latency.order.std_ms, p.latency.amend.mean_ms,
            p.latency.cancel.mean_ms, p.latency.response.mean_ms, p.extra_slippage_bps) == \
        ("normal", venue["order_latency_ms"], venue["order_latency_std_ms"], venue["amend_latency_ms"],
         venue["cancel_latency_ms"], venue["response_latency_ms"], venue["extra_slippage_bps"])
    # without response_latency_ms in the file the [venue] value stays (default config: 10 ms)
    f.write_text(json.dumps(GOOD))
    assert load_backtest_config(base, [item, "venue.response_latency_ms=7"]).venue.response_latency_ms == 7.0
