"""``golem devnet`` as a user runs it: real subprocesses on 127.0.0.1.

Each test starts its own ``golem devnet --port 0`` with ``GOLEM_HOME`` set to the test's own
temporary home, talks to it from this process and through other ``golem`` commands, and always
kills it in the end.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from marketkit import wait_until

from golem_jupyter.chain import Chain, Wallet
from golem_jupyter.chain.network import Network
from golem_jupyter.chain.types import new_id
from golem_jupyter.errors import ConfigurationError

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
ETH = 10**18


def golem_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "golem_jupyter.cli", *args]


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "GOLEM_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def golem(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one ``golem`` command to completion."""
    return subprocess.run(
        golem_command(*args), env=environment(home), capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class RunningDevnet:
    process: subprocess.Popen
    home: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def connection_file(self) -> Path:
        return self.home / "devnet.json"

    @property
    def network(self) -> Network:
        return Network.load(self.connection_file)

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        return self.process.wait(timeout=timeout)


def start_devnet(home: Path, logs: Path) -> RunningDevnet:
    """Start ``golem devnet --port 0`` and wait until its connection file (naming its pid) appears."""
    stdout_path, stderr_path = logs / "devnet.out", logs / "devnet.err"
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        process = subprocess.Popen(
            golem_command("devnet", "--port", "0"),
            env=environment(home),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    devnet = RunningDevnet(process, home, stdout_path, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT
    while not ours(devnet):
        if process.poll() is not None:
            raise AssertionError(f"golem devnet exited with {process.returncode}:\n{devnet.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"golem devnet wrote no {devnet.connection_file} within {START_TIMEOUT:.0f} s:\n{devnet.output()}"
            )
        time.sleep(0.05)
    return devnet


def ours(devnet: RunningDevnet) -> bool:
    try:
        return devnet.network.pid == devnet.process.pid
    except ConfigurationError:  # not written yet (the file is replaced atomically, never half-written)
        return False


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def devnet(golem_home: Path, tmp_path: Path) -> Iterator[RunningDevnet]:
    """A devnet of this test's own, in its $GOLEM_HOME: for tests that stop it."""
    running = start_devnet(golem_home, tmp_path)
    try:
        yield running
    finally:
        kill(running.process)


@pytest.fixture(scope="module")
def module_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    running = start_devnet(tmp_path_factory.mktemp("golem-home"), tmp_path_factory.mktemp("devnet-logs"))
    try:
        yield running
    finally:
        kill(running.process)


@pytest.fixture
def shared_devnet(module_devnet: RunningDevnet, monkeypatch: pytest.MonkeyPatch) -> RunningDevnet:
    """One devnet for the tests that leave it running; $GOLEM_HOME points at its home."""
    assert module_devnet.process.poll() is None, module_devnet.output()
    monkeypatch.setenv("GOLEM_HOME", str(module_devnet.home))
    return module_devnet


def stale_connection_file(home: Path) -> Path:
    """A connection file left by a devnet whose process is gone (as after SIGKILL or a crash)."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    path = home / "devnet.json"
    Network(
        "http://127.0.0.1:1", 1, Wallet.dev(0).address, Wallet.dev(1).address, name="devnet", pid=int(gone.stdout)
    ).save(path)
    return path


# ---------------------------------------------------------------------------- a running devnet


def test_the_devnet_writes_an_owner_only_connection_file_and_says_where_it_runs(shared_devnet):
    network = shared_devnet.network
    assert network.name == "devnet"
    assert network.pid == shared_devnet.process.pid
    assert network.rpc_url.startswith("http://127.0.0.1:")
    assert not network.rpc_url.endswith(":0")
    assert stat.S_IMODE(shared_devnet.connection_file.stat().st_mode) == 0o600
    # The ready message follows the file.
    wait_until(lambda: "Press Ctrl-C" in shared_devnet.output(), 30, "the devnet says it is ready")
    assert network.rpc_url in shared_devnet.stdout_path.read_text()
    assert str(shared_devnet.connection_file) in shared_devnet.stdout_path.read_text()


def test_chain_connect_finds_the_devnet_and_its_funded_accounts(shared_devnet):
    chain = Chain.connect()

    assert chain.network == shared_devnet.network
    assert chain.w3.eth.chain_id == chain.network.chain_id
    assert len(chain.network.accounts) == 20
    assert chain.network.accounts[0].address == Wallet.dev(0).address
    for account in chain.network.accounts:
        assert Wallet.from_key(account.private_key).address == account.address
        assert chain.w3.eth.get_balance(account.address) > 9_000 * ETH
    assert chain.escrow.claim_window == 24 * 3600
    assert chain.registry.active_count() == 0


def test_a_settlement_through_the_devnet_credits_the_providers(shared_devnet):
    requestor = Chain.connect(None, Wallet.dev(0))
    provider = Chain.connect(None, Wallet.dev(1))
    session, graph = new_id(), new_id()
    deadline = requestor.w3.eth.get_block("latest").timestamp + 3600
    payouts = {Wallet.dev(1).address: 3 * 10**15, Wallet.dev(2).address: 10**15}

    requestor.escrow.open_session(session, ETH, deadline)
    requestor.escrow.allocate(session, payouts)
    settled = requestor.escrow.settle_graph(session, 0, graph, payouts)

    state = requestor.escrow.session(session)
    assert (state.requestor, state.deposited, state.paid_out) == (Wallet.dev(0).address, ETH, 4 * 10**15)
    assert {e["provider"]: e["amount"] for e in requestor.escrow.events("Paid", sessionId=session)} == payouts
    [event] = requestor.escrow.events("GraphSettled", sessionId=session)
    assert (event["graphId"], event["total"], event["tx_hash"]) == (graph, 4 * 10**15, settled.tx_hash)
    assert requestor.escrow.session(session).next_seq == 1

    before = provider.w3.eth.get_balance(provider.wallet.address)
    receipt = provider.escrow.withdraw()
    cost = receipt.raw.gasUsed * receipt.raw.effectiveGasPrice
    assert provider.w3.eth.get_balance(provider.wallet.address) == before + 3 * 10**15 - cost


def test_golem_devnet_status_prints_the_url(shared_devnet):
    result = golem(shared_devnet.home, "devnet", "status")
    assert result.returncode == 0, result.stderr
    network = shared_devnet.network
    assert f"Devnet running at {network.rpc_url}" in result.stdout
    assert network.escrow in result.stdout and network.registry in result.stdout


def test_a_second_devnet_refuses_to_start_while_the_first_runs(shared_devnet):
    first = shared_devnet.network

    result = golem(shared_devnet.home, "devnet", "--port", "0")

    assert result.returncode != 0
    assert "already running" in result.stderr
    assert first.rpc_url in result.stderr
    assert "golem devnet stop" in result.stderr
    assert shared_devnet.process.poll() is None
    assert shared_devnet.network == first  # the connection file still describes the first devnet
    assert Chain.connect().w3.eth.chain_id == first.chain_id


def test_golem_devnet_stop_stops_it_and_removes_the_connection_file(devnet):
    url = devnet.network.rpc_url

    result = golem(devnet.home, "devnet", "stop")

    assert result.returncode == 0, result.stderr
    assert f"Stopped the devnet at {url}" in result.stdout
    assert not devnet.connection_file.exists()
    assert devnet.wait() == 0
    assert "Devnet stopped." in devnet.stdout_path.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_devnet_cleanly(devnet, signum):
    devnet.process.send_signal(signum)

    assert devnet.wait() == 0
    assert not devnet.connection_file.exists()
    assert "Devnet stopped." in devnet.stdout_path.read_text()
    assert "Traceback" not in devnet.output()


def test_a_stale_connection_file_does_not_count_as_a_running_devnet(golem_home, tmp_path):
    stale_connection_file(golem_home)

    status = golem(golem_home, "devnet", "status")
    assert status.returncode == 3
    assert "No devnet is running" in status.stdout

    devnet = start_devnet(golem_home, tmp_path)  # starts over the stale file
    try:
        assert devnet.network.pid == devnet.process.pid
        assert Chain.connect().w3.eth.chain_id == devnet.network.chain_id
    finally:
        kill(devnet.process)


def test_golem_devnet_stop_removes_a_stale_connection_file(golem_home):
    path = stale_connection_file(golem_home)

    result = golem(golem_home, "devnet", "stop")

    assert (result.returncode, result.stdout.strip()) == (0, "No devnet is running.")
    assert not path.exists()
