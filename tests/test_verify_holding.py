"""A held report holds the result, not the worker, and never waits on a worker that left
(DESIGN.md section 6, "Results"); a worker too busy to hand a result over at once is asked again,
not taken for a liar.

While a sampled result waits for its check, the worker that reported it has finished the task and
is free: the scheduler must give it the next task, not count the held one as running. Otherwise
every check costs its worker a thread for as long as the twin and the verdict take, and
``--verify`` slows a saturated graph by far more than the re-runs themselves (issue 18's
benchmark). In the first test nobody judges, so the held report stays held for the whole test.
"""

from __future__ import annotations

from typing import Any

import dask
import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from market_tasks import square
from verifykit import verifying_cluster

from golem_jupyter.scheduler.verify import ANNOTATION

pytestmark = pytest.mark.timeout(120)


def test_a_worker_whose_result_is_held_gets_the_next_tasks() -> None:
    # One task slot per one-thread worker: a slot taken by a held report would leave the worker idle.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}), verifying_cluster(None) as cluster:
        client = cluster.client
        # No commitments: a re-run that agrees byte for byte would settle the check without the
        # kernel (there is none here), and the report must stay held.
        held_on = cluster.worker("held-on", commits=False)
        cluster.worker("other", commits=False)
        with dask.annotate(**{ANNOTATION: 1.0}):
            held = client.submit(square, 3, workers=[held_on.address], pure=False)
        client.sync(_until, lambda: cluster.verifier.counts["held"] == 1)

        with dask.annotate(**{ANNOTATION: 0.0}):
            work = client.map(square, range(40), pure=False)  # queued on the scheduler (root tasks)
        assert client.gather(work) == [i * i for i in range(40)]
        ran_on = {address for holders in client.who_has(work).values() for address in holders}
        assert held_on.address in ran_on, "the worker whose result is held was left idle"
        assert held.status == "pending" and cluster.verifier.state()["open_checks"] == 1  # still held
        ts = cluster.scheduler.tasks[held.key]
        assert ts.state == "processing" and ts.processing_on.address == held_on.address


async def _until(condition, timeout: float = 60) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the condition did not come true")
        await asyncio.sleep(0.01)


def count_after(values: list, seconds: float) -> int:
    """``len(values)``, after ``seconds`` of sleep: a re-run slow enough to lose its worker mid-way."""
    import time

    time.sleep(seconds)
    return len(values)


def test_a_check_whose_rerun_loses_its_worker_is_refereed_not_left_waiting() -> None:
    """The re-run's worker leaves while it runs (with the copy of the inputs handed to it). Leaving is
    no lie: nobody is accused, and the check goes to a referee (here the requestor's own machine, the
    only provider left being the one checked) instead of waiting out the five minutes after which a
    result is used unchecked."""
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        checked = cluster.worker("checked")
        leaving = cluster.worker("leaving")
        with dask.annotate(**{ANNOTATION: 0.0}):
            values = client.submit(list, range(5), workers=[checked.address], pure=False)
        with dask.annotate(**{ANNOTATION: 1.0}):
            result = client.submit(count_after, values, 0.5, workers=[checked.address], pure=False)
        client.sync(_until, lambda: leaving.state.executing_count > 0)  # the re-run, on its copy of values
        client.sync(leaving.close)
        assert result.result(timeout=60) == 5
        assert cluster.faults == [] and cluster.verification.stats.local_runs == 1
        assert cluster.verifier.counts["unchecked"] == 0 and cluster.verifier.state()["open_checks"] == 0


class BusyAtFirst(WorkerPlugin):
    """An honest worker that answers the scheduler's first requests for data with "busy", as a worker
    serving as many transfers as it may at once does."""

    name = "busy-at-first"

    def __init__(self, times: int) -> None:
        self.times = times

    def setup(self, worker: Any) -> None:
        get_data = worker.handlers["get_data"]
        self.busy = 0

        async def busy_get_data(comm: Any, keys: Any = (), who: Any = None, **kwargs: Any) -> Any:
            if who == worker.scheduler.address and self.busy < self.times:
                self.busy += 1
                return {"status": "busy"}
            return await get_data(comm, keys=keys, who=who, **kwargs)

        worker.handlers["get_data"] = busy_get_data


def test_a_worker_busy_serving_other_transfers_is_asked_again_not_accused() -> None:
    with verifying_cluster(1.0) as cluster:
        client = cluster.client
        busy = cluster.worker("busy")
        cluster.worker("other")
        plugin = BusyAtFirst(times=3)
        client.sync(busy.plugin_add, plugin, name=plugin.name)
        future = client.submit(square, 7, workers=[busy.address], pure=False)
        assert future.result(timeout=60) == 49
        assert plugin.busy == 3
        assert cluster.faults == [] and cluster.verification.stats.mismatches == 0


def test_a_rerun_committed_to_the_same_bytes_releases_the_report_without_the_kernel() -> None:
    """Equal commitments are equal bytes, hence equal values: the scheduler releases the held
    report itself (no kernel judges here) and only tells the kernel to count the check. (Re-runs
    whose bytes differ go to the kernel to compare: ``noisy_total`` in test_verify_inputs.py.)"""
    with verifying_cluster(None) as cluster:
        client = cluster.client
        first = cluster.worker("first")
        cluster.worker("second")
        with dask.annotate(**{ANNOTATION: 1.0}):
            agreed = client.submit(square, 7, workers=[first.address], allow_other_workers=True, pure=False)
            assert agreed.result(timeout=60) == 49
        assert cluster.verifier.counts["agreed"] == 1 and cluster.verifier.counts["reruns"] == 1
        assert cluster.verifier.state()["open_checks"] == 0
        assert any("agreed" in event for event in cluster.verifier.events)
