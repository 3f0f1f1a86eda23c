"""Hostile review of 7af38fa "Live trader tag derived from the API key" (issue 13 item 5 and the
foreign-order rules): the live trader id is ``MMBOT-<live_trader_tag(api_key)>`` and ownership of a
venue order (``is_own_order_id``) decides what the startup sweep, ``StartupOrderPolicy``, the stop
check, the guards' foreign-order filter and the fault matrix judge treat as ours.

Every test here FAILED on ``integrate`` at 449d754 (which contains 7af38fa) for the reason its
docstring states; the attacks that held are listed in the review report, not here. Nothing is
marked xfail on purpose (reviewer's branch): the fixing helper turns each into a fix or a strict
xfail with a reason.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.test_live_e2e import fake, recording  # noqa: F401  (fixtures: the loopback exchange)

REPO = Path(__file__).resolve().parents[1]
IID = "BTCUSDT-LINEAR.BYBIT"


def _runbook() -> str:
    return (REPO / "docs" / "runbook.md").read_text()


def _leftover(tag: str) -> str:
    """A client order id a killed live run with trader tag ``tag`` leaves on the venue."""
    return f"O-20261203-050000-{tag}-000-7"


# -- restart under another tag: key rotation, or the first start after the 001 -> M.... upgrade ----

def test_runbook_says_what_a_restart_after_a_key_rotation_does_with_the_killed_runs_leftovers():
    """Expected: the runbook tells the operator what happens when the tag changes between a killed
    run and its restart, since the tag is now a function of the API key: rotating the key (Bybit keys
    expire or get revoked; a leaked key is rotated at once, often right after killing the bot) or
    the first restart after upgrading from the fixed ``001`` tag. Actual: the killed run's leftovers
    are not "ours" any more (``is_own_order_id(old id, new tag)`` is False): the startup sweep and
    ``StartupOrderPolicy`` call them FOREIGN; with the default ``foreign_orders = "refuse"`` every
    restart exits 2 ("foreign open order(s) ... refusing to run", which the runbook explains as
    "placed by hand or another program"; a supervisor with ``Restart=on-failure`` loops on it), and
    with ``"ignore"`` mmbot quotes beside its own old quotes, which nothing of it ever cancels (the
    stop check and the guards skip them) and which can still fill. docs/runbook.md:241 says only
    "It is the same on every restart with the key (a killed run's leftovers are recognised)", and
    :321/:379 "startup cancels any of our orders left"; neither "rotat…", "new key" nor the upgrade is mentioned
    (grep). mmbot/live/node.py:341 (``is_own_order_id``), :349 (``live_trader_tag``)."""
    from mmbot.live.node import TRADER_ID, is_own_order_id, live_trader_tag

    old_key, new_key = "old-key-revoked-0001", "new-key-rotated-0002"
    new_tag = live_trader_tag(new_key)
    # The behaviour the runbook has to explain: a killed run's leftover is foreign after the change.
    assert not is_own_order_id(_leftover(live_trader_tag(old_key)), new_tag)
    assert not is_own_order_id(_leftover(TRADER_ID.split("-")[-1]), new_tag)  # pre-upgrade leftover
    text = _runbook().lower()
    words = ("rotat", "new api key", "new key", "another key", "key change", "changed key")
    assert any(w in text for w in words), (
        "docs/runbook.md never says what a restart under a new API key (or the first start after the "
        "001 -> key-derived tag upgrade) does with the killed run's leftovers: they are foreign now "
        "(exit 2 with foreign_orders=refuse; quoted beside and never cancelled with ignore)")


def test_runbook_says_leftovers_with_the_old_001_tag_are_foreign_after_the_upgrade():
    """Expected: an operator upgrading a bot that was killed with orders resting (tag ``001``) is told
    that those orders are now foreign and must be cancelled on the exchange (or with which
    command). Actual: docs/runbook.md:242-244 mentions ``001`` only as history ("used until
    2026-12-03 ... the sweep cancelled such a program's orders") and :250 calls ours only
    ``O-…-<this key's tag>-…``; the first restart after the upgrade refuses (exit 2, "foreign open
    order(s)") with nothing that connects it to the upgrade."""
    from mmbot.live.node import TRADER_ID, is_own_order_id, live_trader_tag

    assert not is_own_order_id(_leftover(TRADER_ID.split("-")[-1]), live_trader_tag("any-key-0123456789"))
    text = _runbook()
    i = text.find("used until 2026-12-03")
    assert i >= 0
    para = text[i: text.find("\n\n", i)].lower()
    assert "upgrad" in para or "leftover" in para or "cancel them" in para, (
        "the runbook paragraph on the tag change does not say that orders a killed pre-upgrade run "
        "left (tag 001) are foreign now and must be cancelled by hand: " + para[:300])


# -- two keys, one tag ----------------------------------------------------------------------------

def _colliding_keys() -> tuple[str, str, str]:
    from mmbot.live.node import live_trader_tag

    seen: dict[str, str] = {}
    i = 0
    while True:
        k = f"sub-account-key-{i:06d}"
        t = live_trader_tag(k)
        if t in seen:
            return seen[t], k, t
        seen[t] = k
        i += 1


def test_two_keys_with_one_tag_cancel_each_others_orders_and_the_runbook_does_not_say_so():
    """Expected: either the tag cannot collide for two keys of one account, or the consequence is
    documented where the operator reads about keys (the runbook recommends "run a second instrument
    on a second key"; the same instrument on a second key is what a key rotation overlap or a second
    strategy does). Actual: the tag has 36**4 = 1.68 M values; a birthday search finds two keys with
    one tag after ~1,500 keys (e.g. ``sub-account-key-…`` below). Two such bots on one account and
    instrument each treat the other's orders as their own: the startup sweep and
    ``StartupOrderPolicy`` cancel them, the stop check cancels them at every stop, the guards'
    ``cancel_open_orders`` cancels them (reconciled into the cache), the per-key lock does not stop
    it (two keys, two locks). mmbot/live/node.py:358 docstring claims the tag "differs between two
    keys on one account"; docs/runbook.md has no word on it (grep collid/collision/same tag)."""
    import re

    from mmbot.live.node import is_own_order_id, live_trader_tag
    from strategies.risk.base import own_order_prefix

    a, b, tag = _colliding_keys()
    assert a != b and live_trader_tag(a) == live_trader_tag(b) == tag
    other_bots_order = _leftover(live_trader_tag(a))
    # Bot b's sweep/policy/stop check and its guards' filter claim bot a's order.
    assert is_own_order_id(other_bots_order, live_trader_tag(b))
    assert own_order_prefix(live_trader_tag(b)).match(other_bots_order)
    text = _runbook().lower()
    assert re.search(r"collid|collision|same (trader )?tag|one tag", text), (
        f"keys {a!r} and {b!r} share trader tag {tag}: each bot would cancel the other's orders; "
        "docs/runbook.md does not mention that two keys can share a tag or what follows")


# -- defaults that silently bring 001 back ------------------------------------------------------------

def test_startup_order_policy_default_tag_is_the_nautilus_default_tag_it_must_never_own():
    """Expected: nothing with orders on a venue can end up owning ``O-…-001-…`` again (the very ids
    of every Nautilus node with the default ``TraderId("TRADER-001")``, which the change exists to
    leave alone): a builder that forgets the tag should fail, not fall back. Actual: three silent
    fall-backs to ``001`` remain: ``StartupOrderPolicyConfig.trader_tag = "001"``
    (mmbot/live/node.py:337), ``node_config_common(..., trader_id=TRADER_ID)`` (node.py:618,
    ``MMBOT-001``) and ``LiveRun._local_open_orders`` ``... or TRADER_ID`` (node.py:1001). A live
    builder (a new mode, a refactor of build_live_node_config) that omits ``trader_tag`` or
    ``trader_id=`` gets a policy that cancels another Nautilus program's orders at start, with no
    error and nothing on the banner (the banner computes its trader id separately, node.py:672)."""
    from nautilus_trader.common.component import LiveClock
    from nautilus_trader.common.generators import ClientOrderIdGenerator
    from nautilus_trader.model.identifiers import InstrumentId, StrategyId, TraderId

    from mmbot.live.node import StartupOrderPolicyConfig, is_own_order_id

    other = ClientOrderIdGenerator(TraderId("TRADER-001"), StrategyId("EMACross-000"), LiveClock()).generate().value
    try:
        cfg = StartupOrderPolicyConfig(instrument_id=InstrumentId.from_str(IID))
    except (TypeError, ValueError):
        return  # a required tag: a forgetful builder fails loudly
    assert not is_own_order_id(other, cfg.trader_tag), (
        f"StartupOrderPolicyConfig() without trader_tag owns {other} (default tag {cfg.trader_tag!r}): "
        "it would cancel a TRADER-001 program's order at start")


# -- stale docs in the fault matrix ----------------------------------------------------------------

def test_fault_matrix_doc_still_defines_our_orders_by_trader_tag_001():
    """Expected: the fault matrix' column definitions (printed/read as the judge's contract) say what
    the judge does: ours = client order id with the key's live trader tag. Actual:
    tools/faults/matrix.py:39 "our orders (client order id of trader tag 001, …)" while
    ``TRADER_TAG`` (matrix.py:82) is ``live_trader_tag(tests.test_live_e2e.KEY)`` = ``MT278``: an
    operator reading the table's doc to check a row on a real account looks for ``-001-``."""
    import tools.faults.matrix as m

    assert m.trader_tag(m.E2E_API_KEY) != "001"  # TRADER_TAG became trader_tag(row_key(row)): a key per row
    assert "trader tag 001" not in (m.__doc__ or ""), "tools/faults/matrix.py doc: 'trader tag 001'"


def test_fault_matrix_cannot_even_list_its_rows_without_the_tests_package():
    """Expected: ``python -m tools.faults --list`` works wherever ``tools`` is importable (pyproject
    packages ``tools*``, not ``tests``), as it did before the change (seen: at 5ab583a the same
    harness lists every row and returns 0). Actual: tools/faults/matrix.py:82 computes
    ``TRADER_TAG = _trader_tag()`` at import, and ``_trader_tag`` (matrix.py:77) imports
    ``tests.test_live_e2e`` (pytest, fixtures) just to read the fake key: the matrix module, and so
    ``--list``, fails with ``ModuleNotFoundError: No module named 'tests'`` outside a checkout. The
    key belongs in tools (the fake's credentials), or the tag computed when a row runs."""
    import subprocess
    import sys

    prog = f"""
import sys, importlib.abc
sys.path.insert(0, {str(REPO)!r})
class NoTests(importlib.abc.MetaPathFinder):  # an installed wheel: tools/, mmbot/, ... but no tests/
    def find_spec(self, name, path, target=None):
        if name == "tests" or name.startswith("tests."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NoTests())
from tools.faults.__main__ import main
sys.exit(main(["--list"]))
"""
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-1500:]


