"""The Jupyter server extension: its REST API as the side panel calls it, through a real Jupyter
server (pytest-jupyter), against ledger rows written here and a real local market (a devnet
with two provider agents, one GolemCluster session on it, and devnets started over the API)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
import requests
from distributed import Client
from marketkit import Market, local_market
from tornado.httpclient import HTTPClientError

from golem_jupyter.chain import Offer, Wallet
from golem_jupyter.chain.types import new_id
from golem_jupyter.devnet import process_alive, running_devnet
from golem_jupyter.ledger import Ledger, Payout
from golem_jupyter.notebook import CELL_ANNOTATION
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.server import chainstate, records

NATIVE = "0x" + "00" * 20

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.timeout(300)

ESCROW = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REQUESTOR = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
BIG = 2**200 + 7  # far beyond a JavaScript number: amounts must travel as strings
DEVNET_START = 150  # seconds a request that starts a devnet may take (the server waits up to 120)


def hex32(n: int) -> str:
    return "0x" + n.to_bytes(32, "big").hex()


def unused_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"golem_jupyter.server": True}}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $GOLEM_HOME, and no network or key from the environment."""
    home = tmp_path / "golem-home"
    monkeypatch.setenv("GOLEM_HOME", str(home))
    monkeypatch.delenv("GOLEM_NETWORK", raising=False)
    monkeypatch.delenv("GOLEM_PRIVATE_KEY", raising=False)
    return home


@pytest.fixture
def control(jp_serverapp):
    """The server's devnet control; whatever devnet a test started through it is stopped afterwards."""
    control = jp_serverapp.web_app.settings["golem_devnet"]
    yield control
    control.shutdown()


async def api(jp_fetch, *path: str, method: str = "GET", body=None, **params) -> dict:
    options = {"body": json.dumps(body) if isinstance(body, dict) else body} if method == "POST" else {}
    response = await jp_fetch(
        "golem", "api", *path, method=method, params=params, request_timeout=DEVNET_START, **options
    )
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


async def refused(jp_fetch, *path: str, method: str = "GET", body=None, **params) -> tuple[int, dict]:
    """The status code and JSON body of a request that must fail."""
    with pytest.raises(HTTPClientError) as caught:
        await api(jp_fetch, *path, method=method, body=body, **params)
    reply = json.loads(caught.value.response.body)
    assert set(reply) == {"error"} and reply["error"]
    return caught.value.code, reply


# -- without a market


async def test_status_without_a_network_says_how_to_start_one(jp_fetch, home: Path) -> None:
    status = await api(jp_fetch, "status")
    assert status["network"] is None and status["wallet"] is None
    assert status["reachable"] is False
    assert "golem devnet" in status["error"]
    assert status["escrow"] == {"locked_wei": "0", "open_sessions": 0}
    assert status["devnet"]["running"] is False

    url = f"http://127.0.0.1:{unused_port()}"
    status = await api(jp_fetch, "status", network=url)
    assert status["reachable"] is False and "No chain answers" in status["error"]


async def test_providers_without_a_network_is_503(jp_fetch, home: Path) -> None:
    code, reply = await refused(jp_fetch, "providers")
    assert code == 503 and "golem devnet" in reply["error"]


async def test_an_absent_ledger_is_an_empty_job_list_and_stays_absent(jp_fetch, home: Path) -> None:
    assert await api(jp_fetch, "jobs") == {"total": 0, "limit": 20, "offset": 0, "jobs": []}
    code, _ = await refused(jp_fetch, "jobs", hex32(1))
    assert code == 404
    assert not records.ledger_path().exists()


