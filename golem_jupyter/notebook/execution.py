"""One run of a ``%%golem`` cell, in the kernel: definitions, the graph, the namespace update.

The notebook namespace changes all together or not at all: definitions run in the kernel
before the graph but are undone if anything fails; the values the graph computed are decoded
(restricted decoder) before a single name is written; definitions that needed those values run
last, and a failure there undoes everything too.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from dask.utils import format_time
from distributed.scheduler import NoValidWorkerError, NoWorkerError

from ..errors import BudgetExceeded, GolemError, MarketError
from ..trust import RemoteTaskError
from ..worker.runner import CellTaskError
from .cellgraph import CellGraph
from .display import ProgressView
from .planner import Plan, build_graph, iterable_code, kernel_iterable
from .receipts import Receipt
from .session import Session
from .transport import decode_value

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
    """Remembers the notebook names a cell touches, to put them back if the cell fails."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.saved: dict[str, Any] = {}

    def remember(self, names: Any) -> None:
        for name in names:
            if name not in self.saved:
                self.saved[name] = self.namespace.get(name, _MISSING)

    def rollback(self) -> None:
        for name, value in self.saved.items():
            if value is _MISSING:
                self.namespace.pop(name, None)
            else:
                self.namespace[name] = value


@dataclass(frozen=True)
class RunOptions:
    timeout: float | None = None
    resources: dict[str, int] | None = None
    workers: list[str] | None = None


def register_source(filename: str, text: str) -> None:
    """Let tracebacks (and IPython) show the cell's lines under ``filename``."""
    lines = [line + "\n" for line in text.splitlines()]
    linecache.cache[filename] = (len(text), None, lines, filename)


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

    def run(self, options: RunOptions) -> None:
        __tracebackhide__ = True
        try:
            items = self._kernel_phase()
            if self.plan.units:
                values = self._graph_phase(items, options)
            else:
                values = {"values": b"", "types": {}, "printed": []}
            decoded = self._decode(values)
            self._commit(decoded)
        except BaseException:
            self.transaction.rollback()
            raise

    # -- before the graph

    def _kernel_phase(self) -> dict[int, list]:
        """Run the definitions the kernel can run now and evaluate fan-out iterables, in cell order."""
        fanouts = {u.statements[0]: u for u in self.plan.units if u.fanout}
        items: dict[int, list] = {}
        for index in sorted([*self.plan.kernel_definitions, *fanouts]):
            statement = self.graph.statements[index]
            if index in fanouts:
                unit = fanouts[index]
                unit.kernel_items = kernel_iterable(self.plan, unit)
                if unit.kernel_items:
                    items[index] = list(eval(iterable_code(self.plan, unit), self.namespace))
                continue
            self.transaction.remember(statement.writes)
            self._exec_in_kernel(index)
        return items

    def _exec_in_kernel(self, index: int) -> None:
        node = self.graph.statements[index].node
        code = compile(ast.Module(body=[node], type_ignores=[]), self.plan.filename, "exec", dont_inherit=True)
        exec(code, self.namespace)

    # -- the graph

    def _graph_phase(self, items: dict[int, list], options: RunOptions) -> dict[str, Any]:
        __tracebackhide__ = True
        session = self.session
        token = f"golem-cell-{os.urandom(8).hex()}"
        dask_graph = build_graph(self.plan, self.namespace, token=token, threads=session.threads, items=items)
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
                f"{format_time(error.timeout)}): the providers it rented are gone, or stopped serving. "
                "`%golem status` shows them; `%golem close` and `%golem connect` rent new ones."
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

    def _decode(self, result: dict[str, Any]) -> dict[str, Any]:
        """The cell's results, through the restricted decoder; a refusal writes nothing."""
        if not result["types"]:
            return {}
        try:
            decoded = decode_value(result["values"])
        except GolemError as error:
            listed = ", ".join(f"{name} ({kind})" for name, kind in sorted(result["types"].items(), key=str))
            raise GolemError(f"Nothing was written back: {error} The cell's results: {listed}.") from error
        # Provider bytes choose nothing but values: only the names this cell writes may come back.
        if type(decoded) is not dict or not set(decoded) <= set(self.plan.outputs):
            raise GolemError("Nothing was written back: a provider returned names this cell does not assign.")
        return decoded

    def _commit(self, decoded: dict[str, Any]) -> None:
        """Write the cell's results into the namespace, then the definitions that waited for them."""
        plan = self.plan
        self.transaction.remember([*decoded, *plan.deleted])
        for name in plan.deleted:
            self.namespace.pop(name, None)
        self.namespace.update(decoded)
        for index in plan.late_definitions:
            statement = self.graph.statements[index]
            self.transaction.remember(statement.writes)
            self._exec_in_kernel(index)
            for name in statement.writes:  # a later statement of the cell has the last word
                if name in decoded and plan.outputs.get(name, -1) > index:
                    self.namespace[name] = decoded[name]


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
