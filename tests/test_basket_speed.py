"""What the big-basket and pacing work changed, as a user sees it: the garbage collector's settings come back
after a run, a stock basket's instrument keys are the ones row by row would give, IB's pacing keeps its
margin, and a basket long enough to queue the arrival snapshots behind its orders still gets its arrival
prices. (How fast: bench/big_basket.py, bench/ib_pacing.py; never a timed test.)"""

from __future__ import annotations

import asyncio
import bisect
import gc
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kit
from kit.brokers.mock import MockBroker
from kit.brokers.pacing import Pacer
from kit.errors import ValidationError
from kit.gateway import GatewayConfig
from kit.planner import row_key, row_keys
from tests.gateway_apart import gateway_apart
from tests.ib_driver import execute_apart


@pytest.fixture
def user_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(500, 7, 3)  # the user's own settings, which kit must hand back
    try:
        yield (500, 7, 3)
    finally:
        gc.set_threshold(*before)


class ThresholdSeeingBroker(MockBroker):
    """Notes the collector's thresholds while the run sends its orders."""

    seen: list[tuple[int, ...]]

    async def submit(self, order):
        self.seen.append(gc.get_threshold())
        await super().submit(order)


def test_a_run_holds_off_full_collections_and_hands_the_users_thresholds_back(user_thresholds, tmp_path):
    broker = ThresholdSeeingBroker({"AAPL": 190.0, "MSFT": 410.0})
    broker.seen = []
    targets = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "side": "BUY", "quantity": 5})
    run = kit.execute(targets, broker=broker, run_key="gc-run", db=tmp_path / "kit.duckdb", progress=False)
    assert run.status == "done"
    assert broker.seen and all(t[:2] == user_thresholds[:2] and t[2] >= 1_000 for t in broker.seen)
    assert gc.get_threshold() == user_thresholds


def test_a_refused_frame_hands_the_thresholds_back_too(user_thresholds, tmp_path):
    with pytest.raises(ValidationError):
        kit.execute(pd.DataFrame({"symbol": ["AAPL"], "side": ["HOLD"], "quantity": [5]}), broker="mock",
                    prices={"AAPL": 190.0}, run_key="gc-bad", db=tmp_path / "kit.duckdb", progress=False)
    assert gc.get_threshold() == user_thresholds


def test_concurrent_runs_hand_back_the_thresholds_once_the_last_one_ends(user_thresholds, tmp_path):
    async def both() -> list[kit.Run]:
        frames = [pd.DataFrame({"symbol": [s], "side": ["BUY"], "quantity": [1]}) for s in ("AAPL", "MSFT")]
        return await asyncio.gather(*(
            kit.execute_async(frame, broker=MockBroker({"AAPL": 190.0, "MSFT": 410.0}, latency=0.05),
                              run_key=f"gc-{n}", db=tmp_path / f"kit-{n}.duckdb")
            for n, frame in enumerate(frames)))

    assert [r.status for r in asyncio.run(both())] == ["done", "done"]
    assert gc.get_threshold() == user_thresholds


SEC_TYPES = st.sampled_from([None, float("nan"), "", "STK", " stk", "FUT", "fut ", "OPT", "CASH", "opt", 5])
ROWS = st.fixed_dictionaries({
    "symbol": st.sampled_from(["AAPL", "ES", "SPY", "EUR.USD", None, 7]),
    "sec_type": SEC_TYPES,
    "expiry": st.sampled_from([None, "front", "20261218", "202612"]),
    "strike": st.sampled_from([None, 450.0, float("nan")]),
    "right": st.sampled_from([None, "C", "P"]),
})


@settings(max_examples=150, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=12), st.booleans())
def test_a_frames_instrument_keys_are_those_of_its_rows_one_by_one(rows, with_sec_type):
    frame = pd.DataFrame(rows)
    if not with_sec_type:
        frame = frame.drop(columns=["sec_type"])
    expected = {row_key(row) for row in frame.to_dict("records") if isinstance(row.get("symbol"), str)}
    assert row_keys(frame) == expected


