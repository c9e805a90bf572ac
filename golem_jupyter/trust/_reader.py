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

Limits (DESIGN.md section 6), whichever reader runs:

* Size: constructors are checked before they run (``_rules``): none is given a size or a range
  the provider chose (``bytearray(n)``, ``list(range(n))``), and what they copy or allocate counts
  against an allowance of ``ALLOCATION_FACTOR`` times the bytes received plus
  ``ALLOCATION_FLOOR`` (:class:`PayloadTooLarge`).
* Depth: the decoded value may nest at most ``MAX_DEPTH`` containers deep
  (:class:`PayloadTooDeep`), counted along every path (:func:`_too_deep`). The C reader builds
  nested lists with opcodes alone, so the check is on what it built, not on find_class. Values
  are freed recursively in C, and CPython's guard against deep recursion there ("trashcan")
  covers list, tuple, dict, set and objects but not deque, defaultdict or slice: a slice holds
  plain values only, and deques and defaultdicts (built by the strict reader only) are emptied
  before a refused or failed decode drops them (``_Allowance.fragile``).
* While decoding, CPython hashes dict keys and set items, and hashing a tuple recurses in C once
  per level of nesting, with no recursion check: a 1 MB pickle of ``{((((...),),),): 0}`` crashes
  the process before any check on the result can run. Every container comes from one opcode
  (EMPTY_LIST, TUPLE1, REDUCE, ...), so the number of those bytes in the pickle bounds the
  nesting (:func:`_nesting_bounds`, one ``bytes.translate``): below half ``MAX_DEPTH`` the
  result needs no check at all, and above ``_INLINE_NESTING`` possible tuple levels the C
  reader runs in a thread whose stack holds them all (:func:`_on_a_stack_of`). The strict
  reader refuses a tuple deeper than ``MAX_DEPTH`` as it builds one, and reads the pickles that
  would need a stack larger than ``_MAX_STACK``.
