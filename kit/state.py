"""How events change orders: the one transition table, the one fill aggregator, and run finalization.

Pure: no I/O and no clock. Every broker's events go through `OrderBook.apply`, so the mock broker and IB
cannot disagree about what a fill, a duplicate, a correction or a late commission means.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from operator import attrgetter

from kit.model import (
    Accepted,
    AmendAccepted,
    AmendRefused,
    AmendRequested,
    ArrivalPrice,
    BrokerNotice,
    Cancelled,
    Commission,
    Event,
    Execution,
    Fill,
    Order,
    Rejected,
    RunStatus,
    Status,
    StatusUpdate,
    Submitted,
)


class Signal(StrEnum):
    """What an event means for an order's status, once quantities are taken into account."""

    ACCEPT = "accept"
    FILL_PART = "fill_part"  # a fill that leaves quantity open
    FILL_ALL = "fill_all"  # a fill that completes the quantity
    CANCEL = "cancel"
    REJECT = "reject"
    AMEND = "amend"  # the broker accepted new terms (price, quantity) for a working order


N, S, P, F, C, R = Status
# (status, signal) -> next status. A pair that is absent changes no status; fills are recorded regardless.
TRANSITIONS: dict[tuple[Status, Signal], Status] = {
    (N, Signal.ACCEPT): S,
    (N, Signal.FILL_PART): P, (S, Signal.FILL_PART): P, (P, Signal.FILL_PART): P,
    (N, Signal.FILL_ALL): F, (S, Signal.FILL_ALL): F, (P, Signal.FILL_ALL): F,
    (N, Signal.CANCEL): C, (S, Signal.CANCEL): C, (P, Signal.CANCEL): C,
    (N, Signal.REJECT): R, (S, Signal.REJECT): R, (P, Signal.REJECT): R,
    # A fill after a cancel confirmation is real: record it, and if it completes the order, it filled.
    (C, Signal.FILL_ALL): F,
    # Only a correction (a higher revision of an execution) can lower the filled quantity of a FILLED
    # order; the status follows the quantity, as if the corrected execution had arrived first.
    (F, Signal.FILL_PART): P,
    # An amendment changes terms, not status: only an order in one of these may be amended at all.
    (S, Signal.AMEND): S, (P, Signal.AMEND): P,
}  # fmt: skip
del N, S, P, F, C, R


def next_status(status: Status, signal: Signal) -> Status:
    return TRANSITIONS.get((status, signal), status)


def amendable(order: Order) -> bool:
    """Working at the broker in a status the table lets an amendment through."""
    return order.working and (order.status, Signal.AMEND) in TRANSITIONS


