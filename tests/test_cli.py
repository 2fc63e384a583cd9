"""The `kit` command as people and scripts use it: tables that fit the terminal, newest first, readable
values; --json and --csv; validated filters; global options anywhere; user errors as `kit: <message>`
with exit 2 and no traceback (checked in a real subprocess); shell completion from the parser itself."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kit
import kit.api
from kit.brokers.mock import MockBroker
from kit.cli import main

REPO = Path(__file__).resolve().parents[1]
PRICES = {"AAPL": 190.0, "MSFT": 410.123}
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def ledger_with_runs(tmp_path_factory):
    """Two runs: `first` done (1153 AAPL bought), then `second` partial (ZZZZ has no price). Built once."""
    db = tmp_path_factory.mktemp("cli") / "kit.duckdb"
    kit.execute(pd.DataFrame({"symbol": ["AAPL", "MSFT"], "quantity": [1153, -30]}), prices=PRICES,
                run_key="first", db=db, timeout=5)
    kit.execute(pd.DataFrame({"symbol": ["AAPL", "ZZZZ"], "quantity": [5, 5]}), prices=PRICES,
                run_key="second", db=db, timeout=5)
    return db


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[str]:
    """The table's body: what follows the header, without the notes in parentheses."""
    return [line for line in out.splitlines()[1:] if line.strip() and not line.startswith("(")]


def kit_process(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kit.cli", *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)


# ---- tables for people -----------------------------------------------------------------------------------
def test_runs_newest_first_with_human_timestamps(ledger_with_runs, capsys):
    code, out, err = run_cli(capsys, "--db", ledger_with_runs, "runs")
    assert code == 0 and err == ""
    assert out.splitlines()[0].split()[:3] == ["run", "key", "status"]
    second, first = rows(out)
    assert second.split()[:2] == ["second", "partial"] and first.split()[:2] == ["first", "done"]
    assert STAMP.search(first) and not re.search(r"\d\d:\d\d:\d\d\.\d", out)  # to the second, no micros
    assert not re.search(r"\b(nan|NaN|NaT|None)\b", out)  # unknowns are blank


def test_orders_show_whole_shares_clean_prices_and_blanks(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "orders", "--run", "first")
    assert code == 0
    by_order = {line.split()[0]: line.split() for line in rows(out)}
    assert set(by_order) == {"first-AAPL-BUY", "first-MSFT-SELL"}
    assert "1153" in by_order["first-AAPL-BUY"] and "1153.0" not in out
    assert "410.123" in by_order["first-MSFT-SELL"] and "190.00" in by_order["first-AAPL-BUY"]
    assert not re.search(r"\b(nan|NaN|NaT|None)\b", out)  # no limit price on a MKT order: a blank


@pytest.mark.parametrize("width", [60, 80, 120, 200])
@pytest.mark.parametrize("table", ["runs", "orders", "fills"])
def test_tables_fit_the_terminal_and_never_cut_a_value(ledger_with_runs, capsys, monkeypatch, width, table):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, table)
    assert code == 0
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width
    if width >= 80:  # ids and quantities are whole: columns are left out before anything is cut
        words = out.split()
        if table != "runs":
            assert "first-AAPL-BUY" in words and "1153" in words
        else:
            assert {"first", "second", "done", "partial"} <= set(words)
    if width == 200:
        assert "(not shown" not in out
    elif table == "orders":
        assert "(not shown, to fit" in out and "--json has every column" in out


def test_the_newest_fills_first_and_limit(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "fills", "--limit", "1")
    assert code == 0
    [only] = rows(out)
    assert "second-AAPL-BUY" in only
    assert "(1 newest of 3; --limit N for more, 0 for all)" in out


def test_an_empty_table_says_none(db, capsys):
    kit.execute(pd.DataFrame({"symbol": ["ZZZZ"], "quantity": [1]}), prices=PRICES, run_key="k", db=db,
                timeout=5)
    code, out, _ = run_cli(capsys, "--db", db, "fills")
    assert code == 0 and out.strip() == "(none)"


def test_summary_of_the_latest_run_and_of_a_named_one(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "summary")
    assert code == 0 and out.startswith("run second (") and "partial" in out.splitlines()[0]
    assert "REJECTED 1" in out and "second-ZZZZ-BUY" in out and "price_unavailable" in out
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "summary", "--run", "first")
    assert code == 0 and out.startswith("run first (") and "done" in out.splitlines()[0]


