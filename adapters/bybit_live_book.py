"""Live Bybit order-book messages in the catalog importer's conventions, with update-id gaps caught.

Nautilus 1.231's Bybit data client parses ``orderbook.{depth}.{SYMBOL}`` in Rust
(``parse_orderbook_deltas``): every delta's ``sequence`` is Bybit's ``seq`` (a cross sequence
that is not consecutive), the update id ``u`` is only in each level's ``BookOrder.order_id``, a
snapshot is a CLEAR followed by the levels with only the CLEAR flagged ``F_SNAPSHOT``, and nothing
checks that ``u`` steps by one. So ``[risk.stale_data] check_sequence`` compared ``seq`` values and
saw a "gap" on every batch (the bot never quoted), while a real gap went unnoticed, and a guard
waiting for a snapshot batch (``F_SNAPSHOT`` on the batch) waited forever.

``BookUpdateIds`` turns each message (one ``OrderBookDeltas``) into what ``adapters.bybit_book``
(``mmbot catalog import`` and shadow mode's raw client) produces from the same frame:

- ``sequence`` = ``u`` on every delta of a snapshot (each flagged ``F_SNAPSHOT``) and on the last
  delta of an update message (``OrderBookDeltas.sequence``, what the stale-data guard and the
  cached book read; the update's earlier rows keep Bybit's ``seq``: rebuilding every row was the
  live hot path's cost);
- ``u`` must step by one between messages (a snapshot resets it; Bybit's ``u == 1`` service
  restart arrives as a snapshot). On a gap (or a repeated / older ``u``) the message is replaced by
  the importer's gap marker, a lone ``CLEAR`` with ``F_LAST`` (the cached book empties, the
  stale-data guard goes ``INVALID`` and pulls the quotes), and deltas are dropped until the next
  snapshot;
- deltas before the first snapshot are dropped;
- a message whose last delta lacks ``F_LAST`` (one split over batches) is a gap too (dropped
  before a snapshot, a split snapshot included): the live data engine hands each batch on as it
  comes (``buffer_deltas`` off, ``mmbot/live/node.py``), so a split message would reach the
  strategy half applied.

``MmbotBybitDataClient`` applies it to every book message before the data engine sees it, publishes
``{"instrument_id", "connected": True, "book_gap": True, "u", "after_u"}`` on
``mmbot.data.status`` per gap (``mmbot_book_gaps_total``) and re-subscribes the book topic to get a
fresh snapshot (Bybit sends one on every subscribe), again every ``resync_retry_s`` until it comes.

One difference from the importer remains: an exchange message whose delta has no levels never
reaches Python (Nautilus' parser cannot build an empty batch), so its ``u`` looks skipped here and
is treated as a gap (conservative: the book is rebuilt from a fresh snapshot), while the importer,
which sees the empty message, does not count it as one.

Cost on the live hot path: one rebuilt delta per update message (a snapshot rebuilds all of its
rows, ~0.7 us each), besides Nautilus' own conversion of the message's rows to Python objects.
"""

from __future__ import annotations

from nautilus_trader.model.data import OrderBookDelta, OrderBookDeltas
from nautilus_trader.model.enums import BookAction, RecordFlag

F_LAST = int(RecordFlag.F_LAST)
F_SNAPSHOT = int(RecordFlag.F_SNAPSHOT)
_CLEAR = BookAction.CLEAR


class BookUpdateIds:
    """Per-instrument update-id state of one live book stream (pure: no I/O, no clock).

    ``on_deltas(deltas)`` returns ``(out, gap)``: ``out`` the normalised batch to hand on (None =
    drop the message), ``gap`` None or ``(u, after_u)`` when this message opened a gap.
    """

    __slots__ = ("dropped", "gaps", "last_u", "snapshots", "valid")

    def __init__(self) -> None:
        self.last_u: int | None = None  # u of the last message handed on; None before the first snapshot
        self.valid = False              # False: before the first snapshot, or in a gap until the next one
        self.gaps = 0
        self.snapshots = 0
        self.dropped = 0                # messages dropped (before a snapshot or inside a gap)

    def on_deltas(self, deltas: OrderBookDeltas) -> tuple[OrderBookDeltas | None, tuple[int, int] | None]:
        dl = deltas.deltas
        last = dl[-1]
        # The update id is in every level's order_id (Nautilus' Bybit parser); a snapshot without
        # levels is a lone CLEAR and has none.
        u = last.order.order_id if last.action != _CLEAR else 0
        # F_LAST missing on the last delta: a message split over batches, never seen from Nautilus
        # 1.231's parser (one message, one batch, F_LAST on its last delta). The live data engine
        # publishes each batch as it comes (buffer_deltas off, mmbot/live/node.py), so the strategy
        # would see a half-applied book: a gap instead (marker, fresh snapshot), or dropped.
        whole = last.flags & F_LAST
        if whole and dl[0].action == _CLEAR:  # Nautilus' Bybit parser starts every snapshot with a CLEAR
            self.last_u = u
            self.valid = True
            self.snapshots += 1
            return _rebuild(deltas, dl, u, F_SNAPSHOT), None
        if not self.valid:
            self.dropped += 1
            return None, None
        if u != self.last_u + 1 or not whole:
            after = self.last_u
            self.valid = False
            self.last_u = u
            self.gaps += 1
            marker = OrderBookDelta(deltas.instrument_id, _CLEAR, None, F_LAST, u, last.ts_event, last.ts_init)
            return OrderBookDeltas(deltas.instrument_id, [marker]), (u, after)
        self.last_u = u
        return _retag_last(deltas, dl, u), None


