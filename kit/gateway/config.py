"""GatewayConfig: everything that makes one simulated gateway differ from another.

Built in code by tests (``GatewayConfig(seed=7, max_order_size=100)``), or read from a TOML file by
``kit gateway --config FILE``:

    seed = 7
    accounts = ["DU1234567", "DU7654321"]
    max_order_size = 500
    [[instruments]]
    symbol = "AAPL"
    con_id = 265598
    primary_exchange = "NASDAQ"
    currency = "USD"
    price = 190.0
    [faults]
    commission_delay = 0.5

An ``instruments`` list replaces the default table.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from kit.gateway.faults import Faults
from kit.gateway.instruments import DEFAULT_INSTRUMENTS, Instrument


@dataclass
class GatewayConfig:
    seed: int = 0
    #: Managed accounts, announced at connect; the first is the default for orders without an account.
    accounts: tuple[str, ...] = ("DU1234567",)
    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    #: Orders for more than this quantity are rejected with error 201.
    max_order_size: float = 10_000
    #: Exchanges an order may not be routed to directly (error 10311); SMART routing to them works.
    restricted_exchanges: frozenset[str] = frozenset({"SBF"})
    #: An order fills in this many slices of seeded random size (fewer if its quantity is smaller).
    partial_fills: int = 3
    #: Seconds before each slice fills (simulated with event-loop timers).
    fill_latency: float = 0.01
    commission_per_share: float = 0.005
    min_commission: float = 1.0
    #: IB's fixed pricing charges the minimum once per order, so later partial fills of a small order pay
    #: 0; off, every execution pays at least the minimum.
    min_commission_per_order: bool = False
    #: IB's pacing limit: a client's messages beyond this many within one second are answered with error
    #: 100 and not acted on. None: no limit.
    max_messages_per_second: int | None = 50
    #: What-if margin: these fractions of the account's gross position value (initial, maintenance).
    init_margin_rate: float = 0.25
    maint_margin_rate: float = 0.20
    #: Starting cash of each account, in USD.
    cash: float = 1_000_000.0
    #: Value of one unit of each currency in USD, for account totals.
    fx: dict[str, float] = field(default_factory=lambda: {"USD": 1.0, "EUR": 1.08})
    faults: Faults = field(default_factory=Faults)
    #: A Twap or Vwap order fills in this many slices, one per fill latency.
    algo_slices: int = 4
    #: Run an auction by itself this many seconds after an order for it is accepted (for a gateway that
    #: no test drives: ``kit gateway`` demos); None: only ``Gateway.run_auction`` runs it.
    auction_after: float | None = None
    #: Also list futures, FX and options (kit.gateway.instruments.derivatives), dated from the gateway's
    #: clock, next to ``instruments``.
    derivatives: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.accounts or not all(self.accounts):
            problems.append("accounts must be a non-empty list of account codes")
        if self.partial_fills < 1:
            problems.append(f"partial_fills must be >= 1, got {self.partial_fills}")
        if self.fill_latency < 0:
            problems.append(f"fill_latency must be >= 0, got {self.fill_latency}")
        if self.max_order_size <= 0:
            problems.append(f"max_order_size must be > 0, got {self.max_order_size}")
        names = [inst.name for inst in self.instruments]
        if len(set(names)) != len(names):
            problems.append("instrument symbols (local symbols for futures, FX and options) must be unique")
        missing_fx = {inst.currency for inst in self.instruments} - set(self.fx)
        if missing_fx:
            problems.append(f"fx has no rate for {sorted(missing_fx)}")
        if self.faults.time_zone != "UTC" and self.faults.time_zone not in available_timezones():
            problems.append(f"faults.time_zone {self.faults.time_zone!r} is not an IANA time zone")
        if problems:
            raise ValueError("invalid gateway config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatewayConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown gateway settings: {sorted(unknown)}")
        kwargs = dict(data)
        if "accounts" in kwargs:
            kwargs["accounts"] = tuple(kwargs["accounts"])
        if "instruments" in kwargs:
            kwargs["instruments"] = tuple(Instrument(**row) for row in kwargs["instruments"])
        if "restricted_exchanges" in kwargs:
            kwargs["restricted_exchanges"] = frozenset(kwargs["restricted_exchanges"])
        if "faults" in kwargs:
            faults = dict(kwargs["faults"])
            for rule in ("drop_orders", "bare_inactive"):  # lists of orderRefs in TOML
                if isinstance(faults.get(rule), list):
                    faults[rule] = frozenset(faults[rule])
            kwargs["faults"] = Faults(**faults)
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> GatewayConfig:
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))
