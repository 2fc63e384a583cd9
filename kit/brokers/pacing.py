"""IB's pacing as a token bucket on the event loop, under every message the client library sends.

IB counts every message a client sends (orders, modifies, cancels, requests) and answers error 100 above 50
in one second. The client libraries' own throttle (ib_async, ib_insync: at most MaxRequests sends in any
RequestsInterval) schedules each wait from the last actual send, so timer lateness adds up and a basket
runs below the limit; bursts of many messages also arrive at IB bunched. A token bucket refills by the
clock instead: `rate` tokens a second, at most `burst` held, one spent per message. Any window of T seconds
then carries at most burst + rate * T messages (rate 49, burst 1: at most 50 in any second at the sender,
with the headroom of one message for the network's jitter), and a late timer costs nothing over a basket:
the tokens it missed are still there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class TokenBucket:
    """Paces the messages of one client library connection (its `sendMsg`)."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] | None = None):
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._at: float | None = None
        self._queue: deque[str] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._send: Callable[[str], None] | None = None
        self.sent = 0

    def install(self, client: Any) -> None:
        """Route the client's messages through the bucket; the library's own throttle is turned off
        (MaxRequests = 0), so its sendMsg writes each message the moment the bucket lets it go."""
        client.MaxRequests = 0
        self._send = type(client).sendMsg.__get__(client)
        client.sendMsg = self.submit

    def clear(self) -> None:
        """The connection is gone: messages still queued were never sent, and never will be on a new one
        (an order id of the old connection may mean another order there). Whoever needs them sends again."""
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def submit(self, message: str | None) -> None:
        if message:
            self._queue.append(message)
        if self._timer is None:  # else the timer due sends it, in order
            self._drain()

    def _now(self, loop: asyncio.AbstractEventLoop) -> float:
        return self._clock() if self._clock is not None else loop.time()

    def _drain(self) -> None:
        self._timer = None
        assert self._send is not None, "TokenBucket used before install()"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a library call outside any loop (none in kit's flow): nothing to pace on
            while self._queue:
                self._send(self._queue.popleft())
            return
        now = self._now(loop)
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        while self._queue and self._tokens >= 1:
            self._tokens -= 1
            self.sent += 1
            self._send(self._queue.popleft())
        if self._queue and self._timer is None:
            self._timer = loop.call_later((1 - self._tokens) / self.rate, self._drain)
