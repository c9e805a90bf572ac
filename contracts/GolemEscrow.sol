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
 * @notice Holds a requestor's deposit for a compute session and pays each provider from an
 * allocation only that provider's settlements, vouchers and release can draw on (version 2).
 * The external interface, its events, errors and their documentation are in {IGolemEscrow}.
 *
 * @dev Invariant, per token: this contract's balance == sum over sessions not closed of
 * (`unallocated` + sum over open allocations of `allocated - paid`) + sum over accounts of
 * `credited - withdrawn`. Per session: `deposited - reclaimed - paidOut == unallocated + sum over
 * open allocations of (allocated - paid)`.
 *
 * Guards: every function that moves tokens or native currency in or out (openSession, topUp,
 * closeSession, reclaim, withdraw) is `nonReentrant` and updates state before it transfers.
 * allocate, settleGraph, claim, release and reportFault only move amounts between the
 * contract's own counters and make no external call, so nothing can re-enter them; they skip
 * the guard to keep settlement cheap.
 *
 * Storage is laid out for the per-graph path: settleGraph touches two session slots, both
 * non-zero from the session's opening (so even its first graph only updates them), one
 * allocation slot per provider (created by allocate, so settling only updates it) and one
 * account slot per provider (cumulative counters that never return to zero, so only a
 * provider's very first payment ever creates it). allocate touches the first and third session
 * slots, a release the second and third (and the first when it still credits).
 */
contract GolemEscrow is IGolemEscrow, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev Four slots. Amounts fit in 96 bits: a session holds at most 2^96 - 1. A session
    /// exists when its deadline is not zero (openSession requires a deadline in the future).
    struct Session {
        // slot 0: who may allocate and settle; paidOut written by every settlement
        address requestor;
        uint96 paidOut;
        // slot 1: the clock and the order; nextSeq written by every settlement
        address token;
        uint40 deadline;
        uint48 nextSeq;
        bool closed;
        // slot 2: written by allocate, release, topUp, reclaim and close
        uint96 deposited;
        uint96 unallocated;
        uint32 openAllocations;
        // slot 3: written by reclaim only
        uint96 reclaimed;
    }

    /// @dev Cumulative counters instead of a plain balance: the slot never returns to zero, so
    /// crediting a provider that was paid before costs a warm-slot write, not a fresh one.
    struct Account {
        uint128 credited;
        uint128 withdrawn;
    }

    bytes32 private constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 sessionId,address provider,uint256 cumulativeAmount)");
    bytes32 private constant RELEASE_TYPEHASH =
        keccak256("Release(bytes32 sessionId,address provider,uint256 finalAmount)");

    uint256 private constant MAX_AMOUNT = type(uint96).max;
    uint256 private constant PAID_SHIFT = 96;
    uint256 private constant RELEASED = 1 << 192;

    /// @inheritdoc IGolemEscrow
    uint64 public immutable CLAIM_WINDOW;

    mapping(bytes32 sessionId => Session) private _sessions;
    /// @dev One word per (session, provider), read and written whole (one storage read and one
    /// write per provider settled): `allocated` in bits 0-95, `paid` in bits 96-191, `released`
    /// in bit 192. `paid <= allocated` always; a release sets both to the final amount.
    mapping(bytes32 sessionId => mapping(address provider => uint256 word)) private _allocations;
    // Token first: settling a graph computes the token's inner mapping once for all its providers.
    mapping(address token => mapping(address account => Account)) private _accounts;

    /// @param claimWindow Seconds after each session's deadline during which providers may claim.
    constructor(uint64 claimWindow) EIP712("GolemEscrow", "2") {
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
        if (_sessions[sessionId].deadline != 0) revert SessionAlreadyExists(sessionId);
        if (amount == 0) revert ZeroAmount();
        if (amount > MAX_AMOUNT) revert AmountTooLarge(amount, MAX_AMOUNT);
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline, block.timestamp);
        if (deadline > type(uint40).max) revert DeadlineTooFar(deadline, type(uint40).max);
        _checkValue(token, amount);

        Session storage s = _sessions[sessionId];
        s.requestor = msg.sender;
        s.deadline = uint40(deadline);
        s.token = token;
        s.deposited = uint96(amount);
        s.unallocated = uint96(amount);
        emit SessionOpened(sessionId, msg.sender, token, amount, deadline);

        _pull(token, amount);
    }

    /// @inheritdoc IGolemEscrow
    function topUp(bytes32 sessionId, uint256 amount) external payable nonReentrant {
        Session storage s = _requestorSession(sessionId);
        uint64 deadline = s.deadline;
        if (block.timestamp > deadline) revert DeadlinePassed(sessionId, deadline);
        if (amount == 0) revert ZeroAmount();
        uint256 deposited = s.deposited + amount;
        if (deposited > MAX_AMOUNT) revert AmountTooLarge(deposited, MAX_AMOUNT);
        address token = s.token;
        _checkValue(token, amount);

        // Cannot overflow: unallocated <= deposited <= MAX_AMOUNT.
        s.unallocated += uint96(amount);
        s.deposited = uint96(deposited);
        emit ToppedUp(sessionId, amount, deposited);

        _pull(token, amount);
    }

    /// @inheritdoc IGolemEscrow
    function allocate(bytes32 sessionId, address[] calldata providers, uint256[] calldata amounts) external {
        Session storage s = _sessions[sessionId];
        address requestor = s.requestor;
        if (requestor != msg.sender) {
            if (s.deadline == 0) revert SessionNotFound(sessionId);
            revert NotRequestor(sessionId, msg.sender);
        }
        if (providers.length != amounts.length) revert LengthMismatch(providers.length, amounts.length);
        // A closed session has nothing unallocated: the closed flag is read only to explain a refusal.
        // No deadline check: what is allocated after the claim window cannot be drawn on, and the
        // unilateral close refunds it.
        mapping(address => uint256) storage sessionAllocations = _allocations[sessionId];
        uint256 unallocated = s.unallocated;
        uint256 total;
        uint256 opened;
        for (uint256 i; i < providers.length; ++i) {
            uint256 amount = amounts[i];
            address provider = providers[i];
            if (amount == 0) revert ZeroAmount();
            if (provider == address(0)) revert InvalidProvider(provider);
            total += amount;
            if (total > unallocated) {
                if (s.closed) revert SessionAlreadyClosed(sessionId);
                revert InsufficientDeposit(sessionId, total, unallocated);
            }
            uint256 word = sessionAllocations[provider];
            if (word & RELEASED != 0) revert AllocationReleased(sessionId, provider);
            if (word == 0) ++opened;
            // Cannot carry into `paid`: allocated + amount <= deposited <= MAX_AMOUNT (what is
            // allocated came out of the deposit, and amount <= total <= unallocated).
            sessionAllocations[provider] = word + amount;
            emit Allocated(sessionId, provider, amount);
        }
        s.unallocated = uint96(unallocated - total);
        if (opened != 0) s.openAllocations += uint32(opened);
    }

    /// @inheritdoc IGolemEscrow
    function settleGraph(
        bytes32 sessionId,
        uint64 seq,
        bytes32 graphId,
        address[] calldata providers,
        uint256[] calldata amounts,
        bytes32 resultRoot
    ) external {
        Session storage s = _requestorSession(sessionId);
        _checkClaimWindow(sessionId, s.deadline);
        uint64 next = s.nextSeq;
        if (seq != next) {
            if (seq < next) revert GraphAlreadySettled(sessionId, seq, next);
            revert GraphOutOfOrder(sessionId, seq, next);
        }
        if (providers.length != amounts.length) revert LengthMismatch(providers.length, amounts.length);
        s.nextSeq = uint48(next + 1);

        mapping(address => uint256) storage sessionAllocations = _allocations[sessionId];
        mapping(address => Account) storage accounts = _accounts[s.token];
        uint256 total;
        for (uint256 i; i < providers.length; ++i) {
            uint256 amount = amounts[i];
            if (amount == 0) continue;
            address provider = providers[i];
            uint256 word = sessionAllocations[provider];
            (uint256 allocated, uint256 alreadyPaid) = _open(sessionId, provider, word);
            uint256 available = allocated - alreadyPaid;
            if (amount > available) revert AllocationExceeded(sessionId, provider, amount, available);
            // Cannot carry out of `paid`: paid + amount <= allocated < 2^96.
            sessionAllocations[provider] = word + (amount << PAID_SHIFT);
            accounts[provider].credited += uint128(amount);
            unchecked {
                total += amount; // each amount < 2^96
            }
            emit Paid(sessionId, provider, amount);
        }
        // Cannot truncate: everything paid came out of allocations, out of the deposit.
        if (total != 0) s.paidOut += uint96(total);
        emit GraphSettled(sessionId, seq, graphId, total, resultRoot);
    }

    /// @inheritdoc IGolemEscrow
    function reclaim(bytes32 sessionId) external nonReentrant {
        Session storage s = _requestorSession(sessionId);
        uint96 amount = s.unallocated;
        if (amount == 0) revert NothingToReclaim(sessionId);

        s.unallocated = 0;
        s.reclaimed += amount;
        emit Reclaimed(sessionId, amount);

        _push(s.token, msg.sender, amount);
    }

    /// @inheritdoc IGolemEscrow
    function reportFault(bytes32 sessionId, bytes32 graphId, address provider, bytes32 evidence) external {
        _requestorSession(sessionId);
        if (_allocations[sessionId][provider] == 0) revert NoAllocation(sessionId, provider);
        emit FaultReported(sessionId, graphId, provider, evidence);
    }

    // ------------------------------------------------------------------ provider

    /// @inheritdoc IGolemEscrow
    function claim(bytes32 sessionId, uint256 cumulativeAmount, bytes calldata signature) external {
        Session storage s = _openSession(sessionId);
        _checkClaimWindow(sessionId, s.deadline);

        bytes32 digest = hashVoucher(sessionId, msg.sender, cumulativeAmount);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != s.requestor) {
            revert InvalidVoucherSignature(sessionId, msg.sender);
        }

        mapping(address => uint256) storage sessionAllocations = _allocations[sessionId];
        uint256 word = sessionAllocations[msg.sender];
        (uint256 allocated, uint256 alreadyPaid) = _open(sessionId, msg.sender, word);
        if (cumulativeAmount <= alreadyPaid) {
            revert VoucherAlreadyPaid(sessionId, msg.sender, cumulativeAmount, alreadyPaid);
        }
        uint256 available = allocated - alreadyPaid;
        if (available == 0) revert AllocationExhausted(sessionId, msg.sender);
        uint256 owed = cumulativeAmount - alreadyPaid;
        uint256 credit = owed < available ? owed : available;

        sessionAllocations[msg.sender] = word + (credit << PAID_SHIFT); // paid + credit <= allocated
        s.paidOut += uint96(credit);
        _accounts[s.token][msg.sender].credited += uint128(credit);
        emit Claimed(sessionId, msg.sender, credit);
    }

    // ------------------------------------------------------------------ anyone

    /// @inheritdoc IGolemEscrow
    function release(bytes32 sessionId, address provider, uint256 finalAmount, bytes calldata signature) external {
        Session storage s = _openSession(sessionId);
        _checkClaimWindow(sessionId, s.deadline);

        bytes32 digest = hashRelease(sessionId, provider, finalAmount);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != provider) {
            revert InvalidReleaseSignature(sessionId, provider);
        }

        mapping(address => uint256) storage sessionAllocations = _allocations[sessionId];
        (uint256 allocated, uint256 alreadyPaid) = _open(sessionId, provider, sessionAllocations[provider]);
        if (finalAmount < alreadyPaid || finalAmount > allocated) {
            revert InvalidFinalAmount(sessionId, provider, finalAmount, alreadyPaid, allocated);
        }
        uint256 credit = finalAmount - alreadyPaid;
        uint256 returned = allocated - finalAmount;

        // finalAmount <= allocated < 2^96
        sessionAllocations[provider] = finalAmount | (finalAmount << PAID_SHIFT) | RELEASED;
        // Cannot overflow: returned came out of the deposit; openAllocations counts this one.
        s.unallocated += uint96(returned);
        s.openAllocations -= 1;
        if (credit != 0) {
            s.paidOut += uint96(credit);
            _accounts[s.token][provider].credited += uint128(credit);
        }
        emit Released(sessionId, provider, finalAmount, returned);
    }

    /// @inheritdoc IGolemEscrow
    function closeSession(bytes32 sessionId) external nonReentrant {
        Session storage s = _openSession(sessionId);
        address requestor = s.requestor;
        uint256 availableAfter = uint256(s.deadline) + CLAIM_WINDOW;
        uint256 refund;
        if (block.timestamp > availableAfter) {
            // Unilateral: everything not paid to a provider, open allocations' unpaid parts included.
            refund = uint256(s.deposited) - s.reclaimed - s.paidOut;
        } else {
            if (msg.sender != requestor) revert RefundNotYetAvailable(sessionId, availableAfter);
            uint256 open = s.openAllocations;
            if (open != 0) revert AllocationsStillOpen(sessionId, open);
            // Cooperative: no allocation is open, so the unallocated remainder is all the session holds.
            refund = s.unallocated;
        }

        s.closed = true;
        if (s.unallocated != 0) s.unallocated = 0;
        emit SessionClosed(sessionId, refund);

        if (refund != 0) _push(s.token, requestor, refund);
    }

    /// @inheritdoc IGolemEscrow
    function withdraw(address token) external nonReentrant {
        Account storage a = _accounts[token][msg.sender];
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
        )
    {
        Session storage s = _sessions[sessionId];
        return (
            s.requestor,
            s.token,
            s.deposited,
            s.paidOut,
            s.unallocated,
            s.deadline,
            s.nextSeq,
            s.openAllocations,
            s.closed
        );
    }

    /// @inheritdoc IGolemEscrow
    function reclaimed(bytes32 sessionId) external view returns (uint256) {
        return _sessions[sessionId].reclaimed;
    }

    /// @inheritdoc IGolemEscrow
    function allocations(bytes32 sessionId, address provider) external view returns (uint256, uint256, bool) {
        uint256 word = _allocations[sessionId][provider];
        return (uint96(word), uint96(word >> PAID_SHIFT), word & RELEASED != 0);
    }

    /// @inheritdoc IGolemEscrow
    function paid(bytes32 sessionId, address provider) external view returns (uint256) {
        return uint96(_allocations[sessionId][provider] >> PAID_SHIFT);
    }

    /// @inheritdoc IGolemEscrow
    function balanceOf(address account, address token) external view returns (uint256) {
        Account storage a = _accounts[token][account];
        return a.credited - a.withdrawn;
    }

    /// @inheritdoc IGolemEscrow
    function hashVoucher(bytes32 sessionId, address provider, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, sessionId, provider, cumulativeAmount)));
    }

    /// @inheritdoc IGolemEscrow
    function hashRelease(bytes32 sessionId, address provider, uint256 finalAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RELEASE_TYPEHASH, sessionId, provider, finalAmount)));
    }

    // ------------------------------------------------------------------ internal

    /// @dev The session, if it exists and is not closed (reads its second slot only).
    function _openSession(bytes32 sessionId) private view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.deadline == 0) revert SessionNotFound(sessionId);
        if (s.closed) revert SessionAlreadyClosed(sessionId);
    }

    /// @dev The session, if it exists, is not closed, and the caller opened it.
    function _requestorSession(bytes32 sessionId) private view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.requestor != msg.sender) {
            if (s.deadline == 0) revert SessionNotFound(sessionId);
            revert NotRequestor(sessionId, msg.sender);
        }
        if (s.closed) revert SessionAlreadyClosed(sessionId);
    }

    /// @dev (allocated, paid) of an allocation word, which must exist and not be released.
    function _open(bytes32 sessionId, address provider, uint256 word)
        private
        pure
        returns (uint256 allocated, uint256 alreadyPaid)
    {
        if (word & RELEASED != 0) revert AllocationReleased(sessionId, provider);
        allocated = uint96(word);
        if (allocated == 0) revert NoAllocation(sessionId, provider);
        alreadyPaid = uint96(word >> PAID_SHIFT);
    }

    function _checkClaimWindow(bytes32 sessionId, uint256 deadline) private view {
        uint256 endsAt = deadline + CLAIM_WINDOW;
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
