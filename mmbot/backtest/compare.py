"""``mmbot compare SHADOW_DIR BACKTEST_DIR``: do a shadow session and its replay agree?

Shadow side: the recorder's ``orders.jsonl`` (``<run dir>/recording/`` or the directory itself).
Backtest side: ``fills.parquet``, ``orders.parquet``, ``report.json`` of ``mmbot backtest run``.

Orders are matched by their per-strategy counter (the ``-N`` suffix of the Nautilus client order
id; the id's date/time part is wall time in shadow and replay time in the backtest), fills by
their rank. Both runs are cut at the instant the shadow's strategies were asked to stop
(``strategy_stop_ns``, below); events after it are not compared. Fill times are compared as ``ts_event`` differences; a
difference is *timing* (docs/shadow.md: wall-clock processing delay before the strategy's and the
simulator's clock reads) when the same order fills at the same price and size; any other
difference is a divergence, reported with the first order event where the two runs differ.

Before comparing, the two runs must be comparable (``check_comparable``): the same resolved
config (``config.resolved.json`` of each run folder, mmbot/run_folder.py) except the keys that
cannot change a decision (``IGNORED_KEYS``: paths, the replay window, report settings), and
overlapping time windows (shadow: its first..last order event; backtest: ``report.json``'s data
range). Otherwise ``CompareRefused`` names what differs, unless ``force``. A run folder without a
resolved config (written before mmbot recorded it, or not by mmbot) is refused too: the configs
cannot be shown to match (every shadow and live session writes one at its start since the run
folders of mmbot/live/session.py); ``--force`` compares anyway, saying the config was not checked.

The cut. A shadow session ends with its strategies stopped (mmbot/live/node.py: strategies first,
then the recorder and the run ledger, so the recording keeps the stop's cancels and any fill that
lands before they do); its replay has no stop: its strategy keeps quoting. The session report
records, per instrument, the simulator's local time at which the strategies were asked to stop
(``metadata.session.strategy_stop_ns``, after the simulator applied every item due by then:
``QueueSimExecutionClient.catch_up_for_stop``). Up to that instant both runs saw the same rows and
events and took the same decisions; after it only the replay decides. So for each instrument the
backtest's orders are those initialised at or before it (``ts_init``, the replay's local time)
and both runs' fills with exchange time ``x <= min(T, E)`` (``E``: the replay's end, its
``data_range.end_ns``, after which its simulator applies nothing) and ``x < R``, ``R`` =
``metadata.session.stop_received_through_ns`` (every market event before ``R`` had reached the
shadow's simulator at the stop). Such a fill happens in both runs: its market event precedes, in
the simulated exchange's timeline, the stop's cancels (shadow) and the replay's post-``T`` commands,
and every command before ``T`` is common. A market event at ``x <= T`` received after the stop
(feed latency under load) is not comparable: the replay may have applied a post-``T`` amend before
it arrived. Shadow fills left out of the cut (stop-window fills: a
quote filling while the stop's cancels travel) are counted in ``after_cut``, not compared. A
shadow folder without that key (a session from before it was recorded, a report that was not
written, a node that stopped itself) is cut at its last order event, as before, with a note.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmbot.timeutil import ns_to_iso

_COUNTER = re.compile(r"-(\d+)$")
TIMING_TOL_NS = 50_000_000  # fills of the same order/price/size within 50 ms: timing only
# Resolved-config keys that do not change what the strategy, guards or simulator decide.
IGNORED_KEYS = ("run.catalog", "run.out_dir", "run.start", "run.end", "run.progress", "run.chunk_size",
                "run.purge_interval_s", "run.warmup", "report.", "risk.audit.", "risk.guards.kill_switch.file")


class CompareRefused(ValueError):
    """The two runs are not comparable (different configs or disjoint windows); one line."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: dict, b: dict) -> list[str]:
    """``key: a -> b`` for every resolved-config key that differs, ``IGNORED_KEYS`` excepted."""
    fa, fb = _flatten(a), _flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key.startswith(IGNORED_KEYS) or fa.get(key) == fb.get(key):
            continue
        out.append(f"{key}: {fa.get(key, '<absent>')!r} -> {fb.get(key, '<absent>')!r}")
    return out


