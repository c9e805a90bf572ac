"""Contract reverts as Python exceptions named after the contract's custom errors.

``GolemEscrow`` reverts with ``InsufficientDeposit(sessionId, requested, unallocated)``; Python
sees ``InsufficientDeposit`` (a :class:`ContractError`) whose message says what happened and
what to do, and whose ``.fields`` hold the decoded arguments. A test checks that every custom
error in the compiled ABIs has a class here with the same signature.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, ClassVar

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError

from ..errors import GolemError


class ContractError(GolemError):
    """A contract call reverted. Subclasses are named after the Solidity custom error."""

    signature: ClassVar[str] = ""
    """Solidity declaration with argument names, e.g. ``ZeroAmount()``."""
    message: ClassVar[str] = "The contract refused the call."
    """What happened and what to do; ``{name}`` placeholders are the error's arguments."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        shown = {name: _show(name, value) for name, value in fields.items()}
        super().__init__(self.message.format(**shown))

    @classmethod
    def argument_types(cls) -> list[str]:
        inner = cls.signature[cls.signature.index("(") + 1 : -1]
        return [part.split()[0] for part in inner.split(",") if part.strip()]

    @classmethod
    def argument_names(cls) -> list[str]:
        inner = cls.signature[cls.signature.index("(") + 1 : -1]
        return [part.split()[1] for part in inner.split(",") if part.strip()]

    @classmethod
    def canonical(cls) -> str:
        """The signature as hashed for the selector: ``Name(type1,type2)``."""
        return f"{cls.signature[: cls.signature.index('(')]}({','.join(cls.argument_types())})"

    @classmethod
    def selector(cls) -> bytes:
        return keccak(text=cls.canonical())[:4]


class UnknownContractError(ContractError):
    """A revert whose data matches no known error."""

    message = "The contract reverted with data {data} that golem-jupyter does not recognise."


class ContractReverted(ContractError):
    """A revert with a plain reason string (``require(cond, "reason")``)."""

    message = "The contract reverted: {reason}"


class ContractPanic(ContractError):
    """A Solidity panic (overflow, division by zero, ...): a bug or a value out of range."""

    message = "The contract panicked ({reason}); the call was refused and nothing changed."


class TransactionFailed(GolemError):
    """A mined transaction failed and the node gave no reason."""


class TransactionRejected(GolemError):
    """The node refused a transaction before running it (funds for gas, nonce, fees)."""


# Arguments that are Unix times; shown as dates, kept as integers in ``.fields``.
_TIME_FIELDS = {"deadline", "timestamp", "endedAt", "availableAfter"}


