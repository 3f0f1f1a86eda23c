"""The fault matrix (tools/faults, docs/runbook.md "Fault matrix"): a representative subset of its
rows against the loopback exchange, the matrix' own bookkeeping (every fault kind of the fake is a
row; the columns are measured and judged as documented), and the defects the matrix found, each as
a deterministic end-to-end test.

The whole matrix (65 rows, ~6 min with --jobs 3 on a loaded 2-core machine) runs with
``python -m tools.faults`` (docs/runbook.md "Fault matrix").
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_live_e2e import Fake, Live, _post, _signed_position, recording  # noqa: F401  (fixture)
from tools.faults import matrix as M

SYM = "BTCUSDT"


# -- the matrix' bookkeeping (no processes) ---------------------------------------------------------


def test_fault_matrix_runs_every_fault_of_the_fake_in_every_phase():
    from tools.fake_bybit.faults import KINDS

    assert M.coverage_gaps() == []
    assert M.coverage_gaps([r for r in M.ROWS if (r.kind, r.phase) != ("hold", "during")]) == ["hold during"]
    assert M.coverage_gaps([r for r in M.ROWS if (r.kind, r.phase) != ("gap_book", "on stop cancel")]) == \
        ["gap_book on stop cancel"]
    assert "kill-restart" in M.coverage_gaps([r for r in M.ROWS if r.phase != "kill-restart"])
    assert {r.kind for r in M.ROWS} - {"none"} == KINDS
    phases = {r.phase for r in M.ROWS}
    assert phases == set(M.PHASES)
    assert {r.expect_exit for r in M.ROWS} == {0, 3, 4, 5}
    assert len({r.slug for r in M.ROWS}) == len(M.ROWS)  # one directory per row
    with pytest.raises(ValueError, match="unknown"):
        M.select("drop_wss")
    assert {r.phase for r in M.select("kill-restart")} == {"kill-restart"}
    assert {r.name for r in M.select("drop_ws/public")} == {"drop_ws/public"}


def _state(orders=(), creates=(), open_=(), position=("", "0")) -> dict:
    rows = [{"orderLinkId": link, "rejectReason": reason, "orderStatus": "Cancelled"} for link, reason in orders]
    rows += [{"orderLinkId": link, "rejectReason": "EC_NoError", "orderStatus": "New"} for link in open_]
    return {"orders": rows, "open_orders": [r for r in rows if r["orderStatus"] == "New"],
            "ws_log": [{"stream": "trade", "msg": {"op": "order.create", "args": [{"orderLinkId": c}]}} for c in creates],
            "position": {"side": position[0], "size": position[1]}, "faults": {"fired": []}}


A, B = "O-20240101-000000-001-000-1", "O-20240101-000000-001-000-2"


def test_fault_matrix_sent_twice_definition():
    _check_sent_twice(M)


def _check_sent_twice(M) -> None:  # noqa: N803 (the module, or a mutant of it)
    ok = M.sent_twice(_state(orders=[(A, "EC_NoError"), (B, "EC_PostOnlyWillTakeLiquidity")], creates=[A, B]), {B})
    assert ok["count"] == 0  # a post-only reject the node records as rejected is not a second create
    twice = M.sent_twice(_state(orders=[(A, "EC_NoError")], creates=[A, A]), set())
    assert twice["create_sent_twice"] == [A] and twice["count"] == 1
    venue = M.sent_twice(_state(orders=[(A, "EC_NoError"), (A, "EC_NoError")], creates=[A]), set())
    assert venue["created_twice_on_venue"] == [A] and venue["count"] == 1
    orphan = M.sent_twice(_state(orders=[(A, "EC_NoError")], creates=[A]), {A})
    assert orphan["rejected_by_node_accepted_by_venue"] == [A] and orphan["count"] == 1
    foreign = M.sent_twice(_state(orders=[("manual-1", "EC_NoError")] * 2, creates=["manual-1"] * 2), set())
    assert foreign["count"] == 0  # only our client order ids count


def _result(**kw) -> dict:
    res = {"row": "x", "phase": "during", "exit": 0, "fired": 1, "sent_twice": {"count": 0, "ids": []}, "left": [],
           "left_unnamed": [], "node_position": 0.001, "venue_position": 0.001, "venue_position_at_stop": 0.001,
           "secret_leak": False}
    res.update(kw)
    return res


JUDGE_CASES = [  # (row, result overrides, passes)
    (M.Row("lose_ack", "during"), {}, True),
    (M.Row("lose_ack", "during"), {"fired": 0}, False),
    (M.Row("delay_cancel", "on stop cancel", must_fire=False), {"fired": 0}, True),
    (M.Row("lose_ack", "during"), {"sent_twice": {"count": 1, "ids": [A]}}, False),
    (M.Row("lose_ack", "during"), {"left": [A], "left_unnamed": [A]}, False),
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "left": [A], "left_unnamed": []}, True),
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "left": [A, B], "left_unnamed": [B]}, False),
    (M.Row("lose_ack", "during"), {"exit": 3, "left": [A], "left_unnamed": []}, False),  # exit 3 not expected
    (M.Row("lose_ack", "during"), {"venue_position": 0.0, "venue_position_at_stop": 0.0}, False),
    (M.Row("lose_ack", "during"), {"venue_position_at_stop": 0.0}, False),  # node missed a fill before it stopped
    (M.Row("lose_ack", "during"), {"venue_position": 0.002}, False),  # a fill after it stopped with exit 0
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "venue_position": 0.002}, True),  # exit 3: orders may fill
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "venue_position_at_stop": 0.0}, False),
    (M.Row("lose_ack", "during"), {"node_position": None}, False),
    (M.Row("lose_ack", "during"), {"node_position": 0.0010000000001}, True),  # float formatting, not a lot
    (M.Row("lose_ack", "during"), {"exit": 1}, False),
    (M.Row("refuse_ws", "during", expect_exit=5), {"exit": 0}, False),
    (M.Row("lose_ack", "during"), {"secret_leak": True}, False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A],
                                                      "leftovers_cancelled": True, "startup_cancelled": [A]}, True),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A],
                                                      "leftovers_cancelled": True, "startup_cancelled": []}, False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A, B], "leftovers_cancelled": True,
                                                      "startup_cancelled": [A], "leftovers_unhandled": [B]}, False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [], "leftovers_cancelled": True,
                                                      "startup_cancelled": [A]}, False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A],
                                                      "leftovers_cancelled": False, "startup_cancelled": [A]}, False),
]


@pytest.mark.parametrize("row,over,passes", JUDGE_CASES)
def test_fault_matrix_judge(row, over, passes):
    res = _result(phase=row.phase, **over)
    M.judge(row, res)
    assert res["pass"] is passes, res["why"]


def _check_judge(M) -> None:  # noqa: N803
    for row, over, passes in JUDGE_CASES:
        res = _result(phase=row.phase, **over)
        M.judge(row, res)
        assert res["pass"] is passes, (row, over)


# Each check of the matrix broken on purpose (a text replacement in tools/faults/matrix.py, run
# as a module of its own): the named check must notice.
MATRIX_MUTANTS = {
    "fired not required": ('if row.must_fire and res["fired"] == 0:', "if False:", _check_judge),
    "sent twice ignored": ('if res["sent_twice"]["count"]:', "if False:", _check_judge),
    "orders left allowed": ('if res["left"] and not (res["exit"] == 3 and not res["left_unnamed"]):', "if False:",
                            _check_judge),
    "unnamed orders left allowed with exit 3": ('(res["exit"] == 3 and not res["left_unnamed"])', '(res["exit"] == 3)',
                                                _check_judge),
    "exit code not compared": ('if res["exit"] != row.expect_exit:', "if False:", _check_judge),
    "secret leak ignored": ('if res["secret_leak"]:', "if False:", _check_judge),
    "kill-restart without resting orders": ('if not res.get("leftovers_at_kill"):', "if False:", _check_judge),
    "kill-restart leftovers not cancelled": ('if not res.get("leftovers_cancelled"):', "if False:", _check_judge),
    "kill-restart without the startup policy": ('if not res.get("startup_cancelled") or res.get("leftovers_unhandled"):',
                                                "if False:", _check_judge),
    "kill-restart: a leftover the policy missed": ('if not res.get("startup_cancelled") or res.get("leftovers_unhandled"):',
                                                   'if not res.get("startup_cancelled"):', _check_judge),
    "unknown position passes": ("    if node is None:\n        return False", "    if node is None:\n        return True",
                                _check_judge),
    "position at stop not compared": ("    if abs(node - at_stop) > 1e-9:\n        return False", "", _check_judge),
    "position at the end not compared": ('return res["exit"] == 3 or abs(at_stop - res["venue_position"]) <= 1e-9',
                                         "return True", _check_judge),
    "exit 3 not excused for later fills": ('return res["exit"] == 3 or abs(', "return abs(", _check_judge),
    "position tolerance 1e-3": ("if abs(node - at_stop) > 1e-9:", "if abs(node - at_stop) > 1e-3:", _check_judge),
    "creates sent twice not counted": ("    twice_sent = sorted(k for k, n in creates.items() if n > 1)",
                                       "    twice_sent = []", _check_sent_twice),
    "orders twice on the venue not counted": ("twice_venue = sorted(k for k, n in venue.items() if n > 1)",
                                              "twice_venue = []", _check_sent_twice),
    "rejected-but-accepted not counted": ("orphaned = sorted(rejected_by_node & accepted)", "orphaned = []",
                                          _check_sent_twice),
    "post-only rejects counted as accepted": ('if o.get("rejectReason", "EC_NoError") == "EC_NoError"}', "}",
                                              _check_sent_twice),
    "foreign orders counted": ("    return bool(link_id) and is_own_order_id(link_id, TRADER_TAG)",
                               "    return bool(link_id)", _check_sent_twice),
}


@pytest.mark.parametrize("name", sorted(MATRIX_MUTANTS))
def test_fault_matrix_mutants_are_caught(name, monkeypatch):
    import inspect
    import sys
    import types

    old, new, check = MATRIX_MUTANTS[name]
    src = inspect.getsource(M)
    assert src.count(old) == 1, f"mutant {name!r} no longer applies to tools/faults/matrix.py"
    mutant = types.ModuleType("tools.faults.matrix_mutant")
    monkeypatch.setitem(sys.modules, mutant.__name__, mutant)  # dataclasses look their module up
    exec(compile(src.replace(old, new), "matrix_mutant.py", "exec"), mutant.__dict__)  # noqa: S102
    check(M)  # the real module passes the check
    with pytest.raises(AssertionError):
        check(mutant)


# -- representative rows, end to end ------------------------------------------------------------------

def _restart_reconciliation_race(res: dict) -> bool:
    """The restart refused to quote on a position that differs from the venue's (exit 4), and left
    nothing on the venue: the known startup-reconciliation race, not a new failure."""
    return (not res["pass"] and res.get("exit") == 4 and not res.get("left")
            and all(w.startswith(("position differs", "exit 4, expected 0")) for w in res["why"]))


SUBSET = ["lose-ack-during", "hold-orders-at-stop", "rate-limit-rest-on-stop-cancel", "sigkill-kill-restart"]


def test_fault_matrix_subset(tmp_path, recording):
    """One fault during the session, one armed by the stop's own batch cancel, one in flight when
    the stop signal comes, and SIGKILL with resting orders then a restart: every column as in
    the full matrix (run in parallel: each row its own fake and mmbot process)."""
    rows = [r for r in M.ROWS if r.slug in SUBSET]
    assert [r.slug for r in rows] == SUBSET
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        results = list(pool.map(lambda r: M.run_row(r, tmp_path, recording, keep=True), rows))
    for i, (row, res) in enumerate(zip(rows, results)):
        if row.phase == "kill-restart" and _restart_reconciliation_race(res):
            # Known, open (issue 13 note; docs/runbook.md "Fault matrix"): a leftover of the killed
            # run fills while Nautilus' startup reconciliation reads the venue, the node's position
            # comes out wrong and the start refuses to go on (exit 4, nothing left on the venue).
            # Safe but not available; one more restart is what an operator does, and must pass.
            print(f"\n{row.slug}: restart reconciliation race ({res['why']}); running the row once more")
            results[i] = M.run_row(row, tmp_path / "again", recording, keep=True)
    print("\n" + M.table(results))
    for row, res in zip(rows, results):
        assert res["pass"], (row.slug, res["why"], res.get("traceback", ""), res["dir"])
        assert res["sent_twice"]["count"] == 0 and res["left"] == [] and res["exit"] == row.expect_exit
        assert res["node_position"] == pytest.approx(res["venue_position"], abs=1e-9)
        assert res["venue_position_at_stop"] == pytest.approx(res["venue_position"], abs=1e-9)
    kill = results[-1]
    assert kill["killed_exit"] == -9 and kill["leftovers_at_kill"] and kill["leftovers_cancelled"]
    assert kill["startup_cancelled"] and kill["leftovers_unhandled"] == []


# -- defects the matrix found -------------------------------------------------------------------------


def _events(live: Live) -> list[dict]:
    return M.json_events(live.err.read_text(errors="replace"))


def test_live_stop_fill_while_the_venue_check_waits_reaches_the_node_position(tmp_path, recording):
    """Matrix rows "hold/frozen at stop / on stop cancel", "rate_limit/rest on stop cancel",
    "sign_error at stop": the exchange stops answering at the stop's batch cancel (it still matches
    and pushes private messages), so our orders rest while the venue check waits for answers, and
    one fills. The node's final position must include that fill, which happened before it said
    its last word (exit 3: orders may rest). Old code: the check ran after the clients had
    disconnected, the node never heard of the fill and its final position was not the exchange's."""
    fake = Fake(tmp_path, recording)
    live = Live(tmp_path, fake, extra=["--set", "live.timeout_post_stop_s=1", "--set", "live.stop_deadline_s=4"])
    try:
        live.wait_for(lambda: [o for o in fake.state()["open_orders"] if o["side"] == "Buy" and M.own(o["orderLinkId"])],
                      60, "a bid of ours on the exchange")
        fake.fault("hold", what="all", seconds=60, count=-1, on="cancel_batch")  # frozen from the stop's batch cancel on
        before = fake.state()
        live.proc.send_signal(signal.SIGTERM)

        def check_waiting():  # the venue check's first query has reached the frozen exchange
            return any(f["kind"] == "hold" and f.get("path") == "/v5/order/realtime" for f in fake.state()["faults"]["fired"])
        live.wait_for(check_waiting, 30, "the venue check's first query")
        fake.replay("pause")  # no fill by chance after the one below
        bids = [float(o["price"]) for o in fake.state()["open_orders"] if o["side"] == "Buy" and M.own(o["orderLinkId"])]
        assert bids, "the frozen batch cancel left our bids resting"
        now = int(time.time() * 1000)
        # A sell printing below our bids: they fill completely (the print went through them).
        _post(fake.urls["control"] + "/feed", {
            "topic": f"publicTrade.{SYM}", "type": "snapshot", "ts": now,
            "data": [{"T": now, "s": SYM, "S": "Sell", "v": "1.000", "p": f"{min(bids) - 50:.1f}", "L": "MinusTick",
                      "i": f"matrix-{now}", "BT": False}]})
        code = live.proc.wait(timeout=90)
        st = fake.state()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        fake.stop()
    fills_at_stop = st["executions"][len(before["executions"]):]
    assert len(fills_at_stop) >= len(bids), fills_at_stop
    assert code == 3, live.output()[-3000:]  # the frozen venue never confirmed the rest
    events = _events(live)
    assert M.node_position(events) == pytest.approx(_signed_position(st), abs=1e-9), (M.node_position(events), st["position"])


