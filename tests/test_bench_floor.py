"""tools/bench/floor.py's attribution rule (self time, leaf first): which samples of a py-spy
``--native`` raw profile are Nautilus' own CPU and which are mmbot's. The stacks are written the way
py-spy writes them (root first, ``;``-separated, the count after the last space)."""

import pytest

from tools.bench.floor import ROOTS, owner, split

ROOT = "run_backtest (mmbot/backtest/run.py:173)"
ENGINE = "0x7f65af3deb0b (nautilus_trader/backtest/engine.cpython-312-x86_64-linux-gnu.so)"
EXEC = "0x7f65b88e44b2 (nautilus_trader/execution/engine.cpython-312-x86_64-linux-gnu.so)"
CACHE = "0x7f65b93abef2 (nautilus_trader/cache/cache.cpython-312-x86_64-linux-gnu.so)"
PYO3 = "0x7f6500000001 (nautilus_trader/core/nautilus_pyo3.cpython-312-x86_64-linux-gnu.so)"
NAUT_PY = "Strategy.cancel_order (nautilus_trader/trading/strategy.py:900)"
FEED = "run_engine (mmbot/backtest/feed.py:625)"
SIM = "QueueSimExecutionClient._fill (adapters/sim/exec_client.py:926)"
STRAT = "MarketMaker._on_book (strategies/market_maker.py:675)"
PICKLE = "_pickle_dumps (_pickle.c.h:771)"
PYEVAL = "_PyEval_EvalFrameDefault (libpython3.12.so.1.0)"
GC = "gc_collect_main (libpython3.12.so.1.0)"
LIBC = "0x7f65e8c4524a (libc.so.6)"
ARROW = "read_table (pyarrow/parquet/core.py:1800)"
OUTER = ["<module> (<string>:5)", "main (mmbot/cli/main.py:28)"]


def line(frames, n=1):
    return ";".join(OUTER + [ROOT] + frames) + f" {n}"


@pytest.mark.parametrize("frames, who", [
    ([FEED, ENGINE], "nautilus"),                        # the engine loop's own Cython
    ([FEED, ENGINE, STRAT], "mmbot"),                    # a strategy handler the engine called
    ([FEED, ENGINE, STRAT, PYEVAL], "mmbot"),            # the interpreter running mmbot's code
    ([FEED, ENGINE, STRAT, EXEC, CACHE, PICKLE], "nautilus"),  # Nautilus' position snapshot pickle
    ([FEED, ENGINE, STRAT, EXEC, GC], "nautilus"),       # a collection Nautilus' allocation set off
    ([FEED, ENGINE, STRAT, GC], "mmbot"),                # ... and one mmbot's set off
    ([FEED, ARROW], "mmbot"),                            # a library mmbot calls is mmbot's choice
    ([FEED, NAUT_PY, ARROW, LIBC], "nautilus"),          # ... and one Nautilus calls is Nautilus'
    ([FEED, PYO3], "nautilus"),                          # Nautilus' Rust library
    ([FEED, NAUT_PY], "nautilus"),                       # Nautilus' Python files
    ([SIM, EXEC, STRAT, NAUT_PY, LIBC], "nautilus"),     # the nearest owner wins, however deep
    ([], "mmbot"),                                       # the root function's own lines
])
def test_each_sample_belongs_to_the_owner_nearest_its_leaf(frames, who):
    assert owner([ROOT, *frames])[0] == who
    got = split([line(frames, 3)], ROOTS["backtest"])
    assert got["samples"] == 3 and got["nautilus_share"] == (1.0 if who == "nautilus" else 0.0)


def test_shares_count_samples_and_skip_what_runs_outside_the_run():
    lines = [line([FEED, ENGINE], 6),
             line([FEED, ENGINE, SIM, EXEC, CACHE, PICKLE], 2),
             line([FEED, ENGINE, STRAT], 12),
             ";".join(OUTER + ["<module> (mmbot/backtest/run.py:25)", ENGINE]) + " 40",  # imports: outside
             ""]
    got = split(lines, ROOTS["backtest"])
    assert got["samples"] == 20 and got["samples_outside"] == 40
    assert got["nautilus_share"] == 0.4
    # Nautilus' samples by the mmbot frame that called into it (line numbers dropped)
    assert got["nautilus_by_caller"] == {"run_engine (mmbot/backtest/feed.py)": 0.3,
                                         "QueueSimExecutionClient._fill (adapters/sim/exec_client.py)": 0.1}


def test_a_line_that_is_not_py_spy_raw_output_is_refused():
    with pytest.raises(ValueError, match="not a py-spy raw line"):
        split(["run_backtest (mmbot/backtest/run.py:1)"], ROOTS["backtest"])


def test_the_roots_are_the_functions_the_bench_children_run():
    from mmbot.backtest.run import run_backtest
    from mmbot.tuning.runner import run_walk_forward

    for fn, root in ((run_backtest, ROOTS["backtest"]), (run_walk_forward, ROOTS["wf"])):
        assert root == f"{fn.__name__} ({fn.__module__.replace('.', '/')}.py"
