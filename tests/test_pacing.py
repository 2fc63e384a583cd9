"""kit's pacing of IB messages (kit.brokers.pacing.Pacer): never more than its limit in any window, a few
at a time, in order, and nothing left over from a connection that is gone."""

from __future__ import annotations

import asyncio
import bisect
import time

from kit.brokers.pacing import Pacer


class Client:
    """The part of an ib_async/ib_insync Client the pacer uses: its sendMsg and its throttle knob."""

    MaxRequests = 45

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    def sendMsg(self, msg: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), msg))


def test_no_window_holds_more_than_the_limit_and_messages_leave_a_few_at_a_time_in_order():
    async def scenario() -> Client:
        client = Client()
        pacer = Pacer(limit=10, window=0.2, catch_up=100, burst=2)
        pacer.install(client)
        assert client.MaxRequests == 0  # the library's own throttle is off: the pacer decides
        for n in range(60):
            client.sendMsg(f"m{n}")
        while len(client.sent) < 60:  # the test waits for the pacer's sends; kit itself never polls
            await asyncio.sleep(0.05)
        return client

    client = asyncio.run(scenario())
    times = [t for t, _ in client.sent]
    assert [m for _, m in client.sent] == [f"m{n}" for n in range(60)]
    for i, start in enumerate(times):
        assert bisect.bisect_left(times, start + 0.2) - i <= 10  # any 0.2 s from a send holds 10 at most
        assert bisect.bisect_right(times, start) - i <= 2  # never more than the burst at one moment
    assert times[-1] - times[0] >= 5 * 0.2 - 0.01  # 60 messages at 10 per 0.2 s take five windows


class HeldUp(Client):
    """A client whose every `every`-th write leaves `delay` s after the pacer let it go: the socket write
    waits for the GIL another thread holds (a ledger write on a worker thread, a notebook's kernel). The
    time kept is the write's own."""

    def __init__(self, every: int, delay: float) -> None:
        super().__init__()
        self.every, self.delay, self.calls = every, delay, 0

    def sendMsg(self, msg: str) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            time.sleep(self.delay)  # held, as by another thread: the loop waits too
        self.sent.append((time.monotonic(), msg))


def test_writes_held_up_after_the_pacer_let_them_go_still_keep_every_window_within_the_limit():
    """The window is kept between the writes themselves: a message the pacer let go and whose write came
    30 ms later does not make room for one more 30 ms early. With no margin, any 0.2 s of writes holds 10."""
    async def scenario() -> HeldUp:
        client = HeldUp(every=7, delay=0.03)
        pacer = Pacer(limit=10, window=0.2, catch_up=100, burst=2, margin=0)
        pacer.install(client)
        for n in range(80):
            client.sendMsg(f"m{n}")
        await asyncio.wait_for(pacer.drained(), 10)
        return client

    times = [t for t, _ in asyncio.run(scenario()).sent]
    assert len(times) == 80
    busiest = max(bisect.bisect_left(times, start + 0.2) - i for i, start in enumerate(times))
    assert busiest <= 10


def test_a_lost_connection_drops_what_was_still_queued():
    async def scenario() -> Client:
        client = Client()
        pacer = Pacer(limit=2, window=10, catch_up=100, burst=2)
        pacer.install(client)
        for n in range(5):
            client.sendMsg(f"m{n}")
        pacer.clear()  # the connection dropped: m2.. never left, and must not go out on the next one
        await asyncio.sleep(0.05)
        return client

    assert [m for _, m in asyncio.run(scenario()).sent] == ["m0", "m1"]


class FailsOnce(Client):
    """A client whose socket write raises once, at `failing` (a broken pipe inside the pacer's timer)."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing
        self.failed = asyncio.Event()

    def sendMsg(self, msg: str) -> None:
        if msg == self.failing and not self.failed.is_set():
            self.failed.set()
            raise BrokenPipeError("the socket is gone")
        self.sent.append((time.monotonic(), msg))


def test_a_send_that_raises_in_the_pacers_timer_does_not_stop_the_queue_behind_it():
    """A broken socket write inside the timer loses that message (whether it left is unknown: it is never
    sent again), and the messages queued behind it still leave, so a drained() waiter is released."""
    client = FailsOnce("m1")
    pacer = Pacer(limit=10, window=1.0, catch_up=100, burst=1)
    pacer.install(client)
    loop = asyncio.new_event_loop()
    raised: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: raised.append(context.get("exception")))

    async def queue_behind_a_failing_send() -> None:
        for n in range(4):
            client.sendMsg(f"m{n}")  # m0 leaves at once; m1.. wait for the bucket, in the pacer's timer
        await asyncio.wait_for(pacer.drained(), 5)  # TimeoutError if the queue stopped at m1

    try:
        loop.run_until_complete(queue_behind_a_failing_send())
    finally:
        loop.close()
    assert [m for _, m in client.sent] == ["m0", "m2", "m3"]
    assert [type(e) for e in raised] == [BrokenPipeError]


class AnywhereClient(Client):
    """A client whose send works outside a running loop too (ib_async's does)."""

    def sendMsg(self, msg: str) -> None:
        self.sent.append((time.monotonic(), msg))


def test_messages_sent_outside_any_loop_count_in_the_window_of_the_paced_ones_after_them():
    client = AnywhereClient()
    pacer = Pacer(limit=3, window=0.5, catch_up=100, burst=3)
    pacer.install(client)
    client.sendMsg("m0")  # outside any loop: sent at once, unpaced
    client.sendMsg("m1")

    async def then_on_a_loop() -> None:
        client.sendMsg("m2")  # the window (3 in 0.5 s) has one place left
        client.sendMsg("m3")  # waits until m0 is out of the window
        await asyncio.wait_for(pacer.drained(), 5)

    asyncio.run(then_on_a_loop())
    times = dict((m, t) for t, m in client.sent)
    assert list(times) == ["m0", "m1", "m2", "m3"]
    assert times["m3"] - times["m0"] >= 0.5 - 0.01
    assert times["m2"] - times["m0"] < 0.25  # m2 did not wait: the window had room
