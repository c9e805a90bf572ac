"""Typed client of ``ProviderRegistry``: providers publish offers, requestors list them."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ..errors import InvalidInput
from .artifacts import load_artifact
from .transactions import Receipt, Transactor, call_view
from .types import as_address, as_amount

PAGE_SIZE = 100  # ProviderRegistry.MAX_PAGE_SIZE


@dataclass(frozen=True)
class Offer:
    """What a provider rents out. Prices are in wei per second of compute; the start fee once."""

    endpoint: str
    price_per_cpu_second: int
    price_per_gpu_second: int = 0
    start_fee: int = 0
    cpus: int = 1
    gpus: int = 0
    gpu_model: str = ""
    memory_bytes: int = 0
    capabilities: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    """Set on offers read from the chain."""

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise InvalidInput("An offer needs an endpoint, e.g. '127.0.0.1:7001'.")
        for name in ("price_per_cpu_second", "price_per_gpu_second", "start_fee", "memory_bytes"):
            as_amount(getattr(self, name), name, allow_zero=True)
        if self.memory_bytes >= 2**64:  # uint64 in the contract
            raise InvalidInput(f"memory_bytes must be below 2^64, got {self.memory_bytes}.")
        if not isinstance(self.gpu_model, str):
            raise InvalidInput(f"gpu_model must be a string, got {self.gpu_model!r}.")
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise InvalidInput(f"{name} must be a whole number between 0 and 2^32 - 1, got {value!r}.")
        if not isinstance(self.capabilities, dict):
            raise InvalidInput("capabilities must be a dict that can be written as JSON.")

    def as_tuple(self) -> tuple[Any, ...]:
        """The ``Offer`` struct as the contract takes it."""
        try:
            capabilities = json.dumps(self.capabilities, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"capabilities cannot be written as JSON: {error}") from None
        return (
            self.endpoint,
            self.price_per_cpu_second,
            self.price_per_gpu_second,
            self.start_fee,
            self.cpus,
            self.gpus,
            self.gpu_model,
            self.memory_bytes,
            capabilities,
        )

    @classmethod
    def from_tuple(cls, provider: str, values: tuple[Any, ...]) -> Offer:
        endpoint, cpu, gpu, fee, cpus, gpus, model, memory, capabilities = values
        # Any provider writes this text. JSON nested deeper than capabilities ever are ('[[[[...') is
        # kept unparsed: json.loads recurses once per level, a RecursionError at best and, under a
        # raised recursion limit, a stack overflow that kills the requestor.
        max_depth, max_length = 32, 1 << 16
        try:
            if not isinstance(capabilities, str) or len(capabilities) > max_length:
                raise ValueError("not a capabilities text")
            brackets = re.sub(r'"(?:[^"\\]|\\.)*"|[^\[\]{}]', "", capabilities)  # strings and the rest out
            if max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets), default=0) > max_depth:
                raise ValueError("nested too deep")
            caps = json.loads(capabilities) if capabilities else {}
        except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
            caps = {"unparsed": capabilities}  # published by another client; keep it visible
        if not isinstance(caps, dict):
            caps = {"unparsed": capabilities}
        return cls(endpoint, cpu, gpu, fee, cpus, gpus, model, memory, caps, provider=provider)


class Registry:
    """One deployed ProviderRegistry. Views need no account; changes are sent from ``account``."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None) -> None:
        self.w3 = w3
        self.address = as_address(address, "registry address")
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact("ProviderRegistry")["abi"])
        self._tx = Transactor(w3, account) if account is not None else None

    def __repr__(self) -> str:
        return f"Registry({self.address})"

    def _sender(self) -> Transactor:
        if self._tx is None:
            raise InvalidInput("This Registry client was made without an account; pass one to send transactions.")
        return self._tx

    def _send(self, call: Any) -> Receipt:
        return self._sender().send(call)

    def publish(self, offer: Offer) -> Receipt:
        """Publish this account's offer; fails with ``OfferAlreadyActive`` if there is one."""
        return self._send(self.contract.functions.publish(offer.as_tuple()))

    def update(self, offer: Offer) -> Receipt:
        """Replace this account's active offer."""
        return self._send(self.contract.functions.update(offer.as_tuple()))

    def publish_or_update(self, offer: Offer) -> Receipt:
        """Make ``offer`` this account's active offer, whether or not it had one."""
        if self.is_active(self._sender().address):
            return self.update(offer)
        return self.publish(offer)

    def withdraw(self) -> Receipt:
        """Take this account's offer off the market."""
        return self._send(self.contract.functions.withdraw())

    def is_active(self, provider: str) -> bool:
        return self._view("isActive", as_address(provider, "provider"))

    def offer_of(self, provider: str) -> Offer:
        provider = as_address(provider, "provider")
        return Offer.from_tuple(provider, self._view("offerOf", provider))

    def active_count(self) -> int:
        return self._view("activeCount")

    def active_offers(self) -> list[Offer]:
        """Every active offer, read page by page, each provider once."""
        offers: dict[str, Offer] = {}
        offset = 0
        while True:
            providers, values = self._view("activeOffers", offset, PAGE_SIZE)
            for provider, value in zip(providers, values, strict=True):
                offers.setdefault(provider, Offer.from_tuple(provider, value))
            if len(providers) < PAGE_SIZE:
                return list(offers.values())
            offset += PAGE_SIZE

    def _view(self, name: str, *args: Any) -> Any:
        return call_view(self.w3, getattr(self.contract.functions, name)(*args))
