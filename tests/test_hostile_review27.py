"""Hostile review 27: the changes since bca4cd7 (planner residual, portfolio promote, Grafana
portfolio series, soak --symbols, import speed-ups, run-folder publisher) attacked as a hostile
user or a bad day at the exchange would. Each test failed on 5195d4b (fixed here) or is a strict
xfail naming the finding (H27-Fn)."""

from __future__ import annotations

import pytest

from mmbot.tuning.promote import PromoteError, write_live_config
from tests.test_promote_checks import notional_run


# -- F1: a sizing record's base value was never checked against its own notional and price ----


@pytest.mark.parametrize("base, why", [(20000.0, "at most"), (100.0, "rounded down")])
def test_h27_f1_an_edited_base_in_the_sizing_record_is_refused(tmp_path, base, why):
    """report.json's sizing record says 391 USDT at 1.955 USDT/XRP; a base of 20000 XRP (x100)
    or 100 XRP (not 391/1.955 rounded down) is not that conversion: refused, one line. Before:
    written to the live config as strategy.level_size (the loader only checked level_size <=
    max_position), so an edited report.json put 100x the tested size live."""
    record = {
        "instrument": "XRPUSDT-LINEAR.BYBIT", "reference_price": 1.955, "price_source": "s", "lot_step": "1",
        "keys": {"strategy.level_notional_usdt": {"notional_usdt": 391.0, "base_key": "strategy.level_size",
                                                  "base": base, "rounding": "down to the lot step"},
                 "strategy.max_position_notional_usdt": {"notional_usdt": 1954.0, "base_key": "strategy.max_position",
                                                         "base": 99900.0 if base > 1000 else 999.0,
                                                         "rounding": "down to the lot step"}}}
    d = notional_run(tmp_path, sizing=record)
    with pytest.raises(PromoteError, match=why) as e:
        write_live_config(d, "testnet", tmp_path / "live.toml")
    assert "\n" not in str(e.value) and not (tmp_path / "live.toml").exists()


# -- F2: soak --symbols with a non-ASCII digit was a traceback -----------------------------------


@pytest.mark.parametrize("text", ["²", "٣", "3\u00b9"])
def test_h27_f2_soak_symbols_non_ascii_digits_are_one_line_refusals(text):
    """str.isdigit() is true of '²' and '٣': int('²') raised ValueError (a traceback, exit 1)
    and '٣' quietly meant 3. Now both are an unknown symbol: BadInput, exit 2, one line."""
    from tools.soak.__main__ import BadInput, parse_symbols

    with pytest.raises(BadInput, match="unknown symbol"):
        parse_symbols(text)


# -- F3: mmbot_position_notional_usdt froze while the book was unusable ----------------------------


def test_h27_f3_position_notional_follows_a_fill_during_a_one_sided_book():
    """The ask side empties (one-sided book: no mid), then our 0.003 bid fills at 100.0. The
    portfolio guard marks the position at the last fill price (0.3 USDT); the Grafana series kept
    the product of its last valid update: 0 USDT with 0.003 BTC long (the gross/net panels showed
    no exposure exactly on a bad day). Now: the guard's mark (mid, else the last fill price)."""
    from nautilus_trader.model.enums import AggressorSide

    from adapters.sim.exec_client import CLIENT_ID, SimParams
    from adapters.sim.latency import Latency, LatencyModel
    from adapters.sim.queue import QueueModel
    from mmbot.live.metrics_server import MetricsActor, MetricsActorConfig
    from tests.queue_harness import BUY, SELL, make_engine
    from tests.test_live_metrics import _samples
    from tests.test_strategy_scenarios import IID, snapshot, trade, update

    params = SimParams(model=QueueModel("risk_averse", 3), latency=LatencyModel(
        order=Latency("constant", 1.0), amend=Latency("constant", 1.0), cancel=Latency("constant", 1.0)))
    engine, _client, _strat = make_engine([(0, lambda st: st.place("a", BUY, 100.0, 0.003))], params)
    actor = MetricsActor(MetricsActorConfig(instrument_id=IID, port=-1, environment="shadow",
                                            account_id=f"{CLIENT_ID}-001", update_interval_ms=10))
    engine.add_actor(actor)
    data = [snapshot(0, [(100.0, 0.001), (99.9, 1.0)], [(100.4, 1.0)]), update(15, (SELL, 100.4, 0.0)),
            trade(20, 99.9, 0.010, AggressorSide.SELLER, "1"), update(40, (BUY, 99.8, 1.0))]
    flat = [d for m in data for d in m]
    try:
        engine.add_data([d for d in flat if type(d).__name__ == "OrderBookDelta"])
        engine.add_data([d for d in flat if type(d).__name__ == "TradeTick"], sort=True)
        engine.run()
        actor.update()
        got = _samples(actor)
    finally:
        engine.dispose()
    assert got["mmbot_position_base"][0].value == pytest.approx(0.003)
    assert got["mmbot_position_notional_usdt"][0].value == pytest.approx(0.003 * 100.0, rel=1e-12)


