"""Conformance: IB's own Python client against the simulated gateway, with zero decode errors.

IB's `ibapi` 9.81.1.post1 (PyPI, published by IB; speaks v100..157) runs in .venv-ibapi and a current
10.x build of IB's TWS API source (PyPI `ibapi-latest` 10.51.1, republished by a third party; see
docs/gateway.md) in .venv-ibapi10, both built by `make ibapi`, which `make test` runs. The gateway runs in a
thread of this test process and ibapi_driver.py drives it from a subprocess, printing JSON that these tests
assert on. Every decode problem IB's client can report counts: error callbacks 505/507/508, ERROR log
records, a message loop that died.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from itertools import accumulate
from pathlib import Path

import pytest

from kit.gateway import GatewayConfig, run_gateway_in_thread
from kit.gateway import messages as m

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("ibapi_driver.py")
CLIENTS = {
    "ibapi-9.81": ROOT / ".venv-ibapi" / "bin" / "python",
    "ibapi-10.51": ROOT / ".venv-ibapi10" / "bin" / "python",
}
#: Codes a clean session may see: farm notices, the unknown contract asked for, the cancel, pacing.
EXPECTED_CODES = {2104, 2106, 2158, 200, 202, 100}


def client(name: str) -> Path:
    python = CLIENTS[name]
    if not python.exists():
        pytest.skip(f"needs {python.parent.parent.name}: run `make ibapi`")
    return python


def drive(python: Path, scenario: str, port: int, *args: str, timeout: float = 10) -> dict:
    env = {**os.environ, "KITTEST_IBAPI_TIMEOUT": str(timeout)}
    done = subprocess.run(
        [str(python), str(DRIVER), scenario, str(port), *args], capture_output=True, text=True, timeout=120,
        env=env,
    )
    sys.stderr.write(done.stderr)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("name", "version"), [("ibapi-9.81", 157), ("ibapi-10.51", 178)])
def test_ib_official_client_session(name, version):
    python = client(name)
    with run_gateway_in_thread(GatewayConfig(seed=5)) as gw:
        out = drive(python, "session", gw.port)
        book = gw.call(lambda: {o.order_ref: o for o in gw.state.orders.values()})
        refused = gw.call(lambda: gw.state.paced[5])

    assert out.get("failure") is None and out["decode_problems"] == []
    assert out["server_version"] == version  # 9.81 speaks at most 157 and is served there
    assert out["accounts"] == "DU1234567" and out["connection_time"].endswith(" UTC")
    assert out["details"]["1"][0][:5] == ["AAPL", 265598, "SMART", "NASDAQ", "USD"]
    assert out["details"]["2"][0][:5] == ["TTE", 29612193, "SMART", "SBF", "EUR"]
    assert {code for _, code, _ in out["errors"]} <= EXPECTED_CODES
    ids, statuses = out["ids"], out["statuses"]
    mkt = statuses[str(ids["mkt"])]
    assert mkt[:2] == ["PreSubmitted", "Submitted"] and mkt[-1] == "Filled"
    assert statuses[str(ids["cancel"])][-2:] == ["PendingCancel", "Cancelled"]
    assert [ids["cancel"], 202] in [e[:2] for e in out["errors"]]

    execs = [e for e in out["live_execs"] if e["ref"] == "ibapi-mkt"]
    assert len(execs) == 3 and sum(e["shares"] for e in execs) == 100  # partial fills
    assert [e["cum_qty"] for e in execs] == list(accumulate(e["shares"] for e in execs))
    vwap = sum(e["shares"] * e["price"] for e in execs) / 100
    assert execs[-1]["avg_price"] == pytest.approx(vwap) and execs[-1]["perm_id"] == book["ibapi-mkt"].perm_id
    assert all(re.fullmatch(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01", e["exec_id"]) for e in execs)
    assert {e["exchange"] for e in execs} <= {"ISLAND", "ARCA", "BATS", "IEX"}  # a venue, never "NASDAQ"
    lmt = [e for e in out["live_execs"] if e["ref"] == "ibapi-lmt-fill"]
    assert {e["liquidity"] for e in execs + lmt} == {2}  # MKT and marketable LMT remove liquidity
    assert all(out["commissions"][e["exec_id"]][0][1:] == [1.0, "USD"] for e in execs)
    tte = [e for e in out["live_execs"] if e["ref"] == "ibapi-tte"]
    assert all(out["commissions"][e["exec_id"]][0][2] == "EUR" for e in tte)

    assert out["what_if"]["perm_id"] == 0 and float(out["what_if"]["init_margin_change"]) > 0
    assert "ibapi-what-if" not in book  # a what-if books nothing
    assert [o["ref"] for o in out["open"]] == ["ibapi-rest"]
    completed = {c["ref"]: c for c in out["completed"]}
    assert completed["ibapi-mkt"]["status"] == "Filled" and completed["ibapi-cancel"]["status"] == "Cancelled"
    assert all(c["perm_id"] == book[c["ref"]].perm_id and c["order_id"] == 0 for c in completed.values())
    replayed = {e["exec_id"]: e for e in out["reply_execs"]}
    assert set(replayed) == {e["exec_id"] for e in out["live_execs"]}
    assert all(e["req_id"] == 9 and e["ref"] for e in replayed.values())
    assert sorted(p[1:3] for p in out["positions"]) == [["AAPL", 110.0], ["TTE", 20.0]]
    assert out["ticks"]["1"] < out["ticks"]["2"]  # bid below ask
    # pacing: a burst of 60 is answered with error 100 beyond IB's 50 a second; the rest are served
    paced = [e for e in out["errors"] if e[1] == 100]
    assert paced and all("Max rate of messages per second has been exceeded" in e[2] for e in paced)
    assert out["current_times"] + len(paced) == 60 and refused == len(paced)


def test_ib_10x_client_reads_every_server_version_157_to_178():
    """IB's 10.x client made to announce v100..N reads each version's layouts with IB's own decoder."""
    python = client("ibapi-10.51")
    with run_gateway_in_thread(GatewayConfig(seed=6)) as gw:
        out = drive(python, "versions", gw.port)
    assert out.get("failure") is None
    for version, result in out["versions"].items():
        assert result["server_version"] == int(version)
        assert result["decode_problems"] == [], version
        assert result["fills"] == 3 and result["statuses"][-1] == "Filled" and result["liquidity"] == [2]
        assert result["details"] == ["AAPL", 265598] and f"v{version}" in result["completed_refs"]
        assert float(result["what_if_margin"]) < 0  # selling part of the position frees margin
        assert {code for _, code, _ in result["errors"]} <= {2104, 2106, 2158}


def test_conformance_catches_a_layout_of_the_wrong_version(monkeypatch):
    """The check can fail: a gateway sending 176 layouts to a 178 client is caught by IB's decoder."""
    python = client("ibapi-10.51")
    wire = m.Message.wire
    monkeypatch.setattr(m.Message, "wire", lambda self, version: wire(self, 176))
    with run_gateway_in_thread(GatewayConfig(seed=7)) as gw:
        out = drive(python, "fill", gw.port, timeout=2)
    assert out["decode_problems"]
