"""What a shadow or live session leaves in its run folder, and what it says at start and end.

Shared by ``mmbot live`` (mmbot/cli/live.py) and ``mmbot live --env shadow`` (mmbot/live/shadow.py):

- ``new_run_dir``: ``<[live] out_dir>/<UTC time>-<env>``, a new folder (a suffix when two sessions
  start in the same second) holding, from the start, the run-folder files of mmbot/run_folder.py:
  ``mmbot_run.json`` (kind ``shadow`` or ``live``; venue ``simulated`` or ``bybit-<env>``) and
  ``config.resolved.json`` (``write_session_config``: the resolved config and its hash, exactly as a
  backtest writes it, plus the ``[live]`` section and the resolved endpoints; never a key or secret:
  ``[live]`` holds none, and every string is masked against the session's secrets anyway);
- ``started_halted``: the kill switch's signal file of this mode and account exists at start: the
  banner and the last line say ``STARTED HALTED (kill switch file X: reason)`` (the guard reads the
  file in its ``on_start`` and no quote is sent until it is removed);
- ``write_session_report``: at the end, the backtest's ``report.json``/``.md``/``.html`` with
  ``fills.parquet``, ``orders.parquet``, ``equity.parquet``, from the same ``RunLedger`` the backtest
  uses (docs/report.md "Live and shadow sessions");
- ``summary_line``: the one line the session ends with.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from mmbot.canonical_json import write_json_atomic


def new_run_dir(parent: Path, env: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        d = parent / (f"{stamp}-{env}" if n == 1 else f"{stamp}-{env}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"{parent}: cannot create a new run folder for {stamp}-{env}")


def venue_label(env: str) -> str:
    """The run-folder marker's venue: ``simulated`` (shadow: fills from mmbot's queue simulator)
    or ``bybit-<env>``."""
    from mmbot.run_folder import SIMULATED

    return SIMULATED if env == "shadow" else f"bybit-{env}"


def write_session_config(run_dir: Path, cfg, live, env: str, *, endpoints=None, secrets: list[str] = (),
                         kill_file: Path | None = None, extra_paths: dict[str, str] | None = None,
                         sizing: dict | None = None) -> dict:
    """Write ``config.resolved.json`` and then ``mmbot_run.json`` into ``run_dir``; returns the doc.
    ``sizing``: the record of USDT-notional keys resolved at the venue's mark price
    (mmbot/live/sizing.py), as a backtest's run folder holds its own."""
    from mmbot.live.secrets import mask_text
    from mmbot.run_folder import MARKER, RESOLVED_CONFIG, marker, resolved_config

    doc = resolved_config(cfg)
    paths = dict(doc["resolved_paths"])
    if kill_file is not None:
        paths["risk.kill_switch.file"] = str(kill_file)
    paths.update(extra_paths or {})
    doc["resolved_paths"] = dict(sorted(paths.items()))
    doc["live"] = msgspec.to_builtins(live)
    doc["live_overrides"] = {k: v for k, v in sorted(cfg.origins.items()) if k.startswith("live.")}
    doc["environment"] = env
    if sizing:
        doc["sizing"] = sizing
    if endpoints is not None:
        doc["endpoints"] = endpoints.to_json()
        doc["orders_to"] = endpoints.order_class
    secrets = [x for x in secrets if x]
    if secrets:  # nothing above should hold one; masked anyway, before it touches the disk
        doc = json.loads(mask_text(json.dumps(doc), secrets))
    write_json_atomic(run_dir / RESOLVED_CONFIG, doc)
    kind = "shadow" if env == "shadow" else "live"
    extra = {"environment": env}
    if endpoints is not None:
        extra["orders_to"] = endpoints.order_class
    write_json_atomic(run_dir / MARKER, marker(kind, doc["config_hash"], venue_label(env), **extra))
    return doc


def started_halted(cfg, env: str, account: str) -> dict | None:
    """``{"guard", "file", "reason"}`` when this mode's kill-switch file exists at start, else None."""
    from mmbot.builders import kill_file_path
    from strategies.risk.kill_switch import read_signal

    path = kill_file_path(cfg, env, account)
    signal = read_signal(str(path)) if path is not None else None
    if signal is None:
        return None
    return {"guard": "kill_switch", "file": str(path), "reason": str(signal.get("reason") or "kill file present")}


def halted_text(halted: dict) -> str:
    return f"STARTED HALTED (kill switch file {halted['file']}: {halted['reason']})"


# -- the end-of-session report ----------------------------------------------------------------------

