"""kit.amend and kit.execute(reprice=) on the mock broker: price and quantity amendments through the
broker, refusals that leave the order as it was, the audit trail in order_events, resuming after an
amendment, TCA against the decision, and a reprice rule walking a resting limit toward the touch."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kit
from kit.amending import Reprice, _on_tick, check_changes, refusal
from kit.brokers.mock import MockBroker
from kit.clock import utcnow
from kit.errors import InputError, KitError, RunInterrupted, RunKeyBusyError
from kit.model import AmendAccepted, AmendRequested, Order, OrderIntent, Side, Status
from kit.runlock import RunLock
from kit.state import OrderBook

PRICES = {"AAPL": 190.0, "MSFT": 410.0}


def resting(db, broker: MockBroker, run_key: str = "rest", quantity: float = 100, limit: float = 185.0,
            side: str = "BUY", **options) -> kit.Run:
    targets = pd.DataFrame({"symbol": ["AAPL"], "side": [side], "quantity": [quantity],
                            "order_type": ["LMT"], "limit_price": [limit],
                            "decision_price": [options.pop("decision_price", limit)]})
    return kit.execute(targets, broker=broker, run_key=run_key, db=db, timeout=options.pop("timeout", 0.3),
                       on_timeout="leave", progress=False, **options)


def events(db, run_key: str, kinds: tuple[str, ...] = ("amend_requested", "amend_accepted", "amend_refused",
                                                        "reprice_stopped")) -> list[tuple[str, dict]]:
    frame = kit.ledger(db).events(kit.ledger(db).resolve_run(run_key))
    frame = frame[frame["kind"].isin(kinds)].sort_values("seq")
    return [(k, json.loads(d)) for k, d in zip(frame["kind"], frame["detail"], strict=True)]


def order_row(db, run_key: str) -> pd.Series:
    ledger = kit.ledger(db)
    return ledger.orders(ledger.resolve_run(run_key)).iloc[0]


# ---- amend a working order -----------------------------------------------------------------------------
def test_amend_limit_price_is_worked_by_the_broker_and_recorded(db):
    broker = MockBroker(prices=PRICES)
    run = resting(db, broker)
    coid = run.orders["client_order_id"].iloc[0]
    assert run.orders["status"].iloc[0] == "SUBMITTED"

    result = kit.amend("rest", coid, limit=186.5, broker=broker, db=db)
    assert result.accepted and result.outcome == "accepted"
    assert broker.orders[coid].intent.limit_price == 186.5  # the broker works the new price
    row = order_row(db, "rest")
    assert (row["limit_price"], row["original_limit_price"], row["amendments"]) == (186.5, 185.0, 1)
    assert row["status"] == "SUBMITTED" and row["quantity"] == 100 and row["original_quantity"] == 100
    assert [k for k, _ in events(db, "rest")] == ["amend_requested", "amend_accepted"]
    assert events(db, "rest")[0][1]["changes"] == {"limit_price": 186.5}

    broker.set_price("AAPL", 186.4)  # reaches the amended limit, not the planned one
    run = resting(db, broker)  # the same run key resumes: followed, not sent again, not refused
    assert broker.submitted == [coid]
    assert run.orders["status"].iloc[0] == "FILLED" and run.fills["price"].max() <= 186.5
    row = order_row(db, "rest")
    assert row["limit_price"] == 186.5 and row["amendments"] == 1  # the resume did not undo it


def test_amend_quantity_up_and_down_reslices_what_is_left(db):
    broker = MockBroker(prices=PRICES, partial_fills=2)
    run = resting(db, broker)
    coid = run.orders["client_order_id"].iloc[0]
    assert kit.amend("rest", "AAPL", quantity=60, broker=broker, db=db).accepted  # by symbol
    assert order_row(db, "rest")["quantity"] == 60
    assert kit.amend("rest", coid, quantity=150, broker=broker, db=db).accepted
    broker.set_price("AAPL", 180.0)
    run = resting(db, broker)
    assert run.orders["filled_quantity"].iloc[0] == 150 and run.orders["status"].iloc[0] == "FILLED"
    row = order_row(db, "rest")
    assert (row["original_quantity"], row["amendments"]) == (100, 2)


def test_quantity_not_above_filled_is_refused_before_sending(db):
    """The ledger has no fill yet; the broker's listing brings one: kit refuses after listing, unsent."""
    broker = MockBroker(prices=PRICES, partial_fills=2)
    run = resting(db, broker)
    coid = run.orders["client_order_id"].iloc[0]
    working = broker.orders[coid]
    broker.prices["AAPL"] = 184.0  # the market touches the limit for one slice while kit is away
    broker._fill(working, 0, working.generation)
    broker.prices["AAPL"] = 190.0
    filled = working.chunks[0]
    assert 0 < filled < 100
    result = kit.amend("rest", "AAPL", quantity=filled, broker=broker, db=db)
    assert result.outcome == "refused" and f"{filled:g} already filled" in result.reason
    assert [k for k, _ in events(db, "rest")] == ["amend_refused"]  # recorded, never requested
    assert "not sent" in events(db, "rest")[0][1]["reason"]
    row = order_row(db, "rest")
    assert row["quantity"] == 100 and row["filled_quantity"] == filled and broker.submitted == [coid]
    assert working.intent.quantity == 100


