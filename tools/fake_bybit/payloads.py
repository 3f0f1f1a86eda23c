"""Bybit v5 JSON bodies built from the templates in ``templates/`` and the engine's state."""

from __future__ import annotations

import copy
import json
import uuid
from decimal import Decimal
from functools import cache
from pathlib import Path

from .matching import ZERO, Engine, Execution, Instrument, Order, now_ms

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _load(name: str) -> dict:
    return json.loads((TEMPLATES / name).read_text())


def template(name: str) -> dict:
    return copy.deepcopy(_load(name))


def fmt(d: Decimal | None, places: int | None = None) -> str:
    if d is None:
        return "0"
    if places is not None:
        d = d.quantize(Decimal(1).scaleb(-places))
    s = format(d.normalize(), "f") if d == d.to_integral() else format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".") if places is None else s
    return s or "0"


def fpx(d: Decimal | None, inst: Instrument) -> str:
    """Price at the instrument's tick precision (as Bybit prints it: "67000.10")."""
    if d is None:
        return "0"
    return format(d.quantize(inst.tick), "f")


def fqty(d: Decimal | None, inst: Instrument) -> str:
    if d is None:
        return "0"
    return format(d.quantize(inst.step), "f")


def ok(result, **extra) -> dict:
    body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms()}
    body.update(extra)
    return body


def err(code: int, msg: str) -> dict:
    return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": now_ms()}


# ------------------------------------------------------------------ instruments / fees
def instrument_rows(symbol: str) -> list[dict]:
    rows = [r for r in template("linear_instruments.json")["result"]["list"] if r["symbol"] == symbol]
    if not rows:
        raise ValueError(f"fake_bybit: no instrument definition for {symbol} in templates/linear_instruments.json")
    for r in rows:
        r["deliveryTime"] = "0"  # perpetual: else the adapter's status poller reports PreClose
        r["status"] = "Trading"
    return rows


def instrument_of(symbol: str) -> Instrument:
    r = instrument_rows(symbol)[0]
    lot = r["lotSizeFilter"]
    return Instrument(symbol=symbol, tick=Decimal(r["priceFilter"]["tickSize"]),
                      step=Decimal(lot["qtyStep"]), min_qty=Decimal(lot["minOrderQty"]),
                      max_qty=Decimal(lot["maxOrderQty"]), min_notional=Decimal(lot.get("minNotionalValue", "0")))


def fee_rate_body(symbol: str, maker: Decimal, taker: Decimal) -> dict:
    body = template("http_get_fee_rate.json")
    body["result"]["list"] = [{"symbol": symbol, "takerFeeRate": fmt(taker), "makerFeeRate": fmt(maker), "baseCoin": ""}]
    body["time"] = now_ms()
    return body


# ------------------------------------------------------------------ orders / executions
def order_row(o: Order, inst: Instrument, category: bool = True) -> dict:
    row = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "side": o.side,
        "orderType": o.order_type,
        "cancelType": o.cancel_type,
        "price": fpx(o.price, inst) if o.price is not None else "0",
        "qty": fqty(o.qty, inst),
        "orderIv": "",
        "timeInForce": o.tif,
        "orderStatus": o.status,
        "orderLinkId": o.link_id,
        "lastPriceOnCreated": o.last_price_on_created,
        "reduceOnly": o.reduce_only,
        "leavesQty": fqty(o.leaves, inst),
        "leavesValue": fmt(o.leaves * (o.price or ZERO)),
        "cumExecQty": fqty(o.cum_qty, inst),
        "cumExecValue": fmt(o.cum_value),
        "avgPrice": fmt(o.avg_price) if o.cum_qty else "",
        "blockTradeId": "",
        "positionIdx": 0,
        "cumExecFee": fmt(o.cum_fee),
        "createdTime": str(o.created_ms),
        "updatedTime": str(o.updated_ms),
        "rejectReason": o.reject_reason,
        "stopOrderType": "",
        "tpslMode": "",
        "triggerPrice": "",
        "takeProfit": "",
        "stopLoss": "",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "triggerDirection": 0,
        "triggerBy": "",
        "closeOnTrigger": False,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "feeCurrency": "",
        "createType": "CreateByUser",
        "isLeverage": "",
    }
    if category:
        row["category"] = "linear"
    return row


def execution_row(e: Execution, mark: Decimal, inst: Instrument) -> dict:
    o = e.order
    return {
        "category": "linear",
        "symbol": o.symbol,
        "closedSize": fqty(e.closed_size, inst),
        "execFee": fmt(e.fee),
        "execId": e.exec_id,
        "execPrice": fpx(e.price, inst),
        "execQty": fqty(e.qty, inst),
        "execType": "Trade",
        "execValue": fmt(e.price * e.qty),
        "feeRate": fmt(e.fee_rate),
        "tradeIv": "",
        "markIv": "",
        "blockTradeId": "",
        "markPrice": fmt(mark),
        "indexPrice": "",
        "underlyingPrice": "",
        "leavesQty": fqty(e.leaves_after, inst),
        "orderId": o.order_id,
        "orderLinkId": o.link_id,
        "orderPrice": fpx(o.price, inst) if o.price is not None else "0",
        "orderQty": fqty(o.qty, inst),
        "orderType": o.order_type,
        "stopOrderType": "UNKNOWN",
        "side": o.side,
        "execTime": str(e.time_ms),
        "isLeverage": "0",
        "isMaker": e.is_maker,
        "seq": e.seq,
        "feeCurrency": "USDT",
    }


