"""Amounts of money as people type them: ``0.01``, ``0.01 ETH``, ``5 gwei``, ``1000wei``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import InvalidInput

UNITS = {"eth": 10**18, "ether": 10**18, "gwei": 10**9, "wei": 1}
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
