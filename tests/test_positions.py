"""Target positions: the diff against positions + working orders, lots, min_notional, order of sending, bad
frames, and the promise that re-running a partly executed plan sends only what is missing."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kit
from kit.brokers.mock import MockBroker
from kit.errors import ValidationError
from kit.model import Cancelled, Commission, Execution
from kit.planner import make_plan, plan_positions

PRICES = {"AAPL": 200.0, "MSFT": 400.0, "TSLA": 250.0, "NVDA": 100.0}
pytestmark = pytest.mark.usefixtures("clean_config")


def targets(**quantities: float) -> pd.DataFrame:
    return pd.DataFrame({"symbol": list(quantities), "target_quantity": list(quantities.values())})


def legs(plan) -> list[tuple[str, str, float]]:
    return [(o.symbol, str(o.side), o.quantity) for o in plan.intents]


class StallingBroker(MockBroker):
    """A mock whose market goes quiet after each order's first fill: a real partial execution. It filters
    the events it emits (the public Broker surface) instead of reaching into the mock's internals: the
    first execution of an order passes, later ones never happen, and a cancel of a stalled order is
    confirmed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_fill: dict[str, str] = {}  # client_order_id -> exec_id of the fill that happened
        self.stalled: set[str] = set()

    def bind(self, sink) -> None:
        def quiet(event) -> None:
            if isinstance(event, Execution):
                order = event.fill.client_order_id
                if self.first_fill.setdefault(order, event.fill.exec_id) != event.fill.exec_id:
                    self.stalled.add(order)
                    return
            if isinstance(event, Commission) and event.exec_id not in self.first_fill.values():
                return
            sink(event)

        super().bind(quiet)

    async def cancel(self, client_order_id: str) -> None:
        if client_order_id in self.stalled:
            self.emit(Cancelled(client_order_id, datetime.now(UTC).replace(tzinfo=None), "cancelled"))
            return
        await super().cancel(client_order_id)


# ---- the diff ---------------------------------------------------------------------------------------------
def test_target_quantities_become_the_orders_that_reach_them():
    plan = make_plan(targets(AAPL=100, MSFT=-20, TSLA=30), "k", positions={"TSLA": 50, "MSFT": 10},
                     prices=PRICES)
    assert legs(plan) == [("AAPL", "BUY", 100), ("MSFT", "SELL", 30), ("TSLA", "SELL", 20)]
    assert [o.client_order_id for o in plan.intents] == ["k-AAPL-BUY", "k-MSFT-SELL", "k-TSLA-SELL"]


def test_target_weights_and_capital_become_shares_rounded_toward_zero():
    frame = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA"], "target_weight": [0.5, 0.3, -0.2],
                          "decision_price": [None, 410.0, None]})
    plan = make_plan(frame, "k", prices=PRICES, capital=100_000)
    # AAPL 50,000 / 200 = 250; MSFT 30,000 / 410 = 73.17 -> 73 (its decision price wins); TSLA -80.
    assert legs(plan) == [("AAPL", "BUY", 250), ("MSFT", "BUY", 73), ("TSLA", "SELL", 80)]
    assert dict(plan.targets) == {"AAPL": 250, "MSFT": 73, "TSLA": -80}
    assert plan.intents[1].decision_price == 410.0  # carried to the order, for TCA


def test_symbols_absent_from_the_frame_are_left_alone():
    plan = make_plan(targets(AAPL=10), "k", positions={"AAPL": 10, "TSLA": 500}, working={"NVDA": -40},
                     prices=PRICES)
    assert plan.intents == ()
    assert make_plan(targets(TSLA=0), "k", positions={"AAPL": 10, "TSLA": 5}).intents[0].symbol == "TSLA"


def test_working_orders_count_toward_the_target():
    plan = make_plan(targets(AAPL=100, MSFT=0), "k", positions={"AAPL": 20, "MSFT": 60},
                     working={"AAPL": 50, "MSFT": -60}, prices=PRICES)
    assert legs(plan) == [("AAPL", "BUY", 30)]
    assert dict(plan.current) == {"AAPL": 70, "MSFT": 0}


