"""Amendments through the simulated gateway with the real client libraries (ib_async here, ib_insync in
.venv-insync): IB's modify keeps the order id, IB's refusals leave the order as it was, kit refuses what it
knows IB would; and pacing: a 500-order basket never trips IB's error 100."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gateway_support import connect, errors_of, filled_with_commissions, gateway, run, stock, until
from ib_async import IB, LimitOrder

from kit.gateway import Faults, GatewayConfig, run_gateway_in_thread
from tests.amend_driver import run as drive
from tests.support import ROOT, require_insync

RESTING = {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [10], "order_type": ["LMT"],
           "limit_price": [100.0]}


def scenario(port: int, db: Path, library: str) -> dict[str, Any]:
    key, gone = f"amend-{library}", f"gone-{library}"
    coid = f"{key}-AAPL-BUY"
    steps = [
        {"do": "execute", "run_key": key, "targets": RESTING},
        {"do": "amend", "run_key": key, "order": coid, "changes": {"limit": 101.0}},
        {"do": "amend", "run_key": key, "order": coid, "changes": {"limit": 101.005}},  # off the tick: 110
        {"do": "amend", "run_key": key, "order": coid, "changes": {"quantity": 20}},
        {"do": "amend", "run_key": key, "order": coid, "changes": {"limit": 195.0}},  # marketable: fills
        {"do": "execute", "run_key": key, "targets": {**RESTING, "limit_price": [100.0]}, "timeout": 5},
        {"do": "amend", "run_key": key, "order": coid, "changes": {"limit": 196.0}},
        {"do": "execute", "run_key": gone, "targets": RESTING},
        {"do": "cancel", "run_key": gone},
        {"do": "amend", "run_key": gone, "order": f"{gone}-AAPL-BUY", "changes": {"limit": 101.0}},
    ]
    spec = {"port": port, "db": str(db), "library": library, "steps": steps,
            "client_id": 21 if library == "ib_async" else 22}
    if library == "ib_async":
        return drive(spec)
    python = require_insync()
    done = subprocess.run([str(python), "-m", "tests.amend_driver", json.dumps(spec)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("library", ["ib_async", "ib_insync"])
def test_modify_keeps_the_order_id_and_follows_ibs_answer(library, tmp_path):
    config = GatewayConfig(faults=Faults(reject_off_tick=True), fill_latency=0.01)
    with run_gateway_in_thread(config) as gw:
        report = scenario(gw.port, tmp_path / "kit.duckdb", library)
        [order] = gw.call(lambda: gw.state.orders_by_ref(f"amend-{library}-AAPL-BUY"))
        placements = gw.call(lambda: dict(gw.state.placements))
    assert report["library"] == library
    steps = report["steps"]
    row = lambda n: steps[n]["orders"][0]  # noqa: E731
    assert steps[0]["status"] == "failed" and row(0)["status"] == "SUBMITTED"
    order_id = row(0)["broker_order_id"]

    assert (steps[1]["outcome"], row(1)["limit_price"], row(1)["original_limit_price"]) == ("accepted", 101.0,
                                                                                           100.0)
    assert row(1)["broker_order_id"] == order_id  # IB's modify: the same order, the same id
    assert steps[2]["outcome"] == "refused" and "IB error 110" in steps[2]["reason"]
    assert row(2)["limit_price"] == 101.0 and row(2)["status"] == "SUBMITTED"  # works on as it was
    assert steps[3]["outcome"] == "accepted"
    assert row(3)["quantity"] == 20 and row(3)["original_quantity"] == 10
    assert steps[4]["outcome"] == "accepted" and row(4)["limit_price"] == 195.0
    assert row(5)["status"] == "FILLED" and row(5)["filled_quantity"] == 20  # the re-run followed, not resent
    assert row(5)["limit_price"] == 195.0 and row(5)["amendments"] == 3  # ...and did not undo the amendments
    assert steps[6]["outcome"] == "refused" and "filled" in steps[6]["reason"]
    assert steps[9]["outcome"] == "refused" and "cancelled" in steps[9]["reason"]
    assert steps[9]["kinds"] == ["amend_refused"]  # known to kit before sending: never sent

    assert placements[f"amend-{library}-AAPL-BUY"] == 1  # modifies are not new orders
    assert (order.quantity, order.limit_price, order.status) == (20, 195.0, "Filled")
    asked, accepted, refused = "amend_requested", "amend_accepted", "amend_refused"
    assert steps[4]["kinds"] == [asked, accepted, asked, refused, asked, accepted, asked, accepted]


def test_the_gateway_refuses_modifies_as_ib_does():
    """104 for a filled order, 105 for a changed side, 103 for a cancelled order's id; nothing changes."""

    async def body() -> None:
        async with gateway(fill_latency=0.01).serving() as gw:
            ib = await connect(gw)
            errors = errors_of(ib)
            aapl = stock("AAPL")
            await ib.qualifyContractsAsync(aapl)
            filled = ib.placeOrder(aapl, LimitOrder("BUY", 5, 195.0, orderRef="f"))
            await until(ib, filled_with_commissions(filled))
            again = LimitOrder("BUY", 5, 196.0, orderRef="f", orderId=filled.order.orderId)
            ib.client.placeOrder(again.orderId, aapl, again)
            resting = ib.placeOrder(aapl, LimitOrder("BUY", 5, 100.0, orderRef="r"))
            await until(ib, lambda: resting.orderStatus.status == "Submitted")
            flipped = LimitOrder("SELL", 5, 100.0, orderRef="r", orderId=resting.order.orderId)
            ib.client.placeOrder(flipped.orderId, aapl, flipped)
            ib.cancelOrder(resting.order)
            await until(ib, lambda: resting.orderStatus.status == "Cancelled")
            revived = LimitOrder("BUY", 5, 101.0, orderRef="r", orderId=resting.order.orderId)
            ib.client.placeOrder(revived.orderId, aapl, revived)
            await until(ib, lambda: any(code == 103 for _, code in errors))
            assert [code for _, code in errors if code in (103, 104, 105)] == [104, 105, 103]
            assert gw.state.orders_by_ref("f")[0].limit_price == 195.0
            ib.disconnect()

    run(body())


