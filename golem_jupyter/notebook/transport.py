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
as instances of the kernel's own class. CuPy arrays come back as NumPy arrays. NumPy's random
generators, polynomial series and masked arrays travel as plain data for the decoder's data-only
reconstructors (:mod:`golem_jupyter.trust._numpy_state`).

For the analysis (:mod:`.cellgraph`), :func:`notebook_modules` says what the notebook's modules and
library callables are, and :func:`notebook_functions` what each notebook function reads, writes and
touches of hidden state when called (from its source, else from its bytecode). In the kernel,
:func:`assign_in_place` puts a value the cell changed in place back into the notebook's own object.
"""

from __future__ import annotations

import ast
import collections
import copy
import dis
import functools
import inspect
import io
import itertools
import marshal
import pickle
import sys
import textwrap
import types
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import GolemError
from ..trust import notebook_class, restricted_loads
from ..trust._numpy_state import REDUCERS as NUMPY_REDUCERS
from .cellgraph import FunctionFacts, changed_argument, function_facts, hidden_state

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

    def __dask_tokenize__(self) -> tuple[str, int]:
        # Dask hashes a graph's arguments to name it; a notebook value needs no name of its own (every graph's
        # keys are new), and hashing it would read all of it (and fails for some masked arrays).
        return ("golem-shipped", next(_tokens))

    def __reduce__(self) -> tuple[Any, ...]:
        # NumPy pickles masked arrays without their hard mask, and a `nomask` as a full mask: send them as data.
        if type(self.value) in LOSSY_NUMPY_TYPES:
            rebuild, args = NUMPY_REDUCERS[type(self.value)](self.value)
            return _shipped, (rebuild, *args)
        return Shipped, (self.value,)


_tokens = itertools.count()


def _shipped(rebuild: Any, *args: Any) -> Shipped:
    return Shipped(rebuild(*args))


def _lossy_numpy_types() -> frozenset[type]:
    import numpy

    return frozenset({numpy.ma.MaskedArray, type(numpy.ma.masked)})


LOSSY_NUMPY_TYPES = _lossy_numpy_types()
"""Types whose NumPy pickles lose something (a masked array's hard mask, its ``nomask``)."""


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


def notebook_functions(namespace: dict[str, Any]) -> dict[str, FunctionFacts]:
    """For each function of the notebook namespace, what calling it touches: the global names its code reads,
    those it writes (``global g``) or changes in place, the hidden state it touches."""
    paths = tuple(sorted(notebook_modules(namespace).items()))
    found = {}
    for name, value in namespace.items():
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace:
            found[name] = _function_facts(value.__code__, paths)
    return found


def notebook_modules(namespace: Mapping[str, Any]) -> dict[str, str]:
    """The notebook's names that hold modules (-> the module's name) or library callables with an effect the
    analysis knows (hidden state, an argument changed in place: ``shuffle`` -> ``random.shuffle``)."""
    paths = {}
    for name, value in namespace.items():
        if isinstance(value, types.ModuleType):
            paths[name] = value.__name__
        elif callable(value) and not isinstance(value, type):
            path = _library_path(value)
            if path is not None and (hidden_state(path) is not None or changed_argument(path) is not None):
                paths[name] = path
    return paths


def _library_path(value: Any) -> str | None:
    """``random.shuffle`` for the global generator's bound method, ``numpy.seterr`` for a function of numpy."""
    owner = getattr(value, "__self__", None)
    name = getattr(value, "__name__", None)
    if type(name) is not str:
        return None
    random = sys.modules.get("random")
    if random is not None and owner is getattr(random, "_inst", None):
        return f"random.{name}"
    numpy = sys.modules.get("numpy")
    if numpy is not None and owner is numpy.random.mtrand._rand:
        return f"numpy.random.{name}"
    module = getattr(value, "__module__", None)
    if type(module) is not str or (isinstance(value, types.FunctionType) and module == "__main__"):
        return None
    return f"{module}.{name}"


@functools.lru_cache(maxsize=4096)
def _function_facts(code: types.CodeType, paths: tuple[tuple[str, str], ...]) -> FunctionFacts:
    """What calling a function with ``code`` touches: from its source when the kernel has it (the cells'
    sources are in linecache), else from its bytecode (what it reads and assigns, no in-place changes)."""
    modules = dict(paths)
    node = _source_node(code)
    if node is not None:
        facts = function_facts(node, modules)
        # The source is the function's own only if it names the same globals.
        if facts.reads <= code_globals(code) | {code.co_name}:
            return facts
    return FunctionFacts(
        reads=code_globals(code), writes=_stored_globals(code), hidden=frozenset(_bytecode_hidden(code, modules))
    )


def _source_node(code: types.CodeType) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    try:
        lines, _ = inspect.getsourcelines(code)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, ValueError, IndexError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == code.co_name:
            return node
        if isinstance(node, ast.Lambda) and code.co_name == "<lambda>":
            return node
    return None


@functools.lru_cache(maxsize=4096)
def _stored_globals(code: types.CodeType) -> frozenset[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL")}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _stored_globals(constant)
    return frozenset(names)


def _bytecode_hidden(code: types.CodeType, modules: Mapping[str, str]) -> set[str]:
    """The hidden state of the library callables the code reaches by ``global.attr.attr``."""
    found = set()
    chain: list[str] = []
    for instruction in [*dis.get_instructions(code), None]:
        if instruction is not None and instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
            chain.append(instruction.argval)
            continue
        if chain and chain[0] in modules:
            state = hidden_state(".".join([modules[chain[0]], *chain[1:]]))
            if state is not None:
                found.add(state)
        chain = [instruction.argval] if instruction is not None and instruction.opname == "LOAD_GLOBAL" else []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found |= _bytecode_hidden(constant, modules)
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
    """Pickles notebook classes by name, CuPy arrays as NumPy arrays, NumPy's generators, series and masked
    arrays as data for the decoder's reconstructors."""

    def reducer_override(self, obj: Any) -> Any:
        reduce = NUMPY_REDUCERS.get(type(obj))
        if reduce is not None:
            return reduce(obj)
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


# ---------------------------------------------------------------------------- changes in place, in the kernel


def assign_in_place(old: Any, new: Any) -> bool:
    """Give ``old`` the contents of ``new`` (same type), keeping ``old`` the same object; False where it cannot
    (another type or shape, a type it does not know): then the name is rebound to ``new`` instead."""
    kind = type(old)
    if kind is not type(new):
        return False
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(old, numpy.ndarray):
        return _assign_array(numpy, old, new)
    if isinstance(old, list | bytearray):
        old[:] = new
    elif isinstance(old, collections.deque):
        if old.maxlen != new.maxlen:
            return False
        old.clear()
        old.extend(new)
    elif isinstance(old, dict):
        if isinstance(old, collections.defaultdict):
            old.default_factory = new.default_factory
        old.clear()
        old.update(new)
    elif isinstance(old, set):
        old.clear()
        old.update(new)
    elif numpy is not None and isinstance(old, numpy.random.Generator | numpy.random.RandomState):
        return _assign_generator(numpy, old, new)
    elif hasattr(old, "__dict__") and (kind.__module__ == NOTEBOOK_MODULE or kind is types.SimpleNamespace):
        vars(old).clear()
        vars(old).update(vars(new))
    else:
        return False
    return True


def _assign_array(numpy: Any, old: Any, new: Any) -> bool:
    if old.shape != new.shape or old.dtype != new.dtype or not old.flags.writeable:
        return False
    if isinstance(old, numpy.ma.MaskedArray):
        if (old._mask is numpy.ma.nomask) != (new._mask is numpy.ma.nomask) or old._hardmask != new._hardmask:
            return False
        numpy.copyto(old.data, new.data)
        if new._mask is not numpy.ma.nomask:
            numpy.copyto(old._mask, new._mask)
        old._fill_value = new._fill_value
        return True
    numpy.copyto(old, new)
    return True


def _assign_generator(numpy: Any, old: Any, new: Any) -> bool:
    is_generator = isinstance(old, numpy.random.Generator)
    old_bits = old.bit_generator if is_generator else old._bit_generator
    new_bits = new.bit_generator if is_generator else new._bit_generator
    if type(old_bits) is not type(new_bits) or _seed_state(old_bits) != _seed_state(new_bits):
        return False  # spawn() changed the SeedSequence, which cannot be set in place
    if is_generator:
        old_bits.state = new_bits.state
    else:
        old.set_state(new.get_state(legacy=False))
    return True


def _seed_state(bits: Any) -> Any:
    seed = getattr(bits, "_seed_seq", None)
    if seed is None or not hasattr(seed, "n_children_spawned"):
        return None
    return (repr(seed.entropy), tuple(seed.spawn_key), seed.pool_size, seed.n_children_spawned)


def snapshot_contents(obj: Any) -> Any:
    """A copy of ``obj``'s contents that :func:`assign_in_place` can put back (rollback); None if it cannot."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return obj.copy()
    try:
        snapshot = copy.deepcopy(obj)
    except Exception:  # noqa: BLE001 (an object that cannot be copied cannot be put back)
        return None
    return snapshot if type(snapshot) is type(obj) else None


def _is_lazy_collection(value: Any) -> bool:
    if "dask" not in sys.modules:
        return False
    from dask import is_dask_collection

    return is_dask_collection(value)
