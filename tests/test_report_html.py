"""report.html's interactive plots (mmbot/report/plots.py, docs/report.md "report.html"):
min/max decimation keeps every spike, position limits and guard transitions are drawn, the
page is byte-identical for the same run, and it renders in headless Chromium without console
errors and with the plots drawn."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmbot.report import plots as P
from mmbot.report.render import render_html

N_SPIKE = 1_000_000
SPIKE_UP, SPIKE_DOWN = 123_457, 777_779  # deliberately not multiples of any stride


def _stride(ts_ns: np.ndarray, y: np.ndarray, n_buckets: int = P.DEFAULT_BUCKETS) -> np.ndarray:
    """The old report's thinning (every k-th sample, at most 2 x n_buckets points): the mutant."""
    return np.arange(len(ts_ns))[::max(1, math.ceil(len(ts_ns) / (2 * n_buckets)))]


def _spike_series() -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(N_SPIKE, dtype=np.int64) * 20_000_000 + 1_733_038_200_000_000_000  # 20 ms book pushes
    y = 2.0 + 0.0001 * np.sin(np.arange(N_SPIKE) / 500.0)
    y[SPIKE_UP], y[SPIKE_DOWN] = 2.5, 1.5  # one sample each
    return ts, y


def _assert_spikes_survive(select) -> None:
    ts, y = _spike_series()
    keep = select(ts, y)
    assert len(keep) <= 2 * P.DEFAULT_BUCKETS + 2
    assert np.all(np.diff(keep) > 0)
    assert SPIKE_UP in keep and SPIKE_DOWN in keep, "a one-sample spike was dropped"


def test_minmax_decimation_keeps_one_sample_spikes_in_1m_points():
    _assert_spikes_survive(P.minmax_indices)


def test_stride_thinning_mutant_fails_the_spike_test():
    with pytest.raises(AssertionError, match="spike was dropped"):
        _assert_spikes_survive(_stride)


def test_quotes_plot_of_1m_mids_carries_the_spike():
    """End to end through the figure: the whole-run quote plot's data holds both spikes."""
    ts, y = _spike_series()
    eq = pd.DataFrame({"ts_ns": ts[::50_000], "mid": y[::50_000], "own_bid": y[::50_000] - 0.001,
                       "own_ask": y[::50_000] + 0.001})
    fills = pd.DataFrame({"ts_event_ns": pd.Series([], dtype="int64"), "price": [], "qty": [], "side": []})
    fig = P.quotes_figure(eq, fills, ts, y, None, None, None, P.DEFAULT_BUCKETS)
    ys = np.concatenate([np.asarray(r.data_source.data["y"]) for r in fig.renderers])
    assert ys.max() == 2.5 and ys.min() == 1.5
    assert max(len(r.data_source.data["y"]) for r in fig.renderers) <= 2 * P.DEFAULT_BUCKETS + 2


def test_all_nan_bucket_stays_a_gap_and_short_series_are_untouched():
    ts = np.arange(100_000, dtype=np.int64)
    y = np.ones(100_000)
    y[40_000:60_000] = np.nan  # no quote for a fifth of the run
    k = P.minmax_indices(ts, y, 100)
    assert np.isnan(y[k]).any() and np.nanmax(y[k]) == 1.0
    assert P.minmax_indices(ts[:150], y[:150], 100).tolist() == list(range(150))


def _small_run(transitions: list[dict] | None):
    t0 = 1_733_038_200_000_000_000
    ts = t0 + np.arange(0, 181, dtype=np.int64) * 1_000_000_000
    mid = 2.0 + 0.001 * np.sin(np.arange(len(ts)) / 10)
    pos = np.where(np.arange(len(ts)) >= 50, 200.0, 0.0)
    eq = pd.DataFrame({"ts_ns": ts, "mid": mid, "position": pos, "cash": -pos * 2.0, "gross_pnl": np.zeros(len(ts)),
                       "fees_paid": np.zeros(len(ts)), "slippage": np.zeros(len(ts)), "funding": np.zeros(len(ts)),
                       "net_pnl": np.linspace(0, -1, len(ts)), "drawdown": np.linspace(0, -1, len(ts)),
                       "own_bid": mid - 0.0002, "own_ask": mid + 0.0002})
    fills = pd.DataFrame({"ts_event_ns": [int(ts[50])], "client_order_id": ["O-1"], "venue_order_id": ["V-1"],
                          "trade_id": ["T-1"], "side": ["BUY"], "price": [float(mid[50])], "qty": [200.0],
                          "fee": [0.0], "slippage": [0.0], "cause": ["queue"], "ts_trigger_ns": [int(ts[50])],
                          "liquidity": ["MAKER"]})
    metadata = {"data_range": {"start_ns": int(ts[0]), "end_ns": int(ts[-1])},
                "config": {"strategy": {"max_position": 1000.0},
                           "risk": {"enabled": True, "guards": {"position": {
                               "soft_position": 1500.0, "hard_position": 2000.0,
                               "soft_notional": 3000.0, "hard_notional": 4000.0}}}}}
    metrics = {"counts": {"n_fills": 1},
               "attribution": {"by_cause": {"queue": {"n_fills": 1, "net_contribution": -0.5}}},
               "markouts": {"curve": [{"label": "1s", "horizon_ns": 10**9, "count": 1, "mean_bps": 0.3,
                                       "median_bps": 0.3, "p10_bps": 0.3, "p90_bps": 0.3, "mean_vs_mid_bps": -0.1}]}}
    if transitions is not None:
        metrics["risk"] = {"guards": {"transitions": transitions, "n_transitions": len(transitions),
                                      "transitions_truncated": 0, "guards": {}}}
    return {"metadata": metadata, "metrics": metrics}, eq, fills