# -- foreign-order rules beyond cancelling: whose fills the session reports ------------------------

def test_another_programs_fill_on_the_shared_account_is_booked_as_ours_in_the_session_report(tmp_path, fake):  # noqa: F811
    """Expected (the foreign-order rules: ownership is the client order id with this key's trader
    tag; docs/runbook.md "foreign (placed by hand or another program) ... quotes beside them"): the
    session report (report.json, fills.parquet) holds mmbot's own fills only; another program's
    trade on the shared account and instrument is not mmbot's PnL, volume or fee. Actual: the run
    ledger (mmbot/backtest/ledger.py:113 ``events.order.*``, :191 ``_on_order_event`` -> ``_on_fill``)
    books EVERY ``OrderFilled`` on the bus, whatever its client order id or strategy (a venue fill of
    an order Nautilus learns from the private stream or reconciliation is an ``EXTERNAL`` order);
    neither the ledger nor the recorder (adapters/recorder.py:221, the ``orders.jsonl`` that
    ``mmbot calibrate``/``compare`` read) applies ``is_own_order_id``/``own_order_prefix``. Here a
    Nautilus program with the default ``TRADER-001`` id takes liquidity once during the session
    (default ``foreign_orders = "refuse"``: nothing foreign at start)."""
    import pandas as pd

    from nautilus_trader.common.component import LiveClock
    from nautilus_trader.common.generators import ClientOrderIdGenerator
    from nautilus_trader.model.identifiers import StrategyId, TraderId

    from tests.test_hostile_issue13 import _signed_post, _stop_live
    from tests.test_live_e2e import Live

    other = ClientOrderIdGenerator(TraderId("TRADER-001"), StrategyId("EMACross-000"), LiveClock()).generate().value
    live = Live(tmp_path, fake, extra=["--set", "live.timeout_post_stop_s=1"])
    try:
        live.wait_for(lambda: '"event": "ready"' in live.err.read_text(errors="replace"), 90, "ready")
        ask = float(fake.state()["book"]["best_ask"][0])
        r = _signed_post(fake.urls["http"], "/v5/order/create", {
            "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.001",
            "price": f"{ask * 1.01:.1f}", "timeInForce": "IOC", "orderLinkId": other})
        assert r["retCode"] == 0, r
        live.wait_for(lambda: any(e.get("orderLinkId") == other for e in fake.state()["executions"]), 30,
                      "the other program's fill on the venue")
        time.sleep(3.0)  # the private stream delivers it to the node
        code = _stop_live(live)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    assert code == 0, live.output()[-2000:]
    [run_dir] = list((tmp_path / "runs").glob("*-testnet"))
    fills = pd.read_parquet(run_dir / "fills.parquet")
    foreign = fills[fills["client_order_id"].astype(str) == other]
    recorded = [ln for ln in (run_dir / "recording" / "orders.jsonl").read_text().splitlines() if other in ln]
    # Fixed for what is about our orders: the recording (calibrate's input) holds none of the other
    # program's events. The report's fills are the account's on the instrument, the other program's
    # included (hostile review 22: a fill without our id can be a liquidation of OUR position; the
    # report's PnL must equal the account's): documented in docs/runbook.md and docs/report.md.
    assert not recorded, f"recording/orders.jsonl (what calibrate reads as our order events) {recorded[:3]}"
    assert len(foreign) == 1, f"the account's fill on the instrument is missing from fills.parquet: {len(foreign)}"


