"""Bybit linear perpetuals as Nautilus ``CryptoPerpetual`` instruments.

Definitions come from Bybit's ``GET /v5/market/instruments-info`` JSON; fee rates from
``GET /v5/account/fee-rate`` JSON when given. Ids follow the Nautilus Bybit adapter:
``BTCUSDT-LINEAR.BYBIT``.

Defaults when no fee-rate body is given (Bybit's base tier for USDT perpetuals):
maker 0.0002 (2 bps), taker 0.00055 (5.5 bps). Margins: ``margin_init = 1 / maxLeverage``,
``margin_maint = margin_init / 2``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import Money, Price, Quantity

BYBIT_VENUE = Venue("BYBIT")
LINEAR_SUFFIX = "-LINEAR"
DEFAULT_MAKER_FEE = Decimal("0.0002")
DEFAULT_TAKER_FEE = Decimal("0.00055")
SHIPPED_DEFINITIONS = Path(__file__).parent / "definitions" / "bybit_linear_instruments.json"


class InstrumentDefinitionError(ValueError):
    """A definition file is unreadable or a symbol is unknown."""


@dataclass(frozen=True, slots=True)
class FeeRates:
    maker: Decimal
    taker: Decimal


def instrument_id_for(symbol: str) -> InstrumentId:
    """Nautilus id of a Bybit linear symbol, e.g. ``BTCUSDT`` -> ``BTCUSDT-LINEAR.BYBIT``."""
    return InstrumentId(Symbol(f"{symbol}{LINEAR_SUFFIX}"), BYBIT_VENUE)


def symbol_of(instrument_id: InstrumentId | str) -> str:
    """Bybit raw symbol of a Nautilus id, e.g. ``BTCUSDT-LINEAR.BYBIT`` -> ``BTCUSDT``."""
    text = str(instrument_id)
    sym = text.split(".", 1)[0]
    return sym.removesuffix(LINEAR_SUFFIX)


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise InstrumentDefinitionError(f"{path}: cannot read: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise InstrumentDefinitionError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e


def _result_list(body: dict, path: Path | str) -> list[dict]:
    if not isinstance(body, dict) or body.get("retCode", 0) != 0:
        raise InstrumentDefinitionError(f"{path}: not a successful Bybit v5 response (retCode != 0)")
    result = body.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("list"), list):
        raise InstrumentDefinitionError(f"{path}: missing result.list")
    return result["list"]


def parse_fee_rates(body: dict, path: Path | str = "<fee-rate>") -> dict[str, FeeRates]:
    """Fee rates by symbol from a ``GET /v5/account/fee-rate`` body (fractions, not bps)."""
    out: dict[str, FeeRates] = {}
    for i, row in enumerate(_result_list(body, path)):
        try:
            out[row["symbol"]] = FeeRates(Decimal(row["makerFeeRate"]), Decimal(row["takerFeeRate"]))
        except (KeyError, ArithmeticError) as e:
            raise InstrumentDefinitionError(f"{path}: result.list[{i}]: bad fee row: {e}") from e
    return out


def parse_instrument(row: dict, fees: FeeRates | None = None) -> CryptoPerpetual:
    """One ``instruments-info`` list row -> ``CryptoPerpetual`` (linear, USDT-settled)."""
    symbol = row["symbol"]
    if row.get("contractType") != "LinearPerpetual":
        raise InstrumentDefinitionError(
            f"{symbol}: contractType {row.get('contractType')!r} is not LinearPerpetual",
        )
    pf, lf = row["priceFilter"], row["lotSizeFilter"]
    tick, step = pf["tickSize"], lf["qtyStep"]
    price_prec, size_prec = _decimals(tick), _decimals(step)
    quote = Currency.from_str(row["quoteCoin"])
    settle = Currency.from_str(row.get("settleCoin") or row["quoteCoin"])
    max_lev = Decimal(row.get("leverageFilter", {}).get("maxLeverage", "10"))
    margin_init = (Decimal(1) / max_lev).quantize(Decimal("0.0001"))
    fees = fees or FeeRates(DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE)
    min_notional = lf.get("minNotionalValue")
    return CryptoPerpetual(
        instrument_id=instrument_id_for(symbol),
        raw_symbol=Symbol(symbol),
        base_currency=Currency.from_str(row["baseCoin"]),
        quote_currency=quote,
        settlement_currency=settle,
        is_inverse=False,
        price_precision=price_prec,
        size_precision=size_prec,
        price_increment=Price.from_str(tick),
        size_increment=Quantity.from_str(step),
        max_quantity=Quantity(float(lf["maxOrderQty"]), size_prec),
        min_quantity=Quantity(float(lf["minOrderQty"]), size_prec),
        max_notional=None,
        min_notional=Money(Decimal(min_notional), quote) if min_notional else None,
        max_price=Price(float(pf["maxPrice"]), price_prec),
        min_price=Price(float(pf["minPrice"]), price_prec),
        margin_init=margin_init,
        margin_maint=margin_init / 2,
        maker_fee=fees.maker,
        taker_fee=fees.taker,
        ts_event=0,
        ts_init=0,
    )


def load_instruments_file(path: Path | str, fee_rates: dict[str, FeeRates] | None = None) -> dict[str, CryptoPerpetual]:
    """All linear perpetuals of an instruments-info JSON file, keyed by Bybit symbol.

    Rows of other contract types (futures with expiry, inverse) are ignored: mmbot quotes
    linear perpetuals only.
    """
    path = Path(path)
    out: dict[str, CryptoPerpetual] = {}
    for i, row in enumerate(_result_list(_load_json(path), path)):
        if row.get("contractType") != "LinearPerpetual":
            continue
        try:
            out[row["symbol"]] = parse_instrument(row, (fee_rates or {}).get(row["symbol"]))
        except (KeyError, ValueError, ArithmeticError, TypeError) as e:
            raise InstrumentDefinitionError(f"{path}: result.list[{i}]: {e}") from e
    return out


class InstrumentRegistry:
    """The shipped definitions plus any the user adds with ``--instruments FILE``."""

    def __init__(self, extra_files: list[Path | str] = (), fee_file: Path | str | None = None) -> None:
        fees = parse_fee_rates(_load_json(Path(fee_file)), fee_file) if fee_file else {}
        self._by_symbol = load_instruments_file(SHIPPED_DEFINITIONS, fees)
        for f in extra_files:
            self._by_symbol.update(load_instruments_file(f, fees))

    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)

    def get(self, symbol: str) -> CryptoPerpetual:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise InstrumentDefinitionError(
                f"unknown instrument {symbol!r}: known are {', '.join(self.symbols())}; "
                "add it with --instruments FILE (a Bybit GET /v5/market/instruments-info?category=linear "
                "JSON body containing the symbol)",
            ) from None

    def get_by_id(self, instrument_id: InstrumentId | str) -> CryptoPerpetual:
        return self.get(symbol_of(instrument_id))
