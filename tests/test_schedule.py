"""Scheduling decisions of `kit schedule`, with a fake clock: nothing here sleeps, and only the CLI test
(`--once` end to end) reads the wall clock. The lock test uses a second process, as a real overlap would.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.cli import main
from kit.errors import JobLocked, ScheduleError
from kit.ids import check_run_key
from kit.schedule import Outcome, StateFile, acquire, load_jobs, run_forever, run_once
from kit.slots import MAX_NAME, Job, due, next_slot, parse_jobs, run_key, slots

REPO = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "expected" / "schedule"
NEW_YORK, PARIS = ZoneInfo("America/New_York"), ZoneInfo("Europe/Paris")
NOTEBOOK = "notebooks/momentum.ipynb"

CLOSE = Job(name="momentum-close", notebook=NOTEBOOK, at="close-15min", calendar="XNYS")
NY_1545 = Job(
    name="ny-1545", notebook=NOTEBOOK, cron="45 15 * * mon-fri", timezone="America/New_York", calendar="XNYS"
)
PARIS_OPEN = Job(
    name="paris-open", notebook=NOTEBOOK, cron="5 9 * * mon-fri", timezone="Europe/Paris", calendar="XPAR"
)
CLOSE_CATCH_UP = Job(
    name="close-catch-up", notebook=NOTEBOOK, at="close-15min", calendar="XNYS", missed="catch_up"
)
EVERY_2H = Job(
    name="every-2h",
    notebook=NOTEBOOK,
    cron="17 */2 * * *",
    timezone="UTC",
    missed="catch_up",
    grace=timedelta(minutes=3),
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def day(job: Job, year: int, month: int, dom: int, tz: ZoneInfo = NEW_YORK) -> list[datetime]:
    """The job's slots on one local calendar day."""
    start = datetime(year, month, dom, tzinfo=tz)
    return slots(job, start, start + timedelta(days=1))


class MemoryState:
    def __init__(self, last: dict[str, datetime] | None = None) -> None:
        self.data = dict(last or {})

    def last(self, job: str) -> datetime | None:
        return self.data.get(job)

    def record(self, job: str, slot: datetime) -> None:
        self.data[job] = slot


class Recorder:
    """A runner that remembers its calls instead of running a notebook."""

    def __init__(self, fail: Iterable[str] = ()) -> None:
        self.calls: list[tuple[str, datetime, str]] = []
        self.fail = set(fail)

    def __call__(self, job: Job, slot: datetime, key: str) -> None:
        self.calls.append((job.name, slot, key))
        if job.name in self.fail:
            raise RuntimeError("notebook raised")


# --- expected slots for a month, exchange_calendars style -------------------------------------------------

MONTHS = [
    (CLOSE, NEW_YORK, "2026-11-01", "2026-12-01", "momentum-close_2026-11.csv"),
    (NY_1545, NEW_YORK, "2026-03-01", "2026-04-01", "ny-1545_2026-03.csv"),
    (PARIS_OPEN, PARIS, "2026-03-16", "2026-04-16", "paris-open_2026-03-16_2026-04-15.csv"),
]


@pytest.mark.parametrize(("job", "tz", "start", "end", "filename"), MONTHS, ids=[m[-1] for m in MONTHS])
def test_slots_of_a_month_match_expected_file(job: Job, tz: ZoneInfo, start: str, end: str, filename: str):
    """The files were checked by hand against the exchanges' holidays, early closes and DST dates.
    After a deliberate change, regenerate them with KITTEST_UPDATE_EXPECTED=1 and review the diff."""
    window = [datetime.fromisoformat(bound).replace(tzinfo=tz) for bound in (start, end)]
    rows = [["slot_utc", "slot_local", "run_key"]]
    rows += [[s.isoformat(), s.astimezone(tz).isoformat(), run_key(job, s)] for s in slots(job, *window)]
    path = EXPECTED / filename
    if os.environ.get("KITTEST_UPDATE_EXPECTED"):
        with path.open("w", newline="") as out:
            csv.writer(out).writerows(rows)
    with path.open(newline="") as expected:
        assert list(csv.reader(expected)) == rows


# --- calendar: holidays, early closes, DST, another exchange ----------------------------------------------


