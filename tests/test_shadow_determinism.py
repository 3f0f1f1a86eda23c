"""Shadow decisions do not depend on how fast the node runs (docs/shadow.md, "Replay
consistency", items 2, 5, 6). CI (a loaded 2-core machine) saw the shadow/replay compare diverge;
reproduced with busy loops beside the e2e test, three causes: (1) a message's commands kept its
receive stamp only for 5 ms of WALL time, so a strategy sending four orders on one book message
had the last three stamped ~100 ms late; (2) the live DataEngine queued data between its stamp
and its handling; (3) the simulator's alerts ran on Nautilus' timer thread, interleaved with the
loop's handlers. Here (1) uses a wall clock = data clock + an injected handling lag, so the test
is deterministic; (2) and (3) check the shadow node's wiring."""

from __future__ import annotations

from pathlib import Path

from nautilus_trader.common.data_topics import TopicCache

import tests.queue_harness as qh
from adapters.sim.exec_client import QueueSimExecutionClient, SimParams
from adapters.sim.latency import Latency, LatencyModel
from adapters.sim.queue import QueueModel
from tests.queue_harness import BUY, SELL, snap

MS = 1_000_000
REPO = Path(__file__).resolve().parent.parent


class _WallClock:
    """The live node's wall clock as the simulator reads it: the data clock plus ``lag_ns`` (the
    time the node has spent behind the message's receive stamp: parsing, queues, preemption)."""

    def __init__(self, clock) -> None:
        self.clock, self.lag_ns = clock, 0

    def timestamp_ns(self) -> int:
        return self.clock.timestamp_ns() + self.lag_ns

    def __getattr__(self, name):
        return getattr(self.clock, name)


class _LaggingSim(QueueSimExecutionClient):
    """The simulator reading ``_WallClock`` (its Python code only; Nautilus' own event stamping
    keeps the engine clock)."""

    @property
    def _clock(self):
        w = self.__dict__.get("_wall")
        if w is None:
            w = self.__dict__["_wall"] = _WallClock(super()._clock)
        return w


def _params() -> SimParams:
    # Live feed (release_grace_ns > 0), 5 ms order latency, 10 ms response latency (the default).
    return SimParams(model=QueueModel("risk_averse", 3), latency=LatencyModel(order=Latency("constant", 5.0)),
                     release_grace_ns=50 * MS)


def _run(monkeypatch, actions, data):
    """The queue harness with ``_LaggingSim``; ``strategy.sim`` is the simulator (actions set its lag)."""
    monkeypatch.setattr(qh, "QueueSimExecutionClient", _LaggingSim)
    engine, client, strat = qh.make_engine(actions, _params())
    strat.sim = client
    client._clock.lag_ns = 2 * MS  # noqa: SLF001  # the node runs 2 ms behind the receive stamps
    # The shadow node's wiring (mmbot.live.shadow._synchronous_data): the simulator learns when a
    # market-data message has been handled by every subscriber (here: a last subscriber).
    topics = TopicCache()
    orig_start = strat.on_start

    def on_start():
        orig_start()
        for topic in (topics.get_deltas_topic(qh.IID), topics.get_trades_topic(qh.IID)):
            strat.msgbus.subscribe(topic=topic, handler=lambda _m: client.message_handled())

    strat.on_start = on_start
    engine.add_data([d for m in data for d in m])
    engine.run()
    return strat, client


def _accepted(strat) -> dict:
    return {n: x for _t, k, n, _q, _p, x in strat.events if k == "accepted"}


def _book(t_ms: float) -> list:
    return snap(t_ms, t_ms, [(100.0, 1.0)], [(100.5, 1.0)])


def test_commands_of_one_message_keep_its_stamp_however_long_the_handler_runs(monkeypatch):
    """Two orders sent while one book message (received at 20 ms) is handled; between them the
    node loses 30 ms of wall time (preempted). Both are sent at the message's stamp, as in the
    replay: they reach the exchange at 20 + 5 = 25 ms. The old 5 ms wall-time window stamped the
    second one with the wall clock (accepted at 55 ms)."""

    def act(st):
        wall = st.sim._clock  # noqa: SLF001
        st.place("a", BUY, 99.9, 0.001)
        wall.lag_ns = 32 * MS  # 30 ms of wall time pass inside the handler
        st.place("b", SELL, 100.6, 0.001)
        wall.lag_ns = 2 * MS

    strat, _ = _run(monkeypatch, [(20, act)], [_book(0), _book(20), _book(200)])
    assert _accepted(strat) == {"a": 25.0, "b": 25.0}, strat.events


def test_a_timer_command_after_the_message_was_handled_is_not_given_its_stamp(monkeypatch):
    """The message's scope ends when it has been handled: an order sent from a timer at 50 ms
    (no message being handled) is sent at the wall clock minus the handling lag (50 ms), not at
    the last message's stamp (20 ms)."""

    def act(st):
        st.clock.set_time_alert_ns("t", qh._ns(50), lambda _e: st.place("t", BUY, 99.9, 0.001))  # noqa: SLF001

    strat, _ = _run(monkeypatch, [(20, act)], [_book(0), _book(20), _book(200)])
    assert _accepted(strat) == {"t": 55.0}, strat.events


