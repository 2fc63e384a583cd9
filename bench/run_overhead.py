"""`kit run notebooks/momentum.ipynb` against plain papermill on the same notebook, and the same code as a
plain Python script (the floor: no kernel at all).

All three run as fresh processes, timed from start to exit, interleaved (kit run, papermill, script, then
again), each with a new run key (so none resumes) and its own ledger in a scratch folder (so none waits for
another's file):

- `kit run NOTEBOOK --run-key K -p broker mock`: the parameter check, papermill, a Jupyter kernel, the run
  row written before the kernel starts and finished after it, the output notebook under data/runs/;
- baseline: `papermill NOTEBOOK OUT.ipynb -p broker mock -p run_key K -p db DB --no-progress-bar`, the same
  values kit run injects (kit run also turns papermill's progress bar off);
- floor: the notebook's code cells concatenated into one .py file, with those values set after the
  parameters cell, run by `python script.py`.

Goal (issue 19): kit run at most 15% slower than papermill. The notebook trades on the mock broker, so the
difference is kit's own overhead, not a broker's. `side_by_side` gives wall and CPU seconds of the three next
to each other; `imports` says, per package, how many more seconds of imports each main process pays than the
other (`python -X importtime`, one more run of each): what kit run pays, or saves, in imports alone.
"""

from __future__ import annotations

import json
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel too: its parent waited for it
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and the kernel it started): on a shared
    machine the wall time includes waiting for a core."""
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, cpu


def imported(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Package -> seconds `command`'s own process spent in its modules' imports (their own time, not what
    they import in turn). The first element of `command` must be the venv's python (it gets -X importtime)."""
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    seconds: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line and line.count("|") == 2:
            own, _, name = line.removeprefix("import time:").split("|")
            package = name.strip().split(".")[0]
            seconds[package] = seconds.get(package, 0.0) + int(own) / 1e6
    return seconds


def _extra(these: dict[str, float], those: dict[str, float], at_least: float = 0.05) -> dict[str, float]:
    """Seconds of imports `these` pays more than `those`, per package, the costly ones first."""
    more = {name: s - those.get(name, 0.0) for name, s in these.items()}
    return {name: round(s, 3) for name, s in sorted(more.items(), key=lambda item: -item[1]) if s >= at_least}


def run(reps: int = 3) -> dict[str, Any]:
    from bench._common import BIN, ROOT, clean_environment, summary

    notebook = ROOT / "notebooks" / "momentum.ipynb"
    times: dict[str, list[tuple[float, float]]] = {"kit": [], "papermill": [], "script": []}
    with tempfile.TemporaryDirectory(prefix="kit-bench-run-") as scratch:
        folder = Path(scratch)
        for rep in range(reps + 1):  # the first round warms caches and is not counted
            db = folder / f"run-{rep}.duckdb"
            env = clean_environment(KIT_DB=str(db), KIT_RUNS_DIR=str(folder / "runs"))
            measured = {"kit": _timed([str(BIN / "kit"), "run", str(notebook), "--run-key",
                                       f"bench-run-{rep}", "-p", "broker", "mock"], folder, env)}
            db = folder / f"papermill-{rep}.duckdb"
            measured["papermill"] = _timed(
                [str(BIN / "papermill"), str(notebook), str(folder / f"out-{rep}.ipynb"), "-p", "broker",
                 "mock", "-p", "run_key", f"bench-papermill-{rep}", "-p", "db", str(db), "--no-progress-bar"],
                folder, clean_environment(KIT_DB=str(db)))
            db = folder / f"script-{rep}.duckdb"
            path = folder / f"momentum_{rep}.py"
            path.write_text(notebook_script(notebook, {"run_key": f"bench-script-{rep}", "db": str(db)}))
            measured["script"] = _timed([str(BIN / "python"), str(path)], folder,
                                       clean_environment(KIT_DB=str(db)))
            if rep:
                for name, value in measured.items():
                    times[name].append(value)
        db = folder / "imports.duckdb"
        kit_imports = imported([str(BIN / "python"), str(BIN / "kit"), "run", str(notebook), "--run-key",
                                "bench-imports", "-p", "broker", "mock"], folder,
                               clean_environment(KIT_DB=str(db), KIT_RUNS_DIR=str(folder / "runs")))
        db = folder / "imports-papermill.duckdb"
        papermill_imports = imported(
            [str(BIN / "python"), str(BIN / "papermill"), str(notebook), str(folder / "imports.ipynb"), "-p",
             "broker", "mock", "-p", "run_key", "bench-imports-papermill", "-p", "db", str(db),
             "--no-progress-bar"], folder, clean_environment(KIT_DB=str(db)))
    kit_s, paper_s, script_s = (summary([wall for wall, _ in times[name]], 3)
                                for name in ("kit", "papermill", "script"))
    kit_cpu, paper_cpu, script_cpu = (summary([cpu for _, cpu in times[name]], 3)
                                      for name in ("kit", "papermill", "script"))
    ratio = kit_s["median"] / paper_s["median"]
    return {
        "benchmark": NAME,
        "side_by_side": {
            "wall_s": {"kit_run": kit_s, "papermill": paper_s, "script": script_s},
            "cpu_s": {"kit_run": kit_cpu, "papermill": paper_cpu, "script": script_cpu},
        },
        "imports": {"what": "seconds of imports one main process pays more than the other, per package",
                    "kit_run_more": _extra(kit_imports, papermill_imports),
                    "papermill_more": _extra(papermill_imports, kit_imports)},
        "what": "wall seconds of `kit run notebooks/momentum.ipynb -p broker mock` (fresh process)",
        "kit_run_s": kit_s,
        "kit_run_cpu_s": kit_cpu,
        "baseline": {"what": "papermill on the same notebook with the same parameters", "seconds": paper_s,
                     "cpu_s": paper_cpu},
        "floor": {"what": "the notebook's code as a plain python script", "seconds": script_s,
                  "cpu_s": script_cpu},
        "overhead_s": round(kit_s["median"] - paper_s["median"], 3),
        "ratio": round(ratio, 2),
        "ratio_cpu": round(kit_cpu["median"] / paper_cpu["median"], 2),
        "ratio_to_script": round(kit_s["median"] / script_s["median"], 2),
        "goal": {"ratio": 1.15},
        "met": {"ratio": ratio <= 1.15},
    }


if __name__ == "__main__":
    from bench._common import emit

    emit(run())
