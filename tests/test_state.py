"""The pure core: the transition table, the fill aggregator (OrderBook.apply) and run finalization.

Unit tests pin the rules a user relies on; hypothesis checks the invariants over generated streams of
executions with duplicates, corrections (a higher revision of the same execution key, as the broker says),
commissions before or after their execution, and every arrival order.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.model import (
    OPEN_STATUSES,
    TERMINAL,
    Accepted,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Order,
    OrderIntent,
    Rejected,
    RunStatus,
    Side,
    Status,
    StatusUpdate,
    Submitted,
)
from kit.state import TRANSITIONS, Effect, OrderBook, Signal, next_status, run_status

T0 = datetime(2026, 11, 21, 14, 30)
COID = "k-AAPL-BUY"
PROPERTY = settings(max_examples=200, deadline=None)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_order(quantity: float = 100, coid: str = COID, status: Status = Status.NEW) -> Order:
    intent = OrderIntent(client_order_id=coid, symbol=coid.split("-")[1], side=Side.BUY, quantity=quantity)
    return Order(intent=intent, run_id="r1", created_at=T0, updated_at=T0, status=status)


def book_with(*orders: Order) -> OrderBook:
    book = OrderBook()
    for order in orders:
        book.add(order)
    return book


def execution(exec_id: str, quantity: float, price: float, seconds: float = 1, coid: str = COID,
              currency: str = "USD", *, key: str | None = None, revision: int = 0) -> Execution:
    """An execution; `key` and `revision` are what a broker says about corrections (none: it stands alone)."""
    fill = Fill(exec_id, coid, quantity, price, at(seconds), currency=currency, key=key, revision=revision)
    return Execution(fill, at(seconds))


def revision(key: str, n: int, quantity: float, price: float, seconds: float = 1) -> Execution:
    """Revision n of execution `key`, with an exec id of the broker's own making."""
    return execution(f"{key}.{n:02d}", quantity, price, seconds, key=key, revision=n)


def commission(exec_id: str, amount: float, seconds: float = 1, coid: str | None = COID) -> Commission:
    return Commission(exec_id, amount, "USD", at(seconds), coid)


def snapshot(order: Order) -> tuple:
    """What a user sees of an order, minus updated_at (the time of the last change, which depends on
    which of two arrival orders carried the later clock)."""
    return (order.status, dict(order.fills), order.filled_quantity, order.remaining_quantity,
            order.avg_fill_price, order.commission, order.broker_order_id, order.perm_id, order.reason)


# ---- the transition table -------------------------------------------------------------------------------


def test_the_lifecycle_new_submitted_partial_filled():
    order = make_order(100)
    book = book_with(order)
    book.apply(Accepted(COID, at(1), broker_order_id="7", perm_id="900"))
    assert order.status is Status.SUBMITTED
    assert (order.broker_order_id, order.perm_id) == ("7", "900")
    book.apply(execution("e1.01", 40, 10.0, 2))
    assert order.status is Status.PARTIAL
    assert (order.filled_quantity, order.remaining_quantity) == (40, 60)
    book.apply(execution("e2.01", 60, 11.0, 3))
    assert order.status is Status.FILLED
    assert (order.filled_quantity, order.remaining_quantity) == (100, 0)
    assert order.avg_fill_price == pytest.approx((40 * 10 + 60 * 11) / 100)
    assert not order.working


@pytest.mark.parametrize("status", [Status.FILLED, Status.CANCELLED, Status.REJECTED])
@pytest.mark.parametrize("signal", list(Signal))
def test_final_states_move_only_when_the_quantities_say_so(status, signal):
    """REJECTED never moves. A late fill completing a CANCELLED order makes it FILLED; a correction that
    lowers a FILLED order's quantity (the only way a FILLED order sees FILL_PART) makes it PARTIAL."""
    exceptions = {(Status.CANCELLED, Signal.FILL_ALL): Status.FILLED,
                  (Status.FILLED, Signal.FILL_PART): Status.PARTIAL}
    assert next_status(status, signal) is exceptions.get((status, signal), status)


@pytest.mark.parametrize("status", [Status.NEW, Status.SUBMITTED, Status.PARTIAL])
@pytest.mark.parametrize("signal,expected", [
    (Signal.CANCEL, Status.CANCELLED), (Signal.REJECT, Status.REJECTED),
    (Signal.FILL_PART, Status.PARTIAL), (Signal.FILL_ALL, Status.FILLED),
])
def test_working_orders_can_be_cancelled_rejected_or_filled(status, signal, expected):
    assert next_status(status, signal) is expected


