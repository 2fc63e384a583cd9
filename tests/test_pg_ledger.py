"""The PostgreSQL ledger against a real server the tests start: schema, identity, the lease across processes,
the journal while the server is down, reads (CLI, TCA, review notebook), `kit ledger copy`, many writers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import kit
from kit import cli
from kit.brokers.mock import MockBroker
from kit.errors import LedgerBusyError, LedgerIdentityError, RunKeyBusyError
from kit.store import MIGRATIONS, Ledger
from tests.ledgers import fresh_database, missing_postgres
from tests.pg_server import PostgresServer

if (why := missing_postgres()) and os.environ.get("CI") != "true":
    pytest.skip(why, allow_module_level=True)

import psycopg  # after the skip: psycopg may be what is missing

ROOT = Path(__file__).resolve().parents[1]
PRICES = {"AAPL": 190.0, "MSFT": 410.0, "IBM": 185.0}
TARGETS = {"symbol": ["AAPL", "MSFT", "IBM"], "side": ["BUY", "SELL", "BUY"], "quantity": [90, 60, 30]}


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return fresh_database(postgres_server, "pg")


def columns(con, sql: str) -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in con.execute(sql).fetchall():
        tables.setdefault(table, {})[column] = kind
    return tables


def test_the_schema_is_the_duckdb_ledgers_with_every_migration(url, tmp_path):
    Ledger(url).open().close()
    Ledger(tmp_path / "kit.duckdb").open().close()
    import duckdb

    with psycopg.connect(url) as con:
        ours = columns(con, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'public'")
        versions = [v for (v,) in con.execute("SELECT version FROM kit_schema ORDER BY version").fetchall()]
        (marker,) = con.execute("SELECT id FROM kit_ledger").fetchall()
    duck = duckdb.connect(str(tmp_path / "kit.duckdb"), read_only=True)
    theirs = columns(duck, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'main'")
    duck.close()
    same_type = {"DOUBLE": "double precision", "VARCHAR": "character varying", "BIGINT": "bigint",
                 "TIMESTAMP": "timestamp without time zone", "INTEGER": "integer", "BOOLEAN": "boolean"}
    assert {t: {c: same_type[k] for c, k in cols.items()} for t, cols in theirs.items()} == ours
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert len(marker[0]) == 36  # a uuid


def test_a_migration_in_plain_ddl_is_applied_to_both_ledgers(url, tmp_path):
    """The migrations other work appends (order types, instruments and their contract cache, amendments)
    and any later one in the same plain DDL go through the translation unchanged."""
    MIGRATIONS.append([
        "CREATE TABLE later_table (con_id BIGINT PRIMARY KEY, symbol VARCHAR, multiplier DOUBLE, "
        "tradable BOOLEAN, fetched_at TIMESTAMP)",
        "ALTER TABLE orders ADD COLUMN later_price DOUBLE",
        "ALTER TABLE orders ADD COLUMN later_flag BOOLEAN",
    ])
    try:
        for db in (url, tmp_path / "kit.duckdb"):
            with Ledger(db).open() as ledger:
                assert ledger.schema_version() == len(MIGRATIONS)
                columns = set(ledger.orders().columns)
                assert {"stop_price", "outside_rth", "multiplier", "original_quantity", "later_price",
                        "later_flag"} <= columns
                for table in ("contract_cache", "later_table"):
                    assert ledger.query(f"SELECT count(*) AS n FROM {table}")["n"].tolist() == [0]
    finally:
        MIGRATIONS.pop()


def test_processes_migrating_a_new_database_at_once_apply_each_migration_once(url):
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        try:
            start.wait()
            Ledger(url).open().close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*), count(DISTINCT version) FROM kit_schema").fetchone() == (
            len(MIGRATIONS), len(MIGRATIONS))
        assert con.execute("SELECT count(*) FROM kit_ledger").fetchone() == (1,)


def test_a_database_that_is_not_a_kit_ledger_is_refused_untouched(url):
    with psycopg.connect(url) as con:
        con.execute("CREATE TABLE prices (symbol text, price float8)")
    with pytest.raises(LedgerIdentityError, match=r"not a kit ledger .*prices"):
        Ledger(url).open()
    with psycopg.connect(url) as con:
        tables = {t for (t,) in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"prices"}
    assert cli.main(["--db", url, "runs"]) == 2


def test_a_newer_ledger_is_refused(url):
    Ledger(url).open().close()
    with psycopg.connect(url) as con:
        con.execute("INSERT INTO kit_schema VALUES (%s, now())", [len(MIGRATIONS) + 1])
    with pytest.raises(LedgerIdentityError, match=f"schema {len(MIGRATIONS) + 1}; this kit knows"):
        Ledger(url).open()


def test_runs_orders_fills_tca_and_the_cli_read_the_server(url, capsys):
    run = kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES, partial_fills=3), run_key="reads",
                      db=url, progress=False)
    assert run.status == "done"
    ledger = kit.ledger(url)
    assert type(ledger).__name__ == "PgLedger" and ledger.path.exists()
    assert ledger.runs()["run_key"].tolist() == ["reads"]
    assert sorted(ledger.fills(run.run_id)["exec_id"]) == sorted(run.fills["exec_id"])
    assert ledger.orders(run.run_id)["status"].tolist() == ["FILLED"] * 3
    assert kit.tca("reads", db=url).orders["fill_ratio"].tolist() == [1.0] * 3
    for command in (["runs"], ["orders", "--run", "reads"], ["fills"], ["summary"], ["tca"]):
        form = ["--json"] if command[0] in ("runs", "fills") else []
        assert cli.main(["--db", url, *command, *form]) == 0
    out = capsys.readouterr().out
    assert "reads-AAPL-BUY" in out and "done" in out
    again = kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES), run_key="reads", db=url,
                        progress=False)
    assert len(kit.ledger(url).fills()) == 9 and again.status == "done"  # resumed: nothing sent again


def test_the_review_notebook_reads_a_postgresql_ledger(url, tmp_path):
    from tests.test_review_notebook import cell_outputs, execute_review

    kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES, partial_fills=2), run_key="rev-2026-01-05",
                db=url, progress=False)
    cells = cell_outputs(execute_review(tmp_path, db=url))
    assert "Run rev-2026-01-05 (" in cells["load"][0]
    assert "TCA summary" in cells["tca"][0] and "rev-2026-01-05-AAPL-BUY" in cells["tca"][0]


def test_the_password_is_never_printed(postgres_server, tmp_path, caplog, capsys):
    secret = "s3cret-pw"
    plain = fresh_database(postgres_server, "pw")
    url = plain.replace("kit@", f"kit:{secret}@")  # the server trusts loopback: the password is unused
    caplog.set_level(logging.DEBUG)
    run = kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES), run_key="pw", db=url, progress=False)
    assert run.status == "done"
    gone = url.replace(str(postgres_server.port), str(postgres_server.port + 1))  # nothing listens there
    with pytest.raises(LedgerBusyError) as refused:
        kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES), run_key="pw2", db=gone, progress=False)
    assert cli.main(["--db", gone, "runs"]) == 2
    assert cli.main(["--db", url, "runs", "--json"]) == 0
    shown = [str(refused.value), capsys.readouterr().err, caplog.text, " ".join(run.notes),
             kit.ledger(url).runs().to_json(date_format="iso"), str(kit.ledger(url).path),
             str(Ledger(url).journal.path)]
    assert "kit@127.0.0.1" in shown[0]  # the URL is named, without its password
    assert not [text for text in shown if secret in text]


def test_a_run_key_is_leased_across_machines_and_a_dead_holder_frees_it(url, tmp_path):
    """Another machine: a process with its own lock folder (so kit.runlock's file lock cannot see it)."""
    code = ("import sys, time; from kit.store import Ledger; lease = Ledger(sys.argv[1]).lease('shared')"
            ".acquire(); print('held', flush=True); time.sleep(120)")
    other = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "KIT_LOCK_DIR": str(tmp_path / "elsewhere")})
    try:
        assert other.stdout.readline().strip() == "held"
        broker = MockBroker(PRICES)
        with pytest.raises(RunKeyBusyError, match=rf"pid {other.pid} on .*started .* UTC"):
            kit.execute(pd.DataFrame(TARGETS), broker=broker, run_key="shared", db=url, progress=False)
        assert broker.submitted == []  # refused before anything was sent
        # a different run key does not wait for it
        assert kit.execute(pd.DataFrame(TARGETS), broker=broker, run_key="mine", db=url,
                           progress=False).status == "done"
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait(10)
    # the holder's session ended with it: the key runs
    run = kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES), run_key="shared", db=url,
                      progress=False)
    assert run.status == "done"


