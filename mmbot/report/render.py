"""Backtest reports: ``report.json`` (canonical), ``report.md`` and a self-contained ``report.html``.

All three are rendered from the same canonical (rounded) report dict, so the numbers in the
Markdown and HTML match ``report.json`` exactly. Every file is written atomically (temp file in
the same directory, then ``os.replace``). Plots are interactive bokeh figures with BokehJS inlined
(:mod:`mmbot.report.plots`): the HTML loads nothing from the network, and the same run writes
the same bytes.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbot.report import plots as report_plots
from mmbot.report import risk as report_risk
from mmbot.report import simulator as report_sim
from mmbot.canonical_json import dumps_canonical, to_canonical, write_bytes_atomic
from mmbot.report.metrics import FILL_CAUSES

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

Row = tuple[str, str, str]
_HEADLINE_MAX_LEAVES = 8
_STANDARD_SECTIONS = ("pnl", "counts", "inventory", "risk", "markouts", "attribution", "funding", "daily",
                      "simulator")
_MAX_TABLE_ROWS = 100  # settlement / day tables longer than this are cut (report.json has all)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def build_report(metadata: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The report document ``{"metadata": ..., "metrics": ...}`` in canonical (rounded) form."""
    return to_canonical({"metadata": metadata, "metrics": metrics})


def write_report_json(out_dir: str | os.PathLike[str], metadata: dict[str, Any],
                      metrics: dict[str, Any]) -> Path:
    """Write ``out_dir/report.json`` = {"metadata", "metrics"} as canonical JSON, atomically."""
    return write_bytes_atomic(Path(out_dir) / REPORT_JSON,
                              dumps_canonical({"metadata": metadata, "metrics": metrics}))