def test_only_new_orders_are_accepted_and_nothing_goes_back_to_new():
    assert next_status(Status.NEW, Signal.ACCEPT) is Status.SUBMITTED
    assert next_status(Status.PARTIAL, Signal.ACCEPT) is Status.PARTIAL  # a late ack does not undo fills
    assert all(target is not Status.NEW for target in TRANSITIONS.values())


def test_a_broker_status_word_never_moves_quantities_or_ends_an_order():
    order = make_order(100, status=Status.SUBMITTED)
    book = book_with(order)
    outcome = book.apply(StatusUpdate(COID, at(1), "Filled", broker_order_id="7"))
    assert order.status is Status.SUBMITTED
    assert order.filled_quantity == 0 and order.remaining_quantity == 100
    assert order.broker_order_id == "7"
    assert outcome.effect is Effect.APPLIED


def test_a_cancelled_partial_order_keeps_its_filled_quantity():
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 30, 10.0))
    book.apply(Cancelled(COID, at(2), "timeout"))
    assert order.status is Status.CANCELLED
    assert (order.filled_quantity, order.remaining_quantity) == (30, 0)
    assert order.reason == "timeout"
    assert order.avg_fill_price == 10.0


def test_a_fill_after_cancelled_is_still_recorded():
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 30, 10.0, 1))
    book.apply(Cancelled(COID, at(2)))
    outcome = book.apply(execution("e2.01", 20, 12.0, 3))
    assert outcome.effect is Effect.APPLIED and outcome.fill.exec_id == "e2.01"
    assert order.status is Status.CANCELLED
    assert order.filled_quantity == 50 and order.remaining_quantity == 0
    assert order.avg_fill_price == pytest.approx((30 * 10 + 20 * 12) / 50)


def test_a_late_fill_that_completes_a_cancelled_order_makes_it_filled():
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 30, 10.0, 1))
    book.apply(Cancelled(COID, at(2)))
    book.apply(execution("e2.01", 70, 10.0, 3))
    assert order.status is Status.FILLED and order.filled_quantity == 100


def test_a_fill_after_rejected_is_recorded_and_the_order_stays_rejected():
    order = make_order(100)
    book = book_with(order)
    book.apply(Rejected(COID, at(1), "no permissions"))
    book.apply(execution("e1.01", 100, 10.0, 2))
    assert order.status is Status.REJECTED and order.filled_quantity == 100
    assert order.reason == "no permissions"


def test_a_second_cancel_or_reject_is_a_duplicate():
    order = make_order(100)
    book = book_with(order)
    assert book.apply(Cancelled(COID, at(1), "first")).effect is Effect.APPLIED
    assert book.apply(Cancelled(COID, at(2), "second")).effect is Effect.DUPLICATE
    assert book.apply(Rejected(COID, at(3), "late reject")).effect is Effect.DUPLICATE
    assert order.status is Status.CANCELLED and order.reason == "first"


def test_events_of_unknown_orders_change_nothing():
    order = make_order(100)
    book = book_with(order)
    before = snapshot(order)
    assert book.apply(execution("x.01", 5, 1.0, coid="other-X-BUY")).effect is Effect.UNKNOWN_ORDER
    assert book.apply(Cancelled("other-X-BUY", at(1))).effect is Effect.UNKNOWN_ORDER
    assert book.apply(BrokerNotice(at(1), 2104, "farm ok")).effect is Effect.NOTED
    assert snapshot(order) == before


def test_submitted_records_the_first_hand_over_and_the_arrival_price():
    order = make_order(100)
    book = book_with(order)
    book.apply(Submitted(COID, at(1), arrival_price=190.0))
    book.apply(Submitted(COID, at(5)))
    assert order.submitted_at == at(1)
    assert order.arrival_price == 190.0
    assert order.status is Status.NEW  # handing over is not an acknowledgement


# ---- fills: duplicates, corrections, commissions ---------------------------------------------------------


def test_a_fill_with_a_known_exec_id_changes_nothing():
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 40, 10.0, 1))
    before = snapshot(order)
    outcome = book.apply(execution("e1.01", 40, 10.0, 5))
    assert outcome.effect is Effect.DUPLICATE and outcome.fill is None
    # even if a buggy feed repeats the exec_id with other numbers, the first report stands
    assert book.apply(execution("e1.01", 60, 99.0, 6)).effect is Effect.DUPLICATE
    assert snapshot(order) == before
    assert order.updated_at == at(1)


