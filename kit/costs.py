"""Transaction-cost analysis (TCA): the pure core, from ledger orders and fills to cost tables.

No I/O, no clock: `tca(orders, fills)` takes the ledger's ``orders`` and ``fills`` frames and returns a
`TcaResult` with one row per order and a summary. Reading the ledger and printing belong to the shell
(``kit.tca(run_id=...)``, ``kit tca --run RUN``).

Definitions (``s`` is the side sign, +1 for BUY and -1 for SELL, so that every cost below is positive when
the order did worse than its reference and negative when it did better, for both sides):

- Fills are the truth. ``filled_quantity`` is the sum of the order's fills, ``avg_fill_price`` their
  volume-weighted mean (VWAP) and ``commission`` the sum of their commissions; the order row's own
  aggregates are not used. A fill whose commission is unknown (NaN) makes the order's commission unknown,
  because counting it as 0 would understate the cost. Fills of a client_order_id that is not in
  ``orders`` are ignored.
- ``slippage_decision_bps = s * (avg_fill_price - decision_price) / decision_price * 1e4``, and the same
  against ``arrival_price`` (the reference price at submission). NaN when nothing filled or the reference
  is unknown; a reference that is not positive is treated as unknown.
- ``execution_cost = s * (avg_fill_price - decision_price) * filled_quantity * multiplier``, in the
  order's currency (0 when nothing filled; NaN when something filled but there is no decision price).
  ``multiplier`` is the contract's (a future's or option's; 1 for stocks, FX, and orders without one), so
  every money figure here and in the summary is price x quantity x multiplier.
- ``shortfall = execution_cost + commission``: the implementation shortfall of the part that was executed.
  It does NOT include the opportunity cost of the unfilled part, which needs a price the ledger does
  not have.
- ``opportunity_cost = s * (close_price - decision_price) * unfilled_quantity`` with
  ``unfilled_quantity = max(quantity - filled_quantity, 0)`` and ``close_price`` taken from the optional
  ``close_prices`` mapping (symbol -> price, in the order's currency). It is 0 when nothing is left
  unfilled and NaN when something is but the close or the decision price is unknown, never a guess.
  Full Perold implementation shortfall is ``shortfall + opportunity_cost``.
- ``first_fill_latency_s`` / ``last_fill_latency_s``: seconds from ``submitted_at`` to the first / last
  fill's ``time``; NaN without a fill or a submission time. Times are compared in UTC (naive values are
  taken as UTC, aware ones are converted), so a broker clock ahead of kit's can make them negative.
- ``fill_ratio = filled_quantity / quantity``.

The summary has one row per currency, because money in EUR and USD cannot be added without FX rates,
which kit does not have; for the same reason notional and the averages stay within one currency:
- ``orders``, ``filled_orders`` (orders with at least one fill), ``quantity``, ``filled_quantity``,
  ``fill_ratio`` (summed filled over summed ordered quantity), ``notional_filled`` (sum of fill quantity
  times price).
- ``slippage_decision_bps`` / ``slippage_arrival_bps``: mean of the orders' slippage weighted by their
  filled notional at the reference price (``filled_quantity * reference``). With that weight the average is
  exactly the basket's money slippage over its reference notional, the number a desk quotes.
- ``execution_cost``, ``commission``, ``shortfall``, ``opportunity_cost``: sums over the orders. Orders
  without a decision price are left out of all but ``commission`` (they have no benchmark to fall short
  of, just as they have no decision slippage). Any other unknown value (an unfilled remainder without a
  close price, a fill without a known commission) makes its total NaN: a partial sum would pass for a
  complete one.
- Median and max of the first- and last-fill latencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

__all__ = ["ORDER_COLUMNS", "SUMMARY_COLUMNS", "TcaResult", "tca"]

_SIGN = {"BUY": 1.0, "SELL": -1.0}
_ORDERS_REQUIRED = ("client_order_id", "symbol", "side", "quantity", "currency")
# Optional because the metrics that need them are honestly NaN without them.
_ORDERS_OPTIONAL = ("run_id", "status", "decision_price", "arrival_price", "submitted_at", "multiplier")
_FILLS_REQUIRED = ("client_order_id", "quantity", "price", "commission", "time")

ORDER_COLUMNS = [
    "run_id",
    "symbol",
    "side",
    "currency",
    "status",
    "quantity",
    "filled_quantity",
    "unfilled_quantity",
    "fill_ratio",
    "fills",
    "avg_fill_price",
    "decision_price",
    "arrival_price",
    "slippage_decision_bps",
    "slippage_arrival_bps",
    "execution_cost",
    "commission",
    "shortfall",
    "close_price",
    "opportunity_cost",
    "first_fill_latency_s",
    "last_fill_latency_s",
    "multiplier",
]
SUMMARY_COLUMNS = [
    "orders",
    "filled_orders",
    "quantity",
    "filled_quantity",
    "fill_ratio",
    "notional_filled",
    "slippage_decision_bps",
    "slippage_arrival_bps",
    "execution_cost",
    "commission",
    "shortfall",
    "opportunity_cost",
    "first_fill_latency_median_s",
    "first_fill_latency_max_s",
    "last_fill_latency_median_s",
    "last_fill_latency_max_s",
]


@dataclass(frozen=True, eq=False)
class TcaResult:
    """What `tca` returns: ``orders`` (one row per order, index client_order_id) and ``summary`` (one row
    per currency). ``eq=False`` because DataFrames have no single truth value to compare by."""

    orders: pd.DataFrame
    summary: pd.DataFrame

    def _repr_html_(self) -> str:
        return (
            "<h4>TCA summary (per currency)</h4>"
            + self.summary.to_html()
            + "<h4>TCA per order</h4>"
            + self.orders.to_html()
        )

    def __str__(self) -> str:
        """Plain text for ``kit tca`` and ``print``. Sixteen metrics side by side overflow a terminal, so the
        summary is transposed (one row per metric, one column per currency), and the per-order table keeps
        the columns a reviewer reads first under short headers; ``.summary`` and ``.orders`` keep everything.
        Each number is formatted for its unit, and an unknown one reads ``n/a`` rather than a bare NaN."""

        def text(column: str, value: float | str) -> str:
            if isinstance(value, str):
                return value
            if pd.isna(value):
                return "n/a"
            number = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.00"
            if column == "fill_ratio":
                return f"{number:.1%}"
            if column.endswith("_bps"):
                return f"{number:,.2f}"
            if column.endswith("_s"):  # latencies: milliseconds are the resolution that matters
                return f"{number:,.3f}"
            if column in ("orders", "filled_orders", "fills") or "quantity" in column:
                return f"{number:,.10g}"  # whole shares stay whole, fractional ones keep their digits
            if "price" in column:
                return f"{number:,.4f}"
            return f"{number:,.2f}"  # money, in the currency of its column or row

        if self.orders.empty:
            return "TCA: no orders in this run"
        summary = pd.DataFrame(
            {currency: [text(metric, row[metric]) for metric in self.summary.columns]
             for currency, row in self.summary.iterrows()},
            index=self.summary.columns,
        )  # fmt: skip
        shown = {
            "symbol": "symbol", "side": "side", "status": "status", "currency": "ccy", "quantity": "qty",
            "filled_quantity": "filled", "avg_fill_price": "avg_price", "decision_price": "decision",
            "arrival_price": "arrival", "slippage_decision_bps": "slip_dec_bps",
            "slippage_arrival_bps": "slip_arr_bps", "shortfall": "shortfall", "commission": "commission",
        }  # fmt: skip
        orders = pd.DataFrame(
            {short: [text(column, value) for value in self.orders[column]]
             for column, short in shown.items()},
            index=self.orders.index.rename(None),  # a name would cost the table an empty header line
        )  # fmt: skip
        return (
            "TCA summary, one column per currency (slippage and costs are positive when they cost)\n"
            f"{summary.to_string()}\n\n"
            "TCA per order (slip_dec/arr_bps: slippage versus the decision/arrival price; "
            "shortfall = execution cost + commission)\n"
            f"{orders.to_string()}"
        )


def tca(
    orders: pd.DataFrame, fills: pd.DataFrame, close_prices: Mapping[str, float] | None = None
) -> TcaResult:
    """Transaction costs of ``orders`` from their ``fills`` (the ledger's frames; see the module docstring
    for every definition). ``close_prices`` (symbol -> price) prices the unfilled remainders; without it
    their opportunity cost is NaN. Empty frames give empty tables; malformed non-empty input (missing
    columns, unknown side, duplicate client_order_id) raises ValueError rather than a wrong number."""
    orders = _conform(orders, _ORDERS_REQUIRED, _ORDERS_OPTIONAL, "orders")
    fills = _conform(fills, _FILLS_REQUIRED, (), "fills")
    per_order = _per_order(orders, _aggregate_fills(fills), dict(close_prices or {}))
    return TcaResult(orders=per_order, summary=_summary(per_order))


def _conform(
    frame: pd.DataFrame, required: tuple[str, ...], optional: tuple[str, ...], name: str
) -> pd.DataFrame:
    """Add absent optional columns (and, for an empty frame, absent required ones) as NaN, so the
    arithmetic below never branches on the shape of its input."""
    missing = [column for column in required if column not in frame.columns]
    if missing and len(frame):
        raise ValueError(f"tca: {name} lacks column(s) {', '.join(missing)}")
    absent = [column for column in (*required, *optional) if column not in frame.columns]
    return frame.reindex(columns=[*frame.columns, *absent])


def _naive_utc(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC, whether they came naive (taken as UTC, the ledger's convention) or aware."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _aggregate_fills(fills: pd.DataFrame) -> pd.DataFrame:
    """Per client_order_id: number of fills, quantity, notional, commission, first and last fill time."""
    quantity = pd.to_numeric(fills["quantity"]).astype(float)
    frame = pd.DataFrame(
        {
            "client_order_id": fills["client_order_id"],
            "quantity": quantity,
            "notional": quantity * pd.to_numeric(fills["price"]).astype(float),
            "commission": pd.to_numeric(fills["commission"]).astype(float),
            "time": _naive_utc(fills["time"]),
        }
    )
    grouped = frame.groupby("client_order_id", sort=False)
    # math.fsum (exact, then rounded once), as kit.model sums an order's fills: the totals, and so every
    # figure built on them, do not depend on the order the fills arrived in. An unknown commission (NaN)
    # keeps the order's commission unknown.
    return pd.DataFrame(
        {
            "fills": grouped.size(),
            "filled_quantity": grouped["quantity"].agg(math.fsum),
            "notional": grouped["notional"].agg(math.fsum),
            "commission": grouped["commission"].agg(math.fsum),
            "first_fill_at": grouped["time"].min(),
            "last_fill_at": grouped["time"].max(),
        }
    )


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """``numerator / denominator``, NaN rather than inf or a sign-flipped value where the denominator is not
    positive."""
    return numerator / denominator.where(denominator > 0)


def _positive(values: pd.Series) -> pd.Series:
    """Prices as floats, with non-positive ones made unknown: they cannot be a reference to divide by."""
    prices = pd.to_numeric(values).astype(float)
    return prices.where(prices > 0)


def _per_order(orders: pd.DataFrame, fills: pd.DataFrame, close_prices: dict[str, float]) -> pd.DataFrame:
    """The per-order table, every column vectorised over the orders (fills already aggregated)."""
    ids = orders["client_order_id"]
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"tca: duplicate client_order_id {duplicated}")
    o = orders.set_index("client_order_id")
    f = fills.reindex(o.index)  # orders without fills get NaN; fills of unknown orders drop out here

    side = o["side"].astype(str).str.upper()
    sign = side.map(_SIGN).astype(float)
    bad_side = sign.isna()
    if bad_side.any():
        raise ValueError(f"tca: side must be BUY or SELL, got {dict(side[bad_side])}")

    quantity = pd.to_numeric(o["quantity"]).astype(float)
    fill_count = f["fills"].fillna(0).astype(int)
    filled = f["filled_quantity"].fillna(0.0)
    has_filled = filled > 0
    avg = _ratio(f["notional"], filled)
    decision = _positive(o["decision_price"])
    arrival = _positive(o["arrival_price"])
    unfilled = (quantity - filled).clip(lower=0.0)
    close = o["symbol"].map(close_prices).astype(float)
    # Units of the underlying per unit traded (a future's or option's contract size; 1 for stocks and FX,
    # and for ledgers from before instruments): every money figure is price x quantity x multiplier.
    multiplier = pd.to_numeric(o["multiplier"]).astype(float).fillna(1.0)
    execution_cost = (sign * (avg - decision) * filled * multiplier).where(has_filled, 0.0)
    commission = f["commission"].where(fill_count > 0, 0.0)
    submitted = _naive_utc(o["submitted_at"])

    return pd.DataFrame(
        {
            "run_id": o["run_id"],
            "symbol": o["symbol"],
            "side": side,
            "currency": o["currency"],
            "status": o["status"],
            "quantity": quantity,
            "filled_quantity": filled,
            "unfilled_quantity": unfilled,
            "fill_ratio": _ratio(filled, quantity),
            "fills": fill_count,
            "avg_fill_price": avg,
            "decision_price": decision,
            "arrival_price": arrival,
            "slippage_decision_bps": sign * (avg - decision) / decision * 1e4,
            "slippage_arrival_bps": sign * (avg - arrival) / arrival * 1e4,
            "execution_cost": execution_cost,
            "commission": commission,
            "shortfall": execution_cost + commission,
            "close_price": close,
            "opportunity_cost": (sign * (close - decision) * unfilled * multiplier).where(unfilled > 0, 0.0),
            "first_fill_latency_s": (f["first_fill_at"] - submitted).dt.total_seconds(),
            "last_fill_latency_s": (f["last_fill_at"] - submitted).dt.total_seconds(),
            "multiplier": multiplier,
        },
        index=o.index,
    )


def _summary(per_order: pd.DataFrame) -> pd.DataFrame:
    """One row per currency (index ``currency``); see the module docstring for each column."""
    p = per_order
    benchmarked = p["decision_price"].notna()
    has_decision_slippage = p["slippage_decision_bps"].notna()
    has_arrival_slippage = p["slippage_arrival_bps"].notna()
    money = p["filled_quantity"] * p["multiplier"]  # underlying units filled: quantity x multiplier
    weight_decision = (money * p["decision_price"]).where(has_decision_slippage, 0.0)
    weight_arrival = (money * p["arrival_price"]).where(has_arrival_slippage, 0.0)
    # Every part is NaN-free except where a value that should count is unknown, so that a plain
    # skipna=False sum makes that total NaN instead of silently partial.
    parts = pd.DataFrame(
        {
            "currency": p["currency"],
            "orders": 1,
            "filled_orders": (p["filled_quantity"] > 0).astype(int),
            "quantity": p["quantity"],
            "filled_quantity": p["filled_quantity"],
            "notional_filled": (money * p["avg_fill_price"]).fillna(0.0),
            "weight_decision": weight_decision,
            "cost_decision": (weight_decision * p["slippage_decision_bps"]).where(has_decision_slippage, 0.0),
            "weight_arrival": weight_arrival,
            "cost_arrival": (weight_arrival * p["slippage_arrival_bps"]).where(has_arrival_slippage, 0.0),
            "execution_cost": p["execution_cost"].where(benchmarked, 0.0),
            "commission": p["commission"],
            "shortfall": p["shortfall"].where(benchmarked, 0.0),
            "opportunity_cost": p["opportunity_cost"].where(benchmarked, 0.0),
        }
    )
    sums = parts.groupby("currency", dropna=False, sort=True).sum(skipna=False)
    latency = p.groupby("currency", dropna=False, sort=True)[["first_fill_latency_s", "last_fill_latency_s"]]
    medians, maxima = latency.median(), latency.max()
    summary = pd.DataFrame(
        {
            "orders": sums["orders"],
            "filled_orders": sums["filled_orders"],
            "quantity": sums["quantity"],
            "filled_quantity": sums["filled_quantity"],
            "fill_ratio": _ratio(sums["filled_quantity"], sums["quantity"]),
            "notional_filled": sums["notional_filled"],
            "slippage_decision_bps": _ratio(sums["cost_decision"], sums["weight_decision"]),
            "slippage_arrival_bps": _ratio(sums["cost_arrival"], sums["weight_arrival"]),
            "execution_cost": sums["execution_cost"],
            "commission": sums["commission"],
            "shortfall": sums["shortfall"],
            "opportunity_cost": sums["opportunity_cost"],
            "first_fill_latency_median_s": medians["first_fill_latency_s"],
            "first_fill_latency_max_s": maxima["first_fill_latency_s"],
            "last_fill_latency_median_s": medians["last_fill_latency_s"],
            "last_fill_latency_max_s": maxima["last_fill_latency_s"],
        }
    )
    summary.index.name = "currency"
    return summary
