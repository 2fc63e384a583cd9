"""A deterministic in-process broker for research, demos and tests.

It plays a tiny exchange on the running event loop: acknowledgements, partial fills and commissions are
scheduled with loop.call_later, so the engine sees the same kind of event stream an IB session gives. The
same seed, prices and orders always give the same executions.

Its world lives in its process (in this object). kit lists it before every send like any broker, so within
one process an order it already has is never sent again; but a new process starts with an empty mock, and
there the ledger is the only record of what the mock was sent: for the mock, "the broker's record" is the
ledger. A lost ledger with a new mock forgets everything, which costs nothing, since nothing was traded.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import pandas as pd

from kit.brokers.base import Broker, Notice
from kit.clock import utcnow
from kit.instruments import Contract, Spec, choose, key_of, quarterly_expiries
from kit.model import (
    Accepted,
    AmendAccepted,
    AmendRefused,
    BrokerEvent,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Order,
    OrderIntent,
    Rejected,
)
from kit.order_types import Trigger, auction, priced_at_limit, reaches
from kit.risk import reference_price
from kit.slicing import split
from kit.validate import check_price, check_prices


@dataclass(frozen=True)
class CommissionModel:
    """Per-share commission with a floor and a cap, the shape of IB's fixed pricing."""

    per_share: float = 0.005
    minimum: float = 1.0
    maximum_rate: float = 0.01  # of notional

    def __call__(self, quantity: float, price: float) -> float:
        fee = quantity * self.per_share  # max(fee, minimum), then min(fee, cap), without two calls per fill
        if self.minimum > fee:
            fee = self.minimum
        cap = quantity * price * self.maximum_rate
        return round(cap if cap < fee else fee, 6)


def contract_fee(sec_type: str, quantity: float, notional: float) -> float:
    """The mock's commission for futures, options and FX, the shape of IB's fixed rates: per contract for
    futures (0.85) and options (0.65), 0.2 bp of the value for FX with a 2.00 minimum."""
    if sec_type == "CASH":
        return round(max(notional * 0.00002, 2.0), 6)
    return round(quantity * (0.85 if sec_type == "FUT" else 0.65), 6)


def mock_contracts(today: date) -> tuple[Contract, ...]:
    """The mock's security master, dated from `today`: ES, MES and NQ quarterly futures (CME, USD), the DAX
    future in its three sizes (EUREX, EUR: one symbol, three multipliers, so "DAX front" is ambiguous as it
    is at IB), EUR.USD, GBP.USD and USD.JPY on IDEALPRO, and SPY options (x100) on the next two monthly
    expiries, each month with a weekly expiry too (so a month alone is ambiguous), strikes 400 to 500."""
    found: list[Contract] = []
    months = quarterly_expiries(today, 3)
    roots = (("ES", "CME", "USD", 50.0, "ES"), ("MES", "CME", "USD", 5.0, "MES"),
             ("NQ", "CME", "USD", 20.0, "NQ"),
             ("DAX", "EUREX", "EUR", 25.0, "FDAX"), ("DAX", "EUREX", "EUR", 5.0, "FDXM"),
             ("DAX", "EUREX", "EUR", 1.0, "FDXS"))
    codes = "FGHJKMNQUVXZ"
    con_id = 500_000_000
    for symbol, exchange, currency, multiplier, trading_class in roots:
        for expiry in months:
            con_id += 1
            local = f"{trading_class}{codes[expiry.month - 1]}{expiry.year % 10}"
            found.append(Contract(symbol, "FUT", currency, exchange, con_id, local, expiry=f"{expiry:%Y%m%d}",
                                  last_trade_date=f"{expiry:%Y%m%d}", multiplier=multiplier,
                                  trading_class=trading_class, min_tick=0.25))
    for pair, con_id in (("EUR.USD", 12087792), ("GBP.USD", 12087797), ("USD.JPY", 15016059)):
        quote = pair.split(".")[1]
        found.append(Contract(pair, "CASH", quote, "IDEALPRO", con_id, pair, trading_class=pair,
                              min_tick=0.00005))
    con_id = 700_000_000
    for monthly in _monthly_expiries(today, 2):
        for expiry in (monthly, date.fromordinal(monthly.toordinal() - 7)):
            if expiry < today:
                continue
            for strike in range(400, 501, 10):
                for right in "CP":
                    con_id += 1
                    local = f"SPY   {expiry:%y%m%d}{right}{strike * 1000:08d}"
                    day = f"{expiry:%Y%m%d}"
                    found.append(Contract("SPY", "OPT", "USD", "SMART", con_id, local, expiry=day,
                                          last_trade_date=day, strike=float(strike), right=right,
                                          multiplier=100.0, trading_class="SPY"))
    return tuple(found)


