"""`python -m bench [NAME ...] [--reps N]`: run kit's benchmarks, one JSON object per line, then a summary.

With no NAME every benchmark runs, each in its own fresh interpreter (one benchmark's imports, caches and
garbage must not flatter or burden the next); with NAMEs they run in this process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from typing import Any

from bench._common import ROOT, clean_environment, emit, machine

BENCHMARKS = ("ledger_throughput", "latency", "ib_pacing", "big_basket", "run_overhead", "import_time",
              "first_order")


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("benchmark", "ratio", "share_of_floor", "met", "error")
    return {k: result[k] for k in keep if k in result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (each benchmark has a default)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    options = {} if args.reps is None else {"reps": args.reps}
    if args.names:
        failed = False
        for name in args.names:
            try:
                emit(importlib.import_module(f"bench.{name}").run(**options))
            except Exception as exc:  # report and go on: one broken benchmark must not hide the others
                emit({"benchmark": name, "error": f"{type(exc).__name__}: {exc}"})
                failed = True
        return 1 if failed else 0

    started = time.perf_counter()
    headlines, failed = [], False
    for name in BENCHMARKS:
        command = [sys.executable, "-m", "bench", name, *(["--reps", str(args.reps)] if args.reps else [])]
        done = subprocess.run(command, cwd=ROOT, env=clean_environment(), capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            result = {"benchmark": name, "error": f"exit status {done.returncode}: {' | '.join(tail)}"}
            emit(result)
            failed = True
        else:
            result = json.loads(lines[-1])
            print(lines[-1], flush=True)
            failed = failed or "error" in result
        headlines.append(_headline(result))
    emit({"summary": headlines, "machine": machine(), "seconds": round(time.perf_counter() - started, 1)})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
