"""What a hostile provider could send back, and the tasks that produce it.

A module of its own so that the test's Dask worker process can import it: the worker pickles
these objects with plain pickle, exactly as a provider's worker would, and the requestor
(the test process) must refuse them. Unpickling any ``Hostile*`` object with plain
``pickle.loads`` would run a command that creates ``marker``.
"""

from __future__ import annotations

import os
import shlex
import subprocess


class Hostile:
    """Its pickle says: call ``os.system("touch MARKER")``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class HostilePopen(Hostile):
    def __reduce__(self):
        return subprocess.Popen, (["touch", self.marker],)


class HostileEval(Hostile):
    def __reduce__(self):
        return eval, (f"__import__('os').system('touch {self.marker}')",)


class HostileGetattr(Hostile):
    def __reduce__(self):
        return getattr, (self.marker, "upper")


class Plain:
    """A harmless class that the requestor has not allowlisted."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class HostileError(Exception):
    """An exception class the requestor does not allowlist."""


def identity(value: object) -> object:
    return value


def make_hostile(marker: str) -> Hostile:
    return Hostile(marker)


def make_plain(value: object) -> Plain:
    return Plain(value)


def big_int() -> int:
    return 2**200 + 12345


def raise_value_error() -> None:
    raise ValueError("x")


def raise_hostile_error(message: str) -> None:
    raise HostileError(message)