class StopsTheServer(MockBroker):
    """Stops the ledger's server before sending the first order and starts it again before the third: the
    second order's write-ahead `submitted` event and the first fills are written while it is down."""

    def __init__(self, server: PostgresServer, **options):
        super().__init__(PRICES, partial_fills=4, latency=0.05, **options)
        self.server, self.sent = server, 0

    async def submit(self, order):
        self.sent += 1
        if self.sent == 1:
            await asyncio.to_thread(self.server.pause)
        elif self.sent == 3:
            await asyncio.sleep(0.5)  # fills of the first two orders arrive while the server is down
            await asyncio.to_thread(self.server.resume)
        await super().submit(order)


def test_the_journal_keeps_a_run_going_while_the_server_is_down(tmp_path):
    with PostgresServer() as server:
        url = server.create_database("downtime")
        Ledger(url).open().close()
        broker = StopsTheServer(server)
        run = kit.execute(pd.DataFrame(TARGETS), broker=broker, run_key="down", db=url, progress=False)
        assert run.status == "done", run.notes
        assert any("could not be reached" in note and "journal" in note for note in run.notes), run.notes
        ledger = kit.ledger(url)
        assert ledger.journal.pending() == 0  # replayed on reconnect, in order
        fills, events = ledger.fills(run.run_id), ledger.events(run.run_id)
        assert len(fills) == 12 and fills["exec_id"].is_unique
        assert sorted(fills["exec_id"]) == sorted(run.fills["exec_id"])  # nothing lost, nothing doubled
        assert fills.groupby("client_order_id")["quantity"].sum().to_dict() == dict(
            zip(run.orders["client_order_id"], run.orders["quantity"], strict=True))
        assert events["event_id"].is_unique and list(events["seq"]) == list(range(1, len(events) + 1))
        assert (events["kind"] == "submitted").sum() == 3
        assert set(ledger.orders(run.run_id)["status"]) == {"FILLED"}