def test_metrics_own_quotes_count_a_foreign_order_as_ours(tmp_path, fake):  # noqa: F811
    """Expected: ``mmbot_open_orders`` / ``mmbot_quote_price`` are mmbot's own quotes (the code says
    "# Own quotes."; docs/runbook.md: with ``foreign_orders = "ignore"`` mmbot "quotes beside" foreign
    orders, so they must not be mistaken for its quotes on the dashboard or by an alert such as
    "orders open while HALTED"). Actual: ``MetricsActor.update`` (mmbot/live/metrics_server.py:385)
    iterates ``cache.orders_open(instrument_id=...)`` with no ownership filter (no
    ``own_order_prefix``/strategy check), and reconciliation put the foreign order in the cache.
    Here mmbot is halted by its kill switch (all its quotes cancelled, none on the venue) while a
    hand-placed order rests: the metrics still report an open quote at the foreign order's price."""
    import re

    from strategies.risk.kill_switch import write_signal
    from tests.test_hostile_issue13 import _signed_post, _stop_live
    from tests.test_live_e2e import Live
    from mmbot.live.node import is_own_order_id, live_trader_tag
    from tests.test_live_e2e import KEY

    ask = float(fake.state()["book"]["best_ask"][0])
    far = f"{ask * 1.2:.1f}"
    r = _signed_post(fake.urls["http"], "/v5/order/create", {
        "category": "linear", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Limit", "qty": "0.001",
        "price": far, "timeInForce": "GTC", "orderLinkId": "hand-placed-hedge-2"})
    assert r["retCode"] == 0, r
    tag = live_trader_tag(KEY)
    live = Live(tmp_path, fake, extra=["--set", "live.foreign_orders=ignore", "--set", "live.timeout_post_stop_s=1"])
    try:
        live.wait_for(lambda: '"event": "ready"' in live.err.read_text(errors="replace"), 90, "ready")
        write_signal(tmp_path / "KILL", "operator halt")  # the kill switch cancels every quote of ours
        live.wait_for(lambda: not [o for o in fake.state()["open_orders"] if is_own_order_id(o["orderLinkId"], tag)]
                      and "hand-placed-hedge-2" in {o["orderLinkId"] for o in fake.state()["open_orders"]},
                      30, "none of our orders open, the foreign one resting")
        time.sleep(2.0)
        text = live.metrics()
        assert not [o for o in fake.state()["open_orders"] if is_own_order_id(o["orderLinkId"], tag)]
    finally:
        _stop_live(live)
    asks = [float(v) for v in re.findall(r'^mmbot_open_orders\{[^}]*side="ask"[^}]*\} (\S+)$', text, re.M)]
    quote = [float(v) for v in re.findall(r'^mmbot_quote_price\{[^}]*side="ask"[^}]*\} (\S+)$', text, re.M)]
    assert asks and quote, text[-1500:]
    assert asks == [0.0], (f"mmbot_open_orders{{side=ask}} = {asks} while none of mmbot's orders is open; "
                           f"mmbot_quote_price{{side=ask}} = {quote} (the hand-placed order at {far})")


