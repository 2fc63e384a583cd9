"""The writer's hint (kit.store.Written): fewer statements per small batch, the same rows in the file.

A run's small batches skip the DELETE before a new fill and UPDATE only the columns of an order row that
changed since this connection last wrote it. Whatever the hint believes, the file must end up holding
exactly the rows a full write gives: a fill the file already has, an order row another process changed
while the run had let go of the file, NaN and NULL, a batch refused and written again.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.model import Fill, Order, OrderIntent, Side, Status
from kit.recorder import event_row, fill_row, order_row
from kit.store import ORDER_COLUMNS, Batch, Ledger

T0 = datetime(2026, 12, 2, 14, 30, 0, 123456)


def an_order(coid: str = "k-AAPL-BUY") -> Order:
    intent = OrderIntent(client_order_id=coid, symbol="AAPL", side=Side.BUY, quantity=100.0)
    return Order(intent=intent, run_id="r1", created_at=T0, updated_at=T0)


def a_fill(order: Order, exec_id: str, quantity: float, commission: float | None) -> Fill:
    return Fill(exec_id, order.client_order_id, quantity, 10.0, T0 + timedelta(seconds=1),
                commission=commission, currency="USD", exchange="NYSE")


def write(ledger: Ledger, order: Order, *fills: Fill, seq: int = 1) -> None:
    batch = Batch(orders={order.client_order_id: order_row(order)})
    for fill in fills:
        batch.fills[fill.exec_id] = fill_row(order, fill)
    batch.events.append(event_row(f"e{seq}-{ledger.path.name}", "r1", order.client_order_id, seq, T0, "fill",
                                  str(order.status), {}))
    assert ledger.write(batch)


def file_rows(db, table: str, key: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
    finally:
        con.close()


def test_a_fill_s_later_commission_replaces_its_row_and_a_new_fill_is_added(db):
    order = an_order()
    first = a_fill(order, "x1", 40.0, None)
    with Ledger(db) as ledger:
        order.fills[first.exec_id] = first
        write(ledger, order, first, seq=1)
        priced = a_fill(order, "x1", 40.0, 1.25)  # the commission of x1, in a batch of its own
        second = a_fill(order, "x2", 60.0, 0.75)
        order.fills[priced.exec_id] = priced
        order.fills[second.exec_id] = second
        order.status = Status.FILLED
        write(ledger, order, priced, second, seq=2)
    fills = file_rows(db, "fills", "exec_id")
    assert [(f[0], f[5], f[7]) for f in fills] == [("x1", 40.0, 1.25), ("x2", 60.0, 0.75)]
    (row,) = file_rows(db, "orders", "client_order_id")
    assert dict(zip(ORDER_COLUMNS, row, strict=True))["status"] == "FILLED"
    assert dict(zip(ORDER_COLUMNS, row, strict=True))["commission"] == 2.0


@pytest.mark.parametrize("others", [0, 300])  # a small batch, and one past SMALL_BATCH (a DataFrame)
def test_a_fill_the_file_has_from_another_connection_is_replaced_not_doubled(db, others):
    """The hint knows only what its own connection wrote: a fill written earlier (another process, a run
    resumed) is refused by the key, and the batch is written again replacing it."""
    order = an_order()
    fill = a_fill(order, "x1", 1.0, None)
    order.fills[fill.exec_id] = fill
    with Ledger(db) as earlier:
        write(earlier, order, fill, seq=1)
    priced = a_fill(order, "x1", 1.0, 2.5)
    more = [a_fill(order, f"y{n:03d}", 0.1, 0.5) for n in range(others)]
    for each in (priced, *more):
        order.fills[each.exec_id] = each
    with Ledger(db) as later:
        write(later, order, priced, *more, seq=2)
    fills = file_rows(db, "fills", "exec_id")
    assert [(f[0], f[7]) for f in fills] == [("x1", 2.5)] + [(f.exec_id, 0.5) for f in more]
    assert len(file_rows(db, "order_events", "seq")) == 2


def test_an_order_row_changed_by_another_process_meanwhile_is_written_whole_again(db):
    """While the run has let go of the file another process may write it: after a reconnect the run's row
    is written whole, not only the columns its own last write changed."""
    order = an_order()
    ledger = Ledger(db).open()
    try:
        write(ledger, order, seq=1)
        ledger.release()
        other = duckdb.connect(str(db))
        other.execute("UPDATE orders SET reason = 'edited elsewhere', limit_price = 1.5")
        other.close()
        order.status = Status.SUBMITTED
        write(ledger, order, seq=2)
    finally:
        ledger.close()
    (row,) = file_rows(db, "orders", "client_order_id")
    written = dict(zip(ORDER_COLUMNS, row, strict=True))
    assert (written["status"], written["reason"], written["limit_price"]) == ("SUBMITTED", "", None)


def test_an_order_row_another_ledger_of_this_process_wrote_is_written_whole_again(db):
    """Two Ledgers of one process share the file without letting go of it (kit.cancel beside a run in the
    same kernel): the run's next write of the row is whole, not only the columns it changed itself."""
    order = an_order()
    run, other = Ledger(db).open(), Ledger(db).open()
    try:
        write(run, order, seq=1)
        elsewhere = an_order()
        elsewhere.status, elsewhere.reason = Status.CANCELLED, "cancelled elsewhere"
        write(other, elsewhere, seq=2)
        order.status = Status.SUBMITTED
        write(run, order, seq=3)
    finally:
        other.close()
        run.close()
    (row,) = file_rows(db, "orders", "client_order_id")
    written = dict(zip(ORDER_COLUMNS, row, strict=True))
    assert (written["status"], written["reason"]) == ("SUBMITTED", "")


