"""Which tasks of a graph to verify: a sample no provider can predict.

:class:`Sampler` draws, for each eligible task key, an independent coin that comes up "verify"
with probability ``fraction``. The coins come from ``secrets.SystemRandom`` (the operating
system's randomness) in the requestor's process: no provider sees the seed, the draws or the
sample until the re-runs arrive, and the sample is not derived from anything a provider sent.

Why one independent coin per task and not a fixed number of tasks: with a fixed count k of n,
the checks are tied to each other. A provider that knows k (from the fraction, or from the time
the graph takes) and sees some of them (as the second provider re-running a task, say) knows
how many remain for its other tasks: none, once it has seen k. With independent coins, what a
provider learns of some tasks' coins says nothing about any other task's. A provider that
corrupts c of its tasks escapes only if none of their c coins comes up: probability
``(1 - fraction) ** c`` (:func:`catch_probability` is the complement), whatever it knows of
the graph.
"""

from __future__ import annotations

import math
import numbers
import random
import secrets
from collections.abc import Iterable
from typing import TypeVar

from ..errors import InvalidInput

K = TypeVar("K")


def _checked_fraction(fraction: object) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= float(fraction) <= 1:
        raise InvalidInput(
            f"The verify fraction must be a number from 0 to 1 (0.1 verifies a tenth), not {fraction!r}."
        )
    return float(fraction)


class Sampler:
    """Picks the tasks to verify, each with probability ``fraction``, independently.

    ``rng``: a ``random.Random`` to draw from; the default, ``secrets.SystemRandom()``, is the
    one to use for real graphs (tests pass a seeded one)."""

    def __init__(self, fraction: float, *, rng: random.Random | None = None) -> None:
        self.fraction = _checked_fraction(fraction)
        self.rng = rng if rng is not None else secrets.SystemRandom()

    def __repr__(self) -> str:
        return f"Sampler({self.fraction!r})"

    def choose(self, keys: Iterable[K]) -> set[K]:
        """The keys to verify, each drawn independently (duplicates count once)."""
        if self.fraction == 0:
            return set()
        unique = list(dict.fromkeys(keys))
        if self.fraction == 1:
            return set(unique)
        draw = self.rng.random
        return {key for key in unique if draw() < self.fraction}


def catch_probability(fraction: float, corrupted: float) -> float:
    """The chance that a verify ``fraction`` catches at least one of ``corrupted`` wrong results:
    ``1 - (1 - fraction) ** corrupted``."""
    fraction = _checked_fraction(fraction)
    if isinstance(corrupted, bool) or not isinstance(corrupted, numbers.Real) or not 0 <= corrupted < math.inf:
        raise InvalidInput(f"The number of corrupted results must be a number from 0 up, not {corrupted!r}.")
    return 1.0 - (1.0 - fraction) ** corrupted
