"""Mutation check of the queue simulator: ``python -m tools.crosscheck --mutants [NAME,...]``.

(``python -m tools.crosscheck.mutants [NAME ...]`` runs the mutants of the cross-check's OWN
checks against tests/test_crosscheck.py instead.)

Each mutant breaks the simulator in one way by monkeypatching a class attribute in a fresh
subprocess (environment variable ``MMBOT_CROSSCHECK_MUTANT``; nothing is edited on disk), then
runs (1) the cross-check on a window of the embedded hour against hftbacktest's fills, which do not
depend on mmbot's code and are computed once by the parent (``--hbt-cache``), and (2) the queue
scenario tests (tests/test_queue_model.py, test_queue_engine.py, test_queue_timeline.py) with this
module loaded as a pytest plugin (``-p tools.crosscheck.mutants``) that applies the same patch.
A mutant is caught when the cross-check fails (a difference no rule explains, or the emulation
harness no longer reproduces mmbot's fills) or a scenario test fails. A mutant nothing catches
fails the check (exit 1). Table: docs/crosscheck.md."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "MMBOT_CROSSCHECK_MUTANT"
ROOT = Path(__file__).resolve().parents[2]
SCENARIO_TESTS = ("tests/test_queue_model.py", "tests/test_queue_engine.py", "tests/test_queue_timeline.py")


# -- the mutants (each: a function that patches; docstring = what it breaks) -----------------------

def cancels_all_from_ahead():
    """Every unexplained size decrease is taken from ahead of us (prob models: p = 0)."""
    from adapters.sim.queue import QueueModel

    QueueModel.behind_share = lambda self, ahead, behind: 0.0


def cancels_all_from_behind():
    """Every unexplained size decrease is taken from behind us (prob models: p = 1)."""
    from adapters.sim.queue import QueueModel

    QueueModel.behind_share = lambda self, ahead, behind: 0.0 if self.kind == "risk_averse" else 1.0


def join_half_visible_queue():
    """An arriving order queues behind half the visible size instead of all of it."""
    from adapters.sim.queue import Level

    orig = Level.join

    def join(self, key, lots):
        o = orig(self, key, lots)
        if math.isfinite(o.ahead):
            o.ahead = o.ahead / 2.0
        return o

    Level.join = join


def swapped_probability():
    """The share taken from behind uses f(ahead) / (f(ahead) + f(behind)) (f of the wrong side)."""
    from adapters.sim.queue import QueueModel

    def behind_share(self, ahead, behind):
        if self.kind == "risk_averse":
            return 0.0
        fb, fa = self.f(max(behind, 0.0)), self.f(max(ahead, 0.0))
        return fa / (fb + fa) if fb + fa > 0.0 else 0.0

    QueueModel.behind_share = behind_share


def unknown_depth_ignored():
    """Issue 12 item 1.2 undone: a level beyond the visible depth counts as known and empty
    (an order joining there starts at the front)."""
    from adapters.sim.exec_client import QueueSimExecutionClient as C

    orig = C._visibility
    C._visibility = lambda self, side, ticks: (True, orig(self, side, ticks)[1])


def receive_order_matching():
    """Issue 12 item 1.4 undone: the exchange applies every market event when it is received, in
    receive order (response latency forced to 0 inside the simulator, the old behaviour)."""
    from adapters.sim.exec_client import QueueSimExecutionClient as C

    orig = C.__init__

    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        self._resp_ns = 0

    C.__init__ = __init__


def trade_at_price_is_through():
    """Off by one level: a trade AT our price fills us in full as if it printed through it."""
    from adapters.sim import exec_client as ec

    def _apply_trade(self, x, tick):
        ticks = tick.price.raw // self._tick_raw
        for key in list(self._levels):
            side, lt = key
            if (side == ec._BUY and lt >= ticks) or (side == ec._SELL and lt <= ticks):
                self._fill_level_full(key, "trade_through", x)

    ec.QueueSimExecutionClient._apply_trade = _apply_trade


def aggressor_side_swapped():
    """A trade at our price consumes our queue when its aggressor is on OUR side (a buyer at our
    bid) instead of the other side."""
    from nautilus_trader.model.enums import AggressorSide

    from adapters.sim import exec_client as ec

    def _apply_trade(self, x, tick):
        ticks = tick.price.raw // self._tick_raw
        lots = self.lots(tick.size)
        aggr = tick.aggressor_side
        for key in list(self._levels):
            side, lt = key
            if side == ec._BUY:
                if lt > ticks:
                    self._fill_level_full(key, "trade_through", x)
                elif lt == ticks and aggr != AggressorSide.SELLER:
                    self._fill_fifo(key, lots, x)
            else:
                if lt < ticks:
                    self._fill_level_full(key, "trade_through", x)
                elif lt == ticks and aggr != AggressorSide.BUYER:
                    self._fill_fifo(key, lots, x)

    ec.QueueSimExecutionClient._apply_trade = _apply_trade


def amend_price_keeps_priority():
    """An amend to a new price keeps the order's queue position (Bybit: a new price loses it)."""
    from adapters.sim.exec_client import QueueSimExecutionClient as C

    orig = C._amend_arrive

    def _amend_arrive(self, x, command, o):
        before = None
        if o is not None and o.live and not o.gone:
            lvl = self._levels.get((o.side, o.ticks))
            before = (o.ticks, next((q.ahead for q in lvl.orders if q.key == o.order.client_order_id), None)) \
                if lvl else None
        orig(self, x, command, o)
        if before and before[1] is not None and o.live and not o.gone and o.ticks != before[0]:
            for q in self._levels[(o.side, o.ticks)].orders:
                if q.key == o.order.client_order_id:
                    q.ahead = before[1]

    C._amend_arrive = _amend_arrive