def test_the_diff_reads_positions_and_working_orders_from_the_ledger_for_the_mock(db):
    broker = MockBroker(prices=PRICES)
    first = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA"], "side": ["BUY", "BUY", "SELL"],
                          "quantity": [100, 50, 20], "order_type": ["MKT", "LMT", "MKT"],
                          "limit_price": [None, 300.0, None]})  # MSFT's limit is below the market: it rests
    run = kit.execute(first, broker=broker, run_key="book-1", db=db, timeout=0.3, on_timeout="leave")
    assert dict(zip(run.orders["symbol"], run.orders["status"], strict=True)) == {
        "AAPL": "FILLED", "MSFT": "SUBMITTED", "TSLA": "FILLED"}
    assert kit.ledger(db).book("mock") == ({"AAPL": 100.0, "TSLA": -20.0}, {"MSFT": 50.0})

    plan = kit.plan(targets(AAPL=150, MSFT=80, TSLA=0), broker=broker, run_key="book-2", db=db,
                    prices=PRICES)
    assert dict(plan.current) == {"AAPL": 100, "MSFT": 50, "TSLA": -20}
    assert legs(plan) == [("AAPL", "BUY", 50), ("MSFT", "BUY", 30), ("TSLA", "BUY", 20)]
    frame = plan.frame().set_index("symbol")
    assert frame.loc["MSFT", ["current", "target", "delta"]].tolist() == [50, 80, 30]
    assert frame.loc["TSLA", ["current", "target", "delta", "notional"]].tolist() == [-20, 0, 20, 5_000]


# ---- lots, min_notional, order of sending -----------------------------------------------------------------
def test_targets_and_deltas_round_toward_zero_to_whole_lots():
    frame = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA", "NVDA"],
                          "target_weight": [0.33, -0.33, 0.0005, 0.2]})
    plan = make_plan(frame, "k", prices=PRICES, capital=100_000, lot_size=100, positions={"NVDA": 100})
    # AAPL 165 -> 100; MSFT -82.5 -> 0 (toward zero, not -100); TSLA 0.2 -> 0; NVDA 200 - 100 held.
    assert dict(plan.targets) == {"AAPL": 100, "MSFT": 0, "TSLA": 0, "NVDA": 200}
    assert legs(plan) == [("AAPL", "BUY", 100), ("NVDA", "BUY", 100)]
    assert legs(make_plan(targets(AAPL=-250), "k", lot_size=100)) == [("AAPL", "SELL", 200)]
    assert legs(make_plan(targets(AAPL=99), "k", lot_size=100)) == []


def test_a_weight_that_lands_on_a_whole_lot_is_not_lost_to_floating_point():
    frame = pd.DataFrame({"symbol": ["AAPL"], "target_weight": [0.07]})
    plan = make_plan(frame, "k", prices={"AAPL": 7.0}, capital=10_000)  # 0.07 * 10,000 / 7 = 99.99999...
    assert legs(plan) == [("AAPL", "BUY", 100)]


@pytest.mark.parametrize("lot_size", [0, -100, float("nan"), float("inf"), True])
def test_a_lot_size_that_is_not_positive_is_refused(lot_size):
    with pytest.raises(ValueError, match="lot_size must be a positive number"):
        make_plan(targets(AAPL=100), "k", lot_size=lot_size)


def test_deltas_under_min_notional_are_dropped():
    frame = targets(AAPL=101, MSFT=3, TSLA=-1, NVDA=100).assign(decision_price=[None, None, None, 0.5])
    plan = make_plan(frame, "k", positions={"AAPL": 100}, prices=PRICES, min_notional=500)
    # AAPL 1 x 200, TSLA 1 x 250 and NVDA 100 x 0.5 (its decision price) are under 500; MSFT 3 x 400 is not.
    assert legs(plan) == [("MSFT", "BUY", 3)]
    # Without a price the notional is unknown: the order is kept (risk limits decide about it).
    assert legs(make_plan(targets(ZZZ=1), "k", min_notional=500)) == [("ZZZ", "BUY", 1)]


def test_a_bad_decision_price_is_named_not_a_reason_to_drop_the_order():
    frame = targets(MSFT=0, AAPL=10).assign(decision_price=[400.0, -3.0])
    with pytest.raises(ValidationError) as caught:
        make_plan(frame, "k", prices=PRICES, min_notional=5)
    assert caught.value.problems == [("row 1 (AAPL)", "decision_price -3.0 must be a positive number")]


def test_sells_first_puts_every_sell_before_the_buys_and_keeps_frame_order_otherwise():
    frame = targets(AAPL=10, MSFT=-10, TSLA=10, NVDA=-10)
    assert [o.symbol for o in make_plan(frame, "k").intents] == ["AAPL", "MSFT", "TSLA", "NVDA"]
    assert [(o.symbol, str(o.side)) for o in make_plan(frame, "k", sells_first=True).intents] == [
        ("MSFT", "SELL"), ("NVDA", "SELL"), ("AAPL", "BUY"), ("TSLA", "BUY")]


def test_sells_first_is_the_order_the_broker_receives(db):
    broker = MockBroker(prices=PRICES)
    kit.execute(targets(AAPL=10, MSFT=-10), broker=broker, run_key="sf", db=db, prices=PRICES, timeout=5,
                sells_first=True)
    assert broker.submitted == ["sf-MSFT-SELL", "sf-AAPL-BUY"]


