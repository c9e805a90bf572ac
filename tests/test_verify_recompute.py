"""A provider voted down takes everything made from its results with it (DESIGN.md section 6).

A real scheduler with the requestor's Verifier, the kernel's Verification judging, one honest
worker and one running the devnet's liar plugin (every result wrong). The liar computes the inputs
of a sum unchecked (``--verify 0`` for them); the honest worker computes the sum, checked. The sum's
re-run lands on the liar, which lies about it too, and the requestor's own machine referees: the
liar is outvoted. The sum the honest worker made from the liar's inputs is wrong as well, though
no check could see it: it is dropped, and the inputs and the sum are computed again without the
liar. What the client receives is the true sum.
"""

from __future__ import annotations

import asyncio

import dask
import pytest
from distributed import Client, LocalCluster, Worker
from market_tasks import square

from golem_jupyter.requestor.verification import Verification
from golem_jupyter.scheduler.verify import ANNOTATION, Verifier
from golem_jupyter.worker._liar import LyingWorker

pytestmark = pytest.mark.timeout(300)


def test_results_made_from_a_liars_values_are_computed_again_without_it() -> None:
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        verifier = Verifier()
        client.sync(_start_plugin, cluster.scheduler, verifier)
        faults: list = []

        async def on_fault(fault) -> None:
            faults.append(fault)

        verification = Verification(cluster.scheduler_comm, on_fault=on_fault)
        client.sync(verification.start, 0.0)
        honest = client.sync(_worker, cluster.scheduler.address, "honest", None)
        liar = client.sync(_worker, cluster.scheduler.address, "liar", 1.0)
        try:
            with dask.annotate(**{ANNOTATION: 0.0}):
                inputs = client.map(square, range(5), workers=[liar.address], allow_other_workers=True, pure=False)
            client.gather(inputs)  # the liar's values, unchecked: each is i * i + 1
            with dask.annotate(**{ANNOTATION: 1.0}):
                total = client.submit(sum, inputs, workers=[honest.address], pure=False)
            assert total.result(timeout=120) == sum(i * i for i in range(5))
            assert [f.provider for f in faults] == ["liar"]
            assert client.gather(inputs) == [i * i for i in range(5)]  # computed again, by the honest worker
            assert verifier.counts["dropped"] >= 1
        finally:
            client.sync(verification.close)
            client.sync(honest.close)
            if liar.status.name == "running":
                client.sync(liar.close)


async def _start_plugin(scheduler, plugin) -> None:
    scheduler.add_plugin(plugin)
    await plugin.start(scheduler)


async def _worker(address: str, name: str, lie_fraction: float | None) -> Worker:
    worker = await Worker(address, name=name, nthreads=1, dashboard=False)
    if lie_fraction is not None:
        await worker.plugin_add(LyingWorker(lie_fraction), name=LyingWorker.name)
    await asyncio.sleep(0)
    return worker


def test_a_disagreement_no_referee_can_decide_fails_the_task_instead_of_using_either() -> None:
    """The liar and the honest worker disagree, there is no third worker, and the task cannot run on
    the requestor's machine: neither result may reach the client. The task fails with a
    VerificationError that says so; nobody is accused."""
    from market_tasks import square_on_a_worker

    from golem_jupyter.errors import VerificationError

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        verifier = Verifier()
        client.sync(_start_plugin, cluster.scheduler, verifier)
        faults: list = []

        async def on_fault(fault) -> None:
            faults.append(fault)

        verification = Verification(cluster.scheduler_comm, on_fault=on_fault)
        client.sync(verification.start, 1.0)
        honest = client.sync(_worker, cluster.scheduler.address, "honest", None)
        liar = client.sync(_worker, cluster.scheduler.address, "liar", 1.0)
        try:
            future = client.submit(square_on_a_worker, 7, workers=[liar.address], pure=False)
            with pytest.raises(VerificationError, match="no referee could decide"):
                future.result(timeout=120)
            assert faults == [] and verification.stats.mismatches == 1
        finally:
            client.sync(verification.close)
            client.sync(honest.close)
            client.sync(liar.close)
