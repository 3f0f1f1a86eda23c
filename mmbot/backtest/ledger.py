"""``RunLedger``: an actor that keeps what a run's report needs, compactly, as it happens.

It records the mid at every book change, every order's life (placed, amended, cancelled,
filled, rejected), every fill with its cause and extra slippage (the simulator's ``FillInfo``),
funding rates and mark prices, from Nautilus' own message bus, so closed orders can be purged
from the cache during a long run (Nautilus' automatic purge is live-only, and the cache keeps
about 3.6 KB per order). Mode-agnostic: it only uses Nautilus interfaces and the bus.

Clocks (docs/report.md, "Clocks"): everything the report computes with is EXCHANGE time, the
events' ``ts_event``: mids at the book update's ts_event, fills at ``OrderFilled.ts_event``,
order life-cycle steps (the quote timeline) at the order events' ts_event, funding at the
``FundingRateUpdate``'s ts_event (its settlement time), mark prices at theirs. Only
``ts_init_ns`` of an order (when the strategy created it) is local time.

Memory (docs/report.md, "Live and shadow sessions"): a backtest keeps every row in memory (its
run ends). A live or shadow session sets ``spill_dir`` (the run folder's ``ledger/``): every
``spill_interval_s`` the rows recorded since the last spill (mids, fills, the quote timeline,
closed-position PnLs, and the rows of orders that were already closed at the previous spill) are
appended to files there and dropped from memory, so a session's ledger holds about one interval
of rows plus its open orders, however long it runs; the report reads the files back at the end
and is the same as the in-memory one.
"""

from __future__ import annotations

import pickle
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.enums import BookType, OrderSide
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderModifyRejected,
    OrderRejected,
    OrderUpdated,
    PositionClosed,
)
from nautilus_trader.model.identifiers import InstrumentId

from adapters.order_ids import own_order_prefix
from strategies.risk.base import loop_dispatcher
from adapters.sim.fill_info import FILL_INFO_TOPIC, VENUE_CAUSE, FillInfo

PROGRESS_EVERY = 4096  # book batches between progress callbacks

# Order life-cycle codes in the quote timeline (see ``own_quotes_at``).
_OPEN, _MOVE, _CLOSE = 0, 1, 2


ORDER_FRAME_COLUMNS = ("client_order_id", "side", "price", "qty", "ts_init_ns", "ts_accepted_ns", "ts_last_ns",
                       "status", "filled_qty", "n_amends", "reason")
_TERMINAL = frozenset(("FILLED", "CANCELED", "EXPIRED", "REJECTED", "DENIED"))

FILL_FRAME_COLUMNS = ("ts_event_ns", "client_order_id", "venue_order_id", "trade_id", "side", "price", "qty",
                      "fee", "slippage", "cause", "ts_trigger_ns", "liquidity")


class RunLedgerConfig(ActorConfig, frozen=True):
    """instrument_id: the quoted instrument; purge_interval_s: how often closed orders and
    positions are purged from the cache (0 = never); purge_buffer_s: how long a closed order
    stays in the cache before it may be purged; funding: subscribe to funding rates and mark
    prices (live builders turn it off: a live feed's funding updates are predictions, not the
    settlements the report books); count_from_ns: the window's start when the replay
    starts earlier to build the book (set by the backtest builder, docs/config.md "Windows
    between snapshots"): book messages received before it are not counted (``book_batches``,
    ``mid_ts_regressions``) though their mids are kept (the as-of mid at the start is one);
    spill_dir: "" keeps every row in memory (backtests); a directory (live and shadow sessions: the
    run folder's ``ledger/``) gets the rows every ``spill_interval_s`` (module docstring)."""

    instrument_id: InstrumentId
    purge_interval_s: int = 300
    purge_buffer_s: int = 60
    funding: bool = True
    count_from_ns: int = 0
    spill_dir: str = ""
    spill_interval_s: int = 60


# Every column's dtype, fixed (not inferred from the rows: an empty run's frames have the types of a
# full run's).
_FILL_DTYPES = {"ts_event_ns": "int64", "client_order_id": "str", "venue_order_id": "str", "trade_id": "str",
                "side": "str", "price": "float64", "qty": "float64", "fee": "float64", "slippage": "float64",
                "cause": "str", "ts_trigger_ns": "int64", "liquidity": "str"}
