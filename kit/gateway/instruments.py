"""The simulated gateway's instrument table and its market.

A real gateway resolves contracts against IB's security master; the simulation resolves them against a
small configurable table. Each instrument carries a reference price from which the market (bid, ask, last)
is derived; tests move the price with ``Market.set_price`` to make resting limit orders marketable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from kit.instruments import quarterly_expiries

#: Venues a SMART order may route to and a direct-routed order may name, per primary exchange.
VENUES: dict[str, tuple[str, ...]] = {
    "NASDAQ": ("NASDAQ", "ISLAND", "ARCA", "BATS", "IEX"),
    "NYSE": ("NYSE", "ARCA", "BATS", "IEX"),
    "SBF": ("SBF", "AQEUEN", "CHIXEN", "TRQXEN"),
    "IBIS": ("IBIS", "GETTEX", "TGATE", "CHIXDE"),
}

TIME_ZONES: dict[str, str] = {"USD": "US/Eastern", "EUR": "MET"}

#: IB's error 200, for a contract that designates no instrument.
UNKNOWN_CONTRACT = "No security definition has been found for the request"


@dataclass(frozen=True)
class Instrument:
    """One tradable stock, as IB's contract details describe it."""

    symbol: str
    con_id: int
    primary_exchange: str
    currency: str
    price: float
    long_name: str = ""
    sec_type: str = "STK"
    min_tick: float = 0.01
    # Futures, FX and options (a stock leaves them empty): IB's lastTradeDateOrContractMonth (YYYYMMDD),
    # strike, right, multiplier ("" for stocks and FX, as IB sends it), localSymbol and tradingClass.
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    local_symbol: str = ""
    trading_class_name: str = ""

    @property
    def name(self) -> str:
        """What the market quotes it by: the local symbol (ESZ6, EUR.USD), a stock's symbol."""
        return self.local_symbol or self.symbol

    @property
    def exchanges(self) -> tuple[str, ...]:
        """SMART plus the venues of the primary exchange (the contract's validExchanges); a future or FX
        pair trades only on its own exchange (no SMART routing)."""
        if self.sec_type in ("FUT", "CASH"):
            return (self.primary_exchange,)
        return ("SMART", *VENUES.get(self.primary_exchange, (self.primary_exchange,)))

    @property
    def trading_class(self) -> str:
        if self.trading_class_name:
            return self.trading_class_name
        return "NMS" if self.primary_exchange == "NASDAQ" else self.symbol

    @property
    def shown_local_symbol(self) -> str:
        return self.local_symbol or self.symbol

    @property
    def contract_month(self) -> str:
        return self.expiry[:6] if self.sec_type in ("FUT", "OPT") else ""

    @property
    def units(self) -> float:
        """Units of the underlying per unit traded: the multiplier, 1 without one."""
        return float(self.multiplier) if self.multiplier else 1.0

    @property
    def time_zone(self) -> str:
        return TIME_ZONES.get(self.currency, "UTC")


