"""The mock broker's executions are pinned: the same seed, prices and orders give the same events as the
mock always gave (exec ids, quantities, prices, commissions, broker ids, reasons, and their order), and
sync() replays the same. A faster mock must tell exactly the same story; the digests below were taken from
the mock before it was optimised (c113054), so any change to what it says fails here.

Each scenario drives the broker through its own protocol (its event sink), latency 0 unless said, and
moves the market between loop turns. Times are left out of the digest (they are the clock's), but checked:
an execution, its fill and its commission share one time, and an order's times never go backwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from kit.brokers.mock import MockBroker
from kit.clock import utcnow
from kit.instruments import quarterly_expiries
from kit.model import Accepted, Commission, Execution, Order, OrderIntent, Side

UNTIMED = {"at", "time"}


def told(event: object) -> tuple:
    """An event as the digest sees it: its type and every field but its times."""
    values = []
    for item in dataclasses.fields(event):  # type: ignore[arg-type]
        if item.name in UNTIMED:
            continue
        value = getattr(event, item.name)
        values.append((item.name, told(value) if dataclasses.is_dataclass(value) else repr(value)))
    return type(event).__name__, tuple(values)


def digest(events: list) -> str:
    return hashlib.sha256(repr([told(e) for e in events]).encode()).hexdigest()[:16]


def times(event: object) -> list[datetime]:
    found = [event.at]  # type: ignore[attr-defined]
    if isinstance(event, Execution):
        found.append(event.fill.time)
    return found


def assert_times_told_in_order(events: list) -> None:
    stamps: dict[str, list[datetime]] = {}
    for event in events:
        stamps.setdefault(event.client_order_id, []).extend(times(event))
    for coid, told_at in stamps.items():
        assert told_at == sorted(told_at), coid
    executions = {e.fill.exec_id: e.at for e in events if isinstance(e, Execution)}
    for event in events:
        if isinstance(event, Execution):
            assert event.fill.time == event.at
        if isinstance(event, Commission):
            assert event.at == executions[event.exec_id]


async def turns(count: int = 8) -> None:
    """Let the broker's due callbacks run: each loop turn runs what the one before scheduled."""
    for _ in range(count):
        await asyncio.sleep(0)


def order(coid: str, symbol: str, side: str = "BUY", quantity: float = 100.0, **extra) -> OrderIntent:
    return OrderIntent(client_order_id=coid, symbol=symbol, side=Side(side), quantity=quantity, **extra)


def listed(intents: Iterable[OrderIntent]) -> list[Order]:
    """The orders as kit's ledger lists them for sync()."""
    return [Order(i, "r", datetime(2026, 1, 1), datetime(2026, 1, 1)) for i in intents]


def intents_of(count: int) -> list[OrderIntent]:
    """`count` MKT orders of a basket, a few odd quantities among them."""
    quantities = (100.0, 1.0, 2.0, 3.0, 7.5, 1000.0, 250.0)
    return [order(f"pin-S{i:05d}-BUY", f"S{i:05d}", "BUY" if i % 3 else "SELL",
                  quantities[i % 7] if i % 5 == 0 else 100.0) for i in range(count)]


def basket_events(count: int, **options) -> tuple[list, list]:
    """A basket's orders, every event told, then sync()'s replay of them all."""
    prices = {f"S{i:05d}": 10.0 + (i % 90) for i in range(count)}
    intents = intents_of(count)

    async def go() -> tuple[list, list]:
        broker = MockBroker(prices, **options)
        got: list = []
        broker.bind(got.append)
        await broker.connect()
        for intent in intents:
            await broker.submit(intent)
        await turns()
        replayed: list = []
        broker.bind(replayed.append)
        known = await broker.sync(listed(intents))
        assert known == {i.client_order_id for i in intents}
        await broker.close()
        return got, replayed

    return asyncio.run(go())


def test_a_five_fill_basket_tells_what_it_always_told():
    events, replayed = basket_events(1_500, partial_fills=5)
    fills = sum(1 if q != int(q) else min(5, int(q)) for q in (e.quantity for e in intents_of(1_500)))
    assert len(events) == 1_500 + 2 * fills  # 1, 2 or 3 shares fill in fewer pieces, 7.5 in one
    first = [e for e in events if e.client_order_id == "pin-S00000-BUY"]
    assert [type(e).__name__ for e in first] == ["Accepted", *["Execution", "Commission"] * 5]
    assert [e.fill.quantity for e in first if isinstance(e, Execution)] == [19.0, 35.0, 7.0, 12.0, 27.0]
    assert [e.fill.exec_id for e in first if isinstance(e, Execution)] == [
        f"mock.22ade7dc77dcf171.{n:02d}.01" for n in range(1, 6)]
    assert (first[0].broker_order_id, first[0].perm_id) == ("1", str(0x22ade7dc77dcf171))
    assert digest(events) == "78db9689d5787f69"
    assert digest(replayed) == "78db9689d5787f69"
    assert_times_told_in_order(events)


