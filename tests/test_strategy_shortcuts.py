"""The hot-path shortcuts of issue 14 change no fill (docs/strategy.md, "Settled sides";
docs/benchmarks.md, "Per-message shortcuts").

Each case runs the same backtest with every shortcut on (the default) and with the shortcuts off
(the full per-message work), and requires ``fills.parquet``, ``orders.parquet``,
``equity.parquet`` and ``report.json`` to be byte-identical, as ``tests/test_feed_identity.py``
does for the two feeds. The planner's own property test (``tests/test_planner.py``,
``test_settled_shortcut_returns_the_full_pass_actions_and_state``) compares actions and records
after every call; this is the end-to-end check on the real engine, simulator and guards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbot.backtest.run import run_backtest
from mmbot.config.backtest import load_backtest_config
from strategies import planner as pl

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "backtest.toml"
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")
_PLANNER_INIT = pl.Planner.__init__
WINDOW = ['run.start="2024-12-01T07:58:00Z"', 'run.end="2024-12-01T08:02:00Z"']

CASES = {
    "default": [],
    # the imbalance guard blocks sides often, the inventory limit binds, amends replaced by cancels
    "tight": ["strategy.imbalance_cutoff=0.3", "strategy.use_amend=false",
              "risk.position.soft_position=200", "risk.position.hard_position=400"],
    "zero_latency": ["venue.order_latency_ms=0", "venue.cancel_latency_ms=0", "venue.amend_latency_ms=0",
                     "venue.response_latency_ms=0"],
}


def _run(out: Path, sets: list[str]):
    cfg = load_backtest_config(CONFIG, [*WINDOW, *sets, "report.html=false", "run.progress=false"])
    return run_backtest(cfg, out_dir=out)


def _shortcuts(monkeypatch, on: bool) -> list:
    """Turn the shortcuts on or off for the next run; returns the planners it builds."""
    planners: list = []

    def record(self, *a, **kw):
        _PLANNER_INIT(self, *a, **kw)
        planners.append(self)

    monkeypatch.setattr(pl.Planner, "__init__", record)
    monkeypatch.setattr(pl, "SETTLED_SHORTCUT", on)
    return planners


@pytest.mark.parametrize("case", sorted(CASES))
def test_shortcuts_change_nothing(tmp_path, monkeypatch, case):
    full = _shortcuts(monkeypatch, False)
    slow = _run(tmp_path / "full", CASES[case])
    fast_planners = _shortcuts(monkeypatch, True)
    fast = _run(tmp_path / "fast", CASES[case])
    assert fast.report["metrics"]["counts"]["n_fills"] > 0, "a case without fills proves little"
    assert sum(p.settled_sides for p in full) == 0
    assert sum(p.settled_sides for p in fast_planners) > 0, "the shortcut was never taken"
    assert fast.events == slow.events
    for name in OUTPUTS:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
