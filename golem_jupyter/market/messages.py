"""Signed negotiation messages between a requestor and a provider agent (DESIGN.md section 4).

A message travels as one JSON object per line (UTF-8, at most :data:`MAX_MESSAGE_BYTES`
including the newline)::

    {"kind": "propose", "sender": "0x..", "recipient": "0x..", "nonce": "0x<64 hex>",
     "expiry": 1700000000, "body": {...}, "signature": "0x<130 hex>"}

The sender signs, with EIP-712 under the domain ``{name: "GolemMarket", version: "1", chainId}``,
``Message(string kind,address sender,address recipient,bytes32 nonce,uint64 expiry,bytes32 bodyHash)``
where ``bodyHash`` is keccak256 of the body's canonical JSON (sorted keys, no spaces, ASCII).

:func:`verify_message` checks a received message strictly and in a fixed order, and refuses
anything wrong with a :class:`Rejection` that carries a :class:`Reason` code and one sentence
for the other side. Only a message that passed every check consumes its nonce in the
:class:`ReplayGuard`, so a forged or mangled copy of a real message cannot burn the real nonce.

Top-level fields must be in canonical form (checksummed addresses, lowercase hex), so one
message has exactly one wire form; body fields are covered by ``bodyHash`` as received.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils import is_checksum_address, keccak, to_checksum_address

from ..chain.types import UINT256_MAX, ZERO_ADDRESS
from ..errors import GolemError, InvalidInput

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest line (JSON plus newline) either side reads; longer lines are refused unread."""

MAX_TTL = 300
"""Seconds a message may stay valid: a receiver refuses expiries further ahead than this."""

CLOCK_SKEW = 5
"""Seconds of clock difference between the two machines tolerated on every expiry check."""

MAX_TEXT = 500
"""Characters of free text (reasons, details, names) a body field may hold."""

MAX_PEM = 16 * 1024
"""Characters a PEM certificate or certificate request may take."""

MAX_GPUS = 64

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a received line may have (a valid message has 2)."""

DOMAIN_NAME = "GolemMarket"
DOMAIN_VERSION = "1"

MESSAGE_TYPES = {
    "Message": [
        {"name": "kind", "type": "string"},
        {"name": "sender", "type": "address"},
        {"name": "recipient", "type": "address"},
        {"name": "nonce", "type": "bytes32"},
        {"name": "expiry", "type": "uint64"},
        {"name": "bodyHash", "type": "bytes32"},
    ]
}

# secp256k1's group order: signatures must have 0 < r < N and 0 < s <= N/2 (EIP-2), so that a
# signature cannot be rewritten into a second valid one for the same message.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_LOWER_HEX = re.compile(r"0x[0-9a-f]*")
_ANY_HEX = re.compile(r"0x[0-9a-fA-F]*")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a whole string, or one bracket
_AMOUNT = re.compile(r"0|[1-9][0-9]{0,77}")  # 2^256 has 78 digits


class Reason(StrEnum):
    """Why a message was refused; travels as ``code`` in a ``reject`` body."""

    MALFORMED = "MALFORMED"
    TOO_LARGE = "TOO_LARGE"
    UNKNOWN_KIND = "UNKNOWN_KIND"
    UNEXPECTED_KIND = "UNEXPECTED_KIND"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    BAD_VALUE = "BAD_VALUE"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_SENDER = "WRONG_SENDER"
    WRONG_RECIPIENT = "WRONG_RECIPIENT"
    WRONG_CHAIN = "WRONG_CHAIN"
    EXPIRED = "EXPIRED"
    EXPIRY_TOO_FAR = "EXPIRY_TOO_FAR"
    REPLAYED = "REPLAYED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_CLOSED = "SESSION_CLOSED"
    SESSION_ENDING = "SESSION_ENDING"
    WRONG_REQUESTOR = "WRONG_REQUESTOR"
    INSUFFICIENT_DEPOSIT = "INSUFFICIENT_DEPOSIT"
    INSUFFICIENT_ALLOCATION = "INSUFFICIENT_ALLOCATION"
    PRICE_TOO_LOW = "PRICE_TOO_LOW"
    NO_CAPACITY = "NO_CAPACITY"
    TOO_MANY_PROPOSALS = "TOO_MANY_PROPOSALS"
    WRONG_TOKEN = "WRONG_TOKEN"
    NO_GPU = "NO_GPU"
    UNKNOWN_AGREEMENT = "UNKNOWN_AGREEMENT"
    BAD_CSR = "BAD_CSR"
    BAD_CERTIFICATE = "BAD_CERTIFICATE"
    UNDERPAID = "UNDERPAID"
    EXPOSURE_LIMIT = "EXPOSURE_LIMIT"
    WORKER_FAILED = "WORKER_FAILED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"


class Rejection(GolemError):
    """A message was refused: ``code`` for programs, ``sentence`` for people."""

    def __init__(self, code: Reason, sentence: str) -> None:
        super().__init__(sentence)
        self.code = Reason(code)
        self.sentence = sentence

    def __repr__(self) -> str:
        return f"Rejection({self.code.value}, {self.sentence!r})"

    def to_body(self) -> dict[str, Any]:
        """The body of a ``reject`` message telling the other side about this refusal."""
        return {"code": self.code.value, "reason": _clip(self.sentence, MAX_TEXT)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Rejection:
        """The refusal a verified ``reject`` message's body describes."""
        return cls(Reason(body["code"]), str(body["reason"]))


