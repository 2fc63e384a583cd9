"""Hardening the ledger (issue 15): a full disk, a file that is not kit's or is swapped mid-run, and a
notebook holding the file never cost an order, a silent empty ledger or a stalled run."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import kit
import kit.store
from kit.brokers.mock import MockBroker
from kit.errors import LedgerIdentityError
from kit.journal import frame
from kit.model import Fill, Order, OrderIntent, Side, Status
from kit.recorder import event_row
from kit.store import Batch, Ledger


def basket(count: int) -> tuple[pd.DataFrame, dict[str, float]]:
    symbols = [f"S{i:03d}" for i in range(count)]
    return (pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": 30}),
            {s: 10.0 + i for i, s in enumerate(symbols)})


# ---- a full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB filesystem of its own (tmpfs), unmounted afterwards."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill_up(disk: Path) -> Path:
    """Another program takes every free byte of the disk; deleting the file it returns frees them."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast


class FillsTheDisk(MockBroker):
    """Fills the disk just before the orders are handed over (`prepare`: the write-ahead `submitted` events
    cannot be recorded) or as the first one is (the fills that follow cannot). Checks, at its first order,
    that every order it is handed has a durable `submitted` event (in the file or in the journal)."""

    def __init__(self, db: Path, prices: dict[str, float], when: str):
        super().__init__(prices, partial_fills=3)
        self.db, self.when = db, when
        self.durable: set[str] | None = None
        self.ballast: Path | None = None

    async def prepare(self, orders):
        if self.when == "before_send" and self.ballast is None:
            self.ballast = fill_up(self.db.parent)
        await super().prepare(orders)

    async def submit(self, order):
        if self.durable is None:
            events = kit.ledger(self.db).events()
            self.durable = set(events.loc[events["kind"] == "submitted", "client_order_id"])
        assert order.client_order_id in self.durable, f"{order.client_order_id} sent without a durable event"
        if self.when == "after_send" and self.ballast is None:
            self.ballast = fill_up(self.db.parent)
        await super().submit(order)


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_a_small_filesystem_filling_up_mid_run_ends_with_a_clear_error_and_a_clean_resume(small_disk, when,
                                                                                           caplog):
    db = small_disk / "kit.duckdb"
    targets, prices = basket(40)
    broker = FillsTheDisk(db, prices, when)
    with caplog.at_level(logging.ERROR):
        run = kit.execute(targets, broker=broker, run_key="full", db=db, timeout=30)
    failure = next(n for n in run.notes if "No space left on device" in n)
    assert f"the ledger {db}: " in failure and f"{db}.journal: No space left on device" in failure
    assert "no transaction is active" not in failure + caplog.text  # the ROLLBACK hides nothing
    if when == "before_send":
        assert broker.submitted == [] and run.status == "failed"
    else:  # every order was sent before the disk filled: all of them are followed to the end, in memory
        assert len(broker.submitted) == 40 and set(run.orders["status"]) == {"FILLED"}
    broker.ballast.unlink()  # space again; the same key, the same broker (its orders live in this object)
    again = kit.execute(targets, broker=broker, run_key="full", db=db, timeout=30)
    assert again.status == "done", again.summary()
    assert sorted(broker.submitted) == sorted(f"full-{s}-BUY" for s in targets["symbol"])  # each once
    ledger = kit.ledger(db)
    orders, fills = ledger.orders(again.run_id), ledger.fills(again.run_id)
    assert len(orders) == 40 and set(orders["status"]) == {"FILLED"}
    assert fills["exec_id"].is_unique and fills.groupby("client_order_id")["quantity"].sum().eq(30).all()
    assert Ledger(db).journal.pending() == 0


# ---- ledger identity ------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_program_s_duckdb_file_is_refused_untouched(db):
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE prices (symbol VARCHAR, close DOUBLE)")
    con.execute("INSERT INTO prices VALUES ('AAPL', 190.0)")
    con.close()
    before = digest(db)
    targets, prices = basket(2)
    with pytest.raises(LedgerIdentityError, match=rf"{db} is a DuckDB database but not a kit ledger.*prices"):
        kit.execute(targets, broker=MockBroker(prices), run_key="foreign", db=db)
    assert digest(db) == before and not Path(f"{db}.wal").exists()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("prices",)]
    finally:
        con.close()


def test_an_empty_duckdb_file_becomes_a_ledger_with_its_marker(db):
    duckdb.connect(str(db)).close()
    with Ledger(db) as ledger:
        marker = ledger.con.execute("SELECT id, created_at FROM kit_ledger").fetchall()
        assert ledger.schema_version() == len(kit.store.MIGRATIONS)
    assert len(marker) == 1 and len(marker[0][0]) == 36


