// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC5267} from "@openzeppelin/contracts/interfaces/IERC5267.sol";

/**
 * @title IGolemEscrow
 * @notice Escrow of a requestor's deposit for a compute session, paying providers for each graph
 * execution settled in it.
 *
 * A *session* is one deposit by one requestor, in one token (`address(0)` is the chain's
 * native currency). A *graph* is one execution inside it. Amounts are in the smallest unit of
 * the session's token. Providers are credited in two ways: the requestor settles each graph
 * with {settleGraph}, or a provider presents the requestor's latest EIP-712 voucher with
 * {claim} (for when the requestor vanished). Both raise the same cumulative counter
 * {paid}, so a voucher never pays twice for what a settlement already paid.
 *
 * Credits are pulled with {withdraw}. After `deadline + CLAIM_WINDOW` anyone may close the
 * session with {closeSession}, which refunds to the requestor what no provider was credited.
 * Claims and settlements are taken up to and including that instant, the refund only after
 * it, so the two never race.
 *
 * The EIP-712 domain vouchers are signed under is reported by {IERC5267-eip712Domain}
 * (name "GolemEscrow", version "1", the chain id and this contract's address).
 */
interface IGolemEscrow is IERC5267 {
    // ------------------------------------------------------------------ events

    /**
     * @notice A requestor opened a session and deposited `amount` of `token` into it.
     * @param sessionId The new session.
     * @param requestor Who opened it and deposited; the only account that may settle in it.
     * @param token The session's token, `address(0)` for the native currency.
     * @param amount The deposit.
     * @param deadline Unix time after which no new work is expected.
     */
    event SessionOpened(
        bytes32 indexed sessionId, address indexed requestor, address indexed token, uint256 amount, uint64 deadline
    );

    /**
     * @notice The requestor added `amount` to the deposit of `sessionId`.
     * @param sessionId The session topped up.
     * @param amount What was added.
     * @param deposited The session's total deposit after this top-up.
     */
    event ToppedUp(bytes32 indexed sessionId, uint256 amount, uint256 deposited);

    /**
     * @notice Graph `graphId` of `sessionId` was settled; one {Paid} event per credited provider
     * precedes it in the same transaction.
     * @param sessionId The session.
     * @param graphId The graph execution settled.
     * @param total Sum credited to all providers for this graph.
     * @param resultRoot Merkle root over the graph's output keys and result digests.
     */
    event GraphSettled(bytes32 indexed sessionId, bytes32 indexed graphId, uint256 total, bytes32 resultRoot);

    /**
     * @notice `provider` was credited `amount` by a settlement in `sessionId`. Reputation is
     * computed off-chain from these events and {FaultReported}.
     * @param sessionId The session.
     * @param provider Who was credited.
     * @param amount What was credited (never zero).
     */
    event Paid(bytes32 indexed sessionId, address indexed provider, uint256 amount);

    /**
     * @notice `provider` was credited `amount` in `sessionId` by presenting a voucher.
     * @param sessionId The session.
     * @param provider Who claimed (the caller of {claim}).
     * @param amount What was credited by this claim: the voucher's amount above what was already
     * paid, capped by what remained of the deposit.
     */
    event Claimed(bytes32 indexed sessionId, address indexed provider, uint256 amount);

    /**
     * @notice The requestor of `sessionId` reported that `provider` returned a wrong result in
     * graph `graphId`.
     * @param sessionId The session.
     * @param graphId The graph execution in which the fault happened.
     * @param provider The provider reported.
     * @param evidence Digest of whatever proves the fault (e.g. the disagreeing results).
     */
    event FaultReported(bytes32 indexed sessionId, bytes32 indexed graphId, address indexed provider, bytes32 evidence);

    /**
     * @notice `sessionId` was closed and `refund` went back to its requestor.
     * @param sessionId The session closed.
     * @param refund What remained of the deposit and was refunded (may be zero).
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

    /// @notice A deposit or top-up of zero.
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
     * @notice {topUp} after the session's deadline.
     * @param sessionId The session.
     * @param deadline Its deadline.
     */
    error DeadlinePassed(bytes32 sessionId, uint64 deadline);

    /**
     * @notice {settleGraph} or {claim} after `deadline + CLAIM_WINDOW`.
     * @param sessionId The session.
     * @param endedAt When its claim window ended (`deadline + CLAIM_WINDOW`).
     */
    error ClaimWindowOver(bytes32 sessionId, uint256 endedAt);

    /**
     * @notice {closeSession} before the session's claim window is over.
     * @param sessionId The session.
     * @param availableAfter The instant after which it can be closed (`deadline + CLAIM_WINDOW`).
     */
    error RefundNotYetAvailable(bytes32 sessionId, uint256 availableAfter);

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
     * @notice A second {settleGraph} for the same graph; nothing was paid twice.
     * @param sessionId The session.
     * @param graphId The graph already settled.
     */
    error GraphAlreadySettled(bytes32 sessionId, bytes32 graphId);

    /**
     * @notice {settleGraph} with arrays of different lengths.
     * @param providers Number of providers given.
     * @param amounts Number of amounts given.
     */
    error LengthMismatch(uint256 providers, uint256 amounts);

    /**
     * @notice The zero address was named as a provider.
     * @param provider The invalid address.
     */
    error InvalidProvider(address provider);

    /**
     * @notice {settleGraph} for more than remains of the session's deposit.
     * @param sessionId The session.
     * @param requested The graph's total.
     * @param remaining What remained of the deposit.
     */
    error InsufficientDeposit(bytes32 sessionId, uint256 requested, uint256 remaining);

