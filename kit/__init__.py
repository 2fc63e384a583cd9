"""kit: research targets in a DataFrame -> validated plan -> risk -> broker -> DuckDB ledger.

The public names are imported lazily, so `import kit` stays fast and the IB libraries load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "plan": "kit.api", "execute": "kit.api", "execute_async": "kit.api", "ledger": "kit.api",
    "tca": "kit.api", "cancel": "kit.api", "cancel_async": "kit.api",
    "Plan": "kit.planner", "Run": "kit.engine", "RunInfo": "kit.engine",
    "MockBroker": "kit.brokers.mock", "CommissionModel": "kit.brokers.mock", "Broker": "kit.brokers.base",
    "Ledger": "kit.store", "amend": "kit.api", "amend_async": "kit.api", "Reprice": "kit.amending",
    "KitError": "kit.errors", "ValidationError": "kit.errors", "ConfigError": "kit.errors",
    "PayloadConflictError": "kit.errors",
    "LiveAccountError": "kit.errors", "Skip": "kit.runner",
}
__all__ = [  # noqa: RUF022 (grouped by layer, like _EXPORTS)
    "plan", "execute", "execute_async", "ledger", "tca", "cancel", "cancel_async",
    "Plan", "Run", "RunInfo", "MockBroker", "CommissionModel", "Broker", "Ledger",
    "KitError", "ValidationError", "ConfigError", "PayloadConflictError", "LiveAccountError", "Skip",
    "amend", "amend_async", "Reprice",
    "__version__",
]

if TYPE_CHECKING:
    from kit.amending import Reprice
    from kit.api import amend, amend_async, cancel, cancel_async, execute, execute_async, ledger, plan, tca
    from kit.brokers.base import Broker
    from kit.brokers.mock import CommissionModel, MockBroker
    from kit.engine import Run, RunInfo
    from kit.errors import ConfigError, KitError, LiveAccountError, PayloadConflictError, ValidationError
    from kit.planner import Plan
    from kit.runner import Skip
    from kit.store import Ledger


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
