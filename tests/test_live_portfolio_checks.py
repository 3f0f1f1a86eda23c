"""The live run's venue checks of a [portfolio] run for EVERY instrument (docs/portfolio.md,
"Modes"): the startup sweep, the position check at readiness, the stop's venue check and the
startup gate's release. ``LiveRun`` with a stubbed node, sweep and execution client: each test
puts the problem on the SECOND instrument, which a check of the first instrument only misses."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace

import pytest

from mmbot.live import node as N
from mmbot.live.stop import SweepResult

XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"


class FakeSweep:
    """``VenueSweep`` stand-in: what each instrument's check finds is ``left[instrument]``."""

    def __init__(self, left: dict[str, list[str]], calls: list, instrument_id: str = XRP) -> None:
        self.left, self.calls, self.instrument_id = left, calls, instrument_id

    async def run(self, instrument, local_orders):
        self.calls.append(self.instrument_id)
        ids = self.left.get(self.instrument_id, [])
        return SweepResult(ok=not ids, verified=True, remaining=list(ids), rounds=1)


class FakeCache:
    def __init__(self, positions: dict[str, Decimal] | None = None) -> None:
        self.positions = positions or {}

    def instrument(self, iid):
        return SimpleNamespace(id=iid)

    def orders(self, instrument_id=None):
        return []

    def orders_open(self, instrument_id=None):
        return []

    def positions_open(self, instrument_id=None):
        qty = self.positions.get(str(instrument_id), Decimal(0))
        return [SimpleNamespace(signed_decimal_qty=lambda q=qty: q)] if qty else []


def _run(sweep=None, positions=None) -> N.LiveRun:
    run = N.LiveRun(SimpleNamespace(trader_id="MMBOT-abc123"), XRP, instrument_ids=[XRP, BTC], sweep=sweep)
    run.node = SimpleNamespace(cache=FakeCache(positions),
                               kernel=SimpleNamespace(clock=SimpleNamespace(timestamp_ns=lambda: 0)))
    return run


def test_stop_check_runs_for_every_instrument_and_names_the_one_with_orders_left():
    calls: list = []
    run = _run(FakeSweep({BTC: ["O-1-abc123-001-1"]}, calls))
    run.ready = True
    asyncio.run(run._stop_check())  # noqa: SLF001
    assert calls == [XRP, BTC]
    assert run.exit_code == N.EXIT_ORDERS_LEFT
    assert run.error.startswith(f"{BTC}: 1 order(s) may still rest on the venue"), run.error
    assert XRP not in run.error
    assert run.sweep_result.remaining == ["O-1-abc123-001-1"] and not run.sweep_result.ok


def test_stop_check_clean_on_every_instrument_is_exit_0():
    calls: list = []
    run = _run(FakeSweep({}, calls))
    run.ready = True
    asyncio.run(run._stop_check())  # noqa: SLF001
    assert calls == [XRP, BTC] and run.exit_code == 0 and run.sweep_result.ok


def test_startup_sweep_runs_for_every_instrument_and_names_the_one_with_leftovers():
    calls: list = []
    run = _run(FakeSweep({BTC: ["O-9-abc123-001-3"]}, calls))
    why = asyncio.run(run._sweep_leftovers())  # noqa: SLF001
    assert calls == [XRP, BTC]
    assert why.startswith(f"not ready: 1 own order(s) of an earlier run still rest on the venue on {BTC}"), why


def test_start_position_checked_for_every_instrument(monkeypatch):
    """The venue holds 0.01 BTC the node does not know of: the start fails naming BTC (the first
    instrument, XRP, is equal on both sides)."""
    monkeypatch.setattr(N, "POSITION_CHECK_S", 0.2)
    monkeypatch.setattr(N, "POSITION_CHECK_INTERVAL_S", 0.05)
    venue = {XRP: Decimal("0"), BTC: Decimal("0.01")}

    class Exe:
        async def generate_position_status_reports(self, command):
            iid = command.instrument_id
            return [SimpleNamespace(instrument_id=iid, venue_position_id=None, signed_decimal_qty=venue[str(iid)])]

    run = _run()
    why = asyncio.run(run._check_start_positions(Exe()))  # noqa: SLF001
    assert why.startswith(f"not ready: the node's position on {BTC} after Nautilus' startup reconciliation is 0, "
                          "the exchange's 0.01"), why
    run2 = _run(positions={BTC: Decimal("0.01")})
    assert asyncio.run(run2._check_start_positions(Exe())) == ""  # noqa: SLF001


def test_every_instruments_startup_gate_is_released():
    released = []
    gates = [SimpleNamespace(release=lambda i=i: released.append(i)) for i in (XRP, BTC)]
    run = _run()
    run._actors = lambda cls: gates  # noqa: SLF001
    run._release_gate()  # noqa: SLF001
    assert released == [XRP, BTC]


@pytest.mark.parametrize("iid", [XRP, BTC])
def test_sweep_for_queries_the_instrument_asked(iid):
    run = _run(FakeSweep({}, []))
    assert run.sweep_for(iid).instrument_id == iid
