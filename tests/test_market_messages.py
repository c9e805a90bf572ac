"""Signed negotiation messages: round trips, every rejection, and forgeries that never burn a nonce."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from golem_jupyter.errors import GolemError, InvalidInput
from golem_jupyter.market import (
    MAX_MESSAGE_BYTES,
    MAX_TTL,
    SCHEMAS,
    TO_PROVIDER,
    TO_REQUESTOR,
    Reason,
    Rejection,
    ReplayGuard,
    decode_line,
    encode,
    sign_message,
    verify_message,
)
from golem_jupyter.market.messages import CLOCK_SKEW, OPTIONAL

CHAIN = 1337
NOW = 1_700_000_000
REQUESTOR = Account.from_key("0x" + "11" * 32)
PROVIDER = Account.from_key("0x" + "22" * 32)
MALLORY = Account.from_key("0x" + "33" * 32)
ESCROW = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ID = bytes(range(32))
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# One body per kind, in Python values (what sign_message takes) ...
BODIES: dict[str, dict[str, Any]] = {
    "propose": {
        "sessionId": ID,
        "escrow": ESCROW.lower(),
        "chainId": CHAIN,
        "pricePerCpuSecond": 10,
        "pricePerGpuSecond": 2**256 - 1,
        "startFee": 0,
        "gpus": 1,
        "schedulerAddress": "tls://127.0.0.1:8786",
        "caCertificate": PEM,
        "deadline": NOW + 3600,
    },
    "accept": {"agreementId": ID, "csr": PEM.replace("CERTIFICATE", "CERTIFICATE REQUEST"), "exposure": 10**15},
    "confirm": {"agreementId": ID, "certificate": PEM},
    "started": {"agreementId": ID, "workerName": PROVIDER.address},
    "allocated": {"agreementId": ID, "amount": 10**16},
    "voucher": {"agreementId": ID, "graphId": b"\xff" * 32, "cumulativeAmount": 12345, "signature": b"\x01" * 65},
    "release": {"agreementId": ID, "finalAmount": 12345},
    "released": {"agreementId": ID, "finalAmount": 12345, "signature": b"\x02" * 65},
    "terminate": {"agreementId": ID, "reason": "the notebook was closed"},
    "status": {"agreementId": ID},
    "ack": {"agreementId": ID, "detail": ""},
    "reject": {"code": Reason.PRICE_TOO_LOW, "reason": "Your price is below mine."},
    "ping": {},
    "pong": {"endpoint": "127.0.0.1:7001"},
}
# ... and what verify_message decodes it to.
DECODED: dict[str, dict[str, Any]] = {
    **BODIES,
    "propose": {**BODIES["propose"], "escrow": ESCROW},
}
SENDER_OF = {kind: (REQUESTOR, PROVIDER) if kind in TO_PROVIDER else (PROVIDER, REQUESTOR) for kind in SCHEMAS}


def signed(kind: str = "status", account=REQUESTOR, recipient=PROVIDER, body=None, **kwargs) -> dict[str, Any]:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("chain_id", CHAIN)
    return sign_message(account, kind=kind, recipient=recipient.address, body=body or BODIES[kind], **kwargs)


def verify(wire: Any, guard: ReplayGuard, *, recipient=PROVIDER, kinds=SCHEMAS, now: float = NOW, **kwargs):
    kwargs.setdefault("chain_id", CHAIN)
    return verify_message(wire, recipient=recipient.address, kinds=kinds, replay=guard, now=now, **kwargs)


def resign(wire: dict[str, Any], account=REQUESTOR, chain_id: int = CHAIN, **changes: Any) -> dict[str, Any]:
    """``wire`` with ``changes`` applied and signed again, by hand from the protocol's definition.

    Written independently of the module's own signing, so the round-trip tests also check
    that the implementation follows the spec.
    """
    wire = {**copy.deepcopy(wire), **changes}
    body_json = json.dumps(wire["body"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    typed = encode_typed_data(
        {"name": "GolemMarket", "version": "1", "chainId": chain_id},
        {
            "Message": [
                {"name": "kind", "type": "string"},
                {"name": "sender", "type": "address"},
                {"name": "recipient", "type": "address"},
                {"name": "nonce", "type": "bytes32"},
                {"name": "expiry", "type": "uint64"},
                {"name": "bodyHash", "type": "bytes32"},
            ]
        },
        {
            "kind": wire["kind"],
            "sender": wire["sender"],
            "recipient": wire["recipient"],
            "nonce": bytes.fromhex(wire["nonce"][2:]),
            "expiry": wire["expiry"],
            "bodyHash": keccak(body_json.encode()),
        },
    )
    wire["signature"] = "0x" + bytes(account.sign_message(typed).signature).hex()
    return wire


def rejected(wire: Any, guard: ReplayGuard, **kwargs) -> Rejection:
    with pytest.raises(Rejection) as info:
        verify(wire, guard, **kwargs)
    assert isinstance(info.value, GolemError)
    assert info.value.sentence and len(info.value.sentence) < 400
    return info.value


# ---------------------------------------------------------------------------- round trips


def test_directions_cover_every_kind():
    assert TO_PROVIDER | TO_REQUESTOR == set(SCHEMAS) == set(BODIES)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_kind_round_trips_through_a_line(kind):
    sender, recipient = SENDER_OF[kind]
    wire = signed(kind, sender, recipient)
    line = encode(wire)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert resign(wire, sender)["signature"] == wire["signature"]  # the spec's EIP-712, computed by hand
    kinds = TO_PROVIDER if recipient is PROVIDER else TO_REQUESTOR
    message = verify(decode_line(line), ReplayGuard(), recipient=recipient, kinds=kinds, sender=sender.address)
    assert (message.kind, message.sender, message.recipient) == (kind, sender.address, recipient.address)
    assert message.expiry == NOW + 60
    assert message.nonce == bytes.fromhex(wire["nonce"][2:])
    assert message.body == DECODED[kind]


def test_an_accept_may_leave_out_the_exposure_and_nothing_else_is_optional():
    """A provider that states no exposure still accepts; every other field of every kind is required."""
    plain = {k: v for k, v in BODIES["accept"].items() if k != "exposure"}
    wire = signed("accept", PROVIDER, REQUESTOR, body=plain)
    assert "exposure" not in wire["body"]
    message = verify(wire, ReplayGuard(), recipient=REQUESTOR, kinds=TO_REQUESTOR)
    assert message.body == plain
    assert OPTIONAL == {"accept": frozenset({"exposure"})}
    for kind in ("allocated", "release", "released"):
        for name in SCHEMAS[kind]:
            without_it = {k: v for k, v in BODIES[kind].items() if k != name}
            with pytest.raises(InvalidInput, match="missing"):
                signed(kind, *SENDER_OF[kind], body=without_it)


def test_wire_values_are_json_safe_strings():
    wire = signed("propose")
    body = wire["body"]
    assert body["pricePerGpuSecond"] == str(2**256 - 1)
    assert body["sessionId"] == "0x" + ID.hex()
    assert body["escrow"] == ESCROW
    assert wire["sender"] == REQUESTOR.address and wire["recipient"] == PROVIDER.address
    assert len(wire["nonce"]) == 66 and len(wire["signature"]) == 132


def test_each_message_gets_a_fresh_nonce():
    assert signed()["nonce"] != signed()["nonce"]


def test_rejection_travels_in_a_reject_message():
    refusal = Rejection(Reason.NO_GPU, "This provider has no free GPU; try another one.")
    wire = signed("reject", PROVIDER, REQUESTOR, body=refusal.to_body())
    message = verify(wire, ReplayGuard(), recipient=REQUESTOR, kinds=TO_REQUESTOR)
    back = Rejection.from_body(message.body)
    assert (back.code, back.sentence) == (Reason.NO_GPU, refusal.sentence)
    assert str(back) == refusal.sentence


# ---------------------------------------------------------------------------- every rejection

Mutation = Callable[[dict[str, Any]], Any]


def body_change(**changes: Any) -> Mutation:
    return lambda wire: resign({**wire, "body": {**wire["body"], **changes}})


def body_without(name: str) -> Mutation:
    return lambda wire: resign({**wire, "body": {k: v for k, v in wire["body"].items() if k != name}})


def body_change_unsigned(**changes: Any) -> Mutation:
    return lambda wire: {**wire, "body": {**wire["body"], **changes}}


def without(wire: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k != name}


TOO_FAR = NOW + MAX_TTL + CLOCK_SKEW + 1


def high_s(wire: dict[str, Any]) -> dict[str, Any]:
    """The same signature rewritten with s' = N - s: valid ECDSA, but not canonical (EIP-2)."""
    raw = bytes.fromhex(wire["signature"][2:])
    s = int.from_bytes(raw[32:64], "big")
    flipped = raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    return {**wire, "signature": "0x" + flipped.hex()}


