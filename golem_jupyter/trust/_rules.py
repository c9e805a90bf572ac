"""The restricted decoder's rules: what ``find_class`` may hand out, and what may be done with it.

See :mod:`golem_jupyter.trust._reader` for how the two readers apply them, and the package
docstring for the allowlist itself.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import datetime
import decimal
import fractions
import math
import os
import pickle
import re
import reprlib
import stat
import sys
import threading
import types
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tblib
import tblib.pickling_support as tblib_pickling
from distributed.scheduler import NoValidWorkerError, NoWorkerError

from ..errors import GolemError

# NumPy 2 moved numpy.core to numpy._core; pickles written by either name the functions by
# either path. Resolve them here, once, from whichever exists: find_class never imports.
try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # NumPy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]


from ._errors import PayloadTooLarge, RemoteTaskError, UnsafePayload

# --------------------------------------------------------------------------------------------
# Limits of one decode. Module settings: the readers read them at each decode.

MAX_DEPTH = 1000
"""Containers nested deeper than this (a list in a list in ...) are refused (PayloadTooDeep)."""

ALLOCATION_FACTOR = 4
ALLOCATION_FLOOR = 1 << 20
"""A decode may allocate at most ``ALLOCATION_FACTOR * received + ALLOCATION_FLOOR`` bytes beyond the
objects the pickle's own opcodes build, ``received`` being the pickle's size plus its out-of-band
buffers' (PayloadTooLarge). The opcodes build one object per opcode from bytes that are in the
pickle; what a provider could otherwise inflate is what constructors build from their arguments:
copies of a container (``tuple(L)``, as often as the memo can name ``L``), and sizes."""


@dataclass
class _Allowance:
    """What one decode received, and what its constructors have allocated so far."""

    received: int
    allowed: int
    source: str | None
    spent: int = 0
    fragile: list[Any] = field(default_factory=list)
    """The deques and dict subclasses built so far: CPython frees those recursively without the
    guard it has for lists and dicts, so a refused decode empties them before dropping them."""


_ALLOWANCE: ContextVar[_Allowance | None] = ContextVar("golem_jupyter_decode_allowance", default=None)


def _allowance_for(received: int, source: str | None) -> _Allowance:
    return _Allowance(received, ALLOCATION_FACTOR * received + ALLOCATION_FLOOR, source)


def _charge(nbytes: int, what: str) -> None:
    """Count ``nbytes`` that building ``what`` allocates, before building it; refuse past the allowance."""
    allowance = _ALLOWANCE.get() or _allowance_for(0, None)
    if nbytes > allowance.allowed - allowance.spent:
        raise PayloadTooLarge(what, nbytes, allowance.allowed, allowance.received, allowance.source, allowance.spent)
    allowance.spent += nbytes


def _fragile(obj: Any) -> Any:
    """Note ``obj`` if dropping a chain of its kind recurses in C unguarded (see ``_Allowance.fragile``)."""
    allowance = _ALLOWANCE.get()
    if allowance is not None and (
        isinstance(obj, collections.deque) or (isinstance(obj, dict) and type(obj) is not dict)
    ):
        allowance.fragile.append(obj)
    return obj


def _empty_fragile(allowance: _Allowance) -> None:
    """Empty the containers ``allowance`` noted; it holds them all, so none is freed while emptying."""
    for obj in allowance.fragile:
        (collections.deque.clear if isinstance(obj, collections.deque) else dict.clear)(obj)


# --------------------------------------------------------------------------------------------
# Rules: what find_class may hand out, and what the unpickler may then do with it.


class _SafeCall:
    """A function the unpickler may call with any arguments, which a pickle cannot modify.

    Plain functions have a writable ``__dict__``, ``__defaults__`` and ``__code__``, which a
    pickle's BUILD opcode could set on an object that find_class handed out, for every later
    decode in the process. Instances of this class have no ``__dict__`` and refuse setattr.
    """

    __slots__ = ("_function", "_name")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_function", function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._name} cannot be changed")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self._name} cannot be changed")

    def __repr__(self) -> str:
        return f"<restricted {self._name}>"


class _Refused:
    """Salvage mode only: stands for a refused name, so that an exception's message can be read."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _RefusedObject:
    """Salvage mode only: what calling or instantiating a :class:`_Refused` name gives."""

    __slots__ = ("args", "name", "state")

    def __init__(self, name: str, args: tuple[Any, ...]) -> None:
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.name}{self.args!r}>"


