"""Bad numbers and keys from a notebook: absurd, inexact or non-finite quantities, prices, capitals, weights
and run keys are each refused with a message naming the row or key and the reason, before anything is sent
or written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import kit
from kit.brokers.mock import MockBroker, reference_prices
from kit.errors import ValidationError
from kit.planner import make_plan
from kit.validate import Sanity, validate_orders

PRICES = {"AAPL": 190.0, "MSFT": 410.0}


def orders(quantity=(100, 50), **columns) -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"],
                         "quantity": pd.Series(list(quantity), dtype=object), **columns})


def weights(*values) -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["AAPL", "MSFT"][:len(values)], "target_weight": list(values)})


def positions(*values) -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["AAPL", "MSFT"][:len(values)],
                         "target_quantity": pd.Series(list(values), dtype=object)})


# (id, targets, keyword arguments of kit.execute, the row or key named, a fragment of its reason)
CASES = [
    ("quantity-10**30", orders((100, 10**30)), {}, "row 1 (MSFT)",
     "quantity 1000000000000000000000000000000 is above 2**53"),
    ("quantity-2**63+5", orders((np.uint64(2**63 + 5), 50)), {}, "row 0 (AAPL)",
     "quantity 9223372036854775813 is above 2**53"),
    ("quantity-2**53+1", orders((2**53 + 1, 50)), {}, "row 0 (AAPL)",
     "quantity 9007199254740993 is above 2**53"),
    ("quantity-1e15", orders((1e15, 50)), {}, "row 0 (AAPL)",
     "quantity 1e+15 is above the sanity limit of 10,000,000 units"),
    ("quantity-over-the-limit", orders((10_000_001, 50)), {}, "row 0 (AAPL)",
     "quantity 10000001 is above the sanity limit"),
    ("signed-quantity-over-the-limit", pd.DataFrame({"symbol": ["AAPL"], "quantity": [-20_000_000]}), {},
     "row 0 (AAPL)", "quantity -20000000 is above the sanity limit"),
    ("quantity-minus-inf", orders((100, -math.inf)), {}, "row 1 (MSFT)",
     "quantity -inf is not a finite number"),
    ("limit-price-inf", orders(order_type=["LMT", "LMT"], limit_price=[190.0, math.inf]), {}, "row 1 (MSFT)",
     "limit_price inf must be a positive number"),
    ("limit-price-1e300", orders(order_type=["LMT", "LMT"], limit_price=[1e300, 410.0]), {}, "row 0 (AAPL)",
     "limit_price 1e+300 is above the sanity limit of 1,000,000,000"),
    ("limit-price-bool", orders(order_type=["LMT", "LMT"], limit_price=[True, 410.0]), {}, "row 0 (AAPL)",
     "limit_price True must be a positive number"),
    ("decision-price-inf", orders(decision_price=[190.0, math.inf]), {}, "row 1 (MSFT)",
     "decision_price inf must be a positive number"),
    ("price-text", orders(), {"prices": {"AAPL": "abc", "MSFT": 410.0}}, "AAPL",
     "price 'abc' must be a positive"),
    ("price-negative", orders(), {"prices": {"AAPL": 190.0, "MSFT": -410.0}}, "MSFT",
     "price -410.0 must be a positive number"),
    ("price-nan", orders(), {"prices": {"AAPL": math.nan, "MSFT": 410.0}}, "AAPL",
     "price nan must be a positive"),
    ("price-inf-series", orders(), {"prices": pd.Series({"AAPL": 190.0, "MSFT": math.inf})}, "MSFT",
     "price inf must be a positive number"),
    ("price-bool", orders(), {"prices": {"AAPL": True, "MSFT": 410.0}}, "AAPL",
     "price True must be a positive"),
    ("price-zero-wide-frame", orders(),
     {"prices": pd.DataFrame({"AAPL": [189.0, 0.0], "MSFT": [410.0, 411.0]})},
     "AAPL", "price 0.0 must be a positive number"),
    ("price-text-long-frame", orders(),
     {"prices": pd.DataFrame({"symbol": ["AAPL", "MSFT"], "price": [190.0, "410,5"]})}, "MSFT",
     "price '410,5' must be a positive number"),
    ("price-absurd", orders(), {"prices": {"AAPL": 190.0, "MSFT": 1e12}}, "MSFT",
     "price 1e+12 is above the sanity limit"),
    ("prices-not-a-mapping", orders(), {"prices": [190.0, 410.0]}, None,
     "prices must be a dict {symbol: price}, a Series or a DataFrame, not list"),
    ("capital-1e300", weights(0.5), {"capital": 1e300, "prices": PRICES}, None,
     "capital 1e+300 is above the sanity limit of 1e+12"),
    ("capital-inf", weights(0.5), {"capital": math.inf, "prices": PRICES}, None,
     "target_weight needs a positive capital, got inf"),
    ("capital-text", weights(0.5), {"capital": "1e5", "prices": PRICES}, None,
     "target_weight needs a positive capital, got '1e5'"),
    ("capital-bool", weights(0.5), {"capital": True, "prices": PRICES}, None,
     "target_weight needs a positive capital, got True"),
    ("weight-inf", weights(0.5, math.inf), {"capital": 1e5, "prices": PRICES}, "row 1 (MSFT)",
     "target_weight inf is not a finite number"),
    ("weight-absurd", weights(50.0), {"capital": 1e5, "prices": PRICES}, "row 0 (AAPL)",
     "target_weight 50 is beyond the sanity limit of \u00b110"),
    ("weight-too-many-shares", weights(1.0), {"capital": 1e11, "prices": {"AAPL": 0.5, "MSFT": 410.0}},
     "row 0 (AAPL)", "the target 200000000000 is above the sanity limit of 10,000,000 units (pass a higher "
                     "max_quantity if you mean it): target_weight 1 of capital 1e+11 at price 0.5"),
    ("target-quantity-2**53+1", positions(2**53 + 1), {}, "row 0 (AAPL)",
     "target_quantity 9007199254740993 is above 2**53"),
    ("target-quantity-over-the-limit", positions(10, -5e7), {}, "row 1 (MSFT)",
     "target_quantity -5e+07 is above the sanity limit"),
    ("lot-size-nan", positions(10), {"lot_size": math.nan}, "lot_size", "lot_size must be a positive number"),
    ("min-notional-negative", positions(10), {"min_notional": -1}, "min_notional",
     "min_notional must be a finite number >= 0, not -1"),
    ("run-key-empty", orders(), {"run_key": ""}, "run_key",
     "an explicit empty key is an error, not a new run"),
    ("run-key-newline", orders(), {"run_key": "abc\n"}, "run_key",
     "'\\n' at position 3 is a space or control"),
    ("run-key-control", orders(), {"run_key": "a\x1bb"}, "run_key", "'\\x1b' at position 1"),
    ("run-key-too-long", orders(), {"run_key": "k" * 121}, "run_key", "it has 121 characters"),
]


@pytest.mark.parametrize("targets,options,named,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_row_or_key_and_nothing_is_sent_or_written(targets, options, named,
                                                                                    fragment, db):
    options = {"run_key": "bad-input", **options}
    broker = MockBroker(prices=PRICES)
    with pytest.raises(ValidationError) as error:
        kit.execute(targets, broker=broker, db=db, timeout=5, **options)
    assert "nothing was sent" in str(error.value)
    reasons = [reason for key, reason in error.value.problems if key == named]
    assert any(fragment in reason for reason in reasons), error.value.problems
    assert broker.submitted == []
    assert not db.exists()  # nothing written: not even an empty ledger


def test_there_are_at_least_25_kinds_of_bad_input():
    assert len({case[0] for case in CASES}) >= 25


def test_a_good_frame_next_to_each_bad_one_goes_through(db):
    """The cases above fail for the reason they name, not for something the shared parts get wrong."""
    plan = kit.plan(weights(0.5, 0.25), capital=1e5, prices=PRICES, run_key="good-weights", db=db)
    assert [o.quantity for o in plan.intents] == [263.0, 60.0]
    run = kit.execute(orders(), broker=MockBroker(prices=PRICES), run_key="good", db=db, timeout=5)
    assert run.status == "done"


@pytest.mark.parametrize("bad", ["abc", -1.0, math.nan, math.inf, True, None, 1e10])
def test_the_mock_broker_refuses_a_bad_price_naming_the_symbol(bad):
    with pytest.raises(ValidationError, match="AAPL: price"):
        MockBroker(prices={"AAPL": bad})
    broker = MockBroker(prices=PRICES)
    with pytest.raises(ValidationError, match="AAPL: price"):
        broker.set_price("AAPL", bad)
    assert broker.reference_price("AAPL") == 190.0  # the market did not move


def test_every_bad_price_is_named_in_one_error():
    with pytest.raises(ValidationError) as error:
        reference_prices({"AAPL": "abc", "MSFT": 410.0, "TTE": -1, 7: 3.0})
    assert [key for key, _ in error.value.problems] == ["AAPL", "TTE", None]
    assert "symbol 7 (with price 3.0) is not a symbol" in str(error.value)


def test_the_sanity_limits_can_be_raised_by_an_argument_but_not_past_exactness():
    big = orders((20_000_000, 50))
    with pytest.raises(ValidationError, match="above the sanity limit of 10,000,000 units"):
        validate_orders(big, "k")
    roomy = Sanity(max_quantity=50_000_000)
    assert validate_orders(big, "k", sanity=roomy)[0].quantity == 20_000_000
    assert len(make_plan(big, "k", sanity=roomy)) == 2
    with pytest.raises(ValidationError, match="max_quantity"):
        Sanity(max_quantity=2**53 + 2)
    with pytest.raises(ValidationError, match="max_price"):
        Sanity(max_price=math.inf)


def test_numbers_exactly_at_the_limits_pass():
    limits = Sanity(max_quantity=2**53)
    assert validate_orders(orders((2**53, 1)), "k", sanity=limits)[0].quantity == 2**53
    assert validate_orders(orders((10_000_000, 1)), "k")[0].quantity == 10_000_000
    assert reference_prices({"AAPL": 1e9}) == {"AAPL": 1e9}