_ORDER_DTYPES = {"client_order_id": "str", "side": "str", "price": "float64", "qty": "float64",
                 "ts_init_ns": "int64", "ts_accepted_ns": "int64", "ts_last_ns": "int64", "status": "str",
                 "filled_qty": "float64", "n_amends": "int64", "reason": "str"}


_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "str": pa.large_string()}


def _frame(chunks: Iterable, columns, dtypes: dict, seq_first: bool = False) -> pd.DataFrame:
    """The frame of the rows in ``chunks`` with every column's type fixed, as
    ``pd.DataFrame(rows, columns).astype(dtypes)`` gives it (an empty run's string columns were
    Arrow ``null`` in its parquet files before the types were fixed). A chunk is a list of row
    tuples (one spill's) or of dicts by column name (the orders in memory). Built a chunk at a time into Arrow columns: the rows of a long run are
    never all tuples at once (500,000 spilled orders: peak 417 -> 186 MB over the start;
    docs/benchmarks.md "Session 32"). ``seq_first``: each row starts with its creation number (the
    orders'); the frame is in that order (Arrow's stable sort, skipped when already in order),
    without it."""
    names = (["seq"] if seq_first else []) + list(columns)
    types = ([pa.int64()] if seq_first else []) + [_ARROW_TYPES[dtypes[c]] for c in columns]
    tables = []
    for chunk in chunks:
        if chunk:
            by_name = isinstance(chunk[0], dict)
            tables.append((_records_table if by_name else _rows_table)(chunk, names, types))
    table = pa.concat_tables(tables) if tables else pa.table([pa.array([], t) for t in types], names=names)
    tables = None
    if seq_first:
        seq = table["seq"].to_numpy()
        if len(seq) > 1 and not (seq[1:] >= seq[:-1]).all():
            table = table.take(pc.sort_indices(table["seq"]))
        table = table.drop_columns(["seq"])
    # One Arrow chunk per column, as a frame made from rows has: a column of several chunks can be
    # written to parquet in other pages (bytes). ``astype``: the types pandas gives these columns
    # whatever its options (``future.infer_string`` off: object text, as before; review 39 F6).
    frame = table.combine_chunks().to_pandas()
    table = None
    return frame.astype(dtypes)


def _rows_table(rows: list, names: list[str], types: list) -> pa.Table:
    """One chunk of row tuples in columns. A row of another width than the columns is a ledger
    bug, refused (``zip`` would drop the extra values or the missing column; review 39 F3)."""
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError:
        raise ValueError(f"ledger rows of {sorted({len(r) for r in rows})} values for {len(names)} "
                         f"columns {names}") from None
    if len(columns) != len(names):
        raise ValueError(f"ledger rows of {len(columns)} values for {len(names)} columns {names}")
    return pa.table([_column(values, t, n) for values, t, n in zip(columns, types, names)], names=names)


def _records_table(records: list[dict], names: list[str], types: list) -> pa.Table:
    """The ``records`` (dicts by column name) in columns, a column at a time: no row tuples."""
    return pa.table([_column([rec[n] for rec in records], t, n) for n, t in zip(names, types)], names=names)


def _column(values, arrow_type, name: str) -> pa.Array:
    """One column of one chunk. A value Arrow does not take as the column's type (only a ledger
    bug puts one there) is converted by pandas' ``astype``, this chunk's values together (text:
    its ``str``). A missing value in an integer column is refused, as ``astype`` refused it."""
    try:
        column = pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        dtype = {pa.large_string(): "str"}.get(arrow_type, arrow_type.to_pandas_dtype())
        column = pa.array(pd.Series(values, dtype=object).astype(dtype), type=arrow_type)
    if column.null_count and pa.types.is_integer(arrow_type):
        raise ValueError(f"ledger column {name!r}: {column.null_count} missing value(s) in an integer column")
    return column


