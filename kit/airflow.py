"""Airflow runs kit's jobs: one DAG per job of a `kit schedule` file, for desks with many workers.

Each piece keeps a promise `kit schedule` makes on one machine:
- When: `KitTimetable` asks kit's own slot logic (kit.schedule) for the next slot, so "close-15min" on XNYS
  follows holidays and early closes, and `missed` (skip within `grace`, or catch_up: the latest missed slot
  once) decides what runs after downtime, exactly as `kit schedule` would. Airflow's `catchup` is off: it
  would run every missed slot, a burst kit never does.
- Which run: the task's run_key is kit.slots.run_key(job, logical date), so a retry, a cleared task or a
  re-run DAG run resumes that run's orders instead of sending them again, and Airflow and `kit schedule`
  give one slot the same key.
- The record: the task runs the notebook through kit's runner, so the ledger holds the same run rows,
  output notebooks and statuses as `kit run`.
- One connection per clientId: IB allows one client per (account, clientId), so every job that trades
  through IB takes the single slot of the pool named after them. Create the pools with
  `kit schedule jobs.toml --pools > pools.json && airflow pools import pools.json`.

A DAG file (in Airflow's dags folder) is two lines:

    from kit.airflow import dags_from_file
    globals().update(dags_from_file("/srv/kit/jobs.toml"))

and Airflow needs the timetable registered: put `from kit.airflow import KitPlugin` in a file of its plugins
folder (Airflow refuses to load a DAG whose timetable no plugin registered).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.exceptions import AirflowSkipException
from airflow.plugins_manager import AirflowPlugin
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable

from kit import clock
from kit.config import IBSettings
from kit.errors import RunFailed
from kit.schedule import load_jobs, pool_name
from kit.slots import Job, due, next_slot, run_key

DAG_PREFIX = "kit-"
TASK_ID = "run_notebook"
DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = timedelta(minutes=1)
# Before the first slot Airflow needs some start_date; kit's timetable decides the slots themselves.
EPOCH = pendulum.datetime(2020, 1, 1, tz="UTC")


def job_fields(job: Job) -> dict[str, Any]:
    """The job as plain JSON values: Airflow stores timetables and task arguments serialized."""
    return {"name": job.name, "notebook": job.notebook, "cron": job.cron, "at": job.at,
            "timezone": job.timezone, "calendar": job.calendar, "parameters": dict(job.parameters),
            "missed": job.missed, "grace": job.grace.total_seconds()}


def job_from_fields(fields: Mapping[str, Any]) -> Job:
    return Job(**{**fields, "grace": timedelta(seconds=fields["grace"])})


def _airflow_time(moment: datetime) -> pendulum.DateTime:
    return pendulum.instance(moment.astimezone(UTC))


def _kit_time(moment: datetime) -> datetime:
    """A plain aware datetime: pendulum's arithmetic with standard time zones can drop the zone."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC)


class KitTimetable(Timetable):
    """A job's slots as Airflow's schedule: each slot is one run, its logical date the slot itself."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.description = f"kit job {job.name}: " + (
            f"{job.at} on {job.calendar}" if job.at else f"{job.cron} in {job.timezone}"
            + (f" on {job.calendar} sessions" if job.calendar else ""))

    @property
    def summary(self) -> str:
        return self.job.at or self.job.cron or ""

    def serialize(self) -> dict[str, Any]:
        return job_fields(self.job)

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> KitTimetable:
        return cls(job_from_fields(data))

    def infer_manual_data_interval(self, *, run_after: pendulum.DateTime) -> DataInterval:
        """A manual run is its own moment: its run_key names that minute, which need not be a slot."""
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        """The slot kit would run next: a due one now (kit's `missed` policy), else the next one to come.

        Airflow creates the run when its `run_after` has passed, so a future slot waits for its moment.
        """
        last = None if last_automated_data_interval is None else _kit_time(last_automated_data_interval.end)
        now = clock.now_utc()
        slot = due(self.job, now, last)
        if slot is None:
            slot = next_slot(self.job, max(now, last) if last is not None else now)
        earliest = None if restriction.earliest is None else _kit_time(restriction.earliest)
        if earliest is not None and (slot is None or slot < earliest):
            # Not before the DAG's start_date (a start in the future, or kit's catch_up reaching back).
            start = earliest - timedelta(microseconds=1)
            slot = next_slot(self.job, max(start, last) if last is not None else start)
        if slot is None or (restriction.latest is not None and slot > _kit_time(restriction.latest)):
            return None
        return DagRunInfo.exact(_airflow_time(slot))


class KitPlugin(AirflowPlugin):
    """Registers KitTimetable: Airflow deserializes only timetables that a plugin declares."""

    name = "kit"
    timetables = [KitTimetable]  # noqa: RUF012  (Airflow reads this class attribute)


def run_slot(job: Mapping[str, Any], project: str, db: str | None, logical_date: datetime | None,
             dag_run: Any) -> dict[str, str]:
    """The task: the notebook of the job's slot through kit's runner, under the slot's run_key.

    Runs in the project directory, as `kit schedule` does, so the job file's relative paths, kit.toml and
    data/ mean the same. A failed run raises, so Airflow retries it; the retry has the same logical date,
    hence the same run_key, and resumes the run's orders instead of sending them again. Airflow 3 lets a
    manual run have no logical date: its moment is then when it was asked to run.
    """
    from kit.runner import execute_notebook  # papermill and Jupyter: only in the task

    the_job = job_from_fields(job)
    key = run_key(the_job, _kit_time(logical_date or dag_run.run_after))
    with contextlib.chdir(project):
        result = execute_notebook(the_job.notebook, the_job.parameters, run_key=key, db=db)
    if result.status == "skipped":
        raise AirflowSkipException(f"{key}: {result.error}")
    if not result.ok:
        raise RunFailed(f"{the_job.notebook} ({key}) failed: {result.error_name}: {result.error}")
    return {"run_key": key, "run_id": result.run_id, "status": result.status}


def dag_for(job: Job, project: str | Path, *, db: str | None = None, retries: int = DEFAULT_RETRIES,
            retry_delay: timedelta = DEFAULT_RETRY_DELAY, start_date: datetime = EPOCH,
            ib: IBSettings | None = None, **dag_arguments: Any) -> DAG:
    """One job's DAG: kit's timetable, one run at a time, one task that runs the notebook.

    `db` is the ledger every worker writes to (a path or, with the PostgreSQL backend, its URL); None means
    kit's configuration on the worker.
    """
    with DAG(dag_id=DAG_PREFIX + job.name, schedule=KitTimetable(job), start_date=start_date, catchup=False,
             max_active_runs=1, description=KitTimetable(job).description, tags=["kit"],
             **dag_arguments) as dag:
        PythonOperator(
            task_id=TASK_ID, python_callable=run_slot,
            op_kwargs={"job": job_fields(job), "project": str(Path(project).resolve()), "db": db},
            retries=retries, retry_delay=retry_delay, pool=pool_name(job, ib) or "default_pool",
        )
    return dag


def dags_from_file(path: str | Path, project: str | Path | None = None, **options: Any) -> dict[str, DAG]:
    """A DAG per job of a kit schedule file, by dag_id; `project` (the job file's folder by default) is the
    directory the jobs run in."""
    path = Path(path)
    return {dag.dag_id: dag for dag in (dag_for(job, project or path.parent, **options)
                                        for job in load_jobs(path))}
