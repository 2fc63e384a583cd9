"""The order types beyond MKT and LMT: which fields each takes, what IB would refuse, and how each works.

Pure: no I/O and no clock (a good-till time is checked against the `now` the API layer passes in). The
rules of docs/orders.md live here once: validation (kit.validate calls `check_order_fields`), the price a
notional is taken at (kit.risk), the IB wire form of a good-till time and of algo parameters
(kit.brokers.ib), and the trigger of stops and trailing stops, which the mock broker and the simulated
gateway both follow (`Trigger`).

What IB refuses, refused here first, with IB's reason (IB's error code where it has one):
- MOC and LOC need tif DAY (IB 113); OPG (at the open) only with MKT or LMT (IB 111);
- a trailing stop takes a trailing amount or a trailing percent, never both (IB's order has one of
  auxPrice and trailingPercent); TRAIL LIMIT also needs its limit offset (lmtPriceOffset);
- IB algos (Adaptive, Twap, Vwap) run on SMART-routed MKT or LMT day orders, with the parameters IB's
  algo documentation lists (anything else is named as unknown).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

BASIC_TYPES = ("MKT", "LMT")
ORDER_TYPES = (*BASIC_TYPES, "MOC", "LOC", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIDPRICE", "REL")
BASIC_TIFS = ("DAY", "GTC", "IOC")
TIFS = (*BASIC_TIFS, "OPG", "GTD")

# The targets-frame columns of the order types, with what an absent or empty cell means.
EXTRA_DEFAULTS: dict[str, Any] = {
    "stop_price": None, "trail_amount": None, "trail_percent": None, "offset": None,
    "outside_rth": False, "good_till": None, "algo": "", "algo_params": (),
}
EXTRA_COLUMNS = tuple(EXTRA_DEFAULTS)

LIMITED = frozenset({"LMT", "LOC", "STP LMT"})  # limit_price is the order's limit, and required
CAPPED = frozenset({"MIDPRICE", "REL"})  # limit_price is an optional cap
STOPS = frozenset({"STP", "STP LMT"})  # stop_price required
TRAILING = frozenset({"TRAIL", "TRAIL LIMIT"})  # trail_amount or trail_percent; stop_price optional
OFFSET = frozenset({"REL", "TRAIL LIMIT"})  # offset required
CLOSE_AUCTION = frozenset({"MOC", "LOC"})

# The zone a naive good-till or algo time is read in, by the instrument's currency (the exchange's zone);
# an instrument in another currency needs an aware time. IB's own names for the zones.
ZONES = {"USD": "US/Eastern", "CAD": "America/Toronto", "EUR": "Europe/Berlin", "GBP": "Europe/London",
         "CHF": "Europe/Zurich", "JPY": "Asia/Tokyo", "HKD": "Asia/Hong_Kong", "AUD": "Australia/Sydney"}

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s+(\S+))?$")


@dataclass(frozen=True)
class Param:
    """One algo parameter as IB documents it: a choice among words, a number in a range, a flag or a
    time of day."""

    tag: str
    kind: str  # "choice", "number", "flag", "time"
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0


# IB's algo parameters (TWS API "IB Algos": Adaptive, TWAP, VWAP), in IB's own order.
ALGOS: dict[str, tuple[Param, ...]] = {
    "Adaptive": (Param("adaptivePriority", "choice", ("Urgent", "Normal", "Patient")),),
    "Twap": (Param("strategyType", "choice", ("Marketable", "Matching Midpoint", "Matching Same Side",
                                             "Matching Last")),
             Param("startTime", "time"), Param("endTime", "time"), Param("allowPastEndTime", "flag")),
    "Vwap": (Param("maxPctVol", "number", low=0.01, high=0.5), Param("startTime", "time"),
             Param("endTime", "time"), Param("allowPastEndTime", "flag"), Param("noTakeLiq", "flag"),
             Param("speedUp", "flag"), Param("monetaryValue", "number", low=0.01, high=1e12)),
}
ALGO_DEFAULTS = {"Adaptive": {"adaptivePriority": "Normal"}, "Twap": {"strategyType": "Marketable"}}
US_ALGOS = frozenset({"Twap", "Vwap"})


def auction(order_type: str, tif: str) -> str | None:
    """"close" for MOC and LOC, "open" for MKT or LMT with tif OPG, else None."""
    if order_type in CLOSE_AUCTION:
        return "close"
    return "open" if tif == "OPG" else None


def priced_at_limit(order_type: str) -> bool:
    """Is a notional taken at the order's limit? For LMT, LOC and STP LMT; a stop, MIDPRICE, REL or MKT
    order is valued at the reference (a MIDPRICE or REL cap bounds the price, it does not set it)."""
    return order_type in LIMITED


def zone_for(currency: str) -> str | None:
    return ZONES.get(currency)


# ---- validation --------------------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    """kit.validate's is_missing without importing pandas (the CLI's help must not): None, NaN, NA, NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _positive(value: Any, name: str, problems: list[str], price_problem: PriceCheck) -> float | None:
    problem = price_problem(value, name)
    if problem is not None:
        problems.append(problem)
        return None
    return float(value)


