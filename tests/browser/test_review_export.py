"""The HTML export of notebooks/review.ipynb, opened in Chromium with no network: every plot is drawn.

tests/test_review_notebook.py checks the file's contents; this checks that a browser really draws the plots
from it when the internet is out of reach (the loopback-only context of conftest.py aborts every request for
a CDN, such as the MathJax and require.js that nbconvert's own template asks for).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
from browser_support import BIN, ENABLED, SKIP_REASON

import kit

pytestmark = pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)

REVIEW = Path(__file__).resolve().parents[2] / "notebooks" / "review.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"


def test_every_plot_of_the_exported_review_draws_offline(browser, tmp_path: Path) -> None:
    db = tmp_path / "kit.duckdb"
    targets = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "side": ["BUY", "SELL"], "quantity": [300, 120],
                            "decision_price": [189.5, 421.0]})
    run = kit.execute(targets, broker="mock", run_key="export-2026-01-05", db=db,
                      prices={"AAPL": 190.0, "MSFT": 420.0})
    assert run.status == "done", run.summary()
    executed = tmp_path / "review-out.ipynb"
    papermill.execute_notebook(str(REVIEW), str(executed), parameters={"db": str(db)}, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path))
    figures = sum(PLOTLY in output.get("data", {}) for cell in nbformat.read(executed, as_version=4).cells
                  for output in cell.get("outputs", []))
    assert figures == 4  # timeline, fills, slippage, latency (no IB run: no mock-vs-IB figure)
    subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "html", str(executed)], check=True,
                   capture_output=True, timeout=120)

    page = browser.new_page()
    errors: list[str] = []
    blocked: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: blocked.append(request.url))
    page.goto(executed.with_suffix(".html").as_uri())
    page.wait_for_function(
        """(count) => {
            const plots = [...document.querySelectorAll('.plotly-graph-div')];
            return plots.length === count && plots.every(p => p.querySelector('svg.main-svg .trace'));
        }""", arg=figures, timeout=60_000)  # every figure has drawn at least one of its traces
    assert not [e for e in errors if "Plotly" in e], errors
    assert all(not url.startswith(("http://127.", "file:")) for url in blocked), blocked
    page.close()
