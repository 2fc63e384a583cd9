"""Applied events -> ledger rows: the one place that knows which column holds what.

Rows are dicts keyed by column name (kit.store's ORDER_COLUMNS, FILL_COLUMNS, EVENT_COLUMNS), so no caller
depends on a column's position. The Recorder gathers the rows of one run into a Batch and writes it a
batch at a time: the engine records every applied event through it, and reconcile its adopted ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import attrgetter
from typing import Any

from kit.errors import LedgerIdentityError, LedgerWriteError
from kit.model import AMENDABLE_FIELDS, Event, Execution, Fill, Order
from kit.order_types import order_type_columns
from kit.state import Effect, Outcome
from kit.store import Batch, Ledger

log = logging.getLogger("kit.ledger")
Row = dict[str, Any]
_writers: dict[int, ThreadPoolExecutor] = {}


def _writer() -> ThreadPoolExecutor:
    """The thread write_behind writes on: one per process, made in it (a forked child, a scheduler's task
    say, cannot use its parent's: the thread is not there)."""
    pid = os.getpid()
    if pid not in _writers:
        _writers.clear()
        _writers[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-ledger-writer")
    return _writers[pid]


def order_row(order: Order, updated_at: datetime | None = None) -> Row:
    """The orders row of `order`; `updated_at` overrides its time of last change."""
    intent = order.intent
    filled, remaining, average, commission = order.fill_totals()
    return {
        "client_order_id": intent.client_order_id, "run_id": order.run_id, "symbol": intent.symbol,
        "side": str(intent.side), "quantity": intent.quantity, "order_type": intent.order_type,
        "limit_price": intent.limit_price, "tif": intent.tif, "sec_type": intent.sec_type,
        "exchange": intent.exchange, "currency": intent.currency, "primary_exchange": intent.primary_exchange,
        "status": str(order.status), "filled_quantity": filled,
        "remaining_quantity": remaining, "avg_fill_price": average,
        "commission": commission, "broker_order_id": order.broker_order_id, "perm_id": order.perm_id,
        "reason": order.reason, "decision_price": intent.decision_price, "arrival_price": order.arrival_price,
        "submitted_at": order.submitted_at, "created_at": order.created_at,
        "updated_at": order.updated_at if updated_at is None else updated_at,
        **order_type_columns(intent),
        "expiry": intent.expiry, "strike": intent.strike, "right": intent.right,
        "multiplier": intent.multiplier, "con_id": intent.con_id, "local_symbol": intent.local_symbol,
        **_original_terms(order),
    }


_ORIGINAL_COLUMNS = tuple(f"original_{name}" for name in AMENDABLE_FIELDS)
_NEVER_AMENDED = {**dict.fromkeys(_ORIGINAL_COLUMNS), "amendments": 0}


def _original_terms(order: Order) -> Row:
    """The planned terms of an amended order next to its working ones; NULL while it was never amended."""
    planned = order.original
    if planned is None and not order.amendments:
        return _NEVER_AMENDED  # most orders: one shared dict, never changed (order_row copies from it)
    values = (getattr(planned, name) if planned else None for name in AMENDABLE_FIELDS)
    return {**dict(zip(_ORIGINAL_COLUMNS, values, strict=True)), "amendments": order.amendments}


def fill_row(order: Order, fill: Fill) -> Row:
    return {
        "exec_id": fill.exec_id, "client_order_id": fill.client_order_id, "run_id": order.run_id,
        "symbol": order.intent.symbol, "side": str(order.intent.side), "quantity": fill.quantity,
        "price": fill.price, "commission": fill.commission, "currency": fill.currency,
        "exchange": fill.exchange, "time": fill.time, "execution_key": fill.execution_key,
        "revision": fill.revision,
    }


def _json_encoder() -> Callable[[dict[str, Any]], str]:
    """json.dumps(detail, default=str), made once: json.dumps builds its encoder (and JSONEncoder.encode
    its C iterator) on every call, and every event makes a row. Same text: same separators, ASCII, NaN."""
    encoder = json.JSONEncoder(default=str)
    if c_make_encoder is None:  # a Python without json's C accelerator
        return encoder.encode
    chunks = c_make_encoder(None, str, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda detail: "".join(chunks(detail, 0))


_detail_json = _json_encoder()


def event_row(event_id: str, run_id: str, client_order_id: str | None, seq: int, at: datetime,
              kind: str, status: str | None, detail: dict[str, Any]) -> Row:
    return {"event_id": event_id, "run_id": run_id, "client_order_id": client_order_id, "seq": seq, "at": at,
            "kind": kind, "status": status, "detail": _detail_json(detail)}


# An event class -> the names of its audit fields and a getter of their values: dataclasses.fields() per
# event is slow.
_DETAIL: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple]]] = {}


