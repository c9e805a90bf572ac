"""Every money rule of DESIGN.md section 3 (escrow version 2), one or more tests each, on every chain backend.

The first test is the attack that version 1 lost to: a requestor that signed a provider a voucher
settles the whole deposit to itself, withdraws it, and leaves the voucher worth nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CLAIM_WINDOW, Deployed, send
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import keccak

from golem_jupyter.chain import EscrowDomain, Voucher, Wallet, sign_voucher
from golem_jupyter.chain.errors import (
    AllocationExceeded,
    AllocationExhausted,
    AllocationReleased,
    AllocationsStillOpen,
    AmountTooLarge,
    ClaimWindowOver,
    DeadlineNotInFuture,
    DeadlinePassed,
    DeadlineTooFar,
    GraphAlreadySettled,
    GraphOutOfOrder,
    InsufficientDeposit,
    InvalidFinalAmount,
    InvalidProvider,
    InvalidReleaseSignature,
    InvalidVoucherSignature,
    LengthMismatch,
    NativeTransferFailed,
    NoAllocation,
    NothingToReclaim,
    NothingToWithdraw,
    NotRequestor,
    RefundNotYetAvailable,
    SessionAlreadyClosed,
    SessionAlreadyExists,
    SessionNotFound,
    TokenTransferMismatch,
    VoucherAlreadyPaid,
    WrongNativeValue,
    ZeroAmount,
)
from golem_jupyter.chain.escrow import Allocation
from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.chain.vouchers import RELEASE_TYPES, VOUCHER_TYPES, Release, sign_release
from golem_jupyter.errors import InvalidInput

DEPOSIT = 10**18
HOUR = 3600
ROOT = Path(__file__).resolve().parent.parent


def open_session(
    contracts: Deployed, requestor: Wallet, amount: int = DEPOSIT, token: str | None = None, duration: int = HOUR
) -> tuple[bytes, int]:
    session = new_id()
    deadline = contracts.chain.now() + duration
    contracts.escrow(requestor).open_session(session, amount, deadline, token=token)
    return session, deadline


def allocated_session(
    contracts: Deployed, requestor: Wallet, allocations: dict[str, int], amount: int = DEPOSIT, **options
) -> tuple[bytes, int]:
    """A session with ``allocations`` (provider address -> amount) made."""
    session, deadline = open_session(contracts, requestor, amount, **options)
    contracts.escrow(requestor).allocate(session, allocations)
    return session, deadline


def contract_balance(contracts: Deployed, token: str = NATIVE) -> int:
    if token == NATIVE:
        return contracts.chain.w3.eth.get_balance(contracts.escrow_address)
    return contracts.token(token).functions.balanceOf(contracts.escrow_address).call()


def send_unestimated(chain, wallet: Wallet, call, gas: int = 300_000):
    """Send without the gas estimate (which would refuse a reverting call); returns the receipt.

    Lets a test mine a transaction at an exact timestamp and see the contract reject it there.
    """
    w3 = chain.w3
    tx = call.build_transaction(
        {"from": wallet.address, "gas": gas, "nonce": w3.eth.get_transaction_count(wallet.address)}
    )
    tx_hash = w3.eth.send_raw_transaction(wallet.account.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash)


def tx_cost(receipt) -> int:
    return receipt.raw.gasUsed * receipt.raw.effectiveGasPrice


def release_of(contracts: Deployed, provider: Wallet, session: bytes, final_amount: int) -> Release:
    return contracts.escrow(provider).sign_release(session, final_amount)


# ---------------------------------------------------------------------------- the attack version 1 lost to


def test_a_requestor_cannot_drain_a_voucher_it_signed(contracts, requestor, providers):
    """The provider serves against an allocation of 0.6 ETH and holds a voucher for all of it. The
    requestor then tries every way to take the deposit back first: settle it to itself and to an
    accomplice and withdraw it, reclaim it, release on the provider's behalf, close the session.
    None reaches the allocation: the provider's claim credits the full 0.6 ETH, and it withdraws it."""
    p, accomplice = providers[0], providers[1]
    owed = 6 * 10**17
    session, _ = allocated_session(contracts, requestor, {p.address: owed})
    escrow = contracts.escrow(requestor)
    voucher = escrow.sign_voucher(session, p.address, owed)  # the provider accepted it and worked

    with pytest.raises(NoAllocation):  # pay itself the deposit
        escrow.settle_graph(session, 0, new_id(), {requestor.address: DEPOSIT})
    with pytest.raises(NoAllocation):  # or an accomplice
        escrow.settle_graph(session, 0, new_id(), {accomplice.address: DEPOSIT - owed})
    rest = DEPOSIT - owed  # all that is not the provider's, to itself and the accomplice
    escrow.allocate(session, {requestor.address: rest // 2, accomplice.address: rest - rest // 2})
    escrow.settle_graph(session, 0, new_id(), {requestor.address: rest // 2, accomplice.address: rest - rest // 2})
    for grab in ({requestor.address: 1}, {accomplice.address: 1}, {requestor.address: owed}):
        with pytest.raises(AllocationExceeded):  # one wei more than their own allocations
            escrow.settle_graph(session, 1, new_id(), grab)
    escrow.withdraw()
    contracts.escrow(accomplice).withdraw()
    with pytest.raises(InsufficientDeposit):  # nothing left to allocate
        escrow.allocate(session, {accomplice.address: 1})
    with pytest.raises(NothingToReclaim):
        escrow.reclaim(session)
    forged = sign_release(requestor.account, escrow.domain, session, 0)
    with pytest.raises(InvalidReleaseSignature):  # release the provider's allocation for 0
        escrow.release(Release(session, p.address, 0, forged.signature))
    with pytest.raises(AllocationsStillOpen):
        escrow.close_session(session)
    assert contracts.escrow().allocation(session, p.address) == Allocation(owed, 0, False)

    contracts.escrow(p).claim(voucher)
    assert contracts.escrow().balance_of(p.address) == owed
    before = contracts.chain.w3.eth.get_balance(p.address)
    receipt = contracts.escrow(p).withdraw()
    assert contracts.chain.w3.eth.get_balance(p.address) == before + owed - tx_cost(receipt)
    assert contract_balance(contracts) == 0


def test_the_contract_is_free_of_inline_assembly():
    """Money code stays plain Solidity (DESIGN section 3): the contract and its interface."""
    for source in ("contracts/GolemEscrow.sol", "contracts/interfaces/IGolemEscrow.sol"):
        text = (ROOT / source).read_text()
        assert not re.search(r"\bassembly\b", text), f"{source} uses inline assembly"


# ---------------------------------------------------------------------------- opening


def test_open_session_records_the_deposit_and_holds_it(contracts, requestor):
    before = contract_balance(contracts)
    session, deadline = open_session(contracts, requestor)
    state = contracts.escrow().session(session)
    assert (state.requestor, state.token, state.deposited, state.paid_out, state.unallocated) == (
        requestor.address,
        NATIVE,
        DEPOSIT,
        0,
        DEPOSIT,
    )
    assert (state.deadline, state.next_seq, state.open_allocations, state.closed, state.reclaimed) == (
        deadline,
        0,
        0,
        False,
        0,
    )
    assert state.remaining == DEPOSIT and state.locked == 0
    assert contract_balance(contracts) == before + DEPOSIT
    [event] = contracts.escrow().events("SessionOpened", sessionId=session)
    assert (event["requestor"], event["amount"], event["deadline"]) == (requestor.address, DEPOSIT, deadline)


def test_open_session_with_an_erc20_token(contracts, requestor):
    contracts.mint(requestor.address, 5 * DEPOSIT)
    session, _ = open_session(contracts, requestor, token=contracts.token_address)
    assert contracts.escrow().session(session).token == contracts.token_address
    assert contract_balance(contracts, contracts.token_address) == DEPOSIT


def test_fee_on_transfer_token_is_refused_and_nothing_moves(contracts, requestor):
    contracts.mint(requestor.address, DEPOSIT, contracts.fee_token_address)
    with pytest.raises(TokenTransferMismatch):
        open_session(contracts, requestor, token=contracts.fee_token_address)
    assert contract_balance(contracts, contracts.fee_token_address) == 0


def test_open_session_rejects_bad_input_in_the_contract(contracts, requestor):
    escrow = contracts.escrow(requestor)
    f = escrow.contract.functions
    session, deadline = open_session(contracts, requestor)
    later = deadline + HOUR
    with pytest.raises(SessionAlreadyExists):
        send(contracts.chain, requestor, f.openSession(session, NATIVE, 1, later), value=1)
    with pytest.raises(ZeroAmount):
        send(contracts.chain, requestor, f.openSession(new_id(), NATIVE, 0, later))
    with pytest.raises(DeadlineNotInFuture):
        send(contracts.chain, requestor, f.openSession(new_id(), NATIVE, 1, contracts.chain.now()), value=1)
    with pytest.raises(DeadlineTooFar):
        send(contracts.chain, requestor, f.openSession(new_id(), NATIVE, 1, 2**40), value=1)
    with pytest.raises(WrongNativeValue):
        send(contracts.chain, requestor, f.openSession(new_id(), NATIVE, 2, later), value=1)
    with pytest.raises(AmountTooLarge):
        send(contracts.chain, requestor, f.openSession(new_id(), contracts.token_address, 2**96, later))


def test_client_refuses_bad_input_before_sending(contracts, requestor, providers):
    escrow = contracts.escrow(requestor)
    nonce = contracts.chain.w3.eth.get_transaction_count(requestor.address)
    now = contracts.chain.now()
    session, _ = open_session(contracts, requestor)
    nonce += 1
    p = providers[0].address
    for bad in (
        lambda: escrow.open_session(new_id(), 0, now + HOUR),
        lambda: escrow.open_session(new_id(), -5, now + HOUR),
        lambda: escrow.open_session(new_id(), 1.5, now + HOUR),
        lambda: escrow.open_session(new_id(), 10, now - 1),
        lambda: escrow.open_session(new_id(), 10, 2**40),
        lambda: escrow.open_session(session, 10, now + HOUR),
        lambda: escrow.open_session(b"short", 10, now + HOUR),
        lambda: escrow.open_session(new_id(), 10, now + HOUR, token="0x1234"),
        lambda: escrow.allocate(session, {p: 0}),
        lambda: escrow.allocate(session, {NATIVE: 5}),
        lambda: escrow.settle_graph(session, 0, new_id(), {"not-an-address": 5}),
        lambda: escrow.settle_graph(session, 0, new_id(), {NATIVE: 5}),
        lambda: escrow.settle_graph(session, -1, new_id(), {p: 5}),
        lambda: escrow.top_up(session, 0),
    ):
        with pytest.raises(InvalidInput):
            bad()
    assert contracts.chain.w3.eth.get_transaction_count(requestor.address) == nonce


# ---------------------------------------------------------------------------- top up


def test_top_up_raises_the_deposit_and_the_unallocated_remainder(contracts, requestor, stranger):
    session, _ = open_session(contracts, requestor)
    contracts.escrow(requestor).allocate(session, {stranger.address: 100})
    contracts.escrow(requestor).top_up(session, 5)
    state = contracts.escrow().session(session)
    assert (state.deposited, state.unallocated) == (DEPOSIT + 5, DEPOSIT - 100 + 5)
    with pytest.raises(NotRequestor):
        contracts.escrow(stranger).top_up(session, 5)


def test_top_up_after_the_deadline_is_refused(contracts, requestor):
    session, deadline = open_session(contracts, requestor)
    contracts.chain.travel_to(deadline + 1)
    with pytest.raises(DeadlinePassed):
        contracts.escrow(requestor).top_up(session, 5)


# ---------------------------------------------------------------------------- allocating


def test_allocate_moves_the_unallocated_remainder_into_allocations(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    p, q = providers[0].address, providers[1].address
    escrow = contracts.escrow(requestor)
    escrow.allocate(session, {p: 300, q: 200})
    escrow.allocate(session, {p: 50})  # adding to an open allocation
    view = contracts.escrow()
    assert view.allocation(session, p) == Allocation(350, 0, False)
    assert view.allocation(session, q) == Allocation(200, 0, False)
    assert view.allocation(session, providers[2].address) == Allocation(0, 0, False)
    state = view.session(session)
    assert (state.unallocated, state.open_allocations, state.remaining, state.locked) == (
        DEPOSIT - 550,
        2,
        DEPOSIT,
        550,
    )
    events = view.events("Allocated", sessionId=session)
    assert [(e["provider"], e["amount"]) for e in events] == [(p, 300), (q, 200), (p, 50)]
    assert [e["amount"] for e in view.events("Allocated", provider=p)] == [300, 50]


def test_allocate_refuses_more_than_the_unallocated_remainder(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor, amount=1000)
    escrow = contracts.escrow(requestor)
    escrow.allocate(session, {providers[0].address: 600})
    with pytest.raises(InsufficientDeposit) as raised:
        escrow.allocate(session, {providers[1].address: 300, providers[2].address: 101})
    assert raised.value.fields == {"sessionId": session, "requested": 401, "unallocated": 400}
    assert contracts.escrow().allocation(session, providers[1].address) == Allocation(0, 0, False)
    assert contracts.escrow().session(session).unallocated == 400


def test_allocate_rejects_malformed_input_and_strangers(contracts, requestor, providers, stranger):
    session, _ = open_session(contracts, requestor)
    p = providers[0].address
    f = contracts.escrow().contract.functions
    with pytest.raises(LengthMismatch):
        send(contracts.chain, requestor, f.allocate(session, [p], [1, 2]))
    with pytest.raises(ZeroAmount):
        send(contracts.chain, requestor, f.allocate(session, [p], [0]))
    with pytest.raises(InvalidProvider):
        send(contracts.chain, requestor, f.allocate(session, [NATIVE], [1]))
    with pytest.raises(NotRequestor):
        contracts.escrow(stranger).allocate(session, {stranger.address: 1})
    with pytest.raises(SessionNotFound):
        contracts.escrow(requestor).allocate(new_id(), {p: 1})
    assert contracts.escrow().session(session).open_allocations == 0


def test_a_released_allocation_cannot_be_reopened(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 100})
    contracts.escrow(requestor).release(release_of(contracts, p, session, 0))
    with pytest.raises(AllocationReleased):
        contracts.escrow(requestor).allocate(session, {p.address: 10})
    assert contracts.escrow().allocation(session, p.address) == Allocation(0, 0, True)


def test_an_allocation_made_after_the_claim_window_cannot_be_drawn_on_and_is_refunded(
    contracts, requestor, providers, stranger
):
    """allocate has no time limit, but after deadline + CLAIM_WINDOW nothing can draw on what it
    allocates, and the unilateral close refunds it with the rest."""
    p = providers[0]
    session, deadline = open_session(contracts, requestor)
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    escrow = contracts.escrow(requestor)
    escrow.allocate(session, {p.address: 100})
    with pytest.raises(ClaimWindowOver):
        escrow.settle_graph(session, 0, new_id(), {p.address: 100})
    with pytest.raises(ClaimWindowOver):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 100))
    with pytest.raises(ClaimWindowOver):
        escrow.release(release_of(contracts, p, session, 100))
    before = contracts.chain.w3.eth.get_balance(requestor.address)
    contracts.escrow(stranger).close_session(session)
    assert contracts.chain.w3.eth.get_balance(requestor.address) == before + DEPOSIT
    assert contracts.escrow().balance_of(p.address) == 0


# ---------------------------------------------------------------------------- settling


def test_settle_pays_each_provider_from_its_allocation(contracts, requestor, providers):
    p, q, r = (w.address for w in providers)
    session, _ = allocated_session(contracts, requestor, {p: 1000, q: 1000})
    graph, root = new_id(), new_id()
    contracts.escrow(requestor).settle_graph(session, 0, graph, {p: 300, q: 200, r: 0}, root)  # zero: skipped
    escrow = contracts.escrow()
    assert escrow.allocation(session, p) == Allocation(1000, 300, False)
    assert (escrow.paid(session, p), escrow.paid(session, q), escrow.paid(session, r)) == (300, 200, 0)
    assert escrow.balance_of(p) == 300
    state = escrow.session(session)
    assert (state.paid_out, state.next_seq, state.unallocated, state.remaining) == (
        500,
        1,
        DEPOSIT - 2000,
        DEPOSIT - 500,
    )
    [settled] = escrow.events("GraphSettled", sessionId=session)
    assert (settled["seq"], settled["graphId"], settled["total"], settled["resultRoot"]) == (0, graph, 500, root)
    assert escrow.events("GraphSettled", graphId=graph) == [settled]
    paid_events = escrow.events("Paid", sessionId=session)
    assert {(e["provider"], e["amount"]) for e in paid_events} == {(p, 300), (q, 200)}


def test_graphs_settle_in_order_and_a_replay_is_told_apart_from_a_graph_ahead(contracts, requestor, providers):
    p = providers[0].address
    session, _ = allocated_session(contracts, requestor, {p: 1000})
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {p: 10})
    with pytest.raises(GraphOutOfOrder) as ahead:
        escrow.settle_graph(session, 2, new_id(), {p: 10})
    assert ahead.value.fields == {"sessionId": session, "seq": 2, "nextSeq": 1}
    escrow.settle_graph(session, 1, new_id(), {p: 10})
    with pytest.raises(GraphAlreadySettled) as replay:  # a retried settlement that was mined
        escrow.settle_graph(session, 1, new_id(), {p: 10})
    assert replay.value.fields == {"sessionId": session, "seq": 1, "nextSeq": 2}
    with pytest.raises(GraphAlreadySettled):
        escrow.settle_graph(session, 0, new_id(), {p: 10})
    assert escrow.paid(session, p) == 20
    assert escrow.session(session).next_seq == 2
    assert [e["seq"] for e in escrow.events("GraphSettled", sessionId=session)] == [0, 1]


def test_settle_cannot_exceed_an_allocation_or_pay_an_unallocated_provider(contracts, requestor, providers):
    p, q = providers[0].address, providers[1].address
    session, _ = allocated_session(contracts, requestor, {p: 1000})
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {p: 600})
    with pytest.raises(AllocationExceeded) as raised:
        escrow.settle_graph(session, 1, new_id(), {p: 401})
    assert raised.value.fields == {"sessionId": session, "provider": p, "requested": 401, "available": 400}
    with pytest.raises(NoAllocation):
        escrow.settle_graph(session, 1, new_id(), {q: 1})
    escrow.settle_graph(session, 1, new_id(), {p: 400, q: 0})
    state = escrow.session(session)
    assert (state.paid_out, state.next_seq) == (1000, 2)
    assert escrow.paid(session, q) == 0


