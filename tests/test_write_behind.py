"""Writes behind the event loop (kit.recorder.Recorder.write_behind): while a run follows its orders, each
batch is written on a worker thread and the loop goes on, so IB's pacing timers and the broker's messages
are not held up by a transaction. What must hold whatever the timing: nothing recorded meanwhile is lost
or reordered, a batch the ledger could not take goes out again in front of what came after it, and the
file ends up as plain flushes would leave it.
"""

from __future__ import annotations

import asyncio
import threading

import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kit
from kit.brokers.mock import MockBroker
from kit.errors import LedgerIdentityError, LedgerWriteError
from kit.model import AmendAccepted, Cancelled, StatusUpdate, Submitted
from kit.recorder import Recorder, order_row
from kit.state import OrderBook
from kit.store import SMALL_BATCH, Ledger
from tests.test_same_terms import COID, an_order, apply, as_read, at, file_orders, fill

PRICES = {"AAPL": 190.0, "MSFT": 410.0, "NVDA": 120.0}


class Gate:
    """Holds the next write on the writer thread until the test lets it go, then lets it succeed or fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failure: Exception | None = None):
        self.started, self.go, self.failure = threading.Event(), threading.Event(), failure
        write = Ledger.write

        def gated(ledger: Ledger, batch):
            if threading.current_thread().name.startswith("kit-ledger-writer"):
                self.started.set()
                assert self.go.wait(10), "the test never let the write go"
                if self.failure is not None:
                    failure, self.failure = self.failure, None
                    raise failure
            return write(ledger, batch)

        monkeypatch.setattr(Ledger, "write", gated)

    async def held(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 10), "no write began on the writer thread"


def planned(ledger: Ledger, orders: list) -> tuple[Recorder, OrderBook]:
    recorder, book = Recorder(ledger, "r1"), OrderBook()
    for order in orders:
        book.add(order)
        recorder.order(order, "planned", at(0))
    return recorder, book


def file_events(db) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT seq, kind, client_order_id FROM order_events ORDER BY seq").fetchall()
    finally:
        con.close()


def test_the_event_loop_goes_on_while_a_run_writes_what_it_followed(db, monkeypatch):
    """Every write while following is made with the loop free: a callback handed to the loop from inside
    the write runs before the write ends (it could not if the write held the loop, as it did before)."""
    loops: list[asyncio.AbstractEventLoop] = []
    free_during_write: list[bool] = []
    write = Ledger.write

    class Broker(MockBroker):
        async def connect(self) -> None:
            loops.append(asyncio.get_running_loop())
            await super().connect()

    def probed(ledger: Ledger, batch):
        if loops and threading.current_thread().name.startswith("kit-ledger-writer"):
            ran = threading.Event()
            loops[0].call_soon_threadsafe(ran.set)
            free_during_write.append(ran.wait(10))
        return write(ledger, batch)

    monkeypatch.setattr(Ledger, "write", probed)
    targets = pd.DataFrame({"symbol": list(PRICES), "side": "BUY", "quantity": [10, 20, 30]})
    run = kit.execute(targets, broker=Broker(prices=PRICES, partial_fills=3), run_key="behind", db=db,
                      timeout=30)
    assert run.status == "done"
    assert free_during_write and all(free_during_write)
    assert run.fills["quantity"].sum() == 60
    assert len(_fills(db)) == 9
    assert sum(row["filled_quantity"] for row in file_orders(db).values()) == 60


@pytest.mark.parametrize("many", [False, True])  # small batches (lists of values) and big ones (frames)
@pytest.mark.parametrize("outcome", ["written", "refused", "lost"])
def test_what_is_recorded_during_a_write_goes_with_the_next_flush_in_order(db, monkeypatch, outcome, many):
    """Events and an amended order's row recorded while a write is under way; the write succeeds, fails
    (its batch goes out again, in front: the amended terms with it) or finds the ledger replaced (raised,
    nothing more written)."""
    failure = {"written": None, "refused": LedgerWriteError("no space left on device"),
               "lost": LedgerIdentityError("the ledger was replaced")}[outcome]
    amended = an_order()
    orders = [amended, *(an_order(f"k-S{i}-BUY") for i in range(SMALL_BATCH if many else 1))]
    with Ledger(db) as ledger:
        recorder, book = planned(ledger, orders)
        assert recorder.flush()
        gate = Gate(monkeypatch, failure)

        async def follow() -> None:
            apply(recorder, book, *(Submitted(o.client_order_id, at(1)) for o in orders),
                  AmendAccepted(COID, at(2), {"limit_price": 9.5}, 1))
            behind = asyncio.create_task(recorder.write_behind())
            await gate.held()
            for number, order in enumerate(orders):
                apply(recorder, book, *fill(order, f"x{number}", 30.0, 3))
            recorder.order(amended, "amend_noted", at(3))  # a row put while the write is under way
            gate.go.set()
            await behind

        if outcome == "lost":
            with pytest.raises(LedgerIdentityError):
                asyncio.run(follow())
            assert not recorder.flush()
            return
        asyncio.run(follow())
        assert not recorder.write_error if outcome == "written" else recorder.write_error is failure
        assert recorder.flush()
    n = len(orders)
    events = file_events(db)
    assert [kind for _, kind, _ in events] == (["planned"] * n + ["submitted"] * n + ["amend_accepted"]
                                               + ["fill", "commission"] * n + ["amend_noted"])
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    held = file_orders(db)
    assert held == {o.client_order_id: as_read(order_row(o)) for o in orders}
    assert held[COID]["limit_price"] == 9.5 and held[COID]["filled_quantity"] == 30.0


def test_a_flush_while_a_write_is_under_way_waits_for_it_and_keeps_the_order(db, monkeypatch):
    """Another task's flush (a repricer's amendment, the engine closing) and a cancelled write_behind: the
    write under way ends first and is settled by the flush, then the flush writes what came after."""
    order = an_order()
    with Ledger(db) as ledger:
        recorder, book = planned(ledger, [order])
        gate = Gate(monkeypatch, LedgerWriteError("the disk is full"))

        async def interrupted() -> None:
            apply(recorder, book, Submitted(COID, at(1)))
            behind = asyncio.create_task(recorder.write_behind())
            await gate.held()
            behind.cancel()  # the user pressed stop while the batch was being written
            with pytest.raises(asyncio.CancelledError):
                await behind
            apply(recorder, book, Cancelled(COID, at(2)))
            gate.go.set()
            assert recorder.flush()  # settles the failed write: its batch goes first, with this one

        asyncio.run(interrupted())
    assert [kind for _, kind, _ in file_events(db)] == ["planned", "submitted", "cancelled"]
    assert file_orders(db) == {COID: as_read(order_row(order))}


# Each step of a recorder's life: events applied, a plain flush, a write behind with events recorded while
# it is under way, and either kind failing (the disk full: the batch is kept).
STEPS = st.lists(st.tuples(st.sampled_from(["events", "flush", "behind", "flush_fails", "behind_fails"]),
                           st.integers(0, 5)), min_size=1, max_size=12)


def _stream(step: int, orders: list) -> list:
    order = orders[step % len(orders)]
    coid = order.client_order_id
    return [[Submitted(coid, at(step))], [StatusUpdate(coid, at(step), "Submitted", str(step))],
            list(fill(order, f"{coid}-x{step}", 1.0, step)),
            [AmendAccepted(coid, at(step), {"limit_price": 9.0 + step / 10}, step + 1)],
            [Cancelled(coid, at(step))], []][step]


@settings(max_examples=40, deadline=None)
@given(STEPS)
def test_any_mix_of_flushes_writes_behind_and_failed_writes_leaves_the_file_as_plain_flushes(
        tmp_path_factory, steps):
    def life(db, behind_ok: bool) -> None:
        orders = [an_order(f"k-S{i}-BUY") for i in range(3)]
        with Ledger(db) as ledger:
            recorder, book = planned(ledger, orders)

            async def go() -> None:
                for number, (kind, step) in enumerate(steps):
                    apply(recorder, book, *_stream(step, orders))
                    meanwhile = _stream((step + number) % 6, orders)  # while a write behind is under way
                    if kind == "events":
                        continue
                    if not behind_ok:  # the reference: the same events, plain flushes that all succeed
                        if kind.startswith("behind"):
                            apply(recorder, book, *meanwhile)
                        assert recorder.flush()
                        continue
                    fails = kind.endswith("_fails")
                    ledger.failing = fails
                    if kind.startswith("flush"):
                        assert recorder.flush() or fails
                        continue
                    ledger.hold = threading.Event()
                    behind = asyncio.create_task(recorder.write_behind())
                    await asyncio.to_thread(ledger.started.wait, 10)
                    apply(recorder, book, *meanwhile)
                    ledger.hold.set()
                    await behind
                ledger.failing = False
                assert recorder.flush()

            asyncio.run(go())

    reference, mixed = (tmp_path_factory.mktemp("w") / "kit.duckdb" for _ in range(2))
    with _FlakyLedger():
        life(reference, behind_ok=False)
        life(mixed, behind_ok=True)
    assert file_orders(mixed) == file_orders(reference)
    assert _fills(mixed) == _fills(reference)
    assert [e[1:] for e in file_events(mixed)] == [e[1:] for e in file_events(reference)]


class _FlakyLedger:
    """Ledger.write failing on demand (`ledger.failing`), and held on the writer thread until
    `ledger.hold` is set; `ledger.started` says a write began there."""

    def __enter__(self) -> None:
        self.write = write = Ledger.write

        def flaky(ledger: Ledger, batch):
            if threading.current_thread().name.startswith("kit-ledger-writer"):
                ledger.started.set()
                assert ledger.hold.wait(10)
                ledger.started.clear()
            if getattr(ledger, "failing", False):
                raise LedgerWriteError("no space left on device")
            return write(ledger, batch)

        Ledger.write = flaky  # type: ignore[method-assign]
        Ledger.started = threading.Event()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        Ledger.write = self.write  # type: ignore[method-assign]
        del Ledger.started  # type: ignore[attr-defined]


def _fills(db) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT exec_id, quantity, price, commission FROM fills ORDER BY exec_id"
                           ).fetchall()
    finally:
        con.close()
