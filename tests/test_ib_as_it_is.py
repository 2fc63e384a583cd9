"""IB as it really is (issue 14), through the simulated gateway and the real client libraries.

Partial fills numbered `.01.02`, refusals by codes beyond kit's first five (321, 110), an order that is
only ever Inactive and that IB will not cancel, execution times in every form TWS writes them, a message
kit cannot read, and the callback signatures kit taps in both supported libraries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kit.brokers.ib import IBBroker
from kit.config import IBSettings
from kit.gateway import Faults, GatewayConfig
from kit.gateway import messages as gateway_messages
from kit.gateway.handlers import Handlers
from kit.gateway.state import Book, ExecFilter, Rejection
from tests import test_ib_broker
from tests.support import IB_BASKET
from tests.test_ib_broker import INSYNC_PYTHON, by_id, drive, gateway_executions

library, gateway = test_ib_broker.library, test_ib_broker.gateway  # the same fixtures: both libraries

AAPL = {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [300]}


def order(**fields: Any) -> dict[str, Any]:
    """One order as kit would send it, past kit's validation (which would refuse e.g. 10.5 shares)."""
    return {"client_order_id": f"ib-test-{fields['symbol']}-BUY", "side": "BUY", **fields}


def notes_with(result: dict[str, Any], word: str) -> list[str]:
    return [note for note in result["notes"] if word in note]


# ---- quantities --------------------------------------------------------------------------------------
@pytest.fixture
def partials_numbered_01_nn(monkeypatch):
    """The gateway numbers an order's later partial fills `prefix.seq.01.02`, `.01.03`: by IB's rule a
    higher last part is a revision, but each is a new execution (its cumQty rises by its shares)."""
    execute = Book._execute

    def numbered(self, order, shares, price, corrects=None):
        first = order.fills[0].exec_id if order.fills else None
        execution = execute(self, order, shares, price, corrects)
        if corrects is None and first is not None:
            execution.exec_id = f"{first.rpartition('.')[0]}.{len(order.fills):02d}"
        return execution

    monkeypatch.setattr(Book, "_execute", numbered)


def test_partial_fills_numbered_01_02_are_new_executions_not_corrections(library, gateway, tmp_path,
                                                                         partials_numbered_01_nn):
    result = drive(library, gateway, tmp_path, IB_BASKET)
    orders = by_id(result)
    sent = gateway_executions(gateway)
    assert any(exec_id.endswith(".01.02") for exec_id in sent)  # the case of the issue happened
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == sent
    assert {o["status"] for o in orders.values()} == {"FILLED"} and result["status"] == "done"
    assert all(o["filled_quantity"] == o["quantity"] for o in orders.values())
    assert not notes_with(result, "fills_disagree")
    assert not any(e["kind"] == "cancel_requested" for e in result["events"])
    again = drive(library, gateway, tmp_path, IB_BASKET, client_id=12)  # IB replays them to a new process
    assert {f["exec_id"]: f["quantity"] for f in again["fills"]} == sent
    assert [o["filled_quantity"] for o in by_id(again).values()] == [o["quantity"] for o in orders.values()]


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(exec_id_parts=True,
                                                                 correct_executions=True))], indirect=True)
def test_numbered_parts_and_their_corrections_leave_ibs_effective_executions(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, IB_BASKET)
    orders = by_id(result)
    sent = gateway_executions(gateway)
    assert any(".02.02" in exec_id for exec_id in sent)  # a correction of the second part
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == sent
    assert {o["status"] for o in orders.values()} == {"FILLED"}
    assert not notes_with(result, "fills_disagree")


@pytest.fixture
def inflated_cumqty(monkeypatch):
    """IB's execDetails say one share more than the executions add up to, live and when asked again."""
    details = gateway_messages.exec_details
    monkeypatch.setattr(gateway_messages, "exec_details",
                        lambda req_id, e, time: details(req_id, dataclasses.replace(e, cum_qty=e.cum_qty + 1),
                                                        time))


def test_a_sum_that_disagrees_with_ibs_cumqty_is_asked_again_then_flagged(gateway, tmp_path, inflated_cumqty):
    result = drive("ib_async", gateway, tmp_path, AAPL)
    flagged = notes_with(result, "fills_disagree")  # while it worked (if the recheck ended then) and done
    assert 1 <= len(flagged) <= 2 and all("cumQty" in f and "ib-test-AAPL-BUY" in f for f in flagged)
    assert "IB reports it Filled" in flagged[-1]
    assert any(e["kind"] == "error" and "fills_disagree" in (e["detail"] or "") for e in result["events"])
    assert by_id(result)["ib-test-AAPL-BUY"]["filled_quantity"] == 300  # counted from executions, as IB's


@pytest.fixture
def first_execution_lost(monkeypatch):
    """The first live execDetails never arrives; its orderStatus does (IB's `filled` is then ahead)."""
    send = Handlers._send_execution
    lost: list[str] = []

    def lossy(self, e, between=None):
        if lost or between is None:
            return send(self, e, between)
        lost.append(e.exec_id)
        for message in between:
            self.gw.send_to_client(e.order.client_id, message)
        return None

    monkeypatch.setattr(Handlers, "_send_execution", lossy)
    return lost


