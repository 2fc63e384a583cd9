"""Runs under .venv-airflow (Airflow and kit): builds and runs kit's DAGs, prints one JSON line per scenario.

Started by test_airflow.py, which sets AIRFLOW_HOME and Airflow's dags and plugins folders to this folder's
dags/ and plugins/, and asserts on the JSON.

    driver.py dags JOBS START COUNT     the DAGs of a job file, the first COUNT slots of each from START, and
                                        what `kit schedule JOBS --pools` prints
    driver.py after_outage JOBS NOW LAST the next run of each DAG after downtime, at a fixed clock
    driver.py run JOB SLOT [gateway]    dag.test() of the job's DAG (KITTEST_AIRFLOW_JOBS) for the slot,
                                        optionally against kit's simulated IB gateway
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def dags(jobs: str, start: str, count: str) -> dict:
    from airflow.serialization.serialized_objects import SerializedDAG
    from airflow.timetables.base import TimeRestriction

    from kit.airflow import KitTimetable, dags_from_file
    from kit.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["schedule", jobs, "--pools"])  # `kit schedule JOBS --pools`
    out = {"pools_command": {"status": status, "stdout": printed.getvalue()}}
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


def run(job: str, slot: str, gateway: str = "") -> dict:
    """The DAG object of the dags folder's file (the one Airflow's own parsing registers), run once, in
    AIRFLOW_HOME's metadata database (already migrated: `airflow db migrate`).

    With `gateway`, kit's simulated IB gateway runs in a thread of this process for the whole DAG run, so
    it outlives the kernels that die, as IB does, and reports how often each orderRef was placed.
    """
    spec = importlib.util.spec_from_file_location("kit_jobs", HERE / "dags" / "kit_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, f"kit-{job}")
    with contextlib.ExitStack() as stack:
        placements = None
        if gateway:
            from kit.gateway import GatewayConfig, run_gateway_in_thread

            gw = stack.enter_context(run_gateway_in_thread(GatewayConfig(seed=3, partial_fills=2)))
            os.environ.update({"KIT_IB_HOST": "127.0.0.1", "KIT_IB_PORT": str(gw.port)})  # for the kernels
        dagrun = dag.test(logical_date=datetime.fromisoformat(slot))
        if gateway:
            placements = gw.call(lambda: dict(gw.state.placements))
    tis = dagrun.get_task_instances()
    return {"state": str(dagrun.state), "logical_date": dagrun.logical_date.isoformat(),
            "tasks": {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in tis},
            "placements": placements}


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    print(json.dumps({"dags": dags, "after_outage": after_outage, "run": run}[scenario](*args)))