    /**
     * @notice {claim} with a voucher the session's requestor did not sign for this caller,
     * session, chain and contract.
     * @param sessionId The session.
     * @param provider The caller, for whom the voucher was checked.
     */
    error InvalidVoucherSignature(bytes32 sessionId, address provider);

    /**
     * @notice A replayed or older voucher: its cumulative amount is not above what the provider
     * was already credited in the session.
     * @param sessionId The session.
     * @param provider The caller.
     * @param cumulativeAmount The voucher's amount.
     * @param alreadyPaid What the provider was already credited in the session.
     */
    error VoucherAlreadyPaid(bytes32 sessionId, address provider, uint256 cumulativeAmount, uint256 alreadyPaid);

    /**
     * @notice {claim} when the whole deposit of the session was credited already.
     * @param sessionId The session.
     */
    error DepositExhausted(bytes32 sessionId);

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
     * @notice Opens session `sessionId` with a deposit of `amount` of `token`.
     * @dev For the native currency send exactly `amount` as value; for an ERC-20, approve
     * this contract first and send no value. Fee-on-transfer tokens are refused, because the
     * escrow must hold exactly what it records. Emits {SessionOpened}.
     * @param sessionId Identifier chosen by the requestor; must be unused.
     * @param token ERC-20 address, or `address(0)` for the native currency.
     * @param amount Deposit, in the token's smallest unit; at most 2^96 - 1.
     * @param deadline Unix time after which no new work is expected; must be in the future.
     */
    function openSession(bytes32 sessionId, address token, uint256 amount, uint64 deadline) external payable;

    /**
     * @notice Adds `amount` to the deposit of an open session before its deadline.
     * @dev Same value rules as {openSession}. Requestor only. Emits {ToppedUp}.
     * @param sessionId The session.
     * @param amount What to add, in the session token's smallest unit.
     */
    function topUp(bytes32 sessionId, uint256 amount) external payable;

    /**
     * @notice Settles graph execution `graphId`: credits `amounts[i]` to `providers[i]`.
     * @dev Requestor only, once per `graphId`, until `deadline + CLAIM_WINDOW`. The total may
     * not exceed what remains of the deposit. Zero amounts are skipped. Makes no external call.
     * Emits {Paid} per credited provider, then {GraphSettled}.
     * @param sessionId The session.
     * @param graphId Identifier of the graph execution; a graph is settled at most once.
     * @param providers Who to credit.
     * @param amounts What to credit each provider, in the same order as `providers`.
     * @param resultRoot Merkle root over the graph's output keys and result digests, recorded
     * in the event so that anyone can later check a result against what was paid for.
     */
    function settleGraph(
        bytes32 sessionId,
        bytes32 graphId,
        address[] calldata providers,
        uint256[] calldata amounts,
        bytes32 resultRoot
    ) external;

    /**
     * @notice Records that `provider` returned a wrong result in `graphId`. Requestor only.
     * @dev Stores nothing: reputation is computed off-chain from {FaultReported} and {Paid}.
     * @param sessionId The session.
     * @param graphId The graph execution in which the fault happened.
     * @param provider The provider at fault; not the zero address.
     * @param evidence Digest of whatever proves the fault (e.g. the disagreeing results).
     */
    function reportFault(bytes32 sessionId, bytes32 graphId, address provider, bytes32 evidence) external;

    // ------------------------------------------------------------------ provider

    /**
     * @notice Raises the caller's credit in `sessionId` to `cumulativeAmount`, as signed by the
     * session's requestor in an EIP-712 `Voucher`.
     * @dev Credits `cumulativeAmount - paid`, capped by what remains of the deposit. A voucher
     * that is not above what was already credited reverts with {VoucherAlreadyPaid}, so a
     * replayed or older voucher credits nothing. Accepted until `deadline + CLAIM_WINDOW`.
     * Emits {Claimed}.
     * @param sessionId The session.
     * @param cumulativeAmount Everything the requestor owes the caller in the session so far.
     * @param signature The requestor's signature over {hashVoucher}`(sessionId, caller, cumulativeAmount)`.
     */
    function claim(bytes32 sessionId, uint256 cumulativeAmount, bytes calldata signature) external;

    // ------------------------------------------------------------------ anyone

    /**
     * @notice Closes `sessionId` once its claim window is over and refunds what remains of the
     * deposit to the requestor. Anyone may call it. Emits {SessionClosed}.
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
     * @notice Cumulative amount credited to `provider` in `sessionId`, by settlements and claims.
     * @param sessionId The session.
     * @param provider The provider.
     * @return The amount credited so far.
     */
    function paid(bytes32 sessionId, address provider) external view returns (uint256);

    /**
     * @notice The state of `sessionId`; all zero if it was never opened.
     * @param sessionId The session.
     * @return requestor Who opened it.
     * @return token Its token, zero for the native currency.
     * @return deposited Total deposited.
     * @return paidOut Total credited to providers.
     * @return deadline Its deadline.
     * @return closed Whether it was closed and its remainder refunded.
     */
    function sessions(bytes32 sessionId)
        external
        view
        returns (address requestor, address token, uint256 deposited, uint256 paidOut, uint64 deadline, bool closed);

    /**
     * @notice Amount of `token` credited to `account` and not yet withdrawn.
     * @param account The account.
     * @param token The token, `address(0)` for the native currency.
     * @return What {withdraw} would pay `account` now.
     */
    function balanceOf(address account, address token) external view returns (uint256);

    /**
     * @notice Whether `graphId` of `sessionId` was settled (lets a client retry safely).
     * @param sessionId The session.
     * @param graphId The graph execution.
     * @return True once {settleGraph} for it was mined.
     */
    function isGraphSettled(bytes32 sessionId, bytes32 graphId) external view returns (bool);

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
}