def test_an_execution_missed_live_is_fetched_again_when_ibs_filled_is_ahead(library, gateway, tmp_path,
                                                                            first_execution_lost):
    result = drive(library, gateway, tmp_path, AAPL, timeout=5)
    assert first_execution_lost
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "FILLED" and aapl["filled_quantity"] == 300
    assert first_execution_lost[0] in {f["exec_id"] for f in result["fills"]}
    assert not notes_with(result, "fills_disagree")
    assert not any(e["kind"] == "cancel_requested" for e in result["events"])


def test_an_order_ib_reports_filled_is_never_cancelled_even_when_kit_counts_less(gateway, tmp_path,
                                                                                first_execution_lost,
                                                                                monkeypatch):
    """The lost execution is not in IB's listing either: kit's sum stays short of IB's Filled."""
    matches = ExecFilter.matches
    monkeypatch.setattr(ExecFilter, "matches", lambda self, e: e.exec_id not in first_execution_lost
                        and matches(self, e))
    result = drive("ib_async", gateway, tmp_path, AAPL, timeout=2)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert 0 < aapl["filled_quantity"] < 300  # what the executions kit received add up to, never invented
    flagged = notes_with(result, "fills_disagree")  # (while it worked, if the recheck ended then) and done
    assert 1 <= len(flagged) <= 2 and "Filled" in flagged[-1] and "will not cancel" in flagged[-1]
    assert not any("10148" in (e["detail"] or "") for e in result["events"])  # no cancel reached IB
    assert any("not cancelled" in (e["detail"] or "") for e in result["events"])


# ---- refusals and IB's statuses ----------------------------------------------------------------------
@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(reject_fractional_size=True))],
                         indirect=True)
def test_a_321_refusal_ends_the_order_rejected_with_ibs_text(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, {}, orders=[order(symbol="AAPL", quantity=10.5)], timeout=3)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "REJECTED" and "IB error 321" in aapl["reason"]
    assert "Error validating request" in aapl["reason"] and "size" in aapl["reason"]
    assert not notes_with(result, "unacknowledged")
    assert not any(e["kind"] in ("cancel_requested", "cancel_unconfirmed") for e in result["events"])
    assert result["status"] == "failed"


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(reject_off_tick=True))], indirect=True)
def test_a_price_off_the_tick_is_refused_with_110(library, gateway, tmp_path):
    off_tick = order(symbol="AAPL", quantity=10, order_type="LMT", limit_price=190.123)
    result = drive(library, gateway, tmp_path, {}, orders=[off_tick], timeout=3)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "REJECTED" and "IB error 110" in aapl["reason"]
    assert "minimum price variation" in aapl["reason"]
    assert not any(e["kind"] == "cancel_requested" for e in result["events"])


def test_a_refusal_by_a_code_ibs_tables_do_not_list_is_looked_up_then_rejected(gateway, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(Book, "_refusal", lambda self, req, inst: Rejection(99123, "Something IB added"))
    result = drive("ib_async", gateway, tmp_path, AAPL, timeout=3)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "REJECTED" and "IB error 99123: Something IB added" in aapl["reason"]
    assert not any(e["kind"] == "cancel_requested" for e in result["events"])


@pytest.fixture
def inactive_for_good(monkeypatch):
    """bare_inactive, and IB will not cancel the Inactive order either (10148 '... state: Inactive')."""
    monkeypatch.setattr(Book, "set_inactive", lambda self, order: setattr(order, "status", "Inactive"))


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(bare_inactive={"ib-test-AAPL-BUY"}))],
                         indirect=True)
def test_an_inactive_order_ib_will_not_cancel_ends_rejected_with_ibs_reason(library, gateway, tmp_path,
                                                                           inactive_for_good):
    result = drive(library, gateway, tmp_path, AAPL, timeout=1)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "REJECTED"
    assert "Inactive" in aapl["reason"] and "IB error 10148" in aapl["reason"]
    assert not any(e["kind"] == "cancel_unconfirmed" for e in result["events"])
    assert gateway.call(lambda: gateway.state.orders_by_ref("ib-test-AAPL-BUY")[0].status) == "Inactive"


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(bare_inactive={"ib-test-AAPL-BUY"}))],
                         indirect=True)
def test_a_bare_inactive_order_that_ib_cancels_ends_cancelled(gateway, tmp_path):
    result = drive("ib_async", gateway, tmp_path, AAPL, timeout=1)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "CANCELLED" and aapl["filled_quantity"] == 0
    assert any(e["kind"] == "status" and "Inactive" in (e["detail"] or "") for e in result["events"])


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(tif_preset_notice=True))], indirect=True)
def test_10349_is_a_notice_and_the_order_fills(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, AAPL)
    aapl = by_id(result)["ib-test-AAPL-BUY"]
    assert aapl["status"] == "FILLED" and aapl["filled_quantity"] == 300 and result["status"] == "done"
    assert any(e["kind"] == "error" and "10349" in (e["detail"] or "") for e in result["events"])


