"""Rows of the fault matrix, how one row runs, and how its columns are measured.

Every row starts its own loopback exchange (``tests.test_live_e2e.Fake``: ``python -m
tools.fake_bybit`` replaying a seeded synthetic recording on its own port) and ``mmbot live --env
testnet`` pointed at it (``tests.test_live_e2e.Live``: the same ``--set live.base_url_*`` the live
tests use, quoting near the touch so short sessions fill). It waits until our quotes rest on the
exchange, then, by phase:

``during``         arms the fault, waits until it fired ``count`` times (at most ``FIRE_WAIT_S``),
                   lets the node run ``after_s`` more seconds (it must recover), then SIGTERM;
``at stop``        arms the fault and sends SIGTERM right after it (faults that act on the next
                   order message are first waited for, so their effect is in flight when the stop
                   begins: a held create, a lost ack, a dropped fill message);
``on stop cancel`` arms the fault with ``on="stop_cancel"``: the fake arms it at the stop's first
                   cancel (a batch cancel of its acknowledged orders, or the venue check's REST cancel
                   when none was acknowledged yet; quoting cancels one order at a time over the trade
                   WebSocket and never triggers it), then SIGTERM;
``at start``       arms the fault before the process starts (the start must fail with exit 4);
``kill-restart``   SIGKILL while our orders rest, restart; the restart must cancel our leftovers
                   (its ``startup_sweep`` line before Nautilus reconciles, or ``StartupOrderPolicy``'s
                   ``startup_orders`` line after; they name them), then it quotes, SIGTERM;
``clean``          no fault.

Columns (all from the fake's state after the process exited, and the process' own output):

fired
    firings of the fault recorded by the fake (``state()["faults"]["fired"]`` entries with the
    fault's id, trigger records excluded); a window fault (``stale_book``, ``refuse_ws``) counts 1
    once it is armed (it acts from then on) plus its refused upgrades. A row whose fault must fire
    and did not proves nothing and FAILS.
sent twice
    client order ids (Bybit ``orderLinkId``) that the venue was asked to create more than once
    (trade-WebSocket ``order.create`` / ``order.create-batch`` items in the fake's log, REST creates
    through the orders they made), or that exist twice among the venue's orders; plus "two creates
    for one intended quote": orders the node recorded as rejected (``OrderRejected`` in
    ``orders.jsonl``) that the venue had in fact accepted (venue ``rejectReason`` ``EC_NoError``):
    the strategy frees the quote's slot and sends another create while the first order rests.
left after stop
    our orders (client order id with the live trader tag of the row's key, ``row_key``; ``is_own_order_id``) open on the
    venue after the process exited and ``settle_s`` more seconds (requests the fake still held have
    landed by then). Allowed only with exit 3, and only if the process named every one of them on
    its ``error:`` line.
position vs exchange
    the node's final position (the ``stopped`` JSON line: signed quantity of every open position in
    its cache when it stopped) against the exchange's: ``equal`` or ``differs``. The exchange's is
    its position when that line was written (our executions up to then); it must also be its
    position at the end, except with exit 3 (orders may still rest after the stop, and fill:
    the process said so and cannot know more).
exit
    the process' exit code against the row's expected code (0 normally; 3 when orders may rest;
    4 when the start fails; 5 when the connection is lost; docs/runbook.md).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tools.fake_bybit.auth import process_api_key
from tools.fake_bybit.faults import KINDS, TRIGGERS, WINDOW_KINDS

QUOTE_WAIT_S = 60.0   # start + first quotes on the exchange (the machine may be loaded)
QUOTE_S = 1.5         # quoting before the fault is armed
FIRE_WAIT_S = 15.0    # during: the fault's first firing (REST faults wait for the periodic open-order check)
STOP_FIRE_WAIT_S = 8.0  # at stop: the firing of a fault that acts on the next order message
STOP_TIMEOUT_S = 120.0  # SIGTERM -> exit (stop_deadline_s 15 + disconnect timeouts, under load)


# ``tests.test_live_e2e.KEY``, the key the harness' helpers run with (tests/test_fault_matrix.py
# asserts the two are equal); made here so that this module, and ``--list``, import without the
# tests package.
E2E_API_KEY = process_api_key("fake-key-for-mmbot-e2e")


def row_key(row: Row) -> str:
    """The API key of ``row``'s fake exchange and ``mmbot live`` processes: one per row, because
    mmbot allows one instance per API key per host (mmbot/live/lock.py) and rows run at once
    (``--jobs``, the tests' subset)."""
    return f"{E2E_API_KEY}-{row.slug}"


def trader_tag(key: str) -> str:
    """The live trader tag of ``key``: our client order ids are ``O-<date>-<time>-<tag>-<n>-<n>``."""
    from mmbot.live.node import live_trader_tag

    return live_trader_tag(key)


def own_ids(text: str, tag: str) -> set[str]:
    """Our client order ids (trader tag ``tag``) named in ``text``."""
    return set(re.findall(rf"O-\d{{8}}-\d{{6}}-{tag}-\d{{3}}-\d+", text))


PHASES = ("during", "at stop", "on stop cancel", "at start", "kill-restart", "clean")
# mmbot options every row adds to tests.test_live_e2e.Live's: none beyond what the live tests use,
# so a row is an ordinary session; rows that need shorter limits say so in ``extra``.
START_FAST = ("--set", "live.timeout_connection_s=3", "--set", "live.timeout_reconciliation_s=3")


@dataclass(frozen=True)
class Row:
    kind: str                      # a fake fault kind, or "none" (clean, kill-restart)
    phase: str
    params: dict = field(default_factory=dict)
    variant: str = ""              # e.g. the stream of drop_ws
    expect_exit: int = 0
    must_fire: bool = True
    wait_fired: bool = False       # at stop: SIGTERM once the fault fired (at most STOP_FIRE_WAIT_S)
    after_s: float = 4.0           # during: seconds of quoting after the first firing
    settle_s: float = 1.0          # after exit: let held / delayed requests land before counting
    extra: tuple = ()              # more mmbot options
    note: str = ""

    @property
    def name(self) -> str:
        if self.kind == "none":
            return "SIGKILL" if self.phase == "kill-restart" else "(no fault)"
        return self.kind + (f"/{self.variant}" if self.variant else "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.name}-{self.phase}".lower()).strip("-")


def _rows() -> list[Row]:
    rows: list[Row] = [Row("none", "clean", must_fire=False)]
    # kind, variant, params, during-specifics
    base = [
        ("rate_limit", "rest", {"count": 1}),  # REST during a session: the periodic open-order check
        ("rate_limit", "rest-429", {"count": 1, "http_status": 429}),
        ("rate_limit", "ws", {"count": 3, "ws": True}),
        ("drop_ws", "public", {"stream": "public"}),
        ("drop_ws", "private", {"stream": "private"}),
        ("drop_ws", "trade", {"stream": "trade"}),
        ("post_only_reject", "", {"count": 2}),
        ("cancel_unknown", "", {"count": 2}),
        ("insufficient_balance", "", {"count": 2}),
        ("delay_ack", "", {"count": 2, "seconds": 1.0}),
        ("lose_ack", "", {"count": 2, "seconds": 3.0}),
        ("stale_book", "", {"seconds": 5.0}),
        ("gap_book", "", {"count": 1}),
        ("drop_private", "", {"count": 3}),
        ("delay_cancel", "", {"count": 2, "seconds": 1.0}),
        ("hold", "orders", {"seconds": 3.0}),
        ("sign_error", "", {"count": 1}),
        ("refuse_ws", "private", {"stream": "private", "seconds": 3.0}),
        ("refuse_ws", "trade", {"stream": "trade", "seconds": 3.0}),
        ("refuse_ws", "public", {"stream": "public", "seconds": 3.0}),
    ]
    for kind, variant, params in base:
        rows.append(Row(kind, "during", dict(params), variant, settle_s=_settle(kind, params)))
    # An outage longer than reconnect_timeout_s: the run stops by itself, exit 5, orders cancelled.
    rows.append(Row("refuse_ws", "during", {"stream": "all"}, "all-outage", expect_exit=5, after_s=60.0,
                    extra=("--set", "live.reconnect_timeout_s=3"),
                    note="outage > reconnect_timeout_s: the run stops itself"))
    # Just before the stop signal. Faults acting on the next order message are waited for.
    on_next_order = {"rate_limit/ws", "post_only_reject", "insufficient_balance", "delay_ack", "lose_ack", "gap_book",
                     "drop_private", "delay_cancel", "hold/orders", "cancel_unknown"}
    for kind, variant, params in base:
        p = dict(params)
        if kind in ("rate_limit", "sign_error") and variant != "ws":
            p["count"] = 5  # the stop's batch cancels (and Nautilus' retries of them) and the venue check
        if kind in ("stale_book", "refuse_ws"):
            p["seconds"] = 10.0  # the whole stop happens inside the window
        name = kind + (f"/{variant}" if variant else "")
        rows.append(Row(kind, "at stop", p, variant, wait_fired=name in on_next_order,
                        must_fire=name in on_next_order or kind in ("rate_limit", "sign_error", "drop_ws",
                                                                   "stale_book", "refuse_ws"),
                        settle_s=_settle(kind, p)))
    # A frozen exchange from the stop on: nothing is processed before stop_deadline_s: exit 3 and
    # every order left named. (Measured at exit: the fake processes the held batch cancel after 60 s.)
    rows.append(Row("hold", "at stop", {"what": "all", "seconds": 60.0, "count": -1}, "frozen", expect_exit=3,
                    settle_s=0.0, extra=("--set", "live.stop_deadline_s=3"),
                    note="frozen past stop_deadline_s: exit 3 naming the orders"))
    # Armed by the stop's first batch cancel (drop_ws acts at once and takes no trigger).
    # What can still fire from the batch cancel on: the batch cancel itself (trade WS), REST requests
    # (the venue check), private messages (the cancels' order updates), the public stream until
    # disconnect.
    after_stop_cancel = {"rate_limit/rest", "rate_limit/rest-429", "lose_ack", "stale_book",
                         "drop_private", "hold/orders", "sign_error", "refuse_ws/private", "refuse_ws/trade",
                         "refuse_ws/public"}
    for kind, variant, params in base:
        if kind == "drop_ws":
            continue
        p = dict(params, on="stop_cancel")
        name = kind + (f"/{variant}" if variant else "")
        if kind in ("rate_limit", "sign_error") and variant != "ws":
            p["count"] = 5
        if kind == "cancel_unknown":
            p["count"] = 3  # single cancels only: the venue check's, when the batch cancels left something
        if kind in ("stale_book", "refuse_ws"):
            p["seconds"] = 10.0
        rows.append(Row(kind, "on stop cancel", p, variant, must_fire=name in after_stop_cancel, settle_s=_settle(kind, p),
                        note="" if name in after_stop_cancel else "no such request after the stop's batch cancel"))
    rows.append(Row("hold", "on stop cancel", {"what": "all", "seconds": 60.0, "count": -1, "on": "stop_cancel"},
                    "frozen", expect_exit=3, settle_s=0.0, extra=("--set", "live.stop_deadline_s=3"),
                    note="frozen past stop_deadline_s: exit 3 naming the orders"))
    # A start that cannot succeed: exit 4, one line, nothing left.
    rows.append(Row("sign_error", "at start", {"count": -1}, must_fire=True, expect_exit=4, extra=START_FAST))
    rows.append(Row("refuse_ws", "at start", {"stream": "all"}, "all", expect_exit=4, extra=START_FAST))
    rows.append(Row("hold", "at start", {"what": "all", "seconds": 60.0, "count": -1}, "frozen", expect_exit=4,
                    settle_s=0.0, extra=START_FAST))
    rows.append(Row("none", "kill-restart", must_fire=False, note="SIGKILL with resting orders, restart"))
    return rows


DELAYING = {"hold", "delay_ack", "delay_cancel", "lose_ack"}  # the fake processes or answers ``seconds`` later


def _settle(kind: str, params: dict) -> float:
    """A held / delayed request lands ``seconds`` after it arrived: count what rests after that."""
    return float(params.get("seconds", 0.0)) + 0.5 if kind in DELAYING else 1.0


ROWS: list[Row] = _rows()


def coverage_gaps(rows: list[Row] = ROWS) -> list[str]:
    """Kinds or (kind, phase) pairs of the fake's fault registry the matrix misses."""
    gaps = []
    for kind in sorted(KINDS):
        for phase in ("during", "at stop", "on stop cancel"):
            if phase == "on stop cancel" and kind == "drop_ws":
                continue  # acts at once, takes no trigger (refuse_ws is the triggerable outage)
            if not any(r.kind == kind and r.phase == phase for r in rows):
                gaps.append(f"{kind} {phase}")
    if "stop_cancel" not in TRIGGERS:
        gaps.append("trigger stop_cancel")
    if not any(r.phase == "kill-restart" for r in rows):
        gaps.append("kill-restart")
    return gaps


def select(only: str | None, rows: list[Row] = ROWS) -> list[Row]:
    """``--only``: comma-separated kinds, row names (``drop_ws/public``) or phases."""
    if not only:
        return list(rows)
    want = {w.strip() for w in only.split(",") if w.strip()}
    unknown = want - {r.kind for r in rows} - {r.name for r in rows} - set(PHASES) - {r.slug for r in rows}
    if unknown:
        raise ValueError(f"--only: unknown {', '.join(sorted(unknown))} (kinds: {', '.join(sorted(KINDS))}; "
                         f"phases: {', '.join(PHASES)})")
    return [r for r in rows if want & {r.kind, r.name, r.phase, r.slug}]


# -- measuring -----------------------------------------------------------------------------------

def json_events(err_text: str) -> list[dict]:
    out = []
    for line in err_text.splitlines():
        if line.startswith("{") and '"event"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def own(link_id: str, tag: str) -> bool:
    """``link_id`` is one of ours: a client order id of trader tag ``tag`` (``trader_tag``)."""
    from mmbot.live.node import is_own_order_id

    return bool(link_id) and is_own_order_id(link_id, tag)


def created_links(state: dict) -> list[str]:
    """orderLinkId of every create that reached the venue over the trade WebSocket (batches
    itemised), in arrival order."""
    out = []
    for m in state.get("ws_log", []):
        msg = m.get("msg")
        if not isinstance(msg, dict) or m.get("stream") != "trade":
            continue
        op, args = msg.get("op"), msg.get("args") or [{}]
        if op == "order.create":
            out.append(args[0].get("orderLinkId", ""))
        elif op == "order.create-batch":
            out += [r.get("orderLinkId", "") for r in (args[0].get("request") or [])]
    return out


def node_rejected(run_root: Path) -> set[str]:
    """Client order ids the node recorded as rejected (every ``orders.jsonl`` under ``run_root``)."""
    out = set()
    for p in run_root.glob("*/recording/orders.jsonl"):
        for line in p.read_text(errors="replace").splitlines():
            if line.endswith("}") and '"OrderRejected"' in line:
                try:
                    out.add(json.loads(line)["client_order_id"])
                except (ValueError, KeyError):
                    pass
    return out


def sent_twice(state: dict, rejected_by_node: set[str], tag: str) -> dict:
    """Our client order ids (trader tag ``tag``) created twice (module doc, "sent twice")."""
    from collections import Counter

    creates = Counter(x for x in created_links(state) if own(x, tag))
    venue = Counter(o["orderLinkId"] for o in state["orders"] if own(o["orderLinkId"], tag))
    accepted = {o["orderLinkId"] for o in state["orders"] if o.get("rejectReason", "EC_NoError") == "EC_NoError"}
    twice_sent = sorted(k for k, n in creates.items() if n > 1)
    twice_venue = sorted(k for k, n in venue.items() if n > 1)
    orphaned = sorted(rejected_by_node & accepted)
    ids = sorted(set(twice_sent) | set(twice_venue) | set(orphaned))
    return {"count": len(ids), "ids": ids, "create_sent_twice": twice_sent, "created_twice_on_venue": twice_venue,
            "rejected_by_node_accepted_by_venue": orphaned}


def signed_venue_position(state: dict) -> float:
    p = state["position"]
    size = float(p.get("size") or 0)
    return size if p.get("side") == "Buy" else -size if p.get("side") == "Sell" else 0.0


def venue_position_at(state: dict, ts_ms: int | None) -> float:
    """The exchange's signed position from our executions up to ``ts_ms`` (all when None)."""
    pos = 0.0
    for x in state["executions"]:
        if ts_ms is None or int(x["execTime"]) <= ts_ms:
            pos += float(x["execQty"]) * (1 if x["side"] == "Buy" else -1)
    return round(pos, 9)


def stopped_ms(events: list[dict]) -> int | None:
    from datetime import datetime

    stopped = [e for e in events if e.get("event") == "stopped"]
    return int(datetime.fromisoformat(stopped[-1]["ts"]).timestamp() * 1000) if stopped else None


def node_position(events: list[dict]) -> float | None:
    stopped = [e for e in events if e.get("event") == "stopped"]
    if not stopped:
        return None
    return sum(float(x) for x in stopped[-1].get("positions") or [])


def fired_count(state: dict, fault: dict | None) -> int:
    if fault is None:
        return 0
    fid = fault["id"]
    recs = [f for f in state["faults"]["fired"] if f.get("id") == fid]
    n = sum(1 for f in recs if "armed_by" not in f)
    if fault["kind"] in WINDOW_KINDS:
        triggered = fault.get("on") is None or any("armed_by" in f for f in recs)
        n += 1 if triggered else 0
    return n


def _error_line(err_text: str) -> str:
    lines = [x for x in err_text.splitlines() if x.startswith("error: ")]
    return lines[-1] if lines else ""


# -- running one row -----------------------------------------------------------------------------

def run_row(row: Row, work: Path, recording: Path, keep: bool = False) -> dict:
    """Run ``row`` in ``work/<slug>`` and return its measured columns (``result["pass"]``)."""
    from tests.test_live_e2e import Fake, Live

    tmp = work / row.slug
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    key = row_key(row)
    tag = trader_tag(key)
    res: dict = {"row": row.name, "kind": row.kind, "variant": row.variant, "phase": row.phase,
                 "params": row.params, "expect_exit": row.expect_exit, "must_fire": row.must_fire, "dir": str(tmp),
                 "note": row.note}
    t0 = time.monotonic()
    fake = Fake(tmp, recording, key=key)
    procs = []
    fault = None
    try:
        def start(name: str = "live", extra: tuple = ()) -> Live:
            live = Live(tmp, fake, extra=list(row.extra) + list(extra), name=name)
            procs.append(live)
            return live

        def arm(**override) -> dict:
            r = fake.fault(row.kind, **{**row.params, **override})
            return r["fault"]

        def quoting(live: Live) -> list:
            return live.wait_for(lambda: [o for o in fake.state()["open_orders"] if own(o["orderLinkId"], tag)],
                                 QUOTE_WAIT_S, "our quotes on the exchange")

        def wait_fired(live: Live, limit: float, n: int = 1) -> None:
            end = time.monotonic() + limit
            while time.monotonic() < end and live.proc.poll() is None:
                if fired_count(fake.state(), fault) >= n:
                    return
                time.sleep(0.1)

        if row.phase == "at start":
            fault = arm()
            live = start(extra=("--duration", "60s"))
            code = live.proc.wait(timeout=STOP_TIMEOUT_S)
        else:
            live = start()
            quoting(live)
            time.sleep(QUOTE_S)
            if row.phase == "during":
                fault = arm()
                # every firing inside the session (a fault that fires once more at the stop is an
                # at-stop row's business)
                wait_fired(live, FIRE_WAIT_S, max(1, int(row.params.get("count", 1))))
                end = time.monotonic() + row.after_s
                while time.monotonic() < end and live.proc.poll() is None:
                    time.sleep(0.2)
                code = live.proc.poll()
                if code is None:
                    code = live.terminate(timeout=STOP_TIMEOUT_S)
            elif row.phase == "at stop":
                fault = arm()
                if row.wait_fired:
                    wait_fired(live, STOP_FIRE_WAIT_S)
                code = live.terminate(timeout=STOP_TIMEOUT_S)
            elif row.phase == "on stop cancel":
                fault = arm()
                code = live.terminate(timeout=STOP_TIMEOUT_S)
            elif row.phase == "clean":
                time.sleep(row.after_s)
                code = live.terminate(timeout=STOP_TIMEOUT_S)
            elif row.phase == "kill-restart":
                live.proc.send_signal(signal.SIGKILL)
                res["killed_exit"] = live.proc.wait(timeout=30)
                time.sleep(0.5)
                leftovers = sorted(o["orderLinkId"] for o in fake.state()["open_orders"] if own(o["orderLinkId"], tag))
                res["leftovers_at_kill"] = leftovers
                again = start(name="restart")
                # The restart cancels what the killed process left (its startup sweep, before
                # Nautilus reconciles; StartupOrderPolicy after, for what the sweep missed), then quotes.
                again.wait_for(lambda: not ({o["orderLinkId"] for o in fake.state()["open_orders"]} & set(leftovers)),
                               QUOTE_WAIT_S, "the killed run's orders cancelled")
                quoting(again)
                time.sleep(row.after_s)
                code = again.terminate(timeout=STOP_TIMEOUT_S)
                st = fake.state()
                res["leftovers_cancelled"] = all(
                    o["orderStatus"] in ("Cancelled", "PartiallyFilledCanceled", "Filled")
                    for o in st["orders"] if o["orderLinkId"] in leftovers)
                live = again
                said = json_events(again.err.read_text(errors="replace"))
                swept = [e for e in said if e.get("event") == "startup_sweep"]
                policy = [e for e in said if e.get("event") == "startup_orders"]
                res["startup_swept"] = sorted(swept[0].get("cancels_sent") or []) if swept else []
                res["startup_cancelled"] = sorted(set(res["startup_swept"]) | set(
                    (policy[0].get("own_cancelled") or []) if policy else []))
                # Every leftover was cancelled by the restart (its sweep before Nautilus reconciles,
                # or the startup policy after), or filled before it looked.
                status = {o["orderLinkId"]: o["orderStatus"] for o in st["orders"]}
                res["leftovers_unhandled"] = sorted(x for x in leftovers if status.get(x) != "Filled"
                                                    and x not in res["startup_cancelled"])
            else:
                raise ValueError(f"unknown phase {row.phase!r}")
        res["exit"] = code
        time.sleep(row.settle_s)
        st = fake.state()
        (tmp / "fake_state.json").write_text(json.dumps(st, indent=1))
        err = "".join(p.err.read_text(errors="replace") for p in procs)
        events = json_events(live.err.read_text(errors="replace"))
        left = sorted(o["orderLinkId"] for o in st["open_orders"] if own(o["orderLinkId"], tag))
        line = _error_line(live.err.read_text(errors="replace"))
        named = own_ids(line, tag)
        res.update({
            "fired": fired_count(st, fault),
            "fault": fault,
            "sent_twice": sent_twice(st, node_rejected(tmp / "runs"), tag),
            "left": left,
            "left_unnamed": sorted(set(left) - named),
            "named_fills": named_fills_after_check(st, named, events),
            "error_line": line,
            "node_position": node_position(events),
            "venue_position": signed_venue_position(st),
            "venue_position_at_stop": venue_position_at(st, stopped_ms(events)),
            "venue_orders": len([o for o in st["orders"] if own(o["orderLinkId"], tag)]),
            "venue_fills": len(st["executions"]),
            "stop_check": next((e for e in reversed(events) if e.get("event") == "stop_check"), None),
            "secret_leak": _leak(err, tmp, key),
        })
    except Exception as e:  # noqa: BLE001  (a row that cannot run is a failing row, the matrix goes on)
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-3000:]
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                try:
                    p.proc.wait(timeout=10)
                except Exception:  # noqa: BLE001
                    pass
        fake.stop()
    res["seconds"] = round(time.monotonic() - t0, 1)
    judge(row, res)
    if res["pass"] and not keep:
        shutil.rmtree(tmp, ignore_errors=True)
        res["dir"] = ""
    return res