PriceCheck = Callable[[Any, str], "str | None"]  # kit.validate's price_problem: why a price is unusable


def check_order_fields(values: dict[str, Any], row: Mapping[str, Any], price_problem: PriceCheck,
                       now: datetime | None, problems: list[str]) -> None:
    """Check and normalise the price and order-type fields of one row into `values` (order_type and tif
    already checked words, or None). `now` is naive UTC, from the caller's clock: without it a good-till
    time is not checked against the present."""
    raw = {name: (default if _missing(row.get(name)) else row[name])
           for name, default in EXTRA_DEFAULTS.items()}
    values.update(EXTRA_DEFAULTS)
    order_type, tif = values["order_type"], values["tif"]
    limit = values["limit_price"]
    if order_type is None:
        values["limit_price"] = None
        return
    if order_type in LIMITED:
        values["limit_price"] = None if limit is None else _positive(limit, "limit_price", problems,
                                                                     price_problem)
        if limit is None:
            problems.append(f"{order_type} order without limit_price")
    elif order_type in CAPPED:
        values["limit_price"] = None if limit is None else _positive(limit, "limit_price (the cap)", problems,
                                                                     price_problem)
    elif limit is not None:
        hints = {"MKT": " (use order_type LMT)", "MOC": " (use LOC)", "STP": " (use STP LMT)",
                 "TRAIL": " (use TRAIL LIMIT)", "TRAIL LIMIT": " (its limit comes from offset)"}
        hint = hints.get(order_type, "")
        problems.append(f"limit_price {limit!r} given for a {order_type} order{hint}")
        values["limit_price"] = None

    stop = raw["stop_price"]
    if order_type in STOPS and stop is None:
        problems.append(f"{order_type} order without stop_price")
    elif stop is not None and order_type not in STOPS | TRAILING:
        problems.append(f"stop_price {stop!r} given for a {order_type} order (use STP or STP LMT)")
    elif stop is not None:
        values["stop_price"] = _positive(stop, "stop_price", problems, price_problem)

    amount, percent = raw["trail_amount"], raw["trail_percent"]
    if order_type in TRAILING:
        if amount is not None and percent is not None:
            problems.append("trailing stop with both trail_amount and trail_percent (give one)")
        elif amount is None and percent is None:
            problems.append(f"{order_type} order without trail_amount or trail_percent")
        elif amount is not None:
            values["trail_amount"] = _positive(amount, "trail_amount", problems, price_problem)
        elif (number := _positive(percent, "trail_percent", problems, price_problem)) is not None:
            if number >= 100:
                problems.append(f"trail_percent {number:g} must be below 100")
            values["trail_percent"] = number
    else:
        for name in ("trail_amount", "trail_percent"):
            if raw[name] is not None:
                problems.append(f"{name} {raw[name]!r} given for a {order_type} order "
                                "(use TRAIL or TRAIL LIMIT)")

    offset = raw["offset"]
    if order_type in OFFSET:
        if offset is None:
            what = "the limit offset from the stop" if order_type == "TRAIL LIMIT" else "the peg offset"
            problems.append(f"{order_type} order without offset ({what})")
        elif isinstance(offset, bool) or not isinstance(offset, int | float) or not math.isfinite(offset) \
                or offset < 0 or price_problem(offset or 1.0, "offset") is not None:
            problems.append(f"offset {offset!r} must be a number >= 0")
        else:
            values["offset"] = float(offset)
    elif offset is not None:
        problems.append(f"offset {offset!r} given for a {order_type} order (use REL or TRAIL LIMIT)")

    if order_type in CAPPED and values.get("exchange") not in (None, "SMART"):
        problems.append(f"{order_type} orders need SMART routing, not exchange {values['exchange']!r} "
                        "(IB 115)")
    if order_type == "REL" and values.get("sec_type") not in (None, "STK"):
        problems.append("REL orders are for stocks only (IB 114)")
    if order_type == "MIDPRICE" and values.get("currency") not in (None, "USD"):
        problems.append(f"MIDPRICE orders are for US stocks, not {values['currency']} ones")
    if tif is not None:
        if order_type in CLOSE_AUCTION and tif != "DAY":
            problems.append(f"{order_type} needs tif DAY, not {tif} (IB 113: the Tif option should be set to "
                            "DAY for MOC and LOC orders)")
        if tif == "OPG" and order_type not in BASIC_TYPES:
            problems.append(f"tif OPG (at the open) is for MKT or LMT orders, not {order_type} (IB 111)")
        _check_good_till(raw["good_till"], tif, values, now, problems)

    rth = raw["outside_rth"]
    if isinstance(rth, bool) or type(rth).__name__ == "bool_":
        values["outside_rth"] = bool(rth)
        if values["outside_rth"] and (order_type in CLOSE_AUCTION or tif == "OPG"):
            problems.append("outside_rth on an auction order: auctions are within regular hours (IB ignores "
                            "it, warning 2109)")
    else:
        problems.append(f"outside_rth {rth!r} must be True or False")
    _check_algo(raw["algo"], raw["algo_params"], values, problems)


