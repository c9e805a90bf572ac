// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC5267} from "@openzeppelin/contracts/interfaces/IERC5267.sol";

/**
 * @title IGolemEscrow
 * @notice Escrow of a requestor's deposit for a compute session (version 2), paying each provider
 * from an allocation that only that provider can draw on.
 *
 * A *session* is one deposit by one requestor, in one token (`address(0)` is the chain's native
 * currency). A *graph* is one execution inside it. Amounts are in the smallest unit of the
 * session's token.
 *
 * The requestor moves parts of the deposit's unallocated remainder into per-provider
 * *allocations* with {allocate}. A provider serves only against an allocation it has seen, and
 * only three things draw on it: the requestor's {settleGraph} (graphs in order, `seq` by `seq`),
 * the provider's {claim} with the requestor's latest EIP-712 `Voucher` (when the requestor
 * vanished), and a {release} the provider signed (`Release`: "pay me this much in total and give
 * the rest back"). No one else can take an allocation: the requestor's {reclaim} returns only
 * the unallocated remainder.
 *
 * Credits are pulled with {withdraw}. {closeSession} refunds the requestor: at once, by the
 * requestor, when no allocation is open (every provider released, or nothing was ever
 * allocated: the cooperative close); by anyone after `deadline + CLAIM_WINDOW`. Claims,
 * settlements and releases are taken up to and including that instant, the unilateral refund
 * only after it, so the two never race.
 *
 * Invariant, per token: this contract's balance == sum over sessions not closed of (unallocated
 * + the unpaid part of each open allocation) + sum over accounts of credited-but-not-withdrawn
 * amounts; per session, deposited - reclaimed - paidOut == unallocated + the unpaid part of each
 * open allocation.
 *
 * The EIP-712 domain vouchers and releases are signed under is reported by
 * {IERC5267-eip712Domain} (name "GolemEscrow", version "2", the chain id and this contract's
 * address).
 */
interface IGolemEscrow is IERC5267 {
    // ------------------------------------------------------------------ events

    /**
     * @notice A requestor opened a session and deposited `amount` of `token` into it.
     * @param sessionId The new session.
     * @param requestor Who opened it and deposited; the only account that may allocate and settle in it.
     * @param token The session's token, `address(0)` for the native currency.
     * @param amount The deposit.
     * @param deadline Unix time after which no new work is expected.
     */
    event SessionOpened(
        bytes32 indexed sessionId, address indexed requestor, address indexed token, uint256 amount, uint64 deadline
    );

    /**
     * @notice The requestor added `amount` to the deposit (and to the unallocated remainder) of `sessionId`.
     * @param sessionId The session topped up.
     * @param amount What was added.
     * @param deposited The session's total deposit after this top-up.
     */
    event ToppedUp(bytes32 indexed sessionId, uint256 amount, uint256 deposited);

    /**
     * @notice `amount` of the unallocated remainder of `sessionId` was added to `provider`'s allocation.
     * @param sessionId The session.
     * @param provider The provider whose allocation grew.
     * @param amount What was added by this call (not the allocation's new total).
     */
    event Allocated(bytes32 indexed sessionId, address indexed provider, uint256 amount);

    /**
     * @notice The requestor of `sessionId` took `amount`, the whole unallocated remainder, back.
     * @param sessionId The session.
     * @param amount What was paid back to the requestor.
     */
    event Reclaimed(bytes32 indexed sessionId, uint256 amount);

    /**
     * @notice Graph `graphId`, number `seq` of `sessionId`, was settled; one {Paid} event per credited
     * provider precedes it in the same transaction.
     * @param sessionId The session.
     * @param seq The graph's place in the session's order of settlements (0 for the first).
     * @param graphId The graph execution settled.
     * @param total Sum credited to all providers for this graph.
     * @param resultRoot Merkle root over the graph's output keys and result digests.
     */
    event GraphSettled(
        bytes32 indexed sessionId, uint64 seq, bytes32 indexed graphId, uint256 total, bytes32 resultRoot
    );

