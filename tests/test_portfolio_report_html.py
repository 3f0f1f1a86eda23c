"""report.html of a ``[portfolio]`` run (docs/portfolio.md, "Report"): net PnL by instrument and
their sum, exposure against ``[risk.portfolio]``'s limits, the allocation over time, the correlation
of per-minute PnL; rendered in headless Chromium (no console error; each plot's colour on screen),
byte-identical twice (test_portfolio_backtest.py runs the shipped config twice and compares)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmbot.report import portfolio as P
from tests.test_report_html import _chromium, _chromium_console, _console_errors, _near

ROOT = Path(__file__).resolve().parent.parent


def _section(ts, pnl):
    eq = pd.DataFrame({"ts_ns": np.asarray(ts, dtype=np.int64), "net_pnl": pnl, "position": np.zeros(len(ts)),
                       "mid": np.ones(len(ts))})
    return {"_frames": (None, None, eq)}


def test_minute_pnl_correlation_by_hand():
    """Minute PnLs a = [1, -1, 2, 0], b = 2a (r = 1), c = -a (r = -1), d flat (no variance: None);
    the trailing partial minute is left out, and two minutes are too few (None)."""
    m = 60_000_000_000
    ts = [0, m, 2 * m, 3 * m, 4 * m, 4 * m + m // 2]
    a = np.cumsum([0, 1, -1, 2, 0, 5.0])
    secs = {"a": _section(ts, a), "b": _section(ts, 2 * a), "c": _section(ts, -a), "d": _section(ts, np.zeros(6))}
    corr = P.minute_pnl_correlation(secs, 0, ts[-1])
    assert corr["n_minutes"] == 4
    r = corr["pairs"]
    assert r["a"]["b"] == pytest.approx(1.0) and r["a"]["c"] == pytest.approx(-1.0) and r["a"]["a"] == pytest.approx(1.0)
    assert r["a"]["d"] is None and r["d"]["d"] is None
    short = P.minute_pnl_correlation({"a": _section(ts[:3], a[:3]), "b": _section(ts[:3], a[:3])}, 0, ts[2])
    assert short["n_minutes"] == 2 and short["pairs"]["a"]["b"] is None


def test_exposure_plot_draws_each_limit_that_is_on():
    from bokeh.models import Span

    from mmbot.report import plots as PL

    ts = np.arange(5, dtype=np.int64) * 1_000_000_000
    p = PL.portfolio_exposure_figure(ts, np.ones(5), -np.ones(5), {"soft_gross_notional_usdt": 1500.0,
                                                                    "hard_gross_notional_usdt": 0.0,
                                                                    "soft_net_notional_usdt": 1000.0,
                                                                    "hard_net_notional_usdt": float("nan")})
    spans = sorted(s.location for s in p.center if isinstance(s, Span))
    assert spans == [-1000.0, 0.0, 1000.0, 1500.0]  # off (0) and NaN limits are not drawn


@pytest.fixture(scope="module")
def portfolio_run(tmp_path_factory):
    from mmbot.backtest.run import run_backtest
    from mmbot.config.backtest import load_backtest_config

    out = tmp_path_factory.mktemp("pf-html") / "out"
    cfg = load_backtest_config(ROOT / "config/portfolio.toml", [f"run.catalog={ROOT / 'catalog-portfolio'}"])
    run_backtest(cfg, out_dir=out)
    return out


def test_portfolio_page_has_its_plots_and_the_correlation(portfolio_run):
    page = (portfolio_run / "report.html").read_text(encoding="utf-8")
    for key in ("pnl", "exposure", "allocation"):
        assert f'id="mmbot-plot-{key}"' in page
    rep = json.loads((portfolio_run / "report.json").read_text())
    corr = rep["metrics"]["portfolio"]["equity"]["minute_pnl_correlation"]
    assert corr["n_minutes"] == 4 and set(corr["pairs"]) == set(rep["metadata"]["portfolio"]["instruments"])
    assert "Correlation of per-minute net PnL (4 complete minutes)" in page
    assert "<script src=" not in page and "<link " not in page  # BokehJS inlined: the page loads nothing


@pytest.mark.slow
def test_portfolio_page_renders_in_headless_chromium(portfolio_run, tmp_path):
    chrome = _chromium()
    if chrome is None:
        if os.environ.get("MMBOT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MMBOT_REQUIRE_CHROMIUM=1 (.ci/run found or installed chromium) but none on PATH")
        pytest.skip("no chromium on PATH (CI installs it: .ci/run); outside CI this check is skipped")
    from PIL import Image

    shot = tmp_path / "shot.png"
    rc, console, stderr = _chromium_console(chrome, portfolio_run / "report.html", shot, tmp_path)
    assert rc == 0, stderr[-2000:]
    assert not _console_errors(console), "\n".join(console)
    img = np.asarray(Image.open(shot).convert("RGB"))
    # colours only the bokeh canvases draw: the portfolio PnL (black is text too: use the symbols'),
    # the gross exposure line, the allocation's stacked areas (drawn at fill_alpha 0.75 on white)
    assert _near(img, "#1b9e77") > 200, "no first-instrument PnL line"
    assert _near(img, "#2166ac") > 200, "no gross exposure line"
    assert _near(img, "#7570b3", tol=60) > 200, "no third-instrument line or allocation area"