# (case name, kind to sign, mutation of the signed wire, extra verify arguments, expected reason)
CASES: list[tuple[str, str, Mutation, dict[str, Any], Reason]] = [
    ("not an object", "status", lambda w: [w], {}, Reason.MALFORMED),
    ("extra top-level field", "status", lambda w: {**w, "hint": 1}, {}, Reason.UNKNOWN_FIELD),
    ("missing top-level field", "status", lambda w: without(w, "nonce"), {}, Reason.MISSING_FIELD),
    ("expiry as a string", "status", lambda w: {**w, "expiry": str(w["expiry"])}, {}, Reason.WRONG_TYPE),
    ("expiry as a bool", "status", lambda w: {**w, "expiry": True}, {}, Reason.WRONG_TYPE),
    ("body as a list", "status", lambda w: {**w, "body": []}, {}, Reason.WRONG_TYPE),
    ("kind as null", "status", lambda w: {**w, "kind": None}, {}, Reason.WRONG_TYPE),
    ("lowercase sender", "status", lambda w: {**w, "sender": w["sender"].lower()}, {}, Reason.BAD_VALUE),
    ("zero recipient", "status", lambda w: {**w, "recipient": "0x" + "0" * 40}, {}, Reason.BAD_VALUE),
    ("short nonce", "status", lambda w: {**w, "nonce": w["nonce"][:-2]}, {}, Reason.BAD_VALUE),
    ("uppercase nonce", "status", lambda w: {**w, "nonce": "0x" + w["nonce"][2:].upper()}, {}, Reason.BAD_VALUE),
    ("negative expiry", "status", lambda w: {**w, "expiry": -1}, {}, Reason.BAD_VALUE),
    ("truncated signature", "status", lambda w: {**w, "signature": w["signature"][:-2]}, {}, Reason.BAD_VALUE),
    ("unknown kind", "status", lambda w: resign({**w, "kind": "bribe"}), {}, Reason.UNKNOWN_KIND),
    ("kind not expected here", "accept", lambda w: w, {"kinds": TO_PROVIDER}, Reason.UNEXPECTED_KIND),
    ("for another agent", "status", lambda w: w, {"recipient": MALLORY}, Reason.WRONG_RECIPIENT),
    ("not from the expected sender", "status", lambda w: w, {"sender": MALLORY.address}, Reason.WRONG_SENDER),
    ("expired", "status", lambda w: w, {"now": NOW + 60 + CLOCK_SKEW + 1}, Reason.EXPIRED),
    ("expires too far ahead", "status", lambda w: resign(w, expiry=TOO_FAR), {}, Reason.EXPIRY_TOO_FAR),
    ("extra body field", "status", body_change(note="hi"), {}, Reason.UNKNOWN_FIELD),
    ("missing body field", "ack", body_without("detail"), {}, Reason.MISSING_FIELD),
    ("amount as an int", "voucher", body_change(cumulativeAmount=5), {}, Reason.WRONG_TYPE),
    ("exposure as an int", "accept", body_change(exposure=5), {}, Reason.WRONG_TYPE),
    ("allocation with a sign", "allocated", body_change(amount="-5"), {}, Reason.BAD_VALUE),
    ("missing final amount", "release", body_without("finalAmount"), {}, Reason.MISSING_FIELD),
    ("release signature of 64 bytes", "released", body_change(signature="0x" + "11" * 64), {}, Reason.BAD_VALUE),
    ("int as a bool", "propose", body_change(gpus=True), {}, Reason.WRONG_TYPE),
    ("int as a float", "propose", body_change(deadline=1.5), {}, Reason.WRONG_TYPE),
    ("amount with a sign", "voucher", body_change(cumulativeAmount="-5"), {}, Reason.BAD_VALUE),
    ("amount with leading zeros", "voucher", body_change(cumulativeAmount="007"), {}, Reason.BAD_VALUE),
    ("amount of 2^256", "voucher", body_change(cumulativeAmount=str(2**256)), {}, Reason.BAD_VALUE),
    ("short bytes32", "status", body_change(agreementId="0x1234"), {}, Reason.BAD_VALUE),
    ("bad address checksum", "propose", body_change(escrow=ESCROW.replace("F", "f", 1)), {}, Reason.BAD_VALUE),
    ("too many GPUs", "propose", body_change(gpus=65), {}, Reason.BAD_VALUE),
    ("scheduler without tls", "propose", body_change(schedulerAddress="tcp://1.2.3.4:1"), {}, Reason.BAD_VALUE),
    ("PEM without header", "confirm", body_change(certificate="MIIB"), {}, Reason.BAD_VALUE),
    ("PEM too long", "confirm", body_change(certificate="-----BEGIN" + "A" * 16 * 1024), {}, Reason.BAD_VALUE),
    ("text too long", "terminate", body_change(reason="x" * 501), {}, Reason.BAD_VALUE),
    ("empty worker name", "started", body_change(workerName=""), {}, Reason.BAD_VALUE),
    ("unknown reject code", "reject", body_change(code="BECAUSE"), {}, Reason.BAD_VALUE),
    ("voucher signature of 64 bytes", "voucher", body_change(signature="0x" + "11" * 64), {}, Reason.BAD_VALUE),
    ("proposal for another chain", "propose", body_change(chainId=CHAIN + 1), {}, Reason.WRONG_CHAIN),
    ("body changed after signing", "voucher", body_change_unsigned(cumulativeAmount="9"), {}, Reason.BAD_SIGNATURE),
    ("signed by someone else", "status", lambda w: resign(w, MALLORY), {}, Reason.BAD_SIGNATURE),
    ("signed for another chain", "status", lambda w: resign(w, chain_id=CHAIN + 1), {}, Reason.BAD_SIGNATURE),
    ("high-s signature", "status", high_s, {}, Reason.BAD_SIGNATURE),
    ("signature of zeros", "status", lambda w: {**w, "signature": "0x" + "00" * 65}, {}, Reason.BAD_SIGNATURE),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "mutate", "extra", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_fault_is_rejected_with_its_reason_and_burns_nothing(kind, mutate, extra, reason):
    real = signed(kind)
    guard = ReplayGuard()
    assert rejected(mutate(copy.deepcopy(real)), guard, **extra).code == reason
    assert len(guard) == 0
    verify(real, guard)  # the real message still goes through


def test_replayed_message_is_rejected():
    guard = ReplayGuard()
    wire = signed()
    verify(wire, guard)
    assert rejected(wire, guard, now=NOW + 30).code == Reason.REPLAYED
    # The same nonce from another sender is another message.
    verify(resign(wire, MALLORY, sender=MALLORY.address), guard)


def test_full_replay_guard_refuses_instead_of_forgetting():
    guard = ReplayGuard(max_entries=2)
    verify(signed(), guard)
    verify(signed(), guard)
    assert rejected(signed(), guard).code == Reason.NO_CAPACITY
    assert len(guard) == 2
    # Once the remembered messages can no longer be accepted anyway, there is room again.
    later = NOW + 60 + CLOCK_SKEW + 1
    verify(signed(now=later), guard, now=later)
    assert len(guard) == 1


def test_every_reason_verify_message_can_give_is_tested():
    from_verify = {case[-1] for case in CASES} | {Reason.REPLAYED, Reason.NO_CAPACITY}
    assert from_verify == {
        Reason.MALFORMED,
        Reason.UNKNOWN_FIELD,
        Reason.MISSING_FIELD,
        Reason.WRONG_TYPE,
        Reason.BAD_VALUE,
        Reason.UNKNOWN_KIND,
        Reason.UNEXPECTED_KIND,
        Reason.WRONG_RECIPIENT,
        Reason.WRONG_SENDER,
        Reason.EXPIRED,
        Reason.EXPIRY_TOO_FAR,
        Reason.WRONG_CHAIN,
        Reason.BAD_SIGNATURE,
        Reason.REPLAYED,
        Reason.NO_CAPACITY,
    }


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (NOW + 60 + CLOCK_SKEW, True),  # just expired, within the clock skew
        (NOW + 60 + CLOCK_SKEW + 0.5, False),
        (NOW + 60 - MAX_TTL - CLOCK_SKEW, True),  # the sender's clock is ahead by the skew
        (NOW + 60 - MAX_TTL - CLOCK_SKEW - 1, False),
    ],
)
def test_expiry_limits_allow_the_clock_skew_and_no_more(now, ok):
    guard = ReplayGuard()
    if ok:
        verify(signed(), guard, now=now)
    else:
        assert rejected(signed(), guard, now=now).code in (Reason.EXPIRED, Reason.EXPIRY_TOO_FAR)