def test_a_ledger_from_before_the_marker_gets_one_and_keeps_its_runs(db, monkeypatch):
    monkeypatch.setattr(kit.store, "MIGRATIONS", kit.store.MIGRATIONS[:2])
    monkeypatch.setattr(kit.store, "ORDER_COLUMNS", kit.store.ORDER_COLUMNS[:25])  # schema 2's orders
    targets, prices = basket(2)
    kit.execute(targets, broker=MockBroker(prices), run_key="old", db=db)
    monkeypatch.undo()
    with Ledger(db) as ledger:
        assert ledger.con.execute("SELECT count(*) FROM kit_ledger").fetchone()[0] == 1
        assert ledger.runs()["run_key"].tolist() == ["old"] and len(ledger.orders()) == 2


class SwapsTheLedger(MockBroker):
    """While the run waits for fills (and has let go of the file), something removes or replaces it."""

    def __init__(self, db: Path, prices: dict[str, float], how: str):
        super().__init__(prices, latency=1.0)
        self.db, self.how = db, how

    async def submit(self, order):
        await super().submit(order)
        if self.how == "removed":
            self._loop.call_later(0.5, os.remove, self.db)
        else:
            other = self.db.with_name("other.duckdb")
            Ledger(other).open().close()
            self._loop.call_later(0.5, os.replace, other, self.db)


@pytest.mark.parametrize(("how", "message"), [("removed", "disappeared during this run"),
                                              ("replaced", "was replaced during this run")])
def test_a_ledger_that_disappears_or_is_replaced_mid_run_fails_the_run_loudly(db, how, message):
    targets, prices = basket(1)
    broker = SwapsTheLedger(db, prices, how)
    with pytest.raises(LedgerIdentityError, match=f"{db} {message}"):
        kit.execute(targets, broker=broker, run_key="swap", db=db, timeout=10)
    assert broker._loop is None  # the broker was let go all the same
    if how == "removed":
        assert not db.exists()  # no empty ledger in its place
    else:
        assert kit.ledger(db).runs().empty  # nothing of this run went into the other ledger


# ---- readers never stall a run --------------------------------------------------------------------------

READER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)   # the README's snippet, before con.close()
    con.execute("SELECT count(*) FROM orders").fetchone()
    print("holding", flush=True)
    sys.stdin.read()   # until the test lets go
    con.close()