def check_comparable(shadow_dir: Path, backtest_dir: Path, shadow_window: tuple[int, int] | None,
                     force: bool = False) -> dict:
    """``{"config": ..., "window": ..., "differences": [...]}``; raises ``CompareRefused`` when the
    configs differ or the windows do not overlap, unless ``force``."""
    from mmbot.run_folder import RESOLVED_CONFIG, read_resolved_config

    checks: dict = {"config": "same", "window": "overlap", "differences": [], "notes": []}
    rs, rb = read_resolved_config(shadow_dir), read_resolved_config(backtest_dir)
    if rs is None or rb is None:
        missing = shadow_dir if rs is None else backtest_dir
        checks["config"] = "unchecked"
        checks["differences"].append(f"config not checked: {missing} has no {RESOLVED_CONFIG} (a run from before "
                                     "mmbot recorded it, or not an mmbot run folder)")
    else:
        diffs = config_differences(rs["config"], rb["config"])
        if diffs:
            checks["config"] = "differs"
            checks["differences"] += [f"config {d}" for d in diffs]
    try:
        rng = json.loads((Path(backtest_dir) / "report.json").read_text())["metadata"]["data_range"]
        b_window = (int(rng["start_ns"]), int(rng["end_ns"]))
    except (OSError, ValueError, KeyError, TypeError):
        b_window = None
    if shadow_window is None or b_window is None:
        checks["window"] = "unchecked"
        checks["notes"].append("window not checked: " + ("the shadow run has no order events" if shadow_window is None
                                                         else f"{backtest_dir}/report.json has no data range"))
    elif not (shadow_window[0] <= b_window[1] and b_window[0] <= shadow_window[1]):
        checks["window"] = "disjoint"
        checks["differences"].append(f"windows do not overlap: shadow {ns_to_iso(shadow_window[0])} .. "
                                     f"{ns_to_iso(shadow_window[1])}, backtest {ns_to_iso(b_window[0])} .. "
                                     f"{ns_to_iso(b_window[1])}")
    if checks["differences"] and not force:
        more = f" (+{len(checks['differences']) - 3} more)" if len(checks["differences"]) > 3 else ""
        raise CompareRefused(f"{shadow_dir} and {backtest_dir} are not comparable: "
                             + "; ".join(checks["differences"][:3]) + more + " (--force compares anyway)")
    return checks


def order_no(coid: str) -> int:
    m = _COUNTER.search(coid)
    return int(m.group(1)) if m else -1


def strategy_tag_of(coid: str) -> str:
    """The strategy tag of a Nautilus client order id (``O-<date>-<time>-<trader>-<tag>-<n>``)."""
    parts = coid.split("-")
    return parts[-2] if len(parts) >= 3 else ""


def load_shadow(path: Path, tag: str | None = None) -> dict:
    """``tag``: only the orders of that strategy (a [portfolio]: strategy i has tag ``i:03d``)."""
    path = Path(path)
    f = path / "recording" / "orders.jsonl" if (path / "recording" / "orders.jsonl").exists() else path / "orders.jsonl"
    if not f.exists():
        raise FileNotFoundError(f"{path}: no orders.jsonl (shadow run directory or its recording/)")
    orders, fills, last_ts, first_ts = {}, [], 0, None
    for line in f.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a truncated last line after a crash
        if tag is not None and strategy_tag_of(e["client_order_id"]) != tag:
            continue
        last_ts = max(last_ts, e["ts_event_ns"])
        first_ts = e["ts_event_ns"] if first_ts is None else min(first_ts, e["ts_event_ns"])
        n = order_no(e["client_order_id"])
        if e["kind"] == "OrderInitialized":
            orders[n] = {"no": n, "side": e.get("side"), "price": float(e.get("price", "nan")),
                         "qty": float(e.get("quantity", "nan")), "ts_ns": e["ts_init_ns"]}
        elif e["kind"] == "OrderUpdated" and n in orders:  # the backtest keeps the last price
            orders[n]["price"] = float(e.get("price", orders[n]["price"]))
            orders[n]["qty"] = float(e.get("quantity", orders[n]["qty"]))
        elif e["kind"] == "OrderFilled":
            fills.append({"no": n, "side": e["side"], "price": e["price"], "qty": e["qty"], "fee": e["fee"],
                          "ts_ns": e["ts_event_ns"]})
    return {"orders": orders, "fills": fills, "last_ts_ns": last_ts, "first_ts_ns": first_ts}


