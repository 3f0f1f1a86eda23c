"""One backtest per task, wherever it runs: in this process, a process pool or a Ray cluster.

A task carries the config file's text and ``--set`` overrides (absolute catalog path, window,
parameters), never data: the worker reads its slice from the catalog with ``run_backtest`` in a
scratch directory and returns the report metrics (plus, for test windows, the net-PnL path). A
worker process decodes a window once and replays it from memory for the next trials on it
(``mmbot.backtest.feed.enable_cache``); the HTML report is never written in tuning.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    """``kind`` "train" (an Optuna trial) or "test" (a split champion out-of-sample)."""

    kind: str
    split: int
    trial: int
    config_name: str
    config_text: str
    overrides: tuple[str, ...]
    keep_equity: bool = False
    unit: str = ""  # per_symbol portfolio tuning: the instrument whose study this trial is of


@dataclass
class Result:
    task: Task
    metrics: dict | None = None       # the backtest report's "metrics" (canonical)
    data_range: dict | None = None    # the backtest report's metadata.data_range
    minute_pnl: list[float] = field(default_factory=list)  # USDT per complete minute (test only)
    equity_ts_ns: list[int] = field(default_factory=list)  # equity grid (test only)
    equity_net: list[float] = field(default_factory=list)  # net PnL on that grid, USDT (test only)
    error: str | None = None          # input rejected (ConfigError/CatalogError) for these parameters
    sizing: dict | None = None        # config.resolved.json "sizing": how USDT sizes became base units
    # a portfolio's test window: instrument id -> {"minute_pnl", "equity_net"} (its own series, USDT);
    # minute_pnl / equity_* above are then the portfolio's (the instruments' summed)
    instruments: dict | None = None
    wall_s: float = 0.0


def evaluate(task: Task) -> Result:
    """Run the task's backtest and return its metrics; rejected inputs come back as ``error``."""
    from mmbot.backtest.feed import enable_cache
    from mmbot.report import metrics as M
    from mmbot.backtest.run import run_backtest
    from mmbot.catalog_store import CatalogError
    from mmbot.config.backtest import ConfigError, load_backtest_config

    t0 = time.perf_counter()
    enable_cache()  # this process replays the same windows trial after trial (mmbot/backtest/feed.py)
    work = Path(tempfile.mkdtemp(prefix="mmbot-wf-"))
    try:
        path = work / task.config_name
        path.write_text(task.config_text)
        try:
            cfg = load_backtest_config(path, list(task.overrides))
            outcome = run_backtest(cfg, out_dir=work / "run")
        except (ConfigError, CatalogError) as e:
            return Result(task, error=str(e).replace(str(work) + os.sep, ""), wall_s=time.perf_counter() - t0)
        report = outcome.report
        res = Result(task, metrics=report["metrics"], data_range=report["metadata"]["data_range"])
        if task.kind == "test":  # the reference price the champion's sizes resolved at (mmbot promote)
            import json

            res.sizing = json.loads((work / "run" / "config.resolved.json").read_text()).get("sizing")
        if task.keep_equity and "portfolio" in report["metrics"]:
            _portfolio_equity(res, work / "run" / "equity.parquet")
        elif task.keep_equity:
            import pandas as pd

            eq = pd.read_parquet(work / "run" / "equity.parquet", columns=["ts_ns", "net_pnl"])
            rng = res.data_range
            res.minute_pnl = M.per_minute_pnl(eq, rng["start_ns"], rng["end_ns"])["pnl"].tolist()
            res.equity_ts_ns = eq["ts_ns"].astype("int64").tolist()
            res.equity_net = eq["net_pnl"].astype("float64").tolist()
        res.wall_s = time.perf_counter() - t0
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _portfolio_equity(res: Result, path: Path) -> None:
    """A portfolio test window's series: each instrument's per-minute net PnL and net-PnL path
    (USDT, its rows of equity.parquet), and the portfolio's: the per-minute values summed minute by
    minute (every instrument reports the same window, so the same minutes), the path summed per
    instant (each instrument's last value carried to the instants of the others)."""
    import numpy as np
    import pandas as pd

    from mmbot.report import metrics as M

    eq = pd.read_parquet(path, columns=["ts_ns", "net_pnl", "instrument_id"])
    rng = res.data_range
    res.instruments, minutes = {}, []
    for iid, rows in sorted(eq.groupby("instrument_id", sort=True), key=lambda kv: kv[0]):
        rows = rows[["ts_ns", "net_pnl"]].reset_index(drop=True)
        per_min = M.per_minute_pnl(rows, rng["start_ns"], rng["end_ns"])["pnl"].to_numpy(dtype=np.float64)
        minutes.append(per_min)
        res.instruments[str(iid)] = {"minute_pnl": per_min.tolist(),
                                     "equity_net": rows["net_pnl"].astype("float64").tolist()}
    n = min(len(m) for m in minutes)
    res.minute_pnl = np.sum([m[:n] for m in minutes], axis=0).tolist() if n else []
    wide = eq.pivot_table(index="ts_ns", columns="instrument_id", values="net_pnl", aggfunc="last").sort_index()
    total = wide.ffill().fillna(0.0).sum(axis=1)
    res.equity_ts_ns = total.index.astype("int64").tolist()
    res.equity_net = total.astype("float64").tolist()


