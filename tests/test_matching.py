"""Offer matching and ranking, and reputation computed from real escrow events."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
from conftest import Deployed
from eth_utils import to_checksum_address as _checksum

from golem_jupyter.chain import Offer
from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.errors import InvalidInput
from golem_jupyter.market import (
    SANDBOX_TIERS,
    Demand,
    Reputation,
    explain,
    matches,
    offer_sandbox,
    offer_token,
    offers_with_reputations,
    rank,
    reputations,
)

A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
C = "0x" + "c3" * 20
D = "0x" + "d4" * 20
GIB = 2**30


TOKEN = "0x" + "e5" * 20  # an ERC-20 some provider prices its offer in
MISSING = object()


def offer(
    provider: str | None = A,
    cpu: int = 10,
    gpu: int = 0,
    fee: int = 0,
    gpus: int = 0,
    memory: int = 8 * GIB,
    sandbox: object = MISSING,
    token: object = MISSING,
):
    """An offer as a provider could publish it; ``sandbox`` and ``token`` land in its capabilities as given."""
    capabilities = {"numpy": True}
    if sandbox is not MISSING:
        capabilities["sandbox"] = sandbox
    if token is not MISSING:
        capabilities["token"] = token
    return Offer(
        endpoint=f"127.0.0.1:{7000 + (int(provider[2:4], 16) if provider else 0)}",
        price_per_cpu_second=cpu,
        price_per_gpu_second=gpu,
        start_fee=fee,
        cpus=4,
        gpus=gpus,
        memory_bytes=memory,
        capabilities=capabilities,
        provider=provider,
    )


# ---------------------------------------------------------------------------- demand


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpu": 1},
        {"max_price_cpu": -1},
        {"max_price_gpu": 1.5},
        {"max_price_cpu": True},
        {"min_memory": -1},
        {"min_reputation": 1.5},
        {"min_reputation": True},
        {"min_reputation": "high"},
        {"exclude": "0x" + "a1" * 20},
        {"exclude": frozenset({"not an address"})},
        {"sandbox": "gvisor"},
        {"sandbox": "BWRAP"},
        {"sandbox": ""},
        {"sandbox": 1},
        {"sandbox": ("bwrap",)},
        {"token": None},
        {"token": "native"},
        {"token": "0x" + "e5" * 19},
        {"token": 0},
    ],
)
def test_demand_refuses_bad_values(kwargs):
    with pytest.raises(InvalidInput):
        Demand(**kwargs)


def test_demand_names_the_sandbox_tiers_and_the_bad_token():
    with pytest.raises(InvalidInput, match=r"sandbox must be one of 'none', 'bwrap'.*got 'gvisor'"):
        Demand(sandbox="gvisor")
    with pytest.raises(InvalidInput, match=r"token 'native' is not an Ethereum address"):
        Demand(token="native")


def test_demand_defaults_to_any_sandbox_and_the_native_currency_and_keeps_tokens_checksummed():
    assert SANDBOX_TIERS == ("none", "bwrap")  # weakest first
    assert (Demand().sandbox, Demand().token) == (None, NATIVE)
    assert Demand(token=TOKEN.upper().replace("0X", "0x")).token == _checksum(TOKEN)
    for tier in SANDBOX_TIERS:
        assert Demand(sandbox=tier).sandbox == tier


def test_demand_keeps_excluded_addresses_checksummed():
    demand = Demand(exclude=[A.upper().replace("0X", "0x")])
    assert demand.exclude == frozenset({_checksum(A)})
    assert matches(offer(A), demand) == f"provider {_checksum(A)} is in your exclude list"


# ---------------------------------------------------------------------------- reputation


@pytest.mark.parametrize(
    ("reputation", "score"),
    [
        (Reputation(), 1.0),
        (Reputation(paid_count=10, paid_total=5), 1.0),
        (Reputation(faults=1), 1 / 6),
        (Reputation(paid_count=9, faults=1), 10 / 15),
        (Reputation(paid_count=4, faults=2), 5 / 15),
    ],
)
def test_reputation_score_follows_its_formula(reputation, score):
    assert reputation.score == pytest.approx(score)
    assert 0 < reputation.score <= 1


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("candidate", "demand", "reputation", "reason"),
    [
        (offer(cpu=10), Demand(max_price_cpu=10), None, None),
        (
            offer(cpu=12),
            Demand(max_price_cpu=10),
            None,
            "price per CPU-second 12 wei is above your max_price_cpu 10 wei",
        ),
        (offer(gpus=0), Demand(gpu=True), None, f"provider {_checksum(A)} offers no GPU"),
        (offer(gpus=1, gpu=50), Demand(gpu=True, max_price_gpu=40), None, "price per GPU-second 50 wei is above"),
        (offer(gpus=1, gpu=50, cpu=12), Demand(gpu=True, max_price_cpu=10), None, "price per CPU-second 12 wei"),
        (offer(gpu=50), Demand(max_price_gpu=40), None, None),  # a CPU demand never pays GPU-seconds
        (offer(memory=GIB), Demand(min_memory=2 * GIB), None, f"memory {GIB} bytes is below your min_memory"),
        (offer(), Demand(min_reputation=0.5), Reputation(faults=1), "reputation 0.17 (0 paid, 1 faults) is below"),
        (offer(), Demand(min_reputation=0.5), None, None),  # a newcomer has a clean record
        (offer(provider=None), Demand(exclude=frozenset({A})), None, None),
        # Sandbox: the offer's tier must be at least the demanded one; an offer that says nothing is "none".
        (offer(sandbox="bwrap"), Demand(sandbox="bwrap"), None, None),
        (offer(sandbox="bwrap"), Demand(sandbox="none"), None, None),
        (offer(sandbox="none"), Demand(sandbox="none"), None, None),
        (offer(sandbox="none"), Demand(), None, None),
        (offer(), Demand(), None, None),
        (offer(sandbox="gvisor"), Demand(sandbox="none"), None, None),
        (
            offer(sandbox="none"),
            Demand(sandbox="bwrap"),
            None,
            f"provider {_checksum(A)} runs requestors' code with sandbox 'none'; you demanded 'bwrap'",
        ),
        (offer(), Demand(sandbox="bwrap"), None, f"provider {_checksum(A)} runs requestors' code with sandbox 'none'"),
        (offer(provider=None, sandbox="none"), Demand(sandbox="bwrap"), None, "the offer at 127.0.0.1:7000 runs"),
        # Token: the offer must be priced in what the session pays in; an offer that says nothing is native.
        (offer(token=NATIVE), Demand(), None, None),
        (offer(token=NATIVE.upper().replace("0X", "0x")), Demand(), None, None),
        (offer(token=TOKEN), Demand(token=TOKEN.upper().replace("0X", "0x")), None, None),
        (
            offer(token=TOKEN),
            Demand(),
            None,
            f"provider {_checksum(A)} is priced in token {_checksum(TOKEN)}, your session pays in the native currency",
        ),
        (
            offer(),
            Demand(token=TOKEN),
            None,
            f"provider {_checksum(A)} is priced in the native currency, your session pays in token {_checksum(TOKEN)}",
        ),
        # Prices in another token are not comparable: that is the reason given, not the price.
        (offer(cpu=12, token=TOKEN), Demand(max_price_cpu=10), None, f"provider {_checksum(A)} is priced in token"),
        (offer(token="USDC"), Demand(), None, f"provider {_checksum(A)} is priced in a token it does not name"),
        (offer(token=None), Demand(), None, f"provider {_checksum(A)} is priced in a token it does not name"),
    ],
)
def test_matches_says_why_an_offer_does_not_fit(candidate, demand, reputation, reason):
    result = matches(candidate, demand, reputation)
    if reason is None:
        assert result is None
    else:
        assert result is not None and result.startswith(reason), result


GARBAGE = [None, 1, 1.5, True, "", "BWRAP", "bwrap ", "sandbox", ["bwrap"], {"tier": "bwrap"}, "x" * 10_000]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_capabilities_written_by_strangers_never_raise_and_never_pass_for_more(garbage):
    """A sandbox the requestor cannot read counts as "none"; a token it cannot read matches no session."""
    stated = offer(sandbox=garbage, token=garbage)
    assert offer_sandbox(stated) == "none" and offer_token(stated) is None
    assert matches(offer(sandbox=garbage), Demand()) is None
    assert matches(offer(sandbox=garbage), Demand(sandbox="none")) is None
    assert "with sandbox 'none'; you demanded 'bwrap'" in matches(offer(sandbox=garbage), Demand(sandbox="bwrap"))
    for demand in (Demand(), Demand(token=TOKEN), Demand(sandbox="none")):
        reason = matches(offer(token=garbage), demand)
        assert reason is not None and "a token it does not name as an address" in reason
        assert len(reason) < 300  # a stranger's long text is not copied whole into the message


def test_offers_read_from_the_chain_with_unreadable_capabilities_count_as_unsandboxed_and_native():
    """What ``Offer.from_tuple`` keeps of capabilities another client wrote: no sandbox, no token stated."""
    fields = ("127.0.0.1:7001", 10, 0, 0, 1, 0, "", GIB)
    for text in ('{"sandbox": "bwrap"', "[1, 2]", "", '"bwrap"', '{"sandbox": "bwrap", "token": 5}'):
        read = Offer.from_tuple(A, (*fields, text))
        expected_token = None if "token" in read.capabilities else NATIVE
        assert offer_token(read) == expected_token
        assert offer_sandbox(read) == ("bwrap" if read.capabilities.get("sandbox") == "bwrap" else "none")
    assert offer_sandbox(Offer.from_tuple(A, (*fields, '{"sandbox":"bwrap"}'))) == "bwrap"
    assert offer_sandbox(Offer.from_tuple(A, (*fields, '{"sandbox": "bwrap"'))) == "none"  # cut short: unparsed


# ---------------------------------------------------------------------------- ranking


def test_rank_orders_by_price_then_fee_then_reputation_then_latency_then_address():
    cheap = offer(A, cpu=5, fee=100)
    cheap_no_fee = offer(B, cpu=5, fee=0)
    dear = offer(C, cpu=9)
    trusted = offer(D, cpu=9)
    assert rank([dear, trusted, cheap, cheap_no_fee], Demand()) == [cheap_no_fee, cheap, dear, trusted]
    faulty = {C: Reputation(faults=1)}
    assert rank([dear, trusted], Demand(), reputations=faulty) == [trusted, dear]
    assert rank([dear, trusted], Demand(), latencies={D: 0.010, C: 0.020}) == [trusted, dear]
    assert rank([dear, trusted], Demand(), latencies={C: 0.5}) == [dear, trusted]  # unmeasured goes last
    assert rank([trusted, dear], Demand(), latencies={D: math.nan}) == [dear, trusted]


def test_a_provider_with_faults_ranks_below_every_one_without_whatever_its_price():
    cheap_faulty = offer(A, cpu=1)
    dear_clean = offer(B, cpu=50, fee=1000)
    new_clean = offer(C, cpu=20)
    worse_faulty = offer(D, cpu=0)
    reps = {
        A: Reputation(paid_count=40, faults=1),  # score 41/46
        B: Reputation(paid_count=3),
        D: Reputation(paid_count=40, faults=3),  # score 41/56
    }
    offers = [cheap_faulty, dear_clean, new_clean, worse_faulty]
    assert rank(offers, Demand(), reputations=reps) == [new_clean, dear_clean, cheap_faulty, worse_faulty]
    # Among faulty providers the better score goes first, even against a lower price.
    assert rank([worse_faulty, cheap_faulty], Demand(), reputations=reps) == [cheap_faulty, worse_faulty]
    # Only within what the demand accepts: a clean offer above max_price_cpu stays out.
    assert rank(offers, Demand(max_price_cpu=30), reputations=reps) == [new_clean, cheap_faulty, worse_faulty]
    assert rank(offers, Demand(min_reputation=0.8), reputations=reps) == [new_clean, dear_clean, cheap_faulty]


def test_rank_is_deterministic_whatever_the_input_order():
    offers = [offer(A, cpu=3), offer(B, cpu=3), offer(C, cpu=3, fee=1), offer(D, cpu=1), offer(None, cpu=3)]
    results = {tuple(map(id, rank(list(order), Demand()))) for order in itertools.permutations(offers)}
    assert results == {tuple(map(id, [offers[3], offers[4], offers[0], offers[1], offers[2]]))}


def test_gpu_demand_filters_cpu_only_offers_and_ranks_by_gpu_price():
    cpu_only = offer(A, cpu=1)
    gpu_dear = offer(B, cpu=1, gpu=90, gpus=1)
    gpu_cheap = offer(C, cpu=50, gpu=40, gpus=2)
    assert rank([cpu_only, gpu_dear, gpu_cheap], Demand(gpu=True)) == [gpu_cheap, gpu_dear]
    assert rank([cpu_only, gpu_dear, gpu_cheap], Demand()) == [cpu_only, gpu_dear, gpu_cheap]


def test_lookups_accept_any_spelling_of_an_address():
    first, second = offer(A, cpu=1), offer(B, cpu=1)
    assert rank([first, second], Demand(), reputations={A.upper().replace("0X", "0x"): Reputation(faults=1)}) == [
        second,
        first,
    ]


def test_explain_lists_fitting_offers_in_rank_order_then_the_others_with_reasons():
    fits_dear, fits_cheap = offer(A, cpu=8), offer(B, cpu=2)
    too_dear, excluded = offer(C, cpu=20), offer(D, cpu=1)
    demand = Demand(max_price_cpu=10, exclude=frozenset({D}))
    result = explain([too_dear, fits_dear, excluded, fits_cheap], demand)
    assert [o for o, _ in result] == [fits_cheap, fits_dear, too_dear, excluded]
    assert [r is None for _, r in result] == [True, True, False, False]
    assert "max_price_cpu" in result[2][1] and "exclude" in result[3][1]


def test_rank_and_explain_keep_out_weaker_sandboxes_and_other_tokens_whatever_their_price():
    """The cheapest offers are unsandboxed or priced in an ERC-20: a demand for bwrap in the native
    currency ranks only the sandboxed native ones, and explain says why each other one is out."""
    unsandboxed = offer(A, cpu=1, sandbox="none")
    erc20 = offer(B, cpu=1, sandbox="bwrap", token=TOKEN)
    silent = offer(C, cpu=2)  # an older agent: states neither
    sandboxed_dear, sandboxed_cheap = offer(D, cpu=9, sandbox="bwrap"), offer(None, cpu=5, sandbox="bwrap")
    offers = [unsandboxed, erc20, silent, sandboxed_dear, sandboxed_cheap]
    demand = Demand(sandbox="bwrap")
    assert rank(offers, demand) == [sandboxed_cheap, sandboxed_dear]
    result = explain(offers, demand)
    assert [o for o, _ in result] == [sandboxed_cheap, sandboxed_dear, unsandboxed, erc20, silent]
    reasons = [r for _, r in result]
    assert reasons[:2] == [None, None]
    assert "sandbox 'none'; you demanded 'bwrap'" in reasons[2] and "sandbox 'none'" in reasons[4]
    assert f"priced in token {_checksum(TOKEN)}" in reasons[3]
    # Without a sandbox demand every native offer fits, cheapest first; the ERC-20 one is still out.
    assert rank(offers, Demand()) == [unsandboxed, silent, sandboxed_cheap, sandboxed_dear]
    assert rank(offers, Demand(token=TOKEN, sandbox="bwrap")) == [erc20]


# ---------------------------------------------------------------------------- from the chain


def test_reputations_come_from_paid_claimed_released_and_fault_events(contracts: Deployed, requestor, providers):
    p1, p2, p3 = providers
    escrow = contracts.escrow(requestor)
    session = new_id()
    escrow.open_session(session, 10**18, contracts.chain.now() + 3600)
    escrow.allocate(session, {p1.address: 1000, p2.address: 1000, p3.address: 1000})
    start = contracts.chain.w3.eth.block_number
    escrow.settle_graph(session, 0, new_id(), {p1.address: 100, p2.address: 50})
    escrow.settle_graph(session, 1, new_id(), {p1.address: 30})
    # p1 releases for 200 in total: the release itself credits the 70 not yet settled (no Paid event).
    escrow.release(contracts.escrow(p1).sign_release(session, 200))
    escrow.report_fault(session, new_id(), p2.address)
    voucher = escrow.sign_voucher(session, p3.address, 70)
    contracts.escrow(p3).claim(voucher)

    found = reputations(contracts.escrow(), from_block=start)
    assert found == {
        p1.address: Reputation(paid_count=3, paid_total=200),
        p2.address: Reputation(paid_count=1, paid_total=50, faults=1),
        p3.address: Reputation(paid_count=1, paid_total=70),
    }
    later = reputations(contracts.escrow(), from_block=contracts.chain.w3.eth.block_number)
    assert later == {p3.address: Reputation(paid_count=1, paid_total=70)}

    # The same offers, ranked with what the chain says: p2's fault puts it last, then out.
    offers = [offer(p.address, cpu=5) for p in (p1, p2, p3)]
    assert rank(offers, Demand(), reputations=found)[-1].provider == p2.address
    assert [o.provider for o in rank(offers, Demand(min_reputation=0.5), reputations=found)] == sorted(
        [p1.address, p3.address]
    )


def test_no_events_means_no_reputations(contracts: Deployed):
    assert reputations(contracts.escrow()) == {}


def test_offers_with_reputations_ranks_the_market(contracts: Deployed, requestor, providers, stranger):
    """The one reader of the market: every active offer with its provider's reputation from the
    escrow's events since the deployment block; all offers cheapest first without a demand, the
    fitting ones first (ranked) and the others with their reason with one."""
    p1, p2, p3 = providers
    start = contracts.chain.w3.eth.block_number
    prices = {p1: 30, p2: 10, p3: 20, stranger: 40}
    for wallet, cpu in prices.items():
        gpus = 1 if wallet is stranger else 0
        model = "H100" if gpus else ""
        published = Offer(
            f"127.0.0.1:{7000 + cpu}", cpu, 50 * gpus, cpus=2, gpus=gpus, gpu_model=model, memory_bytes=GIB
        )
        contracts.registry(wallet).publish(published)
    escrow = contracts.escrow(requestor)
    session = new_id()
    escrow.open_session(session, 10**18, contracts.chain.now() + 3600)
    escrow.allocate(session, {p1.address: 1000, p2.address: 1000})
    escrow.settle_graph(session, 0, new_id(), {p1.address: 100, p2.address: 50})
    escrow.report_fault(session, new_id(), p2.address)
    chain = SimpleNamespace(
        registry=contracts.registry(), escrow=contracts.escrow(), network=SimpleNamespace(deployed_at_block=start)
    )

    everything = offers_with_reputations(chain)
    # p2 is the cheapest, but its FaultReported event puts it after every provider without one.
    assert [r.offer.provider for r in everything] == [p3.address, p1.address, stranger.address, p2.address]
    assert all(r.fits and r.reason is None for r in everything)
    by_provider = {r.offer.provider: r for r in everything}
    assert by_provider[p1.address].reputation == Reputation(paid_count=1, paid_total=100)
    assert by_provider[p2.address].reputation == Reputation(paid_count=1, paid_total=50, faults=1)
    assert by_provider[p2.address].score == pytest.approx(2 / 7)
    assert by_provider[p3.address].reputation is None and by_provider[p3.address].score is None  # new
    assert by_provider[p1.address].score == 1.0

    trusted = offers_with_reputations(chain, Demand(min_reputation=0.5))
    assert [r.offer.provider for r in trusted] == [p3.address, p1.address, stranger.address, p2.address]
    assert [r.fits for r in trusted] == [True, True, True, False]
    assert "min_reputation" in trusted[-1].reason
    known = reputations(contracts.escrow(), from_block=start)
    fitting = rank([r.offer for r in everything], Demand(min_reputation=0.5), known)
    assert [r.offer for r in trusted if r.fits] == fitting

    gpu = offers_with_reputations(chain, Demand(gpu=True))
    assert [r.offer.provider for r in gpu if r.fits] == [stranger.address]
    assert all("offers no GPU" in r.reason for r in gpu if not r.fits)
