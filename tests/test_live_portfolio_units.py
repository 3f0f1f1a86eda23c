"""A ``[portfolio]`` in the live modes, piece by piece (docs/portfolio.md, "Modes"): the shadow
node's placement, the books-ready start, the per-symbol recording, the metrics of several
instruments on one registry, and the one-line refusals before anything connects."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_live_portfolio_shadow import BTC, XRP, portfolio_config

REPO = Path(__file__).resolve().parent.parent


def _frames(tmp: Path, symbol: str, seed: int, n: int = 3) -> list[str]:
    out = tmp / f"{symbol}.jsonl"
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", symbol, "--depth", "200",
                    "--orders-per-s", "1", "--minutes", "0.1", "--seed", str(seed), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    return out.read_text().splitlines()[:n]


def _shadow_portfolio_node(tmp_path):
    from mmbot.live.node import load_live_config
    from mmbot.live.shadow import ShadowRun, build_shadow_node_config

    cfg, live = load_live_config(portfolio_config(tmp_path), [
        "venue.fill_model=risk_averse", f"live.out_dir={tmp_path}/runs", f"live.lock_dir={tmp_path}/locks",
        f"risk.audit.file={tmp_path}/audit.jsonl", f"risk.kill_switch.file={tmp_path}/KILL",
        "live.base_url_ws_public=ws://127.0.0.1:9/unused"], portfolio=True)
    run = ShadowRun(build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path / "run"), cfg)
    return run.build(), run


def test_shadow_node_places_one_maker_ledger_and_guards_per_instrument_and_one_router(tmp_path):
    """The backtest's placement: strategies 000 (XRP) and 001 (BTC) on the simulator client, a
    ledger and the per-symbol guards for each, ONE supervisor with a state per instrument (bound to
    an InstrumentStateCheck), ONE kill switch over every instrument, ONE router with a simulator per
    instrument; every strategy waits for the books-ready stamp."""
    from adapters.sim.router import QueueSimRouter
    from mmbot.backtest.ledger import RunLedger
    from mmbot.live.portfolio import QUOTE_LATER_NS
    from strategies.risk.supervisor import RiskSupervisor

    node, run = _shadow_portfolio_node(tmp_path)
    try:
        strategies = {str(s.config.instrument_id): s for s in node.trader.strategies()}
        assert list(strategies) == [XRP, BTC]
        assert [s.config.order_id_tag for s in strategies.values()] == ["000", "001"]
        assert all(s._quote_from_ns == QUOTE_LATER_NS for s in strategies.values())  # noqa: SLF001
        ids = sorted(a.id.value for a in node.trader.actors())
        assert ids.count("RiskSupervisor") == 1 and ids.count("Risk-kill_switch") == 1
        for label in ("XRPUSDT-LINEAR", "BTCUSDT-LINEAR"):
            assert f"RunLedger-{label}" in ids and f"Risk-position-{label}" in ids and f"Metrics-{label}" in ids
        assert sorted(str(a.instrument_id) for a in node.trader.actors() if isinstance(a, RunLedger)) == sorted([XRP, BTC])
        kill = next(a for a in node.trader.actors() if a.id.value == "Risk-kill_switch")
        assert kill._iid_str is None  # noqa: SLF001  # every instrument: its HALTED and its cancels
        sup = next(a for a in node.trader.actors() if isinstance(a, RiskSupervisor))
        assert sup.config.per_instrument and sup._instrument_check is not None  # noqa: SLF001
        assert isinstance(run.qsim, QueueSimRouter) and sorted(map(str, run.qsim.sims)) == sorted([XRP, BTC])
    finally:
        node.get_event_loop().close()


def test_strategies_start_at_the_message_that_gives_every_instrument_a_book(tmp_path):
    """The backtest of the recording starts every instrument at the first message at which all
    have a book (mmbot/backtest/portfolio.py): XRP's snapshot alone changes nothing, BTC's snapshot
    sets every strategy's quote_from_ns to its receive stamp before the node sees it."""
    from nautilus_trader.model.identifiers import ClientId

    xrp, btc = _frames(tmp_path, "XRPUSDT", 7, 2), _frames(tmp_path, "BTCUSDT", 11, 1)
    node, run = _shadow_portfolio_node(tmp_path)
    try:
        run.qsim.start()
        client = node.kernel.data_engine._clients[ClientId("BYBIT")]  # noqa: SLF001
        client._new_streams()  # noqa: SLF001  # what connecting does
        strategies = node.trader.strategies()
        client._on_frame(xrp[0])  # noqa: SLF001
        client._on_frame(xrp[1])  # noqa: SLF001
        assert all(s._quote_from_ns == 2**62 for s in strategies)  # noqa: SLF001
        assert not client.book_valid
        seen = []  # each strategy's quote_from_ns when a delta of BTC's snapshot reaches the node
        handle = client._handle_data  # noqa: SLF001
        client._handle_data = lambda d: (seen.append({s._quote_from_ns for s in strategies}), handle(d))  # noqa: SLF001
        client._on_frame(btc[0])  # noqa: SLF001
        stamp = strategies[0]._quote_from_ns  # noqa: SLF001
        assert stamp < 2**62 and all(s._quote_from_ns == stamp for s in strategies)  # noqa: SLF001
        assert client.book_valid
        assert seen and all(x == {stamp} for x in seen)  # set before the first delta of the message
    finally:
        node.get_event_loop().close()


