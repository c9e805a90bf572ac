"""Hostile messages against a live provider agent, over real TCP.

One devnet with one provider agent (a real process) serves the whole module; the requestor
(dev account 0) holds real escrow sessions on it, so that valid proposals are possible and
every refusal below is refused for the reason under test, not for a missing session.

Each test sends lines the agent must refuse and proves three things: the answer is a ``reject``
with the right ``code`` (signed by the provider and addressed to the claimed sender when that
was an address, unsigned otherwise); the agent keeps serving (a fresh ``ping`` gets a signed
``pong``); and nothing changed (no agreement, no agreement directory, the same offer on-chain,
the same escrow session).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from eth_utils import is_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marketkit import Market, local_market

from golem_jupyter.chain import Offer, SessionState, Wallet
from golem_jupyter.chain.escrow import Allocation
from golem_jupyter.chain.types import new_id
from golem_jupyter.chain.vouchers import Release
from golem_jupyter.devnet import DevnetProvider
from golem_jupyter.market.certificates import SessionCA, make_key_and_csr
from golem_jupyter.market.messages import (
    MAX_MESSAGE_BYTES,
    MAX_TTL,
    SCHEMAS,
    TO_REQUESTOR,
    Message,
    Reason,
    ReplayGuard,
    encode,
    sign_message,
    verify_message,
)

pytestmark = pytest.mark.timeout(300)

HOSTILE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BIG = settings(HOSTILE, max_examples=15)  # examples of 256+ KiB each
REPLY_TIMEOUT = 20.0
DEPOSIT = 10**17

REQUESTOR = Wallet.dev(0)
OTHER = Wallet.dev(5)
MALLORY = Wallet.dev(9)
WIRE_FIELDS = ("kind", "sender", "recipient", "nonce", "expiry", "body", "signature")


# ---------------------------------------------------------------------------- talking to the agent


def exchange(endpoint: str, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection to ``endpoint``; return the line that comes back.

    The payload is written from a thread while this one reads, because the agent answers an
    oversize line without reading all of it and closes: the write may then fail, the answer not.
    """
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=REPLY_TIMEOUT) as sock:

        def write() -> None:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)  # a line without a newline ends here
            except OSError:
                pass  # the agent stopped reading (an oversize line): its answer is already on the way

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        reply = bytearray()
        try:
            while b"\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        finally:
            writer.join(REPLY_TIMEOUT)
    assert reply.endswith(b"\n"), f"the agent closed without a full answer: {bytes(reply[:200])!r}"
    return bytes(reply)


@dataclass
class Peer:
    """The live provider, the requestor's sessions on the devnet, and the state before any test."""

    market: Market
    provider: DevnetProvider
    chain_id: int
    escrow: str
    session_id: bytes
    """A session of the requestor with plenty of deposit."""
    small_session_id: bytes
    """A session of the requestor holding less than the provider's minimum deposit."""
    ca: SessionCA
    offer_before: Offer
    sessions_before: dict[bytes, SessionState]

    @property
    def address(self) -> str:
        return self.provider.address

    @property
    def agreements_dir(self) -> Path:
        return self.market.home / "provider" / self.address / "agreements"

    def agreement_dirs(self) -> set[str]:
        return {p.name for p in self.agreements_dir.iterdir()} if self.agreements_dir.exists() else set()

    def sign(
        self, kind: str, body: dict[str, Any], wallet: Wallet = REQUESTOR, recipient: str | None = None, **options: Any
    ) -> dict[str, Any]:
        options.setdefault("chain_id", self.chain_id)
        return sign_message(wallet.account, kind=kind, recipient=recipient or self.address, body=body, **options)

    def ping(self) -> dict[str, Any]:
        return self.sign("ping", {})

    def propose_body(self, **changes: Any) -> dict[str, Any]:
        body = {
            "sessionId": self.session_id,
            "escrow": self.escrow,
            "chainId": self.chain_id,
            "pricePerCpuSecond": self.provider.price_per_cpu_second,
            "pricePerGpuSecond": 0,
            "startFee": 0,
            "gpus": 0,
            "schedulerAddress": "tls://127.0.0.1:1",
            "caCertificate": self.ca.certificate_pem,
            "deadline": int(time.time()) + 3600,
        }
        return {**body, **changes}

    def send(self, wire: dict[str, Any] | bytes) -> dict[str, Any]:
        """The agent's answer to ``wire`` (a message, or raw bytes sent as they are), parsed."""
        payload = wire if isinstance(wire, bytes) else json.dumps(wire).encode() + b"\n"
        return json.loads(exchange(self.provider.endpoint, payload))

    def answer(self, reply: dict[str, Any], to: str) -> Message:
        """``reply`` verified as the provider's signed message to ``to``."""
        return verify_message(
            reply, chain_id=self.chain_id, recipient=to, kinds=TO_REQUESTOR, replay=ReplayGuard(), sender=self.address
        )

    def expect_rejection(self, wire: dict[str, Any] | bytes, code: Reason, *, signed_to: str | None) -> str:
        """Send ``wire``; assert a ``reject`` with ``code``, signed to ``signed_to`` (None: unsigned)."""
        reply = self.send(wire)
        if signed_to is None:
            assert set(reply) == {"kind", "body"}, reply
            assert reply["kind"] == "reject"
            body = reply["body"]
        else:
            message = self.answer(reply, signed_to)
            assert message.kind == "reject", message
            body = message.body
        assert body["code"] == code, body
        assert body["reason"], body
        return body["reason"]

    def assert_serving(self) -> None:
        """A fresh, valid ping from the requestor gets a pong signed by the provider."""
        pong = self.answer(self.send(self.ping()), REQUESTOR.address)
        assert pong.kind == "pong"
        assert pong.body == {"endpoint": self.provider.endpoint}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("protocol"), providers=1) as market:
        yield market


