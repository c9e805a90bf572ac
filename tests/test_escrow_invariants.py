"""Random sequences of escrow operations by random actors, checked against a model.

Hypothesis drives open / topUp / settle / claim / close / withdraw and clock jumps, by
requestors, providers and strangers, in the native currency and an ERC-20. Every operation's
outcome (success, or which custom error) is predicted by a plain Python model of DESIGN.md
section 3, and after every step:

* the escrow's balance of each token == sum of un-refunded session remainders
  + sum of credited-but-not-withdrawn balances;
* every view (sessions, paid, balanceOf) equals the model;
* no provider was ever credited more in a session than the requestor acknowledged owing
  (settlements and signed vouchers), and every actor's token holdings equal exactly what the
  model says it may hold: nobody ends up with more than it was owed or deposited.

Operations within a few seconds of a deadline may land on either side of it (the chain's
clock ticks while transactions are mined); there the model accepts either outcome.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import hypothesis.strategies as st
from conftest import CLAIM_WINDOW, Deployed
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from golem_jupyter.chain import Wallet, sign_voucher
from golem_jupyter.chain.errors import ContractError
from golem_jupyter.chain.types import NATIVE, new_id

ACTORS = [Wallet.dev(i) for i in (0, 4, 1, 2, 3, 9)]  # two requestors, three providers, a stranger
PROVIDERS = ACTORS[2:5]
MINTED = 10**15
FUZZ = 5  # seconds around a deadline where either outcome is accepted
TIME_STEPS = [0, 60, 600, 3000, CLAIM_WINDOW - 600, CLAIM_WINDOW + 3600]

PROFILE = settings(
    max_examples=int(os.environ.get("GOLEM_INVARIANT_EXAMPLES", "15")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class SessionModel:
    sid: bytes
    requestor: str
    token: str
    deposited: int
    remaining: int
    deadline: int
    closed: bool = False
    graphs: list[bytes] = field(default_factory=list)


def test_escrow_invariants_hold_under_random_operations(contracts: Deployed):
    run_state_machine_as_test(lambda: EscrowMachine(contracts), settings=PROFILE)


class EscrowMachine(RuleBasedStateMachine):
    def __init__(self, contracts: Deployed) -> None:
        super().__init__()
        self.c = contracts
        self.chain = contracts.chain
        self.snapshot = self.chain.snapshot()
        self.token = contracts.token_address
        self.sessions: list[SessionModel] = []
        self.paid: dict[tuple[bytes, str], int] = defaultdict(int)
        self.owed: dict[tuple[bytes, str], int] = defaultdict(int)
        self.credited: dict[tuple[str, str], int] = defaultdict(int)
        self.withdrawn: dict[tuple[str, str], int] = defaultdict(int)
        self.tokens_held: dict[str, int] = {}
        self.escrow_held = {NATIVE: self._escrow_balance(NATIVE), self.token: self._escrow_balance(self.token)}
        for actor in ACTORS:
            contracts.mint(actor.address, MINTED)
            self.tokens_held[actor.address] = self._token_balance(actor.address)
        self.domain = contracts.escrow().domain

    def teardown(self) -> None:
        self.chain.revert(self.snapshot)

    # ------------------------------------------------------------------ helpers

    def _escrow_balance(self, token: str) -> int:
        if token == NATIVE:
            return self.chain.w3.eth.get_balance(self.c.escrow_address)
        return self._token_balance(self.c.escrow_address)

    def _token_balance(self, account: str) -> int:
        return self.c.token().functions.balanceOf(account).call()

    def _now(self) -> int:
        return self.chain.now()

    def _near(self, boundary: int) -> bool:
        return abs(self._now() - boundary) <= FUZZ

    def _attempt(self, expected: str | None, near: str | None, action) -> bool:
        """Run ``action`` and check it succeeded or failed as predicted; returns whether it succeeded.

        ``expected`` is the contract error predicted (None: success). ``near`` is an error the
        chain may or may not give because the call is within FUZZ seconds of a time boundary.
        """
        try:
            action()
        except ContractError as error:
            name = type(error).__name__
            assert name in {expected, near} - {None}, f"unexpected {name}: {error} (expected {expected})"
            return False
        assert expected is None, f"expected {expected}, but it succeeded"
        return True

    def _within_claim_window(self, s: SessionModel) -> tuple[str | None, str | None]:
        """(expected, near) for an operation allowed while ``s`` is open and its claim window runs."""
        window_end = s.deadline + CLAIM_WINDOW
        if s.closed:
            return "SessionAlreadyClosed", None
        if self._near(window_end):
            return None, "ClaimWindowOver"
        if self._now() > window_end:
            return "ClaimWindowOver", None
        return None, None

    def _session(self, index: int) -> SessionModel:
        return self.sessions[index % len(self.sessions)]

    def _account_balance(self, account: str, token: str) -> int:
        return self.credited[account, token] - self.withdrawn[account, token]

    # ------------------------------------------------------------------ rules

    @rule(
        actor=st.sampled_from(ACTORS),
        use_token=st.booleans(),
        amount=st.integers(1, 10**9),
        duration=st.sampled_from([120, 1200, 7200]),
    )
    def open_session(self, actor: Wallet, use_token: bool, amount: int, duration: int) -> None:
        token = self.token if use_token else NATIVE
        sid = new_id()
        deadline = self._now() + duration
        self.c.escrow(actor).open_session(sid, amount, deadline, token=None if token == NATIVE else token)
        self.sessions.append(SessionModel(sid, actor.address, token, amount, amount, deadline))
        self.escrow_held[token] += amount
        if token != NATIVE:
            self.tokens_held[actor.address] -= amount

    @precondition(lambda self: self.sessions)
    @rule(actor=st.sampled_from(ACTORS), index=st.integers(0, 50), amount=st.integers(1, 10**6))
    def top_up(self, actor: Wallet, index: int, amount: int) -> None:
        s = self._session(index)
        expected = near = None
        if actor.address != s.requestor:
            expected = "NotRequestor"
        elif s.closed:
            expected = "SessionAlreadyClosed"
        elif self._near(s.deadline):
            near = "DeadlinePassed"
        elif self._now() > s.deadline:
            expected = "DeadlinePassed"
        if self._attempt(expected, near, lambda: self.c.escrow(actor).top_up(s.sid, amount)):
            s.deposited += amount
            s.remaining += amount
            self.escrow_held[s.token] += amount
            if s.token != NATIVE:
                self.tokens_held[actor.address] -= amount

    @precondition(lambda self: self.sessions)
    @rule(
        actor=st.sampled_from(ACTORS),
        index=st.integers(0, 50),
        reuse_graph=st.booleans(),
        payouts=st.lists(st.tuples(st.sampled_from(PROVIDERS), st.integers(0, 3 * 10**8)), max_size=4),
    )
    def settle(self, actor: Wallet, index: int, reuse_graph: bool, payouts: list[tuple[Wallet, int]]) -> None:
        s = self._session(index)
        graph = s.graphs[index % len(s.graphs)] if reuse_graph and s.graphs else new_id()
        total = sum(a for _, a in payouts)
        if actor.address != s.requestor:
            expected, near = "NotRequestor", None
        else:
            expected, near = self._within_claim_window(s)
        if expected is None and graph in s.graphs:
            expected = "GraphAlreadySettled"
        elif expected is None and total > s.remaining:
            expected = "InsufficientDeposit"
        pairs = [(p.address, a) for p, a in payouts]
        succeeded = self._attempt(expected, near, lambda: self.c.escrow(actor).settle_graph(s.sid, graph, pairs))
        if succeeded:
            s.graphs.append(graph)
            s.remaining -= total
            for provider, amount in pairs:
                if amount:
                    self.paid[s.sid, provider] += amount
                    self.owed[s.sid, provider] = max(self.owed[s.sid, provider], self.paid[s.sid, provider])
                    self.credited[provider, s.token] += amount

    @precondition(lambda self: self.sessions)
    @rule(
        provider=st.sampled_from(PROVIDERS),
        index=st.integers(0, 50),
        delta=st.integers(-100, 4 * 10**8),
        forged=st.booleans(),
    )
    def claim(self, provider: Wallet, index: int, delta: int, forged: bool) -> None:
        s = self._session(index)
        already = self.paid[s.sid, provider.address]
        cumulative = max(0, already + delta)
        signer = next(a for a in ACTORS if (a.address != s.requestor) == forged)
        voucher = sign_voucher(signer.account, self.domain, s.sid, provider.address, cumulative)
        if not forged:
            self.owed[s.sid, provider.address] = max(self.owed[s.sid, provider.address], cumulative)
        expected, near = self._within_claim_window(s)
        if expected is None:
            if forged:
                expected = "InvalidVoucherSignature"
            elif cumulative <= already:
                expected = "VoucherAlreadyPaid"
            elif s.remaining == 0:
                expected = "DepositExhausted"
        if self._attempt(expected, near, lambda: self.c.escrow(provider).claim(voucher)):
            credit = min(cumulative - already, s.remaining)
            s.remaining -= credit
            self.paid[s.sid, provider.address] += credit
            self.credited[provider.address, s.token] += credit

    @rule(step=st.sampled_from(TIME_STEPS))
    def let_time_pass(self, step: int) -> None:
        if step:
            self.chain.travel_to(self._now() + step)

    @precondition(lambda self: self.sessions)
    @rule(actor=st.sampled_from(ACTORS), index=st.integers(0, 50))
    def close(self, actor: Wallet, index: int) -> None:
        s = self._session(index)
        window_end = s.deadline + CLAIM_WINDOW
        expected = near = None
        if s.closed:
            expected = "SessionAlreadyClosed"
        elif self._near(window_end):
            near = "RefundNotYetAvailable"
        elif self._now() <= window_end:
            expected = "RefundNotYetAvailable"
        if self._attempt(expected, near, lambda: self.c.escrow(actor).close_session(s.sid)):
            s.closed = True
            self.escrow_held[s.token] -= s.remaining
            if s.token != NATIVE:
                self.tokens_held[s.requestor] += s.remaining

    @rule(actor=st.sampled_from(ACTORS), use_token=st.booleans())
    def withdraw(self, actor: Wallet, use_token: bool) -> None:
        token = self.token if use_token else NATIVE
        amount = self._account_balance(actor.address, token)
        expected = None if amount else "NothingToWithdraw"
        if self._attempt(expected, None, lambda: self.c.escrow(actor).withdraw(None if token == NATIVE else token)):
            self.withdrawn[actor.address, token] += amount
            self.escrow_held[token] -= amount
            if token != NATIVE:
                self.tokens_held[actor.address] += amount

    # ------------------------------------------------------------------ invariants

    @invariant()
    def escrow_holds_exactly_remainders_plus_credits(self) -> None:
        for token in (NATIVE, self.token):
            remainders = sum(s.remaining for s in self.sessions if s.token == token and not s.closed)
            credited = sum(self._account_balance(a.address, token) for a in ACTORS)
            assert self._escrow_balance(token) == remainders + credited == self.escrow_held[token]

    @invariant()
    def views_match_the_model(self) -> None:
        escrow = self.c.escrow()
        for s in self.sessions:
            state = escrow.session(s.sid)
            assert (state.deposited, state.remaining, state.closed) == (s.deposited, s.remaining, s.closed)
        for (sid, provider), amount in self.paid.items():
            assert escrow.paid(sid, provider) == amount
        for actor in ACTORS:
            for token in (NATIVE, self.token):
                assert escrow.balance_of(actor.address, token) == self._account_balance(actor.address, token)

    @invariant()
    def nobody_holds_more_than_owed(self) -> None:
        for key, amount in self.paid.items():
            assert amount <= self.owed[key]
        for s in self.sessions:
            assert sum(v for (sid, _), v in self.paid.items() if sid == s.sid) <= s.deposited
        for actor in ACTORS:
            assert self._token_balance(actor.address) == self.tokens_held[actor.address]
