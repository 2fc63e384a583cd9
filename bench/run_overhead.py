"""`kit run notebooks/momentum.ipynb` against the same code run as a plain Python script.

Both run as fresh processes, timed from start to exit, alternately, each with a new run key (so neither
resumes) and its own ledger in a scratch folder (so neither waits for the other's file):

- `kit run NOTEBOOK --run-key K -p broker mock`: papermill, a Jupyter kernel, the run row written before the
  kernel starts and finished after it, the output notebook archived under data/runs/;
- baseline: the notebook's code cells concatenated into one .py file, with the values `kit run` would inject
  (run_key, db) set after the parameters cell, run by `python script.py`.

The notebook trades on the mock broker, so the figures are kit's own overhead, not a broker's.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "run_overhead"


def notebook_script(notebook: Path, injected: dict[str, Any]) -> str:
    """The code cells in order; the injected values follow the cell tagged `parameters`, as papermill does."""
    cells = json.loads(notebook.read_text())["cells"]
    parts = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        parts.append("".join(cell["source"]))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            parts.append("\n".join(f"{name} = {value!r}" for name, value in injected.items()))
    return "\n\n".join(parts) + "\n"


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def run(reps: int = 3) -> dict[str, Any]:
    from bench._common import BIN, ROOT, clean_environment, summary

    notebook = ROOT / "notebooks" / "momentum.ipynb"
    kit_run: list[float] = []
    script: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kit-bench-run-") as scratch:
        folder = Path(scratch)
        for rep in range(reps + 1):  # the first round warms caches and is not counted
            db = folder / f"run-{rep}.duckdb"
            seconds = _timed([str(BIN / "kit"), "run", str(notebook), "--run-key", f"bench-run-{rep}",
                              "-p", "broker", "mock"], folder, clean_environment(KIT_DB=str(db)))
            if rep:
                kit_run.append(seconds)
            db = folder / f"script-{rep}.duckdb"
            path = folder / f"momentum_{rep}.py"
            path.write_text(notebook_script(notebook, {"run_key": f"bench-script-{rep}", "db": str(db)}))
            seconds = _timed([str(BIN / "python"), str(path)], folder, clean_environment(KIT_DB=str(db)))
            if rep:
                script.append(seconds)
    kit_s, base_s = summary(kit_run, 3), summary(script, 3)
    return {
        "benchmark": NAME,
        "what": "wall seconds of `kit run notebooks/momentum.ipynb -p broker mock` (fresh process)",
        "kit_run_s": kit_s,
        "baseline": {"what": "the notebook's code as a plain python script", "seconds": base_s},
        "overhead_s": round(kit_s["median"] - base_s["median"], 3),
        "ratio": round(kit_s["median"] / base_s["median"], 2),
        "goal": None,
        "met": None,
    }


if __name__ == "__main__":
    from bench._common import emit

    emit(run())
