"""Closing an escrow session: every provider's signed release, then the cooperative close or a reclaim.

DESIGN.md section 4, step 6. A provider's allocation can only be closed by the provider: it signs a
``Release`` ("pay me this much in total, give the rest back") when the final amount covers its own
meter. Once no allocation is open, the requestor closes the session and the rest of the deposit is
back at once. A provider that does not answer, or refuses, keeps its allocation (and its voucher)
until the claim window ends; everything else comes back now with ``reclaim``.

Two callers: :meth:`~.payments.Payments.close_session` at the end of a cluster, with the accounts it
kept; and ``golem sessions close`` or the side panel's Close button for a session whose kernel is gone,
with what the ledger recorded (each provider's endpoint, agreement id and last voucher).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..amounts import format_wei_exact
from ..chain import Chain
from ..chain.escrow import Allocation
from ..chain.vouchers import Release
from ..errors import GolemError
from ..ledger import Ledger
from .negotiation import Negotiator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Releasable:
    """A provider whose allocation the session asks to be released, at its last voucher."""

    provider: str
    endpoint: str
    agreement_id: bytes | None
    """The provider's id of the agreement (None: not recorded, so it cannot be asked)."""
    final: int
    """What the vouchers it holds promise in total: the release's final amount."""


@dataclass(frozen=True)
class Holdout:
    """A provider that kept its allocation: it may still claim with its voucher until the claim window ends."""

    provider: str
    locked: int
    """What its allocation holds and has not paid."""
    reason: str


@dataclass(frozen=True)
class Closing:
    """What closing (or trying to close) a session did."""

    session_id: bytes
    closed: bool
    """The session is closed on-chain (nothing of it is left in the escrow)."""
    returned: int
    """Given back to the wallet by this call (the close's refund, or the reclaim)."""
    tx_hash: str | None
    """The close's (or the reclaim's) transaction; None when nothing needed sending."""
    holdouts: tuple[Holdout, ...] = ()
    closable_at: int = 0
    """Unix time after which anyone may close the session unilaterally (deadline plus claim window)."""

    @property
    def locked(self) -> int:
        return sum(h.locked for h in self.holdouts)

    def describe(self) -> str:
        """One sentence for people: what came back, and what stays where until when."""
        short = f"session 0x{self.session_id.hex()[:8]}…"
        back = f"{format_wei_exact(self.returned)} is back in the wallet"
        if self.closed:
            return f"{short} closed: {back}"
        names = ", ".join(h.provider for h in self.holdouts)
        return (
            f"{short}: {back}; {format_wei_exact(self.locked)} stays allocated to {names}, which did not release it, "
            f"until the claim window ends (then `golem sessions close` returns what they did not claim)"
        )


async def ask_for_release(negotiator: Negotiator, chain: Chain, session_id: bytes, provider: Releasable) -> None:
    """Ask ``provider`` for its release at its final amount and submit it; :class:`GolemError` says why not.

    An allocation below the final amount (a top-up that never got through) is raised first: the
    contract refuses a release above the allocation.
    """
    escrow = chain.escrow
    allocation = await asyncio.to_thread(escrow.allocation, session_id, provider.provider)
    if allocation.released:
        return
    if provider.agreement_id is None:
        raise GolemError("the ledger has no agreement id to name in a release request")
    if allocation.allocated < provider.final:
        await asyncio.to_thread(escrow.allocate, session_id, {provider.provider: provider.final - allocation.allocated})
    answer = await negotiator.request(
        provider.endpoint,
        provider.provider,
        "release",
        {"agreementId": provider.agreement_id, "finalAmount": provider.final},
    )
    if answer.kind != "released" or answer.body["finalAmount"] != provider.final:
        raise GolemError(f"it answered {answer.kind} instead of its release for {provider.final} wei")
    release = Release(session_id, provider.provider, provider.final, answer.body["signature"])
    if release.signer(escrow.domain) != provider.provider:
        raise GolemError("its release is not signed by it")
    await asyncio.to_thread(escrow.release, release)


