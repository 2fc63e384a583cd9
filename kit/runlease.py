"""One process per run key across machines: a lease the PostgreSQL ledger's server enforces.

kit.runlock's file lock covers one machine. With a shared PostgreSQL ledger a second worker on another host
must be refused too, so a run also holds a session-level advisory lock (pg_try_advisory_lock) on an id
derived from its run key, in a session of its own kept for the run's life. The server frees it when that
session ends: a clean exit, a killed process (its socket closes), or a vanished host once TCP keepalives
give up on it (the session asks the server to probe every few seconds). Nothing is written to the database
for it: the holder is named from the server's own views (pg_locks joined to pg_stat_activity, where the
session's application_name carries the holder's pid and host and backend_start its start).

Advisory locks do not outlive the server: after a server restart a run takes its lease again before it
writes again (kit.store_pg calls `ensure` at every reconnect), and stops if another process took it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from kit.errors import LedgerBusyError, LedgerIdentityError, RunKeyBusyError

if TYPE_CHECKING:
    from kit.store_pg import PgLedger

_NAME = re.compile(r"^kit run (\d+)@(.*)$")
# The server probes the lease's client this often (seconds) and gives up after this many silent probes.
KEEPALIVE = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


def lease_id(run_key: str) -> int:
    """The advisory lock's 64-bit id for a run key (signed, as PostgreSQL's bigint)."""
    digest = hashlib.sha256(b"kit run key\0" + run_key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RunLease(AbstractContextManager["RunLease"]):
    """Held while a run key executes against a PostgreSQL ledger; RunKeyBusyError names a live holder."""

    def __init__(self, ledger: PgLedger, run_key: str):
        self.ledger = ledger
        self.run_key = run_key
        self.id = lease_id(run_key)
        self._con: psycopg.Connection | None = None
        self.backend_pid = 0

    def acquire(self) -> RunLease:
        options = " ".join(f"-c {name}={value}" for name, value in KEEPALIVE.items())
        try:
            con = self.ledger.connect(application_name=f"kit run {os.getpid()}@{socket.gethostname()}"[:63],
                                      options=f"-c idle_session_timeout=0 {options}")
        except psycopg.OperationalError as exc:
            raise LedgerBusyError(f"cannot take the lease on run_key {self.run_key!r}: the ledger "
                                  f"{self.ledger.shown} does not answer ({self.ledger._reason(exc)}); "
                                  "nothing was sent") from None
        try:
            taken = con.execute("SELECT pg_try_advisory_lock(%s)", [self.id]).fetchone()[0]
            if not taken:
                holder = self._holder(con)
                raise RunKeyBusyError(f"run_key {self.run_key!r} is already executing in another process "
                                      f"({holder}), by the ledger {self.ledger.shown}; nothing was sent. "
                                      "Wait for it to finish, then run the key again to resume it.")
        except BaseException:
            con.close()
            raise
        self._con = con
        self.backend_pid = con.info.backend_pid
        self.ledger._lease = self
        return self

    def held_sql(self) -> tuple[str, list[int]]:
        """A query any session can run, inside its own transaction, that is true while this lease's session
        still holds the lock: the fence every batch of the run checks before it commits."""
        return ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
                [self.backend_pid, *self._halves()])

    def _halves(self) -> list[int]:
        return [(self.id >> 32) & 0xFFFFFFFF, self.id & 0xFFFFFFFF]

    def _holder(self, con: psycopg.Connection) -> str:
        row = con.execute(
            "SELECT a.application_name, a.backend_start, a.client_addr::text FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 1",
            self._halves()).fetchone()
        if row is None:
            return "holder unknown: it let go just now; try again"
        name, started, address = row
        match = _NAME.match(name or "")
        who = f"pid {match.group(1)} on {match.group(2)}" if match else f"session {name!r}"
        where = f" from {address}" if address else ""
        return f"{who}{where}, started {started:%Y-%m-%d %H:%M:%S} UTC"

    def alive(self) -> bool:
        if self._con is None or self._con.closed:
            return False
        try:
            self._con.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def ensure(self) -> None:
        """Take the lease again if its session ended (a server restart); a run whose key another process
        took meanwhile must stop writing (LedgerIdentityError fails the run)."""
        if self.alive():
            return
        self._close()
        try:
            self.acquire()
        except RunKeyBusyError as exc:
            raise LedgerIdentityError(f"this run lost its lease on run_key {self.run_key!r} (the ledger's "
                                      f"server restarted) and another process holds it now: {exc}") from None

    def _close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(psycopg.Error):
                con.close()  # ending the session frees the advisory lock

    def release(self) -> None:
        if self.ledger._lease is self:
            self.ledger._lease = None
        self._close()

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
