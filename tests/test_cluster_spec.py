"""GolemCluster behaves as every Dask ``SpecCluster``: ``scale``, ``adapt``, async use, and a
rental that fails is replaced by the next acceptable offer instead of failing the cluster.

Real processes on 127.0.0.1: a devnet with 3 provider agents, plus, where a test needs one, a
provider of our own that accepts agreements and never starts a worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from chainkit import free_port
from distributed import Client
from market_tasks import nap, square
from marketkit import Market, agreement_with_ca, local_market, session_ca_pem

from golem_jupyter.chain import Offer, Wallet
from golem_jupyter.chain.escrow import Allocation
from golem_jupyter.chain.types import NATIVE
from golem_jupyter.errors import InvalidInput, MarketError
from golem_jupyter.market.agreements import AgreementStatus
from golem_jupyter.market.certificates import make_key_and_csr
from golem_jupyter.market.messages import TO_PROVIDER, ReplayGuard, decode_line, encode, sign_message, verify_message
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17
JOIN_TIMEOUT = 20
"""Seconds a provider that accepted has to get its worker into the scheduler: three workers starting
at once (in their sandboxes) take about 4 s here, and more than 10 s on a busy machine."""


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("market")) as market:
        yield market


def rent(market: Market, n: int, **options) -> GolemCluster:
    options.setdefault("budget", BUDGET)
    return GolemCluster(n_providers=n, network=market.network, ledger=market.ledger(), **options)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.05)


def serving(cluster: GolemCluster) -> set[str]:
    return {p for p, r in cluster.rentals.items() if r.serving}


def joined(client: Client) -> set[str]:
    return {str(w["name"]) for w in client.scheduler_info()["workers"].values()}


def test_the_demand_has_the_sandbox_asked_for_and_the_sessions_native_currency() -> None:
    """No market needed: the demand is made when the cluster is, before it starts."""
    with pytest.raises(InvalidInput, match=r"sandbox must be one of 'none', 'bwrap'.*got 'gvisor'"):
        GolemCluster(budget=BUDGET, sandbox="gvisor")

    async def main() -> None:
        for tier in (None, "none", "bwrap"):
            cluster = GolemCluster(budget=BUDGET, sandbox=tier, asynchronous=True)  # not started: no network read
            try:
                assert (cluster.demand.sandbox, cluster.demand.token) == (tier, NATIVE)
            finally:
                await cluster.close()

    asyncio.run(main())


def test_scale_rents_more_providers_and_lets_them_go(market: Market) -> None:
    """scale(3) rents the two providers not yet rented and their workers join; scale(1) lets two
    go (their agreements end as terminated in the ledger) and the one left still computes."""
    everyone = {p.address for p in market.providers}
    cheapest = min(market.providers, key=lambda p: p.price_per_cpu_second).address
    with rent(market, 1) as cluster, Client(cluster) as client:
        assert serving(cluster) == joined(client) == {cheapest}
        cluster.scale(3)
        wait_until(lambda: serving(cluster) == everyone and joined(client) == everyone, 60, "three providers serve")
        assert client.gather(client.map(square, range(30))) == [i * i for i in range(30)]

        cluster.scale(1)
        wait_until(lambda: len(serving(cluster)) == 1 and len(joined(client)) == 1, 60, "one provider is left")
        [left] = serving(cluster)
        assert joined(client) == {left}
        assert client.submit(square, 7).result() == 49

        def agreements() -> dict:
            return {a.provider: a.status for a in cluster.ledger.agreements(cluster.session_id)}

        # A rental stops serving before its close has written the agreement's end to the ledger.
        let_go = everyone - {left}
        wait_until(lambda: all(agreements()[p] == AgreementStatus.TERMINATED for p in let_go), 60, "both ended")
        assert agreements()[left] == AgreementStatus.ACTIVE


def test_adapt_rents_under_load_and_lets_go_when_idle(market: Market) -> None:
    """adapt(minimum=1, maximum=3) rents more providers while 40 half-second tasks wait, and
    gives them back once the work is done, keeping the minimum."""
    with rent(market, 1) as cluster, Client(cluster) as client:
        cluster.adapt(minimum=1, maximum=3, interval="100ms", wait_count=3, target_duration="1s")
        futures = client.map(nap, [0.5] * 40, pure=False)
        wait_until(lambda: len(serving(cluster)) > 1, 120, "adapt rents more than one provider")
        assert client.gather(futures) == [0.5] * 40
        wait_until(lambda: len(serving(cluster)) == 1 and len(joined(client)) == 1, 120, "adapt is back to one")


def _workers_on_the_scheduler(dask_scheduler) -> dict[str, tuple[str, int]]:
    return {str(ws.name): (ws.status.name, len(ws.processing)) for ws in dask_scheduler.workers.values()}


def test_a_joining_worker_gets_no_task_until_its_provider_confirmed_its_allocation(market: Market) -> None:
    """While one provider works through a queue of naps, a second is rented with its allocation held
    back: its worker joins the scheduler but stays paused there, with no task and nothing on its
    own meter, and nothing is allocated to it. Once the allocation is made and the provider
    confirmed it, the worker is admitted and takes its share of the queue."""
    with rent(market, 1) as cluster, Client(cluster) as client:
        [first] = cluster.rentals
        payments = cluster.payments
        back, go = payments.back, threading.Event()

        async def held_back(account) -> None:
            while not go.is_set():
                await asyncio.sleep(0.05)
            await back(account)

        payments.back = held_back
        futures = client.map(nap, [0.2] * 100, pure=False)
        try:
            cluster.scale(2)
            wait_until(lambda: len(joined(client)) == 2, 60, "the second provider's worker joins")
            [second] = joined(client) - {first}
            time.sleep(1)  # tasks are waiting all this time
            workers = client.run_on_scheduler(_workers_on_the_scheduler)
            assert workers[second] == ("paused", 0) and workers[first][0] == "running"
            meter = agreement_with_ca(market.home, second, session_ca_pem(cluster)) / "meter.json"
            assert read_meter(meter)["tasks"] == 0
            assert market.chain().escrow.allocation(cluster.session_id, second).allocated == 0
            assert second not in serving(cluster)
        finally:
            go.set()
        wait_until(lambda: serving(cluster) == {first, second}, 60, "the second provider is admitted")
        assert market.chain().escrow.allocation(cluster.session_id, second).allocated > 0
        wait_until(lambda: read_meter(meter)["tasks"] > 0, 60, "the second worker runs naps")
        assert client.gather(futures) == [0.2] * 100


def test_async_use_and_scale(market: Market) -> None:
    """``async with GolemCluster(..., asynchronous=True)`` works, and so do ``scale`` and ``await cluster``."""

    async def main() -> None:
        async with (
            GolemCluster(
                n_providers=1, budget=BUDGET, network=market.network, ledger=market.ledger(), asynchronous=True
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            assert await client.submit(square, 3) == 9
            await cluster.scale(2)
            await cluster  # as for every SpecCluster: the rentals the spec asks for have started
            assert len(serving(cluster)) == 2
            await client.wait_for_workers(2)

    asyncio.run(main())


def test_status_goes_to_logs_and_the_widget_not_to_print(market: Market, capsys: pytest.CaptureFixture[str]) -> None:
    """What a Dask user looks at works: get_logs, the widget (with its scaling controls) and the
    HTML repr naming each rental, and nothing is printed."""
    with rent(market, 1) as cluster:
        logs = cluster.get_logs(cluster=True, scheduler=False, workers=False)["Cluster"]
        assert "Opened session" in logs and "Rented" in logs
        assert cluster._supports_scaling
        widget = cluster._widget()
        assert widget is not None and widget.get_title(1) == "Scaling"  # scale and adapt buttons
        [provider] = cluster.rentals
        assert provider in cluster._repr_html_() and "active" in cluster._repr_html_()
    assert capsys.readouterr().out == ""


class _SilentProvider(socketserver.ThreadingTCPServer):
    """A provider agent that accepts every proposal and confirmation and never starts a worker."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, wallet: Wallet, chain_id: int) -> None:
        super().__init__(("127.0.0.1", free_port()), _SilentHandler)
        self.wallet, self.chain_id = wallet, chain_id
        self.replay = ReplayGuard()
        self.kinds: list[str] = []

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


