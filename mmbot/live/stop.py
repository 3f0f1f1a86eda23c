"""The stop check: after the strategy's cancels, the VENUE says whether any of our orders rest.

The strategy's ``on_stop`` cancels its own orders by id (never the symbol-wide cancel-all, which
would reach foreign orders too); the node then waits ``timeout_post_stop_s`` and disconnects.
Nothing in that sequence proves the exchange has no order of ours left: the cancels can be rate
limited or lost, the exchange can be frozen, and an order whose create was still in flight (sent,
not acknowledged) can land on the book after them. Nautilus' cache
only knows what the disconnected clients last heard.

``VenueSweep.run`` therefore asks the venue over REST, with a fresh Nautilus ``BybitHttpClient``
(no retries of its own, every call bounded by the time left):

1. open orders of the account on the instrument (``/v5/order/realtime``): ours are those whose
   client order id carries our trader tag (``is_own_order_id``); others are reported, never touched;
2. each order the node still had open or in flight that is not in that list is queried by its
   client order id: closed (cancelled, filled, rejected) settles it; "not found" keeps it
   unconfirmed (a create still travelling may appear later);
3. every own open order is cancelled (``/v5/order/cancel``; 110001 "not exists" just means it is
   gone), then back to 1;

with a backoff of ``BACKOFF_S`` (doubling, capped) between rounds, until nothing is open or
unconfirmed (``ok``) or ``[live] stop_deadline_s`` passes. The result names what is left: the run
exits 3 and prints how many orders may rest, with their ids.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

BACKOFF_S = (0.2, 2.0)    # first pause between rounds, cap (doubling): Bybit's limits are per second
CALL_TIMEOUT_S = 3.0      # one REST call at most this long (and never past the deadline)
ACCOUNT_ID = "BYBIT-UNIFIED"  # what Nautilus' Bybit execution client (client id BYBIT) uses


class DeadlineReached(TimeoutError):
    """The stop deadline passed before a call was made: no venue answer, so it never replaces the
    last error the venue gave (the operator acts on that one: an IP ban, a signature error)."""


@dataclass
class SweepResult:
    ok: bool = False
    verified: bool = False                              # the venue answered the open-orders query at least once
    remaining: list[str] = field(default_factory=list)  # ours, open on the venue, cancel not confirmed
    unconfirmed: list[str] = field(default_factory=list)  # ours, sent, state never confirmed by the venue
    cancels_sent: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)    # other programs' open orders: left alone
    rounds: int = 0
    seconds: float = 0.0
    last_error: str = ""

    @property
    def left(self) -> list[str]:
        return sorted(set(self.remaining) | set(self.unconfirmed))

    def to_json(self) -> dict:
        return {"ok": self.ok, "verified": self.verified, "remaining": self.remaining,
                "unconfirmed": self.unconfirmed, "cancels_sent": self.cancels_sent, "foreign_open": self.foreign,
                "rounds": self.rounds, "seconds": round(self.seconds, 3), "last_error": self.last_error}

    def summary(self) -> str:
        """The one line for the operator when something may be left."""
        ids = self.left
        what = (f"{len(ids)} order(s) may still rest on the venue after stop: {', '.join(ids)}" if ids else
                "the venue never answered: cannot confirm that no order rests on it")
        detail = f"checked for {self.seconds:.1f}s in {self.rounds} round(s)"
        if self.last_error:
            detail += f"; last venue error: {self.last_error}"
        return f"{what} ({detail}); cancel them on the exchange"


class VenueSweep:
    """Query-cancel-confirm loop against the venue over REST (module doc)."""

    def __init__(self, *, api_key: str, api_secret: str, rest_url: str, adapter_environment: str,
                 instrument_id: str, trader_tag: str, deadline_s: float, mask=lambda s: s) -> None:
        self._key, self._secret = api_key, api_secret
        self.rest_url = rest_url
        self.adapter_environment = adapter_environment
        self.instrument_id = instrument_id
        self.trader_tag = trader_tag
        self.deadline_s = float(deadline_s)
        self.mask = mask  # masks the key/secret in venue error texts (Bybit's 10004 echoes the key)

    def _client(self, instrument):
        from nautilus_trader.cache.transformers import transform_instrument_to_pyo3
        from nautilus_trader.core import nautilus_pyo3

        client = nautilus_pyo3.BybitHttpClient(
            api_key=self._key, api_secret=self._secret, base_url=self.rest_url,
            demo=self.adapter_environment == "demo", testnet=self.adapter_environment == "testnet",
            timeout_secs=int(CALL_TIMEOUT_S) + 1, max_retries=0)  # retries and timeouts are ours
        client.cache_instrument(transform_instrument_to_pyo3(instrument))
        return client

    async def run(self, instrument, local_orders: list[str]) -> SweepResult:
        """``instrument``: the Nautilus instrument (from the node's cache); ``local_orders``: client
        order ids the node still had open or in flight (any status but closed)."""
        from nautilus_trader.core import nautilus_pyo3 as pyo3

        from mmbot.live.node import is_own_order_id

        t0 = time.monotonic()
        deadline = t0 + self.deadline_s
        res = SweepResult()
        client = self._client(instrument)
        acct = pyo3.AccountId(ACCOUNT_ID)
        iid = pyo3.InstrumentId.from_str(self.instrument_id)
        linear = pyo3.BybitProductType.LINEAR
        closed = {pyo3.OrderStatus.CANCELED, pyo3.OrderStatus.FILLED, pyo3.OrderStatus.REJECTED,
                  pyo3.OrderStatus.EXPIRED}
        pending = set(local_orders)        # state not yet confirmed by the venue
        own_open: dict[str, str] = {}      # client order id -> venue order id
        pause = BACKOFF_S[0]

        async def call(coro):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineReached("stop deadline reached")
            try:
                return await asyncio.wait_for(coro, min(CALL_TIMEOUT_S, left))
            except TimeoutError:
                raise TimeoutError(f"no answer within {min(CALL_TIMEOUT_S, left):.1f}s") from None

        while True:
            res.rounds += 1
            try:
                reports = await call(client.request_order_status_reports(acct, linear, iid, open_only=True))
                res.verified = True
                own_open, foreign = {}, []
                for r in reports:
                    coid = r.client_order_id.value if r.client_order_id is not None else ""
                    if r.order_status in closed:
                        continue
                    if coid and is_own_order_id(coid, self.trader_tag):
                        own_open[coid] = r.venue_order_id.value
                    else:
                        foreign.append(coid or r.venue_order_id.value)
                res.foreign = sorted(foreign)
                for coid in sorted(pending - set(own_open)):
                    q = await call(client.query_order(acct, linear, iid, client_order_id=pyo3.ClientOrderId(coid)))
                    if q is None:
                        continue  # not (yet) on the venue: may still arrive; asked again next round
                    if q.order_status in closed:
                        pending.discard(coid)
                    else:
                        own_open[coid] = q.venue_order_id.value
                if not own_open and not pending:
                    res.ok = True
                    break
                for coid in sorted(own_open):
                    res.cancels_sent.append(coid)
                    pending.add(coid)  # settled only when the venue says it is closed
                    try:
                        await call(client.cancel_order(acct, linear, iid, client_order_id=pyo3.ClientOrderId(coid)))
                    except ValueError as e:  # a venue answer; 110001: already gone, confirmed next round
                        if "110001" not in str(e):
                            res.last_error = self.mask(str(e))
                    except DeadlineReached:
                        raise
                    except TimeoutError as e:  # the answer may be lost while the cancel was done
                        res.last_error = str(e)
            except DeadlineReached as e:
                res.last_error = res.last_error or str(e)
            except (TimeoutError, ValueError, RuntimeError, OSError) as e:
                res.last_error = self.mask(str(e) or type(e).__name__)
            now = time.monotonic()
            if now >= deadline:
                break
            await asyncio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, BACKOFF_S[1])
        res.seconds = time.monotonic() - t0
        if not res.ok:
            res.remaining = sorted(own_open)
            res.unconfirmed = sorted(pending - set(own_open))
        return res