def test_a_correction_replaces_the_execution_it_corrects():
    order = make_order(100)
    book = book_with(order)
    book.apply(revision("e1", 1, 50, 10.0, 1))
    outcome = book.apply(revision("e1", 2, 40, 10.5, 2))
    assert outcome.effect is Effect.CORRECTION
    assert outcome.replaced_exec_id == "e1.01" and outcome.fill.exec_id == "e1.02"
    assert [f.exec_id for f in order.fills.values()] == ["e1.02"]
    assert (order.filled_quantity, order.avg_fill_price) == (40, 10.5)


def test_an_older_revision_after_its_correction_is_stale():
    order = make_order(100)
    book = book_with(order)
    book.apply(revision("e1", 2, 40, 10.5, 2))
    outcome = book.apply(revision("e1", 1, 50, 10.0, 1))
    assert outcome.effect is Effect.STALE and outcome.fill is None
    assert (order.filled_quantity, order.avg_fill_price) == (40, 10.5)


def test_a_correction_that_lowers_the_quantity_reopens_a_filled_order():
    """Status follows the quantities: 50 of 50 is FILLED, corrected to 40 of 50 it is PARTIAL again,
    exactly as if the corrected execution had arrived first."""
    order = make_order(50)
    book = book_with(order)
    book.apply(revision("e1", 1, 50, 10.0, 1))
    assert order.status is Status.FILLED
    book.apply(revision("e1", 2, 40, 10.0, 2))
    assert order.filled_quantity == 40 and order.remaining_quantity == 10
    assert order.status is Status.PARTIAL


def test_commission_before_its_execution_is_joined_on_exec_id():
    order = make_order(100)
    book = book_with(order)
    assert book.apply(commission("e1.01", 1.25, coid=None)).effect is Effect.PENDING
    assert book.apply(commission("e1.01", 1.25, coid=None)).effect is Effect.DUPLICATE
    outcome = book.apply(execution("e1.01", 100, 10.0, 2))
    assert outcome.fill.commission == 1.25
    assert order.commission == 1.25
    assert book.pending_commissions == {}


def test_commission_after_its_execution_updates_the_fill():
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 100, 10.0, 1, currency=""))
    outcome = book.apply(commission("e1.01", 0.5, 2))
    assert outcome.effect is Effect.APPLIED and outcome.fill.commission == 0.5
    assert outcome.fill.currency == "USD"  # the report's currency fills a gap, never overrides
    assert book.apply(commission("e1.01", 0.5, 3)).effect is Effect.DUPLICATE


def test_the_commission_of_a_superseded_revision_is_stale_and_the_correction_keeps_the_paid_one():
    order = make_order(100)
    book = book_with(order)
    book.apply(revision("e1", 1, 50, 10.0, 1))
    book.apply(commission("e1.01", 1.0, 2))
    book.apply(revision("e1", 2, 50, 10.2, 3))
    assert order.commission == 1.0  # until the correction's own report arrives
    assert book.apply(commission("e1.01", 1.0, 4)).effect is Effect.STALE
    book.apply(commission("e1.02", 1.1, 5))
    assert order.commission == 1.1


def test_the_core_reads_no_exec_id_only_the_key_and_revision_the_broker_gives():
    """Two executions whose ids merely look like revisions are two fills; a key makes a correction."""
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1.01", 30, 10.0, 1))
    assert book.apply(execution("e1.02", 20, 10.0, 2)).effect is Effect.APPLIED
    assert order.filled_quantity == 50
    book.apply(execution("first", 10, 10.0, 3, key="x", revision=1))
    outcome = book.apply(execution("second", 5, 10.0, 4, key="x", revision=2))
    assert outcome.effect is Effect.CORRECTION and outcome.replaced_exec_id == "first"
    assert order.filled_quantity == 55


def test_an_unknown_commission_is_nan_until_the_real_one_arrives():
    """IB's unset commission arrives as NaN: the fill is not settled, a repeat is a duplicate, and the real
    report replaces it; the order's commission is NaN meanwhile, never a partial sum."""
    order = make_order(100)
    book = book_with(order)
    book.apply(execution("e1", 60, 10.0, 1))
    book.apply(commission("e1", 1.0, 1))
    book.apply(execution("e2", 40, 10.0, 2))
    assert book.apply(commission("e2", math.nan, 2)).effect is Effect.APPLIED
    assert not order.can_fill and not order.settled
    assert math.isnan(order.commission)
    assert book.apply(commission("e2", math.nan, 3)).effect is Effect.DUPLICATE
    assert book.apply(commission("e2", 0.75, 4)).effect is Effect.APPLIED
    assert order.settled and order.commission == 1.75


