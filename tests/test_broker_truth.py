"""The broker's record, not the ledger, decides what is sent (issue 13): against a simulated gateway each
test starts itself, a lost or wrong ledger, a gateway that rolls its order ids back, one that never comes
back, and a clientId already in use."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import kit
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.ledgers import fresh_database
from tests.support import FAR_LIMIT, IB_BASKET
from tests.test_ib_broker import by_id, drive, gateway_executions

MIXED = {  # two market orders that fill, one limit far from the market that rests
    "symbol": ["AAPL", "MSFT", "IBM"], "side": ["BUY", "SELL", "BUY"], "quantity": [30, 20, 10],
    "order_type": ["MKT", "MKT", "LMT"], "limit_price": [None, None, 1.0],
}


@pytest.fixture
def gateway():
    with run_gateway_in_thread(GatewayConfig()) as gw:
        yield gw


def placements(gw: Any) -> dict[str, int]:
    """New-order requests per orderRef that became an order at the gateway (id collisions excluded)."""
    refs = gw.call(lambda: [o.order_ref for o in gw.state.orders.values()])
    return {ref: refs.count(ref) for ref in refs}


def on_first(gw: Any, name: str, action, orders: int = 0) -> None:
    """Run `action` on the gateway's loop before it sends the first outbound message called `name` (once it
    has at least `orders` orders)."""
    server = gw.gateway
    original = server.send
    fired: list[bool] = []

    def send(conn: Any, msg: Any) -> None:
        if msg.name == name and not fired and len(server.state.orders) >= orders:
            fired.append(True)
            action(server)
        original(conn, msg)

    gw.call(setattr, server, "send", send)


def test_a_ledger_deleted_mid_run_or_replaced_never_resends(gateway, tmp_path, ledger_db, request):
    deleted: list[Path | str] = []

    def delete_ledger(server: Any) -> None:
        if isinstance(ledger_db, str):  # PostgreSQL: every table of the ledger dropped
            import psycopg

            # The run may be writing meanwhile, and PostgreSQL may pick the drop as the deadlock's victim:
            # nothing was dropped then, and the drop is made again.
            for attempt in range(5):
                try:
                    with psycopg.connect(ledger_db, autocommit=True) as con:
                        con.execute("DROP SCHEMA public CASCADE")
                        con.execute("CREATE SCHEMA public")
                    break
                except psycopg.errors.DeadlockDetected:
                    if attempt == 4:
                        raise
            deleted.append(ledger_db)
            return
        deleted.extend(tmp_path.glob("kit.duckdb*"))
        for path in deleted:
            path.unlink()

    on_first(gateway, "execDetails", delete_ledger)
    first = drive("ib_async", gateway, tmp_path, MIXED, timeout=1.0, on_timeout="leave", db=str(ledger_db))
    # The run notices the ledger is gone when it next reconnects to it and fails loudly (issue 15); if it
    # never let go of the file meanwhile, it finishes on the unlinked file. Either way, nothing is resent.
    assert "error" not in first or "LedgerIdentityError" in first["error"], first
    assert ledger_db in deleted  # the ledger went away while the run was trading
    # the same key again on what is left of the ledger, then on a ledger from another folder
    again = drive("ib_async", gateway, tmp_path, MIXED, timeout=1.0, on_timeout="leave", db=str(ledger_db))
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    other = str(elsewhere / "kit.duckdb") if isinstance(ledger_db, Path) else fresh_database(
        request.getfixturevalue("postgres_server"))
    wrong = drive("ib_async", gateway, elsewhere, MIXED, timeout=1.0, on_timeout="leave", db=other)
    assert placements(gateway) == {coid: 1 for coid in by_id(again)}  # 0 orders sent twice
    for result in (again, wrong):
        orders = by_id(result)
        assert any("adopted from the broker's record" in note for note in result["notes"]), result["notes"]
        assert orders["ib-test-AAPL-BUY"]["status"] == orders["ib-test-MSFT-SELL"]["status"] == "FILLED"
        assert orders["ib-test-IBM-BUY"]["status"] == "SUBMITTED"  # followed, still working at IB
        # the fills IB lists for these orders, each once
        assert {f["exec_id"]: f["quantity"] for f in result["fills"]} == gateway_executions(gateway)


def test_after_an_id_rollback_a_new_run_on_the_same_client_id_places_everything(gateway, tmp_path, ledger_db):
    first = drive("ib_async", gateway, tmp_path, IB_BASKET, run_key="early", db=str(ledger_db))
    assert first["status"] == "done"
    gateway.restart(roll_back_ids=True)  # nextValidId back to 1, the ids used stay used (103)
    second = drive("ib_async", gateway, tmp_path, IB_BASKET, run_key="later", db=str(ledger_db))
    orders = by_id(second)
    assert second["status"] == "done", second["notes"]
    assert {o["status"] for o in orders.values()} == {"FILLED"}
    assert any("id_collision" in note for note in second["notes"]), second["notes"]
    owner = gateway.call(lambda: {e.exec_id: e.order.order_ref for e in gateway.state.effective_executions()})
    assert all(owner[f["exec_id"]] == f["client_order_id"] for f in second["fills"])  # 0 booked across runs
    ledger = kit.ledger(ledger_db)
    early = ledger.fills(ledger.resolve_run("early"))
    assert sorted(early["exec_id"]) == sorted(f["exec_id"] for f in first["fills"])  # the first run intact
    assert all(owner[e] == c for e, c in zip(early["exec_id"], early["client_order_id"], strict=True))
    assert set(placements(gateway).values()) == {1}


def test_a_duplicate_order_id_is_placed_again_under_a_fresh_id_never_rejected(gateway, tmp_path):
    """Earlier orders that IB lists only as completed (no orderId): kit cannot see the ids they used, so
    the gateway refuses its first ids with 103 after a rollback."""
    symbols = [i.symbol for i in gateway.gateway.config.instruments if i.currency == "USD"]
    count = 12  # more orders (and ids) than the next run's requests and orders use
    targets = {"symbol": [symbols[n % len(symbols)] for n in range(count)], "side": ["BUY"] * count,
               "quantity": list(range(1, count + 1)), "order_type": ["LMT"] * count,
               "limit_price": [1.0] * count}
    drive("ib_async", gateway, tmp_path, targets, run_key="rested", timeout=0.3)  # cancelled at timeout
    gateway.restart(roll_back_ids=True)
    result = drive("ib_async", gateway, tmp_path, IB_BASKET, run_key="fresh")
    orders = by_id(result)
    assert {o["status"] for o in orders.values()} == {"FILLED"}, result["notes"]
    assert any("error 103" in note for note in result["notes"]), result["notes"]
    refused = gateway.call(lambda: dict(gateway.state.placements))
    assert any(refused[coid] > 1 for coid in orders)  # it did collide, and each went on under a new id
    assert all(placements(gateway)[coid] == 1 for coid in orders)


def test_a_gateway_that_never_comes_back_ends_the_run_with_orders_left_as_they_were(gateway, tmp_path,
                                                                                    ledger_db):
    timeout, window = 3.0, 1.0  # the gateway goes away before the timeout
    stopping: list[asyncio.Future] = []  # held: the loop keeps only a weak reference to a task
    on_first(gateway, "orderStatus", lambda server: stopping.append(asyncio.ensure_future(server.stop())),
             orders=len(MIXED["symbol"]))
    started = time.monotonic()
    result = drive("ib_async", gateway, tmp_path, MIXED, timeout=timeout, reconnect_for=window,
                   connect_timeout=1.0, db=str(ledger_db))
    assert time.monotonic() - started < timeout + window + 5
    orders = by_id(result)
    assert result["status"] == "disconnected", result["notes"]
    assert "CANCELLED" not in {o["status"] for o in orders.values()}  # kit never calls one cancelled
    # sent, and working or not yet acknowledged: IB's Submitted may be the message the gateway died before
    assert orders["ib-test-IBM-BUY"]["status"] in {"NEW", "SUBMITTED"}
    notes = " ".join(result["notes"])
    assert "may still be working" in notes and "kit reconcile" in notes and "ib-test" in notes
    runs = kit.ledger(ledger_db).runs()
    assert runs.iloc[0]["status"] == "disconnected" and runs.iloc[0]["ended_at"] is not None


def test_client_id_in_use_is_named(gateway, tmp_path):
    from ib_async import IB

    other = IB()

    async def hold() -> None:
        await other.connectAsync("127.0.0.1", gateway.port, clientId=17, timeout=5)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(hold())
        result = drive("ib_async", gateway, tmp_path, FAR_LIMIT, client_id=17, connect_timeout=2.0)
    finally:
        other.disconnect()
        loop.close()
    assert "clientId 17 is in use" in result["error"], result["error"]
    assert gateway.call(lambda: len(gateway.state.orders)) == 0


def test_a_listener_that_never_answers_the_handshake_is_reported_within_the_connect_timeout(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = drive("ib_async", type("Endpoint", (), {"port": port})(), tmp_path, FAR_LIMIT,
                       connect_timeout=1.0)
        took = time.monotonic() - started
    assert "never answered the API handshake within 1s" in result["error"], result["error"]
    assert took < 1.0 + 3  # the connect timeout, and kit's own start-up


def ledger_is_unique(db: Path | str, run_key: str) -> None:
    ledger = kit.ledger(db)
    events = ledger.events(ledger.resolve_run(run_key))
    assert events["seq"].is_unique
    assert ledger.orders()["client_order_id"].is_unique


SECOND = """
import json, sys
import pandas as pd
import kit
from kit.errors import RunKeyBusyError
spec = json.loads(sys.argv[1])
if spec["broker"] == "ib":
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings
    broker = IBBroker(IBSettings(port=spec["port"], client_id=spec["client_id"], connect_timeout=2))
