"""A notebook cell as a statement-level dataflow DAG, by static analysis of its source.

Each top-level statement of the cell is one node. For each statement the analysis finds the
global names it reads, binds, changes in place and deletes; edges then order every pair of
statements that touch a name in a way where order matters (read after write, write after write,
write after read). Everything here is pure :mod:`ast` work: nothing is imported or run.

The rules, and the choices made where Python leaves room:

* Scopes follow Python: function, lambda and comprehension locals are not globals (a walrus in a
  comprehension binds in the cell, and a comprehension's first iterable is read outside it); a
  class body reads the global of a name until it binds its own.
* A method call on a name changes the object (``xs.append(1)``, ``d.a.update(e)`` and
  ``xs[0].sort()`` all write ``xs``) unless the method is in :data:`PURE_METHODS` or the name is a
  module. Attribute and item assignment or deletion change the base name too, unless it is a
  module (module state is not data that a task could hand back). Names bound by any import of the
  cell, ``from m import f`` included, count as modules: imported objects are library code.
* ``x += 1`` rebinds ``x`` and, for an array or a list, changes its object in place: it counts as both.
* Reads are flow-sensitive within one statement: a name that the statement itself has surely
  bound before it reads it (a ``for`` target inside the loop body, a ``with ... as`` name inside
  the block) is not a read, because its value before the statement is not needed.
* Names that function and lambda bodies read are *deferred reads*: a statement that uses the
  function reads them too (its *effective reads*), transitively through other functions. A compute
  statement may call the lambdas it creates at once (``sorted(xs, key=lambda v: v[k])``), so for
  it they are reads as well as deferred reads (the latter for statements that call them later).
* A ``del name`` nested in a compound statement may not run: it writes the name but is not a
  deletion. ``except ... as e`` writes ``e``.
* Invisible to the analysis: aliasing (``ys = xs; ys.append(1)`` changes ``xs`` without writing
  it), in-place changes made by a function body (they are deferred reads of the global, and a
  function that declares ``global g`` only reads ``g`` as far as its callers are concerned), and
  functions carried inside values (an instance of a cell class, a ``functools.partial``).
* ``exec``, ``eval``, ``globals``, ``locals``, ``get_ipython`` (any use, even inside a function),
  ``vars()`` with no argument, star imports and top-level ``global``/``nonlocal`` make the cell one
  serial chain (see :attr:`CellGraph.serial_reason`). ``__import__`` does not: it binds no name.
  ``globals``, ``locals``, ``vars()``, ``get_ipython`` and top-level ``global``/``nonlocal`` are about
  the notebook's namespace itself: such a cell runs in the kernel (:attr:`CellGraph.serial_in_kernel`).
  The names an ``exec`` of a string literal binds are writes of its statement.
* Functions write too: a function (or lambda) that declares ``global g`` and assigns it, or changes a
  global in place, writes that global when called. A statement that uses the function (a name among
  its effective reads) writes what the function writes (:attr:`Statement.indirect_writes`), and so do
  notebook functions from earlier cells (``callables`` given as :class:`FunctionFacts`).
* Hidden state is state too: a call into a module with global state (``random.*``, the legacy
  ``numpy.random.*`` functions, ``numpy.seterr``, ``matplotlib.pyplot``, ...) reads and writes that
  state (:attr:`Statement.hidden`, a token per state); statements that touch the same state keep
  their order. Settings that every statement may read (``numpy.seterr``, ``os.chdir``, an assignment
  to a module's attribute, ...) are *barriers*: every statement before one runs before it, every
  statement after it after. Which name holds which module is known for the cell's own imports and
  from ``modules`` when it is a mapping (name -> dotted path of the module or library callable).
* Functions that change an argument in place (``numpy.copyto``, ``numpy.add.at``, ``heapq.heappush``,
  ``random.shuffle``, any call with ``out=name``, a ``.shuffle(x)`` method, and functions of the cell
  or the notebook whose body changes a parameter's object: ``def norm(a): a /= a.sum()``) write that
  argument (:attr:`Statement.calls`). Other libraries' functions that change their arguments are not
  known to the analysis.
* A statement that only makes views or aliases of names (``b = a``, ``sub = x[:2, ::2]``,
  ``t = x.T``, ``r = x.reshape(2, -1)``, ``top, bottom = np.vsplit(x, [2])``) records the names it
  views (:attr:`Statement.view_of`): memory sharing is part of the result, so the planner runs it in
  the kernel.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BARRIER_STATES",
    "PURE_METHODS",
    "CellGraph",
    "FanOut",
    "FunctionFacts",
    "Statement",
    "analyze",
    "changed_argument",
    "function_facts",
    "hidden_state",
]

PURE_METHODS: frozenset[str] = frozenset(
    {
        # containers (list, tuple, dict, set, frozenset)
        "copy", "get", "keys", "values", "items", "count", "index", "fromkeys",
        "union", "intersection", "difference", "symmetric_difference", "issubset", "issuperset", "isdisjoint",
        # str and bytes
        "format", "format_map", "join", "split", "rsplit", "splitlines", "strip", "lstrip", "rstrip",
        "lower", "upper", "title", "capitalize", "casefold", "swapcase", "center", "ljust", "rjust", "zfill",
        "expandtabs", "startswith", "endswith", "replace", "removeprefix", "removesuffix", "translate",
        "encode", "decode", "find", "rfind", "rindex", "isdigit", "isalpha", "isalnum", "isdecimal",
        "isnumeric", "isspace", "islower", "isupper", "istitle", "isascii", "isidentifier", "isprintable",
        # int, float, complex
        "hex", "bit_length", "bit_count", "as_integer_ratio", "is_integer", "conjugate", "to_bytes",
        # NumPy arrays and scalars
        "sum", "mean", "std", "var", "min", "max", "argmin", "argmax", "argsort", "any", "all", "astype",
        "reshape", "ravel", "flatten", "transpose", "swapaxes", "squeeze", "dot", "round", "tolist",
        "tobytes", "item", "nonzero", "cumsum", "cumprod", "prod", "conj", "searchsorted", "diagonal",
        "trace", "repeat",
        # datetime values
        "isoformat", "strftime", "timestamp", "weekday", "isoweekday", "isocalendar", "total_seconds",
    }
)  # fmt: skip
"""Methods that never change their object, for Python's builtins, the standard library's value
types and NumPy: a call of one of these on a name is a read of the name, not a write. Methods
that change the object in place (``sort``, ``fill``, ``resize``, ``put``, ``setfield``,
``itemset``, NumPy's ``partition``, ``append``, ``extend``, ``update``, ``pop``, ``add``,
``discard``, ``remove``, ``clear``, ``insert``, ``reverse``, ``setdefault``, ``popitem``, ...)
are deliberately absent, and so is every method this list does not name."""

# Loading one of these names means the code can reach any name of the notebook by string.
_SERIAL_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "exec": "`exec` can read and write any name, so the cell runs as one serial chain.",
        "eval": "`eval` can read and write any name, so the cell runs as one serial chain.",
        "globals": "`globals()` gives access to every name of the notebook, so the cell runs as one serial chain.",
        "locals": "`locals()` gives access to every name in scope, so the cell runs as one serial chain.",
        "get_ipython": "`get_ipython()` can read and change any name of the notebook, "
        "so the cell runs as one serial chain.",
    }
)
_VARS_REASON = "`vars()` without an argument gives access to every name in scope, so the cell runs as one serial chain."
_GLOBAL_REASON = "A top-level `global` statement is not analysed, so the cell runs as one serial chain."
_NONLOCAL_REASON = (
    "`nonlocal` at the top level is not valid Python; the cell runs as one serial chain so that Python reports it."
)
_ASYNC_MESSAGE = "`{}` at the top level of a %%golem cell is not supported: tasks run as plain functions on providers."
_OUTSIDE_FUNCTION_MESSAGE = "`{}` outside a function: a %%golem cell runs as module code, like a script."

_NO_CALLABLES: Mapping[str, frozenset[str]] = MappingProxyType({})

# Reasons that only the kernel can honour: the code looks at the notebook's namespace itself.
_KERNEL_REASONS = frozenset({*(_SERIAL_NAMES[n] for n in ("globals", "locals", "get_ipython")), _VARS_REASON,
                             _GLOBAL_REASON, _NONLOCAL_REASON})  # fmt: skip

# ---------------------------------------------------------------------------- hidden state

_RANDOM_OBJECTS = frozenset({"Random", "SystemRandom"})
"""``random`` names that make an independent generator: calling them touches no module state."""
_NUMPY_RANDOM_OBJECTS = frozenset(
    {"default_rng", "Generator", "RandomState", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM",
     "MT19937", "Philox", "SFC64"}
)  # fmt: skip
"""``numpy.random`` names that make an independent generator (every other function uses the legacy global one)."""
_BARRIER_CALLS: Mapping[str, str] = MappingProxyType(
    {
        "numpy.seterr": "numpy settings", "numpy.seterrcall": "numpy settings",
        "numpy.set_printoptions": "numpy settings", "numpy.setbufsize": "numpy settings",
        "os.chdir": "the process environment", "os.putenv": "the process environment",
        "os.unsetenv": "the process environment", "os.umask": "the process environment",
        "sys.setrecursionlimit": "the interpreter settings", "sys.set_int_max_str_digits": "the interpreter settings",
        "warnings.filterwarnings": "warning filters", "warnings.simplefilter": "warning filters",
        "warnings.resetwarnings": "warning filters", "decimal.setcontext": "the decimal context",
        "decimal.getcontext": "the decimal context", "locale.setlocale": "the locale",
    }
)  # fmt: skip
"""Calls that change settings every later statement may read: such statements are barriers."""
_BARRIER_OBJECTS: Mapping[str, str] = MappingProxyType(
    {"os.environ": "the process environment", "sys.path": "the interpreter settings",
     "sys.modules": "the interpreter settings"}
)  # fmt: skip
"""Module-level objects whose in-place changes (a non-pure method, an item assignment) are barriers."""
_ARGUMENT_CHANGERS: Mapping[str, int] = MappingProxyType(
    {
        "numpy.copyto": 0, "numpy.put": 0, "numpy.place": 0, "numpy.putmask": 0, "numpy.fill_diagonal": 0,
        "numpy.put_along_axis": 0, "numpy.random.shuffle": 0, "random.shuffle": 0, "heapq.heappush": 0,
        "heapq.heappop": 0, "heapq.heapify": 0, "heapq.heappushpop": 0, "heapq.heapreplace": 0,
        "bisect.insort": 0, "bisect.insort_left": 0, "bisect.insort_right": 0, "operator.setitem": 0,
        "operator.delitem": 0,
    }
)  # fmt: skip
"""Library functions that change an argument in place: path -> position of that argument."""


def hidden_state(path: str) -> str | None:
    """The hidden state a call of the library callable ``path`` (``numpy.random.seed``) touches, or None.

    Tokens name the state: ``"random"``, ``"numpy.random"``, ``"matplotlib.pyplot"``, or one of the
    barrier states of :data:`BARRIER_STATES`.
    """
    parts = path.split(".")
    if parts[0] == "random" and len(parts) == 2 and parts[1] not in _RANDOM_OBJECTS:
        return "random"
    if parts[:2] == ["numpy", "random"] and len(parts) == 3 and parts[2] not in _NUMPY_RANDOM_OBJECTS:
        return "numpy.random"
    if parts[:2] == ["matplotlib", "pyplot"] and len(parts) >= 3:
        return "matplotlib.pyplot"
    if path in _BARRIER_CALLS:
        return _BARRIER_CALLS[path]
    for prefix, state in _BARRIER_OBJECTS.items():
        if path.startswith(prefix + ".") and parts[-1] not in PURE_METHODS:
            return state
    return None


BARRIER_STATES: frozenset[str] = frozenset({*_BARRIER_CALLS.values(), *_BARRIER_OBJECTS.values()}) | {"module state"}
"""Hidden states that any statement may read (settings): a statement touching one is a barrier.
``"module state"`` is an assignment to (or an in-place change of) a module's attribute."""


