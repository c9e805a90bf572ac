"""Failures with real processes: a provider's worker killed mid-graph, a provider that is
registered but unreachable, and the chain's RPC node going away while a graph is settled.

The first two run on a devnet with three provider agents (real processes); the last serves an
embedded chain over HTTP on a fixed port, stops the server and starts a new one on the same
port, as a node restart would look to the requestor.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chainkit import free_port
from distributed import Client
from distributed.scheduler import NoWorkerError
from IPython.core.error import UsageError
from magic_shell import text_shell
from market_tasks import nap
from marketkit import (
    Market,
    agreement_with_ca,
    assert_paid_as_metered,
    local_market,
    session_ca_pem,
    wait_until,
    worker_pids,
)
from web3 import Web3

from golem_jupyter.chain import Chain, Network, Offer, Wallet
from golem_jupyter.chain.deploy import deploy
from golem_jupyter.chain.embedded import EmbeddedProvider
from golem_jupyter.chain.errors import TransactionFailed
from golem_jupyter.chain.rpc_server import RPCServer
from golem_jupyter.chain.types import new_id
from golem_jupyter.errors import MarketError
from golem_jupyter.ledger import GraphRecord, Ledger, Payout
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.requestor.settlement import Settler
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17
NATIVE = "0x0000000000000000000000000000000000000000"


# ---------------------------------------------------------------------------- on a devnet


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("failures"), providers=3) as market:
        yield market


def rent(market: Market, n: int) -> GolemCluster:
    return GolemCluster(n_providers=n, budget=BUDGET, network=market.network, ledger=market.ledger(), quiet=True)


def test_a_provider_whose_worker_is_killed_mid_graph_is_paid_exactly_for_what_it_did(market: Market) -> None:
    """SIGKILL one of two rented workers while a graph of 60 naps runs: every result still
    arrives (Dask reruns the lost work on the survivor), the graph is settled on-chain once,
    each provider is credited on-chain exactly what the ledger records for it and what its own
    meter says it computed, at its prices (the killed one more than zero: it did work before
    dying, but less compute than the survivor), and the session's total paid out equals the sum
    of the ledger's payouts.

    A worker rewrites its meter file at most every 0.2 s, so a SIGKILL at a random moment would
    lose the last tasks it finished, and reported, from the file. The victim is therefore frozen
    (SIGSTOP) at a moment when its meter file counts exactly the results the scheduler holds from
    it, and killed while frozen: the file is then all it did that the requestor got."""
    with rent(market, 2) as cluster, Client(cluster) as client:
        futures = client.map(nap, [0.1] * 60, pure=False)

        def both_hold_results() -> bool:
            held = client.has_what()
            return len(held) == 2 and all(len(keys) >= 3 for keys in held.values())

        # Kill only once both workers hold results: the victim has done work, and loses some.
        wait_until(both_hold_results, 60, "both workers hold three results")
        names = {address: str(info["name"]) for address, info in client.scheduler_info()["workers"].items()}
        pids = worker_pids(market, client)  # the host's pids (a sandboxed worker has a PID namespace of its own)
        victim_address = min(names)
        victim = names[victim_address]
        [survivor] = set(names.values()) - {victim}
        pid = pids[victim_address]
        meter_file = agreement_with_ca(market.home, victim, session_ca_pem(cluster)) / "meter.json"

        def stopped_in_step_with_its_meter() -> bool:
            os.kill(pid, signal.SIGSTOP)
            metered = read_meter(meter_file)["tasks"]
            # Asked twice: a report the victim sent just before it stopped has arrived by the second answer.
            held = [len(client.has_what().get(victim_address, ())) for _ in range(2)]
            if held == [metered, metered]:
                return True
            os.kill(pid, signal.SIGCONT)
            return False

        wait_until(stopped_in_step_with_its_meter, 60, "the victim is stopped with its meter file in step", 0.01)
        os.kill(pid, signal.SIGKILL)

        assert client.gather(futures) == [0.1] * 60
        assert {str(w["name"]) for w in client.scheduler_info()["workers"].values()} == {survivor}
        assert cluster.wait_for_settlement(60)
        session_id = cluster.session_id

    agent = next(p for p in market.providers if p.address == victim)
    assert "worker exited with code -9" in market.log(agent)
    ledger = market.ledger()
    graphs = ledger.graphs(session_id=session_id)
    assert graphs and all(g.status == "confirmed" and g.tx_hash for g in graphs)
    chain = market.chain()
    settled = chain.escrow.events("GraphSettled", sessionId=session_id)
    assert sorted(e["graphId"].hex() for e in settled) == sorted(g.graph_id[2:] for g in graphs)

    totals = ledger.provider_totals(session_id)
    assert totals[victim] > 0
    assert totals[victim] == chain.escrow.paid(session_id, victim)
    assert totals[survivor] == chain.escrow.paid(session_id, survivor)
    seconds = {p: sum(x.cpu_seconds for g in graphs for x in g.payouts if x.provider == p) for p in (victim, survivor)}
    assert 0 < seconds[victim] < seconds[survivor]
    for provider in (victim, survivor):
        assert assert_paid_as_metered(market, session_id, provider) == totals[provider]
    assert chain.escrow.session(session_id).paid_out == sum(totals.values()) == ledger.session(session_id).settled


@pytest.fixture
def dead_offer(market: Market) -> Iterator[str]:
    """The cheapest offer on the market, from dev account 5, at a port where nothing listens."""
    wallet = Wallet.dev(5)  # the devnet's providers are accounts 1 to 3
    registry = market.chain(wallet).registry
    registry.publish(Offer(endpoint=f"127.0.0.1:{free_port()}", price_per_cpu_second=1, memory_bytes=2**30))
    try:
        yield wallet.address
    finally:
        registry.withdraw()


def test_an_unreachable_provider_is_skipped_and_named(market: Market, dead_offer: str) -> None:
    """A registered provider that does not answer is tried first (it is the cheapest), skipped,
    and named in the cluster's log; the cluster rents live providers instead, 2 of 3 or all 3.
    Asking for all 4 offers fails with a MarketError that names the dead provider."""
    live = {p.address for p in market.providers}
    offers = {o.provider for o in market.chain().registry.active_offers()}
    assert offers == live | {dead_offer}

    for n in (2, 3):
        with rent(market, n) as cluster, Client(cluster) as client:
            running = {p for p, r in cluster.rentals.items() if r.serving}
            assert len(running) == n and running <= live
            assert dead_offer not in cluster.rentals
            assert {str(w["name"]) for w in client.scheduler_info()["workers"].values()} == running
            assert client.submit(nap, 0, pure=False).result() == 0
            log = cluster.get_logs(cluster=True, scheduler=False, workers=False)["Cluster"]
            assert f"Provider {dead_offer} was not rented" in log

    with pytest.raises(MarketError, match=f"Could rent only 3 of 4 providers.*{dead_offer}"):
        rent(market, 4)


def kill_the_workers(market: Market, client: Client) -> None:
    """SIGKILL every worker of ``client``'s cluster and wait until the scheduler has let them go."""
    for pid in worker_pids(market, client).values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not client.scheduler_info()["workers"], 60, "the scheduler has no workers left")


