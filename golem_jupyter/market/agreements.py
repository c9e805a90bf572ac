"""The life of an agreement, in one vocabulary for the provider, the requestor and the ledger."""

from __future__ import annotations

from enum import StrEnum


class AgreementStatus(StrEnum):
    """Where an agreement between a requestor's session and one provider stands.

    The values are what the ledger stores, so they never change once released.
    """

    NEGOTIATING = "negotiating"
    """Proposed and accepted, not yet confirmed: no worker serves yet."""
    ACTIVE = "active"
    """Confirmed: the provider's worker serves the session."""
    REJECTED = "rejected"
    """The provider refused the proposal (its reason code says why)."""
    TERMINATED = "terminated"
    """Ended by either side: scaled down, session closed, unpaid, or an unconfirmed proposal expired."""
    FAILED = "failed"
    """It broke before or while serving: no answer, a worker that never joined, a lost worker."""

    @property
    def is_final(self) -> bool:
        return self in (AgreementStatus.REJECTED, AgreementStatus.TERMINATED, AgreementStatus.FAILED)
