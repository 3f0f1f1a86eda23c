"""The queue simulator's wake-up alerts do not grow the run's memory (adapters/sim/exec_client.py).

Nautilus 1.231's clocks keep each alert name's callback after the alert fired. The simulator arms
one alert per pending acknowledgement or fill (~14,000 an hour on the default data); with a new
name and a new bound method each time, every one of them stayed alive to the end of the run (the
largest per-hour growth of a backtest's memory found in docs/benchmarks.md, "Memory"). It now
reuses the names of fired alerts and one bound method. Seen failing on the code before: 2,188
``_on_alert`` bound methods alive after the first 10 minutes of the default data.
"""

from __future__ import annotations

import gc
from pathlib import Path

import mmbot.backtest.run as R
from mmbot.config.backtest import load_backtest_config

REPO = Path(__file__).resolve().parent.parent


def test_alert_callbacks_and_names_stay_bounded_over_a_run(tmp_path, monkeypatch):
    seen: dict = {}
    install = R.install_queue_sim
    collect = R._collect

    def capture_sim(*a, **k):
        seen["qsim"] = install(*a, **k)
        return seen["qsim"]

    def count_alive(*a, **k):  # at the run's end, before the engine (and its clock) is disposed
        q = seen["qsim"]
        gc.collect()
        seen["methods"] = sum(1 for o in gc.get_objects()
                              if type(o).__name__ == "method" and getattr(o, "__self__", None) is q
                              and o.__func__.__name__ == "_on_alert")
        seen["names"] = getattr(q, "_alert_names_made", None)
        seen["armed"] = q._seq
        return collect(*a, **k)

    monkeypatch.setattr(R, "install_queue_sim", capture_sim)
    monkeypatch.setattr(R, "_collect", count_alive)
    cfg = load_backtest_config(REPO / "config" / "backtest.toml",
                               ["report.html=false", 'run.end="2024-12-01T07:40:00Z"'])
    out = R.run_backtest(cfg, out_dir=tmp_path / "bt")
    assert out.report["metrics"]["counts"]["n_fills"] > 0
    assert seen["methods"] <= 1, seen  # one bound method for every alert, not one per alert
    assert seen["names"] <= 64, seen   # names of fired alerts reused: bounded by those pending at once


def test_a_reused_name_the_live_clock_still_lists_is_left_for_a_new_one():
    """Shadow: LiveClock lists a fired alert until its callback returns on the clock's thread, and
    the simulator handles the alert on the event loop, so a freed name may still be taken when the
    next alert is armed: ``_arm`` takes a new name instead of raising (the real ``_arm`` on a real
    LiveClock; the client's other state is not involved)."""
    import time
    from types import SimpleNamespace

    from nautilus_trader.common.component import LiveClock

    from adapters.sim.exec_client import QueueSimExecutionClient as Q

    clock = LiveClock()
    now = clock.timestamp_ns()
    clock.set_time_alert_ns("P-QSIM-1", now + 60_000_000_000, callback=lambda e: None)  # still listed
    sim = SimpleNamespace(_armed={}, _alerts={}, _seq=0, _alert_names_free=["P-QSIM-1"], _alert_names_made=1,
                          _prefix="P-", _grace_ns=0, _clock=clock, _on_alert_cb=lambda e: None)
    sim._new_alert_name = lambda: Q._new_alert_name(sim)
    Q._arm(sim, now + 1_000_000_000)
    assert sim._armed == {now + 1_000_000_000: "P-QSIM-2"} and sim._alerts == {"P-QSIM-2": now + 1_000_000_000}
    assert sorted(clock.timer_names) == ["P-QSIM-1", "P-QSIM-2"]
    Q._arm(sim, now + 1_000_000_000)  # the same instant: armed once
    assert sim._seq == 1
    clock.cancel_timers()
    time.sleep(0.01)
