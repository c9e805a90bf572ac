"""Amounts of money as people type them (``0.01``, ``0.01 ETH``, ``5 gwei``, ``1000wei``) and read them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import InvalidInput

GWEI = 10**9
ETH = 10**18
UNITS = {"eth": ETH, "ether": ETH, "gwei": GWEI, "wei": 1}
_AMOUNT = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_amount(text: str, default_unit: str = "eth") -> int:
    """Wei in ``text``; a bare number is in ``default_unit``. Fractions of a wei are refused."""
    match = _AMOUNT.match(str(text))
    unit = (match.group(2) if match else "").lower() or default_unit
    if match is None or unit not in UNITS:
        raise InvalidInput(
            f"{text!r} is not an amount: write a number with an optional unit, e.g. 0.01, 0.01eth, 5gwei."
        )
    try:
        wei = Decimal(match.group(1).replace("_", "")) * UNITS[unit]
    except InvalidOperation:
        raise InvalidInput(f"{text!r} is not an amount.") from None
    if wei != wei.to_integral_value():
        raise InvalidInput(f"{text!r} is a fraction of a wei; amounts are whole numbers of wei.")
    return int(wei)


def format_wei(amount: int) -> str:
    """``amount`` wei for humans: "123 wei", "1.5 gwei" (9 significant digits) or "0.0123 ETH" (exact).

    Integer arithmetic only, so large amounts never pass through a float.
    """
    if amount < 0:
        return "-" + format_wei(-amount)
    if amount < GWEI:
        return f"{amount} wei"
    if amount < 10**15:
        # Round half up to 9 significant digits: with n digits before the gwei point
        # the last digit kept is worth 10**n wei.
        step = 10 ** len(str(amount // GWEI))
        rounded = (amount + step // 2) // step * step
        if rounded < 10**15:
            return f"{_decimal(rounded, GWEI)} gwei"
        amount = rounded
    return f"{_decimal(amount, ETH)} ETH"


def exact_wei(amount: int) -> str:
    """``amount`` exactly, in wei: what the short form of :func:`format_wei` rounds."""
    return f"{amount} wei"


def _decimal(amount: int, unit: int) -> str:
    """``amount / unit`` written out exactly, without trailing zeros."""
    whole, fraction = divmod(amount, unit)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
