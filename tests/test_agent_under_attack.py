"""Hostile peers against a live provider agent: strangers on the network and funded requestors.

One devnet with one real provider agent (``--max-agreements 2``) serves the module. Its
descriptor limit is lowered to 1,024, a common default, as on the machine where the attacks
below were first seen to work:

* a stranger holds 1,100 idle TCP connections to the agent's negotiation port (from eleven
  loopback addresses, reconnecting whatever the agent closes), which made reading a meter file
  raise ``OSError`` (no descriptor left), which stopped the whole agent;
* a requestor with a funded session sends proposals it never confirms, which took every worker
  slot for 60 s, so that nobody else could rent the provider; or proposes and withdraws in a
  loop, which left an agreement in memory and a directory on disk for each;
* a requestor opens a session funded in an ERC-20 it minted itself, for free.
* a requestor that pays nothing runs a task that switches the worker's meter off and feeds the
  agent zero totals (on a second, sandboxed agent with a tight exposure limit).

Each test shows the agent keeps serving, and that an honest requestor beside the attacker rents
it, runs a graph and pays exactly what the provider's own meter says.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hostile_tasks as hostile
import psutil
import pytest
from distributed import Client
from market_tasks import square
from marketkit import Market, agreement_with_ca, assert_paid_as_metered, local_market, session_ca_pem, wait_until

from golem_jupyter.chain import Wallet
from golem_jupyter.chain.artifacts import load_artifact
from golem_jupyter.chain.deploy import deploy_contract
from golem_jupyter.chain.transactions import Transactor
from golem_jupyter.chain.types import new_id
from golem_jupyter.devnet import BASE_CPU_PRICE, DevnetProvider
from golem_jupyter.market.certificates import SessionCA
from golem_jupyter.market.messages import TO_REQUESTOR, Reason, ReplayGuard, sign_message, verify_message
from golem_jupyter.provider.agent import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_OPEN_PROPOSALS,
    MAX_PROPOSALS_PER_MINUTE,
)
from golem_jupyter.provider.sandbox import sandbox_unavailable_reason
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

DESCRIPTORS = 1024
FLOOD = 1100
FLOOD_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 13)]  # the honest requestor speaks from 127.0.0.1
BUDGET = 10**17
DEPOSIT = 10**17
HONEST = Wallet.dev(0)
MALLORY = Wallet.dev(9)
LOOPER = Wallet.dev(7)
MINTER = Wallet.dev(8)
"""Opens a session in a token of its own (not Mallory: her proposals are still open)."""
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("attack"), providers=1, options=("--max-agreements", "2")) as market:
        [agent] = market.providers
        psutil.Process(agent.pid).rlimit(psutil.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))
        yield market


@pytest.fixture(scope="module")
def agent(market: Market) -> DevnetProvider:
    return market.providers[0]


@pytest.fixture(scope="module")
def erc20(market: Market) -> str:
    """A TestToken MINTER deployed on the devnet, with as much of it minted to itself as it likes."""
    chain = market.chain(MINTER)
    address, _ = deploy_contract(chain.w3, MINTER.account, "TestToken", directory=ARTIFACTS)
    token = chain.w3.eth.contract(address=address, abi=load_artifact("TestToken", ARTIFACTS)["abi"])
    Transactor(chain.w3, MINTER.account).send(token.functions.mint(MINTER.address, 10 * DEPOSIT))
    return address


def rent(market: Market) -> GolemCluster:
    return GolemCluster(n_providers=1, budget=BUDGET, network=market.network, ledger=market.ledger(), quiet=True)


@contextlib.contextmanager
def agent_log_on_failure(market: Market, agent: DevnetProvider) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(f"the agent's log ends:\n{market.log(agent)[-5000:]}")
        raise


def alive(agent: DevnetProvider) -> bool:
    try:
        return psutil.Process(agent.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def request(agent: DevnetProvider, wallet: Wallet, kind: str, body: dict[str, Any], chain_id: int) -> Any:
    """Send one signed request to ``agent`` from ``wallet``; its verified answer."""
    wire = sign_message(wallet.account, chain_id=chain_id, kind=kind, recipient=agent.address, body=body)
    host, _, port = agent.endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(json.dumps(wire).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"the agent closed without answering: {reply[:200]!r}"
            reply += chunk
    return verify_message(
        json.loads(reply), chain_id=chain_id, recipient=wallet.address, kinds=TO_REQUESTOR, replay=ReplayGuard()
    )


# ---------------------------------------------------------------------------- a stranger's connections


class Flood:
    """``FLOOD`` idle connections to an endpoint, spread over ``FLOOD_ADDRESSES``, each reopened as
    soon as the agent closes it, until stopped."""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        self.target = (host, int(port))
        self.stopped = threading.Event()
        self.opened = 0
        self.closed_by_agent = 0
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def _open(self, source: str) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            sock.connect_ex(self.target)
        except OSError:
            sock.close()
            return None
        self.opened += 1
        return sock

    def _run(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        per_address = FLOOD // len(FLOOD_ADDRESSES) + 1
        for source in FLOOD_ADDRESSES:
            for _ in range(per_address):
                sock = self._open(source)
                if sock is not None:
                    selector.register(sock, selectors.EVENT_READ, source)
                    self.held.append(sock)
        while not self.stopped.is_set():
            for key, _ in selector.select(timeout=0.1):
                sock, source = key.fileobj, key.data
                try:
                    data = sock.recv(1)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    continue
                self.closed_by_agent += 1  # the agent let it go: take its place again
                selector.unregister(sock)
                sock.close()
                self.held.remove(sock)
                replacement = self._open(source)
                if replacement is not None:
                    selector.register(replacement, selectors.EVENT_READ, source)
                    self.held.append(replacement)
        for sock in self.held:
            sock.close()
        selector.close()

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self._thread.join(30)


def test_a_flood_of_idle_connections_neither_stops_the_agent_nor_its_agreements(
    market: Market, agent: DevnetProvider
) -> None:
    """Before: the agent took every connection until it had no descriptor left; its next read
    of a meter file raised OSError and the agent stopped. After: it holds at most MAX_CONNECTIONS
    (MAX_CONNECTIONS_PER_ADDRESS from one address), letting the idle ones that arrived first from
    the busiest address go; the honest requestor rents it, runs graphs and is billed exactly while
    the flood goes on, and its requests (from an address that holds few connections) are served."""
    with rent(market) as cluster, Client(cluster) as client, agent_log_on_failure(market, agent):
        session_id = cluster.session_id
        with Flood(agent.endpoint) as flood:
            wait_until(lambda: flood.opened >= FLOOD, 60, "the flood's connections are open")
            wait_until(lambda: flood.closed_by_agent > 0, 60, "the agent lets idle connections go")
            for round_ in range(3):
                assert client.gather(client.map(square, range(50), pure=False)) == [x * x for x in range(50)]
                assert cluster.wait_for_settlement(60), "the graph is paid while the flood goes on"
                pong = request(agent, HONEST, "ping", {}, market.network.chain_id)
                assert pong.kind == "pong"
                descriptors = psutil.Process(agent.pid).num_fds()
                assert descriptors < DESCRIPTORS - 100, f"round {round_}: the agent holds {descriptors} descriptors"
            assert alive(agent)
        print(
            f"flood: {flood.opened} connections opened, {flood.closed_by_agent} let go by the agent; "
            f"cap {MAX_CONNECTIONS} in all, {MAX_CONNECTIONS_PER_ADDRESS} per address"
        )
    assert alive(agent)
    assert_paid_as_metered(market, session_id, agent.address)


# ---------------------------------------------------------------------------- a funded requestor's proposals


def funded_session(market: Market, wallet: Wallet, token: str | None = None) -> bytes:
    """A new session of ``wallet``'s holding DEPOSIT (of ``token``; native by default)."""
    session_id = new_id()
    market.chain(wallet).escrow.open_session(session_id, DEPOSIT, int(time.time()) + 3600, token=token)
    return session_id


