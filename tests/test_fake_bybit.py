"""Tests of the loopback fake Bybit v5 exchange (tools/fake_bybit). Loopback only, fast."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")

from tools.fake_bybit import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBybit, rest_headers, ws_signature  # noqa: E402
from tools.fake_bybit.matching import Book  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYM = "BTCUSDT"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fake_bybit") / "rec.jsonl"
    subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", SYM, "--depth", "200", "--minutes", "1",
                    "--seed", "7", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    return out


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def rec_messages(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class WS:
    """Small aiohttp WebSocket helper collecting JSON frames."""

    def __init__(self, session, url):
        self.session, self.url = session, url
        self.msgs: list[dict] = []
        self.closed = asyncio.Event()

    async def __aenter__(self):
        self.ws = await self.session.ws_connect(self.url)
        self.task = asyncio.create_task(self._reader())
        return self

    async def _reader(self):
        async for m in self.ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                self.msgs.append(json.loads(m.data))
        self.closed.set()

    async def __aexit__(self, *exc):
        await self.ws.close()
        self.task.cancel()

    async def send(self, obj):
        await self.ws.send_str(json.dumps(obj))

    async def wait_for(self, pred, timeout=5.0, start=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.msgs[start:]:
                if pred(m):
                    return m
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out; last msgs: {self.msgs[-5:]}")

    async def auth(self, key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, expires=None):
        expires = expires or int(time.time() * 1000) + 10_000
        await self.send({"op": "auth", "args": [key, expires, ws_signature(secret, expires)]})
        return await self.wait_for(lambda m: m.get("op") == "auth")


async def rest(session, base, method, path, params=None, body=None, key=DEFAULT_API_KEY,
               secret=DEFAULT_API_SECRET, ts=None, recv_window=5000, signed=True):
    if method == "GET":
        qs = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        payload, url, data = qs, f"{base}{path}" + (f"?{qs}" if qs else ""), None
    else:
        data = json.dumps(body or {})
        payload, url = data, f"{base}{path}"
    headers = rest_headers(key, secret, payload, recv_window, ts) if signed else {}
    headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None), dict(r.headers)


async def started(recording, **kw):
    kw.setdefault("paused", True)
    kw.setdefault("speed", 0)
    fake = FakeBybit(recording=recording, symbol=SYM, **kw)
    urls = await fake.start()
    if kw["paused"]:
        await fake.step(1)  # the initial snapshot
    return fake, urls


async def trade_op(ws, op, args, req_id):
    start = len(ws.msgs)
    await ws.send({"reqId": req_id, "header": {"X-BAPI-TIMESTAMP": str(int(time.time() * 1000))}, "op": op, "args": args})
    return await ws.wait_for(lambda m: m.get("reqId") == req_id, start=start)


def order_args(side, price, qty, tif="GTC", link="", order_type="Limit"):
    return {"category": "linear", "symbol": SYM, "side": side, "orderType": order_type, "qty": qty,
            "price": price, "timeInForce": tif, "orderLinkId": link}


# ============================================================================ auth
def test_rest_auth_accepted_and_rejected(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                st, body, hdr = await rest(s, urls["http"], "GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"})
                assert st == 200 and body["retCode"] == 0
                assert body["result"]["list"][0]["coin"][0]["walletBalance"] == "100000"
                assert "X-Bapi-Limit-Status" in hdr
                _, body, _ = await rest(s, urls["http"], "GET", "/v5/account/wallet-balance",
                                        {"accountType": "UNIFIED"}, secret="wrong-secret")
                assert body["retCode"] == 10004
                old = int(time.time() * 1000) - 20_000
                _, body, _ = await rest(s, urls["http"], "GET", "/v5/account/fee-rate",
                                        {"category": "linear", "symbol": SYM}, ts=old)
                assert body["retCode"] == 10002
                _, body, _ = await rest(s, urls["http"], "GET", "/v5/account/fee-rate", {"category": "linear"},
                                        key="other-key")
                assert body["retCode"] == 10003
                _, body, _ = await rest(s, urls["http"], "POST", "/v5/order/cancel-all", body={"category": "linear",
                                        "symbol": SYM}, secret="nope")
                assert body["retCode"] == 10004
                _, body, _ = await rest(s, urls["http"], "GET", "/v5/account/fee-rate", {"category": "linear"})
                assert body["result"]["list"][0]["makerFeeRate"] == "0.0002"
        finally:
            await fake.stop()

    run(go())


def test_ws_auth_private_and_trade(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_private"]) as p:
                    ack = await p.auth()
                    assert ack["success"] is True and "conn_id" in ack
                async with WS(s, urls["ws_private"]) as p:
                    ack = await p.auth(secret="bad")
                    assert ack["success"] is False
                async with WS(s, urls["ws_private"]) as p:
                    ack = await p.auth(expires=int(time.time() * 1000) - 1000)
                    assert ack["success"] is False
                async with WS(s, urls["ws_trade"]) as t:
                    r = await trade_op(t, "order.create", [order_args("Buy", "60000.00", "0.001")], "pre-auth")
                    assert r["retCode"] != 0
                    ack = await t.auth()
                    assert ack["retCode"] == 0 and "connId" in ack
                async with WS(s, urls["ws_trade"]) as t:
                    ack = await t.auth(secret="bad")
                    assert ack["retCode"] == 10004
        finally:
            await fake.stop()

    run(go())


# ============================================================================ public stream
def test_public_stream_replays_snapshot_deltas_trades_and_tickers(recording):
    n_steps = 300

    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_public"]) as pub:
                    await pub.send({"op": "subscribe", "req_id": "1",
                                    "args": [f"orderbook.50.{SYM}", f"publicTrade.{SYM}", f"tickers.{SYM}"]})
                    await pub.wait_for(lambda m: m.get("op") == "subscribe" and m["success"])
                    await pub.wait_for(lambda m: m.get("topic", "").startswith("orderbook") and m["type"] == "snapshot")
                    await fake.step(n_steps)
                    await asyncio.sleep(0.2)
                    return list(pub.msgs)
        finally:
            await fake.stop()

    msgs = run(go())
    rec = [m for m in rec_messages(recording) if "topic" in m][: 1 + n_steps]
    ref = Book()
    rec_trades = []
    for m in rec:
        if m["topic"].startswith("orderbook"):
            ref.apply(m["type"], m["data"])
        else:
            rec_trades += [(t["S"], t["p"], t["v"]) for t in m["data"]]

    book = Book()
    last_u = None
    got_trades = []
    n_book = n_ticker = 0
    book_msgs = [m for m in msgs if m.get("topic", "").startswith("orderbook")]
    assert book_msgs[0]["type"] == "snapshot" and all(m["type"] == "delta" for m in book_msgs[1:])
    for m in msgs:
        topic = m.get("topic", "")
        if topic.startswith("orderbook"):
            n_book += 1
            book.apply(m["type"], m["data"])
            # every book message leads with the current best levels (the adapter's quote source)
            assert (Decimal(m["data"]["b"][0][0]), Decimal(m["data"]["b"][0][1])) == book.best_bid()
            assert (Decimal(m["data"]["a"][0][0]), Decimal(m["data"]["a"][0][1])) == book.best_ask()
            if last_u is not None:
                assert m["data"]["u"] == last_u + 1
            last_u = m["data"]["u"]
        elif topic.startswith("publicTrade"):
            got_trades += [(t["S"], t["p"], t["v"]) for t in m["data"]]
        elif topic.startswith("tickers"):
            n_ticker += 1
            d = m["data"]
            bb, ba = book.best_bid(), book.best_ask()
            assert (Decimal(d["bid1Price"]), Decimal(d["bid1Size"])) == bb
            assert (Decimal(d["ask1Price"]), Decimal(d["ask1Size"])) == ba
    assert n_book > 100 and n_ticker > 10
    assert got_trades == rec_trades and len(got_trades) > 5
    assert book.top(50) == ref.top(50)


def test_orderbook_depth1_and_late_subscriber_snapshot(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            await fake.step(20)
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_public"]) as pub:
                    await pub.send({"op": "subscribe", "args": [f"orderbook.1.{SYM}"]})
                    snap = await pub.wait_for(lambda m: m.get("topic") == f"orderbook.1.{SYM}")
                    await fake.step(20)
                    await asyncio.sleep(0.1)
                    l1 = [m for m in pub.msgs if m.get("topic") == f"orderbook.1.{SYM}"]
                    assert all(m["type"] == "snapshot" and len(m["data"]["b"]) == 1 for m in l1)
                    bb = fake.engine.book.best_bid()
                    assert Decimal(l1[-1]["data"]["b"][0][0]) == bb[0]
                    assert snap["data"]["a"][0][0] == l1[0]["data"]["a"][0][0]
        finally:
            await fake.stop()

    run(go())


# ============================================================================ orders
def test_post_only_crossing_rejected(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            ask = fake.engine.book.best_ask()[0]
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_private"]) as p, WS(s, urls["ws_trade"]) as t:
                    await p.auth()
                    await p.send({"op": "subscribe", "args": ["order", "execution", "position", "wallet"]})
                    await t.auth()
                    r = await trade_op(t, "order.create", [order_args("Buy", f"{ask:.2f}", "0.010", "PostOnly", "po-1")], "c1")
                    assert r["retCode"] == 0 and r["data"]["orderLinkId"] == "po-1"
                    m = await p.wait_for(lambda m: m.get("topic") == "order")
                    o = m["data"][0]
                    assert o["orderStatus"] == "Cancelled"
                    assert o["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
                    assert o["timeInForce"] == "PostOnly"
            assert fake.state()["open_orders"] == []
            assert fake.state()["executions"] == []
        finally:
            await fake.stop()

    run(go())


def test_resting_order_filled_after_queue_with_private_updates(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            bid, bid_size = fake.engine.book.best_bid()
            px = f"{bid:.2f}"
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_private"]) as p, WS(s, urls["ws_trade"]) as t:
                    await p.auth()
                    await p.send({"op": "subscribe", "args": ["order", "execution", "position", "wallet"]})
                    await p.wait_for(lambda m: m.get("op") == "subscribe")
                    await t.auth()
                    r = await trade_op(t, "order.create", [order_args("Buy", px, "0.010", "PostOnly", "mm-1")], "c1")
                    assert r["retCode"] == 0
                    oid = r["data"]["orderId"]
                    new = await p.wait_for(lambda m: m.get("topic") == "order")
                    assert new["data"][0]["orderStatus"] == "New"
                    assert Decimal(fake.state()["queue_ahead"][oid]) == bid_size

                    def trade(size):
                        return {"topic": f"publicTrade.{SYM}", "type": "snapshot", "ts": 1,
                                "data": [{"T": 1, "s": SYM, "S": "Sell", "v": size, "p": px, "L": "MinusTick",
                                          "i": "x", "BT": False}]}

                    await fake.feed(trade(f"{bid_size:.3f}"))  # eats exactly the queue ahead of us
                    await asyncio.sleep(0.05)
                    assert fake.state()["executions"] == []
                    await fake.feed(trade("0.004"))
                    ex = await p.wait_for(lambda m: m.get("topic") == "execution")
                    e = ex["data"][0]
                    assert e["execQty"] == "0.004" and e["isMaker"] is True and e["orderId"] == oid
                    fee = Decimal("0.004") * bid * Decimal("0.0002")
                    assert Decimal(e["execFee"]) == fee and e["feeRate"] == "0.0002"
                    pos = await p.wait_for(lambda m: m.get("topic") == "position")
                    assert pos["data"][0]["size"] == "0.004" and pos["data"][0]["side"] == "Buy"
                    w = await p.wait_for(lambda m: m.get("topic") == "wallet")
                    assert Decimal(w["data"][0]["coin"][0]["walletBalance"]) == Decimal("100000") - fee
                    po = [m["data"][0] for m in p.msgs if m.get("topic") == "order"]
                    assert po[-1]["orderStatus"] == "PartiallyFilled" and po[-1]["leavesQty"] == "0.006"
                    n = len(p.msgs)
                    await fake.feed(trade("1.000"))
                    filled = await p.wait_for(lambda m: m.get("topic") == "order" and m["data"][0]["orderStatus"] == "Filled", start=n)
                    assert filled["data"][0]["cumExecQty"] == "0.010"
            st = fake.state()
            assert st["position"]["size"] == "0.010" and st["open_orders"] == []
            assert len(st["executions"]) == 2
        finally:
            await fake.stop()

    run(go())


def test_trade_through_price_fills_up_to_the_print_and_taker_order(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            eng = fake.engine
            bid = eng.book.best_bid()[0]
            ask, ask_size = eng.book.best_ask()
            async with aiohttp.ClientSession() as s:
                base = urls["http"]
                _, r, _ = await rest(s, base, "POST", "/v5/order/create", body=order_args("Buy", f"{bid:.2f}", "0.005"))
                assert r["retCode"] == 0
                # a print through our bid fills at most its own size (docs/fake_bybit.md): 2 lots, then 3
                for k, v in enumerate(("0.002", "0.004")):
                    await fake.feed({"topic": f"publicTrade.{SYM}", "type": "snapshot", "ts": 1 + k, "data": [
                        {"T": 1 + k, "s": SYM, "S": "Sell", "v": v, "p": f"{bid - Decimal('0.5'):.2f}", "i": f"y{k}",
                         "BT": False}]})
                st = fake.state()
                assert [e["execQty"] for e in st["executions"]] == ["0.002", "0.003"], st["executions"]
                assert st["position"]["size"] == "0.005" and st["executions"][0]["isMaker"] is True
                # crossing limit (not post-only) takes liquidity as taker at the ask
                _, r, _ = await rest(s, base, "POST", "/v5/order/create", body=order_args("Sell", f"{bid - 10:.2f}", "0.005"))
                assert r["retCode"] == 0
                st = fake.state()
                e = st["executions"][-1]
                assert e["isMaker"] is False and e["feeRate"] == "0.00055" and e["side"] == "Sell"
                assert st["position"]["size"] == "0.000"
                # market buy walks the asks
                _, r, _ = await rest(s, base, "POST", "/v5/order/create",
                                     body={**order_args("Buy", "", "0.002", "IOC"), "orderType": "Market"})
                assert r["retCode"] == 0
                assert fake.state()["executions"][-1]["execPrice"] == f"{ask:.2f}"
        finally:
            await fake.stop()

    run(go())


def test_amend_cancel_cancel_all_and_queries(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            bid = fake.engine.book.best_bid()[0]
            base = urls["http"]
            async with aiohttp.ClientSession() as s:
                _, r, _ = await rest(s, base, "POST", "/v5/order/create", body=order_args("Buy", f"{bid - 50:.2f}", "0.010", link="a-1"))
                oid = r["result"]["orderId"]
                _, r, _ = await rest(s, base, "POST", "/v5/order/amend", body={"category": "linear", "symbol": SYM,
                                     "orderLinkId": "a-1", "price": f"{bid - 40:.2f}", "qty": "0.020"})
                assert r["retCode"] == 0 and r["result"]["orderId"] == oid
                _, r, _ = await rest(s, base, "GET", "/v5/order/realtime", {"category": "linear", "symbol": SYM})
                o = r["result"]["list"][0]
                assert o["price"] == f"{bid - 40:.2f}" and o["qty"] == "0.020" and o["orderStatus"] == "New"
                _, r, _ = await rest(s, base, "POST", "/v5/order/cancel", body={"category": "linear", "symbol": SYM, "orderId": oid})
                assert r["retCode"] == 0
                _, r, _ = await rest(s, base, "POST", "/v5/order/cancel", body={"category": "linear", "symbol": SYM, "orderId": oid})
                assert r["retCode"] == 110001
                for i in range(3):
                    await rest(s, base, "POST", "/v5/order/create", body=order_args("Sell", f"{bid + 100 + i:.2f}", "0.001"))
                _, r, _ = await rest(s, base, "POST", "/v5/order/cancel-all", body={"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0 and len(r["result"]["list"]) == 3
                assert fake.state()["open_orders"] == []
                _, r, _ = await rest(s, base, "GET", "/v5/order/history", {"category": "linear", "symbol": SYM})
                assert {o["orderStatus"] for o in r["result"]["list"]} == {"Cancelled"}
                # trade-WS amend + cancel + batch
                async with WS(s, urls["ws_trade"]) as t:
                    await t.auth()
                    r = await trade_op(t, "order.create-batch", [{"category": "linear", "request": [
                        order_args("Buy", f"{bid - 30:.2f}", "0.001", link="b1"),
                        order_args("Buy", f"{bid - 31:.2f}", "0.001", link="b2")]}], "b")
                    assert [x["code"] for x in r["retExtInfo"]["list"]] == [0, 0]
                    r = await trade_op(t, "order.amend", [{"category": "linear", "symbol": SYM, "orderLinkId": "b1",
                                                           "price": f"{bid - 29:.2f}"}], "am")
                    assert r["retCode"] == 0
                    r = await trade_op(t, "order.cancel-batch", [{"category": "linear", "request": [
                        {"symbol": SYM, "orderLinkId": "b1"}, {"symbol": SYM, "orderLinkId": "b2"}]}], "cb")
                    assert [x["code"] for x in r["retExtInfo"]["list"]] == [0, 0]
                    r = await trade_op(t, "order.cancel", [{"category": "linear", "symbol": SYM, "orderLinkId": "zz"}], "cx")
                    assert r["retCode"] == 110001
            assert fake.state()["open_orders"] == []
        finally:
            await fake.stop()

    run(go())


# ============================================================================ faults
def test_fault_rate_limit_and_unknown_endpoint(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            base = urls["http"]
            async with aiohttp.ClientSession() as s:
                fake.inject("rate_limit")
                st, r, hdr = await rest(s, base, "GET", "/v5/position/list", {"category": "linear", "symbol": SYM})
                assert st == 200 and r["retCode"] == 10006
                assert hdr["X-Bapi-Limit-Status"] == "0" and "X-Bapi-Limit-Reset-Timestamp" in hdr and "X-Bapi-Limit" in hdr
                async with s.post(f"{urls['control']}/faults", json={"kind": "rate_limit", "http_status": 429,
                                                                      "path": "/v5/order"}) as resp:
                    assert (await resp.json())["ok"]
                st, r, _ = await rest(s, base, "GET", "/v5/position/list", {"category": "linear", "symbol": SYM})
                assert r["retCode"] == 0  # path filter: not limited
                st, r, _ = await rest(s, base, "POST", "/v5/order/cancel-all", body={"category": "linear", "symbol": SYM})
                assert st == 429 and r["retCode"] == 10006
                fake.inject("rate_limit", http_status=403)
                st, r, _ = await rest(s, base, "GET", "/v5/order/realtime", {"category": "linear"})
                assert st == 403
                async with s.get(f"{base}/v5/spot-lever-token/info") as resp:
                    assert resp.status == 404 and (await resp.json())["retCode"] == 10404
                st_ = fake.state()
                assert st_["unknown_requests"] == {"GET /v5/spot-lever-token/info": 1}
                assert len(st_["faults"]["fired"]) == 3
                async with WS(s, urls["ws_trade"]) as t:
                    await t.auth()
                    fake.inject("rate_limit", ws=True)
                    r = await trade_op(t, "order.create", [order_args("Buy", "60000.00", "0.001")], "rl")
                    assert r["retCode"] == 10006 and r["header"]["X-Bapi-Limit-Status"] == "0"
        finally:
            await fake.stop()

    run(go())


def test_fault_drop_ws_each_stream(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                for stream in ("public", "private", "trade"):
                    async with WS(s, urls[f"ws_{stream}"]) as w:
                        await w.send({"op": "ping", "req_id": "p"})
                        await w.wait_for(lambda m: "pong" in json.dumps(m))
                        res = fake.inject("drop_ws", stream=stream)
                        assert res["closed"] == 1
                        await asyncio.wait_for(w.closed.wait(), 3)
        finally:
            await fake.stop()

    run(go())


def test_fault_order_faults_and_acks(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            bid = fake.engine.book.best_bid()[0]
            far = f"{bid - 100:.2f}"
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_private"]) as p, WS(s, urls["ws_trade"]) as t:
                    await p.auth()
                    await p.send({"op": "subscribe", "args": ["order"]})
                    await t.auth()
                    fake.inject("post_only_reject")
                    r = await trade_op(t, "order.create", [order_args("Buy", far, "0.001", "PostOnly", "f1")], "1")
                    assert r["retCode"] == 0
                    m = await p.wait_for(lambda m: m.get("topic") == "order" and m["data"][0]["orderLinkId"] == "f1")
                    assert m["data"][0]["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
                    fake.inject("insufficient_balance")
                    r = await trade_op(t, "order.create", [order_args("Buy", far, "0.001", "GTC", "f2")], "2")
                    assert r["retCode"] == 110007
                    r = await trade_op(t, "order.create", [order_args("Buy", far, "0.001", "GTC", "f3")], "3")
                    assert r["retCode"] == 0
                    fake.inject("cancel_unknown")
                    r = await trade_op(t, "order.cancel", [{"category": "linear", "symbol": SYM, "orderLinkId": "f3"}], "4")
                    assert r["retCode"] == 110001
                    assert len(fake.state()["open_orders"]) == 1
                    # real insufficient balance (no fault)
                    r = await trade_op(t, "order.create", [order_args("Buy", far, "100.000", "GTC", "big")], "5")
                    assert r["retCode"] == 110007
                    # delayed ack
                    fake.inject("delay_ack", seconds=0.5)
                    t0 = time.monotonic()
                    r = await trade_op(t, "order.cancel", [{"category": "linear", "symbol": SYM, "orderLinkId": "f3"}], "6")
                    assert r["retCode"] == 0 and time.monotonic() - t0 >= 0.45
                    # lost ack: no answer, but the order exists and the private stream reports it
                    fake.inject("lose_ack")
                    await t.send({"reqId": "7", "op": "order.create", "args": [order_args("Buy", far, "0.001", "GTC", "lost")]})
                    await p.wait_for(lambda m: m.get("topic") == "order" and m["data"][0]["orderLinkId"] == "lost")
                    await asyncio.sleep(0.2)
                    assert not any(m.get("reqId") == "7" for m in t.msgs)
                    assert [o["orderLinkId"] for o in fake.state()["open_orders"]] == ["lost"]
                    # dropped private message
                    fake.inject("drop_private", topic="order")
                    n = len(p.msgs)
                    r = await trade_op(t, "order.cancel", [{"category": "linear", "symbol": SYM, "orderLinkId": "lost"}], "8")
                    assert r["retCode"] == 0
                    await asyncio.sleep(0.2)
                    assert not any(m.get("topic") == "order" for m in p.msgs[n:])
                # REST delay/lose
                fake.inject("delay_ack", seconds=0.3)
                t0 = time.monotonic()
                _, r, _ = await rest(s, urls["http"], "POST", "/v5/order/create", body=order_args("Buy", far, "0.001"))
                assert r["retCode"] == 0 and time.monotonic() - t0 >= 0.28
                fake.inject("lose_ack", seconds=0.2)
                st, r, _ = await rest(s, urls["http"], "POST", "/v5/order/create", body=order_args("Buy", far, "0.001", link="L"))
                assert st == 504 and r is None
                assert "L" in [o["orderLinkId"] for o in fake.state()["open_orders"]]
            kinds = [f["kind"] for f in fake.state()["faults"]["fired"]]
            for k in ("post_only_reject", "insufficient_balance", "cancel_unknown", "delay_ack", "lose_ack", "drop_private"):
                assert k in kinds
        finally:
            await fake.stop()

    run(go())


def test_fault_stale_and_gapped_book(recording):
    async def go():
        fake, urls = await started(recording)
        try:
            async with aiohttp.ClientSession() as s:
                async with WS(s, urls["ws_public"]) as pub:
                    await pub.send({"op": "subscribe", "args": [f"orderbook.50.{SYM}", f"tickers.{SYM}"]})
                    await pub.wait_for(lambda m: m.get("type") == "snapshot" and "orderbook" in m.get("topic", ""))
                    fake.inject("stale_book")
                    n = len(pub.msgs)
                    u0 = fake.engine.book.u
                    await fake.step(30)
                    await asyncio.sleep(0.1)
                    assert fake.engine.book.u > u0  # internal replay continued
                    assert not [m for m in pub.msgs[n:] if m.get("topic", "").startswith(("orderbook", "tickers"))]
                    fake.clear_faults("stale_book")
                    await fake.step(5)
                    await pub.wait_for(lambda m: m.get("topic", "").startswith("orderbook"), start=n)
                    await asyncio.sleep(0.2)  # let the remaining frames arrive
                    book_msgs = [m for m in pub.msgs if m.get("topic", "").startswith("orderbook")]
                    # recover: the published book after the pause equals the internal book
                    b = Book()
                    for m in book_msgs:
                        b.apply(m["type"], m["data"])
                    assert b.top(50) == fake.engine.book.top(50)
                    us = [m["data"]["u"] for m in book_msgs]
                    assert all(y == x + 1 for x, y in zip(us, us[1:]))
                    fake.inject("gap_book")
                    n = len(pub.msgs)
                    await fake.step(10)
                    await asyncio.sleep(0.1)
                    us2 = [m["data"]["u"] for m in pub.msgs[n:] if m.get("topic", "").startswith("orderbook")]
                    assert us2[0] == us[-1] + 2 and all(y == x + 1 for x, y in zip(us2, us2[1:]))
        finally:
            await fake.stop()

    run(go())


def test_control_http_state_and_replay_speed(recording):
    msgs = rec_messages(recording)
    rate = len(msgs) / ((msgs[-1]["local_ts_ns"] - msgs[0]["local_ts_ns"]) / 1e9)  # messages per data second

    async def go():
        fake = FakeBybit(recording=recording, symbol=SYM, speed=50.0)
        urls = await fake.start()
        try:
            await asyncio.sleep(1.0)
            n = fake.replayed
            # 50x real time for 1 s ~ 50 s of recording (the 60 s recording's own message rate)
            assert 0.1 * 50 * rate < n < 2 * 50 * rate
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{urls['control']}/state") as r:
                    st = await r.json()
                assert st["book"]["best_bid"] is not None and st["symbol"] == SYM
                async with s.delete(f"{urls['control']}/faults") as r:
                    assert (await r.json())["ok"]
        finally:
            await fake.stop()

    run(go())


def test_cli_prints_urls_and_stops_on_sigterm(recording):
    proc = subprocess.Popen([sys.executable, "-m", "tools.fake_bybit", "--recording", str(recording), "--port", "0",
                             "--speed", "10"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        urls = json.loads(line)
        assert set(urls) == {"http", "ws_public", "ws_private", "ws_trade", "control"}
        assert urls["http"].startswith("http://127.0.0.1:") and urls["ws_public"].endswith("/v5/public/linear")

        async def probe():
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{urls['http']}/v5/market/time") as r:
                    return (await r.json())["retCode"]

        assert run(probe()) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
