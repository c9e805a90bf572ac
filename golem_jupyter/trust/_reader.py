"""The restricted decoder: provider bytes become Python objects only from an allowlist.

Results and exceptions come back from machines the requestor does not control, as pickles. A
plain ``pickle.loads`` runs whatever callable the bytes name, so a hostile provider could run
code in the Jupyter kernel. :func:`restricted_loads` reads the same pickles but rebuilds only:

* Python's value types (None, bool, int, float, complex, str, bytes, bytearray, tuple, list,
  dict, set, frozenset, slice, range), ``types.SimpleNamespace``, ``fractions.Fraction``,
  ``decimal.Decimal``, the ``datetime`` types, ``collections.OrderedDict``/``deque``/
  ``defaultdict`` (with an allowlisted factory) and ``uuid.UUID``;
* NumPy arrays, dtypes and scalars, never of object dtype;
* exceptions: every exception class of the ``builtins`` module, every class of
  :mod:`golem_jupyter.errors`, every :class:`GolemError` subclass of golem_jupyter, with their
  tracebacks (tblib's pickling helpers, rebuilt from file names and line numbers only), and
  distributed's ``NoWorkerError``/``NoValidWorkerError``, the scheduler's verdict on a task
  that no worker is left to run;
* instances of classes defined in the notebook (``__main__``) or registered with
  :func:`allow_class`, rebuilt from their state (``__new__`` then ``__setstate__``/``__dict__``),
  never by calling the class (exception classes excepted: exceptions are rebuilt from their
  arguments). The pickle must name the class by reference (``__main__.Point``): a class that
  cloudpickle wrote by value (``cloudpickle.cloudpickle._make_skeleton_class``, which is what a
  worker writes for a class it only has from the requestor's cloudpickled task) is refused,
  since rebuilding it means building functions from code objects.

Anything else raises :class:`UnsafePayload` naming the type, *before* anything is imported
or called: names are looked up in the allowlist and in modules that are already imported, and
the callables handed to the unpickler are wrappers that check their arguments.

How it works: ``find_class`` is the only way a pickle reaches a Python object by name. The
fast path is the C unpickler, which calls whatever ``find_class`` returns without asking, so it
only gets values that are safe to call with any arguments and cannot be changed by the pickle
(immutable builtin types, :class:`_SafeCall` wrappers). A pickle that names anything else (a
notebook class, ``numpy.ndarray`` as a value, ``bytes`` as a value, tblib's frame classes) is
read again by a pure-Python unpickler that checks each REDUCE, NEWOBJ and BUILD against the
rule of the object it applies to. That second reader is about ten times slower, so it only
runs for those pickles; distributed's usual traffic (protocol 5, arrays out of band) stays on
the fast path.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import types
from collections.abc import Callable, Iterable
from traceback import format_tb
from typing import Any, ClassVar

from ._errors import RemoteTaskError, UnsafePayload
from ._rules import (
    _checked_new,
    _class_rule,
    _dotted,
    _name_of,
    _python3_name,
    _Refused,
    _RefusedObject,
    _resolve,
    _Rule,
    _SafeCall,
)

# --------------------------------------------------------------------------------------------
# The two readers.


class _NeedsStrictReader(Exception):
    """The fast reader met a name whose use it cannot check; the strict reader takes over."""


class _FastReader(pickle.Unpickler):
    """The C unpickler, given only values it may use without asking (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        rule = _resolve(module, name)
        if rule is None:
            raise UnsafePayload(".".join(_python3_name(module, name)))
        if not rule.fast:
            raise _NeedsStrictReader
        return rule.value


_DISPATCH = pickle._Unpickler.dispatch  # type: ignore[attr-defined]


class _StrictReader(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler, with every opcode that calls or mutates checked."""

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(_DISPATCH)

    def __init__(self, data: bytes | bytearray | memoryview, buffers: list[Any] | None, *, salvage: bool = False):
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._salvage = salvage
        # id -> rule for every value find_class handed out; the rule keeps the value alive.
        self._handed: dict[int, _Rule] = {}

    def find_class(self, module: str, name: str) -> Any:
        rule = _resolve(module, name)
        if rule is None:
            if self._salvage:
                return _Refused(".".join(_python3_name(module, name)))
            raise UnsafePayload(".".join(_python3_name(module, name)))
        self._handed[id(rule.value)] = rule
        return rule.value

    def _rule_for(self, obj: object) -> _Rule | None:
        rule = self._handed.get(id(obj))
        return rule if rule is not None and rule.value is obj else None

    def _call(self, func: object, args: object) -> object:
        if type(args) is not tuple:
            raise pickle.UnpicklingError("REDUCE arguments must be a tuple")
        if isinstance(func, _Refused):
            return _RefusedObject(func.name, args)
        rule = self._rule_for(func)
        if rule is None:
            raise UnsafePayload(_name_of(func), "the pickle called something that is not an allowlisted function")
        if rule.call is None:
            raise UnsafePayload(rule.name, "it is rebuilt from its state, never by calling it")
        result = rule.call(*args)
        if rule.returns_class:
            self._handed[id(result)] = _class_rule(result)
        return result

    def _new(self, cls: object, args: object, kwargs: object) -> object:
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("NEWOBJ arguments must be a tuple and a dict")
        if isinstance(cls, _Refused):
            return _RefusedObject(cls.name, args)
        return _checked_new(cls, args, kwargs)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _instantiate(self, klass: object, args: list[Any]) -> None:
        # INST and OBJ (protocols 0 and 1; Python 3 never writes them).
        if args or not isinstance(klass, type):
            self.append(self._call(klass, tuple(args)))
        else:
            self.append(self._new(klass, (), {}))

    def load_build(self) -> None:
        # BUILD sets attributes on the object below it. On a class or function that find_class
        # handed out, that would change it for the whole process.
        target = self.stack[-2] if len(self.stack) > 1 else None
        if isinstance(target, (type, _SafeCall)) or self._rule_for(target) is not None:
            raise UnsafePayload(_name_of(target), "the pickle tried to change a class or function")
        _DISPATCH[pickle.BUILD[0]](self)

    def get_extension(self, code: int) -> None:
        raise pickle.UnpicklingError(f"extension code {code}: copyreg extension codes are not accepted")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def restricted_loads(data: bytes | bytearray | memoryview, *, buffers: Iterable[Any] = ()) -> object:
    """Like ``pickle.loads``, but rebuilds only the allowlist (see the module docstring).

    Raises :class:`UnsafePayload` (naming the type) for anything else, before importing or
    calling it. ``buffers`` are protocol 5's out-of-band buffers, as for ``pickle.loads``.
    """
    buffer_list = list(buffers) if buffers else None
    # The C unpickler resolves extension codes from copyreg's global cache without asking
    # find_class; none are registered in a normal process, and if any are, the strict reader
    # (which refuses them) reads everything.
    if not copyreg._inverted_registry:  # type: ignore[attr-defined]
        try:
            return _FastReader(io.BytesIO(data), buffers=buffer_list).load()
        except _NeedsStrictReader:
            pass
    return _StrictReader(data, buffer_list).load()


# --------------------------------------------------------------------------------------------
# Exceptions.


def _message_of(args: tuple[Any, ...]) -> str:
    # What str() of an exception with these args shows.
    try:
        return "" if not args else str(args[0]) if len(args) == 1 else str(args)
    except Exception:  # noqa: BLE001 (a notebook class's __str__ may fail on provider data)
        return ""


def _describe_refused(data: bytes | bytearray | memoryview) -> tuple[str, str] | None:
    """The type name and message of a pickled exception that restricted_loads refused.

    Reads the bytes again in salvage mode, where a refused name becomes an inert placeholder
    instead of an error: nothing outside the allowlist is called either way.
    """
    try:
        obj = _StrictReader(data, None, salvage=True).load()
    except Exception:  # noqa: BLE001 (best effort on hostile bytes: the caller falls back to the type name)
        return None
    if isinstance(obj, _RefusedObject):
        return obj.name, _message_of(obj.args)
    if isinstance(obj, BaseException):  # an allowed type whose arguments were refused
        return _dotted(type(obj)), _message_of(obj.args)
    return None


def _decode_traceback(traceback: object) -> types.TracebackType | None:
    if isinstance(traceback, types.TracebackType):
        return traceback
    if isinstance(traceback, (bytes, bytearray, memoryview)):
        try:
            decoded = restricted_loads(traceback)
        except Exception:  # noqa: BLE001 (a traceback that cannot be decoded is dropped, as distributed does)
            return None
        return decoded if isinstance(decoded, types.TracebackType) else None
    return None


def decode_exception(
    data: bytes | bytearray | memoryview,
    traceback: object = None,
    *,
    exception_text: str | None = None,
    traceback_text: str | None = None,
) -> tuple[BaseException, types.TracebackType | None]:
    """Rebuild a pickled remote exception and its traceback with the restricted decoder.

    An exception of an allowlisted type comes back as itself. One the decoder refuses comes
    back as :class:`RemoteTaskError` with the remote type's name, message (``exception_text``
    when given, else read from the bytes without rebuilding the type) and traceback text
    (``traceback_text`` when given, else formatted from the decoded traceback). Other decode
    failures (malformed bytes) raise. The traceback is decoded when it is bytes, and None when
    it cannot be.
    """
    tb = _decode_traceback(traceback)
    try:
        exception = restricted_loads(data)
    except UnsafePayload as refused:
        described = _describe_refused(data)
        type_name, message = described if described is not None else (refused.type_name, "")
        return RemoteTaskError(
            type_name,
            exception_text or message,
            traceback_text or ("".join(format_tb(tb)) if tb is not None else ""),
        ), tb
    if not isinstance(exception, BaseException):
        return RemoteTaskError(_name_of(exception), "the provider sent this instead of an exception"), tb
    return exception, tb
