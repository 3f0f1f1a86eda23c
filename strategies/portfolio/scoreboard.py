"""The scoreboard: per-symbol performance figures for the allocator (docs/portfolio.md, "Scoreboard
and allocator").

Per instrument i, from this trader's fills and the cached books' mids:

- ``pnl_bps`` = 1e4 x S_pnl / S_notional: net PnL (cash + position x mid, net of fees, USDT) in
  bps of the traded notional (sum price x qty, USDT), both as decayed sums (below);
- ``fill_rate_per_min`` = 60 x S_fills / S_time [fills per minute];
- ``markout_bps[h]`` = S_mk,h / N_mk,h: the mean markout of a fill at horizon h [ms] (the report's
  ``markout_horizons_ms``), side x (mid(t_fill + h) - price) / price x 1e4 [bps], > 0 = the mid
  moved our way;
- ``adverse_selection_bps`` = -markout at the longest horizon (> 0 = fills followed by adverse moves);
- ``queue_edge_bps`` = S_edge / N_edge, edge = side x (mid(t_fill) - price) / mid(t_fill) x 1e4
  [bps]: what a fill captured against the mid when it happened (> 0 = bought below / sold above);
- ``vol_bps``: the standard deviation (n - 1) of the log returns of the mid sampled every
  ``vol_sample_s`` over the last ``vol_window_minutes`` [bps per sample period]; NaN until two
  returns.

Decayed sums ("EMA"): the raw increments of each snapshot interval (PnL change, notional, fills,
seconds, resolved markouts and edges) are added as S <- a x S + x with a = 0.5 ** (dt / halflife)
(dt [s] since the previous snapshot, ``ema_halflife_s``): an exponentially weighted sum with that
half-life, and each ratio above is the exponentially weighted mean. Snapshots are taken when the
allocator asks (its interval), so per-fill work is a ledger update and a queued markout only.
A figure without data (no notional, no resolved markout) is NaN.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec
import pandas as pd
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.enums import OrderSide

from strategies.risk.base import NS_PER_MS, NS_PER_S, PnlLedger, own_order_prefix

SCOREBOARD_ENDPOINT = "mmbot.portfolio.scoreboard"  # msgbus endpoint: a ScoreRequest is answered at once
BPS = 1e4


class SymbolScore(msgspec.Struct, frozen=True):
    """One instrument's figures at a snapshot (units in the names; NaN = no data yet)."""

    pnl_bps: float
    fill_rate_per_min: float
    markout_bps: dict[str, float]  # horizon [ms] as text -> mean markout [bps]
    adverse_selection_bps: float
    queue_edge_bps: float
    vol_bps: float
    fills: int
    net_pnl_usdt: float
    traded_notional_usdt: float


class ScoreRequest:
    """Sent to ``SCOREBOARD_ENDPOINT``: the scoreboard takes a snapshot at ``ts_ns`` and calls
    ``reply(scores, returns)`` (scores: instrument -> SymbolScore; returns: instrument -> the vol
    window's log returns, NaN where a mid was missing)."""

    __slots__ = ("reply", "ts_ns")

    def __init__(self, ts_ns: int, reply) -> None:
        self.ts_ns = ts_ns
        self.reply = reply


def _ratio(num: float, den: float, scale: float = 1.0) -> float:
    return scale * num / den if den > 0 and math.isfinite(num) else math.nan


def sample_std(values) -> float:
    """Standard deviation with n - 1 of the finite values; NaN with fewer than two."""
    xs = [v for v in values if math.isfinite(v)]
    if len(xs) < 2:
        return math.nan
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


