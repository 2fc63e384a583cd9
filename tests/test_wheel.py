"""The built wheel in a fresh virtual environment, core dependencies only (no ib_async, JupyterLab or plotly):
`kit --help`, `kit run` of the sample notebook on the mock broker and `kit runs` work, and what needs an
extra says which one.

Versions come from constraints.txt, as `make` installs them; pip's cache keeps this to a minute or two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "data", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis")


def run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel, built from a copy of the source (no stale build/ of this tree),
    installed as `pip install kit-*.whl -c constraints.txt` would for a user."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    pip = [sys.executable, "-m", "pip"]
    built = run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source])
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("kit-*.whl")
    env = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", env]).check_returncode()
    installed = run([*pip, "--python", env / "bin" / "python", "install", "--quiet", wheel,
                     "-c", ROOT / "constraints.txt"])
    assert installed.returncode == 0, installed.stderr
    return env


@pytest.fixture(scope="module")
def user(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A user of that environment: its own home (no Jupyter kernels or IPython profiles of this machine's
    user), a project folder outside this repository, and no KIT_ settings of the test run."""
    home = tmp_path_factory.mktemp("home")
    project = tmp_path_factory.mktemp("project")
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("KIT_", "PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
    environment |= {"HOME": str(home), "KIT_DB": str(project / "kit.duckdb"),
                    "PATH": f"{venv / 'bin'}{os.pathsep}{environment['PATH']}"}
    return {"cwd": project, "env": environment}


def test_the_wheel_installs_the_core_without_the_extras(venv: Path, user: dict):
    optional = ("ib_async", "ib_insync", "jupyterlab", "plotly", "pytest")
    script = ("import importlib.util, json, sys, kit; print(json.dumps({'kit': kit.__file__, 'missing': "
              "[m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))")
    found = run([venv / "bin" / "python", "-c", script, *optional], **user)
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert Path(report["kit"]).is_relative_to(venv), report  # the wheel's kit, not this checkout's
    assert report["missing"] == list(optional)
    assert (Path(report["kit"]).parent / "samples" / "stocks.csv").is_file()  # the sample notebook's data


def test_kit_help_run_and_runs_on_the_mock(venv: Path, user: dict):
    kit = venv / "bin" / "kit"
    helped = run([kit, "--help"], **user)
    assert helped.returncode == 0, helped.stderr
    assert "usage: kit" in helped.stdout and "run" in helped.stdout and "runs" in helped.stdout

    ran = run([kit, "run", ROOT / "notebooks" / "momentum.ipynb", "-p", "broker", "mock",
               "--run-key", "wheel-test"], **user)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "wheel-test" in ran.stdout + ran.stderr

    listed = run([kit, "runs"], **user)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "wheel-test" in line]
    assert "done" in row.split() and "mock" in row.split()

    query = ("import duckdb, json, sys; con = duckdb.connect(sys.argv[1], read_only=True); print(json.dumps("
             "con.execute('SELECT status, count(*), sum(filled_quantity) > 0 FROM orders GROUP BY status')"
             ".fetchall()))")
    orders = run([venv / "bin" / "python", "-c", query, user["env"]["KIT_DB"]], **user)
    assert orders.returncode == 0, orders.stderr
    assert json.loads(orders.stdout) == [["FILLED", 3, True]]  # the notebook's top_n = 3 leaders

    # The IB broker without ib_async: one line naming the extra, exit 2, nothing sent, no traceback.
    refused = run([kit, "reconcile", "--run", "wheel-test", "--broker", "ib"], **user)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "kit: the IB broker needs ib_async (or ib_insync): install kit[ib]" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_review_notebook_names_its_extra(venv: Path, user: dict):
    """notebooks/review.ipynb draws with plotly: without kit[review] it says so."""
    out = user["cwd"] / "review-out.ipynb"
    reviewed = run([venv / "bin" / "papermill", ROOT / "notebooks" / "review.ipynb", out], **user)
    assert reviewed.returncode != 0
    assert "this notebook draws with plotly: pip install 'kit[review]'" in reviewed.stderr