def test_live_stop_fill_missed_on_the_private_stream_is_reconciled_before_exit(tmp_path, recording):
    """Matrix rows "refuse_ws/private during", "refuse_ws/all-outage during": a fill happens while
    the private stream delivers nothing (an outage), and the stop comes before Nautilus' periodic
    checks found it. The venue check sees the order closed on the venue; the node must reconcile
    it (status and fills from the venue) before it exits, so its final position is the exchange's
    (old code: the order stayed open in the cache and the fill was never applied)."""
    fake = Fake(tmp_path, recording)
    live = Live(tmp_path, fake, extra=["--set", "live.timeout_post_stop_s=1"])
    try:
        bids = live.wait_for(lambda: [float(o["price"]) for o in fake.state()["open_orders"]
                                      if o["side"] == "Buy" and M.own(o["orderLinkId"])], 60, "a bid of ours")
        fake.fault("drop_private", count=-1)  # from here on the private stream says nothing
        before = fake.state()
        now = int(time.time() * 1000)
        _post(fake.urls["control"] + "/feed", {
            "topic": f"publicTrade.{SYM}", "type": "snapshot", "ts": now,
            "data": [{"T": now, "s": SYM, "S": "Sell", "v": "1.000", "p": f"{min(bids) - 50:.1f}", "L": "MinusTick",
                      "i": f"matrix-{now}", "BT": False}]})
        live.wait_for(lambda: len(fake.state()["executions"]) > len(before["executions"]), 10, "the fill on the venue")
        code = live.terminate(timeout=90)
        st = fake.state()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        fake.stop()
    assert len(st["executions"]) > len(before["executions"])
    assert code == 0, live.output()[-3000:]
    assert [o for o in st["open_orders"] if M.own(o["orderLinkId"])] == []
    events = _events(live)
    assert M.node_position(events) == pytest.approx(_signed_position(st), abs=1e-9), (M.node_position(events), st["position"])
    [stopped] = [e for e in events if e["event"] == "stopped"]
    assert stopped["open_orders_in_cache"] == 0, stopped


