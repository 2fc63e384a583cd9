"""Pre-trade risk: every limit, where limits come from, and what a stopped order becomes.

The limits are checked by a pure function (kit.risk.check, reached through kit.planner.make_plan); the last
tests drive kit.execute on the mock broker to show that a stopped order is recorded REJECTED with the limit
that stopped it and never reaches the broker, and that strict=True stops the whole run before anything.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import kit
from kit.brokers.mock import MockBroker
from kit.config import risk_limits
from kit.errors import ConfigError, RiskError
from kit.planner import Plan, make_plan
from kit.risk import RiskLimits
from kit.store import Ledger

PRICES = {"AAPL": 200.0, "MSFT": 400.0, "TSLA": 250.0}
# The fat-finger guard every run gets unless it is turned off (docs/configuration.md).
DEFAULT_ORDER, DEFAULT_GROSS = 10_000_000.0, 50_000_000.0
DEFAULTS = {"max_order_notional": DEFAULT_ORDER, "max_gross_notional": DEFAULT_GROSS}
pytestmark = pytest.mark.usefixtures("clean_config")


def orders(*rows: tuple) -> pd.DataFrame:
    """(symbol, side, quantity) or (symbol, side, quantity, limit_price) rows -> a target orders frame."""
    frame = pd.DataFrame([r[:3] for r in rows], columns=["symbol", "side", "quantity"])
    limits = [r[3] if len(r) > 3 else None for r in rows]
    if any(limit is not None for limit in limits):
        frame["order_type"] = ["LMT" if limit is not None else "MKT" for limit in limits]
        frame["limit_price"] = limits
    return frame


def verdicts(frame: pd.DataFrame, prices: dict[str, float] | None = None, **limits) -> list[tuple[str, ...]]:
    plan = make_plan(frame, "k", prices=PRICES if prices is None else prices, limits=RiskLimits(**limits))
    return list(plan.breaches)


def stopped_by(breaches: tuple[str, ...]) -> list[str]:
    """The limit names of an order's breaches ("max_orders: ..." -> "max_orders")."""
    return [b.split(":")[0] for b in breaches]


# ---- each limit -------------------------------------------------------------------------------------------
def test_no_limits_pass_everything():
    assert RiskLimits().active() == {}
    assert verdicts(orders(("AAPL", "BUY", 10_000), ("ZZZZ", "SELL", 1))) == [(), ()]


def test_max_order_notional_uses_the_limit_then_the_decision_price_then_the_reference():
    frame = orders(("AAPL", "BUY", 100), ("MSFT", "BUY", 100), ("TSLA", "SELL", 40, 300.0))
    frame["decision_price"] = [None, 600.0, None]  # MSFT: 100 x 600 (the decision price wins over 400)
    result = verdicts(frame, max_order_notional=20_000)
    assert result[0] == ()  # 100 x 200 = 20,000: at the limit is allowed
    assert result[1] == ("max_order_notional: 60,000.00 > 20,000.00",)
    assert stopped_by(result[2]) == []  # 40 x 300 (its limit price) = 12,000
    assert stopped_by(verdicts(orders(("TSLA", "SELL", 40, 600.0)), max_order_notional=20_000)[0]) == [
        "max_order_notional"]


def test_max_order_quantity():
    assert verdicts(orders(("AAPL", "BUY", 500), ("MSFT", "SELL", 501)), max_order_quantity=500) == [
        (), ("max_order_quantity: 501 > 500",)]


def test_max_gross_notional_is_a_run_total_over_the_orders_that_passed():
    frame = orders(("AAPL", "BUY", 200), ("MSFT", "BUY", 500), ("TSLA", "BUY", 160), ("AAPL", "BUY", 1))
    # 40,000 passes; MSFT's 200,000 would make 240,000; TSLA's 40,000 makes 80,000 (the stopped MSFT is not
    # counted); the last 200 would make 80,200.
    assert verdicts(frame, max_gross_notional=80_000) == [
        (), ("max_gross_notional: run total 240,000.00 > 80,000.00",), (),
        ("max_gross_notional: run total 80,200.00 > 80,000.00",)]