def test_only_the_requestor_settles(contracts, requestor, providers, stranger):
    session, _ = allocated_session(contracts, requestor, {providers[0].address: 100})
    for outsider in (stranger, providers[0]):
        with pytest.raises(NotRequestor):
            contracts.escrow(outsider).settle_graph(session, 0, new_id(), {providers[0].address: 10})
    assert contracts.escrow().session(session).paid_out == 0


def test_settle_rejects_malformed_payouts(contracts, requestor, providers):
    session, _ = allocated_session(contracts, requestor, {providers[0].address: 100})
    f = contracts.escrow().contract.functions
    with pytest.raises(LengthMismatch):
        send(contracts.chain, requestor, f.settleGraph(session, 0, new_id(), [providers[0].address], [1, 2], new_id()))
    with pytest.raises(NoAllocation):
        send(contracts.chain, requestor, f.settleGraph(session, 0, new_id(), [NATIVE], [1], new_id()))
    with pytest.raises(SessionNotFound):
        contracts.escrow(requestor).settle_graph(new_id(), 0, new_id(), {providers[0].address: 1})


def test_settle_is_accepted_until_the_claim_window_ends(contracts, requestor, providers):
    p = providers[0].address
    session, deadline = allocated_session(contracts, requestor, {p: 100})
    escrow = contracts.escrow(requestor)
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW)
    escrow.settle_graph(session, 0, new_id(), {p: 1})
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW + 1)
    late = escrow.contract.functions.settleGraph(session, 1, new_id(), [p], [1], new_id())
    assert send_unestimated(contracts.chain, requestor, late).status == 0
    with pytest.raises(ClaimWindowOver):
        escrow.settle_graph(session, 1, new_id(), {p: 1})
    assert escrow.paid(session, p) == 1