def _retag_last(deltas: OrderBookDeltas, dl: list, u: int) -> OrderBookDeltas:
    """An update message with ``sequence`` = ``u`` where it is read: on its last delta, which is
    ``OrderBookDeltas.sequence`` (the stale-data guard's check) and the cached book's sequence
    after the message. Only that delta is rebuilt (the hot path: a whole-message rebuild cost
    ~0.7 us per row on every live message); the rows before it keep Bybit's ``seq``, which
    nothing reads (the data engine applies the message as one batch)."""
    last = dl[-1]
    iid = deltas.instrument_id
    dl[-1] = OrderBookDelta(iid, last.action, last.order, last.flags, u, last.ts_event, last.ts_init)
    return OrderBookDeltas(iid, dl)


def _rebuild(deltas: OrderBookDeltas, dl: list, u: int, flags: int) -> OrderBookDeltas:
    iid = deltas.instrument_id
    return OrderBookDeltas(iid, [OrderBookDelta(iid, d.action, d.order, d.flags | flags, u, d.ts_event, d.ts_init)
                                 for d in dl])


def make_data_client_class(base):
    """``base`` (Nautilus' ``BybitDataClient``) with ``BookUpdateIds`` on every book message. A
    factory, so this module imports without the Bybit adapter loaded."""
    import asyncio

    from nautilus_trader.core import nautilus_pyo3


    class MmbotBybitDataClient(base):
        """Nautilus' Bybit data client, book messages normalised and gap-checked (module doc)."""

        resync_retry_s: float = 5.0

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._book_ids: dict = {}   # InstrumentId -> BookUpdateIds
            self._resyncing: set = set()

        def book_update_ids(self, instrument_id) -> BookUpdateIds:
            ids = self._book_ids.get(instrument_id)
            if ids is None:
                ids = self._book_ids[instrument_id] = BookUpdateIds()
            return ids

        def _handle_data(self, data) -> None:
            if type(data) is OrderBookDeltas:
                iid = data.instrument_id
                ids = self._book_ids.get(iid) or self.book_update_ids(iid)
                out, gap = ids.on_deltas(data)
                if gap is not None:
                    self._on_gap(iid, gap)
                if out is None:
                    return
                data = out
            super()._handle_data(data)

        def _on_gap(self, instrument_id, gap: tuple[int, int]) -> None:
            u, after = gap
            self._log.warning(f"{instrument_id}: order-book update id {u} after {after}: book invalid until a "
                              "fresh snapshot; re-subscribing")
            topic = getattr(self._config, "status_topic", "")  # given by the builder (adapters import no strategies)
            if topic:
                self._msgbus.publish(topic=topic, msg={
                    "instrument_id": str(instrument_id), "connected": True, "book_gap": True, "u": u, "after_u": after})
            if instrument_id not in self._resyncing:
                self._resyncing.add(instrument_id)
                self.create_task(self._resync_book(instrument_id), log_msg=f"resync_book: {instrument_id}")

        async def _resync_book(self, instrument_id) -> None:
            """Unsubscribe and subscribe the book topic (Bybit answers a subscribe with a snapshot)
            until a snapshot has made the book valid again, or the book is no longer subscribed."""
            pyo3_iid = nautilus_pyo3.InstrumentId.from_str(instrument_id.value)
            ids = self.book_update_ids(instrument_id)
            loop = asyncio.get_running_loop()
            try:
                while not ids.valid:
                    depth = self._depths.get(pyo3_iid)
                    if depth is None:
                        return  # unsubscribed meanwhile
                    ws = self._get_ws_client_for_instrument(pyo3_iid)
                    await ws.unsubscribe_orderbook(pyo3_iid, depth)
                    await ws.subscribe_orderbook(pyo3_iid, depth)
                    deadline = loop.time() + self.resync_retry_s
                    while not ids.valid and loop.time() < deadline:
                        await asyncio.sleep(0.05)
            finally:  # no await between the last validity check and this: a new gap starts a new task
                self._resyncing.discard(instrument_id)

    return MmbotBybitDataClient
