"""The seam between the chain and everything else: what the rest of golem-jupyter calls on the escrow and
the registry.

Requestor, provider agent, market matching, server, notebook magics and CLI reach the chain only
through ``Chain.escrow`` (an :class:`EscrowBackend`) and ``Chain.registry`` (a :class:`RegistryBackend`).
:class:`~golem_jupyter.chain.escrow.Escrow` and :class:`~golem_jupyter.chain.registry.Registry` implement
them for the ``GolemEscrow`` and ``ProviderRegistry`` contracts on any EVM JSON-RPC node (the embedded
devnet, anvil, a real network).

To add another chain backend (another chain, another contract, an in-memory fake for tests):

1. write a class with every member of :class:`EscrowBackend`, with the same meaning as the contract's
   (``contracts/interfaces/IGolemEscrow.sol`` says what each call does and when it must fail), and one
   with every member of :class:`RegistryBackend` (``contracts/interfaces/IProviderRegistry.sol``); no
   subclassing is needed, the protocols are structural;
2. raise :class:`~golem_jupyter.errors.GolemError` subclasses that say what happened and what to do, as
   :mod:`golem_jupyter.chain.errors` does for the contracts' custom errors;
3. hand instances of them to the code that needs them, e.g. ``chain.escrow = MyEscrow(...)`` on a
   :class:`~golem_jupyter.chain.Chain`, and check with ``isinstance(obj, EscrowBackend)``; tests/test_backends.py
   shows how the built-in clients are checked member by member.

Both protocols list exactly what the code base uses today: when code starts to use another method of
``Escrow`` or ``Registry``, add it here (tests/test_backends.py checks the built-in clients still fit).
On Python 3.11, ``isinstance`` against a protocol reads every member, so checking an ``Escrow`` reads
its ``domain`` once from the chain (later Pythons look the members up without calling them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from .escrow import Allocation, SessionState
from .registry import Offer
from .transactions import Receipt
from .vouchers import EscrowDomain, Release, Voucher

__all__ = ["EscrowBackend", "RegistryBackend"]


@runtime_checkable
class EscrowBackend(Protocol):
    """Deposits, allocations, settlements, vouchers, releases and payouts of compute sessions (see ``IGolemEscrow``)."""

    @property
    def address(self) -> str:
        """The escrow's address; agreements name it so that a provider knows who pays it."""
        ...

    @property
    def domain(self) -> EscrowDomain:
        """The EIP-712 domain vouchers are signed and checked under."""
        ...

    @property
    def claim_window(self) -> int:
        """Seconds after a session's deadline during which providers may still claim."""
        ...

    def open_session(self, session_id: bytes | str, amount: int, deadline: int, token: str | None = None) -> Receipt:
        """Deposit ``amount`` of ``token`` (native currency if None) into a new session open until ``deadline``."""
        ...

    def top_up(self, session_id: bytes | str, amount: int) -> Receipt:
        """Add ``amount`` to an open session's deposit."""
        ...

    def allocate(self, session_id: bytes | str, amounts: Mapping[str, int] | Iterable[tuple[str, int]]) -> Receipt:
        """Move each amount of the session's unallocated remainder into that provider's allocation."""
        ...

    def settle_graph(
        self,
        session_id: bytes | str,
        seq: int,
        graph_id: bytes | str,
        payouts: Mapping[str, int] | Iterable[tuple[str, int]],
        result_root: bytes | str = b"\0" * 32,
    ) -> Receipt:
        """Credit each provider its amount for graph ``graph_id``, the session's settlement number ``seq``."""
        ...

    def reclaim(self, session_id: bytes | str) -> Receipt:
        """Take the session's unallocated remainder back now; allocations stay as they are."""
        ...

    def close_session(self, session_id: bytes | str) -> Receipt:
        """Close the session and refund its requestor (at once when no allocation is open)."""
        ...

    def report_fault(
        self, session_id: bytes | str, graph_id: bytes | str, provider: str, evidence: bytes | str = b"\0" * 32
    ) -> Receipt:
        """Record that ``provider`` (it holds an allocation in the session) returned a wrong result in ``graph_id``."""
        ...

    def sign_voucher(self, session_id: bytes | str, provider: str, cumulative_amount: int) -> Voucher:
        """Sign, as the session's requestor, that ``provider`` is owed ``cumulative_amount`` in it so far."""
        ...

    def claim(self, voucher: Voucher) -> Receipt:
        """Claim, as the provider it names, what ``voucher`` promises beyond what was already credited."""
        ...

    def sign_release(self, session_id: bytes | str, final_amount: int) -> Release:
        """Sign, as a provider, the release of this account's allocation in the session for ``final_amount``."""
        ...

    def release(self, release: Release) -> Receipt:
        """Submit a provider's signed release: pay it its final amount, return the rest of its allocation."""
        ...

    def withdraw(self, token: str | None = None) -> Receipt:
        """Pay this account everything credited to it in ``token`` (native currency if None)."""
        ...

    def session(self, session_id: bytes | str) -> SessionState:
        """The session as the escrow holds it (``exists`` is False for an unknown id)."""
        ...

    def allocation(self, session_id: bytes | str, provider: str) -> Allocation:
        """``provider``'s allocation in the session: allocated, paid from it, released."""
        ...

    def paid(self, session_id: bytes | str, provider: str) -> int:
        """What ``provider`` was credited in the session so far, by settlements, claims and its release."""
        ...

    def balance_of(self, account: str, token: str | None = None) -> int:
        """What ``account`` was credited in ``token`` and has not withdrawn yet."""
        ...

    def events(
        self, name: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any
    ) -> list[dict[str, Any]]:
        """Decoded events ``name`` (e.g. ``"Paid"``), oldest first, filtered by indexed arguments."""
        ...


@runtime_checkable
class RegistryBackend(Protocol):
    """The market's list of provider offers (see ``IProviderRegistry``)."""

    def active_offers(self) -> list[Offer]:
        """Every active offer, each provider once, with ``provider`` set."""
        ...

    def publish_or_update(self, offer: Offer) -> Receipt:
        """Make ``offer`` this account's active offer, whether or not it had one."""
        ...

    def withdraw(self) -> Receipt:
        """Take this account's offer off the market."""
        ...