def trades_counted_twice():
    """The book update that shows a trade is counted as cancellations as well (the traded volume
    since the last change is not subtracted)."""
    from adapters.sim.queue import Level

    orig = Level.on_book

    def on_book(self, model, new_size):
        self.traded = 0.0
        return orig(self, model, new_size)

    Level.on_book = on_book


def queue_fill_ignores_trade_size():
    """A trade that reaches our order fills it completely, whatever the trade's remaining size."""
    from adapters.sim.queue import Level

    orig = Level.on_trade

    def on_trade(self, lots):
        fills = orig(self, lots)
        out = []
        for o, q in fills:
            out.append((o, q + o.leaves))
            o.leaves = 0
        if out:
            self.orders = [o for o in self.orders if o.leaves > 0]
        return out

    Level.on_trade = on_trade


def post_only_ignored():
    """A post-only order that would cross on arrival is accepted (and then filled by the book)."""
    from adapters.sim.exec_client import QueueSimExecutionClient as C

    C._crosses = lambda self, side, ticks: False


MUTANTS = {f.__name__: f for f in (
    cancels_all_from_ahead, cancels_all_from_behind, join_half_visible_queue, swapped_probability,
    unknown_depth_ignored, receive_order_matching, trade_at_price_is_through, aggressor_side_swapped,
    amend_price_keeps_priority, trades_counted_twice, queue_fill_ignores_trade_size, post_only_ignored)}
REQUIRED = ("cancels_all_from_ahead", "join_half_visible_queue", "swapped_probability", "unknown_depth_ignored",
            "receive_order_matching")  # issue 12 section 4


_APPLIED: set[str] = set()  # once per process: a second wrapper would undo some mutants


def apply(name: str) -> None:
    if name not in MUTANTS:
        raise SystemExit(f"crosscheck: unknown mutant {name!r} (one of {', '.join(MUTANTS)})")
    if name not in _APPLIED:
        _APPLIED.add(name)
        MUTANTS[name]()


# -- mutants of the cross-check's own guards (``python -m tools.crosscheck.mutants``) ---------------
# Each breaks one check of the tool; tests/test_crosscheck.py must fail. Applied like the simulator
# mutants (environment variable TOOL_ENV, in the pytest process and in every cross-check subprocess).

TOOL_ENV = "MMBOT_CROSSCHECK_TOOL_MUTANT"


def tolerance_10pct():
    """Totals tolerance widened to the old 10 %."""
    import tools.crosscheck.__main__ as m

    m.TOTAL_TOL_REL = 0.10


def other_models_check_dropped():
    """The check that the tolerance rejects every pairing of two different models is dropped."""
    import tools.crosscheck.__main__ as m

    m._discrimination = lambda rows: {"pairs": [], "ok": True}


def ordering_inverted():
    """The model-ordering check compares the wrong way."""
    import tools.crosscheck.__main__ as m

    orig = m._ordering

    def _ordering(rows):
        od = orig(rows)
        if "mmbot" in od:
            od["ok"] = not od["ok"]
        return od

    m._ordering = _ordering


