"""Random sequences of escrow (version 2) operations by random actors, checked against a model.

Hypothesis drives open / topUp / allocate / settle / claim / release / reclaim / close (the
cooperative close and the one after the claim window) / withdraw and clock jumps, by requestors,
providers and strangers, in the native currency and an ERC-20. Every operation's outcome (success,
or which custom error) is predicted by a plain Python model of DESIGN.md section 3, and after every
step:

* the escrow's balance of each token == sum over sessions not closed of (unallocated + the unpaid
  part of each open allocation) + sum of credited-but-not-withdrawn balances;
* per session, deposited - reclaimed - paidOut == unallocated + the unpaid part of each open
  allocation, in the model and in the contract's views;
* every view (sessions, reclaimed, allocations, paid, balanceOf) equals the model;
* a provider's allocation is never taken by anyone but that provider, checked on the contract's
  views against the previous step's (independently of the model's arithmetic): what an
  allocation paid never shrinks, its size only shrinks by a release its provider signed, an
  account's credit only shrinks by its own withdraw, and every voucher a provider accepted (never
  above the allocation it saw on-chain) stays backed: paid plus what is left of the allocation
  covers it until the provider releases or the claim window is over;
* everything credited to an account came out of that account's own allocations, never more than
  was allocated to it, and every actor's token holdings equal exactly what the model says.

Requestors also allocate to themselves and to strangers and settle to them (the drain attack of
issue 17), and providers accept vouchers, claim them, and sign releases.

Operations within a few seconds of a deadline may land on either side of it (the chain's clock
ticks while transactions are mined); there the model accepts either outcome, and a close (whose
refund differs on the two sides) is not attempted.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import hypothesis.strategies as st
from conftest import CLAIM_WINDOW, Deployed
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from golem_jupyter.chain import Wallet, sign_voucher
from golem_jupyter.chain.errors import ContractError
from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.chain.vouchers import Release, sign_release

ACTORS = [Wallet.dev(i) for i in (0, 4, 1, 2, 3, 9)]  # two requestors, three providers, a stranger
PROVIDERS = ACTORS[2:5]
MINTED = 10**15
FUZZ = 5  # seconds around a deadline where either outcome is accepted
TIME_STEPS = [0, 60, 600, 3000, CLAIM_WINDOW - 600, CLAIM_WINDOW + 3600]
AMOUNT = st.integers(1, 3 * 10**8)
MAX_SESSIONS = 4  # few sessions, so that operations meet in them

PROFILE = settings(
    max_examples=int(os.environ.get("GOLEM_INVARIANT_EXAMPLES", "15")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class AllocationModel:
    allocated: int = 0
    paid: int = 0
    released: bool = False

    @property
    def exists(self) -> bool:
        return self.allocated > 0 or self.released

    @property
    def unpaid(self) -> int:
        return 0 if self.released else self.allocated - self.paid


@dataclass
class SessionModel:
    sid: bytes
    requestor: str
    token: str
    deposited: int
    unallocated: int
    deadline: int
    reclaimed: int = 0
    paid_out: int = 0
    next_seq: int = 0
    closed: bool = False
    closed_after_window: bool = False
    allocations: dict[str, AllocationModel] = field(default_factory=lambda: defaultdict(AllocationModel))

    @property
    def open_allocations(self) -> int:
        return sum(1 for a in self.allocations.values() if a.allocated > 0 and not a.released)

    @property
    def held(self) -> int:
        """What the escrow holds for this session: unallocated plus open allocations' unpaid parts."""
        return 0 if self.closed else self.unallocated + sum(a.unpaid for a in self.allocations.values())


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
        self.credited: dict[tuple[str, str], int] = defaultdict(int)
        self.withdrawn: dict[tuple[str, str], int] = defaultdict(int)
        self.tokens_held: dict[str, int] = {}
        self.escrow_held = {NATIVE: self._escrow_balance(NATIVE), self.token: self._escrow_balance(self.token)}
        for actor in ACTORS:
            contracts.mint(actor.address, MINTED)
            self.tokens_held[actor.address] = self._token_balance(actor.address)
        self.domain = contracts.escrow().domain
        # (session, provider) -> the largest voucher the provider accepted (it serves only up to
        # what its allocation backs on-chain).
        self.accepted: dict[tuple[bytes, str], int] = {}
        # The contract's views after the previous step, and what this step's actors signed or did.
        self.seen_allocations: dict[tuple[bytes, str], tuple[int, int, bool]] = {}
        self.seen_balances: dict[tuple[str, str], int] = {}
        self.released_by_provider: set[tuple[bytes, str]] = set()
        self.withdrew: set[tuple[str, str]] = set()

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

    def _requestor_only(self, actor: Wallet, s: SessionModel) -> str | None:
        if actor.address != s.requestor:
            return "NotRequestor"
        return "SessionAlreadyClosed" if s.closed else None

    def _session(self, index: int) -> SessionModel:
        """Mostly a session still open (steps on closed ones only meet SessionAlreadyClosed)."""
        open_ = [s for s in self.sessions if not s.closed]
        if open_ and index % 6:
            return open_[index % len(open_)]
        return self.sessions[index % len(self.sessions)]

    def _sessions_with(self, provider: str) -> list[SessionModel]:
        return [s for s in self.sessions if provider in s.allocations]

    def _account_balance(self, account: str, token: str) -> int:
        return self.credited[account, token] - self.withdrawn[account, token]

    def _open_problem(self, a: AllocationModel) -> str | None:
        """The error for drawing on allocation ``a``, if it is not open."""
        if a.released:
            return "AllocationReleased"
        return None if a.allocated else "NoAllocation"

    def _credit(self, s: SessionModel, provider: str, amount: int) -> None:
        s.allocations[provider].paid += amount
        s.paid_out += amount
        self.credited[provider, s.token] += amount

    def _refund(self, s: SessionModel, amount: int) -> None:
        self.escrow_held[s.token] -= amount
        if s.token != NATIVE:
            self.tokens_held[s.requestor] += amount

    # ------------------------------------------------------------------ rules

    @initialize(native=st.integers(1, 10**9), in_token=st.integers(1, 10**9))
    def two_sessions(self, native: int, in_token: int) -> None:
        """Every run starts with a session of each requestor, one in each token, so that its steps
        act on sessions rather than on an empty escrow."""
        self.open_session(ACTORS[0], False, native, 7200)
        self.open_session(ACTORS[1], True, in_token, 7200)

    @precondition(lambda self: len(self.sessions) < MAX_SESSIONS)
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
    @rule(data=st.data(), index=st.integers(0, 50), amount=st.integers(1, 10**6))
    def top_up(self, data, index: int, amount: int) -> None:
        s = self._session(index)
        actor = self._caller(data, s)
        expected, near = self._requestor_only(actor, s), None
        if expected is None:
            if self._near(s.deadline):
                near = "DeadlinePassed"
            elif self._now() > s.deadline:
                expected = "DeadlinePassed"
        if self._attempt(expected, near, lambda: self.c.escrow(actor).top_up(s.sid, amount)):
            s.deposited += amount
            s.unallocated += amount
            self.escrow_held[s.token] += amount
            if s.token != NATIVE:
                self.tokens_held[actor.address] -= amount

    def _caller(self, data, s: SessionModel) -> Wallet:
        """Mostly the session's requestor (so that requestor-only rules get past the first check)."""
        if data.draw(st.integers(0, 5), label="outsider") == 0:
            return data.draw(st.sampled_from(ACTORS), label="caller")
        return next(x for x in ACTORS if x.address == s.requestor)

    def _draw_amount(self, data, left: int) -> int:
        """An amount around what is ``left`` (all of it, one wei more, a part), or any amount."""
        kind = data.draw(st.sampled_from(["part", "part", "all", "over", "any", "zero"]), label="kind")
        if kind == "part":
            return data.draw(st.integers(0, max(left, 0)), label="amount")
        if kind == "all":
            return max(left, 0)
        if kind == "over":
            return max(left, 0) + 1
        if kind == "zero":
            return 0
        return data.draw(AMOUNT, label="amount")

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), index=st.integers(0, 50), size=st.integers(1, 3))
    def allocate(self, data, index: int, size: int) -> None:
        """The requestor (or an outsider) allocates to providers, to itself or to a stranger."""
        s = self._session(index)
        actor = self._caller(data, s)
        pairs: list[tuple[str, int]] = []
        left = s.unallocated
        for _ in range(size):
            who = data.draw(st.sampled_from(ACTORS), label="to").address
            amount = max(1, self._draw_amount(data, left // size if data.draw(st.booleans()) else left))
            pairs.append((who, amount))
            left -= amount
        expected = "NotRequestor" if actor.address != s.requestor else None
        total = 0
        for provider, amount in pairs:  # the contract's checks, in its order
            if expected is not None:
                break
            total += amount
            if total > s.unallocated:
                expected = "SessionAlreadyClosed" if s.closed else "InsufficientDeposit"
            elif s.allocations[provider].released:
                expected = "AllocationReleased"
        if self._attempt(expected, None, lambda: self.c.escrow(actor).allocate(s.sid, pairs)):
            for provider, amount in pairs:
                s.allocations[provider].allocated += amount
            s.unallocated -= total

    @precondition(lambda self: self.sessions)
    @rule(
        data=st.data(),
        index=st.integers(0, 50),
        seq_offset=st.sampled_from([0, 0, 0, 0, -1, 1]),
        size=st.integers(0, 4),
    )
    def settle(self, data, index: int, seq_offset: int, size: int) -> None:
        """The requestor settles a graph, paying mostly the holders of allocations (up to all that
        is left of them, or one wei more), sometimes anyone, itself included."""
        s = self._session(index)
        actor = self._caller(data, s)
        seq = max(0, s.next_seq + seq_offset)
        holders = sorted(p for p, a in s.allocations.items() if a.allocated)
        drawn: dict[str, int] = defaultdict(int)
        pairs: list[tuple[str, int]] = []
        for _ in range(size):
            if holders and data.draw(st.integers(0, 4), label="anyone") != 0:
                who = data.draw(st.sampled_from(holders), label="holder")
            else:
                who = data.draw(st.sampled_from(ACTORS), label="to").address
            amount = self._draw_amount(data, s.allocations.get(who, AllocationModel()).unpaid - drawn[who])
            pairs.append((who, amount))
            drawn[who] += amount
        if actor.address != s.requestor:
            expected, near = "NotRequestor", None
        else:
            expected, near = self._within_claim_window(s)
        if expected is None:
            if seq < s.next_seq:
                expected = "GraphAlreadySettled"
            elif seq > s.next_seq:
                expected = "GraphOutOfOrder"
        drawn.clear()
        for provider, amount in pairs:  # the contract's checks, in its order
            if expected is not None:
                break
            if amount == 0:
                continue
            a = s.allocations[provider]
            expected = self._open_problem(a)
            if expected is None and amount > a.unpaid - drawn[provider]:
                expected = "AllocationExceeded"
            drawn[provider] += amount
        graph = new_id()
        if self._attempt(expected, near, lambda: self.c.escrow(actor).settle_graph(s.sid, seq, graph, pairs)):
            s.next_seq += 1
            for provider, amount in pairs:
                if amount:
                    self._credit(s, provider, amount)

    def _drainable(self) -> list[tuple[SessionModel, str]]:
        return [
            (s, p)
            for s in self.sessions
            if not s.closed and self._now() < s.deadline + CLAIM_WINDOW - FUZZ
            for p, a in s.allocations.items()
            if a.unpaid and p != s.requestor
        ]

    @precondition(lambda self: self._drainable())
    @rule(data=st.data())
    def drain(self, data) -> None:
        """The drain attack of issue 17: the requestor tries to take a provider's unpaid allocation:
        settle it one wei beyond, pay itself what the provider holds, release it with its own
        signature, close the session. Each is refused; then it pays itself all of its own
        allocation (if any) and withdraws, which must leave the provider's allocation as it was."""
        s, provider = data.draw(st.sampled_from(self._drainable()), label="victim")
        a = s.allocations[provider]
        requestor = next(x for x in ACTORS if x.address == s.requestor)
        escrow = self.c.escrow(requestor)
        own = s.allocations.get(requestor.address, AllocationModel())
        over = {provider: a.unpaid + 1}
        steal = {requestor.address: own.unpaid + a.unpaid}
        for payouts, error in ((over, "AllocationExceeded"), (steal, self._open_problem(own) or "AllocationExceeded")):
            self._attempt(error, None, lambda p=payouts: escrow.settle_graph(s.sid, s.next_seq, new_id(), p))
        forged = Release(s.sid, provider, a.paid, sign_release(requestor.account, self.domain, s.sid, a.paid).signature)
        self._attempt("InvalidReleaseSignature", None, lambda: escrow.release(forged))
        self._attempt("AllocationsStillOpen", None, lambda: escrow.close_session(s.sid))
        if own.unpaid:
            escrow.settle_graph(s.sid, s.next_seq, new_id(), {requestor.address: own.unpaid})
            s.next_seq += 1
            self._credit(s, requestor.address, own.unpaid)

    @precondition(lambda self: self.sessions)
    @rule(provider=st.sampled_from(PROVIDERS), index=st.integers(0, 50), fraction=st.floats(0, 1))
    def accept_voucher(self, provider: Wallet, index: int, fraction: float) -> None:
        """The requestor signs ``provider`` a voucher, which it accepts (and works for) only as far as
        the allocation it reads on-chain backs it."""
        s = self._session(index)
        allocation = self.c.escrow().allocation(s.sid, provider.address)
        if s.closed or allocation.released or not allocation.allocated:
            return
        amount = allocation.paid + int((allocation.allocated - allocation.paid) * fraction)
        key = (s.sid, provider.address)
        self.accepted[key] = max(self.accepted.get(key, 0), amount)

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def claim_accepted_voucher(self, data) -> None:
        """A provider claims the largest voucher it accepted: it gets all of it, whatever the
        requestor did since, unless it released the allocation or let the claim window pass."""
        sid, address = data.draw(st.sampled_from(sorted(self.accepted)))
        s = next(x for x in self.sessions if x.sid == sid)
        provider = next(w for w in PROVIDERS if w.address == address)
        a = s.allocations[address]
        amount = self.accepted[sid, address]
        requestor = next(x for x in ACTORS if x.address == s.requestor)
        voucher = sign_voucher(requestor.account, self.domain, sid, address, amount)
        expected, near = self._within_claim_window(s)
        if expected is None:
            if a.released:
                expected = "AllocationReleased"
            elif amount <= a.paid:
                expected = "VoucherAlreadyPaid"
        if self._attempt(expected, near, lambda: self.c.escrow(provider).claim(voucher)):
            assert amount - a.paid <= a.unpaid, "an accepted voucher is no longer backed by its allocation"
            self._credit(s, address, amount - a.paid)
            assert a.paid == amount

    @precondition(lambda self: self.sessions)
    @rule(
        provider=st.sampled_from(PROVIDERS),
        index=st.integers(0, 50),
        delta=st.integers(-100, 4 * 10**8),
        forged=st.sampled_from([False, False, False, True]),
    )
    def claim(self, provider: Wallet, index: int, delta: int, forged: bool) -> None:
        s = self._session(index)
        a = s.allocations[provider.address]
        cumulative = max(0, a.paid + delta)
        signer = next(x for x in ACTORS if (x.address != s.requestor) == forged)
        voucher = sign_voucher(signer.account, self.domain, s.sid, provider.address, cumulative)
        expected, near = self._within_claim_window(s)
        if expected is None:
            if forged:
                expected = "InvalidVoucherSignature"
            elif (problem := self._open_problem(a)) is not None:
                expected = problem
            elif cumulative <= a.paid:
                expected = "VoucherAlreadyPaid"
            elif a.unpaid == 0:
                expected = "AllocationExhausted"
        if self._attempt(expected, near, lambda: self.c.escrow(provider).claim(voucher)):
            self._credit(s, provider.address, min(cumulative - a.paid, a.unpaid))

    @precondition(lambda self: self.sessions)
    @rule(
        data=st.data(),
        submitter=st.sampled_from(ACTORS),
        index=st.integers(0, 50),
        final=st.one_of(st.sampled_from(["paid", "allocated"]), st.integers(-3, 4 * 10**8)),
        forged=st.sampled_from([False, False, False, True]),
    )
    def release(self, data, submitter: Wallet, index: int, final, forged: bool) -> None:
        """Someone submits a release, mostly one an allocation's holder signed."""
        s = self._session(index)
        holders = [x for x in ACTORS if s.allocations.get(x.address, AllocationModel()).unpaid]
        if holders and data.draw(st.integers(0, 4), label="anyone") != 0:
            provider = data.draw(st.sampled_from(holders), label="holder")
        else:
            provider = data.draw(st.sampled_from(ACTORS), label="provider")
        a = s.allocations[provider.address]
        if final == "paid":
            final_amount = a.paid
        elif final == "allocated":
            final_amount = a.allocated
        else:
            final_amount = max(0, a.paid + final)
        signer = next(x for x in ACTORS if x.address != provider.address) if forged else provider
        signature = sign_release(signer.account, self.domain, s.sid, final_amount).signature
        release = Release(s.sid, provider.address, final_amount, signature)
        expected, near = self._within_claim_window(s)
        if expected is None:
            if forged:
                expected = "InvalidReleaseSignature"
            elif (problem := self._open_problem(a)) is not None:
                expected = problem
            elif not a.paid <= final_amount <= a.allocated:
                expected = "InvalidFinalAmount"
        if self._attempt(expected, near, lambda: self.c.escrow(submitter).release(release)):
            self._release(s, provider.address, final_amount)
            self.released_by_provider.add((s.sid, provider.address))

    def _release(self, s: SessionModel, provider: str, final_amount: int) -> None:
        a = s.allocations[provider]
        returned = a.allocated - final_amount
        self._credit(s, provider, final_amount - a.paid)
        a.allocated, a.released = final_amount, True
        s.unallocated += returned

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), index=st.integers(0, 50))
    def reclaim(self, data, index: int) -> None:
        s = self._session(index)
        actor = self._caller(data, s)
        expected = self._requestor_only(actor, s)
        if expected is None and s.unallocated == 0:
            expected = "NothingToReclaim"
        if self._attempt(expected, None, lambda: self.c.escrow(actor).reclaim(s.sid)):
            self._refund(s, s.unallocated)
            s.reclaimed += s.unallocated
            s.unallocated = 0

    @rule(step=st.sampled_from(TIME_STEPS))
    def let_time_pass(self, step: int) -> None:
        if step:
            self.chain.travel_to(self._now() + step)

    @precondition(lambda self: self.sessions)
    @rule(actor=st.sampled_from(ACTORS), index=st.integers(0, 50))
    def close(self, actor: Wallet, index: int) -> None:
        """The cooperative close (the requestor, no allocation open) or the one after the claim window."""
        s = self._session(index)
        window_end = s.deadline + CLAIM_WINDOW
        if self._near(window_end) and not s.closed:
            return  # either side of the boundary: the refund would differ
        if s.closed:
            expected, refund = "SessionAlreadyClosed", 0
        elif self._now() > window_end:
            expected, refund = None, s.deposited - s.reclaimed - s.paid_out
        elif actor.address != s.requestor:
            expected, refund = "RefundNotYetAvailable", 0
        elif s.open_allocations:
            expected, refund = "AllocationsStillOpen", 0
        else:
            expected, refund = None, s.unallocated
        if self._attempt(expected, None, lambda: self.c.escrow(actor).close_session(s.sid)):
            self._refund(s, refund)
            s.closed, s.unallocated = True, 0
            s.closed_after_window = self._now() > window_end

    @precondition(lambda self: any(s.open_allocations and not s.closed for s in self.sessions))
    @rule(index=st.integers(0, 50), finals=st.lists(st.floats(0, 1), min_size=len(ACTORS), max_size=len(ACTORS)))
    def cooperative_close(self, index: int, finals: list[float]) -> None:
        """Every provider of a session signs a release (final amount anywhere in what it may ask),
        the requestor submits them and closes: the remainder comes back at once."""
        candidates = [s for s in self.sessions if s.open_allocations and not s.closed]
        s = candidates[index % len(candidates)]
        if self._near(s.deadline + CLAIM_WINDOW) or self._now() > s.deadline + CLAIM_WINDOW:
            return
        requestor = next(x for x in ACTORS if x.address == s.requestor)
        escrow = self.c.escrow(requestor)
        holders = [x for x in ACTORS if s.allocations[x.address].allocated and not s.allocations[x.address].released]
        for holder, fraction in zip(holders, finals, strict=False):
            a = s.allocations[holder.address]
            final_amount = a.paid + int((a.allocated - a.paid) * fraction)
            escrow.release(sign_release(holder.account, self.domain, s.sid, final_amount))
            self._release(s, holder.address, final_amount)
            self.released_by_provider.add((s.sid, holder.address))
        assert self.c.escrow().session(s.sid).open_allocations == 0
        refund = s.unallocated
        escrow.close_session(s.sid)
        self._refund(s, refund)
        s.closed, s.unallocated = True, 0

    @precondition(lambda self: any(self.credited[k] > self.withdrawn[k] for k in list(self.credited)))
    @rule(actor=st.sampled_from(ACTORS), use_token=st.booleans())
    def withdraw(self, actor: Wallet, use_token: bool) -> None:
        token = self.token if use_token else NATIVE
        amount = self._account_balance(actor.address, token)
        expected = None if amount else "NothingToWithdraw"
        if self._attempt(expected, None, lambda: self.c.escrow(actor).withdraw(None if token == NATIVE else token)):
            self.withdrawn[actor.address, token] += amount
            self.withdrew.add((actor.address, token))
            self.escrow_held[token] -= amount
            if token != NATIVE:
                self.tokens_held[actor.address] += amount

    # ------------------------------------------------------------------ invariants

    @invariant()
    def everything_adds_up(self) -> None:
        """Reads the contract once per step, then checks each invariant of the module docstring."""
        escrow = self.c.escrow()
        states = {s.sid: escrow.session(s.sid) for s in self.sessions}
        # Every actor in every session, allocated or not: a bug could open an allocation the model never made.
        allocations = {(s.sid, x.address): escrow.allocation(s.sid, x.address) for s in self.sessions for x in ACTORS}
        balances = {(x.address, t): escrow.balance_of(x.address, t) for x in ACTORS for t in (NATIVE, self.token)}
        self._escrow_holds_exactly_what_sessions_and_accounts_hold()
        self._each_session_accounts_for_its_deposit(states, allocations)
        self._views_match_the_model(escrow, states, allocations, balances)
        self._an_allocation_is_only_ever_paid_to_its_provider()
        self._only_its_provider_takes_an_allocation(states, allocations, balances)

    def _escrow_holds_exactly_what_sessions_and_accounts_hold(self) -> None:
        for token in (NATIVE, self.token):
            held = sum(s.held for s in self.sessions if s.token == token)
            credited = sum(self._account_balance(a.address, token) for a in ACTORS)
            assert self._escrow_balance(token) == held + credited == self.escrow_held[token]

    def _each_session_accounts_for_its_deposit(self, states, allocations) -> None:
        for s in self.sessions:
            if s.closed:
                continue
            assert s.deposited - s.reclaimed - s.paid_out == s.held
            state = states[s.sid]
            unpaid = sum(allocations[s.sid, x.address].available for x in ACTORS)
            assert state.deposited - state.reclaimed - state.paid_out == state.unallocated + unpaid

    def _views_match_the_model(self, escrow, states, allocations, balances) -> None:
        for s in self.sessions:
            state = states[s.sid]
            assert (state.deposited, state.paid_out, state.unallocated, state.reclaimed) == (
                s.deposited,
                s.paid_out,
                s.unallocated,
                s.reclaimed,
            )
            assert (state.next_seq, state.open_allocations, state.closed) == (s.next_seq, s.open_allocations, s.closed)
            for x in ACTORS:
                a = s.allocations.get(x.address, AllocationModel())
                on_chain = allocations[s.sid, x.address]
                assert (on_chain.allocated, on_chain.paid, on_chain.released) == (a.allocated, a.paid, a.released)
        if self.sessions:  # paid() is allocations().paid: checked on the newest session
            s = self.sessions[-1]
            for provider in PROVIDERS:
                assert (
                    escrow.paid(s.sid, provider.address) == s.allocations.get(provider.address, AllocationModel()).paid
                )
        for actor in ACTORS:
            for token in (NATIVE, self.token):
                assert balances[actor.address, token] == self._account_balance(actor.address, token)

    def _an_allocation_is_only_ever_paid_to_its_provider(self) -> None:
        for actor in ACTORS:
            for token in (NATIVE, self.token):
                own = [s.allocations[actor.address] for s in self._sessions_with(actor.address) if s.token == token]
                # Every wei credited to an account was paid out of that account's own allocations ...
                assert self.credited[actor.address, token] == sum(a.paid for a in own)
        for s in self.sessions:
            for a in s.allocations.values():
                assert 0 <= a.paid <= a.allocated  # ... never more than was allocated to it
            assert s.paid_out == sum(a.paid for a in s.allocations.values()) <= s.deposited - s.reclaimed
        for actor in ACTORS:
            assert self._token_balance(actor.address) == self.tokens_held[actor.address]

    def _only_its_provider_takes_an_allocation(self, states, allocations, balances) -> None:
        """The contract's views against the previous step's: only an allocation's own provider ever
        makes it smaller, and a voucher a provider accepted stays backed."""
        for (sid, provider), on_chain in allocations.items():
            before = self.seen_allocations.get((sid, provider), (0, 0, False))
            allocated, paid, released = before
            assert on_chain.paid >= paid, "what an allocation paid went down"
            if on_chain.released and not released:
                assert (sid, provider) in self.released_by_provider, "an allocation was released without its provider"
            elif not released:
                assert on_chain.allocated >= allocated, "an open allocation shrank without a release"
            else:
                assert (on_chain.allocated, on_chain.paid, on_chain.released) == before, "a released allocation moved"
        for key, balance in balances.items():
            if balance < self.seen_balances.get(key, 0):
                assert key in self.withdrew, f"{key[0]}'s credit went down without its withdraw"
        for (sid, provider), amount in self.accepted.items():
            on_chain = allocations[sid, provider]
            if on_chain.released:
                continue  # the provider itself signed what it is paid
            if states[sid].closed:
                s = next(x for x in self.sessions if x.sid == sid)
                assert s.closed_after_window or on_chain.paid >= amount, "a session closed under an unpaid voucher"
                continue
            assert on_chain.paid + on_chain.available >= amount, f"{provider}'s accepted voucher lost its backing"
        self.seen_allocations = {k: (a.allocated, a.paid, a.released) for k, a in allocations.items()}
        self.seen_balances = balances
        self.released_by_provider.clear()
        self.withdrew.clear()