# -- F4: under a hard portfolio breach a position below one order is never reduced -----------------


def test_h27_f4_reducing_only_order_below_one_order_is_sized_to_the_position():
    """XRP long 150 (a partial fill of a 200 order), hard gross breach: the portfolio guard leaves
    XRP its ask side only (allow_bid False) and denies a SELL above |position| (hostile review 26
    F3: it would flip). With only the sides published, the strategy's cap stayed XRP's
    max_position (1000), so the residual rule (``first_level_lots``: only when a full order ends
    beyond the CAP) did not apply: the planner sent SELL 200, the guard denied it,
    ``on_order_denied`` freed the slot, the next book message sent it again: a denial per message
    and 150 XRP held while the node was in REDUCING (failed: the guard's constraint had no cap, the
    planner's ask was 200, denied). Now REDUCING also caps |position| at 0 in the guard's
    constraint (the smallest cap wins on the strategy's ConstraintBoard): the reducing order is at
    most the position, and the guard passes it."""
    from nautilus_trader.model.enums import OrderSide

    from strategies import planner as pl
    from strategies.risk.base import RISK_TOPIC, ConstraintBoard
    from tests.test_hostile_review25 import _f5_node
    from tests.test_planner_residual import ASKS, BIDS, FAIR, _planner

    board, seen = ConstraintBoard(), []

    def on_bus(bus):
        def on_constraint(msg):
            if msg.instrument_id in (None, xrp_id[0]):
                seen.append(board.update(msg))
        bus.subscribe(topic=RISK_TOPIC, handler=on_constraint)

    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    xrp_id = [TestInstrumentProvider.xrpusdt_linear_bybit().id.value]
    send, got, _ids, _ = _f5_node({"XRP": 150.0}, on_bus=on_bus, soft_gross_notional_usdt=100.0,
                                  hard_gross_notional_usdt=200.0)
    assert seen and seen[-1][:2] == (False, True), seen  # ask side only
    cap_base = board.max_position_base()
    assert cap_base == 0.0, cap_base
    p = _planner(min(1000, int(cap_base)), [200, 200])  # the strategy's planner under that cap [lots of 1 XRP]
    out = p.plan(0, FAIR, 150, BIDS[:2], ASKS[:2], False, True, False, False)  # ask side only
    asks = [a[3] for a in out if a[0] == pl.SUBMIT and a[1].side == pl.ASK]
    assert asks and sum(asks) <= 150, out
    send("XRP", OrderSide.SELL, str(asks[0]))
    assert not got or got[0][0] != "OrderDenied", (asks, got)  # the planner's reducing order passes the guard


# -- a per_symbol portfolio wf run (config/portfolio.toml, one split, one trial per study: ~20 s) --