class _SilentHandler(socketserver.StreamRequestHandler):
    server: _SilentProvider

    def handle(self) -> None:
        server = self.server
        message = verify_message(
            decode_line(self.rfile.readline().rstrip(b"\n")),
            chain_id=server.chain_id,
            recipient=server.wallet.address,
            kinds=TO_PROVIDER,
            replay=server.replay,
        )
        server.kinds.append(message.kind)
        agreement = os.urandom(32) if message.kind == "propose" else message.body["agreementId"]
        if message.kind == "propose":
            kind, body = "accept", {"agreementId": agreement, "csr": make_key_and_csr(server.wallet.address)[1]}
        elif message.kind == "confirm":
            kind, body = "started", {"agreementId": agreement, "workerName": server.wallet.address}
        else:
            kind, body = "ack", {"agreementId": agreement, "detail": "ok"}
        answer = sign_message(
            server.wallet.account, chain_id=server.chain_id, kind=kind, recipient=message.sender, body=body
        )
        self.wfile.write(encode(answer))


@contextlib.contextmanager
def silent_provider(market: Market) -> Iterator[_SilentProvider]:
    """The cheapest offer on the market (dev account 6), served by a provider that never joins."""
    wallet = Wallet.dev(6)  # the devnet's providers are accounts 1 to 3
    server = _SilentProvider(wallet, market.network.chain_id)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = market.chain(wallet).registry
    registry.publish(Offer(endpoint=server.endpoint, price_per_cpu_second=1, memory_bytes=2**30))
    try:
        yield server
    finally:
        registry.withdraw()
        server.shutdown()
        server.server_close()


