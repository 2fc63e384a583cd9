"""Airflow runs kit's jobs: the DAGs of a schedule file; dag.test() runs a notebook through kit's runner.

Airflow has its own environment (.venv-airflow, built by `make airflow`, which `make test` runs): these tests
start driver.py under its python and assert on the JSON it prints, and read the ledger from this side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import kit
from kit.schedule import due, load_jobs, next_slot, run_key, slots

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
SAMPLE_JOBS = HERE / "jobs.toml"
IB = {"KIT_IB_ACCOUNT": "DU1234567", "KIT_IB_CLIENT_ID": "7"}


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    if not AIRFLOW_PYTHON.exists():
        message = "needs .venv-airflow with Airflow 3.1: run `make airflow`"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must build it)")
        pytest.skip(message)
    return AIRFLOW_PYTHON


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    """The ledger the DAG's tasks write to. DuckDB today; the PostgreSQL backend adds its URL here."""
    return str(tmp_path / "ledger" / "kit.duckdb")


def drive(python: Path, home: Path, *args: str, env: dict[str, str] | None = None,
          timeout: int = 300) -> dict:
    environment = {
        **os.environ, **IB, **(env or {}),
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(HERE / "plugins"),
    }
    done = subprocess.run([str(python), str(HERE / "driver.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=environment)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_dag_per_job_scheduled_on_kits_own_slots(airflow_python: Path, tmp_path: Path):
    start = datetime(2027, 11, 24, tzinfo=UTC)  # Thanksgiving week: a holiday, then a half day
    out = drive(airflow_python, tmp_path, "dags", str(SAMPLE_JOBS), start.isoformat(), "6",
                env={"KIT_AIRFLOW_JOBS": str(SAMPLE_JOBS)})

    jobs = load_jobs(SAMPLE_JOBS)
    assert sorted(out) == sorted(f"kit-{job.name}" for job in jobs)
    for job in jobs:
        dag = out[f"kit-{job.name}"]
        expected = slots(job, start, start + timedelta(days=30))[:6]
        assert dag["slots"] == [slot.isoformat() for slot in expected], job.name
        assert dag["timetable"] == "KitTimetable" and dag["job"] == job.name
        assert dag["tasks"] == ["run_notebook"]
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    close = out["kit-momentum-close"]["slots"]
    assert "2027-11-25T20:45:00+00:00" not in close  # no session on Thanksgiving
    assert "2027-11-26T17:45:00+00:00" in close  # 15 minutes before the 13:00 early close
    assert "2027-11-25T08:05:00+00:00" in out["kit-paris-open"]["slots"]  # Paris trades that day


def test_after_downtime_airflow_runs_what_kit_schedule_would(airflow_python: Path, tmp_path: Path):
    now = datetime(2027, 11, 30, 14, 40, tzinfo=UTC)
    last = datetime(2027, 11, 24, 20, 45, tzinfo=UTC)  # the scheduler was down for the Thanksgiving week
    out = drive(airflow_python, tmp_path, "after_outage", str(SAMPLE_JOBS), now.isoformat(), last.isoformat(),
                env={"KIT_AIRFLOW_JOBS": str(SAMPLE_JOBS)})

    for job in load_jobs(SAMPLE_JOBS):
        expected = due(job, now, last) or next_slot(job, now)
        assert out[f"kit-{job.name}"] == expected.isoformat(), job.name
    assert out["kit-momentum-close"] == "2027-11-29T20:45:00+00:00"  # catch_up: the latest missed slot, once
    assert out["kit-us-open"] == "2027-11-30T14:35:00+00:00"  # skip: 5 minutes late is within its grace
    assert out["kit-paris-open"] == "2027-12-01T08:05:00+00:00"  # skip: today's 08:05 is too old; tomorrow


def test_jobs_that_may_reach_ib_share_one_pool_per_account_and_client_id(airflow_python: Path,
                                                                          tmp_path: Path):
    out = drive(airflow_python, tmp_path, "dags", str(SAMPLE_JOBS), "2027-11-24T00:00:00+00:00", "1",
                env={"KIT_AIRFLOW_JOBS": str(SAMPLE_JOBS)})
    assert out["kit-momentum-close"]["pool"] == "default_pool"  # broker = "mock": no connection to share
    assert out["kit-paris-open"]["pool"] == "kit-ib-DU1234567-7"  # broker = "ib"
    assert out["kit-us-open"]["pool"] == "kit-ib-DU1234567-7"  # the notebook's default broker may be ib

    pools = subprocess.run([str(airflow_python), "-m", "kit.airflow", "pools", str(SAMPLE_JOBS)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, **IB}, check=True)
    assert json.loads(pools.stdout) == {"kit-ib-DU1234567-7": {
        "slots": 1, "description": "kit: one IB connection per account and clientId",
        "include_deferred": False}}


def test_a_killed_run_is_retried_by_airflow_and_sends_nothing_twice(
        airflow_python: Path, tmp_path: Path, ledger_url: str):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(HERE / "trade.ipynb", project)
    marker = project / "died-once"
    jobs_file = project / "jobs.toml"
    jobs_file.write_text(f"""
[[job]]
name = "trade-close"
notebook = "trade.ipynb"
parameters = {{ broker = "mock", die_once = "{marker}" }}
at = "close-15min"
calendar = "XNYS"
""")
    slot = datetime(2026, 11, 27, 17, 45, tzinfo=UTC)  # the day after Thanksgiving: close at 13:00
    out = drive(airflow_python, tmp_path / "airflow", "run", "trade-close", slot.isoformat(), env={
        "KIT_AIRFLOW_JOBS": str(jobs_file), "KIT_AIRFLOW_DB": ledger_url, "KIT_AIRFLOW_RETRY_DELAY": "0"})

    assert marker.exists()  # the first attempt's kernel was SIGKILLed after its orders were sent
    assert out["state"] == "success" and out["logical_date"] == slot.isoformat()
    assert out["tasks"] == {"run_notebook": {"state": "success", "try_number": 2}}
    ledger = kit.ledger(ledger_url)
    key = run_key(load_jobs(jobs_file)[0], slot)  # what `kit schedule` gives the slot
    assert key == "trade-close-2026-11-27T1745Z"
    runs = ledger.runs()
    assert runs["run_key"].tolist() == [key] and runs["status"].tolist() == ["done"]
    orders = ledger.orders()
    assert sorted(orders["client_order_id"]) == [f"{key}-AAPL-BUY", f"{key}-MSFT-BUY"]
    assert orders["status"].tolist() == ["FILLED", "FILLED"]
    events = ledger.events()
    submitted = events[events["kind"] == "submitted"]["client_order_id"]
    assert sorted(submitted) == sorted(orders["client_order_id"])  # each handed to the broker once
    assert (events["kind"] == "run_resumed").sum() == 1  # the retry resumed the run instead of starting anew
