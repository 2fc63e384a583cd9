"""The DuckDB ledger: round trips, corrections, batches, the append-only trail, reads and schema migration."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest

import kit
import kit.store
from kit.errors import KitError
from kit.model import Fill, Order, OrderIntent, Side, Status
from kit.recorder import event_row, fill_row, order_row
from kit.store import Batch, Ledger, working_mask

T0 = datetime(2026, 11, 21, 14, 30, 0, 123456)


def an_order(coid: str = "k-AAPL-BUY", run_id: str = "r1", **intent) -> Order:
    values = {"client_order_id": coid, "symbol": coid.split("-")[1], "side": Side.BUY, "quantity": 100.0}
    return Order(intent=OrderIntent(**(values | intent)), run_id=run_id, created_at=T0, updated_at=T0)


def a_fill(order: Order, exec_id: str, quantity: float, price: float, commission: float | None = 1.0,
           seconds: int = 1) -> Fill:
    """exec_id "<key>.<revision>", the key and revision given explicitly, as a broker's translator does."""
    key, _, revision = exec_id.rpartition(".")
    return Fill(exec_id, order.client_order_id, quantity, price, T0 + timedelta(seconds=seconds),
                commission=commission, currency="USD", exchange="NYSE", key=key, revision=int(revision))


def write(ledger: Ledger, orders: list[Order], events: int = 0) -> None:
    batch = Batch()
    for order in orders:
        batch.orders[order.client_order_id] = order_row(order)
        for fill in order.fills.values():
            batch.fills[fill.exec_id] = fill_row(order, fill)
    for n in range(events):
        batch.events.append(event_row(f"ev{n}", "r1", None, n + 1, T0, "note", None, {"n": n}))
    ledger.write(batch)


def insert_run(ledger: Ledger, run_id: str = "r1", run_key: str = "k", started: datetime = T0) -> None:
    ledger.insert_run({"run_id": run_id, "run_key": run_key, "broker": "mock", "status": "running",
                       "started_at": started, "parameters": '{"lookback": 20}'})


def test_a_new_ledger_has_the_contract_tables_and_the_current_schema(db):
    with Ledger(db) as ledger:
        assert ledger.schema_version() == len(kit.store.MIGRATIONS)
    con = duckdb.connect(str(db), read_only=True)  # what a user does: plain SQL on the file
    try:
        def columns(table):
            return {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}

        assert {"run_id", "run_key", "notebook", "parameters", "broker", "account", "status", "started_at",
                "ended_at", "error"} <= columns("runs")
        assert {"client_order_id", "run_id", "symbol", "side", "quantity", "order_type", "limit_price", "tif",
                "status", "filled_quantity", "remaining_quantity", "avg_fill_price", "broker_order_id",
                "perm_id", "reason", "decision_price", "created_at", "updated_at"} <= columns("orders")
        assert {"exec_id", "client_order_id", "run_id", "symbol", "side", "quantity", "price", "commission",
                "currency", "exchange", "time"} <= columns("fills")
        assert {"event_id", "client_order_id", "at", "kind", "status", "detail"} <= columns("order_events")
    finally:
        con.close()


