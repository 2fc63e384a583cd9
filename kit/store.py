"""The DuckDB ledger: runs, orders, fills and the append-only order_events trail.

Writes come in batches (one transaction per batch of events), never one commit per row, so a burst of
fills costs one commit. Reads return DataFrames and hold the file only for the duration of a query, so a
review notebook does not lock out the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pandas as pd

from kit.config import db_path, is_ledger_url, ledger_target, setting
from kit.crashpoints import crash_point
from kit.errors import KitError, LedgerBusyError, LedgerIdentityError, LedgerWriteError
from kit.instruments import Contract, cache_valid_until, instrument_key
from kit.journal import Journal
from kit.model import AMENDABLE_FIELDS, OPEN_STATUSES, Fill, Order, OrderIntent, Side, Status
from kit.order_types import order_type_fields

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
    [
        # The marker: a file is a kit ledger because it says so, and a run that reconnects checks by this id
        # that the file is still the ledger it started with.
        "CREATE TABLE kit_ledger (id VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)",
        "INSERT INTO kit_ledger VALUES (uuid()::VARCHAR, now()::TIMESTAMP)",
    ],
    [
        # The order types beyond MKT and LMT (kit.order_types): stops, trailing stops, pegs, algos, GTD.
        # algo_params is IB's (tag, value) pairs as a JSON object, in the algo's parameter order.
        "ALTER TABLE orders ADD COLUMN stop_price DOUBLE",
        "ALTER TABLE orders ADD COLUMN trail_amount DOUBLE",
        "ALTER TABLE orders ADD COLUMN trail_percent DOUBLE",
        'ALTER TABLE orders ADD COLUMN "offset" DOUBLE',
        "ALTER TABLE orders ADD COLUMN outside_rth BOOLEAN DEFAULT FALSE",
        "ALTER TABLE orders ADD COLUMN good_till TIMESTAMP",
        "ALTER TABLE orders ADD COLUMN algo VARCHAR DEFAULT ''",
        "ALTER TABLE orders ADD COLUMN algo_params VARCHAR",
    ],
    [
        # Instruments: what an order designates beyond a stock (kit.instruments), and the contract-details
        # cache, so a second run of the day qualifies nothing (the refresh rule:
        # kit.instruments.cache_valid_until).
        "ALTER TABLE orders ADD COLUMN expiry VARCHAR",
        "ALTER TABLE orders ADD COLUMN strike DOUBLE",
        'ALTER TABLE orders ADD COLUMN "right" VARCHAR',
        "ALTER TABLE orders ADD COLUMN multiplier DOUBLE",
        "ALTER TABLE orders ADD COLUMN con_id BIGINT",
        "ALTER TABLE orders ADD COLUMN local_symbol VARCHAR",
        """CREATE TABLE contract_cache (
            broker VARCHAR NOT NULL, request_key VARCHAR NOT NULL, con_id BIGINT, symbol VARCHAR,
            sec_type VARCHAR, currency VARCHAR, exchange VARCHAR, primary_exchange VARCHAR, expiry VARCHAR,
            last_trade_date VARCHAR, strike DOUBLE, "right" VARCHAR, multiplier DOUBLE, local_symbol VARCHAR,
            trading_class VARCHAR, min_tick DOUBLE, time_zone VARCHAR, trading_hours VARCHAR,
            fetched_at TIMESTAMP, valid_until TIMESTAMP, PRIMARY KEY (broker, request_key))""",
    ],
    [
        # Migration 6 (h-amend): an amended order's row shows its working terms in quantity, limit_price
        # (and stop_price); the planned ones stay here, NULL while the order was never amended.
        "ALTER TABLE orders ADD COLUMN original_quantity DOUBLE",
        "ALTER TABLE orders ADD COLUMN original_limit_price DOUBLE",
        "ALTER TABLE orders ADD COLUMN original_stop_price DOUBLE",
        "ALTER TABLE orders ADD COLUMN amendments BIGINT",
    ],
    [
        # Migration 7 (h-amend3): the planned tif, trail and offset of an order amended in them (kit.amend's
        # tif, trail_amount, trail_percent, offset), NULL while never amended, as migration 6's columns.
        "ALTER TABLE orders ADD COLUMN original_tif VARCHAR",
        "ALTER TABLE orders ADD COLUMN original_trail_amount DOUBLE",
        "ALTER TABLE orders ADD COLUMN original_trail_percent DOUBLE",
        "ALTER TABLE orders ADD COLUMN original_offset DOUBLE",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
LEDGER_TABLES = ("runs", "orders", "fills", "order_events")
_CREATED = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.IGNORECASE)


def kit_tables() -> list[str]:
    """Every table MIGRATIONS creates, in order: what a read of the PostgreSQL ledger may load."""
    return [m.group(1) for migration in MIGRATIONS for s in migration if (m := _CREATED.match(s))]

# What DuckDB raises when it cannot persist (a full or failing disk, a file it may not write), as opposed
# to a batch it refuses (a constraint, a type): a batch it could not persist may go to the journal instead.
STORAGE_FAILURES = (duckdb.OperationalError, duckdb.FatalException, duckdb.PermissionException)
# Seconds between attempts to connect while the file is held: an attempt is cheap (a few ms), not free.
RETRY_CONNECT = 0.1
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")

ORDER_COLUMNS = (
    "client_order_id", "run_id", "symbol", "side", "quantity", "order_type", "limit_price", "tif",
    "sec_type", "exchange", "currency", "primary_exchange", "status", "filled_quantity",
    "remaining_quantity", "avg_fill_price", "commission", "broker_order_id", "perm_id", "reason",
    "decision_price", "arrival_price", "submitted_at", "created_at", "updated_at",
    "stop_price", "trail_amount", "trail_percent", "offset", "outside_rth", "good_till", "algo",
    "algo_params",
    "expiry", "strike", "right", "multiplier", "con_id", "local_symbol",
    "original_quantity", "original_limit_price", "original_stop_price", "amendments",
    "original_tif", "original_trail_amount", "original_trail_percent", "original_offset",
)
# The columns of an orders row that the broker's events change while the order's terms stay (its intent,
# plan, times of creation and amendments): what a writer may UPDATE alone for a row whose terms it knows the
# file already holds (Batch.same_terms). tests/test_same_terms.py checks, over random event streams, that
# folding an event changes no other column.
ORDER_STATE_COLUMNS = (
    "status", "filled_quantity", "remaining_quantity", "avg_fill_price", "commission", "broker_order_id",
    "perm_id", "reason", "arrival_price", "submitted_at", "updated_at",
)
FILL_COLUMNS = (
    "exec_id", "client_order_id", "run_id", "symbol", "side", "quantity", "price", "commission",
    "currency", "exchange", "time", "execution_key", "revision",
)
# What the contract cache keeps of each kit.instruments.Contract (its fields, in its order).
CONTRACT_FIELDS = ("symbol", "sec_type", "currency", "exchange", "con_id", "local_symbol", "primary_exchange",
                   "expiry", "last_trade_date", "strike", "right", "multiplier", "trading_class", "min_tick",
                   "time_zone", "trading_hours")
CACHE_COLUMNS = ("broker", "request_key", *CONTRACT_FIELDS, "fetched_at", "valid_until")
EVENT_COLUMNS = ("event_id", "run_id", "client_order_id", "seq", "at", "kind", "status", "detail")
RUN_COLUMNS = (
    "run_id", "run_key", "notebook", "notebook_hash", "parameters", "broker", "account", "status",
    "started_at", "ended_at", "error_name", "error", "git_revision", "kit_version", "output_path",
)


_TIMES = {"submitted_at", "created_at", "updated_at", "time", "started_at", "ended_at", "good_till"}
_NUMBERS = {"quantity", "limit_price", "filled_quantity", "remaining_quantity", "avg_fill_price",
            "commission", "decision_price", "arrival_price", "price", "stop_price", "trail_amount",
            "trail_percent", "offset", "strike", "multiplier", "original_quantity", "original_limit_price",
            "original_stop_price", "original_trail_amount", "original_trail_percent", "original_offset"}
_BOOLEANS = {"outside_rth"}
_NULLABLE_TEXT = {"original_tif"}  # text that is NULL on most rows (never amended)
_INTEGERS = {"revision", "seq", "amendments"}
Row = dict[str, Any]  # one row of a table, by column name


FRAME_CHUNK = 5_000


def frame(rows: Iterable[Row], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a DataFrame with the dtypes a ledger read gives, so a run's tables look the same either way.
    Taken FRAME_CHUNK rows at a time, so a generator of rows is never held whole as dicts (100,000 orders:
    ~150 MiB): 5,000 at a time, the Run's frames of 100,000 orders add ~80 MiB at a run's peak, against
    ~110 at 20,000, in no more time."""
    rows = iter(rows)
    parts = []
    while chunk := list(islice(rows, FRAME_CHUNK)):
        parts.append(pd.DataFrame(dict(zip(columns, values_by_column(chunk, columns), strict=True))))
    if not parts:
        parts.append(pd.DataFrame.from_records([], columns=list(columns)))
    result = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    dtypes = {c: "datetime64[us]" if c in _TIMES else "float64" if c in _NUMBERS else
              "int64" if c in _INTEGERS else "Int64" if c == "con_id" else "bool" if c in _BOOLEANS else "str"
              for c in columns}
    for c in _NULLABLE_TEXT.intersection(columns):  # all NULL: a ledger read gives object, not str
        if result[c].isna().all():
            dtypes[c] = "object"
    return result.astype(dtypes)