else:
    broker = "mock"
try:
    kit.execute(pd.DataFrame(spec["targets"]), broker=broker, run_key=spec["run_key"], db=spec["db"],
                timeout=1, prices={"AAPL": 190.0, "MSFT": 410.0, "IBM": 185.0})
    print("ran")
except RunKeyBusyError as exc:
    print("refused:", exc)
"""


def second_process(**spec: Any) -> str:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SECOND, json.dumps(spec)], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_two_processes_on_one_run_key_at_ib(gateway, tmp_path, ledger_db):
    """The second process refuses at once, naming the holder, while the first follows its orders."""
    db = ledger_db
    answers: list[str] = []
    on_first(gateway, "execDetails", lambda server: answers.append(second_process(
        broker="ib", port=gateway.port, client_id=12, targets=MIXED, run_key="ib-test", db=str(db))))
    result = drive("ib_async", gateway, tmp_path, MIXED, timeout=1.0, db=str(db))
    assert answers and answers[0].startswith("refused:"), answers
    assert f"pid {os.getpid()}" in answers[0] and "started" in answers[0]
    assert placements(gateway) == {coid: 1 for coid in by_id(result)}
    at_gateway = gateway.call(lambda: {o.order_ref: o.status for o in gateway.state.orders.values()})
    assert {c: o["status"].title() for c, o in by_id(result).items()} == at_gateway
    ledger_is_unique(db, "ib-test")


def test_two_processes_on_one_run_key_with_the_mock(ledger_db):
    from kit.brokers.mock import MockBroker

    db = ledger_db
    answers: list[str] = []

    class Watched(MockBroker):
        async def submit(self, order):
            if not answers:  # while this process holds the run key
                answers.append(await asyncio.to_thread(
                    second_process, broker="mock", targets=MIXED, run_key="mock-key", db=str(db)))
            await super().submit(order)

    import pandas as pd

    broker = Watched({"AAPL": 190.0, "MSFT": 410.0, "IBM": 185.0})
    run = kit.execute(pd.DataFrame(MIXED), broker=broker, run_key="mock-key", db=db, timeout=0.5)
    assert answers[0].startswith("refused:") and f"pid {os.getpid()}" in answers[0], answers
    assert sorted(broker.submitted) == sorted(run.orders["client_order_id"])  # one order per id
    ledger_is_unique(db, "mock-key")
    # the lock went with the run: the key runs again (and sends nothing twice)
    again = kit.execute(pd.DataFrame(MIXED), broker=broker, run_key="mock-key", db=db, timeout=0.5)
    assert sorted(broker.submitted) == sorted(again.orders["client_order_id"])


def test_a_dead_holder_does_not_block(tmp_path):
    import signal
    import subprocess
    import sys

    from kit.runlock import RunLock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from kit.runlock import RunLock; "
                               "lock = RunLock('k').acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(kit.KitError, match=f"pid {holder.pid}"):
        RunLock("k").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with RunLock("k"):  # the kernel let go of the dead holder's lock
        pass


def test_messages_match_by_order_ref_then_perm_id_and_order_id_only_for_this_connection():
    from datetime import datetime

    from kit.brokers.ib_events import Translator
    from kit.model import Execution, StatusUpdate

    at = datetime(2026, 12, 1, 15)
    mine = Translator(client_id=17)
    mine.track({"later-AAPL-BUY"})
    mine.placed("later-AAPL-BUY", 1)  # the id an earlier run on clientId 17 also used, before a rollback

    def execution(order_ref: str, perm_id: int, exec_id: str) -> list:
        return mine.execution(exec_id=exec_id, order_id=1, perm_id=perm_id, client_id=17, order_ref=order_ref,
                              shares=10, price=1.0, time=at, currency="USD", exchange="X", at=at)

    assert mine.open_order(1, 17, 500, "early-AAPL-BUY", "Submitted", at) == []  # another run's order
    assert execution("early-AAPL-BUY", 500, "e.01.01") == []  # its fill, same orderId: never this run's
    assert mine.order_status(1, "Filled", 500, 17, "", at) == []  # its status, known by its permId
    assert mine.commission("e.01.01", 1.0, "USD", at) == []
    assert mine.highest_order_id == 1
    ours = mine.open_order(1, 17, 600, "later-AAPL-BUY", "Submitted", at)
    assert any(isinstance(e, StatusUpdate) for e in ours)
    assert [type(e) for e in execution("later-AAPL-BUY", 600, "f.01.01")] == [Execution]
    mine.new_connection()  # the orderId no longer identifies the order; its permId still does
    assert mine.order_status(1, "Submitted", 0, 17, "", at) == []
    assert mine.order_status(1, "Submitted", 600, 17, "", at)


def test_the_mock_adopts_what_it_already_has_when_the_ledger_is_new(tmp_path, ledger_kind, request):
    import pandas as pd

    from kit.brokers.mock import MockBroker

    def new_ledger(name: str) -> Path | str:
        if ledger_kind == "duckdb":
            return tmp_path / f"{name}.duckdb"
        return fresh_database(request.getfixturevalue("postgres_server"))

    broker = MockBroker({"AAPL": 190.0, "MSFT": 410.0, "IBM": 185.0})
    first = kit.execute(pd.DataFrame(MIXED), broker=broker, run_key="m", db=new_ledger("a"),
                        timeout=0.3, on_timeout="leave")
    again = kit.execute(pd.DataFrame(MIXED), broker=broker, run_key="m", db=new_ledger("b"),
                        timeout=0.3, on_timeout="leave")
    assert sorted(broker.submitted) == sorted(first.orders["client_order_id"])  # nothing sent twice
    assert any("adopted from the broker's record" in note for note in again.notes), again.notes
    assert list(again.orders["status"]) == list(first.orders["status"])
