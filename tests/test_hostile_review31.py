"""Hostile review 31: trades decoded in chunk_size/10 pieces and replayed chunks dropped early
(92af46a), the backtest audit log in the run's own locked folder (729f147), and the bench windows
read from the catalog (e9a811c), attacked as a hostile user or a bad day would (H31-Fn).

Held (no test here, evidence in the review report): the merged stream, fills/orders/equity,
report.json and audit.jsonl byte-identical for run.chunk_size 1, 2, 9, 10, 11, 997 and 1e8 with
tightened guards; trades decoded identically at every trade chunk size, ties on ts_init included;
a cached wf replay three times over; no trade rows / book rows missing; audit.jsonl (single and
portfolio) identical to 8ca3f94's and verified; nothing left beside --out after a refused config,
an exception or KeyboardInterrupt while running or writing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "tools" / "bench" / "results.json"


def _results_bytes() -> bytes | None:
    return RESULTS.read_bytes() if RESULTS.exists() else None


# -- F1: odd --minutes for the bench were a traceback (exit 1), or a silently wrong figure ------


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "inf"])
def test_h31_f1_bench_odd_minutes_is_one_line_exit_2(minutes):
    """``--minutes 0`` (or negative) started a backtest child whose ConfigError came back as a
    RuntimeError traceback holding the child's traceback (exit 1); ``nan``/``inf`` a pandas
    traceback. Now refused before any work: one line naming --minutes, exit 2, no results."""
    before = _results_bytes()
    res = subprocess.run([sys.executable, "-m", "tools.bench", "guards", "--minutes", minutes, "--no-doc"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "--minutes" in lines[0], lines
    assert _results_bytes() == before


def test_h31_f1_bench_wf_trials_zero_is_one_line_exit_2():
    before = _results_bytes()
    res = subprocess.run([sys.executable, "-m", "tools.bench", "wf", "--wf-trials", "0", "--no-doc"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "--wf-trials" in lines[0], lines
    assert _results_bytes() == before


def _no_child(*a, **k):
    raise AssertionError("a benchmark child was started for a window the catalog does not hold")


def test_h31_f1_minutes_longer_than_the_catalog_are_refused(monkeypatch, capsys):
    """``--minutes 1000`` on the embedded 60-minute catalog: run.end was clipped to the catalog's
    end without a word, every child replayed the hour and results.json recorded
    ``"minutes": 1000`` beside figures of 60 minutes. Refused now, naming the catalog's length."""
    import tools.bench.__main__ as B
    import tools.bench.guards as G

    monkeypatch.setattr(G, "_child", _no_child)
    monkeypatch.setattr(B, "RESULTS", Path("/nonexistent/never-written.json"))
    assert B.main(["guards", "--minutes", "1000", "--no-doc"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--minutes 1000" in err[0] and "catalog" in err[0], err

    from tools.bench.window import BenchInputError, window

    with pytest.raises(BenchInputError, match="--minutes"):
        window(G.CONFIG, 1000.0)
    assert window(G.CONFIG, 60.0)  # the default `make bench` window still fits the embedded hour


def test_h31_f1_a_config_whose_instrument_has_no_book_rows(tmp_path, monkeypatch, capsys):
    """The window helper on a config whose catalog holds no order-book rows for its instrument:
    a RuntimeError traceback out of ``python -m tools.bench guards``. One line naming the config
    and the instrument, exit 2, no child started."""
    import tools.bench.__main__ as B
    import tools.bench.guards as G

    cat = tmp_path / "cat"
    shutil.copytree(REPO / "catalog", cat)
    shutil.rmtree(cat / "data" / "order_book_deltas" / "XRPUSDT-LINEAR.BYBIT")
    text = (REPO / "config" / "backtest.toml").read_text()
    cfg = tmp_path / "bt.toml"
    cfg.write_text(text.replace('catalog = "../catalog"', f'catalog = "{cat}"'))
    assert f'catalog = "{cat}"' in cfg.read_text()
    monkeypatch.setattr(G, "CONFIG", cfg)
    monkeypatch.setattr(G, "_child", _no_child)
    monkeypatch.setattr(B, "RESULTS", Path("/nonexistent/never-written.json"))
    assert B.main(["guards", "--minutes", "0.5", "--no-doc"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(cfg) in err[0] and "XRPUSDT-LINEAR.BYBIT" in err[0], err
