"""The order types through the TWS protocol: the simulated gateway with the real ib_async client, kit's IB
broker end to end with ib_async and ib_insync, and IB's own client (ibapi) decoding every new field.

What the gateway does with each type is docs/orders.md's "simulated gateway" section: auction orders held
until ``run_auction`` (or ``auction_after``), refused after the cut-off; stops PreSubmitted until the price
reaches them; MIDPRICE at the midpoint, REL at its peg; Twap and Vwap in slices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from gateway_support import connect, errors_of, filled_with_commissions, stock, until, with_client
from ib_async import LimitOrder, MarketOrder, Order, TagValue

import kit
from kit.brokers.ib import IBBroker
from kit.config import IBSettings
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.ib_driver import execute as execute_on_ib
from tests.support import require_insync

ROOT = Path(__file__).resolve().parents[2]


def order(action: str, quantity: float, order_type: str, ref: str, **fields) -> Order:
    return Order(action=action, totalQuantity=quantity, orderType=order_type, orderRef=ref, **fields)


# ---- auctions --------------------------------------------------------------------------------------------


@with_client()
async def test_auction_orders_wait_for_their_auction_and_fill_whole_at_its_price(gw, ib):
    moc = ib.placeOrder(stock("AAPL"), order("BUY", 100, "MOC", "moc"))
    loc = ib.placeOrder(stock("MSFT"), order("BUY", 10, "LOC", "loc", lmtPrice=400.0))
    opg = ib.placeOrder(stock("IBM"), MarketOrder("SELL", 20, tif="OPG", orderRef="opg"))
    await until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in (moc, loc, opg)))
    gw.set_price("AAPL", 150.0)  # a price move is not the auction
    assert not moc.fills

    gw.run_auction("close", {"AAPL": 191.25})
    await until(ib, lambda: filled_with_commissions(moc)() and loc.isDone())
    assert [(f.execution.shares, f.execution.price) for f in moc.fills] == [(100, 191.25)]
    assert loc.orderStatus.status == "Cancelled" and not loc.fills  # 420 does not reach its 400 limit
    assert opg.orderStatus.status == "Submitted"  # the close is not its auction

    gw.run_auction("open", {"IBM": 184.5})
    await until(ib, filled_with_commissions(opg))
    assert [(f.execution.shares, f.execution.price) for f in opg.fills] == [(20, 184.5)]


@with_client()
async def test_ib_refuses_moc_after_the_cut_off_and_with_a_tif_other_than_day(gw, ib):
    errors = errors_of(ib)
    gtc = ib.placeOrder(stock("AAPL"), order("BUY", 10, "MOC", "moc-gtc", tif="GTC"))
    await until(ib, gtc.isDone)
    gw.faults.past_close_cutoff = True
    late = ib.placeOrder(stock("AAPL"), order("BUY", 10, "MOC", "moc-late"))
    await until(ib, late.isDone)
    gw.faults.past_close_cutoff = False
    gw.run_auction("close")
    after = ib.placeOrder(stock("AAPL"), order("BUY", 10, "LOC", "loc-after", lmtPrice=191.0))
    await until(ib, after.isDone)
    gw.faults.past_open_cutoff = True
    opg = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 191.0, tif="OPG", orderRef="opg-late"))
    await until(ib, opg.isDone)
    codes = {req_id: code for req_id, code in errors if req_id > 0}
    assert codes == {
        gtc.order.orderId: 113,
        late.order.orderId: 201,
        after.order.orderId: 201,
        opg.order.orderId: 201,
    }
    assert "cut-off time for the close auction has passed" in late.log[-1].message
    assert all(t.orderStatus.status == "Cancelled" and not t.fills for t in (gtc, late, after, opg))


@with_client(auction_after=0.05)
async def test_a_gateway_knob_runs_the_auction_by_itself(gw, ib):
    moc = ib.placeOrder(stock("AAPL"), order("SELL", 30, "MOC", "moc-auto"))
    await until(ib, filled_with_commissions(moc))
    assert sum(f.execution.shares for f in moc.fills) == 30 and gw.state.auctions_done == {"close"}


# ---- stops --------------------------------------------------------------------------------------------


@with_client()
async def test_stops_wait_presubmitted_until_the_price_reaches_them_then_work_as_market_or_limit(gw, ib):
    stop = ib.placeOrder(stock("AAPL"), order("SELL", 50, "STP", "stp", auxPrice=185.0))
    stop_limit = ib.placeOrder(
        stock("MSFT"), order("BUY", 10, "STP LMT", "stp-lmt", auxPrice=425.0, lmtPrice=426.0)
    )
    await until(ib, lambda: stop.orderStatus.status == stop_limit.orderStatus.status == "PreSubmitted")
    gw.set_price("AAPL", 186.0)
    gw.set_price("MSFT", 428.0)  # triggered, but the price is past its limit: it works as LMT 426
    await until(ib, lambda: stop_limit.orderStatus.status == "Submitted")
    assert stop.orderStatus.status == "PreSubmitted" and not stop_limit.fills
    gw.set_price("AAPL", 184.9)
    await until(ib, filled_with_commissions(stop))
    assert sum(f.execution.shares for f in stop.fills) == 50 and all(
        f.execution.price < 185 for f in stop.fills
    )
    gw.set_price("MSFT", 425.5)
    await until(ib, filled_with_commissions(stop_limit))
    assert all(f.execution.price <= 426.0 for f in stop_limit.fills)


@with_client()
async def test_a_trailing_stop_follows_the_price_and_triggers_on_the_way_back(gw, ib):
    trail = ib.placeOrder(stock("AAPL"), order("SELL", 20, "TRAIL", "trail", trailingPercent=1.0))
    trail_limit = ib.placeOrder(
        stock("MSFT"), order("SELL", 5, "TRAIL LIMIT", "trail-lmt", auxPrice=2.0, lmtPriceOffset=0.5)
    )
    await until(ib, lambda: trail.orderStatus.status == trail_limit.orderStatus.status == "PreSubmitted")
    book = {o.order_ref: o for o in gw.state.orders.values()}
    assert book["trail"].trigger.stop == pytest.approx(188.1)  # 1% under 190
    assert book["trail-lmt"].type_fields.lmt_price_offset == 0.5 and book["trail-lmt"].trigger.stop == 418.0
    gw.set_price("AAPL", 200.0)
    assert book["trail"].trigger.stop == pytest.approx(198.0) and trail.orderStatus.status == "PreSubmitted"
    gw.set_price("AAPL", 197.9)
    gw.set_price("MSFT", 417.9)
    await until(ib, lambda: filled_with_commissions(trail)() and filled_with_commissions(trail_limit)())
    assert all(f.execution.price >= 417.5 for f in trail_limit.fills)  # the stop 418 less its 0.5 offset


# ---- pegs and algos --------------------------------------------------------------------------------------


@with_client()
async def test_midprice_fills_at_the_midpoint_and_rel_at_its_peg_where_ib_offers_them(gw, ib):
    errors = errors_of(ib)
    mid = ib.placeOrder(stock("AAPL"), order("BUY", 10, "MIDPRICE", "mid"))
    rel = ib.placeOrder(stock("MSFT"), order("BUY", 10, "REL", "rel", auxPrice=0.01, lmtPrice=421.0))
    await until(ib, lambda: filled_with_commissions(mid)() and filled_with_commissions(rel)())
    bid, ask = gw.market.quote(gw.state.orders_by_ref("rel")[0].instrument)
    assert {f.execution.price for f in mid.fills} == {190.0}
    assert {f.execution.price for f in rel.fills} == {round(min(bid + 0.01, ask), 2)}
    euro = ib.placeOrder(stock("TTE", currency="EUR"), order("BUY", 10, "MIDPRICE", "mid-eur"))
    await until(ib, euro.isDone)
    assert (euro.order.orderId, 201) in errors and "US stocks routed SMART" in euro.log[-1].message


@with_client()
async def test_vwap_and_twap_fill_in_slices_and_ib_lists_their_parameters(gw, ib):
    vwap = ib.placeOrder(
        stock("AAPL"),
        order(
            "BUY",
            100,
            "LMT",
            "vwap",
            lmtPrice=195.0,
            algoStrategy="Vwap",
            algoParams=[TagValue("maxPctVol", "0.2"), TagValue("noTakeLiq", "1")],
        ),
    )
    twap = ib.placeOrder(
        stock("MSFT"),
        order(
            "SELL",
            40,
            "LMT",
            "twap",
            lmtPrice=400.0,
            algoStrategy="Twap",
            algoParams=[TagValue("strategyType", "Marketable")],
        ),
    )
    await until(ib, lambda: filled_with_commissions(vwap)() and filled_with_commissions(twap)())
    assert (len(vwap.fills), len(twap.fills)) == (4, 4)
    completed = {t.order.orderRef: t.order for t in await ib.reqCompletedOrdersAsync(False)}
    assert completed["vwap"].algoStrategy == "Vwap"
    assert [(p.tag, p.value) for p in completed["vwap"].algoParams] == [
        ("maxPctVol", "0.2"),
        ("noTakeLiq", "1"),
    ]
    errors = errors_of(ib)
    bad = ib.placeOrder(
        stock("AAPL"),
        order(
            "BUY",
            10,
            "MKT",
            "bad-algo",
            algoStrategy="Adaptive",
            algoParams=[TagValue("adaptivePriority", "Hurry")],
        ),
    )
    await until(ib, bad.isDone)
    assert (bad.order.orderId, 201) in errors
    market_twap = ib.placeOrder(stock("AAPL"), order("BUY", 10, "MKT", "twap-mkt", algoStrategy="Twap"))
    await until(ib, market_twap.isDone)
    assert (
        market_twap.order.orderId,
        201,
    ) in errors and "does not support order type MKT" in market_twap.log[-1].message


@with_client()
async def test_gtd_outside_rth_and_cancel_of_a_held_order_are_listed_as_ib_lists_them(gw, ib):
    gtd = ib.placeOrder(
        stock("AAPL"),
        order(
            "BUY",
            10,
            "LMT",
            "gtd",
            lmtPrice=100.0,
            tif="GTD",
            goodTillDate="20990102 15:00:00 US/Eastern",
            outsideRth=True,
        ),
    )
    moc = ib.placeOrder(stock("AAPL"), order("BUY", 10, "MOC", "moc-cancel"))
    await until(ib, lambda: gtd.orderStatus.status == moc.orderStatus.status == "Submitted")
    other = await connect(gw, client_id=2)
    try:
        listed = {t.order.orderRef: t.order for t in await other.reqAllOpenOrdersAsync()}
    finally:
        other.disconnect()
    assert (listed["gtd"].tif, listed["gtd"].goodTillDate, listed["gtd"].outsideRth) == (
        "GTD",
        "20990102 15:00:00 US/Eastern",
        True,
    )
    assert listed["moc-cancel"].orderType == "MOC"
    ib.cancelOrder(moc.order)
    await until(ib, moc.isDone)
    assert moc.orderStatus.status == "Cancelled" and not moc.fills
    gw.run_auction("close")  # a cancelled MOC stays cancelled
    assert gw.state.orders_by_ref("moc-cancel")[0].status == "Cancelled"


# ---- kit's IB broker end to end, with ib_async and with ib_insync ----------------------------------------

TARGETS = {
    "symbol": ["AAPL", "MSFT", "IBM", "GOOG", "AMZN", "NFLX", "JPM", "META", "XOM", "SAP", "TTE"],
    "side": ["BUY", "SELL", "BUY", "BUY", "BUY", "SELL", "BUY", "BUY", "SELL", "BUY", "BUY"],
    "quantity": [100, 10, 40, 10, 10, 5, 5, 10, 10, 10, 10],
    "order_type": [
        "MOC",
        "STP",
        "LMT",
        "LOC",
        "MIDPRICE",
        "TRAIL",
        "REL",
        "STP LMT",
        "TRAIL LIMIT",
        "MKT",
        "MKT",
    ],
    "limit_price": [None, None, 200.0, 100.0, 200.0, None, None, 600.0, None, None, None],
    "stop_price": [None, 500.0, None, None, None, None, None, 400.0, None, None, None],
    "trail_amount": [None, None, None, None, None, None, None, None, 1.0, None, None],
    "trail_percent": [None, None, None, None, None, 1.0, None, None, None, None, None],
    "offset": [None, None, None, None, None, None, 0.01, None, 0.5, None, None],
    "algo": [None, None, "Vwap", None, None, None, None, None, None, None, "Adaptive"],
    "algo_params": [None, None, {"maxPctVol": 0.2}, None, None, None, None, None, None, None, None],
    "tif": ["DAY", "DAY", "DAY", "DAY", "GTD", "GTC", "DAY", "DAY", "DAY", "OPG", "DAY"],
    "good_till": [None, None, None, None, "2099-01-02 15:00", None, None, None, None, None, None],
    "outside_rth": [False, False, False, False, True, False, False, False, False, False, False],
    "currency": ["USD"] * 9 + ["EUR", "EUR"],
}
#: MOC, STP, Vwap, MIDPRICE, REL, STP LMT, OPG and Adaptive fill; the LOC's limit is not reached in the close
#: auction; the trailing stops never trigger and are cancelled when the run times out.
EXPECTED_STATUS = {
    "AAPL": "FILLED", "MSFT": "FILLED", "IBM": "FILLED", "GOOG": "CANCELLED", "AMZN": "FILLED",
    "NFLX": "CANCELLED", "JPM": "FILLED", "META": "FILLED", "XOM": "CANCELLED", "SAP": "FILLED",
    "TTE": "FILLED",
}  # fmt: skip


def spec(port: int, db: Path, library: str) -> dict:
    return {
        "port": port,
        "db": str(db),
        "run_key": f"types-{library}",
        "library": library,
        "targets": TARGETS,
        "timeout": 3.0,
    }


def check_run(result: dict, gw) -> None:
    """What kit recorded matches what the gateway has, order by order and execution by execution."""
    assert "error" not in result, result["error"]
    orders = {o["symbol"]: o for o in result["orders"]}
    assert {s: o["status"] for s, o in orders.items()} == EXPECTED_STATUS
    assert (orders["MSFT"]["order_type"], orders["MSFT"]["stop_price"]) == ("STP", 500.0)
    assert (orders["AMZN"]["tif"], orders["AMZN"]["outside_rth"]) == ("GTD", True)
    assert orders["AMZN"]["good_till"].startswith("2099-01-02T20:00:00")
    assert json.loads(orders["IBM"]["algo_params"]) == {"maxPctVol": "0.2"}
    book = gw.call(lambda: {o.order_ref: o for o in gw.state.orders.values()})
    at_ib = {o["symbol"]: book[o["client_order_id"]] for o in result["orders"]}
    assert at_ib["AMZN"].type_fields.good_till_date == "20990102 15:00:00 US/Eastern"
    assert at_ib["AMZN"].type_fields.outside_rth and at_ib["MSFT"].type_fields.aux_price == 500.0
    assert at_ib["IBM"].type_fields.algo_params == (("maxPctVol", "0.2"),) and len(at_ib["IBM"].fills) == 4
    assert at_ib["NFLX"].type_fields.trailing_percent == 1.0 and at_ib["JPM"].type_fields.aux_price == 0.01
    assert (at_ib["META"].type_fields.aux_price, at_ib["META"].limit_price) == (400.0, 600.0)
    assert (at_ib["XOM"].type_fields.aux_price, at_ib["XOM"].type_fields.lmt_price_offset) == (1.0, 0.5)
    assert (at_ib["SAP"].tif, at_ib["TTE"].type_fields.algo_strategy) == ("OPG", "Adaptive")
    assert at_ib["TTE"].type_fields.algo_params == (("adaptivePriority", "Normal"),)
    executions = gw.call(lambda: {e.exec_id: (e.shares, e.price) for e in gw.state.effective_executions()})
    assert {f["exec_id"]: (f["quantity"], f["price"]) for f in result["fills"]} == executions


def test_kit_sends_each_type_to_ib_with_ib_async_and_records_what_ib_did(tmp_path):
    with run_gateway_in_thread(GatewayConfig(seed=3, auction_after=0.2)) as gw:
        check_run(execute_on_ib(spec(gw.port, tmp_path / "kit.duckdb", "ib_async")), gw)


def test_kit_sends_each_type_to_ib_with_ib_insync_and_records_what_ib_did(tmp_path):
    python = require_insync()
    with run_gateway_in_thread(GatewayConfig(seed=3, auction_after=0.2)) as gw:
        done = subprocess.run(
            [
                str(python),
                "-m",
                "tests.ib_driver",
                json.dumps(spec(gw.port, tmp_path / "kit.duckdb", "ib_insync")),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        sys.stderr.write(done.stderr)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["library"] == "ib_insync"
        check_run(result, gw)


# ---- IB's own client decodes every field ---------------------------------------------------------------

IBAPI = {
    "ibapi-9.81": ROOT / ".venv-ibapi" / "bin" / "python",
    "ibapi-10.51": ROOT / ".venv-ibapi10" / "bin" / "python",
}


@pytest.mark.parametrize("name", list(IBAPI))
def test_ibs_official_client_places_each_type_and_decodes_every_field(name):
    python = IBAPI[name]
    if not python.exists():
        pytest.skip(f"needs {python.parent.parent.name}: run `make ibapi`")
    with run_gateway_in_thread(GatewayConfig(seed=4, auction_after=0.1)) as gw:
        done = subprocess.run(
            [str(python), str(Path(__file__).with_name("ibapi_order_types.py")), str(gw.port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        sys.stderr.write(done.stderr)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        book = gw.call(lambda: {o.order_ref: o for o in gw.state.orders.values()})
    assert out.get("failure") is None and out["decode_problems"] == []
    assert {ref: book[ref].status for ref in out["refs"]} == {
        "api-moc": "Filled",
        "api-stp": "Filled",
        "api-vwap": "Filled",
        "api-trail": "Cancelled",
        "api-gtd": "Cancelled",
    }
    assert (
        book["api-trail"].type_fields.lmt_price_offset == 0.25
    )  # read past whatIf, where IB's client puts it
    listed = {o["ref"]: o for o in out["completed"]}
    assert listed["api-vwap"]["algo"] == ["Vwap", [["maxPctVol", "0.1"]]]
    assert listed["api-trail"]["fields"] == [
        "TRAIL LIMIT",
        None,
        1.5,
        0.25,
    ]  # auxPrice, trailingPercent, offset
    assert listed["api-gtd"]["gtd"] == ["GTD", "20990102 15:00:00 US/Eastern", True]
    assert listed["api-stp"]["fields"][:2] == ["STP", 500.0]


# ---- dry run: IB's what-if of each type ------------------------------------------------------------------


def test_a_dry_run_asks_ibs_what_if_for_each_type_and_shows_what_ib_would_refuse(tmp_path):
    db = tmp_path / "kit.duckdb"
    with run_gateway_in_thread(GatewayConfig(seed=6)) as gw:
        gw.call(lambda: gw.state.auctions_done.add("close"))  # after the close: IB refuses MOC
        broker = IBBroker(
            IBSettings(port=gw.port, client_id=31, connect_timeout=5),
            library="ib_async",
            ack_timeout=5,
            sync_timeout=5,
        )
        targets = {name: TARGETS[name][:3] for name in TARGETS}
        planned = kit.execute(pd.DataFrame(targets), broker=broker, run_key="types-dry", db=db, dry_run=True)
        placed = gw.call(lambda: dict(gw.state.placements))
    assert planned.status == "planned" and placed == {}
    trail = kit.ledger(db).events(planned.run_id)
    what_ifs = trail[trail["kind"] == "what_if"]
    estimates = {
        coid.split("-")[2]: json.loads(detail)
        for coid, detail in zip(what_ifs["client_order_id"], what_ifs["detail"], strict=True)
    }
    assert set(estimates) == {"AAPL", "MSFT", "IBM"}
    assert "cut-off time for the close auction has passed" in estimates["AAPL"]["warning"]
    assert estimates["MSFT"]["commission"] > 0 and estimates["IBM"]["commission"] > 0


@with_client()
async def test_a_gtd_order_is_cancelled_at_its_good_till_time_and_one_in_the_past_is_refused(gw, ib):
    errors = errors_of(ib)
    soon = datetime.now(UTC) + timedelta(seconds=2)  # IB's UTC form, to the second
    gtd = ib.placeOrder(
        stock("AAPL"),
        order(
            "BUY", 10, "LMT", "gtd-soon", lmtPrice=100.0, tif="GTD", goodTillDate=f"{soon:%Y%m%d-%H:%M:%S}"
        ),
    )
    await until(ib, lambda: gtd.orderStatus.status == "Submitted")
    await until(ib, gtd.isDone)  # on the gateway's own timer at the good-till time
    assert gtd.orderStatus.status == "Cancelled" and (gtd.order.orderId, 202) in errors
    assert gw.state.orders_by_ref("gtd-soon")[0].reason == "Cancelled: the good-till date was reached"
    past = ib.placeOrder(
        stock("AAPL"),
        order(
            "BUY",
            10,
            "LMT",
            "gtd-past",
            lmtPrice=100.0,
            tif="GTD",
            goodTillDate="20200102 15:00:00 US/Eastern",
        ),
    )
    await until(ib, past.isDone)
    assert (past.order.orderId, 201) in errors and "good-till date is in the past" in past.log[-1].message