def test_orders_and_fills_round_trip(db):
    lmt = an_order("k-TTE-SELL", side=Side.SELL, quantity=40.0, order_type="LMT", limit_price=61.25,
                   tif="GTC", currency="EUR", exchange="SBF", primary_exchange="SBF", decision_price=61.0)
    lmt.status, lmt.broker_order_id, lmt.perm_id, lmt.arrival_price = Status.PARTIAL, "12", "9001", 61.1
    lmt.submitted_at, lmt.updated_at = T0 + timedelta(seconds=1), T0 + timedelta(seconds=3)
    lmt.fills["x.01"] = a_fill(lmt, "x.01.01", 15, 61.2, seconds=2)
    lmt.fills["y.01"] = a_fill(lmt, "y.01.01", 5, 61.3, commission=None, seconds=3)
    mkt = an_order("k-AAPL-BUY")
    mkt.status, mkt.reason = Status.REJECTED, "price_unavailable"
    with Ledger(db) as ledger:
        write(ledger, [lmt, mkt])
        loaded = {o.client_order_id: o for o in ledger.load_orders("r1")}
    with Ledger(db) as ledger:  # and from a fresh process's point of view: a new connection
        assert {o.client_order_id: o for o in ledger.load_orders("r1")} == loaded
    assert loaded == {"k-TTE-SELL": lmt, "k-AAPL-BUY": mkt}
    assert loaded["k-TTE-SELL"].intent.payload() == lmt.intent.payload()  # resume compares these
    assert loaded["k-TTE-SELL"].fills["y.01"].commission is None  # unknown, not zero
    assert loaded["k-AAPL-BUY"].intent.limit_price is None and loaded["k-AAPL-BUY"].broker_order_id is None
    # and what is unknown is NULL for a user's plain SQL, not NaN
    nulls = kit.ledger(db).query(
        "SELECT client_order_id FROM orders WHERE limit_price IS NULL AND avg_fill_price IS NULL "
        "AND broker_order_id IS NULL AND submitted_at IS NULL")
    assert nulls["client_order_id"].tolist() == ["k-AAPL-BUY"]
    assert kit.ledger(db).query("SELECT exec_id FROM fills WHERE commission IS NULL")["exec_id"].tolist() == [
        "y.01.01"]


def test_the_orders_row_carries_the_derived_quantities(db):
    order = an_order()
    order.status = Status.PARTIAL
    order.fills["a.01"] = a_fill(order, "a.01.01", 30, 10.0, commission=1.0)
    order.fills["b.01"] = a_fill(order, "b.01.01", 10, 12.0, commission=0.5)
    with Ledger(db) as ledger:
        write(ledger, [order])
    row = kit.ledger(db).orders("r1").iloc[0]
    assert (row["filled_quantity"], row["remaining_quantity"]) == (40, 60)
    assert row["avg_fill_price"] == pytest.approx(10.5)
    assert row["commission"] == pytest.approx(1.5)
    assert row["status"] == "PARTIAL"


def test_a_correction_replaces_the_fill_row_it_corrects(db):
    order = an_order()
    order.fills["a.01"] = a_fill(order, "a.01.01", 30, 10.0)
    with Ledger(db) as ledger:
        write(ledger, [order])
        corrected = a_fill(order, "a.01.02", 25, 10.1)
        order.fills["a.01"] = corrected
        batch = Batch(replaced_fills={"a.01.01"})
        batch.fills[corrected.exec_id] = fill_row(order, corrected)
        ledger.write(batch)
        fills = ledger.fills("r1")
    assert fills["exec_id"].tolist() == ["a.01.02"]
    assert fills["quantity"].tolist() == [25]


def test_a_batch_is_one_transaction(db):
    order = an_order()
    with Ledger(db) as ledger:
        write(ledger, [order], events=2)
        broken = Batch()
        broken.events.append(event_row("ev9", "r1", None, 9, T0, "note", None, {}))
        broken.orders["k-MSFT-BUY"] = order_row(an_order("k-MSFT-BUY"))
        # client_order_id is NOT NULL: the whole batch must be refused
        orphan = fill_row(order, a_fill(order, "z.01.01", 1, 1.0)) | {"client_order_id": None}
        broken.fills["z.01.01"] = orphan
        with pytest.raises(duckdb.Error):
            ledger.write(broken)
        assert ledger.events()["event_id"].tolist() == ["ev0", "ev1"]
        assert ledger.orders()["client_order_id"].tolist() == ["k-AAPL-BUY"]
        write(ledger, [an_order("k-IBM-BUY")])  # and the connection is usable afterwards
        assert len(ledger.orders()) == 2


def test_order_events_are_append_only(db):
    with Ledger(db) as ledger:
        write(ledger, [], events=3)
        batch = Batch()
        batch.events.append(event_row("ev1", "r1", None, 2, T0, "rewritten", None, {}))
        ledger.write(batch)
        events = ledger.events("r1")
    assert events["event_id"].tolist() == ["ev0", "ev1", "ev2"]
    assert events["kind"].tolist() == ["note"] * 3


