"""Amending each order type and instrument on the mock broker, then filling or cancelling it: a stock LMT
(limit and quantity), a STP whose stop is moved so that a price it would not have reached triggers it, a
STP LMT (stop and limit), a LOC before the close auction, an ES future (x50), EUR.USD and a SPY option.
The same cases run through the simulated gateway in tests/gateway/test_gateway_amend_types.py.

Each case's price move fills the amended order and would not have filled the planned one, so a fill shows
the broker works the new terms."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
import pytest

import kit
from kit.brokers.mock import MockBroker, mock_contracts
from kit.model import Execution


@dataclass(frozen=True)
class Case:
    """One order: its target row, the amendment (kit.amend's keywords), and the move that fills it (a
    price, or the close auction's price)."""

    name: str
    row: dict[str, Any]
    changes: dict[str, float]
    move: float
    auction: bool = False
    multiplier: float = 1.0
    planned: dict[str, float] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return self.row["symbol"]


def case(name: str, row: dict[str, Any], changes: dict[str, float], move: float, **options: Any) -> Case:
    names = {"limit": "limit_price", "stop": "stop_price", "quantity": "quantity"}
    planned = {names[k]: float(row[names[k]]) for k in changes}
    return Case(name, row, changes, move, planned=planned, **options)


# Prices as the simulated gateway starts: AAPL 190, MSFT 420, IBM 185, JPM 200, ES 6000, EUR.USD 1.085,
# SPY options 12.
CASES = (
    case("stock LMT", {"symbol": "AAPL", "side": "BUY", "quantity": 10, "order_type": "LMT",
                       "limit_price": 185.0}, {"limit": 186.0, "quantity": 20}, 185.5),
    case("STP", {"symbol": "MSFT", "side": "SELL", "quantity": 10, "order_type": "STP", "stop_price": 400.0},
         {"stop": 415.0}, 414.0),
    case("STP LMT", {"symbol": "IBM", "side": "SELL", "quantity": 10, "order_type": "STP LMT",
                     "stop_price": 175.0, "limit_price": 174.0}, {"stop": 183.0, "limit": 182.5}, 182.9),
    case("LOC", {"symbol": "JPM", "side": "BUY", "quantity": 10, "order_type": "LOC", "limit_price": 195.0},
         {"limit": 201.0}, 200.0, auction=True),
    case("ES LMT", {"symbol": "ES", "sec_type": "FUT", "expiry": "front", "side": "BUY", "quantity": 1,
                    "order_type": "LMT", "limit_price": 5900.0}, {"limit": 5950.0}, 5940.0, multiplier=50.0),
    case("EUR.USD LMT", {"symbol": "EUR.USD", "sec_type": "CASH", "side": "BUY", "quantity": 30_000,
                         "order_type": "LMT", "limit_price": 1.07}, {"limit": 1.08}, 1.079),
    case("option LMT", {"symbol": "SPY", "sec_type": "OPT", "strike": 450.0, "right": "C", "side": "BUY",
                        "quantity": 3, "order_type": "LMT", "limit_price": 11.0}, {"limit": 11.5}, 11.4,
         multiplier=100.0),
)
IDS = [c.name for c in CASES]


def targets(cases: tuple[Case, ...], option_expiry: str) -> pd.DataFrame:
    """One frame of every case, each row with its decision price (the planned limit or stop)."""
    rows = []
    for c in cases:
        row = {**c.row, "decision_price": c.row.get("limit_price", c.row.get("stop_price"))}
        if row.get("sec_type") == "OPT":
            row["expiry"] = option_expiry
        rows.append(row)
    return pd.DataFrame(rows)


def check_row(c: Case, row: pd.Series, status: str) -> None:
    """The order's row shows the working terms, its original_* the planned ones."""
    assert row["status"] == status, (c.name, row["status"])
    for name, planned in c.planned.items():
        amended = c.changes[{"limit_price": "limit", "stop_price": "stop", "quantity": "quantity"}[name]]
        assert (row[name], row[f"original_{name}"]) == (amended, planned), (c.name, name)
    assert row["amendments"] == 1
    if status == "FILLED":
        assert row["filled_quantity"] == row["quantity"]


def amend_kinds(db, run_key: str) -> dict[str, list[str]]:
    """The amendment events that took effect, per order (a listing's replay is recorded as a duplicate)."""
    ledger = kit.ledger(db)
    frame = ledger.events(ledger.resolve_run(run_key)).sort_values("seq")
    frame = frame[frame["kind"].str.startswith("amend_")]
    kinds: dict[str, list[str]] = {}
    for coid, kind, detail in zip(frame["client_order_id"], frame["kind"], frame["detail"], strict=True):
        if json.loads(detail).get("effect") != "duplicate":
            kinds.setdefault(coid, []).append(kind)
    return kinds


def check_tca(db, run_key: str, c: Case, row: pd.Series, fills: pd.DataFrame) -> None:
    """TCA's money is the fills times the contract's multiplier, against the decision price."""
    costs = kit.tca(run_key, db=db).orders.loc[row["client_order_id"]]
    money = math.fsum(q * (p - row["decision_price"]) for q, p in zip(fills["quantity"], fills["price"],
                                                                     strict=True))
    sign = 1 if c.row["side"] == "BUY" else -1
    assert (1.0 if pd.isna(row["multiplier"]) else row["multiplier"]) == c.multiplier  # stocks, FX: empty
    assert costs["execution_cost"] == pytest.approx(sign * money * c.multiplier)


def within_limit(c: Case, row: pd.Series, prices: pd.Series) -> bool:
    if c.row["order_type"] == "STP":
        return True
    limit = row["limit_price"]
    return bool((prices <= limit).all() if c.row["side"] == "BUY" else (prices >= limit).all())


# ---- the mock broker ---------------------------------------------------------------------------------------
SPY_EXPIRY = next(c.expiry for c in mock_contracts(date.today()) if c.sec_type == "OPT")
MOCK_KEYS = {"ES": "ES", "SPY": f"SPY {SPY_EXPIRY} 450 C"}  # the mock's price keys (kit.instruments keys)
PRICES = {"AAPL": 190.0, "MSFT": 420.0, "IBM": 185.0, "JPM": 200.0, "ES": 6000.0, "EUR.USD": 1.085,
          MOCK_KEYS["SPY"]: 12.0}


def execute(broker: MockBroker, db, run_key: str, timeout: float = 0.3) -> kit.Run:
    return kit.execute(targets(CASES, SPY_EXPIRY), broker=broker, run_key=run_key, db=db, timeout=timeout,
                       on_timeout="leave", progress=False)


@pytest.fixture(scope="module")
def amended(tmp_path_factory):
    """Every case placed, amended and then filled (run "fill") or cancelled (run "cancel") on one mock."""
    db = tmp_path_factory.mktemp("amend-types") / "kit.duckdb"
    broker = MockBroker(PRICES)
    outcomes = {}
    for run_key in ("fill", "cancel"):
        placed = execute(broker, db, run_key)
        assert set(placed.orders["status"]) == {"SUBMITTED"}, placed.notes
        for c in CASES:
            outcomes[run_key, c.name] = kit.amend(run_key, c.symbol, broker=broker, db=db, **c.changes)
    kit.cancel("cancel", broker=broker, db=db)
    for c in CASES:
        if c.auction:
            broker.set_close(c.symbol, c.move)
        else:
            broker.set_price(MOCK_KEYS.get(c.symbol, c.symbol), c.move)
    followed = execute(broker, db, "fill", timeout=5)
    return db, broker, outcomes, followed


def recorded_and_told(ledger, run_id: str, broker: MockBroker, coid: str) -> tuple[pd.DataFrame, dict]:
    """The order's fills in the ledger, and the executions the mock told: the same, exec id by exec id."""
    fills = ledger.fills(run_id)
    fills = fills[fills["client_order_id"] == coid]
    told = {e.fill.exec_id: (e.fill.quantity, e.fill.price) for e in broker.orders[coid].sent
            if isinstance(e, Execution)}
    assert dict(zip(fills["exec_id"], zip(fills["quantity"], fills["price"], strict=True), strict=True)) \
        == told
    return fills, told


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_each_type_and_instrument_is_amended_then_filled_or_cancelled_on_the_mock(amended, c, end):
    db, broker, outcomes, followed = amended
    assert outcomes[end, c.name].outcome == "accepted", outcomes[end, c.name].reason
    if end == "fill":
        assert followed.status == "done", followed.notes
    ledger = kit.ledger(db)
    run_id = ledger.resolve_run(end)
    [row] = [r for _, r in ledger.orders(run_id).iterrows() if r["symbol"] == c.symbol]
    coid = row["client_order_id"]
    check_row(c, row, "FILLED" if end == "fill" else "CANCELLED")
    assert broker.submitted.count(coid) == 1  # amended at the broker, never sent again
    assert amend_kinds(db, end)[coid] == ["amend_requested", "amend_accepted"]
    working = broker.orders[coid].intent
    for name in c.planned:
        assert getattr(working, name) == row[name]  # the broker works what the ledger shows
    fills, told = recorded_and_told(ledger, run_id, broker, coid)
    if end == "cancel":
        assert told == {}
        return
    assert fills["quantity"].sum() == row["quantity"] and within_limit(c, row, fills["price"])
    check_tca(db, end, c, row, fills)
    detail = json.loads(kit.ledger(db).events(run_id).query("kind == 'amend_accepted' and "
                                                            f"client_order_id == '{coid}'")["detail"].iloc[0])
    assert detail["changes"] == {name: row[name] for name in c.planned}
