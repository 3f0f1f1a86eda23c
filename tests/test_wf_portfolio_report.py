"""The wf report of a portfolio run (docs/tuning.md, "Portfolio", Outputs): report.html's
"Per symbol and portfolio" section plots each instrument's and the portfolio's in-sample vs
out-of-sample objective per split (the single-instrument in-sample vs out-of-sample plot, per
symbol). By hand on a made-up report (bar heights = the report's figures, each in its instrument's
panel), and on a small per_symbol run of config/portfolio.toml rendered in headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mmbot.paths import REPO_ROOT
from mmbot.tuning import report as T
from tests.test_report_html import _chromium, _chromium_console, _console_errors, _near

XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"


def _report(mode: str) -> dict:
    """Two used splits and a skipped one; every figure distinct, so a swapped one shows."""
    def split(i, is_x, is_b, is_p, oos_x, oos_b, oos_p):
        s = {"index": i, "in_sample_objective": is_p,
             "out_of_sample": {"objective": oos_p, "by_instrument": {XRP: {"objective": oos_x}, BTC: {"objective": oos_b}}}}
        if mode == "shared":
            s["in_sample_by_instrument"] = {XRP: is_x, BTC: is_b}
        else:
            s["champion_by_instrument"] = {XRP: {"in_sample_objective": is_x}, BTC: {"in_sample_objective": is_b}}
        return s
    p_is = (lambda v: v) if mode == "shared" else (lambda v: None)  # per_symbol: the combination has no in-sample
    return {"portfolio": {"instruments": [XRP, BTC], "params": mode},
            "splits": [split(0, 1.0, -2.0, p_is(-1.0), 0.5, -3.0, -2.5),
                       {"index": 1, "out_of_sample": None},
                       split(2, 4.0, 2.0, p_is(6.0), -1.5, 1.25, -0.25)]}


@pytest.mark.parametrize("mode", ["shared", "per_symbol"])
def test_each_panel_holds_its_instruments_objectives_by_split(mode):
    rep = _report(mode)
    rows = T.symbol_objectives(rep)
    assert list(rows) == [XRP, BTC, "portfolio"]
    assert rows[XRP] == [(0, 1.0, 0.5), (2, 4.0, -1.5)]
    assert rows[BTC] == [(0, -2.0, -3.0), (2, 2.0, 1.25)]
    assert rows["portfolio"] == ([(0, -1.0, -2.5), (2, 6.0, -0.25)] if mode == "shared"
                                 else [(0, None, -2.5), (2, None, -0.25)])
    fig = T.plot_symbol_objectives(rep, "obj")
    axes = fig.axes
    assert [ax.get_title(loc="right") for ax in axes] == [XRP, BTC, "portfolio"]
    for ax, name in zip(axes, rows, strict=True):
        bars = sorted((round(p.get_x() + p.get_width() / 2, 6), p.get_height()) for p in ax.patches)
        want = sorted([(round(i - 0.2, 6), r[1]) for i, r in enumerate(rows[name]) if r[1] is not None]
                      + [(round(i + 0.2, 6), r[2]) for i, r in enumerate(rows[name])])
        assert bars == want, name
        assert [t.get_text() for t in ax.get_xticklabels()] == ["split 0", "split 2"]
        n_a = [t for t in ax.texts if t.get_text() == "n/a"]
        assert len(n_a) == (2 if name == "portfolio" and mode == "per_symbol" else 0), name
    labels = axes[0].get_legend().get_texts()
    assert sorted(t.get_text() for t in labels) == ["in-sample (train, champion)", "out-of-sample (test)"]


@pytest.fixture(scope="module")
def per_symbol_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wfpr") / "run"
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "wf", "--config", str(REPO_ROOT / "config" / "portfolio.toml"),
                        "--space", str(REPO_ROOT / "config" / "wf_portfolio.toml"), "--no-progress",
                        "--start", "2024-12-01T07:58:00Z", "--end", "2024-12-01T08:02:00Z", "--trials", "1",
                        "--workers", "1", "--out", str(out)], capture_output=True, text=True, check=False,
                       cwd=REPO_ROOT, env=dict(os.environ), timeout=900)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_portfolio_wf_page_has_the_per_symbol_plot_and_renders_in_headless_chromium(per_symbol_run, tmp_path):
    page = (per_symbol_run / "report.html").read_text(encoding="utf-8")
    section = page.split("<h2>Per symbol and portfolio</h2>", 1)[1].split("<h2>", 1)[0]
    assert '<img alt="per-symbol and portfolio objective by split" src="data:image/png;base64,' in section
    chrome = _chromium()
    if chrome is None:
        if os.environ.get("MMBOT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MMBOT_REQUIRE_CHROMIUM=1 (.ci/run found or installed chromium) but none on PATH")
        pytest.skip("no chromium on PATH (CI installs it: .ci/run); outside CI this check is skipped")
    from PIL import Image

    # the per-symbol section alone (the page's other plots use the same two colours)
    alone = tmp_path / "section.html"
    alone.write_text(f"<!DOCTYPE html><html><head></head><body>{section}</body></html>", encoding="utf-8")
    shot = tmp_path / "shot.png"
    rc, console, stderr = _chromium_console(chrome, alone, shot, tmp_path / "p")
    assert rc == 0, stderr[-2000:]
    assert not _console_errors(console), "\n".join(console)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert _near(img, "#2166ac") > 2000, "no in-sample bars"
    assert _near(img, "#b2182b") > 2000, "no out-of-sample bars"
    rc, console, stderr = _chromium_console(chrome, per_symbol_run / "report.html", tmp_path / "page.png", tmp_path / "q")
    assert rc == 0 and not _console_errors(console), "\n".join(console)