@pytest.fixture(scope="module")
def peer(market: Market) -> Peer:
    chain = market.chain(REQUESTOR)
    provider = market.providers[0]
    deadline = int(time.time()) + 3600
    session_id, small_session_id = new_id(), new_id()
    chain.escrow.open_session(session_id, DEPOSIT, deadline)
    # The devnet's providers want a deposit covering 1 s of compute (--min-deposit-seconds 1).
    chain.escrow.open_session(small_session_id, provider.price_per_cpu_second - 1, deadline)
    return Peer(
        market=market,
        provider=provider,
        chain_id=market.network.chain_id,
        escrow=market.network.escrow,
        session_id=session_id,
        small_session_id=small_session_id,
        ca=SessionCA.create("protocol tests"),
        offer_before=chain.registry.offer_of(provider.address),
        sessions_before={s: chain.escrow.session(s) for s in (session_id, small_session_id)},
    )


# ---------------------------------------------------------------------------- strategies

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
JSON_BY_TYPE: tuple[tuple[type, st.SearchStrategy[Any]], ...] = (
    (type(None), st.none()),
    (bool, st.booleans()),  # a boolean is no integer in this protocol
    (int, st.integers(-(2**70), 2**70)),
    (float, st.floats(allow_nan=False, allow_infinity=False)),
    (str, st.text(max_size=20)),
    (list, st.lists(JSON_VALUES, max_size=3)),
    (dict, st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)),
)


def wrong_typed(json_type: type) -> st.SearchStrategy[Any]:
    """JSON values of every type but ``json_type``."""
    return st.one_of(*(values for kind, values in JSON_BY_TYPE if kind is not json_type))


def is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


WIRE_TYPES = {
    "kind": str,
    "sender": str,
    "recipient": str,
    "nonce": str,
    "expiry": int,
    "body": dict,
    "signature": str,
}


@st.composite
def mangled_messages(draw: st.DrawFn, peer: Peer) -> tuple[dict[str, Any], Reason, bool]:
    """A fresh valid ping or propose with one field missing, added or of the wrong type.

    Returns the message, the code the agent must answer, and whether that answer is signed
    (it is unless the ``sender`` field itself is what is broken).
    """
    kind = draw(st.sampled_from(["ping", "propose"]))
    wire = peer.sign(kind, peer.propose_body() if kind == "propose" else {})
    places = ["envelope"] + (["body"] if kind == "propose" else [])
    place = draw(st.sampled_from(places))
    target = wire if place == "envelope" else wire["body"]
    types = WIRE_TYPES if place == "envelope" else {name: field.json_type for name, field in SCHEMAS[kind].items()}
    mutation = draw(st.sampled_from(["missing", "extra", "wrong type"]))
    name = draw(st.sampled_from(sorted(types)))
    if mutation == "missing":
        del target[name]
        return wire, Reason.MISSING_FIELD, name != "sender"
    if mutation == "extra":
        extra = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in types))
        target[extra] = draw(JSON_VALUES)
        return wire, Reason.UNKNOWN_FIELD, True
    target[name] = draw(wrong_typed(types[name]))
    return wire, Reason.WRONG_TYPE, not (place == "envelope" and name == "sender")


