"""The report of a ``[portfolio]`` backtest (docs/portfolio.md, "Report").

report.json: ``metrics.instruments[<id>]`` is each instrument's whole single-instrument report
({"metadata", "metrics"}, computed from its own ledger exactly as a one-instrument run's), and
``metrics.portfolio`` the sums over the instruments (``math.fsum`` of ``SUMMED_*``, fill causes
per cause) with the per-instrument table. report.md: the table, Nautilus' cross-check, then each
instrument's report. report.html: the table and a link to each instrument's own page
(``report.<label>.html``, with its plots); portfolio plots are a later step.
"""

from __future__ import annotations

import math
from pathlib import Path

from mmbot.report import render as R
from mmbot.timeutil import ns_to_iso

# The figures the portfolio section sums over the instruments (report.json ``metrics.portfolio``).
SUMMED_PNL = ("net_pnl", "net_pnl_ex_funding", "gross_pnl", "fees_paid", "slippage", "funding",
              "nautilus_account_net_pnl")
SUMMED_COUNTS = ("n_fills", "n_orders", "traded_notional")
SUMMED_INVENTORY = ("final_position_notional", "max_abs_notional")

def portfolio_report(cfg: BacktestConfig, sections: dict, windows: dict[str, DataWindow]) -> tuple[dict, dict]:
    """(metadata, metrics) of report.json: ``metrics.instruments[iid]`` = that instrument's whole
    single-instrument report ({"metadata", "metrics"}), ``metrics.portfolio`` = the sums over the
    instruments (``SUMMED_*``; fill causes per cause) and the table of per-instrument figures."""
    import platform

    import nautilus_trader

    from mmbot.backtest.run import MMBOT_VERSION, _fill_model_params, report_clock

    per = {iid: s["metrics"] for iid, s in sections.items()}
    summed_pnl = {k: _fsum(m["pnl"].get(k) for m in per.values()) for k in SUMMED_PNL}
    summed_counts = {k: _fsum(m["counts"].get(k) for m in per.values()) for k in SUMMED_COUNTS}
    summed_counts = {k: int(v) if k.startswith("n_") and v is not None else v for k, v in summed_counts.items()}
    causes: dict[str, int] = {}
    for m in per.values():
        for cause, row in sorted(m["attribution"]["by_cause"].items()):
            causes[cause] = causes.get(cause, 0) + int(row.get("n_fills", 0))
    table = {iid: {
        "n_fills": m["counts"]["n_fills"], "net_pnl": m["pnl"]["net_pnl"], "gross_pnl": m["pnl"]["gross_pnl"],
        "fees_paid": m["pnl"]["fees_paid"], "slippage": m["pnl"]["slippage"], "funding": m["pnl"]["funding"],
        "final_position_base": m["inventory"]["final_position_base"],
        "final_position_notional": m["inventory"]["final_position_notional"],
        "max_abs_notional": m["inventory"]["max_abs_notional"],
        "fill_causes": {c: int(r.get("n_fills", 0)) for c, r in sorted(m["attribution"]["by_cause"].items())},
    } for iid, m in per.items()}
    w0 = next(iter(windows.values()))
    metadata = {
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
        "config_source": Path(cfg.source).name if cfg.source != "<defaults>" else cfg.source,
        "portfolio": {"instruments": list(cfg.portfolio.instruments)},
        "data_range": {"start_ns": w0.start_ns, "end_ns": w0.end_ns, "start": ns_to_iso(w0.start_ns),
                       "end": ns_to_iso(w0.end_ns)},
        "fill_model": cfg.venue.fill_model, "report_clock": report_clock(cfg),
        "fill_model_params": _fill_model_params(cfg), "seed": cfg.run.seed,
        "versions": {"mmbot": MMBOT_VERSION, "nautilus_trader": nautilus_trader.__version__,
                     "python": platform.python_version()},
    }
    metrics = {
        "portfolio": {"pnl": summed_pnl, "counts": summed_counts,
                      "inventory": {k: _fsum(m["inventory"].get(k) for m in per.values()) for k in SUMMED_INVENTORY},
                      "fill_causes": dict(sorted(causes.items())), "by_instrument": table,
                      "equity": portfolio_equity_metrics(cfg, sections, w0)},
        "instruments": {iid: {"metadata": s["metadata"], "metrics": s["metrics"]} for iid, s in sections.items()},
    }
    return metadata, metrics


