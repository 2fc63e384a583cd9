"""Named points where kit can be made to die, so the crash-matrix tests can prove what survives a crash.

Production code only names the points. What happens at one is up to a hook, and only a test launcher
installs one (tests/crash_launcher.py, which SIGKILLs its own process there): no environment variable or
setting can make a live process kill itself. Without a hook a crash point does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

POINTS = frozenset({
    "engine.before_submitted_write",  # the submissions are applied, their write-ahead not yet written
    "engine.before_submit",  # before each order is handed to the broker
    "engine.applied_not_written",  # a broker event applied in memory, not yet in the ledger
    "ledger.mid_write",  # inside a batch's transaction, events written, the rest not
    "ledger.committed",  # a batch's transaction just committed
})

Hook = Callable[[str], None]
_hook: Hook | None = None


def install(hook: Hook | None) -> None:
    """Call `hook(name)` at every crash point from now on (None removes it)."""
    global _hook
    _hook = hook


def crash_point(name: str) -> None:
    if _hook is not None:
        _hook(name)
