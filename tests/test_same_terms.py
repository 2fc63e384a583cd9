"""Orders rows of unchanged terms: the writer UPDATEs their state columns alone (kit.store.Batch.same_terms).

The rule it rests on: folding a broker event changes only kit.store.ORDER_STATE_COLUMNS of an order's row,
unless the event is an accepted amendment. The recorder marks a row same_terms when the same Order with as
many amendments had a row handed to the ledger before. Whatever the hint says, the file must end up holding
exactly the rows a whole write gives: after an amendment, a batch kept by a failed write, a key the file
lacks, in small batches and in big ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.errors import LedgerWriteError
from kit.model import (
    Accepted,
    AmendAccepted,
    AmendRefused,
    AmendRequested,
    ArrivalPrice,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Order,
    OrderIntent,
    Rejected,
    Side,
    StatusUpdate,
    Submitted,
)
from kit.recorder import Recorder, order_row
from kit.state import OrderBook
from kit.store import ORDER_COLUMNS, ORDER_STATE_COLUMNS, SMALL_BATCH, Batch, Ledger

T0 = datetime(2026, 12, 2, 14, 30)
COID = "k-AAPL-BUY"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def an_order(coid: str = COID, limit: float | None = 10.0) -> Order:
    intent = OrderIntent(client_order_id=coid, symbol="AAPL", side=Side.BUY, quantity=100.0,
                         order_type="LMT" if limit else "MKT", limit_price=limit)
    return Order(intent=intent, run_id="r1", created_at=T0, updated_at=T0)


def events(coid: str = COID) -> st.SearchStrategy:
    """Any broker event about the order, amendments included."""
    second = st.integers(0, 100).map(at)
    exec_id = st.sampled_from(["x1", "x2", "x3"])
    fill = st.builds(lambda e, q, p, s, r: Fill(e, coid, q, p, s, currency="USD", key=e[:2], revision=r),
                     exec_id, st.integers(1, 80).map(float), st.integers(900, 1100).map(lambda c: c / 100),
                     second, st.integers(0, 2))
    changes = st.fixed_dictionaries({}, optional={
        "quantity": st.integers(1, 200).map(float),
        "limit_price": st.integers(900, 1100).map(lambda c: c / 100),
        "tif": st.sampled_from(["DAY", "GTC"])})
    return st.one_of(
        st.builds(Submitted, st.just(coid), second, st.none() | st.just(10.5)),
        st.builds(ArrivalPrice, st.just(coid), second, st.just(10.25)),
        st.builds(Accepted, st.just(coid), second, st.sampled_from([None, "7", "8"]),
                  st.sampled_from([None, "p1", "p2"])),
        st.builds(StatusUpdate, st.just(coid), second, st.just("Submitted"), st.sampled_from([None, "9"]),
                  st.sampled_from([None, "p3"])),
        st.builds(lambda f, s: Execution(f, s), fill, second),
        st.builds(Commission, exec_id, st.integers(0, 300).map(lambda c: c / 100),
                  st.just("USD"), second, st.just(coid) | st.none()),
        st.builds(Cancelled, st.just(coid), second, st.sampled_from(["", "by user"])),
        st.builds(Rejected, st.just(coid), second, st.just("no")),
        st.builds(BrokerNotice, second, st.just(399), st.just("a warning"), st.just(coid)),
        st.builds(AmendRequested, st.just(coid), second, changes, st.integers(1, 3)),
        st.builds(AmendAccepted, st.just(coid), second, changes, st.integers(1, 3)),
        st.builds(AmendRefused, st.just(coid), second, st.just("refused"), st.integers(1, 3)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), max_size=25))
def test_an_event_changes_only_the_state_columns_unless_an_amendment_was_accepted(stream):
    """The exact rule behind same_terms: the same Order with as many amendments differs from its last
    row in ORDER_STATE_COLUMNS alone."""
    order = an_order()
    book = OrderBook()
    book.add(order)
    before, amendments = order_row(order), order.amendments
    for event in stream:
        book.apply(event)
        after = order_row(order)
        if order.amendments == amendments:
            changed = {c for c in ORDER_COLUMNS if not _same(before[c], after[c])}
            assert changed <= set(ORDER_STATE_COLUMNS), (event, changed - set(ORDER_STATE_COLUMNS))
        before, amendments = after, order.amendments


def _same(a: object, b: object) -> bool:
    return a == b or (a != a and b != b)


def file_orders(db) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT * FROM orders").fetchall()
    finally:
        con.close()
    return {row[0]: dict(zip(ORDER_COLUMNS, row, strict=True)) for row in rows}


def as_read(row: dict) -> dict:
    """A row as the file gives it back: NaN is NULL."""
    return {c: None if v != v else v for c, v in row.items()}


def apply(recorder: Recorder, book: OrderBook, *stream) -> None:
    for event in stream:
        recorder.record(event, book.apply(event))


def fill(order: Order, exec_id: str, quantity: float, second: float) -> tuple:
    coid = order.client_order_id
    return (Execution(Fill(exec_id, coid, quantity, 10.0, at(second), currency="USD"), at(second)),
            Commission(exec_id, 0.5, "USD", at(second), coid))


@pytest.fixture
def state_updates(monkeypatch) -> list[set[str]]:
    """The keys of each UPDATE of state columns alone, as the writer made them."""
    import kit.store

    made: list[set[str]] = []
    update = kit.store._update_states

    def spy(con, rows):
        made.append({row["client_order_id"] for row in rows})
        return update(con, rows)

    monkeypatch.setattr(kit.store, "_update_states", spy)
    return made


@pytest.mark.parametrize("count", [3, SMALL_BATCH + 50])  # lists of values, and a DataFrame
def test_the_file_holds_whole_rows_after_fills_and_an_amendment_between_flushes(db, count, state_updates):
    orders = [an_order(f"k-S{i}-BUY") for i in range(count)]
    book = OrderBook()
    with Ledger(db) as ledger:
        recorder = Recorder(ledger, "r1")
        for order in orders:
            book.add(order)
            recorder.order(order, "planned", T0)
        assert recorder.flush()
        for i, order in enumerate(orders):
            apply(recorder, book, Submitted(order.client_order_id, at(1), 10.1))
            if i % 2:
                apply(recorder, book, *fill(order, f"x{i}", 40.0, 2))
        amended = orders[1]
        apply(recorder, book, AmendAccepted(amended.client_order_id, at(3), {"quantity": 60.0,
                                                                             "limit_price": 9.5}, 1))
        assert recorder.flush()
        cancelled = orders[::2]
        apply(recorder, book, *(Cancelled(o.client_order_id, at(4)) for o in cancelled))
        assert recorder.flush()
    assert state_updates == [{o.client_order_id for o in orders} - {amended.client_order_id},
                             {o.client_order_id for o in cancelled}]
    held = file_orders(db)
    assert held == {o.client_order_id: as_read(order_row(o)) for o in orders}
    assert held[amended.client_order_id]["quantity"] == 60.0
    assert held[amended.client_order_id]["original_quantity"] == 100.0


def test_a_batch_kept_by_a_failed_write_keeps_the_amended_terms(db, monkeypatch, state_updates):
    """Written whole, then amended in a batch the ledger could not take, then filled: the next row (same
    terms as the amended one, which never reached the file) must not be written as state columns alone."""
    amended, other = an_order(), an_order("k-MSFT-BUY")
    book = OrderBook()
    with Ledger(db) as ledger:
        recorder = Recorder(ledger, "r1")
        for order in (amended, other):
            book.add(order)
            recorder.order(order, "planned", T0)
            apply(recorder, book, Submitted(order.client_order_id, at(1)))
        assert recorder.flush()
        apply(recorder, book, AmendAccepted(COID, at(2), {"limit_price": 9.5}, 1), *fill(other, "y1", 5, 2))
        write = Ledger.write

        def full_disk(self, batch):
            raise LedgerWriteError("no space left on device")

        monkeypatch.setattr(Ledger, "write", full_disk)
        assert not recorder.flush()  # kept for the next flush
        monkeypatch.setattr(Ledger, "write", write)
        apply(recorder, book, *fill(amended, "x1", 30.0, 3), *fill(other, "y2", 5, 3))
        assert recorder.flush()
        apply(recorder, book, *(StatusUpdate(o.client_order_id, at(4), "Submitted", "12")
                                for o in (amended, other)))
        assert recorder.flush()
    assert state_updates == [{other.client_order_id}, {COID, other.client_order_id}]
    held = file_orders(db)
    assert held == {o.client_order_id: as_read(order_row(o)) for o in (amended, other)}
    assert held[COID]["limit_price"] == 9.5 and held[COID]["original_limit_price"] == 10.0


@pytest.mark.parametrize("count", [1, 2, SMALL_BATCH + 1])
def test_a_same_terms_row_the_file_lacks_is_written_whole(db, count, state_updates):
    """The hint is only a hint: a key the file does not have (a journal record set aside, say) is
    inserted whole, and the rows it does have are updated."""
    orders = [an_order(f"k-S{i}-BUY") for i in range(count + 1)]
    with Ledger(db) as ledger:
        assert ledger.write(Batch(orders={orders[0].client_order_id: order_row(orders[0])}))
        for order in orders:
            order.status, order.updated_at = order.status.SUBMITTED, at(5)
        batch = Batch(orders={o.client_order_id: order_row(o) for o in orders},
                      same_terms={o.client_order_id for o in orders})
        assert ledger.write(batch)
    assert state_updates == [set(batch.orders)]
    assert file_orders(db) == {o.client_order_id: as_read(order_row(o)) for o in orders}
