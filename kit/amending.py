"""Amendments: change a working order's price or quantity through the broker instead of cancelling it (IB's
modify: placeOrder again under the same order id), and walk a resting limit order toward the touch by a
rule (kit.Reprice).

Each amendment is recorded as facts in order_events: `amend_requested` (written before the broker sees it,
like `submitted`), then the broker's `amend_accepted` or `amend_refused`. One kit refuses itself (the order
no longer works, a quantity not above what has filled, nothing would change) is an `amend_refused` that was
never sent. The order's row shows the working terms; the planned ones stay in its original_* columns, and
a re-run of the same run key is compared with the plan (Order.planned), so it neither refuses nor undoes
the amendment. TCA measures against the decision price, which no amendment changes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from kit.clock import utcnow
from kit.errors import InputError
from kit.model import AMENDABLE_FIELDS, AmendRefused, AmendRequested, Order, OrderIntent, Side
from kit.order_types import CAPPED, CLOSE_AUCTION, OFFSET, STOPS, TRAILING
from kit.state import amendable

if TYPE_CHECKING:
    from kit.engine import Engine

Unit = Literal["price", "bps", "ticks"]


@dataclass(frozen=True)
class Reprice:
    """Walk each resting limit order toward the touch: every `interval` seconds its limit moves `step` (in
    `unit`: price, basis points of the planned limit, or ticks of `tick`) toward the side it would trade
    against (a BUY toward the ask, a SELL toward the bid), never past the touch and never more than
    `max_move` (same unit) from the planned limit. It stops at the order's first fill, at max_move, when the
    broker refuses a step, and when the run ends or is stopped."""

    step: float
    interval: float
    max_move: float
    unit: Unit = "price"
    tick: float = 0.01

    def __post_init__(self) -> None:
        for name in ("step", "interval", "max_move", "tick"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InputError("the reprice rule", [(name, f"must be a positive number, not {value!r}")])
        if self.unit not in ("price", "bps", "ticks"):
            raise InputError("the reprice rule", [("unit", f"must be 'price', 'bps' or 'ticks', not "
                                                           f"{self.unit!r}")])

    def in_price(self, amount: float, planned_limit: float) -> float:
        if self.unit == "bps":
            return planned_limit * amount / 1e4
        if self.unit == "ticks":
            return amount * self.tick
        return amount


# ---- what may change, and when -------------------------------------------------------------------------
# The tifs a modify may move between: IB's modify changes a tif (its docs name DAY -> IOC), but OPG makes
# an auction order and GTD needs its good-till date, so those are a new order, not an amendment.
AMENDABLE_TIFS = ("DAY", "GTC", "IOC")


def check_changes(intent: OrderIntent, changes: dict[str, Any]) -> dict[str, Any]:
    """Bad input is an InputError naming the order and the field; nothing is recorded or sent."""
    coid = intent.client_order_id
    known = {f.name for f in fields(OrderIntent)}
    wanted = {name: value for name, value in changes.items() if value is not None}
    if not wanted:
        raise _bad(coid, "say what to change (limit, stop, quantity, tif, trail_amount, trail_percent or "
                         "offset)")
    for name, value in wanted.items():
        if name not in AMENDABLE_FIELDS or name not in known:
            raise _bad(coid, f"{name} cannot be amended (IB's modify changes "
                             f"{', '.join(n for n in AMENDABLE_FIELDS if n in known)})")
        if name == "tif":
            continue
        low = 0.0 if name == "offset" else None  # a peg or limit offset may be zero; prices are positive
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or (value < low if low is not None else value <= 0):
            what = "a number >= 0" if low is not None else "a positive number"
            raise _bad(coid, f"{name} must be {what}, not {value!r}")
    if "tif" in wanted:
        wanted["tif"] = _checked_tif(intent, wanted["tif"])
    problem = _type_problem(intent, wanted)
    if problem is not None:
        raise _bad(coid, problem)
    return {name: float(value) if name != "tif" else value for name, value in wanted.items()}


def _checked_tif(intent: OrderIntent, tif: Any) -> str:
    coid, kind = intent.client_order_id, intent.order_type
    word = tif.strip().upper() if isinstance(tif, str) else tif
    if word not in AMENDABLE_TIFS:
        raise _bad(coid, f"tif {tif!r} cannot be amended to: a modify moves a tif among "
                         f"{', '.join(AMENDABLE_TIFS)} (OPG and GTD: cancel and send a new order)")
    if intent.tif not in AMENDABLE_TIFS:
        raise _bad(coid, f"a tif {intent.tif} order keeps its tif (OPG is an opening-auction order, GTD has "
                         "its good-till date): cancel it and send a new order")
    if kind in CLOSE_AUCTION and word != "DAY":
        raise _bad(coid, f"a {kind} order needs tif DAY, not {word} (IB 113)")
    if intent.algo and word != "DAY":
        raise _bad(coid, f"an {intent.algo} algo order is a day order: tif must stay DAY, not {word}")
    return word


def _type_problem(intent: OrderIntent, wanted: dict[str, Any]) -> str | None:
    """Why the order's type has no such field to change (a modify never changes the order type), or None."""
    kind = intent.order_type
    if "limit_price" in wanted and intent.limit_price is None and kind not in CAPPED:
        hint = " (its limit follows its stop by the offset: amend offset)" if kind == "TRAIL LIMIT" else \
            " (a modify cannot change the order type: cancel it and send a limit order)"
        return f"a {kind} order has no limit price to change{hint}"
    if "stop_price" in wanted and kind not in STOPS | TRAILING:
        return f"a {kind} order has no stop price to change"
    for name, other in (("trail_amount", "trail_percent"), ("trail_percent", "trail_amount")):
        if name not in wanted:
            continue
        if kind not in TRAILING:
            return f"a {kind} order has no {name} to change (TRAIL and TRAIL LIMIT orders trail)"
        if getattr(intent, name) is None:
            return (f"the order trails by {other.split('_')[1]}: amend {other} (IB's modify does not "
                    "switch a trailing amount and a trailing percent: cancel it and send a new order)")
    if wanted.get("trail_percent", 0) >= 100:
        return f"trail_percent {wanted['trail_percent']:g} must be below 100"
    if "offset" in wanted and kind not in OFFSET:
        return f"a {kind} order has no offset to change (REL and TRAIL LIMIT orders have one)"
    return None


