"""Reconcile: the broker's truth against the ledger, as a table of breaks; `adopt=True` takes the broker's.

The broker replays what it has for a run's orders (open and completed orders, today's executions and their
commissions) as ordinary events. Folded into a copy of the ledger's orders by the same core that runs
every order, they show what the ledger lacks; with adopt they are applied and recorded, each change with
an audit event. What the ledger has and the broker does not (a fill IB does not list) is reported, never
deleted: that needs a person.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from kit.brokers.base import Broker
from kit.clock import utcnow
from kit.errors import KitError
from kit.model import Event, Execution, Order
from kit.recorder import Recorder
from kit.state import Effect, OrderBook
from kit.store import Ledger

BREAK_COLUMNS = ["run_id", "client_order_id", "kind", "ledger", "broker"]


@dataclass
class Reconciliation:
    breaks: pd.DataFrame
    positions: pd.DataFrame  # informational: an account can hold what kit never traded
    adopted: int = 0

    def __str__(self) -> str:
        adopted = f"; {self.adopted} change(s) adopted" if self.adopted else ""
        lines = [f"{len(self.breaks)} break(s){adopted}"]
        if len(self.breaks):
            lines.append(self.breaks.to_string(index=False))
        if len(self.positions):
            lines += ["positions (broker vs ledger, informational):", self.positions.to_string(index=False)]
        return "\n".join(lines)


def compare(before: dict[str, Order], after: dict[str, Order], known: set[str], broker_execs: set[str],
            today: date) -> list[dict[str, Any]]:
    """Breaks between the ledger's orders and the same orders after the broker's replay. Pure.

    `today` (UTC) bounds what the broker can be asked for: it lists only the current day's executions, so
    only a fill of today that it does not list is a break."""
    breaks = []
    for coid, old in before.items():
        new = after[coid]
        run = old.run_id

        def add(kind: str, ledger: Any, broker: Any, coid: str = coid, run: str = run) -> None:
            breaks.append({"run_id": run, "client_order_id": coid, "kind": kind, "ledger": ledger,
                           "broker": broker})

        if not old.at_broker:
            continue
        if coid not in known:
            if old.working:
                add("unknown_at_broker", str(old.status), None)
            continue
        if old.status != new.status:
            add("status", str(old.status), str(new.status))
        if old.filled_quantity != new.filled_quantity:
            add("filled_quantity", old.filled_quantity, new.filled_quantity)
        for base, fill in new.fills.items():
            mine = old.fills.get(base)
            if mine is None or mine.exec_id != fill.exec_id:
                add("missing_fill", mine.exec_id if mine else None,
                    f"{fill.exec_id} {fill.quantity:g}@{fill.price:g}")
            elif not mine.commission_known and fill.commission_known:
                add("missing_commission", None, f"{fill.exec_id} {fill.commission:g}")
        for fill in old.fills.values():
            if fill.exec_id not in broker_execs and fill.time.date() == today:
                add("fill_not_at_broker", f"{fill.exec_id} {fill.quantity:g}@{fill.price:g}", None)
    return breaks


async def reconcile_async(run: str | None = None, *, broker: str | Broker | None = None,
                          db: str | Path | None = None, adopt: bool = False) -> Reconciliation:
    from kit.api import make_broker

    ledger = Ledger(db)
    if not ledger.path.exists():  # nothing to compare the broker with; and no empty ledger is left behind
        raise KitError(f"no ledger at {ledger.path}: run something first, or set KIT_DB")
    await asyncio.to_thread(ledger.open)
    with ledger:
        run_ids = [ledger.resolve_run(run)] if run else ledger.runs_sent_on(utcnow().date())
        broker_name = broker if isinstance(broker, str) or broker is None else broker.name
        orders = [o for r in run_ids for o in ledger.load_orders(r)]
        if broker is None and run_ids:
            broker_name = ledger.run_row(run_ids[0])["broker"]
        the_broker = make_broker(broker or broker_name or "ib")
        before = {o.client_order_id: o.copy() for o in orders}
        book = OrderBook()
        for order in orders:
            book.add(order)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        the_broker.bind(queue.put_nowait)
        await the_broker.connect()
        try:
            known = await the_broker.sync([o for o in orders if o.at_broker])
            held = await the_broker.positions() if the_broker.keeps_positions else None
        finally:
            events = []
            while not queue.empty():
                events.append(queue.get_nowait())
            await the_broker.close()
        broker_execs = {e.fill.exec_id for e in events if isinstance(e, Execution)}
        recorders = {r: Recorder(ledger, r) for r in run_ids}
        adopted = 0
        for event in events:
            outcome = book.apply(event)
            if adopt and outcome.order is not None and outcome.effect in (Effect.APPLIED, Effect.CORRECTION):
                recorder = recorders[outcome.order.run_id]
                recorder.record(event, outcome)
                recorder.note("adopted", utcnow(), outcome.order.client_order_id, source=the_broker.name,
                              event=event.kind)
                adopted += 1
        for recorder in recorders.values():
            recorder.flush()
        today = utcnow().date()
        breaks = compare(before, book.orders, known, broker_execs, today)
        if adopt:  # what remains after adopting: only what needs a person
            breaks = compare({c: o.copy() for c, o in book.orders.items()}, book.orders, known, broker_execs,
                             today)
        positions = _positions(ledger, the_broker.name, held)
    return Reconciliation(pd.DataFrame(breaks, columns=BREAK_COLUMNS), positions, adopted)


def _positions(ledger: Ledger, broker: str, held: dict[str, float] | None) -> pd.DataFrame:
    if held is None:
        return pd.DataFrame(columns=["symbol", "broker", "ledger"])
    mine, _ = ledger.book(broker)
    symbols = sorted(set(held) | set(mine))
    return pd.DataFrame({"symbol": symbols, "broker": [held.get(s, 0.0) for s in symbols],
                         "ledger": [mine.get(s, 0.0) for s in symbols]})


def reconcile(run: str | None = None, **options: Any) -> Reconciliation:
    """The blocking form of reconcile_async (options: broker=, db=, adopt=); `kit reconcile` prints
    str(result) and exits 1 while breaks remain."""
    from kit.api import _run

    return _run(reconcile_async(run, **options))

