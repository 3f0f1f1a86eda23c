"""Stale data and disconnects: the dead-man switch.

Per order-book batch of the guard's instrument the guard does O(1) work: it keeps the batch's
``ts_init`` and checks that the cached book (already updated by the DataEngine) has a best bid
below a best ask. A timer every ``check_interval_ms`` compares the engine clock with the last
batch time.

- no book batch for more than ``max_book_age_ms`` → ``STALE``; the next batch that leaves a valid
  book → ``ACTIVE``;
- the book becomes invalid (empty, one-sided or crossed: a gap CLEAR written by the loaders, a
  venue CLEAR, a half-built book), a sequence gap (``check_sequence``: a batch's sequence is not
  the previous one + 1), or a data-client disconnect (a ``{"connected": False, ...}`` message on
  ``mmbot.data.status`` or ``on_data_disconnected``) → ``INVALID``; only a snapshot batch
  (``F_SNAPSHOT``) that leaves a valid book → ``ACTIVE``.

Update-id gaps. Every mmbot book source hands over batches with ``sequence`` = Bybit's update id
``u`` and checks ``u`` itself, since it sees every exchange message: ``mmbot catalog import`` and
shadow's raw client (``adapters.bybit_book``) and the live Bybit data client
(``adapters.bybit_live_book``) replace a gap by the gap CLEAR above and drop deltas until the next
snapshot (live also re-subscribes to get one). So a gap always makes the book invalid, whatever
``check_sequence`` says. ``check_sequence = true`` adds the guard's own check of the sequence
between batches (the same verdict on every mmbot source; the one for a source that does not mark
gaps). It is exact on live streams and on recordings of them; it flags an exchange message whose
delta had no levels (the importer sees it, no rows come of it, the next sequence steps by 2): the
synthetic embedded BTCUSDT hour has 46, real Bybit recordings seen so far none. Default false.

``STALE`` and ``INVALID`` pull all quotes (both sides blocked, open orders of the instrument
cancelled). The RiskEngine state is left ``ACTIVE``: cancels and the recovery need no halt.
Detection latency is at most ``max_book_age_ms + check_interval_ms``.
"""

from __future__ import annotations

import pandas as pd
from nautilus_trader.model.enums import BookType, RecordFlag

from strategies.risk.base import (
    ACTIVE,
    DATA_STATUS_TOPIC,
    NS_PER_MS,
    RiskGuard,
    RiskGuardConfig,
    MAX_INTERVAL_MS,
    check_number,
)

STALE, INVALID = "STALE", "INVALID"
_F_SNAPSHOT = int(RecordFlag.F_SNAPSHOT)


class StaleDataConfig(RiskGuardConfig, frozen=True):
    """``max_book_age_ms`` [ms] (> 0), ``check_interval_ms`` [ms] (> 0), ``check_sequence``: a
    batch whose sequence (Bybit's ``u``) is not the previous batch's + 1, outside a snapshot, is a
    gap (module doc)."""

    max_book_age_ms: int = 5000
    check_interval_ms: int = 1000
    check_sequence: bool = False

    def __post_init__(self) -> None:
        check_number(self, "max_book_age_ms", strict=True, high=MAX_INTERVAL_MS)
        check_number(self, "check_interval_ms", strict=True, high=MAX_INTERVAL_MS)


class StaleDataGuard(RiskGuard):
    GUARD = "stale_data"

    def __init__(self, config: StaleDataConfig) -> None:
        super().__init__(config)
        self._max_age_ns = config.max_book_age_ms * NS_PER_MS
        self._check_seq = config.check_sequence
        self._last_ns = 0
        self._last_seq = -1
        self._prev_seq = -1
        self._book = None
        self.batches = 0
        self.max_gap_ms = 0.0
        self.invalid_batches = 0

    def on_start(self) -> None:
        super().on_start()
        self._last_ns = self.clock.timestamp_ns()
        self.subscribe_order_book_deltas(self._iid, book_type=BookType.L2_MBP)
        self.msgbus.subscribe(topic=DATA_STATUS_TOPIC, handler=self._on_data_status)
        self.clock.set_timer(f"{self.id}-check", pd.Timedelta(milliseconds=self.config.check_interval_ms),
                             callback=self.on_loop(self._check))

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic=DATA_STATUS_TOPIC, handler=self._on_data_status)
        super().on_stop()

    # -- hot path: O(1) per batch --------------------------------------------------------------

    def on_order_book_deltas(self, deltas) -> None:
        book = self._book
        if book is None:
            book = self._book = self.cache.order_book(self._iid)
            if book is None:
                return
        ts = deltas.ts_init
        gap = ts - self._last_ns
        self._last_ns = ts
        self.batches += 1
        spread = book.spread()  # None when a side is empty
        valid = spread is not None and spread > 0.0
        snapshot = deltas.flags & _F_SNAPSHOT
        seq_gap = False
        if self._check_seq:
            seq = deltas.sequence
            seq_gap = not snapshot and self._last_seq >= 0 and seq != self._last_seq + 1
            self._prev_seq = self._last_seq
            self._last_seq = seq
        state = self.guard_state
        if state == ACTIVE:
            if gap * 1e-6 > self.max_gap_ms and self.batches > 1:
                self.max_gap_ms = gap * 1e-6
            if not valid or seq_gap:
                self.invalid_batches += 1
                why = "sequence gap" if seq_gap else "book empty, one-sided or crossed (CLEAR / gap)"
                numbers = {"sequence": float(deltas.sequence)}
                if seq_gap:
                    numbers["previous_sequence"] = float(self._prev_seq)
                self._pull(INVALID, why, numbers)
        elif state == STALE:
            if valid and not seq_gap:
                self.transition(ACTIVE, "fresh book data", {"book_age_ms": gap / NS_PER_MS})
            else:
                self._pull(INVALID, "book invalid after stale period", {})
        elif snapshot and valid:  # INVALID
            self.transition(ACTIVE, "fresh snapshot", {"sequence": float(deltas.sequence)})

    # -- timer and connection status -----------------------------------------------------------

    def _check(self, _event) -> None:
        if self.guard_state != ACTIVE:
            return
        age = self.clock.timestamp_ns() - self._last_ns
        if age > self._max_age_ns:
            self._pull(STALE, f"no book update for more than {self.config.max_book_age_ms} ms",
                       {"book_age_ms": age / NS_PER_MS, "max_book_age_ms": self.config.max_book_age_ms})

    def _on_data_status(self, msg) -> None:
        iid = msg.get("instrument_id")
        if iid is not None and iid != self._iid_str:
            return
        if not msg.get("connected", True):
            self.on_data_disconnected(str(msg.get("reason", "data client disconnected")))

    def on_data_disconnected(self, reason: str = "data client disconnected") -> None:
        """Public trigger: the data feed is gone; quotes stay pulled until a fresh snapshot."""
        self._pull(INVALID, f"disconnect: {reason}", {})

    def _pull(self, state: str, reason: str, numbers: dict) -> None:
        self.transition(state, reason, numbers, allow_bid=False, allow_ask=False, cancel="all")

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "book_batches": self.batches, "max_batch_gap_ms": self.max_gap_ms,
                "invalid_book_events": self.invalid_batches}
