"""``--verify`` on a real market with a lying provider (DESIGN.md section 6, "Results").

The devnet's liar (``golem devnet --liars``, here lying on every task) returns ``i * i + 1`` for
``square(i)``. With every task checked, its results are held back, re-run on the honest provider,
found different, refereed on the requestor's own machine (a market of two has no third), and
voted down: the liar is reported on-chain with ``reportFault``, paid nothing for the graph,
dropped from the session, and every value the notebook receives is right.
"""

from __future__ import annotations

import threading

import pytest
from distributed import Client
from market_tasks import square
from marketkit import Market, local_market

from golem_jupyter.requestor.cluster import GolemCluster

pytestmark = pytest.mark.timeout(300)

TASKS = 12


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("verify"), providers=2, liars=1, lie_fraction=1.0) as market:
        yield market


def test_a_liar_is_caught_reported_paid_nothing_and_none_of_its_values_arrive(market: Market) -> None:
    honest, liar = market.providers
    ledger = market.ledger()
    with (
        GolemCluster(n_providers=2, network=market.network, ledger=ledger, budget=10**17, verify=1.0) as cluster,
        Client(cluster) as client,
    ):
        # A chain that takes its time to mine the report (a real one takes seconds): it is mined only
        # once the values are in, so the test sees what a user sees on a slow chain.
        values_in = threading.Event()
        report_fault = cluster.chain.escrow.report_fault

        def slowly_mined(*args: object) -> object:
            values_in.wait(120)
            return report_fault(*args)

        cluster.chain.escrow.report_fault = slowly_mined
        results = client.gather(client.map(square, range(TASKS), pure=False))
        assert results == [i * i for i in range(TASKS)]
        stats = cluster.verification.stats
        assert stats.checked >= TASKS and stats.mismatches >= 1 and stats.local_runs >= 1
        # The values came as soon as the verdict was in; the liar's report waits for its transaction.
        assert cluster.faults == [] and not cluster.wait_for_reports(0.1)
        values_in.set()
        assert cluster.wait_for_reports(60)
        assert [f["provider"] for f in cluster.faults] == [liar.address]
        [fault] = cluster.faults
        assert fault["tx_hash"] and fault["graph_id"]
        session_id = cluster.session_id
        # After the liar left, what runs is checked on this machine (no other provider is left).
        assert client.submit(square, 12, pure=False).result() == 144
        assert cluster.wait_for_settlement(60)
    chain = market.chain()
    [event] = chain.escrow.events("FaultReported", sessionId=session_id)
    assert event["provider"] == liar.address and event["graphId"] == bytes.fromhex(fault["graph_id"])
    [recorded] = ledger.faults(provider=liar.address)
    assert recorded.tx_hash == fault["tx_hash"] and recorded.session_id == "0x" + session_id.hex()
    assert ledger.reported_providers() == {liar.address}
    # The graph the liar was caught in pays it nothing; the honest provider is paid for its work.
    [graph] = [g for g in ledger.graphs(session_id=session_id) if g.graph_id == "0x" + fault["graph_id"]]
    assert liar.address not in {p.provider for p in graph.payouts}
    assert honest.address in {p.provider for p in graph.payouts}
    # The ledger says what the checks did in it: the re-runs are part of the graph's work and cost.
    assert graph.verification["checked"] >= 1 and graph.verification["mismatches"] >= 1
    assert graph.verification["reruns"] >= 1 and 0 < graph.verification["cost"] <= graph.total
    agreements = {a.provider: a for a in ledger.agreements(session_id)}
    assert agreements[liar.address].status == "failed" and "reported" in agreements[liar.address].reason


def test_a_cell_with_verify_writes_back_only_checked_values(market: Market, capsys: pytest.CaptureFixture) -> None:
    """``%%golem --verify 1`` on the same kind of market, through the magic (a ledger of its own, which
    knows nothing of the first test's fault): the liar's values never reach the notebook; the
    graph it was caught in runs again without it, and the names are exactly plain Python's."""
    from magic_shell import text_shell

    cell = "squares = [n * n for n in range(16)]\ntotal = sum(squares)\nbig = [s * 3 for s in squares]"
    expected: dict = {}
    exec(cell, expected)
    with text_shell() as shell:
        shell.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 2 --budget 0.05")
        try:
            shell.run_cell_magic("golem", "--verify 1", cell)
            for name in ("squares", "total", "big"):
                assert shell.user_ns[name] == expected[name], name
            session = shell.magics_manager.registry["GolemMagics"].market
            assert [f["provider"] for f in session.cluster.faults] == [market.providers[1].address]
            out = capsys.readouterr().out
            assert "runs again without it" in out
            # The receipt of the cell says what was checked; the last run's graph had no liar left.
            assert "verified" in out and "tasks checked" in out, out
        finally:
            shell.run_line_magic("golem", "close")


@pytest.fixture(scope="module")
def honest_market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("honest"), providers=2) as market:
        yield market


def test_honest_float_noise_over_hundreds_of_checked_tasks_is_never_flagged(honest_market: Market) -> None:
    """Two honest providers add the same numbers in orders of their own (sums of 20,000 floats over 7
    magnitudes, and float32 matrix products summed in other block orders): their results differ in
    the last bits, and every one of 240 tasks is checked with the default tolerances: none is flagged."""
    from market_tasks import noisy_products, noisy_sum

    differ = sum(noisy_sum(i, order=1) != noisy_sum(i, order=2) for i in range(40))
    assert differ >= 5  # the noise is real: the same task gives other bits in another order
    assert any((noisy_products(i, order=1) != noisy_products(i, order=2)).any() for i in range(10))
    with (
        GolemCluster(
            n_providers=2, network=honest_market.network, ledger=honest_market.ledger(), budget=10**17, verify=1.0
        ) as cluster,
        Client(cluster) as client,
    ):
        sums = client.gather(client.map(noisy_sum, range(160), pure=False))
        products = client.gather(client.map(noisy_products, range(80), pure=False))
        assert len(sums) == 160 and len(products) == 80
        stats = cluster.verification.stats
        assert stats.checked >= 240
        assert stats.mismatches == 0 and stats.local_runs == 0 and cluster.faults == []