# ---------------------------------------------------------------------------- vouchers and claims


def test_python_vouchers_hash_and_recover_like_the_contract(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    escrow = contracts.escrow(requestor)
    voucher = escrow.sign_voucher(session, providers[0].address, 1234)
    assert escrow.domain == EscrowDomain(contracts.chain.w3.eth.chain_id, contracts.escrow_address)
    assert escrow.domain.version == "2"
    assert voucher.signer(escrow.domain) == requestor.address
    assert Voucher.from_json(voucher.to_json()) == voucher
    signable = encode_typed_data(escrow.domain.as_dict(), VOUCHER_TYPES, voucher.message())
    assert escrow.voucher_digest(voucher) == _hash_eip191_message(signable)


def test_claim_raises_paid_to_the_voucher_amount(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: 100})
    voucher = contracts.escrow(requestor).sign_voucher(session, p.address, 250)
    contracts.escrow(p).claim(voucher)
    escrow = contracts.escrow()
    assert escrow.allocation(session, p.address) == Allocation(1000, 250, False)
    assert escrow.balance_of(p.address) == 250
    assert escrow.session(session).paid_out == 250
    [claimed] = escrow.events("Claimed", sessionId=session)
    assert (claimed["provider"], claimed["amount"]) == (p.address, 150)


