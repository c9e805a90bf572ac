"""From a cell's dataflow DAG (:mod:`.cellgraph`) to the tasks of a Dask graph.

The promise (DESIGN.md section 5): the notebook ends exactly as plain Python would leave it, or
the cell raises before writing anything. Where a parallel plan cannot be exact, statements run
in the kernel, and :meth:`Plan.describe` says why.

Where each statement runs:

* In the kernel: definitions (cheap, and the notebook needs them); statements that only make
  views or aliases (memory sharing is part of the result); statements that touch hidden state
  (``np.random.seed``, ``random.*``, ``np.seterr``: the kernel's module state must end as plain
  Python leaves it); statements that bind an instance of a library class a provider cannot send back
  (``A = array.array('i', L)``, ``c = Counter(words)``: the restricted decoder rebuilds only data
  types); star imports; in-place changes of an object that shares memory with another
  name (the notebook's objects are checked when a namespace is given); and whole cells that look
  at the notebook's namespace (``globals()``, ``get_ipython()``). A kernel statement runs before
  the graph when everything it depends on did; otherwise after the graph, and then every
  statement that depends on it runs in the kernel after the graph too (definitions excepted:
  tasks execute them again).
* In tasks: every other statement. Statements which change the same object in place are run
  together in one task (one namespace, in cell order), so that aliases behave as in plain
  Python, and so are statements that call functions writing the same ``global``. Fan-out
  statements become one task per element (or per slice of the elements) and a task that
  gathers them in order. A task copies the values it changes in place, and nothing else.

Names a task needs come from: the notebook (one graph key per name, sent once per graph, after
the kernel statements that run before the graph), the task that last wrote them, or a definition
of the cell (re-executed). A last task collects the names that go back to the notebook, and those
the kernel statements after the graph read. A name the cell only changes in place goes back into
the notebook's own object (so that views of it and other references see the change), and a
function defined by a statement that ran in a task (a lambda in a loop) is rebuilt in the kernel
from the kernel's own compiled code, with the defaults the task reports.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..trust import rebuilds
from ..worker.runner import (
    ITEM,
    Bind,
    Collect,
    Elements,
    Exec,
    Gather,
    Items,
    Program,
    collect,
    gather,
    run_and_collect,
    run_elements,
    run_program,
)
from .cellgraph import BARRIER_STATES, CellGraph, Statement
from .transport import ship

MAX_FANOUT_TASKS = 10_000
INLINE_INPUT_BYTES = 64 * 1024
"""A notebook input this small is written into each task that reads it instead of being a graph key of
its own: Dask runs a task where its dependencies are, so tasks reading one key would all queue on the
worker that holds it, while tasks with no dependencies spread over every provider."""
INLINE_GRAPH_BYTES = 8 * 1024 * 1024
"""The most inlined copies may add to one graph."""
"""A fan-out over more elements than this gives each task several consecutive elements."""


@dataclass
class Unit:
    """A task of the plan: some statements run together, or one fan-out statement."""

    statements: tuple[int, ...]
    fanout: bool = False
    kernel_items: bool = False
    """The fan-out's iterable is evaluated in the kernel (one task per element)."""
    why: tuple[str, ...] = ()
    """Why its statements run together in one task (for ``--dry-run``)."""

    def where(self, graph: CellGraph) -> str:
        first = graph.statements[self.statements[0]].node
        last = graph.statements[self.statements[-1]].node
        start, end = first.lineno, last.end_lineno or last.lineno
        return f"line {start}" if start == end else f"lines {start}-{end}"


