"""Qualifying a targets frame's futures, FX and options before planning: the shell between a frame and a
broker's contract table (the mock's, or IB's contract details through its cache).

Planning needs what only the broker knows: which month "front" is today, a contract's multiplier (risk
limits and target positions are money), its conId. Each row that names a FUT, CASH or OPT without a con_id
is looked up once; the frame comes back with expiry, multiplier, con_id and local_symbol filled in, or a
ValidationError names every row whose contract is unknown or ambiguous, with the broker's candidates.
Nothing is sent either way. Rows too malformed to look up are left for validation to name.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from kit.brokers.base import Broker
from kit.errors import ValidationError
from kit.instruments import DERIVATIVES, Contract, Spec, expiry_problem
from kit.validate import _row_name, finite_number, given_sec_type, is_missing

QUALIFIED = ("CASH", *DERIVATIVES)


def _given(row: dict[str, Any], name: str, default: Any) -> Any:
    value = row.get(name)
    return default if is_missing(value) or value == "" else value


def row_spec(row: dict[str, Any]) -> Spec | None:
    """What a row asks the broker for, or None when it needs no lookup or is too malformed for one."""
    sec_type = given_sec_type(row.get("sec_type"))
    symbol = row.get("symbol")
    if sec_type not in QUALIFIED or not isinstance(symbol, str) or not is_missing(row.get("con_id")):
        return None
    expiry = _given(row, "expiry", "")
    expiry = expiry.strip() if isinstance(expiry, str) else expiry
    if sec_type in DERIVATIVES and (not expiry or expiry_problem(expiry)):
        return None
    right = _given(row, "right", "")
    right = {"CALL": "C", "PUT": "P"}.get(str(right).strip().upper(), str(right).strip().upper())
    strike = finite_number(_given(row, "strike", None))
    multiplier = finite_number(_given(row, "multiplier", None))
    currency = _given(row, "currency", "")
    exchange = _given(row, "exchange", "SMART")
    if sec_type == "CASH":
        currency = symbol.partition(".")[2] or currency
        exchange = "IDEALPRO" if exchange == "SMART" else exchange
    return Spec(symbol, sec_type, exchange, currency if isinstance(currency, str) else "",
                _given(row, "primary_exchange", ""), expiry if sec_type in DERIVATIVES else "",
                strike if sec_type == "OPT" else None, right if sec_type == "OPT" else "",
                multiplier if sec_type in DERIVATIVES else None)


async def qualify_frame(broker: Broker, frame: pd.DataFrame, today: date) -> pd.DataFrame:
    """The frame with each FUT, CASH and OPT row's contract filled in (see the module docstring)."""
    if not _may_qualify(frame):
        return frame
    records = frame.to_dict("records")
    specs = [row_spec(row) for row in records]
    wanted = list(dict.fromkeys(spec for spec in specs if spec is not None))
    if not wanted:
        return frame
    found = await broker.qualify(wanted, today)
    if not found:  # a broker without a contract table: validation and the broker judge the rows as given
        return frame
    problems: list[tuple[str | None, str]] = []
    filled = frame.copy()
    for column in ("expiry", "multiplier", "con_id", "local_symbol", "exchange"):
        if column not in filled.columns:
            filled[column] = None
        filled[column] = filled[column].astype(object)
    for position, (label, row, spec) in enumerate(zip(frame.index, records, specs, strict=True)):
        if spec is None:
            continue
        contract = found.get(spec, f"the broker did not answer for {spec.key}")
        if isinstance(contract, str):
            problems.append((_row_name(label, position, row.get("symbol")), contract))
            continue
        _fill(filled, position, contract)
    if problems:
        raise ValidationError(problems)
    return filled


def _may_qualify(frame: pd.DataFrame) -> bool:
    """Whether some row may name a FUT, CASH or OPT: a basket of stocks (no sec_type, or only STK and gaps)
    is judged on its distinct sec_types, not read row by row."""
    if "sec_type" not in frame.columns:
        return False
    try:
        kinds = pd.unique(frame["sec_type"].astype(object))
    except TypeError:  # an unhashable value: the rows say for themselves
        return True
    return any(given_sec_type(kind) in QUALIFIED for kind in kinds)


def _fill(frame: pd.DataFrame, position: int, contract: Contract) -> None:
    at = frame.index[position]
    if contract.sec_type in DERIVATIVES:
        frame.at[at, "expiry"] = contract.expiry
        frame.at[at, "multiplier"] = contract.multiplier
    if (contract.sec_type == "FUT" and frame.at[at, "exchange"] in (None, "SMART")) or \
            is_missing(frame.at[at, "exchange"]):  # futures trade on their exchange, not SMART
        frame.at[at, "exchange"] = contract.exchange
    frame.at[at, "con_id"] = contract.con_id
    frame.at[at, "local_symbol"] = contract.local_symbol
