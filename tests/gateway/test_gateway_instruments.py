"""Futures, FX and options through the simulated gateway: kit with ib_async and ib_insync, and IB's official
client reading the gateway's contract fields (contractDetails, openOrder, execDetails, position).

Each kit run qualifies its contracts through reqContractDetails, is refused before anything is sent when a
contract is ambiguous, places, fills and cancels; the ledger's fills are the gateway's executions and TCA's
money is theirs times the contract's multiplier, in the contract's currency. A second run of the day asks
IB for no contract details (the ledger's contract cache answers).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import kit
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.test_ib_broker import by_id, drive
from tests.test_ib_broker import library as library  # the fixture: ib_async, and ib_insync in its venv

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("ibapi_instruments_driver.py")
CLIENTS = {
    "ibapi-9.81": ROOT / ".venv-ibapi" / "bin" / "python",
    "ibapi-10.51": ROOT / ".venv-ibapi10" / "bin" / "python",
}


class Counted:
    """The gateway with its reqContractDetails requests counted (the handler runs on the gateway's thread)."""

    def __init__(self, gw: Any):
        self.gw, self.details = gw, 0
        self._lock = threading.Lock()
        handlers = gw.gateway._handlers
        ask = handlers.reqContractDetails

        def counted(*args: Any) -> None:
            with self._lock:
                self.details += 1
            ask(*args)

        handlers.reqContractDetails = counted

    def instrument(self, local_symbol: str) -> Any:
        return next(i for i in self.gw.gateway.market.instruments if i.name == local_symbol)


@pytest.fixture
def gateway():
    with run_gateway_in_thread(GatewayConfig(seed=3)) as gw:
        yield Counted(gw)


def option_expiry(gw: Counted) -> str:
    return next(i.expiry for i in gw.gw.gateway.market.instruments if i.sec_type == "OPT")


def basket(gw: Counted, **extra: list[Any]) -> dict[str, list[Any]]:
    return {
        "symbol": ["ES", "EUR.USD", "SPY", "DAX"],
        "sec_type": ["FUT", "CASH", "OPT", "FUT"],
        "expiry": ["front", None, option_expiry(gw), "front"],
        "strike": [None, None, 450.0, None],
        "right": [None, None, "C", None],
        "multiplier": [None, None, None, 25.0],
        "currency": [None, None, None, "EUR"],
        "quantity": [2, 30_000, 3, 1],
        "decision_price": [5995.0, 1.08, 11.9, 18990.0],
        **extra,
    }


def run(
    library: str, gw: Counted, tmp_path: Path, targets: dict, run_key: str = "ib-inst", **spec: Any
) -> dict[str, Any]:
    return drive(library, gw.gw, tmp_path, targets, run_key=run_key, **spec)


def test_each_instrument_is_qualified_placed_and_filled_and_the_ledger_and_tca_match_the_gateway(
    library, gateway, tmp_path
):
    result = run(library, gateway, tmp_path, basket(gateway))
    orders = by_id(result)
    assert result["status"] == "done", result["notes"]
    book = gateway.gw.call(lambda: {e.exec_id: e for e in gateway.gw.state.effective_executions()})
    assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == {k: e.shares for k, e in book.items()}
    expected = {
        "ES": ("ES", 50.0, "USD", "CME"),
        "EUR.USD": ("EUR.USD", 1.0, "USD", "IDEALPRO"),
        "SPY": (None, 100.0, "USD", "SMART"),
        "DAX": ("FDAX", 25.0, "EUR", "EUREX"),
    }
    costs = kit.tca("ib-inst", db=tmp_path / "kit.duckdb").orders
    for coid, order in orders.items():
        local, multiplier, currency, exchange = expected[order["symbol"]]
        assert order["status"] == "FILLED" and (order["multiplier"] or 1.0) == multiplier  # FX: empty, 1
        assert (order["currency"], order["exchange"]) == (currency, exchange)
        if local:
            assert order["local_symbol"].startswith(local)
        inst = gateway.instrument(order["local_symbol"])
        assert order["con_id"] == inst.con_id and inst.units == multiplier
        executions = [e for e in book.values() if e.order.order_ref == coid]
        assert {e.order.instrument.con_id for e in executions} == {inst.con_id}
        money = math.fsum(e.shares * (e.price - order["decision_price"]) for e in executions) * multiplier
        assert costs.loc[coid, "execution_cost"] == pytest.approx(money)
        assert costs.loc[coid, "currency"] == currency
    summary = kit.tca("ib-inst", db=tmp_path / "kit.duckdb").summary
    assert set(summary.index) == {"EUR", "USD"}  # never added across currencies
    eur = [e for e in book.values() if e.order.instrument.currency == "EUR"]
    assert summary.loc["EUR", "notional_filled"] == pytest.approx(
        math.fsum(e.shares * e.price * 25 for e in eur)
    )


def test_an_ambiguous_contract_is_refused_with_ibs_candidates_and_nothing_is_placed(
    library, gateway, tmp_path
):
    targets = {
        "symbol": ["DAX", "ES"],
        "sec_type": ["FUT", "FUT"],
        "expiry": ["front", "front"],
        "currency": ["EUR", "USD"],
        "quantity": [1, 1],
    }
    result = run(library, gateway, tmp_path, targets)
    assert result["error"].startswith("ValidationError")
    assert "row 0 (DAX): ambiguous contract DAX front: 2 candidates" in result["error"]
    assert "FDAX" in result["error"] and "EUREX x25" in result["error"] and "FDXM" in result["error"]
    assert "x5" in result["error"] and "row 1" not in result["error"]  # ES front is one contract
    assert gateway.gw.call(lambda: dict(gateway.gw.state.placements)) == {}


def test_resting_orders_of_each_instrument_are_cancelled_with_the_gateways_word(library, gateway, tmp_path):
    targets = basket(gateway, order_type=["LMT"] * 4, limit_price=[5000.0, 0.9, 5.0, 15000.0])
    result = run(library, gateway, tmp_path, targets, timeout=1.5, on_timeout="cancel")
    orders = by_id(result)
    assert {o["status"] for o in orders.values()} == {"CANCELLED"}
    statuses = gateway.gw.call(lambda: {o.order_ref: o.status for o in gateway.gw.state.orders.values()})
    assert statuses == {coid: "Cancelled" for coid in orders}


def test_a_second_run_of_the_day_asks_ib_for_no_contract_details(library, gateway, tmp_path):
    targets = {**basket(gateway), "symbol": ["ES", "EUR.USD", "SPY", "DAX"]}
    targets["symbol"], targets["sec_type"] = [*targets["symbol"], "AAPL"], [*targets["sec_type"], "STK"]
    for name in ("expiry", "strike", "right", "multiplier", "currency"):
        targets[name] = [*targets[name], None]
    targets["quantity"], targets["decision_price"] = (
        [*targets["quantity"], 5],
        [*targets["decision_price"], 190.0],
    )
    first = run(library, gateway, tmp_path, targets, run_key="day-1")
    asked = gateway.details
    assert first["status"] == "done" and asked >= 5  # four derivatives at planning, the stock at prepare
    second = run(library, gateway, tmp_path, targets, run_key="day-2", client_id=12)
    assert second["status"] == "done" and gateway.details == asked
    assert [o["con_id"] for o in second["orders"]] == [o["con_id"] for o in first["orders"]]
    assert all(
        o["arrival_price"] for o in second["orders"]
    )  # the snapshot came after the orders, and counted


# ---- IB's official client reads the gateway's contract fields -------------------------------------------
@pytest.mark.parametrize("name", list(CLIENTS))
def test_ibs_official_client_reads_futures_fx_and_options_without_decode_errors(name):
    python = CLIENTS[name]
    if not python.exists():
        pytest.skip(f"needs {python.parent.parent.name}: run `make ibapi`")
    with run_gateway_in_thread(GatewayConfig(seed=4)) as gw:
        expiry = next(i.expiry for i in gw.gateway.market.instruments if i.sec_type == "OPT")
        done = subprocess.run(
            [str(python), str(DRIVER), str(gw.port), expiry], capture_output=True, text=True, timeout=120
        )
        sys.stderr.write(done.stderr)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        listed = {i.con_id: i for i in gw.gateway.market.instruments}
    assert out.get("failure") is None and out["decode_problems"] == []
    es = out["details"]["es"]
    assert len(es) == 3 and {row["multiplier"] for row in es} == {"50"}
    assert [row["contract_month"] for row in es] == [row["expiry"][:6] for row in es]
    assert all(row["local_symbol"] == listed[row["con_id"]].local_symbol for row in es)
    [eur] = out["details"]["eur"]
    assert (eur["symbol"], eur["currency"], eur["local_symbol"], eur["exchange"]) == (
        "EUR",
        "USD",
        "EUR.USD",
        "IDEALPRO",
    )
    spy = out["details"]["spy"]
    assert (
        len(spy) == 2 and {row["strike"] for row in spy} == {450.0} and {row["right"] for row in spy} == {"C"}
    )
    for execution in out["execs"]:
        inst = listed[execution["con_id"]]
        assert (execution["sec_type"], execution["expiry"], execution["local_symbol"]) == (
            inst.sec_type,
            inst.expiry,
            inst.shown_local_symbol,
        )
        assert execution["multiplier"] in (inst.multiplier, "")  # 9.81 reads it only from v9 executions on
    positions = {p["local_symbol"]: p for p in out["positions"]}
    assert positions["EUR.USD"]["position"] == 25_000 and positions[es[0]["local_symbol"]]["position"] == 1
    assert positions[es[0]["local_symbol"]]["avg_cost"] == pytest.approx(
        50 * next(e["price"] for e in out["execs"] if e["sec_type"] == "FUT")
    )


def test_a_dry_run_asks_ib_for_a_futures_what_if_with_its_multiplier_and_sends_nothing(gateway, tmp_path):
    import pandas as pd

    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    broker = IBBroker(IBSettings(port=gateway.gw.port, client_id=21, connect_timeout=5))
    targets = pd.DataFrame({"symbol": ["ES"], "sec_type": ["FUT"], "expiry": ["front"], "quantity": [2]})
    run = kit.execute(
        targets, broker=broker, run_key="dry-es", db=tmp_path / "kit.duckdb", dry_run=True, progress=False
    )
    assert run.status == "planned"
    events = kit.ledger(tmp_path / "kit.duckdb").events()
    detail = json.loads(events.loc[events["kind"] == "what_if", "detail"].iloc[0])
    price = gateway.instrument(run.orders["local_symbol"].iloc[0]).price
    assert detail["initMarginChange"] == pytest.approx(
        0.25 * 2 * price * 50
    )  # the gateway's 25% of 2 x ES x 50
    assert gateway.gw.call(lambda: dict(gateway.gw.state.placements)) == {}