def record_jobs(home: Path) -> tuple[str, str]:
    """Two sessions (one of a `golem run`), five graphs: three in the first, two in the second."""
    first, second = hex32(1), hex32(2)
    with Ledger(home / "ledger.sqlite") as ledger:
        for session_id, label, run_id in ((first, "analysis.ipynb", hex32(77)), (second, "other.ipynb", None)):
            ledger.record_session(
                session_id=session_id, network="devnet", chain_id=1337, escrow=ESCROW, requestor=REQUESTOR,
                token="0x0000000000000000000000000000000000000000", budget=BIG, deadline=1_900_000_000,
                status="open", label=label, run_id=run_id,
            )  # fmt: skip
        for n, session_id in ((11, first), (12, first), (13, second), (14, first), (15, second)):
            payouts = [Payout(ALICE, 1.5, 0.0, n, 10 * n), Payout(BOB, 0.25, 2.0, BIG, BIG + n)]
            ledger.record_graph(
                session_id=session_id, graph_id=hex32(n), n_tasks=n, result_root=hex32(1000 + n),
                payouts=payouts, label=f"In [{n}]",
            )  # fmt: skip
        ledger.update_graph(hex32(14), status="confirmed", tx_hash=hex32(99), block_number=42, gas_used=84_000)
    return first, second


async def test_jobs_come_newest_first_page_by_page_and_by_session(jp_fetch, home: Path) -> None:
    first, _ = record_jobs(home)
    page = await api(jp_fetch, "jobs")
    assert (page["total"], page["limit"], page["offset"]) == (5, 20, 0)
    assert [job["graph_id"] for job in page["jobs"]] == [hex32(n) for n in (15, 14, 13, 12, 11)]
    job = page["jobs"][1]
    assert job == {
        "graph_id": hex32(14),
        "session_id": first,
        "label": "In [14]",
        "notebook": "analysis.ipynb",
        "run_id": hex32(77),
        "n_tasks": 14,
        "amount_wei": str(14 + BIG),
        "status": "confirmed",
        "tx_hash": hex32(99),
        "providers": [ALICE, BOB],
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
    }
    assert job["updated_at"] >= job["created_at"] > 0
    assert page["jobs"][0]["run_id"] is None and page["jobs"][0]["status"] == "pending"

    page = await api(jp_fetch, "jobs", limit="2", offset="1")
    assert page["total"] == 5 and [job["graph_id"] for job in page["jobs"]] == [hex32(14), hex32(13)]
    page = await api(jp_fetch, "jobs", session=first.upper().replace("0X", "0x"), limit="200")
    assert page["total"] == 3 and [job["graph_id"] for job in page["jobs"]] == [hex32(14), hex32(12), hex32(11)]
    page = await api(jp_fetch, "jobs", offset="10")
    assert page["total"] == 5 and page["jobs"] == []
    assert (await api(jp_fetch, "jobs", session=hex32(3)))["total"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "201"),
        ("limit", "ten"),
        ("offset", "-1"),
        ("offset", "1.5"),
        ("offset", str(2**63)),
        ("session", "0x12"),
    ],
)
async def test_jobs_refuse_bad_paging_with_400(jp_fetch, home: Path, name: str, value: str) -> None:
    code, reply = await refused(jp_fetch, "jobs", **{name: value})
    assert code == 400 and name in reply["error"] and value in reply["error"]


async def test_one_job_in_full_with_payouts_and_session(jp_fetch, home: Path) -> None:
    first, _ = record_jobs(home)
    job = (await api(jp_fetch, "jobs", hex32(14).upper().replace("0X", "0x")))["job"]
    assert job["graph_id"] == hex32(14) and job["notebook"] == "analysis.ipynb"
    assert job["payouts"] == [
        {"provider": ALICE, "cpu_seconds": 1.5, "gpu_seconds": 0.0, "amount_wei": "14", "cumulative_wei": "140"},
        {
            "provider": BOB,
            "cpu_seconds": 0.25,
            "gpu_seconds": 2.0,
            "amount_wei": str(BIG),
            "cumulative_wei": str(BIG + 14),
        },
    ]
    assert (job["block_number"], job["gas_used"], job["error"], job["attempts"]) == (42, 84_000, None, 0)
    assert job["session"] == {
        "session_id": first,
        "label": "analysis.ipynb",
        "status": "open",
        "budget_wei": str(BIG),
        "spent_wei": str(11 + 12 + 14 + 3 * BIG),
        "settled_wei": str(14 + BIG),
        "network": "devnet",
        "chain_id": 1337,
        "escrow": ESCROW,
        "requestor": REQUESTOR,
        "tx_hash": None,
        "deadline": 1_900_000_000,
        "run_id": hex32(77),
    }

    assert job["verification"] is None  # nothing was checked in it

    code, reply = await refused(jp_fetch, "jobs", "not-a-graph-id")
    assert code == 400 and "64 hex digits" in reply["error"]
    code, reply = await refused(jp_fetch, "jobs", hex32(16))
    assert code == 404 and hex32(16) in reply["error"]


