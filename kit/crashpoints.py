"""Named points where kit can be made to die, so the crash-matrix tests can prove what survives a crash.

KIT_CRASH_AT=name (or name:n for its n-th passage) makes the process SIGKILL itself there: no cleanup, no
flush, no finally blocks, as with a power cut or an OOM kill. Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("KIT_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
