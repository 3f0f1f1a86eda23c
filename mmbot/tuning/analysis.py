"""What a user looks at after a walk-forward (report.json ``analysis``, report.html plots).

- ``in_vs_out_of_sample``: per used split, the champion's in-sample objective (train window) and
  out-of-sample objective (test window), same unit (the objective's), and their difference.
- ``sensitivity``: every scored in-sample trial as (split, trial, parameters, objective): the
  objective against each parameter, and a 2-D slice over the two most important parameters.
- ``importance``: each parameter's importance from ``optuna.importance.get_param_importances``
  with ``PedAnovaImportanceEvaluator()`` (PED-ANOVA: how much a parameter's distribution among
  the best 10 % of the trials differs from its distribution among all trials; normalised to sum
  1), per split (each split is its own study on its own data) and the mean over the splits where
  it could be computed. Deterministic: PED-ANOVA draws no random numbers and the trials are added
  in number order (Optuna's default, fANOVA, needs scikit-learn, which mmbot does not depend on).
  Needs at least 2 scored trials with different objectives in a split; with few trials (the
  best 10 % is one trial) it says which parameters that one trial stands out in, no more.
- ``champion_by_split``: each used split's champion (trial, parameters, in-sample and
  out-of-sample objective): how stable the choice is across splits.

Objectives are the configured ``wf.objective.kind`` (USDT/minute for the default).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

EVALUATOR = "optuna.importance.PedAnovaImportanceEvaluator()"


def _distributions(space: dict) -> dict:
    import optuna

    from mmbot.tuning import space as S

    out = {}
    for key, spec in space.items():
        if spec.choices is not None:
            out[key] = optuna.distributions.CategoricalDistribution(list(spec.choices))
        elif S.is_int(spec):
            out[key] = optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log,
                                                            step=int(spec.step or 1))
        else:
            out[key] = optuna.distributions.FloatDistribution(float(spec.low), float(spec.high), log=spec.log,
                                                              step=None if spec.step is None else float(spec.step))
    return out


def _scored(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["state"] == "COMPLETE" and t["in_sample_objective"] is not None
            and math.isfinite(t["in_sample_objective"])]


def split_importance(trials: list[dict], space: dict) -> tuple[dict[str, float] | None, str | None]:
    """(importance by parameter, None) or (None, why not) for one split's trials."""
    import optuna

    scored = _scored(trials)
    if len(scored) < 2:
        return None, f"{len(scored)} scored trial(s) (needs 2)"
    if len({t["in_sample_objective"] for t in scored}) < 2:
        return None, "every scored trial has the same objective"
    dists = _distributions(space)
    study = optuna.create_study(direction="maximize")
    for t in sorted(scored, key=lambda t: t["number"]):
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions={k: dists[k] for k in t["params"]},
                                                  value=t["in_sample_objective"]))
    try:
        with warnings.catch_warnings():  # "few trials" notes: the report says how many trials there were
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=sorted(space))
    except (RuntimeError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"
    return {k: float(imp.get(k, 0.0)) for k in sorted(space)}, None


def analyse(splits: list, space: dict) -> dict[str, Any]:
    """The ``analysis`` block of report.json (see the module docstring); ``splits`` are SplitOutcomes."""
    used = [o for o in splits if not o.skip_reason and o.champion and o.oos and o.oos.get("metrics") is not None]
    in_out = []
    for o in used:
        is_obj, oos_obj = o.champion["in_sample_objective"], o.oos["objective"]
        finite = oos_obj is not None and math.isfinite(oos_obj) and is_obj is not None
        in_out.append({"split": o.split.index, "trial": o.champion["number"], "in_sample_objective": is_obj,
                       "out_of_sample_objective": oos_obj,
                       "out_minus_in": (oos_obj - is_obj) if finite else None,
                       "in_sample_net_pnl": (o.champion.get("in_sample") or {}).get("net_pnl"),
                       "out_of_sample_net_pnl": o.oos["summary"].get("net_pnl")})
    # per_symbol: a trial's parameters under its instrument's names (<iid>:<key>), as the champions'
    points = [{"split": o.split.index, "trial": t["number"], "objective": t["in_sample_objective"],
               "params": ({f"{t['instrument']}:{k}": v for k, v in t["params"].items()} if "instrument" in t
                          else t["params"]),
               **({"instrument": t["instrument"]} if "instrument" in t else {})}
              for o in splits for t in _scored(o.trials)]
    per_split, why_not = {}, {}
    for o in splits:
        if not o.trials:
            continue
        # per_symbol portfolio tuning: one study per (symbol x split), each its own importance
        # ("<split> <instrument id>"); otherwise one per split
        groups: dict[str, list] = {}
        for t in o.trials:
            groups.setdefault(t.get("instrument", ""), []).append(t)
        for iid in sorted(groups):
            label = f"{o.split.index} {iid}" if iid else str(o.split.index)
            imp, why = split_importance(groups[iid], space)
            if imp is None:
                why_not[label] = why
            else:
                per_split[label] = imp
    mean = ({k: sum(v[k] for v in per_split.values()) / len(per_split) for k in sorted(space)} if per_split else None)
    ranked = sorted(mean, key=lambda k: (-mean[k], k)) if mean else sorted(space)
    numeric = [k for k in ranked if space[k].choices is None]
    top_pair = (numeric + [k for k in ranked if k not in numeric])[:2] if len(space) >= 2 else []
    champion_by_split = [{"split": o.split.index, "trial": o.champion["number"], "params": o.champion["params"],
                          "in_sample_objective": o.champion["in_sample_objective"],
                          "out_of_sample_objective": o.oos["objective"]} for o in used]
    return {
        "in_vs_out_of_sample": in_out,
        "sensitivity": {"points": points, "top_pair": top_pair},
        "importance": {"evaluator": EVALUATOR, "target": "in-sample objective",
                       "normalized": True, "by_split": per_split, "not_computed": why_not, "mean": mean},
        "champion_by_split": champion_by_split,
    }


# ---------------------------------------------------------------------------------------------
# plots (matplotlib, embedded as PNG in report.html like the backtest report)
# ---------------------------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def plot_in_vs_out(analysis: dict, objective_label: str = "objective"):
    from matplotlib.figure import Figure

    from mmbot.report import mpl as MPL

    rows = analysis["in_vs_out_of_sample"]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(rows)))
    ins = [_num(r["in_sample_objective"]) or 0.0 for r in rows]
    outs = [_num(r["out_of_sample_objective"]) or 0.0 for r in rows]
    ax.bar([i - 0.2 for i in x], ins, width=0.4, color="#2166ac", label="in-sample (train, champion)")
    ax.bar([i + 0.2 for i in x], outs, width=0.4, color="#b2182b", label="out-of-sample (test)")
    ax.set_xticks(x, [f"split {r['split']}" for r in rows])
    ax.axhline(0, color="black", lw=0.7)
    ax.set_ylabel(objective_label)
    MPL._style(ax)
    MPL._legend_above(ax)
    return fig