def values_by_column(rows: list[Row], columns: tuple[str, ...]) -> list[list[Any]]:
    """The rows' values, a list per column. One C call per row (an itemgetter of every column) and one
    transpose: ~3x faster than a pass per column over 100,000 rows spread through memory (cache misses)."""
    if not rows:
        return [[] for _ in columns]
    if len(columns) == 1:  # an itemgetter of one name gives the value, not a tuple
        return [list(map(itemgetter(columns[0]), rows))]
    return list(map(list, zip(*map(itemgetter(*columns), rows), strict=True)))


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


def _by_instrument(frame: pd.DataFrame) -> dict[str, float]:
    """Signed quantities per instrument key (kit.instruments.instrument_key), from (symbol, sec_type, expiry,
    strike, right, quantity) rows; instruments at zero left out."""
    totals: dict[str, float] = {}
    for symbol, sec_type, expiry, strike, right, quantity in frame.itertuples(index=False):
        if quantity:
            key = instrument_key(str(symbol), sec_type or "STK", _none(expiry) or "", _none(strike),
                                 _none(right) or "")
            totals[key] = totals.get(key, 0.0) + float(quantity)
    return {key: value for key, value in totals.items() if value}


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def _order_from_row(row: dict[str, Any], fills: list[Fill]) -> Order:
    intent = OrderIntent(
        client_order_id=row["client_order_id"], symbol=row["symbol"], side=Side(row["side"]),
        quantity=row["quantity"], order_type=row["order_type"], limit_price=_none(row["limit_price"]),
        tif=row["tif"], sec_type=row["sec_type"], exchange=row["exchange"], currency=row["currency"],
        primary_exchange=row["primary_exchange"], decision_price=_none(row["decision_price"]),
        **order_type_fields(row),
        expiry=row.get("expiry") or "", strike=_none(row.get("strike")), right=row.get("right") or "",
        multiplier=_none(row.get("multiplier")), con_id=_none(row.get("con_id")),
        local_symbol=row.get("local_symbol") or "",
    )
    amendments = int(_none(row.get("amendments")) or 0)
    return Order(
        intent=intent, run_id=row["run_id"], created_at=row["created_at"], updated_at=row["updated_at"],
        status=Status(row["status"]), broker_order_id=row["broker_order_id"], perm_id=row["perm_id"],
        reason=row["reason"] or "", arrival_price=_none(row["arrival_price"]),
        submitted_at=row["submitted_at"], fills={f.execution_key: f for f in fills},
        original=_original_intent(intent, row) if amendments else None, amendments=amendments,
    )


