"""The gateway's book: orders, executions, positions and the fill model.

Pure and deterministic: no sockets, no timers, no wall clock of its own (the caller passes a clock),
randomness only from ``random.Random`` seeded by the config seed. The server decides *when* things happen
(timers, faults, who is connected); the book decides *what* happens. Because each order draws from its own
generator, seeded by the gateway seed and its permId, the same seed and the same orders give the same
executions whatever the interleaving of timers.

The book is shared by every connection, as a real gateway's is: orders, executions and positions outlive the
connection that created them, and survive ``Gateway.restart()``.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from kit.gateway.config import GatewayConfig
from kit.gateway.faults import Faults
from kit.gateway.instruments import UNKNOWN_CONTRACT, VENUES, ContractSpec, Instrument, Market, round_price
from kit.gateway.order_types import (
    SUPPORTED,
    can_fill,
    fill_price,
    held_for,
    is_sliced_algo,
    refusal,
    trigger_changes,
    trigger_of,
)
from kit.order_types import Trigger
from kit.slicing import split

WORKING = frozenset({"PreSubmitted", "Submitted"})
#: lastLiquidity of an execution: the order rested on the book (added liquidity) or took it (removed).
ADDED, REMOVED = 1, 2


@dataclass(frozen=True)
class OrderTypeFields:
    """The fields of the order types beyond MKT and LMT (kit.gateway.order_types), as IB names them."""

    aux_price: float | None = None
    outside_rth: bool = False
    good_till_date: str = ""
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    lmt_price_offset: float | None = None
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OrderRequest:
    """What a placeOrder message asks for (the fields the simulation acts on)."""

    order_id: int
    contract: ContractSpec
    action: str
    quantity: float
    order_type: str
    limit_price: float | None = None
    tif: str = "DAY"
    account: str = ""
    order_ref: str = ""
    transmit: bool = True
    #: IB's what-if: check the order and estimate its margin and commission; no order is created.
    what_if: bool = False
    type_fields: OrderTypeFields = OrderTypeFields()


@dataclass(frozen=True)
class Rejection:
    """An IB error answering an order request; ``order`` is set when IB keeps a record of the order."""

    code: int
    message: str
    order: Order | None = None


@dataclass(eq=False)
class Order:
    perm_id: int
    client_id: int
    order_id: int
    instrument: Instrument
    exchange: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    tif: str
    account: str
    order_ref: str
    transmit: bool
    status: str
    created: datetime
    #: This order's own generator (slice sizes, slippage), seeded by the gateway seed and the permId.
    rng: random.Random = field(repr=False)
    #: Why the order is done ("Filled", "Cancelled by Trader", "Rejected: ...") and when.
    reason: str = ""
    completed_time: datetime | None = None
    #: Effective executions: a correction replaces the execution it corrects.
    fills: list[Execution] = field(default_factory=list, repr=False)
    #: Sizes of the slices still to fill.
    slices: list[float] = field(default_factory=list, repr=False)
    #: A limit order that was not marketable when placed (or modified) rests on the book: its fills add
    #: liquidity. A MKT or marketable LMT order takes it.
    rested: bool = False
    #: Inactive without a rejection (the ``bare_inactive`` fault): still open and cancellable, never fills.
    dormant: bool = False
    type_fields: OrderTypeFields = OrderTypeFields()
    #: A stop's trigger; the auction ("close", "open") an auction order waits for, then the auction's price.
    trigger: Trigger | None = field(default=None, repr=False)
    held: str | None = None
    auction_price: float | None = None

    @property
    def filled(self) -> float:
        return sum(e.shares for e in self.fills)

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def avg_fill_price(self) -> float:
        """The volume-weighted average of the effective executions, rounded to 8 places like execDetails'
        avgPrice (no binary noise such as 190.01199999999997)."""
        filled = self.filled
        return round(sum(e.shares * e.price for e in self.fills) / filled, 8) if filled else 0.0

    @property
    def last_fill_price(self) -> float:
        return self.fills[-1].price if self.fills else 0.0

    @property
    def is_working(self) -> bool:
        return self.status in WORKING

    @property
    def is_open(self) -> bool:
        """Listed by reqOpenOrders and cancellable: working, or Inactive without a rejection."""
        return self.is_working or self.dormant

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass(eq=False)
class Execution:
    exec_id: str
    order: Order = field(repr=False)
    shares: float
    price: float
    time: datetime
    exchange: str
    cum_qty: float
    avg_price: float
    commission: float
    #: P&L this execution realises (net of commission); None when it only opens or adds to a position.
    realized_pnl: float | None
    #: The exec id this execution corrects (``...01`` for a ``...02``).
    corrects: str | None = None
    #: lastLiquidity: ADDED (1) or REMOVED (2).
    liquidity: int = REMOVED

    @property
    def side(self) -> str:
        return "BOT" if self.order.action == "BUY" else "SLD"


@dataclass(frozen=True)
class WhatIf:
    """A what-if order's estimate, what IB's OrderState carries: margins and equity with loan of the account
    before and after the order, in its base currency (USD, other currencies at ``fx``), and the commission
    in the instrument's currency. ``order`` is the order as it would be placed; it is never booked."""

    order: Order
    init_margin: tuple[float, float]  # (before, after)
    maint_margin: tuple[float, float]
    equity_with_loan: tuple[float, float]
    commission: float