def test_a_basket_in_a_range_of_pieces_and_another_seed_tells_what_it_always_told():
    events, replayed = basket_events(400, partial_fills=(1, 6), seed=42)
    assert digest(events) == "fefae494834cdb36"
    assert digest(replayed) == "fefae494834cdb36"
    assert_times_told_in_order(events)


def test_one_fill_per_order_tells_what_it_always_told():
    events, replayed = basket_events(300)
    assert digest(events) == "3403717a326f15a8"
    assert digest(replayed) == "3403717a326f15a8"


class MovesOnFills(MockBroker):
    """Moves the market the moment an order's n-th fill is told: between two fills of one order."""

    def __init__(self, *args, moves: dict[tuple[str, int], tuple[str, float]], **kwargs):
        super().__init__(*args, **kwargs)
        self.moves = moves
        self.fills: dict[str, int] = {}

    def emit(self, event):
        super().emit(event)
        if isinstance(event, Execution):
            coid = event.client_order_id
            self.fills[coid] = self.fills.get(coid, 0) + 1
            move = self.moves.pop((coid, self.fills[coid]), None)
            if move is not None:
                self.set_price(*move)


def test_every_order_type_amend_cancel_auction_and_a_new_session_tell_what_they_always_told():
    today = utcnow().date()
    month = f"{quarterly_expiries(today, 1)[0]:%Y%m}"
    prices = {"AAPL": 190.0, "MSFT": 410.0, "TTE": 61.5, "NVDA": 100.0, "ES": 6000.0, "EUR.USD": 1.08}
    intents = {
        "mkt": order("mkt", "AAPL", quantity=1000.0),
        "frac": order("frac", "MSFT", "SELL", 12.5),
        "lmt-rest": order("lmt-rest", "AAPL", quantity=300.0, order_type="LMT", limit_price=185.0),
        "lmt-away": order("lmt-away", "TTE", "SELL", 200.0, order_type="LMT", limit_price=61.0),
        "lmt-part": order("lmt-part", "NVDA", quantity=500.0, order_type="LMT", limit_price=101.0),
        "lmt-amend": order("lmt-amend", "MSFT", quantity=500.0, order_type="LMT", limit_price=400.0),
        "lmt-cancel": order("lmt-cancel", "MSFT", "SELL", 50.0, order_type="LMT", limit_price=450.0),
        "lmt-late": order("lmt-late", "MSFT", quantity=40.0, order_type="LMT", limit_price=390.0),
        "stp": order("stp", "AAPL", "SELL", 150.0, order_type="STP", stop_price=188.0),
        "stp-lmt": order("stp-lmt", "AAPL", "SELL", 80.0, order_type="STP LMT", stop_price=187.0,
                         limit_price=186.0),
        "trail": order("trail", "TTE", "SELL", 120.0, order_type="TRAIL", trail_amount=1.0),
        "trail-lmt": order("trail-lmt", "TTE", quantity=90.0, order_type="TRAIL LIMIT", trail_percent=2.0,
                           offset=0.1),
        "moc": order("moc", "AAPL", quantity=400.0, order_type="MOC"),
        "loc-miss": order("loc-miss", "MSFT", quantity=60.0, order_type="LOC", limit_price=300.0),
        "opg": order("opg", "TTE", "SELL", 70.0, tif="OPG"),
        "twap": order("twap", "AAPL", quantity=600.0, algo="Twap"),
        "vwap": order("vwap", "MSFT", "SELL", 333.0, order_type="LMT", limit_price=405.0, algo="Vwap"),
        "midprice": order("midprice", "AAPL", quantity=75.0, order_type="MIDPRICE", limit_price=191.0),
        "rel": order("rel", "MSFT", "SELL", 45.0, order_type="REL", offset=0.05),
        "fut": order("fut", "ES", quantity=7.0, sec_type="FUT", exchange="CME", expiry=month,
                     multiplier=50.0),
        "fx": order("fx", "EUR.USD", quantity=100_000.0, sec_type="CASH", exchange="IDEALPRO"),
        "no-price": order("no-price", "ZZZZ", quantity=10.0),
        "no-contract": order("no-contract", "ES", quantity=1.0, sec_type="FUT", exchange="CME",
                             expiry="199001", multiplier=50.0),
    }

    async def first() -> list:
        got: list = []
        broker.bind(got.append)
        await broker.connect()
        for intent in intents.values():
            await broker.submit(intent)
        await turns()  # lmt-away and lmt-part fill in part: the market leaves their limits mid-order
        more = {"quantity": 800.0}  # lmt-part, resting part-filled: the rest is cut anew
        await broker.amend(replace(intents["lmt-part"], **more), more, 1)
        broker.set_price("TTE", 61.2)  # the trail follows up; lmt-away (61) fills on
        broker.set_price("NVDA", 100.5)
        await turns()
        broker.set_price("AAPL", 184.0)  # the resting limit and the stops go ...
        broker.set_price("AAPL", 192.0)  # ... and the market leaves before their fills (a limit waits)
        await turns()
        broker.set_price("AAPL", 184.5)
        broker.set_price("TTE", 59.0)
        await turns()
        changed = {"quantity": 650.0, "limit_price": 411.0}
        await broker.amend(replace(intents["lmt-amend"], **changed), changed, 1)
        await broker.amend(intents["mkt"], {"quantity": 10.0}, 1)  # filled: refused
        await broker.amend(replace(intents["lmt-late"], side=Side.SELL), {"side": "SELL"}, 1)  # refused
        await broker.cancel("lmt-cancel")
        await broker.cancel("mkt")
        await turns()
        broker.set_close("AAPL", 185.25)
        broker.set_close("MSFT", 409.0)
        broker.set_open("TTE", 60.0)
        await turns()
        await broker.close()
        return got

    async def second() -> tuple[list, list]:
        got: list = []
        broker.bind(got.append)
        await broker.connect()  # lmt-late, reached while no session was connected, fills now
        await turns()
        broker.set_price("TTE", 60.2)  # the trailing buy, triggered between sessions, reaches its limit
        await turns()
        replayed: list = []
        broker.bind(replayed.append)
        await broker.sync(listed(intents.values()))
        await broker.close()
        return got, replayed

    broker = MovesOnFills(prices, seed=5, partial_fills=(2, 4), algo_slices=3,
                          moves={("lmt-away", 2): ("TTE", 60.5), ("lmt-part", 1): ("NVDA", 105.0)})
    events = asyncio.run(first())
    broker.set_price("TTE", 63.0)  # between sessions: the trailing buy limit triggers and rests
    broker.set_price("MSFT", 380.0)
    later, replayed = asyncio.run(second())
    accepted = {e.client_order_id for e in events if isinstance(e, Accepted)}
    assert accepted == set(intents) - {"no-price", "no-contract"}
    assert {e.client_order_id for e in later} == {"lmt-late", "trail-lmt"}
    assert digest(events) == "b791bc101ccbfcbf"
    assert digest(later) == "31d245af61b0d8e1"
    assert digest(replayed) == "e7fd357cca48d5a6"
    assert_times_told_in_order(events)
    assert_times_told_in_order(later)