def test_inventory_plot_draws_the_position_limits_and_guard_transitions():
    t = 1_733_038_200_000_000_000 + 100 * 1_000_000_000
    trans = [{"ts_ns": t, "time": "2024-12-01T07:31:40.000Z", "guard": "position", "old_state": "ACTIVE",
              "new_state": "REDUCING", "reason": "position 1600 > soft_position 1500"}]
    report, eq, fills = _small_run(trans)
    page = render_html(report, eq, fills, eq["ts_ns"].to_numpy(), eq["mid"].to_numpy())
    for label in ("strategy max_position = 1000", "guard soft_position = 1500", "guard hard_position = 2000",
                  "guard soft_notional = 3000 USDT (/ mid)", "guard hard_notional = 4000 USDT (/ mid)",
                  "guard transition (hover)", "position 1600 &gt; soft_position 1500"):
        assert label in page or label.replace("&gt;", ">") in page, label
    # the limits are +- lines in the data, not only legend text
    fig = P.inventory_figure(eq, fills, report["metadata"], report["metrics"]["risk"]["guards"], P.DEFAULT_BUCKETS)
    ys = {float(np.nanmax(np.asarray(r.data_source.data["y"]))) for r in fig.renderers if "y" in r.data_source.data}
    ys |= {float(np.nanmin(np.asarray(r.data_source.data["y"]))) for r in fig.renderers if "y" in r.data_source.data}
    assert {1000.0, 1500.0, 2000.0, -1000.0, -1500.0, -2000.0} <= ys
    seg = [r for r in fig.renderers if "reason" in r.data_source.data]
    assert len(seg) == 1 and list(seg[0].data_source.data["t"]) == [t / 1e6]


def test_same_report_renders_the_same_bytes_and_links_nothing():
    report, eq, fills = _small_run([])
    a = render_html(report, eq, fills, eq["ts_ns"].to_numpy(), eq["mid"].to_numpy())
    b = render_html(report, eq, fills, eq["ts_ns"].to_numpy(), eq["mid"].to_numpy())  # bokeh's counter moved on
    assert a == b
    assert not re.search(r'"id":"p[0-9]+"', a)
    # nothing loaded from elsewhere (BokehJS itself holds a MathJax CDN URL, fetched only for
    # LaTeX labels, which these plots do not have)
    assert not re.search(r'<script[^>]*\ssrc=|<link\b|<img[^>]*\ssrc="http', a)
    assert "Bokeh.embed.embed_items" in a and "mmbot-plot-inventory" in a


# ---------------------------------------------------------------------------------------------
# the default backtest's report.html in headless Chromium
# ---------------------------------------------------------------------------------------------

START, END = "2024-12-01T07:30:00Z", "2024-12-01T07:40:00Z"  # 10 minutes keeps this ~15 s


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from mmbot.cli.main import main

    base = tmp_path_factory.mktemp("html")
    outs = []
    for name in ("a", "b"):
        r = CliRunner().invoke(main, ["backtest", "run", "--start", START, "--end", END, "--out",
                                      str(base / name), "--no-progress"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        outs.append(base / name)
    return outs


@pytest.mark.slow
def test_default_backtest_report_html_is_byte_identical(default_run):
    a, b = default_run
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert (a / "report.html").read_bytes() == (b / "report.html").read_bytes()


def _near(img: np.ndarray, hex_color: str, tol: int = 8) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[:, :, :3].astype(int) - rgb).max(axis=2) <= tol).sum())


