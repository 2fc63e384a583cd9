"""kit.execute end to end on the mock broker (and scripted brokers): the Run, resuming without sending
twice, payload conflicts, batched writes, corrections, late fills, timeouts, and event loops."""

from __future__ import annotations

import asyncio
import math

import pandas as pd
import pytest

import kit
import kit.store
from kit.brokers.mock import MockBroker
from kit.clock import utcnow
from kit.engine import Engine
from kit.errors import BrokerUnavailableError, PayloadConflictError
from kit.ids import run_id_for
from kit.model import Accepted, Cancelled, Commission, Execution, Fill, OrderIntent
from kit.store import Ledger
from tests.support import ScriptedBroker

PRICES = {"AAPL": 190.0, "MSFT": 410.0, "TTE": 61.5}
TARGETS = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [100, 30]})


def lmt(symbol: str, side: str, quantity: float, limit: float) -> pd.DataFrame:
    return pd.DataFrame({"symbol": [symbol], "side": [side], "quantity": [quantity], "order_type": ["LMT"],
                         "limit_price": [limit]})


def execution(order: OrderIntent, exec_id: str, quantity: float, price: float, *, key: str | None = None,
              revision: int = 0) -> Execution:
    at = utcnow()
    fill = Fill(exec_id, order.client_order_id, quantity, price, at, currency="USD", key=key,
                revision=revision)
    return Execution(fill, at)


def fee(order: OrderIntent, exec_id: str, amount: float) -> Commission:
    return Commission(exec_id, amount, "USD", utcnow(), order.client_order_id)


# ---- the Run ------------------------------------------------------------------------------------------


def test_execute_returns_the_run_as_the_ledger_has_it(db):
    run = kit.execute(TARGETS, prices=PRICES, run_key="momentum-2026-11-21", db=db, timeout=5)
    assert run.run_id == run_id_for("momentum-2026-11-21") and run.run_key == "momentum-2026-11-21"
    assert run.status == "done"
    assert isinstance(run.orders, pd.DataFrame) and isinstance(run.fills, pd.DataFrame)
    assert run.orders["client_order_id"].tolist() == ["momentum-2026-11-21-AAPL-BUY",
                                                      "momentum-2026-11-21-MSFT-SELL"]
    ledger = kit.ledger(db)
    row = ledger.runs().set_index("run_id").loc[run.run_id]
    assert (row["status"], row["broker"], row["account"]) == ("done", "mock", "MOCK-PAPER")
    assert row["ended_at"] >= row["started_at"]
    pd.testing.assert_frame_equal(ledger.orders(run.run_id), run.orders)
    pd.testing.assert_frame_equal(ledger.fills(run.run_id), run.fills)
    assert (run.orders["submitted_at"] <= run.orders["updated_at"]).all()


def test_a_run_renders_as_html_and_as_a_summary(db):
    run = kit.execute(pd.DataFrame({"symbol": ["AAPL", "ZZZZ"], "quantity": [10, 5]}), prices=PRICES,
                      run_key="k", db=db, timeout=5)
    html = run._repr_html_()
    assert "<table" in html and "<b>partial</b>" in html
    assert "k-AAPL-BUY" in html and "price_unavailable" in html
    text = repr(run)
    assert "partial" in text and "FILLED 1" in text and "REJECTED 1" in text


def test_a_plan_can_be_executed_as_planned(db):
    plan = kit.plan(TARGETS, run_key="k")
    run = kit.execute(plan, prices=PRICES, db=db, timeout=5)
    assert run.run_key == "k"
    assert run.orders["client_order_id"].tolist() == [o.client_order_id for o in plan.intents]
    with pytest.raises(kit.KitError, match="differs from the plan"):
        kit.execute(plan, prices=PRICES, run_key="other", db=db)


