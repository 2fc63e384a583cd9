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
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from kit import instruments
from kit.errors import InputError, ValidationError
from kit.ids import client_order_ids
from kit.model import OrderIntent, Side, intents_of
from kit.order_types import BASIC_TIFS, BASIC_TYPES, EXTRA_COLUMNS, check_order_fields
from kit.order_types import ORDER_TYPES as ORDER_TYPES
from kit.order_types import TIFS as TIFS

_SIDES = {side.value: side for side in Side}  # Side(text) through Enum's __call__ costs ~10 us an order

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
    "expiry": "",
    "strike": None,
    "right": "",
    "multiplier": None,
    "con_id": None,
    "local_symbol": "",
}
_BASE_COLUMNS = (*REQUIRED, *OPTIONAL_DEFAULTS)
COLUMNS = (*_BASE_COLUMNS, *EXTRA_COLUMNS)  # the order types' fields last (kit.order_types)
# Columns only futures, FX and options use: a frame with any of them is checked row by row.
INSTRUMENT_COLUMNS = ("expiry", "strike", "right", "multiplier", "con_id", "local_symbol")
SEC_TYPES = instruments.SEC_TYPES
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9 .\-/]{0,20}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EXCHANGE = re.compile(r"^[A-Z0-9.]{0,16}$")


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def given_sec_type(value: Any) -> Any:
    """A row's sec_type as kit reads it everywhere: STK when not given, a word stripped and upper-cased;
    anything else is left as it is, for validation to refuse."""
    if is_missing(value) or value == "":
        return OPTIONAL_DEFAULTS["sec_type"]
    return value.strip().upper() if isinstance(value, str) else value


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
    clean = _clean_prices(entries, sanity)
    if clean is not None:
        return clean
    problems = [problem for symbol, price in entries
                for problem in _price_entry_problems(symbol, price, sanity)]
    if problems:
        raise InputError("prices", problems)
    return {symbol: float(price) for symbol, price in entries}


_PLAIN_NUMBERS = {float, int, np.float64, np.float32, np.int64, np.int32}


def _clean_prices(entries: list[tuple[Any, Any]], sanity: Sanity) -> dict[str, float] | None:
    """The prices at once when every entry is plainly good (a text symbol, a plain number in range), as
    check_prices would give them; None when any entry needs _price_entry_problems to name it."""
    symbols = [symbol for symbol, _ in entries]
    values = [price for _, price in entries]
    if {type(s) for s in symbols} - {str} or not all(s.strip() for s in symbols) \
            or {type(p) for p in values} - _PLAIN_NUMBERS:
        return None
    try:
        numbers_ = np.array(values, dtype=float)
    except OverflowError:  # an int beyond any float
        return None
    if not _prices_ok(numbers_, sanity):
        return None
    return dict(zip(symbols, numbers_.tolist(), strict=True))


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


def _check_row(row: dict[str, Any], sanity: Sanity,
               now: datetime | None = None) -> tuple[dict[str, Any], list[str]]:
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

    values["tif"] = _word(values["tif"], TIFS, "tif", problems)
    values["sec_type"] = _word(values["sec_type"], SEC_TYPES, "sec_type", problems)
    values["exchange"] = _text(values["exchange"], _EXCHANGE, "exchange", problems)
    values["currency"] = _text(values["currency"], _CURRENCY, "currency", problems)
    values["primary_exchange"] = _text(values["primary_exchange"], _EXCHANGE, "primary_exchange", problems)
    if values["decision_price"] is not None:
        if (problem := price_problem(values["decision_price"], "decision_price", sanity)) is not None:
            problems.append(problem)
        values["decision_price"] = finite_number(values["decision_price"])
    check_order_fields(values, row, lambda value, name: price_problem(value, name, sanity), now, problems)
    if values["sec_type"] is not None:
        _check_instrument(row, values, problems)
    return values, problems


