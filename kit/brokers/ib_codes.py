"""IB's message codes and what each means for an order: the one table kit reads IB's error() messages by.

TWS sends errors, warnings and notices through one callback, error(reqId, code, text); for an order, reqId
is its orderId. What a code does to the order is IB's to say, so every entry names the IB page it comes
from. A code that is not here, sent about an order, is looked up at IB (kit.brokers.ib_events.LookUp): an
order IB then does not list was refused, and ends REJECTED with IB's text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

#: IB's current list (TWS API documentation, "Message Codes"): system, warning and error codes.
MESSAGE_CODES = "http://interactivebrokers.github.io/tws-api/message_codes.html"
#: IB's older API guide table ("API Message Codes"), which still lists the order-validation codes 1xx-4xx.
API_GUIDE = "http://individuals.interactivebrokers.com/php/apiUsersGuide/apiguide/api/api_message_codes.htm"
#: The client-side codes (5xx) of IB's official Python client.
IBAPI_ERRORS = "ibapi/errors.py in IB's TWS API Python client (.venv-ibapi10, ibapi 10.51)"


class Meaning(StrEnum):
    REFUSED = "refused"  # IB refused the order (or the request carrying it): it never worked, cannot fill
    CANCEL_REFUSED = "cancel_refused"  # IB did not cancel: the order's own state decides what it is
    NOTICE = "notice"  # informs; the order goes on as IB's status and executions say
    CONNECTION = "connection"  # about the session, not about an order


@dataclass(frozen=True, slots=True)
class Code:
    meaning: Meaning
    text: str  # IB's text, as its table gives it
    source: str


R, X, N, C = Meaning.REFUSED, Meaning.CANCEL_REFUSED, Meaning.NOTICE, Meaning.CONNECTION

CODES: dict[int, Code] = {
    # ---- the order was refused: REJECTED with IB's text ------------------------------------------------
    100: Code(R, "Max rate of messages per second has been exceeded.", API_GUIDE),
    103: Code(R, "Duplicate order ID.", API_GUIDE),
    106: Code(R, "Can't transmit order ID:", API_GUIDE),
    107: Code(R, "Cannot transmit incomplete order.", API_GUIDE),
    109: Code(R, "Price is out of the range defined by the Percentage setting at order defaults frame. The "
                 "order will not be transmitted.", API_GUIDE),
    110: Code(R, "The price does not conform to the minimum price variation for this contract.", API_GUIDE),
    111: Code(R, "The TIF (Tif type) and the order type are incompatible.", API_GUIDE),
    113: Code(R, "The Tif option should be set to DAY for MOC and LOC orders.", API_GUIDE),
    116: Code(R, "The order cannot be transmitted to a dead exchange.", API_GUIDE),
    117: Code(R, "The block order size must be at least 50.", API_GUIDE),
    121: Code(R, "Invalid BD flag for the order. Check \"Destination\" and \"BD\" flag.", API_GUIDE),
    122: Code(R, "No request tag has been found for order:", API_GUIDE),
    123: Code(R, "No record is available for conid:", API_GUIDE),
    124: Code(R, "No market rule is available for conid:", API_GUIDE),
    132: Code(R, "This order cannot be transmitted without a clearing account.", API_GUIDE),
    133: Code(R, "Submit new order failed.", API_GUIDE),
    140: Code(R, "The size value should be an integer:", API_GUIDE),
    141: Code(R, "The price value should be a double:", API_GUIDE),
    154: Code(R, "Orders cannot be transmitted for a halted security.", API_GUIDE),
    163: Code(R, "The price specified would violate the percentage constraint specified in the default order "
                 "settings.", API_GUIDE),
    200: Code(R, "No security definition has been found for the request.", MESSAGE_CODES),
    201: Code(R, "Order rejected - Reason:", MESSAGE_CODES),
    203: Code(R, "The security is not available or allowed for this account.", MESSAGE_CODES),
    321: Code(R, "Error validating request:", MESSAGE_CODES),
    322: Code(R, "Error processing request:", MESSAGE_CODES),
    387: Code(R, "Unsupported order type for this exchange and security type.", MESSAGE_CODES),
    388: Code(R, "Order size is smaller than the minimum requested size.", MESSAGE_CODES),
    392: Code(R, "Invalid order: contract expired.", MESSAGE_CODES),
    434: Code(R, "The order size cannot be zero.", MESSAGE_CODES),
    10268: Code(R, "The 'EtradeOnly' order attribute is not supported.", MESSAGE_CODES),
    10269: Code(R, "The 'firmQuoteOnly' order attribute is not supported.", MESSAGE_CODES),
    10311: Code(R, "This order will be directly routed to ... Restriction is specified in Precautionary "
                   "Settings of Global Configuration/API.", MESSAGE_CODES),
    # ---- a cancel IB did not carry out: Inactive ends REJECTED; anything else is asked about again ------
    135: Code(X, "Can't find order with ID =", API_GUIDE),
    136: Code(X, "This order cannot be cancelled.", API_GUIDE),
    161: Code(X, "Cancel attempted when order is not in a cancellable state. Order permId =", MESSAGE_CODES),
    10147: Code(X, "OrderId that needs to be cancelled is not found.", MESSAGE_CODES),
    10148: Code(X, "OrderId that needs to be cancelled can not be cancelled, state:", MESSAGE_CODES),
    # ---- notices: recorded, they end nothing ----------------------------------------------------------
    104: Code(N, "Can't modify a filled order.", API_GUIDE),  # a refused modification; the order stands
    105: Code(N, "Order being modified does not match original order.", API_GUIDE),
    131: Code(N, "The sweep-to-fill flag and display size are only valid for US stocks routed through SMART, "
                 "and will be ignored.", API_GUIDE),
    134: Code(N, "Modify order failed.", API_GUIDE),
    165: Code(N, "Historical Market Data Service query message.", MESSAGE_CODES),
    202: Code(N, "Order cancelled - Reason:", MESSAGE_CODES),  # the Cancelled status is what counts
    354: Code(N, "Requested market data is not subscribed.", MESSAGE_CODES),
    399: Code(N, "Order message:", MESSAGE_CODES),
    404: Code(N, "Shares for this order are not immediately available for short sale. The order will be held "
                 "while we attempt to locate the shares.", MESSAGE_CODES),
    2109: Code(N, "Order Event Warning: Attribute 'Outside Regular Trading Hours' is ignored based on the "
                  "order type and destination. PlaceOrder is now being processed.", MESSAGE_CODES),
    10167: Code(N, "Requested market data is not subscribed. Displaying delayed market data.", MESSAGE_CODES),
    10349: Code(N, "Order TIF was set to DAY based on order preset.", MESSAGE_CODES),
    # ---- the session ---------------------------------------------------------------------------------
    326: Code(C, "Unable to connect as the client id is already in use.", MESSAGE_CODES),
    501: Code(C, "Already connected.", IBAPI_ERRORS),
    502: Code(C, "Couldn't connect to TWS.", IBAPI_ERRORS),
    504: Code(C, "Not connected", IBAPI_ERRORS),
    1100: Code(C, "Connectivity between IB and the TWS has been lost.", MESSAGE_CODES),
    1101: Code(C, "Connectivity between IB and TWS has been restored- data lost.", MESSAGE_CODES),
    1102: Code(C, "Connectivity between IB and TWS has been restored- data maintained.", MESSAGE_CODES),
    1300: Code(C, "TWS socket port has been reset and this connection is being dropped.", MESSAGE_CODES),
    2100: Code(C, "New account data requested from TWS. API client has been unsubscribed from account data.",
               MESSAGE_CODES),
    2103: Code(C, "A market data farm is disconnected.", MESSAGE_CODES),
    2104: Code(C, "Market data farm connection is OK", MESSAGE_CODES),
    2105: Code(C, "A historical data farm is disconnected.", MESSAGE_CODES),
    2106: Code(C, "A historical data farm is connected.", MESSAGE_CODES),
    2107: Code(C, "A historical data farm connection has become inactive but should be available upon "
               "demand.",
               MESSAGE_CODES),
    2108: Code(C, "A market data farm connection has become inactive but should be available upon demand.",
               MESSAGE_CODES),
    2110: Code(C, "Connectivity between TWS and server is broken. It will be restored automatically.",
               MESSAGE_CODES),
    2119: Code(C, "Market data farm is connecting:", MESSAGE_CODES),
    2157: Code(C, "Sec-def data farm connection is broken:", MESSAGE_CODES),
    2158: Code(C, "Sec-def data farm connection is OK:", MESSAGE_CODES),
}  # fmt: skip
del R, X, N, C

#: Refusals of a request rather than of an order: IB sends them for a refused modification (wire-protocol
#: reference, section 6: "110 on modify") or cancel too (100, the pacing limit, for a cancelOrder), and a
#: working order then stays as it was. They end only an order IB has not acknowledged.
REQUEST_CODES = frozenset({100, 109, 110, 111, 113, 140, 141, 163, 321, 388, 434})


def meaning(code: int) -> Meaning | None:
    """What IB says the code does; None for a code IB's tables (as kit carries them) do not list."""
    entry = CODES.get(code)
    return entry.meaning if entry else None