class SymbolBoard:
    """One instrument's accumulators (pure: fed by the actor, tested directly)."""

    def __init__(self, horizons_ms: tuple[int, ...], vol_window: int) -> None:
        self.horizons_ms = horizons_ms
        self.ledger = PnlLedger()
        self.fills = 0
        self._raw_fills = 0
        self._raw_notional = 0.0
        self._raw_mk = [0.0] * len(horizons_ms)
        self._raw_mk_n = [0] * len(horizons_ms)
        self._raw_edge = 0.0
        self._raw_edge_n = 0
        self._last_pnl = 0.0
        self.s_pnl = self.s_notional = self.s_fills = self.s_time = 0.0
        self.s_mk = [0.0] * len(horizons_ms)
        self.n_mk = [0.0] * len(horizons_ms)
        self.s_edge = self.n_edge = 0.0
        self.returns: deque[float] = deque(maxlen=vol_window)
        self._last_log_mid = math.nan
        self.last_pnl_usdt = 0.0

    def on_fill(self, key: str, is_buy: bool, price: float, qty: float, fee: float, mid: float) -> None:
        self.ledger.on_fill(key, is_buy, price, qty, fee)
        self.fills += 1
        self._raw_fills += 1
        self._raw_notional += price * qty
        if math.isfinite(mid) and mid > 0:
            self._raw_edge += (1.0 if is_buy else -1.0) * (mid - price) / mid * BPS
            self._raw_edge_n += 1

    def on_markout(self, k: int, is_buy: bool, price: float, mid: float) -> None:
        """Fill at ``price`` resolved at horizon index ``k`` with the mid then (NaN: dropped)."""
        if math.isfinite(mid) and mid > 0 and price > 0:
            self._raw_mk[k] += (1.0 if is_buy else -1.0) * (mid - price) / price * BPS
            self._raw_mk_n[k] += 1

    def sample_mid(self, mid: float) -> None:
        lm = math.log(mid) if math.isfinite(mid) and mid > 0 else math.nan
        if len(self.returns) or math.isfinite(self._last_log_mid):
            self.returns.append((lm - self._last_log_mid) * BPS)  # NaN when either end is missing
        self._last_log_mid = lm

    def snapshot(self, key: str, dt_s: float, halflife_s: float, mid: float) -> SymbolScore:
        """Fold the interval's increments into the decayed sums (``dt_s`` [s] since the last
        snapshot) and return the figures."""
        pnl = self.ledger.pnl({key: mid}) if key in self.ledger.cash else 0.0
        if not math.isfinite(pnl):
            pnl = self._last_pnl
        a = 0.5 ** (dt_s / halflife_s) if dt_s > 0 else 1.0
        self.s_pnl = a * self.s_pnl + (pnl - self._last_pnl)
        self.s_notional = a * self.s_notional + self._raw_notional
        self.s_fills = a * self.s_fills + self._raw_fills
        self.s_time = a * self.s_time + max(0.0, dt_s)
        for k in range(len(self.horizons_ms)):
            self.s_mk[k] = a * self.s_mk[k] + self._raw_mk[k]
            self.n_mk[k] = a * self.n_mk[k] + self._raw_mk_n[k]
            self._raw_mk[k], self._raw_mk_n[k] = 0.0, 0
        self.s_edge = a * self.s_edge + self._raw_edge
        self.n_edge = a * self.n_edge + self._raw_edge_n
        self._raw_fills, self._raw_notional, self._raw_edge, self._raw_edge_n = 0, 0.0, 0.0, 0
        self._last_pnl = pnl
        self.last_pnl_usdt = pnl
        markouts = {str(h): _ratio(self.s_mk[k], self.n_mk[k]) for k, h in enumerate(self.horizons_ms)}
        longest = markouts[str(max(self.horizons_ms))] if self.horizons_ms else math.nan
        return SymbolScore(
            pnl_bps=_ratio(self.s_pnl, self.s_notional, BPS), fill_rate_per_min=_ratio(self.s_fills, self.s_time, 60.0),
            markout_bps=markouts, adverse_selection_bps=-longest, queue_edge_bps=_ratio(self.s_edge, self.n_edge),
            vol_bps=sample_std(self.returns), fills=self.fills, net_pnl_usdt=pnl,
            traded_notional_usdt=self.ledger.turnover)


class ScoreboardConfig(ActorConfig, frozen=True):
    """``instruments`` (the portfolio's, set by the builder); ``markout_horizons_ms`` [ms] (the
    report's); ``ema_halflife_s`` [s]; ``vol_sample_s`` [s] and ``vol_window_minutes`` [min]."""

    instruments: tuple[str, ...] = ()
    markout_horizons_ms: tuple[int, ...] = (100, 1000, 10000)
    ema_halflife_s: float = 300.0
    vol_sample_s: float = 60.0
    vol_window_minutes: float = 60.0


