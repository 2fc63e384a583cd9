"""The data kit passes between layers: order intents, order state, fills and normalized broker events.

Brokers translate their own world into the small set of events below; nothing above the broker layer
knows which broker produced them. Everything here is plain data: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Status(StrEnum):
    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    PARTIAL = "PARTIAL"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


# The order lifecycle facts, defined once: everything else (engine, ledger SQL, kit cancel, reconcile) uses
# these sets, and Order's predicates below, instead of listing statuses.
TERMINAL = frozenset({Status.FILLED, Status.CANCELLED, Status.REJECTED})
OPEN_STATUSES = frozenset(Status) - TERMINAL  # an order in one of these can still fill


class RunStatus(StrEnum):
    """A run's status in the runs table: running until it ends, then one of the others."""

    RUNNING = "running"
    DONE = "done"  # everything filled (or there was nothing to do)
    PARTIAL = "partial"  # something filled; something was rejected, cancelled or left unfilled
    FAILED = "failed"  # nothing filled
    PLANNED = "planned"  # a dry run: recorded, nothing sent
    SKIPPED = "skipped"  # a notebook ended itself early with kit.Skip
    DISCONNECTED = "disconnected"  # the broker did not come back: orders may still be working there

# The fields that define what an order asks the broker to do. Two orders with the same client_order_id
# must agree on all of them, or resuming a run would silently change what was sent.
PAYLOAD_FIELDS = (
    "symbol", "side", "quantity", "order_type", "limit_price", "tif",
    "sec_type", "exchange", "currency", "primary_exchange",
)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One validated order, as planned: what to send, not what happened."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    order_type: str = "MKT"
    limit_price: float | None = None
    tif: str = "DAY"
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = ""
    decision_price: float | None = None

    def payload(self) -> tuple:
        return tuple(getattr(self, name) for name in PAYLOAD_FIELDS)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution, under the broker's exec_id.

    A broker that corrects executions says which ones belong together: a fill with the same `key` and a
    higher `revision` replaces the one before (the broker's translator derives both from its own ids; the
    core never parses an id). Without a key, a fill stands alone. An unknown commission is None or NaN.
    """

    exec_id: str
    client_order_id: str
    quantity: float
    price: float
    time: datetime
    commission: float | None = None
    currency: str = ""
    exchange: str = ""
    key: str | None = None
    revision: int = 0

    @property
    def execution_key(self) -> str:
        """What a correction of this execution shares with it."""
        return self.key or self.exec_id

    @property
    def commission_known(self) -> bool:
        commission = self.commission
        return commission is not None and commission == commission  # NaN: the broker left it unset


# ---- normalized broker events -------------------------------------------------------------------------
# `at` is the broker's time for the event (or the adapter's receipt time); the core never reads a clock.


@dataclass(frozen=True, slots=True)
class Accepted:
    """The broker has the order: it may now fill. Carries the broker's ids as soon as they are known."""

    client_order_id: str
    at: datetime
    broker_order_id: str | None = None
    perm_id: str | None = None
    kind = "accepted"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A broker status word, recorded for the audit trail. It never moves quantities or ends an order."""

    client_order_id: str
    at: datetime
    broker_status: str
    broker_order_id: str | None = None
    perm_id: str | None = None
    kind = "status"


@dataclass(frozen=True, slots=True)
class Execution:
    """A fill. Quantities and average price are derived from executions only, never from status words."""

    fill: Fill
    at: datetime
    kind = "fill"

    @property
    def client_order_id(self) -> str:
        return self.fill.client_order_id


@dataclass(frozen=True, slots=True)
class Commission:
    """The commission of one execution, joined on exec_id whichever of the two arrives first."""

    exec_id: str
    commission: float
    currency: str
    at: datetime
    client_order_id: str | None = None
    kind = "commission"


@dataclass(frozen=True, slots=True)
class Rejected:
    client_order_id: str
    at: datetime
    reason: str
    kind = "rejected"


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The broker confirmed the order can no longer fill. Only a broker's confirmation produces this."""

    client_order_id: str
    at: datetime
    reason: str = ""
    kind = "cancelled"


@dataclass(frozen=True, slots=True)
class BrokerNotice:
    """A broker message that informs but decides nothing (warnings, connectivity notices, unknown orders)."""

    at: datetime
    code: int | str
    message: str
    client_order_id: str | None = None
    kind = "error"


@dataclass(frozen=True, slots=True)
class Submitted:
    """kit hands the order to the broker. Written to the ledger before the broker sees the order, so a
    crash between the two is visible on resume and the order is looked up at the broker, not sent again."""

    client_order_id: str
    at: datetime
    arrival_price: float | None = None
    kind = "submitted"


