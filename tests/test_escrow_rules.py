"""Every money rule of DESIGN.md section 3, one or more tests each, on every chain backend."""

from __future__ import annotations

import pytest
from conftest import CLAIM_WINDOW, Deployed, send
from eth_utils import keccak

from golem_jupyter.chain import EscrowDomain, Voucher, Wallet, sign_voucher
from golem_jupyter.chain.errors import (
    AmountTooLarge,
    ClaimWindowOver,
    DeadlineNotInFuture,
    DeadlinePassed,
    DepositExhausted,
    GraphAlreadySettled,
    InsufficientDeposit,
    InvalidProvider,
    InvalidVoucherSignature,
    LengthMismatch,
    NativeTransferFailed,
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
from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.errors import InvalidInput

DEPOSIT = 10**18
HOUR = 3600


def open_session(
    contracts: Deployed, requestor: Wallet, amount: int = DEPOSIT, token: str | None = None, duration: int = HOUR
) -> tuple[bytes, int]:
    session = new_id()
    deadline = contracts.chain.now() + duration
    contracts.escrow(requestor).open_session(session, amount, deadline, token=token)
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


# ---------------------------------------------------------------------------- opening


def test_open_session_records_the_deposit_and_holds_it(contracts, requestor):
    before = contract_balance(contracts)
    session, deadline = open_session(contracts, requestor)
    state = contracts.escrow().session(session)
    assert (state.requestor, state.token, state.deposited, state.paid_out, state.deadline, state.closed) == (
        requestor.address,
        NATIVE,
        DEPOSIT,
        0,
        deadline,
        False,
    )
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
    with pytest.raises(WrongNativeValue):
        send(contracts.chain, requestor, f.openSession(new_id(), NATIVE, 2, later), value=1)
    with pytest.raises(AmountTooLarge):
        send(contracts.chain, requestor, f.openSession(new_id(), contracts.token_address, 2**96, later))


def test_client_refuses_bad_input_before_sending(contracts, requestor):
    escrow = contracts.escrow(requestor)
    nonce = contracts.chain.w3.eth.get_transaction_count(requestor.address)
    now = contracts.chain.now()
    session, _ = open_session(contracts, requestor)
    nonce += 1
    for bad in (
        lambda: escrow.open_session(new_id(), 0, now + HOUR),
        lambda: escrow.open_session(new_id(), -5, now + HOUR),
        lambda: escrow.open_session(new_id(), 1.5, now + HOUR),
        lambda: escrow.open_session(new_id(), 10, now - 1),
        lambda: escrow.open_session(session, 10, now + HOUR),
        lambda: escrow.open_session(b"short", 10, now + HOUR),
        lambda: escrow.open_session(new_id(), 10, now + HOUR, token="0x1234"),
        lambda: escrow.settle_graph(session, new_id(), {"not-an-address": 5}),
        lambda: escrow.settle_graph(session, new_id(), {NATIVE: 5}),
        lambda: escrow.top_up(session, 0),
    ):
        with pytest.raises(InvalidInput):
            bad()
    assert contracts.chain.w3.eth.get_transaction_count(requestor.address) == nonce


# ---------------------------------------------------------------------------- top up


def test_top_up_adds_to_the_deposit(contracts, requestor, stranger):
    session, _ = open_session(contracts, requestor)
    contracts.escrow(requestor).top_up(session, 5)
    assert contracts.escrow().session(session).deposited == DEPOSIT + 5
    with pytest.raises(NotRequestor):
        contracts.escrow(stranger).top_up(session, 5)


def test_top_up_after_the_deadline_is_refused(contracts, requestor):
    session, deadline = open_session(contracts, requestor)
    contracts.chain.travel_to(deadline + 1)
    with pytest.raises(DeadlinePassed):
        contracts.escrow(requestor).top_up(session, 5)


# ---------------------------------------------------------------------------- settling


def test_settle_credits_each_provider_and_records_the_result_root(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    graph, root = new_id(), new_id()
    payouts = {providers[0].address: 300, providers[1].address: 200, providers[2].address: 0}
    contracts.escrow(requestor).settle_graph(session, graph, payouts, root)
    escrow = contracts.escrow()
    assert escrow.paid(session, providers[0].address) == 300
    assert escrow.paid(session, providers[1].address) == 200
    assert escrow.paid(session, providers[2].address) == 0
    assert escrow.balance_of(providers[0].address) == 300
    assert escrow.session(session).paid_out == 500
    assert escrow.is_graph_settled(session, graph)
    [settled] = escrow.events("GraphSettled", sessionId=session)
    assert (settled["graphId"], settled["total"], settled["resultRoot"]) == (graph, 500, root)
    paid_events = escrow.events("Paid", sessionId=session)
    assert {(e["provider"], e["amount"]) for e in paid_events} == {
        (providers[0].address, 300),
        (providers[1].address, 200),
    }


def test_settle_above_the_deposit_reverts_and_changes_nothing(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor, amount=1000)
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, new_id(), {providers[0].address: 600})
    with pytest.raises(InsufficientDeposit) as raised:
        escrow.settle_graph(session, new_id(), {providers[0].address: 300, providers[1].address: 101})
    assert raised.value.fields["remaining"] == 400
    assert escrow.session(session).paid_out == 600
    assert escrow.paid(session, providers[1].address) == 0


def test_a_graph_settles_once(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    graph = new_id()
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, graph, {providers[0].address: 10})
    with pytest.raises(GraphAlreadySettled):
        escrow.settle_graph(session, graph, {providers[0].address: 10})
    assert escrow.paid(session, providers[0].address) == 10


def test_only_the_requestor_settles(contracts, requestor, providers, stranger):
    session, _ = open_session(contracts, requestor)
    for outsider in (stranger, providers[0]):
        with pytest.raises(NotRequestor):
            contracts.escrow(outsider).settle_graph(session, new_id(), {outsider.address: 10})
    assert contracts.escrow().session(session).paid_out == 0


def test_settle_rejects_malformed_payouts(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    f = contracts.escrow().contract.functions
    with pytest.raises(LengthMismatch):
        send(contracts.chain, requestor, f.settleGraph(session, new_id(), [providers[0].address], [1, 2], new_id()))
    with pytest.raises(InvalidProvider):
        send(contracts.chain, requestor, f.settleGraph(session, new_id(), [NATIVE], [1], new_id()))
    with pytest.raises(SessionNotFound):
        contracts.escrow(requestor).settle_graph(new_id(), new_id(), {providers[0].address: 1})


def test_settle_is_accepted_until_the_claim_window_ends(contracts, requestor, providers):
    session, deadline = open_session(contracts, requestor)
    escrow = contracts.escrow(requestor)
    p = providers[0].address
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW)
    escrow.settle_graph(session, new_id(), {p: 1})
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW + 1)
    late = escrow.contract.functions.settleGraph(session, new_id(), [p], [1], new_id())
    assert send_unestimated(contracts.chain, requestor, late).status == 0
    with pytest.raises(ClaimWindowOver):
        escrow.settle_graph(session, new_id(), {p: 1})
    assert escrow.paid(session, p) == 1