# Types whose instances hold no other Python object: nothing nests inside them.
_LEAF_TYPES = frozenset(
    {
        type(None), bool, int, float, complex, str, bytes, bytearray, range, type, type(Ellipsis),
        type(NotImplemented), fractions.Fraction, decimal.Decimal, datetime.date, datetime.time,
        datetime.datetime, datetime.timedelta, datetime.timezone, uuid.UUID, np.ndarray, memoryview,
        pickle.PickleBuffer, types.TracebackType, _SafeCall, _Refused,
        *(t for t in np.sctypeDict.values() if issubclass(t, np.generic) and t is not np.object_),
    }
)  # fmt: skip


def _name_of(obj: object) -> str:
    if isinstance(obj, type):
        return _dotted(obj)
    if isinstance(obj, (_SafeCall, _Refused)):
        return repr(obj).strip("<>")
    return _dotted(type(obj))


@dataclass(frozen=True)
class _Rule:
    """What find_class hands out for one name, and what may be done with it.

    ``value`` is the object handed out. ``call`` is what REDUCE runs when the pickle calls
    ``value`` (None: calling is refused). ``new`` says whether NEWOBJ may build an instance of
    ``value`` with ``value.__new__``. ``fast`` says whether the C unpickler may get ``value``:
    only when calling it and building it are safe without checks, and it cannot be modified.
    """

    name: str
    value: object
    call: Callable[..., Any] | None
    new: bool
    fast: bool
    returns_class: bool = False
    """``call`` returns a class that the rest of the pickle may use under that class's own rule."""


_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: setattr on the class raises (3.10+)


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _value_class(cls: type) -> _Rule:
    """A class that may be called and instantiated with any arguments."""
    immutable = bool(cls.__flags__ & _IMMUTABLE_TYPE)
    return _Rule(_dotted(cls), cls, cls, new=True, fast=immutable)


def _state_class(cls: type) -> _Rule:
    """A class whose instances are rebuilt from state only: NEWOBJ then BUILD, never a call."""
    return _Rule(_dotted(cls), cls, None, new=True, fast=False)


def _checked_class(cls: type, call: Callable[..., Any] | None) -> _Rule:
    """A class that may appear as a value; calling it goes through ``call`` (None: refused)."""
    return _Rule(_dotted(cls), cls, call, new=False, fast=False)


def _function(name: str, function: Callable[..., Any], *, fast: bool = True) -> _Rule:
    value = _SafeCall(name, function)
    return _Rule(name, value, value, new=False, fast=fast)


def _sized_class(cls: type) -> _Rule:
    """A class whose constructor copies or sizes from its arguments: every call is checked."""
    check = _CALL_ARGUMENTS[cls]
    name = _dotted(cls)

    def construct(*args: Any, **kwargs: Any) -> object:
        check(name, args, kwargs)
        return _fragile(cls(*args, **kwargs))

    return _Rule(name, cls, construct, new=True, fast=False)


def _exception_rule(cls: type[BaseException]) -> _Rule:
    """Exceptions are rebuilt by calling the class with their args, as Python pickles them.

    A BaseException that is not an Exception (SystemExit, KeyboardInterrupt, GeneratorExit,
    BaseExceptionGroup) is never rebuilt in this process: it becomes a RemoteTaskError. Exception
    groups copy their list of exceptions, which is checked like any copy.
    """
    if not issubclass(cls, Exception):
        return _Rule(_dotted(cls), cls, lambda *args: _remote_error(cls, args), new=True, fast=False)
    if issubclass(cls, BaseExceptionGroup):
        name = _dotted(cls)

        def construct(*args: Any, **kwargs: Any) -> object:
            _group_arguments(name, args, kwargs)
            return cls(*args, **kwargs)

        return _Rule(name, cls, construct, new=True, fast=False)
    return _value_class(cls)


def _not_an_exception(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, Exception)


def _remote_error(cls: type[BaseException], args: tuple[Any, ...]) -> RemoteTaskError:
    group = issubclass(cls, BaseExceptionGroup)
    return RemoteTaskError(_dotted(cls), _message_of(args, group=group))


def notebook_class(qualname: str) -> type:
    """The class the notebook (``__main__``) defines as ``qualname``; what providers name classes by.

    A worker has the notebook's classes only as copies made from the requestor's pickles, so it
    names them by this function rather than as ``__main__.Name`` (see
    :mod:`golem_jupyter.notebook.transport`). Only a class defined in ``__main__`` is returned.
    """
    cls = _defined_class("__main__", qualname) if isinstance(qualname, str) else None
    if cls is None:
        raise _refuse(f"__main__.{qualname}", "the notebook defines no such class")
    return cls