def unexplained_ignored():
    """Differences no rule explains no longer fail the model."""
    import tools.crosscheck.__main__ as m

    orig = m.check_model

    def check_model(*args, **kwargs):
        row, trace = orig(*args, **kwargs)
        row["unexplained"] = 0
        row["ok"] = row["harness_reproduces_mmbot"] and row["total_ok"]
        return row, trace

    m.check_model = check_model


def harness_check_skipped():
    """Differences are attributed without checking that the emulation reproduces mmbot's own
    fills with every rule off."""
    import tools.crosscheck.__main__ as m
    from tools.crosscheck import compare

    orig = m._stage_runs

    def _stage_runs(*args):
        real = compare.differing

        def differing(a, b):  # the harness comparison is the first call: report no difference
            compare.differing = real
            return set()

        compare.differing = differing
        try:
            return orig(*args)
        finally:
            compare.differing = real

    m._stage_runs = _stage_runs


def exact_fill_workaround_dropped():
    """hftbacktest's orders are no longer submitted 1e-7 lot short."""
    from tools.crosscheck import hbt_side

    hbt_side.HBT_QTY_EPS = 0.0


def emulated_rounding_floors():
    """The overshoot_rounded emulation floors instead of rounding."""
    from tools.crosscheck import rules

    rules._rust_round = lambda x: math.floor(x)


TOOL_MUTANTS = {f.__name__: f for f in (
    tolerance_10pct, other_models_check_dropped, ordering_inverted, unexplained_ignored, harness_check_skipped,
    exact_fill_workaround_dropped, emulated_rounding_floors)}


def apply_tool(name: str) -> None:
    if name not in TOOL_MUTANTS:
        raise SystemExit(f"crosscheck: unknown tool mutant {name!r} (one of {', '.join(TOOL_MUTANTS)})")
    if "tool:" + name not in _APPLIED:
        _APPLIED.add("tool:" + name)
        TOOL_MUTANTS[name]()


def pytest_configure(config):  # pytest plugin: ``-p tools.crosscheck.mutants``
    name = os.environ.get(ENV)
    if name:
        apply(name)
    name = os.environ.get(TOOL_ENV)
    if name:
        apply_tool(name)


def tool_main(names=None) -> int:
    """Each mutant of the tool's own guards against tests/test_crosscheck.py (a fresh pytest
    process each): every one must make a test fail."""
    names = names or list(TOOL_MUTANTS)
    caught = 0
    for n in names:
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-p",
                            "tools.crosscheck.mutants", "tests/test_crosscheck.py"], cwd=ROOT,
                           env={**os.environ, TOOL_ENV: n}, capture_output=True, text=True)
        failed = [f.split("::")[-1] for f in re.findall(r"^FAILED (\S+)", p.stdout, flags=re.M)]
        caught += p.returncode != 0
        print(f"{n:<30} {'caught' if p.returncode else 'NOT CAUGHT'} by {', '.join(failed) or '-'} "
              f"({time.time() - t:.0f} s)", flush=True)
    print(f"{caught} of {len(names)} tool mutants caught")
    return 0 if caught == len(names) else 1



# -- runner ---------------------------------------------------------------------------------------

def _crosscheck_args(a, out_dir: Path, cache: Path) -> list[str]:
    return ["--catalog", a.catalog, "--instrument", a.instrument, "--start-min", str(a.start_min),
            "--minutes", str(a.mutant_window_min), "--models", ",".join(a.model_list),
            "--latency-ms", str(a.latency_ms), *(["--response-ms", str(a.response_ms)] if a.response_ms is not None else []),
            "--qty-lots", str(a.qty_lots), "--keep-ticks", str(a.keep_ticks), "--step-s", str(a.step_s),
            "--out-dir", str(out_dir), "--hbt-cache", str(cache), "--quiet"]


