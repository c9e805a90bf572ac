"""Sending transactions from one local account: estimate, sign, send, wait, explain failures.

Gas is estimated first, so a call the contract would refuse raises the contract's own error
(see :mod:`.errors`) before anything is signed or sent. Keys never leave the process: the
node only ever sees signed raw transactions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from ..errors import NetworkUnreachable
from .errors import TransactionFailed, translate

# Estimates are exact for the state they ran on; the margin covers state that moves before the
# transaction is mined (unused gas is not paid for).
GAS_MARGIN = 1.2


@dataclass(frozen=True)
class Receipt:
    """What a mined transaction left: its hash, block, gas and raw receipt."""

    tx_hash: str
    block_number: int
    gas_used: int
    raw: Any = field(repr=False, compare=False)


class Transactor:
    """Sends transactions for one account, one at a time (nonces stay in order across threads)."""

    def __init__(self, w3: Web3, account: LocalAccount, *, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.account = account
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._cached_chain_id: int | None = None

    @property
    def address(self) -> str:
        return self.account.address

    def send(
        self, call: ContractFunction | None = None, *, value: int = 0, to: str | None = None, data: bytes = b""
    ) -> Receipt:
        """Send ``call`` (a bound contract function), or a plain transfer to ``to``, and wait."""
        with self._lock:
            try:
                tx = self._build(call, value=value, to=to, data=data)
                signed = self.account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
            except requests.exceptions.ConnectionError as error:
                raise NetworkUnreachable(
                    f"The chain at {_endpoint(self.w3)} stopped answering; nothing more was sent. "
                    "Check that the node is running, then retry."
                ) from error
            except TimeExhausted as error:
                raise TransactionFailed(
                    f"Transaction {tx_hash.to_0x_hex()} was not mined within {self.receipt_timeout:.0f} s; "
                    "it may still be mined later. Check it before sending it again."
                ) from error
            except (ContractLogicError, Web3RPCError) as error:
                raise translate(error) from None
        if receipt.status != 1:
            self._explain_failure(call, value, receipt)
        return Receipt(receipt.transactionHash.to_0x_hex(), receipt.blockNumber, receipt.gasUsed, receipt)

    def _build(self, call: ContractFunction | None, *, value: int, to: str | None, data: bytes) -> dict[str, Any]:
        params: dict[str, Any] = {
            "from": self.address,
            "value": value,
            "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
            "chainId": self._chain_id(),
        }
        if call is not None:
            estimate = call.estimate_gas(params)
            return call.build_transaction({**params, "gas": int(estimate * GAS_MARGIN)})
        params.update(to=to, data=data)
        params["gas"] = int(self.w3.eth.estimate_gas(params) * GAS_MARGIN)
        params.update(_fees(self.w3))
        return params

    def _chain_id(self) -> int:
        if self._cached_chain_id is None:
            self._cached_chain_id = self.w3.eth.chain_id
        return self._cached_chain_id

    def _explain_failure(self, call: ContractFunction | None, value: int, receipt: Any) -> None:
        """Replay a failed transaction as a call on its block's parent state to get its reason."""
        if call is not None:
            try:
                call.call({"from": self.address, "value": value}, block_identifier=receipt.blockNumber - 1)
            except (ContractLogicError, Web3RPCError) as error:
                raise translate(error) from None
        raise TransactionFailed(
            f"Transaction {receipt.transactionHash.to_0x_hex()} failed in block {receipt.blockNumber} "
            f"after using {receipt.gasUsed} gas; the node gave no reason."
        )


def call_view(w3: Web3, call: ContractFunction) -> Any:
    """Run a view call; a contract refusal or a node that stopped answering becomes our error."""
    try:
        return call.call()
    except ContractLogicError as error:
        raise translate(error) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise NetworkUnreachable(
            f"The chain at {_endpoint(w3)} stopped answering. Check that the node is running, then retry."
        ) from error


def _fees(w3: Web3) -> dict[str, int]:
    base = w3.eth.get_block("latest").get("baseFeePerGas", 0)
    tip = w3.eth.max_priority_fee
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}


def _endpoint(w3: Web3) -> str:
    return getattr(w3.provider, "endpoint_uri", None) or type(w3.provider).__name__