def _notebook_class_rule() -> _Rule:
    value = _SafeCall(f"{__name__}.notebook_class", notebook_class)
    return _Rule(value._name, value, value, new=False, fast=False, returns_class=True)


def _constant(name: str, value: object) -> _Rule:
    return _Rule(name, value, None, new=False, fast=True)


def _refuse(type_name: str, detail: str | None = None) -> UnsafePayload:
    return UnsafePayload(type_name, detail)


# ---- what constructors may be given: items the pickle holds, never a size or a range -----------

_SLOT = 8
"""What the allowance counts for each element a constructor copies: one pointer."""

_CONTAINERS = frozenset(
    {list, tuple, set, frozenset, dict, collections.OrderedDict, collections.defaultdict, collections.deque}
)

_SIZE_GIVEN = (
    "it was given a size (an int) instead of the data itself: a provider chooses sizes, so a few bytes could "
    "ask for gigabytes"
)


def _no_items(name: str, value: object) -> UnsafePayload:
    if isinstance(value, int):
        return _refuse(name, _SIZE_GIVEN)
    if type(value) is range:
        return _refuse(name, "it was asked to expand a range: only items that are in the pickle are copied")
    return _refuse(name, f"it copies the items of a list, tuple, set or dict, not of {_name_of(value)}")


def _items(name: str, value: object) -> None:
    """``value`` is what ``name`` copies its elements from: a container the pickle built. Counted."""
    if type(value) not in _CONTAINERS:
        raise _no_items(name, value)
    _charge(_SLOT * len(value), name)  # type: ignore[arg-type]


def _sequence_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``list``, ``tuple``, ``set``, ``frozenset``, ``dict``, ``OrderedDict``: nothing, or one container."""
    if kwargs or len(args) > 1:
        raise _refuse(name, "it is rebuilt from one container of items at most")
    for value in args:
        _items(name, value)


def _deque_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if kwargs or len(args) > 2:
        raise _refuse(name, "it is rebuilt from its items and its maxlen")
    if args:
        _items(name, args[0])
    if len(args) == 2 and args[1] is not None and type(args[1]) is not int:
        raise _refuse(name, "its maxlen must be an int or None")


def _bytes_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``bytes``, ``bytearray``: nothing, bytes to copy, or text and 'latin-1' (protocols 0-2)."""
    if len(args) == 1 and not kwargs and type(args[0]) in (bytes, bytearray):
        _charge(len(args[0]), name)
    elif len(args) == 2 and not kwargs and type(args[0]) is str and args[1] in _LATIN1:
        _charge(len(args[0]), name)
    elif args and isinstance(args[0], int):
        raise _refuse(name, _SIZE_GIVEN)
    elif args or kwargs:
        raise _refuse(name, "only bytes(), bytes(data) and bytes(str, 'latin-1') are accepted")


def _text_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``str.__new__`` of a text subclass: one str (any other value would be converted by its __str__)."""
    if kwargs or len(args) > 1 or (args and type(args[0]) is not str):
        raise _refuse(name, "text subclasses are rebuilt from one str only")
    if args:
        _charge(len(args[0]), name)


_FRACTION_TEXT = re.compile(r"[-+]?[0-9]+(?:/[0-9]+)?", re.ASCII)


def _fraction_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A Fraction from its numerator and denominator, or their text: never '1e999999999' or a float.

    Fraction('1e1000000000') computes 10**1000000000, and Fraction(Decimal('1e1000000000')) does
    too: a few bytes that take minutes and gigabytes.
    """
    if not kwargs and (
        (len(args) == 2 and type(args[0]) is int and type(args[1]) is int)
        or (len(args) == 1 and (type(args[0]) is int or (type(args[0]) is str and _FRACTION_TEXT.fullmatch(args[0]))))
    ):
        return
    raise _refuse(name, "a Fraction is rebuilt from its numerator and denominator (ints, or 'n/d' text) only")


def _slice_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    # Slices free their parts recursively: a slice of a slice of ... crashes Python when dropped.
    if kwargs or len(args) > 3 or not all(type(value) in _LEAF_TYPES for value in args):
        raise _refuse(name, "a slice holds plain values (None, numbers, text) only")


