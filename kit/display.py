"""How a plan and a run look in Jupyter: the columns a quant reads first, totals, blanks for unknowns.

Everything else stays in the DataFrames (`plan.orders`, `run.orders`); these tables are for eyes. Numbers
read like kit's terminal tables (kit.tables): whole shares without `.0`, prices without float noise, money
with thousands separators, and an empty cell where a value is unknown (never `None` or `NaN`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from kit.tables import blank, price, quantity, text

if TYPE_CHECKING:
    from kit.engine import Run
    from kit.planner import Plan


def money(value: Any) -> str:
    return "" if blank(value) else f"{value:,.2f}"


# (column of the frame, header, how a cell reads)
Column = tuple[str, str, Callable[[Any], str]]
PLAN_COLUMNS: Sequence[Column] = (
    ("symbol", "symbol", text), ("side", "side", text), ("quantity", "quantity", quantity),
    ("order_type", "type", text), ("limit_price", "limit", price), ("notional", "notional", money),
    ("risk", "risk", text), ("client_order_id", "client_order_id", text),
)
# A plan made from target positions also says where each symbol stands and where it goes.
POSITION_COLUMNS: Sequence[Column] = (
    ("current", "current", quantity), ("target", "target", quantity), ("delta", "delta", quantity),
)
RUN_COLUMNS: Sequence[Column] = (
    ("symbol", "symbol", text), ("side", "side", text), ("quantity", "quantity", quantity),
    ("order_type", "type", text), ("limit_price", "limit", price), ("status", "status", text),
    ("filled_quantity", "filled", quantity), ("avg_fill_price", "avg price", price),
    ("commission", "commission", money), ("reason", "reason", text),
    ("client_order_id", "client_order_id", text),
)


def table(frame: pd.DataFrame, columns: Sequence[Column]) -> str:
    """An HTML table of `frame`'s `columns`, each cell formatted as text first (so nothing reads `None`)."""
    shown = pd.DataFrame({header: [show(v) for v in frame[name]] if name in frame.columns else ""
                          for name, header, show in columns}, index=frame.index)
    return shown.to_html(index=False, escape=True, classes="kit-table")


def totals(sides: pd.Series, notional: pd.Series, currencies: pd.Series | None = None) -> str:
    """Gross (every order counts) and net (buys minus sells) notional; unknown notionals count as none.
    Money in different currencies is never added: one total per currency."""
    if currencies is not None and currencies.nunique() > 1:
        return "; ".join(f"{escape(str(c))} {totals(sides[currencies == c], notional[currencies == c])}"
                         for c in sorted(currencies.unique()))
    known = pd.to_numeric(notional, errors="coerce").fillna(0.0)
    signed = known.where(sides.astype(str) == "BUY", -known)
    missing = int(pd.to_numeric(notional, errors="coerce").isna().sum())
    unknown = f" ({missing} without a price)" if missing else ""
    return f"gross {money(known.abs().sum())} &middot; net {money(signed.sum())}{unknown}"


def plan_html(plan: Plan) -> str:
    frame = plan.orders
    stopped = int((frame["risk"] != "ok").sum())
    title = (f"<b>Plan</b> {escape(plan.run_key)} &middot; {len(frame)} orders"
             f"{f' &middot; <b>{stopped} stopped by risk</b>' if stopped else ''} &middot; "
             f"hash <code>{plan.hash}</code>")
    footer = (f"<p>notional: {totals(frame['side'], frame['notional'], frame['currency'])}; "
              "every column: <code>plan.orders</code></p>")
    columns = [*PLAN_COLUMNS[:-1], *(POSITION_COLUMNS if plan.targets else ()), PLAN_COLUMNS[-1]]
    return f"<p>{title}</p>{table(frame, columns)}{footer}"


def run_html(run: Run) -> str:
    frame = run.orders
    notes = "".join(f"<br>{escape(n)}" for n in run.notes)
    title = (f"<b>Run</b> {escape(run.run_key)} &middot; <b>{escape(str(run.status))}</b> &middot; "
             f"{len(frame)} orders &middot; {len(run.fills)} fills{notes}")
    if not len(frame):
        return f"<p>{title}</p>"
    filled = pd.to_numeric(frame["filled_quantity"], errors="coerce") * pd.to_numeric(
        frame["avg_fill_price"], errors="coerce")
    if "multiplier" in frame.columns:  # a future's or option's money is price x multiplier per contract
        filled = filled * pd.to_numeric(frame["multiplier"], errors="coerce").fillna(1.0)
    currencies = frame["currency"] if "currency" in frame.columns else None
    footer = (f"<p>filled notional: {totals(frame['side'], filled.where(filled.notna(), 0.0), currencies)}; "
              "every column: <code>run.orders</code>, <code>run.fills</code></p>")
    return f"<p>{title}</p>{table(frame, RUN_COLUMNS)}{footer}"