def test_reading_commands_let_go_of_the_ledger(ledger_with_runs, capsys):
    """DuckDB lets one process write the file: a read must not keep it from the next run."""
    for command in (["summary"], ["tca", "--run", "first"], ["runs"], ["orders"], ["fills"],
                    ["cancel", "--run", "first"]):
        assert run_cli(capsys, "--db", ledger_with_runs, *command)[0] == 0
        code = f"import duckdb; duckdb.connect({str(ledger_with_runs)!r})"
        writer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert writer.returncode == 0, (command, writer.stderr)


# ---- JSON and CSV for scripts ----------------------------------------------------------------------------
def test_json_gives_every_column_with_plain_values(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "orders", "--json")
    assert code == 0
    orders = json.loads(out)
    assert [o["client_order_id"] for o in orders[:2]] == ["second-ZZZZ-BUY", "second-AAPL-BUY"] or \
        [o["client_order_id"] for o in orders[:2]] == ["second-AAPL-BUY", "second-ZZZZ-BUY"]
    aapl = next(o for o in orders if o["client_order_id"] == "first-AAPL-BUY")
    assert aapl["quantity"] == 1153 and isinstance(aapl["quantity"], int)
    assert aapl["limit_price"] is None and aapl["avg_fill_price"] == 190
    assert pd.Timestamp(aapl["created_at"]).year >= 2026  # ISO 8601
    assert {"symbol", "commission", "reason", "created_at"} <= set(aapl)  # the columns a table may hide
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--json", "--limit", "1")
    assert [r["run_key"] for r in json.loads(out)] == ["second"]


def test_csv_has_a_header_and_blank_unknowns(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "fills", "--csv")
    assert code == 0
    fills = list(csv.DictReader(io.StringIO(out)))
    assert len(fills) == 3 and fills[0]["client_order_id"] == "second-AAPL-BUY"
    assert {f["quantity"] for f in fills} == {"5", "30", "1153"}
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--csv")
    assert [r["error"] for r in csv.DictReader(io.StringIO(out))] == ["", ""]


def test_json_and_csv_exclude_each_other(ledger_with_runs, capsys):
    code, _, err = run_cli(capsys, "--db", ledger_with_runs, "runs", "--json", "--csv")
    assert code == 2 and "kit: argument --csv: not allowed with argument --json" in err


# ---- arguments as people type them -----------------------------------------------------------------------
def test_global_options_before_or_after_the_subcommand(ledger_with_runs, capsys):
    before = run_cli(capsys, "--db", ledger_with_runs, "runs", "--json")
    after = run_cli(capsys, "runs", "--json", "--db", ledger_with_runs)
    assert before == after and before[0] == 0 and len(json.loads(before[1])) == 2


def test_filters_by_status_in_any_case_and_by_date(ledger_with_runs, capsys):
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--status", "PARTIAL")
    assert code == 0 and [r.split()[0] for r in rows(out)] == ["second"]
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "orders", "--status", "rejected")
    assert code == 0 and [r.split()[0] for r in rows(out)] == ["second-ZZZZ-BUY"]
    started = kit.ledger(ledger_with_runs).runs()["started_at"].iloc[0]
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "runs", "--date", f"{started:%Y-%m-%d}")
    assert code == 0 and len(rows(out)) == 2
    for table in ("runs", "orders", "fills"):
        code, out, _ = run_cli(capsys, "--db", ledger_with_runs, table, "--date", "1999-01-01")
        assert code == 0 and out.strip() == "(none)"


@pytest.mark.parametrize(("argv", "message"), [
    (["runs", "--status", "bogus"], "kit: argument --status: invalid choice: 'bogus' (choose from 'running', "
                                    "'done', 'partial', 'failed', 'planned', 'skipped', 'disconnected')"),
    (["orders", "--status", "bogus"], "invalid choice: 'BOGUS' (choose from 'NEW', 'SUBMITTED', 'PARTIAL', "
                                      "'FILLED', 'CANCELLED', 'REJECTED')"),
    (["runs", "--date", "2026/12/01"], "kit: argument --date: '2026/12/01' is not a date: use YYYY-MM-DD"),
    (["fills", "--date", "yesterday"], "'yesterday' is not a date"),
    (["runs", "--limit", "-3"], "kit: argument --limit: '-3' is not a count"),
    (["cancel", "--all", "--timeout", "-1"], "argument --timeout: '-1' is not a number of seconds"),
    (["run", "nb.ipynb", "--execution-timeout", "0.5"], "'0.5' is not a whole number of seconds"),
    (["run", "nb.ipynb", "--broker", "foo"], "argument --broker: invalid choice: 'foo' (choose from 'mock', "
                                             "'ib')"),
    (["bogus"], "kit: argument COMMAND: invalid choice: 'bogus'"),
])
def test_a_bad_filter_or_command_is_an_error_listing_what_is_valid(ledger_with_runs, capsys, argv, message):
    code, out, err = run_cli(capsys, "--db", ledger_with_runs, *argv)
    assert code == 2 and out == ""
    assert message in err and err.startswith("kit: ") and "usage:" not in err


