"""IB pacing: a 500-order basket over 20 symbols through kit's simulated IB gateway with the real ib_async
client, measured against IB's limit of 50 messages per second.

kit.execute runs the basket, in a process of its own as beside IB itself, on an IBBroker whose Pacer
(kit.brokers.pacing: at most 50 in any 1.04 s, 2 at a time) paces every message the client sends. The
gateway, in a thread of this process, timestamps each message it receives (once it has handled it):

- `message_share`: every message kit sent from the moment it began submitting to the 500th order, per
  second, as a share of IB's 50: the issue's goal (>= 0.95) is this figure;
- `orders_per_s`: 500 / (arrival of the 500th placeOrder - the moment kit began submitting, i.e. called
  `prepare`, which first qualifies the 20 contracts and takes their market-data snapshots: 40 messages);
- `sustained_orders_per_s`: the least-squares slope of order number against arrival time over orders
  50..450, once only orders are in flight;
- `max_inbound_rate`: the gateway's own count of the most messages from this client in any one-second
  window, handshake and requests included. Above 50 is a pacing violation;
- `timer_late_ms_per_rep`: how late kit's loop ran the pacer's timers (p50, p90, p99): a timer run late
  is rate lost for good once the loop is busy more than a fifth of a window (kit.brokers.pacing), which is
  what writing the ledger on the loop itself did to a slower machine.

Two configurations, interleaved: kit's pacing (IBBroker's default token bucket) and, as the baseline,
ib_async's own throttle as it ships (45 messages at once per 1-s window, each wait counted from the last
actual send). The floor is IB's limit itself: 50 messages every second, nothing lost to pacing.
`python -m bench.ib_pacing sweep 45/5 45/45 35/35` runs the basket 3 times per `throttle/burst` setting.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

NAME = "ib_pacing"
ORDERS = 500
SYMBOLS = 20
IB_LIMIT = 50
KIT = (50, None)  # IBBroker's defaults: at most 50 messages in any 1.04 s, 2 at a time
BASELINE = (45, 45)  # ib_async's throttle as it ships: client.MaxRequests=45 per RequestsInterval=1 s
GOAL_SHARE = 0.95
_client_ids = itertools.count(101)


def _instruments() -> tuple[Any, ...]:
    from kit.gateway import Instrument

    return tuple(Instrument(f"P{i:02d}", 7_000_000 + i, "NASDAQ", "USD", 20.0 + i, f"PACING {i}")
                 for i in range(SYMBOLS))


def _targets() -> pd.DataFrame:
    return pd.DataFrame({"symbol": [f"P{i % SYMBOLS:02d}" for i in range(ORDERS)], "side": "BUY",
                         "quantity": [1 + i // SYMBOLS for i in range(ORDERS)],
                         "primary_exchange": "NASDAQ"})


def basket(throttle: int, db: Path, burst: int | None = None, ack_timeout: float = 30.0) -> dict[str, Any]:
    """One 500-order run at `throttle` messages per second, on a fresh gateway, kit in a process of its own
    (`python -m bench.ib_pacing child SPEC`): as beside IB itself, kit's loop and ledger writes never share
    a GIL with the gateway's reading of what kit sent.

    burst=None is kit as it is (IBBroker's Pacer: `throttle` in any 1.04 s); burst=k replaces it by the
    client library's own throttle of k messages per k/throttle seconds (k=throttle: ib_async's as shipped).
    """
    from kit.gateway import GatewayConfig, run_gateway_in_thread

    config = GatewayConfig(instruments=_instruments(), partial_fills=1)
    with run_gateway_in_thread(config) as gw:
        book = gw.state
        placed: list[float] = []
        inbound: list[float] = []
        place, record_inbound = book.place, book.record_inbound

        def timed_place(*args: Any, **kwargs: Any) -> Any:
            placed.append(time.monotonic())  # one clock for every process: CLOCK_MONOTONIC
            return place(*args, **kwargs)

        def timed_inbound(client_id: int, t: float) -> int:
            inbound.append(t)
            return record_inbound(client_id, t)

        book.place, book.record_inbound = timed_place, timed_inbound  # type: ignore[method-assign]
        client_id = next(_client_ids)
        spec = {"port": gw.port, "client_id": client_id, "throttle": throttle, "burst": burst,
                "ack_timeout": ack_timeout, "db": str(db)}
        done = subprocess.run([sys.executable, "-m", "bench.ib_pacing", "child", json.dumps(spec)],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            raise AssertionError(f"pacing run at {throttle}: exit {done.returncode}: {done.stderr[-2000:]}")
        kit_side = json.loads(done.stdout.splitlines()[-1])
        max_rate = gw.call(book.max_inbound_rate)
        total = gw.call(lambda: book.inbound[client_id].count)
        refused = gw.call(lambda: book.paced[client_id])
    # The baseline may trip IB's limit (error 100: those orders are refused); kit's pacing never may.
    failed = kit_side["status"] != "done" or len(placed) != ORDERS
    start = kit_side["prepare_started"]
    if start is None or (burst is None and failed) or not placed:
        raise AssertionError(f"pacing run at {throttle}: {kit_side['status']}, {len(placed)} orders placed, "
                             f"notes {kit_side['notes']}")
    placed.sort()
    sent = sum(1 for t in inbound if start <= t <= placed[-1])
    return {
        "message_share": sent / (placed[-1] - start) / IB_LIMIT,
        "messages_in_basket": sent,
        "orders_per_s": ORDERS / (placed[-1] - start),
        "sustained_orders_per_s": _slope(placed[50:450]) if len(placed) >= 450 else math.nan,
        "max_inbound_rate": max_rate,
        "inbound_messages": total,
        "messages_before_first_order": sum(1 for t in inbound if start <= t < placed[0]),
        "unacknowledged_notes": sum("unacknowledged" in note for note in kit_side["notes"]),
        "refused_by_pacing": refused,  # messages the gateway answered with error 100
        "orders_placed": len(placed),
        "timer_late_ms": kit_side["timer_late_ms"],  # kit's pacer timers: how late its loop ran them
    }


def _kit_side(spec: dict[str, Any]) -> dict[str, Any]:
    """The child: kit.execute of the basket against the gateway at spec's port; when kit began submitting
    (its loop clock, time.monotonic, the gateway's too), the run's status and notes."""
    import asyncio

    import kit
    from bench._common import NO_FAT_FINGER, percentile
    from kit.brokers.ib import IBBroker
    from kit.brokers.pacing import Pacer
    from kit.config import IBSettings

    throttle, burst = spec["throttle"], spec["burst"]

    late: list[float] = []  # seconds each pacer timer ran after it was due

    class TimedIB(IBBroker):
        prepare_started: float | None = None

        def _pace(self, client: Any) -> None:
            if burst is None:
                super()._pace(client)
                pacer, drain = self._pacer, self._pacer._drain

                def timed_drain() -> None:
                    if pacer._timer is not None:  # run by its timer, not by a submit
                        late.append(asyncio.get_running_loop().time() - pacer._timer.when())
                    drain()

                pacer._drain = timed_drain  # type: ignore[method-assign]
                return
            self._pacer = Pacer(throttle)  # cleared on a disconnect; never installed
            client.MaxRequests = burst
            client.RequestsInterval = burst / throttle

        async def prepare(self, orders: list[Any]) -> None:
            if self.prepare_started is None:
                self.prepare_started = time.monotonic()
            await super().prepare(orders)

    broker = TimedIB(IBSettings(port=spec["port"], client_id=spec["client_id"], connect_timeout=10),
                     max_messages_per_second=throttle, ack_timeout=spec["ack_timeout"])
    run = kit.execute(_targets(), broker=broker, run_key=f"bench-pacing-{spec['client_id']}", db=spec["db"],
                      timeout=120, risk=NO_FAT_FINGER)
    return {"prepare_started": broker.prepare_started, "status": run.status, "notes": run.notes,
            "timer_late_ms": {f"p{q}": round(1000 * percentile(late, q), 2) for q in (50, 90, 99)}
            if late else None}


def _slope(times: list[float]) -> float:
    """Orders per second as the least-squares slope of order number against arrival time: bursts and gaps
    average out, where a count between two chosen orders would depend on where they fall in a burst."""
    mean_t = statistics.fmean(times)
    mean_n = (len(times) - 1) / 2
    covariance = sum((t - mean_t) * (n - mean_n) for n, t in enumerate(times))
    return covariance / sum((t - mean_t) ** 2 for t in times)


def _fold(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from bench._common import summary

    return {
        "message_share": summary([r["message_share"] for r in runs], 3),
        "orders_per_s": summary([r["orders_per_s"] for r in runs], 2),
        "sustained_orders_per_s": summary([r["sustained_orders_per_s"] for r in runs], 2),
        "max_inbound_rate": max(r["max_inbound_rate"] for r in runs),
        "max_inbound_rate_per_rep": [r["max_inbound_rate"] for r in runs],
        "inbound_messages": statistics.median(r["inbound_messages"] for r in runs),
        "messages_before_first_order": statistics.median(r["messages_before_first_order"] for r in runs),
        "refused_by_pacing": sum(r["refused_by_pacing"] for r in runs),
        "orders_placed_per_rep": [r["orders_placed"] for r in runs],
        "timer_late_ms_per_rep": [r["timer_late_ms"] for r in runs],
    }


def run(reps: int = 2) -> dict[str, Any]:
    from bench._common import isolated

    configs = {"kit": KIT, "baseline": BASELINE}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    with isolated() as folder:
        for rep in range(reps):  # interleaved, so a noisy moment hits every configuration alike
            for name, (throttle, burst) in configs.items():
                runs[name].append(basket(throttle, folder / f"{name}-{rep}.duckdb", burst))
    mine, base = (_fold(runs[name]) for name in configs)

    def share(figures: dict[str, Any]) -> float:
        return round(figures["orders_per_s"]["median"] / IB_LIMIT, 3)

    return {
        "benchmark": NAME,
        "what": f"{ORDERS} orders over {SYMBOLS} symbols, kit.execute -> ib_async -> simulated gateway; "
                "IBBroker's pacing: at most 50 messages in any 1.04 s, 2 at a time",
        "throttle": KIT[0],
        **mine,
        "share_of_limit": share(mine),
        "sustained_share_of_limit": round(mine["sustained_orders_per_s"]["median"] / IB_LIMIT, 3),
        "baseline": {"what": "ib_async's throttle as it ships: 45 messages at once per 1-s window",
                     "throttle": BASELINE[0], **base, "share_of_limit": share(base)},
        "floor": {"what": "IB's limit itself: 50 messages every second", "message_share": 1.0,
                  "max_inbound_rate": IB_LIMIT},
        "theoretical": {"what": "only orders, exactly at IB's limit", "orders_per_s": IB_LIMIT},
        "ratio": share(mine),  # against the theoretical 50 orders per second
        "ratio_to_baseline": round(mine["orders_per_s"]["median"] / base["orders_per_s"]["median"], 3),
        "goal": {"message_share": GOAL_SHARE, "max_inbound_rate": IB_LIMIT},
        "met": {"message_share": mine["message_share"]["median"] >= GOAL_SHARE,
                "sustained_share_of_limit": mine["sustained_orders_per_s"]["median"] / IB_LIMIT >= GOAL_SHARE,
                "no_violation": mine["max_inbound_rate"] <= IB_LIMIT and not mine["refused_by_pacing"],
                "baseline_no_violation": base["max_inbound_rate"] <= IB_LIMIT},
    }


def sweep(settings: list[tuple[int, int | None]], reps: int = 3) -> list[dict[str, Any]]:
    """Every (throttle, burst) `reps` times: the highest throttle whose max_inbound_rate never exceeds 50 is
    the choice."""
    from bench._common import isolated

    rows = []
    with isolated() as folder:
        for throttle, burst in settings:
            runs = [basket(throttle, folder / f"sweep-{throttle}-{burst}-{rep}.duckdb", burst)
                    for rep in range(reps)]
            rows.append({"throttle": throttle, "burst": burst, **_fold(runs)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(_kit_side(json.loads(sys.argv[2]))), flush=True)
    elif sys.argv[1:2] == ["sweep"]:  # python -m bench.ib_pacing sweep 45 40 35 46/4 ...
        pairs = [(int(a), int(b) if b else None) for a, _, b in (x.partition("/") for x in sys.argv[2:])]
        sweep(pairs or [(t, None) for t in (50, 45, 40, 35, 30, 25)])
    else:
        from bench._common import emit

        emit(run())