# ---------------------------------------------------------------------------- malformed lines


@HOSTILE
@given(data=st.binary(max_size=4096).map(lambda b: b.replace(b"\n", b"")).filter(lambda b: not is_json_object(b)))
def test_random_bytes_get_an_unsigned_malformed_rejection(peer: Peer, data: bytes) -> None:
    """Any bytes that are not a JSON object are refused as MALFORMED, unsigned (no sender is
    known), and the agent keeps serving."""
    peer.expect_rejection(data + b"\n", Reason.MALFORMED, signed_to=None)
    peer.assert_serving()


NOT_AN_OBJECT = st.one_of(
    st.text(max_size=200).map(lambda t: t.replace("\n", " ").encode()).filter(lambda b: not is_json_object(b)),
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"NaN", b"[Infinity]", b'{"kind": -Infinity}', b"{", b"", b"\xff{}", b'"\xed\xa0\x80"']),
    # Objects that repeat a key (Python's json would silently keep the last one).
    st.sampled_from([b'{"a": 1, "a": 2}', b'{"body": {}, "body": {"x": 1}}']),
)


@HOSTILE
@given(line=NOT_AN_OBJECT)
def test_text_that_is_not_one_json_object_gets_malformed(peer: Peer, line: bytes) -> None:
    """Non-JSON text, JSON values that are not objects, NaN/Infinity and repeated keys are all
    MALFORMED, answered unsigned; the agent keeps serving."""
    peer.expect_rejection(line + b"\n", Reason.MALFORMED, signed_to=None)
    peer.assert_serving()


@st.composite
def deep_nesting(draw: st.DrawFn, peer: Peer) -> bytes:
    depth = draw(st.integers(33, 100_000))
    shape = draw(st.sampled_from(["arrays", "unclosed", "objects", "in a message body"]))
    if shape == "arrays":
        return b"[" * depth + b"]" * depth
    if shape == "unclosed":
        return b"[" * depth
    if shape == "objects":
        depth = min(depth, 40_000)  # 6 bytes a level: stay under the size limit
        return b'{"a":' * depth + b"1" + b"}" * depth
    wire = peer.ping()
    depth = min(depth, 120_000)
    text = json.dumps({**wire, "body": {"x": "PLACEHOLDER"}})
    return text.replace('"PLACEHOLDER"', "[" * depth + "]" * depth).encode()


@HOSTILE
@given(data=st.data())
def test_deeply_nested_json_is_malformed_and_does_not_crash_the_agent(peer: Peer, data: st.DataObject) -> None:
    """JSON nested deeper than 32 levels (up to 100k, which would overflow the C stack of a
    naive parser) is refused as MALFORMED before parsing; the agent process survives."""
    line = data.draw(deep_nesting(peer))
    assert len(line) < MAX_MESSAGE_BYTES
    peer.expect_rejection(line + b"\n", Reason.MALFORMED, signed_to=None)
    peer.assert_serving()
    assert psutil.pid_exists(peer.provider.pid)


@BIG
@given(size=st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 128 * 1024), newline=st.booleans())
def test_oversize_lines_are_too_large(peer: Peer, size: int, newline: bool) -> None:
    """A line longer than 256 KiB is refused as TOO_LARGE, even if it holds a valid-looking
    message and even if it never ends with a newline."""
    wire = peer.ping()
    padded = json.dumps({**wire, "body": {"pad": ""}})
    line = padded.replace('"pad": ""', '"pad": "' + "x" * (size - len(padded)) + '"').encode()
    assert len(line) == size
    peer.expect_rejection(line + (b"\n" if newline else b""), Reason.TOO_LARGE, signed_to=None)
    peer.assert_serving()


def test_a_10_mib_line_is_refused_without_being_read_to_the_end(peer: Peer) -> None:
    """The agent stops reading after its limit: a 10 MiB line gets TOO_LARGE at once."""
    started = time.monotonic()
    peer.expect_rejection(b"[" * (10 * 1024 * 1024) + b"\n", Reason.TOO_LARGE, signed_to=None)
    assert time.monotonic() - started < 10
    peer.assert_serving()


