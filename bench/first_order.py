"""The first order: seconds from `kit.execute` to the gateway receiving the run's first placeOrder, on a
first run of the day (cold: every contract qualified through IB's contract details) and on a second run of
the same day against the same ledger (warm: the ledger's contract cache answers, so no contract-details
request goes out), against a bare placeOrder round trip as the floor.

The basket: 20 stocks plus an ES future ("front"), EUR.USD and a SPY option, through kit's simulated IB
gateway (in a thread of this process) with ib_async. kit.execute includes planning (futures, FX and options
are qualified there), opening the ledger, connecting and the run's listing of open and completed orders and
executions; the arrival-price snapshots go behind the orders (kit.brokers.ib prepare), so they never delay
the first one. The floor: on an already connected ib_async client, placeOrder until the gateway's
openOrder answers, which is the least any order costs.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

NAME = "first_order"
STOCKS = 20
GOAL_SECONDS = 0.5
_client_ids = itertools.count(301)


def _stocks() -> tuple[Any, ...]:
    from kit.gateway import Instrument

    return tuple(Instrument(f"F{i:02d}", 7_100_000 + i, "NASDAQ", "USD", 20.0 + i, f"FIRST {i}")
                 for i in range(STOCKS))


def _targets(option_expiry: str) -> pd.DataFrame:
    stocks = pd.DataFrame({"symbol": [f"F{i:02d}" for i in range(STOCKS)], "quantity": 1,
                           "primary_exchange": "NASDAQ"})
    others = pd.DataFrame({"symbol": ["ES", "EUR.USD", "SPY"], "sec_type": ["FUT", "CASH", "OPT"],
                           "expiry": ["front", None, option_expiry], "strike": [None, None, 450.0],
                           "right": [None, None, "C"], "quantity": [1, 25_000, 1]})
    return pd.concat([stocks, others], ignore_index=True)


def _runs(db: Path) -> dict[str, dict[str, Any]]:
    """A cold and a warm run on one fresh gateway and ledger."""
    import kit
    from bench._common import NO_FAT_FINGER
    from kit.brokers.ib import IBBroker
    from kit.config import IBSettings
    from kit.gateway import GatewayConfig, run_gateway_in_thread

    class TimedIB(IBBroker):
        """Marks when each step of a run's start ends, for the profile of the warm run."""

        marks: dict[str, float]

        async def connect(self) -> None:
            self.marks.setdefault("connect_called", time.monotonic())
            await super().connect()
            self.marks.setdefault("connected", time.monotonic())

        async def sync(self, orders: Any) -> set[str]:
            known = await super().sync(orders)
            self.marks.setdefault("synced", time.monotonic())
            return known

        async def prepare(self, orders: list[Any]) -> None:
            self.marks.setdefault("prepare_called", time.monotonic())
            await super().prepare(orders)
            self.marks.setdefault("prepared", time.monotonic())

    config = GatewayConfig(instruments=_stocks(), partial_fills=1)
    found: dict[str, dict[str, Any]] = {}
    with run_gateway_in_thread(config) as gw:
        book, handlers = gw.state, gw.gateway._handlers
        placed: list[float] = []
        details: list[float] = []
        place, ask = book.place, handlers.reqContractDetails

        def timed_place(*args: Any, **kwargs: Any) -> Any:
            placed.append(time.monotonic())
            return place(*args, **kwargs)

        def counted_details(*args: Any) -> None:
            details.append(time.monotonic())
            ask(*args)

        book.place, handlers.reqContractDetails = timed_place, counted_details  # type: ignore[method-assign]
        option = next(i.expiry for i in gw.gateway.market.instruments if i.sec_type == "OPT")
        for label in ("cold", "warm"):
            placed.clear()
            details.clear()
            client_id = next(_client_ids)
            broker = TimedIB(IBSettings(port=gw.port, client_id=client_id, connect_timeout=10))
            broker.marks = {}
            started = time.monotonic()
            run = kit.execute(_targets(option), broker=broker, run_key=f"bench-first-{client_id}", db=db,
                              timeout=60, risk=NO_FAT_FINGER, progress=False)
            if run.status != "done" or not placed:
                raise AssertionError(f"{label} run: {run.status}, notes {run.notes}")
            marks = {name: at - started for name, at in broker.marks.items()}
            steps = {"plan_and_ledger_open": marks["connect_called"],
                     "connect": marks["connected"] - marks["connect_called"],
                     "listing_orders_and_executions": marks["synced"] - marks["connected"],
                     "write_ahead": marks["prepare_called"] - marks["synced"],
                     "prepare": marks["prepared"] - marks["prepare_called"],
                     "to_the_gateway": min(placed) - started - marks["prepared"]}
            found[label] = {"first_order_s": min(placed) - started, "contract_details_requests": len(details),
                            "steps_s": steps}
        found["floor"] = {"first_order_s": _bare_round_trip(gw.port)}
    return found


def _bare_round_trip(port: int) -> float:
    """placeOrder to the gateway's openOrder on a connected ib_async client: the floor of any order."""
    import ib_async

    ib = ib_async.IB()
    ib.connect("127.0.0.1", port, clientId=next(_client_ids), timeout=10)
    try:
        contract = ib_async.Stock("F00", "SMART", "USD", primaryExchange="NASDAQ")
        ib.qualifyContracts(contract)
        started = time.monotonic()
        trade = ib.placeOrder(contract, ib_async.MarketOrder("BUY", 1))
        while trade.orderStatus.status in ("", "PendingSubmit"):
            ib.waitOnUpdate(timeout=5)
        return time.monotonic() - started
    finally:
        ib.disconnect()


def _load() -> list[float] | None:
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(reps: int = 3) -> dict[str, Any]:
    from bench._common import isolated, summary

    rows = []
    with isolated() as folder:
        for rep in range(reps):
            rows.append(_runs(folder / f"first-{rep}.duckdb"))
    cold, warm, floor = ([r[k]["first_order_s"] for r in rows] for k in ("cold", "warm", "floor"))
    warm_median = statistics.median(warm)
    return {
        "benchmark": NAME,
        "what": f"seconds from kit.execute to the first placeOrder at the simulated gateway, {STOCKS} "
                "stocks + ES front + EUR.USD + a SPY option, ib_async; cold = first run of the day, warm = "
                "second run (contract cache in the ledger)",
        "cold_s": summary(cold, 4),
        "warm_s": summary(warm, 4),
        "floor_s": summary(floor, 4),
        "contract_details_requests": {"cold": [r["cold"]["contract_details_requests"] for r in rows],
                                      "warm": [r["warm"]["contract_details_requests"] for r in rows]},
        "warm_steps_median_s": {step: round(statistics.median(r["warm"]["steps_s"][step] for r in rows), 4)
                                for step in rows[0]["warm"]["steps_s"]},
        "load_average": _load(),
        "ratio": round(warm_median / statistics.median(floor), 1),  # warm against the bare round trip
        "goal": {"warm_s": GOAL_SECONDS, "warm_contract_details_requests": 0},
        "met": {"warm_s": warm_median <= GOAL_SECONDS,
                "warm_contract_details_requests": all(r["warm"]["contract_details_requests"] == 0
                                                      for r in rows)},
    }


if __name__ == "__main__":
    from bench._common import emit

    emit(run())
