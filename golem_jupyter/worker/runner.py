"""What a provider's worker runs for a ``%%golem`` cell: small programs over one namespace.

The kernel (:mod:`.planner`) compiles each task of a cell into a :class:`Program`: a list of
steps that bind names from the task's arguments and execute compiled statements of the cell,
in one fresh namespace that plays the notebook's globals. Everything here runs on providers and
must only import what a provider has (golem_jupyter, the standard library, NumPy, CuPy).

A task's result is a :class:`UnitResult`: the names it hands on and what it printed. The last
task, :func:`collect`, encodes the names that go back to the notebook, one by one, so that the
kernel can decode each with the restricted decoder and say which one it refused.
"""

from __future__ import annotations

import builtins
import copy
import io
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

from ..errors import GolemError
from ..notebook.transport import (
    NOTEBOOK_MODULE,
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
    """Hand on every name the namespace ends with (a cell run serially: exec may bind any name)."""


@dataclass
class UnitResult:
    """What one task hands on: names (missing ones were not bound) and its printed output."""

    values: dict[str, Any]
    stdout: str = ""


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
class Collect:
    """The last task: the names going back to the notebook, each with the tasks that may hold it."""

    sources: tuple[tuple[str, tuple[int, ...]], ...]
    """Name -> the tasks that may hold it, last writer first."""
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Items:
    """A fan-out task's items, wrapped so that Dask does not look inside them."""

    values: list[Any] = field(default_factory=list)


# ---------------------------------------------------------------------------- running


def run_program(program: Program, *args: Any) -> UnitResult:
    """Run one task of a cell on this worker."""
    namespace = _namespace(program.xp)
    with _Captured() as output:
        _guarded(program.where, _run_steps, program.steps, args, namespace)
    if program.everything:
        values = {k: v for k, v in namespace.items() if not (k.startswith("__") and k.endswith("__"))}
    else:
        values = {name: namespace[name] for name in program.returns if name in namespace}
    return UnitResult(values, output.getvalue())


def run_elements(spec: Elements, items: Items | UnitResult, *args: Any) -> ElementResults:
    """Evaluate a fan-out's element expression for each item of this task."""
    values = items.values if isinstance(items, Items) else items.values[ITEM]
    if spec.chunk is not None:
        i, n = spec.chunk
        size = len(values)
        values = values[size * i // n : size * (i + 1) // n]
    base = _namespace(spec.xp)
    out = ElementResults([])
    with _Captured() as output:
        _guarded(spec.where, _run_steps, spec.setup, args, base)
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
    with each one's type for the kernel's messages; and the printed output of every task, in order."""
    values = {}
    for name, candidates in spec.sources:
        # The first task holding it: a loop over nothing does not bind its target.
        holder = next((results[i] for i in candidates if name in results[i].values), None)
        if holder is not None:
            values[name] = holder.values[name]
    for name, value in values.items():
        _guarded(f"returning {name!r}", check_returnable, name, value)
    try:
        encoded = encode_value("the cell's results", values)
    except OutputError:
        for name, value in values.items():  # say which name cannot come back
            _guarded(f"returning {name!r}", encode_value, name, value)
        raise
    types = {name: f"{type(v).__module__}.{type(v).__qualname__}" for name, v in values.items()}
    printed = [(label, result.stdout) for label, result in zip(spec.labels, results, strict=True) if result.stdout]
    return {"values": encoded, "types": types, "printed": printed}


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


def _run_steps(steps: tuple[Bind | Exec, ...], args: tuple[Any, ...], namespace: dict[str, Any]) -> None:
    for step in steps:
        if isinstance(step, Bind):
            namespace[step.name] = _argument(step, args, namespace)
        else:
            exec(step.code, namespace)  # the requestor's own cell, on a worker it rented


def _argument(step: Bind, args: tuple[Any, ...], namespace: dict[str, Any]) -> Any:
    for arg, from_unit in ((step.arg, step.from_unit), *step.fallbacks):
        source = args[arg]
        if not from_unit:
            value = unship(source, namespace) if isinstance(source, Shipped) else source
            break
        if step.name in source.values:
            value = source.values[step.name]
            break
    else:
        raise NameError(f"name {step.name!r} is not defined")
    return copy.deepcopy(value) if step.copy else value


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