# ---- the lifecycle predicates -----------------------------------------------------------------------------


def test_an_order_is_at_the_broker_once_handed_over_and_working_while_it_can_fill_there():
    order = make_order(100)
    book = book_with(order)
    assert not order.at_broker and order.can_fill and not order.working  # a plan: nothing to cancel
    book.apply(Submitted(COID, at(1)))
    assert order.at_broker and order.working and not order.settled
    book.apply(execution("e1", 100, 10.0, 2))
    assert not order.working and not order.settled  # filled, its commission still to come
    book.apply(commission("e1", 1.0, 3))
    assert order.settled


@pytest.mark.parametrize("status", list(Status))
def test_working_means_an_open_status_at_the_broker(status):
    order = make_order(100, status=status)
    order.submitted_at = T0
    assert order.working is (status in OPEN_STATUSES) is not (status in TERMINAL)


# ---- run finalization -----------------------------------------------------------------------------------


def finished(quantity: float, filled: float, status: Status) -> Order:
    order = make_order(quantity, coid="k-XYZ-BUY", status=status)
    if filled:
        order.fills["x.01"] = Fill("x.01", order.client_order_id, filled, 10.0, T0)
    return order


@pytest.mark.parametrize("orders,expected", [
    ([finished(100, 100, Status.FILLED), finished(50, 50, Status.FILLED)], "done"),
    ([finished(100, 100, Status.FILLED), finished(50, 0, Status.REJECTED)], "partial"),
    ([finished(100, 100, Status.FILLED), finished(50, 20, Status.CANCELLED)], "partial"),
    ([finished(100, 100, Status.FILLED), finished(50, 0, Status.SUBMITTED)], "partial"),  # left working
    ([finished(100, 60, Status.PARTIAL)], "partial"),
    ([finished(100, 0, Status.REJECTED), finished(50, 0, Status.CANCELLED)], "failed"),
    ([finished(100, 0, Status.SUBMITTED)], "failed"),
    ([], "done"),  # nothing to do is not a failure: a re-run that finds nothing missing
])
def test_run_status(orders, expected):
    assert run_status(orders) is RunStatus(expected)


def test_run_status_reads_quantities_not_status_words():
    """A cancelled order whose late fill completed it counts as filled; a FILLED word without the
    quantity does not."""
    assert run_status([finished(100, 100, Status.CANCELLED)]) == "done"
    assert run_status([finished(100, 40, Status.FILLED)]) == "partial"


# ---- properties -----------------------------------------------------------------------------------------

prices = st.integers(1, 50_000).map(lambda cents: cents / 100)


@st.composite
def fill_streams(draw: st.DrawFn, *, corrections: bool = True) -> tuple[float, list]:
    """An order quantity and a stream of executions and commission reports for it.

    Every execution has a base id and 1-3 revisions (a correction replaces the one before); the largest
    revision quantities of all bases sum to at most the order quantity, so no arrival order overfills.
    Every exec id gets its commission report, which may arrive before or after the execution.
    """
    quantity = draw(st.integers(1, 5_000))
    room = quantity
    events: list = []
    for base in range(draw(st.integers(1, 6))):
        if room == 0:
            break
        cap = draw(st.integers(1, room))
        room -= cap
        for n in range(1, (draw(st.integers(1, 3)) if corrections else 1) + 1):
            exec_id = f"e{base}.{n:02d}"
            seconds = len(events)
            events.append(execution(exec_id, draw(st.integers(1, cap)), draw(prices), seconds,
                                    currency=draw(st.sampled_from(["USD", ""])), key=f"e{base}", revision=n))
            fee = draw(st.integers(0, 500)) / 100
            events.append(commission(exec_id, fee, seconds, coid=draw(st.sampled_from([COID, None]))))
    return quantity, events


def final_fills(events: list) -> dict[str, Execution]:
    """The latest revision of each execution: what must be left after any arrival order."""
    latest: dict[str, Execution] = {}
    for event in events:
        if isinstance(event, Execution):
            key = event.fill.execution_key
            if key not in latest or latest[key].fill.revision < event.fill.revision:
                latest[key] = event
    return latest


def play(quantity: float, events: list, start: Status = Status.SUBMITTED) -> tuple[Order, OrderBook]:
    order = make_order(quantity, status=start)
    book = book_with(order)
    for event in events:
        book.apply(event)
    return order, book