def test_no_run_on_thanksgiving():
    assert day(CLOSE, 2026, 11, 26) == []
    assert day(NY_1545, 2026, 11, 26) == []
    assert due(CLOSE, utc(2026, 11, 26, 20, 50), utc(2026, 11, 25, 20, 45)) is None
    assert due(CLOSE_CATCH_UP, utc(2026, 11, 26, 20, 50), utc(2026, 11, 25, 20, 45)) is None
    without_calendar = Job(name="no-cal", notebook=NOTEBOOK, cron="45 15 * * *", timezone="America/New_York")
    assert day(without_calendar, 2026, 11, 26) == [utc(2026, 11, 26, 20, 45)]


def test_close_minus_15_follows_early_closes():
    assert day(CLOSE, 2026, 11, 25) == [utc(2026, 11, 25, 20, 45)]  # 15:45 ET
    assert day(CLOSE, 2026, 11, 27) == [utc(2026, 11, 27, 17, 45)]  # day after Thanksgiving: close 13:00 ET
    assert day(CLOSE, 2026, 12, 24) == [utc(2026, 12, 24, 17, 45)]  # Christmas Eve
    open_plus_5 = Job(name="open-5", notebook=NOTEBOOK, at="open+5min", calendar="XNYS")
    assert day(open_plus_5, 2026, 11, 27) == [utc(2026, 11, 27, 14, 35)]  # the open does not move
    assert due(CLOSE, utc(2026, 11, 27, 17, 46), None) == utc(2026, 11, 27, 17, 45)


def test_cron_on_a_calendar_runs_at_its_own_time_on_early_closes():
    """A cron job keeps its wall-clock time; only an `at` job follows the early close."""
    assert day(NY_1545, 2026, 11, 27) == [utc(2026, 11, 27, 20, 45)]


@pytest.mark.parametrize("job", [NY_1545, CLOSE], ids=["cron", "at"])
def test_new_york_1545_shifts_in_utc_with_dst(job: Job):
    assert day(job, 2026, 3, 6) == [utc(2026, 3, 6, 20, 45)]  # EST, UTC-5
    assert day(job, 2026, 3, 9) == [utc(2026, 3, 9, 19, 45)]  # EDT from 2026-03-08
    assert day(job, 2026, 10, 30) == [utc(2026, 10, 30, 19, 45)]
    assert day(job, 2026, 11, 2) == [utc(2026, 11, 2, 20, 45)]  # EST again from 2026-11-01


def test_dst_gap_and_repeated_hour_each_run_once():
    skipped = Job(name="at-0230", notebook=NOTEBOOK, cron="30 2 * * *", timezone="America/New_York")
    assert day(skipped, 2026, 3, 8) == [utc(2026, 3, 8, 7, 30)]  # 02:30 does not exist: runs at 03:30 EDT
    repeated = Job(name="at-0130", notebook=NOTEBOOK, cron="30 1 * * *", timezone="America/New_York")
    assert day(repeated, 2026, 11, 1) == [utc(2026, 11, 1, 5, 30)]  # 01:30 happens twice: the first one


def test_paris_job_on_xpar():
    assert day(PARIS_OPEN, 2026, 3, 27, PARIS) == [utc(2026, 3, 27, 8, 5)]  # CET, UTC+1
    assert day(PARIS_OPEN, 2026, 3, 30, PARIS) == [utc(2026, 3, 30, 7, 5)]  # CEST from 2026-03-29
    assert day(PARIS_OPEN, 2026, 4, 3, PARIS) == []  # Good Friday
    assert day(PARIS_OPEN, 2026, 4, 6, PARIS) == []  # Easter Monday
    paris_close = Job(name="paris-close", notebook=NOTEBOOK, at="close-15min", calendar="XPAR")
    assert day(paris_close, 2026, 12, 23, PARIS) == [utc(2026, 12, 23, 16, 15)]  # 17:30 CET close
    assert day(paris_close, 2026, 12, 24, PARIS) == [utc(2026, 12, 24, 12, 50)]  # 14:05 CET early close