async def test_a_checked_job_says_what_verification_did_and_who_was_reported(jp_fetch, home: Path) -> None:
    first, _ = record_jobs(home)
    with Ledger(home / "ledger.sqlite") as ledger:
        ledger.record_graph(
            session_id=first, graph_id=hex32(21), n_tasks=8, result_root=hex32(1021),
            payouts=[Payout(ALICE, 1.0, 0.0, 500, 1_000)], label="In [21]",
            verification={"checked": 5, "reruns": 6, "mismatches": 1, "cost": 120},
        )  # fmt: skip
        ledger.record_fault(
            session_id=first, graph_id=hex32(21)[2:], provider=BOB, key="square-7", evidence=hex32(5), tx_hash=hex32(6)
        )
    job = (await api(jp_fetch, "jobs", hex32(21)))["job"]
    assert job["verification"] == {
        "checked": 5,
        "reruns": 6,
        "mismatches": 1,
        "cost_wei": "120",
        "reported": [{"provider": BOB, "task": "square-7", "tx_hash": hex32(6)}],
    }


async def test_an_unknown_endpoint_is_a_json_404(jp_fetch, home: Path) -> None:
    for path in (("nothing",), ("jobs", hex32(1), "payouts")):
        code, reply = await refused(jp_fetch, *path)
        assert code == 404 and "/golem/api/" in reply["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "status"), ("GET", "providers"), ("GET", "jobs"), ("GET", f"jobs/{hex32(1)}"), ("GET", "devnet"),
     ("POST", "devnet"), ("GET", "nothing")],
)  # fmt: skip
async def test_every_endpoint_refuses_a_request_without_the_token(jp_fetch, home: Path, method, path) -> None:
    body = json.dumps({"action": "start", "providers": 1}) if method == "POST" else None
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("golem", "api", *path.split("/"), method=method, body=body, headers={"Authorization": ""})
    assert caught.value.code == 403
    assert "token" in json.loads(caught.value.response.body)["error"]
    assert not (home / "devnet.json").exists()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff", b"", b"[1, 2]", {"action": "launch"}, {"providers": 2},
     {"action": "start", "providers": 0}, {"action": "start", "providers": 9},
     {"action": "start", "providers": "2"}, {"action": "start", "providers": True}],
)  # fmt: skip
async def test_devnet_refuses_a_bad_request_with_400(jp_fetch, home: Path, body) -> None:
    code, reply = await refused(jp_fetch, "devnet", method="POST", body=body)
    assert code == 400 and ("action" in reply["error"] or "providers" in reply["error"])
    assert not (home / "devnet.json").exists()


async def test_with_no_devnet_there_is_nothing_to_stop(jp_fetch, home: Path) -> None:
    devnet = await api(jp_fetch, "devnet")
    assert devnet == {
        "running": False,
        "rpc_url": None,
        "chain_id": None,
        "pid": None,
        "providers": [],
        "started_here": False,
    }
    code, reply = await refused(jp_fetch, "devnet", method="POST", body={"action": "stop"})
    assert code == 409 and "No devnet" in reply["error"]


