"""IB's own client (`ibapi`) asks the simulated gateway for futures, FX and options and trades one of each;
run under .venv-ibapi (9.81) or .venv-ibapi10 (10.x) python.

Usage: ibapi_instruments_driver.py PORT OPTION_EXPIRY. Prints one JSON object on its last stdout line with the
contract fields IB's decoder read from contractDetails, execDetails and position, and every decode problem
(test_gateway_instruments.py asserts on it). Built on ibapi_driver's App, connection and waits.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from decimal import Decimal
from typing import Any

import ibapi_driver as base
from ibapi.contract import Contract


class InstrumentApp(base.App):
    """Keeps the contract fields kit relies on from each message."""

    def contractDetails(self, reqId: int, cd: Any) -> None:
        c = cd.contract
        row = {
            "symbol": c.symbol,
            "sec_type": c.secType,
            "expiry": c.lastTradeDateOrContractMonth,
            "strike": c.strike,
            "right": c.right,
            "multiplier": c.multiplier,
            "local_symbol": c.localSymbol,
            "con_id": c.conId,
            "exchange": c.exchange,
            "currency": c.currency,
            "contract_month": cd.contractMonth,
            "min_tick": cd.minTick,
        }
        self._note(lambda: self.details.setdefault(reqId, []).append(row))

    def execDetails(self, reqId: int, contract: Contract, e: Any) -> None:
        row = {
            "exec_id": e.execId,
            "order_id": e.orderId,
            "shares": float(e.shares),
            "price": e.price,
            "con_id": contract.conId,
            "sec_type": contract.secType,
            "expiry": contract.lastTradeDateOrContractMonth,
            "multiplier": contract.multiplier,
            "local_symbol": contract.localSymbol,
        }
        self._note(lambda: self.execs.__setitem__(e.execId, row))

    def position(self, account: str, contract: Contract, position: Decimal, avgCost: float) -> None:
        row = {
            "local_symbol": contract.localSymbol,
            "sec_type": contract.secType,
            "position": float(position),
            "avg_cost": avgCost,
            "multiplier": contract.multiplier,
        }
        self._note(lambda: self.positions.append(row))


def contract(sec_type: str, symbol: str, **fields: Any) -> Contract:
    c = Contract()
    c.secType, c.symbol = sec_type, symbol
    for name, value in fields.items():
        setattr(c, name, value)
    return c


def trade(port: int, option_expiry: str, problems: base.Problems) -> dict:
    app = InstrumentApp()
    base.CURRENT[:] = [app]
    app.connect("127.0.0.1", port, 7)
    thread = threading.Thread(target=app.run_loop, daemon=True)
    thread.start()
    app.wait(lambda: app.next_id > 0 and bool(app.accounts), "nextValidId and managedAccounts")
    asks = {
        1: contract("FUT", "ES", exchange="CME", currency="USD"),
        2: contract("CASH", "EUR", exchange="IDEALPRO", currency="USD"),
        3: contract(
            "OPT",
            "SPY",
            exchange="SMART",
            currency="USD",
            lastTradeDateOrContractMonth=option_expiry[:6],
            strike=450.0,
            right="C",
        ),
    }
    for req_id, asked in asks.items():
        app.reqContractDetails(req_id, asked)
    app.wait(lambda: {"details:1", "details:2", "details:3"} <= app.ended, "the contract details")
    details = {"es": app.details[1], "eur": app.details[2], "spy": app.details[3]}
    front = min(details["es"], key=lambda row: row["expiry"])
    chosen = {
        "es": (front, 1),
        "eur": (details["eur"][0], 25_000),
        "spy": (next(r for r in details["spy"] if r["expiry"] == option_expiry), 2),
    }
    ids = {}
    for name, (row, quantity) in chosen.items():
        by_id = contract(
            row["sec_type"],
            row["symbol"],
            conId=row["con_id"],
            exchange=row["exchange"],
            currency=row["currency"],
        )
        ids[name] = app.place(by_id, base.order("BUY", quantity, "MKT", f"ibapi-{name}"))
    app.wait(lambda: all(app.filled(ids[n], q)() for n, (_, q) in chosen.items()), "the orders filled")
    app.reqPositions()
    app.wait(lambda: "positions" in app.ended, "the positions")
    return {
        "details": details,
        "execs": list(app.execs.values()),
        "positions": app.positions,
        **base.close(app, thread, problems.records),
    }


if __name__ == "__main__":
    problems = base.Problems()
    logging.getLogger().addHandler(problems)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        result = trade(int(sys.argv[1]), sys.argv[2], problems)
    except TimeoutError as exc:
        app = base.CURRENT[0] if base.CURRENT else None
        result = {
            "failure": str(exc),
            "decode_problems": problems.records,
            "errors": app.errors if app is not None else [],
        }
    print(json.dumps(result, default=str))
