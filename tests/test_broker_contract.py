"""The broker contract: what every kit broker must do, stated once and run the same way on each.

In the manner of exchange_calendars' shared base test class: the test methods of BrokerContract are the
checks, written once against kit.execute and the ledger; each subclass supplies a World (a broker, and what
that broker has on its side: placements, executions, working orders) and declares in CANNOT, with the
reason, each check its broker cannot be put through. A declared check is reported as skipped with that
reason (pytest -ra lists it); an undeclared one always runs.

The brokers: the mock; IB through kit's simulated gateway with ib_async (in this process, the gateway in a
thread) and with ib_insync (kit runs in a .venv-insync subprocess, tests/ib_driver.py --serve, and reports
the ledger as JSON; the gateway stays here, so each check reads the same state); and the scripted broker of
tests/support.py playing a small exchange. Every run's report has one shape (tests.ib_driver.report), so
every check asserts on the same thing whichever broker ran it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
import pytest

import kit
from kit.brokers.base import RUN_NOTICES, Notice
from kit.brokers.mock import MockBroker
from kit.clock import utcnow
from kit.gateway import Faults, GatewayConfig, run_gateway_in_thread
from kit.model import Accepted, BrokerEvent, Cancelled, Commission, Execution, Fill, OrderIntent, Rejected
from tests.ib_driver import execute as execute_on_ib
from tests.ib_driver import report
from tests.support import (
    FAR_LIMIT,
    IB_BASKET,
    ScriptedBroker,
    by_id,
    gateway_executions,
    gateway_placements,
    of_run,
    require_insync,
)

ROOT = Path(__file__).resolve().parents[1]
# The simulated gateway's reference prices for the basket's stocks; "NOPE" is unknown to every broker.
PRICES = {"AAPL": 190.0, "MSFT": 420.0, "TTE": 62.0}
UNKNOWN = "NOPE"
REJECTION = {"symbol": ["AAPL", UNKNOWN, "MSFT"], "side": ["BUY", "BUY", "SELL"], "quantity": [10, 5, 10]}
# A market order that fills and a limit order that rests, for the resume.
FILLED_AND_RESTING = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "BUY"], "quantity": [30, 10],
                      "order_type": ["MKT", "LMT"], "limit_price": [None, 1.0]}
QUICK = 0.5  # seconds a run waits for orders that will not fill: it must end by timeout, and soon
NOTE = re.compile(r"^\d\d:\d\d:\d\d (\w+): ")  # how the engine writes a broker's notice into the notes

# What a check needs the broker's world to do besides trading normally.
Situation = Literal["plain", "duplicates", "fill_after_cancel", "disconnect", "deaf_to_cancels"]


class World(ABC):
    """One broker's side of a check: kit runs against it, and the check reads what the broker has."""

    @abstractmethod
    def execute(self, targets: dict[str, list[Any]], run_key: str, **options: Any) -> dict[str, Any]:
        """kit.execute the targets through this broker; the run's report (tests.ib_driver.report)."""

    @abstractmethod
    def cancel(self, run_key: str, timeout: float) -> dict[str, Any]:
        """The kill switch (kit.cancel) on the run's working orders; that run's report."""

    @abstractmethod
    def placements(self, run_key: str) -> dict[str, int]:
        """client_order_id -> how many times that order of the run reached the broker."""

    @abstractmethod
    def executions(self, run_key: str) -> dict[str, float]:
        """exec_id -> quantity of the run's executions as the broker has them (a correction replacing)."""

    @abstractmethod
    def working(self, client_order_id: str) -> bool:
        """Does the broker still have this order working (able to fill)?"""


def events_of(result: dict[str, Any], client_order_id: str) -> list[dict[str, Any]]:
    return [{**e, "detail": json.loads(e["detail"])} for e in result["events"]
            if e["client_order_id"] == client_order_id]


def fills_by_exec_id(result: dict[str, Any]) -> dict[str, float]:
    return {f["exec_id"]: f["quantity"] for f in result["fills"]}