async def test_an_unexpected_failure_is_json_without_a_traceback(jp_fetch, home: Path, monkeypatch) -> None:
    def broken(*args):
        raise RuntimeError("secret 0x4c0883a69102937d6231471b5dbb6204fe512961708279f1d1f6dfb6d2c7a2b0")

    monkeypatch.setattr(records, "jobs", broken)
    with pytest.raises(HTTPClientError) as caught:
        await api(jp_fetch, "jobs")
    assert caught.value.code == 500
    body = caught.value.response.body.decode()
    assert json.loads(body) == {
        "error": "The Golem server extension failed unexpectedly; the Jupyter server's log has the details."
    }
    assert "secret" not in body and "Traceback" not in body


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [("127.0.0.1:7001", ("127.0.0.1", 7001)), ("tcp://host.example:80/", ("host.example", 80)),
     ("[::1]:7001", ("::1", 7001)), ("127.0.0.1", None), ("host:0", None), ("host:99999", None), (":80", None),
     ("host:http", None)],
)  # fmt: skip
def test_offer_endpoints_are_read_as_host_and_port(endpoint: str, address) -> None:
    assert chainstate.split_endpoint(endpoint) == address


async def test_a_malformed_endpoint_is_unreachable_at_once() -> None:
    started = time.monotonic()
    assert await chainstate.reachable(["nonsense", f"127.0.0.1:{unused_port()}"]) == [False, False]
    assert time.monotonic() - started < 1


# -- on a real market


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("server-market"), providers=2) as market:
        yield market


@pytest.fixture
def on_market(market: Market, home: Path, monkeypatch: pytest.MonkeyPatch) -> Market:
    """The market's home as $GOLEM_HOME: its devnet file and its ledger are the server's."""
    monkeypatch.setenv("GOLEM_HOME", str(market.home))
    return market


def open_sessions_on_chain(market: Market) -> tuple[int, int]:
    """What the escrow holds in the sessions the market's ledger has open, and how many."""
    chain = market.chain()
    with market.ledger() as ledger:
        states = [chain.escrow.session(s.session_id) for s in ledger.sessions(limit=500) if s.status == "open"]
    return sum(s.remaining for s in states if not s.closed), sum(not s.closed for s in states)


async def test_status_on_the_market(jp_fetch, on_market: Market) -> None:
    status = await api(jp_fetch, "status")
    network = on_market.network
    assert status["network"] == {
        "name": "devnet",
        "rpc_url": network.rpc_url,
        "chain_id": network.chain_id,
        "escrow": network.escrow,
        "registry": network.registry,
    }
    assert status["reachable"] is True and status["error"] is None
    wallet = status["wallet"]
    assert wallet["address"] == Wallet.dev(0).address
    assert int(wallet["balance_wei"]) > 0 and wallet["credited_wei"].isdigit()
    locked, count = open_sessions_on_chain(on_market)
    assert status["escrow"] == {"locked_wei": str(locked), "open_sessions": count}
    devnet = status["devnet"]
    assert devnet["running"] is True and devnet["started_here"] is False
    assert (devnet["rpc_url"], devnet["chain_id"], devnet["pid"]) == (network.rpc_url, network.chain_id, os.getpid())
    assert [p["address"] for p in devnet["providers"]] == [p.address for p in on_market.providers]
    assert devnet["providers"][0]["price_per_cpu_second_wei"] == str(on_market.providers[0].price_per_cpu_second)

    # A network named in the request: the devnet's connection file works, a bare URL needs a recorded deployment.
    status = await api(jp_fetch, "status", network=str(on_market.home / "devnet.json"))
    assert status["reachable"] is True and status["network"]["rpc_url"] == network.rpc_url
    status = await api(jp_fetch, "status", network=network.rpc_url)
    assert status["reachable"] is False and "golem deploy" in status["error"]