def plot_sensitivity(analysis: dict, space: dict):
    """Objective against each parameter (one panel each, colour = split), and the 2-D slice of the
    top pair (colour = objective)."""
    from matplotlib.figure import Figure

    from mmbot.report import mpl as MPL

    pts = analysis["sensitivity"]["points"]
    keys = sorted(space)
    pair = [k for k in analysis["sensitivity"]["top_pair"] if k in space]  # (per_symbol: no 2-D slice)
    n = len(keys) + (1 if len(pair) == 2 else 0)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(12, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    splits = sorted({p["split"] for p in pts})
    for ax, key in zip(axes, keys, strict=False):
        for s in splits:
            sel = [p for p in pts if p["split"] == s and key in p["params"]]
            xs = [p["params"][key] for p in sel]
            xs = [str(v) for v in xs] if space[key].choices is not None else xs
            ax.scatter(xs, [p["objective"] for p in sel], s=14, label=f"split {s}")
        _axis_for(ax.xaxis, space[key])
        ax.set_xlabel(key)
        ax.set_ylabel("in-sample objective")
        MPL._style(ax)
    if len(pair) == 2:
        ax = axes[len(keys)]
        sel = [p for p in pts if pair[0] in p["params"] and pair[1] in p["params"]]
        sc = ax.scatter([_cat(p["params"][pair[0]]) for p in sel], [_cat(p["params"][pair[1]]) for p in sel],
                        c=[p["objective"] for p in sel], cmap="viridis", s=22)
        fig.colorbar(sc, ax=ax, label="in-sample objective")
        for k, axis in zip(pair, (ax.xaxis, ax.yaxis), strict=True):
            _axis_for(axis, space[k])
        ax.set_xlabel(pair[0])
        ax.set_ylabel(pair[1])
        ax.set_title("top pair (by importance)", fontsize=9)
        MPL._style(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    if splits and len(splits) <= 12 and keys:
        axes[0].legend(fontsize=7)
    return fig


def _axis_for(axis, spec) -> None:
    """Log scale for a log range, whole-number ticks for an int range."""
    from matplotlib.ticker import MaxNLocator

    from mmbot.tuning import space as S

    if spec.choices is not None:
        return
    if spec.log:
        axis._set_axes_scale("log")
    elif S.is_int(spec):
        axis.set_major_locator(MaxNLocator(integer=True))


def _cat(v: Any) -> Any:
    return str(v) if isinstance(v, (bool, str)) else v


def plot_champion_stability(analysis: dict, space: dict):
    """Each parameter's champion value by split, and the champion's out-of-sample objective by split."""
    from matplotlib.figure import Figure

    from mmbot.report import mpl as MPL

    rows = analysis["champion_by_split"]
    keys = sorted(space)
    n = len(keys) + 1
    cols = min(3, n)
    fig = Figure(figsize=(12, 2.8 * math.ceil(n / cols)), layout="constrained")
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    x = [r["split"] for r in rows]
    for ax, key in zip(axes, keys, strict=False):
        ax.plot(x, [_cat(r["params"].get(key)) for r in rows], marker="o", color="#2166ac")
        _axis_for(ax.yaxis, space[key])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("split")
        ax.set_xticks(x)
        MPL._style(ax)
    ax = axes[len(keys)]
    ax.bar(x, [_num(r["out_of_sample_objective"]) or 0.0 for r in rows], color="#b2182b")
    ax.set_xticks(x)
    ax.axhline(0, color="black", lw=0.7)
    ax.set_title("champion's out-of-sample objective", fontsize=9)
    ax.set_xlabel("split")
    MPL._style(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig
