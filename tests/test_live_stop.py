"""A stop never leaves orders resting with exit 0 (mmbot/live/stop.py, docs/runbook.md "Stop").

Each test runs ``mmbot live`` against the loopback fake exchange until it quotes, arms a fault of
the fake JUST BEFORE the stop signal (or from the stop's first cancel on, ``on="cancel"``), sends
SIGTERM and checks the exit code, the one ``error:`` line and the exchange's open orders.
"""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.test_live_e2e import KEY, SECRET, Live, recording  # noqa: F401  (fixture)
from tests.test_live_e2e import fake  # noqa: F401  (fixture)

FAST = ["--set", "live.timeout_post_stop_s=1"]
HOLD_S = 5.0
STABLE_S = 1.5  # > MetricsActor.update_interval_ms (1 s)


def _events(live: Live, name: str) -> list[dict]:
    out = []
    for line in live.err.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            out.append(json.loads(line))
    return out


def _error_line(live: Live) -> str:
    lines = [x for x in live.err.read_text(errors="replace").splitlines() if x.startswith("error: ")]
    assert len(lines) <= 1, lines
    return lines[0] if lines else ""


def _quoting(live: Live, fake) -> list[dict]:
    return live.wait_for(lambda: fake.state()["open_orders"], 60, "quotes on the exchange")


def _resting(live: Live, fake) -> list[dict]:
    """Quotes on the exchange that the node also knows open: the exchange's open orders have not
    changed for ``STABLE_S`` (longer than the metrics' 1-s update interval, so the node's
    ``mmbot_open_orders`` was read after they settled) and the node counts at least as many. Without
    it the stop can fall while the node still has quotes in flight (a requote) or, before the fix in
    adapters/bybit_live.py, had missed their acceptance (left SUBMITTED until Nautilus' in-flight
    check asks the venue, 5 s): the strategy's stop then has nothing open to cancel and the venue
    check cancels them all (correct, but not the path a test of the stop's own cancels means to
    test). Then the book is paused: no requote puts a quote back in flight before the stop (the
    caller stops at once: a book paused for ``max_book_age_ms`` trips the stale-data guard, which
    pulls the quotes)."""
    _quoting(live, fake)

    def node_open() -> float:
        return sum(float(line.rpartition(" ")[2]) for line in live.metrics().splitlines()
                   if line.startswith("mmbot_open_orders{"))

    seen: dict = {"ids": None, "since": 0.0}

    def known() -> list[dict]:
        orders = fake.state()["open_orders"]
        ids = sorted(o["orderLinkId"] for o in orders)
        now = time.monotonic()
        if ids != seen["ids"]:
            seen.update(ids=ids, since=now)
            return []
        return orders if orders and now - seen["since"] >= STABLE_S and node_open() >= len(orders) else []

    orders = live.wait_for(known, 60, "quotes on the exchange, settled and known open to the node")
    fake.replay("pause")
    return orders


@pytest.fixture()
def started(tmp_path, fake):
    """``started(extra)`` starts ``mmbot live`` against the fake; killed at teardown if still running."""
    procs = []

    def start(extra):
        live = Live(tmp_path, fake, extra=extra)
        procs.append(live.proc)
        return live

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _stop(live: Live) -> int:
    try:
        return live.terminate(timeout=90)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()


def test_live_stop_rate_limited_cancel_all_is_retried_until_the_venue_has_none(started, fake):
    """The stop's cancels (the strategy's batch cancel of its own orders over the trade WebSocket)
    are rate limited (10006, every retry Nautilus makes), and so are the first three REST requests
    from the venue check's first cancel on: backoff, individual cancels, then none left, exit 0.
    (The stop never sends the symbol-wide cancel-all: it would cancel foreign orders too.)"""
    live = started(FAST + ["--set", "live.stop_deadline_s=10"])
    _resting(live, fake)
    fake.fault("rate_limit", ws=True, count=-1)
    fake.fault("rate_limit", on="cancel", count=3)
    code = _stop(live)
    st = fake.state()
    assert any(f["kind"] == "rate_limit" and f.get("op") == "order.cancel-batch" for f in st["faults"]["fired"]), st["faults"]["fired"]
    assert st["open_orders"] == [], st["open_orders"]
    assert code == 0, live.output()[-3000:]
    [check] = _events(live, "stop_check")
    assert check["ok"] and check["cancels_sent"] and check["rounds"] >= 2, check