def test_gross_notional_counts_sells_as_well_as_buys():
    result = verdicts(orders(("AAPL", "SELL", 300), ("MSFT", "BUY", 100)), max_gross_notional=90_000)
    assert result[0] == ()
    assert stopped_by(result[1]) == ["max_gross_notional"]  # 60,000 + 40,000


def test_max_position_includes_the_existing_position_and_working_orders():
    def check(frame: pd.DataFrame, positions=None, working=None) -> list[tuple[str, ...]]:
        return list(make_plan(frame, "k", positions=positions, working=working, prices=PRICES,
                              limits=RiskLimits(max_position=100)).breaches)

    assert check(orders(("AAPL", "BUY", 100))) == [()]
    assert check(orders(("AAPL", "BUY", 30)), positions={"AAPL": 80}) == [
        ("max_position: AAPL position would be 110, limit 100",)]
    assert check(orders(("AAPL", "BUY", 30)), positions={"AAPL": 50}, working={"AAPL": 30}) == [
        ("max_position: AAPL position would be 110, limit 100",)]
    assert check(orders(("AAPL", "SELL", 30)), positions={"AAPL": 120}) == [()]  # reducing is fine
    assert check(orders(("AAPL", "SELL", 130)), positions={"AAPL": 20}) == [
        ("max_position: AAPL position would be -110, limit 100",)]  # shorts count too


def test_max_position_sees_the_earlier_orders_of_the_same_run_that_passed():
    frame = pd.DataFrame({"symbol": ["AAPL", "AAPL", "AAPL"], "side": "BUY", "quantity": [60, 60, 40],
                          "order_type": ["MKT", "LMT", "LMT"], "limit_price": [None, 199.0, 198.0]})
    result = list(make_plan(frame, "k", prices=PRICES, limits=RiskLimits(max_position=100)).breaches)
    assert result == [(), ("max_position: AAPL position would be 120, limit 100",), ()]


def test_allowed_symbols():
    result = verdicts(orders(("AAPL", "BUY", 1), ("TSLA", "BUY", 1)), allowed_symbols=frozenset({"AAPL"}))
    assert result == [(), ("allowed_symbols: TSLA is not allowed",)]


@pytest.mark.parametrize(("side", "limit", "passes"), [
    ("BUY", 203.0, True), ("BUY", 197.0, True), ("BUY", 210.0, False), ("BUY", 180.0, False),
    ("SELL", 197.0, True), ("SELL", 195.0, False), ("SELL", 230.0, False),
])
def test_collar_bounds_the_limit_price_around_the_reference(side, limit, passes):
    result = verdicts(orders(("AAPL", side, 10, limit)), collar=0.02)[0]
    assert stopped_by(result) == ([] if passes else ["collar"])
    if not passes:
        assert f"limit {limit:g}" in result[0] and "reference 200" in result[0] and "max 2.0%" in result[0]


def test_collar_fails_closed_without_a_reference_price_and_falls_back_to_the_decision_price():
    frame = orders(("NVDA", "BUY", 10, 100.0))
    assert verdicts(frame, prices={}, collar=0.05) == [
        ("collar: no reference price to check the limit price against",)]
    assert verdicts(frame.assign(decision_price=99.0), prices={}, collar=0.05) == [()]
    assert stopped_by(verdicts(frame.assign(decision_price=80.0), prices={}, collar=0.05)[0]) == ["collar"]
    # A market order has no limit price to collar.
    assert verdicts(orders(("NVDA", "BUY", 10)), prices={}, collar=0.05) == [()]


def test_collar_treats_a_nan_reference_as_no_reference():
    """A prices Series with a gap gives NaN; NaN distances compare False, so it must not count as checked."""
    result = verdicts(orders(("AAPL", "BUY", 10, 500.0)), prices={"AAPL": float("nan")}, collar=0.05)
    assert stopped_by(result[0]) == ["collar"]


