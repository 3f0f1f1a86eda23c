"""``soak_report.json`` + ``.md`` + ``.html`` (+ ``soak_report.png``): the series plotted, the gates.

Every file is written to a temporary name and renamed, so a report on disk is always complete.
The HTML is self-contained (the figure is embedded as a base64 PNG).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

from tools.soak.schedule import Fault


def summarise_faults(faults: list[Fault], log: list[dict], t0_wall: float) -> list[dict]:
    out = []
    for f in faults:
        steps = [e for e in log if e["fault"] == (f.text or f.kind)]
        d = f.to_json()
        d["applied"] = [{"action": e["action"], "t_s": round(e["t_s"], 3), "body": e["body"], "answer": e["answer"]}
                        for e in steps]
        d["window_wall_s"] = [t0_wall + f.at_s, t0_wall + f.end_s]
        out.append(d)
    return out


def _clean(x):
    """JSON without NaN/inf (null instead), numbers rounded to what matters."""
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.3g}{(' ' + unit) if unit else ''}" if abs(v) < 1000 else f"{v:,.0f}{(' ' + unit) if unit else ''}"
    return f"{v}{(' ' + unit) if unit else ''}"


def markdown(rep: dict) -> str:
    lines = [f"# Soak report: {'PASS' if rep['ok'] else 'FAIL'}", "",
             f"- command: `{rep['command']}`",
             f"- started (UTC): {rep['started_utc']}; mode {rep['mode']}; instrument {rep['instrument']}; "
             f"duration {rep['duration_s']:g} s; samples every {rep['sample_every_s']:g} s",
             (f"- recording: `{rep['recording']}` (looped seamlessly, passes: {rep['exchange_after_stop'].get('passes')})"
              if not rep.get("instruments") else
              f"- recordings (one per symbol, on one clock, not looped): `{rep['recording']}`; node config: "
              f"a [portfolio] of {rep['symbols']} instruments (allocator and [risk.portfolio] as config/portfolio.toml)"),
             f"- node: exit {rep['node_exit_code']}; reconciliation interval {rep['reconciliation_interval_s']:g} s",
             f"- machine: {rep['machine']['cores']} cores, mean 1-min load {_fmt(rep['machine']['load1_mean'])}",
             *([f"- re-gated {rep['regated']['at_utc']} with the current gate code ({', '.join(rep['regated']['gates'])});"
                f" as run: {'PASS' if rep['regated']['as_run']['ok'] else 'FAIL'}, "
                f"{json.dumps(rep['regated']['as_run'], default=str)} (soak_report.asrun.json)"]
               if rep.get("regated") else []),
             "", "## Gates", "", "| gate | holds | value | bound | rule |", "|---|---|---|---|---|"]
    for g in rep["gates"]:
        holds = "n/a" if not g["applicable"] else ("yes" if g["holds"] else "**NO**")
        note = (g.get("detail") or {}).get("note") or ""
        lines.append(f"| {g['name']} | {holds} | {_fmt(g['value'], g['unit'])} | {_fmt(g['bound'], g['unit'])} | "
                     f"{g['rule']}{' (' + note + ')' if note else ''} |")
    lines += ["", "## Faults", "", "| fault | at (s) | window (s) | public data | applied |", "|---|---|---|---|---|"]
    for f in rep["faults"]:
        applied = "; ".join(f"{a['action']} {a['body'].get('kind')} at {a['t_s']:g}s "
                            f"({'ok' if (a['answer'] or {}).get('ok') else 'FAILED'})" for a in f["applied"])
        lines.append(f"| `{f['text']}` | {f['at_s']:g} | {f['window_s']:g} | {'yes' if f['affects_public'] else 'no'} "
                     f"| {applied or 'not reached'} |")
    if rep.get("instruments"):
        lines += ["", "## Instruments", "",
                  "| instrument | book msgs | orders sent | fills node/exch | orders node/exch | longest order "
                  "mismatch (s) | longest position mismatch (s) | position node/exch (last sample) | "
                  "position after stop (exch) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rep["instruments"]:
            lines.append(f"| {r['instrument']} | {_fmt(r['book_updates'])} | {_fmt(r['orders_submitted'])} | "
                         f"{_fmt(r['fills_node'])}/{_fmt(r['fills_exchange'])} | {_fmt(r['orders_node'])}/"
                         f"{_fmt(r['orders_exchange'])} | {_fmt(r['max_order_mismatch_s'])} | "
                         f"{_fmt(r['max_position_mismatch_s'])} | {_fmt(r['position_node_last_sample'])}/"
                         f"{_fmt(r['position_exchange_last_sample'])} | {_fmt(r['position_exchange_after_stop'])} |")
        t0 = rep["ready_wall_s"] or 0
        for sym, tl in (rep.get("timelines") or {}).items():
            lines += ["", f"### Node vs exchange: {sym or '(orders no symbol claims)'}", "",
                      f"- {tl['order_episodes']} order and {tl['position_episodes']} position episodes; longest:", "",
                      "| what | key | start (s) | seconds | detail |", "|---|---|---|---|---|"]
            for e in tl["longest"][:5]:
                lines.append(f"| {e['what']} | {e['key']} | {e['start_ns'] / 1e9 - t0:.3f} | {e['seconds']:.3f} | "
                             f"{e['detail']}{' (open at end)' if e['open_at_end'] else ''} |")
    tl = rep.get("timeline")
    if tl:
        lines += ["", "## Node vs exchange", "",
                  f"- orders: node {tl['orders_node']}, exchange {tl['orders_exchange']}; fills: node "
                  f"{tl['fills_node']}, exchange {tl['fills_exchange']}",
                  f"- longest order-state mismatch {tl['max_order_mismatch_s']:.3f} s, position mismatch "
                  f"{tl['max_position_mismatch_s']:.3f} s ({tl['order_episodes']} order and "
                  f"{tl['position_episodes']} position episodes in all)", "",
                  "| what | key | start (s) | seconds | detail |", "|---|---|---|---|---|"]
        t0 = rep["ready_wall_s"] or 0
        for e in tl["longest"][:10]:
            lines.append(f"| {e['what']} | {e['key']} | {e['start_ns'] / 1e9 - t0:.3f} | {e['seconds']:.3f} | "
                         f"{e['detail']}{' (open at end)' if e['open_at_end'] else ''} |")
    rc = rep["recorder"]
    lines += ["", "## Recorder", "", f"- import --strict: {'ok' if rc['import'].get('ok') else 'FAILED: ' + str(rc['import'].get('error'))}"]
    for name, c in (rc.get("comparison") or {}).items():
        lines.append(f"- {name}: {c['seconds_compared']} s compared ({c['seconds_excused']} excused by fault windows): "
                     f"published {c['published_rows']:,} rows, recorded {c['recorded_rows']:,}, lost {c['lost_rows']}, "
                     f"extra {c['extra_rows']}; lost inside windows {c['lost_rows_inside_windows']}")
    lines += ["", "## Samples", "",
              "| t (s) | RSS (MB) | CPU ms/book msg | p50 / p99 (ms) | open node/exch | position node/exch | "
              "balance diff | trading state | recorder (MB, lines) | reconnects | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rep["samples"]:
        bal = (s.get("balance_node") or math.nan) - (s.get("balance_exchange") or math.nan) \
            if s.get("balance_node") is not None and s.get("balance_exchange") is not None else None
        rec = s.get("recorder") or {}
        lines.append(
            f"| {s['t_s']:g} | {_fmt(s.get('rss_mb'))} | {_fmt(s.get('cpu_ms_per_book_msg'))} | "
            f"{_fmt(s.get('tick_to_order_p50_ms'))} / {_fmt(s.get('tick_to_order_p99_ms'))} | "
            f"{_fmt(s.get('open_orders_node'))}/{_fmt(s.get('open_orders_exchange'))} | "
            f"{_fmt(s.get('position_node'))}/{_fmt(s.get('position_exchange'))} | {_fmt(bal)} | "
            f"{_fmt(s.get('trading_state'))} | {rec.get('bytes', 0) / 2**20:.2f}, {rec.get('raw_lines', 0):,} | "
            f"{_fmt(s.get('ws_reconnects'))} | {_fmt((s.get('load') or [None])[0])} |")
    if rep["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep["notes"]]
    lines += ["", "How to read this report: docs/runbook.md, section \"Soak\".", ""]
    return "\n".join(lines)


def figure_png(rep: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = rep["samples"]
    t = [s["t_s"] / 60 for s in S]

    def col(key, scale=1.0):
        out = []
        for s in S:
            v = s.get(key)
            out.append(v * scale if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else math.nan)
        return out

    fig, axes = plt.subplots(5, 2, figsize=(14, 17), sharex=True)
    ax = axes.ravel()
    t0 = rep["ready_wall_s"] or 0

    def shade(a):
        for f in rep["faults"]:
            a.axvspan(f["at_s"] / 60, f["end_s"] / 60, color="tab:red" if f["affects_public"] else "tab:orange",
                      alpha=0.12, lw=0)

    ax[0].plot(t, col("rss_mb"), "o-", ms=3, label="node RSS")
    g = next((g for g in rep["gates"] if g["name"] == "rss_slope"), None)
    pts = [(s["t_s"], s.get("rss_mb")) for s in S if s["t_s"] >= 0.25 * rep["duration_s"] and s.get("rss_mb")]
    if g and g["value"] is not None and len(pts) >= 2:
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        xs = [pts[0][0], pts[-1][0]]
        ax[0].plot([x / 60 for x in xs], [my + g["value"] / 3600 * (x - mx) for x in xs], "k--",
                   label=f"fit, last 75 %: {g['value']:.2f} MB/h (bound {g['bound']:g})")
    ax[0].set_ylabel("MB")
    ax[0].set_title("RSS")
    ax[1].plot(t, col("cpu_ms_per_book_msg"), "o-", ms=3)
    ax[1].set_title("node CPU per book message (ms)")
    ax[2].plot(t, col("tick_to_order_p50_ms"), "o-", ms=3, label="p50")
    ax[2].plot(t, col("tick_to_order_p99_ms"), "o-", ms=3, label="p99")
    ax[2].set_yscale("log")
    ax[2].set_title("tick-to-order per interval (ms)")
    syms = sorted({k for s in S for k in (s.get("instruments") or {})}, key=lambda k: list(
        (S[-1].get("instruments") or {})).index(k) if k in (S[-1].get("instruments") or {}) else 99)
    if not syms:
        ax[3].step(t, col("open_orders_node"), where="post", label="node cache")
        ax[3].step(t, col("open_orders_exchange"), where="post", label="exchange", ls="--")
        ax[3].set_title("open orders")
        ax[4].step(t, col("position_node"), where="post", label="node")
        ax[4].step(t, col("position_exchange"), where="post", label="exchange", ls="--")
        ax[4].set_title("position (base)")
    else:  # per instrument; positions in different base units: the node - exchange difference (0 = agree)
        def icol(sym, key):
            return [((s.get("instruments") or {}).get(sym) or {}).get(key, math.nan) for s in S]

        for sym in syms:
            line = ax[3].step(t, icol(sym, "open_orders_node"), where="post", label=f"{sym} node")[0]
            ax[3].step(t, icol(sym, "open_orders_exchange"), where="post", label=f"{sym} exchange", ls="--",
                       color=line.get_color())
            ax[4].step(t, [a - b if a is not None and b is not None else math.nan
                           for a, b in zip(icol(sym, "position_node"), icol(sym, "position_exchange"))],
                       where="post", label=sym)
        ax[3].set_title("open orders per instrument")
        ax[4].set_title("position node - exchange per instrument (base units; 0 = agree)")
    bal = [(s.get("balance_node") - s.get("balance_exchange")) if isinstance(s.get("balance_node"), float)
           and isinstance(s.get("balance_exchange"), float) else math.nan for s in S]
    ax[5].plot(t, bal, "o-", ms=3)
    ax[5].set_title("balance node - exchange (USDT)")
    # One row per guard; a marker (labelled with the state) at every sample where it is not in its
    # normal state; the trading state (0 active, 1 reducing, 2 halted) as a line underneath.
    normal = {"circuit_breaker": "CLOSED"}
    guards = sorted({g for s in S for g in (s.get("guards") or {})})
    for i, g in enumerate(guards):
        xs = [(s["t_s"] / 60, (s.get("guards") or {}).get(g)) for s in S]
        bad = [(x, st) for x, st in xs if st is not None and st != normal.get(g, "ACTIVE")]
        ax[6].plot([x for x, _ in bad], [i + 1] * len(bad), "s", ms=5)
        for x, st in bad[:40]:
            ax[6].annotate(st, (x, i + 1), fontsize=6, xytext=(2, 3), textcoords="offset points")
        # transitions to a non-normal state between two samples (a state too short to be sampled)
        hit = []
        for a, b in zip(S, S[1:]):
            ta, tb = a.get("guard_transitions") or {}, b.get("guard_transitions") or {}
            new = [k.split(":", 1)[1] for k, v in tb.items() if k.startswith(g + ":") and v > ta.get(k, 0.0)
                   and k.split(":", 1)[1] != normal.get(g, "ACTIVE")]
            if new:
                hit.append((b["t_s"] / 60, "/".join(sorted(new))))
        ax[6].plot([x for x, _ in hit], [i + 1] * len(hit), "x", ms=7, color="tab:red")
        for x, st in hit[:40]:
            ax[6].annotate(st, (x, i + 1), fontsize=6, xytext=(2, -9), textcoords="offset points", color="tab:red")
    ax[6].step(t, col("trading_state"), where="post", color="k", lw=1, label="trading state (0/1/2)")
    ax[6].set_yticks(range(len(guards) + 1), ["trading\nstate"] + guards, fontsize=7)
    ax[6].set_title("guards: not normal at a sample (square), entered since the last sample (x)")
    ax[7].plot(t, [(s.get("recorder") or {}).get("bytes", 0) / 2**20 for s in S], "o-", ms=3, label="MB")
    ax7b = ax[7].twinx()
    ax7b.plot(t, [(s.get("recorder") or {}).get("raw_lines", 0) for s in S], "g.", label="raw lines")
    ax[7].set_title("recorder: bytes (MB, left) and raw lines (right)")
    ax[8].step(t, col("ws_reconnects"), where="post", label="node: public re-subscriptions")
    for stream in ("public", "private", "trade"):
        ax[8].step(t, [((s.get("connections_opened") or {}).get(stream, math.nan)) for s in S], where="post",
                   label=f"exchange: {stream} connections opened", ls=":")
    ax[8].set_title("reconnects")
    tl = rep.get("timeline") or {}
    eps = tl.get("episodes") or [e for x in (rep.get("timelines") or {}).values() for e in x.get("episodes") or []]
    if eps:
        ax[9].scatter([(e["start_ns"] / 1e9 - t0) / 60 for e in eps], [e["seconds"] for e in eps], s=10,
                      c=["tab:blue" if e["what"] == "order" else "tab:purple" for e in eps])
    gm = next((g for g in rep["gates"] if g["name"] == "state_mismatch"), None)
    if gm and gm["bound"] is not None:
        ax[9].axhline(gm["bound"], color="k", ls="--", label=f"bound {gm['bound']:g} s")
    ax[9].set_title("node vs exchange mismatch episodes >= 0.5 s (blue order, purple position)")
    for a in ax:
        shade(a)
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7, loc="best")
    for a in axes[-1]:
        a.set_xlabel("minutes after ready (shaded: fault windows, red = public data)")
    fig.suptitle(f"soak {rep['started_utc']} {rep['mode']} {rep['instrument']}: {'PASS' if rep['ok'] else 'FAIL'}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_report(rep: dict, out: Path) -> dict[str, Path]:
    """Write the four files; returns their paths."""
    rep = _clean(rep)
    paths = {k: out / f"soak_report.{k}" for k in ("json", "md", "html", "png")}
    _atomic_write(paths["json"], (json.dumps(rep, indent=1, sort_keys=False) + "\n").encode())
    md = markdown(rep)
    _atomic_write(paths["md"], md.encode())
    png = figure_png(rep)
    _atomic_write(paths["png"], png)
    body = html.escape(md)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>soak report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}pre{{white-space:pre-wrap}}</style></head><body>"
            f"<h1>Soak: {'PASS' if rep['ok'] else 'FAIL'}</h1>"
            f"<img alt='soak series' style='max-width:100%' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<pre>{body}</pre></body></html>\n")
    _atomic_write(paths["html"], page.encode())
    return paths
