"""Helpers for driving the simulated gateway with the real ib_async client inside one event loop.

No sleeps: ``until`` re-checks a condition each time the client has processed a batch of messages
(``IB.updateEvent``), and ``next_emit`` waits for one emission of an eventkit event that was armed before
the action that causes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ib_async import IB, Stock

from kit.gateway import Gateway, GatewayConfig

T = TypeVar("T")
TIMEOUT = 5.0


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario in a fresh event loop, failing if it takes longer than timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(ib: IB, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until predicate() holds, re-checking after each batch of messages the client processed."""
    if predicate():
        return
    done = asyncio.get_running_loop().create_future()

    def check(*_: object) -> None:
        if not done.done() and predicate():
            done.set_result(None)

    ib.updateEvent += check
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        ib.updateEvent -= check


def next_emit(event: Any) -> Awaitable[tuple[Any, ...]]:
    """A future of the event's next emission (its arguments); arm it before causing the emission."""
    future = asyncio.get_running_loop().create_future()

    def fire(*args: object) -> None:
        if not future.done():
            future.set_result(args)
        event.disconnect(fire)

    event.connect(fire)
    return asyncio.wait_for(future, TIMEOUT)


async def connect(gw: Gateway, client_id: int = 1, **kwargs: Any) -> IB:
    ib = IB()
    await ib.connectAsync("127.0.0.1", gw.port, clientId=client_id, **kwargs)
    return ib


def stock(symbol: str, exchange: str = "SMART", currency: str = "USD") -> Stock:
    return Stock(symbol, exchange, currency)


def errors_of(ib: IB) -> list[tuple[int, int]]:
    """A live list of the (reqId, code) of every error and notice the client receives."""
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _msg, _contract: seen.append((req_id, code))
    return seen


def filled_with_commissions(trade: Any) -> Callable[[], bool]:
    return lambda: (
        trade.isDone() and bool(trade.fills) and all(f.commissionReport.execId for f in trade.fills)
    )


def gateway(**config: Any) -> Gateway:
    return Gateway(GatewayConfig(**config))