def test_reads_return_dataframes_and_need_no_open_writer(db):
    with Ledger(db) as ledger:
        insert_run(ledger)
        order = an_order()
        order.fills["a.01"] = a_fill(order, "a.01.01", 100, 10.0)
        write(ledger, [order], events=1)
        assert isinstance(ledger.runs(), pd.DataFrame)  # reads while this process holds the writer
    reader = kit.ledger(db)
    for table in (reader.runs(), reader.orders(), reader.orders(run_id="r1"), reader.fills(),
                  reader.fills(run_id="r1"), reader.events()):
        assert isinstance(table, pd.DataFrame) and len(table) == 1
    assert reader.orders(run_id="other").empty
    assert reader.runs()["parameters"].iloc[0] == '{"lookback": 20}'
    assert pd.api.types.is_datetime64_any_dtype(reader.fills()["time"])


def test_reading_a_missing_ledger_says_so(db):
    with pytest.raises(KitError, match=r"no ledger at .*kit\.duckdb"):
        kit.ledger(db).runs()
    assert not db.exists()


def test_a_run_is_found_by_id_or_key_and_the_latest_by_default(db):
    with Ledger(db) as ledger:
        insert_run(ledger, "r1", "first", T0)
        insert_run(ledger, "r2", "second", T0 + timedelta(hours=1))
        assert ledger.resolve_run("r1") == "r1"
        assert ledger.resolve_run("second") == "r2"
        assert ledger.resolve_run(None) == "r2"
        with pytest.raises(KitError, match="no run 'third'"):
            ledger.resolve_run("third")


def test_an_empty_ledger_has_no_latest_run(db):
    with Ledger(db) as ledger, pytest.raises(KitError, match="no runs in"):
        ledger.resolve_run(None)


def test_next_seq_continues_a_run_s_trail(db):
    with Ledger(db) as ledger:
        assert ledger.next_seq("r1") == 1
        write(ledger, [], events=3)
        assert ledger.next_seq("r1") == 4
        assert ledger.next_seq("r2") == 1


def test_an_unknown_commission_is_null_in_the_ledger_not_zero(db):
    order = an_order()
    order.fills["a.01"] = a_fill(order, "a.01.01", 60, 10.0, commission=1.0)
    order.fills["b.01"] = a_fill(order, "b.01.01", 40, 10.0, commission=math.nan)  # IB left it unset
    with Ledger(db) as ledger:
        write(ledger, [order])
        loaded = ledger.load_orders("r1")[0]
    nulls = kit.ledger(db).query("SELECT exec_id FROM fills WHERE commission IS NULL")["exec_id"].tolist()
    assert nulls == ["b.01.01"]
    assert kit.ledger(db).orders("r1")["commission"].isna().all()  # the order's sum is unknown too
    assert not loaded.fills["b.01"].commission_known and math.isnan(loaded.commission)


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("sent", [True, False])
def test_the_ledger_s_working_orders_are_the_orders_that_are_working(db, status, sent):
    """WORKING_SQL (kit cancel --all, the mock's book) and working_mask (frames) mean Order.working."""
    order = an_order()
    order.status, order.submitted_at = status, T0 if sent else None
    with Ledger(db) as ledger:
        insert_run(ledger)
        write(ledger, [order])
        assert (ledger.working_runs() == ["r1"]) is order.working
        assert bool(ledger.book("mock")[1]) is order.working
    assert working_mask(kit.ledger(db).orders("r1")).tolist() == [order.working]


def test_fills_written_before_execution_keys_existed_get_them_from_the_migration(db, monkeypatch):
    """A ledger of schema 1 stored no execution key: the migration derives it once from the exec ids,
    as kit then did, so a resumed run still recognises a correction of an old fill."""
    monkeypatch.setattr(kit.store, "MIGRATIONS", kit.store.MIGRATIONS[:1])
    schema_1 = kit.store.ORDER_COLUMNS[:kit.store.ORDER_COLUMNS.index("updated_at") + 1]
    monkeypatch.setattr(kit.store, "ORDER_COLUMNS", schema_1)  # the orders columns schema 1 had
    with Ledger(db) as ledger:
        row, first = order_row(an_order()), kit.store.ORDER_COLUMNS[:25]  # the orders columns of schema 1
        ledger.con.execute(f"INSERT INTO orders ({', '.join(first)}) VALUES ({', '.join('?' * len(first))})",
                           [row[column] for column in first])
        for exec_id in ("0001.5f.01.02", "plain"):
            ledger.con.execute("INSERT INTO fills VALUES (?, 'k-AAPL-BUY', 'r1', 'AAPL', 'BUY', 10, 1.0, "
                               "0.5, 'USD', 'NYSE', ?)", [exec_id, T0])
    monkeypatch.undo()
    with Ledger(db) as ledger:
        write(ledger, [an_order()])
        fills = ledger.fills("r1").set_index("exec_id")
        order = ledger.load_orders("r1")[0]
    assert fills.loc["0001.5f.01.02", ["execution_key", "revision"]].tolist() == ["0001.5f.01", 2]
    assert fills.loc["plain", ["execution_key", "revision"]].tolist() == ["plain", 0]
    assert set(order.fills) == {"0001.5f.01", "plain"} and order.fills["0001.5f.01"].revision == 2


