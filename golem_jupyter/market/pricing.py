"""What compute costs: one :class:`Tariff` per agreement, the only place where prices are multiplied.

A provider's offer names three prices (wei per CPU-second, wei per GPU-second, a start fee
charged once per agreement). Everyone who turns seconds into wei does it through the agreed
:class:`Tariff`, so that the requestor's meter (in the scheduler), the requestor's vouchers,
the provider's own meter and the notebook's ``--dry-run`` bound can never disagree about the
arithmetic:

* :meth:`Tariff.charge`: the unrounded cost of one task's seconds, for running sums (the
  budget guard adds one per task report);
* :meth:`Tariff.price`: the cost of a graph's compute, rounded once to whole wei;
* :meth:`Tariff.bill`: that price plus the start fee when it is the agreement's first paid
  bill (the provider's ``owed`` is its whole meter billed as a first bill);
* :meth:`Tariff.bound`: the most a provider can charge for some wall time, for estimates;
* :meth:`Tariff.to_wire` / :meth:`Tariff.from_wire`: the plain form sent to the scheduler
  (decimal strings, as every amount that crosses a msgpack comm).

Prices are computed exactly (seconds are floats, turned into exact fractions before they are
multiplied: a price of 10^18 wei times a float would lose whole gwei) and rounded half to even
only at the end. A bound is rounded up.

Adding a pricing model (per task, tiered, a minimum charge, ...): write one more frozen class
here with the same methods (``from_offer``, ``rate``, ``charge``, ``price``, ``bill``, ``bound``,
``to_wire``, ``from_wire``), give its wire form a distinct shape or a leading tag, and have
``from_wire`` pick the class. The meter, the provider agent and the magics only call those
methods, so nothing outside this module multiplies a price; what the chain needs (the offer's
fields in ``ProviderRegistry`` and the negotiation messages' schemas) changes with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..chain.registry import Offer

UINT256_MAX = 2**256 - 1
_MAX_DIGITS = len(str(UINT256_MAX))


@dataclass(frozen=True)
class Tariff:
    """The prices of one agreement, in wei (the token's smallest unit).

    >>> t = Tariff(cpu_second=10**9, gpu_second=10**10, start_fee=5 * 10**9)
    >>> t.price(cpu_seconds=1.5, gpu_seconds=0.25)
    4000000000
    >>> t.bill(1.5, 0.25, first=True)
    9000000000
    """

    cpu_second: int
    """Wei per second a task computes on a CPU thread."""
    gpu_second: int
    """Wei per second a task holding a GPU computes; 0 when the agreement has no GPU."""
    start_fee: int
    """Wei charged once per agreement, with its first paid graph."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
                raise InvalidInput(f"A tariff's {field.name} must be a whole number of wei, at least 0; got {value!r}.")

    @classmethod
    def from_offer(cls, offer: Offer, *, gpu: bool) -> Tariff:
        """The tariff of an agreement on ``offer``; ``gpu`` False: no GPU is rented, so ``gpu_second`` is 0."""
        return cls(offer.price_per_cpu_second, offer.price_per_gpu_second if gpu else 0, offer.start_fee)

    def rate(self, *, gpu: bool) -> int:
        """Wei per second of a task computing on the GPU (``gpu``) or on a CPU thread."""
        return self.gpu_second if gpu else self.cpu_second

    def charge(self, seconds: float, *, gpu: bool) -> float:
        """The unrounded cost of one task's ``seconds`` on the GPU or a CPU, to add to a running sum."""
        return _seconds(seconds, "seconds") * self.rate(gpu=gpu)

    def price(self, cpu_seconds: float, gpu_seconds: float) -> int:
        """The cost of this much compute in whole wei, rounded once (half to even); no start fee."""
        cost = Fraction(_seconds(cpu_seconds, "cpu_seconds")) * self.cpu_second
        cost += Fraction(_seconds(gpu_seconds, "gpu_seconds")) * self.gpu_second
        return round(cost)

    def bill(self, cpu_seconds: float, gpu_seconds: float, *, first: bool) -> int:
        """What a bill for this compute asks: its :meth:`price`, plus the start fee if it is the ``first``."""
        return self.price(cpu_seconds, gpu_seconds) + (self.start_fee if first else 0)

    def bound(self, seconds: float, *, threads: int, gpu: bool) -> int:
        """The most a provider can charge for ``seconds`` of wall time on ``threads`` threads, start fee included.

        Every thread may compute all the time, at the highest rate a task can be billed at:
        the CPU rate for CPU work, the higher of the two rates when tasks may hold the GPU
        (a GPU agreement bills CPU tasks at the CPU rate). Rounded up, so it is never below
        :meth:`bill` for any compute that fits in that wall time.
        """
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidInput(f"threads must be a whole number, at least 0; got {threads!r}.")
        rate = max(self.cpu_second, self.gpu_second) if gpu else self.cpu_second
        return math.ceil(Fraction(_seconds(seconds, "seconds")) * threads * rate) + self.start_fee

    def to_wire(self) -> list[str]:
        """``[cpu_second, gpu_second, start_fee]`` as decimal strings: msgpack (the scheduler's
        comms) cannot carry an int of 2**64 wei or more, and an offer's prices may be that big."""
        return [str(self.cpu_second), str(self.gpu_second), str(self.start_fee)]

    @classmethod
    def from_wire(cls, data: Any) -> Tariff:
        """The tariff :meth:`to_wire` wrote; anything else raises :class:`~golem_jupyter.errors.InvalidInput`."""
        if (
            not isinstance(data, (list, tuple))
            or len(data) != 3
            or not all(isinstance(x, str) and x.isascii() and x.isdigit() and len(x) <= _MAX_DIGITS for x in data)
        ):
            raise InvalidInput(
                f"A tariff is sent as [cpu_second, gpu_second, start_fee] in wei, decimal strings; got {data!r}."
            )
        return cls(*map(int, data))


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidInput(f"{what} must be a finite number of seconds, at least 0; got {value!r}.")
    return value
