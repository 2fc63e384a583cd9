"""The asyncio server: connections, the clientId registry, timers and the connection-level faults.

``Gateway`` runs inside any event loop (``async with Gateway(config).serving(port=0) as gw``);
``run_gateway_in_thread`` runs one on its own loop in a daemon thread for synchronous code, and
``python -m kit.gateway`` runs one as a process. Everything happens on the gateway's loop: requests are
handled as they arrive, and simulated time (fill latency, delayed commissions) is event-loop timers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from kit import clock as kit_clock
from kit.gateway.config import GatewayConfig
from kit.gateway.faults import Faults
from kit.gateway.handlers import Handlers
from kit.gateway.instruments import Instrument, Market, derivatives
from kit.gateway.messages import Message
from kit.gateway.protocol import MAX_VERSION, ProtocolError, format_time, frame, read_handshake, read_message
from kit.gateway.state import Book

log = logging.getLogger("kit.gateway")
T = TypeVar("T")


@dataclass(eq=False)
class Connection:
    writer: asyncio.StreamWriter
    peer: str
    client_id: int | None = None
    #: The server version agreed in the handshake; every message to this connection is laid out for it.
    version: int = MAX_VERSION
    #: Set once the connection is being closed: nothing more is sent on it.
    closing: bool = False
    #: Subscriptions: reqPositions, reqAccountUpdates (its account), streaming reqMktData (reqId: instrument).
    positions: bool = False
    account: str | None = None
    tickers: dict[int, Instrument] = field(default_factory=dict)


class Gateway:
    """One simulated IB Gateway: a listening socket, its connections, and the book they share.

    Start it with ``start``/``stop`` or ``async with Gateway(config).serving(port=0) as gw``; inspect
    ``gw.state`` (the Book), steer it with ``gw.faults``, ``gw.set_price`` and ``gw.restart``.
    """

    def __init__(self, config: GatewayConfig | None = None, clock: Callable[[], datetime] | None = None):
        self.config = config or GatewayConfig()
        #: The fault knobs, changeable while the gateway runs: a copy, since one-shot knobs disarm themselves
        #: and a config may serve several gateways.
        self.faults = dataclasses.replace(self.config.faults)
        # kit's one clock, looked up at each call: a test that patches kit.clock moves the gateway's too.
        clock = clock or (lambda: kit_clock.now_utc())
        listed = derivatives(clock().date()) if self.config.derivatives else ()
        self.market = Market((*self.config.instruments, *listed))
        #: The book shared by all connections: orders, executions, positions, placements, inbound rates.
        self.state = Book(self.config, self.market, clock, self.faults)
        self.host = "127.0.0.1"
        self.port = 0
        self.connections: list[Connection] = []
        self._clients: dict[int, Connection] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._handlers = Handlers(self)

    @property
    def clients(self) -> list[int]:
        """The clientIds connected now."""
        return sorted(self._clients)

    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0: a free port, then in ``self.port``)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        log.info("kit gateway listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, drop every connection and cancel pending fills and reports."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            self.close(conn)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Gateway]:
        await self.start(host, port)
        try:
            yield self
        finally:
            await self.stop()

    def restart(self, roll_back_ids: bool = True) -> None:
        """Simulate a gateway restart: drop every connection, keep the book (orders keep working at IB),
        and, like a real restart may, roll nextValidId back (order ids already used stay used: 103)."""
        log.info("restart: dropping %d connections", len(self.connections))
        for conn in list(self.connections):
            self.close(conn)
        if roll_back_ids:
            self.state.roll_back_ids()

    def set_price(self, symbol: str, price: float) -> None:
        """Move an instrument's simulated price; streams it and fills limit orders it makes marketable."""
        self._handlers.on_price(self.market.set_price(symbol, price))

    def run_auction(self, which: str, prices: dict[str, float] | None = None) -> None:
        """Run the close ("close") or opening ("open") auction at `prices` (else each symbol's simulated
        price): the orders held for it fill whole or, if their limit is not reached, are cancelled."""
        self._handlers.run_auction(which, prices)

    # used by the handlers

    def send(self, conn: Connection, msg: Message) -> None:
        if conn.closing or conn.writer.is_closing():
            return
        if self.faults.trips(msg.name, msg.tag) or self.faults.counts_down():
            log.info("fault: closing client %s instead of sending %s %s", conn.client_id, msg.name, msg.tag)
            self.close(conn)
            return
        conn.writer.write(frame(msg.wire(conn.version)))

    def send_to_client(self, client_id: int, msg: Message) -> None:
        """Send to whichever connection the client has now; dropped if it has none (as IB does)."""
        conn = self._clients.get(client_id)
        if conn is not None:
            self.send(conn, msg)

    def bind(self, conn: Connection, client_id: int) -> bool:
        """Give the connection its clientId; False if another connection holds it (error 326)."""
        if client_id in self._clients:
            return False
        conn.client_id = client_id
        self._clients[client_id] = conn
        return True

    def close(self, conn: Connection) -> None:
        conn.closing = True
        if conn.client_id is not None and self._clients.get(conn.client_id) is conn:
            del self._clients[conn.client_id]
        conn.writer.close()

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """Run fn(*args) after delay seconds of event-loop time; cancelled by stop()."""

        def fire() -> None:
            self._timers.discard(handle)
            try:
                fn(*args)
            except Exception:
                log.exception("timer %s failed", getattr(fn, "__name__", fn))

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)
        return handle

    def cancel_timer(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()
        self._timers.discard(handle)

    # connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(writer, str(writer.get_extra_info("peername")))
        self.connections.append(conn)
        loop = asyncio.get_running_loop()
        try:
            conn.version = await read_handshake(reader)
            now = format_time(self.state.clock(), self.faults.time_zone)  # always with the zone's name
            writer.write(frame([str(conn.version), now]))
            while not conn.closing:
                fields = await read_message(reader)
                if conn.client_id is not None:
                    rate = self.state.record_inbound(conn.client_id, loop.time())
                    if self._handlers.paced(conn, fields, rate):
                        continue
                self._handlers.dispatch(conn, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away, or we closed the connection
        except ProtocolError as exc:
            log.warning("closing %s: %s", conn.peer, exc)
        finally:
            self.close(conn)
            self.connections.remove(conn)
            self._tasks.discard(task)


class GatewayThread:
    """A gateway serving on its own event loop in a daemon thread, for synchronous code and tests.

    Read ``state`` and set ``faults`` freely for simple checks; use ``call`` to run anything that must not
    interleave with the gateway's own work (it runs on the gateway's loop and returns the result).
    """

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.gateway = gateway
        self._loop = loop
        self._thread = thread

    @property
    def host(self) -> str:
        return self.gateway.host

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def state(self) -> Book:
        return self.gateway.state

    @property
    def faults(self) -> Faults:
        return self.gateway.faults

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10) -> T:
        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def restart(self, roll_back_ids: bool = True) -> None:
        self.call(self.gateway.restart, roll_back_ids)

    def set_price(self, symbol: str, price: float) -> None:
        self.call(self.gateway.set_price, symbol, price)

    def run_auction(self, which: str, prices: dict[str, float] | None = None) -> None:
        self.call(self.gateway.run_auction, which, prices)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> GatewayThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_gateway_in_thread(
    config: GatewayConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> GatewayThread:
    """Start a gateway in a daemon thread; returns once it is listening (``.port``)."""
    gateway = Gateway(config)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(gateway.start(host, port))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name="kit-gateway", daemon=True)
    thread.start()
    started.result(timeout=10)
    return GatewayThread(gateway, loop, thread)
