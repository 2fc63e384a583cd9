"""Instruments: what a row designates, how kit names it, what qualification learned, and its money.

Pure: no I/O, no clock (today's date is an argument). Brokers resolve a row's contract by calling `choose`
on their candidates (the mock on its table, IB on reqContractDetails' answers), so "front", ambiguity and
unknown contracts mean the same everywhere.

- Stocks and ETFs (STK) on SMART or a named exchange; multiplier 1.
- Futures (FUT) by symbol and contract month (YYYYMM), last trade date (YYYYMMDD) or "front": the nearest
  contract whose last trade date is today or later. The multiplier is the contract's (ES: 50).
- FX (CASH) on IDEALPRO as BASE.QUOTE ("EUR.USD"): the quantity is in the base currency, prices and money
  in the quote currency (the row's currency). IB's minimum IDEALPRO order is USD 25,000 or equivalent; a
  smaller one IB re-routes to IDEAL, its odd-lot venue (wider spreads than the interbank quote). kit sends
  such an order as given and logs a warning when it can tell (`odd_lot`).
- Options (OPT) by symbol, expiry (YYYYMMDD, or YYYYMM when one expiry of that month matches), strike and
  right C/P; multiplier from the contract (US equity options: 100).

Money is in the instrument's currency and is never added across currencies: `Money` keeps one total per
currency, and `convert` turns an amount into another currency only with a rate the user gave (fx_rates:
{"EUR": 1.08} means 1 EUR = 1.08 of the target currency).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from kit.errors import CurrencyError

SEC_TYPES = ("STK", "FUT", "CASH", "OPT")
RIGHTS = ("C", "P")
FRONT = "front"
IDEALPRO = "IDEALPRO"
IDEALPRO_MINIMUM_USD = 25_000  # IB: smaller IDEALPRO orders are odd lots, re-routed to IDEAL
DERIVATIVES = ("FUT", "OPT")  # the sec types whose multiplier is the contract's, not 1
_EXPIRY = re.compile(r"^\d{6}(\d{2})?$")
FX_PAIR = re.compile(r"^([A-Z]{3})\.([A-Z]{3})$")


def instrument_key(symbol: str, sec_type: str = "STK", expiry: str | None = "", strike: float | None = None,
                   right: str | None = "") -> str:
    """The one name kit gives an instrument in positions, prices and plans: the symbol for stocks and FX
    ("AAPL", "EUR.USD"), symbol and month for futures ("ES 202612"), and symbol, expiry, strike, right for
    options ("SPY 20261218 450 C"). A future's key uses its contract month (the first six digits), as IB's
    positions name contracts, so targets by month and positions by contract meet."""
    if sec_type == "FUT":
        month = expiry if expiry == FRONT else (expiry or "")[:6]
        return f"{symbol} {month}"
    if sec_type == "OPT":
        return f"{symbol} {expiry} {'?' if strike is None else f'{strike:g}'} {right}"
    return symbol


def key_of(order: object) -> str:
    """instrument_key of anything with the intent's fields (an OrderIntent, a Contract)."""
    return instrument_key(order.symbol, order.sec_type, getattr(order, "expiry", ""),  # type: ignore[attr-defined]
                          getattr(order, "strike", None), getattr(order, "right", ""))


def fx_pair(symbol: str) -> tuple[str, str] | None:
    """("EUR", "USD") for "EUR.USD"; None when the symbol is not a currency pair."""
    match = FX_PAIR.match(symbol)
    return (match.group(1), match.group(2)) if match else None


def odd_lot(symbol: str, quantity: float, price: float | None) -> bool | None:
    """Whether an FX order is below IB's IDEALPRO minimum (USD 25,000 or equivalent); None when kit cannot
    tell without a rate (a pair without USD, or a USD-quoted pair without a price)."""
    pair = fx_pair(symbol)
    if pair is None:
        return None
    base, quote = pair
    if base == "USD":
        return quantity < IDEALPRO_MINIMUM_USD
    if quote == "USD" and price is not None:
        return quantity * price < IDEALPRO_MINIMUM_USD
    return None


def expiry_problem(expiry: object) -> str | None:
    if expiry == FRONT:
        return None
    if not isinstance(expiry, str) or not _EXPIRY.match(expiry):
        return f"expiry {expiry!r} is not YYYYMM, YYYYMMDD or 'front'"
    month = int(expiry[4:6])
    if not 1 <= month <= 12 or (len(expiry) == 8 and not 1 <= int(expiry[6:]) <= 31):
        return f"expiry {expiry!r} is not a date"
    return None


def multiplier(sec_type: str, given: float | None) -> float | None:
    """Units of the underlying per unit traded: 1 for stocks and FX; a future's or option's own (None
    while unknown: its money cannot be computed, and a limit that needs it fails closed)."""
    if sec_type in DERIVATIVES:
        return given
    return 1.0


def units(order: object) -> float | None:
    """The multiplier money uses for an order (or anything with sec_type and multiplier): a stock's and an FX
    pair's is 1 (their multiplier field stays empty), a future's or option's its own, None while unknown."""
    return multiplier(order.sec_type, order.multiplier)  # type: ignore[attr-defined]


def notional(quantity: float, price: float | None, multiplier_: float | None) -> float | None:
    """Money moved by the order, in its currency: quantity x price x multiplier; None if unknown."""
    if price is None or multiplier_ is None:
        return None
    return quantity * price * multiplier_