# ---- times -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(time_zone="Asia/Tokyo"))], indirect=True)
def test_kit_tells_the_client_library_twss_zone_from_the_connect_reply(gateway):
    async def connected_zone() -> tuple[str, str]:
        broker = IBBroker(IBSettings(port=gateway.port, client_id=21, connect_timeout=5))
        await broker.connect()
        try:
            return broker.ib.TimezoneTWS, str(broker.tws_zone)
        finally:
            await broker.close()

    assert asyncio.run(connected_zone()) == ("Asia/Tokyo", "Asia/Tokyo")


def assert_fill_times_are_utc(result: dict[str, Any], gw: Any) -> None:
    """The ledger's fill times are the executions' UTC times (kit stamps a live fill with its receipt,
    within IB's one-second resolution), whatever zone TWS wrote them in."""
    sent = {e.exec_id: e.time.astimezone(UTC).replace(tzinfo=None)
            for e in gw.call(lambda: list(gw.state.executions))}
    assert result["fills"]
    for fill in result["fills"]:
        recorded = datetime.fromisoformat(fill["time"]).replace(tzinfo=None)
        assert abs(recorded - sent[fill["exec_id"]]) < timedelta(seconds=2), (fill, sent[fill["exec_id"]])


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(time_zone="Asia/Tokyo",
                                                                 zoneless_times=True))], indirect=True)
def test_zoneless_execution_times_are_read_in_twss_zone(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, AAPL)
    assert by_id(result)["ib-test-AAPL-BUY"]["status"] == "FILLED"
    assert_fill_times_are_utc(result, gateway)


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(time_zone="US/Eastern"))], indirect=True)
def test_execution_times_with_a_zone_name_are_utc_in_the_ledger(gateway, tmp_path):
    result = drive("ib_async", gateway, tmp_path, AAPL)
    assert_fill_times_are_utc(result, gateway)


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(time_zone="Asia/Tokyo"))], indirect=True)
def test_execution_times_in_ibs_utc_dash_form_are_not_shifted_by_twss_zone(gateway, tmp_path, monkeypatch):
    monkeypatch.setattr(Handlers, "_time", lambda self, t: t.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S"))
    result = drive("ib_async", gateway, tmp_path, AAPL)
    assert_fill_times_are_utc(result, gateway)


# ---- what kit cannot read, and what it taps ------------------------------------------------------------
def test_a_message_kit_cannot_translate_fails_the_run_with_the_message(gateway, tmp_path, monkeypatch):
    say = gateway_messages.order_status

    def bogus(order, status=None):
        word = status or order.status
        return say(order, status="Bogus" if word == "Submitted" else status)

    monkeypatch.setattr(gateway_messages, "order_status", bogus)
    result = drive("ib_async", gateway, tmp_path, AAPL, timeout=20)  # the message ends the run, not the time
    assert "UntranslatableMessage" in result["error"] and "Bogus" in result["error"]


# The IB callbacks kit taps, as both supported libraries declare them (names and order of parameters).
TAPPED = {
    "openOrder": ["orderId", "contract", "order", "orderState"],
    "completedOrder": ["contract", "order", "orderState"],
    "orderStatus": ["orderId", "status", "filled", "remaining", "avgFillPrice", "permId", "parentId",
                    "lastFillPrice", "clientId", "whyHeld", "mktCapPrice"],
    "execDetails": ["reqId", "contract", "execution"],
    "commissionReport": ["commissionReport"],
    "error": ["reqId", "errorCode", "errorString", "advancedOrderRejectJson"],
}
KIT_TAPS = {"openOrder": IBBroker._open_order, "completedOrder": IBBroker._completed_order,
            "orderStatus": IBBroker._order_status, "execDetails": IBBroker._exec_details,
            "commissionReport": IBBroker._commission_report, "error": IBBroker._error}
SIGNATURES = """
import importlib, inspect, json, sys
wrapper = importlib.import_module(sys.argv[1] + ".wrapper").Wrapper
names = {m: [p for p in inspect.signature(getattr(wrapper, m)).parameters if p != "self"]
         for m in sys.argv[2:]}
print(json.dumps({"version": importlib.import_module(sys.argv[1]).__version__, "names": names}))
"""


@pytest.mark.parametrize("lib,python,version", [("ib_async", Path(sys.executable), "2.1.0"),
                                                ("ib_insync", INSYNC_PYTHON, "0.9.86")])
def test_the_callbacks_kit_taps_have_the_signatures_kit_reads(lib, python, version):
    if not python.exists():
        pytest.skip(".venv-insync is missing: run `make insync` (make test builds it)")
    done = subprocess.run([str(python), "-c", SIGNATURES, lib, *TAPPED], capture_output=True, text=True,
                          timeout=60, check=True)
    declared = json.loads(done.stdout)
    assert declared["version"] == version and declared["names"] == TAPPED
    for method, names in TAPPED.items():  # every argument the library passes reaches kit's translation
        inspect.signature(KIT_TAPS[method]).bind(None, *names)