def test_execute_works_inside_a_running_event_loop(db):
    """What a Jupyter kernel does: the cell's code runs while the kernel's loop is running."""

    async def cell():
        asyncio.get_running_loop()  # we are inside a loop, as in a notebook cell
        return kit.execute(TARGETS, prices=PRICES, run_key="k", db=db, timeout=5)

    run = asyncio.run(cell())
    assert run.status == "done" and len(run.fills) == 2


def test_execute_async_can_be_awaited(db):
    async def cell():
        return await kit.execute_async(TARGETS, prices=PRICES, run_key="k", db=db, timeout=5)

    run = asyncio.run(cell())
    assert run.status == "done" and run.fills["quantity"].sum() == 130


# ---- resuming a run ---------------------------------------------------------------------------------------


def test_executing_a_finished_run_again_sends_nothing(db):
    first = kit.execute(TARGETS, prices=PRICES, run_key="k", db=db, timeout=5)
    broker = MockBroker(prices=PRICES)
    again = kit.execute(TARGETS, broker=broker, run_key="k", db=db, timeout=5)
    assert broker.submitted == []
    assert again.status == "done"
    pd.testing.assert_frame_equal(again.fills, first.fills)
    assert len(kit.ledger(db).runs()) == 1
    kinds = kit.ledger(db).events(first.run_id)["kind"].tolist()
    assert kinds.count("run_started") == 1 and kinds.count("run_resumed") == 1


def test_a_resumed_run_follows_an_order_left_working_and_does_not_send_it_again(db):
    broker = MockBroker(prices=PRICES, partial_fills=2)
    first = kit.execute(pd.concat([TARGETS, lmt("TTE", "BUY", 50, 60.0)], ignore_index=True), broker=broker,
                        run_key="k", db=db, timeout=0.5, on_timeout="leave")
    assert first.status == "partial"
    assert first.orders.set_index("symbol").loc["TTE", "status"] == "SUBMITTED"
    broker.set_price("TTE", 59.5)  # between runs, the market reaches the limit
    second = kit.execute(pd.concat([TARGETS, lmt("TTE", "BUY", 50, 60.0)], ignore_index=True), broker=broker,
                         run_key="k", db=db, timeout=5)
    assert second.status == "done"
    assert sorted(broker.submitted) == ["k-AAPL-BUY", "k-MSFT-SELL", "k-TTE-BUY"]  # each exactly once
    tte = second.orders.set_index("symbol").loc["TTE"]
    assert tte["status"] == "FILLED" and tte["avg_fill_price"] == 59.5
    assert second.fills["exec_id"].is_unique and second.fills["quantity"].sum() == 180


