"""The data kit passes between layers: order intents, order state, fills and normalized broker events.

Brokers translate their own world into the small set of events below; nothing above the broker layer
knows which broker produced them. Everything here is plain data: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from itertools import repeat
from math import fsum
from operator import attrgetter
from typing import Any


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
    "stop_price", "trail_amount", "trail_percent", "offset", "outside_rth", "good_till", "algo",
    "algo_params",
    "expiry", "strike", "right", "multiplier",
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
    # Order types beyond MKT and LMT (kit.order_types says which type takes which): good_till is naive UTC
    # like every kit time; algo_params are IB's (tag, value) pairs in the algo's own order, values as text.
    stop_price: float | None = None
    trail_amount: float | None = None
    trail_percent: float | None = None
    offset: float | None = None
    outside_rth: bool = False
    good_till: datetime | None = None
    algo: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()
    # Instruments (kit.instruments): a future's or option's expiry (YYYYMM, YYYYMMDD, or "front" until the
    # broker resolves it), an option's strike and right, the contract multiplier (None: not known yet), and
    # what qualification learned (con_id, local_symbol).
    expiry: str = ""
    strike: float | None = None
    right: str = ""
    multiplier: float | None = None
    con_id: int | None = None
    local_symbol: str = ""

    def payload(self) -> tuple:
        return tuple(getattr(self, name) for name in PAYLOAD_FIELDS)


_INTENT_FIELDS = [(spec, OrderIntent.__dict__[spec.name]) for spec in fields(OrderIntent)]


def intents_of(columns: Mapping[str, list[Any]]) -> list[OrderIntent]:
    """One OrderIntent per row of `columns` (a list per field; a field not given takes its default).

    Built a field at a time: each slot of every intent is set by that slot's own descriptor, in C, with the
    values OrderIntent's generated __init__ would set one intent at a time (24 object.__setattr__ calls,
    ~4 us an intent: 0.4 s of a 100,000-row basket). OrderIntent is a plain frozen dataclass (no
    __post_init__, no default_factory); tests/test_plan_pins.py checks that these are the intents its
    constructor builds."""
    count = len(columns["client_order_id"])
    if any(len(values) != count for values in columns.values()) or any(
            f.default is MISSING and f.name not in columns for f, _ in _INTENT_FIELDS):
        raise ValueError("intents_of needs every required field, in columns of one length")
    intents = list(map(object.__new__, repeat(OrderIntent, count)))
    for spec, slot in _INTENT_FIELDS:
        deque(map(slot.__set__, intents, columns.get(spec.name, repeat(spec.default))), maxlen=0)
    return intents


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


@dataclass(frozen=True, slots=True)
class ArrivalPrice:
    """The market at submission, for TCA, learned after the order went out (IB's snapshot is requested
    behind the orders so it never delays them). Sets an order's arrival price if it has none; it never moves
    quantities or status."""

    client_order_id: str
    at: datetime
    price: float
    kind = "arrival"


# ---- amendments: a working order's terms changed through the broker (IB: placeOrder again, same id) ----
# The fields an amendment may change; IB lets a modify change price, quantity and tif, never the side,
# the contract or the order type. A trailing stop's prices are its trail (IB's auxPrice or
# trailingPercent) and a TRAIL LIMIT's or REL's offset (lmtPriceOffset; a REL's auxPrice). Which type takes
# which is kit.amending.check_changes'.
AMENDABLE_FIELDS = ("quantity", "limit_price", "stop_price", "tif", "trail_amount", "trail_percent", "offset")


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
               | ArrivalPrice | AmendAccepted | AmendRefused)
Event = Submitted | AmendRequested | BrokerEvent


class Fills(dict):
    """An order's fills (execution_key -> latest revision) that count their changes, so the order's sums are
    computed once per change instead of on every read (the engine reads `working` once per event)."""

    # A slot, not an instance __dict__ (168 bytes per order: the largest single allocation of a 100,000-order
    # run), set in __new__ so a copy or an unpickled one (items set before any __init__) counts too.
    __slots__ = ("version",)

    def __new__(cls, *args: object, **kwargs: object) -> Fills:
        fills = super().__new__(cls)
        fills.version = 0
        return fills

    def __setitem__(self, key: str, value: Fill) -> None:
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.version += 1

    def pop(self, *args: object) -> object:  # type: ignore[override]
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> tuple[str, Fill]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def update(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        self.version += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Fill) -> Fill:  # type: ignore[override]
        self.version += 1
        return super().setdefault(key, default)

    def __ior__(self, other: object) -> Fills:  # type: ignore[override]
        self.version += 1
        return super().__ior__(other)  # type: ignore[return-value]


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
    # filled_quantity and "every commission known", and the fills version they hold for (see Fills): a
    # cache, not state; the engine asks `working` and `settled` about an order at every event.
    _totals: tuple[float, bool] = field(default=(0.0, True), init=False, repr=False, compare=False)
    _totals_of: tuple[object, int] = field(default=(None, -1), init=False, repr=False, compare=False)
    # The average price and commission of the same fills version (fill_totals), kept apart: the fold needs
    # only the quantity at every fill, a ledger row or a progress drawing all four, often of the same fills.
    _sums: tuple[float | None, float] = field(default=(None, 0.0), init=False, repr=False, compare=False)
    _sums_of: tuple[object, int] = field(default=(None, -1), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.fills) is not Fills:
            self.fills = Fills(self.fills)
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

    def _totals_now(self) -> tuple[float, bool]:
        fills = self.fills
        version = fills.version if type(fills) is Fills else -1  # a plain dict put in its place: no cache
        cached, cached_version = self._totals_of
        if cached is fills and cached_version == version >= 0:
            return self._totals
        values = fills.values()
        self._totals = (fsum(map(_quantity, values)), all(map(_commission_known, values)))
        self._totals_of = (fills, version)
        return self._totals

    # Sums use math.fsum (exact, then rounded once) so the totals do not depend on the order fills arrived in.
    @property
    def filled_quantity(self) -> float:
        return self._totals_now()[0]

    @property
    def remaining_quantity(self) -> float:
        """FIX LeavesQty: what can still fill. Zero once the order is terminal (a fill completes it, or the
        broker ended it)."""
        if self.status in TERMINAL:
            return 0.0
        return max(self.intent.quantity - self.filled_quantity, 0.0)

    @property
    def avg_fill_price(self) -> float | None:
        return self.fill_totals()[2]

    @property
    def commission(self) -> float:
        """The sum of the fills' commissions; NaN while any of them is unknown (never a partial sum)."""
        return self.fill_totals()[3]

    def fill_totals(self) -> tuple[float, float, float | None, float]:
        """filled_quantity, remaining_quantity, avg_fill_price and commission at once (what a ledger row
        shows), from one pass over the fills."""
        filled, known = self._totals_now()
        remaining = self.remaining_quantity
        fills = self.fills
        version = fills.version if type(fills) is Fills else -1
        cached, cached_version = self._sums_of
        if cached is fills and cached_version == version >= 0:
            return (filled, remaining, *self._sums)
        values = fills.values()
        average = None
        if not values:
            commission = 0.0
        else:
            if filled > 0:
                prices = [f.price for f in values]
                vwap = fsum([f.quantity * f.price for f in values]) / filled
                # Rounding must not put the mean outside the fill prices: one fill of 5 at 0.91 averages 0.91.
                average = min(max(vwap, min(prices)), max(prices))
            commission = fsum([f.commission for f in values]) if known else math.nan  # type: ignore[misc]
        self._sums, self._sums_of = (average, commission), (fills, version)
        return filled, remaining, average, commission

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
        return not self.can_fill and self._totals_now()[1]

    def copy(self) -> Order:
        return replace(self, fills=dict(self.fills))


_quantity = attrgetter("quantity")
_commission_known = attrgetter("commission_known")
