"""One run of a ``%%golem`` cell, in the kernel: kernel statements, the graph, the namespace update.

The notebook namespace changes all together or not at all: the statements the plan runs in the
kernel before the graph (definitions, views, hidden state, ...) are undone if anything fails (the
names they bind, the contents of the objects they change in place, the module state they touch:
``random``'s, NumPy's legacy generator and settings); the values the graph computed are decoded
(restricted decoder) before a single name is written; a name the cell only changed in place is
written into the notebook's own object; the kernel statements that needed the graph's values run
last, and a failure there undoes everything too.
"""

from __future__ import annotations

import linecache
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dask.utils import format_time
from distributed.scheduler import KilledWorker, NoValidWorkerError, NoWorkerError

from ..errors import BudgetExceeded, GolemError, MarketError
from ..trust import RemoteTaskError
from ..worker.runner import CellTaskError
from .cellgraph import CellGraph
from .display import ProgressView
from .planner import Plan, build_graph, iterable_code, kernel_iterable, mentioned_names
from .receipts import Receipt
from .session import Session
from .transport import assign_in_place, decode_value, snapshot_contents

PROGRESS_SECONDS = 0.25
_MISSING = object()


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a provider, as text (shown as the cause)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class NamespaceTransaction:
    """Remembers what a cell touches in the kernel, to put it back if the cell fails: the notebook names it
    binds, the contents of the objects it changes in place, the module state it touches."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.saved: dict[str, Any] = {}
        self.everything: dict[str, Any] | None = None
        self.contents: list[tuple[Any, Any]] = []
        self._objects: set[int] = set()
        self.hidden: list[Callable[[], None]] | None = None

    def remember(self, names: Any) -> None:
        for name in names:
            if name not in self.saved:
                self.saved[name] = self.namespace.get(name, _MISSING)

    def remember_everything(self) -> None:
        """Before code that may bind any name (a star import, exec in the kernel)."""
        if self.everything is None:
            self.everything = dict(self.namespace)

    def remember_contents(self, obj: Any) -> None:
        """Before ``obj`` is changed in place."""
        if id(obj) in self._objects:
            return
        snapshot = snapshot_contents(obj)
        if snapshot is not None:
            self._objects.add(id(obj))
            self.contents.append((obj, snapshot))

    def remember_hidden_state(self) -> None:
        """Before a statement touches module state: what can be put back of it."""
        if self.hidden is None:
            self.hidden = _hidden_state_restorers()

    def rollback(self) -> None:
        for restore in self.hidden or ():
            restore()
        for obj, snapshot in reversed(self.contents):
            assign_in_place(obj, snapshot)
        if self.everything is not None:
            for name in [n for n in self.namespace if n not in self.everything]:
                del self.namespace[name]
            for name, value in self.everything.items():
                if self.namespace.get(name, _MISSING) is not value:
                    self.namespace[name] = value
        for name, value in self.saved.items():
            if value is _MISSING:
                self.namespace.pop(name, None)
            else:
                self.namespace[name] = value


def _hidden_state_restorers() -> list[Callable[[], None]]:
    """Functions that put back the module state a cell may change in the kernel, as it is now."""
    restorers = []
    random = sys.modules.get("random")
    if random is not None:
        state = random.getstate()
        restorers.append(lambda: random.setstate(state))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        legacy = numpy.random.mtrand._rand
        legacy_state = legacy.get_state(legacy=False)
        err, printing = numpy.geterr(), numpy.get_printoptions()
        restorers.append(lambda: legacy.set_state(legacy_state))
        restorers.append(lambda: numpy.seterr(**err))
        restorers.append(lambda: numpy.set_printoptions(**printing))
    return restorers


@dataclass(frozen=True)
class RunOptions:
    timeout: float | None = None
    resources: dict[str, int] | None = None
    workers: list[str] | None = None


def register_source(filename: str, text: str) -> None:
    """Let tracebacks (and IPython) show the cell's lines under ``filename``."""
    lines = [line + "\n" for line in text.splitlines()]
    linecache.cache[filename] = (len(text), None, lines, filename)


MAX_VERIFIED_RUNS = 3
"""Runs of a cell's graph before a cell whose providers keep being voted down gives up (writing nothing)."""