class CrashingBroker(MockBroker):
    """The process dies right after handing one order to the broker: its events never reach kit."""

    def __init__(self, *args, crash_after: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_after = crash_after

    async def submit(self, order: OrderIntent) -> None:
        await super().submit(order)
        if order.client_order_id == self.crash_after:
            self.crash_after = None
            raise ConnectionError("connection to the broker lost")


def test_a_run_resumed_after_a_crash_sends_each_order_exactly_once(db):
    broker = CrashingBroker(prices=PRICES, crash_after="k-AAPL-BUY")
    with pytest.raises(ConnectionError):
        kit.execute(TARGETS, broker=broker, run_key="k", db=db, timeout=5)
    crashed = kit.ledger(db).runs().iloc[0]
    assert crashed["status"] == "failed" and crashed["error_name"] == "ConnectionError"
    assert broker.submitted == ["k-AAPL-BUY"]

    run = kit.execute(TARGETS, broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    # AAPL reached the broker before the crash: found there and followed, not sent again.
    # MSFT never reached it: sent now, once.
    assert broker.submitted == ["k-AAPL-BUY", "k-MSFT-SELL"]
    assert run.fills["exec_id"].is_unique
    assert run.fills.groupby("symbol")["quantity"].sum().to_dict() == {"AAPL": 100, "MSFT": 30}


class FlakyBroker(MockBroker):
    def __init__(self, *args, down: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = down

    async def connect(self) -> None:
        if self.down:
            raise BrokerUnavailableError("mock gateway is down")
        await super().connect()


def test_a_run_whose_broker_was_down_sends_everything_once_when_retried(db):
    broker = FlakyBroker(prices=PRICES)
    with pytest.raises(BrokerUnavailableError):
        kit.execute(TARGETS, broker=broker, run_key="k", db=db, timeout=5)
    assert broker.submitted == []
    assert kit.ledger(db).runs().iloc[0]["status"] == "failed"
    broker.down = False
    run = kit.execute(TARGETS, broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done" and broker.submitted == ["k-AAPL-BUY", "k-MSFT-SELL"]


def test_a_different_payload_under_an_existing_client_order_id_is_refused(db):
    kit.execute(TARGETS, prices=PRICES, run_key="k", db=db, timeout=5)
    before = kit.ledger(db)
    orders_before, events_before = before.orders(), before.events()
    changed = TARGETS.assign(quantity=[200, 30])
    broker = MockBroker(prices=PRICES)
    with pytest.raises(PayloadConflictError) as error:
        kit.execute(changed, broker=broker, run_key="k", db=db, timeout=5)
    message = str(error.value)
    assert "k-AAPL-BUY: quantity 100.0 -> 200.0" in message and "nothing was sent" in message
    assert "k-MSFT-SELL" not in message  # only the order that changed is named
    assert broker.submitted == []
    pd.testing.assert_frame_equal(kit.ledger(db).orders(), orders_before)
    pd.testing.assert_frame_equal(kit.ledger(db).events(), events_before)
    assert kit.ledger(db).runs().iloc[0]["status"] == "done"


def test_a_limit_price_change_is_a_payload_conflict_too(db):
    kit.execute(lmt("MSFT", "SELL", 10, 420.0), prices=PRICES, run_key="k", db=db, timeout=0.2,
                on_timeout="leave")
    with pytest.raises(PayloadConflictError, match=r"limit_price 420\.0 -> 415\.0"):
        kit.execute(lmt("MSFT", "SELL", 10, 415.0), prices=PRICES, run_key="k", db=db, timeout=0.2)


# ---- what the ledger records ----------------------------------------------------------------------------


def test_events_are_written_in_batches(db, monkeypatch):
    writes: list[int] = []
    original = kit.store.Ledger.write

    def counting(self, batch):
        writes.append(len(batch.events))
        return original(self, batch)

    monkeypatch.setattr(kit.store.Ledger, "write", counting)
    broker = MockBroker(prices=PRICES, partial_fills=5)
    targets = pd.DataFrame({"symbol": list(PRICES), "side": ["BUY"] * 3, "quantity": [500] * 3})
    run = kit.execute(targets, broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done" and len(run.fills) == 15
    events = kit.ledger(db).events(run.run_id)
    assert sum(writes) == len(events) > 30  # every event is written, exactly once
    assert len(writes) * 4 < len(events)  # ... a batch at a time, not a commit per event
    assert max(writes) >= 15


def test_the_order_is_in_the_ledger_before_the_broker_sees_it(db):
    seen: list[pd.DataFrame] = []

    def script(order):
        seen.append(kit.ledger(db).orders())
        return [Accepted(order.client_order_id, utcnow()), execution(order, "x.01", order.quantity, 10.0),
                fee(order, "x.01", 1.0)]

    kit.execute(TARGETS.iloc[:1], broker=ScriptedBroker(script), run_key="k", db=db, timeout=5)
    row = seen[0].set_index("client_order_id").loc["k-AAPL-BUY"]
    assert pd.notna(row["submitted_at"]) and row["status"] == "NEW"


def test_a_corrected_execution_replaces_the_one_it_corrects_and_an_early_commission_is_joined(db):
    def script(order):
        return [
            Accepted(order.client_order_id, utcnow(), broker_order_id="11", perm_id="5001"),
            execution(order, "0001.01.01", order.quantity, 190.0, key="0001.01", revision=1),
            fee(order, "0001.01.02", 1.10),  # the correction's commission, before the correction
            execution(order, "0001.01.02", order.quantity, 190.05, key="0001.01", revision=2),  # corrects .01
            fee(order, "0001.01.01", 1.00),  # the superseded report, last
        ]

    run = kit.execute(TARGETS.iloc[:1], broker=ScriptedBroker(script), run_key="k", db=db, timeout=5)
    assert run.fills[["exec_id", "price", "commission"]].values.tolist() == [["0001.01.02", 190.05, 1.10]]
    order = run.orders.iloc[0]
    assert (order["status"], order["filled_quantity"], order["avg_fill_price"]) == ("FILLED", 100, 190.05)
    assert order["commission"] == pytest.approx(1.10)
    assert (order["broker_order_id"], order["perm_id"]) == ("11", "5001")
    assert run.status == "done"
    details = kit.ledger(db).events(run.run_id)["detail"].tolist()
    assert any('"effect": "correction"' in d for d in details)


def test_a_fill_after_the_cancel_is_still_recorded(db):
    def script(order):
        return [
            Accepted(order.client_order_id, utcnow()),
            execution(order, "a.01", 40, 190.0), fee(order, "a.01", 1.0),
            Cancelled(order.client_order_id, utcnow(), "cancelled by the desk"),
            execution(order, "b.01", 20, 190.2), fee(order, "b.01", 1.0),
        ]

    run = kit.execute(TARGETS.iloc[:1], broker=ScriptedBroker(script), run_key="k", db=db, timeout=5)
    order = run.orders.iloc[0]
    assert order["status"] == "CANCELLED" and order["reason"] == "cancelled by the desk"
    assert (order["filled_quantity"], order["remaining_quantity"]) == (60, 0)
    assert sorted(run.fills["exec_id"]) == ["a.01", "b.01"]
    assert run.status == "partial"


def test_a_duplicate_execution_from_the_broker_is_recorded_once(db):
    def script(order):
        fill = execution(order, "a.01", order.quantity, 190.0)
        return [Accepted(order.client_order_id, utcnow()), fill, fee(order, "a.01", 1.0), fill,
                fee(order, "a.01", 1.0)]

    run = kit.execute(TARGETS.iloc[:1], broker=ScriptedBroker(script), run_key="k", db=db, timeout=5)
    assert run.fills["exec_id"].tolist() == ["a.01"]
    assert run.orders.iloc[0]["filled_quantity"] == 100 and run.orders.iloc[0]["commission"] == 1.0


def test_a_partially_filled_order_cancelled_at_the_timeout_makes_the_run_partial(db):
    class FillsOnce(MockBroker):
        """The first piece fills, then the market walks away from the limit."""

        def emit(self, event):
            super().emit(event)
            if isinstance(event, Execution):
                self.set_price("AAPL", 200.0)

    broker = FillsOnce(prices=PRICES, partial_fills=2)
    run = kit.execute(lmt("AAPL", "BUY", 100, 195.0), broker=broker, run_key="k", db=db, timeout=0.5)
    order = run.orders.iloc[0]
    assert order["status"] == "CANCELLED" and 0 < order["filled_quantity"] < 100
    assert order["remaining_quantity"] == 0
    assert run.status == "partial"


def test_a_cancel_the_broker_never_confirms_is_reported(db):
    broker = ScriptedBroker(lambda order: [Accepted(order.client_order_id, utcnow())])

    async def go():
        with Ledger(db) as ledger:
            engine = Engine(kit.plan(TARGETS.iloc[:1], run_key="k"), broker, ledger, timeout=0.2,
                            cancel_timeout=0.2)
            return await engine.run()

    run = asyncio.run(go())
    assert broker.cancel_requests == ["k-AAPL-BUY"]
    assert run.orders.iloc[0]["status"] == "SUBMITTED"  # never marked cancelled without the broker's word
    assert any("not confirmed" in note for note in run.notes)
    assert "cancel_unconfirmed" in kit.ledger(db).events(run.run_id)["kind"].tolist()
    assert run.status == "failed"


def test_an_id_another_run_holds_is_refused_not_overwritten(db):
    """Run key "x" with symbol "A-B" and run key "x-A" with symbol "B" both make "x-A-B-BUY"."""
    first = kit.execute(pd.DataFrame({"symbol": ["A-B"], "side": ["BUY"], "quantity": [1]}), run_key="x",
                        db=db, prices={"A-B": 10.0})
    with pytest.raises(PayloadConflictError, match="belong to other runs"):
        kit.execute(pd.DataFrame({"symbol": ["B"], "side": ["BUY"], "quantity": [1]}), run_key="x-A", db=db,
                    prices={"B": 10.0})
    orders = kit.ledger(db).orders()
    assert list(orders["run_id"]) == [first.run_id] and list(orders["symbol"]) == ["A-B"]


def test_rerunning_a_run_with_a_cancelled_order_flags_nothing_and_sends_nothing(db):
    lmt = pd.DataFrame({"symbol": ["AAPL"], "side": ["BUY"], "quantity": [10], "order_type": ["LMT"],
                        "limit_price": [1.0]})
    first = kit.execute(lmt, broker=MockBroker(prices={"AAPL": 190.0}), run_key="cx", db=db, timeout=0.1)
    assert list(first.orders["status"]) == ["CANCELLED"]
    fresh = MockBroker(prices={"AAPL": 190.0})  # a new process: the mock has forgotten the order
    again = kit.execute(lmt, broker=fresh, run_key="cx", db=db, timeout=0.1)
    assert fresh.submitted == [] and list(again.orders["status"]) == ["CANCELLED"]
    assert not any("does not list" in note for note in again.notes)


# ---- unknown commissions ----------------------------------------------------------------------------------


def test_a_fill_with_an_unknown_commission_is_followed_until_the_real_one_arrives(db):
    """IB's unset commission (NaN) does not settle a fill: the run waits for the real report."""

    def script(order):
        asyncio.get_running_loop().call_later(0.2, broker.emit, fee(order, "a.01", 1.25))
        return [Accepted(order.client_order_id, utcnow()), execution(order, "a.01", order.quantity, 190.0),
                fee(order, "a.01", math.nan)]

    broker = ScriptedBroker(script)
    run = kit.execute(TARGETS.iloc[:1], broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert run.fills["commission"].tolist() == [1.25] and run.orders.iloc[0]["commission"] == 1.25
    assert kit.ledger(db).fills(run.run_id)["commission"].tolist() == [1.25]


def test_a_commission_that_stays_unknown_is_nan_in_the_ledger_and_in_tca(db):
    def script(order):
        return [Accepted(order.client_order_id, utcnow()), execution(order, "a.01", 60, 190.0),
                fee(order, "a.01", 1.0), execution(order, "b.01", 40, 190.0), fee(order, "b.01", math.nan)]

    targets = TARGETS.iloc[:1].assign(decision_price=189.5)
    run = kit.execute(targets, broker=ScriptedBroker(script), run_key="k", db=db, timeout=0.3)
    assert run.status == "done"  # filled; only its cost is unknown
    assert run.orders["commission"].isna().all()
    ledger = kit.ledger(db)
    assert ledger.fills(run.run_id).set_index("exec_id")["commission"].isna().to_dict() == {
        "a.01": False, "b.01": True}
    assert ledger.orders(run.run_id)["commission"].isna().all()
    costs = kit.tca(run.run_id, db=db)
    assert costs.orders["commission"].isna().all() and costs.summary["commission"].isna().all()
    assert costs.summary["shortfall"].isna().all()  # a partial sum would pass for the whole cost
