"""Builders of the messages the gateway sends, in the layouts of every server version from 157 to 178.

Field counts matter: ib_insync silently drops an execDetails, commissionReport, position or updatePortfolio
whose count is off, and every client fails on a short openOrder, completedOrder or contractDetails. Each
builder spells its layout out field by field, grouped as in the wire-protocol reference, section 3; a field
that only some server versions carry is wrapped in ``since(v, x)`` or ``until(v, x)``, and
``Message.wire(version)`` gives the fields one connection's version carries (as IB's own decoder.py and
orderdecoder.py read them: e.g. faProfile until 176, pendingPriceRevision since 178).

A ``Message`` carries its name and a tag (an order status, an error code), which is what the
``disconnect_on`` fault matches: 'orderStatus', 'orderStatus:Filled', 'error:201'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kit.gateway.instruments import Instrument
from kit.gateway.protocol import MAX_VERSION, MIN_VERSION, UNSET_DOUBLE, encode
from kit.gateway.state import Execution, Order, Position, WhatIf

#: An unset value of each kind, for readability of the long layouts below.
UNSET = None
NO = False
NONE = 0  # an empty count


@dataclass(frozen=True)
class Gated:
    """A field carried only by server versions ``low`` to ``high`` (inclusive)."""

    low: int
    high: int
    value: object


def since(version: int, value: object) -> Gated:
    return Gated(version, MAX_VERSION, value)


def until(version: int, value: object) -> Gated:
    return Gated(MIN_VERSION, version, value)


@dataclass(frozen=True)
class Message:
    name: str
    fields: tuple[str | Gated, ...]
    tag: str = ""

    def wire(self, version: int) -> list[str]:
        """The fields a connection speaking ``version`` gets."""
        return [
            f if isinstance(f, str) else encode(f.value)
            for f in self.fields
            if isinstance(f, str) or f.low <= version <= f.high
        ]


def _msg(name: str, *values: object, tag: str = "") -> Message:
    return Message(name, tuple(v if isinstance(v, Gated) else encode(v) for v in values), tag)


def _contract(inst: Instrument, exchange: str) -> tuple[object, ...]:
    """The 11 contract fields of openOrder, completedOrder and execDetails (no primaryExchange)."""
    return (inst.con_id, inst.symbol, inst.sec_type, inst.expiry, inst.strike, inst.right, inst.multiplier,
            exchange, inst.currency, inst.shown_local_symbol, inst.trading_class)  # fmt: skip


# session


def next_valid_id(order_id: int) -> Message:
    return _msg("nextValidId", 9, 1, order_id)


def managed_accounts(accounts: tuple[str, ...]) -> Message:
    return _msg("managedAccounts", 15, 1, ",".join(accounts))


def error(req_id: int, code: int, text: str) -> Message:
    """reqId is the order id or request id the error is about, -1 for notices; advancedOrderRejectJson (since
    166) is empty."""
    return _msg("error", 4, 2, req_id, code, text, since(166, ""), tag=str(code))


def current_time(t: datetime) -> Message:
    return _msg("currentTime", 49, 1, int(t.timestamp()))


# contracts and market data


def contract_details(req_id: int, inst: Instrument, exchange: str) -> Message:
    exchanges = inst.exchanges
    return _msg(
        "contractDetails", 10, until(163, 8), req_id,  # a version field until 163
        inst.symbol, inst.sec_type, inst.expiry, inst.strike, inst.right, exchange, inst.currency,
        inst.shown_local_symbol,
        inst.trading_class,  # marketName
        inst.trading_class, inst.con_id, inst.min_tick,
        until(163, 1), inst.multiplier,  # mdSizeMultiplier (until 163), multiplier
        "DAY,GTC,GTD,IOC,LMT,LOC,MIDPRICE,MKT,MOC,OPG,REL,RTH,STP,STPLMT,TRAIL,TRAILLMT",  # orderTypes
        ",".join(exchanges), 1, 0,  # validExchanges, priceMagnifier, underConId
        inst.long_name, inst.primary_exchange, inst.contract_month,
        "", "", "",  # industry, category, subcategory
        inst.time_zone, "", "",  # tradingHours, liquidHours
        "", UNSET,  # evRule, evMultiplier
        NONE,  # secIdList
        1, "", "",  # aggGroup, underSymbol, underSecType
        ",".join("26" for _ in exchanges),  # marketRuleIds
        "", "COMMON",  # realExpirationDate, stockType
        Gated(163, 163, 0.0001),  # sizeMinTick, at 163 only
        since(164, 0.0001), since(164, 0.0001), since(164, 100),  # min/increment/suggested size
    )  # fmt: skip


def contract_details_end(req_id: int) -> Message:
    return _msg("contractDetailsEnd", 52, 1, req_id)


def market_data_type(req_id: int) -> Message:
    return _msg("marketDataType", 58, 1, req_id, 1)  # 1: live


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> Message:
    return _msg("tickPrice", 1, 6, req_id, tick_type, price, size, 0)


def tick_snapshot_end(req_id: int) -> Message:
    return _msg("tickSnapshotEnd", 57, 1, req_id)


# orders


def open_order(order: Order, estimate: WhatIf | None = None, status: str | None = None) -> Message:
    """openOrder: 128 fields for a plain non-combo order. With an ``estimate`` it is the answer to a what-if:
    whatIf 1 and numeric margin and commission fields (ib_async float()s initMarginChange and completes the
    what-if request only when it is set). ``status`` overrides the order's (a step it went through)."""
    fields = order.type_fields
    status = status or order.status
    return _msg(
        "openOrder", 5, order.order_id, *_contract(order.instrument, order.exchange),
        order.action, order.quantity, order.order_type, order.limit_price, fields.aux_price,
        order.tif, "", order.account, "", 0,  # ocaGroup, account, openClose, origin
        order.order_ref, order.client_id, order.perm_id,
        fields.outside_rth, NO, 0.0, "", "",  # hidden, discretionaryAmt, goodAfterTime, sharesAllocation
        "", "", "", until(176, ""),  # faGroup, faMethod, faPercentage, faProfile (until 176)
        "", fields.good_till_date, "", UNSET, "",  # modelCode, rule80A, percentOffset, settlingFirm
        0, "", "", 0,  # shortSaleSlot, designatedLocation, exemptCode, auctionStrategy
        UNSET, UNSET, UNSET, UNSET, UNSET,  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
        UNSET, NO, NO, NO, UNSET, 3,  # displaySize, blockOrder, sweepToFill, allOrNone, minQty, ocaType
        NO, NO, UNSET, 0, 0,  # eTradeOnly, firmQuoteOnly, nbboPriceCap, parentId, triggerMethod
        UNSET, UNSET, "", UNSET,  # volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
        NO, UNSET, *_trail(order), UNSET, UNSET,  # continuousUpdate, referencePriceType, basisPoints(Type)
        "", NONE, NONE, NONE,  # comboLegsDescrip, comboLegs, orderComboLegs, smartComboRoutingParams
        UNSET, UNSET, UNSET,  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        NO, "", "", NO, NO,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutral
        *_algo(order),
        NO, estimate is not None, status,  # solicited, whatIf, status
        *_estimate(order, estimate),  # margins before, change, after; commission ... warningText
        NO, NO,  # randomizeSize, randomizePrice
        NONE,  # conditions
        # adjusted order fields: adjustedOrderType, triggerPrice, then trailStopPrice again (IB's clients
        # read it twice, the second last), lmtPriceOffset, adjustedStop(Limit)Price, trailing amount, unit
        "", UNSET, _trail(order)[0], fields.lmt_price_offset, UNSET, UNSET, UNSET, 0,
        "", "", "",  # softDollarTier
        UNSET, NO, NO, NO, NO,  # cashQty, dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpTo, PMA
        since(158, UNSET), since(160, NO), since(162, NO),  # duration, postToAts, autoCancelParent
        *_peg_best_offsets(),
        tag=status,
    )  # fmt: skip