def test_live_restart_leftover_filling_while_the_restart_reconciles_is_not_a_silent_wrong_position(tmp_path, recording):
    """Matrix row "SIGKILL kill-restart" (once under load: node -0.002, exchange -0.003). Orders of
    a killed run rest; the restart's Nautilus reconciliation asks for orders, executions and the
    position at once. Here the order list and the position are answered at once, the execution list
    is held (fake ``hold`` with ``path``), and meanwhile two leftover bids fill. Nautilus then adds a
    made-up sell (tag VENUE) so that its fills match the position answered before the fills: the
    node's position is short of the exchange's by exactly those fills. Old code: exit 0, the whole
    session quoted on that wrong inventory. Now the start fails (exit 4, one line naming both
    positions) and the stop leaves nothing open."""
    fake = Fake(tmp_path, recording)
    live = Live(tmp_path, fake)
    again = None
    try:
        live.wait_for(lambda: [o for o in fake.state()["open_orders"] if o["side"] == "Buy" and M.own(o["orderLinkId"])],
                      60, "a bid of ours on the exchange")
        fake.replay("pause")  # no fill by chance: only the print below
        time.sleep(0.5)       # the strategy's last amends have landed (quotes are pulled after 3 s stale)
        live.wait_for(lambda: [o for o in fake.state()["open_orders"] if o["side"] == "Buy" and M.own(o["orderLinkId"])],
                      2, "a bid of ours resting on the paused exchange")
        live.proc.send_signal(signal.SIGKILL)
        live.proc.wait(timeout=30)
        st = fake.state()
        bids = [float(o["price"]) for o in st["open_orders"] if o["side"] == "Buy" and M.own(o["orderLinkId"])]
        assert bids, "the killed run left a bid"
        seen = len(st["request_log"])
        fake.fault("hold", what="all", op="query", path="/v5/execution/list", seconds=3.0, count=1)
        again = Live(tmp_path, fake, name="restart")

        def reconciling():  # the restart's order list was answered, its execution list is held
            s = fake.state()
            return (any(r["path"] == "/v5/order/realtime" for r in s["request_log"][seen:])
                    and any(f["kind"] == "hold" for f in s["faults"]["fired"]))
        again.wait_for(reconciling, 60, "the restart's reconciliation queries")
        now = int(time.time() * 1000)
        _post(fake.urls["control"] + "/feed", {  # a sell printing below the leftover bids: they fill
            "topic": f"publicTrade.{SYM}", "type": "snapshot", "ts": now,
            "data": [{"T": now, "s": SYM, "S": "Sell", "v": "1.000", "p": f"{min(bids) - 50:.1f}", "L": "MinusTick",
                      "i": f"matrix-{now}", "BT": False}]})
        code = again.proc.wait(timeout=90) if _exits(again, 20) else again.terminate(timeout=90)
        time.sleep(1.0)
        st = fake.state()
    finally:
        for p in (live, again):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
        fake.stop()
    events = _events(again)
    venue = _signed_position(st)
    if code == 0:  # the fills were counted right after all: the node must say so
        assert M.node_position(events) == pytest.approx(venue, abs=1e-9), (M.node_position(events), venue)
    assert code == 4, (code, M.node_position(events), venue, again.output()[-3000:])
    [line] = [e for e in events if e["event"] == "not_ready"]
    assert "position" in line["reason"] and f"the exchange's {venue:g}" in line["reason"], line
    assert [o for o in st["open_orders"] if M.own(o["orderLinkId"])] == []


def _exits(live: Live, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if live.proc.poll() is not None:
            return True
        time.sleep(0.2)
    return False