def _detail_fields(cls: type, skip: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[Any], tuple]]:
    found = _DETAIL.get(cls)
    if found is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)
        getter = attrgetter(*names)
        if len(names) == 1:  # attrgetter of one name gives the value, not a tuple
            one = getter
            getter = lambda obj: (one(obj),)  # noqa: E731
        found = _DETAIL[cls] = (names, getter)
    return found


def event_detail(event: Event, effect: Effect) -> dict[str, Any]:
    """An event's own fields (a fill's, for an execution) and what applying it did: the audit detail."""
    if isinstance(event, Execution):
        source, skip = event.fill, ("client_order_id",)
    else:
        source, skip = event, ("at", "client_order_id")
    names, values = _detail_fields(type(source), skip)
    detail = dict(zip(names, values(source), strict=True))
    if source is not event and type(source.time) is datetime:
        # the text json's default=str gives, made here: the encoder's call back for it costs more (~3 us)
        detail["time"] = source.time.isoformat(" ")
    detail["effect"] = effect  # a StrEnum: json writes its text, as for str(effect)
    return detail


async def _finished(writing: Future[bool]) -> None:
    """Wait for a write to end, leaving its outcome to Recorder._settle. A cancelled wait leaves the write
    going on (a thread cannot be stopped mid-transaction)."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def tell(_: Future[bool]) -> None:
        loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))

    writing.add_done_callback(tell)
    await ended


class Recorder:
    """Turns applied events into ledger rows and writes them a batch at a time."""

    def __init__(self, ledger: Ledger, run_id: str):
        self.ledger = ledger
        self.run_id = run_id
        self.seq = ledger.next_seq(run_id)
        # Event ids: a random prefix per recorder and the event's sequence number, unique like a uuid4 per
        # event (a run key has one process at a time, and seq grows within it) at a fraction of its cost.
        self._id_prefix = uuid.uuid4().hex[:20] + "-"
        self.batch = Batch()
        # Orders changed by events since the last flush, with their updated_at then: their rows are built once
        # per flush instead of once per event (see record).
        self._changed: dict[str, tuple[Order, datetime]] = {}
        self._fills: dict[str, tuple[Order, Fill]] = {}  # exec_id -> its latest fill: a row at flush
        # client_order_id -> the Order and its amendments when its last row was made. The same Order with as
        # many amendments has the same terms (kit.state changes an intent only by an amendment, and a
        # replanned order is a new Order), so its next row differs only in the state columns.
        self._terms: dict[str, tuple[Order, int]] = {}
        self._writing: tuple[Future[bool], Batch] | None = None  # a write_behind under way, and its batch
        self.journaled = False
        self.write_error: LedgerWriteError | None = None  # the first batch that could not be made durable
        self.lost: LedgerIdentityError | None = None  # the ledger this run opened is gone: nothing is written
        self.notes: list[str] = []

    def _event(self, client_order_id: str | None, at: datetime, kind: str, status: str | None,
               detail: dict[str, Any]) -> None:
        seq = self.seq
        self.batch.events.append({"event_id": f"{self._id_prefix}{seq}", "run_id": self.run_id,
                                  "client_order_id": client_order_id, "seq": seq, "at": at, "kind": kind,
                                  "status": status, "detail": _detail_json(detail)})
        self.seq = seq + 1

    def record(self, event: Event, outcome: Outcome) -> None:
        order = outcome.order
        self._event(getattr(event, "client_order_id", None) or (order and order.client_order_id), event.at,
                    event.kind, str(order.status) if order else None, event_detail(event, outcome.effect))
        if order is not None and outcome.effect in (Effect.APPLIED, Effect.CORRECTION):
            # The row is built at flush from the order as it is then: only an event that is not written (a
            # status that changes nothing) can change it meanwhile, and then only updated_at, kept from now.
            self._changed[order.client_order_id] = (order, order.updated_at)
        if outcome.fill is not None and order is not None:
            self._fills[outcome.fill.exec_id] = (order, outcome.fill)
        if outcome.replaced_exec_id:
            self._fills.pop(outcome.replaced_exec_id, None)
            self.batch.fills.pop(outcome.replaced_exec_id, None)
            self.batch.replaced_fills.add(outcome.replaced_exec_id)

    def order(self, order: Order, kind: str, at: datetime, **detail: Any) -> None:
        self._event(order.client_order_id, at, kind, str(order.status), detail)
        self._changed.pop(order.client_order_id, None)
        self._put(order, order_row(order))

    def _put(self, order: Order, row: Row) -> None:
        """The order's row into the batch, marked same_terms if the ledger was handed its terms already:
        by the row before it, or, while that one waits in this batch, by the row before that."""
        key, batch = order.client_order_id, self.batch
        last = self._terms.get(key)
        if (last is not None and last[0] is order and last[1] == order.amendments
                and (key in batch.same_terms or key not in batch.orders)):
            batch.same_terms.add(key)
        else:
            batch.same_terms.discard(key)
            self._terms[key] = (order, order.amendments)
        batch.orders[key] = row

    def note(self, kind: str, at: datetime, client_order_id: str | None = None, **detail: Any) -> None:
        self._event(client_order_id, at, kind, None, detail)

    def run(self, **values: Any) -> None:
        self.batch.runs.setdefault(self.run_id, {}).update(values)

    def flush(self) -> bool:
        """Write what was recorded since the last flush; False if it is durable nowhere (a full or failing
        disk under both the ledger and its journal). Then the batch is kept and goes out with the next
        flush, the first such error is in `write_error` and the run's notes, and no order may be sent: its
        write-ahead `submitted` event would not be recorded.

        A ledger that disappeared or was replaced (LedgerIdentityError) is raised once, to fail the run;
        later flushes (the engine closing down) then write nothing, so the broker is still let go."""
        if self._writing is not None:
            self._settle_writing()
        if self.lost is not None:
            return False
        self._rows()
        if not self.batch:
            return True
        batch, self.batch = self.batch, Batch()
        return self._settle(batch, lambda: self.ledger.write(batch))

    async def write_behind(self) -> None:
        """flush(), with the ledger's write on a worker thread while the event loop goes on: IB's pacing
        timers and the broker's messages are not held up by a transaction (milliseconds each: DuckDB lets go
        of the GIL while it works). Events recorded meanwhile go with the next flush. The ledger is the
        writer thread's until the write ends: a flush meanwhile (another task's) waits for it and takes its
        outcome, and so does the next flush if this is cancelled. A batch not made durable goes back in
        front of what came after (see flush), a lost ledger raises here."""
        if self._writing is not None:
            await _finished(self._writing[0])
            self._settle_writing()
        if self.lost is not None:
            return
        self._rows()
        if not self.batch:
            return
        batch, self.batch = self.batch, Batch()
        writing = _writer().submit(self.ledger.write, batch)
        self._writing = (writing, batch)
        await _finished(writing)
        if self._writing is not None and self._writing[0] is writing:
            self._settle_writing()

    def _rows(self) -> None:
        """The rows of the orders and fills changed since the last flush, into the batch."""
        for order, updated_at in self._changed.values():
            self._put(order, order_row(order, updated_at))
        self._changed.clear()
        for exec_id, (order, fill) in self._fills.items():
            self.batch.fills[exec_id] = fill_row(order, fill)
        self._fills.clear()

    def _settle_writing(self) -> bool:
        """The outcome of write_behind's write, waited for if it is still under way."""
        assert self._writing is not None
        writing, batch = self._writing
        self._writing = None
        return self._settle(batch, writing.result)

    def _settle(self, batch: Batch, write: Callable[[], bool]) -> bool:
        """The outcome of writing `batch`: one not made durable goes back in front of what was recorded
        since, to go out with the next flush."""
        try:
            written = write()
        except BaseException as exc:
            self.batch = batch.then(self.batch)
            if isinstance(exc, LedgerIdentityError):
                self.lost = exc
                self.notes.append(str(exc))
            elif isinstance(exc, LedgerWriteError):
                if self.write_error is None:
                    self.write_error = exc
                    self.notes.append(f"{exc}. kit sends no order whose `submitted` event it cannot "
                                      "record; orders already sent were followed. Free space (or move the "
                                      "ledger) and run the same key again: the broker's record reconciles "
                                      "the rest")
                return False
            raise
        if not written and not self.journaled:
            self.journaled = True
            message = (f"the ledger {self.ledger.path} {self.ledger.journal_reason}; events are kept in "
                       f"{self.ledger.journal.path} and written when the ledger can take them")
            log.warning(message)
            self.notes.append(message)
        return True
