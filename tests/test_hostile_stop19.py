"""Hostile review of the stop-19 changes (startup sweep, StartupGate, cache purge, recorder day
files, fault-matrix judge). Every test here FAILED on the reviewed code (79cfe57) for the reason its
docstring states (run there by the reviewer and again before the fixes); the attacks that held are
listed in the review report (issue 13's closing note). Fixed since: all but the trader-tag finding,
which is a known residual (strict xfail, reason given).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import SimpleNamespace

import pytest

from tests.test_live_e2e import fake, recording  # noqa: F401  (fixtures: the loopback exchange)

IID = "BTCUSDT-LINEAR.BYBIT"


# -- startup sweep --------------------------------------------------------------------------------

def test_sigterm_during_the_startup_sweep_is_ignored_until_the_sweep_gives_up():
    """Expected: SIGTERM/SIGINT during the start stops the process promptly (exit 4, "stopped
    before ready"), as they do during Nautilus' own start. Actual: ``LiveRun._main`` installs its
    signal handlers (which only set an Event) and then awaits ``_sweep_leftovers()``; nothing
    watches the Event during the sweep, so a frozen exchange (leftover listed, cancels held) keeps
    the process for the whole ``live.stop_deadline_s`` (default 15 s, accepted up to 3600 s), and
    a second Ctrl-C does nothing either (the default SIGINT action is replaced). The operator's
    only way out is SIGKILL. mmbot/live/node.py:984 (``refused = await self._sweep_leftovers()``)."""
    from mmbot.live.node import LiveRun
    from mmbot.live.stop import SweepResult

    class FrozenVenueSweep:
        """The venue lists our leftover; every cancel is held: the sweep runs to its deadline."""
        deadline_s = 4.0

        async def run(self, instrument, local):
            await asyncio.sleep(self.deadline_s)
            return SweepResult(ok=False, verified=True, remaining=["O-20261203-050000-001-000-1"],
                               seconds=self.deadline_s, last_error="no answer within 3.0s")

    run = LiveRun(None, IID, ready_timeouts=(5.0, 5.0), sweep=FrozenVenueSweep())
    run.node = SimpleNamespace()  # never reached: the sweep refuses first

    async def main():
        loop = asyncio.get_running_loop()
        sent = {}

        def term():
            sent["t"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)

        loop.call_later(0.3, term)
        await run._main()
        return time.monotonic() - sent["t"]

    after_signal = asyncio.run(main())
    assert after_signal < 1.5, (f"the process kept sweeping {after_signal:.1f}s after SIGTERM "
                                f"(exit {run.exit_code}: {run.error})")


def test_startup_sweep_leaves_the_orders_of_a_nautilus_node_with_the_default_trader_id(tmp_path, fake):  # noqa: F811
    """Expected (mmbot/live/stop.py doc: "others are reported, never touched"; docs: foreign orders
    make the start refuse unless ignored): the startup sweep cancels only mmbot's own leftovers.
    Actual (until the live trader tag was derived from the key): ownership was
    ``^O-\\d{8}-\\d{6}-001-``, trader id "MMBOT-001", which is exactly the id of every order of any
    Nautilus node running with Nautilus' default ``TraderId("TRADER-001")``. On an account shared
    with such a program, ``mmbot live`` cancelled its resting orders over REST before anything else
    ran, whatever ``[live] foreign_orders`` said. (Was a strict xfail, seen failing; now end to end:
    the other program's order is placed on the loopback exchange before ``mmbot live`` starts with
    ``foreign_orders = "ignore"``; it must still rest after the session's start, quoting and stop.)"""
    from nautilus_trader.common.component import LiveClock
    from nautilus_trader.common.generators import ClientOrderIdGenerator
    from nautilus_trader.model.identifiers import StrategyId, TraderId

    from tests.test_hostile_issue13 import _signed_post, _stop_live
    from tests.test_live_e2e import Live

    # What another Nautilus program on the same account sends as orderLinkId (its defaults).
    other = ClientOrderIdGenerator(TraderId("TRADER-001"), StrategyId("EMACross-000"), LiveClock()).generate().value
    bid = float(fake.state()["book"]["best_bid"][0])
    r = _signed_post(fake.urls["http"], "/v5/order/create", {
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.001",
        "price": f"{bid * 0.8:.1f}", "timeInForce": "GTC", "orderLinkId": other})
    assert r["retCode"] == 0, r
    live = Live(tmp_path, fake, extra=["--set", "live.foreign_orders=ignore", "--set", "live.timeout_post_stop_s=1"])
    try:
        live.wait_for(lambda: len(fake.state()["open_orders"]) >= 2, 90, "our quotes beside the other program's order")
        code = _stop_live(live)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    mine = [o for o in fake.state()["orders"] if o["orderLinkId"] == other]
    assert mine and mine[0]["orderStatus"] == "New", f"mmbot touched another program's order {other}: {mine}"
    assert code == 0, live.output()[-2000:]


def test_live_trader_tag_is_stable_per_key_distinct_across_keys_and_never_nautilus_default():
    """The tag in every client order id of a run with orders on a venue: same for one key (a restart
    recognises the killed run's leftovers), different for two keys, never Nautilus' number tags,
    and the longest id Bybit may see fits its 36-character ``orderLinkId``."""
    from mmbot.live.node import TRADER_ID, is_own_order_id, live_trader_id, live_trader_tag

    tags = {live_trader_tag(f"key-{i}") for i in range(2000)}
    assert len(tags) >= 1995  # 1.7 M values: a handful of birthday collisions at most
    assert live_trader_tag("k") == live_trader_tag("k") and live_trader_id("k") == f"MMBOT-{live_trader_tag('k')}"
    for t in tags:
        assert t[0] == "M" and len(t) == 5 and not t.isdigit()
        assert len(f"O-20261203-050000-{t}-000-99999999") <= 36
        assert not is_own_order_id("O-20261203-050000-001-000-1", t)
    assert TRADER_ID.split("-")[-1] not in tags


# -- StartupGate in the status console / metrics --------------------------------------------------

def test_status_line_flags_the_released_startup_gate_as_abnormal_for_the_whole_session():
    """Expected: once the run is ready the console status line shows no abnormal guard (the
    operator reads ``... ACTIVE`` and nothing after it on a healthy bot; ``mmbot_guard_state`` is
    what runbook alerts watch). Actual: the gate's transitions are STARTING -> WAITING -> READY;
    ``mmbot/live/status.py`` treats every state but ACTIVE (CLOSED for the circuit breaker) as
    abnormal (status.py:27 INITIAL_STATE, :133 ``_abnormal_guards``), so every status line of a
    healthy session ends in ``startup=READY``, and ``mmbot status`` lists ``startup READY``
    among the guards. Driven through MetricsActor._on_constraint (the real metrics path) with the
    two constraints StartupGate publishes (mmbot/live/node.py:418-439)."""
    from prometheus_client import generate_latest

    from mmbot.live.metrics_server import Metrics, MetricsActor
    from mmbot.live.node import StartupGate
    from mmbot.live.status import format_line, parse_views
    from strategies.risk.base import ConstraintBoard

    m = Metrics()
    lab = ("testnet", IID)
    m.info.labels(*lab).set(1)
    m.ready.labels(*lab).set(1)
    actor = SimpleNamespace(m=m, _labels=lab, _iid_str=IID, _wanted={}, _board=ConstraintBoard())
    published = []  # what the real StartupGate publishes: held, then released
    gate = SimpleNamespace(GUARD=StartupGate.GUARD, clock=SimpleNamespace(timestamp_ns=lambda: 0),
                           msgbus=SimpleNamespace(publish=lambda topic, msg: published.append(msg)),
                           config=SimpleNamespace(instrument_id=IID))
    StartupGate._publish(gate, False, "held")
    StartupGate._publish(gate, True, "released")
    assert [m.new_state for m in published][0] == "WAITING"
    for msg in published:
        MetricsActor._on_constraint(actor, msg)
    [view] = parse_views(generate_latest(m.registry).decode())
    line = format_line(view)
    assert view["quoting_allowed"] == {"bid": True, "ask": True}
    assert "startup" not in line, f"a healthy, released session's status line: {line!r}"


# -- fault-matrix judge (tools/faults/matrix.py) --------------------------------------------------

def _res(node, at_stop, named_fills, venue=None):
    return {"exit": 3, "node_position": node, "venue_position_at_stop": at_stop,
            "venue_position": at_stop if venue is None else venue, "named_fills": named_fills}


def test_judge_excuses_a_lost_fill_of_an_unnamed_order_with_an_old_fill_of_a_named_one():
    """Expected: after exit 3 a position difference is excused only by fills of the named orders
    that the node did not see (those landing while it disconnected). Actual: ``named_fills`` is
    built from EVERY execution of the named orders in the whole session (matrix.py:449-450, no
    time or trade-id filter against what the node applied), so a fill the node saw long before the
    stop still "explains" a difference. A market maker's fills are all one lot size: the node
    losing the fill of any other order (+0.001) passes as soon as one named order was ever filled
    0.001 during the session. Here: named order filled +0.001 an hour before the stop (node saw
    it: node = venue before the loss), an unnamed order's +0.001 fill lost at the stop."""
    from tools.faults.matrix import named_fills_after_check, position_equal

    venue_at_stop = 0.002  # named fill 0.001 (seen) + unnamed fill 0.001 (lost by the node)
    node = 0.001
    stop_check_ms = 1_796_274_714_917
    state = {"executions": [
        {"orderLinkId": "O-named", "side": "Buy", "execQty": "0.001", "execTime": str(stop_check_ms - 3_600_000)},
        {"orderLinkId": "O-unnamed", "side": "Buy", "execQty": "0.001", "execTime": str(stop_check_ms + 500)}]}
    events = [{"event": "stop_check", "ts": "2026-12-03T05:11:54.917+00:00"}]
    named = named_fills_after_check(state, {"O-named"}, events)
    assert named == [], named  # the named order's fill came long before the check gave up
    assert not position_equal(_res(node, venue_at_stop, named)), "a lost unnamed fill was excused"
    # ... while a named order's fill after the check is what the rule is for
    state["executions"].append({"orderLinkId": "O-named", "side": "Sell", "execQty": "0.001",
                                "execTime": str(stop_check_ms + 878)})
    assert named_fills_after_check(state, {"O-named"}, events) == [-0.001]


def test_judge_truncates_named_fills_to_the_first_12_and_fails_the_fill_that_landed_last():
    """Expected: the fill that landed while the node disconnected (the last execution of a named
    order) excuses the difference. Actual: ``_explained_by_named_fills`` keeps only
    ``named_fills[:MAX_NAMED_FILLS]`` (the first 12, in execution order: matrix.py:501), so after a
    session where the named orders were filled 12 times, the very fill the rule exists for (the
    13th, the latest) is never tried: a correct exit 3 is judged a position mismatch."""
    from tools.faults.matrix import position_equal

    fills = [0.002] * 12 + [0.001]  # 12 earlier fills (the node saw them), then the one it missed
    node = 0.024
    assert position_equal(_res(node, 0.025, fills)), "the last named fill (the missed one) was not considered"