@HOSTILE
@given(data=st.data())
def test_a_missing_extra_or_wrong_typed_field_is_refused_with_its_code(peer: Peer, data: st.DataObject) -> None:
    """A fresh ping or propose with one envelope or body field missing (MISSING_FIELD), added
    (UNKNOWN_FIELD) or of another JSON type (WRONG_TYPE) is refused with that code, signed to
    the claimed sender unless the sender field itself is what is broken."""
    wire, code, signed = data.draw(mangled_messages(peer))
    sender = wire.get("sender")
    assert signed == (isinstance(sender, str) and is_address(sender))
    peer.expect_rejection(wire, code, signed_to=REQUESTOR.address if signed else None)
    peer.assert_serving()


def _bad_values(peer: Peer) -> dict[str, tuple[dict[str, Any], Reason, str | None]]:
    """Messages with a field of the right type but a wrong value: (message, code, signed to)."""
    ping = peer.ping
    return {
        "unknown kind": ({**ping(), "kind": "hello"}, Reason.UNKNOWN_KIND, REQUESTOR.address),
        "kind meant for a requestor": ({**ping(), "kind": "pong"}, Reason.UNEXPECTED_KIND, REQUESTOR.address),
        "lowercase sender": ({**ping(), "sender": REQUESTOR.address.lower()}, Reason.BAD_VALUE, REQUESTOR.address),
        "zero sender": ({**ping(), "sender": "0x" + "0" * 40}, Reason.BAD_VALUE, None),
        "sender not an address": ({**ping(), "sender": "alice"}, Reason.BAD_VALUE, None),
        "uppercase nonce": ({**ping(), "nonce": ping()["nonce"].upper()}, Reason.BAD_VALUE, REQUESTOR.address),
        "short signature": ({**ping(), "signature": "0x" + "ab" * 64}, Reason.BAD_VALUE, REQUESTOR.address),
        "negative expiry": ({**ping(), "expiry": -1}, Reason.BAD_VALUE, REQUESTOR.address),
        "expiry too far": (
            peer.sign("ping", {}, now=time.time() + MAX_TTL + 60),
            Reason.EXPIRY_TOO_FAR,
            REQUESTOR.address,
        ),
        "amount with a leading zero": (
            {**peer.sign("propose", peer.propose_body()), "body": _with(peer, pricePerCpuSecond="01")},
            Reason.BAD_VALUE,
            REQUESTOR.address,
        ),
        "short session id": (
            {**peer.sign("propose", peer.propose_body()), "body": _with(peer, sessionId="0x1234")},
            Reason.BAD_VALUE,
            REQUESTOR.address,
        ),
    }


def _with(peer: Peer, **changes: Any) -> dict[str, Any]:
    """A propose body as it travels, with raw wire values changed."""
    return {**peer.sign("propose", peer.propose_body())["body"], **changes}


BAD_VALUES = [
    "unknown kind",
    "kind meant for a requestor",
    "lowercase sender",
    "zero sender",
    "sender not an address",
    "uppercase nonce",
    "short signature",
    "negative expiry",
    "expiry too far",
    "amount with a leading zero",
    "short session id",
]


@pytest.mark.parametrize("case", BAD_VALUES)
def test_a_field_with_a_bad_value_is_refused_with_its_code(peer: Peer, case: str) -> None:
    """Right types, wrong values: each gets its own code; the answer is signed whenever the
    claimed sender is an address at all."""
    wire, code, signed_to = _bad_values(peer)[case]
    peer.expect_rejection(wire, code, signed_to=signed_to)
    peer.assert_serving()


# ---------------------------------------------------------------------------- forged messages


def _forged_by_another_key(peer: Peer) -> dict[str, Any]:
    wire = peer.sign("ping", {}, wallet=MALLORY)
    return {**wire, "sender": REQUESTOR.address}  # Mallory's signature, the requestor's name


def _tampered_after_signing(peer: Peer) -> dict[str, Any]:
    wire = peer.sign("propose", peer.propose_body())
    return {**wire, "body": {**wire["body"], "pricePerCpuSecond": str(10**30)}}


def _signature_of_another_message(peer: Peer) -> dict[str, Any]:
    return {**peer.ping(), "signature": peer.ping()["signature"]}


def _wrong_chain_id(peer: Peer) -> dict[str, Any]:
    other = peer.chain_id + 1
    return peer.sign("propose", peer.propose_body(chainId=other), chain_id=other)


