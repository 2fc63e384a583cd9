"""Many writers on one ledger: 8 processes, 8 run keys, 2,000 fills each, PostgreSQL next to DuckDB.

Each process runs `kit.execute` end to end: 400 orders filled in 5 partial fills each by the mock broker
(2,000 fills, 4,800 events with the acknowledgements and commissions), its own run key, one shared ledger.
What is timed: from the first process's call to kit.execute to the last one's return (interpreter start,
imports and planning excluded; each process reports its own wall-clock start and end). Throughput is all
fills over that span.

- postgres: one PostgreSQL ledger (a throw-away server started here, fsync on), every process writing at once.
- duckdb: one DuckDB file; DuckDB lets one process write at a time, so the others wait for it between
  batches (or journal): what a team gets without a server.
- floor: the same rows (fills, orders, events) COPY'd into a fresh PostgreSQL database in one transaction by
  one process: what the server itself costs, without kit.

Run: `python -m bench.many_writers` (make bench runs it), or `--worker DB RUN_KEY ORDERS` for one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "many_writers"
PROCESSES = 8
ORDERS = 400
FILLS_PER_ORDER = 5
QUANTITY = 100


def worker(db: str, run_key: str, orders: int) -> dict[str, Any]:
    """One writer: its run, end to end; its wall-clock span and what it recorded."""
    import pandas as pd

    import kit
    from bench._common import NO_FAT_FINGER
    from kit.brokers.mock import MockBroker

    symbols = [f"S{i:04d}" for i in range(orders)]
    prices = {s: 10.0 + (i % 90) for i, s in enumerate(symbols)}
    targets = pd.DataFrame({"symbol": symbols, "side": "BUY", "quantity": QUANTITY})
    plan = kit.plan(targets, run_key=run_key, prices=prices, risk=NO_FAT_FINGER)
    start = time.time()
    run = kit.execute(plan, broker=MockBroker(prices, partial_fills=FILLS_PER_ORDER), db=db, timeout=600,
                      progress=False)
    end = time.time()
    return {"run_key": run_key, "status": str(run.status), "fills": len(run.fills), "start": start,
            "end": end, "notes": run.notes}


def launch(db: str | Path, keys: list[str], orders: int = ORDERS, env: dict[str, str] | None = None,
           timeout: float = 900) -> list[dict[str, Any]]:
    """Start one worker process per run key, all at once, against `db`; their reports."""
    from bench._common import ROOT

    processes = [subprocess.Popen([sys.executable, "-m", "bench.many_writers", "--worker", str(db), key,
                                   str(orders)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for key in keys]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise RuntimeError(f"a writer failed ({process.returncode}): {err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _rate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    fills = sum(r["fills"] for r in reports)
    if {r["status"] for r in reports} != {"done"} or fills != PROCESSES * ORDERS * FILLS_PER_ORDER:
        raise AssertionError(f"writers ended {[r['status'] for r in reports]} with {fills} fills")
    return {"seconds": round(span, 3), "fills": fills, "fills_per_s": round(fills / span)}


def _floor(server: Any, source: str) -> dict[str, Any]:
    """The rows the writers recorded, COPY'd into a fresh database in one transaction."""
    import psycopg

    from kit.store import Ledger

    Ledger(target := server.create_database("floor")).open().close()  # kit's schema, empty
    tables = ("orders", "fills", "order_events")
    with psycopg.connect(source) as src:
        rows = {t: src.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    with psycopg.connect(target) as con:
        start = time.perf_counter()
        with con.transaction(), con.cursor() as cur:
            for table in tables:
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
        seconds = time.perf_counter() - start
    fills = len(rows["fills"])
    return {"seconds": round(seconds, 3), "fills": fills, "fills_per_s": round(fills / seconds),
            "rows": sum(len(r) for r in rows.values())}


def run(reps: int = 1) -> dict[str, Any]:
    from bench._common import clean_environment, isolated
    from tests.pg_server import PostgresServer

    keys = [f"writer-{n}" for n in range(PROCESSES)]
    results: dict[str, list[dict[str, Any]]] = {"postgres": [], "duckdb": [], "floor": []}
    with isolated() as folder, PostgresServer() as server:
        for rep in range(reps):
            env = clean_environment(KIT_LOCK_DIR=str(folder / "locks"), KIT_JOURNAL_DIR=str(folder / "j"),
                                    KIT_LEDGER_WAIT="600")
            url = server.create_database(f"writers_{rep}")
            results["postgres"].append(_rate(launch(url, keys, env=env)))
            results["floor"].append(_floor(server, url) if rep == 0 else results["floor"][0])
            results["duckdb"].append(_rate(launch(folder / f"writers-{rep}.duckdb", keys, env=env)))
    best = {kind: max(rows, key=lambda r: r["fills_per_s"]) for kind, rows in results.items()}
    return {
        "benchmark": NAME,
        "what": f"{PROCESSES} processes x {ORDERS * FILLS_PER_ORDER} fills (mock broker, kit.execute end to "
                "end), one shared ledger",
        "postgres": best["postgres"],
        "duckdb": best["duckdb"],
        "floor": {"what": "the same rows COPY'd into PostgreSQL in one transaction", **best["floor"]},
        "ratio": round(best["postgres"]["fills_per_s"] / best["duckdb"]["fills_per_s"], 2),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4])), default=str))
    else:
        from bench._common import emit

        emit(run())
