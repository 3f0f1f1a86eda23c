"""Reports and the analysis notebook, on a synthetic but realistic run (random-walk mid, a
market maker quoting around it with inventory skew, maker fills, a few taker hedges)."""

from __future__ import annotations

import html
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mmbot.canonical_json import dumps_canonical
from mmbot.report.metrics import compute_report_metrics, equity_curve
from mmbot.report.render import build_report, write_all_reports, write_parquet_atomic, write_report_json

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "backtest_analysis.ipynb"
START_NS = 1_717_372_800_000_000_000  # 2024-06-03T00:00:00Z
MAKER_FEE, TAKER_FEE = -0.00005, 0.00055  # maker rebate (market-maker programme)


def make_synthetic_run(minutes: int = 10, seed: int = 7) -> dict[str, Any]:
    """Runner-shaped inputs: fills, orders, mids, quotes, window, fees, balance."""
    rng = np.random.default_rng(seed)
    attr_rng = np.random.default_rng(seed + 1000)  # causes: a stream of their own, the run is unchanged
    tick, step_ns, qty = 0.01, 100_000_000, 0.5
    n = minutes * 600
    ts = START_NS + step_ns * np.arange(n, dtype=np.int64)
    mid = np.round((2500.0 + np.cumsum(rng.normal(0, 0.12, n))) / (tick / 2)) * (tick / 2)
    bid = np.full(n, np.nan)
    ask = np.full(n, np.nan)
    fills: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    pos, oid = 0.0, 0

    def order(side: str, price: float, t: int, status: str, filled: float) -> str:
        nonlocal oid
        oid += 1
        cid = f"O-{oid:06d}"
        orders.append({"client_order_id": cid, "side": side, "price": price, "qty": qty,
                       "ts_init_ns": t, "ts_last_ns": t + step_ns, "status": status,
                       "filled_qty": filled, "n_amends": int(rng.integers(0, 3)), "n_cancels": 0})
        return cid

    def fill(i: int, side: str, price: float, liq: str, cid: str) -> None:
        rate = MAKER_FEE if liq == "MAKER" else TAKER_FEE
        cause = str(attr_rng.choice(["queue", "trade_through", "book_through"])) if liq == "MAKER" else "other"
        fills.append({"ts_event_ns": int(ts[i]), "client_order_id": cid, "venue_order_id": f"V{cid}",
                      "trade_id": f"T-{len(fills) + 1:06d}", "side": side, "price": price,
                      "qty": qty, "fee": price * qty * rate,
                      "slippage": price * qty * 0.5e-4 if liq == "TAKER" else 0.0,  # 0.5 bps on takers
                      "cause": cause, "ts_trigger_ns": int(ts[i]), "liquidity": liq})

    for i in range(n):
        skew = -0.08 * pos  # lean quotes against inventory
        if abs(pos) < 4 * qty or pos < 0:
            bid[i] = np.floor((mid[i] - 0.25 + skew) / tick) * tick
        if abs(pos) < 4 * qty or pos > 0:
            ask[i] = np.ceil((mid[i] + 0.25 + skew) / tick) * tick
        if i % 5 == 0 and i:  # requote every 500 ms: resting orders are cancelled
            order("BUY", float(bid[i - 1]), int(ts[i - 5]), "CANCELED", 0.0)
        u = rng.random()
        if u < 0.012 and np.isfinite(bid[i]):
            fill(i, "BUY", round(float(bid[i]), 2), "MAKER", order("BUY", float(bid[i]), int(ts[i]), "FILLED", qty))
            pos += qty
            mid[i + 1:] -= 0.05  # adverse selection: the mid drifts through our bid
        elif u < 0.024 and np.isfinite(ask[i]):
            fill(i, "SELL", round(float(ask[i]), 2), "MAKER", order("SELL", float(ask[i]), int(ts[i]), "FILLED", qty))
            pos -= qty
            mid[i + 1:] += 0.05
        elif u < 0.0255 and abs(pos) >= 3 * qty:  # taker hedge when inventory is large
            side = "SELL" if pos > 0 else "BUY"
            px = round(float(mid[i] - 0.005 if side == "SELL" else mid[i] + 0.005), 3)
            fill(i, side, px, "TAKER", order(side, px, int(ts[i]), "FILLED", qty))
            pos += qty if side == "BUY" else -qty
    return {
        "fills": pd.DataFrame(fills), "orders": pd.DataFrame(orders),
        "mid_ts_ns": ts, "mid_px": mid, "quote_ts_ns": ts, "own_bid_px": bid, "own_ask_px": ask,
        "start_ns": START_NS, "end_ns": int(START_NS + minutes * 60 * 1_000_000_000),
        "starting_balance": 10_000.0,
    }


