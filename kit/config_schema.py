"""The one typed schema of kit's settings: every key of kit.toml and every KIT_* variable, checked strictly.

Strict, because a setting silently turned into something else is a trading accident: `ib_port = 4002.7`
is not port 4002, `max_orders = false` is not 0, and an unknown `dryrun = true` is not a dry run. pydantic
does the checking; it is imported only when settings are first read (kit.config loads this module
lazily), so `import kit` stays fast. docs/configuration.md describes each field for users.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    """No coercion (an int field takes only an int, never a float or a bool), no unknown key."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# The fat-finger guard, on unless turned off explicitly: "off" in kit.toml or KIT_RISK_* (TOML has no null;
# kit.config reads "off" as None), None in a call's risk={...}. Ten and fifty times what the shipped
# notebooks trade in one order and one run (capital 1,000,000): their runs pass, a capital typed with a few
# zeros too many does not.
DEFAULT_MAX_ORDER_NOTIONAL = 10_000_000.0
DEFAULT_MAX_GROSS_NOTIONAL = 50_000_000.0


class RiskSettings(_Strict):
    """[risk] in kit.toml, KIT_RISK_<NAME> in the environment, `risk={...}` per call. None: no limit."""

    max_order_notional: Amount | None = DEFAULT_MAX_ORDER_NOTIONAL
    max_order_quantity: Amount | None = None
    max_gross_notional: Amount | None = DEFAULT_MAX_GROSS_NOTIONAL
    max_position: Amount | None = None
    allowed_symbols: list[str] | None = None
    collar: Amount | None = None
    max_orders: Count | None = None
    # The currency of the money limits, and the user's rates into it (kit.instruments.convert).
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    fx_rates: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None


class Settings(_Strict):
    db: str = "data/kit.duckdb"
    ib_host: str = "127.0.0.1"
    ib_port: Annotated[int, Field(ge=1, le=65535)] = 4002
    ib_client_id: Annotated[int, Field(ge=0, le=2**31 - 1)] = 17
    ib_account: str = ""
    ib_library: Literal["ib_async", "ib_insync"] | None = None
    ib_connect_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    # Seconds a run keeps trying to reconnect to IB before it ends (its orders may still be working there).
    ib_reconnect_window: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0
    allow_live: bool = False
    halt: bool = False
    halt_file: str = "data/HALT"
    dry_run: bool = False
    ledger_wait: Seconds = 120.0
    ledger_read_wait: Seconds = 10.0
    runs_dir: str = "data/runs"
    schedule_state: str = "data/schedule.json"
    lock_dir: str = "data/locks"
    journal_dir: str = "data/journals"  # a PostgreSQL ledger's local journals, one per server and database
    debug: bool = False
    risk: RiskSettings = RiskSettings()
    # Only in the environment: where the file is. (kit's own test suite uses KITTEST_* variables, which are
    # not kit settings.)
    config: str | None = None


ENVIRONMENT_ONLY = frozenset({"config"})
