"""The notebook-facing API: kit.plan, kit.execute, kit.execute_async, kit.cancel, kit.ledger, kit.tca.

`execute` must work in a script, in a Jupyter kernel and under papermill. Inside a running event loop it
runs the engine on a private loop in a worker thread and waits for it, instead of patching the user's loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from kit import clock
from kit.brokers.base import Broker
from kit.config import risk_limits, settings
from kit.engine import Engine, OnTimeout, Run, RunInfo
from kit.errors import KitError, RiskError
from kit.ids import check_run_key, run_id_for
from kit.planner import Plan, is_positions_frame, make_plan
from kit.risk import RiskLimits
from kit.runlock import RunLock
from kit.store import Ledger

if TYPE_CHECKING:
    from kit.costs import TcaResult

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


def _run(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)  # type: ignore[arg-type]
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=target, name="kit-worker")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


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
    reference = reference_prices(prices)
    if isinstance(targets, pd.DataFrame) and "symbol" in targets.columns:
        for symbol in targets["symbol"].dropna().unique():  # the broker's prices fill what prices= lacks
            price = the_broker.reference_price(symbol) if symbol not in reference else None
            if price is not None:
                reference[symbol] = price
    positions: dict[str, float] = {}
    working: dict[str, float] = {}
    taken: dict[tuple[str, str], int] = {}
    if is_positions_frame(targets) or limits.max_position is not None:
        positions, working = await _account_state(the_broker, db)
        if is_positions_frame(targets):
            taken = Ledger(db).legs(run_id_for(run_key))
    return make_plan(targets, run_key, positions=positions, working=working, prices=reference, limits=limits,
                     capital=capital, lot_size=lot_size, min_notional=min_notional, sells_first=sells_first,
                     taken=taken)


def plan(targets: pd.DataFrame, broker: str | Broker = "mock", run_key: str | None = None,
         **options: Any) -> Plan:
    """Validate targets (orders, or positions to reach) into a risk-checked plan. Nothing is sent.

    Options: db, prices, capital (for target_weight), risk (limits to override), lot_size, min_notional,
    sells_first. The plan renders as a table in Jupyter; its `hash` is what `approve=` takes.
    """
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
    **plan_options: Any,
) -> Run:
    """Plan (if given a frame), check risk, send, follow every order to a final state, record it all.

    dry_run (or KIT_DRY_RUN=1) records the plan as a run with status 'planned' and sends nothing.
    strict=True refuses the whole run when any order breaks a risk limit. A live account also needs
    KIT_ALLOW_LIVE=1 and approve=<the plan's hash>.
    """
    if isinstance(targets, Plan):
        the_plan = targets
        if run_key is not None and run_key != the_plan.run_key:
            raise KitError(f"run_key {run_key!r} differs from the plan's {the_plan.run_key!r}")
        if plan_options:
            raise KitError(f"{sorted(plan_options)} shape planning: pass them to kit.plan, not with a Plan")
    else:
        the_plan = await plan_async(targets, broker, run_key, db=db, prices=prices, **plan_options)
    if strict and any(the_plan.breaches):
        stopped = [f"  {o.client_order_id}: {'; '.join(b)}"
                   for o, b in zip(the_plan.orders, the_plan.breaches, strict=True) if b]
        raise RiskError("strict=True and orders break risk limits; nothing was sent:\n" + "\n".join(stopped))
    if dry_run is None:
        dry_run = settings().dry_run
    ledger = Ledger(db)
    with RunLock(the_plan.run_key):  # before the ledger: a second process refuses before it writes anything
        await asyncio.to_thread(ledger.open)  # may wait for another process to let go of the file
        with ledger:
            engine = Engine(the_plan, make_broker(broker, prices), ledger, timeout=timeout,
                            on_timeout=on_timeout, allow_live=settings().allow_live, approve=approve,
                            dry_run=dry_run, info=info)
            return await engine.run()


def execute(targets: pd.DataFrame | Plan, broker: str | Broker = "mock", run_key: str | None = None,
            db: str | Path | None = None, timeout: float = 60.0, **options: Any) -> Run:
    """Blocking form of execute_async; safe to call from a notebook cell whose kernel runs an event loop."""
    return _run(execute_async(targets, broker, run_key, db, timeout, **options))


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
