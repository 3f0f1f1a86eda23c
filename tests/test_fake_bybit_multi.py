"""tools/fake_bybit serving several symbols on one account (issue 15, live portfolio step 1):
each symbol has its own book (replayed from its own recording), orders and position; REST order
lists, positions and executions carry the symbol; the private streams send each order/execution/
position under its own symbol; the wallet is one (moved by every symbol's fees)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")

from tests.test_fake_bybit import WS, rest, trade_op  # noqa: E402
from tools.fake_bybit import FakeBybit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYMS = ("BTCUSDT", "XRPUSDT")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("fake_bybit_multi")
    out = []
    for sym, seed in zip(SYMS, (7, 11)):
        p = d / f"{sym}.jsonl"
        subprocess.run([sys.executable, "-m", "tools.gen_synthetic", "--symbol", sym, "--depth", "200",
                        "--minutes", "1", "--seed", str(seed), "--out", str(p)],
                       cwd=ROOT, check=True, capture_output=True)
        out.append(p)
    return out


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def args_of(sym, side, price, qty, link, order_type="Limit", tif="GTC"):
    return {"category": "linear", "symbol": sym, "side": side, "orderType": order_type, "qty": qty,
            "price": price, "timeInForce": tif, "orderLinkId": link}


def test_two_symbols_books_orders_positions_and_private_streams(recordings):
    async def go():
        fake = FakeBybit(recording=recordings, symbols=list(SYMS), speed=0, paused=True)
        urls = await fake.start()
        try:
            await fake.step(200)  # both recordings' snapshots and some deltas, merged in time order
            books = fake.state()["books"]
            assert all(books[s]["best_bid"] and books[s]["best_ask"] for s in SYMS), books
            assert Decimal(books["BTCUSDT"]["best_bid"]) > 1000 > Decimal(books["XRPUSDT"]["best_bid"])
            async with aiohttp.ClientSession() as s:
                # public: each symbol's book snapshot under its own topic
                async with WS(s, urls["ws_public"]) as pub:
                    await pub.send({"op": "subscribe", "req_id": "1",
                                    "args": [f"orderbook.50.{sym}" for sym in SYMS] + [f"tickers.{sym}" for sym in SYMS]})
                    for sym in SYMS:
                        m = await pub.wait_for(lambda m, sym=sym: m.get("topic") == f"orderbook.50.{sym}")
                        assert m["type"] == "snapshot" and m["data"]["s"] == sym
                        t = await pub.wait_for(lambda m, sym=sym: m.get("topic") == f"tickers.{sym}")
                        assert t["data"]["symbol"] == sym
                    _, ob, _ = await rest(s, urls["http"], "GET", "/v5/market/orderbook",
                                          {"category": "linear", "symbol": "XRPUSDT", "limit": 1}, signed=False)
                    assert ob["result"]["s"] == "XRPUSDT" and ob["result"]["b"][0][0] == books["XRPUSDT"]["best_bid"]
                    _, ins, _ = await rest(s, urls["http"], "GET", "/v5/market/instruments-info",
                                           {"category": "linear"}, signed=False)
                    assert sorted(r["symbol"] for r in ins["result"]["list"]) == sorted(SYMS)
                async with WS(s, urls["ws_private"]) as priv, WS(s, urls["ws_trade"]) as tr:
                    await priv.auth()
                    await priv.send({"op": "subscribe", "args": ["order", "execution", "position", "wallet"]})
                    await priv.wait_for(lambda m: m.get("op") == "subscribe")
                    await tr.auth()
                    # a resting order on each symbol, and a market buy on XRP only
                    bid_btc = str(Decimal(books["BTCUSDT"]["best_bid"]) - 50)
                    bid_xrp = str(Decimal(books["XRPUSDT"]["best_bid"]) - Decimal("0.01"))
                    for sym, px, link in (("BTCUSDT", bid_btc, "b1"), ("XRPUSDT", bid_xrp, "x1")):
                        r = await trade_op(tr, "order.create", [args_of(sym, "Buy", px, "0.01" if sym == "BTCUSDT"
                                                                        else "10", link)], link)
                        assert r["retCode"] == 0, r
                    r = await trade_op(tr, "order.create", [args_of("XRPUSDT", "Buy", "", "10", "x2",
                                                                    order_type="Market", tif="IOC")], "x2")
                    assert r["retCode"] == 0, r
                    pos = await priv.wait_for(lambda m: m.get("topic") == "position")
                    assert [(p["symbol"], p["size"]) for p in pos["data"]] == [("XRPUSDT", "10")]
                    ex = await priv.wait_for(lambda m: m.get("topic") == "execution")
                    assert ex["data"][0]["symbol"] == "XRPUSDT"
                    # REST: orders, positions, executions per symbol
                    for sym, link in (("BTCUSDT", "b1"), ("XRPUSDT", "x1")):
                        _, body, _ = await rest(s, urls["http"], "GET", "/v5/order/realtime",
                                                {"category": "linear", "symbol": sym})
                        assert [(o["symbol"], o["orderLinkId"]) for o in body["result"]["list"]] == [(sym, link)]
                    _, body, _ = await rest(s, urls["http"], "GET", "/v5/order/realtime",
                                            {"category": "linear", "settleCoin": "USDT"})
                    assert sorted(o["orderLinkId"] for o in body["result"]["list"]) == ["b1", "x1"]
                    _, body, _ = await rest(s, urls["http"], "GET", "/v5/position/list",
                                            {"category": "linear", "settleCoin": "USDT"})
                    assert {p["symbol"]: p["size"] for p in body["result"]["list"]} == \
                        {"BTCUSDT": "0.000", "XRPUSDT": "10"}
                    _, body, _ = await rest(s, urls["http"], "GET", "/v5/execution/list",
                                            {"category": "linear", "symbol": "BTCUSDT"})
                    assert body["result"]["list"] == []
                    # one wallet: the XRP taker fee moved it
                    _, body, _ = await rest(s, urls["http"], "GET", "/v5/account/wallet-balance",
                                            {"accountType": "UNIFIED"})
                    assert Decimal(body["result"]["list"][0]["totalWalletBalance"]) < Decimal("100000")
                    # cancel on a symbol cancels only that symbol's order; a wrong symbol is refused
                    r = await trade_op(tr, "order.cancel", [{"category": "linear", "symbol": "BTCUSDT",
                                                             "orderLinkId": "x1"}], "c0")
                    assert r["retCode"] == 110001
                    _, body, _ = await rest(s, urls["http"], "POST", "/v5/order/cancel-all",
                                            body={"category": "linear", "symbol": "XRPUSDT"})
                    assert [o["orderLinkId"] for o in body["result"]["list"]] == ["x1"]
                    st = fake.state()
                    assert [o["orderLinkId"] for o in st["open_orders"]] == ["b1"]
                    assert st["positions"]["XRPUSDT"]["size"] == "10" and st["position"]["symbol"] == "BTCUSDT"
                    assert fake.stats()["positions_signed"] == {"BTCUSDT": "0", "XRPUSDT": "10"}
        finally:
            await fake.stop()

    run(go())


def test_unknown_symbol_refused_and_single_symbol_unchanged(recordings):
    async def go():
        fake = FakeBybit(recording=recordings[0], symbol="BTCUSDT", speed=0, paused=True)
        urls = await fake.start()
        try:
            await fake.step(1)
            async with aiohttp.ClientSession() as s:
                _, body, _ = await rest(s, urls["http"], "POST", "/v5/order/create",
                                        body=args_of("XRPUSDT", "Buy", "1", "10", "z"))
                assert body["retCode"] == 10001 and "symbol invalid" in body["retMsg"]
                _, body, _ = await rest(s, urls["http"], "GET", "/v5/position/list", {"category": "linear"})
                assert [p["symbol"] for p in body["result"]["list"]] == ["BTCUSDT"]
        finally:
            await fake.stop()

    run(go())
    with pytest.raises(ValueError, match="repeated"):
        FakeBybit(symbols=["BTCUSDT", "BTCUSDT"])
