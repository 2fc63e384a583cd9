"""Ledger throughput: a 10,000-order basket filled in 5 partial fills per order by the mock broker, end to end
into the DuckDB ledger, against the same events written one commit per fill.

What is timed: one `kit.execute(plan, broker=MockBroker(...), db=<fresh file>)` call, from the call to its
return: opening the ledger, the write-ahead `submitted` events, the broker's 110,000 events (accepted, fill,
commission) folded by kit.state and written, the run's end, and the Run's DataFrames. Planning (validation,
risk) is timed apart. The ledger is then checked: 50,000 fills, every order FILLED.

The baseline is kit's own engine and writer with one change of policy: a commit after every fill (the
events between two fills join the next one). One commit costs milliseconds, so 50,000 of them would take
minutes: the baseline runs a 50-order slice of the basket, and kit runs that slice too, so both ratios are
printed: kit on the full basket against the baseline's rate, and both on the same slice.

The floor is what DuckDB itself needs for the rows kit wrote: every row of the kit run's ledger (events,
fills, orders, runs), read back (not timed) and bulk-inserted from DataFrames into a fresh file with the
same schema and keys, in one transaction, from connect to close. `share_of_floor` is the floor's time over
kit's: 1.0 would be kit at DuckDB's own cost.

`broker_alone` is the mock broker by itself, in the same run: the same basket's 110,000 events told into a
list, with no engine and no ledger (connect, every order submitted, the loop turned until the last event),
under the collection policy a run has. `kit_minus_broker` is kit's time without it: what kit itself costs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import pandas as pd

NAME = "ledger_throughput"
ORDERS = 10_000
FILLS_PER_ORDER = 5
QUANTITY = 100
SLICE = 50  # orders in the baseline's run (and in kit's same-slice run)
GOAL_FILLS_PER_S = 50_000
GOAL_RATIO = 20


def basket(orders: int) -> tuple[pd.DataFrame, dict[str, float]]:
    symbols = [f"S{i:05d}" for i in range(orders)]
    prices = {s: 10.0 + (i % 90) for i, s in enumerate(symbols)}
    return pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": QUANTITY}), prices


def _check(db: Path, orders: int) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        fills = con.execute("SELECT count(*) FROM fills").fetchone()[0]
        filled = con.execute("SELECT count(*) FROM orders WHERE status = 'FILLED' "
                             "AND filled_quantity = quantity").fetchone()[0]
        missing = con.execute("SELECT count(*) FROM fills WHERE commission IS NULL").fetchone()[0]
    finally:
        con.close()
    expected = orders * FILLS_PER_ORDER
    if (fills, filled, missing) != (expected, orders, 0):
        raise AssertionError(f"ledger holds {fills} fills (expected {expected}), {filled} filled orders "
                             f"(expected {orders}), {missing} fills without commission")


def _timed_execute(plan: Any, prices: dict[str, float], db: Path, engine: type | None = None
                   ) -> tuple[float, int]:
    """Seconds of one kit.execute call, and how many transactions it committed."""
    import kit
    import kit.api
    from kit.brokers.mock import MockBroker
    from kit.store import Ledger

    commits = 0
    write = Ledger.write

    def counting_write(self: Ledger, batch: Any) -> bool:
        nonlocal commits
        commits += 1
        return write(self, batch)

    broker = MockBroker(prices, partial_fills=FILLS_PER_ORDER)
    with mock.patch.object(Ledger, "write", counting_write), \
            mock.patch.object(kit.api, "Engine", engine or kit.api.Engine):
        start = time.perf_counter()
        run = kit.execute(plan, broker=broker, db=db, timeout=600)
        seconds = time.perf_counter() - start
    if run.status != "done":
        raise AssertionError(f"run ended {run.status}: {run.notes}")
    return seconds, commits


def broker_alone_seconds(plan: Any, prices: dict[str, float]) -> float:
    """Seconds for the mock broker alone to tell the plan's events into a list, as kit's run would have it
    tell them (the same orders, partial fills and collection policy), from connect to the last event."""
    from kit.api import _rare_full_collections
    from kit.brokers.mock import MockBroker

    expected = len(plan.intents) * (1 + 2 * FILLS_PER_ORDER)

    async def tell_all() -> float:
        broker = MockBroker(prices, partial_fills=FILLS_PER_ORDER)
        told: list[Any] = []
        all_told = asyncio.get_running_loop().create_future()

        def sink(event: Any) -> None:
            told.append(event)
            if len(told) == expected:
                all_told.set_result(None)

        broker.bind(sink)
        start = time.perf_counter()
        await broker.connect()
        for intent in plan.intents:
            await broker.submit(intent)
        await asyncio.wait_for(all_told, 600)
        return time.perf_counter() - start

    with _rare_full_collections():
        return asyncio.run(tell_all())


def floor_seconds(source: Path, target: Path) -> float:
    """Seconds to bulk-insert every row of the ledger `source` into a fresh ledger file `target`: connect,
    the schema (kit's migrations, keys included), one transaction of one INSERT per table, close."""
    from kit.store import LEDGER_TABLES, MIGRATIONS

    con = duckdb.connect(str(source), read_only=True)
    try:
        frames = {table: con.execute(f"SELECT * FROM {table}").df() for table in LEDGER_TABLES}
    finally:
        con.close()
    start = time.perf_counter()
    con = duckdb.connect(str(target))
    try:
        for migration in MIGRATIONS:
            for statement in migration:
                con.execute(statement)
        con.execute("BEGIN")
        for table, rows in frames.items():
            con.register("_floor", rows)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _floor")
            con.unregister("_floor")
        con.execute("COMMIT")
    finally:
        con.close()
    return time.perf_counter() - start


def commit_per_fill_engine() -> type:
    from kit.engine import Engine
    from kit.model import Execution

    class CommitPerFill(Engine):
        """The naive policy: every fill is committed on its own, as soon as it is applied."""

        def _apply(self, event: Any) -> None:
            super()._apply(event)
            if isinstance(event, Execution):
                self.recorder.flush()

    return CommitPerFill


def run(reps: int = 3) -> dict[str, Any]:
    import kit
    from bench._common import NO_FAT_FINGER, isolated, summary

    with isolated() as folder:
        targets, prices = basket(ORDERS)
        start = time.perf_counter()
        plan = kit.plan(targets, run_key="bench-throughput", prices=prices, risk=NO_FAT_FINGER)
        plan_seconds = time.perf_counter() - start
        small_targets, small_prices = basket(SLICE)
        small_plan = kit.plan(small_targets, run_key="bench-throughput-slice", prices=small_prices,
                               risk=NO_FAT_FINGER)
        naive = commit_per_fill_engine()

        full, full_commits, slice_kit, slice_base, base_commits, floor = [], 0, [], [], 0, []
        kit_seconds, alone_seconds = [], []
        for rep in range(reps):
            db = folder / f"full-{rep}.duckdb"
            seconds, full_commits = _timed_execute(plan, prices, db)
            _check(db, ORDERS)
            full.append(ORDERS * FILLS_PER_ORDER / seconds)
            kit_seconds.append(seconds)
            alone_seconds.append(broker_alone_seconds(plan, prices))
            floor.append(ORDERS * FILLS_PER_ORDER / floor_seconds(db, folder / f"floor-{rep}.duckdb"))
            db = folder / f"slice-kit-{rep}.duckdb"
            seconds, _ = _timed_execute(small_plan, small_prices, db)
            _check(db, SLICE)
            slice_kit.append(SLICE * FILLS_PER_ORDER / seconds)
            db = folder / f"slice-naive-{rep}.duckdb"
            seconds, base_commits = _timed_execute(small_plan, small_prices, db, naive)
            _check(db, SLICE)
            slice_base.append(SLICE * FILLS_PER_ORDER / seconds)

    kit_rate, base_rate, floor_rate = summary(full, 0), summary(slice_base, 0), summary(floor, 0)
    ratio = kit_rate["median"] / base_rate["median"]
    fills, events = ORDERS * FILLS_PER_ORDER, ORDERS * (1 + 2 * FILLS_PER_ORDER)
    without_broker = [k - b for k, b in zip(kit_seconds, alone_seconds, strict=True)]  # each rep's own pair
    kit_median = statistics.median(kit_seconds)
    return {
        "benchmark": NAME,
        "what": f"{ORDERS} orders x {FILLS_PER_ORDER} partial fills, mock broker, kit.execute end to end "
                "into a fresh ledger",
        "fills": ORDERS * FILLS_PER_ORDER,
        "fills_per_s": kit_rate,
        "commits": full_commits,
        "plan_seconds": round(plan_seconds, 3),
        "baseline": {"what": "same engine and writer, one commit per fill", "orders": SLICE,
                     "fills": SLICE * FILLS_PER_ORDER, "fills_per_s": base_rate, "commits": base_commits},
        "kit_same_slice": {"orders": SLICE, "fills_per_s": summary(slice_kit, 0)},
        "floor": {"what": "the same rows bulk-inserted into a fresh ledger in one transaction (connect, "
                          "schema, one INSERT per table from a DataFrame, close)", "fills_per_s": floor_rate},
        "share_of_floor": round(kit_rate["median"] / floor_rate["median"], 3),
        "broker_alone": {"what": "the mock broker telling the same basket's events into a list: no engine, "
                                 "no ledger", "events": events, "seconds": summary(alone_seconds, 3),
                         "events_per_s": summary([events / s for s in alone_seconds], 0),
                         "share_of_kit": round(statistics.median(alone_seconds) / kit_median, 3)},
        "kit_minus_broker": {"what": "kit's end-to-end time less the broker's alone, per repetition",
                             "seconds": summary(without_broker, 3),
                             "fills_per_s": summary([fills / s for s in without_broker], 0)},
        "ratio": round(ratio, 1),
        "ratio_same_slice": round(statistics.median(slice_kit) / statistics.median(slice_base), 1),
        "goal": {"fills_per_s": GOAL_FILLS_PER_S, "ratio": GOAL_RATIO},
        "met": {"fills_per_s": kit_rate["median"] >= GOAL_FILLS_PER_S, "ratio": ratio >= GOAL_RATIO},
    }


if __name__ == "__main__":
    from bench._common import emit

    emit(run())
