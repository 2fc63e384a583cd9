"""Ctrl-C and SIGTERM for `kit run`: the signal reaches the notebook's kernel as an interrupt, so kit.execute
in it cancels the run's working orders and waits for the broker's word, as a kernel interrupt in JupyterLab
does (tests/test_interrupt.py). Each test runs `kit run` as a subprocess on a notebook whose LMT order rests
far below the mock's price (it never fills) and signals it once the order is at the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

KIT = Path(sys.executable).parent / "kit"
STOP_SECONDS = 2.0  # the signal to the interrupted cell's end, the mock's (immediate) cancel confirmed
EXIT_SECONDS = 15.0  # the signal to kit run's exit: the cell, the kernel's shutdown, the run row

PARAMETERS = 'run_key = ""\ndb = ""\nbroker = "mock"\ndeaf = False\nmarker = ""\n'
TRADE = '''
import pathlib
import pandas as pd
import kit

class Resting(kit.MockBroker):
    """Says (in the marker file) when the order is at the broker; a deaf one never confirms a cancel."""
    async def submit(self, order):
        await super().submit(order)
        pathlib.Path(marker).write_text("working")

    async def cancel(self, client_order_id):
        pathlib.Path(marker + ".cancel").write_text("asked")
        if not deaf:
            await super().cancel(client_order_id)

targets = pd.DataFrame({"symbol": ["AAPL"], "side": "BUY", "quantity": [10], "order_type": "LMT",
                        "limit_price": [100.0]})
run = kit.execute(targets, broker=Resting(prices={"AAPL": 190.0}), run_key=run_key, db=db, timeout=60)
'''
AFTER = 'pathlib.Path(marker + ".after").write_text("ran")\n'


def _notebook(folder: Path, *cells: str) -> Path:
    path = folder / "resting.ipynb"
    nb = new_notebook(cells=[new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                             *map(new_code_cell, cells)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    nbformat.write(nb, path)
    return path


class KitRun:
    """`kit run` in a subprocess of its own, its output collected, its run read from the ledger."""

    def __init__(self, folder: Path, notebook: Path, *parameters: str):
        self.folder, self.db, self.marker = folder, folder / "kit.duckdb", folder / "working"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
        env["KIT_LOCK_DIR"] = str(folder / "locks")
        self.process = subprocess.Popen(
            [str(KIT), "--db", str(self.db), "run", str(notebook), "--run-key", "stop-me", "-p", "marker",
             str(self.marker), *parameters], cwd=folder, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.signalled: float | None = None  # wall clock (papermill stamps cells with it)

    def wait_until_working(self, deadline: float = 120.0, suffix: str = "") -> None:
        """Until the notebook's broker writes the marker: the order is at the broker (or, with suffix
        ".cancel", kit in the kernel has asked the broker to cancel it)."""
        until = time.monotonic() + deadline
        while not self.marker.with_name(self.marker.name + suffix).exists():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < until, "the order never reached the broker"
            time.sleep(0.05)  # a test waiting on a condition it can see, with a deadline

    def signal(self, number: int) -> None:
        self.signalled = self.signalled or time.time()
        self.process.send_signal(number)

    def finish(self) -> tuple[int, str, str, float]:
        try:
            out, err = self.process.communicate(timeout=EXIT_SECONDS + 30)
        finally:
            self.process.kill()
        assert self.signalled is not None
        return self.process.returncode, out, err, time.time() - self.signalled

    def ledger(self) -> tuple[tuple, list[str], list[str], list[str]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            run = con.execute("SELECT status, error_name, error, output_path FROM runs").fetchone()
            orders = [status for (status,) in con.execute("SELECT status FROM orders").fetchall()]
            kinds = [kind for (kind,) in con.execute("SELECT kind FROM order_events WHERE client_order_id "
                                                     "IS NOT NULL ORDER BY seq").fetchall()]
            finished = con.execute("SELECT detail FROM order_events WHERE kind = 'run_finished'").fetchone()
        return run, orders, kinds, json.loads(finished[0])["notes"] if finished else []

    def cell_ended_after_signal(self, output: str, source: str) -> float:
        """Seconds from the signal to the end of the output notebook's cell that holds `source` (papermill
        stamps each cell's end)."""
        ended = datetime.fromisoformat(cell(output, source)["metadata"]["papermill"]["end_time"])
        assert self.signalled is not None
        return ended.replace(tzinfo=ended.tzinfo or UTC).timestamp() - self.signalled