def _original_intent(intent: OrderIntent, row: dict[str, Any]) -> OrderIntent:
    """The planned intent of an amended order: its row's original_<field> columns over the working terms."""
    names = {f.name for f in fields(OrderIntent)}
    planned = {name: _none(row.get(f"original_{name}")) for name in AMENDABLE_FIELDS if name in names}
    return replace(intent, **{name: value for name, value in planned.items()
                              if value is not None or name in _PLANNED_EMPTY})


# Terms a plan may leave empty and an amendment set (a MIDPRICE or REL cap, a trailing stop's stop): their
# original_* NULL is the plan's None. Any other NULL is a term never amended (tif, trail and offset before
# migration 7): the working one.
_PLANNED_EMPTY = frozenset({"limit_price", "stop_price"})


@dataclass
class Batch:
    """Everything one flush writes, in one transaction. Rows are keyed by column name (kit.recorder)."""

    events: list[Row] = field(default_factory=list)
    orders: dict[str, Row] = field(default_factory=dict)  # latest row per order
    fills: dict[str, Row] = field(default_factory=dict)
    replaced_fills: set[str] = field(default_factory=set)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> columns to update
    new_runs: dict[str, Row] = field(default_factory=dict)  # run_id -> a runs row, unless the run exists
    # Orders whose row here differs from the one handed to this ledger before it only in
    # ORDER_STATE_COLUMNS (kit.recorder knows): the writer may UPDATE those columns alone. A hint: the rows
    # stay whole, a key the file lacks is written whole, and a journal keeps no hint.
    same_terms: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.events or self.orders or self.fills or self.replaced_fills or self.runs
                    or self.new_runs)

    def to_record(self) -> dict[str, Any]:
        return {"events": self.events, "orders": list(self.orders.values()),
                "fills": list(self.fills.values()), "replaced_fills": sorted(self.replaced_fills),
                "runs": self.runs, "new_runs": self.new_runs}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Batch:
        orders = [_by_name(o, ORDER_COLUMNS) for o in record["orders"]]
        fills = [_by_name(f, FILL_COLUMNS) for f in record["fills"]]
        return cls(events=[_by_name(e, EVENT_COLUMNS) for e in record["events"]],
                   orders={o["client_order_id"]: o for o in orders},
                   fills={f["exec_id"]: f for f in fills},
                   replaced_fills=set(record["replaced_fills"]), runs=record["runs"],
                   new_runs=record.get("new_runs", {}))  # journals before new_runs have none

    def __len__(self) -> int:
        return len(self.events)

    def then(self, later: Batch) -> Batch:
        """This batch followed by `later`, as one: what a flush writes when this one could not be written."""
        fills = {k: v for k, v in self.fills.items() if k not in later.replaced_fills} | later.fills
        runs = {run_id: dict(values) for run_id, values in self.runs.items()}
        for run_id, values in later.runs.items():
            runs.setdefault(run_id, {}).update(values)
        # A later row keeps its same_terms mark only if the ledger had this key's terms before this batch.
        same_terms = {k for k in self.same_terms if k not in later.orders} | {
            k for k in later.same_terms if k not in self.orders or k in self.same_terms}
        return Batch(events=self.events + later.events, orders=self.orders | later.orders, fills=fills,
                     replaced_fills=self.replaced_fills | later.replaced_fills, runs=runs,
                     new_runs=later.new_runs | self.new_runs, same_terms=same_terms)


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


class Written:
    """What this process committed through one writer connection lately: a hint that saves statements (a
    fill's latency is mostly DuckDB's ~1 ms per statement) and work. A fill id it wrote before is replaced,
    any other one is a plain INSERT: no DELETE first, no INSERT OR REPLACE; an order whose last row it
    wrote in a small batch is UPDATEd in only the columns that changed. Only a hint: a key the file has
    after all is refused by the key, and the batch is written again the old way (apply_batch). The Ledger
    forgets it whenever it lets go of the file, since another process may write the file meanwhile."""

    LIMIT = 100_000  # keys remembered at most per kind; past it the hint starts afresh

    def __init__(self) -> None:
        self.fills: set[str] = set()
        self.orders: dict[str, Row] = {}

    def clear(self) -> None:
        self.fills.clear()
        self.orders.clear()

    def committed(self, fills: Iterable[str], orders: Mapping[str, Row | None]) -> None:
        """What a transaction wrote, once its COMMIT returned (an order row None: written, but not kept)."""
        if len(self.fills) > self.LIMIT:
            self.fills.clear()
        self.fills.update(fills)
        if len(self.orders) > self.LIMIT:
            self.orders.clear()
        for key, row in orders.items():
            if row is None:
                self.orders.pop(key, None)
            else:
                self.orders[key] = row


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b or (a != a and b != b)  # NaN is NULL in the file: two NaNs are the same


def _update_changed(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], row: Row,
                    before: Row) -> None:
    """One row whose last written version is `before`: only the columns that differ are set."""
    key = columns[0]
    changed = [c for c in columns[1:] if not _same(row[c], before[c])]
    if not changed:
        return
    values = [None if v != v else v for v in map(row.__getitem__, changed)]  # NaN -> NULL
    assignments = ", ".join(f'"{c}" = ?' for c in changed)
    updated = con.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", [*values, row[key]])
    if updated.fetchone()[0] != 1:  # not there after all: a plain INSERT (or the key's refusal)
        _insert_small(con, table, columns, [row], "new")