def portfolio_equity(sections: dict):
    """The portfolio's equity grid: per row, the instruments' net PnL summed (USDT), and their
    position notionals ``position * mid`` (USDT, linear contracts) as gross ``sum |n_i|`` and net
    ``sum n_i``. None when the instruments' grids differ (their windows did not start at one
    instant)."""
    import numpy as np
    import pandas as pd

    frames = [s["_frames"][2] for s in sections.values()]
    ts = frames[0]["ts_ns"].to_numpy()
    if any(len(f) != len(ts) or not np.array_equal(f["ts_ns"].to_numpy(), ts) for f in frames[1:]):
        return None
    net = np.zeros(len(ts))
    gross = np.zeros(len(ts))
    signed = np.zeros(len(ts))
    for f in frames:  # in the config's order: the same sums every run
        net += f["net_pnl"].to_numpy()
        notional = np.nan_to_num(f["position"].to_numpy() * f["mid"].to_numpy())
        gross += np.abs(notional)
        signed += notional
    return pd.DataFrame({"ts_ns": ts, "net_pnl": net, "gross_notional": gross, "net_notional": signed})


def portfolio_equity_metrics(cfg, sections: dict, window) -> dict:
    """``metrics.portfolio.equity``: the risk figures of the summed equity grid (drawdown, minute
    PnL statistics, Sharpe per minute: mmbot/report/metrics.py ``risk_metrics`` on the portfolio's
    net PnL) and the gross / net position notional over time (max and time average over the grid;
    the instruments' own maxima need not coincide, so this max is at most the sum of theirs).
    ``available`` false when the instruments' grids differ."""
    from mmbot.report import metrics as M

    eq = portfolio_equity(sections)
    if eq is None:
        return {"available": False}
    risk = M.risk_metrics(eq, window.start_ns, window.end_ns, cfg.venue.starting_balance_usdt,
                          grid_step_ns=cfg.report.equity_interval_ms * 1_000_000)
    keep = ("n_minutes", "minute_pnl_mean", "minute_pnl_std", "sharpe_per_minute", "cvar95_minute_pnl",
            "worst_minute_pnl", "best_minute_pnl", "max_drawdown_usdt", "max_drawdown_frac", "peak_net_pnl")
    return {"available": True, **{k: risk[k] for k in keep},
            "minute_pnl_correlation": minute_pnl_correlation(sections, window.start_ns, window.end_ns),
            "final_net_pnl": float(eq["net_pnl"].iloc[-1]) if len(eq) else 0.0,
            "max_gross_notional": float(eq["gross_notional"].max()) if len(eq) else 0.0,
            "twa_gross_notional": float(eq["gross_notional"].mean()) if len(eq) else 0.0,
            "max_abs_net_notional": float(eq["net_notional"].abs().max()) if len(eq) else 0.0}


def minute_pnl_correlation(sections: dict, start_ns: int, end_ns: int) -> dict:
    """Pearson correlation of the instruments' per-minute net PnL (USDT per complete minute from
    the window start, mmbot/report/metrics.py ``per_minute_pnl``), pairwise: {iid: {iid: r}};
    r is None when either series has no variance or fewer than 3 minutes (a correlation of two
    points is +/-1 by construction). ``n_minutes``: the sample size."""
    import numpy as np

    from mmbot.report import metrics as M

    series = {iid: M.per_minute_pnl(s["_frames"][2], start_ns, end_ns)["pnl"].to_numpy(dtype=np.float64)
              for iid, s in sections.items()}
    n = min((len(v) for v in series.values()), default=0)
    out: dict = {"n_minutes": int(n), "pairs": {}}
    for a, x in series.items():
        row = {}
        for b, y in series.items():
            x_, y_ = x[:n], y[:n]
            ok = n >= 3 and float(np.std(x_)) > 0 and float(np.std(y_)) > 0
            row[b] = float(np.corrcoef(x_, y_)[0, 1]) if ok else None
        out["pairs"][a] = row
    return out