def test_replay_guard_forgets_only_what_can_no_longer_be_accepted():
    guard = ReplayGuard()
    wire = signed()
    verify(wire, guard)
    guard.prune(NOW + 60 + CLOCK_SKEW)
    assert len(guard) == 1  # still acceptable at that instant, so still remembered
    assert rejected(wire, guard, now=NOW + 60 + CLOCK_SKEW).code == Reason.REPLAYED
    guard.prune(NOW + 60 + CLOCK_SKEW + 1)
    assert len(guard) == 0
    assert rejected(wire, guard, now=NOW + 60 + CLOCK_SKEW + 1).code == Reason.EXPIRED


# ---------------------------------------------------------------------------- lines


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"x" * (MAX_MESSAGE_BYTES + 1), Reason.TOO_LARGE),
        (b"{not json}\n", Reason.MALFORMED),
        (b"[1, 2]\n", Reason.MALFORMED),
        (b'{"a": 1, "a": 2}\n', Reason.MALFORMED),
        (b'{"a": NaN}\n', Reason.MALFORMED),
        (b'{"a": "\xff"}\n', Reason.MALFORMED),
        (b"[" * 100_000 + b"]" * 100_000, Reason.MALFORMED),
        (b'{"a": ' + b"9" * 5000 + b"}", Reason.MALFORMED),
    ],
    ids=["too large", "not json", "array", "repeated key", "NaN", "not utf-8", "deep nesting", "huge integer"],
)
def test_decode_line_refuses_bad_lines(line, reason):
    with pytest.raises(Rejection) as info:
        decode_line(line)
    assert info.value.code == reason