def test_a_provider_that_accepts_and_never_joins_is_replaced_by_the_next_offer(market: Market) -> None:
    """The cheapest offer accepts and confirms but its worker never comes: after the join
    timeout the cluster ends that agreement (failed, in the ledger, and a terminate sent) and
    rents the next acceptable offer, so asking for 2 providers still gives 2 live ones. Nothing
    of the deposit was ever allocated to the silent provider, and closing the cluster closes the
    session at once, refunding everything that was not paid to the two live ones."""
    live = {p.address for p in market.providers}
    two_cheapest_live = {p.address for p in sorted(market.providers, key=lambda p: p.price_per_cpu_second)[:2]}
    with silent_provider(market) as silent:
        silent_address = silent.wallet.address
        with rent(market, 2, timeout=JOIN_TIMEOUT) as cluster, Client(cluster) as client:
            assert serving(cluster) == joined(client) == two_cheapest_live
            assert silent_address not in cluster.rentals
            assert client.submit(square, 5).result() == 25
            logs = cluster.get_logs(cluster=True, scheduler=False, workers=False)["Cluster"]
            assert f"Provider {silent_address} was not rented" in logs and "did not join" in logs
            agreements = {a.provider: a for a in cluster.ledger.agreements(cluster.session_id)}
            assert agreements[silent_address].status == AgreementStatus.FAILED
            assert "did not join" in agreements[silent_address].reason
            assert set(agreements) == two_cheapest_live | {silent_address}
            session_id = cluster.session_id
            assert market.chain().escrow.allocation(session_id, silent_address) == Allocation(0, 0, False)
        assert silent.kinds[:2] == ["propose", "confirm"] and "terminate" in silent.kinds
        assert "allocated" not in silent.kinds and "release" not in silent.kinds
        assert live >= two_cheapest_live
        assert_closed_with_full_refund(market, session_id, {silent_address})


def test_when_every_offer_fails_the_cluster_says_which_and_why(market: Market) -> None:
    """With the silent provider and all 3 live ones, asking for 4 cannot be met: MarketError
    names the silent provider and why, and nothing is left running. The three live providers,
    allocated their shares but given no work, release them for nothing; the silent one was never
    allocated anything; the session is closed at once and the whole budget comes back."""
    with silent_provider(market) as silent, pytest.raises(MarketError, match=r"Could rent only 3 of 4 providers") as e:
        rent(market, 4, timeout=JOIN_TIMEOUT)
    assert silent.wallet.address in str(e.value) and "did not join" in str(e.value)
    session_id = market.ledger().sessions(limit=1)[0].session_id
    chain = market.chain()
    assert chain.escrow.allocation(session_id, silent.wallet.address) == Allocation(0, 0, False)
    released = {e["provider"]: e["finalAmount"] for e in chain.escrow.events("Released", sessionId=session_id)}
    assert released == {p.address: 0 for p in market.providers}
    assert_closed_with_full_refund(market, session_id, {silent.wallet.address})
    [closed] = chain.escrow.events("SessionClosed", sessionId=session_id)
    assert closed["refund"] == BUDGET


def assert_closed_with_full_refund(market: Market, session_id: bytes | str, never_allocated: set[str]) -> None:
    """The session is closed on-chain and in the ledger, and refunded all it did not pay."""
    chain = market.chain()
    state = chain.escrow.session(session_id)
    assert state.closed and state.open_allocations == 0
    [closed] = chain.escrow.events("SessionClosed", sessionId=session_id)
    assert closed["refund"] == BUDGET - state.paid_out
    record = market.ledger().session(session_id)
    assert (record.status, record.refund, record.settled) == ("closed", closed["refund"], state.paid_out)
    allocated = {e["provider"] for e in chain.escrow.events("Allocated", sessionId=session_id)}
    assert allocated and not allocated & never_allocated


def test_a_budget_above_what_msgpack_carries_works(market: Market) -> None:
    """20 ETH is more wei than a 64-bit integer holds (msgpack's limit on the way to the
    scheduler's meter): the session opens, the meter takes the limit, a graph is paid."""
    with rent(market, 1, budget=20 * 10**18) as cluster, Client(cluster) as client:
        assert client.submit(square, 9).result() == 81
        assert cluster.wait_for_settlement(60)
        assert 0 < cluster.spent < 20 * 10**18
