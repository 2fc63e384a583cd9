"""The notebook-facing API: kit.plan, kit.execute, kit.execute_async, kit.cancel, kit.amend, kit.ledger,
kit.tca.

`execute` must work in a script, in a Jupyter kernel and under papermill, and stop when the user presses
stop. The blocking calls run their coroutine on a private loop in a worker thread (a kernel's thread already
runs a loop, which kit does not patch) while the calling thread waits, draws progress and takes interrupts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import secrets
import signal
import threading
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from kit import clock
from kit.brokers.base import Broker
from kit.config import risk_limits, settings
from kit.engine import Engine, OnTimeout, Run, RunInfo
from kit.errors import Interrupted, KitError, RiskError, RunInterrupted
from kit.ids import check_run_key, run_id_for
from kit.instruments import odd_lot
from kit.planner import Plan, is_positions_frame, make_plan, row_keys
from kit.progress import TICK, Mode, Progress, say
from kit.qualify import qualify_frame
from kit.risk import RiskLimits, order_price
from kit.runlock import RunLock
from kit.store import Ledger

if TYPE_CHECKING:
    from kit.amending import Reprice
    from kit.costs import TcaResult

log = logging.getLogger("kit")
Prices = Mapping[str, float] | pd.DataFrame | pd.Series | None
T = TypeVar("T")


def new_run_key() -> str:
    """An interactive call without a run_key is a new run: a fresh, readable, unique key."""
    return f"run-{clock.now_utc():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def make_broker(broker: str | Broker, prices: Prices = None) -> Broker:
    if isinstance(broker, Broker):
        return broker
    if broker == "mock":
        from kit.brokers.mock import MockBroker

        return MockBroker(prices=prices)
    if broker == "ib":
        from kit.brokers.ib import IBBroker  # imported only when used: IB libraries are heavy

        return IBBroker.from_config()
    raise KitError(f"broker must be 'mock', 'ib' or a Broker object, not {broker!r}")


_FINISHED = object()  # the worker's last message to the waiting thread
# What the waiting thread says on the first and second interrupt (a third stops waiting for the worker).
ON_INTERRUPT = (
    "kit: interrupted: cancelling the run's working orders and waiting for the broker's confirmation "
    "(interrupt again to stop waiting and leave them working)",
    "kit: interrupted again: no longer waiting for cancel confirmations; unconfirmed orders stay working",
)


def _run(coroutine: Coroutine[Any, Any, T], progress: Progress | None = None) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop.

    The coroutine runs on a private loop in a worker thread. This thread waits for it, draws the progress
    the worker sends, and takes the interrupts Python delivers here (SIGINT: a kernel interrupt or Ctrl-C;
    SIGTERM too while this runs in the main thread). The first interrupt cancels the coroutine's task, and
    the engine turns that into "cancel the working orders, wait a bounded time for the broker's word"; the
    second cancels it again, which ends that wait and leaves unconfirmed orders working; a third stops
    waiting for the worker. The call then raises kit.errors.Interrupted, a KeyboardInterrupt that carries
    the run and shows as one short line in Jupyter, so the notebook stops at this cell.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(coroutine)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    outcome: dict[str, Any] = {}
    if progress is not None:
        progress.sink = inbox.put

    def work() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = loop.run_until_complete(task)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            _close_loop(loop)
            inbox.put(_FINISHED)

    worker = threading.Thread(target=work, name="kit-worker", daemon=True)
    interrupts = 0
    notice = ""  # said at the top of the loop, where another interrupt is caught like the first
    with _sigterm_interrupts():
        worker.start()
        while True:
            try:
                if notice:
                    said, notice = notice, ""
                    say(said)
                try:  # with a timeout even without progress: an interrupt is taken between two waits
                    item = inbox.get(timeout=TICK)
                except queue.Empty:  # nothing from the worker for a while: show the time passing
                    item = None
                if item is _FINISHED:
                    break
                if progress is not None:
                    progress.draw(item) if item is not None else progress.tick()
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > len(ON_INTERRUPT):
                    raise Interrupted("stopped waiting for kit's worker thread; the run goes on finishing in "
                                      "the background (check `kit runs` and `kit reconcile`)") from None
                with suppress(RuntimeError):  # the loop has closed: the run ended meanwhile
                    # A later interrupt is queued behind the task's reaction to the earlier one, or two
                    # cancels in a row would reach the task as one.
                    loop.call_soon_threadsafe(_cancel_after_pending, loop, task, interrupts)
                notice = ON_INTERRUPT[interrupts - 1]
    worker.join()
    return _outcome(outcome, interrupts, progress)


def _cancel_after_pending(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], rounds: int) -> None:
    """Cancel `task` once the callbacks queued before this one (a pending cancel's wake-up) have run."""
    if rounds > 1:
        loop.call_soon(_cancel_after_pending, loop, task, rounds - 1)
    elif not task.done():
        task.cancel()


def _outcome(outcome: dict[str, Any], interrupts: int, progress: Progress | None) -> Any:
    error = outcome.get("error")
    value = outcome.get("value")
    if progress is not None:
        progress.close(value.status if isinstance(value, Run) else "interrupted" if interrupts else "failed")
    if isinstance(error, RunInterrupted):
        raise Interrupted(str(error), error.run) from None
    if isinstance(error, asyncio.CancelledError):
        raise Interrupted("stopped before any order was sent") from None
    if error is not None:
        raise error
    if interrupts:  # the work ended before the interrupt could stop it: stop the notebook all the same
        state = f"run {value.run_key} ended {value.status}" if isinstance(value, Run) else "it had finished"
        raise Interrupted(f"interrupted, but {state} before the interrupt reached it", value)
    return value


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run does after its main task: cancel what is left, close generators and the loop."""
    try:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler stopping a job, `kill`) is an interrupt while kit waits in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# A full collection waits for FULL_COLLECTION_AFTER younger ones while a run executes (Python's default: 10).
FULL_COLLECTION_AFTER = 1_000
_collections_lock = threading.Lock()
_collections_held: list[tuple[int, ...]] = []  # the thresholds to restore, while any run holds them


@contextmanager
def _rare_full_collections() -> Iterator[None]:
    """A run keeps its orders, intents and the broker's events alive till it ends, and every full collection
    of Python's cycle collector walks all of them: a 100,000-order basket holds 1.4 million objects, walked
    16 times at ~0.45 s, 40% of the run's CPU, for nothing (they are not garbage). While a run executes, a
    full collection waits for FULL_COLLECTION_AFTER young collections instead of 10, so a long run still
    has one now and then; young garbage goes as always. Concurrent runs share the setting; the last one to
    end puts back what was there before the first."""
    with _collections_lock:
        if not _collections_held:
            before = gc.get_threshold()
            gc.set_threshold(*before[:2], max(before[2], FULL_COLLECTION_AFTER))
            _collections_held.append(before)
        else:
            _collections_held.append(_collections_held[0])
    try:
        yield
    finally:
        with _collections_lock:
            before = _collections_held.pop()
            if not _collections_held:
                gc.set_threshold(*before)


async def _account_state(broker: Broker, db: str | Path | None) -> tuple[dict[str, float], dict[str, float]]:
    """Positions and working orders, from the broker when it keeps an account, else from the ledger (where
    orders never handed to a broker are not working)."""
    if not broker.keeps_positions:
        return Ledger(db).book(broker.name)
    await broker.connect()
    try:
        return await broker.positions(), await broker.working()
    finally:
        await broker.close()


async def plan_async(targets: pd.DataFrame, broker: str | Broker = "mock", run_key: str | None = None, *,
                     db: str | Path | None = None, prices: Prices = None, capital: float | None = None,
                     risk: Mapping[str, Any] | RiskLimits | None = None, lot_size: float = 1,
                     min_notional: float = 0.0, sells_first: bool = False) -> Plan:
    from kit.brokers.mock import reference_prices

    # None is a new run; an explicit key, even an empty one, must be usable (an empty key never resumes).
    run_key = new_run_key() if run_key is None else check_run_key(run_key)
    limits = risk_limits(risk)
    the_broker = make_broker(broker, prices)
    if the_broker.contract_cache is None:
        the_broker.contract_cache = Ledger(db)
    reference = reference_prices(prices)
    if isinstance(targets, pd.DataFrame) and "symbol" in targets.columns and targets.columns.is_unique:
        targets = await qualify_frame(the_broker, targets, clock.utcnow().date())
        for key in row_keys(targets) - reference.keys():  # the broker's prices fill what prices= lacks
            price = the_broker.reference_price(key)
            if price is not None:
                reference[key] = price
    positions: dict[str, float] = {}
    working: dict[str, float] = {}
    taken: dict[tuple[str, str], int] = {}
    if is_positions_frame(targets) or limits.max_position is not None:
        positions, working = await _account_state(the_broker, db)
        if is_positions_frame(targets):
            taken = Ledger(db).legs(run_id_for(run_key))
    the_plan = make_plan(targets, run_key, positions=positions, working=working, prices=reference,
                         limits=limits, capital=capital, lot_size=lot_size, min_notional=min_notional,
                         sells_first=sells_first, taken=taken, now=clock.utcnow())
    _warn_odd_lots(the_plan)
    return the_plan


def _warn_odd_lots(the_plan: Plan) -> None:
    """IB re-routes IDEALPRO orders under USD 25,000 to IDEAL (odd lots, wider spreads): sent as given,
    and said."""
    for order in the_plan.intents:
        if order.sec_type == "CASH" and odd_lot(order.symbol, order.quantity,
                                                order_price(order, the_plan.prices)):
            log.warning("%s: %s %g is under IB's IDEALPRO minimum of USD 25,000: IB routes it to IDEAL as an "
                        "odd lot (wider spreads)", order.client_order_id, order.symbol, order.quantity)


def plan(targets: pd.DataFrame, broker: str | Broker = "mock", run_key: str | None = None,
         **options: Any) -> Plan:
    """Validate targets (orders, or positions to reach) into a risk-checked plan. Nothing is sent.

    Options: db, prices, capital (for target_weight), risk (limits to override), lot_size, min_notional,
    sells_first. The plan renders as a table in Jupyter; its `hash` is what `approve=` takes.
    """
    with _rare_full_collections():  # as kit.execute plans: a big frame's intents are not garbage
        return _run(plan_async(targets, broker, run_key, **options))


async def execute_async(
    targets: pd.DataFrame | Plan,
    broker: str | Broker = "mock",
    run_key: str | None = None,
    db: str | Path | None = None,
    timeout: float = 60.0,
    *,
    prices: Prices = None,
    on_timeout: OnTimeout = "cancel",
    strict: bool = False,
    dry_run: bool | None = None,
    approve: str | None = None,
    info: RunInfo | None = None,
    cancel_timeout: float = 10.0,
    progress: Progress | None = None,
    reprice: Reprice | None = None,
    **plan_options: Any,
) -> Run:
    """Plan (if given a frame), check risk, send, follow every order to a final state, record it all.

    dry_run (or KIT_DRY_RUN=1) records the plan as a run with status 'planned' and sends nothing.
    strict=True refuses the whole run when any order breaks a risk limit. A live account also needs
    KIT_ALLOW_LIVE=1 and approve=<the plan's hash>. Cancelling the task that awaits this cancels the working
    orders, waits up to cancel_timeout seconds for the broker's confirmations (a second cancel stops the
    wait) and raises kit.errors.RunInterrupted, whose `run` is the run as recorded.
    reprice=kit.Reprice(step=, interval=, max_move=) walks resting limit orders toward the touch by
    amendments while the run follows them (docs/amend.md).
    """
    if isinstance(targets, Plan):
        the_plan = targets
        if run_key is not None and run_key != the_plan.run_key:
            raise KitError(f"run_key {run_key!r} differs from the plan's {the_plan.run_key!r}")
        if plan_options:
            raise KitError(f"{sorted(plan_options)} shape planning: pass them to kit.plan, not with a Plan")
    else:
        with _rare_full_collections():
            the_plan = await plan_async(targets, broker, run_key, db=db, prices=prices, **plan_options)
    if strict and any(the_plan.breaches):
        stopped = [f"  {o.client_order_id}: {'; '.join(b)}"
                   for o, b in zip(the_plan.intents, the_plan.breaches, strict=True) if b]
        raise RiskError("strict=True and orders break risk limits; nothing was sent:\n" + "\n".join(stopped))
    if dry_run is None:
        dry_run = settings().dry_run
    ledger = Ledger(db)
    # Before the ledger: a second process refuses before it writes anything (on this machine by the lock
    # file; across machines, with a PostgreSQL ledger, by the database's lease).
    with RunLock(the_plan.run_key), ledger.lease(the_plan.run_key), _rare_full_collections():
        await asyncio.to_thread(ledger.open)  # may wait for another process to let go of the file
        with ledger:
            the_broker = make_broker(broker, prices)
            the_broker.contract_cache = ledger  # this run's ledger keeps what qualification learns
            engine = Engine(the_plan, the_broker, ledger, timeout=timeout,
                            on_timeout=on_timeout, cancel_timeout=cancel_timeout,
                            allow_live=settings().allow_live, approve=approve, dry_run=dry_run, info=info,
                            observer=progress.observe if progress else None, reprice=reprice)
            return await engine.run()


def execute(targets: pd.DataFrame | Plan, broker: str | Broker = "mock", run_key: str | None = None,
            db: str | Path | None = None, timeout: float = 60.0, *, progress: Mode | bool = "auto",
            **options: Any) -> Run:
    """Blocking form of execute_async; safe to call from a notebook cell whose kernel runs an event loop.

    progress: "auto" (one live display in Jupyter, a bar on a terminal, a few lines on stderr otherwise),
    "notebook", "bar", "log", or False. An interrupt (kernel interrupt, Ctrl-C, SIGTERM) stops the run: the
    working orders are cancelled and the broker's word awaited (cancel_timeout, 10 s), then
    kit.errors.Interrupted (a KeyboardInterrupt) is raised with the run; a second interrupt stops the wait
    and leaves unconfirmed orders working.
    """
    shown = Progress(progress)
    return _run(execute_async(targets, broker, run_key, db, timeout, progress=shown, **options), shown)


async def cancel_async(run: str | None = None, *, all_runs: bool = False, broker: str | Broker | None = None,
                       db: str | Path | None = None, timeout: float = 30.0) -> list[Run]:
    """The kill switch: cancel working orders of one run (or every run) and wait for the broker's word."""
    ledger = Ledger(db)
    await asyncio.to_thread(ledger.open)
    with ledger:
        run_ids = ledger.working_runs() if all_runs else [ledger.resolve_run(run)]
        results = []
        for run_id in run_ids:
            row = ledger.run_row(run_id)
            if row is None:
                raise KitError(f"run {run_id} is not in the ledger {ledger.path}")
            the_broker = make_broker(broker or row["broker"] or "mock")
            engine = Engine(Plan(row["run_key"], ()), the_broker, ledger, cancel_timeout=timeout)
            results.append(await engine.cancel_working())
        return results


