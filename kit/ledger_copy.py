"""`kit ledger copy SRC DST`: a ledger moved between DuckDB and PostgreSQL (either way) without loss.

The source is read as any reader sees it (a DuckDB file with its journal folded in; a PostgreSQL database
with this machine's journal on top) and written to the destination as one Batch, so the copy lands whole or
not at all, with Batch's rules (events by event_id, orders and fills by key, runs by run_id). Each side is
then read back and summed up per table: a row count and a checksum of the rows' values, canonically
written, so a DuckDB and a PostgreSQL ledger holding the same rows show the same checksum. The destination
keeps its own marker (kit_ledger): it is another ledger holding the same records.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from kit.config import ledger_target
from kit.errors import KitError
from kit.store import LEDGER_TABLES, Batch, Ledger

KEYS = {"runs": "run_id", "orders": "client_order_id", "fills": "exec_id", "order_events": "event_id"}


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    source_checksum: str
    copied_rows: int
    copied_checksum: str

    @property
    def same(self) -> bool:
        return (self.source_rows, self.source_checksum) == (self.copied_rows, self.copied_checksum)


def _canonical(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "item"):  # a numpy scalar
        return _canonical(value.item())
    return str(value) if not isinstance(value, int | bool) else value


def checksum(frame: pd.DataFrame) -> str:
    """Order-free digest of a table's rows (columns by name), the same whichever ledger holds them."""
    columns = sorted(frame.columns)
    lines = sorted(json.dumps([_canonical(v) for v in row]) for row in
                   frame[columns].astype(object).itertuples(index=False, name=None))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def read_tables(ledger: Ledger) -> dict[str, pd.DataFrame]:
    """Every kit table of the ledger, as a reader sees it (journals folded in)."""
    with ledger.reading() as con:
        present = {name for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()}
        return {table: con.execute(f'SELECT * FROM "{table}"').df()
                for table in LEDGER_TABLES if table in present}


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with NULLs as None (never NaN, which a ledger would store as a number)."""
    plain = frame.astype(object).where(frame.notna(), None)
    return plain.to_dict("records")


def _name(db: str | Path) -> str:
    target = ledger_target(str(db))
    return str(target if isinstance(target, Path) else Ledger(target).path)


def copy_ledger(source: str | Path, destination: str | Path, merge: bool = False) -> list[TableCopy]:
    """Copy every run, order, fill and event; refuses a destination that holds any unless `merge`."""
    src, dst = Ledger(source), Ledger(destination)
    if str(src.path) == str(dst.path):
        raise KitError(f"kit ledger copy: the source and the destination are the same ledger ({src.path})")
    if not src.path.exists():
        raise KitError(f"no ledger at {src.path}: nothing to copy")
    frames = read_tables(src)
    dst.open()
    try:
        held = {t: int(n) for t in LEDGER_TABLES
                if (n := dst.query(f"SELECT count(*) AS n FROM {t}").iloc[0, 0])}
        if held and not merge:
            shown = ", ".join(f"{n} {t}" for t, n in held.items())
            raise KitError(f"{dst.path} already holds {shown}; kit ledger copy writes into an empty ledger "
                           "(--merge to add to this one: rows with the same key are replaced)")
        runs = {row["run_id"]: row for row in _rows(frames.get("runs", pd.DataFrame()))}
        batch = Batch(events=_rows(frames.get("order_events", pd.DataFrame())),
                      orders={r["client_order_id"]: r for r in _rows(frames.get("orders", pd.DataFrame()))},
                      fills={r["exec_id"]: r for r in _rows(frames.get("fills", pd.DataFrame()))},
                      new_runs=runs,
                      runs={i: {k: v for k, v in r.items() if k != "run_id"} for i, r in runs.items()}
                      if merge else {})
        if batch and not dst.write(batch):
            raise KitError(f"could not write to {dst.path} ({dst.journal_reason}); the copy waits in "
                           f"{dst.journal.path} and is written when the ledger can take it")
    finally:
        dst.close()
    copied = read_tables(Ledger(destination))
    report = []
    for table in LEDGER_TABLES:
        ours = frames.get(table, pd.DataFrame())
        theirs = copied.get(table, pd.DataFrame())
        if merge and KEYS[table] in theirs:  # the destination's other rows are not the source's
            theirs = theirs[theirs[KEYS[table]].isin(ours.get(KEYS[table], []))]
        theirs = theirs[[c for c in ours.columns if c in theirs.columns]] if len(ours.columns) else theirs
        report.append(TableCopy(table, len(ours), checksum(ours), len(theirs), checksum(theirs)))
    return report