def write_session_report(run, cfg, run_dir: Path, *, env: str, halted: dict | None = None,
                         orders_to: str = "") -> dict | None:
    """report.json/md/html and the parquet files of a stopped session; None (and a log line) when
    the session saw no market data."""
    from mmbot.backtest.ledger import RunLedger
    from mmbot.backtest.run import _collect, risk_components
    from mmbot.builders import DataWindow, strategy_config_dict
    from mmbot.live.node import log_json
    from mmbot.report import render as R
    from nautilus_trader.model.identifiers import InstrumentId

    node = run.node
    ledger = next((a for a in node.trader.actors() if isinstance(a, RunLedger)), None)
    strategies = node.trader.strategies()
    iid = InstrumentId.from_str(run.instrument_id)
    instrument = node.cache.instrument(iid)
    if ledger is None or not strategies or instrument is None:
        log_json("report_skipped", "WARNING", reason="no ledger, strategy or instrument")
        return None
    mid_ts, _ = ledger.mids("exchange")
    fills = ledger.fills_frame()
    if len(mid_ts) == 0:
        log_json("report_skipped", "WARNING", reason="no market data reached the node: nothing to report")
        return None
    # The session's window on the report clock (exchange time): its first book update to its last
    # event; the wall-clock start/stop are in metadata.session.
    fill_ts = fills["ts_event_ns"].to_numpy()
    start_ns = int(min(mid_ts[0], fill_ts.min())) if len(fill_ts) else int(mid_ts[0])
    end_ns = int(max(mid_ts[-1], fill_ts.max())) if len(fill_ts) else int(mid_ts[-1])
    end_ns = max(end_ns, start_ns + 1)
    window = DataWindow(start_ns, end_ns)
    account = run.account()
    shadow = env == "shadow"
    start_balance = cfg.venue.starting_balance_usdt if shadow else run.start_balance
    if start_balance is None or not math.isfinite(start_balance) or start_balance <= 0:
        start_balance = None  # unknown: no return on balance
    events = int(getattr(node.kernel.data_engine, "data_count", 0))
    result = _collect(cfg, ledger, strategies[0], instrument, account,
                      node.cache.positions_open(instrument_id=iid), window,
                      strategy_config_dict(cfg, run.instrument_id), events, None, clock="exchange",
                      starting_balance=start_balance if start_balance is not None else cfg.venue.starting_balance_usdt)
    metadata, metrics = result["metadata"], result["metrics"]
    supervisor, guards = risk_components(node)
    if supervisor is not None:
        metrics["risk"]["guards"] = supervisor.report(guards, end_ns)
    if not shadow:  # fills came from the exchange: no simulator, no fill model
        metadata["fill_model"] = "venue"
        metadata["fill_model_params"] = {"venue": venue_label(env), "orders_to": orders_to}
        if start_balance is None:
            metrics["pnl"]["return_on_balance"] = None
            metrics["pnl"]["nautilus_account_net_pnl"] = None
    metadata["session"] = {
        "kind": "shadow" if shadow else "live", "environment": env, "venue": venue_label(env),
        "started": _iso(run.started_ns), "stopped": _iso(run.stopped_ns or run.started_ns),
        "stop_reason": run.stop_reason, "exit_code": run.exit_code,
        # instrument id -> local time the strategies were asked to stop (mmbot compare's cut)
        "strategy_stop_ns": getattr(run, "strategy_stop_ns", None),
        # shadow: instrument id -> exchange time below which every market event was received then
        "stop_received_through_ns": getattr(run, "stop_received_through_ns", None),
        "start_balance_usdt": start_balance, "start_position_base": run.start_position,
    }
    if halted is not None:
        metadata["started_halted"] = halted
    report = R.build_report(metadata, metrics)
    fills_df, orders_df, equity, mid_ts, mid_px, grid, own_bid, own_ask = result["_frames"]
    R.write_parquet_atomic(run_dir / "fills.parquet", fills_df)
    R.write_parquet_atomic(run_dir / "orders.parquet", orders_df)
    R.write_parquet_atomic(run_dir / "equity.parquet", equity)
    R.write_report_json(run_dir, metadata, metrics)
    R.write_report_md(run_dir, report)
    if cfg.report.html:
        R.write_report_html(run_dir, report, equity, fills_df, np.asarray(mid_ts), np.asarray(mid_px), grid,
                            own_bid, own_ask)
    pnl = report["metrics"]["pnl"]
    log_json("report", run_dir=str(run_dir), fills=int(len(fills_df)), net_pnl=pnl.get("net_pnl"))
    return report


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_line(code: int, reason: str, run_dir: Path, report: dict | None, halted: dict | None) -> str:
    """The session's last stdout line: ``[STARTED HALTED (...): ]exit N (reason); F fills, net PnL X
    USDT; report DIR/report.md``."""
    head = f"{halted_text(halted)}: " if halted else ""
    if report is not None:
        pnl = report["metrics"]["pnl"]
        fills = report["metrics"]["counts"].get("n_fills", 0)
        net = pnl.get("net_pnl")
        body = (f"{fills} fills, net PnL {net:.2f} USDT" if isinstance(net, (int, float)) else f"{fills} fills")
        where = f"report {run_dir / 'report.md'}"
    else:
        body, where = "no report (no market data)", f"run folder {run_dir}"
    return f"{head}session ended: exit {code} ({reason or 'stopped'}); {body}; {where}"
