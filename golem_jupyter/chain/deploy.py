"""Deploying GolemEscrow and ProviderRegistry from the shipped artifacts."""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ..errors import InvalidInput
from .artifacts import ARTIFACTS_DIR, load_artifact
from .network import Network
from .transactions import Transactor

DEFAULT_CLAIM_WINDOW = 24 * 3600
"""Seconds after a session's deadline during which providers may still claim (one day)."""


def deploy_contract(
    w3: Web3, account: LocalAccount, name: str, *args: object, directory: Path = ARTIFACTS_DIR
) -> tuple[str, int]:
    """Deploy artifact ``name`` (from ``directory``) with constructor ``args``; returns (address, block)."""
    artifact = load_artifact(name, directory)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = Transactor(w3, account).send(factory.constructor(*args))
    return receipt.raw.contractAddress, receipt.block_number


def deploy(
    w3: Web3, account: LocalAccount, rpc_url: str, *, claim_window: int = DEFAULT_CLAIM_WINDOW, name: str = "custom"
) -> Network:
    """Deploy both contracts and describe the result as a :class:`Network`."""
    if isinstance(claim_window, bool) or not isinstance(claim_window, int) or not 0 < claim_window < 2**64:
        raise InvalidInput(f"The claim window must be a positive number of seconds, got {claim_window!r}.")
    escrow, block = deploy_contract(w3, account, "GolemEscrow", claim_window)
    registry, _ = deploy_contract(w3, account, "ProviderRegistry")
    return Network(
        rpc_url=rpc_url, chain_id=w3.eth.chain_id, escrow=escrow, registry=registry, name=name, deployed_at_block=block
    )
