"""The Interactive Brokers broker, over ib_async (or the archived ib_insync, same API).

Connection, contracts and order placement live here; the meaning of IB's messages lives in ib_events.
Everything that changes an order arrives as one of IB's own messages; nothing here sleeps and checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import date, timedelta, tzinfo
from types import ModuleType
from typing import Any

from kit.brokers.base import Broker, Notice
from kit.brokers.ib_codes import log_level
from kit.brokers.ib_events import (
    LookUp,
    RecheckExecutions,
    Request,
    Translated,
    Translator,
    UntranslatableMessage,
    connect_reply_zone,
    execution_time,
    naive_utc,
    zone,
)
from kit.brokers.ib_terms import intent_terms, terms, wanted_terms
from kit.brokers.ib_terms import price as _price
from kit.brokers.pacing import Pacer
from kit.clock import utcnow
from kit.config import IBSettings, setting
from kit.errors import BrokerUnavailableError, KitError
from kit.instruments import FRONT, Contract, Spec, choose, fx_pair, instrument_key, key_of, spec_of
from kit.model import AmendRefused, ArrivalPrice, BrokerNotice, Order, OrderIntent, Rejected, Side
from kit.order_types import TRAILING, ib_fields

log = logging.getLogger("kit.ib")
# The times of the messages sent to each (host, port, clientId) in its last window, kept across connections
# and IBBroker objects: IB counts a client's messages per second whatever connection carried them, and a
# cold run connects twice within a second (planning's contract lookups, then the run), so a fresh window per
# connection let 51 through (error 100 for the orders). Each Pacer trims it to its window as it sends.
_SENT_TO: dict[tuple[str, int, int], deque[float]] = {}
PAPER_PREFIXES = ("DU", "DF")  # IB paper accounts: individual and advisor
DUPLICATE_ORDER_ID = 103
CLIENT_ID_IN_USE = 326
# Placements of one order refused as duplicate ids before kit stops trying (each takes a fresh id from IB).
MAX_ID_COLLISIONS = 20


def ib_library(name: str | None = None) -> ModuleType:
    """ib_async by default; ib_insync where that is what is installed (or KIT_IB_LIBRARY says so)."""
    choice = name or setting("KIT_IB_LIBRARY")
    for candidate in [choice] if choice else ["ib_async", "ib_insync"]:
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    extra = "kit[insync]" if choice == "ib_insync" else "kit[ib]"
    raise KitError(f"the IB broker needs {choice or 'ib_async (or ib_insync)'}: install {extra} "
                   f"(pip install '{extra}')")


# The client library's loggers (ib_async.wrapper, ...) and the method whose lines kit says itself.
LIBRARY_ECHOES = {"wrapper": "error", "client": "connectAsync"}


class LibraryEcho(logging.Filter):
    """Drops what the client library logs of what kit says itself: IB's error() messages, which both
    libraries log as `Error <code>, reqId ...` at ERROR (and their own reading of them, e.g. "Canceled
    order"), while kit logs each on `kit.ib` at its real level and records it in the ledger; and the
    library's lines when a connection fails, which kit's BrokerUnavailableError says better."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LIBRARY_ECHOES.get(record.name.rpartition(".")[2]) != record.funcName


_LIBRARY_ECHO = LibraryEcho()


def quiet_library_logs(library: str) -> None:
    """Install LibraryEcho on the library's wrapper and client loggers (once)."""
    for name in LIBRARY_ECHOES:
        logger = logging.getLogger(f"{library}.{name}")
        if _LIBRARY_ECHO not in logger.filters:
            logger.addFilter(_LIBRARY_ECHO)


class IBBroker(Broker):
    """Orders carry orderRef = client_order_id, so a reconnect (or a new process) finds them again."""

    name = "ib"
    keeps_positions = True

    def __init__(self, settings: IBSettings | None = None, *, library: str | None = None,
                 ack_timeout: float = 10.0, sync_timeout: float = 10.0, max_messages_per_second: int = 50,
                 burst: int = 2, pacing_margin: float = 0.04,
                 reconnect_for: float | None = None):
        super().__init__()
        self.settings = settings or IBSettings.load()
        self.lib = ib_library(library)
        self.ack_timeout = ack_timeout
        self.sync_timeout = sync_timeout
        self.max_messages_per_second = max_messages_per_second
        self.burst = burst
        self.pacing_margin = pacing_margin
        self.reconnect_for = self.settings.reconnect_window if reconnect_for is None else reconnect_for
        self.translator = Translator(self.settings.client_id)
        self.ib: Any = None
        self.contracts: dict[tuple, Any] = {}  # None: IB found no (single) contract
        self.contract_errors: dict[str, str] = {}
        self.prices: dict[str, float] = {}  # per instrument key (kit.instruments.instrument_key)
        self._keys_by_con_id: dict[int, str] = {}
        self._unpriced: set[str] = set()  # orders placed before their arrival snapshot answered
        self.quotes: dict[str, tuple[float | None, float | None]] = {}  # symbol -> (bid, ask) of the snapshot
        # a trailing order's stop as IB last listed it (IB moves it), and as it stood at kit's last modify
        self._trail_stops: dict[str, float] = {}
        self._stop_asked_from: dict[str, float | None] = {}
        self._closing = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._session = 0  # connections made so far; the one an order was placed on is kept with it
        self._placed: dict[str, tuple[OrderIntent, Any, int]] = {}
        self._listing: asyncio.Future[None] | None = None
        self._up: asyncio.Event | None = None  # set while connected; submits and cancels wait for it
        self._stop: asyncio.Event | None = None
        self._gone: asyncio.Event | None = None  # set when reconnecting gave up: waits end, with an error
        self._refused = ""  # IB's words when it refused this clientId at connect (326)
        self._heard = False  # the endpoint answered the API handshake
        self._next_ids: list[asyncio.Future[int]] = []  # reqIds answers awaited
        self._collisions: dict[str, int] = {}
        self.sync_is_complete = True
        self.tws_zone: tzinfo | None = None  # TWS's login zone, from the connect reply
        self._raw_times: dict[str, str] = {}  # exec_id -> the time text IB sent
        self.failure: UntranslatableMessage | None = None  # an IB message kit could not translate
        self.orders_listed = True
        self._what_if_ids: dict[int, str] = {}  # the request id of each what-if under way -> IB's refusal

    @classmethod
    def from_config(cls) -> IBBroker:
        return cls(IBSettings.load())

    # ---- connection ----------------------------------------------------------------------------------
    async def connect(self) -> None:
        self._closing = False
        self._up, self._stop, self._gone = asyncio.Event(), asyncio.Event(), asyncio.Event()
        quiet_library_logs(self.lib.__name__)
        self.ib = self.lib.IB()
        self._pace(self.ib.client)
        self._tap_wrapper()
        self.ib.errorEvent += self._on_request_error
        self.ib.client.conn.hasData += self._on_data
        try:
            await self._connect_once()
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailableError(f"{self._why_not_connected(exc)} Nothing was sent.") from exc
        self.account = self._choose_account(self.ib.managedAccounts())
        self.is_paper = self.account.startswith(PAPER_PREFIXES)
        self.ib.disconnectedEvent += self._on_disconnected
        self.ib.client.apiStart += self._on_api_start

    def _on_data(self, data: bytes) -> None:
        self._heard = True

    def _why_not_connected(self, exc: BaseException) -> str:
        settings = self.settings
        where = f"IB at {settings.host}:{settings.port}"
        if self._refused:
            return (f"clientId {settings.client_id} is in use: {where} refused it (IB error "
                    f"{CLIENT_ID_IN_USE}: {self._refused}). Another program or kit process is connected with "
                    "it; set KIT_IB_CLIENT_ID to another clientId.")
        if isinstance(exc, TimeoutError) and not self._heard:
            return (f"{where} accepted the connection but never answered the API handshake within "
                    f"{settings.connect_timeout:g}s (clientId {settings.client_id}): is it TWS/IB Gateway "
                    "with the API enabled, or another program on that port?")
        return (f"cannot reach {where} (clientId {settings.client_id}): {exc or type(exc).__name__}. Start "
                "TWS/IB Gateway or `kit gateway`.")

    def _pace(self, client: Any) -> None:
        """IB allows 50 messages a second, counted on its side, every message included. kit's Pacer
        (kit.brokers.pacing) sends at most `max_messages_per_second` in any 1 + `pacing_margin` seconds,
        `burst` at a time, catching up after a busy moment of the loop: a basket keeps 48.1 a second (96%
        of the limit, as 48 in any second did), and IB's side may read a message 40 ms later than one sent
        before it without counting 51 in a second (48 in any second allowed about 18 ms). The window of
        send times is the one this clientId's earlier connections filled (_SENT_TO): IB counts the client,
        not the connection."""
        s = self.settings
        self._pacer = Pacer(self.max_messages_per_second, burst=self.burst, margin=self.pacing_margin,
                            sent=_SENT_TO.setdefault((s.host, s.port, s.client_id), deque()))
        self._pacer.install(client)

    async def _connect_once(self, timeout: float | None = None) -> None:
        settings = self.settings
        self._refused, self._heard = "", False
        await self.ib.connectAsync(settings.host, settings.port, clientId=settings.client_id,
                                   timeout=timeout or settings.connect_timeout, account=settings.account,
                                   **self._startup_fetch())
        self._session += 1
        self.translator.new_connection()
        assert self._up is not None
        self._up.set()

    def _startup_fetch(self) -> dict[str, Any]:
        """ib_async lists completed orders, executions and the account's values at connect, then kit lists
        orders and executions itself (sync, and after a reconnect) and reads no account values: asking
        only for positions and open orders spares a listing the first order would wait for. ib_insync
        has no such option and lists everything."""
        fetch = getattr(self.lib, "StartupFetch", None)
        return {"fetchFields": fetch.POSITIONS | fetch.ORDERS_OPEN} if fetch is not None else {}

    def _on_api_start(self) -> None:
        """Said as soon as a reconnect's handshake is done, before IB replays what happened meanwhile."""
        self.emit(BrokerNotice(utcnow(), Notice.RECONNECTED,
                               "reconnected to IB; listing orders and executions"))

    def _on_disconnected(self) -> None:
        assert self._up is not None
        self._up.clear()
        self._pacer.clear()  # what never left goes again on the new connection (_replace_lost), once
        if self._closing:
            return
        self.emit(BrokerNotice(utcnow(), Notice.DISCONNECTED, "the connection to IB was lost; reconnecting"))
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """Reconnect with backoff, then list IB's orders and executions again: what happened while away
        arrives as ordinary events, and kit's core drops what it has already seen."""
        assert self._up is not None and self._stop is not None and self._gone is not None
        loop = asyncio.get_running_loop()
        give_up, delay, attempts = loop.time() + self.reconnect_for, 0.1, 0
        try:
            while not self._closing:
                attempts += 1
                try:  # no attempt outlasts the window
                    await self._connect_once(max(0.1, min(self.settings.connect_timeout,
                                                          give_up - loop.time())))
                    break
                except (OSError, TimeoutError, ConnectionError) as exc:
                    if loop.time() + delay > give_up:
                        self.emit(BrokerNotice(utcnow(), Notice.RECONNECT_FAILED,
                                               f"could not reconnect to IB in {attempts} attempts over "
                                               f"{self.reconnect_for:g}s ({self._why_not_connected(exc)})"))
                        return
                except Exception as exc:  # whatever the library raised: waiting longer would only hang
                    self.emit(BrokerNotice(utcnow(), Notice.RECONNECT_FAILED,
                                           f"reconnecting to IB failed: {type(exc).__name__}: {exc}"))
                    raise BrokerUnavailableError(f"reconnecting to IB failed: {exc}") from exc
                with contextlib.suppress(TimeoutError):  # back off, unless close() ends the wait
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)
        finally:
            if not self._up.is_set():  # given up, failed or cancelled: every wait for the connection ends
                self._gone.set()
        if not self._closing:
            await self._fetch_orders(executions=True)
            self._continue_ids()
            self._replace_lost()

    def _continue_ids(self) -> None:
        """A restarted gateway (or TWS's "Reset API order ID sequence") may hand out a nextValidId below ids
        this clientId already used today, and IB refuses a used orderId (103): new orders continue after
        the highest one IB listed or this process placed."""
        highest = max(self.translator.highest_order_id, *self.translator.order_id_of.values(), 0)
        given = self.ib.client._reqIdSeq  # the next id the client library will hand out
        if given <= highest:
            self.emit(BrokerNotice(utcnow(), Notice.ID_COLLISION,
                                   f"IB's next order id {given} is not above id {highest} already used by "
                                   f"clientId {self.settings.client_id} today; new orders continue after it"))
            self.ib.client.updateReqId(highest + 1)

    def _replace_lost(self) -> None:
        """Orders handed to the client library before the connection dropped may never have left its
        throttle queue. One that IB, after a complete listing on the new connection, does not know never
        reached it (IB lists whatever the old connection delivered): it is placed again, once. Orders
        placed on this connection are not candidates: they may simply be queued still."""
        if not self.sync_is_complete:
            return
        for coid, (order, contract, session) in list(self._placed.items()):
            if session < self._session and coid not in self.translator.seen:
                self.emit(BrokerNotice(utcnow(), Notice.RESENT, "IB never received this order before the "
                                       "connection dropped; placed again", coid))
                self._place(order, contract)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(self._unless_gone(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _unless_gone(coroutine: Any) -> None:
        """A lookup or re-placement in the background ends quietly when IB is gone for good: the run learns
        that from the reconnect_failed notice."""
        with contextlib.suppress(BrokerUnavailableError):
            await coroutine

    async def _ready(self) -> None:
        """Wait for the connection, but never past the reconnect window: then BrokerUnavailableError."""
        assert self._up is not None and self._gone is not None and self._stop is not None
        if not self._up.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (self._up, self._gone, self._stop)]
            try:  # bounded by the window itself too, should the reconnect never say how it ended
                await asyncio.wait(waits, timeout=self.reconnect_for, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if not self._up.is_set():
            raise BrokerUnavailableError(f"the connection to IB was lost and did not come back within "
                                         f"{self.reconnect_for:g}s")

    def _choose_account(self, accounts: list[str]) -> str:
        wanted = self.settings.account
        if wanted:
            if wanted not in accounts:
                raise KitError(f"KIT_IB_ACCOUNT={wanted} is not among this login's accounts {accounts}")
            return wanted
        if len(accounts) != 1:
            raise KitError(f"this login manages several accounts {accounts}: set KIT_IB_ACCOUNT")
        return accounts[0]

    async def close(self) -> None:
        # Lookups and re-checks under way were asked for by the translator (an unknown refusal, a sum that
        # disagrees with IB's): let them answer, sync_timeout at most, so their verdict reaches the run.
        # A run that failed on a message kit cannot read stops here, waiting for nothing more.
        pending = [task for task in self._tasks if not task.done()]
        if pending and self.failure is None and self.ib is not None and self.ib.isConnected():
            await asyncio.wait(pending, timeout=self.sync_timeout)
        self._closing = True
        if self._stop is not None:
            self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        if self.ib is not None and self.ib.isConnected():
            self.ib.disconnect()
        if self.failure is not None:
            raise self.failure

    def _tap_wrapper(self) -> None:
        """See IB's messages before the client library interprets them (why: kit.brokers.ib_events)."""
        wrapper = self.ib.wrapper
        taps: dict[str, Callable[..., Translated]] = {
            "openOrder": self._open_order, "completedOrder": self._completed_order,
            "orderStatus": self._order_status, "execDetails": self._exec_details,
            "commissionReport": self._commission_report, "error": self._error,
            "nextValidId": self._next_valid_id,
        }
        for method, translate in taps.items():
            original = getattr(wrapper, method)
            setattr(wrapper, method, self._tapped(method, original, translate))
        self._tap_times(self.ib.client)

    def _tap_times(self, client: Any) -> None:
        """TWS writes times in its login zone, which neither client library knows unless told: read it from
        the connect reply (its time carries the zone) and tell the library (IB.TimezoneTWS), and keep each
        execution's time as IB wrote it, so kit reads all of IB's forms itself (ib_events.execution_time).
        The connect reply is read from the socket's bytes before the client consumes them."""
        handshake = bytearray()

        def peek(data: bytes) -> None:
            if client.serverVersion():  # the handshake is read: wait for the next connection's
                handshake.clear()
                return
            handshake.extend(data)
            name = connect_reply_zone(bytes(handshake))
            if name is None:
                return
            self.tws_zone = zone(name)
            if self.tws_zone is not None:
                self.ib.TimezoneTWS = str(self.tws_zone)
            else:
                log.warning("TWS's connect reply names no zone kit knows (%r): an execution time without a "
                            "zone name will stop the run", name)
            handshake.clear()

        client.conn.hasData -= client._onSocketHasData  # peek first, then the client reads the same bytes
        client.conn.hasData += peek
        client.conn.hasData += client._onSocketHasData
        decode = client.decoder.handlers[11]  # execDetails: 11, reqId, orderId, 11 of contract, execId, time

        def exec_details(fields: list[str]) -> None:
            if len(fields) > 15:
                self._raw_times[fields[14]] = fields[15]
            decode(fields)

        client.decoder.handlers[11] = exec_details

    def _tapped(self, method: str, original: Callable[..., Any], translate: Callable[..., Translated]):
        def tapped(*args: Any, **kwargs: Any) -> Any:
            try:
                for item in translate(*args):
                    if isinstance(item, Request):
                        self._spawn(self._ask(item))
                    else:
                        self.emit(item)
            except Exception as exc:  # never guess: say it, and fail the run (close() raises it)
                log.exception("kit could not translate IB's %s%s", method, args)
                text = f"kit could not translate IB's {method} {args!r}: {exc}"
                self.failure = self.failure or UntranslatableMessage(text)
                self.emit(BrokerNotice(utcnow(), Notice.UNTRANSLATED, text))
            return original(*args, **kwargs)

        return tapped

    async def _ask(self, request: Request) -> None:
        """What a translation needs from IB: its order listing, or the order's executions again."""
        coid = request.client_order_id
        if isinstance(request, LookUp):
            await self._fetch_orders()
            events = self.translator.looked_up(coid, request.refusal, utcnow())
        else:
            assert isinstance(request, RecheckExecutions)
            await self._ready()
            wanted = self.lib.ExecutionFilter(symbol=request.symbol)
            with contextlib.suppress(TimeoutError):  # unanswered: what is counted stays flagged
                await asyncio.wait_for(self.ib.reqExecutionsAsync(wanted), self.sync_timeout)
            events = self.translator.rechecked(coid, utcnow())
        for event in events:
            self.emit(event)  # type: ignore[arg-type]

    # ---- IB messages -> kit events ---------------------------------------------------------------------
    def _open_order(self, order_id: int, contract: Any, order: Any, state: Any) -> Translated:
        if getattr(order, "whatIf", False):
            return []
        coid = order.orderRef or ""
        stop = _price(getattr(order, "trailStopPrice", None)) if order.orderType in TRAILING else None
        found = terms(order, self._pending(order), self._stop_asked_from.get(coid))
        if stop is not None:
            self._trail_stops[coid] = stop
        return self.translator.open_order(order_id, order.clientId, order.permId, coid, state.status,
                                          utcnow(), terms=found)

    def _pending(self, order: Any) -> dict[str, float]:
        """The terms an amendment of this order awaiting IB's answer wants (none: {})."""
        pending = self.translator.amending.get(order.orderRef or "")
        return pending[0] if pending else {}

    def _completed_order(self, contract: Any, order: Any, state: Any) -> Translated:
        return self.translator.completed_order(order.permId, order.orderRef or "", state.status,
                                               getattr(state, "completedStatus", "") or "", utcnow())

    def _order_status(self, order_id: int, status: str, filled: float, remaining: float, avg: float,
                      perm_id: int, parent_id: int, last: float, client_id: int, why_held: str,
                      *rest: Any) -> Translated:
        return self.translator.order_status(order_id, status, perm_id, client_id, why_held, utcnow(),
                                            filled=filled, remaining=remaining)

    def _exec_details(self, req_id: int, contract: Any, execution: Any) -> Translated:
        now = utcnow()
        raw = self._raw_times.pop(execution.execId, None)
        stamped = execution_time(raw, self.tws_zone) if raw else naive_utc(execution.time, now)
        # IB stamps executions to the second. A live fill received within that second happened between the
        # stamp and its receipt: the receipt time is the closer estimate, and fill latencies stay honest.
        time = now if timedelta(0) <= now - stamped < timedelta(seconds=1) else stamped
        return self.translator.execution(
            exec_id=execution.execId, order_id=execution.orderId, perm_id=execution.permId,
            client_id=execution.clientId, order_ref=execution.orderRef or "", shares=execution.shares,
            price=execution.price, time=time, currency=contract.currency, exchange=execution.exchange,
            at=now, cum_qty=execution.cumQty, symbol=contract.symbol)

    def _commission_report(self, report: Any) -> Translated:
        return self.translator.commission(report.execId, report.commission, report.currency, utcnow())

    def _error(self, req_id: int, code: int, message: str, *rest: Any) -> Translated:
        about = self.translator.by_order_id.get(req_id, f"request {req_id}") if req_id > 0 else "the session"
        log.log(log_level(code), "IB %d about %s: %s", code, about, message)
        if code == CLIENT_ID_IN_USE:
            self._refused = message
        coid = self.translator.by_order_id.get(req_id) if req_id > 0 else None
        amending = coid in self.translator.amending  # then a 103 refuses the modify, not the order id
        if code == DUPLICATE_ORDER_ID and coid is not None and coid in self._placed and not amending:
            return self._collided(coid, req_id, message)
        return self.translator.error(req_id, code, message, utcnow())

    def _next_valid_id(self, order_id: int) -> Translated:
        for waiter in self._next_ids:
            if not waiter.done():
                waiter.set_result(order_id)
        self._next_ids.clear()
        return []

    def _on_request_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if contract is not None and code == 200:
            self.contract_errors[contract.symbol] = f"IB error {code}: {message}"
        if req_id in self._what_if_ids:  # IB refused the order a what-if asked about: say why
            self._what_if_ids[req_id] = f"IB error {code}: {message}"

    # ---- contracts -----------------------------------------------------------------------------------
    def _contract_key(self, intent: OrderIntent) -> tuple:
        return (intent.symbol, intent.sec_type, intent.exchange, intent.currency, intent.primary_exchange,
                intent.expiry, intent.strike, intent.right, intent.multiplier, intent.con_id)

    @property
    def _cache_name(self) -> str:
        """Whose contract ids the cache holds: IB's at this host and port (a simulated gateway's are not
        a real one's)."""
        return f"ib@{self.settings.host}:{self.settings.port}"

    async def qualify(self, specs: list[Spec], today: date) -> dict[Spec, Contract | str]:
        """Through the ledger's contract cache (what an earlier run learned today), else IB's contract
        details, connecting for the purpose if not connected."""
        found = self._from_cache(specs, today)
        missing = [spec for spec in specs if spec not in found]
        if missing:
            connected = self.ib is not None and self.ib.isConnected()
            if not connected:
                await self.connect()
            try:
                found |= await self._details(missing, today)
            finally:
                if not connected:
                    await self.close()
        return found

    def _from_cache(self, specs: list[Spec], today: date) -> dict[Spec, Contract | str]:
        if self.contract_cache is None or not specs:
            return {}
        cached = self.contract_cache.cached_contracts(self._cache_name, [repr(s) for s in specs], today)
        return {spec: cached[repr(spec)] for spec in specs if repr(spec) in cached}

    async def _details(self, specs: list[Spec], today: date) -> dict[Spec, Contract | str]:
        """One concurrent batch of reqContractDetails (the client's throttle paces it); each answer's
        candidates go through kit.instruments.choose; what is learned goes to the cache."""
        await self._ready()
        requests = [self._request(spec) for spec in specs]
        try:
            answers = await asyncio.wait_for(asyncio.gather(
                *(self.ib.reqContractDetailsAsync(c) for c in requests)), self.sync_timeout)
        except TimeoutError:
            raise BrokerUnavailableError(f"IB did not answer contract lookups within {self.sync_timeout:g}s; "
                                         "no order was sent") from None
        found: dict[Spec, Contract | str] = {}
        for spec, details in zip(specs, answers, strict=True):
            candidates = [self._learned(spec, d) for d in details]
            chosen = choose(spec, candidates, today)
            if isinstance(chosen, str) and not candidates:
                chosen = self.contract_errors.get(spec.symbol, chosen)
            found[spec] = chosen
        if self.contract_cache is not None:
            learned = {repr(s): c for s, c in found.items() if isinstance(c, Contract)}
            self.contract_cache.cache_contracts(self._cache_name, learned, utcnow())
        return found

    def _request(self, spec: Spec) -> Any:
        """The contract as kit asks IB for it: what the row gave, no more (a future without "front", on its
        exchange or any; FX as IB names it, EUR in USD)."""
        lib = self.lib
        if spec.sec_type == "STK":
            return lib.Stock(spec.symbol, spec.exchange, spec.currency, primaryExchange=spec.primary_exchange)
        pair = fx_pair(spec.symbol) if spec.sec_type == "CASH" else None
        anywhere = spec.sec_type == "FUT" and spec.exchange == "SMART"  # a future: any exchange it trades on
        contract = lib.Contract(secType=spec.sec_type, symbol=pair[0] if pair else spec.symbol,
                                currency=spec.currency, exchange="" if anywhere else spec.exchange)
        if spec.expiry and spec.expiry != FRONT:
            contract.lastTradeDateOrContractMonth = spec.expiry
        if spec.strike is not None:
            contract.strike = spec.strike
        if spec.right:
            contract.right = spec.right
        if spec.multiplier is not None:
            contract.multiplier = f"{spec.multiplier:g}"
        return contract

    @staticmethod
    def _learned(spec: Spec, details: Any) -> Contract:
        """IB's contract details as kit keeps them (its symbol for FX is kit's BASE.QUOTE)."""
        c = details.contract
        expiry = (c.lastTradeDateOrContractMonth or "").split(" ")[0]
        derivative = c.secType in ("FUT", "OPT")
        return Contract(
            symbol=f"{c.symbol}.{c.currency}" if c.secType == "CASH" else c.symbol, sec_type=c.secType,
            currency=c.currency, exchange=c.exchange or spec.exchange, con_id=int(c.conId),
            local_symbol=c.localSymbol or "", primary_exchange=c.primaryExchange or "", expiry=expiry,
            last_trade_date=expiry if derivative else "",
            strike=float(c.strike) if c.secType == "OPT" else None, right=c.right or "",
            multiplier=float(c.multiplier) if derivative and c.multiplier else 1.0,
            trading_class=c.tradingClass or "", min_tick=float(details.minTick or 0.0),
            time_zone=getattr(details, "timeZoneId", "") or "",
            trading_hours=getattr(details, "tradingHours", "") or "")

    def _ib_contract(self, intent: OrderIntent, learned: Contract | None) -> Any:
        """The contract an order goes with: by IB's conId (what qualification learned), on the intent's
        exchange (a future on its own exchange)."""
        con_id = learned.con_id if learned is not None else intent.con_id
        exchange = intent.exchange
        if intent.sec_type == "FUT" and exchange == "SMART" and learned is not None:
            exchange = learned.exchange
        if intent.sec_type == "STK":
            contract = self.lib.Stock(intent.symbol, exchange, intent.currency,
                                      primaryExchange=intent.primary_exchange)
        else:
            pair = fx_pair(intent.symbol) if intent.sec_type == "CASH" else None
            contract = self.lib.Contract(secType=intent.sec_type, symbol=pair[0] if pair else intent.symbol,
                                         exchange=exchange, currency=intent.currency)
            if learned is not None:
                contract.lastTradeDateOrContractMonth = learned.expiry
                contract.localSymbol = learned.local_symbol
                contract.tradingClass = learned.trading_class
                if intent.sec_type in ("FUT", "OPT"):
                    contract.multiplier = f"{learned.multiplier:g}"
            if intent.sec_type == "OPT":
                contract.strike, contract.right = intent.strike or 0.0, intent.right
        contract.conId = int(con_id or 0)
        return contract

    async def prepare(self, orders: list[OrderIntent]) -> None:
        """Qualify every distinct contract once per run: an order that carries IB's conId (planning qualified
        it) needs nothing; the others are looked up in the ledger's cache, then in one batch of contract
        details. Arrival-price snapshots are requested in the background, behind the orders: the first
        order never waits for market data."""
        missing = {self._contract_key(o): o for o in orders if self._contract_key(o) not in self.contracts}
        await self._ready()
        known = {key: o for key, o in missing.items() if o.con_id and o.sec_type != "STK"}
        for key, order in known.items():
            self._keep(key, order, None)
        specs = {key: spec_of(o) for key, o in missing.items() if key not in known}
        found = await self.qualify(list(dict.fromkeys(specs.values())), utcnow().date()) if specs else {}
        for key, spec in specs.items():
            chosen = found.get(spec, "IB did not answer for this contract")
            if isinstance(chosen, str):
                self.contracts[key] = None
                self.contract_errors[key_of(missing[key])] = chosen
            else:
                self._keep(key, missing[key], chosen)
        wanted = [self.contracts[key] for key in missing if self.contracts.get(key) is not None]
        if wanted:
            self._spawn(self._snapshot(wanted))

    def _keep(self, key: tuple, order: OrderIntent, learned: Contract | None) -> None:
        contract = self._ib_contract(order, learned)
        self.contracts[key] = contract
        self._keys_by_con_id[contract.conId] = key_of(order)

    async def _snapshot(self, contracts: list[Any]) -> None:
        """Arrival prices for TCA: one bid/ask snapshot per contract, the mid (else the last trade). Orders
        that went out before it answered get theirs as an ArrivalPrice event.

        The wait for the messages queued ahead (`Pacer.drained()`) has no deadline of its own, on purpose:
        it ends when they have left, which the pacer's own timers decide on this loop at its rate, whatever
        IB does (a dead gateway still takes the writes until the connection is seen lost), and it fails
        with ConnectionError as soon as the connection is (Pacer.clear), so it cannot hang on a dead
        gateway; close() cancels it after sync_timeout at most. Any deadline short enough to matter would
        give up on the snapshot behind a long basket (its time grows with the basket: ~10 s for 500
        orders), the bug this wait fixed; IB's answer keeps its own deadline, sync_timeout from then. The
        price: a long basket's arrival prices are taken when its last order has left."""
        if not contracts:
            return
        try:
            await self._pacer.drained()  # behind the basket's orders: IB's answer is timed once they left
            tickers = await asyncio.wait_for(self.ib.reqTickersAsync(*contracts), self.sync_timeout)
        except (TimeoutError, ConnectionError) as gone:
            why = "the connection to IB was lost first" if isinstance(gone, ConnectionError) else \
                f"no answer within {self.sync_timeout:g}s"
            log.warning("no market data snapshot (%s): orders go without an arrival price", why)
            return
        for ticker in tickers:
            bid, ask, last = (_price(getattr(ticker, name, None)) for name in ("bid", "ask", "last"))
            self.quotes[ticker.contract.symbol] = (bid, ask)
            price = (bid + ask) / 2 if bid and ask else last
            key = self._keys_by_con_id.get(ticker.contract.conId, ticker.contract.symbol)
            if price:
                self.prices[key] = price
        for coid in sorted(self._unpriced):
            price = self.prices.get(key_of(self._placed[coid][0]))
            if price is not None:
                self._unpriced.discard(coid)
                self.emit(ArrivalPrice(coid, utcnow(), price))

    def reference_price(self, symbol: str) -> float | None:
        return self.prices.get(symbol)

    def ib_key(self, contract: Any) -> str:
        """kit's instrument key of a contract IB reports (a position, an open order)."""
        known = self._keys_by_con_id.get(contract.conId)
        if known:
            return known
        sec_type = contract.secType or "STK"
        symbol = f"{contract.symbol}.{contract.currency}" if sec_type == "CASH" else contract.symbol
        expiry = (contract.lastTradeDateOrContractMonth or "").split(" ")[0]
        strike = float(contract.strike or 0) or None
        return instrument_key(symbol, sec_type, expiry, strike, contract.right or "")

    # ---- orders --------------------------------------------------------------------------------------

    async def submit(self, order: OrderIntent) -> None:
        if self._contract_key(order) not in self.contracts:
            await self.prepare([order])
        contract = self.contracts[self._contract_key(order)]
        if contract is None:
            reason = self.contract_errors.get(key_of(order), "no security definition found")
            self.emit(Rejected(order.client_order_id, utcnow(), reason))
            return
        await self._ready()
        if self.prices.get(key_of(order)) is None:
            self._unpriced.add(order.client_order_id)
        self._place(order, contract)

    def _place(self, order: OrderIntent, contract: Any) -> None:
        trade = self.ib.placeOrder(contract, self._ib_order(order))
        self.translator.placed(order.client_order_id, trade.order.orderId)
        self._placed[order.client_order_id] = (order, contract, self._session)
        # The order leaves the client only when pacing lets it: count its wait in the queue ahead of it.
        waiting = len(self._placed) - len(self.translator.acknowledged & self._placed.keys())
        delay = self.ack_timeout + waiting / self.max_messages_per_second
        asyncio.get_running_loop().call_later(delay, self._check_ack, order.client_order_id)

    def _ib_order(self, order: OrderIntent) -> Any:
        """The IB Order of an intent; what each order type sets is kit.order_types.ib_fields' to say."""
        ib_order = self.lib.Order(action=str(order.side), totalQuantity=order.quantity)
        for name, value in ib_fields(order).items():
            if name == "algoParams":
                value = [self.lib.TagValue(tag, text) for tag, text in value]
            setattr(ib_order, name, value)
        ib_order.orderRef = order.client_order_id
        ib_order.account = self.account
        return ib_order

    def _check_ack(self, client_order_id: str) -> None:
        """IB said nothing about an order: look it up; flag it, never assume it cancelled."""
        if client_order_id in self.translator.acknowledged or self._closing:
            return
        self._spawn(self._look_up(client_order_id))

    async def _look_up(self, client_order_id: str) -> None:
        await self._fetch_orders()
        if client_order_id not in self.translator.seen:
            self.emit(BrokerNotice(utcnow(), Notice.UNACKNOWLEDGED,
                                   f"IB has not acknowledged this order after {self.ack_timeout:g}s and does "
                                   "not list it; it is not assumed cancelled", client_order_id))

    def _collided(self, coid: str, order_id: int, message: str) -> Translated:
        """IB refused the orderId as used (103): the order never worked under it. Not a rejection of the
        order: once a listing confirms IB does not have it, it is placed again under a fresh id."""
        del self.translator.by_order_id[order_id]
        self.translator.highest_order_id = max(self.translator.highest_order_id, order_id)
        self._collisions[coid] = tries = self._collisions.get(coid, 0) + 1
        if tries > MAX_ID_COLLISIONS:
            return [Rejected(coid, utcnow(), f"IB error {DUPLICATE_ORDER_ID}: {message} ({tries} fresh order "
                             "ids refused in a row)")]
        self._spawn(self._place_again(coid))
        return [BrokerNotice(utcnow(), Notice.ID_COLLISION, f"IB refused orderId {order_id} as already used "
                             f"(error {DUPLICATE_ORDER_ID}); placing the order again under a fresh id", coid)]

    async def _place_again(self, coid: str) -> None:
        await self._fetch_orders()
        if coid in self.translator.seen:
            return  # IB has it after all: it is followed, not placed again
        if not self.orders_listed:
            self.emit(BrokerNotice(utcnow(), Notice.UNACKNOWLEDGED, "IB refused the order id and did not "
                                   "finish listing its orders: not placed again", coid))
            return
        await self._fresh_id()
        intent, contract, _ = self._placed[coid]
        self._place(intent, contract)

    async def _fresh_id(self) -> None:
        """Ask IB for its next valid id (reqIds), and go above every id known to be used."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._next_ids.append(waiter)
        await self._ready()
        self.ib.client.reqIds(1)
        with contextlib.suppress(TimeoutError):
            self.ib.client.updateReqId(await asyncio.wait_for(waiter, self.ack_timeout))
        self._continue_ids()

    async def cancel(self, client_order_id: str) -> None:
        if self.translator.filled_at_ib(client_order_id):  # whatever kit counted: ib_events flags that
            self.emit(BrokerNotice(utcnow(), Notice.NOT_WORKING, "IB reports this order Filled: not "
                                   "cancelled", client_order_id))
            return
        order_id = self.translator.order_id_of.get(client_order_id)
        if order_id is None:
            self.emit(BrokerNotice(utcnow(), Notice.CANCEL_IMPOSSIBLE,
                                   "no IB orderId known for this client, so it cannot be cancelled from here",
                                   client_order_id))
            return
        perm_id = self.translator.perm_id_of.get(client_order_id, 0)
        ib_order = self.lib.Order(orderId=order_id, clientId=self.settings.client_id, permId=perm_id)
        await self._ready()
        self.ib.cancelOrder(ib_order)

    async def amend(self, order: OrderIntent, changes: dict, revision: int) -> None:
        """IB's modify: placeOrder again under the order's own orderId, from the clientId that placed it
        (IB's "Modifying Orders"). IB answers with openOrder/orderStatus on the new terms, or an error
        (104 filled, 105 mismatch, 103 a cancelled order's id, 110/201/...) that refuses the modify only.
        It goes to the client directly, not through IB.placeOrder: that asserts on an order the library
        itself has marked done (ib_insync marks one Cancelled on any error about it)."""
        coid = order.client_order_id
        order_id = self.translator.order_id_of.get(coid)
        key = self._contract_key(order)
        if order_id is not None and key not in self.contracts:
            await self.prepare([order])
        contract = self.contracts.get(key)
        if order_id is None or contract is None:
            why = ("no IB orderId is known for this clientId, so it cannot be modified from here"
                   if order_id is None else self.contract_errors.get(order.symbol, "no contract"))
            self.emit(AmendRefused(coid, utcnow(), why, revision, changes))
            return
        ib_order = self._ib_order(order)
        ib_order.orderId = order_id
        ib_order.clientId = self.settings.client_id
        ib_order.permId = self.translator.perm_id_of.get(coid, 0)
        if order.order_type in TRAILING:  # where IB had trailed the stop: how its answer is read (ib_terms)
            self._stop_asked_from[coid] = self._trail_stops.get(coid)
        wanted = wanted_terms(order.order_type, changes)
        self.translator.amend_requested(coid, order_id, wanted, changes, revision)
        await self._ready()
        self.ib.client.placeOrder(order_id, contract, ib_order)
        if coid in self._placed:  # a re-placement after a lost connection carries the new terms
            self._placed[coid] = (order, contract, self._placed[coid][2])

    def touch(self, symbol: str, side: Side) -> float | None:
        """The far side of the latest quote kit asked for (the arrival snapshot): a BUY's ask, a SELL's bid.
        kit takes no streaming quotes, so a reprice rule walks toward that price at most."""
        bid, ask = self.quotes.get(symbol, (None, None))
        far = ask if side is Side.BUY else bid
        return far if far is not None else self.reference_price(symbol)

    async def what_if(self, order: OrderIntent) -> dict[str, float | str | None]:
        """IB's what-if: margin and commission estimates, with nothing sent to the market."""
        contract = self.contracts.get(self._contract_key(order))
        if contract is None:
            return {"warning": self.contract_errors.get(key_of(order), "no security definition found")}
        req_id = self.ib.client._reqIdSeq  # the id whatIfOrderAsync takes next: IB's errors name it
        self._what_if_ids[req_id] = ""
        try:  # an unanswered what-if must not hang the dry run
            state = await asyncio.wait_for(self.ib.whatIfOrderAsync(contract, self._ib_order(order)),
                                           self.ack_timeout)
        except TimeoutError:
            return {"warning": f"IB gave no what-if answer within {self.ack_timeout:g}s"}
        finally:
            refusal = self._what_if_ids.pop(req_id, "")
        if not state:
            return {"warning": refusal or "IB gave no what-if answer"}
        fields = ("initMarginChange", "maintMarginChange", "equityWithLoanChange", "commission",
                  "minCommission", "maxCommission", "commissionCurrency", "warningText")
        return {name: _number_or_text(getattr(state, name, None)) for name in fields}

    async def positions(self) -> dict[str, float]:
        held = await self._answer(self.ib.reqPositionsAsync(), "positions")
        return {self.ib_key(p.contract): float(p.position) for p in held
                if p.account == self.account and p.position}

    async def working(self) -> dict[str, float]:
        trades = await self._answer(self.ib.reqAllOpenOrdersAsync(), "open orders")
        working: dict[str, float] = {}
        for trade in trades:
            if trade.order.account not in ("", self.account):
                continue
            remaining = float(trade.order.totalQuantity) - float(trade.orderStatus.filled or 0)
            sign = 1 if trade.order.action == "BUY" else -1
            key = self.ib_key(trade.contract)
            working[key] = working.get(key, 0.0) + sign * remaining
        return working

    async def _answer(self, request: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(request, self.sync_timeout)
        except TimeoutError:
            raise BrokerUnavailableError(f"IB did not answer {what} within {self.sync_timeout:g}s") from None

    # ---- resume --------------------------------------------------------------------------------------
    async def sync(self, orders: Iterable[Order]) -> set[str]:
        coids = {o.client_order_id for o in orders}
        self.translator.track(coids)
        for order in orders:  # ids the ledger already knows help match IB's messages
            if order.perm_id:
                self.translator.by_perm_id[int(order.perm_id)] = order.client_order_id
            if order.at_broker:  # and the terms it works on: IB listing others is an amendment adopted
                self.translator.expect(order.client_order_id, intent_terms(order.intent), order.amendments)
        await self._fetch_orders(executions=True)
        self._continue_ids()
        return coids & self.translator.seen

    async def _fetch_orders(self, executions: bool = False) -> None:
        """Open and completed orders, and today's executions if asked; the replies flow through the taps.

        One listing at a time: IB answers one open-orders and one completed-orders request at once, and
        lookups of several unacknowledged orders share the listing under way."""
        if self._listing is not None and not self._listing.done():
            await asyncio.shield(self._listing)
            if not executions:
                return
        self._listing = asyncio.ensure_future(self._list(executions))
        await asyncio.shield(self._listing)

    async def _list(self, executions: bool) -> None:
        """Orders first, then executions (as IB's clients do), within one sync_timeout."""
        await self._ready()
        deadline = asyncio.get_running_loop().time() + self.sync_timeout
        self.orders_listed = False
        try:
            await asyncio.wait_for(asyncio.gather(self.ib.reqAllOpenOrdersAsync(),
                                                  self.ib.reqCompletedOrdersAsync(False)), self.sync_timeout)
            self.orders_listed = True
            if executions:
                remaining = deadline - asyncio.get_running_loop().time()
                await asyncio.wait_for(self.ib.reqExecutionsAsync(self.lib.ExecutionFilter()), remaining)
            self.sync_is_complete = True
        except (TimeoutError, ConnectionError):
            self.sync_is_complete = False
            self.emit(BrokerNotice(utcnow(), Notice.SYNC_INCOMPLETE, "IB did not finish listing orders and "
                                   f"executions within {self.sync_timeout:g}s"))


def _number_or_text(value: Any) -> float | str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value or None
    return None if number >= 1e300 else number
