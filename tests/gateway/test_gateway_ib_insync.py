"""The real ib_insync 0.9.86 against the simulated gateway.

ib_insync and ib_async both install a top-level ``eventkit``, so ib_insync runs in its own environment
(.venv-insync, built by ``make insync``, which ``make test`` runs): the gateway runs in a thread of this test
process and insync_driver.py drives it from a subprocess, printing JSON that these tests assert on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from kit.gateway import Faults, GatewayConfig, run_gateway_in_thread
from tests.support import require_insync

DRIVER = Path(__file__).with_name("insync_driver.py")


def drive(scenario: str, port: int) -> dict:
    done = subprocess.run(
        [str(require_insync()), str(DRIVER), scenario, str(port)], capture_output=True, text=True, timeout=60
    )
    sys.stderr.write(done.stderr)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ib_insync_trades_and_reconciles_after_reconnect():
    with run_gateway_in_thread(GatewayConfig(seed=11, max_order_size=50_000)) as gw:
        out = drive("session", gw.port)
        book = gw.call(lambda: {o.order_ref: o for o in gw.state.orders.values()})

    assert out["connect_seconds"] < 1.0
    assert out["accounts"] == ["DU1234567"]
    assert out["qualified"] == [
        ["AAPL", 265598, "SMART", "NASDAQ", "USD"],
        ["TTE", 29612193, "SMART", "SBF", "EUR"],
    ]
    trades = out["trades"]
    mkt = trades["ins-mkt"]
    assert mkt["status"] == "Filled" and mkt["filled"] == 100
    assert len(mkt["fills"]) == 3  # partial fills, each with its commission
    assert sum(f[1] for f in mkt["fills"]) == 100
    assert all(re.fullmatch(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01", f[0]) and f[3] > 0 for f in mkt["fills"])
    assert {f[4] for f in trades["ins-tte"]["fills"]} == {"EUR"}
    assert trades["ins-cancel"]["status"] == "Cancelled"
    assert trades["ins-big"]["status"] == "Cancelled"  # rejected: 201
    assert trades["ins-sbf"]["status"] == "Cancelled"  # rejected: 10311
    codes = {code for _, code in out["errors"]}
    assert {200, 201, 10311, 202} <= codes
    assert out["positions"] == {"AAPL": 100, "TTE": 20}

    # after the reconnect, orders are found again by orderRef and permId
    again = {t["order_ref"]: t for t in out["reconnect"]["trades"]}
    for ref in ("ins-mkt", "ins-tte", "ins-cancel", "ins-rest"):
        assert again[ref]["perm_id"] == book[ref].perm_id == trades[ref]["perm_id"]
    for ref in ("ins-big", "ins-sbf"):  # a rejection carries no permId: the completed order does
        assert trades[ref]["perm_id"] == 0
        assert again[ref]["perm_id"] == book[ref].perm_id and again[ref]["status"] == "Cancelled"
    assert again["ins-mkt"]["order_id"] == 0  # completed orders come back without their orderId
    assert again["ins-rest"]["order_id"] == trades["ins-rest"]["order_id"]  # open ones keep it
    assert out["reconnect"]["open"] == ["ins-rest"]
    fills = out["reconnect"]["fills"]
    assert {f[0] for f in fills} == {f[0] for t in ("ins-mkt", "ins-tte") for f in trades[t]["fills"]}
    assert all(f[2] == book[f[1]].perm_id for f in fills)


def test_ib_insync_connect_fails_when_exec_details_end_is_withheld():
    with run_gateway_in_thread(GatewayConfig(faults=Faults(withhold_exec_details_end=True))) as gw:
        out = drive("withhold_end", gw.port)
    assert out == {"error": "TimeoutError", "connected": False}
