"""IB's raw messages -> kit's normalized events. Pure: no sockets, no clock, no client library.

kit taps IB's messages before ib_async/ib_insync interpret them, because those libraries drop a commission
that arrives before its execution, drop a repeated or corrected execution's context, and mark an order
Cancelled on any error. Here an order is cancelled only when IB's own status says so; quantities come only
from executions, checked against IB's own cumulative figures; what an error code does to an order is
IB's table (kit.brokers.ib_codes).

Besides events, a translation can ask the shell for something only a request to IB can answer: a LookUp
(list IB's orders, then `looked_up`) or a RecheckExecutions (ask for the order's executions again, then
`rechecked`). The translator decides; the shell only asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kit.brokers.base import Notice
from kit.brokers.ib_codes import REQUEST_CODES, Meaning, meaning, refuses_modify
from kit.errors import UntranslatableMessage
from kit.model import (
    Accepted,
    AmendAccepted,
    AmendRefused,
    BrokerEvent,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Fill,
    Rejected,
    StatusUpdate,
)

# IB's order statuses (TWS API documentation, "Order Status": interactivebrokers.github.io/tws-api/
# order_submission.html). IB has the order once it is PreSubmitted, Submitted, PendingCancel, Filled or
# Inactive (received, not working now); PendingSubmit and ApiPending are not yet at IB; Cancelled and
# ApiCancelled (cancelled before it was transmitted) are final.
ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted", "PendingCancel", "Filled", "Inactive"})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
NOT_YET_AT_IB = frozenset({"PendingSubmit", "ApiPending"})
STATUSES = ACKNOWLEDGED | CANCELLED | NOT_YET_AT_IB
FINAL_AT_IB = frozenset({"Filled"}) | CANCELLED  # IB's filled figure is then final
UNSET_DOUBLE = 1.7976931348623157e308
QUANTITY_TOLERANCE = 1e-9  # IB sends quantities as decimals; kit keeps floats


@dataclass(frozen=True, slots=True)
class LookUp:
    """List IB's open and completed orders, then call Translator.looked_up. With `refusal`, an order IB
    does not list after that was refused by the error in it."""

    client_order_id: str
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class RecheckExecutions:
    """Ask IB for the order's executions again (reqExecutions filtered by `symbol`), then call
    Translator.rechecked: kit's sum disagreed with IB's cumulative figures."""

    client_order_id: str
    symbol: str = ""


Request = LookUp | RecheckExecutions
Translated = list[BrokerEvent | Request]


def split_exec_id(exec_id: str) -> tuple[str, int]:
    """IB's exec ids are `prefix.seq.part.revision`; only the part after the LAST period is a revision
    ("…01.01", then its correction "…01.02"): (key, revision)."""
    base, _, last = exec_id.rpartition(".")
    if base and last.isdigit():
        return base, int(last)
    return exec_id, 0


# ---- times -------------------------------------------------------------------------------------------
# Abbreviations TWS may print instead of an IANA name; each maps to the zone whose rules it belongs to.
ZONE_ABBREVIATIONS = {
    "EST": "America/New_York", "EDT": "America/New_York", "CST": "America/Chicago",
    "CDT": "America/Chicago", "MST": "America/Denver", "MDT": "America/Denver",
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "GMT": "UTC", "UTC": "UTC",
    "BST": "Europe/London", "CET": "Europe/Berlin", "CEST": "Europe/Berlin", "MET": "Europe/Berlin",
    "EET": "Europe/Helsinki", "EEST": "Europe/Helsinki", "HKT": "Asia/Hong_Kong", "JST": "Asia/Tokyo",
}  # fmt: skip


def zone(name: str) -> tzinfo | None:
    """A TWS zone name (IANA, "US/Eastern", or an abbreviation such as "EST") as a zone; None if unknown."""
    name = name.strip()
    if not name:
        return None
    if name in ZONE_ABBREVIATIONS:
        return ZoneInfo(ZONE_ABBREVIATIONS[name])
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def connection_zone(connection_time: str) -> str:
    """The zone name in the connect reply's time ("20261201 09:30:00 US/Eastern" -> "US/Eastern"): TWS's
    login zone, the zone of every execution time it sends without a name. "" when it names none."""
    parts = connection_time.strip().split(" ", 2)
    return parts[2].strip() if len(parts) == 3 else ""


def connect_reply_zone(data: bytes) -> str | None:
    """The zone name in TWS's connect reply, read from a connection's first bytes (a length-prefixed
    message of two fields: server version, time); None until the whole reply is there."""
    if len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        return None
    fields = data[4:4 + int.from_bytes(data[:4], "big")].split(b"\0")
    return connection_zone(fields[1].decode(errors="replace")) if len(fields) > 1 else ""


def execution_time(text: str, tws_zone: tzinfo | None) -> datetime:
    """IB's execution time as naive UTC. IB writes it three ways: "20261201 09:30:00 US/Eastern" (named),
    "20261201-14:30:00" (UTC, the dash form) and "20261201 09:30:00" (TWS's login zone, unnamed); also
    epoch seconds. A time kit cannot place in a zone is untranslatable, never read as the host's zone."""
    text = text.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC).replace(tzinfo=None)
    if text[8:9] == "-":
        return _parse(text[:8] + text[9:].strip(), text)
    day, _, rest = text.partition(" ")
    clock, _, name = rest.strip().partition(" ")
    local = _parse(day + clock, text)
    where = zone(name) if name else tws_zone
    if where is None:
        why = f"zone {name!r} is unknown" if name else "it names no zone and TWS's zone is unknown"
        raise UntranslatableMessage(f"IB execution time {text!r}: {why}")
    return local.replace(tzinfo=where).astimezone(UTC).replace(tzinfo=None)