    /**
     * @notice `provider` was credited `amount` from its allocation by a settlement in `sessionId`.
     * Reputation is computed off-chain from these events and {FaultReported}.
     * @param sessionId The session.
     * @param provider Who was credited.
     * @param amount What was credited (never zero).
     */
    event Paid(bytes32 indexed sessionId, address indexed provider, uint256 amount);

    /**
     * @notice `provider` was credited `amount` from its allocation in `sessionId` by presenting a voucher.
     * @param sessionId The session.
     * @param provider Who claimed (the caller of {claim}).
     * @param amount What this claim credited: the voucher's amount above what was already paid,
     * capped by what was left of the allocation.
     */
    event Claimed(bytes32 indexed sessionId, address indexed provider, uint256 amount);

    /**
     * @notice `provider`'s allocation in `sessionId` was closed by a release it signed: it was paid
     * `finalAmount` in total and `returned` went back to the unallocated remainder.
     * @param sessionId The session.
     * @param provider The provider that released its allocation.
     * @param finalAmount What the provider was paid in the session, in total.
     * @param returned What was left of the allocation and returned to the session.
     */
    event Released(bytes32 indexed sessionId, address indexed provider, uint256 finalAmount, uint256 returned);

    /**
     * @notice The requestor of `sessionId` reported that `provider` returned a wrong result in
     * graph `graphId`.
     * @param sessionId The session.
     * @param graphId The graph execution in which the fault happened.
     * @param provider The provider reported; it holds (or held) an allocation in the session.
     * @param evidence Digest of whatever proves the fault (e.g. the disagreeing results).
     */
    event FaultReported(bytes32 indexed sessionId, bytes32 indexed graphId, address indexed provider, bytes32 evidence);

    /**
     * @notice `sessionId` was closed and `refund` went back to its requestor.
     * @param sessionId The session closed.
     * @param refund What was refunded (may be zero).
     */
    event SessionClosed(bytes32 indexed sessionId, uint256 refund);

    /**
     * @notice `account` withdrew `amount` of `token` credited to it.
     * @param account Who withdrew.
     * @param token The token, `address(0)` for the native currency.
     * @param amount What was paid out.
     */
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    // ------------------------------------------------------------------ errors

    /**
     * @notice {openSession} with an id that was used before.
     * @param sessionId The id already taken.
     */
    error SessionAlreadyExists(bytes32 sessionId);

    /**
     * @notice The session was never opened on this contract.
     * @param sessionId The unknown id.
     */
    error SessionNotFound(bytes32 sessionId);

    /**
     * @notice The session was already closed by {closeSession}; nothing more can happen in it.
     * @param sessionId The closed session.
     */
    error SessionAlreadyClosed(bytes32 sessionId);

    /**
     * @notice A requestor-only function was called by someone other than the session's requestor.
     * @param sessionId The session.
     * @param caller Who called.
     */
    error NotRequestor(bytes32 sessionId, address caller);

    /// @notice A deposit, top-up or allocation of zero.
    error ZeroAmount();

    /**
     * @notice A deposit (or a deposit after a top-up) above what one session can hold.
     * @param amount The deposit asked for.
     * @param max The largest deposit, 2^96 - 1.
     */
    error AmountTooLarge(uint256 amount, uint256 max);

    /**
     * @notice {openSession} with a deadline that is not after the current block's time.
     * @param deadline The deadline given.
     * @param timestamp The current block's timestamp.
     */
    error DeadlineNotInFuture(uint64 deadline, uint256 timestamp);

    /**
     * @notice {openSession} with a deadline beyond what the escrow stores (2^40 - 1, in the year 36812).
     * @param deadline The deadline given.
     * @param max The latest deadline accepted.
     */
    error DeadlineTooFar(uint64 deadline, uint256 max);

    /**
     * @notice {topUp} after the session's deadline.
     * @param sessionId The session.
     * @param deadline Its deadline.
     */
    error DeadlinePassed(bytes32 sessionId, uint64 deadline);

