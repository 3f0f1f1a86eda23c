"""Walk-forward outputs: ``report.json`` and ``champion.json`` (canonical, deterministic: no wall
clock, no absolute paths, no execution settings), ``splits/NNN.json``, ``trials.csv``,
``oos_equity.parquet`` (stitched out-of-sample equity), ``REPORT.md`` and ``report.html``.

Money is USDT, per-minute figures USDT/minute (see mmbot/tuning/objective.py).
"""

from __future__ import annotations

import csv
import html
import io
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmbot.report import mpl as MPL
from mmbot.report import render as R
from mmbot.canonical_json import dumps_canonical, to_canonical, write_bytes_atomic
from mmbot.paths import REPO_ROOT
from mmbot.timeutil import ns_to_iso
from mmbot.tuning import objective as O
from mmbot.tuning import space as S
from mmbot.tuning import analysis as A
from mmbot.tuning.analysis import analyse
from mmbot.tuning.gates import evaluate_gates, failed
from mmbot.tuning.runner import SplitOutcome, WfOutcome, portfolio_param_overrides, risk_guards

EXECUTION_KEYS = ("workers", "storage", "ray_address")  # how, not what: left out of report.json


def code_version() -> dict[str, Any]:
    """mmbot/nautilus/optuna/python versions and the git commit of the source tree (if any)."""
    import nautilus_trader
    import optuna

    from mmbot.backtest.run import MMBOT_VERSION

    commit, dirty = "unknown", None
    if (REPO_ROOT / ".git").exists():
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                    text=True, check=True, timeout=10).stdout.strip()
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                        capture_output=True, text=True, check=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return {"mmbot": MMBOT_VERSION, "git_commit": commit, "git_dirty": dirty,
            "nautilus_trader": nautilus_trader.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def _range(lo: int, hi: int) -> dict[str, Any]:
    return {"start_ns": lo, "end_ns": hi, "start": ns_to_iso(lo), "end": ns_to_iso(hi)}


def split_doc(o: SplitOutcome) -> dict[str, Any]:
    """Everything about one split (the content of ``splits/NNN.json``)."""
    d = o.split.to_dict()
    d["status"] = "skipped" if o.skip_reason else "ok"
    d["reason"] = o.skip_reason
    d["trials"] = o.trials
    d["champion"] = o.champion
    if o.oos is not None and o.oos.get("metrics") is not None:
        d["out_of_sample"] = {"objective": o.oos["objective"], "summary": O.public(o.oos["summary"]),
                              "data_range": o.oos["data_range"], "metrics": o.oos["metrics"]}
        if "by_instrument" in o.oos:
            d["out_of_sample"]["by_instrument"] = _by_instrument(o.oos["by_instrument"])
    else:
        d["out_of_sample"] = None if o.oos is None else {"error": o.oos["error"]}
    return d


def _by_instrument(rows: dict) -> dict:
    return {iid: {"objective": r["objective"], "summary": O.public(r["summary"])} for iid, r in sorted(rows.items())}


def _used(outcome: WfOutcome) -> list[SplitOutcome]:
    return [o for o in outcome.splits if not o.skip_reason and o.oos and o.oos.get("metrics") is not None]


def portfolio_section(outcome: WfOutcome) -> dict[str, Any]:
    """report.json ``portfolio`` (a [portfolio] run only): the instruments, how parameters were
    tuned, and each instrument's walk-forward out-of-sample figures (its test-window sections
    stitched like the portfolio's: per-minute series pooled, equity chained)."""
    plan, wf = outcome.plan, outcome.plan.wf
    used = _used(outcome)
    by = {}
    for iid in plan.instruments:
        rows = [o.oos["by_instrument"][iid]["summary"] for o in used]
        paths = [o.oos["instruments"][iid]["equity_net"] for o in used]
        st = O.stitch(rows, paths) if rows else None
        by[iid] = {"objective": O.objective_value(st, wf.objective.kind, wf.objective.cvar_lambda) if st else None,
                   "summary": O.public(st) if st else None}
    return {"instruments": list(plan.instruments), "params": plan.mode,
            "parameter_names": ("<instrument id>:<key>, each in its instrument's portfolio.overrides table"
                                if plan.mode == "per_symbol" else "<key>, one value for every instrument"),
            "out_of_sample_by_instrument": by}


def parameter_stability(splits: list[SplitOutcome]) -> dict[str, Any]:
    """Per searched parameter: each used split's champion value, and for numbers mean, std
    (population), min, max and std/|mean|; for choices the count of each value."""
    used = [o for o in splits if not o.skip_reason and o.champion]
    keys = sorted({k for o in used for k in o.champion["params"]})
    out = {}
    for key in keys:
        values = [o.champion["params"].get(key) for o in used]
        entry: dict[str, Any] = {"by_split": {str(o.split.index): v for o, v in zip(used, values, strict=True)}}
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            x = np.asarray(values, dtype=np.float64)
            mean = float(np.mean(x))
            entry |= {"mean": mean, "std": float(np.std(x)), "min": float(x.min()), "max": float(x.max()),
                      "rel_std": float(np.std(x)) / abs(mean) if mean else None}
        else:
            entry["counts"] = {str(v): values.count(v) for v in sorted(set(values), key=str)}
        out[key] = entry
    return out


def stitched_equity(splits: list[SplitOutcome]) -> pd.DataFrame:
    """Out-of-sample equity of the used splits end to end: ``ts_ns``, ``split``, ``net_pnl_window``
    (USDT since the window's start) and ``net_pnl`` (USDT, stitched, each window starting where
    the previous one ended)."""
    frames, offset = [], 0.0
    for o in splits:
        if o.skip_reason or not o.oos or o.oos.get("metrics") is None:
            continue
        net = np.nan_to_num(np.asarray(o.oos["equity_net"], dtype=np.float64), nan=0.0)
        frames.append(pd.DataFrame({"ts_ns": np.asarray(o.oos["equity_ts_ns"], dtype=np.int64),
                                    "split": np.full(len(net), o.split.index, dtype=np.int64),
                                    "net_pnl_window": net, "net_pnl": net + offset}))
        offset += float(net[-1]) if len(net) else 0.0
    if not frames:
        return pd.DataFrame({"ts_ns": np.empty(0, np.int64), "split": np.empty(0, np.int64),
                             "net_pnl_window": np.empty(0), "net_pnl": np.empty(0)})
    return pd.concat(frames, ignore_index=True)


def build(outcome: WfOutcome) -> tuple[dict, dict | None]:
    """(report document, champion document or None when no split has an out-of-sample result)."""
    plan, wf = outcome.plan, outcome.plan.wf
    used = [o for o in outcome.splits if not o.skip_reason and o.oos and o.oos.get("metrics") is not None]
    wf_oos = O.stitch([o.oos["summary"] for o in used], [o.oos["equity_net"] for o in used]) if used else None
    wf_obj = O.objective_value(wf_oos, wf.objective.kind, wf.objective.cvar_lambda) if wf_oos else math.nan
    champ = used[-1] if used else None  # the most recent split's champion is the one to deploy
    if wf.gates.scope == "champion" and champ is not None:
        gate_summary = O.public(champ.oos["summary"])
    else:
        gate_summary = wf_oos or {}
    verdicts = evaluate_gates(wf.gates, gate_summary) if used else []
    if not used:
        verdicts = [{"gate": "out_of_sample_result", "metric": "splits used", "op": ">=", "threshold": 1,
                     "value": 0, "passed": False}]
    gates = {"scope": wf.gates.scope, "verdicts": verdicts, "failed": failed(verdicts), "passed": not failed(verdicts)}
    settings = {k: v for k, v in msgspec.to_builtins(wf).items() if k not in EXECUTION_KEYS}
    if not plan.instruments:  # a [portfolio] key: one instrument's report stays as it was
        settings.pop("portfolio_params", None)
    versions = code_version()
    data_range = _range(plan.start_ns, plan.end_ns)
    report = {
        "wf": settings,
        "wf_hash": plan.wf_hash,
        "config_hash": plan.cfg.config_hash(),
        "config_source": plan.config_path.name,
        "instrument": plan.instrument,
        "data_range": data_range,
        "splits": [_split_row(o) for o in outcome.splits],
        "n_splits": len(outcome.splits),
        "n_splits_used": len(used),
        "skipped": [{"split": o.split.index, "reason": o.skip_reason} for o in outcome.splits if o.skip_reason],
        "parameter_stability": parameter_stability(outcome.splits),
        "out_of_sample": {"windows": len(used), "objective": wf_obj,
                          "summary": O.public(wf_oos) if wf_oos else None},
        "champion": None if champ is None else {"split": champ.split.index, "trial": champ.champion["number"],
                                                 "parameters": champ.champion["params"]},
        "gates": gates,
        "risk_guards": risk_guards(plan.cfg),
        "analysis": analyse(outcome.splits, wf.space),
        "versions": versions,
    }
    if plan.instruments:
        report["portfolio"] = portfolio_section(outcome)
    champion = None
    if champ is not None:
        champion = {
            "parameters": champ.champion["params"],
            "overrides": (portfolio_param_overrides(plan, champ.champion["params"]) if plan.instruments
                          else S.overrides(champ.champion["params"])),
            "selected": {"split": champ.split.index, "trial": champ.champion["number"],
                         "train": champ.split.to_dict()["train"],
                         "in_sample_objective": champ.champion["in_sample_objective"]},
            "out_of_sample": {"test": champ.split.to_dict()["test"], "objective": champ.oos["objective"],
                              "summary": O.public(champ.oos["summary"]), "metrics": champ.oos["metrics"]},
            "walk_forward_out_of_sample": {"windows": len(used), "objective": wf_obj, "summary": O.public(wf_oos)},
            "objective": msgspec.to_builtins(wf.objective),
            "method": wf.method,
            "seed": wf.seed,
            "trials_per_split": wf.trials,
            "config_hash": plan.cfg.config_hash(),
            "config_source": plan.config_path.name,
            "wf_hash": plan.wf_hash,
            "instrument": plan.instrument,
            "data_range": data_range,
            "code_version": versions,
            "gates": gates,
            "risk_guards": risk_guards(plan.cfg),
        }
        if plan.instruments:
            champion["portfolio"] = {"instruments": list(plan.instruments), "params": plan.mode}
            champion["out_of_sample"]["by_instrument"] = _by_instrument(champ.oos["by_instrument"])
            champion["walk_forward_out_of_sample"]["by_instrument"] = report["portfolio"]["out_of_sample_by_instrument"]
            if plan.mode == "per_symbol":
                champion["selected"]["trials"] = champ.champion["trials"]
                champion["selected"]["by_instrument"] = _unit_champions(champ)
    return to_canonical(report), None if champion is None else to_canonical(champion)


def _split_row(o: SplitOutcome) -> dict[str, Any]:
    d = o.split.to_dict()
    row = {"index": o.split.index, "train": d["train"], "test": d["test"],
           "status": "skipped" if o.skip_reason else "ok", "reason": o.skip_reason,
           "n_trials": len(o.trials), "champion_trial": o.champion["number"] if o.champion else None,
           "champion_params": o.champion["params"] if o.champion else None,
           "in_sample_objective": o.champion["in_sample_objective"] if o.champion else None,
           "out_of_sample": None}
    if o.units:  # per_symbol: each symbol's study's champion, scored alone in-sample
        row["champion_by_instrument"] = _unit_champions(o)
    elif o.champion and (o.champion.get("in_sample") or {}).get("by_instrument"):  # shared: its instruments' shares
        row["in_sample_by_instrument"] = {iid: r["objective"] for iid, r in o.champion["in_sample"]["by_instrument"].items()}
    if o.oos and o.oos.get("metrics") is not None:
        row["out_of_sample"] = {"objective": o.oos["objective"], "summary": O.public(o.oos["summary"])}
        if "by_instrument" in o.oos:
            row["out_of_sample"]["by_instrument"] = _by_instrument(o.oos["by_instrument"])
        if o.oos.get("sizing"):  # the test run's USDT -> base conversion: what mmbot promote writes live
            row["out_of_sample"]["sizing"] = o.oos["sizing"]
    return row


def _unit_champions(o: SplitOutcome) -> dict[str, Any]:
    return {u: None if r["champion"] is None else
            {"trial": r["champion"]["number"], "params": r["champion"]["params"],
             "in_sample_objective": r["champion"]["in_sample_objective"]} for u, r in sorted(o.units.items())}


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def trials_csv(outcome: WfOutcome) -> bytes:
    """All trials of all splits, one row each (params as columns ``p:<key>``)."""
    keys = sorted(outcome.plan.wf.space)
    per_symbol = outcome.plan.mode == "per_symbol"  # one study per (symbol x split): say whose trial
    cols = ["split", *(["instrument"] if per_symbol else []), "trial", "state", "in_sample_objective", "n_fills",
            "net_pnl", "note", *[f"p:{k}" for k in keys]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for o in outcome.splits:
        for t in o.trials:
            summ = t["in_sample"] or {}
            w.writerow([o.split.index, *([t["instrument"]] if per_symbol else []), t["number"], t["state"], _fmt(t["in_sample_objective"]),
                        summ.get("n_fills", ""), _fmt(summ.get("net_pnl")), t["note"] or "",
                        *[_fmt(t["params"].get(k)) for k in keys]])
    return buf.getvalue().encode()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(to_canonical(v))
    return str(v)


def write_outputs(out_dir: Path, outcome: WfOutcome) -> tuple[dict, dict | None]:
    """Write every output into ``out_dir`` (each file atomically); returns (report, champion)."""
    out_dir = Path(out_dir)
    report, champion = build(outcome)
    for o in outcome.splits:
        write_bytes_atomic(out_dir / "splits" / f"{o.split.index:03d}.json", dumps_canonical(split_doc(o)))
    write_bytes_atomic(out_dir / "trials.csv", trials_csv(outcome))
    equity = stitched_equity(outcome.splits)
    R.write_parquet_atomic(out_dir / "oos_equity.parquet", equity)
    write_bytes_atomic(out_dir / "report.json", dumps_canonical(report))
    if champion is not None:
        write_bytes_atomic(out_dir / "champion.json", dumps_canonical(champion))
    elif (out_dir / "champion.json").exists():
        (out_dir / "champion.json").unlink()
    write_bytes_atomic(out_dir / "REPORT.md", render_markdown(report).encode())
    write_bytes_atomic(out_dir / "report.html", render_html(report, equity, outcome.plan.wf.space).encode())
    return report, champion


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------

def _n(x: Any, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return format(x, fmt)


def window_rows(report: dict) -> list[list[str]]:
    rows = []
    for s in report["splits"]:
        oos = (s["out_of_sample"] or {}).get("summary") or {}
        rows.append([str(s["index"]), f"{s['train']['start'][:19]} .. {s['train']['end'][11:19]}",
                     f"{s['test']['start'][:19]} .. {s['test']['end'][11:19]}",
                     s["status"] if not s["reason"] else f"skipped: {s['reason']}",
                     _n(s["champion_trial"]), _n(s["in_sample_objective"]),
                     _n((s["out_of_sample"] or {}).get("objective")), _n(oos.get("net_pnl"), ".2f"),
                     _n(oos.get("n_fills")), _n(oos.get("maker_share"), ".3f"), _n(oos.get("hit_rate"), ".3f"),
                     _n(oos.get("cvar95_minute_pnl"), ".3f")])
    return rows


WINDOW_HEADER = ("split", "train (UTC)", "test (UTC)", "status", "champion trial", "IS objective", "OOS objective",
                 "OOS net PnL", "OOS fills", "maker share", "hit rate", "CVaR95/min")


def stability_rows(report: dict) -> list[list[str]]:
    rows = []
    for key, e in report["parameter_stability"].items():
        per = ", ".join(f"{k}: {_n(v)}" for k, v in e["by_split"].items())
        if "mean" in e:
            rows.append([key, per, _n(e["mean"]), _n(e["std"]), _n(e["min"]), _n(e["max"]), _n(e["rel_std"], ".3f")])
        else:
            rows.append([key, per, ", ".join(f"{k} x{v}" for k, v in e["counts"].items()), "", "", "", ""])
    return rows


STABILITY_HEADER = ("parameter", "champion value by split", "mean", "std", "min", "max", "std/|mean|")


def gate_rows(report: dict) -> list[list[str]]:
    return [[v["gate"], v["metric"], f"{v['op']} {_n(v['threshold'])}", _n(v["value"]),
             "pass" if v["passed"] else "FAIL"] for v in report["gates"]["verdicts"]]


GATE_HEADER = ("gate", "metric", "threshold", "value", "verdict")


def summary_rows(report: dict) -> list[list[str]]:
    s = report["out_of_sample"]["summary"] or {}
    units = {"net_pnl": "USDT", "minute_pnl_mean": "USDT/min", "cvar95_minute_pnl": "USDT/min",
             "max_drawdown_usdt": "USDT", "traded_notional": "USDT", "twa_abs_notional": "USDT", "traded_qty": "base"}
    rows = [["objective (" + report["wf"]["objective"]["kind"] + ")", _n(report["out_of_sample"]["objective"]), ""]]
    return rows + [[k, _n(v), units.get(k, "")] for k, v in s.items()]


IN_OUT_HEADER = ("split", "champion trial", "IS objective", "OOS objective", "OOS - IS", "OOS net PnL")


def in_out_rows(report: dict) -> list[list[str]]:
    return [[str(r["split"]), str(r["trial"]), _n(r["in_sample_objective"]), _n(r["out_of_sample_objective"]),
             _n(r["out_minus_in"]), _n(r["out_of_sample_net_pnl"], ".2f")]
            for r in report["analysis"]["in_vs_out_of_sample"]]


def importance_note(report: dict) -> str:
    imp = report["analysis"]["importance"]
    why = "; ".join(f"split {k}: {v}" for k, v in imp["not_computed"].items())
    return (f"{imp['evaluator']} on the {imp['target']} of each split's scored trials, normalised to sum 1; "
            f"mean over {len(imp['by_split'])} split(s)." + (f" Not computed: {why}." if why else ""))


def importance_table(report: dict) -> tuple[tuple, list[list[str]], str]:
    imp = report["analysis"]["importance"]
    splits = list(imp["by_split"])
    keys = sorted(report["wf"]["space"])
    rows = [[k, _n((imp["mean"] or {}).get(k), ".3f"), *[_n(imp["by_split"][s].get(k), ".3f") for s in splits]]
            for k in keys]
    return ("parameter", "mean", *[f"split {s}" for s in splits]), rows, "l" + "r" * (1 + len(splits))


def plot_space(report: dict, space: dict) -> dict:
    """The searched parameters as the champions name them: per_symbol portfolio runs
    ``<instrument id>:<key>`` for every instrument, otherwise ``space`` itself."""
    p = report.get("portfolio") or {}
    if p.get("params") != "per_symbol":
        return space
    return {f"{iid}:{k}": space[k] for iid in p["instruments"] for k in sorted(space)}


def champion_split_table(report: dict) -> tuple[tuple, list[list[str]], str]:
    keys = sorted(plot_space(report, report["wf"]["space"]))
    rows = [[str(r["split"]), "-" if r["trial"] is None else str(r["trial"]), *[_n(r["params"].get(k)) for k in keys],
             _n(r["in_sample_objective"]), _n(r["out_of_sample_objective"])]
            for r in report["analysis"]["champion_by_split"]]
    return ("split", "trial", *keys, "IS objective", "OOS objective"), rows, "ll" + "r" * (len(keys) + 2)


SYMBOL_HEADER = ("split", "instrument", "IS objective", "OOS objective", "OOS net PnL", "OOS fills")


def _in_sample_by_instrument(split: dict) -> dict:
    """A portfolio split's in-sample objective per instrument: shared, the champion trial's
    instrument sections; per_symbol, each symbol's study's champion run."""
    return split.get("in_sample_by_instrument") or {
        iid: (c or {}).get("in_sample_objective") for iid, c in (split.get("champion_by_instrument") or {}).items()}


def symbol_rows(report: dict) -> list[list[str]]:
    """A portfolio run: per used split, each instrument's and the portfolio's in-sample (train
    window; shared: the champion trial's instrument sections, per_symbol: each symbol's study's
    champion run alone, the combination has none) and out-of-sample objective (the split's test
    run, one portfolio backtest); then the walk-forward rows (test windows stitched)."""
    rows = []
    for s in report["splits"]:
        oos = s["out_of_sample"]
        if oos is None:
            continue
        is_by = _in_sample_by_instrument(s)
        for iid in report["portfolio"]["instruments"]:
            r = oos["by_instrument"][iid]
            rows.append([str(s["index"]), iid, _n(is_by.get(iid)), _n(r["objective"]), _n(r["summary"]["net_pnl"]),
                         str(r["summary"]["n_fills"])])
        rows.append([str(s["index"]), "portfolio", _n(s["in_sample_objective"]), _n(oos["objective"]),
                     _n(oos["summary"]["net_pnl"]), str(oos["summary"]["n_fills"])])
    wf_by = report["portfolio"]["out_of_sample_by_instrument"]
    for iid in report["portfolio"]["instruments"]:
        r = wf_by[iid]
        if r["summary"] is not None:
            rows.append(["walk-forward", iid, "", _n(r["objective"]), _n(r["summary"]["net_pnl"]),
                         str(r["summary"]["n_fills"])])
    total = report["out_of_sample"]
    if total["summary"]:
        rows.append(["walk-forward", "portfolio", "", _n(total["objective"]), _n(total["summary"]["net_pnl"]),
                     str(total["summary"]["n_fills"])])
    return rows


def symbol_objectives(report: dict) -> dict[str, list[tuple[int, float | None, float | None]]]:
    """A portfolio run: per instrument (in the run's order), then ``"portfolio"``, the
    (split, in-sample objective, out-of-sample objective) of each used split: the figures of the
    "Per symbol and portfolio" table (None: no in-sample figure, a per_symbol combination)."""
    out: dict[str, list] = {iid: [] for iid in report["portfolio"]["instruments"]}
    out["portfolio"] = []
    for s in report["splits"]:
        oos = s["out_of_sample"]
        if oos is None:
            continue
        is_by = _in_sample_by_instrument(s)
        for iid in report["portfolio"]["instruments"]:
            out[iid].append((s["index"], is_by.get(iid), oos["by_instrument"][iid]["objective"]))
        out["portfolio"].append((s["index"], s["in_sample_objective"], oos["objective"]))
    return out


def plot_symbol_objectives(report: dict, objective_label: str = "objective") -> Figure:
    """One panel per instrument and one for the portfolio: in-sample (train, the champion) vs
    out-of-sample (test) objective per split, as the single-instrument in-sample vs out-of-sample
    plot (same colours). A missing figure (per_symbol: the combination has no in-sample run) is
    no bar and an "n/a" mark at 0."""
    rows = symbol_objectives(report)
    fig = Figure(figsize=(12, 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (name, splits) in zip(axes, rows.items(), strict=True):
        x = list(range(len(splits)))
        for dx, col, color, label in ((-0.2, 1, "#2166ac", "in-sample (train, champion)"),
                                      (0.2, 2, "#b2182b", "out-of-sample (test)")):
            vals = [r[col] for r in splits]
            ax.bar([i + dx for i, v in zip(x, vals, strict=True) if v is not None],
                   [float(v) for v in vals if v is not None], width=0.4, color=color, label=label)
            for i, v in zip(x, vals, strict=True):
                if v is None:
                    ax.annotate("n/a", (i + dx, 0), ha="center", va="bottom", fontsize=8, color="#555555")
        ax.set_xticks(x, [f"split {r[0]}" for r in splits])
        ax.set_xlim(-0.6, len(splits) - 0.4)  # both bar slots of every split, drawn or not
        ax.axhline(0, color="black", lw=0.7)
        ax.set_title(name, loc="right", fontsize=10)  # right: the legend sits above the first panel's left
        ax.set_ylabel(objective_label, fontsize=8)
        MPL._style(ax)
    by_label = {}  # a panel without in-sample bars (per_symbol's portfolio) has one entry: all panels'
    for ax in axes:
        by_label.update(zip(*ax.get_legend_handles_labels()[::-1], strict=True))
    axes[0].legend([by_label[k] for k in sorted(by_label)], sorted(by_label), loc="lower left",
                   bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    return fig


def symbol_note(report: dict) -> str:
    p = report["portfolio"]
    how = ("one value of each parameter for every instrument, each trial one portfolio backtest"
           if p["params"] == "shared" else
           "each parameter per instrument (`<instrument id>:<key>`), each symbol tuned alone per split; "
           "the split's champion combines them in one portfolio test run")
    return f"Parameters: {p['params']} ({how}). Objective: {report['wf']['objective']['kind']}."


def render_markdown(report: dict) -> str:
    md = R._md_table
    g = report["gates"]
    verdict = "all gates pass" if g["passed"] else "gate(s) failed: " + ", ".join(g["failed"])
    champ = report["champion"]
    parts = [
        "# mmbot walk-forward report", "",
        f"{report['instrument']} {report['data_range']['start']} .. {report['data_range']['end']}; "
        f"train {report['wf']['train']}, test {report['wf']['test']}, step {report['wf']['step'] or report['wf']['test']}"
        f"{' (anchored)' if report['wf']['anchored'] else ''}; {report['wf']['method']} x {report['wf']['trials']} "
        f"trials per split, seed {report['wf']['seed']}; config {report['config_source']} ({report['config_hash']}).", "",
        f"**Verdict: {verdict}** (gates on the {g['scope'].replace('_', '-')} out-of-sample result).", "",
        "## Windows", "", md(WINDOW_HEADER, window_rows(report), "lllllrrrrrrr"), "",
        *(["## Per symbol and portfolio", "", symbol_note(report), "",
           md(SYMBOL_HEADER, symbol_rows(report), "llrrrr"), ""] if "portfolio" in report else []),
        "## Out-of-sample (test windows stitched)", "",
        md(("metric", "value", "unit"), summary_rows(report), "lrl"), "",
        "The stitched equity curve is in report.html and oos_equity.parquet.", "",
        "## Gates", "", md(GATE_HEADER, gate_rows(report), "lllrl"), "",
        "## Parameter stability across splits", "", md(STABILITY_HEADER, stability_rows(report), "llrrrrr"), "",
        "## In-sample vs out-of-sample by split", "", md(IN_OUT_HEADER, in_out_rows(report), "lrrrrr"), "",
        "## Parameter importance", "", importance_note(report), "",
        md(*importance_table(report)), "",
        "## Champion by split", "", md(*champion_split_table(report)), "",
        f"Risk guards in every trial and test window: {', '.join(report['risk_guards']) or 'none'}.", "",
        "## Champion", "",
    ]
    if champ and champ["trial"] is None:  # per_symbol: each instrument's own champion, <iid>:<key>
        parts += [f"Split {champ['split']} (the most recent used split): each instrument's champion of its own study. "
                  "Reproduce its test window with `mmbot backtest run` and the `overrides` of champion.json "
                  "(one `portfolio.overrides={...}` item); the values by instrument:", "",
                  md(("key", "value"), [[k, _n(v, "")] for k, v in champ["parameters"].items()], "ll"), ""]
    elif champ:
        parts += [f"Split {champ['split']}, trial {champ['trial']} (the most recent used split). Reproduce its test "
                  "window with `mmbot backtest run` and these overrides:", "",
                  md(("key", "value"), [[k, _n(v, "")] for k, v in champ["parameters"].items()], "ll"), ""]
    else:
        parts += ["No split produced an out-of-sample result.", ""]
    return "\n".join(parts)


def plot_stitched(equity: pd.DataFrame) -> Figure:
    """Stitched out-of-sample net PnL (USDT), one colour band per test window."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (split, e) in enumerate(equity.groupby("split", sort=True)):
        ax.plot(MPL._dt(e["ts_ns"]), e["net_pnl"], lw=1.6, color=("#2166ac", "#b2182b")[i % 2], label=f"split {split}")
    ax.axhline(0, color="black", lw=0.7)
    ax.set_ylabel("stitched OOS net PnL (USDT)")
    MPL._style(ax)
    MPL._time_axis(ax)
    if equity["split"].nunique() <= 12:
        MPL._legend_above(ax)
    return fig


OBJECTIVE_LABEL = {"mean_minus_cvar": "mean - λ|CVaR95| (USDT/minute)", "sharpe": "Sharpe per minute",
                   "net_bps_turnover": "net PnL (bps of turnover)", "pnl_per_inventory": "net PnL / mean |inventory|"}


def render_analysis_html(report: dict, space: dict) -> str:
    """In-sample vs out-of-sample, sensitivity, importance and champion-by-split sections."""
    t = R._html_table
    a = report["analysis"]
    kind = report["wf"]["objective"]["kind"]
    parts = ["<h2>In-sample vs out-of-sample by split</h2>",
             '<p class="note">Each split\'s champion: its objective on the train window it was chosen on, and on '
             "the test window after it (a large drop = fitted to the train window's noise).</p>"]
    if a["in_vs_out_of_sample"]:
        parts.append(f'<img alt="in-sample vs out-of-sample objective by split" src="{MPL._png(A.plot_in_vs_out(a, OBJECTIVE_LABEL.get(kind, kind)))}">')
    parts.append(t(IN_OUT_HEADER, in_out_rows(report), {2, 3, 4, 5}))
    parts.append("<h2>Parameter sensitivity</h2>")
    if a["sensitivity"]["points"]:
        parts.append('<p class="note">Every scored in-sample trial: objective against each parameter (colour = split); '
                     "the last panel is the 2-D slice over the two most important parameters (colour = objective).</p>")
        parts.append(f'<img alt="parameter sensitivity" src="{MPL._png(A.plot_sensitivity(a, space))}">')
    else:
        parts.append("<p>No scored trial.</p>")
    head, rows, _ = importance_table(report)
    parts += ["<h2>Parameter importance</h2>", f'<p class="note">{html.escape(importance_note(report))}</p>',
              t(head, rows, set(range(1, len(head))))]
    head, rows, _ = champion_split_table(report)
    parts += ["<h2>Champion stability across splits</h2>"]
    if a["champion_by_split"]:
        parts.append(f'<img alt="champion by split" src="{MPL._png(A.plot_champion_stability(a, space))}">')
    parts.append(t(head, rows, set(range(2, len(head)))))
    parts.append(f'<p class="note">Risk guards in every trial and test window: '
                 f'{html.escape(", ".join(report["risk_guards"]) or "none")}.</p>')
    return "\n".join(parts)


def render_html(report: dict, equity: pd.DataFrame, space: dict | None = None) -> str:
    t = R._html_table
    g = report["gates"]
    verdict = "all gates pass" if g["passed"] else "gate(s) failed: " + ", ".join(g["failed"])
    img = (f'<img alt="stitched out-of-sample equity" src="{MPL._png(plot_stitched(equity))}">'
           if len(equity) else "<p>No out-of-sample result.</p>")
    md_head = render_markdown(report).split("\n")[2]
    kind = report["wf"]["objective"]["kind"]
    analysis_html = render_analysis_html(report, space if space is None else plot_space(report, space))
    symbol_html = ("" if "portfolio" not in report else
                   f'<h2>Per symbol and portfolio</h2>\n<p class="note">{html.escape(symbol_note(report))}</p>\n'
                   + (f'<img alt="per-symbol and portfolio objective by split" src="'
                      f'{MPL._png(plot_symbol_objectives(report, OBJECTIVE_LABEL.get(kind, kind)))}">\n'
                      if report["n_splits_used"] else "")
                   + f'{t(SYMBOL_HEADER, symbol_rows(report), {2, 3, 4, 5})}\n')
    champ = report["champion"]
    champ_html = (t(("key", "value"), [[k, _n(v, "")] for k, v in champ["parameters"].items()], set(), "meta")
                  if champ else "<p>none</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mmbot walk-forward report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{R._CSS}</style></head>
<body><main>
<h1>mmbot walk-forward report</h1><p class="note">{html.escape(md_head)}</p>
<h2>Verdict: {html.escape(verdict)}</h2>
{t(GATE_HEADER, gate_rows(report), {3})}
<h2>Stitched out-of-sample equity</h2>
<p class="note">Each split's champion (chosen in-sample) on its own test window; windows joined end to end.</p>
{img}
<h2>Windows</h2>
{t(WINDOW_HEADER, window_rows(report), set(range(4, 12)))}
{symbol_html}{analysis_html}
<h2>Out-of-sample summary</h2>
{t(("metric", "value", "unit"), summary_rows(report), {1})}
<h2>Parameter stability across splits</h2>
{t(STABILITY_HEADER, stability_rows(report), {2, 3, 4, 5, 6})}
<h2>Champion (split {champ['split'] if champ else '-'}, trial {champ['trial'] if champ and champ['trial'] is not None else '-'})</h2>
{champ_html}
</main></body></html>
"""
