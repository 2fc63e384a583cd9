"""`kit schedule`'s shell: run the notebooks whose slots are due, one at a time per job, and remember them.

The decisions (slots, which one is due, run keys) are pure and live in `kit.slots`. Here sit the parts that
touch the world: a per-job lock that a dead process cannot keep, a small state file, and a loop that sleeps
until the next slot. The `kit schedule` command line (kit/cli.py) calls `load_jobs`, `run_once` and
`run_forever`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from kit.clock import now_utc
from kit.config import IBSettings, schedule_state_path
from kit.config import lock_dir as default_lock_dir
from kit.errors import JobLocked, KitError, RunFailed, ScheduleError
from kit.slots import Job, aware_utc, due, next_slot, parse_jobs, run_key

log = logging.getLogger(__name__)

# run_forever also wakes after this long without a slot, so a suspended machine or a clock step is noticed.
MAX_WAIT = timedelta(minutes=5)


def load_jobs(path: Path | str) -> list[Job]:
    """Jobs from a TOML job file; errors start with the file's path."""
    try:
        return parse_jobs(Path(path).read_text())
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read job file ({exc.strerror})") from exc
    except ScheduleError as exc:
        raise ScheduleError(f"{path}: {exc}") from exc


def check_notebooks(jobs: Sequence[Job]) -> None:
    """Refuse to start with a job whose notebook is missing or unreadable, or whose parameters its
    parameters cell does not accept (as `kit run` checks `-p`): better now than at its slot, hours later."""
    from kit.runner import check_parameters, notebook_parameters  # lazily: papermill

    for job in jobs:
        if not Path(job.notebook).is_file():
            raise ScheduleError(f"job {job.name!r}: notebook: {job.notebook} not found in {Path.cwd()}")
        try:
            declared = notebook_parameters(job.notebook)
        except Exception as exc:  # nbformat's and papermill's own errors for a file that is no notebook
            raise ScheduleError(f"job {job.name!r}: notebook: cannot read {job.notebook} ({exc})") from exc
        try:
            check_parameters(declared, job.parameters)
        except KitError as exc:
            raise ScheduleError(f"job {job.name!r}: parameters: {exc}") from exc


@contextmanager
def acquire(job: Job, lock_dir: Path | str | None = None) -> Iterator[None]:
    """Hold the job's lock for the body, so two runs of one job never overlap; JobLocked at once if held.

    flock belongs to the open file, so the kernel drops it when the holder exits or is killed: a crashed run
    leaves no stale lock. The file stays; deleting it would let two processes lock two files of one name.
    The lock is per machine (flock is unreliable on network file systems).
    """
    path = Path(lock_dir or default_lock_dir()) / f"{job.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "?"
            raise JobLocked(f"job {job.name!r} is already running (pid {holder}, lock {path})") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


class State(Protocol):
    """Where the scheduler remembers the last slot run of each job (a file today; the ledger may hold it)."""

    def last(self, job: str) -> datetime | None: ...

    def record(self, job: str, slot: datetime) -> None: ...