# ---------------------------------------------------------------------------- vouchers and claims


def test_python_vouchers_hash_and_recover_like_the_contract(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    escrow = contracts.escrow(requestor)
    voucher = escrow.sign_voucher(session, providers[0].address, 1234)
    assert escrow.domain == EscrowDomain(contracts.chain.w3.eth.chain_id, contracts.escrow_address)
    assert voucher.signer(escrow.domain) == requestor.address
    assert Voucher.from_json(voucher.to_json()) == voucher
    # The digest the contract checks is the EIP-712 hash of exactly this typed data.
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    from golem_jupyter.chain.vouchers import VOUCHER_TYPES

    signable = encode_typed_data(escrow.domain.as_dict(), VOUCHER_TYPES, voucher.message())
    assert escrow.voucher_digest(voucher) == _hash_eip191_message(signable)


def test_claim_raises_paid_to_the_voucher_amount(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    p = providers[0]
    contracts.escrow(requestor).settle_graph(session, new_id(), {p.address: 100})
    voucher = contracts.escrow(requestor).sign_voucher(session, p.address, 250)
    contracts.escrow(p).claim(voucher)
    escrow = contracts.escrow()
    assert escrow.paid(session, p.address) == 250
    assert escrow.balance_of(p.address) == 250
    assert escrow.session(session).paid_out == 250
    [claimed] = escrow.events("Claimed", sessionId=session)
    assert (claimed["provider"], claimed["amount"]) == (p.address, 150)


def test_replayed_or_older_vouchers_credit_nothing(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    p = providers[0]
    escrow = contracts.escrow(requestor)
    old = escrow.sign_voucher(session, p.address, 100)
    new = escrow.sign_voucher(session, p.address, 200)
    contracts.escrow(p).claim(new)
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(new)
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(old)
    # A voucher already covered by a settlement credits nothing either.
    escrow.settle_graph(session, new_id(), {p.address: 50})
    with pytest.raises(VoucherAlreadyPaid):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 250))
    assert contracts.escrow().paid(session, p.address) == 250
    assert contracts.escrow().balance_of(p.address) == 250


def test_vouchers_not_signed_by_the_requestor_are_rejected(contracts, requestor, providers, stranger):
    session, _ = open_session(contracts, requestor)
    p = providers[0]
    escrow = contracts.escrow(requestor)
    forged = sign_voucher(stranger.account, escrow.domain, session, p.address, 100)
    self_signed = sign_voucher(p.account, escrow.domain, session, p.address, 100)
    for voucher in (forged, self_signed):
        with pytest.raises(InvalidVoucherSignature):
            contracts.escrow(p).claim(voucher)
    assert contracts.escrow().paid(session, p.address) == 0


def test_vouchers_for_another_session_chain_contract_or_provider_are_rejected(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor)
    other_session, _ = open_session(contracts, requestor)
    p, q = providers[0], providers[1]
    domain = contracts.escrow().domain
    f = contracts.escrow().contract.functions

    def claim_with(
        signer_domain: EscrowDomain, signed_session: bytes, claim_session: bytes, caller: Wallet, signed_for: Wallet
    ):
        voucher = sign_voucher(requestor.account, signer_domain, signed_session, signed_for.address, 100)
        send(contracts.chain, caller, f.claim(claim_session, 100, voucher.signature))

    other_chain = EscrowDomain(domain.chain_id + 1, domain.verifying_contract)
    other_contract = EscrowDomain(domain.chain_id, contracts.registry_address)
    cases = [
        (domain, other_session, session, p, p),  # signed for another session
        (other_chain, session, session, p, p),  # another chain id
        (other_contract, session, session, p, p),  # another escrow contract
        (domain, session, session, q, p),  # a voucher for p claimed by q
    ]
    for case in cases:
        with pytest.raises(InvalidVoucherSignature):
            claim_with(*case)
    with pytest.raises(InvalidVoucherSignature):
        send(contracts.chain, p, f.claim(session, 100, b"\x01" * 64))  # malformed signature
    assert contracts.escrow().paid(session, p.address) == 0
    assert contracts.escrow().paid(session, q.address) == 0


def test_claim_above_the_remainder_credits_only_the_remainder(contracts, requestor, providers):
    session, _ = open_session(contracts, requestor, amount=1000)
    p, q = providers[0], providers[1]
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, new_id(), {q.address: 700})
    contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 500))
    assert contracts.escrow().paid(session, p.address) == 300
    assert contracts.escrow().session(session).remaining == 0
    with pytest.raises(DepositExhausted):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 600))
    assert contracts.escrow().balance_of(p.address) == 300


