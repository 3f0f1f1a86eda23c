"""The ``queue`` benchmark: backtest events/s with each fill model, next to Nautilus' built-in
``queue_position`` matching, on the same slice of the embedded catalog, in the same run.

Each run is a fresh child process (``run_backtest`` on ``config/backtest.toml`` with
``venue.fill_model`` set, ``report.html=false``); the figure is the replay wall time. Models run
in rotation ``repeats`` times so machine noise hits all alike; the best run of each counts.
``cost_vs_nautilus_pct`` = (model wall / nautilus wall − 1) · 100 (``cpu_cost_vs_nautilus_pct``: the
same with the replay's CPU seconds, steadier on a shared machine); the target is that the queue
model costs less than 25 % of the run's time. Each queue model also reports the share of market
events applied late (``late_event_pct``: feed latency above ``venue.response_latency_ms``) and its
fills per cause (docs/queue_model.md).

    python -m tools.bench queue --minutes 60          # also: python -m tools.bench.queue
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "backtest.toml"
MODELS = ("nautilus", "risk_averse", "prob_power", "prob_log")

_CHILD = r"""
import json, sys, time
from pathlib import Path
from mmbot.config.backtest import load_backtest_config
import mmbot.backtest.run as R
cfg_path, out, start, end, model = sys.argv[1:6]
sims = []
_install = R.install_queue_sim
def _capture(*a, **k):  # keep the simulator to read its counters (late events, fill causes)
    c = _install(*a, **k)
    sims.append(c)
    return c
R.install_queue_sim = _capture
sets = ["report.html=false", f'run.start="{start}"', f'run.end="{end}"', f'venue.fill_model="{model}"']
cfg = load_backtest_config(Path(cfg_path), sets)
cpu0 = time.process_time()
o = R.run_backtest(cfg, out_dir=Path(out))
cpu_s = time.process_time() - cpu0
st = sims[0].stats if sims and sims[0] is not None else {}
print(json.dumps({"events": o.events, "wall_s": o.wall_s, "cpu_s": cpu_s, "fills": o.report["metrics"]["counts"]["n_fills"],
                  "market_events": st.get("market_events"), "late_events": st.get("late_events"),
                  "fill_causes": st.get("fill_causes")}))
"""


def _child(out: Path, start: str, end: str, model: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(CONFIG), str(out), start, end, model],
                         capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"queue bench child ({model}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_queue(minutes: float, work: Path, repeats: int = 2) -> dict:
    """Best-of-``repeats`` events/s per fill model and each queue model's cost vs Nautilus'."""
    from tools.bench.window import window

    start, end = window(CONFIG, minutes)
    best: dict[str, dict] = {}
    best_cpu: dict[str, float] = {}
    for i in range(repeats):
        for model in MODELS:
            r = _child(work / f"q-{model}-{i}", start, end, model)
            if model not in best or r["wall_s"] < best[model]["wall_s"]:
                best[model] = r
            best_cpu[model] = min(best_cpu.get(model, r["cpu_s"]), r["cpu_s"])
    base = best["nautilus"]["wall_s"]
    out: dict = {"minutes": minutes, "start": start, "events": best["nautilus"]["events"], "repeats": repeats}
    for model, r in best.items():
        out[f"{model}_events_per_s"] = round(r["events"] / r["wall_s"])
        out[f"{model}_fills"] = r["fills"]
        if model != "nautilus":
            out[f"{model}_cost_vs_nautilus_pct"] = round((r["wall_s"] / base - 1) * 100, 1)
            # CPU seconds of the replay: less sensitive than wall time to other jobs on the machine.
            out[f"{model}_cpu_cost_vs_nautilus_pct"] = round((best_cpu[model] / best_cpu["nautilus"] - 1) * 100, 1)
            # Exchange timeline (docs/queue_model.md): market events applied late (feed latency >
            # venue.response_latency_ms) and the fills per cause.
            out[f"{model}_late_event_pct"] = round(100 * r["late_events"] / max(r["market_events"], 1), 2)
            for cause, n in sorted(r["fill_causes"].items()):
                out[f"{model}_fills_{cause}"] = n
    return out


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tools.bench.queue")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmbot-bench-queue-") as tmp:
        print(json.dumps(bench_queue(args.minutes, Path(tmp), args.repeats)))