def test_pacing_keeps_its_margin_and_says_when_what_was_queued_has_left():
    async def scenario() -> tuple[list[float], float, bool]:
        sent: list[float] = []

        class Client:
            MaxRequests = 45

            def sendMsg(self, message: str) -> None:
                sent.append(asyncio.get_running_loop().time())

        client = Client()
        pacer = Pacer(limit=10, window=0.2, margin=0.05, catch_up=200, burst=2)
        pacer.install(client)
        for n in range(40):
            client.sendMsg(f"m{n}")
        await pacer.drained()
        left_at, all_sent = asyncio.get_running_loop().time(), len(sent) == 40
        gone = pacer.drained()  # nothing queued: done at once
        return sent, left_at - sent[-1], all_sent and gone.done()

    times, lag, all_sent = asyncio.run(scenario())
    assert all_sent
    assert 0 <= lag < 0.2  # drained() is done as the last queued message leaves, not a window (0.25 s) later
    for i, start in enumerate(times):  # any 0.25 s (IB's window and the margin) holds the limit at most
        assert bisect.bisect_left(times, start + 0.25) - i <= 10
    assert times[-1] - times[0] >= 3 * 0.25 - 0.01  # 40 messages at 10 per 0.25 s span three windows


def test_a_lost_connection_fails_whoever_waits_for_the_queue():
    async def scenario() -> BaseException | None:
        class Client:
            MaxRequests = 45

            def sendMsg(self, message: str) -> None:
                pass

        client = Client()
        pacer = Pacer(limit=2, window=10)
        pacer.install(client)
        for n in range(5):
            client.sendMsg(f"m{n}")
        waiting = pacer.drained()
        pacer.clear()
        return await asyncio.gather(waiting, return_exceptions=True)

    [outcome] = asyncio.run(scenario())
    assert isinstance(outcome, ConnectionError)


def test_snapshots_queued_behind_a_long_basket_still_give_every_order_its_arrival_price(tmp_path: Path):
    """The arrival snapshots go behind the orders: 250 orders at IB's pace take 5 s to leave, twice the
    2.5 s the snapshot's answer is given (room for a loaded machine), which counts from when they leave."""
    symbols = [i.symbol for i in GatewayConfig().instruments if i.currency == "USD" and
               i.sec_type == "STK"][:3]
    count = 250
    targets = {"symbol": [symbols[n % len(symbols)] for n in range(count)], "side": ["BUY"] * count,
               "quantity": list(range(1, count + 1))}
    with gateway_apart() as gw:  # kit and the gateway each in a process of their own, as kit and IB
        result = execute_apart({"port": gw.port, "db": str(tmp_path / "kit.duckdb"),
                                "run_key": "long-basket", "targets": targets, "library": "ib_async",
                                "sync_timeout": 2.5, "timeout": 60})
    assert gw.stats["max_inbound_rate"] <= 50
    assert result["status"] == "done", result.get("error") or result["notes"]
    assert len(result["orders"]) == count
    assert all(o["arrival_price"] for o in result["orders"])


def test_an_event_sink_that_raises_once_does_not_cost_the_mocks_other_events():
    """The mock runs a turn's callbacks behind one loop handle; one that raises is reported by the loop as
    its own Handle would be, and the events behind it are still delivered."""
    from kit.model import OrderIntent, Side

    async def scenario() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _, context: reported.append(str(context.get("exception"))))
        broker = MockBroker({"AAPL": 190.0, "MSFT": 410.0})
        seen: list[str] = []

        def sink(event) -> None:
            seen.append(f"{type(event).__name__} {event.client_order_id}")
            if len(seen) == 1:
                raise RuntimeError("a sink's bug")

        broker.bind(sink)
        await broker.connect()
        for symbol in ("AAPL", "MSFT"):
            await broker.submit(OrderIntent(client_order_id=f"t-{symbol}-BUY", symbol=symbol, side=Side.BUY,
                                            quantity=5.0))
        for _ in range(5):
            await asyncio.sleep(0)
        return seen, reported

    seen, reported = asyncio.run(scenario())
    assert reported == ["a sink's bug"]
    assert seen == ["Accepted t-AAPL-BUY", "Execution t-AAPL-BUY", "Commission t-AAPL-BUY",  # as submitted
                    "Accepted t-MSFT-BUY", "Execution t-MSFT-BUY", "Commission t-MSFT-BUY"]
