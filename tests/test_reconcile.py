"""Reconcile finds a planted break between the ledger and the gateway and clears it with adopt."""

from __future__ import annotations

from datetime import date, datetime

import duckdb

from kit.gateway import GatewayConfig, run_gateway_in_thread
from kit.model import Fill, Order, OrderIntent, Side
from kit.reconcile import compare, reconcile
from tests.ib_driver import execute

BASKET = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [200, 100]}


def test_reconcile_finds_a_planted_break_and_adopt_clears_it(tmp_path, monkeypatch):
    db = tmp_path / "kit.duckdb"
    with run_gateway_in_thread(GatewayConfig(partial_fills=3)) as gw:
        result = execute({"port": gw.port, "db": str(db), "run_key": "recon", "targets": BASKET})
        assert result["status"] == "done"
        monkeypatch.setenv("KIT_IB_PORT", str(gw.port))
        monkeypatch.setenv("KIT_IB_CLIENT_ID", "31")
        assert str(reconcile("recon", db=db)).startswith("0 break(s)")

        # plant a break: a fill lost from the ledger, as if kit had crashed before writing it
        with duckdb.connect(str(db)) as con:
            lost = con.execute("SELECT exec_id, client_order_id, quantity FROM fills ORDER BY exec_id "
                               "LIMIT 1").fetchone()
            con.execute("DELETE FROM fills WHERE exec_id = ?", [lost[0]])
            con.execute("UPDATE orders SET filled_quantity = filled_quantity - ?, status = 'PARTIAL' "
                        "WHERE client_order_id = ?", [lost[2], lost[1]])

        found = reconcile("recon", db=db)
        report = str(found)
        assert len(found.breaks) and "missing_fill" in report and lost[0] in report and lost[1] in report

        adopted = reconcile("recon", db=db, adopt=True)
        assert adopted.breaks.empty and "adopted" in str(adopted)
        assert reconcile("recon", db=db).breaks.empty

    ordered = dict(zip(BASKET["symbol"], BASKET["quantity"], strict=True))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM fills WHERE exec_id = ?", [lost[0]]).fetchone()[0] == 1
        status, filled = con.execute("SELECT status, filled_quantity FROM orders WHERE client_order_id = ?",
                                     [lost[1]]).fetchone()
        assert (status, filled) == ("FILLED", ordered[lost[1].split("-")[1]])
        audit = con.execute("SELECT count(*) FROM order_events WHERE kind = 'adopted' "
                            "AND client_order_id = ?", [lost[1]]).fetchone()[0]
        assert audit >= 1


def test_only_a_fill_of_the_day_the_broker_lists_is_a_break_when_the_broker_lacks_it():
    """compare is pure: the day is given. IB lists only today's executions, so an older fill it does not
    list is no break."""
    intent = OrderIntent("k-AAPL-BUY", "AAPL", Side.BUY, 10)
    at = datetime(2026, 11, 20, 15, 0)
    order = Order(intent, "r1", at, at, submitted_at=at)
    order.fills["x"] = Fill("x", "k-AAPL-BUY", 10, 1.0, at, commission=1.0)
    same = {"k-AAPL-BUY": order}
    kinds = [b["kind"] for b in compare(same, same, {"k-AAPL-BUY"}, set(), date(2026, 11, 20))]
    assert kinds == ["fill_not_at_broker"]
    assert compare(same, same, {"k-AAPL-BUY"}, set(), date(2026, 11, 21)) == []
