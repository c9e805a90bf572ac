"""Amounts of money as people type them (``0.01``, ``0.01 ETH``, ``5 gwei``, ``1000wei``) and read them
(:func:`format_wei`, 4 significant digits, with the exact :func:`exact_wei` a column or a click away)."""

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
    """``amount`` wei for people to read: at most 4 significant digits, in a unit chosen for the size.

    The convention (the panel's TypeScript follows the same one):

    * round the amount in wei half up to 4 significant digits (a negative amount: its absolute
      value, with "-" in front);
    * choose the unit from the rounded amount: below 10_000 wei "wei" (exact), below 10**14 wei
      (0.0001 ETH) "gwei", from there on "ETH";
    * write the value as a plain decimal without trailing zeros, exponent or thousands separator,
      so that :func:`parse_amount` reads it back.

    ``0 wei``, ``9999 wei``, ``0.0000258 gwei``, ``1.235 gwei``, ``0.0123 ETH``, ``12.35 ETH``,
    ``123500 ETH``. The exact amount is :func:`exact_wei`'s. Integer arithmetic only: large amounts
    never pass through a float.
    """
    if amount < 0:
        return "-" + format_wei(-amount)
    step = 10 ** max(len(str(amount)) - 4, 0)  # the 4th significant digit's worth
    rounded = (amount + step // 2) // step * step
    if rounded < 10_000:
        return f"{rounded} wei"
    if rounded < 10**14:
        return f"{_decimal(rounded, GWEI)} gwei"
    return f"{_decimal(rounded, ETH)} ETH"


def exact_wei(amount: int) -> str:
    """``amount`` exactly, in wei: ``12345678901234567890 wei``."""
    return f"{amount} wei"


def format_wei_exact(amount: int) -> str:
    """The short form, the exact wei in parentheses: ``12.35 ETH (12345678901234567890 wei)``."""
    return f"{format_wei(amount)} ({exact_wei(amount)})"


def _decimal(amount: int, unit: int) -> str:
    """``amount / unit`` written out exactly, without trailing zeros."""
    whole, fraction = divmod(amount, unit)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
