"""An append-only journal of ledger batches, for when DuckDB will not let kit write.

DuckDB lets one process write a file and refuses every other process, even readers. When a JupyterLab
kernel or a review notebook holds the ledger, a run keeps trading and its batches go here, fsynced, one
JSON line each; the next writer that gets the file replays them in order and empties the journal. Replay is
idempotent (events are keyed by event_id, orders and fills carry their whole latest state), so a crash
between replaying and emptying only replays again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    raise TypeError(f"cannot journal {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    return datetime.fromisoformat(obj["$t"]) if obj.keys() == {"$t"} else obj


class Journal:
    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """One writer at a time, across processes: two runs locked out of the ledger may share a journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, record: dict[str, Any]) -> None:
        """Durable before it returns: the line is fsynced."""
        line = json.dumps(record, default=_encode, separators=(",", ":")) + "\n"
        with self._locked() as fd:
            os.write(fd, line.encode())
            os.fsync(fd)

    def pending(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))

    @contextmanager
    def draining(self) -> Iterator[list[dict[str, Any]]]:
        """The journaled records, oldest first; emptied only if the block that applies them succeeds.

        A last line without its newline is a write torn by a crash: it never returned, so it is dropped.
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            yield []
            return
        with self._locked() as fd:
            with open(fd, "rb", closefd=False) as handle:
                handle.seek(0)
                lines = [line for line in handle.read().split(b"\n")[:-1] if line]
            yield [json.loads(line, object_hook=_decode) for line in lines]
            os.ftruncate(fd, 0)
            os.fsync(fd)
