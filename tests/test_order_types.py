"""The order types beyond MKT and LMT (docs/orders.md): validation with IB's refusals, the price a notional
is taken at, the IB fields each type sends, and each type placed, filled and cancelled on the mock broker
through kit.execute, with the ledger keeping what was asked for and a re-run refusing a changed order.

Scenario brokers move the market on the broker's own events (the order's acknowledgement), never on a timer.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import given, settings

import kit
import kit.clock
from kit.brokers.ib import IBBroker
from kit.brokers.mock import MockBroker
from kit.config import IBSettings
from kit.errors import LiveAccountError, PayloadConflictError, ValidationError
from kit.model import Accepted, OrderIntent, Side
from kit.order_types import (
    CLOSE_AUCTION,
    LIMITED,
    ORDER_TYPES,
    STOPS,
    TIFS,
    TRAILING,
    Trigger,
    ib_fields,
    ib_good_till,
)
from kit.validate import validate_orders

PRICES = {"AAPL": 190.0, "MSFT": 410.0}
pytestmark = pytest.mark.usefixtures("clean_config")


def row(**fields) -> pd.DataFrame:
    """One AAPL order of 10 (BUY unless side= says otherwise) with these fields."""
    return pd.DataFrame([{"symbol": "AAPL", "side": "BUY", "quantity": 10, **fields}])


def problems_of(frame: pd.DataFrame, now: datetime | None = None) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationError) as caught:
        validate_orders(frame, "k", now=now)
    return caught.value.problems


# ---- validation: each type's fields, and what IB refuses ---------------------------------------------------

REFUSED = [
    ("STP without stop", dict(order_type="STP"), "STP order without stop_price"),
    (
        "STP LMT without limit",
        dict(order_type="STP LMT", stop_price=195.0),
        "STP LMT order without limit_price",
    ),
    ("LOC without limit", dict(order_type="LOC"), "LOC order without limit_price"),
    (
        "MOC with a limit",
        dict(order_type="MOC", limit_price=190.0),
        "limit_price 190.0 given for a MOC order (use LOC)",
    ),
    ("MOC not DAY", dict(order_type="MOC", tif="GTC"), "MOC needs tif DAY, not GTC (IB 113"),
    (
        "OPG on a stop",
        dict(order_type="STP", stop_price=195.0, tif="OPG"),
        "tif OPG (at the open) is for MKT or LMT",
    ),
    (
        "trail with both",
        dict(order_type="TRAIL", trail_amount=1.0, trail_percent=1.0),
        "trailing stop with both trail_amount and trail_percent (give one)",
    ),
    ("trail with neither", dict(order_type="TRAIL"), "TRAIL order without trail_amount or trail_percent"),
    (
        "trail percent of 100",
        dict(order_type="TRAIL", side="SELL", trail_percent=100.0),
        "trail_percent 100 must be below 100",
    ),
    (
        "trail limit without offset",
        dict(order_type="TRAIL LIMIT", trail_amount=1.0),
        "TRAIL LIMIT order without offset (the limit offset from the stop)",
    ),
    ("REL without offset", dict(order_type="REL"), "REL order without offset (the peg offset)"),
    ("negative offset", dict(order_type="REL", offset=-0.01), "offset -0.01 must be a number >= 0"),
    (
        "stop on a LMT",
        dict(order_type="LMT", limit_price=189.0, stop_price=180.0),
        "stop_price 180.0 given for a LMT order (use STP or STP LMT)",
    ),
    ("offset on a MKT", dict(offset=0.05), "offset 0.05 given for a MKT order (use REL or TRAIL LIMIT)"),
    ("negative stop", dict(order_type="STP", stop_price=-5.0), "stop_price -5.0 must be a positive number"),
    ("GTD without good_till", dict(tif="GTD"), "tif GTD without good_till"),
    ("good_till without GTD", dict(good_till="2030-01-02 15:00"), "given with tif DAY (use tif GTD)"),
    (
        "good_till not a time",
        dict(tif="GTD", good_till="tomorrow-ish"),
        "good_till 'tomorrow-ish' is not a time",
    ),
    ("outside_rth not a flag", dict(outside_rth="yes"), "outside_rth 'yes' must be True or False"),
    ("outside_rth on MOC", dict(order_type="MOC", outside_rth=True), "outside_rth on an auction order"),
    ("unknown algo", dict(algo="Iceberg"), "algo 'Iceberg' is not one of Adaptive, Twap, Vwap"),
    (
        "algo on a stop",
        dict(order_type="STP", stop_price=195.0, algo="Adaptive"),
        "algo Adaptive runs on MKT or LMT orders, not STP",
    ),
    ("algo params without algo", dict(algo_params={"maxPctVol": 0.1}), "given without an algo"),
    (
        "adaptive priority",
        dict(algo="Adaptive", algo_params={"adaptivePriority": "Hurry"}),
        "algo Adaptive adaptivePriority 'Hurry' is not one of Urgent, Normal, Patient",
    ),
    (
        "vwap participation",
        dict(algo="Vwap", algo_params={"maxPctVol": 0.9}),
        "algo Vwap maxPctVol 0.9 is not a number from 0.01 to 0.5",
    ),
    (
        "unknown algo param",
        dict(algo="Twap", algo_params={"speed": "fast"}),
        "algo Twap has no parameter speed (IB's: strategyType, startTime, endTime, allowPastEndTime)",
    ),
    (
        "twap window backwards",
        dict(algo="Twap", algo_params={"startTime": "15:00", "endTime": "10:00"}),
        "startTime 15:00:00 US/Eastern is not before endTime 10:00:00 US/Eastern",
    ),
    ("algo on a GTC order", dict(algo="Vwap", tif="GTC"), "algo Vwap orders are day orders"),
    ("algo directly routed", dict(algo="Adaptive", exchange="NYSE"), "algo Adaptive needs SMART routing"),
    (
        "REL directly routed",
        dict(order_type="REL", offset=0.01, exchange="NYSE"),
        "REL orders need SMART routing",
    ),
    (
        "MIDPRICE outside the US",
        dict(order_type="MIDPRICE", currency="EUR"),
        "MIDPRICE orders are for US stocks",
    ),
    ("TWAP on a market order", dict(algo="Twap"), "algo Twap works a limit order"),
    ("VWAP outside the US", dict(algo="Vwap", currency="EUR"), "algo Vwap is for US stocks"),
    ("algo params not a mapping", dict(algo="Vwap", algo_params="fast please"), "is not a mapping"),
]


@pytest.mark.parametrize(("fields", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_bad_order_type_row_is_refused_naming_the_row_and_the_reason(fields, reason):
    problems = problems_of(row(**fields))
    assert [name for name, _ in problems] == ["row 0 (AAPL)"] * len(problems)
    assert any(reason in text for _, text in problems), problems


def test_a_frame_of_good_order_type_rows_gives_their_intents():
    frame = pd.DataFrame(
        [
            {"symbol": "AAPL", "quantity": 10, "order_type": "moc"},
            {
                "symbol": "MSFT",
                "quantity": -5,
                "order_type": "STP LMT",
                "stop_price": 400,
                "limit_price": 399.5,
            },
            {"symbol": "IBM", "quantity": -5, "order_type": "TRAIL", "trail_percent": 2},
            {
                "symbol": "TSLA",
                "quantity": 3,
                "algo": "vwap",
                "algo_params": {"maxPctVol": 0.1, "noTakeLiq": True, "startTime": "10:00"},
            },
            {"symbol": "NVDA", "quantity": 3, "order_type": "REL", "offset": 0.02, "outside_rth": True},
            {
                "symbol": "AMD",
                "quantity": 3,
                "algo": "Adaptive",
                "algo_params": '{"adaptivePriority": "patient"}',
            },
        ]
    )
    intents = {i.symbol: i for i in validate_orders(frame, "k")}
    assert intents["AAPL"].order_type == "MOC" and intents["AAPL"].limit_price is None
    assert (intents["MSFT"].side, intents["MSFT"].stop_price, intents["MSFT"].limit_price) == (
        Side.SELL,
        400,
        399.5,
    )
    assert (intents["IBM"].trail_percent, intents["IBM"].trail_amount) == (2.0, None)
    assert intents["TSLA"].algo == "Vwap"
    assert intents["TSLA"].algo_params == (
        ("maxPctVol", "0.1"),
        ("startTime", "10:00:00 US/Eastern"),
        ("noTakeLiq", "1"),
    )  # in IB's order, as IB's text
    assert intents["AMD"].algo_params == (("adaptivePriority", "Patient"),)  # JSON text, as from a CSV
    assert intents["NVDA"].offset == 0.02 and intents["NVDA"].outside_rth is True
    assert validate_orders(row(algo="Adaptive"), "k")[0].algo_params == (("adaptivePriority", "Normal"),)


NOW = datetime(2026, 6, 1, 14, 0)  # naive UTC: 10:00 in New York


def test_a_good_till_time_is_read_in_the_exchange_zone_and_must_be_after_the_callers_now():
    [late] = validate_orders(row(tif="GTD", good_till="2026-06-01 11:00"), "k", now=NOW)
    assert late.good_till == datetime(2026, 6, 1, 15, 0)  # 11:00 New York (EDT) is 15:00 UTC
    assert ib_good_till(late.good_till, "USD") == "20260601 11:00:00 US/Eastern"
    aware = pd.Timestamp("2026-06-01 16:30", tz="Europe/London")
    assert validate_orders(row(tif="GTD", good_till=aware), "k", now=NOW)[0].good_till == datetime(
        2026, 6, 1, 15, 30
    )
    [(name, reason)] = problems_of(row(tif="GTD", good_till="2026-06-01 09:00"), now=NOW)
    assert name == "row 0 (AAPL)" and reason.startswith("good_till 2026-06-01 09:00:00-04:00 is in the past")
    assert "now 2026-06-01 14:00:00 UTC" in reason


def test_kit_plan_checks_good_till_against_kits_clock(monkeypatch):
    monkeypatch.setattr(kit.clock, "utcnow", lambda: datetime(2026, 6, 1, 20, 0))
    with pytest.raises(ValidationError, match="is in the past"):
        kit.plan(row(tif="GTD", good_till="2026-06-01 15:00"), prices=PRICES, run_key="gtd")
    plan = kit.plan(row(tif="GTD", good_till="2026-06-02 15:00"), prices=PRICES, run_key="gtd")
    assert plan.intents[0].good_till == datetime(2026, 6, 2, 19, 0)


_CELLS = {
    "order_type": [*ORDER_TYPES, "stp lmt", None],
    "tif": [*TIFS, None],
    "limit_price": [189.0, math.nan, -1.0],
    "stop_price": [195.0, math.nan],
    "trail_amount": [1.5, math.nan],
    "trail_percent": [2.0, math.nan, 150.0],
    "offset": [0.05, math.nan],
    "outside_rth": [True, False, None],
    "algo": ["Adaptive", "Twap", "Vwap", None],
    "good_till": ["2030-01-02 15:00", None],
}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_combination_is_either_refused_naming_the_row_or_an_order_ib_can_take(data):
    fields = {
        name: data.draw(st.sampled_from(cells)) for name, cells in _CELLS.items() if data.draw(st.booleans())
    }
    frame = row(side=data.draw(st.sampled_from(["BUY", "SELL"])), **fields)
    try:
        [intent] = validate_orders(frame, "k", now=NOW)
    except ValidationError as error:
        assert error.problems and all(name == "row 0 (AAPL)" for name, _ in error.problems)
        return
    kind = intent.order_type
    capped = kind in ("MIDPRICE", "REL") and fields.get("limit_price") == 189.0
    assert (intent.limit_price is not None) == (kind in LIMITED or capped)
    assert (intent.stop_price is not None) >= (kind in STOPS)
    assert (intent.trail_amount is None) != (intent.trail_percent is None) or kind not in TRAILING
    assert kind not in CLOSE_AUCTION or intent.tif == "DAY"
    assert (intent.good_till is not None) == (intent.tif == "GTD")
    assert not intent.algo or (kind in ("MKT", "LMT") and intent.tif == "DAY")
    sent = ib_fields(intent)
    assert sent["orderType"] == kind and sent["tif"] == intent.tif
    if kind in STOPS:
        assert sent["auxPrice"] == intent.stop_price
    if kind in TRAILING:
        assert sent.get("auxPrice", sent.get("trailingPercent")) in (
            intent.trail_amount,
            intent.trail_percent,
        )


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(["BUY", "SELL"]),
    amount=st.floats(0.1, 5),
    path=st.lists(st.floats(150, 250), min_size=1, max_size=30),
)
def test_a_trailing_stop_follows_the_best_price_and_triggers_when_the_price_comes_back_by_its_amount(
    side, amount, path
):
    trigger = Trigger(side, "TRAIL", trail_amount=amount)
    best = None
    for price in path:
        was = trigger.stop
        fired = trigger.observe(price)
        best = price if best is None else (min(best, price) if side == "BUY" else max(best, price))
        expected = best + amount if side == "BUY" else best - amount
        assert trigger.stop == pytest.approx(expected)
        if was is not None:  # the stop only ever moves in the order's favour
            assert trigger.stop <= was if side == "BUY" else trigger.stop >= was
        assert fired == (price >= trigger.stop if side == "BUY" else price <= trigger.stop)
        if fired:
            break


# ---- the price a notional is taken at ----------------------------------------------------------------------


def test_stops_and_pegs_are_valued_at_the_reference_and_limit_orders_at_their_limit():
    frame = pd.DataFrame(
        [
            {"symbol": "AAPL", "side": "BUY", "quantity": 100, "order_type": "STP", "stop_price": 500.0},
            {"symbol": "MSFT", "side": "BUY", "quantity": 10, "order_type": "LOC", "limit_price": 420.0},
            {"symbol": "IBM", "side": "BUY", "quantity": 10, "order_type": "STP", "stop_price": 250.0},
        ]
    )
    plan = kit.plan(frame, prices=PRICES, run_key="value", risk={"max_order_notional": 30_000})
    notional = dict(zip(plan.orders["symbol"], plan.orders["notional"], strict=True))
    assert notional == {"AAPL": 19_000.0, "MSFT": 4_200.0, "IBM": 2_500.0}  # IBM: no reference, the stop
    assert plan.orders["risk"].tolist() == ["ok", "ok", "ok"]
    midprice = kit.plan(
        row(quantity=200, order_type="MIDPRICE", limit_price=1.0),
        prices=PRICES,
        run_key="m",
        risk={"max_order_notional": 30_000},
    )
    assert midprice.breaches == (("max_order_notional: 38,000.00 > 30,000.00",),)  # the cap is not the price


def test_ib_gets_each_type_with_ibs_own_field_names():
    broker = IBBroker(IBSettings(port=1), library="ib_async")

    def sent(**fields):
        [intent] = validate_orders(row(**fields), "k", now=NOW)
        order = broker._ib_order(intent)
        return order

    order = sent(order_type="STP LMT", stop_price=195.0, limit_price=195.5, outside_rth=True)
    assert (order.orderType, order.auxPrice, order.lmtPrice, order.outsideRth) == (
        "STP LMT",
        195.0,
        195.5,
        True,
    )
    order = sent(side="SELL", order_type="TRAIL LIMIT", trail_amount=1.0, stop_price=188.0, offset=0.1)
    assert (order.orderType, order.auxPrice, order.trailStopPrice, order.lmtPriceOffset) == (
        "TRAIL LIMIT",
        1.0,
        188.0,
        0.1,
    )
    order = sent(side="SELL", order_type="TRAIL", trail_percent=1.5)
    assert (order.trailingPercent, order.auxPrice > 1e300) == (1.5, True)  # auxPrice left unset
    order = sent(order_type="REL", offset=0.02, limit_price=191.0)
    assert (order.orderType, order.auxPrice, order.lmtPrice) == ("REL", 0.02, 191.0)
    assert (sent(order_type="MOC").orderType, sent(tif="OPG").tif) == ("MOC", "OPG")
    order = sent(tif="GTD", good_till="2026-06-01 15:30")
    assert (order.tif, order.goodTillDate) == ("GTD", "20260601 15:30:00 US/Eastern")
    order = sent(
        order_type="LMT",
        limit_price=191.0,
        algo="Twap",
        algo_params={
            "strategyType": "Matching Midpoint",
            "startTime": "10:00",
            "endTime": "11:30:00 US/Eastern",
            "allowPastEndTime": False,
        },
    )
    assert order.algoStrategy == "Twap"
    assert [(p.tag, p.value) for p in order.algoParams] == [
        ("strategyType", "Matching Midpoint"),
        ("startTime", "10:00:00 US/Eastern"),
        ("endTime", "11:30:00 US/Eastern"),
        ("allowPastEndTime", "0"),
    ]


# ---- the mock broker: place, fill and cancel each type -----------------------------------------------------


class Market(MockBroker):
    """Plays the `script` steps (("price" | "close" | "open", symbol, price)) of a symbol, in order, the
    moment its order is acknowledged: the market moves while the order works."""

    def __init__(self, *script: tuple[str, str, float], **kwargs):
        super().__init__(PRICES, **kwargs)
        self.script = list(script)

    def emit(self, event):
        super().emit(event)
        if isinstance(event, Accepted):
            symbol = self.orders[event.client_order_id].intent.symbol
            steps = [step for step in self.script if step[1] == symbol]
            self.script = [step for step in self.script if step[1] != symbol]
            for what, _, price in steps:
                {"price": self.set_price, "close": self.set_close, "open": self.set_open}[what](symbol, price)


def run_one(broker: MockBroker, db, timeout: float = 5.0, **fields):
    return kit.execute(row(**fields), broker=broker, run_key="ot", db=db, timeout=timeout)


def outcome(run) -> tuple[str, float, list[float]]:
    order = run.orders.iloc[0]
    return order["status"], order["filled_quantity"], run.fills["price"].tolist()


CASES = [
    (
        "MOC fills at the close",
        Market(("close", "AAPL", 191.25)),
        dict(order_type="MOC"),
        ("FILLED", 10, [191.25]),
    ),
    (
        "LOC reached",
        Market(("close", "AAPL", 188.0)),
        dict(order_type="LOC", limit_price=189.0),
        ("FILLED", 10, [188.0]),
    ),
    (
        "LOC not reached is cancelled",
        Market(("close", "AAPL", 190.5)),
        dict(order_type="LOC", limit_price=189.0),
        ("CANCELLED", 0, []),
    ),
    (
        "MKT on the open",
        Market(("close", "AAPL", 1.0), ("open", "AAPL", 189.5)),
        dict(tif="OPG"),
        ("FILLED", 10, [189.5]),
    ),
    (
        "STP triggers when the price reaches it",
        Market(("price", "AAPL", 194.0), ("price", "AAPL", 195.2)),
        dict(order_type="STP", stop_price=195.0),
        ("FILLED", 10, [195.2]),
    ),
    (
        "STP LMT gapped past its limit rests",
        Market(("price", "AAPL", 197.0)),
        dict(order_type="STP LMT", stop_price=195.0, limit_price=196.0),
        ("CANCELLED", 0, []),
    ),
    (
        "trailing SELL by amount",
        Market(("price", "AAPL", 195.0), ("price", "AAPL", 193.5), ("price", "AAPL", 192.9)),
        dict(side="SELL", order_type="TRAIL", trail_amount=2.0),
        ("FILLED", 10, [192.9]),
    ),
    (
        "trailing BUY by percent",
        Market(("price", "AAPL", 180.0), ("price", "AAPL", 181.0), ("price", "AAPL", 182.0)),
        dict(order_type="TRAIL", trail_percent=1.0),
        ("FILLED", 10, [182.0]),
    ),
    (
        "TRAIL LIMIT works at stop minus offset",
        Market(("price", "AAPL", 187.9)),
        dict(side="SELL", order_type="TRAIL LIMIT", trail_amount=2.0, offset=0.5),
        ("FILLED", 10, [187.9]),
    ),
    (
        "MIDPRICE within its cap",
        Market(("price", "AAPL", 191.5)),
        dict(side="SELL", order_type="MIDPRICE", limit_price=191.0),
        ("FILLED", 10, [191.5]),
    ),
    ("REL at the reference", Market(), dict(order_type="REL", offset=0.02), ("FILLED", 10, [190.0])),
    (
        "Adaptive like its LMT",
        Market(),
        dict(
            order_type="LMT", limit_price=191.0, algo="Adaptive", algo_params={"adaptivePriority": "Urgent"}
        ),
        ("FILLED", 10, [190.0]),
    ),
    (
        "GTD and outside_rth fill as usual",
        Market(),
        dict(tif="GTD", good_till="2099-01-02 15:00", outside_rth=True),
        ("FILLED", 10, [190.0]),
    ),
]


@pytest.mark.parametrize(("broker", "fields", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_mock_fills_each_type_by_its_rule(broker, fields, expected, db):
    run = run_one(broker, db, timeout=0.5 if expected[0] == "CANCELLED" else 5.0, **fields)
    assert outcome(run) == expected


def test_an_auction_order_waits_for_its_auction_and_a_cancel_ends_it(db):
    broker = Market(("price", "AAPL", 100.0), ("open", "AAPL", 100.0))  # neither is the close
    run = run_one(broker, db, timeout=0.3, order_type="MOC")
    assert outcome(run) == ("CANCELLED", 0, [])
    trail = kit.ledger(db).events(run.run_id)
    assert "cancelled" in trail["kind"].tolist()  # on the broker's word, after the timeout's cancel


def test_twap_and_vwap_fill_in_slices_followed_by_events(db):
    broker = Market(algo_slices=4)
    run = run_one(broker, db, quantity=100, algo="Vwap", algo_params={"maxPctVol": 0.2})
    status, filled, prices = outcome(run)
    assert (status, filled, len(prices)) == ("FILLED", 100, 4)
    assert run.fills["quantity"].sum() == 100 and len(set(run.fills["exec_id"])) == 4


def test_the_ledger_keeps_each_field_and_a_rerun_with_a_changed_stop_is_refused(db):
    fields = dict(
        side="SELL",
        order_type="STP LMT",
        stop_price=180.0,
        limit_price=179.5,
        outside_rth=True,
        tif="GTD",
        good_till="2099-01-02 15:00",
    )
    run = run_one(MockBroker(PRICES), db, timeout=0.3, **fields)
    stored = kit.ledger(db).orders(run.run_id).iloc[0]
    assert (stored["order_type"], stored["stop_price"], stored["limit_price"]) == ("STP LMT", 180.0, 179.5)
    assert bool(stored["outside_rth"]) and stored["good_till"] == pd.Timestamp("2099-01-02 20:00")
    algo = run_one(
        MockBroker(PRICES),
        db.with_name("algo.duckdb"),
        algo="Vwap",
        algo_params={"maxPctVol": 0.25, "noTakeLiq": False},
    )
    assert json.loads(kit.ledger(db.with_name("algo.duckdb")).orders(algo.run_id).iloc[0]["algo_params"]) == {
        "maxPctVol": "0.25",
        "noTakeLiq": "0",
    }

    with pytest.raises(PayloadConflictError, match=r"stop_price 180\.0 -> 181\.0"):
        run_one(MockBroker(PRICES), db, timeout=0.3, **{**fields, "stop_price": 181.0})
    resumed = MockBroker(PRICES)
    again = run_one(resumed, db, timeout=0.3, **fields)  # the same order: resumed, not re-sent
    assert again.run_id == run.run_id and resumed.submitted == []
    with pytest.raises(PayloadConflictError, match="algo_params"):
        run_one(MockBroker(PRICES), db.with_name("algo.duckdb"), algo="Vwap", algo_params={"maxPctVol": 0.3})


def test_a_dry_run_and_the_mock_what_if_cover_the_new_types(db):
    broker = MockBroker(PRICES)
    frame = pd.DataFrame(
        [
            {"symbol": "AAPL", "side": "BUY", "quantity": 100, "order_type": "LOC", "limit_price": 189.0},
            {"symbol": "MSFT", "side": "SELL", "quantity": 10, "order_type": "TRAIL", "trail_percent": 1.0},
        ]
    )
    dry = kit.execute(frame, broker=broker, run_key="dry", db=db, dry_run=True)
    assert dry.status == "planned" and broker.submitted == []
    assert (
        dry.orders["order_type"].tolist() == ["LOC", "TRAIL"] and dry.orders["trail_percent"].iloc[1] == 1.0
    )
    trail = kit.ledger(db).events(dry.run_id)
    estimates = [json.loads(d) for d in trail[trail["kind"] == "what_if"]["detail"]]
    assert [e["notional"] for e in estimates] == [18_900.0, 4_100.0]  # the LOC at its limit, the stop at 410


def test_the_live_guard_covers_the_new_fields(monkeypatch, db):
    class Live(MockBroker):
        is_paper, account = False, "U1234567"

    monkeypatch.setenv("KIT_ALLOW_LIVE", "1")
    broker = Live(PRICES)
    approved = kit.plan(row(order_type="STP", stop_price=195.0), broker=broker, run_key="live", db=db)
    changed = kit.plan(row(order_type="STP", stop_price=196.0), broker=broker, run_key="live", db=db)
    assert changed.hash != approved.hash
    with pytest.raises(LiveAccountError, match="does not match this plan"):
        kit.execute(changed, broker=broker, db=db, approve=approved.hash, timeout=0.3)
    assert broker.submitted == []


def test_mock_what_if_values_a_limit_order_at_its_limit():
    intent = OrderIntent("k-AAPL-BUY", "AAPL", Side.BUY, 100, order_type="LMT", limit_price=150.0)
    assert asyncio.run(MockBroker(PRICES).what_if(intent))["notional"] == 15_000.0


def test_target_positions_are_reached_with_an_order_type_such_as_market_on_close(db):
    positions = pd.DataFrame(
        {"symbol": ["AAPL", "MSFT"], "target_quantity": [100, -20], "order_type": "MOC", "algo_params": None}
    )
    broker = Market(("close", "AAPL", 191.0), ("close", "MSFT", 409.0))
    run = kit.execute(positions, broker=broker, run_key="rebalance", db=db, timeout=5)
    assert run.orders[["symbol", "side", "order_type", "status"]].values.tolist() == [
        ["AAPL", "BUY", "MOC", "FILLED"],
        ["MSFT", "SELL", "MOC", "FILLED"],
    ]
    assert sorted(run.fills["price"]) == [191.0, 409.0]