def _check_good_till(good_till: Any, tif: str, values: dict[str, Any], now: datetime | None,
                     problems: list[str]) -> None:
    if tif != "GTD":
        if good_till is not None:
            problems.append(f"good_till {good_till!r} given with tif {tif} (use tif GTD)")
        return
    if good_till is None:
        problems.append("tif GTD without good_till")
        return
    import pandas as pd

    try:
        stamp = pd.Timestamp(good_till)
    except (ValueError, TypeError) as exc:
        problems.append(f"good_till {good_till!r} is not a time ({exc})")
        return
    if stamp.tzinfo is None:
        zone = zone_for(values.get("currency") or "")
        if zone is None:
            problems.append(f"good_till {good_till!r} has no time zone, and kit knows no exchange zone for "
                            f"currency {values.get('currency')!r}: give an aware time")
            return
        stamp = stamp.tz_localize(ZoneInfo(zone))
    utc = stamp.tz_convert(UTC).to_pydatetime().replace(tzinfo=None)
    if now is not None and utc <= now:
        problems.append(f"good_till {stamp} is in the past (now {now:%Y-%m-%d %H:%M:%S} UTC)")
        return
    values["good_till"] = utc


def _check_algo(algo: Any, params: Any, values: dict[str, Any], problems: list[str]) -> None:
    if algo == "" or algo is None:
        if not (params is None or (isinstance(params, Mapping | tuple | list) and not params)):
            problems.append(f"algo_params {params!r} given without an algo")
        return
    names = {name.lower(): name for name in ALGOS}
    if not isinstance(algo, str) or algo.strip().lower() not in names:
        problems.append(f"algo {algo!r} is not one of {', '.join(ALGOS)}")
        return
    name = names[algo.strip().lower()]
    values["algo"] = name
    if name == "Twap" and values["order_type"] != "LMT":
        problems.append(f"algo Twap works a limit order (IB trades it when the limit is marketable), not "
                        f"{values['order_type']}")
    elif values["order_type"] not in BASIC_TYPES:
        problems.append(f"algo {name} runs on MKT or LMT orders, not {values['order_type']}")
    if name in US_ALGOS and values.get("currency") not in (None, "USD"):
        problems.append(f"algo {name} is for US stocks (IB offers TWAP and VWAP on US equities), not "
                        f"{values['currency']} ones")
    if values["tif"] not in (None, "DAY"):
        problems.append(f"algo {name} orders are day orders: tif must be DAY, not {values['tif']}")
    if values.get("exchange") not in (None, "SMART"):
        problems.append(f"algo {name} needs SMART routing, not exchange {values['exchange']!r}")
    if isinstance(params, str):  # a mapping written as JSON text, as a CSV of targets holds it
        try:
            params = json.loads(params)
        except ValueError:
            problems.append(f"algo_params {params!r} is not a mapping (nor JSON text of one)")
            return
    if isinstance(params, tuple | list) and all(isinstance(p, tuple | list) and len(p) == 2 for p in params):
        params = dict(params)
    if not isinstance(params, Mapping):
        problems.append(f"algo_params {params!r} must be a mapping {{parameter: value}}")
        return
    given = {**ALGO_DEFAULTS.get(name, {}), **params}
    spec = {p.tag: p for p in ALGOS[name]}
    unknown = sorted(str(k) for k in given if k not in spec)
    if unknown:
        problems.append(f"algo {name} has no parameter {', '.join(unknown)} (IB's: {', '.join(spec)})")
        return
    zone = zone_for(values.get("currency") or "") or "UTC"
    pairs = []
    for tag, param in spec.items():
        if tag not in given or _missing(given[tag]):
            continue
        text = _param_text(param, given[tag], zone)
        if text is None:
            problems.append(f"algo {name} {tag} {given[tag]!r} is not {_param_kind(param)}")
            continue
        pairs.append((tag, text))
    times = dict(pairs)
    start, end = times.get("startTime"), times.get("endTime")
    if start and end and start.split()[1:] == end.split()[1:] and _time_of_day(start) >= _time_of_day(end):
        problems.append(f"algo {name} startTime {start} is not before endTime {end}")
    values["algo_params"] = tuple(pairs)


