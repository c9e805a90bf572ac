"""EIP-712 messages of the escrow: vouchers (signed by a requestor) and releases (signed by a provider).

A voucher is a requestor's signed promise of the cumulative amount owed to a provider; the typed
data is exactly what ``GolemEscrow.claim`` verifies:
``Voucher(bytes32 sessionId,address provider,uint256 cumulativeAmount)``.

A release is a provider's signed "pay me ``finalAmount`` in total and give the rest of my
allocation back"; ``GolemEscrow.release`` verifies
``Release(bytes32 sessionId,address provider,uint256 finalAmount)``.

Both are signed under the domain ``{name: "GolemEscrow", version: "2", chainId, verifyingContract}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from .types import as_bytes32

VOUCHER_TYPES = {
    "Voucher": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "provider", "type": "address"},
        {"name": "cumulativeAmount", "type": "uint256"},
    ]
}

RELEASE_TYPES = {
    "Release": [
        {"name": "sessionId", "type": "bytes32"},
        {"name": "provider", "type": "address"},
        {"name": "finalAmount", "type": "uint256"},
    ]
}


@dataclass(frozen=True)
class EscrowDomain:
    """The EIP-712 domain of one deployed escrow."""

    chain_id: int
    verifying_contract: str
    name: str = "GolemEscrow"
    version: str = "2"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True)
class Voucher:
    """A signed cumulative amount for one provider in one session."""

    session_id: bytes
    provider: str
    cumulative_amount: int
    signature: bytes

    def message(self) -> dict[str, Any]:
        return _message(self.session_id, self.provider, self.cumulative_amount)

    def signer(self, domain: EscrowDomain) -> str:
        """The address that signed this voucher under ``domain``."""
        signable = encode_typed_data(domain.as_dict(), VOUCHER_TYPES, self.message())
        return Account.recover_message(signable, signature=self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "sessionId": "0x" + self.session_id.hex(),
            "provider": self.provider,
            "cumulativeAmount": str(self.cumulative_amount),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Voucher:
        return cls(
            session_id=as_bytes32(data["sessionId"], "sessionId"),
            provider=to_checksum_address(data["provider"]),
            cumulative_amount=int(data["cumulativeAmount"]),
            signature=bytes.fromhex(data["signature"].removeprefix("0x")),
        )


def _message(session_id: bytes, provider: str, cumulative_amount: int) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "provider": to_checksum_address(provider),
        "cumulativeAmount": cumulative_amount,
    }


def sign_voucher(
    account: LocalAccount, domain: EscrowDomain, session_id: bytes | str, provider: str, cumulative_amount: int
) -> Voucher:
    """Sign a voucher as the session's requestor."""
    session_id = as_bytes32(session_id, "session_id")
    if cumulative_amount < 0:
        raise ValueError("a voucher's cumulative amount cannot be negative")
    signable = encode_typed_data(domain.as_dict(), VOUCHER_TYPES, _message(session_id, provider, cumulative_amount))
    signed = account.sign_message(signable)
    return Voucher(session_id, to_checksum_address(provider), cumulative_amount, bytes(signed.signature))


@dataclass(frozen=True)
class Release:
    """A provider's signed release of its allocation in one session, for ``final_amount`` in total."""

    session_id: bytes
    provider: str
    final_amount: int
    signature: bytes

    def message(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "provider": to_checksum_address(self.provider),
            "finalAmount": self.final_amount,
        }

    def signer(self, domain: EscrowDomain) -> str:
        """The address that signed this release under ``domain`` (it must be ``provider``)."""
        signable = encode_typed_data(domain.as_dict(), RELEASE_TYPES, self.message())
        return Account.recover_message(signable, signature=self.signature)

    def to_json(self) -> dict[str, Any]:
        """The release as JSON (amounts as decimal strings), for the negotiation channel."""
        return {
            "sessionId": "0x" + self.session_id.hex(),
            "provider": self.provider,
            "finalAmount": str(self.final_amount),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        return cls(
            session_id=as_bytes32(data["sessionId"], "sessionId"),
            provider=to_checksum_address(data["provider"]),
            final_amount=int(data["finalAmount"]),
            signature=bytes.fromhex(data["signature"].removeprefix("0x")),
        )


def sign_release(account: LocalAccount, domain: EscrowDomain, session_id: bytes | str, final_amount: int) -> Release:
    """Sign, as the provider ``account``, the release of its allocation for ``final_amount`` in total."""
    session_id = as_bytes32(session_id, "session_id")
    if final_amount < 0:
        raise ValueError("a release's final amount cannot be negative")
    release = Release(session_id, to_checksum_address(account.address), final_amount, b"")
    signed = account.sign_message(encode_typed_data(domain.as_dict(), RELEASE_TYPES, release.message()))
    return Release(session_id, release.provider, final_amount, bytes(signed.signature))
