"""notebooks/momentum.ipynb in a real JupyterLab, in headless Chromium: Run All, then what the quant sees.

One Lab, one browser and one Run All for the module (the `momentum_page` fixture); each test reads one part
of the rendered page. The kernel trades on the mock broker into the fixture's own ledger.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from browser_support import ENABLED, SKIP_REASON

pytestmark = pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)

# kit's live progress display while kit.execute follows the orders (DESIGN: "Jupyter shows one live progress
# display"): kit.progress draws an HTML <progress> bar, updated in place under one display id.
PROGRESS_DISPLAY_EXPECTED = True
PROGRESS = "progress, [role=progressbar], .widget-progress, .jupyter-widgets-progress"
RUN_ALL_SECONDS = 120


def code_cell(page, source_text: str):
    """The notebook's code cell whose source contains `source_text`."""
    cells = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=source_text))
    assert cells.count() == 1, f"{cells.count()} code cells contain {source_text!r}"
    return cells.first


@pytest.fixture(scope="module")
def momentum_page(browser, lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    page = browser.new_page()
    page.goto(f"{lab['url']}/lab/tree/momentum.ipynb?reset&token={lab['token']}")
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
    # The status bar names the kernel once it has started and says Idle once it is ready (the toolbar's
    # indicator says idle before any kernel exists); Run All before that can leave every cell queued.
    ready = re.compile(r"\(ipykernel\) \| Idle")
    page.locator(".jp-StatusBar-Widget", has_text=ready).wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    try:
        # Every code cell has run (its prompt shows a number, not `*` or nothing) and the kernel is idle.
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                const idle = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
                return idle && prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""", timeout=RUN_ALL_SECONDS * 1000)
    except Exception:
        shot = tmp_path_factory.mktemp("failure") / "momentum.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"Run All did not finish in {RUN_ALL_SECONDS}s; screenshot: {shot}\n"
                             + "".join(lab["server"].log[-40:])) from None
    yield page
    page.close()


def test_every_cell_ran_without_an_error(momentum_page) -> None:
    errors = momentum_page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [errors.nth(i).inner_text() for i in range(errors.count())]
    assert not [text for text in texts if "Traceback" in text or "Error" in text], texts


def test_the_plan_renders_as_a_table_with_one_row_per_order(momentum_page) -> None:
    output = code_cell(momentum_page, "kit.plan(").locator(".jp-OutputArea-output")
    text = output.inner_text()
    title = r"Plan\s+momentum-\d{4}-\d{2}-\d{2}\s+·\s+3 orders\s+·\s+hash\s+[0-9a-f]{16}"
    assert re.search(title, text), text
    table = output.locator("table")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert {"client_order_id", "symbol", "side", "quantity", "risk"} <= set(headers), headers
    rows = table.locator("tbody tr")
    assert rows.count() == 3
    assert all(re.search(r"momentum-\d{4}-\d{2}-\d{2}-[A-Z]+-BUY", row) for row in rows.all_inner_texts())


def test_the_run_result_shows_done_and_every_order_filled(momentum_page, lab) -> None:
    # The cell's last output is the run; the live progress display comes before it.
    output = code_cell(momentum_page, "kit.execute(").locator(".jp-OutputArea-output").last
    text = output.inner_text()
    match = re.search(r"Run\s+(momentum-\d{4}-\d{2}-\d{2})\s+·\s+done\s+·\s+3 orders", text)
    assert match, text
    statuses = output.locator("table tbody tr").all_inner_texts()
    assert len(statuses) == 3 and all("FILLED" in row for row in statuses), statuses
    summary = code_cell(momentum_page, "print(run.summary())").locator(".jp-OutputArea-output").inner_text()
    assert f"run {match.group(1)} (" in summary and ": done" in summary
    with duckdb.connect(str(Path(lab["db"])), read_only=True) as con:  # the page says what kit recorded
        assert con.execute("SELECT run_key, status FROM runs").fetchall() == [(match.group(1), "done")]


@pytest.mark.skipif(not PROGRESS_DISPLAY_EXPECTED, reason="kit.execute has no live progress display yet")
def test_progress_display(momentum_page) -> None:
    """While following orders kit shows one live progress display; after the run it says how far it got."""
    shown = code_cell(momentum_page, "kit.execute(").locator(f".jp-OutputArea-output :is({PROGRESS})")
    assert shown.count() == 1, "no progress display in the kit.execute cell's output"
    bar = shown.first
    assert bar.get_attribute("value") == bar.get_attribute("max") == "3"  # every order done
    line = code_cell(momentum_page, "kit.execute(").locator(".kit-progress").inner_text()
    final = r"kit: done: 3/3 orders done, 0 working, [\d,]+ shares filled, notional [\d,.]+"
    assert re.search(final, line), line