async def release_all(
    negotiator: Negotiator, chain: Chain, session_id: bytes, providers: Iterable[Releasable]
) -> dict[str, str]:
    """Ask every provider at once; the providers that did not release, and why (logged too)."""
    providers = list(providers)
    outcomes = await asyncio.gather(
        *(ask_for_release(negotiator, chain, session_id, p) for p in providers), return_exceptions=True
    )
    refused: dict[str, str] = {}
    for provider, outcome in zip(providers, outcomes, strict=True):
        if isinstance(outcome, GolemError):
            refused[provider.provider] = str(outcome)
            logger.warning(
                "Provider %s did not release its allocation (%s); it keeps it until the claim window ends.",
                provider.provider,
                outcome,
            )
        elif isinstance(outcome, BaseException):
            raise outcome
    return refused


def finish(chain: Chain, ledger: Ledger, session_id: bytes, refused: dict[str, str] | None = None) -> Closing:
    """Close the session if no allocation is open (or its claim window is over), else reclaim the
    unallocated remainder; record the outcome in the ledger. Blocking (JSON-RPC and SQLite)."""
    escrow = chain.escrow
    state = escrow.session(session_id)
    closable_at = state.deadline + escrow.claim_window
    record = ledger.session(session_id)
    if state.closed:
        if record is not None and record.status != "closed":
            ledger.update_session(session_id, status="closed")
        return Closing(session_id, True, 0, None, closable_at=closable_at)
    expired = chain.w3.eth.get_block("latest")["timestamp"] > closable_at
    if state.open_allocations == 0 or expired:
        returned = state.remaining if expired else state.unallocated
        receipt = escrow.close_session(session_id)
        if record is not None:
            ledger.update_session(
                session_id, status="closed", close_tx=receipt.tx_hash, refund=state.reclaimed + returned
            )
        logger.info("Closed session 0x%s: %d wei refunded (tx %s)", session_id.hex(), returned, receipt.tx_hash)
        return Closing(session_id, True, returned, receipt.tx_hash, closable_at=closable_at)
    tx_hash = escrow.reclaim(session_id).tx_hash if state.unallocated else None
    if record is not None:
        ledger.update_session(
            session_id, status="closing", close_tx=tx_hash, refund=state.reclaimed + state.unallocated
        )
    holdouts = tuple(
        Holdout(provider, allocation.available, (refused or {}).get(provider, "it did not release"))
        for provider, allocation in _open_allocations(chain, ledger, session_id)
    )
    closing = Closing(session_id, False, state.unallocated, tx_hash, holdouts, closable_at)
    logger.warning("%s", closing.describe())
    return closing


def _open_allocations(chain: Chain, ledger: Ledger, session_id: bytes) -> list[tuple[str, Allocation]]:
    """The session's providers (as the ledger knows them) whose allocation is still open."""
    found = []
    for agreement in ledger.agreements(session_id):
        allocation = chain.escrow.allocation(session_id, agreement.provider)
        if allocation.allocated and not allocation.released:
            found.append((agreement.provider, allocation))
    return found


def releasable_from_ledger(chain: Chain, ledger: Ledger, session_id: bytes) -> list[Releasable]:
    """The providers of a recorded session whose allocation is open, each at its last recorded voucher."""
    agreements = {a.provider: a for a in ledger.agreements(session_id)}
    return [
        Releasable(
            provider,
            agreements[provider].endpoint,
            bytes.fromhex(agreements[provider].agreement_id[2:]) if agreements[provider].agreement_id else None,
            ledger.last_cumulative(session_id, provider),
        )
        for provider, _ in _open_allocations(chain, ledger, session_id)
    ]


async def close_recorded(chain: Chain, ledger: Ledger, negotiator: Negotiator, session_id: bytes) -> Closing:
    """Close a session from what the ledger recorded: releases, then close or reclaim."""
    state = await asyncio.to_thread(chain.escrow.session, session_id)
    if not state.exists:
        raise GolemError(f"The escrow at {chain.network.escrow} has no session 0x{session_id.hex()}.")
    if state.requestor != negotiator.account.address:
        raise GolemError(
            f"Session 0x{session_id.hex()} belongs to {state.requestor}, not to this wallet "
            f"({negotiator.account.address}); only its requestor can close it before its claim window ends."
        )
    refused: dict[str, str] = {}
    if not state.closed:
        if await asyncio.to_thread(ledger.session, session_id) is not None:
            await asyncio.to_thread(ledger.update_session, session_id, status="closing")
        providers = await asyncio.to_thread(releasable_from_ledger, chain, ledger, session_id)
        refused = await release_all(negotiator, chain, session_id, providers)
    return await asyncio.to_thread(finish, chain, ledger, session_id, refused)
