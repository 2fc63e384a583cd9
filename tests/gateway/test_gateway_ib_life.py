"""Order life as IB reports it, through the real ib_async client: the statuses an order goes through, the
refusals, venues and liquidity of fills, commissions per order, time formats and pacing. Defaults are IB's
behaviour that kit's adapter handles; the rest are fault knobs (docs/gateway.md)."""

from __future__ import annotations

import asyncio
import re
import struct
from datetime import UTC, datetime, timedelta

from gateway_support import (
    connect,
    errors_of,
    filled_with_commissions,
    gateway,
    run,
    stock,
    until,
    with_client,
)
from ib_async import LimitOrder, MarketOrder

from kit.gateway import Faults, GatewayConfig, run_gateway_in_thread

NASDAQ_VENUES = {"ISLAND", "ARCA", "BATS", "IEX"}


def statuses(trade) -> list[str]:
    return [entry.status for entry in trade.log]


def sent_statuses(ib) -> list[str]:
    """A live list of the statuses of the orderStatus messages the gateway sends (ib_async's own log also
    holds the PendingSubmit and PendingCancel it sets locally)."""
    seen: list[str] = []
    original = ib.wrapper.orderStatus

    def record(order_id, status, *rest):
        seen.append(status)
        original(order_id, status, *rest)

    ib.wrapper.orderStatus = record
    return seen


@with_client()
async def test_presubmitted_before_submitted_and_pending_cancel_before_cancelled(gw, ib):
    errors, sent = errors_of(ib), sent_statuses(ib)
    trade = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 150.0, orderRef="rest"))
    await until(ib, lambda: trade.orderStatus.status == "Submitted")
    assert statuses(trade) == ["PendingSubmit", "PreSubmitted", "Submitted"]
    ib.cancelOrder(trade.order)
    await until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert sent == ["PreSubmitted", "Submitted", "PendingCancel", "Cancelled"]
    assert (trade.order.orderId, 202) in errors


@with_client()
async def test_an_order_never_transmitted_is_api_cancelled(gw, ib):
    sent = sent_statuses(ib)
    held = LimitOrder("BUY", 10, 150.0, orderRef="held", transmit=False)
    trade = ib.placeOrder(stock("AAPL"), held)
    await until(ib, lambda: trade.orderStatus.status == "PreSubmitted")
    ib.cancelOrder(trade.order)
    await until(ib, lambda: trade.isDone())
    assert trade.orderStatus.status == "ApiCancelled" and sent == ["PreSubmitted", "ApiCancelled"]
    assert gw.state.orders_by_ref("held")[0].status == "ApiCancelled"


@with_client(partial_fills=2)
async def test_fills_name_a_venue_and_a_resting_limit_adds_liquidity_a_marketable_one_removes_it(gw, ib):
    resting = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 20, 189.0, orderRef="resting"))
    await until(ib, lambda: resting.orderStatus.status == "Submitted")
    taking = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 20, 191.0, orderRef="taking"))
    market = ib.placeOrder(stock("AAPL"), MarketOrder("SELL", 20, orderRef="market"))
    await until(ib, lambda: taking.isDone() and market.isDone())
    gw.set_price("AAPL", 188.5)
    await until(ib, filled_with_commissions(resting))
    for trade in (resting, taking, market):
        assert {f.execution.exchange for f in trade.fills} <= NASDAQ_VENUES, trade.order.orderRef
    assert {f.execution.lastLiquidity for f in resting.fills} == {1}  # added
    assert {f.execution.lastLiquidity for f in taking.fills + market.fills} == {2}  # removed
    assert all(f.execution.price <= 189.0 for f in resting.fills)


@with_client(partial_fills=3)
async def test_exec_details_carry_cum_qty_and_avg_price_of_the_order(gw, ib):
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 90, orderRef="cum"))
    await until(ib, filled_with_commissions(trade))
    executions = [f.execution for f in trade.fills]
    cumulative = 0.0
    for e in executions:
        cumulative += e.shares
        assert e.cumQty == cumulative
    vwap = sum(e.shares * e.price for e in executions) / 90
    assert abs(executions[-1].avgPrice - vwap) < 1e-6
    assert trade.orderStatus.avgFillPrice == gw.state.orders_by_ref("cum")[0].avg_fill_price


def test_minimum_commission_once_per_order_when_asked():
    async def scenario():
        config = {"partial_fills": 3, "min_commission_per_order": True}
        async with gateway(**config).serving() as gw:
            ib = await connect(gw)
            small = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 90, orderRef="small"))
            large = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 900, orderRef="large"))
            await until(ib, lambda: filled_with_commissions(small)() and filled_with_commissions(large)())
            fees = [f.commissionReport.commission for f in small.fills]
            assert sum(fees) == 1.0 and fees[0] == 1.0 and fees[1:] == [0.0, 0.0]  # $1 once, not per fill
            assert round(sum(f.commissionReport.commission for f in large.fills), 2) == 4.5  # 900 x 0.005
            ib.disconnect()

    run(scenario())


@with_client(faults=Faults(bare_inactive={"idle"}))
async def test_bare_inactive_order_stays_open_never_fills_and_can_be_cancelled(gw, ib):
    errors = errors_of(ib)
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="idle"))
    await until(ib, lambda: trade.orderStatus.status == "Inactive")
    order = gw.state.orders_by_ref("idle")[0]
    assert errors == [] and order.filled == 0 and gw.state.open_orders() == [order]
    ib.cancelOrder(trade.order)
    await until(ib, lambda: order.status == "Cancelled" and (trade.order.orderId, 202) in errors)
    assert not gw.state.executions


