"""The review surface end to end: a ledger with one mock run and one IB run of the same targets, then
`kit.tca`, `kit tca` and notebooks/review.ipynb (papermill, a real kernel) on it.

The IB run goes through kit's simulated gateway in a thread with ib_async, as tests/test_ib_broker.py does.
test_tca.py checks the TCA arithmetic on hand-made frames; here the numbers come through the whole path
(targets -> broker -> ledger -> tca), which is what proves the decision and arrival prices are captured.
The ledger is built once per module: one IB run and one kernel per test is what keeps this file fast.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

import kit
from kit import cli
from kit.costs import tca
from kit.gateway import GatewayConfig, run_gateway_in_thread
from tests.ib_driver import execute
from tests.support import IB_BASKET

REVIEW = Path(__file__).resolve().parents[1] / "notebooks" / "review.ipynb"
# Both sides, two currencies; decision prices a little off the market so that slippage is not zero.
TARGETS = {**IB_BASKET, "decision_price": [189.5, 421.0, 61.9]}
MOCK_PRICES = {"AAPL": 190.0, "MSFT": 420.0, "TTE": 62.0}  # the simulated gateway's reference prices
# A strategy's runs share the run key before its date, as `make demo` and `make demo-ib` name theirs.
MOCK_KEY, IB_KEY = "pairs-2026-01-05", "pairs-2026-01-05-ib"
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("review") / "kit.duckdb"
    run = kit.execute(pd.DataFrame(TARGETS), broker="mock", run_key=MOCK_KEY, db=db, prices=MOCK_PRICES)
    assert run.status == "done", run.summary()
    with run_gateway_in_thread(GatewayConfig()) as gateway:
        result = execute({"port": gateway.port, "db": str(db), "run_key": IB_KEY, "targets": TARGETS,
                          "library": "ib_async"})
    assert "error" not in result, result["error"]
    assert result["status"] == "done", result["notes"]
    return db


def test_ledger_costs_match_hand_computed_values(ledger: Path) -> None:
    """Mock fills at its reference price, which is also the arrival price: slippage is all decision."""
    result = kit.tca(MOCK_KEY, ledger)
    orders = result.orders.set_index("symbol")
    assert orders["arrival_price"].to_dict() == MOCK_PRICES
    assert orders["decision_price"].to_dict() == {"AAPL": 189.5, "MSFT": 421.0, "TTE": 61.9}
    expected = {
        # (slippage_decision_bps, execution_cost, commission, shortfall)
        "AAPL": (0.5 / 189.5 * 1e4, 150.0, 1.5, 151.5),  # BUY 300 at 190 vs 189.5; 300 * 0.005
        "MSFT": (1.0 / 421.0 * 1e4, 120.0, 1.0, 121.0),  # SELL 120 at 420 vs 421; 0.60 -> minimum 1
        "TTE": (0.1 / 61.9 * 1e4, 4.0, 1.0, 5.0),  # BUY 40 at 62 vs 61.9, in EUR; 0.20 -> minimum 1
    }
    for symbol, values in expected.items():
        row = orders.loc[symbol]
        got = (row["slippage_decision_bps"], row["execution_cost"], row["commission"], row["shortfall"])
        assert got == pytest.approx(values), symbol
        assert row["slippage_arrival_bps"] == 0.0 and row["fill_ratio"] == 1.0
        assert 0 <= row["first_fill_latency_s"] <= row["last_fill_latency_s"] < 5
    usd = result.summary.loc["USD"]
    # (150 + 120) money over (300 * 189.5 + 120 * 421) decision notional
    assert usd["slippage_decision_bps"] == pytest.approx(270 / 107_370 * 1e4)
    assert usd["shortfall"] == pytest.approx(272.5)
    assert result.summary.loc["EUR", "shortfall"] == pytest.approx(5.0)


def test_ib_run_carries_the_decision_prices_and_fills_everything(ledger: Path) -> None:
    result = kit.tca(IB_KEY, ledger)
    orders = result.orders.set_index("symbol")
    assert orders["decision_price"].to_dict() == {"AAPL": 189.5, "MSFT": 421.0, "TTE": 61.9}
    assert (orders["fill_ratio"] == 1.0).all() and (orders["commission"] > 0).all()
    assert orders["slippage_decision_bps"].notna().all()
    assert list(result.summary.index) == ["EUR", "USD"]


def test_kit_tca_prints_a_transposed_summary_and_a_narrow_order_table(ledger: Path, capsys) -> None:
    assert cli.main(["--db", str(ledger), "tca", "--run", MOCK_KEY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"run {MOCK_KEY} (") and "on mock: done" in lines[0]
    assert any(line.split() == ["EUR", "USD"] for line in lines)  # one column per currency
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    assert rows["fill_ratio"] == ["100.0%", "100.0%"]
    assert rows["slippage_decision_bps"] == ["16.16", "25.15"]  # 0.1 / 61.9; 270 / 107,370 (see above)
    assert rows["slippage_arrival_bps"] == ["0.00", "0.00"]  # -0.0 of the SELL prints as 0.00
    assert rows["shortfall"] == ["5.00", "272.50"]
    assert rows[f"{MOCK_KEY}-MSFT-SELL"][:4] == ["MSFT", "SELL", "FILLED", "USD"]
    assert max(len(line) for line in lines) <= 150
    assert str(tca(pd.DataFrame(), pd.DataFrame())) == "TCA: no orders in this run"


def outputs(cell: nbformat.NotebookNode) -> tuple[str, set[str]]:
    """A code cell's printed and displayed text, and the mime types it displayed."""
    texts, mimes = [], set()
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            texts.append(output["text"])
        for mime, value in output.get("data", {}).items():
            mimes.add(mime)
            if mime in ("text/plain", "text/html"):
                texts.append(value)
    return "\n".join(texts), mimes


