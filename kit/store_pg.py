"""The PostgreSQL ledger: the same tables, migrations and guarantees as the DuckDB file, shared by machines.

`KIT_DB=postgresql://user@host/dbname` (or `db=` / kit.toml) makes `kit.store.Ledger` this class, so every
caller works unchanged. What each guarantee rests on (docs/scaling.md has the whole account):

- Schema: kit.store.MIGRATIONS, the one list, translated to PostgreSQL's dialect statement by statement
  (`postgres_ddl`), applied in one transaction under a transaction-level advisory lock, so two processes
  migrating a new database at once apply each migration once. A database with tables of its own and no
  kit_schema is refused untouched; so is a ledger newer than this kit.
- Writes: one transaction per Batch with Batch's meaning (events insert-or-ignore, fills and orders
  insert-or-replace by key, replaced fills deleted, runs updated, new runs insert-or-ignore); each table's
  rows go in one statement (unnest of one text array per column, cast to the column's type), so a batch
  costs a few round trips whatever its size. A COMMIT that returns is durable (synchronous_commit), so the
  write-ahead `submitted` event is recorded before its order goes out, as with DuckDB.
- Server unreachable: the batch goes to a journal on this machine (kit.journal; one file per server and
  database under journal_dir, named by the URL without its password), fsynced, and every later batch
  follows it there until a reconnect replays the journal in order. Replay is idempotent, which also
  covers a COMMIT whose answer was lost with the connection.
- Reads: the rows a query needs (the tables it names; one run's rows when a method reads one run) are
  loaded into an in-memory DuckDB with the same schema, the journal's batches applied on top, and kit's
  (DuckDB-dialect) SQL runs there unchanged. A run starts only with the server reachable: it must read what
  its run key already holds.
- One process per run key across machines: kit.runlease, a session-level advisory lock.

The password is never printed: messages show the URL without it (kit.config.redacted) and scrub it from
the server's errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import duckdb
import pandas as pd

from kit.config import journal_dir, ledger_target, redacted, setting, url_password
from kit.crashpoints import crash_point
from kit.errors import KitError, LedgerBusyError, LedgerIdentityError, LedgerWriteError
from kit.journal import Journal
from kit.store import (
    CACHE_COLUMNS,
    EVENT_COLUMNS,
    FILL_COLUMNS,
    LEDGER_TABLES,
    LEGACY_FILL_KEYS,
    MIGRATIONS,
    ORDER_COLUMNS,
    RUN_COLUMNS,
    Batch,
    Ledger,
    apply_batch,
    kit_tables,
)

try:
    import psycopg
    import psycopg.errors
except ImportError as exc:  # pragma: no cover - the postgres extra is not installed
    raise KitError("a PostgreSQL ledger needs psycopg: pip install 'kit[postgres]'") from exc

log = logging.getLogger("kit.ledger")

# DuckDB's spelling -> PostgreSQL's, for the types and functions kit's migrations use (plain portable DDL
# otherwise: CREATE TABLE, ALTER TABLE ... ADD COLUMN, VARCHAR, BIGINT, BOOLEAN, TIMESTAMP pass as they are).
_DIALECT = (
    (re.compile(r"\bDOUBLE\b(?!\s+PRECISION)", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bFLOAT\b", re.IGNORECASE), "REAL"),  # DuckDB's FLOAT is 4 bytes; PostgreSQL's is 8
    (re.compile(r"\bTINYINT\b", re.IGNORECASE), "SMALLINT"),
    (re.compile(r"\bUBIGINT\b", re.IGNORECASE), "NUMERIC(20)"),
    (re.compile(r"\bHUGEINT\b", re.IGNORECASE), "NUMERIC(39)"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
    (re.compile(r"\buuid\(\)", re.IGNORECASE), "gen_random_uuid()"),
)
# LEGACY_FILL_KEYS in PostgreSQL's regex functions (bigger numbers than BIGINT holds get revision 0, as
# DuckDB's TRY_CAST gives them).
LEGACY_FILL_KEYS_PG = r"""UPDATE fills SET
    execution_key = CASE WHEN exec_id ~ '^.+\.[0-9]+$'
                    THEN substring(exec_id from '^(.+)\.[0-9]+$') ELSE exec_id END,
    revision = CASE WHEN exec_id ~ '^.+\.[0-9]+$'
               THEN coalesce(CAST(substring(exec_id from '\.([0-9]{1,18})$') AS BIGINT), 0)
               ELSE 0 END
    WHERE execution_key IS NULL"""
# Any constant would do; it only has to differ from the run keys' lease ids (kit.runlease hashes those).
MIGRATION_LOCK = 0x6B6974_6D696772  # "kit migr"
CONNECT_TIMEOUT = 3  # seconds: a write waits at most this long for an unreachable server before journaling
# Seconds a write waits for a table another session has locked (a maintenance job's LOCK TABLE, a long
# ALTER) before its batch goes to the journal, as it does while another process holds a DuckDB file.
WRITE_LOCK_WAIT = 1.0
# Seconds between attempts to reach the server again while batches go to the journal: doubling after each
# failed attempt up to the maximum, since an attempt at an unreachable host blocks the run for up to
# CONNECT_TIMEOUT (a stopped server refuses at once).
RECONNECT_FIRST, RECONNECT_MAX = 1.0, 16.0
KEYS = {"runs": "run_id", "orders": "client_order_id", "fills": "exec_id", "order_events": "event_id"}
# Journaled records the server refuses (a record of the wrong shape): set aside, never a reason to stop.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError, KeyError, TypeError,
            ValueError, AttributeError)
_SNAPSHOT_REFUSED = (duckdb.Error, KeyError, TypeError, ValueError, AttributeError)


class LeaseLost(Exception):
    """The run's lease was not held when a batch was about to commit (the batch was rolled back)."""


