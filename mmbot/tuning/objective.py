"""Objectives and the window summaries they are computed from.

A *summary* describes one backtest window or several windows stitched end to end:

- ``minutes``: complete minutes (each window's minutes are aligned to its own start, a trailing
  partial minute is dropped; see :func:`mmbot.report.metrics.per_minute_pnl`);
- ``minute_pnl_mean`` (USDT/minute): mean of the per-minute net PnL over those minutes; this is
  the "mean(net PnL)" of the default objective;
- ``cvar95_minute_pnl`` (USDT/minute, <= 0 for a loss): mean of the worst 5 % of those minutes
  (at least the single worst one, :func:`mmbot.report.metrics.cvar`);
- ``sharpe_per_minute``: mean / sample std of per-minute net PnL (dimensionless);
- ``net_pnl`` (USDT), ``traded_notional`` (USDT), ``traded_qty`` (base units), ``twa_abs_notional`` (USDT, time-weighted
  mean |inventory| x mid), ``max_drawdown_usdt`` (USDT, >= 0, on the stitched equity);
- counts: ``n_fills``, ``n_orders``, ``n_filled_orders``, ``hit_rate`` (filled orders / orders),
  ``maker_share`` (maker qty / traded qty).

Objectives (all maximised; NaN when undefined, e.g. no fills):

- ``mean_minus_cvar``: minute_pnl_mean - lambda * |cvar95_minute_pnl|  (USDT/minute);
- ``sharpe``: sharpe_per_minute;
- ``net_bps_turnover``: net_pnl / traded_notional * 1e4  (bps of turnover);
- ``pnl_per_inventory``: net_pnl / twa_abs_notional  (USDT earned per USDT of average inventory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbot.report import metrics as M


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) else math.nan


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


def summary_from_metrics(metrics: dict[str, Any], minute_pnl: np.ndarray | None = None) -> dict[str, Any]:
    """Summary of one window from a backtest report's ``metrics`` (see module docstring); a
    portfolio report (``metrics.portfolio``): :func:`portfolio_summary`.

    ``minute_pnl`` (USDT per complete minute) is kept for stitching when given.
    """
    if "portfolio" in metrics and "instruments" in metrics:
        return portfolio_summary(metrics, minute_pnl)
    pnl, counts, risk, inv = metrics["pnl"], metrics["counts"], metrics["risk"], metrics["inventory"]
    out = {
        "minutes": int(risk["n_minutes"]),
        "minute_pnl_mean": _f(risk["minute_pnl_mean"]),
        "cvar95_minute_pnl": _f(risk["cvar95_minute_pnl"]),
        "sharpe_per_minute": _f(risk["sharpe_per_minute"]),
        "net_pnl": _f(pnl["net_pnl"]),
        "traded_notional": _f(counts["traded_notional"]),
        "traded_qty": _f(counts["traded_qty"]),
        "twa_abs_notional": _f(inv["twa_abs_notional"]),
        "max_drawdown_usdt": _f(risk["max_drawdown_usdt"]),
        "n_fills": int(counts["n_fills"]),
        "n_orders": int(counts["n_orders"]),
        "n_filled_orders": int(counts["n_filled_orders"]),
        "hit_rate": _f(counts["fill_ratio"]),
        "maker_share": _f(counts["maker_share"]),
    }
    if minute_pnl is not None:
        out["_minute_pnl"] = np.asarray(minute_pnl, dtype=np.float64)
    return out


def portfolio_summary(metrics: dict[str, Any], minute_pnl: np.ndarray | None = None) -> dict[str, Any]:
    """Summary of a portfolio window (mmbot/backtest/portfolio.py report): the per-minute figures,
    Sharpe, drawdown and time-weighted |inventory| of the portfolio's summed equity
    (``metrics.portfolio.equity``: per-minute net PnL of the instruments' net PnL summed per
    instant; ``twa_abs_notional`` = time-weighted gross notional sum_i |pos_i x mid_i|, USDT);
    PnL, notional and counts summed over the instruments; ``hit_rate`` = filled orders / orders
    over all; ``maker_share`` = the instruments' maker shares weighted by traded notional (USDT:
    base quantities of different coins do not add up, so ``traded_qty`` is NaN)."""
    per = [summary_from_metrics(metrics["instruments"][iid]["metrics"]) for iid in sorted(metrics["instruments"])]
    eq = metrics["portfolio"].get("equity") or {}
    ok = bool(eq.get("available"))

    def e(key: str) -> float:
        return _f(eq.get(key)) if ok else math.nan

    notional = [w["traded_notional"] for w in per]
    maker = M._fsum([w["maker_share"] * n for w, n in zip(per, notional, strict=True) if math.isfinite(w["maker_share"])])
    n_orders = sum(w["n_orders"] for w in per)
    out = {
        "minutes": int(eq["n_minutes"]) if ok else 0,
        "minute_pnl_mean": e("minute_pnl_mean"),
        "cvar95_minute_pnl": e("cvar95_minute_pnl"),
        "sharpe_per_minute": e("sharpe_per_minute"),
        "net_pnl": M._fsum([w["net_pnl"] for w in per]),
        "traded_notional": M._fsum(notional),
        "traded_qty": math.nan,
        "twa_abs_notional": e("twa_gross_notional"),
        "max_drawdown_usdt": e("max_drawdown_usdt"),
        "n_fills": sum(w["n_fills"] for w in per),
        "n_orders": n_orders,
        "n_filled_orders": sum(w["n_filled_orders"] for w in per),
        "hit_rate": _ratio(sum(w["n_filled_orders"] for w in per), n_orders),
        "maker_share": _ratio(maker, M._fsum(notional)),
        "_maker_weight": M._fsum(notional),
    }
    if minute_pnl is not None:
        out["_minute_pnl"] = np.asarray(minute_pnl, dtype=np.float64)
    return out


def by_instrument(metrics: dict[str, Any], kind: str, cvar_lambda: float = 0.5) -> dict[str, Any]:
    """A portfolio window's per-instrument figures: ``{iid: {"objective", "summary"}}`` (each
    instrument's section of the report, scored like a single-instrument window)."""
    out = {}
    for iid in sorted(metrics.get("instruments", {})):
        s = summary_from_metrics(metrics["instruments"][iid]["metrics"])
        out[iid] = {"objective": objective_value(s, kind, cvar_lambda), "summary": public(s)}
    return out