def test_brackets_inside_strings_do_not_count_as_nesting():
    reason = '[{"\\' * 100  # 400 characters of brackets, quotes and backslashes
    wire = signed("terminate", body={"agreementId": ID, "reason": reason})
    assert verify(decode_line(encode(wire)), ReplayGuard()).body["reason"] == reason


def test_encode_refuses_a_message_over_the_limit():
    wire = signed()
    wire["body"] = {"agreementId": "0x" + "ab" * (MAX_MESSAGE_BYTES // 2)}
    with pytest.raises(InvalidInput):
        encode(wire)


# ---------------------------------------------------------------------------- signing input


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kind": "bribe"}, "not a message kind"),
        ({"body": {"agreementId": ID, "extra": 1}}, "exactly the fields"),
        ({"body": {}}, "exactly the fields"),
        ({"ttl": MAX_TTL + 1}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"chain_id": 0}, "chain_id"),
        ({"kind": "voucher", "body": {**BODIES["voucher"], "cumulativeAmount": True}}, "cumulativeAmount"),
        ({"kind": "voucher", "body": {**BODIES["voucher"], "cumulativeAmount": -1}}, "cumulativeAmount"),
        ({"kind": "status", "body": {"agreementId": b"short"}}, "agreementId"),
        ({"kind": "reject", "body": {"code": "NOPE", "reason": ""}}, "code"),
        ({"kind": "propose", "body": {**BODIES["propose"], "escrow": ESCROW.replace("F", "f", 1)}}, "escrow"),
        ({"kind": "propose", "body": {**BODIES["propose"], "chainId": CHAIN + 1}}, "chainId"),
    ],
)
def test_sign_message_refuses_bad_input(kwargs, fragment):
    kwargs = {"kind": "status", "body": BODIES["status"], "chain_id": CHAIN, **kwargs}
    with pytest.raises(InvalidInput, match=fragment):
        sign_message(REQUESTOR, recipient=PROVIDER.address, **kwargs)


