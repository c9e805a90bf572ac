"""Per-graph metering inside the requestor's scheduler process.

:class:`GraphMeter` is a Dask ``SchedulerPlugin``. Each ``update_graph`` (a cell, a
``compute``, a batch of ``submit``\\ s) opens one *graph execution*: the tasks it brings that are
not computed yet belong to it. Every time a worker reports a task it ran (finished or erred),
the seconds it spent computing it (the worker's own ``startstops``, the same numbers the
provider's meter reads) are charged to the provider the worker is named after, at its GPU rate
when the task holds GPU resources and its CPU rate otherwise (its
:class:`~golem_jupyter.market.pricing.Tariff`). When the last task of a graph is done, the
graph's compute is priced (no start fee: the requestor adds it to an agreement's first paid
graph) and queued for the requestor, which signs vouchers and settles it on-chain.

The meter reads the workers' reports themselves, not the scheduler's transitions, because a
worker cannot stop a task it has started: a task the scheduler gave up on (the budget guard, a
cancelled cell, a timeout) still runs to its end, the provider's meter counts it, and Dask drops
its late report. Such late work is priced as a graph of its own (no tasks, no outputs), so the
bill always equals what the provider metered and the provider has no reason to stop serving.

The requestor talks to the plugin through two scheduler handlers:
``golem_configure`` (each provider's tariff, the budget) and ``golem_finished_graphs`` (a long
poll that hands over finished graphs). Nothing here touches the chain or any key.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from distributed.core import error_message
from distributed.diagnostics.plugin import SchedulerPlugin

from ..amounts import format_wei
from ..errors import BudgetExceeded
from ..market.pricing import Tariff

logger = logging.getLogger(__name__)

DONE = ("memory", "erred", "forgotten")
"""States in which a task no longer needs compute from its graph."""

DIGEST_METADATA = "golem-digest"
"""Task metadata key under which the provider's worker reports a digest of the result."""

NO_DIGEST = "0" * 64

REPORTS = ("task-finished", "task-erred")
"""The worker-to-scheduler messages that say a task ran; each carries its ``startstops``."""

LATE_SECONDS = 0.25
"""How long late work waits for more late work before it is priced as a graph of its own."""

MAX_TAKEN = 10_000
"""Tasks taken from a worker that may still report; a worker that never does (it cancelled the
task before it ended, or died) leaves an entry behind, and the oldest are dropped past this."""


