"""Live progress of ``%%golem`` graphs, counted where the tasks are scheduled.

:class:`CellProgress` is a scheduler plugin, registered by the kernel's client on the session's
scheduler. It counts, per cell run (the ``golem-cell-<id>`` prefix of its keys), the tasks each
worker finished and is running. The kernel reads the counts with :func:`read_progress` through
``run_on_scheduler``, a few times a second while a cell runs, together with what the market's
meter has charged for the run so far.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

PREFIX = "golem-cell-"
METER = "golem-graph-meter"  # the name of scheduler.metering.GraphMeter
KEEP_RUNS = 64


def run_token(key: object) -> str | None:
    """``golem-cell-<id>`` for a key of a cell run, else None."""
    if isinstance(key, str) and key.startswith(PREFIX):
        return key[: key.find("-", len(PREFIX))] if "-" in key[len(PREFIX) :] else key
    return None


class CellProgress(SchedulerPlugin):
    """Tasks done and running per worker name, per cell run."""

    name = "golem-cell-progress"

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def _run(self, token: str) -> dict[str, Any]:
        run = self.runs.get(token)
        if run is None:
            # What the market's meter had charged when this run's first task moved: the run's
            # own spending is the difference (other graphs running at once are counted too).
            meter = self.scheduler.plugins.get(METER)
            spent = float(meter.spent) if meter is not None else 0.0
            run = self.runs[token] = {"workers": {}, "done": 0, "erred": 0, "spent_at_start": spent}
            while len(self.runs) > KEEP_RUNS:
                self.runs.popitem(last=False)
        return run

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        token = run_token(key)
        if token is None or "-in-" in key:
            return
        run = self._run(token)
        if finish == "processing":
            ts = self.scheduler.tasks.get(key)
            worker = ts.processing_on if ts is not None else None
            if worker is not None:
                run["workers"].setdefault(str(worker.name), [0, 0])[1] += 1
        elif start == "processing":
            worker = self.scheduler.workers.get(kwargs.get("worker"))
            counts = run["workers"].setdefault(str(worker.name) if worker is not None else "?", [0, 0])
            counts[1] = max(0, counts[1] - 1)
            if finish == "memory":
                counts[0] += 1
                run["done"] += 1
            elif finish == "erred":
                run["erred"] += 1
        elif finish == "erred":
            run["erred"] += 1


def read_progress(dask_scheduler: Any, token: str) -> dict[str, Any]:
    """The counts of one cell run, and what the market's meter has charged so far (run on the scheduler)."""
    plugin = dask_scheduler.plugins.get(CellProgress.name)
    run = plugin.runs.get(token) if plugin is not None else None
    meter = dask_scheduler.plugins.get(METER)
    run = run or {"workers": {}, "done": 0, "erred": 0, "spent_at_start": 0.0}
    return {
        "workers": {k: list(v) for k, v in run["workers"].items()},
        "done": run["done"],
        "erred": run["erred"],
        "spent": float(meter.spent) - run["spent_at_start"] if meter is not None else 0.0,
    }