def _bad(coid: str, reason: str) -> InputError:
    return InputError("the amendment", [(coid, reason)])


def refusal(order: Order, changes: dict[str, Any]) -> str | None:
    """Why kit will not send this amendment now, or None: what a broker would refuse, said before sending."""
    if not amendable(order):
        state = "not at the broker" if not order.at_broker else f"{order.status.lower()}"
        return f"the order is {state}: nothing is working to amend"
    if order.amend_pending:
        return f"amendment {order.amend_pending} of this order is still awaiting the broker's answer"
    quantity = changes.get("quantity")
    if quantity is not None and quantity <= order.filled_quantity:
        return (f"quantity {quantity:g} is not above the {order.filled_quantity:g} already filled (to stop "
                "the rest, cancel the order)")
    if all(getattr(order.intent, name) == value for name, value in changes.items()):
        return "nothing would change: the order already works on these terms"
    return None


def _refuse(engine: Engine, order: Order, changes: dict[str, Any], reason: str) -> None:
    engine._apply(AmendRefused(order.client_order_id, utcnow(), f"not sent: {reason}",
                               order.amendments + 1, changes))
    engine.recorder.flush()


def ask(engine: Engine, order: Order, changes: dict[str, Any], why: str) -> int | None:
    """Record the request (write-ahead, before the broker sees it); its revision, or None when kit
    refused it itself (recorded as amend_refused) or could not record it."""
    reason = refusal(order, changes)
    if reason is not None:
        _refuse(engine, order, changes, reason)
        return None
    revision = order.amendments + 1
    engine._apply(AmendRequested(order.client_order_id, utcnow(), dict(changes), revision, why))
    if not engine.recorder.flush():  # not durable: a resume could not know what was asked
        order.amend_pending = 0
        return None
    return revision


