"""Drive kit's simulated gateway with IB's own Python client (`ibapi`); run under .venv-ibapi (9.81) or
.venv-ibapi10 (10.x) python.

Usage: ibapi_driver.py SCENARIO PORT [MAX_VERSION]. Prints one JSON object on its last stdout line, which
test_gateway_ibapi.py asserts on. MAX_VERSION makes the client announce v100..MAX_VERSION instead of its own
maximum, so one client checks every server version's layouts. The client's message loop runs in a thread;
waits block on a condition notified by each callback (no sleeps). Decode problems are collected from every
place IB's client reports them: error callbacks 505/507/508, ERROR log records, and an exception that
ends the message loop.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ibapi
import ibapi.client
from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.order import Order
from ibapi.wrapper import EWrapper

TEN = int(ibapi.__version__.split(".")[0]) >= 10 if hasattr(ibapi, "__version__") else False
DECODE_ERRORS = {505, 507, 508}  # unknown message id, bad length, bad message
TIMEOUT = float(os.environ.get("KITTEST_IBAPI_TIMEOUT", "10"))
#: The connection being driven, for the report of a scenario that failed half way.
CURRENT: list[App] = []


class Problems(logging.Handler):
    """ERROR records of IB's client (e.g. "diff len fields and params"): each one a decode problem."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:300])


class App(EWrapper, EClient):
    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, self)
        self.cond = threading.Condition()
        self.next_id = 0
        self.accounts = ""
        self.errors: list[list[Any]] = []
        self.statuses: dict[int, list[str]] = {}
        self.open_orders: dict[int, dict] = {}
        self.what_ifs: dict[int, dict] = {}
        self.execs: dict[str, dict] = {}
        self.reply_execs: list[dict] = []
        self.commissions: dict[str, list[Any]] = {}
        self.details: dict[int, list[list[Any]]] = {}
        self.ended: set[str] = set()
        self.completed: list[dict] = []
        self.positions: list[list[Any]] = []
        self.ticks: dict[int, float] = {}
        self.times = 0
        self.loop_error: str | None = None

    # waiting

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, TIMEOUT):
                raise TimeoutError(f"timed out waiting for {what}")

    def _note(self, fn: Callable[[], None]) -> None:
        with self.cond:
            fn()
            self.cond.notify_all()

    def run_loop(self) -> None:
        try:
            self.run()
        except Exception as exc:  # the message loop died: a message the client could not decode
            self.loop_error = f"{type(exc).__name__}: {exc}"
            self._note(lambda: None)

    # callbacks

    def nextValidId(self, orderId: int) -> None:
        self._note(lambda: setattr(self, "next_id", orderId))

    def managedAccounts(self, accountsList: str) -> None:
        self._note(lambda: setattr(self, "accounts", accountsList))

    def error(self, reqId: int, *args: Any) -> None:  # 9.81: (code, text); 10.x: (time, code, text, json)
        code, text = (args[1], args[2]) if len(args) >= 3 else (args[0], args[1])
        self._note(lambda: self.errors.append([reqId, int(code), str(text)]))

    def contractDetails(self, reqId: int, cd: Any) -> None:
        c = cd.contract
        row = [c.symbol, c.conId, c.exchange, c.primaryExchange, c.currency, cd.longName, cd.minTick]
        self._note(lambda: self.details.setdefault(reqId, []).append(row))

    def contractDetailsEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(f"details:{reqId}"))

    def openOrder(self, orderId: int, contract: Contract, order: Order, state: Any) -> None:
        row = {"order_id": orderId, "perm_id": order.permId, "ref": order.orderRef, "status": state.status,
               "client_id": order.clientId, "symbol": contract.symbol}
        if order.whatIf:
            fee = getattr(state, "commissionAndFees", getattr(state, "commission", None))  # 10.x renamed it
            row.update(init_margin_change=state.initMarginChange, commission=fee)
            self._note(lambda: self.what_ifs.__setitem__(orderId, row))
        else:
            self._note(lambda: self.open_orders.__setitem__(orderId, row))

    def openOrderEnd(self) -> None:
        self._note(lambda: self.ended.add("open"))

    def orderStatus(self, orderId: int, status: str, filled: Any, remaining: Any, *rest: Any) -> None:
        self._note(lambda: self.statuses.setdefault(orderId, []).append(status))

    def execDetails(self, reqId: int, contract: Contract, e: Any) -> None:
        row = {"exec_id": e.execId, "order_id": e.orderId, "perm_id": e.permId, "ref": e.orderRef,
               "shares": float(e.shares), "price": e.price, "cum_qty": float(e.cumQty),
               "avg_price": e.avgPrice, "exchange": e.exchange, "liquidity": e.lastLiquidity, "time": e.time,
               "req_id": reqId}
        if reqId == -1:
            self._note(lambda: self.execs.__setitem__(e.execId, row))
        else:
            self._note(lambda: self.reply_execs.append(row))

    def execDetailsEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(f"execs:{reqId}"))

    def _commission(self, report: Any) -> None:
        amount = getattr(report, "commissionAndFees", getattr(report, "commission", None))
        row = [report.execId, amount, report.currency]
        self._note(lambda: self.commissions.setdefault(report.execId, []).append(row))

    commissionReport = commissionAndFeesReport = _commission

    def completedOrder(self, contract: Contract, order: Order, state: Any) -> None:
        row = {"perm_id": order.permId, "ref": order.orderRef, "status": state.status,
               "completed_status": state.completedStatus, "order_id": order.orderId}
        self._note(lambda: self.completed.append(row))

    def completedOrdersEnd(self) -> None:
        self._note(lambda: self.ended.add("completed"))

    def position(self, account: str, contract: Contract, position: Decimal, avgCost: float) -> None:
        self._note(lambda: self.positions.append([account, contract.symbol, float(position), avgCost]))

    def positionEnd(self) -> None:
        self._note(lambda: self.ended.add("positions"))

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:
        self._note(lambda: self.ticks.__setitem__(tickType, price))

    def tickSnapshotEnd(self, reqId: int) -> None:
        self._note(lambda: self.ended.add(f"snapshot:{reqId}"))

    def currentTime(self, time: int) -> None:
        self._note(lambda: setattr(self, "times", self.times + 1))

    # requests

    def take_id(self) -> int:
        with self.cond:
            self.next_id += 1
            return self.next_id - 1

    def place(self, contract: Contract, order: Order) -> int:
        order_id = self.take_id()
        self.placeOrder(order_id, contract, order)
        return order_id

    def cancel(self, order_id: int) -> None:
        if TEN:
            from ibapi.order_cancel import OrderCancel

            self.cancelOrder(order_id, OrderCancel())
        else:
            self.cancelOrder(order_id)

    def filled(self, order_id: int, quantity: float) -> Callable[[], bool]:
        """Filled, every execution's commission in, and the executions add up to the quantity."""

        def done() -> bool:
            execs = [e for e in self.execs.values() if e["order_id"] == order_id]
            return ("Filled" in self.statuses.get(order_id, [])
                    and sum(e["shares"] for e in execs) == quantity
                    and all(e["exec_id"] in self.commissions for e in execs))

        return done


