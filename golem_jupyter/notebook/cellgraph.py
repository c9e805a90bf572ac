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
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

__all__ = ["PURE_METHODS", "CellGraph", "FanOut", "Statement", "analyze"]

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
    _effective: tuple[frozenset[str], ...] = field(default=(), repr=False, compare=False)

    def effective_reads(self, index: int) -> frozenset[str]:
        """The reads of statement ``index`` plus the deferred reads of the functions it uses, transitively."""
        if len(self._effective) == len(self.statements):
            return self._effective[index]
        return _effective_reads(self.statements, index, _NO_CALLABLES)

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
    modules: frozenset[str] = frozenset(),
    callables: Mapping[str, frozenset[str]] = _NO_CALLABLES,
) -> CellGraph:
    """The dataflow DAG of a cell's ``source``.

    ``first_line`` is the line of the notebook cell's file that line 1 of ``source`` is (the nodes, and
    the ``SyntaxError`` for invalid source, carry shifted line numbers; ``filename`` names the source in
    both). ``modules`` are names known to hold modules in the notebook: method calls on them are not writes,
    and neither are calls on names the cell binds by an import. ``callables`` gives, for functions already
    in the notebook, the global names their bodies read: a statement that reads such a name reads those too.

    Raises ``SyntaxError`` for invalid source, and for ``return``, ``yield``, ``await``, ``async for``,
    ``async with`` and asynchronous comprehensions outside any function.
    """
    text = _CellText(source, first_line, filename)
    tree = _parse(source, first_line, filename)
    known_modules = set(modules)
    statements: list[Statement] = []
    reasons: list[str] = []
    for index, node in enumerate(tree.body):
        statement, known_modules, reason = _statement(index, node, known_modules, text)
        statements.append(statement)
        if reason is not None:
            reasons.append(reason)
    serial_reason = reasons[0] if reasons else None
    if serial_reason is not None:
        statements = [replace(s, fanout=None) for s in statements]
    effective = tuple(_effective_reads(statements, j, callables) for j in range(len(statements)))
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
        _effective=effective,
    )


def _statement(
    index: int, node: ast.stmt, modules: set[str], text: _CellText
) -> tuple[Statement, set[str], str | None]:
    """One statement's record, the module names known after it, and its first serial reason (if any)."""
    walker = _Walker(text, modules)
    walker.visit(node)
    kind = _kind(node)
    reads = walker.reads if kind == "definition" else walker.reads | walker.deferred_unbound
    # A `del` nested in a compound statement may not run: the name is written, not surely deleted.
    deletes = walker.deleted if isinstance(node, ast.Delete) else set()
    statement = Statement(
        index=index,
        node=node,
        kind=kind,
        reads=frozenset(reads),
        writes=frozenset(walker.writes),
        mutates=frozenset(walker.mutates),
        deletes=frozenset(deletes),
        deferred_reads=frozenset(walker.deferred),
        fanout=_fanout(node, frozenset(modules), text),
    )
    reason = walker.serial_reasons[0] if walker.serial_reasons else None
    return statement, walker.modules, reason


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
    statements: Sequence[Statement], name: str, at: int, callables: Mapping[str, frozenset[str]]
) -> set[str]:
    """What calling the value of ``name`` at statement ``at`` may read: the deferred reads of the statement that
    last bound it, and of the statements that changed it in place since (they may have stored functions in it);
    ``callables`` for a value from the notebook."""
    found: set[str] = set()
    for k in range(at - 1, -1, -1):
        writer = statements[k]
        if name in writer.writes:
            found |= writer.deferred_reads
            if name not in writer.mutates:
                return found
    return found | set(callables.get(name, frozenset()))


def _effective_reads(
    statements: Sequence[Statement], index: int, callables: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """``reads`` plus, transitively, what the functions read through those names read when called."""
    result = set(statements[index].reads)
    pending = list(result)
    expanded: set[str] = set()  # each name once: recursive functions would loop forever otherwise
    while pending:
        name = pending.pop()
        if name in expanded:
            continue
        expanded.add(name)
        for extra in _deferred_of(statements, name, index, callables):
            result.add(extra)
            pending.append(extra)
    return frozenset(result)


def _dataflow_edges(statements: Sequence[Statement], effective: Sequence[frozenset[str]]) -> set[tuple[int, int]]:
    """Read-after-write, write-after-write and write-after-read edges."""
    edges: set[tuple[int, int]] = set()
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


def _parameters(arguments: ast.arguments) -> list[ast.arg]:
    params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    return params + [a for a in (arguments.vararg, arguments.kwarg) if a is not None]


def _evaluated_at_definition(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.expr]:
    """Decorators, defaults and annotations: evaluated when the ``def`` runs, not when the function is called."""
    annotations = [a.annotation for a in _parameters(node.args) if a.annotation is not None]
    returns = [node.returns] if node.returns is not None else []
    return [*node.decorator_list, *_defaults(node.args), *annotations, *returns]


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

    def __init__(self, text: _CellText, modules: Iterable[str], bound: Iterable[str] = ()) -> None:
        self.text = text
        self.modules = set(modules)
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
        elif scope.kind == "class":
            scope.names.add(name)

    def _bind_global(self, name: str, *, definite: bool) -> None:
        self.writes.add(name)
        if definite:
            self.bound.add(name)
        if name not in self.imported:
            self.modules.discard(name)

    def _delete(self, name: str) -> None:
        scope = self.scopes[-1] if self.scopes else None
        if scope is None or (name in scope.declared_global and not self._in_function()):
            self.writes.add(name)
            self.deleted.add(name)
            self.bound.discard(name)
            self.modules.discard(name)
            self.imported.discard(name)
        elif name in scope.declared_global:
            self._defer(name)
        elif scope.kind == "class":
            scope.names.discard(name)

    def _mutate(self, expr: ast.expr) -> None:
        """The object the chain ``expr`` starts from is changed in place."""
        name = _base_name(expr)
        if name is None or name in self.modules or not self._is_global(name):
            return
        if self._in_function():
            return  # it changes when the function is called: only a (deferred) read, recorded by the load
        self.writes.add(name)
        self.mutates.add(name)

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
        if isinstance(func, ast.Attribute) and func.attr not in PURE_METHODS:
            self._mutate(func.value)
        elif isinstance(func, ast.Name) and func.id == "vars" and not node.args and not node.keywords:
            if self._is_global("vars"):
                self._serial(_VARS_REASON)
        self.generic_visit(node)

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
        scope = _Scope("function", names - binder.globals - binder.nonlocals, frozenset(binder.globals))
        self._scoped(scope, node.body)
        self._store(node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_all(_defaults(node.args))
        names = {a.arg for a in _parameters(node.args)} | _Binder.of([node.body]).names
        self._scoped(_Scope("function", names), [node.body])

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