def postgres_ddl(statement: str) -> str:
    """One statement of kit.store.MIGRATIONS in PostgreSQL's dialect."""
    if statement == LEGACY_FILL_KEYS:
        return LEGACY_FILL_KEYS_PG
    for pattern, replacement in _DIALECT:
        statement = pattern.sub(replacement, statement)
    return statement


def _text(value: Any) -> str | None:
    """A value as PostgreSQL's text input for its column: NaN/NaT as NULL (as the DuckDB ledger stores
    them), an aware time in UTC, a mapping as JSON; float's repr reads back exactly."""
    if value is None or value != value:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))  # a whole number read back as float (a nullable column) fits a BIGINT too
    return str(value)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, str) else value  # a StrEnum as its text


class Location:
    """What `Ledger.path` is for a server: prints as the URL without its password; exists() says whether
    the database holds a kit ledger (or this machine's journal holds batches for it)."""

    def __init__(self, ledger: PgLedger):
        self._ledger = ledger

    def exists(self) -> bool:
        try:
            with self._ledger._session() as con:
                return "kit_schema" in _tables(con)
        except psycopg.OperationalError:
            return self._ledger.journal.pending() > 0

    def __str__(self) -> str:
        return self._ledger.shown

    def __repr__(self) -> str:
        return f"Location({self._ledger.shown!r})"

    def __fspath__(self) -> str:  # never a file: a clear error rather than a path named like a URL
        raise TypeError(f"the ledger {self._ledger.shown} is a PostgreSQL database, not a file")


def _tables(con: psycopg.Connection) -> set[str]:
    return {name for (name,) in con.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}