def cell(output: str, source: str) -> dict:
    """The one code cell of an output notebook that holds `source` (papermill adds cells of its own)."""
    [found] = [c for c in json.loads(Path(output).read_text())["cells"]
               if c["cell_type"] == "code" and source in "".join(c["source"])]
    return found


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return _notebook(tmp_path, TRADE, AFTER)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_kit_run_cancels_the_working_orders_through_the_kernel(tmp_path, notebook, number):
    name = signal.Signals(number).name
    run = KitRun(tmp_path, notebook)
    run.wait_until_working()
    run.signal(number)
    code, out, err, took = run.finish()
    assert code == 128 + number, (out, err)
    assert took < EXIT_SECONDS, f"kit run ran on for {took:.1f}s after {name}"
    (status, error_name, error, output), orders, kinds, notes = run.ledger()
    assert 0 < run.cell_ended_after_signal(output, "kit.execute(") < STOP_SECONDS
    assert orders == ["CANCELLED"]  # on the broker's word: its confirmation follows kit's request
    assert kinds.index("cancel_requested") < kinds.index("cancelled")
    assert status == "failed" and error_name == "Interrupted" and name in error
    assert any("interrupted by the user" in note for note in notes)
    assert f"kit: interrupted ({name}): the notebook's kernel is cancelling" in err
    assert f"kit: interrupted by {name}: run stop-me ended failed" in err
    assert "no order is left working" in err and "CANCELLED 1" in out
    assert "Traceback" not in err and "[IPKernelApp]" not in err
    assert not (tmp_path / "working.after").exists()  # no cell runs after the interrupt
    saved = json.loads(Path(output).read_text())
    errors = [o for c in saved["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["Interrupted"]  # the interruption is in the archived notebook


def test_a_second_sigint_leaves_the_order_working_and_says_so(tmp_path, notebook):
    run = KitRun(tmp_path, notebook, "-p", "deaf", "True")
    run.wait_until_working()
    run.signal(signal.SIGINT)
    # The kernel has taken the first interrupt (two signals that reach a process at once count as one):
    # kit asked the deaf broker to cancel and waits for a confirmation that never comes.
    run.wait_until_working(30, ".cancel")
    pressed = time.time()
    run.process.send_signal(signal.SIGINT)
    code, out, err, _ = run.finish()
    assert code == 130, (out, err)
    (status, error_name, _, output), orders, kinds, notes = run.ledger()
    assert 0 < run.cell_ended_after_signal(output, "kit.execute(") - (pressed - run.signalled) < STOP_SECONDS
    assert orders == ["SUBMITTED"]  # never called cancelled without the broker's word
    assert "cancel_requested" in kinds and "left_working" in kinds and "cancelled" not in kinds
    assert any("left working" in note for note in notes)
    assert "kit: interrupted again (SIGINT)" in err and "unconfirmed orders stay working" in err
    assert "1 order(s) left working" in err and status == "failed" and error_name == "Interrupted"


def test_no_cell_starts_after_an_interrupt_the_notebook_swallowed(tmp_path):
    swallow = ("import os, signal, time\ntry:\n    os.kill(os.getppid(), signal.SIGINT)\n    time.sleep(60)\n"
               "except KeyboardInterrupt:\n    print('carried on')\n")
    notebook = _notebook(tmp_path, 'import pathlib\npathlib.Path(marker).write_text("1")', swallow, AFTER)
    run = KitRun(tmp_path, notebook)
    # The first cell ran (the kernel is up: under load that alone took most of finish()'s time once);
    # the next one signals kit run itself.
    run.wait_until_working()
    run.signalled = time.time()
    code, out, err, _ = run.finish()
    assert code == 130, (out, err)
    (status, error_name, error, output), *_ = run.ledger()
    assert status == "failed" and error_name == "Interrupted" and "SIGINT" in error
    assert not (tmp_path / "working.after").exists()
    printed = "".join("".join(o.get("text", "")) for o in cell(output, "os.getppid()")["outputs"])
    assert "carried on" in printed  # the cell that swallowed the interrupt ran to its end
    assert [o["evalue"] for o in cell(output, ".after")["outputs"]] == [
        "kit run received SIGINT before this cell; it did not run"]