@dataclass
class Plan:
    """What runs where for one cell."""

    graph: CellGraph
    filename: str
    units: list[Unit]
    kernel_before: list[int]
    """Statements run in the kernel before the graph, in cell order (definitions and kernel statements)."""
    kernel_after: list[int]
    """Statements that need values the graph computes, or come after one that does: run in the kernel after
    it, in cell order."""
    outputs: dict[str, int]
    """Name -> statement that last wrote it, for every name the graph writes back to the notebook."""
    deleted: frozenset[str]
    serial: bool = False
    unit_of: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    """Why a statement runs in the kernel (definitions have none: they always do)."""
    edges: frozenset[tuple[int, int]] = frozenset()
    """The cell's edges, and those that memory shared between names adds."""
    kernel_needs: dict[str, int] = field(default_factory=dict)
    """Names the kernel statements after the graph read from it -> the statement of the graph that wrote them."""
    in_place: frozenset[str] = frozenset()
    """Names the cell only changes in place: their new contents go into the notebook's own object."""
    shared: dict[str, frozenset[str]] = field(default_factory=dict)
    """Name -> the names that may share memory with it (itself included), where there are several."""
    out: frozenset[str] | None = None
    """``--out``: the only names the cell may leave changed in the notebook."""
    functions: tuple[types.CodeType, ...] = ()
    """Code of the functions that statements run in tasks may define (a lambda in a loop): the kernel rebuilds
    them from this code, never from the provider's."""
    _codes: dict[int, types.CodeType] = field(default_factory=dict, repr=False)

    def code(self, index: int) -> types.CodeType:
        """Statement ``index`` compiled alone (with the cell's line numbers), once per plan."""
        if index not in self._codes:
            node = self.graph.statements[index].node
            self._codes[index] = compile(
                ast.Module(body=[node], type_ignores=[]), self.filename, "exec", dont_inherit=True
            )
        return self._codes[index]

    def predecessors(self, index: int) -> frozenset[int]:
        return frozenset(i for i, j in self.edges if j == index)

    def describe(self) -> str:
        """The plan as text, for ``--dry-run``: what runs where, and why."""
        graph = self.graph
        lines = []
        if graph.serial_reason:
            if graph.serial_in_kernel:
                lines.append(f"Kernel: {_kernel_text(graph.serial_reason)}")
            else:
                lines.append(f"Serial: {graph.serial_reason}")
                if self.units:
                    lines.append(
                        "  (one task, in a namespace that starts as the notebook's inputs; every name it binds or "
                        "changes comes back)"
                    )
        for i in self.kernel_before:
            lines.append(self._kernel_line(i, "before"))
        for u, unit in enumerate(self.units):
            deps = sorted({self.unit_of[p] for s in unit.statements for p in self.predecessors(s) if p in self.unit_of})
            deps = [d for d in deps if d != u]
            after = f" after task {', '.join(str(d + 1) for d in deps)}" if deps else ""
            if unit.fanout:
                fan = graph.statements[unit.statements[0]].fanout
                if kernel_iterable(self, unit):
                    how = "one task per element (the kernel lists the elements)"
                else:
                    how = "one task per worker thread, each a slice of the elements"
                lines.append(
                    f"task {u + 1}, {unit.where(graph)}: fan-out of {ast.unparse(fan.iterable)!r} into {fan.name!r}, "
                    f"{how}{after}"
                )
            else:
                writes = sorted(set().union(*(graph.statements[s].writes for s in unit.statements)))
                together = f"; together, because {'; '.join(unit.why)}" if unit.why else ""
                lines.append(
                    f"task {u + 1}, {unit.where(graph)}: writes {', '.join(writes) or 'nothing'}{after}{together}"
                )
        for i in self.kernel_after:
            lines.append(self._kernel_line(i, "after"))
        back = ", ".join(sorted(self.outputs)) or "nothing"
        lines.append(
            f"back to the notebook: {back}" + (f"; deleted: {', '.join(sorted(self.deleted))}" if self.deleted else "")
        )
        if self.in_place:
            lines.append(f"changed in place (into the notebook's own objects): {', '.join(sorted(self.in_place))}")
        return "\n".join(lines)

    def _kernel_line(self, index: int, when: str) -> str:
        line = (
            f"kernel ({when} the graph), line {self.graph.statements[index].node.lineno}: {_source(self.graph, index)}"
        )
        reason = self.reasons.get(index)
        return f"{line}\n    why: {reason}" if reason else line


def _kernel_text(reason: str) -> str:
    return reason.replace("so the cell runs as one serial chain.", "so the cell runs in the kernel, as plain Python.")


def plan_cell(
    graph: CellGraph,
    *,
    filename: str,
    out: frozenset[str] | None = None,
    namespace: Mapping[str, Any] | None = None,
) -> Plan:
    """Decide which statements run in the kernel, which together in tasks, and what comes back.

    ``namespace`` (the notebook's) lets the plan see which of the names the cell touches already share
    memory (``v = x[1:]`` in an earlier cell): an in-place change of one of them then runs in the kernel.
    """
    statements = graph.statements
    shared = _sharing(graph, namespace)
    edges = set(graph.edges) | _sharing_edges(graph, shared)
    reasons = _kernel_reasons(graph, shared, namespace)
    preds: dict[int, set[int]] = {s.index: set() for s in statements}
    for i, j in edges:
        preds[j].add(i)
    before: list[int] = []
    after: list[int] = []
    in_graph: list[int] = []
    hard: set[int] = set()  # kernel statements after the graph that tasks cannot execute again
    for s in statements:
        j = s.index
        if s.kind == "definition" or j in reasons:
            if preds[j] <= set(before):
                before.append(j)
                continue
            after.append(j)
            # Definitions and views are cheap and pure: tasks that need them execute them again; the kernel's
            # run after the graph reads the graph's last values, right only if nothing after writes those.
            replicable = s.kind == "definition" or s.view_of is not None
            if not replicable or preds[j] & hard or _reads_rewritten(graph, j):
                hard.add(j)
        elif preds[j] & hard:
            after.append(j)
            hard.add(j)
            first = min(preds[j] & hard)
            reasons[j] = (
                f"it comes after line {statements[first].node.lineno}, which runs in the kernel after the graph"
            )
        else:
            in_graph.append(j)
    serial = bool(graph.serial_reason)
    if serial:
        units = []
        if any(statements[j].kind == "compute" for j in in_graph):
            lo, hi = min(in_graph), max(in_graph)
            inner = [j for j in after if lo < j < hi and statements[j].kind == "definition"]
            units = [Unit(tuple(sorted({*in_graph, *inner})))]
    else:
        units = _group(graph, in_graph, edges)
    graph_set = set(in_graph)
    unit_of = {s: u for u, unit in enumerate(units) for s in unit.statements if s in graph_set}
    outputs = {}
    for name in graph.outputs:
        if out is not None and name not in out:
            continue
        writer = graph.last_writer(name, len(statements))
        if writer is not None and writer in graph_set:
            outputs[name] = writer
    kernel_needs = {}
    for j in after:
        for name in graph.effective_reads(j) | statements[j].mutates:
            writer = graph.last_writer(name, j)
            if writer is not None and writer in graph_set:
                kernel_needs[name] = writer
    # Deleted by a task: the kernel deletes them when the graph is done (a kernel statement deletes its own).
    deleted = frozenset(n for n in graph.deleted if graph.last_writer(n, len(statements)) in graph_set)
    deleted = deleted if out is None else deleted & out
    in_place = frozenset(
        name for name in outputs if all(name in s.mutates and not s.deletes for s in statements if name in s.writes)
    )
    plan = Plan(
        graph,
        filename,
        units,
        before,
        after,
        outputs,
        deleted,
        serial,
        unit_of,
        reasons=reasons,
        edges=frozenset(edges),
        kernel_needs=kernel_needs,
        in_place=in_place,
        shared=shared,
        out=out,
    )
    plan.functions = _task_functions(plan, in_graph)
    return plan