def test_live_stop_frozen_exchange_exits_3_naming_the_orders_left(started, fake):
    """From the stop's first cancel on, the exchange processes nothing (``hold`` every request for
    60 s): the venue check gives up at ``stop_deadline_s``, exit 3, one line with the ids."""
    live = started(FAST + ["--set", "live.stop_deadline_s=3"])
    _resting(live, fake)
    fake.fault("hold", what="all", seconds=60, count=-1, on="cancel")
    t0 = time.monotonic()
    code = _stop(live)
    resting = {o["orderLinkId"] for o in fake.state()["open_orders"]}
    assert resting, "the frozen exchange should still hold our orders"
    assert code == 3, live.output()[-3000:]
    line = _error_line(live)
    assert re.match(r"error: \d+ order\(s\) may still rest on the venue after stop: ", line), line
    named = set(re.findall(r"O-\d{8}-\d{6}-M[0-9A-Z]{4}-\d{3}-\d+", line))
    assert resting <= named, (resting, named)
    assert time.monotonic() - t0 < 40
    [check] = _events(live, "stop_check")
    assert not check["ok"] and check["last_error"]


def test_live_stop_order_in_flight_with_lost_ack_lands_after_cancel_all_and_is_cancelled(started, fake):
    """A create is in flight when the stop begins (held 5 s by the exchange, its ack lost): the
    strategy's cancel-all runs before it lands, so it rests afterwards. The venue check knows the
    order was sent and keeps asking until it appears and is cancelled (the clients are still
    connected: the strategy's after-stop handler or the check cancels it, acks lost), exit 0."""
    live = started(FAST + ["--set", "live.stop_deadline_s=12"])
    _quoting(live, fake)
    fake.fault("lose_ack", count=-1, seconds=2)  # REST answers held 2 s then 504 (a short hold keeps teardown quick)
    fake.fault("hold", op="create", seconds=HOLD_S)
    live.wait_for(lambda: any(f["kind"] == "hold" for f in fake.state()["faults"]["fired"]), 30, "a create in flight")
    t_held = time.monotonic()
    fake.replay("pause")  # the book stands still: the held post-only order will rest, not cross
    code = _stop(live)
    time.sleep(max(0.0, t_held + HOLD_S + 0.5 - time.monotonic()))  # the held create has landed by now
    st = fake.state()
    held = [f for f in st["faults"]["fired"] if f["kind"] == "hold"]
    assert st["open_orders"] == [], st["open_orders"]
    assert code == 0, live.output()[-3000:]
    [check] = _events(live, "stop_check")
    assert check["ok"] and check["rounds"] >= 2, check  # it waited for the order in flight
    # The order that landed after the cancel-all was cancelled: by the check, or (the clients stay
    # connected through the check) by the strategy's after-stop handler, the check confirming it.
    landed = [o for o in st["orders"] if int(o["createdTime"]) >= held[0]["time_ms"] + int(HOLD_S * 1000) - 50]
    assert landed and all(o["orderStatus"] == "Cancelled" for o in landed), (landed, check)
    # What the check cancelled rests no more. Not required: that it cancelled the held order only.
    # With every ack lost (lose_ack), an amend or create of another quote can also be in flight
    # when the cancel-all runs (PENDING_UPDATE / SUBMITTED at the node), and the check cancelling
    # it too is its job; which of them is still in flight depends on the machine's timing (seen
    # under load on the code before and after the portfolio change: 000-1, 000-3, 000-6 besides
    # the held 000-5), so asserting "the held one only" was a flaky test, not a property.
    by_link = {o["orderLinkId"]: o for o in st["orders"]}
    assert all(by_link[i]["orderStatus"] in ("Cancelled", "Filled") for i in check["cancels_sent"]), (check, held)
    out = live.output()
    assert KEY not in out and SECRET not in out


