"""The crash matrix: kit is SIGKILLed at many points of an IB run, then the same run key runs again.

After each: no order reached the gateway twice, every execution is in the ledger exactly once with its
commission, and every order's status and quantities are the gateway's. The kill points are inside kit
(kit.crashpoints, armed only by tests/crash_launcher.py) and on the wire (the gateway kills kit just before
it sends or right after it receives a given message, so kit dies between, say, an execution and its
commission).
`make crash-soak` runs a longer randomized version (KITTEST_CRASH_SOAK=N).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.ib_driver import execute
from tests.support import gateway_executions, gateway_placements

ROOT = Path(__file__).resolve().parents[1]
BASKET = {"symbol": ["AAPL", "MSFT", "IBM"], "side": ["BUY", "SELL", "BUY"], "quantity": [300, 120, 90]}
GATEWAY_STATUS = {"Filled": "FILLED", "Cancelled": "CANCELLED", "Submitted": "SUBMITTED",
                  "PreSubmitted": "SUBMITTED"}

INSIDE_KIT = [
    "engine.before_submitted_write",  # planned, not yet marked as handed over
    "engine.before_submit:1",  # marked handed over, nothing sent
    "engine.before_submit:2",  # one order sent, two not
    "engine.before_submit:3",
    "ledger.mid_write:1",  # the run's first batch, half written
    "ledger.mid_write:2",  # the write-ahead of the submissions, half written
    "ledger.mid_write:3",  # events of the broker, half written
    "ledger.mid_write:4",
    "ledger.committed:3",
    "engine.applied_not_written:1",  # applied in memory, not yet in the ledger
    "engine.applied_not_written:2",
    "engine.applied_not_written:3",
]
ON_THE_WIRE = [
    ("in", "placeOrder", 1),  # IB has the first order, kit has no acknowledgement
    ("in", "placeOrder", 3),
    ("out", "openOrder", 1),
    ("out", "orderStatus", 2),
    ("out", "execDetails", 1),  # first partial fill
    ("out", "execDetails", 2),  # between partial fills
    ("out", "execDetails", 5),
    ("out", "commissionReport", 1),  # between an execution and its commission
    ("out", "commissionReport", 4),
    ("out", "commissionReport", 9),  # the very last commission
    ("out", "nextValidId", 1),  # during the handshake
]


@pytest.fixture
def gateway():
    with run_gateway_in_thread(GatewayConfig(seed=7, partial_fills=3, fill_latency=0.02)) as gw:
        yield gw


def start_kit(gw: Any, db: Path | str, crash_at: str | None = None) -> subprocess.Popen[str]:
    """kit in a child process; with `crash_at`, through the launcher that arms that crash point."""
    spec = json.dumps({"port": gw.port, "db": str(db), "run_key": "crash", "targets": BASKET,
                       "client_id": 21})
    command = ["-m", "tests.crash_launcher", crash_at, spec] if crash_at else ["-m", "tests.ib_driver", spec]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_on_the_wire(gw: Any, direction: str, name: str, nth: int, victim: list[int]) -> None:
    """Make the gateway SIGKILL kit just before sending (out) or just after receiving (in) a message."""
    server = gw.gateway
    seen = {"count": 0}

    def strike() -> None:
        seen["count"] += 1
        if seen["count"] == nth and victim:
            os.kill(victim[0], signal.SIGKILL)

    if direction == "out":
        send = server.send

        def patched_send(conn: Any, msg: Any) -> None:
            if msg.name == name and victim:
                strike()
                if seen["count"] == nth:
                    return  # kit is dead; the message is lost with its connection
            send(conn, msg)

        gw.call(setattr, server, "send", patched_send)
    else:
        handlers = server._handlers
        dispatch = handlers.dispatch
        request_ids = {"placeOrder": "3", "cancelOrder": "4", "reqExecutions": "7"}

        def patched_dispatch(conn: Any, fields: list[str]) -> None:
            dispatch(conn, fields)  # the request takes effect at IB ...
            if fields and fields[0] == request_ids[name]:
                strike()  # ... and kit dies before hearing anything back

        gw.call(setattr, handlers, "dispatch", patched_dispatch)


def check_invariants(gw: Any, db: Path | str) -> None:
    import kit

    ledger = kit.ledger(db)
    orders = ledger.orders().set_index("client_order_id")
    fills = ledger.fills()
    ours = gateway_placements(gw, "crash")
    assert ours and all(n == 1 for n in ours.values()), f"an order reached IB twice: {ours}"
    gateway_orders = gw.call(lambda: {o.order_ref: (o.status, o.filled) for o in gw.state.orders.values()})
    executions = gateway_executions(gw)
    assert fills["exec_id"].is_unique
    assert dict(zip(fills["exec_id"], fills["quantity"], strict=True)) == executions
    assert fills["commission"].notna().all(), "an execution lost its commission"
    for ref, (status, filled) in gateway_orders.items():
        assert orders.loc[ref, "filled_quantity"] == filled, ref
        assert orders.loc[ref, "status"] == GATEWAY_STATUS.get(status, status), (ref, status)
    assert set(orders.index) == set(BASKET_IDS)


BASKET_IDS = [f"crash-{s}-{side}" for s, side in zip(BASKET["symbol"], BASKET["side"], strict=True)]


def crash_then_resume(gw: Any, db: Path | str, crash_at: str | None = None,
                      wire: tuple[str, str, int] | None = None) -> None:
    victim: list[int] = []
    if wire:
        kill_on_the_wire(gw, *wire, victim)
    process = start_kit(gw, db, crash_at)
    victim.append(process.pid)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, f"kit was not killed ({process.returncode}): {err[-2000:]}"
    if wire:  # the gateway goes back to normal for the resumed run
        gw.call(setattr, gw.gateway, "send", type(gw.gateway).send.__get__(gw.gateway))
        gw.call(setattr, gw.gateway._handlers, "dispatch",
                type(gw.gateway._handlers).dispatch.__get__(gw.gateway._handlers))
    result = execute({"port": gw.port, "db": str(db), "run_key": "crash", "targets": BASKET,
                      "client_id": 21, "timeout": 20})
    assert result.get("status") == "done", result
    check_invariants(gw, db)


@pytest.mark.parametrize("crash_at", INSIDE_KIT)
def test_crash_inside_kit(gateway, ledger_db, crash_at):
    crash_then_resume(gateway, ledger_db, crash_at=crash_at)


@pytest.mark.parametrize("wire", ON_THE_WIRE, ids=lambda w: f"{w[0]}-{w[1]}-{w[2]}")
def test_crash_on_the_wire(gateway, ledger_db, wire):
    crash_then_resume(gateway, ledger_db, wire=wire)


@pytest.mark.skipif(not os.environ.get("KITTEST_CRASH_SOAK"), reason="the long randomized run: crash-soak")
def test_randomized_crash_soak(tmp_path):
    rng = random.Random(int(os.environ.get("KITTEST_CRASH_SEED", "1")))
    for round_ in range(int(os.environ["KITTEST_CRASH_SOAK"])):
        with run_gateway_in_thread(GatewayConfig(seed=round_, partial_fills=rng.randint(1, 5),
                                                 fill_latency=rng.choice([0.0, 0.01, 0.05]))) as gw:
            if rng.random() < 0.5:
                crash_then_resume(gw, tmp_path / f"soak-{round_}.duckdb", crash_at=rng.choice(INSIDE_KIT))
            else:
                direction, name, _ = rng.choice(ON_THE_WIRE)
                crash_then_resume(gw, tmp_path / f"soak-{round_}.duckdb",
                                  wire=(direction, name, rng.randint(1, 3)))


def test_no_environment_variable_makes_kit_kill_itself(tmp_path):
    """Fault injection is out of a live process's reach: only the test launcher arms a crash point. The
    variable that once did (KIT_CRASH_AT) is refused as an unknown setting, and nothing dies."""
    code = ("import sys, kit, pandas as pd; print(kit.execute(pd.DataFrame({'symbol': ['AAPL'], 'quantity': "
            "[5]}), prices={'AAPL': 10.0}, run_key='env', db=sys.argv[1], timeout=10).status)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KIT_CRASH_AT": "engine.before_submit"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "kit.duckdb")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "KIT_CRASH_AT" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "kit.duckdb").exists()
