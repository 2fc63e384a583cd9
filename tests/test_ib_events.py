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


# ---- IB as it is (issue 14) ----------------------------------------------------------------------------
from datetime import timedelta  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kit.brokers.base import Notice  # noqa: E402
from kit.brokers.ib_codes import API_GUIDE, CODES, MESSAGE_CODES, Meaning  # noqa: E402
from kit.brokers.ib_events import (  # noqa: E402
    STATUSES,
    LookUp,
    RecheckExecutions,
    UntranslatableMessage,
    connect_reply_zone,
    connection_zone,
    execution_time,
    zone,
)
from kit.model import Fill, Order, OrderIntent, Side  # noqa: E402
from kit.state import OrderBook  # noqa: E402


def fill_of(t: Translator, exec_id: str, shares: float, cum: float | None, price: float = 1.0):
    return t.execution(exec_id=exec_id, order_id=11, perm_id=555, client_id=7, order_ref="k-AAPL-BUY",
                       shares=shares, price=price, time=AT, currency="USD", exchange="", at=AT, cum_qty=cum,
                       symbol="AAPL")


def book_with(quantity: float = 100) -> OrderBook:
    book = OrderBook()
    book.add(Order(OrderIntent("k-AAPL-BUY", "AAPL", Side.BUY, quantity), "run", AT, AT))
    return book


def apply_all(book: OrderBook, translated) -> list:
    """Apply the events to the core; return the requests the shell would serve."""
    requests = []
    for item in translated:
        if isinstance(item, LookUp | RecheckExecutions):
            requests.append(item)
        else:
            book.apply(item)
    return requests


def test_a_second_partial_numbered_01_02_is_a_new_execution_when_cumqty_rises():
    """IB's rule says ".02" revises ".01"; cumQty says whether it did. 50 then 50 more with cumQty 100."""
    t, book = translator(), book_with(100)
    assert apply_all(book, fill_of(t, "0001.5f.01.01", 50, 50)) == []
    assert apply_all(book, fill_of(t, "0001.5f.01.02", 50, 100)) == []
    order = book.orders["k-AAPL-BUY"]
    assert order.filled_quantity == 100 and order.status == "FILLED" and len(order.fills) == 2


def test_a_01_02_that_leaves_cumqty_where_the_01_put_it_is_a_correction():
    t, book = translator(), book_with(100)
    apply_all(book, fill_of(t, "0001.5f.01.01", 50, 50, price=190.02))
    assert apply_all(book, fill_of(t, "0001.5f.01.02", 50, 50, price=190.01)) == []
    order = book.orders["k-AAPL-BUY"]
    assert order.filled_quantity == 50 and order.status == "PARTIAL"
    assert [f.exec_id for f in order.fills.values()] == ["0001.5f.01.02"] and order.avg_fill_price == 190.01


def test_a_repeat_or_replay_of_a_new_partial_lands_where_it_did_the_first_time():
    t, book = translator(), book_with(100)
    for _ in range(2):  # live, then IB's replay after a reconnect: nothing counted twice
        apply_all(book, fill_of(t, "0001.5f.01.01", 50, 50))
        apply_all(book, fill_of(t, "0001.5f.01.02", 50, 100))
    assert book.orders["k-AAPL-BUY"].filled_quantity == 100


@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.data())
def test_partials_and_corrections_always_sum_to_ibs_cumqty(parts, data):
    """Any partial fills, numbered either way IB numbers them, with any of them corrected at once: kit's
    sum is IB's cumQty, and kit never needs to ask again."""
    t, book = translator(), book_with(sum(parts))
    cum = 0
    for n, shares in enumerate(parts, start=1):
        fresh = [i for i in (f"p.s.01.{n:02d}", f"p.s{n}.01.01", f"p.s.{n:02d}.01") if i not in t.exec_keys]
        exec_id = data.draw(st.sampled_from(fresh or [f"p.u{n}.01.01"]))  # IB never reuses an exec id
        cum += shares
        assert apply_all(book, fill_of(t, exec_id, shares, cum)) == []
        if data.draw(st.booleans()):  # IB corrects it: the next revision, same shares, cumQty unchanged
            base, _, rev = exec_id.rpartition(".")
            correction = f"{base}.{int(rev) + 1:02d}"
            if correction not in t.exec_keys:
                assert apply_all(book, fill_of(t, correction, shares, cum, price=0.99)) == []
    assert book.orders["k-AAPL-BUY"].filled_quantity == cum


