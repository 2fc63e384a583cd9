"""The scheduler's decisions, pure: which slots a job has, which one is due at a moment, and its run_key.

Everything here is a function of a job, the times it is handed and the last slot run: no file, no lock, no
clock, so the decisions are tested with made-up times and against expected-output files. `kit.schedule`
is the shell around it (locks, the state file, the loop that runs notebooks). croniter reads cron
expressions, exchange_calendars knows sessions, holidays and early closes, zoneinfo maps local times to UTC
across DST.
"""

from __future__ import annotations

import bisect
import functools
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import exchange_calendars as xc
from croniter import CroniterError, croniter

from kit.errors import ScheduleError
from kit.ids import RESERVED

# run_key = name + "-YYYY-MM-DDTHHMMZ": 23 + 17 = 40 characters at most, which leaves room for
# "-{symbol}-{side}-{n}" in the 64-character client_order_id. No "_": kit.ids refuses it in a run_key.
MAX_NAME = 23
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9-]{{0,{MAX_NAME - 1}}}")
_AT = re.compile(r"(open|close)(?:([+-])(\d+(?:min|h)))?")
_DURATION = re.compile(r"(\d+)(min|h)")
_UNIT = {"min": timedelta(minutes=1), "h": timedelta(hours=1)}
_MAX_AT_OFFSET = timedelta(hours=12)
_FIELDS = ("name", "notebook", "parameters", "cron", "at", "timezone", "calendar", "missed", "grace")
# A UTC offset changes by at most 2 hours, so walking local time 3 hours past a window loses no slot.
_DST_MARGIN = timedelta(hours=3)
# Slots fall on whole minutes, so [start, moment + _TICK) is the closed window [start, moment].
_TICK = timedelta(microseconds=1)
# Windows searched for the next or latest slot: small first, so the common case stays cheap; none found in
# nine years means the job never runs (e.g. a cron that only matches exchange holidays).
_SPANS = tuple(timedelta(days=d) for d in (1, 8, 64, 512, 9 * 366))


@dataclass(frozen=True)
class Job:
    """One notebook on a schedule. Construction validates, so any Job can be scheduled.

    Exactly one of `cron` (read in `timezone`) or `at` ("open", "close", "close-15min", "open+5min": follows
    the `calendar`'s actual open and close, early closes included). With `calendar`, a cron slot runs only
    if its date, in the exchange's time zone, is a session. `missed` says what to do after downtime.
    """

    name: str
    notebook: str
    cron: str | None = None
    at: str | None = None
    timezone: str | None = None
    calendar: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    missed: Literal["skip", "catch_up"] = "skip"
    grace: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))


