"""The market end to end: a devnet with 3 provider agents, GolemClusters renting them, real
graphs metered and settled on-chain, and the chain, the ledger and the providers' meters
agreeing on who earned what. Everything runs as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.array as da
import pytest
from distributed import Client
from market_tasks import nap, square
from marketkit import Market, local_market

from golem_jupyter.errors import BudgetExceeded, InvalidInput, MarketError
from golem_jupyter.market.certificates import SessionCA
from golem_jupyter.requestor.cluster import GolemCluster

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("market")) as market:
        yield market


def rent(market: Market, n: int = 2, **options) -> GolemCluster:
    options.setdefault("budget", BUDGET)
    return GolemCluster(n_providers=n, network=market.network, ledger=market.ledger(), **options)


def test_devnet_lists_three_providers_with_offers(market: Market) -> None:
    chain = market.chain()
    offers = {o.provider: o for o in chain.registry.active_offers()}
    assert len(market.providers) == 3
    for provider in market.providers:
        offer = offers[provider.address]
        assert offer.endpoint == provider.endpoint
        assert offer.price_per_cpu_second == provider.price_per_cpu_second
    prices = [p.price_per_cpu_second for p in market.providers]
    assert len(set(prices)) == 3


def test_cluster_rents_the_two_cheapest_runs_graphs_and_everyone_agrees(market: Market) -> None:
    cheapest = sorted(market.providers, key=lambda p: p.price_per_cpu_second)[:2]
    with rent(market) as cluster, Client(cluster) as client:
        assert set(cluster.rentals) == {p.address for p in cheapest}
        names = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
        assert names == {p.address for p in cheapest}

        results = client.gather(client.map(square, range(1000)))
        assert results == [x * x for x in range(1000)]
        x = da.arange(200_000, chunks=10_000)
        assert int((x * 2).sum().compute()) == 2 * sum(range(200_000))
        assert cluster.wait_for_settlement(60)
        session_id = cluster.session_id
        html = cluster._repr_html_()
        assert "spent" in html and cheapest[0].address in html

    chain = market.chain()
    ledger = market.ledger()
    graphs = ledger.graphs(session_id=session_id)
    assert len(graphs) >= 2
    assert all(g.status == "confirmed" and g.tx_hash for g in graphs)
    settled = chain.escrow.events("GraphSettled", sessionId=session_id)
    assert sorted(e["graphId"].hex() for e in settled) == sorted(g.graph_id[2:] for g in graphs)  # each once
    paid_events = chain.escrow.events("Paid", sessionId=session_id)
    prices = {p.address: p.price_per_cpu_second for p in market.providers}
    for provider in cluster.rentals:
        ledger_total = ledger.provider_totals(session_id).get(provider, 0)
        chain_total = sum(e["amount"] for e in paid_events if e["provider"] == provider)
        assert chain_total == ledger_total == chain.escrow.paid(session_id, provider)
        seconds = sum(p.cpu_seconds for g in graphs for p in g.payouts if p.provider == provider)
        assert ledger_total == pytest.approx(seconds * prices[provider], abs=len(graphs))
        meter = market.meter(provider, session_id)
        assert meter["cpu_seconds"] == pytest.approx(seconds, rel=1e-6, abs=1e-6)
    assert ledger.session(session_id).spent == sum(e["amount"] for e in paid_events)


def test_a_worker_without_the_session_certificate_cannot_join(market: Market, tmp_path: Path) -> None:
    outsider = SessionCA.create("someone else")
    credentials = outsider.write_credentials(tmp_path, "intruder")
    with rent(market, 1) as cluster, Client(cluster) as client:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                "--name", "intruder", "--no-nanny", "--host", "127.0.0.1",
                "--tls-ca-file", str(credentials.ca_file),
                "--tls-cert", str(credentials.cert_file),
                "--tls-key", str(credentials.key_file),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(6)
            names = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
            assert names == set(cluster.rentals)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_a_provider_above_max_price_is_never_contacted(market: Market) -> None:
    cheapest, *expensive = sorted(market.providers, key=lambda p: p.price_per_cpu_second)
    logs_before = {p.address: len(market.log(p)) for p in expensive}
    with pytest.raises(MarketError, match=r"only 1 of the 3 offers"):
        rent(market, 2, max_price_cpu=cheapest.price_per_cpu_second)
    with rent(market, 1, max_price_cpu=cheapest.price_per_cpu_second) as cluster:
        assert list(cluster.rentals) == [cheapest.address]
        session = cluster.session_id.hex()
    for provider in expensive:
        assert session not in market.log(provider)[logs_before[provider.address] :]


def test_a_session_with_too_little_deposit_is_refused(market: Market) -> None:
    with pytest.raises(MarketError, match=r"refused \(INSUFFICIENT_DEPOSIT\)"):
        rent(market, 1, budget=1)


def test_a_budget_of_zero_is_refused_at_once(market: Market) -> None:
    with pytest.raises(InvalidInput, match="budget of 0"):
        rent(market, 1, budget=0)


def test_budget_guard_cancels_the_rest_settles_what_ran(market: Market) -> None:
    price = min(p.price_per_cpu_second for p in market.providers)
    budget = int(price * 1.5)  # a CPU-second and a half at the cheapest price
    with rent(market, 1, budget=budget, max_price_cpu=price) as cluster, Client(cluster) as client:
        futures = client.map(nap, [0.05] * 100, pure=False)
        with pytest.raises(BudgetExceeded, match="budget is spent"):
            client.gather(futures)
        assert cluster.wait_for_settlement(60)
        assert cluster.budget_exceeded
        session_id = cluster.session_id
    chain = market.chain()
    state = chain.escrow.session(session_id)
    assert 0 < state.paid_out <= budget
    ledger = market.ledger()
    assert ledger.session(session_id).settled == state.paid_out


def test_a_task_still_running_when_the_guard_fires_is_paid_as_the_provider_metered(market: Market) -> None:
    """The guard fails a running task at once, but the worker cannot stop it: it finishes, and the
    provider's meter counts it. Its late report is billed too (a graph of its own), so the bill
    equals the provider's meter, the provider is not underpaid, and it goes on serving."""
    price = min(p.price_per_cpu_second for p in market.providers)
    with rent(market, 1, max_price_cpu=price) as cluster, Client(cluster) as client:
        [provider] = cluster.rentals
        cluster.cap_next_graphs(price // 2)  # half a CPU-second: the guard fires after the first nap
        futures = client.map(nap, [0.5] * 12, pure=False)
        with pytest.raises(BudgetExceeded, match="budget"):
            client.gather(futures)
        # The erred futures stay held, so the worker's report comes while the scheduler keeps the
        # tasks as erred: the case where Dask drops the report.
        session_id = cluster.session_id
        ledger = market.ledger()

        def billed() -> float:
            return sum(p.cpu_seconds for g in ledger.graphs(session_id=session_id) for p in g.payouts)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metered = market.meter(provider, session_id)
            if metered["tasks"] >= 2 and billed() == pytest.approx(metered["cpu_seconds"], rel=1e-6):
                break
            time.sleep(0.1)
        metered = market.meter(provider, session_id)
        assert metered["tasks"] >= 2, "a second nap was running when the guard fired"
        assert billed() == pytest.approx(metered["cpu_seconds"], rel=1e-6)

        time.sleep(3)  # past the provider's 2 s grace for an idle, underpaid agreement
        cluster.cap_next_graphs(None)
        assert client.submit(square, 7).result(timeout=60) == 49
        assert cluster.wait_for_settlement(60)
    agent = next(p for p in market.providers if p.address == provider)
    assert "stopped serving" not in market.log(agent)


def test_providers_claim_their_vouchers_when_the_requestor_is_killed(market: Market, tmp_path: Path) -> None:
    """The requestor dies after a graph, before settling it: each provider claims its voucher."""
    script = tmp_path / "requestor.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from distributed import Client
            from market_tasks import busy
            from golem_jupyter.chain import Network
            from golem_jupyter.ledger import Ledger
            from golem_jupyter.requestor import settlement
            from golem_jupyter.requestor.cluster import GolemCluster

            settlement.Settler.submit = lambda self, graph_id: None  # dies before settling
            network = Network.load({str(market.home / "devnet.json")!r})
            cluster = GolemCluster(n_providers=2, budget={BUDGET}, network=network, quiet=True,
                                   ledger=Ledger({str(market.home / "ledger.sqlite")!r}))
            client = Client(cluster)
            client.gather(client.map(busy, range(300)))
            while cluster._graphs_seen == 0 or cluster._voucher_tasks:
                time.sleep(0.05)
            print("SESSION 0x" + cluster.session_id.hex(), flush=True)
            time.sleep(600)
            """
        )
    )
    requestor = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        session_hex = requestor.stdout.readline().strip().removeprefix("SESSION ")
        assert session_hex.startswith("0x"), "the requestor script failed"
    finally:
        requestor.kill()
        requestor.wait()
    ledger = market.ledger()
    [graph] = ledger.graphs(session_id=session_hex)
    assert graph.status == "pending"
    chain = market.chain()
    deadline = time.time() + 60
    promised = {p.provider: p.cumulative for p in graph.payouts}
    while time.time() < deadline:
        paid = {p: chain.escrow.paid(session_hex, p) for p in promised}
        if paid == promised:
            break
        time.sleep(0.5)
    assert paid == promised
    claims = chain.escrow.events("Claimed", sessionId=session_hex)
    assert {c["provider"]: c["amount"] for c in claims} == promised
