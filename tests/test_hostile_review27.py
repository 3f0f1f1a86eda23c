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
