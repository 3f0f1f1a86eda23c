"""Funding end to end: a catalog with FundingRateUpdate and MarkPriceUpdate rows is replayed by
`mmbot backtest run`; the run ledger prices each settlement at the mark price and the report
books it as its own PnL line, in the equity curve, with the account cross-check kept exact."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from nautilus_trader.model.data import FundingRateUpdate, MarkPriceUpdate
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.objects import Price
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from mmbot.cli.main import main

pytestmark = pytest.mark.slow
START = "2024-06-03T00:00:00Z"
IID = "BTCUSDT-LINEAR.BYBIT"
# The default config is sized for XRPUSDT: BTC sizes for this BTC recording.
BTC_SIZES = ("--set", "strategy.level_size=0.01", "--set", "strategy.max_position=0.1")
S = 1_000_000_000


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6-minute synthetic recording imported twice, one catalog with funding rows (two
    settlements in the window, one 8 h later, outside it) and marks every 30 s."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools.gen_synthetic import generate, parse_start, write_recording

    base = tmp_path_factory.mktemp("funding")
    rec = base / "rec.jsonl"
    t0 = parse_start(START)
    write_recording(rec, generate("BTCUSDT", t0, 6.0, 3))
    out = {}
    for name in ("plain", "funded"):
        cat = base / f"cat_{name}"
        import_paths([rec], cat, InstrumentRegistry())
        if name == "funded":
            iid = InstrumentId.from_str(IID)
            pc = ParquetDataCatalog(str(cat))
            settle = [t0 + 120 * S, t0 + 240 * S, t0 + 8 * 3600 * S]  # the last is past the data
            pc.write_data([FundingRateUpdate(iid, Decimal(r), ts_event=t, ts_init=t)
                           for t, r in zip(settle, ("0.0001", "-0.0002", "0.0003"), strict=True)])
            marks = [t0 + k * 30 * S for k in range(13)]
            pc.write_data([MarkPriceUpdate(iid, Price.from_str(f"{67400 + 10 * k:.2f}"), t, t)
                           for k, t in enumerate(marks)])
        r = run("backtest", "run", "--catalog", str(cat), "--out", str(base / name), "--no-progress",
                "--instrument", IID, "--set", "report.html=false", *BTC_SIZES)
        assert r.exit_code == 0, r.output
        out[name] = base / name
    return out, t0


def test_funding_is_its_own_line_priced_at_the_mark(runs):
    out, t0 = runs
    rep = json.loads((out["funded"] / "report.json").read_text())
    pnl, funding = rep["metrics"]["pnl"], rep["metrics"]["funding"]
    assert pnl["funding_available"] is True and funding["available"] is True
    # the settlement 8 h after the data is cut by the builder's window: two settlements
    assert [s["ts_ns"] for s in funding["settlements"]] == [t0 + 120 * S, t0 + 240 * S]
    fills = pd.read_parquet(out["funded"] / "fills.parquet")
    sign = np.where(fills["side"] == "BUY", 1.0, -1.0)
    expected = []
    for s, rate in zip(funding["settlements"], (0.0001, -0.0002), strict=True):
        pos = float(np.sum((sign * fills["qty"])[fills["ts_event_ns"] <= s["ts_ns"]]))
        mark = 67400 + 10 * ((s["ts_ns"] - t0) // (30 * S))  # the mark published at that very second
        assert s["position_base"] == pytest.approx(pos, abs=1e-12)
        assert s["price_source"] == ("mark" if pos else s["price_source"]) and s["price"] == mark
        expected.append(-pos * mark * rate)
    assert [s["payment_usdt"] for s in funding["settlements"]] == pytest.approx(expected, abs=1e-9)
    assert pnl["funding"] == pytest.approx(sum(expected), abs=1e-9)
    assert any(e != 0.0 for e in expected), "the default strategy should hold a position at a settlement"
    # funding is in net PnL and in the equity curve, and only there
    assert pnl["net_pnl"] == pytest.approx(pnl["net_pnl_ex_funding"] + pnl["funding"], abs=1e-9)
    equity = pd.read_parquet(out["funded"] / "equity.parquet")
    assert round(float(equity["net_pnl"].iloc[-1]), 6) == round(pnl["net_pnl"], 6)
    assert float(equity["funding"].iloc[-1]) == pytest.approx(pnl["funding"], abs=1e-9)
    # Nautilus' account books no funding: it matches the net PnL excluding funding to the cent
    assert round(pnl["nautilus_account_net_pnl"], 2) == round(pnl["net_pnl_ex_funding"], 2)


def test_funding_data_does_not_change_the_trading(runs):
    out, _ = runs
    plain = pd.read_parquet(out["plain"] / "fills.parquet")
    funded = pd.read_parquet(out["funded"] / "fills.parquet")
    pd.testing.assert_frame_equal(plain, funded)
    a = json.loads((out["plain"] / "report.json").read_text())["metrics"]
    b = json.loads((out["funded"] / "report.json").read_text())["metrics"]
    assert a["pnl"]["net_pnl"] == b["pnl"]["net_pnl_ex_funding"]
    assert a["pnl"]["funding_available"] is False and a["funding"]["n_settlements"] == 0
    assert a["replay"]["mid_ts_regressions"] == 0