async def send(engine: Engine, order: Order, changes: dict[str, Any], revision: int) -> None:
    """Hand a recorded request to the broker; its answer arrives as an event."""
    await engine.broker.amend(replace(order.intent, **changes), dict(changes), revision)


async def request(engine: Engine, order: Order, changes: dict[str, Any], why: str) -> bool:
    revision = ask(engine, order, changes, why)
    if revision is None:
        return False
    await send(engine, order, changes, revision)
    return True


async def amend_one(engine: Engine, client_order_id: str, changes: dict[str, Any], timeout: float) -> None:
    """kit.amend's work: list the order at the broker, check, send, and wait `timeout` for the answer.
    The outcome is left in engine.amend_outcome."""
    order = engine.book.orders[client_order_id]
    reason = refusal(order, changes)
    if reason is None:
        await engine._connected()
        try:
            known = await engine.broker.sync([order])
            engine._drain()
            reason = "the broker does not list this order" if client_order_id not in known else \
                refusal(order, changes)  # the broker's listing may have moved it on meanwhile
            if reason is None:
                revision = order.amendments + 1
                if await request(engine, order, changes, "kit.amend"):
                    engine.open.add(client_order_id)
                    loop = asyncio.get_running_loop()
                    await engine._follow(loop.time() + timeout, done=lambda: not order.amend_pending)
                    engine.amend_outcome = _answer(engine, order, revision, timeout)
                    return
                reason = "the ledger could not record the request"
        finally:
            await engine._disconnect()
    _refuse(engine, order, changes, reason)
    engine.amend_outcome = ("refused", f"not sent: {reason}")
    engine.notes.append(f"{client_order_id}: amendment refused, not sent: {reason}")


def _answer(engine: Engine, order: Order, revision: int, timeout: float) -> tuple[str, str]:
    coid = order.client_order_id
    if order.amend_pending:
        _unconfirmed(engine, order, f"within {timeout:g}s", timeout=timeout)
        return "unconfirmed", f"no answer within {timeout:g}s"
    if order.amendments < revision:
        engine.notes.append(f"{coid}: amendment refused by the broker: {order.amend_refusal}")
        return "refused", order.amend_refusal
    engine.notes.append(f"{coid}: amendment {revision} accepted")
    return "accepted", ""


def _unconfirmed(engine: Engine, order: Order, when: str, **detail: Any) -> None:
    """An amendment sent and not answered: the ledger keeps the terms last confirmed, and says so; the
    broker's answer, when the order is next followed or reconciled, settles it."""
    engine.recorder.order(order, "amend_unconfirmed", utcnow(), revision=order.amend_pending, **detail)
    engine.recorder.flush()
    engine.notes.append(f"{order.client_order_id}: the broker did not answer the amendment {when}; the "
                        "ledger keeps the terms it last confirmed (see `kit reconcile`)")


# ---- reprice: walking a resting limit order toward the touch ------------------------------------------
@contextmanager
def start_repricing(engine: Engine) -> Iterator[None]:
    """While the run follows its orders, walk them by engine.reprice; every timer ends with the block."""
    walker = Walker(engine, engine.reprice) if engine.reprice is not None else None
    if walker is not None:
        walker.start()
    try:
        yield
    finally:
        if walker is not None:
            walker.stop()


