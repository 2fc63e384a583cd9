"""IB's own Python client places each order type at kit's simulated gateway and decodes what it lists back;
run under .venv-ibapi (9.81) or .venv-ibapi10 (10.x) python by test_gateway_order_types.py.

Usage: ibapi_order_types.py PORT. Prints one JSON object on its last stdout line. The gateway runs its
auctions by itself (auction_after); waits block on the driver's condition (no sleeps).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.tag_value import TagValue
from ibapi_driver import CURRENT, DECODE_ERRORS, App, Problems, close, connect, order, stock

UNSET = 1e300  # ibapi's unset double is the largest float


def _number(value: Any) -> float | None:
    return None if value is None or float(value) >= UNSET else float(value)


class Listing(App):
    """Records what a completed order's fields decoded to."""

    def completedOrder(self, contract: Contract, order: Order, state: Any) -> None:
        algo = [order.algoStrategy, [[p.tag, p.value] for p in order.algoParams or []]]
        row = {
            "ref": order.orderRef,
            "status": state.status,
            "algo": algo,
            "fields": [
                order.orderType,
                _number(order.auxPrice),
                _number(order.trailingPercent),
                _number(order.lmtPriceOffset),
            ],
            "gtd": [order.tif, order.goodTillDate, bool(order.outsideRth)],
        }
        self._note(lambda: self.completed.append(row))


def main(port: int, problems: Problems) -> dict:
    import ibapi_driver

    ibapi_driver.App = Listing  # connect() builds the driver's App
    app, thread = connect(port, 8, None)
    ids = {}
    ids["api-moc"] = app.place(stock("AAPL"), order("BUY", 10, "MOC", "api-moc"))
    stp = order("SELL", 10, "STP", "api-stp")
    stp.auxPrice = 500.0  # above the market: it triggers at once
    ids["api-stp"] = app.place(stock("AAPL"), stp)
    vwap = order("BUY", 40, "LMT", "api-vwap", 200.0)
    vwap.algoStrategy, vwap.algoParams = "Vwap", [TagValue("maxPctVol", "0.1")]
    ids["api-vwap"] = app.place(stock("AAPL"), vwap)
    for ref, quantity in (("api-moc", 10), ("api-stp", 10), ("api-vwap", 40)):
        app.wait(app.filled(ids[ref], quantity), f"{ref} filled")

    trail = order("SELL", 5, "TRAIL LIMIT", "api-trail")
    trail.trailingPercent, trail.lmtPriceOffset = 1.5, 0.25
    ids["api-trail"] = app.place(stock("MSFT"), trail)
    gtd = order("BUY", 5, "LMT", "api-gtd", 100.0)
    gtd.tif, gtd.goodTillDate, gtd.outsideRth = "GTD", "20990102 15:00:00 US/Eastern", True
    ids["api-gtd"] = app.place(stock("AAPL"), gtd)
    app.wait(
        lambda: (
            "PreSubmitted" in app.statuses.get(ids["api-trail"], [])
            and "Submitted" in app.statuses.get(ids["api-gtd"], [])
        ),
        "the resting orders",
    )
    for ref in ("api-trail", "api-gtd"):
        app.cancel(ids[ref])
    app.wait(
        lambda: all("Cancelled" in app.statuses.get(ids[r], []) for r in ("api-trail", "api-gtd")),
        "the cancels",
    )
    app.reqCompletedOrders(False)
    app.wait(lambda: "completed" in app.ended, "the completed orders")
    return {"refs": sorted(ids), "completed": app.completed, **close(app, thread, problems.records)}


if __name__ == "__main__":
    problems = Problems()
    logging.getLogger().addHandler(problems)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        result = main(int(sys.argv[1]), problems)
    except TimeoutError as exc:
        app = CURRENT[0] if CURRENT else None
        errors = app.errors if app is not None else []
        result = {
            "failure": str(exc),
            "errors": errors,
            "decode_problems": [e for e in errors if e[1] in DECODE_ERRORS] + problems.records,
        }
    print(json.dumps(result, default=str))