def _estimate(order: Order, estimate: WhatIf | None) -> tuple[object, ...]:
    """openOrder's 14 what-if fields: unset for an order, IB's OrderState values for a what-if."""
    if estimate is None:
        return (*[""] * 9, UNSET, UNSET, UNSET, "", "")
    margins = (estimate.init_margin, estimate.maint_margin, estimate.equity_with_loan)
    before = [m[0] for m in margins]
    after = [m[1] for m in margins]
    change = [round(a - b, 2) for b, a in zip(before, after, strict=True)]
    fee = estimate.commission
    return (*before, *change, *after, fee, fee, fee, order.instrument.currency, "")  # warningText


def order_status(order: Order, status: str | None = None) -> Message:
    """orderStatus (no version field); clientId is the placing client's. ``status`` overrides the order's."""
    status = status or order.status
    return _msg(
        "orderStatus", 3, order.order_id, status, order.filled, order.remaining,
        order.avg_fill_price, order.perm_id, 0, order.last_fill_price, order.client_id, "", 0.0,
        tag=status,
    )  # fmt: skip


def open_order_end() -> Message:
    return _msg("openOrderEnd", 53, 1)


def _peg_best_offsets() -> tuple[Gated, ...]:
    """minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole, midOffsetAtHalf: since 170."""
    return tuple(since(170, UNSET) for _ in range(5))


