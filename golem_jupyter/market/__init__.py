"""The market: signed negotiation messages, matching offers to a demand, per-session certificates,
what an agreement costs (:class:`Tariff`) and where it stands (:class:`AgreementStatus`).

These parts are pure (no event loop; only :func:`offers_with_reputations` reads the chain): the
provider agent and the requestor's ``GolemCluster`` build their negotiation on them.
"""

from __future__ import annotations

from .agreements import AgreementStatus
from .certificates import (
    CertificateError,
    Credentials,
    SessionCA,
    certificate_common_name,
    make_key_and_csr,
    verify_issued_by,
)
from .matching import (
    SANDBOX_TIERS,
    Demand,
    RankedOffer,
    Reputation,
    explain,
    matches,
    offer_sandbox,
    offer_token,
    offers_with_reputations,
    rank,
    reputations,
)
from .messages import (
    MAX_MESSAGE_BYTES,
    MAX_TTL,
    SCHEMAS,
    TO_PROVIDER,
    TO_REQUESTOR,
    Message,
    Reason,
    Rejection,
    ReplayGuard,
    decode_line,
    encode,
    sign_message,
    verify_message,
)
from .pricing import Tariff

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TTL",
    "SANDBOX_TIERS",
    "SCHEMAS",
    "TO_PROVIDER",
    "TO_REQUESTOR",
    "AgreementStatus",
    "CertificateError",
    "Credentials",
    "Demand",
    "Message",
    "RankedOffer",
    "Reason",
    "Rejection",
    "ReplayGuard",
    "Reputation",
    "SessionCA",
    "Tariff",
    "certificate_common_name",
    "decode_line",
    "encode",
    "explain",
    "make_key_and_csr",
    "matches",
    "offer_sandbox",
    "offer_token",
    "offers_with_reputations",
    "rank",
    "reputations",
    "sign_message",
    "verify_issued_by",
    "verify_message",
]
