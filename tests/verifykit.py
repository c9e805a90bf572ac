"""A scheduler with the requestor's verification, its workers in this process: for the tests of
``--verify`` that measure the sampling and the judging, not the payments (no market, no money;
tests/test_verify_market.py covers those).

:func:`verifying_cluster` starts a real scheduler with the :class:`Verifier` plugin and, unless
told not to, the kernel's :class:`Verification` judging; workers (honest, or running the devnet's
liar plugin) are added by name with :meth:`VerifyingCluster.worker`. Everything it started is
stopped when the ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from distributed import Client, LocalCluster, Worker
from distributed.diagnostics.plugin import WorkerPlugin

from golem_jupyter.requestor.verification import Fault, Verification
from golem_jupyter.scheduler.verify import Verifier
from golem_jupyter.worker._liar import LyingWorker
from golem_jupyter.worker.meter import ComputeMeter


@dataclass
class VerifyingCluster:
    client: Client
    verifier: Verifier
    verification: Verification | None
    """The kernel's side, or None when nobody judges (held reports stay held)."""
    faults: list[Fault] = field(default_factory=list)
    """Every fault the kernel's side reported, in order."""
    workers: list[Worker] = field(default_factory=list)

    @property
    def scheduler(self):
        return self.client.cluster.scheduler

    def worker(
        self,
        name: str,
        lie_fraction: float | None = None,
        nthreads: int = 1,
        plugins: Sequence[WorkerPlugin] = (),
        commits: bool = True,
    ) -> Worker:
        """A new worker called ``name`` (its provider, to the verifier); with ``lie_fraction``, one
        that returns wrong values for that fraction of its tasks. ``plugins`` (a test's hostile
        ones) are added before the provider's meter, which commits to each result as a provider's
        worker does (``commits=False``: a worker that reports no commitments)."""
        worker = self.client.sync(_worker, self.scheduler.address, name, lie_fraction, nthreads, plugins, commits)
        self.workers.append(worker)
        return worker

    def reported(self, n: int, timeout: float = 60) -> list[Fault]:
        """The faults reported, once there are ``n`` (a fault the scheduler caught reaches the
        kernel's side on its next poll, after the client may already have its result)."""
        deadline = time.monotonic() + timeout
        while len(self.faults) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.faults)} fault(s) reported, not {n}: {self.faults}")
            time.sleep(0.01)
        self.settled()
        return self.faults

    def settled(self) -> None:
        """Wait until every check the kernel started judging is judged."""
        if self.verification is not None:
            self.client.sync(_settled, self.verification)


@contextmanager
def verifying_cluster(fraction: float | None, protocol: str = "inproc://") -> Iterator[VerifyingCluster]:
    """A scheduler with the Verifier and no workers yet; ``fraction``: the session's verify fraction
    judged by the kernel's side, or None for no judge at all. ``protocol="tcp://"``: results travel
    as bytes, as between processes (in-process comms hand over the objects themselves)."""
    with (
        LocalCluster(
            n_workers=0,
            processes=False,
            dashboard_address=":0",
            protocol=protocol,
            host="127.0.0.1" if protocol.startswith("tcp") else None,
        ) as cluster,
        Client(cluster) as client,
    ):
        verifier = Verifier()
        client.sync(_start_plugin, cluster.scheduler, verifier)
        harness = VerifyingCluster(client, verifier, None)
        if fraction is not None:

            async def on_fault(fault: Fault) -> None:
                harness.faults.append(fault)

            harness.verification = Verification(cluster.scheduler_comm, on_fault=on_fault)
            client.sync(harness.verification.start, fraction)
        try:
            yield harness
        finally:
            if harness.verification is not None:
                client.sync(harness.verification.close)
            for worker in harness.workers:
                if worker.status.name == "running":
                    client.sync(worker.close)


async def _start_plugin(scheduler, plugin) -> None:
    scheduler.add_plugin(plugin)
    await plugin.start(scheduler)


async def _worker(
    address: str,
    name: str,
    lie_fraction: float | None,
    nthreads: int,
    plugins: Sequence[WorkerPlugin],
    commits: bool,
) -> Worker:
    host = "127.0.0.1" if address.startswith("tcp") else None
    worker = await Worker(address, name=name, nthreads=nthreads, dashboard=False, host=host)
    if lie_fraction is not None:
        await worker.plugin_add(LyingWorker(lie_fraction), name=LyingWorker.name)
    for plugin in plugins:
        await worker.plugin_add(plugin, name=plugin.name)
    if commits:  # last, as in a provider's worker: it commits to the value the others left
        await worker.plugin_add(ComputeMeter(None), name=ComputeMeter.name)
    return worker


async def _settled(verification: Verification) -> None:
    # A verdict's own report (the fault, the decide call) may still be under way once the results are back.
    while verification._judging:
        await asyncio.gather(*verification._judging, return_exceptions=True)
    await verification.reported()