class CellRun:
    """Runs one planned cell on a session and updates the namespace."""

    def __init__(self, plan: Plan, namespace: dict[str, Any], session: Session | None, view: ProgressView) -> None:
        self.plan = plan
        self.graph: CellGraph = plan.graph
        self.namespace = namespace
        self.session = session
        self.view = view
        self.transaction = NamespaceTransaction(namespace)
        self.receipt: Receipt | None = None
        self._mentioned: set[str] | None = None
        self.shipped: dict[str, Any] = {}

    def run(self, options: RunOptions) -> None:
        __tracebackhide__ = True
        try:
            items = self._kernel_phase()
            if self.plan.units:
                values = self._verified_graph_phase(items, options)
            else:
                values = {"values": b"", "types": {}, "printed": []}
            decoded = self._decode(values)
            self._commit(decoded)
            self._keep_only_out()
        except BaseException:
            self.transaction.rollback()
            raise

    # -- before the graph

    def _kernel_phase(self) -> dict[int, list]:
        """Run the definitions the kernel can run now and evaluate fan-out iterables, in cell order."""
        fanouts = {u.statements[0]: u for u in self.plan.units if u.fanout}
        items: dict[int, list] = {}
        for index in sorted([*self.plan.kernel_before, *fanouts]):
            if index in fanouts:
                unit = fanouts[index]
                unit.kernel_items = kernel_iterable(self.plan, unit)
                if unit.kernel_items:
                    items[index] = list(eval(iterable_code(self.plan, unit), self.namespace))
                continue
            self._exec_in_kernel(index)
        return items

    def _exec_in_kernel(self, index: int) -> None:
        """Run statement ``index`` in the notebook's namespace, remembering what it may change."""
        statement = self.graph.statements[index]
        self.transaction.remember(statement.writes)
        if statement.star_import or self.graph.serial_in_kernel:
            self.transaction.remember_everything()
        for name in statement.mutates:
            if name in self.namespace:
                self.transaction.remember_contents(self.namespace[name])
        if statement.hidden or self.graph.serial_in_kernel:
            self.transaction.remember_hidden_state()
        exec(self.plan.code(index), self.namespace)

    # -- the graph

    def _verified_graph_phase(self, items: dict[int, list], options: RunOptions) -> dict[str, Any]:
        """The graph's results, from a run in which verification voted no provider down.

        A provider outvoted while the graph ran may have fed unchecked wrong values to other tasks of
        it; it is gone from the session now, so the graph runs again (nothing was written yet)."""
        __tracebackhide__ = True
        for _ in range(MAX_VERIFIED_RUNS):
            faults = self.session.faults()
            values = self._graph_phase(items, options)
            if self.session.faults() == faults:
                return values
            print("golem: a provider returned a wrong result and was reported; the cell's graph runs again without it.")
        raise GolemError(
            f"Providers returned wrong results in {MAX_VERIFIED_RUNS} runs of this cell's graph; nothing was written "
            "back. `%golem status` lists them; they were reported and dropped."
        )

    def _graph_phase(self, items: dict[int, list], options: RunOptions) -> dict[str, Any]:
        __tracebackhide__ = True
        session = self.session
        token = f"golem-cell-{os.urandom(8).hex()}"
        dask_graph = build_graph(self.plan, self.namespace, token=token, threads=session.threads, items=items)
        self.shipped = dask_graph.inputs
        client = session.client
        started = time.monotonic()
        try:
            futures = client.get(
                dask_graph.tasks,
                [dask_graph.collect_key],
                sync=False,
                resources=options.resources,
                workers=options.workers,
                allow_other_workers=False if options.workers else None,
            )
        except Exception as error:
            names = ", ".join(sorted(dask_graph.input_keys)) or "none"
            raise GolemError(f"Could not send the cell's graph (inputs: {names}): {error}") from error
        future = futures[0]
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        note = ""
        try:
            while not done.wait(PROGRESS_SECONDS):
                elapsed = time.monotonic() - started
                self.view.update(session.progress(token, dask_graph.n_tasks, started))
                if options.timeout is not None and elapsed > options.timeout:
                    note = f"Stopped after the {options.timeout:g} s timeout; what ran is paid."
                    raise TimeoutError(f"The cell ran longer than --timeout {options.timeout:g} s and was cancelled.")
            result = future.result()
            for _, text in result["printed"]:  # before the receipt, as the cell's own output
                sys.stdout.write(text)
            return result
        except KeyboardInterrupt:
            note = "Interrupted; the rest of the graph was cancelled and what ran is paid."
            raise
        except BudgetExceeded:
            note = "Stopped: the budget is spent; what ran is paid."
            raise
        except (NoWorkerError, NoValidWorkerError) as error:
            note = "Failed: no provider was left to run the rest of the graph; what ran is paid."
            raise MarketError(
                f"No provider of this session is left to run the cell (the scheduler waited "
                f"{format_time(error.timeout)}): the providers it rented are gone, or stopped serving"
                f"{_why_workers_ended(session)}. "
                "`%golem status` shows them; `%golem close` and `%golem connect` rent new ones."
            ) from None
        except KilledWorker:
            note = "Failed: a task ended the workers that ran it; the rest of the graph was cancelled."
            raise MarketError(
                f"A task of this cell ended every worker that ran it{_why_workers_ended(session)}. Split the work "
                "into smaller tasks, or rent providers with more memory (`%golem providers` lists it)."
            ) from None
        except CellTaskError as error:
            note = f"Failed: {error.type_name} at {error.where}; the rest of the graph was cancelled."
            raise_task_error(error)
        finally:
            if not future.done() or future.status != "finished":
                client.cancel(futures, force=True)
            self._finish(session, dask_graph.collect_key, dask_graph.n_tasks, time.monotonic() - started, note)

    def _finish(self, session: Session, collect_key: str, n_tasks: int, elapsed: float, note: str) -> None:
        try:
            receipt = session.receipt(collect_key, n_tasks, elapsed, note)
        except Exception as error:  # noqa: BLE001 (the receipt must not hide the cell's own outcome)
            receipt = Receipt((), 0, n_tasks, elapsed, "pending", note=f"{note} (receipt unavailable: {error})".strip())
        self.receipt = receipt
        self.view.finish(receipt)
        session.watch_settlement(receipt, self.view.settled)

    # -- after the graph

    def _decode(self, result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], frozenset[str]]:
        """The cell's results (values, functions to rebuild, names changed in place), through the restricted
        decoder; a refusal writes nothing. A name that holds a notebook object the graph was sent (or an item of
        one) is that object."""
        if not result["types"] and not result["values"]:
            return {}, {}, frozenset()
        try:
            decoded = decode_value(result["values"])
        except GolemError as error:
            listed = ", ".join(f"{name} ({kind})" for name, kind in sorted(result["types"].items(), key=str))
            raise GolemError(f"Nothing was written back: {error} The cell's results: {listed}.") from error
        malformed = GolemError("Nothing was written back: a provider returned something other than the cell's names.")
        if type(decoded) is not dict or set(decoded) != {"values", "functions", "in_place", "references"}:
            raise malformed
        values, functions, in_place = decoded["values"], decoded["functions"], decoded["in_place"]
        references = decoded["references"]
        if type(values) is not dict or type(functions) is not dict or type(in_place) is not list:
            raise malformed
        if type(references) is not dict:
            raise malformed
        names = [*values, *functions, *in_place, *references]
        if not all(type(name) is str for name in names):
            raise malformed
        # Provider bytes choose nothing but values: only the names this cell writes may come back.
        if not all(self._may_come_back(name) for name in names) or not set(functions) <= set(self.plan.outputs):
            raise GolemError("Nothing was written back: a provider returned names this cell does not assign.")
        for name, reference in references.items():
            values[name] = self._referenced(name, reference)
        return values, functions, frozenset(in_place)

    def _referenced(self, name: str, reference: Any) -> Any:
        """The notebook object a provider says ``name`` holds: one the graph was sent, or an item of one."""
        refused = GolemError(f"Nothing was written back: a provider returned a malformed reference for {name!r}.")
        if type(reference) is not tuple or len(reference) not in (2, 3) or reference[1] not in self.shipped:
            raise refused
        held = self.shipped[reference[1]]
        if reference[0] == "input" and len(reference) == 2:
            return held
        if reference[0] != "item" or len(reference) != 3:
            raise refused
        key = reference[2]
        if type(held) in (list, tuple) and type(key) is int and -len(held) <= key < len(held):
            return held[key]
        if type(held) is dict and type(key) in (int, str, float, bytes, bool, type(None)) and key in held:
            return held[key]
        raise refused

    def _may_come_back(self, name: str) -> bool:
        plan = self.plan
        if name in plan.outputs or name in plan.kernel_needs:
            return True
        if not plan.serial or not name.isidentifier() or name.startswith("__"):
            return False
        if plan.out is not None and name not in plan.out:
            return False
        # A serial cell may bind names by string (exec): new ones, or those it mentions.
        if self._mentioned is None:
            self._mentioned = mentioned_names(self.graph.source, self.namespace)
        return name not in self.namespace or name in self._mentioned

    def _commit(self, decoded: tuple[dict[str, Any], dict[str, Any], frozenset[str]]) -> None:
        """Write the cell's results into the namespace, then run the kernel statements that waited for them."""
        values, functions, found_in_place = decoded
        plan = self.plan
        in_place = plan.in_place | (found_in_place & set(values))
        self.transaction.remember([*values, *functions, *plan.deleted])
        for name in plan.deleted:
            self.namespace.pop(name, None)
        for name, value in values.items():
            old = self.namespace.get(name, _MISSING)
            if name in in_place and old is not _MISSING and old is not value:
                # Changed in place by the cell: the notebook's own object takes the new contents, so that views of
                # it and other references see the change, as in plain Python.
                self.transaction.remember_contents(old)
                if assign_in_place(old, value):
                    continue
            self.namespace[name] = value
        for name, spec in functions.items():
            self.namespace[name] = self._rebuild_function(name, spec)
        for index in plan.kernel_after:
            statement = self.graph.statements[index]
            self._exec_in_kernel(index)
            for name in statement.writes:  # a later statement of the graph has the last word
                if name in values and plan.outputs.get(name, -1) > index:
                    self.namespace[name] = values[name]

    def _rebuild_function(self, name: str, spec: Any) -> types.FunctionType:
        """A function a task defined (a lambda in a loop), rebuilt from the kernel's own code: the provider sends
        which of the cell's functions it is, its defaults and attributes, never code."""
        refused = GolemError(f"Nothing was written back: a provider returned a malformed function for {name!r}.")
        if type(spec) is not tuple or len(spec) != 4:
            raise refused
        position, defaults, kwdefaults, attributes = spec
        if type(position) is not int or not 0 <= position < len(self.plan.functions):
            raise refused
        if defaults is not None and type(defaults) is not tuple:
            raise refused
        for mapping in (kwdefaults, attributes):
            if mapping is not None and (type(mapping) is not dict or not all(type(k) is str for k in mapping)):
                raise refused
        code = self.plan.functions[position]
        function = types.FunctionType(code, self.namespace, code.co_name, defaults, None)
        function.__qualname__ = code.co_qualname
        function.__kwdefaults__ = kwdefaults
        function.__dict__.update(attributes or {})
        return function

    def _keep_only_out(self) -> None:
        """``--out``: names outside it that the kernel statements bound (or the kernel needed) are put back."""
        out = self.plan.out
        if out is None:
            return
        for name, value in self.transaction.saved.items():
            if name in out or name in self.plan.deleted:
                continue
            if value is _MISSING:
                self.namespace.pop(name, None)
            else:
                self.namespace[name] = value


