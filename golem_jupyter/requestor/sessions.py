"""A wallet's escrow sessions as the chain holds them now: what is paid, locked, refundable, and when.

The ledger says which sessions this wallet opened on this escrow (and who was rented in each); the
chain says what each holds. ``golem sessions``, the side panel's Sessions list and its Close button
read them through :func:`wallet_sessions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chain import Chain
from ..ledger import Ledger, SessionRecord


@dataclass(frozen=True)
class SessionSummary:
    """One session of the wallet: the ledger's record and the escrow's numbers."""

    record: SessionRecord
    deposited: int
    """Deposited in total, top-ups included."""
    paid: int
    """Paid to providers (by settlements, claims and releases)."""
    allocated: int
    """Held in open allocations and not paid: only their providers can draw on it (or release it)."""
    refundable_now: int
    """The unallocated remainder: ``reclaim`` (or a close) returns it at once."""
    returned: int
    """Already back in the wallet (reclaimed, or refunded by the close)."""
    open_allocations: int
    closed: bool
    closable_at: int
    """Unix time after which anyone may close the session, open allocations or not (deadline + claim window)."""

    @property
    def session_id(self) -> str:
        return self.record.session_id

    def closable(self, now: float) -> str:
        """When the rest can be closed, in a few words."""
        if self.closed:
            return "closed"
        if self.open_allocations == 0 or now > self.closable_at:
            return "now"
        return f"now if {self.open_allocations} provider(s) release, else after the claim window"


def summarize(chain: Chain, record: SessionRecord) -> SessionSummary:
    """What the escrow holds of the recorded session now (blocking: JSON-RPC)."""
    state = chain.escrow.session(record.session_id)
    return SessionSummary(
        record=record,
        deposited=state.deposited,
        paid=state.paid_out,
        allocated=state.locked,
        refundable_now=0 if state.closed else state.unallocated,
        # A closed session gave back everything it did not pay, whichever way it was closed.
        returned=state.deposited - state.paid_out if state.closed else state.reclaimed,
        open_allocations=0 if state.closed else state.open_allocations,
        closed=state.closed,
        closable_at=state.deadline + chain.escrow.claim_window,
    )


def recorded_sessions(ledger: Ledger, chain: Chain, requestor: str) -> list[SessionRecord]:
    """The sessions the ledger has of ``requestor`` on this chain's escrow, newest first."""
    network = chain.network
    return ledger.sessions_of(requestor, chain_id=network.chain_id, escrow=network.escrow)


def wallet_sessions(
    ledger: Ledger, chain: Chain, requestor: str, *, include_closed: bool = False
) -> list[SessionSummary]:
    """The wallet's sessions with the chain's numbers; closed ones only if asked (blocking)."""
    summaries = []
    for record in recorded_sessions(ledger, chain, requestor):
        if record.tx_hash is None:
            continue  # never opened on-chain: nothing to show or close
        if record.status == "closed" and not include_closed:
            continue
        summary = summarize(chain, record)
        if summary.closed and not include_closed:
            continue
        summaries.append(summary)
    return summaries
