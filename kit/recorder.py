"""Applied events -> ledger rows: the one place that knows which column holds what.

Rows are dicts keyed by column name (kit.store's ORDER_COLUMNS, FILL_COLUMNS, EVENT_COLUMNS), so no caller
depends on a column's position. The Recorder gathers the rows of one run into a Batch and writes it a
batch at a time: the engine records every applied event through it, and reconcile its adopted ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from kit.errors import LedgerIdentityError, LedgerWriteError
from kit.model import Event, Execution, Fill, Order
from kit.state import Effect, Outcome
from kit.store import Batch, Ledger

log = logging.getLogger("kit.ledger")
Row = dict[str, Any]


def order_row(order: Order, updated_at: datetime | None = None) -> Row:
    """The orders row of `order`; `updated_at` overrides its time of last change."""
    intent = order.intent
    return {
        "client_order_id": intent.client_order_id, "run_id": order.run_id, "symbol": intent.symbol,
        "side": str(intent.side), "quantity": intent.quantity, "order_type": intent.order_type,
        "limit_price": intent.limit_price, "tif": intent.tif, "sec_type": intent.sec_type,
        "exchange": intent.exchange, "currency": intent.currency, "primary_exchange": intent.primary_exchange,
        "status": str(order.status), "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity, "avg_fill_price": order.avg_fill_price,
        "commission": order.commission, "broker_order_id": order.broker_order_id, "perm_id": order.perm_id,
        "reason": order.reason, "decision_price": intent.decision_price, "arrival_price": order.arrival_price,
        "submitted_at": order.submitted_at, "created_at": order.created_at,
        "updated_at": order.updated_at if updated_at is None else updated_at,
        **_original_terms(order),
    }


def _original_terms(order: Order) -> Row:
    """The planned terms of an amended order next to its working ones; NULL while it was never amended."""
    planned = order.original
    return {"original_quantity": planned.quantity if planned else None,
            "original_limit_price": planned.limit_price if planned else None,
            "original_stop_price": getattr(planned, "stop_price", None) if planned else None,
            "amendments": order.amendments}


def fill_row(order: Order, fill: Fill) -> Row:
    return {
        "exec_id": fill.exec_id, "client_order_id": fill.client_order_id, "run_id": order.run_id,
        "symbol": order.intent.symbol, "side": str(order.intent.side), "quantity": fill.quantity,
        "price": fill.price, "commission": fill.commission, "currency": fill.currency,
        "exchange": fill.exchange, "time": fill.time, "execution_key": fill.execution_key,
        "revision": fill.revision,
    }


# json.dumps(detail, default=str) builds this encoder on every call, and every event makes a row.
_detail_json = json.JSONEncoder(default=str).encode


def event_row(event_id: str, run_id: str, client_order_id: str | None, seq: int, at: datetime,
              kind: str, status: str | None, detail: dict[str, Any]) -> Row:
    return {"event_id": event_id, "run_id": run_id, "client_order_id": client_order_id, "seq": seq, "at": at,
            "kind": kind, "status": status, "detail": _detail_json(detail)}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclasses.fields() per event is slow; names per class


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def event_detail(event: Event, effect: Effect) -> dict[str, Any]:
    """An event's own fields (a fill's, for an execution) and what applying it did: the audit detail."""
    if isinstance(event, Execution):
        fill = event.fill
        detail = {name: getattr(fill, name) for name in _field_names(type(fill)) if name != "client_order_id"}
    else:
        detail = {name: getattr(event, name) for name in _field_names(type(event))
                  if name not in ("at", "client_order_id")}
    detail["effect"] = str(effect)
    return detail


class Recorder:
    """Turns applied events into ledger rows and writes them a batch at a time."""

    def __init__(self, ledger: Ledger, run_id: str):
        self.ledger = ledger
        self.run_id = run_id
        self.seq = ledger.next_seq(run_id)
        self.batch = Batch()
        # Orders changed by events since the last flush, with their updated_at then: their rows are built once
        # per flush instead of once per event (see record).
        self._changed: dict[str, tuple[Order, datetime]] = {}
        self.journaled = False
        self.write_error: LedgerWriteError | None = None  # the first batch that could not be made durable
        self.lost: LedgerIdentityError | None = None  # the ledger this run opened is gone: nothing is written
        self.notes: list[str] = []

    def _event(self, client_order_id: str | None, at: datetime, kind: str, status: str | None,
               detail: dict[str, Any]) -> None:
        self.batch.events.append(event_row(uuid.uuid4().hex, self.run_id, client_order_id, self.seq, at,
                                           kind, status, detail))
        self.seq += 1

    def record(self, event: Event, outcome: Outcome) -> None:
        order = outcome.order
        self._event(getattr(event, "client_order_id", None) or (order and order.client_order_id), event.at,
                    event.kind, str(order.status) if order else None, event_detail(event, outcome.effect))
        if order is not None and outcome.effect in (Effect.APPLIED, Effect.CORRECTION):
            # The row is built at flush from the order as it is then: only an event that is not written (a
            # status that changes nothing) can change it meanwhile, and then only updated_at, kept from now.
            self._changed[order.client_order_id] = (order, order.updated_at)
        if outcome.fill is not None and order is not None:
            self.batch.fills[outcome.fill.exec_id] = fill_row(order, outcome.fill)
        if outcome.replaced_exec_id:
            self.batch.fills.pop(outcome.replaced_exec_id, None)
            self.batch.replaced_fills.add(outcome.replaced_exec_id)

    def order(self, order: Order, kind: str, at: datetime, **detail: Any) -> None:
        self._event(order.client_order_id, at, kind, str(order.status), detail)
        self._changed.pop(order.client_order_id, None)
        self.batch.orders[order.client_order_id] = order_row(order)

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
        if self.lost is not None:
            return False
        for client_order_id, (order, updated_at) in self._changed.items():
            self.batch.orders[client_order_id] = order_row(order, updated_at)
        self._changed.clear()
        if not self.batch:
            return True
        try:
            written = self.ledger.write(self.batch)
        except LedgerIdentityError as exc:
            self.lost = exc
            self.notes.append(str(exc))
            raise
        except LedgerWriteError as exc:
            if self.write_error is None:
                self.write_error = exc
                self.notes.append(f"{exc}. kit sends no order whose `submitted` event it cannot record; "
                                  "orders already sent were followed. Free space (or move the ledger) and "
                                  "run the same key again: the broker's record reconciles the rest")
            return False
        if not written and not self.journaled:
            self.journaled = True
            message = (f"the ledger {self.ledger.path} {self.ledger.journal_reason}; events are kept in "
                       f"{self.ledger.journal.path} and written when the ledger can take them")
            log.warning(message)
            self.notes.append(message)
        self.batch = Batch()
        return True
