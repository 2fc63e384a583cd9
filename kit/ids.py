"""Deterministic ids: the same run_key and targets always give the same client_order_ids.

That determinism is what makes a re-run resume instead of sending twice: the ids are the idempotency keys,
and they travel to IB as the order's orderRef.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from kit.errors import KitError

MAX_ID_LENGTH = 64
_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,119}$")


def check_run_key(run_key: str) -> str:
    if not isinstance(run_key, str) or not _RUN_KEY.match(run_key):
        raise KitError(
            f"run_key {run_key!r} is not usable: use 1-120 letters, digits or . _ : @ + - "
            "starting with a letter or digit"
        )
    return run_key


def run_id_for(run_key: str) -> str:
    """A run's id is derived from its key, so a crashed process and its re-run agree without a lookup."""
    return "r" + hashlib.sha256(run_key.encode()).hexdigest()[:15]


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def client_order_id(run_key: str, symbol: str, side: str, n: int = 1) -> str:
    """`{run_key}-{symbol}-{side}`, `-{n}` for the n-th repeat (n >= 2), at most 64 characters.

    A long run_key is shortened to a prefix plus a hash of the whole key, so ids stay unique and stable.
    """
    tail = f"-{symbol}-{side}" + (f"-{n}" if n > 1 else "")
    full = run_key + tail
    if len(full) <= MAX_ID_LENGTH:
        return full
    keep = MAX_ID_LENGTH - len(tail) - 9
    if keep < 1:
        return f"{_digest(full, MAX_ID_LENGTH)}"
    return f"{run_key[:keep]}~{_digest(run_key, 8)}{tail}"


def client_order_ids(run_key: str, legs: Iterable[tuple[str, str]],
                     taken: Mapping[tuple[str, str], int] | None = None) -> list[str]:
    """Ids for (symbol, side) legs in frame order; repeats of a symbol and side are numbered 2, 3, ...

    `taken` counts legs the run already has, so an order added when a run is re-planned gets the next
    number instead of colliding with an order already sent.
    """
    seen: Counter[tuple[str, str]] = Counter(taken or {})
    ids = []
    for symbol, side in legs:
        seen[symbol, side] += 1
        ids.append(client_order_id(run_key, symbol, side, seen[symbol, side]))
    return ids