def _unknown_agreement(kind: str) -> Callable[[Peer], dict[str, Any]]:
    bodies = {
        "voucher": {"graphId": new_id(), "cumulativeAmount": 10**18, "signature": b"\x01" * 65},
        "confirm": {"certificate": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"},
        "terminate": {"reason": "let me in"},
        "status": {},
        "allocated": {"amount": 10**18},
        "release": {"finalAmount": 0},
    }
    return lambda peer: peer.sign(kind, {"agreementId": new_id(), **bodies[kind]})


FORGERIES: dict[str, tuple[Callable[[Peer], dict[str, Any]], Reason, Wallet]] = {
    # name: (the message, the code, whom the answer is addressed to)
    "propose from another account for the requestor's session": (
        lambda peer: peer.sign("propose", peer.propose_body(), wallet=MALLORY),
        Reason.WRONG_REQUESTOR,
        MALLORY,
    ),
    "signed by another key than its sender": (_forged_by_another_key, Reason.BAD_SIGNATURE, REQUESTOR),
    "body changed after signing": (_tampered_after_signing, Reason.BAD_SIGNATURE, REQUESTOR),
    "signature of another message": (_signature_of_another_message, Reason.BAD_SIGNATURE, REQUESTOR),
    "addressed to another recipient": (
        lambda peer: peer.sign("ping", {}, recipient=OTHER.address),
        Reason.WRONG_RECIPIENT,
        REQUESTOR,
    ),
    "proposal for another chain id": (_wrong_chain_id, Reason.WRONG_CHAIN, REQUESTOR),
    "proposal for another escrow": (
        lambda peer: peer.sign("propose", peer.propose_body(escrow=peer.market.network.registry)),
        Reason.WRONG_CHAIN,
        REQUESTOR,
    ),
    "CPU price below the offer": (
        lambda peer: peer.sign("propose", peer.propose_body(pricePerCpuSecond=peer.provider.price_per_cpu_second - 1)),
        Reason.PRICE_TOO_LOW,
        REQUESTOR,
    ),
    "a GPU from a CPU-only provider": (
        lambda peer: peer.sign("propose", peer.propose_body(gpus=1, pricePerGpuSecond=10**20)),
        Reason.NO_GPU,
        REQUESTOR,
    ),
    "session that does not exist": (
        lambda peer: peer.sign("propose", peer.propose_body(sessionId=new_id())),
        Reason.SESSION_NOT_FOUND,
        REQUESTOR,
    ),
    "session with too little deposit": (
        lambda peer: peer.sign("propose", peer.propose_body(sessionId=peer.small_session_id)),
        Reason.INSUFFICIENT_DEPOSIT,
        REQUESTOR,
    ),
    "voucher for an unknown agreement": (_unknown_agreement("voucher"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "confirm for an unknown agreement": (_unknown_agreement("confirm"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "terminate for an unknown agreement": (_unknown_agreement("terminate"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "status for an unknown agreement": (_unknown_agreement("status"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "allocated for an unknown agreement": (_unknown_agreement("allocated"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "release for an unknown agreement": (_unknown_agreement("release"), Reason.UNKNOWN_AGREEMENT, REQUESTOR),
    "expired ten minutes ago": (
        lambda peer: peer.sign("propose", peer.propose_body(), now=time.time() - 600),
        Reason.EXPIRED,
        REQUESTOR,
    ),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_a_forged_or_unacceptable_message_is_refused_with_its_code(peer: Peer, case: str) -> None:
    """Each forgery or unacceptable request gets a reject with its code, signed by the provider
    and addressed to the claimed sender; the agent keeps serving and makes no agreement."""
    build, code, answer_to = FORGERIES[case]
    before = peer.agreement_dirs()
    peer.expect_rejection(build(peer), code, signed_to=answer_to.address)
    peer.assert_serving()
    assert peer.agreement_dirs() == before


def test_a_replayed_message_is_refused_and_a_mangled_copy_does_not_burn_its_nonce(peer: Peer) -> None:
    """A mangled copy of a valid ping (bad signature) is refused without using the nonce, so
    the original still gets its pong; sending that same line again is REPLAYED."""
    wire = peer.ping()
    line = encode(wire)
    flipped_v = {"1b": "1c", "1c": "1b"}[wire["signature"][-2:]]  # recovers to some other address
    mangled = {**wire, "signature": wire["signature"][:-2] + flipped_v}
    peer.expect_rejection(mangled, Reason.BAD_SIGNATURE, signed_to=REQUESTOR.address)
    pong = peer.answer(peer.send(line), REQUESTOR.address)
    assert pong.kind == "pong"
    peer.expect_rejection(line, Reason.REPLAYED, signed_to=REQUESTOR.address)
    peer.assert_serving()


# ---------------------------------------------------------------------------- nothing changed


def test_after_every_refusal_the_provider_state_the_offer_and_the_sessions_are_unchanged(peer: Peer) -> None:
    """After all the refusals above: no agreement was made (a status for any id is
    UNKNOWN_AGREEMENT and no agreement directory exists), the provider runs no worker, its
    on-chain offer is the one it published, and the requestor's escrow sessions are as opened."""
    peer.expect_rejection(
        peer.sign("status", {"agreementId": new_id()}), Reason.UNKNOWN_AGREEMENT, signed_to=REQUESTOR.address
    )
    assert peer.agreement_dirs() == set()
    assert psutil.Process(peer.provider.pid).children(recursive=True) == []
    log = peer.market.log(peer.provider)
    assert "Rejected a message" in log
    assert "Traceback" not in log and "Failed to handle" not in log  # every refusal was deliberate
    chain = peer.market.chain()
    assert chain.registry.offer_of(peer.address) == peer.offer_before
    assert chain.registry.offer_of(peer.address).endpoint == peer.provider.endpoint
    assert {s: chain.escrow.session(s) for s in peer.sessions_before} == peer.sessions_before
    assert chain.escrow.paid(peer.session_id, peer.address) == 0


# ---------------------------------------------------------------------------- a valid proposal, a bad certificate


def test_a_valid_proposal_is_accepted_but_a_certificate_from_another_ca_starts_no_worker(peer: Peer) -> None:
    """A valid propose gets an accept with a PEM CSR. A confirm whose certificate comes from
    another CA, comes from the session's CA but for another key and name, or does not parse is
    BAD_CERTIFICATE: the agreement stays negotiating, nothing is written (an agreement gets its
    directory only once confirmed) and no worker process starts. Nobody but the requestor can touch
    the agreement; terminating it ends it and the agent forgets it, after which even the right
    certificate cannot confirm it."""
    before = peer.agreement_dirs()
    accept = peer.answer(peer.send(peer.sign("propose", peer.propose_body())), REQUESTOR.address)
    assert accept.kind == "accept", accept
    agreement_id, csr = accept.body["agreementId"], accept.body["csr"]
    assert csr.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    directory = peer.agreements_dir / agreement_id.hex()[:16]
    assert peer.agreement_dirs() == before  # nothing on disk for a proposal

    bad_certificates = {
        "another CA": SessionCA.create("someone else").issue(csr, common_name=peer.address),
        "the session CA, for another key and name": peer.ca.issue(
            make_key_and_csr(MALLORY.address)[1], common_name=MALLORY.address
        ),
        "not a certificate": "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
    }
    for certificate in bad_certificates.values():
        confirm = peer.sign("confirm", {"agreementId": agreement_id, "certificate": certificate})
        peer.expect_rejection(confirm, Reason.BAD_CERTIFICATE, signed_to=REQUESTOR.address)

    status = peer.answer(peer.send(peer.sign("status", {"agreementId": agreement_id})), REQUESTOR.address)
    assert status.kind == "ack" and status.body["detail"].startswith("negotiating"), status.body
    assert not directory.exists()  # no key, certificate, scratch or worker log
    assert psutil.Process(peer.provider.pid).children(recursive=True) == []

    # Someone else cannot ask about it, end it or confirm it.
    for kind, body in (("status", {}), ("terminate", {"reason": "mine now"})):
        wire = peer.sign(kind, {"agreementId": agreement_id, **body}, wallet=MALLORY)
        peer.expect_rejection(wire, Reason.UNKNOWN_AGREEMENT, signed_to=MALLORY.address)

    ended = peer.answer(
        peer.send(peer.sign("terminate", {"agreementId": agreement_id, "reason": "test over"})), REQUESTOR.address
    )
    assert ended.kind == "ack"
    good = peer.ca.issue(csr, common_name=peer.address)
    late = peer.sign("confirm", {"agreementId": agreement_id, "certificate": good})
    peer.expect_rejection(late, Reason.UNKNOWN_AGREEMENT, signed_to=REQUESTOR.address)
    assert psutil.Process(peer.provider.pid).children(recursive=True) == []
    assert not (directory / "worker.pem").exists()
    peer.assert_serving()
    assert not directory.exists() and peer.agreement_dirs() == before


# ---------------------------------------------------------------------------- allocations and releases


def test_the_provider_serves_only_against_an_allocation_it_sees_and_releases_what_its_meter_covers(peer: Peer) -> None:
    """The accept states the exposure the provider wants allocated (its start fee and 1 s of
    compute). Told of an allocation the escrow does not show, one below that exposure, or one above
    what the escrow shows, it refuses (INSUFFICIENT_ALLOCATION); an allocation that covers it gets
    its ``ack``. At the end it refuses a release outside what it was paid and allocated (BAD_VALUE)
    or below the voucher it holds (UNDERPAID), and signs one at its voucher, which the escrow
    takes: the provider is paid, the rest returns, and the session closes at once. (Its worker,
    confirmed here, never finds a scheduler; the release ends it.)"""
    chain = peer.market.chain(REQUESTOR)
    session_id = new_id()
    chain.escrow.open_session(session_id, DEPOSIT, int(time.time()) + 3600)
    accept = peer.answer(peer.send(peer.sign("propose", peer.propose_body(sessionId=session_id))), REQUESTOR.address)
    assert accept.kind == "accept", accept
    agreement_id, exposure = accept.body["agreementId"], accept.body["exposure"]
    assert exposure == peer.provider.price_per_cpu_second  # no start fee, 1 s of compute (--min-deposit-seconds 1)

    def allocated(amount: int, wallet: Wallet = REQUESTOR) -> dict[str, Any]:
        return peer.sign("allocated", {"agreementId": agreement_id, "amount": amount}, wallet=wallet)

    # A mere proposal has no worker to back: allocated, vouchers and releases wait for the confirm.
    peer.expect_rejection(allocated(exposure), Reason.BAD_VALUE, signed_to=REQUESTOR.address)
    certificate = peer.ca.issue(accept.body["csr"], common_name=peer.address)
    confirm = peer.sign("confirm", {"agreementId": agreement_id, "certificate": certificate})
    assert peer.answer(peer.send(confirm), REQUESTOR.address).kind == "started"

    peer.expect_rejection(allocated(exposure), Reason.INSUFFICIENT_ALLOCATION, signed_to=REQUESTOR.address)
    chain.escrow.allocate(session_id, {peer.address: exposure - 1})
    peer.expect_rejection(allocated(exposure - 1), Reason.INSUFFICIENT_ALLOCATION, signed_to=REQUESTOR.address)
    chain.escrow.allocate(session_id, {peer.address: 1})
    peer.expect_rejection(allocated(2 * exposure), Reason.INSUFFICIENT_ALLOCATION, signed_to=REQUESTOR.address)
    peer.expect_rejection(allocated(exposure, MALLORY), Reason.UNKNOWN_AGREEMENT, signed_to=MALLORY.address)
    ack = peer.answer(peer.send(allocated(exposure)), REQUESTOR.address)
    assert ack.kind == "ack" and "seen" in ack.body["detail"], ack.body

    voucher = chain.escrow.sign_voucher(session_id, peer.address, 100)
    body = {"agreementId": agreement_id, "graphId": new_id(), "cumulativeAmount": 100, "signature": voucher.signature}
    assert peer.answer(peer.send(peer.sign("voucher", body)), REQUESTOR.address).kind == "ack"

    def release(final: int) -> dict[str, Any]:
        return peer.sign("release", {"agreementId": agreement_id, "finalAmount": final})

    peer.expect_rejection(release(exposure + 1), Reason.BAD_VALUE, signed_to=REQUESTOR.address)
    peer.expect_rejection(release(50), Reason.UNDERPAID, signed_to=REQUESTOR.address)
    released = peer.answer(peer.send(release(100)), REQUESTOR.address)
    assert released.kind == "released" and released.body["finalAmount"] == 100, released
    signed = Release(session_id, peer.address, 100, released.body["signature"])
    assert signed.signer(chain.escrow.domain) == peer.address
    chain.escrow.release(signed)
    assert chain.escrow.allocation(session_id, peer.address) == Allocation(100, 100, True)
    chain.escrow.close_session(session_id)
    state = chain.escrow.session(session_id)
    assert state.closed and state.paid_out == 100
    peer.assert_serving()
