"""Checks on what is written: each returns the value to store, or raises InvalidInput before anything is written."""

from __future__ import annotations

import math
from typing import Any

from eth_utils import is_address, to_checksum_address

from ..errors import InvalidInput
from ..market.agreements import AgreementStatus
from ._records import AGREEMENT_STATUSES, Payout

UINT256_MAX = 2**256 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

# -- checks: each returns the value to store, or raises InvalidInput before anything is written


def _id(value: object, what: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X"):
        try:
            return "0x" + bytes.fromhex(value[2:]).hex()
        except ValueError:
            pass
    raise InvalidInput(f"{what} must be 32 bytes or 0x followed by 64 hex digits, got {value!r}.")


def _address(value: object, what: str, *, allow_zero: bool = False) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise InvalidInput(f"{what} {value!r} is not an Ethereum address (0x followed by 40 hex digits).")
    if value.lower() == ZERO_ADDRESS and not allow_zero:
        raise InvalidInput(f"{what} cannot be the zero address.")
    return to_checksum_address(value)


def _amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer amount in the token's smallest unit, got {value!r}.")
    if not 0 <= value <= UINT256_MAX:
        raise InvalidInput(f"{what} must be between 0 and 2^256 - 1, got {value}.")
    return value


def _count(value: object, what: str) -> int:
    # SQLite INTEGER columns hold up to 2^63 - 1; larger counts are not counts.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInput(f"{what} must be a whole number from 0 to 2^63 - 1, got {value!r}.")
    return value


def _exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvalidInput(f"exit_code must be a whole number from 0 to 255, got {value!r}.")
    return value


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{what} must be a finite, non-negative number of seconds, got {value!r}.")
    return float(value)


def _text(value: object, what: str, *, optional: bool = False, allow_empty: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not (value or allow_empty):
        raise InvalidInput(f"{what} must be a {'' if allow_empty else 'non-empty '}string, got {value!r}.")
    return value


def _choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInput(f"{what} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _agreement_status(value: object) -> str:
    """The stored value of an :class:`AgreementStatus` given as the enum or its value."""
    return _choice(value.value if isinstance(value, AgreementStatus) else value, AGREEMENT_STATUSES, "agreement status")


def _payout(payout: object) -> Payout:
    if not isinstance(payout, Payout):
        raise InvalidInput(f"Each payout must be a golem_jupyter.ledger.Payout, got {payout!r}.")
    return Payout(
        provider=_address(payout.provider, "payout provider"),
        cpu_seconds=_seconds(payout.cpu_seconds, "cpu_seconds"),
        gpu_seconds=_seconds(payout.gpu_seconds, "gpu_seconds"),
        amount=_amount(payout.amount, "payout amount"),
        cumulative=_amount(payout.cumulative, "payout cumulative"),
    )