#: How loud kit logs each code on `kit.ib` where its meaning alone does not say (see log_level): IB's
#: "market data farm connection is OK" and a cancel's confirmation inform; a clientId in use or no
#: connection at all stop a run.
LOG_LEVELS = {
    165: logging.INFO, 202: logging.INFO, 1102: logging.INFO, 2100: logging.INFO, 2104: logging.INFO,
    2106: logging.INFO, 2107: logging.INFO, 2108: logging.INFO, 2119: logging.INFO, 2158: logging.INFO,
    326: logging.ERROR, 502: logging.ERROR, 504: logging.ERROR,
}
_MEANING_LEVELS = {Meaning.REFUSED: logging.ERROR, Meaning.CANCEL_REFUSED: logging.WARNING,
                   Meaning.NOTICE: logging.WARNING, Meaning.CONNECTION: logging.WARNING}


def log_level(code: int) -> int:
    """The level kit logs an IB message at (the client libraries log nearly all of them as ERROR): an
    order IB refused is an error, a notice about an order or the session a warning, IB saying that all is
    well information. A code the table does not list is a warning: kit looks the order up at IB."""
    if code in LOG_LEVELS:
        return LOG_LEVELS[code]
    found = meaning(code)
    return _MEANING_LEVELS[found] if found is not None else logging.WARNING


#: What IB answers a modification it refuses, besides the codes that refuse an order outright: 103 (the
#: order id is no longer live: a cancelled order's id is a used id), 104 "Can't modify a filled order",
#: 105 "Order being modified does not match original order", 106, 134 "Modify order failed". While kit
#: awaits the answer to a modify, these and every REFUSED code refuse the modification, not the order.
MODIFY_REFUSALS = frozenset({103, 104, 105, 106, 134})


def refuses_modify(code: int) -> bool:
    return code in MODIFY_REFUSALS or meaning(code) is Meaning.REFUSED
