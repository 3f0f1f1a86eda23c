"""Throw-away probe: run a Nautilus 1.231 TradingNode (Bybit data + exec clients) against fake_bybit.

    python -m tools.fake_bybit.nautilus_probe RECORDING.jsonl

Runs ~25 s, then prints the REST endpoints, WS ops and orders the fake saw. Not a test.
"""
if __name__ != "__main__":
    raise ImportError("tools.fake_bybit.nautilus_probe is a script; run it with python -m")
import asyncio, json, sys, threading, time
from tools.fake_bybit import FakeBybit
from nautilus_trader.adapters.bybit import BYBIT, BybitDataClientConfig, BybitExecClientConfig, BybitLiveDataClientFactory, BybitLiveExecClientFactory
from nautilus_trader.core.nautilus_pyo3 import BybitProductType
from nautilus_trader.config import TradingNodeConfig, LoggingConfig, InstrumentProviderConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.trading.strategy import Strategy, StrategyConfig
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.enums import BookType

class S(Strategy):
    def on_start(self):
        self.iid = InstrumentId.from_str("BTCUSDT-LINEAR.BYBIT")
        self.subscribe_quote_ticks(self.iid)
        self.subscribe_trade_ticks(self.iid)
        self.subscribe_order_book_deltas(self.iid, book_type=BookType.L2_MBP, depth=50)
        self.n = 0; self.sent = False
    def on_quote_tick(self, q):
        self.n += 1
        if q.bid_price >= q.ask_price or q.bid_size == 0 or q.ask_size == 0: self.log.warning(f"BADQ {q}")
        if not self.sent and self.n > 3:
            self.sent = True
            inst = self.cache.instrument(self.iid)
            o = self.order_factory.limit(self.iid, OrderSide.BUY, inst.make_qty(0.01), inst.make_price(float(q.bid_price)), post_only=True)
            self.submit_order(o)
            o2 = self.order_factory.limit(self.iid, OrderSide.BUY, inst.make_qty(0.01), inst.make_price(float(q.ask_price) + 1), post_only=True)
            self.submit_order(o2)
            self.clock.set_time_alert_ns("amend", self.clock.timestamp_ns() + 2_000_000_000, lambda e: self.modify_order(o, price=inst.make_price(float(o.price) - 1)))
            self.clock.set_time_alert_ns("cxl", self.clock.timestamp_ns() + 15_000_000_000, lambda e: self.cancel_all_orders(self.iid))
    def on_order_event(self, e): self.log.warning(f"ORDER EVENT {e}")
    def on_position_event(self, e): self.log.warning(f"POS EVENT {e}")

async def main():
    fake = FakeBybit(recording=sys.argv[1], speed=1.0)
    urls = await fake.start()
    print(urls, flush=True)
    return fake, urls

loop = asyncio.new_event_loop()
fake, urls = loop.run_until_complete(main())
t = threading.Thread(target=loop.run_forever, daemon=True); t.start()

ws_pub = urls["http"]
import types, nautilus_trader.adapters.bybit.data as bdata
from nautilus_trader.core import nautilus_pyo3 as _p3
class _WS:
    @staticmethod
    def new_public(**kw):
        kw["url"] = urls["ws_public"]
        return _p3.BybitWebSocketClient.new_public(**kw)
class _Shim:
    def __getattr__(self, n):
        return _WS if n == "BybitWebSocketClient" else getattr(_p3, n)
bdata.nautilus_pyo3 = _Shim()
cfg = TradingNodeConfig(
    trader_id="PROBE-001",
    logging=LoggingConfig(log_level="WARNING"),
    data_clients={BYBIT: BybitDataClientConfig(api_key="fake-key", api_secret="fake-secret-0123456789",
        product_types=(BybitProductType.LINEAR,), base_url_http=ws_pub,
        instrument_provider=InstrumentProviderConfig(load_ids=frozenset(["BTCUSDT-LINEAR.BYBIT"])))},
    exec_clients={BYBIT: BybitExecClientConfig(api_key="fake-key", api_secret="fake-secret-0123456789",
        product_types=(BybitProductType.LINEAR,), base_url_http=urls["http"], base_url_ws_private=urls["ws_private"],
        base_url_ws_trade=urls["ws_trade"],
        instrument_provider=InstrumentProviderConfig(load_ids=frozenset(["BTCUSDT-LINEAR.BYBIT"])))},
    timeout_connection=15.0,
)
node = TradingNode(config=cfg)
node.trader.add_strategy(S(StrategyConfig()))
node.add_data_client_factory(BYBIT, BybitLiveDataClientFactory)
node.add_exec_client_factory(BYBIT, BybitLiveExecClientFactory)
node.build()
def stopper():
    time.sleep(25)
    node.stop()
threading.Thread(target=stopper, daemon=True).start()
try:
    node.run()
except Exception as e:
    print("NODE ERR", e)
finally:
    st = fake.state()
    print("UNKNOWN", st["unknown_requests"])
    seen = {}
    for r in st["request_log"]:
        seen[(r["method"], r["path"], r.get("retCode"))] = seen.get((r["method"], r["path"], r.get("retCode")), 0) + 1
    print("REST", json.dumps({f"{k[0]} {k[1]} ret={k[2]}": v for k, v in seen.items()}, indent=0))
    ops = {}
    for w in st["ws_log"]:
        m = w["msg"]; key = (w["stream"], m.get("op"), tuple(m.get("args", [])) if m.get("op") in ("subscribe","unsubscribe") else None)
        ops[str(key)] = ops.get(str(key), 0) + 1
    print("WS", json.dumps(ops, indent=0))
    print("ORDERS", [(o["orderLinkId"][:12], o["orderStatus"], o["price"], o["rejectReason"]) for o in st["orders"]])
    node.dispose()
