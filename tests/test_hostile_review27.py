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