def test_a_claim_is_capped_by_the_allocation(contracts, requestor, providers):
    p, q = providers[0], providers[1]
    session, _ = allocated_session(contracts, requestor, {p.address: 300, q.address: 700}, amount=2000)
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {q.address: 700})
    contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 500))  # owed 500, allocated 300
    assert contracts.escrow().allocation(session, p.address) == Allocation(300, 300, False)
    with pytest.raises(AllocationExhausted):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 600))
    assert contracts.escrow().balance_of(p.address) == 300
    assert contracts.escrow().session(session).unallocated == 1000  # the rest of the deposit is untouched


def test_a_provider_without_an_allocation_claims_nothing(contracts, requestor, providers):
    p = providers[0]
    session, _ = open_session(contracts, requestor)
    with pytest.raises(NoAllocation):
        contracts.escrow(p).claim(contracts.escrow(requestor).sign_voucher(session, p.address, 100))
    assert contracts.escrow().paid(session, p.address) == 0


def test_replayed_or_older_vouchers_credit_nothing(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    escrow = contracts.escrow(requestor)
    old = escrow.sign_voucher(session, p.address, 100)
    new = escrow.sign_voucher(session, p.address, 200)
    contracts.escrow(p).claim(new)
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(new)
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(old)
    # A voucher already covered by a settlement credits nothing either.
    escrow.settle_graph(session, 0, new_id(), {p.address: 50})
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 250))
    assert contracts.escrow().paid(session, p.address) == 250
    assert contracts.escrow().balance_of(p.address) == 250