def _monthly_expiries(today: date, count: int) -> list[date]:
    """Third Fridays of the next `count` months (this one if not past)."""
    found: list[date] = []
    year, month = today.year, today.month
    while len(found) < count:
        first = date(year, month, 1)
        friday = date.fromordinal(first.toordinal() + (4 - first.weekday()) % 7 + 14)
        if friday >= today:
            found.append(friday)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def reference_prices(prices: Mapping[str, float] | pd.DataFrame | pd.Series | None) -> dict[str, float]:
    """A dict {symbol: price}, a Series, or a DataFrame (wide or long), each price checked like a target's
    (kit.validate.check_prices): a bad one is an InputError naming its symbol."""
    return check_prices(prices)


@dataclass(slots=True)
class _Working:
    intent: OrderIntent
    stem: str  # its exec ids' start: "mock." and 64 bits of its id's hash in hex (its perm id in decimal)
    chunks: list[float]
    fills_sent: int = 0
    cancelled: bool = False  # cancelled or rejected: it fills no more
    # The fills scheduled on the loop belong to one generation; a new schedule (the market came back,
    # a new session) retires the old one, so a chunk is never scheduled twice.
    generation: int = 0
    scheduled: bool = False
    # Everything told about it, in order, replayed by sync (see `sent`): events, but a fill (its execution
    # and commission) as the values that make them again, (chunk, quantity, price, commission, time), so
    # that a 100,000-order basket does not keep 400,000 events alive.
    told: list[BrokerEvent | tuple[int, float, float, float, datetime]] = field(default_factory=list)
    # The order types (docs/orders.md): an auction order waits for its auction ("close" or "open"), then
    # works at the auction's price; a stop works once its trigger has seen the reference reach the stop.
    trigger: Trigger = field(default_factory=lambda: Trigger("BUY", "MKT"))
    held: str | None = None
    auction_price: float | None = None
    key: str | None = None  # its instrument's key (an amendment never changes it): its price at every fill

    @property
    def done(self) -> bool:
        return self.cancelled or self.fills_sent == len(self.chunks)

    @property
    def sent(self) -> _Sent:
        """Everything told about it, as events."""
        return _Sent(self)


class _Sent:
    """What _Working.told stands for: the events told about one order, in order; clear() forgets them."""

    __slots__ = ("_working",)

    def __init__(self, working: _Working) -> None:
        self._working = working

    def __iter__(self) -> Iterator[BrokerEvent]:
        working = self._working
        for told in list(working.told):
            if type(told) is tuple:
                yield from _fill_events(working, told)
            else:
                yield told

    def clear(self) -> None:
        self._working.told.clear()


def _fill_events(working: _Working, told: tuple[int, float, float, float, datetime]
                 ) -> tuple[Execution, Commission]:
    """A fill's execution and commission, from what _Working.told keeps of it."""
    index, quantity, price, fee, at = told
    coid, currency = working.intent.client_order_id, working.intent.currency
    key = f"{working.stem}.{index + 1:02d}"
    exec_id = f"{key}.01"  # the mock never corrects: revision 1 of each
    return (Execution(Fill(exec_id, coid, quantity, price, at, None, currency, "MOCK", key, 1), at),
            Commission(exec_id, fee, currency, at, coid))