def test_a_foreign_programs_accepted_orders_close_the_half_open_circuit_breaker():
    """Expected: the breaker's half-open state closes only when ``probe_orders`` of OUR orders are
    accepted (strategies/risk/circuit_breaker.py doc: "probe_orders accepted to close"; the probes
    are the strategy's quotes sent after the cool-down); the guards apply the foreign-order rule
    (own_order_prefix) when they cancel. Actual: ``CircuitBreakerGuard._on_order_event``
    (circuit_breaker.py:150) counts every ``OrderAccepted`` on ``events.order.*`` as a probe, whatever
    its client order id: on a shared account Nautilus publishes ``OrderAccepted`` for another
    program's orders too (strategy ``EXTERNAL``; seen end to end in
    ``test_another_programs_fill_…``: the other program's order's ``OrderAccepted`` is in
    ``orders.jsonl``). Two foreign orders accepted during half-open close the breaker and clear its
    counts, so mmbot's own still-failing orders then need ``max_rejects`` (20) new rejects to reopen
    it instead of the first failed probe."""
    from nautilus_trader.model.events import OrderAccepted
    from nautilus_trader.model.identifiers import (
        AccountId, ClientOrderId, InstrumentId, StrategyId, TraderId, VenueOrderId,
    )
    from nautilus_trader.core.uuid import UUID4

    from strategies.risk.base import own_order_prefix
    from strategies.risk.circuit_breaker import HALF_OPEN, CircuitBreakerConfig, CircuitBreakerGuard

    g = CircuitBreakerGuard(CircuitBreakerConfig(instrument_id=InstrumentId.from_str(IID), probe_orders=2))
    g.transition = lambda *a, **k: None  # not registered with a kernel: the state machine is what is judged
    g._own_ids = own_order_prefix("MT278")  # what on_start sets for trader MMBOT-MT278 (not registered here)
    g.machine.state = HALF_OPEN  # after a cool-down: waiting for our probes
    g.machine.probes_ok = 0
    for i in range(2):
        g._on_order_event(OrderAccepted(
            TraderId("MMBOT-MT278"), StrategyId("EXTERNAL"), InstrumentId.from_str(IID),
            ClientOrderId(f"O-20261203-050000-001-000-{i + 1}"), VenueOrderId(f"v-{i}"), AccountId("BYBIT-UNIFIED"),
            UUID4(), 0, 0))
    assert g.machine.state == HALF_OPEN, (
        f"two accepted orders of another program (TRADER-001 ids) closed mmbot's breaker: state "
        f"{g.machine.state}, probes_ok {g.machine.probes_ok}")


