"""One process at a time executes a run key.

Two processes on one run key would each list the broker, each follow the same orders and each write their
events: no order goes out twice (the broker's listing sees to that), but the ledger gets stale rows and
duplicate event sequence numbers. A second process therefore refuses at once, naming the holder, rather
than waiting behind a run that may last a trading day.

On one machine the lock is a file under kit.config.lock_dir() held with fcntl.flock: the kernel lets go of
it when the holder dies (SIGKILL included), so a dead holder never blocks. A ledger shared by several
machines (PostgreSQL) needs a lease in the database instead; RunLock is the small interface it would fill.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from kit.clock import utcnow
from kit.config import lock_dir
from kit.errors import RunKeyBusyError


class RunLock(AbstractContextManager["RunLock"]):
    """Held while a run key executes; refuses (RunKeyBusyError) when another live process holds it."""

    def __init__(self, run_key: str, directory: Path | None = None):
        self.run_key = run_key
        digest = hashlib.sha256(run_key.encode()).hexdigest()[:16]  # any run key makes a safe file name
        self.path = (directory or lock_dir()) / f"run-{digest}.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RunKeyBusyError(f"run_key {self.run_key!r} is already executing in another process "
                                  f"({holder}); nothing was sent. Wait for it to finish, then run the key "
                                  "again to resume it.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run_key": self.run_key, "pid": os.getpid(), "host": socket.gethostname(),
                                 "started_at": f"{utcnow():%Y-%m-%d %H:%M:%S} UTC"}))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its details yet"
