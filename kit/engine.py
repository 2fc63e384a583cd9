"""The engine: send a plan through a broker, fold the broker's events into orders, record everything.

The imperative shell around kit.state. It waits on the broker's event queue, never on a timer that checks
"is it filled yet": a run ends when every order is done by its executions, or when its timeout says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

import pandas as pd

from kit.amending import Reprice, amend_one, start_repricing
from kit.brokers.base import RUN_NOTICES, Broker, Notice
from kit.clock import utcnow
from kit.config import halted
from kit.crashpoints import crash_point
from kit.errors import (
    BrokerMessageError,
    BrokerUnavailableError,
    HaltedError,
    LiveAccountError,
    PayloadConflictError,
    RunInterrupted,
)
from kit.ids import run_id_for
from kit.instruments import key_of
from kit.model import PAYLOAD_FIELDS, BrokerNotice, Event, Order, Rejected, RunStatus, Status, Submitted
from kit.planner import Plan
from kit.recorder import Recorder, fill_row, order_row
from kit.state import OrderBook, run_status
from kit.store import FILL_COLUMNS, ORDER_COLUMNS, Ledger, frame

log = logging.getLogger("kit.engine")
OnTimeout = Literal["cancel", "leave"]
# Seconds without broker events after which a run lets go of the ledger file (DuckDB admits one process),
# so a reader of another process gets in. While events keep coming at a rhythm, the run waits for twice the
# last gap between them instead (at most HOLD_MAX): a fill every 0.4 s keeps the connection, since a
# reconnect costs tens of ms (open, identity and schema checks). Counted by the event loop, never slept.
IDLE_RELEASE = 0.25
HOLD_MAX = 1.0
# Events applied between two writes at most: bounds the rows a burst holds in memory (each write is one
# transaction, ~10-20 ms here, so a few more of them cost little).
MAX_BATCH = 20_000
# Seconds a run keeps listening after its cancels are confirmed, for fills that raced the cancel.
LATE_FILL_GRACE = 0.5


@dataclass
class RunInfo:
    """What the runs row records about where a run came from."""

    notebook: str | None = None
    notebook_hash: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    git_revision: str | None = None
    output_path: str | None = None


@dataclass
class Run:
    """The outcome of kit.execute: the run's status with its orders and fills as the ledger has them."""

    run_id: str
    run_key: str
    status: str
    orders: pd.DataFrame
    fills: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        filled = int((self.orders["status"] == Status.FILLED).sum()) if len(self.orders) else 0
        lines = [f"run {self.run_key} ({self.run_id}): {self.status}",
                 f"  orders: {len(self.orders)} ({filled} filled)   fills: {len(self.fills)}"]
        if len(self.orders):
            counts = self.orders["status"].value_counts().sort_index()
            lines.append("  by status: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from kit.display import run_html

        return run_html(self)


class Engine:
    def __init__(self, plan: Plan, broker: Broker, ledger: Ledger, *, timeout: float = 60.0,
                 on_timeout: OnTimeout = "cancel", cancel_timeout: float = 10.0, allow_live: bool = False,
                 approve: str | None = None, dry_run: bool = False, info: RunInfo | None = None,
                 observer: Callable[[Iterable[Order]], None] | None = None, reprice: Reprice | None = None):
        if on_timeout not in ("cancel", "leave"):
            raise ValueError(f"on_timeout must be 'cancel' or 'leave', not {on_timeout!r}")
        self.plan, self.broker, self.ledger = plan, broker, ledger
        self.timeout, self.on_timeout, self.cancel_timeout = timeout, on_timeout, cancel_timeout
        self.allow_live, self.approve, self.dry_run = allow_live, approve, dry_run
        self.info = info or RunInfo()
        self.run_id = run_id_for(plan.run_key)
        self.book = OrderBook()
        # The broker's events, in arrival order. A deque and one wake-up per wait rather than an
        # asyncio.Queue, whose put and get cost more than the fold of an event.
        self.events: deque[Event] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._last_arrival: float | None = None  # loop time events last arrived, and the gap before it
        self._gap: float | None = None
        self.open: set[str] = set()  # orders at the broker not settled yet: working or missing a commission
        self.notes: list[str] = []
        # Called with the run's orders after each batch of events is applied (kit.progress shows them).
        self.observer = observer
        self.stopping = False  # an interrupt (or a cancel wait it cut short) is being dealt with
        self.lost = False  # the broker went away and did not come back within its reconnect window
        self.not_working: set[str] = set()  # orders the broker says it can no longer cancel (e.g. IB: Filled)
        self.reprice = reprice  # walks resting limit orders toward the touch (kit.amending)
        self.amend_outcome: tuple[str, str] = ("", "")  # kit.amend: accepted/refused/unconfirmed, and why

    # ---- the run -------------------------------------------------------------------------------------
    async def run(self) -> Run:
        """Execute the plan (or, with dry_run, record it and send nothing).

        Orders of this run that never reached a broker are plans, not orders: the plan executed now
        replaces them (an unsent order it does not contain is superseded, never sent). Orders that did reach
        a broker are followed, never changed and never sent again.
        """
        previous = self.ledger.load_orders(self.run_id)
        self._check_payloads(previous)  # before anything is written
        self._open_run(previous, "run_planned" if self.dry_run else None)
        now = utcnow()
        planned = {intent.client_order_id for intent in self.plan.intents}
        for order in previous:
            if not order.at_broker and order.status is Status.NEW and order.client_order_id not in planned:
                self._apply(Rejected(order.client_order_id, now, "superseded: not in the plan executed "
                                     f"(hash {self.plan.hash}); never sent"))
        for intent, breaches in zip(self.plan.intents, self.plan.breaches, strict=True):
            existing = self.book.orders.get(intent.client_order_id)
            if existing is not None and not (not existing.at_broker and (existing.intent != intent or
                                                                         existing.status is not Status.NEW)):
                continue
            order = Order(intent=intent, run_id=self.run_id, created_at=now, updated_at=now)
            self.book.add(order)
            self.recorder.order(order, "replanned" if existing else "planned", now)
            if breaches:  # stopped by risk: recorded with the limit that stopped it, never sent
                self._apply(Rejected(order.client_order_id, now, "risk: " + "; ".join(breaches)))
            if len(self.recorder.batch) >= MAX_BATCH:  # a big plan is written a bounded batch at a time
                self.recorder.flush()
        self.recorder.flush()
        return await self._guarded(self._what_if() if self.dry_run else self._trade())

    async def amend_working(self, client_order_id: str, changes: dict[str, Any], timeout: float) -> Run:
        """kit.amend: change one working order's terms through the broker and wait for its answer."""
        self._open_run(self.ledger.load_orders(self.run_id), "amend")
        return await self._guarded(amend_one(self, client_order_id, changes, timeout))

    async def cancel_working(self) -> Run:
        """The kill switch: cancel this run's working orders through the broker and wait for its word."""
        self._open_run(self.ledger.load_orders(self.run_id), "kill_switch")
        return await self._guarded(self._cancel_run())

    def _open_run(self, previous: list[Order], kind: str | None) -> None:
        self.recorder = Recorder(self.ledger, self.run_id)
        self.notes = self.recorder.notes
        self._start_run(kind, resuming=bool(previous))
        for order in previous:
            self.book.add(order)

    async def _guarded(self, work: Any) -> Run:
        error: BaseException | None = None
        try:
            await work
        except asyncio.CancelledError:  # interrupted: the working orders were dealt with (_stop_following)
            error = RunInterrupted(self._interruption())
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(error)
            if isinstance(error, RunInterrupted):
                error.run = self._result()
        return self._result()

    async def _connected(self) -> None:
        self.broker.bind(self._receive)
        self.recorder.flush()
        self.ledger.release()  # a connect can take its whole timeout: nobody waits for the ledger meanwhile
        await self.broker.connect()
        self.recorder.run(account=self.broker.account or None)

    async def _disconnect(self) -> None:
        """The broker is closed whatever happens to the ledger meanwhile (a lost ledger raises once)."""
        try:
            self._drain()
            self.recorder.flush()
        finally:
            try:
                await self.broker.close()
            finally:  # what the broker said while closing (e.g. a re-check's verdict) is recorded too
                self._drain()
                self.recorder.flush()

    async def _what_if(self) -> None:
        """Dry run: ask the broker what the orders would cost (IB: margin and commission), send nothing."""
        orders = [o for o in self.book.orders.values() if not o.at_broker and o.can_fill]
        if not orders:
            return
        await self._connected()
        try:
            await self.broker.prepare([o.intent for o in orders])
            for order in orders:
                estimate = await self.broker.what_if(order.intent)
                self.recorder.order(order, "what_if", utcnow(), **estimate)
        finally:
            await self._disconnect()

    async def _cancel_run(self) -> None:
        working = [o for o in self.book.orders.values() if o.working]
        if not working:
            self.notes.append("no working orders to cancel")
            return
        await self._connected()
        try:
            known = await self.broker.sync(working)
            self._drain()
            for order in working:
                if order.client_order_id not in known:
                    self.recorder.order(order, "unknown_at_broker", utcnow())
                    self.notes.append(f"{order.client_order_id}: the broker does not list it; not cancelled")
            self.open.update(c for c in known if self.book.orders[c].working)
            await self._cancel([self.book.orders[c] for c in sorted(self.open)], "kill switch")
        finally:
            await self._disconnect()

    async def _trade(self) -> None:
        orders = list(self.book.orders.values())
        # A cancelled order is asked about again too: IB can fill it after confirming the cancel.
        to_sync = [o for o in orders if o.at_broker and (not o.settled or o.status is Status.CANCELLED)]
        to_send = [o for o in orders if not o.at_broker and o.can_fill]
        if not to_sync and not to_send:
            return
        await self._connected()
        try:
            try:
                self._check_account()
                to_send = await self._resume(to_sync, to_send)
                if to_send:
                    halt = halted()
                    if halt:
                        raise HaltedError(f"the halt switch is on ({halt}); {len(to_send)} order(s) not sent")
                    await self.broker.prepare([o.intent for o in to_send])
                    await self._submit(to_send)
                loop = asyncio.get_running_loop()
                with start_repricing(self):
                    followed = await self._follow(loop.time() + self.timeout)
                if not followed and not self.lost:
                    await self._on_timeout()
            except asyncio.CancelledError:
                if not self.stopping:
                    await self._stop_following()
                raise
        except BrokerUnavailableError as exc:  # the broker went away after orders may have reached it
            self.lost = True
            self.recorder.note("broker_lost", utcnow(), error=str(exc))
        finally:
            if self.lost:
                self._note_lost()
            await self._disconnect()

    # ---- interrupts: stop means stop ------------------------------------------------------------------
    async def _stop_following(self) -> None:
        """The user pressed stop: cancel the working orders and wait, cancel_timeout at most, for the
        broker's word. A second interrupt ends the wait (see _cancel) and leaves them working."""
        self.stopping = True
        self._drain()
        working = [self.book.orders[c] for c in sorted(self.open) if self.book.orders[c].working]
        self.notes.append(f"interrupted by the user: {len(working)} working order(s) to cancel")
        await self._cancel(working, "interrupted")

    def _leave_working(self, orders: list[Order], why: str) -> None:
        left = [o for o in orders if o.working]
        for order in left:
            self.recorder.order(order, "left_working", utcnow(), why="interrupted again")
        self.notes.append(f"interrupted again: stopped waiting for the broker; {len(left)} order(s) left "
                          "working (no cancel confirmed: they may still fill; see `kit reconcile`, "
                          "`kit cancel`)")
        if len(orders) > len(left):
            self.notes.append(f"{len(orders) - len(left)} working order(s) cancelled ({why})")
        self.recorder.flush()
        self.stopping = True

    def _interruption(self) -> str:
        working = sum(1 for o in self.book.orders.values() if o.working)
        cancelled = sum(1 for o in self.book.orders.values() if o.status is Status.CANCELLED)
        state = (f"{working} order(s) left working at the broker" if working
                 else "no order is left working at the broker")
        return (f"run {self.plan.run_key} stopped by an interrupt: {state}; {cancelled} cancelled "
                "(each confirmed by the broker)")

    def _note_lost(self) -> None:
        working = [o for o in self.book.orders.values() if o.working]
        self.notes.append(
            f"the connection to the broker was lost and not regained; {len(working)} order(s) may still be "
            "working at the broker and keep their last known state here (kit marks none cancelled). Follow "
            f"them by running run_key {self.plan.run_key!r} again, or with `kit reconcile`")

    def _check_account(self) -> None:
        """Nothing reaches a live account by accident: it takes KIT_ALLOW_LIVE and this plan's hash."""
        if self.broker.is_paper:
            return
        account = self.broker.account
        if not self.allow_live:
            raise LiveAccountError(f"account {account} is not a paper account; nothing was sent. "
                                   "Set KIT_ALLOW_LIVE=1 and pass approve=<plan hash> to trade it.")
        if self.approve != self.plan.hash:
            given = f"approve={self.approve!r} does not match" if self.approve else "no approve= given for"
            raise LiveAccountError(f"live account {account}: {given} this plan (hash {self.plan.hash}); "
                                   "review the plan and pass its hash as approve=. Nothing was sent.")

    async def _resume(self, sent: list[Order], unsent: list[Order]) -> list[Order]:
        """List the broker before anything is sent, on a first run as on a resume: the broker's record, not
        the ledger, decides what goes out. Returns the orders to send now.

        An order the broker lists under its client_order_id (IB: orderRef) is followed, never sent again,
        whatever the ledger says: a deleted, fresh or wrong ledger adopts the broker's record. An order kit
        handed over today that the broker, after a complete listing, does not know never reached it (a
        crash between the ledger write and the send): it is sent now. Anything else unknown is flagged and
        left alone.
        """
        known = await self.broker.sync(sent + unsent)
        now = utcnow()
        resend = []
        for order in sent:
            if order.client_order_id in known:
                self.open.add(order.client_order_id)
            elif order.status is Status.CANCELLED:
                continue  # asked about only for late fills; a broker that forgot it has none to give
            elif (self.broker.sync_is_complete and not order.fills and order.status is Status.NEW
                  and order.submitted_at is not None and order.submitted_at.date() == now.date()):
                self.recorder.order(order, "resend", now, reason="the broker has no record of this order")
                order.submitted_at = None
                resend.append(order)
            else:
                self.recorder.order(order, "unknown_at_broker", now)
                self.notes.append(f"{order.client_order_id} was sent earlier but the broker does not list "
                                  "it; it was not sent again")
        adopted = [o for o in unsent if o.client_order_id in known]
        for order in adopted:  # before the listing's events are applied: they are about a sent order
            self.recorder.order(order, "adopted", now, reason="the broker already has this order")
            self._apply(Submitted(order.client_order_id, now, None))
            self.open.add(order.client_order_id)
        if adopted:
            self.notes.append(f"{len(adopted)} order(s) the ledger had not sent were already at the broker "
                              "(same client_order_id): adopted from the broker's record, not sent again")
        to_send = resend + [o for o in unsent if o.client_order_id not in known]
        if to_send and not self.broker.orders_listed:
            for order in to_send:
                self.recorder.order(order, "not_sent", now, reason="the broker's listing was incomplete")
            self.notes.append(f"the broker did not finish listing its orders: {len(to_send)} order(s) not "
                              f"sent, since it may have them already; run_key {self.plan.run_key!r} again")
            to_send = []
        self._drain()
        self.open = {c for c in self.open if not self.book.orders[c].settled}  # a cancelled one may be done
        self.recorder.flush()
        return to_send

    async def _submit(self, orders: list[Order]) -> None:
        """Write-ahead, then send, MAX_BATCH orders at a time: every order's `submitted` event is durable
        before the broker sees the order. Between two such batches, what the broker said about the sent
        ones is applied, so a big basket's events are never all in memory at once."""
        for start in range(0, len(orders), MAX_BATCH):
            if start:
                await asyncio.sleep(0)  # the broker's callbacks run: its events about the orders just sent
                self._drain()
            batch = orders[start:start + MAX_BATCH]
            now = utcnow()
            for order in batch:  # write-ahead: the ledger knows an order was handed over before the broker
                arrival = self.broker.reference_price(key_of(order.intent))
                self._apply(Submitted(order.client_order_id, now, arrival))
            crash_point("engine.before_submitted_write")
            if not self.recorder.flush():  # not durable (a full disk): a resume could not know of them
                log.error("%d order(s) not sent: %s", len(orders) - start, self.recorder.write_error)
                return
            for order in batch:
                crash_point("engine.before_submit")
                self.open.add(order.client_order_id)
                await self.broker.submit(order.intent)

    async def _follow(self, deadline: float, done: Callable[[], bool] | None = None) -> bool:
        """Apply events until `done` (by default: no order can change any more); False if the deadline came
        first."""
        loop = asyncio.get_running_loop()
        done = done or (lambda: not self.open)
        while not done():
            if self.lost:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            hold = self._hold()
            idle = self.ledger.connected and remaining > hold
            if not self.events and not await self._arrival(hold if idle else remaining):
                if idle:  # quiet for a while: let a notebook or another run at the ledger meanwhile
                    self.ledger.release()
                    continue
                return False
            self._arrived(loop.time())
            self._drain()
            crash_point("engine.applied_not_written")
            await self.recorder.write_behind()
            if self.observer is not None:
                self.observer(self.book.orders.values())
        return True

    async def _on_timeout(self) -> None:
        working = [self.book.orders[c] for c in sorted(self.open) if self.book.orders[c].working]
        if self.on_timeout == "leave":
            for order in working:
                self.recorder.order(order, "left_working", utcnow(), timeout=self.timeout)
            if working:
                self.notes.append(f"{len(working)} order(s) left working at the broker after the "
                                  f"{self.timeout:g}s timeout (on_timeout='leave')")
            return
        await self._cancel(working, f"{self.timeout:g}s timeout")

    async def _cancel(self, orders: list[Order], why: str) -> None:
        """Ask for cancels and wait for the broker's confirmations; never mark one cancelled ourselves."""
        if not orders:
            return
        try:
            for order in orders:
                self.recorder.order(order, "cancel_requested", utcnow(), why=why)
                await self.broker.cancel(order.client_order_id)
            self.recorder.flush()
            if self.stopping and _cancels_requested() > 1:  # a second interrupt came before the wait did
                raise asyncio.CancelledError
            now = asyncio.get_running_loop().time()
            await self._follow(now + self.cancel_timeout, done=lambda: not self._awaiting_cancel(orders))
            if any(not o.working for o in orders):
                # A fill racing a cancel can come after the confirmation: listen a moment longer, or it is
                # left to a later reconcile.
                await self._follow(asyncio.get_running_loop().time() + LATE_FILL_GRACE, done=lambda: False)
        except asyncio.CancelledError:  # interrupted while waiting: stop waiting, say what is left working
            self._leave_working(orders, why)
            raise
        unconfirmed = self._awaiting_cancel(orders)
        for order in orders:
            if order.working and order.client_order_id in self.not_working:
                self.notes.append(f"{order.client_order_id}: the broker says it is no longer working, though "
                                  "kit counts less filled; not cancelled (see the order's events)")
        for order in unconfirmed:
            self.recorder.order(order, "cancel_unconfirmed", utcnow())
        if unconfirmed:
            self.notes.append(f"{len(unconfirmed)} cancel(s) not confirmed by the broker within "
                              f"{self.cancel_timeout:g}s; those orders may still fill: check `kit reconcile`")
        self.notes.append(f"{len(orders) - len(unconfirmed)} working order(s) cancelled ({why})")

    def _awaiting_cancel(self, orders: list[Order]) -> list[Order]:
        """Orders whose cancel confirmation is still to come: working, and not reported done by the broker."""
        return [o for o in orders if o.working and o.client_order_id not in self.not_working]

    # ---- event folding -------------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        if isinstance(event, BrokerNotice):
            if event.code == Notice.RECONNECT_FAILED:
                self.lost = True
            elif event.code == Notice.NOT_WORKING and event.client_order_id:
                self.not_working.add(event.client_order_id)
        if isinstance(event, BrokerNotice) and event.code in RUN_NOTICES:  # the run's notes say these
            self.notes.append(f"{event.at:%H:%M:%S} {event.code}: {event.message}"
                              + (f" ({event.client_order_id})" if event.client_order_id else ""))
        outcome = self.book.apply(event)
        self.recorder.record(event, outcome)
        if isinstance(event, BrokerNotice) and event.code == Notice.UNTRANSLATED:
            raise BrokerMessageError(f"the broker sent a message kit cannot translate: {event.message}")
        order = outcome.order
        if order is not None and order.client_order_id in self.open and order.settled:
            self.open.discard(order.client_order_id)

    def _arrived(self, now: float) -> None:
        self._gap = None if self._last_arrival is None else now - self._last_arrival
        self._last_arrival = now

    def _hold(self) -> float:
        """How long a quiet run keeps the ledger: IDLE_RELEASE, or twice the last gap between events while
        they come at a rhythm (at most HOLD_MAX)."""
        if self._gap is None:
            return IDLE_RELEASE
        return min(max(IDLE_RELEASE, 2 * self._gap), HOLD_MAX)

    def _receive(self, event: Event) -> None:
        """The broker's sink: keep the event and wake the wait in _follow, if one is waiting."""
        self.events.append(event)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _arrival(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the broker's next event; False if none came."""
        wake = self._wake = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await wake
        except TimeoutError:
            return bool(self.events)
        finally:
            self._wake = None
        return True

    def _drain(self) -> None:
        """Apply every event that has arrived, writing a batch every MAX_BATCH events: a burst (a zero-latency
        mock, a broker replaying its day) is held in memory a bounded batch at a time."""
        events, applied = self.events, 0
        while events:
            self._apply(events.popleft())
            applied += 1
            if applied == MAX_BATCH:
                self.recorder.flush()
                applied = 0

    # ---- bookkeeping ---------------------------------------------------------------------------------
    def _check_payloads(self, previous: list[Order]) -> None:
        # The plan is compared with the plan: an amended order's working terms are not a new payload.
        known = {o.client_order_id: o.planned for o in previous if o.at_broker}
        conflicts = []
        for intent in self.plan.intents:
            old = known.get(intent.client_order_id)
            if old is not None and old.payload() != intent.payload():
                diffs = ", ".join(f"{name} {a!r} -> {b!r}" for name, a, b in
                                  zip(PAYLOAD_FIELDS, old.payload(), intent.payload(), strict=True) if a != b)
                conflicts.append(f"  {intent.client_order_id}: {diffs}")
        if conflicts:
            raise PayloadConflictError(
                f"run_key {self.plan.run_key!r} already has these orders with a different payload; nothing "
                "was sent. Use a new run_key for a new plan.\n" + "\n".join(conflicts))
        taken = self.ledger.owners([i.client_order_id for i in self.plan.intents], self.run_id)
        if taken:  # e.g. run key "x" with symbol "A-B" and run key "x-A" with symbol "B"
            raise PayloadConflictError(
                "these client_order_ids already belong to other runs; nothing was sent. Use another "
                "run_key.\n" + "\n".join(f"  {coid}: run {run}" for coid, run in sorted(taken.items())))

    def _start_run(self, kind: str | None, resuming: bool) -> None:
        now = utcnow()
        detail = {"plan_hash": self.plan.hash, "orders": len(self.plan.intents)}
        row = self.ledger.run_row(self.run_id)
        if row is None:
            self.ledger.insert_run({
                "run_id": self.run_id, "run_key": self.plan.run_key, "notebook": self.info.notebook,
                "notebook_hash": self.info.notebook_hash, "parameters": _json(self.info.parameters),
                "broker": self.broker.name, "account": self.broker.account or None,
                "status": RunStatus.RUNNING,
                "started_at": now, "git_revision": self.info.git_revision, "kit_version": version("kit"),
                "output_path": self.info.output_path,
            })
        else:
            self.ledger.update_run(self.run_id, status=RunStatus.RUNNING, broker=self.broker.name,
                                   ended_at=None, error_name=None, error=None)
        self.recorder.note(kind or ("run_resumed" if resuming else "run_started"), now, **detail)

    def _finish(self, error: BaseException | None) -> None:
        if self.observer is not None:
            self.observer(self.book.orders.values())
        now = utcnow()
        status = RunStatus.PLANNED if self.dry_run else run_status(list(self.book.orders.values()))
        if self.lost and any(o.working for o in self.book.orders.values()):
            status = RunStatus.DISCONNECTED
        if error is not None:
            if not self._any_fill():
                status = RunStatus.FAILED
            self.recorder.note("run_error", now, error=type(error).__name__, message=str(error))
        self.recorder.note("run_finished", now, status=status, notes=self.notes)
        self.recorder.run(status=status, ended_at=now, error_name=type(error).__name__ if error else None,
                          error=str(error) if error else None)
        self.recorder.flush()
        self.status = status

    def _any_fill(self) -> bool:
        return any(o.fills for o in self.book.orders.values())

    def _result(self) -> Run:
        """From memory, not from the file: the ledger may be held by another process right now."""
        orders = list(self.book.orders.values())
        fills = (fill_row(o, f) for o in orders for f in sorted(o.fills.values(), key=lambda f: f.time))
        return Run(self.run_id, self.plan.run_key, self.status, frame(map(order_row, orders), ORDER_COLUMNS),
                   frame(fills, FILL_COLUMNS), self.notes)


def _cancels_requested() -> int:
    """How often this task was asked to stop: two interrupts close together reach it as one CancelledError,
    and this count is what tells them apart."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