def test_vouchers_not_signed_by_the_requestor_are_rejected(contracts, requestor, providers, stranger):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    domain = contracts.escrow().domain
    forged = sign_voucher(stranger.account, domain, session, p.address, 100)
    self_signed = sign_voucher(p.account, domain, session, p.address, 100)
    for voucher in (forged, self_signed):
        with pytest.raises(InvalidVoucherSignature):
            contracts.escrow(p).claim(voucher)
    assert contracts.escrow().paid(session, p.address) == 0


def test_vouchers_for_another_session_chain_contract_or_provider_are_rejected(contracts, requestor, providers):
    p, q = providers[0], providers[1]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000, q.address: 1000})
    other_session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    domain = contracts.escrow().domain
    f = contracts.escrow().contract.functions

    def claim_with(
        signer_domain: EscrowDomain, signed_session: bytes, claim_session: bytes, caller: Wallet, signed_for: Wallet
    ):
        voucher = sign_voucher(requestor.account, signer_domain, signed_session, signed_for.address, 100)
        send(contracts.chain, caller, f.claim(claim_session, 100, voucher.signature))

    other_chain = EscrowDomain(domain.chain_id + 1, domain.verifying_contract)
    other_contract = EscrowDomain(domain.chain_id, contracts.registry_address)
    version_1 = EscrowDomain(domain.chain_id, domain.verifying_contract, version="1")
    cases = [
        (domain, other_session, session, p, p),  # signed for another session
        (other_chain, session, session, p, p),  # another chain id
        (other_contract, session, session, p, p),  # another escrow contract
        (version_1, session, session, p, p),  # the version 1 domain
        (domain, session, session, q, p),  # a voucher for p claimed by q
    ]
    for case in cases:
        with pytest.raises(InvalidVoucherSignature):
            claim_with(*case)
    with pytest.raises(InvalidVoucherSignature):
        send(contracts.chain, p, f.claim(session, 100, b"\x01" * 64))  # malformed signature
    assert contracts.escrow().paid(session, p.address) == 0
    assert contracts.escrow().paid(session, q.address) == 0


def test_claims_end_exactly_at_deadline_plus_claim_window(contracts, requestor, providers):
    p = providers[0]
    session, deadline = allocated_session(contracts, requestor, {p.address: 1000})
    escrow = contracts.escrow(requestor)
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW)
    contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 10))
    late = escrow.sign_voucher(session, p.address, 20)
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW + 1)
    call = escrow.contract.functions.claim(session, 20, late.signature)
    assert send_unestimated(contracts.chain, p, call).status == 0
    with pytest.raises(ClaimWindowOver):
        contracts.escrow(p).claim(late)
    assert contracts.escrow().paid(session, p.address) == 10


# ---------------------------------------------------------------------------- releases


def test_python_releases_hash_and_recover_like_the_contract(contracts, requestor, providers):
    p = providers[0]
    session, _ = open_session(contracts, requestor)
    release = release_of(contracts, p, session, 4321)
    domain = contracts.escrow().domain
    assert (release.provider, release.final_amount) == (p.address, 4321)
    assert release.signer(domain) == p.address
    assert Release.from_json(release.to_json()) == release
    signable = encode_typed_data(domain.as_dict(), RELEASE_TYPES, release.message())
    assert contracts.escrow().release_digest(release) == _hash_eip191_message(signable)


def test_release_pays_the_final_amount_and_returns_the_rest(contracts, requestor, providers, stranger):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: 300})
    receipt = contracts.escrow(stranger).release(release_of(contracts, p, session, 450))  # anyone may submit it
    escrow = contracts.escrow()
    assert escrow.allocation(session, p.address) == Allocation(450, 450, True)
    assert escrow.balance_of(p.address) == 450
    state = escrow.session(session)
    assert (state.paid_out, state.unallocated, state.open_allocations) == (450, DEPOSIT - 450, 0)
    [released] = escrow.events("Released", from_block=receipt.block_number, provider=p.address)
    assert (released["sessionId"], released["finalAmount"], released["returned"]) == (session, 450, 550)


def test_a_release_of_what_was_already_paid_credits_nothing_more(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: 300})
    contracts.escrow(requestor).release(release_of(contracts, p, session, 300))
    escrow = contracts.escrow()
    assert escrow.balance_of(p.address) == 300
    assert escrow.session(session).unallocated == DEPOSIT - 300


