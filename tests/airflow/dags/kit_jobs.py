"""Airflow's dags folder for the tests: the DAGs of the job file a test names, as in a deployment."""

import os
from datetime import timedelta

from kit.airflow import dags_from_file

globals().update(dags_from_file(
    os.environ["KITTEST_AIRFLOW_JOBS"], db=os.environ.get("KITTEST_AIRFLOW_DB") or None,
    retry_delay=timedelta(seconds=float(os.environ.get("KITTEST_AIRFLOW_RETRY_DELAY", "60"))),
))