@dataclass
class Walker:
    """One timer per walking order on the event loop (loop.call_later): a step fires, asks for the next
    price, and sets the next timer; nothing waits in a loop."""

    engine: Engine
    rule: Reprice
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    # requests recorded and on their way to the broker: (order, changes, revision) by task
    sending: dict[asyncio.Task[None], tuple[Order, dict[str, Any], int]] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)  # the revision of the latest step asked for
    stopped: bool = False

    def start(self) -> None:
        for coid in sorted(self.engine.open):
            order = self.engine.book.orders[coid]
            if order.intent.order_type == "LMT" and order.intent.limit_price is not None and order.working:
                self.steps[coid] = 0
                self._later(coid)

    def stop(self) -> None:
        self.stopped = True
        for coid, timer in list(self.timers.items()):
            timer.cancel()
            order = self.engine.book.orders[coid]
            self._finish(order, _ended(order) or "the run ended or was stopped")
        self.timers.clear()
        for task, (order, changes, revision) in list(self.sending.items()):
            if not task.done():  # recorded, never handed over: say so, so the ledger does not wait for it
                task.cancel()
                self.engine._apply(AmendRefused(order.client_order_id, utcnow(), "not sent: the run stopped",
                                                revision, changes))
        for coid, revision in self.asked.items():  # sent, and the run ended before the broker's answer
            order = self.engine.book.orders[coid]
            if order.amend_pending == revision:
                _unconfirmed(self.engine, order, "before the run ended")

    def _later(self, coid: str) -> None:
        loop = asyncio.get_running_loop()
        self.timers[coid] = loop.call_later(self.rule.interval, self._step, coid)

    def _step(self, coid: str) -> None:
        self.timers.pop(coid, None)
        if self.stopped:
            return
        order = self.engine.book.orders[coid]
        if _ended(order):
            self._finish(order, _ended(order))
            return
        if order.amend_pending:  # the previous step's answer is still to come
            self._later(coid)
            return
        if self.asked.get(coid, 0) > order.amendments:
            self._finish(order, "the broker refused the last step")
            return
        price, why_not = self._next_price(order)
        if price is None:
            self._finish(order, why_not)
            return
        changes = {"limit_price": price}
        revision = ask(self.engine, order, changes, f"reprice step {self.steps[coid] + 1}")
        if revision is None:
            self._finish(order, order.amend_refusal or "not sent: the ledger could not record it")
            return
        self.steps[coid] += 1
        self.asked[coid] = revision
        task = asyncio.ensure_future(send(self.engine, order, changes, revision))
        self.sending[task] = (order, changes, revision)
        task.add_done_callback(lambda done: self.sending.pop(done, None))
        self._later(coid)

    def _next_price(self, order: Order) -> tuple[float | None, str]:
        intent, rule = order.intent, self.rule
        planned = order.planned.limit_price
        assert planned is not None and intent.limit_price is not None
        sign = 1 if intent.side is Side.BUY else -1
        cap = planned + sign * rule.in_price(rule.max_move, planned)
        touch = self.engine.broker.touch(intent.symbol, intent.side)
        # Step n lands n steps from the planned limit: rounding to the tick never accumulates.
        target = planned + sign * rule.in_price(rule.step, planned) * (self.steps[order.client_order_id] + 1)
        bounds = [cap] + ([touch] if touch is not None else [])
        target = min(target, *bounds) if sign > 0 else max(target, *bounds)
        target = _on_tick(target, rule.tick, sign)
        if (target - intent.limit_price) * sign < rule.tick / 2:
            at_cap = touch is None or (cap - touch) * sign <= 0
            return None, f"max_move {rule.max_move:g} {rule.unit} reached" if at_cap else "at the touch"
        return target, ""

    def _finish(self, order: Order, why: str) -> None:
        coid = order.client_order_id
        if coid not in self.steps:
            return
        steps = self.steps.pop(coid)
        self.engine.recorder.note("reprice_stopped", utcnow(), coid, why=why, steps=steps,
                                  limit_price=order.intent.limit_price,
                                  planned_limit_price=order.planned.limit_price)


def _ended(order: Order) -> str:
    """Why a walk ends with the order itself: its first fill, or it no longer works; "" while it rests."""
    if order.fills:
        return "filled"
    return "" if order.working else f"the order is {order.status.lower()}"


def _on_tick(price: float, tick: float, sign: int) -> float:
    """The price on the tick grid, rounded back toward the planned side (never past a bound)."""
    ticks = price / tick
    whole = math.floor(ticks + 1e-9) if sign > 0 else math.ceil(ticks - 1e-9)
    return round(whole * tick, 10)
