"""Planning: a targets frame (orders, or positions to reach) -> the orders of one run, with risk verdicts.

Pure. Positions, working orders and prices come in as arguments; the shell (kit.api) fetches them from the
ledger or the broker. The plan hash covers every order, its verdict and the run key, so an approval given
for one plan cannot be used for another.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from itertools import repeat
from typing import Any

import pandas as pd
from pandas.api.types import infer_dtype

from kit.errors import CurrencyError, InputError, ValidationError
from kit.ids import check_run_key
from kit.instruments import DERIVATIVES, FRONT, convert, fx_pair, instrument_key, key_of, notional, units
from kit.model import PAYLOAD_FIELDS, OrderIntent
from kit.order_types import EXTRA_COLUMNS
from kit.risk import RiskLimits, check, order_price, signed
from kit.validate import (
    COLUMNS,
    INSTRUMENT_COLUMNS,
    SANITY,
    Sanity,
    finite_number,
    given_sec_type,
    is_missing,
    quantity_problem,
    validate_orders,
)

TARGET_COLUMNS = ("target_quantity", "target_weight")
POSITION_COLUMNS = ("symbol", *TARGET_COLUMNS, "tif", "exchange", "currency", "primary_exchange",
                    "decision_price", "order_type", "limit_price", *EXTRA_COLUMNS,  # how to trade the delta
                    "sec_type", *INSTRUMENT_COLUMNS)


@dataclass(frozen=True)
class Plan:
    run_key: str
    intents: tuple[OrderIntent, ...]  # what the engine sends; `orders` is the same as a DataFrame
    breaches: tuple[tuple[str, ...], ...] = ()  # per order; () passes every limit
    current: Mapping[str, float] = field(default_factory=dict)  # position + working, per symbol
    targets: Mapping[str, float] = field(default_factory=dict)  # target positions, when planned from them
    prices: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.breaches:
            object.__setattr__(self, "breaches", tuple(() for _ in self.intents))

    @cached_property  # a frozen plan's hash never changes
    def hash(self) -> str:
        """The run key and, per order, repr((client_order_id, *payload, breaches)), hashed. Ledgers store it
        and approve= takes it: its value must never change for the same plan (tests/test_plan_pins.py)."""
        digest = hashlib.sha256(self.run_key.encode())
        for start in range(0, len(self.intents), _ROWS_HASHED_AT_ONCE):  # ~300 bytes of text an order
            intents = self.intents[start:start + _ROWS_HASHED_AT_ONCE]
            columns = [list(map(field, intents)) for field in _HASHED_FIELDS]
            breaches = list(self.breaches[start:start + _ROWS_HASHED_AT_ONCE])
            digest.update(_reprs_of_rows([*columns, breaches]).encode())
        return digest.hexdigest()[:16]

    @property
    def passing(self) -> tuple[OrderIntent, ...]:
        return tuple(o for o, b in zip(self.intents, self.breaches, strict=True) if not b)

    @property
    def orders(self) -> pd.DataFrame:
        """One row per order, like run.orders: what a quant reads first (symbol, side, quantity, type, limit,
        notional, risk), then everything else."""
        return self.frame()

    def frame(self) -> pd.DataFrame:
        rows = []
        for order, breaches in zip(self.intents, self.breaches, strict=True):
            price = order_price(order, self.prices)
            key = key_of(order)
            current = self.current.get(key, 0.0)
            rows.append({
                "client_order_id": order.client_order_id, "symbol": order.symbol,
                "current": current, "target": self.targets.get(key, current + signed(order)),
                "delta": signed(order),
                **{name: getattr(order, name) for name in PAYLOAD_FIELDS if name != "symbol"},
                "side": str(order.side),
                "price": price, "decision_price": order.decision_price,
                "notional": notional(order.quantity, price, units(order)),
                "risk": "; ".join(breaches) or "ok",
            })
        first = ["symbol", "side", "quantity", "order_type", "limit_price", "notional", "risk"]
        columns = [*first, "client_order_id", "current", "target", "delta", "price", "decision_price",
                   *(name for name in PAYLOAD_FIELDS if name not in first)]
        return pd.DataFrame(rows, columns=columns)

    def __len__(self) -> int:
        return len(self.intents)

    def __repr__(self) -> str:
        stopped = sum(1 for b in self.breaches if b)
        return (f"Plan(run_key={self.run_key!r}, orders={len(self.intents)}, stopped_by_risk={stopped}, "
                f"hash={self.hash})")

    def _repr_html_(self) -> str:
        from kit.display import plan_html

        return plan_html(self)


_ROWS_HASHED_AT_ONCE = 10_000
_HASHED_FIELDS = [operator.attrgetter(name) for name in ("client_order_id", *PAYLOAD_FIELDS)]
# Types whose equal values have one repr (not float: 0.0 == -0.0), and whose repr is built in C.
_ONE_REPR = (str, int, bool, type(None))


def _column_text(values: list[Any]) -> str | None:
    """The repr every value of a column has, or None when the values' reprs differ (or may)."""
    first = values[0]
    if all(map(operator.is_, values, repeat(first))):
        return repr(first)
    kind = type(first)
    uniform = (kind in _ONE_REPR or isinstance(first, Enum) or (kind is float and first != 0.0)) \
        and values.count(first) == len(values) and set(map(type, values)) == {kind}
    return repr(first) if uniform else None


