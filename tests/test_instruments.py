"""Futures, FX and options: validation, qualification, money (multiplier, currency), the mock broker,
target positions, TCA and the ledger. The simulated gateway and the IB clients:
tests/gateway/test_gateway_instruments.py."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kit
import kit.store
from kit.brokers.mock import MockBroker, mock_contracts
from kit.errors import CurrencyError, LiveAccountError, ValidationError
from kit.instruments import (
    Contract,
    Money,
    Spec,
    choose,
    convert,
    instrument_key,
    notional,
    quarterly_expiries,
    units,
)
from kit.planner import make_plan
from kit.risk import RiskLimits
from kit.store import Ledger
from kit.validate import validate_orders

pytestmark = pytest.mark.usefixtures("clean_config")
TODAY = date.today()
FRONT = quarterly_expiries(TODAY, 1)[0]
SPY_EXPIRY = next(c.expiry for c in mock_contracts(TODAY) if c.sec_type == "OPT")
PRICES = {"ES": 6000.0, "EUR.USD": 1.08, f"SPY {SPY_EXPIRY} 450 C": 12.5, "DAX": 19000.0, "AAPL": 200.0}


def rows(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def problems_of(frame: pd.DataFrame) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationError) as caught:
        validate_orders(frame, "k")
    return caught.value.problems


BAD_ROWS = {
    "future without expiry": (
        rows(symbol=["ES"], sec_type=["FUT"], quantity=[1]),
        "row 0 (ES)",
        "a FUT row needs an expiry (YYYYMM, YYYYMMDD or 'front')",
    ),
    "expiry not a date": (
        rows(symbol=["ES"], sec_type=["FUT"], expiry=["2026-12"], quantity=[1]),
        "row 0 (ES)",
        "expiry '2026-12' is not YYYYMM, YYYYMMDD or 'front'",
    ),
    "month 13": (
        rows(symbol=["ES"], sec_type=["FUT"], expiry=["202613"], quantity=[1]),
        "row 0 (ES)",
        "expiry '202613' is not a date",
    ),
    "strike on a future": (
        rows(symbol=["ES"], sec_type=["FUT"], expiry=["202612"], strike=[10.0], quantity=[1]),
        "row 0 (ES)",
        "strike 10.0 given for a FUT row (only options have one)",
    ),
    "option without strike and right": (
        rows(symbol=["SPY"], sec_type=["OPT"], expiry=["20261218"], quantity=[1]),
        "row 0 (SPY)",
        "an option needs a positive strike, not None",
    ),
    "option right": (
        rows(
            symbol=["SPY"], sec_type=["OPT"], expiry=["20261218"], strike=[450.0], right=["X"], quantity=[1]
        ),
        "row 0 (SPY)",
        "an option needs right 'C' or 'P', not 'X'",
    ),
    "option front": (
        rows(symbol=["SPY"], sec_type=["OPT"], expiry=["front"], strike=[450.0], right=["C"], quantity=[1]),
        "row 0 (SPY)",
        "an option's expiry must be a date or month, not 'front'",
    ),
    "fx symbol": (
        rows(symbol=["EURUSD"], sec_type=["CASH"], quantity=[25000]),
        "row 0 (EURUSD)",
        "an FX symbol is BASE.QUOTE, like EUR.USD, not 'EURUSD'",
    ),
    "fx currency": (
        rows(symbol=["EUR.USD"], sec_type=["CASH"], currency=["EUR"], quantity=[25000]),
        "row 0 (EUR.USD)",
        "currency 'EUR' is not the quote currency of EUR.USD (USD): FX money is in the quote currency",
    ),
    "negative multiplier": (
        rows(symbol=["ES"], sec_type=["FUT"], expiry=["front"], multiplier=[-50.0], quantity=[1]),
        "row 0 (ES)",
        "multiplier -50.0 must be a positive number",
    ),
    "expiry on a stock": (
        rows(symbol=["AAPL"], expiry=["202612"], quantity=[1]),
        "row 0 (AAPL)",
        "expiry '202612' given for a STK row (only futures and options have one)",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_a_bad_instrument_row_is_named_with_its_reason(case):
    frame, row, reason = BAD_ROWS[case]
    assert (row, reason) in problems_of(frame)


def test_fx_takes_the_quote_currency_and_idealpro_and_a_multiplier_of_one():
    [order] = validate_orders(rows(symbol=["EUR.USD"], sec_type=["CASH"], quantity=[-30000]), "k")
    assert (order.currency, order.exchange, order.side, order.quantity) == ("USD", "IDEALPRO", "SELL", 30000)
    assert order.multiplier is None and units(order) == 1.0  # FX money is quantity x price


def test_a_future_and_an_option_carry_their_fields_and_one_row_each_way_per_instrument():
    frame = rows(
        symbol=["ES", "ES", "SPY"],
        sec_type=["FUT", "FUT", "OPT"],
        expiry=["202612", "202703", "20261218"],
        strike=[None, None, 450],
        right=[None, None, "call"],
        multiplier=[50, 50, 100],
        quantity=[1, -1, 2],
    )
    es_dec, es_mar, spy = validate_orders(frame, "k")  # buying one month and selling another is a spread
    assert (es_dec.expiry, es_dec.multiplier, es_mar.side) == ("202612", 50.0, "SELL")
    assert (spy.strike, spy.right, spy.multiplier, instrument_key_of(spy)) == (
        450.0,
        "C",
        100.0,
        "SPY 20261218 450 C",
    )


def instrument_key_of(order) -> str:
    return instrument_key(order.symbol, order.sec_type, order.expiry, order.strike, order.right)


# ---- the pure money and contract logic -------------------------------------------------------------------
amounts = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
rates = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False)


@given(st.integers(1, 10_000), st.floats(0.01, 1e5), st.sampled_from([1.0, 5.0, 20.0, 50.0, 100.0, 1000.0]))
def test_notional_is_quantity_times_price_times_multiplier(quantity, price, multiplier):
    assert notional(quantity, price, multiplier) == quantity * price * multiplier
    assert notional(quantity, None, multiplier) is None and notional(quantity, price, None) is None


@given(
    st.dictionaries(st.sampled_from(["USD", "EUR", "JPY", "GBP"]), amounts, min_size=1), rates, rates, rates
)
def test_money_is_added_within_a_currency_only_and_converted_only_with_given_rates(totals, eur, jpy, gbp):
    money = Money()
    for currency, amount in totals.items():
        money.add(amount, currency)
    others = set(totals) - {"USD"}
    if others:
        with pytest.raises(CurrencyError, match="fx_rates"):
            money.total("USD")
    given_rates = {"EUR": eur, "JPY": jpy, "GBP": gbp}
    expected = math.fsum(v * given_rates.get(c, 1.0) for c, v in totals.items())
    assert money.total("USD", given_rates) == pytest.approx(expected, rel=1e-12, abs=1e-6)


@given(amounts, rates)
def test_convert_is_the_identity_in_one_currency_and_the_rate_otherwise(amount, rate):
    assert convert(amount, "EUR", "EUR", None) == amount
    assert convert(amount, "EUR", "USD", {"EUR": rate}) == amount * rate


@given(st.lists(st.integers(-400, 400), min_size=1, max_size=8, unique=True), st.integers(-30, 30))
def test_front_is_the_nearest_contract_not_past_its_last_trade_date(offsets, shift):
    today = date(2026, 6, 1) + timedelta(days=shift)
    candidates = [
        Contract(
            "ES",
            "FUT",
            "USD",
            "CME",
            1000 + n,
            f"ES{n}",
            expiry=f"{date(2026, 6, 1) + timedelta(days=d):%Y%m%d}",
            last_trade_date=f"{date(2026, 6, 1) + timedelta(days=d):%Y%m%d}",
            multiplier=50.0,
        )
        for n, d in enumerate(offsets)
    ]
    chosen = choose(Spec("ES", "FUT", expiry="front"), candidates, today)
    alive = [c for c in candidates if c.last_trade_date >= f"{today:%Y%m%d}"]
    if not alive:
        assert isinstance(chosen, str) and "trades on or after" in chosen
    else:
        assert chosen == min(alive, key=lambda c: c.last_trade_date)


def test_an_ambiguous_or_unknown_contract_lists_the_candidates():
    table = mock_contracts(TODAY)
    ambiguous = choose(Spec("DAX", "FUT", exchange="SMART", currency="EUR", expiry="front"), table, TODAY)
    assert "ambiguous contract DAX front: 3 candidates" in ambiguous
    assert (
        "EUREX x25" in ambiguous
        and "EUREX x5" in ambiguous
        and "give the expiry, the multiplier" in ambiguous
    )
    chosen = choose(Spec("DAX", "FUT", currency="EUR", expiry="front", multiplier=5.0), table, TODAY)
    assert isinstance(chosen, Contract) and chosen.trading_class == "FDXM"
    assert choose(Spec("ZZ", "FUT", expiry="front"), table, TODAY).startswith("no ZZ future")


# ---- risk: the multiplier and the currency ---------------------------------------------------------------
def es(quantity: int = 2, **extra) -> pd.DataFrame:
    return rows(
        symbol=["ES"],
        sec_type=["FUT"],
        expiry=[f"{FRONT:%Y%m%d}"],
        multiplier=[50.0],
        quantity=[quantity],
        **{k: [v] for k, v in extra.items()},
    )


def test_a_futures_notional_limit_counts_the_multiplier():
    plan = make_plan(es(2), "k", prices=PRICES, limits=RiskLimits(max_order_notional=500_000))
    assert plan.breaches[0] == ("max_order_notional: 600,000.00 > 500,000.00",)  # 2 x 6000 x 50
    assert plan.orders.loc[0, "notional"] == 600_000


def test_a_usd_limit_refuses_eur_money_without_a_rate_and_converts_with_one():
    dax = rows(
        symbol=["DAX"],
        sec_type=["FUT"],
        expiry=[f"{FRONT:%Y%m%d}"],
        multiplier=[25.0],
        currency=["EUR"],
        exchange=["EUREX"],
        quantity=[1],
    )
    refused = make_plan(dax, "k", prices=PRICES, limits=RiskLimits(max_order_notional=1_000_000))
    [reason] = refused.breaches[0]
    assert "475,000.00 EUR cannot be compared with a limit in USD without a rate" in reason
    assert "fx_rates={'EUR': <USD per EUR>}" in reason
    limits = RiskLimits(max_order_notional=500_000, fx_rates={"EUR": 1.1})
    assert make_plan(dax, "k", prices=PRICES, limits=limits).breaches[0] == (
        "max_order_notional: 522,500.00 > 500,000.00",
    )  # 19000 x 25 x 1.1


def test_the_default_guard_applies_in_each_orders_own_currency():
    """The fat-finger guard nobody set is an amount in any currency: it never needs a rate."""
    dax = rows(
        symbol=["DAX"],
        sec_type=["FUT"],
        expiry=[f"{FRONT:%Y%m%d}"],
        multiplier=[25.0],
        currency=["EUR"],
        exchange=["EUREX"],
        quantity=[1],
    )
    guard = RiskLimits(max_order_notional=10_000_000, max_gross_notional=50_000_000, price_required=False)
    assert make_plan(dax, "k", prices=PRICES, limits=guard).breaches == ((),)


def test_a_future_without_a_known_multiplier_fails_a_set_notional_limit_closed():
    frame = rows(symbol=["ES"], sec_type=["FUT"], expiry=["202612"], quantity=[1])
    plan = make_plan(frame, "k", prices=PRICES, limits=RiskLimits(max_order_notional=1e9))
    assert "no multiplier for ES 202612" in plan.breaches[0][0]


# ---- the mock broker: qualify, place, fill, cancel -------------------------------------------------------
BASKET = rows(
    symbol=["ES", "EUR.USD", "SPY", "AAPL"],
    sec_type=["FUT", "CASH", "OPT", "STK"],
    expiry=["front", None, SPY_EXPIRY, None],
    strike=[None, None, 450.0, None],
    right=[None, None, "C", None],
    quantity=[2, 30_000, 3, 10],
    decision_price=[5990.0, 1.079, 12.4, 199.0],
)


def test_the_mock_qualifies_places_and_fills_each_instrument_and_the_ledger_and_tca_use_the_multiplier(
    tmp_path,
):
    db = tmp_path / "kit.duckdb"
    run = kit.execute(BASKET, broker=MockBroker(PRICES), run_key="mix", db=db)
    assert run.status == "done"
    orders = kit.ledger(db).orders().set_index("symbol")
    assert orders.loc["ES", "expiry"] == f"{FRONT:%Y%m%d}" and orders.loc["ES", "multiplier"] == 50
    assert orders.loc["ES", "local_symbol"] == f"ES{'FGHJKMNQUVXZ'[FRONT.month - 1]}{FRONT.year % 10}"
    assert orders.loc["ES", "exchange"] == "CME" and orders.loc["EUR.USD", "exchange"] == "IDEALPRO"
    assert orders.loc["SPY", "multiplier"] == 100 and pd.isna(orders.loc["AAPL", "multiplier"])  # a stock: 1
    assert set(orders["status"]) == {"FILLED"}
    costs = kit.tca("mix", db=db).orders.set_index("symbol")
    fills = kit.ledger(db).fills().groupby("symbol")
    for symbol, multiplier, decision in (("ES", 50, 5990.0), ("SPY", 100, 12.4), ("EUR.USD", 1, 1.079)):
        money = (
            math.fsum(
                q * (p - decision)
                for q, p in fills.get_group(symbol)[["quantity", "price"]].itertuples(index=False, name=None)
            )
            * multiplier
        )
        assert costs.loc[symbol, "execution_cost"] == pytest.approx(money)
    summary = kit.tca("mix", db=db).summary
    assert summary.loc["USD", "notional_filled"] == pytest.approx(
        2 * 6000 * 50 + 30_000 * 1.08 + 3 * 12.5 * 100 + 10 * 200
    )


def test_a_resting_future_option_and_fx_order_is_cancelled_at_the_timeout(tmp_path):
    frame = BASKET.iloc[:3].assign(order_type="LMT", limit_price=[5000.0, 0.9, 5.0], decision_price=None)
    run = kit.execute(
        frame, broker=MockBroker(PRICES), run_key="rest", db=tmp_path / "kit.duckdb", timeout=0.2
    )
    assert list(run.orders["status"]) == ["CANCELLED"] * 3


def test_an_ambiguous_contract_is_refused_before_anything_is_written_or_sent(tmp_path):
    broker = MockBroker(PRICES)
    frame = rows(
        symbol=["DAX", "ES"],
        sec_type=["FUT", "FUT"],
        expiry=["front", "209912"],
        currency=["EUR", "USD"],
        quantity=[1, 1],
    )
    with pytest.raises(ValidationError) as caught:
        kit.execute(frame, broker=broker, run_key="amb", db=tmp_path / "kit.duckdb")
    reasons = dict(caught.value.problems)
    assert "ambiguous contract DAX front: 3 candidates" in reasons["row 0 (DAX)"]
    assert reasons["row 1 (ES)"] == "IB knows no FUT contract for ES 209912"
    assert broker.submitted == [] and not (tmp_path / "kit.duckdb").exists()


def test_dry_run_what_if_prices_a_future_with_its_multiplier(tmp_path):
    run = kit.execute(
        BASKET.iloc[:1], broker=MockBroker(PRICES), run_key="dry", db=tmp_path / "kit.duckdb", dry_run=True
    )
    assert run.status == "planned"
    events = kit.ledger(tmp_path / "kit.duckdb").events()
    detail = events.loc[events["kind"] == "what_if", "detail"].iloc[0]
    assert '"notional": 600000.0' in detail  # 2 x 6000 x 50


def test_the_live_guard_covers_futures(tmp_path):
    class Live(MockBroker):
        is_paper = False

    with pytest.raises(LiveAccountError):
        kit.execute(BASKET.iloc[:1], broker=Live(PRICES), run_key="live", db=tmp_path / "kit.duckdb")


# ---- target positions: contracts and base currency -------------------------------------------------------
def test_target_positions_in_contracts_and_base_currency_reach_their_targets_and_then_rest(tmp_path):
    db = tmp_path / "kit.duckdb"
    targets = rows(
        symbol=["ES", "EUR.USD"],
        sec_type=["FUT", "CASH"],
        expiry=["front", None],
        target_quantity=[3, 50_000],
    )
    first = kit.execute(targets, broker=MockBroker(PRICES), run_key="pos-1", db=db)
    assert sorted(first.orders["quantity"]) == [3, 50_000]
    again = kit.plan(
        targets.assign(target_quantity=[1, 50_000]), broker=MockBroker(PRICES), run_key="pos-2", db=db
    )
    [order] = again.intents  # FX is at its target; the future sells 2 contracts of the same month
    assert (order.symbol, str(order.side), order.quantity, order.expiry) == (
        "ES",
        "SELL",
        2,
        f"{FRONT:%Y%m%d}",
    )


def test_a_target_weight_buys_contracts_by_price_times_multiplier():
    frame = rows(
        symbol=["ES"], sec_type=["FUT"], expiry=[f"{FRONT:%Y%m%d}"], multiplier=[50.0], target_weight=[0.6]
    )
    plan = make_plan(frame, "k", prices=PRICES, capital=1_000_000)
    assert plan.intents[0].quantity == 2  # 600,000 / (6000 x 50)


def test_a_weight_in_another_currency_needs_a_rate():
    frame = rows(
        symbol=["DAX"],
        sec_type=["FUT"],
        expiry=[f"{FRONT:%Y%m%d}"],
        multiplier=[25.0],
        currency=["EUR"],
        exchange=["EUREX"],
        target_weight=[0.5],
    )
    with pytest.raises(ValidationError, match=r"capital is in USD: .*fx_rates"):
        make_plan(frame, "k", prices=PRICES, capital=1_000_000)
    plan = make_plan(frame, "k", prices=PRICES, capital=1_000_000, limits=RiskLimits(fx_rates={"EUR": 1.0}))
    assert plan.intents[0].quantity == 1  # 500,000 / (19000 x 25) = 1.05


# ---- the ledger ------------------------------------------------------------------------------------------
def test_an_older_ledger_gains_the_instrument_columns_and_its_orders_load_as_stocks(tmp_path, monkeypatch):
    db = tmp_path / "kit.duckdb"
    monkeypatch.setattr(kit.store, "MIGRATIONS", kit.store.MIGRATIONS[:3])
    monkeypatch.setattr(kit.store, "ORDER_COLUMNS", kit.store.ORDER_COLUMNS[:25])
    kit.execute(rows(symbol=["AAPL"], quantity=[5]), broker=MockBroker(PRICES), run_key="old", db=db)
    monkeypatch.undo()
    with Ledger(db) as ledger:
        assert ledger.schema_version() == len(kit.store.MIGRATIONS)
        [order] = ledger.load_orders(ledger.resolve_run("old"))
    assert (order.intent.sec_type, order.intent.expiry, order.intent.multiplier) == ("STK", "", None)
    again = kit.execute(rows(symbol=["AAPL"], quantity=[5]), broker=MockBroker(PRICES), run_key="old", db=db)
    assert again.status == "done" and len(again.orders) == 1  # resumed: the same order, not a changed one


def test_the_contract_cache_keeps_a_contract_for_the_day_it_was_fetched_and_never_past_its_expiry(tmp_path):
    from datetime import datetime

    ledger = Ledger(tmp_path / "kit.duckdb")
    es_dec = Contract(
        "ES", "FUT", "USD", "CME", 1, "ESZ6", expiry="20261218", last_trade_date="20261218", multiplier=50.0
    )
    aapl = Contract("AAPL", "STK", "USD", "SMART", 265598, "AAPL", primary_exchange="NASDAQ")
    assert ledger.cache_contracts("ib@x", {"es": es_dec, "aapl": aapl}, datetime(2026, 12, 1, 14))
    assert ledger.cached_contracts("ib@x", ["es", "aapl"], date(2026, 12, 1)) == {"es": es_dec, "aapl": aapl}
    assert ledger.cached_contracts("ib@x", ["es", "aapl"], date(2026, 12, 2)) == {}  # a new day asks IB again
    assert ledger.cached_contracts("ib@other", ["es"], date(2026, 12, 1)) == {}  # another gateway's ids
    late = Contract("ES", "FUT", "USD", "CME", 1, "ESZ6", expiry="20261218", last_trade_date="20261218")
    ledger.cache_contracts("ib@x", {"es": late}, datetime(2026, 12, 19, 9))  # fetched past its expiry
    assert ledger.cached_contracts("ib@x", ["es"], date(2026, 12, 19)) == {}


def test_an_fx_order_under_idealpros_minimum_is_sent_as_given_with_a_warning(tmp_path, caplog):
    frame = rows(symbol=["EUR.USD", "GBP.USD"], sec_type=["CASH", "CASH"], quantity=[10_000, 30_000])
    with caplog.at_level("WARNING", logger="kit"):
        plan = kit.plan(frame, broker=MockBroker({**PRICES, "GBP.USD": 1.27}), run_key="odd")
    assert [o.quantity for o in plan.intents] == [10_000, 30_000] and plan.breaches == ((), ())
    warned = [r.getMessage() for r in caplog.records if "IDEALPRO minimum" in r.getMessage()]
    assert len(warned) == 1 and "EUR.USD 10000" in warned[0]  # 10,800 USD; GBP.USD is 38,100 USD