def completed_order(order: Order, completed_time: str) -> Message:
    """completedOrder: 97 fields at 176, no orderId and no clientId (clients key it by permId)."""
    fields = order.type_fields
    return _msg(
        "completedOrder", 101, *_contract(order.instrument, order.exchange),
        order.action, order.quantity, order.order_type, order.limit_price, fields.aux_price,
        order.tif, "", order.account, "", 0,  # ocaGroup, account, openClose, origin
        order.order_ref, order.perm_id,
        fields.outside_rth, NO, 0.0, "",  # hidden, discretionaryAmt, goodAfterTime
        "", "", "", until(176, ""),  # faGroup, faMethod, faPercentage, faProfile (until 176)
        "", fields.good_till_date, "", UNSET, "",  # modelCode, rule80A, percentOffset, settlingFirm
        0, "", "",  # shortSaleSlot, designatedLocation, exemptCode
        UNSET, UNSET, UNSET, UNSET, UNSET,  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
        UNSET, NO, NO, UNSET, 3, 0,  # displaySize, sweepToFill, allOrNone, minQty, ocaType, triggerMethod
        UNSET, UNSET, "", UNSET,  # volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
        NO, UNSET, *_trail(order),  # continuousUpdate, referencePriceType
        "", NONE, NONE, NONE,  # comboLegsDescrip, comboLegs, orderComboLegs, smartComboRoutingParams
        UNSET, UNSET, UNSET,  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "", "", "", NO, NO,  # hedgeType, clearingAccount, clearingIntent, notHeld, deltaNeutral
        *_algo(order), NO, order.status,  # solicited, status
        NO, NO, NONE,  # randomizeSize, randomizePrice, conditions
        _trail(order)[0], fields.lmt_price_offset, UNSET, NO, NO,  # cashQty, dontUseAutoPrice.., isOms..
        "", order.filled, 0, NO, "",  # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent..
        NO, NO, UNSET,  # imbalanceOnly, routeMarketableToBbo, parentPermId
        completed_time, order.reason,
        *_peg_best_offsets(),
        tag=order.status,
    )  # fmt: skip


def _trail(order: Order) -> tuple[object, object]:
    """trailStopPrice (where a trailing stop's stop is now) and trailingPercent."""
    fields = order.type_fields
    trigger = order.trigger
    if trigger is not None and trigger.order_type in ("TRAIL", "TRAIL LIMIT") and trigger.stop is not None:
        return round(trigger.stop, 8), fields.trailing_percent
    return fields.trail_stop_price, fields.trailing_percent


