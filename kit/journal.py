"""An append-only journal of ledger batches, for when DuckDB will not let kit write.

DuckDB lets one process write a file and refuses every other process, even readers. When a JupyterLab
kernel or a review notebook holds the ledger, a run keeps trading and its batches go here, fsynced; the next
writer that gets the file replays them in order and empties the journal. Replay is idempotent (events are
keyed by event_id, orders and fills carry their whole latest state), so a crash between replaying and
emptying only replays again.

A journal must survive a full disk and a crash mid-write, so each record is framed:

    MAGIC (4 bytes) | payload length (4, big-endian) | crc32 of the payload (4) | payload (ASCII JSON)
    | payload length again (4) | END (4 bytes)

The trailer lets an append check in constant time that the file ends on a whole record. The payload is
ASCII (json.dumps escapes everything else) and both markers hold a byte >= 0x80, so a marker can never
appear inside a payload: after a damaged stretch the reader finds the next record by its marker.

- An append writes the whole frame or raises LedgerWriteError naming the file; a short write is continued,
  a failed one (ENOSPC, EIO) is cut back to the last whole record first, so nothing half-written stays.
- Before appending, a file that does not end on a whole record (a crash tore the last write) has that tail
  moved aside, so a torn write is never continued.
- A record that is intact but cannot be applied (the ledger refuses its shape) is set aside the same way
  (Journal.set_aside), so one bad record never stops the records after it.
- Draining keeps every intact record and moves every damaged stretch (torn tail, bad checksum, bytes that
  are no record) aside to `<journal>.corrupt-<UTC timestamp>`; it logs what it kept and what it set aside
  and leaves the account in `Journal.last_recovery`. A bad journal never stops kit.
- Journals written before framing (one JSON line per record) are still replayed: a user upgrading with
  batches pending loses none. A line that does not parse is set aside like any damaged stretch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kit.clock import utcnow
from kit.errors import LedgerWriteError

log = logging.getLogger("kit.journal")

MAGIC = b"\x89KJ1"
END = b"\x89KJ."
_HEAD = struct.Struct(">4sII")  # magic, length, crc32
_TAIL = struct.Struct(">I4s")  # length, end marker
MAX_RECORD = 1 << 30  # a length above this is damage, not a batch


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    raise TypeError(f"cannot journal {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    return datetime.fromisoformat(obj["$t"]) if obj.keys() == {"$t"} else obj


def frame(record: dict[str, Any]) -> bytes:
    """One record as the bytes an append writes."""
    payload = json.dumps(record, default=_encode, separators=(",", ":")).encode("ascii")
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload + _TAIL.pack(len(payload), END)


def _parse(payload: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(payload.decode("utf-8"), object_hook=_decode)
    except (ValueError, TypeError, KeyError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return record if isinstance(record, dict) else None


def _frame_at(data: bytes, start: int) -> tuple[int, dict[str, Any] | None] | None:
    """The end and record of a whole framed record at `start` (record None: whole but not valid JSON),
    or None when there is no whole record there."""
    if len(data) - start < _HEAD.size + _TAIL.size:
        return None
    magic, length, crc = _HEAD.unpack_from(data, start)
    end = start + _HEAD.size + length + _TAIL.size
    if magic != MAGIC or length > MAX_RECORD or end > len(data):
        return None
    payload = data[start + _HEAD.size:end - _TAIL.size]
    if _TAIL.unpack_from(data, end - _TAIL.size) != (length, END) or zlib.crc32(payload) != crc:
        return None
    return end, _parse(payload)


def _legacy_line_at(data: bytes, start: int) -> tuple[int, dict[str, Any]] | None:
    """An old-format record: one JSON object on a line of its own, newline included. A line that does not
    parse is no record: the reader then resynchronises, so a false start never swallows the records after."""
    if data[start:start + 1] != b"{":
        return None
    newline = data.find(b"\n", start)
    record = None if newline < 0 else _parse(data[start:newline])
    return None if record is None else (newline + 1, record)


@dataclass
class Scan:
    """What a journal's bytes hold: the intact records and the damaged stretches around them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)  # [start, end) byte ranges
    legacy: int = 0  # records in the old one-line format

    @property
    def damaged_bytes(self) -> int:
        return sum(end - start for start, end in self.damaged)

    def _mark(self, start: int, end: int) -> None:
        if self.damaged and self.damaged[-1][1] == start:
            start = self.damaged.pop()[0]
        self.damaged.append((start, end))


def scan(data: bytes) -> Scan:
    """Every intact record in order; anything else is a damaged stretch, skipped up to the next record."""
    result = Scan()
    position = 0
    while position < len(data):
        framed = _frame_at(data, position)
        if framed is not None:
            end, record = framed
            if record is None:  # whole and its checksum right, yet no JSON object: set the frame aside
                result._mark(position, end)
            else:
                result.records.append(record)
            position = end
            continue
        line = _legacy_line_at(data, position)
        if line is not None:
            result.records.append(line[1])
            result.legacy += 1
            position = line[0]
            continue
        # Resynchronise: the next record starts at a marker (or, in an old journal, a line starting "{").
        candidates = [data.find(MAGIC, position + 1), data.find(b"\n{", position) + 1]
        following = min((i for i in candidates if i > position), default=len(data))
        result._mark(position, following)
        position = following
    return result