def test_fills_spaced_by_latency_tell_what_they_always_told():
    prices = {"AAPL": 190.0, "MSFT": 410.0}

    async def go() -> list:
        broker = MockBroker(prices, seed=9, partial_fills=3, latency=0.002)
        got: list = []
        all_told = asyncio.Event()

        def sink(event: object) -> None:
            got.append(event)
            if sum(isinstance(e, Commission) for e in got) == 3 * 3 + 4:
                all_told.set()

        broker.bind(sink)
        await broker.connect()
        for coid, symbol in (("a", "AAPL"), ("b", "MSFT"), ("c", "AAPL")):
            await broker.submit(order(coid, symbol, quantity=90.0))
        await broker.submit(order("t", "MSFT", quantity=40.0, algo="Twap"))
        await asyncio.wait_for(all_told.wait(), 10)
        await broker.close()
        return got

    events = asyncio.run(go())
    per_order = [[e for e in events if e.client_order_id == coid] for coid in "abct"]
    assert digest([e for told_ in per_order for e in told_]) == "3466b4c62409e1b8"
    assert_times_told_in_order(events)


def test_a_sink_that_raises_on_a_fill_costs_neither_that_orders_later_fills_nor_the_next_orders():
    """Fills without latency are told one after another behind one loop callback; a sink that raises on
    one of them is reported by the loop, and every event behind it is still told, in the same order."""

    async def scenario() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _, context: reported.append(str(context.get("exception"))))
        broker = MockBroker({"AAPL": 190.0, "MSFT": 410.0}, partial_fills=3)
        seen: list[str] = []

        def sink(event) -> None:
            seen.append(f"{type(event).__name__} {event.client_order_id}")
            if len(seen) == 4:  # AAPL's second execution
                raise RuntimeError("a sink's bug")

        broker.bind(sink)
        await broker.connect()
        for symbol in ("AAPL", "MSFT"):
            await broker.submit(order(f"t-{symbol}-BUY", symbol, quantity=30.0))
        await turns()
        return seen, reported

    seen, reported = asyncio.run(scenario())
    assert reported == ["a sink's bug"]
    fills = ["Execution", "Commission"] * 3
    assert seen == [f"{kind} t-AAPL-BUY" for kind in ["Accepted", *fills[:3], *fills[4:]]] + [
        f"{kind} t-MSFT-BUY" for kind in ["Accepted", *fills]]  # (the raising fill's commission is not told)
