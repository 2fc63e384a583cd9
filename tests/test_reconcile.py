"""kit reconcile finds a planted break between the ledger and the gateway and clears it with --adopt."""

from __future__ import annotations

import duckdb

from kit.cli import main
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.ib_driver import execute

BASKET = {"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [200, 100]}


def test_reconcile_finds_a_planted_break_and_adopt_clears_it(tmp_path, monkeypatch, capsys):
    db = tmp_path / "kit.duckdb"
    with run_gateway_in_thread(GatewayConfig(partial_fills=3)) as gw:
        result = execute({"port": gw.port, "db": str(db), "run_key": "recon", "targets": BASKET})
        assert result["status"] == "done"
        monkeypatch.setenv("KIT_IB_PORT", str(gw.port))
        monkeypatch.setenv("KIT_IB_CLIENT_ID", "31")
        assert main(["--db", str(db), "reconcile", "--run", "recon"]) == 0
        assert capsys.readouterr().out.startswith("0 break(s)")

        # plant a break: a fill lost from the ledger, as if kit had crashed before writing it
        with duckdb.connect(str(db)) as con:
            lost = con.execute("SELECT exec_id, client_order_id, quantity FROM fills ORDER BY exec_id "
                               "LIMIT 1").fetchone()
            con.execute("DELETE FROM fills WHERE exec_id = ?", [lost[0]])
            con.execute("UPDATE orders SET filled_quantity = filled_quantity - ?, status = 'PARTIAL' "
                        "WHERE client_order_id = ?", [lost[2], lost[1]])

        assert main(["--db", str(db), "reconcile", "--run", "recon"]) == 1
        report = capsys.readouterr().out
        assert "missing_fill" in report and lost[0] in report and lost[1] in report

        assert main(["--db", str(db), "reconcile", "--run", "recon", "--adopt"]) == 0
        assert "adopted" in capsys.readouterr().out
        assert main(["--db", str(db), "reconcile", "--run", "recon"]) == 0
        capsys.readouterr()

    ordered = dict(zip(BASKET["symbol"], BASKET["quantity"], strict=True))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM fills WHERE exec_id = ?", [lost[0]]).fetchone()[0] == 1
        status, filled = con.execute("SELECT status, filled_quantity FROM orders WHERE client_order_id = ?",
                                     [lost[1]]).fetchone()
        assert (status, filled) == ("FILLED", ordered[lost[1].split("-")[1]])
        audit = con.execute("SELECT count(*) FROM order_events WHERE kind = 'adopted' "
                            "AND client_order_id = ?", [lost[1]]).fetchone()[0]
        assert audit >= 1