def changed_argument(path: str) -> int | None:
    """The position of the argument that the library callable ``path`` changes in place, or None."""
    if path in _ARGUMENT_CHANGERS:
        return _ARGUMENT_CHANGERS[path]
    if path.startswith("numpy.") and path.endswith(".at") and path.count(".") == 2:
        return 0  # ufunc.at: numpy.add.at(a, indices, b) changes a
    return None


@dataclass(frozen=True)
class FunctionFacts:
    """What calling a notebook function touches, besides its arguments (see ``callables`` of :func:`analyze`)."""

    reads: frozenset[str] = frozenset()
    """Global names its body reads (and writes)."""
    writes: frozenset[str] = frozenset()
    """Globals it binds (``global g`` then ``g = ...``), deletes or changes in place."""
    mutates: frozenset[str] = frozenset()
    """Of ``writes``, those it changes in place."""
    hidden: frozenset[str] = frozenset()
    """Hidden states it touches."""
    params: tuple[str, ...] = ()
    """Its parameters (positional ones in order, then keyword-only)."""
    changed_params: frozenset[str] = frozenset()
    """The parameters whose arguments it changes in place."""


def _facts(value: frozenset[str] | FunctionFacts) -> FunctionFacts:
    return value if isinstance(value, FunctionFacts) else FunctionFacts(reads=frozenset(value))


# ---------------------------------------------------------------------------- the public records


@dataclass(frozen=True)
class FanOut:
    """A top-level list comprehension assignment, or the equivalent for loop, split into one task per element.

    ``name = [element for target in iterable if condition]`` (form ``"comprehension"``),
    ``for target in iterable: name.append(element)`` (form ``"append"``) or
    ``for target in iterable: name[index] = element`` (form ``"setitem"``).
    """

    form: Literal["comprehension", "append", "setitem"]
    name: str
    """The container being built."""
    target: ast.expr
    """The loop target: an ``ast.Name``, or an ``ast.Tuple``/``ast.List`` of them (nested), Store context."""
    iterable: ast.expr
    element: ast.expr
    """The value computed per element: the comprehension's element, the append argument or the assigned value."""
    index: ast.expr | None
    """The subscript of the setitem form; None for the others."""
    conditions: tuple[ast.expr, ...]
    """The comprehension's ``if`` clauses (empty for the loop forms)."""
    iterable_reads: frozenset[str]
    """Global names the iterable reads."""
    element_reads: frozenset[str]
    """Global names the element, index and conditions read (loop-target names excluded), including names read by
    lambdas in them."""
    target_names: frozenset[str]
    """Names the target binds."""