def propose(market: Market, agent: DevnetProvider, wallet: Wallet, session_id: bytes) -> Any:
    body = {
        "sessionId": session_id,
        "escrow": market.network.escrow,
        "chainId": market.network.chain_id,
        "pricePerCpuSecond": agent.price_per_cpu_second,
        "pricePerGpuSecond": 0,
        "startFee": 0,
        "gpus": 0,
        "schedulerAddress": "tls://127.0.0.1:1",
        "caCertificate": SessionCA.create().certificate_pem,
        "deadline": int(time.time()) + 3600,
    }
    return request(agent, wallet, "propose", body, market.network.chain_id)


def test_unconfirmed_proposals_take_no_worker_slot(market: Market, agent: DevnetProvider) -> None:
    """Before: a requestor's proposals, never confirmed, held both worker slots for 60 s and an
    honest requestor was refused (NO_CAPACITY). After: a slot is taken only by a confirmed
    agreement, a requestor has at most MAX_OPEN_PROPOSALS proposals open (the next is refused
    with TOO_MANY_PROPOSALS), and the honest requestor rents the provider at once."""
    session_id = funded_session(market, MALLORY)
    answers = [propose(market, agent, MALLORY, session_id) for _ in range(MAX_OPEN_PROPOSALS + 2)]
    kinds = [a.kind for a in answers]
    assert kinds == ["accept"] * MAX_OPEN_PROPOSALS + ["reject"] * 2, kinds
    assert {a.body["code"] for a in answers[MAX_OPEN_PROPOSALS:]} == {Reason.TOO_MANY_PROPOSALS}
    with rent(market) as cluster, Client(cluster) as client:
        assert set(cluster.rentals) == {agent.address}
        assert client.submit(square, 12, pure=False).result(timeout=60) == 144
        assert cluster.wait_for_settlement(60)
        session = cluster.session_id
    assert_paid_as_metered(market, session, agent.address)
    assert alive(agent)


