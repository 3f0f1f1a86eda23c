"""Interactive plots of ``report.html`` (bokeh, JavaScript inlined: the page loads nothing).

Why bokeh and not plotly: both can write a self-contained page, but BokehJS inlined is
~1.4 MB (``bokeh.min.js``; the widgets/tables/gl bundles are added only if a plot needs
them, and these plots do not) against ~4.6 MB for ``plotly.min.js``; every report.html
carries it, so bokeh keeps a run folder smaller (docs/report.md, "report.html").

Determinism: bokeh names models ``p1001, p1002, ...`` from a process-wide counter and the
embedding from random UUIDs, so two renders of the same run differ. :func:`html_parts`
serialises the document itself and renames every model id in order of first appearance
(``m1, m2, ...``) and uses fixed document/element ids, so the same run writes the same bytes.

Whole-run series are reduced by :func:`minmax_indices` (the first minimum and the first
maximum of each time bucket, at least one bucket per screen pixel): every spike survives,
which a fixed stride (every k-th sample) does not guarantee.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd
from bokeh.document import Document
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.layouts import column, row
from bokeh.models import (ColumnDataSource, DatetimeTickFormatter, FixedTicker, HoverTool, Legend,
                          NumeralTickFormatter, Span)
from bokeh.plotting import figure
from bokeh.resources import INLINE

from mmbot.report.metrics import FILL_CAUSES, per_minute_pnl, side_sign

# 4 000 buckets = 2 points per pixel on a 2 000 px wide plot at full zoom-out, and still one
# bucket per pixel after a 3x zoom on the ~1 150 px plot of the page.
DEFAULT_BUCKETS = 4000
_MAX_FILL_MARKERS = 5000  # above this, fills are reduced per side by the same min/max rule
_WIDTH = 1150
_BUY, _SELL, _MID = "#1a9850", "#d73027", "#404040"
_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
# colour of a guard-transition bar by the state entered (strategies/risk/*): green = normal
# trading again, orange = restricted (reduce only, widened, probing), red = stopped
_GUARD_COLORS = {"ACTIVE": "#1a9850", "CLOSED": "#1a9850", "REDUCING": "#fdae61", "REDUCE_ONLY": "#fdae61",
                 "WIDENED": "#fdae61", "HALF_OPEN": "#fdae61", "PAUSED": "#d73027", "HALTED": "#d73027",
                 "OPEN": "#d73027"}


# ---------------------------------------------------------------------------------------------
# decimation
# ---------------------------------------------------------------------------------------------

def minmax_indices(ts_ns: np.ndarray, y: np.ndarray, n_buckets: int = DEFAULT_BUCKETS) -> np.ndarray:
    """Sorted indices of the samples to draw: the first and last sample, and in each of
    ``n_buckets`` equal time buckets over [ts[0], ts[-1]] the first sample holding the bucket's
    minimum and the first holding its maximum (NaN counts only when a bucket is all NaN, so a
    gap shows as a gap). At most 2 x n_buckets + 2 points; every extreme value survives.
    ``ts_ns`` must be non-decreasing (samples in time order)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    v = np.asarray(y, dtype=np.float64)
    n = len(ts)
    if n <= 2 * n_buckets + 2:
        return np.arange(n)
    span = float(ts[-1] - ts[0]) or 1.0
    # float: (ts - t0) * n_buckets can overflow int64 on runs longer than a few weeks
    b = np.minimum(((ts - ts[0]).astype(np.float64) * (n_buckets / span)).astype(np.int64), n_buckets - 1)
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    counts = np.diff(np.r_[starts, n])
    nan = np.isnan(v)
    lo = np.where(nan, np.inf, v)
    hi = np.where(nan, -np.inf, v)
    keep = [np.array([0, n - 1])]
    for arr, red in ((lo, np.minimum), (hi, np.maximum)):
        best = np.repeat(red.reduceat(arr, starts), counts)
        hit = np.flatnonzero(arr == best)  # all-NaN bucket: +-inf == +-inf, its first sample
        _, first = np.unique(b[hit], return_index=True)
        keep.append(hit[first])
    return np.unique(np.concatenate(keep))