def test_max_orders_counts_only_the_orders_that_passed():
    frame = orders(("TSLA", "BUY", 1), ("AAPL", "BUY", 1), ("MSFT", "BUY", 1), ("NVDA", "BUY", 1))
    result = verdicts(frame, allowed_symbols=frozenset({"AAPL", "MSFT", "NVDA"}), max_orders=2)
    assert result == [("allowed_symbols: TSLA is not allowed",), (), (),
                      ("max_orders: more than 2 orders in one run",)]


def test_notional_limits_fail_closed_without_any_price():
    for limit in ("max_order_notional", "max_gross_notional"):
        result = verdicts(orders(("NVDA", "BUY", 1)), prices={}, **{limit: 1e9})
        assert result == [("no price to check notional limits against (give decision_price or prices)",)]


def test_every_limit_an_order_breaks_is_named():
    result = verdicts(orders(("TSLA", "BUY", 1_000, 300.0)), allowed_symbols=frozenset({"AAPL"}),
                      max_order_quantity=10, max_order_notional=1_000, max_gross_notional=1_000,
                      max_position=10, collar=0.05)[0]
    assert stopped_by(result) == ["allowed_symbols", "max_order_quantity", "max_order_notional",
                                  "max_gross_notional", "max_position", "collar"]


# ---- where limits come from (kit.config.risk_limits; the malformed cases are in test_config.py) -----------
def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("KIT_RISK_MAX_ORDER_NOTIONAL", "5e4")
    monkeypatch.setenv("KIT_RISK_ALLOWED_SYMBOLS", "AAPL, MSFT")
    monkeypatch.setenv("KIT_RISK_MAX_ORDERS", "3")
    monkeypatch.setenv("KIT_RISK_COLLAR", "")  # empty means not set
    limits = risk_limits()
    assert limits.active() == {"max_order_notional": 50_000.0, "allowed_symbols": frozenset({"AAPL", "MSFT"}),
                               "max_orders": 3, "max_gross_notional": DEFAULT_GROSS}
    assert isinstance(limits.max_orders, int)


def test_limits_from_kit_toml_the_environment_wins_and_a_call_wins_over_both(monkeypatch, tmp_path):
    (tmp_path / "kit.toml").write_text(
        'db = "ledger.duckdb"\n[risk]\nmax_order_notional = 1e6\nmax_orders = 20\n'
        'allowed_symbols = ["AAPL", "MSFT"]\ncollar = 0.05\n')
    assert risk_limits().active() == {"max_order_notional": 1e6, "max_orders": 20,
                                      "allowed_symbols": frozenset({"AAPL", "MSFT"}), "collar": 0.05,
                                      "max_gross_notional": DEFAULT_GROSS}
    monkeypatch.setenv("KIT_RISK_MAX_ORDERS", "5")
    assert risk_limits().max_orders == 5
    limits = risk_limits({"max_orders": 2, "collar": None, "max_position": 300})
    assert limits.active() == {"max_order_notional": 1e6, "max_orders": 2, "max_position": 300.0,
                               "allowed_symbols": frozenset({"AAPL", "MSFT"}),
                               "max_gross_notional": DEFAULT_GROSS}


def test_a_limits_object_is_taken_as_it_is(monkeypatch):
    monkeypatch.setenv("KIT_RISK_MAX_ORDERS", "5")
    limits = RiskLimits(max_order_quantity=7)
    assert risk_limits(limits) is limits


def test_per_call_limits_take_numpy_numbers_and_any_collection_of_symbols():
    limits = risk_limits({"max_orders": np.int64(4), "max_position": np.float64(10.5),
                          "allowed_symbols": {"AAPL"}})
    assert limits.active() == {"max_orders": 4, "max_position": 10.5, "allowed_symbols": frozenset({"AAPL"}),
                               **DEFAULTS}


