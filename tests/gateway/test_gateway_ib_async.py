"""The real ib_async 2.1 client against the simulated gateway, both in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime

from gateway_support import connect, errors_of, filled_with_commissions, gateway, run, stock, with_client
from ib_async import IB, ExecutionFilter, LimitOrder, MarketOrder, Order
from updates import next_emit, until

from kit.gateway import Gateway, GatewayConfig

EXEC_ID = re.compile(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.0[12]")


def test_connects_within_a_second_with_accounts_and_notices():
    async def scenario():
        async with gateway(accounts=("DU111111", "DU222222")).serving() as gw:
            ib = IB()
            notices = errors_of(ib)
            started = time.perf_counter()
            await ib.connectAsync("127.0.0.1", gw.port, clientId=1)
            elapsed = time.perf_counter() - started
            assert ib.client.getAccounts() == ["DU111111", "DU222222"]
            assert [code for _, code in notices] == [2104, 2104, 2106, 2158]
            assert ib.client.serverVersion() == 178  # the lower of ib_async's maximum (178) and the gateway's
            assert gw.clients == [1]
            ib.disconnect()
            return elapsed

    assert run(scenario()) < 1.0


@with_client()
async def test_qualifies_us_and_european_stocks_and_answers_200_for_unknown(gw, ib):
    errors = errors_of(ib)
    aapl, tte, ibm = stock("AAPL"), stock("TTE", currency="EUR"), stock("IBM")
    assert await ib.qualifyContractsAsync(aapl, tte, ibm, stock("NOPE")) == [aapl, tte, ibm, None]
    assert (aapl.conId, aapl.primaryExchange, aapl.currency) == (265598, "NASDAQ", "USD")
    assert (tte.conId, tte.exchange, tte.primaryExchange) == (29612193, "SMART", "SBF")
    assert tte.currency == "EUR"
    assert ibm.primaryExchange == "NYSE"
    [details] = await ib.reqContractDetailsAsync(stock("SAP", "IBIS", "EUR"))
    assert details.contract.primaryExchange == "IBIS" and details.longName == "SAP SE"
    assert "SMART" in details.validExchanges.split(",")
    assert [code for _, code in errors] == [200]


def test_market_order_fills_in_seeded_partial_fills_with_commissions():
    async def scenario():
        async with gateway(seed=5, partial_fills=3).serving() as gw:
            ib = await connect(gw)
            contract = stock("AAPL")
            trade = ib.placeOrder(contract, MarketOrder("BUY", 100, orderRef="run-AAPL-BUY"))
            await until(ib, filled_with_commissions(trade))
            fills = trade.fills
            assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 100
            assert len(fills) == 3 and sum(f.execution.shares for f in fills) == 100
            assert [f.execution.cumQty for f in fills] == [
                sum(f.execution.shares for f in fills[: i + 1]) for i in range(3)
            ]
            order = gw.state.orders_by_ref("run-AAPL-BUY")[0]
            for fill in fills:
                assert EXEC_ID.fullmatch(fill.execution.execId)
                assert fill.execution.permId == order.perm_id == trade.order.permId
                assert fill.execution.orderRef == "run-AAPL-BUY" and fill.execution.side == "BOT"
                assert fill.execution.clientId == 1
                assert 190.0 < fill.execution.price <= 190.03
                assert fill.commissionReport.commission == 1.0 and fill.commissionReport.currency == "USD"
            assert trade.orderStatus.avgFillPrice == order.avg_fill_price
            assert gw.state.placements["run-AAPL-BUY"] == 1
            ib.disconnect()
            return [(f.execution.shares, f.execution.price) for f in fills]

    assert run(scenario()) == run(scenario())  # same seed, same orders: same executions


@with_client()
async def test_limit_order_rests_until_the_price_reaches_it(gw, ib):
    buy = ib.placeOrder(stock("MSFT"), LimitOrder("BUY", 50, 415.0, orderRef="lmt-buy"))
    sell = ib.placeOrder(stock("MSFT"), LimitOrder("SELL", 10, 430.0, orderRef="lmt-sell"))
    await until(ib, lambda: buy.orderStatus.status == sell.orderStatus.status == "Submitted")
    assert gw.state.orders_by_ref("lmt-buy")[0].filled == 0
    gw.set_price("MSFT", 416.0)  # not there yet
    gw.set_price("MSFT", 414.5)
    await until(ib, filled_with_commissions(buy))
    assert all(f.execution.price <= 415.0 for f in buy.fills)
    assert sell.orderStatus.status == "Submitted" and not sell.fills
    gw.set_price("MSFT", 431.0)
    await until(ib, filled_with_commissions(sell))
    assert all(f.execution.price >= 430.0 for f in sell.fills)


@with_client()
async def test_cancel_and_the_errors_for_unknown_or_finished_orders(gw, ib):
    errors = errors_of(ib)
    trade = ib.placeOrder(stock("IBM"), LimitOrder("BUY", 10, 100.0, orderRef="to-cancel"))
    await until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.cancelOrder(trade.order)
    await until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert gw.state.orders_by_ref("to-cancel")[0].status == "Cancelled"
    ib.cancelOrder(trade.order)  # already cancelled
    ib.cancelOrder(Order(orderId=9999))  # never placed
    await until(ib, lambda: {10148, 10147} <= {code for _, code in errors})
    assert (trade.order.orderId, 202) in errors and (9999, 10147) in errors


@with_client(max_order_size=1000)
async def test_rejections_201_over_max_size_and_10311_for_direct_routing(gw, ib):
    errors = errors_of(ib)
    big = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 1001, orderRef="big"))
    direct = ib.placeOrder(stock("TTE", "SBF", "EUR"), MarketOrder("BUY", 10, orderRef="direct"))
    smart = ib.placeOrder(stock("TTE", currency="EUR"), MarketOrder("BUY", 10, orderRef="smart"))
    await until(ib, lambda: big.isDone() and direct.isDone())
    await until(ib, filled_with_commissions(smart))
    assert (big.order.orderId, 201) in errors and (direct.order.orderId, 10311) in errors
    assert big.orderStatus.status == direct.orderStatus.status == "Cancelled"
    assert gw.state.orders_by_ref("big")[0].reason.startswith("Rejected: Order rejected - reason:")
    assert {f.commissionReport.currency for f in smart.fills} == {"EUR"}
    # a SMART fill names the venue it filled on, as IB does
    assert {f.execution.exchange for f in smart.fills} <= {"SBF", "AQEUEN", "CHIXEN", "TRQXEN"}


@with_client()
async def test_duplicate_order_id_gets_103(gw, ib):
    errors = errors_of(ib)
    first = ib.placeOrder(stock("XOM"), MarketOrder("BUY", 5, orderRef="first"))
    await until(ib, lambda: first.isDone())
    reused = MarketOrder("BUY", 5, orderRef="reused")
    reused.orderId = first.order.orderId - 1  # ids must increase per client
    trade = ib.placeOrder(stock("XOM"), reused)
    await until(ib, lambda: trade.isDone())
    assert (reused.orderId, 103) in errors
    assert gw.state.orders_by_ref("reused") == [] and gw.state.placements["reused"] == 1


def test_second_connection_with_a_client_id_in_use_gets_326_and_is_closed():
    async def scenario():
        async with gateway().serving() as gw:
            first = await connect(gw, client_id=5)
            second = await connect(gw, client_id=6)
            intruder = IB()
            errors = errors_of(intruder)
            closed = next_emit(intruder.client.apiError)
            # ib_async waits out its timeout after the gateway hangs up; the hang-up is what we check
            attempt = asyncio.create_task(intruder.connectAsync("127.0.0.1", gw.port, clientId=5))
            [message] = await closed
            assert "already in use" in message and (-1, 326) in errors
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            assert gw.clients == [5, 6] and first.isConnected()
            first.disconnect()
            second.disconnect()

    run(scenario())


def test_exec_filter_positions_and_account_updates():
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)

    async def scenario():
        async with Gateway(GatewayConfig(seed=2), clock=lambda: now).serving() as gw:
            ib = await connect(gw)
            for symbol, action, qty in (("AAPL", "BUY", 100), ("IBM", "BUY", 30), ("AAPL", "SELL", 40)):
                trade = ib.placeOrder(stock(symbol), MarketOrder(action, qty, orderRef=f"{symbol}-{action}"))
                await until(ib, filled_with_commissions(trade))
            # closing fills realise P&L (net of commission); opening ones report none (unset: 0 client-side)
            assert all(f.commissionReport.realizedPNL < 0 for f in trade.fills)
            assert {p.contract.symbol: p.position for p in ib.positions()} == {"AAPL": 60, "IBM": 30}
            assert {p.contract.symbol: p.position for p in ib.portfolio()} == {"AAPL": 60, "IBM": 30}
            sells = await ib.reqExecutionsAsync(ExecutionFilter(symbol="AAPL", side="SELL"))
            assert {f.execution.orderRef for f in sells} == {"AAPL-SELL"}
            assert sum(f.execution.shares for f in sells) == 40
            assert len(await ib.reqExecutionsAsync(ExecutionFilter(clientId=2))) == 0
            assert {f.execution.time for f in sells} == {now}
            assert len(await ib.reqExecutionsAsync(ExecutionFilter(time="20261121-15:00:00"))) == 9
            assert len(await ib.reqExecutionsAsync(ExecutionFilter(time="20261121-15:00:01"))) == 0
            positions = {p.contract.symbol: p.position for p in await ib.reqPositionsAsync()}
            assert positions == {"AAPL": 60, "IBM": 30}
            assert {p.instrument.symbol: p.quantity for p in gw.state.positions()} == positions
            tags = {v.tag for v in await ib.accountSummaryAsync()}
            assert {"NetLiquidation", "TotalCashValue", "BuyingPower"} <= tags
            ib.disconnect()

    run(scenario())


def test_reconnect_with_the_same_client_id_finds_orders_and_executions():
    async def scenario():
        async with gateway(seed=3).serving() as gw:
            ib = await connect(gw, client_id=9)
            done = ib.placeOrder(stock("AMZN"), MarketOrder("BUY", 20, orderRef="rk-AMZN-BUY"))
            resting = ib.placeOrder(stock("NFLX"), LimitOrder("BUY", 5, 500.0, orderRef="rk-NFLX-BUY"))
            await until(ib, lambda: filled_with_commissions(done)() and resting.order.permId > 0)
            exec_ids = {f.execution.execId for f in done.fills}
            ib.disconnect()

            again = await connect(gw, client_id=9)
            by_ref = {t.order.orderRef: t for t in again.trades()}
            assert by_ref["rk-NFLX-BUY"].order.orderId == resting.order.orderId
            assert by_ref["rk-NFLX-BUY"].order.permId == resting.order.permId
            assert by_ref["rk-NFLX-BUY"].orderStatus.status == "Submitted"
            assert by_ref["rk-AMZN-BUY"].order.orderId == 0  # completed orders come back keyed by permId
            assert by_ref["rk-AMZN-BUY"].order.permId == done.order.permId
            assert by_ref["rk-AMZN-BUY"].orderStatus.status == "Filled"
            fills = again.fills()
            assert {f.execution.execId for f in fills} == exec_ids
            assert {(f.execution.orderRef, f.execution.permId) for f in fills} == {
                ("rk-AMZN-BUY", done.order.permId)
            }
            assert all(f.commissionReport.commission > 0 for f in fills)

            gw.set_price("NFLX", 499.0)  # the reconnected client follows the resting order to its fill
            await until(again, filled_with_commissions(by_ref["rk-NFLX-BUY"]))
            again.disconnect()

    run(scenario())


def test_several_clients_see_their_own_orders_and_global_cancel_reaches_all():
    async def scenario():
        async with gateway().serving() as gw:
            one, two = await connect(gw, client_id=1), await connect(gw, client_id=2)
            t1 = one.placeOrder(stock("JPM"), LimitOrder("BUY", 10, 150.0, orderRef="c1"))
            t2 = two.placeOrder(stock("JPM"), LimitOrder("BUY", 10, 150.0, orderRef="c2"))
            await until(one, lambda: t1.orderStatus.status == "Submitted")
            await until(two, lambda: t2.orderStatus.status == "Submitted")
            assert t1.orderStatus.clientId == 1 and t2.orderStatus.clientId == 2
            assert [t.order.orderRef for t in await one.reqOpenOrdersAsync()] == ["c1"]
            assert {t.order.orderRef for t in await one.reqAllOpenOrdersAsync()} == {"c1", "c2"}
            one.reqGlobalCancel()
            await until(one, lambda: t1.orderStatus.status == "Cancelled")
            await until(two, lambda: t2.orderStatus.status == "Cancelled")
            assert gw.state.open_orders() == []
            one.disconnect()
            two.disconnect()

    run(scenario())


@with_client()
async def test_modify_ioc_and_untransmitted_orders(gw, ib):
    errors = errors_of(ib)
    order = LimitOrder("BUY", 10, 180.0, orderRef="modify")
    trade = ib.placeOrder(stock("AAPL"), order)
    await until(ib, lambda: trade.orderStatus.status == "Submitted")
    order.lmtPrice = 191.0  # now marketable
    ib.placeOrder(stock("AAPL"), order)
    await until(ib, filled_with_commissions(trade))
    assert gw.state.placements["modify"] == 1

    ioc = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 100.0, tif="IOC", orderRef="ioc"))
    await until(ib, lambda: ioc.isDone())
    assert ioc.orderStatus.status == "Cancelled" and not ioc.fills

    held = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 1, transmit=False, orderRef="held"))
    await until(ib, lambda: held.orderStatus.status == "PreSubmitted")
    assert gw.state.orders_by_ref("held")[0].filled == 0
    assert [code for _, code in errors if code < 2100] == []


@with_client()
async def test_market_data_snapshot_and_stream(gw, ib):
    [xom] = await ib.qualifyContractsAsync(stock("XOM"))  # ib_async keys tickers by conId
    [ticker] = await ib.reqTickersAsync(xom)
    assert (ticker.bid, ticker.ask, ticker.last, ticker.close) == (114.99, 115.01, 115.0, 115.0)
    streaming = ib.reqMktData(xom)
    await until(ib, lambda: streaming.last == 115.0)
    gw.set_price("XOM", 117.5)
    await until(ib, lambda: (streaming.bid, streaming.ask, streaming.last) == (117.49, 117.51, 117.5))
    ib.cancelMktData(streaming.contract)


def test_unknown_requests_are_ignored_and_logged(caplog):
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            ib.client.send(999, 1, "whatever")
            ib.client.send("garbage")
            assert await ib.reqCurrentTimeAsync()  # still served
            assert ib.isConnected() and gw.clients == [1]
            ib.disconnect()

    with caplog.at_level(logging.WARNING, logger="kit.gateway"):
        run(scenario())
    assert "ignoring unknown request ['999'" in caplog.text
    assert "ignoring unknown request ['garbage']" in caplog.text


def test_inbound_message_rate_is_recorded_per_client():
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw, client_id=4)
            ib.client.MaxRequests = 0  # no client-side throttle: a burst the meter must see
            for _ in range(60):
                ib.client.reqCurrentTime()
            await ib.reqCurrentTimeAsync()
            meter = gw.state.inbound[4]
            assert meter.count >= 60 + 5  # the burst plus startApi and connect()'s requests
            assert gw.state.max_inbound_rate() == meter.max_per_window > 50
            ib.disconnect()

    run(scenario())