PACING_TARGETS = {"symbol": [f"P{i % 20:02d}" for i in range(500)], "side": ["BUY"] * 500,
                  "quantity": [1 + i // 20 for i in range(500)], "primary_exchange": ["NASDAQ"] * 500}


@pytest.mark.parametrize("library", ["ib_async", "ib_insync"])
def test_a_500_order_basket_never_trips_ibs_pacing(library, tmp_path):
    """kit's Pacer keeps every one-second window at or under IB's 50 messages, with either library."""
    from kit.gateway import Instrument
    from tests.gateway_apart import gateway_apart
    from tests.ib_driver import execute_apart

    instruments = tuple(Instrument(f"P{i:02d}", 7_000_000 + i, "NASDAQ", "USD", 20.0 + i, f"PACING {i}")
                        for i in range(20))
    with gateway_apart(instruments, partial_fills=1) as gw:  # kit and the gateway each in its own process
        spec = {"port": gw.port, "client_id": 41, "library": library, "run_key": f"pacing-{library}",
                "db": str(tmp_path / "kit.duckdb"), "targets": PACING_TARGETS, "timeout": 120,
                "ack_timeout": 30, "connect_timeout": 10}
        report = execute_apart(spec, sys.executable if library == "ib_async" else require_insync())
    assert report["library"] == library
    assert report["status"] == "done" and len(report["fills"]) == 500
    assert gw.stats["paced"] == {} and gw.stats["max_inbound_rate"] <= 50


def test_reprice_walks_a_resting_ib_order_by_modifies_until_it_fills(tmp_path):
    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    db = tmp_path / "kit.duckdb"
    targets = pd.DataFrame({**RESTING, "limit_price": [189.95]})  # AAPL trades at 190.00 (190.01 asked)
    rule = kit.Reprice(step=1, unit="ticks", interval=0.1, max_move=20)
    with run_gateway_in_thread(GatewayConfig(fill_latency=0.01)) as gw:
        broker = IBBroker(IBSettings(port=gw.port, client_id=43, connect_timeout=10))
        done = kit.execute(targets, broker=broker, run_key="walk", db=db, timeout=20, reprice=rule,
                           progress=False)
        [order] = gw.call(lambda: gw.state.orders_by_ref("walk-AAPL-BUY"))
        placements = gw.call(lambda: gw.state.placements["walk-AAPL-BUY"])
    events = kit.ledger(db).events(done.run_id).sort_values("seq")
    asked = [json.loads(d)["changes"]["limit_price"]
             for k, d in zip(events["kind"], events["detail"], strict=True) if k == "amend_requested"]
    # One tick a step until the market took it at 190.00; a step the timer asked for while that fill was on
    # its way may follow, at the touch (the ask, 190.01) at most.
    assert asked[:5] == [189.96, 189.97, 189.98, 189.99, 190.0] and asked[5:] in ([], [190.01])
    assert placements == 1 and done.status == "done" and order.status == "Filled"
    row = done.orders.iloc[0]
    assert row["original_limit_price"] == 189.95 and row["amendments"] >= 5
    assert done.fills["price"].max() <= asked[-1]  # never through the limit it worked at


def test_a_modify_whose_answer_kit_never_saw_is_adopted_from_ibs_listing(tmp_path):
    """kit crashed between sending a modify and IB's answer (or someone modified the order in TWS): the
    next run of the key lists IB's orders, sees the new terms and records them as an amendment."""
    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    db = tmp_path / "kit.duckdb"

    async def modify_behind_kits_back(port: int, order_id: int) -> None:
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=44)
        aapl = stock("AAPL")
        await ib.qualifyContractsAsync(aapl)
        changed = LimitOrder("BUY", 10, 100.5, orderRef="adopt-AAPL-BUY", orderId=order_id)
        ib.client.placeOrder(order_id, aapl, changed)
        await until(ib, lambda: any(t.order.lmtPrice == 100.5 for t in ib.openTrades()))
        ib.disconnect()

    with run_gateway_in_thread(GatewayConfig(fill_latency=0.01)) as gw:
        def broker() -> IBBroker:
            return IBBroker(IBSettings(port=gw.port, client_id=44, connect_timeout=10))

        first = kit.execute(pd.DataFrame(RESTING), broker=broker(), run_key="adopt", db=db, timeout=0.5,
                            on_timeout="leave", progress=False)
        run(modify_behind_kits_back(gw.port, int(first.orders["broker_order_id"].iloc[0])))
        again = kit.execute(pd.DataFrame(RESTING), broker=broker(), run_key="adopt", db=db, timeout=0.5,
                            on_timeout="leave", progress=False)
        placements = gw.call(lambda: gw.state.placements["adopt-AAPL-BUY"])
    row = again.orders.iloc[0]
    assert (row["limit_price"], row["original_limit_price"], row["amendments"]) == (100.5, 100.0, 1)
    assert placements == 1 and row["status"] == "SUBMITTED"
    events = kit.ledger(db).events(again.run_id)
    assert list(events["kind"]).count("amend_accepted") == 1