class BrokerContract:
    """What every kit broker must do. Subclasses implement `world` and declare what they cannot do."""

    #: check name -> why this broker cannot be put through it (reported as a skip with this reason)
    CANNOT: ClassVar[dict[str, str]] = {}
    #: the broker gives each order a permanent id of its own (IB's permId), kept in orders.perm_id
    HAS_PERM_ID: ClassVar[bool] = True
    #: the broker's own notice codes (IB's 2104, 10349, ...) reach the ledger beside kit's Notice ones
    NATIVE_NOTICE_CODES: ClassVar[bool] = False
    #: what the reason of an order rejected for an unknown symbol contains
    REJECT_REASON: ClassVar[str]

    def world(self, situation: Situation, db: Path) -> World:
        raise NotImplementedError

    @pytest.fixture
    def make_world(self, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., World]:
        reason = self.CANNOT.get(request.node.originalname)
        if reason:
            pytest.skip(f"{type(self).__name__} declares it cannot: {reason}")
        return lambda situation="plain": self.world(situation, tmp_path / "kit.duckdb")

    def run(self, world: World, targets: dict[str, list[Any]], run_key: str,
            **options: Any) -> dict[str, Any]:
        """One run, and what holds for every run on every broker: the ledger's run status is the run's, and
        the notices are in kit's vocabulary."""
        return self.checked(world.execute(targets, run_key, **options))

    def checked(self, result: dict[str, Any]) -> dict[str, Any]:
        by_id(result)
        assert result["ledger_status"] == result["status"]
        for event in result["events"]:
            if event["kind"] == "error":  # a BrokerNotice
                code = json.loads(event["detail"])["code"]
                assert code in set(Notice) or (self.NATIVE_NOTICE_CODES and isinstance(code, int)), code
        for note in result["notes"]:
            said = NOTE.match(note)
            assert said is None or said.group(1) in RUN_NOTICES, note
        return result

    # ---- the checks ------------------------------------------------------------------------------------

    def test_market_orders_fill_completely_keyed_by_exec_id_with_commissions_joined(self, make_world):
        world = make_world()
        result = self.run(world, IB_BASKET, "mkt")
        orders = by_id(result)
        assert result["status"] == "done"
        assert world.placements("mkt") == {coid: 1 for coid in orders}
        fills = fills_by_exec_id(result)
        assert len(fills) == len(result["fills"]) and fills == world.executions("mkt")
        assert len(fills) > len(orders)  # partial fills, each its own execution
        for coid, order in orders.items():
            mine = [f for f in result["fills"] if f["client_order_id"] == coid]
            assert order["status"] == "FILLED" and order["remaining_quantity"] == 0
            assert order["filled_quantity"] == order["quantity"] == sum(f["quantity"] for f in mine)
            assert all(f["commission"] > 0 and f["currency"] == order["currency"] for f in mine)
            assert order["commission"] == pytest.approx(sum(f["commission"] for f in mine))
            assert min(f["price"] for f in mine) <= order["avg_fill_price"] <= max(f["price"] for f in mine)
            assert order["broker_order_id"]
            assert bool(order["perm_id"]) is self.HAS_PERM_ID

    def test_a_limit_away_from_the_market_works_until_the_broker_confirms_its_cancel(self, make_world):
        world = make_world()
        left = self.run(world, FAR_LIMIT, "rest", timeout=QUICK, on_timeout="leave")
        [(coid, order)] = by_id(left).items()
        assert (order["status"], order["filled_quantity"], order["remaining_quantity"]) == ("SUBMITTED", 0,
                                                                                           10)
        assert world.working(coid) and left["status"] == "failed"
        assert any("left working" in note for note in left["notes"])

        cancelled = self.run(world, FAR_LIMIT, "cancel", timeout=QUICK)
        [(coid, order)] = by_id(cancelled).items()
        assert (order["status"], order["filled_quantity"], order["remaining_quantity"]) == ("CANCELLED", 0, 0)
        assert not world.working(coid) and cancelled["status"] == "failed"
        kinds = [(e["kind"], e["detail"].get("effect")) for e in events_of(cancelled, coid)]
        # CANCELLED came from the broker's confirmation, after kit asked
        assert kinds.index(("cancel_requested", None)) < kinds.index(("cancelled", "applied"))

    def test_a_cancel_the_broker_never_confirms_leaves_the_order_working(self, make_world):
        world = make_world("deaf_to_cancels")
        [coid] = by_id(self.run(world, FAR_LIMIT, "deaf", timeout=QUICK, on_timeout="leave"))
        result = self.checked(world.cancel("deaf", timeout=QUICK))
        order = by_id(result)[coid]
        assert (order["status"], order["remaining_quantity"]) == ("SUBMITTED", 10) and world.working(coid)
        kinds = [e["kind"] for e in events_of(result, coid)]
        assert "cancel_unconfirmed" in kinds[kinds.index("cancel_requested"):] and "cancelled" not in kinds
        assert any("not confirmed" in note for note in result["notes"]), result["notes"]

    def test_a_rejection_ends_rejected_with_the_brokers_reason_and_the_rest_goes_on(self, make_world):
        world = make_world()
        result = self.run(world, REJECTION, "rej")
        orders = by_id(result)
        rejected = orders[f"rej-{UNKNOWN}-BUY"]
        assert rejected["status"] == "REJECTED" and self.REJECT_REASON in rejected["reason"]
        assert rejected["filled_quantity"] == rejected["remaining_quantity"] == 0
        assert {orders["rej-AAPL-BUY"]["status"], orders["rej-MSFT-SELL"]["status"]} == {"FILLED"}
        assert result["status"] == "partial"
        assert {f["client_order_id"] for f in result["fills"]} == {"rej-AAPL-BUY", "rej-MSFT-SELL"}

    def test_the_run_status_follows_filled_quantities(self, make_world):
        """done when everything filled, partial when some did (the checks above), failed when none did;
        the ledger's runs table says the same (every run's check)."""
        world = make_world()
        result = self.run(world, {"symbol": [UNKNOWN], "side": ["BUY"], "quantity": [5]}, "none")
        assert result["status"] == "failed" and result["fills"] == []

    def test_a_resume_follows_what_the_broker_has_and_sends_nothing_twice(self, make_world):
        world = make_world()
        first = by_id(self.run(world, FILLED_AND_RESTING, "resume", timeout=QUICK, on_timeout="leave"))
        assert (first["resume-AAPL-BUY"]["status"], first["resume-MSFT-BUY"]["status"]) == ("FILLED",
                                                                                            "SUBMITTED")
        again = self.run(world, FILLED_AND_RESTING, "resume", timeout=QUICK)
        orders = by_id(again)
        assert world.placements("resume") == {"resume-AAPL-BUY": 1, "resume-MSFT-BUY": 1}
        kinds = {e["kind"] for e in again["events"]}
        assert "run_resumed" in kinds and not kinds & {"unknown_at_broker", "resend"}, kinds
        # the resting order was found at the broker, followed, and cancelled there at the timeout
        assert orders["resume-MSFT-BUY"]["status"] == "CANCELLED" and not world.working("resume-MSFT-BUY")
        assert orders["resume-AAPL-BUY"]["status"] == "FILLED"
        assert fills_by_exec_id(again) == world.executions("resume")

    def test_duplicate_events_change_nothing(self, make_world):
        world = make_world("duplicates")
        result = self.run(world, IB_BASKET, "dup")
        orders = by_id(result)
        assert {o["status"] for o in orders.values()} == {"FILLED"}
        assert fills_by_exec_id(result) == world.executions("dup")
        for coid, order in orders.items():
            mine = [f for f in result["fills"] if f["client_order_id"] == coid]
            assert order["filled_quantity"] == order["quantity"] == sum(f["quantity"] for f in mine)
            assert order["commission"] == pytest.approx(sum(f["commission"] for f in mine))
        effects = [(e["kind"], e["detail"].get("effect")) for coid in orders for e in events_of(result, coid)]
        assert ("fill", "duplicate") in effects  # the repeats did reach kit

    def test_a_fill_after_the_cancel_is_recorded(self, make_world):
        world = make_world("fill_after_cancel")
        result = self.run(world, FAR_LIMIT, "late", timeout=QUICK)
        [(coid, order)] = by_id(result).items()
        at_broker = world.executions("late")
        assert fills_by_exec_id(result) == at_broker
        assert order["filled_quantity"] == sum(at_broker.values()) > 0
        kinds = [e["kind"] for e in events_of(result, coid)]
        assert "fill" in kinds[kinds.index("cancelled"):]
        assert order["status"] == "CANCELLED" and order["remaining_quantity"] == 0
        assert result["status"] == "partial"

    def test_a_lost_connection_is_noticed_and_every_fill_is_recorded_once(self, make_world):
        world = make_world("disconnect")
        result = self.run(world, IB_BASKET, "lost")
        orders = by_id(result)
        said = [NOTE.match(note).group(1) for note in result["notes"] if NOTE.match(note)]
        assert {Notice.DISCONNECTED, Notice.RECONNECTED} <= set(said), result["notes"]
        assert {o["status"] for o in orders.values()} == {"FILLED"}
        assert fills_by_exec_id(result) == world.executions("lost")
        assert all(f["commission"] > 0 for f in result["fills"])
        assert world.placements("lost") == {coid: 1 for coid in orders}