def _param_kind(param: Param) -> str:
    if param.kind == "choice":
        return "one of " + ", ".join(param.choices)
    if param.kind == "number":
        return f"a number from {param.low:g} to {param.high:g}"
    if param.kind == "flag":
        return "True or False"
    return "a time of day HH:MM[:SS] [zone]"


def _param_text(param: Param, value: Any, zone: str) -> str | None:
    """The value as IB's TagValue text, or None when IB would not accept it."""
    if param.kind == "choice":
        words = {c.lower(): c for c in param.choices}
        return words.get(value.strip().lower()) if isinstance(value, str) else None
    if param.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not param.low <= value <= param.high:
            return None
        return f"{float(value):g}"
    if param.kind == "flag":
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return "1" if value else "0"
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return "1" if value.strip().lower() in _TRUE else "0"
        return None
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    hours, minutes, seconds, named = int(match[1]), int(match[2]), int(match[3] or 0), match[4] or zone
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    try:
        ZoneInfo(named) if named != "UTC" else None
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return f"{hours:02d}:{minutes:02d}:{seconds:02d} {named}"


def _time_of_day(text: str) -> str:
    return text.split()[0]


# ---- the ledger's form -------------------------------------------------------------------------------------

def order_type_columns(intent: Any) -> dict[str, Any]:
    """The orders-table columns of an intent's order-type fields (algo_params as JSON text, "" for none)."""
    params = intent.algo_params
    return {"stop_price": intent.stop_price, "trail_amount": intent.trail_amount,
            "trail_percent": intent.trail_percent, "offset": intent.offset, "outside_rth": intent.outside_rth,
            "good_till": intent.good_till, "algo": intent.algo,
            "algo_params": json.dumps(dict(params)) if params else ""}


