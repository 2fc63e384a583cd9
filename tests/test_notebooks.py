"""The shipped notebooks as their users run them: papermill reads every parameter, `kit run` takes them all,
and a plain papermill re-run (no run_key) resumes today's run instead of sending again.

Real papermill and real kernels against a fresh ledger per test; a kernel costs a few seconds, so each test
runs the notebook only as often as its case needs.
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MOMENTUM = ROOT / "notebooks" / "momentum.ipynb"
KIT = Path(sys.executable).parent / "kit"


def parameters_cell(notebook: Path) -> str:
    tagged = [cell for cell in nbformat.read(notebook, as_version=4).cells
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: {len(tagged)} cells tagged 'parameters'"
    return tagged[0].source


def declared(source: str) -> dict[str, str]:
    """What Python itself sees in a parameters cell: each assigned name and its annotation."""
    names = {}
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.AnnAssign), f"not `name: type = value`: {ast.unparse(statement)}"
        names[statement.target.id] = ast.unparse(statement.annotation)
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_papermill_reads_every_parameter_with_its_type_and_no_warning(notebook: Path, caplog):
    with caplog.at_level(logging.DEBUG, logger="papermill"):
        found = papermill.inspect_notebook(str(notebook))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    expected = declared(parameters_cell(notebook))
    assert {name: p["inferred_type_name"] for name, p in found.items()} == expected
    assert all(p["help"] for p in found.values()), "every parameter carries its comment as help"


def ledger_counts(db: Path) -> dict[str, object]:
    with duckdb.connect(str(db), read_only=True) as con:
        def one(sql: str) -> int:
            return con.execute(sql).fetchone()[0]

        return {
            "run_keys": [key for (key,) in con.execute("SELECT run_key FROM runs ORDER BY 1").fetchall()],
            "orders": one("SELECT count(*) FROM orders"),
            "filled": one("SELECT count(*) FROM orders WHERE status = 'FILLED'"),
            "fills": one("SELECT count(*) FROM fills"),
            "submitted": one("SELECT count(*) FROM order_events WHERE kind = 'submitted'"),
        }


def test_kit_run_takes_approve_on_the_mock_and_finishes(tmp_path: Path):
    """`approve` is a parameter like any other (papermill used to drop it), and a mock account ignores it."""
    db = tmp_path / "kit.duckdb"
    done = subprocess.run([str(KIT), "--db", str(db), "run", str(MOMENTUM), "-p", "broker", "mock",
                           "-p", "approve", "somehash", "--run-key", "approve-on-mock"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unable to parse" not in done.stderr
    assert "run approve-on-mock (" in done.stdout and ": done" in done.stdout
    counts = ledger_counts(db)
    assert counts["run_keys"] == ["approve-on-mock"] and counts["orders"] == counts["filled"] > 0


def run_momentum(tmp_path: Path, name: str, **parameters: object) -> Path:
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(MOMENTUM), str(out), parameters=parameters, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path))
    return out


def test_plain_papermill_twice_resumes_and_changed_capital_is_refused(tmp_path: Path):
    db = tmp_path / "kit.duckdb"
    before = f"momentum-{datetime.now(UTC):%Y-%m-%d}"
    run_momentum(tmp_path, "first", db=str(db))
    first = ledger_counts(db)
    key = first["run_keys"][0]
    assert first["run_keys"] == [key] and key in (before, f"momentum-{datetime.now(UTC):%Y-%m-%d}")
    assert first["orders"] == first["filled"] == first["submitted"] > 0

    run_momentum(tmp_path, "again", db=str(db))  # a plain retry: no run_key, the same day
    assert ledger_counts(db) == first, "the second run sent or recorded new orders"

    with pytest.raises(PapermillExecutionError) as refused:
        run_momentum(tmp_path, "changed", db=str(db), capital=500_000.0, run_key=key)
    assert refused.value.ename == "PayloadConflictError"
    message = refused.value.evalue
    assert f"run_key {key!r}" in message and "nothing was sent" in message
    assert re.search(r"new run_key", message), message  # how to start a new run
    assert re.search(rf"{key}-\w+-BUY: quantity \S+ -> \S+", message), message  # which order changed
    assert ledger_counts(db) == first


def test_a_plan_with_other_orders_under_the_same_key_is_refused(tmp_path: Path):
    """A different lookback swaps a leader: orders added under a key that already traded are refused too."""
    db = tmp_path / "kit.duckdb"
    run_momentum(tmp_path, "first", db=str(db), run_key="lookback-test")
    first = ledger_counts(db)
    with pytest.raises(PapermillExecutionError) as refused:
        run_momentum(tmp_path, "changed", db=str(db), run_key="lookback-test", lookback=20)
    assert refused.value.ename == "PayloadConflictError"
    assert "start a new run with a new run_key (papermill -p run_key KEY" in refused.value.evalue
    assert ledger_counts(db) == first