# ---------------------------------------------------------------------------- where statements run


def _kernel_reasons(
    graph: CellGraph, shared: Mapping[str, frozenset[str]], namespace: Mapping[str, Any] | None = None
) -> dict[int, str]:
    """Why each statement that must run in the kernel must (definitions excepted: they always do)."""
    reasons: dict[int, str] = {}
    for s in graph.statements:
        if s.kind == "compute" and not graph.serial_reason and (kind := _unreturnable(graph, s, namespace)):
            reasons[s.index] = (
                f"no way back: its value is an instance of {kind}, which a provider cannot send back (the "
                "restricted decoder rebuilds only data types), so it is made in the kernel"
            )
            continue
        if graph.serial_in_kernel:
            reasons[s.index] = _kernel_text(graph.serial_reason or "")
        elif s.star_import:
            reasons[s.index] = (
                "star import: it binds names that are only known when it runs, so it runs in the kernel "
                "(the names it binds stay the notebook's own objects)"
            )
        elif s.hidden:
            states = ", ".join(sorted(s.hidden))
            barrier = (
                " every statement may read it, so it also keeps its place among all the cell's statements;"
                if s.hidden & BARRIER_STATES
                else ""
            )
            reasons[s.index] = (
                f"hidden state: it reads and writes the global state of {states};{barrier} statements that touch "
                "hidden state keep their order, in the kernel, so that the state ends as plain Python leaves it"
            )
        elif s.view_of:
            names = ", ".join(sorted(s.view_of))
            reasons[s.index] = (
                f"view: it only makes views or aliases of {names}; memory sharing is part of the result, "
                "and only the kernel's objects can share it"
            )
        elif s.kind == "compute" and (changed := sorted(n for n in s.mutates if n in shared)):
            others = sorted(set().union(*(shared[n] for n in changed)) - set(changed))
            reasons[s.index] = (
                f"in-place change: it changes {', '.join(changed)}, which shares memory with {', '.join(others)}; "
                "a task would change a copy"
            )
    return reasons


def _unreturnable(graph: CellGraph, statement: Statement, namespace: Mapping[str, Any] | None) -> str | None:
    """``name = cls(...)`` where ``cls`` is a library class whose instances the restricted decoder does not
    rebuild (``array.array``, ``collections.Counter``, ``zip``): the class's name; else None."""
    node = statement.node
    if not isinstance(node, ast.Assign) or not all(isinstance(t, ast.Name) for t in node.targets):
        return None
    if not isinstance(node.value, ast.Call):
        return None
    cls = _library_object(graph, statement.index, node.value.func, namespace or {})
    if not isinstance(cls, type) or rebuilds(cls):
        return None
    return f"{cls.__module__}.{cls.__qualname__}"


_UNKNOWN = object()


def _library_object(graph: CellGraph, index: int, expr: ast.expr, namespace: Mapping[str, Any]) -> object:
    """What ``expr`` names when statement ``index`` runs, where that is sure without running anything: a builtin,
    a notebook's value, or an attribute of a module (imported by the notebook or by a top-level import of the
    cell); ``_UNKNOWN`` otherwise."""
    attributes = []
    while isinstance(expr, ast.Attribute):
        attributes.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return _UNKNOWN
    writer = graph.last_writer(expr.id, index)
    if writer is not None:
        value = _imported(graph.statements[writer].node, expr.id)
    elif expr.id in namespace:
        value = namespace[expr.id]
    else:
        value = getattr(builtins, expr.id, _UNKNOWN)
    for attribute in reversed(attributes):
        if not isinstance(value, types.ModuleType):
            return _UNKNOWN
        value = getattr(value, attribute, _UNKNOWN)
    return value