CHECKS = {name for name in vars(BrokerContract) if name.startswith("test_")}


# ---- the mock broker --------------------------------------------------------------------------------------


class RepeatingMock(MockBroker):
    """The mock with every event it emits delivered twice: a broker that repeats itself."""

    def emit(self, event: BrokerEvent) -> None:
        super().emit(event)
        super().emit(event)


class InProcessWorld(World):
    """A broker object kit drives in this process; it lists every client_order_id it was sent."""

    broker: MockBroker | ScriptedBroker

    def __init__(self, db: Path):
        self.db = db

    def execute(self, targets: dict[str, list[Any]], run_key: str, **options: Any) -> dict[str, Any]:
        run = kit.execute(pd.DataFrame(targets), broker=self.broker, run_key=run_key, db=self.db, **options)
        return report(run, self.db)

    def cancel(self, run_key: str, timeout: float) -> dict[str, Any]:
        [run] = kit.cancel(run_key, broker=self.broker, db=self.db, timeout=timeout)
        return report(run, self.db)

    def placements(self, run_key: str) -> dict[str, int]:
        return {coid: n for coid, n in Counter(self.broker.submitted).items() if of_run(coid, run_key)}


class MockWorld(InProcessWorld):
    def __init__(self, db: Path, repeating: bool):
        super().__init__(db)
        self.broker = (RepeatingMock if repeating else MockBroker)(prices=PRICES, partial_fills=3)

    def executions(self, run_key: str) -> dict[str, float]:
        fills = [e.fill for w in self.broker.orders.values() for e in w.sent if isinstance(e, Execution)]
        return {f.exec_id: f.quantity for f in fills if of_run(f.client_order_id, run_key)}

    def working(self, client_order_id: str) -> bool:
        return not self.broker.orders[client_order_id].done