def build_run_dir(out: Path, minutes: int = 10, seed: int = 7) -> dict[str, Any]:
    """Write a full fake run directory the way the runner will; returns inputs + metrics."""
    run = make_synthetic_run(minutes, seed)
    equity = equity_curve(run["fills"], run["mid_ts_ns"], run["mid_px"], run["start_ns"], run["end_ns"],
                          quote_ts_ns=run["quote_ts_ns"], own_bid_px=run["own_bid_px"],
                          own_ask_px=run["own_ask_px"])
    metrics = compute_report_metrics(
        run["fills"], run["orders"], run["mid_ts_ns"], run["mid_px"], run["start_ns"], run["end_ns"],
        starting_balance=run["starting_balance"], maker_fee=MAKER_FEE, taker_fee=TAKER_FEE,
        equity=equity)
    metadata = {"run_id": f"synthetic-{seed}", "instrument_id": "ETHUSDT-LINEAR.BYBIT",
                "strategy": "synthetic_mm", "start_ns": run["start_ns"], "end_ns": run["end_ns"],
                "starting_balance": run["starting_balance"], "config": {"half_spread": 0.25, "qty": 0.5}}
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(out / "fills.parquet", run["fills"])
    write_parquet_atomic(out / "orders.parquet", run["orders"])
    write_parquet_atomic(out / "equity.parquet", equity)
    paths = write_all_reports(out, metadata, metrics, equity, run["fills"], run["mid_ts_ns"], run["mid_px"],
                              run["quote_ts_ns"], run["own_bid_px"], run["own_ask_px"])
    return {**run, "equity": equity, "metrics": metrics, "metadata": metadata, "paths": paths}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("runs") / "synthetic-7"
    return out, build_run_dir(out)


def test_synthetic_run_is_realistic(run_dir: tuple[Path, dict[str, Any]]) -> None:
    _, run = run_dir
    c = run["metrics"]["counts"]
    assert c["n_fills"] > 50 and c["n_taker_fills"] > 0 and c["n_canceled_orders"] > 100


def test_report_json_layout_and_pnl(run_dir: tuple[Path, dict[str, Any]]) -> None:
    out, run = run_dir
    rep = json.loads((out / "report.json").read_text())
    assert set(rep) == {"metadata", "metrics"}
    assert set(rep["metrics"]) == {"pnl", "counts", "inventory", "risk", "markouts", "attribution", "funding",
                                   "daily"}
    assert rep["metadata"]["run_id"] == "synthetic-7"
    pnl = rep["metrics"]["pnl"]
    assert pnl["net_pnl"] == pytest.approx(run["equity"]["net_pnl"].iloc[-1], abs=1e-6)
    assert pnl["funding"] == 0.0 and pnl["funding_available"] is False
    assert pnl["fees_paid"] == pytest.approx(pnl["expected_fees_from_rates"], rel=1e-9)  # slippage apart
    assert pnl["slippage"] > 0
    by = rep["metrics"]["attribution"]["by_cause"]
    assert sum(e["n_fills"] for e in by.values()) == rep["metrics"]["counts"]["n_fills"]
    assert by["queue"]["n_fills"] > 0 and by["other"]["n_fills"] > 0
    assert set(rep["metrics"]["markouts"]["horizons"]) == {"100ms", "1s", "10s"}


