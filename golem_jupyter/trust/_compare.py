"""Comparing a task's result from two providers, and digesting one for the chain's evidence.

:func:`compare` answers None when two results agree and a :class:`Mismatch` saying where and why
when they do not. The rules (DESIGN.md section 6, "Results"):

* Types must be the same, exactly: ``True`` is not ``1``, ``numpy.float64(1.0)`` is not ``1.0``,
  a list is not a tuple, an ``OrderedDict`` is not a ``dict``.
* Integers, strings, bytes, None, booleans and every other value are compared exactly (``==``).
  An object whose class keeps ``object``'s identity ``==`` is compared by its attributes when it
  has a ``__dict__`` (recursively, so a float inside one is compared like any float), else by its
  pickle; one that cannot be pickled is a mismatch that says so.
* Floating point (Python and NumPy floats and complex numbers, NumPy float and complex arrays) is
  compared as ``numpy.allclose`` does, elementwise, with two changes: the test is symmetric,
  ``|a - b| <= atol + rtol * max(|a|, |b|)`` (so that the verdict does not depend on which provider
  is called "expected": a referee compares three results pairwise), and NaN equals NaN (in complex
  numbers, part by part). Infinity equals only infinity of the same sign. Shapes and dtypes must
  be the same exactly.
* Integer, boolean, string, bytes, datetime and timedelta arrays are compared exactly (NaT equals
  NaT); structured arrays field by field, object arrays element by element, masked arrays by
  their masks and their unmasked values.
* Lists, tuples (named ones too) and deques item by item, dicts by their keys (the same set of
  keys; an ``OrderedDict``'s in the same order) then value by value, sets and frozensets exactly.

Tolerances. Pass ``rtol``/``atol`` (a cell's own) to compare every floating-point element by
exactly the rule above. Left at None, each value gets the defaults of its precision
(:func:`default_tolerances`), and an array's elements also get a *scale term*:

    |a - b| <= atol + rtol * max(|a|, |b|) + sqrt(eps) * (largest finite magnitude in either array)

* float64, complex128 (Python's float and complex) and wider: ``rtol = 1e-5``, ``atol = 1e-8``,
  NumPy's own ``allclose`` defaults, and a scale term of ``1.5e-8`` times the array's largest
  magnitude. The same sum in another order, or a matrix product blocked differently or on
  another number of BLAS threads, differs by about ``sqrt(n) * 2.2e-16`` (at worst
  ``n * 2.2e-16``) relative to the magnitude of its terms: far below ``1e-5`` for an element of
  the size of its terms, and below the scale term for an element that cancels to near zero.
* float32, complex64, float16 (and other narrower types): ``rtol``, ``atol`` and the scale
  term's factor are all ``sqrt(eps)`` of the type (``3.5e-4`` for float32, ``0.031`` for
  float16): "agree to half the digits the type holds". A float32 result from a GPU next to one
  from a CPU, or next to the float64 computation cast down, differs by ``~sqrt(n) * 1.2e-7``
  relative to its terms; a float32 matrix product entry of a few hundred terms that cancels to
  near zero is off by ``~1e-3`` when its terms are in the thousands.

The scale term is what lets honest cancellation pass (an absolute ``atol`` cannot know the scale
of the terms); its price is that an element much smaller than its array's largest is checked only
to ``sqrt(eps)`` of that largest: a float32 element below about a third of the largest may be off
by 0.1% unflagged, a float64 one below ``1.5e-5`` of it. Scalars have no scale term.

:func:`digest` hashes a value's canonical encoding (types, dtypes, shapes, the bytes of arrays,
containers recursively, dict and set entries in a canonical order, ``-0.0`` as ``0.0`` and every NaN
as one NaN) to 32 bytes: the evidence ``reportFault`` puts on-chain. Equal values (exactly equal,
NaN included) have equal digests; values that differ, even within the tolerances, do not.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import pickle
import struct
import types
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DEFAULT_RTOL = 1e-5
"""Relative tolerance for float64 and complex128 values (NumPy's ``allclose`` default)."""
DEFAULT_ATOL = 1e-8
"""Absolute tolerance for float64 and complex128 values (NumPy's ``allclose`` default)."""

Reason = Literal["type", "dtype", "shape", "count", "keys", "value", "uncomparable"]


@dataclass(frozen=True)
class Mismatch:
    """Where two results differ (``path`` into the value, like ``[2]['a']``; "" for the value
    itself), what kind of difference it is (``reason``), and a sentence about it (``detail``)."""

    path: str
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.path or 'the value'}: {self.detail}"


