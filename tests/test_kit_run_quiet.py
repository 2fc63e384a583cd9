"""`make demo` prints kit's own lines only: no kernel warning, no KeyboardInterrupt logged at the kernel's
shutdown, no parameter warnings. The KeyboardInterrupt came from a race (jupyter_client's SIGINT before
shutdown_request, against ipykernel restoring its "ignore SIGINT"), about one run in three: the demo's
`kit run` is repeated to give it every chance to show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MOMENTUM = Path(__file__).resolve().parents[1] / "notebooks" / "momentum.ipynb"
KIT = Path(sys.executable).parent / "kit"
RUNS = 4


@pytest.mark.parametrize("attempt", range(RUNS))
def test_the_demo_prints_kits_lines_only(tmp_path: Path, attempt: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | {
        "KIT_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([str(KIT), "--db", str(tmp_path / "kit.duckdb"), "run", str(MOMENTUM), "--run-key",
                           f"demo-{attempt}", "-p", "broker", "mock"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # nothing from the kernel, papermill or Jupyter: the noise went there
    first, *rest = done.stdout.splitlines()
    assert first.startswith(f"run demo-{attempt} (") and first.endswith("): done")
    assert rest and all(line.startswith("  ") for line in rest), done.stdout  # kit's summary, indented


def test_what_the_kernel_process_writes_as_it_exits_stays_off_the_terminal(tmp_path: Path) -> None:
    """libzmq may abort the kernel after its last reply (ipykernel's shutdown race) with a line on the
    kernel's own stderr: kit run keeps that stderr next to the output notebook instead of printing it."""
    notebook = Path(__file__).resolve().parent / "notebooks" / "noisy_exit.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | {
        "KIT_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([str(KIT), "--db", str(tmp_path / "kit.duckdb"), "run", str(notebook), "--run-key",
                           "noisy"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    kept = list((tmp_path / "data" / "runs").glob("*/noisy_exit-*.kernel.log"))
    abort = "Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)\n"  # what the notebook writes
    assert [log.read_text() for log in kept] == [abort]


PROBE = """
import sys
from kit.cli import main
code = main(sys.argv[1:])
grammar = sys.modules.get("rfc3987_syntax")
print("EXIT", code, "GRAMMAR", grammar is not None, "PAPERMILL", "papermill" in sys.modules)
"""


def test_kit_run_leaves_out_the_import_no_notebook_needs(tmp_path: Path) -> None:
    """jsonschema's IRI grammar (rfc3987_syntax, seconds to import) is never loaded by kit run, which still
    reads and validates the notebook with nbformat (papermill's own path): a broken one is refused."""
    notebook = Path(__file__).resolve().parent / "notebooks" / "closed.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | {
        "KIT_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([sys.executable, "-c", PROBE, "--db", str(tmp_path / "kit.duckdb"), "run",
                           str(notebook)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-1] == "EXIT 0 GRAMMAR False PAPERMILL True", done.stdout + done.stderr
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [{"cell_type": "code", "source": 1}], "metadata": {}, "nbformat": 4, '
                      '"nbformat_minor": 5}')
    refused = subprocess.run([sys.executable, "-c", PROBE, "--db", str(tmp_path / "kit.duckdb"), "run",
                              str(broken)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.stdout.splitlines()[-1].startswith("EXIT 2 GRAMMAR False"), refused.stdout
    assert refused.stderr.startswith(f"kit: {broken} is not a notebook nbformat can read: The notebook is "
                                     "invalid"), refused.stderr