def _algo(order: Order) -> tuple[object, ...]:
    """algoStrategy, then (when set) the count and tag/value pairs of algoParams."""
    fields = order.type_fields
    if not fields.algo_strategy:
        return ("",)
    pairs = [field for pair in fields.algo_params for field in pair]
    return (fields.algo_strategy, len(fields.algo_params), *pairs)


def completed_orders_end() -> Message:
    return _msg("completedOrdersEnd", 102)


# executions


def exec_details(req_id: int, e: Execution, time: str) -> Message:
    """execDetails: exactly 31 fields (32 since 178), no version field; reqId -1 for live fills. Contract and
    execution both carry the venue that filled it (ISLAND, ARCA, ... for a SMART order)."""
    o = e.order
    return _msg(
        "execDetails", 11, req_id, o.order_id, *_contract(o.instrument, e.exchange),
        e.exec_id, time, o.account, e.exchange, e.side, e.shares, e.price, o.perm_id,
        o.client_id, 0, e.cum_qty, e.avg_price, o.order_ref, "", UNSET, "",  # evRule, evMultiplier, model
        e.liquidity,  # lastLiquidity: 1 added, 2 removed
        since(178, NO),  # pendingPriceRevision
    )  # fmt: skip


def exec_details_end(req_id: int) -> Message:
    return _msg("execDetailsEnd", 55, 1, req_id)


def commission_report(e: Execution) -> Message:
    """commissionReport: exactly 8 fields; realizedPNL unset (max double) for opening executions."""
    pnl = UNSET_DOUBLE if e.realized_pnl is None else e.realized_pnl
    return _msg(
        "commissionReport", 59, 1, e.exec_id, e.commission, e.order.instrument.currency, pnl, UNSET_DOUBLE, ""
    )


# positions and account


def position(p: Position) -> Message:
    """position: exactly 16 fields."""
    inst = p.instrument
    return _msg(
        "position", 61, 3, p.account, inst.con_id, inst.symbol, inst.sec_type, inst.expiry, inst.strike,
        inst.right, inst.multiplier, inst.primary_exchange, inst.currency, inst.shown_local_symbol,
        inst.trading_class, p.quantity,
        round(p.avg_cost * inst.units, 8),
    )  # fmt: skip


def position_end() -> Message:
    return _msg("positionEnd", 62, 1)


def portfolio(p: Position, market_price: float) -> Message:
    """updatePortfolio: exactly 20 fields."""
    inst = p.instrument
    value = p.quantity * market_price * inst.units
    return _msg(
        "updatePortfolio", 7, 8, inst.con_id, inst.symbol, inst.sec_type, inst.expiry, inst.strike,
        inst.right, inst.multiplier, inst.primary_exchange, inst.currency, inst.shown_local_symbol,
        inst.trading_class, p.quantity, market_price,  # a future's average cost is per contract
        round(value, 2), round(p.avg_cost * inst.units, 8),
        round(value - p.quantity * p.avg_cost * inst.units, 2),
        round(p.realized_pnl * inst.units, 2), p.account,
    )  # fmt: skip


def account_value(tag: str, value: str, currency: str, account: str) -> Message:
    return _msg("updateAccountValue", 6, 2, tag, value, currency, account)


def account_time(t: datetime) -> Message:
    return _msg("updateAccountTime", 8, 1, t.strftime("%H:%M"))


def account_download_end(account: str) -> Message:
    return _msg("accountDownloadEnd", 54, 1, account)


def account_update_multi(req_id: int, account: str, tag: str, value: str, currency: str) -> Message:
    return _msg("accountUpdateMulti", 73, 1, req_id, account, "", tag, value, currency)


def account_update_multi_end(req_id: int) -> Message:
    return _msg("accountUpdateMultiEnd", 74, 1, req_id)


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Message:
    return _msg("accountSummary", 63, 1, req_id, account, tag, value, currency)


def account_summary_end(req_id: int) -> Message:
    return _msg("accountSummaryEnd", 64, 1, req_id)