# ------------------------------------------------------------------ position / wallet
def position_row(eng: Engine, symbol: str, http: bool) -> dict:
    a = eng.account
    mark = eng.mark_price()
    size = abs(a.pos_size)
    side = "Buy" if a.pos_size > 0 else "Sell" if a.pos_size < 0 else ""
    value = size * a.entry_price
    im = value / a.leverage
    row = {
        "positionIdx": 0,
        "tradeMode": 0,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": symbol,
        "side": side,
        "size": fqty(size, eng.inst),
        ("avgPrice" if http else "entryPrice"): fmt(a.entry_price),
        "sessionAvgPrice": "",
        "leverage": fmt(a.leverage),
        "positionValue": fmt(value),
        "positionBalance": fmt(im),
        "markPrice": fmt(mark),
        "positionIM": fmt(im),
        "positionMM": fmt(im / 2),
        "positionIMByMp": fmt(im),
        "positionMMByMp": fmt(im / 2),
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "unrealisedPnl": fmt(eng.unrealised()),
        "cumRealisedPnl": fmt(a.cum_realised),
        "curRealisedPnl": fmt(a.cur_realised),
        "createdTime": str(a.pos_created_ms or now_ms()),
        "updatedTime": str(a.pos_updated_ms or now_ms()),
        "tpslMode": "Full",
        "liqPrice": "",
        "bustPrice": "",
        "category": "linear",
        "positionStatus": "Normal",
        "adlRankIndicator": 2 if size else 0,
        "autoAddMargin": 0,
        "leverageSysUpdatedTime": "",
        "mmrSysUpdatedTime": "",
        "seq": a.seq,
        "isReduceOnly": False,
    }
    return row


def wallet_row(eng: Engine, http: bool, others: tuple[Engine, ...] = (), balance0: Decimal = ZERO) -> dict:
    """The account's wallet. ``others``: the other symbols' engines of a several-symbol exchange;
    each started from ``balance0``, so the account's balance is ``eng``'s plus each other's change."""
    a = eng.account
    upl = eng.unrealised()
    balance = a.wallet_balance
    order_im = eng.used_margin() - abs(a.pos_size) * a.entry_price / a.leverage
    pos_im = abs(a.pos_size) * a.entry_price / a.leverage
    for o in others:
        oa = o.account
        balance += oa.wallet_balance - balance0
        upl += o.unrealised()
        o_pos_im = abs(oa.pos_size) * oa.entry_price / oa.leverage
        order_im += o.used_margin() - o_pos_im
        pos_im += o_pos_im
    equity = balance + upl
    avail = eng.available() if not others else balance + min(ZERO, upl) - order_im - pos_im
    coin = {
        "coin": "USDT",
        "equity": fmt(equity),
        "usdValue": fmt(equity),
        "walletBalance": fmt(balance),
        "free": "",
        "locked": "0",
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "availableToWithdraw": fmt(max(ZERO, avail)),
        "availableToBorrow": "",
        "accruedInterest": "0",
        "totalOrderIM": fmt(order_im),
        "totalPositionIM": fmt(pos_im),
        "totalPositionMM": fmt(pos_im / 2),
        "unrealisedPnl": fmt(upl),
        "cumRealisedPnl": fmt(a.cum_realised),
        "bonus": "0",
        "collateralSwitch": True,
        "marginCollateral": True,
        "spotBorrow": "0",
    }
    row = {
        "accountIMRate": "0",
        "accountMMRate": "0",
        "accountLTV": "0",
        "totalEquity": fmt(equity),
        "totalWalletBalance": fmt(balance),
        "totalMarginBalance": fmt(equity),
        "totalAvailableBalance": fmt(max(ZERO, avail)),
        "totalPerpUPL": fmt(upl),
        "totalInitialMargin": fmt(order_im + pos_im),
        "totalMaintenanceMargin": fmt(pos_im / 2),
        "accountIMRateByMp": "0",
        "accountMMRateByMp": "0",
        "totalInitialMarginByMp": fmt(order_im + pos_im),
        "totalMaintenanceMarginByMp": fmt(pos_im / 2),
        "coin": [coin],
        "accountType": "UNIFIED",
    }
    return row


def private_msg(topic: str, data: list[dict]) -> dict:
    return {"id": f"{uuid.uuid4().hex}", "topic": topic, "creationTime": now_ms(), "data": data}


# ------------------------------------------------------------------ public
def book_levels(levels, inst: Instrument) -> list[list[str]]:
    return [[fpx(p, inst), fqty(s, inst) if s else "0"] for p, s in levels]
