"""kit.execute then kit.amend steps against an IB endpoint, reported as JSON: imported by the ib_async
tests, and run under .venv-insync (`python -m tests.amend_driver SPEC_JSON`) for ib_insync, so one
amendment scenario is checked with both client libraries."""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    def broker() -> IBBroker:
        settings = IBSettings(port=spec["port"], client_id=spec.get("client_id", 21), connect_timeout=5)
        return IBBroker(settings, library=spec.get("library"))

    results: list[dict[str, Any]] = []
    for step in spec["steps"]:
        what, run_key = step["do"], step["run_key"]
        if what == "execute":
            run = kit.execute(pd.DataFrame(step["targets"]), broker=broker(), run_key=run_key, db=spec["db"],
                              timeout=step.get("timeout", 1.0), on_timeout="leave", progress=False)
            results.append({"do": what, "status": run.status})
        elif what == "cancel":
            kit.cancel(run_key, broker=broker(), db=spec["db"], timeout=5)
            results.append({"do": what})
        else:
            done = kit.amend(run_key, step["order"], broker=broker(), db=spec["db"], timeout=5,
                             **step["changes"])
            results.append({"do": what, "outcome": done.outcome, "reason": done.reason})
        ledger = kit.ledger(spec["db"])
        run_id = ledger.resolve_run(run_key)
        results[-1]["orders"] = json.loads(ledger.orders(run_id).to_json(orient="records", date_format="iso"))
        events = ledger.events(run_id)
        results[-1]["kinds"] = [k for k in events.sort_values("seq")["kind"] if k.startswith("amend_")]
    return {"library": broker().lib.__name__, "steps": results}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