def test_kit_asks_ib_again_when_its_sum_disagrees_and_flags_what_remains():
    t, book = translator(), book_with(100)
    apply_all(book, fill_of(t, "a.01.01", 50, 50))
    # IB says Filled 100, but kit saw only one execution of 50: ask for the order's executions again
    requests = apply_all(book, t.order_status(11, "Filled", 555, 7, "", AT, filled=100, remaining=0))
    assert requests == [RecheckExecutions("k-AAPL-BUY", "AAPL")]
    assert apply_all(book, t.order_status(11, "Filled", 555, 7, "", AT, filled=100, remaining=0)) == []
    assert t.filled_at_ib("k-AAPL-BUY")  # so the broker will not cancel it
    flagged = t.rechecked("k-AAPL-BUY", AT)  # the replay brought nothing new
    assert kinds(flagged) == [BrokerNotice] and flagged[0].code == Notice.FILLS_DISAGREE
    assert "50" in flagged[0].message and "100" in flagged[0].message and "Filled" in flagged[0].message
    assert t.rechecked("k-AAPL-BUY", AT) == []  # flagged once (once more only if it was working before)


def test_a_recheck_that_brings_the_missing_execution_settles_without_a_flag():
    t, book = translator(), book_with(100)
    requests = apply_all(book, fill_of(t, "a.02.01", 50, 100))  # the first 50 never arrived
    assert requests == [RecheckExecutions("k-AAPL-BUY", "AAPL")]
    apply_all(book, fill_of(t, "a.01.01", 50, 50))  # IB's replay, in its order
    apply_all(book, fill_of(t, "a.02.01", 50, 100))
    assert t.rechecked("k-AAPL-BUY", AT) == []
    assert book.orders["k-AAPL-BUY"].filled_quantity == 100


def test_an_orderstatus_that_lags_behind_the_executions_is_no_disagreement():
    t, book = translator(), book_with(100)
    apply_all(book, fill_of(t, "a.01.01", 50, 50))
    assert apply_all(book, t.order_status(11, "Submitted", 555, 7, "", AT, filled=0, remaining=100)) == []


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_every_ib_status_is_understood(status):
    t = translator()
    events = t.order_status(11, status, 555, 7, "", AT)
    assert isinstance(events[0], StatusUpdate) and events[0].broker_status == status
    at_ib = status not in ("PendingSubmit", "ApiPending", "Cancelled", "ApiCancelled")
    assert (Accepted in kinds(events)) == at_ib
    assert (Cancelled in kinds(events)) == (status in ("Cancelled", "ApiCancelled"))


def test_a_status_ib_does_not_document_is_untranslatable():
    with pytest.raises(UntranslatableMessage, match="Bogus"):
        translator().order_status(11, "Bogus", 555, 7, "", AT)


def test_an_order_reported_only_inactive_is_at_ib_and_ends_rejected_when_ib_will_not_cancel_it():
    t, book = translator(), book_with(10)
    apply_all(book, t.order_status(11, "Inactive", 555, 7, "", AT))
    assert book.orders["k-AAPL-BUY"].status == "SUBMITTED"  # not NEW: IB has it
    text = "OrderId 11 that needs to be cancelled cannot be cancelled, state: Inactive."
    refused = t.error(11, 10148, text, AT)
    apply_all(book, refused)
    order = book.orders["k-AAPL-BUY"]
    assert order.status == "REJECTED" and "Inactive" in order.reason and "10148" in order.reason


def test_inactive_after_an_error_is_rejected_with_the_error():
    t, book = translator(), book_with(10)
    apply_all(book, t.order_status(11, "PreSubmitted", 555, 7, "", AT))
    apply_all(book, t.error(11, 201, "Order rejected - reason: margin", AT))
    apply_all(book, t.order_status(11, "Inactive", 555, 7, "", AT))
    assert book.orders["k-AAPL-BUY"].status == "REJECTED" and "margin" in book.orders["k-AAPL-BUY"].reason


def test_a_cancel_refused_for_a_working_or_filled_order_ends_nothing_and_asks_ib():
    t = translator()
    t.order_status(11, "Submitted", 555, 7, "", AT)
    out = t.error(11, 10148, "OrderId 11 that needs to be cancelled cannot be cancelled, state: Filled.", AT)
    assert Rejected not in kinds(out) and Cancelled not in kinds(out)
    assert LookUp("k-AAPL-BUY") in out and RecheckExecutions("k-AAPL-BUY", "") in out


@pytest.mark.parametrize("code", [103, 110, 161, 200, 201, 203, 321, 10147, 10148, 10311, 10349, 2104])
def test_the_code_table_names_ibs_page_for_each_code(code):
    assert CODES[code].source in (MESSAGE_CODES, API_GUIDE) and CODES[code].text


