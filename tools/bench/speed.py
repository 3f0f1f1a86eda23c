"""Issue 14's targets, measured in one sitting: ``python -m tools.bench speed``.

- **old vs new**: the full default backtest of the code at ``--baseline-ref`` (a git ref, default
  ``integrate``: checked out with ``git archive`` into a scratch folder and imported from there)
  against this checkout, alternating, ``--repeats`` times each, on (a) the embedded XRPUSDT hour
  and (b) a generated ob500-like XRPUSDT hour (500 levels a side, ~80 rows per message). This
  checkout is also run with ``run.feed = "per_delta"`` (what the per-message feed adds alone).
  Rows/s = stream rows (order-book rows + trades) / replay seconds; the ratio to read on a shared
  machine is the CPU one (rows per CPU second of the whole run, setup and report included).
- **wf**: trials per minute of ``mmbot wf`` (1 worker, inline, 12 random trials on one split of
  the embedded hour) old vs new.
- **warmup**: ``run.warmup`` "replay" vs "snapshot" (this checkout) on a late window of a generated
  4-hour stream: a backtest and a wf split (``warmup_start``).
- **memory**: peak RSS of this checkout's full run on a generated 1-hour vs 4-hour XRPUSDT
  stream (the old code's too, for the ratio it had).
- **hftbacktest**: hftbacktest 2.4.4's numba market maker (tools/crosscheck/hbt_side.py) on the
  generated ob500 hour's rows, rows/s beside mmbot's on the same catalog.

Every figure is reported with the spread of its repeats (min / median / max); nothing here is a
pass/fail test.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("fills.parquet", "orders.parquet", "equity.parquet", "report.json")

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mmbot.config.backtest import load_backtest_config
from mmbot.backtest.run import run_backtest
cfg_path, out = sys.argv[1:3]
sets = ["report.html=false", "run.progress=false"] + json.loads(sys.argv[3])
cfg = load_backtest_config(Path(cfg_path), sets)
c0 = time.process_time()
o = run_backtest(cfg, out_dir=Path(out))
print(json.dumps({"rows": o.events, "replay_s": o.wall_s, "cpu_s": time.process_time() - c0,
                  "feed": getattr(o, "feed", "per_delta(old)"),
                  "fills": o.report["metrics"]["counts"]["n_fills"],
                  # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child of a
                  # large parent reported the parent's peak (the old path's "flat" 752.4 / 798.6 MB)
                  "peak_rss_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""

_WF_CHILD = r"""
import json, sys, time
from pathlib import Path
from mmbot.tuning.runner import prepare, run_walk_forward
root, catalog, trials, warmup = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
start, end, train, test = sys.argv[5:9]
sets = [f'run.start="{start}"', f'run.end="{end}"', "report.html=false",
        *([f'run.warmup="{warmup}"'] if warmup else []),
        f'wf.train="{train}"', f'wf.test="{test}"', 'wf.method="random"', f"wf.trials={trials}",
        f"wf.batch_size={trials}", "wf.min_fills=0", "wf.min_test_minutes=0", f'run.catalog="{catalog}"']
