"""Validation of a target orders frame: every bad row is named with its reason before anything happens.

Collects all problems instead of stopping at the first, so a quant fixes a frame in one pass.

Numbers must be finite and exactly representable (kit keeps quantities as floats, which hold every whole
number up to 2**53 and not every one above it), and under sanity limits: a quantity of 10**30 or a capital
of 1e300 is a bug in the notebook, not an order, and must not reach a broker. The limits (`Sanity`) are
refusals, not risk limits: the input is an error, nothing is recorded. Defaults, overridable per call:

- `max_quantity` 10,000,000 units per order and per target position (at most 2**53);
- `max_price` 1,000,000,000 per unit, for limit, decision and reference prices (all must also be > 0);
- `max_capital` 1e12 (a trillion in the account currency), for `capital=` with target weights;
- `max_weight` 10 (1,000% of capital) for the size of one target weight, long or short.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kit.errors import InputError, ValidationError
from kit.ids import client_order_ids
from kit.model import OrderIntent, Side

REQUIRED = ("symbol", "quantity")
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "side": None,
    "order_type": "MKT",
    "limit_price": None,
    "tif": "DAY",
    "sec_type": "STK",
    "exchange": "SMART",
    "currency": "USD",
    "primary_exchange": "",
    "decision_price": None,
}
COLUMNS = (*REQUIRED, *OPTIONAL_DEFAULTS)
ORDER_TYPES = ("MKT", "LMT")
TIFS = ("DAY", "GTC", "IOC")
SEC_TYPES = ("STK",)
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9 .\-/]{0,20}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EXCHANGE = re.compile(r"^[A-Z0-9.]{0,16}$")


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def finite_number(value: Any) -> float | None:
    """A real, finite number, or None. Booleans and numeric strings are not numbers here: a frame whose
    quantity column holds strings was built wrong, and guessing could send the wrong size."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) else None


EXACT = 2**53  # every whole number up to this is exactly a float; 2**53 + 1 is not


@dataclass(frozen=True)
class Sanity:
    """Bounds beyond which a number is a mistake, not an order (defaults in the module docstring)."""

    max_quantity: float = 10_000_000
    max_price: float = 1_000_000_000
    max_capital: float = 1e12
    max_weight: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_quantity", "max_price", "max_capital", "max_weight"):
            value = getattr(self, name)
            if finite_number(value) is None or value <= 0:
                raise InputError("the sanity limits", [(name, f"{value!r} must be a positive finite number")])
        if self.max_quantity > EXACT:
            raise InputError("the sanity limits", [("max_quantity", f"{self.max_quantity!r} is above 2**53, "
                                                    "where whole numbers stop being exact")])


SANITY = Sanity()


def _shown(value: Any) -> str:
    """A number as the user wrote it: whole numbers in full (10**30, not 1e+30), others as %g."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):g}" if finite_number(value) is not None else repr(value)


def quantity_problem(value: Any, name: str, sanity: Sanity) -> str | None:
    """Why `value` is not a usable number of units (whole, exact, within the limit), or None. The sign is
    the caller's to judge."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = abs(int(value))  # exact, whatever its size: float(10**400) would overflow
    else:
        number = finite_number(value)
        if number is None:
            return f"{name} {value!r} is not a finite number"
        if number != int(number):
            return f"{name} {number:g} is not a whole number of shares"
        size = abs(int(number))
    if size > EXACT:
        return f"{name} {_shown(value)} is above 2**53 and cannot be held exactly"
    if size > sanity.max_quantity:
        return (f"{name} {_shown(value)} is above the sanity limit of {sanity.max_quantity:,.0f} units "
                "(pass a higher max_quantity if you mean it)")
    return None


def price_problem(value: Any, name: str, sanity: Sanity) -> str | None:
    """Why `value` is not a usable price (a finite number > 0 within the limit), or None."""
    number = finite_number(value)
    if number is None or number <= 0:
        return f"{name} {value!r} must be a positive number"
    if number > sanity.max_price:
        return (f"{name} {_shown(value)} is above the sanity limit of {sanity.max_price:,.0f} "
                "(pass a higher max_price if you mean it)")
    return None