def evaluate_text_ref(task: Task, config_text: str) -> Result:
    """:func:`evaluate` of a task shipped without its config text (Ray: the text comes from the
    object store, resolved from the reference the driver put once)."""
    res = evaluate(replace(task, config_text=config_text))
    res.task = task  # the light task goes back: the text is not returned per trial either
    return res


def _init_pool_worker() -> None:
    """Pool workers leave Ctrl-C to the driver (it stops the pool), exit when the driver dies
    (a killed driver must not leave backtests running) and import Nautilus once."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    import mmbot.backtest.run  # noqa: F401


class InlineExecutor:
    """Runs each task when submitted, in this process (``--workers 1``)."""

    name = "inline"

    def submit(self, task: Task) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(evaluate(task))
        except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt must reach the runner
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            fut.set_exception(e)
        return fut

    def shutdown(self, interrupted: bool = False) -> None:
        pass


class PoolExecutor:
    """A spawn-context process pool of ``workers`` processes (spawn: Nautilus is not fork-safe)."""

    name = "process-pool"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                         initializer=_init_pool_worker)

    def submit(self, task: Task) -> Future:
        return self._pool.submit(evaluate, task)

    def shutdown(self, interrupted: bool = False) -> None:
        if interrupted:
            procs = list((self._pool._processes or {}).values())  # no public way to stop running tasks
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(5)
        else:
            self._pool.shutdown(wait=True)


class RayExecutor:
    """Tasks as Ray remote functions (1 CPU each). ``address`` "local" starts a private local
    instance with ``workers`` CPUs; anything else (``auto``, ``ray://host:10001``) connects."""

    name = "ray"

    def __init__(self, address: str, workers: int) -> None:
        import logging

        import ray

        self._ray = ray
        self._own = address == "local"
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                                  "include_dashboard": False}
        if self._own:
            ray.init(num_cpus=workers, **kwargs)
        else:
            ray.init(address=address, **kwargs)
        self._remote = ray.remote(num_cpus=1, max_retries=2)(evaluate_text_ref)
        self._texts: dict[str, Any] = {}  # config text -> its ObjectRef (ray.put once per run)

    def submit(self, task: Task) -> Future:
        """The task without its config text, and the text as an object reference put ONCE per run
        (Ray's documented anti-pattern: a large argument passed by value is serialised into
        every task; a top-level ObjectRef argument is fetched from the object store instead). The
        catalog is never shipped: each worker reads it from its path (the same on every node)."""
        ref = self._texts.get(task.config_text)
        if ref is None:
            ref = self._texts[task.config_text] = self._ray.put(task.config_text)
        return self._remote.remote(replace(task, config_text=""), ref).future()

    def shutdown(self, interrupted: bool = False) -> None:
        self._ray.shutdown()