class Effect(StrEnum):
    """What applying an event did; recorded with the event in the ledger's audit trail."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # seen before: nothing changed
    CORRECTION = "correction"  # replaced an earlier revision of the same execution
    STALE = "stale"  # an older revision than one already applied
    PENDING = "pending"  # a commission waiting for its execution
    UNKNOWN_ORDER = "unknown_order"
    NOTED = "noted"  # informational only


@dataclass(slots=True)
class Outcome:
    """The result of applying one event: what changed, so the shell can write exactly that."""

    effect: Effect
    order: Order | None = None
    fill: Fill | None = None  # a fill row to upsert
    replaced_exec_id: str | None = None  # a fill row superseded by a correction


@dataclass(slots=True)
class OrderBook:
    """The orders of one run plus the commissions that arrived before their executions."""

    orders: dict[str, Order] = field(default_factory=dict)
    pending_commissions: dict[str, Commission] = field(default_factory=dict)
    # exec_id -> (client_order_id, execution_key): where a commission report of that exec_id belongs
    exec_owner: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, order: Order) -> None:
        self.orders[order.client_order_id] = order
        for fill in order.fills.values():
            self.exec_owner[fill.exec_id] = (order.client_order_id, fill.execution_key)

    def apply(self, event: Event) -> Outcome:
        if isinstance(event, Commission):
            return self._commission(event)
        order = self.orders.get(event.client_order_id) if event.client_order_id else None
        if isinstance(event, BrokerNotice):
            return Outcome(Effect.NOTED, order)
        if order is None:
            return Outcome(Effect.UNKNOWN_ORDER)
        match event:
            case Execution(fill=fill):
                return self._execution(order, fill, event)
            case Submitted():
                order.submitted_at = order.submitted_at or event.at
                if event.arrival_price is not None:
                    order.arrival_price = event.arrival_price
                return self._touch(order, event, Effect.APPLIED)
            case ArrivalPrice(price=price):
                if order.arrival_price is not None:
                    return Outcome(Effect.NOTED, order)
                order.arrival_price = price
                return self._touch(order, event, Effect.APPLIED)
            case Accepted() | StatusUpdate():
                changed = _take_ids(order, event.broker_order_id, event.perm_id)
                if isinstance(event, Accepted):
                    changed |= self._move(order, Signal.ACCEPT)
                return self._touch(order, event, Effect.APPLIED if changed else Effect.NOTED)
            case AmendRequested() | AmendAccepted() | AmendRefused():
                return self._amendment(order, event)
            case Rejected() | Cancelled():
                signal = Signal.REJECT if isinstance(event, Rejected) else Signal.CANCEL
                if not self._move(order, signal):
                    return Outcome(Effect.DUPLICATE, order)
                order.reason = event.reason or order.reason
                return self._touch(order, event, Effect.APPLIED)
        raise TypeError(f"not a kit event: {event!r}")

    def _execution(self, order: Order, fill: Fill, event: Execution) -> Outcome:
        key = fill.execution_key
        current = order.fills.get(key)
        if current is not None:
            if current.exec_id == fill.exec_id:
                return Outcome(Effect.DUPLICATE, order)
            if current.revision > fill.revision:
                return Outcome(Effect.STALE, order)
        pending = self.pending_commissions.pop(fill.exec_id, None)
        if pending is not None:
            fill = _with_commission(fill, pending)
        elif fill.commission is None and current is not None:
            # Until the correction's own report arrives, the corrected execution keeps the commission paid.
            fill = _with_commission(fill, None, current.commission)
        order.fills[key] = fill
        self.exec_owner[fill.exec_id] = (order.client_order_id, key)
        signal = Signal.FILL_ALL if order.filled_quantity >= order.intent.quantity else Signal.FILL_PART
        self._move(order, signal)
        self._touch(order, event, Effect.APPLIED)
        if current is None:
            return Outcome(Effect.APPLIED, order, fill)
        return Outcome(Effect.CORRECTION, order, fill, replaced_exec_id=current.exec_id)

    def _amendment(self, order: Order, event: AmendRequested | AmendAccepted | AmendRefused) -> Outcome:
        """A request waits for its answer; an accepted one changes the order's working terms (once per
        revision: a broker's replay of an older answer changes nothing); a refusal leaves them."""
        if isinstance(event, AmendRequested):
            order.amend_pending = event.revision
            return self._touch(order, event, Effect.APPLIED)
        if order.amend_pending == event.revision:
            order.amend_pending = 0
        if isinstance(event, AmendRefused):
            order.amend_refusal = event.reason
            return self._touch(order, event, Effect.NOTED)
        if event.revision <= order.amendments:
            return Outcome(Effect.DUPLICATE, order)
        order.original = order.original or order.intent
        order.intent = replace(order.intent, **event.changes)
        order.amendments = event.revision
        done = order.filled_quantity >= order.intent.quantity
        self._move(order, Signal.FILL_ALL if done else Signal.AMEND)
        return self._touch(order, event, Effect.APPLIED)

    def _commission(self, event: Commission) -> Outcome:
        coid, key = self.exec_owner.get(event.exec_id, (None, None))
        order = self.orders.get(coid) if coid else None
        if order is None or key is None:
            if event.exec_id in self.pending_commissions:
                return Outcome(Effect.DUPLICATE)
            self.pending_commissions[event.exec_id] = event
            return Outcome(Effect.PENDING)
        fill = order.fills.get(key)
        if fill is None or fill.exec_id != event.exec_id:
            return Outcome(Effect.STALE, order)  # the report of a superseded revision
        same_currency = fill.currency == (event.currency or fill.currency)
        if _same_amount(fill.commission, event.commission) and same_currency:
            return Outcome(Effect.DUPLICATE, order)
        fill = _with_commission(fill, event)
        order.fills[key] = fill
        self._touch(order, event, Effect.APPLIED)
        return Outcome(Effect.APPLIED, order, fill)

    @staticmethod
    def _move(order: Order, signal: Signal) -> bool:
        new = next_status(order.status, signal)
        changed = new != order.status
        order.status = new
        return changed

    @staticmethod
    def _touch(order: Order, event: Event, effect: Effect) -> Outcome:
        if event.at > order.updated_at:
            order.updated_at = event.at
        return Outcome(effect, order)


def _take_ids(order: Order, broker_order_id: str | None, perm_id: str | None) -> bool:
    changed = False
    if broker_order_id and broker_order_id != order.broker_order_id:
        order.broker_order_id, changed = broker_order_id, True
    if perm_id and perm_id != order.perm_id:
        order.perm_id, changed = perm_id, True
    return changed


def _same_amount(a: float | None, b: float | None) -> bool:
    """Equal, with an unknown (NaN, IB's unset value) equal to another unknown: a repeat changes nothing."""
    return a == b or (a is not None and b is not None and a != a and b != b)


# A fill with another commission is built from its fields in order: dataclasses.replace, which looks the
# fields up on every call, was a tenth of the fold's time.
_FILL_FIELDS = tuple(f.name for f in fields(Fill))
_fill_values = attrgetter(*_FILL_FIELDS)
_COMMISSION, _CURRENCY = _FILL_FIELDS.index("commission"), _FILL_FIELDS.index("currency")


def _with_commission(fill: Fill, report: Commission | None, amount: float | None = None) -> Fill:
    values = list(_fill_values(fill))
    if report is None:
        values[_COMMISSION] = amount
    else:
        values[_COMMISSION] = report.commission
        values[_CURRENCY] = fill.currency or report.currency
    return Fill(*values)


def run_status(orders: list[Order]) -> RunStatus:
    """failed: nothing filled; done: every order fully filled; partial: anything else.

    Derived from filled quantities, not status words. A run with no orders had nothing to do: done.
    """
    if not orders:
        return RunStatus.DONE
    if not any(o.filled_quantity > 0 for o in orders):
        return RunStatus.FAILED
    if all(o.filled_quantity >= o.intent.quantity for o in orders):
        return RunStatus.DONE
    return RunStatus.PARTIAL