@with_client(faults=Faults(tif_preset_notice=True))
async def test_10349_warns_but_the_order_still_fills(gw, ib):
    errors = errors_of(ib)
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, tif="GTC", orderRef="preset"))
    order = gw.state.orders_by_ref
    await until(ib, lambda: bool(order("preset")) and order("preset")[0].status == "Filled")
    assert (trade.order.orderId, 10349) in errors
    assert order("preset")[0].tif == "DAY" and sum(f.execution.shares for f in trade.fills) == 10


def test_110_and_321_refuse_an_order_before_it_exists():
    async def scenario():
        faults = Faults(reject_off_tick=True, reject_fractional_size=True)
        async with gateway(faults=faults).serving() as gw:
            ib = await connect(gw)
            errors = errors_of(ib)
            off_tick = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 189.995, orderRef="off-tick"))
            fraction = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10.5, orderRef="fraction"))
            fine = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 189.99, orderRef="fine"))
            await until(ib, lambda: len(errors) >= 2 and fine.orderStatus.status == "Submitted")
            assert (off_tick.order.orderId, 110) in errors and (fraction.order.orderId, 321) in errors
            assert gw.state.orders_by_ref("off-tick") == gw.state.orders_by_ref("fraction") == []
            assert gw.state.placements["off-tick"] == gw.state.placements["fraction"] == 1
            # ib_async 2.1 marks the 110 Cancelled and the 321 (a warning to it) ValidationError, locally
            local = (off_tick.orderStatus.status, fraction.orderStatus.status)
            assert local == ("Cancelled", "ValidationError")
            ib.disconnect()

    run(scenario())


@with_client()
async def test_off_tick_prices_are_accepted_by_default(gw, ib):
    trade = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 189.995, orderRef="loose"))
    await until(ib, lambda: trade.orderStatus.status == "Submitted")


def test_times_in_tws_zone_named_or_zone_less():
    async def scenario(faults: Faults, tws_zone: str) -> tuple[str, list[datetime]]:
        async with gateway(faults=faults).serving() as gw:
            ib = await connect(gw)
            ib.TimezoneTWS = tws_zone  # how an ib_async user reads zone-less times right
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="t"))
            await until(ib, filled_with_commissions(trade))
            raw = gw._handlers._time(gw.state.executions[0].time)
            times = [f.execution.time for f in trade.fills]
            ib.disconnect()
            return raw, times

    now = datetime.now(UTC)
    named, times = run(scenario(Faults(time_zone="US/Eastern"), ""))
    assert re.fullmatch(r"\d{8} \d\d:\d\d:\d\d US/Eastern", named)
    assert all(abs(t - now) < timedelta(minutes=1) for t in times)
    bare, times = run(scenario(Faults(time_zone="US/Eastern", zoneless_times=True), "US/Eastern"))
    assert re.fullmatch(r"\d{8} \d\d:\d\d:\d\d", bare)
    assert all(abs(t - now) < timedelta(minutes=1) for t in times)


def test_connect_reply_carries_the_tws_zone():
    async def scenario():
        async with gateway(faults=Faults(time_zone="US/Eastern")).serving() as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            offer = b"v100..157"
            writer.write(b"API\0" + struct.pack(">I", len(offer)) + offer)
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            version, when, _ = (await reader.readexactly(size)).decode().split("\0")
            writer.close()
            return version, when

    version, when = run(scenario())
    assert version == "157" and when.endswith(" US/Eastern")


def test_a_client_too_old_is_turned_away():
    async def scenario():
        async with gateway().serving() as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            offer = b"v100..156"
            writer.write(b"API\0" + struct.pack(">I", len(offer)) + offer)
            data = await reader.read()
            writer.close()
            return data

    assert run(scenario()) == b""  # closed without a reply


def test_exec_id_parts_number_the_partial_fills_of_one_order():
    async def scenario():
        faults = Faults(exec_id_parts=True, correct_executions=True)
        async with gateway(partial_fills=3, faults=faults).serving() as gw:
            ib = await connect(gw)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 90, orderRef="parts"))
            await until(ib, lambda: len(gw.state.executions) == 6 and trade.isDone())
            ids = [e.exec_id for e in gw.state.executions]
            base = ids[0].rsplit(".", 2)[0]
            assert ids == [f"{base}.{part:02d}.{rev:02d}" for part in (1, 2, 3) for rev in (1, 2)]
            assert [e.cum_qty for e in gw.state.effective_executions()][-1] == 90
            ib.disconnect()

    run(scenario())


def test_pacing_answers_error_100_beyond_50_messages_a_second():
    with run_gateway_in_thread(GatewayConfig()) as gw:
        from ib_async import IB

        ib = IB()
        ib.connect("127.0.0.1", gw.port, clientId=3)
        errors = errors_of(ib)
        ib.client.MaxRequests = 0  # no client-side throttle: the burst reaches the gateway at once
        for _ in range(70):
            ib.client.reqCurrentTime()
        ib.waitOnUpdate(timeout=2)
        while sum(code == 100 for _, code in errors) < 20:
            assert ib.waitOnUpdate(timeout=5)
        assert gw.state.inbound[3].count >= 70 and gw.state.paced[3] >= 20
        ib.disconnect()