def _check_instrument(row: dict[str, Any], values: dict[str, Any], problems: list[str]) -> None:
    """The fields each sec type needs and those it must not have (kit.instruments says what each means)."""
    sec_type = values["sec_type"]
    given = {name for name in INSTRUMENT_COLUMNS if not is_missing(row.get(name)) and row.get(name) != ""}
    allowed = {"STK": {"con_id", "local_symbol"}, "CASH": {"con_id", "local_symbol"},
               "FUT": {"expiry", "multiplier", "con_id", "local_symbol"}, "OPT": set(INSTRUMENT_COLUMNS)}
    for name in sorted(given - allowed[sec_type]):
        problems.append(f"{name} {row[name]!r} given for a {sec_type} row (only "
                        + ("futures and options" if name in ("expiry", "multiplier") else "options")
                        + " have one)")
    if sec_type in ("FUT", "OPT"):
        expiry = row.get("expiry")
        if "expiry" not in given:
            problems.append(f"a {sec_type} row needs an expiry (YYYYMM, YYYYMMDD"
                            + (" or 'front')" if sec_type == "FUT" else ")"))
        elif (problem := instruments.expiry_problem(expiry.strip() if isinstance(expiry, str) else expiry)):
            problems.append(problem)
        elif sec_type == "OPT" and expiry.strip() == instruments.FRONT:
            problems.append("an option's expiry must be a date or month, not 'front'")
        else:
            values["expiry"] = expiry.strip()
    if "multiplier" in given:
        number = finite_number(row["multiplier"])
        if number is None or number <= 0:
            problems.append(f"multiplier {row['multiplier']!r} must be a positive number")
        values["multiplier"] = number
    if "con_id" in given:
        number = finite_number(row["con_id"])
        if number is None or number <= 0 or number != int(number):
            problems.append(f"con_id {row['con_id']!r} must be a positive whole number (IB's conId)")
        else:
            values["con_id"] = int(number)
    if "local_symbol" in given and not isinstance(row["local_symbol"], str):
        problems.append(f"local_symbol {row['local_symbol']!r} is not text")
    if sec_type == "OPT":
        strike, right = row.get("strike"), row.get("right")
        number = finite_number(strike)
        if number is None or number <= 0:
            problems.append(f"an option needs a positive strike, not {strike!r}")
        values["strike"] = number
        word = right.strip().upper() if isinstance(right, str) else right
        word = {"CALL": "C", "PUT": "P"}.get(word, word)
        if word not in instruments.RIGHTS:
            problems.append(f"an option needs right 'C' or 'P', not {right!r}")
        values["right"] = word
    if sec_type == "CASH":
        _check_fx(row, values, problems)


def _check_fx(row: dict[str, Any], values: dict[str, Any], problems: list[str]) -> None:
    """EUR.USD: the quantity in EUR, the price and money in USD, on IDEALPRO."""
    symbol = values["symbol"]
    pair = instruments.fx_pair(symbol) if isinstance(symbol, str) else None
    if pair is None:
        problems.append(f"an FX symbol is BASE.QUOTE, like EUR.USD, not {symbol!r}")
        return
    base, quote = pair
    if base == quote:
        problems.append(f"{symbol} trades a currency against itself")
    currency = row.get("currency")
    if not is_missing(currency) and currency != quote:
        problems.append(f"currency {currency!r} is not the quote currency of {symbol} ({quote}): FX money "
                        "is in the quote currency")
    values["currency"] = quote
    if values["exchange"] == "SMART":
        values["exchange"] = instruments.IDEALPRO


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
                    sanity: Sanity = SANITY, now: datetime | None = None) -> list[OrderIntent]:
    """Target orders frame -> order intents with client_order_ids, or ValidationError naming every bad row.

    `now` (naive UTC, from the caller's clock) is what a GTD order's good_till must be after."""
    problems = _frame_problems(frame)
    if problems:
        raise ValidationError(problems)
    columns = _clean_columns(frame, sanity)
    if columns is None:
        rows = _checked_rows(frame, sanity, now)
        columns = {name: list(map(operator.itemgetter(name), rows)) for name in COLUMNS}
    ids = client_order_ids(run_key, zip(columns["symbol"], columns["side"], strict=True), taken)
    # The column-wise path gives no order-type fields (kit.order_types): its intents take their defaults.
    sides = list(map(_SIDES.__getitem__, columns["side"]))
    return intents_of({**columns, "client_order_id": ids, "side": sides})