# ---- bad frames -------------------------------------------------------------------------------------------
BAD_FRAMES = {
    "both target columns": (
        pd.DataFrame({"symbol": ["AAPL"], "target_quantity": [10], "target_weight": [0.1]}),
        {"capital": 1e5}, [(None, "give target_quantity or target_weight, not both")]),
    "weight without capital": (
        pd.DataFrame({"symbol": ["AAPL"], "target_weight": [0.1]}), {},
        [(None, "target_weight needs a positive capital, got None")]),
    "weight with a negative capital": (
        pd.DataFrame({"symbol": ["AAPL"], "target_weight": [0.1]}), {"capital": -5.0},
        [(None, "target_weight needs a positive capital, got -5.0")]),
    "no price for a weight": (
        pd.DataFrame({"symbol": ["AAPL", "AMZN"], "target_weight": [0.5, 0.5]}), {"capital": 1e5},
        [("row 1 (AMZN)",
          "no price for AMZN to turn its weight into shares (give decision_price or prices)")]),
    "bad decision price for a weight": (
        pd.DataFrame({"symbol": ["AAPL"], "target_weight": [0.5], "decision_price": ["190"]}),
        {"capital": 1e5},
        [("row 0 (AAPL)", "decision_price '190' must be a positive number")]),
    "duplicate symbol": (
        targets(AAPL=10, MSFT=5).pipe(lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True)), {},
        [("row 2 (AAPL)", "AAPL has more than one target")]),
    "NaN target": (
        targets(AAPL=10, MSFT=math.nan), {},
        [("row 1 (MSFT)", "target_quantity nan is not a finite number")]),
    "non-whole target_quantity": (
        targets(AAPL=10.5), {}, [("row 0 (AAPL)", "target_quantity 10.5 is not a whole number of shares")]),
    "a text target": (
        pd.DataFrame({"symbol": ["AAPL"], "target_quantity": ["10"]}), {},
        [("row 0 (AAPL)", "target_quantity '10' is not a finite number")]),
    "a row without symbol, named by its label": (
        pd.DataFrame({"symbol": ["AAPL", None], "target_quantity": [1, 2]}, index=["a", "b"]), {},
        [("row 'b'", "symbol is missing")]),
    "an order column in a positions frame": (
        pd.DataFrame({"symbol": ["AAPL"], "target_quantity": [1], "side": ["BUY"]}), {},
        [(None, "unknown column(s) ['side'] in a target positions frame; known: symbol, target_quantity, "
                "target_weight, tif, exchange, currency, primary_exchange, decision_price, sec_type, "
                "expiry, strike, right, multiplier, con_id, local_symbol")]),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_a_bad_positions_frame_names_the_row_and_nothing_is_sent_or_written(case, db):
    frame, options, problems = BAD_FRAMES[case]
    broker = MockBroker(prices=PRICES)
    with pytest.raises(ValidationError) as caught:
        kit.execute(frame, broker=broker, run_key="bad", db=db, prices=PRICES, timeout=5, **options)
    assert caught.value.problems == problems
    assert "nothing was sent" in str(caught.value)
    assert broker.submitted == []
    assert not db.exists()


def test_every_bad_row_is_named_at_once():
    frame = pd.DataFrame({"symbol": ["AAPL", "MSFT", "AAPL", "TSLA"],
                          "target_quantity": [1, math.nan, 3, 0.5]})
    with pytest.raises(ValidationError) as caught:
        make_plan(frame, "k")
    assert [row for row, _ in caught.value.problems] == ["row 1 (MSFT)", "row 2 (AAPL)", "row 3 (TSLA)"]


def test_a_bad_order_field_in_a_positions_frame_names_the_users_row_not_the_derived_orders_row():
    frame = targets(MSFT=0, AAPL=10).assign(tif=["DAY", "NEVER"])
    with pytest.raises(ValidationError) as caught:
        make_plan(frame, "k")
    assert caught.value.problems == [("row 1 (AAPL)", "tif 'NEVER' is not one of DAY, GTC, IOC")]


