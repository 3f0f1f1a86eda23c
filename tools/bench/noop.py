"""A do-nothing actor that subscribes to the book and trades, so Nautilus maintains the cached
order book as it does for any real consumer (the fair replay baseline for a strategy run)."""

from __future__ import annotations

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.enums import BookType
from nautilus_trader.model.identifiers import InstrumentId


class BookSubscriberConfig(ActorConfig, frozen=True):
    instrument_id: InstrumentId


class BookSubscriber(Actor):
    def __init__(self, config: BookSubscriberConfig) -> None:
        super().__init__(config)
        self._iid = config.instrument_id

    def on_start(self) -> None:
        self.subscribe_order_book_deltas(self._iid, book_type=BookType.L2_MBP)
        self.subscribe_trade_ticks(self._iid)

    def on_order_book_deltas(self, deltas) -> None:
        pass

    def on_trade_tick(self, tick) -> None:
        pass