def _reprs(values: list[Any]) -> list[str]:
    """repr of each value; an enum's (Python's Enum.__repr__, ~1 us) once per member."""
    if isinstance(values[0], Enum) and set(map(type, values)) == {type(values[0])}:
        return list(map({member: repr(member) for member in set(values)}.__getitem__, values))
    return list(map(repr, values))


def _reprs_of_rows(columns: list[list[Any]]) -> str:
    """"".join(repr(row) for row in zip(*columns)), a column at a time: a column with one value throughout
    (most of a basket's) is written once into a row template, the others are repr'd a column at a time."""
    if not columns[0]:
        return ""
    constants = [_column_text(values) for values in columns]
    template = "(" + ", ".join("%s" if text is None else text.replace("%", "%%") for text in constants) + ")"
    varying = [_reprs(values) for values, text in zip(columns, constants, strict=True) if text is None]
    if not varying:
        return (template % ()) * len(columns[0])
    return "".join([template % row for row in zip(*varying, strict=True)])


def is_positions_frame(frame: Any) -> bool:
    return isinstance(frame, pd.DataFrame) and any(c in frame.columns for c in TARGET_COLUMNS)


def _capital_problem(capital: Any, sanity: Sanity) -> str | None:
    if finite_number(capital) is None or capital <= 0:
        return f"target_weight needs a positive capital, got {capital!r}"
    if capital > sanity.max_capital:
        return (f"capital {capital:g} is above the sanity limit of {sanity.max_capital:g} "
                "(pass a higher max_capital if you mean it)")
    return None


def _weight_problem(weight: Any, sanity: Sanity) -> str | None:
    if finite_number(weight) is None:
        return f"target_weight {weight!r} is not a finite number"
    if abs(weight) > sanity.max_weight:
        return (f"target_weight {weight:g} is beyond the sanity limit of \u00b1{sanity.max_weight:g} "
                "(pass a higher max_weight if you mean it)")
    return None


def row_key(row: Mapping[str, Any]) -> str:
    """The instrument key (kit.instruments.instrument_key) of a targets row, as validation will see it."""
    def given(name: str, default: Any = "") -> Any:
        value = row.get(name)
        return default if is_missing(value) else value
    return instrument_key(row.get("symbol"), given_sec_type(row.get("sec_type")), given("expiry"),
                          given("strike", None), given("right"))


def row_keys(frame: pd.DataFrame) -> set[str]:
    """row_key of every row that names a symbol. A stock's or an FX pair's key is its symbol, so only the
    rows of futures and options are read one by one (a 100,000-stock basket: a column operation)."""
    symbols = frame["symbol"]
    sec_types = frame["sec_type"] if "sec_type" in frame.columns else None
    if (sec_types is None or _texts_all_of(sec_types, lambda text: given_sec_type(text) not in DERIVATIVES)) \
            and _all_text(symbols):  # no future or option, every symbol a str
        return set(symbols.tolist())
    named = symbols.map(lambda value: isinstance(value, str))
    derivative = (sec_types.map(lambda value: given_sec_type(value) in DERIVATIVES).astype(bool)
                  if sec_types is not None else pd.Series(False, index=frame.index))
    keys = set(symbols[named & ~derivative])
    keys.update(row_key(row) for row in frame[named & derivative].to_dict("records"))
    return keys


def _all_text(column: pd.Series) -> bool:
    """Whether every value is a str (a str column of pandas' own dtype may still have gaps)."""
    return infer_dtype(column, skipna=False) == "string" and not column.hasnans


def _texts_all_of(column: pd.Series, rule: Callable[[str], bool]) -> bool:
    """Whether every value of the column is a str that the rule holds for, the rule run once per text."""
    return _all_text(column) and all(map(rule, set(column.tolist())))


def _row_currency(row: Mapping[str, Any]) -> str:
    pair = fx_pair(row["symbol"]) if str(row.get("sec_type", "")).upper() == "CASH" else None
    currency = row.get("currency")
    return pair[1] if pair else currency if isinstance(currency, str) and currency else "USD"