def _leak(err: str, tmp: Path, key: str) -> bool:
    from tests.test_live_e2e import SECRET

    if key in err or SECRET in err:
        return True
    for p in (tmp / "runs").rglob("*"):
        if p.is_file() and p.suffix != ".gz" and (SECRET in p.read_text(errors="replace")):
            return True
    return False


MAX_NAMED_FILLS = 12  # subsets of the named orders' fills tried (2**12): the latest ones


def named_fills_after_check(state: dict, named: set, events: list[dict]) -> list[float]:
    """Signed quantities (buys positive) of the exchange's fills of the ``named`` orders that came
    after the stop check gave up (its ``stop_check`` line): the only fills a node that exited 3
    may not have applied. Oldest first."""
    check = next((e for e in reversed(events) if e.get("event") == "stop_check"), None)
    if check is None or not check.get("ts"):
        return []
    from datetime import datetime

    after_ms = int(datetime.fromisoformat(check["ts"]).timestamp() * 1000)
    fills = sorted((int(e["execTime"]), float(e["execQty"]) * (1 if e["side"] == "Buy" else -1))
                   for e in state["executions"] if e.get("orderLinkId") in named and int(e["execTime"]) >= after_ms)
    return [q for _, q in fills]


def _explained_by_named_fills(res: dict, node: float, at_stop: float) -> bool:
    """Exit 3 only: the node stopped without confirmation from the exchange, and its ``error:`` line
    named the orders that may still rest and fill; a fill of those orders can land while the node
    disconnects, after its last word. The difference must be exactly some of those fills
    (``named_fills``: signed quantities, buys positive), no other."""
    if res["exit"] != 3:
        return False
    fills = list(res.get("named_fills") or [])[-MAX_NAMED_FILLS:]
    for mask in range(1, 1 << len(fills)):
        missed = sum(q for i, q in enumerate(fills) if mask >> i & 1)
        if abs(node + missed - at_stop) <= 1e-9:
            return True
    return False