# Values an order row's columns take in a run: text, numbers, NaN (an unknown commission), None.
values = st.one_of(st.none(), st.just(math.nan), st.floats(-1e6, 1e6), st.sampled_from(["", "a", "b"]))
changes = st.lists(st.dictionaries(st.sampled_from(["reason", "commission", "avg_fill_price", "perm_id",
                                                    "arrival_price", "broker_order_id"]), values,
                                   max_size=4), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes)
def test_whatever_changes_between_batches_the_file_holds_the_last_row_written(tmp_path_factory, steps):
    db = tmp_path_factory.mktemp("hint") / "ledger.duckdb"
    text = {"reason", "perm_id", "broker_order_id"}
    row = order_row(an_order())
    with Ledger(db) as ledger:
        for change in steps:
            for column, value in change.items():  # each column keeps its own type, as in the orders table
                if column in text:
                    value = value if isinstance(value, str) or value is None else str(value)
                elif isinstance(value, str):
                    value = None
                row = row | {column: value}
            assert ledger.write(Batch(orders={row["client_order_id"]: dict(row)}))
    (stored,) = file_rows(db, "orders", "client_order_id")
    for column, value in zip(ORDER_COLUMNS, stored, strict=True):
        expected = row[column]
        if isinstance(expected, float) and math.isnan(expected):
            expected = None  # NaN is stored as NULL
        assert value == expected or (value is None and expected is None), column


def test_a_big_batch_written_twice_lands_once_in_the_file_not_in_the_journal(db):
    """A journal replayed again repeats a batch whose events the file has: past SMALL_BATCH rows too, the
    key's refusal is what sends it down the skipping path (it used to be lost behind DuckDB's complaint
    about the aborted transaction, and the batch went to the journal for good)."""
    order = an_order()
    batch = Batch(orders={order.client_order_id: order_row(order)},
                  events=[event_row(f"e{n}", "r1", order.client_order_id, n, T0, "note", None, {})
                          for n in range(300)])
    with Ledger(db) as ledger:
        assert ledger.write(batch)
        assert ledger.write(batch)
        assert not ledger.journal.records()
    assert len(file_rows(db, "order_events", "seq")) == 300
