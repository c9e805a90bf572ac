"""How often ``--verify`` catches a liar: the rate DESIGN.md section 6 states, measured.

A real scheduler with the requestor's :class:`~golem_jupyter.scheduler.verify.Verifier`, the
kernel's :class:`~golem_jupyter.requestor.verification.Verification` judging, one honest worker
and one worker running the devnet's liar plugin (every result it returns is wrong). Each graph
puts ``n`` tasks on the liar (they may move to the honest worker once the liar is dropped). A
liar that corrupts ``q * n`` of its tasks escapes a graph only if none of them is sampled:
probability ``(1 - f) ** (q * n)`` for a verify fraction ``f``. A liar caught is dropped (its
worker removed), and the next graph gets a fresh one.

The scheduler and workers run in this process (no market, no money: this measures the sampling
and the judging, not the payments, which tests/test_verify_market.py covers).
"""

from __future__ import annotations

import math

import pytest
from market_tasks import square
from verifykit import verifying_cluster

from golem_jupyter.trust import catch_probability

pytestmark = pytest.mark.timeout(600)

GRAPHS = 120
TASKS_ON_THE_LIAR = 3
FRACTION = 0.25
Z = 5.0
"""Half-width of the acceptance band in standard deviations: a right sampler fails it with
probability below 6e-7 (two-sided normal tail at 5 sigma; the binomial here is close to normal)."""


def test_a_liar_is_caught_at_the_rate_the_sampling_promises() -> None:
    expected_rate = catch_probability(FRACTION, TASKS_ON_THE_LIAR)  # 1 - 0.75**3 = 0.578
    caught = 0
    with verifying_cluster(FRACTION) as cluster:
        client = cluster.client
        cluster.worker("honest")
        liar = None
        for graph in range(GRAPHS):
            if liar is None or liar.status.name != "running":
                liar = cluster.worker(f"liar-{graph}", lie_fraction=1.0)
            before = len(cluster.faults)
            futures = client.map(
                square,
                range(graph * 10, graph * 10 + TASKS_ON_THE_LIAR),
                workers=[liar.address],
                allow_other_workers=True,
                pure=False,
            )
            results = client.gather(futures)
            cluster.settled()
            if len(cluster.faults) > before:
                caught += 1
                # Caught: none of its values came through; every result is the right one.
                assert results == [i * i for i in range(graph * 10, graph * 10 + TASKS_ON_THE_LIAR)]
            del futures
        faults = list(cluster.faults)
    n = GRAPHS
    spread = Z * math.sqrt(n * expected_rate * (1 - expected_rate))
    print(f"caught in {caught} of {n} graphs; expected {n * expected_rate:.1f} ± {spread:.1f}")
    assert abs(caught - n * expected_rate) <= spread, (caught, n * expected_rate, spread)
    assert all(f.provider.startswith("liar-") for f in faults)  # the honest worker was never outvoted