class MockBroker(Broker):
    """MKT orders fill at the reference price, in `partial_fills` pieces; LMT orders fill when the
    reference price reaches the limit (see set_price) and otherwise stay working; a symbol without a price
    is rejected with reason `price_unavailable`.

    The other order types, by the rules of docs/orders.md: MOC and LOC wait for set_close(symbol, price)
    and OPG orders for set_open(symbol, price), then fill whole at that price (a LOC or LMT OPG whose limit
    the auction price does not reach is cancelled, as an exchange does); STP, STP LMT and trailing stops
    trigger when the reference reaches the stop (kit.order_types.Trigger), then work as MKT or LMT;
    MIDPRICE and REL fill at the reference, within their cap; Twap and Vwap fill in `algo_slices` slices, one
    per `latency` step, each at the reference when it is due; Adaptive works like its MKT or LMT order.
    outside_rth and GTD change nothing here: the mock has no trading hours and no clock.


    Prices are per instrument key (kit.instruments.instrument_key): "AAPL", "EUR.USD", "ES 202612" (or "ES"
    for every ES month), "SPY 20261218 450 C". Futures, FX and options are qualified against `contracts`
    (mock_contracts of today by default); an order the table does not know is rejected."""

    name = "mock"
    account = "MOCK-PAPER"
    is_paper = True

    def __init__(
        self,
        prices: Mapping[str, float] | pd.DataFrame | pd.Series | None = None,
        *,
        seed: int = 0,
        partial_fills: int | tuple[int, int] = 1,
        latency: float = 0.0,
        commission: Callable[[float, float], float] = CommissionModel(),
        currency: str = "USD",
        algo_slices: int = 4,
        contracts: Iterable[Contract] | None = None,
    ) -> None:
        super().__init__()
        self.prices = reference_prices(prices)
        self.contracts = None if contracts is None else tuple(contracts)
        self.seed = seed
        self.partial_fills = partial_fills
        self.latency = latency
        self.commission = commission
        self.currency = currency
        self.algo_slices = algo_slices
        self.orders: dict[str, _Working] = {}
        self.submitted: list[str] = []  # every client_order_id ever submitted, duplicates included
        self._loop: asyncio.AbstractEventLoop | None = None
        # What is due on the loop's next turn, in order, behind one loop callback: a 100,000-order basket
        # schedules 200,000 of them, and a Handle each costs more than what they do.
        self._due: list[tuple[Callable[..., None], tuple[object, ...]]] = []

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = []  # what an earlier session left due runs (or not) with that session's loop
        # Resting orders live on across sessions: fills scheduled on an earlier, closed loop never ran,
        # and the market may have moved in between (set_price while disconnected).
        for working in self.orders.values():
            working.scheduled = False
            self._maybe_fill(working)

    async def close(self) -> None:
        self._loop = None

    def reference_price(self, symbol: str) -> float | None:
        root = symbol.split(" ")[0] if len(symbol.split(" ")) == 2 else None  # a future's key: its root too
        return self.prices.get(symbol, self.prices.get(root) if root else None)

    def _price(self, intent: OrderIntent, key: str | None = None) -> float | None:
        return reference_price(intent, self.prices, key)

    def table(self) -> tuple[Contract, ...]:
        if self.contracts is None:
            self.contracts = mock_contracts(utcnow().date())
        return self.contracts

    async def qualify(self, specs: list[Spec], today: date) -> dict[Spec, Contract | str]:
        return {spec: choose(spec, self.table(), today) for spec in specs}

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market: resting LMT orders that the new price reaches start filling. While no session
        is connected the price just moves (stops and trailing stops still see it); the orders it reaches
        fill when the next session connects.
        `symbol` is an instrument key, or a future's root for all its months."""
        symbol, self.prices[symbol] = check_price(symbol, price)
        for working in self.orders.values():
            if symbol not in (working.intent.symbol, working.key):
                continue
            if self._loop is not None:
                self._maybe_fill(working)
            elif working.held is None and not working.done:  # a stop sees every price, kit connected or not
                working.trigger.observe(self.prices[symbol])

    def set_close(self, symbol: str, price: float) -> None:
        """The close auction of `symbol` at `price`: its MOC and LOC orders fill there, whole (a LOC whose
        limit the price does not reach is cancelled). Before this, they wait."""
        self._auction("close", symbol, price)

    def set_open(self, symbol: str, price: float) -> None:
        """The opening auction of `symbol` at `price`: its tif OPG orders fill there, as set_close."""
        self._auction("open", symbol, price)

    def _auction(self, which: str, symbol: str, price: float) -> None:
        symbol, price = check_price(symbol, price)
        for working in self.orders.values():
            if working.intent.symbol != symbol or working.held != which or working.done:
                continue
            working.held, working.auction_price = None, price
            done = working.chunks[:working.fills_sent]
            working.chunks = [*done, working.intent.quantity - sum(done)]  # an auction fills it at once
            if self._loop is None:
                continue  # it fills when the next session connects
            if not self._marketable(working):
                working.cancelled = True
                self._tell(working, Cancelled(working.intent.client_order_id, utcnow(),
                                              f"limit not reached in the {which} auction at {price:g}"))
                continue
            self._maybe_fill(working)

    async def submit(self, order: OrderIntent) -> None:
        self.submitted.append(order.client_order_id)
        # Ids unique across runs and processes (fills are keyed by exec_id in the ledger), same every time.
        # 64 bits of the hash: with 32, two orders of a 100,000-order basket likely share an exec id.
        digits = hashlib.sha256(order.client_order_id.encode()).hexdigest()[:16]
        algo = order.algo in ("Twap", "Vwap")
        if self.partial_fills == 1 and not algo:  # one piece draws nothing, and a seeded Random is costly
            chunks = [order.quantity]
        else:
            rng = random.Random(f"{self.seed}:{order.client_order_id}")
            pieces = self.algo_slices if algo else _pieces(self.partial_fills, rng)
            chunks = split(order.quantity, pieces, rng)
        working = _Working(order, f"mock.{digits}", chunks,
                           trigger=Trigger(str(order.side), order.order_type, order.stop_price,
                                           order.trail_amount, order.trail_percent, order.offset,
                                           order.limit_price),
                           held=auction(order.order_type, order.tif), key=key_of(order))
        self.orders[order.client_order_id] = working
        unknown = self._unknown_contract(order)
        at = utcnow()
        if unknown or self._price(order, working.key) is None:
            self._tell(working, Rejected(order.client_order_id, at, unknown or "price_unavailable"))
            working.cancelled = True
            return
        self._tell(working, Accepted(order.client_order_id, at, str(len(self.submitted)),
                                     str(int(digits, 16))))
        self._maybe_fill(working, at)

    async def cancel(self, client_order_id: str) -> None:
        working = self.orders.get(client_order_id)
        if working is None or working.done:
            notice = BrokerNotice(utcnow(), Notice.NOT_WORKING, "cancel of an order that is not working",
                                  client_order_id)
            self._call(0, self.emit, notice)
            return
        working.cancelled = True
        self._tell(working, Cancelled(client_order_id, utcnow(), "cancelled by request"))

    def _unknown_contract(self, order: OrderIntent) -> str:
        """Why the table knows no such contract ("" when it does, and for stocks, which it does not list)."""
        if order.sec_type == "STK":
            return ""
        spec = Spec(order.symbol, order.sec_type, order.exchange, order.currency, order.primary_exchange,
                    order.expiry, order.strike, order.right, order.multiplier)
        found = choose(spec, self.table(), utcnow().date())
        return found if isinstance(found, str) else ""

    def _fee(self, intent: OrderIntent, quantity: float, price: float) -> float:
        if intent.sec_type == "STK" or not isinstance(self.commission, CommissionModel):
            return self.commission(quantity, price)
        return contract_fee(intent.sec_type, quantity, quantity * price * (intent.multiplier or 1.0))

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        """IB's modify rules: a filled or cancelled order cannot change, nor can its side, contract or
        type; a quantity must stay above what has filled. An accepted change re-slices what is left."""
        coid = order.client_order_id
        working = self.orders.get(coid)
        filled = 0.0 if working is None else sum(working.chunks[:working.fills_sent])
        reason = None
        if working is None:
            reason = "no such order at the mock broker"
        elif working.done:
            reason = "the order is cancelled" if working.cancelled else "cannot modify a filled order"
        elif (order.symbol, order.side, order.order_type) != (working.intent.symbol, working.intent.side,
                                                              working.intent.order_type):
            reason = "the order being modified does not match the original order"
        elif order.quantity <= filled:
            reason = f"{filled:g} are already filled"
        if reason is not None:
            self._call(0, self.emit, AmendRefused(coid, utcnow(), reason, revision, changes))
            return
        assert working is not None
        rng = random.Random(f"{self.seed}:{coid}:{revision}")
        left = len(working.chunks) - working.fills_sent
        working.chunks = working.chunks[:working.fills_sent] + split(order.quantity - filled, left, rng)
        working.intent = replace(working.intent, **changes)
        working.trigger.amend(changes)  # the terms the order works on, the trail's best price kept
        working.scheduled = False
        working.generation += 1  # fills scheduled on the old terms are retired
        at = utcnow()
        self._tell(working, AmendAccepted(coid, at, changes, revision))
        self._maybe_fill(working, at)

    async def what_if(self, order: OrderIntent) -> dict[str, float | str | None]:
        # A limit order's notional at its limit (as the risk check takes it), any other at the reference.
        unknown = self._unknown_contract(order)
        price = self._price(order)
        if price is not None and priced_at_limit(order.order_type) and order.limit_price is not None:
            price = order.limit_price
        if unknown or price is None:
            return {"warning": unknown or "price_unavailable"}
        return {"price": price, "notional": price * order.quantity * (order.multiplier or 1.0),
                "commission": self._fee(order, order.quantity, price)}

    async def sync(self, orders: Iterable[Order]) -> set[str]:
        """Replay everything this broker told about these orders (acks, fills, commissions, cancels), as
        Broker.sync promises: events the last session never received are delivered now, and the rest are
        recognised as duplicates. A mock broker's memory lives in this object: a new process knows nothing
        of earlier orders."""
        known = set()
        for order in orders:
            working = self.orders.get(order.client_order_id)
            if working is not None:
                known.add(order.client_order_id)
                for event in working.sent:
                    self.emit(event)
        return known

    def _marketable(self, working: _Working) -> bool:
        """Can it fill now: out of its auction wait, triggered, and its limit (if any) reached."""
        return self._price_now(working) is not None

    def _price_now(self, working: _Working) -> float | None:
        """The price it fills at now (see _fill_price), or None while it cannot fill (_marketable)."""
        if working.held is not None:
            return None
        price = self._fill_price(working)
        marketable = working.trigger.observe(price) and reaches(working.intent.side, price,
                                                                working.trigger.working_limit())
        return price if marketable else None

    def _fill_price(self, working: _Working) -> float:
        """The price it fills at: its auction's, else the reference."""
        if working.auction_price is not None:
            return working.auction_price
        price = self._price(working.intent, working.key)
        assert price is not None, "an order without a price was rejected at submit"
        return price

    def _maybe_fill(self, working: _Working, at: datetime | None = None) -> None:
        """Schedule the chunks still to fill, once: a second price move while they wait adds nothing.
        Without latency they fill on the loop's next turn, one after another, all at the time `at` (now
        when not given) the order became marketable; with latency, one every `latency` seconds, each at
        its own time."""
        if working.done or working.scheduled or not self._marketable(working):
            return
        working.scheduled = True
        working.generation += 1
        if self.latency > 0:
            for step, index in enumerate(range(working.fills_sent, len(working.chunks)), start=1):
                self._call(self.latency * step, self._fill, working, index, working.generation)
            return
        self._call(0, self._fill_on, working, working.fills_sent, working.generation, at or utcnow())

    def _tell(self, working: _Working, event: BrokerEvent) -> None:
        working.told.append(event)
        self._call(0, self.emit, event)

    def _call(self, delay: float, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None, "MockBroker used before connect()"
        if delay > 0:
            self._loop.call_later(delay, callback, *args)
            return
        if not self._due:
            self._loop.call_soon(self._run_due, self._due)
        self._due.append((callback, args))

    def _run_due(self, due: list[tuple[Callable[..., None], tuple[object, ...]]]) -> None:
        """Run one turn's callbacks in the order they were asked for; what they ask for runs next turn. One
        that raises goes to the loop's exception handler, as its own Handle would, and the rest still run."""
        if due is self._due:
            self._due = []
        for index, (callback, args) in enumerate(due):
            try:
                callback(*args)
            except BaseException:
                if index + 1 < len(due):
                    asyncio.get_running_loop().call_soon(self._run_due, due[index + 1:])
                raise

    def _fill_on(self, working: _Working, index: int, generation: int, at: datetime) -> None:
        """Fill the chunks of one schedule from `index` on, one after another, while they may: each is
        checked as it comes, so a fill whose telling moves the market or amends the order stops the rest,
        as it would stop fills scheduled one by one. A fill told whose telling raised leaves the rest to
        the loop's next turn, as a callback each would."""
        try:
            while self._fill(working, index, generation, at):
                index += 1
        except BaseException:
            if working.fills_sent > index:
                self._call(0, self._fill_on, working, index + 1, generation, at)
            raise

    def _fill(self, working: _Working, index: int, generation: int, at: datetime | None = None) -> bool:
        """Tell the fill of chunk `index` of schedule `generation` if it is still due and may fill now, at
        `at` (now when not given). Whether it filled."""
        if generation != working.generation or working.done or index != working.fills_sent:
            return False
        price = self._price_now(working)
        if price is None:
            # The market moved away from the limit before this fill: a limit order never fills through
            # its limit. It rests until set_price reaches the limit again.
            working.scheduled = False
            working.generation += 1
            return False
        quantity = working.chunks[index]
        told = (index, quantity, price, self._fee(working.intent, quantity, price), at or utcnow())
        working.fills_sent += 1
        if working.done:
            working.scheduled = False
        working.told.append(told)
        execution, commission = _fill_events(working, told)
        self.emit(execution)
        self.emit(commission)
        return True


def _pieces(pieces: int | tuple[int, int], rng: random.Random) -> int:
    """partial_fills as a count, or a (min, max) range drawn from the order's own rng."""
    return rng.randint(*pieces) if isinstance(pieces, tuple) else pieces
