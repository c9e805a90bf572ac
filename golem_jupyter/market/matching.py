"""Which offers fit a demand, and in what order to try them (DESIGN.md section 4, step 1).

Reputation is not stored on-chain; it is computed here from the escrow's events: every
``Paid`` (a settled graph), ``Claimed`` (a voucher cashed) and ``Released`` beyond those (a
release that still credited its provider) counts for a provider, every ``FaultReported`` against it.
One fault weighs like :data:`FAULT_WEIGHT` payments in :attr:`Reputation.score`, and in the
ranking a provider with any reported fault comes after every provider without one, whatever
its price (among the offers the demand accepts; ``min_reputation`` keeps the worst out).

What an offer states about itself beyond the registry's fields sits in its ``capabilities``,
written by the provider (a stranger): :func:`offer_sandbox` and :func:`offer_token` read the two
that matching uses, and never fail on what they find there.

:func:`offers_with_reputations` is the one way to read the market: the offers and their
providers' reputations, read once and ranked. The requestor's cluster, ``%golem providers``
and the side panel's server all use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from ..chain.escrow import Escrow
from ..chain.registry import Offer
from ..chain.types import NATIVE, as_address, as_amount
from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..chain import Chain

FAULT_WEIGHT = 5
"""How many paid graphs one reported fault outweighs in :attr:`Reputation.score`."""

SANDBOX_TIERS = ("none", "bwrap")
"""What a provider runs requestors' code in, weakest first, as offers state it under
``capabilities["sandbox"]``: ``"none"``, unconfined (the operator ran the agent with
``--no-sandbox``); ``"bwrap"``, a bubblewrap sandbox per agreement (DESIGN.md section 6)."""


def offer_sandbox(offer: Offer) -> str:
    """The sandbox tier ``offer`` states; ``"none"`` when it states none, or anything not in :data:`SANDBOX_TIERS`."""
    tier = offer.capabilities.get("sandbox")
    return tier if isinstance(tier, str) and tier in SANDBOX_TIERS else "none"


def offer_token(offer: Offer) -> str | None:
    """The checksummed address of the token ``offer`` is priced in; :data:`~..chain.types.NATIVE`
    when it states none; ``None`` when what it states is not an address (no session can pay it)."""
    if "token" not in offer.capabilities:
        return NATIVE
    token = offer.capabilities["token"]
    try:
        return as_address(token, "token", allow_zero=True)
    except InvalidInput:
        return None


def _strength(tier: str) -> int:
    return SANDBOX_TIERS.index(tier)


def _currency(token: str) -> str:
    return "the native currency" if token == NATIVE else f"token {token}"


@dataclass(frozen=True)
class Demand:
    """What a requestor wants from an offer.

    Prices are in the token's smallest unit per second of compute. ``max_price_gpu`` applies
    only to a GPU demand (a CPU-only worker is never billed GPU-seconds); ``max_price_cpu``
    applies to both, since GPU workers also bill the CPU-seconds of CPU tasks. ``exclude``
    holds provider addresses never to use (any case; kept checksummed).

    ``sandbox`` is the weakest tier of :data:`SANDBOX_TIERS` acceptable (``None``: any, as
    ``"none"``); an offer that does not state its tier counts as ``"none"``. ``token`` is the
    token the session pays in (checksummed; :data:`~..chain.types.NATIVE` for the chain's own
    currency): offers priced in another one never fit.
    """

    gpu: bool = False
    max_price_cpu: int | None = None
    max_price_gpu: int | None = None
    min_memory: int = 0
    min_reputation: float | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    sandbox: str | None = None
    token: str = NATIVE

    def __post_init__(self) -> None:
        if not isinstance(self.gpu, bool):
            raise InvalidInput(f"gpu must be True or False, got {self.gpu!r}.")
        for name in ("max_price_cpu", "max_price_gpu"):
            value = getattr(self, name)
            if value is not None:
                as_amount(value, name, allow_zero=True)
        as_amount(self.min_memory, "min_memory", allow_zero=True)
        score = self.min_reputation
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1
        ):
            raise InvalidInput(f"min_reputation must be a number between 0 and 1, got {score!r}.")
        if isinstance(self.exclude, str) or not isinstance(self.exclude, Iterable):
            raise InvalidInput(f"exclude must be a set of provider addresses, got {self.exclude!r}.")
        # Normalized so that lookups do not depend on how the caller spelled an address.
        object.__setattr__(self, "exclude", frozenset(as_address(a, "excluded provider") for a in self.exclude))
        if self.sandbox is not None and (not isinstance(self.sandbox, str) or self.sandbox not in SANDBOX_TIERS):
            tiers = ", ".join(repr(t) for t in SANDBOX_TIERS)
            raise InvalidInput(f"sandbox must be one of {tiers} (weakest first) or None for any, got {self.sandbox!r}.")
        object.__setattr__(self, "token", as_address(self.token, "token", allow_zero=True))


@dataclass(frozen=True)
class Reputation:
    """What the escrow's events say about one provider.

    ``score = (paid_count + 1) / (paid_count + 1 + FAULT_WEIGHT * faults)``: 1.0 for a provider
    with no reported fault (a newcomer included), falling as faults accumulate and recovering
    slowly with paid work; always in (0, 1]. Both counts are cheap to fake for someone willing
    to open sessions (paying oneself, or reporting faults against a rival), so treat the score
    as one signal among price and latency, not as proof.
    """

    paid_count: int = 0
    paid_total: int = 0
    faults: int = 0

    @property
    def score(self) -> float:
        return (self.paid_count + 1) / (self.paid_count + 1 + FAULT_WEIGHT * self.faults)


def reputations(escrow: Escrow, from_block: int = 0) -> dict[str, Reputation]:
    """Every provider's :class:`Reputation` from the escrow's events since ``from_block``."""
    counts: dict[str, list[int]] = {}  # provider -> [paid_count, paid_total, faults]
    credited: dict[tuple[bytes, str], int] = {}  # (session, provider) -> paid by Paid and Claimed
    for name in ("Paid", "Claimed"):
        for event in escrow.events(name, from_block):
            entry = counts.setdefault(event["provider"], [0, 0, 0])
            entry[0] += 1
            entry[1] += event["amount"]
            key = (event["sessionId"], event["provider"])
            credited[key] = credited.get(key, 0) + event["amount"]
    # A release pays its provider ``finalAmount`` in total for the session: what settlements and
    # claims had not paid yet is credited by the release itself, with no Paid or Claimed event.
    for event in escrow.events("Released", from_block):
        extra = event["finalAmount"] - credited.get((event["sessionId"], event["provider"]), 0)
        if extra > 0:
            entry = counts.setdefault(event["provider"], [0, 0, 0])
            entry[0] += 1
            entry[1] += extra
    for event in escrow.events("FaultReported", from_block):
        counts.setdefault(event["provider"], [0, 0, 0])[2] += 1
    return {provider: Reputation(*entry) for provider, entry in counts.items()}


def _price(offer: Offer, demand: Demand) -> int:
    """The price of the resource the demand is about: GPU-seconds for a GPU demand."""
    return offer.price_per_gpu_second if demand.gpu else offer.price_per_cpu_second


def _who(offer: Offer) -> str:
    return f"provider {to_checksum_address(offer.provider)}" if offer.provider else f"the offer at {offer.endpoint}"


def _short(offer: Offer, limit: int = 48) -> str:
    text = repr(offer.capabilities.get("token"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def matches(offer: Offer, demand: Demand, reputation: Reputation | None = None) -> str | None:
    """``None`` when ``offer`` fits ``demand``, else the sentence saying why it does not."""
    reputation = reputation or Reputation()
    if offer.provider is not None and to_checksum_address(offer.provider) in demand.exclude:
        return f"{_who(offer)} is in your exclude list"
    token = offer_token(offer)
    if token != demand.token:  # prices in another unit: no price comparison below would mean anything
        stated = _currency(token) if token is not None else f"a token it does not name as an address ({_short(offer)})"
        return f"{_who(offer)} is priced in {stated}, your session pays in {_currency(demand.token)}"
    if demand.sandbox is not None and _strength(offer_sandbox(offer)) < _strength(demand.sandbox):
        return (
            f"{_who(offer)} runs requestors' code with sandbox {offer_sandbox(offer)!r}; "
            f"you demanded {demand.sandbox!r}"
        )
    if demand.gpu and offer.gpus == 0:
        return f"{_who(offer)} offers no GPU"
    if demand.max_price_cpu is not None and offer.price_per_cpu_second > demand.max_price_cpu:
        return (
            f"price per CPU-second {offer.price_per_cpu_second} wei is above your max_price_cpu "
            f"{demand.max_price_cpu} wei"
        )
    if demand.gpu and demand.max_price_gpu is not None and offer.price_per_gpu_second > demand.max_price_gpu:
        return (
            f"price per GPU-second {offer.price_per_gpu_second} wei is above your max_price_gpu "
            f"{demand.max_price_gpu} wei"
        )
    if offer.memory_bytes < demand.min_memory:
        return f"memory {offer.memory_bytes} bytes is below your min_memory {demand.min_memory} bytes"
    if demand.min_reputation is not None and reputation.score < demand.min_reputation:
        return (
            f"reputation {reputation.score:.2f} ({reputation.paid_count} paid, {reputation.faults} faults) "
            f"is below your min_reputation {demand.min_reputation}"
        )
    return None


def _by_address(table: Mapping[str, Any] | None) -> dict[str, Any]:
    return {to_checksum_address(key): value for key, value in (table or {}).items()}


def _lookup(table: dict[str, Any], offer: Offer) -> Any:
    return table.get(to_checksum_address(offer.provider)) if offer.provider else None


def rank(
    offers: Iterable[Offer],
    demand: Demand,
    reputations: Mapping[str, Reputation] | None = None,
    latencies: Mapping[str, float] | None = None,
) -> list[Offer]:
    """The offers that fit ``demand``, best first.

    Order: first every provider without a reported fault, then those with faults, higher
    :attr:`Reputation.score` first (so a fault outweighs any price: it weighs like
    :data:`FAULT_WEIGHT` paid graphs, and only paid work recovers it); within each, price of
    the demanded resource, start fee, higher reputation score, lower latency (seconds;
    unmeasured last), then provider address and endpoint, so that equal offers always come
    out in the same order. ``reputations`` and ``latencies`` are keyed by provider
    address; an offer without one gets a newcomer's reputation and no latency.
    """
    return [offer for offer, reason in explain(offers, demand, reputations, latencies) if reason is None]


def explain(
    offers: Iterable[Offer],
    demand: Demand,
    reputations: Mapping[str, Reputation] | None = None,
    latencies: Mapping[str, float] | None = None,
) -> list[tuple[Offer, str | None]]:
    """Every offer with ``None`` if it fits or the reason it does not, for a UI.

    The offers that fit come first in :func:`rank`'s order, then the others in the order given.
    """
    reps = _by_address(reputations)
    lats = _by_address(latencies)
    fitting: list[tuple[tuple[Any, ...], Offer]] = []
    refused: list[tuple[Offer, str | None]] = []
    for offer in offers:
        reputation = _lookup(reps, offer) or Reputation()
        reason = matches(offer, demand, reputation)
        if reason is not None:
            refused.append((offer, reason))
            continue
        latency = _lookup(lats, offer)
        faulty = reputation.faults > 0
        key = (
            faulty,
            -reputation.score if faulty else 0.0,  # clean providers all score 1.0
            _price(offer, demand),
            offer.start_fee,
            -reputation.score,
            math.inf if latency is None or math.isnan(latency) else latency,  # NaN would break sorting
            to_checksum_address(offer.provider) if offer.provider else "",
            offer.endpoint,
        )
        fitting.append((key, offer))
    fitting.sort(key=lambda pair: pair[0])
    return [(offer, None) for _, offer in fitting] + refused


@dataclass(frozen=True)
class RankedOffer:
    """One active offer, what the escrow says about its provider, and whether it fits a demand."""

    offer: Offer
    reputation: Reputation | None
    """``None`` for a provider the escrow has no events of: new on the market, ranked as a newcomer."""
    reason: str | None = None
    """Why the offer does not fit the demand (a sentence); ``None`` when it fits."""

    @property
    def fits(self) -> bool:
        return self.reason is None

    @property
    def score(self) -> float | None:
        """The provider's :attr:`Reputation.score`; ``None`` for a newcomer, which a UI shows as "new"."""
        return None if self.reputation is None else self.reputation.score

    @property
    def sandbox(self) -> str:
        """What the provider runs requestors' code in (:func:`offer_sandbox`)."""
        return offer_sandbox(self.offer)


def offers_with_reputations(chain: Chain, demand: Demand | None = None) -> list[RankedOffer]:
    """Every active offer on ``chain``'s registry with its provider's reputation, read once.

    With a ``demand``, the offers that fit come first, best first (:func:`rank`'s order), then
    the others, each with the reason it does not fit (:func:`explain`'s order). Without one,
    every offer priced in the native currency fits (those priced in another token come last,
    with their reason: a session here pays in the native currency) and they come in
    :func:`rank`'s order for CPU work: providers without a reported fault first, cheapest
    CPU-second first (then start fee, reputation), then those with faults.
    Reputations count the escrow's events since the network's deployment block.
    """
    offers = chain.registry.active_offers()
    known = _by_address(reputations(chain.escrow, chain.network.deployed_at_block))
    return [
        RankedOffer(offer, _lookup(known, offer), reason)
        for offer, reason in explain(offers, demand if demand is not None else Demand(), known)
    ]
