"""What every benchmark shares: an isolated environment, medians with their spread, and one JSON line out."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median and spread of repeated measurements (never a single time: these machines are noisy)."""
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), digits), "min": round(ordered[0], digits),
            "max": round(ordered[-1], digits), "n": len(ordered)}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str), flush=True)


def clean_environment(**extra: str) -> dict[str, str]:
    """The process environment without any KIT_* setting (a kit.toml, a halt file, risk limits or a ledger
    of the user's must not change what is measured), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    scratch = Path(tempfile.gettempdir())
    env.update(KIT_CONFIG=str(scratch / "kit-bench-no-config.toml"),
               KIT_HALT_FILE=str(scratch / "kit-bench-no-halt"), KIT_LEDGER_WAIT="30")
    env.update(extra)
    return env


@contextlib.contextmanager
def isolated(**extra: str) -> Iterator[Path]:
    """A scratch folder, with this process's environment cleaned as clean_environment() says."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as folder:
        os.environ.clear()
        os.environ.update(clean_environment(KIT_DB=str(Path(folder) / "default.duckdb"), **extra))
        try:
            yield Path(folder)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    revision = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10).stdout.strip() or None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "git_revision": revision, "load_average": load}


# The benchmarks' baskets are larger than kit's default fat-finger guard allows (50,000,000 gross per run);
# they measure speed, not risk, so the guard is turned off explicitly, as kit requires of anyone.
NO_FAT_FINGER = {"max_order_notional": None, "max_gross_notional": None}
