"""The stream both engines replay, and the fixed grid the quoting policy acts on.

One window of one catalog instrument (by default the embedded XRPUSDT hour). Both engines replay
the catalog from its first row (the book needs the opening snapshot) up to the window's end; the
policy quotes only inside the window.

Exchange order (docs/queue_model.md, "Ordering key"), computed here from the data alone so that
hftbacktest's exchange sees the order mmbot's design says it must, not the order mmbot happens to
apply: key ``(x, rank, r, i)`` with ``x`` a stream's ``ts_event`` made non-decreasing within its
stream, rank 0 trade / 1 book message, ``r`` the receive time ``ts_init``, ``i`` the row's place
in its stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
# Policy steps sit half a millisecond off the millisecond grid the exchange stamps events on
# (Bybit ``ts``/``T`` are ms; responses land at x + L_resp, on the grid for an integer-ms L_resp), so
# no market event, command arrival or response can share a timestamp with a policy decision: an
# equal-timestamp tie between the two engines' clocks cannot arise (both would break it the same
# way only by accident). ``grid_ties`` counts what a stream with other stamps would still hit.
STEP_OFFSET_NS = NS_PER_MS // 2


@dataclass
class Stream:
    inst: object
    deltas: list  # OrderBookDelta rows, catalog order (ts_init order)
    trades: list  # TradeTick rows
    source: str
    data_start_ns: int  # first row's ts_init
    quote_start_ns: int  # first policy step
    end_ns: int  # rows with ts_init < end_ns are replayed
    step_ns: int
    n_steps: int
    compare_until_ns: int  # fills with exchange time < this are compared

    def step_time(self, k: int) -> int:
        return self.quote_start_ns + k * self.step_ns

    @property
    def tick(self) -> float:
        return float(self.inst.price_increment)

    @property
    def lot(self) -> float:
        return float(self.inst.size_increment)


def load(catalog: str, instrument: str, start_min: float, minutes: float, step_s: float) -> Stream:
    """Rows of ``instrument`` with ``ts_init`` before the window's end; the policy's grid: every
    ``step_s`` from ``start_min`` minutes after the first row (rounded up to the ms grid + 1 step
    + ``STEP_OFFSET_NS``) for ``minutes``."""
    from mmbot.catalog_store import CatalogError, open_catalog

    try:
        cat = open_catalog(catalog)
    except CatalogError as e:
        _bad(f"--catalog: {e}")
    inst = next((i for i in cat.instruments() if i.id.value == instrument), None)
    if inst is None:
        _bad(f"--instrument: {instrument} is not in catalog {catalog}")
    deltas = cat.order_book_deltas(instrument_ids=[instrument])
    if not deltas:
        _bad(f"--instrument: catalog {catalog} has no order book rows for {instrument}")
    step = int(round(step_s * NS_PER_S))
    data_start = deltas[0].ts_init
    grid0 = -(-data_start // NS_PER_MS) * NS_PER_MS
    quote_start = grid0 + int(round(start_min * 60 * NS_PER_S)) + step + STEP_OFFSET_NS
    end = grid0 + int(round((start_min + minutes) * 60 * NS_PER_S))
    n_steps = max(0, (end - step - quote_start) // step + 1)  # last step one step before the end
    if n_steps == 0 or quote_start >= deltas[-1].ts_init:
        _bad(f"--start-min/--minutes: the window {start_min:g}+{minutes:g} min holds no quoting step inside the "
             f"data ({(deltas[-1].ts_init - data_start) / 60e9:.1f} min)")
    deltas = [d for d in deltas if d.ts_init < end]
    trades = [t for t in cat.trade_ticks(instrument_ids=[instrument]) if t.ts_init < end]
    # The last orders rest until the data ends; a fill needs its response back before the end in
    # both engines, so only fills more than 1 s before the end are compared.
    return Stream(inst, deltas, trades, f"catalog {catalog}", data_start, quote_start, end, step, n_steps,
                  end - NS_PER_S)


def _bad(msg: str):
    """Bad input: one line naming the option, exit 2."""
    import sys

    print(f"crosscheck: {msg}", file=sys.stderr)
    raise SystemExit(2)


def feed_latency_ms(s: Stream) -> dict:
    book = np.array([d.ts_init - d.ts_event for d in s.deltas], dtype=np.int64)
    tr = np.array([t.ts_init - t.ts_event for t in s.trades], dtype=np.int64)
    out = {}
    for name, a in (("book", book), ("trades", tr)):
        if len(a):
            out[name] = {"p50": float(np.median(a)) / NS_PER_MS, "p99": float(np.percentile(a, 99)) / NS_PER_MS,
                         "max": float(a.max()) / NS_PER_MS}
    return out


def max_feed_latency_ns(s: Stream) -> int:
    return max([d.ts_init - d.ts_event for d in s.deltas] + [t.ts_init - t.ts_event for t in s.trades] + [0])


def grid_ties(s: Stream, entry_ns: int, resp_ns: int) -> dict:
    """Timestamps the two engines could order differently: a policy step equal to a receive time
    or to a response time (``x + L_resp`` of a market event); a command arrival (step + entry
    latency) equal to a market event's exchange time. 0 on ms-stamped data (``STEP_OFFSET_NS``)."""
    steps = {s.step_time(k) for k in range(s.n_steps)}
    arrivals = {t + entry_ns for t in steps}
    recv = {d.ts_init for d in s.deltas} | {t.ts_init for t in s.trades}
    xs = {d.ts_event for d in s.deltas} | {t.ts_event for t in s.trades}
    return {"step_eq_receive": len(steps & recv), "step_eq_response": len(steps & {x + resp_ns for x in xs}),
            "arrival_eq_market_event": len(arrivals & xs)}