@dataclass(frozen=True)
class Statement:
    """One top-level statement of the cell and the global names it touches."""

    index: int
    """0-based position among the cell's top-level statements."""
    node: ast.stmt
    """The statement, with the cell's line numbers (compile it alone for a task)."""
    kind: Literal["definition", "compute"]
    """``definition``: import (not star), def, class, or ``name = lambda ...``; everything else is ``compute``."""
    reads: frozenset[str]
    """Global names whose values it needs when it runs (for a definition: when the definition runs, e.g.
    decorators and defaults; for a compute statement also what the lambdas and functions it creates read,
    as it may call them at once)."""
    writes: frozenset[str]
    """Global names it binds, changes in place or deletes."""
    mutates: frozenset[str]
    """The names of ``writes`` that it changes in place (method call, attribute or item assignment or deletion)."""
    deletes: frozenset[str]
    """Names a top-level ``del name`` statement unbinds (also in ``writes``)."""
    deferred_reads: frozenset[str]
    """Global names that the bodies of the functions and lambdas it creates read when called (for a definition
    these are not in ``reads``). Statements that use a name it binds or changes read these too."""
    fanout: FanOut | None
    indirect_writes: frozenset[str] = frozenset()
    """Of ``writes``, the globals that the functions it uses bind, delete or change when called (``global g``
    and ``g = ...``, or an in-place change of a global in the body); of ``mutates``, those changed in place."""
    hidden: frozenset[str] = frozenset()
    """Hidden states (:func:`hidden_state`) it touches: by its own calls and through the functions it uses."""
    deferred_writes: frozenset[str] = frozenset()
    """Globals that the functions and lambdas it creates bind, delete or change in place when called."""
    deferred_mutates: frozenset[str] = frozenset()
    """Of ``deferred_writes``, those changed in place."""
    deferred_hidden: frozenset[str] = frozenset()
    """Hidden states that the functions and lambdas it creates touch when called."""
    view_of: frozenset[str] | None = None
    """For a statement that only makes views or aliases (``b = a``, ``sub = x[:2]``, ``t = x.T``,
    ``a, b = np.vsplit(x, [2])``): the names whose objects it views; None for any other statement."""
    star_import: bool = False
    """``from m import *``: it binds names that are only known when it runs."""
    calls: tuple[tuple[str, tuple[str | None, ...], tuple[tuple[str, str | None], ...]], ...] = ()
    """Calls of a global name, with the global names of the objects passed (``""``: one it cannot name):
    a function that changes an argument in place changes that object."""
    changed_params: tuple[tuple[str, ...], frozenset[str]] | None = None
    """For a definition of a function (``def``, ``name = lambda``): its parameters and those it changes."""


@dataclass(frozen=True)
class CellGraph:
    """The statements of a cell and the order they must keep."""

    source: str
    statements: tuple[Statement, ...]
    edges: frozenset[tuple[int, int]]
    """``(i, j)`` with ``i < j``: statement ``j`` must run after statement ``i``."""
    serial_reason: str | None
    """None, or why the cell runs as one serial chain (then ``edges`` is that chain and nothing fans out)."""
    inputs: frozenset[str]
    """Names the cell reads from the notebook: read (directly or through a function's deferred reads) at a point
    where no earlier statement of the cell wrote them. Builtins are among them."""
    outputs: frozenset[str]
    """Names the cell binds or changes whose last operation is not a top-level ``del``."""
    deleted: frozenset[str]
    """Names whose last operation in the cell is a top-level ``del``."""
    serial_in_kernel: bool = False
    """The serial reason is about the notebook's own namespace (``globals()``, ``locals()``, ``vars()``,
    ``get_ipython()``, a top-level ``global``): only the kernel can run such a cell exactly."""
    _effective: tuple[frozenset[str], ...] = field(default=(), repr=False, compare=False)
    _callables: Mapping[str, frozenset[str] | FunctionFacts] | None = field(default=None, repr=False, compare=False)

    def effective_reads(self, index: int) -> frozenset[str]:
        """The reads of statement ``index`` plus the deferred reads of the functions it uses, transitively."""
        if len(self._effective) == len(self.statements):
            return self._effective[index]
        return _effective_reads(self.statements, index, _NO_CALLABLES)

    def expand_reads(self, names: Iterable[str], index: int) -> frozenset[str]:
        """``names`` (read at statement ``index``) plus what the functions among them read, transitively."""
        callables = self._callables if self._callables is not None else _NO_CALLABLES
        return _expand(self.statements, set(names), index, callables)

    @property
    def barriers(self) -> frozenset[int]:
        """The statements that touch a barrier state (see :data:`BARRIER_STATES`)."""
        return frozenset(s.index for s in self.statements if s.hidden & BARRIER_STATES)

    def predecessors(self, index: int) -> frozenset[int]:
        """The statements that statement ``index`` must run after (direct edges only)."""
        return frozenset(i for i, j in self.edges if j == index)

    def last_writer(self, name: str, before: int) -> int | None:
        """The index of the last statement before ``before`` that writes ``name``, or None."""
        return _last_writer(self.statements, name, before)


# ---------------------------------------------------------------------------- the analysis


def analyze(
    source: str,
    *,
    first_line: int = 1,
    filename: str = "<cell>",
    modules: Iterable[str] | Mapping[str, str] = frozenset(),
    callables: Mapping[str, frozenset[str] | FunctionFacts] = _NO_CALLABLES,
) -> CellGraph:
    """The dataflow DAG of a cell's ``source``.

    ``first_line`` is the line of the notebook cell's file that line 1 of ``source`` is (the nodes, and
    the ``SyntaxError`` for invalid source, carry shifted line numbers; ``filename`` names the source in
    both). ``modules`` are names known to hold modules in the notebook: method calls on them are not writes,
    and neither are calls on names the cell binds by an import. As a mapping it also says what each name
    holds (``{"np": "numpy", "shuffle": "random.shuffle"}``: a module or a library callable), which is how
    calls into hidden state are recognised. ``callables`` gives, for functions already in the notebook, the
    global names their bodies read (a statement that reads such a name reads those too), or their
    :class:`FunctionFacts` (then it also writes what they write and touches their hidden state).

    Raises ``SyntaxError`` for invalid source, and for ``return``, ``yield``, ``await``, ``async for``,
    ``async with`` and asynchronous comprehensions outside any function.
    """
    text = _CellText(source, first_line, filename)
    tree = _parse(source, first_line, filename)
    known_modules = set(modules)
    paths = dict(modules) if isinstance(modules, Mapping) else {}
    statements: list[Statement] = []
    reasons: list[str] = []
    for index, node in enumerate(tree.body):
        statement, known_modules, paths, reason = _statement(index, node, known_modules, paths, text)
        statements.append(statement)
        if reason is not None:
            reasons.append(reason)
    serial_reason = reasons[0] if reasons else None
    if serial_reason is not None:
        statements = [replace(s, fanout=None) for s in statements]
    effective = tuple(_effective_reads(statements, j, callables) for j in range(len(statements)))
    statements = [_with_indirect(statements, j, effective[j], callables) for j in range(len(statements))]
    # Elements that call functions writing globals, or touching hidden state, are not independent.
    statements = [replace(s, fanout=None) if s.indirect_writes or s.hidden else s for s in statements]
    if serial_reason is None:
        edges = _dataflow_edges(statements, effective)
    else:
        edges = {(j - 1, j) for j in range(1, len(statements))}
    outputs, deleted = _outputs(statements)
    return CellGraph(
        source=source,
        statements=tuple(statements),
        edges=frozenset(edges),
        serial_reason=serial_reason,
        inputs=_inputs(statements, effective),
        outputs=outputs,
        deleted=deleted,
        serial_in_kernel=any(reason in _KERNEL_REASONS for reason in reasons),
        _effective=effective,
        _callables=callables,
    )


def function_facts(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, modules: Mapping[str, str]
) -> FunctionFacts:
    """What calling the function that ``node`` defines touches (its globals), for :func:`analyze`'s ``callables``.

    ``modules`` maps the names of the function's globals that hold modules or library callables to their
    dotted paths. The function's own name counts among what it reads (recursion).
    """
    walker = _Walker(_CellText("", 1, "<function>"), set(modules), paths=modules)
    walker.visit(node)
    reads = walker.deferred | walker.deferred_writes
    params, changed = walker.changed_params or ((), frozenset())
    return FunctionFacts(
        reads=frozenset(reads),
        writes=frozenset(walker.deferred_writes),
        mutates=frozenset(walker.deferred_mutates),
        hidden=frozenset(walker.deferred_hidden),
        params=params,
        changed_params=changed,
    )


