"""Test helpers that more than one test file needs: one definition each.

Baskets for the IB tests, the far-from-the-market limit order that rests until cancelled, and a scripted
broker that answers each order with the events a test writes for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kit.brokers.base import Broker
from kit.clock import utcnow
from kit.model import BrokerEvent, Cancelled, OrderIntent

# Three stocks, one of them in EUR on its primary exchange: what a real IB basket mixes.
IB_BASKET = {
    "symbol": ["AAPL", "MSFT", "TTE"],
    "side": ["BUY", "SELL", "BUY"],
    "quantity": [300, 120, 40],
    "currency": ["USD", "USD", "EUR"],
    "primary_exchange": ["NASDAQ", "NASDAQ", "SBF"],
}
# A limit far below the market: it rests, working, until a timeout cancels it or leaves it.
FAR_LIMIT = {"symbol": ["AAPL"], "side": ["BUY"], "quantity": [10], "order_type": ["LMT"],
             "limit_price": [1.0]}


class ScriptedBroker(Broker):
    """Answers each order with `script(order)`, the events a real broker's session might deliver for it.

    By default it knows nothing on sync (a new process, as far as a resume can tell); with `remember`, sync
    replays what it told about each order it knows, as a broker lists its orders and executions. A cancel is
    recorded and, with `confirm_cancels`, confirmed at once, followed by `after_cancel(client_order_id)`'s
    events (a fill racing the cancel); otherwise it goes unanswered, like a broker that never replies.
    """

    name = "scripted"
    account = "DU000001"

    def __init__(self, script: Callable[[OrderIntent], Iterable[BrokerEvent]], *,
                 confirm_cancels: bool = False,
                 after_cancel: Callable[[str], Iterable[BrokerEvent]] | None = None, remember: bool = False):
        super().__init__()
        self.script = script
        self.confirm_cancels = confirm_cancels
        self.after_cancel = after_cancel
        self.remember = remember
        self.submitted: list[str] = []
        self.cancel_requests: list[str] = []
        self.told: dict[str, list[BrokerEvent]] = {}  # client_order_id -> every event emitted for it

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _tell(self, client_order_id: str, events: Iterable[BrokerEvent]) -> None:
        for event in events:
            self.told.setdefault(client_order_id, []).append(event)
            self.emit(event)

    async def submit(self, order: OrderIntent) -> None:
        self.submitted.append(order.client_order_id)
        self._tell(order.client_order_id, self.script(order))

    async def cancel(self, client_order_id: str) -> None:
        self.cancel_requests.append(client_order_id)
        if self.confirm_cancels:
            self._tell(client_order_id, [Cancelled(client_order_id, utcnow(), "timeout")])
            if self.after_cancel is not None:
                self._tell(client_order_id, self.after_cancel(client_order_id))

    async def sync(self, orders: Any) -> set[str]:
        if not self.remember:
            return set()
        known = {o.client_order_id for o in orders if o.client_order_id in self.told}
        for client_order_id in sorted(known):
            for event in list(self.told[client_order_id]):
                self.emit(event)
        return known