def run_one(name: str, a, cache: Path, work: Path, checks=("crosscheck", "scenarios"), pytest_args=(),
            baseline: dict | None = None) -> dict:
    """Mutant ``name`` against the cross-check (``a``: its arguments; ``cache``: hftbacktest's fills;
    ``baseline``: {model: fills differing from hftbacktest without the mutant}) and/or the scenario
    tests (``pytest_args``: extra pytest arguments, e.g. ``-k``)."""
    baseline = baseline or {}
    env = {**os.environ, ENV: name}
    res = {"mutant": name, "what": " ".join((MUTANTS[name].__doc__ or "").split())}
    if "crosscheck" in checks:
        out = work / name
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "tools.crosscheck", *_crosscheck_args(a, out, cache)], cwd=ROOT,
                           env=env, capture_output=True, text=True)
        how = []
        rep = None
        if (out / "crosscheck.json").exists():
            rep = json.loads((out / "crosscheck.json").read_text())
            for r in rep["models"]:
                vs = f"{baseline[r['model']]} -> {r['differing_keys']}" if r["model"] in baseline else str(r["differing_keys"])
                if not r["harness_reproduces_mmbot"]:
                    how.append(f"{r['model']}: fills differing from hftbacktest {vs}, none explained (the emulation "
                               f"no longer reproduces mmbot)")
                elif r["unexplained"]:
                    how.append(f"{r['model']}: fills differing from hftbacktest {vs}, {r['unexplained']} unexplained")
                elif not r["total_ok"]:
                    how.append(f"{r['model']}: totals off by {r['total_gap_after_defects']}")
            if not rep["ordering"]["ok"]:
                how.append(f"model ordering broken {rep['ordering']}")
        if p.returncode not in (0, 1):
            how.append(f"crosscheck exited {p.returncode}: {' '.join(p.stderr.strip().splitlines()[-1:])}")
        res["crosscheck"] = {"caught": p.returncode != 0, "how": how, "wall_s": round(time.time() - t, 1)}
    if "scenarios" in checks:
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-p",
                            "tools.crosscheck.mutants", *pytest_args, *SCENARIO_TESTS], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        failed = re.findall(r"^FAILED (\S+)", p.stdout, flags=re.M)
        res["scenarios"] = {"caught": p.returncode != 0, "failed": failed,
                            "summary": (p.stdout.strip().splitlines() or [""])[-1], "wall_s": round(time.time() - t, 1)}
    res["caught"] = any(res[c]["caught"] for c in checks)
    return res


def main(a) -> int:
    """``a``: the parsed crosscheck arguments; ``a.mutants``: "all" or a comma-separated list."""
    from tools.crosscheck.__main__ import crosscheck

    names = list(MUTANTS) if a.mutants == "all" else [n for n in a.mutants.split(",") if n]
    for n in names:
        if n not in MUTANTS:
            print(f"crosscheck: --mutants: unknown mutant {n!r} (one of {', '.join(MUTANTS)})", file=sys.stderr)
            return 2
    checks = tuple(c for c in getattr(a, "mutant_checks", "crosscheck,scenarios").split(",") if c)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmbot-mutants-") as tmp:
        work = Path(tmp)
        cache = work / "hbt_cache.json"
        # The unmutated cross-check on the same window must pass, else a mutant proves nothing;
        # it also computes hftbacktest's fills once for every mutant.
        base = argparse_namespace(a, minutes=a.mutant_window_min, out_dir=str(work / "baseline"), hbt_cache=str(cache),
                                  quiet=True)
        rep = crosscheck(base)
        print(f"baseline (no mutant), minutes {a.start_min:g}-{a.start_min + a.mutant_window_min:g}, models "
              f"{','.join(a.model_list)}: cross-check {'passes' if rep['ok'] else 'FAILS'}", flush=True)
        if not rep["ok"]:
            return 1
        results = []
        base_diff = {r["model"]: r["differing_keys"] for r in rep["models"]}
        for n in names:
            r = run_one(n, a, cache, work, checks, baseline=base_diff)
            results.append(r)
            cc = r.get("crosscheck", {})
            sc = r.get("scenarios", {})
            print(f"{n:<30} {'caught' if r['caught'] else 'NOT CAUGHT'}; crosscheck: "
                  f"{'; '.join(cc.get('how', [])) or ('-' if cc else 'not run')}; scenario tests: "
                  f"{len(sc.get('failed', []))} failed" + (f" ({', '.join(t.split('::')[-1] for t in sc['failed'][:3])}"
                                                          f"{', ...' if len(sc['failed']) > 3 else ''})" if sc.get("failed") else ""),
                  flush=True)
    summary = {"window_min": [a.start_min, a.start_min + a.mutant_window_min], "models": a.model_list, "checks": checks,
               "mutants": results, "all_caught": all(r["caught"] for r in results)}
    tmp_out = out / "mutants.json.tmp"
    tmp_out.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp_out, out / "mutants.json")
    print(f"{sum(r['caught'] for r in results)} of {len(results)} mutants caught; wrote {out / 'mutants.json'}")
    return 0 if summary["all_caught"] else 1


def argparse_namespace(a, **over):
    import argparse

    d = dict(vars(a))
    d.update(over)
    d["mutants"] = None
    return argparse.Namespace(**d)


if __name__ == "__main__":
    sys.exit(tool_main([n for n in sys.argv[1:]]))
