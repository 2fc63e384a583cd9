"""Every fault knob, exercised with the real ib_async client (and the knobs' own rules, without sockets)."""

from __future__ import annotations

import logging
import random

from gateway_support import (
    connect,
    errors_of,
    filled_with_commissions,
    gateway,
    next_emit,
    run,
    stock,
    until,
)
from ib_async import LimitOrder, MarketOrder

from kit.gateway import Faults, Gateway, GatewayConfig

# the knobs' rules


def test_drop_rules_accept_a_set_a_predicate_a_probability_or_one_ref():
    rng = random.Random(0)
    assert Faults(drop_orders={"a"}).drops("a", rng) and not Faults(drop_orders={"a"}).drops("b", rng)
    assert Faults(drop_orders=lambda ref: ref.startswith("x-")).drops("x-1", rng)
    assert Faults(drop_orders=1.0).drops("any", rng) and not Faults(drop_orders=0.0).drops("any", rng)
    assert Faults(drop_orders="ab").drops("ab", rng) and not Faults(drop_orders="ab").drops("a", rng)
    assert not Faults().drops("a", rng)


def test_each_gateway_arms_its_own_copy_of_the_configured_faults():
    config = GatewayConfig(faults=Faults(disconnect_on="execDetails"))
    first, second = Gateway(config), Gateway(config)
    assert first.faults.trips("execDetails") and second.faults.trips("execDetails")
    assert config.faults.disconnect_on == "execDetails"


def test_disconnect_knobs_are_one_shot():
    faults = Faults(disconnect_on="orderStatus:Filled", disconnect_after_messages=1)
    assert not faults.trips("orderStatus", "Submitted") and not faults.trips("execDetails")
    assert faults.trips("orderStatus", "Filled") and faults.disconnect_on is None
    assert not faults.trips("orderStatus", "Filled")
    assert [faults.counts_down(), faults.counts_down(), faults.counts_down()] == [False, True, False]
    assert faults.disconnect_after_messages is None


# connection faults


async def _reconnect_and_find(gw, ref: str, quantity: float) -> None:
    """After a fault dropped the connection: the same clientId finds the order and all its fills."""
    again = await connect(gw)

    def all_filled() -> bool:
        return sum(f.execution.shares for f in again.fills() if f.execution.orderRef == ref) == quantity

    await until(again, all_filled)
    [order] = gw.state.orders_by_ref(ref)
    assert {t.order.permId for t in again.trades() if t.order.orderRef == ref} == {order.perm_id}
    assert {f.execution.permId for f in again.fills()} == {order.perm_id}
    again.disconnect()


def test_disconnect_after_n_messages():
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            closed = next_emit(ib.disconnectedEvent)
            gw.faults.disconnect_after_messages = 1  # openOrder goes out, orderStatus does not
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="n-msgs"))
            await closed
            assert trade.order.permId > 0 and trade.orderStatus.status == "PendingSubmit"
            assert gw.faults.disconnect_after_messages is None
            await _reconnect_and_find(gw, "n-msgs", 30)

    run(scenario())


def test_disconnect_on_exec_details():
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            closed = next_emit(ib.disconnectedEvent)
            gw.faults.disconnect_on = "execDetails"
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="on-exec"))
            await closed
            assert trade.orderStatus.status == "Submitted" and trade.fills == []
            await _reconnect_and_find(gw, "on-exec", 30)

    run(scenario())


def test_disconnect_on_order_status_filled():
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            closed = next_emit(ib.disconnectedEvent)
            gw.faults.disconnect_on = "orderStatus:Filled"
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="on-filled"))
            await closed
            assert trade.orderStatus.status == "Submitted"  # the last fill came, its Filled status did not
            assert sum(f.execution.shares for f in trade.fills) == 30
            assert gw.state.orders_by_ref("on-filled")[0].status == "Filled"
            await _reconnect_and_find(gw, "on-filled", 30)

    run(scenario())