def test_amending_a_filled_or_cancelled_order_is_refused_and_changes_nothing(db):
    broker = MockBroker(prices=PRICES)
    resting(db, broker, run_key="done", limit=195.0)  # marketable: fills at once
    result = kit.amend("done", "AAPL", limit=196.0, broker=broker, db=db)
    assert result.outcome == "refused" and "filled" in result.reason
    assert order_row(db, "done")["limit_price"] == 195.0

    run = resting(db, broker, run_key="gone")
    kit.cancel("gone", broker=broker, db=db)
    assert order_row(db, "gone")["status"] == "CANCELLED"
    result = kit.amend("gone", run.orders["client_order_id"].iloc[0], limit=186.0, broker=broker, db=db)
    assert result.outcome == "refused" and "cancelled" in result.reason
    assert order_row(db, "gone")["limit_price"] == 185.0


def test_the_broker_refusing_leaves_the_order_as_it_was(db):
    """The ledger says working, the broker knows it filled meanwhile (a race): IB's 104, the mock's word."""
    broker = MockBroker(prices=PRICES)
    run = resting(db, broker)
    coid = run.orders["client_order_id"].iloc[0]
    broker.orders[coid].fills_sent = len(broker.orders[coid].chunks)  # filled at the broker, not yet told
    broker.orders[coid].sent.clear()  # ...and its listing replays nothing kit did not already have
    result = kit.amend("rest", coid, limit=186.0, broker=broker, db=db)
    assert result.outcome == "refused" and result.reason == "cannot modify a filled order"
    assert [k for k, _ in events(db, "rest")] == ["amend_requested", "amend_refused"]
    row = order_row(db, "rest")
    assert row["limit_price"] == 185.0 and row["amendments"] == 0 and pd.isna(row["original_limit_price"])


def test_bad_amendments_are_clear_errors_and_record_nothing(db):
    broker = MockBroker(prices=PRICES)
    resting(db, broker)
    with pytest.raises(InputError, match="positive number"):
        kit.amend("rest", "AAPL", limit=-1, broker=broker, db=db)
    with pytest.raises(InputError, match="say what to change"):
        kit.amend("rest", "AAPL", broker=broker, db=db)
    with pytest.raises(KitError, match="no order matching 'TSLA'"):
        kit.amend("rest", "TSLA", limit=1.0, broker=broker, db=db)
    mkt = pd.DataFrame({"symbol": ["MSFT"], "side": ["BUY"], "quantity": [1]})
    kit.execute(mkt, broker=broker, run_key="mkt", db=db, timeout=1, progress=False)
    with pytest.raises(InputError, match="no limit price"):
        kit.amend("mkt", "MSFT", limit=400.0, broker=broker, db=db)
    assert events(db, "rest") == []


def test_amend_respects_the_run_key_lock(db):
    broker = MockBroker(prices=PRICES)
    resting(db, broker)
    with RunLock("rest"), pytest.raises(RunKeyBusyError):
        kit.amend("rest", "AAPL", limit=186.0, broker=broker, db=db)
    assert events(db, "rest") == []


def test_tca_keeps_measuring_against_the_decision_price(db):
    broker = MockBroker(prices=PRICES)
    run = resting(db, broker, decision_price=190.0)
    decision = run.orders["decision_price"].iloc[0]
    assert decision == 190.0
    kit.amend("rest", "AAPL", limit=189.0, broker=broker, db=db)
    broker.set_price("AAPL", 188.5)
    resting(db, broker, decision_price=190.0)
    costs = kit.tca("rest", db=db).orders.iloc[0]
    fill = kit.ledger(db).fills(kit.ledger(db).resolve_run("rest"))["price"].iloc[0]
    assert order_row(db, "rest")["decision_price"] == decision
    assert costs["slippage_decision_bps"] == pytest.approx((fill - decision) / decision * 1e4)


