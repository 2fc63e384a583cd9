"""The simulated gateway's instrument table and its market.

A real gateway resolves contracts against IB's security master; the simulation resolves them against a
small configurable table. Each instrument carries a reference price from which the market (bid, ask, last)
is derived; tests move the price with ``Market.set_price`` to make resting limit orders marketable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def exchanges(self) -> tuple[str, ...]:
        """SMART plus the venues of the primary exchange (the contract's validExchanges)."""
        return ("SMART", *VENUES.get(self.primary_exchange, (self.primary_exchange,)))

    @property
    def trading_class(self) -> str:
        return "NMS" if self.primary_exchange == "NASDAQ" else self.symbol

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
            self.prices.setdefault(inst.symbol, inst.price)

    def resolve(self, spec: ContractSpec) -> Instrument | None:
        """The one instrument the spec designates, or None (IB's error 200) if it designates none."""
        if not (spec.con_id or spec.symbol):
            return None
        for inst in self.instruments:
            if spec.con_id and spec.con_id != inst.con_id:
                continue
            if spec.symbol and spec.symbol != inst.symbol:
                continue
            if spec.sec_type not in ("", inst.sec_type):
                continue
            if spec.currency not in ("", inst.currency):
                continue
            if spec.primary_exchange not in ("", inst.primary_exchange):
                continue
            if spec.exchange and spec.exchange not in inst.exchanges:
                continue
            return inst
        return None

    def price(self, inst: Instrument) -> float:
        return self.prices[inst.symbol]

    def set_price(self, symbol: str, price: float) -> Instrument:
        inst = next((i for i in self.instruments if i.symbol == symbol), None)
        if inst is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        if price <= 0:
            raise ValueError(f"price must be positive, got {price}")
        self.prices[symbol] = price
        return inst

    def quote(self, inst: Instrument) -> tuple[float, float]:
        """(bid, ask): one tick either side of the current price."""
        price = self.prices[inst.symbol]
        return round_price(price - inst.min_tick, inst), round_price(price + inst.min_tick, inst)


def round_price(price: float, inst: Instrument) -> float:
    """Round to the instrument's tick, without binary noise (189.99, not 189.98999999999998)."""
    ticks = round(price / inst.min_tick)
    return round(ticks * inst.min_tick, 8)
