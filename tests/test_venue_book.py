"""The simulated venue's book type (issue 14: skip Nautilus work nobody reads).

With the queue simulator (every ``venue.fill_model`` but ``"nautilus"``) no order ever reaches
Nautilus' matching engine, so its L2 book is a third copy of the market that nobody reads: the
venue is built ``L1_MBP`` and Nautilus stops applying every book row to it
(``mmbot.builders.venue_book_type``). With ``fill_model = "nautilus"`` the matching engine fills
our orders from that book: ``L2_MBP``.

Proof that the skipped book changes nothing: the same window with the venue forced back to
``L2_MBP`` gives byte-identical outputs, for the per-message and the per-delta feed and for a
portfolio (which replays per delta).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mmbot.builders as builders
from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import load_backtest_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "backtest.toml"
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")
WINDOW = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:00:00Z"', "report.html=false",
          "run.progress=false"]
FILL_MODELS = ("prob_power", "prob_log", "risk_averse", "nautilus")


@pytest.mark.parametrize("fill_model", FILL_MODELS)
def test_venue_book_type_follows_the_fill_model(fill_model):
    cfg = load_backtest_config(CONFIG, [*WINDOW, f'venue.fill_model="{fill_model}"'])
    want = "L2_MBP" if fill_model == "nautilus" else "L1_MBP"
    assert builders.venue_book_type(cfg) == want
    pcfg = load_backtest_config(REPO / "config" / "portfolio.toml", [f'venue.fill_model="{fill_model}"'])
    assert builders.venue_book_type(pcfg) == want
    from mmbot.backtest.run import resolve_window

    iid = cfg.run.instrument
    window = resolve_window(cfg.path(cfg.run.catalog), iid, cfg.run.start, cfg.run.end)
    run_config = builders.build_backtest_run_config(cfg, str(cfg.path(cfg.run.catalog)), iid, window)
    assert [v.book_type for v in run_config.venues] == [want]


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("feed", ["per_message", "per_delta"])
def test_the_unread_venue_book_changes_nothing(tmp_path, monkeypatch, feed):
    sets = [*WINDOW, f'run.feed="{feed}"']
    lean = run_backtest(load_backtest_config(CONFIG, sets), out_dir=tmp_path / "l1")
    monkeypatch.setattr(builders, "venue_book_type", lambda cfg: "L2_MBP")
    full = run_backtest(load_backtest_config(CONFIG, sets), out_dir=tmp_path / "l2")
    assert lean.report["metrics"]["counts"]["n_fills"] > 0
    assert lean.events == full.events
    assert _outputs(tmp_path / "l1") == _outputs(tmp_path / "l2")


def test_nautilus_fill_model_needs_its_l2_venue_book(tmp_path, monkeypatch):
    """Why ``"nautilus"`` keeps ``L2_MBP``: its matching engine fills from the venue's book, and an
    L1 venue ignores every book row (its fills would come from trades alone)."""
    sets = [*WINDOW, 'venue.fill_model="nautilus"']
    l2 = run_backtest(load_backtest_config(CONFIG, sets), out_dir=tmp_path / "l2")
    assert l2.feed == "per_delta"
    assert l2.report["metrics"]["counts"]["n_fills"] > 0
    monkeypatch.setattr(builders, "venue_book_type", lambda cfg: "L1_MBP")
    run_backtest(load_backtest_config(CONFIG, sets), out_dir=tmp_path / "l1")
    assert _outputs(tmp_path / "l1")["fills.parquet"] != _outputs(tmp_path / "l2")["fills.parquet"]


def test_portfolio_venue_book_changes_nothing(tmp_path, monkeypatch):
    """A portfolio replays per delta (every row reaches the venue): L1 vs L2 venue, same outputs;
    the spy shows the portfolio builder asks ``venue_book_type``."""
    from mmbot.backtest.portfolio import run_portfolio_backtest

    sets = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T07:59:30Z"', "report.html=false",
            "run.progress=false"]
    config = REPO / "config" / "portfolio.toml"
    asked: list[str] = []
    real = builders.venue_book_type
    monkeypatch.setattr(builders, "venue_book_type", lambda cfg: asked.append(real(cfg)) or asked[-1])
    lean = run_portfolio_backtest(load_backtest_config(config, sets), out_dir=tmp_path / "l1")
    assert asked == ["L1_MBP"]
    monkeypatch.setattr(builders, "venue_book_type", lambda cfg: "L2_MBP")
    run_portfolio_backtest(load_backtest_config(config, sets), out_dir=tmp_path / "l2")
    assert lean.report["metrics"]["portfolio"]["counts"]["n_fills"] > 0
    assert _outputs(tmp_path / "l1") == _outputs(tmp_path / "l2")