def test_a_journal_written_before_rows_had_names_is_still_replayed(db):
    """Rows journaled by an older kit are lists in column order, their fills without execution keys."""
    order = an_order()
    order.fills["a.01"] = a_fill(order, "a.01.02", 100, 10.0)
    row, fill = order_row(order), fill_row(order, order.fills["a.01"])
    Ledger(db).open().close()
    Ledger(db).journal.append({"events": [], "orders": [list(row.values())],
                               "fills": [list(fill.values())[:11]], "replaced_fills": [], "runs": {}})
    with Ledger(db) as ledger:
        loaded = ledger.load_orders("r1")[0]
    assert loaded.fills == {"a.01": order.fills["a.01"]} and loaded.filled_quantity == 100


# ---- schema versions ------------------------------------------------------------------------------------


def test_a_forward_migration_is_applied_once_and_keeps_the_data(db, monkeypatch):
    with Ledger(db) as ledger:
        insert_run(ledger)
        order = an_order()
        order.fills["a.01"] = a_fill(order, "a.01.01", 100, 10.0)
        write(ledger, [order], events=2)
    before = len(kit.store.MIGRATIONS)
    extra = [
        "ALTER TABLE orders ADD COLUMN venue VARCHAR",  # fails if run twice
        "CREATE TABLE migration_runs (n INTEGER)",
        "INSERT INTO migration_runs VALUES (1)",
    ]
    monkeypatch.setattr(kit.store, "MIGRATIONS", [*kit.store.MIGRATIONS, extra])
    for _ in range(2):
        with Ledger(db) as ledger:
            assert ledger.schema_version() == before + 1
            assert ledger.con.execute("SELECT count(*) FROM migration_runs").fetchone()[0] == 1
            assert ledger.con.execute("SELECT count(*) FROM kit_schema").fetchone()[0] == before + 1
            assert ledger.runs()["run_key"].tolist() == ["k"]
            assert ledger.fills()["exec_id"].tolist() == ["a.01.01"]
            assert len(ledger.events()) == 2
            assert [o.client_order_id for o in ledger.load_orders("r1")] == ["k-AAPL-BUY"]
            assert "venue" in ledger.orders().columns


def test_a_failed_migration_changes_nothing(db, monkeypatch):
    with Ledger(db) as ledger:
        insert_run(ledger)
    monkeypatch.setattr(kit.store, "MIGRATIONS", [*kit.store.MIGRATIONS, [
        "ALTER TABLE runs ADD COLUMN host VARCHAR",
        "SELECT * FROM no_such_table",
    ]])
    with pytest.raises(duckdb.Error):
        Ledger(db).open()
    monkeypatch.undo()
    with Ledger(db) as ledger:
        assert ledger.schema_version() == len(kit.store.MIGRATIONS)
        assert "host" not in ledger.runs().columns and len(ledger.runs()) == 1


def test_a_ledger_with_a_newer_schema_is_refused_and_left_alone(db):
    with Ledger(db) as ledger:
        insert_run(ledger)
        newer = len(kit.store.MIGRATIONS) + 1
        ledger.con.execute("INSERT INTO kit_schema VALUES (?, now()::TIMESTAMP)", [newer])
    with pytest.raises(KitError, match=f"ledger schema {newer}; this kit knows {newer - 1}: upgrade kit"):
        Ledger(db).open()
    # the refused file is not held open by this process: plain read-only SQL on it still works
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT max(version) FROM kit_schema").fetchone()[0] == newer
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    finally:
        con.close()
