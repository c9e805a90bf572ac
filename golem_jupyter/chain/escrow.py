"""Typed client of ``GolemEscrow`` (see DESIGN.md section 3 and contracts/GolemEscrow.sol)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ..errors import InvalidInput
from .artifacts import load_artifact
from .tokens import erc20
from .transactions import Receipt, Transactor, call_view
from .types import NATIVE, as_address, as_amount, as_bytes32, as_token
from .vouchers import EscrowDomain, Voucher, sign_voucher

MAX_DEPOSIT = 2**96 - 1
"""Largest deposit one session can hold, in the token's smallest unit."""


@dataclass(frozen=True)
class SessionState:
    """A session as the contract stores it."""

    session_id: bytes
    requestor: str
    token: str
    deposited: int
    paid_out: int
    deadline: int
    closed: bool

    @property
    def remaining(self) -> int:
        """Deposit not yet credited to providers (refunded at close)."""
        return self.deposited - self.paid_out

    @property
    def exists(self) -> bool:
        return self.requestor != NATIVE


class Escrow:
    """One deployed GolemEscrow. Views need no account; transactions are sent from ``account``."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None) -> None:
        self.w3 = w3
        self.address = as_address(address, "escrow address")
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact("GolemEscrow")["abi"])
        self._tx = Transactor(w3, account) if account is not None else None

    def __repr__(self) -> str:
        return f"Escrow({self.address})"

    @property
    def account(self) -> LocalAccount:
        return self._sender().account

    def _sender(self) -> Transactor:
        if self._tx is None:
            raise InvalidInput("This Escrow client was made without an account; pass one to send transactions.")
        return self._tx

    def _send(self, call: Any, value: int = 0) -> Receipt:
        return self._sender().send(call, value=value)

    # ------------------------------------------------------------------ requestor

    def open_session(self, session_id: bytes | str, amount: int, deadline: int, token: str | None = None) -> Receipt:
        """Deposit ``amount`` into a new session that accepts work until ``deadline`` (Unix time).

        For an ERC-20 ``token`` the escrow is approved for ``amount`` first if needed.
        """
        session_id = as_bytes32(session_id, "session_id")
        amount = as_amount(amount)
        token = as_token(token)
        if amount > MAX_DEPOSIT:
            raise InvalidInput(f"A session holds at most {MAX_DEPOSIT} of the token's smallest unit, not {amount}.")
        now = self.w3.eth.get_block("latest").timestamp
        if not isinstance(deadline, int) or deadline <= now:
            raise InvalidInput(f"The deadline {deadline!r} must be a Unix time after the chain's current time {now}.")
        # The contract checks this too, but only after an ERC-20 approve would have been sent.
        if self.session(session_id).exists:
            raise InvalidInput(f"Session 0x{session_id.hex()} already exists; open the new one under a fresh id.")
        self._approve(token, amount)
        call = self.contract.functions.openSession(session_id, token, amount, deadline)
        return self._send(call, value=amount if token == NATIVE else 0)

    def top_up(self, session_id: bytes | str, amount: int) -> Receipt:
        """Add ``amount`` to an open session's deposit."""
        session_id = as_bytes32(session_id, "session_id")
        amount = as_amount(amount)
        token = self.session(session_id).token
        self._approve(token, amount)
        call = self.contract.functions.topUp(session_id, amount)
        return self._send(call, value=amount if token == NATIVE else 0)

    def settle_graph(
        self,
        session_id: bytes | str,
        graph_id: bytes | str,
        payouts: Mapping[str, int] | Iterable[tuple[str, int]],
        result_root: bytes | str = b"\0" * 32,
    ) -> Receipt:
        """Credit each provider its amount for graph ``graph_id``, in one transaction."""
        session_id = as_bytes32(session_id, "session_id")
        graph_id = as_bytes32(graph_id, "graph_id")
        result_root = as_bytes32(result_root, "result_root")
        pairs = list(payouts.items() if isinstance(payouts, Mapping) else payouts)
        providers = [as_address(p, "provider") for p, _ in pairs]
        amounts = [as_amount(a, f"amount for {p}", allow_zero=True) for p, a in pairs]
        call = self.contract.functions.settleGraph(session_id, graph_id, providers, amounts, result_root)
        return self._send(call)

    def report_fault(
        self, session_id: bytes | str, graph_id: bytes | str, provider: str, evidence: bytes | str = b"\0" * 32
    ) -> Receipt:
        """Record on-chain that ``provider`` returned a wrong result in ``graph_id``."""
        call = self.contract.functions.reportFault(
            as_bytes32(session_id, "session_id"),
            as_bytes32(graph_id, "graph_id"),
            as_address(provider, "provider"),
            as_bytes32(evidence, "evidence"),
        )
        return self._send(call)

    def sign_voucher(self, session_id: bytes | str, provider: str, cumulative_amount: int) -> Voucher:
        """Sign, as requestor, that ``provider`` is owed ``cumulative_amount`` in the session so far."""
        return sign_voucher(
            self.account,
            self.domain,
            session_id,
            as_address(provider, "provider"),
            as_amount(cumulative_amount, "cumulative amount", allow_zero=True),
        )

    # ------------------------------------------------------------------ provider

    def claim(self, voucher: Voucher) -> Receipt:
        """Claim what ``voucher`` (signed by the requestor, naming this account) promises."""
        if voucher.provider != self.account.address:
            raise InvalidInput(
                f"This voucher is for {voucher.provider}; it can only be claimed from that account, "
                f"not {self.account.address}."
            )
        call = self.contract.functions.claim(voucher.session_id, voucher.cumulative_amount, voucher.signature)
        return self._send(call)

    # ------------------------------------------------------------------ anyone

    def close_session(self, session_id: bytes | str) -> Receipt:
        """Close a session after its claim window and refund the remainder to its requestor."""
        return self._send(self.contract.functions.closeSession(as_bytes32(session_id, "session_id")))

    def withdraw(self, token: str | None = None) -> Receipt:
        """Withdraw everything credited to this account in ``token`` (native currency by default)."""
        return self._send(self.contract.functions.withdraw(as_token(token)))

    # ------------------------------------------------------------------ views

    def session(self, session_id: bytes | str) -> SessionState:
        session_id = as_bytes32(session_id, "session_id")
        requestor, token, deposited, paid_out, deadline, closed = self._view("sessions", session_id)
        return SessionState(session_id, requestor, token, deposited, paid_out, deadline, closed)

    def paid(self, session_id: bytes | str, provider: str) -> int:
        return self._view("paid", as_bytes32(session_id, "session_id"), as_address(provider, "provider"))

    def balance_of(self, account: str, token: str | None = None) -> int:
        return self._view("balanceOf", as_address(account, "account"), as_token(token))

    def is_graph_settled(self, session_id: bytes | str, graph_id: bytes | str) -> bool:
        return self._view("isGraphSettled", as_bytes32(session_id, "session_id"), as_bytes32(graph_id, "graph_id"))

    @cached_property
    def claim_window(self) -> int:
        """Seconds after a session's deadline during which providers may still claim."""
        return self._view("CLAIM_WINDOW")

    @cached_property
    def domain(self) -> EscrowDomain:
        """The EIP-712 domain vouchers are signed under, as the contract reports it (EIP-5267)."""
        _, name, version, chain_id, verifying_contract, _, _ = self._view("eip712Domain")
        return EscrowDomain(chain_id, verifying_contract, name, version)

    def voucher_digest(self, voucher: Voucher) -> bytes:
        """The digest the contract computes for ``voucher`` (to cross-check local signing)."""
        return self._view("hashVoucher", voucher.session_id, voucher.provider, voucher.cumulative_amount)

    def events(
        self, name: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any
    ) -> list[dict[str, Any]]:
        """Decoded events ``name`` (e.g. ``"Paid"``), oldest first, with block and tx hash.

        Keyword filters select indexed arguments by their Solidity names, e.g. ``sessionId=...``.
        """
        event = getattr(self.contract.events, name)
        logs = event.get_logs(from_block=from_block, to_block=to_block, argument_filters=filters or None)
        return [
            {
                **dict(log.args),
                "event": name,
                "block_number": log.blockNumber,
                "tx_hash": log.transactionHash.to_0x_hex(),
                "log_index": log.logIndex,
            }
            for log in logs
        ]

    def _view(self, name: str, *args: Any) -> Any:
        return call_view(self.w3, getattr(self.contract.functions, name)(*args))

    # ------------------------------------------------------------------ ERC-20

    def _approve(self, token: str, amount: int) -> None:
        if token == NATIVE:
            return
        contract = erc20(self.w3, token)
        owner = self.account.address
        if contract.functions.allowance(owner, self.address).call() < amount:
            self._send(contract.functions.approve(self.address, amount))