@dataclass
class Usage:
    """Compute one provider delivered within one graph."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    tasks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"cpu_seconds": self.cpu_seconds, "gpu_seconds": self.gpu_seconds, "tasks": self.tasks}


@dataclass
class GraphRun:
    """One graph execution being metered."""

    graph_id: str
    client: str
    outputs: list[Any]
    pending: set[Any]
    n_tasks: int
    started: float = field(default_factory=time.time)
    usage: dict[str, Usage] = field(default_factory=dict)
    erred: int = 0
    budget_exceeded: bool = False


class GraphMeter(SchedulerPlugin):
    """Meters each graph execution and prices it per provider."""

    name = "golem-graph-meter"

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.prices: dict[str, Tariff] = {}
        self.limit: float | None = None
        """Metered cost at which the budget guard stops work (budget minus start fees)."""
        self.cap: int | None = None
        self.spent = 0.0
        self.exhausted = False
        self.graphs: dict[str, GraphRun] = {}
        self.key_graph: dict[Any, str] = {}
        self.carry_over: dict[str, Usage] = {}
        """Compute reported after its graph was priced (a task that ran on after the scheduler
        gave up on it, a lost result recomputed): late work, priced as a graph of its own after
        ``LATE_SECONDS``."""
        self.carry_over_since: float | None = None
        self.taken: OrderedDict[Any, tuple[str | None, bool]] = OrderedDict()
        """Tasks taken from their worker without a report (key: graph id, GPU or not)."""
        self._late: asyncio.TimerHandle | None = None
        self.finished: deque[dict[str, Any]] = deque()
        self.finished_total = 0
        self._finished_event: asyncio.Event | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._finished_event = asyncio.Event()
        scheduler.handlers["golem_configure"] = self.configure
        scheduler.handlers["golem_finished_graphs"] = self.finished_graphs
        scheduler.handlers["golem_meter_state"] = self.state
        scheduler.handlers["golem_flush"] = self.flush
        for op in REPORTS:
            scheduler.stream_handlers[op] = self._metered(scheduler.stream_handlers[op])

    def _metered(self, handler: Any) -> Any:
        """``handler`` for a worker report, charging the report first, whatever Dask then makes of it."""

        def report(**msg: Any) -> Any:
            self._report(msg.get("key"), msg.get("worker"), msg.get("startstops") or ())
            return handler(**msg)

        if inspect.iscoroutinefunction(handler):  # the stream loop awaits only coroutine functions

            async def report_async(**msg: Any) -> Any:
                return await report(**msg)

            return report_async
        return report

    # ------------------------------------------------------------------ handlers

    def configure(
        self, prices: dict[str, list[int]] | None = None, limit: float | None = None, cap: int | None = None
    ) -> dict[str, Any]:
        """Set or update tariffs (``{worker name: Tariff.to_wire()}``) and the budget limit; ``cap`` says
        that the limit is a cell's own budget of that many wei (what the guard's error names)."""
        tariffs = {name: Tariff.from_wire(wire) for name, wire in (prices or {}).items()}  # all valid, or none set
        self.prices.update(tariffs)
        if limit is not None:
            self.limit = float(limit)
            self.exhausted = self.spent >= self.limit
            self.cap = cap
        return self.state()

    async def finished_graphs(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Hand over graphs that finished; wait up to ``timeout`` seconds for one."""
        assert self._finished_event is not None
        if not self.finished:
            self._finished_event.clear()
            try:
                await asyncio.wait_for(self._finished_event.wait(), timeout)
            except TimeoutError:
                pass
        out = list(self.finished)
        self.finished.clear()
        return out

    def flush(self) -> int:
        """Price every open graph now, with what ran so far (the session is closing)."""
        runs = list(self.graphs.values())
        for run in runs:
            run.pending.clear()
            self._finish(run)
        if self._late is not None:
            self._late.cancel()
        self._price_late_work()
        return len(runs)

    def state(self) -> dict[str, Any]:
        return {
            "finished_total": self.finished_total,
            "spent": self.spent,
            "limit": self.limit,
            "exhausted": self.exhausted,
            "open_graphs": len(self.graphs),
            "pending_tasks": sum(len(g.pending) for g in self.graphs.values()),
        }

    # ------------------------------------------------------------------ plugin hooks

    def update_graph(self, scheduler: Any, *, client: str, keys: set, tasks: list, stimulus_id: str, **kw: Any) -> None:
        new = {k for k in tasks if k not in self.key_graph and _state(scheduler, k) not in ("memory", "erred")}
        if not new:
            return
        run = GraphRun(os.urandom(32).hex(), client, sorted(keys, key=str), set(new), len(new))
        self.graphs[run.graph_id] = run
        for key in new:
            self.key_graph[key] = run.graph_id
        if self.exhausted:
            # The budget is spent: nothing more runs, and the user hears why at once.
            asyncio.get_running_loop().call_soon(self._stop_work)

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        graph_id = self.key_graph.get(key)
        if start == "processing" and "startstops" not in kwargs:
            # Taken from its worker without a report (cancelled, failed by the guard, its worker
            # gone): the worker may still be running it, and its report may come later.
            self._remember_taken(key, graph_id)
        if finish == "forgotten":
            self.key_graph.pop(key, None)
        if graph_id is None or finish not in DONE:
            return
        run = self.graphs.get(graph_id)
        if run is None or key not in run.pending:
            return
        run.pending.discard(key)
        if finish == "erred":
            run.erred += 1
        if not run.pending:
            self._finish(run)

    def _remember_taken(self, key: Any, graph_id: str | None) -> None:
        ts = self.scheduler.tasks.get(key)
        self.taken[key] = (graph_id, _holds_gpu(ts))
        self.taken.move_to_end(key)
        while len(self.taken) > MAX_TAKEN:
            self.taken.popitem(last=False)

    # ------------------------------------------------------------------ metering

    def _report(self, key: Any, worker: str | None, startstops: Any) -> None:
        """Charge the compute of one task a worker says it ran."""
        taken = self.taken.pop(key, None)
        computed = [s for s in startstops if s.get("action") == "compute"]
        seconds = sum(s["stop"] - s["start"] for s in computed)
        if seconds <= 0:
            return
        ws = self.scheduler.workers.get(worker)
        provider = str(ws.name) if ws is not None else None
        if provider is None or provider not in self.prices:
            logger.warning("Task %s ran on %s, which has no agreement; it is not paid.", key, worker)
            return
        if taken is not None:
            graph_id, gpu = taken
        else:
            graph_id, gpu = self.key_graph.get(key), _holds_gpu(self.scheduler.tasks.get(key))
        run = self.graphs.get(graph_id) if graph_id else None
        if run is not None:
            usage = run.usage.setdefault(provider, Usage())
        else:
            usage = self.carry_over.setdefault(provider, Usage())
            started = min(s["start"] for s in computed)
            self.carry_over_since = min(started, self.carry_over_since or started)
            if self._late is None:
                self._late = asyncio.get_running_loop().call_later(LATE_SECONDS, self._price_late_work)
        if gpu:
            usage.gpu_seconds += seconds
        else:
            usage.cpu_seconds += seconds
        usage.tasks += 1
        self.spent += self.prices[provider].charge(seconds, gpu=gpu)
        if self.limit is not None and not self.exhausted and self.spent >= self.limit:
            self.exhausted = True
            # Never start transitions from inside a stream handler.
            asyncio.get_running_loop().call_soon(self._stop_work)

    def _price_late_work(self) -> None:
        """Price the late work as a graph of its own (no cell's receipt takes on another's work)."""
        self._late = None
        if not self.carry_over:
            return
        started = self.carry_over_since or time.time()
        run = GraphRun(os.urandom(32).hex(), "", [], set(), 0, started=started, usage=self.carry_over)
        self.carry_over, self.carry_over_since = {}, None
        self.graphs[run.graph_id] = run
        self._finish(run)

    def _finish(self, run: GraphRun) -> None:
        del self.graphs[run.graph_id]
        usage = run.usage
        payouts = {}
        for provider, u in usage.items():
            amount = self.prices[provider].price(u.cpu_seconds, u.gpu_seconds)
            payouts[provider] = {**u.as_dict(), "amount": amount}
        self.finished.append(
            {
                "graph_id": run.graph_id,
                "n_tasks": run.n_tasks,
                "erred": run.erred,
                "started": run.started,
                "finished": time.time(),
                "payouts": payouts,
                "result_root": self._result_root(run),
                "budget_exceeded": run.budget_exceeded,
                "outputs": [str(key) for key in run.outputs],
            }
        )
        self.finished_total += 1
        if self._finished_event is not None:
            self._finished_event.set()

    def _result_root(self, run: GraphRun) -> str:
        """Merkle root over (output key, digest of its result as the provider reported it)."""
        leaves = []
        for key in run.outputs:
            ts = self.scheduler.tasks.get(key)
            digest = (ts.metadata or {}).get(DIGEST_METADATA, NO_DIGEST) if ts is not None else NO_DIGEST
            leaves.append(hashlib.sha256(f"{key}\0{digest}".encode()).digest())
        return "0x" + merkle_root(leaves).hex()

    # ------------------------------------------------------------------ budget guard

    def _stop_work(self) -> None:
        """Fail every task still to run with :class:`BudgetExceeded`; what ran stays metered."""
        if self.cap is not None:
            spent = f"This cell's budget of {format_wei(self.cap)} is spent"
            advice = "Raise it with --budget to run more."
        else:
            spent = f"The session's budget is spent ({format_wei(round(self.spent))} of metered work)"
            advice = "Raise it with `%golem budget X` (GolemCluster.set_budget) to run more."
        error = BudgetExceeded(
            f"{spent}: the rest of the graph was cancelled, and what ran is settled and paid. {advice}"
        )
        message = error_message(error)
        stimulus_id = f"golem-budget-{time.time()}"
        for run in list(self.graphs.values()):
            run.budget_exceeded = True
            for key in list(run.pending):
                ts = self.scheduler.tasks.get(key)
                if ts is None or ts.state not in ("processing", "queued", "no-worker"):
                    continue  # waiting tasks fail with the task they wait on
                details = dict(
                    cause=key,
                    exception=message["exception"],
                    traceback=message["traceback"],
                    exception_text=message["exception_text"],
                    traceback_text=message["traceback_text"],
                )
                if ts.state == "processing":
                    details["worker"] = ts.processing_on.address
                recs, client_msgs, worker_msgs = self.scheduler._transition(key, "erred", stimulus_id, **details)
                self.scheduler._transitions(recs, client_msgs, worker_msgs, stimulus_id)
                self.scheduler.send_all(client_msgs, worker_msgs)


def merkle_root(leaves: list[bytes]) -> bytes:
    """SHA-256 Merkle root; an odd node is paired with itself; no leaves gives 32 zero bytes."""
    if not leaves:
        return b"\0" * 32
    level = leaves
    while len(level) > 1:
        if len(level) % 2:
            level = [*level, level[-1]]
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def _holds_gpu(ts: Any) -> bool:
    return bool(ts is not None and ts.resource_restrictions and ts.resource_restrictions.get("GPU"))


def _state(scheduler: Any, key: Any) -> str | None:
    ts = scheduler.tasks.get(key)
    return ts.state if ts is not None else None
