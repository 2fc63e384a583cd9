"""A plan: the validated orders of one run, before anything is sent.

Pure. The plan hash covers every order's payload and the run key, so an approval given for one plan cannot
be replayed on another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from kit.ids import check_run_key
from kit.model import PAYLOAD_FIELDS, OrderIntent
from kit.validate import validate_orders


@dataclass(frozen=True)
class Plan:
    run_key: str
    orders: tuple[OrderIntent, ...]

    @property
    def hash(self) -> str:
        digest = hashlib.sha256(self.run_key.encode())
        for order in self.orders:
            digest.update(repr((order.client_order_id, *order.payload())).encode())
        return digest.hexdigest()[:16]

    def frame(self) -> pd.DataFrame:
        columns = ["client_order_id", *PAYLOAD_FIELDS, "decision_price"]
        return pd.DataFrame([[getattr(o, c) for c in columns] for o in self.orders], columns=columns)

    def __len__(self) -> int:
        return len(self.orders)

    def __repr__(self) -> str:
        return f"Plan(run_key={self.run_key!r}, orders={len(self.orders)}, hash={self.hash})"

    def _repr_html_(self) -> str:
        title = f"<b>Plan</b> {self.run_key} &middot; {len(self.orders)} orders &middot; hash {self.hash}"
        return f"<p>{title}</p>{self.frame().to_html(index=False, na_rep='')}"


def make_plan(targets: pd.DataFrame, run_key: str) -> Plan:
    """Validate a target orders frame into a plan; ValidationError names every bad row."""
    check_run_key(run_key)
    return Plan(run_key=run_key, orders=tuple(validate_orders(targets, run_key)))
