"""Waiting on an IB client's own events, for ib_async and ib_insync alike: one definition for both.

The two libraries run in different environments (.venv and .venv-insync), so this module imports neither,
nor kit: it needs only an object with an eventkit ``updateEvent`` (``IB``) or an eventkit event. No sleeps:
a condition is re-checked each time the client has processed a batch of messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

TIMEOUT = 5.0


async def until(ib: Any, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
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


def next_emit(event: Any, timeout: float = TIMEOUT) -> Awaitable[tuple[Any, ...]]:
    """A future of the event's next emission (its arguments); arm it before causing the emission."""
    future = asyncio.get_running_loop().create_future()

    def fire(*args: object) -> None:
        if not future.done():
            future.set_result(args)
        event.disconnect(fire)

    event.connect(fire)
    return asyncio.wait_for(future, timeout)