# ---- amendments: a working order's terms changed through the broker (IB: placeOrder again, same id) ----
# The fields an amendment may change; IB lets a modify change price, quantity and tif, never the side,
# the contract or the order type. stop_price counts once OrderIntent has it.
AMENDABLE_FIELDS = ("quantity", "limit_price", "stop_price", "tif")


@dataclass(frozen=True, slots=True)
class AmendRequested:
    """kit asks the broker to change a working order. Written before the broker sees the request, like
    Submitted; `revision` numbers the order's amendments, so a broker's replayed answer is applied once."""

    client_order_id: str
    at: datetime
    changes: dict
    revision: int
    why: str = ""
    kind = "amend_requested"


@dataclass(frozen=True, slots=True)
class AmendAccepted:
    """The broker works the order on the new terms (IB: an openOrder carrying them)."""

    client_order_id: str
    at: datetime
    changes: dict
    revision: int
    kind = "amend_accepted"


@dataclass(frozen=True, slots=True)
class AmendRefused:
    """The broker (or kit, before sending) refused the change: the order works on as it was."""

    client_order_id: str
    at: datetime
    reason: str
    revision: int
    changes: dict = field(default_factory=dict)
    kind = "amend_refused"


BrokerEvent = (Accepted | StatusUpdate | Execution | Commission | Rejected | Cancelled | BrokerNotice
               | AmendAccepted | AmendRefused)
Event = Submitted | AmendRequested | BrokerEvent


@dataclass(slots=True)
class Order:
    """An order's state, folded from its intent and the broker's events by kit.state."""

    intent: OrderIntent
    run_id: str
    created_at: datetime
    updated_at: datetime
    status: Status = Status.NEW
    fills: dict[str, Fill] = field(default_factory=dict)  # execution_key -> latest revision
    broker_order_id: str | None = None
    perm_id: str | None = None
    reason: str = ""
    arrival_price: float | None = None
    submitted_at: datetime | None = None
    # Amendments (kit.amending): `intent` is what works at the broker now; `original` the intent as planned,
    # kept once an amendment changed it. Payload checks and TCA read the plan, the broker the current terms.
    original: OrderIntent | None = None
    amendments: int = 0  # amendments the broker accepted
    amend_pending: int = 0  # the revision of an amendment asked for and not answered yet (0: none)
    amend_refusal: str = ""  # the broker's (or kit's) words on the latest refused amendment

    @property
    def planned(self) -> OrderIntent:
        """The intent as planned: what a re-run of the same run key is compared with."""
        return self.original or self.intent

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    # Sums use math.fsum (exact, then rounded once) so the totals do not depend on the order fills arrived in.
    @property
    def filled_quantity(self) -> float:
        return math.fsum(f.quantity for f in self.fills.values())

    @property
    def remaining_quantity(self) -> float:
        """FIX LeavesQty: what can still fill. Zero once the order is terminal (a fill completes it, or the
        broker ended it)."""
        if self.status in TERMINAL:
            return 0.0
        return max(self.intent.quantity - self.filled_quantity, 0.0)

    @property
    def avg_fill_price(self) -> float | None:
        filled = self.filled_quantity
        if filled <= 0:
            return None
        prices = [f.price for f in self.fills.values()]
        vwap = math.fsum(f.quantity * f.price for f in self.fills.values()) / filled
        # Rounding must not put the mean outside the fill prices: one fill of 5 at 0.91 averages 0.91.
        return min(max(vwap, min(prices)), max(prices))

    @property
    def commission(self) -> float:
        """The sum of the fills' commissions; NaN while any of them is unknown (never a partial sum)."""
        if not all(f.commission_known for f in self.fills.values()):
            return math.nan
        return math.fsum(f.commission for f in self.fills.values())  # type: ignore[misc]

    # ---- the lifecycle facts: the one definition of each, used by the engine, the ledger and reconcile ----
    @property
    def at_broker(self) -> bool:
        """Handed to a broker (or filled there): no longer just a plan, so never sent again blindly."""
        return self.submitted_at is not None or bool(self.fills)

    @property
    def can_fill(self) -> bool:
        """Quantity is left that a broker could still execute (FIX LeavesQty > 0), sent or not."""
        return self.remaining_quantity > 0

    @property
    def working(self) -> bool:
        """At a broker and able to fill: what a cancel is for and what a run waits on."""
        return self.at_broker and self.remaining_quantity > 0

    @property
    def settled(self) -> bool:
        """Nothing more is expected from the broker: it cannot fill, and every fill's commission is known."""
        return not self.can_fill and all(f.commission_known for f in self.fills.values())

    def copy(self) -> Order:
        return replace(self, fills=dict(self.fills))
