"""Tables a quant reads: a plan and a run in Jupyter (kit.display), and plan.orders as a DataFrame."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import kit

pytestmark = pytest.mark.usefixtures("clean_config")


def headers(html: str) -> list[str]:
    return re.findall(r"<th>([^<]*)</th>", html)


def cells(html: str) -> list[list[str]]:
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>([^<]*)</td>", row) for row in body.split("</tr>") if "<td>" in row]


TARGETS = pd.DataFrame({"symbol": ["AAPL", "MSFT", "NFLX"], "side": ["BUY", "SELL", "BUY"],
                        "quantity": [100, 50, 10], "order_type": ["LMT", "MKT", "MKT"],
                        "limit_price": [189.5, None, None]})


def test_the_plan_shows_what_a_quant_reads_first_with_totals_and_blank_unknowns() -> None:
    plan = kit.plan(TARGETS, run_key="show", prices={"MSFT": 410.0}, risk={"max_order_notional": 18_000})
    html = plan._repr_html_()
    assert headers(html) == ["symbol", "side", "quantity", "type", "limit", "notional", "risk",
                             "client_order_id"]
    rows = cells(html)
    assert rows[0] == ["AAPL", "BUY", "100", "LMT", "189.50", "18,950.00",
                       "max_order_notional: 18,950.00 &gt; 18,000.00", "show-AAPL-BUY"]
    assert rows[1][:6] == ["MSFT", "SELL", "50", "MKT", "", "20,500.00"]  # no limit: blank, not None
    assert rows[2][5] == "" and "no price" in rows[2][6]  # NFLX has no price: no notional
    assert "None" not in html and "NaN" not in html
    # Gross counts every priced order, net nets sells against buys.
    assert "gross 39,450.00 &middot; net -1,550.00 (1 without a price)" in html
    assert "3 orders" in html and "3 stopped by risk" in html


def test_plan_orders_is_a_dataframe_like_run_orders(db) -> None:
    plan = kit.plan(TARGETS.iloc[1:], run_key="frame", prices={"MSFT": 410.0, "NFLX": 640.0})
    assert isinstance(plan.orders, pd.DataFrame)
    assert list(plan.orders.columns[:7]) == ["symbol", "side", "quantity", "order_type", "limit_price",
                                            "notional", "risk"]
    assert plan.orders["notional"].tolist() == [20_500.0, 6_400.0]
    run = kit.execute(plan, broker=kit.MockBroker(prices={"MSFT": 410.0, "NFLX": 640.0}), db=db,
                      progress=False)
    assert run.orders["client_order_id"].tolist() == plan.orders["client_order_id"].tolist()
    assert [i.client_order_id for i in plan.intents] == ["frame-MSFT-SELL", "frame-NFLX-BUY"]


def test_the_run_shows_status_fills_and_filled_notional(db) -> None:
    run = kit.execute(TARGETS.iloc[1:], broker=kit.MockBroker(prices={"MSFT": 410.0, "NFLX": 640.0}),
                      run_key="ran", db=db, progress=False)
    html = run._repr_html_()
    assert headers(html)[:8] == ["symbol", "side", "quantity", "type", "limit", "status", "filled",
                                 "avg price"]
    assert cells(html)[0][:8] == ["MSFT", "SELL", "50", "MKT", "", "FILLED", "50", "410.00"]
    assert "filled notional: gross 26,900.00 &middot; net -14,100.00" in html
    assert "None" not in html and "NaN" not in html