def _imported(node: ast.stmt, name: str) -> object:
    """The value the import statement ``node`` binds to ``name`` (the module imported; ``_UNKNOWN`` if it fails,
    or if ``node`` is no import). The import runs now, before the cell's own (which then finds the module)."""
    try:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    return importlib.import_module(alias.name)
                if alias.asname is None and alias.name.split(".")[0] == name:
                    importlib.import_module(alias.name)
                    return importlib.import_module(name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return getattr(importlib.import_module(node.module), alias.name, _UNKNOWN)
    except Exception:  # noqa: BLE001 (the cell's own import raises it when it runs)
        return _UNKNOWN
    return _UNKNOWN


def _reads_rewritten(graph: CellGraph, index: int) -> bool:
    """A definition or view after the graph reads (when it runs) a name that a later statement writes."""
    reads = graph.statements[index].reads
    return any(reads & s.writes for s in graph.statements[index + 1 :])


def _sharing(graph: CellGraph, namespace: Mapping[str, Any] | None) -> dict[str, frozenset[str]]:
    """Classes of names that may hold the same object or share memory: views and aliases the cell makes, and
    (given the notebook's namespace) the notebook's objects the cell touches that are one object, share an
    array's memory, or hold one another."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for s in graph.statements:
        targets = [n for t in getattr(s.node, "targets", ()) for n in _names(t)]
        if s.view_of:
            for name in [*targets, *s.view_of]:
                union(name, targets[0])
        elif isinstance(s.node, ast.Assign) and len(s.node.targets) > 1:  # u = v = [0]
            for name in targets:
                union(name, targets[0])
    if namespace is not None:
        touched = set(graph.inputs) | set(graph.outputs) | set(graph.deleted)
        for s in graph.statements:
            touched |= s.writes
        _notebook_sharing(namespace, touched, union)
    classes: dict[str, set[str]] = {}
    for name in list(parent):
        classes.setdefault(find(name), set()).add(name)
    return {name: frozenset(members) for members in classes.values() if len(members) > 1 for name in members}


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range, frozenset, types.ModuleType)
_IMMUTABLE += (types.FunctionType, type)  # not data: never shared in a way that matters here
_CONTAINER_LIMIT = 100_000


def _notebook_sharing(namespace: Mapping[str, Any], touched: Iterable[str], union: Callable[[str, str], None]) -> None:
    numpy = sys.modules.get("numpy")
    values = {
        name: namespace[name]
        for name in sorted(touched)
        if name in namespace
        and not isinstance(namespace[name], _IMMUTABLE)
        and not (numpy is not None and isinstance(namespace[name], numpy.generic))
    }
    by_id: dict[int, str] = {}
    arrays: list[tuple[str, Any]] = []
    for name, value in values.items():
        if id(value) in by_id:
            union(name, by_id[id(value)])
        by_id.setdefault(id(value), name)
        if numpy is not None and isinstance(value, numpy.ndarray):
            arrays.append((name, value))
    for k, (name, array) in enumerate(arrays):
        for other, other_array in arrays[k + 1 :]:
            if numpy.may_share_memory(array, other_array):
                union(name, other)
    for name, value in values.items():  # one level of holding: `pair = [x, y]` from an earlier cell
        if isinstance(value, dict):
            elements: Iterable[Any] = value.values()
        elif isinstance(value, list | tuple | set):
            elements = value
        else:
            continue
        if len(value) > _CONTAINER_LIMIT:
            continue
        for element in elements:
            holder = by_id.get(id(element))
            if holder is not None and holder != name:
                union(name, holder)
            elif numpy is not None and isinstance(element, numpy.ndarray):
                for other, array in arrays:
                    if other != name and numpy.may_share_memory(element, array):
                        union(name, other)


def _sharing_edges(graph: CellGraph, shared: Mapping[str, frozenset[str]]) -> set[tuple[int, int]]:
    """An in-place change of a name changes every name that shares its memory: order it with their uses."""
    if not shared or graph.serial_reason:
        return set()
    edges = set()
    statements = graph.statements
    touch = [graph.effective_reads(s.index) | s.writes for s in statements]
    for s in statements:
        for name in s.mutates & shared.keys():
            others = shared[name] - {name}
            for k in range(len(statements)):
                if k != s.index and others & touch[k]:
                    edges.add((min(k, s.index), max(k, s.index)))
    return edges


def _names(target: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _task_functions(plan: Plan, in_graph: list[int]) -> tuple[types.CodeType, ...]:
    """The code of the functions that statements run in tasks bind to names: lambdas and undecorated defs in
    loops and branches (a task cannot hand a function back; the kernel rebuilds it from this code)."""
    found = []
    for j in in_graph:
        statement = plan.graph.statements[j]
        if statement.kind != "compute" or not isinstance(
            statement.node, ast.For | ast.While | ast.If | ast.With | ast.Try | ast.Match
        ):
            continue
        wanted = set()
        for node in _outside_functions(statement.node):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                wanted.add(("<lambda>", node.value.lineno))
            elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
                wanted.add((node.name, node.lineno))
        if wanted:
            found += [
                c
                for c in plan.code(j).co_consts
                if isinstance(c, types.CodeType) and (c.co_name, c.co_firstlineno) in wanted and not c.co_freevars
            ]
    return tuple(found)


def _outside_functions(node: ast.AST) -> Iterable[ast.AST]:
    """The nodes of a statement, not entering function, lambda or class bodies (a def's own node is yielded)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if not isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(current))


def _group(graph: CellGraph, compute: list[int], edges: Iterable[tuple[int, int]]) -> list[Unit]:
    """Tasks: the statements ``compute`` (those run in tasks), with those that change a shared object in place,
    or call functions that write the same global, merged (see module doc)."""
    statements = graph.statements
    parent = {i: i for i in compute}
    # Why groups were merged: (kind, name) -> (lines that change it, lines that use it), per group root.
    why: dict[int, dict[tuple[str, str], tuple[set[int], set[int]]]] = {i: {} for i in compute}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int, reason: tuple[str, str, int, int] | None = None) -> bool:
        ra, rb = find(a), find(b)
        keep, drop = min(ra, rb), max(ra, rb)
        if ra != rb:
            parent[drop] = keep
            for key, (changers, users) in why.pop(drop).items():
                mine = why[keep].setdefault(key, (set(), set()))
                mine[0].update(changers)
                mine[1].update(users)
        if reason is not None:
            kind, name, changer, user = reason
            mine = why[keep].setdefault((kind, name), (set(), set()))
            mine[0].add(changer)
            mine[1].add(user)
        return ra != rb

    def line(i: int) -> int:
        return statements[i].node.lineno

    aliases = _alias_classes(graph, compute)
    plain = {j for j in compute if (fan := statements[j].fanout) is not None and fan.name in aliases}
    for j in compute:  # a function reading the comprehension's variable as a global would read the wrong one
        fan = statements[j].fanout
        if (
            fan is not None
            and fan.form == "comprehension"
            and graph.expand_reads(fan.element_reads, j) & (fan.target_names)
        ):
            plain.add(j)
    for j in compute:
        s = statements[j]
        if s.fanout is not None and j not in plain:
            continue
        source = _aliased_name(s.node)
        if source is not None:  # `b = a` runs with a's task, so that b and a stay one object
            writer = graph.last_writer(source, j)
            if writer is not None and writer in parent and (statements[writer].fanout is None or writer in plain):
                union(writer, j, ("alias", source, line(j), line(writer)))
        for name in sorted(s.mutates):
            # An object changed in place is the same under every alias: earlier statements that
            # touch it run with the change; so do later ones, when it has another name.
            names = aliases.get(name, {name})
            for k in compute:
                if k >= j and len(names) == 1:
                    break
                other = statements[k]
                if k != j and (other.fanout is None or k in plain) and names & (other.reads | other.writes):
                    kind = "global" if name in s.indirect_writes else "in-place"
                    union(k, j, (kind, name, line(j), line(k)))
        for name in sorted(s.indirect_writes - s.mutates):
            # `global g` in a function: the calls change one g, in cell order.
            for k in compute:
                if k >= j:
                    break
                other = statements[k]
                if (other.fanout is None or k in plain) and name in other.writes | graph.effective_reads(k):
                    union(k, j, ("global", name, line(j), line(k)))
    reach = _reachability(graph, edges)
    changed = True
    while changed:  # make every group convex, and the graph of groups acyclic
        changed = False
        groups: dict[int, set[int]] = {}
        for i in compute:
            groups.setdefault(find(i), set()).add(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            for k in compute:
                if k not in members and any(k in reach[a] for a in members) and any(b in reach[k] for b in members):
                    changed |= union(min(members), k, ("between", "", line(k), line(k)))
        if not changed:
            changed = _merge_cycles(compute, find, union, reach)
    groups = {}
    for i in compute:
        groups.setdefault(find(i), []).append(i)
    units = []
    for root in sorted(groups):
        members = sorted(groups[root])
        single = len(members) == 1 and statements[members[0]].fanout is not None and members[0] not in plain
        units.append(Unit(tuple(members), fanout=single, why=_why(why.get(root, {}))))
    # Definitions between grouped statements run inside the group too (they are cheap and pure).
    for unit in units:
        if len(unit.statements) > 1:
            lo, hi = unit.statements[0], unit.statements[-1]
            inner = [
                s.index
                for s in statements[lo:hi]
                if s.kind == "definition"
                and any(s.index in reach[m] for m in unit.statements)
                and any(m in reach[s.index] for m in unit.statements)
            ]
            unit.statements = tuple(sorted(set(unit.statements) | set(inner)))
    return units


def _why(reasons: Mapping[tuple[str, str], tuple[set[int], set[int]]]) -> tuple[str, ...]:
    """Why a task's statements run together, for ``--dry-run``."""

    def lines(numbers: Iterable[int]) -> str:
        ordered = sorted(set(numbers))
        return ("line " if len(ordered) == 1 else "lines ") + ", ".join(map(str, ordered))

    texts = []
    for (kind, name), (changers, users) in sorted(reasons.items()):
        if kind == "global":
            texts.append(
                f"`global {name}`: {lines(changers | users)} call functions that change {name} (or use it), "
                "so they run in order in one task"
            )
        elif kind == "in-place":
            texts.append(f"in-place change: {name} is changed in place by {lines(changers)} and used by {lines(users)}")
        elif kind == "alias":
            texts.append(f"an alias of {name} is made by {lines(changers)}")
        elif kind == "between":
            texts.append(f"{lines(changers)} must run between the task's other statements")
        else:
            texts.append("the tasks would wait on each other")
    return tuple(texts)


def _alias_classes(graph: CellGraph, compute: list[int]) -> dict[str, set[str]]:
    """For each name the cell aliases (`ys = xs`), every name that may hold the same object.

    Fan-outs building one of them run as plain statements: the names must stay one object,
    changed by whoever changes it."""
    classes: dict[str, set[str]] = {}
    for j in compute:
        node = graph.statements[j].node
        if (source := _aliased_name(node)) is not None:
            merged = {source, *(t.id for t in node.targets)}
            for name in list(merged):
                merged |= classes.get(name, set())
            for name in merged:
                classes[name] = merged
    return classes


def _aliased_name(node: ast.stmt) -> str | None:
    """``a`` for ``b = a`` (and ``b = c = a``): statements that make an alias of a name."""
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
        if all(isinstance(t, ast.Name) for t in node.targets):
            return node.value.id
    return None


def _reachability(graph: CellGraph, edges: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    """For each statement, the statements that (transitively) must run after it."""
    after: dict[int, set[int]] = {s.index: set() for s in graph.statements}
    for i, j in edges:
        after[i].add(j)
    reach: dict[int, set[int]] = {}
    for s in reversed(graph.statements):
        found = set()
        for j in after[s.index]:
            found.add(j)
            found |= reach[j]
        reach[s.index] = found
    return reach


def _merge_cycles(compute: list[int], find: Any, union: Any, reach: dict[int, set[int]]) -> bool:
    """Merge groups that would wait on each other (a cycle between tasks)."""
    groups: dict[int, set[int]] = {}
    for i in compute:
        groups.setdefault(find(i), set()).add(i)
    roots = list(groups)
    merged = False
    for a in roots:
        for b in roots:
            if a < b and find(a) != find(b):
                a_to_b = any(y in reach[x] for x in groups[a] for y in groups[b])
                b_to_a = any(y in reach[x] for x in groups[b] for y in groups[a])
                if a_to_b and b_to_a:
                    merged |= union(a, b, ("cycle", "", a, b))
    return merged


# ---------------------------------------------------------------------------- the Dask graph


@dataclass
class DaskGraph:
    tasks: dict[str, Any]
    collect_key: str
    input_keys: dict[str, str]
    n_tasks: int
    inputs: dict[str, Any] = field(default_factory=dict)
    """The notebook's objects the graph was sent, by name: a task that hands one back unchanged (or an item
    of one) says so, and the notebook keeps its own object."""


class _Builder:
    """Builds the task tuples of one run of a plan."""

    def __init__(
        self, plan: Plan, namespace: dict[str, Any], token: str, threads: Callable[[], int], items: dict[int, list]
    ):
        self.plan = plan
        self.graph = plan.graph
        self.namespace = namespace
        self.token = token
        self._threads = threads
        self.items = items
        self.tasks: dict[str, Any] = {}
        self.input_keys: dict[str, str] = {}
        self.unit_keys: dict[int, str] = {}
        self.needed_from: dict[int, set[str]] = {}
        self.settings = _kernel_settings()
        self.before = set(plan.kernel_before)
        self.after = set(plan.kernel_after)

    # -- names

    def _writer(self, name: str, before: int) -> int | None:
        return self.graph.last_writer(name, before)

    def _needs(self, s: Statement) -> set[str]:
        return set(self.graph.effective_reads(s.index)) | set(s.mutates) | set(s.deletes)

    def _code(self, index: int) -> Any:
        return self.plan.code(index)

    def _copied(self, uses: list[tuple[int, set[str], set[str]]]) -> set[str]:
        """The names a task changes in place, and those that may share memory with them: it copies these
        (other tasks may hold the same objects), and nothing else (modules, functions, read-only data)."""
        changed = set().union(*(mutated for _, _, mutated in uses)) if uses else set()
        return changed.union(*(self.plan.shared.get(name, ()) for name in changed))

    def _setup(
        self, unit_members: set[int], uses: list[tuple[int, set[str], set[str]]], args: list[Any]
    ) -> tuple[list, bool]:
        """Bind and definition steps for statements ``uses`` = [(position, names needed, names mutated)]."""
        steps: list[Bind | Exec] = []
        bound: dict[str, int | None] = {}
        xp = False
        arg_index: dict[str, int] = {}

        def arg_for(key: str) -> int:
            if key not in arg_index:
                arg_index[key] = len(args)
                args.append(key)
            return arg_index[key]

        # The names the task changes in place are copied (once per task, together, so that objects they share
        # stay shared): other tasks may hold the same objects. Nothing else is: modules cannot be copied.
        copied = self._copied(uses)

        def need(name: str, at: int, depth: int = 0) -> None:
            nonlocal xp
            writer = self._writer(name, at)
            if writer is not None and writer in unit_members:
                return
            if name in bound and bound[name] == writer:
                return  # bound once per task: aliases made in the task stay aliases
            statement = self.graph.statements[writer] if writer is not None else None
            if writer is None or (writer in self.before and statement.kind == "compute"):
                # From the notebook, as the kernel left it before the graph.
                if name in self.namespace:
                    key = self._input(name)
                    steps.append(Bind(name, arg_for(key), from_unit=False, copy=name in copied))
                elif name == "xp":
                    xp = True
                else:
                    return  # a builtin, or a NameError the statement will raise where plain Python would
            elif statement.kind == "definition" or (writer in self.after and statement.view_of is not None):
                # Executed again in the task: a definition, or a view the kernel makes after the graph.
                if depth > 50:
                    return
                for dep in sorted(statement.reads):
                    need(dep, writer, depth + 1)
                steps.append(Exec(self._code(writer)))
            else:
                sources = self._sources(name, writer)
                arg, from_unit = sources[0]
                fallbacks = tuple((arg_for(key), unit) for key, unit in sources[1:])
                steps.append(Bind(name, arg_for(arg), from_unit, copy=name in copied, fallbacks=fallbacks))
            bound[name] = writer

        for position, names, _ in uses:
            for name in sorted(names):
                need(name, position)
            if position in unit_members:
                steps.append(Exec(self._code(position)))
        return steps, xp

    def _input(self, name: str) -> str:
        if name not in self.input_keys:
            key = f"{self.token}-in-{name}"
            self.input_keys[name] = key
            self.tasks[key] = ship(self.namespace[name], self.namespace)
        return self.input_keys[name]

    # -- tasks

    def build(self) -> DaskGraph:
        for u in range(len(self.plan.units)):
            self.unit_keys[u] = f"{self.token}-u{u}"
        for u, unit in enumerate(self.plan.units):
            if unit.fanout:
                self._fanout(u, unit)
            else:
                self._program(u, unit)
        labels = tuple(unit.where(self.graph) for unit in self.plan.units)
        back = sorted({*self.plan.outputs, *self.plan.kernel_needs})
        sources = tuple((name, self._writers(name)) for name in back)
        for name, units in sources:
            for u in units:
                self.needed_from.setdefault(u, set()).add(name)
        self._finish_returns()
        collect_key = f"{self.token}-collect"
        units = [self.unit_keys[u] for u in range(len(self.plan.units))]
        spec = Collect(sources, labels, self.plan.functions, everything=self.plan.serial)
        if len(units) == 1 and self.tasks[units[0]][0] is run_program:
            # One task: it collects its own results (one scheduler round trip, not two).
            _, program, *args = self.tasks.pop(units[0])
            self.tasks[collect_key] = (run_and_collect, program, spec, *args)
        else:
            self.tasks[collect_key] = (collect, spec, *units)
        self._inline_small_inputs()
        n_tasks = sum(1 for v in self.tasks.values() if isinstance(v, tuple))
        inputs = {name: self.namespace[name] for name in self.input_keys}
        return DaskGraph(self.tasks, collect_key, self.input_keys, n_tasks, inputs)

    def _inline_small_inputs(self) -> None:
        from dask.sizeof import sizeof

        keys = set(self.input_keys.values())
        uses: dict[str, int] = {}
        for task in self.tasks.values():
            if isinstance(task, tuple):
                for arg in task[1:]:
                    if isinstance(arg, str) and arg in keys:
                        uses[arg] = uses.get(arg, 0) + 1
        room = INLINE_GRAPH_BYTES
        inline = {}
        for key, count in sorted(uses.items(), key=lambda kv: kv[1]):
            size = sizeof(self.tasks[key].value)
            if size <= INLINE_INPUT_BYTES and size * count <= room:
                inline[key] = self.tasks.pop(key)
                room -= size * count
        if inline:
            for key, task in self.tasks.items():
                if isinstance(task, tuple):
                    self.tasks[key] = tuple(inline.get(a, a) if isinstance(a, str) else a for a in task)

    def _sources(self, name: str, writer: int) -> list[tuple[str, bool]]:
        """(key, is a task's result) to take ``name`` from, as of ``writer``: a loop over nothing
        does not bind its target, so the earlier value follows it."""
        sources = []
        while True:
            u = self.plan.unit_of[writer]
            self.needed_from.setdefault(u, set()).add(name)
            sources.append((self.unit_keys[u], True))
            fan = self.graph.statements[writer].fanout
            if fan is None or name not in fan.target_names:
                return sources
            writer = self.graph.last_writer(name, writer)
            if writer is None or (writer in self.before and self.graph.statements[writer].kind == "compute"):
                if name in self.namespace:
                    sources.append((self._input(name), False))
                return sources
            if writer not in self.plan.unit_of:  # a definition: not a loop target's earlier value
                return sources

    def _writers(self, name: str) -> tuple[int, ...]:
        """The tasks that bind ``name``, last first: a loop over nothing leaves the earlier value."""
        units: list[int] = []
        for s in reversed(self.graph.statements):
            if name in s.writes and s.index in self.plan.unit_of and self.plan.unit_of[s.index] not in units:
                units.append(self.plan.unit_of[s.index])
                if s.fanout is None or name not in s.fanout.target_names:
                    break  # this one surely binds it
        return tuple(units)

    def _program(self, u: int, unit: Unit) -> None:
        members = set(unit.statements)
        uses = []
        for i in unit.statements:
            s = self.graph.statements[i]
            uses.append((i, self._needs(s), set(s.mutates)))
        if self.plan.serial:
            # exec and eval can read any name: send the notebook's names the cell's text mentions.
            mentioned = mentioned_names(self.graph.source, self.namespace) & set(self.namespace)
            first, names, mutated = uses[0]
            uses[0] = (first, names | {n for n in mentioned if not n.startswith("_")}, mutated)
        args: list[Any] = []
        steps, xp = self._setup(members, uses, args)
        definitions = frozenset().union(*(s.writes for s in self.graph.statements if s.kind == "definition"))
        program = Program(
            unit.where(self.graph),
            tuple(steps),
            (),
            xp=xp,
            everything=self.plan.serial,
            settings=self.settings,
            definitions=definitions,
        )
        self.tasks[self.unit_keys[u]] = [run_program, program, *args]

    def _fanout(self, u: int, unit: Unit) -> None:
        s = self.graph.statements[unit.statements[0]]
        fan = s.fanout
        where = unit.where(self.graph)
        filename = self.plan.filename
        # What the element reads, and what the functions it calls read (not what only the iterable reads).
        element_names = set(self.graph.expand_reads(fan.element_reads, s.index)) - set(fan.target_names) - {fan.name}
        args: list[Any] = []
        setup, xp = self._setup(set(), [(s.index, element_names, set())], args)
        assign = _compile_assign(fan.target, filename)
        spec = dict(
            where=where,
            setup=tuple(setup),
            assign_target=assign,
            conditions=tuple(_compile_eval(c, filename) for c in fan.conditions),
            element=_compile_eval(fan.element, filename),
            index=_compile_eval(fan.index, filename) if fan.index is not None else None,
            xp=xp,
            settings=self.settings,
        )
        part_keys = []
        if unit.kernel_items:
            items = self.items[s.index]
            per_task = max(1, -(-len(items) // MAX_FANOUT_TASKS))
            for k in range(0, len(items), per_task):
                key = f"{self.token}-e{u}-{k // per_task}"
                self.tasks[key] = [run_elements, Elements(**spec), Items(items[k : k + per_task]), *args]
                part_keys.append(key)
        else:
            source_args: list[Any] = []
            iterable_names = set(self.graph.expand_reads(fan.iterable_reads, s.index))
            source_setup, source_xp = self._setup(set(), [(s.index, iterable_names, set())], source_args)
            collect_items = _compile_items(fan.iterable, filename)
            source = Program(where, (*source_setup, Exec(collect_items)), (ITEM,), xp=source_xp, settings=self.settings)
            source_key = f"{self.token}-s{u}"
            self.tasks[source_key] = [run_program, source, *source_args]
            slices = max(1, self._threads())  # one per worker thread: the length is known only there
            for k in range(slices):
                key = f"{self.token}-e{u}-{k}"
                self.tasks[key] = [run_elements, Elements(**spec, chunk=(k, slices)), source_key, *args]
                part_keys.append(key)
        container_key: Any = None
        container_bind = None
        if fan.form != "comprehension":
            c_args: list[Any] = []
            c_setup, _ = self._setup(set(), [(s.index, {fan.name}, set())], c_args)
            bind = next((step for step in c_setup if isinstance(step, Bind)), None)
            if bind is None:
                raise NameError(f"name {fan.name!r} is not defined ({where} of the cell appends to it)")
            container_key = c_args[bind.arg]
            container_bind = bind if bind.from_unit else None
        gather_spec = Gather(where, fan.form, fan.name, tuple(sorted(fan.target_names)), assign, container_bind)
        self.tasks[self.unit_keys[u]] = [gather, gather_spec, container_key, *part_keys]

    def _finish_returns(self) -> None:
        """Fill in each program's ``returns`` (names other tasks or the notebook take from it)."""
        for u, names in self.needed_from.items():
            key = self.unit_keys[u]
            task = self.tasks[key]
            if task[0] is run_program:
                task[1] = replace(task[1], returns=tuple(sorted(names)))
        for key, task in list(self.tasks.items()):
            if isinstance(task, list):
                self.tasks[key] = tuple(task)


def build_graph(
    plan: Plan, namespace: dict[str, Any], *, token: str, threads: Callable[[], int], items: dict[int, list]
) -> DaskGraph:
    """The Dask graph of one run of ``plan``; ``items`` holds the fan-out elements the kernel evaluated."""
    return _Builder(plan, namespace, token, threads, items).build()


def kernel_iterable(plan: Plan, unit: Unit) -> bool:
    """Whether a fan-out's iterable reads only what the kernel has before the graph runs."""
    s = plan.graph.statements[unit.statements[0]]
    for name in plan.graph.expand_reads(s.fanout.iterable_reads, s.index):
        writer = plan.graph.last_writer(name, s.index)
        if writer is not None and writer not in plan.kernel_before:
            return False
    return "NamedExpr" not in {type(n).__name__ for n in ast.walk(s.fanout.iterable)}


def iterable_code(plan: Plan, unit: Unit) -> Any:
    s = plan.graph.statements[unit.statements[0]]
    return _compile_eval(s.fanout.iterable, plan.filename)


def _compile_eval(expr: ast.expr, filename: str) -> Any:
    return compile(ast.Expression(body=expr), filename, "eval", dont_inherit=True)


def _compile_assign(target: ast.expr, filename: str) -> Any:
    value = ast.copy_location(ast.Name(ITEM, ast.Load()), target)
    node = ast.copy_location(ast.Assign(targets=[target], value=value), target)
    return compile(
        ast.fix_missing_locations(ast.Module(body=[node], type_ignores=[])), filename, "exec", dont_inherit=True
    )


def _compile_items(iterable: ast.expr, filename: str) -> Any:
    """``__golem_item__ = [*ITERABLE]``: the elements as a list (no name lookups of our own)."""
    listed = ast.copy_location(ast.List(elts=[ast.Starred(iterable, ast.Load())], ctx=ast.Load()), iterable)
    target = ast.copy_location(ast.Name(ITEM, ast.Store()), iterable)
    node = ast.copy_location(ast.Assign(targets=[target], value=listed), iterable)
    return compile(
        ast.fix_missing_locations(ast.Module(body=[node], type_ignores=[])), filename, "exec", dont_inherit=True
    )


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mentioned_names(source: str, namespace: Mapping[str, Any]) -> set[str]:
    """The names a serial cell may reach by string (``exec(code)``): those its text mentions, string literals
    included, and those mentioned by the notebook's strings it mentions."""
    names = set(_IDENTIFIER.findall(source))
    for name in list(names):
        value = namespace.get(name)
        if isinstance(value, str) and len(value) <= 1_000_000:
            names |= set(_IDENTIFIER.findall(value))
    return names


def _kernel_settings() -> dict[str, Any] | None:
    """NumPy's error handling and print options in the kernel: tasks compute and print under the same ones."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    return {"err": numpy.geterr(), "print": numpy.get_printoptions()}


def _source(graph: CellGraph, index: int) -> str:
    text = ast.unparse(graph.statements[index].node).splitlines()[0]
    return text if len(text) <= 70 else text[:67] + "..."
