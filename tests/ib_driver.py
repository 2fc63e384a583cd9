"""Runs kit.execute against an IB endpoint and reports what the ledger holds, as JSON.

Imported by the tests for ib_async (same process) and run under .venv-insync for ib_insync, so the same
scenario is checked with both client libraries: `python -m tests.ib_driver SPEC_JSON` runs one spec and
prints its report; `python -m tests.ib_driver --serve` reads one spec a line from stdin and answers each
with a line `REPORT <json>`, so a test class pays for starting Python and importing kit once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def report(run: Any, db: str | Path) -> dict[str, Any]:
    """What a run left behind, in plain JSON: the same shape for every broker the tests drive."""
    import kit

    ledger = kit.ledger(db)
    return {
        "status": run.status,
        "ledger_status": str(ledger.runs().set_index("run_id").loc[run.run_id, "status"]),
        "notes": run.notes,
        "orders": json.loads(run.orders.to_json(orient="records", date_format="iso")),
        "fills": json.loads(run.fills.to_json(orient="records", date_format="iso")),
        "events": json.loads(ledger.events(run.run_id)[["client_order_id", "kind", "status", "detail"]]
                             .to_json(orient="records")),
    }


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings
    from kit.model import OrderIntent
    from kit.planner import Plan

    settings = IBSettings(port=spec["port"], client_id=spec.get("client_id", 11),
                          connect_timeout=spec.get("connect_timeout", 5))
    broker = IBBroker(settings, library=spec.get("library"), ack_timeout=spec.get("ack_timeout", 10.0),
                      sync_timeout=spec.get("sync_timeout", 10.0),
                      reconnect_for=spec.get("reconnect_for"))
    result: dict[str, Any] = {"library": broker.lib.__name__}
    # "orders": OrderIntent fields as given, past validation: what only IB itself would refuse (e.g. 10.5)
    targets = (Plan(spec["run_key"], tuple(OrderIntent(**o) for o in spec["orders"])) if "orders" in spec
               else pd.DataFrame(spec["targets"]))
    try:
        if spec.get("action") == "cancel":  # the kill switch, `kit cancel --run RUN_KEY`
            [run] = kit.cancel(spec["run_key"], broker=broker, db=spec["db"],
                               timeout=spec.get("timeout", 10.0))
        else:
            run = kit.execute(targets, broker=broker, run_key=spec["run_key"],
                              db=spec["db"], timeout=spec.get("timeout", 10.0),
                              on_timeout=spec.get("on_timeout", "cancel"))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result.update(report(run, spec["db"]))
    return result


def execute_apart(spec: dict[str, Any], python: str | Path = sys.executable, timeout: float = 300
                  ) -> dict[str, Any]:
    """execute(spec) in a process of its own, under `python`: kit beside IB as it is, never in the process
    of the simulated gateway, whose thread would otherwise share the GIL with kit's loop and its ledger
    writes and read kit's messages later than kit sent them (a pacing test would then measure the test)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(python), "-m", "tests.ib_driver", json.dumps(spec)], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"tests.ib_driver exited {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def serve() -> None:
    for line in sys.stdin:
        print("REPORT " + json.dumps(execute(json.loads(line))), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        print(json.dumps(execute(json.loads(sys.argv[1]))))