def _edit_run(src, dst, fn):
    import json
    import shutil

    shutil.copytree(src, dst)
    r = json.loads((dst / "report.json").read_text())
    c = json.loads((dst / "champion.json").read_text())
    fn(r, c, [s for s in r["splits"] if s.get("status") == "ok"][-1])
    (dst / "report.json").write_text(json.dumps(r))
    (dst / "champion.json").write_text(json.dumps(c))
    return dst


@pytest.fixture(scope="module")
def per_symbol_run(tmp_path_factory):
    from tests.test_wf_promote_portfolio import PER_SYMBOL, PORTFOLIO, RANGE, mmbot

    out = tmp_path_factory.mktemp("h27ps") / "ps"
    r = mmbot("wf", "--config", str(PORTFOLIO), "--space", str(PER_SYMBOL), "--no-progress", *RANGE, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_h27_f5_a_per_symbol_trial_mismatch_names_the_trials(per_symbol_run, tmp_path):
    """champion.json's per_symbol trials edited (BTC trial 3): refused, and the line names the
    trials of both files. Before: 'trial None ... (0, trial None)' (the single-instrument keys,
    None in a per_symbol run), which says nothing about what differs."""
    d = _edit_run(per_symbol_run, tmp_path / "run",
                  lambda r, c, s: c["selected"]["trials"].update({"BTCUSDT-LINEAR.BYBIT": 3}))
    with pytest.raises(PromoteError) as e:
        write_live_config(d, "testnet", tmp_path / "live.toml")
    assert "trials {" in str(e.value) and "'BTCUSDT-LINEAR.BYBIT': 3" in str(e.value), str(e.value)
    assert "trial None" not in str(e.value)


@pytest.mark.slow
def test_h27_f1_portfolio_an_instruments_sizes_x100_are_refused(per_symbol_run, tmp_path):
    """F1 on the portfolio path: BTC's four converted sizes x100 in report.json (a consistent set:
    the loader's level_size <= max_position and soft <= hard hold): refused. Before: written, BTC
    max_position 2.9 instead of 0.029."""
    def x100(r, c, s):
        for k in s["out_of_sample"]["sizing"]["BTCUSDT-LINEAR.BYBIT"]["keys"].values():
            k["base"] = round(k["base"] * 100, 3)
    d = _edit_run(per_symbol_run, tmp_path / "run", x100)
    with pytest.raises(PromoteError, match="in split 0.s sizing record is not at most"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


# -- F6: a shared champion that turns the allocator or a portfolio limit off was promoted -----------


@pytest.mark.parametrize("key, value", [("portfolio.allocator.enabled", False), ("risk.portfolio.enabled", False),
                                        ("risk.portfolio.hard_gross_notional_usdt", 0.0),
                                        ("risk.portfolio.max_daily_loss_usdt", 0)])
def test_h27_f6_a_champion_switching_a_portfolio_guard_off_is_refused(tmp_path, key, value):
    """A wf space over config/portfolio.toml searching ``portfolio.allocator.enabled = {choices =
    [false]}`` and ``risk.portfolio.hard_gross_notional_usdt = {choices = [0.0]}`` (0 = off): the
    shared champion was promoted, to --env mainnet too, with 'enabled = false  # tuned by wf' and
    the hard gross limit off (checked by hand on such a run). Only risk.enabled and
    risk.audit.enabled were refused, for the reason that holds here as well: a guard that never
    halts can win in-sample."""
    from pathlib import Path

    from mmbot.tuning.promote import check_champion_keys

    with pytest.raises(PromoteError, match="not a tuning result"):
        check_champion_keys(Path("run"), {key: value}, {key: {"choices": [value]}}, also=("portfolio.allocator.",))


def test_h27_f6_tuned_portfolio_limits_and_allocator_keys_still_pass():
    from pathlib import Path

    from mmbot.tuning.promote import check_champion_keys

    params = {"portfolio.allocator.enabled": True, "portfolio.allocator.temperature": 0.5,
              "risk.portfolio.hard_gross_notional_usdt": 3000.0, "risk.position.hard_position": 0.0}
    check_champion_keys(Path("run"), params, {k: {} for k in params}, also=("portfolio.allocator.",))


# -- F7: soak --symbols N: an instrument that never placed an order passed state_mismatch ----------


def _tl(orders: int) -> dict:
    return {"max_order_mismatch_s": 0.0, "max_position_mismatch_s": 0.0, "longest": [], "orders_node": orders,
            "orders_exchange": orders, "fills_node": 0, "fills_exchange": 0}


def test_h27_f7_an_instrument_without_orders_fails_the_per_instrument_state_mismatch():
    """A 3-symbol soak where DOGE's book never came (or every DOGE order was denied before the
    venue): DOGE's timeline is empty, its longest mismatch 0 s, and the gate held: the report said
    every instrument agreed with the exchange while one was never compared. Now the gate fails and
    names it; instruments with orders still pass."""
    from tools.soak import gates as G

    g = G.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(40), "BTCUSDT": _tl(35), "DOGEUSDT": _tl(0)}, [], 10.0)
    assert not g.holds and g.detail["instruments_without_orders"] == ["DOGEUSDT"]
    denied = {**_tl(0), "orders_node": 30}  # every DOGE order denied before the venue: closed at once, never open
    g = G.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(40), "DOGEUSDT": denied}, [], 10.0)
    assert not g.holds and g.detail["instruments_without_orders"] == ["DOGEUSDT"]
    assert G.state_mismatch_per_instrument_gate({"XRPUSDT": _tl(40), "BTCUSDT": _tl(35)}, [], 10.0).holds