""")


@contextlib.contextmanager
def held_read_only(db: Path) -> Iterator[subprocess.Popen[str]]:
    """A notebook in another process holding a read-only connection to an existing ledger."""
    Ledger(db).open().close()
    process = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        if process.poll() is None:
            process.communicate("")


@pytest.fixture
def reader(db):
    with held_read_only(db) as process:
        yield process


def test_reads_fold_the_journal_over_the_file_latest_row_per_key(db):
    """A corrected fill, an updated run and new events waiting in the journal show in every read while
    the file is held, exactly as the next writer will write them."""
    from kit.recorder import fill_row, order_row

    order = Order(intent=OrderIntent("k-AAPL-BUY", "AAPL", Side.BUY, 100), run_id="r1",
                  created_at=datetime(2026, 1, 2), updated_at=datetime(2026, 1, 2))
    first = Fill("a.01.01", "k-AAPL-BUY", 100, 10.0, datetime(2026, 1, 2, 15), 1.0, key="a.01", revision=1)
    with Ledger(db) as ledger:
        ledger.insert_run({"run_id": "r1", "run_key": "k", "status": "running",
                           "started_at": datetime(2026, 1, 2)})
        ledger.write(Batch(events=[event_row("e1", "r1", None, 1, datetime(2026, 1, 2), "a", None, {})],
                           orders={"k-AAPL-BUY": order_row(order)},
                           fills={"a.01.01": fill_row(order, first)}))
    with held_read_only(db):
        corrected = Fill("a.01.02", "k-AAPL-BUY", 100, 10.5, datetime(2026, 1, 2, 15), 1.0, key="a.01",
                         revision=2)
        order.fills = {corrected.execution_key: corrected}
        order.status = Status.FILLED
        writer = Ledger(db).open()
        later = event_row("e2", "r1", None, 2, datetime(2026, 1, 3), "b", None, {})
        assert writer.write(Batch(events=[later], orders={"k-AAPL-BUY": order_row(order)},
                                  fills={"a.01.02": fill_row(order, corrected)}, replaced_fills={"a.01.01"},
                                  runs={"r1": {"status": "done"}})) is False  # journaled
        ledger = kit.ledger(db)
        assert ledger.fills("r1")[["exec_id", "price"]].values.tolist() == [["a.01.02", 10.5]]
        assert ledger.orders("r1")[["status", "filled_quantity"]].values.tolist() == [["FILLED", 100.0]]
        assert ledger.runs()[["run_key", "status"]].values.tolist() == [["k", "done"]]
        assert ledger.events("r1")["event_id"].tolist() == ["e1", "e2"]
        assert writer.run_row("r1")["status"] == "done" and writer.next_seq("r1") == 3
        assert Ledger(db).journal.pending() == 1
    assert kit.ledger(db).fills("r1")["exec_id"].tolist() == ["a.01.02"]  # and so the file, once free
    assert Ledger(db).journal.pending() == 0


def test_a_notebook_s_read_only_connection_neither_stalls_a_run_nor_hides_its_results(db, reader, caplog):
    try:
        targets, prices = basket(3)
        with caplog.at_level(logging.WARNING, logger="kit.ledger"):
            run = kit.execute(targets, broker=MockBroker(prices, partial_fills=2), run_key="held", db=db)
        assert reader.poll() is None  # the run did not wait for the notebook to let go
        assert run.status == "done"
        held = [r.getMessage() for r in caplog.records if "held by" in r.getMessage()]
        assert len(held) == 1 and f"pid {reader.pid}" in held[0], held
        assert "Conflicting lock" not in caplog.text and "waiting" not in caplog.text
        assert Ledger(db).journal.pending() > 0
        # the notebook's kit.ledger() (and the command line) see the run as it ended, from the journal
        ledger = kit.ledger(db)
        assert ledger.runs().set_index("run_id").loc[run.run_id, "status"] == "done"
        assert set(ledger.orders(run.run_id)["status"]) == {"FILLED"}
        assert sorted(ledger.fills(run.run_id)["exec_id"]) == sorted(run.fills["exec_id"])
        events = ledger.events(run.run_id)
        assert events["event_id"].is_unique
        assert {"run_started", "submitted", "run_finished"} <= set(events["kind"])
    finally:
        reader.communicate("")
    assert ledger.orders(run.run_id)["status"].tolist() == ["FILLED"] * 3  # drained once it was free
    assert Ledger(db).journal.pending() == 0


def test_the_command_line_shows_journaled_batches(db, reader, capsys):
    from kit.cli import main

    targets, prices = basket(2)
    kit.execute(targets, broker=MockBroker(prices), run_key="cli-held", db=db)
    assert Ledger(db).journal.pending() > 0
    main(["orders", "--db", str(db), "--json"])
    shown = capsys.readouterr().out
    assert "cli-held-S000-BUY" in shown and "cli-held-S001-BUY" in shown


# ---- a journal record of the wrong shape ----------------------------------------------------------------


def test_a_journal_record_of_the_wrong_shape_is_set_aside_and_the_rest_is_written(db, caplog):
    Ledger(db).open().close()
    journal = Ledger(db).journal
    good = Batch(events=[event_row("e1", "r1", None, 1, datetime(2026, 1, 2), "note", None, {"why": "t"})])
    wrong = {"events": [{"event_id": "e0", "seq": "not a number", "at": "never"}], "orders": [],
             "fills": [], "replaced_fills": [], "runs": {}}
    journal.path.write_bytes(frame(wrong) + frame({"no": "batch"}) + frame(good.to_record()))
    with caplog.at_level(logging.WARNING), Ledger(db) as ledger:
        assert ledger.events()["event_id"].tolist() == ["e1"]
    assert journal.pending() == 0
    aside = list(db.parent.glob("*.journal.corrupt-*"))
    assert len(aside) == 1 and "set 2 record(s) aside" in caplog.text
    with Ledger(db) as ledger:  # every later open works too
        assert ledger.events()["event_id"].tolist() == ["e1"]


def test_kit_run_goes_on_while_a_notebook_holds_the_ledger(db, reader, tmp_path, monkeypatch, capsys):
    """The issue's case: `kit run` used to print DuckDB's lock message about 40 times and wait 40 s."""
    from kit.cli import main

    monkeypatch.chdir(tmp_path)
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "momentum.ipynb"
    assert main(["--db", str(db), "run", str(notebook), "-p", "broker", "mock", "--run-key", "held-run"]) == 0
    assert reader.poll() is None and "Conflicting lock" not in capsys.readouterr().err
    ledger = kit.ledger(db)
    run = ledger.runs().set_index("run_key").loc["held-run"]
    assert run["status"] == "done" and run["output_path"]
    assert len(ledger.orders(run["run_id"])) > 0 and Ledger(db).journal.pending() > 0