def test_a_task_no_provider_is_left_to_run_fails_instead_of_waiting(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rented provider's worker dies: a task submitted then fails after the scheduler's
    no-workers timeout (shortened here; 30 s by default) instead of waiting forever."""
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT", "1s")  # read by the scheduler process
    with rent(market, 1) as cluster, Client(cluster) as client:
        kill_the_workers(market, client)
        with pytest.raises(NoWorkerError, match=r"timed out after .* waiting without any running workers"):
            client.submit(nap, 0, pure=False).result(timeout=60)


def test_a_cell_whose_providers_are_gone_says_so(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a notebook: once the session's providers are gone, ``--max-price`` refuses at once
    (no live provider is cheap enough), and a plain cell fails with a MarketError that says
    the providers are gone, what the provider said ended its worker, and how to rent new ones;
    nothing is written to the namespace."""
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT", "1s")
    with text_shell() as shell:
        shell.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 1 --budget 0.01")
        magics = shell.magics_manager.registry["GolemMagics"]
        [rental] = magics.market.cluster.rentals.values()
        kill_the_workers(market, magics.market.client)
        lost = magics.market.cluster.lost_workers
        wait_until(lambda: rental.provider in lost, 30, "the provider said why its worker ended")
        with pytest.raises(UsageError, match="No rented provider"):
            shell.run_cell_magic("golem", f"--max-price {rental.offer.price_per_cpu_second}wei", "x = 1 + 1")
        said = rf"provider {rental.provider}: worker exited with code -9"
        with pytest.raises(MarketError, match=rf"providers it rented are gone.*\({said}\).*%golem connect"):
            shell.run_cell_magic("golem", "", "y = sum(range(10))")
        assert "y" not in shell.user_ns


# ---------------------------------------------------------------------------- the RPC node goes away


@dataclass
class Node:
    """An embedded chain served over HTTP on a fixed port, that can be stopped and restarted."""

    provider: EmbeddedProvider
    port: int
    server: RPCServer | None = None

    def start(self) -> None:
        self.server = RPCServer(self.provider, port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def node() -> Iterator[Node]:
    node = Node(EmbeddedProvider(), free_port())
    node.start()
    try:
        yield node
    finally:
        node.stop()


@dataclass
class Graph:
    """A session on the node, and one graph recorded in the ledger and not settled yet."""

    chain: Chain
    ledger: Ledger
    session_id: bytes
    graph_id: str
    provider: str
    amount: int

    def record(self) -> GraphRecord:
        record = self.ledger.graph(self.graph_id)
        assert record is not None
        return record


def recorded_graph(node: Node, tmp_path: Path, deposit: int, amount: int) -> Graph:
    """Deploy on ``node``, open a session holding ``deposit`` (all of it allocated to the provider),
    record a graph paying the provider ``amount``."""
    requestor = Wallet.dev(0)
    network: Network = deploy(Web3(node.provider), requestor.account, node.url)
    chain = Chain.connect(network, requestor)
    session_id = new_id()
    deadline = int(time.time()) + 3600
    provider = Wallet.dev(1).address
    chain.escrow.open_session(session_id, deposit, deadline)
    chain.escrow.allocate(session_id, {provider: deposit})
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.record_session(
        session_id=session_id,
        network=network.name,
        chain_id=network.chain_id,
        escrow=network.escrow,
        requestor=requestor.address,
        token=NATIVE,
        budget=deposit,
        deadline=deadline,
        status="open",
    )
    graph_id = "0x" + new_id().hex()
    ledger.record_graph(
        session_id=session_id,
        graph_id=graph_id,
        n_tasks=10,
        result_root=new_id(),
        payouts=[Payout(provider, 2.5, 0.0, amount, amount)],
    )
    return Graph(chain, ledger, session_id, graph_id, provider, amount)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Exceptions that ended a thread during the test (a settler thread must never die)."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def test_settlement_survives_the_rpc_node_going_away_and_coming_back(
    node: Node, tmp_path: Path, thread_errors: list[BaseException]
) -> None:
    """With the node down, the graph is recorded ``failed`` with an error saying the chain
    stopped answering, and settlement keeps retrying; once a node answers again on the same
    port, the graph is settled once (settlement 0 of the session), confirmed with its transaction
    hash, and the provider is credited exactly its payout."""
    graph = recorded_graph(node, tmp_path, deposit=10**15, amount=10**12)
    node.stop()
    settler = Settler(graph.chain.escrow, graph.ledger, graph.session_id)
    try:
        settler.submit(graph.graph_id)

        def failed() -> bool:
            if thread_errors:
                raise thread_errors[0]  # the settler thread died: nothing will ever settle this graph
            return graph.record().status == "failed"

        wait_until(failed, 30, "the graph is recorded as failed")
        assert "stopped answering" in graph.record().error
        assert not settler.drain(0.5)

        node.start()
        assert settler.drain(60)
        record = graph.record()
        assert record.status == "confirmed" and record.tx_hash
        assert graph.chain.escrow.paid(graph.session_id, graph.provider) == graph.amount
        [settled] = graph.chain.escrow.events("GraphSettled", sessionId=graph.session_id)
        assert (settled["seq"], record.seq) == (0, 0)
        assert graph.ledger.unsettled_graphs(graph.session_id) == []
        assert not thread_errors
    finally:
        settler.close(timeout=1)
        graph.ledger.close()


def test_a_retried_settlement_that_was_mined_is_confirmed_not_paid_twice(
    node: Node, tmp_path: Path, thread_errors: list[BaseException]
) -> None:
    """The first attempt's transaction is mined but its answer is lost (the client raises). The
    retry sends the same settlement number, the escrow refuses it as a replay (GraphAlreadySettled),
    and the settler confirms the graph: one GraphSettled event, the provider paid once."""
    graph = recorded_graph(node, tmp_path, deposit=10**15, amount=10**12)
    escrow = graph.chain.escrow
    sent = escrow.settle_graph
    attempts: list[int] = []

    def lost_answer(*args, **kwargs):
        attempts.append(args[1])
        receipt = sent(*args, **kwargs)
        if len(attempts) == 1:
            raise TransactionFailed("the node dropped the receipt")
        return receipt

    escrow.settle_graph = lost_answer
    settler = Settler(escrow, graph.ledger, graph.session_id)
    try:
        settler.submit(graph.graph_id)
        assert settler.drain(60)
    finally:
        settler.close(timeout=1)
    record = graph.record()
    assert attempts == [0, 0]  # the same settlement number, twice
    assert (record.status, record.seq, record.attempts) == ("confirmed", 0, 2)
    assert "already settled on-chain" in record.error
    assert len(escrow.events("GraphSettled", sessionId=graph.session_id)) == 1
    assert escrow.paid(graph.session_id, graph.provider) == graph.amount
    assert escrow.session(graph.session_id).next_seq == 1
    assert not thread_errors
    graph.ledger.close()


def test_a_graph_above_the_remaining_deposit_stays_failed_and_is_retried_never_lost(
    node: Node, tmp_path: Path, thread_errors: list[BaseException]
) -> None:
    """A graph paying the provider more than the whole deposit is recorded ``failed`` with the
    contract's InsufficientDeposit sentence (its allocation cannot be topped up that far) and
    retried again and again, never marked confirmed and never paid; closing the settler says not
    everything was settled, and the ledger still lists the graph as unsettled. After a top-up of
    the session, a new settler allocates the difference and settles it."""
    graph = recorded_graph(node, tmp_path, deposit=10**12, amount=3 * 10**12)
    settler = Settler(graph.chain.escrow, graph.ledger, graph.session_id)
    try:
        settler.submit(graph.graph_id)
        seen: list[GraphRecord] = []

        def failed_three_times() -> bool:
            seen.append(graph.record())
            return seen[-1].attempts >= 3 and seen[-1].status == "failed"

        wait_until(failed_three_times, 30, "the settler has tried three times and recorded the failure")
        assert {r.status for r in seen} <= {"pending", "submitted", "failed"}  # never confirmed
        record = seen[-1]
        assert "needs more than the 0 left in session" in record.error
        assert "top the session up" in record.error
        assert record.tx_hash is None
        assert graph.chain.escrow.session(graph.session_id).next_seq == 0
        assert graph.chain.escrow.paid(graph.session_id, graph.provider) == 0
    finally:
        closed = settler.close(timeout=1)
    assert closed is False
    assert [g.graph_id for g in graph.ledger.unsettled_graphs(graph.session_id)] == [graph.graph_id]
    assert graph.record().status == "failed"

    graph.chain.escrow.top_up(graph.session_id, 2 * 10**12)
    resumed = Settler(graph.chain.escrow, graph.ledger, graph.session_id)
    try:
        resumed.submit(graph.graph_id)
        assert resumed.drain(60)
    finally:
        assert resumed.close(timeout=1)
    assert graph.record().status == "confirmed"
    assert graph.chain.escrow.paid(graph.session_id, graph.provider) == graph.amount
    assert graph.ledger.unsettled_graphs(graph.session_id) == []
    assert not thread_errors
    graph.ledger.close()