def position_equal(res: dict) -> bool:
    """The node's final position is the exchange's when it stopped (after exit 3: but for fills of
    the orders it named), and (unless it exited 3: orders may rest) still the exchange's at the end."""
    node = res["node_position"]
    if node is None:
        return False
    at_stop = res.get("venue_position_at_stop", res["venue_position"])
    if abs(node - at_stop) > 1e-9 and not _explained_by_named_fills(res, node, at_stop):
        return False
    return res["exit"] == 3 or abs(at_stop - res["venue_position"]) <= 1e-9


def judge(row: Row, res: dict) -> None:
    """PASS when: the fault fired (if it must), nothing was sent twice, nothing is left (or exit 3
    named every order left), the node's position equals the exchange's, and the exit code is the
    expected one."""
    why = []
    if "error" in res:
        why.append(res["error"])
    else:
        if row.must_fire and res["fired"] == 0:
            why.append("fault never fired")
        if res["sent_twice"]["count"]:
            why.append(f"sent twice: {res['sent_twice']['ids']}")
        if res["left"] and not (res["exit"] == 3 and not res["left_unnamed"]):
            why.append(f"left after stop: {res['left']}")
        if not position_equal(res):
            why.append("no 'stopped' line: final position unknown" if res["node_position"] is None else
                       f"position differs: node {res['node_position']:g}, venue {res['venue_position_at_stop']:g} "
                       f"when it stopped, {res['venue_position']:g} at the end")
        if res["exit"] != row.expect_exit:
            why.append(f"exit {res['exit']}, expected {row.expect_exit}")
        if res["secret_leak"]:
            why.append("API key or secret in the output")
        if row.phase == "kill-restart":
            if not res.get("leftovers_at_kill"):
                why.append("no order rested when the process was killed")
            if not res.get("leftovers_cancelled"):
                why.append("the killed run's orders are not all closed")
            if not res.get("startup_cancelled") or res.get("leftovers_unhandled"):
                why.append(f"not cancelled by the restart (startup sweep or StartupOrderPolicy): "
                           f"{res.get('leftovers_unhandled')}")
    res["why"] = why
    res["pass"] = not why