def test_kit_ledger_copy_moves_a_ledger_both_ways_without_loss(url, postgres_server, tmp_path, capsys):
    kit.execute(pd.DataFrame(TARGETS), broker=MockBroker(PRICES, partial_fills=3), run_key="c1", db=url,
                progress=False)
    kit.execute(pd.DataFrame(TARGETS), broker="mock", run_key="c2", db=url, prices=PRICES, progress=False,
                timeout=0.2)
    duck = tmp_path / "copy.duckdb"
    assert cli.main(["ledger", "copy", url, str(duck)]) == 0
    first = capsys.readouterr().out
    back = fresh_database(postgres_server, "back")
    assert cli.main(["ledger", "copy", str(duck), back]) == 0
    second = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in first.splitlines()[1:]}
    assert rows["fills"][0] == "12" and rows["runs"][0] == "2"  # 3 orders x 3 fills, 3 x 1
    for table, (n, digest, copied, copied_digest) in rows.items():
        assert (n, digest) == (copied, copied_digest), table
    assert first == second  # the same rows and checksums on all three ledgers
    for db in (url, duck, back):
        assert kit.ledger(db).fills().sort_values("exec_id")["commission"].notna().all()
    assert kit.ledger(back).events()["event_id"].tolist() == kit.ledger(url).events()["event_id"].tolist()
    assert cli.main(["ledger", "copy", str(duck), back]) == 2  # not into a ledger that holds rows
    assert "already holds 2 runs" in capsys.readouterr().err
    assert cli.main(["ledger", "copy", str(duck), back, "--merge"]) == 0  # told: the same rows again
    assert capsys.readouterr().out == first and len(kit.ledger(back).fills()) == 12
    assert cli.main(["ledger", "copy", str(tmp_path / "none.duckdb"), back]) == 2
    assert cli.main(["ledger", "copy", back, back]) == 2
    assert "kit: " in capsys.readouterr().err


