"""Amending each order type and instrument through the simulated gateway with ib_async and ib_insync (the
cases of tests/test_amend_types.py): IB's modify under the same order id, then a fill by a move only the
amended terms reach, or a cancel. kit runs in the driver (tests/amend_driver.py; in .venv-insync for
ib_insync): first it places both runs, amends every order and cancels the "cancel" run; then the gateway's
prices move (and the close auction runs) while kit is away; then a re-run of "fill" follows its orders
from IB's listing and executions."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pandas as pd
import pytest

import kit
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.amend_driver import run as drive
from tests.support import ROOT, require_insync
from tests.test_amend_types import CASES, IDS, amend_kinds, check_row, check_tca, targets, within_limit

LIBRARIES = ("ib_async", "ib_insync")


def driven(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["library"] == "ib_async":
        return drive(spec)
    done = subprocess.run([str(require_insync()), "-m", "tests.amend_driver", json.dumps(spec)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module", params=LIBRARIES)
def amended(request, tmp_path_factory):
    """Both runs through one gateway per library; what the gateway holds afterwards, by orderRef."""
    library = request.param
    db = tmp_path_factory.mktemp(f"amend-types-{library}") / "kit.duckdb"
    with run_gateway_in_thread(GatewayConfig(fill_latency=0.01)) as gw:
        expiry = next(i.expiry for i in gw.gateway.market.instruments if i.sec_type == "OPT")
        frame = {name: [None if pd.isna(v) else v for v in values]
                 for name, values in targets(CASES, expiry).to_dict(orient="list").items()}
        steps: list[dict[str, Any]] = []
        for run_key in ("fill", "cancel"):
            steps.append({"do": "execute", "run_key": run_key, "targets": frame})
            steps += [{"do": "amend", "run_key": run_key, "order": c.symbol, "changes": c.changes}
                      for c in CASES]
        steps.append({"do": "cancel", "run_key": "cancel"})
        spec = {"port": gw.port, "db": str(db), "library": library, "client_id": 31, "steps": steps}
        first = driven(spec)
        rows = {o["symbol"]: o for o in first["steps"][0]["orders"]}
        for c in CASES:
            if c.auction:
                gw.run_auction("close", {c.symbol: c.move})
            else:
                gw.set_price(rows[c.symbol]["local_symbol"] or c.symbol, c.move)
        follow = {"do": "execute", "run_key": "fill", "targets": frame, "timeout": 10}
        second = driven({**spec, "steps": [follow]})
        book = gw.call(lambda: {o.order_ref: (o.order_id, o.status, o.quantity, o.limit_price,
                                              o.type_fields.aux_price) for o in gw.state.orders.values()})
        executions = gw.call(lambda: [(e.order.order_ref, e.exec_id, e.shares, e.price)
                                      for e in gw.state.effective_executions()])
        placements = gw.call(lambda: dict(gw.state.placements))
    assert first["library"] == second["library"] == library
    return {"db": db, "first": first, "second": second, "book": book, "executions": executions,
            "placements": placements}


def recorded_and_executed(ledger, run_id: str, coid: str, executions: list) -> tuple[pd.DataFrame, dict]:
    """The order's fills in the ledger, and the gateway's executions of it: the same, exec id by exec id."""
    fills = ledger.fills(run_id)
    fills = fills[fills["client_order_id"] == coid]
    at_gateway = {x: (shares, price) for ref, x, shares, price in executions if ref == coid}
    assert dict(zip(fills["exec_id"], zip(fills["quantity"], fills["price"], strict=True), strict=True)) \
        == at_gateway
    return fills, at_gateway


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_each_type_and_instrument_is_amended_through_ibs_modify_then_filled_or_cancelled(amended, c, end):
    db = amended["db"]
    amends = [s for s in amended["first"]["steps"] if s["do"] == "amend"]
    outcome = amends[[x.name for x in CASES].index(c.name) + (len(CASES) if end == "cancel" else 0)]
    assert outcome["outcome"] == "accepted", outcome["reason"]
    ledger = kit.ledger(db)
    run_id = ledger.resolve_run(end)
    [row] = [r for _, r in ledger.orders(run_id).iterrows() if r["symbol"] == c.symbol]
    coid = row["client_order_id"]
    check_row(c, row, "FILLED" if end == "fill" else "CANCELLED")
    assert amend_kinds(db, end)[coid] == ["amend_requested", "amend_accepted"]

    order_id, status, quantity, limit, aux = amended["book"][coid]
    assert str(order_id) == str(row["broker_order_id"])  # IB's modify: the same order, the same id
    assert amended["placements"][coid] == 1  # ...and never a second order
    assert status == ("Filled" if end == "fill" else "Cancelled")
    assert quantity == row["quantity"]  # the gateway works what the ledger shows
    assert limit == (None if pd.isna(row["limit_price"]) else row["limit_price"])
    if c.row["order_type"] in ("STP", "STP LMT"):
        assert aux == row["stop_price"]  # the stop travels as IB's auxPrice

    fills, at_gateway = recorded_and_executed(ledger, run_id, coid, amended["executions"])
    if end == "fill":
        assert fills["quantity"].sum() == row["quantity"] and within_limit(c, row, fills["price"])
        check_tca(db, end, c, row, fills)
    else:
        assert at_gateway == {}
