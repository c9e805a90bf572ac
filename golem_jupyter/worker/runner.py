"""What a provider's worker runs for a ``%%golem`` cell: small programs over one namespace.

The kernel (:mod:`.planner`) compiles each task of a cell into a :class:`Program`: a list of
steps that bind names from the task's arguments and execute compiled statements of the cell,
in one fresh namespace that plays the notebook's globals. Everything here runs on providers and
must only import what a provider has (golem_jupyter, the standard library, NumPy, CuPy).

A task's result is a :class:`UnitResult`: the names it hands on and what it printed. The last
task, :func:`collect`, encodes the names that go back to the notebook, one by one, so that the
kernel can decode each with the restricted decoder and say which one it refused.

A task copies only the values it changes in place (other tasks on the worker may hold the same
objects), all with one memo so that objects they share stay shared; a name it got from the
notebook and left as it was does not go back (the notebook keeps its own object), and a name that
holds another notebook input, or an item of one (``for row in rows``), goes back as a reference to
it, so that it is the notebook's own object, as in plain Python. A function that
a statement of the cell defined in a task (a lambda in a loop) goes back as its defaults and
attributes only: the kernel rebuilds it from its own compiled code. NumPy's error handling and
print options are the kernel's while a task runs.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import pickle
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

from ..errors import GolemError
from ..notebook.transport import (
    LOSSY_NUMPY_TYPES,
    NOTEBOOK_MODULE,
    NUMPY_REDUCERS,
    KeepsFilenames,
    OutputError,
    Shipped,
    check_returnable,
    encode_value,
    unship,
)

ITEM = "__golem_item__"
"""The name a fan-out element is bound to before its loop target is assigned from it."""


class CellTaskError(GolemError):
    """A statement of a ``%%golem`` cell raised on a provider.

    Carries what the kernel needs to raise the original exception with the cell's line
    numbers: the exception encoded like an output (``payload``; empty when it cannot be), its
    type name and message, the traceback as ``(filename, lineno, function)`` frames, the
    provider (worker name) and where in the cell it happened.
    """

    def __init__(self, payload: bytes, type_name: str, message: str, frames: list, provider: str, where: str) -> None:
        super().__init__(payload, type_name, message, frames, provider, where)
        self.payload = payload
        self.type_name = type_name
        self.message = message
        self.frames = frames
        self.provider = provider
        self.where = where

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message} ({self.where}, on {self.provider})"


@dataclass(frozen=True)
class Bind:
    """Bind ``name`` from task argument ``arg``: the value itself, or a name of a :class:`UnitResult`."""

    name: str
    arg: int
    from_unit: bool
    copy: bool = False
    """Deep-copy first: the task changes it in place and other tasks may hold the same object."""
    fallbacks: tuple[tuple[int, bool], ...] = ()
    """(arg, from_unit) to try in order when ``arg``'s task did not bind it (a loop over nothing)."""


@dataclass(frozen=True)
class Exec(KeepsFilenames):
    """Execute compiled statements of the cell in the namespace."""

    code: types.CodeType


@dataclass(frozen=True)
class Program:
    """One task of a cell: steps over one namespace, then the names it hands on."""

    where: str
    steps: tuple[Bind | Exec, ...]
    returns: tuple[str, ...]
    xp: bool = False
    """Bind ``xp`` to CuPy on a GPU worker and to NumPy elsewhere."""
    everything: bool = False
    """Hand on every name the task binds, rebinds or changes (a cell run serially: exec may bind any name),
    except ``definitions``."""
    definitions: frozenset[str] = frozenset()
    """Names the cell's definitions bind: the kernel's own (``def``, ``import``), never handed on as found."""
    settings: dict[str, Any] | None = None
    """The kernel's NumPy error handling (``err``) and print options (``print``), to run under."""