def _statement(
    index: int, node: ast.stmt, modules: set[str], paths: dict[str, str], text: _CellText
) -> tuple[Statement, set[str], dict[str, str], str | None]:
    """One statement's record, the module names (and paths) known after it, and its first serial reason (if any)."""
    walker = _Walker(text, modules, paths=paths)
    walker.visit(node)
    kind = _kind(node)
    reads = walker.reads if kind == "definition" else walker.reads | walker.deferred_unbound
    writes, mutates, hidden = set(walker.writes), set(walker.mutates), set(walker.hidden)
    indirect = set()
    if kind == "compute":  # it may call the functions and lambdas it creates at once
        indirect = walker.deferred_writes - walker.writes
        writes |= walker.deferred_writes
        mutates |= walker.deferred_mutates - walker.writes
        hidden |= walker.deferred_hidden
    # A `del` nested in a compound statement may not run: the name is written, not surely deleted.
    deletes = walker.deleted if isinstance(node, ast.Delete) else set()
    star = isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
    statement = Statement(
        index=index,
        node=node,
        kind=kind,
        reads=frozenset(reads),
        writes=frozenset(writes),
        mutates=frozenset(mutates),
        deletes=frozenset(deletes),
        deferred_reads=frozenset(walker.deferred),
        fanout=_fanout(node, frozenset(modules), text),
        indirect_writes=frozenset(indirect),
        hidden=frozenset(hidden),
        deferred_writes=frozenset(walker.deferred_writes),
        deferred_mutates=frozenset(walker.deferred_mutates),
        deferred_hidden=frozenset(walker.deferred_hidden),
        view_of=_view_of(node, frozenset(modules)),
        star_import=star,
        calls=tuple(walker.calls),
        changed_params=walker.changed_params if kind == "definition" else None,
    )
    reason = walker.serial_reasons[0] if walker.serial_reasons else None
    return statement, walker.modules, walker.paths, reason


def _kind(node: ast.stmt) -> Literal["definition", "compute"]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import):
        return "definition"
    if isinstance(node, ast.ImportFrom) and all(alias.name != "*" for alias in node.names):
        return "definition"
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
        return "definition" if all(isinstance(t, ast.Name) for t in node.targets) else "compute"
    if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Lambda) and isinstance(node.target, ast.Name):
        return "definition"
    return "compute"


def _last_writer(statements: Sequence[Statement], name: str, before: int) -> int | None:
    for k in range(min(before, len(statements)) - 1, -1, -1):
        if name in statements[k].writes:
            return k
    return None


def _deferred_of(
    statements: Sequence[Statement], name: str, at: int, callables: Mapping[str, frozenset[str] | FunctionFacts]
) -> tuple[set[str], set[str], set[str], set[str]]:
    """What calling the value of ``name`` at statement ``at`` may read, write, change in place and touch of hidden
    state: the deferred sets of the statement that last bound it, and of the statements that changed it in place
    since (they may have stored functions in it); ``callables`` for a value from the notebook."""
    reads: set[str] = set()
    writes: set[str] = set()
    mutates: set[str] = set()
    hidden: set[str] = set()
    for k in range(at - 1, -1, -1):
        writer = statements[k]
        if name not in writer.writes:
            continue
        if name not in writer.indirect_writes:  # bound by a function's body: data, as far as anyone knows
            reads |= writer.deferred_reads
            writes |= writer.deferred_writes
            mutates |= writer.deferred_mutates
            hidden |= writer.deferred_hidden
        if name not in writer.mutates:
            return reads, writes, mutates, hidden
    if name in callables:
        facts = _facts(callables[name])
        reads |= facts.reads
        writes |= facts.writes
        mutates |= facts.mutates
        hidden |= facts.hidden
    return reads, writes, mutates, hidden


def _expand(
    statements: Sequence[Statement],
    names: set[str],
    index: int,
    callables: Mapping[str, frozenset[str] | FunctionFacts],
) -> frozenset[str]:
    """``names`` plus, transitively, what the functions held by those names read when called."""
    result = set(names)
    pending = list(result)
    expanded: set[str] = set()  # each name once: recursive functions would loop forever otherwise
    while pending:
        name = pending.pop()
        if name in expanded:
            continue
        expanded.add(name)
        for extra in _deferred_of(statements, name, index, callables)[0]:
            result.add(extra)
            pending.append(extra)
    return frozenset(result)


def _effective_reads(
    statements: Sequence[Statement], index: int, callables: Mapping[str, frozenset[str] | FunctionFacts]
) -> frozenset[str]:
    """``reads`` plus, transitively, what the functions read through those names read when called."""
    return _expand(statements, set(statements[index].reads), index, callables)