    /**
     * @notice {settleGraph}, {claim} or {release} after `deadline + CLAIM_WINDOW`.
     * @param sessionId The session.
     * @param endedAt When its claim window ended (`deadline + CLAIM_WINDOW`).
     */
    error ClaimWindowOver(bytes32 sessionId, uint256 endedAt);

    /**
     * @notice {closeSession} by someone other than the requestor before the session's claim window is over.
     * @param sessionId The session.
     * @param availableAfter The instant after which anyone can close it (`deadline + CLAIM_WINDOW`).
     */
    error RefundNotYetAvailable(bytes32 sessionId, uint256 availableAfter);

    /**
     * @notice The requestor tried to close a session early while providers still hold open allocations.
     * @param sessionId The session.
     * @param openAllocations How many allocations are still open (not released).
     */
    error AllocationsStillOpen(bytes32 sessionId, uint256 openAllocations);

    /**
     * @notice The value sent does not match: it must equal the amount for the native currency
     * and be zero for an ERC-20 session.
     * @param expected The value the call had to carry.
     * @param sent The value it carried.
     */
    error WrongNativeValue(uint256 expected, uint256 sent);

    /**
     * @notice The ERC-20 delivered another amount than asked (e.g. a fee-on-transfer token).
     * @param expected The amount asked for.
     * @param received The amount that arrived.
     */
    error TokenTransferMismatch(uint256 expected, uint256 received);

    /**
     * @notice {settleGraph} with a `seq` below the session's `nextSeq`: that settlement was already
     * mined (a retried transaction); nothing was paid twice.
     * @param sessionId The session.
     * @param seq The `seq` given.
     * @param nextSeq The `seq` the session expects next.
     */
    error GraphAlreadySettled(bytes32 sessionId, uint64 seq, uint64 nextSeq);

    /**
     * @notice {settleGraph} with a `seq` above the session's `nextSeq`: an earlier graph is not settled yet.
     * @param sessionId The session.
     * @param seq The `seq` given.
     * @param nextSeq The `seq` the session expects next.
     */
    error GraphOutOfOrder(bytes32 sessionId, uint64 seq, uint64 nextSeq);

    /**
     * @notice {allocate} or {settleGraph} with arrays of different lengths.
     * @param providers Number of providers given.
     * @param amounts Number of amounts given.
     */
    error LengthMismatch(uint256 providers, uint256 amounts);

    /**
     * @notice The zero address was named as a provider to allocate to.
     * @param provider The invalid address.
     */
    error InvalidProvider(address provider);

    /**
     * @notice {allocate} for more than the session's unallocated remainder.
     * @param sessionId The session.
     * @param requested The total asked for.
     * @param unallocated What was left unallocated.
     */
    error InsufficientDeposit(bytes32 sessionId, uint256 requested, uint256 unallocated);

    /**
     * @notice The provider holds no allocation in the session (and never released one).
     * @param sessionId The session.
     * @param provider The provider named.
     */
    error NoAllocation(bytes32 sessionId, address provider);

    /**
     * @notice The provider's allocation was released: nothing more can be allocated, settled or claimed on it.
     * @param sessionId The session.
     * @param provider The provider named.
     */
    error AllocationReleased(bytes32 sessionId, address provider);

    /**
     * @notice {settleGraph} would pay a provider more than is left of its allocation.
     * @param sessionId The session.
     * @param provider The provider.
     * @param requested What the graph pays it.
     * @param available What is left of its allocation (allocated - paid).
     */
    error AllocationExceeded(bytes32 sessionId, address provider, uint256 requested, uint256 available);

    /**
     * @notice {claim} when the caller's allocation is already fully paid.
     * @param sessionId The session.
     * @param provider The caller.
     */
    error AllocationExhausted(bytes32 sessionId, address provider);

    /**
     * @notice {claim} with a voucher the session's requestor did not sign for this caller,
     * session, chain and contract.
     * @param sessionId The session.
     * @param provider The caller, for whom the voucher was checked.
     */
    error InvalidVoucherSignature(bytes32 sessionId, address provider);

