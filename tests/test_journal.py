"""The journal of batches that wait for a held ledger: it never tears, never blocks kit, and loses no intact
record whatever a crash, a full disk or a flipped bit did to its file."""

from __future__ import annotations

import errno
import json
import logging
import os
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.errors import LedgerWriteError
from kit.journal import Journal, frame

RECORDS = [
    {"events": [["e1", "r1", None, 1, datetime(2026, 1, 2, 3, 4, 5), "note", None, "{}"]], "runs": {}},
    {"events": [], "orders": [["k-AAPL-BUY", "r1", "AAPL", "BUY", 100.0]],
     "runs": {"r1": {"status": "done"}}},
    {"note": "caf\u00e9 \u2603", "n": 3},
]


def journal_with(tmp_path, records) -> Journal:
    journal = Journal(tmp_path / "kit.duckdb.journal")
    for record in records:
        journal.append(record)
    return journal


def drained(journal: Journal) -> list[dict]:
    with journal.draining() as records:
        return list(records)


def aside_files(journal: Journal) -> list:
    return sorted(journal.path.parent.glob(journal.path.name + ".corrupt-*"))


def test_records_come_back_in_order_with_their_datetimes_and_the_journal_empties(tmp_path):
    journal = journal_with(tmp_path, RECORDS)
    assert journal.pending() == 3
    assert drained(journal) == RECORDS
    assert journal.pending() == 0 and journal.path.stat().st_size == 0
    assert drained(journal) == []  # replayed once
    assert aside_files(journal) == [] and journal.last_recovery is None


def test_a_failing_replay_keeps_every_record_for_the_next_drain(tmp_path):
    journal = journal_with(tmp_path, RECORDS)
    with pytest.raises(RuntimeError), journal.draining():
        raise RuntimeError("the ledger refused the batch")
    assert drained(journal) == RECORDS


def test_a_journal_torn_at_every_byte_offset_of_its_last_record_is_recovered_without_loss(tmp_path, caplog):
    """A crash may cut the last append anywhere: the intact records replay, the torn bytes are set aside
    to a named file, and the next append starts on a clean boundary instead of continuing the torn one."""
    whole = journal_with(tmp_path / "whole", RECORDS).path.read_bytes()
    last = len(frame(RECORDS[-1]))
    for cut in range(len(whole) - last, len(whole)):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        journal = Journal(folder / "j")
        journal.path.write_bytes(whole[:cut])
        torn = whole[len(whole) - last:cut]
        assert journal.pending() == 2
        if cut % 2:  # odd cuts: an append comes first and must not continue the torn record
            journal.append({"after": cut})
            assert journal.path.read_bytes() == whole[:len(whole) - last] + frame({"after": cut}), cut
            expected = [*RECORDS[:2], {"after": cut}]
        else:
            expected = RECORDS[:2]
        with caplog.at_level(logging.WARNING, logger="kit.journal"):
            assert drained(journal) == expected, cut
        saved = b"".join(p.read_bytes() for p in aside_files(journal))
        assert saved == torn, cut
        if torn and cut % 2 == 0:
            assert journal.last_recovery.kept == 2
            assert journal.last_recovery.damaged_bytes == len(torn)
            assert journal.last_recovery.set_aside == aside_files(journal)[0]
            assert str(journal.last_recovery.set_aside) in caplog.text


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_flipped_byte_anywhere_in_a_record_costs_that_record_only(tmp_path, which):
    whole = journal_with(tmp_path / "whole", RECORDS).path.read_bytes()
    sizes = [len(frame(r)) for r in RECORDS]
    start = sum(sizes[:which])
    for offset in range(start, start + sizes[which]):
        journal = Journal(tmp_path / f"flip{offset}")
        damaged = bytearray(whole)
        damaged[offset] ^= 0x40
        journal.path.write_bytes(bytes(damaged))
        survivors = [r for i, r in enumerate(RECORDS) if i != which]
        assert drained(journal) == survivors, offset
        assert journal.last_recovery.damaged_bytes == sizes[which], offset


def test_garbage_never_raises_and_is_set_aside(tmp_path):
    journal = Journal(tmp_path / "j")
    garbage = b"\xff\xfe not json {\"a\": \n\x00\x89KJ1\x00\x00\x00\x05" + os.urandom(64)
    journal.path.write_bytes(garbage)
    assert journal.pending() == 0
    assert drained(journal) == []
    assert b"".join(p.read_bytes() for p in aside_files(journal)) == garbage


def test_an_old_journal_of_json_lines_is_still_replayed(tmp_path):
    """A user upgrading kit with batches pending loses none of them; a torn old line is set aside."""
    journal = Journal(tmp_path / "j")
    lines = [json.dumps({"events": [["e1", {"$t": "2026-01-02T03:04:05"}]]}), json.dumps({"b": 2})]
    journal.path.write_bytes(("\n".join(lines) + "\n" + '{"c": ').encode())
    journal.append({"new": 1})
    assert drained(journal) == [{"events": [["e1", datetime(2026, 1, 2, 3, 4, 5)]]}, {"b": 2}, {"new": 1}]
    assert b"".join(p.read_bytes() for p in aside_files(journal)) == b'{"c": '


