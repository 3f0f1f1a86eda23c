"""Walk-forward throughput: trials per minute with 1 worker and with 2 workers, same run.

One split of the embedded catalog (train 6m, test 3m), random search so that every trial of a
batch is independent, in-memory storage. The wall time covers the whole ``run_walk_forward``
(pool start-up and the out-of-sample run included), so the figures are what a user sees;
1 worker runs inline (no pool), 2 workers use the spawn process pool, whose start-up (spawn
and importing Nautilus in each worker) is also measured on its own so that the steady-state rate
``trials_per_min_2_workers_excl_startup`` can be read beside the end-to-end one. The 1-minute
load average before each setting is recorded: another process on the machine skews the ratio.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "wf.toml"
WF_MINUTES = 9.0  # the window the trials split: 6 min train + 3 min test


def _burn(n: int) -> float:
    """Seconds of a pure-Python loop of ``n`` steps (CPU only)."""
    t0 = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t0


def cpu_parallel_ceiling(workers: int = 2, n: int = 20_000_000) -> float:
    """The speed-up ``workers`` processes get on this machine for pure CPU work (baseline: the
    same loop once in this process). 2.0 on two free cores; about 1.0 where the two vCPUs share
    one physical core or a CPU quota."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    one = _burn(n)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        ex.submit(_burn, 1).result()  # start-up not timed
        t0 = time.perf_counter()
        list(ex.map(_burn, [n] * workers))
        par = time.perf_counter() - t0
    return workers * one / par


def _pool_startup_s(workers: int) -> float:
    """Seconds until a fresh spawn pool of ``workers`` has every worker initialised."""
    from mmbot.tuning.worker import PoolExecutor

    t0 = time.perf_counter()
    pool = PoolExecutor(workers)
    for f in [pool._pool.submit(time.sleep, 0.5) for _ in range(workers)]:
        f.result()
    wall = time.perf_counter() - t0 - 0.5
    pool.shutdown()
    return wall


def _plan(trials: int):
    from mmbot.tuning.runner import prepare
    from tools.bench.window import window

    start, end = window(CONFIG, WF_MINUTES)
    sets = [f'run.start="{start}"', f'run.end="{end}"', "report.html=false",
            'wf.train="6m"', 'wf.test="3m"', 'wf.method="random"', f"wf.trials={trials}",
            f"wf.batch_size={trials}", "wf.min_fills=0", "wf.min_test_minutes=0"]
    return prepare(CONFIG, sets)


def bench_wf(trials: int = 12, workers: tuple[int, ...] = (1, 2)) -> dict:
    """``trials`` trials per setting; returns trials/minute per worker count and the speed-up."""
    from mmbot.tuning.runner import run_walk_forward

    out: dict = {"trials": trials, "train_minutes": 6, "cores_used": list(workers)}
    rates = {}
    for n in workers:
        out[f"load_avg_1m_before_{n}"] = round(os.getloadavg()[0], 2)
        plan = _plan(trials)
        t0 = time.perf_counter()
        outcome = run_walk_forward(plan, workers=n)
        wall = time.perf_counter() - t0
        assert outcome.trials_run == trials
        rates[n] = trials / wall * 60.0
        out[f"trials_per_min_{n}_worker{'s' if n > 1 else ''}"] = round(rates[n], 2)
        if n > 1:
            startup = _pool_startup_s(n)
            out[f"pool_startup_s_{n}_workers"] = round(startup, 2)
            out[f"trials_per_min_{n}_workers_excl_startup"] = round(trials / max(wall - startup, 1e-9) * 60.0, 2)
    if 1 in rates and 2 in rates:
        out["speedup_2_vs_1"] = round(rates[2] / rates[1], 3)
        out["cpu_parallel_ceiling_2"] = round(cpu_parallel_ceiling(2), 3)
    return out
