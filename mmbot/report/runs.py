"""``mmbot runs ls`` and ``mmbot runs diff``: what is in a folder of runs, and how two runs differ.

A run folder is any directory with an ``mmbot_run.json`` marker (mmbot/run_folder.py): backtests,
wf runs, shadow and live sessions. ``ls`` reads only what each run wrote (the marker,
``config.resolved.json``, ``report.json``); nothing is recomputed, so a
folder from an older mmbot lists what it has and shows ``-`` for what it lacks.

``diff A B`` puts side by side:

- the configuration: every leaf key of ``config.resolved.json``'s ``config`` (dotted names,
  ``strategy.level_size``) whose value differs, is only in one run, or (``--all``) every key;
  the instrument and the data window come from each run's report;
- the key metrics (``KEY_METRICS``: dotted paths into ``report.json``'s ``metrics``), each with
  ``B - A`` when both are numbers.

Floats are compared exactly (a config value 0.1 vs 0.10000000000000001 is a difference: the runs
did not use the same number).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmbot.run_folder import MARKER, RESOLVED_CONFIG, read_marker

REPORT = "report.json"
MAX_DEPTH = 3  # run folders are found this many levels below the root at most (runs/<wf>/<split>/...)

# (label, dotted path into report.json "metrics", unit)
KEY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("net PnL", "pnl.net_pnl", "USDT"),
    ("gross PnL", "pnl.gross_pnl", "USDT"),
    ("spread capture", "pnl.spread_capture", "USDT"),
    ("inventory PnL", "pnl.inventory_pnl", "USDT"),
    ("fees paid", "pnl.fees_paid", "USDT"),
    ("slippage", "pnl.slippage", "USDT"),
    ("funding", "pnl.funding", "USDT"),
    ("fills", "counts.n_fills", ""),
    ("orders", "counts.n_orders", ""),
    ("fill ratio", "counts.fill_ratio", ""),
    ("maker share", "counts.maker_share", ""),
    ("cancels per fill", "counts.cancels_per_fill", ""),
    ("traded notional", "counts.traded_notional", "USDT"),
    ("max |position|", "inventory.max_abs_position_base", "base"),
    ("time-avg |position|", "inventory.twa_abs_position_base", "base"),
    ("max drawdown", "risk.max_drawdown_usdt", "USDT"),
    ("worst minute", "risk.worst_minute_pnl", "USDT"),
    ("final trading state", "risk.guards.final_trading_state", ""),
)


class RunsError(ValueError):
    """A path given to ``runs`` is not what it must be (one line, names the path)."""


@dataclass
class RunInfo:
    path: Path
    marker: dict
    config: dict | None = None       # config.resolved.json "config", None when absent/unreadable
    report: dict | None = None       # report.json, None when absent/unreadable
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.marker.get("kind", "?"))

    def metric(self, dotted: str) -> Any:
        """A metric of report.json; a non-finite number reads as None (``load_run`` names it)."""
        metrics = self.report.get("metrics", {}) if self.report else {}
        if isinstance(metrics, dict) and isinstance(metrics.get("portfolio"), dict):
            metrics = metrics["portfolio"]  # a portfolio run: its sums (docs/portfolio.md, "Report")
        v = _get(metrics, dotted)
        return None if isinstance(v, float) and not math.isfinite(v) else v

    def _metadata(self) -> dict:
        """A backtest/live report's ``metadata``; a wf report keeps ``instrument``/``data_range`` at
        its top level. Wrong shapes read as absent (``load_run`` lists them as problems)."""
        report = self.report or {}
        meta = report.get("metadata")
        if isinstance(meta, dict):
            return meta
        return report if "metadata" not in report else {}

    @property
    def instrument(self) -> str:
        port = self._metadata().get("portfolio")
        if isinstance(port, dict) and isinstance(port.get("instruments"), list):
            return "+".join(str(i) for i in port["instruments"])
        inst = self._metadata().get("instrument")
        if isinstance(inst, dict):
            return str(inst.get("id", "-"))
        if isinstance(inst, str):
            return inst
        run = (self.config or {}).get("run", {})
        return str(run.get("instrument", "-")) if isinstance(run, dict) else "-"

    @property
    def window(self) -> tuple[str, str]:
        rng = self._metadata().get("data_range")
        rng = rng if isinstance(rng, dict) else {}
        return str(rng.get("start", "-")), str(rng.get("end", "-"))

    @property
    def written_utc(self) -> str:
        try:
            ts = (self.path / MARKER).stat().st_mtime
        except OSError:
            return "-"
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_json(self, root: Path | None = None) -> dict:
        start, end = self.window
        return {
            "run": str(self.path.relative_to(root)) if root is not None and self.path.is_relative_to(root) else str(self.path),
            "kind": self.kind, "venue": self.marker.get("venue", "-"), "config_hash": self.marker.get("config_hash", "-"),
            "written_utc": self.written_utc, "instrument": self.instrument, "start": start, "end": end,
            "fills": self.metric("counts.n_fills"), "net_pnl_usdt": self.metric("pnl.net_pnl"),
            "problems": self.problems,
        }


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.exists():
        return None
    if not path.is_file():  # a FIFO or device would block or never end
        problems.append(f"{path.name}: not a regular file")
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a FIFO after is_file: still no hang
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                problems.append(f"{path.name}: not a regular file")
                return None
            obj = json.loads(fh.read())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path.name}: not a JSON object")
        return None
    return obj


def load_run(path: Path | str) -> RunInfo:
    """One run folder; ``RunsError`` when ``path`` is not one."""
    p = Path(path)
    if not p.is_dir():
        raise RunsError(f"{p}: no such run folder")
    marker = read_marker(p)
    if marker is None:
        raise RunsError(f"{p}: not an mmbot run folder (no readable {MARKER})")
    info = RunInfo(path=p, marker=marker)
    resolved = _read_json(p / RESOLVED_CONFIG, info.problems)
    if resolved is not None:
        cfg = resolved.get("config")
        info.config = cfg if isinstance(cfg, dict) else None
    info.report = _read_json(p / REPORT, info.problems)  # a wf run's report.json has no "metrics": "-"
    if info.report is not None:
        meta = info.report.get("metadata")
        if "metadata" in info.report and not isinstance(meta, dict):
            info.problems.append(f"{REPORT}: metadata is not an object")
        elif isinstance(meta, dict) and "data_range" in meta and not isinstance(meta["data_range"], dict):
            info.problems.append(f"{REPORT}: metadata.data_range is not an object")
        for _, path, _ in KEY_METRICS:
            v = _get(info.report.get("metrics"), path)
            if isinstance(v, float) and not math.isfinite(v):
                info.problems.append(f"{REPORT}: metrics.{path} is {v} (not a finite number)")
    return info


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: RFC 8259 JSON has no NaN/Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def find_runs(root: Path | str, max_depth: int = MAX_DEPTH) -> list[RunInfo]:
    """Every run folder under ``root`` (``root`` itself included), in path order. A run folder's
    own sub-folders are searched too (a wf run keeps its trials' backtests inside)."""
    r = Path(root)
    if not r.is_dir():
        raise RunsError(f"{r}: no such folder")
    found: list[RunInfo] = []
    seen: set[Path] = set()  # real paths: a symlinked run is listed once, a symlink loop ends

    def walk(d: Path, depth: int) -> None:
        try:
            real = d.resolve()
        except OSError:
            return
        if real in seen:
            return
        seen.add(real)
        if (d / MARKER).is_file():
            try:
                found.append(load_run(d))
            except RunsError:
                pass  # unreadable marker: not a run folder
        if depth >= max_depth:
            return
        try:
            subs = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        for c in subs:
            walk(c, depth + 1)

    walk(r, 0)
    return found


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.6g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(out)


def ls_table(runs: list[RunInfo], root: Path) -> str:
    rows = []
    for run in runs:
        j = run.to_json(root)
        rows.append([j["run"], j["kind"], str(j["venue"]), j["written_utc"], j["instrument"],
                     f"{j['start']} .. {j['end']}" if j["start"] != "-" else "-", _fmt(j["fills"]),
                     _fmt(j["net_pnl_usdt"]), str(j["config_hash"]),
                     "; ".join(j["problems"]) if j["problems"] else ""])
    return table(rows, ["run", "kind", "venue", "written (UTC)", "instrument", "data window", "fills",
                        "net PnL USDT", "config", "problems"])


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values of nested dicts under dotted keys; lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k in sorted(d):
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(d[k], dict) and d[k]:
                out.update(flatten(d[k], key))
            else:
                out[key] = d[k]
    return out


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    # type-exact: 1 (int) and 1.0 (float) are the same number; True and 1 are not.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def diff(a: RunInfo, b: RunInfo, all_keys: bool = False) -> dict:
    """The JSON form of ``runs diff`` (the text form is rendered from it)."""
    fa, fb = flatten(a.config or {}), flatten(b.config or {})
    config_rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        same = va is not _MISSING and vb is not _MISSING and _same(va, vb)
        if same and not all_keys:
            continue
        config_rows.append({"key": key, "a": None if va is _MISSING else va, "b": None if vb is _MISSING else vb,
                            "only_in": "a" if vb is _MISSING else "b" if va is _MISSING else None, "same": same})
    metric_rows = []
    for label, path, unit in KEY_METRICS:
        va, vb = a.metric(path), b.metric(path)
        delta = None
        if (isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool)
                and not isinstance(vb, bool)):
            delta = vb - va
        metric_rows.append({"metric": label, "path": path, "unit": unit, "a": va, "b": vb, "b_minus_a": delta})
    return {
        "a": a.to_json(), "b": b.to_json(),
        "same_config": a.marker.get("config_hash") == b.marker.get("config_hash") and a.config == b.config,
        "config": config_rows, "metrics": metric_rows,
        "missing": [f"{name}: no readable {what}" for name, run in (("A", a), ("B", b))
                    for what, have in ((RESOLVED_CONFIG, run.config is not None), (REPORT, run.report is not None))
                    if not have],
    }