def _show(name: str, value: Any) -> str:
    if name in _TIME_FIELDS and isinstance(value, int):
        try:
            return _dt.datetime.fromtimestamp(value, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (ValueError, OverflowError, OSError):  # beyond the years a datetime holds
            return f"{value} (Unix time)"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    return str(value)


def _error(signature: str, message: str, doc: str) -> type[ContractError]:
    name = signature[: signature.index("(")]
    cls = type(name, (ContractError,), {"signature": signature, "message": message, "__doc__": doc})
    cls.__module__ = __name__
    return cls


# fmt: off
_DECLARED = [
    # GolemEscrow
    ("SessionAlreadyExists(bytes32 sessionId)",
     "Session {sessionId} already exists; open the new session under a fresh id.",
     "openSession with an id that was used before."),
    ("SessionNotFound(bytes32 sessionId)",
     "There is no session {sessionId} on this escrow; check the id and the network.",
     "The session was never opened on this contract."),
    ("SessionAlreadyClosed(bytes32 sessionId)",
     "Session {sessionId} is closed and its remainder was refunded; open a new session.",
     "The session was closed by closeSession."),
    ("NotRequestor(bytes32 sessionId, address caller)",
     "Only the requestor who opened session {sessionId} may do this, not {caller}; use that wallet.",
     "A requestor-only function was called by someone else."),
    ("ZeroAmount()",
     "The amount must be greater than zero.",
     "A deposit, top-up or allocation of zero."),
    ("AmountTooLarge(uint256 amount, uint256 max)",
     "The amount {amount} is above what the escrow can hold per session ({max}).",
     "A deposit above 2^96 - 1 of the token's smallest unit."),
    ("DeadlineNotInFuture(uint64 deadline, uint256 timestamp)",
     "The deadline {deadline} is not after the chain's current time {timestamp}; pick a later deadline.",
     "openSession with a deadline in the past."),
    ("DeadlineTooFar(uint64 deadline, uint256 max)",
     "The deadline {deadline} is beyond the latest the escrow stores ({max}); pick an earlier deadline.",
     "openSession with a deadline above 2^40 - 1."),
    ("DeadlinePassed(bytes32 sessionId, uint64 deadline)",
     "Session {sessionId} passed its deadline {deadline}; open a new session instead of topping this one up.",
     "topUp after the deadline."),
    ("ClaimWindowOver(bytes32 sessionId, uint256 endedAt)",
     "The claim window of session {sessionId} ended at {endedAt}; nothing more can be credited in it.",
     "settleGraph, claim or release after deadline + CLAIM_WINDOW."),
    ("RefundNotYetAvailable(bytes32 sessionId, uint256 availableAfter)",
     "Only the requestor may close session {sessionId} before {availableAfter} (deadline + claim window); "
     "anyone may after that.",
     "closeSession by someone other than the requestor before deadline + CLAIM_WINDOW."),
    ("AllocationsStillOpen(bytes32 sessionId, uint256 openAllocations)",
     "Session {sessionId} still has {openAllocations} open allocation(s); ask those providers for their release, "
     "or reclaim the unallocated remainder now and close after the claim window.",
     "The requestor's early closeSession while providers hold open allocations."),
    ("WrongNativeValue(uint256 expected, uint256 sent)",
     "The call must carry {expected} wei of native currency but carried {sent}.",
     "msg.value does not match the amount (or is non-zero for an ERC-20 session)."),
    ("TokenTransferMismatch(uint256 expected, uint256 received)",
     "The token delivered {received} instead of {expected}; fee-on-transfer tokens cannot be used for escrow.",
     "The ERC-20 transferred less than asked."),
    ("GraphAlreadySettled(bytes32 sessionId, uint64 seq, uint64 nextSeq)",
     "Settlement {seq} of session {sessionId} was already mined (the session expects {nextSeq} next); "
     "nothing was paid twice.",
     "settleGraph with a seq below nextSeq: a retried settlement that was mined."),
    ("GraphOutOfOrder(bytes32 sessionId, uint64 seq, uint64 nextSeq)",
     "Settlement {seq} of session {sessionId} comes before its turn: settle {nextSeq} first.",
     "settleGraph with a seq above nextSeq."),
    ("LengthMismatch(uint256 providers, uint256 amounts)",
     "Got {providers} providers but {amounts} amounts; pass one amount per provider.",
     "allocate or settleGraph with arrays of different lengths."),
    ("InvalidProvider(address provider)",
     "{provider} is not a valid provider address.",
     "The zero address was given as a provider."),
    ("InsufficientDeposit(bytes32 sessionId, uint256 requested, uint256 unallocated)",
     "Allocating {requested} needs more than the {unallocated} left in session {sessionId}; "
     "top the session up first.",
     "allocate above the unallocated remainder of the deposit."),
    ("NoAllocation(bytes32 sessionId, address provider)",
     "{provider} holds no allocation in session {sessionId}; the requestor must allocate to it first.",
     "A provider without an allocation was settled, claimed for, released or reported."),
    ("AllocationReleased(bytes32 sessionId, address provider)",
     "The allocation of {provider} in session {sessionId} was released; nothing more can be paid from it.",
     "allocate, settleGraph, claim or release on a released allocation."),
    ("AllocationExceeded(bytes32 sessionId, address provider, uint256 requested, uint256 available)",
     "Paying {provider} {requested} needs more than the {available} left of its allocation in session "
     "{sessionId}; allocate more to it first.",
     "settleGraph above what is left of a provider's allocation."),
    ("AllocationExhausted(bytes32 sessionId, address provider)",
     "The allocation of {provider} in session {sessionId} is fully paid; nothing is left to claim.",
     "claim when the caller's allocation is fully paid."),
    ("InvalidVoucherSignature(bytes32 sessionId, address provider)",
     "The voucher for {provider} in session {sessionId} was not signed by the session's requestor "
     "(or names another session, chain or escrow).",
     "claim with a voucher the requestor did not sign for this provider, session and contract."),
    ("VoucherAlreadyPaid(bytes32 sessionId, address provider, uint256 cumulativeAmount, uint256 alreadyPaid)",
     "{provider} was already credited {alreadyPaid} in session {sessionId}; a voucher for {cumulativeAmount} "
     "adds nothing.",
     "A replayed or older voucher."),
    ("InvalidReleaseSignature(bytes32 sessionId, address provider)",
     "The release of {provider} in session {sessionId} is not signed by that provider (or names another "
     "session, amount, chain or escrow).",
     "release with a signature that is not the provider's."),
    ("InvalidFinalAmount(bytes32 sessionId, address provider, uint256 finalAmount, uint256 paid, uint256 allocated)",
     "A release of {provider} in session {sessionId} for {finalAmount} must lie between what it was paid "
     "({paid}) and its allocation ({allocated}).",
     "release below what was paid or above the allocation."),
    ("NothingToReclaim(bytes32 sessionId)",
     "Nothing of session {sessionId} is unallocated; there is nothing to reclaim.",
     "reclaim with an unallocated remainder of zero."),
    ("NothingToWithdraw(address account, address token)",
     "{account} has nothing to withdraw in token {token}.",
     "withdraw with a zero balance."),
    ("NativeTransferFailed(address to, uint256 amount)",
     "Sending {amount} wei to {to} failed (the receiver refused it); nothing changed, try again from an "
     "account that accepts payments.",
     "The receiver of a native transfer reverted."),
    ("InvalidClaimWindow()",
     "The claim window must be at least one second.",
     "Deploying the escrow with a zero claim window."),
    # ProviderRegistry
    ("OfferAlreadyActive(address provider)",
     "{provider} already has an active offer; update it instead of publishing again.",
     "publish while an offer is active."),
    ("NoActiveOffer(address provider)",
     "{provider} has no active offer on this registry.",
     "update, withdraw or offerOf without an active offer."),
    ("EmptyEndpoint()",
     "The offer needs an endpoint (host:port where the provider agent listens).",
     "publish or update with an empty endpoint."),
    ("FieldTooLong(string field, uint256 length, uint256 max)",
     "The offer's {field} is {length} bytes long; at most {max} are allowed.",
     "An offer field above its size limit."),
    ("NoCpus()",
     "An offer must have at least one CPU.",
     "publish or update with cpus = 0."),
    ("GpuModelMissing()",
     "An offer with GPUs must name the GPU model.",
     "gpus > 0 with an empty gpuModel."),
    ("GpuPriceWithoutGpus()",
     "An offer without GPUs cannot set a GPU price.",
     "pricePerGpuSecond > 0 with gpus = 0."),
    ("PageSizeTooLarge(uint256 limit, uint256 max)",
     "A page of {limit} offers was asked for; at most {max} are returned at once.",
     "activeOffers with a limit above MAX_PAGE_SIZE."),
    # OpenZeppelin errors that can surface through the escrow
    ("ReentrancyGuardReentrantCall()",
     "A re-entrant call into the escrow was refused.",
     "A nonReentrant function was entered again during its own execution."),
    ("SafeERC20FailedOperation(address token)",
     "The token {token} refused the transfer.",
     "An ERC-20 transfer returned false or had no code."),
    ("ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed)",
     "The escrow {spender} may spend only {allowance} of your tokens but needs {needed}; approve more first.",
     "transferFrom above the allowance."),
    ("StringTooLong(string str)",
     "The text {str!r} is too long to be stored as a short string (at most 31 bytes).",
     "OpenZeppelin ShortStrings, used by EIP712's name and version; only at deployment."),
    ("InvalidShortString()",
     "A stored short string is malformed.",
     "OpenZeppelin ShortStrings read a length above 31; only at deployment."),
    ("ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed)",
     "{sender} holds {balance} tokens but {needed} are needed.",
     "A token transfer above the sender's balance."),
]
# fmt: on

ERRORS: dict[str, type[ContractError]] = {}
for _signature, _message, _doc in _DECLARED:
    _cls = _error(_signature, _message, _doc)
    ERRORS[_cls.__name__] = _cls
    globals()[_cls.__name__] = _cls

_BY_SELECTOR: dict[bytes, type[ContractError]] = {cls.selector(): cls for cls in ERRORS.values()}


def decode_revert(data: bytes | str) -> ContractError:
    """The exception for raw revert data (selector + ABI-encoded arguments)."""
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else bytes(data)
    cls = _BY_SELECTOR.get(raw[:4])
    if cls is None:
        return UnknownContractError(data=raw)
    types = cls.argument_types()
    values = abi_decode(types, raw[4:])
    # eth-abi decodes addresses in lower case; the rest of the package uses checksummed ones.
    values = [to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)]
    return cls(**dict(zip(cls.argument_names(), values, strict=True)))


def translate(error: Exception) -> Exception:
    """Turn web3's revert exceptions into :class:`ContractError`; leave others as they are."""
    if isinstance(error, ContractCustomError):
        data = error.data if isinstance(error.data, str) else (error.args[0] if error.args else "")
        return decode_revert(data)
    if isinstance(error, ContractPanicError):
        return ContractPanic(reason=error.message or str(error))
    if isinstance(error, ContractLogicError):
        reason = (error.message or str(error)).removeprefix("execution reverted: ")
        return ContractReverted(reason=reason)
    if isinstance(error, Web3RPCError):
        return TransactionRejected(
            f"The node refused the transaction: {error.message or error}. Nothing was sent; "
            "check the account's balance for value and gas."
        )
    return error