def test_a_release_below_what_was_paid_or_above_the_allocation_reverts(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {p.address: 300})
    for final in (299, 1001):
        with pytest.raises(InvalidFinalAmount) as raised:
            escrow.release(release_of(contracts, p, session, final))
        assert raised.value.fields["paid"] == 300 and raised.value.fields["allocated"] == 1000
    assert contracts.escrow().allocation(session, p.address) == Allocation(1000, 300, False)


def test_forged_or_requestor_signed_releases_revert(contracts, requestor, providers, stranger):
    p, q = providers[0], providers[1]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000, q.address: 1000})
    other_session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    escrow = contracts.escrow(requestor)
    domain = escrow.domain
    other_chain = EscrowDomain(domain.chain_id + 1, domain.verifying_contract)
    forged = [
        Release(session, p.address, 0, sign_release(requestor.account, domain, session, 0).signature),
        Release(session, p.address, 0, sign_release(stranger.account, domain, session, 0).signature),
        Release(session, p.address, 0, sign_release(q.account, domain, session, 0).signature),  # q's own, for p
        Release(session, p.address, 0, sign_release(p.account, domain, other_session, 0).signature),
        Release(session, p.address, 0, sign_release(p.account, domain, session, 5).signature),  # another amount
        Release(session, p.address, 0, sign_release(p.account, other_chain, session, 0).signature),
        Release(session, p.address, 0, b"\x01" * 65),
    ]
    for release in forged:
        with pytest.raises(InvalidReleaseSignature):
            escrow.release(release)
    assert contracts.escrow().session(session).open_allocations == 2


def test_nothing_more_is_paid_from_a_released_allocation(contracts, requestor, providers):
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000})
    escrow = contracts.escrow(requestor)
    voucher = escrow.sign_voucher(session, p.address, 800)
    escrow.release(release_of(contracts, p, session, 200))
    with pytest.raises(AllocationReleased):
        escrow.settle_graph(session, 0, new_id(), {p.address: 1})
    with pytest.raises(AllocationReleased):
        contracts.escrow(p).claim(voucher)
    with pytest.raises(AllocationReleased):
        escrow.release(release_of(contracts, p, session, 200))
    assert contracts.escrow().paid(session, p.address) == 200


def test_a_release_is_accepted_until_the_claim_window_ends(contracts, requestor, providers):
    p = providers[0]
    session, deadline = allocated_session(contracts, requestor, {p.address: 1000})
    release = release_of(contracts, p, session, 10)
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    with pytest.raises(ClaimWindowOver):
        contracts.escrow(requestor).release(release)


# ---------------------------------------------------------------------------- closing, reclaiming, refunds


def test_the_cooperative_close_refunds_the_remainder_at_once(contracts, requestor, providers):
    p, q = providers[0], providers[1]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000, q.address: 1000})
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {p.address: 300, q.address: 200})
    with pytest.raises(AllocationsStillOpen):
        escrow.close_session(session)
    escrow.release(release_of(contracts, p, session, 300))
    escrow.release(release_of(contracts, q, session, 250))  # q is owed 50 more than was settled
    w3 = contracts.chain.w3
    before, held = w3.eth.get_balance(requestor.address), contract_balance(contracts)
    receipt = escrow.close_session(session)
    assert w3.eth.get_balance(requestor.address) == before + DEPOSIT - 550 - tx_cost(receipt)
    assert contract_balance(contracts) == held - (DEPOSIT - 550)
    [closed] = escrow.events("SessionClosed", sessionId=session)
    assert closed["refund"] == DEPOSIT - 550
    state = escrow.session(session)
    assert (state.closed, state.paid_out, state.unallocated) == (True, 550, 0)
    assert (escrow.balance_of(p.address), escrow.balance_of(q.address)) == (300, 250)


def test_a_session_in_which_nothing_was_ever_allocated_closes_at_once(contracts, requestor, stranger):
    session, _ = open_session(contracts, requestor)
    with pytest.raises(RefundNotYetAvailable):
        contracts.escrow(stranger).close_session(session)
    before = contracts.chain.w3.eth.get_balance(requestor.address)
    receipt = contracts.escrow(requestor).close_session(session)
    assert contracts.chain.w3.eth.get_balance(requestor.address) == before + DEPOSIT - tx_cost(receipt)
    assert contracts.escrow().session(session).closed


def test_only_the_requestor_closes_early(contracts, requestor, providers, stranger):
    p = providers[0]
    session, deadline = allocated_session(contracts, requestor, {p.address: 100})
    contracts.escrow(requestor).release(release_of(contracts, p, session, 0))
    for outsider in (stranger, p):
        with pytest.raises(RefundNotYetAvailable):
            contracts.escrow(outsider).close_session(session)
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW)
    call = contracts.escrow().contract.functions.closeSession(session)
    assert send_unestimated(contracts.chain, stranger, call).status == 0  # mined at the last claim second
    assert not contracts.escrow().session(session).closed