@dataclass
class UnitResult:
    """What one task hands on: names (missing ones were not bound) and its printed output."""

    values: dict[str, Any]
    stdout: str = ""
    unchanged: frozenset[str] = frozenset()
    """Names of ``values`` that still hold the notebook's input as the task got it (not copied, not rebound)."""
    in_place: frozenset[str] = frozenset()
    """Names of ``values`` that hold a notebook input the task changed in place (a serial task's findings)."""
    references: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Names of ``values`` that hold another notebook input as the task got it (``("input", name)``) or an
    item of one (``("item", name, key)``): plain Python leaves them the notebook's own objects."""


@dataclass(frozen=True)
class Elements(KeepsFilenames):
    """One fan-out task: evaluate the element expression for each of its items."""

    where: str
    setup: tuple[Bind | Exec, ...]
    """Names and definitions the element expression needs, as in a :class:`Program`."""
    assign_target: types.CodeType
    """``TARGET = __golem_item__``, compiled at the loop's line."""
    conditions: tuple[types.CodeType, ...]
    element: types.CodeType
    index: types.CodeType | None
    chunk: tuple[int, int] | None = None
    """(i, n): take the i-th of n slices of the items list a source task built; None: items given."""
    xp: bool = False
    settings: dict[str, Any] | None = None


@dataclass
class ElementResults:
    """Per item: kept (the comprehension's conditions held), value, index; plus the last item."""

    results: list[tuple[bool, Any, Any]]
    last_item: Any = None
    has_items: bool = False
    stdout: str = ""


@dataclass(frozen=True)
class Gather(KeepsFilenames):
    """Assemble a fan-out's results in order into the container, as the loop would have."""

    where: str
    form: str  # "comprehension", "append" or "setitem"
    name: str
    target_names: tuple[str, ...]
    assign_target: types.CodeType
    container: Bind | None = None


@dataclass(frozen=True)
class Collect(KeepsFilenames):
    """The last task: the names going back to the notebook, each with the tasks that may hold it."""

    sources: tuple[tuple[str, tuple[int, ...]], ...]
    """Name -> the tasks that may hold it, last writer first."""
    labels: tuple[str, ...]
    functions: tuple[types.CodeType, ...] = ()
    """Code of the functions the cell's statements may define in tasks: such a function goes back as
    ``(position in this tuple, defaults, keyword defaults, attributes)`` and the kernel rebuilds it."""
    everything: bool = False
    """The tasks are a serial cell's: every name they bound or changed goes back, not only ``sources``."""


@dataclass(frozen=True)
class Items:
    """A fan-out task's items, wrapped so that Dask does not look inside them."""

    values: list[Any] = field(default_factory=list)

    def __dask_tokenize__(self) -> tuple[str, int]:
        return ("golem-items", id(self))  # not hashed: the graph's keys are new anyway (see transport.Shipped)


# ---------------------------------------------------------------------------- running


_pickling_installed = False


def _worker_pickling() -> None:
    """On a worker: values that tasks hand to each other keep what NumPy's own pickles lose (a masked array's
    hard mask and ``nomask``). Only in worker processes, never in the kernel (the user's own pickles)."""
    global _pickling_installed
    if not _pickling_installed:
        import copyreg

        for kind in LOSSY_NUMPY_TYPES:
            copyreg.pickle(kind, NUMPY_REDUCERS[kind])
        _pickling_installed = True


def run_program(program: Program, *args: Any) -> UnitResult:
    """Run one task of a cell on this worker."""
    _worker_pickling()
    namespace = _namespace(program.xp)
    injected = {name: namespace[name] for name in ("xp",) if name in namespace}
    inputs = _Inputs(snapshots=program.everything)
    with _Captured() as output, _settings(program.settings):
        _guarded(program.where, _run_steps, program.steps, args, namespace, inputs)
    in_place: set[str] = set()
    if program.everything:
        # Every name the task bound or rebound, and every input it changed in place (exec may do anything).
        values = {}
        for name, value in namespace.items():
            if (name.startswith("__") and name.endswith("__")) or name in program.definitions:
                continue
            if name in injected and value is injected[name]:
                continue  # the worker's array module, not a name the cell bound
            if not inputs.holds(name, value):
                values[name] = value
            elif inputs.changed(name, value):
                values[name] = value
                in_place.add(name)
    else:
        values = {name: namespace[name] for name in program.returns if name in namespace}
    unchanged = frozenset(name for name, value in values.items() if inputs.holds(name, value) and name not in in_place)
    references = {}
    for name, value in values.items():
        if name not in unchanged and name not in in_place and (reference := inputs.reference(value)) is not None:
            references[name] = reference
    return UnitResult(values, output.getvalue(), unchanged, frozenset(in_place), references)


