"""IB's what-if orders through the simulated gateway, with the real ib_async and ib_insync clients.

A what-if is a question, never an order: the gateway checks it like a placement (200, 201, 10311), answers
with one openOrder whose whatIf is 1 and whose margin and commission fields carry the estimate, and books
nothing. Getting this wrong is the dangerous direction: a what-if treated as an order trades.

ib_insync lives in .venv-insync (see test_gateway_ib_insync.py), so this file is also its driver: run as a
script under that environment it drives the gateway with ib_insync and prints JSON on its last line. Hence
ib_async is imported inside the tests, not at the top.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from kit.gateway import GatewayConfig, run_gateway_in_thread

ESTIMATE = (
    "initMarginBefore",
    "maintMarginBefore",
    "equityWithLoanBefore",
    "initMarginChange",
    "maintMarginChange",
    "equityWithLoanChange",
    "initMarginAfter",
    "maintMarginAfter",
    "equityWithLoanAfter",
    "commission",
    "minCommission",
    "maxCommission",
)


def numbers(state: Any) -> dict[str, float]:
    """The OrderState's margin and commission fields as numbers (they must all be numeric)."""
    return {name: float(getattr(state, name)) for name in ESTIMATE}


def placed_fields(contract: Any, order: Any, order_id: int = 42, version: int = 178) -> list[str]:
    """The fields the real ib_async Client sends for placeOrder at a server version."""
    from ib_async.client import Client

    sent: list[str] = []
    client = Client(None)
    client.connState, client._serverVersion = Client.CONNECTED, version
    client.sendMsg = sent.append
    client.placeOrder(order_id, contract, order)
    [msg] = sent
    return msg.split("\0")[:-1]


# the wire


def test_what_if_flag_is_found_wherever_the_optional_groups_put_it():
    from ib_async import (
        Bag,
        ComboLeg,
        DeltaNeutralContract,
        LimitOrder,
        MarketOrder,
        OrderComboLeg,
        Stock,
        TagValue,
    )

    from kit.gateway.protocol import parse_place_order

    aapl = Stock("AAPL", "SMART", "USD")
    plain = placed_fields(aapl, MarketOrder("BUY", 10, whatIf=True), version=176)
    assert len(plain) == 115 and plain[85] == "1"  # a plain order at 176: whatIf is field 85
    assert parse_place_order(plain, 176).what_if
    at_178 = placed_fields(aapl, MarketOrder("BUY", 10, whatIf=True))
    assert at_178[84] == "1" and parse_place_order(at_178, 178).what_if  # no faProfile since 177
    assert not parse_place_order(placed_fields(aapl, MarketOrder("BUY", 10))).what_if
    hedged = Stock("AAPL", "SMART", "USD")
    hedged.deltaNeutralContract = DeltaNeutralContract(265598, 0.5, 190.0)
    bag = Bag(
        symbol="AAPL",
        exchange="SMART",
        currency="USD",
        comboLegs=[ComboLeg(265598, 1, "BUY", "SMART"), ComboLeg(272093, 1, "SELL", "SMART")],
    )
    variants = [
        (aapl, LimitOrder("BUY", 10, 189.0, algoStrategy="Adaptive",
                          algoParams=[TagValue("adaptivePriority", "Normal")])),
        (aapl, LimitOrder("BUY", 10, 189.0, hedgeType="D", hedgeParam="0.5")),
        (aapl, LimitOrder("BUY", 10, 189.0, hedgeType="D", hedgeParam="0.5", notHeld=True,
                          algoStrategy="Vwap", algoParams=[TagValue("maxPctVol", "0.1")])),
        (aapl, LimitOrder("BUY", 10, 189.0, scalePriceIncrement=0.05, scaleInitLevelSize=5)),
        (aapl, LimitOrder("BUY", 10, 189.0, deltaNeutralOrderType="LMT", deltaNeutralAuxPrice=1.0)),
        (hedged, LimitOrder("BUY", 10, 189.0)),
        (bag, LimitOrder("BUY", 1, 0.5, orderComboLegs=[OrderComboLeg(0.5)],
                         smartComboRoutingParams=[TagValue("NonGuaranteed", "1")])),
    ]  # fmt: skip
    for contract, order in variants:
        for what_if, version in ((True, 176), (False, 176), (True, 178), (False, 178)):
            order.whatIf = what_if
            request = parse_place_order(placed_fields(contract, order, version=version), version)
            assert request.what_if is what_if, (contract, order)
            assert (request.action, request.order_type, request.limit_price) == ("BUY", "LMT", order.lmtPrice)