def check_price(symbol: Any, price: Any, sanity: Sanity = SANITY) -> tuple[str, float]:
    """One reference price for the mock broker, or InputError naming the symbol."""
    problems = _price_entry_problems(symbol, price, sanity)
    if problems:
        raise InputError("prices", problems)
    return symbol, float(price)


def _price_entry_problems(symbol: Any, price: Any, sanity: Sanity) -> list[tuple[str | None, str]]:
    if not isinstance(symbol, str) or not symbol.strip():
        return [(None, f"symbol {symbol!r} (with price {price!r}) is not a symbol")]
    problem = price_problem(price, "price", sanity)
    return [(symbol, problem)] if problem else []


def check_prices(prices: Any, sanity: Sanity = SANITY) -> dict[str, float]:
    """Reference prices {symbol: price} for the mock broker: a dict, a Series, or a DataFrame, wide (one
    column per symbol, the last valid row wins; a column not named like a ticker, e.g. "date", is no
    symbol) or long (symbol and price columns, the last valid row per symbol wins). Every bad entry is
    named by its symbol in one InputError; a frame's gaps (NaN) are skipped, a dict's or Series' are not."""
    if prices is None:
        return {}
    if isinstance(prices, pd.DataFrame):
        if {"symbol", "price"} <= set(prices.columns):
            known = prices.dropna(subset=["price"])
            entries = list(known.groupby("symbol", sort=False)["price"].last().items())
        else:
            last = prices.ffill().iloc[-1] if len(prices) else pd.Series(dtype=float)
            entries = [(s, p) for s, p in last.items()
                       if isinstance(s, str) and _SYMBOL.match(s) and not is_missing(p)]
    elif isinstance(prices, pd.Series | Mapping):
        entries = list(prices.items())
    else:
        raise InputError("prices", [(None, "prices must be a dict {symbol: price}, a Series or a DataFrame, "
                                           f"not {type(prices).__name__}")])
    problems = [problem for symbol, price in entries
                for problem in _price_entry_problems(symbol, price, sanity)]
    if problems:
        raise InputError("prices", problems)
    return {symbol: float(price) for symbol, price in entries}