# -- F8: two runs publishing to one --out: the loser's OSError traceback and a stray '.old' folder --


def test_h27_f8_a_run_that_loses_the_race_for_its_out_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Run B publishes entirely between run A's two renames (A moved the old folder aside, B put
    its own in place): A's rename onto the non-empty folder failed with OSError (a traceback from
    `mmbot backtest run`: the CLI turns only RunFolderError into one line) and A's '.old' copy of
    the previous results stayed next to --out for good. Now: RunFolderError, B's folder kept, no
    '.old' left."""
    import os

    from mmbot import run_folder as rf

    out = tmp_path / "out"
    for name in ("out", ".stageA", ".stageB"):
        d = tmp_path / name
        d.mkdir()
        rf.write_marker(d, "backtest", "h")
        (d / "report.json").write_text(name)
    real = os.replace
    done = []

    def replace(a, b):
        real(a, b)
        if not done and str(b).endswith(".old"):
            done.append(1)
            rf.publish_run_folder(tmp_path / ".stageB", out, "backtest")

    monkeypatch.setattr(rf.os, "replace", replace)
    with pytest.raises(rf.RunFolderError, match="another run"):
        rf.publish_run_folder(tmp_path / ".stageA", out, "backtest")
    monkeypatch.undo()
    assert (out / "report.json").read_text() == ".stageB"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stageA", "out"]  # A's stage: its caller deletes it


def test_h27_f9_out_as_a_symlink_leaves_no_stray_old_link(tmp_path):
    """--out a symlink to an earlier backtest folder: the symlink is moved aside as '<stage>.old'
    and deleted with shutil.rmtree(ignore_errors=True), which refuses a symlink: the link stayed
    next to --out for good. Now the link is unlinked (its target is left as it was)."""
    from mmbot import run_folder as rf

    real = tmp_path / "real"
    real.mkdir()
    rf.write_marker(real, "backtest", "h")
    (tmp_path / "out").symlink_to(real)
    stage = tmp_path / ".stage"
    stage.mkdir()
    rf.write_marker(stage, "backtest", "h")
    rf.publish_run_folder(stage, tmp_path / "out", "backtest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]
    assert (real / rf.MARKER).exists()
