"""Choosing the tasks to verify (golem_jupyter.trust.Sampler) and the catch rate it gives."""

from __future__ import annotations

import itertools
import math
import random
import secrets
from collections import Counter

import pytest

from golem_jupyter.errors import InvalidInput
from golem_jupyter.trust import Sampler, catch_probability

FALSE_FAILURE = 1e-6
"""Each statistical assertion below fails an honest sampler with at most this probability."""


def binomial_bounds(trials: int, p: float, alpha: float = FALSE_FAILURE) -> tuple[int, int]:
    """``(lo, hi)`` with P(X < lo) + P(X > hi) <= ``alpha`` for X ~ Binomial(trials, p)."""

    def pmf(k: int) -> float:
        if p in (0.0, 1.0):
            return float(k == round(trials * p))
        log = math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
        return math.exp(log + k * math.log(p) + (trials - k) * math.log1p(-p))

    masses = [pmf(k) for k in range(trials + 1)]
    lo, tail = 0, 0.0
    while tail + masses[lo] <= alpha / 2:
        tail += masses[lo]
        lo += 1
    hi, tail = trials, 0.0
    while tail + masses[hi] <= alpha / 2:
        tail += masses[hi]
        hi -= 1
    return lo, hi


class CountingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return super().random()


def test_the_default_randomness_is_the_operating_systems() -> None:
    sampler = Sampler(0.5)
    assert isinstance(sampler.rng, secrets.SystemRandom)
    assert sampler.fraction == 0.5
    chosen = sampler.choose(range(200))
    assert chosen <= set(range(200)) and 0 < len(chosen) < 200  # fails with probability 2 ** -199


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True, 2])
def test_a_fraction_outside_zero_to_one_is_refused_clearly(fraction: object) -> None:
    with pytest.raises(InvalidInput, match="verify fraction must be a number from 0 to 1"):
        Sampler(fraction)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # InvalidInput is a ValueError too
        catch_probability(fraction, 3)  # type: ignore[arg-type]


def test_fraction_zero_draws_nothing_and_one_draws_everything_without_randomness() -> None:
    rng = CountingRandom(0)
    assert Sampler(0, rng=rng).choose(range(100)) == set()
    assert Sampler(0.0, rng=rng).choose(iter(["a", "b"])) == set()
    assert Sampler(1, rng=rng).choose(("x", 1, "x")) == {"x", 1}
    assert rng.calls == 0
    assert Sampler(0.3, rng=rng).choose(["a", "a", "b"]) <= {"a", "b"}
    assert rng.calls == 2  # one coin per distinct key


def test_every_key_is_chosen_with_the_fraction_independently() -> None:
    """Per key, the measured rate is within binomial bounds of the fraction; over 4 keys at 0.5,
    every one of the 16 subsets is as likely as the others (a fixed-count sampler would never
    choose sets of 0, 1, 3 or 4 keys), and the number chosen varies. False failure <= 1e-6 per
    assertion."""
    rng = random.Random(11)
    trials = 20_000
    for fraction in (0.05, 0.3):
        sampler = Sampler(fraction, rng=rng)
        counts = Counter(key for _ in range(trials // 10) for key in sampler.choose(range(10)))
        lo, hi = binomial_bounds(trials // 10, fraction)
        assert all(lo <= counts[key] <= hi for key in range(10)), (fraction, counts)
    sampler = Sampler(0.5, rng=rng)
    subsets = Counter(frozenset(sampler.choose("abcd")) for _ in range(trials))
    every = [frozenset(c) for r in range(5) for c in itertools.combinations("abcd", r)]
    lo, hi = binomial_bounds(trials, 1 / 16, FALSE_FAILURE / 16)
    assert all(lo <= subsets[s] <= hi for s in every), subsets


def test_catch_probability() -> None:
    assert catch_probability(0.0, 10) == 0.0
    assert catch_probability(1.0, 1) == 1.0
    assert catch_probability(0.5, 0) == 0.0
    assert catch_probability(0.1, 1) == pytest.approx(0.1)
    assert catch_probability(0.1, 10) == pytest.approx(1 - 0.9**10)
    assert catch_probability(0.05, 2.5) == pytest.approx(1 - 0.95**2.5)
    for corrupted in (-1, float("inf"), float("nan"), "3", True):
        with pytest.raises(InvalidInput, match="corrupted"):
            catch_probability(0.1, corrupted)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fraction", "tasks", "q"),
    [(0.1, 50, 0.2), (0.05, 100, 0.1), (0.25, 20, 0.05), (0.02, 200, 0.5), (0.5, 8, 0.25)],
)
def test_a_liar_is_caught_at_the_rate_the_design_promises(fraction: float, tasks: int, q: float) -> None:
    """Simulated graphs: a liar corrupts q*n of its n tasks (which ones: its own choice, here the
    first), the requestor verifies a Sampler's choice, and the liar is caught when a corrupted
    task is among them. Over 3000 graphs the number caught lies within the binomial bounds of
    1 - (1 - f) ** (q n): a correct sampler fails this with probability at most 1e-6."""
    rng = random.Random(hash((fraction, tasks, q)) & 0xFFFF)
    sampler = Sampler(fraction, rng=rng)
    corrupted = round(q * tasks)
    keys = [f"task-{i}" for i in range(tasks)]
    lies = set(keys[:corrupted])
    graphs = 3000
    caught = sum(bool(sampler.choose(keys) & lies) for _ in range(graphs))
    expected = catch_probability(fraction, corrupted)
    lo, hi = binomial_bounds(graphs, expected)
    assert lo <= caught <= hi, (caught / graphs, expected)