def test_after_the_claim_window_anyone_closes_and_open_allocations_are_refunded(
    contracts, requestor, providers, stranger
):
    p, q = providers[0], providers[1]
    session, deadline = allocated_session(contracts, requestor, {p.address: 1000, q.address: 1000})
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, 0, new_id(), {p.address: 400})
    contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 500))
    escrow.release(release_of(contracts, q, session, 0))
    escrow.reclaim(session)  # the unallocated part (q's allocation came back into it)
    w3 = contracts.chain.w3
    before, held = w3.eth.get_balance(requestor.address), contract_balance(contracts)
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    receipt = contracts.escrow(stranger).close_session(session)  # the refund goes to the requestor
    assert w3.eth.get_balance(requestor.address) == before + 500  # p's allocation, less what it was paid
    assert contract_balance(contracts) == held - 500
    [closed] = escrow.events("SessionClosed", from_block=receipt.block_number, sessionId=session)
    assert closed["refund"] == 500
    # Providers keep what they were credited; nothing more can happen in the session.
    assert escrow.balance_of(p.address) == 500
    with pytest.raises(SessionAlreadyClosed):
        contracts.escrow(stranger).close_session(session)
    with pytest.raises(SessionAlreadyClosed):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 600))
    with pytest.raises(SessionAlreadyClosed):
        escrow.settle_graph(session, 1, new_id(), {p.address: 1})
    with pytest.raises(SessionAlreadyClosed):
        escrow.allocate(session, {p.address: 1})
    with pytest.raises(SessionAlreadyClosed):
        escrow.reclaim(session)
    with pytest.raises(SessionAlreadyClosed):
        escrow.release(release_of(contracts, p, session, 500))


def test_reclaim_returns_the_unallocated_remainder_and_leaves_allocations_alone(contracts, requestor, providers):
    p, q = providers[0], providers[1]
    session, _ = allocated_session(contracts, requestor, {p.address: 1000, q.address: 2000})
    escrow = contracts.escrow(requestor)
    w3 = contracts.chain.w3
    before = w3.eth.get_balance(requestor.address)
    receipt = escrow.reclaim(session)
    assert w3.eth.get_balance(requestor.address) == before + DEPOSIT - 3000 - tx_cost(receipt)
    [event] = escrow.events("Reclaimed", sessionId=session)
    assert event["amount"] == DEPOSIT - 3000
    state = escrow.session(session)
    assert (state.unallocated, state.reclaimed, state.remaining, state.locked) == (0, DEPOSIT - 3000, 3000, 3000)
    with pytest.raises(NothingToReclaim):
        escrow.reclaim(session)
    # The providers' allocations are untouched: settled, claimed, released as before.
    escrow.settle_graph(session, 0, new_id(), {p.address: 700})
    contracts.escrow(q).claim(escrow.sign_voucher(session, q.address, 2000))
    escrow.release(release_of(contracts, p, session, 800))  # 100 more, 200 back
    escrow.release(release_of(contracts, q, session, 2000))
    before = w3.eth.get_balance(requestor.address)
    receipt = escrow.close_session(session)
    assert w3.eth.get_balance(requestor.address) == before + 200 - tx_cost(receipt)
    assert (escrow.balance_of(p.address), escrow.balance_of(q.address)) == (800, 2000)


def test_only_the_requestor_reclaims(contracts, requestor, providers, stranger):
    session, _ = open_session(contracts, requestor)
    for outsider in (stranger, providers[0]):
        with pytest.raises(NotRequestor):
            contracts.escrow(outsider).reclaim(session)
    assert contracts.escrow().session(session).unallocated == DEPOSIT


def test_token_session_refund(contracts, requestor, providers):
    token = contracts.token_address
    p = providers[0]
    contracts.mint(requestor.address, DEPOSIT)
    session, _ = allocated_session(contracts, requestor, {p.address: 1000}, token=token)
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: 123})
    contracts.escrow(requestor).release(release_of(contracts, p, session, 123))
    contracts.escrow(requestor).close_session(session)
    assert contracts.token().functions.balanceOf(requestor.address).call() == DEPOSIT - 123
    assert contract_balance(contracts, token) == 123


# ---------------------------------------------------------------------------- withdrawing


def test_withdraw_pays_what_was_credited_once(contracts, requestor, providers):
    p = providers[0]
    for amount in (300, 200):  # credits from two sessions add up
        session, _ = allocated_session(contracts, requestor, {p.address: amount})
        contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: amount})
    w3 = contracts.chain.w3
    before, held = w3.eth.get_balance(p.address), contract_balance(contracts)
    receipt = contracts.escrow(p).withdraw()
    assert w3.eth.get_balance(p.address) == before + 500 - tx_cost(receipt)
    assert contract_balance(contracts) == held - 500
    assert contracts.escrow().balance_of(p.address) == 0
    with pytest.raises(NothingToWithdraw):
        contracts.escrow(p).withdraw()


def test_withdraw_in_a_token(contracts, requestor, providers):
    token = contracts.token_address
    contracts.mint(requestor.address, DEPOSIT)
    p = providers[0]
    session, _ = allocated_session(contracts, requestor, {p.address: 100}, token=token)
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {p.address: 77})
    with pytest.raises(NothingToWithdraw):
        contracts.escrow(p).withdraw()  # nothing in the native currency
    contracts.escrow(p).withdraw(token)
    assert contracts.token().functions.balanceOf(p.address).call() == 77
    [event] = contracts.escrow().events("Withdrawn", account=p.address)
    assert (event["token"], event["amount"]) == (token, 77)


# ---------------------------------------------------------------------------- hostile receivers


def _selector_call(contracts: Deployed, fn_name: str, *args) -> bytes:
    f = getattr(contracts.escrow().contract.functions, fn_name)(*args)
    return bytes.fromhex(f._encode_transaction_data()[2:])