@pytest.mark.parametrize(("post_stop_s", "hold", "print_after_s"), [
    pytest.param(4, {"op": "cancel", "seconds": 3.0}, 0.0, id="strategy_cancels_in_flight"),
    pytest.param(1, {"seconds": 5.0, "count": -1}, 2.5, id="during_the_venue_check"),
])
def test_live_stop_fill_while_the_stop_cancels_travel_is_in_the_recording_and_the_report(
        started, fake, tmp_path, post_stop_s, hold, print_after_s):
    """The stop window: the exchange holds the stop's first batch cancel (``hold`` armed by it)
    and a print through our best bid fills that quote meanwhile. ``strategy_cancels_in_flight``:
    the print lands while the strategies' cancels travel (within ``timeout_post_stop_s``);
    ``during_the_venue_check``: every order request is held 5 s, so the quote still rests when the
    stop's venue check starts (after ``timeout_post_stop_s`` = 1 s) and the print lands during the
    check. The node stops its strategies first and the trader (the actors) only after the venue
    check (mmbot/live/node.py), so the recorder and the run ledger still run when the fill arrives:
    it is in ``recording/orders.jsonl``, ``fills.parquet`` and the session report's count, as every
    other fill the exchange made. Old code: Nautilus' Trader stopped every actor first (the first
    case failed), then the trader stopped before the venue check (the second case failed): the
    exchange and the cache had the fill, the recording and the report did not."""
    import pandas as pd

    from tests.test_live_e2e import _post

    live = started(["--set", f"live.timeout_post_stop_s={post_stop_s}", "--set", "live.stop_deadline_s=20"])
    _quoting(live, fake)
    live.wait_for(lambda: any(o["side"] == "Buy" for o in fake.state()["open_orders"]), 60, "a bid on the exchange")
    fake.replay("pause")  # the book stands still: the only fill from here is the one fed below
    time.sleep(1.0)  # quoting settles on the still book
    fake.fault("hold", on="stop_cancel", **hold)
    live.proc.send_signal(signal.SIGTERM)
    held = live_wait(lambda: [f for f in fake.state()["faults"]["fired"] if f["kind"] == "hold"], 30,
                     "the stop's batch cancel held by the exchange")
    time.sleep(print_after_s)
    st = fake.state()
    bids = [o for o in st["open_orders"] if o["side"] == "Buy"]
    assert bids, ("no bid open while the stop's cancel is held", st["open_orders"])
    best = max(bids, key=lambda o: float(o["price"]))
    through = f"{float(best['price']) - 0.1:.1f}"  # BTCUSDT tick 0.1: printed through our best bid
    now = int(time.time() * 1000)
    _post(fake.urls["control"] + "/feed", {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": now, "data": [
        {"T": now, "s": "BTCUSDT", "S": "Sell", "v": best["leavesQty"], "p": through, "L": "MinusTick",
         "i": "stop-window-print", "BT": False}]})
    code = _stop(live)
    st = fake.state()
    window = [x for x in st["executions"] if x["orderLinkId"] == best["orderLinkId"]
              and int(x["execTime"]) >= held[0]["time_ms"]]
    assert window, ("the print did not fill the held quote", st["executions"][-3:])
    assert code == 0, live.output()[-3000:]
    assert st["open_orders"] == [], st["open_orders"]
    [run_dir] = list((tmp_path / "runs").glob("*-testnet"))
    events = [json.loads(ln) for ln in (run_dir / "recording" / "orders.jsonl").read_text().splitlines()]
    recorded = {e["trade_id"] for e in events if e["kind"] == "OrderFilled"}
    exchange = {x["execId"] for x in st["executions"]}
    assert {x["execId"] for x in window} <= recorded, ("stop-window fill not recorded", window, sorted(recorded))
    assert recorded == exchange, (sorted(recorded), sorted(exchange))
    report = json.loads((run_dir / "report.json").read_text())
    assert report["metrics"]["counts"]["n_fills"] == len(exchange), (report["metrics"]["counts"], len(exchange))
    assert set(pd.read_parquet(run_dir / "fills.parquet")["trade_id"]) == exchange
    # the instant the strategies were asked to stop (node clock): before the held cancel reached the exchange
    [stop_ns] = report["metadata"]["session"]["strategy_stop_ns"].values()
    assert stop_ns <= held[0]["time_ms"] * 1_000_000 + 1_000_000, (stop_ns, held[0])


def live_wait(cond, timeout: float, what: str):
    """Poll ``cond`` while the node is stopping (``Live.wait_for`` fails once the process exits)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timeout waiting for {what}")


def test_live_stop_check_summary_names_every_order_left():
    """The summary line names every order left, remaining and unconfirmed alike."""
    from mmbot.live.stop import SweepResult

    r = SweepResult(ok=False, verified=True, remaining=["O-1"], unconfirmed=["O-2"], rounds=3, seconds=1.5,
                    last_error="no answer within 3.0s")
    assert r.left == ["O-1", "O-2"]
    assert r.summary().startswith("2 order(s) may still rest on the venue after stop: O-1, O-2 (checked for 1.5s")
    assert "never answered" in SweepResult(ok=False).summary()