def exchange_keys(s: Stream) -> list[tuple]:
    """``(x, rank, r, i, kind, index)`` for every market message in exchange order: one per book
    message (a run of deltas ending with F_LAST) and one per trade."""
    from nautilus_trader.model.enums import RecordFlag

    f_last = RecordFlag.F_LAST.value
    keys = []
    last_x = 0
    i0 = 0
    for i, d in enumerate(s.deltas):
        if d.flags & f_last or i == len(s.deltas) - 1:
            x = max(s.deltas[i0].ts_event, last_x)
            last_x = x
            keys.append((x, 1, s.deltas[i0].ts_init, i0, "book", (i0, i + 1)))
            i0 = i + 1
    last_x = 0
    for i, t in enumerate(s.trades):
        x = max(t.ts_event, last_x)
        last_x = x
        keys.append((x, 0, t.ts_init, i, "trade", i))
    keys.sort(key=lambda k: k[:4])
    return keys


def hbt_events(s: Stream, qty_scale: float = 1.0) -> np.ndarray:
    """The stream as hftbacktest events: every row twice, once EXCH-only in the exchange order
    above (``exch_ts`` = that ``x``) and once LOCAL-only in receive order (``local_ts`` = ``ts_init``).
    A snapshot (CLEAR + ADDs) becomes one DEPTH_CLEAR_EVENT per side, up to the snapshot's worst
    price on that side (hftbacktest's ``clear_depth(side, upto)``), then DEPTH_EVENT rows (its
    exchange processor ignores DEPTH_SNAPSHOT_EVENT rows). ``qty_scale`` multiplies sizes."""
    from hftbacktest import (BUY_EVENT, DEPTH_CLEAR_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT,
                             TRADE_EVENT)
    from hftbacktest.types import event_dtype
    from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide

    def book_rows(i0: int, i1: int) -> list:
        rows = []
        msg = s.deltas[i0:i1]
        if msg[0].action == BookAction.CLEAR:
            snap = msg[1:]
            bids = [float(x.order.price) for x in snap if x.order.side == OrderSide.BUY]
            asks = [float(x.order.price) for x in snap if x.order.side == OrderSide.SELL]
            rows.append((DEPTH_CLEAR_EVENT | BUY_EVENT, min(bids) if bids else 0.0, 0.0))
            rows.append((DEPTH_CLEAR_EVENT | SELL_EVENT, max(asks) if asks else 1e12, 0.0))
            msg = snap
        for d in msg:
            side = BUY_EVENT if d.order.side == OrderSide.BUY else SELL_EVENT
            q = 0.0 if d.action == BookAction.DELETE else float(d.order.size) * qty_scale
            rows.append((DEPTH_EVENT | side, float(d.order.price), q))
        return rows

    exch, local = [], []
    for x, _rank, r, _i, kind, ref in exchange_keys(s):
        if kind == "book":
            for ev, px, q in book_rows(*ref):
                exch.append((EXCH_EVENT | ev, x, r, px, q))
                local.append((r, ref[0], LOCAL_EVENT | ev, x, px, q))
        else:
            t = s.trades[ref]
            ev = TRADE_EVENT | (BUY_EVENT if t.aggressor_side == AggressorSide.BUYER else SELL_EVENT)
            row = (ev, x, r, float(t.price), float(t.size) * qty_scale)
            exch.append((EXCH_EVENT | row[0], *row[1:]))
            local.append((r, -1 - ref, LOCAL_EVENT | ev, x, row[3], row[4]))
    # Receive order: ts_init, then book rows before trades at an equal stamp as the replay
    # engine delivers them (stable within a message).
    order = sorted(range(len(local)), key=lambda k: (local[k][0], local[k][1] < 0, k))
    n = len(exch)
    arr = np.zeros(2 * n, event_dtype)
    role_ts = np.empty(2 * n, dtype=np.int64)
    pos = np.empty(2 * n, dtype=np.int64)
    for k, (ev, x, r, px, q) in enumerate(exch):
        arr[k] = (ev, x, r, px, q, 0, 0, 0.0)
        role_ts[k], pos[k] = x, k
    for j, k in enumerate(order):
        r, _, ev, x, px, q = local[k]
        arr[n + j] = (ev, x, r, px, q, 0, 0, 0.0)
        role_ts[n + j], pos[n + j] = r, j
    # Interleave the two copies by their own clock (each processor reads only its own rows, in
    # array order); ties keep each copy's own order.
    role = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    idx = np.lexsort((pos, role, role_ts))
    return arr[idx]
