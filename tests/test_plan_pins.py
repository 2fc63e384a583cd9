"""What planning hands on, pinned to the values the code gave before it was made faster (commit 902b029):
a plan's hash (stored in ledgers and given to approve=: a changed value breaks resumes and approvals) and
its intents, field by field with each value's type. A change here is a change users see."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.model import OrderIntent, Side, intents_of
from kit.planner import _reprs_of_rows, make_plan
from kit.risk import RiskLimits

NOW = datetime(2026, 12, 2, 9, 0)


def basket(rows: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """bench/big_basket.py's frame: one symbol per row, MKT BUY 100, with its prices."""
    symbols = [f"S{i:06d}" for i in range(rows)]
    return (pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": 100}),
            {s: 10.0 + (i % 90) for i, s in enumerate(symbols)})


def mixed() -> pd.DataFrame:
    """Stocks (LMT, MKT, a repeated symbol and side, signed quantities), a future, an option, an FX pair."""
    return pd.DataFrame({
        "symbol": ["AAPL", "MSFT", "AAPL", "TSLA", "ES", "SPY", "EUR.USD", "BRK.B"],
        "side": ["BUY", "sell", "BUY", "SELL", "BUY", "BUY", "SELL", None],
        "quantity": [100, 20.0, 5, 7, 2, 3, 30_000, -4],
        "order_type": ["LMT", "MKT", None, "LMT", "MKT", "LMT", "MKT", "MKT"],
        "limit_price": [191.5, None, None, 260.0, None, 4.25, None, None],
        "tif": ["DAY", "GTC", None, "IOC", "DAY", "DAY", "DAY", None],
        "sec_type": ["STK", None, "STK", "stk", "FUT", "OPT", "CASH", None],
        "exchange": ["SMART", "SMART", None, "NYSE", "CME", "SMART", None, None],
        "currency": [None, "USD", None, "USD", "USD", "USD", None, None],
        "decision_price": [190.0, None, None, None, 6000.0, None, 1.08, None],
        "expiry": [None, None, None, None, "202612", "20261218", None, None],
        "strike": [None, None, None, None, None, 450.0, None, None],
        "right": [None, None, None, None, None, "C", None, None],
        "multiplier": [None, None, None, None, 50.0, 100.0, None, None],
    })


def order_types() -> pd.DataFrame:
    return pd.DataFrame({
        "symbol": ["AAPL", "MSFT", "IBM", "TSLA", "NVDA"],
        "side": ["BUY", "SELL", "BUY", "SELL", "BUY"],
        "quantity": [10, 20, 30, 40, 50],
        "order_type": ["STP", "TRAIL", "LMT", "MKT", "STP LMT"],
        "stop_price": [180.0, None, None, None, 95.0],
        "limit_price": [None, None, 150.0, None, 96.0],
        "trail_percent": [None, 1.5, None, None, None],
        "tif": ["DAY", "GTC", "GTD", "DAY", "DAY"],
        "good_till": [None, None, "2026-12-03 15:00", None, None],
        "outside_rth": [False, True, False, False, False],
        "algo": ["", "", "", "Adaptive", ""],
        "algo_params": [None, None, None, [("adaptivePriority", "Normal")], None],
    })


PRICES = {"AAPL": 190.0, "MSFT": 410.0, "TSLA": 250.0, "ES 202612": 6010.0, "EUR.USD": 1.08,
          "IBM": 150.0, "NVDA": 100.0}


def _plans():
    targets, prices = basket(1_000)
    yield "basket", make_plan(targets, "bench-big-plan", prices=prices)
    yield "basket, long run key", make_plan(targets.iloc[:50], "k" * 70, prices=prices)
    yield "mixed", make_plan(mixed(), "pin-1", prices=PRICES, now=NOW,
                             limits=RiskLimits(max_order_notional=15_000, collar=0.05, fx_rates={"EUR": 1.1}))
    yield "order types", make_plan(order_types(), "pin-2", prices=PRICES, now=NOW,
                                   limits=RiskLimits(max_orders=3, max_position=35))
    small, small_prices = basket(200)
    small_prices["S000007"] = float("nan")  # a gap in a prices Series
    yield "limits", make_plan(small, "pin-4", prices=small_prices, limits=RiskLimits(
        max_gross_notional=900_000, max_orders=150, allowed_symbols=frozenset(small.symbol[1:]),
        max_order_quantity=100, price_required=True))
    positions = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA"], "target_quantity": [150, -20, 0]})
    yield "positions", make_plan(positions, "pin-3", positions={"AAPL": 100.0, "TSLA": 5.0},
                                 working={"MSFT": 10.0}, prices=PRICES, taken={("AAPL", "BUY"): 1})