def _target_problems(frame: pd.DataFrame, capital: float | None, prices: Mapping[str, float],
                     sanity: Sanity, capital_currency: str = "USD",
                     fx_rates: Mapping[str, float] | None = None,
                     ) -> tuple[dict[str, float], dict[str, tuple[Any, dict[str, Any]]],
                                list[tuple[str | None, str]]]:
    """Target positions in units per instrument key (shares, contracts, base currency) with each key's row
    (its label and values), or the problems that stop planning. A weight buys value in the capital's
    currency: a row in another currency needs a rate, and a future's or option's value per contract is
    price x multiplier."""
    problems: list[tuple[str | None, str]] = []
    unknown = [c for c in frame.columns if c not in POSITION_COLUMNS]
    if unknown:
        problems.append((None, f"unknown column(s) {unknown} in a target positions frame; known: "
                               f"{', '.join(POSITION_COLUMNS)}"))
    by_weight = "target_weight" in frame.columns
    if by_weight and "target_quantity" in frame.columns:
        problems.append((None, "give target_quantity or target_weight, not both"))
    if by_weight and (problem := _capital_problem(capital, sanity)) is not None:
        problems.append((None, problem))
    if "symbol" not in frame.columns:
        problems.append((None, "required column 'symbol' is missing"))
    if problems:
        return {}, {}, problems
    targets: dict[str, float] = {}
    rows: dict[str, tuple[Any, dict[str, Any]]] = {}
    column = "target_weight" if by_weight else "target_quantity"
    for position, (label, row) in enumerate(zip(frame.index, frame.to_dict("records"), strict=True)):
        symbol, value = row.get("symbol"), row.get(column)
        name = f"row {position} ({symbol})" if isinstance(symbol, str) else f"row {position}"
        if label != position:
            name = f"row {label!r}" + (f" ({symbol})" if isinstance(symbol, str) else "")
        if not isinstance(symbol, str) or not symbol.strip():
            problems.append((name, "symbol is missing"))
            continue
        problem = _weight_problem(value, sanity) if by_weight else quantity_problem(value, column, sanity)
        if problem is not None:
            problems.append((name, problem))
            continue
        key = row_key(row)
        if row.get("expiry") == FRONT:
            problems.append((name, f"a target position is per contract: {symbol} 'front' must be resolved "
                                   "to its month first (kit.plan with a broker does; or give YYYYMM)"))
            continue
        if key in targets:
            problems.append((name, f"{key} has more than one target"))
            continue
        if by_weight:
            price = row.get("decision_price")
            if not is_missing(price) and _price(price) is None:
                problems.append((name, f"decision_price {price!r} must be a positive number"))
                continue
            price = _price(prices.get(key, prices.get(symbol)) if is_missing(price) else price)
            if price is None:
                problems.append((name, f"no price for {key} to turn its weight into shares "
                                       "(give decision_price or prices)"))
                continue
            per_unit = _price(row.get("multiplier")) or (1.0 if str(row.get("sec_type") or "STK").upper()
                                                          in ("STK", "CASH") else None)
            if per_unit is None:
                problems.append((name, f"no multiplier for {key} to turn its weight into contracts "
                                       "(give multiplier, or plan with the broker that qualifies it)"))
                continue
            try:  # the value of one unit, in the capital's currency
                unit_value = convert(price * per_unit, _row_currency(row), capital_currency, fx_rates, key)
            except CurrencyError as exc:
                problems.append((name, f"capital is in {capital_currency}: {exc}"))
                continue
            shares = value * capital / unit_value
            if (problem := quantity_problem(round(shares) if math.isfinite(shares) else shares,
                                            "the target", sanity)) is not None:
                problems.append((name, f"{problem}: target_weight {value:g} of capital {capital:g} "
                                       f"at price {price:g}"))
                continue
            targets[key] = shares
        else:
            targets[key] = float(value)
        rows[key] = (label, row)
    return targets, rows, problems


def _price(value: Any) -> float | None:
    """A usable price (a finite number > 0) or None. A bad decision_price must reach validate_orders, which
    names it, instead of raising a TypeError here or dropping its order as under min_notional."""
    number = finite_number(value)
    return number if number is not None and number > 0 else None