def test_an_unknown_limit_per_call_is_a_clear_error_naming_the_nearest_limit():
    with pytest.raises(ConfigError, match=r"unknown risk limit 'max_notional' \(did you mean 'max_order_no"):
        risk_limits({"max_notional": 1e6})
    with pytest.raises(ConfigError, match="max_notional"):
        kit.plan(orders(("AAPL", "BUY", 1)), run_key="k", prices=PRICES, risk={"max_notional": 1e6})
    with pytest.raises(ConfigError, match=r"risk= takes a dict of limits or a RiskLimits, not \['max_"):
        risk_limits(["max_orders"])


def test_an_unknown_limit_in_the_environment_is_an_error_not_a_limit_silently_off(monkeypatch):
    monkeypatch.setenv("KIT_RISK_MAX_NOTIONAL", "1e6")
    with pytest.raises(ConfigError, match="unknown environment variable KIT_RISK_MAX_NOTIONAL"):
        risk_limits()


def test_an_unknown_limit_in_kit_toml_is_an_error(tmp_path):
    (tmp_path / "kit.toml").write_text("[risk]\nmax_oder_quantity = 100\n")
    with pytest.raises(ConfigError, match=r"unknown key 'max_oder_quantity' in \[risk\] \(did you mean "
                                          r"'max_order_quantity'\?\)"):
        risk_limits()


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("max_order_notional", "lots", "a number, not 'lots'"),
    ("max_order_notional", float("nan"), "a finite number, not nan"),
    ("max_position", -1, "a number greater than or equal to 0, not -1"),
    ("max_orders", 2.5, "an integer, not 2.5"),
    ("max_orders", True, "an integer, not true"),
    ("allowed_symbols", "AAPL", "a list of strings, not 'AAPL'"),
])
def test_a_limit_that_is_not_a_usable_value_is_an_error_naming_it(name, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"risk limit {name} must be {expected}")):
        risk_limits({name: value})
    with pytest.raises(ConfigError, match=re.escape(f"risk limit {name} must be")):
        kit.plan(orders(("AAPL", "BUY", 1)), run_key="k", prices=PRICES, risk={name: value})


# ---- stopped orders in a run ------------------------------------------------------------------------------
def test_a_stopped_order_is_rejected_in_the_ledger_never_sent_and_the_others_go_on(tmp_path):
    db = tmp_path / "kit.duckdb"
    broker = MockBroker(prices=PRICES)
    frame = orders(("AAPL", "BUY", 100), ("MSFT", "BUY", 100), ("TSLA", "BUY", 10))
    run = kit.execute(frame, broker=broker, run_key="risk-1", db=db, prices=PRICES, timeout=5,
                      risk={"max_order_notional": 30_000, "allowed_symbols": ["AAPL", "MSFT"]})
    assert broker.submitted == ["risk-1-AAPL-BUY"]
    assert run.status == "partial"
    by_id = run.orders.set_index("client_order_id")
    assert by_id.loc["risk-1-AAPL-BUY", "status"] == "FILLED"
    assert by_id.loc["risk-1-MSFT-BUY", "status"] == "REJECTED"
    assert by_id.loc["risk-1-MSFT-BUY", "reason"] == "risk: max_order_notional: 40,000.00 > 30,000.00"
    assert by_id.loc["risk-1-TSLA-BUY", "reason"] == "risk: allowed_symbols: TSLA is not allowed"
    assert by_id.loc[["risk-1-MSFT-BUY", "risk-1-TSLA-BUY"], "submitted_at"].isna().all()
    assert (by_id.loc[["risk-1-MSFT-BUY", "risk-1-TSLA-BUY"], "filled_quantity"] == 0).all()
    events = kit.ledger(db).events(run.run_id)
    rejected = events[events["kind"] == "rejected"]
    assert set(rejected["client_order_id"]) == {"risk-1-MSFT-BUY", "risk-1-TSLA-BUY"}
    # Running the same run_key again sends nothing more: the stopped orders stay stopped.
    again = kit.execute(frame, broker=broker, run_key="risk-1", db=db, prices=PRICES, timeout=5,
                        risk={"max_order_notional": 30_000, "allowed_symbols": ["AAPL", "MSFT"]})
    assert broker.submitted == ["risk-1-AAPL-BUY"]
    assert again.status == "partial"