def test_sign_message_refuses_a_bad_recipient():
    with pytest.raises(InvalidInput, match="recipient"):
        sign_message(REQUESTOR, chain_id=CHAIN, kind="ping", recipient="0x1234", body={})


# ---------------------------------------------------------------------------- forgeries (property)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
TOP = ("kind", "sender", "recipient", "nonce", "expiry", "body", "signature")


def _swap_type(value: Any) -> Any:
    if isinstance(value, str):
        return int(value) if value.isdigit() else len(value)
    if isinstance(value, int):
        return str(value)
    return [value]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Callable[[dict[str, Any], ReplayGuard], Any]]:
    """A named way to corrupt a signed message; it gets the real wire and the guard."""
    choice = draw(
        st.sampled_from(
            [
                "replace",
                "delete",
                "add",
                "body-replace",
                "body-delete",
                "body-add",
                "swap-type",
                "truncate-signature",
                "flip-hex",
                "other-signer",
                "other-chain",
                "expired",
                "far-future",
                "other-recipient",
                "replay-other",
            ]
        )
    )
    value = draw(json_values)
    name = draw(st.sampled_from(TOP))
    extra_name = draw(st.text(min_size=1, max_size=10))
    index = draw(st.integers(min_value=0, max_value=10**6))
    cut = draw(st.integers(min_value=0, max_value=131))
    seconds = draw(st.integers(min_value=1, max_value=10**9))

    def apply(wire: dict[str, Any], guard: ReplayGuard) -> Any:
        body = wire["body"]
        fields = sorted(body)
        if choice == "replace":
            return {**wire, name: value}
        if choice == "delete":
            return {k: v for k, v in wire.items() if k != name}
        if choice == "add":
            assume(extra_name not in wire)
            return {**wire, extra_name: value}
        if choice == "body-replace":
            assume(fields)
            return {**wire, "body": {**body, fields[index % len(fields)]: value}}
        if choice == "body-delete":
            assume(fields)
            return {**wire, "body": {k: v for k, v in body.items() if k != fields[index % len(fields)]}}
        if choice == "body-add":
            assume(extra_name not in body)
            return {**wire, "body": {**body, extra_name: value}}
        if choice == "swap-type":
            target = [*TOP, *(f"body.{f}" for f in fields)][index % (len(TOP) + len(fields))]
            if target.startswith("body."):
                field = target[5:]
                return {**wire, "body": {**body, field: _swap_type(body[field])}}
            return {**wire, target: _swap_type(wire[target])}
        if choice == "truncate-signature":
            return {**wire, "signature": wire["signature"][: 2 + cut]}
        if choice == "flip-hex":
            target = ("nonce", "signature", "sender", "recipient")[index % 4]
            text = wire[target]
            position = 2 + index % (len(text) - 2)
            flipped = "0" if text[position] != "0" else "1"
            return {**wire, target: text[:position] + flipped + text[position + 1 :]}
        if choice == "other-signer":
            return resign(wire, MALLORY)  # claims to be the requestor, signed by another key
        if choice == "other-chain":
            return resign(wire, chain_id=CHAIN + 1 + index)
        if choice == "expired":
            return resign(wire, expiry=max(0, NOW - CLOCK_SKEW - seconds))
        if choice == "far-future":
            return resign(wire, expiry=NOW + MAX_TTL + CLOCK_SKEW + seconds)
        if choice == "other-recipient":
            return resign(wire, recipient=MALLORY.address)
        # replay-other: a message that was valid once, shown again.
        earlier = signed(wire["kind"], body=BODIES[wire["kind"]])
        verify(earlier, guard)
        return earlier

    return choice, apply


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(SCHEMAS)), mutation=mutations(), expect_sender=st.booleans())
def test_no_mutation_of_a_signed_message_is_accepted_or_burns_its_nonce(kind, mutation, expect_sender):
    _, apply = mutation
    real = signed(kind, body=BODIES[kind])
    guard = ReplayGuard()
    sender = {"sender": REQUESTOR.address} if expect_sender else {}
    forged = apply(copy.deepcopy(real), guard)
    # A change that leaves the JSON identical is no change (e.g. replacing a field by itself).
    assume(json.dumps(forged, sort_keys=True) != json.dumps(real, sort_keys=True))
    with pytest.raises(Rejection):
        verify(forged, guard, **sender)
    assert (REQUESTOR.address, bytes.fromhex(real["nonce"][2:])) not in guard
    verify(real, guard, **sender)
    with pytest.raises(Rejection) as info:
        verify(real, guard, **sender)
    assert info.value.code == Reason.REPLAYED