def stock(symbol: str, currency: str = "USD", exchange: str = "SMART") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", exchange, currency
    return c


def order(action: str, quantity: float, order_type: str, ref: str, limit: float | None = None) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.orderRef = action, quantity, order_type, ref
    if limit is not None:
        o.lmtPrice = limit
    o.eTradeOnly = o.firmQuoteOnly = False  # 9.81 defaults them to True, which IB refuses (10268/10269)
    return o


def connect(port: int, client_id: int, max_version: int | None) -> tuple[App, threading.Thread]:
    if max_version is not None:
        ibapi.client.MAX_CLIENT_VER = max_version
    app = App()
    CURRENT[:] = [app]
    app.connect("127.0.0.1", port, client_id)
    thread = threading.Thread(target=app.run_loop, daemon=True)
    thread.start()
    app.wait(lambda: app.next_id > 0 and bool(app.accounts), "nextValidId and managedAccounts")
    return app, thread


def close(app: App, thread: threading.Thread, logged: list[str]) -> dict:
    """Disconnect; the errors seen, and every decode problem (error callbacks, ERROR logs, a dead loop)."""
    version = app.serverVersion()
    app.disconnect()
    thread.join(TIMEOUT)
    return {
        "server_version": version,
        "errors": app.errors,
        "decode_problems": [e for e in app.errors if e[1] in DECODE_ERRORS] + logged
        + ([app.loop_error] if app.loop_error else []),
    }


