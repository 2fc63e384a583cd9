"""Amending trailing stops, a tif, MOC/OPG quantities, a MIDPRICE cap, a REL's offset and cap and IB algos
through the simulated gateway with ib_async and ib_insync (the cases of tests/test_amend_more_types.py):
IB's modify under the same order id, then a fill by a move only the amended terms reach, or a cancel.

kit runs in the driver (tests/amend_driver.py; in .venv-insync for ib_insync), three times: it places both
runs; the gateway's market moves (a trailing stop's best price is set now); kit amends every order and
cancels the "cancel" run; the market moves again (and the auctions run) while kit is away; a re-run of
"fill" follows its orders from IB's listing and executions. Then: what IB refuses of an amendment after
the close auction's cut-off (201, the order works on as it was), and a tif amended to IOC on an order
that cannot fill (IB cancels it)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import kit
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.gateway.test_gateway_amend_types import LIBRARIES, driven, recorded_and_executed
from tests.test_amend_more_types import (
    ALGO_CASES,
    ALGO_IDS,
    CASES,
    GROUPS,
    IDS,
    Case,
    check_fills,
    checked_row,
    targets,
)
from tests.test_amend_types import amend_kinds


def frame_of(cases: tuple[Case, ...]) -> dict[str, list[Any]]:
    return {name: [None if not isinstance(v, str) and pd.isna(v) else v for v in values]
            for name, values in targets(cases).to_dict(orient="list").items()}


def move(gw, c: Case, price: float) -> None:
    if c.auction:
        gw.run_auction(c.auction, {c.symbol: price})
    else:
        gw.set_price(c.symbol, price)


def book_of(gw) -> dict[str, dict[str, Any]]:
    """What the gateway holds, by orderRef: IB's fields of each order and its trigger."""
    def read() -> dict[str, dict[str, Any]]:
        return {o.order_ref: {"order_id": o.order_id, "status": o.status, "quantity": o.quantity,
                              "limit": o.limit_price, "tif": o.tif, "aux": o.type_fields.aux_price,
                              "percent": o.type_fields.trailing_percent,
                              "offset": o.type_fields.lmt_price_offset,
                              "stop": o.trigger.stop if o.trigger else None,
                              "best": o.trigger.best if o.trigger else None}
                for o in gw.state.orders.values()}
    return gw.call(read)


@pytest.fixture(scope="module", params=LIBRARIES)
def amended(request, tmp_path_factory):
    """Each group's runs through its own gateway (the groups trade the same symbols), per library."""
    library = request.param
    results: dict[str, Any] = {"db": {}, "amends": {}, "book": {}, "executions": [], "placements": {}}
    for group, cases in GROUPS.items():
        # A ledger per gateway: two simulated gateways hand out the same execution ids.
        db = results["db"][group] = tmp_path_factory.mktemp(f"amend-more-{library}") / "kit.duckdb"
        with run_gateway_in_thread(GatewayConfig(fill_latency=0.01)) as gw:
            frame = frame_of(cases)
            spec = {"port": gw.port, "db": str(db), "library": library, "client_id": 32}
            placed = driven({**spec, "steps": [{"do": "execute", "run_key": group + end, "targets": frame}
                                               for end in ("fill", "cancel")]})
            assert placed["library"] == library
            for c in cases:
                for price in c.before:
                    move(gw, c, price)
            steps: list[dict[str, Any]] = [
                {"do": "amend", "run_key": group + end, "order": c.symbol, "changes": c.changes}
                for end in ("fill", "cancel") for c in cases]
            steps.append({"do": "cancel", "run_key": group + "cancel"})
            answers = driven({**spec, "steps": steps})["steps"]
            for step, answer in zip(steps, answers, strict=True):
                if step["do"] == "amend":
                    results["amends"][step["run_key"], step["order"]] = answer
            for c in cases:
                move(gw, c, c.move)
            driven({**spec, "steps": [{"do": "execute", "run_key": group + "fill", "targets": frame,
                                       "timeout": 10}]})
            results["book"].update(book_of(gw))
            results["executions"] += gw.call(lambda: [(e.order.order_ref, e.exec_id, e.shares, e.price)
                                                      for e in gw.state.effective_executions()])
            results["placements"].update(gw.call(lambda: dict(gw.state.placements)))
            results["slices"] = gw.gateway.config.algo_slices
    return results


