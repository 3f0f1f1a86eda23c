"""``[risk.portfolio]``: the node-wide exposure and PnL guard (strategies/risk/portfolio.py,
docs/portfolio.md "Portfolio guard"): its config rules, its formulas on hand-made numbers, and on
the embedded portfolio catalog (config/portfolio.toml, XRPUSDT + BTCUSDT, 5 minutes) a portfolio
breach restricting every symbol: soft -> both strategies quote only their reducing side, hard ->
the RiskEngine REDUCING, a daily loss -> HALTED and no order from either strategy after it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import ConfigError, load_backtest_config
from strategies.risk.portfolio import BetaEstimator, PortfolioGuard, PortfolioGuardConfig, ols_beta

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "portfolio.toml"
XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"
NO_ALLOCATOR = "portfolio.allocator.enabled=false"


DOGE = "DOGEUSDT-LINEAR.BYBIT"


def _config_text(table: str) -> str:
    """config/portfolio.toml on XRPUSDT and BTCUSDT only (the figures below are theirs: DOGEUSDT
    and its override table left out), its [risk.portfolio] table replaced by ``table``."""
    text = CONFIG.read_text().replace('catalog = "../catalog-portfolio"', f'catalog = "{ROOT / "catalog-portfolio"}"')
    text = text.replace('file = "../runs/KILL.{env}.{account}"', 'file = "KILL.{env}.{account}"')
    text = text.replace(f', "{DOGE}"]', "]")
    text = text[:text.index(f'# {DOGE.partition("-")[0]}\'s tick')]
    head, _, rest = text.partition("[risk.portfolio]\n")
    assert rest and DOGE not in text
    return head + f"[risk.portfolio]\n{table}\n" + rest[rest.index("\n# The instruments"):]


# -- config ---------------------------------------------------------------------------------------

ERRORS = [
    ("soft_gross_notional_usdt = nan", "risk.portfolio.soft_gross_notional_usdt: must be a finite number, was nan"),
    ("hard_net_notional_usdt = inf", "risk.portfolio.hard_net_notional_usdt: must be a finite number, was inf"),
    ("max_daily_loss_usdt = -1.0", "risk.portfolio.max_daily_loss_usdt: must be >= 0, was -1.0"),
    ("max_drawdown_usdt = 1e30", "risk.portfolio.max_drawdown_usdt: must be <= 1000000000000, was 1e+30"),
    ("soft_gross_notional_usdt = 20.0\nhard_gross_notional_usdt = 10.0",
     "risk.portfolio.soft_gross_notional_usdt: must be <= hard_gross_notional_usdt (10.0), was 20.0"),
    ("soft_net_notional_usdt = 20.0\nhard_net_notional_usdt = 10.0",
     "risk.portfolio.soft_net_notional_usdt: must be <= hard_net_notional_usdt (10.0), was 20.0"),
    ("soft_beta_net_notional_usdt = 20.0\nhard_beta_net_notional_usdt = 10.0",
     "risk.portfolio.soft_beta_net_notional_usdt: must be <= hard_beta_net_notional_usdt (10.0), was 20.0"),
    ("beta_window_minutes = 1", "risk.portfolio.beta_window_minutes: must be >= 2, was 1"),
    ("beta_window_minutes = 2.5", "risk.portfolio.beta_window_minutes: Expected `int`, got `float`"),
    ("beta_max = 0.0", "risk.portfolio.beta_max: must be > 0, was 0.0"),
    ("beta_max = nan", "risk.portfolio.beta_max: must be a finite number, was nan"),
    ("beta_max = inf", "risk.portfolio.beta_max: must be a finite number, was inf"),
    ("beta_max = -2.0", "risk.portfolio.beta_max: must be > 0, was -2.0"),
    ("beta_max = 1000.0", "risk.portfolio.beta_max: must be <= 100, was 1000.0"),
    ("soft_gros_notional_usdt = 1.0", "risk.portfolio.soft_gros_notional_usdt: unknown key; did you mean "
                                      "soft_gross_notional_usdt?"),
]


@pytest.mark.parametrize(("table", "expected"), ERRORS, ids=[e[1][:48] for e in ERRORS])
def test_each_bad_key_is_one_line(tmp_path, table, expected):
    path = tmp_path / "p.toml"
    path.write_text(_config_text(table))
    with pytest.raises(ConfigError) as e:
        load_backtest_config(path, [])
    assert "\n" not in str(e.value) and str(e.value) == f"{path}: {expected}"


def test_the_portfolio_table_is_refused_in_an_override(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(_config_text("") + "risk.portfolio.max_drawdown_usdt = 10.0\n")  # in BTC's override table
    with pytest.raises(ConfigError) as e:
        load_backtest_config(path, [])
    assert "risk.portfolio is node-wide (one per node): set it in [risk]" in str(e.value)


def test_a_beta_reference_outside_the_portfolio_exits_2_in_one_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(_config_text('beta_reference = "ETHUSDT-LINEAR.BYBIT"\nsoft_beta_net_notional_usdt = 1.0'))
    p = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--config", str(path), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0] == (f"error: {path}: risk.portfolio.beta_reference: must be one of the run's instruments ({XRP}, {BTC}), "
                        "was 'ETHUSDT-LINEAR.BYBIT'")


# -- formulas -------------------------------------------------------------------------------------

def _guard(**limits) -> PortfolioGuard:
    g = PortfolioGuard(PortfolioGuardConfig(instruments=(XRP, BTC), **limits))
    marks = {XRP: 2.0, BTC: 100_000.0}
    g.mark_price = lambda iid: marks[iid.value]
    return g


def test_gross_net_and_beta_weighted_net_notional():
    """XRP +100 at 2 (200 USDT), BTC -0.01 over two strategies at 100,000 (-1,000 USDT)."""
    g = _guard()
    g._positions = {(XRP, "MarketMaker-000"): 100.0, (BTC, "MarketMaker-001"): -0.004, (BTC, "Other"): -0.006}
    nets, gross, net, beta_net = g.exposure()
    assert nets == {XRP: 100.0, BTC: pytest.approx(-0.01)}
    assert gross == pytest.approx(1200.0) and net == pytest.approx(800.0) and beta_net == pytest.approx(800.0)
    g.beta.betas[BTC] = 2.0  # BTC moves twice as much as XRP: |200 + 2 x (-1000)|
    assert g.exposure()[3] == pytest.approx(1800.0)


def test_ols_beta_by_hand():
    x = [0.01, -0.02, 0.03, 0.0]
    y = [2 * v + 0.001 for v in x]
    assert ols_beta(x, y) == pytest.approx(2.0)
    assert ols_beta([0.01, 0.01], [0.5, -0.5]) is None  # the reference did not move


def test_beta_is_one_until_the_window_is_full_then_the_ols_slope():
    est = BetaEstimator([XRP, BTC], XRP, window=3)
    xrp = [2.0, 2.02, 1.98, 2.0]          # minute mids
    btc = [100.0, 100.5, 99.0, 99.0]
    est.sample({XRP: xrp[0], BTC: btc[0]})  # no return yet (NaN)
    for i in (1, 2):
        est.sample({XRP: xrp[i], BTC: btc[i]})
        assert est.betas == {XRP: 1.0, BTC: 1.0}  # fewer than 3 complete returns in the window
    est.sample({XRP: xrp[3], BTC: btc[3]})  # the window: the 3 returns of minutes 1-3
    rx = [math.log(b / a) for a, b in zip(xrp, xrp[1:])]
    ry = [math.log(b / a) for a, b in zip(btc, btc[1:])]
    assert est.betas[BTC] == pytest.approx(ols_beta(rx, ry)) and est.betas[XRP] == 1.0
    est.sample({XRP: math.nan, BTC: 99.3})  # a missing mid: its return leaves the window short again
    assert est.betas[BTC] == 1.0


# -- a portfolio breach restricts every symbol (embedded portfolio catalog) -------------------------

def _run(tmp_path: Path, table: str) -> tuple[dict, list[dict], pd.DataFrame, pd.DataFrame]:
    path = tmp_path / "p.toml"
    path.write_text(_config_text(table))
    # without the allocator (on in config/portfolio.toml): its budgets cap each position below
    # the limits these scenarios breach; they test the guard alone
    run_backtest(load_backtest_config(path, ["report.html=false", NO_ALLOCATOR]), out_dir=tmp_path / "out")
    out = tmp_path / "out"
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    return (json.loads((out / "report.json").read_text()), audit, pd.read_parquet(out / "orders.parquet"),
            pd.read_parquet(out / "fills.parquet"))


def _spans(audit: list[dict], guard: str, states: set[str]) -> list[tuple[int, int, str]]:
    """[start, end) of the node-scope states of ``guard`` in ``states``, from the audit log."""
    spans, cur = [], None
    for r in audit:
        if r["guard"] != guard or r["instrument_id"] is not None:
            continue
        if cur is not None:
            spans.append((cur[0], r["ts_ns"], cur[1]))
        cur = (r["ts_ns"], r["new_state"]) if r["new_state"] in states else None
    if cur is not None:
        spans.append((cur[0], 2**63, cur[1]))
    return spans


def _reduce_side_only(orders: pd.DataFrame, fills: pd.DataFrame, spans) -> dict[str, int]:
    """Per instrument, the orders submitted inside ``spans``; asserts each is on the side that
    reduces that instrument's position at its submission (position from the fills before it, or
    including those at the same instant)."""
    counts = {}
    for iid in (XRP, BTC):
        f = fills[fills.instrument_id == iid]
        signed = ((f.side == "BUY") * 2 - 1) * f.qty
        n = 0
        for o in orders[orders.instrument_id == iid].itertuples():
            if not any(a <= o.ts_init_ns < b for a, b, _ in spans):
                continue
            n += 1
            positions = (signed[f.ts_event_ns < o.ts_init_ns].sum(), signed[f.ts_event_ns <= o.ts_init_ns].sum())
            assert any((o.side == "BUY" and p < 0) or (o.side == "SELL" and p > 0) for p in positions), (iid, o)
        counts[iid] = n
    return counts


def test_soft_gross_breach_lets_every_symbol_quote_only_its_reducing_side(tmp_path):
    rep, audit, orders, fills = _run(tmp_path, "soft_gross_notional_usdt = 1500.0\nhard_gross_notional_usdt = 2500.0\n"
                                               "beta_window_minutes = 2")
    spans = _spans(audit, "portfolio", {"REDUCE_ONLY", "REDUCING", "HALTED"})
    assert spans and {s for _, _, s in spans} == {"REDUCE_ONLY"}
    counts = _reduce_side_only(orders, fills, spans)
    assert sum(counts.values()) > 0, counts  # new orders while restricted: each on its reducing side
    # soft: the RiskEngine untouched; the breach's numbers in the audit log
    assert not [r for r in audit if r["guard"] == "risk_engine"]
    first = next(r for r in audit if r["guard"] == "portfolio" and r["instrument_id"] is None)
    assert first["reason"] == "portfolio gross_notional beyond soft limit 1500"
    assert first["numbers"]["gross_notional_usdt"] > 1500.0
    sides = {r["instrument_id"] for r in audit if r["guard"] == "portfolio" and r["instrument_id"] is not None}
    assert sides == {XRP, BTC}
    metrics = rep["metrics"]["risk"]["guards"]["portfolio"]
    assert metrics["max_gross_notional_usdt"] > 1500.0
    # betas against the first instrument from 2-minute windows of the 5 minutes' 1-minute returns
    assert metrics["beta_reference"] == XRP and metrics["betas"][XRP] == 1.0 and metrics["betas"][BTC] != 1.0


def test_hard_gross_breach_puts_the_risk_engine_in_reducing_for_every_symbol(tmp_path):
    rep, audit, orders, fills = _run(tmp_path, "soft_gross_notional_usdt = 500.0\nhard_gross_notional_usdt = 1000.0")
    spans = _spans(audit, "portfolio", {"REDUCE_ONLY", "REDUCING"})
    assert {s for _, _, s in spans} == {"REDUCE_ONLY", "REDUCING"}
    counts = _reduce_side_only(orders, fills, spans)
    assert counts[XRP] > 0 and counts[BTC] > 0, counts
    engine = [(r["new_state"], r["reason"]) for r in audit if r["guard"] == "risk_engine"]
    assert engine and engine[0] == ("REDUCING", "most restrictive guard state (portfolio) after portfolio")
    reducing = _spans(audit, "portfolio", {"REDUCING"})
    engine_ts = [r["ts_ns"] for r in audit if r["guard"] == "risk_engine" and r["new_state"] == "REDUCING"]
    assert engine_ts == [a for a, _, _ in reducing]  # the RiskEngine follows the hard breaches exactly
    assert not (orders.status == "DENIED").any()  # the strategies already restricted themselves


@pytest.mark.parametrize(("key", "cause", "own"), [
    ("max_daily_loss_usdt", "daily_loss", ("loss", "worst_pnl_today_quote", -1.0)),
    ("max_drawdown_usdt", "drawdown", ("drawdown", "max_drawdown_quote", 1.0)),
])
def test_portfolio_loss_on_the_sum_halts_every_symbol(tmp_path, key, cause, own):
    """5.6 USDT on the SUM of the instruments' PnL: neither instrument's own loss (drawdown) guard
    ever saw 5.6 lost (XRP 5.53, BTC 0.11), the portfolio did (5.64): HALTED, no order from
    either strategy after it, both sections' final state HALTED."""
    rep, audit, orders, fills = _run(tmp_path, f"{key} = 5.6")
    halt = [r for r in audit if r["guard"] == "portfolio" and r["instrument_id"] is None]
    assert [r["new_state"] for r in halt] == ["HALTED"] and halt[0]["reason"] == f"portfolio {cause} beyond 5.6"
    figure = halt[0]["numbers"]["pnl_today_usdt" if cause == "daily_loss" else "drawdown_usdt"]
    assert figure * own[2] > 5.6
    guard, metric, sign = own
    seen = {iid: s["metrics"]["risk"]["guards"]["guards"][guard][metric] * sign
            for iid, s in rep["metrics"]["instruments"].items()}
    assert all(0 < v < 5.6 for v in seen.values()), seen
    t = halt[0]["ts_ns"]
    assert [r["new_state"] for r in audit if r["guard"] == "risk_engine"] == ["HALTED"]
    assert (orders.ts_init_ns <= t).all() and set(orders[orders.ts_init_ns < t].instrument_id) == {XRP, BTC}
    secs = rep["metrics"]["instruments"]
    assert {iid: s["metrics"]["risk"]["guards"]["final_trading_state"] for iid, s in secs.items()} == \
        {XRP: "HALTED", BTC: "HALTED"}
    assert rep["metrics"]["risk"]["final_trading_state"] == "HALTED"