def _insert_small(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: list[Row],
                  how: str) -> None:
    """_insert for a few rows, as lists of values per column (unnest). DuckDB's ON CONFLICT costs more per
    statement than finding the keys first, so the keys are deleted ("replace") or looked up ("ignore")
    in the key's index, and the rest is a plain INSERT. One row to replace (the order a fill changed) is
    updated in place if its key is known: half the cost of a DELETE and an INSERT."""
    key = columns[0]
    if how == "replace" and len(rows) == 1:
        values = [None if v != v else v for v in map(rows[0].__getitem__, columns)]  # NaN -> NULL
        assignments = ", ".join(f'"{c}" = ?' for c in columns[1:])
        updated = con.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", [*values[1:], values[0]])
        if updated.fetchone()[0] == 1:
            return
    elif how != "new":
        keys = [row[key] for row in rows]
        where = f"{key} IN ({', '.join('?' * len(keys))})"  # a list of values: looked up in the key's index
        if how == "replace":
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
    # NaN -> NULL
    values = [[None if v != v else v for v in column] for column in values_by_column(rows, columns)]
    unnests = ", ".join(f"unnest(${i})" for i in range(1, len(columns) + 1))
    con.execute(f"INSERT INTO {table} ({_quoted(columns)}) SELECT {unnests}", values)


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: list[Row],
            how: str) -> None:
    """Rows keyed by the first column, NaN stored as NULL. `how`: "new" (a plain INSERT: a known key is a
    ConstraintException), "ignore" (a known key is skipped; the first of a repeated key wins) or "replace"
    (a row replaces its key's row whole)."""
    if len(rows) <= SMALL_BATCH:
        _insert_small(con, table, columns, rows, how)
        return
    # Built column by column: DuckDB reads such a frame in half the time it takes for the same rows through
    # DataFrame.from_records (20,000 orders rows: 105 ms against 208, measured with pandas 3.1, DuckDB 2.0).
    frame = pd.DataFrame(dict(zip(columns, values_by_column(rows, columns), strict=True)))
    con.register("_kit_batch", frame)
    # A DELETE and re-INSERT of the same keys, or an UPDATE of every column joined to the frame, is slower
    # here; an UPDATE of only the ~11 columns a fill changes is ~4x faster (docs/benchmarks.md, not done).
    try:
        verb = {"new": "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[how]
        con.execute(f"{verb} INTO {table} ({_quoted(columns)}) SELECT * FROM _kit_batch")
    finally:  # in a transaction a refused INSERT aborted, unregister raises too: the refusal is the news
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister("_kit_batch")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Undo a failed transaction without hiding why it failed: DuckDB ends a transaction whose COMMIT failed
    (a full disk) itself, and a ROLLBACK then raises "no transaction is active" in place of the reason."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def apply_batch(con: duckdb.DuckDBPyConnection, batch: Batch, writer: bool = False,
                written: Written | None = None) -> None:
    """One transaction for the whole batch: all of it lands, or none of it. `writer`: the run's own write
    (crash points armed), not the fold of a journal for a reader. `written`: the writer connection's hint
    (see Written), kept up to date here once a transaction committed.

    A run's events are new (their ids are made for them), so they go in with a plain INSERT, which costs
    less than skipping known ids, and so do fills the hint does not know; a batch that holds a known key
    (a journal replayed again, a repeated write, a fill of an earlier process) is refused whole by the key
    and written again skipping known event ids and replacing fills: the same rows either way."""
    try:
        _apply_batch(con, batch, writer, "new", written)
    except duckdb.ConstraintException:
        _apply_batch(con, batch, writer, "ignore", None)
        if written is not None:
            written.committed(batch.fills, dict.fromkeys(batch.orders))


def _apply_batch(con: duckdb.DuckDBPyConnection, batch: Batch, writer: bool, events: str,
                 written: Written | None) -> None:
    con.execute("BEGIN")
    try:
        for row in batch.new_runs.values():
            columns = [c for c in RUN_COLUMNS if c in row]
            con.execute(f"INSERT OR IGNORE INTO runs ({', '.join(columns)}) VALUES "
                        f"({', '.join('?' * len(columns))})", [row[c] for c in columns])
        if batch.events:
            _insert(con, "order_events", EVENT_COLUMNS, batch.events, events)
        if writer:
            crash_point("ledger.mid_write")
        if batch.replaced_fills:
            con.execute("DELETE FROM fills WHERE exec_id IN (SELECT unnest(?))",
                        [sorted(batch.replaced_fills)])
        if batch.fills:
            _write_fills(con, list(batch.fills.values()), written)
        kept = _write_orders(con, batch.orders, batch.same_terms, written) if batch.orders else {}
        for run_id, values in batch.runs.items():
            assignments = ", ".join(f"{name} = ?" for name in values)
            con.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id])
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    if written is not None:
        written.committed(batch.fills, kept)


def _write_fills(con: duckdb.DuckDBPyConnection, fills: list[Row], written: Written | None) -> None:
    """New fills as a plain INSERT (half the cost of INSERT OR REPLACE in a big batch, and no DELETE first
    in a small one), those the hint knows replacing their rows."""
    if written is None:
        _insert(con, "fills", FILL_COLUMNS, fills, "replace")
        return
    known = [row for row in fills if row["exec_id"] in written.fills]
    fresh = [row for row in fills if row["exec_id"] not in written.fills]
    if known:
        _insert(con, "fills", FILL_COLUMNS, known, "replace")
    if fresh:
        _insert(con, "fills", FILL_COLUMNS, fresh, "new")


def _write_orders(con: duckdb.DuckDBPyConnection, orders: dict[str, Row], same_terms: set[str],
                  written: Written | None) -> dict[str, Row | None]:
    """The orders rows, replacing their keys; what the hint keeps of them once the transaction commits.
    Rows of unchanged terms (same_terms) get their state columns UPDATEd alone: a fifth of the cost of
    replacing the whole row in a big batch."""
    rows = list(orders.values())
    before = written.orders.get(rows[0]["client_order_id"]) if written and len(rows) == 1 else None
    if before is not None:
        _update_changed(con, "orders", ORDER_COLUMNS, rows[0], before)
    else:
        states = [orders[key] for key in same_terms if key in orders] if same_terms else []
        if states and len(states) < len(rows):
            rows = [row for key, row in orders.items() if key not in same_terms]
        elif states:
            rows = []
        if states and not _update_states(con, states):
            rows.extend(states)  # a key the file lacks (a journal record set aside): whole rows, replaced
        if rows:
            _insert(con, "orders", ORDER_COLUMNS, rows, "replace")
    small = written is not None and len(orders) <= SMALL_BATCH
    return {key: row if small else None for key, row in orders.items()}