def _attacker_session(contracts: Deployed, owner: Wallet, attacker, amount: int = 1000) -> tuple[bytes, int]:
    """A session opened by the hostile ``attacker`` contract (relayed by ``owner``)."""
    session = new_id()
    deadline = contracts.chain.now() + HOUR
    open_call = _selector_call(contracts, "openSession", session, NATIVE, amount, deadline)
    send(contracts.chain, owner, attacker.functions.relay(open_call), value=amount)
    assert contracts.escrow().session(session).requestor == attacker.address
    return session, deadline


GUARD_ERROR = keccak(text="ReentrancyGuardReentrantCall()")[:4]


def test_reentrant_withdraw_is_refused(contracts, requestor):
    w3 = contracts.chain.w3
    attacker = contracts.deploy_receiver(Wallet.dev(5))
    session, _ = allocated_session(contracts, requestor, {attacker.address: 1000})
    contracts.escrow(requestor).settle_graph(session, 0, new_id(), {attacker.address: 1000})
    reentry = _selector_call(contracts, "withdraw", NATIVE)
    send(contracts.chain, Wallet.dev(5), attacker.functions.setReentryCall(reentry))
    held = contract_balance(contracts)
    send(contracts.chain, Wallet.dev(5), attacker.functions.relay(reentry))
    assert attacker.functions.attempts().call() == 1
    assert attacker.functions.reentrySucceeded().call() is False
    assert attacker.functions.reentryRevertData().call()[:4] == GUARD_ERROR
    assert w3.eth.get_balance(attacker.address) == 1000
    assert contract_balance(contracts) == held - 1000


@pytest.mark.parametrize("early", [True, False], ids=["cooperative", "after-the-window"])
def test_reentrant_close_is_refused_and_refunds_once(contracts, stranger, early):
    owner = Wallet.dev(5)
    attacker = contracts.deploy_receiver(owner)
    session, deadline = _attacker_session(contracts, owner, attacker)
    close = _selector_call(contracts, "closeSession", session)
    send(contracts.chain, owner, attacker.functions.setReentryCall(close))
    if early:
        send(contracts.chain, owner, attacker.functions.relay(close))
    else:
        contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
        contracts.escrow(stranger).close_session(session)
    assert attacker.functions.reentrySucceeded().call() is False
    assert attacker.functions.reentryRevertData().call()[:4] == GUARD_ERROR
    assert contracts.chain.w3.eth.get_balance(attacker.address) == 1000


def test_reentrant_reclaim_is_refused_and_pays_once(contracts):
    owner = Wallet.dev(5)
    attacker = contracts.deploy_receiver(owner)
    session, _ = _attacker_session(contracts, owner, attacker)
    allocate = _selector_call(contracts, "allocate", session, [owner.address], [400])
    send(contracts.chain, owner, attacker.functions.relay(allocate))
    reclaim = _selector_call(contracts, "reclaim", session)
    send(contracts.chain, owner, attacker.functions.setReentryCall(reclaim))
    send(contracts.chain, owner, attacker.functions.relay(reclaim))
    assert attacker.functions.reentrySucceeded().call() is False
    assert attacker.functions.reentryRevertData().call()[:4] == GUARD_ERROR
    assert contracts.chain.w3.eth.get_balance(attacker.address) == 600
    assert contracts.escrow().session(session).reclaimed == 600


def test_a_requestor_refusing_its_refund_loses_nothing(contracts, stranger):
    owner = Wallet.dev(5)
    attacker = contracts.deploy_receiver(owner)
    session, deadline = _attacker_session(contracts, owner, attacker)
    send(contracts.chain, owner, attacker.functions.setRejectPayments(True))
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    with pytest.raises(NativeTransferFailed):
        contracts.escrow(stranger).close_session(session)
    assert not contracts.escrow().session(session).closed
    assert contract_balance(contracts) == 1000
    send(contracts.chain, owner, attacker.functions.setRejectPayments(False))
    contracts.escrow(stranger).close_session(session)
    assert contracts.chain.w3.eth.get_balance(attacker.address) == 1000


# ---------------------------------------------------------------------------- faults


def test_report_fault_names_only_providers_with_an_allocation(contracts, requestor, providers, stranger):
    p, q, r = providers
    session, _ = allocated_session(contracts, requestor, {p.address: 100, q.address: 100})
    contracts.escrow(requestor).release(release_of(contracts, q, session, 0))
    graph, evidence = new_id(), new_id()
    escrow = contracts.escrow(requestor)
    escrow.report_fault(session, graph, p.address, evidence)
    escrow.report_fault(session, graph, q.address, evidence)  # released, but it was rented
    [fault] = contracts.escrow().events("FaultReported", provider=p.address)
    assert (fault["sessionId"], fault["graphId"], fault["evidence"]) == (session, graph, evidence)
    with pytest.raises(NoAllocation):  # a provider never rented cannot be smeared
        escrow.report_fault(session, graph, r.address, evidence)
    with pytest.raises(NotRequestor):
        contracts.escrow(stranger).report_fault(session, graph, p.address, evidence)
    assert contracts.escrow().events("FaultReported", provider=r.address) == []


def test_unknown_sessions_are_named_in_errors(contracts, providers):
    missing = new_id()
    voucher = Voucher(missing, providers[0].address, 5, b"\x01" * 65)
    with pytest.raises(SessionNotFound, match=missing.hex()):
        contracts.escrow(providers[0]).claim(voucher)
    with pytest.raises(SessionNotFound, match=missing.hex()):
        contracts.escrow(providers[0]).release(Release(missing, providers[0].address, 5, b"\x01" * 65))
    with pytest.raises(SessionNotFound, match=missing.hex()):
        contracts.escrow(providers[0]).close_session(missing)