# ---------------------------------------------------------------------------- body field types


def _show(value: object, limit: int = 40) -> str:
    """A short printable form of a received value: rejections never echo large inputs.

    Containers are named, not printed: repr of a deeply nested one could exhaust the C stack.
    """
    if value is None or isinstance(value, (str, int, float)):
        return _clip(repr(value), limit)
    return _json_type(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    """The JSON name of a value's type, for sentences."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class FieldType:
    """How one body field travels: its JSON type, its checks, and the Python value it becomes.

    ``check`` takes the JSON value (already of ``json_type``) and returns the Python value or
    raises ``ValueError`` with the end of a sentence ("must be ..."). ``to_wire`` turns a Python
    value given to :func:`sign_message` into the JSON value (which is then checked again).
    """

    json_type: type
    description: str
    check: Callable[[Any], Any]
    to_wire: Callable[[Any], Any]

    def decode(self, where: str, value: object) -> Any:
        """The Python value of a received field, or a :class:`Rejection` naming ``where``."""
        # bool is an int subclass in Python but not in this protocol.
        if isinstance(value, bool) or not isinstance(value, self.json_type):
            raise Rejection(Reason.WRONG_TYPE, f"Field {where} must be {self.description}, not {_json_type(value)}.")
        try:
            return self.check(value)
        except ValueError as error:
            raise Rejection(Reason.BAD_VALUE, f"Field {where} {error}, got {_show(value)}.") from None

    def encode(self, where: str, value: object) -> Any:
        """The JSON value of a field given to :func:`sign_message`, or :class:`InvalidInput`."""
        try:
            wire = self.to_wire(value)
        except TypeError as error:
            raise InvalidInput(f"Field {where} must be {self.description}: {error}.") from None
        except ValueError as error:
            raise InvalidInput(f"Field {where} {error}, got {_show(value)}.") from None
        try:
            self.decode(where, wire)
        except Rejection as rejection:
            raise InvalidInput(rejection.sentence) from None
        return wire


def _hex_to_wire(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected bytes or a 0x-hex string, got {type(value).__name__}")


def _address_check(value: str) -> str:
    # Mixed case claims an EIP-55 checksum, which must then be right (eth_utils' is_address
    # does not check it); all-lowercase or all-uppercase hex carries none.
    digits = value[2:]
    mixed = digits != digits.lower() and digits != digits.upper()
    if not _ADDRESS.fullmatch(value) or (mixed and not is_checksum_address(value)):
        raise ValueError("must be an Ethereum address (0x and 40 hex digits, checksummed if mixed-case)")
    address = to_checksum_address(value)
    if address == ZERO_ADDRESS:
        raise ValueError("cannot be the zero address")
    return address


def _address_to_wire(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected an address string, got {type(value).__name__}")
    return _address_check(value)  # a mistyped checksum fails here, not silently "fixed"


def _integer(low: int, high: int) -> FieldType:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    def to_wire(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__}")
        return value

    return FieldType(int, f"an integer between {low} and {high}", check, to_wire)


def _amount_check(value: str) -> int:
    if not _AMOUNT.fullmatch(value) or int(value) > UINT256_MAX:
        raise ValueError("must be a decimal string of a whole number between 0 and 2^256 - 1, without sign or zeros")
    return int(value)


def _amount_to_wire(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int amount, got {type(value).__name__}")
    return str(value)


def _text(max_len: int = MAX_TEXT, *, min_len: int = 0, prefix: str = "", what: str = "text") -> FieldType:
    def check(value: str) -> str:
        if not min_len <= len(value) <= max_len:
            raise ValueError(f"must be {min_len} to {max_len} characters long")
        if not value.startswith(prefix):
            raise ValueError(f"must start with {prefix!r}")
        return value

    def to_wire(value: object) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        return value

    return FieldType(str, f"{what} (a string)", check, to_wire)


def _hex_bytes(length: int) -> FieldType:
    def check(value: str) -> bytes:
        if not _ANY_HEX.fullmatch(value) or len(value) != 2 + 2 * length:
            raise ValueError(f"must be 0x followed by {2 * length} hex digits")
        return bytes.fromhex(value[2:])

    return FieldType(str, f"{length} bytes as 0x-hex (a string)", check, _hex_to_wire)


def _reason_check(value: str) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        raise ValueError("must be one of the protocol's rejection codes") from None


def _reason_to_wire(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a Reason, got {type(value).__name__}")
    return str(value)


BYTES32 = _hex_bytes(32)
ADDRESS = FieldType(str, "an Ethereum address (a string)", _address_check, _address_to_wire)
AMOUNT = FieldType(str, "an amount as a decimal string", _amount_check, _amount_to_wire)
UINT64 = _integer(0, 2**64 - 1)
CHAIN_ID = _integer(1, 2**64 - 1)
GPUS = _integer(0, MAX_GPUS)
TEXT = _text()
NAME = _text(min_len=1, what="a non-empty name")
PEM = _text(MAX_PEM, prefix="-----BEGIN", what="a PEM block")
TLS_ADDRESS = _text(min_len=len("tls://") + 1, prefix="tls://", what="a tls:// address")
SIGNATURE = _hex_bytes(65)
REASON = FieldType(str, "a rejection code (a string)", _reason_check, _reason_to_wire)

SCHEMAS: dict[str, dict[str, FieldType]] = {
    "propose": {
        "sessionId": BYTES32,
        "escrow": ADDRESS,
        "chainId": CHAIN_ID,
        "pricePerCpuSecond": AMOUNT,
        "pricePerGpuSecond": AMOUNT,
        "startFee": AMOUNT,
        "gpus": GPUS,
        "schedulerAddress": TLS_ADDRESS,
        "caCertificate": PEM,
        "deadline": UINT64,
    },
    "accept": {"agreementId": BYTES32, "csr": PEM, "exposure": AMOUNT},
    "confirm": {"agreementId": BYTES32, "certificate": PEM},
    "started": {"agreementId": BYTES32, "workerName": NAME},
    "allocated": {"agreementId": BYTES32, "amount": AMOUNT},
    "voucher": {"agreementId": BYTES32, "graphId": BYTES32, "cumulativeAmount": AMOUNT, "signature": SIGNATURE},
    "release": {"agreementId": BYTES32, "finalAmount": AMOUNT},
    "released": {"agreementId": BYTES32, "finalAmount": AMOUNT, "signature": SIGNATURE},
    "terminate": {"agreementId": BYTES32, "reason": TEXT},
    "status": {"agreementId": BYTES32},
    "ack": {"agreementId": BYTES32, "detail": TEXT},
    "reject": {"code": REASON, "reason": TEXT},
    "ping": {},
    "pong": {"endpoint": TEXT},
}
"""Every message kind and its body: field name -> type. Bodies have exactly these fields, but for
those in :data:`OPTIONAL`.

The escrow's allocations (DESIGN.md section 4, step 3): an ``accept`` may state the ``exposure``
(wei) the provider needs allocated before it serves; once the provider's worker joined, the
requestor allocates and sends ``allocated`` (the provider's allocation in total), which the
provider checks on-chain and answers with ``ack`` (or a ``reject``, INSUFFICIENT_ALLOCATION). At the
end, ``release`` asks for the provider's signed EIP-712 Release of its allocation for
``finalAmount`` in total; the provider answers ``released`` with the signature, or a ``reject``
(UNDERPAID) and claims with its last voucher instead."""

OPTIONAL: dict[str, frozenset[str]] = {"accept": frozenset({"exposure"})}
"""Body fields a message may leave out (a peer that states no exposure asks for none in particular)."""

TO_PROVIDER = frozenset(
    {"propose", "confirm", "allocated", "voucher", "release", "terminate", "status", "ack", "reject", "ping"}
)
"""Kinds a provider agent accepts (pass as ``kinds`` to :func:`verify_message`)."""

TO_REQUESTOR = frozenset({"accept", "started", "released", "status", "ack", "reject", "pong"})
"""Kinds a requestor accepts."""

_WIRE_FIELDS = ("kind", "sender", "recipient", "nonce", "expiry", "body", "signature")


# ---------------------------------------------------------------------------- the message


@dataclass(frozen=True)
class Message:
    """A verified message; ``body`` holds Python values (ints, bytes, checksummed addresses)."""

    kind: str
    sender: str
    recipient: str
    nonce: bytes
    expiry: int
    body: dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding of ``value`` that ``bodyHash`` is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def body_hash(body: Mapping[str, Any]) -> bytes:
    return keccak(canonical_json(body))


def _signable(chain_id: int, kind: str, sender: str, recipient: str, nonce: bytes, expiry: int, body: Any) -> Any:
    domain = {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id}
    message = {
        "kind": kind,
        "sender": sender,
        "recipient": recipient,
        "nonce": nonce,
        "expiry": expiry,
        "bodyHash": body_hash(body),
    }
    return encode_typed_data(domain, MESSAGE_TYPES, message)


def sign_message(
    account: LocalAccount,
    *,
    chain_id: int,
    kind: str,
    recipient: str,
    body: Mapping[str, Any],
    ttl: float = 60,
    now: float | None = None,
) -> dict[str, Any]:
    """A signed wire message from ``account`` to ``recipient``, valid for ``ttl`` seconds.

    ``body`` takes Python values (ints for amounts, bytes for ids, a :class:`Reason` for a
    code); they are encoded to their wire forms and checked as the receiver will check them,
    so a message this returns passes the receiver's schema. Bad input raises
    :class:`~golem_jupyter.errors.InvalidInput`.
    """
    if kind not in SCHEMAS:
        raise InvalidInput(f"{kind!r} is not a message kind; the kinds are {', '.join(SCHEMAS)}.")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 1:
        raise InvalidInput(f"chain_id must be a positive integer, got {chain_id!r}.")
    if not 0 < ttl <= MAX_TTL:
        raise InvalidInput(f"ttl must be more than 0 and at most {MAX_TTL} seconds, got {ttl!r}.")
    schema = SCHEMAS[kind]
    unknown = set(body) - set(schema)
    missing = set(schema) - set(body) - OPTIONAL.get(kind, frozenset())
    if unknown or missing:
        raise InvalidInput(
            f"A {kind} body has exactly the fields {sorted(schema)}; "
            f"unknown: {sorted(unknown)}, missing: {sorted(missing)}."
        )
    wire_body = {name: field.encode(f"body.{name}", body[name]) for name, field in schema.items() if name in body}
    if kind == "propose" and body["chainId"] != chain_id:
        raise InvalidInput(f"A proposal signed for chain {chain_id} must name it as chainId, not {body['chainId']}.")
    try:
        recipient = ADDRESS.decode("recipient", recipient)
    except Rejection:
        raise InvalidInput(f"recipient must be a non-zero Ethereum address, got {recipient!r}.") from None
    nonce = os.urandom(32)
    expiry = int((time.time() if now is None else now) + ttl)
    signable = _signable(chain_id, kind, account.address, recipient, nonce, expiry, wire_body)
    signature = bytes(account.sign_message(signable).signature)
    return {
        "kind": kind,
        "sender": account.address,
        "recipient": recipient,
        "nonce": "0x" + nonce.hex(),
        "expiry": expiry,
        "body": wire_body,
        "signature": "0x" + signature.hex(),
    }


def encode(wire: Mapping[str, Any]) -> bytes:
    """One line (ending in a newline) carrying ``wire``."""
    line = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"
    if len(line) > MAX_MESSAGE_BYTES:
        raise InvalidInput(f"This {wire.get('kind')} message takes {len(line)} bytes; at most {MAX_MESSAGE_BYTES}.")
    return line


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a JSON object repeats a key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text``, not counting brackets inside strings."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def decode_line(line: bytes) -> dict[str, Any]:
    """The JSON object on one received line (not yet verified: pass it to :func:`verify_message`).

    Refuses lines over :data:`MAX_MESSAGE_BYTES` (``TOO_LARGE``) and anything that is not one
    UTF-8 JSON object without repeated keys or NaN/Infinity (``MALFORMED``).
    """
    if len(line) > MAX_MESSAGE_BYTES:
        raise Rejection(Reason.TOO_LARGE, f"A message may take at most {MAX_MESSAGE_BYTES} bytes, not {len(line)}.")
    try:
        text = line.decode("utf-8")
        # eth-account imports py_ecc, which raises Python's recursion limit to 100000, so the C
        # JSON parser would overflow the C stack (a crash, not a RecursionError) on a line of
        # some 100k '[' before it refused it. Measure the depth first; messages need 2.
        if (text.count("[") + text.count("{") > MAX_JSON_DEPTH) and _nesting_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, repeated keys and integers too long to convert.
        raise Rejection(Reason.MALFORMED, f"A message must be one UTF-8 JSON object per line: {error}.") from None
    if not isinstance(value, dict):
        raise Rejection(Reason.MALFORMED, f"A message must be a JSON object, not {_json_type(value)}.")
    return value


# ---------------------------------------------------------------------------- verification


class ReplayGuard:
    """Remembers the (sender, nonce) of every accepted message until it has expired.

    An entry is kept until the message's expiry plus :data:`CLOCK_SKEW`, the last moment
    :func:`verify_message` would accept it, and dropped after. Memory is bounded: when
    ``max_entries`` live entries are held, new messages are refused (``NO_CAPACITY``) rather
    than forgetting a nonce that could still be replayed. Since expiries are at most
    :data:`MAX_TTL` ahead, the bound allows about ``max_entries / MAX_TTL`` messages a second.

    Not thread-safe: each process uses one guard from one event loop.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise InvalidInput("max_entries must be at least 1.")
        self.max_entries = max_entries
        self._seen: dict[tuple[str, bytes], int] = {}
        self._by_deadline: list[tuple[int, str, bytes]] = []  # heap, for pruning in deadline order

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: tuple[str, bytes]) -> bool:
        return key in self._seen

    def prune(self, now: float) -> None:
        """Forget entries whose message can no longer be accepted at ``now``."""
        while self._by_deadline and self._by_deadline[0][0] < now:
            _, sender, nonce = heapq.heappop(self._by_deadline)
            del self._seen[(sender, nonce)]

    def consume(self, sender: str, nonce: bytes, expiry: int, now: float) -> None:
        """Record a message's nonce, or refuse it if it was seen before or memory is full."""
        key = (sender, nonce)
        if key in self._seen:
            raise Rejection(Reason.REPLAYED, f"Message nonce 0x{nonce.hex()} from {sender} was already used.")
        self.prune(now)
        if len(self._seen) >= self.max_entries:
            raise Rejection(
                Reason.NO_CAPACITY,
                f"This agent is holding {len(self._seen)} recent messages, its limit; try again in a few minutes.",
            )
        keep_until = expiry + CLOCK_SKEW
        self._seen[key] = keep_until
        heapq.heappush(self._by_deadline, (keep_until, sender, nonce))


def _top_level(wire: object) -> tuple[str, str, str, bytes, int, dict[str, Any], bytes]:
    """Check the envelope's shape and field types; returns its fields converted."""
    if not isinstance(wire, dict):
        raise Rejection(Reason.MALFORMED, f"A message must be a JSON object, not {_json_type(wire)}.")
    unknown = sorted(str(name) for name in wire if name not in _WIRE_FIELDS)
    if unknown:
        raise Rejection(Reason.UNKNOWN_FIELD, f"A message has no field {_show(unknown[0])}.")
    missing = [name for name in _WIRE_FIELDS if name not in wire]
    if missing:
        raise Rejection(Reason.MISSING_FIELD, f"The message lacks its {missing[0]!r} field.")

    def typed(name: str, kind: type, description: str) -> Any:
        value = wire[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise Rejection(Reason.WRONG_TYPE, f"Field {name} must be {description}, not {_json_type(value)}.")
        return value

    kind = typed("kind", str, "a string")
    sender = typed("sender", str, "an address string")
    recipient = typed("recipient", str, "an address string")
    nonce = typed("nonce", str, "a hex string")
    expiry = typed("expiry", int, "an integer (Unix seconds)")
    body = typed("body", dict, "an object")
    signature = typed("signature", str, "a hex string")
    for name, value in (("sender", sender), ("recipient", recipient)):
        if not (_ADDRESS.fullmatch(value) and is_checksum_address(value)) or value == ZERO_ADDRESS:
            raise Rejection(
                Reason.BAD_VALUE, f"Field {name} must be a non-zero checksummed address, got {_show(value)}."
            )
    if not (_LOWER_HEX.fullmatch(nonce) and len(nonce) == 66):
        raise Rejection(Reason.BAD_VALUE, f"Field nonce must be 0x and 64 lowercase hex digits, got {_show(nonce)}.")
    if not 0 <= expiry < 2**64:
        raise Rejection(Reason.BAD_VALUE, f"Field expiry must be Unix seconds below 2^64, got {_show(expiry)}.")
    if not (_LOWER_HEX.fullmatch(signature) and len(signature) == 132):
        raise Rejection(
            Reason.BAD_VALUE, f"Field signature must be 0x and 130 lowercase hex digits, got {_show(signature)}."
        )
    return kind, sender, recipient, bytes.fromhex(nonce[2:]), expiry, body, bytes.fromhex(signature[2:])


def _decode_body(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    schema = SCHEMAS[kind]
    unknown = sorted(str(name) for name in body if name not in schema)
    if unknown:
        raise Rejection(Reason.UNKNOWN_FIELD, f"A {kind} body has no field {_show(unknown[0])}.")
    optional = OPTIONAL.get(kind, frozenset())
    missing = [name for name in schema if name not in body and name not in optional]
    if missing:
        raise Rejection(Reason.MISSING_FIELD, f"The {kind} body lacks its {missing[0]!r} field.")
    return {name: field.decode(f"body.{name}", body[name]) for name, field in schema.items() if name in body}


def _recover(signable: Any, signature: bytes) -> str | None:
    """The signer of a canonical (low-s, v in 27/28) signature, or None."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if signature[64] not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_N // 2:
        return None
    try:
        return Account.recover_message(signable, signature=signature)
    except (ValueError, BadSignature):
        return None


def verify_message(
    wire: object,
    *,
    chain_id: int,
    recipient: str,
    kinds: Collection[str],
    replay: ReplayGuard,
    now: float | None = None,
    sender: str | None = None,
) -> Message:
    """Check a received wire message completely; the verified :class:`Message`, or a :class:`Rejection`.

    Checks, in order: the envelope's fields and types; the kind is known and one of ``kinds``;
    it is addressed to ``recipient``; it comes from ``sender`` when one is expected; it has
    not expired and does not expire more than :data:`MAX_TTL` seconds ahead (both with
    :data:`CLOCK_SKEW` of tolerance); the body matches its schema (and a ``propose`` names
    ``chain_id``); the signature is the sender's; the nonce is unused. The nonce is consumed
    only when all of these passed.
    """
    now = time.time() if now is None else now
    kind, claimed, to, nonce, expiry, raw_body, signature = _top_level(wire)
    if kind not in SCHEMAS:
        raise Rejection(Reason.UNKNOWN_KIND, f"{_show(kind)} is not a message kind of this protocol.")
    if kind not in kinds:
        raise Rejection(Reason.UNEXPECTED_KIND, f"A {kind} message is not expected here.")
    if to != to_checksum_address(recipient):
        raise Rejection(Reason.WRONG_RECIPIENT, f"This message is addressed to {to}, not to this agent.")
    if sender is not None and claimed != to_checksum_address(sender):
        raise Rejection(Reason.WRONG_SENDER, f"This message comes from {claimed}; it was expected from {sender}.")
    if now > expiry + CLOCK_SKEW:
        raise Rejection(Reason.EXPIRED, f"This {kind} message expired {int(now - expiry)} s ago; send a fresh one.")
    if expiry > now + MAX_TTL + CLOCK_SKEW:
        raise Rejection(
            Reason.EXPIRY_TOO_FAR,
            f"This {kind} message expires {int(expiry - now)} s from now; at most {MAX_TTL} s is accepted.",
        )
    body = _decode_body(kind, raw_body)
    if kind == "propose" and body["chainId"] != chain_id:
        raise Rejection(
            Reason.WRONG_CHAIN, f"This proposal is for chain {body['chainId']}; this agent works on chain {chain_id}."
        )
    signer = _recover(_signable(chain_id, kind, claimed, to, nonce, expiry, raw_body), signature)
    if signer != claimed:
        raise Rejection(
            Reason.BAD_SIGNATURE, f"The signature of this {kind} message is not {claimed}'s on chain {chain_id}."
        )
    replay.consume(claimed, nonce, expiry, now)
    return Message(kind, claimed, to, nonce, expiry, body)