def _parse(digits: str, text: str) -> datetime:
    try:
        return datetime.strptime(digits, "%Y%m%d%H:%M:%S")
    except ValueError:
        raise UntranslatableMessage(f"IB execution time {text!r} is in no format IB uses") from None


def naive_utc(moment: datetime | str | None, default: datetime) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return default


# ---- one order's figures -----------------------------------------------------------------------------
@dataclass
class Figures:
    """One order as IB describes it, next to what kit counted from its executions."""

    # execution key -> (IB's base of its exec ids, revision, shares): what the core counts
    counted: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    cum_qty: float | None = None  # execDetails cumQty of the latest execution IB sent
    filled: float | None = None  # orderStatus filled, latest
    filled_final: bool = False  # that orderStatus called the order done (an openOrder carries no figures)
    remaining: float | None = None
    status: str = ""  # IB's latest status word
    why_held: str = ""
    symbol: str = ""
    refusal: str = ""  # the latest error IB sent about the order, other than a notice
    rechecking: bool = False
    # Flagged while the order works, and again once IB calls it done: at most two notices per order.
    flagged: set[bool] = field(default_factory=set)

    @property
    def final(self) -> bool:
        return self.status in FINAL_AT_IB

    @property
    def total(self) -> float:
        return math.fsum(shares for _, _, shares in self.counted.values())

    def disagreement(self) -> str | None:
        """How IB's own cumulative figures differ from kit's sum of executions, or None.

        cumQty is the order's total after the latest execution. orderStatus may lag (IB does not send one
        for every change), so its `filled` disagrees only when above kit's sum, or once IB calls the order
        done."""
        total = self.total
        if self.cum_qty is not None and abs(self.cum_qty - total) > QUANTITY_TOLERANCE:
            return f"execDetails cumQty {self.cum_qty:g}"
        if self.filled is not None and (self.filled > total + QUANTITY_TOLERANCE or (
                self.filled_final and abs(self.filled - total) > QUANTITY_TOLERANCE)):
            return f"orderStatus {self.status or '?'} filled {self.filled:g}"
        return None

    @property
    def filled_at_ib(self) -> bool:
        return self.status == "Filled" or (self.remaining == 0 and bool(self.filled))