def test_recording_of_several_symbols_is_one_day_file_per_symbol(tmp_path):
    """The importer reads one symbol per file: each line goes to its topic's symbol's file; a
    rotation marker starts every symbol's next day at that symbol's own book snapshot."""
    from adapters.recorder import DAY_NS, RecordWriter

    w = RecordWriter(tmp_path, "XRPUSDT", flush_interval_ms=60_000, symbols=("XRPUSDT", "BTCUSDT"))
    day0 = 20_000 * DAY_NS
    line = lambda sym, typ: f'{{"topic":"orderbook.50.{sym}","type":"{typ}","ts":1}}'  # noqa: E731
    w.add_raw(day0 + 1, line("XRPUSDT", "snapshot"))
    w.add_raw(day0 + 2, line("BTCUSDT", "snapshot"))
    w.add_raw(day0 + 3, '{"success":true,"op":"subscribe"}')
    w.add_raw(day0 + DAY_NS + 5, line("BTCUSDT", "delta"))   # after midnight, before the re-subscription
    w.add_raw(day0 + DAY_NS + 6, None)                        # the rotation marker
    w.add_raw(day0 + DAY_NS + 7, line("XRPUSDT", "snapshot"))
    w.add_raw(day0 + DAY_NS + 8, line("BTCUSDT", "delta"))    # BTC's snapshot not yet in: old day
    w.add_raw(day0 + DAY_NS + 9, line("BTCUSDT", "snapshot"))
    w.flush()
    files = {p.name: gzip.open(p, "rt").read().splitlines() for p in tmp_path.glob("*.jsonl.gz")}
    d0, d1 = "2024-10-04", "2024-10-05"
    assert sorted(files) == sorted([f"XRPUSDT_{d0}.jsonl.gz", f"BTCUSDT_{d0}.jsonl.gz", f"XRPUSDT_{d1}.jsonl.gz",
                                    f"BTCUSDT_{d1}.jsonl.gz"]), sorted(files)
    assert len(files[f"XRPUSDT_{d0}.jsonl.gz"]) == 2  # its snapshot and the subscription answer
    assert len(files[f"BTCUSDT_{d0}.jsonl.gz"]) == 3 and all("BTCUSDT" in ln for ln in files[f"BTCUSDT_{d0}.jsonl.gz"])
    for sym in ("XRPUSDT", "BTCUSDT"):  # every day file starts with a snapshot of its symbol
        first = json.loads(files[f"{sym}_{d1}.jsonl.gz"][0])
        assert first["type"] == "snapshot" and first["topic"].endswith(sym)


