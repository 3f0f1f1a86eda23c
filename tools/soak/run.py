"""The soak run: the loopback exchange, ``mmbot live``, faults on schedule, samples, stop, checks.

Timeline (``t`` = seconds after the node reported ready):

1. The exchange (``python -m tools.fake_bybit --seamless``) replays the recording at real-time rate
   (the default: the embedded XRPUSDT hour, generated once into ``runs/soak/cache``).
2. ``mmbot live --env testnet`` (or ``--env shadow``) is pointed at it through ``--set live.*``
   (the way an operator points it at a mirror) and quotes with the soak's sizes for the symbol.
3. At ``t = 0`` and then every ``--sample-every`` (and at each quarter of the run): a sample.
   Faults are armed through the exchange's control API at their times.
4. At ``t = --duration``: SIGTERM (an operator's stop), the node's own venue-checked stop runs.
5. After it exits: the exchange's open orders and histories, the recorder check, the timeline
   comparison, the gates, the report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tools.fake_bybit.auth import process_api_key
from tools.soak import gates as G
from tools.soak import probes, recorder_check, timeline
from tools.soak.schedule import Fault

REPO = Path(__file__).resolve().parents[2]
# A key of this process: one mmbot instance per API key per host (mmbot/live/lock.py), so two soaks
# (or a soak beside the tests) on one host never refuse each other.
SOAK_KEY, SOAK_SECRET = process_api_key("soak-key-mmbot-loopback"), "soak-secret-0123456789-mmbot-loopback"
READY_TIMEOUT_S = 180.0
CACHE_DIR = REPO / "runs" / "soak" / "cache"

# The embedded default hour (tools/build_catalog.DATASETS[0]): XRPUSDT 2024-12-01 07:30, 60 min,
# seed 7, ob50 every 20 ms.
DEFAULT_FEED = {"symbol": "XRPUSDT", "start": "2024-12-01T07:30:00Z", "minutes": 60.0, "seed": 7, "depth": 50}

# Sizes and quoting per symbol (the node's config is config/testnet.toml, BTCUSDT-sized).
# XRPUSDT: quote at the touch as config/backtest.toml does (200 XRP per order, 1,000 max), so the
# soak fills, amends and cancels all the time - the load a soak is for.
PRESETS: dict[str, list[str]] = {
    "XRPUSDT": [
        "run.instrument=XRPUSDT-LINEAR.BYBIT", "strategy.level_size=200", "strategy.max_position=1000",
        "strategy.fee_floor_enabled=false", "strategy.min_half_spread_bps=0.1", "strategy.k_vol=0.0",
        "strategy.level_spacing_bps=0.5", "strategy.requote_threshold_bps=0.6",
        "risk.position.soft_position=1500", "risk.position.hard_position=2000",
        "risk.position.soft_notional=3000", "risk.position.hard_notional=4000",
        "risk.position.soft_total_notional=5000", "risk.position.hard_total_notional=8000",
    ],
    "BTCUSDT": [
        "run.instrument=BTCUSDT-LINEAR.BYBIT", "strategy.fee_floor_enabled=false", "strategy.min_half_spread_bps=0.2",
        "strategy.k_vol=0.0",
    ],
}

# DOGEUSDT (tick 0.23 bps, as config/portfolio.toml's override): one tick from the fair price, levels
# one tick apart; 500 DOGE (~215 USDT) per order, 2,500 (~1,075 USDT) max.
PRESETS["DOGEUSDT"] = [
    "run.instrument=DOGEUSDT-LINEAR.BYBIT", "strategy.level_size=500", "strategy.max_position=2500",
    "strategy.fee_floor_enabled=false", "strategy.min_half_spread_bps=0.25", "strategy.k_vol=0.0",
    "strategy.level_spacing_bps=0.25", "strategy.requote_threshold_bps=0.3",
    "risk.position.soft_position=3500", "risk.position.hard_position=4500",
]

# --symbols N (N > 1): the first N of these, each replayed from its own generated recording on one
# clock (the embedded portfolio's symbols and seeds, tools/build_catalog.PORTFOLIO_DATASETS, over
# the default hour's start: XRPUSDT's is the single-symbol default recording itself).
MULTI_SYMBOLS = ("XRPUSDT", "BTCUSDT", "DOGEUSDT")
MULTI_SEEDS = {"XRPUSDT": 7, "BTCUSDT": 11, "DOGEUSDT": 13}
# Keys of a preset that are the node's, not the instrument's: kept out of [portfolio.overrides].
NODE_KEYS = ("run.instrument", "risk.position.soft_total_notional", "risk.position.hard_total_notional")


def multi_feeds(symbols: list[str], duration_s: float) -> list[dict]:
    """One feed per symbol, long enough for the run: the exchange replays several symbols without
    a seamless loop (tools/fake_bybit: ``seamless`` takes one symbol), so each recording covers the
    node's start (<= READY_TIMEOUT_S), the run and 10 minutes of stop and margin; at least an hour
    (the single-symbol default, shared with it for XRPUSDT)."""
    minutes = max(DEFAULT_FEED["minutes"], math.ceil((duration_s + READY_TIMEOUT_S) / 60.0) + 10.0)
    return [{"symbol": s, "start": DEFAULT_FEED["start"], "minutes": float(minutes), "seed": MULTI_SEEDS[s],
             "depth": DEFAULT_FEED["depth"]} for s in symbols]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"unsupported TOML value {v!r}")


def portfolio_config_text(base_text: str, symbols: list[str], portfolio_toml: Path | None = None) -> str:
    """The node's config for a multi-symbol soak: ``base_text`` (the --config file, e.g.
    config/testnet.toml) without its ``[run] instrument`` line, plus ``[portfolio]`` with the
    symbols (in order: strategy i has order id tag i), each symbol's soak sizes as its
    ``[portfolio.overrides]`` (PRESETS less the node's keys), and ``[portfolio.allocator]`` and
    ``[risk.portfolio]`` copied from config/portfolio.toml (the allocator and the portfolio guard
    on, as in the embedded portfolio backtest). Raises ValueError when ``base_text`` already has
    a ``[portfolio]`` table or no ``instrument =`` line to remove."""
    import re
    import tomllib

    if re.search(r"^\s*\[\s*(portfolio|risk\.portfolio)\b", base_text, re.M):
        raise ValueError("has a [portfolio] or [risk.portfolio] table: --symbols N > 1 writes its own")
    lines = base_text.splitlines()
    kept = [ln for ln in lines if not re.match(r"\s*instrument\s*=", ln)]
    ref = tomllib.loads((portfolio_toml or REPO / "config" / "portfolio.toml").read_text())
    out = [*kept, "", "# --- added by tools.soak --symbols: the portfolio (tools/soak/run.py portfolio_config_text)"]
    for title, table in (("portfolio.allocator", ref["portfolio"]["allocator"]),
                         ("risk.portfolio", ref["risk"]["portfolio"])):
        out += ["", f"[{title}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    out += ["", "[portfolio]", f"instruments = {_toml_value([f'{s}-LINEAR.BYBIT' for s in symbols])}"]
    for s in symbols:
        out += ["", f'[portfolio.overrides."{s}-LINEAR.BYBIT"]']
        for item in PRESETS[s]:
            key, _, value = item.partition("=")
            if key not in NODE_KEYS:
                out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


# A balance difference must survive this many re-reads, BALANCE_RECHECK_S apart (3 s in all:
# three refreshes of the node's metrics), to count: see probes.settle_balance.
BALANCE_RECHECKS = 6
BALANCE_RECHECK_S = 0.5


def _node_balance(equity_usdt: float, unrealized_usdt: float) -> float:
    """The node's wallet balance: its equity gauge less the unrealised PnL it added."""
    return equity_usdt - unrealized_usdt if math.isfinite(equity_usdt) and math.isfinite(unrealized_usdt) \
        else math.nan


@dataclass
class Options:
    duration_s: float
    faults: list[Fault]
    mode: str = "live"                 # live (mmbot live --env testnet) | shadow
    out: Path = Path("runs/soak")
    sample_every_s: float = 60.0
    recording: Path | None = None      # None = the embedded XRPUSDT hour (generated, cached)
    config: Path = REPO / "config" / "testnet.toml"
    overrides: list[str] = field(default_factory=list)
    gate_bounds: dict[str, float] = field(default_factory=dict)
    faults_text: str = ""
    argv: list[str] = field(default_factory=list)
    symbols: list[str] | None = None   # --symbols N > 1: a [portfolio] node on these; None = one symbol
    config_text: str | None = None     # that node's generated config (portfolio_config_text)


PORTFOLIO_CONFIG_NAME = "node-config.toml"  # --symbols N > 1: the generated config, in --out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict | None = None, method: str = "POST", timeout: float = 5.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def default_recording(feed: dict | None = None) -> Path:
    """The embedded XRPUSDT hour (or ``feed``: a DEFAULT_FEED-like dict) as a recording, generated
    once (~25 s per hour) and cached."""
    from tools.gen_synthetic import generate, parse_start, write_recording

    f = feed or DEFAULT_FEED
    path = CACHE_DIR / f"{f['symbol']}-{f['start'][:16].replace(':', '')}-{int(f['minutes'])}m-seed{f['seed']}.jsonl.gz"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # same suffix: write_recording gzips by name
        write_recording(tmp, generate(f["symbol"], parse_start(f["start"]), f["minutes"], f["seed"], f["depth"]))
        tmp.replace(path)
    return path


def recording_symbol(path: Path) -> str:
    """The symbol of the first book or trade message of a recording."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        for i, line in enumerate(fh):
            if i > 1000:
                break
            try:
                topic = json.loads(line).get("topic", "")
            except (json.JSONDecodeError, AttributeError):
                continue
            if topic.startswith(("orderbook.", "publicTrade.")):
                return topic.rsplit(".", 1)[1]
    raise ValueError(f"{path}: no orderbook or publicTrade message in its first 1000 lines")


class Soak:
    def __init__(self, opts: Options, recording: Path | list[Path], symbol: str, live_overrides: list[str],
                 reconciliation_interval_s: float, stop_budget_s: float) -> None:
        self.o = opts
        # --symbols N > 1: one recording per symbol, in opts.symbols' order; else one recording
        self.recordings = list(recording) if isinstance(recording, list) else [recording]
        self.recording = self.recordings[0]
        self.multi = opts.symbols is not None
        self.symbols = list(opts.symbols) if self.multi else [symbol]
        self.symbol = self.symbols[0]
        self.instrument_id = f"{self.symbol}-LINEAR.BYBIT"
        self.live_overrides = live_overrides
        self.reconciliation_interval_s = reconciliation_interval_s
        self.stop_budget_s = stop_budget_s
        self.out = opts.out
        self.fake: subprocess.Popen | None = None
        self.node: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}
        self.metrics_port = 0
        self.samples: list[dict] = []
        self.fault_log: list[dict] = []
        self.t_ready_wall: float | None = None
        self.t_stop_wall: float | None = None
        self.node_exit: int | None = None
        self.node_died_at_s: float | None = None
        self.interrupted_at_s: float | None = None
        self.notes: list[str] = []
        self.rec_dir = self.out / "recording"
        self.rec_probe = probes.RecordingProbe(self.rec_dir)

    # -- processes ------------------------------------------------------------------------------

    def start_fake(self) -> None:
        err = open(self.out / "fake.err", "w")
        if self.multi:  # several symbols: no seamless loop (one symbol only); each recording covers the run
            feed = [a for sym, rec in zip(self.symbols, self.recordings) for a in ("--recording", str(rec),
                                                                                      "--symbol", sym)]
        else:
            feed = ["--recording", str(self.recording), "--symbol", self.symbol, "--seamless"]
        self.fake = subprocess.Popen(
            [sys.executable, "-m", "tools.fake_bybit", *feed,
             "--port", "0", "--api-key", SOAK_KEY, "--api-secret", SOAK_SECRET],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        line = self.fake.stdout.readline()
        if not line:
            raise RuntimeError(f"the loopback exchange did not start: {(self.out / 'fake.err').read_text()[-2000:]}")
        self.urls = json.loads(line)

    def node_command(self) -> list[str]:
        u = self.urls
        self.metrics_port = _free_port()
        env = "shadow" if self.o.mode == "shadow" else "testnet"
        sets = [f"live.base_url_ws_public={u['ws_public']}"]
        if self.o.mode != "shadow":
            sets += [f"live.base_url_http={u['http']}", f"live.base_url_ws_private={u['ws_private']}",
                     f"live.base_url_ws_trade={u['ws_trade']}", "live.adapter_environment=mainnet",
                     "live.test_exchange=true"]  # the loopback fake is the declared test exchange
        sets += self.live_overrides
        cmd = [sys.executable, "-m", "mmbot.cli", "live", "--env", env, "--config", str(self.o.config),
               "--metrics-port", str(self.metrics_port)]
        for s in sets:
            cmd += ["--set", s]
        return cmd

    def start_node(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
        env.update(BYBIT_TESTNET_API_KEY=SOAK_KEY, BYBIT_TESTNET_API_SECRET=SOAK_SECRET, MMBOT_KILL_TOKEN="")
        self.node_cmd = self.node_command()
        self.node = subprocess.Popen(self.node_cmd, stdout=open(self.out / "node.out", "w"),
                                     stderr=open(self.out / "node.err", "w"), cwd=self.out, env=env)

    def metrics_url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def wait_ready(self) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            if self.node.poll() is not None:
                self.notes.append(f"the node exited {self.node.returncode} before it was ready")
                return False
            if self.fake.poll() is not None:
                self.notes.append(f"the loopback exchange exited {self.fake.returncode}: {self._fake_err_tail()}")
                return False
            if probes.http_get(self.metrics_url("/ready"), 2.0)[0] == 200:
                return True
            time.sleep(0.25)
        st = self.fake_get("/stats") or {}
        body = probes.http_get(self.metrics_url("/ready"), 2.0)[1]
        self.notes.append(f"the node was not ready within {READY_TIMEOUT_S:g}s (/ready: {body[:300]}; the exchange "
                          f"replayed {st.get('replayed_messages')} messages; its stderr ends: {self._fake_err_tail()})")
        return False

    def _fake_err_tail(self) -> str:
        try:
            lines = (self.out / "fake.err").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-2:])[-400:]

    def fake_get(self, path: str, timeout: float = 10.0) -> dict | None:
        status, body = probes.http_get(self.urls["control"] + path, timeout)
        return json.loads(body) if status == 200 else None

    # -- faults ---------------------------------------------------------------------------------

    def apply_step(self, fault: Fault, action: str, body: dict) -> None:
        wall = time.time()
        entry = {"fault": fault.text or fault.kind, "action": action, "body": body, "wall_s": wall,
                 "t_s": wall - self.t_ready_wall}
        try:
            if action == "inject":
                r = _post(self.urls["control"] + "/faults", body)
                entry["answer"] = {k: r.get(k) for k in ("ok", "error")} | {
                    "closed": (r.get("fault") or {}).get("closed")}
            else:
                _post(self.urls["control"] + f"/faults?kind={body['kind']}", method="DELETE")
                entry["answer"] = {"ok": True}
        except Exception as e:  # noqa: BLE001
            entry["answer"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            self.notes.append(f"fault {fault.text}: {action} failed: {e}")
        self.fault_log.append(entry)

    # -- samples --------------------------------------------------------------------------------

    def _balance_pair(self) -> tuple[float, float] | None:
        """(node balance from /metrics, exchange wallet from /stats), read in that order."""
        status, text = probes.http_get(self.metrics_url(), 10.0)
        st = self.fake_get("/stats")
        if status != 200 or st is None:
            return None
        m = probes.parse_metrics(text)
        return self._account_balance_node(m), float(st["wallet_balance"])

    def _account_balance_node(self, m: list) -> float:
        """The node's wallet balance. A portfolio node exports ``mmbot_equity_usdt`` once per
        instrument, each the account's balance plus THAT instrument's unrealised PnL: summed over
        the instruments it would count the account N times, so the first instrument's pair is read
        (any one is the account's balance)."""
        if not self.multi:
            return _node_balance(probes.metric_sum(m, "mmbot_equity_usdt"),
                                 probes.metric_sum(m, "mmbot_pnl_usdt", part="unrealized"))
        return _node_balance(probes.metric_sum(m, "mmbot_equity_usdt", instrument=self.instrument_id),
                             probes.metric_sum(m, "mmbot_pnl_usdt", part="unrealized", instrument=self.instrument_id))

    def sample(self, t_s: float) -> dict:
        wall = time.time()
        s: dict = {"t_s": round(t_s, 3), "wall_s": wall, "load": probes.load_average()}
        node = probes.proc_sample(self.node.pid) if self.node is not None else None
        if node:
            s.update(rss_mb=node["rss_mb"], cpu_s=node["cpu_s"], threads=node["threads"])
            kids = [probes.proc_sample(c) for c in probes.children(self.node.pid)]
            s["children_rss_mb"] = sum(k["rss_mb"] for k in kids if k)
        fk = probes.proc_sample(self.fake.pid) if self.fake is not None else None
        if fk:
            s.update(fake_rss_mb=fk["rss_mb"], fake_cpu_s=fk["cpu_s"])
        status, text = probes.http_get(self.metrics_url(), 10.0)
        m = probes.parse_metrics(text) if status == 200 else []
        ms = lambda name, **lab: probes.metric_sum(m, name, **lab)  # noqa: E731
        s.update(
            metrics_ok=status == 200,
            book_updates=ms("mmbot_book_updates_total"),
            orders_submitted=ms("mmbot_orders_submitted_total"),
            orders_cancelled=ms("mmbot_orders_cancelled_total"),
            amends=ms("mmbot_orders_amended_total"),
            fills=ms("mmbot_fills_total"),
            rejects=ms("mmbot_orders_rejected_total"),
            open_orders_node=ms("mmbot_open_orders"),
            position_node=ms("mmbot_position_base"),
            equity_node=ms("mmbot_equity_usdt"),
            unrealized_node=ms("mmbot_pnl_usdt", part="unrealized"),
            trading_state=ms("mmbot_trading_state"),
            circuit_breaker=ms("mmbot_circuit_breaker_state"),
            ws_reconnects=ms("mmbot_ws_reconnects_total"),
            data_disconnects=ms("mmbot_data_disconnects_total"),
            book_gaps=ms("mmbot_book_gaps_total"),
            ready=ms("mmbot_ready"),
            guards=probes.guard_states(m),
            guard_transitions=probes.guard_transitions(m),
            hist={("inf" if math.isinf(k) else repr(k)): v for k, v in probes.histogram_buckets(m).items()},
        )
        s["balance_node"] = self._account_balance_node(m)
        if self.multi:  # per instrument (the summed figures above mix units: a position in BTC plus XRP)
            s["instruments"] = {sym: {
                "book_updates": ms("mmbot_book_updates_total", instrument=iid),
                "orders_submitted": ms("mmbot_orders_submitted_total", instrument=iid),
                "fills": ms("mmbot_fills_total", instrument=iid),
                "open_orders_node": ms("mmbot_open_orders", instrument=iid),
                "position_node": ms("mmbot_position_base", instrument=iid),
                "trading_state": ms("mmbot_trading_state", instrument=iid),
            } for sym, iid in ((x, f"{x}-LINEAR.BYBIT") for x in self.symbols)}
            s["equity_node"] = ms("mmbot_equity_usdt", instrument=self.instrument_id)
            s["position_node"] = s["position_exchange"] = math.nan  # per instrument only
        st = self.fake_get("/stats")
        if st is not None:
            opened: dict[str, int] = {}
            for c in st["connections"]:
                opened[c["stream"]] = opened.get(c["stream"], 0) + 1
            s.update(connections_opened=opened, published_total=st["published_total"], fake_passes=st["passes"],
                     replayed_messages=st["replayed_messages"])
            if self.o.mode != "shadow":  # shadow: the simulator is the venue; the exchange holds no account
                s.update(open_orders_exchange=len(st["open_orders"]), position_exchange=float(st["position_signed"]),
                         balance_exchange=float(st["wallet_balance"]), exchange_orders_total=st["orders_total"],
                         exchange_executions_total=st["executions_total"])
                if self.multi:
                    s["position_exchange"] = math.nan
                    for sym, row in s["instruments"].items():
                        row["open_orders_exchange"] = sum(1 for o in st["open_orders"] if o.get("symbol") == sym)
                        row["position_exchange"] = float(st["positions_signed"].get(sym, math.nan))
                # NaN (node not reconciled) compares False: nothing to settle
                settled = probes.settle_balance(self._balance_pair, G.BALANCE_TOLERANCE_USDT, BALANCE_RECHECKS,
                                                BALANCE_RECHECK_S) \
                    if abs(s["balance_node"] - s["balance_exchange"]) > G.BALANCE_TOLERANCE_USDT else None
                if settled is not None and settled["node"] is not None:
                    s.update(balance_node=settled["node"], balance_exchange=settled["exchange"],
                             balance_first_diff=settled["first_diff"], balance_rechecks=settled["rechecks"])
        s["recorder"] = self.rec_probe.sample()
        if self.samples:  # per-interval figures
            prev = self.samples[-1]
            d_books = s.get("book_updates", math.nan) - prev.get("book_updates", math.nan)
            d_cpu = s.get("cpu_s", math.nan) - prev.get("cpu_s", math.nan)
            s["cpu_ms_per_book_msg"] = d_cpu / d_books * 1e3 if d_books and d_books > 0 else math.nan
            d = probes.bucket_delta(_hist(s), _hist(prev))
            s["tick_to_order_p50_ms"] = probes.histogram_quantile(d, 0.50) * 1e3
            s["tick_to_order_p99_ms"] = probes.histogram_quantile(d, 0.99) * 1e3
            s["orders_timed"] = max(d.values(), default=0.0)
        self.samples.append(s)
        return s

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run everything; returns the report dict (gates included)."""
        started = datetime.now(UTC).isoformat(timespec="seconds")
        ready = False
        try:
            try:
                self.start_fake()  # inside: an interrupt while it loads the recording stops it too
                self.start_node()
                ready = self.wait_ready()
                if ready:
                    self.t_ready_wall = time.time()
                    self.loop()
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM (tools/soak/__main__.py turns it into this): the node is stopped
                # exactly as at the end (SIGTERM, its venue-checked stop), then the exchange; the
                # report covers the run so far and fails. Before, the node kept quoting, orphaned.
                at = time.time() - (self.t_ready_wall or time.time())
                self.interrupted_at_s = round(at, 3)
                self.notes.append(f"interrupted at t={at:.1f}s: the node was stopped as at the end; "
                                  "the report covers the run so far and does not pass")
                print(f"soak: interrupted at t={at:.0f}s: stopping the node (SIGTERM) and the exchange",
                      file=sys.stderr, flush=True)
                self.clear_faults()
            self.stop_node()
            after = self.after_stop()
        finally:
            # whatever escaped above (a second interrupt during the stop): no process outlives the
            # soak, even when another interrupt lands in this block (each step in its own finally).
            try:
                if self.node is not None and self.node.poll() is None:
                    self.node.kill()
                    self.node.wait()
            finally:
                try:
                    self.stop_fake()
                finally:
                    if self.fake is not None and self.fake.poll() is None:
                        self.fake.kill()
                        self.fake.wait()
        return self.build_report(started, ready, after)

    def loop(self) -> None:
        D, every = self.o.duration_s, self.o.sample_every_s
        times = {round(k * every, 6) for k in range(int(D // every) + 1)} | {D * q for q in (0.25, 0.5, 0.75, 1.0)}
        samples = sorted(t for t in times if t <= D)
        steps = sorted(((t, i, f, a, b) for i, f in enumerate(self.o.faults) for t, a, b in f.steps()),
                       key=lambda x: (x[0], x[1]))
        si = fi = 0
        while si < len(samples) or fi < len(steps):
            nxt_s = samples[si] if si < len(samples) else math.inf
            nxt_f = steps[fi][0] if fi < len(steps) else math.inf
            target = min(nxt_s, nxt_f)
            while True:  # wait, watching the node
                now = time.time() - self.t_ready_wall
                if self.node.poll() is not None:
                    self.node_died_at_s = now
                    self.notes.append(f"the node exited {self.node.returncode} at t={now:.1f}s, before the end")
                    return
                if self.fake.poll() is not None:
                    self.notes.append(f"the loopback exchange exited {self.fake.returncode} at t={now:.1f}s: "
                                      f"{self._fake_err_tail()}")
                    return
                if now >= target:
                    break
                time.sleep(min(0.5, target - now))
            if nxt_f <= nxt_s:
                _, _, f, action, body = steps[fi]
                self.apply_step(f, action, body)
                fi += 1
            else:
                s = self.sample(time.time() - self.t_ready_wall)
                si += 1
                print(f"soak: t={s['t_s']:.0f}s rss={s.get('rss_mb', math.nan):.1f}MB "
                      f"p99={s.get('tick_to_order_p99_ms', math.nan):.2f}ms open node/exchange="
                      f"{s.get('open_orders_node', math.nan):g}/{s.get('open_orders_exchange', math.nan):g} "
                      f"position node/exchange={s.get('position_node', math.nan):g}/"
                      f"{s.get('position_exchange', math.nan):g} fills={s.get('fills', math.nan):g} "
                      f"load={(s.get('load') or [math.nan])[0]:.2f}", file=sys.stderr, flush=True)
                for sym, row in (s.get("instruments") or {}).items():
                    print(f"soak:   {sym}: open node/exchange={row.get('open_orders_node', math.nan):g}/"
                          f"{row.get('open_orders_exchange', math.nan):g} position node/exchange="
                          f"{row.get('position_node', math.nan):g}/{row.get('position_exchange', math.nan):g} "
                          f"fills={row.get('fills', math.nan):g}", file=sys.stderr, flush=True)

    def clear_faults(self) -> None:
        """Interrupted, maybe inside a fault window (freeze: every order operation held; rate_limit:
        10006 answers): the node's venue-checked stop must meet a healthy exchange, as at the end of
        a run (after every window), or it spends its stop budget or leaves orders behind."""
        if "control" not in self.urls or self.fake is None or self.fake.poll() is not None:
            return
        try:
            _post(self.urls["control"] + "/faults", method="DELETE", timeout=5.0)
            self.notes.append("interrupted: every fault cleared before the node's stop")
        except Exception as e:  # noqa: BLE001 (the stop goes ahead regardless)
            self.notes.append(f"interrupted: clearing the faults failed: {type(e).__name__}: {e}")

    def stop_node(self) -> None:
        if self.node is None:
            return
        self.t_stop_wall = time.time()
        if self.node.poll() is None:
            self.node.send_signal(signal.SIGTERM)
            try:
                self.node.wait(timeout=self.stop_budget_s)
            except subprocess.TimeoutExpired:
                self.notes.append(f"the node did not exit within {self.stop_budget_s:g}s of SIGTERM: killed")
                self.node.kill()
                self.node.wait()
        self.node_exit = self.node.returncode

    def stop_fake(self) -> None:
        if self.fake is not None and self.fake.poll() is None:
            self.fake.send_signal(signal.SIGTERM)
            try:
                self.fake.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.fake.kill()
                self.fake.wait()

    def after_stop(self) -> dict:
        """What the exchange says after the stop, its histories and what it broadcast."""
        if "control" not in self.urls:  # interrupted before the exchange said where it listens
            return {}
        stats = self.fake_get("/stats") or {}
        state = self.fake_get("/state", timeout=120.0) or {}
        published = self.fake_get("/published", timeout=60.0) or {}
        (self.out / "exchange_state.json").write_text(json.dumps(
            {k: state.get(k) for k in ("open_orders", "orders", "executions", "position", "wallet", "faults",
                                       "unknown_requests", "book")}, indent=None))
        # What the exchange broadcast (rows per topic per second): kept so the recorder comparison
        # can be redone or inspected after the fake is gone.
        (self.out / "published.json").write_text(json.dumps(published, indent=None))
        return {"stats": stats, "state": state, "published": published}

    # -- checks and report ----------------------------------------------------------------------

    def node_events(self) -> list[dict]:
        out = []
        p = self.out / "node.err"
        if p.exists():
            for line in p.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"event"' in line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
        return out

    def build_report(self, started: str, ready: bool, after: dict) -> dict:
        from tools.soak.report import summarise_faults

        D = self.o.duration_s
        t0 = self.t_ready_wall or time.time()
        t_end = self.t_stop_wall or time.time()
        shadow = self.o.mode == "shadow"
        events = self.node_events()
        stopped = next((e for e in reversed(events) if e.get("event") == "stopped"), {})
        windows = [(t0 + f.at_s, t0 + f.end_s) for f in self.o.faults if f.affects_public]
        # Recorder: import --strict, then second-by-second against the exchange's broadcasts.
        imp = recorder_check.import_recording(self.rec_dir, self.out / "catalog", self.out / "import_report.json") \
            if self.rec_dir.exists() else {"ok": False, "error": "no recording directory", "files": []}
        comparisons = None
        if imp.get("ok"):
            pub = after.get("published", {})
            per_s = lambda topic: {int(k): v[1] for k, v in pub.get(topic, {}).items()}  # noqa: E731
            comparisons = {}
            for sym in self.symbols:  # one symbol: the keys "book", "trades" as before; several: "book XRPUSDT", ...
                rows = recorder_check.catalog_rows_per_second(self.out / "catalog", f"{sym}-LINEAR.BYBIT")
                sfx = f" {sym}" if self.multi else ""
                comparisons["book" + sfx] = recorder_check.compare(per_s(f"orderbook.50.{sym}"), rows["book"], t0,
                                                                   t_end, windows)
                comparisons["trades" + sfx] = recorder_check.compare(per_s(f"publicTrade.{sym}"), rows["trades"], t0,
                                                                     t_end, windows)
                comparisons["book" + sfx]["snapshot_rows"] = sum(rows["book_snapshot_rows"].values())
        # Node vs exchange over the whole run (several symbols: each symbol on its own).
        tl = tls = None
        if not shadow and after.get("state"):
            if self.multi:
                tls = timeline.compare_per_symbol(self.rec_dir / "orders.jsonl", after["state"], int(t0 * 1e9),
                                                  int(t_end * 1e9), self.symbols)
            else:
                tl = timeline.compare(self.rec_dir / "orders.jsonl", after["state"], int(t0 * 1e9), int(t_end * 1e9))
        survived = ready and self.node_died_at_s is None
        open_after = None if shadow else [
            {k: o.get(k) for k in ("orderId", "orderLinkId", *(("symbol",) if self.multi else ()), "side", "price")}
            for o in after.get("stats", {}).get("open_orders", [])]
        hist_at = {round(s["t_s"] / D, 3): _hist(s) for s in self.samples} if D else {}
        q = lambda a, b: probes.bucket_delta(_nearest(hist_at, b), _nearest(hist_at, a))  # noqa: E731
        bounds = self.o.gate_bounds
        balance_diffs = [(s["t_s"], s.get("balance_node", math.nan) - s.get("balance_exchange", math.nan))
                         for s in self.samples]
        holds = [(int((t0 + f.at_s) * 1e9), int((t0 + f.end_s + f.window_s) * 1e9))
                 for f in self.o.faults if f.holds_exchange]
        mismatch = G.state_mismatch_per_instrument_gate(tls, balance_diffs, self.reconciliation_interval_s,
                                                        bounds.get("state_mismatch_s"), holds) if self.multi else \
            G.state_mismatch_gate(tl, balance_diffs, self.reconciliation_interval_s, bounds.get("state_mismatch_s"),
                                  holds)
        gates = [
            G.node_gate(survived, self.node_exit, "; ".join(self.notes)),
            G.rss_slope_gate([s["t_s"] for s in self.samples], [s.get("rss_mb") for s in self.samples], D,
                             bounds.get("rss_slope_mb_per_h", G.RSS_SLOPE_MAX_MB_PER_H)),
            mismatch,
            G.orders_left_gate(open_after, self.node_exit, stopped.get("open_orders_in_cache")),
            G.p99_growth_gate(q(0.0, 0.25), q(0.75, 1.0), probes.histogram_quantile,
                              bounds.get("p99_ratio", G.P99_RATIO_MAX)),
            G.recorder_gate(imp, comparisons),
        ]
        # an interrupted run proves nothing about the hour it did not run
        ok = all(g.holds for g in gates if g.applicable) and self.interrupted_at_s is None
        multi = {} if not self.multi else {
            "symbols": len(self.symbols),
            "instrument": ", ".join(f"{x}-LINEAR.BYBIT" for x in self.symbols),
            "instruments": self.instrument_rows(tls, after),
            "recording": ", ".join(str(r) for r in self.recordings),
            "timelines": tls,
        }
        rep = {
            "ok": ok,
            "interrupted_at_s": self.interrupted_at_s,
            "command": " ".join(["python -m tools.soak", *self.o.argv]),
            "started_utc": started,
            "mode": self.o.mode,
            "duration_s": D,
            "sample_every_s": self.o.sample_every_s,
            "symbols": 1,
            "instrument": self.instrument_id,
            "recording": str(self.recording),
            "node_command": " ".join(getattr(self, "node_cmd", [])),
            "reconciliation_interval_s": self.reconciliation_interval_s,
            "machine": {"cores": os.cpu_count(), "load_at_samples": [s["load"] for s in self.samples][:1] +
                        [s["load"] for s in self.samples][-1:],
                        "load1_mean": _mean([s["load"][0] for s in self.samples if s.get("load")])},
            "ready_wall_s": self.t_ready_wall, "stop_wall_s": self.t_stop_wall,
            "node_exit_code": self.node_exit,
            "node_events": [e for e in events if e.get("event") in ("ready", "stream_down", "stream_up", "stop_check",
                                                                    "stopped", "exit", "connection_lost",
                                                                    "recorder_failed", "node_error", "not_ready")],
            "faults": summarise_faults(self.o.faults, self.fault_log, t0),
            "notes": self.notes,
            "gates": [g.to_json() for g in gates],
            "recorder": {"import": {k: v for k, v in imp.items() if k != "report"},
                         "import_written": (imp.get("report") or {}).get("written"),
                         "comparison": comparisons},
            "timeline": tl,
            "exchange_after_stop": {"open_orders": open_after,
                                    "unknown_requests": after.get("stats", {}).get("unknown_requests"),
                                    "faults_fired": after.get("stats", {}).get("faults_fired"),
                                    "passes": after.get("stats", {}).get("passes"),
                                    "connections": [{k: c.get(k) for k in ("stream", "user_agent", "opened_ms",
                                                                           "closed_ms", "sent_rows")}
                                                    for c in after.get("stats", {}).get("connections", [])]},
            "samples": self.samples,
        }
        rep.update(multi)
        return rep

    def instrument_rows(self, tls: dict[str, dict] | None, after: dict) -> list[dict]:
        """The report's per-instrument rows of a portfolio soak: activity from the node's last
        sample, fills and orders from both histories, the longest mismatches, the end positions."""
        last = (self.samples[-1].get("instruments") or {}) if self.samples else {}
        execs: dict[str, int] = {}
        for x in (after.get("state") or {}).get("executions", []):
            execs[x.get("symbol", "")] = execs.get(x.get("symbol", ""), 0) + 1
        rows = []
        for sym in self.symbols:
            tl = (tls or {}).get(sym) or {}
            li = last.get(sym) or {}
            pos_x = ((after.get("state") or {}).get("positions") or {}).get(sym) or {}
            size = float(pos_x.get("size") or 0.0)
            rows.append({
                "symbol": sym, "instrument": f"{sym}-LINEAR.BYBIT",
                "book_updates": li.get("book_updates"), "orders_submitted": li.get("orders_submitted"),
                "fills_node_metric": li.get("fills"),
                "fills_node": tl.get("fills_node", li.get("fills")),  # shadow: no timeline, the node's count
                "fills_exchange": tl.get("fills_exchange", None if self.o.mode == "shadow" else execs.get(sym)),
                "orders_node": tl.get("orders_node"), "orders_exchange": tl.get("orders_exchange"),
                "max_order_mismatch_s": tl.get("max_order_mismatch_s"),
                "max_position_mismatch_s": tl.get("max_position_mismatch_s"),
                "position_node_last_sample": li.get("position_node"),
                "position_exchange_last_sample": li.get("position_exchange"),
                "position_exchange_after_stop": None if self.o.mode == "shadow" else  # no account: the simulator is the venue
                size if pos_x.get("side") == "Buy" else -size if pos_x.get("side") == "Sell" else 0.0,
            })
        return rows


def _hist(sample: dict) -> dict[float, float]:
    return {(math.inf if k == "inf" else float(k)): v for k, v in sample.get("hist", {}).items()}


def _nearest(hist_at: dict[float, dict], frac: float) -> dict[float, float]:
    if not hist_at:
        return {}
    key = min(hist_at, key=lambda k: abs(k - frac))
    return hist_at[key]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def prepare_out(out: Path) -> None:
    """A fresh directory: refuse one that exists and is not empty (a soak never mixes runs)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out}: not empty; give a new directory (a soak never mixes two runs)")
    out.mkdir(parents=True, exist_ok=True)


def remove_catalog(out: Path) -> None:
    shutil.rmtree(out / "catalog", ignore_errors=True)