def test_proposals_withdrawn_at_once_leave_nothing_behind_and_are_counted(
    market: Market, agent: DevnetProvider
) -> None:
    """Before: proposing and withdrawing in a loop got past the open-proposal cap, and every
    proposal left an agreement in the agent's memory and a directory on its disk, for ever (2,077
    in 40 s from one requestor). After: a withdrawn proposal is forgotten, nothing is written
    before a confirmation, and a requestor gets MAX_PROPOSALS_PER_MINUTE proposals a minute."""
    agreements = market.home / "provider" / agent.address / "agreements"
    before = set(agreements.iterdir()) if agreements.exists() else set()
    session_id = funded_session(market, LOOPER)
    answers = []
    for _ in range(MAX_PROPOSALS_PER_MINUTE + 3):
        answer = propose(market, agent, LOOPER, session_id)
        answers.append(answer.kind if answer.kind == "accept" else answer.body["code"])
        if answer.kind == "accept":
            withdraw = {"agreementId": answer.body["agreementId"], "reason": "changed my mind"}
            assert request(agent, LOOPER, "terminate", withdraw, market.network.chain_id).kind == "ack"
    assert answers == ["accept"] * MAX_PROPOSALS_PER_MINUTE + [Reason.TOO_MANY_PROPOSALS] * 3
    assert (set(agreements.iterdir()) if agreements.exists() else set()) == before
    assert request(agent, HONEST, "ping", {}, market.network.chain_id).kind == "pong"


def test_a_session_in_a_token_the_provider_is_not_priced_in_is_refused(
    market: Market, agent: DevnetProvider, erc20: str
) -> None:
    """Before: the agent worked for a session funded in an ERC-20 the requestor minted for free.
    After: its offer states the token it is priced in (the native currency), and a proposal for
    a session in any other token is refused with WRONG_TOKEN and a sentence naming both."""
    offer = market.chain().registry.offer_of(agent.address)
    assert offer.capabilities["token"] == "0x0000000000000000000000000000000000000000"
    answer = propose(market, agent, MINTER, funded_session(market, MINTER, token=erc20))
    assert answer.kind == "reject" and answer.body["code"] == Reason.WRONG_TOKEN, answer.body
    assert erc20.lower() in answer.body["reason"].lower()
    assert request(agent, HONEST, "ping", {}, market.network.chain_id).kind == "pong"


# ---------------------------------------------------------------------------- a requestor's tasks against the meter

MAX_UNPAID_SECONDS = 8


@pytest.fixture(scope="module")
def strict_market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    """One sandboxed agent that stops serving past MAX_UNPAID_SECONDS of unpaid CPU at its price."""
    reason = sandbox_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"The provider sandbox must run under CI: {reason}", pytrace=False)
        pytest.skip(f"no provider sandbox here: {reason}")
    max_unpaid = str(MAX_UNPAID_SECONDS * BASE_CPU_PRICE)
    home = tmp_path_factory.mktemp("strict")
    with local_market(home, providers=1, sandbox="bwrap", options=("--max-unpaid", max_unpaid)) as market:
        assert market.providers[0].price_per_cpu_second == BASE_CPU_PRICE
        yield market


def test_a_task_that_silences_the_meter_is_cut_off_by_the_kernels_count(strict_market: Market) -> None:
    """A requestor that never sends a voucher runs a task that switches the worker's meter off and
    feeds the agent zero totals, then computes. Before: to the agent nothing was ever owed, and it
    served on without end. After: the kernel's count of the sandbox's CPU time is held to the same
    exposure limit, and the agent stops serving within a few seconds past it, saying so."""
    [agent] = strict_market.providers
    with rent(strict_market) as cluster, Client(cluster) as client:
        cluster.payments._pay = _never  # a requestor that pays nothing
        [worker] = client.scheduler_info()["workers"]
        assert client.submit(hostile.silence_the_meter, workers=[worker], pure=False).result(timeout=60) == "silenced"
        directory = agreement_with_ca(strict_market.home, agent.address, session_ca_pem(cluster))
        deadline = time.monotonic() + 120
        while "EXPOSURE_LIMIT" not in strict_market.log(agent):
            assert time.monotonic() < deadline, "the agent served a silenced meter for two minutes"
            with contextlib.suppress(Exception):  # the worker goes away mid-burn once the agent stops
                client.submit(hostile.burn, 1.0, workers=[worker], pure=False).result(timeout=30)
        meter = read_meter(directory / "meter.json")
    assert meter["cpu_seconds"] == 0 and meter["sandbox_cpu_seconds"] > MAX_UNPAID_SECONDS
    line = next(line for line in strict_market.log(agent).splitlines() if "EXPOSURE_LIMIT" in line)
    assert "owed 0, the kernel counted" in line and "paid 0" in line, line
    assert meter["sandbox_cpu_seconds"] < MAX_UNPAID_SECONDS + 10  # stopped soon after the limit


async def _never(graph: object) -> None:
    return None