def test_eight_writers_with_2000_fills_each_lose_and_double_nothing(url, tmp_path):
    from bench.many_writers import FILLS_PER_ORDER, launch

    keys = [f"writer-{n}" for n in range(8)]
    env = {**os.environ, "KIT_LOCK_DIR": str(tmp_path / "locks"), "KIT_JOURNAL_DIR": str(tmp_path / "j")}
    reports = launch(url, keys, orders=400, env=env)
    assert [r["status"] for r in reports] == ["done"] * 8, [r["notes"] for r in reports]
    with psycopg.connect(url) as con:
        per_run = dict(con.execute("SELECT r.run_key, count(*) FROM fills f JOIN runs r USING (run_id) "
                                   "GROUP BY r.run_key").fetchall())
        doubled = con.execute("SELECT count(*) - count(DISTINCT exec_id) FROM fills").fetchone()[0]
        seqs = con.execute("SELECT count(*) FROM (SELECT run_id, seq FROM order_events GROUP BY run_id, seq "
                           "HAVING count(*) > 1) d").fetchone()[0]
        unfilled = con.execute("SELECT count(*) FROM orders WHERE status <> 'FILLED' OR filled_quantity <> "
                               "quantity").fetchone()[0]
        shares = con.execute("SELECT sum(quantity) FROM fills").fetchone()[0]
    assert per_run == {key: 400 * FILLS_PER_ORDER for key in keys}
    assert (doubled, seqs, unfilled, shares) == (0, 0, 0, 8 * 400 * 100)
    assert json.dumps(reports)  # each writer reported its span (the bench's figures)


def lease_session_killed(url: str, take_it: bool) -> tuple[Ledger, object]:
    """A run's ledger and lease, then the lease's session ended from outside (and the key taken, if told)."""
    from kit.runlease import lease_id

    ledger = Ledger(url)
    lease = ledger.lease("fenced").acquire()
    ledger.open()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [lease.backend_pid])
    thief = None
    if take_it:
        thief = psycopg.connect(url, autocommit=True)
        thief.execute("SELECT pg_advisory_lock(%s)", [lease_id("fenced")])
    return ledger, thief


def batch_of(event_id: str):
    from datetime import datetime

    from kit.recorder import event_row
    from kit.store import Batch

    at = datetime(2026, 1, 2)
    return Batch(events=[event_row(event_id, "r-fenced", None, 1, at, "submitted", None, {})])


def test_a_run_that_lost_its_lease_to_another_process_writes_and_sends_nothing(url):
    ledger, thief = lease_session_killed(url, take_it=True)
    try:
        with pytest.raises(LedgerIdentityError, match=r"no longer holds its lease|lost its lease"):
            ledger.write(batch_of("e-after"))
        assert kit.ledger(url).events().empty  # the fenced write-ahead was rolled back
    finally:
        thief.close()
        ledger.close()


def test_a_lease_whose_session_alone_dropped_is_taken_again(url):
    ledger, _ = lease_session_killed(url, take_it=False)
    try:
        assert ledger.write(batch_of("e-again")) is True
        assert kit.ledger(url).events()["event_id"].tolist() == ["e-again"]
    finally:
        ledger._lease.release()
        ledger.close()


