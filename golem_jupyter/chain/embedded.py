"""The embedded chain: an in-process EVM (eth-tester with py-evm) that speaks like a real node.

Two things make it interchangeable with a JSON-RPC node such as anvil:

* Reverts come back as JSON-RPC errors carrying the revert data (``code`` 3, ``data`` hex),
  so web3 raises the same ``ContractCustomError`` for every backend and
  :mod:`golem_jupyter.chain.errors` can name the contract's custom error. eth-tester itself
  stringifies the data; we turn it back into bytes.
* The development methods that tests and the devnet rely on are served with anvil's names:
  ``evm_snapshot``, ``evm_revert``, ``evm_mine``, ``evm_increaseTime``,
  ``evm_setNextBlockTimestamp``.

Dev accounts come from the well-known development mnemonic that anvil also uses, so the same
addresses are funded on both.
"""

from __future__ import annotations

import ast
import functools
import itertools
import threading
from typing import Any

from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
from eth.vm.spoof import SpoofTransaction
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils import ValidationError as EVMValidationError
from web3 import EthereumTesterProvider

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 20
DEV_BALANCE_WEI = 10_000 * 10**18
_HD_PATH = "m/44'/60'/0'/0"  # BIP-44 Ethereum path, as anvil and wallets use

# Selector of Solidity's Error(string).
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")

Account.enable_unaudited_hdwallet_features()


@functools.cache
def dev_key(index: int) -> str:
    """Private key (hex) of development account ``index``, derived from :data:`DEV_MNEMONIC`."""
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{_HD_PATH}/{index}").key.to_0x_hex()


def dev_keys(count: int = DEV_ACCOUNT_COUNT) -> list[str]:
    """Private keys (hex) of the first ``count`` development accounts."""
    return [dev_key(i) for i in range(count)]


def _estimate_gas(state, transaction) -> int:
    """Gas estimate from one run at the block gas limit, checked by a second run.

    py-evm's default bisects the gas limit (about a dozen EVM runs per estimate); one run and
    a check keep the embedded chain quick. The estimate covers the intrinsic gas, the execution
    gas before refunds and the 1/64 that calls must leave behind; if the check still runs out of
    gas, fall back to bisection.
    """
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0))
    finally:
        state.revert(snapshot)
    if computation.is_error:
        raise computation.error
    used = computation.get_gas_used()  # execution gas before refunds, without the intrinsic part
    estimate = min(state.gas_limit, transaction.intrinsic_gas + used + used // 63 + 2300)
    snapshot = state.snapshot()
    try:
        check = state.apply_transaction(SpoofTransaction(transaction, gas=estimate, gas_price=0))
    finally:
        state.revert(snapshot)
    if check.is_error:
        return binary_gas_search_intrinsic_tolerance(state, transaction)
    return estimate


def revert_data(error: TransactionFailed) -> bytes:
    """Recover the raw revert data from eth-tester's exception.

    eth-tester passes the data as bytes (gas estimation), as ``str(bytes)`` (calls), or as the
    already-decoded reason of an ``Error(string)``; all three become the original bytes.
    """
    arg = error.args[0] if error.args else b""
    if isinstance(arg, Exception):
        arg = arg.args[0] if arg.args else b""
    if isinstance(arg, bytes):
        return arg
    text = str(arg)
    if text[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = None
        if isinstance(value, bytes):
            return value
    return _ERROR_STRING_SELECTOR + abi_encode(["string"], [text])


class EmbeddedProvider(EthereumTesterProvider):
    """A web3 provider over an in-process py-evm chain, safe to share between threads."""

    def __init__(self, accounts: int = DEV_ACCOUNT_COUNT) -> None:
        backend = PyEVMBackend.from_mnemonic(
            DEV_MNEMONIC,
            genesis_state_overrides={"balance": DEV_BALANCE_WEI},
            num_accounts=accounts,
            hd_path=_HD_PATH,
        )
        backend.chain.gas_estimator = _estimate_gas
        super().__init__(EthereumTester(backend))
        # eth-tester derives every address from its key on each eth_accounts; ask once.
        self._accounts = list(self.ethereum_tester.get_accounts())
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._extra = {
            "evm_snapshot": self._snapshot,
            "evm_revert": self._revert,
            "evm_mine": self._mine,
            "evm_increaseTime": self._increase_time,
            "evm_setNextBlockTimestamp": self._set_next_timestamp,
            "eth_accounts": lambda: list(self._accounts),
        }

    def make_request(self, method: str, params: Any) -> dict[str, Any]:
        request_id = next(self._ids)
        with self._lock:
            try:
                if method in self._extra:
                    result = self._extra[method](*(params or []))
                    return {"jsonrpc": "2.0", "id": request_id, "result": result}
                return self._delegate(method, params, request_id)
            except TransactionFailed as error:
                data = revert_data(error)
                return {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {"code": 3, "message": "execution reverted", "data": "0x" + data.hex()},
                }

    def _delegate(self, method: str, params: Any, request_id: int) -> dict[str, Any]:
        namespace, _, endpoint = method.partition("_")
        try:
            delegator = self.api_endpoints[namespace][endpoint]
        except KeyError:
            return _error(request_id, -32601, f"method not found: {method}")
        try:
            result = delegator(self.ethereum_tester, params)
        except NotImplementedError:
            return _error(request_id, -32601, f"method not implemented by the embedded chain: {method}")
        except (EVMValidationError, TesterValidationError) as error:
            # What a node answers for an unaffordable or malformed transaction.
            return _error(request_id, -32000, str(error))
        except (ValueError, TypeError) as error:
            return _error(request_id, -32602, f"invalid params for {method}: {error}")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # Development methods, with anvil's names and result shapes.

    def _snapshot(self) -> int:
        return self.ethereum_tester.take_snapshot()

    def _revert(self, snapshot_id: str | int) -> bool:
        self.ethereum_tester.revert_to_snapshot(int(snapshot_id, 16) if isinstance(snapshot_id, str) else snapshot_id)
        return True

    def _mine(self, *_: Any) -> int:
        self.ethereum_tester.mine_blocks(1)
        return 0

    def _increase_time(self, seconds: int | str) -> int:
        seconds = int(seconds, 16) if isinstance(seconds, str) else int(seconds)
        pending = self.ethereum_tester.get_block_by_number("pending")["timestamp"]
        self.ethereum_tester.time_travel(pending + seconds)
        return seconds

    def _set_next_timestamp(self, timestamp: int | str) -> None:
        timestamp = int(timestamp, 16) if isinstance(timestamp, str) else int(timestamp)
        backend = self.ethereum_tester.backend
        backend.chain.header = backend.chain.header.copy(timestamp=timestamp)
        return None


def _error(request_id: int, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
