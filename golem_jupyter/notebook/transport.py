"""How a cell's values cross between the kernel and the providers.

Into the graph (kernel to providers) values travel the way Dask sends them (pickle, with
cloudpickle for what the notebook defined), with one exception: a function defined in the
notebook is shipped as :class:`NotebookFunction`, its code without its globals, and rebound on
the provider to the namespace of the task that calls it. It then reads the values that plain
Python would give it at that point of the cell, not copies taken when the graph was built.
Classes that carry code objects (:class:`KeepsFilenames`) pickle them with :mod:`marshal`, so
the code keeps the file name it was compiled under and a provider's traceback points at the
cell's own lines (cloudpickle renames every file it pickles to ``<dynamic-code>``).

Out of the graph (providers to kernel) each written name is encoded on the provider by
:func:`encode_value` and decoded in the kernel by :func:`decode_value`, which is the restricted
decoder: provider bytes never reach ``pickle.loads``. Classes defined in the notebook travel by
name (:func:`~golem_jupyter.trust.notebook_class`), so their instances come back
as instances of the kernel's own class. CuPy arrays come back as NumPy arrays.
"""

from __future__ import annotations

import dis
import functools
import io
import marshal
import pickle
import sys
import types
from dataclasses import dataclass, fields
from typing import Any

from ..errors import GolemError
from ..trust import notebook_class, restricted_loads

NOTEBOOK_MODULE = "__main__"


class _Code:
    """A code object that pickles through :mod:`marshal`: file names and line numbers intact."""

    __slots__ = ("code",)

    def __init__(self, code: types.CodeType) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return marshal.loads, (marshal.dumps(self.code),)


def _portable(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return _Code(value)
    if type(value) is tuple:
        return tuple(_portable(v) for v in value)
    return value


class KeepsFilenames:
    """Mixin for a dataclass: its code objects (in fields, or tuples of them) pickle with marshal.

    It unpickles as ``cls(*fields)``; marshal ties the bytes to the Python version, as
    cloudpickle's code objects already do.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), tuple(_portable(getattr(self, f.name)) for f in fields(self))  # type: ignore[arg-type]


class OutputError(GolemError):
    """A value a cell assigned cannot be brought back to the notebook."""


@dataclass(frozen=True)
class Shipped:
    """A value from the notebook, wrapped so that Dask passes it to the task untouched.

    (A bare tuple whose first item is callable would be read by Dask as a task to run.)
    """

    value: Any


@dataclass(frozen=True)
class NotebookFunction(KeepsFilenames):
    """A function defined in the notebook, without its globals; see :meth:`bind`."""

    code: types.CodeType
    name: str
    qualname: str
    defaults: tuple[Any, ...] | None
    kwdefaults: dict[str, Any] | None
    closure: tuple[Any, ...] | None
    attributes: dict[str, Any]

    @classmethod
    def from_function(cls, function: types.FunctionType) -> NotebookFunction:
        closure = None
        if function.__closure__ is not None:
            closure = tuple(_cell_contents(cell) for cell in function.__closure__)
        return cls(
            function.__code__,
            function.__name__,
            function.__qualname__,
            function.__defaults__,
            function.__kwdefaults__,
            closure,
            dict(function.__dict__),
        )

    def bind(self, namespace: dict[str, Any]) -> types.FunctionType:
        """The function again, reading its globals from ``namespace`` (the task's)."""
        closure = None
        if self.closure is not None:
            closure = tuple(types.CellType() if v is _EMPTY else types.CellType(v) for v in self.closure)
        function = types.FunctionType(self.code, namespace, self.name, self.defaults, closure)
        function.__qualname__ = self.qualname
        function.__kwdefaults__ = self.kwdefaults
        function.__dict__.update(self.attributes)
        return function


class _Empty:
    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return _EMPTY


def ship(value: Any, namespace: dict[str, Any]) -> Shipped:
    """Wrap a notebook value for the graph; functions of ``namespace`` lose their globals."""
    if isinstance(value, types.FunctionType) and value.__globals__ is namespace:
        return Shipped(NotebookFunction.from_function(value))
    return Shipped(value)


def unship(shipped: Shipped, namespace: dict[str, Any]) -> Any:
    """The value on the provider; a notebook function is bound to the task's ``namespace``."""
    value = shipped.value
    if isinstance(value, NotebookFunction):
        return value.bind(namespace)
    return value


def notebook_functions(namespace: dict[str, Any]) -> dict[str, frozenset[str]]:
    """For each function of the notebook namespace, the global names its code reads or writes."""
    found = {}
    for name, value in namespace.items():
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace:
            found[name] = code_globals(value.__code__)
    return found


@functools.lru_cache(maxsize=4096)
def code_globals(code: types.CodeType) -> frozenset[str]:
    """Global names used by ``code`` and the code nested in it (inner functions, comprehensions).

    Cached per code object: every cell asks this for every function of the notebook.
    """
    names: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"):
            names.add(instruction.argval)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= code_globals(constant)
    return frozenset(names)


# ---------------------------------------------------------------------------- out of the graph


class _NotebookPickler(pickle.Pickler):
    """Pickles notebook classes by name and CuPy arrays as NumPy arrays."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            if obj.__module__ == NOTEBOOK_MODULE and not _is_worker_main(obj):
                return notebook_class, (obj.__qualname__,)
            return NotImplemented
        if type(obj).__module__.startswith("cupy") and hasattr(obj, "get") and hasattr(obj, "__cuda_array_interface__"):
            return obj.get().__reduce_ex__(5)
        if isinstance(obj, types.FunctionType) and obj.__module__ == NOTEBOOK_MODULE:
            raise OutputError(
                f"it holds the function {obj.__qualname__!r}, made by a statement that ran on a provider; "
                "functions come back only from `def` or `name = lambda ...` statements, which run in the kernel"
            )
        return NotImplemented


def _is_worker_main(cls: type) -> bool:
    """True for a class of the worker process's own ``__main__`` (not one from the notebook)."""
    main = sys.modules.get(NOTEBOOK_MODULE)
    return main is not None and vars(main).get(cls.__qualname__) is cls


def check_returnable(name: str, value: Any) -> None:
    """Refuse, with advice, a value that pickles but means nothing in the kernel (a lazy collection)."""
    if _is_lazy_collection(value):
        raise OutputError(
            f"{name!r} is a lazy Dask collection ({type(value).__name__}); call .compute() on it in the cell, "
            "or build it in a plain cell: the notebook's Dask client is the market's"
        )


def encode_value(name: str, value: Any) -> bytes:
    """Encode what the cell assigned to ``name``, on the provider."""
    check_returnable(name, value)
    buffer = io.BytesIO()
    try:
        _NotebookPickler(buffer, protocol=5).dump(value)
    except OutputError as error:
        raise OutputError(f"{name!r} cannot come back to the notebook: {error}.") from None
    except Exception as error:  # noqa: BLE001 (anything pickle raises: the message names the value)
        raise OutputError(
            f"{name!r} ({type(value).__name__}) cannot be sent back to the notebook: {error}. "
            "Keep such objects inside the cell, or leave the name out with --out."
        ) from None
    return buffer.getvalue()


def decode_value(data: bytes) -> Any:
    """Decode what a provider encoded, in the kernel: the restricted decoder only."""
    return restricted_loads(data)


def _is_lazy_collection(value: Any) -> bool:
    if "dask" not in sys.modules:
        return False
    from dask import is_dask_collection

    return is_dask_collection(value)
