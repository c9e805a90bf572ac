"""From a cell's dataflow DAG (:mod:`.cellgraph`) to the tasks of a Dask graph.

Each compute statement is a task, except that statements which change the same object in
place are run together in one task (one namespace, in cell order), so that aliases behave as in
plain Python. Fan-out statements become one task per element (or per slice of the elements)
and a task that gathers them in order. Definitions run in the kernel; a task that needs one
executes its source again in its own namespace, so that its functions read the task's values.

Names a task needs come from: the notebook (one graph key per name, sent once per graph), the
task that last wrote them, or a definition of the cell (re-executed). A last task collects the
names that go back to the notebook.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from .cellgraph import CellGraph, Statement
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
    kernel_definitions: list[int]
    """Definitions run in the kernel before the graph, in cell order."""
    late_definitions: list[int]
    """Definitions that need values the graph computes: run in the kernel after it."""
    outputs: dict[str, int]
    """Name -> statement that last wrote it, for every name written back to the notebook."""
    deleted: frozenset[str]
    serial: bool = False
    unit_of: dict[int, int] = field(default_factory=dict)

    def describe(self) -> str:
        """The plan as text, for ``--dry-run``."""
        graph = self.graph
        lines = []
        if graph.serial_reason:
            lines.append(f"Serial: {graph.serial_reason}")
        for i in self.kernel_definitions + self.late_definitions:
            when = "before" if i in self.kernel_definitions else "after"
            lines.append(f"kernel ({when} the graph), line {graph.statements[i].node.lineno}: {_source(graph, i)}")
        for u, unit in enumerate(self.units):
            deps = sorted(
                {self.unit_of[p] for s in unit.statements for p in graph.predecessors(s) if p in self.unit_of}
            )
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
                lines.append(f"task {u + 1}, {unit.where(graph)}: writes {', '.join(writes) or 'nothing'}{after}")
        back = ", ".join(sorted(self.outputs)) or "nothing"
        lines.append(
            f"back to the notebook: {back}" + (f"; deleted: {', '.join(sorted(self.deleted))}" if self.deleted else "")
        )
        return "\n".join(lines)


def plan_cell(graph: CellGraph, *, filename: str, out: frozenset[str] | None = None) -> Plan:
    """Decide which statements run in the kernel, which together, and what comes back."""
    statements = graph.statements
    kernel, late = _split_definitions(graph)
    if graph.serial_reason:
        compute = [s.index for s in statements if s.kind == "compute"]
        units = [Unit(tuple(s.index for s in statements))] if compute else []
        serial = True
    else:
        units = _group(graph)
        serial = False
    unit_of = {s: u for u, unit in enumerate(units) for s in unit.statements}
    outputs = {}
    for name in graph.outputs:
        if out is not None and name not in out:
            continue
        writer = graph.last_writer(name, len(statements))
        if writer is not None and statements[writer].kind == "compute":
            outputs[name] = writer
    deleted = graph.deleted if out is None else graph.deleted & out
    return Plan(graph, filename, units, kernel, late, outputs, deleted, serial, unit_of)


def _split_definitions(graph: CellGraph) -> tuple[list[int], list[int]]:
    """Definitions that can run in the kernel at once, and those needing computed values."""
    ready: set[int] = set()
    kernel, late = [], []
    for s in graph.statements:
        if s.kind != "definition":
            continue
        writers = [graph.last_writer(n, s.index) for n in s.reads]
        if all(w is None or w in ready for w in writers):
            ready.add(s.index)
            kernel.append(s.index)
        else:
            late.append(s.index)
    return kernel, late


def _group(graph: CellGraph) -> list[Unit]:
    """Tasks: compute statements, with those that mutate a shared object merged (see module doc)."""
    statements = graph.statements
    compute = [s.index for s in statements if s.kind == "compute"]
    parent = {i: i for i in compute}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> bool:
        ra, rb = find(a), find(b)
        if ra == rb:
            return False
        parent[max(ra, rb)] = min(ra, rb)
        return True

    aliases = _alias_classes(graph, compute)
    plain = {j for j in compute if (fan := statements[j].fanout) is not None and fan.name in aliases}
    for j in compute:
        s = statements[j]
        if s.fanout is not None and j not in plain:
            continue
        source = _aliased_name(s.node)
        if source is not None:  # `b = a` runs with a's task, so that b and a stay one object
            writer = graph.last_writer(source, j)
            if writer is not None and writer in parent and (statements[writer].fanout is None or writer in plain):
                union(writer, j)
        for name in s.mutates:
            # An object changed in place is the same under every alias: earlier statements that
            # touch it run with the change; so do later ones, when it has another name.
            names = aliases.get(name, {name})
            for k in compute:
                if k >= j and len(names) == 1:
                    break
                other = statements[k]
                if k != j and (other.fanout is None or k in plain) and names & (other.reads | other.writes):
                    union(k, j)
    reach = _reachability(graph)
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
                    changed |= union(min(members), k)
        if not changed:
            changed = _merge_cycles(compute, find, union, reach)
    groups = {}
    for i in compute:
        groups.setdefault(find(i), []).append(i)
    units = []
    for root in sorted(groups):
        members = sorted(groups[root])
        single = len(members) == 1 and statements[members[0]].fanout is not None and members[0] not in plain
        units.append(Unit(tuple(members), fanout=single))
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


def _reachability(graph: CellGraph) -> dict[int, set[int]]:
    """For each statement, the statements that (transitively) must run after it."""
    after: dict[int, set[int]] = {s.index: set() for s in graph.statements}
    for i, j in graph.edges:
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
                    merged |= union(a, b)
    return merged


# ---------------------------------------------------------------------------- the Dask graph


@dataclass
class DaskGraph:
    tasks: dict[str, Any]
    collect_key: str
    input_keys: dict[str, str]
    n_tasks: int


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
        self.codes: dict[int, Any] = {}

    # -- names

    def _writer(self, name: str, before: int) -> int | None:
        return self.graph.last_writer(name, before)

    def _needs(self, s: Statement) -> set[str]:
        return set(self.graph.effective_reads(s.index)) | set(s.mutates) | set(s.deletes)

    def _code(self, index: int) -> Any:
        if index not in self.codes:
            node = self.graph.statements[index].node
            self.codes[index] = compile(
                ast.Module(body=[node], type_ignores=[]), self.plan.filename, "exec", dont_inherit=True
            )
        return self.codes[index]

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

        def need(name: str, at: int, mutated: bool, depth: int = 0) -> None:
            nonlocal xp
            writer = self._writer(name, at)
            if writer is not None and writer in unit_members:
                return
            if name in bound and bound[name] == writer:
                return  # bound once per task: aliases made in the task stay aliases
            if writer is None:
                if name in self.namespace:
                    key = self._input(name)
                    steps.append(Bind(name, arg_for(key), from_unit=False, copy=mutated))
                elif name == "xp":
                    xp = True
                else:
                    return  # a builtin, or a NameError the statement will raise where plain Python would
            elif self.graph.statements[writer].kind == "definition":
                if depth > 50:
                    return
                for dep in sorted(self.graph.statements[writer].reads):
                    need(dep, writer, False, depth + 1)
                steps.append(Exec(self._code(writer)))
            else:
                sources = self._sources(name, writer)
                arg, from_unit = sources[0]
                fallbacks = tuple((arg_for(key), unit) for key, unit in sources[1:])
                steps.append(Bind(name, arg_for(arg), from_unit, copy=mutated, fallbacks=fallbacks))
            bound[name] = writer

        # Where a task changes anything in place, every name it binds from elsewhere is copied
        # (once per task): other tasks may hold the same object, and an alias made in the task
        # (`b = a; b.append(1)`) reaches it under another name.
        changes = any(mutated for _, _, mutated in uses)
        for position, names, _ in uses:
            for name in sorted(names):
                need(name, position, changes)
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
        sources = tuple((name, self._writers(name)) for name in sorted(self.plan.outputs))
        for name, units in sources:
            for u in units:
                self.needed_from.setdefault(u, set()).add(name)
        self._finish_returns()
        collect_key = f"{self.token}-collect"
        units = [self.unit_keys[u] for u in range(len(self.plan.units))]
        if len(units) == 1 and self.tasks[units[0]][0] is run_program:
            # One task: it collects its own results (one scheduler round trip, not two).
            _, program, *args = self.tasks.pop(units[0])
            self.tasks[collect_key] = (run_and_collect, program, Collect(sources, labels), *args)
        else:
            self.tasks[collect_key] = (collect, Collect(sources, labels), *units)
        self._inline_small_inputs()
        n_tasks = sum(1 for v in self.tasks.values() if isinstance(v, tuple))
        return DaskGraph(self.tasks, collect_key, self.input_keys, n_tasks)

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
            if writer is None:
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
            mentioned = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", self.graph.source)) & set(self.namespace)
            first, names, mutated = uses[0]
            uses[0] = (first, names | {n for n in mentioned if not n.startswith("_")}, mutated)
        args: list[Any] = []
        steps, xp = self._setup(members, uses, args)
        program = Program(unit.where(self.graph), tuple(steps), (), xp=xp, everything=self.plan.serial)
        self.tasks[self.unit_keys[u]] = [run_program, program, *args]

    def _fanout(self, u: int, unit: Unit) -> None:
        s = self.graph.statements[unit.statements[0]]
        fan = s.fanout
        where = unit.where(self.graph)
        filename = self.plan.filename
        element_names = set(self.graph.effective_reads(s.index)) - set(fan.target_names) - {fan.name}
        element_names -= set(fan.iterable_reads) - set(fan.element_reads)
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
            source_setup, source_xp = self._setup(set(), [(s.index, set(fan.iterable_reads), set())], source_args)
            collect_items = _compile_items(fan.iterable, filename)
            source = Program(where, (*source_setup, Exec(collect_items)), (ITEM,), xp=source_xp)
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
                program: Program = task[1]
                task[1] = Program(program.where, program.steps, tuple(sorted(names)), program.xp, program.everything)
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
    for name in s.fanout.iterable_reads:
        writer = plan.graph.last_writer(name, s.index)
        if writer is not None and writer not in plan.kernel_definitions:
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


def _source(graph: CellGraph, index: int) -> str:
    text = ast.unparse(graph.statements[index].node).splitlines()[0]
    return text if len(text) <= 70 else text[:67] + "..."
