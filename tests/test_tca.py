"""Tests of kit.tca: hand-computed arithmetic on a small two-currency run, edge cases, and properties.

Every expected number below is worked out by hand in the comment next to it, from the definitions in the
module docstring of kit/tca.py (s = +1 for BUY, -1 for SELL; positive means a cost).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.costs import ORDER_COLUMNS, SUMMARY_COLUMNS, TcaResult, tca

NAN = math.nan
T0 = pd.Timestamp("2026-01-05 14:30:00")  # naive UTC, as the ledger stores it
ORDER_FIELDS = [
    "client_order_id",
    "run_id",
    "symbol",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "status",
    "filled_quantity",
    "remaining_quantity",
    "avg_fill_price",
    "commission",
    "decision_price",
    "arrival_price",
    "submitted_at",
    "currency",
]
FILL_FIELDS = [
    "exec_id",
    "client_order_id",
    "run_id",
    "symbol",
    "side",
    "quantity",
    "price",
    "commission",
    "currency",
    "exchange",
    "time",
]


def make_orders(rows: list[dict]) -> pd.DataFrame:
    """Orders in the ledger's shape; the order row's own fill aggregates are deliberately junk (-1), because
    tca must take them from the fills."""
    base = {
        "run_id": "r1",
        "order_type": "MKT",
        "limit_price": NAN,
        "status": "FILLED",
        "filled_quantity": -1.0,
        "remaining_quantity": -1.0,
        "avg_fill_price": -1.0,
        "commission": -1.0,
        "decision_price": NAN,
        "arrival_price": NAN,
        "submitted_at": T0,
        "currency": "USD",
    }
    return pd.DataFrame([{**base, **row} for row in rows], columns=ORDER_FIELDS)


def make_fills(rows: list[dict]) -> pd.DataFrame:
    base = {"run_id": "r1", "symbol": "X", "side": "BUY", "currency": "USD", "exchange": "SMART"}
    return pd.DataFrame([{**base, **row} for row in rows], columns=FILL_FIELDS)


ORDERS = make_orders(
    [
        # A BUY that pays up, one fill.
        dict(client_order_id="r1-AAPL-BUY", symbol="AAPL", side="BUY", quantity=100,
             decision_price=100.0, arrival_price=100.5),
        # A SELL that sells lower, two fills at different prices, cancelled with 50 left.
        dict(client_order_id="r1-MSFT-SELL", symbol="MSFT", side="SELL", quantity=250, status="CANCELLED",
             decision_price=50.0, arrival_price=49.8),
        # A SELL that sells higher than decided: a gain, in EUR.
        dict(client_order_id="r1-SAP-SELL", symbol="SAP", side="SELL", quantity=10, currency="EUR",
             decision_price=200.0, arrival_price=201.0),
        # A BUY with no fills at all.
        dict(client_order_id="r1-NVDA-BUY", symbol="NVDA", side="BUY", quantity=50, status="SUBMITTED",
             decision_price=120.0, arrival_price=121.0),
        # A BUY without a decision price (the notebook gave none).
        dict(client_order_id="r1-TSLA-BUY", symbol="TSLA", side="BUY", quantity=30, arrival_price=300.0),
        # A partial EUR BUY with no submission time and no close price for its remainder.
        dict(client_order_id="r1-ASML-BUY", symbol="ASML", side="BUY", quantity=40, currency="EUR",
             status="PARTIAL", decision_price=600.0, arrival_price=602.0, submitted_at=pd.NaT),
    ]
)  # fmt: skip

def fill(exec_id: str, client_order_id: str, quantity: float, price: float, commission: float,
         seconds: float) -> dict:
    return dict(exec_id=exec_id, client_order_id=client_order_id, quantity=quantity, price=price,
                commission=commission, time=T0 + pd.Timedelta(seconds=seconds))


FILLS = make_fills(
    [
        fill("e1", "r1-AAPL-BUY", 100, 101.0, 1.0, seconds=2),
        # Listed last fill first: first/last latency must come from the times, not the row order.
        fill("e3", "r1-MSFT-SELL", 80, 49.0, 0.4, seconds=5),
        fill("e2", "r1-MSFT-SELL", 120, 49.5, 0.6, seconds=1),
        fill("e4", "r1-SAP-SELL", 10, 202.0, 2.0, seconds=3),
        fill("e5", "r1-TSLA-BUY", 30, 303.0, 0.3, seconds=10),
        fill("e6", "r1-ASML-BUY", 10, 603.0, 1.0, seconds=4),
        # A fill of an order that is not in the frame: ignored (it would add 100 of commission otherwise).
        fill("e7", "r0-GHOST-BUY", 5, 1.0, 100.0, seconds=0),
    ]
)

# AAPL is fully filled, so its close must not matter; ASML has none on purpose.
CLOSES = {"AAPL": 999.0, "MSFT": 48.0, "NVDA": 125.0}

EXPECTED_ORDERS = {
    "r1-AAPL-BUY": dict(
        filled_quantity=100, unfilled_quantity=0, fill_ratio=1.0, fills=1, avg_fill_price=101.0,
        slippage_decision_bps=100.0,  # (101 - 100) / 100 * 1e4
        slippage_arrival_bps=5000 / 100.5,  # (101 - 100.5) / 100.5 * 1e4 = 49.7512...
        execution_cost=100.0,  # (101 - 100) * 100
        commission=1.0,
        shortfall=101.0,  # 100 + 1
        close_price=999.0,
        opportunity_cost=0.0,  # nothing unfilled
        first_fill_latency_s=2.0, last_fill_latency_s=2.0,
    ),
    "r1-MSFT-SELL": dict(
        filled_quantity=200, unfilled_quantity=50, fill_ratio=0.8, fills=2,  # 200 / 250
        avg_fill_price=49.3,  # VWAP (120 * 49.5 + 80 * 49.0) / 200 = (5940 + 3920) / 200
        slippage_decision_bps=140.0,  # (50 - 49.3) / 50 * 1e4
        slippage_arrival_bps=5000 / 49.8,  # (49.8 - 49.3) / 49.8 * 1e4 = 100.4016...
        execution_cost=140.0,  # -1 * (49.3 - 50) * 200
        commission=1.0,  # 0.6 + 0.4
        shortfall=141.0,
        close_price=48.0,
        opportunity_cost=100.0,  # -1 * (48 - 50) * 50: the unsold 50 lost 2 each
        first_fill_latency_s=1.0, last_fill_latency_s=5.0,
    ),
    "r1-SAP-SELL": dict(
        filled_quantity=10, unfilled_quantity=0, fill_ratio=1.0, fills=1, avg_fill_price=202.0,
        slippage_decision_bps=-100.0,  # (200 - 202) / 200 * 1e4: a gain
        slippage_arrival_bps=-10000 / 201,  # (201 - 202) / 201 * 1e4 = -49.7512...
        execution_cost=-20.0,  # -1 * (202 - 200) * 10
        commission=2.0,
        shortfall=-18.0,  # -20 + 2
        close_price=NAN,
        opportunity_cost=0.0,
        first_fill_latency_s=3.0, last_fill_latency_s=3.0,
    ),
    "r1-NVDA-BUY": dict(
        filled_quantity=0, unfilled_quantity=50, fill_ratio=0.0, fills=0, avg_fill_price=NAN,
        slippage_decision_bps=NAN, slippage_arrival_bps=NAN,
        execution_cost=0.0, commission=0.0, shortfall=0.0,  # nothing executed, nothing paid
        close_price=125.0,
        opportunity_cost=250.0,  # +1 * (125 - 120) * 50: the shares not bought rose 5 each
        first_fill_latency_s=NAN, last_fill_latency_s=NAN,
    ),
    "r1-TSLA-BUY": dict(
        filled_quantity=30, unfilled_quantity=0, fill_ratio=1.0, fills=1, avg_fill_price=303.0,
        slippage_decision_bps=NAN,
        slippage_arrival_bps=100.0,  # (303 - 300) / 300 * 1e4
        execution_cost=NAN, commission=0.3, shortfall=NAN,  # no benchmark to fall short of
        close_price=NAN, opportunity_cost=0.0,
        first_fill_latency_s=10.0, last_fill_latency_s=10.0,
    ),
    "r1-ASML-BUY": dict(
        filled_quantity=10, unfilled_quantity=30, fill_ratio=0.25, fills=1, avg_fill_price=603.0,
        slippage_decision_bps=50.0,  # (603 - 600) / 600 * 1e4
        slippage_arrival_bps=10000 / 602,  # (603 - 602) / 602 * 1e4 = 16.6112...
        execution_cost=30.0,  # (603 - 600) * 10
        commission=1.0, shortfall=31.0,
        close_price=NAN, opportunity_cost=NAN,  # 30 unfilled and no close price
        first_fill_latency_s=NAN, last_fill_latency_s=NAN,  # never stamped as submitted
    ),
}  # fmt: skip

EXPECTED_SUMMARY = {
    "EUR": dict(  # SAP-SELL, ASML-BUY
        orders=2, filled_orders=2, quantity=50, filled_quantity=20,
        fill_ratio=0.4,  # 20 / 50
        notional_filled=8050.0,  # 10 * 202 + 10 * 603
        # weights 10 * 200 = 2000 and 10 * 600 = 6000; money -20 and +30: (-20 + 30) / 8000 * 1e4
        slippage_decision_bps=12.5,
        # weights 10 * 201 = 2010 and 10 * 602 = 6020; money -10 and +10: 0 / 8030
        slippage_arrival_bps=0.0,
        execution_cost=10.0,  # -20 + 30
        commission=3.0,  # 2 + 1
        shortfall=13.0,  # -18 + 31
        opportunity_cost=NAN,  # ASML's remainder is unpriced: no partial total
        first_fill_latency_median_s=3.0, first_fill_latency_max_s=3.0,  # SAP only
        last_fill_latency_median_s=3.0, last_fill_latency_max_s=3.0,
    ),
    "USD": dict(  # AAPL-BUY, MSFT-SELL, NVDA-BUY, TSLA-BUY
        orders=4, filled_orders=3,  # NVDA has no fill
        quantity=430,  # 100 + 250 + 50 + 30
        filled_quantity=330,  # 100 + 200 + 0 + 30
        fill_ratio=330 / 430,
        notional_filled=29050.0,  # 100 * 101 + 200 * 49.3 + 30 * 303 = 10100 + 9860 + 9090
        # AAPL weight 100 * 100 = 10000 at 100 bps, MSFT 200 * 50 = 10000 at 140 bps (TSLA has no
        # decision price, NVDA no fill): (100 + 140) / 20000 * 1e4
        slippage_decision_bps=120.0,
        # money 50 (AAPL) + 100 (MSFT) + 90 (TSLA) over notional 10050 + 9960 + 9000 at arrival
        slippage_arrival_bps=240 / 29010 * 1e4,
        execution_cost=240.0,  # 100 + 140 + 0 (TSLA left out: no decision price)
        commission=2.3,  # 1 + 1 + 0 + 0.3 (commission counts for every order)
        shortfall=242.0,  # 101 + 141 + 0
        opportunity_cost=350.0,  # 0 + 100 + 250
        first_fill_latency_median_s=2.0, first_fill_latency_max_s=10.0,  # of 2, 1, 10
        last_fill_latency_median_s=5.0, last_fill_latency_max_s=10.0,  # of 2, 5, 10
    ),
}  # fmt: skip


def assert_values(actual: pd.Series, expected: dict) -> None:
    """Each expected value matches (NaN only where NaN is expected), naming the column that does not."""
    for column, value in expected.items():
        got = actual[column]
        if isinstance(value, float) and math.isnan(value):
            assert pd.isna(got), f"{actual.name}.{column}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(value, rel=1e-12, abs=1e-9), f"{actual.name}.{column}"


@pytest.fixture(scope="module")
def result() -> TcaResult:
    return tca(ORDERS, FILLS, close_prices=CLOSES)


def test_tables_have_the_documented_shape(result: TcaResult) -> None:
    assert list(result.orders.columns) == ORDER_COLUMNS
    assert list(result.orders.index) == list(ORDERS["client_order_id"])  # input order, ghost dropped
    assert result.orders.index.name == "client_order_id"
    assert list(result.summary.columns) == SUMMARY_COLUMNS
    assert list(result.summary.index) == ["EUR", "USD"]
    assert result.summary.index.name == "currency"


@pytest.mark.parametrize("client_order_id", list(EXPECTED_ORDERS))
def test_per_order_arithmetic(result: TcaResult, client_order_id: str) -> None:
    assert_values(result.orders.loc[client_order_id], EXPECTED_ORDERS[client_order_id])


@pytest.mark.parametrize("currency", list(EXPECTED_SUMMARY))
def test_summary_arithmetic_per_currency(result: TcaResult, currency: str) -> None:
    assert_values(result.summary.loc[currency], EXPECTED_SUMMARY[currency])


def test_order_identity_columns_pass_through(result: TcaResult) -> None:
    row = result.orders.loc["r1-MSFT-SELL"]
    assert (row["run_id"], row["symbol"], row["side"], row["currency"], row["status"]) == (
        "r1",
        "MSFT",
        "SELL",
        "USD",
        "CANCELLED",
    )


def test_without_close_prices_the_unfilled_remainder_is_unpriced() -> None:
    result = tca(ORDERS, FILLS)
    assert result.orders.loc[["r1-MSFT-SELL", "r1-NVDA-BUY"], "opportunity_cost"].isna().all()
    assert result.orders.loc["r1-AAPL-BUY", "opportunity_cost"] == 0.0  # fully filled needs no close
    assert pd.isna(result.summary.loc["USD", "opportunity_cost"])
    assert result.summary.loc["USD", "shortfall"] == pytest.approx(242.0)  # unaffected


def test_fills_of_unknown_orders_change_nothing() -> None:
    known = FILLS[FILLS["client_order_id"] != "r0-GHOST-BUY"]
    with_ghost, without = tca(ORDERS, FILLS, CLOSES), tca(ORDERS, known, CLOSES)
    pd.testing.assert_frame_equal(with_ghost.orders, without.orders)
    pd.testing.assert_frame_equal(with_ghost.summary, without.summary)


def test_only_unknown_fills_is_like_no_fills() -> None:
    ghost_only = tca(ORDERS, FILLS[FILLS["client_order_id"] == "r0-GHOST-BUY"])
    no_fills = tca(ORDERS, FILLS.iloc[0:0])
    pd.testing.assert_frame_equal(ghost_only.orders, no_fills.orders)
    assert (no_fills.orders["filled_quantity"] == 0).all()
    assert no_fills.orders[["slippage_decision_bps", "slippage_arrival_bps"]].isna().all().all()
    assert (
        (no_fills.summary[["filled_orders", "notional_filled", "commission", "shortfall"]] == 0).all().all()
    )
    assert no_fills.summary[["slippage_decision_bps", "first_fill_latency_max_s"]].isna().all().all()


@pytest.mark.parametrize(
    ("orders", "fills"),
    [
        (make_orders([]), make_fills([])),
        (pd.DataFrame(), pd.DataFrame()),
        (make_orders([]), FILLS),
    ],
    ids=["ledger-columns", "no-columns", "fills-but-no-orders"],
)
def test_empty_inputs_give_empty_tables(orders: pd.DataFrame, fills: pd.DataFrame) -> None:
    result = tca(orders, fills)
    assert result.orders.empty and list(result.orders.columns) == ORDER_COLUMNS
    assert result.summary.empty and list(result.summary.columns) == SUMMARY_COLUMNS
    assert "<table" in result._repr_html_()


def test_unknown_fill_commission_makes_totals_unknown_not_smaller() -> None:
    fills = FILLS.copy()
    fills.loc[fills["exec_id"] == "e2", "commission"] = NAN
    result = tca(ORDERS, fills, CLOSES)
    msft = result.orders.loc["r1-MSFT-SELL"]
    assert pd.isna(msft["commission"]) and pd.isna(msft["shortfall"])
    assert msft["execution_cost"] == pytest.approx(140.0)  # the prices are still known
    assert result.summary.loc["USD", ["commission", "shortfall"]].isna().all()
    assert result.summary.loc["EUR", "commission"] == pytest.approx(3.0)  # other currency unaffected


def test_timezone_aware_fill_times_are_compared_in_utc() -> None:
    fills = FILLS.copy()
    fills["time"] = fills["time"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    result = tca(ORDERS, fills, CLOSES)
    assert result.orders.loc["r1-MSFT-SELL", ["first_fill_latency_s", "last_fill_latency_s"]].tolist() == [
        1.0,
        5.0,
    ]


def test_non_positive_reference_price_is_unknown() -> None:
    orders = make_orders(
        [dict(client_order_id="a", symbol="X", side="buy", quantity=10, decision_price=0.0, arrival_price=-1)]
    )
    fills = make_fills(
        [dict(exec_id="e", client_order_id="a", quantity=10, price=5.0, commission=0, time=T0)]
    )
    row = tca(orders, fills).orders.loc["a"]
    assert row["side"] == "BUY"  # lower case accepted, normalised
    assert row[["decision_price", "slippage_decision_bps", "slippage_arrival_bps", "shortfall"]].isna().all()


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        (ORDERS.drop(columns="side"), "lacks column"),
        (ORDERS.assign(side=["BUY", "SELL", "SELL", "HOLD", "BUY", "BUY"]), "BUY or SELL"),
        (pd.concat([ORDERS, ORDERS.iloc[:1]]), "duplicate client_order_id"),
    ],
    ids=["missing-column", "unknown-side", "duplicate-id"],
)
def test_malformed_orders_are_refused(orders: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tca(orders, FILLS)


def test_optional_order_columns_may_be_absent() -> None:
    bare = ORDERS[["client_order_id", "symbol", "side", "quantity", "currency"]]
    result = tca(bare, FILLS)
    assert (
        result.orders[["slippage_decision_bps", "slippage_arrival_bps", "first_fill_latency_s"]]
        .isna()
        .all()
        .all()
    )
    assert result.orders.loc["r1-MSFT-SELL", "avg_fill_price"] == pytest.approx(49.3)


def test_result_is_frozen_and_renders_both_tables(result: TcaResult) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.orders = pd.DataFrame()  # type: ignore[misc]
    html = result._repr_html_()
    assert html.count("<table") == 2
    assert "r1-MSFT-SELL" in html and "EUR" in html
    assert "r1-MSFT-SELL" in str(result) and "slippage_decision_bps" in str(result)


# Properties ------------------------------------------------------------------------------------------------

prices = st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False)
offsets = st.floats(min_value=-0.5, max_value=0.5, allow_nan=False)  # a fill price as ref * (1 + offset)
fill_specs = st.lists(
    st.tuples(st.integers(1, 10_000), offsets, st.floats(0, 10, allow_nan=False)), min_size=1, max_size=6
)


def one_order(side: str, reference: float, fills: list[tuple[int, float, float]], extra: int) -> tuple:
    """One order of ``side`` with decision = arrival = ``reference``, ``extra`` left unfilled, and fills at
    the given (quantity, price, commission)."""
    orders = make_orders(
        [
            dict(client_order_id="o", symbol="X", side=side, quantity=sum(q for q, _, _ in fills) + extra,
                 decision_price=reference, arrival_price=reference)
        ]
    )  # fmt: skip
    rows = [
        dict(exec_id=f"e{i}", client_order_id="o", quantity=q, price=p, commission=c, time=T0)
        for i, (q, p, c) in enumerate(fills)
    ]
    return orders, make_fills(rows)


@settings(deadline=None, max_examples=50)  # two tca calls per example
@given(reference=prices, fills=fill_specs, extra=st.integers(0, 1000), close_offset=offsets)
def test_mirror_symmetry_buy_and_sell_cost_the_same(
    reference: float, fills: list[tuple[int, float, float]], extra: int, close_offset: float
) -> None:
    """A SELL filled at prices reflected around the reference (2r - p) costs what the BUY filled at p does;
    reflecting the close too keeps the opportunity cost."""
    buy_prices = [(q, reference * (1 + x), c) for q, x, c in fills]
    sell_prices = [(q, 2 * reference - p, c) for q, p, c in buy_prices]
    close = reference * (1 + close_offset)
    buy = tca(*one_order("BUY", reference, buy_prices, extra), {"X": close}).orders.loc["o"]
    sell = tca(*one_order("SELL", reference, sell_prices, extra), {"X": 2 * reference - close}).orders.loc[
        "o"
    ]
    notional = sum(q for q, _, _ in fills) * reference
    for column, scale in [
        ("slippage_decision_bps", 1e4),
        ("slippage_arrival_bps", 1e4),
        ("execution_cost", notional),
        ("shortfall", notional),
        ("opportunity_cost", (extra + 1) * reference),
    ]:
        assert sell[column] == pytest.approx(buy[column], abs=1e-9 * scale), column


@settings(deadline=None)
@given(reference=prices, fills=fill_specs, side=st.sampled_from(["BUY", "SELL"]))
def test_fills_at_the_reference_cost_only_commission(
    reference: float, fills: list[tuple[int, float, float]], side: str
) -> None:
    at_reference = [(q, reference, c) for q, _, c in fills]
    result = tca(*one_order(side, reference, at_reference, 0))
    row = result.orders.loc["o"]
    assert row["slippage_decision_bps"] == pytest.approx(0.0, abs=1e-9)
    assert row["slippage_arrival_bps"] == pytest.approx(0.0, abs=1e-9)
    assert row["shortfall"] == pytest.approx(
        sum(c for _, _, c in fills), abs=1e-9 * row["filled_quantity"] * reference
    )
    assert result.summary.loc["USD", "slippage_decision_bps"] == pytest.approx(0.0, abs=1e-9)


baskets = st.lists(
    st.tuples(st.sampled_from(["BUY", "SELL"]), st.sampled_from(["USD", "EUR"]), prices, fill_specs),
    min_size=1,
    max_size=5,
)


@settings(deadline=None, max_examples=50)  # two tca calls per example
@given(basket=baskets, seed=st.integers(0, 2**32 - 1))
def test_summary_is_the_basket_cost_and_ignores_fill_order(
    basket: list[tuple[str, str, float, list[tuple[int, float, float]]]], seed: int
) -> None:
    """Per currency, the weighted decision slippage is the basket's money cost over its decision notional,
    the shortfall is the sum of the orders'; shuffling the fills changes nothing."""
    orders = make_orders(
        [
            dict(client_order_id=f"o{i}", symbol=f"S{i}", side=side, currency=currency, decision_price=ref,
                 quantity=sum(q for q, _, _ in specs))
            for i, (side, currency, ref, specs) in enumerate(basket)
        ]
    )  # fmt: skip
    fills = make_fills(
        [
            dict(exec_id=f"e{i}.{j}", client_order_id=f"o{i}", quantity=q, price=ref * (1 + x), commission=c,
                 time=T0 + pd.Timedelta(seconds=j))
            for i, (_, _, ref, specs) in enumerate(basket)
            for j, (q, x, c) in enumerate(specs)
        ]
    )  # fmt: skip
    result = tca(orders, fills)
    per = result.orders
    for currency, row in result.summary.iterrows():
        mine = per[per["currency"] == currency]
        decision_notional = (mine["filled_quantity"] * mine["decision_price"]).sum()
        assert row["slippage_decision_bps"] == pytest.approx(
            mine["execution_cost"].sum() / decision_notional * 1e4
        )
        assert row["shortfall"] == pytest.approx(mine["shortfall"].sum())
        assert row["orders"] == len(mine)
    shuffled = tca(orders, fills.sample(frac=1.0, random_state=seed))
    pd.testing.assert_frame_equal(shuffled.orders, result.orders)
    pd.testing.assert_frame_equal(shuffled.summary, result.summary)
