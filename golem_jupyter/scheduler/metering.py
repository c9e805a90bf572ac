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

A worker's report is a claim, not a measurement: the provider controls its worker and can send
any report it likes, as often as it likes. So the meter charges only what the scheduler itself
observed (DESIGN.md section 6). A task is charged once per (key, run), and only if the scheduler
had sent it to that worker and had no report of that run yet; the seconds charged are the
worker's own ``startstops`` (the same numbers the provider's meter reads), but at most what the
scheduler saw, on its own monotonic clock:

* per task, the time from the scheduler sending the task to receiving the report, times the
  worker's threads;
* per worker, the time during which it had work out (sent and not yet reported), times the
  number of tasks it could have been running then (as many as it had out, at most its threads).
  Without this, tasks sent to a worker together (its queue, tasks pinned to it) would each be
  bounded by their own waiting time, and a worker claiming that every task took as long as it
  waited would be paid many times the time that passed.

An honest worker computes a task strictly between the scheduler sending it and receiving its
report, and runs at most that many tasks at a time, so neither bound ever cuts its bill (up to
``OBSERVED_SLACK_SECONDS`` and ``CLOCK_RATE_SLACK``, see there), and the bill equals what the
provider metered. A duplicate report, a report of a task the scheduler never sent to that worker
(or sent to another), or one from a worker with no agreement is charged nothing, and the
scheduler's log names the provider (the first few of each kind, then every thousandth).

A worker cannot stop a task it has started: a task the scheduler gave up on (the budget guard, a
cancelled cell, a timeout) still runs to its end, the provider's meter counts it, and Dask drops
its late report. The meter remembers such tasks (sent, left ``processing`` without a report) and
still charges their late report, once, bounded the same way; late work is priced as a graph of
its own (no tasks, no outputs), so the bill always equals what the provider metered and the
provider has no reason to stop serving.

The requestor talks to the plugin through two scheduler handlers:
``golem_configure`` (each provider's tariff, the budget) and ``golem_finished_graphs`` (a long
poll that hands over finished graphs). Nothing here touches the chain or any key.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
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
from ..notebook._cells import cell_of_graph
from ..trust import COMMITMENT

logger = logging.getLogger(__name__)

DONE = ("memory", "erred", "forgotten")
"""States in which a task no longer needs compute from its graph."""

NO_DIGEST = "0" * 64

REPORTS = ("task-finished", "task-erred")
"""The worker-to-scheduler messages that say a task ran; each carries its ``startstops``."""

LATE_SECONDS = 0.25
"""How long late work waits for more late work before it is priced as a graph of its own."""

MAX_TAKEN = 10_000
"""Tasks taken from a worker that may still report; a worker that never does (it cancelled the
task before it ended, or died) leaves an entry behind, and the oldest are dropped past this."""

MAX_REPORTED = 10_000
"""Reports charged lately, remembered only to tell a duplicate from a report of a task never sent."""

OBSERVED_SLACK_SECONDS = 0.002
"""Added to what the scheduler observed before a report is cut to it. An honest worker computes a
task strictly inside the interval the scheduler observes (it receives the task after the
scheduler sends it and reports after it ends), but it times the task on its own clock
(``distributed.metrics.time``) while the scheduler uses its monotonic clock, and the two are read
at different moments: a report may exceed the observed interval by the clocks' granularity and
the rounding of absolute timestamps (microseconds, and ``startstops`` are ~1.7e9 s values with
0.24 us float steps). 2 ms is far above both and far below any task worth paying for; it is
allowed once per task and once per worker, never once per report."""

CLOCK_RATE_SLACK = 1e-3
"""Relative slack for the same reason: the worker's clock and the scheduler's may run at rates
that differ by up to 500 ppm while NTP slews one of them, which matters for long tasks."""

LOGGED_REPORTS = 10
"""Refused or cut reports logged per provider and kind before only every thousandth is."""