def run_elements(spec: Elements, items: Items | UnitResult, *args: Any) -> ElementResults:
    """Evaluate a fan-out's element expression for each item of this task."""
    _worker_pickling()
    values = items.values if isinstance(items, Items) else items.values[ITEM]
    if spec.chunk is not None:
        i, n = spec.chunk
        size = len(values)
        values = values[size * i // n : size * (i + 1) // n]
    base = _namespace(spec.xp)
    out = ElementResults([])
    with _Captured() as output, _settings(spec.settings):
        _guarded(spec.where, _run_steps, spec.setup, args, base, _Inputs())
        for item in values:
            where = f"{spec.where}, element {_describe(item)}"
            out.results.append(_guarded(where, _element, spec, dict(base), item))
            out.last_item, out.has_items = item, True
    out.stdout = output.getvalue()
    return out


def _element(spec: Elements, namespace: dict[str, Any], item: Any) -> tuple[bool, Any, Any]:
    namespace[ITEM] = item
    exec(spec.assign_target, namespace)
    if not all(eval(condition, namespace) for condition in spec.conditions):
        return False, None, None
    value = eval(spec.element, namespace)
    index = eval(spec.index, namespace) if spec.index is not None else None
    return True, value, index


def gather(spec: Gather, container: Any, *parts: ElementResults) -> UnitResult:
    """Put a fan-out's results together in order, and bind the loop target as the loop leaves it."""
    _worker_pickling()
    values = {spec.name: _guarded(spec.where, _assemble, spec, container, parts)}
    last = next((part for part in reversed(parts) if part.has_items), None)
    if spec.form != "comprehension" and last is not None:
        namespace = {ITEM: last.last_item, "__builtins__": builtins}
        exec(spec.assign_target, namespace)
        values.update({name: namespace[name] for name in spec.target_names})
    return UnitResult(values, "".join(part.stdout for part in parts))


def _assemble(spec: Gather, container: Any, parts: tuple[ElementResults, ...]) -> Any:
    if spec.form == "comprehension":
        return [value for part in parts for keep, value, _ in part.results if keep]
    if spec.container is not None:  # the container comes from the task that built it
        container = container.values[spec.container.name]
    result = copy.copy(_unwrap(container))
    for part in parts:
        for _, value, index in part.results:
            if spec.form == "append":
                result.append(value)
            else:
                result[index] = value
    return result


def collect(spec: Collect, *results: UnitResult) -> dict[str, Any]:
    """Encode the names that go back to the notebook, together (so that aliases stay aliases),
    with each one's type for the kernel's messages; and the printed output of every task, in order.

    The encoded value is ``{"values": {name: value}, "functions": {name: (k, defaults, kwdefaults,
    attributes)}, "in_place": [names], "references": {name: reference}}``: a notebook input a task left as
    it got it does not go back, and a name holding one (or an item of one) goes back as a reference to it."""
    values = {}
    in_place = set()
    references = {}
    for name, candidates in spec.sources:
        # The first task holding it: a loop over nothing does not bind its target.
        holder = next((results[i] for i in candidates if name in results[i].values), None)
        if holder is not None and name in holder.references:
            references[name] = holder.references[name]
        elif holder is not None and name not in holder.unchanged:
            values[name] = holder.values[name]
    if spec.everything:  # a serial task: everything it found
        for result in results:
            if isinstance(result, UnitResult):
                for k, v in result.values.items():
                    if k in result.references:
                        references[k] = result.references[k]
                    elif k not in result.unchanged:
                        values[k] = v
                in_place |= result.in_place
    functions = {}
    for name, value in list(values.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == NOTEBOOK_MODULE:
            position = next((k for k, code in enumerate(spec.functions) if value.__code__ == code), None)
            if position is not None:
                functions[name] = (position, value.__defaults__, value.__kwdefaults__, dict(value.__dict__))
                del values[name]
    for name, value in values.items():
        _guarded(f"returning {name!r}", check_returnable, name, value)
    payload = {"values": values, "functions": functions, "in_place": sorted(in_place), "references": references}
    try:
        encoded = encode_value("the cell's results", payload)
    except OutputError:
        for name, value in values.items():  # say which name cannot come back
            _guarded(f"returning {name!r}", encode_value, name, value)
        for name, value in functions.items():
            _guarded(f"returning {name!r} (a function's defaults)", encode_value, name, value)
        raise
    kinds = {name: f"{type(v).__module__}.{type(v).__qualname__}" for name, v in values.items()}
    kinds.update({name: "function" for name in functions})
    kinds.update({name: "the notebook's own object" for name in references})
    printed = [(label, result.stdout) for label, result in zip(spec.labels, results, strict=True) if result.stdout]
    return {"values": encoded, "types": kinds, "printed": printed}


def run_and_collect(program: Program, spec: Collect, *args: Any) -> dict[str, Any]:
    """A cell that is one task: run it and collect its results in the same task."""
    return collect(spec, run_program(program, *args))


def _guarded(where: str, function: Any, *args: Any) -> Any:
    """``function(*args)``; any failure becomes a :class:`CellTaskError` saying ``where``."""
    try:
        return function(*args)
    except BaseException as error:  # noqa: BLE001 (every failure goes back to the kernel)
        failure = error
    # Raised outside the except block, so that it carries no implicit __context__: the original
    # exception travels encoded in the payload (its class may exist only as a cloudpickle copy
    # here, which the kernel's decoder rightly refuses).
    raise _task_error(failure, where)


# ---------------------------------------------------------------------------- helpers


def _namespace(xp: bool) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": NOTEBOOK_MODULE}
    if xp:
        namespace["xp"] = array_module()
    return namespace


def array_module() -> types.ModuleType:
    """CuPy on a worker that holds a GPU resource (and has CuPy), NumPy elsewhere."""
    import numpy

    try:
        from distributed import get_worker

        gpus = get_worker().state.total_resources.get("GPU", 0)
    except ValueError:  # not in a worker
        gpus = 0
    if gpus:
        try:
            import cupy

            return cupy
        except ImportError:
            pass
    return numpy


class _Inputs:
    """The notebook inputs a task bound as they came (not copied): what it left alone need not go back."""

    def __init__(self, *, snapshots: bool = False) -> None:
        self.values: dict[str, Any] = {}
        self.snapshots: dict[str, bytes | None] | None = {} if snapshots else None
        self.memo: dict[int, Any] = {}  # one deep-copy memo per task: objects shared between copies stay shared
        self._ids: dict[int, tuple[Any, ...]] | None = None

    def bound(self, name: str, value: Any) -> None:
        self.values[name] = value
        if self.snapshots is not None:
            self.snapshots[name] = _pickled(value)

    def holds(self, name: str, value: Any) -> bool:
        return name in self.values and self.values[name] is value

    def reference(self, value: Any) -> tuple[Any, ...] | None:
        """``("input", name)`` if ``value`` is a notebook input as the task got it, ``("item", name, key)`` if it is
        an item of one (a list, tuple or dict of at most ``_ITEMS`` items); None otherwise."""
        if isinstance(value, _IMMUTABLE):
            return None
        if self._ids is None:
            self._ids = {}
            for name, held in self.values.items():
                self._ids.setdefault(id(held), ("input", name))
            for name, held in self.values.items():
                if type(held) in (list, tuple) and len(held) <= _ITEMS:
                    for key, item in enumerate(held):
                        if not isinstance(item, _IMMUTABLE):
                            self._ids.setdefault(id(item), ("item", name, key))
                elif type(held) is dict and len(held) <= _ITEMS:
                    for key, item in held.items():
                        if not isinstance(item, _IMMUTABLE) and isinstance(key, _IMMUTABLE):
                            self._ids.setdefault(id(item), ("item", name, key))
        return self._ids.get(id(value))

    def changed(self, name: str, value: Any) -> bool:
        """A serial task's input changed in place (its pickle differs from the one taken when it was bound)."""
        before = self.snapshots.get(name) if self.snapshots is not None else None
        return before is not None and _pickled(value) != before


_ITEMS = 10_000
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range, frozenset, types.ModuleType, type)


def _pickled(value: Any) -> bytes | None:
    if isinstance(value, types.ModuleType | types.FunctionType | type):
        return None
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 (what cannot be pickled cannot be compared: taken as unchanged)
        return None


def _run_steps(
    steps: tuple[Bind | Exec, ...], args: tuple[Any, ...], namespace: dict[str, Any], inputs: _Inputs
) -> None:
    for step in steps:
        if isinstance(step, Bind):
            namespace[step.name] = _argument(step, args, namespace, inputs)
        else:
            exec(step.code, namespace)  # the requestor's own cell, on a worker it rented


def _argument(step: Bind, args: tuple[Any, ...], namespace: dict[str, Any], inputs: _Inputs) -> Any:
    notebook = False
    for arg, from_unit in ((step.arg, step.from_unit), *step.fallbacks):
        source = args[arg]
        if not from_unit:
            value = unship(source, namespace) if isinstance(source, Shipped) else source
            notebook = True
            break
        if step.name in source.values:
            value = source.values[step.name]
            break
    else:
        raise NameError(f"name {step.name!r} is not defined")
    if step.copy and not isinstance(value, types.ModuleType):
        return copy.deepcopy(value, inputs.memo)
    if notebook:
        inputs.bound(step.name, value)
    return value


@contextlib.contextmanager
def _settings(settings: dict[str, Any] | None) -> Any:
    """Run under the kernel's NumPy error handling and print options."""
    if not settings:
        yield
        return
    import numpy

    with contextlib.ExitStack() as stack:
        if numpy.geterr() != settings["err"]:
            stack.enter_context(numpy.errstate(**settings["err"]))
        if numpy.get_printoptions() != settings["print"]:
            stack.enter_context(numpy.printoptions(**settings["print"]))
        yield


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Shipped) else value


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."


