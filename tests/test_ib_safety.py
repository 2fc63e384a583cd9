"""kit's safety switches on the IB path, against the simulated gateway: the dry run asks IB's what-if and
places nothing; the kill switch (`kit cancel`) cancels only with IB's confirmation, and says so when IB
never gives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import kit
from kit.brokers.ib import IBBroker
from kit.cli import main
from kit.config import IBSettings
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.support import FAR_LIMIT, IB_BASKET

CLIENT_ID = 23


@pytest.fixture
def gateway():
    with run_gateway_in_thread(GatewayConfig(seed=9)) as gw:
        yield gw


def broker(gw: Any) -> IBBroker:
    return IBBroker(IBSettings(port=gw.port, client_id=CLIENT_ID, connect_timeout=5), library="ib_async",
                    ack_timeout=5, sync_timeout=5)  # fmt: skip


def at_gateway(gw: Any) -> tuple[dict[str, int], dict[str, str]]:
    """Placements per orderRef, and each order's status, as the gateway has them."""
    book = gw.state
    return gw.call(lambda: (dict(book.placements), {o.order_ref: o.status for o in book.orders.values()}))


def events(db: Path, run_id: str, kind: str) -> pd.DataFrame:
    frame = kit.ledger(db).events(run_id)
    return frame[frame["kind"] == kind]


def test_dry_run_asks_ib_what_if_places_nothing_and_the_real_run_sends_each_order_once(gateway, db):
    planned = kit.execute(pd.DataFrame(IB_BASKET), broker=broker(gateway), run_key="safe", db=db,
                          dry_run=True)
    assert planned.status == "planned"
    assert at_gateway(gateway) == ({}, {})  # nothing placed, nothing booked
    assert gateway.call(lambda: list(gateway.state.executions)) == []
    orders = kit.ledger(db).orders(planned.run_id)
    assert set(orders["status"]) == {"NEW"} and orders["submitted_at"].isna().all()
    what_ifs = events(db, planned.run_id, "what_if")
    assert sorted(what_ifs["client_order_id"]) == sorted(orders["client_order_id"])
    for coid, detail in zip(what_ifs["client_order_id"], what_ifs["detail"], strict=True):
        estimate = json.loads(detail)
        assert isinstance(estimate["initMarginChange"], float), estimate
        assert isinstance(estimate["commission"], float) and estimate["commission"] > 0, estimate
        assert estimate["commissionCurrency"] == ("EUR" if "TTE" in coid else "USD")
        if coid == "safe-AAPL-BUY":  # 25% of 300 AAPL at the gateway's 190.00
            assert estimate["initMarginChange"] == 0.25 * 300 * 190.0
            assert estimate["equityWithLoanChange"] == -estimate["commission"]

    done = kit.execute(pd.DataFrame(IB_BASKET), broker=broker(gateway), run_key="safe", db=db, timeout=10)
    assert done.status == "done"
    placements, statuses = at_gateway(gateway)
    assert placements == {coid: 1 for coid in orders["client_order_id"]}
    assert set(statuses.values()) == {"Filled"}


def _leave_working(gateway: Any, db: Path, run_key: str) -> str:
    """A limit order far from the market, left working at IB when the run times out; its client_order_id."""
    run = kit.execute(pd.DataFrame(FAR_LIMIT), broker=broker(gateway), run_key=run_key, db=db, timeout=0.5,
                      on_timeout="leave")  # fmt: skip
    [coid] = run.orders["client_order_id"]
    assert run.orders["status"].tolist() == ["SUBMITTED"]
    assert at_gateway(gateway)[1] == {coid: "Submitted"}
    return coid


def _kill(gateway: Any, db: Path, run_key: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """`kit cancel --run` as a user types it, configured like the run (IB lets only the placing clientId
    cancel an order)."""
    monkeypatch.setenv("KIT_IB_PORT", str(gateway.port))
    monkeypatch.setenv("KIT_IB_CLIENT_ID", str(CLIENT_ID))
    monkeypatch.setenv("KIT_IB_CONNECT_TIMEOUT", "5")
    return main(["--db", str(db), "cancel", "--run", run_key, "--timeout", "1"])


def test_kill_switch_cancels_through_ib_with_its_confirmation(gateway, db, monkeypatch, capsys):
    coid = _leave_working(gateway, db, "kill")
    assert _kill(gateway, db, "kill", monkeypatch) == 0
    assert "still working" not in capsys.readouterr().err
    run_id = kit.ledger(db).resolve_run("kill")
    assert kit.ledger(db).orders(run_id)["status"].tolist() == ["CANCELLED"]
    [requested] = events(db, run_id, "cancel_requested")["seq"]
    confirmed = events(db, run_id, "cancelled")
    applied = [json.loads(d) for d in confirmed["detail"] if json.loads(d)["effect"] == "applied"]
    assert applied == [{"reason": "IB status Cancelled", "effect": "applied"}]  # the gateway's word
    assert (confirmed["seq"] > requested).all()
    assert events(db, run_id, "cancel_unconfirmed").empty
    assert at_gateway(gateway) == ({coid: 1}, {coid: "Cancelled"})


def test_kill_switch_without_ibs_confirmation_leaves_the_order_working_and_fails(gateway, db, monkeypatch,
                                                                                 capsys):
    coid = _leave_working(gateway, db, "deaf")
    handlers = gateway.gateway._handlers
    gateway.call(setattr, handlers, "cancelOrder", lambda conn, fields: None)  # IB never answers the cancel
    assert _kill(gateway, db, "deaf", monkeypatch) == 1
    assert "1 order(s) still working" in capsys.readouterr().err
    run_id = kit.ledger(db).resolve_run("deaf")
    assert kit.ledger(db).orders(run_id)["status"].tolist() == ["SUBMITTED"]  # not marked cancelled
    assert events(db, run_id, "cancel_requested")["client_order_id"].tolist() == [coid]
    assert events(db, run_id, "cancel_unconfirmed")["client_order_id"].tolist() == [coid]
    assert events(db, run_id, "cancelled").empty
    assert at_gateway(gateway)[1] == {coid: "Submitted"}  # and indeed it still works at IB
