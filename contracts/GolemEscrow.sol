// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/**
 * @title GolemEscrow
 * @notice Holds a requestor's deposit for a compute session and pays providers for each
 * graph execution settled in it.
 *
 * A *session* is one deposit by one requestor, in one token (`address(0)` is the chain's
 * native currency). A *graph* is one execution inside it. Providers are credited in two
 * ways: the requestor settles each graph with `settleGraph`, or a provider presents the
 * requestor's latest EIP-712 voucher with `claim` (for when the requestor vanished). Both
 * raise the same cumulative counter `paid[sessionId][provider]`, so a voucher never pays
 * twice for what a settlement already paid.
 *
 * Credits are pulled with `withdraw`. After `deadline + CLAIM_WINDOW` anyone may close the
 * session, which refunds what no provider was credited to the requestor. Claims are taken
 * up to and including that instant, the refund only after it, so the two never race.
 *
 * Invariant, per token: this contract's balance == sum of `remaining` over open sessions
 * + sum over accounts of credited-but-not-withdrawn amounts.
 *
 * Every function that transfers tokens or native currency (openSession, topUp, closeSession,
 * withdraw) is `nonReentrant` and updates state before it transfers. settleGraph, claim and
 * reportFault only move amounts between internal counters and make no external call, so
 * nothing can re-enter them; they skip the guard to keep per-graph settlement cheap.
 */
