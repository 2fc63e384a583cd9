"""A deterministic in-process broker for research, demos and tests.

It plays a tiny exchange on the running event loop: acknowledgements, partial fills and commissions are
scheduled with loop.call_later, so the engine sees the same kind of event stream an IB session gives. The
same seed, prices and orders always give the same executions.

Its world lives in its process (in this object). kit lists it before every send like any broker, so within
one process an order it already has is never sent again; but a new process starts with an empty mock, and
there the ledger is the only record of what the mock was sent: for the mock, "the broker's record" is the
ledger. A lost ledger with a new mock forgets everything, which costs nothing, since nothing was traded.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import pandas as pd

from kit.brokers.base import Broker, Notice
from kit.clock import utcnow
from kit.model import (
    Accepted,
    AmendAccepted,
    AmendRefused,
    BrokerEvent,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Order,
    OrderIntent,
    Rejected,
    Side,
)
from kit.slicing import split
from kit.validate import check_price, check_prices


@dataclass(frozen=True)
class CommissionModel:
    """Per-share commission with a floor and a cap, the shape of IB's fixed pricing."""

    per_share: float = 0.005
    minimum: float = 1.0
    maximum_rate: float = 0.01  # of notional

    def __call__(self, quantity: float, price: float) -> float:
        fee = max(quantity * self.per_share, self.minimum)
        return round(min(fee, quantity * price * self.maximum_rate), 6)


def reference_prices(prices: Mapping[str, float] | pd.DataFrame | pd.Series | None) -> dict[str, float]:
    """A dict {symbol: price}, a Series, or a DataFrame (wide or long), each price checked like a target's
    (kit.validate.check_prices): a bad one is an InputError naming its symbol."""
    return check_prices(prices)


@dataclass
class _Working:
    intent: OrderIntent
    number: int
    chunks: list[float]
    fills_sent: int = 0
    cancelled: bool = False  # cancelled or rejected: it fills no more
    # The fills scheduled on the loop belong to one generation; a new schedule (the market came back,
    # a new session) retires the old one, so a chunk is never scheduled twice.
    generation: int = 0
    scheduled: bool = False
    sent: list[BrokerEvent] = field(default_factory=list)  # everything told about it, replayed by sync

    @property
    def done(self) -> bool:
        return self.cancelled or self.fills_sent == len(self.chunks)