def convert(amount: float, currency: str, to: str, fx_rates: Mapping[str, float] | None,
            what: str = "") -> float:
    """`amount` in `currency` expressed in `to`, with the user's rate; else CurrencyError saying how to
    give one."""
    if currency == to:
        return amount
    rate = (fx_rates or {}).get(currency)
    if rate is None or not math.isfinite(rate) or rate <= 0:
        raise CurrencyError(
            f"{what + ': ' if what else ''}{amount:,.2f} {currency} cannot be compared with a limit in {to} "
            f"without a rate: give fx_rates={{'{currency}': <{to} per {currency}>}} "
            f"(risk={{'fx_rates': ...}} or [risk] fx_rates in kit.toml), or set the limits' currency to "
            f"{currency}")
    return amount * rate


@dataclass
class Money:
    """Amounts per currency; added within a currency only."""

    totals: dict[str, float] = field(default_factory=dict)

    def add(self, amount: float, currency: str) -> None:
        self.totals[currency] = self.totals.get(currency, 0.0) + amount

    def total(self, currency: str, fx_rates: Mapping[str, float] | None = None) -> float:
        """Everything expressed in one currency: CurrencyError if a rate is missing."""
        return math.fsum(convert(v, c, currency, fx_rates) for c, v in sorted(self.totals.items()))

    def __str__(self) -> str:
        return ", ".join(f"{v:,.2f} {c}" for c, v in sorted(self.totals.items())) or "0"


@dataclass(frozen=True)
class Contract:
    """What qualification learns of one contract (IB's contract details, or the mock's table)."""

    symbol: str
    sec_type: str
    currency: str
    exchange: str
    con_id: int
    local_symbol: str = ""
    primary_exchange: str = ""
    expiry: str = ""  # lastTradeDateOrContractMonth as IB gives it (YYYYMMDD for FUT and OPT)
    last_trade_date: str = ""  # YYYYMMDD; for futures, the day after which it no longer trades
    strike: float | None = None
    right: str = ""
    multiplier: float = 1.0
    trading_class: str = ""
    min_tick: float = 0.01
    time_zone: str = ""
    trading_hours: str = ""

    def describe(self) -> str:
        parts = [self.local_symbol or self.symbol, self.expiry or "-", self.exchange, f"x{self.multiplier:g}"]
        return " ".join(parts)


@dataclass(frozen=True)
class Spec:
    """What a row asks for: possibly incomplete (no month, "front", no multiplier)."""

    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = ""
    expiry: str = ""
    strike: float | None = None
    right: str = ""
    multiplier: float | None = None

    @property
    def key(self) -> str:
        return key_of(self)


def spec_of(order: object) -> Spec:
    return Spec(*(getattr(order, name, default) for name, default in (
        ("symbol", ""), ("sec_type", "STK"), ("exchange", "SMART"), ("currency", "USD"),
        ("primary_exchange", ""), ("expiry", ""), ("strike", None), ("right", ""), ("multiplier", None))))


def _matches(spec: Spec, contract: Contract) -> bool:
    if contract.symbol != spec.symbol or contract.sec_type != spec.sec_type:
        return False
    if spec.currency and contract.currency != spec.currency:
        return False
    if spec.expiry and spec.expiry != FRONT and not contract.expiry.startswith(spec.expiry):
        return False
    if spec.strike is not None and (contract.strike is None or abs(contract.strike - spec.strike) > 1e-9):
        return False
    if spec.right and contract.right != spec.right:
        return False
    return spec.multiplier is None or abs(contract.multiplier - spec.multiplier) < 1e-9


def choose(spec: Spec, candidates: Iterable[Contract], today: date) -> Contract | str:
    """The one contract a spec designates among the candidates, or why not, listing the candidates (local
    symbol, expiry, exchange, multiplier) so the user can say which one."""
    found = [c for c in candidates if _matches(spec, c)]
    if spec.expiry == FRONT:
        stamp = today.strftime("%Y%m%d")
        alive = [c for c in found if (c.last_trade_date or c.expiry) >= stamp]
        if alive:
            nearest = min(c.last_trade_date or c.expiry for c in alive)
            found = [c for c in alive if (c.last_trade_date or c.expiry) == nearest]
        else:
            return (f"no {spec.symbol} future trades on or after {today:%Y-%m-%d}"
                    + _listed(found))
    if len(found) == 1:
        return found[0]
    if not found:
        return f"IB knows no {spec.sec_type} contract for {spec.key}"
    return f"ambiguous contract {spec.key}: {len(found)} candidates{_listed(found)}; give " + (
        "the expiry, the multiplier or the exchange" if spec.sec_type in DERIVATIVES else "the exchange")


def _listed(contracts: list[Contract]) -> str:
    return (": " + "; ".join(c.describe() for c in contracts[:10])
            + (f" and {len(contracts) - 10} more" if len(contracts) > 10 else "")) if contracts else ""


def quarterly_expiries(today: date, count: int = 3) -> list[date]:
    """The third Fridays of the next `count` quarterly months (Mar, Jun, Sep, Dec) not before `today`: the
    equity index futures cycle, used by the mock's and the simulated gateway's tables."""
    found: list[date] = []
    year, month = today.year, today.month
    while len(found) < count:
        if month % 3 == 0:
            first = date(year, month, 1)
            friday = first + timedelta(days=(4 - first.weekday()) % 7 + 14)
            if friday >= today:
                found.append(friday)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return found


def cache_valid_until(contract: Contract, fetched: date) -> date:
    """The refresh rule: what qualification learned holds for the trading day it was fetched (a new day
    asks IB again, so a changed multiplier, tick or listing is seen), and never past a contract's last
    trade date (a future or option is looked up afresh at expiry and roll, and "front" moves on)."""
    end = fetched
    if contract.last_trade_date:
        end = min(end, date(int(contract.last_trade_date[:4]), int(contract.last_trade_date[4:6]),
                            int(contract.last_trade_date[6:8])))
    return end
