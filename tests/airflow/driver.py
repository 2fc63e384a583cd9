"""Runs under .venv-airflow (Airflow and kit): builds and runs kit's DAGs, prints one JSON line per scenario.

Started by test_airflow.py, which sets AIRFLOW_HOME and Airflow's dags and plugins folders to this folder's
dags/ and plugins/, and asserts on the JSON.

    driver.py dags JOBS START COUNT     the DAGs of a job file and the first COUNT slots of each from START
    driver.py after_outage JOBS NOW LAST the next run of each DAG after downtime, at a fixed clock
    driver.py run JOB SLOT              dag.test() of the job's DAG (job file: KIT_AIRFLOW_JOBS) for the slot
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def dags(jobs: str, start: str, count: str) -> dict:
    from airflow.serialization.serialized_objects import SerializedDAG
    from airflow.timetables.base import TimeRestriction

    from kit.airflow import KitTimetable, dags_from_file

    out = {}
    for dag_id, dag in dags_from_file(jobs).items():
        # Through Airflow's serialization, as the scheduler sees it: this needs the plugin's registration.
        stored = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(dag))
        timetable = stored.timetable
        restriction = TimeRestriction(earliest=datetime.fromisoformat(start), latest=None, catchup=False)
        slots, last = [], None
        for _ in range(int(count)):
            info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            slots.append(info.logical_date.isoformat())
            assert info.run_after == info.logical_date
            last = info.data_interval
        task = dag.get_task("run_notebook")
        out[dag_id] = {
            "timetable": type(timetable).__name__, "is_kit": isinstance(timetable, KitTimetable),
            "job": timetable.job.name, "summary": timetable.summary, "slots": slots,
            "tasks": [t.task_id for t in dag.tasks], "pool": task.pool, "retries": task.retries,
            "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
        }
    return out


def after_outage(jobs: str, now: str, last: str) -> dict:
    """What each DAG runs next when the scheduler comes back at NOW and its last run was the slot LAST."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    from kit import clock
    from kit.airflow import EPOCH, dags_from_file

    clock.now_utc = lambda: datetime.fromisoformat(now)  # the scheduler's clock, fixed for the scenario
    restriction = TimeRestriction(earliest=EPOCH, latest=None, catchup=False)
    previous = DataInterval.exact(datetime.fromisoformat(last))
    return {dag_id: dag.timetable.next_dagrun_info(last_automated_data_interval=previous,
                                                   restriction=restriction).logical_date.isoformat()
            for dag_id, dag in dags_from_file(jobs).items()}


def run(job: str, slot: str) -> dict:
    """The DAG object of the dags folder's file (the one Airflow's own parsing registers), run once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("kit_jobs", HERE / "dags" / "kit_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, f"kit-{job}")
    dagrun = dag.test(logical_date=datetime.fromisoformat(slot))
    tis = dagrun.get_task_instances()
    return {"state": str(dagrun.state), "logical_date": dagrun.logical_date.isoformat(),
            "tasks": {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in tis}}


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    print(json.dumps({"dags": dags, "after_outage": after_outage, "run": run}[scenario](*args)))
