"""The simulated gateway's order types beyond MKT and LMT: what IB refuses, and how each one works.

The book (kit.gateway.state) asks this module three things about an order: whether IB would refuse it
(`refusal`), whether it can fill now (`can_fill`), and at what price a slice fills (`fill_price`). Stops
trigger by kit.order_types.Trigger, the rule the mock broker follows too; the gateway feeds it its own
simulated price (the last trade) on every price update.

- MOC and LOC are held until the close auction, MKT or LMT with tif OPG until the opening auction
  (`Gateway.run_auction`, or `GatewayConfig.auction_after` seconds after the order); the auction fills
  every held order whole at the auction price, and cancels a LOC or LMT OPG whose limit it does not reach.
- After the close auction (or with the `past_close_cutoff` fault) a new MOC or LOC is refused with 201, as
  IB refuses orders past the exchange's cut-off (NYSE and NASDAQ take MOC/LOC orders until 15:50 ET); after
  the open (or `past_open_cutoff`) an OPG order is refused the same way (IB takes them until 09:28 ET).
- STP, STP LMT, TRAIL and TRAIL LIMIT orders wait as PreSubmitted (IB's status of a stop not yet elected)
  and become Submitted, working as MKT or LMT, when the price reaches the stop.
- MIDPRICE fills at the midpoint, REL at the bid plus its offset (a BUY; the ask minus it for a SELL),
  each within its cap; REL is for stocks only (IB 114) routed SMART (IB 115), MIDPRICE for US stocks.
- Twap and Vwap fill in `GatewayConfig.algo_slices` slices, one per fill latency; Adaptive like its order.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from kit.order_types import (
    ALGOS,
    CLOSE_AUCTION,
    ORDER_TYPES,
    STOPS,
    TRAILING,
    US_ALGOS,
    Trigger,
    auction,
    reaches,
)

if TYPE_CHECKING:
    from kit.gateway.faults import Faults
    from kit.gateway.state import Order, OrderRequest

SUPPORTED = frozenset(ORDER_TYPES)
#: IB's precautionary error for an order it will not accept (the reason follows).
REJECTED = 201


def trigger_of(order: Order) -> Trigger:
    """The order's stop trigger from IB's fields: auxPrice is the stop of a STP, the trailing amount of a
    TRAIL; trailStopPrice the initial stop of a trailing order; lmtPriceOffset the TRAIL LIMIT offset."""
    fields = order.type_fields
    amount = stop = None
    if order.order_type in STOPS:
        stop = fields.aux_price
    elif order.order_type in TRAILING:
        stop, amount = fields.trail_stop_price, None if fields.trailing_percent else fields.aux_price
    return Trigger(order.action, order.order_type, stop, amount, fields.trailing_percent,
                   fields.lmt_price_offset, order.limit_price)


def trigger_changes(order: Order, req: OrderRequest) -> dict[str, float | None]:
    """What a modify changes in the order's trigger, in kit's names (Trigger.amend): the request's IB
    fields against the order's. A trailStopPrice sent again unchanged moves nothing: the stop stays where
    the trail has taken it, from the best price seen since the order went in."""
    old, new = order.type_fields, req.type_fields
    changes: dict[str, float | None] = {}
    if req.limit_price != order.limit_price:
        changes["limit_price"] = req.limit_price
    if order.order_type in STOPS and new.aux_price != old.aux_price:
        changes["stop_price"] = new.aux_price
    elif order.order_type in TRAILING:
        if new.trail_stop_price is not None and new.trail_stop_price != old.trail_stop_price:
            changes["stop_price"] = new.trail_stop_price
        if new.trailing_percent and new.trailing_percent != old.trailing_percent:
            changes["trail_percent"] = new.trailing_percent
        elif not new.trailing_percent and new.aux_price and new.aux_price != old.aux_price:
            changes["trail_amount"] = new.aux_price
        if new.lmt_price_offset != old.lmt_price_offset:
            changes["offset"] = new.lmt_price_offset
    return changes


def held_for(order: Order) -> str | None:
    return auction(order.order_type, order.tif)


def good_till(order: Order) -> datetime | None:
    """A GTD order's good-till time (goodTillDate in either of IB's forms), or None when it has none or
    IB could not read it."""
    from kit.gateway.protocol import parse_time  # the protocol module imports the book, which imports this

    text = order.type_fields.good_till_date
    try:
        return parse_time(text) if text else None
    except (ValueError, KeyError):  # KeyError: ZoneInfo's unknown zone
        return None


def refusal(order: Order, faults: Faults, auctions_done: set[str], now: datetime) -> tuple[int, str] | None:
    """IB's refusal of an order type's fields, as (code, message), or None."""
    fields = order.type_fields
    kind, inst = order.order_type, order.instrument
    reason = None
    if kind in CLOSE_AUCTION and order.tif != "DAY":
        return 113, "The Tif option should be set to DAY for MOC and LOC orders."
    if order.tif == "OPG" and kind not in ("MKT", "LMT"):
        return 111, "The TIF (Tif type) and the order type are incompatible."
    if kind == "REL" and inst.sec_type != "STK":
        return 114, "Relative orders are valid for stocks only."
    if kind == "REL" and order.exchange not in ("SMART", "SMART_ECN", "INSTINET", "PRIMEX"):
        return 115, ("Relative orders for US stocks can only be submitted to SMART, SMART_ECN, INSTINET, "
                     "or PRIMEX.")
    if kind in CLOSE_AUCTION and (faults.past_close_cutoff or "close" in auctions_done):
        reason = "The MOC/LOC order cut-off time for the close auction has passed"
    elif order.tif == "OPG" and (faults.past_open_cutoff or "open" in auctions_done):
        reason = "The order cut-off time for the opening auction has passed"
    elif kind in ("LOC", "STP LMT") and not order.limit_price:
        reason = f"A {kind} order needs a limit price"
    elif kind in STOPS and not fields.aux_price:
        reason = f"A {kind} order needs a stop price (auxPrice)"
    elif kind in TRAILING and bool(fields.aux_price) == bool(fields.trailing_percent):
        reason = "A trailing order needs a trailing amount (auxPrice) or a trailing percent, not both"
    elif kind == "TRAIL LIMIT" and fields.lmt_price_offset is None and not order.limit_price:
        reason = "A TRAIL LIMIT order needs a limit offset (lmtPriceOffset) or a limit price"
    elif kind == "MIDPRICE" and (inst.currency != "USD" or order.exchange != "SMART"):
        reason = "MIDPRICE orders are for US stocks routed SMART"
    elif order.tif == "GTD" and good_till(order) is None:
        reason = f"A GTD order needs a good-till date, not {fields.good_till_date!r}"
    elif order.tif == "GTD" and good_till(order) <= now:  # type: ignore[operator]
        reason = "The good-till date is in the past"
    elif fields.algo_strategy:
        reason = _algo_refusal(order)
    if reason is not None:
        return REJECTED, f"Order rejected - reason:{reason}"
    return None


def _algo_refusal(order: Order) -> str | None:
    fields = order.type_fields
    params = ALGOS.get(fields.algo_strategy)
    if params is None:
        return f"Unknown algo strategy {fields.algo_strategy!r}"
    if order.order_type not in (("LMT",) if fields.algo_strategy == "Twap" else ("MKT", "LMT")):
        return f"The {fields.algo_strategy} algo does not support order type {order.order_type}"
    if fields.algo_strategy in US_ALGOS and order.instrument.currency != "USD":
        return f"The {fields.algo_strategy} algo is for US stocks"
    known = {p.tag: p for p in params}
    for tag, value in fields.algo_params:
        param = known.get(tag)
        if param is None:
            return f"Invalid algo parameter {tag!r} for {fields.algo_strategy}"
        if param.kind == "choice" and value not in param.choices:
            return f"Invalid value {value!r} of algo parameter {tag}"
        if param.kind == "number" and not _number_in(value, param.low, param.high):
            return f"Algo parameter {tag} {value!r} must be between {param.low:g} and {param.high:g}"
    return None


def _number_in(text: str, low: float, high: float) -> bool:
    try:
        return low <= float(text) <= high
    except ValueError:
        return False


def can_fill(order: Order, price: float) -> bool:
    """Out of its auction wait, its stop triggered at this price, and its limit (if any) reached."""
    if order.held is not None:
        return False
    triggered = order.trigger is None or order.trigger.observe(price)
    return triggered and reaches(order.action, price, working_limit(order))


def working_limit(order: Order) -> float | None:
    """The limit the order works at now (None: at market). Read from the order, not the trigger, so a
    modified limit counts; a TRAIL LIMIT's follows its stop."""
    if order.order_type == "TRAIL LIMIT" and order.trigger is not None:
        return order.trigger.working_limit()
    return None if order.order_type in ("MKT", "MOC", "STP", "TRAIL") else order.limit_price


def fill_price(order: Order, bid: float, ask: float, mid: float, slip: float) -> float:
    """A slice's price before tick rounding: the auction price; MIDPRICE the midpoint; REL its peg; others
    the far side of the quote plus `slip`; each capped by the order's working limit."""
    fields = order.type_fields
    if order.auction_price is not None:
        return order.auction_price
    if order.order_type == "MIDPRICE":
        price = mid
    elif order.order_type == "REL":
        offset = fields.aux_price or 0.0
        price = min(bid + offset, ask) if order.action == "BUY" else max(ask - offset, bid)
    else:
        price = ask + slip if order.action == "BUY" else bid - slip
    limit = working_limit(order)
    if limit is None:
        return price
    return min(price, limit) if order.action == "BUY" else max(price, limit)


def is_sliced_algo(order: Order) -> bool:
    fields = order.type_fields
    return fields.algo_strategy in ("Twap", "Vwap")
