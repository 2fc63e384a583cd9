"""Test helpers that more than one test file needs: one definition each.

Baskets for the IB tests, the far-from-the-market limit order that rests until cancelled, a scripted
broker that answers each order with the events a test writes for it, what the simulated gateway has of a
run, and where ib_insync's environment is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from kit.brokers.base import Broker
from kit.clock import utcnow
from kit.model import BrokerEvent, Cancelled, OrderIntent

ROOT = Path(__file__).resolve().parents[1]
INSYNC_PYTHON = ROOT / ".venv-insync" / "bin" / "python"


def require_insync() -> Path:
    """.venv-insync's python. Without it a developer's run skips the ib_insync tests; CI, where `make test`
    builds it, fails instead of passing without them."""
    if not INSYNC_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-insync is missing: `make test` builds it")
        pytest.skip(".venv-insync is missing: run `make insync` (make test builds it)")
    return INSYNC_PYTHON


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


# ---- what the simulated gateway (kit.gateway.GatewayThread) has -----------------------------------------


def of_run(ref: str, run_key: str | None) -> bool:
    """Is this orderRef (or client_order_id) one of the run's? Any is, without a run_key."""
    return run_key is None or ref.startswith(f"{run_key}-")  # orderRef = client_order_id = run_key-...


def gateway_placements(gw: Any, run_key: str | None = None) -> dict[str, int]:
    """orderRef -> how many times it was placed at the gateway (of one run's orders, with run_key)."""
    placements = gw.call(lambda: dict(gw.state.placements))
    return {ref: n for ref, n in placements.items() if of_run(ref, run_key)}


def gateway_executions(gw: Any, run_key: str | None = None) -> dict[str, float]:
    """exec_id -> shares as the gateway has them, corrections replacing what they correct."""
    executions = gw.call(lambda: list(gw.state.effective_executions()))
    return {e.exec_id: e.shares for e in executions if of_run(e.order.order_ref, run_key)}


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The orders of a run's report (tests.ib_driver.report) by client_order_id; the report must not be an
    error's."""
    assert "error" not in result, result["error"]
    return {o["client_order_id"]: o for o in result["orders"]}
