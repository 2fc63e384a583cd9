"""The DuckDB ledger: runs, orders, fills and the append-only order_events trail.

Writes come in batches (one transaction per batch of events), never one commit per row, so a burst of
fills costs one commit. Reads return DataFrames and hold the file only for the duration of a query, so a
review notebook does not lock out the next run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pandas as pd

from kit.config import db_path, setting
from kit.crashpoints import crash_point
from kit.errors import KitError, LedgerBusyError
from kit.journal import Journal
from kit.model import OPEN_STATUSES, Fill, Order, OrderIntent, Side, Status

log = logging.getLogger("kit.ledger")

# Fills written before the ledger stored execution keys (schema 1, or a journal of that time) came with
# kit's one id rule then, "<key>.<revision>": it is applied to them once, here, and nowhere else.
LEGACY_FILL_KEYS = r"""UPDATE fills SET
    execution_key = CASE WHEN regexp_matches(exec_id, '^.+\.[0-9]+$')
                    THEN regexp_extract(exec_id, '^(.+)\.[0-9]+$', 1) ELSE exec_id END,
    revision = CASE WHEN regexp_matches(exec_id, '^.+\.[0-9]+$')
               THEN coalesce(TRY_CAST(regexp_extract(exec_id, '\.([0-9]+)$', 1) AS BIGINT), 0)
               ELSE 0 END
    WHERE execution_key IS NULL"""

# Each migration moves the schema one version forward; a ledger is never migrated backwards.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, run_key VARCHAR UNIQUE NOT NULL, notebook VARCHAR,
            notebook_hash VARCHAR, parameters VARCHAR, broker VARCHAR, account VARCHAR, status VARCHAR,
            started_at TIMESTAMP, ended_at TIMESTAMP, error_name VARCHAR, error VARCHAR,
            git_revision VARCHAR, kit_version VARCHAR, output_path VARCHAR)""",
        """CREATE TABLE orders (
            client_order_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, symbol VARCHAR, side VARCHAR,
            quantity DOUBLE, order_type VARCHAR, limit_price DOUBLE, tif VARCHAR, sec_type VARCHAR,
            exchange VARCHAR, currency VARCHAR, primary_exchange VARCHAR, status VARCHAR,
            filled_quantity DOUBLE, remaining_quantity DOUBLE, avg_fill_price DOUBLE, commission DOUBLE,
            broker_order_id VARCHAR, perm_id VARCHAR, reason VARCHAR, decision_price DOUBLE,
            arrival_price DOUBLE, submitted_at TIMESTAMP, created_at TIMESTAMP, updated_at TIMESTAMP)""",
        """CREATE TABLE fills (
            exec_id VARCHAR PRIMARY KEY, client_order_id VARCHAR NOT NULL, run_id VARCHAR, symbol VARCHAR,
            side VARCHAR, quantity DOUBLE, price DOUBLE, commission DOUBLE, currency VARCHAR,
            exchange VARCHAR, time TIMESTAMP)""",
        """CREATE TABLE order_events (
            event_id VARCHAR PRIMARY KEY, run_id VARCHAR, client_order_id VARCHAR, seq BIGINT,
            "at" TIMESTAMP, kind VARCHAR, status VARCHAR, detail VARCHAR)""",
    ],
    [
        # Which fills are revisions of one execution is the broker's to say (Fill.key, Fill.revision), so
        # the ledger stores it instead of re-deriving it from exec ids.
        "ALTER TABLE fills ADD COLUMN execution_key VARCHAR",
        "ALTER TABLE fills ADD COLUMN revision BIGINT",
        LEGACY_FILL_KEYS,
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

ORDER_COLUMNS = (
    "client_order_id", "run_id", "symbol", "side", "quantity", "order_type", "limit_price", "tif",
    "sec_type", "exchange", "currency", "primary_exchange", "status", "filled_quantity",
    "remaining_quantity", "avg_fill_price", "commission", "broker_order_id", "perm_id", "reason",
    "decision_price", "arrival_price", "submitted_at", "created_at", "updated_at",
)
FILL_COLUMNS = (
    "exec_id", "client_order_id", "run_id", "symbol", "side", "quantity", "price", "commission",
    "currency", "exchange", "time", "execution_key", "revision",
)
EVENT_COLUMNS = ("event_id", "run_id", "client_order_id", "seq", "at", "kind", "status", "detail")
RUN_COLUMNS = (
    "run_id", "run_key", "notebook", "notebook_hash", "parameters", "broker", "account", "status",
    "started_at", "ended_at", "error_name", "error", "git_revision", "kit_version", "output_path",
)


_TIMES = {"submitted_at", "created_at", "updated_at", "time", "started_at", "ended_at"}
_NUMBERS = {"quantity", "limit_price", "filled_quantity", "remaining_quantity", "avg_fill_price",
            "commission", "decision_price", "arrival_price", "price"}
_INTEGERS = {"revision", "seq"}
Row = dict[str, Any]  # one row of a table, by column name


def frame(rows: list[Row], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a DataFrame with the dtypes a ledger read gives, so a run's tables look the same either way."""
    result = pd.DataFrame.from_records(rows, columns=list(columns))
    dtypes = {c: "datetime64[us]" if c in _TIMES else "float64" if c in _NUMBERS else
              "int64" if c in _INTEGERS else "str" for c in columns}
    return result.astype(dtypes)


def sql_list(values: frozenset[str] | set[str]) -> str:
    """A SQL IN list of string constants, sorted so the SQL text is stable: ('a', 'b')."""
    return "(" + ", ".join(f"'{value}'" for value in sorted(values)) + ")"


# Order.at_broker and Order.working, in the orders table's terms: the ledger's queries use these.
AT_BROKER_SQL = "(submitted_at IS NOT NULL OR filled_quantity > 0)"
WORKING_SQL = f"({AT_BROKER_SQL} AND status IN {sql_list(OPEN_STATUSES)})"


def working_mask(orders: pd.DataFrame) -> pd.Series:
    """Order.working for the rows of an orders frame (a ledger read or Run.orders)."""
    at_broker = orders["submitted_at"].notna() | (orders["filled_quantity"] > 0)
    return at_broker & orders["status"].isin(OPEN_STATUSES)


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def _order_from_row(row: dict[str, Any], fills: list[Fill]) -> Order:
    intent = OrderIntent(
        client_order_id=row["client_order_id"], symbol=row["symbol"], side=Side(row["side"]),
        quantity=row["quantity"], order_type=row["order_type"], limit_price=_none(row["limit_price"]),
        tif=row["tif"], sec_type=row["sec_type"], exchange=row["exchange"], currency=row["currency"],
        primary_exchange=row["primary_exchange"], decision_price=_none(row["decision_price"]),
    )
    return Order(
        intent=intent, run_id=row["run_id"], created_at=row["created_at"], updated_at=row["updated_at"],
        status=Status(row["status"]), broker_order_id=row["broker_order_id"], perm_id=row["perm_id"],
        reason=row["reason"] or "", arrival_price=_none(row["arrival_price"]),
        submitted_at=row["submitted_at"], fills={f.execution_key: f for f in fills},
    )


@dataclass
class Batch:
    """Everything one flush writes, in one transaction. Rows are keyed by column name (kit.recorder)."""

    events: list[Row] = field(default_factory=list)
    orders: dict[str, Row] = field(default_factory=dict)  # latest row per order
    fills: dict[str, Row] = field(default_factory=dict)
    replaced_fills: set[str] = field(default_factory=set)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> columns to update

    def __bool__(self) -> bool:
        return bool(self.events or self.orders or self.fills or self.replaced_fills or self.runs)

    def to_record(self) -> dict[str, Any]:
        return {"events": self.events, "orders": list(self.orders.values()),
                "fills": list(self.fills.values()), "replaced_fills": sorted(self.replaced_fills),
                "runs": self.runs}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Batch:
        orders = [_by_name(o, ORDER_COLUMNS) for o in record["orders"]]
        fills = [_by_name(f, FILL_COLUMNS) for f in record["fills"]]
        return cls(events=[_by_name(e, EVENT_COLUMNS) for e in record["events"]],
                   orders={o["client_order_id"]: o for o in orders},
                   fills={f["exec_id"]: f for f in fills},
                   replaced_fills=set(record["replaced_fills"]), runs=record["runs"])

    def __len__(self) -> int:
        return len(self.events)


def _by_name(row: Row | list[Any], columns: tuple[str, ...]) -> Row:
    """A journaled row; a journal written by kit before rows had names holds lists in column order (and no
    execution key: LEGACY_FILL_KEYS gives its fills theirs once they are written)."""
    if isinstance(row, dict):
        return row
    return dict.fromkeys(columns) | dict(zip(columns, row, strict=False))


# A batch of up to this many rows per table goes in as one list per column (unnest) instead of a DataFrame:
# registering a DataFrame costs milliseconds however few its rows, which is most of a small batch's latency.
SMALL_BATCH = 256


def _quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)  # "at" is a DuckDB keyword


def _insert_small(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: list[Row],
                  replace: bool) -> None:
    """INSERT OR REPLACE / OR IGNORE of a few rows, keyed by the first column, with the same result as the
    DataFrame path: NaN is stored as NULL, a row replaces its key's row whole, a known key is skipped.
    DuckDB's ON CONFLICT costs more per statement than finding the keys first, so the keys are looked up
    (or deleted) and the rest is a plain INSERT."""
    key = columns[0]
    keys = [row[key] for row in rows]
    where = f"{key} IN ({', '.join('?' * len(keys))})"  # a list of values: looked up in the key's index
    if replace:
        con.execute(f"DELETE FROM {table} WHERE {where}", keys)
    else:
        taken = {k for (k,) in con.execute(f"SELECT {key} FROM {table} WHERE {where}", keys).fetchall()}
        fresh = []
        for row in rows:  # like OR IGNORE: the first of a repeated key wins
            if row[key] not in taken:
                taken.add(row[key])
                fresh.append(row)
        rows = fresh
        if not rows:
            return
    values = [[None if v != v else v for v in map(itemgetter(c), rows)] for c in columns]  # NaN -> NULL
    unnests = ", ".join(f"unnest(${i})" for i in range(1, len(columns) + 1))
    con.execute(f"INSERT INTO {table} ({_quoted(columns)}) SELECT {unnests}", values)


class Ledger:
    """One DuckDB file. Hold a Ledger open for a run; use `kit.ledger()` for short reads."""

    # Connections this process holds open for writing, so its own reads use them instead of failing.
    _writers: ClassVar[dict[Path, duckdb.DuckDBPyConnection]] = {}
    _writers_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db: str | Path | None = None):
        self.path = db_path(db).resolve()
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"))
        self.holder = ""
        self._con: duckdb.DuckDBPyConnection | None = None
        self._next_attempt = 0.0

    # ---- writer side -------------------------------------------------------------------------------
    def open(self, wait: float | None = None) -> Ledger:
        """Connect for writing, waiting up to `wait` seconds (KIT_LEDGER_WAIT, default 120) while another
        process holds the file, then replay anything a locked-out run left in the journal."""
        wait = float(setting("KIT_LEDGER_WAIT", 120)) if wait is None else wait
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline, delay = time.monotonic() + wait, 0.05
        while not self._connect():
            if time.monotonic() + delay > deadline:
                raise LedgerBusyError(f"{self.path} is held by another process ({self.holder}) and stayed "
                                      f"so for {wait:g}s; close it there (con.close()) and run again")
            log.warning("waiting for the ledger: %s is held by %s", self.path, self.holder)
            # DuckDB gives no notice when a lock is released: retrying with backoff is the only way to wait.
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        return self

    def _connect(self) -> bool:
        """Try once; False while another process holds the file. Replays the journal on success."""
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            self.holder = str(exc).split("held in", 1)[-1].split(". See", 1)[0].strip()
            return False
        self._con = con
        with Ledger._writers_lock:
            Ledger._writers[self.path] = con
        try:
            self._migrate()
            with self.journal.draining() as records:
                for record in records:
                    self._apply(Batch.from_record(record))
                if records:
                    self.con.execute(LEGACY_FILL_KEYS)  # fills of a journal older than execution keys
                    log.warning("wrote %d batch(es) that waited in %s", len(records), self.journal.path)
        except BaseException:
            self.close()  # a refused or failed ledger must not stay locked by this process
            raise
        return True

    def release(self) -> None:
        """Let other processes in while this run is idle; the next write connects again."""
        self.close()

    def close(self) -> None:
        if self._con is not None:
            with Ledger._writers_lock:
                Ledger._writers.pop(self.path, None)
            self._con.close()
            self._con = None

    def __enter__(self) -> Ledger:
        return self if self.connected else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._con is not None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The writer's connection, connecting again (and waiting if need be) after a release."""
        if self._con is None:
            self.open()
        assert self._con is not None
        return self._con

    def _migrate(self) -> None:
        con = self.con
        con.execute("CREATE TABLE IF NOT EXISTS kit_schema (version INTEGER, applied_at TIMESTAMP)")
        current = con.execute("SELECT coalesce(max(version), 0) FROM kit_schema").fetchone()[0]
        latest = len(MIGRATIONS)  # read now, not at import, so the list stays the one source of truth
        if current > latest:
            raise KitError(f"{self.path} has ledger schema {current}; this kit knows {latest}: upgrade kit")
        for version in range(current + 1, latest + 1):
            con.execute("BEGIN")
            try:
                for statement in MIGRATIONS[version - 1]:
                    con.execute(statement)
                con.execute("INSERT INTO kit_schema VALUES (?, now()::TIMESTAMP)", [version])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")  # a migration lands whole or not at all
                raise

    def schema_version(self) -> int:
        return self.con.execute("SELECT max(version) FROM kit_schema").fetchone()[0]

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        cursor = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    def insert_run(self, values: dict[str, Any]) -> None:
        columns = [c for c in RUN_COLUMNS if c in values]
        self.con.execute(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[c] for c in columns],
        )

    def update_run(self, run_id: str, **values: Any) -> None:
        self._apply(Batch(runs={run_id: values}))

    def load_orders(self, run_id: str) -> list[Order]:
        fills: dict[str, list[Fill]] = {}
        for row in self._records("SELECT * FROM fills WHERE run_id = ? ORDER BY time", [run_id]):
            fills.setdefault(row["client_order_id"], []).append(Fill(
                exec_id=row["exec_id"], client_order_id=row["client_order_id"], quantity=row["quantity"],
                price=row["price"], time=row["time"], commission=_none(row["commission"]),
                currency=row["currency"] or "", exchange=row["exchange"] or "", key=row["execution_key"],
                revision=row["revision"] or 0,
            ))
        return [
            _order_from_row(row, fills.get(row["client_order_id"], []))
            for row in self._records("SELECT * FROM orders WHERE run_id = ? ORDER BY created_at, "
                                     "client_order_id", [run_id])
        ]

    def owners(self, client_order_ids: list[str], run_id: str) -> dict[str, str]:
        """The ids among these that another run already holds: ids are keys across the whole ledger."""
        rows = self.con.execute("SELECT client_order_id, run_id FROM orders WHERE client_order_id IN "
                                "(SELECT unnest(?)) AND run_id <> ?", [client_order_ids, run_id]).fetchall()
        return dict(rows)

    def next_seq(self, run_id: str) -> int:
        return self.con.execute("SELECT coalesce(max(seq), 0) + 1 FROM order_events WHERE run_id = ?",
                                [run_id]).fetchone()[0]

    def _records(self, sql: str, params: list[Any]) -> Iterator[dict[str, Any]]:
        cursor = self.con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            yield dict(zip(names, row, strict=True))

    def write(self, batch: Batch) -> bool:
        """One transaction for the whole batch: all of it lands, or none of it. If another process holds
        the file, the batch goes to the journal instead (durably) and False says so."""
        if self._con is None:
            now = time.monotonic()
            connected = now >= self._next_attempt and self._connect()
            if not connected:
                self._next_attempt = now + 0.5  # an attempt on a locked file is cheap, but not free
                self.journal.append(batch.to_record())
                return False
        self._apply(batch)
        return True

    def _apply(self, batch: Batch) -> None:
        con = self.con
        con.execute("BEGIN")
        try:
            if batch.events:
                self._insert(con, "order_events", EVENT_COLUMNS, batch.events, "INSERT OR IGNORE")
            crash_point("ledger.mid_write")
            if batch.replaced_fills:
                con.execute("DELETE FROM fills WHERE exec_id IN (SELECT unnest(?))",
                            [sorted(batch.replaced_fills)])
            if batch.fills:
                self._insert(con, "fills", FILL_COLUMNS, list(batch.fills.values()), "INSERT OR REPLACE")
            if batch.orders:
                self._insert(con, "orders", ORDER_COLUMNS, list(batch.orders.values()), "INSERT OR REPLACE")
            for run_id, values in batch.runs.items():
                assignments = ", ".join(f"{name} = ?" for name in values)
                con.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        crash_point("ledger.committed")

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: list[Row],
                verb: str) -> None:
        if len(rows) <= SMALL_BATCH and verb in ("INSERT OR IGNORE", "INSERT OR REPLACE"):
            _insert_small(con, table, columns, rows, verb == "INSERT OR REPLACE")
            return
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        con.register("_kit_batch", frame)
        try:
            con.execute(f"{verb} INTO {table} ({_quoted(columns)}) SELECT * FROM _kit_batch")
        finally:
            con.unregister("_kit_batch")

    # ---- reader side -------------------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection: a cursor on this process's writer if it has one, else read-only."""
        with Ledger._writers_lock:
            writer = Ledger._writers.get(self.path)
            if writer is not None:
                cursor = writer.cursor()
        if writer is not None:
            try:
                yield cursor
            finally:
                cursor.close()
            return
        if not self.path.exists():
            raise KitError(f"no ledger at {self.path}: run something first, or set KIT_DB")
        if self.journal.pending():  # a locked-out run left batches: write them first, if the file is free
            with contextlib.suppress(LedgerBusyError):
                Ledger(self.path).open(wait=0).close()
        con = self._read_only()
        try:
            yield con
        finally:
            con.close()

    def _read_only(self) -> duckdb.DuckDBPyConnection:
        wait = float(setting("KIT_LEDGER_READ_WAIT", 10))
        deadline, delay = time.monotonic() + wait, 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=True)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() + delay > deadline:
                    raise LedgerBusyError(
                        f"the ledger {self.path} is in use by another process (a run in progress?); try "
                        f"again when it ends, or use another KIT_DB. DuckDB says: {exc}") from exc
            time.sleep(delay)  # no notice comes when DuckDB's lock is released; see Ledger.open
            delay = min(delay * 2, 1.0)

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with self.reading() as con:
            return con.execute(sql, params or []).df()

    def _table(self, table: str, order_by: str, run_id: str | None) -> pd.DataFrame:
        where, params = ("", []) if run_id is None else (" WHERE run_id = ?", [run_id])
        return self.query(f"SELECT * FROM {table}{where} ORDER BY {order_by}", params)

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY started_at")

    def orders(self, run_id: str | None = None) -> pd.DataFrame:
        return self._table("orders", "created_at, client_order_id", run_id)

    def fills(self, run_id: str | None = None) -> pd.DataFrame:
        return self._table("fills", "time, exec_id", run_id)

    def events(self, run_id: str | None = None) -> pd.DataFrame:
        return self._table("order_events", "seq", run_id)

    def book(self, broker: str) -> tuple[dict[str, float], dict[str, float]]:
        """Positions (signed fills) and working orders (signed remaining of orders handed to the broker) of
        every run on `broker`, from the ledger: how the mock broker, whose world does not outlive a process,
        keeps an account."""
        if not self.path.exists() and self._con is None:
            return {}, {}
        sign = "CASE o.side WHEN 'BUY' THEN 1 ELSE -1 END"
        positions = self.query(
            f"SELECT o.symbol, sum({sign} * o.quantity) FROM fills o JOIN runs r USING (run_id) "
            "WHERE r.broker = ? GROUP BY o.symbol", [broker])
        working = self.query(
            f"SELECT o.symbol, sum({sign} * o.remaining_quantity) FROM orders o WHERE o.run_id IN "
            f"(SELECT run_id FROM runs WHERE broker = ?) AND {WORKING_SQL} GROUP BY o.symbol", [broker])
        return ({str(k): float(v) for k, v in positions.itertuples(index=False) if v},
                {str(k): float(v) for k, v in working.itertuples(index=False) if v})

    def legs(self, run_id: str) -> dict[tuple[str, str], int]:
        """How many orders per (symbol, side) a run has sent, so re-planning numbers new ones after them
        (orders never sent are plans that re-planning replaces)."""
        if not self.path.exists() and self._con is None:
            return {}
        frame = self.query(f"SELECT symbol, side, count(*) FROM orders WHERE run_id = ? AND {AT_BROKER_SQL} "
                           "GROUP BY ALL", [run_id])
        return {(str(a), str(b)): int(n) for a, b, n in frame.itertuples(index=False)}

    def working_runs(self) -> list[str]:
        """Runs that still have orders at a broker: the kill switch's `--all`."""
        frame = self.query(f"SELECT DISTINCT run_id FROM orders WHERE {WORKING_SQL} ORDER BY run_id")
        return [str(r) for r in frame["run_id"]]

    def runs_sent_on(self, day: date) -> list[str]:
        """Runs with orders handed to a broker on `day` (UTC): what reconcile checks by default."""
        rows = self.con.execute("SELECT DISTINCT run_id FROM orders WHERE submitted_at >= ? AND submitted_at "
                                "< ? + INTERVAL 1 DAY ORDER BY run_id", [day, day]).fetchall()
        return [str(r) for (r,) in rows]

    def resolve_run(self, run: str | None) -> str:
        """A run id or a run key -> run id; None -> the latest run."""
        if run is None:
            frame = self.query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
        else:
            frame = self.query("SELECT run_id FROM runs WHERE run_id = ? OR run_key = ?", [run, run])
        if frame.empty:
            raise KitError(f"no run {run!r} in {self.path}" if run else f"no runs in {self.path}")
        return str(frame.iloc[0, 0])