def test_kit_run_records_a_notebook_in_postgresql_and_keeps_the_password_out_of_it(postgres_server, tmp_path,
                                                                                   monkeypatch):
    secret = "n0tebook-pw"
    url = fresh_database(postgres_server, "run").replace("kit@", f"kit:{secret}@")
    monkeypatch.chdir(tmp_path)
    momentum = ROOT / "notebooks" / "momentum.ipynb"
    for _ in range(2):  # the second run of the key resumes it: nothing sent twice
        assert cli.main(["--db", url, "run", str(momentum), "-p", "broker", "mock", "--run-key", "nb"]) == 0
    ledger = kit.ledger(url)
    (run,) = ledger.runs().to_dict("records")
    assert run["run_key"] == "nb" and run["status"] == "done"
    orders = ledger.orders(run["run_id"])
    assert len(orders) > 0 and (ledger.events(run["run_id"])["kind"] == "submitted").sum() == len(orders)
    assert json.loads(run["parameters"])["db"] == url.replace(f":{secret}", "")  # the kernel's KIT_DB
    output = Path(run["output_path"]).read_text()
    assert secret not in output and secret not in run["parameters"]


def test_reconcile_and_cancel_say_the_same_on_both_ledgers(url, tmp_path, capsys):
    """A run left with a working order: `kit reconcile` and `kit cancel` read either ledger alike."""
    said = []
    for db in (str(tmp_path / "kit.duckdb"), url):
        targets = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [10, 5],
                   "order_type": ["LMT", "MKT"], "limit_price": [50.0, None]}
        run = kit.execute(pd.DataFrame(targets), broker=MockBroker(PRICES), run_key="left", db=db,
                          progress=False, timeout=0.3, on_timeout="leave")
        assert sorted(run.orders["status"]) == ["FILLED", "SUBMITTED"]
        capsys.readouterr()
        codes = [cli.main(["--db", db, "reconcile", "--run", "left"]),
                 cli.main(["--db", db, "cancel", "--all"])]
        captured = capsys.readouterr()
        said.append((codes, captured.out.replace(db, "DB"), captured.err.replace(db, "DB")))
        assert kit.ledger(db).orders()["status"].tolist() == ["SUBMITTED", "FILLED"]  # never called cancelled
    assert said[0] == said[1]
    assert "left-AAPL-BUY" in said[0][1]


@pytest.fixture(scope="module")
def twin_ledgers(postgres_server, tmp_path_factory) -> tuple[Path, str]:
    """A DuckDB file and a PostgreSQL database, each a fresh ledger, for the property below."""
    pair = (tmp_path_factory.mktemp("twin") / "kit.duckdb", fresh_database(postgres_server, "twin"))
    for db in pair:
        Ledger(db).open().close()
    return pair


def _fill_rows():
    import hypothesis.strategies as st

    text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
    number = st.floats(allow_nan=False, allow_infinity=False, width=64)
    return st.fixed_dictionaries({
        "exec_id": st.uuids().map(str), "client_order_id": text, "run_id": text, "symbol": text,
        "side": st.sampled_from(["BUY", "SELL"]), "quantity": number, "price": number,
        "commission": st.none() | st.just(float("nan")) | number, "currency": st.none() | text,
        "exchange": text, "time": st.datetimes(), "execution_key": st.none() | text,
        "revision": st.integers(-(2**63), 2**63 - 1)})


@pytest.mark.parametrize("_", [None])  # pytest gives the module fixture to a hypothesis test this way
def test_a_batch_reads_back_the_same_from_either_ledger(twin_ledgers, _):
    import hypothesis.strategies as st
    from hypothesis import HealthCheck, given, settings

    from kit.store import Batch

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(_fill_rows(), min_size=1, max_size=6, unique_by=lambda r: r["exec_id"]))
    def written_alike(rows):
        read = []
        for db in twin_ledgers:
            with Ledger(db).open() as ledger:
                assert ledger.write(Batch(fills={r["exec_id"]: r for r in rows})) is True
            every = kit.ledger(db).fills()
            read.append(every[every["exec_id"].isin([r["exec_id"] for r in rows])].sort_values("exec_id")
                        .reset_index(drop=True))
        pd.testing.assert_frame_equal(read[0], read[1])
        nulls = [r["exec_id"] for r in rows if r["commission"] is None or r["commission"] != r["commission"]]
        assert sorted(read[1].loc[read[1]["commission"].isna(), "exec_id"]) == sorted(nulls)

    written_alike()