def test_a_short_write_is_completed(tmp_path, monkeypatch):
    journal = journal_with(tmp_path, RECORDS[:1])
    real_write = os.write

    def half(fd, data):
        return real_write(fd, bytes(data[:max(1, len(data) // 2)]))

    monkeypatch.setattr(os, "write", half)
    journal.append(RECORDS[1])
    monkeypatch.undo()
    assert drained(journal) == RECORDS[:2]


def test_a_full_disk_raises_a_ledger_write_error_naming_the_file_and_tears_nothing(tmp_path, monkeypatch):
    journal = journal_with(tmp_path, RECORDS[:1])
    before = journal.path.read_bytes()
    real_write = os.write
    calls = []

    def fills_the_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:7]))  # the disk takes a few bytes, then is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", fills_the_disk)
    with pytest.raises(LedgerWriteError, match=rf"{journal.path}.*No space left on device.*not recorded"):
        journal.append(RECORDS[1])
    monkeypatch.undo()
    assert journal.path.read_bytes() == before  # the 7 bytes were cut back
    journal.append(RECORDS[2])
    assert drained(journal) == [RECORDS[0], RECORDS[2]]


def test_a_failed_fsync_is_a_ledger_write_error(tmp_path, monkeypatch):
    journal = journal_with(tmp_path, RECORDS[:1])

    def broken(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(LedgerWriteError, match="Input/output error"):
        journal.append(RECORDS[1])
    monkeypatch.undo()
    assert drained(journal) == RECORDS[:1]


# ---- property: any list of records, cut anywhere, gives back every record that was whole ---------------

keys = st.text(max_size=8).filter(lambda k: k != "$t")  # "$t" is how a datetime is journaled
values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
                      | st.floats(allow_nan=False, allow_infinity=False),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                                   max_size=4), max_leaves=12)
records = st.lists(st.dictionaries(keys, values, max_size=5), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records, st.data())
def test_any_truncation_or_flip_keeps_every_whole_record(tmp_path_factory, batch, data):
    journal = journal_with(tmp_path_factory.mktemp("j"), batch)
    whole = journal.path.read_bytes()
    ends = [0]
    for record in batch:
        ends.append(ends[-1] + len(frame(record)))
    cut = data.draw(st.integers(0, len(whole)))
    damaged = bytearray(whole[:cut])
    flipped = None
    if damaged and data.draw(st.booleans()):
        flipped = data.draw(st.integers(0, len(damaged) - 1))
        damaged[flipped] ^= data.draw(st.integers(1, 255))
    journal.path.write_bytes(bytes(damaged))
    expected = [r for i, r in enumerate(batch)
                if ends[i + 1] <= cut and (flipped is None or not ends[i] <= flipped < ends[i + 1])]
    journal.append({"after": True})
    assert drained(journal) == [*expected, {"after": True}]


def test_a_damaged_journal_next_to_the_ledger_blocks_no_read_and_loses_no_batch(tmp_path, caplog):
    """The issue's case: a torn or corrupt journal used to stop `kit runs`, kit.execute and every read with
    a raw JSONDecodeError. Now the reader replays the intact batch and sets the rest aside."""
    import kit
    from kit.recorder import event_row
    from kit.store import Batch, Ledger

    db = tmp_path / "kit.duckdb"
    Ledger(db).open().close()
    batch = Batch(events=[event_row("e1", "r1", None, 1, datetime(2026, 1, 2), "note", None, {"why": "t"})])
    journal = Ledger(db).journal
    journal.path.write_bytes(b'{"events": [[\n\x00garbage' + frame(batch.to_record()) + frame({"x": 1})[:-3])
    with caplog.at_level(logging.WARNING, logger="kit.journal"):
        assert list(kit.ledger(db).events()["event_id"]) == ["e1"]
    assert journal.pending() == 0
    assert len(aside_files(journal)) == 1 and "moved" in caplog.text


def test_a_locked_out_batch_that_cannot_be_journaled_raises_instead_of_vanishing(tmp_path, monkeypatch):
    """What the engine sees when the ledger is held and the disk is full: LedgerWriteError naming the
    journal, so it can stop sending orders it could not record."""
    from kit.recorder import event_row
    from kit.store import Batch, Ledger

    ledger = Ledger(tmp_path / "kit.duckdb")
    monkeypatch.setattr(ledger, "_connect", lambda: False)  # another process holds the file

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    batch = Batch(events=[event_row("e1", "r1", None, 1, datetime(2026, 1, 2), "note", None, {})])
    with pytest.raises(LedgerWriteError, match=str(ledger.journal.path)):
        ledger.write(batch)
    monkeypatch.undo()
    assert ledger.journal.pending() == 0
