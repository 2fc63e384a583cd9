"""How a simulated market cuts an order into partial fills: shared by the mock broker and the gateway."""

from __future__ import annotations

import itertools
import random


def split(quantity: float, parts: int, rng: random.Random) -> list[float]:
    """A quantity as at most `parts` whole-share slices of seeded random size (the same rng state, the same
    slices); a fractional or single-share quantity is one slice."""
    whole = int(quantity)
    if whole != quantity or whole < 2 or parts < 2:
        return [quantity]
    cuts = sorted(rng.sample(range(1, whole), min(parts, whole) - 1))
    bounds = [0, *cuts, whole]
    return [float(b - a) for a, b in itertools.pairwise(bounds)]
