"""Validation of target order frames: every kind of malformed frame is answered with a clear error naming the
bad rows, and zero orders are sent or written."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kit
from kit.brokers.mock import MockBroker
from kit.errors import ValidationError
from kit.model import Side
from kit.validate import Sanity, validate_orders


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


GOOD = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [100, 50]}


def good(**changes) -> pd.DataFrame:
    """The good frame with some columns replaced or added."""
    return pd.DataFrame({**GOOD, **changes})


# (id, targets, a fragment the message must contain)
MALFORMED = [
    ("not-a-frame", {"symbol": ["AAPL"], "quantity": [1]}, "must be a pandas DataFrame, not dict"),
    ("list-of-dicts", [{"symbol": "AAPL", "quantity": 1}], "must be a pandas DataFrame, not list"),
    ("unknown-column-with-hint", good(limit_prise=[1.0, 2.0]), "unknown column 'limit_prise' (did you mean "
                                                               "'limit_price'?)"),
    ("no-symbol-column", frame(quantity=[1]), "required column 'symbol' is missing"),
    ("no-quantity-column", frame(symbol=["AAPL"], qty=[1]), "required column 'quantity' is missing"),
    ("empty-frame-without-columns", pd.DataFrame(), "required column 'symbol' is missing"),
    ("duplicate-column-names", pd.DataFrame([["AAPL", 1, 2]], columns=["symbol", "quantity", "quantity"]),
     "duplicate column names"),
    ("missing-symbol", good(symbol=["AAPL", None]), "row 1: symbol is missing"),
    ("blank-symbol", good(symbol=["AAPL", "  "]), "row 1: symbol is missing"),
    ("symbol-not-text", good(symbol=["AAPL", 7]), "row 1: symbol 7 is not text"),
    ("lower-case-symbol", good(symbol=["AAPL", "msft"]), "symbol 'msft' is not an upper-case ticker"),
    ("padded-symbol", good(symbol=["AAPL", "MSFT "]), "row 1 (MSFT ): symbol 'MSFT ' has spaces around it"),
    ("nan-quantity", good(quantity=[100, math.nan]), "row 1 (MSFT): quantity is missing"),
    ("nullable-missing-quantity", good(quantity=pd.array([100, None], dtype="Int64")),
     "row 1 (MSFT): quantity is missing"),
    ("infinite-quantity", good(quantity=[100, np.inf]), "quantity inf is not a finite number"),
    ("text-quantity", good(quantity=["100", "50"]), "quantity '100' is not a finite number"),
    ("boolean-quantity", good(quantity=[True, 50]), "quantity True is not a finite number"),
    ("fractional-quantity", good(quantity=[100, 0.5]), "quantity 0.5 is not a whole number of shares"),
    ("zero-signed-quantity", frame(symbol=["AAPL"], quantity=[0]), "row 0 (AAPL): quantity is zero"),
    ("negative-quantity-with-side", good(quantity=[100, -50]), "quantity -50 must be positive when side"),
    ("zero-quantity-with-side", good(quantity=[100, 0]), "quantity 0 must be positive when side"),
    ("unknown-side", good(side=["BUY", "HOLD"]), "side 'HOLD' is not one of BUY, SELL"),
    ("unknown-order-type", good(order_type=["MKT", "FOK"]), "order_type 'FOK' is not one of MKT, LMT"),
    ("lmt-without-price", good(order_type=["LMT", "MKT"]), "row 0 (AAPL): LMT order without limit_price"),
    ("lmt-with-negative-price", good(order_type=["LMT", "LMT"], limit_price=[190.0, -1.0]),
     "limit_price -1.0 must be a positive number"),
    ("lmt-with-text-price", good(order_type=["LMT", "LMT"], limit_price=[190.0, "410"]),
     "limit_price '410' must be a positive number"),
    ("limit-price-on-mkt", good(limit_price=[190.0, None]), "limit_price 190.0 given for a MKT order"),
    ("unknown-tif", good(tif=["DAY", "FOK"]), "tif 'FOK' is not one of DAY, GTC, IOC"),
    ("unsupported-sec-type", good(sec_type=["STK", "WAR"]),
     "sec_type 'WAR' is not one of STK, FUT, CASH, OPT"),
    ("bad-currency", good(currency=["USD", "usd"]), "currency 'usd' is not valid"),
    ("bad-exchange", good(exchange=["SMART", "not an exchange"]), "exchange 'not an exchange' is not valid"),
    ("negative-decision-price", good(decision_price=[190.0, -3.0]), "decision_price -3.0 must be a positive"),
    ("duplicate-rows", pd.DataFrame({"symbol": ["AAPL", "AAPL"], "quantity": [10, 10]}),
     "row 1 (AAPL): duplicates row 0 (AAPL)"),
    ("buy-and-sell-one-symbol", pd.DataFrame({"symbol": ["AAPL", "AAPL"], "quantity": [10, -5]}),
     "row 1 (AAPL): conflicts with row 0 (AAPL): both buys and sells AAPL"),
]


@pytest.mark.parametrize("targets,fragment", [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_frame_is_refused_with_a_clear_error_and_nothing_is_sent(targets, fragment, db):
    with pytest.raises(ValidationError) as plan_error:
        kit.plan(targets, run_key="k")
    message = str(plan_error.value)
    assert fragment in message
    assert "nothing was sent" in message
    assert plan_error.value.problems

    broker = MockBroker(prices={"AAPL": 190.0, "MSFT": 410.0})
    with pytest.raises(ValidationError):
        kit.execute(targets, broker=broker, run_key="k", db=db, timeout=1)
    assert broker.submitted == []
    assert not db.exists()  # nothing written: not even an empty ledger


def test_there_are_at_least_15_kinds_of_malformed_frames():
    assert len({case[0] for case in MALFORMED}) >= 15


def test_every_bad_row_is_named_with_its_reason_in_one_error():
    targets = pd.DataFrame(
        {"symbol": ["AAPL", "msft", "TTE", "IBM"], "quantity": [100, 10, math.nan, 5],
         "order_type": ["MKT", "MKT", "MKT", "LMT"]},
        index=["a", "b", "c", "d"],
    )
    with pytest.raises(ValidationError) as error:
        kit.plan(targets, run_key="k")
    rows = [row for row, _ in error.value.problems]
    assert rows == ["row 'b' (msft)", "row 'c' (TTE)", "row 'd' (IBM)"]
    assert str(error.value).startswith("3 problem(s) in the targets frame; nothing was sent:")


def test_a_row_with_several_problems_lists_each_one():
    targets = pd.DataFrame({"symbol": ["AAPL"], "side": ["HOLD"], "quantity": [1.5], "tif": ["FOK"]})
    with pytest.raises(ValidationError) as error:
        kit.plan(targets, run_key="k")
    reasons = [reason for _, reason in error.value.problems]
    assert len(reasons) == 3
    assert any("side 'HOLD'" in r for r in reasons) and any("1.5" in r for r in reasons)
    assert any("tif 'FOK'" in r for r in reasons)


def test_a_good_frame_becomes_orders_with_defaults_and_ids():
    targets = pd.DataFrame({
        "symbol": ["AAPL", "TTE", "AAPL"], "side": ["buy", "SELL", "BUY"], "quantity": [100, 20.0, 5],
        "order_type": ["MKT", "LMT", None], "limit_price": [None, 61.5, None],
        "currency": [None, "EUR", None], "decision_price": [190.0, None, None],
    })
    plan = kit.plan(targets, run_key="k")
    first, tte, second = plan.intents
    assert [o.client_order_id for o in plan.intents] == ["k-AAPL-BUY", "k-TTE-SELL", "k-AAPL-BUY-2"]
    assert (first.side, first.quantity, first.order_type, first.tif) == (Side.BUY, 100.0, "MKT", "DAY")
    assert (first.sec_type, first.exchange, first.currency, first.decision_price) == ("STK", "SMART", "USD",
                                                                                     190.0)
    assert (tte.order_type, tte.limit_price, tte.currency) == ("LMT", 61.5, "EUR")
    assert second.order_type == "MKT" and second.limit_price is None


def test_a_signed_quantity_without_side_gives_the_side():
    plan = kit.plan(pd.DataFrame({"symbol": ["AAPL", "MSFT"], "quantity": [100, -40]}), run_key="k")
    assert [(o.side, o.quantity) for o in plan.intents] == [(Side.BUY, 100.0), (Side.SELL, 40.0)]


def test_numpy_and_nullable_integer_quantities_are_numbers():
    targets = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "quantity": pd.array([3, -4], dtype="Int64")})
    assert [o.quantity for o in kit.plan(targets, run_key="k").intents] == [3.0, 4.0]


def test_an_empty_frame_with_the_columns_is_an_empty_plan():
    empty = pd.DataFrame({"symbol": pd.Series([], dtype=str), "quantity": pd.Series([], dtype=float)})
    plan = kit.plan(empty, run_key="k")
    assert len(plan) == 0


def test_a_plan_renders_html_and_its_hash_covers_the_payload():
    plan = kit.plan(pd.DataFrame(GOOD), run_key="k")
    html = plan._repr_html_()
    assert "<table" in html and "k-AAPL-BUY" in html and "k-MSFT-SELL" in html and plan.hash in html
    assert "orders=2" in repr(plan)
    assert kit.plan(pd.DataFrame(GOOD), run_key="k").hash == plan.hash
    assert kit.plan(good(quantity=[100, 51]), run_key="k").hash != plan.hash
    assert kit.plan(pd.DataFrame(GOOD), run_key="k2").hash != plan.hash


def test_a_plan_without_run_key_gets_a_fresh_one():
    first = kit.plan(pd.DataFrame(GOOD))
    second = kit.plan(pd.DataFrame(GOOD))
    assert first.run_key != second.run_key
    assert first.intents[0].client_order_id.startswith(first.run_key + "-AAPL-BUY")


# ---- property: one corrupted cell is always found, and named by its row ---------------------------------

CORRUPTIONS = {
    "symbol": [None, "", "aapl", 3.0],
    "quantity": [math.nan, 0.25, "7", -3, True, math.inf],
    "side": ["BOT", 1],
    "order_type": ["STOP"],
    "tif": ["GTD"],
    "currency": ["EURO"],
    "decision_price": [-1.0, 0.0],
}
tickers = st.lists(st.from_regex(r"\A[A-Z]{1,5}\Z"), min_size=1, max_size=8, unique=True)


@settings(max_examples=100, deadline=None)
@given(tickers, st.data())
def test_one_corrupted_cell_is_named_by_its_row(symbols, data):
    n = len(symbols)
    rows = {
        "symbol": list(symbols),
        "side": data.draw(st.lists(st.sampled_from(["BUY", "SELL"]), min_size=n, max_size=n)),
        "quantity": data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n)),
        "order_type": ["MKT"] * n, "tif": ["DAY"] * n, "currency": ["USD"] * n, "decision_price": [10.0] * n,
    }
    assert len(validate_orders(pd.DataFrame(rows), "k")) == n  # the clean frame is fine
    column = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    bad = data.draw(st.sampled_from(CORRUPTIONS[column]))
    position = data.draw(st.integers(0, n - 1))
    values = list(rows[column])
    values[position] = bad
    corrupted = pd.DataFrame({**rows, column: pd.Series(values, dtype=object)})
    with pytest.raises(ValidationError) as error:
        validate_orders(corrupted, "k")
    named = {row for row, _ in error.value.problems}
    assert len(named) == 1 and named.pop().startswith(f"row {position}")


# ---- property: a quantity is taken exactly, or refused with its reason; never rounded, never a crash -----

EXACT_LIMITS = Sanity(max_quantity=2**53)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-2**70, 2**70), st.integers(-20_000_000, 20_000_000),
                 st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 10**30, 2**63 + 5])))
def test_a_whole_quantity_is_taken_exactly_up_to_the_limit_and_refused_above_it(quantity):
    frame = pd.DataFrame({"symbol": ["AAPL"], "quantity": pd.Series([quantity], dtype=object)})
    for limits in (Sanity(), EXACT_LIMITS):
        if quantity == 0:
            with pytest.raises(ValidationError, match="quantity is zero"):
                validate_orders(frame, "k", sanity=limits)
        elif abs(quantity) <= limits.max_quantity:
            (order,) = validate_orders(frame, "k", sanity=limits)
            assert int(order.quantity) == abs(quantity)  # not 2**53 for 2**53 + 1
            assert order.side == (Side.BUY if quantity > 0 else Side.SELL)
        else:
            with pytest.raises(ValidationError, match=rf"quantity {quantity} is above (2\*\*53|the sanity)"):
                validate_orders(frame, "k", sanity=limits)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_quantity_is_a_whole_bounded_order_or_a_named_refusal(quantity):
    frame = pd.DataFrame({"symbol": ["AAPL"], "quantity": [quantity]})
    try:
        (order,) = validate_orders(frame, "k")
    except ValidationError as error:
        assert [row for row, _ in error.problems] == ["row 0 (AAPL)"]
        return
    assert order.quantity == abs(quantity) == int(order.quantity) and 0 < order.quantity <= 10_000_000


# ---- property: the column-wise check of a clean frame is the row-by-row check, to the value ----------

_CELLS = {
    "symbol": ["AAPL", "MSFT", "BRK.B", " AAPL", "aapl", "AAPL\n", "", None],
    "side": ["BUY", "SELL", " buy", "sell ", "HOLD", None],
    "order_type": ["MKT", "LMT", "lmt ", "STP", None],
    "limit_price": [10.0, 250.5, -1.0, 2e9, math.nan],
    "tif": ["DAY", "gtc", "IOC", "FOK", None],
    "exchange": ["SMART", "NYSE", "smart", "NYSE\n", None],
    "currency": ["USD", "EUR", "usd", None],
    "primary_exchange": ["", "NASDAQ", "ARCA ", None],
    "decision_price": [10.0, 99.5, 0.0, math.inf, math.nan],
}
_INT_QUANTITIES = [1, 100, -100, 0, 10_000_000, 10_000_001, -(2**53) - 1]
_FLOAT_QUANTITIES = [1.0, 100.0, -100.0, 0.0, 1.5, math.nan, math.inf, 1e7, 1e8]


def _outcome(frame: pd.DataFrame) -> object:
    try:
        return validate_orders(frame, "k")
    except ValidationError as error:
        return error.problems


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_frame_checked_by_columns_gives_the_orders_and_errors_of_the_row_by_row_check(data):
    n = data.draw(st.integers(1, 6))
    skewed = data.draw(st.booleans())  # mostly valid cells, or anything: both paths must be exercised
    frame = {}
    for column, cells in _CELLS.items():
        if column != "symbol" and not data.draw(st.booleans()):
            continue
        pool = cells[:2] if skewed else cells
        frame[column] = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    if "symbol" in frame and skewed:
        frame["symbol"] = data.draw(st.lists(st.sampled_from(["AAPL", "MSFT", "IBM", "TSLA"]),
                                             min_size=n, max_size=n, unique=n <= 4)) if n <= 4 \
            else frame["symbol"]
    quantities = _INT_QUANTITIES if data.draw(st.booleans()) else _FLOAT_QUANTITIES
    frame["quantity"] = data.draw(st.lists(st.sampled_from(quantities[:3] if skewed else quantities),
                                           min_size=n, max_size=n))
    targets = pd.DataFrame(frame, index=data.draw(st.sampled_from([None, list(range(10, 10 + n))])))
    columnwise = _outcome(targets)
    with mock.patch("kit.validate._clean_columns", return_value=None):
        assert _outcome(targets) == columnwise