    /**
     * @notice A replayed or older voucher: its cumulative amount is not above what the provider
     * was already paid in the session.
     * @param sessionId The session.
     * @param provider The caller.
     * @param cumulativeAmount The voucher's amount.
     * @param alreadyPaid What the provider was already paid in the session.
     */
    error VoucherAlreadyPaid(bytes32 sessionId, address provider, uint256 cumulativeAmount, uint256 alreadyPaid);

    /**
     * @notice {release} with a signature that is not the named provider's over this session,
     * final amount, chain and contract (e.g. forged, or signed by the requestor).
     * @param sessionId The session.
     * @param provider The provider the release names.
     */
    error InvalidReleaseSignature(bytes32 sessionId, address provider);

    /**
     * @notice {release} with a final amount below what the provider was already paid or above its allocation.
     * @param sessionId The session.
     * @param provider The provider.
     * @param finalAmount The final amount signed.
     * @param paid What the provider was already paid from its allocation.
     * @param allocated The provider's allocation.
     */
    error InvalidFinalAmount(
        bytes32 sessionId, address provider, uint256 finalAmount, uint256 paid, uint256 allocated
    );

    /**
     * @notice {reclaim} when nothing of the deposit is unallocated.
     * @param sessionId The session.
     */
    error NothingToReclaim(bytes32 sessionId);

    /**
     * @notice {withdraw} with nothing credited and not yet withdrawn.
     * @param account The caller.
     * @param token The token asked for.
     */
    error NothingToWithdraw(address account, address token);

    /**
     * @notice The receiver of a native-currency payment reverted; nothing changed.
     * @param to The receiver.
     * @param amount The amount that could not be sent.
     */
    error NativeTransferFailed(address to, uint256 amount);

    /// @notice The escrow was deployed with a claim window of zero seconds.
    error InvalidClaimWindow();

    // ------------------------------------------------------------------ requestor

    /**
     * @notice Opens session `sessionId` with a deposit of `amount` of `token`, all of it unallocated.
     * @dev For the native currency send exactly `amount` as value; for an ERC-20, approve
     * this contract first and send no value. Fee-on-transfer tokens are refused, because the
     * escrow must hold exactly what it records. Emits {SessionOpened}.
     * @param sessionId Identifier chosen by the requestor; must be unused.
     * @param token ERC-20 address, or `address(0)` for the native currency.
     * @param amount Deposit, in the token's smallest unit; at most 2^96 - 1.
     * @param deadline Unix time after which no new work is expected; in the future, at most 2^40 - 1.
     */
    function openSession(bytes32 sessionId, address token, uint256 amount, uint64 deadline) external payable;

    /**
     * @notice Adds `amount` to the deposit and the unallocated remainder of an open session before its deadline.
     * @dev Same value rules as {openSession}. Requestor only. Emits {ToppedUp}.
     * @param sessionId The session.
     * @param amount What to add, in the session token's smallest unit.
     */
    function topUp(bytes32 sessionId, uint256 amount) external payable;

    /**
     * @notice Moves `amounts[i]` of the unallocated remainder into `providers[i]`'s allocation.
     * @dev Requestor only, while the session is open. Adding to an open allocation is allowed;
     * a released one cannot be reopened. The total may not exceed the unallocated remainder.
     * There is no time limit: what is allocated after `deadline + CLAIM_WINDOW` can no longer be
     * drawn on (settlements, claims and releases end then) and the unilateral {closeSession}
     * refunds it, so a provider serves only against an allocation whose claim window is still
     * ahead. Makes no external call. Emits {Allocated} per provider.
     * @param sessionId The session.
     * @param providers Who to allocate to; not the zero address.
     * @param amounts What to add to each provider's allocation, in the same order; none zero.
     */
    function allocate(bytes32 sessionId, address[] calldata providers, uint256[] calldata amounts) external;

