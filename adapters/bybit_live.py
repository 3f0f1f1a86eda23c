"""mmbot's Bybit data-client config and factory (NautilusTrader 1.231 Bybit adapter).

Nautilus' ``BybitDataClientConfig`` has one URL, ``base_url_http``, and its data client hands
that same value to the public WebSocket client. The HTTP client needs ``http(s)://`` and the
WebSocket client ``ws(s)://``, so no single value can point both at a mirror, a regional
host or a loopback exchange. ``MmbotBybitDataClientConfig`` adds ``base_url_ws_public``;
``MmbotBybitDataClientFactory`` builds the HTTP client (instruments, fee rates) from
``base_url_http`` and the data client's public WebSocket from ``base_url_ws_public``.
Register it with ``TradingNode.add_data_client_factory("BYBIT", MmbotBybitDataClientFactory)``.
With ``base_url_ws_public`` empty it behaves exactly like Nautilus' own factory.

``MmbotBybitExecutionClient`` (factory ``MmbotBybitExecClientFactory``) is Nautilus' execution
client with three additions the live run needs:

* Reasons of order events are masked before anything sees them. Bybit answers a bad signature
  with retCode 10004 and ``error sign! origin_string[<timestamp><API key>...]``; Nautilus puts
  that text into ``OrderRejected`` / ``OrderCancelRejected`` / ``OrderModifyRejected.reason``,
  from where it would reach the cache, the strategy, the risk audit log and the recorder's
  ``orders.jsonl``. ``_send_order_event`` (the one path every order event of the client takes)
  replaces the key and secret with their masked form, only when one occurs (a substring test on
  the events that carry a reason; fills and acks are untouched).
* ``streams_active()``: whether its private and trade WebSockets are connected, for the run
  loop's connection watchdog (Nautilus' Rust clients reconnect on their own, with backoff; the
  watchdog only acts when that has not succeeded for ``[live] reconnect_timeout_s``).
* Fills found by reconciliation come from Bybit's execution list (real trade ids and fees),
  not inferred (``adapters.bybit_live_exec.ReconciledFillsMixin``).
* An order's acceptance is not lost when the venue answers before the engine has applied the
  order's ``OrderSubmitted`` (``_handle_order_status_report_pyo3``, below).

The client it builds is ``MmbotBybitDataClient`` (``adapters.bybit_live_book``): Nautilus'
``BybitDataClient`` whose order-book messages carry the catalog importer's conventions
(``sequence`` = Bybit's update id ``u``, snapshots flagged ``F_SNAPSHOT``) and whose update-id
gaps invalidate the book until a fresh snapshot, as a replay of the recording does.
"""

from __future__ import annotations

import asyncio

import msgspec
from nautilus_trader.model.enums import OrderStatus
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.adapters.bybit.config import BybitDataClientConfig, _resolve_environment
from nautilus_trader.adapters.bybit.constants import BYBIT_ALL_PRODUCTS
from nautilus_trader.adapters.bybit.config import BybitExecClientConfig
from nautilus_trader.adapters.bybit.data import BybitDataClient
from nautilus_trader.adapters.bybit.execution import BybitExecutionClient
from nautilus_trader.adapters.bybit.factories import get_cached_bybit_http_client, get_cached_bybit_instrument_provider
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.core import nautilus_pyo3
from nautilus_trader.live.factories import LiveDataClientFactory, LiveExecClientFactory

from adapters.bybit_live_book import make_data_client_class
from adapters.bybit_live_exec import ReconciledFillsMixin

# Book messages in the importer's shape, update-id gaps invalidate the book (adapters/bybit_live_book.py).
_GapCheckedBybitDataClient = make_data_client_class(BybitDataClient)


class MmbotBybitDataClientConfig(BybitDataClientConfig, frozen=True):
    """``BybitDataClientConfig`` plus ``base_url_ws_public`` (the public WebSocket URL,
    e.g. ``wss://stream.bybit.com/v5/public/linear``; None = the environment's default)."""

    base_url_ws_public: str | None = None
    status_topic: str = ""  # msgbus topic for data-status messages (book gaps); the builder sets it