def test_disconnect_on_place_order_keeps_the_order_but_sends_nothing():
    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            closed = next_emit(ib.disconnectedEvent)
            gw.faults.disconnect_on = "placeOrder"
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="on-place"))
            await closed
            assert trade.order.permId == 0 and trade.orderStatus.status == "PendingSubmit"
            assert gw.state.placements["on-place"] == 1
            await _reconnect_and_find(gw, "on-place", 30)

    run(scenario())


def test_restart_drops_connections_keeps_state_and_rolls_back_next_valid_id():
    async def scenario():
        async with gateway().serving() as gw:
            ib, other = await connect(gw, client_id=1), await connect(gw, client_id=2)
            filled = ib.placeOrder(stock("JPM"), MarketOrder("BUY", 10, orderRef="before-restart"))
            await until(ib, filled_with_commissions(filled))
            resting = other.placeOrder(stock("JPM"), LimitOrder("BUY", 10, 100.0, orderRef="resting"))
            await until(other, lambda: resting.orderStatus.status == "Submitted")
            closed = [next_emit(ib.disconnectedEvent), next_emit(other.disconnectedEvent)]
            gw.restart()
            for event in closed:
                await event
            assert gw.clients == [] and gw.state.next_valid_id(1) == 1

            again = await connect(gw, client_id=1)
            errors = errors_of(again)
            assert {t.order.orderRef for t in again.trades()} == {"before-restart"}
            assert len(again.fills()) == len(filled.fills)
            reused = again.placeOrder(stock("JPM"), MarketOrder("BUY", 10, orderRef="after-restart"))
            await until(again, reused.isDone)
            assert (reused.order.orderId, 103) in errors  # the rolled-back id was used before the restart
            again.disconnect()

            gw.restart(roll_back_ids=False)
            other_again = await connect(gw, client_id=2)
            assert [t.order.orderRef for t in other_again.openTrades()] == ["resting"]
            fresh = other_again.placeOrder(stock("JPM"), MarketOrder("BUY", 10, orderRef="fresh"))
            await until(other_again, filled_with_commissions(fresh))
            other_again.disconnect()

    run(scenario())


# execution and commission faults


def test_commission_delay():
    async def scenario():
        async with gateway(faults=Faults(commission_delay=0.3)).serving() as gw:
            ib = await connect(gw)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="late-commission"))
            await until(ib, lambda: trade.orderStatus.status == "Filled")
            assert len(trade.fills) == 3 and not any(f.commissionReport.execId for f in trade.fills)
            await until(ib, filled_with_commissions(trade))

    run(scenario())


def test_commission_before_execution_is_lost_by_the_client():
    async def scenario():
        async with gateway(faults=Faults(commission_before_execution=True)).serving() as gw:
            ib = await connect(gw)
            reports = []
            ib.commissionReportEvent += lambda *args: reports.append(args)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="early-commission"))
            await until(ib, lambda: trade.orderStatus.status == "Filled")
            await ib.reqCurrentTimeAsync()  # a round trip: everything sent before has been processed
            assert len(trade.fills) == 3 and reports == []
            assert not any(f.commissionReport.execId for f in trade.fills)
            assert all(e.commission > 0 for e in gw.state.executions)

    run(scenario())


def test_duplicate_exec_details():
    async def scenario():
        async with gateway(faults=Faults(duplicate_exec_details=True)).serving() as gw:
            ib = await connect(gw)
            received, events = [], []
            original = ib.wrapper.execDetails

            def counting(req_id, contract, execution):
                received.append(execution.execId)
                original(req_id, contract, execution)

            ib.wrapper.execDetails = counting  # the decoder looks the handler up on each message
            ib.execDetailsEvent += lambda trade, fill: events.append(fill.execution.execId)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="dup"))
            await until(ib, filled_with_commissions(trade))
            assert len(received) == 6 and len(set(received)) == 3
            assert len(events) == 3 and len(trade.fills) == 3  # the client dedups by execId

    run(scenario())