    /**
     * @notice Settles graph execution number `seq`: credits `amounts[i]` to `providers[i]` from their allocations.
     * @dev Requestor only, until `deadline + CLAIM_WINDOW`. `seq` must equal the session's
     * `nextSeq`, which is then incremented: a `seq` below it (a retried settlement that was
     * mined) reverts with {GraphAlreadySettled}, one above it with {GraphOutOfOrder}. Each amount
     * may not exceed what is left of that provider's allocation; zero amounts are skipped.
     * Makes no external call. Emits {Paid} per credited provider, then {GraphSettled}.
     * @param sessionId The session.
     * @param seq The graph's place in the session's order of settlements: the session's `nextSeq`.
     * @param graphId Identifier of the graph execution.
     * @param providers Who to credit.
     * @param amounts What to credit each provider, in the same order as `providers`.
     * @param resultRoot Merkle root over the graph's output keys and result digests, recorded
     * in the event so that anyone can later check a result against what was paid for.
     */
    function settleGraph(
        bytes32 sessionId,
        uint64 seq,
        bytes32 graphId,
        address[] calldata providers,
        uint256[] calldata amounts,
        bytes32 resultRoot
    ) external;

    /**
     * @notice Pays the requestor the session's whole unallocated remainder now; allocations are untouched.
     * @dev Requestor only, while the session is open. Emits {Reclaimed}.
     * @param sessionId The session.
     */
    function reclaim(bytes32 sessionId) external;

    /**
     * @notice Records that `provider` returned a wrong result in `graphId`. Requestor only.
     * @dev Stores nothing: reputation is computed off-chain from {FaultReported} and {Paid}.
     * `provider` must hold (or have released) an allocation in the session, so a requestor
     * cannot report providers it never rented.
     * @param sessionId The session.
     * @param graphId The graph execution in which the fault happened.
     * @param provider The provider at fault.
     * @param evidence Digest of whatever proves the fault (e.g. the disagreeing results).
     */
    function reportFault(bytes32 sessionId, bytes32 graphId, address provider, bytes32 evidence) external;

    // ------------------------------------------------------------------ provider

    /**
     * @notice Raises the caller's pay in `sessionId` to `cumulativeAmount`, as signed by the
     * session's requestor in an EIP-712 `Voucher`, as far as the caller's allocation goes.
     * @dev Credits `min(cumulativeAmount - paid, allocated - paid)`. A voucher that is not above
     * what was already paid reverts with {VoucherAlreadyPaid}, so a replayed or older voucher
     * credits nothing. Accepted until `deadline + CLAIM_WINDOW`, on an open allocation. Makes no
     * external call. Emits {Claimed}.
     * @param sessionId The session.
     * @param cumulativeAmount Everything the requestor owes the caller in the session so far.
     * @param signature The requestor's signature over {hashVoucher}`(sessionId, caller, cumulativeAmount)`.
     */
    function claim(bytes32 sessionId, uint256 cumulativeAmount, bytes calldata signature) external;

    // ------------------------------------------------------------------ anyone

    /**
     * @notice Closes `provider`'s allocation in `sessionId` with the provider's EIP-712 `Release`:
     * pays the provider `finalAmount` in total and returns the rest of the allocation to the
     * unallocated remainder.
     * @dev Anyone may submit it, until `deadline + CLAIM_WINDOW`. Credits `finalAmount - paid`.
     * Reverts if `finalAmount` is below what was already paid or above the allocation, or if
     * the signature is not the provider's. Nothing more can be allocated, settled or claimed on
     * a released allocation. Makes no external call. Emits {Released}.
     * @param sessionId The session.
     * @param provider The provider whose allocation is released.
     * @param finalAmount What the provider is paid in the session, in total.
     * @param signature The provider's signature over {hashRelease}`(sessionId, provider, finalAmount)`.
     */
    function release(bytes32 sessionId, address provider, uint256 finalAmount, bytes calldata signature) external;