class _Fields:
    """A checked row's values as attributes, for kit.instruments.key_of."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)


def _checked_rows(frame: pd.DataFrame, sanity: Sanity, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every row checked one by one: the values of each, or ValidationError naming every bad row."""
    problems: list[tuple[str | None, str]] = []
    rows: list[dict[str, Any]] = []
    first_seen: dict[tuple, str] = {}
    sides_by_symbol: dict[str, tuple[str, str]] = {}
    for position, (label, record) in enumerate(zip(frame.index, frame.to_dict("records"), strict=True)):
        values, row_problems = _check_row(record, sanity, now)
        name = _row_name(label, position, record.get("symbol"))
        if not row_problems:
            key = tuple(values[c] for c in COLUMNS)
            if key in first_seen:
                row_problems.append(f"duplicates {first_seen[key]}")
            first_seen.setdefault(key, name)
            symbol, side = instruments.key_of(_Fields(values)), values["side"]
            other = sides_by_symbol.setdefault(symbol, (side, name))
            if other[0] != side:
                row_problems.append(f"conflicts with {other[1]}: both buys and sells {symbol} in one run")
        problems.extend((name, reason) for reason in row_problems)
        rows.append(values)
    if problems:
        raise ValidationError(problems)
    return rows


# ---- the column-wise path ----------------------------------------------------------------------------------
# A frame whose every row is plainly valid is checked a column at a time (a 100,000-row basket's intents in
# ~0.3 s, against ~3 s row by row). It accepts only what _check_row accepts, with the same values; any
# doubt (a bad row, an unusual dtype, a duplicate) sends the whole frame to _checked_rows, so every error
# message comes from one place, in the same order.
_FULL_SYMBOL = re.compile(_SYMBOL.pattern.strip("^$"))
_FULL_CURRENCY = re.compile(_CURRENCY.pattern.strip("^$"))
_FULL_EXCHANGE = re.compile(_EXCHANGE.pattern.strip("^$"))


def _all_missing(column: pd.Series) -> bool:
    return bool(column.isna().all()) and all(is_missing(v) for v in column)


def _texts(frame: pd.DataFrame, name: str) -> list[str] | None:
    """A text column as a list, its gaps (as is_missing says) filled by the default; None when some value
    is not text. Checks and normalisation below use Python's own str methods, as _check_row does."""
    default = OPTIONAL_DEFAULTS.get(name)
    if name not in frame.columns:
        return [default] * len(frame)
    column = frame[name]
    gaps = column.isna()
    if gaps.any():
        if default is None or not all(is_missing(v) for v in column[gaps]):
            return None
        column = column.astype(object).where(~gaps, default)
    if infer_dtype(column, skipna=False) != "string":
        return None
    return column.tolist()


def _words(frame: pd.DataFrame, name: str, allowed: tuple[str, ...]) -> list[str] | None:
    texts = _texts(frame, name)
    if texts is None:
        return None
    canonical = {word: word for word in allowed}  # one shared str per word, not one per row
    word_of = {text: canonical.get(text.strip().upper()) for text in set(texts)}  # once per distinct text
    return None if None in word_of.values() else list(map(word_of.__getitem__, texts))


