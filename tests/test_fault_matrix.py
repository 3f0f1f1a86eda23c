"""The fault matrix (tools/faults, docs/runbook.md "Fault matrix"): a representative subset of its
rows against the loopback exchange, the matrix' own bookkeeping (every fault kind of the fake is a
row; the columns are measured and judged as documented), and the defects the matrix found, each as
a deterministic end-to-end test.

The whole matrix (65 rows, ~5 min with --jobs 3) runs with ``python -m tools.faults``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_live_e2e import recording  # noqa: F401  (fixture)
from tools.faults import matrix as M


# -- the matrix' bookkeeping (no processes) ---------------------------------------------------------


def test_fault_matrix_runs_every_fault_of_the_fake_in_every_phase():
    from tools.fake_bybit.faults import KINDS

    assert M.coverage_gaps() == []
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
           "left_unnamed": [], "node_position": 0.001, "venue_position": 0.001, "secret_leak": False}
    res.update(kw)
    return res


JUDGE_CASES = [  # (row, result overrides, passes)
    (M.Row("lose_ack", "during"), {}, True),
    (M.Row("lose_ack", "during"), {"fired": 0}, False),
    (M.Row("delay_cancel", "on cancel_all", must_fire=False), {"fired": 0}, True),
    (M.Row("lose_ack", "during"), {"sent_twice": {"count": 1, "ids": [A]}}, False),
    (M.Row("lose_ack", "during"), {"left": [A], "left_unnamed": [A]}, False),
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "left": [A], "left_unnamed": []}, True),
    (M.Row("hold", "at stop", expect_exit=3), {"exit": 3, "left": [A, B], "left_unnamed": [B]}, False),
    (M.Row("lose_ack", "during"), {"exit": 3, "left": [A], "left_unnamed": []}, False),  # exit 3 not expected
    (M.Row("lose_ack", "during"), {"venue_position": 0.0}, False),
    (M.Row("lose_ack", "during"), {"node_position": None}, False),
    (M.Row("lose_ack", "during"), {"node_position": 0.0010000000001}, True),  # float formatting, not a lot
    (M.Row("lose_ack", "during"), {"exit": 1}, False),
    (M.Row("refuse_ws", "during", expect_exit=5), {"exit": 0}, False),
    (M.Row("lose_ack", "during"), {"secret_leak": True}, False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A],
                                                      "leftovers_cancelled": True}, True),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [], "leftovers_cancelled": True},
     False),
    (M.Row("none", "kill-restart", must_fire=False), {"fired": 0, "leftovers_at_kill": [A],
                                                      "leftovers_cancelled": False}, False),
]


@pytest.mark.parametrize("row,over,passes", JUDGE_CASES)
def test_fault_matrix_judge(row, over, passes):
    res = _result(phase=row.phase, **over)
    M.judge(row, res)
    assert res["pass"] is passes, res["why"]


# -- representative rows, end to end ------------------------------------------------------------------

SUBSET = ["lose-ack-during", "hold-orders-at-stop", "rate-limit-rest-on-cancel-all", "sigkill-kill-restart"]


def test_fault_matrix_subset(tmp_path, recording):
    """One fault during the session, one armed by the stop's own cancel-all, one in flight when
    the stop signal comes, and SIGKILL with resting orders then a restart: every column as in
    the full matrix (run in parallel: each row its own fake and mmbot process)."""
    rows = [r for r in M.ROWS if r.slug in SUBSET]
    assert [r.slug for r in rows] == SUBSET
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        results = list(pool.map(lambda r: M.run_row(r, tmp_path, recording, keep=True), rows))
    print("\n" + M.table(results))
    for row, res in zip(rows, results):
        assert res["pass"], (row.slug, res["why"], res.get("traceback", ""), res["dir"])
        assert res["sent_twice"]["count"] == 0 and res["left"] == [] and res["exit"] == row.expect_exit
        assert res["node_position"] == pytest.approx(res["venue_position"], abs=1e-9)
    kill = results[-1]
    assert kill["killed_exit"] == -9 and kill["leftovers_at_kill"] and kill["leftovers_cancelled"]
