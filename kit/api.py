"""The notebook-facing API: kit.plan, kit.execute, kit.execute_async, kit.ledger.

`execute` must work in a script, in a Jupyter kernel and under papermill. Inside a running event loop it
runs the engine on a private loop in a worker thread and waits for it, instead of patching the user's loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kit.brokers.base import Broker
from kit.config import setting, truthy
from kit.engine import Engine, OnTimeout, Run, RunInfo
from kit.planner import Plan, make_plan
from kit.store import Ledger

if TYPE_CHECKING:
    from kit.costs import TcaResult

Prices = Mapping[str, float] | pd.DataFrame | pd.Series | None


def new_run_key() -> str:
    """An interactive call without a run_key is a new run: a fresh, readable, unique key."""
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def plan(targets: pd.DataFrame, broker: str | Broker = "mock", run_key: str | None = None) -> Plan:
    """Validate targets into a plan. Nothing is sent and nothing is written."""
    return make_plan(targets, run_key or new_run_key())


def make_broker(broker: str | Broker, prices: Prices = None) -> Broker:
    if isinstance(broker, Broker):
        return broker
    if broker == "mock":
        from kit.brokers.mock import MockBroker

        return MockBroker(prices=prices)
    if broker == "ib":
        from kit.brokers.ib import IBBroker  # imported only when used: IB libraries are heavy

        return IBBroker.from_config()
    raise ValueError(f"broker must be 'mock', 'ib' or a Broker object, not {broker!r}")


async def execute_async(
    targets: pd.DataFrame | Plan,
    broker: str | Broker = "mock",
    run_key: str | None = None,
    db: str | Path | None = None,
    timeout: float = 60.0,
    *,
    prices: Prices = None,
    on_timeout: OnTimeout = "cancel",
    info: RunInfo | None = None,
) -> Run:
    """Plan (if given a frame), send, follow every order to a final state, record it all; return the Run."""
    if isinstance(targets, Plan):
        the_plan = targets
        if run_key is not None and run_key != the_plan.run_key:
            raise ValueError(f"run_key {run_key!r} differs from the plan's {the_plan.run_key!r}")
    else:
        the_plan = plan(targets, broker, run_key)
    the_broker = make_broker(broker, prices)
    with Ledger(db) as ledger:
        engine = Engine(the_plan, the_broker, ledger, timeout=timeout, on_timeout=on_timeout,
                        allow_live=truthy(setting("KIT_ALLOW_LIVE", "0")), info=info)
        return await engine.run()


def execute(targets: pd.DataFrame | Plan, broker: str | Broker = "mock", run_key: str | None = None,
            db: str | Path | None = None, timeout: float = 60.0, **options: Any) -> Run:
    """Blocking form of execute_async; safe to call from a notebook cell whose kernel runs an event loop."""
    coroutine = execute_async(targets, broker, run_key, db, timeout, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return _run_in_thread(coroutine)


def _run_in_thread(coroutine: Any) -> Any:
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=target, name="kit-execute")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


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