def _provider() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:
        return "this process"


def _task_error(error: BaseException, where: str) -> CellTaskError:
    """Everything the kernel needs to re-raise ``error`` with the cell's line numbers."""
    frames = [
        (frame.filename, frame.lineno or 0, frame.name)
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename not in _OWN_FILES
    ]
    try:
        payload = encode_value("the exception", error)
    except OutputError:
        payload = b""
    return CellTaskError(payload, type(error).__qualname__, str(error), frames, _provider(), where)


_OWN_FILES = {__file__}


# ---------------------------------------------------------------------------- printed output


class _ThreadStdout(io.TextIOBase):
    """``sys.stdout`` on a worker: a task's thread writes to its own buffer, others to the real stream."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, text: str) -> int:
        buffer = getattr(_local, "buffer", None)
        return (buffer if buffer is not None else self.real).write(text)

    def flush(self) -> None:
        buffer = getattr(_local, "buffer", None)
        (buffer if buffer is not None else self.real).flush()

    def writable(self) -> bool:
        return True


_local = threading.local()
_install_lock = threading.Lock()


class _Captured:
    """Capture what this thread prints while a task runs."""

    def __enter__(self) -> io.StringIO:
        with _install_lock:
            if not isinstance(sys.stdout, _ThreadStdout):
                sys.stdout = _ThreadStdout(sys.stdout)
        _local.buffer = io.StringIO()
        return _local.buffer

    def __exit__(self, *exc: object) -> None:
        _local.buffer = None