# -- the table -----------------------------------------------------------------------------------

HEADER = ("fault", "phase", "fired", "sent twice", "left after stop", "position vs exchange", "exit (expected)",
          "result")


def cells(res: dict) -> tuple[str, ...]:
    if "error" in res and "fired" not in res:
        return (res["row"], res["phase"], "-", "-", "-", "-", "-", "FAIL: " + res["error"][:60])
    left = str(len(res["left"]))
    if res["left"] and not res["left_unnamed"]:
        left += " (all named)"
    if res["node_position"] is None:
        pos = "unknown"
    elif position_equal(res):
        pos = f"equal ({res['node_position']:g})"
    else:
        pos = f"differs ({res['node_position']:g} vs {res['venue_position_at_stop']:g}/{res['venue_position']:g})"
    if res["phase"] in ("clean", "kill-restart"):
        fired = "-"
    else:
        fired = str(res["fired"]) + (" (n/a)" if res["fired"] == 0 and not res.get("must_fire", True) else "")
    return (res["row"], res["phase"], fired, str(res["sent_twice"]["count"]), left, pos,
            f"{res['exit']} ({res['expect_exit']})", "PASS" if res["pass"] else "FAIL")


def table(results: list[dict], markdown: bool = False) -> str:
    rows = [HEADER] + [cells(r) for r in results]
    if markdown:
        out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def to_json(results: list[dict]) -> list[dict]:
    return [dict(r) for r in results]


__all__ = ["ROWS", "Row", "coverage_gaps", "judge", "run_row", "select", "table", "to_json"]
