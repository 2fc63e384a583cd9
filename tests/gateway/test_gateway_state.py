"""The gateway's book and instruments, without sockets: fill model, ids, checks, positions."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.gateway.config import GatewayConfig
from kit.gateway.faults import Faults
from kit.gateway.instruments import ContractSpec, Market
from kit.gateway.state import Book, ExecFilter, OrderRequest, RateMeter, Rejection, split

NOW = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)


def book(**config) -> Book:
    cfg = GatewayConfig(**config)
    return Book(cfg, Market(cfg.instruments), lambda: NOW)


def request(order_id, symbol="AAPL", action="BUY", quantity=100, order_type="MKT", limit=None, **kw):
    contract = ContractSpec(
        symbol=symbol, exchange=kw.pop("exchange", "SMART"), currency=kw.pop("currency", "")
    )
    return OrderRequest(order_id, contract, action, quantity, order_type, limit, **kw)


def fill_all(b: Book, perm_id: int) -> list:
    executions = []
    while (e := b.fill_next(perm_id)) is not None:
        executions.append(e)
    return executions


@given(st.integers(1, 100_000), st.integers(1, 10), st.integers(0, 2**32))
def test_split_makes_at_most_parts_whole_slices_that_add_up(quantity, parts, seed):
    slices = split(float(quantity), parts, random.Random(seed))
    assert sum(slices) == quantity
    assert len(slices) == min(parts, quantity) and all(s >= 1 and s == int(s) for s in slices)
    assert slices == split(float(quantity), parts, random.Random(seed))


def test_split_keeps_fractional_quantities_whole():
    assert split(2.5, 3, random.Random(0)) == [2.5]


def test_resolve_matches_symbol_con_id_currency_and_exchanges():
    market = Market()
    assert market.resolve(ContractSpec(symbol="TTE", exchange="SMART", currency="EUR")).con_id == 29612193
    assert market.resolve(ContractSpec(con_id=265598)).symbol == "AAPL"
    assert market.resolve(ContractSpec(symbol="AAPL", exchange="ISLAND", primary_exchange="NASDAQ"))
    for spec in (
        ContractSpec(symbol="TTE", currency="USD"),
        ContractSpec(symbol="AAPL", exchange="SBF"),
        ContractSpec(symbol="AAPL", sec_type="OPT"),
        ContractSpec(con_id=265598, symbol="MSFT"),
        ContractSpec(),
    ):
        assert market.resolve(spec) is None
    with pytest.raises(KeyError):
        market.set_price("NOPE", 1.0)
    with pytest.raises(ValueError):
        market.set_price("AAPL", 0)


def test_market_order_fills_in_slices_to_filled_with_ids_and_commissions():
    b = book(seed=1, partial_fills=4)
    order = b.place(1, request(1, quantity=100, order_ref="ref"))
    assert not isinstance(order, Rejection) and order.status == "Submitted" and order.perm_id > 10**9
    executions = fill_all(b, order.perm_id)
    assert len(executions) == 4 and sum(e.shares for e in executions) == 100
    assert [e.cum_qty for e in executions] == [sum(x.shares for x in executions[: i + 1]) for i in range(4)]
    assert executions[-1].avg_price == pytest.approx(order.avg_fill_price)
    assert all(re.fullmatch(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01", e.exec_id) for e in executions)
    assert len({e.exec_id for e in executions}) == 4
    assert all(190.01 <= e.price <= 190.03 and e.side == "BOT" and e.commission == 1.0 for e in executions)
    assert order.status == "Filled" and order.remaining == 0 and order.completed_time == NOW
    assert b.fill_next(order.perm_id) is None


def test_same_seed_same_executions_whatever_the_interleaving():
    def run(seed, interleave):
        b = book(seed=seed)
        first, second = b.place(1, request(1, quantity=500)), b.place(2, request(1, "IBM", "SELL", 300))
        if interleave:
            while (b.fill_next(second.perm_id), b.fill_next(first.perm_id)) != (None, None):
                pass
        else:
            fill_all(b, first.perm_id), fill_all(b, second.perm_id)
        # exec ids number executions in the order they happen; each order's own fills do not depend on it
        return sorted((e.order.perm_id, e.cum_qty, e.shares, e.price) for e in b.executions)

    assert run(7, False) == run(7, True)
    assert run(7, False) != run(8, False)


def test_limit_order_fills_only_once_the_price_reaches_the_limit():
    b = book()
    buy = b.place(1, request(1, "MSFT", "BUY", 10, "LMT", 415.0))
    sell = b.place(1, request(2, "MSFT", "SELL", 10, "LMT", 425.0))
    assert not b.marketable(buy) and b.fill_next(buy.perm_id) is None
    b.market.set_price("MSFT", 414.0)
    assert b.marketable(buy) and not b.marketable(sell)
    assert all(e.price <= 415.0 for e in fill_all(b, buy.perm_id))
    b.market.set_price("MSFT", 426.0)
    assert all(e.price >= 425.0 for e in fill_all(b, sell.perm_id)) and sell.status == "Filled"


@pytest.mark.parametrize(
    ("req", "code", "text"),
    [
        (request(1, "NOPE"), 200, "No security definition"),
        (request(1, quantity=10_001), 201, "exceeds the size limit 10000"),
        (request(1, "TTE", exchange="SBF"), 10311, "directly routed to SBF"),
        (request(1, order_type="PEG BENCH"), 201, "not supported"),
        (request(1, order_type="LMT"), 201, "limit price"),
        (request(1, action="SHORT"), 201, "Invalid action"),
        (request(1, quantity=0), 201, "positive"),
        (request(1, account="U999"), 201, "not managed"),
    ],
)
def test_rejections(req, code, text):
    b = book()
    result = b.place(1, req)
    assert isinstance(result, Rejection) and result.code == code and text in result.message
    assert b.placements[req.order_ref] == 1
    if result.order is not None:  # IB keeps a record of checked orders, as completed ones
        assert result.order.status == "Cancelled" and b.completed_orders() == [result.order]


def test_smart_routing_to_a_restricted_exchange_works_and_direct_to_others_too():
    b = book()
    assert b.place(1, request(1, "TTE", exchange="SMART")).status == "Submitted"
    assert b.place(1, request(2, "AAPL", exchange="ISLAND")).status == "Submitted"


def test_order_ids_must_increase_per_client_and_roll_back():
    b = book()
    assert b.next_valid_id(1) == 1
    fill_all(b, b.place(1, request(5)).perm_id)
    assert b.next_valid_id(1) == 6 and b.next_valid_id(2) == 1
    assert b.place(1, request(4)).code == 103
    assert b.place(2, request(4)).status == "Submitted"  # another client's ids are its own
    b.roll_back_ids()
    assert b.next_valid_id(1) == 1
    assert b.place(1, request(5, order_ref="again")).code == 103  # used ids stay used


def test_modify_a_working_order():
    b = book()
    order = b.place(1, request(1, quantity=10, order_type="LMT", limit=100.0, order_ref="m"))
    assert b.place(1, request(1, quantity=20, order_type="LMT", limit=195.0, order_ref="m")) is order
    assert (order.quantity, order.limit_price, b.placements["m"]) == (20, 195.0, 1)
    assert sum(e.shares for e in fill_all(b, order.perm_id)) == 20
    assert b.place(1, request(1, quantity=20, order_type="LMT", limit=1.0)).code == 103  # done now
    other = b.place(1, request(2, quantity=10, order_type="LMT", limit=100.0))
    assert b.place(1, request(2, "IBM", quantity=10, order_type="LMT", limit=100.0)).code == 105
    assert b.place(1, request(2, quantity=10, order_type="LMT")).code == 201  # no limit price
    assert b.place(1, request(2, quantity=10_001, order_type="LMT", limit=100.0)).code == 201
    assert (other.status, other.quantity, other.limit_price) == ("Submitted", 10, 100.0)
    partial = b.place(1, request(3, quantity=10, order_type="LMT", limit=195.0))
    b.fill_next(partial.perm_id)
    shrink = b.place(1, request(3, quantity=partial.filled - 1, order_type="LMT", limit=195.0))
    assert shrink.code == 201 and "already filled" in shrink.message


def test_cancel_unknown_done_and_working_orders_and_a_late_fill():
    b = book()
    assert b.cancel(1, 99).code == 10147
    done = b.place(1, request(1, quantity=5))
    fill_all(b, done.perm_id)
    assert b.cancel(1, 1).code == 10148 and "state: Filled" in b.cancel(1, 1).message
    working = b.place(1, request(2, quantity=30, order_type="LMT", limit=150.0))
    assert b.fill_next(working.perm_id, late=True) is None  # only a cancelled order fills late
    assert b.cancel(1, 2) is working and working.status == "Cancelled"
    assert b.fill_next(working.perm_id) is None
    late = b.fill_next(working.perm_id, late=True)
    assert late.price == 150.0 and working.status == "Cancelled" and 0 < working.filled < 30


def test_ioc_and_untransmitted_orders():
    b = book()
    ioc = b.place(1, request(1, order_type="LMT", limit=100.0, tif="IOC"))
    assert ioc.status == "Cancelled" and "IOC" in ioc.reason
    held = b.place(1, request(2, transmit=False))
    assert held.status == "PreSubmitted" and b.fill_next(held.perm_id) is None


def test_correction_replaces_the_execution_it_corrects():
    b = book(partial_fills=1)
    order = b.place(1, request(1, quantity=10))
    [first] = fill_all(b, order.perm_id)
    fix = b.correct(first)
    assert fix.exec_id == first.exec_id[:-2] + "02" and fix.corrects == first.exec_id
    assert fix.price == round(first.price - 0.01, 2) and fix.shares == first.shares
    assert order.fills == [fix] and order.avg_fill_price == fix.price
    assert b.executions == [first, fix] and b.effective_executions() == [fix]
    [position] = b.positions()
    assert (position.quantity, position.avg_cost) == (10, fix.price)


def test_positions_realized_pnl_and_account_values():
    b = book(partial_fills=1)
    for order_id, (symbol, action, qty) in enumerate((("AAPL", "BUY", 100), ("AAPL", "SELL", 150)), 1):
        fill_all(b, b.place(1, request(order_id, symbol, action, qty)).perm_id)
    buy, sell = b.executions
    assert buy.realized_pnl is None
    assert sell.realized_pnl == round(100 * (sell.price - buy.price) - sell.commission, 2)
    [position] = b.positions()
    assert (position.quantity, position.avg_cost) == (-50, sell.price)  # flipped short at the sell price
    values = {tag: float(value) for tag, value, _ in b.account_values("DU1234567") if tag != "AccountType"}
    cash = 1_000_000 - 100 * buy.price + 150 * sell.price - 2.0
    assert values["CashBalance"] == pytest.approx(cash, abs=0.01)
    assert values["NetLiquidation"] == pytest.approx(cash - 50 * 190.0, abs=0.01)


def test_exec_filter():
    b = book(partial_fills=1)
    fill_all(b, b.place(1, request(1, "AAPL", "BUY", 10, order_ref="a")).perm_id)
    fill_all(b, b.place(2, request(1, "TTE", "SELL", 10, order_ref="t")).perm_id)
    aapl, tte = b.executions

    def refs(**kw):
        return [e.order.order_ref for e in b.executions if ExecFilter(**kw).matches(e)]

    assert refs() == ["a", "t"]
    assert refs(client_id=2) == ["t"] and refs(symbol="AAPL") == ["a"] and refs(side="SELL") == ["t"]
    assert refs(side="BOT") == ["a"] and refs(exchange=tte.exchange) == ["t"] and refs(account="DU0") == []
    assert refs(since=NOW) == ["a", "t"] and refs(since=NOW + timedelta(seconds=1)) == []
    # SMART fills name the venue, as IB does (ISLAND for NASDAQ, never "NASDAQ" itself)
    assert aapl.exchange in ("ISLAND", "ARCA", "BATS", "IEX")
    assert tte.exchange in ("SBF", "AQEUEN", "CHIXEN", "TRQXEN")


def test_rate_meter_counts_the_most_messages_in_any_second():
    meter = RateMeter()
    for t in (0.0, 0.1, 0.5, 0.99, 1.0, 1.05, 3.0):
        meter.record(t)
    assert meter.count == 7 and meter.max_per_window == 5  # 0.1 ... 1.05


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"accounts.*partial_fills"):
        GatewayConfig(accounts=(), partial_fills=0)
    with pytest.raises(ValueError, match="time_zone 'Mars/Olympus'"):
        GatewayConfig(faults=Faults(time_zone="Mars/Olympus"))
    with pytest.raises(ValueError, match="unknown gateway settings"):
        GatewayConfig.from_dict({"sede": 1})
    config = GatewayConfig.from_dict(
        {
            "seed": 3,
            "accounts": ["DU1", "DU2"],
            "restricted_exchanges": ["IBIS"],
            "instruments": [
                {"symbol": "X", "con_id": 1, "primary_exchange": "NYSE", "currency": "USD", "price": 9}
            ],
            "faults": {"drop_orders": ["a"], "commission_delay": 0.5, "bare_inactive": ["b"],
                       "time_zone": "US/Eastern", "zoneless_times": True},
            "min_commission_per_order": True,
        }
    )
    assert config.faults.bare_inactive == frozenset({"b"}) and config.faults.time_zone == "US/Eastern"
    assert config.faults.zoneless_times and config.min_commission_per_order
    assert config.accounts == ("DU1", "DU2") and config.restricted_exchanges == frozenset({"IBIS"})
    assert [i.symbol for i in config.instruments] == ["X"]
    assert config.faults.drop_orders == frozenset({"a"}) and config.faults.commission_delay == 0.5
