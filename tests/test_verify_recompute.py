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

import dask
import pytest
from market_tasks import square, square_on_a_worker
from verifykit import verifying_cluster

from golem_jupyter.errors import VerificationError
from golem_jupyter.scheduler.verify import ANNOTATION

pytestmark = pytest.mark.timeout(300)


def test_results_made_from_a_liars_values_are_computed_again_without_it() -> None:
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        honest = cluster.worker("honest")
        liar = cluster.worker("liar", lie_fraction=1.0)
        with dask.annotate(**{ANNOTATION: 0.0}):
            inputs = client.map(square, range(5), workers=[liar.address], allow_other_workers=True, pure=False)
        client.gather(inputs)  # the liar's values, unchecked: each is i * i + 1
        with dask.annotate(**{ANNOTATION: 1.0}):
            total = client.submit(sum, inputs, workers=[honest.address], pure=False)
        assert total.result(timeout=120) == sum(i * i for i in range(5))
        assert [f.provider for f in cluster.faults] == ["liar"]
        assert client.gather(inputs) == [i * i for i in range(5)]  # computed again, by the honest worker
        assert cluster.verifier.counts["dropped"] >= 1


def test_a_disagreement_no_referee_can_decide_fails_the_task_instead_of_using_either() -> None:
    """The liar and the honest worker disagree, there is no third worker, and the task cannot run on
    the requestor's machine: neither result may reach the client. The task fails with a
    VerificationError that says so; nobody is accused."""
    with verifying_cluster(1.0) as cluster:
        cluster.worker("honest")
        liar = cluster.worker("liar", lie_fraction=1.0)
        future = cluster.client.submit(square_on_a_worker, 7, workers=[liar.address], pure=False)
        with pytest.raises(VerificationError, match="no referee could decide"):
            future.result(timeout=120)
        assert cluster.faults == [] and cluster.verification.stats.mismatches == 1
