"""Shared fixtures.

Contract tests take the ``contracts`` fixture, which is parametrized over chain backends:
the embedded EVM always, and anvil when its binary is installed (``npm install`` in
contracts/). Under CI (``CI=true``) a missing anvil is an error, not a skip. Each test starts
from a snapshot taken right after deployment and is reverted afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import by_value  # noqa: F401 (task functions from tests/ travel to the workers by value)
import pytest
from chainkit import TestChain, anvil_binary, anvil_chain, embedded_chain

from golem_jupyter.chain import Escrow, Registry, Wallet
from golem_jupyter.chain.artifacts import load_artifact
from golem_jupyter.chain.deploy import deploy_contract
from golem_jupyter.chain.transactions import Transactor

ARTIFACTS = Path(__file__).parent / "artifacts"
CLAIM_WINDOW = 24 * 3600
BACKENDS = ["embedded", "anvil"]


@pytest.fixture(autouse=True)
def golem_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $GOLEM_HOME, so nothing touches the user's."""
    home = tmp_path_factory.mktemp("golem-home")
    monkeypatch.setenv("GOLEM_HOME", str(home))
    return home


@pytest.fixture(scope="session", params=BACKENDS)
def test_chain(request: pytest.FixtureRequest) -> Iterator[TestChain]:
    if request.param == "embedded":
        chain = embedded_chain()
    else:
        binary = anvil_binary()
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("anvil is required under CI: run `npm install` in contracts/")
            pytest.skip("anvil not installed (npm install in contracts/)")
        chain = anvil_chain(binary)
    yield chain
    chain.close()


@dataclass
class Deployed:
    """The contracts on one chain, and the dev wallets that use them."""

    chain: TestChain
    escrow_address: str
    registry_address: str
    token_address: str
    fee_token_address: str

    def escrow(self, wallet: Wallet | None = None) -> Escrow:
        return Escrow(self.chain.w3, self.escrow_address, wallet.account if wallet else None)

    def registry(self, wallet: Wallet | None = None) -> Registry:
        return Registry(self.chain.w3, self.registry_address, wallet.account if wallet else None)

    def token(self, address: str | None = None):
        return self.chain.w3.eth.contract(address=address or self.token_address, abi=test_artifact("TestToken")["abi"])

    def mint(self, to: str, amount: int, token: str | None = None) -> None:
        send(self.chain, Wallet.dev(0), self.token(token).functions.mint(to, amount))

    def deploy_receiver(self, wallet: Wallet):
        """A hostile ReentrantReceiver that targets the escrow, deployed by ``wallet``."""
        address = deploy_test_contract(self.chain, wallet, "ReentrantReceiver", self.escrow_address)
        return self.chain.w3.eth.contract(address=address, abi=test_artifact("ReentrantReceiver")["abi"])


def test_artifact(name: str) -> dict:
    return load_artifact(name, ARTIFACTS)


def send(chain: TestChain, wallet: Wallet, call, value: int = 0):
    return Transactor(chain.w3, wallet.account).send(call, value=value)


def deploy_test_contract(chain: TestChain, wallet: Wallet, name: str, *args) -> str:
    address, _ = deploy_contract(chain.w3, wallet.account, name, *args, directory=ARTIFACTS)
    return address


@pytest.fixture(scope="session")
def deployed_base(test_chain: TestChain) -> Deployed:
    deployer = Wallet.dev(0)
    escrow, _ = deploy_contract(test_chain.w3, deployer.account, "GolemEscrow", CLAIM_WINDOW)
    registry, _ = deploy_contract(test_chain.w3, deployer.account, "ProviderRegistry")
    token = deploy_test_contract(test_chain, deployer, "TestToken")
    fee_token = deploy_test_contract(test_chain, deployer, "FeeToken")
    return Deployed(test_chain, escrow, registry, token, fee_token)


@pytest.fixture
def contracts(deployed_base: Deployed) -> Iterator[Deployed]:
    snapshot = deployed_base.chain.snapshot()
    yield deployed_base
    deployed_base.chain.revert(snapshot)


@pytest.fixture
def chain(contracts: Deployed) -> TestChain:
    return contracts.chain


@pytest.fixture
def requestor() -> Wallet:
    return Wallet.dev(0)


@pytest.fixture
def providers() -> list[Wallet]:
    return [Wallet.dev(i) for i in (1, 2, 3)]


@pytest.fixture
def stranger() -> Wallet:
    return Wallet.dev(9)
