"""What the engine needs from a broker, and nothing more.

A broker pushes normalized events (kit.model) into the sink the engine binds; the engine never asks a
broker "is it filled yet?". Every broker reuses kit.state to interpret those events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import date
from enum import StrEnum
from typing import Any

from kit.clock import utcnow
from kit.instruments import Contract, Spec
from kit.model import AmendRefused, BrokerEvent, Order, OrderIntent, Side

EventSink = Callable[[BrokerEvent], None]


class Notice(StrEnum):
    """What a broker says about the session as a whole, as a BrokerNotice code. Broker-neutral: each
    broker maps its own world onto these; its own codes (IB's 2104, ...) stay its own and decide nothing."""

    DISCONNECTED = "disconnected"  # the connection was lost; the broker is reconnecting
    RECONNECTED = "reconnected"  # back; what happened meanwhile is replayed as ordinary events
    RECONNECT_FAILED = "reconnect_failed"  # gave up reconnecting
    SYNC_INCOMPLETE = "sync_incomplete"  # a listing of orders and executions was cut short
    UNACKNOWLEDGED = "unacknowledged"  # an order the broker neither acknowledged nor lists
    CANCEL_IMPOSSIBLE = "cancel_impossible"  # this session cannot cancel that order
    RESENT = "resent"  # an order lost before it reached the broker was placed again
    NOT_WORKING = "not_working"  # a cancel of an order that is no longer working: nothing to do
    FILLS_DISAGREE = "fills_disagree"  # the broker's cumulative figures differ from the executions counted
    UNTRANSLATED = "untranslated"  # a broker message kit could not read: the run stops
    ID_COLLISION = "id_collision"  # the broker refused an order id already used; placed again with a new one


# The notices a run's notes report: each changes what the user should know about the run.
RUN_NOTICES = frozenset(Notice) - {Notice.NOT_WORKING}


class Broker(ABC):
    name: str = "broker"
    account: str = ""
    is_paper: bool = True
    # After sync(): True when the broker listed everything it has, so an order it does not know was
    # never received by it (and may be sent). False when the answer was cut short.
    sync_is_complete: bool = True
    # After sync(): True when the broker listed every order it has (open and completed), executions aside:
    # what kit needs before it sends anything, so an order the broker already has is never sent again.
    orders_listed: bool = True

    def __init__(self) -> None:
        self._sink: EventSink | None = None

    def bind(self, sink: EventSink) -> None:
        """Where events go. Called by the engine before connect()."""
        self._sink = sink

    def emit(self, event: BrokerEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def prepare(self, orders: list[OrderIntent]) -> None:
        """Look up what the orders need (contracts, prices) in one batch before the first submit."""
        return None

    @abstractmethod
    async def submit(self, order: OrderIntent) -> None:
        """Send the order. Acknowledgement, fills and rejections arrive later as events."""

    @abstractmethod
    async def cancel(self, client_order_id: str) -> None:
        """Ask for a cancel. The order is cancelled only when a Cancelled event confirms it."""

    @abstractmethod
    async def sync(self, orders: Iterable[Order]) -> set[str]:
        """Replay what the broker knows of these orders as events; return the client_order_ids it knows.

        Called before anything is sent, on a first run as on a resume, with every order of the run: an order
        the broker already has is followed, never sent again, whatever the ledger holds.
        """

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        """Ask the broker to work the order on new terms (`order` is the intent with `changes` applied).
        Its answer arrives as AmendAccepted or AmendRefused carrying `revision`."""
        self.emit(AmendRefused(order.client_order_id, utcnow(), f"the {self.name} broker cannot amend "
                               "orders", revision, changes))

    def touch(self, symbol: str, side: Side) -> float | None:
        """The price a marketable order on this side would meet (a BUY the ask, a SELL the bid): where
        kit.Reprice walks a resting limit toward. The reference price where the broker knows no quote."""
        return self.reference_price(symbol)

    def reference_price(self, symbol: str) -> float | None:
        """The price at submission, recorded as the arrival price for TCA; None when unknown. `symbol` is
        the instrument key (kit.instruments.instrument_key): the symbol itself for stocks and FX."""
        return None

    async def qualify(self, specs: list[Spec], today: date) -> dict[Spec, Contract | str]:
        """The contract each spec designates (kit.instruments.choose over the broker's candidates), or why
        none does, listing the candidates. Planning calls it for futures, FX and options, so "front", the
        multiplier and the contract id are known before risk checks and before anything is sent."""
        return {}

    async def what_if(self, order: OrderIntent) -> dict[str, float | str | None]:
        """Estimates for a dry run (margin, commission); empty when the broker cannot say."""
        return {}

    # Where planning finds current positions and working orders: a broker that keeps an account (IB)
    # answers positions() and working(); for one that does not (the mock), kit reads its own ledger.
    keeps_positions: bool = False
    # Where qualification keeps what it learned (a kit.store.Ledger: its contract cache), set by kit.api.
    contract_cache: Any = None

    async def positions(self) -> dict[str, float]:
        return {}

    async def working(self) -> dict[str, float]:
        """Signed remaining quantity of working orders per symbol."""
        return {}