def diff_text(d: dict) -> str:
    a, b = d["a"], d["b"]
    lines = [f"A  {a['run']}  ({a['kind']}, {a['venue']}, config {a['config_hash']}, {a['instrument']}, "
             f"{a['start']} .. {a['end']})",
             f"B  {b['run']}  ({b['kind']}, {b['venue']}, config {b['config_hash']}, {b['instrument']}, "
             f"{b['start']} .. {b['end']})", ""]
    for m in d["missing"]:
        lines.append(f"note: {m}")
    if a["instrument"] != b["instrument"]:
        lines.append(f"note: different instruments ({a['instrument']} vs {b['instrument']}): metrics are not comparable")
    if (a["start"], a["end"]) != (b["start"], b["end"]):
        lines.append("note: different data windows: metrics cover different periods")
    if d["same_config"]:
        lines.append("config: identical")
    else:
        rows = [[r["key"], "(absent)" if r["only_in"] == "b" else _fmt(r["a"]),
                 "(absent)" if r["only_in"] == "a" else _fmt(r["b"])] for r in d["config"] if not r["same"]]
        lines.append(f"config: {len(rows)} key(s) differ")
        if rows:
            lines.append(table(rows, ["key", "A", "B"]))
    same_rows = [r for r in d["config"] if r["same"]]
    if same_rows:
        lines += ["", f"config keys equal in both ({len(same_rows)}):",
                  table([[r["key"], _fmt(r["a"])] for r in same_rows], ["key", "value"])]
    lines += ["", "metrics:"]
    rows = [[r["metric"] + (f" [{r['unit']}]" if r["unit"] else ""), _fmt(r["a"]), _fmt(r["b"]),
             "" if r["b_minus_a"] is None else ("+" if r["b_minus_a"] > 0 else "") + _fmt(r["b_minus_a"])]
            for r in d["metrics"]]
    lines.append(table(rows, ["metric", "A", "B", "B - A"]))
    return "\n".join(lines)
