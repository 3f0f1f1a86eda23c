"""`make bench` (`python -m tools.bench`, every part) ran the guards, queue and wf benchmarks on a
fixed date, 2024-06-03: once the shipped configs replayed the 2024-12-01 XRPUSDT hour, each failed
on an empty window (ConfigError, or `assert outcome.trials_run == trials` in tools/bench/wf.py)
and nothing ran them. Each runs here on a short window of the embedded catalog, taken from the
catalog itself (tools/bench/window.py). Smoke tests: the figures are never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_window_starts_at_the_configs_first_book_row():
    from tools.bench.window import catalog_start_ns, window

    for name in ("backtest.toml", "wf.toml"):
        start, end = window(REPO / "config" / name, 2.0)
        t0 = catalog_start_ns(REPO / "config" / name)
        import pandas as pd

        assert pd.Timestamp(start).value <= t0 < pd.Timestamp(start).value + 1_000_000_000
        assert pd.Timestamp(end).value - pd.Timestamp(start).value == 120 * 1_000_000_000


def test_guards_bench_runs_on_the_embedded_catalog(tmp_path):
    from tools.bench.guards import bench_guards

    out = bench_guards(0.5, tmp_path, repeats=1)
    assert out["events"] > 1000 and "overhead_pct" in out  # the figures themselves are never asserted


def test_queue_bench_runs_on_the_embedded_catalog(tmp_path):
    from tools.bench.queue import bench_queue

    out = bench_queue(0.5, tmp_path, repeats=1)
    assert out["events"] > 1000 and "prob_power_cost_vs_nautilus_pct" in out


def test_wf_bench_runs_on_the_embedded_catalog():
    from tools.bench.wf import bench_wf

    out = bench_wf(trials=1, workers=(1,))
    assert "trials_per_min_1_worker" in out  # bench_wf itself asserts every trial ran


def test_backtest_bench_runs_on_a_generated_catalog(tmp_path):
    """The bare-replay baseline built its node from the raw config: the shipped notional sizes
    reached the builder unresolved (ConfigError) since sizes moved to USDT notional."""
    from tools.bench.__main__ import bench_backtest

    out = bench_backtest(1.0, 0.0, tmp_path)
    assert out["events"] > 1000 and {"bare_events_per_s", "peak_rss_mb_short"} <= set(out)


@pytest.mark.parametrize("parts", ["warmpu", "embedded,ob50", ","])
def test_a_misspelt_speed_part_is_one_line_exit_2(parts):
    """``--parts`` with a name no part has ran nothing and said nothing (exit 0, empty results);
    now refused before the baseline is checked out: one line naming --parts, exit 2."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "tools.bench", "speed", "--parts", parts, "--no-doc"],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=600,
                         check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "--parts" in lines[0], lines
