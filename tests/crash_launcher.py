"""Runs tests.ib_driver with a crash point armed: `python -m tests.crash_launcher NAME[:N] SPEC_JSON`.

The only way to make kit kill itself at one of its crash points (kit.crashpoints): this launcher installs
the hook that SIGKILLs the process at the N-th passage (default 1) of NAME, then runs the driver.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter

from kit import crashpoints
from tests.ib_driver import execute


def kill_at(spec: str) -> crashpoints.Hook:
    """A hook that SIGKILLs this process at the n-th passage of a named point: no cleanup, no flush, no
    finally blocks, as with a power cut or an OOM kill."""
    target, _, nth = spec.partition(":")
    if target not in crashpoints.POINTS:
        raise SystemExit(f"no crash point {target!r}; known: {sorted(crashpoints.POINTS)}")
    passed: Counter[str] = Counter()

    def hook(name: str) -> None:
        if name == target:
            passed[name] += 1
            if passed[name] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


if __name__ == "__main__":
    crashpoints.install(kill_at(sys.argv[1]))
    print(json.dumps(execute(json.loads(sys.argv[2]))))