class PgLedger(Ledger):
    """A kit ledger in a PostgreSQL database (see the module's docstring). Same interface as the DuckDB
    Ledger; `con` is the writer's psycopg connection."""

    def __init__(self, db: str | None = None):  # Ledger.__new__ sends URLs here
        self.url = str(ledger_target(db))
        self.shown = redacted(self.url)
        self._password = url_password(self.url)
        self.path = Location(self)  # type: ignore[assignment]
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", self.shown.split("://", 1)[1])[:60].strip("-")
        digest = hashlib.sha256(self.shown.encode()).hexdigest()[:12]
        self.journal = Journal(journal_dir() / f"{name}-{digest}.journal")
        self.holder = ""
        self.journal_reason = ""
        self._con: psycopg.Connection | None = None  # type: ignore[assignment]
        self._next_attempt = 0.0
        self._retry_in = RECONNECT_FIRST
        self._opened = False
        self._marker: str | None = None  # the ledger's kit_ledger id at first connect
        self._types: dict[str, dict[str, str]] = {}  # table -> column -> PostgreSQL type, for the casts
        self._lease: Any = None  # the run's kit.runlease.RunLease while it holds one
        self._filter = threading.local()  # the run a read method is about, if any (see _only)

    # ---- connections -------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """A server or driver message without the password, should it echo the connection string."""
        return text.replace(self._password, "***") if self._password else text

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return f"is held by another session (a table stayed locked for over {WRITE_LOCK_WAIT:g}s)"
        return self.scrub(" ".join(str(exc).split()))

    _refusal = _reason  # the server's words on one line, without the password

    def connect(self, **options: Any) -> psycopg.Connection:
        """A new autocommit session in UTC, with keepalives so a lost server is noticed in seconds."""
        con = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, keepalives=1,
                              keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                              tcp_user_timeout=15000, **{"application_name": "kit ledger", **options})
        con.execute("SET TIME ZONE 'UTC'")
        con.execute(f"SET lock_timeout = {round(WRITE_LOCK_WAIT * 1000)}")
        return con

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """A reader's session: it waits for a locked table as long as a DuckDB read waits for the file."""
        con = self.connect()
        con.execute(f"SET lock_timeout = {round(float(setting('KIT_LEDGER_READ_WAIT', 10)) * 1000)}")
        try:
            yield con
        finally:
            con.close()

    # ---- writer side -------------------------------------------------------------------------------
    def open(self, wait: float | None = None) -> PgLedger:
        """Connect for writing: check the database is a kit ledger, migrate it, replay this machine's journal.
        The server must answer now: a run reads what its run key already holds before it sends anything."""
        try:
            self._connect()
        except psycopg.OperationalError as exc:
            raise LedgerBusyError(f"cannot reach the ledger {self.shown}: {self._reason(exc)}; nothing was "
                                  "sent. Start the run again when the server answers") from None
        self._opened = True
        return self

    def _connect(self) -> bool:
        con = self.connect()
        try:
            version = self._kind(con)
            if self._marker is not None and version == 0:
                raise LedgerIdentityError(
                    f"the ledger {self.shown} lost its tables during this run; kit does not create an empty "
                    "one in its place. Restore it and run the key again (the broker decides what was sent)")
            if version < len(MIGRATIONS):
                self._migrate(con)
            self._remember(con.execute("SELECT min(id) FROM kit_ledger").fetchone()[0])
            self._types = self._column_types(con)
            if self._lease is not None:
                self._lease.ensure()  # a server restart ended the lease's session with every other one
        except BaseException:
            con.close()
            raise
        self._con = con
        try:
            self._replay_journal(con)
        except BaseException:
            self._drop()
            raise
        self.journal_reason = ""
        self._retry_in = RECONNECT_FIRST
        return True

    KIND = ("a PostgreSQL database", "a new database")
    # What the journal's replay (Ledger._replay_journal) tells apart, in PostgreSQL's terms: a lost server
    # keeps every record in the journal; a record of the wrong shape is set aside.
    JOURNAL_KEEPS = (psycopg.OperationalError,)
    JOURNAL_REFUSED = _REFUSED
    JOURNAL_LEGACY_FILL_KEYS = LEGACY_FILL_KEYS_PG

    @staticmethod
    def _table_names(con: Any) -> set[str]:
        return _tables(con)

    def _migrate(self, con: psycopg.Connection) -> None:  # type: ignore[override]
        """Every missing migration in one transaction, under a lock: a second process migrating at the same
        moment waits, then finds the schema current and applies nothing."""
        with con.transaction():
            con.execute("SET LOCAL lock_timeout = '60s'")  # ALTER TABLE waits for running batches to commit
            con.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            current = self._kind(con)
            con.execute("CREATE TABLE IF NOT EXISTS kit_schema (version INTEGER, applied_at TIMESTAMP)")
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    con.execute(postgres_ddl(statement))
                con.execute("INSERT INTO kit_schema VALUES (%s, now()::TIMESTAMP)", [version])

    def _remember(self, marker: str | None) -> None:
        if self._marker is None:
            self._marker = marker
        elif marker != self._marker:
            raise LedgerIdentityError(
                f"the ledger {self.shown} is not the one this run opened (its marker was {self._marker}, now "
                f"{marker}); kit stops rather than write this run into another ledger")

    @staticmethod
    def _column_types(con: psycopg.Connection) -> dict[str, dict[str, str]]:
        rows = con.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = current_schema()::regnamespace "
            "AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped").fetchall()
        types: dict[str, dict[str, str]] = {}
        for table, column, kind in rows:
            types.setdefault(table, {})[column] = kind
        return types

    def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(psycopg.Error):
                con.close()

    def release(self) -> None:
        """Nothing to let go of: PostgreSQL lets many sessions write at once (DuckDB's file does not)."""

    def close(self) -> None:
        """Disconnect; a run that journaled tries the server once more first, so that its batches are not
        left waiting for the next writer or reader when the server is back already."""
        if self._opened and not self.connected and self.journal.pending():
            with contextlib.suppress(psycopg.OperationalError, KitError):  # they wait for the next writer
                self._connect()
        self._drop()
        self._opened = False

    def lease(self, run_key: str) -> Any:
        from kit.runlease import RunLease

        return RunLease(self, run_key)

    @property
    def connected(self) -> bool:
        return self._con is not None and not self._con.closed

    @property
    def con(self) -> psycopg.Connection:  # type: ignore[override]
        if not self.connected:
            try:
                self._connect()
            except psycopg.OperationalError as exc:
                raise LedgerBusyError(f"cannot reach the ledger {self.shown}: {self._reason(exc)}") from None
        assert self._con is not None
        return self._con

    def write(self, batch: Batch) -> bool:
        """One transaction for the whole batch. While the server cannot be reached the batch goes to the
        journal instead, durably, and False says so; LedgerWriteError if the journal cannot take it."""
        failure = ""
        if not self.connected and time.monotonic() >= self._next_attempt:
            try:
                self._connect()
            except psycopg.OperationalError as exc:
                failure = self._reason(exc)
                self._drop()
                self._next_attempt = time.monotonic() + self._retry_in
                self._retry_in = min(self._retry_in * 2, RECONNECT_MAX)
        if self.connected:
            try:
                self._apply(batch)
                return True
            except psycopg.errors.UndefinedTable as exc:
                self._drop()
                raise LedgerIdentityError(
                    f"the ledger {self.shown} lost its tables during this run ({self._reason(exc)}); kit "
                    "stops rather than write this run anywhere else. Restore it and run the key again (the "
                    "broker decides what was sent)") from None
            except psycopg.OperationalError as exc:  # the commit's fate may be unknown: replay is idempotent
                failure = self._reason(exc)
                self._drop()
                self._next_attempt = time.monotonic() + RECONNECT_FIRST
        if failure:
            held = failure.startswith("is held")
            self.journal_reason = failure if held else f"could not be reached ({failure})"
            log.error("could not write a batch to the ledger %s: %s", self.shown, failure)
        try:
            self.journal.append(batch.to_record())
        except LedgerWriteError as exc:
            why = failure or "the server is unreachable"
            raise LedgerWriteError(f"could not write a batch to the ledger {self.shown} ({why}); nor to its "
                                   f"journal: {exc}") from exc
        return False

    def _apply(self, batch: Batch) -> None:
        try:
            self._apply_fenced(batch)
        except LeaseLost:
            self._lease.ensure()  # its session alone dropped (a network blip): take it again, or stop
            try:
                self._apply_fenced(batch)
            except LeaseLost:
                key = self._lease.run_key
                raise LedgerIdentityError(f"this run no longer holds its lease on run_key {key!r}; kit stops "
                                          "writing (and sending)") from None

    def _apply_fenced(self, batch: Batch) -> None:
        """The batch in one transaction that commits only while the run's lease is still held, so a run
        whose lease ended (and that another process may have taken) records no send and so sends nothing."""
        con = self.con
        with con.transaction(), con.cursor() as cur:
            if self._lease is not None and not cur.execute(*self._lease.held_sql()).fetchone()[0]:
                raise LeaseLost
            for row in batch.new_runs.values():
                columns = [c for c in RUN_COLUMNS if c in row]
                marks = ", ".join(["%s"] * len(columns))
                cur.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({marks}) "
                            "ON CONFLICT DO NOTHING", [_plain(row[c]) for c in columns])
            if batch.events:
                self._rows(cur, "order_events", EVENT_COLUMNS, batch.events, replace=False)
            crash_point("ledger.mid_write")
            if batch.replaced_fills:
                cur.execute("DELETE FROM fills WHERE exec_id = ANY(%s::text[])",
                            [sorted(batch.replaced_fills)])
            if batch.fills:
                self._rows(cur, "fills", FILL_COLUMNS, list(batch.fills.values()), replace=True)
            if batch.orders:
                self._rows(cur, "orders", ORDER_COLUMNS, list(batch.orders.values()), replace=True)
            for run_id, values in batch.runs.items():
                assignments = ", ".join(f'"{name}" = %s' for name in values)
                cur.execute(f"UPDATE runs SET {assignments} WHERE run_id = %s",
                            [*map(_plain, values.values()), run_id])
        crash_point("ledger.committed")

    def _rows(self, cur: psycopg.Cursor, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]],
              replace: bool) -> None:
        """All of a table's rows in one statement: one text array per column, cast to the column's type."""
        types = self._types[table]
        names = ", ".join(f'"{c}"' for c in columns)
        casts = ", ".join(f'u."{c}"::{types[c]}' for c in columns)
        arrays = ", ".join(["%s::text[]"] * len(columns))
        conflict = "DO NOTHING"
        if replace:
            conflict = f'("{columns[0]}") DO UPDATE SET ' + ", ".join(f'"{c}" = EXCLUDED."{c}"'
                                                                      for c in columns[1:])
        cur.execute(f"INSERT INTO {table} ({names}) SELECT {casts} FROM unnest({arrays}) AS u({names}) "
                    f"ON CONFLICT {conflict}", [[_text(row.get(c)) for row in rows] for c in columns])

    # ---- reads the run itself needs, on the server ---------------------------------------------------
    def _write_cache(self, broker: str, keys: list[str], rows: list[list[Any]]) -> bool:
        """The contract cache on the server: replaced per request key in one transaction, best effort."""
        try:
            with self.con.transaction():
                self.con.execute("DELETE FROM contract_cache WHERE broker = %s AND request_key = ANY(%s)",
                                 [broker, keys])
                names = ", ".join(f'"{c}"' for c in CACHE_COLUMNS)
                with self.con.cursor() as cur:
                    cur.executemany(f"INSERT INTO contract_cache ({names}) VALUES "
                                    f"({', '.join('%s' for _ in CACHE_COLUMNS)})", rows)
            return True
        except (psycopg.Error, KitError) as exc:
            log.info("contract cache not written: %s", self.scrub(str(exc)))
            return False

    def next_seq(self, run_id: str) -> int:
        with self._reading_session() as con:
            seq = con.execute("SELECT coalesce(max(seq), 0) FROM order_events WHERE run_id = %s",
                              [run_id]).fetchone()[0]
        for record in self.journal.records():  # batches of this run still waiting to be written
            seq = max([seq, *(e["seq"] for e in Batch.from_record(record).events if e["run_id"] == run_id)])
        return int(seq) + 1

    def owners(self, client_order_ids: list[str], run_id: str) -> dict[str, str]:
        with self._reading_session() as con:
            rows = con.execute("SELECT client_order_id, run_id FROM orders WHERE client_order_id = ANY("
                               "%s::text[]) AND run_id <> %s", [list(client_order_ids), run_id]).fetchall()
        return dict(rows)

    @contextmanager
    def _reading_session(self) -> Iterator[psycopg.Connection]:
        try:
            with self._session() as con:
                yield con
        except psycopg.OperationalError as exc:
            raise LedgerBusyError(f"cannot reach the ledger {self.shown}: {self._reason(exc)}") from None

    # ---- reads through an in-memory DuckDB -----------------------------------------------------------
    @contextmanager
    def _only(self, run_id: str | None) -> Iterator[None]:
        """Reads in this block load only `run_id`'s rows of the ledger tables (they all carry run_id)."""
        previous = getattr(self._filter, "run_id", None)
        self._filter.run_id = run_id
        try:
            yield
        finally:
            self._filter.run_id = previous

    @contextmanager
    def reading(self, tables: list[str] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB holding `tables` (default: all of kit's) as the server has them (one run's
        rows inside `_only`), with this machine's journal applied on top, so kit's DuckDB SQL runs as is."""
        if self.journal.pending() and not self.connected:
            with contextlib.suppress(psycopg.OperationalError, LedgerBusyError):
                probe = PgLedger(self.url)  # a cut-off run left batches: written first if the server answers
                probe._connect()
                probe.close()
        run_id = getattr(self._filter, "run_id", None)
        con = duckdb.connect()
        try:
            for migration in MIGRATIONS:
                for statement in migration:
                    con.execute(statement)
            con.execute("DELETE FROM kit_ledger")
            con.execute("CREATE TABLE kit_schema (version INTEGER, applied_at TIMESTAMP)")
            self._load(con, [*kit_tables(), "kit_schema"] if tables is None else tables, run_id)
            journaled: list[str] = []
            for record in self.journal.records():
                with contextlib.suppress(*_SNAPSHOT_REFUSED):  # the next writer sets such a record aside
                    batch = Batch.from_record(record)
                    apply_batch(con, batch)
                    journaled += batch.fills
            if journaled:  # fills of a journal older than execution keys (the server's rows have theirs)
                con.execute(LEGACY_FILL_KEYS + " AND exec_id IN (SELECT unnest(?))", [journaled])
            yield con
        finally:
            con.close()

    def _load(self, con: duckdb.DuckDBPyConnection, tables: list[str], run_id: str | None) -> None:
        try:
            with self._session() as pg:
                present = _tables(pg)
                if "kit_schema" not in present:
                    raise KitError(f"no ledger at {self.shown}: run something first, or set KIT_DB")
                for table in tables:
                    if table not in present:
                        continue
                    wanted = [d[0] for d in con.execute(f'SELECT * FROM "{table}" LIMIT 0').description]
                    theirs = {c for (c,) in pg.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                        "current_schema() AND table_name = %s", [table]).fetchall()}
                    columns = [c for c in wanted if c in theirs]
                    where, params = ("", [])
                    if run_id is not None and table in LEDGER_TABLES:
                        where, params = " WHERE run_id = %s", [run_id]
                    names = ", ".join(f'"{c}"' for c in columns)
                    rows = pg.execute(f'SELECT {names} FROM "{table}"{where}', params).fetchall()
                    if rows:
                        con.register("_kit_rows", pd.DataFrame.from_records(rows, columns=columns))
                        con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _kit_rows')
                        con.unregister("_kit_rows")
        except psycopg.OperationalError as exc:
            pending = self.journal.pending()
            raise LedgerBusyError(
                f"cannot reach the ledger {self.shown}: {self._reason(exc)}"
                + (f" ({pending} batch(es) wait in {self.journal.path})" if pending else "")) from None

    def _referenced(self, sql: str) -> list[str]:
        words = {w.lower() for w in re.findall(r"\w+", sql)}
        return [t for t in [*kit_tables(), "kit_schema"] if t in words]

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with self.reading(self._referenced(sql)) as con:
            return con.execute(sql, params or []).df()

    def _records(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self.reading(self._referenced(sql)) as con:
            cursor = con.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _table(self, table: str, order_by: str, run_id: str | None) -> pd.DataFrame:
        with self._only(run_id):
            return super()._table(table, order_by, run_id)

    def load_orders(self, run_id: str) -> list[Any]:
        with self._only(run_id):
            return super().load_orders(run_id)

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        with self._only(run_id):
            return super().run_row(run_id)

    def legs(self, run_id: str) -> dict[tuple[str, str], int]:
        with self._only(run_id):
            return super().legs(run_id)