# ---- the pure rules --------------------------------------------------------------------------------------
def _order(status: Status = Status.SUBMITTED, quantity: float = 100) -> Order:
    intent = OrderIntent("o-1", "AAPL", Side.BUY, quantity, "LMT", 10.0)
    now = utcnow()
    return Order(intent, "run", now, now, status=status, submitted_at=now)


def test_what_kit_refuses_itself():
    assert refusal(_order(), {"limit_price": 10.5}) is None
    assert "filled" in refusal(_order(Status.FILLED), {"limit_price": 10.5})
    assert "cancelled" in refusal(_order(Status.CANCELLED), {"limit_price": 10.5})
    assert "nothing would change" in refusal(_order(), {"limit_price": 10.0})
    with pytest.raises(InputError, match="cannot be amended"):
        check_changes(_order().intent, {"side": "SELL"})


def test_a_replayed_older_acceptance_never_undoes_a_newer_one():
    book = OrderBook()
    order = _order()
    book.add(order)
    now = utcnow()
    for revision, price in ((1, 10.1), (2, 10.2)):
        book.apply(AmendRequested("o-1", now, {"limit_price": price}, revision))
        book.apply(AmendAccepted("o-1", now, {"limit_price": price}, revision))
    assert book.apply(AmendAccepted("o-1", now, {"limit_price": 10.1}, 1)).effect == "duplicate"
    assert order.intent.limit_price == 10.2 and order.planned.limit_price == 10.0 and order.amendments == 2


@given(st.floats(0.5, 500), st.sampled_from([0.01, 0.05, 0.25]), st.sampled_from([1, -1]))
def test_prices_land_on_the_tick_never_past_the_bound(price, tick, sign):
    on = _on_tick(price, tick, sign)
    assert abs(on / tick - round(on / tick)) < 1e-6
    assert (price - on) * sign >= -1e-9 and abs(price - on) < tick + 1e-9


# ---- reprice -------------------------------------------------------------------------------------------
def test_reprice_walks_toward_the_touch_step_by_step_and_stops_at_the_fill(db):
    broker = MockBroker(prices={"AAPL": 185.04})
    rule = Reprice(step=1, unit="ticks", interval=0.02, max_move=10)
    run = resting(db, broker, limit=185.0, timeout=5, reprice=rule)
    assert run.orders["status"].iloc[0] == "FILLED"
    steps = [d["changes"]["limit_price"] for k, d in events(db, "rest") if k == "amend_requested"]
    assert steps == [185.01, 185.02, 185.03, 185.04]  # one tick each, up to the touch, where it filled
    assert all(d["why"].startswith("reprice step") for k, d in events(db, "rest") if k == "amend_requested")
    stopped = [d for k, d in events(db, "rest") if k == "reprice_stopped"]
    assert len(stopped) == 1 and stopped[0]["why"] == "filled" and stopped[0]["steps"] == 4
    row = order_row(db, "rest")
    assert (row["limit_price"], row["original_limit_price"], row["amendments"]) == (185.04, 185.0, 4)


def test_reprice_stops_at_max_move(db):
    broker = MockBroker(prices={"AAPL": 190.0})
    rule = Reprice(step=10, unit="bps", interval=0.02, max_move=25)  # 0.185 a step, 0.4625 at most
    run = resting(db, broker, limit=185.0, timeout=1.5, reprice=rule)
    assert run.orders["status"].iloc[0] == "SUBMITTED"
    steps = [d["changes"]["limit_price"] for k, d in events(db, "rest") if k == "amend_requested"]
    assert steps == [185.18, 185.37, 185.46]
    stopped = [d for k, d in events(db, "rest") if k == "reprice_stopped"]
    assert [s["why"] for s in stopped] == ["max_move 25 bps reached"]


def test_reprice_sells_walk_down_and_never_past_the_touch(db):
    broker = MockBroker(prices={"AAPL": 184.9})
    rule = Reprice(step=0.05, interval=0.02, max_move=1.0)
    resting(db, broker, side="SELL", limit=185.0, timeout=3, reprice=rule)
    steps = [d["changes"]["limit_price"] for k, d in events(db, "rest") if k == "amend_requested"]
    assert steps == [184.95, 184.9]


