"""Hostile review of 5cf1244 "One ownership rule everywhere" and ddcba7a "Live clock callbacks run
on the event loop" (issue 13, live safety).

Every test here FAILS on ``integrate`` at ddcba7a for the reason its docstring states (expected,
actual, file:line). Nothing is marked xfail on purpose (reviewer's branch): the fixing helper turns
each into a fix or a strict xfail with a reason. The attacks that held are listed in the review
report, not here.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IID = "BTCUSDT-LINEAR.BYBIT"
TAG = "MT278"  # trader MMBOT-MT278 (a live key's tag)


def _fill(coid: str, side, qty: str, px: str, strategy: str = "MM-000", trade: str = "t-1"):
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.enums import LiquiditySide, OrderType
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import (
        AccountId, ClientOrderId, InstrumentId, PositionId, StrategyId, TradeId, TraderId, VenueOrderId,
    )
    from nautilus_trader.model.objects import Money, Price, Quantity

    return OrderFilled(
        TraderId(f"MMBOT-{TAG}"), StrategyId(strategy), InstrumentId.from_str(IID), ClientOrderId(coid),
        VenueOrderId(f"v-{trade}"), AccountId("BYBIT-UNIFIED"), TradeId(trade), PositionId(f"{IID}-{strategy}"),
        side, OrderType.LIMIT, Quantity.from_str(qty), Price.from_str(px), USDT, Money(0, USDT),
        LiquiditySide.TAKER, UUID4(), 0, 0)


def _loss_guard(**kw):
    from nautilus_trader.model.identifiers import InstrumentId

    from strategies.risk.base import own_order_prefix
    from strategies.risk.loss import LossGuard, LossGuardConfig

    g = LossGuard(LossGuardConfig(instrument_id=InstrumentId.from_str(IID), **kw))
    g.evaluate = lambda: None  # not registered with a kernel: what is booked is what is judged
    g._own_ids = own_order_prefix(TAG)  # what on_start sets for trader MMBOT-MT278
    return g


# -- 1. ownership: fills of OUR position whose order id the venue (or Nautilus) generated -----------

def test_a_venue_generated_fill_that_closes_our_position_is_dropped_by_the_loss_guard():
    """Expected: the loss/drawdown guards measure the PnL of mmbot's position. A fill that changes
    that position is booked even when its order id is not ours: Bybit's liquidation / ADL
    (auto-deleveraging, which hits profitable market makers first) and takeover orders carry no
    ``orderLinkId``; Nautilus' reconciliation gives such an order, and the synthetic order it
    creates to align a position with the venue's (live/execution_engine.py:2692 ``close_report``
    without a client order id), a random ``ClientOrderId(UUID4)`` (execution_engine.py:3136).
    Actual: ``PnlGuard._on_fill`` (strategies/risk/loss.py:64) drops every fill whose id lacks
    ``O-…-<tag>-``: after our 1 BTC long bought at 100,000 is liquidated/ADL'd at 99,000 the guard
    still holds +1 BTC and no realised loss; when the mark comes back it reports PnL 0 and
    ``daily_loss_stop`` = 500 never fires although the account lost 1,000 USDT. Same rule drops it
    from the run ledger (mmbot/backtest/ledger.py:195: the session report keeps a phantom position)
    and the drawdown guard (drawdown.py, a PnlGuard)."""
    from nautilus_trader.model.enums import OrderSide

    g = _loss_guard(daily_loss_stop=500.0)
    g._on_fill(_fill(f"O-20261203-050000-{TAG}-000-1", OrderSide.BUY, "1.000", "100000.0", trade="t-1"))
    # The venue closes the position (liquidation/ADL/reconciliation): id generated, strategy EXTERNAL.
    g._on_fill(_fill("6f1c2a7e-0b7d-4f0e-9a55-0d8a3c1e2f44", OrderSide.SELL, "1.000", "99000.0",
                     strategy="EXTERNAL", trade="t-2"))
    pos = g.ledger.position.get(IID, 0.0)
    pnl_at_recovered_mark = g.ledger.pnl({IID: 100_000.0})
    assert pos == 0.0 and pnl_at_recovered_mark <= -1000.0, (
        f"the venue closed our 1 BTC long at a 1,000 USDT loss, but the loss guard still holds "
        f"{pos:+g} BTC and reports PnL {pnl_at_recovered_mark:+,.0f} USDT at the recovered mark: "
        "daily_loss_stop 500 never fires")


def test_loss_guard_halts_on_a_loss_the_account_does_not_have_after_mmbot_unwinds_a_foreign_fill():
    """Expected: with ``live.foreign_orders = "ignore"`` the strategy's inventory counts the whole
    account's position (strategies/market_maker.py:905; docs/runbook.md:278 "that is the risk being
    limited"), so the loss/drawdown guards judge the same position: the PnL of what the account
    holds, or at least not a loss on a position the account does not hold. Actual: a foreign
    program buys 1 BTC at 100,000; mmbot's inventory is now +1 BTC, it skews and sells 1 BTC at
    100,000 (the account is flat). ``PnlGuard._on_fill`` (loss.py:64) books only mmbot's sell: the
    guard holds a phantom -1 BTC short. The price rises to 101,000: the guard sees -1,000 USDT
    (> ``daily_loss_stop`` 500) and HALTS, cancelling all quotes for the day, while the account's
    PnL is 0. (Symmetrically a real loss on the account's position is never seen.) The session
    report's ledger (ledger.py:195) books the same phantom short."""
    from nautilus_trader.model.enums import OrderSide

    g = _loss_guard(daily_loss_stop=500.0)
    g._on_fill(_fill("O-20261203-050000-001-000-1", OrderSide.BUY, "1.000", "100000.0",
                     strategy="EXTERNAL", trade="t-1"))  # the other program
    g._on_fill(_fill(f"O-20261203-050001-{TAG}-000-1", OrderSide.SELL, "1.000", "100000.0",
                     trade="t-2"))  # mmbot unwinds the account's inventory
    account_position = 0.0  # +1 (foreign) - 1 (ours)
    guard_position = g.ledger.position.get(IID, 0.0)
    pnl = g.ledger.pnl({IID: 101_000.0})
    assert guard_position == account_position and pnl > -500.0, (
        f"account flat, yet the loss guard holds {guard_position:+g} BTC and sees PnL {pnl:+,.0f} USDT "
        "at 101,000: daily_loss_stop 500 halts mmbot on a loss the account does not have")


# -- 2. loop: the purge the ledger's was replaced with ------------------------------------------------

def test_nautilus_own_cache_purge_runs_on_the_live_clock_thread_not_on_the_loop():
    """Expected (docs/runbook.md:269 "the run ledger no longer purges the cache from a timer in live
    and shadow (Nautilus' own purge does, on the loop)"; mmbot/live/node.py:589-592 "live and
    shadow purge with Nautilus' own ..., on the event loop; the ledger's timer ran on Nautilus'
    timer thread and purged the cache while the loop's handlers used it"): the purge that replaced
    the ledger's runs on the event loop's thread. Actual: Nautilus 1.231 schedules its purge with
    ``self._clock.set_timer_ns(..., callback=self._purge_closed_orders)`` on the same LiveClock
    (execution/engine.pyx:685-695), whose callbacks run on the timer thread
    (tests/test_loop_thread.py shows it): the cache is still purged off the loop, concurrently with
    the handlers, exactly the hazard given as the reason. Shown with the real LiveExecutionEngine,
    ``cache_purge_settings`` of the default ``[live]`` section and a 30 ms interval (the engine
    keeps the interval as a Python object: ``purge_closed_orders_interval_mins`` is ``object``)."""
    from nautilus_trader.cache.cache import Cache
    from nautilus_trader.common.component import LiveClock, MessageBus
    from nautilus_trader.live.config import LiveExecEngineConfig
    from nautilus_trader.live.execution_engine import LiveExecutionEngine
    from nautilus_trader.model.identifiers import TraderId

    from mmbot.live.node import LiveSection, cache_purge_settings

    settings = cache_purge_settings(LiveSection())
    assert settings.get("purge_closed_orders_interval_mins"), settings  # the purge is on by default
    purges: list[int] = []

    class SpyCache(Cache):
        def purge_closed_orders(self, ts_now, buffer_secs=0, purge_from_database=False):
            purges.append(threading.get_ident())

    async def main() -> int:
        loop = asyncio.get_running_loop()
        clock = LiveClock()
        msgbus = MessageBus(TraderId(f"MMBOT-{TAG}"), clock)
        cfg = LiveExecEngineConfig(**{**settings, "purge_closed_orders_interval_mins": 0.0005,
                                      "purge_account_events_interval_mins": None})
        engine = LiveExecutionEngine(loop, msgbus, SpyCache(), clock, cfg)
        engine.start()
        try:
            for _ in range(100):
                await asyncio.sleep(0.02)
                if purges:
                    break
        finally:
            clock.cancel_timers()
            engine.stop()
            await asyncio.sleep(0.05)
        return threading.get_ident()

    loop_tid = asyncio.run(main())
    assert purges, "Nautilus' purge timer never fired"
    # Fixed by saying what is true (Nautilus' purge is its engine's own timer; mmbot does not move it):
    # the docs must not claim the purge runs on the loop.
    assert purges[0] != loop_tid, "Nautilus' purge runs on the loop now: update docs/runbook.md and this test"
    from mmbot.live.node import live_ledger_config

    for text in ((REPO / "docs" / "runbook.md").read_text(), live_ledger_config.__doc__):
        flat = " ".join(text.split())
        assert "Nautilus' own purge does, on the loop" not in flat and "), on the event loop;" not in flat, (
            "the docs claim Nautilus' own purge runs on the event loop: it runs on the LiveClock's timer thread")


def test_the_session_report_keeps_a_position_the_venue_closed_with_a_venue_generated_order():
    """Expected: the live session report (fills.parquet, net PnL; the run ledger,
    mmbot/backtest/ledger.py) books every fill of mmbot's position, including the venue's close of
    it by an order without our tag (Bybit liquidation/ADL: no ``orderLinkId``; Nautilus'
    reconciliation gives it ``ClientOrderId(UUID4)``, live/execution_engine.py:3136). Actual:
    ``RunLedger._on_order_event`` (ledger.py:195) drops it: the report ends with our 1 BTC long still
    open (marked at the final mid) and without the 1,000 USDT realised loss; docs/report.md "Not in
    it" (:93) does not list it."""
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.identifiers import InstrumentId

    from mmbot.backtest.ledger import RunLedger, RunLedgerConfig
    from strategies.risk.base import own_order_prefix

    led = RunLedger(RunLedgerConfig(instrument_id=InstrumentId.from_str(IID), purge_interval_s=0, funding=False))
    led._own_ids = own_order_prefix(TAG)  # what on_start sets for trader MMBOT-MT278
    led._on_order_event(_fill(f"O-20261203-050000-{TAG}-000-1", OrderSide.BUY, "1.000", "100000.0", trade="t-1"))
    led._on_order_event(_fill("6f1c2a7e-0b7d-4f0e-9a55-0d8a3c1e2f44", OrderSide.SELL, "1.000", "99000.0",
                              strategy="EXTERNAL", trade="t-2"))
    fills = led.fills_frame()
    signed = (fills["qty"] * fills["side"].map({"BUY": 1.0, "SELL": -1.0})).sum()
    assert signed == 0.0, (
        f"the session report's fills leave a {signed:+g} BTC position the venue already closed "
        "(liquidation/ADL fill with a venue-generated id dropped): its PnL misses the realised loss")


def test_report_doc_says_the_live_account_check_includes_other_programs_fills():
    """Expected: since 5cf1244 the live ledger books only this trader's fills, while
    ``nautilus_account_net_pnl`` (mmbot/backtest/run.py:477 ``_nautilus_account_check``; called by
    mmbot/live/session.py:139-140 with the account's balance and ``node.cache.positions_open(
    instrument_id=iid)``, which holds the ``EXTERNAL`` strategy's position too) is the whole
    account's: with another program trading the instrument (``foreign_orders = "ignore"``) the two
    disagree by that program's PnL. The operator reading "Net PnL excluding funding, Nautilus account
    (check)" (render.py:173) next to a different net PnL must be told why (or the check restricted to
    our fills). Actual: docs/report.md:89-90 says only that it "compares the account's balance
    change ... with the ledger's net_pnl_ex_funding"; its "Not in it" list (:93-) names funding and
    the inherited position but not other programs' fills (grep foreign / another program)."""
    text = (REPO / "docs" / "report.md").read_text()
    i = text.find("`nautilus_account_net_pnl` compares the account's balance change")
    assert i >= 0
    section = text[i: text.find("\n## ", i)].lower()
    assert "foreign" in section or "another program" in section or "other program" in section, (
        "docs/report.md (live sessions) does not say that the account check includes another "
        "program's fills on the shared account while the ledger does not: a false alarm in every "
        "shared-account session report")