def _changed_params(
    statements: Sequence[Statement], name: str, at: int, callables: Mapping[str, frozenset[str] | FunctionFacts]
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The parameters of the function ``name`` holds at statement ``at``, and those whose arguments it changes."""
    for k in range(at - 1, -1, -1):
        writer = statements[k]
        if name in writer.writes and name not in writer.mutates:
            return writer.changed_params or ((), frozenset())
    if name in callables:
        facts = _facts(callables[name])
        return facts.params, facts.changed_params
    return (), frozenset()


def _with_indirect(
    statements: Sequence[Statement],
    index: int,
    effective: frozenset[str],
    callables: Mapping[str, frozenset[str] | FunctionFacts],
) -> Statement:
    """The statement with what the functions it uses write and touch when called (see ``Statement.indirect_writes``)."""
    statement = statements[index]
    writes: set[str] = set()
    mutates: set[str] = set()
    hidden: set[str] = set()
    for name in effective:
        _, w, m, h = _deferred_of(statements, name, index, callables)
        writes |= w
        mutates |= m
        hidden |= h
    unnamed = False
    for function, positional, keywords in statement.calls:
        params, changed = _changed_params(statements, function, index, callables)
        if not changed:
            continue
        passed = [(params[i] if i < len(params) else None, n) for i, n in enumerate(positional)]
        for param, name in [*passed, *keywords]:
            if name is None:  # *args: it may reach any parameter
                unnamed = True
            elif param in changed:
                if name:
                    writes.add(name)
                    mutates.add(name)
                else:
                    unnamed = True
    if unnamed and statement.fanout is not None:
        statement = replace(statement, fanout=None)  # the elements it changes are the iterable's
    if not (writes or hidden):
        return statement
    new_writes = writes - statement.writes
    return replace(
        statement,
        writes=statement.writes | writes,
        mutates=statement.mutates | (mutates - statement.writes),
        indirect_writes=statement.indirect_writes | new_writes,
        hidden=statement.hidden | hidden,
    )


def _dataflow_edges(statements: Sequence[Statement], effective: Sequence[frozenset[str]]) -> set[tuple[int, int]]:
    """Read-after-write, write-after-write and write-after-read edges; hidden states order the statements that
    touch them, and a barrier comes after every statement before it and before every statement after it."""
    edges: set[tuple[int, int]] = set()
    last_touch: dict[str, int] = {}
    barrier: int | None = None
    for j, statement in enumerate(statements):
        if barrier is not None:
            edges.add((barrier, j))
        for state in statement.hidden:
            if state in last_touch:
                edges.add((last_touch[state], j))
            last_touch[state] = j
        if statement.hidden & BARRIER_STATES:
            edges.update((k, j) for k in range(j))
            barrier = j
    for j, statement in enumerate(statements):
        for name in effective[j]:
            writer = _last_writer(statements, name, j)
            if writer is not None:
                edges.add((writer, j))
        for name in statement.writes:
            writer = _last_writer(statements, name, j)
            if writer is not None:
                edges.add((writer, j))
            start = 0 if writer is None else writer + 1
            edges.update((k, j) for k in range(start, j) if name in effective[k])
    return edges


def _inputs(statements: Sequence[Statement], effective: Sequence[frozenset[str]]) -> frozenset[str]:
    return frozenset(
        name for j in range(len(statements)) for name in effective[j] if _last_writer(statements, name, j) is None
    )


def _outputs(statements: Sequence[Statement]) -> tuple[frozenset[str], frozenset[str]]:
    """(outputs, deleted): split the written names by whether their last writer deletes them."""
    last: dict[str, Statement] = {}
    for statement in statements:
        for name in statement.writes:
            last[name] = statement
    deleted = frozenset(name for name, statement in last.items() if name in statement.deletes)
    return frozenset(last) - deleted, deleted


# ---------------------------------------------------------------------------- source and errors


@dataclass(frozen=True)
class _CellText:
    """The cell's lines, for the ``SyntaxError`` of constructs Python parses but a cell cannot run."""

    source: str
    first_line: int
    filename: str

    def error(self, message: str, node: ast.stmt | ast.expr) -> SyntaxError:
        lines = self.source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        text = _line(lines, node.lineno - self.first_line)
        end_lineno = node.end_lineno or node.lineno
        offset = _column(text, node.col_offset) + 1
        end_offset = None
        if node.end_col_offset is not None:
            end_offset = _column(_line(lines, end_lineno - self.first_line), node.end_col_offset) + 1
        return SyntaxError(message, (self.filename, node.lineno, offset, text, end_lineno, end_offset))


def _line(lines: Sequence[str], index: int) -> str | None:
    return lines[index] if 0 <= index < len(lines) else None


def _column(text: str | None, byte_offset: int) -> int:
    """ast columns count UTF-8 bytes; SyntaxError offsets count characters."""
    if text is None:
        return byte_offset
    return len(text.encode()[:byte_offset].decode(errors="ignore"))


def _parse(source: str, first_line: int, filename: str) -> ast.Module:
    """Parse, with every line number (of the nodes, or of the error) shifted to the cell's place."""
    shift = first_line - 1
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as error:
        if error.lineno is not None:
            error.lineno += shift
        if error.end_lineno is not None:
            error.end_lineno += shift
        # args is what pickling and repr use: keep it in step with the attributes.
        error.args = (
            error.msg,
            (error.filename, error.lineno, error.offset, error.text, error.end_lineno, error.end_offset),
        )
        raise
    if shift:
        ast.increment_lineno(tree, shift)
    return tree


# ---------------------------------------------------------------------------- scopes


@dataclass
class _Scope:
    """A scope nested in the cell's global scope."""

    kind: Literal["function", "class", "comprehension"]
    names: set[str]
    """Local names. Function and comprehension scopes know them in advance (Python decides at compile time);
    a class body's grow as it runs, because until a class body binds a name it reads the global."""
    declared_global: frozenset[str] = frozenset()
    params: tuple[str, ...] = ()
    """A function's parameters that a caller may pass by position, in order, then its keyword-only ones."""
    changed: set[str] = field(default_factory=set)
    """Parameters whose objects the function changes in place (``a.append(1)``, ``a[0] = 1``, ``a += 1``)."""


class _Binder(ast.NodeVisitor):
    """The names a function (or class) body binds in its own scope, and its global/nonlocal declarations.

    Nested function, lambda and class bodies are not entered (their names are theirs), except what is
    evaluated in this scope: decorators, defaults, annotations, base classes, a comprehension's first iterable,
    and walrus targets inside comprehensions (which bind here).
    """

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()

    @classmethod
    def of(cls, nodes: Iterable[ast.AST]) -> _Binder:
        binder = cls()
        for node in nodes:
            binder.visit(node)
        return binder

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.names.add(node.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.names.add(node.target.id)
        self.visit(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.names.add(node.name)
        for expr in _evaluated_at_definition(node):
            self.visit(expr)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.names.add(node.name)
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in _defaults(node.args):
            self.visit(expr)

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        self.visit(node.generators[0].iter)
        for sub in _walk_outside_lambdas(node):
            if isinstance(sub, ast.NamedExpr):
                self.names.add(sub.target.id)

    visit_SetComp = visit_GeneratorExp = visit_DictComp = visit_ListComp  # noqa: N815 (NodeVisitor names)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.names.update(_imported_name(alias) for alias in node.names if alias.name != "*")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.visit_Import(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.names.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.names.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.names.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.names.add(node.rest)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.globals.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.nonlocals.update(node.names)


def _walk_outside_lambdas(node: ast.AST) -> Iterable[ast.AST]:
    """``ast.walk`` that does not enter lambda bodies (their walrus targets bind in the lambda)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if not isinstance(current, ast.Lambda):
            stack.extend(ast.iter_child_nodes(current))


def _defaults(arguments: ast.arguments) -> list[ast.expr]:
    return [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]


def _params(arguments: ast.arguments) -> tuple[str, ...]:
    return tuple(a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs])


def _parameters(arguments: ast.arguments) -> list[ast.arg]:
    params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    return params + [a for a in (arguments.vararg, arguments.kwarg) if a is not None]


def _evaluated_at_definition(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.expr]:
    """Decorators, defaults and annotations: evaluated when the ``def`` runs, not when the function is called."""
    annotations = [a.annotation for a in _parameters(node.args) if a.annotation is not None]
    returns = [node.returns] if node.returns is not None else []
    return [*node.decorator_list, *_defaults(node.args), *annotations, *returns]


def _imported_path(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str | None:
    """What an import binds, as a dotted path: ``import a.b`` binds ``a``; ``from a import b`` binds ``a.b``."""
    if isinstance(node, ast.Import):
        return alias.name if alias.asname else alias.name.partition(".")[0]
    return f"{node.module}.{alias.name}" if node.level == 0 and node.module else None


def _imported_name(alias: ast.alias) -> str:
    """The name an import binds: ``import a.b`` binds ``a``; ``import a.b as c`` binds ``c``."""
    return alias.asname or alias.name.partition(".")[0]


def _base_name(expr: ast.expr) -> str | None:
    """``x`` for ``x``, ``x.a.b``, ``x[0].a``; None when the chain starts elsewhere (a call, a literal)."""
    while isinstance(expr, ast.Attribute | ast.Subscript):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _target_names(target: ast.expr) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))


# ---------------------------------------------------------------------------- one statement


class _Walker(ast.NodeVisitor):
    """Walks one top-level statement and collects the global names it touches.

    ``bound`` holds the global names the statement has surely bound so far; loading one of those is not
    a read. It is only kept exact at the top level: after a branch it is the intersection of the branches,
    after a loop or a ``with``/``try``/``match`` what was bound before the bodies.
    """

    def __init__(
        self,
        text: _CellText,
        modules: Iterable[str],
        bound: Iterable[str] = (),
        paths: Mapping[str, str] | None = None,
    ) -> None:
        self.text = text
        self.modules = set(modules)
        self.paths = dict(paths or {})  # name -> dotted path of the module or library callable it holds
        self.imported: set[str] = set()  # module names this statement binds by import (a try/except fallback
        # such as `except ImportError: np = None` does not undo that)
        self.bound = set(bound)
        self.scopes: list[_Scope] = []
        self.conditional = 0  # > 0 inside code that may not run (a short-circuit operand, a comprehension)
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.mutates: set[str] = set()
        self.deleted: set[str] = set()
        self.deferred: set[str] = set()
        self.deferred_unbound: set[str] = set()  # deferred reads not bound by this statement before the function
        self.deferred_writes: set[str] = set()  # globals that the functions it creates bind or change when called
        self.deferred_mutates: set[str] = set()
        self.hidden: set[str] = set()
        self.deferred_hidden: set[str] = set()
        self.calls: list[tuple[str, tuple[str | None, ...], tuple[tuple[str, str | None], ...]]] = []
        self.changed_params: tuple[tuple[str, ...], frozenset[str]] | None = None
        self.serial_reasons: list[str] = []

    # -- scopes and names

    def _in_function(self) -> bool:
        return any(scope.kind == "function" for scope in self.scopes)

    def _is_global(self, name: str) -> bool:
        for depth, scope in enumerate(reversed(self.scopes)):
            if scope.kind == "class" and depth > 0:
                continue  # a class body's names are not visible from the functions and comprehensions inside it
            if name in scope.declared_global:
                return True
            if name in scope.names:
                return False
        return True

    def _load(self, name: str) -> None:
        if not self._is_global(name):
            return
        if name in _SERIAL_NAMES:
            self._serial(_SERIAL_NAMES[name])
        if self._in_function():
            self._defer(name)
        elif name not in self.bound:
            self.reads.add(name)

    def _defer(self, name: str) -> None:
        self.deferred.add(name)
        if name not in self.bound:
            self.deferred_unbound.add(name)

    def _store(self, name: str, *, definite: bool = True) -> None:
        scope = self.scopes[-1] if self.scopes else None
        if scope is None or (name in scope.declared_global and not self._in_function()):
            self._bind_global(name, definite=definite)
        elif name in scope.declared_global:
            self._defer(name)  # a function that declares `global name` writes it when called
            self.deferred_writes.add(name)
        elif scope.kind == "class":
            scope.names.add(name)

    def _bind_global(self, name: str, *, definite: bool) -> None:
        self.writes.add(name)
        if definite:
            self.bound.add(name)
        if name not in self.imported:
            self.modules.discard(name)
            self.paths.pop(name, None)

    def _delete(self, name: str) -> None:
        scope = self.scopes[-1] if self.scopes else None
        if scope is None or (name in scope.declared_global and not self._in_function()):
            self.writes.add(name)
            self.deleted.add(name)
            self.bound.discard(name)
            self.modules.discard(name)
            self.paths.pop(name, None)
            self.imported.discard(name)
        elif name in scope.declared_global:
            self._defer(name)
            self.deferred_writes.add(name)
        elif scope.kind == "class":
            scope.names.discard(name)

    def _mutate(self, expr: ast.expr, *, by_call: bool = False) -> None:
        """The object the chain ``expr`` starts from is changed in place.

        A change of a module's attribute (``np.x = 1``, ``os.environ[k] = v``) is a change of hidden state; a
        method called on a module (``by_call``) is a library function, whose hidden state :meth:`visit_Call`
        knows from the callable's path."""
        name = _base_name(expr)
        if name is None:
            return
        if not self._is_global(name):
            self._change_local(name)
            return
        if name in self.modules:
            if not by_call:
                path = self._path(expr)
                state = next((s for p, s in _BARRIER_OBJECTS.items() if path and f"{path}.".startswith(p + ".")), None)
                self._hidden(state or "module state")
            return
        if self._in_function():
            # It changes when the function is called: a (deferred) read, recorded by the load, and a deferred write.
            self.deferred_writes.add(name)
            self.deferred_mutates.add(name)
            return
        self.writes.add(name)
        self.mutates.add(name)

    def _change_local(self, name: str) -> None:
        """A local name's object is changed in place: if it is a parameter, the function changes its argument."""
        for scope in reversed(self.scopes):
            if name in scope.names:
                if scope.kind == "function" and name in scope.params:
                    scope.changed.add(name)
                return

    def _mutate_value(self, expr: ast.expr) -> None:
        """An argument that the call changes in place: a name (or an item or attribute of one), or a tuple of them."""
        if isinstance(expr, ast.Tuple | ast.List):
            for element in expr.elts:
                self._mutate_value(element)
        elif isinstance(expr, ast.Name | ast.Attribute | ast.Subscript):
            self._mutate(expr)

    def _hidden(self, state: str) -> None:
        (self.deferred_hidden if self._in_function() else self.hidden).add(state)

    def _path(self, expr: ast.expr) -> str | None:
        """The dotted path of the library object ``expr`` names (``np.random.seed`` -> ``numpy.random.seed``)."""
        attributes = []
        while isinstance(expr, ast.Attribute):
            attributes.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name) or expr.id not in self.paths or not self._is_global(expr.id):
            return None
        return ".".join([self.paths[expr.id], *reversed(attributes)])

    def _serial(self, reason: str) -> None:
        self.serial_reasons.append(reason)

    def visit_all(self, body: Iterable[ast.AST]) -> None:
        for node in body:
            self.visit(node)

    def _scoped(self, scope: _Scope, body: Iterable[ast.AST]) -> None:
        self.scopes.append(scope)
        try:
            self.visit_all(body)
        finally:
            self.scopes.pop()

    # -- names, attributes, calls

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:
            self._delete(node.id)

    def visit_Attribute(self, node: ast.Attribute | ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._mutate(node.value)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit_Attribute(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        path = self._path(func)
        if path is not None:  # a library callable: its hidden state, and the arguments it changes
            state = hidden_state(path)
            if state is not None:
                self._hidden(state)
            position = changed_argument(path)
            if position is not None and len(node.args) > position:
                self._mutate_value(node.args[position])
        elif isinstance(func, ast.Attribute) and func.attr not in PURE_METHODS:
            self._mutate(func.value, by_call=True)
            if func.attr == "shuffle" and node.args:  # rng.shuffle(x) changes x
                self._mutate_value(node.args[0])
        elif isinstance(func, ast.Name) and func.id == "vars" and not node.args and not node.keywords:
            if self._is_global("vars"):
                self._serial(_VARS_REASON)
        for keyword in node.keywords:
            if keyword.arg == "out":  # np.add(a, b, out=c) changes c
                self._mutate_value(keyword.value)
        if isinstance(func, ast.Name) and self._is_global(func.id) and not self._in_function():
            # A function of the cell or the notebook may change the arguments it gets (see Statement.calls).
            positional = tuple(self._argument_name(a) for a in node.args)
            keywords = tuple((k.arg, self._argument_name(k.value)) for k in node.keywords if k.arg is not None)
            self.calls.append((func.id, positional, keywords))
        if isinstance(func, ast.Name) and func.id in ("exec", "eval") and self._is_global(func.id) and not self.scopes:
            self._literal_code(func.id, node)
        self.generic_visit(node)

    def _argument_name(self, expr: ast.expr) -> str | None:
        """The global name an argument's object belongs to (``x``, ``x.a``, ``x[0]``); ``""`` for an object the
        analysis cannot name (a comprehension's variable, a call's result); None for a starred argument."""
        if isinstance(expr, ast.Starred):
            return None
        name = _base_name(expr)
        return name if name is not None and self._is_global(name) else ""

    def _literal_code(self, mode: str, node: ast.Call) -> None:
        """``exec('made = 41')``: what a string literal run as notebook code touches is the statement's."""
        if not node.args or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
            return
        if len(node.args) > 1 or node.keywords:
            return  # its own namespaces
        try:
            tree = ast.parse(node.args[0].value, mode=mode)
            inner = _Walker(self.text, self.modules, self.bound, self.paths)
            inner.visit(tree)
        except (SyntaxError, ValueError):
            return  # Python reports it when the statement runs
        self.reads |= inner.reads - self.bound
        self.writes |= inner.writes
        self.mutates |= inner.mutates
        self.hidden |= inner.hidden | inner.deferred_hidden
        self.deferred |= inner.deferred
        self.deferred_unbound |= inner.deferred_unbound
        self.deferred_writes |= inner.deferred_writes
        self.deferred_mutates |= inner.deferred_mutates

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        name = node.target.id
        # A walrus binds in the nearest scope that is not a comprehension.
        owner = next((s for s in reversed(self.scopes) if s.kind != "comprehension"), None)
        if owner is None or (name in owner.declared_global and not self._in_function()):
            self._bind_global(name, definite=self.conditional == 0)
        elif name in owner.declared_global:
            self._defer(name)
        elif owner.kind == "class":
            owner.names.add(name)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.visit(node.values[0])
        self.conditional += 1
        self.visit_all(node.values[1:])
        self.conditional -= 1

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        self.conditional += 1
        self.visit_all([node.body, node.orelse])
        self.conditional -= 1

    # -- simple statements

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)  # the value is evaluated before any target is bound
        self.visit_all(node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
            self.visit(node.value)
            self._store(node.target.id)
            if node.target.id not in self.modules:
                self._mutate(node.target)  # `x += 1` changes an array or a list in place: a copy must not
        else:
            self.visit(node.value)
            self.visit(node.target)  # Store context: reads the base and changes it in place

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        if not self._in_function():  # annotations of module and class variables are evaluated
            self.visit(node.annotation)
        target = node.target
        if node.value is not None:
            self.visit(target)
        elif isinstance(target, ast.Attribute | ast.Subscript):
            # `x.a: int` evaluates `x` (and a subscript) but assigns nothing
            self.visit(target.value)
            if isinstance(target, ast.Subscript):
                self.visit(target.slice)

    def visit_Assert(self, node: ast.Assert) -> None:
        self.visit(node.test)
        if node.msg is not None:
            self.conditional += 1
            self.visit(node.msg)
            self.conditional -= 1

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                continue  # see visit_ImportFrom
            name = _imported_name(alias)
            self._store(name)
            if not self.scopes:
                self.imported.add(name)
                self.modules.add(name)
                path = _imported_path(node, alias)
                if path is not None:
                    self.paths[name] = path

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not self.scopes and any(alias.name == "*" for alias in node.names):
            module = "." * node.level + (node.module or "")
            self._serial(
                f"`from {module} import *` binds names that are only known when it runs, "
                "so the cell runs as one serial chain."
            )
        self.visit_Import(node)

    def visit_Global(self, node: ast.Global) -> None:
        if not self.scopes:
            self._serial(_GLOBAL_REASON)
        elif self._in_function():
            for name in node.names:
                self._defer(name)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        if not self.scopes:
            self._serial(_NONLOCAL_REASON)

    def _outside_function(self, node: ast.stmt | ast.expr, keyword: str, message: str) -> None:
        if not self._in_function():
            raise self.text.error(message.format(keyword), node)
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        self._outside_function(node, "return", _OUTSIDE_FUNCTION_MESSAGE)

    def visit_Yield(self, node: ast.Yield) -> None:
        self._outside_function(node, "yield", _OUTSIDE_FUNCTION_MESSAGE)

    def visit_YieldFrom(self, node: ast.YieldFrom) -> None:
        self._outside_function(node, "yield from", _OUTSIDE_FUNCTION_MESSAGE)

    def visit_Await(self, node: ast.Await) -> None:
        self._outside_function(node, "await", _ASYNC_MESSAGE)

    # -- compound statements: at the top level they steer `bound`; in functions and classes order is enough

    def _branches(self, bodies: Sequence[Sequence[ast.stmt]]) -> None:
        """Walk alternative bodies from the same state; afterwards only what every one of them binds is bound."""
        start = self.bound
        ends = []
        for body in bodies:
            self.bound = set(start)
            self.visit_all(body)
            ends.append(self.bound)
        self.bound = set.intersection(*ends)

    def visit_If(self, node: ast.If) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        self.visit(node.test)
        self._branches([node.body, node.orelse])

    def visit_For(self, node: ast.For) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        self.visit(node.iter)
        start = set(self.bound)  # the body may not run, and `else` may be skipped by `break`
        self.visit(node.target)
        self.visit_all(node.body)
        self.bound = set(start)
        self.visit_all(node.orelse)
        self.bound = start

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self._outside_function(node, "async for", _ASYNC_MESSAGE)

    def visit_While(self, node: ast.While) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        self.visit(node.test)
        start = set(self.bound)
        self.visit_all(node.body)
        self.bound = set(start)
        self.visit_all(node.orelse)
        self.bound = start

    def visit_With(self, node: ast.With) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        start = set(self.bound)  # a context manager may suppress an exception half-way through the block
        self.visit_all(node.body)
        self.bound = start

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self._outside_function(node, "async with", _ASYNC_MESSAGE)

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        start = set(self.bound)
        self.visit_all([*node.body, *node.orelse])
        for handler in node.handlers:  # a handler may start anywhere in the body
            self.bound = set(start)
            self.visit(handler)
        self.bound = set(start)
        self.visit_all(node.finalbody)

    def visit_TryStar(self, node: ast.TryStar) -> None:
        self.visit_Try(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._store(node.name)  # and unbound again at the end of the handler: still a write
        self.visit_all(node.body)

    def visit_Match(self, node: ast.Match) -> None:
        if self.scopes:
            self.generic_visit(node)
            return
        self.visit(node.subject)
        start = set(self.bound)
        for case in node.cases:
            self.bound = set(start)
            self.visit(case)
        self.bound = start

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.visit_all([*node.keys, *node.patterns])
        if node.rest:
            self._store(node.rest)

    # -- definitions and nested scopes

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.visit_all(_evaluated_at_definition(node))
        binder = _Binder.of(node.body)
        names = {a.arg for a in _parameters(node.args)} | binder.names
        scope = _Scope(
            "function", names - binder.globals - binder.nonlocals, frozenset(binder.globals), _params(node.args)
        )
        self._scoped(scope, node.body)
        self._function_done(scope)
        self._store(node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_all(_defaults(node.args))
        names = {a.arg for a in _parameters(node.args)} | _Binder.of([node.body]).names
        scope = _Scope("function", names, params=_params(node.args))
        self._scoped(scope, [node.body])
        self._function_done(scope)

    def _function_done(self, scope: _Scope) -> None:
        if not self.scopes:  # the function this statement defines: which of its arguments it changes
            self.changed_params = (scope.params, frozenset(scope.changed))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.visit_all([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
        scope = _Scope("class", set(), frozenset(_Binder.of(node.body).globals))
        self._scoped(scope, node.body)  # the class body runs now, when the class is defined
        self._store(node.name)

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        generators = node.generators
        if any(g.is_async for g in generators) and not self._in_function():
            raise self.text.error(_ASYNC_MESSAGE.format("async for"), node)
        self.visit(generators[0].iter)  # the first iterable is evaluated in the enclosing scope
        names: set[str] = set().union(*(_target_names(g.target) for g in generators))
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self.scopes.append(_Scope("comprehension", names))
        self.conditional += 1  # zero iterations: nothing in here may run
        try:
            for position, generator in enumerate(generators):
                if position:
                    self.visit(generator.iter)
                self.visit(generator.target)
                self.visit_all(generator.ifs)
            self.visit_all(parts)
        finally:
            self.conditional -= 1
            self.scopes.pop()

    visit_SetComp = visit_GeneratorExp = visit_DictComp = visit_ListComp  # noqa: N815 (NodeVisitor names)


# ---------------------------------------------------------------------------- views and aliases

_VIEW_METHODS = frozenset({"view", "reshape", "transpose", "swapaxes", "squeeze", "ravel", "diagonal"})
_VIEW_FUNCTIONS = frozenset(
    {"vsplit", "hsplit", "dsplit", "split", "array_split", "unstack", "reshape", "transpose", "permute_dims",
     "matrix_transpose", "ravel", "squeeze", "swapaxes", "moveaxis", "rollaxis", "expand_dims", "atleast_1d",
     "atleast_2d", "atleast_3d", "asarray", "asanyarray", "broadcast_to", "broadcast_arrays", "diagonal", "flip",
     "fliplr", "flipud", "rot90", "real", "imag"}
)  # fmt: skip
"""NumPy functions and methods that may return views of (or the very object of) their first argument."""


def _view_of(node: ast.stmt, modules: frozenset[str]) -> frozenset[str] | None:
    """The names whose objects ``node`` makes views or aliases of, if that is all it does; else None.

    ``b = a``, ``b = c = a``, ``sub = x[:2, ::2]``, ``t = x.T``, ``w = model.weights``, ``r = x.reshape(2, -1)``,
    ``top, bottom = np.vsplit(x, [2])``, ``pair = (x, y)``, ``c = a if flag else b``: names or tuples of names
    bound to an expression built only from names, subscripts with simple indices, attributes (of objects, not
    of modules), view methods, NumPy's view functions (on a name known to be a module), conditionals and
    displays of those. Each of them may be (or hold, or view) the very object of a name it reads.
    """
    if not isinstance(node, ast.Assign) or not all(_is_names_target(t) for t in node.targets):
        return None
    bases = _view_bases(node.value, modules)
    return bases or None  # `x = 1` makes no view of anything


def _view_bases(expr: ast.expr, modules: frozenset[str]) -> frozenset[str] | None:
    if isinstance(expr, ast.Name):
        return frozenset({expr.id})
    if isinstance(expr, ast.Constant):
        return frozenset()
    if isinstance(expr, ast.Subscript):
        return _view_bases(expr.value, modules) if _simple(expr.slice, modules) else None
    if isinstance(expr, ast.Attribute):
        # An attribute of an object is that object's (`w = model.weights`); of a module, a library value.
        if _module_chain(expr.value, modules):
            return None
        return _view_bases(expr.value, modules)
    if isinstance(expr, ast.IfExp):  # `a if flag else b` is one of them
        parts = [_view_bases(e, modules) for e in (expr.body, expr.orelse)]
        if not _simple(expr.test, modules) or any(p is None for p in parts):
            return None
        return frozenset().union(*parts)
    if isinstance(expr, ast.BoolOp):  # `a or b` is one of them
        parts = [_view_bases(e, modules) for e in expr.values]
        return None if any(p is None for p in parts) else frozenset().union(*parts)
    if isinstance(expr, ast.Tuple | ast.List):
        parts = [_view_bases(e, modules) for e in expr.elts]
        return None if any(p is None for p in parts) else frozenset().union(*parts)
    if isinstance(expr, ast.Dict):
        if any(k is None or not isinstance(k, ast.Constant) for k in expr.keys):
            return None
        parts = [_view_bases(v, modules) for v in expr.values]
        return None if any(p is None for p in parts) else frozenset().union(*parts)
    if not isinstance(expr, ast.Call) or not isinstance(expr.func, ast.Attribute):
        return None
    func = expr.func
    if any(isinstance(a, ast.Starred) for a in expr.args) or not all(
        k.arg is not None and _simple(k.value, modules) for k in expr.keywords
    ):
        return None
    if _module_chain(func.value, modules):
        if func.attr not in _VIEW_FUNCTIONS or not expr.args or not all(_simple(a, modules) for a in expr.args[1:]):
            return None
        return _view_bases(expr.args[0], modules)
    if func.attr in _VIEW_METHODS and all(_simple(a, modules) for a in expr.args):
        return _view_bases(func.value, modules)
    return None


def _module_chain(expr: ast.expr, modules: frozenset[str]) -> bool:
    """``np`` or ``np.lib``: a name known to hold a module, or attributes of one."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return isinstance(expr, ast.Name) and expr.id in modules


def _simple(expr: ast.expr, modules: frozenset[str]) -> bool:
    """An index or argument that calls nothing: constants, names, a module's attributes (``np.newaxis``,
    ``np.recarray``), slices and arithmetic of those."""
    if isinstance(expr, ast.Constant | ast.Name):
        return True
    if isinstance(expr, ast.Attribute):
        return _module_chain(expr, modules)
    if isinstance(expr, ast.Slice):
        return all(part is None or _simple(part, modules) for part in (expr.lower, expr.upper, expr.step))
    if isinstance(expr, ast.Tuple | ast.List):
        return all(_simple(e, modules) for e in expr.elts)
    if isinstance(expr, ast.UnaryOp):
        return _simple(expr.operand, modules)
    if isinstance(expr, ast.BinOp):
        return _simple(expr.left, modules) and _simple(expr.right, modules)
    return False


# ---------------------------------------------------------------------------- fan-out


def _fanout(node: ast.stmt, modules: frozenset[str], text: _CellText) -> FanOut | None:
    """The statement as a fan-out, if it is one of the three forms and its elements are independent."""
    if isinstance(node, ast.Assign):
        return _comprehension_fanout(node, modules, text)
    if isinstance(node, ast.For):
        return _loop_fanout(node, modules, text)
    return None


def _comprehension_fanout(node: ast.Assign, modules: frozenset[str], text: _CellText) -> FanOut | None:
    if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
        return None
    value = node.value
    if not isinstance(value, ast.ListComp) or len(value.generators) != 1:
        return None
    generator = value.generators[0]
    if generator.is_async or not _is_names_target(generator.target):
        return None
    name = node.targets[0].id
    target_names = _target_names(generator.target)
    parts = [value.elt, *generator.ifs]
    walker = _Walker(text, modules)
    walker.scopes.append(_Scope("comprehension", set(target_names)))
    walker.visit_all(parts)
    element_reads = frozenset(walker.reads | walker.deferred_unbound)
    if name in element_reads or not _independent(parts, modules, target_names):
        return None
    return FanOut(
        form="comprehension",
        name=name,
        target=generator.target,
        iterable=generator.iter,
        element=value.elt,
        index=None,
        conditions=tuple(generator.ifs),
        iterable_reads=_reads(generator.iter, modules, text),
        element_reads=element_reads,
        target_names=target_names,
    )


def _loop_fanout(node: ast.For, modules: frozenset[str], text: _CellText) -> FanOut | None:
    if node.orelse or len(node.body) != 1 or not _is_names_target(node.target):
        return None
    body = node.body[0]
    index: ast.expr | None = None
    form: Literal["append", "setitem"]
    if (
        isinstance(body, ast.Expr)
        and isinstance(body.value, ast.Call)
        and isinstance(body.value.func, ast.Attribute)
        and body.value.func.attr == "append"
        and isinstance(body.value.func.value, ast.Name)
        and len(body.value.args) == 1
        and not isinstance(body.value.args[0], ast.Starred)
        and not body.value.keywords
    ):
        form, name, element = "append", body.value.func.value.id, body.value.args[0]
    elif (
        isinstance(body, ast.Assign)
        and len(body.targets) == 1
        and isinstance(body.targets[0], ast.Subscript)
        and isinstance(body.targets[0].value, ast.Name)
        and not isinstance(body.targets[0].slice, ast.Slice)  # slice assignment can change a list's length
    ):
        form, name, element, index = "setitem", body.targets[0].value.id, body.value, body.targets[0].slice
    else:
        return None
    target_names = _target_names(node.target)
    parts = [element] if index is None else [element, index]
    walker = _Walker(text, modules, bound=target_names)
    walker.visit_all(parts)
    element_reads = frozenset(walker.reads | walker.deferred_unbound)
    iterable_reads = _reads(node.iter, modules, text)
    if (
        name in target_names
        or name in element_reads
        or name in iterable_reads  # iterating over the container while filling it
        or any(isinstance(n, ast.NamedExpr) for n in ast.walk(node.iter))  # would bind a name no element gives back
        or not _independent(parts, modules, target_names)
    ):
        return None
    return FanOut(
        form=form,
        name=name,
        target=node.target,
        iterable=node.iter,
        element=element,
        index=index,
        conditions=(),
        iterable_reads=iterable_reads,
        element_reads=element_reads,
        target_names=target_names,
    )


def _is_names_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, ast.Tuple | ast.List):
        return bool(target.elts) and all(_is_names_target(e) for e in target.elts)
    return False


def _reads(expr: ast.expr, modules: frozenset[str], text: _CellText) -> frozenset[str]:
    walker = _Walker(text, modules)
    walker.visit(expr)
    return frozenset(walker.reads | walker.deferred_unbound)


def _independent(parts: Iterable[ast.expr], modules: frozenset[str], target_names: frozenset[str]) -> bool:
    """Whether elements can be computed apart: no walrus, yield or await, and no in-place change of any name
    (a global, or a loop variable, which would change the iterable's elements) by a method call."""
    for part in parts:
        for sub in ast.walk(part):
            if isinstance(sub, ast.NamedExpr | ast.Yield | ast.YieldFrom | ast.Await):
                return False
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr not in PURE_METHODS:
                base = _base_name(sub.func.value)
                if base is not None and (base not in modules or base in target_names):
                    return False
    return True