class ScoreboardActor(Actor):
    """Reads this trader's fills (``events.fills.*``) and the cached books; answers ``ScoreRequest``s
    on ``SCOREBOARD_ENDPOINT``. Markouts: fills wait in one queue per horizon (due times ascending:
    fills come in time order) and one time alert at the earliest due time resolves every due one
    with the cached mid."""

    def __init__(self, config: ScoreboardConfig) -> None:
        super().__init__(config)
        c = config
        self._horizons_ns = tuple(int(h) * NS_PER_MS for h in c.markout_horizons_ms)
        vol_window = max(2, int(round(c.vol_window_minutes * 60.0 / c.vol_sample_s)))
        self.boards = {i: SymbolBoard(tuple(int(h) for h in c.markout_horizons_ms), vol_window) for i in c.instruments}
        self._iids: dict = {}
        self._pending: list[deque] = [deque() for _ in self._horizons_ns]  # (due_ns, instrument, is_buy, price)
        self._alert_at = 0
        self._alerts = 0
        self._last_snapshot_ns = 0
        self.last_scores: dict[str, SymbolScore] = {}

    def on_start(self) -> None:
        from nautilus_trader.model.identifiers import InstrumentId

        from strategies.risk.base import loop_dispatcher

        self._own = own_order_prefix(self.trader_id.get_tag())
        self._iids = {i: InstrumentId.from_str(i) for i in self.config.instruments}
        self._on_loop = loop_dispatcher()
        self._last_snapshot_ns = self.clock.timestamp_ns()
        self.msgbus.subscribe(topic="events.fills.*", handler=self._on_fill)
        self.msgbus.register(endpoint=SCOREBOARD_ENDPOINT, handler=self._on_request)
        self.clock.set_timer(f"{self.id}-vol", pd.Timedelta(int(self.config.vol_sample_s * NS_PER_S), unit="ns"),
                             callback=self._on_loop(lambda e: self._sample_vol()))

    def on_stop(self) -> None:
        self.msgbus.unsubscribe(topic="events.fills.*", handler=self._on_fill)
        self.msgbus.deregister(endpoint=SCOREBOARD_ENDPOINT, handler=self._on_request)
        self.clock.cancel_timers()

    def mid(self, instrument: str) -> float:
        book = self.cache.order_book(self._iids[instrument])
        m = book.midpoint() if book is not None else None
        return math.nan if m is None else float(m)

    def _on_fill(self, event) -> None:
        key = event.instrument_id.value
        board = self.boards.get(key)
        if board is None or self._own.match(event.client_order_id.value) is None:
            return
        is_buy = event.order_side == OrderSide.BUY
        price = event.last_px.as_double()
        board.on_fill(key, is_buy, price, event.last_qty.as_double(), event.commission.as_double(), self.mid(key))
        ts = event.ts_event
        for k, h in enumerate(self._horizons_ns):
            self._pending[k].append((ts + h, key, is_buy, price))
        self._arm()

    def _arm(self) -> None:
        due = min((q[0][0] for q in self._pending if q), default=0)
        if due and (self._alert_at == 0 or due < self._alert_at):
            self._alerts += 1
            self._alert_at = max(due, self.clock.timestamp_ns())
            self.clock.set_time_alert_ns(f"{self.id}-mk-{self._alerts}", self._alert_at,
                                         callback=self._on_loop(self._on_alert))

    def _on_alert(self, event) -> None:
        if event.name != f"{self.id}-mk-{self._alerts}":
            return  # superseded by an earlier alert
        self._alert_at = 0
        self._resolve(self.clock.timestamp_ns())
        self._arm()

    def _resolve(self, now_ns: int) -> None:
        for k, q in enumerate(self._pending):
            while q and q[0][0] <= now_ns:
                _, key, is_buy, price = q.popleft()
                self.boards[key].on_markout(k, is_buy, price, self.mid(key))

    def _sample_vol(self) -> None:
        for key, board in self.boards.items():
            board.sample_mid(self.mid(key))

    def _on_request(self, request: ScoreRequest) -> None:
        request.reply(*self.snapshot(request.ts_ns))

    def snapshot(self, now_ns: int) -> tuple[dict[str, SymbolScore], dict[str, tuple[float, ...]]]:
        self._resolve(now_ns)
        dt_s = max(0, now_ns - self._last_snapshot_ns) / NS_PER_S
        self._last_snapshot_ns = now_ns
        hl = self.config.ema_halflife_s
        self.last_scores = {k: b.snapshot(k, dt_s, hl, self.mid(k)) for k, b in self.boards.items()}
        return self.last_scores, {k: tuple(b.returns) for k, b in self.boards.items()}

    def report(self) -> dict:
        """The final scoreboard per symbol (report.json ``metrics.portfolio.allocator.scoreboard``):
        a last snapshot at the clock's time (the run's end)."""
        scores, _ = self.snapshot(self.clock.timestamp_ns())
        return {k: msgspec.to_builtins(s) for k, s in scores.items()}