@dataclass
class Translator:
    """Maps IB's ids to client_order_ids and turns messages about tracked orders into kit events.

    Only orders the current run tracks produce events: other runs' orders on the same account are ignored,
    and so are commissions of their executions.
    """

    client_id: int
    tracked: set[str] = field(default_factory=set)
    # orderIds this process placed on the current connection: the only ones that identify an order, since a
    # restarted gateway or another process on this clientId hands the same ids out again.
    by_order_id: dict[int, str] = field(default_factory=dict)
    by_perm_id: dict[int, str] = field(default_factory=dict)
    order_id_of: dict[str, int] = field(default_factory=dict)
    perm_id_of: dict[str, int] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # tracked orders IB showed us in any message
    foreign_execs: set[str] = field(default_factory=set)
    figures: dict[str, Figures] = field(default_factory=dict)
    exec_keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # exec_id -> (key, revision)
    foreign_perm_ids: set[int] = field(default_factory=set)  # orders IB listed under another orderRef
    highest_order_id: int = 0  # the highest orderId IB showed for this clientId, whoever placed it
    # Modifications awaiting IB's answer: client_order_id -> (the terms as IB lists them, kit's changes,
    # the amendment's revision). An openOrder with those terms accepts it; an error about it refuses it.
    amending: dict[str, tuple[dict[str, float], dict, int]] = field(default_factory=dict)
    # The terms kit last knew each order to work on, and how many amendments that took: an openOrder listing
    # other terms (a modify whose answer a crash lost, or one made in TWS) is adopted as an amendment.
    known_terms: dict[str, tuple[dict[str, float], int]] = field(default_factory=dict)

    def track(self, client_order_ids: set[str] | list[str]) -> None:
        self.tracked.update(client_order_ids)

    def placed(self, client_order_id: str, order_id: int) -> None:
        self.tracked.add(client_order_id)
        self.by_order_id[order_id] = client_order_id
        self._learn(client_order_id, order_id, 0, self.client_id)

    def of(self, coid: str) -> Figures:
        return self.figures.setdefault(coid, Figures())

    def filled_at_ib(self, coid: str) -> bool:
        """IB reports the order filled: nothing is left to cancel, whatever kit counted."""
        return coid in self.figures and self.figures[coid].filled_at_ib

    def new_connection(self) -> None:
        """orderIds of an earlier connection may be handed out again: they no longer identify an order."""
        self.by_order_id.clear()

    def _learn(self, coid: str, order_id: int, perm_id: int, client_id: int) -> None:
        if order_id > 0 and client_id == self.client_id:
            self.order_id_of[coid] = order_id  # what a cancel from this clientId names
        if perm_id > 0:
            self.by_perm_id[perm_id] = coid
            self.perm_id_of[coid] = perm_id

    def _resolve(self, order_ref: str, order_id: int, perm_id: int, client_id: int = -1) -> str | None:
        """orderRef first: a message naming another orderRef is never this run's, whatever its ids. Then
        the permId IB gave a tracked orderRef; an orderId only when this process placed it on this
        connection."""
        if order_id > 0 and client_id == self.client_id:
            self.highest_order_id = max(self.highest_order_id, order_id)
        if order_ref:
            coid = order_ref if order_ref in self.tracked else None
        elif perm_id > 0 and (perm_id in self.by_perm_id or perm_id in self.foreign_perm_ids):
            coid = self.by_perm_id.get(perm_id)
        else:
            coid = self.by_order_id.get(order_id)
        if coid is None and order_ref and perm_id > 0:
            self.foreign_perm_ids.add(perm_id)
        return coid if coid in self.tracked else None

    def _status(self, coid: str, word: str, at: datetime, reason: str = "") -> Translated:
        if word not in STATUSES:
            raise UntranslatableMessage(f"IB status {word!r} of order {coid} is not one IB documents")
        figures = self.of(coid)
        figures.status = word
        done: Translated = []
        if coid in self.amending and word in FINAL_AT_IB:  # it ended before IB took the modify
            done = self._modify_refused(coid, at, f"the order is {word} at IB")
        ids = {"broker_order_id": _id(self.order_id_of.get(coid)), "perm_id": _id(self.perm_id_of.get(coid))}
        events: Translated = [StatusUpdate(coid, at, word, **ids)]
        if word in ACKNOWLEDGED:
            self.acknowledged.add(coid)
            events.append(Accepted(coid, at, **ids))
        if word in CANCELLED:
            events.append(Cancelled(coid, at, reason or f"IB status {word}"))
        elif word == "Inactive" and figures.refusal:  # Inactive after an error: IB refused the order
            events.append(Rejected(coid, at, figures.refusal))
        return done + events + self._check(coid)

    def open_order(self, order_id: int, client_id: int, perm_id: int, order_ref: str, status: str,
                   at: datetime, terms: dict[str, float] | None = None) -> Translated:
        """`terms`: the order's quantity and prices as IB lists them now (what a modify changed)."""
        coid = self._resolve(order_ref, order_id, perm_id, client_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, order_id, perm_id, client_id)
        return self._amended(coid, terms or {}, at) + self._status(coid, status, at)

    def amend_requested(self, coid: str, order_id: int, terms: dict[str, float], changes: dict,
                        revision: int) -> None:
        """kit sends a modify (placeOrder under the order's own id): IB's answer names that id."""
        self.by_order_id[order_id] = coid
        self.amending[coid] = (terms, changes, revision)

    def expect(self, coid: str, terms: dict[str, float], amendments: int) -> None:
        """The terms the ledger has this order working on, after `amendments` accepted amendments."""
        self.known_terms[coid] = (dict(terms), amendments)

    def _amended(self, coid: str, terms: dict[str, float], at: datetime) -> Translated:
        pending = self.amending.get(coid)
        if not terms:
            return []
        if pending is not None:
            wanted, changes, revision = pending
            if not all(name in terms and _same(terms[name], value) for name, value in wanted.items()):
                return []
            del self.amending[coid]
            known, _ = self.known_terms.get(coid, ({}, 0))
            self.known_terms[coid] = ({**known, **wanted}, revision)
            return [AmendAccepted(coid, at, changes, revision)]
        if coid not in self.known_terms:
            return []
        known, revision = self.known_terms[coid]
        moved = {name: value for name, value in terms.items()
                 if name in known and not _same(known[name], value)}
        if not moved:
            return []
        self.known_terms[coid] = ({**known, **moved}, revision + 1)
        return [AmendAccepted(coid, at, moved, revision + 1)]

    def _modify_refused(self, coid: str, at: datetime, reason: str) -> Translated:
        _, changes, revision = self.amending.pop(coid)
        return [AmendRefused(coid, at, reason, revision, changes)]

    def completed_order(self, perm_id: int, order_ref: str, status: str, reason: str,
                        at: datetime) -> Translated:
        """A finished order, as IB lists it after a reconnect: no orderId, matched by orderRef and permId."""
        coid = self._resolve(order_ref, 0, perm_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, 0, perm_id, -1)
        if status == "Inactive":  # among IB's completed orders: it will never work, whatever kit missed
            self.of(coid).refusal = self.of(coid).refusal or f"IB status Inactive: {reason or 'completed'}"
        return self._status(coid, status, at, reason)

    def order_status(self, order_id: int, status: str, perm_id: int, client_id: int, why_held: str,
                     at: datetime, *, filled: float | None = None,
                     remaining: float | None = None) -> Translated:
        coid = self._resolve("", order_id if client_id == self.client_id else -1, perm_id, client_id)
        if coid is None:
            return []
        self.seen.add(coid)
        self._learn(coid, order_id, perm_id, client_id)
        figures = self.of(coid)
        figures.filled, figures.remaining = _quantity(filled), _quantity(remaining)
        # IB sends the openOrder of a filled order before its orderStatus Filled: only the figures that came
        # with a final status are final (else every fill would ask for its executions again).
        figures.filled_final = status in FINAL_AT_IB
        figures.why_held = why_held or figures.why_held
        return self._status(coid, status, at, why_held)

    def execution(self, *, exec_id: str, order_id: int, perm_id: int, client_id: int, order_ref: str,
                  shares: float, price: float, time: datetime, currency: str, exchange: str,
                  at: datetime, cum_qty: float | None = None, symbol: str = "") -> Translated:
        coid = self._resolve(order_ref, order_id if client_id == self.client_id else -1, perm_id, client_id)
        if coid is None:
            self.foreign_execs.add(exec_id)
            return []
        self.seen.add(coid)
        self.foreign_execs.discard(exec_id)  # seen before this run tracked its order (IB's startup replay)
        self._learn(coid, order_id, perm_id, client_id)
        figures = self.of(coid)
        figures.symbol = symbol or figures.symbol
        shares, cum = float(shares), _quantity(cum_qty)
        key, revision = self._key(figures, exec_id, shares, cum)
        held = figures.counted.get(key)
        if held is None or held[1] <= revision:
            figures.counted[key] = (split_exec_id(exec_id)[0], revision, shares)
        if cum is not None and cum > 0:
            figures.cum_qty = cum
        fill = Fill(exec_id, coid, shares, float(price), time, currency=currency, exchange=exchange,
                    key=key, revision=revision)
        return [Execution(fill, at), *self._check(coid)]

    def _key(self, figures: Figures, exec_id: str, shares: float, cum: float | None) -> tuple[str, int]:
        """Which execution this one is. By IB's rule a higher last part is a revision of the execution it
        shares the rest with; but IB also numbers a new partial fill so (`….01.02` after `….01.01`).
        cumQty tells them apart: a new partial raises the order's total by its shares, a correction puts
        the total where replacing the corrected execution puts it. Decided once per exec_id, so a repeat
        (or IB's replay after a reconnect, in IB's order) lands where the first one did."""
        if exec_id in self.exec_keys:
            return self.exec_keys[exec_id]
        base, revision = split_exec_id(exec_id)
        earlier = {key: (rev, held) for key, (b, rev, held) in figures.counted.items()
                   if b == base and rev < revision}
        key = base
        if earlier and cum is not None and cum > 0:
            total = figures.total

            def near(quantity: float) -> bool:
                return abs(cum - quantity) <= QUANTITY_TOLERANCE

            corrected = [k for k, (_, held) in earlier.items() if near(total - held + shares)]
            if corrected:  # the latest of those it may correct: equal shares, equal sums
                key = max(corrected, key=lambda k: earlier[k][0])
            elif near(total + shares):
                key = exec_id  # a new partial fill: an execution of its own
            elif base not in figures.counted:
                key = max(earlier, key=lambda k: earlier[k][0])
        self.exec_keys[exec_id] = (key, revision)
        return key, revision

    def _check(self, coid: str) -> Translated:
        figures = self.of(coid)
        if figures.rechecking or figures.final in figures.flagged or figures.disagreement() is None:
            return []
        figures.rechecking = True
        return [RecheckExecutions(coid, figures.symbol)]

    def rechecked(self, coid: str, at: datetime) -> Translated:
        """IB has sent the order's executions again: a disagreement that remains is flagged, never settled."""
        figures = self.of(coid)
        figures.rechecking = False
        problem = figures.disagreement()
        if problem is None or figures.final in figures.flagged:
            return []
        figures.flagged.add(figures.final)
        done = " IB reports it Filled: kit will not cancel it." if figures.filled_at_ib else ""
        return [BrokerNotice(at, Notice.FILLS_DISAGREE,
                             f"kit counts {figures.total:g} filled from IB's executions, IB reports "
                             f"{problem} (asked for the executions again).{done} Check `kit reconcile`.",
                             coid)]

    def commission(self, exec_id: str, commission: float, currency: str, at: datetime) -> Translated:
        if exec_id in self.foreign_execs:
            return []
        # IB's unset double means it did not say: unknown (NaN), never a commission of zero.
        amount = math.nan if commission >= UNSET_DOUBLE else float(commission)
        return [Commission(exec_id, amount, currency, at)]

    def error(self, req_id: int, code: int, message: str, at: datetime) -> Translated:
        coid = self.by_order_id.get(req_id) if req_id > 0 else None
        if coid is not None and coid not in self.tracked:
            coid = None
        notice = BrokerNotice(at, code, message, coid)
        if coid is None:
            return [notice]
        effect, text = meaning(code), f"IB error {code}: {message}"
        if coid in self.amending and refuses_modify(code):  # about the modify: the order works on as it was
            return [notice, *self._modify_refused(coid, at, text)]
        figures = self.of(coid)
        if effect is Meaning.REFUSED and code in REQUEST_CODES and coid in self.acknowledged:
            return [notice]  # a refused modification or cancel: the order works on
        if effect is Meaning.REFUSED:
            figures.refusal = text
            return [Rejected(coid, at, text)]
        if effect is Meaning.CANCEL_REFUSED:
            if figures.status == "Inactive" or "state: Inactive" in message:
                held = f"; {figures.why_held}" if figures.why_held else ""
                return [notice, Rejected(coid, at, f"IB reports the order Inactive{held} and will not cancel "
                                                   f"it ({text})")]
            # Filled, cancelled or unknown at IB: its own word decides; ask for it and its executions.
            return [notice, LookUp(coid), RecheckExecutions(coid, figures.symbol)]
        if effect in (Meaning.NOTICE, Meaning.CONNECTION):
            return [notice]
        figures.refusal = text
        return [notice, LookUp(coid, refusal=f"{text} (a code IB's tables do not list; IB does not list "
                                             "the order)")]

    def looked_up(self, coid: str, refusal: str | None, at: datetime) -> Translated:
        """IB listed its orders: one it does not know, after an error about it, was refused."""
        if refusal is None or coid in self.seen:
            return []
        return [Rejected(coid, at, refusal)]


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _quantity(value: float | None) -> float | None:
    """IB's decimal quantities; its unset value (or nothing) means it did not say."""
    if value is None:
        return None
    number = float(value)
    return None if number != number or number >= UNSET_DOUBLE else number


def _id(value: int | None) -> str | None:
    return str(value) if value else None
