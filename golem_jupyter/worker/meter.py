"""The provider's own meter, loaded into each worker it starts (``--preload``).

A ``WorkerPlugin`` adds up the seconds this worker spent computing tasks (from the worker's
``startstops``: the same numbers the requestor's scheduler meters), split into CPU and GPU time
(tasks holding a ``GPU`` resource), and writes the totals to the file named by
``GOLEM_METER_FILE`` so the provider agent can check each voucher against them. The file is
rewritten atomically, at most every ``FLUSH_SECONDS`` and when the worker stops. In a sandbox
(:mod:`golem_jupyter.provider.sandbox`) the worker sees no file of the agent's: it writes the
same totals, one JSON line each time, to the pipe ``GOLEM_METER_FD`` instead, and the agent
writes the file.

It also attaches the worker's commitment to every result (:func:`golem_jupyter.trust.commit`: a
digest of the bytes it will hand over for it) to the task's report. The requestor's scheduler
checks every copy of the result it receives against it, and folds it into the graph's
``resultRoot``.

Its ``dask_setup`` also makes the worker serve the session's other workers (other providers)
the data their tasks need and nothing else (:func:`golem_jupyter.trust.serve_peers_by_role`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from tornado.ioloop import PeriodicCallback

from ..trust import COMMITMENT, commit
from ..trust._authorization import serve_peers_by_role
from ..trust._transfers import check_transfers

METER_ENV = "GOLEM_METER_FILE"
METER_FD_ENV = "GOLEM_METER_FD"
FLUSH_SECONDS = 0.2


class ComputeMeter(WorkerPlugin):
    """Counts compute-seconds per kind of resource and commits to each result."""

    name = "golem-compute-meter"

    def __init__(self, path: str | None, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd
        self.cpu_seconds = 0.0
        self.gpu_seconds = 0.0
        self.tasks = 0
        self.executing = 0
        self.last_change = time.time()
        self._flushed = 0.0
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        self.worker = worker
        check_transfers(worker)  # a peer's doctored input would make this provider's results wrong
        if self.fd is not None:
            os.set_blocking(self.fd, False)  # totals are cumulative: a line the agent misses costs nothing
        self.flush(force=True)
        # A burst of tasks ends without a later task to flush it: flush on a timer too.
        callback = PeriodicCallback(self.flush, FLUSH_SECONDS * 1000)
        worker.periodic_callbacks[self.name] = callback
        callback.start()

    def teardown(self, worker: Any) -> None:
        self.flush(force=True)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing":
            self.executing += 1
            self.last_change = time.time()
        if start != "executing":
            return
        self.executing -= 1
        self.last_change = time.time()
        if finish not in ("memory", "error"):
            return
        ts = self.worker.state.tasks.get(key)
        if ts is None:
            return
        seconds = sum(s["stop"] - s["start"] for s in ts.startstops if s.get("action") == "compute")
        if ts.resource_restrictions and ts.resource_restrictions.get("GPU"):
            self.gpu_seconds += seconds
        else:
            self.cpu_seconds += seconds
        self.tasks += 1
        if finish == "memory":
            # The finished-task message to the scheduler shares this dict and is sent after
            # the transition hooks have run.
            commitment = commit(self.worker.data.get(key))
            if commitment is not None:
                ts.metadata[COMMITMENT] = commitment
        self.flush()

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if (not self.path and self.fd is None) or (not force and now - self._flushed < FLUSH_SECONDS):
            return
        self._flushed = now
        totals = {
            "cpu_seconds": self.cpu_seconds,
            "gpu_seconds": self.gpu_seconds,
            "tasks": self.tasks,
            "executing": self.executing,
            "last_change": self.last_change,
        }
        if self.fd is not None:
            try:
                os.write(self.fd, json.dumps(totals).encode() + b"\n")  # < PIPE_BUF: one atomic write
            except (BlockingIOError, BrokenPipeError):
                pass
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(totals, f)
        os.replace(tmp, self.path)


def read_meter(path: str | os.PathLike) -> dict[str, Any]:
    """The totals a worker last wrote (zeros before it wrote any)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "tasks": 0, "executing": 0, "last_change": 0.0}
    return data


async def dask_setup(worker: Any) -> None:
    serve_peers_by_role(worker)  # the session's other workers belong to other providers
    fd = os.environ.get(METER_FD_ENV)
    meter = ComputeMeter(os.environ.get(METER_ENV), fd=int(fd) if fd else None)
    await worker.plugin_add(meter, name=ComputeMeter.name)