def _group_arguments(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if kwargs or len(args) != 2 or type(args[0]) is not str:
        raise _refuse(name, "an exception group is rebuilt from a message and a list of exceptions")
    _items(name, args[1])


_NEW_ARGUMENTS: dict[type, Callable[[str, tuple[Any, ...], Mapping[str, Any]], None]] = {
    tuple: _sequence_arguments,
    frozenset: _sequence_arguments,
    bytes: _bytes_arguments,
    str: _text_arguments,
    slice: _slice_arguments,
    fractions.Fraction: _fraction_arguments,
    BaseExceptionGroup: _group_arguments,
}
"""Classes whose ``__new__`` builds the object from its arguments, and what those may be."""

_CALL_ARGUMENTS = {
    **_NEW_ARGUMENTS,
    list: _sequence_arguments,
    set: _sequence_arguments,
    dict: _sequence_arguments,
    collections.OrderedDict: _sequence_arguments,
    collections.deque: _deque_arguments,
    bytearray: _bytes_arguments,
}
"""The same for calling the class, where ``__init__`` fills the object from its arguments too."""


def _new_owner(cls: type) -> type:
    """The class whose ``__new__`` ``cls.__new__`` is."""
    return next(c for c in cls.__mro__ if "__new__" in vars(c))


# ---- what messages show of provider values: bounded, never their own __repr__ --------------


class _ShortRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxstring, self.maxother, self.maxlong = 1000, 200, 100

    def repr_bytes(self, x: bytes, level: int) -> str:
        return reprlib.Repr.repr_instance(self, x[: self.maxstring], level)

    repr_bytearray = repr_bytes

    def repr_instance(self, x: Any, level: int) -> str:
        if type(x) in _LEAF_TYPES or isinstance(x, np.generic):
            return super().repr_instance(x, level)
        if isinstance(x, BaseException):
            return f"{type(x).__name__}{self.repr1(BaseException.args.__get__(x), level - 1)}"
        if isinstance(x, _RefusedObject):
            return f"<{x.name}{self.repr1(x.args, level - 1)}>"
        return f"<{_name_of(x)}>"


_short_repr = _ShortRepr().repr


def _message_of(args: object, *, group: bool = False) -> str:
    """What str() of an exception with these args shows, bounded in size and depth."""
    if type(args) is not tuple or not args:
        return ""
    if len(args) == 1 or group:
        if type(args[0]) is str:
            return args[0]
        args = args[0]
    try:
        return _short_repr(args)
    except Exception:  # noqa: BLE001 (e.g. an int too long to print)
        return f"<{_name_of(args)}>"


# ---- wrappers for the callables pickles of allowed values need --------------------------------

_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})