class TestMockBroker(BrokerContract):
    REJECT_REASON = "price_unavailable"
    CANNOT: ClassVar[dict[str, str]] = {
        "test_a_fill_after_the_cancel_is_recorded":
            "the mock's cancel is atomic: an order it confirms cancelled fills no more",
        "test_a_cancel_the_broker_never_confirms_leaves_the_order_working":
            "the mock confirms every cancel of a working order at once",
        "test_a_lost_connection_is_noticed_and_every_fill_is_recorded_once":
            "the mock lives in kit's process: there is no connection to lose",
    }

    def world(self, situation: Situation, db: Path) -> World:
        return MockWorld(db, repeating=situation == "duplicates")


# ---- the scripted broker, playing a small exchange ------------------------------------------------------


def exchange(order: OrderIntent) -> list[BrokerEvent]:
    """A market order fills in two executions with their commissions, a limit order rests, an unknown
    symbol is rejected: what a broker's session delivers, written out."""
    coid, now = order.client_order_id, utcnow()
    if order.symbol not in PRICES:
        return [Rejected(coid, now, "unknown symbol")]
    events: list[BrokerEvent] = [Accepted(coid, now, broker_order_id=f"s-{coid}")]
    if order.order_type == "MKT":
        half = order.quantity // 2
        for n, quantity in enumerate((half, order.quantity - half), start=1):
            exec_id = f"{coid}.{n}"
            fill = Fill(exec_id, coid, quantity, PRICES[order.symbol], now, currency=order.currency)
            events += [Execution(fill, now), Commission(exec_id, 1.0, order.currency, now, coid)]
    return events


