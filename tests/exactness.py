"""Comparing a notebook run with ``%%golem`` against the same cells run as plain Python (DESIGN.md section 5).

Shared by the exact-cell tests and the corpus of real notebooks: ``check`` runs cells both ways and
compares every name either run bound or changed (``same``: exact type and value, arrays by dtype,
shape and values, NaN-aware; ``sharing``: which names share memory).
"""

from __future__ import annotations

import types

import numpy as np

HIDDEN = ("In", "Out", "exit", "quit", "get_ipython")


def user_names(namespace: dict, shell=None) -> dict:
    hidden = set(shell.user_ns_hidden) if shell is not None else set()
    return {k: v for k, v in namespace.items() if not k.startswith("_") and k not in hidden and k not in HIDDEN}


def run_plain(setup: str, cells: list[str], probe: str | None) -> tuple[dict, object]:
    namespace: dict = {"__name__": "__main__"}
    exec(compile(setup, "<setup>", "exec", dont_inherit=True), namespace)
    for cell in cells:
        exec(compile(cell, "<cell>", "exec", dont_inherit=True), namespace)
    probed = eval(compile(probe, "<probe>", "eval", dont_inherit=True), namespace) if probe else None
    return user_names(namespace), probed


def run_golem(shell, setup: str, cells: list[str], probe: str | None, line: str) -> tuple[dict, object]:
    shell.reset()
    if setup:
        shell.run_cell(setup).raise_error()
    for cell in cells:
        shell.run_cell_magic("golem", line, cell)
    namespace = shell.user_ns
    probed = eval(compile(probe, "<probe>", "eval", dont_inherit=True), namespace) if probe else None
    return user_names(namespace, shell), probed


def check(shell, setup: str, cells: str | list[str], *, probe: str | None = None, line: str = "--local") -> dict:
    """Run ``cells`` after ``setup`` plainly and with ``%%golem {line}``; assert the notebooks are the same."""
    cells = [cells] if isinstance(cells, str) else cells
    expected, expected_probe = run_plain(setup, cells, probe)
    got, got_probe = run_golem(shell, setup, cells, probe, line)
    same_notebook(got, expected)
    same(got_probe, expected_probe, "the probe")
    return got


def same_notebook(got: dict, expected: dict, where: str = "", expected_sharing: set | None = None) -> None:
    """The user's names of two notebooks: the same names, each exactly the same value, the same sharing
    (``expected_sharing``: the expected notebook's, where ``expected`` holds copies)."""
    prefix = f"{where}: " if where else ""
    assert sorted(got) == sorted(expected), f"{prefix}the names differ: {sorted(got)} != {sorted(expected)}"
    for name in expected:
        same(got[name], expected[name], f"{prefix}{name}")
    shared = sharing(expected) if expected_sharing is None else expected_sharing
    found = sharing(got)
    assert found == shared, f"{prefix}which names share memory differs: {sorted(found)} != {sorted(shared)}"


