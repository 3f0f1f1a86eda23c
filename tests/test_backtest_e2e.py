"""End-to-end `mmbot backtest run` on the embedded catalog: outputs, accounting, determinism,
config errors, and the replay pitfalls (batches, time filters, cache purge)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.paths import DEFAULT_CATALOG

pytestmark = pytest.mark.slow
START = "2024-12-01T07:30:00Z"
END = "2024-12-01T07:45:00Z"  # a quarter of the embedded hour keeps the suite fast
OUTPUTS = ("report.json", "report.md", "report.html", "fills.parquet", "orders.parquet", "equity.parquet")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bt")
    dirs = []
    for name in ("a", "b"):
        out = base / name
        r = run("backtest", "run", "--start", START, "--end", END, "--out", str(out), "--no-progress")
        assert r.exit_code == 0, r.output
        dirs.append(out)
    return dirs


def test_outputs_exist_and_report_is_byte_identical(run_dirs):
    a, b = run_dirs
    for name in OUTPUTS:
        assert (a / name).exists(), name
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert (a / "fills.parquet").read_bytes() == (b / "fills.parquet").read_bytes()
    report = json.loads((a / "report.json").read_text())
    meta = report["metadata"]
    assert meta["instrument"]["id"] == "XRPUSDT-LINEAR.BYBIT"
    assert meta["data_range"]["start"].startswith("2024-12-01T07:30:00")
    assert meta["versions"]["nautilus_trader"] == "1.231.0"
    assert len(meta["config_hash"]) == 12 and meta["seed"] == 42


def test_accounting_from_the_fills_ledger(run_dirs):
    a = run_dirs[0]
    report = json.loads((a / "report.json").read_text())
    pnl, counts = report["metrics"]["pnl"], report["metrics"]["counts"]
    fills = pd.read_parquet(a / "fills.parquet")
    assert counts["n_fills"] == len(fills) > 0, "the default run must trade"
    sign = np.where(fills["side"] == "BUY", 1.0, -1.0)
    cash = float(np.sum(-sign * fills["price"] * fills["qty"]))
    position = float(np.sum(sign * fills["qty"]))
    fees, slippage = float(fills["fee"].sum()), float(fills["slippage"].sum())  # exchange fee and slippage apart
    net = cash + position * pnl["final_mid"] - fees - slippage + pnl["funding"]
    assert round(net, 2) == round(pnl["net_pnl"], 2)
    assert round(pnl["gross_pnl"] - pnl["fees_paid"] - pnl["slippage"] + pnl["funding"], 2) == round(pnl["net_pnl"], 2)
    assert round(pnl["spread_capture"] + pnl["inventory_pnl"] - pnl["fees_paid"] - pnl["slippage"] + pnl["funding"],
                 2) == round(pnl["net_pnl"], 2)
    # Nautilus' own account (balance change + open position at the same mark) books no funding;
    # it agrees with the net PnL excluding funding to the cent.
    assert round(pnl["nautilus_account_net_pnl"], 2) == round(pnl["net_pnl_ex_funding"], 2)
    assert report["metadata"]["report_clock"] == "exchange"  # the queue simulator's clock
    equity = pd.read_parquet(a / "equity.parquet")
    assert round(float(equity["net_pnl"].iloc[-1]), 2) == round(pnl["net_pnl"], 2)
    orders = pd.read_parquet(a / "orders.parquet")
    assert counts["n_orders"] == len(orders)
    assert (fills["liquidity"] == "MAKER").all(), "post-only orders can only make"


def test_every_simulated_fill_is_attributed_on_the_exchange_clock(run_dirs):
    """Section 3 / shared decisions 2-3 end to end: the queue simulator's fills all carry a
    FillInfo cause, and each fill's ts_event is its trigger's exchange time."""
    report = json.loads((run_dirs[0] / "report.json").read_text())
    fills = pd.read_parquet(run_dirs[0] / "fills.parquet")
    info = report["metrics"]["attribution"]["fill_info"]
    assert info["matched"] == len(fills) > 0
    assert (info["unmatched"], info["order_mismatch"], info["ts_event_not_trigger"]) == (0, 0, 0)
    assert set(fills["cause"]) <= {"queue", "trade_through", "book_through", "other"}
    by = report["metrics"]["attribution"]["by_cause"]
    assert sum(by[c]["n_fills"] for c in ("queue", "trade_through", "book_through", "other")) == len(fills)


def test_strategy_acts_once_per_exchange_message(run_dirs):
    """Pitfall guard: deltas reach the strategy as whole messages (one batch per F_LAST)."""
    from nautilus_trader.model.data import OrderBookDelta
    from nautilus_trader.model.enums import RecordFlag
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    report = json.loads((run_dirs[0] / "report.json").read_text())
    rng = report["metadata"]["data_range"]
    cat = ParquetDataCatalog(str(DEFAULT_CATALOG))
    deltas = cat.query(OrderBookDelta, identifiers=["XRPUSDT-LINEAR.BYBIT"], start=rng["start_ns"], end=rng["end_ns"])
    messages = sum(1 for d in deltas if d.flags & RecordFlag.F_LAST)
    assert report["metrics"]["strategy"]["book_batches"] == messages


def test_time_filtered_replay_equals_unfiltered(tmp_path):
    """Pitfall guard: a start/end slice of a larger catalog replays exactly like a catalog that
    holds only that slice and is replayed with no time filter."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools.gen_synthetic import generate, parse_start, write_recording

    msgs = list(generate("XRPUSDT", parse_start(START), 6.0, 3))
    cut = max(i for i, m in enumerate(msgs[: len(msgs) // 2]) if m["topic"].startswith("orderbook."))
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    write_recording(big, msgs)
    write_recording(small, msgs[: cut + 1])
    import_paths([big], tmp_path / "cat_big", InstrumentRegistry())
    import_paths([small], tmp_path / "cat_small", InstrumentRegistry())
    r = run("backtest", "run", "--catalog", str(tmp_path / "cat_small"), "--out", str(tmp_path / "u"), "--no-progress",
            "--set", "report.html=false")
    assert r.exit_code == 0, r.output
    rng = json.loads((tmp_path / "u" / "report.json").read_text())["metadata"]["data_range"]
    r = run("backtest", "run", "--catalog", str(tmp_path / "cat_big"), "--start", str(rng["start_ns"]),
            "--end", str(rng["end_ns"]), "--out", str(tmp_path / "f"), "--no-progress", "--set", "report.html=false")
    assert r.exit_code == 0, r.output
    fu = pd.read_parquet(tmp_path / "u" / "fills.parquet")
    ff = pd.read_parquet(tmp_path / "f" / "fills.parquet")
    pd.testing.assert_frame_equal(fu, ff)
    ou = pd.read_parquet(tmp_path / "u" / "orders.parquet")
    of = pd.read_parquet(tmp_path / "f" / "orders.parquet")
    pd.testing.assert_frame_equal(ou, of)
    assert len(ou) > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "strategy.bogus_key=1"], "strategy.bogus_key: unknown key"),
        (["--set", "run.seed=\"abc\""], "run.seed"),
        (["--set", "strategy.min_half_spread_bps=-1"], "min_half_spread_bps"),
        (["--set", "strategy.levels_per_side=\"two\""], "levels_per_side"),
        (["--instrument", "ETHUSDT-LINEAR.BYBIT"], "ETHUSDT-LINEAR.BYBIT is not in catalog"),
        (["--start", "2030-01-01", "--end", "2030-01-02"], "empty date range"),
        (["--set", "venue.bogus=1"], "venue.bogus: unknown key"),
        (["--set", "nosuch.key=1"], "nosuch: unknown section"),
        (["--config", "/nonexistent.toml"], "no such config file"),
    ],
)
def test_bad_config_exits_2_with_one_clear_line(tmp_path, args, needle):
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--out", str(tmp_path / "o"), *args],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_main_command_on_defaults(tmp_path):
    """The README's main job: `mmbot backtest run` with no arguments writes a runs/ directory."""
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--set", f'run.out_dir="{tmp_path}"',
                        "--set", f'run.end="{END}"'], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert all((run_dir / n).exists() for n in OUTPUTS)


