"""kit's IB broker against the simulated gateway, with the real ib_async and ib_insync clients."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from kit.gateway import Faults, GatewayConfig, run_gateway_in_thread
from tests.gateway_apart import gateway_apart
from tests.ib_driver import execute, execute_apart
from tests.support import FAR_LIMIT, IB_BASKET

ROOT = Path(__file__).resolve().parents[1]
INSYNC_PYTHON = ROOT / ".venv-insync" / "bin" / "python"
BASKET = IB_BASKET


@pytest.fixture(params=["ib_async", "ib_insync"])
def library(request: pytest.FixtureRequest) -> str:
    if request.param == "ib_insync" and not INSYNC_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-insync is missing: `make test` builds it")
        pytest.skip(".venv-insync is missing: run `make insync` (make test builds it)")
    return request.param


@pytest.fixture
def gateway(request: pytest.FixtureRequest):
    config = getattr(request, "param", None) or GatewayConfig()
    with run_gateway_in_thread(config) as gw:
        yield gw


def drive(library: str, gw: Any, tmp_path: Path, targets: dict, **spec: Any) -> dict[str, Any]:
    spec = {"port": gw.port, "db": str(tmp_path / "kit.duckdb"), "run_key": "ib-test", "targets": targets,
            "library": library, **spec}
    if library == "ib_async":
        return execute(spec)
    return execute_apart(spec, INSYNC_PYTHON, timeout=120)


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "error" not in result, result["error"]
    return {o["client_order_id"]: o for o in result["orders"]}


def gateway_executions(gw: Any) -> dict[str, float]:
    """exec_id -> shares as the gateway has them, corrections replacing what they correct."""
    return {e.exec_id: e.shares for e in gw.call(lambda: list(gw.state.effective_executions()))}


def test_basket_fills_with_commissions_and_ledger_matches_gateway(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, BASKET)
    assert result["library"] == library
    orders = by_id(result)
    assert result["status"] == "done"
    assert {o["status"] for o in orders.values()} == {"FILLED"}
    for order in orders.values():
        assert order["filled_quantity"] == order["quantity"] and order["remaining_quantity"] == 0
        assert order["perm_id"] and order["broker_order_id"]
        # the arrival price is IB's bid/ask mid at submission, near what the order paid
        assert abs(order["avg_fill_price"] / order["arrival_price"] - 1) < 0.01
    assert orders["ib-test-TTE-BUY"]["currency"] == "EUR"
    fills = result["fills"]
    assert {f["exec_id"]: f["quantity"] for f in fills} == gateway_executions(gateway)
    assert all(f["commission"] and f["commission"] > 0 for f in fills)
    assert len(fills) > len(orders)  # the gateway fills in partial slices
    # IB stamps executions to the second: no fill is stamped before the second its order was sent in
    submitted = {o["client_order_id"]: o["submitted_at"][:19] for o in orders.values()}
    assert all(f["time"][:19] >= submitted[f["client_order_id"]] for f in fills)
    # orderRef carries the client_order_id to IB, once per order
    placed = gateway.call(lambda: [o.order_ref for o in gateway.state.orders.values()])
    assert sorted(placed) == sorted(orders)


def test_resumed_run_sends_nothing_twice(library, gateway, tmp_path):
    first = by_id(drive(library, gateway, tmp_path, BASKET))
    again = drive(library, gateway, tmp_path, BASKET, client_id=12)
    assert by_id(again).keys() == first.keys()
    placed = gateway.call(lambda: [o.order_ref for o in gateway.state.orders.values()])
    assert sorted(placed) == sorted(first)
    assert len(again["fills"]) == len(gateway_executions(gateway))


@pytest.mark.parametrize("gateway", [GatewayConfig(max_order_size=500)], indirect=True)
def test_rejections_carry_ibs_reason_and_the_rest_goes_on(library, gateway, tmp_path):
    targets = {
        "symbol": ["AAPL", "TTE", "NOPE", "MSFT"],
        "side": ["BUY", "BUY", "BUY", "BUY"],
        "quantity": [1000, 10, 5, 10],  # AAPL is over the gateway's max size: 201
        "currency": ["USD", "EUR", "USD", "USD"],
        "exchange": ["SMART", "SBF", "SMART", "SMART"],  # TTE routed directly to SBF: 10311
    }
    result = drive(library, gateway, tmp_path, targets)
    orders = by_id(result)
    for symbol, code in (("AAPL", "201"), ("TTE", "10311"), ("NOPE", "200")):
        order = orders[f"ib-test-{symbol}-BUY"]
        assert order["status"] == "REJECTED" and f"IB error {code}" in order["reason"]
    assert orders["ib-test-MSFT-BUY"]["status"] == "FILLED"
    assert result["status"] == "partial"


@pytest.mark.parametrize(
    "gateway",
    [GatewayConfig(faults=Faults(commission_before_execution=True)),
     GatewayConfig(faults=Faults(commission_delay=0.2)),
     GatewayConfig(faults=Faults(duplicate_exec_details=True)),
     GatewayConfig(faults=Faults(correct_executions=True))],
    indirect=True, ids=["commission-first", "commission-late", "duplicate-exec", "corrections"])
def test_commissions_duplicates_and_corrections_leave_one_fill_per_execution(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, BASKET)
    orders = by_id(result)
    assert {o["status"] for o in orders.values()} == {"FILLED"}
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == gateway_executions(gateway)
    assert all(f["commission"] is not None and f["commission"] > 0 for f in result["fills"])
    for order in orders.values():
        assert order["filled_quantity"] == order["quantity"]


def test_timeout_cancels_with_ibs_confirmation_or_leaves_working(library, gateway, tmp_path):
    lmt = FAR_LIMIT
    result = drive(library, gateway, tmp_path, lmt, timeout=0.5)
    order = by_id(result)["ib-test-AAPL-BUY"]
    assert order["status"] == "CANCELLED" and order["filled_quantity"] == 0
    assert any(e["kind"] == "cancel_requested" for e in result["events"])
    assert result["status"] == "failed"
    left = drive(library, gateway, tmp_path, lmt, run_key="ib-leave", timeout=0.5, on_timeout="leave")
    assert by_id(left)["ib-leave-AAPL-BUY"]["status"] == "SUBMITTED"
    assert any("left working" in note for note in left["notes"])
    assert gateway.call(lambda: gateway.state.orders_by_ref("ib-leave-AAPL-BUY")[0].is_working)


@pytest.mark.parametrize("gateway", [GatewayConfig(accounts=("U7654321",))], indirect=True)
def test_live_account_is_refused_before_any_order(library, gateway, tmp_path):
    result = drive(library, gateway, tmp_path, BASKET)
    assert result["error"].startswith("LiveAccountError")
    assert gateway.call(lambda: len(gateway.state.orders)) == 0


def test_kit_runs_in_a_running_event_loop_like_jupyter(gateway, tmp_path):
    """Inside a running loop (a Jupyter cell), the blocking kit.execute must not fail."""
    import asyncio

    async def cell() -> dict[str, Any]:
        return execute({"port": gateway.port, "db": str(tmp_path / "kit.duckdb"), "run_key": "in-loop",
                        "targets": BASKET})

    result = asyncio.run(cell())
    assert result["status"] == "done", result


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.parametrize(
    "gateway",
    [GatewayConfig(faults=Faults(disconnect_on="execDetails")),
     GatewayConfig(faults=Faults(disconnect_on="commissionReport"))],
    indirect=True, ids=["on-execution", "on-commission"])
def test_disconnect_mid_run_reconnects_and_records_every_fill_once(gateway, tmp_path):
    result = drive("ib_async", gateway, tmp_path, BASKET)
    orders = by_id(result)
    assert {o["status"] for o in orders.values()} == {"FILLED"}, result["notes"]
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == gateway_executions(gateway)
    assert all(f["commission"] for f in result["fills"])
    for what in ("disconnected", "reconnected"):
        assert any(what in note for note in result["notes"]), result["notes"]
    placed = gateway.call(lambda: [o.order_ref for o in gateway.state.orders.values()])
    assert sorted(placed) == sorted(orders)


def test_gateway_restart_mid_run_keeps_state_and_the_run_finishes(gateway, tmp_path):
    """The gateway restarts (every connection dropped, order ids rolled back) at its first execution."""
    server = gateway.gateway
    original_send = server.send

    def send(conn: Any, msg: Any) -> None:
        if msg.name == "execDetails" and not getattr(server, "_restarted", False):
            server._restarted = True
            server.restart()
            return
        original_send(conn, msg)

    gateway.call(setattr, server, "send", send)
    result = drive("ib_async", gateway, tmp_path, BASKET)
    orders = by_id(result)
    assert server._restarted
    assert {o["status"] for o in orders.values()} == {"FILLED"}, result["notes"]
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == gateway_executions(gateway)
    placed = gateway.call(lambda: [o.order_ref for o in gateway.state.orders.values()])
    assert sorted(placed) == sorted(orders)


@pytest.mark.parametrize(
    "gateway", [GatewayConfig(max_order_size=50, faults=Faults(inactive_after_reject=True))], indirect=True)
def test_inactive_after_a_rejection_changes_nothing(gateway, tmp_path):
    result = drive("ib_async", gateway, tmp_path, {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [100]})
    order = by_id(result)["ib-test-AAPL-BUY"]
    assert order["status"] == "REJECTED" and "201" in order["reason"]
    after = [e for e in result["events"] if e["client_order_id"] == "ib-test-AAPL-BUY"]
    after = after[[e["kind"] for e in after].index("rejected"):]
    assert {e["status"] for e in after} == {"REJECTED"}  # Inactive, whenever it comes, changes nothing


@pytest.mark.parametrize(
    "gateway", [GatewayConfig(partial_fills=3, fill_latency=0.3, faults=Faults(fill_after_cancel=True))],
    indirect=True)
def test_a_fill_after_the_cancel_is_recorded(gateway, tmp_path):
    result = drive("ib_async", gateway, tmp_path, {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [300]},
                   timeout=0.45)
    order = by_id(result)["ib-test-AAPL-BUY"]
    at_gateway = gateway.call(lambda: gateway.state.orders_by_ref("ib-test-AAPL-BUY")[0].filled)
    assert order["filled_quantity"] == at_gateway > 0
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == gateway_executions(gateway)
    kinds = [e["kind"] for e in result["events"] if e["client_order_id"] == "ib-test-AAPL-BUY"]
    assert "fill" in kinds[kinds.index("cancelled"):]  # the late fill came after IB's cancel confirmation
    assert order["status"] in ("CANCELLED", "FILLED")


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(drop_orders={"ib-test-MSFT-BUY"}))],
                         indirect=True)
def test_an_order_ib_drops_silently_is_flagged_never_assumed_cancelled(gateway, tmp_path):
    targets = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "BUY"], "quantity": [10, 10]}
    result = drive("ib_async", gateway, tmp_path, targets, timeout=1.0, ack_timeout=0.3)
    orders = by_id(result)
    assert orders["ib-test-AAPL-BUY"]["status"] == "FILLED"
    dropped = orders["ib-test-MSFT-BUY"]
    assert dropped["status"] in ("NEW", "SUBMITTED") and dropped["status"] != "CANCELLED"
    notes = " ".join(result["notes"])
    assert "unacknowledged" in notes and "not confirmed" in notes
    assert result["status"] == "partial"


@pytest.mark.parametrize("gateway", [GatewayConfig(faults=Faults(withhold_exec_details_end=True))],
                         indirect=True)
def test_a_withheld_exec_details_end_does_not_stop_a_resume_and_nothing_is_resent(gateway, tmp_path):
    lmt = FAR_LIMIT
    first = drive("ib_async", gateway, tmp_path, lmt, timeout=0.3, on_timeout="leave", sync_timeout=1.0,
                  connect_timeout=1.0)
    assert by_id(first)["ib-test-AAPL-BUY"]["status"] == "SUBMITTED"
    again = drive("ib_async", gateway, tmp_path, lmt, timeout=0.3, sync_timeout=1.0, connect_timeout=1.0)
    assert any("sync_incomplete" in note for note in again["notes"]), again["notes"]
    assert by_id(again)["ib-test-AAPL-BUY"]["status"] == "CANCELLED"  # found, followed, cancelled at IB
    placed = gateway.call(lambda: dict(gateway.state.placements))
    assert all(n == 1 for n in placed.values())


def test_a_large_basket_never_sends_ib_more_than_50_messages_a_second(tmp_path):
    symbols = [i.symbol for i in GatewayConfig().instruments if i.currency == "USD"]
    count = 120
    targets = {"symbol": [symbols[n % len(symbols)] for n in range(count)], "side": ["BUY"] * count,
               "quantity": list(range(1, count + 1))}
    with gateway_apart() as gw:  # kit and the gateway each in a process of their own, as kit and IB
        result = execute_apart({"port": gw.port, "db": str(tmp_path / "kit.duckdb"), "run_key": "ib-test",
                                "targets": targets, "library": "ib_async", "timeout": 30})
    assert result["status"] == "done", result.get("error") or result["notes"]
    assert len(result["orders"]) == count
    assert gw.stats["max_inbound_rate"] <= 50 and gw.stats["paced"] == {}


def test_the_sample_notebook_runs_on_ib_under_papermill(gateway, tmp_path, monkeypatch):
    from kit.runner import execute_notebook

    monkeypatch.setenv("KIT_IB_PORT", str(gateway.port))
    monkeypatch.setenv("KIT_IB_CLIENT_ID", "41")
    result = execute_notebook(ROOT / "notebooks" / "momentum.ipynb", {"broker": "ib"}, run_key="nb-ib",
                              db=tmp_path / "kit.duckdb", execution_timeout=120, dry_run=False,
                              runs_dir=tmp_path / "runs")
    assert result.status == "done", (result.error_name, result.error)
    placed = gateway.call(lambda: dict(gateway.state.placements))
    assert placed and all(ref.startswith("nb-ib-") and n == 1 for ref, n in placed.items())


def test_target_positions_on_ib_are_diffed_against_the_brokers_positions(gateway, tmp_path):
    import pandas as pd

    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    drive("ib_async", gateway, tmp_path, {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [300]})
    broker = IBBroker(IBSettings(port=gateway.port, client_id=51))
    plan = kit.plan(pd.DataFrame({"symbol": ["AAPL", "MSFT"], "target_quantity": [500, -40]}), broker=broker,
                    run_key="ib-positions", db=tmp_path / "kit.duckdb")
    rows = plan.frame().set_index("symbol")
    assert rows.loc["AAPL", "current"] == 300 and rows.loc["AAPL", "delta"] == 200
    assert rows.loc["MSFT", "side"] == "SELL" and rows.loc["MSFT", "quantity"] == 40


def test_two_connections_in_a_row_share_ibs_count_of_the_clients_messages():
    """IB counts a client's messages per second whatever connection carried them. A cold run connects twice
    within a second (planning's contract lookups, then the run): each connection's pacer starting from an
    empty window let 51 through, and IB refused the orders with error 100."""
    import asyncio

    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    async def burst(port: int) -> None:
        broker = IBBroker(IBSettings(port=port, client_id=41, connect_timeout=5))
        await broker.connect()
        try:
            for _ in range(44):
                broker.ib.client.reqCurrentTime()
            await broker.positions()  # answered once the gateway has read everything before it
        finally:
            await broker.close()

    async def scenario(port: int) -> None:
        await burst(port)
        await burst(port)

    with run_gateway_in_thread(GatewayConfig()) as gw:
        asyncio.run(scenario(gw.port))
        meter = gw.call(lambda: gw.state.inbound[41])
        assert meter.count >= 90  # both bursts reached the gateway
        assert meter.max_per_window <= 50 and gw.call(lambda: gw.state.paced[41]) == 0
