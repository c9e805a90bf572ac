"""The chain layer: connection, contracts, wallets and EIP-712 vouchers and releases.

>>> chain = Chain.connect()                      # the running devnet
>>> chain.escrow.session(session_id).remaining

The rest of the code base uses ``chain.escrow`` and ``chain.registry`` only through
:class:`EscrowBackend` and :class:`RegistryBackend` (see :mod:`.backends` to add another backend).
"""

from __future__ import annotations

from ._imports import Web3  # first: web3 and the eth libraries, keeping the recursion limit (see _imports)
from .backends import EscrowBackend, RegistryBackend
from .escrow import Allocation, Escrow, SessionState
from .network import Network, connect, resolve
from .registry import Offer, Registry
from .vouchers import EscrowDomain, Release, Voucher, sign_release, sign_voucher
from .wallet import Wallet

__all__ = [
    "Allocation",
    "Chain",
    "Escrow",
    "EscrowBackend",
    "EscrowDomain",
    "Network",
    "Offer",
    "Registry",
    "RegistryBackend",
    "Release",
    "SessionState",
    "Voucher",
    "Wallet",
    "sign_release",
    "sign_voucher",
]


class Chain:
    """A checked connection to a network, with escrow and registry clients for one wallet."""

    def __init__(self, w3: Web3, network: Network, wallet: Wallet | None = None) -> None:
        self.w3 = w3
        self.network = network
        self.wallet = wallet
        account = wallet.account if wallet else None
        self.escrow: EscrowBackend = Escrow(w3, network.escrow, account)
        self.registry: RegistryBackend = Registry(w3, network.registry, account)

    @classmethod
    def connect(cls, network: Network | str | None = None, wallet: Wallet | None = None) -> Chain:
        """Connect to ``network`` (default: the running devnet), checking it first."""
        network = resolve(network)
        return cls(connect(network), network, wallet)

    def __repr__(self) -> str:
        who = f", {self.wallet.address}" if self.wallet else ""
        return f"Chain({self.network.name} chain {self.network.chain_id} at {self.network.rpc_url}{who})"
