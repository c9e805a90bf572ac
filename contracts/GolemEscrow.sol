// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IGolemEscrow} from "./interfaces/IGolemEscrow.sol";

/**
 * @title GolemEscrow
 * @notice Holds a requestor's deposit for a compute session and pays providers for each
 * graph execution settled in it. The external interface, its events, errors and their
 * documentation are in {IGolemEscrow}.
 *
 * @dev Invariant, per token: this contract's balance == sum of `remaining` over open sessions
 * + sum over accounts of credited-but-not-withdrawn amounts.
 *
 * Every function that transfers tokens or native currency (openSession, topUp, closeSession,
 * withdraw) is `nonReentrant` and updates state before it transfers. settleGraph, claim and
 * reportFault only move amounts between internal counters and make no external call, so
 * nothing can re-enter them; they skip the guard to keep per-graph settlement cheap.
 */
contract GolemEscrow is IGolemEscrow, EIP712, ReentrancyGuardTransient {
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

    /// @inheritdoc IGolemEscrow
    uint64 public immutable CLAIM_WINDOW;

    mapping(bytes32 sessionId => Session) private _sessions;
    mapping(bytes32 sessionId => mapping(bytes32 graphId => bool)) private _settled;
    mapping(address account => mapping(address token => Account)) private _accounts;

    /// @inheritdoc IGolemEscrow
    mapping(bytes32 sessionId => mapping(address provider => uint256)) public paid;

    /// @param claimWindow Seconds after each session's deadline during which providers may claim.
    constructor(uint64 claimWindow) EIP712("GolemEscrow", "1") {
        if (claimWindow == 0) revert InvalidClaimWindow();
        CLAIM_WINDOW = claimWindow;
    }

    // ------------------------------------------------------------------ requestor

    /// @inheritdoc IGolemEscrow
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

    /// @inheritdoc IGolemEscrow
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

    /// @inheritdoc IGolemEscrow
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

    /// @inheritdoc IGolemEscrow
    function reportFault(bytes32 sessionId, bytes32 graphId, address provider, bytes32 evidence) external {
        _requestorSession(sessionId);
        if (provider == address(0)) revert InvalidProvider(provider);
        emit FaultReported(sessionId, graphId, provider, evidence);
    }

    // ------------------------------------------------------------------ provider

    /// @inheritdoc IGolemEscrow
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

    /// @inheritdoc IGolemEscrow
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

    /// @inheritdoc IGolemEscrow
    function withdraw(address token) external nonReentrant {
        Account storage a = _accounts[msg.sender][token];
        uint256 amount = a.credited - a.withdrawn;
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);

        a.withdrawn = a.credited;
        emit Withdrawn(msg.sender, token, amount);

        _push(token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IGolemEscrow
    function sessions(bytes32 sessionId)
        external
        view
        returns (address requestor, address token, uint256 deposited, uint256 paidOut, uint64 deadline, bool closed)
    {
        Session storage s = _sessions[sessionId];
        return (s.requestor, s.token, s.deposited, s.deposited - s.remaining, s.deadline, s.closed);
    }

    /// @inheritdoc IGolemEscrow
    function balanceOf(address account, address token) external view returns (uint256) {
        Account storage a = _accounts[account][token];
        return a.credited - a.withdrawn;
    }

    /// @inheritdoc IGolemEscrow
    function isGraphSettled(bytes32 sessionId, bytes32 graphId) external view returns (bool) {
        return _settled[sessionId][graphId];
    }

    /// @inheritdoc IGolemEscrow
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
