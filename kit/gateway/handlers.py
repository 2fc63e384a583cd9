"""What the gateway does with each request: read it, act on the book, answer in IB's message sequences.

Sequences follow IB's and what the real clients rely on (wire-protocol reference, sections 2, 5 and 7): an
accepted order as openOrder and orderStatus PreSubmitted, then Submitted (openOrder carries the permId
before any execution); each live fill as execDetails, orderStatus, commissionReport; a cancel as orderStatus
PendingCancel, then openOrder and orderStatus Cancelled (ApiCancelled if never transmitted) and notice 202;
a client over IB's pacing limit gets error 100. The message-level fault knobs (commission timing,
duplicates, corrections, dropped orders, withheld execDetailsEnd, late fills, Inactive, 10349, time
formats) are applied here; connection-level ones in the server.

Live order messages go to the connection of the client that placed the order, whichever connection that is
when they are sent; replies to a request go to the connection that made it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import TYPE_CHECKING

from kit.gateway import messages as m
from kit.gateway.instruments import UNKNOWN_CONTRACT, ContractSpec, Instrument
from kit.gateway.order_types import good_till
from kit.gateway.protocol import (
    Fields,
    RequestError,
    format_time,
    parse_exec_filter,
    parse_mkt_data,
    parse_place_order,
)
from kit.gateway.state import Execution, Order, OrderRequest, Rejection

if TYPE_CHECKING:
    from kit.gateway.server import Connection, Gateway

log = logging.getLogger("kit.gateway")

#: Request message ids the gateway understands; anything else is logged and ignored.
REQUESTS: dict[int, str] = {
    1: "reqMktData", 2: "cancelMktData", 3: "placeOrder", 4: "cancelOrder", 5: "reqOpenOrders",
    6: "reqAccountUpdates", 7: "reqExecutions", 8: "reqIds", 9: "reqContractDetails",
    15: "reqAutoOpenOrders", 16: "reqAllOpenOrders", 17: "reqManagedAccts", 49: "reqCurrentTime",
    58: "reqGlobalCancel", 59: "reqMarketDataType", 61: "reqPositions", 62: "reqAccountSummary",
    63: "cancelAccountSummary", 64: "cancelPositions", 71: "startApi", 76: "reqAccountUpdatesMulti",
    77: "cancelAccountUpdatesMulti", 99: "reqCompletedOrders",
}  # fmt: skip

NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2104, "Market data farm connection is OK:eufarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)


class Handlers:
    def __init__(self, gw: Gateway):
        self.gw = gw
        self.book = gw.state
        self._rng = random.Random(gw.config.seed)  # for probabilistic drop_orders
        self._fill_timers: dict[int, asyncio.TimerHandle] = {}
        #: permIds whose acceptance was reported (a modification is not announced again).
        self._announced: set[int] = set()

    def paced(self, conn: Connection, fields: list[str], rate: int) -> bool:
        """IB's pacing: a message beyond the limit within one second is answered with error 100 (about the
        order, for an order request) and not acted on. True when the message was refused."""
        limit = self.gw.config.max_messages_per_second
        if limit is None or rate <= limit:
            return False
        about_order = fields[:1] in (["3"], ["4"]) and len(fields) > 2
        req_id = Fields(fields, start=1 if fields[0] == "3" else 2).integer() if about_order else -1
        text = f"Max rate of messages per second has been exceeded:max={limit} rec={rate} (1)"
        log.info("pacing: client %s sent %d messages within a second", conn.client_id, rate)
        assert conn.client_id is not None
        self.book.paced[conn.client_id] += 1
        self.gw.send(conn, m.error(req_id, 100, text))
        return True

    def _time(self, t: datetime) -> str:
        """An execution or completion time as this gateway's TWS writes it (its zone, named or not)."""
        faults = self.gw.faults
        return format_time(t, faults.time_zone, named=not faults.zoneless_times)

    def dispatch(self, conn: Connection, fields: list[str]) -> None:
        """Handle one request; a bad or unknown request is logged, never fatal."""
        name = REQUESTS.get(int(fields[0])) if fields and fields[0].isdigit() else None
        if name is None:
            log.warning("ignoring unknown request %s", fields[:3])
            return
        if conn.client_id is None and name != "startApi":
            log.warning("ignoring %s before startApi", name)
            return
        tripped = self.gw.faults.trips(name)
        if tripped:  # the request takes effect, but nothing it causes reaches this connection
            conn.closing = True
        try:
            getattr(self, name)(conn, fields)
        except RequestError as exc:
            self.gw.send(conn, m.error(exc.req_id, exc.code, exc.text))
        except Exception:
            log.exception("failed to handle %s %s", name, fields)
        if tripped:
            log.info("fault disconnect_on=%s: closing client %s", name, conn.client_id)
            self.gw.close(conn)

    # session

    def startApi(self, conn: Connection, fields: list[str]) -> None:
        client_id = Fields(fields, start=2).integer()
        if not self.gw.bind(conn, client_id):
            text = "Unable to connect as the client id is already in use. Retry with a unique client id."
            self.gw.send(conn, m.error(-1, 326, text))
            self.gw.close(conn)
            return
        self.gw.send(conn, m.managed_accounts(self.gw.config.accounts))
        self.gw.send(conn, m.next_valid_id(self.book.next_valid_id(client_id)))
        for code, text in NOTICES:
            self.gw.send(conn, m.error(-1, code, text))

    def reqIds(self, conn: Connection, fields: list[str]) -> None:
        assert conn.client_id is not None
        self.gw.send(conn, m.next_valid_id(self.book.next_valid_id(conn.client_id)))

    def reqManagedAccts(self, conn: Connection, fields: list[str]) -> None:
        self.gw.send(conn, m.managed_accounts(self.gw.config.accounts))

    def reqCurrentTime(self, conn: Connection, fields: list[str]) -> None:
        self.gw.send(conn, m.current_time(self.book.clock()))

    def _acknowledge(self, conn: Connection, fields: list[str]) -> None:
        """Requests with nothing to answer in the simulation."""

    reqAutoOpenOrders = reqMarketDataType = cancelAccountSummary = cancelAccountUpdatesMulti = _acknowledge

    # contracts and market data

    def _resolve(self, req_id: int, spec: ContractSpec) -> Instrument:
        inst = self.gw.market.resolve(spec)
        if inst is None:
            raise RequestError(req_id, 200, UNKNOWN_CONTRACT)
        return inst

    def reqContractDetails(self, conn: Connection, fields: list[str]) -> None:
        r = Fields(fields, start=2)
        req_id, spec = r.integer(), r.contract()
        found = self.gw.market.candidates(spec)
        if not found:
            raise RequestError(req_id, 200, UNKNOWN_CONTRACT)
        if all(inst.sec_type == "STK" for inst in found):
            found = found[:1]  # a stock: its first listing, as the table always answered
        for inst in found:  # several where IB lists several: every month, multiplier or expiry that fits
            exchange = spec.exchange or ("SMART" if "SMART" in inst.exchanges else inst.primary_exchange)
            self.gw.send(conn, m.contract_details(req_id, inst, exchange))
        self.gw.send(conn, m.contract_details_end(req_id))

    def reqMktData(self, conn: Connection, fields: list[str]) -> None:
        req_id, spec, snapshot = parse_mkt_data(fields)
        inst = self._resolve(req_id, spec)
        self.gw.send(conn, m.market_data_type(req_id))
        self._send_quote(conn, req_id, inst)
        if snapshot:
            self.gw.send(conn, m.tick_snapshot_end(req_id))
        else:
            conn.tickers[req_id] = inst

    def cancelMktData(self, conn: Connection, fields: list[str]) -> None:
        conn.tickers.pop(Fields(fields, start=2).integer(), None)

    def _send_quote(self, conn: Connection, req_id: int, inst: Instrument) -> None:
        market = self.gw.market
        bid, ask = market.quote(inst)
        ticks = ((1, bid, 100), (2, ask, 100), (4, market.price(inst), 100), (9, inst.price, 0))
        for tick_type, price, size in ticks:  # bid, ask, last, close (the table's reference price)
            self.gw.send(conn, m.tick_price(req_id, tick_type, price, size))

    def on_price(self, inst: Instrument) -> None:
        """The simulated price moved: stream it, and fill resting limit orders it reaches."""
        for conn in self.gw.connections:
            for req_id, ticker in conn.tickers.items():
                if ticker is inst:
                    self._send_quote(conn, req_id, inst)
        for order in self.book.working_orders(inst):
            self._schedule(order)

    # orders

    def placeOrder(self, conn: Connection, fields: list[str]) -> None:
        assert conn.client_id is not None
        req = parse_place_order(fields, conn.version)
        if req.what_if:
            self._what_if(conn, req)
            return
        faults = self.gw.faults
        if faults.drops(req.order_ref, self._rng):
            log.info("fault drop_orders: dropping order %s (%s)", req.order_id, req.order_ref)
            self.book.drop(conn.client_id, req)
            return
        reject_status = "Inactive" if faults.inactive_after_reject else "Cancelled"
        result = self.book.place(conn.client_id, req, reject_status)
        if isinstance(result, Rejection):
            self.gw.send(conn, m.error(req.order_id, result.code, result.message))
            if result.order is not None and result.order.status == "Inactive":
                self.gw.send(conn, m.order_status(result.order))
            return
        new = result.perm_id not in self._announced
        self._announced.add(result.perm_id)
        if new and faults.tif_preset_notice:
            result.tif = "DAY"
            text = "Order TIF was set to DAY based on order preset."
            self.gw.send(conn, m.error(req.order_id, 10349, text))
        if new and result.transmit and result.status == "Submitted":  # IB reports PreSubmitted first
            self._send_order(result, "PreSubmitted")
        if new and result.is_working and faults.goes_inactive(req.order_ref, self._rng):
            self.book.set_inactive(result)
        self._send_order(result)
        self._schedule(result)
        after = self.gw.config.auction_after
        if new and result.held is not None and after is not None:
            self.gw.later(after, self.run_auction, result.held)
        expiry = good_till(result) if new and result.tif == "GTD" else None
        if expiry is not None:
            delay = max((expiry - self.book.clock()).total_seconds(), 0.0)
            self.gw.later(delay, self._expire, result.perm_id)

    def _expire(self, perm_id: int) -> None:
        """A GTD order's good-till time: IB cancels it, as a cancel would (Cancelled, 202)."""
        order = self.book.orders[perm_id]
        if self.book.expire(order):
            self._cancelled(order)

    def run_auction(self, which: str, prices: dict[str, float] | None = None) -> None:
        """Run the close or opening auction (kit.gateway.order_types): held orders fill or are cancelled."""
        for order in self.book.run_auction(which, prices):
            if order.status == "Cancelled":
                self._send_order(order)
            else:
                self._schedule(order)

    def _what_if(self, conn: Connection, req: OrderRequest) -> None:
        """A what-if is a question, not an order: checked like one, answered to the asking connection with one
        what-if openOrder (or the error a placement would get), and nothing is booked, filled or counted.
        Order faults (drop_orders, inactive_after_reject) do not apply to it."""
        assert conn.client_id is not None
        result = self.book.what_if(conn.client_id, req)
        if isinstance(result, Rejection):
            raise RequestError(req.order_id, result.code, result.message)
        self.gw.send(conn, m.open_order(result.order, result))

    def _send_order(self, order: Order, status: str | None = None) -> None:
        """openOrder and orderStatus of the order, in its status or the one given (a step it went through)."""
        self.gw.send_to_client(order.client_id, m.open_order(order, status=status))
        self.gw.send_to_client(order.client_id, m.order_status(order, status=status))

    def _schedule(self, order: Order) -> None:
        """Fill the order's next slice after the fill latency, if it can fill and is not already due to."""
        if self.book.elect(order):  # a stop the price reached: Submitted, and working from now
            self._send_order(order)
        due = order.perm_id in self._fill_timers
        if due or order.status != "Submitted" or not self.book.marketable(order):
            return
        latency = self.gw.config.fill_latency
        self._fill_timers[order.perm_id] = self.gw.later(latency, self._fill, order.perm_id)

    def _fill(self, perm_id: int, late: bool = False) -> None:
        self._fill_timers.pop(perm_id, None)
        execution = self.book.fill_next(perm_id, late=late)
        if execution is None:
            return
        order = execution.order
        status = [m.open_order(order)] if order.status == "Filled" else []
        self._send_execution(execution, between=[*status, m.order_status(order)])
        if self.gw.faults.correct_executions:
            self._send_execution(self.book.correct(execution))
        self._send_position(order)
        self._schedule(order)

    def _send_execution(self, e: Execution, between: list[m.Message] | None = None) -> None:
        """execDetails, the order's status messages, then the commissionReport, as the faults allow."""
        faults, client_id = self.gw.faults, e.order.client_id
        if faults.commission_before_execution:
            self._send_commission(e)
        details = m.exec_details(-1, e, self._time(e.time))
        self.gw.send_to_client(client_id, details)
        if faults.duplicate_exec_details:
            self.gw.send_to_client(client_id, details)
        for msg in between or []:
            self.gw.send_to_client(client_id, msg)
        if not faults.commission_before_execution:
            self._send_commission(e)

    def _send_commission(self, e: Execution) -> None:
        msg, delay = m.commission_report(e), self.gw.faults.commission_delay
        if delay > 0:
            self.gw.later(delay, self.gw.send_to_client, e.order.client_id, msg)
        else:
            self.gw.send_to_client(e.order.client_id, msg)

    def _send_position(self, order: Order) -> None:
        """Stream the changed position to reqPositions and reqAccountUpdates subscribers."""
        key = (order.account, order.instrument.con_id)
        pos = next(p for p in self.book.positions() if (p.account, p.instrument.con_id) == key)
        for conn in self.gw.connections:
            if conn.positions:
                self.gw.send(conn, m.position(pos))
            if conn.account == order.account:
                self.gw.send(conn, m.portfolio(pos, self.gw.market.price(order.instrument)))

    def cancelOrder(self, conn: Connection, fields: list[str]) -> None:
        assert conn.client_id is not None
        order_id = Fields(fields, start=2).integer()
        order = self.book.find(conn.client_id, order_id)
        if order is not None and order.is_open and order.transmit:
            self.gw.send_to_client(order.client_id, m.order_status(order, status="PendingCancel"))
        result = self.book.cancel(conn.client_id, order_id)
        if isinstance(result, Rejection):
            raise RequestError(order_id, result.code, result.message)
        self._cancelled(result)

    def reqGlobalCancel(self, conn: Connection, fields: list[str]) -> None:
        for order in self.book.open_orders():
            if order.transmit:
                self.gw.send_to_client(order.client_id, m.order_status(order, status="PendingCancel"))
            self.book.cancel(order.client_id, order.order_id)
            self._cancelled(order)

    def _cancelled(self, order: Order) -> None:
        timer = self._fill_timers.pop(order.perm_id, None)
        if timer is not None:
            self.gw.cancel_timer(timer)
        self._send_order(order)
        self.gw.send_to_client(order.client_id, m.error(order.order_id, 202, "Order Canceled - reason:"))
        if self.gw.faults.fill_after_cancel and order.remaining > 0:
            self.gw.later(self.gw.config.fill_latency, self._fill, order.perm_id, True)

    def reqOpenOrders(self, conn: Connection, fields: list[str]) -> None:
        self._send_open_orders(conn, conn.client_id)

    def reqAllOpenOrders(self, conn: Connection, fields: list[str]) -> None:
        self._send_open_orders(conn, None)

    def _send_open_orders(self, conn: Connection, client_id: int | None) -> None:
        for order in self.book.open_orders(client_id):
            self.gw.send(conn, m.open_order(order))
            self.gw.send(conn, m.order_status(order))
        self.gw.send(conn, m.open_order_end())

    def reqCompletedOrders(self, conn: Connection, fields: list[str]) -> None:
        for order in self.book.completed_orders():
            completed = self._time(order.completed_time) if order.completed_time else ""
            self.gw.send(conn, m.completed_order(order, completed))
        self.gw.send(conn, m.completed_orders_end())

    def reqExecutions(self, conn: Connection, fields: list[str]) -> None:
        req_id, execution_filter = parse_exec_filter(fields)
        for e in self.book.executions:
            if execution_filter.matches(e):
                self.gw.send(conn, m.exec_details(req_id, e, self._time(e.time)))
                self.gw.send(conn, m.commission_report(e))
        if not self.gw.faults.withhold_exec_details_end:
            self.gw.send(conn, m.exec_details_end(req_id))

    # positions and account

    def reqPositions(self, conn: Connection, fields: list[str]) -> None:
        conn.positions = True
        for pos in self.book.positions():
            self.gw.send(conn, m.position(pos))
        self.gw.send(conn, m.position_end())

    def cancelPositions(self, conn: Connection, fields: list[str]) -> None:
        conn.positions = False

    def _account(self, req_id: int, account: str) -> list[str]:
        """The accounts a request names ('' or 'All': every managed account)."""
        accounts = self.gw.config.accounts
        if account in ("", "All"):
            return list(accounts)
        if account not in accounts:
            raise RequestError(req_id, 321, f"Error validating request: account {account} is not managed")
        return [account]

    def reqAccountUpdates(self, conn: Connection, fields: list[str]) -> None:
        r = Fields(fields, start=2)
        subscribe, account = r.flag(), r.text()
        if not subscribe:
            conn.account = None
            return
        account = self._account(-1, account)[0]
        conn.account = account
        for tag, value, currency in self.book.account_values(account):
            self.gw.send(conn, m.account_value(tag, value, currency, account))
        for pos in self.book.positions():
            if pos.account == account:
                self.gw.send(conn, m.portfolio(pos, self.gw.market.price(pos.instrument)))
        self.gw.send(conn, m.account_time(self.book.clock()))
        self.gw.send(conn, m.account_download_end(account))

    def reqAccountUpdatesMulti(self, conn: Connection, fields: list[str]) -> None:
        r = Fields(fields, start=2)
        req_id = r.integer()
        for account in self._account(req_id, r.text()):
            for tag, value, currency in self.book.account_values(account):
                self.gw.send(conn, m.account_update_multi(req_id, account, tag, value, currency))
        self.gw.send(conn, m.account_update_multi_end(req_id))

    def reqAccountSummary(self, conn: Connection, fields: list[str]) -> None:
        r = Fields(fields, start=2)
        req_id, _group, tags = r.integer(), r.text(), set(r.text().split(","))
        for account in self.gw.config.accounts:
            for tag, value, currency in self.book.account_values(account):
                if tag in tags:
                    self.gw.send(conn, m.account_summary(req_id, account, tag, value, currency))
        self.gw.send(conn, m.account_summary_end(req_id))
