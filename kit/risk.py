"""Pre-trade risk checks. Pure: a plan's orders, positions and prices in; a verdict per order out.

An order that breaks a limit never reaches the broker; it is recorded as REJECTED with the limit that
stopped it. A limit that needs a price fails closed when no price is known: a check that cannot be made is
not a check that passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from kit.model import OrderIntent, Side
from kit.order_types import priced_at_limit


@dataclass(frozen=True)
class RiskLimits:
    """None disables a limit. Built and checked by the configuration layer (kit.config.risk_limits: kit.toml
    [risk], KIT_RISK_*, a call's risk={...}); this module only applies them."""

    max_order_notional: float | None = None
    max_order_quantity: float | None = None
    max_gross_notional: float | None = None  # per run, summed over the orders that pass
    max_position: float | None = None  # |position after the order| per symbol, in shares
    allowed_symbols: frozenset[str] | None = None
    collar: float | None = None  # a limit price may be at most this fraction away from the reference
    max_orders: int | None = None
    # A notional limit someone set refuses an order it cannot price; the default fat-finger limits (set by
    # nobody) check the orders that have a price and let the others through, or IB orders without a
    # decision_price, which get their price only at submission, could never be sent.
    price_required: bool = True

    def active(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "price_required" and getattr(self, f.name) is not None}


def signed(order: OrderIntent) -> float:
    return order.quantity if order.side is Side.BUY else -order.quantity


def order_price(order: OrderIntent, prices: Mapping[str, float]) -> float | None:
    """The price a notional is computed at: the limit of a limit order (LMT, LOC, STP LMT), else the
    decision price, else the reference; a stop without either, at its stop price. A MIDPRICE or REL cap
    bounds the price without setting it, so those go at the reference too."""
    limit = order.limit_price if priced_at_limit(order.order_type) else None
    for candidate in (limit, order.decision_price, prices.get(order.symbol), order.stop_price):
        if candidate is not None and math.isfinite(candidate) and candidate > 0:
            return float(candidate)
    return None


def check(orders: list[OrderIntent], limits: RiskLimits, positions: Mapping[str, float],
          prices: Mapping[str, float]) -> list[list[str]]:
    """One list of breaches per order ([] = passes), in order. Orders are checked in sequence, so the run's
    gross notional and the position limit see the orders before them that passed."""
    verdicts: list[list[str]] = []
    gross = 0.0
    position = dict(positions)
    passed = 0
    for order in orders:
        breaches = []
        price = order_price(order, prices)
        notional = None if price is None else order.quantity * price
        # A NaN reference (a prices Series with a gap) would make the collar distance NaN and pass: skip it.
        reference = next((p for p in (prices.get(order.symbol), order.decision_price)
                          if p is not None and math.isfinite(p) and p > 0), None)
        if limits.allowed_symbols is not None and order.symbol not in limits.allowed_symbols:
            breaches.append(f"allowed_symbols: {order.symbol} is not allowed")
        if limits.max_order_quantity is not None and order.quantity > limits.max_order_quantity:
            breaches.append(f"max_order_quantity: {order.quantity:g} > {limits.max_order_quantity:g}")
        needs_price = (limits.max_order_notional, limits.max_gross_notional)
        if notional is None and limits.price_required and any(limit is not None for limit in needs_price):
            breaches.append("no price to check notional limits against (give decision_price or prices)")
        if notional is not None and limits.max_order_notional is not None \
                and notional > limits.max_order_notional:
            breaches.append(f"max_order_notional: {notional:,.2f} > {limits.max_order_notional:,.2f}")
        if notional is not None and limits.max_gross_notional is not None \
                and gross + notional > limits.max_gross_notional:
            breaches.append(f"max_gross_notional: run total {gross + notional:,.2f} > "
                            f"{limits.max_gross_notional:,.2f}")
        after = position.get(order.symbol, 0.0) + signed(order)
        if limits.max_position is not None and abs(after) > limits.max_position:
            breaches.append(f"max_position: {order.symbol} position would be {after:g}, limit "
                            f"{limits.max_position:g}")
        if limits.collar is not None and order.limit_price is not None:
            distance = abs(order.limit_price / reference - 1) if reference else None
            if distance is None:
                breaches.append("collar: no reference price to check the limit price against")
            elif distance > limits.collar:
                breaches.append(f"collar: limit {order.limit_price:g} is {distance:.1%} from the reference "
                                f"{reference:g} (max {limits.collar:.1%})")
        if limits.max_orders is not None and passed >= limits.max_orders and not breaches:
            breaches.append(f"max_orders: more than {limits.max_orders} orders in one run")
        if not breaches:
            passed += 1
            gross += notional or 0.0
            position[order.symbol] = after
        verdicts.append(breaches)
    return verdicts