@dataclass(frozen=True)
class ContractSpec:
    """The contract fields a client sends: what it asks for, possibly incomplete."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    local_symbol: str = ""
    trading_class: str = ""


def derivatives(today: date) -> tuple[Instrument, ...]:
    """Futures, FX and options dated from `today`: ES on CME (x50, the next three quarterly months), the
    DAX future on EUREX in two sizes (FDAX x25, FDXM x5: one symbol, so "DAX" of a month is ambiguous at IB
    as here), EUR.USD and GBP.USD on IDEALPRO, and SPY options (x100) on the next monthly expiry and the
    weekly one before it, strikes 440 to 460, calls and puts."""
    codes = "FGHJKMNQUVXZ"
    found: list[Instrument] = []
    con_id = 600_000_000
    months = quarterly_expiries(today, 3)
    for symbol, exchange, currency, multiplier, klass, price, tick, count in (
            ("ES", "CME", "USD", "50", "ES", 6000.0, 0.25, 3),
            ("DAX", "EUREX", "EUR", "25", "FDAX", 19000.0, 1.0, 2),
            ("DAX", "EUREX", "EUR", "5", "FDXM", 19000.0, 1.0, 2)):
        for expiry in months[:count]:
            con_id += 1
            found.append(Instrument(symbol, con_id, exchange, currency, price, f"{symbol} {expiry:%b%y}",
                                    "FUT", tick, f"{expiry:%Y%m%d}", 0.0, "", multiplier,
                                    f"{klass}{codes[expiry.month - 1]}{expiry.year % 10}", klass))
    found += [Instrument("EUR", 12087792, "IDEALPRO", "USD", 1.085, "European Monetary Union Euro", "CASH",
                         0.00005, local_symbol="EUR.USD", trading_class_name="EUR.USD"),
              Instrument("GBP", 12087797, "IDEALPRO", "USD", 1.27, "British pound", "CASH", 0.00005,
                         local_symbol="GBP.USD", trading_class_name="GBP.USD")]
    first = date(today.year + (today.month == 12), today.month % 12 + 1, 1) if today.day > 14 else \
        date(today.year, today.month, 1)
    monthly = first.replace(day=1 + (4 - first.weekday()) % 7 + 14)
    for expiry in (monthly, date.fromordinal(monthly.toordinal() - 7)):
        for strike in (440, 450, 460):
            for right in "CP":
                con_id += 1
                found.append(Instrument("SPY", con_id, "ARCA", "USD", 12.0, "SPDR S&P 500 ETF TRUST", "OPT",
                                        0.01, f"{expiry:%Y%m%d}", float(strike), right, "100",
                                        f"SPY   {expiry:%y%m%d}{right}{strike * 1000:08d}", "SPY"))
    return tuple(found)


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("AAPL", 265598, "NASDAQ", "USD", 190.00, "APPLE INC"),
    Instrument("MSFT", 272093, "NASDAQ", "USD", 420.00, "MICROSOFT CORP"),
    Instrument("GOOG", 208813720, "NASDAQ", "USD", 170.00, "ALPHABET INC-CL C"),
    Instrument("AMZN", 3691937, "NASDAQ", "USD", 185.00, "AMAZON.COM INC"),
    Instrument("NFLX", 15124833, "NASDAQ", "USD", 640.00, "NETFLIX INC"),
    Instrument("META", 107113386, "NASDAQ", "USD", 500.00, "META PLATFORMS INC-CLASS A"),
    Instrument("IBM", 8314, "NYSE", "USD", 185.00, "INTL BUSINESS MACHINES CORP"),
    Instrument("JPM", 1520593, "NYSE", "USD", 200.00, "JPMORGAN CHASE & CO"),
    Instrument("XOM", 13977, "NYSE", "USD", 115.00, "EXXON MOBIL CORP"),
    Instrument("TTE", 29612193, "SBF", "EUR", 62.00, "TOTALENERGIES SE"),
    Instrument("SAP", 14204, "IBIS", "EUR", 180.00, "SAP SE"),
)


@dataclass
class Market:
    """The instrument table plus the current simulated price of each instrument."""

    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    prices: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for inst in self.instruments:
            self.prices.setdefault(inst.name, inst.price)

    def candidates(self, spec: ContractSpec) -> list[Instrument]:
        """Every instrument the spec fits, as IB's contract details list them: a future without a month,
        a symbol with several multipliers or an option month with weekly expiries give several."""
        if not (spec.con_id or spec.symbol or spec.local_symbol):
            return []
        return [inst for inst in self.instruments if _fits(spec, inst)]

    def resolve(self, spec: ContractSpec) -> Instrument | None:
        """The one instrument the spec designates, or None (IB's error 200) if it designates none or is
        ambiguous. A stock's spec takes the first listing, as before derivatives were listed."""
        found = self.candidates(spec)
        if len(found) == 1 or (found and all(inst.sec_type == "STK" for inst in found)):
            return found[0]
        return None

    def price(self, inst: Instrument) -> float:
        return self.prices[inst.name]

    def set_price(self, symbol: str, price: float) -> Instrument:
        """`symbol` is a stock's symbol or a contract's local symbol (ESZ6, EUR.USD)."""
        inst = next((i for i in self.instruments if i.name == symbol), None)
        if inst is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        if price <= 0:
            raise ValueError(f"price must be positive, got {price}")
        self.prices[symbol] = price
        return inst

    def quote(self, inst: Instrument) -> tuple[float, float]:
        """(bid, ask): one tick either side of the current price."""
        price = self.prices[inst.name]
        return round_price(price - inst.min_tick, inst), round_price(price + inst.min_tick, inst)


def _fits(spec: ContractSpec, inst: Instrument) -> bool:
    """A request's contract fields against one instrument: each given field must agree (a month matches its
    days, IB's CALL/PUT match C/P, 0 strike and empty fields match anything)."""
    right = {"CALL": "C", "PUT": "P"}.get(spec.right, spec.right)
    checks = (
        not spec.con_id or spec.con_id == inst.con_id,
        not spec.symbol or spec.symbol == inst.symbol,
        spec.sec_type in ("", inst.sec_type),
        spec.currency in ("", inst.currency),
        spec.primary_exchange in ("", inst.primary_exchange) or inst.sec_type != "STK",
        not spec.exchange or spec.exchange in inst.exchanges,
        not spec.expiry or inst.expiry.startswith(spec.expiry),
        not spec.strike or abs(spec.strike - inst.strike) < 1e-9,
        not right or right == inst.right,
        not spec.multiplier or float(spec.multiplier or 0) == inst.units,
        not spec.local_symbol or spec.local_symbol == inst.shown_local_symbol,
        not spec.trading_class or spec.trading_class == inst.trading_class,
    )
    return all(checks)


def round_price(price: float, inst: Instrument) -> float:
    """Round to the instrument's tick, without binary noise (189.99, not 189.98999999999998)."""
    ticks = round(price / inst.min_tick)
    return round(ticks * inst.min_tick, 8)
