"""The fake exchange's faults used by the live stop/start/masking tests (tools/fake_bybit/faults.py):
``hold`` (a frozen exchange), ``sign_error`` (Bybit's 10004 echo), ``refuse_ws`` (an outage) and the
``on=`` triggers that arm a fault at a precise moment. Loopback only, a second or two each."""

from __future__ import annotations

import asyncio
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")

from tests.test_fake_bybit import SYM, WS, order_args, recording, rest, run, started, trade_op  # noqa: E402,F401
from tools.fake_bybit import DEFAULT_API_KEY  # noqa: E402


def test_fault_hold_processes_after_the_freeze_even_if_the_client_left(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            far = f"{fake.engine.book.best_bid()[0] - 100:.2f}"
            async with aiohttp.ClientSession() as s:
                # REST create held 0.6 s: nothing on the book meanwhile, then the order rests.
                fake.inject("hold", seconds=0.6, op="create")
                task = asyncio.ensure_future(rest(s, urls["http"], "POST", "/v5/order/create",
                                                  body=order_args("Buy", far, "0.001", link="held")))
                await asyncio.sleep(0.3)
                assert fake.state()["open_orders"] == []
                task.cancel()  # the client gives up; the exchange still has the request
                await asyncio.sleep(0.6)
                assert [o["orderLinkId"] for o in fake.state()["open_orders"]] == ["held"]
                # Queries are not held by what="orders"; what="all" holds them too.
                fake.inject("hold", seconds=0.4, what="all", op="query")
                t0 = time.monotonic()
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/order/realtime", {"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0 and time.monotonic() - t0 >= 0.35 and len(r["result"]["list"]) == 1
                # Trade WS: the cancel is processed (and acked) only after the hold.
                async with WS(s, urls["ws_trade"]) as t:
                    await t.auth()
                    fake.inject("hold", seconds=0.5)
                    await t.send({"reqId": "c1", "op": "order.cancel",
                                  "args": [{"category": "linear", "symbol": SYM, "orderLinkId": "held"}]})
                    await asyncio.sleep(0.25)
                    assert len(fake.state()["open_orders"]) == 1
                    r = await t.wait_for(lambda m: m.get("reqId") == "c1", timeout=3)
                    assert r["retCode"] == 0 and fake.state()["open_orders"] == []
            assert [f["kind"] for f in fake.state()["faults"]["fired"]] == ["hold"] * 3
        finally:
            await fake.stop()

    run(go())


def test_fault_hold_with_a_path_holds_only_that_endpoint(recording):
    """``path`` narrows ``hold`` to REST requests of one endpoint: the rest of a reconciliation
    (order list, position) is answered at once while the execution list waits (the kill-restart
    scenario of tests/test_fault_matrix.py)."""
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                fake.inject("hold", seconds=0.5, what="all", op="query", path="/v5/execution/list")
                t0 = time.monotonic()
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/position/list", {"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0 and time.monotonic() - t0 < 0.4  # another path: not held
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/execution/list", {"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0 and time.monotonic() - t0 >= 0.45
            assert [(f["kind"], f["path"]) for f in fake.state()["faults"]["fired"]] == [("hold", "/v5/execution/list")]
        finally:
            await fake.stop()

    run(go())


def test_fault_sign_error_echoes_the_signed_string_with_the_key(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                fake.inject("sign_error", path="/v5/position")
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/order/realtime", {"category": "linear"})
                assert r["retCode"] == 0  # other paths unaffected
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/position/list", {"category": "linear", "symbol": SYM})
                assert r["retCode"] == 10004
                assert r["retMsg"].startswith("error sign! origin_string[") and DEFAULT_API_KEY in r["retMsg"]
                assert "category=linear&symbol=BTCUSDT]" in r["retMsg"]
        finally:
            await fake.stop()

    run(go())


def test_fault_refuse_ws_drops_and_refuses_then_recovers(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_private"]) as p:
                    res = fake.inject("refuse_ws", stream="private", seconds=0.5)
                    assert res["closed"] == 1
                    await asyncio.wait_for(p.closed.wait(), 3)
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await s.ws_connect(urls["ws_private"])
                async with WS(s, urls["ws_trade"]) as t:  # other streams unaffected
                    await t.auth()
                await asyncio.sleep(0.6)
                async with WS(s, urls["ws_private"]) as p:
                    assert (await p.auth())["success"]
        finally:
            await fake.stop()

    run(go())


def test_fault_on_cancel_all_arms_at_that_request(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            far = f"{fake.engine.book.best_bid()[0] - 100:.2f}"
            async with aiohttp.ClientSession() as s:
                fake.inject("rate_limit", on="cancel_all", count=2)
                with pytest.raises(ValueError):
                    fake.inject("rate_limit", on="never")
                for i in range(2):  # dormant: ordinary requests pass
                    _, r, _ = await rest(s, urls["http"], "POST", "/v5/order/create",
                                         body=order_args("Buy", far, "0.001", link=f"o{i}"))
                    assert r["retCode"] == 0
                _, r, _ = await rest(s, urls["http"], "POST", "/v5/order/cancel-all", body={"category": "linear", "symbol": SYM})
                assert r["retCode"] == 10006  # the trigger itself is affected
                _, r, _ = await rest(s, urls["http"], "GET", "/v5/order/realtime", {"category": "linear"})
                assert r["retCode"] == 10006
                _, r, _ = await rest(s, urls["http"], "POST", "/v5/order/cancel-all", body={"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0 and fake.state()["open_orders"] == []
            fired = fake.state()["faults"]["fired"]
            assert [f.get("armed_by") for f in fired] == ["cancel_all", None, None]
        finally:
            await fake.stop()

    run(go())