def _ms(ts_ns: np.ndarray) -> np.ndarray:
    """Bokeh's datetime axis: float milliseconds since the epoch (UTC)."""
    return np.asarray(ts_ns, dtype=np.int64) / 1e6


def _get(d: dict[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _fig(title: str, height: int, y_label: str, x_range: Any = None, datetime: bool = True,
         legend_side: str = "above") -> Any:
    kw = {"x_range": x_range} if x_range is not None else {}
    p = figure(title=title, width=_WIDTH, height=height, tools=_TOOLS, active_scroll="xwheel_zoom",
               x_axis_type="datetime" if datetime else "linear", sizing_mode="stretch_width", **kw)
    p.yaxis.axis_label = y_label
    p.yaxis.formatter = NumeralTickFormatter(format="0.[0000]")
    if datetime:
        p.xaxis.formatter = DatetimeTickFormatter(seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M",
                                                  hourmin="%H:%M", hours="%H:%M", days="%Y-%m-%d")
        p.xaxis.axis_label = "time (UTC)"
    p.toolbar.logo = None
    p.add_layout(Legend(click_policy="hide", orientation="horizontal" if legend_side == "above" else "vertical",
                        location="top_left", label_text_font_size="11px"), legend_side)
    return p


def _line(p: Any, ts_ns: np.ndarray, y: np.ndarray, n_buckets: int, step: bool = False, **kw: Any) -> None:
    """Whole-run series, min/max decimated; ``step`` draws a value held until the next sample."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    v = np.asarray(y, dtype=np.float64)
    k = minmax_indices(ts, v, n_buckets)
    src = ColumnDataSource({"t": _ms(ts[k]), "y": v[k]})
    if step:
        p.step("t", "y", source=src, mode="after", **kw)
    else:
        p.line("t", "y", source=src, **kw)


def equity_figures(equity: pd.DataFrame, n_buckets: int) -> Any:
    """Net/gross PnL, -fees, funding, -slippage (USDT) and the drawdown below, sharing the time axis."""
    ts = equity["ts_ns"].to_numpy(dtype=np.int64)
    p = _fig("Equity (USDT)", 330, "cumulative PnL (USDT)")
    _line(p, ts, equity["net_pnl"], n_buckets, color="#2166ac", line_width=2, legend_label="net PnL")
    _line(p, ts, equity["gross_pnl"], n_buckets, color="#92c5de", line_width=1.2,
          legend_label="gross PnL (before fees)")
    _line(p, ts, -equity["fees_paid"], n_buckets, color="#b2182b", line_dash="dashed",
          legend_label="-fees paid (rebates count +)")
    if "funding" in equity and equity["funding"].abs().sum() > 0:
        _line(p, ts, equity["funding"], n_buckets, color="#762a83", line_dash="dotted",
              legend_label="funding (received +)")
    if "slippage" in equity and equity["slippage"].abs().sum() > 0:
        _line(p, ts, -equity["slippage"], n_buckets, color="#f46d43", line_dash="dashdot", legend_label="-slippage")
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    p.add_tools(HoverTool(tooltips=[("time", "@t{%F %T}"), ("USDT", "@y{0.0000}")],
                          formatters={"@t": "datetime"}, mode="vline"))
    dd = _fig("Drawdown (USDT)", 170, "drawdown (USDT)", x_range=p.x_range)
    k = minmax_indices(ts, equity["drawdown"].to_numpy(dtype=np.float64), n_buckets)
    src = ColumnDataSource({"t": _ms(ts[k]), "y": equity["drawdown"].to_numpy(dtype=np.float64)[k],
                            "z": np.zeros(len(k))})
    dd.varea(x="t", y1="y", y2="z", source=src, fill_color="#d6604d", fill_alpha=0.5,
             legend_label="net PnL - running peak")
    return column(p, dd, sizing_mode="stretch_width")


def _limits(metadata: dict[str, Any]) -> dict[str, float]:
    """Position limits from the run's config: strategy ``max_position`` (base) and the position
    guard's soft/hard limits (base, and USDT notional)."""
    cfg = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    out: dict[str, float] = {}
    mp = _num(_get(cfg, "strategy.max_position"))
    if mp is None:
        mp = _num(_get(metadata, "strategy_params.max_position"))
    if mp is not None:
        out["strategy max_position"] = mp
    guard = _get(cfg, "risk.guards.position") if _get(cfg, "risk.enabled") is not False else None
    for key in ("soft_position", "hard_position", "soft_notional", "hard_notional"):
        v = _num((guard or {}).get(key))
        if v is not None and v > 0:
            out[f"guard {key}"] = v
    return out


def _position_path(equity: pd.DataFrame, fills: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Position (base) after every fill, exactly (the equity grid would hide a round trip
    inside one grid step). The starting position is what the grid's final position implies."""
    eq_ts = equity["ts_ns"].to_numpy(dtype=np.int64)
    eq_pos = equity["position"].to_numpy(dtype=np.float64)
    if len(fills) == 0:
        return eq_ts, eq_pos
    f = fills.sort_values("ts_event_ns", kind="mergesort")
    f_ts = f["ts_event_ns"].to_numpy(dtype=np.int64)
    path = np.cumsum(side_sign(f["side"]) * f["qty"].to_numpy(dtype=np.float64))
    start = float(eq_pos[-1]) - float(path[-1]) if len(eq_pos) else 0.0
    t0 = int(min(eq_ts[0], f_ts[0])) if len(eq_ts) else int(f_ts[0])
    t1 = int(max(eq_ts[-1], f_ts[-1])) if len(eq_ts) else int(f_ts[-1])
    ts = np.concatenate(([t0], f_ts, [t1]))
    pos = np.concatenate(([start], start + path, [start + path[-1]]))
    return ts, pos


def inventory_figure(equity: pd.DataFrame, fills: pd.DataFrame, metadata: dict[str, Any],
                     guards: dict[str, Any] | None, n_buckets: int) -> Any:
    """Position (base) after each fill, the position limits, and the risk guards' transitions."""
    p = _fig("Inventory (base units) with position limits and guard transitions", 400, "position (base units)",
             legend_side="right")
    ts, pos = _position_path(equity, fills)
    _line(p, ts, pos, n_buckets, step=True, color="#5e3c99", line_width=1.4, legend_label="position")
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    lim = _limits(metadata)
    styles = {"strategy max_position": ("#2b8cbe", "dashed"), "guard soft_position": ("#fdae61", "dashed"),
              "guard hard_position": ("#d73027", "dashed"), "guard soft_notional": ("#fdae61", "dotted"),
              "guard hard_notional": ("#d73027", "dotted")}
    eq_ts = equity["ts_ns"].to_numpy(dtype=np.int64)
    mid = equity["mid"].to_numpy(dtype=np.float64)
    extent = [float(np.nanmax(np.abs(pos)))] if len(pos) and np.isfinite(pos).any() else []
    for name, value in lim.items():
        color, dash = styles[name]
        if name.endswith("_notional"):  # a USDT limit is a position of notional / mid at each time
            with np.errstate(divide="ignore", invalid="ignore"):
                base = np.where(mid > 0, value / mid, np.nan)
            label = f"{name} = {value:g} USDT (/ mid)"
        else:
            base = np.full(len(eq_ts), value)
            label = f"{name} = {value:g}"
        if np.isfinite(base).any():
            extent.append(float(np.nanmax(base)))
        for sign in (1.0, -1.0):
            _line(p, eq_ts, sign * base, n_buckets, color=color, line_dash=dash, line_width=1.2, legend_label=label)
    trans = (guards or {}).get("transitions") or []
    if trans:
        # in base units: a USDT notional limit counts as its position at the mid, never as a number
        # of base units (4 000 USDT would stretch a BTC axis to +-4 000 BTC)
        top = max(extent, default=1.0) or 1.0
        t = np.array([int(x["ts_ns"]) for x in trans], dtype=np.int64)
        src = ColumnDataSource({
            "t": _ms(t), "y0": np.full(len(t), -top), "y1": np.full(len(t), top),
            "guard": [str(x.get("guard")) for x in trans],
            "change": [f"{x.get('old_state')} -> {x.get('new_state')}" for x in trans],
            "reason": [str(x.get("reason")) for x in trans], "when": [str(x.get("time")) for x in trans],
            "color": [_GUARD_COLORS.get(str(x.get("new_state")), "#525252") for x in trans]})
        seg = p.segment(x0="t", x1="t", y0="y0", y1="y1", source=src, line_color="color", line_width=2,
                        line_alpha=0.7, legend_label="guard transition (hover)")
        p.add_tools(HoverTool(renderers=[seg], tooltips=[("time", "@when"), ("guard", "@guard"),
                                                         ("state", "@change"), ("reason", "@reason")]))
    return p


def quotes_figure(equity: pd.DataFrame, fills: pd.DataFrame, mid_ts_ns: np.ndarray, mid_px: np.ndarray,
                  quote_ts_ns: np.ndarray | None, own_bid_px: np.ndarray | None, own_ask_px: np.ndarray | None,
                  n_buckets: int) -> Any:
    """Own quotes vs mid over the whole run (raw samples, min/max decimated) with the fills."""
    if quote_ts_ns is None or own_bid_px is None or own_ask_px is None:
        quote_ts_ns, own_bid_px, own_ask_px = (equity["ts_ns"].to_numpy(), equity["own_bid"].to_numpy(),
                                               equity["own_ask"].to_numpy())
    p = _fig("Own quotes vs mid (whole run; zoom with the wheel or a box)", 420, "price (USDT)")
    _line(p, mid_ts_ns, mid_px, n_buckets, step=True, color=_MID, line_width=1, legend_label="mid")
    _line(p, quote_ts_ns, own_bid_px, n_buckets, step=True, color=_BUY, line_width=1, line_alpha=0.8,
          legend_label="own bid")
    _line(p, quote_ts_ns, own_ask_px, n_buckets, step=True, color=_SELL, line_width=1, line_alpha=0.8,
          legend_label="own ask")
    if len(fills):
        f = fills.sort_values("ts_event_ns", kind="mergesort")
        f_ts = f["ts_event_ns"].to_numpy(dtype=np.int64)
        f_px = f["price"].to_numpy(dtype=np.float64)
        f_qty = f["qty"].to_numpy(dtype=np.float64)
        sign = side_sign(f["side"])
        causes = f["cause"].astype(str).to_numpy() if "cause" in f else np.full(len(f), "venue")
        renderers = []
        for want, marker, color, label in ((1, "triangle", _BUY, "buy fill"), (-1, "inverted_triangle", _SELL,
                                                                               "sell fill")):
            idx = np.flatnonzero(sign == want)
            if len(idx) > _MAX_FILL_MARKERS // 2:
                idx = idx[minmax_indices(f_ts[idx], f_px[idx], _MAX_FILL_MARKERS // 4)]
            if not len(idx):
                continue
            src = ColumnDataSource({"t": _ms(f_ts[idx]), "y": f_px[idx], "qty": f_qty[idx],
                                    "cause": causes[idx].tolist()})
            renderers.append(p.scatter("t", "y", source=src, marker=marker, size=7, fill_color=color,
                                       line_color="black", line_width=0.4, legend_label=label))
        p.add_tools(HoverTool(renderers=renderers, tooltips=[("time", "@t{%F %T.%3N}"), ("price", "@y{0.[000000]}"),
                                                             ("qty", "@qty"), ("cause", "@cause")],
                              formatters={"@t": "datetime"}))
    return p


def markout_figure(metrics: dict[str, Any]) -> Any:
    """Markout (bps) against the horizon after the fill: mean, median, p10-p90, mean vs mid; and
    beside it the histogram of the 1 s markouts (or the first horizon's) when the report has one."""
    curve = _get(metrics, "markouts.curve") or []
    p = _fig("Markout curve (bps vs horizon)", 330, "markout (bps)", datetime=False)
    p.xaxis.axis_label = "horizon after the fill"
    x = np.arange(len(curve), dtype=np.float64)
    val = lambda k: np.array([np.nan if r.get(k) is None else r[k] for r in curve], dtype=np.float64)  # noqa: E731
    if len(curve):
        src = ColumnDataSource({"x": x, "p10": val("p10_bps"), "p90": val("p90_bps"), "mean": val("mean_bps"),
                                "median": val("median_bps"), "vs_mid": val("mean_vs_mid_bps"),
                                "label": [str(r.get("label")) for r in curve],
                                "n": [int(r.get("count") or 0) for r in curve]})
        p.varea(x="x", y1="p10", y2="p90", source=src, fill_color="#9ecae1", fill_alpha=0.45, legend_label="p10-p90")
        p.line("x", "mean", source=src, color="#08519c", line_width=2, legend_label="mean vs fill price")
        r = p.scatter("x", "mean", source=src, color="#08519c", size=7)
        p.line("x", "median", source=src, color="#6baed6", line_dash="dashed", legend_label="median vs fill price")
        p.line("x", "vs_mid", source=src, color="#e6550d", line_width=1.3, legend_label="mean vs mid at fill")
        p.xaxis.ticker = FixedTicker(ticks=x.tolist())
        p.xaxis.major_label_overrides = {float(i): f"{r_['label']}\n(n={r_['count']})" for i, r_ in enumerate(curve)}
        p.add_tools(HoverTool(renderers=[r], tooltips=[("horizon", "@label"), ("fills", "@n"),
                                                       ("mean", "@mean{0.00} bps"), ("median", "@median{0.00} bps"),
                                                       ("p10..p90", "@p10{0.00} .. @p90{0.00} bps"),
                                                       ("vs mid", "@vs_mid{0.00} bps")]))
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    horizons = _get(metrics, "markouts.horizons") or {}
    label = "1s" if "1s" in horizons else next(iter(sorted(horizons)), None)
    hist = (horizons.get(label) or {}).get("histogram_bps") if label else None
    if not (hist and hist.get("counts")):
        return p
    p.width = 700
    h = figure(title=f"Distribution of {label} markouts", width=450, height=330, tools="save",
               x_axis_label=f"markout at {label} (bps, p1-p99 range; tails in end bins)", y_axis_label="fills",
               sizing_mode="stretch_width")
    h.toolbar.logo = None
    edges = np.asarray(hist["edges"], dtype=np.float64)
    src = ColumnDataSource({"left": edges[:-1], "right": edges[1:],
                            "n": np.asarray(hist["counts"], dtype=np.int64)})
    bars = h.quad(left="left", right="right", bottom=0, top="n", source=src, fill_color="#6baed6", line_color="white")
    h.add_tools(HoverTool(renderers=[bars], tooltips=[("bps", "@left{0.00} .. @right{0.00}"), ("fills", "@n")]))
    h.add_layout(Span(location=0, dimension="height", line_color="black", line_width=0.7))
    return row(p, h, sizing_mode="stretch_width")


def cause_figure(metrics: dict[str, Any]) -> Any:
    """Fill-cause breakdown: fills per cause and each cause's net contribution (USDT)."""
    by = _get(metrics, "attribution.by_cause") or {}
    causes = [c for c in FILL_CAUSES if c in by] + sorted(c for c in by if c not in FILL_CAUSES)
    n = [int(by[c].get("n_fills") or 0) for c in causes]
    net = [_num(by[c].get("net_contribution")) or 0.0 for c in causes]
    src = ColumnDataSource({"cause": causes, "n": n, "net": net,
                            "color": ["#1a7837" if v >= 0 else "#b2182b" for v in net],
                            "spread": [_num(by[c].get("spread_capture")) or 0.0 for c in causes],
                            "fees": [_num(by[c].get("fees_paid")) or 0.0 for c in causes]})
    left = figure(y_range=list(reversed(causes)), title="Fills per cause", width=560, height=260, tools="save",
                  x_axis_label="fills", sizing_mode="stretch_width")
    right = figure(y_range=left.y_range, title="Net contribution per cause (USDT)", width=560, height=260,
                   tools="save", x_axis_label="USDT (spread + inventory - fees - slippage)",
                   sizing_mode="stretch_width")
    for q, field, color in ((left, "n", "#6baed6"), (right, "net", "color")):
        q.toolbar.logo = None
        bars = q.hbar(y="cause", right=field, left=0, height=0.7, source=src, fill_color=color, line_color=None)
        q.add_tools(HoverTool(renderers=[bars], tooltips=[("cause", "@cause"), ("fills", "@n"),
                                                          ("net", "@net{0.0000} USDT"),
                                                          ("spread capture", "@spread{0.0000} USDT"),
                                                          ("fees", "@fees{0.0000} USDT")]))
    right.add_layout(Span(location=0, dimension="height", line_color="black", line_width=0.7))
    return row(left, right, sizing_mode="stretch_width")


def minute_pnl_figure(equity: pd.DataFrame, start_ns: int, end_ns: int | None, x_range: Any) -> Any:
    """Net PnL (USDT) of each complete minute: the sample of the per-minute Sharpe."""
    m = per_minute_pnl(equity, start_ns, end_ns) if len(equity) else pd.DataFrame(
        {"minute_start_ns": [], "minute_end_ns": [], "pnl": []})
    p = _fig("Net PnL per minute (USDT; the per-minute Sharpe's sample)", 260, "USDT per minute", x_range=x_range)
    pnl = m["pnl"].to_numpy(dtype=np.float64)
    src = ColumnDataSource({"t": _ms(m["minute_start_ns"].to_numpy(dtype=np.int64) + 30_000_000_000), "pnl": pnl,
                            "color": np.where(pnl >= 0, "#1a7837", "#b2182b").tolist(),
                            "start": _ms(m["minute_start_ns"].to_numpy(dtype=np.int64))})
    bars = p.vbar(x="t", top="pnl", width=55_000, source=src, fill_color="color", line_color=None,
                  legend_label="net PnL of the minute")
    p.add_tools(HoverTool(renderers=[bars], tooltips=[("minute from", "@start{%F %T}"), ("PnL", "@pnl{0.0000} USDT")],
                          formatters={"@start": "datetime"}))
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    return p


# ---------------------------------------------------------------------------------------------
# deterministic embedding
# ---------------------------------------------------------------------------------------------

_BOKEH_ID = re.compile(r"p[0-9]+")  # bokeh's simple ids (settings.simple_ids, the default)


def _rename_ids(doc_json: Any) -> tuple[Any, dict[str, str]]:
    """Copy of ``doc_json`` with every model id (the ``"id"`` of an object or a reference; the
    document's own config objects included) renamed m1, m2, ... in order of first appearance:
    the serialisation order is fixed by the document's structure, so the names are too."""
    names: dict[str, str] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k == "id" and isinstance(x, str) and _BOKEH_ID.fullmatch(x):
                    out[k] = names.setdefault(x, f"m{len(names) + 1}")
                else:
                    out[k] = walk(x)
            return out
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(doc_json), names


def _all_ids(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [x for k, x in v.items() if k == "id"] + [i for x in v.values() for i in _all_ids(x)]
    if isinstance(v, list):
        return [i for x in v for i in _all_ids(x)]
    return []


def html_parts(plots: list[tuple[str, Any]]) -> tuple[str, dict[str, str], str]:
    """(head HTML with BokehJS inlined, {key: div HTML}, script HTML) for ``plots`` = [(key, model)].

    One bokeh document holds every plot (linked ranges must share a document); each root is
    rendered into its own ``<div id="mmbot-plot-KEY">``."""
    doc = Document()
    for _, model in plots:
        doc.add_root(model)
    doc.title = "mmbot report"
    doc_json, names = _rename_ids(doc.to_json(deferred=False))
    if any(_BOKEH_ID.fullmatch(str(v)) for v in _all_ids(doc_json)):  # pragma: no cover - bokeh changed
        raise RuntimeError("bokeh document ids were not all renamed")
    roots = {names[m.id]: f"mmbot-plot-{key}" for key, m in plots}
    render_items = [{"docid": "mmbot-report", "roots": roots, "root_ids": list(roots)}]
    # "</" inside a script would end it early; "<\/" is the same string to JavaScript
    docs = json.dumps({"mmbot-report": doc_json}, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    items = json.dumps(render_items, separators=(",", ":")).replace("</", "<\\/")
    bundle = bundle_for_objs_and_resources([m for _, m in plots], INLINE)
    if bundle.js_files or bundle.css_files:  # INLINE never links; a URL would need the network
        raise RuntimeError(f"bokeh bundle links external files: {bundle.js_files + bundle.css_files}")
    head = "".join(bundle)  # <script> (and <style>) tags with BokehJS itself
    divs = {key: f'<div id="mmbot-plot-{key}" class="bk-plot"></div>' for key, _ in plots}
    script = ("<script>(function(){const docs_json=" + docs + ";const render_items=" + items
              + ";window.Bokeh.embed.embed_items(docs_json,render_items);})();</script>")
    return head, divs, script


# ---------------------------------------------------------------------------------------------
# portfolio (report.html of a [portfolio] run: mmbot/report/portfolio.py)
# ---------------------------------------------------------------------------------------------

_SYMBOL_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def portfolio_pnl_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], total: tuple[np.ndarray, np.ndarray] | None,
                         n_buckets: int = DEFAULT_BUCKETS) -> Any:
    """Each instrument's cumulative net PnL (USDT) and the portfolio's (their sum on the common
    grid). Lines, not a stacked area: PnLs of both signs stacked would draw a negative leg under
    a positive one and hide the sum."""
    p = _fig("Net PnL by instrument (USDT)", 330, "cumulative net PnL (USDT)")
    for i, (iid, (ts, y)) in enumerate(curves.items()):
        _line(p, ts, y, n_buckets, color=_SYMBOL_COLORS[i % len(_SYMBOL_COLORS)], line_width=1.4, legend_label=iid)
    if total is not None:
        _line(p, total[0], total[1], n_buckets, color="black", line_width=2.2, legend_label="portfolio")
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    p.add_tools(HoverTool(tooltips=[("time", "@t{%F %T}"), ("USDT", "@y{0.0000}")],
                          formatters={"@t": "datetime"}, mode="vline"))
    return p


def portfolio_exposure_figure(ts_ns: np.ndarray, gross: np.ndarray, net: np.ndarray, limits: dict[str, float],
                              x_range: Any = None, n_buckets: int = DEFAULT_BUCKETS) -> Any:
    """Gross ``sum |pos_i x mid_i|`` and net ``sum pos_i x mid_i`` position notional (USDT) over
    time, with ``[risk.portfolio]``'s limits as horizontal lines (``limits``: name -> USDT, 0 = off,
    net limits drawn at +/- the value)."""
    p = _fig("Portfolio exposure against the limits (USDT)", 300, "position notional (USDT)", x_range=x_range)
    _line(p, ts_ns, gross, n_buckets, step=True, color="#2166ac", line_width=1.6, legend_label="gross")
    _line(p, ts_ns, net, n_buckets, step=True, color="#b2182b", line_width=1.4, legend_label="net")
    styles = {"soft_gross_notional_usdt": ("#2166ac", "dashed", (1,)), "hard_gross_notional_usdt": ("#2166ac", "solid", (1,)),
              "soft_net_notional_usdt": ("#b2182b", "dashed", (1, -1)), "hard_net_notional_usdt": ("#b2182b", "solid", (1, -1))}
    for name, (color, dash, signs) in styles.items():
        v = _num(limits.get(name))
        if v is None or v <= 0:
            continue
        for s in signs:
            p.add_layout(Span(location=s * v, dimension="width", line_color=color, line_dash=dash, line_width=1.0,
                              line_alpha=0.8))
        # an invisible glyph gives the limit a legend entry
        p.line([], [], color=color, line_dash=dash, legend_label=name.replace("_notional_usdt", " limit"))
    p.add_layout(Span(location=0, dimension="width", line_color="black", line_width=0.7))
    return p


def allocation_figure(intervals: list[dict], end_ns: int, x_range: Any = None) -> Any:
    """The allocator's weights per instrument, stacked (they sum to at most 1: a blacklisted
    instrument's share is 0), each held from its interval until the next (a step)."""
    names = list(intervals[0]["weights"]) if intervals else []
    ts = [int(i["ts_ns"]) for i in intervals] + [int(max(end_ns, intervals[-1]["ts_ns"] if intervals else 0))]
    # a step drawn as an area: each value repeated at its start and just before the next start
    xs = np.repeat(np.asarray(ts, dtype=np.int64), 2)[1:-1]
    data: dict[str, Any] = {"t": _ms(xs)}
    for k in names:
        data[k] = np.repeat(np.asarray([float(i["weights"].get(k) or 0.0) for i in intervals]), 2)
    p = _fig("Allocation (weight of the total budget)", 260, "weight", x_range=x_range)
    if names:
        p.varea_stack(stackers=names, x="t", source=ColumnDataSource(data),
                      color=[_SYMBOL_COLORS[i % len(_SYMBOL_COLORS)] for i in range(len(names))], fill_alpha=0.75,
                      legend_label=names)
    return p