# This Chromium logs console.error() as an INFO:CONSOLE line like any console.log(); the probe,
# put first in a copy of the page, tags errors, warnings, uncaught exceptions and rejections.
_PROBE = ("<script>(function(){const log=console.log.bind(console);"
          "for(const k of ['error','warn']){console[k]=function(...a){log('MMBOT-CONSOLE-'+k+' '+a.map(String).join(' '))}}"
          "window.addEventListener('error',e=>log('MMBOT-CONSOLE-error uncaught '+e.message));"
          "window.addEventListener('unhandledrejection',e=>log('MMBOT-CONSOLE-error rejection '+String(e.reason)));"
          "})();</script>")


def _chromium_console(chrome: str, page: Path, shot: Path, tmp_path: Path) -> tuple[int, list[str], str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    proc = subprocess.run(
        [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--window-size=1280,6000", f"--screenshot={shot}", probed.as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return proc.returncode, console, proc.stderr


def _console_errors(console: list[str]) -> list[str]:
    return [ln for ln in console if "Uncaught" in ln or "ERROR:CONSOLE" in ln or "MMBOT-CONSOLE-" in ln]


def test_console_probe_catches_errors_warnings_and_exceptions(tmp_path):
    """The probe's own mutants: each kind of console problem, in its own script block of one page
    (an uncaught error ends only its block), is caught and tagged."""
    chrome = _chromium()
    if chrome is None:
        pytest.skip("no chromium on PATH (CI installs it: .ci/run)")
    bodies = {"error boom": 'console.error("boom")', "warn careful": 'console.warn("careful")',
              "error uncaught": "window.nope()", "error rejection": 'Promise.reject(new Error("late"))'}
    page = tmp_path / "bad.html"
    page.write_text("<html><head></head><body>x" + "".join(f"<script>{b}</script>" for b in bodies.values())
                    + "</body></html>")
    rc, console, _ = _chromium_console(chrome, page, tmp_path / "bad.png", tmp_path / "p")
    errors = "\n".join(_console_errors(console))
    assert rc == 0
    for tag in bodies:
        assert f"MMBOT-CONSOLE-{tag}" in errors, (tag, errors)


@pytest.mark.slow
def test_default_backtest_report_html_renders_in_headless_chromium(default_run, tmp_path):
    chrome = _chromium()
    if chrome is None:
        if os.environ.get("MMBOT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MMBOT_REQUIRE_CHROMIUM=1 (.ci/run found or installed chromium) but none on PATH")
        pytest.skip("no chromium on PATH (CI installs it: .ci/run); outside CI this check is skipped")
    from PIL import Image

    shot = tmp_path / "shot.png"
    rc, console, stderr = _chromium_console(chrome, default_run[0] / "report.html", shot, tmp_path)
    assert rc == 0, stderr[-2000:]
    assert not _console_errors(console), "\n".join(console)
    assert any("[bokeh" in ln for ln in console), "BokehJS never ran:\n" + stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    background = np.array([255, 255, 255])
    assert int((np.abs(img.astype(int) - background).max(axis=2) > 16).sum()) > 10_000, "blank screenshot"
    # Colours only the bokeh canvases draw (net PnL line, position line): the plots rendered.
    assert _near(img, "#2166ac") > 200, "no net PnL line in the screenshot"
    assert _near(img, "#5e3c99") > 200, "no position line in the screenshot"


def test_guard_bars_span_base_units_not_the_usdt_notional_limits():
    """A BTC-sized run: 4 000 USDT of hard_notional is 0.067 BTC at 60 000, not 4 000 BTC (which
    stretched the y axis so far that the position was a flat line)."""
    t = 1_733_038_200_000_000_000 + 100 * 1_000_000_000
    trans = [{"ts_ns": t, "time": "2024-12-01T07:31:40.000Z", "guard": "position", "old_state": "ACTIVE",
              "new_state": "REDUCING", "reason": "r"}]
    report, eq, fills = _small_run(trans)
    eq["mid"] = 60_000.0
    eq["position"] = eq["position"] / 20_000  # 0.01 BTC
    fills["qty"], fills["price"] = 0.01, 60_000.0
    report["metadata"]["config"] = {"strategy": {"max_position": 0.05}, "risk": {"guards": {"position": {
        "soft_position": 0.08, "hard_position": 0.1, "soft_notional": 3000.0, "hard_notional": 4000.0}}}}
    fig = P.inventory_figure(eq, fills, report["metadata"], report["metrics"]["risk"]["guards"], P.DEFAULT_BUCKETS)
    seg = [r for r in fig.renderers if "reason" in r.data_source.data][0].data_source.data
    assert list(seg["y1"]) == [0.1] and list(seg["y0"]) == [-0.1]