def cancel(run: str | None = None, **options: Any) -> list[Run]:
    return _run(cancel_async(run, **options))


@dataclass
class Amendment:
    """What kit.amend did: accepted (the broker works the order on the new terms), refused (it works on as
    it was; `reason` says why) or unconfirmed (no answer in time: the ledger keeps the confirmed terms)."""

    run_key: str
    client_order_id: str
    outcome: str
    reason: str
    changes: dict[str, Any]
    run: Run

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    @property
    def order(self) -> pd.Series:
        """The order's row as it is now: working terms, and the planned ones in original_*."""
        orders = self.run.orders
        return orders[orders["client_order_id"] == self.client_order_id].iloc[0]

    def __repr__(self) -> str:
        change = ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                           for name, value in self.changes.items())
        why = f": {self.reason}" if self.reason else ""
        return f"amend {self.client_order_id} ({change}): {self.outcome}{why}"


def _order_of(orders: list[Any], order: str, run_key: str) -> Any:
    """An order of the run by client_order_id, or by symbol when the run has exactly one order in it."""
    by_id = [o for o in orders if o.client_order_id == order]
    by_symbol = [o for o in orders if o.intent.symbol == order]
    found = by_id or by_symbol
    if len(found) != 1:
        ids = ", ".join(o.client_order_id for o in found)
        how = f"{len(found)} orders ({ids})" if found else "no order"
        raise KitError(f"run {run_key!r} has {how} matching {order!r}: name it by its client_order_id")
    return found[0]