def _check_sizes(lot_size: Any, min_notional: Any, sanity: Sanity) -> None:
    problems: list[tuple[str | None, str]] = []
    if finite_number(lot_size) is None or lot_size <= 0:
        problems.append(("lot_size", f"lot_size must be a positive number of shares, not {lot_size!r}"))
    elif lot_size > sanity.max_quantity:
        problems.append(("lot_size", f"lot_size {lot_size:g} is above the sanity limit of "
                                     f"{sanity.max_quantity:,.0f} units"))
    if finite_number(min_notional) is None or min_notional < 0:
        problems.append(("min_notional", f"min_notional must be a finite number >= 0, not {min_notional!r}"))
    if problems:
        raise InputError("the planning options", problems)


def _round_toward_zero(quantity: float, lot: float) -> float:
    return math.copysign(math.floor(abs(quantity) / lot + 1e-9) * lot, quantity)


def plan_positions(frame: pd.DataFrame, run_key: str, *, positions: Mapping[str, float],
                   working: Mapping[str, float], prices: Mapping[str, float], capital: float | None = None,
                   lot_size: float = 1, min_notional: float = 0.0, sells_first: bool = False,
                   sanity: Sanity = SANITY, capital_currency: str = "USD",
                   fx_rates: Mapping[str, float] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Orders that take positions + working orders to the targets, as a target orders frame.

    Positions, working orders and targets are per instrument key (kit.instruments.instrument_key): shares,
    futures contracts, options contracts, FX base-currency units. Instruments absent from the frame are
    left alone (no opinion is not a target of zero). Targets from weights are rounded toward zero to whole
    lots; deltas under `min_notional` (in the row's currency, price x multiplier) are dropped.
    """
    _check_sizes(lot_size, min_notional, sanity)
    targets, target_rows, problems = _target_problems(frame, capital, prices, sanity, capital_currency,
                                                      fx_rates)
    if problems:
        raise ValidationError(problems)
    # Each order keeps its row's label, so a problem validate_orders finds names the user's row.
    labels = {key: label for key, (label, _) in target_rows.items()}
    options = {key: row for key, (_, row) in target_rows.items()}
    rows, order_labels = [], []
    for key, raw_target in targets.items():
        target = _round_toward_zero(raw_target, lot_size)
        targets[key] = target
        delta = _round_toward_zero(target - positions.get(key, 0.0) - working.get(key, 0.0), lot_size)
        if delta == 0:
            continue
        extra = {k: v for k, v in options[key].items()
                 if k in COLUMNS and k != "symbol" and not is_missing(v)}
        price = _price(extra.get("decision_price", prices.get(key)))
        per_unit = _price(extra.get("multiplier")) or 1.0
        if min_notional and price is not None and abs(delta) * price * per_unit < min_notional:
            continue
        side = "BUY" if delta > 0 else "SELL"
        rows.append({"symbol": options[key]["symbol"], "side": side, "quantity": abs(delta), **extra})
        order_labels.append(labels[key])
    if sells_first:
        order = sorted(range(len(rows)), key=lambda i: rows[i]["side"] != "SELL")
        rows, order_labels = [rows[i] for i in order], [order_labels[i] for i in order]
    orders = pd.DataFrame(rows, columns=list(dict.fromkeys(["symbol", "side", "quantity",
                                                            *(k for r in rows for k in r)])),
                          index=order_labels)
    return orders, targets


def make_plan(targets: pd.DataFrame, run_key: str, *, positions: Mapping[str, float] | None = None,
              working: Mapping[str, float] | None = None, prices: Mapping[str, float] | None = None,
              limits: RiskLimits | None = None, capital: float | None = None, lot_size: float = 1,
              min_notional: float = 0.0, sells_first: bool = False,
              taken: Mapping[tuple[str, str], int] | None = None, sanity: Sanity = SANITY,
              now: datetime | None = None) -> Plan:
    """Validate targets into a plan with a risk verdict per order; ValidationError names every bad row.

    `sanity` holds the bounds past which a number is refused as a mistake (kit.validate.Sanity); `now`
    (naive UTC, the caller's clock) is what a GTD order's good_till must be after."""
    check_run_key(run_key)
    positions, working, prices = dict(positions or {}), dict(working or {}), dict(prices or {})
    target_positions: dict[str, float] = {}
    if is_positions_frame(targets):
        limits = limits or RiskLimits()
        targets, target_positions = plan_positions(
            targets, run_key, positions=positions, working=working, prices=prices, capital=capital,
            lot_size=lot_size, min_notional=min_notional, sells_first=sells_first, sanity=sanity,
            capital_currency=limits.currency, fx_rates=limits.fx_rates)
    orders = validate_orders(targets, run_key, taken, sanity, now)
    current = Counter(positions)
    current.update(working)
    breaches = check(orders, limits or RiskLimits(), current, prices)
    return Plan(run_key, tuple(orders), tuple(breaches), dict(current), target_positions, prices)