@pytest.mark.parametrize("code", [c for c, e in CODES.items() if e.meaning is Meaning.REFUSED])
def test_every_refusal_in_the_table_rejects_a_new_order_with_ibs_text(code):
    events = translator().error(11, code, "IB's own words", AT)
    assert kinds(events) == [Rejected] and f"IB error {code}: IB's own words" == events[0].reason


def test_321_and_110_refuse_a_new_order_but_not_a_change_to_a_working_one():
    t = translator()
    assert kinds(t.error(11, 321, "Error validating request.-'bW' : cause - size", AT)) == [Rejected]
    working = translator()
    working.order_status(11, "Submitted", 555, 7, "", AT)
    assert kinds(working.error(11, 110, "The price does not conform", AT)) == [BrokerNotice]
    assert kinds(working.error(11, 100, "Max rate of messages per second exceeded", AT)) == [BrokerNotice]


def test_a_code_ib_does_not_list_is_looked_up_and_rejects_only_an_order_ib_does_not_know():
    t = translator()
    out = t.error(11, 99999, "Something new", AT)
    lookup = next(r for r in out if isinstance(r, LookUp))
    rejected = t.looked_up("k-AAPL-BUY", lookup.refusal, AT)
    assert kinds(rejected) == [Rejected]
    assert "99999" in rejected[0].reason and "Something new" in rejected[0].reason
    known = translator()
    known.order_status(11, "Submitted", 555, 7, "", AT)
    lookup = next(r for r in known.error(11, 99999, "x", AT) if isinstance(r, LookUp))
    assert known.looked_up("k-AAPL-BUY", lookup.refusal, AT) == []


EASTERN = ZoneInfo("US/Eastern")
NOON_UTC = datetime(2026, 12, 1, 14, 30)  # 09:30 in New York (EST)


@pytest.mark.parametrize("text,tws", [
    ("20261201 09:30:00 US/Eastern", None),  # with a zone name
    ("20261201 09:30:00 America/New_York", ZoneInfo("UTC")),  # the name wins over TWS's zone
    ("20261201-14:30:00", EASTERN),  # UTC, IB's dash form: never TWS's zone
    ("20261201 09:30:00", EASTERN),  # no zone: TWS's login zone
    ("20261201 09:30:00 EST", None),  # an abbreviation
    (str(int(NOON_UTC.replace(tzinfo=ZoneInfo("UTC")).timestamp())), None),  # epoch seconds
])
def test_execution_times_in_every_form_ib_sends_are_utc(text, tws):
    assert execution_time(text, tws) == NOON_UTC


def test_a_zoneless_time_without_twss_zone_is_untranslatable_not_host_time():
    with pytest.raises(UntranslatableMessage, match="names no zone"):
        execution_time("20261201 09:30:00", None)
    with pytest.raises(UntranslatableMessage):
        execution_time("yesterday", EASTERN)


def test_twss_zone_comes_from_the_connect_reply():
    assert connection_zone("20261201 09:30:00 US/Eastern") == "US/Eastern"
    assert connection_zone("20261201 09:30:00") == ""
    assert zone("US/Eastern") == EASTERN and zone("Nowhere/Land") is None
    summer = datetime(2026, 7, 1, 9, 30, tzinfo=zone("EST")).utcoffset()
    assert summer == timedelta(hours=-4)  # TWS's "EST" is New York's rules, daylight saving included


def test_fill_type_is_unchanged_for_the_core():
    assert {"key", "revision"} <= set(Fill.__dataclass_fields__)


def test_the_zone_is_read_from_the_connect_reply_bytes_once_they_are_all_there():
    body = b"178\x0020261201 09:30:00 US/Eastern\x00"
    reply = len(body).to_bytes(4, "big") + body
    assert [connect_reply_zone(reply[:n]) for n in (0, 3, 10)] == [None, None, None]
    assert connect_reply_zone(reply) == connect_reply_zone(reply + b"\x00\x00\x00\x05more") == "US/Eastern"


def test_an_inactive_order_among_ibs_completed_orders_ends_rejected_with_its_reason():
    """A new process (the error long gone) finds the order only in IB's completed list, Inactive."""
    t, book = Translator(client_id=7), book_with(10)
    t.track(["k-AAPL-BUY"])
    apply_all(book, t.completed_order(555, "k-AAPL-BUY", "Inactive", "Rejected: size limit", AT))
    order = book.orders["k-AAPL-BUY"]
    assert order.status == "REJECTED" and "size limit" in order.reason