def _update_states(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> bool:
    """UPDATE the ORDER_STATE_COLUMNS of orders rows the file has; False if it lacks any of them."""
    columns = ("client_order_id", *ORDER_STATE_COLUMNS)
    assignments = ", ".join(f'"{c}" = s."{c}"' for c in ORDER_STATE_COLUMNS)
    if len(rows) <= SMALL_BATCH:
        values = [[None if v != v else v for v in column] for column in values_by_column(rows, columns)]
        source = "(SELECT " + ", ".join(f'unnest(${i}) AS "{c}"' for i, c in enumerate(columns, 1)) + ")"
        updated = con.execute(f"UPDATE orders SET {assignments} FROM {source} s "
                              "WHERE orders.client_order_id = s.client_order_id", values)
        return updated.fetchone()[0] == len(rows)
    states = pd.DataFrame(dict(zip(columns, values_by_column(rows, columns), strict=True)))
    con.register("_kit_states", states)
    try:
        updated = con.execute(f"UPDATE orders SET {assignments} FROM _kit_states s "
                              "WHERE orders.client_order_id = s.client_order_id")
        return updated.fetchone()[0] == len(rows)
    finally:
        with contextlib.suppress(duckdb.TransactionException):
            con.unregister("_kit_states")


def _is_held(exc: duckdb.Error) -> bool:
    """DuckDB's refusal because another connection has the file: another process's lock, or one of this
    process's connections opened with other settings (a notebook's read-only `con`)."""
    text = str(exc).lower()
    return "lock" in text or (isinstance(exc, duckdb.ConnectionException) and "configuration" in text)


def _holder(exc: duckdb.Error) -> str:
    """Who holds the file, from DuckDB's refusal: "pid 1234" rather than DuckDB's paragraph."""
    match = _HOLDER_PID.search(str(exc))
    if match:
        return f"pid {match.group(1)}"
    if isinstance(exc, duckdb.ConnectionException):
        return f"this process (pid {os.getpid()}), through a connection with other settings"
    return "another process"


def _marker(con: duckdb.DuckDBPyConnection) -> str | None:
    try:
        return con.execute("SELECT min(id) FROM kit_ledger").fetchone()[0]
    except duckdb.CatalogException:  # a ledger older than the marker, read without migrating it
        return None


# Journaled records a ledger may refuse (a record of the wrong shape): set aside, never a reason to stop.
_REFUSED = (duckdb.Error, KeyError, TypeError, ValueError, AttributeError)


class Ledger:
    """One DuckDB file. Hold a Ledger open for a run; use `kit.ledger()` for short reads.

    A run's Ledger remembers the file it first opened (its marker and inode) and checks it again at every
    reconnect, since a run lets go of the file whenever it is idle. While another process holds the file or
    it cannot be written, batches go to the journal, and reads fold the journal over the file.
    """

    # Connections this process holds open for writing, so its own reads use them instead of failing.
    _writers: ClassVar[dict[Path, duckdb.DuckDBPyConnection]] = {}
    _writers_lock: ClassVar[threading.Lock] = threading.Lock()
    # The Ledger object (by id) that wrote each file last in this process: a write hint is kept only while
    # no other Ledger of this process (kit.cancel beside a run, say) has written the file since.
    _last_writer: ClassVar[dict[Path, int]] = {}

    def __new__(cls, db: str | Path | None = None) -> Ledger:
        """Ledger(db) is this DuckDB ledger, or the PostgreSQL one (kit.store_pg) when db or KIT_DB is a
        postgresql:// URL: every caller makes its ledger the same way."""
        if cls is Ledger and is_ledger_url(ledger_target(db)):
            from kit.store_pg import PgLedger

            cls = PgLedger
        return super().__new__(cls)

    def __init__(self, db: str | Path | None = None):
        self.path = db_path(db).resolve()
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"))
        self.holder = ""  # who held the file at the last refused attempt: "pid 1234"
        self.journal_reason = ""  # why batches go to the journal now, for the run's notes
        self._con: duckdb.DuckDBPyConnection | None = None
        self._next_attempt = 0.0
        self._opened = False  # open() was called: writes go to the file or, while it is held, the journal
        self._identity: tuple[str | None, int, int] | None = None  # marker id, st_dev, st_ino at first open
        self._written = Written()  # what the held connection committed: fewer statements per small batch

    # ---- writer side -------------------------------------------------------------------------------
    def open(self, wait: float | None = None) -> Ledger:
        """Connect for writing, and write first what a locked-out run left in the journal.

        If only readers hold the file (a notebook's read-only connection), the run starts at once: its
        batches wait in the journal and later writes try the file again. If a writer holds it (another kit
        run between two batches), wait up to `wait` seconds (KIT_LEDGER_WAIT, default 120): without reading
        the file kit cannot know what this run key already holds.
        """
        wait = float(setting("KIT_LEDGER_WAIT", 120)) if wait is None else wait
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline, delay, told = time.monotonic() + wait, 0.05, False
        while not self._connect():
            if self._readable():
                self.journal_reason = f"is held by another process ({self.holder})"
                # Said once, by the run's recorder at its first journaled batch (with this holder's pid).
                log.info("the ledger %s is held by %s, which only reads it: this run starts now and "
                            "keeps its batches in %s until the file is free", self.path, self.holder,
                            self.journal.path)
                break
            if time.monotonic() + delay > deadline:
                raise LedgerBusyError(f"{self.path} is held by another process ({self.holder}) and stayed "
                                      f"so for {wait:g}s; close it there (con.close()) and run again")
            if not told:
                log.warning("waiting for the ledger: %s is held for writing by %s (another kit run lets go "
                            "between batches; a connection of yours: con.close())", self.path, self.holder)
                told = True
            # DuckDB gives no notice when a lock is released: retrying with backoff is the only way to wait.
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._opened = True
        return self

    def _connect(self) -> bool:
        """Try once; False while another process holds the file. Checks that the file is this run's ledger,
        migrates it, and writes what waits in the journal."""
        if self._identity is not None and not self.path.exists():
            raise LedgerIdentityError(
                f"the ledger {self.path} disappeared during this run; kit does not create an empty one in "
                "its place. Put the file back and run the key again (the broker decides what was sent)")
        try:
            con = duckdb.connect(str(self.path))
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_held(exc):
                raise KitError(f"cannot open the ledger {self.path}: {exc}") from exc
            self.holder = _holder(exc)
            return False
        self._con = con
        with Ledger._writers_lock:
            Ledger._writers[self.path] = con
        try:
            self._check_file()
            self._migrate(con)
            self._remember(_marker(con))
            self._replay_journal(con)
        except STORAGE_FAILURES as exc:
            self.release()  # a refused or failed ledger must not stay locked by this process
            raise LedgerWriteError(f"could not write to the ledger {self.path}: {exc}") from exc
        except BaseException:
            self.release()
            raise
        self.journal_reason = ""
        return True

    def _readable(self) -> bool:
        """Whether a held file can be read (its holders only read): then it must be a kit ledger, and the
        run remembers which file it is."""
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_held(exc):
                raise KitError(f"cannot open the ledger {self.path}: {exc}") from exc
            return False
        try:
            self._kind(con)
            self._remember(_marker(con))
        finally:
            con.close()
        return True

    def _check_file(self) -> None:
        """The file at the path is still the one this run first opened (the marker is checked once read)."""
        if self._identity is None:
            return
        status = os.stat(self.path)
        if (status.st_dev, status.st_ino) != self._identity[1:]:
            raise LedgerIdentityError(
                f"the ledger {self.path} was replaced during this run (another file is at its path now); kit "
                "stops rather than write this run into it. Run the key again against the right ledger")

    def _remember(self, marker: str | None) -> None:
        status = os.stat(self.path)
        if self._identity is None or self._identity[0] is None:
            self._identity = (marker, status.st_dev, status.st_ino)
        elif marker != self._identity[0]:
            raise LedgerIdentityError(
                f"the ledger {self.path} is not the one this run opened (its marker was {self._identity[0]}, "
                f"now {marker}); kit stops rather than write this run into another ledger")

    # How the identity check names this backend's databases (PgLedger says its own).
    KIND = ("a DuckDB database", "a new file")

    @staticmethod
    def _table_names(con: Any) -> set[str]:
        return {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables "
                                                "WHERE table_catalog = current_database()").fetchall()}

    def _kind(self, con: Any) -> int:
        """The database's ledger schema version (0: a new, empty database). Refuses, before anything is
        written, a database that is not a kit ledger and a ledger newer than this kit."""
        tables = self._table_names(con)
        version = 0
        if "kit_schema" in tables:
            version = con.execute("SELECT coalesce(max(version), 0) FROM kit_schema").fetchone()[0]
        others = sorted(tables - {"kit_schema"})
        if version == 0 and others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            what, instead = self.KIND
            raise LedgerIdentityError(
                f"{self.path} is {what} but not a kit ledger (it has {shown} and no kit schema); "
                f"kit leaves it untouched: point KIT_DB (or db=) at a kit ledger or {instead}")
        latest = len(MIGRATIONS)  # read now, not at import, so the list stays the one source of truth
        if version > latest:
            raise LedgerIdentityError(f"{self.path} has ledger schema {version}; this kit knows {latest}: "
                                      "upgrade kit to use it (it was left untouched)")
        return version

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        """Bring the file to this kit's schema in one transaction, so a new ledger gets its marker with its
        tables and a failed migration leaves nothing behind, not even kit_schema."""
        latest = len(MIGRATIONS)
        with contextlib.suppress(duckdb.CatalogException):  # no kit_schema: _kind says what the file is
            # A ledger at this kit's schema is what every reconnect finds: one query, where _kind lists the
            # tables (~10 ms here) to tell a new or foreign file apart, which it then is not.
            if con.execute("SELECT max(version) FROM kit_schema").fetchone()[0] == latest:
                return
        current = self._kind(con)
        if current == latest:
            return
        con.execute("BEGIN")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS kit_schema (version INTEGER, applied_at TIMESTAMP)")
            for version in range(current + 1, latest + 1):
                for statement in MIGRATIONS[version - 1]:
                    con.execute(statement)
                con.execute("INSERT INTO kit_schema VALUES (?, now()::TIMESTAMP)", [version])
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)  # the migrations land whole or not at all
            raise

    # What a journal's replay tells apart, each backend its own (PgLedger says PostgreSQL's): the failures of
    # the storage itself, which keep every record in the journal; the records the ledger refuses, set aside;
    # and the SQL that gives fills of a journal older than execution keys theirs.
    JOURNAL_KEEPS: ClassVar[tuple[type[Exception], ...]] = STORAGE_FAILURES
    JOURNAL_REFUSED: ClassVar[tuple[type[Exception], ...]] = _REFUSED
    JOURNAL_LEGACY_FILL_KEYS: ClassVar[str] = LEGACY_FILL_KEYS

    def _refusal(self, exc: Exception) -> str:
        """Why the ledger refused a journal record, as the set-aside note says it."""
        return str(exc)

    def _replay_journal(self, con: Any) -> None:
        """Write what waits in the journal, in order, on `con` (this ledger's writer connection). A record
        the ledger refuses (intact, but not a batch of the right shape) is set aside, so it cannot stop every
        later open."""
        with self.journal.draining() as records:
            refused: list[tuple[dict[str, Any], Exception]] = []
            for record in records:
                try:
                    self._apply(Batch.from_record(record))
                except self.JOURNAL_KEEPS:
                    raise  # the storage, not the record: everything stays in the journal
                except self.JOURNAL_REFUSED as exc:
                    refused.append((record, exc))
            if refused:
                self.journal.set_aside([r for r, _ in refused], "the ledger refused them: " + "; ".join(
                    f"{type(e).__name__}: {self._refusal(e)}" for _, e in refused[:3]))
            if len(records) > len(refused):
                con.execute(self.JOURNAL_LEGACY_FILL_KEYS)
                log.warning("wrote %d batch(es) that waited in %s", len(records) - len(refused),
                            self.journal.path)

    def release(self) -> None:
        """Let other processes in while this run is idle; the next write connects again."""
        if self._con is not None:
            with Ledger._writers_lock:
                Ledger._writers.pop(self.path, None)
            con, self._con = self._con, None
            self._written.clear()  # another process may write the file until the next connect
            try:
                con.close()
            except duckdb.Error as exc:  # a checkpoint on a full disk: what was committed stays in the WAL
                log.warning("closing the ledger %s: %s", self.path, exc)

    def close(self) -> None:
        self.release()
        self._opened = False

    def lease(self, run_key: str) -> AbstractContextManager[Any]:
        """What keeps a run key to one process beyond kit.runlock's file lock: nothing more for a DuckDB file,
        which lives on one machine (the PostgreSQL ledger's lease is the database's)."""
        return contextlib.nullcontext()

    def __enter__(self) -> Ledger:
        return self if self._opened else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._con is not None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The writer's connection, connecting again after a release; LedgerBusyError while it is held."""
        if self._con is None and not self._connect():
            raise LedgerBusyError(f"{self.path} is held by another process ({self.holder})")
        assert self._con is not None
        return self._con

    def schema_version(self) -> int:
        return self._records("SELECT max(version) AS version FROM kit_schema", [])[0]["version"]

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        rows = self._records("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def insert_run(self, values: dict[str, Any]) -> None:
        self.write(Batch(new_runs={values["run_id"]: dict(values)}))

    def update_run(self, run_id: str, **values: Any) -> None:
        self.write(Batch(runs={run_id: values}))

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
        rows = self._records("SELECT client_order_id, run_id FROM orders WHERE client_order_id IN "
                             "(SELECT unnest(?)) AND run_id <> ?", [client_order_ids, run_id])
        return {row["client_order_id"]: row["run_id"] for row in rows}

    def next_seq(self, run_id: str) -> int:
        return self._records("SELECT coalesce(max(seq), 0) + 1 AS seq FROM order_events WHERE run_id = ?",
                             [run_id])[0]["seq"]

    def _records(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._reader() as con:
            cursor = con.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer's connection if this run has (or can take back) the file; else what any reader
        sees: the file with the journal folded on top."""
        if self._con is None and self._opened and time.monotonic() >= self._next_attempt:
            with contextlib.suppress(LedgerWriteError):  # a full disk: reading goes on
                if not self._connect():
                    self._next_attempt = time.monotonic() + RETRY_CONNECT
        if self._con is not None:
            yield self._con
            return
        with self.reading() as con:
            yield con

    def write(self, batch: Batch) -> bool:
        """One transaction for the whole batch: all of it lands, or none of it. While another process holds
        the file, or the file cannot be written (a full disk), the batch goes to the journal instead,
        durably, and False says so. If the journal cannot take it either, LedgerWriteError names both files
        and DuckDB's reason: then the batch is recorded nowhere."""
        failure: LedgerWriteError | None = None
        if self._con is None:
            now = time.monotonic()
            if now >= self._next_attempt:
                try:
                    if not self._connect():
                        self.journal_reason = f"is held by another process ({self.holder})"
                except LedgerWriteError as exc:
                    failure = exc
            if self._con is None:
                self._next_attempt = now + RETRY_CONNECT
        if self._con is not None:
            try:
                self._apply(batch)
                return True
            except STORAGE_FAILURES as exc:
                self.release()  # the next write connects afresh, and writes the journal first
                self._next_attempt = time.monotonic() + RETRY_CONNECT
                failure = LedgerWriteError(f"could not write a batch to the ledger {self.path}: {exc}")
        if failure is not None:
            self.journal_reason = f"could not be written ({failure})"
            log.error("%s", failure)
        try:
            self.journal.append(batch.to_record())
        except LedgerWriteError as exc:
            if failure is None:
                raise
            raise LedgerWriteError(f"{failure}; nor to its journal: {exc}") from exc
        return False

    def _apply(self, batch: Batch) -> None:
        with Ledger._writers_lock:
            if Ledger._last_writer.get(self.path) != id(self):
                self._written.clear()  # another connection of this process wrote the file meanwhile
            Ledger._last_writer[self.path] = id(self)
        apply_batch(self.con, batch, writer=True, written=self._written)
        crash_point("ledger.committed")

    # ---- reader side -------------------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection: a cursor on this process's writer if it has one, else the file
        read-only with the batches waiting in the journal folded on top (what the next writer will write),
        so a reader sees the latest state even while a notebook holds the file."""
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
        records = self.journal.records()
        if records:  # a locked-out run left batches: write them first, if the file is free
            probe = Ledger(self.path)
            with contextlib.suppress(LedgerWriteError):
                if probe._connect():
                    probe.close()
                    records = self.journal.records()
        con = self._overlay(records) if records else self._waiting(
            lambda: duckdb.connect(str(self.path), read_only=True))
        try:
            yield con
        finally:
            con.close()

    def _overlay(self, records: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
        """An in-memory database showing the file (attached read-only) with the journal's batches applied
        on top, in order: the latest row per key wins, events are added. The file is not touched."""
        con = duckdb.connect()
        try:
            path = str(self.path).replace("'", "''")
            self._waiting(lambda: con.execute(f"ATTACH '{path}' AS f (READ_ONLY)"))
            present = {n for (n,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name "
                                                 "= 'f' AND schema_name = 'main'").fetchall()}
            con.execute("CREATE SCHEMA journal")
            con.execute("USE memory.journal")
            for migration in MIGRATIONS:
                for statement in migration:
                    con.execute(statement)
            con.execute("CREATE TABLE replaced (exec_id VARCHAR)")
            batches = []
            for record in records:
                with contextlib.suppress(*_REFUSED):  # the next writer sets such a record aside
                    batches.append(Batch.from_record(record))
            touched = sorted({run for batch in batches for run in (*batch.runs, *batch.new_runs)})
            if "runs" in present and touched:
                con.execute("INSERT INTO runs BY NAME SELECT * FROM f.runs WHERE run_id IN "
                            "(SELECT unnest(?))", [touched])
            for batch in batches:
                with contextlib.suppress(*_REFUSED):
                    apply_batch(con, batch)
                    if batch.replaced_fills:
                        con.execute("INSERT INTO replaced SELECT unnest(?)", [sorted(batch.replaced_fills)])
            con.execute(LEGACY_FILL_KEYS)
            if "order_events" in present:  # replayed already (a crash between replaying and emptying)
                con.execute("DELETE FROM order_events WHERE event_id IN "
                            "(SELECT event_id FROM f.order_events)")
            con.execute("USE memory.main")
            keys = {"runs": "run_id", "orders": "client_order_id", "fills": "exec_id"}
            for table in LEDGER_TABLES:
                sql = f"SELECT * FROM journal.{table}"
                if table in present:
                    key = keys.get(table)
                    where = f" WHERE {key} NOT IN (SELECT {key} FROM journal.{table})" if key else ""
                    if table == "fills":
                        where += " AND exec_id NOT IN (SELECT exec_id FROM journal.replaced)"
                    sql += f" UNION ALL BY NAME SELECT * FROM f.{table}{where}"
                con.execute(f"CREATE VIEW {table} AS {sql}")
            for table in sorted(present - set(LEDGER_TABLES)):
                con.execute(f'CREATE VIEW "{table}" AS SELECT * FROM f."{table}"')
        except BaseException:
            con.close()
            raise
        return con

    def _waiting(self, attempt: Callable[[], Any]) -> Any:
        """`attempt` (a read-only open), retried while a writer holds the file, for KIT_LEDGER_READ_WAIT s:
        a kit run lets go of it whenever it is idle."""
        wait = float(setting("KIT_LEDGER_READ_WAIT", 10))
        deadline, delay = time.monotonic() + wait, 0.05
        while True:
            try:
                return attempt()
            except duckdb.IOException as exc:
                if not _is_held(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise LedgerBusyError(
                        f"the ledger {self.path} is in use by another process ({_holder(exc)}; a run in "
                        "progress?); try again when it ends, or use another KIT_DB") from exc
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
        instrument = 'o.symbol, o.sec_type, o.expiry, o.strike, o."right"'
        positions = self.query(
            f"SELECT {instrument}, sum({sign} * f.quantity) FROM fills f "
            "JOIN orders o USING (client_order_id) JOIN runs r ON r.run_id = o.run_id "
            "WHERE r.broker = ? GROUP BY ALL", [broker])
        working = self.query(
            f"SELECT {instrument}, sum({sign} * o.remaining_quantity) FROM orders o WHERE o.run_id IN "
            f"(SELECT run_id FROM runs WHERE broker = ?) AND {WORKING_SQL} GROUP BY ALL", [broker])
        return _by_instrument(positions), _by_instrument(working)

    # ---- the contract-details cache (migration 5) ------------------------------------------------------
    def cached_contracts(self, broker: str, keys: list[str], today: date) -> dict[str, Contract]:
        """What qualification learned earlier for these request keys, where still valid today (the rule:
        kit.instruments.cache_valid_until). No ledger, or one without the cache: nothing cached."""
        if not keys or (not self.path.exists() and self._con is None):
            return {}
        try:
            rows = self._records(
                "SELECT * FROM contract_cache WHERE broker = ? AND request_key IN (SELECT unnest(?)) "
                "AND CAST(valid_until AS DATE) >= ?", [broker, keys, today])
        except (duckdb.CatalogException, LedgerBusyError) as exc:  # an older ledger, or held elsewhere
            log.info("contract cache not read: %s", exc)
            return {}
        return {row["request_key"]: Contract(**{f: _none(row[f]) if f == "strike" else row[f]
                                                for f in CONTRACT_FIELDS}) for row in rows}

    def cache_contracts(self, broker: str, learned: Mapping[str, Contract], fetched: datetime) -> bool:
        """Keep what qualification learned, valid for the day it was fetched (see cached_contracts). Best
        effort: a ledger another process holds right now is left alone (the next run asks IB again)."""
        if not learned:
            return True
        rows = [[broker, key, *(getattr(c, f) for f in CONTRACT_FIELDS), fetched,
                 datetime.combine(cache_valid_until(c, fetched.date()), datetime.min.time())]
                for key, c in learned.items()]
        return self._write_cache(broker, list(learned), rows)

    def _write_cache(self, broker: str, keys: list[str], rows: list[list[Any]]) -> bool:
        opened_here = self._con is None
        try:
            if opened_here and not self._connect():
                return False
            con = self.con
            con.execute("BEGIN")
            try:
                con.execute("DELETE FROM contract_cache WHERE broker = ? AND request_key IN "
                            "(SELECT unnest(?))", [broker, keys])
                con.executemany(f"INSERT INTO contract_cache ({_quoted(CACHE_COLUMNS)}) VALUES "
                                f"({', '.join('?' for _ in CACHE_COLUMNS)})", rows)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            return True
        except (duckdb.Error, KitError) as exc:
            log.info("contract cache not written: %s", exc)
            return False
        finally:
            if opened_here:
                self.release()

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
        rows = self._records("SELECT DISTINCT run_id FROM orders WHERE submitted_at >= ? AND submitted_at "
                             "< ? + INTERVAL 1 DAY ORDER BY run_id", [day, day])
        return [str(row["run_id"]) for row in rows]

    def resolve_run(self, run: str | None) -> str:
        """A run id or a run key -> run id; None -> the latest run."""
        if run is None:
            frame = self.query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
        else:
            frame = self.query("SELECT run_id FROM runs WHERE run_id = ? OR run_key = ?", [run, run])
        if frame.empty:
            raise KitError(f"no run {run!r} in {self.path}" if run else f"no runs in {self.path}")
        return str(frame.iloc[0, 0])