class MmbotBybitDataClient(_GapCheckedBybitDataClient):
    """Nautilus' Bybit data client, book messages normalised and gap-checked
    (adapters/bybit_live_book.py); keeps why its connection failed (``connect_error``, masked)."""

    connect_error: str = ""

    async def _connect(self) -> None:
        try:
            await super()._connect()
        except Exception as e:
            self.connect_error = _masked_error(e, (self._config.api_key, self._config.api_secret))
            raise


def _masked_error(e: BaseException, secrets) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    for s in secrets:
        if s:
            text = text.replace(s, mask_secret(s))
    return text



def _http_client_and_provider(config):
    """Nautilus' cached Bybit HTTP client and instrument provider for a data or exec client config,
    built exactly as Nautilus' own Bybit factories build them."""
    product_types = config.product_types or BYBIT_ALL_PRODUCTS
    client: nautilus_pyo3.BybitHttpClient = get_cached_bybit_http_client(
        environment=_resolve_environment(config.environment),
        api_key=config.api_key,
        api_secret=config.api_secret,
        base_url=config.base_url_http,
        timeout_secs=None,
        max_retries=config.max_retries,
        retry_delay_ms=config.retry_delay_initial_ms,
        retry_delay_max_ms=config.retry_delay_max_ms,
        recv_window_ms=config.recv_window_ms,
        proxy_url=config.proxy_url,
    )
    provider = get_cached_bybit_instrument_provider(
        client=client, product_types=tuple(product_types), config=config.instrument_provider,
    )
    return client, provider

