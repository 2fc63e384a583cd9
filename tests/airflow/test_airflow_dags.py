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
from kit.schedule import load_jobs
from kit.slots import due, next_slot, run_key, slots
from tests.ledgers import fresh_database, missing_postgres

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


@pytest.fixture(params=["duckdb", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger the DAG's tasks write to: a DuckDB file, or a database on the suite's PostgreSQL server
    (the shared ledger several Airflow workers would use)."""
    if request.param == "duckdb":
        return str(tmp_path / "ledger" / "kit.duckdb")
    if (why := missing_postgres()) and os.environ.get("CI") != "true":
        pytest.skip(why)
    return fresh_database(request.getfixturevalue("postgres_server"), "airflow")


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


START = datetime(2027, 11, 24, tzinfo=UTC)  # Thanksgiving week: a holiday, then a half day


@pytest.fixture(scope="module")
def sample_dags(airflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample job file's DAGs as the driver sees them (one Airflow start for the tests that read them)."""
    home = tmp_path_factory.mktemp("airflow")
    return drive(airflow_python, home, "dags", str(SAMPLE_JOBS), START.isoformat(), "6",
                 env={"KITTEST_AIRFLOW_JOBS": str(SAMPLE_JOBS)})


def test_one_dag_per_job_scheduled_on_kits_own_slots(sample_dags: dict):
    out = {dag_id: dag for dag_id, dag in sample_dags.items() if dag_id.startswith("kit-")}
    jobs = load_jobs(SAMPLE_JOBS)
    assert sorted(out) == sorted(f"kit-{job.name}" for job in jobs)
    for job in jobs:
        dag = out[f"kit-{job.name}"]
        expected = slots(job, START, START + timedelta(days=30))[:6]
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
                env={"KITTEST_AIRFLOW_JOBS": str(SAMPLE_JOBS)})

    for job in load_jobs(SAMPLE_JOBS):
        expected = due(job, now, last) or next_slot(job, now)
        assert out[f"kit-{job.name}"] == expected.isoformat(), job.name
    assert out["kit-momentum-close"] == "2027-11-29T20:45:00+00:00"  # catch_up: the latest missed slot, once
    assert out["kit-us-open"] == "2027-11-30T14:35:00+00:00"  # skip: 5 minutes late is within its grace
    assert out["kit-paris-open"] == "2027-12-01T08:05:00+00:00"  # skip: today's 08:05 is too old; tomorrow


def test_jobs_that_may_reach_ib_share_one_pool_per_account_and_client_id(sample_dags: dict):
    assert sample_dags["kit-momentum-close"]["pool"] == "default_pool"  # broker = "mock": nothing to share
    assert sample_dags["kit-paris-open"]["pool"] == "kit-ib-DU1234567-7"  # broker = "ib"
    assert sample_dags["kit-us-open"]["pool"] == "kit-ib-DU1234567-7"  # the notebook's default may be ib
    command = sample_dags["pools_command"]
    assert command["status"] == 0
    assert json.loads(command["stdout"]) == {"kit-ib-DU1234567-7": {
        "slots": 1, "description": "kit: one IB connection per account and clientId",
        "include_deferred": False}}


@pytest.fixture(scope="module")
def airflow_db(airflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated Airflow metadata database (SQLite): each DAG run test starts from a copy."""
    home = tmp_path_factory.mktemp("airflow-template")
    subprocess.run([str(airflow_python), "-m", "airflow", "db", "migrate"], capture_output=True, check=True,
                   timeout=300, env={**os.environ, "AIRFLOW_HOME": str(home)})
    return home / "airflow.db"


def run_dying_job(python: Path, airflow_db: Path, tmp_path: Path, ledger_url: str, parameters: str,
                  *driver_args: str) -> tuple[dict, str]:
    """dag.test() of a job whose first attempt's kernel is SIGKILLed; the driver's output and the run key."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy(airflow_db, home / "airflow.db")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(HERE / "trade.ipynb", project)
    marker = project / "died-once"
    jobs_file = project / "jobs.toml"
    jobs_file.write_text(f"""
[[job]]
name = "trade-close"
notebook = "trade.ipynb"
parameters = {{ {parameters}, die_once = "{marker}" }}
at = "close-15min"
calendar = "XNYS"
""")
    slot = datetime(2026, 11, 27, 17, 45, tzinfo=UTC)  # the day after Thanksgiving: close at 13:00
    out = drive(python, home, "run", "trade-close", slot.isoformat(), *driver_args, env={
        "KITTEST_AIRFLOW_JOBS": str(jobs_file), "KITTEST_AIRFLOW_DB": ledger_url,
        "KITTEST_AIRFLOW_RETRY_DELAY": "0"})

    assert marker.exists()  # the first attempt ran, and its kernel was killed
    assert out["state"] == "success" and out["logical_date"] == slot.isoformat()
    assert out["tasks"] == {"run_notebook": {"state": "success", "try_number": 2}}  # Airflow retried once
    key = run_key(load_jobs(jobs_file)[0], slot)  # what `kit schedule` gives the slot
    assert key == "trade-close-2026-11-27T1745Z"
    return out, key


def assert_one_resumed_run(ledger_url: str, key: str) -> kit.Ledger:
    """One run, resumed by the retry, with one filled order per client_order_id (not a second set)."""
    ledger = kit.ledger(ledger_url)
    runs = ledger.runs()
    assert runs["run_key"].tolist() == [key] and runs["status"].tolist() == ["done"]
    orders = ledger.orders()
    assert sorted(orders["client_order_id"]) == [f"{key}-AAPL-BUY", f"{key}-MSFT-BUY"]
    assert orders["status"].tolist() == ["FILLED", "FILLED"]
    assert (ledger.events()["kind"] == "run_resumed").sum() == 1
    return ledger


def test_a_run_killed_after_trading_is_retried_by_airflow_and_sends_nothing_twice(
        airflow_python: Path, airflow_db: Path, tmp_path: Path, ledger_url: str):
    _, key = run_dying_job(airflow_python, airflow_db, tmp_path, ledger_url, 'broker = "mock"')
    events = assert_one_resumed_run(ledger_url, key).events()
    submitted = events[events["kind"] == "submitted"]["client_order_id"]
    assert sorted(submitted) == [f"{key}-AAPL-BUY", f"{key}-MSFT-BUY"]  # each handed to the broker once


def test_a_run_killed_while_its_ib_orders_work_resumes_them_on_retry(
        airflow_python: Path, airflow_db: Path, tmp_path: Path, ledger_url: str):
    # The kernel dies inside kit.execute at the first broker event, while its orders work at IB (kit's
    # simulated gateway, which outlives the kernel, as IB does); the retry follows them, never re-places one.
    out, key = run_dying_job(airflow_python, airflow_db, tmp_path, ledger_url,
                             'broker = "ib", crash_at = "engine.applied_not_written"', "gateway")
    assert out["placements"] == {f"{key}-AAPL-BUY": 1, f"{key}-MSFT-BUY": 1}  # IB got each order once
    events = assert_one_resumed_run(ledger_url, key).events()
    # An order the dead kernel had not got out yet (the client's pacing holds messages back) is sent by the
    # retry, once, because IB's complete listing lacks it; one IB had is followed, never placed again.
    resent = events[events["kind"] == "resend"]["client_order_id"].tolist()
    submitted = events[events["kind"] == "submitted"]["client_order_id"].tolist()
    assert sorted(submitted) == sorted([f"{key}-AAPL-BUY", f"{key}-MSFT-BUY", *resent])