class MockBroker(Broker):
    """MKT orders fill at the reference price, in `partial_fills` pieces; LMT orders fill when the
    reference price reaches the limit (see set_price) and otherwise stay working; a symbol without a price
    is rejected with reason `price_unavailable`."""

    name = "mock"
    account = "MOCK-PAPER"
    is_paper = True

    def __init__(
        self,
        prices: Mapping[str, float] | pd.DataFrame | pd.Series | None = None,
        *,
        seed: int = 0,
        partial_fills: int | tuple[int, int] = 1,
        latency: float = 0.0,
        commission: Callable[[float, float], float] = CommissionModel(),
        currency: str = "USD",
    ) -> None:
        super().__init__()
        self.prices = reference_prices(prices)
        self.seed = seed
        self.partial_fills = partial_fills
        self.latency = latency
        self.commission = commission
        self.currency = currency
        self.orders: dict[str, _Working] = {}
        self.submitted: list[str] = []  # every client_order_id ever submitted, duplicates included
        self._loop: asyncio.AbstractEventLoop | None = None

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Resting orders live on across sessions: fills scheduled on an earlier, closed loop never ran,
        # and the market may have moved in between (set_price while disconnected).
        for working in self.orders.values():
            working.scheduled = False
            self._maybe_fill(working)

    async def close(self) -> None:
        self._loop = None

    def reference_price(self, symbol: str) -> float | None:
        return self.prices.get(symbol)

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market: resting LMT orders that the new price reaches start filling. While no session
        is connected the price just moves; the orders it reaches fill when the next session connects."""
        symbol, self.prices[symbol] = check_price(symbol, price)
        if self._loop is None:
            return
        for working in self.orders.values():
            if working.intent.symbol == symbol:
                self._maybe_fill(working)

    async def submit(self, order: OrderIntent) -> None:
        self.submitted.append(order.client_order_id)
        # Ids unique across runs and processes (fills are keyed by exec_id in the ledger), same every time.
        # 64 bits of the hash: with 32, two orders of a 100,000-order basket likely share an exec id.
        number = int(hashlib.sha256(order.client_order_id.encode()).hexdigest()[:16], 16)
        rng = random.Random(f"{self.seed}:{order.client_order_id}")
        working = _Working(order, number, split(order.quantity, _pieces(self.partial_fills, rng), rng))
        self.orders[order.client_order_id] = working
        if order.symbol not in self.prices:
            self._tell(working, Rejected(order.client_order_id, utcnow(), "price_unavailable"))
            working.cancelled = True
            return
        self._tell(working, Accepted(order.client_order_id, utcnow(),
                                     broker_order_id=str(len(self.submitted)), perm_id=str(number)))
        self._maybe_fill(working)

    async def cancel(self, client_order_id: str) -> None:
        working = self.orders.get(client_order_id)
        if working is None or working.done:
            notice = BrokerNotice(utcnow(), Notice.NOT_WORKING, "cancel of an order that is not working",
                                  client_order_id)
            self._call(0, self.emit, notice)
            return
        working.cancelled = True
        self._tell(working, Cancelled(client_order_id, utcnow(), "cancelled by request"))

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        """IB's modify rules: a filled or cancelled order cannot change, nor can its side, contract or
        type; a quantity must stay above what has filled. An accepted change re-slices what is left."""
        coid = order.client_order_id
        working = self.orders.get(coid)
        filled = 0.0 if working is None else sum(working.chunks[:working.fills_sent])
        reason = None
        if working is None:
            reason = "no such order at the mock broker"
        elif working.done:
            reason = "the order is cancelled" if working.cancelled else "cannot modify a filled order"
        elif (order.symbol, order.side, order.order_type) != (working.intent.symbol, working.intent.side,
                                                              working.intent.order_type):
            reason = "the order being modified does not match the original order"
        elif order.quantity <= filled:
            reason = f"{filled:g} are already filled"
        if reason is not None:
            self._call(0, self.emit, AmendRefused(coid, utcnow(), reason, revision, changes))
            return
        assert working is not None
        rng = random.Random(f"{self.seed}:{coid}:{revision}")
        left = len(working.chunks) - working.fills_sent
        working.chunks = working.chunks[:working.fills_sent] + split(order.quantity - filled, left, rng)
        working.intent = replace(working.intent, **changes)
        working.scheduled = False
        working.generation += 1  # fills scheduled on the old terms are retired
        self._tell(working, AmendAccepted(coid, utcnow(), changes, revision))
        self._maybe_fill(working)

    async def what_if(self, order: OrderIntent) -> dict[str, float | str | None]:
        price = self.prices.get(order.symbol)
        if price is None:
            return {"warning": "price_unavailable"}
        return {"price": price, "notional": price * order.quantity,
                "commission": self.commission(order.quantity, price)}

    async def sync(self, orders: Iterable[Order]) -> set[str]:
        """Replay everything this broker told about these orders (acks, fills, commissions, cancels), as
        Broker.sync promises: events the last session never received are delivered now, and the rest are
        recognised as duplicates. A mock broker's memory lives in this object: a new process knows nothing
        of earlier orders."""
        known = set()
        for order in orders:
            working = self.orders.get(order.client_order_id)
            if working is not None:
                known.add(order.client_order_id)
                for event in list(working.sent):
                    self.emit(event)
        return known

    def _marketable(self, intent: OrderIntent) -> bool:
        if intent.order_type == "MKT":
            return True
        price = self.prices[intent.symbol]
        return price <= intent.limit_price if intent.side is Side.BUY else price >= intent.limit_price

    def _maybe_fill(self, working: _Working) -> None:
        """Schedule the chunks still to fill, once: a second price move while they wait adds nothing."""
        if working.done or working.scheduled or not self._marketable(working.intent):
            return
        working.scheduled = True
        working.generation += 1
        for step, index in enumerate(range(working.fills_sent, len(working.chunks)), start=1):
            self._call(self.latency * step, self._fill, working, index, working.generation)

    def _tell(self, working: _Working, event: BrokerEvent) -> None:
        working.sent.append(event)
        self._call(0, self.emit, event)

    def _call(self, delay: float, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None, "MockBroker used before connect()"
        if delay > 0:
            self._loop.call_later(delay, callback, *args)
        else:
            self._loop.call_soon(callback, *args)

    def _fill(self, working: _Working, index: int, generation: int) -> None:
        if generation != working.generation or working.done or index != working.fills_sent:
            return
        if not self._marketable(working.intent):
            # The market moved away from the limit before this fill: a limit order never fills through
            # its limit. It rests until set_price reaches the limit again.
            working.scheduled = False
            working.generation += 1
            return
        intent = working.intent
        price = self.prices[intent.symbol]
        quantity = working.chunks[index]
        key = f"mock.{working.number:016x}.{index + 1:02d}"  # the mock never corrects: revision 1 of each
        exec_id = f"{key}.01"
        at = utcnow()
        working.fills_sent += 1
        if working.done:
            working.scheduled = False
        for event in (Execution(Fill(exec_id, intent.client_order_id, quantity, price, at,
                                     currency=intent.currency, exchange="MOCK", key=key, revision=1), at),
                      Commission(exec_id, self.commission(quantity, price), intent.currency, at,
                                 intent.client_order_id)):
            working.sent.append(event)
            self.emit(event)


def _pieces(pieces: int | tuple[int, int], rng: random.Random) -> int:
    """partial_fills as a count, or a (min, max) range drawn from the order's own rng."""
    return rng.randint(*pieces) if isinstance(pieces, tuple) else pieces