def late_fill(client_order_id: str) -> list[BrokerEvent]:
    """One share filled after the cancel confirmation, at the far limit."""
    now = utcnow()
    exec_id = f"{client_order_id}.late"
    return [Execution(Fill(exec_id, client_order_id, 1.0, 1.0, now, currency="USD"), now),
            Commission(exec_id, 1.0, "USD", now, client_order_id)]


class ScriptedWorld(InProcessWorld):
    def __init__(self, db: Path, situation: Situation):
        super().__init__(db)
        script = exchange
        if situation == "duplicates":
            def script(order: OrderIntent) -> list[BrokerEvent]:
                return [event for event in exchange(order) for _ in range(2)]
        self.broker = ScriptedBroker(script, confirm_cancels=situation != "deaf_to_cancels", remember=True,
                                     after_cancel=late_fill if situation == "fill_after_cancel" else None)

    def executions(self, run_key: str) -> dict[str, float]:
        told = [e for coid, events in self.broker.told.items() if of_run(coid, run_key) for e in events]
        return {e.fill.exec_id: e.fill.quantity for e in told if isinstance(e, Execution)}

    def working(self, client_order_id: str) -> bool:
        told = self.broker.told.get(client_order_id, [])  # only FAR_LIMIT orders are asked about: no fills
        return bool(told) and not any(isinstance(e, Rejected | Cancelled | Execution) for e in told)


class TestScriptedBroker(BrokerContract):
    REJECT_REASON = "unknown symbol"
    HAS_PERM_ID = False  # its script gives orders a broker order id only
    CANNOT: ClassVar[dict[str, str]] = {
        "test_a_lost_connection_is_noticed_and_every_fill_is_recorded_once":
            "a scripted broker has no connection: a disconnect would be only what its script says",
    }

    def world(self, situation: Situation, db: Path) -> World:
        return ScriptedWorld(db, situation)


# ---- IB through the simulated gateway -----------------------------------------------------------------

# What each situation switches on in the gateway (reset after each check). disconnect_on is one-shot, and
# trips on a live Filled status: executions of earlier checks are replayed (execDetails) at every connect.
GATEWAY_FAULTS: dict[Situation, dict[str, Any]] = {
    "plain": {},
    "duplicates": {"duplicate_exec_details": True},
    "fill_after_cancel": {"fill_after_cancel": True},
    "disconnect": {"disconnect_on": "orderStatus:Filled"},
    "deaf_to_cancels": {},  # the gateway's cancelOrder handler is replaced: see IBGatewayContract.make_world
}


