"""mmbot's Bybit data-client config and factory (NautilusTrader 1.231 Bybit adapter).

Nautilus' ``BybitDataClientConfig`` has one URL, ``base_url_http``, and its data client hands
that same value to the public WebSocket client. The HTTP client needs ``http(s)://`` and the
WebSocket client ``ws(s)://``, so no single value can point both at a mirror, a regional
host or a loopback exchange. ``MmbotBybitDataClientConfig`` adds ``base_url_ws_public``;
``MmbotBybitDataClientFactory`` builds the HTTP client (instruments, fee rates) from
``base_url_http`` and the data client's public WebSocket from ``base_url_ws_public``.
Register it with ``TradingNode.add_data_client_factory("BYBIT", MmbotBybitDataClientFactory)``.
The client it builds is ``MmbotBybitDataClient`` (``adapters.bybit_live_book``): Nautilus'
``BybitDataClient`` whose order-book messages carry the catalog importer's conventions
(``sequence`` = Bybit's update id ``u``, snapshots flagged ``F_SNAPSHOT``) and whose update-id
gaps invalidate the book until a fresh snapshot, as a replay of the recording does.
"""

from __future__ import annotations

import asyncio

import msgspec
from nautilus_trader.adapters.bybit.config import BybitDataClientConfig, _resolve_environment
from nautilus_trader.adapters.bybit.constants import BYBIT_ALL_PRODUCTS
from nautilus_trader.adapters.bybit.data import BybitDataClient
from nautilus_trader.adapters.bybit.factories import get_cached_bybit_http_client, get_cached_bybit_instrument_provider
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.live.factories import LiveDataClientFactory

from adapters.bybit_live_book import make_data_client_class

MmbotBybitDataClient = make_data_client_class(BybitDataClient)


class MmbotBybitDataClientConfig(BybitDataClientConfig, frozen=True):
    """``BybitDataClientConfig`` plus ``base_url_ws_public`` (the public WebSocket URL,
    e.g. ``wss://stream.bybit.com/v5/public/linear``; None = the environment's default)."""

    base_url_ws_public: str | None = None


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
        product_types = config.product_types or BYBIT_ALL_PRODUCTS
        env = _resolve_environment(config.environment)
        client = get_cached_bybit_http_client(
            environment=env,
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
            client=client,
            product_types=tuple(product_types),
            config=config.instrument_provider,
        )
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