def test_metrics_of_several_instruments_on_one_registry_and_ready_over_all():
    """One actor per instrument on one registry: each series with its own instrument label, one
    /metrics page, /ready only when every instrument is ready."""
    from nautilus_trader.model.identifiers import InstrumentId

    from mmbot.live.metrics_server import _GROUPS, MetricsActor, MetricsActorConfig

    a = MetricsActor(MetricsActorConfig(instrument_id=InstrumentId.from_str(XRP), environment="shadow",
                                        registry_group="g1", component_id="Metrics-XRPUSDT-LINEAR"))
    b = MetricsActor(MetricsActorConfig(instrument_id=InstrumentId.from_str(BTC), environment="shadow",
                                        registry_group="g1", component_id="Metrics-BTCUSDT-LINEAR"))
    try:
        assert a.m is b.m
        a.m.position.labels(*a._labels).set(5)  # noqa: SLF001
        b.m.position.labels(*b._labels).set(-1)  # noqa: SLF001
        text = a.render().decode()
        assert f'mmbot_position_base{{environment="shadow",instrument="{XRP}"}} 5.0' in text
        assert f'mmbot_position_base{{environment="shadow",instrument="{BTC}"}} -1.0' in text
        a._ready_detail = {"ready": True, "started": True, "instrument_known": True, "book_valid": True,  # noqa: SLF001
                           "book_age_s": 0.5, "account_reconciled": True}
        b._ready_detail = {**a._ready_detail, "ready": False, "book_valid": False, "book_age_s": 3.0}  # noqa: SLF001
        st = a.ready_state()
        assert st["ready"] is False and st["book_valid"] is False and st["book_age_s"] == 3.0
        assert st["instruments"][XRP]["ready"] and not st["instruments"][BTC]["ready"]
    finally:
        a.on_dispose()
        b.on_dispose()
    assert "g1" not in _GROUPS


def _live(tmp: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli", "live", "--config", str(config), "--metrics-port", "-1",
                           "--duration", "5s", "--set", f"live.lock_dir={tmp / 'locks'}",
                           "--set", f"live.out_dir={tmp / 'runs'}", "--set", "live.base_url_ws_public=ws://127.0.0.1:9/x",
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""})


def test_an_instrument_the_venue_does_not_list_is_refused_before_anything_connects(tmp_path):
    config = portfolio_config(tmp_path)
    config.write_text(config.read_text().replace(f'instruments = ["{XRP}", "{BTC}"]',
                                                 f'instruments = ["{XRP}", "NOPEUSDT-LINEAR.BYBIT"]')
                      .replace(f'[portfolio.overrides."{XRP}"]', f'[portfolio.overrides."{XRP}"]'))
    r = _live(tmp_path, config, "--env", "shadow")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "portfolio.instruments: NOPEUSDT-LINEAR.BYBIT is not a listed Bybit linear instrument" in lines[0]
    assert not (tmp_path / "runs").exists()  # no run folder, no connection


