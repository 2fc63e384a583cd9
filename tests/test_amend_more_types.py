"""Amending the order types tests/test_amend_types.py leaves out, on the mock broker, then filling or
cancelling them: trailing stops (their trailing amount or percent, a TRAIL LIMIT's limit offset, the stop
itself), a tif, MOC and OPG quantities, a MIDPRICE cap, a REL's offset and cap, and IB algos (Vwap, Twap,
Adaptive: quantity and limit; their parameters are not amendable). The same cases run through the
simulated gateway in tests/gateway/test_gateway_amend_more_types.py.

A trailing case moves the market before the amendment (`before`), so the trail has a best price that is
not the current one: the amended trail is measured from that best price, as IB keeps it, and the move
after the amendment (`move`) triggers the order only then. A trail restarted from the current price would
not trigger."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kit
from kit.amending import check_changes
from kit.brokers.mock import MockBroker
from kit.errors import InputError
from kit.model import OrderIntent, Side
from kit.order_types import Trigger
from tests.test_amend_types import amend_kinds, recorded_and_told

NAMES = {"limit": "limit_price", "stop": "stop_price", "quantity": "quantity", "tif": "tif",
         "trail_amount": "trail_amount", "trail_percent": "trail_percent", "offset": "offset"}


@dataclass(frozen=True)
class Case:
    """One order: its target row, the amendment (kit.amend's keywords), the moves before it, and the move
    (a price, or an auction's) that fills the amended order."""

    name: str
    row: dict[str, Any]
    changes: dict[str, Any]
    move: float
    before: tuple[float, ...] = ()
    auction: str = ""  # "close" or "open"
    planned: dict[str, Any] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return self.row["symbol"]


def case(name: str, row: dict[str, Any], changes: dict[str, Any], move: float, **options: Any) -> Case:
    planned = {NAMES[k]: row.get(NAMES[k], "DAY" if k == "tif" else None) for k in changes}
    return Case(name, row, changes, move, planned=planned, **options)


# Prices as the simulated gateway starts: AAPL 190, MSFT 420, IBM 185, JPM 200, GOOG 170, AMZN 185,
# NFLX 640, META 500, XOM 115.
CASES = (
    # SELL, trails by 10 from 190 (stop 180); the market goes to 200 (stop 190), back to 199. Trail 3 from
    # the best 200 is a stop of 197, reached at 196.5; from the current 199 it would be 196.
    case("TRAIL amount", {"symbol": "AAPL", "side": "SELL", "quantity": 10, "order_type": "TRAIL",
                          "trail_amount": 10.0}, {"trail_amount": 3.0}, 196.5, before=(200.0, 199.0)),
    # BUY, trails by 5% from 420; the market falls to 400 (stop 420), back to 402. 1% from the best 400 is
    # 404, reached at 405; from the current 402 it would be 406.02.
    case("TRAIL percent", {"symbol": "MSFT", "side": "BUY", "quantity": 10, "order_type": "TRAIL",
                           "trail_percent": 5.0}, {"trail_percent": 1.0}, 405.0, before=(400.0, 402.0)),
    # SELL, trails by 5 (stop 185 after 190), limit 0.5 below the stop: 184.5. At 183 the stop is reached
    # and only the amended limit (3 below: 182) lets it fill.
    case("TRAIL LIMIT offset", {"symbol": "IBM", "side": "SELL", "quantity": 10, "order_type": "TRAIL LIMIT",
                                "trail_amount": 5.0, "offset": 0.5}, {"offset": 3.0}, 183.0,
         before=(190.0, 188.0)),
    # SELL, trails by 10 from 200 (stop 190); the stop moved to 198 is reached at 197.5, and stays there.
    case("TRAIL stop", {"symbol": "JPM", "side": "SELL", "quantity": 10, "order_type": "TRAIL",
                        "trail_amount": 10.0}, {"stop": 198.0}, 197.5),
    case("LMT tif", {"symbol": "GOOG", "side": "BUY", "quantity": 10, "order_type": "LMT",
                     "limit_price": 165.0}, {"tif": "GTC", "quantity": 20}, 164.0),
    case("MOC quantity", {"symbol": "AMZN", "side": "BUY", "quantity": 10, "order_type": "MOC"},
         {"quantity": 25}, 186.0, auction="close"),
    case("OPG quantity", {"symbol": "NFLX", "side": "BUY", "quantity": 10, "order_type": "MKT", "tif": "OPG"},
         {"quantity": 15}, 641.0, auction="open"),
    case("MIDPRICE cap", {"symbol": "META", "side": "BUY", "quantity": 10, "order_type": "MIDPRICE",
                          "limit_price": 480.0}, {"limit": 495.0}, 494.0),
    case("REL offset and cap", {"symbol": "XOM", "side": "BUY", "quantity": 10, "order_type": "REL",
                                "offset": 0.01, "limit_price": 110.0}, {"offset": 0.05, "limit": 114.0},
         113.9),
)
# IB algos: their own runs, since they trade the same symbols.
ALGO_CASES = (
    case("Vwap quantity and limit", {"symbol": "AAPL", "side": "BUY", "quantity": 100, "order_type": "LMT",
                                     "limit_price": 185.0, "algo": "Vwap", "algo_params": {"maxPctVol": 0.1}},
         {"quantity": 200, "limit": 189.0}, 188.5),
    case("Twap limit", {"symbol": "MSFT", "side": "BUY", "quantity": 40, "order_type": "LMT",
                        "limit_price": 410.0, "algo": "Twap", "algo_params": {"strategyType": "Marketable"}},
         {"limit": 415.0}, 414.0),
    case("Adaptive quantity", {"symbol": "IBM", "side": "BUY", "quantity": 10, "order_type": "LMT",
                               "limit_price": 180.0, "algo": "Adaptive",
                               "algo_params": {"adaptivePriority": "Patient"}}, {"quantity": 20}, 179.0),
)
GROUPS = {"": CASES, "algo-": ALGO_CASES}
IDS = [c.name for c in CASES]
ALGO_IDS = [c.name for c in ALGO_CASES]
PRICES = {"AAPL": 190.0, "MSFT": 420.0, "IBM": 185.0, "JPM": 200.0, "GOOG": 170.0, "AMZN": 185.0,
          "NFLX": 640.0, "META": 500.0, "XOM": 115.0}


def targets(cases: tuple[Case, ...]) -> pd.DataFrame:
    """One frame of the cases, each row with its decision price (the planned limit, else the start)."""
    rows = [{**c.row, "decision_price": c.row.get("limit_price", PRICES[c.symbol])} for c in cases]
    frame = pd.DataFrame(rows)
    if "algo_params" in frame:
        frame["algo_params"] = [json.dumps(p) for p in frame["algo_params"]]
    return frame


def check_row(c: Case, row: pd.Series, status: str) -> None:
    """The order's row shows the working terms, its original_* the planned ones."""
    assert row["status"] == status, (c.name, row["status"], row["reason"])
    for keyword, value in c.changes.items():
        name = NAMES[keyword]
        original = None if pd.isna(row[f"original_{name}"]) else row[f"original_{name}"]
        assert (row[name], original) == (value, c.planned[name]), (c.name, name)
    assert row["amendments"] == 1
    if status == "FILLED":
        assert row["filled_quantity"] == row["quantity"]


def checked_row(db, run_key: str, c: Case, end: str) -> tuple[Any, str, pd.Series]:
    """The ledger, the run id and the case's order row, with its terms and amendment events checked."""
    ledger = kit.ledger(db)
    run_id = ledger.resolve_run(run_key)
    [row] = [r for _, r in ledger.orders(run_id).iterrows() if r["symbol"] == c.symbol]
    check_row(c, row, "FILLED" if end == "fill" else "CANCELLED")
    coid = row["client_order_id"]
    assert amend_kinds(db, run_key)[coid] == ["amend_requested", "amend_accepted"]
    assert accepted_changes(db, run_key, coid) == {NAMES[k]: v for k, v in c.changes.items()}
    return ledger, run_id, row


def accepted_changes(db, run_key: str, coid: str) -> dict[str, Any]:
    ledger = kit.ledger(db)
    events = ledger.events(ledger.resolve_run(run_key))
    detail = events.query(f"kind == 'amend_accepted' and client_order_id == '{coid}'")["detail"].iloc[0]
    return json.loads(detail)["changes"]


def check_fills(db, run_key: str, c: Case, row: pd.Series, fills: pd.DataFrame) -> None:
    """The whole amended quantity filled within the working limit; TCA's money is the fills against the
    decision price."""
    assert fills["quantity"].sum() == row["quantity"]
    limit = row["limit_price"]
    if not pd.isna(limit):
        prices = fills["price"]
        assert bool((prices <= limit).all() if c.row["side"] == "BUY" else (prices >= limit).all())
    if c.row["order_type"] == "TRAIL LIMIT":  # the limit follows the stop: 3 below it, never the planned 0.5
        assert (fills["price"] < c.move + 1).all() and (fills["price"] >= c.move - 1.5).all()
    costs = kit.tca(run_key, db=db).orders.loc[row["client_order_id"]]
    money = math.fsum(q * (p - row["decision_price"]) for q, p in zip(fills["quantity"], fills["price"],
                                                                     strict=True))
    sign = 1 if c.row["side"] == "BUY" else -1
    assert costs["execution_cost"] == pytest.approx(sign * money)


# ---- the mock broker ---------------------------------------------------------------------------------------
def execute(broker: MockBroker, db, run_key: str, cases: tuple[Case, ...], timeout: float = 0.3) -> kit.Run:
    return kit.execute(targets(cases), broker=broker, run_key=run_key, db=db, timeout=timeout,
                       on_timeout="leave", progress=False)


def move(broker: MockBroker, c: Case, price: float) -> None:
    if c.auction == "close":
        broker.set_close(c.symbol, price)
    elif c.auction == "open":
        broker.set_open(c.symbol, price)
    else:
        broker.set_price(c.symbol, price)


@pytest.fixture(scope="module")
def amended(tmp_path_factory):
    """Each group's cases placed, the market moved, amended, and then filled (run "fill") or cancelled
    (run "cancel"), on one mock per group."""
    db = tmp_path_factory.mktemp("amend-more-types") / "kit.duckdb"
    brokers, outcomes, followed = {}, {}, {}
    for group, cases in GROUPS.items():
        broker = brokers[group] = MockBroker(PRICES)
        for end in ("fill", "cancel"):
            placed = execute(broker, db, group + end, cases)
            assert set(placed.orders["status"]) == {"SUBMITTED"}, placed.notes
        for c in cases:
            for price in c.before:
                move(broker, c, price)
        for end in ("fill", "cancel"):
            for c in cases:
                outcomes[group + end, c.name] = kit.amend(group + end, c.symbol, broker=broker, db=db,
                                                          **c.changes)
        kit.cancel(group + "cancel", broker=broker, db=db)
        for c in cases:
            move(broker, c, c.move)
        followed[group] = execute(broker, db, group + "fill", cases, timeout=5)
    return db, brokers, outcomes, followed


def check_case(amended, group: str, c: Case, end: str) -> None:
    db, brokers, outcomes, followed = amended
    broker = brokers[group]
    assert outcomes[group + end, c.name].outcome == "accepted", outcomes[group + end, c.name].reason
    if end == "fill":
        assert followed[group].status == "done", followed[group].notes
    ledger, run_id, row = checked_row(db, group + end, c, end)
    coid = row["client_order_id"]
    assert broker.submitted.count(coid) == 1  # amended at the broker, never sent again
    working = broker.orders[coid].intent
    for keyword in c.changes:
        assert getattr(working, NAMES[keyword]) == row[NAMES[keyword]]  # the broker works the ledger's terms
    fills, told = recorded_and_told(ledger, run_id, broker, coid)
    if end == "cancel":
        assert told == {}
        return
    check_fills(db, group + end, c, row, fills)
    if c.row.get("algo") in ("Vwap", "Twap"):
        assert len(fills) == broker.algo_slices  # the amended quantity, re-sliced


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_each_type_is_amended_then_filled_or_cancelled_on_the_mock(amended, c, end):
    check_case(amended, "", c, end)


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", ALGO_CASES, ids=ALGO_IDS)
def test_each_algo_order_is_amended_then_filled_or_cancelled_on_the_mock(amended, c, end):
    check_case(amended, "algo-", c, end)


def test_a_trailing_stop_amended_after_a_move_trails_from_the_best_price_seen(amended):
    """Without the best price kept, the amended AAPL trail (3 from 199: 196) would not trigger at 196.5."""
    _, brokers, _, _ = amended
    trigger = brokers[""].orders["fill-AAPL-SELL"].trigger
    assert (trigger.best, trigger.stop, trigger.triggered) == (200.0, 197.0, True)


# ---- what kit refuses before sending (pure: kit.amending.check_changes) ---------------------------------
def intent(**fields: Any) -> OrderIntent:
    base = {"client_order_id": "r-X-SELL", "symbol": "X", "side": Side.SELL, "quantity": 10.0}
    return OrderIntent(**{**base, **fields})


TRAIL_AMOUNT = intent(order_type="TRAIL", trail_amount=2.0)
TRAIL_PERCENT = intent(order_type="TRAIL", trail_percent=2.0)


@pytest.mark.parametrize(("order", "changes", "reason"), [
    (TRAIL_AMOUNT, {"trail_percent": 1.0}, "the order trails by amount: amend trail_amount"),
    (TRAIL_PERCENT, {"trail_amount": 1.0}, "the order trails by percent: amend trail_percent"),
    (TRAIL_PERCENT, {"trail_percent": 100.0}, "trail_percent 100 must be below 100"),
    (TRAIL_AMOUNT, {"trail_amount": -1.0}, "trail_amount must be a positive number, not -1.0"),
    (TRAIL_AMOUNT, {"offset": 0.5}, "a TRAIL order has no offset to change"),
    (intent(order_type="TRAIL LIMIT", trail_amount=2.0, offset=0.5), {"limit_price": 1.0},
     "its limit follows its stop by the offset: amend offset"),
    (intent(order_type="LMT", limit_price=5.0), {"trail_amount": 1.0}, "a LMT order has no trail_amount"),
    (intent(order_type="REL", offset=0.01), {"offset": -0.01}, "offset must be a number >= 0"),
    (intent(order_type="MOC"), {"tif": "GTC"}, "a MOC order needs tif DAY, not GTC (IB 113)"),
    (intent(order_type="LMT", limit_price=5.0, tif="OPG"), {"tif": "DAY"}, "a tif OPG order keeps its tif"),
    (intent(order_type="LMT", limit_price=5.0), {"tif": "GTD"}, "tif 'GTD' cannot be amended to"),
    (intent(order_type="LMT", limit_price=5.0, algo="Vwap"), {"tif": "GTC"},
     "an Vwap algo order is a day order: tif must stay DAY"),
    (intent(order_type="LMT", limit_price=5.0, algo="Vwap"), {"algo_params": (("maxPctVol", "0.2"),)},
     "algo_params cannot be amended"),
])
def test_an_amendment_the_order_type_cannot_take_is_bad_input_naming_the_order(order, changes, reason):
    with pytest.raises(InputError) as error:
        check_changes(order, changes)
    assert "r-X-SELL" in str(error.value) and reason in str(error.value)


def test_the_amendable_fields_of_each_type_pass_as_numbers_and_tif_as_its_word():
    assert check_changes(TRAIL_AMOUNT, {"trail_amount": 3, "stop": None}) == {"trail_amount": 3.0}
    assert check_changes(intent(order_type="REL", offset=0.01), {"offset": 0}) == {"offset": 0.0}
    assert check_changes(intent(order_type="MIDPRICE"), {"limit_price": 10}) == {"limit_price": 10.0}
    assert check_changes(intent(order_type="LMT", limit_price=5.0), {"tif": "ioc"}) == {"tif": "IOC"}
    assert check_changes(TRAIL_PERCENT, {"stop_price": 9}) == {"stop_price": 9.0}


# ---- the trail's rule (pure: kit.order_types.Trigger) -----------------------------------------------------
prices = st.lists(st.floats(min_value=50, max_value=150, allow_nan=False), min_size=1, max_size=20)


@given(side=st.sampled_from(["BUY", "SELL"]), before=prices, after=prices,
       amount=st.floats(min_value=0.5, max_value=20), new=st.floats(min_value=0.5, max_value=20))
def test_an_amended_trail_is_measured_from_the_best_price_seen_and_trails_on(side, before, after, amount,
                                                                             new):
    """After any prices, a new trailing amount puts the stop that far from the best price seen so far;
    later prices move it on as if the order had trailed by the new amount from that best price."""
    trigger = Trigger(side, "TRAIL", trail_amount=amount)
    for price in before:
        if trigger.observe(price):
            return  # triggered before the amendment: an elected stop keeps its stop
    best = min(before) if side == "BUY" else max(before)
    trigger.amend({"trail_amount": new})
    assert trigger.best == best
    assert trigger.stop == pytest.approx(best + new if side == "BUY" else best - new)
    fresh = Trigger(side, "TRAIL", stop=trigger.stop, trail_amount=new, best=best)
    for price in after:
        assert trigger.observe(price) == fresh.observe(price)
        assert trigger.stop == fresh.stop


def test_an_elected_trailing_stop_keeps_its_stop_when_amended():
    trigger = Trigger("SELL", "TRAIL LIMIT", trail_amount=2.0, offset=0.5)
    assert not trigger.observe(100.0) and trigger.observe(97.5)
    trigger.amend({"trail_amount": 5.0, "offset": 1.0})
    assert (trigger.stop, trigger.working_limit()) == (98.0, 97.0)  # the limit follows the new offset


# ---- reading IB's answer (pure: kit.brokers.ib_terms) -----------------------------------------------------
def open_order(**fields: Any) -> Any:
    from types import SimpleNamespace

    unset = 1.7976931348623157e308
    base = {"orderType": "TRAIL", "action": "SELL", "totalQuantity": 10.0, "lmtPrice": unset, "auxPrice": 2.0,
            "trailingPercent": unset, "trailStopPrice": unset, "lmtPriceOffset": unset, "tif": "DAY"}
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(("action", "reported", "shown"), [
    ("SELL", 198.5, 198.0), ("SELL", 198.0, 198.0), ("SELL", 197.5, 197.5),
    ("BUY", 197.5, 198.0), ("BUY", 198.5, 198.5),
])
def test_a_trailing_stop_amendment_is_taken_once_ibs_stop_is_at_or_past_it(action, reported, shown):
    """IB's trailStopPrice moves with the market: a SELL's stop at or above the one asked for (a BUY's at
    or below) shows the amendment taken; short of it, not yet."""
    from kit.brokers.ib_terms import terms, wanted_terms

    pending = wanted_terms("TRAIL", {"stop_price": 198.0})
    assert terms(open_order(action=action, trailStopPrice=reported), pending)["stop_price"] == shown


@pytest.mark.parametrize(("action", "before", "reported", "taken"), [
    ("SELL", 200.0, 200.0, False),  # IB's answer not in yet: the old stop, which IB never lowers
    ("SELL", 200.0, 200.5, False),  # the old stop trailed on: not a sign of the looser one
    ("SELL", 200.0, 198.0, True), ("SELL", 200.0, 199.0, True),  # taken, and trailed on from there
    ("BUY", 196.0, 196.0, False), ("BUY", 196.0, 198.0, True), ("BUY", 196.0, 197.0, True),
])
def test_a_trailing_stop_moved_looser_is_taken_only_from_a_stop_the_old_one_cannot_be(action, before,
                                                                                       reported, taken):
    from kit.brokers.ib_terms import terms, wanted_terms

    pending = wanted_terms("TRAIL", {"stop_price": 198.0})
    shown = terms(open_order(action=action, trailStopPrice=reported), pending, stop_before=before)
    assert (shown["stop_price"] == 198.0) is taken


def test_each_type_is_compared_on_its_own_ib_fields_and_a_moving_stop_only_while_amending():
    from kit.brokers.ib_terms import TIF_CODES, intent_terms, terms, wanted_terms

    moving = open_order(trailStopPrice=150.0, tif="GTC")
    assert terms(moving) == {"quantity": 10.0, "trail_amount": 2.0}  # a moved stop is never an amendment
    assert terms(moving, wanted_terms("TRAIL", {"tif": "GTC"}))["tif"] == TIF_CODES["GTC"]
    limit = open_order(orderType="TRAIL LIMIT", lmtPrice=147.5, lmtPriceOffset=0.5, auxPrice=3.0)
    assert terms(limit) == {"quantity": 10.0, "trail_amount": 3.0, "offset": 0.5}  # lmtPrice follows the stop
    assert terms(open_order(orderType="REL", auxPrice=0.05, lmtPrice=114.0)) == \
        {"quantity": 10.0, "limit_price": 114.0, "offset": 0.05}
    assert terms(open_order(orderType="STP", auxPrice=185.0)) == {"quantity": 10.0, "stop_price": 185.0}
    assert intent_terms(intent(order_type="TRAIL", trail_percent=1.5, stop_price=90.0)) == \
        {"quantity": 10.0, "trail_percent": 1.5}