"""

from __future__ import annotations

import collections
import contextvars
import copyreg
import gc
import io
import operator
import pickle
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress
from traceback import format_tb
from typing import Any, ClassVar

from . import _rules
from ._errors import PayloadTooDeep, RemoteTaskError, UnsafePayload
from ._rules import (
    _ALLOWANCE,
    _LEAF_TYPES,
    _allowance_for,
    _checked_new,
    _class_rule,
    _dotted,
    _empty_fragile,
    _message_of,
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
        # id -> (tuple, how deep tuples nest in it) for every tuple built: hashing a tuple recurses
        # in C once a level with no recursion check, so none deeper than MAX_DEPTH is ever built.
        self._tuples: dict[int, tuple[tuple[Any, ...], int]] = {}

    def _tuple(self, value: Any) -> Any:
        """Note how deep tuples nest in the tuple ``value``; refuse it if deeper than MAX_DEPTH."""
        below = 0
        for item in value:
            if isinstance(item, tuple):
                known = self._tuples.get(id(item))
                depth = known[1] if known is not None and known[0] is item else _tuple_depth(item)
                below = max(below, depth)
        if below >= _rules.MAX_DEPTH:
            raise PayloadTooDeep(_dotted(type(value)), _rules.MAX_DEPTH)
        if below:  # a tuple of plain values is measured again in one step when needed
            self._tuples[id(value)] = (value, below + 1)
        return value

    def load_tuple(self) -> None:
        value = self._tuple(tuple(self.pop_mark()))  # pop_mark changes self.append
        self.append(value)

    def load_tuple1(self) -> None:
        self.stack[-1] = self._tuple((self.stack[-1],))

    def load_tuple2(self) -> None:
        self.stack[-2:] = [self._tuple((self.stack[-2], self.stack[-1]))]

    def load_tuple3(self) -> None:
        self.stack[-3:] = [self._tuple((self.stack[-3], self.stack[-2], self.stack[-1]))]

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
        return self._tuple(result) if isinstance(result, tuple) else result

    def _new(self, cls: object, args: object, kwargs: object) -> object:
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("NEWOBJ arguments must be a tuple and a dict")
        if isinstance(cls, _Refused):
            return _RefusedObject(cls.name, args)
        result = _checked_new(cls, args, kwargs)
        return self._tuple(result) if isinstance(result, tuple) else result

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
        if type(target) is RemoteTaskError:  # what a refused exception became: its fields are the decoder's
            self.stack.pop()
            return
        _DISPATCH[pickle.BUILD[0]](self)

    def get_extension(self, code: int) -> None:
        raise pickle.UnpicklingError(f"extension code {code}: copyreg extension codes are not accepted")

    dispatch[pickle.TUPLE[0]] = load_tuple
    dispatch[pickle.TUPLE1[0]] = load_tuple1
    dispatch[pickle.TUPLE2[0]] = load_tuple2
    dispatch[pickle.TUPLE3[0]] = load_tuple3
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def restricted_loads(
    data: bytes | bytearray | memoryview, *, buffers: Iterable[Any] = (), source: str | None = None
) -> object:
    """Like ``pickle.loads``, but rebuilds only the allowlist (see the module docstring).

    Raises :class:`UnsafePayload` (naming the type) for anything else, before importing or
    calling it; its subclasses :class:`PayloadTooLarge` and :class:`PayloadTooDeep` for values
    that would allocate far more than the bytes received, or nest too deep. ``buffers`` are
    protocol 5's out-of-band buffers, as for ``pickle.loads``. ``source`` names who sent the
    bytes (a provider's address or name), for the error messages.
    """
    try:
        return _decode(data, list(buffers) if buffers else None, source)
    except UnsafePayload as refused:
        raise refused.with_source(source)  # noqa: B904 (the same exception, naming the provider)


def _read(data: bytes | bytearray, buffers: list[Any] | None, salvage: bool, fast: bool = True) -> object:
    # The C unpickler resolves extension codes from copyreg's global cache without asking
    # find_class; none are registered in a normal process, and if any are, the strict reader
    # (which refuses them) reads everything.
    if fast and not salvage and not copyreg._inverted_registry:  # type: ignore[attr-defined]
        try:
            return _FastReader(io.BytesIO(data), buffers=buffers).load()
        except _NeedsStrictReader:
            pass
    return _StrictReader(data, buffers, salvage=salvage).load()


def _decode(
    data: bytes | bytearray | memoryview, buffers: list[Any] | None, source: str | None, *, salvage: bool = False
) -> object:
    """Read ``data`` within the limits (module docstring), on a stack deep enough for it."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    received = len(data) + sum(map(_nbytes, buffers or ()))
    allowance = _allowance_for(received, source)
    token = _ALLOWANCE.set(allowance)
    try:
        containers, tuples = _nesting_bounds(data)
        try:
            if tuples <= _INLINE_NESTING:
                value = _read(data, buffers, salvage)
            elif _stack_for(tuples) <= _MAX_STACK:
                value = _on_a_stack_of(_stack_for(tuples), lambda: _read(data, buffers, salvage))
            else:  # the strict reader builds no tuple deeper than MAX_DEPTH, on any stack
                value = _read(data, buffers, salvage, fast=False)
        except RecursionError:  # e.g. comparing nested keys while building a dict
            raise PayloadTooDeep("value", _rules.MAX_DEPTH, source) from None
        # An object built by one opcode is two levels: itself and its __dict__.
        too_deep = _too_deep(value, _rules.MAX_DEPTH, received) if 2 * containers > _rules.MAX_DEPTH else None
        if too_deep is not None:
            raise PayloadTooDeep(too_deep, _rules.MAX_DEPTH, source)
    except BaseException:
        # What was built is dropped with the error: first empty the containers that would free
        # their contents recursively (deque, defaultdict), while the allowance still holds them.
        _empty_fragile(allowance)
        raise
    finally:
        _ALLOWANCE.reset(token)
    return value


def _nbytes(buffer: object) -> int:
    try:
        return memoryview(buffer).nbytes  # type: ignore[arg-type]
    except TypeError:
        return 0


# --------------------------------------------------------------------------------------------
# Nesting.

# The opcodes that make a container (or call something that may return one). A value nests no
# deeper than the number of containers in it, so no deeper than the number of these bytes; tuples
# (what hashing recurses through) no deeper than the number of those that can make a tuple.
_TUPLE_OPCODES = pickle.TUPLE + pickle.TUPLE1 + pickle.TUPLE2 + pickle.TUPLE3
_TUPLE_OPCODES += pickle.REDUCE + pickle.NEWOBJ + pickle.NEWOBJ_EX + pickle.OBJ + pickle.INST
_CONTAINER_OPCODES = _TUPLE_OPCODES + pickle.EMPTY_LIST + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE
_CONTAINER_OPCODES += pickle.EMPTY_SET + pickle.LIST + pickle.DICT + pickle.FROZENSET
_NOT_CONTAINER_OPCODES = bytes(sorted(set(range(256)) - set(_CONTAINER_OPCODES)))
_NOT_TUPLE_OPCODES = bytes(sorted(set(range(256)) - set(_TUPLE_OPCODES)))

_INLINE_NESTING = 1000
"""Tuples this deep hash within any thread's stack (CPython uses about 60 bytes a level)."""

_STACK_PER_LEVEL = 128
_STACK_BASE = 1 << 20
_MAX_STACK = 256 << 20
"""Above this, the strict reader reads the pickle instead (it needs no deep stack: it builds no
deep tuple), rather than the C reader on a stack this large."""

_stack_size_lock = threading.Lock()


def _nesting_bounds(data: bytes | bytearray) -> tuple[int, int]:
    """How deep this pickle's value, and the tuples in it, can nest at most: counts of bytes."""
    if len(data) <= _INLINE_NESTING:
        return len(data), len(data)
    containers = data.translate(None, _NOT_CONTAINER_OPCODES)
    return len(containers), len(containers.translate(None, _NOT_TUPLE_OPCODES))


def _stack_for(levels: int) -> int:
    """A C stack that holds ``levels`` nested tuple hashes, in 64 KiB pages."""
    return -(-(levels * _STACK_PER_LEVEL + _STACK_BASE) // (1 << 16)) << 16


def _on_a_stack_of(size: int, read: Callable[[], object]) -> object:
    """``read()`` in a thread whose C stack is ``size`` bytes.

    Python has no recursion check in tuple hashing: building ``{deep_tuple: 0}`` recurses in C as
    deep as the tuple, and a thread's stack (8 MiB, often less) holds about 100,000 levels. The
    result is checked for depth afterwards; this only keeps the process alive until then.
    """
    outcome: list[tuple[bool, object]] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.append((True, context.run(read)))
        except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
            outcome.append((False, error))

    with _stack_size_lock:
        previous = threading.stack_size()
        try:
            threading.stack_size(size)
            thread = threading.Thread(target=run, name="golem-jupyter-decode", daemon=True)
            thread.start()
        except (ValueError, RuntimeError, MemoryError):
            detail = f"reading it safely needs a thread with a {size >> 20} MiB stack, which failed to start"
            raise UnsafePayload("result too large", detail) from None
        finally:
            threading.stack_size(previous)
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value


def _tuple_depth(value: tuple[Any, ...]) -> int:
    """How deep tuples nest in ``value`` (a tuple the strict reader did not build), iteratively."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > _rules.MAX_DEPTH:
            break
        level = [item for t in level for item in t if isinstance(item, tuple)]
    return depth


_PLAIN_SEQUENCES = frozenset({list, tuple, set, frozenset})


def _is_nested(value: object) -> bool:
    return type(value) not in _LEAF_TYPES


_SIZED = _PLAIN_SEQUENCES | {dict, collections.OrderedDict, collections.defaultdict, collections.deque}


def _size_of(level: list[object], containers: set[type]) -> int:
    """How many values the containers of ``level`` hold, about (a key and its value are two)."""
    if len(level) == 1:
        only = level[0]
        return 2 * len(only) if type(only) in _SIZED else 8  # type: ignore[arg-type]
    if containers <= _PLAIN_SEQUENCES:
        return sum(map(len, level))  # type: ignore[arg-type]
    if containers <= _SIZED:
        return 2 * sum(map(len, level))  # type: ignore[arg-type]
    return sum(2 * len(obj) if type(obj) in _SIZED else 8 for obj in level)  # type: ignore[arg-type]


def _nested_in(level: list[object], containers: set[type]) -> tuple[list[object], set[type] | None]:
    """The containers directly inside the containers of ``level`` (of types ``containers``), and
    their types when known.

    What a container holds is what CPython's garbage collector sees in it (``gc.get_referents``):
    items, keys and values, an object's ``__dict__`` and slots, an exception's args, cause and
    context. That reads them all at C speed and runs nothing a class defines.
    """
    if containers <= _PLAIN_SEQUENCES:  # the common case, read without copying the items
        items: Iterable[object] = level[0] if len(level) == 1 else chain.from_iterable(level)  # type: ignore[arg-type]
        kinds = set(map(type, items))
        if kinds <= _LEAF_TYPES:
            return [], None
        if kinds.isdisjoint(_LEAF_TYPES):
            return (items if type(items) is list else list(chain.from_iterable(level))), kinds  # type: ignore[arg-type]
    items = gc.get_referents(*level)
    if _LEAF_TYPES.issuperset(map(type, items)):
        return [], None
    return list(compress(items, map(operator.not_, map(_LEAF_TYPES.__contains__, map(type, items))))), None


def _too_deep(value: object, limit: int, received: int) -> str | None:
    """The type of a container more than ``limit`` levels deep in ``value``, or None.

    Depth counts containers along a path, every path, as printing the value would (a cycle ends a
    path, as it does for repr); an object's ``__dict__`` is a container of its own. Level by
    level at C speed while the value is a tree; a value whose levels hold more than the pickle
    could spell out one by one shares containers, and is measured again container by container
    (:func:`_deepest_path`).
    """
    level = [value] if _is_nested(value) else []
    kinds: set[type] | None = None
    work = 2 * received + (1 << 20)
    depth = 0
    while level:
        depth += 1
        if kinds is None:
            kinds = set(map(type, level))
        work -= _size_of(level, kinds)
        if depth > limit or work < 0:  # too deep, or a cycle; or shared containers
            return _deepest_path(value, limit)
        level, kinds = _nested_in(level, kinds)
    return None


def _deepest_path(value: object, limit: int) -> str | None:
    """The type of a container more than ``limit`` containers deep, by depth-first search.

    Each container is measured once (the height below it is kept), so shared containers cost
    nothing more; a container already on the path is a cycle and ends it.
    """
    height: dict[int, int] = {}
    on_path = {id(value)}
    path: list[tuple[object, Iterator[object]]] = [(value, iter(_nested_in([value], {type(value)})[0]))]
    below = [0]
    while path:
        obj, children = path[-1]
        for child in children:
            key = id(child)
            if key in on_path:
                continue
            known = height.get(key)
            if known is not None:
                if len(path) + known > limit:
                    return _dotted(type(child))
                below[-1] = max(below[-1], known)
                continue
            if len(path) >= limit:
                return _dotted(type(child))
            on_path.add(key)
            path.append((child, iter(_nested_in([child], {type(child)})[0])))
            below.append(0)
            break
        else:
            path.pop()
            on_path.discard(id(obj))
            height[id(obj)] = measured = below.pop() + 1
            if below:
                below[-1] = max(below[-1], measured)
    return None


# --------------------------------------------------------------------------------------------
# Exceptions.


def _describe_refused(data: bytes | bytearray | memoryview) -> tuple[str, str] | None:
    """The type name and message of a pickled exception that restricted_loads refused.

    Reads the bytes again in salvage mode, where a refused name becomes an inert placeholder
    instead of an error: nothing outside the allowlist is called either way.
    """
    try:
        obj = _decode(data, None, None, salvage=True)
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
    if type(exception) is RemoteTaskError and not exception.traceback_text:
        # A BaseException that is not an Exception (SystemExit, ...) arrives as RemoteTaskError.
        exception.message = exception_text or exception.message
        exception.traceback_text = traceback_text or ("".join(format_tb(tb)) if tb is not None else "")
        exception.args = (exception.type_name, exception.message, exception.traceback_text)
    return exception, tb
