"""Helpers for driving the simulated gateway with the real ib_async client inside one event loop.

No sleeps: ``until`` and ``next_emit`` (from updates.py, shared with the ib_insync driver) wait on the
client's own events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ib_async import IB, Stock
from updates import next_emit, until

from kit.gateway import Gateway, GatewayConfig

T = TypeVar("T")
__all__ = ["connect", "errors_of", "filled_with_commissions", "gateway", "next_emit", "run", "stock", "until",
           "with_client"]


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario in a fresh event loop, failing if it takes longer than timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def with_client(**config: Any) -> Callable[[Callable[[Gateway, IB], Coroutine[Any, Any, None]]],
                                            Callable[[], None]]:
    """Make `async def test_x(gw, ib)` a test: its body runs in a fresh event loop (under run's timeout)
    against a fresh gateway with this config, with one ib_async client connected as clientId 1 and
    disconnected afterwards."""

    def decorate(body: Callable[[Gateway, IB], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        async def scenario() -> None:
            async with gateway(**config).serving() as gw:
                ib = await connect(gw)
                try:
                    await body(gw, ib)
                finally:
                    ib.disconnect()

        def test() -> None:
            run(scenario())

        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return test

    return decorate


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