@pytest.mark.parametrize("command", [["runs"], ["orders"], ["fills"], ["summary"], ["orders", "--run", "x"],
                                     ["reconcile", "--broker", "mock"]])
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


# ---- errors in a real process: `kit: <message>`, exit 2, a traceback only when asked --------------------
def test_a_user_error_exits_2_without_a_traceback_unless_debug(tmp_path):
    missing = tmp_path / "nothing.duckdb"
    done = kit_process("--db", missing, "runs")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("kit: no ledger at ") and "Traceback" not in done.stderr
    for debug in (kit_process("runs", "--debug", "--db", missing), kit_process("runs", "--db", missing,
                                                                               env={"KIT_DEBUG": "1"})):
        assert debug.returncode == 2
        assert "Traceback (most recent call last)" in debug.stderr and "kit: no ledger at " in debug.stderr


def test_a_refused_notebook_run_exits_2_in_a_process(tmp_path):
    done = kit_process("--db", tmp_path / "k.duckdb", "run", "notebooks/momentum.ipynb",
                       "-p", "capital", "abc")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "kit: parameter capital: 'abc' is not a float" in done.stderr
    assert not (tmp_path / "k.duckdb").exists()


def test_an_explicit_empty_run_key_is_refused_not_replaced_by_the_default(tmp_path):
    """An empty key never resumes anything: `kit run --run-key ''` is a mistake, not "today's run"."""
    done = kit_process("--db", tmp_path / "k.duckdb", "run", "notebooks/momentum.ipynb", "--run-key", "")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("kit: ") and "run_key" in done.stderr
    assert not (tmp_path / "k.duckdb").exists()


def test_help_loads_neither_pandas_nor_duckdb():
    code = ("import sys\nfrom kit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pandas', 'duckdb', 'papermill', 'rich') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ---- commands that speak ---------------------------------------------------------------------------------
def test_cancel_with_nothing_working_says_so_and_contacts_no_broker(ledger_with_runs, capsys, monkeypatch):
    monkeypatch.setattr(kit.api, "make_broker", lambda *a, **k: pytest.fail("no broker needed"))
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "cancel", "--run", "first")
    assert code == 0 and out == "nothing was working: run first has no order at the broker\n"
    code, out, _ = run_cli(capsys, "--db", ledger_with_runs, "cancel", "--all")
    assert code == 0 and out == "nothing was working: no run has an order at the broker\n"


def test_cancel_says_what_it_cancelled(db, capsys, monkeypatch):
    broker = MockBroker(prices={"MSFT": 400.0, "AAPL": 200.0})
    resting = pd.DataFrame({"symbol": ["MSFT", "AAPL"], "side": "BUY", "quantity": [10, 5],
                            "order_type": ["LMT", "MKT"], "limit_price": [300.0, None]})
    kit.execute(resting, broker=broker, run_key="rest", db=db, timeout=0.3, on_timeout="leave")
    code, out, _ = run_cli(capsys, "--db", db, "summary", "--run", "rest")
    assert code == 0 and "  note: 1 order(s) left working at the broker" in out  # the run's notes
    monkeypatch.setattr(kit.api, "make_broker", lambda *a, **k: broker)  # the broker that holds the order
    code, out, err = run_cli(capsys, "--db", db, "cancel", "--run", "rest")
    assert code == 0 and err == ""
    assert out.splitlines()[:2] == ["cancelling 1 working order(s) in 1 run(s)...",
                                    "  cancelled      rest-MSFT-BUY  0/10 filled"]


# ---- shell completion ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_are_generated_from_the_parser(capsys, shell):
    code, out, _ = run_cli(capsys, "completion", shell)
    assert code == 0
    assert all(command in out for command in ("runs", "orders", "schedule", "reconcile", "completion"))
    assert "--status" in out and "skipped" in out  # options and their valid values
    assert out.startswith("#compdef kit") if shell == "zsh" else "-F _shtab_kit kit" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_subcommands_and_status_values(capsys):
    main(["completion", "bash"])
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        line = " ".join(["kit", *words])
        program = (f'{script}\nCOMP_WORDS=(kit {" ".join(words)}); COMP_CWORD={len(words)}; '
                   f'COMP_LINE="{line}"; COMP_POINT={len(line)}; _shtab_kit; '
                   'printf "%s\\n" "${COMPREPLY[@]}"')
        done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
        return done.stdout.split()

    assert {"reconcile", "runs"} <= set(complete("r"))
    assert set(complete("runs", "--status", "p")) == {"partial", "planned"}
