"""Keeps a rented provider's worker from tasks until its allocation is confirmed (DESIGN.md section 4, step 3).

A provider's worker joins the scheduler before the requestor allocates the provider's share of the
deposit, and the provider serves only once it has seen that allocation on-chain. Until then the
worker must get no task: :class:`WorkerGate` holds every worker whose name (the provider's address)
was not admitted in the scheduler's ``paused`` state, in which the scheduler places no task on it
and work stealing leaves it alone; the worker itself is told nothing and simply waits. The
requestor calls ``golem_admit`` once the provider confirmed the allocation, and the worker then
runs like any other. A worker that pauses itself later (memory) is untouched by the gate.

The kernel registers the gate on the session's scheduler (``register_scheduler_plugin``) before it
rents anyone. Metering is unaffected: a held worker runs nothing, so nothing is billed for it.
"""

from __future__ import annotations

import time
from typing import Any

from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerPlugin


class WorkerGate(SchedulerPlugin):
    """Holds workers whose name is not admitted in ``paused``; ``golem_admit(name)`` lets one run."""

    name = "golem-worker-gate"

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.admitted: set[str] = set()

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["golem_admit"] = self.admit
        scheduler.handlers["golem_held"] = self.held
        # A worker registers as it starts, then reports itself running on its stream: that report
        # must not let a held worker through.
        report = scheduler.stream_handlers["worker-status-change"]

        def status_change(status: str, worker: str, stimulus_id: str, **kwargs: Any) -> Any:
            ws = scheduler.workers.get(worker)
            if ws is not None and status == Status.running.name and self._holds(ws):
                status = Status.paused.name
            return report(status=status, worker=worker, stimulus_id=stimulus_id, **kwargs)

        scheduler.stream_handlers["worker-status-change"] = status_change
        for ws in list(scheduler.workers.values()):
            self._hold(ws)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is not None:
            self._hold(ws)

    def admit(self, name: str) -> bool:
        """Let the worker named ``name`` run (now, and whenever it joins); True if one was held."""
        self.admitted.add(str(name))
        released = False
        for ws in list(self.scheduler.workers.values()):
            if str(ws.name) == str(name) and ws.status == Status.paused:
                self.scheduler.handle_worker_status_change(Status.running, ws, f"golem-admit-{time.time()}")
                released = True
        return released

    def held(self) -> list[str]:
        """Names of the workers the gate holds now."""
        return sorted(str(ws.name) for ws in self.scheduler.workers.values() if self._holds(ws))

    def _holds(self, ws: Any) -> bool:
        return str(ws.name) not in self.admitted

    def _hold(self, ws: Any) -> None:
        if self._holds(ws) and ws.status != Status.paused:
            self.scheduler.handle_worker_status_change(Status.paused, ws, f"golem-hold-{time.time()}")