@dataclass(frozen=True)
class Recovery:
    """What a drain found: records kept (replayed) and damage moved aside to `set_aside` (None if none)."""

    kept: int
    legacy: int  # of the kept records, those in the old one-line format
    damaged: tuple[tuple[int, int], ...]  # [start, end) byte ranges of the journal as it was
    damaged_bytes: int
    set_aside: Path | None


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.last_recovery: Recovery | None = None  # the account of the last drain that found damage

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """One writer at a time, across processes: two runs locked out of the ledger may share a journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if created:
                _fsync_dir(self.path.parent)  # the file itself must survive a crash, not only its bytes
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, record: dict[str, Any]) -> None:
        """Durable before it returns (written whole and fsynced), or LedgerWriteError: then the batch is not
        in the journal and the file still ends on a whole record."""
        data = frame(record)
        try:
            with self._locked() as fd:
                start = self._whole_end(fd)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError:
                    self._cut_back(fd, start)
                    raise
        except OSError as exc:
            raise LedgerWriteError(
                f"could not write a ledger batch to {self.path}: {exc.strerror or exc} (errno {exc.errno}); "
                "the batch is not recorded") from exc

    def _cut_back(self, fd: int, size: int) -> None:
        """Undo a failed append; if even that fails, the next append or drain sets the torn tail aside."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            log.error("could not cut %s back to its last whole record at byte %d", self.path, size)

    def _whole_end(self, fd: int) -> int:
        """The file's size once it ends on a whole record: a torn tail is moved aside and cut off first."""
        size = os.fstat(fd).st_size
        if size == 0 or _ends_in_a_frame(fd, size):
            return size
        data = os.pread(fd, size, 0)
        damaged = scan(data).damaged
        good = damaged[-1][0] if damaged and damaged[-1][1] == size else size
        if good < size:
            aside = self._set_aside(data, ((good, size),))
            os.ftruncate(fd, good)
            os.fsync(fd)
            log.warning("%s ended in a torn write: moved its last %d byte(s) to %s before appending",
                        self.path, size - good, aside)
        return good

    def _set_aside(self, data: bytes, stretches: tuple[tuple[int, int], ...]) -> Path | None:
        """Write the damaged bytes, in order, to a new `<journal>.corrupt-<UTC time>` file, durably. None if
        that fails (a full disk): damaged bytes hold no intact record, and they must not block the journal."""
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        try:
            for attempt in range(100):
                path = self.path.with_name(f"{self.path.name}.corrupt-{stamp}"
                                           + (f"-{attempt}" if attempt else ""))
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                try:
                    for start, end in stretches:
                        _write_all(fd, data[start:end])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(path.parent)
                return path
        except OSError as exc:
            log.error("could not save the damaged bytes of %s aside (%s): they are dropped", self.path, exc)
        return None

    def records(self) -> list[dict[str, Any]]:
        """The intact records waiting to be written to the ledger, oldest first, left where they are."""
        if not self.path.exists():
            return []
        return scan(self.path.read_bytes()).records

    def pending(self) -> int:
        return len(self.records())

    def set_aside(self, records: list[dict[str, Any]], why: str) -> Path | None:
        """Move whole records that cannot be applied (intact, yet not a batch the ledger takes) to a
        `.corrupt-` file, as a drain does with damaged bytes, so that one bad record never blocks the rest."""
        data = b"".join(map(frame, records))
        aside = self._set_aside(data, ((0, len(data)),))
        log.warning("%s: set %d record(s) aside to %s: %s", self.path, len(records),
                    aside or "nowhere (could not write it)", why)
        return aside

    @contextmanager
    def draining(self) -> Iterator[list[dict[str, Any]]]:
        """The intact records, oldest first; the journal is emptied only if the block that applies them
        succeeds. Damaged stretches are then moved aside to a `.corrupt-` file and reported."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            yield []
            return
        with self._locked() as fd:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            found = scan(data)
            yield found.records
            aside = self._set_aside(data, tuple(found.damaged)) if found.damaged else None
            os.ftruncate(fd, 0)
            os.fsync(fd)
        if found.damaged:
            self.last_recovery = Recovery(len(found.records), found.legacy, tuple(found.damaged),
                                          found.damaged_bytes, aside)
            log.warning("%s was damaged: replayed its %d intact record(s) and moved %d damaged byte(s) "
                        "(%d stretch(es)) to %s", self.path, len(found.records), found.damaged_bytes,
                        len(found.damaged), aside or "nowhere (could not write it)")
        if found.legacy:
            log.warning("replayed %d record(s) in the old journal format from %s", found.legacy, self.path)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a nearly full disk, a signal): write the rest, or raise."""
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        if count <= 0:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[count:]


def _ends_in_a_frame(fd: int, size: int) -> bool:
    """Whether the file ends with a whole framed record: constant time, read from the trailer back."""
    if size < _HEAD.size + _TAIL.size:
        return False
    length, end = _TAIL.unpack(os.pread(fd, _TAIL.size, size - _TAIL.size))
    start = size - _HEAD.size - length - _TAIL.size
    return (end == END and length <= MAX_RECORD and start >= 0
            and _frame_at(os.pread(fd, size - start, start), 0) is not None)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