def test_next_slot_skips_holidays_and_gives_up_on_a_job_that_never_runs():
    assert next_slot(CLOSE, utc(2026, 11, 25, 20, 45)) == utc(2026, 11, 27, 17, 45)
    assert next_slot(CLOSE, utc(2026, 11, 25, 20, 44)) == utc(2026, 11, 25, 20, 45)
    christmas = Job(name="xmas", notebook=NOTEBOOK, cron="0 12 25 12 *", timezone="UTC", calendar="XNYS")
    assert next_slot(christmas, utc(2026, 1, 1)) is None


def test_naive_datetimes_are_refused():
    with pytest.raises(ScheduleError, match="no time zone"):
        due(CLOSE, datetime(2026, 11, 25, 20, 50), None)


# --- missed runs ------------------------------------------------------------------------------------------


def test_skip_runs_the_latest_slot_only_within_grace():
    slot = utc(2026, 11, 25, 20, 45)
    assert due(CLOSE, slot - timedelta(minutes=1), None) is None
    assert due(CLOSE, slot, None) == slot
    assert due(CLOSE, slot + timedelta(minutes=10), None) == slot
    assert due(CLOSE, slot + timedelta(minutes=10, seconds=1), None) is None
    assert due(CLOSE, slot + timedelta(minutes=5), slot) is None
    patient = Job(
        name="patient", notebook=NOTEBOOK, at="close-15min", calendar="XNYS", grace=timedelta(hours=1)
    )
    assert due(patient, slot + timedelta(minutes=59), None) == slot


@pytest.mark.parametrize(("job", "expected"), [(CLOSE, []), (CLOSE_CATCH_UP, [utc(2026, 11, 20, 20, 45)])])
def test_three_day_outage(job: Job, expected: list[datetime], tmp_path: Path):
    """Last run Wednesday; back on Monday morning. catch_up runs Friday's slot once, never Thursday's too."""
    state = MemoryState({job.name: utc(2026, 11, 18, 20, 45)})
    runner = Recorder()
    monday_morning = utc(2026, 11, 23, 15, 0)
    for _ in range(3):
        run_once([job], monday_morning, state, runner, tmp_path)
    assert [slot for _, slot, _ in runner.calls] == expected
    run_once([job], utc(2026, 11, 23, 20, 46), state, runner, tmp_path)  # Monday's own slot runs as usual
    assert [slot for _, slot, _ in runner.calls] == [*expected, utc(2026, 11, 23, 20, 45)]


def test_catch_up_without_history_behaves_as_skip():
    """A job never run has missed nothing: adding it at 16:00 must not fire 15:45 after the close."""
    assert due(CLOSE_CATCH_UP, utc(2026, 11, 25, 21, 0), None) is None
    assert due(CLOSE_CATCH_UP, utc(2026, 11, 25, 20, 50), None) == utc(2026, 11, 25, 20, 45)


# --- run_key ----------------------------------------------------------------------------------------------


def test_run_key_is_deterministic_short_and_per_slot():
    slot = utc(2026, 11, 20, 20, 45)
    assert run_key(CLOSE, slot) == "momentum-close-2026-11-20T2045Z"
    assert run_key(CLOSE, slot.astimezone(NEW_YORK)) == run_key(CLOSE, slot)
    longest = Job(name="n" * MAX_NAME, notebook=NOTEBOOK, at="close", calendar="XNYS")
    assert len(run_key(longest, slot)) <= 40
    keys = [run_key(CLOSE, s) for s in slots(CLOSE, utc(2026, 1, 1), utc(2027, 1, 1))]
    assert len(keys) == len(set(keys)) == 251  # XNYS sessions in 2026


# --- overlap: the per-job lock ----------------------------------------------------------------------------