def test_the_what_if_open_order_decodes_as_ib_async_reads_it():
    from ib_async import OrderState
    from ib_async.decoder import Decoder

    from kit.gateway import messages as m
    from kit.gateway.config import GatewayConfig
    from kit.gateway.instruments import ContractSpec, Market
    from kit.gateway.state import Book, OrderRequest, WhatIf

    config = GatewayConfig()
    book = Book(config, Market(config.instruments), lambda: datetime.now(UTC))
    request = OrderRequest(8, ContractSpec(symbol="TTE", currency="EUR"), "BUY", 100, "MKT", what_if=True)
    estimate = book.what_if(3, request)
    assert isinstance(estimate, WhatIf)
    msg = m.open_order(estimate.order, estimate)
    assert len(msg.wire(176)) == 128 and len(m.open_order(estimate.order).wire(176)) == 128
    calls: list[tuple[Any, ...]] = []

    class Wrapper:  # records what the Decoder hands ib_async's Wrapper
        def __getattr__(self, name: str):
            return lambda *args: calls.append((name, *args))

    Decoder(Wrapper(), 178).interpret(msg.wire(178))  # type: ignore[arg-type]
    [(name, order_id, contract, order, state)] = calls
    assert name == "openOrder"
    assert (order_id, order.whatIf, order.permId, contract.symbol) == (8, True, 0, "TTE")
    assert isinstance(state, OrderState) and state.status == "PreSubmitted"
    value = 100 * 62.0 * 1.08  # the notional in USD, the account's base currency
    assert numbers(state) == {
        "initMarginBefore": 0.0, "maintMarginBefore": 0.0, "equityWithLoanBefore": 1_000_000.0,
        "initMarginChange": round(0.25 * value, 2), "maintMarginChange": round(0.20 * value, 2),
        "equityWithLoanChange": -1.08, "initMarginAfter": round(0.25 * value, 2),
        "maintMarginAfter": round(0.20 * value, 2), "equityWithLoanAfter": 999_998.92,
        "commission": 1.0, "minCommission": 1.0, "maxCommission": 1.0,
    }  # fmt: skip
    assert (state.commissionCurrency, state.warningText) == ("EUR", "")
    assert book.orders == {} and not book.placements and book.next_valid_id(3) == 1


# ib_async


def test_ib_async_what_if_answers_an_estimate_and_books_nothing():
    from gateway_support import connect, filled_with_commissions, gateway, run, stock, until
    from ib_async import LimitOrder, MarketOrder

    async def scenario():
        async with gateway(seed=3).serving() as gw:
            ib = await connect(gw)
            held = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 100, orderRef="held"))
            await until(ib, filled_with_commissions(held))
            before = (dict(gw.state.placements), list(gw.state.orders), list(gw.state.executions))
            trades = len(ib.trades())
            sent: list[str] = []
            send = gw.send
            gw.send = lambda conn, msg: (sent.append(msg.name), send(conn, msg))

            msft = await ib.whatIfOrderAsync(stock("MSFT"), LimitOrder("BUY", 100, 410.0, orderRef="what-if"))
            assert sent == ["openOrder"]  # no orderStatus, no execution: nothing was placed
            estimate = numbers(msft)
            assert estimate["initMarginChange"] == 0.25 * 100 * 420.0  # at the simulated price
            assert estimate["maintMarginChange"] == 0.20 * 100 * 420.0
            assert estimate["commission"] == estimate["minCommission"] == estimate["maxCommission"] == 1.0
            assert estimate["equityWithLoanChange"] == -1.0
            assert estimate["initMarginBefore"] == round(0.25 * 100 * 190.0, 2)  # the AAPL held
            assert (msft.commissionCurrency, msft.warningText, msft.status) == ("USD", "", "PreSubmitted")

            sell = numbers(await ib.whatIfOrderAsync(stock("AAPL"), MarketOrder("SELL", 1000)))
            assert sell["commission"] == 5.0  # per share above the minimum
            assert sell["initMarginChange"] == 0.25 * 900 * 190.0 - 0.25 * 100 * 190.0  # flips to short

            assert (dict(gw.state.placements), list(gw.state.orders), list(gw.state.executions)) == before
            assert len(ib.trades()) == trades and not ib.openTrades()

            real = ib.placeOrder(stock("MSFT"), MarketOrder("BUY", 10, orderRef="after"))
            await until(ib, filled_with_commissions(real))  # ids still work after what-ifs
            # by now anything a what-if had set off (fills after the latency) would have come too
            assert sorted(o.order_ref for o in gw.state.orders.values()) == ["after", "held"]
            assert {e.order.order_ref for e in gw.state.executions} == {"after", "held"}
            assert dict(gw.state.placements) == {"held": 1, "after": 1}
            ib.disconnect()

    run(scenario())