def order_type_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """An intent's order-type fields from an orders row (order_type_columns' inverse; NULL is the default)."""
    def number(name: str) -> float | None:
        value = row.get(name)
        return None if _missing(value) else float(value)

    import pandas as pd

    good_till = row.get("good_till")
    params = row.get("algo_params")
    return {"stop_price": number("stop_price"), "trail_amount": number("trail_amount"),
            "trail_percent": number("trail_percent"), "offset": number("offset"),
            "outside_rth": bool(row.get("outside_rth") or False),
            "good_till": None if _missing(good_till) else pd.Timestamp(good_till).to_pydatetime(),
            "algo": row.get("algo") or "",
            "algo_params": tuple(json.loads(params).items()) if isinstance(params, str) and params else ()}


# ---- IB's wire forms ---------------------------------------------------------------------------------------

def ib_price_fields(order_type: str) -> dict[str, str]:
    """kit's price terms of an order type and the IB Order field carrying each, as IB's API documents
    them: STP auxPrice = stop; STP LMT lmtPrice + auxPrice; TRAIL auxPrice = trailing amount or
    trailingPercent, trailStopPrice = the initial stop; TRAIL LIMIT also lmtPriceOffset; REL auxPrice =
    offset, lmtPrice = cap; MIDPRICE lmtPrice = cap. Sending (ib_fields) and reading IB's answer back
    (kit.brokers.ib_terms) both go by it."""
    fields = {"limit_price": "lmtPrice"}
    if order_type in STOPS:
        fields["stop_price"] = "auxPrice"
    elif order_type in TRAILING:
        fields |= {"trail_amount": "auxPrice", "trail_percent": "trailingPercent",
                   "stop_price": "trailStopPrice"}
        if order_type == "TRAIL LIMIT":
            fields["offset"] = "lmtPriceOffset"
    elif order_type == "REL":
        fields["offset"] = "auxPrice"
    return fields


def ib_fields(intent: Any) -> dict[str, Any]:
    """The IB Order attributes of an intent's order type beyond action, quantity, orderRef and account:
    its prices (ib_price_fields), goodTillDate for GTD, algoStrategy and algoParams as (tag, value) pairs
    (the adapter makes them TagValues)."""
    fields: dict[str, Any] = {"orderType": intent.order_type, "tif": intent.tif}
    for term, field in ib_price_fields(intent.order_type).items():
        if getattr(intent, term) is not None:
            fields[field] = getattr(intent, term)
    if intent.outside_rth:
        fields["outsideRth"] = True
    if intent.good_till is not None:
        fields["goodTillDate"] = ib_good_till(intent.good_till, intent.currency)
    if intent.algo:
        fields["algoStrategy"] = intent.algo
        fields["algoParams"] = list(intent.algo_params)
    return fields


def ib_good_till(good_till: datetime, currency: str) -> str:
    """IB's goodTillDate: "YYYYMMDD HH:MM:SS <zone>" in the exchange's zone, or IB's UTC form
    "YYYYMMDD-HH:MM:SS" where kit knows no zone for the currency."""
    zone = zone_for(currency)
    aware = good_till.replace(tzinfo=UTC)
    if zone is None:
        return f"{aware:%Y%m%d-%H:%M:%S}"
    return f"{aware.astimezone(ZoneInfo(zone)):%Y%m%d %H:%M:%S} {zone}"


# ---- how stops trigger -------------------------------------------------------------------------------------

