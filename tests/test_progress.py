"""Feedback while kit follows orders: what a notebook, a terminal and a log get (kit.progress).

A notebook executed headlessly (nbclient, as papermill does) must keep one progress output holding the
final state, not one per update; a terminal gets tqdm's bar; anything else a few lines.
"""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import kit
from kit.progress import choose

pytestmark = pytest.mark.usefixtures("clean_config")
PRICES = {"AAPL": 190.0, "MSFT": 410.0, "NFLX": 640.0}
TARGETS = pd.DataFrame({"symbol": list(PRICES), "side": "BUY", "quantity": [300, 200, 100]})


def slow_broker() -> kit.MockBroker:
    """Fills in 5 pieces 20 ms apart: a run of many events, long enough for several redraws."""
    return kit.MockBroker(prices=PRICES, partial_fills=5, latency=0.02)


def test_a_notebook_keeps_one_progress_output_with_the_final_state(tmp_path) -> None:
    db = tmp_path / "kit.duckdb"
    source = (f"import pandas as pd, kit\nbroker = kit.MockBroker(prices={PRICES!r}, partial_fills=5, "
              "latency=0.02)\n"
              f"run = kit.execute(pd.DataFrame({TARGETS.to_dict('list')!r}).assign(side='BUY'), "
              f"broker=broker, run_key='nb', db={str(db)!r})")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    where = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources=where).execute()
    outputs = notebook.cells[0].outputs
    progress = [o for o in outputs if "kit-progress" in o.get("data", {}).get("text/html", "")]
    assert len(progress) == 1, [o.get("output_type") for o in outputs]
    assert progress[0]["data"]["text/plain"].startswith("kit: done: 3/3 orders done, 0 working, 600 shares")
    assert '<progress value="3" max="3"' in progress[0]["data"]["text/html"]
    assert not [o for o in outputs if o["output_type"] == "stream"]  # no log lines besides the display


def test_a_terminal_gets_a_bar_on_stderr(capsys, db) -> None:
    run = kit.execute(TARGETS, broker=slow_broker(), run_key="bar", db=db, progress="bar")
    assert run.status == "done"
    err = capsys.readouterr().err
    assert "kit done" in err and "3/3" in err and "600 sh" in err


def test_a_log_gets_a_few_lines_however_many_events(capsys, db) -> None:
    run = kit.execute(TARGETS, broker=slow_broker(), run_key="log", db=db, progress="log")
    assert run.status == "done" and len(run.fills) == 15
    lines = capsys.readouterr().err.splitlines()
    # One when following starts, one per LOG_EVERY seconds (this run is far shorter), one at the end.
    assert 1 < len(lines) <= 3, lines
    assert lines[-1].startswith("kit: done: 3/3 orders done, 0 working, 600 shares filled, notional")


def test_progress_off_prints_nothing(capsys, db) -> None:
    kit.execute(TARGETS, broker=slow_broker(), run_key="off", db=db, progress=False)
    assert capsys.readouterr().err == ""


def test_outside_a_kernel_auto_picks_a_bar_for_a_terminal_else_lines(monkeypatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    assert choose("auto") == "bar"
    monkeypatch.undo()
    assert choose("auto") == "log"  # pytest's captured stderr is no terminal
    with pytest.raises(ValueError, match="progress must be one of"):
        choose("widget")


def test_a_snapshot_counts_what_the_orders_say_of_themselves() -> None:
    """Snapshot.of reads each order's sums once; its figures are the orders' own properties, added up."""
    import math
    from dataclasses import replace
    from datetime import datetime

    from kit.model import Fill, Order, OrderIntent, Side, Status
    from kit.progress import Snapshot

    now = datetime(2026, 12, 2, 15, 0)
    intent = OrderIntent("o", "ES", Side.BUY, 10.0)

    def order(status: Status, fills: list[tuple[float, float]], sent: bool = True,
              multiplier: float | None = None) -> Order:
        made = Order(replace(intent, multiplier=multiplier), "r", now, now, status=status,
                     submitted_at=now if sent else None)
        for i, (quantity, price) in enumerate(fills):
            made.fills[f"k{i}"] = Fill(f"x{i}", "o", quantity, price, now, 1.0, key=f"k{i}")
        return made

    orders = [order(Status.NEW, [], sent=False), order(Status.SUBMITTED, []),
              order(Status.PARTIAL, [(3, 10.0), (2, 10.5)], multiplier=50.0),
              order(Status.FILLED, [(10, 4.0)]), order(Status.CANCELLED, [(4, 2.0)]),
              order(Status.REJECTED, [])]
    snapshot = Snapshot.of(iter(orders), 1.5)
    filled = [o for o in orders if o.avg_fill_price is not None]
    assert snapshot == Snapshot(
        orders=6, done=sum(not o.can_fill for o in orders), working=sum(o.working for o in orders),
        filled=math.fsum(o.filled_quantity for o in filled),
        notional=math.fsum(o.filled_quantity * o.avg_fill_price * (o.intent.multiplier or 1.0)
                           for o in filled),
        elapsed=1.5)
    assert (snapshot.done, snapshot.working, snapshot.filled) == (3, 2, 19.0)
    assert snapshot.notional == 3 * 10.0 * 50 + 2 * 10.5 * 50 + 40.0 + 8.0
