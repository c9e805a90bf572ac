"""The one Tariff: exact prices, rounding, the start fee, the --dry-run bound and the wire form."""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golem_jupyter.chain import Offer
from golem_jupyter.errors import InvalidInput
from golem_jupyter.market import Tariff

GWEI = 10**9
ETH = 10**18
UINT256_MAX = 2**256 - 1


def offer(cpu: int = GWEI, gpu: int = 10 * GWEI, fee: int = 7) -> Offer:
    return Offer("127.0.0.1:7001", cpu, gpu, fee, cpus=4, gpus=1, gpu_model="H100")


# ---------------------------------------------------------------------------- building one


def test_from_offer_takes_the_offer_prices_and_drops_the_gpu_price_without_a_gpu():
    assert Tariff.from_offer(offer(), gpu=True) == Tariff(GWEI, 10 * GWEI, 7)
    assert Tariff.from_offer(offer(), gpu=False) == Tariff(GWEI, 0, 7)


@pytest.mark.parametrize(
    "fields",
    [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (1.0, 0, 0), (True, 0, 0), (0, False, 0), ("1", 0, 0), (None, 0, 0)],
)
def test_a_tariff_needs_whole_non_negative_wei(fields):
    with pytest.raises(InvalidInput, match="whole number of wei"):
        Tariff(*fields)


def test_a_tariff_holds_up_to_uint256():
    assert Tariff(UINT256_MAX, UINT256_MAX, UINT256_MAX).cpu_second == UINT256_MAX
    with pytest.raises(InvalidInput):
        Tariff(UINT256_MAX + 1, 0, 0)


# ---------------------------------------------------------------------------- arithmetic


def test_rate_is_the_gpu_price_for_gpu_tasks_and_the_cpu_price_otherwise():
    tariff = Tariff(3, 11, 100)
    assert (tariff.rate(gpu=False), tariff.rate(gpu=True)) == (3, 11)


def test_charge_is_the_unrounded_cost_of_one_task():
    tariff = Tariff(3, 11, 100)
    assert tariff.charge(0.5, gpu=False) == 1.5
    assert tariff.charge(0.25, gpu=True) == 2.75
    assert tariff.charge(0, gpu=True) == 0


def test_price_is_exact_for_whole_and_binary_fraction_seconds():
    tariff = Tariff(GWEI, 10 * GWEI, 5 * GWEI)
    assert tariff.price(1.5, 0.25) == 4 * GWEI
    assert tariff.price(0, 0) == 0
    assert Tariff(ETH, 3 * ETH, 0).price(1000.5, 2.25) == 1000 * ETH + ETH // 2 + 6 * ETH + 3 * ETH // 4


def test_price_does_not_lose_wei_at_large_prices():
    # 10^18 wei per second times 3 s through a float would be 3000000000000000000 anyway, but
    # 10^18 + 1 would not: a float holds 53 bits.
    assert Tariff(ETH + 1, 0, 0).price(3, 0) == 3 * ETH + 3
    assert Tariff(ETH + 1, 0, 0).price(0.5, 0) == (ETH + 1) // 2  # half of an odd number: to even
    assert Tariff(UINT256_MAX // 4, 0, 0).price(2, 0) == (UINT256_MAX // 4) * 2


def test_price_rounds_once_half_to_even():
    tariff = Tariff(1, 3, 0)
    assert tariff.price(0.5, 0) == 0  # 0.5 -> 0
    assert tariff.price(1.5, 0) == 2  # 1.5 -> 2
    assert tariff.price(2.5, 0) == 2  # 2.5 -> 2
    assert tariff.price(0.25, 0.25) == 1  # 0.25 + 0.75 = 1: summed before rounding, not 0 + 1
    assert tariff.price(0.375, 0.125) == 1  # 0.375 + 0.375 = 0.75 -> 1
    assert tariff.price(0.1, 0) == 0


def test_bill_adds_the_start_fee_to_the_first_bill_only():
    tariff = Tariff(GWEI, 10 * GWEI, 5 * GWEI)
    assert tariff.bill(1.5, 0.25, first=True) == 9 * GWEI
    assert tariff.bill(1.5, 0.25, first=False) == 4 * GWEI
    assert tariff.bill(0, 0, first=True) == 5 * GWEI


def test_bound_is_every_thread_busy_at_the_highest_rate_plus_the_start_fee():
    tariff = Tariff(2, 7, 100)
    assert tariff.bound(10, threads=4, gpu=False) == 2 * 10 * 4 + 100
    assert tariff.bound(10, threads=4, gpu=True) == 7 * 10 * 4 + 100
    assert Tariff(9, 7, 0).bound(1, threads=1, gpu=True) == 9  # CPU tasks of a GPU cell bill more here
    assert tariff.bound(0.1, threads=1, gpu=False) == 1 + 100  # 0.2 wei rounds up
    assert tariff.bound(0, threads=8, gpu=True) == 100
    assert tariff.bound(10, threads=0, gpu=True) == 100


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.charge(-1, gpu=False),
        lambda t: t.charge(math.nan, gpu=False),
        lambda t: t.price(math.inf, 0),
        lambda t: t.price(0, -0.5),
        lambda t: t.price("1", 0),
        lambda t: t.bill(True, 0, first=True),
        lambda t: t.bound(-1, threads=1, gpu=False),
        lambda t: t.bound(1, threads=-1, gpu=False),
        lambda t: t.bound(1, threads=1.5, gpu=False),
        lambda t: t.bound(1, threads=True, gpu=False),
    ],
)
def test_seconds_and_threads_must_be_finite_and_not_negative(call):
    with pytest.raises(InvalidInput):
        call(Tariff(1, 2, 3))