def test_hard_breach_denies_a_flat_instruments_orders_even_if_the_strategies_ignore_it(tmp_path, monkeypatch):
    """Defence in depth (hostile review 25, F5): the strategies deaf to every constraint keep
    quoting both sides. Under a hard gross breach Nautilus' REDUCING passes every order of a FLAT
    instrument; mmbot's check in front of it (bound to the portfolio guard by the builder) denies
    them through the RiskEngine's own path (OrderDenied, the guard's reason), only while the guard
    is REDUCING. Before the fix: no order DENIED with that reason."""
    from strategies.market_maker import MarketMaker

    monkeypatch.setattr(MarketMaker, "_on_risk_constraint", lambda self, msg: None)
    rep, audit, orders, fills = _run(tmp_path, "soft_gross_notional_usdt = 500.0\nhard_gross_notional_usdt = 1000.0")
    denied = orders[orders.status == "DENIED"]
    flat = denied[denied.reason.str.contains("when portfolio REDUCING and", regex=False)]
    assert len(flat) > 0, denied.reason.value_counts()
    assert (flat.reason == flat.side + " when portfolio REDUCING and " + flat.instrument_id
            + " FLAT (would open a position)").all()
    reducing = _spans(audit, "portfolio", {"REDUCING"})
    assert all(any(a <= ts < b for a, b, _ in reducing) for ts in flat.ts_init_ns)
    # each one of an instrument with no position at its submission (the fills before it)
    for o in flat.itertuples():
        f = fills[(fills.instrument_id == o.instrument_id) & (fills.ts_event_ns < o.ts_init_ns)]
        assert float((((f.side == "BUY") * 2 - 1) * f.qty).sum()) == pytest.approx(0.0, abs=1e-9), o