def _fsum(values) -> float | None:
    vals = list(values)
    if any(v is None for v in vals):
        return None
    return math.fsum(float(v) for v in vals)


PORTFOLIO_HEADER = ("Instrument", "Fills", "Net PnL", "Gross PnL", "Fees", "Slippage", "Funding",
                    "Final position", "Final notional", "Max |notional|", "Causes")


def _rows(report: dict) -> list[tuple[str, ...]]:
    p = report["metrics"]["portfolio"]
    fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"  # noqa: E731
    rows = []
    for iid, r in p["by_instrument"].items():
        rows.append((iid, str(r["n_fills"]), fmt(r["net_pnl"]), fmt(r["gross_pnl"]), fmt(r["fees_paid"]),
                     fmt(r["slippage"]), fmt(r["funding"]), f"{r['final_position_base']:g}",
                     fmt(r["final_position_notional"]), fmt(r["max_abs_notional"]),
                     ", ".join(f"{c} {n}" for c, n in r["fill_causes"].items() if n)))
    pnl, counts, inv = p["pnl"], p["counts"], p["inventory"]
    rows.append(("portfolio (sum)", str(counts["n_fills"]), fmt(pnl["net_pnl"]), fmt(pnl["gross_pnl"]),
                 fmt(pnl["fees_paid"]), fmt(pnl["slippage"]), fmt(pnl["funding"]), "",
                 fmt(inv["final_position_notional"]), fmt(inv["max_abs_notional"]),
                 ", ".join(f"{c} {n}" for c, n in p["fill_causes"].items() if n)))
    return rows


def _equity_lines(eq: dict) -> list[str]:
    if not eq.get("available"):
        return []
    fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"  # noqa: E731
    return ["Portfolio equity (the instruments' net PnL summed on the equity grid): max drawdown "
            f"{fmt(eq['max_drawdown_usdt'])} USDT, worst minute {fmt(eq['worst_minute_pnl'])} USDT, max gross "
            f"position notional {fmt(eq['max_gross_notional'])} USDT (time average {fmt(eq['twa_gross_notional'])}), "
            f"max |net| {fmt(eq['max_abs_net_notional'])} USDT.", ""]


def _allocator_lines(alloc: dict | None) -> list[str]:
    """report.md: the allocator's intervals (weights, budgets, blacklist) and the final scoreboard."""
    if not alloc:
        return []
    fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"  # noqa: E731
    names = list(alloc["scoreboard"]) or list(alloc["final_weights"])
    rows = [(ns_to_iso(i["ts_ns"]), "yes" if i["changed"] else "held",
             *(f"{i['weights'][k]:.3f} ({fmt(i['budgets_usdt'][k])})" for k in names),
             ", ".join(i["blacklisted"]) or "-") for i in alloc["intervals"]]
    board = [(k, str(s["fills"]), fmt(s["pnl_bps"]), fmt(s["fill_rate_per_min"]), fmt(s["adverse_selection_bps"]),
              fmt(s["queue_edge_bps"]), fmt(s["vol_bps"])) for k, s in alloc["scoreboard"].items()]
    return [f"## Allocator ({alloc['method']}, every {alloc['interval_s']:g} s, "
            f"{alloc['total_budget_usdt']:,.0f} USDT)", "",
            f"{alloc['n_changes']} changes in {alloc['n_intervals']} intervals; weight (budget, USDT) per instrument.", "",
            R._md_table(("Time", "Changed", *names, "Blacklisted"), rows, "ll" + "r" * len(names) + "l"), "",
            R._md_table(("Instrument", "Fills", "PnL (bps)", "Fills/min", "Adverse sel. (bps)", "Queue edge (bps)",
                         "Vol (bps)"), board, "lrrrrrr") if board else "", ""]


