"""Drive kit's simulated gateway with the real ib_insync 0.9.86; run under .venv-insync's python.

Usage: insync_driver.py SCENARIO PORT. Prints one JSON object on its last stdout line, which
test_gateway_ib_insync.py asserts on. No sleeps: updates.until re-checks on each IB.updateEvent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ib_insync import IB, LimitOrder, MarketOrder, Stock
from updates import until

CLIENT_ID = 7


def summary(trade) -> dict:
    return {
        "order_id": trade.order.orderId,
        "perm_id": trade.order.permId or trade.orderStatus.permId,
        "order_ref": trade.order.orderRef,
        "status": trade.orderStatus.status,
        "filled": trade.orderStatus.filled,
        "fills": [
            [f.execution.execId, f.execution.shares, f.execution.price, f.commissionReport.commission,
             f.commissionReport.currency]
            for f in trade.fills
        ],
    }  # fmt: skip


async def session(port: int) -> dict:
    out: dict = {}
    ib = IB()
    started = time.perf_counter()
    await ib.connectAsync("127.0.0.1", port, clientId=CLIENT_ID)
    out["connect_seconds"] = time.perf_counter() - started
    out["accounts"] = ib.managedAccounts()
    errors: list = []
    ib.errorEvent += lambda req_id, code, _msg, _contract: errors.append([req_id, code])

    aapl, tte = Stock("AAPL", "SMART", "USD"), Stock("TTE", "SMART", "EUR")
    qualified = await ib.qualifyContractsAsync(aapl, tte, Stock("NOPE", "SMART", "USD"))
    out["qualified"] = [[c.symbol, c.conId, c.exchange, c.primaryExchange, c.currency] for c in qualified]

    trades = {}

    async def place(contract, order, done) -> None:
        trade = ib.placeOrder(contract, order)
        trades[order.orderRef] = trade
        await until(ib, lambda: done(trade))

    def filled(trade) -> bool:
        return trade.isDone() and all(f.commissionReport.execId for f in trade.fills)

    await place(aapl, MarketOrder("BUY", 100, orderRef="ins-mkt"), filled)
    await place(tte, MarketOrder("BUY", 20, orderRef="ins-tte"), filled)
    await place(aapl, LimitOrder("BUY", 10, 150.0, orderRef="ins-cancel"), lambda t: t.orderStatus.permId)
    ib.cancelOrder(trades["ins-cancel"].order)
    await until(ib, lambda: trades["ins-cancel"].orderStatus.status == "Cancelled")
    await place(aapl, MarketOrder("BUY", 1_000_000, orderRef="ins-big"), lambda t: t.isDone())
    await place(Stock("TTE", "SBF", "EUR"), MarketOrder("BUY", 5, orderRef="ins-sbf"), lambda t: t.isDone())
    await place(aapl, LimitOrder("BUY", 5, 100.0, orderRef="ins-rest"), lambda t: t.orderStatus.permId)
    out["trades"] = {ref: summary(trade) for ref, trade in trades.items()}
    out["errors"] = errors
    out["positions"] = {p.contract.symbol: p.position for p in ib.positions()}
    ib.disconnect()

    again = IB()
    await again.connectAsync("127.0.0.1", port, clientId=CLIENT_ID)
    out["reconnect"] = {
        "trades": [summary(t) for t in again.trades()],
        "open": [t.order.orderRef for t in again.openTrades()],
        "fills": [[f.execution.execId, f.execution.orderRef, f.execution.permId] for f in again.fills()],
    }
    again.disconnect()
    return out


async def withhold_end(port: int) -> dict:
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", port, clientId=CLIENT_ID, timeout=1)
    except Exception as exc:  # ib_insync raises when execDetailsEnd never comes
        return {"error": type(exc).__name__, "connected": ib.isConnected()}
    ib.disconnect()
    return {"error": None}


SCENARIOS = {"session": session, "withhold_end": withhold_end}

if __name__ == "__main__":
    scenario, port = sys.argv[1], int(sys.argv[2])
    print(json.dumps(asyncio.run(SCENARIOS[scenario](port))))
