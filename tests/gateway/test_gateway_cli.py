"""Running the gateway as a process (``python -m kit.gateway``) and in a thread for synchronous code."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from gateway_support import filled_with_commissions, stock, until
from ib_async import IB, LimitOrder, MarketOrder, util

from kit.gateway import GatewayConfig, run_gateway_in_thread
from kit.gateway.__main__ import main

CONFIG = """
seed = 4
accounts = ["DU9000001"]
[[instruments]]
symbol = "ABC"
con_id = 42
primary_exchange = "NYSE"
currency = "USD"
price = 10.0
"""


def test_module_serves_until_interrupted_and_prints_a_ready_line(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [sys.executable, "-m", "kit.gateway", "--port", "0", "--config", str(config), "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with ThreadPoolExecutor(1) as pool:  # wait for the line itself, with a deadline
            line = pool.submit(process.stdout.readline).result(timeout=20)
        assert line.startswith("kit gateway listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])

        async def scenario():
            ib = IB()
            await ib.connectAsync("127.0.0.1", port, clientId=1)
            qualified = await ib.qualifyContractsAsync(stock("ABC"), stock("AAPL"))
            accounts = ib.client.getAccounts()
            ib.disconnect()
            return accounts, [c and c.conId for c in qualified]

        assert asyncio.run(asyncio.wait_for(scenario(), 20)) == (["DU9000001"], [42, None])
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr


def test_main_reports_bad_configs_and_busy_ports(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("partial_fills = 0\n")
    assert main(["--config", str(bad)]) == 2
    assert "partial_fills must be >= 1" in capsys.readouterr().err
    with run_gateway_in_thread() as gw:
        assert main(["--port", str(gw.port)]) == 1
    assert "address already in use" in capsys.readouterr().err.lower()


def wait_disconnected(ib: IB) -> None:
    """In ib_async's blocking mode a dropped connection surfaces as ConnectionError from util.run."""
    with contextlib.suppress(ConnectionError):
        util.run(until(ib, lambda: not ib.isConnected()))
    assert not ib.isConnected()


def test_gateway_in_a_thread_for_synchronous_clients():
    with run_gateway_in_thread(GatewayConfig(seed=8)) as gw:
        ib = IB()
        ib.connect("127.0.0.1", gw.port, clientId=3)
        filled = ib.placeOrder(stock("AAPL"), MarketOrder("BUY", 10, orderRef="sync-1"))
        resting = ib.placeOrder(stock("AAPL"), LimitOrder("BUY", 10, 180.0, orderRef="sync-2"))
        util.run(until(ib, filled_with_commissions(filled)))
        assert gw.call(lambda: [o.status for o in gw.state.orders_by_ref("sync-2")]) == ["Submitted"]
        gw.set_price("AAPL", 179.0)
        util.run(until(ib, filled_with_commissions(resting)))
        assert gw.state.placements == {"sync-1": 1, "sync-2": 1}

        gw.faults.disconnect_on = "currentTime"
        ib.client.reqCurrentTime()  # the gateway hangs up instead of answering
        wait_disconnected(ib)
        ib.connect("127.0.0.1", gw.port, clientId=3)
        assert {t.order.orderRef for t in ib.trades()} == {"sync-1", "sync-2"}
        gw.restart()
        wait_disconnected(ib)
        gw.stop()
        gw.stop()  # idempotent
    util.getLoop().close()  # the loop ib_async's blocking API made for this thread
    asyncio.set_event_loop(None)