def render_markdown(report: dict) -> str:
    """report.md: the portfolio table (each instrument and the sum), Nautilus' cross-check, then
    each instrument's whole single-instrument report with its headings one level down."""
    meta = report["metadata"]
    p = report["metrics"]["portfolio"]
    parts = ["# mmbot portfolio backtest report", "",
             f"{', '.join(meta['portfolio']['instruments'])} \u00b7 {meta['data_range']['start']} \u2192 "
             f"{meta['data_range']['end']} \u00b7 config_hash {meta['config_hash']}", "",
             "## Portfolio", "",
             "Each row is that instrument's section below; the last row is their sum (USDT). The "
             "max |notional| sum is an upper bound of the portfolio's gross exposure (the maxima need not "
             "coincide).", "",
             R._md_table(PORTFOLIO_HEADER, _rows(report), "lrrrrrrrrrl"), "",
             f"Nautilus cross-check (sum of each instrument's positions' realized + unrealized PnL, no funding): "
             f"{p['pnl']['nautilus_account_net_pnl']:,.6f} USDT; ledger net PnL excluding funding: "
             f"{p['pnl']['net_pnl_ex_funding']:,.6f} USDT.", "", *_equity_lines(p.get("equity", {})),
             *_allocator_lines(p.get("allocator"))]
    for iid, sec in report["metrics"]["instruments"].items():
        text = R.render_markdown(sec)
        lines = [("#" + ln if ln.startswith("#") else ln) for ln in text.splitlines()]
        lines[0] = f"## {iid}"
        parts += [*lines, ""]
    return "\n".join(parts)


def portfolio_plots(report: dict, sections: dict, limits: dict) -> list[tuple[str, object]]:
    """The portfolio page's bokeh figures (mmbot/report/plots.py): net PnL by instrument and
    their sum; gross/net exposure against ``[risk.portfolio]``'s limits (when the grids line up);
    the allocation over time (with ``[portfolio.allocator]``). X axes linked."""
    import numpy as np

    from mmbot.report import plots as PL

    curves = {iid: (s["_frames"][2]["ts_ns"].to_numpy(dtype=np.int64), s["_frames"][2]["net_pnl"].to_numpy(dtype=np.float64))
              for iid, s in sections.items()}
    eq = portfolio_equity(sections)
    total = None if eq is None else (eq["ts_ns"].to_numpy(dtype=np.int64), eq["net_pnl"].to_numpy(dtype=np.float64))
    pnl = PL.portfolio_pnl_figure(curves, total)
    plots: list[tuple[str, object]] = [("pnl", pnl)]
    if eq is not None:
        plots.append(("exposure", PL.portfolio_exposure_figure(
            eq["ts_ns"].to_numpy(dtype=np.int64), eq["gross_notional"].to_numpy(dtype=np.float64),
            eq["net_notional"].to_numpy(dtype=np.float64), limits, x_range=pnl.x_range)))
    alloc = report["metrics"]["portfolio"].get("allocator")
    if alloc and alloc.get("intervals"):
        end_ns = max(int(c[0][-1]) for c in curves.values() if len(c[0])) if curves else 0
        plots.append(("allocation", PL.allocation_figure(alloc["intervals"], end_ns, x_range=pnl.x_range)))
    return plots