def test_closed_orders_are_purged_from_the_cache(run_dirs, tmp_path):
    """Pitfall guard: Nautilus purges closed orders only in live mode; the ledger does it in
    backtests so memory does not grow with the range, while the report still has every order."""
    report = json.loads((run_dirs[0] / "report.json").read_text())
    n_orders = report["metrics"]["counts"]["n_orders"]
    # a purge every 300 s (60 s buffer) leaves only the orders of the last few minutes of 15
    assert report["metrics"]["replay"]["cache_orders_at_end"] < n_orders / 2
    r = run("backtest", "run", "--start", START, "--end", "2024-12-01T07:35:00Z", "--out", str(tmp_path / "np"),
            "--no-progress", "--set", "run.purge_interval_s=0", "--set", "report.html=false")
    assert r.exit_code == 0, r.output
    nopurge = json.loads((tmp_path / "np" / "report.json").read_text())["metrics"]
    assert nopurge["replay"]["cache_orders_at_end"] == nopurge["counts"]["n_orders"]


def test_backtest_analysis_notebook_on_a_real_run(run_dirs):
    from tests.notebooks import execute_notebook, n_images, outputs_text

    report = json.loads((run_dirs[0] / "report.json").read_text())
    nb = execute_notebook("backtest_analysis.ipynb", {"MMBOT_RUN_DIR": str(run_dirs[0])})
    assert f"{report['metrics']['pnl']['net_pnl']:.4f}" in outputs_text(nb)
    assert n_images(nb) >= 4