def _is_ns(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def shadow_stop_instants(path: Path) -> dict[str, tuple[int, int | None]] | None:
    """From the shadow session's ``report.json`` (the run folder or, given its ``recording/``, the
    folder above): instrument id -> (``metadata.session.strategy_stop_ns``: the local stop instant,
    ``stop_received_through_ns``: the exchange time below which every market event had been
    received then, or None); None when the stop instants are absent or not integers."""
    path = Path(path)
    for folder in (path, path.parent) if path.name == "recording" else (path,):
        try:
            session = json.loads((folder / "report.json").read_text())["metadata"]["session"]
            stops = session["strategy_stop_ns"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        through = session.get("stop_received_through_ns")
        through = through if isinstance(through, dict) else {}
        if isinstance(stops, dict) and stops and all(_is_ns(v) for v in stops.values()):
            return {str(k): (v, through.get(k) if _is_ns(through.get(k)) else None) for k, v in stops.items()}
    return None


def fill_cut(f: dict, until_ns: int, through_ns: int | None) -> bool:
    """A fill compared: exchange time at or before ``until_ns`` (the stop instant, or the replay's
    end when earlier) and, when known, before the exchange time through which every market event
    had reached the shadow's simulator at the stop."""
    return f["ts_ns"] <= until_ns and (through_ns is None or f["ts_ns"] < through_ns)


def cut_shadow(s: dict, until_ns: int, through_ns: int | None = None) -> dict:
    """The shadow side up to the cut (``fill_cut``); the other fills counted in ``after_cut_fills``.
    Orders are all kept: the strategies initialise none after their stop."""
    fills = [f for f in s["fills"] if fill_cut(f, until_ns, through_ns)]
    return {**s, "fills": fills, "after_cut_fills": len(s["fills"]) - len(fills)}


def load_backtest(path: Path, until_ns: int | None = None, instrument_id: str | None = None,
                  fills_before_ns: int | None = None, fills_until_ns: int | None = None) -> dict:
    """``instrument_id``: a [portfolio] run's rows of that instrument and its section's final mid.
    ``until_ns``: orders initialised and fills at or before it; ``fills_until_ns`` (default
    ``until_ns``): the fills' instead; ``fills_before_ns``: and fills strictly before it."""
    fills_until = until_ns if fills_until_ns is None else fills_until_ns
    import pandas as pd

    path = Path(path)
    fdf = pd.read_parquet(path / "fills.parquet")
    odf = pd.read_parquet(path / "orders.parquet")
    report = json.loads((path / "report.json").read_text())
    if instrument_id is not None:
        fdf = fdf[fdf["instrument_id"] == instrument_id]
        odf = odf[odf["instrument_id"] == instrument_id]
        report = report.get("metrics", {}).get("instruments", {}).get(instrument_id, {})
    orders = {}
    for r in odf.itertuples():
        if until_ns is None or r.ts_init_ns <= until_ns:
            orders[order_no(r.client_order_id)] = {"no": order_no(r.client_order_id), "side": r.side,
                                                   "price": float(r.price), "qty": float(r.qty), "ts_ns": int(r.ts_init_ns)}
    fills = [{"no": order_no(r.client_order_id), "side": r.side, "price": float(r.price), "qty": float(r.qty),
              "fee": float(r.fee), "ts_ns": int(r.ts_event_ns)}
             for r in fdf.itertuples() if (fills_until is None or r.ts_event_ns <= fills_until)
             and (fills_before_ns is None or r.ts_event_ns < fills_before_ns)]
    final_mid = report.get("metrics", {}).get("pnl", {}).get("final_mid")
    return {"orders": orders, "fills": fills, "final_mid": final_mid}


def pnl(fills: list[dict], mark: float | None) -> float:
    cash, pos = 0.0, 0.0
    for f in fills:
        sgn = 1.0 if f["side"] == "BUY" else -1.0
        cash -= sgn * f["price"] * f["qty"] + f["fee"]
        pos += sgn * f["qty"]
    return cash + (pos * mark if mark is not None else 0.0)


def _portfolio_instruments(backtest_dir: Path) -> list[str] | None:
    try:
        meta = json.loads((Path(backtest_dir) / "report.json").read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return None
    p = meta.get("portfolio")
    return list(p["instruments"]) if isinstance(p, dict) and p.get("instruments") else None


def compare(shadow_dir: Path, backtest_dir: Path, force: bool = False) -> dict:
    """A [portfolio] backtest: each instrument compared on its own (the shadow's orders of
    strategy tag ``i:03d`` against the backtest's rows of instrument ``i``), the top level summing
    them; ``identical_fills`` only when every instrument's are, ``first_divergence`` the first
    instrument's that differs (with ``instrument``)."""
    instruments = _portfolio_instruments(backtest_dir)
    stops = shadow_stop_instants(shadow_dir)
    bt_end = _backtest_end_ns(backtest_dir)
    if instruments is None:
        s = load_shadow(shadow_dir)
        window = (s["first_ts_ns"], s["last_ts_ns"]) if s["first_ts_ns"] is not None else None
        checks = check_comparable(Path(shadow_dir), Path(backtest_dir), window, force)
        # one instrument: its one stop instant (several recorded: the shadow was a portfolio
        # session, and the earliest keeps every compared event before every strategy's stop)
        if stops:
            throughs = [x for _, x in stops.values() if x is not None]
            s, until, fills_until, through = _cut(s, min(t for t, _ in stops.values()),
                                                  min(throughs) if throughs else None, bt_end, checks)
        else:
            s, until, fills_until, through = _cut(s, None, None, bt_end, checks)
        b = load_backtest(backtest_dir, until_ns=until, fills_before_ns=through, fills_until_ns=fills_until)
        return _compare_loaded(s, b, checks)
    from mmbot.builders import strategy_tag

    per = {}
    for index, iid in enumerate(instruments):
        per[iid] = (load_shadow(shadow_dir, strategy_tag(index)), index)
    firsts = [s["first_ts_ns"] for s, _ in per.values() if s["first_ts_ns"] is not None]
    window = (min(firsts), max(s["last_ts_ns"] for s, _ in per.values())) if firsts else None
    checks = check_comparable(Path(shadow_dir), Path(backtest_dir), window, force)
    out_per = {}
    for iid, (s, _index) in per.items():
        s, until, fills_until, through = _cut(s, *((stops or {}).get(iid) or (None, None)), bt_end, checks)
        b = load_backtest(backtest_dir, until_ns=until, instrument_id=iid, fills_before_ns=through,
                          fills_until_ns=fills_until)
        out_per[iid] = _compare_loaded(s, b, checks)
    first = next(({**r["first_divergence"], "instrument": iid} for iid, r in out_per.items()
                  if r["first_divergence"] is not None), None)
    rs = list(out_per.values())

    def total(section: str, key: str):
        return sum(r[section][key] for r in rs)

    return {
        "orders": {"shadow": total("orders", "shadow"), "backtest": total("orders", "backtest")},
        "fills": {"shadow": total("fills", "shadow"), "backtest": total("fills", "backtest"),
                  "matched": total("fills", "matched")},
        "filled_volume": {"shadow": None, "backtest": None},  # base units of different coins: no sum
        "fill_time_diff_ms": {"max_abs": max(r["fill_time_diff_ms"]["max_abs"] for r in rs),
                              "mean": (sum(r["fill_time_diff_ms"]["mean"] * r["fills"]["matched"] for r in rs)
                                       / max(1, total("fills", "matched")))},
        "pnl": {"shadow": round(total("pnl", "shadow"), 6), "backtest": round(total("pnl", "backtest"), 6),
                "mark": None},
        "window_end_ns": max(r["window_end_ns"] for r in rs),
        "cut": {"by": rs[0]["cut"]["by"] if rs else "last_order_event",
                "at_ns": {iid: r["cut"]["at_ns"] for iid, r in out_per.items()}},
        "after_cut": {"shadow_fills": sum(r["after_cut"]["shadow_fills"] for r in rs)},
        "first_divergence": first,
        "identical_fills": first is None,
        "timing_only_differences": sum(r["timing_only_differences"] for r in rs),
        "checks": checks,
        "instruments": out_per,
    }


NO_STOP_NOTE = ("cut at the shadow's last order event: its report.json has no session.strategy_stop_ns "
                "(a session from before mmbot recorded the stop instant, or one whose report was not written)")


def _backtest_end_ns(backtest_dir: Path) -> int | None:
    """The replay's last instant (``report.json`` ``metadata.data_range.end_ns``: the window's end
    on the receive clock, ``SimParams.end_ns``); None when absent."""
    try:
        end = json.loads((Path(backtest_dir) / "report.json").read_text())["metadata"]["data_range"]["end_ns"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return end if _is_ns(end) else None


def _cut(s: dict, stop_ns: int | None, through_ns: int | None, bt_end_ns: int | None,
         checks: dict) -> tuple[dict, int, int, int | None]:
    """``(shadow side, backtest orders until_ns, fills until_ns, fills before_ns)``: cut at the
    strategies' stop instant when the session recorded it (fills also at the replay's end when it
    is earlier: an item the replay's exchange reached after its end is never applied there, while
    the shadow went on), else (older sessions) at the shadow's last order event, with a note."""
    if stop_ns is not None:
        fills_until = stop_ns if bt_end_ns is None else min(stop_ns, bt_end_ns)
        cut = {"by": "strategy_stop", "at_ns": stop_ns, "fills_until_ns": fills_until, "fills_before_ns": through_ns}
        return {**cut_shadow(s, fills_until, through_ns), "cut": cut}, stop_ns, fills_until, through_ns
    if NO_STOP_NOTE not in checks["notes"]:
        checks["notes"].append(NO_STOP_NOTE)
    last = s["last_ts_ns"]
    cut = {"by": "last_order_event", "at_ns": last, "fills_until_ns": last, "fills_before_ns": None}
    return {**s, "after_cut_fills": 0, "cut": cut}, last, last, None


def _compare_loaded(s: dict, b: dict, checks: dict) -> dict:
    mark = b["final_mid"]
    if mark is None and (s["fills"] or b["fills"]):
        mark = (s["fills"] or b["fills"])[-1]["price"]
    dts = []
    first = None
    timing_only = 0
    for i in range(max(len(s["fills"]), len(b["fills"]))):
        fs = s["fills"][i] if i < len(s["fills"]) else None
        fb = b["fills"][i] if i < len(b["fills"]) else None
        same = fs and fb and _key(fs) == _key(fb)
        if same:
            dt = fs["ts_ns"] - fb["ts_ns"]
            dts.append(dt)
            if abs(dt) > TIMING_TOL_NS and first is None:
                first = {"fill": i, "shadow": fs, "backtest": fb, "cause": f"fill time differs by {dt / 1e6:.1f} ms"}
            elif dt:
                timing_only += 1
            continue
        if first is None:
            first = {"fill": i, "shadow": fs, "backtest": fb, "cause": _cause(s, b, fs, fb)}
    n_ok = len(dts)
    out = {
        "orders": {"shadow": len(s["orders"]), "backtest": len(b["orders"])},
        "fills": {"shadow": len(s["fills"]), "backtest": len(b["fills"]), "matched": n_ok},
        "filled_volume": {"shadow": round(sum(f["qty"] for f in s["fills"]), 9),
                          "backtest": round(sum(f["qty"] for f in b["fills"]), 9)},
        "fill_time_diff_ms": {"max_abs": max((abs(d) for d in dts), default=0) / 1e6,
                              "mean": (sum(dts) / len(dts) / 1e6) if dts else 0.0},
        "pnl": {"shadow": round(pnl(s["fills"], mark), 6), "backtest": round(pnl(b["fills"], mark), 6),
                "mark": mark},
        "window_end_ns": s["cut"]["at_ns"],
        "cut": s["cut"],
        "after_cut": {"shadow_fills": s["after_cut_fills"]},
        "first_divergence": first,
        "identical_fills": first is None,
        "timing_only_differences": timing_only,
        "checks": checks,
    }
    return out


def _key(r: dict) -> tuple:
    """Order number, side, price and size; prices/sizes rounded (parquet floats vs decimal strings)."""
    return (r["no"], r["side"], round(r["price"], 8), round(r["qty"], 9))


def _cause(s: dict, b: dict, fs, fb) -> str:
    """The first order where the two runs' decisions differ (side, price, size), if any."""
    for n in sorted(set(s["orders"]) | set(b["orders"])):
        os_, ob = s["orders"].get(n), b["orders"].get(n)
        if os_ is None or ob is None:
            which = "backtest" if os_ is None else "shadow"
            return f"order #{n} exists only in the {which} run"
        if _key(os_)[1:] != _key(ob)[1:]:
            dt = (os_["ts_ns"] - ob["ts_ns"]) / 1e6
            return (f"order #{n} differs: shadow {os_['side']} {os_['qty']}@{os_['price']} vs backtest "
                    f"{ob['side']} {ob['qty']}@{ob['price']} (decision time differs by {dt:.3f} ms)")
    if fs is None or fb is None:
        return f"fill only in the {'backtest' if fs is None else 'shadow'} run (same orders): queue/arrival timing"
    return (f"same orders, different fill: shadow #{fs['no']} vs backtest #{fb['no']} "
            f"({(fs['ts_ns'] - fb['ts_ns']) / 1e6:.3f} ms apart): order arrival vs market data ordering")


def render(res: dict) -> str:
    rows = [("orders", res["orders"]["shadow"], res["orders"]["backtest"]),
            ("fills", res["fills"]["shadow"], res["fills"]["backtest"]),
            ("filled volume", res["filled_volume"]["shadow"], res["filled_volume"]["backtest"]),
            ("PnL (marked)", res["pnl"]["shadow"], res["pnl"]["backtest"])]
    checks = res.get("checks", {})
    lines = [f"compared despite: {d} (--force)" for d in checks.get("differences", [])]
    lines += [f"note: {n}" for n in checks.get("notes", [])]
    lines += [f"{'':16}{'shadow':>16}{'backtest':>16}"] + [f"{a:16}{b!s:>16}{c!s:>16}" for a, b, c in rows]
    cut = res.get("cut") or {}
    if cut.get("by") == "strategy_stop":
        at = cut["at_ns"]
        when = ns_to_iso(min(at.values()) if isinstance(at, dict) else at)
        lines.append(f"cut at the shadow strategies' stop ({when}); after it, not compared: "
                     f"{res['after_cut']['shadow_fills']} shadow fill(s)")
    t = res["fill_time_diff_ms"]
    lines.append(f"fill times: {res['fills']['matched']} matched, max |dt| {t['max_abs']:.3f} ms, mean {t['mean']:.3f} ms")
    for iid, r in (res.get("instruments") or {}).items():
        lines.append(f"  {iid}: orders {r['orders']['shadow']}/{r['orders']['backtest']}, fills "
                     f"{r['fills']['shadow']}/{r['fills']['backtest']} (matched {r['fills']['matched']}), "
                     f"{'identical' if r['identical_fills'] else 'DIVERGES'}")
    if res["first_divergence"] is None:
        lines.append("identical fills" + (f" ({res['timing_only_differences']} with timing-only differences)"
                                          if res["timing_only_differences"] else ""))
    else:
        d = res["first_divergence"]
        where = f" of {d['instrument']}" if d.get("instrument") else ""
        lines.append(f"first divergence at fill #{d['fill']}{where}: {d['cause']}")
        lines.append(f"  shadow:   {d['shadow']}")
        lines.append(f"  backtest: {d['backtest']}")
    return "\n".join(lines)
