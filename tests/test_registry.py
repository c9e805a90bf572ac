"""ProviderRegistry through the typed client (golem_jupyter.chain.Registry / Offer), on every backend.

Publishing, updating, withdrawing (swap-and-pop), paging, the contract's validation errors, its
events, and the client-side checks that refuse bad offers before anything is sent.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import Deployed, send
from eth_account import Account
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from golem_jupyter.chain import Offer, Registry, Wallet
from golem_jupyter.chain.errors import (
    EmptyEndpoint,
    FieldTooLong,
    GpuModelMissing,
    GpuPriceWithoutGpus,
    NoActiveOffer,
    NoCpus,
    OfferAlreadyActive,
    PageSizeTooLarge,
    translate,
)
from golem_jupyter.chain.registry import PAGE_SIZE
from golem_jupyter.chain.transactions import Transactor
from golem_jupyter.errors import InvalidInput

GIB = 1 << 30
# Nested, typed and non-ASCII values, to prove the JSON round trip through the chain.
CAPABILITIES = {
    "cuda": "12.4",
    "features": ["fp16", "tf32"],
    "limits": {"disk_gb": 200},
    "spot": True,
    "ratio": 0.5,
    "note": "Grüße",
}


def gpu_offer(endpoint: str = "10.0.0.7:7001") -> Offer:
    return Offer(
        endpoint,
        price_per_cpu_second=2 * 10**12,
        price_per_gpu_second=9 * 10**13,
        start_fee=10**15,
        cpus=16,
        gpus=2,
        gpu_model="NVIDIA H100 80GB",
        memory_bytes=128 * GIB,
        capabilities=CAPABILITIES,
    )


def cpu_offer(endpoint: str = "127.0.0.1:7001", price: int = 10**12) -> Offer:
    return Offer(endpoint, price_per_cpu_second=price, cpus=4, memory_bytes=8 * GIB)


def raw_offer(**changes) -> tuple:
    """The contract's Offer struct, bypassing the client's own checks."""
    fields = dict(
        zip(
            [
                "endpoint",
                "pricePerCpuSecond",
                "pricePerGpuSecond",
                "startFee",
                "cpus",
                "gpus",
                "gpuModel",
                "memoryBytes",
                "capabilities",
            ],
            cpu_offer().as_tuple(),
            strict=True,
        )
    )
    fields.update(changes)
    return tuple(fields.values())


def logs(contracts: Deployed, name: str, provider: str | None = None) -> list:
    event = getattr(contracts.registry().contract.events, name)
    found = event.get_logs(from_block=0)
    return [log for log in found if provider is None or log.args.provider == provider]


def block_number(contracts: Deployed) -> int:
    return contracts.chain.w3.eth.block_number


# ---------------------------------------------------------------------------- publish and read


def test_publish_then_offer_of_returns_every_field_and_the_capabilities_round_trip(contracts, providers):
    provider = providers[0]
    offer = gpu_offer()
    contracts.registry(provider).publish(offer)

    read = contracts.registry().offer_of(provider.address)

    assert read == dataclasses.replace(offer, provider=provider.address)
    assert read.capabilities == CAPABILITIES
    assert contracts.registry().is_active(provider.address)
    assert contracts.registry().active_count() == 1


def test_capabilities_are_stored_as_compact_sorted_json(contracts, providers):
    provider = providers[0]
    contracts.registry(provider).publish(Offer("h:1", 1, capabilities={"b": 1, "a": [1, 2]}))
    stored = contracts.registry().contract.functions.offerOf(provider.address).call()
    assert stored[-1] == '{"a":[1,2],"b":1}'


def test_publish_records_the_block_time_in_updated_at(contracts, providers):
    provider = providers[0]
    receipt = contracts.registry(provider).publish(cpu_offer())
    block = contracts.chain.w3.eth.get_block(receipt.block_number)
    assert contracts.registry().contract.functions.updatedAt(provider.address).call() == block.timestamp


def test_publish_twice_is_refused_with_offer_already_active(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer("h:1"))
    with pytest.raises(OfferAlreadyActive) as raised:
        registry.publish(cpu_offer("h:2"))
    assert raised.value.fields == {"provider": provider.address}
    assert "update it instead" in str(raised.value)
    assert registry.offer_of(provider.address).endpoint == "h:1"
    assert registry.active_count() == 1


def test_offer_of_a_provider_without_an_offer_raises_no_active_offer(contracts, stranger):
    with pytest.raises(NoActiveOffer) as raised:
        contracts.registry().offer_of(stranger.address)
    assert raised.value.fields == {"provider": stranger.address}
    assert not contracts.registry().is_active(stranger.address)


def test_a_registry_without_an_account_refuses_to_send(contracts):
    with pytest.raises(InvalidInput, match="without an account"):
        contracts.registry().publish(cpu_offer())


# ---------------------------------------------------------------------------- update


def test_update_without_an_offer_raises_no_active_offer(contracts, providers):
    provider = providers[0]
    with pytest.raises(NoActiveOffer) as raised:
        contracts.registry(provider).update(cpu_offer())
    assert raised.value.fields == {"provider": provider.address}
    assert contracts.registry().active_count() == 0


def test_update_replaces_every_field(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer("127.0.0.1:7001", price=10**12))
    new = gpu_offer("10.1.2.3:9000")

    registry.update(new)

    assert registry.offer_of(provider.address) == dataclasses.replace(new, provider=provider.address)
    assert registry.active_count() == 1
    assert [o.provider for o in registry.active_offers()] == [provider.address]


def test_publish_or_update_publishes_first_and_updates_after(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish_or_update(cpu_offer("h:1"))
    registry.publish_or_update(cpu_offer("h:2"))
    assert registry.offer_of(provider.address).endpoint == "h:2"
    assert len(logs(contracts, "OfferPublished", provider.address)) == 1
    assert len(logs(contracts, "OfferUpdated", provider.address)) == 1


# ---------------------------------------------------------------------------- withdraw


def test_withdraw_removes_the_offer(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer())

    registry.withdraw()

    assert not registry.is_active(provider.address)
    assert registry.active_count() == 0
    assert registry.active_offers() == []
    with pytest.raises(NoActiveOffer):
        registry.offer_of(provider.address)
    assert registry.contract.functions.updatedAt(provider.address).call() == 0


def test_withdraw_without_an_offer_raises_no_active_offer(contracts, providers):
    with pytest.raises(NoActiveOffer):
        contracts.registry(providers[0]).withdraw()


def test_a_withdrawn_provider_can_publish_again(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer("h:1"))
    registry.withdraw()
    registry.publish(cpu_offer("h:2"))
    assert registry.offer_of(provider.address).endpoint == "h:2"
    assert registry.active_count() == 1


def test_withdrawing_the_last_and_the_second_of_five_keeps_the_others_listed(contracts):
    wallets = [Wallet.dev(i) for i in range(1, 6)]
    for i, wallet in enumerate(wallets):
        contracts.registry(wallet).publish(cpu_offer(f"10.0.0.{i}:7001", price=(i + 1) * 10**12))

    contracts.registry(wallets[4]).withdraw()  # the last entry: swaps with itself
    contracts.registry(wallets[1]).withdraw()  # a middle entry: the (new) last one moves into its place

    registry = contracts.registry()
    remaining = {wallets[i].address: i for i in (0, 2, 3)}
    assert registry.active_count() == 3
    offers = registry.active_offers()
    assert {o.provider for o in offers} == set(remaining)
    for offer in offers:  # each listed provider still has its own offer, not a neighbour's
        i = remaining[offer.provider]
        assert (offer.endpoint, offer.price_per_cpu_second) == (f"10.0.0.{i}:7001", (i + 1) * 10**12)
    for wallet in wallets:
        assert registry.is_active(wallet.address) == (wallet.address in remaining)

    # The moved entry's position was updated: it can withdraw, and so can the rest.
    for i in (3, 0, 2):
        contracts.registry(wallets[i]).withdraw()
    assert registry.active_count() == 0
    assert registry.active_offers() == []


# ---------------------------------------------------------------------------- paging


def funded_accounts(count: int, contracts: Deployed) -> list:
    """``count`` fresh accounts (deterministic keys), each sent enough for a few transactions."""
    accounts = [Account.from_key(keccak(text=f"golem-jupyter test provider {i}")) for i in range(count)]
    funder = Transactor(contracts.chain.w3, Wallet.dev(0).account)
    for account in accounts:
        funder.send(to=account.address, value=10**17)
    return accounts


def test_active_offers_reads_every_page_beyond_the_page_size(contracts):
    count = PAGE_SIZE + 5
    dev = [Wallet.dev(i).account for i in range(1, 20)]
    accounts = dev + funded_accounts(count - len(dev), contracts)
    offers = [cpu_offer(f"10.0.{i // 256}.{i % 256}:7001", price=10**12 + i) for i in range(count)]
    for account, offer in zip(accounts, offers, strict=True):
        Registry(contracts.chain.w3, contracts.registry_address, account).publish(offer)

    registry = contracts.registry()
    assert registry.active_count() == count
    listed = registry.active_offers()
    assert len(listed) == count
    assert {(o.provider, o.endpoint, o.price_per_cpu_second) for o in listed} == {
        (a.address, o.endpoint, o.price_per_cpu_second) for a, o in zip(accounts, offers, strict=True)
    }

    # The raw pages: a full first page, the remainder, then nothing past the end.
    first, _ = registry.contract.functions.activeOffers(0, PAGE_SIZE).call()
    second, _ = registry.contract.functions.activeOffers(PAGE_SIZE, PAGE_SIZE).call()
    beyond, beyond_offers = registry.contract.functions.activeOffers(count + 10, PAGE_SIZE).call()
    assert (len(first), len(second), beyond, beyond_offers) == (PAGE_SIZE, 5, [], [])
    assert set(first) | set(second) == {a.address for a in accounts}


def test_a_page_starts_at_its_offset_and_stops_at_the_end(contracts):
    registry = contracts.registry()
    for i in (1, 2, 3):
        contracts.registry(Wallet.dev(i)).publish(cpu_offer(f"h:{i}"))
    providers, offers = registry.contract.functions.activeOffers(1, 2).call()
    assert providers == [Wallet.dev(2).address, Wallet.dev(3).address]
    assert [o[0] for o in offers] == ["h:2", "h:3"]
    providers, _ = registry.contract.functions.activeOffers(2, PAGE_SIZE).call()
    assert providers == [Wallet.dev(3).address]


def test_a_page_larger_than_the_maximum_is_refused(contracts):
    call = contracts.registry().contract.functions.activeOffers(0, PAGE_SIZE + 1)
    with pytest.raises(ContractLogicError) as raised:
        call.call()
    error = translate(raised.value)
    assert isinstance(error, PageSizeTooLarge)
    assert error.fields == {"limit": PAGE_SIZE + 1, "max": PAGE_SIZE}


# ---------------------------------------------------------------------------- the contract's validation


def test_an_empty_endpoint_is_refused_by_the_contract(contracts, providers):
    with pytest.raises(EmptyEndpoint):
        send(contracts.chain, providers[0], contracts.registry().contract.functions.publish(raw_offer(endpoint="")))
    assert contracts.registry().active_count() == 0


def test_an_empty_endpoint_is_refused_on_update_too(contracts, providers):
    provider = providers[0]
    contracts.registry(provider).publish(cpu_offer("h:1"))
    with pytest.raises(EmptyEndpoint):
        send(contracts.chain, provider, contracts.registry().contract.functions.update(raw_offer(endpoint="")))
    assert contracts.registry().offer_of(provider.address).endpoint == "h:1"


def test_an_endpoint_of_256_bytes_is_accepted(contracts, providers):
    endpoint = "h" * 250 + ":65535"
    assert len(endpoint.encode()) == 256
    contracts.registry(providers[0]).publish(cpu_offer(endpoint))
    assert contracts.registry().offer_of(providers[0].address).endpoint == endpoint


def test_an_endpoint_over_256_bytes_raises_field_too_long(contracts, providers):
    endpoint = "é" * 129  # 129 characters, 258 bytes: the limit is in bytes
    with pytest.raises(FieldTooLong) as raised:
        contracts.registry(providers[0]).publish(cpu_offer(endpoint))
    assert raised.value.fields == {"field": "endpoint", "length": 258, "max": 256}
    assert "at most 256" in str(raised.value)
    assert contracts.registry().active_count() == 0


def test_a_gpu_model_over_128_bytes_raises_field_too_long(contracts, providers):
    offer = dataclasses.replace(gpu_offer(), gpu_model="x" * 129)
    with pytest.raises(FieldTooLong) as raised:
        contracts.registry(providers[0]).publish(offer)
    assert raised.value.fields == {"field": "gpuModel", "length": 129, "max": 128}


def test_capabilities_over_4096_bytes_raise_field_too_long(contracts, providers):
    offer = dataclasses.replace(cpu_offer(), capabilities={"blob": "x" * 4096})
    with pytest.raises(FieldTooLong) as raised:
        contracts.registry(providers[0]).publish(offer)
    assert raised.value.fields["field"] == "capabilities"
    assert raised.value.fields["length"] == len('{"blob":""}') + 4096


def test_zero_cpus_is_refused_with_no_cpus(contracts, providers):
    with pytest.raises(NoCpus):
        contracts.registry(providers[0]).publish(Offer("h:1", 1, cpus=0))
    assert contracts.registry().active_count() == 0


def test_gpus_without_a_model_are_refused_with_gpu_model_missing(contracts, providers):
    with pytest.raises(GpuModelMissing):
        contracts.registry(providers[0]).publish(dataclasses.replace(gpu_offer(), gpu_model=""))


def test_a_gpu_price_without_gpus_is_refused(contracts, providers):
    with pytest.raises(GpuPriceWithoutGpus):
        contracts.registry(providers[0]).publish(Offer("h:1", 1, price_per_gpu_second=5, gpus=0))


def test_an_update_is_validated_like_a_publish(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer("h:1"))
    with pytest.raises(NoCpus):
        registry.update(Offer("h:2", 1, cpus=0))
    assert registry.offer_of(provider.address) == dataclasses.replace(cpu_offer("h:1"), provider=provider.address)


# ---------------------------------------------------------------------------- events


def test_publish_update_and_withdraw_emit_their_events(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    published = registry.publish(cpu_offer("h:1"))
    updated = registry.update(cpu_offer("h:2"))
    withdrawn = registry.withdraw()

    [p] = logs(contracts, "OfferPublished", provider.address)
    [u] = logs(contracts, "OfferUpdated", provider.address)
    [w] = logs(contracts, "OfferWithdrawn", provider.address)
    assert (p.args.provider, p.args.endpoint, p.transactionHash.to_0x_hex()) == (
        provider.address,
        "h:1",
        published.tx_hash,
    )
    assert (u.args.provider, u.args.endpoint, u.transactionHash.to_0x_hex()) == (
        provider.address,
        "h:2",
        updated.tx_hash,
    )
    assert (w.args.provider, w.transactionHash.to_0x_hex()) == (provider.address, withdrawn.tx_hash)


def test_a_refused_publish_emits_nothing(contracts, providers):
    provider = providers[0]
    registry = contracts.registry(provider)
    registry.publish(cpu_offer("h:1"))
    with pytest.raises(OfferAlreadyActive):
        registry.publish(cpu_offer("h:2"))
    assert [log.args.endpoint for log in logs(contracts, "OfferPublished")] == ["h:1"]


# ---------------------------------------------------------------------------- the client's own checks


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"price_per_cpu_second": -1}, "price_per_cpu_second"),
        ({"price_per_gpu_second": -5}, "price_per_gpu_second"),
        ({"start_fee": 1.5}, "start_fee"),
        ({"price_per_cpu_second": True}, "price_per_cpu_second"),
        ({"memory_bytes": -1}, "memory_bytes"),
        ({"memory_bytes": 2**64}, "memory_bytes"),
        ({"gpu_model": 5}, "gpu_model"),
        ({"cpus": 1.5}, "cpus"),
        ({"cpus": "4"}, "cpus"),
        ({"cpus": -1}, "cpus"),
        ({"cpus": 2**32}, "cpus"),
        ({"gpus": True}, "gpus"),
        ({"capabilities": ["cuda"]}, "capabilities"),
        ({"capabilities": '{"cuda": "12"}'}, "capabilities"),
    ],
)
def test_offer_refuses_bad_input_before_anything_is_sent(contracts, kwargs, words):
    before = block_number(contracts)
    arguments = {"endpoint": "h:1", "price_per_cpu_second": 1, **kwargs}
    with pytest.raises(InvalidInput, match=words):
        Offer(**arguments)
    assert block_number(contracts) == before


def test_capabilities_that_are_not_json_are_refused_before_anything_is_sent(contracts, providers):
    before = block_number(contracts)
    nonce = contracts.chain.w3.eth.get_transaction_count(providers[0].address)
    with pytest.raises(InvalidInput, match="JSON"):
        contracts.registry(providers[0]).publish(Offer("h:1", 1, capabilities={"when": object()}))
    assert block_number(contracts) == before
    assert contracts.chain.w3.eth.get_transaction_count(providers[0].address) == nonce


def test_capabilities_written_by_another_client_that_are_not_a_json_object_stay_visible(contracts, providers):
    provider = providers[0]
    send(contracts.chain, provider, contracts.registry().contract.functions.publish(raw_offer(capabilities="gpu,fast")))
    assert contracts.registry().offer_of(provider.address).capabilities == {"unparsed": "gpu,fast"}
