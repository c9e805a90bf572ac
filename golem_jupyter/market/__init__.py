"""The market: signed negotiation messages, matching offers to a demand, per-session certificates.

These parts are pure (no network, no event loop): the provider agent and the requestor's
``GolemCluster`` build their negotiation on them.
"""

from __future__ import annotations

from .certificates import (
    CertificateError,
    Credentials,
    SessionCA,
    certificate_common_name,
    make_key_and_csr,
    verify_issued_by,
)
from .matching import Demand, Reputation, explain, matches, rank, reputations
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

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TTL",
    "SCHEMAS",
    "TO_PROVIDER",
    "TO_REQUESTOR",
    "CertificateError",
    "Credentials",
    "Demand",
    "Message",
    "Reason",
    "Rejection",
    "ReplayGuard",
    "Reputation",
    "SessionCA",
    "certificate_common_name",
    "decode_line",
    "encode",
    "explain",
    "make_key_and_csr",
    "matches",
    "rank",
    "reputations",
    "sign_message",
    "verify_issued_by",
    "verify_message",
]