class StateFile:
    """State in a small JSON file: read afresh on every call, replaced atomically, updated under a lock,
    so several `kit schedule --once` processes can share it.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path or schedule_state_path())

    def last(self, job: str) -> datetime | None:
        value = self._read().get(job)
        return None if value is None else datetime.fromisoformat(value)

    def record(self, job: str, slot: datetime) -> None:
        """Remember `slot` for `job`, unless a later slot is already recorded: the state never goes back."""
        slot = aware_utc(slot)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            if job in data and datetime.fromisoformat(data[job]) >= slot:
                return
            data[job] = slot.isoformat()
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=2, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)

    def _read(self) -> dict[str, str]:
        def unreadable(why: object) -> ScheduleError:
            return ScheduleError(f"{self.path}: unreadable scheduler state ({why}); fix or delete it")

        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise unreadable(exc) from exc
        if not isinstance(data, dict):
            raise unreadable("not a JSON object")
        for job, value in data.items():
            try:
                moment = datetime.fromisoformat(value)
            except (TypeError, ValueError) as exc:
                raise unreadable(f"{job}: {exc}") from exc
            if moment.utcoffset() is None:
                raise unreadable(f"{job}: {value} has no time zone")
        return data


Runner = Callable[[Job, datetime, str], Any]


@dataclass(frozen=True)
class Outcome:
    """What run_once did with a due job: "ran", "failed" (the runner raised) or "locked" (already running).

    `run_status` is the run's own status when the runner returned one (done, partial, skipped, planned).
    """

    job: str
    slot: datetime
    run_key: str
    status: Literal["ran", "failed", "locked"]
    error: str | None = None
    run_status: str | None = None


Report = Callable[[Outcome], None]


def run_once(jobs: Sequence[Job], now: datetime, state: State, runner: Runner,
             lock_dir: Path | str | None = None, report: Report | None = None) -> list[Outcome]:
    """Run every job due at `now`, one after another, each under its lock; what `--once` does.

    Decisions use `now` throughout, so a long first job delays the next one but does not cancel it.
    `report` hears each outcome as it happens, so a long tick shows its progress.
    """
    outcomes = []
    for job in jobs:
        slot = due(job, now, state.last(job.name))
        if slot is None:
            continue
        try:
            with acquire(job, lock_dir):
                # Decide again under the lock: another process may have run the slot since we looked.
                slot = due(job, now, state.last(job.name))
                outcome = None if slot is None else _run(job, slot, state, runner)
        except JobLocked as exc:
            log.warning("%s; slot %s not started", exc, run_key(job, slot))
            outcome = Outcome(job.name, slot, run_key(job, slot), "locked", str(exc))
        if outcome is not None:
            outcomes.append(outcome)
            if report is not None:
                report(outcome)
    return outcomes


def _run(job: Job, slot: datetime, state: State, runner: Runner) -> Outcome:
    key = run_key(job, slot)
    log.info("job %s: running %s with run_key %s", job.name, job.notebook, key)
    try:
        result = runner(job, slot, key)
    except Exception as exc:
        log.debug("job %s failed", job.name, exc_info=True)
        outcome = Outcome(job.name, slot, key, "failed", f"{type(exc).__name__}: {exc}")
    else:
        outcome = Outcome(job.name, slot, key, "ran", run_status=getattr(result, "status", None))
    # A failed slot counts as run: notebook errors are seldom transient, and unattended retries of a trading
    # notebook would hide them. A crash never gets here, so the next tick resumes that slot by its run_key.
    state.record(job.name, slot)
    return outcome


def run_forever(
    jobs: Sequence[Job],
    runner: Runner,
    *,
    state: State,
    lock_dir: Path | str | None = None,
    clock: Callable[[], datetime] = now_utc,
    wait: Callable[[float], bool] | None = None,
    report: Report | None = None,
) -> None:
    """Run jobs at their slots until `wait` returns True (pass a stop Event's `wait`).

    Sleeps until the earliest next slot rather than polling, but at most five minutes, so that after a
    suspend or a clock step the missed-run policy applies within minutes.
    """
    wait = wait or threading.Event().wait
    while True:
        run_once(jobs, clock(), state, runner, lock_dir, report)
        now = clock()
        upcoming = [slot for job in jobs if (slot := next_slot(job, now)) is not None]
        wake = min([*upcoming, now + MAX_WAIT])
        log.debug("sleeping until %s", wake)
        if wait(max((wake - now).total_seconds(), 0.0)):
            return


def run_notebook(job: Job, slot: datetime, key: str) -> Any:
    """kit's runner for one slot of a job: the notebook through `kit run`'s papermill runner, as `key`.

    `slot` is already in `key`, which is what makes a retried slot resume. A failed run raises RunFailed,
    so run_once reports it.
    """
    from kit.runner import execute_notebook  # lazily: it imports papermill and Jupyter

    result = execute_notebook(job.notebook, job.parameters, run_key=key)
    if not result.ok:
        raise RunFailed(f"{job.notebook} ({key}): {result.error_name}: {result.error}")
    return result


# ---- sharing an IB connection ---------------------------------------------------------------------------
def pool_name(job: Job, ib: IBSettings | None = None) -> str | None:
    """The Airflow pool of a job that trades through IB (`kit schedule FILE --pools`), None for a mock job.

    IB serves one client per clientId, so jobs with the same account and clientId must take turns: one pool
    slot for each pair. A job that does not say `broker = "mock"` may reach IB (a notebook's default), so it
    takes the pool too. The clientId and account are those kit's configuration gives the workers
    (KIT_IB_CLIENT_ID, KIT_IB_ACCOUNT or kit.toml), which must be the same on every worker.
    """
    if job.parameters.get("broker") == "mock":
        return None
    ib = ib or IBSettings.load()
    return f"kit-ib-{ib.account or 'default'}-{ib.client_id}"


def pools(jobs: Sequence[Job], ib: IBSettings | None = None) -> dict[str, dict[str, Any]]:
    """The pools the jobs need, in the form `airflow pools import` reads: one slot each."""
    needed = sorted({name for job in jobs if (name := pool_name(job, ib)) is not None})
    return {name: {"slots": 1, "description": "kit: one IB connection per account and clientId",
                   "include_deferred": False} for name in needed}