def test_limits_from_the_environment_apply_to_kit_execute(monkeypatch, tmp_path):
    monkeypatch.setenv("KIT_RISK_MAX_ORDER_QUANTITY", "50")
    broker = MockBroker(prices=PRICES)
    run = kit.execute(orders(("AAPL", "BUY", 100), ("MSFT", "BUY", 50)), broker=broker, run_key="env-1",
                      db=tmp_path / "kit.duckdb", prices=PRICES, timeout=5)
    assert broker.submitted == ["env-1-MSFT-BUY"]
    assert run.orders.set_index("symbol").loc["AAPL", "reason"] == "risk: max_order_quantity: 100 > 50"


def test_max_position_in_kit_execute_sees_the_position_an_earlier_run_left_in_the_ledger(tmp_path):
    db = tmp_path / "kit.duckdb"
    broker = MockBroker(prices=PRICES)
    kit.execute(orders(("AAPL", "BUY", 80)), broker=broker, run_key="pos-1", db=db, prices=PRICES, timeout=5)
    run = kit.execute(orders(("AAPL", "BUY", 30), ("MSFT", "BUY", 30)), broker=broker, run_key="pos-2",
                      db=db, prices=PRICES, timeout=5, risk={"max_position": 100})
    assert broker.submitted == ["pos-1-AAPL-BUY", "pos-2-MSFT-BUY"]
    assert run.orders.set_index("symbol").loc["AAPL", "reason"] == (
        "risk: max_position: AAPL position would be 110, limit 100")


def test_strict_raises_naming_the_stopped_orders_and_nothing_is_written_or_sent(tmp_path):
    db = tmp_path / "kit.duckdb"
    broker = MockBroker(prices=PRICES)
    frame = orders(("AAPL", "BUY", 100), ("MSFT", "BUY", 100), ("TSLA", "BUY", 10))
    with pytest.raises(RiskError) as caught:
        kit.execute(frame, broker=broker, run_key="strict-1", db=db, prices=PRICES, timeout=5, strict=True,
                    risk={"max_order_notional": 30_000, "max_order_quantity": 50})
    message = str(caught.value)
    assert "nothing was sent" in message
    assert "strict-1-MSFT-BUY: max_order_quantity: 100 > 50; max_order_notional: 40,000.00 > 30,000.00" in (
        message)
    assert "strict-1-AAPL-BUY: max_order_quantity: 100 > 50" in message
    assert "strict-1-TSLA-BUY" not in message
    assert broker.submitted == []
    assert not db.exists()


def test_strict_refuses_a_plan_with_a_stopped_order_and_a_clean_plan_runs(tmp_path):
    db = tmp_path / "kit.duckdb"
    broker = MockBroker(prices=PRICES)
    plan = kit.plan(orders(("AAPL", "BUY", 100), ("TSLA", "BUY", 1)), run_key="strict-2", prices=PRICES,
                    risk={"allowed_symbols": ["AAPL"]})
    assert isinstance(plan, Plan) and [len(b) for b in plan.breaches] == [0, 1]
    with pytest.raises(RiskError, match="strict-2-TSLA-BUY: allowed_symbols"):
        kit.execute(plan, broker=broker, db=db, strict=True)
    assert broker.submitted == [] and not db.exists()
    clean = kit.plan(orders(("AAPL", "BUY", 100)), run_key="strict-3", prices=PRICES,
                     risk={"allowed_symbols": ["AAPL"]})
    run = kit.execute(clean, broker=broker, db=db, strict=True, timeout=5)
    assert run.status == "done" and broker.submitted == ["strict-3-AAPL-BUY"]


def test_a_plan_shows_what_risk_stopped():
    plan = kit.plan(orders(("AAPL", "BUY", 100), ("MSFT", "BUY", 100)), run_key="show", prices=PRICES,
                    risk={"max_order_notional": 30_000})
    assert "stopped_by_risk=1" in repr(plan)
    assert [o.symbol for o in plan.passing] == ["AAPL"]
    assert list(plan.frame()["risk"]) == ["ok", "max_order_notional: 40,000.00 > 30,000.00"]


