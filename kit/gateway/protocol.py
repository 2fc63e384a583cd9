"""The TWS socket protocol, server versions 157 to 178: framing, field encoding, and parsing of requests.

Both directions carry messages as a 4-byte big-endian length followed by NUL-terminated ASCII fields. The
client opens with ``API\\0`` and its supported version range; the gateway answers, as IB does, with the lower
of the client's maximum and its own (178) and its time. That serves IB's own ibapi 9.81 (v100..157) at 157,
ib_insync 0.9.86 at 176, ib_async 2.1 and IB's 10.x clients at 178. A client whose maximum is below 157 is
turned away. The layouts that change with the version are in messages.py (what the gateway sends) and here
(placeOrder's faProfile, sent until 176).

Requests are parsed positionally with ``Fields``, a cursor over the field list; see the wire-protocol
reference, section 4, for the layouts.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from kit.gateway.instruments import ContractSpec
from kit.gateway.state import ExecFilter, OrderRequest, OrderTypeFields

#: The server versions the gateway speaks (IB's MIN_SERVER_VER_REPLACE_FA_END .. _PENDING_PRICE_REVISION).
MIN_VERSION = 157
MAX_VERSION = 178
#: IB's faProfile was dropped from orders at 177 (MIN_SERVER_VER_FA_PROFILE_DESUPPORT).
FA_PROFILE_DESUPPORT = 177
UNSET_DOUBLE = 1.7976931348623157e308
#: Frames longer than this are treated as a broken stream (IB's own limit is 16 MB).
MAX_FRAME = 1 << 24


class ProtocolError(Exception):
    """The peer does not speak the protocol; the connection is closed."""


class RequestError(Exception):
    """A request the gateway answers with an IB error message (e.g. 200 for an unknown contract)."""

    def __init__(self, req_id: int, code: int, text: str):
        super().__init__(f"{code}: {text}")
        self.req_id = req_id
        self.code = code
        self.text = text


def frame(fields: Iterable[str]) -> bytes:
    payload = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def encode(value: object) -> str:
    """One field: None is unset (''), booleans are 1/0, integral floats lose their '.0'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