def test_claims_end_exactly_at_deadline_plus_claim_window(contracts, requestor, providers):
    session, deadline = open_session(contracts, requestor)
    p = providers[0]
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


# ---------------------------------------------------------------------------- closing and refunds


def test_close_before_the_claim_window_ends_reverts(contracts, requestor, stranger):
    session, deadline = open_session(contracts, requestor)
    with pytest.raises(RefundNotYetAvailable):
        contracts.escrow(stranger).close_session(session)
    contracts.chain.set_next_timestamp(deadline + CLAIM_WINDOW)
    call = contracts.escrow().contract.functions.closeSession(session)
    assert send_unestimated(contracts.chain, stranger, call).status == 0  # mined at the last claim second
    assert not contracts.escrow().session(session).closed


def test_close_after_the_window_refunds_exactly_the_remainder(contracts, requestor, providers, stranger):
    session, deadline = open_session(contracts, requestor)
    p = providers[0]
    escrow = contracts.escrow(requestor)
    escrow.settle_graph(session, new_id(), {p.address: 400})
    contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 500))
    w3 = contracts.chain.w3
    before, held = w3.eth.get_balance(requestor.address), contract_balance(contracts)
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    receipt = contracts.escrow(stranger).close_session(session)  # anyone may close; the refund goes to the requestor
    assert w3.eth.get_balance(requestor.address) == before + DEPOSIT - 500
    assert contract_balance(contracts) == held - (DEPOSIT - 500)
    [closed] = escrow.events("SessionClosed", from_block=receipt.block_number, sessionId=session)
    assert closed["refund"] == DEPOSIT - 500
    state = escrow.session(session)
    assert state.closed and state.paid_out == 500
    # Providers keep what they were credited; nothing more can happen in the session.
    assert escrow.balance_of(p.address) == 500
    with pytest.raises(SessionAlreadyClosed):
        contracts.escrow(stranger).close_session(session)
    with pytest.raises(SessionAlreadyClosed):
        contracts.escrow(p).claim(escrow.sign_voucher(session, p.address, 600))
    with pytest.raises(SessionAlreadyClosed):
        escrow.settle_graph(session, new_id(), {p.address: 1})