    /**
     * @notice Closes `sessionId` and refunds its requestor: the cooperative close, or the
     * unilateral refund after the claim window.
     * @dev Before `deadline + CLAIM_WINDOW` only the requestor may close, and only when no
     * allocation is open (every provider released, or nothing was ever allocated); the refund
     * is the unallocated remainder. After it anyone may close; the refund is everything not
     * paid to providers, open allocations' unpaid parts included. Emits {SessionClosed}.
     * @param sessionId The session.
     */
    function closeSession(bytes32 sessionId) external;

    /**
     * @notice Pays the caller everything credited to it in `token` and not yet withdrawn.
     * Emits {Withdrawn}.
     * @param token The token, `address(0)` for the native currency.
     */
    function withdraw(address token) external;

    // ------------------------------------------------------------------ views

    /**
     * @notice Seconds after a session's deadline during which providers may still claim.
     * @return The claim window, fixed at deployment.
     */
    function CLAIM_WINDOW() external view returns (uint64);

    /**
     * @notice The state of `sessionId`; all zero if it was never opened.
     * @param sessionId The session.
     * @return requestor Who opened it.
     * @return token Its token, zero for the native currency.
     * @return deposited Total deposited (the deposit and every top-up).
     * @return paidOut Total credited to providers.
     * @return unallocated What is in no allocation (zero once closed).
     * @return deadline Its deadline.
     * @return nextSeq The `seq` its next {settleGraph} must carry.
     * @return openAllocations How many allocations are open (allocated and not released).
     * @return closed Whether it was closed and refunded.
     */
    function sessions(bytes32 sessionId)
        external
        view
        returns (
            address requestor,
            address token,
            uint256 deposited,
            uint256 paidOut,
            uint256 unallocated,
            uint64 deadline,
            uint64 nextSeq,
            uint256 openAllocations,
            bool closed
        );

    /**
     * @notice What the requestor of `sessionId` took back with {reclaim}, in total.
     * @dev With {sessions} it gives what the escrow still holds for the session:
     * `deposited - reclaimed - paidOut` while it is open.
     * @param sessionId The session.
     * @return The total reclaimed.
     */
    function reclaimed(bytes32 sessionId) external view returns (uint256);

    /**
     * @notice `provider`'s allocation in `sessionId`.
     * @param sessionId The session.
     * @param provider The provider.
     * @dev The outputs are unnamed only because a named `paid` would shadow {paid}.
     * @return The allocated amount, in total (after a release: its final amount).
     * @return What was paid from it, by settlements, claims and its release.
     * @return Whether it was released (closed).
     */
    function allocations(bytes32 sessionId, address provider) external view returns (uint256, uint256, bool);

    /**
     * @notice What `provider` was paid in `sessionId` so far: `allocations(sessionId, provider).paid`.
     * @param sessionId The session.
     * @param provider The provider.
     * @return The amount paid so far.
     */
    function paid(bytes32 sessionId, address provider) external view returns (uint256);

    /**
     * @notice Amount of `token` credited to `account` and not yet withdrawn.
     * @param account The account.
     * @param token The token, `address(0)` for the native currency.
     * @return What {withdraw} would pay `account` now.
     */
    function balanceOf(address account, address token) external view returns (uint256);

    /**
     * @notice The EIP-712 digest a requestor signs for a voucher:
     * `Voucher(bytes32 sessionId,address provider,uint256 cumulativeAmount)` under this
     * contract's domain.
     * @param sessionId The session.
     * @param provider Who the voucher pays.
     * @param cumulativeAmount Everything owed to `provider` in the session so far.
     * @return The digest to sign.
     */
    function hashVoucher(bytes32 sessionId, address provider, uint256 cumulativeAmount)
        external
        view
        returns (bytes32);

    /**
     * @notice The EIP-712 digest a provider signs to release its allocation:
     * `Release(bytes32 sessionId,address provider,uint256 finalAmount)` under this contract's domain.
     * @param sessionId The session.
     * @param provider The provider releasing its allocation (the signer).
     * @param finalAmount What the provider is paid in the session, in total.
     * @return The digest to sign.
     */
    function hashRelease(bytes32 sessionId, address provider, uint256 finalAmount) external view returns (bytes32);
}