def test_no_ledger_is_created_by_planning(tmp_path):
    db = tmp_path / "kit.duckdb"
    kit.plan(orders(("AAPL", "BUY", 1)), run_key="p", db=db, prices=PRICES, risk={"max_position": 10})
    assert not db.exists()
    assert Ledger(db).book("mock") == ({}, {})


def test_limits_that_need_a_price_use_the_prices_of_the_broker_given(tmp_path):
    broker = MockBroker(prices=PRICES)
    run = kit.execute(orders(("AAPL", "BUY", 100)), broker=broker, run_key="broker-prices",
                      db=tmp_path / "kit.duckdb", timeout=5, risk={"max_order_notional": 1e6})
    assert broker.submitted == ["broker-prices-AAPL-BUY"]
    assert run.status == "done"


# ---- the fat-finger guard: on by default, off only when asked -------------------------------------------
def momentum_targets(capital: float) -> pd.DataFrame:
    """What notebooks/momentum.ipynb ends with: three leaders, capital split equally, at its own prices."""
    prices = {"AAPL": 289.0, "MSFT": 153.0, "NFLX": 309.0}
    return pd.DataFrame({"symbol": list(prices), "side": "BUY",
                         "quantity": [int(capital / 3 / p) for p in prices.values()],
                         "decision_price": list(prices.values())})


def test_the_default_limits_pass_the_notebooks_capital_and_stop_a_fat_finger(db):
    assert risk_limits().active() == DEFAULTS
    assert kit.plan(momentum_targets(1_000_000), run_key="ok", db=db).breaches == ((), (), ())
    broker = MockBroker(prices={"AAPL": 289.0, "MSFT": 153.0, "NFLX": 309.0})
    run = kit.execute(momentum_targets(3e9), broker=broker, run_key="fat", db=db, timeout=5)
    assert broker.submitted == [] and run.status == "failed"
    assert set(run.orders["status"]) == {"REJECTED"}
    assert run.orders["reason"].str.match(r"risk: max_order_notional: 99\d,\d{3},\d{3}\.\d\d > "
                                          r"10,000,000\.00").all()


def test_many_orders_under_the_order_limit_still_meet_the_gross_limit(db):
    symbols = ["AAPL", "MSFT", "NFLX", "GOOG", "AMZN", "META"]  # 9,000,000 each: 54,000,000 in all
    targets = pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": 90_000, "decision_price": 100.0})
    stopped = kit.plan(targets, run_key="gross", db=db)
    assert [stopped_by(b) for b in stopped.breaches] == [[]] * 5 + [["max_gross_notional"]]


def test_turning_the_guard_off_is_explicit_per_call_in_kit_toml_and_in_the_environment(db, tmp_path,
                                                                                           monkeypatch):
    huge = momentum_targets(3e9)
    off = {"max_order_notional": None, "max_gross_notional": None}
    assert kit.plan(huge, run_key="off-call", db=db, risk=off).breaches == ((), (), ())
    (tmp_path / "kit.toml").write_text('[risk]\nmax_order_notional = "off"\n')
    monkeypatch.setenv("KIT_RISK_MAX_GROSS_NOTIONAL", "off")
    assert risk_limits().active() == {}
    assert kit.plan(huge, run_key="off-config", db=db).breaches == ((), (), ())


def test_the_defaults_let_an_order_without_a_price_through_but_a_limit_you_set_does_not():
    unpriced = orders(("AAPL", "BUY", 100))
    assert make_plan(unpriced, "k", limits=risk_limits()).breaches == ((),)
    chosen = risk_limits({"max_order_notional": 1e6})
    assert stopped_by(make_plan(unpriced, "k", limits=chosen).breaches[0]) == [
        "no price to check notional limits against (give decision_price or prices)"]