async def _read_payload(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes")
    return await reader.readexactly(size)


async def read_handshake(reader: asyncio.StreamReader) -> int:
    """Read ``API\\0`` and the client's version range; return the server version to announce."""
    if await reader.readexactly(4) != b"API\0":
        raise ProtocolError("not a TWS API client (no API\\0 prefix)")
    text = (await _read_payload(reader)).decode(errors="replace")
    match = re.match(r"v(\d+)(?:\.\.(\d+))?", text)
    if match is None:
        raise ProtocolError(f"bad version range {text!r}")
    low = int(match[1])
    high = int(match[2] or low)
    if high < MIN_VERSION:
        # IB's own text for a client too old for the gateway (its 506); the connection is closed.
        raise ProtocolError(f"Unsupported version: client speaks v{low}..{high}, the gateway v{MIN_VERSION}.."
                            f"{MAX_VERSION}")
    return min(high, MAX_VERSION)


async def read_message(reader: asyncio.StreamReader) -> list[str]:
    fields = (await _read_payload(reader)).decode(errors="backslashreplace").split("\0")
    if fields[-1] == "":
        fields.pop()
    return fields


def format_time(t: datetime, zone: str = "UTC", named: bool = True) -> str:
    """IB's "YYYYMMDD HH:MM:SS zone" format in TWS's time zone, or without the zone name as some TWS versions
    send execution times (the reader must then know the zone)."""
    local = t.astimezone(UTC if zone == "UTC" else ZoneInfo(zone))
    text = local.strftime("%Y%m%d %H:%M:%S")
    return f"{text} {zone}" if named else text


def parse_time(text: str) -> datetime:
    """``YYYYMMDD HH:MM:SS [zone]`` or ``YYYYMMDD-HH:MM:SS`` (UTC), as clients send in filters."""
    date, _, rest = text.strip().replace("-", " ", 1).partition(" ")
    clock, _, zone = rest.strip().partition(" ")
    t = datetime.strptime(date + clock, "%Y%m%d%H:%M:%S")
    return t.replace(tzinfo=ZoneInfo(zone) if zone else UTC)


class Fields:
    """A cursor over a request's fields; empty numeric fields read as unset (0 or None)."""

    def __init__(self, fields: list[str], start: int = 1):
        self._fields = fields
        self._pos = start

    def text(self) -> str:
        if self._pos >= len(self._fields):
            raise ProtocolError(f"message {self._fields[0]} has only {len(self._fields)} fields")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def integer(self) -> int:
        value = self.text()
        return int(value) if value else 0

    def number(self) -> float | None:
        value = self.text()
        return float(value) if value else None

    def flag(self) -> bool:
        return self.text() not in ("", "0")

    def skip(self, count: int = 1) -> Fields:
        for _ in range(count):
            self.text()
        return self

    def contract(self) -> ContractSpec:
        """The 12 contract fields every request carries (conId ... tradingClass)."""
        con_id, symbol, sec_type = self.integer(), self.text(), self.text()
        expiry, strike, right, multiplier = self.text(), self.number(), self.text(), self.text()
        exchange, primary_exchange, currency = self.text(), self.text(), self.text()
        local_symbol, trading_class = self.text(), self.text()
        return ContractSpec(con_id, symbol, sec_type, exchange, primary_exchange, currency,
                            expiry.split(" ")[0], strike or 0.0, right, multiplier, local_symbol,
                            trading_class)


def parse_place_order(fields: list[str], version: int = MAX_VERSION) -> OrderRequest:
    """placeOrder (id 3, no version field); fields 0-34 are the same for every non-combo order and version."""
    r = Fields(fields)
    order_id = r.integer()
    contract = r.contract()
    r.skip(2)  # secIdType, secId
    action, quantity, order_type, limit_price = r.text(), r.number() or 0.0, r.text(), _set(r.number())
    aux_price = _set(r.number())
    tif = r.text()
    account = r.skip().text()  # after ocaGroup
    order_ref = r.skip(2).text()  # after openClose, origin
    transmit = r.flag()
    outside_rth = r.skip(5).flag()  # after parentId ... triggerMethod
    what_if, rest = _read_rest(r.skip(), contract.sec_type, order_type, version)  # after hidden
    return OrderRequest(
        order_id=order_id,
        contract=contract,
        action=action,
        quantity=quantity,
        order_type=order_type,
        limit_price=limit_price if order_type != "MKT" else None,
        tif=tif,
        account=account,
        order_ref=order_ref,
        transmit=transmit,
        what_if=what_if,
        type_fields=OrderTypeFields(aux_price=aux_price, outside_rth=outside_rth, **rest),
    )


def _set(value: float | None) -> float | None:
    """A price field, None when unset (empty, or IB's max double)."""
    return None if value is None or value >= UNSET_DOUBLE else value


def _read_rest(r: Fields, sec_type: str, order_type: str, version: int) -> tuple[bool, dict[str, Any]]:
    """Walk placeOrder from field 35 to whatIf and on to lmtPriceOffset, as ``Client.placeOrder`` of every
    client lays it out: positions move with the optional groups (combo legs, delta-neutral order, scale,
    hedge, delta-neutral contract, algo parameters, PEG BENCH fields, conditions) and with the version
    (faProfile until 176), so fields are found by reading them, not by a fixed index (whatIf is 85 for a
    plain order at 176). Reading whatIf wrong would make a what-if a real order."""
    if sec_type == "BAG":
        r.skip(8 * r.integer())  # combo legs
        r.skip(r.integer())  # order combo leg prices
        r.skip(2 * r.integer())  # smart combo routing params
    good_till_date = r.skip(3).text()  # after sharesAllocation, discretionaryAmt, goodAfterTime
    r.skip(3)  # faGroup, faMethod, faPercentage
    if version < FA_PROFILE_DESUPPORT:
        r.skip()  # faProfile
    r.skip(22)  # modelCode ... volatilityType
    if r.text():  # deltaNeutralOrderType
        r.skip(9)  # deltaNeutralAuxPrice and the 8 delta-neutral order fields
    else:
        r.skip()  # deltaNeutralAuxPrice
    r.skip(2)  # continuousUpdate, referencePriceType
    trail_stop_price, trailing_percent = _set(r.number()), _set(r.number())
    r.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    increment = r.number()  # scalePriceIncrement
    if increment is not None and 0 < increment < UNSET_DOUBLE:
        r.skip(7)  # scalePriceAdjustValue ... scaleRandomPercent
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.text():  # hedgeType
        r.skip()  # hedgeParam
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.flag():  # deltaNeutralContract present
        r.skip(3)
    algo_strategy = r.text()
    algo_params: tuple[tuple[str, str], ...] = ()
    if algo_strategy:
        algo_params = tuple((r.text(), r.text()) for _ in range(r.integer()))
    what_if = r.skip().flag()  # after algoId
    r.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if order_type == "PEG BENCH":
        r.skip(5)
    lmt_price_offset = None
    if r.integer() == 0:  # no conditions (kit never sends any; with them, the offset is not read)
        lmt_price_offset = _set(r.skip(2).number())  # after adjustedOrderType, triggerPrice
    return what_if, {"good_till_date": good_till_date, "trail_stop_price": trail_stop_price,
                     "trailing_percent": trailing_percent, "algo_strategy": algo_strategy,
                     "algo_params": algo_params, "lmt_price_offset": lmt_price_offset}


def parse_exec_filter(fields: list[str]) -> tuple[int, ExecFilter]:
    """reqExecutions ``[7, 3, reqId, clientId, acctCode, time, symbol, secType, exchange, side]``."""
    r = Fields(fields, start=2)
    req_id, client_id, account, since = r.integer(), r.integer(), r.text(), r.text()
    symbol, sec_type, exchange, side = r.text(), r.text(), r.text(), r.text()
    try:
        time = parse_time(since) if since else None
    except (ValueError, KeyError) as exc:  # KeyError: ZoneInfo's unknown zone
        raise RequestError(req_id, 321, f"Error validating request: invalid time {since!r} ({exc})") from exc
    return req_id, ExecFilter(client_id, account, time, symbol, sec_type, exchange, side)


def parse_mkt_data(fields: list[str]) -> tuple[int, ContractSpec, bool]:
    """reqMktData ``[1, 11, reqId, contract, (legs), dnc, (dnc fields), genericTicks, snapshot, ...]``."""
    r = Fields(fields, start=2)
    req_id, contract = r.integer(), r.contract()
    if contract.sec_type == "BAG":
        r.skip(4 * r.integer())
    if r.flag():
        r.skip(3)  # delta-neutral contract
    snapshot = r.skip().flag()  # after genericTickList
    return req_id, contract, snapshot