def _word(value: Any, allowed: tuple[str, ...], name: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or value.strip().upper() not in allowed:
        problems.append(f"{name} {value!r} is not one of {', '.join(allowed)}")
        return None
    return value.strip().upper()


def _text(value: Any, pattern: re.Pattern[str], name: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not pattern.match(value):
        problems.append(f"{name} {value!r} is not valid")
        return None
    return value


def _row_name(label: Any, position: int, symbol: Any) -> str:
    where = f"row {label!r}" if label != position else f"row {position}"
    return f"{where} ({symbol})" if isinstance(symbol, str) and symbol.strip() else where


def _check_row(row: dict[str, Any], sanity: Sanity) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    values = {name: (default if is_missing(row.get(name)) else row[name])
              for name, default in OPTIONAL_DEFAULTS.items()}

    symbol = row.get("symbol")
    if is_missing(symbol) or (isinstance(symbol, str) and not symbol.strip()):
        problems.append("symbol is missing")
    elif not isinstance(symbol, str):
        problems.append(f"symbol {symbol!r} is not text")
    elif symbol != symbol.strip():
        # "AAPL " from a padded CSV would be a second, unknown symbol next to "AAPL"
        problems.append(f"symbol {symbol!r} has spaces around it")
    elif not _SYMBOL.match(symbol):
        problems.append(f"symbol {symbol!r} is not an upper-case ticker (letters, digits, space . - /)")
    values["symbol"] = symbol

    raw_quantity = row.get("quantity")
    side = None if values["side"] is None else _word(values["side"], ("BUY", "SELL"), "side", problems)
    quantity = None
    if is_missing(raw_quantity):
        problems.append("quantity is missing")
    elif (problem := quantity_problem(raw_quantity, "quantity", sanity)) is not None:
        problems.append(problem)
    else:
        quantity = float(raw_quantity)
        if values["side"] is None:
            if quantity == 0:
                problems.append("quantity is zero")
            side, quantity = ("BUY" if quantity > 0 else "SELL"), abs(quantity)
        elif quantity <= 0:
            problems.append(f"quantity {quantity:g} must be positive when side is given")
    values["side"], values["quantity"] = side, quantity

    order_type = _word(values["order_type"], ORDER_TYPES, "order_type", problems)
    values["order_type"] = order_type
    limit_price = values["limit_price"]
    if order_type == "LMT":
        if limit_price is None:
            problems.append("LMT order without limit_price")
        elif (problem := price_problem(limit_price, "limit_price", sanity)) is not None:
            problems.append(problem)
        values["limit_price"] = finite_number(limit_price)
    elif order_type == "MKT" and limit_price is not None:
        problems.append(f"limit_price {limit_price!r} given for a MKT order (use order_type LMT)")

    values["tif"] = _word(values["tif"], TIFS, "tif", problems)
    values["sec_type"] = _word(values["sec_type"], SEC_TYPES, "sec_type", problems)
    values["exchange"] = _text(values["exchange"], _EXCHANGE, "exchange", problems)
    values["currency"] = _text(values["currency"], _CURRENCY, "currency", problems)
    values["primary_exchange"] = _text(values["primary_exchange"], _EXCHANGE, "primary_exchange", problems)
    if values["decision_price"] is not None:
        if (problem := price_problem(values["decision_price"], "decision_price", sanity)) is not None:
            problems.append(problem)
        values["decision_price"] = finite_number(values["decision_price"])
    return values, problems


def _frame_problems(frame: Any) -> list[tuple[str | None, str]]:
    if not isinstance(frame, pd.DataFrame):
        return [(None, f"targets must be a pandas DataFrame, not {type(frame).__name__}")]
    problems: list[tuple[str | None, str]] = []
    for column in frame.columns:
        if column not in COLUMNS:
            hint = difflib.get_close_matches(str(column), COLUMNS, n=1)
            problems.append((None, f"unknown column {column!r}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; known columns: {', '.join(COLUMNS)}"))
    for column in REQUIRED:
        if column not in frame.columns:
            problems.append((None, f"required column {column!r} is missing"))
    if frame.columns.duplicated().any():
        problems.append((None, "duplicate column names"))
    return problems


def validate_orders(frame: pd.DataFrame, run_key: str, taken: Mapping[tuple[str, str], int] | None = None,
                    sanity: Sanity = SANITY) -> list[OrderIntent]:
    """Target orders frame -> order intents with client_order_ids, or ValidationError naming every bad row."""
    problems = _frame_problems(frame)
    if problems:
        raise ValidationError(problems)
    rows: list[tuple[str, dict[str, Any]]] = []
    first_seen: dict[tuple, str] = {}
    sides_by_symbol: dict[str, tuple[str, str]] = {}
    for position, (label, record) in enumerate(zip(frame.index, frame.to_dict("records"), strict=True)):
        values, row_problems = _check_row(record, sanity)
        name = _row_name(label, position, record.get("symbol"))
        if not row_problems:
            key = tuple(values[c] for c in COLUMNS)
            if key in first_seen:
                row_problems.append(f"duplicates {first_seen[key]}")
            first_seen.setdefault(key, name)
            symbol, side = values["symbol"], values["side"]
            other = sides_by_symbol.setdefault(symbol, (side, name))
            if other[0] != side:
                row_problems.append(f"conflicts with {other[1]}: both buys and sells {symbol} in one run")
        problems.extend((name, reason) for reason in row_problems)
        rows.append((name, values))
    if problems:
        raise ValidationError(problems)
    ids = client_order_ids(run_key, ((v["symbol"], v["side"]) for _, v in rows), taken)
    return [
        OrderIntent(
            client_order_id=coid, symbol=v["symbol"], side=Side(v["side"]), quantity=v["quantity"],
            order_type=v["order_type"], limit_price=v["limit_price"], tif=v["tif"], sec_type=v["sec_type"],
            exchange=v["exchange"], currency=v["currency"], primary_exchange=v["primary_exchange"],
            decision_price=v["decision_price"],
        )
        for coid, (_, v) in zip(ids, rows, strict=True)
    ]