@pytest.mark.parametrize("env", ["testnet", "demo"])
def test_venue_modes_run_a_portfolio_and_refuse_an_unlisted_instrument_in_one_line(tmp_path, env):
    """testnet/demo take a [portfolio] (before: refused in one line, "runs one instrument so far");
    an instrument the venue does not list is still one line, exit 2, before anything connects."""
    config = portfolio_config(tmp_path)
    config.write_text(config.read_text().replace(f'instruments = ["{XRP}", "{BTC}"]',
                                                 f'instruments = ["{XRP}", "NOPEUSDT-LINEAR.BYBIT"]'))
    r = _live(tmp_path, config, "--env", env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "portfolio.instruments: NOPEUSDT-LINEAR.BYBIT is not a listed Bybit linear instrument" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_mainnet_gate_unchanged_for_a_portfolio(tmp_path):
    """The gate judges where orders would go, [portfolio] or not: a mainnet run without the
    mainnet config's allow_mainnet is refused in one line (with --confirm-mainnet too)."""
    r = _live(tmp_path, portfolio_config(tmp_path), "--env", "mainnet", "--confirm-mainnet")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "mainnet refused" in lines[0] and "allow_mainnet = true" in lines[0], lines[0]
    assert "portfolio" not in lines[0]
    assert not (tmp_path / "runs").exists()


def test_console_prints_one_status_line_per_instrument():
    """The console's status line is per instrument: with two on one registry, two lines (before:
    the first instrument's only, the other's state never shown)."""
    import io

    from nautilus_trader.model.identifiers import InstrumentId

    from mmbot.live.metrics_server import MetricsActor, MetricsActorConfig
    from mmbot.live.status import StatusConsole

    actors = [MetricsActor(MetricsActorConfig(instrument_id=InstrumentId.from_str(i), environment="shadow",
                                              registry_group="g2", component_id=f"Metrics-{i.split('.')[0]}"))
              for i in (XRP, BTC)]
    try:
        for a, pos in zip(actors, (5, -1)):
            a.m.info.labels(*a._labels).set(1)  # noqa: SLF001
            a.m.position.labels(*a._labels).set(pos)  # noqa: SLF001
        out = io.StringIO()
        StatusConsole(1.0, lambda: actors[0].render().decode(), out=out, clock=lambda: 10.0).tick(force=True)
        lines = out.getvalue().splitlines()
        assert len(lines) == 2, lines
        assert any(" XRPUSDT " in ln and "pos 5" in ln for ln in lines), lines
        assert any(" BTCUSDT " in ln and "pos -1" in ln for ln in lines), lines
    finally:
        for a in actors:
            a.on_dispose()


def test_notional_sizes_resolved_for_every_instrument_at_its_own_mark_before_connecting(tmp_path, monkeypatch):
    """Shadow with sizes in USDT notional: every instrument's level size from its own venue mark
    price (one request per symbol, before the node exists); a venue without one instrument's mark
    is the one-line 'not ready' (exit 4) before anything connects."""
    import mmbot.live.sizing as S
    from mmbot.live.node import load_live_config
    from mmbot.live.shadow import _resolve_shadow_sizing

    marks = {"XRPUSDT": 2.0, "BTCUSDT": 100_000.0}
    asked = []

    def venue_reference(rest_url, symbol, timeout_s, *, instrument=None, **kw):
        asked.append(symbol)
        if symbol not in marks:
            raise S.VenueNotReady(f"no mark for {symbol}")
        return instrument, marks[symbol], "test mark"

    monkeypatch.setattr(S, "venue_reference", venue_reference)
    config = portfolio_config(tmp_path)
    text = config.read_text().replace("level_size = 0.001 ", "level_notional_usdt = 200.0 ")
    text = text.replace("strategy.level_size = 10.0\n", "")
    config.write_text(text)
    cfg, live = load_live_config(config, ["venue.fill_model=risk_averse"], portfolio=True)
    cfg, sizing = _resolve_shadow_sizing(cfg, live, "testnet")
    assert sorted(asked) == ["BTCUSDT", "XRPUSDT"]
    members = cfg.instrument_configs()
    assert members[XRP].strategy["level_size"] == 100.0    # 200 USDT at 2 USDT
    assert members[BTC].strategy["level_size"] == 0.002    # 200 USDT at 100,000 USDT
    assert set(sizing) == {XRP, BTC} and sizing[BTC]["reference_price"] == 100_000.0
    marks.pop("BTCUSDT")
    cfg2, live2 = load_live_config(config, ["venue.fill_model=risk_averse"], portfolio=True)
    with pytest.raises(S.VenueNotReady, match="no mark for BTCUSDT"):
        _resolve_shadow_sizing(cfg2, live2, "testnet")


def test_shadow_places_the_scoreboard_and_allocator_when_the_config_enables_them(tmp_path):
    """``[portfolio.allocator] enabled = true`` (config/portfolio.toml ships it on) is placed in a
    shadow portfolio node as in the backtest, never dropped silently; without it, nothing."""
    from mmbot.live.node import load_live_config
    from mmbot.live.shadow import ShadowRun, build_shadow_node_config
    from strategies.portfolio.allocator import AllocatorActor
    from strategies.portfolio.scoreboard import ScoreboardActor

    base = ["venue.fill_model=risk_averse", f"live.out_dir={tmp_path}/runs", f"live.lock_dir={tmp_path}/locks",
            f"risk.audit.file={tmp_path}/audit.jsonl", f"risk.kill_switch.file={tmp_path}/KILL",
            "live.base_url_ws_public=ws://127.0.0.1:9/unused"]
    for enabled in (True, False):
        cfg, live = load_live_config(portfolio_config(tmp_path), [*base, f"portfolio.allocator.enabled={str(enabled).lower()}"],
                                     portfolio=True)
        run = ShadowRun(build_shadow_node_config(cfg, live, "testnet", run_dir=tmp_path / f"run-{enabled}"), cfg)
        node = run.build()
        try:
            kinds = [type(a) for a in node.trader.actors()]
            assert (AllocatorActor in kinds, ScoreboardActor in kinds) == (enabled, enabled)
            if enabled:
                alloc = next(a for a in node.trader.actors() if isinstance(a, AllocatorActor))
                assert sorted(alloc.config.instruments) == sorted([XRP, BTC])
        finally:
            node.get_event_loop().close()


def test_order_events_count_under_their_own_instrument_only():
    """Each instrument's metrics actor subscribes to every order event of the node (``events.order.*``):
    it must count only its own instrument's. Before, each of N actors counted every instrument's
    events under its own label (a 90-second 3-symbol soak: ``mmbot_fills_total`` 27 on each of
    XRPUSDT, BTCUSDT, DOGEUSDT = all 27 fills three times; fees, submits and the tick-to-order
    histogram likewise)."""
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.events import OrderAccepted, OrderCanceled
    from nautilus_trader.model.identifiers import (AccountId, ClientOrderId, InstrumentId, StrategyId, TraderId,
                                                   VenueOrderId)

    from adapters.order_ids import own_order_prefix
    from mmbot.live.metrics_server import MetricsActor, MetricsActorConfig

    actors = {i: MetricsActor(MetricsActorConfig(instrument_id=InstrumentId.from_str(i), environment="testnet",
                                                 registry_group="g-own", component_id=f"Metrics-{i.split('.')[0]}"))
              for i in (XRP, BTC)}
    try:
        for a in actors.values():
            a._own_ids = own_order_prefix("001")  # noqa: SLF001 (set by on_start from the trader id)
        coid = ClientOrderId("O-20261203-200000-001-001-1")  # strategy 001 = BTC
        common = (TraderId("MMBOT-001"), StrategyId("MarketMaker-001"), InstrumentId.from_str(BTC), coid,
                  VenueOrderId("v-1"), AccountId("BYBIT-UNIFIED"))
        events = [OrderAccepted(*common, UUID4(), 1, 1), OrderCanceled(*common, UUID4(), 2, 2)]
        for a in actors.values():  # every actor gets every event, as on the message bus
            for e in events:
                a._on_order_event(e)  # noqa: SLF001
        text = actors[XRP].render().decode()
        for name in ("mmbot_orders_accepted_total", "mmbot_orders_cancelled_total"):
            assert f'{name}{{environment="testnet",instrument="{BTC}"}} 1.0' in text, text
            assert f'{name}{{environment="testnet",instrument="{XRP}"}} 0.0' in text, text
    finally:
        for a in actors.values():
            a.on_dispose()