class _Spill:
    """Append-only files of a ledger's rows: ``<name>.bin`` raw arrays (native byte order, read
    back by numpy), ``<name>.pkl`` pickled lists of row tuples, one list per spill."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for f in self.dir.glob("*.bin"):
            f.unlink()
        for f in self.dir.glob("*.pkl"):
            f.unlink()
        self.rows: dict[str, int] = {}  # rows spilled per file

    def put_array(self, name: str, values: array) -> None:
        with open(self.dir / f"{name}.bin", "ab") as f:
            values.tofile(f)
        self.rows[name] = self.rows.get(name, 0) + len(values)

    def put_rows(self, name: str, rows: list) -> None:
        with open(self.dir / f"{name}.pkl", "ab") as f:
            pickle.dump(rows, f, protocol=pickle.HIGHEST_PROTOCOL)
        self.rows[name] = self.rows.get(name, 0) + len(rows)

    def array(self, name: str, dtype) -> np.ndarray:
        path = self.dir / f"{name}.bin"
        return np.fromfile(path, dtype=dtype) if path.exists() else np.empty(0, dtype=dtype)

    def row_list(self, name: str) -> list:
        out: list = []
        for rows in self.row_chunks(name):
            out.extend(rows)
        return out

    def row_chunks(self, name: str) -> Iterator[list]:
        """The spilled rows one spill's list at a time, in spill order (the own-quote timeline is
        walked this way, not loaded whole: 4.4 -> 0.5 MB traced for 6,000 orders)."""
        path = self.dir / f"{name}.pkl"
        if not path.exists():
            return
        with open(path, "rb") as f:
            while True:
                try:
                    rows = pickle.load(f)
                except EOFError:
                    return
                yield rows


class RunLedger(Actor):
    def __init__(self, config: RunLedgerConfig) -> None:
        super().__init__(config)
        self.instrument_id = config.instrument_id
        self._count_from_ns = config.count_from_ns
        self.progress: Callable[[int], None] | None = None  # set by a builder; gets ts_ns
        self._reset_state()

    def _reset_state(self) -> None:
        self.mid_ts_ns = array("q")       # book update's ts_event (exchange clock)
        self.mid_ts_init_ns = array("q")  # its ts_init (receive clock: Nautilus' own matching engine)
        self.mid_px = array("d")
        self.funding_ts_ns = array("q")  # settlement time (FundingRateUpdate.ts_event)
        self.funding_rate = array("d")   # fraction per funding interval
        self.mark_ts_ns = array("q")
        self.mark_px = array("d")
        self._fill_info: dict[str, FillInfo] = {}  # trade_id -> FillInfo not yet matched to a fill
        self.fill_info_matched = 0
        self.fill_info_order_mismatch = 0  # FillInfo whose client_order_id is not the fill's
        self.book_batches = 0
        self.book_events = 0
        self._book_x_ns = 0  # the book stream's exchange time so far (the simulator's rule)
        self.book_ts_regressions = 0
        self._last_mid = 0.0
        self._book = None
        self._orders: dict[str, dict] = {}
        self._order_seq = 0  # orders' creation order (the orders frame's row order, spilled or not)
        self._fills: list[tuple] = []
        self._timeline: list[tuple] = []  # (ts_ns, client_order_id, code, side, price)
        self.modify_rejects = 0
        self.cancel_rejects = 0
        self._closed_pnls: list[float] = []  # PositionClosed.realized_pnl (USDT), in order
        self._closed_at_last_spill: list[str] = []
        self._spill = _Spill(self.config.spill_dir) if self.config.spill_dir else None

    @property
    def closed_realized_pnls(self) -> list[float]:
        """``PositionClosed.realized_pnl`` (USDT) of every closed position, in order."""
        if self._spill is None:
            return self._closed_pnls
        return self._spill.row_list("closed_pnls") + self._closed_pnls

    # -- lifecycle --------------------------------------------------------------------------

    def on_start(self) -> None:
        self._own_ids = own_order_prefix(self.trader_id.get_tag())
        self.subscribe_order_book_deltas(self.instrument_id, book_type=BookType.L2_MBP)
        # Funding and mark prices: data the backtest builder adds when the catalog has them
        # (nothing arrives otherwise). Every FundingRateUpdate is a settlement (docs/report.md).
        if self.config.funding:
            self.subscribe_funding_rates(self.instrument_id)
            self.subscribe_mark_prices(self.instrument_id)
        # The simulator publishes a fill's FillInfo just before the OrderFilled it describes.
        self.msgbus.subscribe(topic=FILL_INFO_TOPIC, handler=self._on_fill_info)
        self.msgbus.subscribe(topic="events.order.*", handler=self._on_order_event)
        # Realized PnL of every closed position (Nautilus' books, for the report's cross-check).
        self.msgbus.subscribe(topic="events.position.*", handler=self._on_position_event)
        # Live and shadow: the spill moves rows the loop's handlers append to; on Nautilus' timer
        # thread it would run half-way through a handler. loop_dispatcher posts it to the loop
        # (identity in a backtest: no running loop).
        on_loop = loop_dispatcher()
        if self.config.purge_interval_s > 0:
            self.clock.set_timer(
                name="ledger-purge",
                interval=pd.Timedelta(seconds=self.config.purge_interval_s),
                callback=on_loop(self._purge),
            )
        if self._spill is not None and self.config.spill_interval_s > 0:
            self.clock.set_timer(
                name="ledger-spill",
                interval=pd.Timedelta(seconds=self.config.spill_interval_s),
                callback=on_loop(self.spill),
            )

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.order.*", handler=self._on_order_event)
        self.msgbus.unsubscribe(topic=FILL_INFO_TOPIC, handler=self._on_fill_info)
        self.msgbus.unsubscribe(topic="events.position.*", handler=self._on_position_event)

    def on_reset(self) -> None:
        self._reset_state()

    # -- hot path ---------------------------------------------------------------------------

    def on_order_book_deltas(self, deltas) -> None:
        book = self._book
        if book is None:
            book = self._book = self.cache.order_book(self.instrument_id)
            if book is None:
                return
        counted = deltas.ts_init >= self._count_from_ns
        if counted:
            self.book_batches += 1
        # The simulator's rule (adapters/sim/exec_client.py ``_push_market``): a stream's exchange
        # time is max(ts_event, previous ts_event of the stream), so a message stamped earlier
        # than its predecessor stays after it. Sorting by raw ts_event instead would put the mid
        # of a message that filled us before the fill: spread capture from the filling book.
        x = deltas.ts_event
        if x < self._book_x_ns:
            x = self._book_regression(counted)
        else:
            self._book_x_ns = x
        mid = book.midpoint()
        if mid is not None and mid != self._last_mid:
            self._last_mid = mid
            self.mid_ts_ns.append(x)
            self.mid_ts_init_ns.append(deltas.ts_init)
            self.mid_px.append(mid)
        if counted and self.progress is not None and self.book_batches % PROGRESS_EVERY == 0:
            self.progress(deltas.ts_init)

    def _book_regression(self, counted: bool) -> int:
        """A book message stamped before its predecessor (rare; off the hot path): it takes the
        stream's exchange time ``x``, like in the simulator, which applies it just AFTER the
        message(s) at ``x``. The mid series has one point per nanosecond of exchange time, so
        the mid recorded at ``x`` by its predecessor moves to ``x - 1`` ns: a lookup strictly
        before ``x`` (the mid before a fill this message caused) then finds the book it
        followed, not the book before both (1 ns of error on that one sample)."""
        if counted:
            self.book_ts_regressions += 1
        x = self._book_x_ns
        ts = self.mid_ts_ns
        n = len(ts)
        if n and ts[n - 1] == x and (n == 1 or ts[n - 2] < x):
            ts[n - 1] = x - 1
        return x

    def on_funding_rate(self, funding_rate) -> None:
        self.funding_ts_ns.append(funding_rate.ts_event)
        self.funding_rate.append(float(funding_rate.rate))

    def on_mark_price(self, mark_price) -> None:
        self.mark_ts_ns.append(mark_price.ts_event)
        self.mark_px.append(mark_price.value.as_double())

    def _on_position_event(self, event) -> None:
        if type(event) is PositionClosed and event.instrument_id == self.instrument_id:
            self._closed_pnls.append(event.realized_pnl.as_double())

    def _on_fill_info(self, info: FillInfo) -> None:
        self._fill_info[info.trade_id] = info

    def _on_order_event(self, event) -> None:
        if event.instrument_id != self.instrument_id:
            # Another instrument's order (a portfolio node runs one ledger per instrument; live, the
            # shared account's other symbols): its fill moves that instrument's position, not this
            # one's. Its FillInfo (the simulator publishes every instrument's) is dropped with it.
            if isinstance(event, OrderFilled):
                self._fill_info.pop(event.trade_id.value, None)
            return
        coid = event.client_order_id.value
        ts = event.ts_event
        if isinstance(event, OrderFilled):
            # Every fill on the instrument: the report's PnL is the account's position, the one the
            # strategy's inventory and the position guards use (and Nautilus' account check). A
            # fill whose order carries no id of ours is not always another program's: Bybit's
            # liquidation / ADL / takeover orders and Nautilus' own reconciliation orders get a
            # made-up id; dropping them would hide a real loss (hostile review 22).
            self._on_fill(event, coid)
            return
        if self._own_ids.match(coid) is None:
            return  # another program's order (live, shared account): not a row of this run's orders
        rec = self._orders.get(coid)
        if isinstance(event, OrderInitialized):
            order = self.cache.order(event.client_order_id)
            price = order.price.as_double() if order is not None and order.has_price else float("nan")
            if rec is None:
                seq = self._order_seq
                self._order_seq += 1
            else:  # re-initialised: keeps its row (a dict keeps a replaced key's place)
                seq = rec["seq"]
            self._orders[coid] = {
                "client_order_id": coid, "side": "BUY" if event.side == OrderSide.BUY else "SELL",
                "price": price, "qty": event.quantity.as_double(), "ts_init_ns": event.ts_init,
                "ts_accepted_ns": -1, "ts_last_ns": event.ts_init, "status": "INITIALIZED",
                "filled_qty": 0.0, "n_amends": 0, "reason": "", "seq": seq,
            }
            return
        if rec is None:
            return  # an order of another component; not ours to report
        rec["ts_last_ns"] = ts
        if rec["price"] != rec["price"]:  # NaN: the order was not in the cache at initialisation
            order = self.cache.order(event.client_order_id)
            if order is not None and order.has_price:
                rec["price"] = order.price.as_double()
        if isinstance(event, OrderAccepted):
            rec["status"] = "ACCEPTED"
            rec["ts_accepted_ns"] = ts
            self._timeline.append((ts, coid, _OPEN, rec["side"], rec["price"]))
        elif isinstance(event, OrderUpdated):
            rec["n_amends"] += 1
            rec["price"] = event.price.as_double() if event.price is not None else rec["price"]
            rec["qty"] = event.quantity.as_double()
            self._timeline.append((ts, coid, _MOVE, rec["side"], rec["price"]))
        elif isinstance(event, (OrderCanceled, OrderExpired)):
            rec["status"] = "CANCELED" if isinstance(event, OrderCanceled) else "EXPIRED"
            self._timeline.append((ts, coid, _CLOSE, rec["side"], rec["price"]))
        elif isinstance(event, (OrderRejected, OrderDenied)):
            rec["status"] = "REJECTED" if isinstance(event, OrderRejected) else "DENIED"
            rec["reason"] = str(event.reason)
            # Also ends an ACCEPTED order: the simulator and Bybit cancel a post-only amend that
            # would cross with OrderRejected (docs/queue_model.md), so the quote must leave the
            # timeline here like on OrderCanceled.
            self._timeline.append((ts, coid, _CLOSE, rec["side"], rec["price"]))
        elif isinstance(event, OrderModifyRejected):
            self.modify_rejects += 1
        elif isinstance(event, OrderCancelRejected):
            self.cancel_rejects += 1

    def _on_fill(self, event: OrderFilled, coid: str) -> None:
        qty = event.last_qty.as_double()
        trade_id = event.trade_id.value
        info = self._fill_info.pop(trade_id, None)
        commission = event.commission.as_double()
        if info is None:  # Nautilus' own fill model or a real venue: no attribution, no extra slippage
            cause, slippage, ts_trigger = VENUE_CAUSE, 0.0, -1
        else:
            self.fill_info_matched += 1
            if info.client_order_id != coid:
                self.fill_info_order_mismatch += 1
            cause, slippage, ts_trigger = info.cause, info.slippage_quote, info.ts_trigger_ns
        # The simulator charges extra slippage inside the commission (so Nautilus' account stays
        # exact); the report books the exchange fee and the slippage apart (shared decision 4).
        self._fills.append((
            event.ts_event, coid, event.venue_order_id.value if event.venue_order_id else "",
            trade_id, "BUY" if event.order_side == OrderSide.BUY else "SELL",
            event.last_px.as_double(), qty, commission - slippage, slippage, cause, ts_trigger,
            event.liquidity_side.name,
        ))
        rec = self._orders.get(coid)
        if rec is not None:
            rec["filled_qty"] += qty
            rec["ts_last_ns"] = event.ts_event
            filled = rec["filled_qty"] >= rec["qty"] - 1e-12
            rec["status"] = "FILLED" if filled else "PARTIALLY_FILLED"
            if filled:
                self._timeline.append((event.ts_event, coid, _CLOSE, rec["side"], rec["price"]))

    def _purge(self, event) -> None:
        now = self.clock.timestamp_ns()
        self.cache.purge_closed_orders(now, self.config.purge_buffer_s)
        self.cache.purge_closed_positions(now, self.config.purge_buffer_s)

    def spill(self, event=None) -> None:
        """Move the rows recorded since the last spill to ``spill_dir`` (live and shadow sessions;
        the ``ledger-spill`` timer). Kept in memory: the last two mids (a regressed book message
        rewrites the last one, reading the one before, ``_book_regression``) and every order not
        closed at the PREVIOUS spill too, so that an event arriving up to one interval after an
        order closed still updates its row (an event for an order spilled earlier, e.g. a fill
        reconciled minutes after the order was cancelled, leaves its row as it was; the fill itself
        is in the fills)."""
        sp = self._spill
        if sp is None:
            return
        n = len(self.mid_ts_ns) - 2
        if n > 0:
            for name in ("mid_ts_ns", "mid_ts_init_ns", "mid_px"):
                values = getattr(self, name)
                sp.put_array(name, values[:n])
                del values[:n]
        for name, rows in (("fills", self._fills), ("timeline", self._timeline), ("closed_pnls", self._closed_pnls)):
            if rows:
                sp.put_rows(name, list(rows))
                rows.clear()
        done = []
        for coid in self._closed_at_last_spill:
            rec = self._orders.get(coid)
            if rec is not None and rec["status"] in _TERMINAL:
                done.append(tuple(rec[c] for c in ("seq", *ORDER_FRAME_COLUMNS)))
                del self._orders[coid]
        if done:
            sp.put_rows("orders", done)
        self._closed_at_last_spill = [coid for coid, rec in self._orders.items() if rec["status"] in _TERMINAL]

    def rows_in_memory(self) -> dict[str, int]:
        """Rows the ledger holds in memory now, per series (the bound a spilling ledger keeps)."""
        return {"mids": len(self.mid_ts_ns), "orders": len(self._orders), "fills": len(self._fills),
                "timeline": len(self._timeline), "closed_pnls": len(self._closed_pnls),
                "fill_info": len(self._fill_info)}

    # -- results (after the run) ------------------------------------------------------------

    def fills_frame(self) -> pd.DataFrame:
        """One row per fill (fills.parquet): ``fee`` = exchange fee (commission - slippage, USDT,
        + paid), ``slippage`` = extra slippage (USDT, >= 0), ``cause`` (adapters/sim/fill_info.py,
        "venue" without FillInfo), ``ts_trigger_ns`` = exchange time of the event that caused the
        fill (-1 without FillInfo); ``ts_event_ns`` is the fill's exchange time."""
        return _frame(self._spilled_then([self._fills], "fills"), FILL_FRAME_COLUMNS, _FILL_DTYPES)

    def _spilled_then(self, in_memory: list, name: str) -> Iterator[list]:
        """The spilled chunks of ``name`` (one spill's rows at a time), then the ``in_memory`` ones."""
        if self._spill is not None:
            yield from self._spill.row_chunks(name)
        yield from in_memory

    def fill_info_unmatched(self) -> int:
        """FillInfo messages with no OrderFilled of the same trade id (should be 0)."""
        return len(self._fill_info)

    def orders_frame(self) -> pd.DataFrame:
        # spilled rows and the ones still in memory, in creation order
        in_memory = list(self._orders.values())
        return _frame(self._spilled_then([in_memory], "orders"), ORDER_FRAME_COLUMNS, _ORDER_DTYPES, seq_first=True)

    def mid_ts_regressions(self) -> int:
        """Book updates whose ts_event is earlier than the previous one's (0 when the book
        stream is in exchange order, as Bybit's one-stream sequence guarantees); each was
        recorded at the stream's previous exchange time (see :meth:`mids`). Warm-up messages
        (received before ``count_from_ns``) are not counted."""
        return self.book_ts_regressions

    def mids(self, clock: str = "exchange") -> tuple[np.ndarray, np.ndarray]:
        """(timestamp int64 ns, mid USDT) on ``clock``, non-decreasing, in the stream's order.
        "exchange": the book update's exchange time as the simulator applies it,
        max(ts_event, previous ts_event of the book stream) (a regression, counted by
        :meth:`mid_ts_regressions`, keeps its place in the stream: never sorted before the
        message it followed); "receive": its ts_init (the clock Nautilus' own matching engine
        fills on; non-decreasing in a replay)."""
        if clock not in ("exchange", "receive"):
            raise ValueError(f"clock must be 'exchange' or 'receive', not {clock!r}")
        name = "mid_ts_ns" if clock == "exchange" else "mid_ts_init_ns"
        ts = np.frombuffer(getattr(self, name), dtype=np.int64).copy()
        px = np.frombuffer(self.mid_px, dtype=np.float64).copy()
        if self._spill is not None:
            ts = np.concatenate([self._spill.array(name, np.int64), ts])
            px = np.concatenate([self._spill.array("mid_px", np.float64), px])
        if len(ts) > 1:
            # The hot path already applies the stream rule; this keeps the contract for samples
            # recorded any other way (a no-op on the ledger's own arrays).
            np.maximum.accumulate(ts, out=ts)
        return ts, px

    def funding_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """(settlement ts_event int64 ns, rate) of every FundingRateUpdate received."""
        return (np.frombuffer(self.funding_ts_ns, dtype=np.int64).copy(),
                np.frombuffer(self.funding_rate, dtype=np.float64).copy())

    def mark_prices(self) -> tuple[np.ndarray, np.ndarray]:
        """(ts_event int64 ns, mark price USDT), sorted by ts_event."""
        ts = np.frombuffer(self.mark_ts_ns, dtype=np.int64).copy()
        px = np.frombuffer(self.mark_px, dtype=np.float64).copy()
        order = np.argsort(ts, kind="stable")
        return ts[order], px[order]

    def _timeline_rows(self) -> Iterator[tuple]:
        if self._spill is not None:
            for rows in self._spill.row_chunks("timeline"):
                yield from rows
        yield from self._timeline

    def own_quotes_at(self, grid_ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Own best bid and ask (NaN when none) resting at each grid time, from the order timeline."""
        bids = np.full(len(grid_ts_ns), np.nan)
        asks = np.full(len(grid_ts_ns), np.nan)
        live_bid: dict[str, float] = {}
        live_ask: dict[str, float] = {}
        events = iter(self._timeline_rows())  # spilled rows a spill at a time, then memory's
        event = next(events, None)
        for i, t in enumerate(grid_ts_ns):
            while event is not None and event[0] <= t:
                _ts, coid, code, side, price = event
                book = live_bid if side == "BUY" else live_ask
                if code == _CLOSE:
                    book.pop(coid, None)
                else:
                    book[coid] = price
                event = next(events, None)
            if live_bid:
                bids[i] = max(live_bid.values())
            if live_ask:
                asks[i] = min(live_ask.values())
        return bids, asks