@dataclass(frozen=True)
class ExecFilter:
    """reqExecutions' filter; empty fields (and client_id 0) match everything."""

    client_id: int = 0
    account: str = ""
    since: datetime | None = None
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    side: str = ""

    def matches(self, e: Execution) -> bool:
        o = e.order
        return (
            self.client_id in (0, o.client_id)
            and self.account in ("", o.account)
            and (self.since is None or e.time >= self.since)
            and self.symbol in ("", o.instrument.symbol)
            and self.sec_type in ("", o.instrument.sec_type)
            and self.exchange in ("", e.exchange)
            and self.side in ("", o.action, e.side)
        )


@dataclass
class Position:
    account: str
    instrument: Instrument
    quantity: float = 0.0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0

    def apply(self, signed_qty: float, price: float) -> float | None:
        """Book a trade; return the P&L it realises, or None if it only opens or adds to the position."""
        before = self.quantity
        self.quantity = before + signed_qty
        if before == 0 or (before > 0) == (signed_qty > 0):
            self.avg_cost = (before * self.avg_cost + signed_qty * price) / self.quantity
            return None
        closed = min(abs(signed_qty), abs(before))
        pnl = closed * (price - self.avg_cost) * (1 if before > 0 else -1)
        self.realized_pnl += pnl
        if self.quantity == 0:
            self.avg_cost = 0.0
        elif (self.quantity > 0) != (before > 0):  # flipped through zero: the rest opens at this price
            self.avg_cost = price
        return pnl


@dataclass
class RateMeter:
    """Inbound messages of one client: the total, and the most seen within any window (IB allows 50/s)."""

    window: float = 1.0
    count: int = 0
    max_per_window: int = 0
    _times: deque[float] = field(default_factory=deque, repr=False)

    def record(self, t: float) -> int:
        self.count += 1
        self._times.append(t)
        while t - self._times[0] >= self.window:
            self._times.popleft()
        self.max_per_window = max(self.max_per_window, len(self._times))
        return len(self._times)


