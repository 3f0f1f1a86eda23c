"""python -m tools.crosscheck [--minutes N] [--synthetic SYMBOL --seed S | --catalog DIR --instrument ID]
[--latency-ms L] [--response-ms R] [--qty Q] [--out FILE]

Runs mmbot's queue simulator and hftbacktest on the same first N minutes of one stream with the
same fixed quoting policy and constant latency, prints fills and filled volume per queue model
side by side and writes JSON. The default stream is a seeded synthetic XRPUSDT recording (a
large-tick book whose touch persists, so queue position changes the fills), generated and
imported into a temporary catalog; ``--catalog`` uses an existing one. See docs/crosscheck.md."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = (("risk_averse", 1.0), ("prob_power", 3.0), ("prob_log", 1.0))
REL_TOL, ABS_TOL = 0.10, 2  # docs/crosscheck.md: why


def within(a: float, b: float, unit: float) -> bool:
    return abs(a - b) <= max(ABS_TOL * unit, REL_TOL * max(abs(a), abs(b)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.crosscheck")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--synthetic", default="XRPUSDT", help="generate this symbol's stream (tools.gen_synthetic)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--catalog", default=None, help="use this catalog instead of a generated stream")
    ap.add_argument("--instrument", default=None, help="with --catalog (default BTCUSDT-LINEAR.BYBIT)")
    ap.add_argument("--latency-ms", type=float, default=10.0, help="order entry (and cancel) latency")
    ap.add_argument("--response-ms", type=float, default=None,
                    help="response latency in both engines (default: the stream's largest feed latency, "
                         "rounded up to 1 ms, so mmbot applies no market event late)")
    ap.add_argument("--qty", type=float, default=None, help="order size (default: 10 lots)")
    ap.add_argument("--step-s", type=float, default=1.0)
    ap.add_argument("--keep-ticks", type=int, default=3,
                    help="keep a resting order while it is at most this many ticks behind the touch")
    ap.add_argument("--out", default="crosscheck.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmbot-crosscheck-") as tmp:
        a.source = f"catalog {a.catalog}"
        if a.catalog is None:
            a.catalog, a.instrument = synthetic_catalog(a.synthetic, a.seed, a.minutes, Path(tmp))
            a.source = f"tools.gen_synthetic {a.synthetic} seed {a.seed}"
        a.instrument = a.instrument or "BTCUSDT-LINEAR.BYBIT"
        report = crosscheck(a)
    return 0 if report["all_ok"] else 1


def synthetic_catalog(symbol: str, seed: int, minutes: float, tmp: Path) -> tuple[str, str]:
    """Generate ``minutes`` (+1 for the tail) of ``symbol`` and import it; (catalog dir, instrument id)."""
    from adapters.instruments import InstrumentRegistry
    from mmbot.catalog_store import import_paths
    from tools.gen_synthetic import generate, parse_start, write_recording

    start = "2024-06-03T00:00:00Z"
    rec = tmp / f"{symbol}_{start[:10]}.jsonl.gz"
    write_recording(rec, generate(symbol, parse_start(start), minutes + 1.0, seed, 50))
    import_paths([rec], tmp / "catalog", InstrumentRegistry(), strict=True)
    return str(tmp / "catalog"), f"{symbol}-LINEAR.BYBIT"


def crosscheck(a) -> dict:
    from mmbot.catalog_store import open_catalog
    from tools.crosscheck.hbt_side import run_hbt, to_events
    from tools.crosscheck.mmbot_side import run_mmbot

    cat = open_catalog(a.catalog)
    inst = next(i for i in cat.instruments() if i.id.value == a.instrument)
    if a.qty is None:
        a.qty = 10 * float(inst.size_increment)
    deltas = cat.order_book_deltas(instrument_ids=[a.instrument])
    start = deltas[0].ts_init
    end = start + int(a.minutes * 60e9)
    deltas = [d for d in deltas if d.ts_init < end]
    trades = [t for t in cat.trade_ticks(instrument_ids=[a.instrument]) if t.ts_init < end]
    step = int(a.step_s * 1e9)
    t0 = start + step  # first quote 1 step after the first snapshot
    t_end = end - step
    md = [d.ts_init - d.ts_event for d in deltas if d.ts_init > d.ts_event]
    md_trades = [t.ts_init - t.ts_event for t in trades if t.ts_init > t.ts_event]
    md_median_ms = statistics.median(md) / 1e6 if md else 0.0
    if a.response_ms is None:
        # Both engines: response latency L_resp (exchange -> local). At least the largest feed
        # latency, so mmbot's exchange sees every market event in exchange order (no late events),
        # as hftbacktest's exchange always does (docs/crosscheck.md).
        a.response_ms = float(math.ceil(max(md + md_trades, default=0) / 1e6))
    resp_ms = a.response_ms
    tick, lot = float(inst.price_increment), float(inst.size_increment)

    tw = time.time()
    ev = to_events(deltas, trades)
    ev_lots = to_events(deltas, trades, qty_scale=1.0 / lot)
    rows = []
    for model, n in MODELS:
        m = run_mmbot(inst, deltas, trades, model, n, a.latency_ms, t0, t_end, step, a.qty, a.keep_ticks, resp_ms)
        h = run_hbt(ev, model, n, a.latency_ms, resp_ms, tick, lot, t0, t_end, step, a.qty, a.keep_ticks)
        row = {"model": model, "n": n if model == "prob_power" else None, "mmbot": m, "hftbacktest": h,
               "fills_ok": within(m["fills"], h["fills"], 1),
               "qty_ok": within(m["filled_qty"], h["filled_qty"], a.qty)}
        if model == "prob_log":  # ln(1+x) is not scale-free: hftbacktest in lots, as mmbot
            hl = run_hbt(ev_lots, model, n, a.latency_ms, resp_ms, tick, 1.0, t0, t_end, step, a.qty / lot,
                         a.keep_ticks)
            hl["filled_qty"] = round(hl["filled_qty"] * lot, 9)
            row["hftbacktest_lot_units"] = hl
        rows.append(row)
    report = {"instrument": a.instrument, "minutes": a.minutes, "source": a.source, "start_ns": start, "end_ns": end,
              "book_rows": len(deltas), "trades": len(trades), "hbt_events": int(len(ev)),
              "policy": {"step_s": a.step_s, "qty": a.qty, "price": "join the touch, post-only",
                         "keep_ticks_behind_touch": a.keep_ticks},
              "latency": {"entry_ms": a.latency_ms, "cancel_ms": a.latency_ms, "response_ms": resp_ms,
                          "md_latency_ms_median": md_median_ms},
              "tolerance": {"relative": REL_TOL, "absolute_fills": ABS_TOL},
              "models": rows, "all_ok": all(r["fills_ok"] and r["qty_ok"] for r in rows),
              "wall_s": round(time.time() - tw, 1)}
    print(f"{a.instrument}  first {a.minutes:g} min  ({len(deltas)} book rows, {len(trades)} trades); "
          f"quote every {a.step_s:g}s at touch, qty {a.qty}, latency {a.latency_ms:g} ms, response {resp_ms:g} ms")
    hdr = f"{'model':<16}{'mmbot fills':>12}{'hbt fills':>10}{'mmbot qty':>11}{'hbt qty':>10}{'Δfills':>8}  ok"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        m, h = r["mmbot"], r["hftbacktest"]
        name = r["model"] + (f"({r['n']:g})" if r["n"] else "")
        print(f"{name:<16}{m['fills']:>12}{h['fills']:>10}{m['filled_qty']:>11.3f}{h['filled_qty']:>10.3f}"
              f"{h['fills'] - m['fills']:>+8}  {'yes' if r['fills_ok'] and r['qty_ok'] else 'NO'}")
        if "hftbacktest_lot_units" in r:
            hl = r["hftbacktest_lot_units"]
            print(f"{'  (hbt in lots)':<16}{'':>12}{hl['fills']:>10}{'':>11}{hl['filled_qty']:>10.3f}"
                  f"{hl['fills'] - m['fills']:>+8}")
    print(f"tolerance: |Δ| <= max({ABS_TOL} fills, {REL_TOL:.0%}); all within: {report['all_ok']}; "
          f"wrote {a.out}")
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


if __name__ == "__main__":
    sys.exit(main())
