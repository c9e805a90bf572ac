"""A provider cannot dodge a check by returning what the requestor's decoder refuses.

Two workers in their own processes (a subprocess cluster: nothing of theirs runs here), the
requestor's Verifier in the scheduler, the restricted decoder installed in this process as in a
kernel, and every task checked. One worker returns, for every task, an object of a class the
decoder does not rebuild: its results cannot be compared, so they must count as disagreeing, not
be waved through unchecked. The requestor's own machine referees; that worker is outvoted and
dropped, and every value the client receives is right.
"""

from __future__ import annotations

import pytest
from distributed import Client
from distributed.deploy.subprocess import SubprocessCluster
from hostile_results import UndecodableResults
from market_tasks import square

from golem_jupyter import trust
from golem_jupyter.requestor.verification import Verification
from golem_jupyter.scheduler.verify import Verifier

pytestmark = pytest.mark.timeout(300)


def test_a_result_the_decoder_refuses_is_outvoted_not_waved_through() -> None:
    with (
        SubprocessCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, scheduler_kwargs={"dashboard": False},
                          worker_kwargs={"dashboard": False}) as cluster,
        Client(cluster) as client,
        trust.decoder_installed(),
    ):  # fmt: skip
        client.wait_for_workers(2)
        names = sorted(str(info["name"]) for info in client.scheduler_info()["workers"].values())
        hostile = names[1]
        client.register_plugin(Verifier())
        client.register_plugin(UndecodableResults(target=hostile))
        faults: list = []

        async def on_fault(fault) -> None:
            faults.append(fault)

        verification = Verification(cluster.scheduler_comm, on_fault=on_fault)
        client.sync(verification.start, 1.0)
        try:
            workers = {str(info["name"]): address for address, info in client.scheduler_info()["workers"].items()}
            futures = client.map(square, range(6), workers=[workers[hostile]], allow_other_workers=True, pure=False)
            assert client.gather(futures) == [i * i for i in range(6)]
            assert {f.provider for f in faults} == {hostile}
            assert verification.stats.local_runs >= 1
        finally:
            client.sync(verification.close)
