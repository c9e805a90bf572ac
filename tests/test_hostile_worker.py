"""A hostile provider's worker tries every attack its genuine certificate allows; each is refused.

The worker is a real ``dask worker`` process of :mod:`hostile_provider` (rented through the real
negotiation, certificate issued by the session's CA), loaded with :mod:`hostile_worker`: it
asks the scheduler for everything outside the worker protocol, sends a client's messages on its
stream, reports in another worker's name, and answers tasks with decoder bombs, a 100,000-deep
list and ``SystemExit``. The requestor's process survives with its memory, its scheduler and
its namespace intact, and the honest provider beside the attacker is paid exactly what it metered.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
from distributed import Client
from hostile_provider import hostile_provider
from hostile_worker import ATTACK_LOG_ENV, PAYLOADS, STOLEN_FILE_ENV
from market_tasks import square
from marketkit import Market, assert_paid_as_metered, local_market, wait_until

from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.trust import RemoteTaskError, UnsafePayload

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("market"), providers=1) as market:
        yield market


def test_a_hostile_worker_with_a_genuine_certificate_gets_nothing_but_the_worker_protocol(
    market: Market, tmp_path: Path
) -> None:
    attack_log = tmp_path / "attacks.json"
    stolen = tmp_path / "stolen"
    env = {ATTACK_LOG_ENV: str(attack_log), STOLEN_FILE_ENV: str(stolen)}
    honest = market.providers[0].address
    with (
        hostile_provider(market, tmp_path / "hostile", preloads=("hostile_worker",), env=env) as hostile,
        GolemCluster(n_providers=2, budget=BUDGET, network=market.network, ledger=market.ledger()) as cluster,
        Client(cluster) as client,
    ):
        assert set(cluster.rentals) == {honest, hostile.address}
        wait_until(attack_log.exists, 60, "the hostile worker has tried its attacks")
        outcomes = json.loads(attack_log.read_text())
        log = (cluster._workdir / "scheduler.log").read_text()

        # Every request outside the worker protocol was refused, and logged naming the provider.
        for op in (
            "run_function",
            "register_scheduler_plugin",
            "register_worker_plugin",
            "golem_configure",
            "golem_meter_state",
            "golem_verify_configure",
            "golem_verify_decide",
            "get_cluster_state",
            "retire_workers",
            "unregister",
            "heartbeat_worker",
            "scatter",
        ):
            assert outcomes[op].startswith("PeerRefused"), (op, outcomes[op])
            assert f"Refused request {op!r} from provider {hostile.address}" in log, op
        assert not stolen.exists()

        # A client's messages on its stream, and a report in the honest worker's name, were dropped.
        for op in ("update-graph", "cancel-keys", "client-releases-keys", "task-finished"):
            wait_until(
                lambda op=op: (
                    f"Refused stream message {op!r} from provider {hostile.address}"
                    in (cluster._workdir / "scheduler.log").read_text()
                ),
                30,
                f"the scheduler logged the refused {op}",
            )

        # Nothing changed: both workers serve, the hostile price is still its own.
        workers = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
        assert workers == {honest, hostile.address}
        prices = client.run_on_scheduler(
            lambda dask_scheduler: {
                n: t.cpu_second for n, t in dask_scheduler.plugins["golem-graph-meter"].prices.items()
            }
        )
        assert prices[hostile.address] == 1  # the wei per CPU-second it offered, not 10**15

        # Hostile results: refused or turned into a remote error; this process never allocates them.
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in PAYLOADS:
            future = client.submit(square, 3, key=f"{name}-{time.monotonic_ns()}", workers=[hostile.address])
            try:
                outcome: object = future.result(timeout=60)
            except (UnsafePayload, RemoteTaskError) as error:
                outcome = error
            assert isinstance(outcome, (UnsafePayload, RemoteTaskError)), f"{name} came back as {outcome!r:.200}"
        peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert peak_after - peak_before < 256 * 1024, "decoding hostile results grew this process by 256 MiB"

        # The honest provider beside it computes and is paid exactly what it metered.
        assert client.gather(client.map(square, range(20), workers=[honest])) == [i * i for i in range(20)]
        assert cluster.wait_for_settlement(60)
        session_id = cluster.session_id
    assert_paid_as_metered(market, session_id, honest)