def same(a, b, path: str) -> None:
    """``a`` (from the magic) is exactly ``b`` (from plain Python): type, value, state."""
    assert type(a).__qualname__ == type(b).__qualname__, f"{path}: {type(a)} != {type(b)}"
    assert type(a).__module__ == type(b).__module__, path
    if a is np.ma.masked or b is np.ma.masked:
        assert a is b, path
    elif isinstance(a, np.ma.MaskedArray):
        same(np.asarray(a.data), np.asarray(b.data), f"{path}.data")
        same(np.ma.getmaskarray(a), np.ma.getmaskarray(b), f"{path}.mask")
        assert (a._mask is np.ma.nomask) == (b._mask is np.ma.nomask), path
        same(a.fill_value, b.fill_value, f"{path}.fill_value")
        assert a.hardmask == b.hardmask, path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        nan = a.dtype.kind in "fc"
        assert np.array_equal(a, b, equal_nan=nan), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, np.random.Generator):
        same(a.bit_generator, b.bit_generator, f"{path}.bit_generator")
    elif isinstance(a, np.random.RandomState):
        same(a.get_state(legacy=False), b.get_state(legacy=False), f"{path}.state")
        same(a._bit_generator, b._bit_generator, f"{path}.bit_generator")
    elif isinstance(a, np.random.BitGenerator):
        same(a.state, b.state, f"{path}.state")
        same(a._seed_seq, b._seed_seq, f"{path}.seed_seq")
    elif isinstance(a, np.random.SeedSequence):
        same(a.state, b.state, f"{path}.state")
        assert a.n_children_spawned == b.n_children_spawned, path
    elif isinstance(a, np.polynomial.polynomial.ABCPolyBase):
        for part in ("coef", "domain", "window"):
            same(getattr(a, part), getattr(b, part), f"{path}.{part}")
        assert a.symbol == b.symbol, path
    elif isinstance(a, types.FunctionType) and a.__module__ != "__main__":
        assert a is b, path  # a library function
    elif isinstance(a, types.FunctionType):
        assert a.__name__ == b.__name__ and a.__qualname__ == b.__qualname__, path
        assert a.__code__.co_names == b.__code__.co_names, f"{path}: other code"
        assert [c for c in a.__code__.co_consts if not isinstance(c, types.CodeType)] == [
            c for c in b.__code__.co_consts if not isinstance(c, types.CodeType)
        ], f"{path}: other code"
        same(a.__defaults__, b.__defaults__, f"{path}.__defaults__")
        same(a.__kwdefaults__, b.__kwdefaults__, f"{path}.__kwdefaults__")
        assert a.__module__ == b.__module__ == "__main__", path
    elif isinstance(a, type) and a.__module__ == "__main__":
        assert a.__qualname__ == b.__qualname__, path  # each run defines its own class
    elif isinstance(a, types.ModuleType | types.BuiltinFunctionType | type):
        assert a is b, path
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    elif type(a).__module__ == "__main__" and hasattr(a, "__dict__"):
        same(vars(a), vars(b), f"{path}.__dict__")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _mutable(value) -> bool:
    return not isinstance(
        value, int | float | complex | str | bytes | tuple | frozenset | type(None) | types.ModuleType | np.generic
    ) and not isinstance(value, type | types.BuiltinFunctionType)


def _items(value) -> list:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return []


def sharing(namespace: dict) -> set[tuple[str, str, str]]:
    """Which names hold the same object, arrays over the same memory, or one another (as an item)."""
    names = sorted(n for n, v in namespace.items() if _mutable(v))
    found = set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = namespace[a], namespace[b]
            if x is y:
                found.add((a, b, "same object"))
            elif isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.shares_memory(x, y):
                found.add((a, b, "shared memory"))
    for a in names:
        for b in names:
            if a != b and any(item is namespace[b] for item in _items(namespace[a])):
                found.add((a, b, "holds"))
    return found


class ModuleState:
    """The hidden module state one run of a notebook sees: the global generators of ``numpy.random`` and
    ``random``, and ``np.seterr``. Two runs interleaved in one process (plain Python and the magic, cell by
    cell) each keep their own, as two kernels would: ``with state:`` makes it the process's for a while."""

    def __init__(self, start: tuple | None = None) -> None:
        self.saved = start if start is not None else self.capture()

    @staticmethod
    def capture() -> tuple:
        import random

        return np.random.get_state(legacy=False), random.getstate(), np.geterr()

    @staticmethod
    def restore(state: tuple) -> None:
        import random

        np.random.set_state(state[0])
        random.setstate(state[1])
        np.seterr(**state[2])

    def __enter__(self) -> ModuleState:
        self.outer = self.capture()
        self.restore(self.saved)
        return self

    def __exit__(self, *exc) -> None:
        self.saved = self.capture()
        self.restore(self.outer)