def _codecs_encode(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    # Protocols 0-2 write bytes as _codecs.encode(str, 'latin1'). Any other codec name would
    # make Python look a codec up by name, which may import a module.
    if type(text) is not str or encoding not in _LATIN1 or errors != "strict":
        raise _refuse("_codecs.encode", "only latin-1 encoding of a str is accepted")
    _charge(len(text), "_codecs.encode")
    return text.encode("latin-1")


def _bytes_args(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # bytes(str, encoding) and bytearray(str, encoding) look the codec up by name, like above;
    # bytes(n) and bytearray(n) allocate n bytes.
    _bytes_arguments(f"builtins.{name}", args, {})
    return (args[0], "latin-1") if len(args) == 2 else args


def _make_bytes(*args: Any) -> bytes:
    return bytes(*_bytes_args("bytes", args))


def _make_bytearray(*args: Any) -> bytearray:
    return bytearray(*_bytes_args("bytearray", args))


_TYPE_OF = {id(None): type(None), id(Ellipsis): type(Ellipsis), id(NotImplemented): type(NotImplemented)}


def _type_of_singleton(*args: Any) -> type:
    # Python pickles type(None), type(...) and type(NotImplemented) as calls to builtins.type;
    # type() with three arguments would create a class, so nothing else is accepted.
    if len(args) == 1 and id(args[0]) in _TYPE_OF:
        return _TYPE_OF[id(args[0])]
    raise _refuse("builtins.type", "only type(None), type(...) and type(NotImplemented) are rebuilt")


def _has_object(dtype: np.dtype) -> bool:
    # hasobject is True for object dtype and for structured dtypes with an object field.
    return bool(dtype.hasobject) or dtype.kind == "O"


def _checked_dtype_value(dtype: object) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise _refuse(type(dtype).__qualname__, "a NumPy dtype was expected here")
    if _has_object(dtype):
        raise _refuse("numpy.dtype[object]", "NumPy arrays of object dtype hold Python objects, which are refused")
    return dtype


def _make_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    if len(args) > 3 or kwargs:
        raise _refuse("numpy.dtype", "a dtype is rebuilt from its description, align and copy flags")
    return _checked_dtype_value(np.dtype(*args))


def _np_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    # Protocols 0-4 write arrays as _reconstruct(ndarray, (0,), b'b') followed by BUILD with
    # the real dtype and data; ndarray.__setstate__ accepts only dtype objects, which come from
    # _make_dtype. Subclasses are not rebuilt: the result keeps the exact type ndarray.
    # The shape is the provider's: the memory it asks for counts against the allowance (NumPy's
    # own pickles ask for none: their data comes with BUILD, which checks its size).
    if subtype is not np.ndarray:
        raise _refuse(getattr(subtype, "__qualname__", type(subtype).__qualname__), "only numpy.ndarray is rebuilt")
    if type(dtype) not in (bytes, str):
        dtype = _checked_dtype_value(dtype)
    checked = _checked_dtype_value(np.dtype(dtype))
    dims = (shape,) if type(shape) is int else shape
    if type(dims) is not tuple or not all(type(n) is int and n >= 0 for n in dims):
        raise _refuse("numpy.ndarray", "its shape must be a tuple of sizes")
    _charge(math.prod(dims) * checked.itemsize, "numpy.ndarray")
    return _np_multiarray._reconstruct(np.ndarray, dims, checked)


def _np_scalar(dtype: object, *args: Any) -> np.generic:
    # scalar(dtype) without data allocates dtype.itemsize bytes, and a void dtype's itemsize is
    # the provider's; with data, it copies that many bytes.
    checked = _checked_dtype_value(dtype)
    _charge(checked.itemsize, f"numpy scalar of {checked.itemsize} bytes")
    return _np_multiarray.scalar(checked, *args)


def _np_frombuffer(buf: object, dtype: object, shape: object, order: object, *args: Any) -> np.ndarray:
    # Protocol 5 writes arrays as _frombuffer(buffer, dtype, shape, order[, axis_order]).
    return _np_numeric._frombuffer(buf, _checked_dtype_value(dtype), shape, order, *args)


_DEFAULT_FACTORIES = (
    int, float, complex, bool, str, bytes, bytearray, tuple, list, dict, set, frozenset,
    collections.OrderedDict, collections.deque, types.SimpleNamespace, fractions.Fraction, decimal.Decimal,
)  # fmt: skip


def _make_defaultdict(default_factory: object = None, *args: Any) -> collections.defaultdict:
    # The factory is called later, by any lookup of a missing key: only value types qualify.
    if default_factory is not None and not any(default_factory is f for f in _DEFAULT_FACTORIES):
        raise _refuse(
            f"collections.defaultdict({_name_of(default_factory)})", "its default factory is not an allowlisted type"
        )
    _sequence_arguments("collections.defaultdict", args, {})
    return _fragile(collections.defaultdict(default_factory, *args))  # type: ignore[arg-type]


_RECONSTRUCTOR_BASES = (object, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)


def _reconstructor(cls: object, base: object, state: object) -> object:
    # copyreg._reconstructor is how protocols 0 and 1 rebuild instances of Python classes.
    if isinstance(cls, _Refused):
        return _RefusedObject(cls.name, ())
    if not any(base is b for b in _RECONSTRUCTOR_BASES) or not isinstance(cls, type) or not issubclass(cls, base):  # type: ignore[arg-type]
        raise _refuse(f"copyreg._reconstructor({_name_of(cls)}, {_name_of(base)})", "this base class is not rebuilt")
    _check_new(cls, (state,) if base is not object else ())
    if base is object:
        return _remote_error(cls, ()) if _not_an_exception(cls) else object.__new__(cls)
    # base.__new__ and base.__init__ are called directly, whatever cls overrides: check for them.
    check = _CALL_ARGUMENTS.get(base)  # type: ignore[call-overload]
    if check is not None:
        check(_dotted(cls), (state,), {})  # type: ignore[arg-type]
    obj = _fragile(base.__new__(cls, state))  # type: ignore[call-overload]
    if base.__init__ is not object.__init__:  # type: ignore[misc]
        base.__init__(obj, state)  # type: ignore[misc]
    return obj


def _newobj(cls: object, *args: Any) -> object:
    if isinstance(cls, _Refused):
        return _RefusedObject(cls.name, args)
    return _checked_new(cls, args, {})


def _newobj_ex(cls: object, args: object, kwargs: object) -> object:
    if isinstance(cls, _Refused):
        return _RefusedObject(cls.name, args if isinstance(args, tuple) else ())
    if type(args) is not tuple or type(kwargs) is not dict:
        raise _refuse("copyreg.__newobj_ex__", "malformed arguments")
    return _checked_new(cls, args, kwargs)


def _check_new(cls: object, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None) -> type:
    """Refuse ``cls.__new__(cls, *args, **kwargs)`` unless cls's rule allows it."""
    if not isinstance(cls, type):
        raise _refuse(_name_of(cls), "only classes can be instantiated")
    rule = _resolve(cls.__module__, cls.__qualname__)
    if rule is None or rule.value is not cls or not rule.new:
        raise _refuse(_dotted(cls))
    # Notebook classes may inherit __new__ from a base that is unsafe with arbitrary arguments.
    if issubclass(cls, (np.ndarray, np.generic, np.dtype)):
        raise _refuse(_dotted(cls), "subclasses of NumPy types are not rebuilt")
    # tuple.__new__(cls, items) copies items, bytes.__new__(cls, n) allocates n bytes, and so on.
    check = _NEW_ARGUMENTS.get(_new_owner(cls))
    if check is not None:
        check(_dotted(cls), args, kwargs or {})
    return cls


def _checked_new(cls: object, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> object:
    checked = _check_new(cls, args, kwargs)
    if _not_an_exception(checked):
        return _remote_error(checked, args)
    return _fragile(checked.__new__(checked, *args, **kwargs))


# ---- exceptions and tracebacks (tblib) -------------------------------------------------------

_MAX_TRACEBACK_DEPTH = 1000


def _exception_class_rule(func: object) -> _Rule:
    if not isinstance(func, type) or not issubclass(func, BaseException):
        raise _refuse(_name_of(func), "an exception class was expected here")
    rule = _resolve(func.__module__, func.__qualname__)
    if rule is None or rule.value is not func or rule.call is None:
        raise _refuse(_dotted(func))
    return rule


def _unpickle_exception(func: object, args: object, *rest: Any) -> object:
    if isinstance(func, _Refused):
        return _RefusedObject(func.name, args if isinstance(args, tuple) else ())
    if type(args) is not tuple:
        raise _refuse("tblib.pickling_support.unpickle_exception", "malformed arguments")
    # The rule's call: checked arguments, and RemoteTaskError for what is not an Exception.
    return tblib_pickling.unpickle_exception(_exception_class_rule(func).call, args, *rest)


def _unpickle_exception_with_attrs(func: object, attrs: object, *rest: Any) -> object:
    if isinstance(func, _Refused):
        args = attrs.get("args", ()) if isinstance(attrs, dict) else ()
        return _RefusedObject(func.name, args if isinstance(args, tuple) else ())
    if type(attrs) is not dict or not all(
        type(k) is str and (k == "__dict__" or not k.startswith("__")) for k in attrs
    ):
        raise _refuse("tblib.pickling_support.unpickle_exception_with_attrs", "malformed attributes")
    if "__dict__" in attrs and type(attrs["__dict__"]) is not dict:
        raise _refuse("tblib.pickling_support.unpickle_exception_with_attrs", "malformed attributes")
    cls = _exception_class_rule(func).value
    args = rest[5] if len(rest) > 5 else ()
    if type(args) is not tuple:
        raise _refuse("tblib.pickling_support.unpickle_exception_with_attrs", "malformed arguments")
    if _not_an_exception(cls):
        shown = attrs.get("args", args)
        remote = _remote_error(cls, shown if type(shown) is tuple else ())  # type: ignore[arg-type]
        return tblib_pickling.unpickle_exception(lambda: remote, (), *rest[:5])
    _check_new(cls, args)  # func.__new__(func, *args): an exception group copies its exceptions
    return tblib_pickling.unpickle_exception_with_attrs(cls, attrs, *rest)


def _clean_text(value: object, default: str) -> str:
    return value if type(value) is str else default


def _clean_filename(value: object) -> str:
    # Formatting a traceback reads source lines from the file it names, on this machine. A
    # provider could name /dev/zero or a FIFO and hang the kernel; keep only names that do not
    # exist here or are regular files.
    name = _clean_text(value, "<remote>")
    try:
        mode = os.stat(name).st_mode
    except (OSError, ValueError):
        return name
    return name if stat.S_ISREG(mode) else f"<remote> {name}"


def _clean_level(frame: object, lineno: object) -> tuple[str, str, int, dict[str, str]]:
    """One traceback level as plain values: never calls or reads attributes of what it got."""
    frame_state = vars(frame) if type(frame) is tblib.Frame else {}
    code = frame_state.get("f_code")
    code_state = vars(code) if type(code) is tblib.Code else {}
    f_globals = frame_state.get("f_globals")
    globals_: dict[str, str] = {}
    if type(f_globals) is dict:
        globals_ = {k: v for k, v in f_globals.items() if k in ("__name__", "__file__") and type(v) is str}
    line = lineno if type(lineno) is int and 0 < lineno < 2**31 else 1
    filename = _clean_filename(code_state.get("co_filename"))
    return filename, _clean_text(code_state.get("co_name"), "<remote>"), line, globals_


def _unpickle_traceback(tb_frame: object, tb_lineno: object, tb_next: object) -> types.TracebackType | None:
    """Rebuild a traceback from file names, function names and line numbers only.

    tblib's own version runs ``exec`` with the frame's globals and locals as sent, and follows
    ``tb_next`` without end; here each level is copied into fresh tblib objects with plain
    values, locals dropped, and the chain cut at cycles and at a depth limit.
    """
    levels = [_clean_level(tb_frame, tb_lineno)]
    seen: set[int] = set()
    node = tb_next
    while type(node) is tblib.Traceback and id(node) not in seen and len(levels) < _MAX_TRACEBACK_DEPTH:
        seen.add(id(node))
        state = vars(node)
        levels.append(_clean_level(state.get("tb_frame"), state.get("tb_lineno")))
        node = state.get("tb_next")
    head: tblib.Traceback | None = None
    previous: tblib.Traceback | None = None
    for filename, name, lineno, globals_ in levels:
        code = object.__new__(tblib.Code)
        code.co_filename, code.co_name = filename, name
        frame = object.__new__(tblib.Frame)
        frame.f_globals, frame.f_locals, frame.f_code, frame.f_lineno = globals_, {}, code, lineno
        level = object.__new__(tblib.Traceback)
        level.tb_frame, level.tb_lineno, level.tb_next = frame, lineno, None
        if previous is None:
            head = level
        else:
            previous.tb_next = level
        previous = level
    assert head is not None
    return head.as_traceback()


# ---- the static allowlist --------------------------------------------------------------------


def _build_static_rules() -> dict[tuple[str, str], _Rule]:
    rules: dict[tuple[str, str], _Rule] = {}
    for cls in (
        bool, int, float, complex, range, object, types.SimpleNamespace, decimal.Decimal,
        datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone, uuid.UUID,
    ):  # fmt: skip
        rules[(cls.__module__, cls.__qualname__)] = _value_class(cls)
    # Classes whose constructor copies a container or takes a size: never handed to the C reader.
    for cls in (
        tuple, list, dict, set, frozenset, slice, fractions.Fraction, collections.OrderedDict, collections.deque,
    ):  # fmt: skip
        rules[(cls.__module__, cls.__qualname__)] = _sized_class(cls)
    # Classes that pickles name as values (dask's "type-serialized", future.type, the subtype
    # argument of _reconstruct) but that are unsafe to call with arbitrary arguments.
    rules[("builtins", "str")] = _checked_class(str, None)
    rules[("builtins", "bytes")] = _checked_class(bytes, _make_bytes)
    rules[("builtins", "bytearray")] = _checked_class(bytearray, _make_bytearray)
    rules[("builtins", "type")] = _checked_class(type, _type_of_singleton)
    rules[("numpy", "ndarray")] = _checked_class(np.ndarray, None)
    for cls in (NoWorkerError, NoValidWorkerError):  # raised by the scheduler, not by a provider
        rules[(cls.__module__, cls.__qualname__)] = _value_class(cls)
    rules[("builtins", "Ellipsis")] = _constant("builtins.Ellipsis", Ellipsis)
    rules[("builtins", "NotImplemented")] = _constant("builtins.NotImplemented", NotImplemented)

    functions: dict[tuple[str, str], Callable[..., Any]] = {
        ("_codecs", "encode"): _codecs_encode,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copyreg", "__newobj__"): _newobj,
        ("copyreg", "__newobj_ex__"): _newobj_ex,
        ("collections", "defaultdict"): _make_defaultdict,
        ("numpy", "dtype"): _make_dtype,
        ("tblib.pickling_support", "unpickle_traceback"): _unpickle_traceback,
        ("tblib.pickling_support", "unpickle_exception"): _unpickle_exception,
        ("tblib.pickling_support", "unpickle_exception_with_attrs"): _unpickle_exception_with_attrs,
    }
    for package in ("numpy.core", "numpy._core"):
        functions[(f"{package}.multiarray", "_reconstruct")] = _np_reconstruct
        functions[(f"{package}.multiarray", "scalar")] = _np_scalar
        functions[(f"{package}.numeric", "_frombuffer")] = _np_frombuffer
    for key, function in functions.items():
        rules[key] = _function(".".join(key), function)
    # defaultdict, like deque, frees its items recursively: only the strict reader builds it (see
    # _Allowance.fragile).
    rules[("collections", "defaultdict")] = _function("collections.defaultdict", _make_defaultdict, fast=False)

    for cls in (tblib.Frame, tblib.Code, tblib.Traceback):
        rules[(cls.__module__, cls.__qualname__)] = _state_class(cls)
    rules[(__name__, "notebook_class")] = _notebook_class_rule()
    rules.update(__import__(f"{__package__}._numpy_state", fromlist=["_"]).numpy_state_rules())
    return rules


_STATIC_RULES = _build_static_rules()

# Classes registered by allow_class, by (module, qualname).
_registered: dict[tuple[str, str], type] = {}
_registry_lock = threading.Lock()


def _class_rule(cls: type) -> _Rule:
    # Exceptions are rebuilt by calling the class with their args (that is how Python pickles
    # them); other classes only from their state.
    return _exception_rule(cls) if issubclass(cls, BaseException) else _state_class(cls)


def _lookup_qualname(namespace: object, qualname: str) -> object:
    """``namespace.a.b`` through ``__dict__`` lookups only: no getattr hooks, no imports."""
    obj = namespace
    for part in qualname.split("."):
        try:
            obj = vars(obj).get(part)
        except TypeError:
            return None
        if obj is None:
            return None
    return obj


def _defined_class(module: str, name: str) -> type | None:
    """The class ``module.name`` if that module is imported and defines it under that name."""
    namespace = sys.modules.get(module)
    if namespace is None:
        return None
    cls = _lookup_qualname(namespace, name)
    if isinstance(cls, type) and cls.__module__ == module and cls.__qualname__ == name:
        return cls
    return None


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocols 0-2 name Python 2's modules (``__builtin__.eval``); map them, as pickle does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _resolve(module: str, name: str) -> _Rule | None:
    """The rule for a name a pickle refers to, or None: never imports, never calls user code."""
    key = module, name = _python3_name(module, name)
    rule = _STATIC_RULES.get(key)
    if rule is not None:
        return rule
    registered = _registered.get(key)
    if registered is not None:
        return _class_rule(registered)
    if module == "builtins":
        cls = vars(builtins).get(name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return _exception_rule(cls)
        return None
    if module == "__main__":
        cls = _defined_class(module, name)
        return _class_rule(cls) if cls is not None else None
    if module == "golem_jupyter" or module.startswith("golem_jupyter."):
        cls = _defined_class(module, name)
        if cls is not None and (issubclass(cls, GolemError) or module == "golem_jupyter.errors"):
            return _class_rule(cls)
    return None


def rebuilds(cls: type) -> bool:
    """Whether instances of ``cls`` can come back from a provider: the decoder has a rule for the class (or
    rebuilds it from plain data), it is a NumPy scalar type, or the notebook defines it. For the planner, which
    makes the instances of other classes in the kernel; False where unsure (the kernel is always exact)."""
    from ._numpy_state import REDUCERS

    if cls in REDUCERS or cls is np.ndarray:
        return True
    if issubclass(cls, np.generic):
        return cls is not np.object_ and cls in _LEAF_TYPES
    if issubclass(cls, BaseException) or not isinstance(cls.__qualname__, str):
        return False
    return _resolve(cls.__module__, cls.__qualname__) is not None


def allow_class(cls: type) -> None:
    """Let instances of ``cls`` be rebuilt from provider bytes, from their state.

    For plain data classes of the notebook: the decoder creates instances with
    ``cls.__new__`` and fills them with ``__setstate__`` or their ``__dict__``; it never calls
    ``cls`` itself (an exception class excepted). Only register classes whose ``__setstate__``
    (if any) is safe to run on data a provider chose.
    """
    if not isinstance(cls, type):
        raise TypeError(f"allow_class expects a class, got {cls!r}")
    with _registry_lock:
        _registered[(cls.__module__, cls.__qualname__)] = cls


def disallow_class(cls: type) -> None:
    """Undo :func:`allow_class`."""
    with _registry_lock:
        key = (cls.__module__, cls.__qualname__)
        if _registered.get(key) is cls:
            del _registered[key]


def allow_namespace(namespace: Mapping[str, object]) -> list[type]:
    """Register the classes a namespace defines (those whose ``__module__`` is its ``__name__``).

    Meant for a notebook's user namespace: classes defined in its cells are registered,
    classes it merely imported are not. Returns the classes registered.
    """
    module = namespace.get("__name__", "__main__")
    classes = [v for v in namespace.values() if isinstance(v, type) and v.__module__ == module]
    for cls in classes:
        allow_class(cls)
    return classes