plan = prepare(root / "config" / "wf.toml", sets)
t0 = time.perf_counter()
c0 = time.process_time()
out = run_walk_forward(plan, workers=1)
wall = time.perf_counter() - t0
print(json.dumps({"trials": out.trials_run, "wall_s": wall, "cpu_s": time.process_time() - c0}))
"""


def _wf_child(root: Path, trials: int, *, catalog: Path | None = None, warmup: str = "",
              window: tuple[str, str] = ("2024-12-01T07:30:00Z", "2024-12-01T07:39:00Z"),
              split: tuple[str, str] = ("6m", "3m")) -> dict:
    """One ``mmbot wf`` of ``trials`` random trials, 1 worker, with the code at ``root``: its
    trials per wall and CPU second. ``warmup`` "" leaves ``run.warmup`` to the config (the only
    choice old code has)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", _WF_CHILD, str(root), str(catalog or root / "catalog"), str(trials),
                        warmup, *window, *split], cwd=root, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"wf bench child failed in {root}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def baseline_tree(ref: str, work: Path) -> tuple[Path, str]:
    """The code at ``ref`` in a scratch folder (``git archive``), and its commit."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    dst = work / f"baseline-{commit[:10]}"
    if not dst.exists():
        dst.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst, commit


def _child(root: Path, config: Path, out: Path, sets: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(config), str(out), json.dumps(sets)], cwd=root, env=env,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"bench child failed in {root}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _spread(values: list[float], digits: int = 0) -> dict:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def generated_catalog(work: Path, minutes: float, depth: int, seed: int = 11) -> Path:
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools.gen_synthetic import generate, parse_start, write_recording

    cat = work / f"cat-xrp-ob{depth}-{minutes:g}m"
    if not cat.exists():
        rec = work / f"rec-xrp-ob{depth}-{minutes:g}m.jsonl.gz"
        write_recording(rec, generate("XRPUSDT", parse_start("2024-12-01T07:30:00Z"), minutes, seed, depth=depth))
        import_paths([rec], cat, InstrumentRegistry())
        rec.unlink()
    return cat


def old_vs_new(base: Path, catalog: Path | None, repeats: int, work: Path, label: str) -> dict:
    """Alternating runs: old code, new code (auto feed), new code per delta."""
    sets = [f'run.catalog="{catalog}"'] if catalog is not None else []
    runs: dict[str, list[dict]] = {"old": [], "new": [], "new_per_delta": []}
    for _ in range(repeats):
        runs["old"].append(_child(base, base / "config" / "backtest.toml", work / f"o-{label}", sets))
        runs["new"].append(_child(REPO, REPO / "config" / "backtest.toml", work / f"n-{label}", sets))
        runs["new_per_delta"].append(_child(REPO, REPO / "config" / "backtest.toml", work / f"d-{label}",
                                            [*sets, 'run.feed="per_delta"']))
    out: dict = {"rows": runs["new"][0]["rows"], "fills_old": runs["old"][0]["fills"],
                 "fills_new": runs["new"][0]["fills"], "feed_new": runs["new"][0]["feed"],
                 # the last repeat's outputs, byte for byte: a speed-up that changed a fill shows here
                 "outputs_differ_from_old": [n for n in OUTPUTS if (work / f"o-{label}" / n).read_bytes()
                                             != (work / f"n-{label}" / n).read_bytes()],
                 "per_delta_outputs_differ": [n for n in OUTPUTS if (work / f"d-{label}" / n).read_bytes()
                                              != (work / f"n-{label}" / n).read_bytes()]}
    for k, rs in runs.items():
        out[f"{k}_rows_per_s"] = _spread([r["rows"] / r["replay_s"] for r in rs])
        out[f"{k}_rows_per_cpu_s"] = _spread([r["rows"] / r["cpu_s"] for r in rs])
    pairs = list(zip(runs["old"], runs["new"], strict=True))
    out["new_vs_old_rows_per_s"] = _spread([(n["rows"] / n["replay_s"]) / (o["rows"] / o["replay_s"]) for o, n in pairs], 2)
    out["new_vs_old_cpu"] = _spread([o["cpu_s"] / n["cpu_s"] for o, n in pairs], 2)
    pd_pairs = list(zip(runs["old"], runs["new_per_delta"], strict=True))
    out["per_delta_vs_old_cpu"] = _spread([o["cpu_s"] / n["cpu_s"] for o, n in pd_pairs], 2)
    return out


def wf_old_vs_new(base: Path, repeats: int, trials: int = 12) -> dict:
    rates: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(repeats):
        for name, root in (("old", base), ("new", REPO)):
            res = _wf_child(root, trials)
            rates[name].append(res["trials"] / res["wall_s"] * 60)
            cpu[name].append(res["trials"] / res["cpu_s"] * 60)
    return {"trials": trials, "old_trials_per_min": _spread(rates["old"], 1), "new_trials_per_min": _spread(rates["new"], 1),
            "new_vs_old": _spread([n / o for o, n in zip(rates["old"], rates["new"], strict=True)], 2),
            "new_vs_old_cpu": _spread([n / o for o, n in zip(cpu["old"], cpu["new"], strict=True)], 2)}


def _wf_late(root: Path, cat: Path, trials: int, mode: str) -> dict:
    return _wf_child(root, trials, catalog=cat, warmup="" if mode == "old" else mode,
                     window=("2024-12-01T11:00:00Z", "2024-12-01T11:30:00Z"), split=("20m", "10m"))


def warmup_start(base: Path, work: Path, repeats: int, trials: int = 6) -> dict:
    """``run.warmup`` "replay" vs "snapshot" in this checkout (docs/config.md "Windows between
    snapshots"), alternating, on the generated 4-hour ob50 stream (a snapshot every 2 hours, as a
    resubscribe gives): one backtest of its 20 minutes from 11:05 (warm-up from the 09:30
    snapshot) and one wf split there (train 11:00-11:20, test 11:20-11:30, ``trials`` random
    trials, 1 worker), and the same wf split with the baseline's code (old: replay only). Fills must
    be the same (venue order ids aside)."""
    import pandas as pd

    cat = generated_catalog(work, 240, 50)
    sets = [f'run.catalog="{cat}"', 'run.start="2024-12-01T11:05:00Z"', 'run.end="2024-12-01T11:25:00Z"']
    bt: dict[str, list[dict]] = {"replay": [], "snapshot": []}
    wf: dict[str, list[dict]] = {"replay": [], "snapshot": [], "old": []}
    for _ in range(repeats):
        for mode in ("replay", "snapshot"):
            bt[mode].append(_child(REPO, REPO / "config" / "backtest.toml", work / f"warm-{mode}",
                                   [*sets, f'run.warmup="{mode}"']))
            wf[mode].append(_wf_late(REPO, cat, trials, mode))
        wf["old"].append(_wf_late(base, cat, trials, "old"))  # the baseline's code (its only warm-up: replay)
    fills = [pd.read_parquet(work / f"warm-{m}" / "fills.parquet").drop(columns=["venue_order_id"]) for m in bt]
    return {"backtest_cpu_s_replay": _spread([r["cpu_s"] for r in bt["replay"]], 2),
            "backtest_cpu_s_snapshot": _spread([r["cpu_s"] for r in bt["snapshot"]], 2),
            "backtest_snapshot_vs_replay_cpu": _spread([a["cpu_s"] / b["cpu_s"] for a, b in
                                                        zip(bt["replay"], bt["snapshot"], strict=True)], 2),
            "fills": len(fills[0]), "fills_same": bool(fills[0].equals(fills[1])),
            "wf_trials": trials,
            "wf_trials_per_cpu_min_replay": _spread([r["trials"] / r["cpu_s"] * 60 for r in wf["replay"]], 1),
            "wf_trials_per_cpu_min_snapshot": _spread([r["trials"] / r["cpu_s"] * 60 for r in wf["snapshot"]], 1),
            "wf_snapshot_vs_replay_cpu": _spread([a["cpu_s"] / b["cpu_s"] for a, b in
                                                  zip(wf["replay"], wf["snapshot"], strict=True)], 2),
            "wf_trials_per_cpu_min_old": _spread([r["trials"] / r["cpu_s"] * 60 for r in wf["old"]], 1),
            "wf_snapshot_vs_old_cpu": _spread([a["cpu_s"] / b["cpu_s"] for a, b in
                                               zip(wf["old"], wf["snapshot"], strict=True)], 2),
            "wf_snapshot_vs_old_wall": _spread([(b["trials"] / b["wall_s"]) / (a["trials"] / a["wall_s"]) for a, b in
                                                zip(wf["old"], wf["snapshot"], strict=True)], 2)}


def memory(base: Path, work: Path, minutes: tuple[float, float] = (60, 240)) -> dict:
    out: dict = {}
    for name, root in (("new", REPO), ("old", base)):
        peaks = []
        for m in minutes:
            cat = generated_catalog(work, m, 50)
            peaks.append(_child(root, root / "config" / "backtest.toml", work / f"mem-{name}-{m:g}",
                                [f'run.catalog="{cat}"'])["peak_rss_mb"])
        out[f"{name}_peak_rss_mb_{minutes[0]:g}m"] = round(peaks[0], 1)
        out[f"{name}_peak_rss_mb_{minutes[1]:g}m"] = round(peaks[1], 1)
        out[f"{name}_long_vs_short"] = round(peaks[1] / peaks[0], 3)
    return out


def hftbacktest_rows(catalog: Path, repeats: int, mmbot_rows_per_s: float | None, minutes: float = 60.0) -> dict:
    """hftbacktest 2.4.4 replaying the catalog's rows with the crosscheck's numba quoting policy
    (tools/crosscheck: prob_power(3), 10 ms latencies, 10 lots at the touch, a step a second over the
    whole range), rows/s; JIT compile excluded (a warm-up run on the first minutes)."""
    from tools.crosscheck import stream
    from tools.crosscheck.hbt_side import run_hbt

    s = stream.load(str(catalog), "XRPUSDT-LINEAR.BYBIT", 0.0, minutes, 1.0)
    rows = len(s.deltas) + len(s.trades)
    ev = stream.hbt_events(s, 1.0 / s.lot)

    def once(n_steps: int, end_ns: int) -> None:
        run_hbt(ev, "prob_power", 3.0, 10.0, 10.0, s.tick, s.quote_start_ns, n_steps, s.step_ns, end_ns, 10, 3)

    once(5, s.quote_start_ns + 6 * s.step_ns)  # numba compile
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        once(s.n_steps, s.end_ns)
        rates.append(rows / (time.perf_counter() - t))
    out = {"rows": rows, "hftbacktest_rows_per_s": _spread(rates)}
    if mmbot_rows_per_s:
        out["mmbot_rows_per_s"] = round(mmbot_rows_per_s)
        out["hftbacktest_vs_mmbot"] = round(statistics.median(rates) / mmbot_rows_per_s, 1)
    return out


PARTS = ("embedded", "ob500", "wf", "warmup", "memory", "hftbacktest")


def bench_speed(repeats: int = 3, baseline_ref: str = "integrate", parts: tuple[str, ...] = PARTS) -> dict:
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-speed-") as tmp:
        work = Path(tmp)
        base, commit = baseline_tree(baseline_ref, work)
        out: dict = {"baseline_ref": baseline_ref, "baseline_commit": commit[:12], "repeats": repeats,
                     "load_avg_1m_before": round(os.getloadavg()[0], 2)}
        if "embedded" in parts:
            out["embedded_hour"] = old_vs_new(base, None, repeats, work, "emb")
            print(json.dumps({"embedded_hour": out["embedded_hour"]}), flush=True)
        ob500 = None
        if "ob500" in parts or "hftbacktest" in parts:
            ob500 = generated_catalog(work, 60, 500)
        if "ob500" in parts:
            out["ob500_hour"] = old_vs_new(base, ob500, repeats, work, "ob500")
            print(json.dumps({"ob500_hour": out["ob500_hour"]}), flush=True)
        if "wf" in parts:
            out["wf"] = wf_old_vs_new(base, repeats)
            print(json.dumps({"wf": out["wf"]}), flush=True)
        if "warmup" in parts:
            out["warmup"] = warmup_start(base, work, repeats)
            print(json.dumps({"warmup": out["warmup"]}), flush=True)
        if "memory" in parts:
            out["memory"] = memory(base, work)
            print(json.dumps({"memory": out["memory"]}), flush=True)
        if "hftbacktest" in parts:
            mm = out.get("ob500_hour", {}).get("new_rows_per_s", {}).get("median")
            out["hftbacktest"] = hftbacktest_rows(ob500, repeats, mm)
            print(json.dumps({"hftbacktest": out["hftbacktest"]}), flush=True)
        out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        sitting = {k: out[k] for k in ("baseline_ref", "baseline_commit", "repeats", "load_avg_1m_before",
                                       "load_avg_1m_after")}
        sitting["utc"] = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
        for part in out.values():
            if isinstance(part, dict):
                part["sitting"] = sitting
        return out
