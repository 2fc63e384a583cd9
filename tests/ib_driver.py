"""Runs kit.execute against an IB endpoint and reports what the ledger holds, as JSON.

Imported by the tests for ib_async (same process) and run as a script under .venv-insync for ib_insync,
so the same scenario is checked with both client libraries.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    import kit
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings

    settings = IBSettings(port=spec["port"], client_id=spec.get("client_id", 11),
                          connect_timeout=spec.get("connect_timeout", 5))
    broker = IBBroker(settings, library=spec.get("library"), ack_timeout=spec.get("ack_timeout", 10.0),
                      sync_timeout=spec.get("sync_timeout", 10.0),
                      reconnect_for=spec.get("reconnect_for"))
    result: dict[str, Any] = {"library": broker.lib.__name__}
    try:
        run = kit.execute(pd.DataFrame(spec["targets"]), broker=broker, run_key=spec["run_key"],
                          db=spec["db"], timeout=spec.get("timeout", 10.0),
                          on_timeout=spec.get("on_timeout", "cancel"))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    ledger = kit.ledger(spec["db"])
    result.update(
        status=run.status,
        notes=run.notes,
        orders=json.loads(run.orders.to_json(orient="records", date_format="iso")),
        fills=json.loads(run.fills.to_json(orient="records", date_format="iso")),
        events=json.loads(ledger.events(run.run_id)[["client_order_id", "kind", "status", "detail"]]
                          .to_json(orient="records")),
    )
    return result


if __name__ == "__main__":
    print(json.dumps(execute(json.loads(sys.argv[1]))))