def test_loss_guard_halts_mmbot_on_another_programs_volume_and_pnl():
    """Expected: the loss guard's day figures are mmbot's own (strategies/risk/loss.py doc: cash and
    position "from the fills", PnL since the day start; a position inherited at start is not in
    them, so they are not the account's either): another program's trade on the shared account
    neither counts toward ``daily_turnover_cap`` nor moves mmbot's ``daily_loss_stop`` PnL. Actual:
    ``PnlGuard._on_fill`` (loss.py:63) books every ``OrderFilled`` on ``events.fills.*`` with no
    ownership filter; Nautilus publishes the other program's fills there (strategy ``EXTERNAL``,
    seen end to end in ``test_another_programs_fill_…``). A 1 BTC trade of a foreign program adds
    ~100,000 USDT to mmbot's turnover today: over a ``daily_turnover_cap`` of 50,000 mmbot halts
    (cancels all its quotes, HALTED) for the day. The edge guard (edge.py:148, markouts of every
    fill) has the same hole."""
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.enums import LiquiditySide, OrderSide, OrderType
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import (
        AccountId, ClientOrderId, InstrumentId, PositionId, StrategyId, TradeId, TraderId, VenueOrderId,
    )
    from nautilus_trader.model.objects import Money, Price, Quantity

    from strategies.risk.base import own_order_prefix
    from strategies.risk.loss import LossGuard, LossGuardConfig

    g = LossGuard(LossGuardConfig(instrument_id=InstrumentId.from_str(IID), daily_turnover_cap=50_000.0))
    g.evaluate = lambda: None  # not registered with a kernel: what is booked is what is judged
    g._own_ids = own_order_prefix("MT278")  # what on_start sets for trader MMBOT-MT278
    g._on_fill(OrderFilled(
        TraderId("MMBOT-MT278"), StrategyId("EXTERNAL"), InstrumentId.from_str(IID),
        ClientOrderId("O-20261203-050000-001-000-1"), VenueOrderId("v-1"), AccountId("BYBIT-UNIFIED"),
        TradeId("t-1"), PositionId("BTCUSDT-LINEAR.BYBIT-EXTERNAL"), OrderSide.BUY, OrderType.LIMIT,
        Quantity.from_str("1.000"), Price.from_str("100000.0"), USDT, Money(0, USDT), LiquiditySide.TAKER,
        UUID4(), 0, 0))
    # Reversed after hostile review 22: the loss guard judges the account's position on the
    # instrument (every fill: a liquidation/ADL fill carries a venue-made id; the strategy's inventory
    # is the account's). Another program's volume therefore counts: the conservative direction, and
    # the runbook says so.
    assert g.fills == 1 and g.ledger.turnover == 100_000.0
    text = " ".join((REPO / "docs" / "runbook.md").read_text().split())
    assert "count toward the loss limits and the turnover cap" in text


def test_the_guards_ownership_rule_is_the_adapters_rule():
    """strategies/ cannot import adapters/: the guards keep their own copy of the rule. Same ids in,
    same answers out (a drifted copy, e.g. unanchored or without the trailing dash, fails here)."""
    from adapters.order_ids import own_order_prefix as rule
    from strategies.risk.base import own_order_prefix as guards_rule

    ids = ["O-20261203-050000-MT278-000-1", "O-20261203-050000-MT2789-000-1", "O-20261203-050000-001-000-1",
           "XO-20261203-050000-MT278-000-1", "O-20261203-050000-mt278-000-1", "hand-placed", ""]
    assert [bool(rule("MT278").match(i)) for i in ids] == [bool(guards_rule("MT278").match(i)) for i in ids] == [
        True, False, False, False, False, False, False]
