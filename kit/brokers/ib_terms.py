"""The terms of an order that an IB modify changes, read back from IB's openOrder: how kit tells that IB
took an amendment (kit.brokers.ib) and that an order was changed elsewhere (in TWS, or by a modify whose
answer a crash lost).

Each order type carries its amendable terms in its own IB fields (kit.order_types.ib_price_fields): a
STP's stop is auxPrice; a TRAIL's auxPrice is its trailing amount (or trailingPercent its percent) and a
TRAIL LIMIT's lmtPriceOffset its limit offset; a REL's auxPrice is its peg offset. Two terms are compared
only while an amendment of them awaits IB's answer: a trailing stop's trailStopPrice, which IB moves with
the market (`_stop_taken`), and the tif, a word among the prices (compared as its place in kit's TIFS).
"""

from __future__ import annotations

from typing import Any

from kit.order_types import TIFS, TRAILING, ib_price_fields

TIF_CODES = {tif: float(place) for place, tif in enumerate(TIFS, start=1)}


def compared(order_type: str) -> dict[str, str]:
    """The terms an openOrder is always compared on, by order type: its quantity and the price fields kit
    sends (kit.order_types.ib_price_fields), but for a trailing order its stop (IB moves it) and a TRAIL
    LIMIT's lmtPrice (IB derives it from the moving stop and the offset)."""
    fields = {"quantity": "totalQuantity", **ib_price_fields(order_type)}
    if order_type in TRAILING:
        del fields["stop_price"], fields["limit_price"]
    return fields


def _while_pending(order_type: str) -> frozenset[str]:
    return frozenset({"tif", "stop_price"}) if order_type in TRAILING else frozenset({"tif"})


def wanted_terms(order_type: str, changes: dict[str, Any]) -> dict[str, float]:
    """The terms an openOrder must show for IB to have taken these changes."""
    names = set(compared(order_type)) | _while_pending(order_type)
    return {name: TIF_CODES[value] if name == "tif" else float(value) for name, value in changes.items()
            if name in names}


def intent_terms(intent: Any) -> dict[str, float]:
    """The terms the ledger has an order working on, as an openOrder would show them."""
    values = {name: getattr(intent, name, None) for name in compared(intent.order_type)}
    return {name: float(value) for name, value in values.items() if value is not None}


def terms(order: Any, pending: dict[str, float] | None = None, stop_before: float | None = None,
          ) -> dict[str, float]:
    """An openOrder's terms, in kit's names; IB's unset values left out. `pending`: the terms an amendment
    awaiting IB's answer wants, so the ones compared only then are read too; `stop_before`: a trailing
    stop's trailStopPrice as IB listed it when kit asked to move it."""
    kind = getattr(order, "orderType", "")
    found = {}
    for name, field in compared(kind).items():
        value = price(getattr(order, field, None))
        if value is not None:
            found[name] = value
    pending = pending or {}
    if "tif" in pending and getattr(order, "tif", "") in TIF_CODES:
        found["tif"] = TIF_CODES[order.tif]
    stop = price(getattr(order, "trailStopPrice", None))
    if "stop_price" in pending and kind in TRAILING and stop is not None:
        found["stop_price"] = pending["stop_price"] if _stop_taken(
            stop, pending["stop_price"], stop_before, getattr(order, "action", "")) else stop
    return found


def _stop_taken(stop: float, asked: float, before: float | None, action: str) -> bool:
    """Whether IB's trailStopPrice shows the stop kit asked for, given that IB trails it on (a SELL's up, a
    BUY's down) once taken. A stop moved tighter is taken when IB's is there or beyond. One moved looser
    cannot be told from the old stop once IB's is back at or past that one, so only a stop between the
    asked and the old one shows it taken."""
    sign = 1 if action == "SELL" else -1
    beyond = sign * (stop - asked) >= 0
    looser = before is not None and sign * (asked - before) < 0
    return beyond and (not looser or sign * (stop - before) < 0)


def price(value: Any) -> float | None:
    """IB marks a missing price with nan, -1 or its unset value (1.7976931348623157e308)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 1e300 else None
