"""Task functions for the market tests, in a module of their own so that the scheduler and the
providers' workers import only this (as a user's processes import the user's modules)."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def hold(value: object, seconds: float) -> object:
    """``value``, after ``seconds``: a task that reads an input and is still running meanwhile."""
    time.sleep(seconds)
    return value


def busy(n: int) -> int:
    return sum(range(20_000 + n))


def noisy_sum(seed: int, order: int | None = None) -> float:
    """The sum of 20,000 random floats, added in an order of the run's own (``order``, default drawn
    afresh): two honest runs give results that differ in the last bits, as different BLAS thread
    counts or summation trees do."""
    import os

    import numpy as np

    values = np.random.default_rng(seed).random(20_000) * 10.0 ** np.random.default_rng(seed).integers(-3, 4, 20_000)
    shuffle = np.random.default_rng(int.from_bytes(os.urandom(8)) if order is None else order)
    permutation = shuffle.permutation(values.size)
    return float(np.add.reduce(values[permutation]))


def noisy_products(seed: int, order: int | None = None):
    """A float32 matrix product summed block by block in an order of the run's own (CPU vs GPU, or
    other blockings, differ the same way)."""
    import os

    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((48, 256), dtype=np.float32), rng.standard_normal((256, 16), dtype=np.float32)
    blocks = [a[:, k : k + 32] @ b[k : k + 32] for k in range(0, 256, 32)]
    out = np.zeros((48, 16), dtype=np.float32)
    shuffle = np.random.default_rng(int.from_bytes(os.urandom(8)) if order is None else order)
    for index in shuffle.permutation(len(blocks)):
        out += blocks[index]
    return out


def square_on_a_worker(x: int) -> int:
    """``x * x``, but only inside a Dask worker (elsewhere ``get_worker`` raises): a task the
    requestor's own machine cannot referee."""
    from distributed import get_worker

    get_worker()
    return x * x
