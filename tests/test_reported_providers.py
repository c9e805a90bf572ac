"""A provider this ledger recorded a wrong result of is not rented again unless the user asks
(``GolemCluster(allow_reported=True)``, ``%golem connect --allow-reported``): DESIGN.md section 6.

Real processes on 127.0.0.1: the embedded chain and two provider agents; the fault is recorded in
the requestor's real ledger, as the cluster records one when verification outvotes a provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client
from market_tasks import square
from marketkit import Market, local_market

from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.errors import MarketError
from golem_jupyter.ledger import Ledger
from golem_jupyter.requestor.cluster import GolemCluster

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("market"), providers=2) as market:
        yield market


def record_fault(market: Market, ledger: Ledger, provider: str) -> None:
    """A session of an earlier day in which ``provider`` was outvoted and reported."""
    chain = market.chain()
    session = new_id()
    ledger.record_session(
        session_id=session,
        network=market.network.name,
        chain_id=market.network.chain_id,
        escrow=chain.escrow.address,
        requestor="0x" + "11" * 20,
        token=NATIVE,
        budget=BUDGET,
        deadline=2**40,
    )
    ledger.record_fault(
        session_id=session, graph_id=new_id(), provider=provider, key="('square-abc', 0)", evidence=new_id()
    )


def serving(cluster: GolemCluster) -> set[str]:
    return {p for p, r in cluster.rentals.items() if r.serving}


def logs(cluster: GolemCluster) -> str:
    return cluster.get_logs(cluster=True, scheduler=False, workers=False)["Cluster"]


def test_a_reported_provider_is_rented_only_when_the_user_asks(market: Market, tmp_path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    by_price = sorted(market.providers, key=lambda p: p.price_per_cpu_second)
    cheapest, other = by_price[0].address, by_price[1].address
    record_fault(market, ledger, cheapest)
    assert ledger.reported_providers() == {cheapest}

    def rent(n: int, **options) -> GolemCluster:
        return GolemCluster(n_providers=n, budget=BUDGET, network=market.network, ledger=ledger, **options)

    # The cheapest offer would come first; its fault in this ledger keeps it out.
    with rent(1) as cluster, Client(cluster) as client:
        assert serving(cluster) == {other}
        assert [o.provider for o in cluster.pool.ranked] == [other]
        assert client.submit(square, 6).result() == 36
        text = logs(cluster)
        assert "Left out 1 provider(s) this ledger recorded a wrong result of" in text and cheapest in text

    # Too few offers left: the error says how many were left out and how to rent them anyway.
    with pytest.raises(MarketError) as raised:
        rent(2)
    message = str(raised.value)
    assert "only 1 of the 2 offers" in message, message
    assert (
        "1 provider was left out because this ledger recorded a wrong result of theirs; "
        "GolemCluster(allow_reported=True) rents them anyway." in message
    ), message

    # Asked for: the reported provider is rented again, first as the cheapest.
    with rent(1, allow_reported=True) as cluster, Client(cluster) as client:
        assert serving(cluster) == {cheapest}
        assert client.submit(square, 7).result() == 49
        assert "as allow_reported=True asks" in logs(cluster)