_STOPPED = STOPS | TRAILING  # the types that wait for their stop (is_stop is asked on every fill)


@dataclass(slots=True)
class Trigger:
    """A stop's state against a stream of reference prices: triggered once the reference reaches the stop
    (a BUY stop at or above it, a SELL stop at or below). A trailing stop's stop follows the best price
    seen (the highest for a SELL, the lowest for a BUY) by its amount or percent, never moving back; an
    initial stop_price, when given, is where it starts. Once triggered a STP or TRAIL works as MKT, a
    STP LMT at its limit, a TRAIL LIMIT at the stop moved by its offset (SELL: below, BUY: above).

    An amendment changes the trail without forgetting the market (`amend`): a new trailing amount or
    percent puts the stop that far from the best price seen since the order went in, a new stop_price
    puts the stop there, and the trail goes on from the same best price."""

    side: str
    order_type: str
    stop: float | None = None
    trail_amount: float | None = None
    trail_percent: float | None = None
    offset: float | None = None
    limit: float | None = None
    triggered: bool = False
    best: float | None = None  # a trailing stop's best price seen (SELL: the highest, BUY: the lowest)

    @property
    def is_stop(self) -> bool:
        return self.order_type in _STOPPED

    def observe(self, price: float) -> bool:
        """Feed one reference price; True once the order has triggered (it stays triggered)."""
        if self.triggered or not self.is_stop:
            return True
        if self.order_type in TRAILING:
            self._trail(price)
        assert self.stop is not None
        self.triggered = price >= self.stop if self.side == "BUY" else price <= self.stop
        return self.triggered

    def _trail(self, price: float) -> None:
        if self.best is None or (price < self.best if self.side == "BUY" else price > self.best):
            self.best = price
        candidate = self._trailed(price)
        if self.stop is None:
            self.stop = candidate
        else:
            self.stop = min(self.stop, candidate) if self.side == "BUY" else max(self.stop, candidate)

    def _trailed(self, price: float) -> float:
        """The stop `price` puts a trailing stop at: its amount or percent away, on the side it protects."""
        if self.trail_amount is not None:
            return price + self.trail_amount if self.side == "BUY" else price - self.trail_amount
        assert self.trail_percent is not None
        factor = self.trail_percent / 100
        return price * (1 + factor) if self.side == "BUY" else price * (1 - factor)

    def amend(self, changes: Mapping[str, Any]) -> None:
        """Apply an accepted amendment (kit's names: limit_price, stop_price, trail_amount, trail_percent,
        offset) to the terms the order works on. A stop already elected keeps its stop: it works as MKT or
        LMT now, and only its limit (a TRAIL LIMIT's offset) still matters."""
        if "limit_price" in changes:
            self.limit = changes["limit_price"]
        if "offset" in changes:
            self.offset = changes["offset"]
        if "trail_amount" in changes:
            self.trail_amount, self.trail_percent = changes["trail_amount"], None
        if "trail_percent" in changes:
            self.trail_amount, self.trail_percent = None, changes["trail_percent"]
        if self.triggered:
            return
        if "stop_price" in changes:
            self.stop = changes["stop_price"]
        elif self.order_type in TRAILING and self.best is not None and \
                ("trail_amount" in changes or "trail_percent" in changes):
            self.stop = self._trailed(self.best)

    def working_limit(self) -> float | None:
        """The limit the order works at once triggered (None: at market)."""
        if self.order_type == "TRAIL LIMIT":
            assert self.stop is not None and self.offset is not None
            return self.stop + self.offset if self.side == "BUY" else self.stop - self.offset
        if self.order_type in ("STP", "TRAIL", "MOC", "MKT"):
            return None
        return self.limit


def reaches(side: str, price: float, limit: float | None) -> bool:
    """Does a reference price satisfy a limit (None: no limit)? A BUY at or below it, a SELL at or above."""
    if limit is None:
        return True
    return price <= limit if side == "BUY" else price >= limit
