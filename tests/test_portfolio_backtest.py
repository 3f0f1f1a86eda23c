"""Three instruments in one node (docs/portfolio.md): config/portfolio.toml on the embedded portfolio
catalog (XRPUSDT large tick + BTCUSDT small tick + DOGEUSDT mid tick over the same five minutes),
run twice (~10 s each).

Checks: fills on every instrument (not all book-through); the default [risk.portfolio] acting; each instrument's orders, fills, ids and position its own (an XRP fill never
moves the BTC strategy's inventory); the per-instrument sections from the right instrument; the
portfolio section = the sum of the sections to the cent and = Nautilus' cross-check; overrides on
the right instrument; byte-identical reports; one simulator per instrument behind one router."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import ConfigError, load_backtest_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "portfolio.toml"
XRP, BTC, DOGE = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT", "DOGEUSDT-LINEAR.BYBIT"
TAGS = {XRP: "000", BTC: "001", DOGE: "002"}
NO_ALLOCATOR = "portfolio.allocator.enabled=false"


def _config_text(portfolio_guard: bool = True) -> str:
    """config/portfolio.toml on the embedded catalog, kill file in the run's folder; without
    ``portfolio_guard`` its [risk.portfolio] table left out (the symbol-scope tests: a portfolio
    breach would restrict every symbol and hide what one symbol's breach does)."""
    text = CONFIG.read_text().replace('catalog = "../catalog-portfolio"', f'catalog = "{ROOT / "catalog-portfolio"}"')
    text = text.replace('file = "../runs/KILL.{env}.{account}"', 'file = "KILL.{env}.{account}"')
    if not portfolio_guard:
        head, _, rest = text.partition("[risk.portfolio]\n")
        assert rest, "config/portfolio.toml has no [risk.portfolio] table"
        text = head + rest[rest.index("\n# The instruments"):]
    return text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("portfolio")
    out = []
    for name in ("a", "b"):
        cfg = load_backtest_config(CONFIG, [])
        run_backtest(cfg, out_dir=base / name)
        out.append(base / name)
    return out


def _btc_limited(text: str) -> str:
    """BTC's own position limits (in its override table) below one BTC order."""
    table = f'[portfolio.overrides."{BTC}"]\n'
    assert table in text
    return text.replace(table, table + "risk.position.soft_position_notional_usdt = 100.0\n"
                                       "risk.position.hard_position_notional_usdt = 200.0\n")


@pytest.fixture(scope="module")
def unguarded(tmp_path_factory):
    """The default run without [risk.portfolio] and without the allocator (the symbol-scope tests'
    reference run: both couple the instruments on purpose, so XRP would not match row for row)."""
    base = tmp_path_factory.mktemp("portfolio-unguarded")
    path = base / "p.toml"
    path.write_text(_config_text(portfolio_guard=False))
    run_backtest(load_backtest_config(path, [NO_ALLOCATOR, "report.html=false"]), out_dir=base / "out")
    return base / "out"


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def test_report_is_byte_identical_twice(runs):
    a, b = runs
    for name in ("report.json", "report.md", "report.html", "fills.parquet", "orders.parquet", "equity.parquet",
                 "audit.jsonl", "report.XRPUSDT-LINEAR.html", "report.BTCUSDT-LINEAR.html",
                 "report.DOGEUSDT-LINEAR.html"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_fills_on_every_instrument_not_all_book_through(runs):
    """Each tick regime fills, and not only because the book moved through the quotes: the queue
    (or a trade printing through the price) fills a share of every instrument's orders."""
    secs = _report(runs[0])["metrics"]["instruments"]
    for iid in TAGS:
        causes = {c: r["n_fills"] for c, r in secs[iid]["metrics"]["attribution"]["by_cause"].items()}
        assert sum(causes.values()) >= 10, (iid, causes)
        assert causes.get("book_through", 0) < sum(causes.values()), (iid, causes)


def test_the_default_portfolio_guard_acts_on_the_embedded_run(runs):
    """config/portfolio.toml's [risk.portfolio] limits are reached on the embedded five minutes:
    the guard goes REDUCE_ONLY (and back) at least once, in report.json and in the audit log, and
    while it is restricted a flat instrument quotes neither side."""
    rep = _report(runs[0])
    node = [t for t in rep["metrics"]["risk"]["transitions"] if t["guard"] == "portfolio" and t["instrument_id"] is None]
    assert [t["new_state"] for t in node[:2]] == ["REDUCE_ONLY", "ACTIVE"], node[:2]
    assert node[0]["reason"].startswith("portfolio ") and "beyond soft limit" in node[0]["reason"]
    metrics = rep["metrics"]["risk"]["guards"]["portfolio"]
    assert metrics["time_in_state_s"]["REDUCE_ONLY"] > 1.0 and metrics["max_gross_notional_usdt"] > 1500.0
    assert "REDUCING" not in metrics["time_in_state_s"] and "HALTED" not in metrics["time_in_state_s"]
    audit = [json.loads(line) for line in (runs[0] / "audit.jsonl").read_text().splitlines()]
    logged = [(r["ts_ns"], r["new_state"], r["reason"]) for r in audit if r["guard"] == "portfolio"
              and r["instrument_id"] is None]
    assert logged[:len(node)] == [(t["ts_ns"], t["new_state"], t["reason"]) for t in node]
    assert logged[0][2] == node[0]["reason"]
    sides = [r for r in audit if r["guard"] == "portfolio" and r["instrument_id"] is not None
             and r["new_state"] == "REDUCE_ONLY"]
    assert sides and all(not (r["allow_bid"] or r["allow_ask"]) for r in sides if r["numbers"]["position_base"] == 0)
    # holding a position: never both sides; one side only if it is the reducing one (a hedge leg
    # against a breached net's sign quotes neither: docs/portfolio.md, "Effects")
    held = [r for r in sides if r["numbers"]["position_base"] != 0]
    assert held and not any(r["allow_bid"] and r["allow_ask"] for r in held)
    one = [r for r in held if r["allow_bid"] != r["allow_ask"]]
    assert one and all(r["allow_bid"] == (r["numbers"]["position_base"] < 0) for r in one)


def test_fills_on_both_and_each_instruments_ids_are_its_own(runs):
    fills = pd.read_parquet(runs[0] / "fills.parquet")
    orders = pd.read_parquet(runs[0] / "orders.parquet")
    for iid, tag in TAGS.items():
        mine = fills[fills.instrument_id == iid]
        assert len(mine) > 0, f"no fills on {iid}"
        label = iid.rpartition(".")[0]
        # client order ids O-<date>-<time>-<trader tag>-<strategy tag>-<n>: this instrument's strategy
        assert set(mine.client_order_id.str.split("-").str[4]) == {tag}
        assert mine.trade_id.str.startswith(f"{label}-QT-").all()
        assert mine.venue_order_id.str.startswith(f"{label}-Q-").all()
        assert set(orders[orders.instrument_id == iid].client_order_id.str.split("-").str[4]) == {tag}
    assert fills.trade_id.is_unique and len(set(fills.venue_order_id)) == fills.groupby(
        ["instrument_id", "venue_order_id"]).ngroups


def test_each_position_is_its_own_instruments_fills(runs):
    """The section's final position, and the strategy's own inventory (position events of its
    instrument), both equal the signed sum of that instrument's fills only."""
    fills = pd.read_parquet(runs[0] / "fills.parquet")
    rep = _report(runs[0])
    for iid in TAGS:
        mine = fills[fills.instrument_id == iid]
        signed = float(((mine.side == "BUY") * 2 - 1).mul(mine.qty).sum())
        sec = rep["metrics"]["instruments"][iid]["metrics"]
        assert sec["inventory"]["final_position_base"] == pytest.approx(signed, abs=1e-9)
        assert sec["strategy"]["position_base_at_end"] == pytest.approx(signed, abs=1e-9)
    assert {iid: rep["metrics"]["instruments"][iid]["metrics"]["counts"]["n_fills"] for iid in TAGS} == \
        fills.groupby("instrument_id").size().to_dict()


def test_portfolio_is_the_sum_of_the_sections_and_nautilus_agrees(runs):
    rep = _report(runs[0])
    port, secs = rep["metrics"]["portfolio"], rep["metrics"]["instruments"]
    for key in ("net_pnl", "net_pnl_ex_funding", "gross_pnl", "fees_paid", "slippage", "funding",
                "nautilus_account_net_pnl"):
        total = sum(s["metrics"]["pnl"][key] for s in secs.values())
        assert round(port["pnl"][key], 2) == round(total, 2), key
    assert port["counts"]["n_fills"] == sum(s["metrics"]["counts"]["n_fills"] for s in secs.values())
    # Nautilus' books (each instrument's positions) against the ledgers, per instrument and in total
    for s in secs.values():
        assert s["metrics"]["pnl"]["nautilus_account_net_pnl"] == pytest.approx(
            s["metrics"]["pnl"]["net_pnl_ex_funding"], abs=1e-6)
    assert port["pnl"]["nautilus_account_net_pnl"] == pytest.approx(port["pnl"]["net_pnl_ex_funding"], abs=1e-6)
    # the table row of each instrument is that instrument's section
    for iid, row in port["by_instrument"].items():
        m = secs[iid]["metrics"]
        assert (row["n_fills"], row["net_pnl"], row["final_position_base"]) == (
            m["counts"]["n_fills"], m["pnl"]["net_pnl"], m["inventory"]["final_position_base"])
    causes = {}
    for s in secs.values():
        for c, r in s["metrics"]["attribution"]["by_cause"].items():
            causes[c] = causes.get(c, 0) + r["n_fills"]
    assert port["fill_causes"] == causes
    assert rep["metrics"]["simulator"]["unrouted_commands"] == 0


def test_overrides_reach_their_instrument_only(runs):
    rep = _report(runs[0])
    params = {iid: s["metadata"]["strategy_params"] for iid, s in rep["metrics"]["instruments"].items()}
    assert params[BTC]["min_half_spread_bps"] == 0.5 and params[XRP]["min_half_spread_bps"] == 0.1
    assert params[DOGE]["min_half_spread_bps"] == 0.25 and params[DOGE]["level_spacing_bps"] == 0.25
    assert params[BTC]["instrument_id"] == BTC and params[XRP]["instrument_id"] == XRP
    assert params[DOGE]["instrument_id"] == DOGE
    # sizes resolved per instrument at its own price: 391 USDT is 200 XRP, 0.005 BTC, ~909 DOGE
    assert params[XRP]["level_size"] == 200.0 and params[BTC]["level_size"] == 0.005
    assert 850 <= params[DOGE]["level_size"] <= 950


def test_one_simulator_per_instrument_each_on_its_own_data(runs):
    rep = _report(runs[0])
    sims = {iid: s["metrics"]["simulator"] for iid, s in rep["metrics"]["instruments"].items()}
    assert all(s["market_events"] > 0 and s["fills"] > 0 for s in sims.values())
    assert sims[XRP]["market_events"] != sims[BTC]["market_events"]
    assert rep["metrics"]["simulator"]["fills"] == sum(s["fills"] for s in sims.values())


def test_router_hands_each_command_to_its_instruments_simulator():
    """adapters/sim/router.py without an engine: calls recorded by stand-in simulators."""
    from nautilus_trader.model.identifiers import InstrumentId

    from adapters.sim.router import QueueSimRouter

    calls = []

    class Sim:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, method):
            return lambda command: calls.append((self.name, method, str(command.instrument_id)))

    x, b = InstrumentId.from_str(XRP), InstrumentId.from_str(BTC)
    router = QueueSimRouter.__new__(QueueSimRouter)  # no Nautilus plumbing needed for routing
    router.sims, router.unrouted_commands = {x: Sim("xrp"), b: Sim("btc")}, 0
    for method in ("modify_order", "cancel_order", "cancel_all_orders", "query_order"):
        for iid in (b, x):
            getattr(router, method)(SimpleNamespace(instrument_id=iid))
    router.batch_cancel_orders(SimpleNamespace(cancels=[SimpleNamespace(instrument_id=b)]))
    assert all((name == "xrp") == (iid == XRP) for name, _m, iid in calls), calls
    assert len(calls) == 9
    router.cancel_order(SimpleNamespace(instrument_id=InstrumentId.from_str("ETHUSDT-LINEAR.BYBIT")))
    assert router.unrouted_commands == 1 and len(calls) == 9


def test_instruments_that_do_not_overlap_are_refused_in_one_line(tmp_path):
    """The default catalog's XRPUSDT (December) and BTCUSDT (June) share no instant."""
    path = tmp_path / "p.toml"
    text = CONFIG.read_text().replace('catalog = "../catalog-portfolio"', f'catalog = "{ROOT / "catalog"}"')
    text = text.replace(f', "{DOGE}"]', "]")  # the default catalog has no DOGEUSDT: leave it and its override out
    path.write_text(text[:text.index("# DOGEUSDT's tick")])
    p = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--config", str(path), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "portfolio.instruments: the instruments' data do not overlap" in lines[0], p.stderr
    assert not (tmp_path / "out").exists()


def test_an_instrument_missing_from_the_catalog_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(f'[run]\ncatalog = "{ROOT / "catalog-portfolio"}"\n[portfolio]\ninstruments = ["{XRP}", "ETHUSDT-LINEAR.BYBIT"]\n')
    cfg = load_backtest_config(path, [])
    with pytest.raises(ConfigError, match=r"^portfolio.instruments: ETHUSDT-LINEAR.BYBIT is not in catalog "):
        run_backtest(cfg, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_embedded_portfolio_catalog_is_a_deterministic_build():
    """catalog-portfolio/ is rebuilt byte for byte by tools.build_catalog --portfolio (~8 s)."""
    from mmbot.paths import PORTFOLIO_CATALOG
    from tools.build_catalog import PORTFOLIO_DATASETS, check

    assert check(PORTFOLIO_CATALOG, PORTFOLIO_DATASETS) == []


def test_the_kill_switch_halts_every_instrument(tmp_path):
    """One kill switch for the node, scoped to every instrument: with its file present neither
    strategy sends an order (before: it was scoped to the first instrument, so BTC's strategy kept
    quoting into a HALTED RiskEngine, its orders DENIED)."""
    path = tmp_path / "p.toml"
    path.write_text(_config_text())
    (tmp_path / "KILL.backtest.default").write_text('{"reason": "test"}\n')
    cfg = load_backtest_config(path, ['run.end="2024-12-01T07:58:30Z"'])
    outcome = run_backtest(cfg, out_dir=tmp_path / "out")
    rep = _report(tmp_path / "out")
    assert rep["metadata"]["started_halted"]["guard"] == "kill_switch"
    assert {iid: s["metrics"]["counts"]["n_orders"] for iid, s in rep["metrics"]["instruments"].items()} == \
        {XRP: 0, BTC: 0, DOGE: 0}
    assert outcome.extras["started_halted"]["guard"] == "kill_switch"


def test_runs_ls_shows_the_portfolio_sums(runs):
    """mmbot runs ls/diff on a portfolio run folder: its instruments and the portfolio's sums
    (before: metrics.pnl.* did not exist there, so every figure read "-", and the instrument was
    the first one's)."""
    from mmbot.report.runs import load_run

    info = load_run(runs[0])
    rep = _report(runs[0])
    assert info.instrument == f"{XRP}+{BTC}+{DOGE}"
    assert info.metric("pnl.net_pnl") == rep["metrics"]["portfolio"]["pnl"]["net_pnl"]
    assert info.metric("counts.n_fills") == rep["metrics"]["portfolio"]["counts"]["n_fills"]
    assert not info.problems


def test_portfolio_equity_is_the_sum_of_the_instruments_curves(runs):
    """metrics.portfolio.equity from equity.parquet: net PnL and position notionals summed per
    grid instant; the drawdown of that sum; the gross exposure at most the sum of the maxima."""
    import numpy as np

    rep = _report(runs[0])
    eq = rep["metrics"]["portfolio"]["equity"]
    assert eq["available"]
    df = pd.read_parquet(runs[0] / "equity.parquet")
    df["notional"] = (df.position * df.mid).fillna(0.0)
    by_ts = df.groupby("ts_ns").agg(net=("net_pnl", "sum"), gross=("notional", lambda x: x.abs().sum()),
                                    n=("instrument_id", "nunique"))
    assert (by_ts.n == 3).all()
    net = by_ts.net.to_numpy()
    assert round(eq["final_net_pnl"], 2) == round(rep["metrics"]["portfolio"]["pnl"]["net_pnl"], 2)
    assert eq["max_drawdown_usdt"] == pytest.approx(float(np.max(np.maximum.accumulate(np.maximum(net, 0)) - net)),
                                                    abs=1e-6)
    assert eq["max_gross_notional"] == pytest.approx(float(by_ts.gross.max()), rel=1e-9)
    assert eq["max_gross_notional"] <= rep["metrics"]["portfolio"]["inventory"]["max_abs_notional"] + 1e-6


def test_a_symbol_breach_restricts_that_symbol_only(tmp_path, unguarded):
    """BTC's position limits below one BTC order: BTC's guard goes REDUCING at its fills. Before:
    the supervisor put Nautilus' node-wide RiskEngine in REDUCING, which DENIED ~3,900 XRP orders.
    Now the RiskEngine stays ACTIVE (no node-scope constraint), BTC's state is enforced on BTC only
    (strategies/risk/instrument_state.py), and XRP trades exactly as in the run without the breach:
    its orders and fills are identical row for row."""
    text = _btc_limited(_config_text(portfolio_guard=False))  # below one BTC order: REDUCING at its fill
    path = tmp_path / "p.toml"
    path.write_text(text)
    run_backtest(load_backtest_config(path, [NO_ALLOCATOR, "report.html=false"]), out_dir=tmp_path / "out")
    rep = _report(tmp_path / "out")
    secs = rep["metrics"]["instruments"]
    transitions = rep["metrics"]["risk"]["transitions"]
    assert any(t["new_state"] == "REDUCING" and t["instrument_id"] == BTC for t in transitions)
    assert secs[BTC]["metrics"]["risk"]["guards"]["guards"]["position"]["transitions"] > 0
    # the RiskEngine (node scope) never moved; every per-instrument state change is BTC's, recorded
    assert not [t for t in transitions if t["guard"] == "risk_engine"]
    own = [t for t in transitions if t["guard"] == "instrument_state"]
    assert own and {t["instrument_id"] for t in own} == {BTC} and own[0]["new_state"] == "REDUCING"
    audit = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    assert [(r["guard"], r["instrument_id"], r["new_state"]) for r in audit if r["guard"] == "instrument_state"] == \
        [(t["guard"], t["instrument_id"], t["new_state"]) for t in own]
    assert rep["metrics"]["risk"]["final_trading_state"] == "ACTIVE"
    # each section: its own transitions and final state
    assert secs[XRP]["metrics"]["risk"]["guards"]["n_transitions"] == 0
    assert secs[XRP]["metrics"]["risk"]["guards"]["instrument_trading_state"] == "ACTIVE"
    btc_final = [t["new_state"] for t in own][-1]
    assert secs[BTC]["metrics"]["risk"]["guards"]["instrument_trading_state"] == btc_final
    assert secs[BTC]["metrics"]["risk"]["guards"]["final_trading_state"] == btc_final
    # XRP: no order DENIED, and exactly the unrestricted run's orders and fills
    assert secs[XRP]["metrics"]["counts"]["status_counts"].get("DENIED", 0) == 0
    for name in ("orders", "fills"):
        mine = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        base = pd.read_parquet(unguarded / f"{name}.parquet")
        for other in (XRP, DOGE):
            mine_o, base_o = (d[d.instrument_id == other].reset_index(drop=True) for d in (mine, base))
            assert len(mine_o) > 0
            pd.testing.assert_frame_equal(mine_o, base_o)


def test_the_symbol_restriction_is_enforced_before_the_risk_engine(tmp_path, unguarded, monkeypatch):
    """Defence in depth: with the strategies deaf to the guards' constraints (they keep quoting both
    sides), BTC's REDUCING state still holds: the per-instrument check in front of the RiskEngine
    DENIES BTC's increasing orders with Nautilus' own reasons, only while BTC is REDUCING, and not
    one XRP order (XRP's orders and fills stay the unrestricted run's)."""
    from strategies.market_maker import MarketMaker

    monkeypatch.setattr(MarketMaker, "_on_risk_constraint", lambda self, msg: None)
    text = _btc_limited(_config_text(portfolio_guard=False))
    path = tmp_path / "p.toml"
    path.write_text(text)
    run_backtest(load_backtest_config(path, ['report.html=false', NO_ALLOCATOR]), out_dir=tmp_path / "out")
    rep = _report(tmp_path / "out")
    orders = pd.read_parquet(tmp_path / "out" / "orders.parquet")
    denied = orders[orders.status == "DENIED"]
    assert len(denied) > 0 and set(denied.instrument_id) == {BTC}
    expected = {"BUY": f"BUY when TradingState.REDUCING and LONG {BTC}",
                "SELL": f"SELL when TradingState.REDUCING and SHORT {BTC}"}
    assert (denied.reason == denied.side.map(expected)).all()
    # only while BTC's state is REDUCING (the supervisor's instrument_state records)
    own = [t for t in rep["metrics"]["risk"]["transitions"] if t["guard"] == "instrument_state"]
    spans, start = [], None
    for t in own:
        if t["new_state"] == "REDUCING":
            start = t["ts_ns"]
        elif start is not None:
            spans.append((start, t["ts_ns"]))
            start = None
    if start is not None:
        spans.append((start, 2**63))
    assert all(any(a <= ts <= b for a, b in spans) for ts in denied.ts_init_ns)
    for name in ("orders", "fills"):
        mine = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        base = pd.read_parquet(unguarded / f"{name}.parquet")
        mine, base = (d[d.instrument_id == XRP].reset_index(drop=True) for d in (mine, base))
        pd.testing.assert_frame_equal(mine, base)


def test_each_instruments_pnl_guards_count_its_own_fills(runs):
    """The loss and drawdown guards of an instrument judge that instrument's fills only (before:
    every fill of the account, so XRP's loss guard HALTED XRP on BTC's losses)."""
    rep = _report(runs[0])
    for iid, s in rep["metrics"]["instruments"].items():
        guards = s["metrics"]["risk"]["guards"]["guards"]
        n = s["metrics"]["counts"]["n_fills"]
        assert n > 0 and guards["loss"]["fills"] == n and guards["drawdown"]["fills"] == n, iid
