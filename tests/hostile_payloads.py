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


class HostileSize:
    """Its pickle says: ``bytearray(n)``, n chosen by the provider (2**40: a terabyte)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return bytearray, (self.n,)


def make_hostile_size(n: int) -> HostileSize:
    return HostileSize(n)


def return_system_exit(code: int) -> SystemExit:
    """Returns (does not raise) a SystemExit: the requestor must not get one back."""
    return SystemExit(code)


# --------------------------------------------------------------------------------------------
# Hand-written pickles: what a provider's worker can send that no honest pickler writes. Only
# names the restricted decoder allows appear in them; the attack is in the sizes and shapes.

PROTO = b"\x80\x04"


def pickle_of(body: bytes) -> bytes:
    return PROTO + body + b"."


def glob(module: str, name: str) -> bytes:
    """GLOBAL: push ``module.name`` (through the unpickler's find_class)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def integer(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + n.to_bytes(4, "little", signed=True)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def call(function: bytes, *args: bytes) -> bytes:
    """``function(*args)``: MARK, the arguments, TUPLE, REDUCE."""
    return function + b"(" + b"".join(args) + b"tR"


def new(cls: bytes, *args: bytes) -> bytes:
    """``cls.__new__(cls, *args)``: the NEWOBJ opcode."""
    return cls + b"(" + b"".join(args) + b"t\x81"


def provider_range(n: int) -> bytes:
    return call(glob("builtins", "range"), integer(n))


def memo_get(index: int) -> bytes:
    return b"j" + index.to_bytes(4, "little")


# The sizes a provider chooses: ``constructor(n)`` or ``constructor(range(n))``, 30 bytes or so.
SIZED = {
    "bytearray(n)": lambda n: call(glob("builtins", "bytearray"), integer(n)),
    "bytes(n)": lambda n: call(glob("builtins", "bytes"), integer(n)),
    "list(range(n))": lambda n: call(glob("builtins", "list"), provider_range(n)),
    "tuple(range(n))": lambda n: call(glob("builtins", "tuple"), provider_range(n)),
    "set(range(n))": lambda n: call(glob("builtins", "set"), provider_range(n)),
    "frozenset(range(n))": lambda n: call(glob("builtins", "frozenset"), provider_range(n)),
    "deque(range(n))": lambda n: call(glob("collections", "deque"), provider_range(n)),
    "tuple.__new__(tuple, range(n))": lambda n: new(glob("builtins", "tuple"), provider_range(n)),
    "frozenset.__new__(frozenset, range(n))": lambda n: new(glob("builtins", "frozenset"), provider_range(n)),
    "copyreg.__newobj__(frozenset, range(n))": lambda n: call(
        glob("copyreg", "__newobj__"), glob("builtins", "frozenset"), provider_range(n)
    ),
    "ExceptionGroup('x', range(n))": lambda n: call(glob("builtins", "ExceptionGroup"), text("x"), provider_range(n)),
    "numpy _reconstruct(ndarray, (n,), 'b')": lambda n: call(
        glob("numpy._core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), integer(n) + b"\x85", text("b")
    ),
    "numpy scalar(dtype('V<n>'))": lambda n: call(
        glob("numpy._core.multiarray", "scalar"), call(glob("numpy", "dtype"), text(f"V{min(n, 2**31 - 1)}"))
    ),
}


def sized(name: str, n: int) -> bytes:
    return pickle_of(SIZED[name](n))


def copies(constructor: bytes, items: int, times: int, *, as_bytes: bool = False) -> bytes:
    """``[constructor(L)] * times`` as ``times`` separate calls on one memoized list ``L``.

    Each call is 12 bytes of pickle and copies ``items`` elements: without a budget, the
    decoded size grows as ``items * times`` while the pickle grows as ``items + times``.
    ``as_bytes``: ``L`` is a bytes object of ``items`` bytes instead.
    """
    body = constructor + b"\x94"  # memo 0: the constructor
    if as_bytes:
        body += b"B" + items.to_bytes(4, "little") + b"x" * items + b"\x940"  # memo 1: L (popped)
    else:
        body += b"](" + b"".join(integer(i % 256) for i in range(items)) + b"e\x940"  # memo 1: L (popped)
    body += b"](" + (memo_get(0) + memo_get(1) + b"\x85R") * times + b"e"
    return pickle_of(body)


def fraction_with_exponent(exponent: int) -> bytes:
    """``Fraction('1e<exponent>')``: Fraction computes 10**exponent (CPU and memory)."""
    return pickle_of(call(glob("fractions", "Fraction"), text(f"1e{exponent}")))


def deep_list(depth: int) -> bytes:
    """``[[[...]]]`` ``depth`` lists deep in 2 bytes a level: EMPTY_LIST * depth, APPEND * (depth - 1)."""
    return pickle_of(b"]" * depth + b"a" * (depth - 1))


def deep_tuple(depth: int) -> bytes:
    """``((((1,),),),)`` in 1 byte a level: TUPLE1 wraps the top of the stack."""
    return pickle_of(b"K\x01" + b"\x85" * depth)


def deep_tuple_as_dict_key(depth: int) -> bytes:
    """``{deep_tuple: 2}``: inserting the key hashes the tuple, which recurses in C once per level."""
    return pickle_of(b"}K\x01" + b"\x85" * depth + b"K\x02s")


def deep_tuple_in_set(depth: int) -> bytes:
    return pickle_of(b"\x8f(K\x01" + b"\x85" * depth + b"\x90")


def memo_chain(function: bytes, wrap: bytes, depth: int, tail: bytes = b"") -> bytes:
    """``depth`` objects each holding the previous one, built with the memo in ~15 bytes a level.

    ``wrap`` is the argument list (without MARK) of ``function``, where ``{prev}`` stands for the
    previous object. ``tail`` goes before STOP (e.g. a refused name, to fail after building).
    """
    parts = [function + b"\x94" + b"N\x94"]  # memo 0: the function, memo 1: None (the innermost)
    for level in range(depth):
        args = wrap.replace(b"{prev}", memo_get(level + 1))
        parts.append(memo_get(0) + b"(" + args + b"tR\x94" + (b"0" if level < depth - 1 else b""))
    return pickle_of(b"".join(parts) + tail)


def deep_deques(depth: int, tail: bytes = b"") -> bytes:
    """``deque([deque([...])])``: deque, unlike list, frees its items recursively (no trashcan)."""
    return memo_chain(glob("collections", "deque"), b"]{prev}a", depth, tail)


def deep_slices(depth: int, tail: bytes = b"") -> bytes:
    """``slice(slice(...), None, None)``: slices, too, free recursively."""
    return memo_chain(glob("builtins", "slice"), b"{prev}NN", depth, tail)


def deep_defaultdicts(depth: int, tail: bytes = b"") -> bytes:
    """``defaultdict(None, {0: defaultdict(...)})``."""
    return memo_chain(glob("collections", "defaultdict"), b"N}K\x00{prev}s", depth, tail)


REFUSED_NAME = glob("os", "system") + b"0"  # makes any decode fail after what came before