HOLDER = """
import sys, time
from kit.schedule import acquire
from kit.slots import Job
job = Job(name=sys.argv[1], notebook="n.ipynb", at="close-15min", calendar="XNYS")
with acquire(job, sys.argv[2]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_lock_held_by_another_process_blocks_the_run_until_that_process_dies(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, CLOSE.name, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(JobLocked, match=f"pid {holder.pid}"), acquire(CLOSE, tmp_path):
            pass
        state, runner, now = MemoryState(), Recorder(), utc(2026, 11, 25, 20, 46)
        slot = utc(2026, 11, 25, 20, 45)
        [locked] = run_once([CLOSE], now, state, runner, tmp_path)
        assert locked == Outcome(CLOSE.name, slot, run_key(CLOSE, slot), "locked", locked.error)
        assert f"already running (pid {holder.pid}" in locked.error
        assert runner.calls == [] and state.data == {}
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel alone releases the lock
        holder.wait()
    assert [o.status for o in run_once([CLOSE], now, state, runner, tmp_path)] == ["ran"]
    assert state.data == {CLOSE.name: slot}


def test_lock_is_not_reentrant_and_is_released_on_exit(tmp_path: Path):
    with acquire(CLOSE, tmp_path), pytest.raises(JobLocked), acquire(CLOSE, tmp_path):
        pass
    with acquire(CLOSE, tmp_path), acquire(NY_1545, tmp_path):  # other jobs are independent
        pass


# --- run_once and run_forever -----------------------------------------------------------------------------


def test_run_once_runs_each_due_slot_once_and_records_it(tmp_path: Path):
    state, runner, now = MemoryState(), Recorder(), utc(2026, 11, 25, 20, 50)
    outcomes = run_once([CLOSE, NY_1545, PARIS_OPEN], now, state, runner, tmp_path)
    slot = utc(2026, 11, 25, 20, 45)
    assert [(o.job, o.status) for o in outcomes] == [("momentum-close", "ran"), ("ny-1545", "ran")]
    assert runner.calls == [
        ("momentum-close", slot, "momentum-close-2026-11-25T2045Z"),
        ("ny-1545", slot, "ny-1545-2026-11-25T2045Z"),
    ]
    assert state.data == {"momentum-close": slot, "ny-1545": slot}
    assert run_once([CLOSE, NY_1545, PARIS_OPEN], now, state, runner, tmp_path) == []
    assert len(runner.calls) == 2


def test_a_failing_job_is_recorded_and_does_not_stop_the_others(tmp_path: Path):
    state, runner, now = MemoryState(), Recorder(fail={"momentum-close"}), utc(2026, 11, 25, 20, 50)
    outcomes = run_once([CLOSE, NY_1545], now, state, runner, tmp_path)
    assert [(o.status, o.error) for o in outcomes] == [
        ("failed", "RuntimeError: notebook raised"),
        ("ran", None),
    ]
    assert set(state.data) == {"momentum-close", "ny-1545"}


def test_run_once_decides_again_under_the_lock(tmp_path: Path):
    """Another `--once` process ran the slot between our first look and our taking the lock."""
    slot = utc(2026, 11, 25, 20, 45)

    class RacedState(MemoryState):
        def last(self, job: str) -> datetime | None:
            seen, self.data[job] = self.data.get(job), slot
            return seen

    runner = Recorder()
    assert run_once([CLOSE], slot, RacedState(), runner, tmp_path) == []
    assert runner.calls == []


class FakeClock:
    """Time moves only when the scheduler waits; stops the loop after `runs` runs."""

    def __init__(self, now: datetime, runner: Recorder, runs: int) -> None:
        self.now, self.runner, self.runs = now, runner, runs
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)
        return len(self.runner.calls) >= self.runs


def test_run_forever_wakes_at_each_slot_without_polling(tmp_path: Path):
    runner = Recorder()
    clock = FakeClock(utc(2026, 11, 25, 20, 0), runner, runs=2)
    started: list[datetime] = []

    def run(job: Job, slot: datetime, key: str) -> None:
        started.append(clock.now)
        runner(job, slot, key)

    run_forever([CLOSE], run, state=MemoryState(), lock_dir=tmp_path, clock=clock, wait=clock.wait)
    assert started == [utc(2026, 11, 25, 20, 45), utc(2026, 11, 27, 17, 45)]  # not a second late
    assert [slot for _, slot, _ in runner.calls] == started
    # The ~45 hours in between pass in waits of at most 5 minutes (so a suspend is noticed), not seconds.
    assert max(clock.waits) == 300 and len(clock.waits) < 600


# --- job files ------------------------------------------------------------------------------------------

GOOD = {"name": "bad-job", "notebook": NOTEBOOK, "cron": "45 15 * * mon-fri", "timezone": "America/New_York"}


def toml(**changes: object) -> str:
    """A one-job file: GOOD with `changes` applied; None removes a field."""
    fields = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return "[[job]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items())


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # a JSON string or number is a valid TOML one


BAD_FILES = {
    "missing notebook": (toml(notebook=None), "job 'bad-job': notebook: missing"),
    "not a notebook": (
        toml(notebook="momentum.py"),
        "job 'bad-job': notebook: must be the path of an .ipynb",
    ),
    "bad cron": (toml(cron="61 * * * *"), "job 'bad-job': cron: '61 * * * *' is not a usable cron"),
    "cron never matches": (toml(cron="0 0 30 2 *"), "job 'bad-job': cron: '0 0 30 2 *' is not a usable"),
    "cron with seconds": (toml(cron="0 45 15 * * *"), "job 'bad-job': cron: '0 45 15 * * *': use 5 fields"),
    "unknown calendar": (
        toml(calendar="XMARS"),
        "job 'bad-job': calendar: unknown exchange calendar 'XMARS'",
    ),
    "unknown tz": (
        toml(timezone="Mars/Olympus"),
        "job 'bad-job': timezone: unknown time zone 'Mars/Olympus'",
    ),
    "cron without tz": (toml(timezone=None), "job 'bad-job': timezone: required with cron"),
    "both cron and at": (toml(at="close-15min", calendar="XNYS"), "job 'bad-job': cron/at: give exactly one"),
    "neither cron nor at": (toml(cron=None), "job 'bad-job': cron/at: give exactly one"),
    "at without calendar": (toml(cron=None, timezone=None, at="close"), "job 'bad-job': calendar: required"),
    "bad at": (
        toml(cron=None, timezone=None, at="close-15", calendar="XNYS"),
        "job 'bad-job': at: 'close-15'",
    ),
    "at offset too far": (toml(cron=None, timezone=None, at="open+13h", calendar="XNYS"), "at: 'open+13h'"),
    "at with tz": (toml(cron=None, at="close", calendar="XNYS"), "job 'bad-job': timezone: not used with at"),
    "bad missed": (toml(missed="later"), "job 'bad-job': missed: 'later'"),
    "bad grace": (toml(grace="10"), "job 'bad-job': grace: '10'"),
    "zero grace": (toml(grace="0min"), "job 'bad-job': grace: must be a positive duration"),
    "typo": (toml(crn="* * * * *"), "job 'bad-job': unknown field(s) crn"),
    "run_key parameter": (
        toml(parameters={"run_key": "x"}),
        "job 'bad-job': parameters: run_key is set by kit",
    ),
    "db parameter": (toml(parameters={"db": "x.duckdb"}), "job 'bad-job': parameters: db is set by kit"),
    "bad name": (toml(name="has space"), "job 'has space': name: use 1-23 letters"),
    "underscore": (
        toml(name="momentum_close"),
        "job 'momentum_close': name: use 1-23 letters, digits or '-'",
    ),
    "long name": (toml(name="n" * 24), "name: use 1-23 letters"),
    "missing name": (toml(name=None), "job #1: name: missing"),
    "duplicate": (toml() + toml(), "job 'bad-job': name: used by more than one job"),
    "not toml": ("[[job]\nname = 1", "not valid TOML"),
    "no jobs": ("", "a job file holds [[job]] tables"),
}


@pytest.mark.parametrize(("text", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_job_file_says_which_job_and_field(text: str, message: str):
    with pytest.raises(ScheduleError) as error:
        parse_jobs(text)
    assert message in str(error.value)


def test_good_job_file(tmp_path: Path):
    path = tmp_path / "jobs.toml"
    path.write_text(
        toml(
            parameters={"broker": "mock", "capital": 1000000}, calendar="XNYS", missed="catch_up", grace="1h"
        )
        + toml(name="close", cron=None, timezone=None, at="close-15min", calendar="XNYS")
    )
    first, second = load_jobs(path)
    assert first.parameters == {"broker": "mock", "capital": 1000000}
    assert (first.missed, first.grace, first.calendar) == ("catch_up", timedelta(hours=1), "XNYS")
    assert (second.at, second.missed, second.grace) == ("close-15min", "skip", timedelta(minutes=10))
    with pytest.raises(TypeError):
        first.parameters["broker"] = "ib"  # type: ignore[index]


def test_load_jobs_names_the_file(tmp_path: Path):
    with pytest.raises(ScheduleError, match=r"jobs.toml: job 'bad-job': cron"):
        (tmp_path / "jobs.toml").write_text(toml(cron="nonsense"))
        load_jobs(tmp_path / "jobs.toml")
    with pytest.raises(ScheduleError, match=r"missing.toml: cannot read job file"):
        load_jobs(tmp_path / "missing.toml")


# --- scheduler state --------------------------------------------------------------------------------------


def test_state_file_round_trip_and_never_goes_back(tmp_path: Path):
    path = tmp_path / "data" / "schedule.json"
    assert StateFile(path).last("a") is None
    StateFile(path).record("a", utc(2026, 11, 25, 20, 45))
    StateFile(path).record("b", datetime(2026, 11, 25, 15, 45, tzinfo=NEW_YORK))
    StateFile(path).record("a", utc(2026, 11, 24, 20, 45))  # older: ignored
    assert StateFile(path).last("a") == utc(2026, 11, 25, 20, 45)
    assert json.loads(path.read_text()) == {
        "a": "2026-11-25T20:45:00+00:00",
        "b": "2026-11-25T20:45:00+00:00",
    }
    assert sorted(p.name for p in path.parent.iterdir()) == ["schedule.json", "schedule.json.lock"]


@pytest.mark.parametrize("text", ['{"a": "yesterday"}', '{"a": "2026-11-25T20:45:00"}', "[]", "{"])
def test_corrupt_state_file_is_a_clear_error(tmp_path: Path, text: str):
    path = tmp_path / "schedule.json"
    path.write_text(text)
    with pytest.raises(ScheduleError, match="unreadable scheduler state"):
        StateFile(path).last("a")


# --- the command line -------------------------------------------------------------------------------------


NOTEBOOK_WITH_PARAMETERS = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
               "outputs": [], "source": ['broker = "mock"\n', "capital = 1.0\n", "run_key = None"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def write_jobs(tmp_path: Path, **changes: object) -> list[str]:
    """A job file with one job (GOOD + changes) whose notebook exists; returns `--once` arguments for it."""
    notebook = tmp_path / "job.ipynb"
    notebook.write_text(json.dumps(NOTEBOOK_WITH_PARAMETERS))
    (tmp_path / "jobs.toml").write_text(toml(**{"notebook": str(notebook), **changes}))
    paths = ("--state", str(tmp_path / "state.json"), "--lock-dir", str(tmp_path / "locks"))
    return [str(tmp_path / "jobs.toml"), "--once", *paths]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Stands in for kit's papermill runner in `kit schedule`."""
    runner = Recorder()
    monkeypatch.setattr("kit.schedule.run_notebook", runner)
    return runner


