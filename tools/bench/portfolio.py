"""Replay cost against the number of instruments in one node (issue 15): ``python -m tools.bench
portfolio [--minutes N] [--repeats R]``.

Two parts, each run a fresh process (``run_backtest`` of a ``[portfolio]`` config, report.html
off), the sizes interleaved ``repeats`` times (a busy machine slows all alike), the best
``node.run()`` wall time of each size kept:

- ``same_data``: the SAME data per instrument. XRPUSDT's generated stream (``--minutes``, seed
  11) under 1, 2 and 3 instrument ids: XRPUSDT and two clones of its Bybit definition, XRP2USDT
  and XRP3USDT (same filters, only the symbol differs; bench-only, written to a temporary
  definitions file and catalog), every one quoted with config/portfolio.toml's [strategy] and
  per-instrument [risk] (no overrides, no [risk.portfolio]: with identical positions the node
  guard would restrict the larger runs more and change what is measured). The rows grow exactly
  n-fold, so ``run_s_vs_1`` = n and ``cost_per_row_vs_1`` = 1 mean linear growth.
- ``embedded``: config/portfolio.toml as shipped on the embedded catalog with its first 1, 2, 3
  instruments (XRPUSDT; + BTCUSDT; + DOGEUSDT): each instrument replays the same five minutes in
  every run it is part of, but the instruments bring different amounts (BTC 3.5x XRP's rows).

Figures per size: stream rows (``engine.iteration``: every delta, trade and funding row of the
node's one clock), ``run_s`` (``node.run()``), ``process_s`` (the whole process: imports, build,
report), rows per second of ``node.run()``, ``run_s_vs_1`` and ``cost_per_row_vs_1`` (seconds
per row over the 1-instrument run's); ``cpu_s`` (CPU seconds of ``run_backtest``: build, replay
and report, without the imports; on a shared machine steadier than wall time), rows per CPU
second and ``cpu_per_row_vs_1``; peak RSS. The best of the repeats is the one with the least
``node.run()`` wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "portfolio.toml"

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mmbot.config.backtest import load_backtest_config
from mmbot.backtest.run import run_backtest
cfg = load_backtest_config(Path(sys.argv[1]), ["report.html=false"])
c0 = time.process_time()
o = run_backtest(cfg, out_dir=Path(sys.argv[2]))
print(json.dumps({"events": o.events, "wall_s": o.wall_s, "cpu_s": time.process_time() - c0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def config_text(n: int) -> tuple[str, list[str]]:
    """config/portfolio.toml with its first ``n`` instruments (the others' override tables left
    out) and without ``[portfolio.allocator]``, the catalog path absolute; returns (text, instruments)."""
    import tomllib

    text = CONFIG.read_text()
    instruments = tomllib.loads(text)["portfolio"]["instruments"]
    keep = instruments[:n]
    text = text.replace('catalog = "../catalog-portfolio"', f'catalog = "{REPO / "catalog-portfolio"}"')
    text = text.replace('file = "../runs/KILL.{env}.{account}"', 'file = "KILL.{env}.{account}"')
    text = text.replace("instruments = [" + ", ".join(f'"{i}"' for i in instruments) + "]",
                        "instruments = [" + ", ".join(f'"{i}"' for i in keep) + "]")
    blocks = text.split("\n\n")
    # no allocator: it couples the instruments (and needs two); its cost is `tools.bench allocator`
    dropped = [b for b in blocks if any(f'[portfolio.overrides."{i}"]' in b for i in instruments[n:])
               or "[portfolio.allocator]" in b]
    text = "\n\n".join(b for b in blocks if b not in dropped)
    assert f"instruments = [" + ", ".join(f'"{i}"' for i in keep) + "]" in text
    return text, keep


def _child(config: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CHILD, str(config), str(out)], capture_output=True, text=True,
                         cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bench portfolio child failed:\n{res.stderr[-3000:]}")
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t0}


CLONES = ("XRPUSDT", "XRP2USDT", "XRP3USDT")


def same_data_catalog(work: Path, minutes: float) -> Path:
    """XRPUSDT's stream (seed 11) under each of ``CLONES`` (clones of XRPUSDT's definition)."""
    import dataclasses

    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools import gen_synthetic as gs

    body = json.loads((REPO / "adapters" / "definitions" / "bybit_linear_instruments.json").read_text())
    xrp = next(r for r in body["result"]["list"] if r["symbol"] == "XRPUSDT")
    defs = work / "clones.json"
    defs.write_text(json.dumps({"retCode": 0, "retMsg": "OK", "result": {
        "category": "linear", "list": [{**xrp, "symbol": s} for s in CLONES[1:]]}}))
    inputs = []
    for sym in CLONES:
        gs.INSTRUMENTS.setdefault(sym, dataclasses.replace(gs.INSTRUMENTS["XRPUSDT"], symbol=sym))
        rec = work / f"{sym}.jsonl.gz"
        gs.write_recording(rec, gs.generate(sym, gs.parse_start("2024-12-01T07:30:00Z"), minutes, 11))
        inputs.append(rec)
    cat = work / "cat-same-data"
    import_paths(inputs, cat, InstrumentRegistry(extra_files=[defs]))
    return cat


def same_data_config(n: int, catalog: Path) -> tuple[str, list[str]]:
    """config/portfolio.toml on ``catalog``, the first ``n`` clones, no overrides, no [risk.portfolio]."""
    import tomllib

    text, _ = config_text(1)
    keep = [f"{s}-LINEAR.BYBIT" for s in CLONES[:n]]
    text = text.replace(f'catalog = "{REPO / "catalog-portfolio"}"', f'catalog = "{catalog}"')
    text = text.replace('instruments = ["XRPUSDT-LINEAR.BYBIT"]', "instruments = [" + ", ".join(f'"{i}"' for i in keep) + "]")
    blocks = text.split("\n\n")
    text = "\n\n".join(b for b in blocks if "[risk.portfolio]" not in b)
    raw = tomllib.loads(text)
    assert "portfolio" not in raw["risk"] and "overrides" not in raw["portfolio"] and raw["portfolio"]["instruments"] == keep
    return text, keep


def _measure(work: Path, name: str, configs: dict, repeats: int) -> dict:
    sizes = sorted(configs)
    best: dict[int, dict] = {}
    for r in range(repeats):
        for n in sizes:
            res = _child(configs[n][0], work / f"out-{name}-{n}-{r}")
            if n not in best or res["wall_s"] < best[n]["wall_s"]:
                best[n] = res
    one = best[sizes[0]]
    out = {}
    for n in sizes:
        b = best[n]
        out[f"{n}_instruments"] = {
            "instruments": "+".join(i.split("USDT")[0] for i in configs[n][1]),
            "stream_rows": b["events"], "run_s": round(b["wall_s"], 3), "process_s": round(b["process_s"], 2),
            "rows_per_s": round(b["events"] / b["wall_s"]),
            "run_s_vs_1": round(b["wall_s"] / one["wall_s"], 3),
            "cost_per_row_vs_1": round((b["wall_s"] / b["events"]) / (one["wall_s"] / one["events"]), 3),
            "cpu_s": round(b["cpu_s"], 2), "rows_per_cpu_s": round(b["events"] / b["cpu_s"]),
            "cpu_per_row_vs_1": round((b["cpu_s"] / b["events"]) / (one["cpu_s"] / one["events"]), 3),
            "peak_rss_mb": round(b["peak_rss_mb"], 1),
        }
    return out


def bench_portfolio(work: Path, minutes: float = 15.0, repeats: int = 2, sizes: tuple[int, ...] = (1, 2, 3),
                    parts: tuple[str, ...] = ("same_data", "embedded")) -> dict:
    out: dict = {"repeats": repeats}
    if "same_data" in parts:
        cat = same_data_catalog(work, minutes)
        configs = {}
        for n in sizes:
            text, keep = same_data_config(n, cat)
            path = work / f"same-{n}.toml"
            path.write_text(text)
            configs[n] = (path, keep)
        out["same_data"] = {"minutes": minutes, **_measure(work, "same", configs, repeats)}
    if "embedded" in parts:
        configs = {}
        for n in sizes:
            text, keep = config_text(n)
            path = work / f"embedded-{n}.toml"
            path.write_text(text)
            configs[n] = (path, keep)
        out["embedded"] = _measure(work, "embedded", configs, repeats)
    return out
