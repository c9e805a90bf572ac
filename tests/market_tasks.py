"""Task functions for the market tests, in a module of their own so that the scheduler and the
providers' workers import only this (as a user's processes import the user's modules)."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(n: int) -> int:
    return sum(range(20_000 + n))