class Book:
    def __init__(self, config: GatewayConfig, market: Market, clock: Callable[[], datetime],
                 faults: Faults | None = None):
        self.config = config
        #: The running gateway's knobs (its own copy of config.faults).
        self.faults = faults or config.faults
        self.market = market
        self.clock = clock
        #: Every order the gateway accepted or rejected with a record, by permId, in placement order.
        self.orders: dict[int, Order] = {}
        #: Every execution reported, corrections included, in order.
        self.executions: list[Execution] = []
        #: New-order requests received per orderRef (modifications excluded, rejected and dropped included).
        self.placements: Counter[str] = Counter()
        #: Requests swallowed by the drop_orders fault, with the placing clientId.
        self.dropped: list[tuple[int, OrderRequest]] = []
        #: Inbound message rates per clientId.
        self.inbound: dict[int, RateMeter] = {}
        #: Messages refused with error 100 (over the pacing limit) per clientId: kit's own pacing keeps it 0.
        self.paced: Counter[int] = Counter()
        self._superseded: set[str] = set()
        #: The auctions that have run ("close", "open"): orders for them are refused from then on.
        self.auctions_done: set[str] = set()
        self._by_client_id: dict[tuple[int, int], Order] = {}
        self._max_ids: dict[int, int] = {}
        self._next_ids: dict[int, int] = {}
        rng = random.Random(config.seed)
        self._perm_ids = itertools.count(rng.randrange(1_000_000_000, 1_500_000_000))
        self._exec_prefix = f"{rng.getrandbits(16):08x}"
        self._exec_seq = itertools.count(rng.randrange(0x60000000, 0x70000000))

    # ids

    def next_valid_id(self, client_id: int) -> int:
        return self._next_ids.get(client_id, 1)

    def roll_back_ids(self) -> None:
        """Forget the nextValidId of every client, as a restarted gateway may (order ids used stay used)."""
        self._next_ids.clear()

    # inspection

    def find(self, client_id: int, order_id: int) -> Order | None:
        return self._by_client_id.get((client_id, order_id))

    def orders_by_ref(self, order_ref: str) -> list[Order]:
        return [o for o in self.orders.values() if o.order_ref == order_ref]

    def open_orders(self, client_id: int | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and client_id in (None, o.client_id)]

    def completed_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if not o.is_open]

    def working_orders(self, inst: Instrument) -> list[Order]:
        return [o for o in self.orders.values() if o.is_working and o.instrument.con_id == inst.con_id]

    def effective_executions(self) -> list[Execution]:
        return [e for e in self.executions if e.exec_id not in self._superseded]

    def max_inbound_rate(self) -> int:
        """The most inbound messages any one client sent within one second."""
        return max((m.max_per_window for m in self.inbound.values()), default=0)

    def record_inbound(self, client_id: int, t: float) -> int:
        """Count one inbound message; returns how many the client sent in the last second, this one too."""
        return self.inbound.setdefault(client_id, RateMeter()).record(t)

    def positions(self) -> list[Position]:
        """Positions per (account, instrument) folded from the effective executions; closed ones have 0."""
        return list(self._fold().values())

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows for reqAccountUpdates and account summaries; totals in USD."""
        cash, held = self._holdings(account)
        fx = self.config.fx
        values = held.values()
        gross, net = sum(map(abs, values)), sum(values)
        total_cash = sum(v * fx[cur] for cur, v in cash.items())
        rows = [("CashBalance", f"{v:.2f}", cur) for cur, v in sorted(cash.items())]
        rows += [
            ("AccountType", "INDIVIDUAL", ""),
            ("TotalCashValue", f"{total_cash:.2f}", "USD"),
            ("GrossPositionValue", f"{gross:.2f}", "USD"),
            ("NetLiquidation", f"{total_cash + net:.2f}", "USD"),
            ("AvailableFunds", f"{total_cash + net:.2f}", "USD"),
            ("BuyingPower", f"{4 * (total_cash + net):.2f}", "USD"),
        ]
        return rows

    def _holdings(self, account: str) -> tuple[dict[str, float], dict[int, float]]:
        """An account's cash per currency, and the USD market value of each of its positions by conId."""
        cash = {"USD": self.config.cash}
        for e in self.effective_executions():
            if e.order.account == account:
                cur = e.order.instrument.currency
                units = e.order.instrument.units
                cash[cur] = cash.get(cur, 0.0) - e.order.sign * e.shares * e.price * units - e.commission
        fx = self.config.fx
        held = {
            p.instrument.con_id: p.quantity * self.market.price(p.instrument) * p.instrument.units
            * fx[p.instrument.currency]
            for p in self.positions()
            if p.account == account
        }
        return cash, held

    # orders

    def place(self, client_id: int, req: OrderRequest, reject_status: str = "Cancelled") -> Order | Rejection:
        """Accept, modify or reject an order request. Rejected orders IB keeps a record of get
        ``reject_status`` ("Cancelled", or "Inactive" as IB sometimes reports them)."""
        existing = self.find(client_id, req.order_id)
        if existing is not None and existing.is_working:
            return self._modify(existing, req)
        if existing is not None and existing.status == "Filled" and self._same_order(existing, req):
            return Rejection(104, "Can't modify a filled order")  # else a new order on a used id: 103
        self.placements[req.order_ref] += 1
        if existing is not None or req.order_id <= self._max_ids.get(client_id, 0):
            return Rejection(103, "Duplicate order id")
        self._max_ids[client_id] = req.order_id
        self._next_ids[client_id] = max(self._next_ids.get(client_id, 1), req.order_id + 1)
        inst = self.market.resolve(req.contract)
        if inst is None:
            return Rejection(200, UNKNOWN_CONTRACT)
        refusal = self._refusal(req, inst)
        if refusal is not None:
            return refusal
        perm_id = next(self._perm_ids)
        order = self._new_order(client_id, req, inst, perm_id)
        self.orders[perm_id] = order
        self._by_client_id[client_id, req.order_id] = order
        problem = self._check(order)
        if problem is not None:
            code, message = problem
            self._finish(order, reject_status, f"Rejected: {message}")
            return Rejection(code, message, order)
        slices = self.config.algo_slices if is_sliced_algo(order) else self.config.partial_fills
        order.slices = split(order.quantity, slices, order.rng)
        order.rested = not self.marketable(order)
        trigger = order.trigger
        if order.transmit and trigger is not None and trigger.is_stop and not trigger.triggered:
            order.status = "PreSubmitted"  # IB's status of a stop not yet elected
        if order.tif == "IOC" and order.transmit and not self.marketable(order):
            self._finish(order, "Cancelled", "Cancelled: IOC order not marketable on arrival")
        return order

    def _new_order(self, client_id: int, req: OrderRequest, inst: Instrument, perm_id: int) -> Order:
        order = self._bare_order(client_id, req, inst, perm_id)
        order.trigger, order.held = trigger_of(order), held_for(order)
        return order

    def _bare_order(self, client_id: int, req: OrderRequest, inst: Instrument, perm_id: int) -> Order:
        return Order(
            perm_id=perm_id,
            client_id=client_id,
            order_id=req.order_id,
            instrument=inst,
            exchange=req.contract.exchange or "SMART",
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            limit_price=req.limit_price,
            tif=req.tif or "DAY",
            account=req.account or self.config.accounts[0],
            order_ref=req.order_ref,
            transmit=req.transmit,
            status="Submitted" if req.transmit else "PreSubmitted",
            created=self.clock(),
            rng=random.Random(self.config.seed * 1_000_003 + perm_id),
            type_fields=req.type_fields,
        )

    def what_if(self, client_id: int, req: OrderRequest) -> WhatIf | Rejection:
        """IB's what-if: the checks of a placement (200, 201, 10311), then an estimate. The book is left as
        it was: no order, no permId, no order id used, no placement counted, nothing fills.

        Margin is ``init_margin_rate``/``maint_margin_rate`` of the account's gross position value at the
        simulated prices, before and with the order (so an order that reduces a position frees margin);
        equity with loan is cash plus positions, and the order changes it only by its commission."""
        inst = self.market.resolve(req.contract)
        if inst is None:
            return Rejection(200, UNKNOWN_CONTRACT)
        order = self._new_order(client_id, req, inst, perm_id=0)
        order.status = "PreSubmitted"  # what IB reports for a what-if
        problem = self._check(order)
        if problem is not None:
            return Rejection(*problem)
        cash, held = self._holdings(order.account)
        fx = self.config.fx
        delta = order.sign * order.quantity * self.market.price(inst) * inst.units * fx[inst.currency]
        after = {**held, inst.con_id: held.get(inst.con_id, 0.0) + delta}
        gross = (sum(map(abs, held.values())), sum(map(abs, after.values())))
        equity = sum(v * fx[cur] for cur, v in cash.items()) + sum(held.values())
        commission = self.commission(order.quantity)

        def margin(rate: float) -> tuple[float, float]:
            return round(rate * gross[0], 2), round(rate * gross[1], 2)

        return WhatIf(
            order=order,
            init_margin=margin(self.config.init_margin_rate),
            maint_margin=margin(self.config.maint_margin_rate),
            equity_with_loan=(round(equity, 2), round(equity - commission * fx[inst.currency], 2)),
            commission=commission,
        )

    def commission(self, shares: float) -> float:
        """The commission of one execution (or of a whole what-if order): per share, with a minimum."""
        return round(max(self.config.min_commission, self.config.commission_per_share * shares), 2)

    def _execution_commission(self, earlier: list[Execution], shares: float) -> float:
        """With ``min_commission_per_order`` (IB's fixed pricing) the minimum is charged once per order: each
        execution pays what the order's cumulative commission grows by (so later partial fills of a small
        order pay 0). Otherwise every execution pays at least the minimum."""
        if not self.config.min_commission_per_order:
            return self.commission(shares)
        cumulative = self.commission(sum(e.shares for e in earlier) + shares)
        return round(cumulative - sum(e.commission for e in earlier), 2)

    def drop(self, client_id: int, req: OrderRequest) -> None:
        """Swallow a request (the drop_orders fault): counted as placed, but nothing else happens."""
        self.placements[req.order_ref] += 1
        self.dropped.append((client_id, req))

    def _refusal(self, req: OrderRequest, inst: Instrument) -> Rejection | None:
        """IB's validation refusals, before any order exists (no permId, no record; the id is used up), each
        behind its fault knob: 110 a limit price off the tick, 321 a size that is not whole shares."""
        faults = self.faults
        price = req.limit_price
        if faults.reject_off_tick and price is not None and round_price(price, inst) != round(price, 8):
            text = "The price does not conform to the minimum price variation for this contract."
            return Rejection(110, text)
        if faults.reject_fractional_size and not float(req.quantity).is_integer():
            cause = f"The order size {req.quantity:g} is not a multiple of the size increment 1"
            return Rejection(321, f"Error validating request.-'bW' : cause - {cause}")
        return None

    def _check(self, order: Order) -> tuple[int, str] | None:
        """IB's precautionary checks: an (error code, message) when the order must be rejected."""
        reason = None
        if order.action not in ("BUY", "SELL"):
            reason = f"Invalid action {order.action!r}"
        elif order.order_type not in SUPPORTED:
            reason = f"Order type {order.order_type!r} is not supported by the simulated gateway"
        elif order.quantity <= 0:
            reason = "The order quantity must be positive"
        elif order.order_type == "LMT" and not order.limit_price:
            reason = "A limit order needs a limit price"
        elif order.account not in self.config.accounts:
            reason = f"Account {order.account} is not managed by this gateway"
        elif order.quantity > self.config.max_order_size and order.instrument.sec_type != "CASH":
            # (IB's precautionary size limit counts shares and contracts; FX has its own value limits)
            reason = (
                f"The order size {order.quantity:.12g} exceeds the size limit "
                f"{self.config.max_order_size:.12g} set in Precautionary Settings"
            )
        if reason is not None:
            return 201, f"Order rejected - reason:{reason}"
        if order.exchange != "SMART" and order.exchange in self.config.restricted_exchanges:
            return 10311, (
                f"This order will be directly routed to {order.exchange}. Direct routed orders may result in "
                "higher trade fees. Restriction is specified in Precautionary Settings of Global "
                "Configuration/API."
            )
        return refusal(order, self.faults, self.auctions_done, self.clock())

    def _same_order(self, order: Order, req: OrderRequest) -> bool:
        """A request for this order (a modify), not a new order reusing its id: same contract, side, type
        and orderRef."""
        return (self.market.resolve(req.contract) == order.instrument and req.action == order.action
                and req.order_type == order.order_type and req.order_ref == order.order_ref)

    def _modify(self, order: Order, req: OrderRequest) -> Order | Rejection:
        """Change a working order's quantity, prices (limit; auxPrice: a stop's stop; the trail fields), tif
        or transmit flag, as IB's modify does (never its contract, side or type: 105); the same checks
        apply, and a quantity must stay above what has filled (201). A stop not yet elected is re-armed on
        its new terms; one already elected stays elected. A cancelled order's id is a used id (103, in
        place())."""
        inst = self.market.resolve(req.contract)
        if inst != order.instrument or req.action != order.action or req.order_type != order.order_type:
            return Rejection(105, "Order being modified does not match original order")
        refused = self._refusal(req, inst)  # 110 off the tick, 321 a fractional size: as on a new order
        if refused is not None:
            return refused
        changes = {"quantity": req.quantity, "limit_price": req.limit_price, "tif": req.tif or order.tif,
                   "type_fields": req.type_fields}  # the whole order again: stop (auxPrice), trail, GTD...
        problem = self._check(dataclasses.replace(order, **changes))
        if problem is None and req.quantity < order.filled:
            problem = 201, f"Order rejected - reason:{order.filled:.12g} are already filled"
        if problem is not None:
            return Rejection(*problem)
        moved = trigger_changes(order, req)
        for name, value in changes.items():
            setattr(order, name, value)
        order.transmit = req.transmit
        order.status = "Submitted" if req.transmit else "PreSubmitted"
        trigger = order.trigger
        if trigger is not None:
            armed = trigger.is_stop and not trigger.triggered
            trigger.amend(moved)  # new stop, trail or limit; a trailing stop keeps its best price seen
            if armed and req.transmit:
                order.status = "PreSubmitted"  # until the price reaches it (Handlers._schedule elects it)
        order.slices = split(order.remaining, max(1, len(order.slices)), order.rng)
        order.rested = not self.marketable(order)
        if order.tif == "IOC" and order.transmit and not self.marketable(order):
            self._finish(order, "Cancelled", "Cancelled: IOC order not marketable")  # as a new IOC order
        return order

    def marketable(self, order: Order) -> bool:
        """Can the order fill now? MKT always; LMT once the simulated price reaches its limit; the other
        types by kit.gateway.order_types (auction orders not before their auction, stops once triggered)."""
        return can_fill(order, self.market.price(order.instrument))

    def elect(self, order: Order) -> bool:
        """Make a PreSubmitted stop whose trigger the price has reached Submitted; True when it did."""
        trigger = order.trigger
        if order.status != "PreSubmitted" or not order.transmit or trigger is None or not trigger.is_stop:
            return False
        if not trigger.observe(self.market.price(order.instrument)):
            return False
        order.status = "Submitted"
        return True

    def expire(self, order: Order) -> bool:
        """A GTD order's good-till time has come: it is cancelled if still open; True when it was."""
        if not order.is_open:
            return False
        self._finish(order, "Cancelled", "Cancelled: the good-till date was reached")
        return True

    def run_auction(self, which: str, prices: dict[str, float] | None = None) -> list[Order]:
        """The close or opening auction: every order held for it works at the auction price (the symbol's in
        `prices`, else its simulated price) for its whole remaining quantity; one whose limit that price does
        not reach is cancelled. Orders for that auction are refused from now on. Returns the orders."""
        self.auctions_done.add(which)
        orders = [o for o in self.orders.values() if o.is_working and o.held == which]
        for order in orders:
            symbol = order.instrument.symbol
            order.held = None
            order.auction_price = (prices or {}).get(symbol, self.market.price(order.instrument))
            order.slices = [order.remaining]
            if not self.marketable(order):
                self._finish(order, "Cancelled", f"Cancelled: limit not reached in the {which} auction")
        return orders

    def fill_next(self, perm_id: int, late: bool = False) -> Execution | None:
        """Fill the order's next slice, if it can fill now; ``late`` fills a cancelled order's next slice
        (a fill that raced the cancel)."""
        order = self.orders[perm_id]
        if order.remaining <= 0 or not order.slices:
            return None
        if late:
            if order.status != "Cancelled":
                return None
        elif order.status != "Submitted" or not self.marketable(order):
            return None
        shares = min(order.slices.pop(0), order.remaining)
        return self._execute(order, shares, self._fill_price(order))

    def _fill_price(self, order: Order) -> float:
        """The far side of the quote, up to two ticks worse (seeded), capped by a limit price."""
        inst = order.instrument
        bid, ask = self.market.quote(inst)
        slip = order.rng.randint(0, 2) * inst.min_tick
        return round_price(fill_price(order, bid, ask, self.market.price(inst), slip), inst)

    def _execute(
        self, order: Order, shares: float, price: float, corrects: Execution | None = None
    ) -> Execution:
        if corrects is None and self.faults.exec_id_parts and order.fills:
            base = order.fills[0].exec_id.rsplit(".", 2)[0]  # prefix.seq of the order's first execution
            exec_id = f"{base}.{len(order.fills) + 1:02d}.01"
        elif corrects is None:
            exec_id = f"{self._exec_prefix}.{next(self._exec_seq):08x}.01.01"
        else:
            exec_id = corrects.exec_id[:-2] + "02"
            self._superseded.add(corrects.exec_id)
        fills = [f for f in order.fills if f is not corrects]
        commission = self._execution_commission(fills, shares)
        pnl = self._position(self._fold(), order).apply(order.sign * shares, price)
        cum_qty = sum(f.shares for f in fills) + shares
        avg_price = (sum(f.shares * f.price for f in fills) + shares * price) / cum_qty
        execution = Execution(
            exec_id=exec_id,
            order=order,
            shares=shares,
            price=price,
            time=self.clock(),
            exchange=self._venue(order) if corrects is None else corrects.exchange,
            cum_qty=cum_qty,
            avg_price=round(avg_price, 8),
            commission=commission,
            realized_pnl=None if pnl is None else round(pnl * order.instrument.units - commission, 2),
            corrects=None if corrects is None else corrects.exec_id,
            liquidity=ADDED if order.rested else REMOVED,
        )
        self.executions.append(execution)
        if corrects is None:
            order.fills.append(execution)
        else:
            order.fills[order.fills.index(corrects)] = execution
        if order.remaining <= 0 and order.is_working:
            self._finish(order, "Filled", "Filled")
        return execution

    def _venue(self, order: Order) -> str:
        """Where a slice filled: a SMART order on one of the venues of its primary exchange, as IB names them
        (ISLAND, not NASDAQ), chosen by a generator of its own so slice sizes and prices stay as seeded."""
        if order.exchange != "SMART":
            return order.exchange
        primary = order.instrument.primary_exchange
        venues = [v for v in VENUES.get(primary, (primary,)) if v != "NASDAQ"]
        rng = random.Random(f"{self.config.seed}:{order.perm_id}:{len(order.fills)}")
        return rng.choice(venues)

    def correct(self, execution: Execution) -> Execution:
        """Issue the ``.02`` correction of an execution: same shares, one tick better for the client."""
        order = execution.order
        better = round_price(execution.price - order.sign * order.instrument.min_tick, order.instrument)
        return self._execute(order, execution.shares, better, corrects=execution)

    def set_inactive(self, order: Order) -> None:
        """Inactive without a rejection: open and cancellable, but it never fills."""
        order.status = "Inactive"
        order.dormant = True

    def cancel(self, client_id: int, order_id: int) -> Order | Rejection:
        order = self.find(client_id, order_id)
        prefix = f"OrderId {order_id} that needs to be cancelled"
        if order is None:
            return Rejection(10147, f"{prefix} is not found.")
        if not order.is_open:
            return Rejection(10148, f"{prefix} cannot be cancelled, state: {order.status}.")
        # An order never transmitted (transmit=False) is cancelled by the API before IB saw it.
        self._finish(order, "Cancelled" if order.transmit else "ApiCancelled", "Cancelled by Trader")
        return order

    def _finish(self, order: Order, status: str, reason: str) -> None:
        order.dormant = False
        order.status = status
        order.reason = reason
        order.completed_time = self.clock()

    def _fold(self) -> dict[tuple[str, int], Position]:
        book: dict[tuple[str, int], Position] = {}
        for e in self.effective_executions():
            self._position(book, e.order).apply(e.order.sign * e.shares, e.price)
        return book

    def _position(self, book: dict[tuple[str, int], Position], order: Order) -> Position:
        key = (order.account, order.instrument.con_id)
        if key not in book:
            book[key] = Position(order.account, order.instrument)
        return book[key]