@dataclass
class Usage:
    """Compute one provider delivered within one graph."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    tasks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"cpu_seconds": self.cpu_seconds, "gpu_seconds": self.gpu_seconds, "tasks": self.tasks}


@dataclass(slots=True)
class Sent:
    """A task the scheduler sent to a worker and has no report of yet."""

    worker: str
    run_id: Any
    at: float
    """The scheduler's monotonic clock when it sent the task (the earliest send, if it was sent
    to the same worker again before that worker reported it: the worker may still be running it)."""
    taken: bool = False
    """It left ``processing`` without a report; then ``graph_id`` and ``gpu`` say where its compute goes."""
    graph_id: str | None = None
    gpu: bool = False


@dataclass(slots=True)
class Observed:
    """What the scheduler observed of one worker: how long it had tasks out, what it was charged."""

    outstanding: int = 0
    """Tasks sent to it and not reported yet (taken ones included: it may still run them)."""
    since: float = 0.0
    credit: float = 0.0
    """Seconds of compute the worker could have delivered while it had tasks out."""
    charged: float = 0.0

    def advance(self, now: float, threads: int) -> None:
        """Accrue credit up to ``now``: as many tasks at a time as it had out, at most ``threads``."""
        if self.outstanding:
            self.credit += max(0.0, now - self.since) * min(self.outstanding, threads)
        self.since = now


@dataclass
class GraphRun:
    """One graph execution being metered."""

    graph_id: str
    client: str
    outputs: list[Any]
    pending: set[Any]
    n_tasks: int
    cell: str | None = None
    """The notebook cell that sent the graph (its ``In [N]``), as the graph's annotation says."""
    started: float = field(default_factory=time.time)
    usage: dict[str, Usage] = field(default_factory=dict)
    erred: int = 0
    budget_exceeded: bool = False
    forfeited: set[str] = field(default_factory=set)
    """Providers voted down by verification in this graph: nothing of it is paid to them."""
    checks: dict[str, Any] = field(default_factory=lambda: {"checked": 0, "reruns": 0, "mismatches": 0, "cost": 0.0})
    """What verification did in this graph: tasks checked, re-runs, mismatches, and what the re-runs cost (wei)."""
    rerun_charges: dict[str, float] = field(default_factory=dict)
    """Provider -> what its verification re-runs in this graph were charged (taken out of the checks'
    cost again if it forfeits the graph: what is not paid costs nothing)."""


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
        self.sent: dict[Any, Sent] = {}
        """Tasks processing now: key -> the worker it was sent to, the run, when."""
        self.taken: OrderedDict[tuple[Any, str], Sent] = OrderedDict()
        """Tasks that left ``processing`` without a report from the worker they were sent to
        ((key, worker address) -> the send): that worker may still be running them."""
        self.reruns: set[Any] = set()
        """Keys of verification re-runs charged to the graph of the task they check."""
        self.threads: dict[str, int] = {}
        """Per worker name: the CPUs its provider's offer states, the most threads it is paid for."""
        self.observed: dict[str, Observed] = {}
        """Per worker address: how long it had tasks out and what it was charged."""
        self.reported: OrderedDict[tuple[Any, str], Any] = OrderedDict()
        self.refused: dict[tuple[str, str], int] = {}
        """Reports charged nothing or cut, per (provider, kind)."""
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
        # Work stealing moves a task to another worker without a transition.
        send_task_to_worker = scheduler.send_task_to_worker

        def send_moved_task(worker: str, ts: Any) -> None:
            send_task_to_worker(worker, ts)
            self._moved(ts, worker)

        scheduler.send_task_to_worker = send_moved_task

    def _metered(self, handler: Any) -> Any:
        """``handler`` for a worker report, charging the report first, whatever Dask then makes of it."""

        def report(**msg: Any) -> Any:
            self._report(msg.get("key"), msg.get("worker"), msg.get("run_id"), msg.get("startstops"))
            return handler(**msg)

        if inspect.iscoroutinefunction(handler):  # the stream loop awaits only coroutine functions

            async def report_async(**msg: Any) -> Any:
                return await report(**msg)

            return report_async
        return report

    # ------------------------------------------------------------------ handlers

    def configure(
        self,
        prices: dict[str, list[int]] | None = None,
        limit: float | None = None,
        cap: int | None = None,
        threads: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Set or update tariffs (``{worker name: Tariff.to_wire()}``) and the budget limit; ``cap`` says
        that the limit is a cell's own budget of that many wei (what the guard's error names);
        ``threads`` (``{worker name: CPUs}``) caps the threads a worker is paid for, whatever it
        registered with (a worker states its own ``nthreads``)."""
        tariffs = {name: Tariff.from_wire(wire) for name, wire in (prices or {}).items()}  # all valid, or none set
        caps = {str(name): int(n) for name, n in (threads or {}).items() if int(n) > 0}
        self.prices.update(tariffs)
        self.threads.update(caps)
        if limit is not None:
            self.limit = float(limit)
            self.exhausted = self.spent >= self.limit
            self.cap = None if cap is None else int(cap)
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

    def _threads(self, ws: Any) -> int:
        """The threads a worker is paid for: what it registered with, at most what its offer states."""
        if ws is None:
            return 1
        return max(1, min(ws.nthreads, self.threads.get(str(ws.name), ws.nthreads)))

    def state(self) -> dict[str, Any]:
        return {
            "finished_total": self.finished_total,
            "spent": self.spent,
            "limit": self.limit,
            "exhausted": self.exhausted,
            "open_graphs": len(self.graphs),
            "pending_tasks": sum(len(g.pending) for g in self.graphs.values()),
            "refused_reports": sum(self.refused.values()),
        }

    # ------------------------------------------------------------------ plugin hooks

    def update_graph(self, scheduler: Any, *, client: str, keys: set, tasks: list, stimulus_id: str, **kw: Any) -> None:
        new = {k for k in tasks if k not in self.key_graph and _state(scheduler, k) not in ("memory", "erred")}
        if not new:
            return
        cell = cell_of_graph(kw.get("annotations") or {}, new)
        run = GraphRun(os.urandom(32).hex(), client, sorted(keys, key=str), set(new), len(new), cell)
        self.graphs[run.graph_id] = run
        for key in new:
            self.key_graph[key] = run.graph_id
        if self.exhausted:
            # The budget is spent: nothing more runs, and the user hears why at once.
            asyncio.get_running_loop().call_soon(self._stop_work)

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        if finish == "processing":
            self._sent(key)
        elif start == "processing":
            self._left_processing(key)
        graph_id = self.key_graph.get(key)
        if finish == "forgotten":
            self.key_graph.pop(key, None)
            self.reruns.discard(key)
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

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker that left sends no more reports (Dask ignores a stream of a worker it removed)."""
        self.observed.pop(worker, None)
        for entry in [e for e in self.taken if e[1] == worker]:
            del self.taken[entry]

    # ------------------------------------------------------------------ what the scheduler sent

    def _observed(self, worker: str, now: float) -> Observed:
        """The worker's observation, its credit brought up to ``now``."""
        observed = self.observed.get(worker)
        if observed is None:
            observed = self.observed[worker] = Observed(since=now)
        ws = self.scheduler.workers.get(worker)
        # Not the tasks that seceded from its thread pool: the worker says which did, and a
        # task here cannot submit tasks to wait on (a worker's certificate gets no client handlers).
        observed.advance(now, self._threads(ws))
        return observed

    def _sent(self, key: Any) -> None:
        """The task just went to ``processing``: its message to the worker goes out now."""
        ts = self.scheduler.tasks.get(key)
        ws = ts.processing_on if ts is not None else None
        if ws is None:
            return
        if key in self.sent:  # never without leaving processing first; keep the books straight anyway
            self._left_processing(key)
        now = time.monotonic()
        worker = ws.address
        earlier = self.taken.pop((key, worker), None)
        if earlier is None:  # else the worker may still be running the earlier run: it stays out
            self._observed(worker, now).outstanding += 1
        self.sent[key] = Sent(worker, ts.run_id, earlier.at if earlier else now)

    def _moved(self, ts: Any, worker: str) -> None:
        """Work stealing sent ``ts`` to ``worker``, after its first worker confirmed it had not started it."""
        now = time.monotonic()
        before = self.sent.get(ts.key)
        if before is not None and before.worker == worker:
            before.run_id = ts.run_id
            return
        if before is not None:
            self._observed(before.worker, now).outstanding -= 1
        self._observed(worker, now).outstanding += 1
        self.sent[ts.key] = Sent(worker, ts.run_id, now)

    def _left_processing(self, key: Any) -> None:
        """Taken from its worker without a report (cancelled, failed by the guard, its worker gone,
        another worker's report): the worker may still be running it, and its report may come later."""
        sent = self.sent.pop(key, None)
        if sent is None:
            return  # reported
        sent.taken = True
        sent.graph_id = self.key_graph.get(key)
        sent.gpu = _holds_gpu(self.scheduler.tasks.get(key))
        self.taken[key, sent.worker] = sent
        while len(self.taken) > MAX_TAKEN:
            (_, worker), _ = self.taken.popitem(last=False)
            if worker in self.observed:
                self._observed(worker, time.monotonic()).outstanding -= 1

    # ------------------------------------------------------------------ metering

    def _report(self, key: Any, worker: Any, run_id: Any, startstops: Any) -> None:
        """Charge the compute of one task a worker says it ran, at most what the scheduler saw."""
        ws = self.scheduler.workers.get(worker) if isinstance(worker, str) else None
        if ws is None:
            return  # not a worker (any more): Dask ignores its reports too
        provider = str(ws.name)
        sent = self._claimed(key, worker, run_id, provider)
        if sent is None:
            return
        now = time.monotonic()
        observed = self._observed(worker, now)
        observed.outstanding -= 1
        claimed = _compute_seconds(startstops)
        if claimed <= 0:
            return
        if provider not in self.prices:
            self._refuse(
                provider,
                "unpriced",
                "Task %r ran on %s (%s), which has no agreement; it is not paid.",
                key,
                provider,
                worker,
            )
            return
        # What the scheduler saw: the task out for (now - sent.at) on a worker of ws.nthreads
        # threads, and the worker busy for observed.credit task-seconds all told.
        task_bound = max(0.0, now - sent.at) * self._threads(ws) * (1 + CLOCK_RATE_SLACK) + OBSERVED_SLACK_SECONDS
        worker_bound = observed.credit * (1 + CLOCK_RATE_SLACK) + OBSERVED_SLACK_SECONDS - observed.charged
        seconds = max(0.0, min(claimed, task_bound, worker_bound))
        observed.charged += seconds
        if seconds < claimed:
            self._refuse(
                provider,
                "cut",
                "Provider %s reported %.6g s of compute for task %r, but the scheduler saw at most %.6g s of it; "
                "charged %.6g s.",
                provider,
                claimed,
                key,
                min(task_bound, worker_bound),
                seconds,
            )
        if seconds <= 0:
            return
        if sent.taken:  # charged where it belonged when the scheduler gave up on it
            graph_id, gpu = sent.graph_id, sent.gpu
        else:
            graph_id, gpu = self.key_graph.get(key), _holds_gpu(self.scheduler.tasks.get(key))
        run = self.graphs.get(graph_id) if graph_id else None
        if run is not None and provider in run.forfeited:
            return  # voted down in this graph: none of its work in it is paid
        if run is not None:
            usage = run.usage.setdefault(provider, Usage())
        else:
            usage = self.carry_over.setdefault(provider, Usage())
            started = time.time() - (now - sent.at)  # when the scheduler sent it, on the wall clock
            self.carry_over_since = min(started, self.carry_over_since or started)
            if self._late is None:
                self._late = asyncio.get_running_loop().call_later(LATE_SECONDS, self._price_late_work)
        if gpu:
            usage.gpu_seconds += seconds
        else:
            usage.cpu_seconds += seconds
        usage.tasks += 1
        charge = self.prices[provider].charge(seconds, gpu=gpu)
        self.spent += charge
        if run is not None and key in self.reruns:
            run.checks["cost"] += charge
            run.rerun_charges[provider] = run.rerun_charges.get(provider, 0.0) + charge
        if self.limit is not None and not self.exhausted and self.spent >= self.limit:
            self.exhausted = True
            # Never start transitions from inside a stream handler.
            asyncio.get_running_loop().call_soon(self._stop_work)

    def _claimed(self, key: Any, worker: str, run_id: Any, provider: str) -> Sent | None:
        """The send this report answers, taken off the books (it is charged once), or None if the
        scheduler has no unanswered send of that run of ``key`` to ``worker`` (logged)."""
        try:
            sent = self.sent.get(key)
        except TypeError:  # an unhashable key: nothing the scheduler could have sent
            self._refuse(
                provider, "unsolicited", "Provider %s reported a task with an invalid key %r; not paid.", provider, key
            )
            return None
        if sent is not None and sent.worker == worker and _same_run(sent.run_id, run_id):
            del self.sent[key]
        else:
            sent = self.taken.get((key, worker))
            if sent is None or not _same_run(sent.run_id, run_id):
                self._unsolicited(key, worker, run_id, provider)
                return None
            del self.taken[key, worker]
        self.reported[key, worker] = run_id
        if len(self.reported) > MAX_REPORTED:
            self.reported.popitem(last=False)
        return sent

    def _unsolicited(self, key: Any, worker: str, run_id: Any, provider: str) -> None:
        """Log a report that answers no send: a duplicate, or one the scheduler never asked for."""
        if (key, worker) in self.reported:
            kind, why = "duplicate", "which it had reported already: a task is paid once"
        else:
            kind, sent = "unsolicited", self.sent.get(key) or self.taken.get((key, worker))
            if sent is not None and sent.worker != worker:
                why = "which the scheduler sent to another worker"
            elif sent is not None:
                why = f"which the scheduler sent it as run {sent.run_id}"
            else:
                why = "which the scheduler never sent it"
        self._refuse(provider, kind, "Provider %s reported task %r (run %s), %s; not paid.", provider, key, run_id, why)

    def _refuse(self, provider: str, kind: str, message: str, *args: Any) -> None:
        """Log a report charged nothing (or cut): the first few per provider and kind, then every thousandth."""
        count = self.refused[provider, kind] = self.refused.get((provider, kind), 0) + 1
        if count <= LOGGED_REPORTS or count % 1000 == 0:
            logger.warning(message + " [%s report %d from this provider]", *args, kind, count)

    def adopt_rerun(self, key: Any, graph_id: str) -> bool:
        """Count the verification re-run ``key`` as work of graph ``graph_id`` (the graph waits for it and
        pays for it, as the cost of its checks), instead of a graph of its own; False if that graph is done."""
        run = self.graphs.get(graph_id)
        if run is None:
            return False
        self.key_graph[key] = graph_id
        run.pending.add(key)
        run.checks["reruns"] += 1
        self.reruns.add(key)
        return True

    def note_check(self, graph_id: str | None, *, mismatch: bool = False) -> None:
        """Verification held a result of graph ``graph_id`` to check it (or found a mismatch in one)."""
        run = self.graphs.get(graph_id) if graph_id else None
        if run is not None:
            run.checks["mismatches" if mismatch else "checked"] += 1

    def forfeit(self, graph_id: str, provider: str) -> None:
        """``provider`` returned a result of graph ``graph_id`` that verification voted down: nothing of
        the graph is paid to it (what it was charged so far is taken back from the budget's count)."""
        run = self.graphs.get(graph_id)
        if run is None:
            return
        run.forfeited.add(provider)
        run.checks["cost"] -= run.rerun_charges.pop(provider, 0.0)
        usage = run.usage.pop(provider, None)
        if usage is not None and provider in self.prices:
            tariff = self.prices[provider]
            self.spent -= tariff.charge(usage.cpu_seconds, gpu=False) + tariff.charge(usage.gpu_seconds, gpu=True)

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
                "cell": run.cell,
                "payouts": payouts,
                "result_root": self._result_root(run),
                "budget_exceeded": run.budget_exceeded,
                "outputs": [str(key) for key in run.outputs],
                "forfeited": sorted(run.forfeited),
                "verification": {**run.checks, "cost": round(run.checks["cost"])},
            }
        )
        self.finished_total += 1
        if self._finished_event is not None:
            self._finished_event.set()

    def _result_root(self, run: GraphRun) -> str:
        """Merkle root over (output key, the provider's commitment to its result)."""
        leaves = []
        for key in run.outputs:
            ts = self.scheduler.tasks.get(key)
            digest = (ts.metadata or {}).get(COMMITMENT, NO_DIGEST) if ts is not None else NO_DIGEST
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


def _same_run(sent: Any, reported: Any) -> bool:
    """Whether a report is of the run sent (a scheduler or worker without run ids: any run)."""
    return sent is None or reported is None or sent == reported


def _compute_seconds(startstops: Any) -> float:
    """The compute seconds a report claims (its finite, forward compute spans)."""
    seconds = 0.0
    for span in startstops if isinstance(startstops, (list, tuple)) else ():
        if not isinstance(span, dict) or span.get("action") != "compute":
            continue
        start, stop = span.get("start"), span.get("stop")
        if isinstance(start, (int, float)) and isinstance(stop, (int, float)) and math.isfinite(stop - start):
            seconds += max(0.0, stop - start)
    return seconds


def _holds_gpu(ts: Any) -> bool:
    return bool(ts is not None and ts.resource_restrictions and ts.resource_restrictions.get("GPU"))


def _state(scheduler: Any, key: Any) -> str | None:
    ts = scheduler.tasks.get(key)
    return ts.state if ts is not None else None
