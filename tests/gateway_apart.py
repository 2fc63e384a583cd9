"""The simulated gateway in a process of its own, for the tests that count kit's messages per second.

IB reads kit's messages in its own process. A gateway thread inside the test's process reads them whenever
that process lets it: a full garbage collection of the suite's heap took 0.16 s there after 70 tests, and
the messages that waited meanwhile were then read together, stamped inside one second (51, error 100) though
kit had sent them more than a second apart. Here the gateway's process holds nothing but the gateway.

`python -m tests.gateway_apart SPEC_JSON` serves (SPEC: `instruments`, a list of Instrument fields, and
`partial_fills`, both optional), prints `PORT <port>`, and once its stdin closes prints
`STATS <json>` (the most messages of one client in any second, and the messages refused as pacing
violations, per client) and exits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STARTUP = 30  # seconds for the gateway process to listen: importing kit takes ~1 s


@dataclass
class GatewayApart:
    port: int
    stats: dict[str, Any] = field(default_factory=dict)  # filled in once the gateway has stopped


@contextmanager
def gateway_apart(instruments: tuple[Any, ...] | None = None, partial_fills: int | None = None
                  ) -> Iterator[GatewayApart]:
    """A gateway in its own process while the block runs; its `stats` are there after the block."""
    spec: dict[str, Any] = {}
    if instruments is not None:
        spec["instruments"] = [dataclasses.asdict(i) for i in instruments]
    if partial_fills is not None:
        spec["partial_fills"] = partial_fills
    process = subprocess.Popen([sys.executable, "-m", "tests.gateway_apart", json.dumps(spec)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        if not select.select([process.stdout], [], [], STARTUP)[0]:
            raise AssertionError(f"the gateway process did not start within {STARTUP} s")
        first = process.stdout.readline().split()
        if first[:1] != ["PORT"]:
            raise AssertionError(f"the gateway process did not start: {first}")
        apart = GatewayApart(int(first[1]))
        yield apart
    finally:
        try:
            rest, _ = process.communicate(timeout=30)  # closes its stdin: the gateway stops and reports
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    stats = [line.removeprefix("STATS ") for line in rest.splitlines() if line.startswith("STATS ")]
    if len(stats) != 1:
        raise AssertionError(f"the gateway process exited {process.returncode} without its counts: {rest!r}")
    apart.stats = json.loads(stats[0])


def main(spec: dict[str, Any]) -> None:
    from kit.gateway import GatewayConfig, Instrument, run_gateway_in_thread

    changes: dict[str, Any] = {}
    if "instruments" in spec:
        changes["instruments"] = tuple(Instrument(**fields) for fields in spec["instruments"])
    if "partial_fills" in spec:
        changes["partial_fills"] = spec["partial_fills"]
    with run_gateway_in_thread(GatewayConfig(**changes)) as gw:
        print(f"PORT {gw.port}", flush=True)
        sys.stdin.read()  # until the test closes it
        stats = gw.call(lambda: {"max_inbound_rate": gw.state.max_inbound_rate(),
                                 "paced": {str(k): v for k, v in gw.state.paced.items() if v}})
    print("STATS " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
