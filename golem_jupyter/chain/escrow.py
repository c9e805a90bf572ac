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
from .vouchers import EscrowDomain, Release, Voucher, sign_release, sign_voucher

MAX_DEPOSIT = 2**96 - 1
"""Largest deposit one session can hold, in the token's smallest unit."""

MAX_DEADLINE = 2**40 - 1
"""Latest deadline (Unix time) the escrow stores."""


@dataclass(frozen=True)
class SessionState:
    """A session as the contract stores it."""

    session_id: bytes
    requestor: str
    token: str
    deposited: int
    paid_out: int
    unallocated: int
    """Deposit in no provider's allocation (0 once closed)."""
    deadline: int
    next_seq: int
    """The ``seq`` the session's next settlement must carry."""
    open_allocations: int
    closed: bool
    reclaimed: int = 0
    """Taken back by the requestor with ``reclaim``."""

    @property
    def remaining(self) -> int:
        """What the escrow holds for the session: deposited, less reclaimed, less paid to providers
        (the unallocated remainder plus the unpaid part of open allocations; refunded at close)."""
        return self.deposited - self.reclaimed - self.paid_out

    @property
    def locked(self) -> int:
        """What open allocations hold and have not paid yet (only their providers can draw on it)."""
        return self.remaining - self.unallocated if not self.closed else 0

    @property
    def exists(self) -> bool:
        return self.requestor != NATIVE


@dataclass(frozen=True)
class Allocation:
    """One provider's allocation in one session, as the contract stores it."""

    allocated: int
    """Allocated in total (after a release: the final amount)."""
    paid: int
    """Paid from it, by settlements, claims and the release."""
    released: bool

    @property
    def available(self) -> int:
        """What can still be paid from it (0 once released)."""
        return 0 if self.released else self.allocated - self.paid

    @property
    def exists(self) -> bool:
        return self.allocated > 0 or self.released


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
        if isinstance(deadline, bool) or not isinstance(deadline, int) or not now < deadline <= MAX_DEADLINE:
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

    def allocate(self, session_id: bytes | str, amounts: Mapping[str, int] | Iterable[tuple[str, int]]) -> Receipt:
        """Move each amount of the session's unallocated remainder into that provider's allocation."""
        session_id = as_bytes32(session_id, "session_id")
        providers, values = _pairs(amounts, allow_zero=False)
        return self._send(self.contract.functions.allocate(session_id, providers, values))

    def settle_graph(
        self,
        session_id: bytes | str,
        seq: int,
        graph_id: bytes | str,
        payouts: Mapping[str, int] | Iterable[tuple[str, int]],
        result_root: bytes | str = b"\0" * 32,
    ) -> Receipt:
        """Credit each provider its amount for graph ``graph_id``, settlement number ``seq`` of the session.

        ``seq`` must be the session's ``next_seq``; a ``seq`` that was already mined raises
        :class:`~.errors.GraphAlreadySettled` (so a retry knows its first attempt went through).
        """
        session_id = as_bytes32(session_id, "session_id")
        graph_id = as_bytes32(graph_id, "graph_id")
        result_root = as_bytes32(result_root, "result_root")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**64:
            raise InvalidInput(f"seq must be a settlement number between 0 and 2^64 - 1, got {seq!r}.")
        providers, amounts = _pairs(payouts, allow_zero=True)
        call = self.contract.functions.settleGraph(session_id, seq, graph_id, providers, amounts, result_root)
        return self._send(call)

    def reclaim(self, session_id: bytes | str) -> Receipt:
        """Take the session's unallocated remainder back now (allocations stay as they are)."""
        return self._send(self.contract.functions.reclaim(as_bytes32(session_id, "session_id")))

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

    def sign_release(self, session_id: bytes | str, final_amount: int) -> Release:
        """Sign, as provider, the release of this account's allocation for ``final_amount`` in total."""
        return sign_release(
            self.account, self.domain, session_id, as_amount(final_amount, "final amount", allow_zero=True)
        )

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

    def release(self, release: Release) -> Receipt:
        """Submit a provider's signed release: pay it the final amount, return the rest of its allocation."""
        call = self.contract.functions.release(
            release.session_id, release.provider, release.final_amount, release.signature
        )
        return self._send(call)

    def close_session(self, session_id: bytes | str) -> Receipt:
        """Close a session and refund its requestor: at once by the requestor when no allocation is open,
        by anyone after the claim window."""
        return self._send(self.contract.functions.closeSession(as_bytes32(session_id, "session_id")))

    def withdraw(self, token: str | None = None) -> Receipt:
        """Withdraw everything credited to this account in ``token`` (native currency by default)."""
        return self._send(self.contract.functions.withdraw(as_token(token)))

    # ------------------------------------------------------------------ views

    def session(self, session_id: bytes | str) -> SessionState:
        session_id = as_bytes32(session_id, "session_id")
        state = self._view("sessions", session_id)
        return SessionState(session_id, *state, reclaimed=self._view("reclaimed", session_id))

    def allocation(self, session_id: bytes | str, provider: str) -> Allocation:
        allocated, paid, released = self._view(
            "allocations", as_bytes32(session_id, "session_id"), as_address(provider, "provider")
        )
        return Allocation(allocated, paid, released)

    def paid(self, session_id: bytes | str, provider: str) -> int:
        return self._view("paid", as_bytes32(session_id, "session_id"), as_address(provider, "provider"))

    def balance_of(self, account: str, token: str | None = None) -> int:
        return self._view("balanceOf", as_address(account, "account"), as_token(token))

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

    def release_digest(self, release: Release) -> bytes:
        """The digest the contract computes for ``release`` (to cross-check local signing)."""
        return self._view("hashRelease", release.session_id, release.provider, release.final_amount)

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


def _pairs(amounts: Mapping[str, int] | Iterable[tuple[str, int]], *, allow_zero: bool) -> tuple[list[str], list[int]]:
    """Checked (providers, amounts) lists from a mapping or pairs."""
    pairs = list(amounts.items() if isinstance(amounts, Mapping) else amounts)
    providers = [as_address(p, "provider") for p, _ in pairs]
    values = [as_amount(a, f"amount for {p}", allow_zero=allow_zero) for p, a in pairs]
    return providers, values
