"""The few ERC-20 functions the escrow client needs (approve before a token deposit)."""

from __future__ import annotations

from web3 import Web3
from web3.contract import Contract

from .types import as_address

_ERC20_ABI = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


def erc20(w3: Web3, address: str) -> Contract:
    """A web3 contract for the ERC-20 at ``address``."""
    return w3.eth.contract(address=as_address(address, "token"), abi=_ERC20_ABI)
