"""What the IB path prints, and that it never waits for a connection forever.

The client libraries log IB's messages as `Error <code>, reqId ...` at ERROR, and their own lines when a
connection is refused: kit says each itself (on `kit.ib`, at the level the message deserves; in the
ledger), so the library's copies must not reach the user. Checked with ib_async and ib_insync against the
simulated gateway, in a fresh process each (logging is per process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import kit
from kit.brokers.ib import IBBroker
from kit.brokers.ib_codes import log_level
from kit.config import IBSettings
from kit.errors import BrokerUnavailableError
from kit.gateway import Faults, GatewayConfig
from tests import test_ib_broker

library, gateway = test_ib_broker.library, test_ib_broker.gateway  # the same fixtures: both libraries
ROOT = Path(__file__).resolve().parents[1]
# Runs tests.ib_driver with logging as a user might set it up (or not at all), then prints its report.
DRIVER = """
import json, logging, sys
if sys.argv[2] == "logging":
    logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(levelname)s %(message)s")
from tests.ib_driver import execute
print(json.dumps(execute(json.loads(sys.argv[1]))))
"""


def python_for(library: str) -> str:
    return str(test_ib_broker.INSYNC_PYTHON) if library == "ib_insync" else sys.executable


def run_driver(library: str, spec: dict[str, Any], logs: bool) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([python_for(library), "-c", DRIVER, json.dumps({"library": library, **spec}),
                           "logging" if logs else "plain"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(tif_preset_notice=True))], indirect=True)
@pytest.mark.parametrize("logs", [False, True], ids=["no-logging", "logging-at-INFO"])
def test_ib_notices_are_logged_by_kit_at_their_level_not_by_the_library(library, gateway, tmp_path, logs):
    spec = {"port": gateway.port, "db": str(tmp_path / "kit.duckdb"), "run_key": "quiet",
            "targets": {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [300]}}
    result, stderr = run_driver(library, spec, logs)
    assert result["status"] == "done"
    assert any(e["kind"] == "error" and "10349" in (e["detail"] or "") for e in result["events"])  # recorded
    lines = stderr.splitlines()
    # The library's own lines about it: its `Error 10349, reqId ...`, and (ib_async) its reading of 10349 as
    # a cancel. Its INFO lines, which repeat each order's whole log, are there only for who asks for them.
    echoes = [line for line in lines if line.startswith(("Error 10349", "Canceled order"))
              or (line.startswith(f"LOG {library}.wrapper") and ("ERROR" in line or "WARNING" in line))]
    assert not echoes
    said = [line for line in lines if "10349" in line and not line.startswith(f"LOG {library}.")]
    if logs:  # kit says it once, as the warning it is (the order works on and fills)
        assert said == ["LOG kit.ib WARNING IB 10349 about quiet-AAPL-BUY: Order TIF was set to DAY based on "
                        "order preset."]
    else:  # a warning reaches a user who set up no logging, through Python's last-resort handler
        assert said == ["IB 10349 about quiet-AAPL-BUY: Order TIF was set to DAY based on order preset."]


def test_a_refused_connection_prints_kits_message_only(library, tmp_path):
    with socket.socket() as closed:  # a free loopback port that nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = {"port": port, "db": str(tmp_path / "kit.duckdb"), "run_key": "refused",
            "targets": {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [1]}}
    result, stderr = run_driver(library, spec, logs=False)
    assert result["error"].startswith("BrokerUnavailableError: cannot reach IB at 127.0.0.1")
    assert "API connection failed" not in stderr and "Make sure API port" not in stderr


def test_the_levels_follow_what_ib_says():
    assert log_level(201) == logging.ERROR  # an order refused
    assert log_level(10349) == logging.WARNING  # a notice about an order that goes on working
    assert log_level(202) == logging.INFO and log_level(2104) == logging.INFO  # a confirmation; all is well
    assert log_level(1100) == logging.WARNING and log_level(326) == logging.ERROR
    assert log_level(99999) == logging.WARNING  # not in IB's tables: kit looks the order up


# ---- no wait for a connection outlasts the reconnect window ------------------------------------------
class BrokenReconnect(IBBroker):
    """The first connection works; reconnecting raises what the client library was never meant to."""

    async def _connect_once(self, timeout: float | None = None) -> None:
        if self._session:
            raise RuntimeError("a bug in the client library")
        await super()._connect_once(timeout)


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(disconnect_on="execDetails"))],
                         indirect=True)
def test_an_unexpected_error_while_reconnecting_ends_the_run_instead_of_hanging(gateway, tmp_path):
    broker = BrokenReconnect(IBSettings(port=gateway.port, client_id=41, connect_timeout=5),
                             reconnect_for=120)
    targets = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "side": "BUY", "quantity": [300, 300]})

    async def run() -> Any:  # far below the reconnect window: a hang fails here, not at the suite's end
        return await asyncio.wait_for(kit.execute_async(targets, broker=broker, run_key="broken",
                                                        db=tmp_path / "kit.duckdb", timeout=20), 30)

    result = asyncio.run(run())
    assert result.status == "disconnected", result.notes
    assert any("reconnecting to IB failed: RuntimeError: a bug in the client library" in note
               for note in result.notes), result.notes


def test_waiting_for_the_connection_is_bounded_by_the_window_itself(gateway):
    """A reconnect that never ends (nor says it gave up) does not hold a wait past the window."""

    async def scenario() -> float:
        broker = IBBroker(IBSettings(port=gateway.port, client_id=42, connect_timeout=5), reconnect_for=0.5)
        await broker.connect()
        try:
            broker._up.clear()  # the connection is down, and nothing will bring it back or give up
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(BrokerUnavailableError, match=r"did not come back within 0\.5s"):
                await asyncio.wait_for(broker._ready(), 10)
            return loop.time() - started
        finally:
            await broker.close()

    assert asyncio.run(scenario()) < 5
