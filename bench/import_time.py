"""`import kit` time, and what it pulls in: IB libraries load only when the IB broker is used.

Each variant runs in a fresh interpreter that times its own import statement with perf_counter; the
whole process (start-up included) is timed too, and `python -c pass` gives the start-up alone. Bytecode is
cached in a scratch
PYTHONPYCACHEPREFIX, warmed by one untimed run per variant, as on a user's machine (this sandbox sets
PYTHONDONTWRITEBYTECODE, which would time the compiler instead).

- `import kit`: the package as a notebook's first cell imports it (public names load lazily);
- `import kit; kit.execute, kit.plan, kit.MockBroker, kit.ledger`: what a first mock run needs;
- baseline "eager": every kit module imported up front (IB broker and simulated gateway included; not
  kit.airflow, which runs in Airflow's environment) plus the IB client library, as a kit without lazy
  imports would load them; floor `import pandas, duckdb`, the libraries kit cannot run without.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

NAME = "import_time"
GOAL_SECONDS = 0.5
HEAVY = ("ib_async", "ib_insync", "eventkit", "pandas", "duckdb", "papermill")

_PROBE = """
import sys, time
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
import json
print(json.dumps({{"seconds": seconds, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""

VARIANTS = {
    "startup": "pass",
    "import_kit": "import kit",
    "first_use": "import kit\nkit.execute, kit.plan, kit.MockBroker, kit.ledger",
    "pandas_duckdb": "import pandas, duckdb",
    # kit.airflow needs Airflow's own environment (.venv-airflow), so it is left out here.
    "eager": ("import importlib, pkgutil, kit\n"
              "for m in pkgutil.walk_packages(kit.__path__, 'kit.'):\n"
              "    if not m.name.endswith(('__main__', 'kit.airflow')):\n"
              "        importlib.import_module(m.name)\n"
              "import ib_async"),
}


def _probe(statement: str, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE.format(statement=statement, heavy=HEAVY)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - start}


def run(reps: int = 7) -> dict[str, Any]:
    from bench._common import ROOT, clean_environment, summary

    with tempfile.TemporaryDirectory(prefix="kit-bench-pyc-") as cache:
        env = clean_environment(PYTHONPYCACHEPREFIX=cache, PYTHONPATH=str(ROOT))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        loaded: dict[str, list[str]] = {}
        for name, statement in VARIANTS.items():  # warm the bytecode cache
            loaded[name] = _probe(statement, env)["loaded"]
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        process: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(reps):  # interleaved, so a noisy moment hits every variant alike
            for name, statement in VARIANTS.items():
                probe = _probe(statement, env)
                times[name].append(probe["seconds"])
                process[name].append(probe["process"])
    figures = {name: {**summary(values, 4), "process_s": summary(process[name], 3)["median"],
                      "loaded": loaded[name]} for name, values in times.items()}
    kit_s = figures["import_kit"]["median"]
    first_use = figures["first_use"]["median"]
    ib_free = not any(m in loaded["first_use"] for m in ("ib_async", "ib_insync", "eventkit"))
    return {
        "benchmark": NAME,
        "what": "seconds of the import statement in a fresh interpreter (bytecode cached)",
        "import_kit_s": figures["import_kit"],
        "first_use_s": figures["first_use"],
        "baseline": {"what": "eager: every kit module and ib_async imported at once", **figures["eager"]},
        "floor": {"what": "import pandas, duckdb (what the first kit.execute needs at least)",
                  **figures["pandas_duckdb"]},
        "share_of_floor": round(figures["pandas_duckdb"]["median"] / first_use, 3),
        "eager_s": figures["eager"],
        "interpreter_startup_s": summary(process["startup"], 3),
        "ib_loaded_on_first_use": not ib_free,
        "ratio": round(first_use / figures["pandas_duckdb"]["median"], 2),
        "ratio_eager": round(figures["eager"]["median"] / first_use, 2),
        "goal": {"import_kit_s": GOAL_SECONDS, "ib_only_when_used": True},
        "met": {"import_kit_s": kit_s <= GOAL_SECONDS, "ib_only_when_used": ib_free},
    }


if __name__ == "__main__":
    from bench._common import emit

    emit(run())
