"""The journal's replay on both ledgers (one loop, Ledger._replay_journal): what each backend tells apart in
its own terms. A failure of the storage itself keeps every record for the next open; a record the ledger
refuses is set aside with the ledger's reason on one line and the rest is written; fills of a journal
older than execution keys get theirs from the backend's own SQL."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from pathlib import Path

import pytest

from kit.errors import LedgerBusyError, LedgerWriteError
from kit.recorder import event_row
from kit.store import Batch, Ledger

FILL_ROW = ["0001.5f.01.02", "k-AAPL-BUY", "r1", "AAPL", "BUY", 10.0, 190.0, 1.0, "USD", "NYSE",
            datetime(2026, 1, 2, 15)]  # a fill row in column order, as kit journaled it before execution keys


def good(n: int) -> dict:
    return Batch(events=[event_row(f"e{n}", "r1", None, n, datetime(2026, 1, 2, 10, n), "note", None,
                                   {"n": n})]).to_record()


def aside(ledger: Ledger) -> list[Path]:
    return sorted(ledger.journal.path.parent.glob(ledger.journal.path.name + ".corrupt-*"))


def storage_failure(ledger: Ledger) -> Exception:
    """What this backend raises when its storage, not the record, fails."""
    if type(ledger).__name__ == "PgLedger":
        import psycopg

        return psycopg.OperationalError("server closed the connection unexpectedly")
    import duckdb

    return duckdb.OperationalError("IO Error: could not write to the WAL (disk full)")


def test_a_failing_storage_during_replay_keeps_every_record_and_sets_none_aside(ledger_db, monkeypatch):
    Ledger(ledger_db).open().close()
    journal = Ledger(ledger_db).journal
    for n in (1, 2, 3):
        journal.append(good(n))
    ledger = Ledger(ledger_db)
    applied: list[int] = []
    apply = type(ledger)._apply

    def fails_at_the_second(self, batch):
        if len(applied) == 1:
            raise storage_failure(self)
        applied.append(len(batch))
        apply(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(type(ledger), "_apply", fails_at_the_second)
        with contextlib.suppress(LedgerWriteError, LedgerBusyError):  # DuckDB's words; PostgreSQL's
            ledger.open()
        ledger.close()
    assert applied == [1]
    assert journal.pending() == 3 and aside(ledger) == []  # the first is written again: replay is idempotent
    with Ledger(ledger_db) as reopened:
        assert reopened.events()["event_id"].tolist() == ["e1", "e2", "e3"]
    assert journal.pending() == 0


def test_a_refused_record_is_set_aside_with_the_ledgers_reason(ledger_db, caplog):
    """DuckDB's reason as DuckDB words it; the server's on one line (its message has a DETAIL line)."""
    Ledger(ledger_db).open().close()
    journal = Ledger(ledger_db).journal
    orphan = [FILL_ROW[0], None, *FILL_ROW[2:]]  # intact, but a fill without its order: NOT NULL refuses it
    journal.append(good(1))
    journal.append({**good(0), "events": [], "fills": [orphan]})
    journal.append(good(2))
    with caplog.at_level(logging.WARNING, logger="kit"), Ledger(ledger_db) as ledger:
        assert ledger.events()["event_id"].tolist() == ["e1", "e2"] and ledger.fills().empty
    assert journal.pending() == 0 and len(aside(ledger)) == 1
    (note,) = [r.getMessage() for r in caplog.records if "aside" in r.getMessage()]
    reason = note.split("the ledger refused them: ", 1)[1]
    assert "client_order_id" in reason, reason
    if type(ledger).__name__ == "PgLedger":
        assert reason.startswith("NotNullViolation: ") and "\n" not in reason and "DETAIL" in reason, reason
    else:
        assert reason.startswith("ConstraintException: "), reason


def test_fills_of_a_journal_older_than_execution_keys_get_them_when_replayed(ledger_db):
    Ledger(ledger_db).open().close()
    journal = Ledger(ledger_db).journal
    old = [[exec_id, *FILL_ROW[1:]] for exec_id in ("0001.5f.01.02", "plain")]  # no execution_key, revision
    journal.append({"events": [], "orders": [], "fills": old, "replaced_fills": [], "runs": {}})
    with Ledger(ledger_db) as ledger:
        fills = ledger.fills().set_index("exec_id")
    assert fills.loc["0001.5f.01.02", ["execution_key", "revision"]].tolist() == ["0001.5f.01", 2]
    assert fills.loc["plain", ["execution_key", "revision"]].tolist() == ["plain", 0]
    assert journal.pending() == 0


@pytest.fixture(autouse=True)
def _no_stray_journal(ledger_db):
    """A PostgreSQL ledger's journal lives in the session's journal folder, one per database: start empty."""
    journal = Ledger(ledger_db).journal
    assert journal.pending() == 0