def test_a_what_if_is_checked_like_a_placement_and_leaves_no_record():
    from gateway_support import connect, errors_of, gateway, run, stock
    from ib_async import MarketOrder

    async def scenario():
        async with gateway(max_order_size=1000).serving() as gw:
            ib = await connect(gw)
            errors = errors_of(ib)
            cases = [(stock("AAPL"), 1001, 201), (stock("NOPE"), 10, 200),
                     (stock("TTE", "SBF", "EUR"), 10, 10311)]  # fmt: skip
            for contract, quantity, code in cases:
                # ib_async ends a failed request with an empty result
                assert await ib.whatIfOrderAsync(contract, MarketOrder("BUY", quantity, orderRef="w")) == []
                assert errors[-1][1] == code
            # a rejected real order leaves a completed order at IB; a rejected what-if leaves nothing
            assert gw.state.orders == {} and not gw.state.placements and not gw.state.executions
            ib.disconnect()

    run(scenario())


# ib_insync


def test_ib_insync_what_if_answers_an_estimate_and_books_nothing():
    from tests.support import require_insync  # not at the top: this file also runs under .venv-insync

    python = require_insync()
    with run_gateway_in_thread(GatewayConfig(max_order_size=1000)) as gw:
        done = subprocess.run([str(python), __file__, str(gw.port)], capture_output=True, text=True,
                              timeout=60)
        sys.stderr.write(done.stderr)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        book = gw.call(lambda: (gw.state.orders, gw.state.placements, gw.state.executions))

    assert book == ({}, {}, [])
    state = out["state"]
    assert {name: float(state[name]) for name in ESTIMATE} == {
        "initMarginBefore": 0.0, "maintMarginBefore": 0.0, "equityWithLoanBefore": 1_000_000.0,
        "initMarginChange": 4750.0, "maintMarginChange": 3800.0, "equityWithLoanChange": -1.0,
        "initMarginAfter": 4750.0, "maintMarginAfter": 3800.0, "equityWithLoanAfter": 999_999.0,
        "commission": 1.0, "minCommission": 1.0, "maxCommission": 1.0,
    }  # fmt: skip
    assert (state["commissionCurrency"], state["warningText"], state["status"]) == ("USD", "", "PreSubmitted")
    assert out["rejected"] == [] and [out["rejected_id"], 201] in out["errors"]  # 1001 > max_order_size
    assert out["trades"] == 0


async def _insync_what_if(port: int) -> dict[str, Any]:
    """The ib_insync side, run under .venv-insync."""
    from ib_insync import IB, MarketOrder, Stock

    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=7)
    errors: list[list[int]] = []
    ib.errorEvent += lambda req_id, code, _msg, _contract: errors.append([req_id, code])
    aapl = Stock("AAPL", "SMART", "USD")
    state = await asyncio.wait_for(ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 100, orderRef="ins-w")), 5)
    rejected_id = ib.client._reqIdSeq  # the id the next request gets
    rejected = await asyncio.wait_for(ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 1001)), 5)
    out = {
        "state": dataclasses.asdict(state),
        "rejected": rejected,
        "rejected_id": rejected_id,
        "errors": errors,
        "trades": len(ib.trades()),
    }
    ib.disconnect()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_insync_what_if(int(sys.argv[1])))))