def _patterned(frame: pd.DataFrame, name: str, pattern: re.Pattern[str]) -> list[str] | None:
    texts = _texts(frame, name)
    return texts if texts is not None and all(map(pattern.fullmatch, set(texts))) else None


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """A plain numpy numeric column as floats (NaN where missing; all NaN when absent), or None for any
    other dtype: booleans, objects and nullable dtypes take the row-by-row path."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    dtype = frame[name].dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf":
        return None
    return frame[name].to_numpy(dtype=float)


def _prices_ok(prices: np.ndarray, sanity: Sanity) -> bool:
    return bool(np.all(np.isfinite(prices) & (prices > 0) & (prices <= sanity.max_price)))


def _optional(prices: np.ndarray) -> list[float | None]:
    gaps = np.isnan(prices)
    if gaps.all():  # the column is absent or empty, as in most baskets
        return [None] * len(prices)
    return [None if gap else p for p, gap in zip(prices.tolist(), gaps.tolist(), strict=True)]


def _clean_columns(frame: pd.DataFrame, sanity: Sanity) -> dict[str, list[Any]] | None:
    """The values _check_row would give every row, column by column, if every row is valid and no row
    duplicates or conflicts with another; else None."""
    if len(frame) == 0 or any(name in frame.columns and not _all_missing(frame[name])
                              for name in INSTRUMENT_COLUMNS):
        return None
    if any(name in frame.columns and not _all_missing(frame[name]) for name in EXTRA_COLUMNS):
        return None  # an order-type field: the row-by-row check (kit.order_types)
    symbol = _texts(frame, "symbol")
    if symbol is None or not all(map(_FULL_SYMBOL.fullmatch, symbol)) \
            or any(text != text.strip() for text in symbol):
        return None
    raw = frame["quantity"]
    if not isinstance(raw.dtype, np.dtype) or raw.dtype.kind not in "iuf":
        return None
    quantity = raw.to_numpy(dtype=float)
    size = np.abs(quantity)
    limit = min(float(EXACT), sanity.max_quantity)
    if raw.dtype.kind in "iu":  # as quantity_problem: the exact integer against the limits
        exact, whole_limit = raw.to_numpy(), math.floor(limit)
        if not bool(np.all((exact <= whole_limit) & (exact >= -whole_limit))):
            return None
    elif not bool(np.all(np.isfinite(quantity) & (quantity == np.trunc(quantity)) & (size <= limit))):
        return None
    if "side" in frame.columns and not _all_missing(frame["side"]):
        side = _words(frame, "side", ("BUY", "SELL"))  # a gap in it (a signed row among sided ones): None
        if side is None or not bool(np.all(quantity > 0)):
            return None
    else:
        if not bool(np.all(quantity != 0)):
            return None
        side = np.where(quantity > 0, "BUY", "SELL").tolist()
        quantity = size
    order_type = _words(frame, "order_type", BASIC_TYPES)
    limit_price = _numbers(frame, "limit_price")
    decision_price = _numbers(frame, "decision_price")
    if order_type is None or limit_price is None or decision_price is None:
        return None
    limited = np.array(order_type, dtype=object) == "LMT"
    if not (_prices_ok(limit_price[limited], sanity) and np.isnan(limit_price[~limited]).all()):
        return None
    if not _prices_ok(decision_price[~np.isnan(decision_price)], sanity):
        return None
    columns: dict[str, Any] = {
        "symbol": symbol, "quantity": quantity.tolist(), "side": side, "order_type": order_type,
        "limit_price": _optional(limit_price), "tif": _words(frame, "tif", BASIC_TIFS),
        "sec_type": _words(frame, "sec_type", ("STK",)),  # other sec types: checked row by row
        "exchange": _patterned(frame, "exchange", _FULL_EXCHANGE),
        "currency": _patterned(frame, "currency", _FULL_CURRENCY),
        "primary_exchange": _patterned(frame, "primary_exchange", _FULL_EXCHANGE),
        "decision_price": _optional(decision_price),
    }
    columns.update({"expiry": [""] * len(frame), "strike": [None] * len(frame), "right": [""] * len(frame),
                    "multiplier": [None] * len(frame), "con_id": [None] * len(frame),
                    "local_symbol": [""] * len(frame)})
    if any(values is None for values in columns.values()):
        return None
    if len(set(symbol)) == len(symbol):  # no two rows of one symbol: no duplicate, no conflict
        return columns
    keys = pd.DataFrame(columns)
    if keys.duplicated().any() or keys.drop_duplicates(["symbol", "side"])["symbol"].duplicated().any():
        return None
    return columns