def _correlation_html(corr: dict | None) -> str:
    import html

    if not corr or not corr.get("pairs"):
        return ""
    names = list(corr["pairs"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("", *names))
    rows = "".join("<tr><td>" + html.escape(a) + "</td>" + "".join(
        f"<td>{'-' if corr['pairs'][a][b] is None else format(corr['pairs'][a][b], '.2f')}</td>" for b in names)
        + "</tr>" for a in names)
    return (f"<h2>Correlation of per-minute net PnL ({corr['n_minutes']} complete minutes)</h2>"
            f"<div class=\"scroll\"><table><tr>{head}</tr>{rows}</table></div>")


def render_html(report: dict, sections: dict | None = None, limits: dict | None = None) -> str:
    """report.html of a portfolio: the portfolio table, the portfolio plots (net PnL by
    instrument, exposure against the ``[risk.portfolio]`` limits, the allocation; when
    ``sections`` is given), the correlation of per-minute PnL, the allocation table, and links to
    each instrument's own page (``report.<label>.html``, the single-instrument report with its
    plots)."""
    import html

    from mmbot.builders import instrument_label

    meta = report["metadata"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in PORTFOLIO_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _rows(report))
    links = "".join(f'<li><a href="report.{html.escape(instrument_label(i))}.html">{html.escape(i)}</a></li>'
                    for i in meta["portfolio"]["instruments"])
    alloc = report["metrics"]["portfolio"].get("allocator")
    alloc_html = ""
    if alloc:  # the allocation per interval (weights, budgets, blacklist); the scoreboard is in report.md/json
        names = list(alloc["final_weights"])
        ahead = "".join(f"<th>{html.escape(h)}</th>" for h in ("Time", "Changed", *names, "Blacklisted"))
        arows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (
                ns_to_iso(i["ts_ns"]), "yes" if i["changed"] else "held",
                *(f"{i['weights'][k]:.3f} ({i['budgets_usdt'][k]:,.2f} USDT)" for k in names),
                ", ".join(i["blacklisted"]) or "-")) + "</tr>" for i in alloc["intervals"])
        alloc_html = (f"<h2>Allocator ({html.escape(alloc['method'])}, every {alloc['interval_s']:g} s)</h2>"
                      f"<div class=\"scroll\"><table><tr>{ahead}</tr>{arows}</table></div>")
    plot_head = plot_script = plot_divs = ""
    if sections:
        from mmbot.report import plots as PL

        plot_head, divs, plot_script = PL.html_parts(portfolio_plots(report, sections, limits or {}))
        plot_divs = "<h2>Plots</h2>" + "".join(divs.values())
    corr_html = _correlation_html((report["metrics"]["portfolio"].get("equity") or {}).get("minute_pnl_correlation"))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>mmbot portfolio backtest report</title>"
            f"{plot_head}"
            f"<style>{R._CSS}</style></head><body><main><h1>mmbot portfolio backtest report</h1>"
            f"<p class=\"note\">{html.escape(meta['data_range']['start'])} \u2192 "
            f"{html.escape(meta['data_range']['end'])} \u00b7 config_hash {html.escape(meta['config_hash'])}</p>"
            f"<h2>Portfolio</h2><div class=\"scroll\"><table><tr>{head}</tr>{body}</table></div>"
            f"{plot_divs}{corr_html}{alloc_html}"
            f"<h2>Instruments</h2><ul>{links}</ul></main>{plot_script}</body></html>\n")


def write_portfolio_files(folder: Path, cfg, metadata: dict, metrics: dict, sections: dict) -> dict:
    """A portfolio run folder's files (backtest and live/shadow sessions alike): fills/orders/
    equity parquet with an ``instrument_id`` column, report.json, report.md and, with
    ``report.html``, the portfolio page (its plots with ``[risk.portfolio]``'s limits) and one
    ``report.<label>.html`` per instrument. Returns the built report."""
    import numpy as np
    import pandas as pd

    from mmbot.builders import instrument_label

    frames = {name: [] for name in ("fills", "orders", "equity")}
    for iid, s in sections.items():
        for name, df in zip(("fills", "orders", "equity"), s["_frames"][:3]):
            frames[name].append(df.assign(instrument_id=iid))
    for name, dfs in frames.items():
        R.write_parquet_atomic(folder / f"{name}.parquet", pd.concat(dfs, ignore_index=True))
    R.write_report_json(folder, metadata, metrics)
    report = R.build_report(metadata, metrics)
    R.write_bytes_atomic(folder / "report.md", render_markdown(report).encode("utf-8"))
    if cfg.report.html:
        limits = dict(cfg.risk.guards.get("portfolio") or {}) if cfg.risk is not None and cfg.risk.enabled else {}
        R.write_bytes_atomic(folder / "report.html", render_html(report, sections, limits).encode("utf-8"))
        for iid, s in sections.items():
            fills, _orders, equity, mid_ts, mid_px, grid, own_bid, own_ask = s["_frames"]
            page = R.render_html(R.build_report(s["metadata"], s["metrics"]), equity, fills, np.asarray(mid_ts),
                                 np.asarray(mid_px), grid, own_bid, own_ask)
            R.write_bytes_atomic(folder / f"report.{instrument_label(iid)}.html", page.encode("utf-8"))
    return report