def stitch(windows: Sequence[dict[str, Any]], equity_net: Sequence[np.ndarray]) -> dict[str, Any]:
    """Summary of several windows run one after another (test windows of a walk-forward).

    ``windows`` are :func:`summary_from_metrics` results with ``_minute_pnl``; ``equity_net`` are
    each window's net-PnL path (USDT, from 0). Per-minute statistics use all windows' minutes
    together; the drawdown is that of the stitched path (each window starts at the previous end).
    """
    minutes = np.concatenate([w["_minute_pnl"] for w in windows]) if windows else np.empty(0)
    paths, offset = [], 0.0
    for net in equity_net:
        net = np.nan_to_num(np.asarray(net, dtype=np.float64), nan=0.0)
        paths.append(net + offset)
        offset += float(net[-1]) if len(net) else 0.0
    stitched = np.concatenate(paths) if paths else np.empty(0)
    qty = [w["traded_qty"] for w in windows]
    # maker share over all windows, weighted by traded quantity (a portfolio: by traded notional)
    weight = [w.get("_maker_weight", w["traded_qty"]) for w in windows]
    maker = M._fsum([w["maker_share"] * q for w, q in zip(windows, weight, strict=True) if math.isfinite(w["maker_share"])])
    total_minutes = sum(w["minutes"] for w in windows)
    n_orders = sum(w["n_orders"] for w in windows)
    raw_sharpe, _ = M.sharpe_ratio(minutes)
    return {
        "minutes": int(len(minutes)),
        "minute_pnl_mean": M._mean(minutes),
        "cvar95_minute_pnl": M.cvar(minutes, 0.95),
        "sharpe_per_minute": raw_sharpe,
        "net_pnl": M._fsum([w["net_pnl"] for w in windows]),
        "traded_notional": M._fsum([w["traded_notional"] for w in windows]),
        "traded_qty": M._fsum(qty),
        "twa_abs_notional": _ratio(M._fsum([w["twa_abs_notional"] * w["minutes"] for w in windows]), total_minutes),
        "max_drawdown_usdt": M.max_drawdown(stitched)["max_drawdown_usdt"],
        "n_fills": sum(w["n_fills"] for w in windows),
        "n_orders": n_orders,
        "n_filled_orders": sum(w["n_filled_orders"] for w in windows),
        "hit_rate": _ratio(sum(w["n_filled_orders"] for w in windows), n_orders),
        "maker_share": _ratio(maker, M._fsum(weight)),  # maker qty / traded qty over all windows
        **({"_maker_weight": M._fsum(weight)} if any("_maker_weight" in w for w in windows) else {}),
    }


def objective_value(summary: dict[str, Any], kind: str, cvar_lambda: float = 0.5) -> float:
    """The objective ``kind`` of a summary (see module docstring); NaN when undefined."""
    if kind == "mean_minus_cvar":
        mean, cv = summary["minute_pnl_mean"], summary["cvar95_minute_pnl"]
        return mean - cvar_lambda * abs(cv) if math.isfinite(mean) and math.isfinite(cv) else math.nan
    if kind == "sharpe":
        return summary["sharpe_per_minute"]
    if kind == "net_bps_turnover":
        return _ratio(summary["net_pnl"], summary["traded_notional"]) * 1e4
    if kind == "pnl_per_inventory":
        return _ratio(summary["net_pnl"], summary["twa_abs_notional"])
    raise ValueError(f"unknown objective {kind!r}")


def public(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its private arrays (for reports)."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}