def check_case(amended, group: str, c: Case, end: str) -> dict[str, Any]:
    db, run_key = amended["db"][group], group + end
    answer = amended["amends"][run_key, c.symbol]
    assert answer["outcome"] == "accepted", answer["reason"]
    ledger, run_id, row = checked_row(db, run_key, c, end)
    coid = row["client_order_id"]

    held = amended["book"][coid]
    assert str(held["order_id"]) == str(row["broker_order_id"])  # IB's modify: the same order, the same id
    assert amended["placements"][coid] == 1  # ...and never a second order
    assert held["status"] == ("Filled" if end == "fill" else "Cancelled")
    assert (held["quantity"], held["tif"]) == (row["quantity"], row["tif"])  # the gateway works the ledger's
    assert held["limit"] == (None if pd.isna(row["limit_price"]) else row["limit_price"])
    ib_field = {"trail_amount": "aux", "trail_percent": "percent",
                "offset": "aux" if c.row["order_type"] == "REL" else "offset"}
    for keyword, value in c.changes.items():
        if keyword in ib_field:
            assert held[ib_field[keyword]] == value  # IB's auxPrice, trailingPercent, lmtPriceOffset

    fills, at_gateway = recorded_and_executed(ledger, run_id, coid, amended["executions"])
    if end == "fill":
        check_fills(db, run_key, c, row, fills)
    else:
        assert at_gateway == {}
    return held


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_each_type_is_amended_through_ibs_modify_then_filled_or_cancelled(amended, c, end):
    held = check_case(amended, "", c, end)
    # The trail went on from the best price seen before the amendment (AAPL's 200, MSFT's 400), not from
    # where the market was when it was amended.
    expected = {"TRAIL amount": (200.0, 197.0), "TRAIL percent": (400.0, 404.0),
                "TRAIL stop": (200.0, 198.0)}
    if c.name in expected and end == "fill":
        assert (held["best"], held["stop"]) == pytest.approx(expected[c.name])


@pytest.mark.parametrize("end", ["fill", "cancel"])
@pytest.mark.parametrize("c", ALGO_CASES, ids=ALGO_IDS)
def test_each_algo_order_is_amended_through_ibs_modify_then_filled_or_cancelled(amended, c, end):
    check_case(amended, "algo-", c, end)
    if end == "fill" and c.row.get("algo") in ("Vwap", "Twap"):
        slices = [r for r, *_ in amended["executions"] if r == f"algo-fill-{c.symbol}-BUY"]
        assert len(slices) == amended["slices"]  # the amended quantity, re-sliced by the algo


# ---- what IB refuses or ends -----------------------------------------------------------------------------
MOC = {"symbol": "AMZN", "side": "BUY", "quantity": 10, "order_type": "MOC", "decision_price": 185.0}
RESTING = {"symbol": "GOOG", "side": "BUY", "quantity": 10, "order_type": "LMT", "limit_price": 165.0,
           "decision_price": 165.0}


@pytest.mark.parametrize("library", LIBRARIES)
def test_ib_refuses_an_auction_amendment_after_the_cut_off_and_ends_an_ioc_amendment_it_cannot_fill(
        library, tmp_path):
    """NYSE and Nasdaq take no change to a MOC order after the cut-off (IB's MOC page): IB answers the
    modify with 201 and the order works on as planned, filling its 10 in the auction. A resting limit
    order amended to IOC is cancelled by IB, as an IOC order that cannot fill on arrival."""
    db = tmp_path / "kit.duckdb"
    frame = {name: [MOC.get(name), RESTING.get(name)] for name in {*MOC, *RESTING}}
    with run_gateway_in_thread(GatewayConfig(fill_latency=0.01)) as gw:
        spec = {"port": gw.port, "db": str(db), "library": library, "client_id": 33}
        driven({**spec, "steps": [{"do": "execute", "run_key": "late", "targets": frame}]})
        gw.faults.past_close_cutoff = True
        steps = [{"do": "amend", "run_key": "late", "order": "AMZN", "changes": {"quantity": 25}},
                 {"do": "amend", "run_key": "late", "order": "GOOG", "changes": {"tif": "IOC"}}]
        late, ioc = driven({**spec, "steps": steps})["steps"]
        gw.run_auction("close", {"AMZN": 186.0})
        driven({**spec, "steps": [{"do": "execute", "run_key": "late", "targets": frame, "timeout": 10}]})
        book = book_of(gw)
    assert late["outcome"] == "refused" and "201" in late["reason"] and "cut-off" in late["reason"], late
    assert ioc["outcome"] == "accepted", ioc["reason"]
    ledger = kit.ledger(db)
    rows = ledger.orders(ledger.resolve_run("late")).set_index("symbol")
    moc, lmt = rows.loc["AMZN"], rows.loc["GOOG"]
    assert (moc["status"], moc["quantity"], moc["filled_quantity"], moc["amendments"]) == \
        ("FILLED", 10, 10, 0)
    assert book["late-AMZN-BUY"]["quantity"] == 10
    assert amend_kinds(db, "late")["late-AMZN-BUY"] == ["amend_requested", "amend_refused"]
    assert (lmt["status"], lmt["tif"], lmt["original_tif"], lmt["filled_quantity"]) == \
        ("CANCELLED", "IOC", "DAY", 0)
    assert book["late-GOOG-BUY"]["status"] == "Cancelled"