@PROPERTY
@given(fill_streams(), st.randoms(use_true_random=False))
def test_filled_never_exceeds_quantity_and_avg_price_stays_within_the_fill_prices(stream, rng):
    quantity, events = stream
    rng.shuffle(events)
    order = make_order(quantity, status=Status.SUBMITTED)
    book = book_with(order)
    for event in events:
        book.apply(event)
        assert 0 <= order.filled_quantity <= quantity
        assert order.filled_quantity + order.remaining_quantity == quantity
        if order.fills:
            fill_prices = [f.price for f in order.fills.values()]
            assert min(fill_prices) <= order.avg_fill_price <= max(fill_prices)
        else:
            assert order.avg_fill_price is None


@PROPERTY
@given(fill_streams(), st.randoms(use_true_random=False))
def test_any_arrival_order_of_the_same_fills_gives_the_same_final_order(stream, rng):
    quantity, events = stream
    shuffled = list(events)
    rng.shuffle(shuffled)
    order, _ = play(quantity, events)
    other, _ = play(quantity, shuffled)
    assert snapshot(other) == snapshot(order)
    # and that final order is the latest revision of each execution with its own commission
    latest = final_fills(events)
    assert {f.exec_id for f in order.fills.values()} == {e.fill.exec_id for e in latest.values()}
    reports = {e.exec_id: e.commission for e in events if isinstance(e, Commission)}
    assert all(f.commission == reports[f.exec_id] for f in order.fills.values())
    assert order.filled_quantity == sum(e.fill.quantity for e in latest.values())
    assert order.status is (Status.FILLED if order.filled_quantity == quantity else Status.PARTIAL)


@PROPERTY
@given(fill_streams(), st.randoms(use_true_random=False), st.data())
def test_applying_the_same_event_twice_changes_nothing(stream, rng, data):
    quantity, events = stream
    rng.shuffle(events)
    # a broker may repeat any event, at once or much later (IB replays executions on reconnect)
    index = data.draw(st.integers(0, len(events) - 1))
    again = data.draw(st.integers(index, len(events)))
    repeated = [*events[:again], events[index], *events[again:]]
    order, _ = play(quantity, events)
    other, _ = play(quantity, repeated)
    assert snapshot(other) == snapshot(order)


@PROPERTY
@given(fill_streams(), st.randoms(use_true_random=False))
def test_replaying_a_whole_stream_changes_no_order(stream, rng):
    """What a resume does: the broker replays everything it knows; already-applied events are no-ops."""
    quantity, events = stream
    rng.shuffle(events)
    order, book = play(quantity, events)
    before = snapshot(order), order.updated_at
    for event in events:
        assert book.apply(event).effect in (Effect.DUPLICATE, Effect.STALE, Effect.PENDING)
    assert (snapshot(order), order.updated_at) == before


lifecycle_events = st.sampled_from([
    Accepted(COID, at(1), broker_order_id="7", perm_id="900"),
    StatusUpdate(COID, at(2), "PreSubmitted", perm_id="900"),
    Submitted(COID, at(0), arrival_price=10.0),
    Cancelled(COID, at(5), "by request"),
    Rejected(COID, at(5), "margin"),
    BrokerNotice(at(3), 399, "warning", COID),
    revision("a", 1, 30, 10.0, 3),
    revision("a", 2, 20, 10.5, 4),
    revision("b", 1, 70, 11.0, 4),
    commission("a.01", 1.0, 4),
    commission("b.01", 1.5, 4),
])


@PROPERTY
@given(st.lists(lifecycle_events, max_size=12), st.data())
def test_any_event_applied_twice_in_a_row_is_a_no_op(events, data):
    order, book = play(100, events, start=Status.NEW)
    event = data.draw(lifecycle_events)
    book.apply(event)
    before = snapshot(order), order.updated_at, order.submitted_at, order.arrival_price
    book.apply(event)
    assert (snapshot(order), order.updated_at, order.submitted_at, order.arrival_price) == before


@PROPERTY
@given(st.lists(lifecycle_events, max_size=12))
def test_status_words_agree_with_quantities_whatever_arrives(events):
    order, _ = play(100, events, start=Status.NEW)
    assert order.filled_quantity <= 100
    if order.status is Status.FILLED:
        assert order.filled_quantity == 100 and order.remaining_quantity == 0
    if order.status is Status.PARTIAL:
        assert 0 < order.filled_quantity < 100
    if order.status in (Status.CANCELLED, Status.REJECTED):
        assert order.remaining_quantity == 0