def test_once_runs_what_is_due_now_and_says_so(tmp_path: Path, recorder: Recorder,
                                                capsys: pytest.CaptureFixture[str], monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    args = write_jobs(tmp_path, name="every-minute", cron="* * * * *", timezone="UTC")
    assert main(["schedule", *args]) == 0
    out = capsys.readouterr().out
    jobs, *_ = out.split(" start ")
    assert "every-minute" in jobs and "* * * * * UTC" in jobs and "next slot" in jobs  # the jobs table
    key = recorder.calls[0][2]
    assert f"ran     every-minute  {key}" in out
    assert main(["schedule", *args]) == 0
    keys = [key for _, _, key in recorder.calls]
    assert 1 <= len(keys) <= 2 and len(set(keys)) == len(keys)  # 2 only if a minute turned in between
    assert StateFile(tmp_path / "state.json").last("every-minute") == recorder.calls[-1][1]
    (tmp_path / "state.json").unlink()
    recorder.fail = {"every-minute"}
    assert main(["schedule", *args]) == 1
    assert "failed  every-minute" in capsys.readouterr().out and "RuntimeError: notebook raised"


def test_once_with_nothing_due_says_so_and_shows_the_next_slot(tmp_path: Path, recorder: Recorder,
                                                               capsys: pytest.CaptureFixture[str]):
    never = write_jobs(tmp_path, cron="0 12 25 12 *", timezone="UTC", calendar="XNYS")  # Christmas
    assert main(["schedule", *never]) == 0
    out = capsys.readouterr().out
    assert "never" in out and "nothing due" in out and recorder.calls == []
    monthly = write_jobs(tmp_path, cron="0 12 1 * *", timezone="UTC")
    assert main(["schedule", *monthly]) == 0
    upcoming = next_slot(load_jobs(tmp_path / "jobs.toml")[0], datetime.now(UTC))
    assert f"{upcoming:%Y-%m-%d %H:%M} UTC" in capsys.readouterr().out


def test_the_default_runner_is_kits_papermill_runner():
    from kit import runner, schedule

    assert schedule.run_notebook.__module__ == "kit.schedule"
    assert "execute_notebook" in schedule.run_notebook.__code__.co_names and runner.execute_notebook


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": None}, "jobs.toml: job 'bad-job': timezone: required with cron"),
        ({"notebook": "gone.ipynb"}, "job 'bad-job': notebook: gone.ipynb not found"),
        ({"parameters": {"capital": "abc"}},
         "job 'bad-job': parameters: parameter capital: 'abc' is not a float"),
        ({"parameters": {"brokr": "ib"}}, "job 'bad-job': parameters: the notebook has no parameter 'brokr'"),
    ],
)
def test_a_bad_job_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recorder: Recorder, changes: dict[str, object],
    message: str
):
    assert main(["schedule", *write_jobs(tmp_path, **changes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kit: ") and message in err and "Traceback" not in err
    assert recorder.calls == []


# --- properties -------------------------------------------------------------------------------------------

JOBS = [CLOSE, CLOSE_CATCH_UP, NY_1545, PARIS_OPEN, EVERY_2H]
moments = st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))
shortly = st.timedeltas(timedelta(0), timedelta(minutes=20))


@settings(max_examples=200, deadline=None)
@given(
    job=st.sampled_from(JOBS),
    moment=moments,
    near_a_slot=st.none() | shortly,
    back=st.none() | st.timedeltas(timedelta(0), timedelta(days=5)),
)
def test_due_picks_the_latest_unrun_slot_the_policy_allows(
    job: Job, moment: datetime, near_a_slot: timedelta | None, back: timedelta | None
):
    now = moment if near_a_slot is None else next_slot(job, moment) + near_a_slot
    last = None if back is None else now - back
    slot = due(job, now, last)
    # Brute force over the whole window the policy looks at.
    lo = now - job.grace if job.missed == "skip" or last is None else last
    candidates = [s for s in slots(job, lo, now + timedelta(seconds=1)) if last is None or s > last]
    assert slot == (candidates[-1] if candidates else None)
    if slot is not None:
        assert slot <= now and (last is None or slot > last)
        assert due(job, now, slot) is None  # once run, nothing more is due at this moment


@settings(max_examples=100, deadline=None)
@given(job=st.sampled_from(JOBS), start=moments, lengths=st.tuples(*[st.integers(0, 10 * 24 * 60)] * 2))
def test_slots_are_sorted_unique_and_windows_add_up(job: Job, start: datetime, lengths: tuple[int, int]):
    middle = start + timedelta(minutes=lengths[0])
    end = middle + timedelta(minutes=lengths[1])
    whole = slots(job, start, end)
    assert whole == slots(job, start, middle) + slots(job, middle, end)
    assert whole == sorted(set(whole)) and all(start <= s < end and s.tzinfo is UTC for s in whole)


names = st.from_regex(rf"[A-Za-z0-9][A-Za-z0-9-]{{0,{MAX_NAME - 1}}}", fullmatch=True)
minutes = st.integers(0, 60 * 24 * 366 * 3).map(lambda m: utc(2026, 1, 1) + timedelta(minutes=m))


@given(first=st.tuples(names, minutes), second=st.tuples(names, minutes))
def test_run_key_is_injective_and_fits_client_order_ids(
    first: tuple[str, datetime], second: tuple[str, datetime]
):
    keys = [
        run_key(Job(name=n, notebook=NOTEBOOK, cron="* * * * *", timezone="UTC"), s)
        for n, s in (first, second)
    ]
    assert (keys[0] == keys[1]) == (first == second)
    assert all(len(key) <= 40 and check_run_key(key) == key for key in keys)