def test_token_session_refund(contracts, requestor, providers, stranger):
    token = contracts.token_address
    contracts.mint(requestor.address, DEPOSIT)
    session, deadline = open_session(contracts, requestor, token=token)
    contracts.escrow(requestor).settle_graph(session, new_id(), {providers[0].address: 123})
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    contracts.escrow(stranger).close_session(session)
    balance = contracts.token().functions.balanceOf(requestor.address).call()
    assert balance == DEPOSIT - 123
    assert contract_balance(contracts, token) == 123


# ---------------------------------------------------------------------------- withdrawing


def test_withdraw_pays_what_was_credited_once(contracts, requestor, providers):
    p = providers[0]
    for amount in (300, 200):  # credits from two sessions add up
        session, _ = open_session(contracts, requestor)
        contracts.escrow(requestor).settle_graph(session, new_id(), {p.address: amount})
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
    session, _ = open_session(contracts, requestor, token=token)
    p = providers[0]
    contracts.escrow(requestor).settle_graph(session, new_id(), {p.address: 77})
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


def test_reentrant_withdraw_is_refused(contracts, requestor):
    w3 = contracts.chain.w3
    attacker = contracts.deploy_receiver(Wallet.dev(5))
    session, _ = open_session(contracts, requestor)
    contracts.escrow(requestor).settle_graph(session, new_id(), {attacker.address: 1000})
    reentry = _selector_call(contracts, "withdraw", NATIVE)
    send(contracts.chain, Wallet.dev(5), attacker.functions.setReentryCall(reentry))
    held = contract_balance(contracts)
    send(contracts.chain, Wallet.dev(5), attacker.functions.relay(reentry))
    assert attacker.functions.attempts().call() == 1
    assert attacker.functions.reentrySucceeded().call() is False
    guard_error = keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert attacker.functions.reentryRevertData().call()[:4] == guard_error
    assert w3.eth.get_balance(attacker.address) == 1000
    assert contract_balance(contracts) == held - 1000


def test_reentrant_close_is_refused_and_refunds_once(contracts, stranger):
    owner = Wallet.dev(5)
    attacker = contracts.deploy_receiver(owner)
    session = new_id()
    deadline = contracts.chain.now() + HOUR
    open_call = _selector_call(contracts, "openSession", session, NATIVE, 1000, deadline)
    send(contracts.chain, owner, attacker.functions.relay(open_call), value=1000)
    assert contracts.escrow().session(session).requestor == attacker.address
    send(contracts.chain, owner, attacker.functions.setReentryCall(_selector_call(contracts, "closeSession", session)))
    contracts.chain.travel_to(deadline + CLAIM_WINDOW + 1)
    contracts.escrow(stranger).close_session(session)
    assert attacker.functions.reentrySucceeded().call() is False
    assert contracts.chain.w3.eth.get_balance(attacker.address) == 1000


def test_a_requestor_refusing_its_refund_loses_nothing(contracts, stranger):
    owner = Wallet.dev(5)
    attacker = contracts.deploy_receiver(owner)
    session = new_id()
    deadline = contracts.chain.now() + HOUR
    send(
        contracts.chain,
        owner,
        attacker.functions.relay(_selector_call(contracts, "openSession", session, NATIVE, 1000, deadline)),
        value=1000,
    )
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


def test_report_fault_is_recorded_for_reputation(contracts, requestor, providers, stranger):
    session, _ = open_session(contracts, requestor)
    graph, evidence = new_id(), new_id()
    contracts.escrow(requestor).report_fault(session, graph, providers[0].address, evidence)
    [fault] = contracts.escrow().events("FaultReported", provider=providers[0].address)
    assert (fault["sessionId"], fault["graphId"], fault["evidence"]) == (session, graph, evidence)
    with pytest.raises(NotRequestor):
        contracts.escrow(stranger).report_fault(session, graph, providers[0].address, evidence)


def test_unknown_sessions_are_named_in_errors(contracts, providers):
    missing = new_id()
    voucher = Voucher(missing, providers[0].address, 5, b"\x01" * 65)
    with pytest.raises(SessionNotFound, match=missing.hex()):
        contracts.escrow(providers[0]).claim(voucher)