# ---- re-running after a partial execution sends only the remainder ----------------------------------------
@pytest.mark.parametrize("rerun_key", ["remainder", "remainder-again"])
def test_rerunning_after_a_rejected_order_sends_only_the_remainder(db, rerun_key):
    wanted = targets(AAPL=100, MSFT=50, TSLA=-30)
    no_msft_price = MockBroker(prices={"AAPL": 200.0, "TSLA": 250.0})
    first = kit.execute(wanted, broker=no_msft_price, run_key="remainder", db=db, timeout=5,
                        prices={"AAPL": 200.0, "TSLA": 250.0})
    assert first.status == "partial"
    assert first.orders.set_index("symbol").loc["MSFT", ["status", "reason"]].tolist() == [
        "REJECTED", "price_unavailable"]

    broker = MockBroker(prices=PRICES)
    plan = kit.plan(wanted, broker=broker, run_key=rerun_key, db=db, prices=PRICES)
    assert legs(plan) == [("MSFT", "BUY", 50)]
    second = kit.execute(plan, broker=broker, db=db, timeout=5)
    sent = "remainder-MSFT-BUY-2" if rerun_key == "remainder" else "remainder-again-MSFT-BUY"
    assert broker.submitted == [sent]  # the filled AAPL and TSLA orders are not sent again
    assert kit.ledger(db).book("mock") == ({"AAPL": 100.0, "MSFT": 50.0, "TSLA": -30.0}, {})
    assert second.status == ("partial" if rerun_key == "remainder" else "done")  # the run keeps its reject

    assert kit.plan(wanted, broker=broker, run_key=rerun_key, db=db, prices=PRICES).intents == ()


@pytest.mark.parametrize("rerun_key", ["stall", "stall-2"])
def test_rerunning_after_a_partial_fill_sends_only_the_unfilled_part(db, rerun_key):
    wanted = targets(AAPL=100, TSLA=-40)
    stalling = StallingBroker(prices=PRICES, partial_fills=2)
    first = kit.execute(wanted, broker=stalling, run_key="stall", db=db, prices=PRICES, timeout=0.3)
    assert first.status == "partial"
    orders = first.orders.set_index("symbol")
    assert (orders["status"] == "CANCELLED").all()  # the timeout cancelled the rest, confirmed by the broker
    aapl_filled, tsla_filled = orders.loc["AAPL", "filled_quantity"], orders.loc["TSLA", "filled_quantity"]
    assert 0 < aapl_filled < 100 and 0 < tsla_filled < 40

    broker = MockBroker(prices=PRICES)
    run = kit.execute(wanted, broker=broker, run_key=rerun_key, db=db, prices=PRICES, timeout=5)
    ids = run.orders.set_index("client_order_id")
    new = list(broker.submitted)
    assert len(new) == 2 and all(c.startswith(rerun_key + "-") for c in new)
    assert ids.loc[new, "quantity"].tolist() == [100 - aapl_filled, 40 - tsla_filled]
    assert kit.ledger(db).book("mock") == ({"AAPL": 100.0, "TSLA": -40.0}, {})
    assert kit.plan(wanted, broker=broker, run_key=rerun_key, db=db, prices=PRICES).intents == ()


def test_a_positions_plan_already_at_its_targets_sends_nothing_and_is_done(db):
    broker = MockBroker(prices=PRICES)
    kit.execute(targets(AAPL=10), broker=broker, run_key="at-1", db=db, prices=PRICES, timeout=5)
    run = kit.execute(targets(AAPL=10), broker=broker, run_key="at-2", db=db, prices=PRICES, timeout=5)
    assert broker.submitted == ["at-1-AAPL-BUY"]
    assert run.status == "done" and run.orders.empty


# ---- the property -----------------------------------------------------------------------------------------
POOL = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN"]


def toward_zero(quantity: int, lot: int) -> int:
    return int(math.copysign(abs(quantity) // lot * lot, quantity))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), lot=st.sampled_from([1, 10, 100]))
def test_the_deltas_take_positions_plus_working_exactly_to_the_rounded_targets(data, lot):
    in_frame = data.draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)), label="symbols")
    wanted = {s: data.draw(st.integers(-50_000, 50_000), label=f"target {s}") for s in in_frame}
    held_lots = st.dictionaries(st.sampled_from(POOL), st.integers(-300, 300).map(lambda n: n * lot))
    positions, working = data.draw(held_lots, label="positions"), data.draw(held_lots, label="working")
    frame = pd.DataFrame({"symbol": in_frame, "target_quantity": [wanted[s] for s in in_frame]})

    orders, rounded = plan_positions(frame, "k", positions=positions, working=working, prices=PRICES,
                                     lot_size=lot, sells_first=data.draw(st.booleans(), label="sells_first"))
    after = Counter(positions)
    after.update(working)
    for row in orders.itertuples():
        assert row.quantity > 0 and row.quantity % lot == 0
        after[row.symbol] += row.quantity if row.side == "BUY" else -row.quantity
    assert orders["symbol"].is_unique
    assert set(orders["symbol"]) <= set(in_frame)  # symbols absent from the frame are left alone
    for symbol in POOL:
        if symbol in wanted:
            assert after[symbol] == rounded[symbol] == toward_zero(wanted[symbol], lot)
        else:
            assert after[symbol] == positions.get(symbol, 0) + working.get(symbol, 0)
    # Planning again from where the orders lead asks for nothing more.
    again, _ = plan_positions(frame, "k", positions=dict(after), working={}, prices=PRICES, lot_size=lot)
    assert again.empty
