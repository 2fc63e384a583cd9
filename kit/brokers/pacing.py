"""IB's pacing, on the event loop, under every message the client library sends.

IB counts every message a client sends (orders, modifies, cancels, contract and market-data requests,
their cancellations) and answers error 100 above 50 in one second, measured where IB receives them (and
keeps disconnecting a client that goes on). The client libraries' own throttle (ib_async, ib_insync: at
most MaxRequests sends in any RequestsInterval) lets MaxRequests go at once: shipped as 45 per second, a
burst of 45 that the receiving side handles late lands in the same second as the next one (81-85 in a
second on kit's simulated gateway, which answers error 100 as IB does). Made smooth instead (a message
every 1/rate s, each wait counted from the last send), every timer that fires late on a busy loop is lost
for good and a basket runs far below the limit.

kit's Pacer keeps two rules, on the loop's clock:
- the window: at most `limit` messages in any `window + margin` seconds (IB's 50 in any 1.04 s). The
  margin is how much later the receiving side may read one message than another sent before it and
  still count no second above 50 (any second as IB measures it then holds at most 50). The rate is
  `limit / (window + margin)` whatever the design, so a margin is paid in rate: 40 ms costs 4% (48 in any
  second allowed about 18 ms, simulated, at the same rate); with 30 ms a 500-order pacing test failed once
  on this loaded machine;
- the spacing: a token bucket of `catch_up` tokens a second holding at most `burst`, one spent per
  message, so messages leave a few at a time, never 50 at once; after a stall of the loop the bucket lets
  the messages that are due go at up to `catch_up` a second until the window says stop. A late timer
  costs a little spacing, and rate only when the loop is busy for more than `1 - rate / catch_up` of a
  window (a sliding window never gives back time lost inside it).
Sustained, a queue drains at `limit / (window + margin)` messages a second: 96% of IB's 50. Nothing
sleeps or polls: the next send is a timer on the loop, due when the window or the bucket next allows one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class Pacer:
    """Paces the messages of one client library connection (its `sendMsg`)."""

    def __init__(self, limit: int = 50, window: float = 1.0, catch_up: float = 60.0, burst: int = 2,
                 margin: float = 0.04, sent: deque[float] | None = None):
        if limit < 1 or window <= 0 or catch_up <= 0 or burst < 1 or margin < 0:
            raise ValueError(f"pacing needs limit, window, catch_up and burst above 0 and margin from 0: "
                             f"{limit}, {window}, {catch_up}, {burst}, {margin}")
        self.limit, self.catch_up, self.burst = limit, catch_up, burst
        self.window = window + margin  # the span kit keeps; IB's own is `window`
        # Send times within the last window: `sent`, when given, is shared with the other connections IB
        # counts together (kit.brokers.ib: one per host, port and clientId), loop.time() on each (monotonic).
        self._sent: deque[float] = deque() if sent is None else sent
        self._tokens = float(burst)
        self._at: float | None = None
        self._queue: deque[str] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._send: Callable[[str], None] | None = None
        self.sent = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # (messages sent by then, waiter)

    def install(self, client: Any) -> None:
        """Route the client's messages through the pacer; the library's own throttle is turned off
        (MaxRequests = 0), so its sendMsg writes each message the moment the pacer lets it go."""
        client.MaxRequests = 0
        self._send = type(client).sendMsg.__get__(client)
        client.sendMsg = self.submit

    def drained(self) -> asyncio.Future[None]:
        """Done once every message queued so far has left: a request queued behind a basket's orders times
        its answer from then. Fails with ConnectionError if the connection goes first."""
        future = asyncio.get_running_loop().create_future()
        if self._queue:
            self._waiters.append((self.sent + len(self._queue), future))
        else:
            future.set_result(None)
        return future

    def clear(self) -> None:
        """The connection is gone: messages still queued were never sent, and never will be on a new one
        (an order id of the old connection may mean another order there). Whoever needs them sends again."""
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()[1]
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection to IB was lost"))

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
            self._send_unpaced()
            return
        now = loop.time()
        sent = self._sent
        while sent and now - sent[0] >= self.window:
            sent.popleft()
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.catch_up)
        self._at = now
        # A message's send time is read once its write returned. Read before, a write held up in between
        # (another thread holding the GIL: a ledger write, a notebook's kernel) would leave later than its
        # stamp, and 51 writes could fall in a span of stamps that holds 50. Read after, every stamp is at
        # or after its write, so the window kept between stamps holds between the writes themselves
        # whatever held them up, and the margin is left to the network and IB's side.
        try:
            while self._queue and self._tokens >= 1 and len(sent) < self.limit:
                self._tokens -= 1
                self.sent += 1
                try:
                    self._send(self._queue.popleft())
                finally:
                    sent.append(now := loop.time())
        finally:  # a send that raised (a broken socket) loses its own message, never the queue behind it
            self._release()
            if self._queue:
                window_opens = sent[0] + self.window - now if len(sent) >= self.limit else 0.0
                token_comes = max(0.0, (1 - self._tokens) / self.catch_up)
                self._timer = loop.call_later(max(window_opens, token_comes), self._drain)

    def _send_unpaced(self) -> None:
        """Everything queued, at once. Reached only with no timer due, so with nothing queued before this
        message and no drained() waiter. The send times count in the window (asyncio's loop clock is
        time.monotonic), so a paced send on a loop afterwards leaves room for them."""
        while self._queue:
            self.sent += 1
            try:
                self._send(self._queue.popleft())
            finally:
                self._sent.append(time.monotonic())

    def _release(self) -> None:
        """Wake the drained() waiters whose messages have all left."""
        while self._waiters and self._waiters[0][0] <= self.sent:
            waiter = self._waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)
