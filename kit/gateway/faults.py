"""Fault knobs: the ways a real IB gateway misbehaves, switchable per test and at runtime.

Every knob reproduces an IB behaviour that client code must survive (wire-protocol reference, section 6).
Set them in ``GatewayConfig(faults=Faults(...))`` or change them on a running gateway (``gw.faults.x = ...``;
each gateway works on its own copy of the configured knobs).
The two disconnect knobs are one-shot: they disarm themselves when they fire, so the client can reconnect.
A gateway restart is not a knob but an action: ``Gateway.restart()``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

#: Which orders to drop: a collection of orderRefs, a predicate on the orderRef, or a probability.
DropRule = Collection[str] | Callable[[str], bool] | float


@dataclass
class Faults:
    #: Deliver this many more outbound messages (on any connection), then close the connection that would
    #: carry the next one instead of sending it.
    disconnect_after_messages: int | None = None
    #: Close the connection when this event happens: an outbound message name ('execDetails'), optionally
    #: with its status or error code ('orderStatus:Filled', 'error:201'), or an inbound request name
    #: ('placeOrder'). An outbound message is not delivered; an inbound request still takes effect in the
    #: gateway, but none of its replies are delivered.
    disconnect_on: str | None = None
    #: Send each commissionReport this many seconds after its execution.
    commission_delay: float = 0.0
    #: Send each commissionReport before its execDetails (clients then drop it: the execId is unknown).
    commission_before_execution: bool = False
    #: Send every live execDetails twice, same execId.
    duplicate_exec_details: bool = False
    #: Follow every execution ``...01`` by a correction ``...02`` of it at a price one tick better.
    correct_executions: bool = False
    #: Accept matching placeOrder requests silently and never act on them or reply.
    drop_orders: DropRule = field(default_factory=frozenset)
    #: Never send execDetailsEnd (ib_insync's connect() then times out).
    withhold_exec_details_end: bool = False
    #: When a working order is cancelled, fill one more slice after reporting it Cancelled.
    fill_after_cancel: bool = False
    #: After rejecting an order (201, 10311), also report it with orderStatus Inactive.
    inactive_after_reject: bool = False
    #: Matching orders (a DropRule, like drop_orders) are reported Inactive with no error, as IB does for an
    #: order that cannot work now: they stay open and cancellable but never fill.
    bare_inactive: DropRule = field(default_factory=frozenset)
    #: Warn every accepted order with 10349 ("Order TIF was set to DAY based on order preset"); it keeps
    #: working and fills (ib_async marks it Cancelled locally: 10349 is not in its warning list).
    tif_preset_notice: bool = False
    #: Refuse a limit price off the instrument's tick with 110 (no order is created).
    reject_off_tick: bool = False
    #: Refuse a quantity that is not whole shares with 321 (no order is created).
    reject_fractional_size: bool = False
    #: TWS's login time zone: execution and completed times, and the connect reply's time, are in it.
    time_zone: str = "UTC"
    #: Execution times without the zone name (``20261201 09:30:00``), as some TWS versions send them.
    zoneless_times: bool = False
    #: Partial fills of one order share ``prefix.seq`` and count the part: ``….01.01``, ``….02.01``, ...
    #: (off: each execution has its own seq). A correction still raises the last number.
    exec_id_parts: bool = False
    #: The close auction's order cut-off has passed (IB: 15:50 ET on NYSE and NASDAQ): new MOC and LOC
    #: orders are refused with 201. Running the close auction has the same effect.
    past_close_cutoff: bool = False
    #: The opening auction's cut-off has passed (IB: 09:28 ET): new tif OPG orders are refused with 201.
    past_open_cutoff: bool = False

    def drops(self, order_ref: str, rng: random.Random) -> bool:
        return _matches(self.drop_orders, order_ref, rng)

    def goes_inactive(self, order_ref: str, rng: random.Random) -> bool:
        return _matches(self.bare_inactive, order_ref, rng)

    def trips(self, name: str, tag: str = "") -> bool:
        """Does this event fire ``disconnect_on``? Disarms the knob when it does."""
        if self.disconnect_on is None or self.disconnect_on not in (name, f"{name}:{tag}"):
            return False
        self.disconnect_on = None
        return True

    def counts_down(self) -> bool:
        """Count one outbound message; True when it is the one that must close the connection instead."""
        if self.disconnect_after_messages is None:
            return False
        if self.disconnect_after_messages <= 0:
            self.disconnect_after_messages = None
            return True
        self.disconnect_after_messages -= 1
        return False


def _matches(rule: DropRule, order_ref: str, rng: random.Random) -> bool:
    if callable(rule):
        return bool(rule(order_ref))
    if isinstance(rule, float | int):
        return rng.random() < rule
    if isinstance(rule, str):  # one orderRef, not a collection of its characters
        return order_ref == rule
    return order_ref in rule