def test_correct_executions_sends_01_then_02():
    async def scenario():
        async with gateway(faults=Faults(correct_executions=True)).serving() as gw:
            ib = await connect(gw)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="corrected"))
            await until(ib, lambda: len(trade.fills) == 6 and filled_with_commissions(trade)())
            ids = [f.execution.execId for f in trade.fills]
            originals = [i for i in ids if i.endswith(".01")]
            assert len(originals) == 3 and {i[:-3] + ".02" for i in originals} == set(ids) - set(originals)
            price = {f.execution.execId: f.execution.price for f in trade.fills}
            assert all(
                round(price[i] - price[i[:-3] + ".02"], 2) == 0.01 for i in originals
            )  # better, buying
            # the client appends both (double counting); the gateway's book replaces .01 by .02
            assert sum(f.execution.shares for f in trade.fills) == 60
            assert gw.state.orders_by_ref("corrected")[0].filled == 30
            assert [p.quantity for p in gw.state.positions()] == [30]
            assert len(gw.state.executions) == 6 and len(gw.state.effective_executions()) == 3
            replay = await ib.reqExecutionsAsync()
            assert sorted(f.execution.execId for f in replay) == sorted(ids)

    run(scenario())


def test_drop_orders_silently():
    async def scenario():
        async with gateway(faults=Faults(drop_orders={"dropped"})).serving() as gw:
            ib = await connect(gw)
            lost = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="dropped"))
            kept = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="kept"))
            await until(ib, filled_with_commissions(kept))  # replies come in order: none will for lost
            assert lost.orderStatus.status == "PendingSubmit" and lost.order.permId == 0
            assert gw.state.placements["dropped"] == 1 and gw.state.orders_by_ref("dropped") == []
            assert [(client_id, req.order_ref) for client_id, req in gw.state.dropped] == [(1, "dropped")]

    run(scenario())


def test_withhold_exec_details_end(caplog):
    async def scenario():
        async with gateway(faults=Faults(withhold_exec_details_end=True)).serving() as gw:
            ib = await connect(gw, timeout=0.5)  # ib_async logs the timeout and carries on
            assert ib.isConnected()
            gw.faults.withhold_exec_details_end = False
            assert await ib.reqExecutionsAsync() == []

    with caplog.at_level(logging.ERROR, logger="ib_async.ib"):
        run(scenario())
    assert "executions request timed out" in caplog.text


def test_fill_after_cancel():
    async def scenario():
        async with gateway(faults=Faults(fill_after_cancel=True)).serving() as gw:
            ib = await connect(gw)
            trade = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 30, 150.0, orderRef="late-fill"))
            await until(ib, lambda: trade.orderStatus.status == "Submitted")
            cancelled = next_emit(trade.cancelledEvent)
            ib.cancelOrder(trade.order)
            await cancelled
            assert trade.fills == []
            await until(ib, filled_with_commissions(trade))
            assert trade.orderStatus.status == "Cancelled" and trade.fills[0].execution.price == 150.0
            [order] = gw.state.orders_by_ref("late-fill")
            assert order.status == "Cancelled" and 0 < order.filled < 30

    run(scenario())


def test_inactive_after_reject():
    async def scenario():
        async with gateway(max_order_size=10, faults=Faults(inactive_after_reject=True)).serving() as gw:
            ib = await connect(gw)
            errors = errors_of(ib)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 11, orderRef="too-big"))
            await until(ib, lambda: trade.orderStatus.status == "Inactive")
            assert (trade.order.orderId, 201) in errors
            assert gw.state.orders_by_ref("too-big")[0].status == "Inactive"
            ib.disconnect()
            again = await connect(gw)
            assert [t.orderStatus.status for t in again.trades()] == ["Inactive"]

    run(scenario())