def execute_review(folder: Path, **parameters: str) -> Path:
    """Execute the review notebook; papermill raises (naming the cell) if any cell fails."""
    out = folder / "review-out.ipynb"
    papermill.execute_notebook(str(REVIEW), str(out), parameters=parameters, kernel_name="python3",
                               progress_bar=False, cwd=str(folder))
    return out


def cell_outputs(executed: Path) -> dict[str, tuple[str, set[str]]]:
    notebook = nbformat.read(executed, as_version=4)
    return {cell.id: outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}


@pytest.fixture(scope="module")
def review(ledger: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review of the ledger's latest run (the IB one), executed once for the tests that read it."""
    return execute_review(tmp_path_factory.mktemp("review-out"), db=str(ledger))


def test_review_notebook_shows_costs_plots_and_the_mock_ib_gap(review: Path) -> None:
    cells = cell_outputs(review)
    assert f"Run {IB_KEY} (" in cells["load"][0] and "strategy pairs" in cells["load"][0]
    tca_text = cells["tca"][0]
    assert "TCA summary" in tca_text and "slippage_decision_bps" in tca_text and "shortfall" in tca_text
    assert f"{IB_KEY}-AAPL-BUY" in tca_text and "EUR" in tca_text
    gap_text = cells["gap"][0]
    assert f"mock run {MOCK_KEY} (" in gap_text and f"IB run {IB_KEY} (" in gap_text
    assert "ib - mock" in gap_text and "gap_bps" in gap_text
    for cell in ("timeline", "fills", "slippage", "latency", "gap"):
        assert PLOTLY in cells[cell][1], f"{cell} shows no figure"
    positions = cells["positions"][0]
    assert "AAPL" in positions and "after_run" in positions


def test_review_notebook_says_so_when_the_ledger_has_no_runs(tmp_path: Path) -> None:
    cells = cell_outputs(execute_review(tmp_path, db=str(tmp_path / "empty.duckdb")))
    assert "has no runs yet" in cells["load"][0]
    assert all(PLOTLY not in mimes for _, mimes in cells.values())


def test_the_html_export_carries_plotly_js_once_and_every_figure(review: Path) -> None:
    """`jupyter nbconvert --to html` of a review: one file that draws every plot without a network.

    tests/browser/test_review_export.py opens such a file in Chromium with the network cut off.
    """
    figures = sum(PLOTLY in mimes for _, mimes in cell_outputs(review).values())
    assert figures == 5  # timeline, fills, slippage, latency, gap
    jupyter = Path(sys.executable).parent / "jupyter"
    subprocess.run([str(jupyter), "nbconvert", "--to", "html", str(review)], check=True, capture_output=True,
                   timeout=120)
    html = review.with_suffix(".html").read_text()
    assert len(re.findall(r"\* plotly\.js v\d+\.\d+\.\d+", html)) == 1  # the library, inline, once
    sources = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", html)
    assert not [src for src in sources if "plot" in src.lower()], sources  # no plotly.js from a CDN
    assert html.count('class="plotly-graph-div"') == figures
    assert html.count("Plotly.newPlot(") == figures