class IBWorld(World):
    def __init__(self, gw: Any, db: Path, drive: Callable[[dict[str, Any]], dict[str, Any]], client_id: int):
        self.gw, self.db, self.drive, self.client_id = gw, db, drive, client_id

    def execute(self, targets: dict[str, list[Any]], run_key: str, **options: Any) -> dict[str, Any]:
        return self.drive({"port": self.gw.port, "db": str(self.db), "run_key": run_key, "targets": targets,
                           "client_id": self.client_id, **options})

    def cancel(self, run_key: str, timeout: float) -> dict[str, Any]:
        return self.execute({}, run_key, action="cancel", timeout=timeout)

    def placements(self, run_key: str) -> dict[str, int]:
        return gateway_placements(self.gw, run_key)

    def executions(self, run_key: str) -> dict[str, float]:
        return gateway_executions(self.gw, run_key)

    def working(self, client_order_id: str) -> bool:
        return self.gw.call(lambda: self.gw.state.orders_by_ref(client_order_id)[0].is_working)


class IBGatewayContract(BrokerContract):
    """IB through one simulated gateway per class; each check arms its situation's faults, then disarms."""

    REJECT_REASON = "IB error 200"  # No security definition has been found for the request
    NATIVE_NOTICE_CODES = True
    LIBRARY: ClassVar[str]
    CLIENT_ID: ClassVar[int]

    @pytest.fixture(scope="class")
    @classmethod
    def gateway(cls) -> Iterator[Any]:
        with run_gateway_in_thread(GatewayConfig(seed=5)) as gw:
            yield gw

    @pytest.fixture(scope="class")
    @classmethod
    def drive(cls) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda spec: execute_on_ib({**spec, "library": cls.LIBRARY})

    @pytest.fixture(autouse=True)
    def _disarm(self, gateway: Any) -> Iterator[None]:
        yield
        gateway.call(setattr, gateway.gateway, "faults", Faults())
        gateway.call(vars(gateway.gateway._handlers).pop, "cancelOrder", None)  # its own again

    @pytest.fixture
    def make_world(self, request, tmp_path, gateway, drive) -> Callable[..., World]:
        reason = self.CANNOT.get(request.node.originalname)
        if reason:
            pytest.skip(f"{type(self).__name__} declares it cannot: {reason}")

        def make(situation: Situation = "plain") -> World:
            for knob, value in GATEWAY_FAULTS[situation].items():
                gateway.call(setattr, gateway.faults, knob, value)
            if situation == "deaf_to_cancels":  # IB never answers a cancel
                gateway.call(setattr, gateway.gateway._handlers, "cancelOrder", lambda conn, fields: None)
            return IBWorld(gateway, tmp_path / "kit.duckdb", drive, self.CLIENT_ID)

        return make


class TestIBAsyncGateway(IBGatewayContract):
    LIBRARY, CLIENT_ID = "ib_async", 31


class TestIBInsyncGateway(IBGatewayContract):
    """kit under .venv-insync: one driver process for the class reads specs and answers with reports."""

    LIBRARY, CLIENT_ID = "ib_insync", 32

    @pytest.fixture(scope="class")
    @classmethod
    def drive(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict], dict]]:
        python = require_insync()
        log = tmp_path_factory.mktemp("insync") / "driver.log"
        with log.open("w") as stderr:
            driver = subprocess.Popen([str(python), "-m", "tests.ib_driver", "--serve"], cwd=ROOT,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=stderr, text=True)

            def drive(spec: dict[str, Any]) -> dict[str, Any]:
                assert driver.stdin is not None and driver.stdout is not None
                driver.stdin.write(json.dumps({**spec, "library": cls.LIBRARY}) + "\n")
                driver.stdin.flush()
                for line in driver.stdout:
                    if line.startswith("REPORT "):
                        return json.loads(line.removeprefix("REPORT "))
                raise AssertionError(f"the ib_insync driver died: {log.read_text()[-3000:]}")

            try:
                yield drive
            finally:
                driver.stdin.close()  # type: ignore[union-attr]
                driver.wait(timeout=30)


def test_every_declared_inability_names_a_check_of_the_contract():
    """A renamed check must not leave a broker excused from it by a stale name."""
    for broker in (TestMockBroker, TestScriptedBroker, TestIBAsyncGateway, TestIBInsyncGateway):
        assert set(broker.CANNOT) <= CHECKS, broker.__name__


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