def _intents_digest(intents: tuple[OrderIntent, ...]) -> str:
    fields = OrderIntent.__slots__
    text = repr([[(name, type(getattr(o, name)).__name__, getattr(o, name)) for name in fields]
                 for o in intents])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


PINNED = {  # name: (Plan.hash, digest of the intents), as commit 902b029 computed them
    'basket': ('c4e68a7551396a82', '94ad7e36482f16a9'),
    'basket, long run key': ('ec2772e1b2dad8db', '2b16cbc438541a96'),
    'mixed': ('e569b43734c63f48', 'db5cac048255f2fd'),
    'order types': ('97388aaa7c81313d', '2e594de17b693f18'),
    'limits': ('0f1665243e3f8325', 'c9602180c87032fa'),
    'positions': ('1249639f4ce5d19a', '795965806e5d4eae'),
}


@pytest.mark.parametrize("name, plan", list(_plans()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_plans_hash_and_intents_are_what_they_were(name, plan):
    assert (plan.hash, _intents_digest(plan.intents)) == PINNED[name]


def test_a_plan_hashed_in_parts_has_the_hash_of_the_whole(monkeypatch):
    monkeypatch.setattr("kit.planner._ROWS_HASHED_AT_ONCE", 7)  # parts of 7 orders, the last one shorter
    for name, plan in _plans():
        assert plan.hash == PINNED[name][0], name


@pytest.mark.parametrize("name, plan", list(_plans()), ids=lambda v: v if isinstance(v, str) else "")
def test_intents_built_a_column_at_a_time_are_those_the_constructor_builds(name, plan):
    """kit.model.intents_of sets OrderIntent's slots without its __init__: it must give what the
    constructor gives, and OrderIntent must stay a dataclass with nothing in __init__ to skip."""
    assert not hasattr(OrderIntent, "__post_init__")
    fields = OrderIntent.__slots__
    columns = {name: [getattr(o, name) for o in plan.intents] for name in fields}
    required = {name: columns[name] for name in ("client_order_id", "symbol", "side", "quantity")}
    for part in (columns, required):  # every field, or only those without a default
        built = [OrderIntent(**dict(zip(part, row, strict=True))) for row in zip(*part.values(), strict=True)]
        assert _intents_digest(tuple(intents_of(part))) == _intents_digest(tuple(built))


def test_intents_of_refuses_columns_it_cannot_build_from():
    with pytest.raises(ValueError):
        intents_of({"client_order_id": ["k-A-BUY"], "symbol": ["A"], "side": [Side.BUY]})  # no quantity
    with pytest.raises(ValueError):
        intents_of({"client_order_id": ["k-A-BUY"], "symbol": ["A", "B"], "side": [Side.BUY],
                    "quantity": [1.0]})


# ---- property: the hash's text built a column at a time is the repr of every row ------------------------
_VALUES = [0.0, -0.0, 1, 1.0, True, False, 0, math.nan, math.inf, None, "", "a", "50%", "%s", "'q'", Side.BUY,
           Side.SELL, "BUY", (), ("max_orders: more than 1",), (("tag", "1"),), datetime(2026, 12, 3, 15, 0),
           100.0]
# Values equal to each other with different reprs: a column of them is not one value throughout.
_EQUALS = [[0.0, -0.0, 0, False], [1, 1.0, True], ["BUY", Side.BUY], [(0.0,), (-0.0,)], [100.0, 100]]


def _column(n: int) -> st.SearchStrategy[list]:
    return st.one_of(st.lists(st.sampled_from(_VALUES), min_size=n, max_size=n),
                     st.sampled_from(_VALUES).map(lambda v: [v] * n),
                     st.sampled_from(_EQUALS).flatmap(lambda equal: st.lists(st.sampled_from(equal),
                                                                             min_size=n, max_size=n)))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.lists(_column(n), min_size=2, max_size=6)))
def test_a_plans_rows_are_written_as_their_reprs(columns):
    assert _reprs_of_rows(columns) == "".join(repr(row) for row in zip(*columns, strict=True))
