"""Clock callbacks run on the event loop's thread in live modes (strategies/risk/base.py
``loop_dispatcher``; the recorder's ``_on_loop``).

NautilusTrader 1.231's ``LiveClock`` calls timer and time-alert callbacks on its own timer thread
(shown below with a real LiveClock), which the GIL interleaves with the handlers the event loop runs:
a guard's periodic check could run half-way through another handler's update, and its cancels could
land inside a strategy handler. Every guard, the metrics actor and the recorder now post their clock
callbacks to the loop; a backtest (no running loop, TestClock calls back synchronously) is unchanged.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _alert_threads(wrap) -> tuple[bool, bool]:
    """(raw callback ran on the loop thread, wrapped callback ran on the loop thread)."""
    from nautilus_trader.common.component import LiveClock

    async def main():
        clock = LiveClock()
        loop_tid = threading.get_ident()
        raw, wrapped = [], []
        w = wrap()
        due = clock.timestamp_ns() + 30_000_000
        clock.set_time_alert_ns("raw", due, callback=lambda e: raw.append(threading.get_ident()))
        clock.set_time_alert_ns("wrapped", due, callback=w(lambda e: wrapped.append(threading.get_ident())))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if raw and wrapped:
                break
        clock.cancel_timers()
        return raw[0] == loop_tid, wrapped[0] == loop_tid

    return asyncio.run(main())


@pytest.mark.parametrize("where", ["guards", "recorder"])
def test_live_clock_callbacks_reach_the_loop_thread_only_through_the_dispatcher(where):
    from adapters.recorder import _on_loop
    from strategies.risk.base import loop_dispatcher

    wrap = loop_dispatcher if where == "guards" else (lambda: _on_loop)
    raw_on_loop, wrapped_on_loop = _alert_threads(wrap)
    assert not raw_on_loop, "Nautilus' LiveClock now calls back on the loop thread: the dispatcher may be obsolete"
    assert wrapped_on_loop


def test_without_a_running_loop_the_callback_is_unchanged():
    """A backtest: TestClock calls back synchronously and the report must stay byte-identical."""
    from adapters.recorder import _on_loop
    from strategies.risk.base import loop_dispatcher

    def cb(e):
        return e

    assert loop_dispatcher()(cb) is cb and _on_loop(cb) is cb


def test_a_callback_after_the_loop_closed_is_dropped_not_raised():
    from strategies.risk.base import loop_dispatcher

    async def make():
        return loop_dispatcher()

    wrap = asyncio.run(make())  # its loop is closed now
    ran = []
    t = threading.Thread(target=lambda: wrap(ran.append)("event"))
    t.start()
    t.join(5)
    assert ran == []


TIMER_CALL = re.compile(r"\.(set_timer|set_time_alert_ns)\(")


def _calls(path: Path):
    src = path.read_text()
    for m in TIMER_CALL.finditer(src):
        depth, i = 0, m.end() - 1
        while True:  # the call's whole argument list
            ch = src[i]
            depth += ch == "("
            depth -= ch == ")"
            i += 1
            if depth == 0:
                break
        yield src.count("\n", 0, m.start()) + 1, src[m.start():i]


def test_every_live_clock_callback_goes_through_the_dispatcher():
    """Every ``set_timer``/``set_time_alert_ns`` of a component that runs live (the guards, the
    metrics actor, the recorder, the run ledger's spill) wraps its callback. Not covered: adapters/sim
    (its alerts post themselves with ``run_on_loop``)."""
    files = sorted((REPO / "strategies").rglob("*.py")) + [REPO / "mmbot" / "live" / "metrics_server.py",
                                                        REPO / "adapters" / "recorder.py",
                                                        REPO / "mmbot" / "backtest" / "ledger.py"]
    unwrapped, seen = [], 0
    for f in files:
        for line, call in _calls(f):
            seen += 1
            if "_mk_prefix" in call and f.name == "edge.py":  # default handler: on_event posts it (below)
                continue
            if not re.search(r"callback=(self\.on_loop\(|self\._on_loop\(|_on_loop\(|on_loop\(|loop_dispatcher\(\)\()", call):
                unwrapped.append(f"{f.relative_to(REPO)}:{line}: {' '.join(call.split())[:100]}")
    assert seen >= 11, seen
    assert not unwrapped, "clock callbacks that would run on Nautilus' timer thread:\n" + "\n".join(unwrapped)


def test_live_ledger_does_not_purge_the_cache_from_a_timer():
    from mmbot.config.backtest import load_backtest_config
    from mmbot.live.node import live_ledger_config

    cfg = load_backtest_config(REPO / "config" / "testnet.toml", [])
    assert live_ledger_config(cfg, cfg.run.instrument).config["purge_interval_s"] == 0


def test_edge_markout_alerts_use_the_default_handler_not_a_callback_per_fill():
    """Nautilus 1.231's LiveClock keeps every callback it was given (one closure per set call, fired or
    not): the edge guard's alert per fill grew a live session's memory with its fills. Its markout
    alerts now carry no callback (the actor's default handler, registered once, reaches ``on_event``,
    which posts to the loop)."""
    src = (REPO / "strategies" / "risk" / "edge.py").read_text()
    calls = [c for _, c in _calls(REPO / "strategies" / "risk" / "edge.py") if "-mk-" in c or "_mk_prefix" in c]
    assert calls and all("callback=" not in c for c in calls), calls
    assert "self._due_on_loop(event)" in src


def test_live_clock_alerts_without_a_callback_keep_no_closure():
    """The mechanism the fix relies on: alerts to the default handler leave nothing behind."""
    import gc
    import time

    from nautilus_trader.common.component import LiveClock

    def wrappers() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__.startswith("__pyx_scope_struct__create_pyo3"))

    clock = LiveClock()
    fired: list[str] = []
    clock.register_default_handler(lambda e: fired.append(e.name))
    before = wrappers()
    now = clock.timestamp_ns()
    for i in range(200):
        clock.set_time_alert_ns(f"memtest-{i}", now + 1_000_000)
    deadline = time.monotonic() + 10.0
    while len(fired) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    gc.collect()
    assert len(fired) == 200
    assert wrappers() - before < 10, f"{wrappers() - before} closures kept for 200 fired alerts"
