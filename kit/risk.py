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

from kit.errors import CurrencyError
from kit.instruments import Money, convert, key_of, notional, units
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
    # The currency the money limits are in, and the user's rates into it ({"EUR": 1.08}: 1 EUR = 1.08 of
    # it). A limit someone set refuses an order in another currency without a rate; the default guard
    # (price_required False) applies its amounts in each order's own currency.
    currency: str = "USD"
    fx_rates: Mapping[str, float] | None = None

    def active(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("price_required", "currency", "fx_rates")
                and getattr(self, f.name) is not None}


def signed(order: OrderIntent) -> float:
    return order.quantity if order.side is Side.BUY else -order.quantity


def reference_price(order: OrderIntent, prices: Mapping[str, float], key: str | None = None) -> float | None:
    """The order's instrument in `prices`: by its key (kit.instruments.instrument_key), a future also by its
    local symbol or plain symbol (one price series for the root); an option only by its own key. `key`: the
    order's key, if the caller keeps it (deriving it is most of the cost)."""
    return _reference(order, key_of(order) if key is None else key, prices)


def _reference(order: OrderIntent, key: str, prices: Mapping[str, float]) -> float | None:
    """reference_price, given the order's key."""
    names = (key, order.local_symbol, order.symbol) if order.sec_type == "FUT" else (key,)
    for name in names:
        price = prices.get(name) if name else None
        if price is not None:
            return price
    return None


def _usable(price: float | None) -> float | None:
    """The price itself if it can value an order (finite, > 0), else None: a NaN from a prices Series with
    a gap is no price."""
    return price if price is not None and math.isfinite(price) and price > 0 else None


def order_price(order: OrderIntent, prices: Mapping[str, float]) -> float | None:
    """The price a notional is computed at: the limit of a limit order (LMT, LOC, STP LMT), else the
    decision price, else the reference; a stop without either, at its stop price. A MIDPRICE or REL cap
    bounds the price without setting it, so those go at the reference too."""
    return _priced(order, reference_price(order, prices))


def _priced(order: OrderIntent, reference: float | None) -> float | None:
    """order_price, given the order's reference price."""
    limit = order.limit_price if priced_at_limit(order.order_type) else None
    for candidate in (limit, order.decision_price, reference, order.stop_price):
        if (usable := _usable(candidate)) is not None:
            return float(usable)
    return None


def check(orders: list[OrderIntent], limits: RiskLimits, positions: Mapping[str, float],
          prices: Mapping[str, float]) -> list[tuple[str, ...]]:
    """One tuple of breaches per order (() = passes), in order. Orders are checked in sequence, so the run's
    gross notional and the position limit see the orders before them that passed."""
    verdicts: list[tuple[str, ...]] = []
    gross = Money()  # per currency under the default guard; in limits.currency otherwise
    position = dict(positions)
    passed = 0
    uses_money = limits.max_order_notional is not None or limits.max_gross_notional is not None
    # Prices and money only for the limits that read them (none with the fat-finger guard turned off).
    uses_reference = uses_money or limits.collar is not None
    for order in orders:
        breaches = []
        key = key_of(order)
        quoted = _reference(order, key, prices) if uses_reference else None
        local = notional_ = None
        unit = limits.currency if limits.price_required else order.currency
        if uses_money:
            local = notional(order.quantity, _priced(order, quoted), units(order))
            try:  # the notional in the limits' currency
                notional_ = None if local is None else convert(local, order.currency, unit, limits.fx_rates,
                                                               key)
            except CurrencyError as exc:
                breaches.append(str(exc))
        if limits.allowed_symbols is not None and not {order.symbol, key} & limits.allowed_symbols:
            breaches.append(f"allowed_symbols: {key} is not allowed")
        if limits.max_order_quantity is not None and order.quantity > limits.max_order_quantity:
            breaches.append(f"max_order_quantity: {order.quantity:g} > {limits.max_order_quantity:g}")
        if local is None and limits.price_required and uses_money:
            breaches.append(f"no multiplier for {key} to check notional limits against (give multiplier, or "
                            "let the broker qualify the contract)" if units(order) is None else
                            "no price to check notional limits against (give decision_price or prices)")
        if notional_ is not None and limits.max_order_notional is not None \
                and notional_ > limits.max_order_notional:
            breaches.append(f"max_order_notional: {notional_:,.2f} > {limits.max_order_notional:,.2f}")
        if notional_ is not None and limits.max_gross_notional is not None:
            run_total = gross.totals.get(unit, 0.0) + notional_
            if run_total > limits.max_gross_notional:
                breaches.append(f"max_gross_notional: run total {run_total:,.2f} > "
                                f"{limits.max_gross_notional:,.2f}")
        if limits.max_position is not None:
            after = position.get(key, 0.0) + signed(order)
            if abs(after) > limits.max_position:
                breaches.append(f"max_position: {key} position would be {after:g}, limit "
                                f"{limits.max_position:g}")
        if limits.collar is not None and order.limit_price is not None:
            reference = _usable(quoted) or _usable(order.decision_price)
            distance = abs(order.limit_price / reference - 1) if reference else None
            if distance is None:
                breaches.append("collar: no reference price to check the limit price against")
            elif distance > limits.collar:
                breaches.append(f"collar: limit {order.limit_price:g} is {distance:.1%} from the reference "
                                f"{reference:g} (max {limits.collar:.1%})")
        if limits.max_orders is not None and passed >= limits.max_orders and not breaches:
            breaches.append(f"max_orders: more than {limits.max_orders} orders in one run")
        if not breaches:  # the run's totals, kept only for the limits that read them
            passed += 1
            if limits.max_gross_notional is not None:
                gross.add(notional_ or 0.0, unit)
            if limits.max_position is not None:
                position[key] = after
        verdicts.append(tuple(breaches))  # a passing order's is the one empty tuple, nothing to collect
    return verdicts
