"""Deterministic ids: the same run_key and targets always give the same client_order_ids.

That determinism is what makes a re-run resume instead of sending twice: the ids are the idempotency keys,
and they travel to IB as the order's orderRef.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from kit.errors import InputError

MAX_ID_LENGTH = 64
MAX_RUN_KEY_LENGTH = 120
RUN_KEY_CHARACTERS = "letters A-Z a-z, digits and . _ : @ + -"
# The whole key, nothing after it: `$` would also accept "abc\n", and a key read from a file with its
# newline would silently name a different run than the one typed.
_RUN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*")
_RULE = (f"use 1-{MAX_RUN_KEY_LENGTH} {RUN_KEY_CHARACTERS}, starting with a letter or digit; "
         "or run_key=None for a new run")


def run_key_problem(run_key: object) -> str | None:
    """Why a run key is not usable (said after "run_key: "), or None. The key is the idempotency key of a
    run: a retry must name the same run, so nothing in it may be invisible (control characters, a trailing
    newline) or implied (empty)."""
    if not isinstance(run_key, str):
        return f"{run_key!r} is not usable: it is a {type(run_key).__name__}, not text; {_RULE}"
    if not run_key:
        return ("'' is not usable: an explicit empty key is an error, not a new run (a retry with "
                f"it would never resume); {_RULE}")
    if len(run_key) > MAX_RUN_KEY_LENGTH:
        return f"{run_key[:20]!r}... is not usable: it has {len(run_key)} characters; {_RULE}"
    bad = next((i for i, c in enumerate(run_key) if not c.isprintable() or c.isspace()), None)
    if bad is not None:
        return (f"{run_key!r} is not usable: {run_key[bad]!r} at position {bad} is a space or "
                f"control character; {_RULE}")
    if not _RUN_KEY.fullmatch(run_key):
        bad = next((i for i, c in enumerate(run_key) if not _RUN_KEY.fullmatch(("a" if i else "") + c)), 0)
        return (f"{run_key!r} is not usable: {run_key[bad]!r} at position {bad} is not allowed; "
                f"{_RULE}")
    return None


def check_run_key(run_key: object) -> str:
    """The run key itself, or InputError (a ValidationError) saying what is wrong with it."""
    problem = run_key_problem(run_key)
    if problem is not None:
        raise InputError("the run key", [("run_key", problem)])
    return run_key  # type: ignore[return-value]


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
    # Counts per side, then symbol: str keys, not a (symbol, side) tuple per leg for the cycle collector
    # to walk (a 100,000-order basket's ids took twice as long).
    seen: dict[str, dict[str, int]] = {}
    for (symbol, side), n in (taken or {}).items():
        seen.setdefault(side, {})[symbol] = n
    ids = []
    for symbol, side in legs:
        counts = seen.setdefault(side, {})
        counts[symbol] = n = counts.get(symbol, 0) + 1
        ids.append(client_order_id(run_key, symbol, side, n))
    return ids


# Notebook parameters that kit run sets itself, with the option that sets them: a job may not set them.
RESERVED = {"run_key": "--run-key", "db": "--db", "dry_run": "--dry-run"}