def _validate(job: Job) -> None:
    def fail(name: str, why: str) -> NoReturn:
        raise ScheduleError(f"job {job.name!r}: {name}: {why}")

    if not isinstance(job.name, str) or not _NAME.fullmatch(job.name):
        fail("name", f"use 1-{MAX_NAME} letters, digits or '-' (the name starts every run_key)")
    if not isinstance(job.notebook, str) or not job.notebook.endswith(".ipynb"):
        fail("notebook", "must be the path of an .ipynb notebook")
    if not isinstance(job.parameters, Mapping):
        fail("parameters", 'must be a table, e.g. { broker = "mock" }')
    for name in RESERVED.keys() & job.parameters.keys():
        fail("parameters", f"{name} is set by kit for each run; remove it")
    if (job.cron is None) == (job.at is None):
        fail("cron/at", 'give exactly one: cron (a cron expression) or at (e.g. "close-15min")')
    if job.calendar is not None and job.calendar not in xc.get_calendar_names(include_aliases=True):
        fail("calendar", f'unknown exchange calendar {job.calendar!r} (e.g. "XNYS", "XPAR")')
    if job.cron is not None:
        # Five fields only: croniter reads a 6th as seconds, and run_keys are per minute.
        if not isinstance(job.cron, str) or len(job.cron.split()) > 5:
            fail("cron", f"{job.cron!r}: use 5 fields: minute hour day-of-month month day-of-week")
        try:
            croniter(job.cron, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterError as exc:
            fail("cron", f"{job.cron!r} is not a usable cron expression ({exc})")
        if job.timezone is None:
            fail("timezone", 'required with cron: the zone the cron is read in, e.g. "America/New_York"')
        try:
            ZoneInfo(job.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            fail("timezone", f'unknown time zone {job.timezone!r} (an IANA name, e.g. "Europe/Paris")')
    else:
        if not isinstance(job.at, str) or not _AT.fullmatch(job.at):
            fail("at", f'{job.at!r}: use open or close, optionally +/- minutes or hours: "close-15min"')
        elif abs(_parse_at(job.at)[1]) > _MAX_AT_OFFSET:
            fail("at", f"{job.at!r}: keep the offset within 12h; use cron for other times")
        if job.calendar is None:
            fail("calendar", f'required with at={job.at!r}: whose open and close, e.g. "XNYS"')
        if job.timezone is not None:
            fail("timezone", "not used with at (open and close are the exchange's own); remove it")
    if job.missed not in ("skip", "catch_up"):
        fail("missed", f'{job.missed!r}: use "skip" or "catch_up"')
    if not isinstance(job.grace, timedelta) or job.grace <= timedelta(0):
        fail("grace", 'must be a positive duration such as "10min"')


def _parse_at(at: str) -> tuple[Literal["open", "close"], timedelta]:
    anchor, sign, amount = _AT.fullmatch(at).groups()  # type: ignore[union-attr]  # validated by Job
    offset = _parse_duration(amount) if amount else timedelta(0)
    return anchor, -offset if sign == "-" else offset


def _parse_duration(text: str) -> timedelta:
    number, unit = _DURATION.fullmatch(text).groups()  # type: ignore[union-attr]  # matched by the caller
    return int(number) * _UNIT[unit]


def parse_jobs(text: str) -> list[Job]:
    """Jobs from the text of a TOML job file: one [[job]] table per job.

    Unknown fields are errors rather than ignored, so a typo ("crn") cannot silently change a schedule.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleError(f"not valid TOML: {exc}") from exc
    if set(doc) != {"job"} or not isinstance(doc["job"], list):
        raise ScheduleError("a job file holds [[job]] tables and nothing else")
    jobs = [_job_from_table(number, table) for number, table in enumerate(doc["job"], 1)]
    names = [job.name for job in jobs]
    for name in names:
        if names.count(name) > 1:
            raise ScheduleError(f"job {name!r}: name: used by more than one job")
    return jobs


def _job_from_table(number: int, table: dict[str, Any]) -> Job:
    label = f"job {table['name']!r}" if "name" in table else f"job #{number}"
    if unknown := sorted(set(table) - set(_FIELDS)):
        raise ScheduleError(f"{label}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    for required in ("name", "notebook"):
        if required not in table:
            raise ScheduleError(f"{label}: {required}: missing")
    fields = dict(table)
    if "grace" in fields:
        if not isinstance(fields["grace"], str) or not _DURATION.fullmatch(fields["grace"]):
            raise ScheduleError(f'{label}: grace: {fields["grace"]!r}: use minutes or hours, e.g. "10min"')
        fields["grace"] = _parse_duration(fields["grace"])
    return Job(**fields)


class _Session(NamedTuple):
    day: date  # the session's date, in the exchange's time zone
    open: datetime  # UTC
    close: datetime  # UTC


@functools.lru_cache(maxsize=32)
def _decade(calendar: str, first_year: int) -> tuple[list[_Session], ZoneInfo]:
    """The sessions of ten years. Building a calendar costs about 0.3 s whatever its span, so each decade is
    built once per process (a long-running scheduler loads the next one when it gets there) and kept as plain
    tuples, which are searched far faster than a DataFrame is filtered.
    """
    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads Series.values of tz-aware times, deprecated in pandas 3.1: not ours.
        warnings.filterwarnings("ignore", "Series.values returning an ndarray", category=DeprecationWarning)
        cal = xc.get_calendar(calendar, start=f"{first_year}-01-01", end=f"{first_year + 9}-12-31")
    table = cal.schedule
    sessions = [
        _Session(day.date(), opens.to_pydatetime().astimezone(UTC), closes.to_pydatetime().astimezone(UTC))
        for day, opens, closes in zip(table.index, table["open"], table["close"], strict=True)
    ]
    return sessions, cal.tz


def _sessions(calendar: str, start: datetime, end: datetime) -> tuple[list[_Session], ZoneInfo]:
    """Sessions around [start, end); two days of margin cover sessions whose UTC times cross midnight."""
    first, last = (start - timedelta(days=2)).date(), (end + timedelta(days=2)).date()
    found: list[_Session] = []
    for decade in range(first.year // 10 * 10, last.year + 1, 10):
        sessions, tz = _decade(calendar, decade)
        lo = bisect.bisect_left(sessions, first, key=attrgetter("day"))
        found += sessions[lo : bisect.bisect_right(sessions, last, key=attrgetter("day"))]
    return found, tz


def aware_utc(moment: datetime) -> datetime:
    """`moment` in UTC. A naive time would be read in whatever zone the machine has, so it is refused."""
    if moment.utcoffset() is None:
        raise ScheduleError(f"{moment} has no time zone; scheduling needs aware datetimes")
    return moment.astimezone(UTC)


def slots(job: Job, start: datetime, end: datetime) -> list[datetime]:
    """The job's scheduled slots in [start, end), sorted, as UTC datetimes.

    Half-open like range(), so consecutive windows never count a slot twice.
    """
    start, end = aware_utc(start), aware_utc(end)
    if job.at is not None:
        anchor, offset = _parse_at(job.at)
        sessions, _ = _sessions(job.calendar, start, end)  # type: ignore[arg-type]  # Job: at needs calendar
        times = [getattr(session, anchor) + offset for session in sessions]
        return [time for time in times if start <= time < end]
    # Walk the cron in local wall-clock time, as cron does, then map each time to UTC. fold=0 moves a time
    # that DST skips forward by the gap and maps a repeated time to its first occurrence: each runs once.
    tz = ZoneInfo(job.timezone)  # type: ignore[arg-type]  # Job: cron needs timezone
    walk = croniter(job.cron, (start.astimezone(tz) - _DST_MARGIN).replace(tzinfo=None))
    stop = (end.astimezone(tz) + _DST_MARGIN).replace(tzinfo=None)
    found = set()
    while (local := walk.get_next(datetime)) < stop:
        slot = local.replace(tzinfo=tz).astimezone(UTC)
        if start <= slot < end:
            found.add(slot)
    if job.calendar is not None:
        sessions, exchange_tz = _sessions(job.calendar, start, end)
        days = {session.day for session in sessions}
        found = {slot for slot in found if slot.astimezone(exchange_tz).date() in days}
    return sorted(found)


def next_slot(job: Job, after: datetime) -> datetime | None:
    """The job's first slot strictly after `after`; None if it has none in nine years (it never runs)."""
    start = aware_utc(after) + _TICK
    for span in _SPANS:
        if found := slots(job, start, start + span):
            return found[0]
    return None


def _latest_slot(job: Job, lo: datetime, hi: datetime) -> datetime | None:
    """The job's latest slot in [lo, hi], searching back from hi so a long outage costs little."""
    end = hi + _TICK
    for span in _SPANS:
        start = max(lo, end - span)
        if found := slots(job, start, end):
            return found[-1]
        if start == lo:
            break
    return None


def due(job: Job, now: datetime, last_slot_run: datetime | None) -> datetime | None:
    """The slot to run at `now`, or None: at most one, never after `now`, never one already run.

    skip: the latest slot, only if it is at most `grace` old; older missed slots are dropped.
    catch_up: the latest slot after the last one run, however old; missed slots before it are dropped, so an
    outage leads to one late run, never a burst. A job never run before has missed nothing and behaves as
    skip: adding a job at 16:00 must not fire its 15:45 slot after the close.
    """
    now = aware_utc(now)
    last = None if last_slot_run is None else aware_utc(last_slot_run)
    if job.missed == "catch_up" and last is not None:
        slot = _latest_slot(job, last, now)
    else:
        slot = _latest_slot(job, now - job.grace, now)
    if slot is None or (last is not None and slot <= last):
        return None
    return slot


def run_key(job: Job, slot: datetime) -> str:
    """The run_key of a job's slot: the same slot always gets the same key, so a retried run resumes.

    The slot is written in UTC, which stays unambiguous when a local hour repeats at the end of DST.
    """
    return f"{job.name}-{aware_utc(slot):%Y-%m-%dT%H%MZ}"
