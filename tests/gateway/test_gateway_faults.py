"""Every fault knob, exercised with the real ib_async client (and the knobs' own rules, without sockets)."""

from __future__ import annotations

import logging
import random

import pytest
from gateway_support import connect, errors_of, filled_with_commissions, gateway, run, stock, with_client
from ib_async import LimitOrder, MarketOrder
from updates import next_emit, until

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


# What the client saw of the order when each disconnect fault closed its connection.
def _open_order_only(trade, gw, ref):
    assert trade.order.permId > 0 and trade.orderStatus.status == "PendingSubmit"  # orderStatus never came
    assert gw.faults.disconnect_after_messages is None  # one-shot


def _acknowledged_unfilled(trade, gw, ref):
    assert trade.orderStatus.status == "Submitted" and trade.fills == []


def _filled_without_the_filled_status(trade, gw, ref):
    assert trade.orderStatus.status == "Submitted"  # the last fill came, its Filled status did not
    assert sum(f.execution.shares for f in trade.fills) == 30
    assert gw.state.orders_by_ref(ref)[0].status == "Filled"


def _placed_unanswered(trade, gw, ref):
    assert trade.order.permId == 0 and trade.orderStatus.status == "PendingSubmit"
    assert gw.state.placements[ref] == 1  # the gateway kept the order; none of its replies went out


DISCONNECTS = [
    pytest.param("disconnect_after_messages", 1, _open_order_only, id="after-1-message"),
    pytest.param("disconnect_on", "execDetails", _acknowledged_unfilled, id="on-execDetails"),
    pytest.param("disconnect_on", "orderStatus:Filled", _filled_without_the_filled_status, id="on-Filled"),
    pytest.param("disconnect_on", "placeOrder", _placed_unanswered, id="on-placeOrder"),
]


@pytest.mark.parametrize("knob,value,seen", DISCONNECTS)
def test_a_disconnect_fault_closes_the_connection_and_the_client_finds_everything_after(knob, value, seen):
    ref = f"{knob}-{value}"

    async def scenario():
        async with gateway().serving() as gw:
            ib = await connect(gw)
            closed = next_emit(ib.disconnectedEvent)
            setattr(gw.faults, knob, value)
            trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef=ref))
            await closed
            seen(trade, gw, ref)
            await _reconnect_and_find(gw, ref, 30)

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


@with_client(faults=Faults(commission_delay=0.3))
async def test_commission_delay(gw, ib):
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="late-commission"))
    await until(ib, lambda: trade.orderStatus.status == "Filled")
    assert len(trade.fills) == 3 and not any(f.commissionReport.execId for f in trade.fills)
    await until(ib, filled_with_commissions(trade))


@with_client(faults=Faults(commission_before_execution=True))
async def test_commission_before_execution_is_lost_by_the_client(gw, ib):
    reports = []
    ib.commissionReportEvent += lambda *args: reports.append(args)
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 30, orderRef="early-commission"))
    await until(ib, lambda: trade.orderStatus.status == "Filled")
    await ib.reqCurrentTimeAsync()  # a round trip: everything sent before has been processed
    assert len(trade.fills) == 3 and reports == []
    assert not any(f.commissionReport.execId for f in trade.fills)
    assert all(e.commission > 0 for e in gw.state.executions)


@with_client(faults=Faults(duplicate_exec_details=True))
async def test_duplicate_exec_details(gw, ib):
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


@with_client(faults=Faults(correct_executions=True))
async def test_correct_executions_sends_01_then_02(gw, ib):
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


@with_client(faults=Faults(drop_orders={"dropped"}))
async def test_drop_orders_silently(gw, ib):
    lost = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="dropped"))
    kept = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="kept"))
    await until(ib, filled_with_commissions(kept))  # replies come in order: none will for lost
    assert lost.orderStatus.status == "PendingSubmit" and lost.order.permId == 0
    assert gw.state.placements["dropped"] == 1 and gw.state.orders_by_ref("dropped") == []
    assert [(client_id, req.order_ref) for client_id, req in gw.state.dropped] == [(1, "dropped")]


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


@with_client(faults=Faults(fill_after_cancel=True))
async def test_fill_after_cancel(gw, ib):
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


@with_client(max_order_size=10, faults=Faults(inactive_after_reject=True))
async def test_inactive_after_reject(gw, ib):
    errors = errors_of(ib)
    trade = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 11, orderRef="too-big"))
    await until(ib, lambda: trade.orderStatus.status == "Inactive")
    assert (trade.order.orderId, 201) in errors
    assert gw.state.orders_by_ref("too-big")[0].status == "Inactive"
    ib.disconnect()
    again = await connect(gw)
    assert [t.orderStatus.status for t in again.trades()] == ["Inactive"]