async def amend_async(run: str | None, order: str, *, limit: float | None = None, stop: float | None = None,
                      quantity: float | None = None, tif: str | None = None,
                      trail_amount: float | None = None, trail_percent: float | None = None,
                      offset: float | None = None,
                      broker: str | Broker | None = None, db: str | Path | None = None,
                      timeout: float = 10.0) -> Amendment:
    """Change a working order's limit price, stop price, quantity, tif (DAY, GTC, IOC), trailing amount or
    percent, or offset (a TRAIL LIMIT's limit offset, a REL's peg offset) through the broker (IB: its
    modify, the same order id) and wait `timeout` seconds for its answer. Refused before sending: an order
    that no longer works, a quantity not above what has filled. Every request and answer is in
    order_events (docs/amend.md lists what each order type lets you change)."""
    from kit.amending import check_changes

    ledger = Ledger(db)
    await asyncio.to_thread(ledger.open)
    with ledger:
        run_id = ledger.resolve_run(run)
        row = ledger.run_row(run_id)
        if row is None:
            raise KitError(f"run {run_id} is not in the ledger {ledger.path}")
        target = _order_of(ledger.load_orders(run_id), order, row["run_key"])
        changes = check_changes(target.intent, {"limit_price": limit, "stop_price": stop,
                                                "quantity": quantity, "tif": tif,
                                                "trail_amount": trail_amount, "trail_percent": trail_percent,
                                                "offset": offset})
        with RunLock(row["run_key"]):  # refuses at once while the run key executes elsewhere
            engine = Engine(Plan(row["run_key"], ()), make_broker(broker or row["broker"] or "mock"), ledger)
            result = await engine.amend_working(target.client_order_id, changes, timeout)
    outcome, reason = engine.amend_outcome
    return Amendment(row["run_key"], target.client_order_id, outcome, reason, changes, result)


def amend(run: str | None, order: str, **options: Any) -> Amendment:
    """Blocking form of amend_async: kit.amend("run-key", "AAPL", limit=187.5)."""
    return _run(amend_async(run, order, **options))


def tca(run_id: str | None = None, db: str | Path | None = None,
        close_prices: Mapping[str, float] | None = None) -> TcaResult:
    """Costs of one run (a run id or run key; the latest run by default): per order and per currency."""
    from kit.costs import tca as compute

    store = Ledger(db)
    run = store.resolve_run(run_id)
    return compute(store.orders(run), store.fills(run), close_prices)


def ledger(db: str | Path | None = None) -> Ledger:
    """The read side: ledger.runs(), .orders(run_id=...), .fills(run_id=...), .events(run_id=...)."""
    return Ledger(db)