# ---------------------------------------------------------------------------- the wire


def test_the_wire_form_is_three_decimal_strings_that_survive_json_and_msgpack():
    tariff = Tariff(GWEI, 10 * GWEI, 2**64 + 5)  # a start fee msgpack could not carry as an int
    assert tariff.to_wire() == [str(GWEI), str(10 * GWEI), str(2**64 + 5)]
    assert Tariff.from_wire(json.loads(json.dumps(tariff.to_wire()))) == tariff
    assert Tariff.from_wire(msgpack.unpackb(msgpack.packb(tariff.to_wire()))) == tariff
    biggest = Tariff(UINT256_MAX, UINT256_MAX, UINT256_MAX)
    assert Tariff.from_wire(msgpack.unpackb(msgpack.packb(biggest.to_wire()))) == biggest
    assert Tariff.from_wire(("1", "2", "3")) == Tariff(1, 2, 3)


@pytest.mark.parametrize(
    "data",
    [
        None, 5, "1,2,3", {"cpu_second": 1}, [], ["1", "2"], ["1", "2", "3", "4"], ["1", "-2", "3"],
        ["1", "2.0", "3"], ["1", "2", 3], [1, 2, 3], ["1", " 2", "3"], ["1", "２", "3"], ["1", "2", "1e3"],
        ["1", "2", str(2**256)], ["1", "2", "9" * 10_000], [True, "2", "3"],
    ],
)  # fmt: skip
def test_from_wire_refuses_anything_but_three_whole_non_negative_numbers(data):
    with pytest.raises(InvalidInput):
        Tariff.from_wire(data)


# ---------------------------------------------------------------------------- properties

prices = st.integers(min_value=0, max_value=10**21)
tariffs = st.builds(Tariff, prices, prices, prices)
# Multiples of 1/1024 s up to ~11 days: exact in a float, so that sums of seconds are exact too.
seconds = st.integers(min_value=0, max_value=2**30).map(lambda n: n / 1024)


@settings(max_examples=300, deadline=None)
@given(tariffs, seconds, seconds, seconds, seconds)
def test_price_is_additive_within_rounding(tariff, cpu_a, gpu_a, cpu_b, gpu_b):
    whole = tariff.price(cpu_a + cpu_b, gpu_a + gpu_b)
    parts = tariff.price(cpu_a, gpu_a) + tariff.price(cpu_b, gpu_b)
    assert abs(whole - parts) <= 1  # each of the three is within half a wei of the exact cost


@settings(max_examples=300, deadline=None)
@given(tariffs, seconds, seconds, seconds, seconds)
def test_price_is_monotone_in_seconds(tariff, cpu, gpu, more_cpu, more_gpu):
    assert tariff.price(cpu, gpu) <= tariff.price(cpu + more_cpu, gpu + more_gpu)
    assert tariff.bill(cpu, gpu, first=False) <= tariff.bill(cpu, gpu, first=True)


@settings(max_examples=300, deadline=None)
@given(tariffs, st.integers(min_value=0, max_value=2**30), st.integers(1, 64), st.booleans(), st.data())
def test_bound_is_at_least_any_bill_that_fits_in_the_wall_time(tariff, ticks, threads, gpu, data):
    """Compute that fits in ``wall`` seconds on ``threads`` threads (each thread computing at
    most ``wall`` seconds, on the GPU only for a GPU cell) never bills more than the bound."""
    wall = ticks / 1024
    slices = st.integers(min_value=0, max_value=ticks).map(lambda n: n / 1024)  # exact sums, as above
    busy = data.draw(st.lists(slices, min_size=threads, max_size=threads))
    on_gpu = data.draw(st.lists(st.booleans(), min_size=threads, max_size=threads)) if gpu else [False] * threads
    cpu_seconds = sum(s for s, g in zip(busy, on_gpu, strict=True) if not g)
    gpu_seconds = sum(s for s, g in zip(busy, on_gpu, strict=True) if g)
    bound = tariff.bound(wall, threads=threads, gpu=gpu)
    assert tariff.bill(cpu_seconds, gpu_seconds, first=True) <= bound
    assert sum(tariff.charge(s, gpu=g) for s, g in zip(busy, on_gpu, strict=True)) <= bound * (1 + 1e-9)
