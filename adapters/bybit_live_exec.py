"""mmbot's Bybit execution client: fills found by reconciliation come from Bybit's execution list.

When the private ``execution`` message of a fill is lost (a dropped WebSocket frame, a reconnect
gap), Nautilus learns about the fill only from an order status report: the in-flight check queries
a pending cancel / amend (``QueryOrder``), the periodic open-order check, or the single-order query
of an order missing at the venue. ``LiveExecutionEngine._reconcile_order_report`` is called with no
fill reports on all three paths, sees ``report.filled_qty > order.filled_qty`` and generates an
*inferred* fill (``live.reconciliation.create_inferred_order_filled_event``): commission 0, a trade
id made up from a hash, the order's average price. ``orders.jsonl`` then no longer matches the
exchange's executions and fees are understated.

``ReconciledFillsMixin`` (part of ``adapters.bybit_live.MmbotBybitExecutionClient``) closes that hole where the reports are made: before it returns order
status reports (``generate_order_status_report(s)``, the only way the three paths get them), it
compares each report's filled quantity with the cached order. For every open order the venue has
filled more of, it fetches the executions (``/v5/execution/list`` through Nautilus' own
``generate_fill_reports``, from just before the order was created) and hands those of the order not
yet applied to the engine as ``FillReport`` s (``_send_fill_report``, handled synchronously). The
engine applies them with Bybit's ``execId``, price, size, fee and liquidity side, so by the time it
reconciles the status report the filled quantities agree and nothing is inferred. If the executions
do not cover the report after ``FILL_FETCH_ATTEMPTS`` (Bybit's execution list lagging its order
state), the report is still returned: Nautilus infers the rest, as before, and a warning says so.

A late execution message for a fill applied this way is refused by Nautilus as a duplicate trade id.
"""

from __future__ import annotations

import asyncio

import pandas as pd
from nautilus_trader.common.enums import LogColor
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import GenerateFillReports

FILL_FETCH_ATTEMPTS = 3          # execution-list fetches per batch of reports that are ahead of the cache
FILL_FETCH_RETRY_S = 0.5         # between them (the execution list may trail the order state briefly)
FILL_WINDOW_MARGIN_NS = 5_000_000_000  # fetch from this long before the oldest such order was created


def orders_behind(cache, reports) -> list:
    """``(order, report)`` for each report of a cached, open order whose venue filled quantity is
    larger than the cache's: the fills the engine would otherwise infer."""
    out = []
    for report in reports:
        filled = report.filled_qty
        if filled is None or report.venue_order_id is None:
            continue
        coid = report.client_order_id or cache.client_order_id(report.venue_order_id)
        order = cache.order(coid) if coid is not None else None
        if order is None or order.is_closed or filled <= order.filled_qty:
            continue
        out.append((order, report))
    return out


def missing_fills(order, report, fills) -> tuple[list, bool]:
    """The execution reports of ``order`` not applied yet, oldest first, and whether they bring the
    cached filled quantity up to the report's."""
    known = set(order.trade_ids)
    mine = sorted((f for f in fills if f.venue_order_id == report.venue_order_id and f.trade_id not in known),
                  key=lambda f: (f.ts_event, f.trade_id.value))
    total = order.filled_qty.as_decimal() + sum((f.last_qty.as_decimal() for f in mine), start=0)
    return mine, total >= report.filled_qty.as_decimal()


class ReconciledFillsMixin:
    """Mixed into mmbot's Bybit execution client (``adapters.bybit_live.MmbotBybitExecutionClient``,
    before Nautilus' ``BybitExecutionClient``): the missing fills are fetched before any order
    status report goes out (module doc)."""

    async def generate_order_status_report(self, command):
        report = await super().generate_order_status_report(command)
        if report is not None:
            await self._apply_missing_fills([report])
        return report

    async def generate_order_status_reports(self, command):
        reports = await super().generate_order_status_reports(command)
        if reports:
            await self._apply_missing_fills(reports)
        return reports

    async def _apply_missing_fills(self, reports) -> None:
        behind = orders_behind(self._cache, reports)
        if not behind:
            return
        by_instrument: dict = {}
        for order, report in behind:
            by_instrument.setdefault(order.instrument_id, []).append((order, report))
        for instrument_id, pairs in by_instrument.items():
            await self._fetch_and_send(instrument_id, pairs)

    async def _fetch_and_send(self, instrument_id, pairs) -> None:
        start_ns = min(order.ts_init for order, _ in pairs) - FILL_WINDOW_MARGIN_NS
        start = pd.Timestamp(start_ns, unit="ns", tz="UTC")  # what GenerateFillReports' users pass
        found: list = []
        for attempt in range(FILL_FETCH_ATTEMPTS):
            fills = await self.generate_fill_reports(GenerateFillReports(
                instrument_id=instrument_id, venue_order_id=None, start=start, end=None,
                command_id=UUID4(), ts_init=self._clock.timestamp_ns()))
            found = [(order, report, *missing_fills(order, report, fills)) for order, report in pairs]
            if all(complete for *_, complete in found) or attempt == FILL_FETCH_ATTEMPTS - 1:
                break
            await asyncio.sleep(FILL_FETCH_RETRY_S)
        for order, report, mine, complete in found:
            if mine and order.venue_order_id is None:
                # Filled before its ack arrived: the engine finds a fill's order by venue order id.
                try:
                    self._cache.add_venue_order_id(order.client_order_id, report.venue_order_id)
                except ValueError:
                    pass
            for fill in mine:
                self._log.warning(f"Fill missed on the private stream, applied from the execution list: "
                                  f"{order.client_order_id!r} trade_id={fill.trade_id} {fill.last_qty} @ "
                                  f"{fill.last_px} fee {fill.commission}", LogColor.YELLOW)
                self._send_fill_report(fill)
            if not complete:
                self._log.warning(f"{order.client_order_id!r}: the execution list does not cover the venue's "
                                  f"filled quantity {report.filled_qty} yet; Nautilus infers the rest "
                                  "(commission 0, made-up trade id)", LogColor.YELLOW)
