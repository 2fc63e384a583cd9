"""Big basket: a 100,000-row targets frame (one symbol per row, MKT BUY) through `kit.execute` on the mock
broker, end to end into a fresh ledger: wall seconds and peak memory, against a naive floor.

Every measurement runs in a fresh interpreter (`python -m bench.big_basket child MODE`), so its peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is its own and not the leftovers of an earlier repetition;
kit's and the floor's repetitions alternate. Each child reports the RSS after its imports and after building
the frame (`rss_ready_mib`), so the share of the peak that the measured call itself adds is visible.

- `kit`: `kit.execute(targets, broker=MockBroker(prices), db=<fresh file>, timeout=600)`: validation,
  client ids, risk, the plan, the write-ahead rows, 300,000 broker events (acknowledgement, fill,
  commission per order) folded and written, the run's end and the Run's DataFrames. The ledger is checked
  afterwards (not timed): 100,000 orders FILLED, 100,000 fills.
- `plan`: `kit.plan(targets, prices=prices)` alone (validation, ids, risk), the pure part of the above.
- `where`: one more kit run (not in the timed figures), with the wall time spent in each part of kit measured
  by wrapping its functions: planning, the mock broker's own work, building the order/fill/event rows at a
  flush, the ledger's writes (rows to frames, DuckDB), the Run's DataFrames, the engine's fold of each event
  with its audit row (Engine._apply), and the events kit records itself (planned, ...: Recorder.order); the
  rest is everything else (the event loop, the engine's send loop, opening the ledger and the run).
- floor: what any implementation pays: the same frame validated by pandas column operations (symbol
  pattern, side, whole positive quantity under the limit, duplicates), the client order ids built as one
  string column, and the order rows bulk-inserted into a fresh DuckDB file in one statement.
- ledger_floor: DuckDB's own cost of the ledger this run leaves, written as kit's contract has it written:
  the rows of one kit run (read back from its ledger, not timed: the same values, the same JSON details)
  into a fresh ledger (kit's schema, its keys) in kit's transactions: the plan's order rows and `planned`
  events MAX_BATCH orders at a time, then per such batch its write-ahead (the `submitted` events and the
  state columns UPDATEd) and the broker's events MAX_BATCH at a time, with the fills and the final state
  UPDATE in the last. Each statement takes a whole registered DataFrame: no Python per row. What is left
  of the goal after it is what kit's Python may spend (validation, the fold, the audit rows, the Run).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "big_basket"
ORDERS = 100_000
QUANTITY = 100
GOAL_SECONDS = 5.0
GOAL_PEAK_MIB = 400.0
MODES = ("kit", "plan", "floor")
LEDGER_FLOOR = "ledger_floor"  # one child: one kit run to read the rows from, then `reps` timed writes
PROFILE = "profile"  # one more child, untimed figures: where kit's time goes (see _profiled)
# The key of the measurements so far (with 32-bit exec ids, `bench-big` collided; the mock now uses 64).
RUN_KEY = "bench-big-3"


def basket(orders: int = ORDERS) -> tuple[Any, dict[str, float]]:
    import pandas as pd

    symbols = [f"S{i:06d}" for i in range(orders)]
    prices = {s: 10.0 + (i % 90) for i, s in enumerate(symbols)}
    return pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": QUANTITY}), prices


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu() -> float:
    """CPU seconds of this process, user + system: on a shared machine the wall time includes waiting for
    a core, and this does not (kit's engine is one thread; DuckDB may use more)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _kit(folder: Path, plan_only: bool) -> dict[str, Any]:
    import kit
    from bench._common import NO_FAT_FINGER
    from kit.brokers.mock import MockBroker

    targets, prices = basket()
    ready = _rss_mib()
    if plan_only:
        start, cpu = time.perf_counter(), _cpu()
        plan = kit.plan(targets, run_key="bench-big-plan", prices=prices, risk=NO_FAT_FINGER)
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu
        if len(plan) != ORDERS:
            raise AssertionError(f"plan has {len(plan)} orders")
        return {"seconds": seconds, "cpu_seconds": cpu, "rss_ready_mib": ready, "peak_rss_mib": _rss_mib()}
    db = folder / "kit.duckdb"
    broker = MockBroker(prices)
    start, cpu = time.perf_counter(), _cpu()
    run = kit.execute(targets, broker=broker, run_key=RUN_KEY, db=db, timeout=600, risk=NO_FAT_FINGER)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    peak = _rss_mib()
    if run.status != "done":
        raise AssertionError(f"run ended {run.status}: {run.notes}")
    _check(db)
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_ready_mib": ready, "peak_rss_mib": peak}


def _profiled(folder: Path) -> dict[str, Any]:
    """Seconds of one kit run spent in each part (see the module's docstring), and the rest."""
    import contextlib
    from unittest import mock

    import kit.api
    from kit.brokers.mock import MockBroker
    from kit.engine import Engine
    from kit.recorder import Recorder
    from kit.store import Ledger

    spent: dict[str, float] = {}

    def timed(part: str, function: Any, is_async: bool = False) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - start

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - start

        return async_wrapper if is_async else wrapper

    parts = [(kit.api, "make_plan", "plan", False), (Ledger, "write", "ledger_writes", False),
             (Recorder, "flush", "flush_with_writes", False), (MockBroker, "submit", "broker", True),
             (MockBroker, "_run_due", "broker", False), (Engine, "_result", "run_frames", False),
             (Engine, "_apply", "fold_and_audit_rows", False), (Recorder, "order", "order_events", False)]
    with contextlib.ExitStack() as stack:
        for owner, name, part, is_async in parts:
            stack.enter_context(mock.patch.object(owner, name, timed(part, getattr(owner, name), is_async)))
        result = _kit(folder, plan_only=False)
    # A flush's own work is building its rows; the write inside it is counted apart. The mock's callbacks
    # hand events to the engine's queue, which is a deque append.
    spent["rows_at_flush"] = spent.pop("flush_with_writes") - spent["ledger_writes"]
    spent["rest"] = result["seconds"] - sum(spent.values())
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return {"seconds": round(result["seconds"], 3), "parts_s": {k: round(v, 3) for k, v in ranked},
            "shares": {k: round(v / result["seconds"], 3) for k, v in ranked}}


def _check(db: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        filled = con.execute("SELECT count(*) FROM orders WHERE status = 'FILLED'").fetchone()[0]
        fills = con.execute("SELECT count(*) FROM fills").fetchone()[0]
    finally:
        con.close()
    if (filled, fills) != (ORDERS, ORDERS):
        raise AssertionError(f"ledger holds {filled} filled orders and {fills} fills, expected {ORDERS} each")


def _floor(folder: Path) -> dict[str, Any]:
    import duckdb
    import pandas as pd

    targets, prices = basket()
    ready = _rss_mib()
    start, cpu = time.perf_counter(), _cpu()
    symbol = targets["symbol"]
    quantity = targets["quantity"]
    bad = (~symbol.str.fullmatch(r"[A-Z0-9][A-Z0-9 .\-/]{0,20}", na=False)
           | ~targets["side"].isin(["BUY", "SELL"])
           | quantity.isna() | (quantity <= 0) | (quantity != quantity.round()) | (quantity > 10_000_000)
           | targets.duplicated(keep="first"))
    if bad.any():
        raise AssertionError(f"{int(bad.sum())} bad rows")
    rows = pd.DataFrame({
        "client_order_id": "bench-floor-" + symbol + "-" + targets["side"],
        "symbol": symbol, "side": targets["side"], "quantity": quantity.astype(float),
        "order_type": "MKT", "tif": "DAY", "status": "NEW",
        "price": symbol.map(prices),
    })
    con = duckdb.connect(str(folder / "floor.duckdb"))
    try:
        con.execute("CREATE TABLE orders (client_order_id VARCHAR PRIMARY KEY, symbol VARCHAR, side VARCHAR, "
                    "quantity DOUBLE, order_type VARCHAR, tif VARCHAR, status VARCHAR, price DOUBLE)")
        con.register("incoming", rows)
        con.execute("INSERT INTO orders SELECT * FROM incoming")
        con.unregister("incoming")
    finally:
        con.close()
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_ready_mib": ready, "peak_rss_mib": _rss_mib()}


def _ledger_floor(folder: Path, reps: int) -> dict[str, Any]:
    """See the module's docstring: seconds of each of `reps` writes of one run's rows, kit's way."""
    import duckdb

    import kit
    from bench._common import NO_FAT_FINGER
    from kit.brokers.mock import MockBroker
    from kit.engine import MAX_BATCH
    from kit.store import EVENT_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS, ORDER_STATE_COLUMNS, Ledger, _quoted

    targets, prices = basket()
    source = folder / "source.duckdb"
    kit.execute(targets, broker=MockBroker(prices), run_key=RUN_KEY, db=source, timeout=600,
                risk=NO_FAT_FINGER)
    with duckdb.connect(str(source), read_only=True) as con:
        runs = con.execute("SELECT * FROM runs").df()
        orders = con.execute(f"SELECT {_quoted(ORDER_COLUMNS)} FROM orders ORDER BY client_order_id").df()
        fills = con.execute(f"SELECT {_quoted(FILL_COLUMNS)} FROM fills ORDER BY client_order_id").df()
        events = con.execute(f"SELECT {_quoted(EVENT_COLUMNS)} FROM order_events ORDER BY seq").df()
    states = orders[["client_order_id", *ORDER_STATE_COLUMNS]]
    order_of = {key: i for i, key in enumerate(orders["client_order_id"])}
    batch_of = events["client_order_id"].map(order_of).fillna(-1) // MAX_BATCH  # -1: the run's own events
    planned, submitted = events[events["kind"] == "planned"], events[events["kind"] == "submitted"]
    told = events[~events["kind"].isin(["planned", "submitted"])]
    told_batch = batch_of[told.index]
    assignments = ", ".join(f'"{c}" = s."{c}"' for c in ORDER_STATE_COLUMNS)
    transactions: list[list[tuple[str, Any]]] = []  # each: (statement, the frame it reads)
    insert_events = "INSERT INTO order_events SELECT * FROM f"
    for start in range(0, len(orders), MAX_BATCH):
        keys = orders["client_order_id"].iloc[start:start + MAX_BATCH]
        transactions.append([(f"INSERT INTO orders ({_quoted(ORDER_COLUMNS)}) SELECT * FROM f",
                              orders.iloc[start:start + MAX_BATCH]),
                             (insert_events, planned[planned["client_order_id"].isin(keys)])])
    update = f"UPDATE orders SET {assignments} FROM f s WHERE orders.client_order_id = s.client_order_id"
    for number, start in enumerate(range(0, len(orders), MAX_BATCH)):
        keys = orders["client_order_id"].iloc[start:start + MAX_BATCH]
        transactions.append([(update, states.iloc[start:start + MAX_BATCH]),
                             (insert_events, submitted[submitted["client_order_id"].isin(keys)])])
        mine = told[(told_batch == number) | ((told_batch == -1) & (number == 0))]
        for at in range(0, len(mine), MAX_BATCH):
            transactions.append([(insert_events, mine.iloc[at:at + MAX_BATCH])])
        transactions[-1] += [(f"INSERT INTO fills ({_quoted(FILL_COLUMNS)}) SELECT * FROM f",
                              fills[fills["client_order_id"].isin(keys)]),
                             (update, states.iloc[start:start + MAX_BATCH])]
    seconds = []
    for rep in range(reps):
        start_time = time.perf_counter()
        path = folder / f"floor-{rep}.duckdb"
        Ledger(path).open().close()  # kit's schema, made as a run makes it
        con = duckdb.connect(str(path))
        con.register("f", runs)
        con.execute("INSERT INTO runs SELECT * FROM f")
        for statements in transactions:
            con.execute("BEGIN")
            for statement, rows in statements:
                con.register("f", rows)
                con.execute(statement)
            con.execute("COMMIT")
        con.unregister("f")
        con.close()
        seconds.append(time.perf_counter() - start_time)
        with duckdb.connect(str(path), read_only=True) as check:
            written = [check.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("orders", "fills", "order_events")]
        expected = [len(orders), len(fills), len(events)]
        if written != expected:
            raise AssertionError(f"the floor wrote {written} orders, fills, events; the run {expected}")
    return {"seconds": seconds, "transactions": len(transactions),
            "rows": {"orders": len(orders), "fills": len(fills), "events": len(events)}}


def _child(mode: str, reps: int = 1) -> dict[str, Any]:
    from bench._common import isolated

    with isolated() as folder:
        if mode == LEDGER_FLOOR:
            return _ledger_floor(folder, reps)
        if mode == "floor":
            return _floor(folder)
        if mode == PROFILE:
            return _profiled(folder)
        return _kit(folder, plan_only=mode == "plan")


def _spawn(mode: str, reps: int = 1) -> dict[str, Any]:
    from bench._common import ROOT, clean_environment

    done = subprocess.run([sys.executable, "-m", "bench.big_basket", "child", mode, str(reps)], cwd=ROOT,
                          env=clean_environment(), capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from bench._common import summary

    return {"seconds": summary([s["seconds"] for s in samples], 3),
            "cpu_seconds": summary([s["cpu_seconds"] for s in samples], 3),
            "peak_rss_mib": summary([s["peak_rss_mib"] for s in samples], 1),
            "rss_ready_mib": summary([s["rss_ready_mib"] for s in samples], 1)}


def run(reps: int = 3) -> dict[str, Any]:
    from bench._common import summary

    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for _ in range(reps):
        for mode in MODES:  # interleaved: a slow minute on the shared machine hits all three alike
            samples[mode].append(_spawn(mode))
    kit_figures, plan_figures, floor = (_figures(samples[m]) for m in MODES)
    where = _spawn(PROFILE)
    ledger_floor = _spawn(LEDGER_FLOOR, reps)
    seconds, peak = kit_figures["seconds"]["median"], kit_figures["peak_rss_mib"]["median"]
    written = summary(ledger_floor["seconds"], 3)
    return {
        "benchmark": NAME,
        "what": f"{ORDERS} distinct symbols, MKT BUY {QUANTITY}, kit.execute on MockBroker into a fresh "
                "ledger (fresh interpreter per measurement; peak = ru_maxrss of the process)",
        "kit": kit_figures,
        "plan": {"what": "kit.plan of the same frame (validation, ids, risk)", **plan_figures},
        "where": {"what": "one more kit run, its wall seconds by part (functions wrapped; not in the figures "
                          "above)", **where},
        "floor": {"what": "pandas column checks of the frame + one bulk DuckDB insert of the order rows",
                  **floor},
        "ledger_floor": {"what": "DuckDB alone: one run's rows written into a fresh ledger in kit's "
                                 "transactions from whole DataFrames (see the module's docstring)",
                         "seconds": written,
                         "transactions": ledger_floor["transactions"], "rows": ledger_floor["rows"],
                         "share_of_kit": round(written["median"] / seconds, 3),
                         "left_for_python_within_goal_s": round(GOAL_SECONDS - written["median"], 3)},
        "share_of_floor": round(floor["seconds"]["median"] / seconds, 3),
        "share_of_floor_cpu": round(floor["cpu_seconds"]["median"] / kit_figures["cpu_seconds"]["median"], 3),
        "ratio": round(seconds / floor["seconds"]["median"], 1),
        "ratio_cpu": round(kit_figures["cpu_seconds"]["median"] / floor["cpu_seconds"]["median"], 1),
        "goal": {"seconds": GOAL_SECONDS, "peak_rss_mib": GOAL_PEAK_MIB},
        "met": {"seconds": seconds < GOAL_SECONDS, "peak_rss_mib": peak < GOAL_PEAK_MIB},
    }


if __name__ == "__main__":
    from bench._common import emit

    if sys.argv[1:2] == ["child"]:
        emit(_child(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1))
    else:
        emit(run())