async def test_the_wallet_is_the_one_in_golem_private_key_and_a_bad_key_is_never_shown(
    jp_fetch, on_market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLEM_PRIVATE_KEY", on_market.network.accounts[9].private_key)
    status = await api(jp_fetch, "status")
    assert status["wallet"]["address"] == Wallet.dev(9).address and int(status["wallet"]["balance_wei"]) > 0
    assert status["escrow"] == {"locked_wei": "0", "open_sessions": 0}  # dev account 9 opened no session

    bad = "0x" + "ab" * 31  # a byte short
    monkeypatch.setenv("GOLEM_PRIVATE_KEY", bad)
    response = await jp_fetch("golem", "api", "status")
    status = json.loads(response.body)
    assert status["reachable"] is True and status["wallet"] is None and "GOLEM_PRIVATE_KEY" in status["error"]
    assert "abab" not in response.body.decode()


async def test_the_devnet_of_another_process_is_not_stopped_from_here(jp_fetch, on_market: Market) -> None:
    code, reply = await refused(jp_fetch, "devnet", method="POST", body={"action": "stop"})
    assert code == 409 and "own process" in reply["error"]
    code, reply = await refused(jp_fetch, "devnet", method="POST", body={"action": "start"})
    assert code == 409 and "already running" in reply["error"]
    assert running_devnet() is not None


async def test_providers_on_the_market(jp_fetch, on_market: Market) -> None:
    reply = await api(jp_fetch, "providers")
    assert reply["network"] == "devnet"
    offers = {offer["provider"]: offer for offer in reply["offers"]}
    assert set(offers) == {p.address for p in on_market.providers}
    for provider in on_market.providers:
        offer = offers[provider.address]
        assert offer["endpoint"] == provider.endpoint and offer["reachable"] is True
        assert offer["price_per_cpu_second_wei"] == str(provider.price_per_cpu_second)
        assert offer["price_per_gpu_second_wei"] == "0"  # CPU-only agents offer no GPU-seconds
        assert offer["start_fee_wei"].isdigit() and offer["cpus"] >= 1 and offer["gpus"] == 0
        assert isinstance(offer["gpu_model"], str) and isinstance(offer["memory_bytes"], int)
        assert offer["reputation"] is None or 0 < offer["reputation"] <= 1
        assert offer["faults"] == 0  # nothing was ever reported on this market


async def test_each_offer_says_what_its_provider_runs_code_in(jp_fetch, on_market: Market) -> None:
    """The side panel's sandbox column: the tier an offer states, "none" for one that states none
    or states something unknown; an offer priced in an ERC-20 is listed too (last)."""
    stated = {
        Wallet.dev(7): {"sandbox": "bwrap"},
        Wallet.dev(8): {"sandbox": ["bwrap"]},  # a stranger's garbage is no sandbox
        Wallet.dev(9): {"sandbox": "bwrap", "token": "0x" + "e5" * 20},
    }
    for wallet, capabilities in stated.items():
        # Far above the agents' prices, so that no session rents them meanwhile.
        offer = Offer(f"127.0.0.1:{unused_port()}", price_per_cpu_second=10**15, capabilities=capabilities)
        on_market.chain(wallet).registry.publish(offer)
    try:
        reply = await api(jp_fetch, "providers")
    finally:
        for wallet in stated:
            on_market.chain(wallet).registry.withdraw()
    sandbox = {offer["provider"]: offer["sandbox"] for offer in reply["offers"]}
    assert {k: v for k, v in sandbox.items() if k not in {p.address for p in on_market.providers}} == {
        Wallet.dev(7).address: "bwrap",
        Wallet.dev(8).address: "none",
        Wallet.dev(9).address: "bwrap",
    }
    assert all(sandbox[p.address] in ("bwrap", "none") for p in on_market.providers)
    assert reply["offers"][-1]["provider"] == Wallet.dev(9).address


async def test_each_offer_counts_the_faults_reported_against_its_provider(jp_fetch, on_market: Market) -> None:
    """The side panel's faults column: ``FaultReported`` events of real sessions (opened, the
    provider allocated a share, then reported), and the fault ranks its provider after the others."""
    reported, clean = Wallet.dev(7), Wallet.dev(8)
    for wallet in (reported, clean):
        # Far above the agents' prices, so that no session rents them meanwhile; the same price.
        on_market.chain(wallet).registry.publish(Offer(f"127.0.0.1:{unused_port()}", price_per_cpu_second=10**15))
    escrow = on_market.chain(Wallet.dev(6)).escrow  # a requestor of its own: the server's ledger never sees it
    deadline = on_market.chain().w3.eth.get_block("latest")["timestamp"] + 3600
    try:
        for _ in range(2):
            session = new_id()
            escrow.open_session(session, 10**9, deadline)
            escrow.allocate(session, {reported.address: 10**9})
            escrow.report_fault(session, new_id(), reported.address, new_id())
        reply = await api(jp_fetch, "providers")
    finally:
        for wallet in (reported, clean):
            on_market.chain(wallet).registry.withdraw()
    offers = {offer["provider"]: offer for offer in reply["offers"]}
    assert offers[reported.address]["faults"] == 2
    assert offers[reported.address]["reputation"] == pytest.approx(1 / 11)  # (0 + 1) / (0 + 1 + 5 * 2)
    assert offers[clean.address]["faults"] == 0 and offers[clean.address]["reputation"] is None
    assert all(offers[p.address]["faults"] == 0 for p in on_market.providers)
    assert reply["offers"][-1]["provider"] == reported.address  # after every provider without a fault


async def test_an_offer_whose_endpoint_does_not_answer_is_unreachable(jp_fetch, on_market: Market) -> None:
    stranger = on_market.chain(Wallet.dev(9)).registry
    # Far above the agents' prices, so that no session rents it meanwhile.
    stranger.publish(Offer(f"127.0.0.1:{unused_port()}", price_per_cpu_second=10**15))
    try:
        started = time.monotonic()
        reply = await api(jp_fetch, "providers")
        assert time.monotonic() - started < 10
    finally:
        stranger.withdraw()
    reachable = {offer["provider"]: offer["reachable"] for offer in reply["offers"]}
    assert reachable == {Wallet.dev(9).address: False, **{p.address: True for p in on_market.providers}}


def rent_and_run(market: Market) -> tuple[GolemCluster, Client]:
    """A session of two providers that has run and settled two graphs, left open (closed here only if it fails)."""
    with contextlib.ExitStack() as stack:
        ledger = market.ledger()
        cluster = stack.enter_context(
            GolemCluster(n_providers=2, budget=10**16, network=market.network, ledger=ledger, label="demo")
        )
        client = stack.enter_context(Client(cluster))
        assert client.submit(sum, [1, 2]).result() == 3
        assert sum(client.gather(client.map(abs, range(-50, 50)))) == 2 * sum(range(51)) - 50
        assert cluster.wait_for_settlement(60)
        stack.pop_all()
    return cluster, client


def close(cluster: GolemCluster, client: Client) -> None:
    client.close()
    cluster.close()


def open_abandoned_session(market: Market, deposit: int) -> str:
    """A session of dev account 0 opened on-chain and recorded as open, with nothing allocated: what a
    kernel that died while renting leaves behind."""
    chain = market.chain(Wallet.dev(0))
    session_id = new_id()
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    receipt = chain.escrow.open_session(session_id, deposit, deadline)
    with market.ledger() as ledger:
        ledger.record_session(
            session_id=session_id,
            network=market.network.name,
            chain_id=market.network.chain_id,
            escrow=market.network.escrow,
            requestor=Wallet.dev(0).address,
            token=NATIVE,
            budget=deposit,
            deadline=deadline,
            tx_hash=receipt.tx_hash,
            status="open",
            label="abandoned.ipynb",
        )
    return "0x" + session_id.hex()


async def test_sessions_lists_what_each_holds_and_close_gives_the_rest_back(jp_fetch, on_market: Market) -> None:
    deposit = 3 * 10**15 + 7
    session_id = await asyncio.to_thread(open_abandoned_session, on_market, deposit)
    reply = await api(jp_fetch, "sessions")
    assert reply["network"] == "devnet" and reply["wallet"] == Wallet.dev(0).address
    [listed] = [s for s in reply["sessions"] if s["session_id"] == session_id]
    assert listed == listed | {
        "label": "abandoned.ipynb",
        "status": "open",
        "deposited_wei": str(deposit),
        "paid_wei": "0",
        "allocated_wei": "0",
        "refundable_now_wei": str(deposit),
        "returned_wei": "0",
        "open_allocations": 0,
        "closed": False,
        "closable": "now",
    }
    chain = on_market.chain()
    balance = chain.w3.eth.get_balance(Wallet.dev(0).address)

    reply = await api(jp_fetch, "sessions", session_id, "close", method="POST", body={})
    closing = reply["closing"]
    assert closing["closed"] is True and closing["returned_wei"] == str(deposit) and closing["holdouts"] == []
    assert "closed" in closing["message"] and f"{deposit} wei" in closing["message"]
    assert chain.escrow.session(session_id).closed
    [event] = chain.escrow.events("SessionClosed", sessionId=session_id)
    assert event["refund"] == deposit
    receipt = chain.w3.eth.get_transaction_receipt(closing["tx_hash"])
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.w3.eth.get_balance(Wallet.dev(0).address) == balance + deposit - gas
    with on_market.ledger() as ledger:
        record = ledger.session(session_id)
    assert record.status == "closed" and record.refund == deposit and record.close_tx == closing["tx_hash"]

    reply = await api(jp_fetch, "sessions")
    assert session_id not in [s["session_id"] for s in reply["sessions"]]
    reply = await api(jp_fetch, "sessions", all="1")
    [listed] = [s for s in reply["sessions"] if s["session_id"] == session_id]
    assert listed["closed"] is True and listed["returned_wei"] == str(deposit) and listed["closable"] == "closed"

    # Closing it again changes nothing and says so; an unknown or malformed id is refused.
    reply = await api(jp_fetch, "sessions", session_id, "close", method="POST", body={})
    assert reply["closing"]["closed"] is True and reply["closing"]["returned_wei"] == "0"
    code, error = await refused(jp_fetch, "sessions", hex32(12345), "close", method="POST", body={})
    assert code == 404 and "no session" in error["error"]
    code, error = await refused(jp_fetch, "sessions", "0x1234", "close", method="POST", body={})
    assert code == 400 and "64 hex digits" in error["error"]


async def test_a_real_session_shows_its_jobs_and_its_locked_deposit(jp_fetch, on_market: Market) -> None:
    with dask.annotate(**{CELL_ANNOTATION: "In [7]"}):  # as the notebook tags a cell's graphs
        cluster, client = await asyncio.to_thread(rent_and_run, on_market)
    try:
        session_id = "0x" + cluster.session_id.hex()
        status = await api(jp_fetch, "status")
        remaining = on_market.chain().escrow.session(session_id).remaining
        assert 0 < remaining < 10**16  # the graphs were paid out of it
        locked, count = open_sessions_on_chain(on_market)
        assert status["escrow"] == {"locked_wei": str(locked), "open_sessions": count} and count >= 1
        assert locked >= remaining
        rented = set(cluster.rentals)
    finally:
        await asyncio.to_thread(close, cluster, client)

    page = await api(jp_fetch, "jobs", session=session_id)
    assert page["total"] == len(page["jobs"]) >= 2
    for job in page["jobs"]:
        assert job["status"] == "confirmed" and job["tx_hash"].startswith("0x") and len(job["tx_hash"]) == 66
        assert job["label"] == "In [7]" and job["notebook"] == "demo" and job["session_id"] == session_id
        assert set(job["providers"]) <= rented and int(job["amount_wei"]) > 0
    detail = (await api(jp_fetch, "jobs", page["jobs"][-1]["graph_id"]))["job"]
    assert detail["block_number"] > 0 and detail["gas_used"] > 0
    assert sum(int(p["amount_wei"]) for p in detail["payouts"]) == int(detail["amount_wei"])
    assert detail["session"]["budget_wei"] == str(10**16) and detail["session"]["tx_hash"].startswith("0x")

    # Paid work is what reputation is made of.
    offers = (await api(jp_fetch, "providers"))["offers"]
    assert all(offer["reputation"] == 1.0 for offer in offers if offer["provider"] in rented)


# -- devnets started over the API


async def test_a_devnet_started_here_runs_until_stopped_here(jp_fetch, home: Path, control) -> None:
    devnet = await api(jp_fetch, "devnet", method="POST", body={"action": "start", "providers": 2})
    assert devnet["running"] is True and devnet["started_here"] is True
    assert len(devnet["providers"]) == 2 and all(process_alive(p["pid"]) for p in devnet["providers"])
    pids = [devnet["pid"], *(p["pid"] for p in devnet["providers"])]

    status = await api(jp_fetch, "status")
    assert status["reachable"] is True and status["devnet"] == devnet
    assert status["network"]["chain_id"] == devnet["chain_id"] and status["wallet"]["address"] == Wallet.dev(0).address
    assert len((await api(jp_fetch, "providers"))["offers"]) == 2
    code, reply = await refused(jp_fetch, "devnet", method="POST", body={"action": "start", "providers": 1})
    assert code == 409 and "already running" in reply["error"]

    stopped = await api(jp_fetch, "devnet", method="POST", body={"action": "stop"})
    assert stopped["running"] is False
    assert not any(process_alive(pid) for pid in pids)
    assert not (home / "devnet.json").exists()
    code, _ = await refused(jp_fetch, "devnet", method="POST", body={"action": "stop"})
    assert code == 409
    assert (await api(jp_fetch, "status"))["reachable"] is False


async def test_a_devnet_that_fails_to_start_is_a_500_with_the_end_of_its_log(jp_fetch, home: Path, control) -> None:
    (home / "devnet.json").mkdir(parents=True)  # where the devnet must write its connection file
    assert (await api(jp_fetch, "devnet"))["running"] is False
    code, reply = await refused(jp_fetch, "devnet", method="POST", body={"action": "start", "providers": 1})
    assert code == 500
    assert "exited with code" in reply["error"] and "devnet-jupyter.log" in reply["error"]
    assert "IsADirectoryError" in reply["error"]  # the log's own words, less the traceback's frames
    assert "Traceback" not in reply["error"] and "File " not in reply["error"]
    assert (await api(jp_fetch, "status"))["error"].startswith("Cannot read the connection file")


def test_a_devnet_started_here_stops_with_the_jupyter_server(home: Path, tmp_path: Path) -> None:
    """A real `jupyter server` process: start a devnet through it, stop the server with SIGTERM."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"golem_jupyter.server": True}}})
    )
    port, token = unused_port(), "golem-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    command = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
    ]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/golem/api/devnet"
    headers = {"Authorization": f"token {token}"}
    devnet = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url, headers=headers, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        answer = requests.post(url, headers=headers, json={"action": "start", "providers": 1}, timeout=DEVNET_START)
        assert answer.status_code == 200, answer.text
        devnet = answer.json()
        assert devnet["started_here"] is True

        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, log.read_text()
        pids = [devnet["pid"], *(p["pid"] for p in devnet["providers"])]
        assert not any(process_alive(pid) for pid in pids)
        assert not (home / "devnet.json").exists()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if devnet is not None:  # only if the server failed to: never leave a chain running
            for pid in (devnet["pid"], *(p["pid"] for p in devnet["providers"])):
                if process_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