def test_report_json_is_byte_stable(run_dir: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, run = run_dir
    write_report_json(tmp_path, run["metadata"], run["metrics"])
    assert (tmp_path / "report.json").read_bytes() == (out / "report.json").read_bytes()
    assert (out / "report.json").read_bytes() == dumps_canonical(build_report(run["metadata"], run["metrics"]))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write cleaned up


def _key_numbers(metrics: dict[str, Any]) -> list[str]:
    p, c, r = metrics["pnl"], metrics["counts"], metrics["risk"]
    return [f"{p['net_pnl']:.4f}", f"{p['gross_pnl']:.4f}", f"{p['fees_paid']:.4f}",
            f"{p['spread_capture']:.4f}", f"{p['inventory_pnl']:.4f}", str(c["n_fills"]),
            f"{c['maker_share'] * 100:.2f} %", f"{c['fill_ratio'] * 100:.2f} %",
            f"{r['max_drawdown_usdt']:.4f}", f"{r['cvar95_minute_pnl']:.4f}",
            f"{r['sharpe_per_minute']:.4f}", f"{p['slippage']:.4f}",
            f"{p['adverse_selection']['1s']:.4f}",
            f"{metrics['attribution']['by_cause']['queue']['spread_capture']:.4f}",
            f"{metrics['markouts']['horizons']['1s']['mean_bps']:.2f}"]


def test_short_run_has_no_annualised_sharpe_anywhere(run_dir: tuple[Path, dict[str, Any]]) -> None:
    """Item 1.8: a 10-minute run shows the per-minute Sharpe with its sample size and says why
    there is no annualised figure, in every format."""
    out, _ = run_dir
    rep = json.loads((out / "report.json").read_text())
    assert rep["metrics"]["risk"]["sharpe_annualised"] is None
    note = "n/a: needs >= 30 complete UTC days, run has 0"
    assert rep["metrics"]["risk"]["sharpe_annualised_note"] == note
    md, page = (out / "report.md").read_text(), html.unescape((out / "report.html").read_text())
    for text in (md, page):
        assert note in text and "Sharpe per minute (not annualised, n = 10 minutes)" in text
        assert "sqrt(525600)" not in text
    assert "Sharpe per minute, not annualised (n = 10)" in page  # the headline card


def test_attribution_and_funding_sections(run_dir: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run_dir
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, page):
        assert "Fill attribution" in text and "book_through" in text and "trade_through" in text
        assert "No funding data for this instrument" in text
        assert "Extra slippage (simulator)" in text and "Exchange fees (rebates negative)" in text


def test_markdown_contains_key_numbers(run_dir: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run_dir
    rep = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for s in _key_numbers(rep["metrics"]):
        assert s in md, s
    assert "synthetic-7" in md and "| 10s |" in md


def test_html_is_self_contained_and_has_key_numbers(run_dir: tuple[Path, dict[str, Any]]) -> None:
    out, _ = run_dir
    rep = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    for s in _key_numbers(rep["metrics"]):
        assert s in page, s
    assert page.count('<div id="mmbot-plot-') == 6  # interactive plots (tests/test_report_html.py)
    assert not re.search(r"<script[^>]*\ssrc=|<link\b", page)  # every script inline
    # outside the inlined BokehJS (which holds URLs it fetches only for features not used here)
    text = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "http://" not in text and "https://" not in text


def test_reports_handle_a_run_without_fills(tmp_path: Path) -> None:
    run = make_synthetic_run(minutes=2)
    fills = run["fills"].iloc[0:0]
    orders = run["orders"].iloc[0:0]
    metrics = compute_report_metrics(fills, orders, run["mid_ts_ns"], run["mid_px"], run["start_ns"],
                                     run["end_ns"], starting_balance=1000.0)
    equity = equity_curve(fills, run["mid_ts_ns"], run["mid_px"], run["start_ns"], run["end_ns"])
    paths = write_all_reports(tmp_path, {"run_id": "empty"}, metrics, equity, fills,
                              run["mid_ts_ns"], run["mid_px"])
    rep = json.loads(paths["json"].read_text())
    assert rep["metrics"]["pnl"]["net_pnl"] == 0.0
    assert rep["metrics"]["risk"]["sharpe_annualised"] is None
    assert "n/a" in paths["md"].read_text()


def test_notebook_is_committed_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


@pytest.mark.slow
def test_notebook_executes_on_a_run(run_dir: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager

    # "python3" must launch this interpreter: jupyter_client swaps a bare "python" argv[0] for
    # sys.executable; the prefix probe below proves the kernel really is this venv.
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in {"python", "python3", sys.executable}, spec.argv
    out, run = run_dir
    monkeypatch.setenv("MMBOT_RUN_DIR", str(out))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let ipykernel pick its inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert str(out.resolve()) in text
    assert f"{run['metrics']['pnl']['net_pnl']:.4f}" in text  # the ledger cross-check printed it
    n_images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert n_images >= 4


def test_multi_day_run_with_funding_renders_daily_and_funding_tables(tmp_path: Path) -> None:
    """A sparse 2-day run (12:00 day 1 -> 06:00 day 3) with one funding settlement: the daily
    table and the settlement table appear in report.md and report.html, with report.json's values."""
    from mmbot.report.metrics import funding_payments

    hour, day0 = 3_600_000_000_000, START_NS
    start, end = day0 + 12 * hour, day0 + 54 * hour
    mid_ts = np.array([start, day0 + 30 * hour, day0 + 36 * hour, day0 + 51 * hour], dtype=np.int64)
    mid_px = np.array([100.0, 102.0, 99.0, 101.0])
    fills = pd.DataFrame({"ts_event_ns": np.array([day0 + 18 * hour, day0 + 52 * hour], dtype=np.int64),
                          "client_order_id": ["O-1", "O-2"], "venue_order_id": ["V-1", "V-2"],
                          "trade_id": ["T-1", "T-2"], "side": ["BUY", "SELL"], "price": [100.0, 101.0],
                          "qty": [1.0, 1.0], "fee": [0.01, 0.01], "slippage": [0.0, 0.0],
                          "cause": ["queue", "book_through"], "ts_trigger_ns": [0, 0], "liquidity": ["MAKER", "MAKER"]})
    orders = pd.DataFrame({"client_order_id": ["O-1", "O-2"], "status": ["FILLED", "FILLED"], "filled_qty": [1.0, 1.0]})
    funding = funding_payments(fills, [day0 + 32 * hour], [0.0001], mid_ts, mid_px)
    equity = equity_curve(fills, mid_ts, mid_px, start, end, step_ns=hour, funding=funding)
    metrics = compute_report_metrics(fills, orders, mid_ts, mid_px, start, end, equity=equity, grid_step_ns=hour,
                                     funding=funding)
    paths = write_all_reports(tmp_path, {"run_id": "two-days"}, metrics, equity, fills, mid_ts, mid_px)
    rep = json.loads(paths["json"].read_text())
    assert [d["day"] for d in rep["metrics"]["daily"]] == ["2024-06-03", "2024-06-04", "2024-06-05"]
    assert rep["metrics"]["pnl"]["funding"] == pytest.approx(-0.0102)
    md, page = paths["md"].read_text(), html.unescape(paths["html"].read_text())
    for text in (md, page):
        assert "Daily (UTC days)" in text and "2024-06-04" in text and "-1.0102" in text and "3.0102" in text
        assert "2024-06-04 08:00:00" in text and "-0.0102" in text and "1 settlement(s) in the run" in text


def test_simulator_section_lists_every_counter(tmp_path: Path) -> None:
    """Hostile review of issue 12, finding 8: the queue simulator's counters reach report.json
    (``metrics.simulator``, every key of ``QueueSimExecutionClient.stats``) and report.md/html (the
    "Simulator" table: each known counter with its meaning, each cause, and a counter the table
    does not know yet: listed, never dropped). A run without the section (Nautilus' own fill
    model) shows no such table."""
    from adapters.sim.exec_client import QueueSimExecutionClient  # noqa: F401 (the counters' owner)
    from mmbot.backtest.run import simulator_section
    from mmbot.report.simulator import MEANINGS

    run = make_synthetic_run(minutes=2)
    metrics = compute_report_metrics(run["fills"], run["orders"], run["mid_ts_ns"], run["mid_px"], run["start_ns"],
                                     run["end_ns"], starting_balance=1000.0)
    stats = {k: 7 for k, _ in MEANINGS} | {"brand_new_counter": 3,
                                           "fill_causes": {"queue": 1, "trade_through": 2, "book_through": 4}}
    with_sim = {**metrics, "simulator": simulator_section(stats)}
    equity = equity_curve(run["fills"], run["mid_ts_ns"], run["mid_px"], run["start_ns"], run["end_ns"])
    paths = write_all_reports(tmp_path / "sim", {"run_id": "sim"}, with_sim, equity, run["fills"],
                              run["mid_ts_ns"], run["mid_px"])
    rep = json.loads(paths["json"].read_text())
    assert rep["metrics"]["simulator"] == stats
    for text in (paths["md"].read_text(), paths["html"].read_text()):
        assert "Simulator" in text
        for key, meaning in MEANINGS:
            assert key in text and html.escape(meaning) in text or meaning in text, key
        for key in ("fill_causes.queue", "fill_causes.book_through", "brand_new_counter"):
            assert key in text, key
    md = paths["md"].read_text()
    assert "| late_events | 7 |" in md and "| brand_new_counter | 3 |" in md
    assert "Other metrics" not in md  # the section is not repeated as flattened rows
    paths = write_all_reports(tmp_path / "nautilus", {"run_id": "n"}, metrics, equity, run["fills"],
                              run["mid_ts_ns"], run["mid_px"])
    assert "## Simulator" not in paths["md"].read_text()