contract GolemEscrow is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev One slot for who and when, one for the token and what is left, one for the total.
    /// `remaining` is the part of the deposit not yet credited to any provider; after close it
    /// keeps the amount that was refunded, so `paidOut` stays `deposited - remaining`.
    struct Session {
        address requestor;
        uint64 deadline;
        bool closed;
        address token;
        uint96 remaining;
        uint128 deposited;
    }

    /// @dev Cumulative counters instead of a plain balance: the slot never returns to zero, so
    /// crediting a provider that was paid before costs a warm-slot write, not a fresh one.
    struct Account {
        uint128 credited;
        uint128 withdrawn;
    }

    bytes32 private constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 sessionId,address provider,uint256 cumulativeAmount)");

    /// @notice Seconds after a session's deadline during which providers may still claim.
    uint64 public immutable CLAIM_WINDOW;

    mapping(bytes32 sessionId => Session) private _sessions;
    mapping(bytes32 sessionId => mapping(bytes32 graphId => bool)) private _settled;
    mapping(address account => mapping(address token => Account)) private _accounts;

    /// @notice Cumulative amount credited to `provider` in `sessionId`, by settlements and claims.
    mapping(bytes32 sessionId => mapping(address provider => uint256)) public paid;

    event SessionOpened(
        bytes32 indexed sessionId, address indexed requestor, address indexed token, uint256 amount, uint64 deadline
    );
    event ToppedUp(bytes32 indexed sessionId, uint256 amount, uint256 deposited);
    event GraphSettled(bytes32 indexed sessionId, bytes32 indexed graphId, uint256 total, bytes32 resultRoot);
    event Paid(bytes32 indexed sessionId, address indexed provider, uint256 amount);
    event Claimed(bytes32 indexed sessionId, address indexed provider, uint256 amount);
    event FaultReported(bytes32 indexed sessionId, bytes32 indexed graphId, address indexed provider, bytes32 evidence);
    event SessionClosed(bytes32 indexed sessionId, uint256 refund);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    error SessionAlreadyExists(bytes32 sessionId);
    error SessionNotFound(bytes32 sessionId);
    error SessionAlreadyClosed(bytes32 sessionId);
    error NotRequestor(bytes32 sessionId, address caller);
    error ZeroAmount();
    error AmountTooLarge(uint256 amount, uint256 max);
    error DeadlineNotInFuture(uint64 deadline, uint256 timestamp);
    error DeadlinePassed(bytes32 sessionId, uint64 deadline);
    error ClaimWindowOver(bytes32 sessionId, uint256 endedAt);
    error RefundNotYetAvailable(bytes32 sessionId, uint256 availableAfter);
    error WrongNativeValue(uint256 expected, uint256 sent);
    error TokenTransferMismatch(uint256 expected, uint256 received);
    error GraphAlreadySettled(bytes32 sessionId, bytes32 graphId);
    error LengthMismatch(uint256 providers, uint256 amounts);
    error InvalidProvider(address provider);
    error InsufficientDeposit(bytes32 sessionId, uint256 requested, uint256 remaining);
    error InvalidVoucherSignature(bytes32 sessionId, address provider);
    error VoucherAlreadyPaid(bytes32 sessionId, address provider, uint256 cumulativeAmount, uint256 alreadyPaid);
    error DepositExhausted(bytes32 sessionId);
    error NothingToWithdraw(address account, address token);
    error NativeTransferFailed(address to, uint256 amount);
    error InvalidClaimWindow();

    /// @param claimWindow Seconds after each session's deadline during which providers may claim.
    constructor(uint64 claimWindow) EIP712("GolemEscrow", "1") {
        if (claimWindow == 0) revert InvalidClaimWindow();
        CLAIM_WINDOW = claimWindow;
    }

    // ------------------------------------------------------------------ requestor

    /**
     * @notice Opens session `sessionId` with a deposit of `amount` of `token`.
     * @dev For the native currency send exactly `amount` as value; for an ERC-20, approve
     * this contract first and send no value. Fee-on-transfer tokens are refused, because the
     * escrow must hold exactly what it records.
     * @param sessionId Identifier chosen by the requestor; must be unused.
     * @param token ERC-20 address, or `address(0)` for the native currency.
     * @param amount Deposit, in the token's smallest unit; at most 2^96 - 1.
     * @param deadline Unix time after which no new work is expected; must be in the future.
     */
    function openSession(bytes32 sessionId, address token, uint256 amount, uint64 deadline)
        external
        payable
        nonReentrant
    {
        if (_sessions[sessionId].requestor != address(0)) revert SessionAlreadyExists(sessionId);
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint96).max) revert AmountTooLarge(amount, type(uint96).max);
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline, block.timestamp);
        _checkValue(token, amount);

        _sessions[sessionId] = Session({
            requestor: msg.sender,
            deadline: deadline,
            closed: false,
            token: token,
            remaining: uint96(amount),
            deposited: uint128(amount)
        });
        emit SessionOpened(sessionId, msg.sender, token, amount, deadline);

        _pull(token, amount);
    }

    /**
     * @notice Adds `amount` to the deposit of an open session before its deadline.
     * @dev Same value rules as {openSession}. Requestor only.
     */
    function topUp(bytes32 sessionId, uint256 amount) external payable nonReentrant {
        Session storage s = _requestorSession(sessionId);
        if (block.timestamp > s.deadline) revert DeadlinePassed(sessionId, s.deadline);
        if (amount == 0) revert ZeroAmount();
        uint256 deposited = s.deposited + amount;
        if (deposited > type(uint96).max) revert AmountTooLarge(deposited, type(uint96).max);
        address token = s.token;
        _checkValue(token, amount);

        s.remaining += uint96(amount);
        s.deposited = uint128(deposited);
        emit ToppedUp(sessionId, amount, deposited);

        _pull(token, amount);
    }

    /**
     * @notice Settles graph execution `graphId`: credits `amounts[i]` to `providers[i]`.
     * @dev Requestor only, once per `graphId`, until `deadline + CLAIM_WINDOW`. The total may
     * not exceed what remains of the deposit. Zero amounts are skipped. Makes no external call.
     * @param resultRoot Merkle root over the graph's output keys and result digests, recorded
     * in the event so that anyone can later check a result against what was paid for.
     */
    function settleGraph(
        bytes32 sessionId,
        bytes32 graphId,
        address[] calldata providers,
        uint256[] calldata amounts,
        bytes32 resultRoot
    ) external {
        Session storage s = _requestorSession(sessionId);
        _checkClaimWindow(sessionId, s.deadline);
        if (_settled[sessionId][graphId]) revert GraphAlreadySettled(sessionId, graphId);
        if (providers.length != amounts.length) revert LengthMismatch(providers.length, amounts.length);

        _settled[sessionId][graphId] = true;
        address token = s.token;
        mapping(address => uint256) storage paidInSession = paid[sessionId];
        uint256 total;
        for (uint256 i; i < providers.length; ++i) {
            uint256 amount = amounts[i];
            if (amount == 0) continue;
            address provider = providers[i];
            if (provider == address(0)) revert InvalidProvider(provider);
            // A huge amount cannot be truncated into a credit: the total check below then
            // fails and reverts the whole call.
            total += amount;
            paidInSession[provider] += amount;
            _accounts[provider][token].credited += uint128(amount);
            emit Paid(sessionId, provider, amount);
        }
        uint256 remaining = s.remaining;
        if (total > remaining) revert InsufficientDeposit(sessionId, total, remaining);
        // Cannot underflow or truncate: total <= remaining < 2^96.
        s.remaining = uint96(remaining - total);
        emit GraphSettled(sessionId, graphId, total, resultRoot);
    }

    /**
     * @notice Records that `provider` returned a wrong result in `graphId`. Requestor only.
     * @dev Stores nothing: reputation is computed off-chain from these events and `Paid`.
     * @param evidence Digest of whatever proves the fault (e.g. the disagreeing results).
     */
    function reportFault(bytes32 sessionId, bytes32 graphId, address provider, bytes32 evidence) external {
        _requestorSession(sessionId);
        if (provider == address(0)) revert InvalidProvider(provider);
        emit FaultReported(sessionId, graphId, provider, evidence);
    }

    // ------------------------------------------------------------------ provider

    /**
     * @notice Raises the caller's credit in `sessionId` to `cumulativeAmount`, as signed by the
     * session's requestor in an EIP-712 `Voucher`.
     * @dev Credits `cumulativeAmount - paid`, capped by what remains of the deposit. A voucher
     * that is not above what was already credited reverts with {VoucherAlreadyPaid}, so a
     * replayed or older voucher credits nothing. Accepted until `deadline + CLAIM_WINDOW`.
     */
    function claim(bytes32 sessionId, uint256 cumulativeAmount, bytes calldata signature) external {
        Session storage s = _existingSession(sessionId);
        if (s.closed) revert SessionAlreadyClosed(sessionId);
        _checkClaimWindow(sessionId, s.deadline);

        bytes32 digest = hashVoucher(sessionId, msg.sender, cumulativeAmount);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != s.requestor) {
            revert InvalidVoucherSignature(sessionId, msg.sender);
        }

        uint256 alreadyPaid = paid[sessionId][msg.sender];
        if (cumulativeAmount <= alreadyPaid) {
            revert VoucherAlreadyPaid(sessionId, msg.sender, cumulativeAmount, alreadyPaid);
        }
        uint256 remaining = s.remaining;
        if (remaining == 0) revert DepositExhausted(sessionId);
        uint256 owed = cumulativeAmount - alreadyPaid;
        uint256 credit = owed < remaining ? owed : remaining;

        s.remaining = uint96(remaining - credit);
        paid[sessionId][msg.sender] = alreadyPaid + credit;
        _accounts[msg.sender][s.token].credited += uint128(credit);
        emit Claimed(sessionId, msg.sender, credit);
    }

    // ------------------------------------------------------------------ anyone

    /**
     * @notice Closes `sessionId` once its claim window is over and refunds what remains of the
     * deposit to the requestor. Anyone may call it.
     */
    function closeSession(bytes32 sessionId) external nonReentrant {
        Session storage s = _existingSession(sessionId);
        if (s.closed) revert SessionAlreadyClosed(sessionId);
        uint256 availableAfter = uint256(s.deadline) + CLAIM_WINDOW;
        if (block.timestamp <= availableAfter) revert RefundNotYetAvailable(sessionId, availableAfter);

        s.closed = true;
        uint256 refund = s.remaining;
        emit SessionClosed(sessionId, refund);

        if (refund != 0) _push(s.token, s.requestor, refund);
    }

    /**
     * @notice Pays the caller everything credited to it in `token` and not yet withdrawn.
     */
    function withdraw(address token) external nonReentrant {
        Account storage a = _accounts[msg.sender][token];
        uint256 amount = a.credited - a.withdrawn;
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);

        a.withdrawn = a.credited;
        emit Withdrawn(msg.sender, token, amount);

        _push(token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /**
     * @notice The state of `sessionId`; all zero if it was never opened.
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
        returns (address requestor, address token, uint256 deposited, uint256 paidOut, uint64 deadline, bool closed)
    {
        Session storage s = _sessions[sessionId];
        return (s.requestor, s.token, s.deposited, s.deposited - s.remaining, s.deadline, s.closed);
    }

    /// @notice Amount of `token` credited to `account` and not yet withdrawn.
    function balanceOf(address account, address token) external view returns (uint256) {
        Account storage a = _accounts[account][token];
        return a.credited - a.withdrawn;
    }

    /// @notice Whether `graphId` of `sessionId` was settled (lets a client retry safely).
    function isGraphSettled(bytes32 sessionId, bytes32 graphId) external view returns (bool) {
        return _settled[sessionId][graphId];
    }

    /// @notice The EIP-712 digest a requestor signs for a voucher.
    function hashVoucher(bytes32 sessionId, address provider, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, sessionId, provider, cumulativeAmount)));
    }

    // ------------------------------------------------------------------ internal

    function _existingSession(bytes32 sessionId) private view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.requestor == address(0)) revert SessionNotFound(sessionId);
    }

    /// @dev The session, if it exists, is open, and the caller opened it.
    function _requestorSession(bytes32 sessionId) private view returns (Session storage s) {
        s = _existingSession(sessionId);
        if (s.requestor != msg.sender) revert NotRequestor(sessionId, msg.sender);
        if (s.closed) revert SessionAlreadyClosed(sessionId);
    }

    function _checkClaimWindow(bytes32 sessionId, uint64 deadline) private view {
        uint256 endsAt = uint256(deadline) + CLAIM_WINDOW;
        if (block.timestamp > endsAt) revert ClaimWindowOver(sessionId, endsAt);
    }

    function _checkValue(address token, uint256 amount) private view {
        uint256 expected = token == address(0) ? amount : 0;
        if (msg.value != expected) revert WrongNativeValue(expected, msg.value);
    }

    /// @dev Takes `amount` of an ERC-20 from the caller and checks that all of it arrived.
    function _pull(address token, uint256 amount) private {
        if (token == address(0)) return;
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = erc20.balanceOf(address(this)) - before;
        if (received != amount) revert TokenTransferMismatch(amount, received);
    }

    function _push(address token, address to, uint256 amount) private {
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }
}
