"""Billing follows what the scheduler observed, not what a worker claims (DESIGN.md section 6).

A hostile provider with a genuine certificate (:mod:`hostile_provider`: a fake agent that
speaks the real signed protocol and runs a real ``dask worker``) is rented beside an honest one
of a devnet. Its worker computes every task honestly, but :mod:`hostile_reports` forges each
report on its way to the scheduler: 100,000 s more compute than it ran, sent 50 times, with a
report for a key the scheduler never sent anyone and reports for the honest worker's keys.
Real processes on 127.0.0.1, as in test_market.py."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from distributed import Client, wait
from hostile_provider import hostile_provider
from hostile_reports import FOREIGN_KEYS_ENV, INFLATE_ENV, REPEAT_ENV
from market_tasks import nap
from marketkit import Market, assert_paid_as_metered, local_market

from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.scheduler.metering import CLOCK_RATE_SLACK, OBSERVED_SLACK_SECONDS

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17
TASKS = 20
NAP = 0.05
INFLATE = 100_000
REPEAT = 50


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("market"), providers=1) as market:
        yield market


def test_a_provider_that_inflates_and_repeats_its_reports_is_paid_only_what_the_scheduler_saw(
    market: Market, tmp_path: Path
) -> None:
    """The hostile provider (one thread, priced a wei below the honest one, so rented first) and
    the honest one each run 20 naps of 0.05 s pinned to their worker. The hostile one reports
    each nap as 100,000 s longer, 50 times over, plus a report of a key never sent and of every
    honest key while it runs on the honest worker. Before the meter billed from what the
    scheduler saw, that made its bill the whole budget. Now it is paid at most the time the
    scheduler had its naps out (bounded from here by the wall time of the graphs, times its one
    thread, at its price), at least what it computed, the honest provider exactly what its own
    meter says, and the scheduler's log names the hostile provider for each kind of lie."""
    [honest] = market.providers
    price = honest.price_per_cpu_second - 1
    foreign_keys = tmp_path / "foreign-keys.json"
    env = {INFLATE_ENV: str(INFLATE), REPEAT_ENV: str(REPEAT), FOREIGN_KEYS_ENV: str(foreign_keys)}
    with hostile_provider(market, tmp_path / "hostile", price_per_cpu_second=price, env=env) as hostile:
        with (
            GolemCluster(n_providers=2, budget=BUDGET, network=market.network, ledger=market.ledger()) as cluster,
            Client(cluster) as client,
        ):
            assert set(cluster.rentals) == {hostile.address, honest.address}, hostile.worker_logs()
            address = {str(w["name"]): a for a, w in client.scheduler_info()["workers"].items()}
            honest_keys = [f"honest-nap-{i}" for i in range(TASKS)]
            foreign_keys.write_text(json.dumps(honest_keys))
            start = time.monotonic()
            honest_naps = client.map(nap, [NAP] * TASKS, key=honest_keys, workers=[address[honest.address]])
            hostile_naps = client.map(
                nap, [NAP] * TASKS, key=[f"hostile-nap-{i}" for i in range(TASKS)], workers=[address[hostile.address]]
            )
            wait(honest_naps + hostile_naps)
            wall = time.monotonic() - start
            assert cluster.wait_for_settlement(60)
            session_id = cluster.session_id
            log = (cluster._workdir / "scheduler.log").read_text()
            statuses = [f.status for f in honest_naps + hostile_naps]
            results = client.gather(honest_naps + hostile_naps, errors="skip")
            counts = client.run(
                lambda dask_worker: dict(dask_worker.hostile_forger.counts), workers=[address[hostile.address]]
            )

    chain = market.chain()
    paid = chain.escrow.paid(session_id, hostile.address)
    graphs = len(market.ledger().graphs(session_id=session_id))
    # Its one thread busy the whole time (with the slack the meter allows for two clocks), plus a
    # wei of rounding per graph.
    observed = math.ceil((wall * 1 * (1 + CLOCK_RATE_SLACK) + OBSERVED_SLACK_SECONDS) * price) + graphs
    computed = TASKS * NAP * price
    print(
        f"hostile provider: paid {paid} wei; the scheduler could have seen at most {observed} wei "
        f"({wall:.3f} s of wall time); it computed {computed:.0f} wei; honest price {honest.price_per_cpu_second}; "
        f"its worker sent {counts}"
    )
    assert paid <= observed, f"paid {paid / observed:.3g} times what the scheduler could have seen"
    assert paid >= computed  # its naps ran: what it did is paid
    assert_paid_as_metered(market, session_id, honest.address)

    assert statuses == ["finished"] * (2 * TASKS)
    assert results == [NAP] * (2 * TASKS)
    [forger] = counts.values()
    assert forger["reports"] == TASKS and forger["forged"] == TASKS * REPEAT
    assert forger["unsolicited"] == TASKS and forger["foreign"] >= 1

    lines = [line for line in log.splitlines() if hostile.address in line]
    assert re.search(r"reported task '?hostile-nap-\d+'? \(run \d+\), which it had reported already", log), lines[:20]
    assert re.search(r"reported task '?hostile-unsolicited-\d+'? .*which the scheduler never sent it", log), lines[:20]
    elsewhere = "(sent to another worker|never sent it|another worker is running)"
    # The gate's refusal ("reported task 'honest-nap-4', which another worker is running") or the
    # meter's ("reported task 'honest-nap-4' (run 7), which ..."), whichever saw the report first.
    assert re.search(rf"reported task '?honest-nap-\d+'?[ ,].*{elsewhere}", log), lines[:20]
    assert re.search(r"reported [\d.e+]+ s of compute for task '?hostile-nap-\d+'?, but the scheduler saw", log), lines[
        :20
    ]
    assert all(hostile.address in line for line in log.splitlines() if "not paid" in line)
    assert honest.address not in "\n".join(
        line for line in log.splitlines() if "not paid" in line or "saw at most" in line
    )
