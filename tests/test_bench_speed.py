"""tools/bench/speed.py's hftbacktest line runs against the crosscheck's current API (it had
silently broken when tools/crosscheck changed: an ImportError at the end of a 9-minute bench).
A smoke test on two minutes of the embedded catalog; the rates themselves are never asserted."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_hftbacktest_line_runs_on_the_embedded_catalog():
    from tools.bench.speed import hftbacktest_rows

    out = hftbacktest_rows(REPO / "catalog", 1, 50_000.0, minutes=2.0)
    assert out["rows"] > 1000
    assert out["hftbacktest_rows_per_s"]["median"] > 0
    assert out["mmbot_rows_per_s"] == 50_000 and out["hftbacktest_vs_mmbot"] > 0
