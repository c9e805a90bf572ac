"""Checks and conversions for values sent to the chain, so bad input fails before any call."""

from __future__ import annotations

import os

from eth_utils import is_address, is_hex, to_checksum_address

from ..errors import InvalidInput

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
NATIVE = ZERO_ADDRESS
"""Token address that stands for the chain's native currency."""

UINT256_MAX = 2**256 - 1


def as_address(value: object, what: str = "address", *, allow_zero: bool = False) -> str:
    """A checksummed address, or :class:`InvalidInput` naming ``what``."""
    if not isinstance(value, str) or not is_address(value):
        raise InvalidInput(f"{what} {value!r} is not an Ethereum address (0x followed by 40 hex digits).")
    address = to_checksum_address(value)
    if address == ZERO_ADDRESS and not allow_zero:
        raise InvalidInput(f"{what} cannot be the zero address.")
    return address


def as_token(value: object) -> str:
    """A token address; ``None`` means the native currency."""
    return NATIVE if value is None else as_address(value, "token", allow_zero=True)


def as_bytes32(value: object, what: str = "id") -> bytes:
    """32 bytes from bytes or a 0x-prefixed hex string."""
    if isinstance(value, str) and is_hex(value) and value.startswith(("0x", "0X")):
        raw = bytes.fromhex(value[2:])
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise InvalidInput(f"{what} must be 32 bytes or a 0x-prefixed hex string, got {value!r}.")
    if len(raw) != 32:
        raise InvalidInput(f"{what} must be exactly 32 bytes, got {len(raw)}.")
    return raw


def as_amount(value: object, what: str = "amount", *, allow_zero: bool = False) -> int:
    """A non-negative integer amount in the token's smallest unit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer number of the token's smallest unit, got {value!r}.")
    if value < 0 or value > UINT256_MAX:
        raise InvalidInput(f"{what} must be between 0 and 2^256 - 1, got {value}.")
    if value == 0 and not allow_zero:
        raise InvalidInput(f"{what} must be greater than zero.")
    return value


def new_id() -> bytes:
    """A fresh random 32-byte identifier (session and graph ids)."""
    return os.urandom(32)
