"""Validation of a target orders frame: every bad row is named with its reason before anything happens.

Collects all problems instead of stopping at the first, so a quant fixes a frame in one pass.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from kit.errors import ValidationError
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


def _number(value: Any) -> float | None:
    """A real, finite number, or None. Booleans and numeric strings are not numbers here: a frame whose
    quantity column holds strings was built wrong, and guessing could send the wrong size."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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


def _check_row(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
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
    quantity = _number(raw_quantity)
    side = None if values["side"] is None else _word(values["side"], ("BUY", "SELL"), "side", problems)
    if is_missing(raw_quantity):
        problems.append("quantity is missing")
    elif quantity is None:
        problems.append(f"quantity {raw_quantity!r} is not a finite number")
    elif quantity != int(quantity):
        problems.append(f"quantity {quantity:g} is not a whole number of shares")
    elif values["side"] is None:
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
        price = _number(limit_price)
        if limit_price is None:
            problems.append("LMT order without limit_price")
        elif price is None or price <= 0:
            problems.append(f"limit_price {limit_price!r} must be a positive number")
        values["limit_price"] = price
    elif order_type == "MKT" and limit_price is not None:
        problems.append(f"limit_price {limit_price!r} given for a MKT order (use order_type LMT)")

    values["tif"] = _word(values["tif"], TIFS, "tif", problems)
    values["sec_type"] = _word(values["sec_type"], SEC_TYPES, "sec_type", problems)
    values["exchange"] = _text(values["exchange"], _EXCHANGE, "exchange", problems)
    values["currency"] = _text(values["currency"], _CURRENCY, "currency", problems)
    values["primary_exchange"] = _text(values["primary_exchange"], _EXCHANGE, "primary_exchange", problems)
    if values["decision_price"] is not None:
        price = _number(values["decision_price"])
        if price is None or price <= 0:
            problems.append(f"decision_price {values['decision_price']!r} must be a positive number")
        values["decision_price"] = price
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


def validate_orders(frame: pd.DataFrame, run_key: str,
                    taken: Mapping[tuple[str, str], int] | None = None) -> list[OrderIntent]:
    """Target orders frame -> order intents with client_order_ids, or ValidationError naming every bad row."""
    problems = _frame_problems(frame)
    if problems:
        raise ValidationError(problems)
    rows: list[tuple[str, dict[str, Any]]] = []
    first_seen: dict[tuple, str] = {}
    sides_by_symbol: dict[str, tuple[str, str]] = {}
    for position, (label, record) in enumerate(zip(frame.index, frame.to_dict("records"), strict=True)):
        values, row_problems = _check_row(record)
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
