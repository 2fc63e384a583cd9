"""The `kit` command's ledger tables: runs, orders, fills and summary; errors exit 2 with a clear message."""

from __future__ import annotations

import pandas as pd
import pytest

import kit
from kit.cli import main

PRICES = {"AAPL": 190.0, "MSFT": 410.0}


@pytest.fixture(scope="module")
def ledger_with_runs(tmp_path_factory):
    """Two runs: one done, one partial (a symbol the mock has no price for). Built once: tests only read."""
    db = tmp_path_factory.mktemp("cli") / "kit.duckdb"
    kit.execute(pd.DataFrame({"symbol": ["AAPL", "MSFT"], "quantity": [100, -30]}), prices=PRICES,
                run_key="first", db=db, timeout=5)
    kit.execute(pd.DataFrame({"symbol": ["AAPL", "ZZZZ"], "quantity": [5, 5]}), prices=PRICES,
                run_key="second", db=db, timeout=5)
    return db


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_prints_one_row_per_run(ledger_with_runs, capsys):
    code, out, err = run_cli(capsys, "--db", ledger_with_runs, "runs")
    assert code == 0 and err == ""
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["run_id", "run_key", "broker", "status"]
    assert len(rows) == 2
    assert "first" in rows[0] and "done" in rows[0]
    assert "second" in rows[1] and "partial" in rows[1]


def test_runs_filters_by_status_and_date(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--status", "partial")
    assert code == 0 and "second" in out and "first" not in out
    started = kit.ledger(ledger_with_runs).runs()["started_at"].iloc[0]
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--date", f"{started:%Y-%m-%d}")
    assert code == 0 and "first" in out and "second" in out
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--date", "1999-01-01")
    assert code == 0 and out.strip() == "(none)"


def test_orders_of_one_run_by_key(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "orders", "--run", "first")
    assert code == 0
    assert "first-AAPL-BUY" in out and "first-MSFT-SELL" in out and "second-" not in out
    assert "FILLED" in out and "filled_quantity" in out.splitlines()[0]


def test_orders_filtered_by_status_in_any_case(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "orders", "--status", "rejected")
    assert code == 0
    assert "second-ZZZZ-BUY" in out and "price_unavailable" in out
    assert len(out.strip().splitlines()) == 2  # header + the one rejected order


def test_fills_of_all_runs_and_of_one(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "fills")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 3
    run_id = kit.ledger(ledger_with_runs).resolve_run("second")
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "fills", "--run", run_id)
    assert code == 0 and len(out.strip().splitlines()) == 1 + 1
    assert "second-AAPL-BUY" in out and "190" in out


def test_summary_of_the_latest_run(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "summary")
    assert code == 0
    assert out.startswith("run second (")
    assert "partial" in out.splitlines()[0]
    assert "REJECTED 1" in out and "second-ZZZZ-BUY" in out


def test_summary_of_a_named_run(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "summary", "--run", "first")
    assert code == 0 and out.startswith("run first (") and "done" in out.splitlines()[0]


@pytest.mark.parametrize("command", [["runs"], ["orders"], ["fills"], ["summary"], ["orders", "--run", "x"]])
def test_a_missing_ledger_exits_2_with_a_clear_message(db, capsys, command):
    code, out, err = run_cli(capsys, "--db", db, *command)
    assert code == 2 and out == ""
    assert err.startswith("kit: no ledger at ") and str(db.name) in err and "KIT_DB" in err
    assert not db.exists()


def test_an_unknown_run_exits_2(ledger_with_runs, capsys):
    code, _, err = run_cli(capsys, "--db", ledger_with_runs, "orders", "--run", "nope")
    assert code == 2 and "kit: no run 'nope'" in err


def test_the_default_ledger_comes_from_kit_db(ledger_with_runs, capsys, monkeypatch):
    monkeypatch.setenv("KIT_DB", str(ledger_with_runs))
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "first" in out


def test_an_empty_table_says_none(db, capsys):
    kit.execute(pd.DataFrame({"symbol": ["ZZZZ"], "quantity": [1]}), prices=PRICES, run_key="k", db=db,
                timeout=5)
    code, out, _ = run_cli(capsys, "--db", db, "fills")
    assert code == 0 and out.strip() == "(none)"



def test_orders_and_fills_filter_by_date(capsys, db):
    kit.execute(pd.DataFrame({"symbol": ["AAPL"], "side": ["BUY"], "quantity": [5]}), run_key="dated", db=db,
                prices={"AAPL": 190.0})
    today = kit.ledger(db).orders()["created_at"].iloc[0].strftime("%Y-%m-%d")
    for table in ("orders", "fills"):
        assert main(["--db", str(db), table, "--date", today]) == 0
        assert "dated-AAPL-BUY" in capsys.readouterr().out
        assert main(["--db", str(db), table, "--date", "1999-01-01"]) == 0
        assert capsys.readouterr().out.strip() == "(none)"
