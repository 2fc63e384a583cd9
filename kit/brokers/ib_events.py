"""IB's raw messages -> kit's normalized events. Pure: no sockets, no clock, no client library.

kit taps IB's messages before ib_async/ib_insync interpret them, because those libraries drop a commission
that arrives before its execution, drop a repeated or corrected execution's context, and mark an order
Cancelled on any error. Here an order is cancelled only when IB's own status says so; quantities come only
from executions; status words are recorded, never trusted for fills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kit.model import (
    Accepted,
    BrokerEvent,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Rejected,
    StatusUpdate,
)

ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted", "Filled", "PendingCancel"})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
# Errors that mean IB refused the order: it never worked and cannot fill.
REJECTIONS = frozenset({103, 200, 201, 203, 10311})
UNSET_DOUBLE = 1.7976931348623157e308


def split_exec_id(exec_id: str) -> tuple[str, int]:
    """IB's exec ids end in a revision ("…01.01", then its correction "…01.02"): (key, revision).

    The one place that reads IB's id format: the core only sees Fill.key and Fill.revision.
    """
    base, _, last = exec_id.rpartition(".")
    if base and last.isdigit():
        return base, int(last)
    return exec_id, 0


def naive_utc(moment: datetime | str | None, default: datetime) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return default


@dataclass
class Translator:
    """Maps IB's ids to client_order_ids and turns messages about tracked orders into kit events.

    Only orders the current run tracks produce events: other runs' orders on the same account are ignored,
    and so are commissions of their executions.
    """

    client_id: int
    tracked: set[str] = field(default_factory=set)
    # orderIds this process placed on the current connection: the only ones that identify an order, since a
    # restarted gateway or another process on this clientId hands the same ids out again.
    by_order_id: dict[int, str] = field(default_factory=dict)
    by_perm_id: dict[int, str] = field(default_factory=dict)
    order_id_of: dict[str, int] = field(default_factory=dict)
    perm_id_of: dict[str, int] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # tracked orders IB showed us in any message
    foreign_execs: set[str] = field(default_factory=set)
    foreign_perm_ids: set[int] = field(default_factory=set)  # orders IB listed under another orderRef
    highest_order_id: int = 0  # the highest orderId IB showed for this clientId, whoever placed it

    def track(self, client_order_ids: set[str] | list[str]) -> None:
        self.tracked.update(client_order_ids)

    def placed(self, client_order_id: str, order_id: int) -> None:
        self.tracked.add(client_order_id)
        self.by_order_id[order_id] = client_order_id
        self._learn(client_order_id, order_id, 0, self.client_id)

    def new_connection(self) -> None:
        """orderIds of an earlier connection may be handed out again: they no longer identify an order."""
        self.by_order_id.clear()

    def _learn(self, coid: str, order_id: int, perm_id: int, client_id: int) -> None:
        if order_id > 0 and client_id == self.client_id:
            self.order_id_of[coid] = order_id  # what a cancel from this clientId names
        if perm_id > 0:
            self.by_perm_id[perm_id] = coid
            self.perm_id_of[coid] = perm_id

    def _resolve(self, order_ref: str, order_id: int, perm_id: int, client_id: int = -1) -> str | None:
        """orderRef first: a message naming another orderRef is never this run's, whatever its ids. Then
        the permId IB gave a tracked orderRef; an orderId only when this process placed it on this
        connection."""
        if order_id > 0 and client_id == self.client_id:
            self.highest_order_id = max(self.highest_order_id, order_id)
        if order_ref:
            coid = order_ref if order_ref in self.tracked else None
        elif perm_id > 0 and (perm_id in self.by_perm_id or perm_id in self.foreign_perm_ids):
            coid = self.by_perm_id.get(perm_id)
        else:
            coid = self.by_order_id.get(order_id)
        if coid is None and order_ref and perm_id > 0:
            self.foreign_perm_ids.add(perm_id)
        return coid if coid in self.tracked else None

    def _status(self, coid: str, word: str, at: datetime, reason: str = "") -> list[BrokerEvent]:
        ids = {"broker_order_id": _id(self.order_id_of.get(coid)), "perm_id": _id(self.perm_id_of.get(coid))}
        events: list[BrokerEvent] = [StatusUpdate(coid, at, word, **ids)]
        if word in ACKNOWLEDGED:
            self.acknowledged.add(coid)
            events.append(Accepted(coid, at, **ids))
        elif word in CANCELLED:
            events.append(Cancelled(coid, at, reason or f"IB status {word}"))
        return events

    def open_order(self, order_id: int, client_id: int, perm_id: int, order_ref: str, status: str,
                   at: datetime) -> list[BrokerEvent]:
        coid = self._resolve(order_ref, order_id, perm_id, client_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, order_id, perm_id, client_id)
        return self._status(coid, status, at)

    def completed_order(self, perm_id: int, order_ref: str, status: str, reason: str,
                        at: datetime) -> list[BrokerEvent]:
        """A finished order, as IB lists it after a reconnect: no orderId, matched by orderRef and permId."""
        coid = self._resolve(order_ref, 0, perm_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, 0, perm_id, -1)
        return self._status(coid, status, at, reason)

    def order_status(self, order_id: int, status: str, perm_id: int, client_id: int, why_held: str,
                     at: datetime) -> list[BrokerEvent]:
        coid = self._resolve("", order_id if client_id == self.client_id else -1, perm_id, client_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, order_id, perm_id, client_id)
        return self._status(coid, status, at, why_held)

    def execution(self, *, exec_id: str, order_id: int, perm_id: int, client_id: int, order_ref: str,
                  shares: float, price: float, time: datetime, currency: str, exchange: str,
                  at: datetime) -> list[BrokerEvent]:
        coid = self._resolve(order_ref, order_id if client_id == self.client_id else -1, perm_id, client_id)
        if coid is None:
            self.foreign_execs.add(exec_id)
            return []
        self.seen.add(coid)
        self.foreign_execs.discard(exec_id)  # seen before this run tracked its order (IB's startup replay)
        self._learn(coid, order_id, perm_id, client_id)
        key, revision = split_exec_id(exec_id)
        fill = Fill(exec_id, coid, float(shares), float(price), time, currency=currency, exchange=exchange,
                    key=key, revision=revision)
        return [Execution(fill, at)]

    def commission(self, exec_id: str, commission: float, currency: str, at: datetime) -> list[BrokerEvent]:
        if exec_id in self.foreign_execs:
            return []
        # IB's unset double means it did not say: unknown (NaN), never a commission of zero.
        amount = math.nan if commission >= UNSET_DOUBLE else float(commission)
        return [Commission(exec_id, amount, currency, at)]

    def error(self, req_id: int, code: int, message: str, at: datetime) -> list[BrokerEvent]:
        coid = self.by_order_id.get(req_id) if req_id > 0 else None
        if coid is not None and coid not in self.tracked:
            coid = None
        if coid is not None and code in REJECTIONS:
            return [Rejected(coid, at, f"IB error {code}: {message}")]
        return [BrokerNotice(at, code, message, coid)]


def _id(value: int | None) -> str | None:
    return str(value) if value else None
