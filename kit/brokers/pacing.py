"""IB's pacing, on the event loop, under every message the client library sends.

IB counts every message a client sends (orders, modifies, cancels, requests) and answers error 100 above 50
in one second. The client libraries' own throttle (ib_async, ib_insync: at most MaxRequests sends in any
RequestsInterval) lets MaxRequests go at once: shipped as 45 per second, a burst of 45 that the receiving
side handles late lands in the same second as the next one (81-85 in a second on kit's simulated gateway,
which answers error 100 as IB does). Made smooth instead (a message every 1/rate s, each wait counted from
the last send), every timer that fires late on a busy loop is lost for good and a basket runs far below
the limit.

kit's Pacer keeps two rules, on the loop's clock:
- the window: at most `limit` messages in any `window` seconds (48 in any second: two of headroom under
  IB's 50 for a receiver that reads a little late);
- the spacing: a token bucket of `catch_up` tokens a second holding at most `burst`, one spent per
  message, so messages leave a few at a time, never 48 at once; after a stall of the loop the bucket lets
  the messages that are due go at up to `catch_up` a second until the window says stop. A late timer
  costs a little spacing, never the rate.
Sustained, a queue drains at `limit / window` messages a second: 96% of IB's 50.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Pacer:
    """Paces the messages of one client library connection (its `sendMsg`)."""

    def __init__(self, limit: int = 48, window: float = 1.0, catch_up: float = 60.0, burst: int = 2):
        if limit < 1 or window <= 0 or catch_up <= 0 or burst < 1:
            raise ValueError(f"pacing needs limit, window, catch_up and burst above 0: "
                             f"{limit}, {window}, {catch_up}, {burst}")
        self.limit, self.window, self.catch_up, self.burst = limit, window, catch_up, burst
        self._sent: deque[float] = deque()  # send times within the last window
        self._tokens = float(burst)
        self._at: float | None = None
        self._queue: deque[str] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._send: Callable[[str], None] | None = None
        self.sent = 0

    def install(self, client: Any) -> None:
        """Route the client's messages through the pacer; the library's own throttle is turned off
        (MaxRequests = 0), so its sendMsg writes each message the moment the pacer lets it go."""
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

    def _drain(self) -> None:
        self._timer = None
        assert self._send is not None, "Pacer used before install()"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a library call outside any loop (none in kit's flow): nothing to pace on
            while self._queue:
                self._send(self._queue.popleft())
            return
        now = loop.time()
        sent = self._sent
        while sent and now - sent[0] >= self.window:
            sent.popleft()
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.catch_up)
        self._at = now
        while self._queue and self._tokens >= 1 and len(sent) < self.limit:
            self._tokens -= 1
            sent.append(now)
            self.sent += 1
            self._send(self._queue.popleft())
        if self._queue:
            window_opens = sent[0] + self.window - now if len(sent) >= self.limit else 0.0
            token_comes = max(0.0, (1 - self._tokens) / self.catch_up)
            self._timer = loop.call_later(max(window_opens, token_comes), self._drain)