def requested(db, run_key: str = "rest") -> list[float]:
    return [d["changes"]["limit_price"] for k, d in events(db, run_key) if k == "amend_requested"]


def test_reprice_ends_with_the_run(db):
    broker = MockBroker(prices={"AAPL": 190.0})
    rule = Reprice(step=0.01, interval=0.02, max_move=5)
    resting(db, broker, limit=185.0, timeout=1.0, reprice=rule)  # the timeout ends the run: left working
    stopped = [d for k, d in events(db, "rest") if k == "reprice_stopped"]
    assert [s["why"] for s in stopped] == ["the run ended or was stopped"]
    steps = stopped[0]["steps"]
    assert 1 <= steps <= 50 and requested(db) == [round(185 + 0.01 * n, 2) for n in range(1, steps + 1)]
    # The last step may have been recorded but not handed over when the run ended (refused "not sent"), or
    # sent with its answer still to come (amend_unconfirmed): either is said, never assumed taken.
    unconfirmed = [d for _, d in events(db, "rest", ("amend_unconfirmed",))]
    not_sent = [d for k, d in events(db, "rest")
                if k == "amend_refused" and d["reason"].startswith("not sent")]
    assert [d["revision"] for d in unconfirmed + not_sent] in ([], [steps])
    left = len(unconfirmed) + len(not_sent)
    assert order_row(db, "rest")["amendments"] == steps - left and len(broker.submitted) == 1
    resting(db, broker, timeout=0.1)  # a resume without reprice= walks nothing and undoes nothing
    taken = [185.0, *requested(db)][:steps + 1 - len(not_sent)]  # a step never sent was never taken
    assert len(requested(db)) == steps and order_row(db, "rest")["limit_price"] == taken[-1]


class AnswersLate(MockBroker):
    """Takes every amendment, but answers only when the next run asks it to replay (sync)."""

    replaying = False

    def emit(self, event) -> None:
        if self.replaying or not isinstance(event, AmendAccepted):
            super().emit(event)

    async def sync(self, orders):
        self.replaying = True
        try:
            return await super().sync(orders)
        finally:
            self.replaying = False


def test_a_reprice_step_unanswered_when_the_run_ends_is_said_then_settled_by_the_broker(db):
    broker = AnswersLate(prices={"AAPL": 190.0})
    run = resting(db, broker, timeout=0.5, reprice=Reprice(step=0.01, interval=0.02, max_move=5))
    assert requested(db) == [185.01]  # one step: the next waits for its answer
    assert [d["revision"] for _, d in events(db, "rest", ("amend_unconfirmed",))] == [1]
    assert any("did not answer the amendment before the run ended" in note for note in run.notes)
    assert order_row(db, "rest")["limit_price"] == 185.0  # what the broker last confirmed
    resting(db, broker, timeout=0.1)  # the broker's answer comes with the next run's replay
    assert order_row(db, "rest")["limit_price"] == 185.01 and order_row(db, "rest")["amendments"] == 1


class NeverHandsOver(MockBroker):
    """Takes an amendment only after a wait longer than any run here: a step is recorded, never sent."""

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        await asyncio.sleep(3600)
        await super().amend(order, changes, revision)


def test_a_reprice_step_recorded_but_not_sent_when_the_run_ends_is_refused_not_left_pending(db):
    broker = NeverHandsOver(prices={"AAPL": 190.0})
    resting(db, broker, timeout=0.5, reprice=Reprice(step=0.01, interval=0.02, max_move=5))
    assert requested(db) == [185.01]  # one step: the next waits for its answer
    refused = [d for k, d in events(db, "rest") if k == "amend_refused"]
    assert [(d["revision"], d["reason"]) for d in refused] == [(1, "not sent: the run stopped")]
    assert events(db, "rest", ("amend_unconfirmed",)) == []  # nothing is awaited from the broker
    row = order_row(db, "rest")
    assert (row["limit_price"], row["amendments"]) == (185.0, 0)
    resting(db, broker, timeout=0.1)  # the next run has nothing pending to wait for
    assert order_row(db, "rest")["limit_price"] == 185.0 and len(requested(db)) == 1


class AmendWatched(MockBroker):
    """A mock that says when it was asked for an amendment, so a test can press stop after the first."""

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        await super().amend(order, changes, revision)
        self.amended.set()


