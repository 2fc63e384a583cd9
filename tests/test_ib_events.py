"""IB's raw messages -> kit events: the rules that make kit trust executions, not status words."""

import math
from datetime import datetime

import pytest

from kit.brokers.ib_events import UNSET_DOUBLE, Translator, split_exec_id
from kit.model import Accepted, BrokerNotice, Cancelled, Commission, Execution, Rejected, StatusUpdate

AT = datetime(2026, 11, 20, 15, 0)


def translator() -> Translator:
    t = Translator(client_id=7)
    t.placed("k-AAPL-BUY", 11)
    return t


def kinds(events):
    return [type(e) for e in events]


def test_acknowledgement_carries_ids_and_is_not_a_fill():
    t = translator()
    events = t.open_order(11, 7, 555, "k-AAPL-BUY", "Submitted", AT)
    assert kinds(events) == [StatusUpdate, Accepted]
    assert events[1].broker_order_id == "11" and events[1].perm_id == "555"
    # A status word "Filled" acknowledges; it never produces an Execution.
    assert Execution not in kinds(t.order_status(11, "Filled", 555, 7, "", AT))


def test_order_status_is_matched_by_order_id_of_this_client_only():
    t = translator()
    assert t.order_status(11, "Submitted", 0, 7, "", AT)
    assert t.order_status(11, "Submitted", 0, 8, "", AT) == []  # same id, another client's order


def test_cancel_only_from_ibs_own_status():
    t = translator()
    events = t.order_status(11, "Cancelled", 555, 7, "", AT)
    assert kinds(events) == [StatusUpdate, Cancelled]
    assert Cancelled not in kinds(t.order_status(11, "Inactive", 555, 7, "", AT))
    assert Cancelled not in kinds(t.order_status(11, "PendingCancel", 555, 7, "", AT))


def test_rejections_name_ibs_code_and_text_and_warnings_end_nothing():
    t = translator()
    rejected = t.error(11, 201, "Order rejected - reason: size", AT)
    assert kinds(rejected) == [Rejected] and "201" in rejected[0].reason and "size" in rejected[0].reason
    assert kinds(t.error(11, 10311, "direct routing", AT)) == [Rejected]
    for code in (2104, 10349, 404, 202, 399, 104, 105):
        events = t.error(11, code, "notice", AT)
        assert kinds(events) == [BrokerNotice] and events[0].client_order_id == "k-AAPL-BUY"
    assert t.error(-1, 2104, "Market data farm connection is OK", AT)[0].client_order_id is None


def test_execution_found_by_order_ref_after_a_reconnect_with_order_id_zero():
    t = Translator(client_id=7)
    t.track(["k-AAPL-BUY"])
    events = t.execution(exec_id="e.01.01", order_id=0, perm_id=555, client_id=7, order_ref="k-AAPL-BUY",
                         shares=40, price=190.5, time=AT, currency="USD", exchange="ISLAND", at=AT)
    assert kinds(events) == [Execution]
    assert events[0].fill.quantity == 40 and events[0].fill.client_order_id == "k-AAPL-BUY"
    # the completed order (no orderId) is matched by orderRef and permId
    assert Accepted in kinds(t.completed_order(555, "k-AAPL-BUY", "Filled", "", AT))


def test_other_runs_orders_and_their_commissions_are_ignored():
    t = translator()
    assert t.execution(exec_id="x.01.01", order_id=99, perm_id=1, client_id=3, order_ref="other-run-X-BUY",
                       shares=1, price=1, time=AT, currency="USD", exchange="", at=AT) == []
    assert t.commission("x.01.01", 1.0, "USD", AT) == []
    assert t.open_order(99, 3, 1, "other-run-X-BUY", "Submitted", AT) == []


def test_commission_may_arrive_first_and_unset_means_unknown_not_zero():
    t = translator()
    early = t.commission("e.01.01", 1.25, "USD", AT)
    assert kinds(early) == [Commission] and early[0].commission == 1.25
    assert math.isnan(t.commission("e.01.02", UNSET_DOUBLE, "USD", AT)[0].commission)


@pytest.mark.parametrize("exec_id,expected", [
    ("0000e0d5.65f1a2b3.01.01", ("0000e0d5.65f1a2b3.01", 1)),
    ("0000e0d5.65f1a2b3.01.02", ("0000e0d5.65f1a2b3.01", 2)),
    ("plain", ("plain", 0)),
    ("ends.with.", ("ends.with.", 0)),
    (".5", (".5", 0)),
])
def test_ib_exec_ids_end_in_their_revision(exec_id, expected):
    assert split_exec_id(exec_id) == expected


def test_an_execution_carries_ibs_revision_rule_as_a_key_and_a_revision():
    """The core sees only Fill.key and Fill.revision: IB's ".01" -> ".02" rule stays here."""
    t = translator()
    first, correction = (t.execution(exec_id=f"0001.5f.01.{n:02d}", order_id=11, perm_id=555, client_id=7,
                                     order_ref="k-AAPL-BUY", shares=10, price=1.0, time=AT, currency="USD",
                                     exchange="", at=AT)[0].fill for n in (1, 2))
    assert (first.key, first.revision) == ("0001.5f.01", 1)
    assert (correction.key, correction.revision) == ("0001.5f.01", 2)


def test_an_execution_replayed_before_its_order_was_tracked_still_gets_its_commission():
    """On reconnect IB lists executions before kit says which orders it follows; the relisting must count."""
    t = Translator(client_id=7)
    replay = {"exec_id": "e.01.01", "order_id": 0, "perm_id": 555, "client_id": 7, "order_ref": "k-AAPL-BUY",
              "shares": 10, "price": 190.0, "time": AT, "currency": "USD", "exchange": "", "at": AT}
    assert t.execution(**replay) == [] and t.commission("e.01.01", 1.0, "USD", AT) == []
    t.track(["k-AAPL-BUY"])
    assert kinds(t.execution(**replay)) == [Execution]
    assert kinds(t.commission("e.01.01", 1.0, "USD", AT)) == [Commission]