def default_tolerances(dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` for floating-point values of ``dtype`` when the cell names none (see the
    module docstring): NumPy's defaults for float64 and wider, ``sqrt(eps)`` for narrower types."""
    eps = float(np.finfo(dtype).eps)
    if eps <= float(np.finfo(np.float64).eps):
        return DEFAULT_RTOL, DEFAULT_ATOL
    floor = math.sqrt(eps)
    return max(DEFAULT_RTOL, floor), max(DEFAULT_ATOL, floor)


def compare(expected: Any, actual: Any, *, rtol: float | None = None, atol: float | None = None) -> Mismatch | None:
    """None when ``actual`` agrees with ``expected`` by the rules of the module docstring, else
    the first :class:`Mismatch` found. ``rtol``/``atol``: None for each dtype's default."""
    for name, tolerance in (("rtol", rtol), ("atol", atol)):
        if tolerance is not None and not (isinstance(tolerance, int | float) and 0 <= tolerance < math.inf):
            raise ValueError(f"{name} must be a number from 0 up, not {tolerance!r}.")
    return _Comparison(rtol, atol).compare(expected, actual, "")


# ---------------------------------------------------------------------------- comparing


_EXACT = (type(None), bool, int, str, bytes, bytearray, range, slice, type(Ellipsis), np.bool_)
_SEQUENCES = (list, tuple, collections.deque)


class _Comparison:
    def __init__(self, rtol: float | None, atol: float | None) -> None:
        self.rtol = rtol
        self.atol = atol
        self._active: set[tuple[int, int]] = set()  # pairs being compared: a cycle is taken as equal

    def tolerances(self, dtype: Any) -> tuple[float, float]:
        rtol, atol = default_tolerances(dtype)
        return (rtol if self.rtol is None else self.rtol), (atol if self.atol is None else self.atol)

    def compare(self, expected: Any, actual: Any, path: str) -> Mismatch | None:
        if type(expected) is not type(actual):
            return Mismatch(path, "type", f"expected type {_type_name(expected)}, got {_type_name(actual)}")
        if isinstance(expected, np.datetime64 | np.timedelta64 | np.void):  # (timedelta64 is an np.integer)
            return self._array(np.asarray(expected), np.asarray(actual), path)
        if isinstance(expected, _EXACT) or isinstance(expected, np.integer | np.str_ | np.bytes_):
            return None if expected == actual else _value(path, expected, actual)
        if isinstance(expected, float | complex | np.floating | np.complexfloating):
            dtype = np.asarray(expected).dtype
            return None if self._close_scalar(expected, actual, dtype) else _value(path, expected, actual)
        if isinstance(expected, np.ndarray):
            return self._array(expected, actual, path)
        pair = (id(expected), id(actual))
        if pair in self._active:
            return None
        self._active.add(pair)
        try:
            return self._container(expected, actual, path)
        finally:
            self._active.discard(pair)

    def _container(self, expected: Any, actual: Any, path: str) -> Mismatch | None:
        if isinstance(expected, _SEQUENCES):
            if len(expected) != len(actual):
                return Mismatch(path, "count", f"expected {len(expected)} items, got {len(actual)}")
            for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
                if (found := self.compare(e, a, f"{path}[{i}]")) is not None:
                    return found
            return None
        if isinstance(expected, dict):
            return self._dict(expected, actual, path)
        if isinstance(expected, set | frozenset):
            if expected == actual:
                return None
            missing, extra = len(expected - actual), len(actual - expected)
            return Mismatch(path, "value", f"the sets differ: {missing} item(s) missing, {extra} not expected")
        if (attributes := _attributes(expected)) is not None:
            return self._dict(attributes, _attributes(actual) or {}, path, attributes=True)
        if _identity_eq(expected):
            return _by_pickle(expected, actual, path)
        try:
            equal = expected == actual
            if not isinstance(equal, bool | np.bool_):
                raise TypeError(f"== answered a {type(equal).__name__}")
            return None if equal else _value(path, expected, actual)
        except Exception:  # noqa: BLE001 (an == that cannot say: compare what they pickle to)
            return _by_pickle(expected, actual, path)

    def _dict(self, expected: dict, actual: dict, path: str, *, attributes: bool = False) -> Mismatch | None:
        if expected.keys() != actual.keys():
            missing = [k for k in expected if k not in actual]
            extra = [k for k in actual if k not in expected]
            what = "attribute" if attributes else "key"
            parts = []
            if missing:
                parts.append(f"missing {what}(s) {_listed(missing)}")
            if extra:
                parts.append(f"unexpected {what}(s) {_listed(extra)}")
            return Mismatch(path, "keys", ", ".join(parts))
        if isinstance(expected, collections.OrderedDict) and list(expected) != list(actual):
            return Mismatch(path, "keys", "the same keys in another order")
        if isinstance(expected, collections.defaultdict) and expected.default_factory != actual.default_factory:
            return Mismatch(path, "value", "a different default_factory")
        for key, value in expected.items():
            where = f"{path}.{key}" if attributes else f"{path}[{key!r}]"
            if (found := self.compare(value, actual[key], where)) is not None:
                return found
        return None

    def _close_scalar(self, expected: Any, actual: Any, dtype: np.dtype) -> bool:
        rtol, atol = self.tolerances(dtype)
        if isinstance(expected, complex | np.complexfloating):
            e, a = complex(expected), complex(actual)
            if any(math.isnan(x) for x in (e.real, e.imag, a.real, a.imag)):
                return _close_float(e.real, a.real, rtol, atol) and _close_float(e.imag, a.imag, rtol, atol)
            if math.isinf(abs(e)) or math.isinf(abs(a)):
                return e == a
            return abs(e - a) <= atol + rtol * max(abs(e), abs(a))
        return _close_float(float(expected), float(actual), rtol, atol)

    def _array(self, expected: np.ndarray, actual: np.ndarray, path: str) -> Mismatch | None:
        if expected.dtype != actual.dtype:
            return Mismatch(path, "dtype", f"expected dtype {expected.dtype}, got {actual.dtype}")
        if expected.shape != actual.shape:
            return Mismatch(path, "shape", f"expected shape {expected.shape}, got {actual.shape}")
        if isinstance(expected, np.ma.MaskedArray):
            masks = np.ma.getmaskarray(expected), np.ma.getmaskarray(actual)
            if not np.array_equal(*masks):
                return _first_difference(path, masks[0] != masks[1], masks[0], masks[1], "mask")
            return self._array(_unmasked(expected, masks[0]), _unmasked(actual, masks[0]), path)
        dtype = expected.dtype
        if dtype.names is not None:  # structured: field by field
            for name in dtype.names:
                if (found := self._array(expected[name], actual[name], f"{path}[{name!r}]")) is not None:
                    return found
            return None
        if dtype.kind in "fc":
            return self._close_array(expected, actual, path)
        if dtype.kind == "O":
            for index in np.ndindex(expected.shape):
                found = self.compare(expected[index], actual[index], f"{path}{_index(index)}")
                if found is not None:
                    return found
            return None
        if dtype.kind in "mM":
            expected, actual = expected.view(np.int64), actual.view(np.int64)  # NaT is one integer
        elif dtype.kind == "V":  # raw bytes
            expected, actual = _raw(expected), _raw(actual)
        if np.array_equal(expected, actual):
            return None
        return _first_difference(path, expected != actual, expected, actual, "value")

    def _close_array(self, expected: np.ndarray, actual: np.ndarray, path: str) -> Mismatch | None:
        rtol, atol = self.tolerances(expected.dtype)
        if self.rtol is None and self.atol is None and expected.size:
            atol += _scale_tolerance(expected.dtype) * _largest(expected, actual)
        if expected.dtype.kind == "c":
            close = _close_complex(expected, actual, rtol, atol)
        else:
            close = _close_real(expected, actual, rtol, atol)
        if close.all():
            return None
        return _first_difference(path, ~close, expected, actual, "value", tolerances=(rtol, atol))


def _scale_tolerance(dtype: np.dtype) -> float:
    """Default tolerance of an array's elements relative to its largest magnitude: ``sqrt(eps)``."""
    return math.sqrt(float(np.finfo(dtype).eps))


def _largest(expected: np.ndarray, actual: np.ndarray) -> float:
    """The largest finite magnitude in either array (0 if none)."""
    largest = 0.0
    for array in (expected, actual):
        with np.errstate(invalid="ignore", over="ignore"):
            magnitudes = np.abs(array)
            finite = magnitudes[np.isfinite(magnitudes)]
        if finite.size:
            largest = max(largest, float(finite.max()))
    return largest


def _close_float(e: float, a: float, rtol: float, atol: float) -> bool:
    if math.isnan(e) or math.isnan(a):
        return math.isnan(e) and math.isnan(a)
    if math.isinf(e) or math.isinf(a):
        return e == a
    return abs(e - a) <= atol + rtol * max(abs(e), abs(a))


def _close_real(e: np.ndarray, a: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        wide = np.longdouble if e.dtype.itemsize > 8 else np.float64
        e64, a64 = e.astype(wide), a.astype(wide)
        finite = np.isfinite(e64) & np.isfinite(a64)
        close = np.abs(e64 - a64) <= atol + rtol * np.maximum(np.abs(e64), np.abs(a64))
        same = (e64 == a64) | (np.isnan(e64) & np.isnan(a64))  # infinities of one sign, NaNs
    return np.where(finite, close, same)


def _close_complex(e: np.ndarray, a: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        wide = np.clongdouble if e.dtype.itemsize > 16 else np.complex128
        e, a = e.astype(wide), a.astype(wide)
        finite = np.isfinite(e) & np.isfinite(a)
        close = np.abs(e - a) <= atol + rtol * np.maximum(np.abs(e), np.abs(a))
        by_parts = _close_real(e.real, a.real, rtol, atol) & _close_real(e.imag, a.imag, rtol, atol)
    return np.where(finite, close, by_parts)


def _first_difference(
    path: str,
    differs: np.ndarray,
    expected: np.ndarray,
    actual: np.ndarray,
    what: str,
    tolerances: tuple[float, float] | None = None,
) -> Mismatch:
    count = int(np.count_nonzero(differs))
    index = tuple(int(i) for i in np.argwhere(differs)[0]) if differs.ndim else ()
    e, a = expected[index], actual[index]
    within = f" (rtol {tolerances[0]:g}, atol {tolerances[1]:g})" if tolerances else ""
    detail = f"{count} of {differs.size} element(s) differ{within}; first at {list(index)}: expected {e!r}, got {a!r}"
    if what == "mask":
        detail = f"the masks differ at {count} element(s); first at {list(index)}"
    return Mismatch(f"{path}{_index(index)}", "value", detail)


def _unmasked(array: np.ma.MaskedArray, mask: np.ndarray) -> np.ndarray:
    """The data of ``array`` with zeros under ``mask``: what is masked means nothing (nor may it
    widen the tolerance of the rest)."""
    data = np.array(array.data, copy=True)
    _clear(data, mask)
    return data


def _clear(data: np.ndarray, mask: np.ndarray) -> None:
    if mask.dtype.names is not None:  # a structured array's mask: field by field
        for name in mask.dtype.names:
            _clear(data[name], mask[name])
    elif data.dtype.kind == "O":
        data[mask] = None
    else:
        data[mask] = np.zeros((), data.dtype)


def _raw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint8).reshape(*array.shape, array.dtype.itemsize)


def _identity_eq(value: Any) -> bool:
    return type(value).__eq__ is object.__eq__


_BY_REFERENCE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _attributes(value: Any) -> dict[str, Any] | None:
    """What a value that ``==`` cannot judge is made of: a dataclass's fields, a namespace's or an
    identity-compared object's attributes (an exception's ``args`` too); None for anything else."""
    if isinstance(value, _BY_REFERENCE):
        return None
    if dataclasses.is_dataclass(value):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if not (isinstance(value, types.SimpleNamespace) or _identity_eq(value)) or not hasattr(value, "__dict__"):
        return None
    attributes = dict(vars(value))
    if isinstance(value, BaseException):
        attributes["(args)"] = value.args
    return attributes


def _by_pickle(expected: Any, actual: Any, path: str) -> Mismatch | None:
    try:
        same = pickle.dumps(expected, protocol=5) == pickle.dumps(actual, protocol=5)
    except Exception as error:  # noqa: BLE001 (what cannot be pickled cannot be compared)
        return Mismatch(path, "uncomparable", f"a {_type_name(expected)} can be neither == nor pickled: {error}")
    return None if same else Mismatch(path, "value", f"two {_type_name(expected)} objects that pickle differently")


def _value(path: str, expected: Any, actual: Any) -> Mismatch:
    return Mismatch(path, "value", f"expected {_short(expected)}, got {_short(actual)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _listed(keys: list) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _index(index: tuple[int, ...]) -> str:
    return f"[{', '.join(str(i) for i in index)}]" if index else ""


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


# ---------------------------------------------------------------------------- digest


def digest(value: Any) -> bytes:
    """32 bytes: SHA-256 over ``value``'s canonical encoding (see the module docstring)."""
    hasher = hashlib.sha256(b"golem-result-digest/1\0")
    _Encoder(hasher).encode(value)
    return hasher.digest()


class _Encoder:
    """Writes tagged, length-prefixed fields, so that no two values share an encoding by accident."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self._active: dict[int, int] = {}  # containers being encoded -> their depth: a cycle is a back-reference

    def field(self, data: bytes) -> None:
        self.hasher.update(struct.pack("<Q", len(data)))
        self.hasher.update(data)

    def encode(self, value: Any) -> None:
        kind = type(value)
        self.field(f"{kind.__module__}.{kind.__qualname__}".encode())
        if value is None or value is Ellipsis:
            return
        if isinstance(value, np.generic):
            self.array(np.asarray(value))
        elif isinstance(value, bool):
            self.field(b"\1" if value else b"\0")
        elif isinstance(value, int):
            number = int(value)
            self.field(number.to_bytes((number.bit_length() + 8) // 8, "little", signed=True))
        elif isinstance(value, float):
            self.field(_canonical(np.asarray(value)).tobytes())
        elif isinstance(value, complex):
            self.field(_canonical(np.asarray(value)).tobytes())
        elif isinstance(value, str):
            self.field(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, bytes | bytearray):
            self.field(bytes(value))
        elif isinstance(value, np.ndarray):
            self.array(value)
        else:
            self.container(value)

    def array(self, array: np.ndarray) -> None:
        self.field(_dtype_text(array.dtype).encode())
        self.field(repr(array.shape).encode())
        if isinstance(array, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(array)
            self.field(np.ascontiguousarray(mask).tobytes())  # a structured array's mask is structured
            array = _unmasked(array, mask)  # what the mask hides does not count
        if array.dtype.kind == "O":
            for index in np.ndindex(array.shape):
                self.encode(array[index])
            return
        if array.dtype.names is not None:
            for name in array.dtype.names:
                self.array(np.asarray(array[name]))
            return
        self.field(np.ascontiguousarray(_canonical(array)).tobytes())

    def container(self, value: Any) -> None:
        if id(value) in self._active:
            self.field(b"cycle:" + str(self._active[id(value)]).encode())
            return
        self._active[id(value)] = len(self._active)
        try:
            self._container(value)
        finally:
            del self._active[id(value)]

    def _container(self, value: Any) -> None:
        if isinstance(value, _SEQUENCES):
            self.field(struct.pack("<Q", len(value)))
            for item in value:
                self.encode(item)
        elif isinstance(value, dict):
            self.mapping(value, ordered=isinstance(value, collections.OrderedDict))
        elif isinstance(value, set | frozenset):
            self.field(b"".join(sorted(digest(item) for item in value)))
        elif (attributes := _attributes(value)) is not None:
            self.mapping(attributes, ordered=False)
        else:
            self.pickled(value)

    def mapping(self, mapping: dict, *, ordered: bool) -> None:
        entries = [(digest(key), value) for key, value in mapping.items()]
        if not ordered:
            entries.sort(key=lambda entry: entry[0])
        self.field(struct.pack("<Q", len(entries)))
        for key, value in entries:
            self.field(key)
            self.encode(value)

    def pickled(self, value: Any) -> None:
        try:
            self.field(pickle.dumps(value, protocol=5))
        except Exception:  # noqa: BLE001 (nothing to hash but its kind: say so in the encoding)
            self.field(b"unpicklable")


def _dtype_text(dtype: np.dtype) -> str:
    return repr(dtype.descr) if dtype.names is not None else dtype.str


def _canonical(array: np.ndarray) -> np.ndarray:
    """``-0.0`` as ``0.0`` and every NaN as one NaN (they compare equal, so they digest equal)."""
    if array.dtype.kind not in "fc":
        return array
    if array.dtype.kind == "c":
        parts = _canonical(np.ascontiguousarray(array.real)), _canonical(np.ascontiguousarray(array.imag))
        out = np.empty(array.shape, array.dtype)
        out.real, out.imag = parts
        return out
    with np.errstate(invalid="ignore"):
        out = np.asarray(array + np.zeros((), array.dtype))  # -0.0 + 0.0 == 0.0
    out = np.array(out, copy=True)
    out[np.isnan(out)] = np.nan
    return out