def test_reprice_stops_when_stop_is_pressed(db):
    broker = AmendWatched(prices={"AAPL": 190.0})
    rule = Reprice(step=0.01, interval=0.03, max_move=5)
    targets = pd.DataFrame({"symbol": ["AAPL"], "side": ["BUY"], "quantity": [10], "order_type": ["LMT"],
                            "limit_price": [185.0]})

    async def press_stop() -> None:
        broker.amended = asyncio.Event()
        task = asyncio.ensure_future(kit.execute_async(targets, broker, "stop", db, timeout=30, reprice=rule))
        await asyncio.wait_for(broker.amended.wait(), 10)
        task.cancel()  # pressed as the broker's answer arrives: stop must still win
        with pytest.raises(RunInterrupted):
            await task
        await asyncio.sleep(rule.interval * 3)  # no step may fire after the run stopped

    asyncio.run(press_stop())
    steps = requested(db, "stop")
    stopped = [d for k, d in events(db, "stop") if k == "reprice_stopped"]
    assert [s["why"] for s in stopped] == ["the run ended or was stopped"]
    assert stopped[0]["steps"] == len(steps) and order_row(db, "stop")["status"] == "CANCELLED"


def test_reprice_rule_checks_its_numbers():
    with pytest.raises(InputError, match="interval"):
        Reprice(step=1, interval=0, max_move=1)
    with pytest.raises(InputError, match="unit"):
        Reprice(step=1, interval=1, max_move=1, unit="pips")  # type: ignore[arg-type]


# ---- the command line ------------------------------------------------------------------------------------
def test_kit_amend_on_the_command_line_says_why_not_in_one_line(db, capsys):
    from kit.cli import main

    resting(db, MockBroker(prices=PRICES))
    assert main(["--db", str(db), "amend", "rest", "AAPL", "--limit", "-2", "--broker", "ib"]) == 2
    assert "limit_price must be a positive number" in capsys.readouterr().err
    assert main(["--db", str(db), "amend", "rest", "AAPL", "--limit", "186"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kit: the mock broker lives in the process") and "Traceback" not in err
    assert events(db, "rest") == []


# ---- IB's answers to a modify, as the translator reads them ---------------------------------------------
def _amending():
    from kit.brokers.ib_events import Translator

    t = Translator(client_id=7)
    t.placed("k-AAPL-BUY", 11)
    t.open_order(11, 7, 555, "k-AAPL-BUY", "Submitted", utcnow())
    t.amend_requested("k-AAPL-BUY", 11, {"limit_price": 101.0}, {"limit_price": 101.0}, 1)
    return t


@pytest.mark.parametrize("code", [103, 104, 105, 110, 201, 321])
def test_an_error_during_a_modify_refuses_the_modify_never_the_order(code):
    from kit.model import AmendRefused, Rejected

    t = _amending()
    events = t.error(11, code, "refused", utcnow())
    assert [type(e).__name__ for e in events] == ["BrokerNotice", "AmendRefused"]
    assert not any(isinstance(e, Rejected) for e in events)
    refused = events[1]
    assert isinstance(refused, AmendRefused) and refused.revision == 1
    assert f"IB error {code}" in refused.reason
    assert "k-AAPL-BUY" not in t.amending
    assert any(isinstance(e, Rejected) for e in t.error(11, 201, "later", utcnow()))  # no modify pending now


def test_ibs_open_order_on_the_new_terms_accepts_the_modify():
    t = _amending()
    same = t.open_order(11, 7, 555, "k-AAPL-BUY", "Submitted", utcnow(), terms={"limit_price": 100.0})
    assert not any(isinstance(e, AmendAccepted) for e in same)  # an old listing: still pending
    new = t.open_order(11, 7, 555, "k-AAPL-BUY", "Submitted", utcnow(),
                       terms={"limit_price": 101.0, "quantity": 10.0})
    assert next(e for e in new if isinstance(e, AmendAccepted)).changes == {"limit_price": 101.0}
    assert "k-AAPL-BUY" not in t.amending


def test_an_order_that_fills_before_ib_takes_the_modify_refuses_it():
    t = _amending()
    events = t.order_status(11, "Filled", 555, 7, "", utcnow(), filled=10, remaining=0)
    assert [e.reason for e in events if type(e).__name__ == "AmendRefused"] == ["the order is Filled at IB"]