def test_shadow_node_handles_a_data_item_at_once_and_then_closes_the_message(tmp_path):
    """The shadow node's wiring (mmbot.live.shadow._synchronous_data): a data item sent to the
    DataEngine reaches the simulator's pre-hook at once (the live engine queued it: a frame's stamp
    and its handling were separated by queue time, in which timers and alerts could run), and the
    simulator is told afterwards that the message has been handled."""
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId

    node, run = _shadow_node(tmp_path)
    try:
        sim = run.qsim
        sim.start()  # subscribes its pre-hooks (the node is not run: nothing connects)
        inst = node.kernel.cache.instrument(InstrumentId.from_str(run.instrument_id))
        tick = TradeTick(inst.id, inst.make_price(100.0), inst.make_qty(inst.size_increment), AggressorSide.BUYER,
                         TradeId("1"), 10, 20)
        node.kernel.msgbus.send(endpoint="DataEngine.process", msg=tick)
        assert sim.stats["market_events"] == 1  # handled now, not queued for the event loop
        assert sim._msg_ts == 20 and not sim._in_msg  # noqa: SLF001  # and its scope closed after it
    finally:
        node.get_event_loop().close()



def test_shadow_simulator_alerts_run_on_the_event_loop_thread(tmp_path):
    """NautilusTrader 1.231's LiveClock calls time-alert callbacks on its own timer thread, which
    the GIL interleaves with the event loop's handlers: under load an alert was half-way through
    applying items (``_applying``) when a market-data message's pre-hook ran on the loop thread,
    so the pre-hook applied nothing and an item due before the message waited for the next one
    (CI: a fill reached the strategy one message late and the replay diverged). In shadow the
    simulator's alert work is posted to the event loop."""
    import asyncio
    import threading
    import time

    node, run = _shadow_node(tmp_path)
    try:
        sim = run.qsim
        sim.start()
        threads: list[int] = []
        sim._advance = lambda due: threads.append(threading.get_ident())  # noqa: SLF001
        sim._arm(sim._clock.timestamp_ns() - sim.params.release_grace_ns)  # noqa: SLF001  # fires now
        loop = node.get_event_loop()
        deadline = time.monotonic() + 10
        while not threads and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert threads == [threading.get_ident()]  # the loop's thread (this one), not the timer's
    finally:
        node.get_event_loop().close()


def _shadow_node(tmp_path):
    """A built (not running) shadow node on the default config: (node, ShadowRun)."""
    from mmbot.live.node import load_live_config
    from mmbot.live.shadow import ShadowRun, build_shadow_node_config

    cfg, live = load_live_config(REPO / "config/testnet.toml", [
        "venue.fill_model=risk_averse", f"live.out_dir={tmp_path}/runs", f"live.lock_dir={tmp_path}/locks",
        f"risk.audit.file={tmp_path}/audit.jsonl", f"risk.kill_switch.file={tmp_path}/KILL",
        "live.base_url_ws_public=ws://127.0.0.1:9/unused"])
    run = ShadowRun(build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path / "run"), cfg)
    return run.build(), run


def test_catch_up_for_stop_hands_the_strategy_every_item_due_by_the_stop_instant(monkeypatch):
    """The shadow stop (mmbot/live/shadow.py ShadowRun._strategy_stop_instants): order "a" sent at
    20 ms reaches the exchange at 25 ms, its ack is due at 35 ms (10 ms response latency); with no
    message after it, live, only the alert at 35 + 50 ms (grace) would deliver it. The node stops
    at 40 ms: ``catch_up_for_stop`` applies what is due by then, so the still-running strategy gets
    the ack before it is stopped, as the replay's strategy does at 35 ms, and returns 40 ms (the
    stamp the stop's cancels get): ``mmbot compare`` cuts both runs there."""
    seen: dict = {}

    def stop_at_40(st):
        before = set(_accepted(st))
        seen["stamp_ms"] = (st.sim.catch_up_for_stop() - qh.T0) / MS
        seen["before"], seen["after"] = before, set(_accepted(st))
        # every market event before the last one's exchange time (20 ms; only a book stream here) arrived
        seen["through_ms"] = (st.sim.received_through_ns() - qh.T0) / MS

    def act(st):
        st.place("a", BUY, 99.9, 0.001)
        st.clock.set_time_alert_ns("stop", qh._ns(40), lambda _e: stop_at_40(st))  # noqa: SLF001

    _run(monkeypatch, [(20, act)], [_book(0), _book(20), _book(200)])
    assert seen == {"stamp_ms": 40.0, "before": set(), "after": {"a"}, "through_ms": 20.0}, seen