def write_report_md(out_dir: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``out_dir/report.md`` (metadata header, key table, markouts, inventory), atomically."""
    return write_bytes_atomic(Path(out_dir) / REPORT_MD, render_markdown(report).encode("utf-8"))


def write_report_html(
    out_dir: str | os.PathLike[str],
    report: dict[str, Any],
    equity_df: pd.DataFrame,
    fills_df: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    quote_ts_ns: np.ndarray | None = None,
    own_bid_px: np.ndarray | None = None,
    own_ask_px: np.ndarray | None = None,
) -> Path:
    """Write the self-contained ``out_dir/report.html`` (tables + interactive bokeh plots, BokehJS
    inlined; :mod:`mmbot.report.plots`), atomically.

    ``equity_df`` is :func:`mmbot.report.metrics.equity_curve`'s output; mids/quotes are the raw samples
    (int64 ns, USDT) of the whole-run quote plot (min/max decimated). Quotes default to the equity grid's.
    """
    page = render_html(report, equity_df, fills_df, mid_ts_ns, mid_px,
                       quote_ts_ns, own_bid_px, own_ask_px)
    return write_bytes_atomic(Path(out_dir) / REPORT_HTML, page.encode("utf-8"))


def write_parquet_atomic(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` to parquet (no index) via a temp file and ``os.replace``."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return write_bytes_atomic(path, buf.getvalue())


def write_all_reports(
    out_dir: str | os.PathLike[str],
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    equity_df: pd.DataFrame,
    fills_df: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    quote_ts_ns: np.ndarray | None = None,
    own_bid_px: np.ndarray | None = None,
    own_ask_px: np.ndarray | None = None,
) -> dict[str, Path]:
    """Convenience: report.json, report.md and report.html in ``out_dir``; returns their paths."""
    report = build_report(metadata, metrics)
    return {
        "json": write_report_json(out_dir, metadata, metrics),
        "md": write_report_md(out_dir, report),
        "html": write_report_html(out_dir, report, equity_df, fills_df, mid_ts_ns, mid_px,
                                  quote_ts_ns, own_bid_px, own_ask_px),
    }


# ---------------------------------------------------------------------------------------------
# formatting and tables (shared by Markdown and HTML)
# ---------------------------------------------------------------------------------------------

def _num(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, fmt)


def _usdt(x: Any) -> str:
    return _num(x, ".4f")


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x * 100:.2f} %"


_get = report_plots._get  # dotted lookup into the report dict (one definition, in plots)


def sharpe_rows(metrics: dict[str, Any]) -> list[Row]:
    """The Sharpe lines: per minute (never annualised, with its sample size), then annualised
    from daily PnL or the reason it is not shown (docs/report.md, "Sharpe")."""
    g = lambda p: _get(metrics, p)  # noqa: E731
    ann, se = g("risk.sharpe_annualised"), g("risk.sharpe_annualised_se")
    ann_text = (f"{_num(ann, '.2f')} (± {_num(se, '.2f')} s.e., {g('risk.n_days_complete')} days)"
                if ann is not None else (g("risk.sharpe_annualised_note") or "n/a"))
    return [
        (f"Sharpe per minute (not annualised, n = {g('risk.n_minutes')} minutes)",
         _num(g("risk.sharpe_per_minute"), ".4f"), ""),
        (f"Sharpe per UTC day (n = {g('risk.n_days_complete')} complete days)",
         _num(g("risk.sharpe_per_day"), ".4f"), ""),
        ("Sharpe annualised (daily PnL x sqrt(365))", ann_text, ""),
    ]


def key_table(metrics: dict[str, Any]) -> list[Row]:
    """(metric, value, unit) rows of the headline numbers, already formatted."""
    m = metrics
    g = lambda p: _get(m, p)  # noqa: E731
    funding = _usdt(g("pnl.funding")) + ("" if g("pnl.funding_available") else " (no funding data)")
    dd_frac = g("risk.max_drawdown_frac")
    adverse = g("pnl.adverse_selection") or {}
    horizons = g("markouts.horizons") or {}
    adverse_rows = [(f"Adverse selection at {label} (in inventory PnL)", _usdt(v), "USDT")
                    for label, v in sorted(adverse.items(), key=lambda kv: (horizons.get(kv[0]) or {}).get("horizon_ns", 0))]
    return [
        ("Net PnL", _usdt(g("pnl.net_pnl")), "USDT"),
        ("Net PnL excluding funding", _usdt(g("pnl.net_pnl_ex_funding")), "USDT"),
        *([("Net PnL excluding funding, Nautilus account (check)", _usdt(g("pnl.nautilus_account_net_pnl")), "USDT")]
          if g("pnl.nautilus_account_net_pnl") is not None else []),
        ("Gross PnL", _usdt(g("pnl.gross_pnl")), "USDT"),
        ("Spread capture (vs mid before each fill)", _usdt(g("pnl.spread_capture")), "USDT"),
        ("Inventory PnL (mid moves after fills)", _usdt(g("pnl.inventory_pnl")), "USDT"),
        *adverse_rows,
        ("Exchange fees (rebates negative)", _usdt(g("pnl.fees_paid")), "USDT"),
        ("Extra slippage (simulator)", _usdt(g("pnl.slippage")), "USDT"),
        ("Funding (received positive)", funding, "USDT"),
        ("Return on starting balance", _pct(g("pnl.return_on_balance")), ""),
        ("Fills (maker / taker)",
         f"{g('counts.n_fills')} ({g('counts.n_maker_fills')} / {g('counts.n_taker_fills')})", "count"),
        ("Orders", str(g("counts.n_orders")), "count"),
        ("Fill ratio (orders with a fill)", _pct(g("counts.fill_ratio")), ""),
        ("Maker share (by fill qty)", _pct(g("counts.maker_share")), ""),
        ("Cancels per fill", _num(g("counts.cancels_per_fill"), ".3f"), "ratio"),
        ("Traded notional", _num(g("counts.traded_notional"), ".2f"), "USDT"),
        *sharpe_rows(m),
        ("Max drawdown", _usdt(g("risk.max_drawdown_usdt"))
         + ("" if dd_frac is None else f" ({dd_frac * 100:.3f} % of peak equity)"), "USDT"),
        ("CVaR95 of per-minute PnL", _usdt(g("risk.cvar95_minute_pnl")), "USDT/min"),
        ("Minutes in sample", str(g("risk.n_minutes")), "count"),
    ]


ATTRIBUTION_NOTE = ("Cause of each fill, from the simulator (docs/queue_model.md): queue = trades consumed "
                    "the queue ahead of us (the only cause that depends on the queue model); trade_through = a "
                    "trade printed through our price; book_through = the book moved through our price; "
                    "venue = no attribution (Nautilus' own fill model or a real venue). Spread capture vs the "
                    "mid before the fill; adverse selection = side x (mid(t+h) - mid before) x qty; net "
                    "contribution = spread + inventory - fees - slippage (causes add up to net PnL excluding "
                    "funding). Money in USDT.")


def attribution_header(metrics: dict[str, Any]) -> tuple[str, ...]:
    labels = _attribution_labels(metrics)
    return ("Cause", "Fills", "Qty (base)", "Notional", "Spread capture",
            *[f"Adverse sel. {lab}" for lab in labels], *[f"Markout {lab} (bps)" for lab in labels],
            "Fees", "Slippage", "Net contribution")


def _attribution_labels(metrics: dict[str, Any]) -> list[str]:
    horizons = _get(metrics, "markouts.horizons") or {}
    return [lab for lab, _ in sorted(horizons.items(), key=lambda kv: kv[1].get("horizon_ns", 0))]


def attribution_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the fill attribution table, one per cause (``metrics.attribution.by_cause``)."""
    by = _get(metrics, "attribution.by_cause") or {}
    labels = _attribution_labels(metrics)
    rows = []
    # report.json's keys are sorted; the table keeps the causes' own order, unknown ones last
    for cause in [c for c in FILL_CAUSES if c in by] + sorted(c for c in by if c not in FILL_CAUSES):
        e = by[cause]
        mk = e.get("markouts") or {}
        rows.append((cause, str(e.get("n_fills")), _num(e.get("qty"), ".6g"), _num(e.get("notional"), ".2f"),
                     _usdt(e.get("spread_capture")),
                     *[_usdt((mk.get(lab) or {}).get("adverse_selection_usdt")) for lab in labels],
                     *[_num((mk.get(lab) or {}).get("mean_bps"), ".2f") for lab in labels],
                     _usdt(e.get("fees_paid")), _usdt(e.get("slippage")), _usdt(e.get("net_contribution"))))
    return rows


FUNDING_HEADER = ("Settlement (UTC)", "Rate", "Position (base)", "Price (USDT)", "Price source", "Payment (USDT)")


def _utc(ns: Any) -> str:
    return "n/a" if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def funding_summary_text(metrics: dict[str, Any]) -> str:
    g = lambda p: _get(metrics, p)  # noqa: E731
    if not g("funding.available"):
        return "No funding data for this instrument in the catalog: funding is 0 and not modelled."
    text = (f"{g('funding.n_settlements')} settlement(s) in the run, {g('funding.n_with_position')} with a position "
            f"({g('funding.n_priced_by_mark')} priced at the mark price, {g('funding.n_priced_by_mid')} at the mid "
            f"before the settlement); total {_usdt(g('funding.total_usdt'))} USDT (received "
            f"{_usdt(g('funding.received_usdt'))}, paid {_usdt(g('funding.paid_usdt'))}). Payment = -position x "
            "price x rate (longs pay positive rates). Nautilus' account does not book funding: the account check "
            "compares net PnL excluding funding.")
    if g("funding.n_unpriced"):
        text += f" {g('funding.n_unpriced')} settlement(s) with a position had no price and are left out."
    if g("funding.n_duplicate"):
        text += f" {g('funding.n_duplicate')} duplicate settlement(s) (same time) were not applied."
    return text


def funding_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = _get(metrics, "funding.settlements") or []
    return [(_utc(r["ts_ns"]) + (" (duplicate)" if r.get("duplicate") else ""), _num(r["rate"], ".6g"),
             _num(r["position_base"], ".6g"), _num(r["price"], ".6g"), str(r["price_source"]),
             _usdt(r["payment_usdt"])) for r in rows[:_MAX_TABLE_ROWS]]


DAILY_HEADER = ("Day (UTC)", "Complete", "Net PnL", "Funding", "Fees", "Slippage", "Fills", "Qty (base)",
                "Notional", "Max drawdown")


def daily_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the per-UTC-day table (money in USDT); [] for a run within one day."""
    days = metrics.get("daily") or []
    if len(days) < 2:
        return []
    return [(d["day"], "yes" if d["complete"] else "partial", _usdt(d["net_pnl"]), _usdt(d["funding"]),
             _usdt(d["fees_paid"]), _usdt(d["slippage"]), str(d["n_fills"]), _num(d["traded_qty"], ".6g"),
             _num(d["traded_notional"], ".2f"), _usdt(d["max_drawdown_usdt"])) for d in days[:_MAX_TABLE_ROWS]]


def inventory_table(metrics: dict[str, Any]) -> list[Row]:
    """(metric, value, unit) rows of the inventory statistics."""
    g = lambda p: _get(metrics, p)  # noqa: E731
    return [
        ("Final position", _num(g("inventory.final_position_base"), ".6g"), "base"),
        ("Final position notional", _num(g("inventory.final_position_notional"), ".2f"), "USDT"),
        ("Max |position|", _num(g("inventory.max_abs_position_base"), ".6g"), "base"),
        ("Max |notional|", _num(g("inventory.max_abs_notional"), ".2f"), "USDT"),
        ("Avg |position| after fills", _num(g("inventory.avg_abs_position_base"), ".6g"), "base"),
        ("Avg |notional| after fills", _num(g("inventory.avg_abs_notional"), ".2f"), "USDT"),
        ("Time-weighted |position|", _num(g("inventory.twa_abs_position_base"), ".6g"), "base"),
        ("Time-weighted |notional|", _num(g("inventory.twa_abs_notional"), ".2f"), "USDT"),
    ]


MARKOUT_HEADER = ("Horizon", "Fills used", "Excluded", "Mean (bps)", "Median (bps)",
                  "p10 (bps)", "p90 (bps)", "Mean vs mid (bps)")


def markout_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the markout table, sorted by horizon (bps vs fill price unless stated)."""
    horizons = _get(metrics, "markouts.horizons") or {}
    rows: list[tuple[str, ...]] = []
    for label, e in sorted(horizons.items(), key=lambda kv: kv[1].get("horizon_ns", 0)):
        rows.append((label, str(e.get("count")), str(e.get("n_excluded")),
                     _num(e.get("mean_bps"), ".2f"), _num(e.get("median_bps"), ".2f"),
                     _num(e.get("p10_bps"), ".2f"), _num(e.get("p90_bps"), ".2f"),
                     _num(e.get("mean_vs_mid_bps"), ".2f")))
    return rows


def _text(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int) and key.endswith("_ns") and v > 10**15:
        return f"{v} ({pd.Timestamp(v, unit='ns', tz='UTC').isoformat()})"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "null" if v is None else str(v)


def _leaves(v: Any) -> int:
    return sum(_leaves(x) for x in v.values()) if isinstance(v, dict) and v else 1


def metadata_rows(metadata: dict[str, Any], headline_only: bool = False) -> list[tuple[str, str]]:
    """Flattened (dotted key, text) pairs; ``*_ns`` integers also shown as UTC time.

    ``headline_only`` keeps top-level scalars and small sections (at most
    ``_HEADLINE_MAX_LEAVES`` values, e.g. instrument, data range, versions) and leaves out bulky
    ones such as the full config, which the reports show separately.
    """
    out: list[tuple[str, str]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k in sorted(v, key=str):
                walk(f"{prefix}.{k}" if prefix else str(k), v[k])
        else:
            out.append((prefix, _text(prefix, v)))

    for k in sorted(metadata, key=str):
        if not headline_only or _leaves(metadata[k]) <= _HEADLINE_MAX_LEAVES:
            walk(str(k), metadata[k])
    return out


def extra_metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Flattened rows of metric sections other than the five standard ones (runner additions)."""
    extra = {k: v for k, v in metrics.items() if k not in _STANDARD_SECTIONS}
    return metadata_rows(extra)


def report_heading(metadata: dict[str, Any]) -> str:
    """"mmbot backtest report", or "mmbot shadow|live session report" (``metadata.session``)."""
    kind = _get(metadata, "session.kind")
    return f"mmbot {kind} session report" if kind else "mmbot backtest report"


def run_title(metadata: dict[str, Any]) -> str:
    """One line naming the run: instrument, data range, run id / config hash when present."""
    inst = metadata.get("instrument_id") or _get(metadata, "instrument.id")
    start = _get(metadata, "data_range.start") or metadata.get("start")
    end = _get(metadata, "data_range.end") or metadata.get("end")
    parts = [str(inst) if inst else "", f"{start} \u2192 {end}" if start and end else ""]
    parts += [f"{k} {metadata[k]}" for k in ("run_id", "strategy", "config_hash") if metadata.get(k)]
    return " \u00b7 ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """Markdown text of a report dict {"metadata", "metrics"}."""
    rep = to_canonical(report)
    meta, metrics = rep.get("metadata", {}), rep.get("metrics", {})
    title = run_title(meta)
    parts = [f"# {report_heading(meta)}", "", *([title, ""] if title else []),
             _md_table(("Run", "Value"), metadata_rows(meta, headline_only=True), "ll"), "",
             "## Key numbers", "",
             _md_table(("Metric", "Value", "Unit"), key_table(metrics), "lrl"), "",
             "## Markouts", "",
             "Markout = side x (mid(t+h) - fill price) / fill price x 1e4; positive means the fill "
             "was profitable at mid h later. 'Vs mid' = side x (mid(t+h) - mid before the fill) / fill price "
             "x 1e4 (adverse selection; negative = the mid moved against us), so markout = spread capture "
             "(bps) + vs mid. Fills whose horizon runs past the data are excluded.", "",
             _md_table(MARKOUT_HEADER, markout_rows(metrics), "lrrrrrrr"), "",
             "## Fill attribution", "", ATTRIBUTION_NOTE, "",
             _md_table(attribution_header(metrics), attribution_rows(metrics),
                       "l" + "r" * (len(attribution_header(metrics)) - 1)), "",
             "## Funding", "", funding_summary_text(metrics), ""]
    if funding_rows(metrics):
        parts += [_md_table(FUNDING_HEADER, funding_rows(metrics), "lrrrlr"), ""]
    if daily_rows(metrics):
        parts += ["## Daily (UTC days)", "", _md_table(DAILY_HEADER, daily_rows(metrics), "llrrrrrrrr"), ""]
    parts += ["## Inventory", "",
              _md_table(("Metric", "Value", "Unit"), inventory_table(metrics), "lrl"), ""]
    parts += report_risk.markdown_parts(metrics, _md_table)
    parts += report_sim.markdown_parts(metrics, _md_table)
    if extra_metric_rows(metrics):
        parts += ["## Other metrics", "", _md_table(("Metric", "Value"), extra_metric_rows(metrics), "ll"), ""]
    parts += ["## Run metadata (full)", "", _md_table(("Field", "Value"), metadata_rows(meta), "ll"), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;margin:0;
background:#f4f5f7}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #e3e5e8;
padding-bottom:4px} p.note{color:#555;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:14px} td,th{padding:5px 12px;border-bottom:1px solid #e7e7e7}
th{background:#f0f2f5;text-align:left} td.r,th.r{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc} .neg{color:#b2182b} .pos{color:#1a7837}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:28px;align-items:start}
.meta td:first-child{color:#555;white-space:nowrap} .meta td{font-size:13px;word-break:break-all}
.headline{display:flex;gap:16px;margin:14px 0 4px}
.card{flex:1;border:1px solid #e3e5e8;border-radius:8px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600} .card .k{font-size:12px;color:#666}
img{width:100%;height:auto;display:block;margin:6px 0} .bk-plot{margin:6px 0 14px}
.scroll{overflow-x:auto} table.small td,table.small th{font-size:12px;padding:4px 8px} details{margin-top:28px} summary{font-size:17px;font-weight:600;cursor:pointer;margin-bottom:8px}
"""


def _cell(text: str, numeric: bool) -> str:
    cls = "r" if numeric else ""
    if numeric and text.startswith("-") and text[1:2].isdigit():
        cls += " neg"
    return f'<td class="{cls.strip()}">{html.escape(text)}</td>'


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_cols: set[int],
                cls: str = "") -> str:
    head = "".join(f'<th class="{"r" if i in numeric_cols else ""}">{html.escape(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(_cell(str(c), i in numeric_cols) for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _card(label: str, value: str) -> str:
    cls = "neg" if value.startswith("-") else ""
    return (f'<div class="card"><div class="k">{html.escape(label)}</div>'
            f'<div class="v {cls}">{html.escape(value)}</div></div>')


def _sharpe_card(metrics: dict[str, Any]) -> str:
    """Annualised Sharpe only when the rule allows it; else the per-minute figure, labelled as
    such with its sample size."""
    g = lambda p: _get(metrics, p)  # noqa: E731
    if g("risk.sharpe_annualised") is not None:
        return _card(f"Sharpe annualised ({g('risk.n_days_complete')} days, ± {_num(g('risk.sharpe_annualised_se'), '.2f')})",
                     _num(g("risk.sharpe_annualised"), ".2f"))
    return _card(f"Sharpe per minute, not annualised (n = {g('risk.n_minutes')})",
                 _num(g("risk.sharpe_per_minute"), ".4f"))


def render_html(
    report: dict[str, Any],
    equity_df: pd.DataFrame,
    fills_df: pd.DataFrame,
    mid_ts_ns: np.ndarray,
    mid_px: np.ndarray,
    quote_ts_ns: np.ndarray | None = None,
    own_bid_px: np.ndarray | None = None,
    own_ask_px: np.ndarray | None = None,
) -> str:
    """HTML text of the report (see :func:`write_report_html`)."""
    rep = to_canonical(report)
    meta, metrics = rep.get("metadata", {}), rep.get("metrics", {})
    fills_sorted = fills_df.sort_values("ts_event_ns", kind="mergesort") if len(fills_df) else fills_df
    keys = key_table(metrics)
    kv = {k: v for k, v, _ in keys}
    g = lambda p: _get(metrics, p)  # noqa: E731
    cards = "".join([
        _card("Net PnL (USDT)", kv["Net PnL"]),
        _card("Fills", str(g("counts.n_fills"))),
        _card("Maker share", kv["Maker share (by fill qty)"]),
        _sharpe_card(metrics),
        _card("Max drawdown (USDT)", _usdt(g("risk.max_drawdown_usdt"))),
    ])
    title = report_heading(meta)
    sub = run_title(meta)
    extra = extra_metric_rows(metrics)
    extra_html = (f"<h2>Other metrics</h2>{_html_table(('Metric', 'Value'), extra, set(), 'meta')}"
                  if extra else "")
    fills_for_plots = fills_sorted if len(fills_sorted) else fills_df
    n_buckets = report_plots.DEFAULT_BUCKETS
    guards = _get(metrics, "risk.guards") if isinstance(_get(metrics, "risk.guards"), dict) else None
    equity_plot = report_plots.equity_figures(equity_df, n_buckets)
    start_ns = _get(meta, "data_range.start_ns")
    if start_ns is None and len(equity_df):
        start_ns = int(equity_df["ts_ns"].iloc[0])
    n_trans = len((guards or {}).get("transitions") or [])
    more = (guards or {}).get("transitions_truncated") or 0
    figs = [
        ("equity", "Equity and drawdown", "Net PnL = gross PnL (cash + position x mid) - exchange fees - slippage + "
         "funding; drawdown is net PnL minus its running peak (the run starts at 0). Click a legend entry to "
         "hide a line; wheel zooms time, box zoom both axes.", equity_plot),
        ("inventory", "Inventory", "Position after every fill (long positive), exact. Dashed: the strategy's "
         "max_position and the position guard's soft/hard position limits (+-); dotted: the guard's soft/hard "
         "notional limits as a position at the mid. Vertical bars: risk-guard transitions "
         f"({n_trans} in report.json" + (f", {more} more in audit.jsonl" if more else "") + "; hover for the reason).",
         report_plots.inventory_figure(equity_df, fills_for_plots, meta, guards, n_buckets)),
        ("quotes", "Quotes vs mid", "Raw mid and own quote samples over the whole run, reduced to the first "
         f"minimum and maximum of each of {n_buckets} time buckets (every spike survives); every fill is "
         "marked (hover: qty, cause). Zoom into any moment; resolution is one bucket.",
         report_plots.quotes_figure(equity_df, fills_for_plots, mid_ts_ns, mid_px, quote_ts_ns, own_bid_px,
                                    own_ask_px, n_buckets)),
        ("minute_pnl", "PnL per minute", "Net PnL of each complete minute from the run start (the sample of the "
         "per-minute Sharpe); time axis linked to the equity plot.",
         report_plots.minute_pnl_figure(equity_df, int(start_ns or 0), _get(meta, "data_range.end_ns"),
                                        equity_plot.children[0].x_range)),
        ("markouts", "Markout curve", "side x (mid(t+h) - fill price) / fill price x 1e4 bps, positive = the fill "
         "was good at mid h later; 'vs mid at fill' measures only the mid move after the fill.",
         report_plots.markout_figure(metrics)),
        ("causes", "Fill causes", "Fills and net contribution per fill cause (metrics.attribution; the table "
         "above has every column).", report_plots.cause_figure(metrics)),
    ]
    plot_head, plot_divs, plot_script = report_plots.html_parts([(key, fig) for key, _, _, fig in figs])
    sections = "".join(
        f"<h2>{html.escape(h)}</h2><p class=\"note\">{html.escape(note)}</p>{plot_divs[key]}"
        for key, h, note, _ in figs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>
{plot_head}</head>
<body><main>
<h1>{html.escape(title)}</h1><p class="note">{html.escape(sub)}</p>
<div class="headline">{cards}</div>
<h2>Key numbers</h2>
<div class="grid"><div>{_html_table(("Metric", "Value", "Unit"), keys, {1})}</div>
<div>{_html_table(("Metric", "Value", "Unit"), inventory_table(metrics), {1})}
<h2 style="margin-top:18px">Run</h2>
{_html_table(("Field", "Value"), metadata_rows(meta, headline_only=True), set(), "meta")}</div></div>
<h2>Markouts by horizon</h2>
<p class="note">Markout vs fill price; 'vs mid' = side x (mid(t+h) - mid before the fill) / fill price x 1e4
(adverse selection). Fills whose horizon runs past the end of the data are excluded and counted.</p>
{_html_table(MARKOUT_HEADER, markout_rows(metrics), set(range(1, 8)))}
<h2>Fill attribution</h2><p class="note">{html.escape(ATTRIBUTION_NOTE)}</p>
<div class="scroll">{_html_table(attribution_header(metrics), attribution_rows(metrics), set(range(1, len(attribution_header(metrics)))), "small")}</div>
<h2>Funding</h2><p class="note">{html.escape(funding_summary_text(metrics))}</p>
{_html_table(FUNDING_HEADER, funding_rows(metrics), {1, 2, 3, 5}) if funding_rows(metrics) else ""}
{(f"<h2>Daily (UTC days)</h2>" + _html_table(DAILY_HEADER, daily_rows(metrics), set(range(2, 10)))) if daily_rows(metrics) else ""}
{sections}
{report_risk.html_part(metrics, _html_table, html.escape)}
{report_sim.html_part(metrics, _html_table, html.escape)}
{extra_html}
<details><summary>Full run metadata ({len(metadata_rows(meta))} fields)</summary>
{_html_table(("Field", "Value"), metadata_rows(meta), set(), "meta")}</details>
</main>{plot_script}</body></html>
"""

