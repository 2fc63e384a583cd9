"""The one clock. Every shell asks it for the time; the pure core is handed times and never reads one.

kit stores naive UTC timestamps throughout (DuckDB TIMESTAMP, no zone), so `utcnow` drops the zone after
taking the time in UTC; `now_utc` keeps it for code that must compare against aware times (schedules).
Tests that need a fixed time patch this module, not `datetime`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_utc() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def utcnow() -> datetime:
    """The current time as kit stores it: naive UTC."""
    return now_utc().replace(tzinfo=None)


def monotonic() -> float:
    """Seconds on a clock that never jumps, for durations (a run's elapsed time), never for timestamps."""
    return time.monotonic()