class MmbotBybitDataClientFactory(LiveDataClientFactory):
    """Builds a Nautilus ``BybitDataClient`` whose HTTP and public WebSocket URLs differ."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: BybitDataClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> BybitDataClient:
        client, provider = _http_client_and_provider(config)
        ws_public = getattr(config, "base_url_ws_public", None)
        # BybitDataClient passes config.base_url_http to BybitWebSocketClient.new_public (its only
        # other use of the field); the HTTP client above already has the real HTTP URL.
        client_config = msgspec.structs.replace(config, base_url_http=ws_public) if ws_public else config
        return MmbotBybitDataClient(
            loop=loop,
            client=client,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=provider,
            config=client_config,
            name=name,
        )


def mask_secret(value: str) -> str:
    """``abcd…wxyz`` (the format of ``mmbot.live.secrets.mask``; adapters do not import mmbot)."""
    return f"{value[:4]}…{value[-4:]}" if len(value) >= 12 else "…****"


# A private-stream report of an order the engine has not yet marked SUBMITTED waits for it: first
# right after the engine's event queue (call_soon), then every REPORT_DEFER_RETRY_S, at most
# REPORT_DEFER_MAX_NS in all (then it is handled as Nautilus would: the in-flight check is the net).
REPORT_DEFER_RETRY_S = 0.001
REPORT_DEFER_MAX_NS = 5_000_000_000


def _not_new(held) -> bool:
    """Sort key of a held ``(handler, report)``: False for an order status report ACCEPTED ("New")."""
    return getattr(held[1], "order_status", None) != nautilus_pyo3.OrderStatus.ACCEPTED


class MmbotBybitExecutionClient(ReconciledFillsMixin, BybitExecutionClient):
    """Nautilus' Bybit execution client; order-event reasons masked, WebSocket state exposed,
    reports that overtake the order's ``OrderSubmitted`` held until the engine has applied it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        config = kwargs["config"]
        self._mmbot_masks = [(s, mask_secret(s)) for s in (config.api_key, config.api_secret) if s]
        # client order id (str) -> [(handler, pyo3 report), ...] in arrival order
        self._mmbot_deferred: dict[str, list] = {}
        self.reports_deferred = 0      # orders whose first report arrived before their OrderSubmitted was applied
        self.reports_defer_expired = 0  # of them, handled at REPORT_DEFER_MAX_NS with the order still INITIALIZED

    # Why: ``_submit_order`` generates OrderSubmitted (onto the ExecEngine's event queue) and then
    # sends the order; Nautilus 1.231's handler of the private stream's order report generates
    # OrderAccepted only if the *cached* order is SUBMITTED at that instant. When the venue's answer
    # is handled before the engine's queue has applied OrderSubmitted (a fast venue, a busy event
    # loop), the cached order is still INITIALIZED and the acceptance is dropped without a word: the
    # order rests at the venue while the node holds it SUBMITTED (no amend, no batch cancel at stop)
    # until the in-flight check asks the venue, seconds later. Seen on the loopback exchange for the
    # first quotes at startup and single quotes under load. Such a report (and every later report
    # of the same order, to keep their order) is handled once the order has left INITIALIZED.
    def _handle_order_status_report_pyo3(self, pyo3_report) -> None:
        if not self._mmbot_defer(pyo3_report, super()._handle_order_status_report_pyo3):
            super()._handle_order_status_report_pyo3(pyo3_report)

    def _handle_fill_report_pyo3(self, pyo3_report) -> None:
        if not self._mmbot_defer(pyo3_report, super()._handle_fill_report_pyo3):
            super()._handle_fill_report_pyo3(pyo3_report)

    def _mmbot_defer(self, pyo3_report, handler) -> bool:
        coid = pyo3_report.client_order_id
        if coid is None:
            return False
        key = coid.value
        pending = self._mmbot_deferred.get(key)
        if pending is not None:
            pending.append((handler, pyo3_report))
            return True
        order = self._cache.order(ClientOrderId(key))
        if order is None or order.status != OrderStatus.INITIALIZED:
            return False
        self.reports_deferred += 1
        self._mmbot_deferred[key] = [(handler, pyo3_report)]
        self._loop.call_soon(self._mmbot_release, key, self._clock.timestamp_ns() + REPORT_DEFER_MAX_NS)
        return True

    def _mmbot_release(self, key: str, deadline_ns: int) -> None:
        order = self._cache.order(ClientOrderId(key))
        if order is not None and order.status == OrderStatus.INITIALIZED:
            if self._clock.timestamp_ns() < deadline_ns:
                self._loop.call_later(REPORT_DEFER_RETRY_S, self._mmbot_release, key, deadline_ns)
                return
            self.reports_defer_expired += 1
        # The venue's "New" (ACCEPTED) goes first: released together, every handler sees the same
        # cached status (the engine applies their events later), so an acceptance behind a fill
        # (Bybit's execution and order topics are separate streams) found the order SUBMITTED and
        # its OrderAccepted came after the fill (not applied: InvalidStateTrigger warning; still
        # published to the strategy and metrics). Stable: the rest keep their arrival order.
        held = sorted(self._mmbot_deferred.pop(key, ()), key=_not_new)
        for handler, pyo3_report in held:
            try:
                handler(pyo3_report)
            except Exception as e:
                # Unheld, each report was its own loop callback: one that raised was reported by the
                # loop and did not cost the next one (e.g. the order's fill). Same here.
                self._loop.call_exception_handler({"message": f"held report of {key} raised", "exception": e})

    connect_error: str = ""

    async def _connect(self) -> None:
        try:
            await super()._connect()
        except Exception as e:  # e.g. Bybit 10003/10004 (wrong key or secret), unreachable host
            self.connect_error = _masked_error(e, [s for s, _ in self._mmbot_masks])
            raise

    def _send_order_event(self, event) -> None:
        reason = getattr(event, "reason", None)
        if reason and any(s in reason for s, _ in self._mmbot_masks):
            for s, m in self._mmbot_masks:
                reason = reason.replace(s, m)
            cls = type(event)
            event = cls.from_dict({**cls.to_dict(event), "reason": reason})
        super()._send_order_event(event)

    def streams_active(self) -> dict[str, bool]:
        """``{"ws_private": bool, "ws_trade": bool}`` (no ``ws_trade`` in DEMO: orders over REST)."""
        out = {"ws_private": bool(self._ws_private_client.is_active())}
        if not self._is_demo:
            out["ws_trade"] = bool(self._ws_trade_client.is_active())
        return out


class MmbotBybitExecClientFactory(LiveExecClientFactory):
    """Nautilus' ``BybitLiveExecClientFactory``, line for line, building ``MmbotBybitExecutionClient``."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: BybitExecClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> MmbotBybitExecutionClient:
        client, provider = _http_client_and_provider(config)
        return MmbotBybitExecutionClient(
            loop=loop,
            client=client,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=provider,
            config=config,
            name=name,
        )

