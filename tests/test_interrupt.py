"""Interrupt means stop: a real Jupyter kernel runs kit.execute, the test presses the kernel's stop button.

The kernel is started by the test (jupyter_client, the project's own ipykernel) and interrupted the way
JupyterLab does it (SIGINT through the kernel manager). A resting LMT order far from the mock's price never
fills, so only the interrupt can end the run before its 60 s timeout. Scripts get the same handling from
SIGTERM, tested in a subprocess.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

jupyter_client = pytest.importorskip("jupyter_client")

# A run that only an interrupt ends early: the limit is far below the mock's price, the timeout far away.
CELL = """
import pandas as pd
import kit

class {broker}(kit.MockBroker):
    deaf = {deaf}
    async def cancel(self, client_order_id):  # a broker that never confirms a cancel, like a lost IB
        if not self.deaf:
            await super().cancel(client_order_id)

targets = pd.DataFrame({{"symbol": ["AAPL"], "side": "BUY", "quantity": [10], "order_type": "LMT",
                         "limit_price": [100.0]}})
run = kit.execute(targets, broker={broker}(prices={{"AAPL": 190.0}}), run_key="stop-me", db={db!r},
                  timeout=60)
"""
STOP_SECONDS = 2.0  # the interrupt to the cell's end, with the mock's (immediate) cancel confirmation


@pytest.fixture
def kernel(tmp_path):
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _outputs_until(client, msg_id: str, wanted, deadline: float) -> list[dict]:
    """iopub messages of one execution until `wanted(message)` or the kernel goes idle; [] past deadline."""
    seen = []
    while time.monotonic() < deadline:
        try:
            message = client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        except Exception:  # queue.Empty: nothing more before the deadline
            break
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(message)
        if wanted(message):
            return seen
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return seen
    raise AssertionError(f"no wanted message before the deadline; saw {[m['msg_type'] for m in seen]}")


def _text(message: dict) -> str:
    content = message["content"]
    return content.get("text") or content.get("data", {}).get("text/plain", "")


def _working(message: dict) -> bool:
    return "1 working" in _text(message)


def _idle(message: dict) -> bool:
    return message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"


def _ledger(db: Path) -> tuple[tuple, list[tuple], dict]:
    with duckdb.connect(str(db), read_only=True) as con:
        run = con.execute("SELECT status, error_name, error FROM runs WHERE run_key = 'stop-me'").fetchone()
        events = con.execute("""SELECT kind, status FROM order_events WHERE client_order_id IS NOT NULL
                                ORDER BY seq""").fetchall()
        finished = con.execute("SELECT detail FROM order_events WHERE kind = 'run_finished'").fetchone()
        order = con.execute("SELECT status FROM orders").fetchone()
    return (run, order), events, json.loads(finished[0])


def _start(kernel, tmp_path, deaf: bool) -> tuple[str, Path]:
    _, client = kernel
    db = tmp_path / "kit.duckdb"
    msg_id = client.execute(CELL.format(broker="Deaf" if deaf else "Quick", deaf=deaf, db=str(db)))
    # The live progress display says when the order is working at the broker: then press stop.
    _outputs_until(client, msg_id, _working, time.monotonic() + 60)
    return msg_id, db


def _reply_error(client, msg_id: str) -> dict:
    reply = client.get_shell_msg(timeout=10)
    # On a slow start jupyter_client asks kernel_info twice and reads one answer: skip the other.
    while reply["msg_type"] == "kernel_info_reply":
        reply = client.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply["content"]


def test_a_kernel_interrupt_cancels_the_working_orders_and_stops_the_cell(kernel, tmp_path) -> None:
    manager, client = kernel
    msg_id, db = _start(kernel, tmp_path, deaf=False)
    pressed = time.monotonic()
    manager.interrupt_kernel()
    seen = _outputs_until(client, msg_id, _idle, pressed + 30)
    stopped_after = time.monotonic() - pressed
    assert stopped_after < STOP_SECONDS, f"the cell ran on for {stopped_after:.1f}s after the interrupt"
    reply = _reply_error(client, msg_id)
    assert reply["status"] == "error" and reply["ename"] == "Interrupted"
    errors = [m["content"] for m in seen if m["msg_type"] == "error"]
    assert len(errors) == 1 and "threading.py" not in "".join(errors[0]["traceback"])
    assert "no order is left working" in "".join(errors[0]["traceback"])
    (run, order), events, finished = _ledger(db)
    assert order == ("CANCELLED",)
    kinds = [kind for kind, _ in events]
    # Cancelled on the broker's word: the request, then the broker's confirmation, nothing in between.
    assert kinds.index("cancel_requested") < kinds.index("cancelled")
    assert run[0] == "failed" and run[1] == "RunInterrupted" and "interrupt" in run[2]
    assert any("interrupted by the user" in note for note in finished["notes"])


def test_a_second_interrupt_stops_waiting_and_leaves_the_order_working(kernel, tmp_path) -> None:
    manager, client = kernel
    msg_id, db = _start(kernel, tmp_path, deaf=True)
    manager.interrupt_kernel()
    # kit says it is waiting for the broker's confirmation; the deaf broker never gives it.
    _outputs_until(client, msg_id, lambda m: "interrupt again" in _text(m), time.monotonic() + 10)
    pressed = time.monotonic()
    manager.interrupt_kernel()
    _outputs_until(client, msg_id, _idle, pressed + 30)
    assert time.monotonic() - pressed < STOP_SECONDS  # well before the 10 s cancel_timeout
    reply = _reply_error(client, msg_id)
    assert reply["ename"] == "Interrupted" and "1 order(s) left working" in "".join(reply["traceback"])
    (_, order), events, finished = _ledger(db)
    assert order == ("SUBMITTED",)  # never called cancelled without the broker's word
    kinds = [kind for kind, _ in events]
    assert "cancel_requested" in kinds and "left_working" in kinds and "cancelled" not in kinds
    assert any("left working" in note for note in finished["notes"])


SCRIPT = """
import pandas as pd
import kit

targets = pd.DataFrame({"symbol": ["AAPL"], "side": "BUY", "quantity": [10], "order_type": "LMT",
                        "limit_price": [100.0]})
kit.execute(targets, broker=kit.MockBroker(prices={"AAPL": 190.0}), run_key="stop-me", db=DB, timeout=60,
            progress="log")
"""


def test_sigterm_stops_a_script_the_same_way(tmp_path) -> None:
    db = tmp_path / "kit.duckdb"
    script = tmp_path / "trade.py"
    script.write_text(f"DB = {str(db)!r}\n" + textwrap.dedent(SCRIPT))
    process = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # kit's first progress line says the order is working
            if "1 working" in line:
                break
        pressed = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert time.monotonic() - pressed < STOP_SECONDS + 1  # + the interpreter's exit
    assert code != 0 and "Interrupted" in rest and "no order is left working" in rest
    (run, order), _, _ = _ledger(db)
    assert order == ("CANCELLED",) and run[1] == "RunInterrupted"