def session(port: int, max_version: int | None, problems: Problems) -> dict:
    """Everything kit does through IB's client, on one connection."""
    app, thread = connect(port, 5, max_version)
    out: dict[str, Any] = {"accounts": app.accounts, "connection_time": app.twsConnectionTime()}
    if isinstance(out["connection_time"], bytes):
        out["connection_time"] = out["connection_time"].decode()

    app.reqContractDetails(1, stock("AAPL"))
    app.reqContractDetails(2, stock("TTE", "EUR"))
    app.reqContractDetails(3, stock("NOPE"))
    refused = lambda: any(e[0] == 3 for e in app.errors)  # noqa: E731 - NOPE: error 200
    app.wait(lambda: {"details:1", "details:2"} <= app.ended and refused(), "details")
    out["details"] = {1: app.details[1], 2: app.details[2]}

    ids = {}
    ids["mkt"] = app.place(stock("AAPL"), order("BUY", 100, "MKT", "ibapi-mkt"))
    app.wait(app.filled(ids["mkt"], 100), "the MKT order filled")
    ids["lmt-fill"] = app.place(stock("AAPL"), order("BUY", 10, "LMT", "ibapi-lmt-fill", 200.0))
    ids["tte"] = app.place(stock("TTE", "EUR"), order("BUY", 20, "MKT", "ibapi-tte"))
    app.wait(lambda: app.filled(ids["lmt-fill"], 10)() and app.filled(ids["tte"], 20)(), "LMT and TTE filled")
    ids["cancel"] = app.place(stock("AAPL"), order("BUY", 10, "LMT", "ibapi-cancel", 150.0))
    app.wait(lambda: "Submitted" in app.statuses.get(ids["cancel"], []), "the LMT order working")
    app.cancel(ids["cancel"])
    app.wait(lambda: "Cancelled" in app.statuses.get(ids["cancel"], []), "the cancel")
    ids["rest"] = app.place(stock("AAPL"), order("BUY", 5, "LMT", "ibapi-rest", 100.0))
    app.wait(lambda: "Submitted" in app.statuses.get(ids["rest"], []), "the resting order")
    what_if = order("BUY", 10, "MKT", "ibapi-what-if")
    what_if.whatIf = True
    ids["what-if"] = app.place(stock("AAPL"), what_if)
    app.wait(lambda: ids["what-if"] in app.what_ifs, "the what-if answer")
    out["ids"], out["statuses"], out["what_if"] = ids, app.statuses, app.what_ifs[ids["what-if"]]
    out["live_execs"] = list(app.execs.values())
    out["commissions"] = app.commissions

    app.open_orders.clear()
    app.reqOpenOrders()
    app.reqCompletedOrders(False)
    app.reqExecutions(9, ExecutionFilter())
    app.reqPositions()
    app.reqMktData(20, stock("AAPL"), "", True, False, [])
    wanted = {"open", "completed", "execs:9", "positions", "snapshot:20"}
    app.wait(lambda: wanted <= app.ended, "the listings")
    out["open"] = list(app.open_orders.values())
    out["completed"], out["reply_execs"] = app.completed, app.reply_execs
    out["positions"], out["ticks"] = app.positions, app.ticks

    for _ in range(60):  # a burst over IB's 50 messages a second: IB's client does not pace by itself
        app.reqCurrentTime()
    paced = lambda: sum(e[1] == 100 for e in app.errors)  # noqa: E731
    app.wait(lambda: app.times + paced() >= 60, "an answer to each message of the burst")
    out["current_times"] = app.times
    return {**out, **close(app, thread, problems.records)}


def versions(port: int, max_version: int | None, problems: Problems) -> dict:
    """One short session per server version: contract details, a filled order with its commissions, the
    listings, a what-if; each version's layouts read by IB's own decoder."""
    versions = (157, 158, 160, 162, 163, 164, 166, 169, 170, 176, 177, 178)
    rounds = enumerate(versions, 20)  # a clientId per round
    return {"versions": {v: one_version(port, client_id, v, problems) for client_id, v in rounds}}


def one_version(port: int, client_id: int, version: int, problems: Problems) -> dict:
    before = len(problems.records)
    app, thread = connect(port, client_id, version)
    app.reqContractDetails(1, stock("AAPL"))
    order_id = app.place(stock("AAPL"), order("BUY", 30, "MKT", f"v{version}"))
    app.wait(lambda: "details:1" in app.ended, "details")
    app.wait(app.filled(order_id, 30), "the fill")
    what_if = order("SELL", 5, "MKT", f"v{version}-what-if")
    what_if.whatIf = True
    what_if_id = app.place(stock("AAPL"), what_if)
    app.reqCompletedOrders(False)
    app.reqExecutions(2, ExecutionFilter())
    app.wait(lambda: {"completed", "execs:2"} <= app.ended and what_if_id in app.what_ifs, "listings")
    mine = [e for e in app.execs.values() if e["order_id"] == order_id]
    return {
        "statuses": app.statuses[order_id],
        "fills": len(mine),
        "liquidity": sorted({e["liquidity"] for e in mine}),
        "completed_refs": sorted(c["ref"] for c in app.completed),
        "reply_execs": len(app.reply_execs),
        "details": app.details[1][0][:2],
        "what_if_margin": app.what_ifs[what_if_id]["init_margin_change"],
        **close(app, thread, problems.records[before:]),
    }


def fill(port: int, max_version: int | None, problems: Problems) -> dict:
    """One MKT order to its fill and commissions: the shortest check that the layouts decode."""
    app, thread = connect(port, 6, max_version)
    order_id = app.place(stock("AAPL"), order("BUY", 30, "MKT", "ibapi-fill"))
    app.wait(app.filled(order_id, 30), "the fill")
    return close(app, thread, problems.records)


SCENARIOS = {"session": session, "versions": versions, "fill": fill}

if __name__ == "__main__":
    scenario, port = sys.argv[1], int(sys.argv[2])
    max_version = int(sys.argv[3]) if len(sys.argv) > 3 else None
    problems = Problems()
    logging.getLogger().addHandler(problems)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        result = SCENARIOS[scenario](port, max_version, problems)
    except TimeoutError as exc:  # report what went wrong, decode problems included, instead of a traceback
        app = CURRENT[0] if CURRENT else None
        loop_error = [app.loop_error] if app is not None and app.loop_error else []
        errors = app.errors if app is not None else []
        decode_errors = [e for e in errors if e[1] in DECODE_ERRORS]
        result = {"failure": str(exc), "decode_problems": decode_errors + problems.records + loop_error}
    print(json.dumps(result, default=str))