def raise_task_error(error: CellTaskError) -> None:
    """Raise the exception a provider reported, of its own type, with the cell's traceback as its cause."""
    __tracebackhide__ = True
    original: BaseException | None = None
    if error.payload:
        try:
            decoded = decode_value(error.payload)
            original = decoded if isinstance(decoded, BaseException) else None
        except GolemError:
            original = None
    text = format_remote_traceback(error)
    if original is None:
        original = RemoteTaskError(error.type_name, error.message, text)
    original.__traceback__ = None
    raise original from RemoteTraceback(text)


def format_remote_traceback(error: CellTaskError) -> str:
    """The provider's traceback, with source lines from the kernel (the cell is registered there)."""
    frames = []
    for filename, lineno, name in error.frames:
        line = linecache.getline(filename, lineno).strip()
        frames.append(traceback.FrameSummary(filename, lineno, name, line=line))
    body = "".join(traceback.StackSummary.from_list(frames).format())
    return (
        f"Traceback on provider {error.provider} ({error.where} of the cell):\n{body}{error.type_name}: {error.message}"
    )


def _why_workers_ended(session: Session) -> str:
    """What the providers said about the workers that ended in this session, as a clause."""
    lost = getattr(session.cluster, "lost_workers", None) or {}
    if not lost:
        return ""
    return " (" + "; ".join(f"provider {provider}: {reason}" for provider, reason in lost.items()) + ")"
